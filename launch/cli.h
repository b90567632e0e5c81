/* launch/cli: the subcommand table of the addc program. Each subcommand is a function
 * `int cmd_x(int argc, char **argv)` (argv[0] is the subcommand name) returning the process
 * exit code; it prints its own errors. */
#ifndef ADDC_LAUNCH_CLI_H
#define ADDC_LAUNCH_CLI_H

#include <stdio.h>

#include "core/error.h"
#include "nn/tokenizer.h"

typedef struct Command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} Command;

int cmd_smoke(int argc, char **argv);
int cmd_devices(int argc, char **argv);
int cmd_shards(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_forward(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_embed(int argc, char **argv);
int cmd_export(int argc, char **argv);

/* The CLIP vocabulary: `given` (--tokenizer), else CLI_DEFAULT_VOCAB under the working
 * directory or under the checkout the addc binary was built in (its build directory's parent). */
#define CLI_DEFAULT_VOCAB "configs/tokenizer/bpe_simple_vocab_16e6.txt.gz"
Status cli_tokenizer_open(const char *given, ClipTokenizer *t);

/* s as a JSON string, quotes included (manifests, result lines). */
void cli_json_string(FILE *f, const char *s);

/* Seconds on the monotonic clock (differences time a run's phases). */
double cli_now_s(void);

/* Prints "addc: <message>" for the pending core/error message and returns exit code 1. */
int cli_fail(const char *what);

#endif
