#!/usr/bin/env bash
# The loss ablation of the toy ADD experiment (ADD.md, Table 1 in spirit): the same distillation
# (configs/train/toy_add.yaml) with both losses, adversarial only (lambda 0), distillation only
# (adv_weight 0) and a randomly initialised student, each evaluated by `addc eval` at 1 and 4
# ADD-sampler steps; the teacher and real rows once. One table: OUT/results.md.
#
#   scripts/toy_ablations.sh [OUT_DIR] [key=value ...]
#
# Environment: ADDC (default build/addc), STEPS (default: the config's), JOBS runs at a time
# (default 2, each with ADDC_THREADS=1). key=value overrides go to every training run. A variant
# whose run directory already holds student.safetensors is kept (e.g. OUT/both can be the run of
# scripts/main.sh, which is the same configuration).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/runs/toy_ablations-$(date +%Y%m%d-%H%M%S)}; [ $# -gt 0 ] && shift
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ADDC=$(realpath "${ADDC:-$ROOT/build/addc}")
cd "$ROOT"
JOBS=${JOBS:-2}
mkdir -p "$OUT"
names=(both adversarial_only distillation_only random_init)
ovr=("" "loss.distill.lambda=0" "adv_weight=0" "student_init=random")
train() {
    local i=$1
    shift
    if [ -f "$OUT/${names[$i]}/student.safetensors" ]; then
        echo "toy_ablations: ${names[$i]}: $OUT/${names[$i]} is already trained, kept"
        return 0
    fi
    ADDC_THREADS=1 "$ADDC" train configs/train/toy_add.yaml ${STEPS:+steps=$STEPS} sample.every=0 ${ovr[$i]} "$@" \
        --run-dir "$OUT/${names[$i]}" > "$OUT/${names[$i]}.log" 2>&1 || { echo "toy_ablations: ${names[$i]} failed:"; tail -3 "$OUT/${names[$i]}.log"; return 1; }
    echo "toy_ablations: ${names[$i]} trained ($(tail -1 "$OUT/${names[$i]}/metrics.jsonl" | cut -c1-60)...)"
}
pids=()
failed=0
for i in "${!names[@]}"; do
    train "$i" "$@" &
    pids+=($!)
    if [ ${#pids[@]} -ge "$JOBS" ]; then
        wait "${pids[0]}" || failed=1
        pids=("${pids[@]:1}")
    fi
done
for p in "${pids[@]}"; do wait "$p" || failed=1; done
[ "$failed" = 0 ] || { echo "toy_ablations: a training run failed (logs in $OUT)" >&2; exit 1; }
rm -f "$OUT/results.md" "$OUT/results.jsonl"
for i in "${!names[@]}"; do
    if [ "$i" = 0 ]; then only=(); else only=(--student-only); fi
    ADDC=$ADDC TABLE="$OUT/results.md" PREFIX="${names[$i]//_/ }" STUDENT_STEPS="1 4" \
        scripts/toy_table.sh "$OUT/${names[$i]}" "${only[@]}" > /dev/null
done
cat "$OUT/results.md"
