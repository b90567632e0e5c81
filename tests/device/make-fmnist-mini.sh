#!/usr/bin/env bash
# The first 64 images (and labels) of each Fashion-MNIST split as idx .gz files in .fmnist-mini/
# (git-ignored, about 40 KB), for the GPU machine, which has no datasets: carry it with the run and
# point ADDC_FMNIST_DIR at it (tests/device/run.sh does). Reads FMNIST_DIR (default
# /usr/share/datasets/fashion-mnist).
set -euo pipefail
cd "$(dirname "$0")/../.."
src=${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}
mkdir -p .fmnist-mini
python3 - "$src" .fmnist-mini <<'PY'
import gzip, struct, sys
src, dst = sys.argv[1], sys.argv[2]
N = 64
for split in ("train", "t10k"):
    for kind, hdr in (("images-idx3", 16), ("labels-idx1", 8)):
        name = f"{split}-{kind}-ubyte.gz"
        raw = gzip.open(f"{src}/{name}").read()
        head = bytearray(raw[:hdr])
        struct.pack_into(">I", head, 4, N)  # the count field
        item = 28 * 28 if kind.startswith("images") else 1
        with gzip.open(f"{dst}/{name}", "wb") as f:
            f.write(bytes(head) + raw[hdr:hdr + N * item])
print(f"{dst}: first {N} samples of each split")
PY
