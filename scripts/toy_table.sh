#!/usr/bin/env bash
# The results table of a toy ADD run (configs/train/toy_add.yaml): the teacher at 1, 4 and 50 DDIM
# steps and the student at 1, 2 and 4 ADD-sampler steps, each measured by `addc eval` (Frechet
# distance to the Fashion-MNIST test split, class accuracy and within-class diversity in the
# evaluation network's features, seconds per image), plus the real-data floor. Rows go to
# RUN/results.md and RUN/results.jsonl; the table is printed at the end.
#
#   scripts/toy_table.sh RUN_DIR [--student-only] [key=value ...]
#
# RUN_DIR is an `addc train` run directory (its config.yaml and student.safetensors are used);
# key=value overrides go to every `addc eval` (e.g. eval.per_class=50). --student-only skips the
# teacher and real rows (the ablations share those). Environment: ADDC (default build/addc) the
# binary, TABLE (default RUN/results.md) where rows go, PREFIX a label prefix for the rows,
# STUDENT_STEPS (default "1 2 4"), TEACHER_CFG (default 1: no guidance).
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,15p' "$0"; exit 2; }
[ -d "$1" ] || { echo "toy_table: no run directory $1" >&2; exit 1; }
RUN=$(cd "$1" && pwd); shift
[ -z "${TABLE:-}" ] || TABLE=$(realpath -m "$TABLE")
[ -z "${ADDC:-}" ] || ADDC=$(realpath "$ADDC")
cd "$(dirname "$0")/.."
STUDENT_ONLY=0
if [ "${1:-}" = "--student-only" ]; then STUDENT_ONLY=1; shift; fi
ADDC=${ADDC:-build/addc}
CFG=$RUN/config.yaml
W=$RUN/student.safetensors
[ -f "$CFG" ] && [ -f "$W" ] || { echo "toy_table: $RUN has no config.yaml or student.safetensors" >&2; exit 1; }
TEACHER_CFG=${TEACHER_CFG:-1}
TABLE=${TABLE:-$RUN/results.md}
PREFIX=${PREFIX:+$PREFIX: }
ev() { "$ADDC" eval "$CFG" "$@" --table "$TABLE" --json "${TABLE%.md}.jsonl"; }
if [ "$STUDENT_ONLY" = 0 ]; then
    for n in 1 4 50; do
        ev "$@" --role teacher --sampler ddim --steps $n --cfg "$TEACHER_CFG" --label "${PREFIX}teacher DDIM $n steps"
    done
fi
for n in ${STUDENT_STEPS:-1 2 4}; do
    ev "$@" --role student --weights "$W" --sampler add --steps $n --label "${PREFIX}student ADD $n step$([ $n = 1 ] || echo s)"
done
if [ "$STUDENT_ONLY" = 0 ]; then ev "$@" --real --label "${PREFIX}real images (train split)"; fi
echo
cat "$TABLE"
