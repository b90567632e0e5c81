/* launch/main: the addc program. Subcommands are listed in one table; `addc --help` prints
 * it, `addc CMD --help` the subcommand's own help. Only launch/ prints errors and exits. */
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "launch/cli.h"

#define ADDC_VERSION "0.1.0"

static const Command commands[] = {
    {"smoke", cmd_smoke, "run every op forward and backward on small random inputs and print a table"},
    {"devices", cmd_devices, "list the compute devices addc can use (CPU threads, CUDA GPUs)"},
    {"shards", cmd_shards, "build, check and summarise WebDataset shards (fmnist, check, stats)"},
    {"inspect", cmd_inspect, "a model YAML built on meta: parameters, forward FLOPs, memory per rank"},
    {"train", cmd_train, "ADD distillation or diffusion training from YAML configs, into a run directory"},
    {"export", cmd_export, "a training checkpoint's student (or EMA) as diffusers-layout safetensors"},
    {"sample", cmd_sample, "images from a UNet with the ADD, Euler ancestral, DDIM or Euler sampler, PNGs + manifest.jsonl"},
    {"eval", cmd_eval, "FD, class accuracy and diversity of a run's generated images in an evaluation classifier"},
    {"embed", cmd_embed, "precompute a run's text conditioning (its text encoders on its captions) for text.source embeddings"},
    {"forward", cmd_forward, "one network's forward on named tensors (NCHW, diffusers names) to a safetensors file"},
};

static void usage(FILE *f) {
    fprintf(f,
            "addc " ADDC_VERSION " - Adversarial Diffusion Distillation in C\n"
            "\n"
            "usage: addc <command> [options]\n"
            "       addc <command> --help\n"
            "\n"
            "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f,
            "\n"
            "environment:\n"
            "  ADDC_THREADS  CPU threads for kernels and OpenBLAS (default: all online CPUs)\n"
            "\n"
            "Checkpoints with resume and export arrive with the FSDP work; they are not in\n"
            "this build yet.\n");
}

int cli_fail(const char *what) {
    fprintf(stderr, "addc: %s: %s\n", what, addc_error_message());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("addc " ADDC_VERSION "\n");
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "addc: unknown command '%s' (see addc --help)\n", argv[1]);
    return 2;
}
