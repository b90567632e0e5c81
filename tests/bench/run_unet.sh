#!/bin/sh
# UNet step benchmark, addc vs diffusers on PyTorch CPU, in one command with the same thread count.
# Builds bench_unet (Release) in $BUILD_DIR (default build-bench/) if needed; for each model YAML
# (default: configs/models/tiny_unet.yaml and small_xl_unet.yaml) runs bench_unet, which writes random
# weights and inputs (batch 2, 32x32 latent, 77 tokens) and times addc, then bench_unet_torch.py on the
# same files; prints ms per step (median) of the forward and of forward + backward, the ratio
# torch/addc (> 1: addc is faster), and how far the two outputs and gradients differ.
# Usage: tests/bench/run_unet.sh [--reps N] [--warmup N] [--batch B] [--size S] [MODEL.yaml ...]
set -e
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build-bench}
ADDC_THREADS=${ADDC_THREADS:-$(nproc)}
export ADDC_THREADS

reps=5 warmup=2 extra="" models=""
while [ $# -gt 0 ]; do
    case "$1" in
    --reps) reps=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --batch | --size) extra="$extra $1 $2"; shift 2 ;;
    -*) echo "usage: $0 [--reps N] [--warmup N] [--batch B] [--size S] [MODEL.yaml ...]" >&2; exit 2 ;;
    *) models="$models $1"; shift ;;
    esac
done
[ -n "$models" ] || models="$root/configs/models/tiny_unet.yaml $root/configs/models/small_xl_unet.yaml"

if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
if ! grep -q '^CMAKE_BUILD_TYPE:STRING=Release$' "$build/CMakeCache.txt"; then
    echo "run_unet.sh: $build is not a Release build; set BUILD_DIR to another directory" >&2
    exit 1
fi
cmake --build "$build" --target bench_unet -j "$ADDC_THREADS" >/dev/null

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
load0=$(cut -d' ' -f1 /proc/loadavg)
echo "# $(uname -n), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $ADDC_THREADS threads;" \
     "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for m in $models; do
    "$build/bench_unet" --model "$m" --dir "$tmp" --reps "$reps" --warmup "$warmup" $extra >>"$tmp/addc.txt"
    python3 "$root/tests/bench/bench_unet_torch.py" --model "$m" --dir "$tmp" --reps "$reps" --warmup "$warmup" \
        >>"$tmp/torch.txt"
done
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
if awk -v b="$load0" -v a="$(cut -d' ' -f1 /proc/loadavg)" -v n="$(nproc)" 'BEGIN { exit !(b > 0.5 || a > n + 0.8) }'; then
    echo "# WARNING: the machine was not idle (load average $load0 before the run, $(cut -d' ' -f1 /proc/loadavg)" \
         "after): other work shared the CPUs and the times, torch's most (OpenMP spin-waits), are not comparable"
fi
grep -h '^#' "$tmp/addc.txt" "$tmp/torch.txt" | sed 's/^#/ /'

python3 - "$tmp/addc.txt" "$tmp/torch.txt" <<'PY'
import sys

def rows(path):
    return {f[1]: f[2:] for f in (l.split() for l in open(path)) if f and f[0] == "result"}

a, t = rows(sys.argv[1]), rows(sys.argv[2])
print(f"{'model':<14} {'params':>10} {'GFLOPs':>6} {'':>5} {'addc fwd':>9} {'torch fwd':>9} {'ratio':>6}"
      f" {'addc f+b':>9} {'torch f+b':>9} {'ratio':>6}  out err  grad err")
for name, (params, gfl, af, ab, afm, abm, *_) in a.items():  # then MFU and peak GiB (run_cuda.sh)
    tf, tb, eo, eg, tfm, tbm = t[name][1:7]
    for k, (x, y, u, v) in enumerate(((af, tf, ab, tb), (afm, tfm, abm, tbm))):
        x, y, u, v = map(float, (x, y, u, v))
        head = f"{name:<14} {int(params):>10,} {float(gfl):>6.2f}" if k == 0 else f"{'':<14} {'':>10} {'':>6}"
        tail = f"  {float(eo):.1e}  {float(eg):.1e}" if k == 0 else ""
        print(f"{head} {('median', 'min')[k]:>5} {x:9.1f} {y:9.1f} {y / x:6.2f} {u:9.1f} {v:9.1f} {v / u:6.2f}{tail}")
print("(ms per step; ratio = torch / addc: > 1 means addc is faster; min = best of the runs, least disturbed by load)")
PY
