/* tests/fuzz/fuzz_wds: libFuzzer target for the shard path: an input is a tar (optionally
 * compressed) read by the WebDataset reader from memory; every sample's json is parsed, its
 * caption checked, its image probed, decoded (small limits) and resized + cropped + flipped to
 * 16 x 16. Nothing may crash, hang, leak or trip ASan/UBSan. Built and run by tests/fuzz/run.sh. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/json.h"
#include "data/image.h"
#include "data/wds.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    WdsLimits lim = {1 << 20, 1 << 16};
    ImageLimits il = {1 << 20, 4096};
    DataStats st = {0};
    WdsReader *r;
    if (wds_reader_open_memory(data, size, &lim, &st, &r) != ADDC_OK) {
        addc_error_clear();
        return 0;
    }
    WdsSample s = {0};
    ImageU8 im = {0};
    ResizeScratch rs = {0};
    float out[16 * 16 * 3];
    int n = 0;
    while (n++ < 1000 && wds_reader_next(r, &s, n % 3 != 0) == 1) {
        if (s.json.loaded) {
            JsonDoc d;
            if (json_parse((const char *)s.json.data, s.json.len, NULL, &d) == ADDC_OK) json_free(&d);
        }
        if (s.caption.loaded) (void)json_utf8_valid((const char *)s.caption.data, s.caption.len);
        if (!s.image.loaded) continue;
        int32_t h, w, oh, ow;
        (void)image_probe(s.image.data, s.image.len, &h, &w);
        DataCounter fail;
        if (image_decode(s.image.data, s.image.len, &il, 16, 16, &im, &oh, &ow, &fail) == ADDC_OK) {
            int32_t rh, rw;
            image_cover_size(oh, ow, 16, 16, &rh, &rw);
            ResizeCrop rc = {rh, rw, (rh - 16) / 2, (rw - 16) / 2, 16, 16, (n & 1) != 0, (ResizeFilter)(n % 3)};
            (void)image_resize_crop(im.data, im.h, im.w, &rc, out, &rs);
        }
        addc_error_clear();
    }
    wds_reader_close(r);
    addc_error_clear();
    wds_sample_free(&s);
    image_u8_free(&im);
    resize_scratch_free(&rs);
    return 0;
}
