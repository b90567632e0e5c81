/* launch/export: `addc export CHECKPOINT --out FILE.safetensors [--ema]`: the student (or its EMA)
 * of a training checkpoint (launch/train_ckpt.h) as a diffusers-layout safetensors file, the same
 * bytes `addc train` writes as student.safetensors / student_ema.safetensors at that step; diffusers'
 * UNet2DConditionModel loads it (its state-dict names and layouts). One process, no MPI needed:
 * the checkpoint stores every tensor whole, whatever the world size that wrote it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "distributed/checkpoint.h"
#include "launch/cli.h"
#include "launch/train_ckpt.h"
#include "nn/weights.h"

static void export_usage(FILE *f) {
    fprintf(f,
            "usage: addc export CHECKPOINT --out FILE.safetensors [--ema]\n"
            "\n"
            "Writes the student of a training checkpoint (--ema: its EMA) as a safetensors file in the\n"
            "diffusers UNet2DConditionModel layout (the names and shapes of its state dict, f32), which\n"
            "`addc sample`, `addc eval` and diffusers load. CHECKPOINT is a step-N.h5 file or a run directory\n"
            "(its newest complete checkpoint under checkpoints/). The student's network is rebuilt from the\n"
            "config stored in the checkpoint; every dataset read is verified against its checksum.\n");
}

int cmd_export(int argc, char **argv) {
    const char *src = NULL, *out = NULL;
    bool ema = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            export_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--ema")) {
            ema = true;
        } else if (!strcmp(a, "--out")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "addc export: --out needs a file\n");
                return 2;
            }
            out = argv[++i];
        } else if (a[0] == '-') {
            fprintf(stderr, "addc export: unknown option '%s' (see addc export --help)\n", a);
            return 2;
        } else if (!src) {
            src = a;
        } else {
            fprintf(stderr, "addc export: one checkpoint, got '%s' and '%s'\n", src, a);
            return 2;
        }
    }
    if (!src || !out) {
        export_usage(stderr);
        return 2;
    }
    Comm *comm;
    if (comm_world(&comm) != ADDC_OK) return cli_fail("export: MPI");
    struct stat sb;
    CkptFile *f = NULL;
    Status st;
    if (stat(src, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        char dir[CKPT_PATH_MAX];
        bool found = false;
        snprintf(dir, sizeof dir, "%s/checkpoints", src);
        st = ckpt_open_latest(comm, dir, &f, &found);
        if (st == ADDC_OK && !found) st = addc_error_set(ADDC_ERR_IO, "%s has no checkpoint", dir);
    } else {
        st = ckpt_open_path(comm, src, &f);
    }
    if (st != ADDC_OK) return cli_fail("export");
    TrainConfig *cfg = calloc(1, sizeof *cfg);
    Model *m = calloc(1, sizeof *m);
    int rc = 0;
    if (!cfg || !m) {
        st = addc_error_set(ADDC_ERR_NOMEM, "export: out of memory");
    } else {
        st = train_ckpt_config(f, cfg);
        const char *ov[TRAIN_MAX_MODEL_OVERRIDES];
        for (int32_t i = 0; st == ADDC_OK && i < cfg->student.n_overrides; i++) ov[i] = cfg->student.overrides[i];
        if (st == ADDC_OK)
            st = model_build(m, cfg->student.config, ov, cfg->student.n_overrides, DEVICE_CPU, false);
        if (st == ADDC_OK) st = train_ckpt_read_params(f, &m->params, ema ? "ema" : "student");
        if (st == ADDC_OK) st = weights_save(&m->params, out, DTYPE_F32, NULL);
    }
    if (st != ADDC_OK) {
        rc = cli_fail("export");
    } else {
        int64_t step = 0;
        ckpt_get_i64(f, "step", &step);
        printf("addc export: %s of %s (step %lld, %lld parameters) -> %s\n", ema ? "the student's EMA" : "the student",
               ckpt_path(f), (long long)step, (long long)m->params.numel, out);
    }
    if (m) {
        model_free(m);
        free(m);
    }
    free(cfg);
    ckpt_close(f);
    comm_finalize();
    return rc;
}
