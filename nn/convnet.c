/* nn/convnet: the evaluation network's small pre-activation ResNet: config schema, construction,
 * forward (see convnet.h). */
#include "nn/convnet.h"

#include <stdlib.h>
#include <string.h>

/* ---- configuration ---- */

static const ConfigField convnet_fields[] = {
    CONFIG_STRING(ConvNetConfig, model_type, "convnet", "convnet"),
    CONFIG_INT(ConvNetConfig, in_channels, "1", 1, 64, "image channels"),
    CONFIG_INT(ConvNetConfig, image_size, "32", 1, 1 << 16, "the square input size it is trained and probed at"),
    CONFIG_LIST(ConvNetConfig, widths, n_widths, CONFIG_TYPE_INT, "[32, 64, 128]",
                "channels per stage; a stride-2 conv between stages halves H and W"),
    CONFIG_INT(ConvNetConfig, blocks_per_stage, "1", 1, 64, "pre-activation residual blocks per stage"),
    CONFIG_INT(ConvNetConfig, norm_num_groups, "8", 1, 1024, "GroupNorm groups (divide every width)"),
    CONFIG_FLOAT(ConvNetConfig, norm_eps, "1e-5", "GroupNorm epsilon"),
    CONFIG_INT(ConvNetConfig, num_labels, "10", 1, 1 << 20, "classes of the classifier"),
};

const ConfigSchema convnet_config_schema = CONFIG_SCHEMA("convnet", convnet_fields);

Status convnet_config_check(const ConvNetConfig *c) {
    if (strcmp(c->model_type, "convnet"))
        return addc_error_set(ADDC_ERR_UNSUPPORTED, "convnet config: model_type = %s, expected convnet", c->model_type);
    if (c->n_widths < 1) return addc_error_set(ADDC_ERR_INVALID, "convnet config: widths needs at least one stage");
    for (int32_t i = 0; i < c->n_widths; i++)
        if (c->widths[i] < 1 || c->widths[i] % c->norm_num_groups)
            return addc_error_set(ADDC_ERR_INVALID,
                                  "convnet config: widths[%d] = %lld must be a positive multiple of norm_num_groups %lld",
                                  (int)i, (long long)c->widths[i], (long long)c->norm_num_groups);
    if (!(c->norm_eps > 0)) return addc_error_set(ADDC_ERR_INVALID, "convnet config: norm_eps must be positive");
    return ADDC_OK;
}

Status convnet_config_load(ConvNetConfig *cfg, const char *path, const char *const *overrides, int32_t n_overrides) {
    Status s = config_load(&convnet_config_schema, cfg, &path, 1, overrides, n_overrides);
    if (s != ADDC_OK) return s;
    s = convnet_config_check(cfg);
    if (s != ADDC_OK) return addc_error_context(s, "%s", path);
    return ADDC_OK;
}

/* ---- construction ---- */

Status convnet_init(ConvNet *m, const ConvNetConfig *cfg, ParamStore *s) {
    memset(m, 0, sizeof *m);
    TRY(convnet_config_check(cfg));
    m->cfg = *cfg;
    const ConvNetConfig *c = &m->cfg;
    int groups = (int)c->norm_num_groups;
    char n[PARAM_NAME_MAX];
    TRY(param_store_begin_unit(s, "stem"));
    TRY(conv2d_init(&m->stem, s, "stem", c->in_channels, c->widths[0], 3, 1, 1, true));
    m->blocks = calloc((size_t)(c->n_widths * c->blocks_per_stage), sizeof *m->blocks);
    if (!m->blocks) return addc_error_set(ADDC_ERR_NOMEM, "out of memory building the convnet");
    int64_t ch = c->widths[0];
    for (int32_t i = 0; i < c->n_widths; i++) {
        for (int64_t j = 0; j < c->blocks_per_stage; j++) {
            param_namef(n, NULL, "stages.%d.blocks.%lld", (int)i, (long long)j);
            TRY(resnet_block_init(&m->blocks[i * c->blocks_per_stage + j], s, n, ch, c->widths[i], 0, groups,
                                  c->norm_eps, 1.0));
            ch = c->widths[i];
        }
        if (i + 1 < c->n_widths) {
            param_namef(n, NULL, "stages.%d.downsample", (int)i);
            TRY(param_store_begin_unit(s, n));
            TRY(conv2d_init(&m->downsample[i], s, n, ch, ch, 3, 2, 1, true));
        }
    }
    TRY(param_store_begin_unit(s, "norm_out"));
    TRY(group_norm_init(&m->norm_out, s, "norm_out", groups, ch, c->norm_eps, true));
    TRY(param_store_begin_unit(s, "classifier"));
    return linear_init(&m->classifier, s, "classifier", ch, c->num_labels, true);
}

void convnet_free(ConvNet *m) {
    free(m->blocks);
    memset(m, 0, sizeof *m);
}

/* ---- forward ---- */

Status convnet_forward(Ctx *c, const ConvNet *m, Var *images, Var **features, Var **logits) {
    if (features) *features = NULL;
    if (logits) *logits = NULL;
    if (!images) return addc_error_status() ? addc_error_status() : addc_error_set(ADDC_ERR_INVALID, "convnet: no input");
    const ConvNetConfig *cfg = &m->cfg;
    const Tensor *t = &images->v;
    if (t->ndim != 4 || t->shape[3] != cfg->in_channels) {
        char s[96];
        return addc_error_set(ADDC_ERR_INVALID, "convnet: images %s must be (B, H, W, %lld)",
                              tensor_shape_str(t, s, sizeof s), (long long)cfg->in_channels);
    }
    Var *x = conv2d_forward(c, &m->stem, images);
    for (int32_t i = 0; i < cfg->n_widths; i++) {
        for (int64_t j = 0; j < cfg->blocks_per_stage; j++)
            x = resnet_block_forward(c, &m->blocks[i * cfg->blocks_per_stage + j], x, NULL, NULL,
                                     m->gradient_checkpointing);
        if (i + 1 < cfg->n_widths) x = conv2d_forward(c, &m->downsample[i], x);
    }
    x = group_norm_silu_forward(c, &m->norm_out, x);
    if (!x) return addc_error_status();
    int64_t B = x->v.shape[0], C = x->v.shape[3], pooled[4] = {B, 1, 1, C}, flat[2] = {B, C};
    Var *f = op_reshape(c, op_mean_to(c, x, 4, pooled), 2, flat);
    if (!f) return addc_error_status();
    if (features) *features = f;
    if (logits) {
        *logits = linear_forward(c, &m->classifier, f);
        if (!*logits) return addc_error_status();
    }
    return ADDC_OK;
}

Status convnet_load(const ConvNet *m, ParamStore *s, const char *path, const WeightsLoadOptions *opt,
                    WeightsReport *rep) {
    (void)m;
    WeightsKeyMap map = weights_map_prefix(NULL);
    return weights_load_file(s, path, &map, opt, rep);
}
