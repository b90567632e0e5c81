#!/bin/sh
# Op benchmark, addc vs PyTorch CPU on this machine, in one command with the same thread count.
# Builds bench_ops (Release) in $BUILD_DIR (default build-bench/) if needed, then for each op
# shape runs bench_ops and tests/bench/bench_ops_torch.py back to back (so both sides of a ratio
# see the same machine state) with ADDC_THREADS threads (default: all cores), and prints the
# joined table with the ratio addc/torch and the issue's target per op. With --rounds N the whole
# interleaved sequence runs N times and each side keeps its best median per op: on a shared
# machine, other work only ever slows a run down, so the best round is the least disturbed one.
# Usage: tests/bench/run.sh [--bwd] [--reps N] [--warmup N] [--rounds N] [--filter SUBSTRING]
set -e
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build-bench}
ADDC_THREADS=${ADDC_THREADS:-$(nproc)}
export ADDC_THREADS

filter=""
opts=""
rounds=1
while [ $# -gt 0 ]; do
    case "$1" in
    --filter) filter="$2"; shift 2 ;;
    --bwd) opts="$opts --bwd"; shift ;;
    --reps | --warmup) opts="$opts $1 $2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    *) echo "usage: $0 [--bwd] [--reps N] [--warmup N] [--rounds N] [--filter SUBSTRING]" >&2; exit 2 ;;
    esac
done

if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
if ! grep -q '^CMAKE_BUILD_TYPE:STRING=Release$' "$build/CMakeCache.txt"; then
    echo "run.sh: $build is not a Release build; set BUILD_DIR to another directory" >&2
    exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! cmake --build "$build" --target bench_ops -j "$ADDC_THREADS" >"$tmp/build.log" 2>&1; then
    cat "$tmp/build.log" >&2
    exit 1
fi
echo "# $(uname -n), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $ADDC_THREADS threads;" \
     "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$build/bench_ops" --list | grep -F -- "$filter" >"$tmp/keys.txt" || true
round=1
while [ "$round" -le "$rounds" ]; do
    while IFS= read -r key; do
        # shellcheck disable=SC2086
        "$build/bench_ops" $opts --filter "$key" >>"$tmp/addc.txt"
        # shellcheck disable=SC2086
        python3 "$root/tests/bench/bench_ops_torch.py" $opts --filter "$key" >>"$tmp/torch.txt"
    done <"$tmp/keys.txt"
    echo "# load average after round $round: $(cut -d' ' -f1-3 /proc/loadavg)"
    round=$((round + 1))
done
[ -s "$tmp/keys.txt" ] || { echo "no op matches '$filter'" >&2; exit 1; }
for f in "$tmp/addc.txt" "$tmp/torch.txt"; do grep -m1 '^#' "$f" | sed 's/^/  /'; done

python3 - "$tmp/addc.txt" "$tmp/torch.txt" <<'PY'
import sys

def table(path):
    """(op, shape) -> (best fwd, best f+b, note of the best fwd) over the rounds"""
    rows = {}
    for line in open(path):
        f = line.split()
        if not f or f[0].startswith("#") or f[0] == "op":
            continue
        key, fwd, fb, note = (f[0], f[1]), float(f[2]), float(f[3]), f[4] if len(f) > 4 else "-"
        old = rows.get(key, (0.0, 0.0, note))
        rows[key] = (max(old[0], fwd), max(old[1], fb), note if fwd >= old[0] else old[2])
    return rows

a, t = table(sys.argv[1]), table(sys.argv[2])
target = {"linear": 1.0, "conv2d": 1.0, "attention": 0.8}
bwd = any(v[1] > 0 for v in a.values())
hdr = f"{'op':<10} {'shape':<24} {'addc':>8} {'torch':>8} {'ratio':>6}"
if bwd:
    hdr += f" {'addc f+b':>9} {'torch f+b':>9} {'ratio':>6}"
print(hdr + "  target  torch layout   (GFLOP/s)")
for key, (af, ab, _) in a.items():
    tf, tb, note = t.get(key, (0.0, 0.0, "missing"))
    r = af / tf if tf > 0 else 0.0
    line = f"{key[0]:<10} {key[1]:<24} {af:8.1f} {tf:8.1f} {r:6.2f}"
    if bwd:
        rb = ab / tb if tb > 0 else 0.0
        line += f" {ab:9.1f} {tb:9.1f} {rb:6.2f}"
    goal = target[key[0]]
    line += f"  >={goal:.1f} {'ok  ' if r >= goal else 'MISS'} {note}"
    print(line)
PY
