#!/bin/sh
# tests/bench/run_add_xl.sh: the full ADD-XL training step on one GPU at 512x512 (configs/train/add_xl_bench.yaml:
# SDXL student and teacher, SDXL VAE, DINOv2 ViT-S/14 features and five heads with exact R1, DINOv2 ViT-L/14 image
# conditioning; random weights, bf16 UNets over fp32 masters): seconds per step and peak device memory at each
# batch size asked for, in order, until one does not fit; prints the table and the largest batch that fitted.
# Seconds per step: the median over the steps after the first of batch / img_per_s from metrics.jsonl (each
# step's own wall time: batch fetch, step, logging). Peak memory: the run's final metrics line (every device
# memory category's peak plus the step arena's). Nothing is kept (checkpoint.final false).
# Data: Fashion-MNIST shards made here from ADDC_FMNIST_DIR (default /usr/share/datasets/fashion-mnist; on the
# GPU machine the excerpt of tests/device/make-fmnist-mini.sh), resized by the loader to 512x512 RGB.
# Usage: tests/bench/run_add_xl.sh [--bin DIR] [--batches "1 2 4 8"] [--steps 4] [--timeout 300] [key=value ...]
set -e
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/build-gpu batches="1 2 4 8" steps=4 limit=300 extra=""
while [ $# -gt 0 ]; do
    case "$1" in
    --bin) bin=$2; shift 2 ;;
    --batches) batches=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --timeout) limit=$2; shift 2 ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    *=*) extra="$extra $1"; shift ;;
    *) echo "run_add_xl: unknown argument $1" >&2; exit 2 ;;
    esac
done
addc=$bin/addc
[ -x "$addc" ] || { echo "run_add_xl: no $addc (build first, or --bin DIR)" >&2; exit 1; }
tmp=$(mktemp -d /tmp/add_xl.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
"$addc" shards fmnist "$tmp/fm" --from "${ADDC_FMNIST_DIR:-/usr/share/datasets/fashion-mnist}" --split train \
    --limit 64 --per-shard 64 > "$tmp/shards.log" 2>&1 || { cat "$tmp/shards.log"; exit 1; }
cd "$root"
printf '%-6s %-10s %-8s %-10s %s\n' batch s/step img/s "peak GiB" status
largest=none
for b in $batches; do
    run=$tmp/b$b
    set +e
    # shellcheck disable=SC2086
    timeout "$limit" "$addc" train configs/train/add_xl_bench.yaml data.shards="$tmp/fm/fmnist-train-000000.tar" \
        batch="$b" steps="$steps" $extra --run-dir "$run" > "$tmp/b$b.log" 2>&1
    rc=$?
    set -e
    if [ $rc -ne 0 ]; then
        why="failed (exit $rc)"
        [ $rc -eq 124 ] && why="timed out after $limit s"
        grep -qi "out of memory" "$tmp/b$b.log" && why="out of memory"
        printf '%-6s %-10s %-8s %-10s %s\n' "$b" - - - "$why"
        tail -3 "$tmp/b$b.log" | sed 's/^/    /'
        break
    fi
    python3 - "$run/metrics.jsonl" "$b" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
steps = [r for r in rows if "img_per_s" in r]
final = [r for r in rows if r.get("final")][-1]
b = int(sys.argv[2])
s = [b / r["img_per_s"] for r in steps[1:]] or [b / steps[0]["img_per_s"]]
med = statistics.median(s)
print(f"{b:<6} {med:<10.3f} {b / med:<8.2f} {final.get('gpu_peak_bytes', 0) / 2**30:<10.1f} ok")
PY
    largest=$b
done
echo "largest batch that fitted: $largest"
