#!/usr/bin/env bash
# Every test, from a fresh clone: install dependencies, build, run ctest (unit, reference,
# CUDA tests skip without a GPU), then build with ASan + UBSan and run the unit tests again,
# then run each libFuzzer target (tar+decode, JSON) for a bounded time (ADDC_FUZZ_SECONDS).
# Ends with one line "tests: N passed, M failed, K skipped" over all three stages.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
count() { # failed, total and skipped counts from a ctest log
  local ft
  ft=$(sed -n 's/.*tests passed, \([0-9]*\) tests failed out of \([0-9]*\).*/\1 \2/p' "$1" | tail -1)
  echo "$ft $(grep -c '(Skipped)' "$1" || true)"
}
scripts/install-deps.sh
scripts/build.sh

echo "== ctest (Release) =="
(cd build && ctest --output-on-failure -j"$jobs") 2>&1 | tee "$log"
read -r f1 t1 s1 < <(count "$log")

echo "== unit tests under AddressSanitizer + UndefinedBehaviorSanitizer =="
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DADDC_SANITIZE=ON -DADDC_CUDA=OFF >build-asan.configure.log 2>&1 ||
  { cat build-asan.configure.log; exit 1; }
cmake --build build-asan -j"$jobs"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j"$jobs" -L unit) 2>&1 | tee "$log"
read -r f2 t2 s2 < <(count "$log")

echo "== libFuzzer targets, ${ADDC_FUZZ_SECONDS:-30} s each =="
tests/fuzz/run.sh "${ADDC_FUZZ_SECONDS:-30}" build-fuzz
echo "tests: $((t1 - f1 - s1 + t2 - f2 - s2 + 2)) passed, $((f1 + f2)) failed, $((s1 + s2)) skipped (CUDA tests without a GPU)"
