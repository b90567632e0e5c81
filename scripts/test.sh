#!/usr/bin/env bash
# Every test, from a fresh clone: install dependencies, build, run ctest (unit, reference,
# CUDA tests skip without a GPU), then build with ASan + UBSan and run the unit tests again,
# then run each libFuzzer target (tar+decode, JSON) for a bounded time.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
scripts/install-deps.sh
scripts/build.sh
(cd build && ctest --output-on-failure -j"$jobs")
echo "== unit tests under AddressSanitizer + UndefinedBehaviorSanitizer =="
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DADDC_SANITIZE=ON -DADDC_CUDA=OFF >build-asan.configure.log 2>&1 ||
  { cat build-asan.configure.log; exit 1; }
cmake --build build-asan -j"$jobs"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j"$jobs" -L unit)
echo "== libFuzzer targets, ${ADDC_FUZZ_SECONDS:-30} s each =="
tests/fuzz/run.sh "${ADDC_FUZZ_SECONDS:-30}" build-fuzz
