#!/bin/sh
# tests/device/fetch-wheels.sh: downloads the wheels of tests/device/wheels.txt (the Python packages the GPU machine
# lacks for tests/bench/run_cuda.sh) into .whl/ at the repository root, for the device's Python 3.12 on x86_64
# Linux, binary wheels only, without their dependencies (the list names every one needed). The folder is
# git-ignored: carry it to the device (run's carry [".whl"]); run_cuda.sh installs from it when diffusers is missing.
# Usage: tests/device/fetch-wheels.sh [DEST]   (default: <repo>/.whl)
set -e
root=$(cd "$(dirname "$0")/../.." && pwd)
dest=${1:-$root/.whl}
mkdir -p "$dest"
grep -v '^[[:space:]]*#' "$root/tests/device/wheels.txt" | grep -v '^[[:space:]]*$' | while read -r req; do
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$dest" "$req"
done
ls -l "$dest"
