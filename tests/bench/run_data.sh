#!/bin/sh
# Data benchmark: decode + resize + crop to 512^2 of LAION-sized JPEG photos, addc vs Python
# webdataset + Pillow, same machine, same command. Usage: tests/bench/run_data.sh [BUILD_DIR]
# [COUNT]. Needs the bench_data target built in BUILD_DIR (default build) and python3 with
# webdataset, pillow, scikit-image.
set -e
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$src/build}
count=${2:-256}
dir=$(mktemp -d "${TMPDIR:-/tmp}/addc-bench-XXXXXX")
trap 'rm -rf "$dir"' EXIT
python3 "$src/tests/ref/make_wds_shards.py" --bench "$dir" --count "$count"
spec="$dir/bench-{000000..$(printf %06d $(( (count + 63) / 64 - 1 )))}.tar"
py=$(python3 "$src/tests/bench/bench_data.py" "$spec" 512)
c=$("$build/bench_data" "$spec" 512 "$(nproc)")
echo "$py"
echo "$c"
pyr=$(echo "$py" | sed -n 's/.*with draft.*, \([0-9.]*\) images\/s.*/\1/p')
cr=$(echo "$c" | sed -n 's/.*with DCT scaling: .*, \([0-9.]*\) images\/s.*/\1/p')
pyf=$(echo "$py" | sed -n 's/.*full decode: .*, \([0-9.]*\) images\/s.*/\1/p')
cf=$(echo "$c" | sed -n 's/.*full decode: .*, \([0-9.]*\) images\/s.*/\1/p')
awk -v a="$cr" -v b="$pyr" -v c="$cf" -v d="$pyf" 'BEGIN {
    printf "ratio addc / Python per core: %.2fx with DCT scaling (Pillow draft), %.2fx with full decode\n", a / b, c / d }'
