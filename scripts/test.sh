#!/usr/bin/env bash
# Every test, from a fresh clone: install dependencies, build, run ctest (unit, reference,
# CUDA tests skip without a GPU), then the CUDA tests again on the CPU in host emulation
# (tests/cuemu, build-cuemu), then build with ASan + UBSan and run the unit tests again, then run
# each libFuzzer target (tar+decode, JSON) for a bounded time (ADDC_FUZZ_SECONDS).
# Ends with one line "tests: N passed, M failed, K skipped" over all the stages.
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

echo "== CUDA tests in host emulation (tests/cuemu: the CUDA code on the CPU, no GPU) =="
cmake -S . -B build-cuemu -DCMAKE_BUILD_TYPE=Release -DADDC_CUDA_EMU=ON >build-cuemu.configure.log 2>&1 ||
  { cat build-cuemu.configure.log; exit 1; }
cmake --build build-cuemu -j"$jobs" --target cuda_tests
(cd build-cuemu && ctest --output-on-failure -j"$jobs" -L cuda) 2>&1 | tee "$log"
read -r f3 t3 s3 < <(count "$log")

echo "== unit tests under AddressSanitizer + UndefinedBehaviorSanitizer =="
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DADDC_SANITIZE=ON -DADDC_CUDA=OFF >build-asan.configure.log 2>&1 ||
  { cat build-asan.configure.log; exit 1; }
cmake --build build-asan -j"$jobs"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j"$jobs" -L unit) 2>&1 | tee "$log"
read -r f2 t2 s2 < <(count "$log")

echo "== libFuzzer targets, ${ADDC_FUZZ_SECONDS:-30} s each =="
tests/fuzz/run.sh "${ADDC_FUZZ_SECONDS:-30}" build-fuzz
echo "tests: $((t1 - f1 - s1 + t2 - f2 - s2 + t3 - f3 - s3 + 2)) passed, $((f1 + f2 + f3)) failed," \
  "$((s1 + s2 + s3)) skipped ($s1 in the Release build: CUDA tests without a GPU; $((t3 - f3 - s3)) CUDA tests" \
  "passed on the CPU emulator, $s3 skipped there)"
