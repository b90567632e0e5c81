/* nn/weights: loading a safetensors file into a ParamStore by name, and saving a store back.
 *
 * Every parameter of a store has a module name (the diffusers / transformers / open_clip
 * state-dict key). A WeightsKeyMap says where that parameter lies in a file of some layout:
 * the identity for diffusers files (optionally under a prefix), or a network's own mapping
 * for the original single-file layout (`model.diffusion_model.input_blocks.1.0.in_layers.0.weight`
 * for the UNet; `first_stage_model.` for the VAE, `conditioner.embedders.N.` for the text
 * encoders). A map may point a parameter at a band of rows of a file tensor (open_clip's fused
 * `in_proj_weight` feeding to_q, to_k and to_v). File keys outside the map's scope belong to
 * other networks of the same file and are ignored.
 *
 * Loading checks everything before writing anything: parameters the file lacks (missing), file
 * tensors in scope that no parameter uses (unexpected) and tensors whose shape differs from the
 * parameter's file shape (mis-shaped) are collected by name in a WeightsReport. Mis-shaped keys
 * always refuse the load; missing and unexpected keys refuse it unless the options allow them.
 * A refused load leaves the store's values untouched. Values are converted from F32, F16, BF16
 * or F64 to f32 and from the file layout (conv2d OIHW, conv1d OIK) to addc's (OHWI, OKI).
 * On a meta store the checks run and nothing is copied.
 *
 * Saving writes every parameter in the ecosystem layout under its module name (a diffusers
 * file when the store is a diffusers model), in F32, F16 or BF16. */
#ifndef ADDC_NN_WEIGHTS_H
#define ADDC_NN_WEIGHTS_H

#include <stdbool.h>
#include <stdint.h>

#include "nn/param.h"
#include "nn/safetensors.h"

#define WEIGHTS_KEY_MAX 256

/* Where one parameter lies in a file: the whole tensor `key`, or rows [row_begin, row_begin +
 * rows) of it along its first dimension. */
typedef struct WeightsSource {
    char key[WEIGHTS_KEY_MAX];
    int64_t row_begin, rows; /* rows < 0: the whole tensor */
} WeightsSource;

/* Module name -> source. Returns false when the layout has no place for the parameter (it is
 * then reported missing). src->rows is preset to -1. */
typedef bool (*WeightsLocateFn)(const void *user, const char *module_key, WeightsSource *src);

typedef struct WeightsKeyMap {
    const char *name;       /* the layout, for messages: "diffusers", "ldm-unet" */
    const char *scope;      /* file keys of this network begin with it; "" or NULL: every key */
    WeightsLocateFn locate; /* NULL: the file key is prefix + module key */
    const void *user;       /* passed to locate; with locate NULL, the prefix (const char *) or NULL */
    bool squeeze;           /* also accept a file shape that differs only by trailing 1-sized dims
                               (a 1x1 conv stored where the module has a linear layer) */
} WeightsKeyMap;

/* The identity layout: parameter "conv_in.weight" is file key prefix + "conv_in.weight"; the
 * scope is the prefix. prefix may be NULL or "" (must outlive the map). */
WeightsKeyMap weights_map_prefix(const char *prefix);

typedef struct WeightsLoadOptions {
    bool allow_missing;    /* parameters the file lacks keep their current values */
    bool allow_unexpected; /* file tensors in scope that no parameter uses are ignored */
} WeightsLoadOptions;

/* What a load found. Names are malloc'd; free with weights_report_free. */
typedef struct WeightsReport {
    int32_t n_loaded;     /* parameters given values (or that would be, on meta) */
    int32_t n_ignored;    /* file tensors outside the map's scope */
    int32_t n_missing, n_unexpected, n_misshaped;
    char **missing;       /* module names */
    char **unexpected;    /* file keys */
    char **misshaped;     /* "module name <- file key: file (..) but the model needs (..)" */
} WeightsReport;

void weights_report_free(WeightsReport *r);

/* Loads from an open file. opt may be NULL (strict); rep may be NULL. On refusal the error
 * message names the file, the layout and the first few keys of each kind. */
Status weights_load(ParamStore *s, const SafeTensors *st, const WeightsKeyMap *map, const WeightsLoadOptions *opt,
                    WeightsReport *rep);
/* Opens, loads and closes. */
Status weights_load_file(ParamStore *s, const char *path, const WeightsKeyMap *map, const WeightsLoadOptions *opt,
                         WeightsReport *rep);

/* Saves every parameter under its module name, in the file layout, as dt (F32, F16 or BF16);
 * metadata_json NULL writes {"format": "pt"} as torch's savers do. Durable (safetensors.h). */
Status weights_save(const ParamStore *s, const char *path, DType dt, const char *metadata_json);
/* The same with the values taken from `values` (host memory, store numel, each parameter at its
 * offset) instead of the parameters' own buffers: a sharded store's values gathered to the host. */
Status weights_save_values(const ParamStore *s, const float *values, const char *path, DType dt,
                           const char *metadata_json);

/* The shape a parameter has in files: its addc shape mapped back through its layout. */
int32_t weights_file_shape(const Param *p, int64_t *shape);
/* Reorders n = numel(p) f32 values between the file layout and addc's for p's layout. */
void weights_layout_from_file(const Param *p, const float *file_order, float *addc_order);
void weights_layout_to_file(const Param *p, const float *addc_order, float *file_order);

/* Number of file keys beginning with prefix (layout detection: "model.diffusion_model."). */
int32_t weights_count_prefix(const SafeTensors *st, const char *prefix);

#endif
