#!/usr/bin/env bash
# Distributed training benchmark (not a test): the toy ADD step (configs/train/toy_add.yaml, the
# committed teacher, feature network and heads, batch 64, data.streams 2) on 1 rank and on 2 MPI
# ranks with and without FSDP gather prefetch; for each: seconds per step (median of the logged
# steps after the first 3), the bytes a rank sends in collectives per step, and the checkpoint
# write and read rates (the final checkpoint, then a resume that reads it back). Prints a table.
#
#   tests/bench/run_dist.sh [STEPS]      (default 20; needs data/fmnist from scripts/main.sh)
#
# Environment: ADDC (default build/addc), THREADS (ADDC_THREADS per rank, default 1), OUT (default
# /tmp/addc_bench_dist).
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS=${1:-20}
ADDC=${ADDC:-build/addc}
OUT=${OUT:-/tmp/addc_bench_dist}
THREADS=${THREADS:-1}
[ -f data/fmnist/fmnist-train-000000.tar ] || { echo "run_dist: no data/fmnist shards (scripts/main.sh makes them)" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN="mpirun --oversubscribe --mca btl self,vader"
rm -rf "$OUT"
mkdir -p "$OUT"
COMMON="configs/train/toy_add.yaml steps=$STEPS log_every=1 sample.every=0 save_every=0 data.streams=2 checkpoint.keep=1"

run() { # name np extra...
    local name=$1 np=$2
    shift 2
    local launch=""
    [ "$np" -gt 1 ] && launch="$MPIRUN -np $np"
    ADDC_THREADS=$THREADS $launch "$ADDC" train $COMMON "$@" --run-dir "$OUT/$name" >"$OUT/$name.log" 2>&1
    # read back: the same command with steps unchanged resumes and runs nothing
    ADDC_THREADS=$THREADS $launch "$ADDC" train $COMMON "$@" --run-dir "$OUT/$name" >"$OUT/$name.resume.log" 2>&1
}

row() { # name np label
    python3 - "$OUT/$1" "$2" "$3" <<'EOF'
import json, re, statistics, sys
run, np, label = sys.argv[1], sys.argv[2], sys.argv[3]
steps, last = [], None
for line in open(run + "/metrics.jsonl"):
    d = json.loads(line)
    if "elapsed_s" in d and "step" in d:
        if last is not None: steps.append((d["elapsed_s"] - last[0], d.get("comm_bytes", 0)))
        last = (d["elapsed_s"], d)
dt = statistics.median(s for s, _ in steps[3:]) if len(steps) > 3 else float("nan")
cb = statistics.median(b for _, b in steps[3:]) if len(steps) > 3 else 0
log = open(run + ".log").read()
w = re.findall(r"checkpoint .*\(end\): ([0-9.]+) s, ([0-9.]+) MB/s", log)
r = re.findall(r"resumed from .*\(([0-9.]+) s, ([0-9.]+) MB/s read", open(run + ".resume.log").read())
print(f"| {label} | {np} | {dt:.3f} | {cb/1e6:.2f} | {w[-1][1] if w else '-'} | {r[-1][1] if r else '-'} |")
EOF
}

run np1 1
run np2 2
run np2_noprefetch 2 dist.prefetch=false
{
    echo "toy ADD step, batch 64, $STEPS steps, ADDC_THREADS=$THREADS per rank, $(nproc) cores ($(uname -n))"
    echo
    echo "| run | ranks | s/step | MB sent per rank per step | checkpoint write MB/s | read MB/s |"
    echo "|---|---:|---:|---:|---:|---:|"
    row np1 1 "1 rank"
    row np2 2 "FSDP, prefetch"
    row np2_noprefetch 2 "FSDP, no prefetch"
} | tee "$OUT/table.md"
