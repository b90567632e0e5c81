/* tests/unit/test_train_latent: the toy's pixel-unshuffle codec (nn/latent.h): torch's
 * F.pixel_unshuffle channel order z[b, i, j, 4c + 2di + dj] = s x[b, 2i + di, 2j + dj, c], decode is
 * its exact inverse, and the decode passes gradients back to the latent (the inverse rearrangement). */
#include <string.h>

#include "nn/latent.h"
#include "tests/test_util.h"

int main(void) {
    TestCtx t;
    tctx_init(&t);
    TestRng r = {7};
    const int64_t B = 2, H = 4, W = 6, C = 3;
    int64_t shape[4] = {B, H, W, C};
    Var *x = tvar_rand(&t, &r, true, -1, 1, 4, shape);
    LatentCodec k = {.kind = LATENT_CODEC_UNSHUFFLE, .image_channels = C, .scale = 0.5};
    Var *z = latent_encode(&t.c, &k, x);
    CHECK_VAR(z);
    CHECK(z && z->v.shape[1] == H / 2 && z->v.shape[2] == W / 2 && z->v.shape[3] == 4 * C, "latent shape");
    int bad = 0;
    const float *xs = x->v.data, *zs = z->v.data;
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < H / 2; i++)
            for (int64_t j = 0; j < W / 2; j++)
                for (int64_t c = 0; c < C; c++)
                    for (int di = 0; di < 2; di++)
                        for (int dj = 0; dj < 2; dj++) {
                            float want = 0.5f * xs[((b * H + 2 * i + di) * W + 2 * j + dj) * C + c];
                            float got = zs[((b * H / 2 + i) * W / 2 + j) * 4 * C + 4 * c + 2 * di + dj];
                            bad += want != got;
                        }
    CHECK(bad == 0, "%d latent elements out of torch's pixel_unshuffle order", bad);
    Var *y = latent_decode(&t.c, &k, z);
    CHECK(y && memcmp(y->v.data, x->v.data, (size_t)(B * H * W * C) * sizeof(float)) == 0, "decode(encode(x)) != x");
    /* d sum(w * decode(encode(x))) / dx = w */
    Var *w = tvar_rand(&t, &r, false, -1, 1, 4, shape);
    CHECK_OK(tape_backward(&t.c, op_sum(&t.c, op_mul(&t.c, y, w))));
    CHECK(x->g.data && compare_f32("grad", x->g.data, w->v.data, B * H * W * C, 1e-6, 1) < 1e-6,
          "gradient through the codec");
    tctx_free(&t);
    return test_main_end("train_latent");
}
