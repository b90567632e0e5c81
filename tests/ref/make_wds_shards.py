#!/usr/bin/env python3
"""Writes the WebDataset round-trip fixture for tests/unit/test_data_image.c and test_data_wds.c.

Shards: tests/ref/fixtures/wds/wds-00000{0,1,2}.tar written by webdataset.ShardWriter (8 samples
each) from crops of scikit-image's bundled photos, each sample holding KEY.jpg or KEY.png,
KEY.txt (a caption with non-ASCII text) and KEY.json (width, height, punsafe, similarity, ...).
The images cover the decoder paths: baseline JPEG with 4:2:0, 4:2:2 and 4:4:4 chroma,
progressive, grayscale and CMYK (Adobe) JPEG, odd sizes; PNG in RGB, gray, palette, RGBA and
gray+alpha. Images are small (<= 96 px) so the fixture stays under 1 MB.

Then it reads the shards back with webdataset.WebDataset(...).decode("rgb8") (Pillow decode,
convert("RGB")) and stores what Python sees: manifest.json (keys in order, captions, json,
sizes, offsets) and pixels.bin (uint8 RGB, concatenated). For JPEGs it also stores Pillow's
DCT-scaled decode at 1/2 (Image.draft), the path addc uses to decode straight to near the
target size.

Needs: webdataset, pillow, scikit-image, numpy. Usage: python3 tests/ref/make_wds_shards.py

With --bench DIR [--count N] it writes benchmark shards instead (not committed): N samples
(default 256) of JPEG photos at LAION-like sizes (480 to 1500 px sides, quality 90, 4:2:0),
cropped and resized from scikit-image's photos, 64 per shard, to DIR/bench-NNNNNN.tar, for
tests/bench/run_data.sh.
"""
import io
import json
import os
import sys

import numpy as np
import skimage.data
import webdataset as wds
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "wds")
MTIME = 1700000000  # fixed member times: reproducible tar files

SOURCES = ["astronaut", "coffee", "chelsea", "rocket", "camera", "moon", "coins", "hubble_deep_field",
           "immunohistochemistry", "colorwheel", "logo", "retina"]

# (encoding, size) for each of the 24 samples; sizes are (width, height)
PLAN = [
    ("jpg420", (96, 64)), ("jpg444", (80, 80)), ("jpg422", (64, 90)), ("jpgprog", (90, 61)),
    ("jpggray", (72, 48)), ("jpgcmyk", (60, 60)), ("png_rgb", (50, 70)), ("png_gray", (64, 40)),
    ("jpg420", (37, 53)), ("png_pal", (48, 48)), ("png_rgba", (40, 56)), ("jpg420", (95, 95)),
    ("jpg444", (33, 17)), ("png_la", (30, 45)), ("jpgprog", (64, 64)), ("jpg422", (77, 51)),
    ("jpggray", (41, 67)), ("jpg420", (88, 66)), ("png_rgb", (23, 31)), ("jpgcmyk", (45, 30)),
    ("jpg420", (17, 96)), ("jpg444", (96, 40)), ("png_pal", (64, 36)), ("jpg420", (52, 52)),
]

CAPTIONS = ["an astronaut, crop {i}", "café au lait ☕ #{i}", "a cat — 猫 {i}", "rocket on the pad (n°{i})",
            "black & white: \"camera\" {i}", "the moon 🌕 {i}", "coins, ¢ and € {i}", "deep field, Ωmega {i}",
            "tissue\tstained {i}", "colour wheel {i}", "logo {i} ✓", "retina {i}"]


def source_image(name):
    a = getattr(skimage.data, name)()
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.ndim == 2:
        return Image.fromarray(a, "L").convert("RGB")
    if a.shape[2] == 4:
        return Image.fromarray(a, "RGBA")
    return Image.fromarray(a, "RGB")


def make_image(i, rng):
    name = SOURCES[i % len(SOURCES)]
    src = source_image(name)
    enc, (w, h) = PLAN[i]
    sw, sh = src.size
    cw = int(rng.integers(sw // 3, sw + 1))
    ch = int(max(1, min(sh, round(cw * h / w))))
    x0 = int(rng.integers(0, sw - cw + 1))
    y0 = int(rng.integers(0, sh - ch + 1))
    im = src.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.LANCZOS)
    buf = io.BytesIO()
    if enc.startswith("jpg"):
        rgb = im.convert("RGB")
        if enc == "jpg420":
            rgb.save(buf, "JPEG", quality=90, subsampling=2)
        elif enc == "jpg422":
            rgb.save(buf, "JPEG", quality=85, subsampling=1)
        elif enc == "jpg444":
            rgb.save(buf, "JPEG", quality=92, subsampling=0)
        elif enc == "jpgprog":
            rgb.save(buf, "JPEG", quality=88, progressive=True)
        elif enc == "jpggray":
            rgb.convert("L").save(buf, "JPEG", quality=90)
        elif enc == "jpgcmyk":
            rgb.convert("CMYK").save(buf, "JPEG", quality=90)
        ext = "jpg" if i % 5 else "jpeg"
    else:
        mode = {"png_rgb": "RGB", "png_gray": "L", "png_rgba": "RGBA", "png_la": "LA"}.get(enc)
        if enc == "png_pal":
            out = im.convert("RGB").quantize(colors=64)
        elif mode in ("RGBA", "LA"):
            rgba = im.convert("RGBA")
            alpha = np.asarray(rgba)[:, :, 3].copy()
            alpha[:, : w // 3] = 128  # partly transparent: alpha must be dropped, not composited
            arr = np.asarray(rgba).copy()
            arr[:, :, 3] = alpha
            out = Image.fromarray(arr, "RGBA").convert(mode)
        else:
            out = im.convert(mode)
        out.save(buf, "PNG")
        ext = "png"
    return name, enc, ext, buf.getvalue()


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.startswith("wds-") and f.endswith(".tar"):
            os.remove(os.path.join(OUT, f))
    rng = np.random.default_rng(20240611)
    written = []
    pattern = os.path.join(OUT, "wds-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=8, mtime=MTIME, verbose=0) as sink:
        for i in range(len(PLAN)):
            name, enc, ext, data = make_image(i, rng)
            key = "%06d" % (1000 + i) if i % 7 != 3 else "dir%d/%06d" % (i % 3, 1000 + i)
            w, h = PLAN[i][1]
            caption = CAPTIONS[i % len(CAPTIONS)].format(i=i)
            meta = {"width": w, "height": h, "punsafe": round(float(rng.uniform(0, 0.3)), 6),
                    "similarity": round(float(rng.uniform(0.25, 0.45)), 6), "source": name, "encoding": enc,
                    "caption": caption, "index": i}
            sink.write({"__key__": key, ext: data, "txt": caption, "json": meta})
            written.append(key)

    shards = sorted(f for f in os.listdir(OUT) if f.startswith("wds-") and f.endswith(".tar"))
    urls = [os.path.join(OUT, f) for f in shards]
    raw_bytes = {}
    for s in wds.WebDataset(urls, shardshuffle=False):
        raw_bytes[s["__key__"]] = next(s[e] for e in ("jpg", "jpeg", "png") if e in s)
    ds = wds.WebDataset(urls, shardshuffle=False).decode("rgb8")
    samples, pixels, offset = [], bytearray(), 0
    for s in ds:
        img_ext = next(e for e in ("jpg", "jpeg", "png") if e in s)
        rgb = np.ascontiguousarray(s[img_ext])
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3, rgb.shape
        h, w = rgb.shape[:2]
        rec = {"key": s["__key__"], "shard": os.path.basename(s["__url__"]), "ext": img_ext,
               "caption": s["txt"], "json": s["json"], "height": h, "width": w, "offset": offset}
        pixels += rgb.tobytes()
        offset += rgb.size
        if img_ext in ("jpg", "jpeg"):
            raw = Image.open(io.BytesIO(raw_bytes[s["__key__"]]))
            raw.draft("RGB", (w // 2, h // 2))
            half = np.ascontiguousarray(np.asarray(raw.convert("RGB")))
            hh, hw = half.shape[:2]
            rec["half"] = {"height": hh, "width": hw, "offset": offset}
            pixels += half.tobytes()
            offset += half.size
        samples.append(rec)
    assert [r["key"] for r in samples] == written, "webdataset read back other keys"
    manifest = {"generator": "tests/ref/make_wds_shards.py", "webdataset": wds.__version__,
                "pillow": Image.__version__, "shards": shards, "samples": samples}
    with open(os.path.join(OUT, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, ensure_ascii=False, indent=1)
        f.write("\n")
    with open(os.path.join(OUT, "pixels.bin"), "wb") as f:
        f.write(pixels)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print("wrote %d samples in %d shards to %s (%d bytes in all)" % (len(samples), len(shards), OUT, total))


BENCH_SOURCES = ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "immunohistochemistry"]
BENCH_SIZES = [(640, 480), (800, 600), (1024, 768), (1280, 853), (1500, 1000), (600, 900), (512, 512), (1024, 1024),
               (720, 1280), (500, 375)]


def bench(out, count):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(7)
    srcs = [source_image(n).convert("RGB") for n in BENCH_SOURCES]
    with wds.ShardWriter(os.path.join(out, "bench-%06d.tar"), maxcount=64, mtime=MTIME, verbose=0) as sink:
        for i in range(count):
            src = srcs[i % len(srcs)]
            w, h = BENCH_SIZES[(i * 7 + i // len(srcs)) % len(BENCH_SIZES)]
            sw, sh = src.size
            cw = int(rng.integers(sw // 2, sw + 1))
            ch = int(max(1, min(sh, round(cw * h / w))))
            x0 = int(rng.integers(0, sw - cw + 1))
            y0 = int(rng.integers(0, sh - ch + 1))
            im = src.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.BICUBIC)
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=90)
            sink.write({"__key__": "%06d" % i, "jpg": buf.getvalue(), "txt": "bench photo %d" % i,
                        "json": {"width": w, "height": h}})
    print("wrote %d benchmark samples to %s" % (count, out))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--bench":
        n = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[3] == "--count" else 256
        sys.exit(bench(sys.argv[2], n))
    sys.exit(main())
