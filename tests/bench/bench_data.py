#!/usr/bin/env python3
"""Python peer of tests/bench/bench_data.c: the same work with webdataset + Pillow, one process.

Reads every .jpg of the shards into memory with webdataset (not timed), then times, per image:
Pillow decode (with Image.draft, Pillow's DCT scaling, as addc does; and without), resize so the
short side is SIZE (Image.BILINEAR, Pillow's antialiased convolution, the filter addc uses by
default), center crop SIZE x SIZE, to float32 in [-1, 1]. Prints images/s on one core, from the
thread's CPU time, best of 3 passes.
Usage: bench_data.py SHARDS [SIZE]
"""
import io
import sys
import time

import numpy as np
import webdataset as wds
from PIL import Image


def transform(data, size, draft):
    im = Image.open(io.BytesIO(data))
    w, h = im.size
    s = max(size / w, size / h)
    rw, rh = max(size, int(w * s + 0.5)), max(size, int(h * s + 0.5))
    if draft:
        im.draft("RGB", (rw, rh))
    im = im.convert("RGB")
    left, top = (rw - size) // 2, (rh - size) // 2
    im = im.resize((rw, rh), Image.BILINEAR, box=None).crop((left, top, left + size, top + size))
    return np.asarray(im, dtype=np.float32) / 127.5 - 1.0


def main():
    shards = sys.argv[1]
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 512
    images = [s["jpg"] for s in wds.WebDataset(shards, shardshuffle=False)]
    for draft in (True, False):
        transform(images[0], size, draft)
        dt = float("inf")
        for _ in range(3):  # best of 3 passes, in CPU time: a per-core rate, robust to a busy machine
            t0 = time.thread_time()
            for data in images:
                out = transform(data, size, draft)
            dt = min(dt, time.thread_time() - t0)
        assert out.shape == (size, size, 3)
        print("python webdataset + Pillow %s: %d images, %.1f images/s on one core (CPU time)" % (
            "with draft (DCT scaling)" if draft else "full decode", len(images), len(images) / dt))


if __name__ == "__main__":
    main()
