/* CUDA device slot: allocate, poison-fill on the device, copy back. Skips (exit 77, which
 * ctest reports as skipped) where no GPU is present, as in CI. */
#include <stdlib.h>

#include "core/cuda.h"
#include "tests/test_util.h"

int main(void) {
    int n = cuda_device_count();
    if (n == 0) {
        printf("test_cuda_runtime: skipped: %s\n", cuda_unavailable_reason());
        return 77;
    }
    char desc[256];
    CHECK_OK(cuda_device_describe(0, desc, sizeof desc));
    printf("device 0: %s\n", desc);
    const int64_t count = 1 << 20;
    float *d = NULL;
    CHECK_OK(cuda_malloc((void **)&d, count * sizeof(float)));
    CHECK_OK(cuda_fill_f32(d, count, 3.5f));
    CHECK_OK(cuda_synchronize());
    float *h = malloc(count * sizeof(float));
    CHECK_OK(cuda_copy_to_host(h, d, count * sizeof(float)));
    int64_t bad = 0;
    for (int64_t i = 0; i < count; i++) bad += h[i] != 3.5f;
    CHECK(bad == 0, "%lld elements not filled", (long long)bad);
    CHECK_OK(cuda_free(d));
    free(h);
    return test_main_end("test_cuda_runtime");
}
