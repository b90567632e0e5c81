/* launch/main: the addc program (subcommands grow here as the issues land). */
#include <stdio.h>
#include <string.h>

#include "core/error.h"

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        printf("usage: addc <command> [args]\n");
        return argc < 2 ? 2 : 0;
    }
    fprintf(stderr, "addc: unknown command '%s' (see addc --help)\n", argv[1]);
    return 2;
}
