/* launch/devices: `addc devices` lists what addc can compute on. */
#include <stdio.h>
#include <string.h>

#include "core/cuda.h"
#include "core/parallel.h"
#include "launch/cli.h"

int cmd_devices(int argc, char **argv) {
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: addc devices\n\nLists the CPU thread count (ADDC_THREADS) and the CUDA GPUs, if any.\n");
        return 0;
    }
    printf("cpu: %d threads\n", parallel_threads());
    int n = cuda_device_count();
    if (n == 0) printf("cuda: none (%s)\n", cuda_unavailable_reason());
    for (int i = 0; i < n; i++) {
        char d[256];
        if (cuda_device_describe(i, d, sizeof d) != ADDC_OK) return cli_fail("cuda");
        printf("cuda:%d: %s\n", i, d);
    }
    return 0;
}
