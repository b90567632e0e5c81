/* nn/vae: AutoencoderKL: config schema, construction in diffusers' state-dict order, encoder and
 * decoder forward (diffusers autoencoders/vae.py Encoder/Decoder, unet_2d_blocks.py
 * DownEncoderBlock2D/UpDecoderBlock2D/UNetMidBlock2D), sampling, and the Stability
 * single-file key layout (see vae.h). */
#include "nn/vae.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VAE_EPS 1e-6 /* GroupNorm epsilon of every resnet, attention and output norm */

/* ---- configuration ---- */

static const ConfigField vae_fields[] = {
    CONFIG_STRING(VaeConfig, _class_name, "AutoencoderKL", "the diffusers class"),
    CONFIG_INT(VaeConfig, in_channels, "3", 1, 1 << 16, "image channels in"),
    CONFIG_INT(VaeConfig, out_channels, "3", 1, 1 << 16, "image channels out"),
    CONFIG_INT(VaeConfig, latent_channels, "4", 1, 1 << 16, "latent channels"),
    CONFIG_LIST(VaeConfig, down_block_types, n_down_block_types, CONFIG_TYPE_STRING,
                "[DownEncoderBlock2D, DownEncoderBlock2D, DownEncoderBlock2D, DownEncoderBlock2D]",
                "DownEncoderBlock2D per level"),
    CONFIG_LIST(VaeConfig, up_block_types, n_up_block_types, CONFIG_TYPE_STRING,
                "[UpDecoderBlock2D, UpDecoderBlock2D, UpDecoderBlock2D, UpDecoderBlock2D]", "UpDecoderBlock2D per level"),
    CONFIG_LIST(VaeConfig, block_out_channels, n_block_out_channels, CONFIG_TYPE_INT, "[128, 256, 512, 512]",
                "channels per level"),
    CONFIG_INT(VaeConfig, layers_per_block, "2", 1, 64, "resnets per encoder level (decoder levels have one more)"),
    CONFIG_STRING(VaeConfig, act_fn, "silu", "silu"),
    CONFIG_INT(VaeConfig, norm_num_groups, "32", 1, 1 << 16, "GroupNorm groups"),
    CONFIG_INT(VaeConfig, sample_size, "1024", 0, 1 << 20, "image size the model was trained at (informational)"),
    CONFIG_FLOAT(VaeConfig, scaling_factor, "0.18215", "latents = scaling_factor * (z - shift_factor)"),
    CONFIG_FLOAT(VaeConfig, shift_factor, "0", "0 for null"),
    CONFIG_BOOL(VaeConfig, force_upcast, "true", "diffusers runs the VAE in f32 (addc always does)"),
    CONFIG_BOOL(VaeConfig, use_quant_conv, "true", "1x1 conv after the encoder"),
    CONFIG_BOOL(VaeConfig, use_post_quant_conv, "true", "1x1 conv before the decoder"),
    CONFIG_BOOL(VaeConfig, mid_block_add_attention, "true", "self-attention in the mid blocks"),
};

const ConfigSchema vae_config_schema = CONFIG_SCHEMA("vae", vae_fields);

Status vae_config_check(const VaeConfig *c) {
    int32_t nb = c->n_block_out_channels;
    if (strcmp(c->_class_name, "AutoencoderKL") != 0)
        return addc_error_set(ADDC_ERR_UNSUPPORTED, "vae config: _class_name is '%s', expected AutoencoderKL",
                              c->_class_name);
    if (nb < 1) return addc_error_set(ADDC_ERR_INVALID, "vae config: block_out_channels is empty");
    if (c->n_down_block_types != nb || c->n_up_block_types != nb)
        return addc_error_set(ADDC_ERR_INVALID,
                              "vae config: block_out_channels has %d levels but down_block_types %d and "
                              "up_block_types %d; give one entry per level",
                              nb, c->n_down_block_types, c->n_up_block_types);
    for (int32_t i = 0; i < nb; i++) {
        if (strcmp(c->down_block_types[i], "DownEncoderBlock2D"))
            return addc_error_set(ADDC_ERR_UNSUPPORTED, "vae config: down_block_types = %s is not supported by addc",
                                  c->down_block_types[i]);
        if (strcmp(c->up_block_types[i], "UpDecoderBlock2D"))
            return addc_error_set(ADDC_ERR_UNSUPPORTED, "vae config: up_block_types = %s is not supported by addc",
                                  c->up_block_types[i]);
        if (c->block_out_channels[i] < 1 || c->block_out_channels[i] % c->norm_num_groups)
            return addc_error_set(ADDC_ERR_INVALID,
                                  "vae config: block_out_channels[%d] = %lld is not a positive multiple of "
                                  "norm_num_groups = %lld",
                                  i, (long long)c->block_out_channels[i], (long long)c->norm_num_groups);
    }
    if (strcmp(c->act_fn, "silu"))
        return addc_error_set(ADDC_ERR_UNSUPPORTED, "vae config: act_fn = %s is not supported by addc (silu)", c->act_fn);
    if (!(c->scaling_factor > 0))
        return addc_error_set(ADDC_ERR_INVALID, "vae config: scaling_factor must be positive, not %g", c->scaling_factor);
    return ADDC_OK;
}

Status vae_config_load(VaeConfig *cfg, const char *path, const char *const *overrides, int32_t n_overrides) {
    Status s = config_load(&vae_config_schema, cfg, &path, 1, overrides, n_overrides);
    if (s != ADDC_OK) return s;
    s = vae_config_check(cfg);
    if (s != ADDC_OK) return addc_error_context(s, "%s", path);
    return ADDC_OK;
}

/* ---- construction (diffusers' state-dict order) ---- */

static Status mid_init(VaeMidBlock *mb, ParamStore *s, const char *prefix, int64_t ch, int groups, bool attention) {
    char n[PARAM_NAME_MAX], a[PARAM_NAME_MAX];
    memset(mb, 0, sizeof *mb);
    mb->has_attention = attention;
    if (attention) {
        param_namef(a, prefix, "attentions.0");
        TRY(param_store_begin_unit(s, a));
        TRY(group_norm_init(&mb->attn_norm, s, param_name(n, a, "group_norm"), groups, ch, VAE_EPS, true));
        TRY(attention_init(&mb->attn, s, a, ch, 0, 1, ch, true));
    }
    for (int j = 0; j < 2; j++)
        TRY(resnet_block_init(&mb->resnets[j], s, param_namef(n, prefix, "resnets.%d", j), ch, ch, 0, groups, VAE_EPS,
                              1.0));
    return ADDC_OK;
}

static Status block_alloc(VaeBlock *b, int32_t n) {
    b->n_layers = n;
    b->resnets = calloc((size_t)n, sizeof *b->resnets);
    return b->resnets ? ADDC_OK : addc_error_set(ADDC_ERR_NOMEM, "out of memory building the VAE");
}

static Status encoder_init(AutoencoderKL *m, ParamStore *s) {
    const VaeConfig *c = &m->cfg;
    VaeEncoder *e = &m->encoder;
    int32_t nb = m->n_blocks, lpb = (int32_t)c->layers_per_block;
    int groups = (int)c->norm_num_groups;
    const int64_t *ch = c->block_out_channels;
    char n[PARAM_NAME_MAX];
    TRY(param_store_begin_unit(s, "encoder.conv_in"));
    TRY(conv2d_init(&e->conv_in, s, "encoder.conv_in", c->in_channels, ch[0], 3, 1, 1, true));
    int64_t out_ch = ch[0];
    for (int32_t i = 0; i < nb; i++) {
        VaeBlock *b = &e->down[i];
        int64_t in_ch = out_ch;
        out_ch = ch[i];
        TRY(block_alloc(b, lpb));
        for (int32_t j = 0; j < lpb; j++)
            TRY(resnet_block_init(&b->resnets[j], s, param_namef(n, NULL, "encoder.down_blocks.%d.resnets.%d", i, j),
                                  j == 0 ? in_ch : out_ch, out_ch, 0, groups, VAE_EPS, 1.0));
        if (i < nb - 1) {
            b->has_sampler = true;
            TRY(downsample_init(&b->sampler, s, param_namef(n, NULL, "encoder.down_blocks.%d.downsamplers.0", i), out_ch,
                                0));
        }
    }
    TRY(mid_init(&e->mid, s, "encoder.mid_block", ch[nb - 1], groups, c->mid_block_add_attention));
    TRY(param_store_begin_unit(s, "encoder.conv_norm_out"));
    TRY(group_norm_init(&e->conv_norm_out, s, "encoder.conv_norm_out", groups, ch[nb - 1], VAE_EPS, true));
    TRY(param_store_begin_unit(s, "encoder.conv_out"));
    return conv2d_init(&e->conv_out, s, "encoder.conv_out", ch[nb - 1], 2 * c->latent_channels, 3, 1, 1, true);
}

static Status decoder_init(AutoencoderKL *m, ParamStore *s) {
    const VaeConfig *c = &m->cfg;
    VaeDecoder *d = &m->decoder;
    int32_t nb = m->n_blocks, lpb = (int32_t)c->layers_per_block;
    int groups = (int)c->norm_num_groups;
    const int64_t *ch = c->block_out_channels;
    char n[PARAM_NAME_MAX];
    TRY(param_store_begin_unit(s, "decoder.conv_in"));
    TRY(conv2d_init(&d->conv_in, s, "decoder.conv_in", c->latent_channels, ch[nb - 1], 3, 1, 1, true));
    /* diffusers registers up_blocks before mid_block */
    int64_t out_ch = ch[nb - 1];
    for (int32_t i = 0; i < nb; i++) {
        VaeBlock *b = &d->up[i];
        int64_t prev = out_ch;
        out_ch = ch[nb - 1 - i];
        TRY(block_alloc(b, lpb + 1));
        for (int32_t j = 0; j <= lpb; j++)
            TRY(resnet_block_init(&b->resnets[j], s, param_namef(n, NULL, "decoder.up_blocks.%d.resnets.%d", i, j),
                                  j == 0 ? prev : out_ch, out_ch, 0, groups, VAE_EPS, 1.0));
        if (i < nb - 1) {
            b->has_sampler = true;
            TRY(upsample_init(&b->sampler, s, param_namef(n, NULL, "decoder.up_blocks.%d.upsamplers.0", i), out_ch));
        }
    }
    TRY(mid_init(&d->mid, s, "decoder.mid_block", ch[nb - 1], groups, c->mid_block_add_attention));
    TRY(param_store_begin_unit(s, "decoder.conv_norm_out"));
    TRY(group_norm_init(&d->conv_norm_out, s, "decoder.conv_norm_out", groups, ch[0], VAE_EPS, true));
    TRY(param_store_begin_unit(s, "decoder.conv_out"));
    return conv2d_init(&d->conv_out, s, "decoder.conv_out", ch[0], c->out_channels, 3, 1, 1, true);
}

Status vae_init(AutoencoderKL *m, const VaeConfig *cfg, ParamStore *s) {
    memset(m, 0, sizeof *m);
    TRY(vae_config_check(cfg));
    m->cfg = *cfg;
    m->n_blocks = cfg->n_block_out_channels;
    TRY(encoder_init(m, s));
    TRY(decoder_init(m, s));
    int64_t lat2 = 2 * cfg->latent_channels, lat = cfg->latent_channels;
    if (cfg->use_quant_conv) {
        TRY(param_store_begin_unit(s, "quant_conv"));
        TRY(conv2d_init(&m->quant_conv, s, "quant_conv", lat2, lat2, 1, 1, 0, true));
    }
    if (cfg->use_post_quant_conv) {
        TRY(param_store_begin_unit(s, "post_quant_conv"));
        TRY(conv2d_init(&m->post_quant_conv, s, "post_quant_conv", lat, lat, 1, 1, 0, true));
    }
    return ADDC_OK;
}

void vae_free(AutoencoderKL *m) {
    for (int32_t i = 0; i < VAE_MAX_BLOCKS; i++) {
        free(m->encoder.down[i].resnets);
        free(m->decoder.up[i].resnets);
    }
    memset(m, 0, sizeof *m);
}

int64_t vae_downscale(const AutoencoderKL *m) { return (int64_t)1 << (m->n_blocks - 1); }

/* ---- forward ---- */

/* in[0]: x (B, H, W, C): GroupNorm, one-head attention over the H W tokens, residual */
static Var *mid_attention_region(Ctx *c, Var *const *in, int n_in, void *user) {
    const VaeMidBlock *mb = user;
    Var *x = in[0];
    const Tensor *t = &x->v;
    int64_t tok[3] = {t->shape[0], t->shape[1] * t->shape[2], t->shape[3]};
    Var *h = op_reshape(c, group_norm_forward(c, &mb->attn_norm, x), 3, tok);
    h = attention_forward(c, &mb->attn, h, NULL);
    return op_add(c, op_reshape(c, h, 4, t->shape), x);
}

static Var *mid_forward(Ctx *c, const VaeMidBlock *mb, Var *x, bool ck) {
    x = resnet_block_forward(c, &mb->resnets[0], x, NULL, NULL, ck);
    if (mb->has_attention && x)
        x = ck ? op_checkpoint(c, mid_attention_region, (void *)mb, &x, 1) : mid_attention_region(c, &x, 1, (void *)mb);
    return resnet_block_forward(c, &mb->resnets[1], x, NULL, NULL, ck);
}

/* diffusers Downsample2D with padding 0: zero-pad one column right and one row below, then
 * the stride-2 conv */
static Var *pad_right_bottom(Ctx *c, Var *x) {
    if (!x) return NULL;
    const Tensor *t = &x->v;
    int64_t col[4] = {t->shape[0], t->shape[1], 1, t->shape[3]};
    Var *h = op_concat(c, x, var_zeros(c, DTYPE_F32, 4, col), 2);
    int64_t row[4] = {t->shape[0], 1, t->shape[2] + 1, t->shape[3]};
    return op_concat(c, h, var_zeros(c, DTYPE_F32, 4, row), 1);
}

static Var *tail_forward(Ctx *c, const Norm *norm, const Conv2d *conv, Var *h) {
    return conv2d_forward(c, conv, group_norm_silu_forward(c, norm, h));
}

static bool check_image(const AutoencoderKL *m, Var *x, int64_t channels, int64_t mult, const char *what) {
    const Tensor *t = &x->v;
    if (t->ndim == 4 && t->shape[3] == channels && t->shape[1] % mult == 0 && t->shape[2] % mult == 0 &&
        t->dtype == DTYPE_F32)
        return true;
    char s[96];
    addc_error_set(ADDC_ERR_INVALID, "vae: %s %s must be f32 (B, H, W, %lld) with H and W multiples of %lld", what,
                   tensor_shape_str(t, s, sizeof s), (long long)channels, (long long)mult);
    return false;
}

Status vae_encode(Ctx *c, const AutoencoderKL *m, Var *x, Var **mean, Var **logvar) {
    *mean = *logvar = NULL;
    if (!x) return addc_error_status() ? addc_error_status() : addc_error_set(ADDC_ERR_INVALID, "vae: no input");
    if (!check_image(m, x, m->cfg.in_channels, vae_downscale(m), "image")) return ADDC_ERR_INVALID;
    const VaeEncoder *e = &m->encoder;
    bool ck = m->gradient_checkpointing;
    Var *h = conv2d_forward(c, &e->conv_in, x);
    for (int32_t i = 0; i < m->n_blocks; i++) {
        const VaeBlock *b = &e->down[i];
        for (int32_t j = 0; j < b->n_layers; j++) h = resnet_block_forward(c, &b->resnets[j], h, NULL, NULL, ck);
        if (b->has_sampler) h = downsample_forward(c, &b->sampler, pad_right_bottom(c, h));
    }
    h = mid_forward(c, &e->mid, h, ck);
    h = tail_forward(c, &e->conv_norm_out, &e->conv_out, h);
    if (m->quant_conv.weight) h = conv2d_forward(c, &m->quant_conv, h);
    if (!h) return addc_error_status();
    int64_t L = m->cfg.latent_channels;
    *mean = op_slice(c, h, -1, 0, L);
    *logvar = op_slice(c, h, -1, L, L);
    return *mean && *logvar ? ADDC_OK : addc_error_status();
}

Var *vae_noise(Ctx *c, const AutoencoderKL *m, int64_t B, int64_t h, int64_t w, const RngKey *key) {
    int64_t shape[4] = {B, h, w, m->cfg.latent_channels}, per = h * w * m->cfg.latent_channels;
    if (c->device == DEVICE_META) return var_new(c, DTYPE_F32, 4, shape);
    float *host = malloc((size_t)(B * per > 0 ? B * per : 1) * sizeof(float));
    if (!host) {
        addc_error_set(ADDC_ERR_NOMEM, "vae noise: out of memory");
        return NULL;
    }
    for (int64_t b = 0; b < B; b++) {
        RngKey k = *key;
        k.index += (uint64_t)b;
        rng_fill_normal(&k, 0, per, host + b * per);
    }
    Var *eps = var_from_host(c, DTYPE_F32, 4, shape, host); /* the same draws on any device */
    free(host);
    return eps;
}

Var *vae_encode_latents(Ctx *c, const AutoencoderKL *m, Var *x, Var *eps) {
    Var *mean, *logvar;
    if (vae_encode(c, m, x, &mean, &logvar) != ADDC_OK) return NULL;
    Var *z = mean;
    if (eps) {
        if (!tensor_same_shape(&eps->v, &mean->v)) {
            char a[96], b[96];
            addc_error_set(ADDC_ERR_INVALID, "vae: noise %s must have the latent shape %s",
                           tensor_shape_str(&eps->v, a, sizeof a), tensor_shape_str(&mean->v, b, sizeof b));
            return NULL;
        }
        /* std * eps, outside the tape: the sample's gradient reaches the mean only */
        Var *noise = NULL;
        int64_t n = tensor_numel(&mean->v);
        if (c->device == DEVICE_META) {
            noise = var_new(c, DTYPE_F32, 4, mean->v.shape);
        } else { /* on the host (a GPU's logvar and eps copied down, the noise copied up: small) */
            float *lv = malloc((size_t)(n ? n : 1) * sizeof(float)), *e = malloc((size_t)(n ? n : 1) * sizeof(float));
            Status st = lv && e ? var_download_f32(logvar, lv) : addc_error_set(ADDC_ERR_NOMEM, "vae: out of memory");
            if (st == ADDC_OK) st = var_download_f32(eps, e);
            if (st == ADDC_OK) {
                for (int64_t i = 0; i < n; i++) {
                    double l = lv[i] < -30.0f ? -30.0 : lv[i] > 20.0f ? 20.0 : lv[i];
                    e[i] = (float)(exp(0.5 * l) * e[i]);
                }
                noise = var_from_host(c, DTYPE_F32, 4, mean->v.shape, e);
            }
            free(lv);
            free(e);
        }
        if (!noise) return NULL;
        z = op_add(c, mean, noise);
    }
    double sf = m->cfg.scaling_factor;
    return op_scale(c, z, sf, -sf * m->cfg.shift_factor);
}

Var *vae_decode(Ctx *c, const AutoencoderKL *m, Var *z) {
    if (!z) return NULL;
    if (!check_image(m, z, m->cfg.latent_channels, 1, "latent")) return NULL;
    const VaeDecoder *d = &m->decoder;
    bool ck = m->gradient_checkpointing;
    Var *h = m->post_quant_conv.weight ? conv2d_forward(c, &m->post_quant_conv, z) : z;
    h = conv2d_forward(c, &d->conv_in, h);
    h = mid_forward(c, &d->mid, h, ck);
    for (int32_t i = 0; i < m->n_blocks; i++) {
        const VaeBlock *b = &d->up[i];
        for (int32_t j = 0; j < b->n_layers; j++) h = resnet_block_forward(c, &b->resnets[j], h, NULL, NULL, ck);
        if (b->has_sampler) h = upsample_forward(c, &b->sampler, h);
    }
    return tail_forward(c, &d->conv_norm_out, &d->conv_out, h);
}

Var *vae_decode_latents(Ctx *c, const AutoencoderKL *m, Var *latents) {
    double sf = m->cfg.scaling_factor;
    return vae_decode(c, m, op_scale(c, latents, 1.0 / sf, m->cfg.shift_factor));
}

/* ---- the Stability single-file layout (ldm AutoencoderKL) ---- */

#define LDM_VAE_PREFIX "first_stage_model."

/* resnet suffix: diffusers -> ldm (only the shortcut is renamed) */
static const char *ldm_resnet_rest(const char *rest, char *buf, size_t cap) {
    if (strncmp(rest, "conv_shortcut.", 14) == 0) {
        snprintf(buf, cap, "nin_shortcut.%s", rest + 14);
        return buf;
    }
    return rest;
}

static bool ldm_mid_key(const char *part, const char *rest, char *out) {
    static const char *const attn[][2] = {
        {"group_norm.", "norm."}, {"to_q.", "q."}, {"to_k.", "k."}, {"to_v.", "v."}, {"to_out.0.", "proj_out."}};
    char buf[WEIGHTS_KEY_MAX];
    int j, used = 0;
    if (sscanf(rest, "resnets.%d.%n", &j, &used) == 1 && used > 0)
        return snprintf(out, WEIGHTS_KEY_MAX, LDM_VAE_PREFIX "%s.mid.block_%d.%s", part, j + 1,
                        ldm_resnet_rest(rest + used, buf, sizeof buf)) < WEIGHTS_KEY_MAX;
    if (strncmp(rest, "attentions.0.", 13) != 0) return false;
    rest += 13;
    for (size_t k = 0; k < sizeof attn / sizeof attn[0]; k++) {
        size_t l = strlen(attn[k][0]);
        if (strncmp(rest, attn[k][0], l) == 0)
            return snprintf(out, WEIGHTS_KEY_MAX, LDM_VAE_PREFIX "%s.mid.attn_1.%s%s", part, attn[k][1], rest + l) <
                   WEIGHTS_KEY_MAX;
    }
    return false;
}

bool vae_ldm_key(const VaeConfig *cfg, const char *key, char *out) {
    static const char *const fixed[][2] = {
        {"encoder.conv_in.", "encoder.conv_in."},   {"encoder.conv_out.", "encoder.conv_out."},
        {"encoder.conv_norm_out.", "encoder.norm_out."}, {"decoder.conv_in.", "decoder.conv_in."},
        {"decoder.conv_out.", "decoder.conv_out."}, {"decoder.conv_norm_out.", "decoder.norm_out."},
        {"quant_conv.", "quant_conv."},             {"post_quant_conv.", "post_quant_conv."},
    };
    const int cap = WEIGHTS_KEY_MAX;
    char buf[WEIGHTS_KEY_MAX];
    int nb = cfg->n_block_out_channels, b, j, used = 0;
    for (size_t k = 0; k < sizeof fixed / sizeof fixed[0]; k++) {
        size_t l = strlen(fixed[k][0]);
        if (strncmp(key, fixed[k][0], l) == 0) return snprintf(out, cap, LDM_VAE_PREFIX "%s%s", fixed[k][1], key + l) < cap;
    }
    if (strncmp(key, "encoder.mid_block.", 18) == 0) return ldm_mid_key("encoder", key + 18, out);
    if (strncmp(key, "decoder.mid_block.", 18) == 0) return ldm_mid_key("decoder", key + 18, out);
    if (sscanf(key, "encoder.down_blocks.%d.resnets.%d.%n", &b, &j, &used) == 2 && used > 0)
        return snprintf(out, cap, LDM_VAE_PREFIX "encoder.down.%d.block.%d.%s", b, j,
                        ldm_resnet_rest(key + used, buf, sizeof buf)) < cap;
    used = 0;
    if (sscanf(key, "encoder.down_blocks.%d.downsamplers.0.conv.%n", &b, &used) == 1 && used > 0)
        return snprintf(out, cap, LDM_VAE_PREFIX "encoder.down.%d.downsample.conv.%s", b, key + used) < cap;
    used = 0;
    if (sscanf(key, "decoder.up_blocks.%d.resnets.%d.%n", &b, &j, &used) == 2 && used > 0 && b < nb)
        return snprintf(out, cap, LDM_VAE_PREFIX "decoder.up.%d.block.%d.%s", nb - 1 - b, j,
                        ldm_resnet_rest(key + used, buf, sizeof buf)) < cap;
    used = 0;
    if (sscanf(key, "decoder.up_blocks.%d.upsamplers.0.conv.%n", &b, &used) == 1 && used > 0 && b < nb)
        return snprintf(out, cap, LDM_VAE_PREFIX "decoder.up.%d.upsample.conv.%s", nb - 1 - b, key + used) < cap;
    return false;
}

static bool ldm_locate(const void *user, const char *module_key, WeightsSource *src) {
    const AutoencoderKL *m = user;
    return vae_ldm_key(&m->cfg, module_key, src->key);
}

WeightsKeyMap vae_key_map_ldm(const AutoencoderKL *m) {
    return (WeightsKeyMap){
        .name = "Stability single-file VAE", .scope = LDM_VAE_PREFIX, .locate = ldm_locate, .user = m, .squeeze = true};
}

Status vae_load(const AutoencoderKL *m, ParamStore *s, const char *path, const WeightsLoadOptions *opt,
                WeightsReport *rep) {
    SafeTensors st;
    if (rep) memset(rep, 0, sizeof *rep);
    TRY(safetensors_open(&st, path));
    WeightsKeyMap map = weights_count_prefix(&st, LDM_VAE_PREFIX) > 0 ? vae_key_map_ldm(m) : weights_map_prefix(NULL);
    Status r = weights_load(s, &st, &map, opt, rep);
    safetensors_close(&st);
    return r;
}
