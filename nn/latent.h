/* nn/latent: the latent codec of a training run: the image <-> latent map the UNet works in.
 *
 *   LATENT_CODEC_VAE        the frozen AutoencoderKL (nn/vae.h): encode to the posterior mean,
 *                           scaled by scaling_factor; decode undoes the scale (SD, SDXL)
 *   LATENT_CODEC_UNSHUFFLE  the toy's exactly invertible 2x2 pixel unshuffle: an image
 *                           (B, H, W, C) becomes (B, H/2, W/2, 4C), element
 *                           z[b, i, j, 4c + 2di + dj] = scale * x[b, 2i + di, 2j + dj, c], torch's
 *                           F.pixel_unshuffle(x, 2) channel order (a 32x32x1 Fashion-MNIST image
 *                           is then a 16x16x4 latent, SDXL's latent shape at a quarter of the
 *                           cost); decode is F.pixel_shuffle divided by scale
 *   LATENT_CODEC_NONE       pixel space: the latent is the image times scale
 * All three are Var ops: on a tape the decode passes the generator's gradient to the latent
 * (the VAE decoder with input gradients only, its weights being frozen). */
#ifndef ADDC_NN_LATENT_H
#define ADDC_NN_LATENT_H

#include <stdint.h>

#include "nn/vae.h"

typedef enum LatentCodecKind {
    LATENT_CODEC_VAE = 0,
    LATENT_CODEC_UNSHUFFLE,
    LATENT_CODEC_NONE,
    LATENT_CODEC_KIND_COUNT
} LatentCodecKind;

extern const char *const latent_codec_kind_names[LATENT_CODEC_KIND_COUNT]; /* "vae", "unshuffle", "none" */

typedef struct LatentCodec {
    LatentCodecKind kind;
    const AutoencoderKL *vae; /* LATENT_CODEC_VAE only */
    int64_t image_channels;   /* C of the images */
    double scale;             /* UNSHUFFLE and NONE: latent = scale * rearranged image */
} LatentCodec;

/* Latent channels and the image-to-latent downscale factor of the codec. */
int64_t latent_codec_channels(const LatentCodec *k);
int64_t latent_codec_downscale(const LatentCodec *k);

/* image (B, H, W, C) in [-1, 1] -> latent (B, H/f, W/f, latent channels) */
Var *latent_encode(Ctx *c, const LatentCodec *k, Var *image);
/* latent -> image, the exact inverse for UNSHUFFLE and NONE */
Var *latent_decode(Ctx *c, const LatentCodec *k, Var *latent);

#endif
