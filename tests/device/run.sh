#!/usr/bin/env bash
# tests/device/run.sh: everything the lent GPU machine runs, as one command (device time is scarce:
# about 15 minutes a session). Builds addc with CUDA for the card (sm_90a), runs `ctest -L cuda` (every
# op against the float64 reference in f32 and bf16, the tiny UNets against the CPU and diffusers, ADD
# and diffusion training steps against the CPU, NCCL collectives), then the GPU benchmarks against
# PyTorch on the same card (tests/bench/run_cuda.sh), and prints a short table last. Full logs go to
# $OUT (the device tool brings them back). Notes of each run: tests/device/NOTES.md.
#
#   here, once per session:  ../shared/device/pack-debs.sh .debs; tests/device/make-fmnist-mini.sh;
#                            tests/device/fetch-wheels.sh
#   on the device:           source .debs/unpack-debs.sh && tests/device/run.sh [all|test|bench|addxl]
#                            (carry .debs .fmnist-mini .whl)
# all = test + bench; addxl (separately: several minutes) = the full ADD-XL step at 512x512 per batch size
# until one does not fit (tests/bench/run_add_xl.sh).
set -uo pipefail
cd "$(dirname "$0")/../.."
what=${1:-all}
OUT=${OUT:-/tmp/addc-device-out}
mkdir -p "$OUT"
t0=$(date +%s)
stage() { echo "== $1 (at $(($(date +%s) - t0)) s)"; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
nvcc --version | tail -1
# cuDNN and NCCL: the system's, else those of PyTorch's wheels (nvidia-cudnn-cu13, nvidia-nccl-cu13)
nv=$(python3 -c 'import nvidia, sys; sys.stdout.write(list(nvidia.__path__)[0])' 2>/dev/null || true)
for lib in cudnn nccl; do
    if [ -n "$nv" ] && [ -d "$nv/$lib/lib" ]; then
        export "$(echo $lib | tr a-z A-Z)_ROOT=$nv/$lib"
        export LD_LIBRARY_PATH="$nv/$lib/lib:${LD_LIBRARY_PATH:-}"
    fi
done
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then # diffusers for the PyTorch side of the benchmarks
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        > "$OUT/pip.log" 2>&1 && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

stage configure
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a > "$OUT/configure.log" 2>&1 ||
    { tail -30 "$OUT/configure.log"; exit 1; }
grep "addc:" "$OUT/configure.log"
stage build
if ! cmake --build build-gpu -j"$(nproc)" > "$OUT/build.log" 2>&1; then
    grep -E "error|Error" "$OUT/build.log" | head -40
    exit 1
fi

status=0
if [ "$what" = all ] || [ "$what" = test ]; then
    stage "ctest -L cuda"
    export ADDC_FMNIST_DIR=$PWD/.fmnist-mini
    (cd build-gpu && ctest -L cuda --output-on-failure --timeout 300 -j4) > "$OUT/ctest.log" 2>&1 || status=1
    grep -E "^ *[0-9]+/[0-9]+ Test|tests passed" "$OUT/ctest.log" | sed 's/^ *//' | tee "$OUT/ctest-summary.txt"
    # the worst errors each op test printed (f32 and bf16)
    grep -hE "^  cuda (f32|bf16) " "$OUT/ctest.log" | sort -k6 -g -r | head -15 > "$OUT/worst-ops.txt" || true
fi
if [ "$what" = all ] || [ "$what" = bench ]; then
    stage benchmarks
    if [ -x tests/bench/run_cuda.sh ]; then
        tests/bench/run_cuda.sh --bin "$PWD/build-gpu" --variants "ADDC_CONV_ALGO=igemm ADDC_CONV_GRAD=tf32 ADDC_ATTN_TC=0" \
            > "$OUT/bench.log" 2>&1 || status=1
    else
        echo "tests/bench/run_cuda.sh missing" > "$OUT/bench.log"
    fi
fi

if [ "$what" = addxl ]; then
    stage "ADD-XL step"
    ADDC_FMNIST_DIR=$PWD/.fmnist-mini tests/bench/run_add_xl.sh --bin "$PWD/build-gpu" --steps 3 \
        > "$OUT/add_xl.log" 2>&1 || status=1
    cat "$OUT/add_xl.log"
fi

stage "done"
echo "==== card: $(cat "$OUT/gpu.txt")"
[ -f "$OUT/ctest-summary.txt" ] && { echo "==== cuda tests"; tail -3 "$OUT/ctest-summary.txt"; grep -v " Passed" "$OUT/ctest-summary.txt" | grep "Test" | head -30; }
[ -s "$OUT/worst-ops.txt" ] && { echo "==== largest op errors"; cat "$OUT/worst-ops.txt"; }
[ -f "$OUT/bench.log" ] && { echo "==== benchmarks"; grep -vE "^#" "$OUT/bench.log" | tail -25; }
exit $status
