#!/bin/sh
# shellcheck disable=SC2086
# tests/bench/run_cuda.sh: the GPU benchmarks of issue #7 that need no trainer, addc against diffusers on PyTorch
# in one command on the same device, ending in one table:
#  1. SDXL UNet (configs/models/sdxl_unet.yaml) forward + backward, bf16 (addc: Ctx.compute bf16 over fp32 masters;
#     torch: autocast bf16 over fp32 weights), batch 8, 64x64 latents, 77 tokens, activation checkpointing off and
#     on: bench_unet --phase bwd --no-share, then bench_unet_torch.py (diffusers' own random init, same config and
#     shapes; timing only). Per side: ms per step (median), MFU (3 x addc's counted forward FLOPs / time / peak),
#     peak GiB (addc: device memory categories + device arena peak; torch: max_memory_allocated).
#  2. 1-step sampling latency at 512x512: UNet forward at 64x64 latents, batch 1, then the SDXL VAE
#     (configs/models/sdxl_vae.yaml) decode, bf16, no tape / no_grad: bench_sample, then bench_sample_torch.py.
#  3. --variants "VAR=VALUE ...": the addc UNet step (checkpointing off) once more per word with that environment
#     variable set, one more table row each: e.g. ADDC_CONV_ALGO=igemm (our implicit-GEMM convolution instead of
#     cuDNN, core/cuda/conv.cu) or ADDC_ATTN_TC=0 (attention on CUDA cores, core/cuda/attention.cu), so the choice
#     of the default is measured on the card.
# Each step is timed --warmup 1 + --reps 3 times (median of the 3). Each program runs under `timeout` (--timeout,
# default 120 s); one that fails or runs out is reported as such
# with its last lines of stderr and the rest still runs.
# Builds bench_unet and bench_sample (Release) in $BUILD_DIR (default build-cuda/) unless --bin DIR names a
# directory holding both already built. When `import diffusers` fails and --wheels DIR (default .whl/, see
# tests/device/fetch-wheels.sh) holds wheels, they are installed with --no-deps --no-index into a temporary
# --target directory put on PYTHONPATH (nothing is installed system-wide).
# ADDC_THREADS defaults to all CPUs (the CPU side of the GPU run is the random init of the weights).
# A CPU smoke run of the script's paths with tiny models:
#   ADDC_THREADS=1 tests/bench/run_cuda.sh --device cpu --dtype f32 --model configs/models/tiny_unet.yaml \
#       --vae configs/models/tiny_vae.yaml --batch 2 --size 8 --warmup 1 --reps 2
# Usage: tests/bench/run_cuda.sh [--device cuda|cpu] [--dtype bf16|f32] [--model UNET.yaml] [--vae VAE.yaml]
#          [--batch 8] [--size 64] [--sample-batch 1] [--sample-size S] [--tokens 77] [--checkpointing "0 1"]
#          [--warmup 1] [--reps 3] [--peak-tflops 989.4] [--timeout 120] [--bin DIR] [--wheels DIR] [--no-sample]
#          [--variants "VAR=VALUE ..."]
set -e
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build-cuda}
ADDC_THREADS=${ADDC_THREADS:-$(nproc)}
export ADDC_THREADS

device=cuda dtype=bf16 model=$root/configs/models/sdxl_unet.yaml vae=$root/configs/models/sdxl_vae.yaml
batch=8 size=64 sbatch=1 ssize="" tokens=77 ckpts="0 1" warmup=1 reps=3 peak=989.4 tmo=120 bin="" sample=1
wheels=$root/.whl variants=""
usage() {
    sed -n '/^# Usage:/,/^set -e/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
}
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || [ "$1" = --no-sample ] || usage
    case "$1" in
    --device) device=$2 ;;
    --dtype) dtype=$2 ;;
    --model) model=$2 ;;
    --vae) vae=$2 ;;
    --batch) batch=$2 ;;
    --size) size=$2 ;;
    --sample-batch) sbatch=$2 ;;
    --sample-size) ssize=$2 ;;
    --tokens) tokens=$2 ;;
    --checkpointing) ckpts=$2 ;;
    --warmup) warmup=$2 ;;
    --reps) reps=$2 ;;
    --peak-tflops) peak=$2 ;;
    --timeout) tmo=$2 ;;
    --bin) bin=$2 ;;
    --wheels) wheels=$2 ;;
    --variants) variants=$2 ;;
    --no-sample) sample=0; shift; continue ;;
    *) usage ;;
    esac
    shift 2
done
[ -n "$ssize" ] || ssize=$size

if [ -z "$bin" ]; then
    if [ ! -f "$build/CMakeCache.txt" ]; then
        cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
    fi
    if ! grep -q '^CMAKE_BUILD_TYPE:STRING=Release$' "$build/CMakeCache.txt"; then
        echo "run_cuda.sh: $build is not a Release build; set BUILD_DIR to another directory" >&2
        exit 1
    fi
    cmake --build "$build" --target bench_unet bench_sample -j "$(nproc)" >/dev/null
    bin=$build
fi

t0=$(date +%s)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! python3 -c "import diffusers" 2>/dev/null; then
    if ls "$wheels"/*.whl >/dev/null 2>&1; then
        echo "# diffusers missing: installing $(cd "$wheels" && echo *.whl) into $tmp/py (--no-deps --no-index)"
        python3 -m pip install --quiet --no-deps --no-index --target "$tmp/py" "$wheels"/*.whl
        PYTHONPATH=$tmp/py${PYTHONPATH:+:$PYTHONPATH}
        export PYTHONPATH
    else
        echo "run_cuda.sh: python3 cannot import diffusers and $wheels holds no wheels" \
             "(tests/device/fetch-wheels.sh)" >&2
        exit 1
    fi
fi

# runs "$@" with stdout to $tmp/$tag.out, stderr to $tmp/$tag.err; on failure says so with stderr's tail
run() {
    tag=$1
    shift
    rc=0
    timeout "$tmo" "$@" >"$tmp/$tag.out" 2>"$tmp/$tag.err" || rc=$?
    if [ $rc -ne 0 ]; then
        if [ $rc -eq 124 ]; then why="timed out after $tmo s"; else why="exit status $rc"; fi
        echo "# $tag FAILED ($why); last lines of its stderr:"
        tail -n 5 "$tmp/$tag.err" | sed 's/^/#   /'
    fi
    grep -h '^#' "$tmp/$tag.out" | sed 's/^#/ /' || true
    return 0
}

if [ "$device" = cuda ] && command -v nvidia-smi >/dev/null 2>&1; then
    echo "# $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -n 1);" \
         "$(uname -n), $ADDC_THREADS CPU threads"
else
    echo "# $(uname -n), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $ADDC_THREADS threads"
fi
echo "# $(python3 -c 'import sys, torch, diffusers
print("python", sys.version.split()[0], "torch", torch.__version__, "diffusers", diffusers.__version__)')"

# $common and $scommon are split into words on purpose (shellcheck SC2086, disabled at the top)
common="--device $device --dtype $dtype --batch $batch --size $size --tokens $tokens --warmup $warmup --reps $reps"
common="$common --peak-tflops $peak --phase bwd --no-share"
for ck in $ckpts; do
    run "addc_unet_ck$ck" "$bin/bench_unet" --model "$model" $common --checkpointing "$ck"
    gfl=$(awk '$1 == "result" { print $4 }' "$tmp/addc_unet_ck$ck.out")
    run "torch_unet_ck$ck" python3 "$root/tests/bench/bench_unet_torch.py" --model "$model" $common \
        --checkpointing "$ck" ${gfl:+--gflops "$gfl"}
done
nv=0
for v in $variants; do
    case "$v" in
    *=*) ;;
    *) echo "run_cuda.sh: --variants takes VAR=VALUE words, not '$v'" >&2; exit 2 ;;
    esac
    nv=$((nv + 1))
    echo "$v" > "$tmp/variant$nv.name"
    run "addc_unet_var$nv" env "$v" "$bin/bench_unet" --model "$model" $common --checkpointing 0
done
if [ "$sample" = 1 ]; then
    scommon="--device $device --dtype $dtype --batch $sbatch --size $ssize --tokens $tokens --warmup $warmup"
    scommon="$scommon --reps $reps --peak-tflops $peak"
    run addc_sample "$bin/bench_sample" --model "$model" --vae "$vae" $scommon
    gfl=$(awk '$1 == "result" { print $5 "," $6 }' "$tmp/addc_sample.out")
    run torch_sample python3 "$root/tests/bench/bench_sample_torch.py" --model "$model" --vae "$vae" $scommon \
        ${gfl:+--gflops "$gfl"}
fi

python3 - "$tmp" "$ckpts" "$device" "$dtype" "$batch" "$size" "$sbatch" "$ssize" "$peak" <<'PY'
import os
import sys

tmp, ckpts, device, dtype, batch, size, sbatch, ssize, peak = sys.argv[1:]


def result(tag):
    path = os.path.join(tmp, tag + ".out")
    if not os.path.exists(path):
        return None
    for line in open(path):
        f = line.split()
        if f and f[0] == "result":
            return f[1:]
    return None


def cell(v, fmt, w, missing="-"):
    return f"{missing:>{w}}" if v is None else f"{v:{w}{fmt}}"


def ratio(t, a):
    return None if a is None or t is None or a <= 0 else t / a


hdr = (f"{'':<22} {'addc ms':>9} {'torch ms':>9} {'torch/addc':>10} {'addc MFU%':>9} {'torch MFU%':>10}"
       f" {'addc GiB':>8} {'torch GiB':>9}")
a0 = next((r for r in (result(f"addc_unet_ck{c}") for c in ckpts.split()) if r), None)
what = f"{a0[0]}, {int(a0[1]):,} parameters, {float(a0[2]):,.1f} GFLOP forward" if a0 else "no result"
print(f"\nUNet forward + backward ({what}), {dtype}, batch {batch}, {size}x{size} latents, {device}:")
print(hdr)
for c in ckpts.split():
    a, t = result(f"addc_unet_ck{c}"), result(f"torch_unet_ck{c}")
    am = float(a[4]) if a else None       # fwd+bwd median ms
    tm = float(t[3]) if t else None
    amfu, tmfu = (float(a[7]) if a else None), (float(t[8]) if t else None)
    agib, tgib = (float(a[8]) if a else None), (float(t[9]) if t else None)
    label = f"checkpointing {'on' if c == '1' else 'off'}"
    print(f"{label:<22} {cell(am, '.1f', 9)} {cell(tm, '.1f', 9)} {cell(ratio(tm, am), '.2f', 10)}"
          f" {cell(amfu, '.1f', 9)} {cell(tmfu, '.1f', 10)} {cell(agib, '.2f', 8)} {cell(tgib, '.2f', 9)}")
t0 = result("torch_unet_ck0")
for i in range(1, 100):
    name = os.path.join(tmp, f"variant{i}.name")
    if not os.path.exists(name):
        break
    a = result(f"addc_unet_var{i}")
    am, tm = (float(a[4]) if a else None), (float(t0[3]) if t0 else None)
    amfu, agib = (float(a[7]) if a else None), (float(a[8]) if a else None)
    label = open(name).read().strip()  # checkpointing off, with that variable set
    print(f"{label:<22} {cell(am, '.1f', 9)} {cell(tm, '.1f', 9)} {cell(ratio(tm, am), '.2f', 10)}"
          f" {cell(amfu, '.1f', 9)} {cell(None, '.1f', 10)} {cell(agib, '.2f', 8)} {cell(None, '.2f', 9)}")
a, t = result("addc_sample"), result("torch_sample")
if a or t:
    px = (a or t)[2]
    print(f"\n1-step sampling latency ({px}x{px} images, batch {sbatch}, {ssize}x{ssize} latents, {dtype},"
          f" no tape), {device}:")
    print(hdr)
    for k, label in ((5, "UNet forward"), (6, "VAE decode"), (7, "total")):
        am, tm = (float(a[k]) if a else None), (float(t[k]) if t else None)
        last = k == 7
        amfu = float(a[9]) if a and last else None
        tmfu = float(t[9]) if t and last else None
        agib = float(a[10]) if a and last else None
        tgib = float(t[10]) if t and last else None
        m = "-" if last else ""  # MFU and memory: of the whole sample only
        print(f"{label:<22} {cell(am, '.2f', 9)} {cell(tm, '.2f', 9)} {cell(ratio(tm, am), '.2f', 10)}"
              f" {cell(amfu, '.1f', 9, m)} {cell(tmfu, '.1f', 10, m)} {cell(agib, '.2f', 8, m)}"
              f" {cell(tgib, '.2f', 9, m)}".rstrip())
print(f"(ms: median per step; torch/addc > 1: addc is faster; MFU against {peak} TFLOP/s, addc's counted FLOPs on both"
      f" sides, fwd+bwd = 3 x forward; '-': no result, see the FAILED lines above)")
PY
echo "# run_cuda.sh took $(($(date +%s) - t0)) s"
