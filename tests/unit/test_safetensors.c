/* tests/unit/test_safetensors: safetensors read/write (nn/safetensors) and loading parameter
 * stores by name (nn/weights).
 *
 * - round trip of every dtype (with an empty tensor, a scalar and metadata); data aligned;
 * - a file written by Python safetensors (tests/ref/make_unet_fixture.py) reads back exactly;
 * - every header check refuses a crafted bad file with a message naming what is wrong;
 * - weights: save/load in F32/F16/BF16 with conv layouts (files OIHW / OIK), missing,
 *   unexpected and mis-shaped keys reported by name, partial loads refused unless allowed,
 *   a refused load leaves the store untouched, scopes, row bands (a fused qkv), squeezed
 *   1x1 convs, meta stores. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn/layers.h"
#include "nn/weights.h"
#include "tests/test_util.h"

static char tmpdir[64];

static char *tmp_path(char *buf, const char *name) {
    snprintf(buf, 256, "%s/%s", tmpdir, name);
    return buf;
}

/* ---- round trip ---- */

static void test_round_trip(void) {
    float f32[6] = {0.5f, -1.25f, 3.0f, 1e-8f, -0.0f, 65504.0f};
    uint16_t f16[3] = {f32_to_f16(1.5f), f32_to_f16(-2.0f), f32_to_f16(0.1f)};
    uint16_t bf16[4] = {f32_to_bf16(1.0f), f32_to_bf16(-3e38f), f32_to_bf16(0.5f), f32_to_bf16(7.0f)};
    double f64[2] = {1.0 / 3.0, -2.5};
    int32_t i32[3] = {1, -2, 2147483647};
    int64_t i64[2] = {-5, (int64_t)1 << 40};
    uint8_t u8[5] = {0, 1, 2, 254, 255};
    StTensor t[] = {
        {.name = "a.f16", .dtype = DTYPE_F16, .ndim = 1, .shape = {3}, .data = f16, .nbytes = 6},
        {.name = "b.f32", .dtype = DTYPE_F32, .ndim = 2, .shape = {2, 3}, .data = f32, .nbytes = 24},
        {.name = "c.u8", .dtype = DTYPE_U8, .ndim = 1, .shape = {5}, .data = u8, .nbytes = 5},
        {.name = "d.bf16", .dtype = DTYPE_BF16, .ndim = 2, .shape = {2, 2}, .data = bf16, .nbytes = 8},
        {.name = "e.f64", .dtype = DTYPE_F64, .ndim = 1, .shape = {2}, .data = f64, .nbytes = 16},
        {.name = "f.i32", .dtype = DTYPE_I32, .ndim = 3, .shape = {1, 3, 1}, .data = i32, .nbytes = 12},
        {.name = "g.i64", .dtype = DTYPE_I64, .ndim = 1, .shape = {2}, .data = i64, .nbytes = 16},
        {.name = "h.empty", .dtype = DTYPE_F32, .ndim = 2, .shape = {0, 7}, .data = f32, .nbytes = 0},
        {.name = "i.scalar", .dtype = DTYPE_F32, .ndim = 0, .data = f32 + 2, .nbytes = 4},
        {.name = "j \"quoted\\\" \xc3\xa9", .dtype = DTYPE_F32, .ndim = 1, .shape = {1}, .data = f32, .nbytes = 4},
    };
    int32_t n = (int32_t)(sizeof t / sizeof t[0]);
    char path[256];
    tmp_path(path, "rt.safetensors");
    CHECK_OK(safetensors_write(path, t, n, "{\"format\":\"pt\",\"k\":\"v\\n\"}"));
    SafeTensors st;
    CHECK_OK(safetensors_open(&st, path));
    CHECK(st.n == n, "read %d tensors, wrote %d", st.n, n);
    CHECK(st.metadata && strstr(st.metadata, "\"format\":\"pt\"") && strstr(st.metadata, "\"k\":\"v\\n\""),
          "metadata %s", st.metadata ? st.metadata : "(null)");
    uint64_t hlen = 0;
    memcpy(&hlen, st.map, 8);
    CHECK((8 + hlen) % 8 == 0, "header length %llu not padded to 8", (unsigned long long)hlen);
    for (int32_t i = 0; i < n; i++) {
        const StTensor *r = safetensors_find(&st, t[i].name);
        CHECK(r != NULL, "tensor %s not found", t[i].name);
        if (!r) continue;
        bool same = r->dtype == t[i].dtype && r->ndim == t[i].ndim && r->nbytes == t[i].nbytes &&
                    memcmp(r->shape, t[i].shape, sizeof(int64_t) * (size_t)r->ndim) == 0 &&
                    memcmp(r->data, t[i].data, (size_t)r->nbytes) == 0;
        CHECK(same, "tensor %s differs after the round trip", t[i].name);
        size_t es = dtype_size(r->dtype);
        CHECK(((uintptr_t)r->data - (uintptr_t)st.map) % es == 0, "tensor %s misaligned", t[i].name);
    }
    CHECK(safetensors_find(&st, "nope") == NULL, "found a tensor that does not exist");
    float back[4];
    CHECK_OK(safetensors_read_f32(safetensors_find(&st, "d.bf16"), back, 4));
    CHECK(back[0] == 1.0f && back[2] == 0.5f && back[3] == 7.0f, "bf16 -> f32 %g %g %g", back[0], back[2], back[3]);
    CHECK_OK(safetensors_read_f32(safetensors_find(&st, "a.f16"), back, 3));
    CHECK(back[0] == 1.5f && back[1] == -2.0f && back[2] == f16_to_f32(f32_to_f16(0.1f)), "f16 -> f32");
    CHECK_OK(safetensors_read_f32(safetensors_find(&st, "e.f64"), back, 2));
    CHECK(back[0] == (float)(1.0 / 3.0) && back[1] == -2.5f, "f64 -> f32");
    CHECK(safetensors_read_f32(safetensors_find(&st, "e.f64"), back, 3) != ADDC_OK, "wrong count accepted");
    addc_error_clear();
    safetensors_close(&st);

    /* every f16 and bf16 bit pattern converts as core/dtype does (vector and scalar paths) */
    uint16_t *all = malloc(65536 * sizeof *all);
    float *got = malloc(65536 * sizeof *got);
    for (int i = 0; i < 65536; i++) all[i] = (uint16_t)i;
    StTensor ft = {.name = "all", .dtype = DTYPE_F16, .ndim = 1, .shape = {65536}, .data = all, .nbytes = 131072};
    int bad16 = 0, badbf = 0;
    CHECK_OK(safetensors_read_f32(&ft, got, 65536));
    for (int i = 0; i < 65536; i++) {
        float want = f16_to_f32(all[i]);
        bad16 += !(memcmp(&got[i], &want, 4) == 0 || (isnan(want) && isnan(got[i])));
    }
    ft.dtype = DTYPE_BF16;
    CHECK_OK(safetensors_read_f32(&ft, got, 65536));
    for (int i = 0; i < 65536; i++) {
        float want = bf16_to_f32(all[i]);
        badbf += memcmp(&got[i], &want, 4) != 0;
    }
    CHECK(bad16 == 0 && badbf == 0, "f16: %d, bf16: %d bit patterns convert differently", bad16, badbf);
    free(all);
    free(got);

    /* writer refusals */
    StTensor dup[2] = {t[1], t[1]};
    CHECK(safetensors_write(path, dup, 2, NULL) == ADDC_ERR_INVALID, "duplicate names written");
    printf("  write refused: %s\n", addc_error_message());
    addc_error_clear();
    StTensor bad = t[1];
    bad.nbytes = 20;
    CHECK(safetensors_write(path, &bad, 1, NULL) == ADDC_ERR_INVALID, "wrong byte count written");
    addc_error_clear();
    CHECK(safetensors_write(path, t, n, "{\"a\": 1}") != ADDC_OK, "metadata with a number written");
    addc_error_clear();
    CHECK(access(path, F_OK) == 0, "a refused write removed the previous file");
}

/* ---- a file written by Python safetensors ---- */

static void test_python_file(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/tests/ref/fixtures/unet/pyfile.safetensors", ADDC_SOURCE_DIR);
    SafeTensors st;
    CHECK_OK(safetensors_open(&st, path));
    if (st.n == 0) return;
    CHECK(st.n == 9, "%d tensors", st.n);
    CHECK(st.metadata && strstr(st.metadata, "\"note\":\"w\xc3\xa9ights \\\"q\\\"\""), "metadata %s",
          st.metadata ? st.metadata : "(null)");
    float v[8];
    const StTensor *t = safetensors_find(&st, "f32");
    CHECK(t && t->dtype == DTYPE_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3, "f32 header");
    if (t && safetensors_read_f32(t, v, 6) == ADDC_OK)
        for (int i = 0; i < 6; i++) CHECK(v[i] == i / 4.0f, "f32[%d] = %g", i, v[i]);
    t = safetensors_find(&st, "f16");
    CHECK(t && t->dtype == DTYPE_F16 && safetensors_read_f32(t, v, 3) == ADDC_OK && v[0] == 1.5f && v[1] == -2.25f &&
              v[2] == 65504.0f,
          "f16 values");
    t = safetensors_find(&st, "bf16");
    CHECK(t && t->dtype == DTYPE_BF16 && safetensors_read_f32(t, v, 4) == ADDC_OK && v[0] == 1.0f &&
              v[1] == bf16_to_f32(f32_to_bf16(-3.0e38f)) && v[2] == 0.5f && v[3] == 7.0f,
          "bf16 values");
    t = safetensors_find(&st, "f64");
    CHECK(t && t->dtype == DTYPE_F64 && safetensors_read_f32(t, v, 1) == ADDC_OK && v[0] == (float)(1.0 / 3.0),
          "f64 value");
    t = safetensors_find(&st, "i64");
    CHECK(t && t->dtype == DTYPE_I64 && ((const int64_t *)t->data)[1] == (int64_t)1 << 40, "i64 value");
    t = safetensors_find(&st, "u8");
    CHECK(t && t->dtype == DTYPE_U8 && ((const uint8_t *)t->data)[1] == 255, "u8 value");
    t = safetensors_find(&st, "i32");
    CHECK(t && t->dtype == DTYPE_I32 && t->ndim == 2 && ((const int32_t *)t->data)[0] == 7, "i32 value");
    t = safetensors_find(&st, "empty");
    CHECK(t && t->nbytes == 0 && t->shape[0] == 0 && t->shape[1] == 4, "empty tensor");
    t = safetensors_find(&st, "scalar");
    CHECK(t && t->ndim == 0 && safetensors_read_f32(t, v, 1) == ADDC_OK && v[0] == 2.5f, "scalar");
    safetensors_close(&st);
}

/* ---- crafted bad files ---- */

/* Writes 8-byte length (hlen_field, or the JSON's length when < 0), the JSON, then data_len bytes. */
static void write_raw(const char *path, const char *json, int64_t hlen_field, int64_t data_len) {
    FILE *f = fopen(path, "wb");
    uint64_t h = hlen_field >= 0 ? (uint64_t)hlen_field : strlen(json);
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)(h >> (8 * i));
    fwrite(len, 1, 8, f);
    fwrite(json, 1, strlen(json), f);
    for (int64_t i = 0; i < data_len; i++) fputc((int)(i & 0xff), f);
    fclose(f);
}

typedef struct BadCase {
    const char *what, *json;
    int64_t hlen_field, data_len;
    const char *expect; /* a phrase the message must contain */
} BadCase;

static void test_bad_files(void) {
    static const BadCase cases[] = {
        {"header too large", "{}", 200ll << 20, 0, "exceeds the 100 MiB limit"},
        {"header past the end", "{}", 4096, 0, "runs past the end"},
        {"not JSON", "{\"a\": {\"dtype\": \"F32\", ", -1, 0, "not valid JSON"},
        {"not an object", "[1, 2]", -1, 0, "must be a JSON object"},
        {"trailing garbage", "{} x", -1, 0, "not valid JSON"},
        {"bad dtype", "{\"w\":{\"dtype\":\"X9\",\"shape\":[1],\"data_offsets\":[0,4]}}", -1, 4, "unknown dtype 'X9'"},
        {"unsupported dtype", "{\"w\":{\"dtype\":\"BOOL\",\"shape\":[1],\"data_offsets\":[0,1]}}", -1, 1,
         "dtype BOOL is not supported"},
        {"dtype not a string", "{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", -1, 4,
         "dtype must be a string"},
        {"shape x dtype != span", "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", -1, 8,
         "= 12 bytes, but data_offsets [0, 8] span 8"},
        {"wrong dtype size", "{\"w\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,8]}}", -1, 8,
         "= 4 bytes, but data_offsets"},
        {"huge shape", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", -1, 4,
         "does not fit in 64 bits"},
        {"negative shape", "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", -1, 4,
         "not a non-negative integer"},
        {"fractional shape", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", -1, 4,
         "not a non-negative integer"},
        {"rank too large", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", -1, 1,
         "rank 7 exceeds"},
        {"span outside the file", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", -1, 12,
         "outside the data section of 12 bytes"},
        {"truncated data", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                           "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
         -1, 10, "tensor 'b': data_offsets [8, 16] lie outside"},
        {"reversed offsets", "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}", -1, 4,
         "0 <= begin <= end"},
        {"overlap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         -1, 12, "overlap tensor 'a'"},
        {"gap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
         -1, 12, "bytes [4, 8) of the data section belong to no tensor"},
        {"trailing bytes", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", -1, 6,
         "bytes [4, 6) at the end"},
        {"duplicate name", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                           "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
         -1, 8, "appears twice"},
        {"empty name", "{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", -1, 4, "empty name"},
        {"missing data_offsets", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", -1, 4, "lacks \"data_offsets\""},
        {"entry not an object", "{\"w\":[1,2]}", -1, 0, "entry must be an object"},
        {"metadata not strings", "{\"__metadata__\":{\"a\":1}}", -1, 0, "must be a string"},
        {"name with NUL", "{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", -1, 1,
         "NUL character"},
        {"invalid UTF-8", "{\"\xff\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", -1, 1,
         "not valid JSON"},
        {"deep nesting", "{\"__metadata__\":{\"a\":[[[[[[[[[[1]]]]]]]]]]}}", -1, 0, "not valid JSON"},
    };
    char path[256];
    tmp_path(path, "bad.safetensors");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const BadCase *b = &cases[i];
        write_raw(path, b->json, b->hlen_field, b->data_len);
        SafeTensors st;
        addc_error_clear();
        Status s = safetensors_open(&st, path);
        const char *msg = addc_error_message();
        CHECK(s == ADDC_ERR_FORMAT && strstr(msg, b->expect) && strstr(msg, path),
              "%s: status %d, message '%s' (expected '%s')", b->what, (int)s, msg, b->expect);
        CHECK(st.map == NULL && st.t == NULL && st.n == 0, "%s: a refused open left state behind", b->what);
        printf("  %-22s -> %s\n", b->what, msg + strlen("safetensors: ") + strlen(path) + 2);
        if (s == ADDC_OK) safetensors_close(&st);
    }
    /* too short and missing files */
    FILE *f = fopen(path, "wb");
    fwrite("abc", 1, 3, f);
    fclose(f);
    SafeTensors st;
    addc_error_clear();
    CHECK(safetensors_open(&st, path) == ADDC_ERR_FORMAT && strstr(addc_error_message(), "too short"),
          "3-byte file: %s", addc_error_message());
    addc_error_clear();
    CHECK(safetensors_open(&st, "/nonexistent/x.safetensors") == ADDC_ERR_IO, "missing file");
    addc_error_clear();
    /* an unpadded header (data not aligned) still reads correctly */
    float vals[2] = {1.25f, -7.5f};
    const char *json = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    f = fopen(path, "wb");
    uint64_t h = strlen(json);
    fwrite(&h, 8, 1, f);
    fwrite(json, 1, h, f);
    fwrite(vals, 4, 2, f);
    fclose(f);
    CHECK_OK(safetensors_open(&st, path));
    float back[2] = {0, 0};
    if (st.n == 1) CHECK_OK(safetensors_read_f32(&st.t[0], back, 2));
    CHECK(back[0] == 1.25f && back[1] == -7.5f, "unaligned read %g %g", back[0], back[1]);
    safetensors_close(&st);
}

/* Random byte edits and truncations of a valid file: each open either fails with a format
 * error or yields tensors that lie inside the mapping (run under ASan in CI). */
static void test_mutations(void) {
    char good[256], bad[256];
    tmp_path(good, "good.safetensors");
    tmp_path(bad, "mut.safetensors");
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t h[3] = {1, 2, 3};
    StTensor t[3] = {
        {.name = "w", .dtype = DTYPE_F32, .ndim = 2, .shape = {2, 3}, .data = a, .nbytes = 24},
        {.name = "h", .dtype = DTYPE_BF16, .ndim = 1, .shape = {3}, .data = h, .nbytes = 6},
        {.name = "z", .dtype = DTYPE_U8, .ndim = 1, .shape = {0}, .data = a, .nbytes = 0},
    };
    CHECK_OK(safetensors_write(good, t, 3, NULL));
    FILE *f = fopen(good, "rb");
    unsigned char buf[1024];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    static const char json_chars[] = "{}[],:\"0123456789-e.";
    TestRng r = {42};
    int opened = 0, refused = 0, wrong = 0;
    for (int it = 0; it < 3000; it++) {
        unsigned char m[1024];
        memcpy(m, buf, n);
        size_t len = n;
        int edits = 1 + (int)(trng_uniform(&r) * 3);
        for (int e = 0; e < edits; e++) {
            size_t pos = (size_t)(trng_uniform(&r) * (double)(len < 8 + 120 ? len : 8 + 120));
            double kind = trng_uniform(&r);
            if (kind < 0.6) m[pos] = (unsigned char)(trng_uniform(&r) * 256);
            else if (kind < 0.8) m[pos] = (unsigned char)json_chars[(int)(trng_uniform(&r) * (double)(sizeof json_chars - 1))];
            else len = pos;
        }
        f = fopen(bad, "wb");
        fwrite(m, 1, len, f);
        fclose(f);
        SafeTensors st;
        addc_error_clear();
        Status s = safetensors_open(&st, bad);
        if (s == ADDC_OK) {
            opened++;
            const char *lo = st.map, *hi = lo + st.size;
            for (int32_t i = 0; i < st.n; i++) {
                const char *d = st.t[i].data;
                if (d < lo || d + st.t[i].nbytes > hi || st.t[i].nbytes < 0) wrong++;
                float tmp[16];
                int64_t ne = st.t[i].nbytes / (int64_t)dtype_size(st.t[i].dtype);
                if (ne <= 16) safetensors_read_f32(&st.t[i], tmp, ne);
            }
            safetensors_close(&st);
        } else {
            refused++;
            if (s != ADDC_ERR_FORMAT || !*addc_error_message()) wrong++;
        }
    }
    addc_error_clear();
    CHECK(wrong == 0, "%d mutated files misread", wrong);
    printf("  3000 mutated files: %d opened (tensors inside the file), %d refused with a message\n", opened, refused);
}

/* ---- weights ---- */

typedef struct Net {
    ParamStore s;
    Linear fc;     /* "fc" (3, 5) */
    Conv2d conv;   /* "block.conv" (4, 3x3, 2) */
    Var *c1;       /* "head.c1.weight" conv1d (2, K=3, 4) */
    Norm norm;     /* "block.norm" */
} Net;

static void net_build(Net *n, Device dev, bool with_norm) {
    param_store_init(&n->s, dev);
    param_store_begin_unit(&n->s, "fc");
    linear_init(&n->fc, &n->s, "fc", 5, 3, true);
    param_store_begin_unit(&n->s, "block");
    conv2d_init(&n->conv, &n->s, "block.conv", 2, 4, 3, 1, 1, true);
    if (with_norm) group_norm_init(&n->norm, &n->s, "block.norm", 2, 4, 1e-5, true);
    int64_t sh[3] = {2, 3, 4};
    n->c1 = param_new(&n->s, "head.c1.weight", 3, sh, PARAM_CONV1D_OIK);
    CHECK_OK(param_store_alloc(&n->s, false));
}

static float *store_copy(const ParamStore *s) {
    float *c = malloc((size_t)s->numel * sizeof(float));
    memcpy(c, s->data, (size_t)s->numel * sizeof(float));
    return c;
}

static void expect_refusal(Status s, const char *what, const char *const *phrases, int n) {
    const char *msg = addc_error_message();
    bool ok = s == ADDC_ERR_FORMAT;
    for (int i = 0; i < n; i++) ok = ok && strstr(msg, phrases[i]) != NULL;
    CHECK(ok, "%s: status %d, message '%s'", what, (int)s, msg);
    printf("  %s -> %s\n", what, msg);
    addc_error_clear();
}

static void test_weights(void) {
    char path[256], path2[256];
    tmp_path(path, "net.safetensors");
    tmp_path(path2, "net2.safetensors");
    Net a, b;
    net_build(&a, DEVICE_CPU, true);
    CHECK_OK(param_store_init_random(&a.s, 11));
    /* distinct norm values, so a swap would show */
    for (int i = 0; i < 4; i++) ((float *)a.norm.weight->v.data)[i] = 1.0f + 0.1f * (float)i;

    /* F32 round trip, and the file holds the ecosystem layouts */
    CHECK_OK(weights_save(&a.s, path, DTYPE_F32, NULL));
    SafeTensors st;
    CHECK_OK(safetensors_open(&st, path));
    const StTensor *cw = safetensors_find(&st, "block.conv.weight");
    CHECK(cw && cw->ndim == 4 && cw->shape[0] == 4 && cw->shape[1] == 2 && cw->shape[2] == 3 && cw->shape[3] == 3,
          "conv2d weight not saved as OIHW");
    const float *w = a.conv.weight->v.data;
    if (cw) {
        const float *fw = cw->data;
        int bad = 0;
        for (int o = 0; o < 4; o++)
            for (int i = 0; i < 2; i++)
                for (int y = 0; y < 3; y++)
                    for (int x = 0; x < 3; x++)
                        bad += fw[((o * 2 + i) * 3 + y) * 3 + x] != w[((o * 3 + y) * 3 + x) * 2 + i];
        CHECK(bad == 0, "%d conv2d elements out of place in the file", bad);
    }
    const StTensor *c1 = safetensors_find(&st, "head.c1.weight");
    CHECK(c1 && c1->ndim == 3 && c1->shape[0] == 2 && c1->shape[1] == 4 && c1->shape[2] == 3,
          "conv1d weight not saved as (O, I, K)");
    if (c1) {
        const float *fw = c1->data, *cv = a.c1->v.data;
        int bad = 0;
        for (int o = 0; o < 2; o++)
            for (int i = 0; i < 4; i++)
                for (int k = 0; k < 3; k++) bad += fw[(o * 4 + i) * 3 + k] != cv[(o * 3 + k) * 4 + i];
        CHECK(bad == 0, "%d conv1d elements out of place in the file", bad);
    }
    CHECK(st.metadata && strstr(st.metadata, "\"format\":\"pt\""), "no format metadata");
    safetensors_close(&st);

    WeightsKeyMap id = weights_map_prefix(NULL);
    DType dts[3] = {DTYPE_F32, DTYPE_F16, DTYPE_BF16};
    for (int d = 0; d < 3; d++) {
        CHECK_OK(weights_save(&a.s, path, dts[d], NULL));
        net_build(&b, DEVICE_CPU, true);
        WeightsReport rep;
        CHECK_OK(weights_load_file(&b.s, path, &id, NULL, &rep));
        CHECK(rep.n_loaded == a.s.n && rep.n_missing == 0 && rep.n_unexpected == 0, "%s load report", dtype_name(dts[d]));
        int bad = 0;
        for (int64_t i = 0; i < a.s.numel; i++) {
            float want = a.s.data[i];
            if (dts[d] == DTYPE_F16) want = f16_to_f32(f32_to_f16(want));
            if (dts[d] == DTYPE_BF16) want = bf16_to_f32(f32_to_bf16(want));
            bad += b.s.data[i] != want;
        }
        CHECK(bad == 0, "%s round trip: %d values differ", dtype_name(dts[d]), bad);
        weights_report_free(&rep);
        param_store_free(&b.s);
    }
    CHECK_OK(weights_save(&a.s, path, DTYPE_F32, NULL));

    /* missing: the file lacks block.norm.*; a store with the norm is refused, names given */
    Net small;
    net_build(&small, DEVICE_CPU, false);
    CHECK_OK(param_store_init_random(&small.s, 5));
    CHECK_OK(weights_save(&small.s, path2, DTYPE_F32, NULL));
    net_build(&b, DEVICE_CPU, true);
    float *before = store_copy(&b.s);
    WeightsReport rep;
    Status s = weights_load_file(&b.s, path2, &id, NULL, &rep);
    expect_refusal(s, "missing keys", (const char *[]){"2 missing from the file", "block.norm.weight", "block.norm.bias",
                                                       "refusing a partial load"},
                   4);
    CHECK(rep.n_missing == 2 && strcmp(rep.missing[0], "block.norm.weight") == 0, "missing list");
    CHECK(memcmp(before, b.s.data, (size_t)b.s.numel * 4) == 0, "a refused load changed the store");
    weights_report_free(&rep);
    WeightsLoadOptions allow_missing = {.allow_missing = true};
    CHECK_OK(weights_load_file(&b.s, path2, &id, &allow_missing, &rep));
    CHECK(rep.n_missing == 2 && rep.n_loaded == small.s.n, "allowed partial load report");
    const Param *nw = param_store_find(&b.s, "block.norm.weight");
    CHECK(memcmp(b.s.data + nw->offset, before + nw->offset, 4 * sizeof(float)) == 0,
          "a missing parameter changed in a partial load");
    CHECK(memcmp(b.fc.weight->v.data, small.fc.weight->v.data, 15 * 4) == 0, "partial load did not load fc");
    weights_report_free(&rep);
    free(before);
    param_store_free(&b.s);

    /* unexpected: the file has block.norm.* that the small store lacks */
    net_build(&b, DEVICE_CPU, false);
    s = weights_load_file(&b.s, path, &id, NULL, &rep);
    expect_refusal(s, "unexpected keys", (const char *[]){"2 unexpected in the file", "block.norm.bias", "block.norm.weight"}, 3);
    CHECK(rep.n_unexpected == 2, "unexpected count %d", rep.n_unexpected);
    weights_report_free(&rep);
    WeightsLoadOptions allow_unexpected = {.allow_unexpected = true};
    CHECK_OK(weights_load_file(&b.s, path, &id, &allow_unexpected, &rep));
    CHECK(memcmp(b.conv.weight->v.data, a.conv.weight->v.data, 72 * 4) == 0, "load with unexpected keys");
    weights_report_free(&rep);
    param_store_free(&b.s);

    /* mis-shaped: refused even when partial loads are allowed */
    ParamStore ms;
    param_store_init(&ms, DEVICE_CPU);
    Linear fc_wide;
    linear_init(&fc_wide, &ms, "fc", 6, 3, true);
    CHECK_OK(param_store_alloc(&ms, false));
    WeightsLoadOptions lax = {true, true};
    s = weights_load_file(&ms, path, &id, &lax, &rep);
    expect_refusal(s, "mis-shaped key",
                   (const char *[]){"1 mis-shaped", "fc.weight <- fc.weight: file (3, 5) but the model needs (3, 6)"}, 2);
    CHECK(rep.n_misshaped == 1, "mis-shaped count %d", rep.n_misshaped);
    weights_report_free(&rep);
    param_store_free(&ms);

    /* scope and prefix: a file holding two networks; keys of the other are ignored */
    ParamStore two;
    param_store_init(&two, DEVICE_CPU);
    Linear l1, l2;
    linear_init(&l1, &two, "unet.fc", 5, 3, true);
    linear_init(&l2, &two, "vae.fc", 5, 3, false);
    CHECK_OK(param_store_alloc(&two, false));
    CHECK_OK(param_store_init_random(&two, 3));
    CHECK_OK(weights_save(&two, path2, DTYPE_F32, NULL));
    ParamStore one;
    param_store_init(&one, DEVICE_CPU);
    Linear l3;
    linear_init(&l3, &one, "fc", 5, 3, true);
    CHECK_OK(param_store_alloc(&one, false));
    WeightsKeyMap pre = weights_map_prefix("unet.");
    CHECK_OK(weights_load_file(&one, path2, &pre, NULL, &rep));
    CHECK(rep.n_ignored == 1 && rep.n_loaded == 2, "scope: ignored %d loaded %d", rep.n_ignored, rep.n_loaded);
    CHECK(memcmp(l3.weight->v.data, l1.weight->v.data, 15 * 4) == 0, "prefix load values");
    weights_report_free(&rep);
    param_store_free(&one);
    param_store_free(&two);

    param_store_free(&small.s);
    param_store_free(&a.s);
}

/* a fused (3D, D) in_proj_weight feeding to_q, to_k, to_v; a 1x1 conv feeding a linear */
static bool fused_locate(const void *user, const char *key, WeightsSource *src) {
    static const char *const parts[3] = {"attn.to_q.weight", "attn.to_k.weight", "attn.to_v.weight"};
    for (int i = 0; i < 3; i++)
        if (strcmp(key, parts[i]) == 0) {
            snprintf(src->key, sizeof src->key, "attn.in_proj_weight");
            src->row_begin = 4 * i;
            src->rows = 4;
            return true;
        }
    snprintf(src->key, sizeof src->key, "%s", key);
    return true;
}

static void test_weights_maps(void) {
    char path[256];
    tmp_path(path, "fused.safetensors");
    float qkv[12 * 4], proj[4 * 4];
    for (int i = 0; i < 48; i++) qkv[i] = (float)i;
    for (int i = 0; i < 16; i++) proj[i] = -(float)i;
    StTensor t[2] = {
        {.name = "attn.in_proj_weight", .dtype = DTYPE_F32, .ndim = 2, .shape = {12, 4}, .data = qkv, .nbytes = sizeof qkv},
        {.name = "attn.proj.weight", .dtype = DTYPE_F32, .ndim = 4, .shape = {4, 4, 1, 1}, .data = proj, .nbytes = sizeof proj},
    };
    CHECK_OK(safetensors_write(path, t, 2, NULL));
    ParamStore s;
    param_store_init(&s, DEVICE_CPU);
    Linear q, k, v, pj;
    linear_init(&q, &s, "attn.to_q", 4, 4, false);
    linear_init(&k, &s, "attn.to_k", 4, 4, false);
    linear_init(&v, &s, "attn.to_v", 4, 4, false);
    linear_init(&pj, &s, "attn.proj", 4, 4, false);
    CHECK_OK(param_store_alloc(&s, false));
    WeightsKeyMap m = {.name = "open_clip", .scope = "attn.", .locate = fused_locate, .squeeze = false};
    WeightsReport rep;
    Status st = weights_load_file(&s, path, &m, NULL, &rep);
    expect_refusal(st, "1x1 conv without squeeze", (const char *[]){"attn.proj.weight <- attn.proj.weight: file (4, 4, 1, 1)"}, 1);
    weights_report_free(&rep);
    m.squeeze = true;
    CHECK_OK(weights_load_file(&s, path, &m, NULL, &rep));
    const float *kv = k.weight->v.data, *vv = v.weight->v.data, *pv = pj.weight->v.data;
    CHECK(kv[0] == 16.0f && kv[15] == 31.0f && vv[0] == 32.0f && pv[5] == -5.0f, "row bands / squeeze values");
    CHECK(rep.n_unexpected == 0 && rep.n_loaded == 4, "fused report");
    weights_report_free(&rep);
    param_store_free(&s);

    /* a meta store: checks only */
    ParamStore meta;
    param_store_init(&meta, DEVICE_META);
    Linear mq;
    linear_init(&mq, &meta, "attn.to_q", 4, 5, false);
    CHECK_OK(param_store_alloc(&meta, false));
    WeightsLoadOptions lax = {true, true};
    st = weights_load_file(&meta, path, &m, &lax, &rep);
    expect_refusal(st, "meta store, mis-shaped", (const char *[]){"rows [0, 4)", "the model needs (5, 4)"}, 2);
    weights_report_free(&rep);
    param_store_free(&meta);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "%s/addc_st_XXXXXX", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip();
    test_python_file();
    test_bad_files();
    test_mutations();
    test_weights();
    test_weights_maps();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_main_end("safetensors");
}
