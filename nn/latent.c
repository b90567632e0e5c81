/* nn/latent: the latent codecs of a training run (see latent.h). The pixel unshuffle is a
 * reshape, a permutation and a reshape, so its gradient is the inverse rearrangement. */
#include "nn/latent.h"

#include "core/ops.h"

const char *const latent_codec_kind_names[LATENT_CODEC_KIND_COUNT] = {"vae", "unshuffle", "none"};

int64_t latent_codec_channels(const LatentCodec *k) {
    switch (k->kind) {
    case LATENT_CODEC_VAE: return k->vae->cfg.latent_channels;
    case LATENT_CODEC_UNSHUFFLE: return 4 * k->image_channels;
    default: return k->image_channels;
    }
}

int64_t latent_codec_downscale(const LatentCodec *k) {
    switch (k->kind) {
    case LATENT_CODEC_VAE: return vae_downscale(k->vae);
    case LATENT_CODEC_UNSHUFFLE: return 2;
    default: return 1;
    }
}

/* (B, H, W, C) -> (B, H/2, W/2, C, 2, 2) -> (B, H/2, W/2, 4C) */
static Var *pixel_unshuffle(Ctx *c, Var *x) {
    if (!x) return NULL;
    const int64_t *s = x->v.shape;
    if (x->v.ndim != 4 || s[1] % 2 || s[2] % 2) {
        addc_error_set(ADDC_ERR_INVALID, "pixel unshuffle: needs (B, H, W, C) with even H and W");
        return NULL;
    }
    int64_t B = s[0], H = s[1], W = s[2], C = s[3];
    int64_t split[6] = {B, H / 2, 2, W / 2, 2, C};
    static const int32_t perm[6] = {0, 1, 3, 5, 2, 4};
    int64_t out[4] = {B, H / 2, W / 2, 4 * C};
    return op_reshape(c, op_permute(c, op_reshape(c, x, 6, split), perm), 4, out);
}

/* (B, h, w, 4C) -> (B, h, w, C, 2, 2) -> (B, h, 2, w, 2, C) -> (B, 2h, 2w, C) */
static Var *pixel_shuffle(Ctx *c, Var *z) {
    if (!z) return NULL;
    const int64_t *s = z->v.shape;
    if (z->v.ndim != 4 || s[3] % 4) {
        addc_error_set(ADDC_ERR_INVALID, "pixel shuffle: needs (B, h, w, 4C)");
        return NULL;
    }
    int64_t B = s[0], h = s[1], w = s[2], C = s[3] / 4;
    int64_t split[6] = {B, h, w, C, 2, 2};
    static const int32_t perm[6] = {0, 1, 4, 2, 5, 3};
    int64_t out[4] = {B, 2 * h, 2 * w, C};
    return op_reshape(c, op_permute(c, op_reshape(c, z, 6, split), perm), 4, out);
}

Var *latent_encode(Ctx *c, const LatentCodec *k, Var *image) {
    switch (k->kind) {
    case LATENT_CODEC_VAE: return vae_encode_latents(c, k->vae, image, NULL);
    case LATENT_CODEC_UNSHUFFLE: return op_scale(c, pixel_unshuffle(c, image), k->scale, 0.0);
    default: return op_scale(c, image, k->scale, 0.0);
    }
}

Var *latent_decode(Ctx *c, const LatentCodec *k, Var *latent) {
    switch (k->kind) {
    case LATENT_CODEC_VAE: return vae_decode_latents(c, k->vae, latent);
    case LATENT_CODEC_UNSHUFFLE: return pixel_shuffle(c, op_scale(c, latent, 1.0 / k->scale, 0.0));
    default: return op_scale(c, latent, 1.0 / k->scale, 0.0);
    }
}
