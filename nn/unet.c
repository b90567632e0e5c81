/* nn/unet: UNet2DConditionModel: config schema, construction in diffusers' state-dict order,
 * forward (diffusers unet_2d_condition.py, unet_2d_blocks.py), and the Stability single-file
 * key layout (see unet.h). */
#include "nn/unet.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- configuration ---- */

static const ConfigField unet2d_fields[] = {
    CONFIG_STRING(UNet2DConfig, _class_name, "UNet2DConditionModel", "the diffusers class"),
    CONFIG_INT(UNet2DConfig, sample_size, "0", 0, 1 << 20, "latent size the model was trained at (informational; 0: null)"),
    CONFIG_INT(UNet2DConfig, in_channels, "4", 1, 1 << 16, "latent channels in"),
    CONFIG_INT(UNet2DConfig, out_channels, "4", 1, 1 << 16, "channels out"),
    CONFIG_BOOL(UNet2DConfig, center_input_sample, "false", "sample -> 2 sample - 1 first"),
    CONFIG_BOOL(UNet2DConfig, flip_sin_to_cos, "true", "timestep sinusoid as [cos | sin]"),
    CONFIG_INT(UNet2DConfig, freq_shift, "0", 0, 1 << 20, "timestep frequency shift"),
    CONFIG_LIST(UNet2DConfig, down_block_types, n_down_block_types, CONFIG_TYPE_STRING,
                "[CrossAttnDownBlock2D, CrossAttnDownBlock2D, CrossAttnDownBlock2D, DownBlock2D]",
                "DownBlock2D or CrossAttnDownBlock2D per level"),
    CONFIG_STRING(UNet2DConfig, mid_block_type, "UNetMidBlock2DCrossAttn", "UNetMidBlock2DCrossAttn"),
    CONFIG_LIST(UNet2DConfig, up_block_types, n_up_block_types, CONFIG_TYPE_STRING,
                "[UpBlock2D, CrossAttnUpBlock2D, CrossAttnUpBlock2D, CrossAttnUpBlock2D]",
                "UpBlock2D or CrossAttnUpBlock2D per level, deepest first"),
    CONFIG_BOOL(UNet2DConfig, only_cross_attention, "false", "unsupported: must be false"),
    CONFIG_LIST(UNet2DConfig, block_out_channels, n_block_out_channels, CONFIG_TYPE_INT, "[320, 640, 1280, 1280]",
                "channels per level"),
    CONFIG_INT(UNet2DConfig, layers_per_block, "2", 1, UNET_MAX_LAYERS, "resnets per down block (up blocks have one more)"),
    CONFIG_INT(UNet2DConfig, downsample_padding, "1", 0, 8, "padding of the stride-2 downsampling convs"),
    CONFIG_FLOAT(UNet2DConfig, mid_block_scale_factor, "1.0", "mid block resnet output divisor"),
    CONFIG_FLOAT(UNet2DConfig, dropout, "0.0", "unsupported: must be 0"),
    CONFIG_STRING(UNet2DConfig, act_fn, "silu", "silu"),
    CONFIG_INT(UNet2DConfig, norm_num_groups, "32", 1, 1 << 16, "GroupNorm groups"),
    CONFIG_FLOAT(UNet2DConfig, norm_eps, "1e-5", "GroupNorm epsilon of the resnets and the output norm"),
    CONFIG_INT(UNet2DConfig, cross_attention_dim, "1280", 1, 1 << 20, "width of encoder_hidden_states"),
    CONFIG_LIST(UNet2DConfig, transformer_layers_per_block, n_transformer_layers_per_block, CONFIG_TYPE_INT, "[1]",
                "transformer blocks per attention, per level (one value: every level); the mid block takes the last"),
    CONFIG_LIST(UNet2DConfig, reverse_transformer_layers_per_block, n_reverse_transformer_layers_per_block, CONFIG_TYPE_INT,
                NULL, "up path depths, deepest first (empty: transformer_layers_per_block reversed)"),
    CONFIG_INT(UNet2DConfig, encoder_hid_dim, "0", 0, 0, "unsupported: must be 0 (null)"),
    CONFIG_STRING(UNet2DConfig, encoder_hid_dim_type, "", "unsupported: must be null"),
    CONFIG_LIST(UNet2DConfig, attention_head_dim, n_attention_head_dim, CONFIG_TYPE_INT, "[8]",
                "diffusers' name for the NUMBER of heads per level when num_attention_heads is empty"),
    CONFIG_LIST(UNet2DConfig, num_attention_heads, n_num_attention_heads, CONFIG_TYPE_INT, NULL,
                "heads per level (empty: attention_head_dim)"),
    CONFIG_BOOL(UNet2DConfig, dual_cross_attention, "false", "unsupported: must be false"),
    CONFIG_BOOL(UNet2DConfig, use_linear_projection, "false", "proj_in/proj_out as linear layers (must be true: SDXL, SD 2.x)"),
    CONFIG_STRING(UNet2DConfig, class_embed_type, "", "unsupported: must be null"),
    CONFIG_STRING(UNet2DConfig, addition_embed_type, "", "null or text_time (SDXL)"),
    CONFIG_INT(UNet2DConfig, addition_time_embed_dim, "0", 0, 1 << 16, "sinusoid width per time id (text_time)"),
    CONFIG_INT(UNet2DConfig, num_class_embeds, "0", 0, 0, "unsupported: must be 0 (null)"),
    CONFIG_BOOL(UNet2DConfig, upcast_attention, "false", "attention in f32 (addc computes in f32 anyway)"),
    CONFIG_STRING(UNet2DConfig, resnet_time_scale_shift, "default", "default"),
    CONFIG_BOOL(UNet2DConfig, resnet_skip_time_act, "false", "unsupported: must be false"),
    CONFIG_FLOAT(UNet2DConfig, resnet_out_scale_factor, "1.0", "resnet output divisor in the down and up blocks"),
    CONFIG_STRING(UNet2DConfig, time_embedding_type, "positional", "positional"),
    CONFIG_INT(UNet2DConfig, time_embedding_dim, "0", 0, 0, "unsupported: must be 0 (null: 4 x block_out_channels[0])"),
    CONFIG_STRING(UNet2DConfig, time_embedding_act_fn, "", "unsupported: must be null"),
    CONFIG_STRING(UNet2DConfig, timestep_post_act, "", "unsupported: must be null"),
    CONFIG_INT(UNet2DConfig, time_cond_proj_dim, "0", 0, 0, "unsupported: must be 0 (null)"),
    CONFIG_INT(UNet2DConfig, conv_in_kernel, "3", 3, 3, "3"),
    CONFIG_INT(UNet2DConfig, conv_out_kernel, "3", 3, 3, "3"),
    CONFIG_INT(UNet2DConfig, projection_class_embeddings_input_dim, "0", 0, 1 << 20,
               "width of the text_time input: pooled text + 6 x addition_time_embed_dim"),
    CONFIG_STRING(UNet2DConfig, attention_type, "default", "default"),
    CONFIG_BOOL(UNet2DConfig, class_embeddings_concat, "false", "unsupported: must be false"),
    CONFIG_BOOL(UNet2DConfig, mid_block_only_cross_attention, "false", "unsupported: must be false"),
    CONFIG_STRING(UNet2DConfig, cross_attention_norm, "", "unsupported: must be null"),
    CONFIG_INT(UNet2DConfig, addition_embed_type_num_heads, "64", 1, 1 << 16, "unused by text_time"),
};

const ConfigSchema unet2d_config_schema = CONFIG_SCHEMA("unet", unet2d_fields);

static Status cfg_fail(const char *fmt, const char *field, const char *value) {
    return addc_error_set(ADDC_ERR_UNSUPPORTED, fmt, field, value);
}

static bool list_fits(int32_t n, int32_t blocks) { return n == 1 || n == blocks; }
static int64_t list_at(const int64_t *v, int32_t n, int32_t i) { return n == 1 ? v[0] : v[i]; }

static int64_t heads_at(const UNet2DConfig *c, int32_t i) {
    return c->n_num_attention_heads > 0 ? list_at(c->num_attention_heads, c->n_num_attention_heads, i)
                                        : list_at(c->attention_head_dim, c->n_attention_head_dim, i);
}

static int64_t depth_up_at(const UNet2DConfig *c, int32_t i) {
    int32_t nb = c->n_block_out_channels;
    if (c->n_reverse_transformer_layers_per_block > 0) return c->reverse_transformer_layers_per_block[i];
    return list_at(c->transformer_layers_per_block, c->n_transformer_layers_per_block, nb - 1 - i);
}

Status unet2d_config_check(const UNet2DConfig *c) {
    static const char *unsup = "unet config: %s = %s is not supported by addc";
    int32_t nb = c->n_block_out_channels;
    if (strcmp(c->_class_name, "UNet2DConditionModel") != 0)
        return cfg_fail("unet config: %s is '%s', expected UNet2DConditionModel", "_class_name", c->_class_name);
    if (nb < 1) return addc_error_set(ADDC_ERR_INVALID, "unet config: block_out_channels is empty");
    if (c->n_down_block_types != nb || c->n_up_block_types != nb)
        return addc_error_set(ADDC_ERR_INVALID,
                              "unet config: block_out_channels has %d levels but down_block_types %d and "
                              "up_block_types %d; give one entry per level",
                              nb, c->n_down_block_types, c->n_up_block_types);
    for (int32_t i = 0; i < nb; i++) {
        if (strcmp(c->down_block_types[i], "DownBlock2D") && strcmp(c->down_block_types[i], "CrossAttnDownBlock2D"))
            return cfg_fail(unsup, "down_block_types", c->down_block_types[i]);
        if (strcmp(c->up_block_types[i], "UpBlock2D") && strcmp(c->up_block_types[i], "CrossAttnUpBlock2D"))
            return cfg_fail(unsup, "up_block_types", c->up_block_types[i]);
        if (c->block_out_channels[i] < 1 || c->block_out_channels[i] % c->norm_num_groups)
            return addc_error_set(ADDC_ERR_INVALID,
                                  "unet config: block_out_channels[%d] = %lld is not a positive multiple of "
                                  "norm_num_groups = %lld",
                                  i, (long long)c->block_out_channels[i], (long long)c->norm_num_groups);
    }
    if (strcmp(c->mid_block_type, "UNetMidBlock2DCrossAttn")) return cfg_fail(unsup, "mid_block_type", c->mid_block_type);
    if (!list_fits(c->n_attention_head_dim, nb) || (c->n_num_attention_heads && !list_fits(c->n_num_attention_heads, nb)) ||
        !list_fits(c->n_transformer_layers_per_block, nb) ||
        (c->n_reverse_transformer_layers_per_block && c->n_reverse_transformer_layers_per_block != nb))
        return addc_error_set(ADDC_ERR_INVALID,
                              "unet config: attention_head_dim, num_attention_heads, transformer_layers_per_block "
                              "and reverse_transformer_layers_per_block need one value or one per level (%d)",
                              nb);
    for (int32_t i = 0; i < nb; i++) {
        int64_t h = heads_at(c, i), ch = c->block_out_channels[i];
        if (h < 1 || ch % h)
            return addc_error_set(ADDC_ERR_INVALID, "unet config: %lld heads do not divide the %lld channels of level %d",
                                  (long long)h, (long long)ch, i);
        if (list_at(c->transformer_layers_per_block, c->n_transformer_layers_per_block, i) < 1 || depth_up_at(c, i) < 1)
            return addc_error_set(ADDC_ERR_INVALID, "unet config: transformer depths must be >= 1");
    }
    if (!c->use_linear_projection)
        return cfg_fail("unet config: %s = %s (1x1-conv projections, SD 1.x) is not supported by addc; SDXL and SD 2.x "
                        "use linear projections",
                        "use_linear_projection", "false");
    if (c->only_cross_attention) return cfg_fail(unsup, "only_cross_attention", "true");
    if (c->mid_block_only_cross_attention) return cfg_fail(unsup, "mid_block_only_cross_attention", "true");
    if (c->dual_cross_attention) return cfg_fail(unsup, "dual_cross_attention", "true");
    if (c->class_embeddings_concat) return cfg_fail(unsup, "class_embeddings_concat", "true");
    if (c->resnet_skip_time_act) return cfg_fail(unsup, "resnet_skip_time_act", "true");
    if (c->dropout != 0.0) return cfg_fail(unsup, "dropout", "non-zero");
    if (strcmp(c->act_fn, "silu")) return cfg_fail(unsup, "act_fn", c->act_fn);
    if (c->class_embed_type[0]) return cfg_fail(unsup, "class_embed_type", c->class_embed_type);
    if (c->encoder_hid_dim_type[0]) return cfg_fail(unsup, "encoder_hid_dim_type", c->encoder_hid_dim_type);
    if (c->time_embedding_act_fn[0]) return cfg_fail(unsup, "time_embedding_act_fn", c->time_embedding_act_fn);
    if (c->timestep_post_act[0]) return cfg_fail(unsup, "timestep_post_act", c->timestep_post_act);
    if (c->cross_attention_norm[0]) return cfg_fail(unsup, "cross_attention_norm", c->cross_attention_norm);
    if (strcmp(c->resnet_time_scale_shift, "default"))
        return cfg_fail(unsup, "resnet_time_scale_shift", c->resnet_time_scale_shift);
    if (strcmp(c->time_embedding_type, "positional")) return cfg_fail(unsup, "time_embedding_type", c->time_embedding_type);
    if (strcmp(c->attention_type, "default")) return cfg_fail(unsup, "attention_type", c->attention_type);
    if (c->addition_embed_type[0]) {
        if (strcmp(c->addition_embed_type, "text_time")) return cfg_fail(unsup, "addition_embed_type", c->addition_embed_type);
        if (c->addition_time_embed_dim < 1 ||
            c->projection_class_embeddings_input_dim <= 6 * c->addition_time_embed_dim)
            return addc_error_set(ADDC_ERR_INVALID,
                                  "unet config: text_time needs addition_time_embed_dim > 0 and "
                                  "projection_class_embeddings_input_dim (pooled text + 6 x %lld) larger than %lld",
                                  (long long)c->addition_time_embed_dim, (long long)(6 * c->addition_time_embed_dim));
    }
    return ADDC_OK;
}

Status unet2d_config_load(UNet2DConfig *cfg, const char *path, const char *const *overrides, int32_t n_overrides) {
    Status s = config_load(&unet2d_config_schema, cfg, &path, 1, overrides, n_overrides);
    if (s != ADDC_OK) return s;
    s = unet2d_config_check(cfg);
    if (s != ADDC_OK) return addc_error_context(s, "%s", path);
    return ADDC_OK;
}

/* ---- construction ---- */

static Status block_alloc(UNetBlock *b, int32_t n, bool cross_attn) {
    b->n_layers = n;
    b->cross_attn = cross_attn;
    b->resnets = calloc((size_t)n, sizeof *b->resnets);
    b->attentions = cross_attn ? calloc((size_t)n, sizeof *b->attentions) : NULL;
    if (!b->resnets || (cross_attn && !b->attentions))
        return addc_error_set(ADDC_ERR_NOMEM, "out of memory building the UNet");
    return ADDC_OK;
}

Status unet2d_init(UNet2D *m, const UNet2DConfig *cfg, ParamStore *s) {
    memset(m, 0, sizeof *m);
    TRY(unet2d_config_check(cfg));
    m->cfg = *cfg;
    const UNet2DConfig *c = &m->cfg;
    int32_t nb = c->n_block_out_channels, lpb = (int32_t)c->layers_per_block;
    int groups = (int)c->norm_num_groups;
    double eps = c->norm_eps;
    const int64_t *ch = c->block_out_channels;
    char n[PARAM_NAME_MAX], p[PARAM_NAME_MAX];
    m->n_blocks = nb;
    m->time_embed_dim = 4 * ch[0];
    int64_t temb = m->time_embed_dim;

    TRY(param_store_begin_unit(s, "conv_in"));
    TRY(conv2d_init(&m->conv_in, s, "conv_in", c->in_channels, ch[0], 3, 1, 1, true));
    TRY(timestep_embedding_init(&m->time_embedding, s, "time_embedding", ch[0], temb));
    if (c->addition_embed_type[0]) {
        m->has_add_embedding = true;
        TRY(timestep_embedding_init(&m->add_embedding, s, "add_embedding", c->projection_class_embeddings_input_dim,
                                    temb));
    }
    /* diffusers' state-dict order: down blocks, up blocks, mid block; in a block the
     * attentions, then the resnets, then the sampler */
    int64_t out_ch = ch[0];
    for (int32_t i = 0; i < nb; i++) {
        UNetBlock *b = &m->down[i];
        int64_t in_ch = out_ch;
        out_ch = ch[i];
        TRY(block_alloc(b, lpb, strcmp(c->down_block_types[i], "CrossAttnDownBlock2D") == 0));
        int64_t heads = heads_at(c, i);
        int32_t depth = (int32_t)list_at(c->transformer_layers_per_block, c->n_transformer_layers_per_block, i);
        if (b->cross_attn)
            for (int32_t j = 0; j < lpb; j++)
                TRY(transformer2d_init(&b->attentions[j], s, param_namef(n, NULL, "down_blocks.%d.attentions.%d", i, j),
                                       out_ch, (int)heads, out_ch / heads, depth, c->cross_attention_dim, groups));
        for (int32_t j = 0; j < lpb; j++)
            TRY(resnet_block_init(&b->resnets[j], s, param_namef(n, NULL, "down_blocks.%d.resnets.%d", i, j),
                                  j == 0 ? in_ch : out_ch, out_ch, temb, groups, eps, c->resnet_out_scale_factor));
        if (i < nb - 1) {
            b->has_sampler = true;
            TRY(downsample_init(&b->sampler, s, param_namef(n, NULL, "down_blocks.%d.downsamplers.0", i), out_ch,
                                (int)c->downsample_padding));
        }
    }
    int64_t prev_out = ch[nb - 1];
    out_ch = ch[nb - 1];
    for (int32_t i = 0; i < nb; i++) {
        UNetBlock *b = &m->up[i];
        int64_t rev_out = ch[nb - 1 - i], rev_in = ch[nb - 1 - (i + 1 < nb ? i + 1 : nb - 1)];
        prev_out = out_ch;
        out_ch = rev_out;
        TRY(block_alloc(b, lpb + 1, strcmp(c->up_block_types[i], "CrossAttnUpBlock2D") == 0));
        int64_t heads = heads_at(c, nb - 1 - i);
        if (b->cross_attn)
            for (int32_t j = 0; j <= lpb; j++)
                TRY(transformer2d_init(&b->attentions[j], s, param_namef(n, NULL, "up_blocks.%d.attentions.%d", i, j),
                                       out_ch, (int)heads, out_ch / heads, (int32_t)depth_up_at(c, i),
                                       c->cross_attention_dim, groups));
        for (int32_t j = 0; j <= lpb; j++) {
            int64_t skip_ch = j == lpb ? rev_in : out_ch, res_in = j == 0 ? prev_out : out_ch;
            TRY(resnet_block_init(&b->resnets[j], s, param_namef(n, NULL, "up_blocks.%d.resnets.%d", i, j),
                                  res_in + skip_ch, out_ch, temb, groups, eps, c->resnet_out_scale_factor));
        }
        if (i < nb - 1) {
            b->has_sampler = true;
            TRY(upsample_init(&b->sampler, s, param_namef(n, NULL, "up_blocks.%d.upsamplers.0", i), out_ch));
        }
    }
    int64_t mid = ch[nb - 1], mid_heads = heads_at(c, nb - 1);
    int32_t mid_depth =
        (int32_t)list_at(c->transformer_layers_per_block, c->n_transformer_layers_per_block, nb - 1);
    TRY(transformer2d_init(&m->mid_attention, s, "mid_block.attentions.0", mid, (int)mid_heads, mid / mid_heads,
                           mid_depth, c->cross_attention_dim, groups));
    for (int j = 0; j < 2; j++)
        TRY(resnet_block_init(&m->mid_resnets[j], s, param_namef(p, NULL, "mid_block.resnets.%d", j), mid, mid, temb,
                              groups, eps, c->mid_block_scale_factor));
    TRY(param_store_begin_unit(s, "conv_norm_out"));
    TRY(group_norm_init(&m->conv_norm_out, s, "conv_norm_out", groups, ch[0], eps, true));
    TRY(param_store_begin_unit(s, "conv_out"));
    TRY(conv2d_init(&m->conv_out, s, "conv_out", ch[0], c->out_channels, 3, 1, 1, true));
    return ADDC_OK;
}

static void block_free(UNetBlock *b) {
    if (b->attentions)
        for (int32_t j = 0; j < b->n_layers; j++) transformer2d_free(&b->attentions[j]);
    free(b->attentions);
    free(b->resnets);
    memset(b, 0, sizeof *b);
}

void unet2d_free(UNet2D *m) {
    for (int32_t i = 0; i < UNET_MAX_BLOCKS; i++) {
        block_free(&m->down[i]);
        block_free(&m->up[i]);
    }
    transformer2d_free(&m->mid_attention);
}

/* ---- forward ---- */

static Var *time_embed(Ctx *c, const UNet2D *m, Var *timesteps, const UNetAddedCond *added) {
    const UNet2DConfig *cfg = &m->cfg;
    Var *t = op_timestep_embedding(c, timesteps, (int)cfg->block_out_channels[0], cfg->flip_sin_to_cos,
                                   (double)cfg->freq_shift, 10000.0);
    Var *emb = timestep_embedding_forward(c, &m->time_embedding, t);
    if (!m->has_add_embedding) return emb;
    if (!added || !added->text_embeds || !added->time_ids) {
        addc_error_set(ADDC_ERR_INVALID, "unet: addition_embed_type text_time needs text_embeds (B, %lld) and "
                                         "time_ids (B, 6)",
                       (long long)(cfg->projection_class_embeddings_input_dim - 6 * cfg->addition_time_embed_dim));
        return NULL;
    }
    Var *ids = added->time_ids, *txt = added->text_embeds;
    int64_t B = ids->v.shape[0], nid = tensor_numel(&ids->v) / (B ? B : 1), dt = cfg->addition_time_embed_dim;
    if (ids->v.ndim != 2 || txt->v.ndim != 2 || txt->v.shape[0] != B ||
        txt->v.shape[1] + nid * dt != cfg->projection_class_embeddings_input_dim) {
        addc_error_set(ADDC_ERR_INVALID,
                       "unet: text_embeds (B, Dt) and time_ids (B, N) must give Dt + N x %lld = %lld inputs",
                       (long long)dt, (long long)cfg->projection_class_embeddings_input_dim);
        return NULL;
    }
    int64_t flat[1] = {B * nid}, wide[2] = {B, nid * dt};
    Var *te = op_timestep_embedding(c, op_reshape(c, ids, 1, flat), (int)dt, cfg->flip_sin_to_cos,
                                    (double)cfg->freq_shift, 10000.0);
    Var *add_in = op_concat(c, txt, op_reshape(c, te, 2, wide), -1);
    return op_add(c, emb, timestep_embedding_forward(c, &m->add_embedding, add_in));
}

Var *unet2d_forward(Ctx *c, const UNet2D *m, Var *sample, Var *timesteps, Var *encoder_hidden_states,
                    const UNetAddedCond *added) {
    if (!sample || !timesteps || !encoder_hidden_states) return NULL;
    const UNet2DConfig *cfg = &m->cfg;
    int32_t nb = m->n_blocks;
    bool ck = m->gradient_checkpointing;
    const Tensor *x = &sample->v;
    int64_t B = x->shape[0], mult = (int64_t)1 << (nb - 1);
    if (x->ndim != 4 || x->shape[3] != cfg->in_channels || x->shape[1] % mult || x->shape[2] % mult) {
        char s[96];
        addc_error_set(ADDC_ERR_INVALID, "unet: sample %s must be (B, H, W, %lld) with H and W multiples of %lld",
                       tensor_shape_str(x, s, sizeof s), (long long)cfg->in_channels, (long long)mult);
        return NULL;
    }
    const Tensor *e = &encoder_hidden_states->v;
    if (timesteps->v.ndim != 1 || timesteps->v.shape[0] != B || e->ndim != 3 || e->shape[0] != B ||
        e->shape[2] != cfg->cross_attention_dim) {
        addc_error_set(ADDC_ERR_INVALID, "unet: timesteps must be (%lld) and encoder_hidden_states (%lld, T, %lld)",
                       (long long)B, (long long)B, (long long)cfg->cross_attention_dim);
        return NULL;
    }
    if (cfg->center_input_sample) sample = op_scale(c, sample, 2.0, -1.0);
    Var *temb = op_silu(c, time_embed(c, m, timesteps, added));
    Var *ctx = encoder_hidden_states;
    Var *h = conv2d_forward(c, &m->conv_in, sample);
    Var *skips[1 + UNET_MAX_BLOCKS * (UNET_MAX_LAYERS + 1)];
    int n_skip = 0;
    skips[n_skip++] = h;
    for (int32_t i = 0; i < nb; i++) {
        const UNetBlock *b = &m->down[i];
        for (int32_t j = 0; j < b->n_layers; j++) {
            h = resnet_block_forward(c, &b->resnets[j], h, NULL, temb, ck);
            if (b->cross_attn) h = transformer2d_forward(c, &b->attentions[j], h, ctx, ck);
            skips[n_skip++] = h;
        }
        if (b->has_sampler) {
            h = downsample_forward(c, &b->sampler, h);
            skips[n_skip++] = h;
        }
    }
    h = resnet_block_forward(c, &m->mid_resnets[0], h, NULL, temb, ck);
    h = transformer2d_forward(c, &m->mid_attention, h, ctx, ck);
    h = resnet_block_forward(c, &m->mid_resnets[1], h, NULL, temb, ck);
    for (int32_t i = 0; i < nb; i++) {
        const UNetBlock *b = &m->up[i];
        for (int32_t j = 0; j < b->n_layers; j++) {
            h = resnet_block_forward(c, &b->resnets[j], h, skips[--n_skip], temb, ck);
            if (b->cross_attn) h = transformer2d_forward(c, &b->attentions[j], h, ctx, ck);
        }
        if (b->has_sampler) h = upsample_forward(c, &b->sampler, h);
    }
    h = group_norm_silu_forward(c, &m->conv_norm_out, h);
    return conv2d_forward(c, &m->conv_out, h);
}

/* ---- the Stability single-file layout (ldm / sgm openaimodel.UNetModel) ---- */

#define LDM_UNET_PREFIX "model.diffusion_model."

/* resnet suffix: diffusers -> ldm (norm1 -> in_layers.0, ...) */
static bool ldm_resnet_suffix(const char *rest, char *out, size_t cap) {
    static const char *const map[][2] = {
        {"norm1.", "in_layers.0."},        {"conv1.", "in_layers.2."},   {"time_emb_proj.", "emb_layers.1."},
        {"norm2.", "out_layers.0."},       {"conv2.", "out_layers.3."}, {"conv_shortcut.", "skip_connection."},
    };
    for (size_t k = 0; k < sizeof map / sizeof map[0]; k++) {
        size_t l = strlen(map[k][0]);
        if (strncmp(rest, map[k][0], l) == 0) return snprintf(out, cap, "%s%s", map[k][1], rest + l) < (int)cap;
    }
    return false;
}

bool unet2d_ldm_key(const UNet2DConfig *cfg, const char *key, char *out) {
    static const char *const fixed[][2] = {
        {"conv_in.", "input_blocks.0.0."},   {"time_embedding.linear_1.", "time_embed.0."},
        {"time_embedding.linear_2.", "time_embed.2."}, {"add_embedding.linear_1.", "label_emb.0.0."},
        {"add_embedding.linear_2.", "label_emb.0.2."}, {"conv_norm_out.", "out.0."},
        {"conv_out.", "out.2."},
    };
    const size_t cap = WEIGHTS_KEY_MAX;
    char rest[WEIGHTS_KEY_MAX];
    int lpb = (int)cfg->layers_per_block, b, j, used = 0;
    for (size_t k = 0; k < sizeof fixed / sizeof fixed[0]; k++) {
        size_t l = strlen(fixed[k][0]);
        if (strncmp(key, fixed[k][0], l) == 0)
            return snprintf(out, cap, LDM_UNET_PREFIX "%s%s", fixed[k][1], key + l) < (int)cap;
    }
    if (sscanf(key, "down_blocks.%d.resnets.%d.%n", &b, &j, &used) == 2 && used > 0) {
        if (!ldm_resnet_suffix(key + used, rest, sizeof rest)) return false;
        return snprintf(out, cap, LDM_UNET_PREFIX "input_blocks.%d.0.%s", 1 + b * (lpb + 1) + j, rest) < (int)cap;
    }
    used = 0;
    if (sscanf(key, "down_blocks.%d.attentions.%d.%n", &b, &j, &used) == 2 && used > 0)
        return snprintf(out, cap, LDM_UNET_PREFIX "input_blocks.%d.1.%s", 1 + b * (lpb + 1) + j, key + used) < (int)cap;
    used = 0;
    if (sscanf(key, "down_blocks.%d.downsamplers.0.conv.%n", &b, &used) == 1 && used > 0)
        return snprintf(out, cap, LDM_UNET_PREFIX "input_blocks.%d.0.op.%s", 1 + b * (lpb + 1) + lpb, key + used) <
               (int)cap;
    used = 0;
    if (sscanf(key, "mid_block.resnets.%d.%n", &j, &used) == 1 && used > 0) {
        if (!ldm_resnet_suffix(key + used, rest, sizeof rest)) return false;
        return snprintf(out, cap, LDM_UNET_PREFIX "middle_block.%d.%s", 2 * j, rest) < (int)cap;
    }
    used = 0;
    if (sscanf(key, "mid_block.attentions.%d.%n", &j, &used) == 1 && used > 0)
        return snprintf(out, cap, LDM_UNET_PREFIX "middle_block.%d.%s", 2 * j + 1, key + used) < (int)cap;
    used = 0;
    if (sscanf(key, "up_blocks.%d.resnets.%d.%n", &b, &j, &used) == 2 && used > 0) {
        if (!ldm_resnet_suffix(key + used, rest, sizeof rest)) return false;
        return snprintf(out, cap, LDM_UNET_PREFIX "output_blocks.%d.0.%s", b * (lpb + 1) + j, rest) < (int)cap;
    }
    used = 0;
    if (sscanf(key, "up_blocks.%d.attentions.%d.%n", &b, &j, &used) == 2 && used > 0)
        return snprintf(out, cap, LDM_UNET_PREFIX "output_blocks.%d.1.%s", b * (lpb + 1) + j, key + used) < (int)cap;
    used = 0;
    if (sscanf(key, "up_blocks.%d.upsamplers.0.conv.%n", &b, &used) == 1 && used > 0) {
        if (b < 0 || b >= cfg->n_up_block_types) return false;
        int slot = strcmp(cfg->up_block_types[b], "CrossAttnUpBlock2D") == 0 ? 2 : 1;
        return snprintf(out, cap, LDM_UNET_PREFIX "output_blocks.%d.%d.conv.%s", b * (lpb + 1) + lpb, slot,
                        key + used) < (int)cap;
    }
    return false;
}

static bool ldm_locate(const void *user, const char *module_key, WeightsSource *src) {
    const UNet2D *m = user;
    return unet2d_ldm_key(&m->cfg, module_key, src->key);
}

WeightsKeyMap unet2d_key_map_ldm(const UNet2D *m) {
    return (WeightsKeyMap){
        .name = "Stability single-file UNet", .scope = LDM_UNET_PREFIX, .locate = ldm_locate, .user = m, .squeeze = true};
}

Status unet2d_load(const UNet2D *m, ParamStore *s, const char *path, const WeightsLoadOptions *opt,
                   WeightsReport *rep) {
    SafeTensors st;
    if (rep) memset(rep, 0, sizeof *rep);
    TRY(safetensors_open(&st, path));
    WeightsKeyMap map = weights_count_prefix(&st, LDM_UNET_PREFIX) > 0 ? unet2d_key_map_ldm(m) : weights_map_prefix(NULL);
    Status r = weights_load(s, &st, &map, opt, rep);
    safetensors_close(&st);
    return r;
}
