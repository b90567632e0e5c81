/* launch/inspect: `addc inspect CONFIG.yaml`: builds a network on the meta device (shapes only,
 * no weight memory) and prints its parameters, forward FLOPs and the per-rank memory of a
 * training step. The work is in nn/model.c; this file parses arguments and prints. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launch/cli.h"
#include "nn/model.h"

#define INSPECT_MAX_OVERRIDES 32

static void inspect_usage(FILE *f) {
    fprintf(f,
            "usage: addc inspect CONFIG.yaml [KEY=VALUE ...] [--size HxW | --latent HxW] [--tokens T]\n"
            "                    [--batch B] [--world N] [--checkpoint on|off] [--params]\n"
            "\n"
            "Builds the network a model YAML describes (any file in configs/models/: UNet2DConditionModel,\n"
            "AutoencoderKL, DINOv2, CLIP text encoders, the discriminator heads, the evaluation convnet) on\n"
            "the meta device, which holds shapes and no data, so SDXL's 2.6B parameters cost no memory,\n"
            "and prints:\n"
            "  - the parameter count, tensor count and FSDP units, by top-level module;\n"
            "  - with --params, one line per parameter: name, shape as the checkpoint files store it\n"
            "    (diffusers / transformers order: conv weights (Cout, Cin, KH, KW)), dtype (f32 master);\n"
            "  - the forward FLOPs and activation bytes of a forward run on meta inputs;\n"
            "  - the bytes per rank of a training step of this network with FSDP on N ranks.\n"
            "KEY=VALUE overrides a field of the YAML (e.g. cross_attention_dim=1024).\n"
            "\n"
            "Inputs (all per rank; B defaults to 1):\n"
            "  UNet     --latent HxW (default: the config's sample_size) or --size HxW in pixels (latent =\n"
            "           pixels / 8, the SD / SDXL VAE); context (B, T, cross_attention_dim) with T = --tokens\n"
            "           (default 77); SDXL's text_embeds and six time ids.\n"
            "  VAE      --size HxW, the image (default sample_size), or --latent HxW; two passes:\n"
            "           encode (image -> posterior mean and log-variance) and decode (latent -> image).\n"
            "  DINOv2   --size HxW, the ViT's input after the 224-px resize (default input_size); every\n"
            "           block and the final norm run (the CLS output), not only up to the last tap.\n"
            "           With num_labels, the classifier on the CLS runs too.\n"
            "  CLIP     --tokens T (default max_position_embeddings, 77).\n"
            "  ConvNet  --size HxW, the image (default image_size); features and logits.\n"
            "  heads    all heads, --tokens N feature tokens each (default 256: ViT-S/14 at 224 px),\n"
            "           with the spectral-norm power iteration (training mode).\n"
            "\n"
            "Conventions:\n"
            "  FLOPs    2 x multiply-adds of matmul, linear, conv and attention (Q K^T and the weighted\n"
            "           sum of V both counted, no causal or flash savings); normalisation, activations,\n"
            "           softmax, elementwise ops, resizes and the power iteration count 0. For batch B,\n"
            "           the FLOPs of the whole batch. Forward only: a backward is usually estimated at\n"
            "           2x the forward, and checkpointing recomputes the checkpointed blocks' forward once more.\n"
            "           So counted, batch 1 with 77 context tokens: SDXL UNet 1.589 T at a 64x64 latent and\n"
            "           6.761 T at 128x128, SD 2.1 UNet 0.804 T at 64x64, SDXL VAE decoder 2.515 T to\n"
            "           512 px (ADD.md: 1.59, 6.76, 0.80, 2.51).\n"
            "  memory   FSDP (ARCHITECTURE 5): each unit's flat parameters are sharded over N ranks\n"
            "           (ceil(unit numel / N) elements per rank: the padding is counted):\n"
            "             weights     the fp32 master shard + the bf16 gathered copy of the largest\n"
            "                         unit x 2 (the one computing and the prefetched next);\n"
            "             gradients   the fp32 gradient shard + the largest unit's whole bf16\n"
            "                         gradient x 2 (computing, and reduce-scattering);\n"
            "             AdamW       two fp32 moments per shard element;\n"
            "             activations the bytes of every op output a taped forward makes, as this build\n"
            "                         makes them (f32; bf16 compute would halve them): without\n"
            "                         checkpointing all are kept until backward; with per-block\n"
            "                         checkpointing a block keeps only its output, and backward\n"
            "                         recomputes one block at a time, so: the outputs outside blocks +\n"
            "                         the blocks' outputs + the largest block's op outputs.\n"
            "           Not counted: tensors kernels save for backward beyond op outputs, activation\n"
            "           gradients, workspace, EMA copies, and any network this one runs beside (a\n"
            "           frozen teacher, the VAE, DINOv2 in the ADD step: inspect each).\n"
            "           A VAE's encode and decode activations both enter the total (one block's\n"
            "           recompute once). --checkpoint picks which activation figure enters the total\n"
            "           (default on).\n"
            "           A frozen network needs only the weights rows.\n"
            "\n"
            "Exit code 0; 1 when the YAML cannot be built or the input does not fit the network; 2 for\n"
            "a usage error.\n");
}

static int parse_pos(const char *opt, const char *v, int64_t *out) {
    char *end;
    long long n = v ? strtoll(v, &end, 10) : -1;
    if (!v || *end || n < 1) {
        fprintf(stderr, "addc inspect: %s needs a positive integer (see addc inspect --help)\n", opt);
        return 0;
    }
    *out = n;
    return 1;
}

static int parse_hw(const char *opt, const char *v, int64_t *h, int64_t *w) {
    char *end;
    long long a = v ? strtoll(v, &end, 10) : -1, b = -1;
    if (v && a > 0 && (*end == 'x' || *end == 'X')) b = strtoll(end + 1, &end, 10);
    else if (v && a > 0 && !*end) b = a;
    if (!v || a < 1 || b < 1 || *end) {
        fprintf(stderr, "addc inspect: %s needs HxW (e.g. 64x64) or one size (see addc inspect --help)\n", opt);
        return 0;
    }
    *h = a;
    *w = b;
    return 1;
}

/* 1234567 -> "1,234,567" */
static const char *fmt_count(char *buf, int64_t n) {
    char tmp[32];
    int len = snprintf(tmp, sizeof tmp, "%lld", (long long)(n < 0 ? -n : n)), o = 0;
    if (n < 0) buf[o++] = '-';
    for (int i = 0; i < len; i++) {
        buf[o++] = tmp[i];
        if ((len - i - 1) % 3 == 0 && i < len - 1) buf[o++] = ',';
    }
    buf[o] = 0;
    return buf;
}

static const char *fmt_bytes(char *buf, int64_t b) {
    double x = (double)b;
    if (x >= 1024.0 * 1024 * 1024) snprintf(buf, 32, "%.2f GiB", x / (1024.0 * 1024 * 1024));
    else if (x >= 1024.0 * 1024) snprintf(buf, 32, "%.1f MiB", x / (1024.0 * 1024));
    else snprintf(buf, 32, "%.1f KiB", x / 1024.0);
    return buf;
}

static const char *fmt_flops(char *buf, double f) {
    if (f >= 1e12) snprintf(buf, 32, "%.3f TFLOPs", f / 1e12);
    else if (f >= 1e9) snprintf(buf, 32, "%.3f GFLOPs", f / 1e9);
    else snprintf(buf, 32, "%.3f MFLOPs", f / 1e6);
    return buf;
}

static void print_params(const ParamStore *s, const char *what) {
    size_t wid = 0;
    for (int32_t i = 0; i < s->n; i++) {
        size_t l = strlen(param_store_get((ParamStore *)s, i)->name);
        if (l > wid) wid = l;
    }
    for (int32_t i = 0; i < s->n; i++) {
        const Param *p = param_store_get((ParamStore *)s, i);
        int64_t sh[TENSOR_MAX_DIMS];
        int32_t nd = weights_file_shape(p, sh);
        char shape[128];
        int o = snprintf(shape, sizeof shape, "(");
        for (int32_t d = 0; d < nd; d++) o += snprintf(shape + o, sizeof shape - (size_t)o, "%s%lld", d ? ", " : "", (long long)sh[d]);
        snprintf(shape + o, sizeof shape - (size_t)o, "%s)", nd == 1 ? "," : "");
        printf("%-*s  %-22s %s%s\n", (int)wid, p->name, shape, dtype_name(p->var.v.dtype), what);
    }
}

/* parameters by the first component of their name, in order of appearance */
static void print_components(const ParamStore *s) {
    char names[64][64];
    int64_t numel[64];
    int32_t tensors[64], n = 0;
    for (int32_t i = 0; i < s->n; i++) {
        const Param *p = param_store_get((ParamStore *)s, i);
        char top[64];
        size_t l = strcspn(p->name, ".");
        snprintf(top, sizeof top, "%.*s", (int)(l < sizeof top ? l : sizeof top - 1), p->name);
        int32_t k = 0;
        while (k < n && strcmp(names[k], top)) k++;
        if (k == n) {
            if (n == 64) continue;
            snprintf(names[n], sizeof names[n], "%s", top);
            numel[n] = 0;
            tensors[n++] = 0;
        }
        numel[k] += tensor_numel(&p->var.v);
        tensors[k]++;
    }
    char b[32];
    for (int32_t k = 0; k < n; k++)
        printf("  %-24s %15s  %5d tensors\n", names[k], fmt_count(b, numel[k]), tensors[k]);
}

typedef struct InspectArgs {
    const char *path;
    const char *overrides[INSPECT_MAX_OVERRIDES];
    int32_t n_overrides;
    ModelInput in;
    int64_t world;
    bool list, ckpt;
} InspectArgs;

static int inspect_parse(int argc, char **argv, InspectArgs *a) {
    memset(a, 0, sizeof *a);
    a->world = 1;
    a->ckpt = true;
    bool size = false, latent = false;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "--size") || !strcmp(o, "--latent")) {
            if (!parse_hw(o, v, &a->in.height, &a->in.width)) return 2;
            size |= o[2] == 's';
            latent |= o[2] == 'l';
            a->in.pixels = o[2] == 's';
            i++;
        } else if (!strcmp(o, "--tokens")) {
            if (!parse_pos(o, v, &a->in.tokens)) return 2;
            i++;
        } else if (!strcmp(o, "--batch")) {
            if (!parse_pos(o, v, &a->in.batch)) return 2;
            i++;
        } else if (!strcmp(o, "--world")) {
            if (!parse_pos(o, v, &a->world)) return 2;
            i++;
        } else if (!strcmp(o, "--checkpoint") && v && (!strcmp(v, "on") || !strcmp(v, "off"))) {
            a->ckpt = !strcmp(v, "on");
            i++;
        } else if (!strcmp(o, "--params")) {
            a->list = true;
        } else if (o[0] == '-') {
            fprintf(stderr, "addc inspect: unknown option or bad value '%s' (see addc inspect --help)\n", o);
            return 2;
        } else if (strchr(o, '=') && a->path) {
            if (a->n_overrides == INSPECT_MAX_OVERRIDES) {
                fprintf(stderr, "addc inspect: at most %d overrides\n", INSPECT_MAX_OVERRIDES);
                return 2;
            }
            a->overrides[a->n_overrides++] = o;
        } else if (!a->path) {
            a->path = o;
        } else {
            fprintf(stderr, "addc inspect: one model YAML only ('%s' is extra; overrides are KEY=VALUE)\n", o);
            return 2;
        }
    }
    if (size && latent) {
        fprintf(stderr, "addc inspect: give --size or --latent, not both\n");
        return 2;
    }
    if (!a->path) {
        fprintf(stderr, "addc inspect: give a model YAML (see addc inspect --help)\n");
        return 2;
    }
    return 0;
}

int cmd_inspect(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            inspect_usage(stdout);
            return 0;
        }
    InspectArgs a;
    int rc = inspect_parse(argc, argv, &a);
    if (rc) return rc;

    Model m;
    Status st = model_build(&m, a.path, a.overrides, a.n_overrides, DEVICE_META, true);
    ModelPass passes[MODEL_MAX_PASSES];
    int32_t n_passes = 0;
    if (st == ADDC_OK) st = model_probe(&m, &a.in, passes, &n_passes);
    if (st != ADDC_OK) {
        model_free(&m);
        return cli_fail("inspect");
    }

    char b1[32], b2[32], b3[32];
    if (a.list) {
        print_params(&m.params, "");
        print_params(&m.state, "  (state, not a parameter)");
        printf("\n");
    }
    MemoryPlan plan;
    model_memory_plan(&m.params, a.world, &plan);
    printf("%s: %s\n", a.path, m.class_name);
    printf("parameters  %s in %d tensors, %d FSDP units (largest %s: %s)\n", fmt_count(b1, m.params.numel), m.params.n,
           plan.n_units, plan.largest_unit >= 0 ? m.params.units[plan.largest_unit].name : "-",
           fmt_count(b2, plan.largest_numel));
    print_components(&m.params);
    if (m.state.n)
        printf("state       %s values in %d tensors (spectral-norm u, v: buffers, not parameters)\n",
               fmt_count(b1, m.state.numel), m.state.n);
    printf("meta build: %s of weight memory allocated\n", m.params.data || m.params.grad ? "SOME (a bug)" : "no bytes");

    int64_t act_all = 0, act_kept = 0, act_block = 0;
    for (int32_t k = 0; k < n_passes; k++) {
        const ModelPass *p = &passes[k];
        printf("%-11s %s\n", p->name, p->input);
        printf("  FLOPs                    %s (%.4g)\n", fmt_flops(b1, p->flops), p->flops);
        printf("  activations, no ckpt     %s\n", fmt_bytes(b1, p->act_bytes));
        if (p->n_regions)
            printf("  activations, checkpoint  %s kept + %s for one block's recompute (%d checkpointed blocks)\n",
                   fmt_bytes(b1, p->kept_bytes), fmt_bytes(b2, p->block_bytes), p->n_regions);
        else
            printf("  activations, checkpoint  the same (no checkpointed blocks)\n");
        act_all += p->act_bytes;
        act_kept += p->n_regions ? p->kept_bytes : p->act_bytes;
        if (p->block_bytes > act_block) act_block = p->block_bytes;
    }
    int64_t act_ckpt = act_kept + act_block, act = a.ckpt ? act_ckpt : act_all;
    int64_t total = plan.weights_shard + plan.weights_gather + plan.grads_shard + plan.grads_unit + plan.adam + act;
    printf("memory per rank: world %lld, batch %lld, checkpointing %s (FSDP, AdamW; see --help)\n", (long long)plan.world,
           (long long)(a.in.batch > 0 ? a.in.batch : 1), a.ckpt ? "on" : "off");
    char shard[80], act_label[40];
    snprintf(shard, sizeof shard, "fp32 shard, %s elements", fmt_count(b2, plan.shard_numel));
    snprintf(act_label, sizeof act_label, "f32 op outputs, %s", a.ckpt ? "checkpointed" : "all kept");
    const struct {
        const char *group, *label;
        int64_t bytes;
    } rows[] = {
        {"weights", shard, plan.weights_shard},
        {"", "bf16 gathered, largest unit x 2", plan.weights_gather},
        {"gradients", "fp32 shard", plan.grads_shard},
        {"", "bf16 unit gradients x 2", plan.grads_unit},
        {"AdamW", "2 x fp32 shard", plan.adam},
        {"activations", act_label, act},
        {"total", "", total},
    };
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++)
        printf("  %-12s %-38s %12s\n", rows[r].group, rows[r].label, fmt_bytes(b1, rows[r].bytes));
    printf("  (activations %s: %s)\n", a.ckpt ? "without checkpointing" : "with checkpointing",
           fmt_bytes(b3, a.ckpt ? act_all : act_ckpt));
    model_free(&m);
    return 0;
}
