/* tests/fuzz/fuzz_json: libFuzzer target for core/json: parse with a small depth limit, walk
 * every node through the accessors. Built and run by tests/fuzz/run.sh. */
#include <stddef.h>
#include <stdint.h>

#include "core/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    JsonDoc d;
    JsonLimits lim = {1 << 20, 32, 1 << 16};
    if (json_parse((const char *)data, (int64_t)size, &lim, &d) != ADDC_OK) {
        addc_error_clear();
        return 0;
    }
    int64_t len, iv;
    double v;
    for (int64_t i = 0; i < d.n; i++) {
        const JsonNode *n = &d.nodes[i];
        (void)json_string(&d, n, &len);
        (void)json_key(&d, n);
        (void)json_number(n, &v);
        (void)json_int(n, &iv);
        for (const JsonNode *c = json_child(&d, n); c; c = json_next(&d, c)) (void)json_get(&d, n, "k");
    }
    json_free(&d);
    return 0;
}
