/* tests/unit/test_json: the strict JSON reader: valid documents and their values (nesting,
 * escapes, \u with surrogate pairs, numbers and exact integers, duplicate keys), every class of
 * invalid input with the byte offset of the error, the depth / size / node limits (a 100k-deep
 * array must fail cleanly, not crash), and random mutations of valid documents (no crash, no
 * leak under ASan; every accepted mutation is also accepted by a second parse). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "tests/test_util.h"

static void test_values(void) {
    const char *text = " {\"a\": [1, -2.5e3, 0, -0, 1e-7, 123456789012345678, 9223372036854775807,"
                       " -9223372036854775808, 9223372036854775808, 3.0],\n"
                       "  \"s\": \"q\\\"b\\\\s\\/\\b\\f\\n\\r\\t\\u00e9\\u20AC\\ud83d\\ude00\\u0000z\","
                       "  \"t\": true, \"f\": false, \"n\": null, \"o\": {}, \"e\": [], \"dup\": 1, \"dup\": 2,"
                       "  \"utf\": \"caf\xc3\xa9 \xe2\x98\x95 \xf0\x9f\x8c\x95\", \"lone\": \"x\\ud800y\\udc00\" } ";
    JsonDoc d;
    Status st = json_parse(text, (int64_t)strlen(text), NULL, &d);
    CHECK_OK(st);
    if (st != ADDC_OK) return;
    const JsonNode *r = json_root(&d);
    CHECK(r->type == JSON_OBJECT && r->count == 11, "root type %d count %lld", r->type, (long long)r->count);
    const JsonNode *a = json_get(&d, r, "a");
    CHECK(a && a->type == JSON_ARRAY && a->count == 10, "array a");
    double v;
    int64_t iv;
    CHECK(json_number(json_at(&d, a, 0), &v) && v == 1.0, "a[0]");
    CHECK(json_number(json_at(&d, a, 1), &v) && v == -2500.0 && !json_int(json_at(&d, a, 1), &iv), "a[1]");
    CHECK(json_int(json_at(&d, a, 3), &iv) && iv == 0, "-0 is the integer 0");
    CHECK(json_number(json_at(&d, a, 4), &v) && v == 1e-7, "1e-7");
    CHECK(json_int(json_at(&d, a, 5), &iv) && iv == 123456789012345678ll, "exact int beyond 2^53: %lld", (long long)iv);
    CHECK(json_int(json_at(&d, a, 6), &iv) && iv == INT64_MAX, "INT64_MAX");
    CHECK(json_int(json_at(&d, a, 7), &iv) && iv == INT64_MIN, "INT64_MIN");
    CHECK(!json_int(json_at(&d, a, 8), &iv) && json_number(json_at(&d, a, 8), &v) && v == 9223372036854775808.0,
          "2^63 is not an int64 but is a number");
    CHECK(!json_int(json_at(&d, a, 9), &iv), "3.0 is not an integer literal");
    CHECK(json_at(&d, a, 10) == NULL && json_at(&d, a, -1) == NULL, "out of range");
    int64_t len;
    const char *s = json_string(&d, json_get(&d, r, "s"), &len);
    static const char want[] = "q\"b\\s/\b\f\n\r\t\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\0z";
    CHECK(s && len == (int64_t)sizeof want - 1 && memcmp(s, want, sizeof want - 1) == 0, "escapes decoded (len %lld)",
          (long long)len);
    CHECK(json_get(&d, r, "t")->type == JSON_TRUE && json_get(&d, r, "f")->type == JSON_FALSE &&
              json_get(&d, r, "n")->type == JSON_NULL,
          "literals");
    CHECK(json_get(&d, r, "o")->count == 0 && json_child(&d, json_get(&d, r, "o")) == NULL, "empty object");
    CHECK(json_get(&d, r, "e")->type == JSON_ARRAY && json_get(&d, r, "e")->count == 0, "empty array");
    CHECK(json_int(json_get(&d, r, "dup"), &iv) && iv == 2, "duplicate key: last wins (%lld)", (long long)iv);
    s = json_string(&d, json_get(&d, r, "utf"), &len);
    CHECK(s && !strcmp(s, "caf\xc3\xa9 \xe2\x98\x95 \xf0\x9f\x8c\x95"), "raw UTF-8 kept");
    s = json_string(&d, json_get(&d, r, "lone"), &len);
    CHECK(s && !strcmp(s, "x\xef\xbf\xbdy\xef\xbf\xbd"), "lone surrogates become U+FFFD");
    CHECK(json_get(&d, r, "missing") == NULL && json_get(&d, a, "a") == NULL, "absent key / not an object");
    /* iteration order and keys */
    const char *keys[11];
    int k = 0;
    for (const JsonNode *c = json_child(&d, r); c && k < 11; c = json_next(&d, c)) keys[k++] = json_key(&d, c);
    CHECK(k == 11 && !strcmp(keys[0], "a") && !strcmp(keys[1], "s") && !strcmp(keys[10], "lone"), "member order");
    CHECK(json_key(&d, json_at(&d, a, 0)) == NULL, "array elements have no key");
    json_free(&d);

    /* scalars at the root, whitespace */
    const char *roots[] = {"0", " \t\r\n\"x\" ", "null", "-1.5E+2", "[[[]]]"};
    for (size_t i = 0; i < sizeof roots / sizeof roots[0]; i++) {
        st = json_parse(roots[i], (int64_t)strlen(roots[i]), NULL, &d);
        CHECK(st == ADDC_OK, "root '%s': %s", roots[i], addc_error_message());
        addc_error_clear();
        json_free(&d);
    }
    st = json_parse("-1.5E+2", 7, NULL, &d);
    CHECK(st == ADDC_OK && d.nodes[0].num == -150.0, "exponent");
    json_free(&d);
}

static void test_errors(void) {
    static const struct {
        const char *text;
        int64_t at;
        const char *what;
    } bad[] = {
        {"", 0, "end of input"},
        {"   ", 3, "end of input"},
        {"{\"a\":1,}", 7, "string key"},
        {"[1,]", 3, "expected a value"},
        {"[1 2]", 3, "expected ','"},
        {"{\"a\" 1}", 5, "':'"},
        {"{a:1}", 1, "string key"},
        {"01", 0, "leading zero"},
        {"+1", 0, "expected a value"},
        {".5", 0, "expected a value"},
        {"1.", 0, "after '.'"},
        {"1e", 0, "exponent"},
        {"-", 0, "invalid number"},
        {"NaN", 0, "expected a value"},
        {"Infinity", 0, "expected a value"},
        {"1e400", 0, "out of range"},
        {"tru", 0, "expected a value"},
        {"nul", 0, "expected a value"},
        {"\"abc", 0, "unterminated string"},
        {"\"a\nb\"", 2, "control character"},
        {"\"\\x\"", 1, "invalid escape"},
        {"\"\\u12G4\"", 1, "\\u escape"},
        {"\"\\u12\"", 1, "\\u escape"},
        {"\"\xc3\x28\"", 1, "UTF-8"},
        {"\"\xc0\xaf\"", 1, "UTF-8"},           /* overlong '/' */
        {"\"\xed\xa0\x80\"", 1, "UTF-8"},       /* encoded surrogate */
        {"\"\xf4\x90\x80\x80\"", 1, "UTF-8"},   /* above U+10FFFF */
        {"\"\xe2\x82\"", 1, "UTF-8"},           /* truncated sequence */
        {"\xef\xbb\xbf{}", 0, "expected a value"}, /* BOM */
        {"{} {}", 3, "after the document"},
        {"[1] x", 4, "after the document"},
        {"[", 1, "end of input"},
        {"{\"a\":", 5, "end of input"},
        {"[1", 2, "unterminated array"},
        {"{\"a\":1", 6, "unterminated object"},
        {"/* c */ 1", 0, "expected a value"},
        {"'a'", 0, "expected a value"},
        {"[1}", 2, "expected ','"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        JsonDoc d;
        Status st = json_parse(bad[i].text, (int64_t)strlen(bad[i].text), NULL, &d);
        char want[64];
        snprintf(want, sizeof want, "at byte %lld", (long long)bad[i].at);
        const char *msg = addc_error_message();
        CHECK(st == ADDC_ERR_FORMAT && strstr(msg, want) && strstr(msg, bad[i].what),
              "case %zu '%s': status %d, message '%s' (want '%s' ... '%s')", i, bad[i].text, st, msg, bad[i].what, want);
        CHECK(d.nodes == NULL && d.n == 0, "doc zeroed on failure");
        addc_error_clear();
    }
}

static void test_limits(void) {
    /* 100k nested arrays: the default depth limit stops it without recursion */
    int64_t n = 100000;
    char *deep = malloc((size_t)(2 * n));
    memset(deep, '[', (size_t)n);
    memset(deep + n, ']', (size_t)n);
    JsonDoc d;
    Status st = json_parse(deep, 2 * n, NULL, &d);
    CHECK(st == ADDC_ERR_FORMAT && strstr(addc_error_message(), "too deep") && strstr(addc_error_message(), "at byte 64"),
          "deep nesting: %s", addc_error_message());
    addc_error_clear();
    JsonLimits lim = {0, 200000, 0};
    st = json_parse(deep, 2 * n, &lim, &d);
    CHECK(st == ADDC_OK && d.n == n && d.nodes[n - 1].depth == n - 1, "100k nesting within a raised limit: %s",
          addc_error_message());
    addc_error_clear();
    json_free(&d);
    free(deep);
    JsonLimits small = {10, 0, 0};
    st = json_parse("[1,2,3,4,5,6]", 13, &small, &d);
    CHECK(st == ADDC_ERR_FORMAT && strstr(addc_error_message(), "10-byte limit"), "size limit: %s", addc_error_message());
    addc_error_clear();
    JsonLimits few = {0, 0, 4};
    st = json_parse("[1,2,3,4,5,6]", 13, &few, &d);
    CHECK(st == ADDC_ERR_FORMAT && strstr(addc_error_message(), "node limit") && strstr(addc_error_message(), "at byte 7"),
          "node limit: %s", addc_error_message());
    addc_error_clear();
    /* a long number literal takes the heap path */
    char num[400];
    memset(num, '1', sizeof num - 1);
    num[sizeof num - 1] = 0;
    num[200] = '.';
    st = json_parse(num, (int64_t)strlen(num), NULL, &d);
    CHECK(st == ADDC_OK && d.nodes[0].num > 1e199, "long number");
    json_free(&d);
    CHECK(json_utf8_valid("caf\xc3\xa9", 5) && !json_utf8_valid("\xc3", 1) && !json_utf8_valid("\xff", 1), "utf8_valid");
}

static void test_mutations(void) {
    const char *seed = "{\"width\": 512, \"height\": 384, \"punsafe\": 1.2e-3, \"caption\": \"a \\u00e9 \\ud83d\\ude00\","
                       " \"tags\": [\"x\", [true, false, null], {\"k\": -0.5}], \"e\": {}}";
    size_t n = strlen(seed);
    TestRng rng = {12345};
    char *buf = malloc(n + 8);
    int accepted = 0, rejected = 0;
    for (int it = 0; it < 20000; it++) {
        memcpy(buf, seed, n);
        size_t len = n;
        int edits = 1 + (int)(trng_uniform(&rng) * 4);
        for (int e = 0; e < edits; e++) {
            size_t pos = (size_t)(trng_uniform(&rng) * (double)len);
            double op = trng_uniform(&rng);
            static const char alphabet[] = "{}[]\",:\\u0123456789eE+-.tfnrl \xc3\xa9\xff\x01";
            char c = alphabet[(int)(trng_uniform(&rng) * (sizeof alphabet - 1))];
            if (op < 0.4) buf[pos] = c;
            else if (op < 0.7 && len > 1) {
                memmove(buf + pos, buf + pos + 1, len - pos - 1);
                len--;
            } else if (len < n + 7) {
                memmove(buf + pos + 1, buf + pos, len - pos);
                buf[pos] = c;
                len++;
            }
        }
        if (trng_uniform(&rng) < 0.1) len = (size_t)(trng_uniform(&rng) * (double)len); /* truncation */
        JsonDoc d;
        Status st = json_parse(buf, (int64_t)len, NULL, &d);
        if (st == ADDC_OK) {
            accepted++;
            JsonDoc d2;
            Status st2 = json_parse(buf, (int64_t)len, NULL, &d2);
            CHECK(st2 == ADDC_OK && d2.n == d.n, "second parse of an accepted mutation differs");
            json_free(&d2);
            json_free(&d);
        } else {
            rejected++;
            CHECK(strstr(addc_error_message(), "at byte") != NULL, "error without offset: %s", addc_error_message());
            addc_error_clear();
        }
    }
    printf("json mutations: %d accepted, %d rejected\n", accepted, rejected);
    CHECK(accepted > 100 && rejected > 1000, "mutation mix (accepted %d, rejected %d)", accepted, rejected);
    free(buf);
}

int main(void) {
    test_values();
    test_errors();
    test_limits();
    test_mutations();
    return test_main_end("json");
}
