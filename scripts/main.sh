#!/usr/bin/env bash
# The main job, from a fresh clone: install dependencies, build, make the Fashion-MNIST shards,
# distil the committed toy teacher (models/toy/teacher.safetensors) into a 1-4-step student by
# ADD (configs/train/toy_add.yaml), and print the results table: the teacher at 1, 4 and 50 DDIM
# steps against the student at 1, 2 and 4 steps (scripts/toy_table.sh).
#
#   scripts/main.sh [key=value ...]      overrides for the training run (e.g. steps=200)
#
# Everything lands in runs/toy_add-<date>/ (config, metrics.jsonl, sample grids, weights,
# results.md). About 15 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
BUILD_TARGETS=addc scripts/build.sh # the program only: the tests are scripts/test.sh's
./build/addc --version
[ -f data/fmnist/fmnist-test-000000.tar ] || ./build/addc shards fmnist data/fmnist
RUN=runs/toy_add-$(date +%Y%m%d-%H%M%S)
./build/addc train configs/train/toy_add.yaml --run-dir "$RUN" "$@"
scripts/toy_table.sh "$RUN"
