/* launch/cli: small helpers the subcommands share. */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "launch/cli.h"

Status cli_tokenizer_open(const char *given, ClipTokenizer *t) {
    if (given) return clip_tokenizer_load(t, given);
    if (access(CLI_DEFAULT_VOCAB, R_OK) == 0) return clip_tokenizer_load(t, CLI_DEFAULT_VOCAB);
    char self[1024], path[1200];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = 0;
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = 0;
            snprintf(path, sizeof path, "%s/../" CLI_DEFAULT_VOCAB, self);
            if (access(path, R_OK) == 0) return clip_tokenizer_load(t, path);
        }
    }
    return addc_error_set(ADDC_ERR_IO, "cannot find the CLIP vocabulary " CLI_DEFAULT_VOCAB
                                       " here or in the addc checkout: give it with --tokenizer FILE");
}

void cli_json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p == '\n') fputs("\\n", f);
        else if (*p == '\t') fputs("\\t", f);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

double cli_now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
