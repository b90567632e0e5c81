#!/bin/sh
# Training-step benchmark, `addc train` vs the same step in PyTorch (tests/bench/bench_train_torch.py), in one
# command with the same thread count and batch. For each mode (diffusion: configs/train/toy_teacher.yaml, add:
# configs/train/toy_add.yaml with fresh teacher weights) runs `addc train` for warmup + steps steps on a fixed
# batch (data.fixed_batch: the loader runs once) and reads each step's seconds from its metrics.jsonl, then runs
# bench_train_torch.py on the same config; prints the median seconds per step after the warmup steps of both,
# and the ratio torch / addc (> 1: addc is faster).
# Builds addc (Release) in $BUILD_DIR (default build-bench/) if needed; the batch comes from a 128-image
# Fashion-MNIST shard made in a temporary directory (Debian package dataset-fashion-mnist; else data/fmnist/).
# --rounds R repeats the whole sequence R times and each side keeps its best median (on a shared machine other
# work only slows a run down).
# Usage: tests/bench/run_train.sh [--threads N] [--steps N] [--warmup N] [--rounds R] [--mode diffusion|add]
set -e
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build-bench}
threads=${ADDC_THREADS:-2}
steps=10 warmup=2 rounds=1 modes="diffusion add"
usage="usage: $0 [--threads N] [--steps N] [--warmup N] [--rounds R] [--mode diffusion|add]"
while [ $# -gt 0 ]; do
    case "$1" in
    --threads) threads=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --mode) modes=$2; shift 2 ;;
    *) echo "$usage" >&2; exit 2 ;;
    esac
done
for v in "$threads" "$steps" "$rounds"; do
    case "$v" in '' | *[!0-9]* | 0) echo "$usage (N a positive integer)" >&2; exit 2 ;; esac
done
case "$warmup" in '' | *[!0-9]*) echo "$usage (--warmup N >= 0)" >&2; exit 2 ;; esac
case "$modes" in diffusion | add | "diffusion add") ;; *) echo "$usage" >&2; exit 2 ;; esac
ADDC_THREADS=$threads
export ADDC_THREADS

if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
if ! grep -q '^CMAKE_BUILD_TYPE:STRING=Release$' "$build/CMakeCache.txt"; then
    echo "run_train.sh: $build is not a Release build; set BUILD_DIR to another directory" >&2
    exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --build "$build" --target addc -j "$threads" >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log" >&2; exit 1; }

# One batch is all a fixed-batch run reads: a 128-image shard from the Debian package dataset-fashion-mnist
# (what `addc shards fmnist` reads), else the configs' own shards under data/fmnist/.
shards=""
if "$build/addc" shards fmnist "$tmp/fmnist" --split train --limit 128 --per-shard 128 >"$tmp/shards.log" 2>&1; then
    shards="data.shards=$tmp/fmnist/fmnist-train-000000.tar"
elif [ ! -f "$root/data/fmnist/fmnist-train-000000.tar" ]; then
    cat "$tmp/shards.log" >&2
    echo "run_train.sh: no Fashion-MNIST images: apt-get install dataset-fashion-mnist" >&2
    exit 1
fi
load0=$(cut -d' ' -f1 /proc/loadavg)
echo "# $(uname -n), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) CPUs;" \
     "$threads threads each side; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')
git -C "$root" diff --quiet HEAD 2>/dev/null || rev="$rev+changes"
echo "# addc $rev, $(cc --version | head -n1); $(python3 --version)"
cd "$root"
for r in $(seq "$rounds"); do
    for mode in $modes; do
        case "$mode" in
        diffusion) cfg=configs/train/toy_teacher.yaml extra="" ;;
        add) cfg=configs/train/toy_add.yaml extra="teacher.weights=" ;; # fresh teacher weights keyed by init_seed
        esac
        # shellcheck disable=SC2086
        "$build/addc" train "$cfg" steps=$((warmup + steps)) log_every=1 save_every=0 data.fixed_batch=true \
            data.shuffle=0 data.threads=1 $shards $extra --run-dir "$tmp/$mode.$r" >"$tmp/$mode.$r.log" 2>&1 ||
            { cat "$tmp/$mode.$r.log" >&2; exit 1; }
        python3 tests/bench/bench_train_torch.py --config "$cfg" --steps "$steps" --warmup "$warmup" \
            --threads "$threads" | sed "s/^result $mode /result $mode.$r /" >>"$tmp/torch.txt"
    done
    echo "# load average after round $r: $(cut -d' ' -f1-3 /proc/loadavg)"
done
if awk -v b="$load0" -v a="$(cut -d' ' -f1 /proc/loadavg)" -v n="$(nproc)" -v t="$threads" \
    'BEGIN { exit !(b > n - t + 0.5 || a > n - t + 1.5) }'; then
    echo "# WARNING: the machine was busy (load average $load0 before the run, $(cut -d' ' -f1 /proc/loadavg) after," \
         "$(nproc) CPUs, $threads threads each side): other work shared the CPUs; use --rounds, or compare nothing"
fi
grep -h '^#' "$tmp/torch.txt" | sort -u | sed 's/^#/ /'

# shellcheck disable=SC2086
python3 - "$tmp" "$warmup" "$rounds" $modes <<'PY'
import json
import statistics
import sys

import yaml

tmp, warmup, rounds, modes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
torch = {f[1]: [float(x) for x in f[2:5]] for f in (l.split() for l in open(f"{tmp}/torch.txt")) if f[:1] == ["result"]}


def addc_times(run):
    """seconds of each step after the warmup: with log_every 1, img_per_s is batch / the step's own wall time
    (4 significant digits), the same interval as the step's elapsed_s delta (whose 4 digits coarsen past 100 s)"""
    batch = yaml.safe_load(open(f"{tmp}/{run}/config.yaml"))["batch"]
    rows = [json.loads(l) for l in open(f"{tmp}/{run}/metrics.jsonl")]
    rows = [r for r in rows if "step" in r]
    per_step = [batch / r["img_per_s"] for r in rows][warmup:]
    el = [0.0] + [r["elapsed_s"] for r in rows]
    deltas = [b - a for a, b in zip(el, el[1:])][warmup:]
    return per_step, deltas


print(f"{'mode':<10} {'addc s/step':>11} {'torch s/step':>12} {'speed-up':>8}   {'addc min':>8} {'torch min':>9}"
      f" {'speed-up':>8}   elapsed_s check")
for mode in modes:
    runs = [f"{mode}.{r}" for r in range(1, rounds + 1)]
    a = {run: addc_times(run) for run in runs}
    am = min(statistics.median(a[run][0]) for run in runs)
    amin = min(min(a[run][0]) for run in runs)
    check = min(statistics.median(a[run][1]) for run in runs)
    tm = min(torch[run][0] for run in runs)
    tmin = min(torch[run][1] for run in runs)
    print(f"{mode:<10} {am:11.3f} {tm:12.3f} {tm / am:8.2f}   {amin:8.3f} {tmin:9.3f} {tmin / amin:8.2f}   {check:.3f}")
    if rounds > 1:
        print(f"{'':<10} rounds: addc {' '.join(f'{statistics.median(a[r][0]):.3f}' for r in runs)},"
              f" torch {' '.join(f'{torch[r][0]:.3f}' for r in runs)}")
n = len(addc_times(f"{modes[0]}.1")[0])
print(f"(seconds per step: the median over {n} steps after {warmup}, the best of {rounds} round(s) for each side, and the"
      " fastest single step; speed-up = torch / addc: > 1 means addc is faster; the last column is addc's median step"
      " from elapsed_s deltas, which should agree)")
PY
