"""tests/bench/bench_ops_torch.py: the PyTorch CPU side of tests/bench/run.sh, mirroring bench_ops.c.

Same shapes, same warm-up and repetition counts, same FLOP counts, the same table. fp32 on the CPU with
torch.set_num_threads(ADDC_THREADS, default all cores). linear = F.linear on (M, Din) with bias;
conv2d = F.conv2d 3x3 stride 1 pad 1 with bias, timed on channels_last and on contiguous NCHW memory,
the faster reported (the note column says which); attention = F.scaled_dot_product_attention, timed on
the diffusers view of (B, N, NH*Dh) tensors (view + transpose to (B, NH, N, Dh), as diffusers' attention
processor does) and on contiguous (B, NH, N, Dh), the faster reported. The forward runs under
torch.no_grad(); with --bwd a second column times forward + backward (counted as 3x the forward for
linear and conv, 3.5x for attention).

Usage: python3 bench_ops_torch.py [--bwd] [--reps N] [--warmup N] [--filter SUBSTRING]"""

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

CASES = [
    ("linear", "8192x320->1280", (8192, 320, 1280)),
    ("linear", "2048x640->5120", (2048, 640, 5120)),
    ("linear", "512x1280->1280", (512, 1280, 1280)),
    ("conv2d", "2x64x64x320->320", (2, 64, 64, 320, 320)),
    ("conv2d", "2x32x32x640->640", (2, 32, 32, 640, 640)),
    ("conv2d", "2x16x16x1280->1280", (2, 16, 16, 1280, 1280)),
    ("attention", "B2.NH5.4096x4096.Dh64", (2, 5, 4096, 4096, 64)),
    ("attention", "B2.NH5.4096x77.Dh64", (2, 5, 4096, 77, 64)),
    ("attention", "B2.NH10.1024x1024.Dh64", (2, 10, 1024, 1024, 64)),
]


def flops(kind, s):
    if kind == "linear":
        M, K, N = s
        return 2.0 * M * K * N
    if kind == "conv2d":
        B, H, W, Ci, Co = s
        return 2.0 * B * H * W * Co * Ci * 9
    B, NH, Nq, Nk, Dh = s
    return 4.0 * B * NH * Nq * Nk * Dh


def u(*shape):
    return torch.rand(shape, dtype=torch.float32) - 0.5


def make_runner(kind, s, variant, bwd):
    """Returns (inputs, fn(inputs) -> output) for one layout variant."""
    if kind == "linear":
        M, K, N = s
        ins = [u(M, K), u(N, K), u(N)]
        fn = lambda x, w, b: F.linear(x, w, b)
    elif kind == "conv2d":
        B, H, W, Ci, Co = s
        mf = torch.channels_last if variant == "channels_last" else torch.contiguous_format
        ins = [u(B, Ci, H, W).contiguous(memory_format=mf), u(Co, Ci, 3, 3).contiguous(memory_format=mf), u(Co)]
        fn = lambda x, w, b: F.conv2d(x, w, b, stride=1, padding=1)
    else:
        B, NH, Nq, Nk, Dh = s
        if variant == "bnhd":
            ins = [u(B, NH, Nq, Dh), u(B, NH, Nk, Dh), u(B, NH, Nk, Dh)]
            fn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v)
        else:
            ins = [u(B, Nq, NH * Dh), u(B, Nk, NH * Dh), u(B, Nk, NH * Dh)]

            def fn(q, k, v):
                def heads(t):
                    return t.view(B, -1, NH, Dh).transpose(1, 2)
                o = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))
                return o.transpose(1, 2).reshape(B, -1, NH * Dh)
    for t in ins:
        t.requires_grad_(bwd)
    return ins, fn


def time_variant(kind, s, variant, bwd, warmup, reps):
    torch.manual_seed(42)
    ins, fn = make_runner(kind, s, variant, bwd)
    dy = None
    times = []
    for it in range(warmup + reps):
        for t in ins:
            t.grad = None
        t0 = time.perf_counter()
        if bwd:
            y = fn(*ins)
            if dy is None:
                dy = torch.rand_like(y) - 0.5
            y.backward(dy)
        else:
            with torch.no_grad():
                y = fn(*ins)
        t1 = time.perf_counter()
        if it >= warmup:
            times.append(t1 - t0)
    return statistics.median(times)


VARIANTS = {"linear": ["-"], "conv2d": ["channels_last", "nchw"], "attention": ["diffusers_view", "bnhd"]}


def best(kind, s, bwd, warmup, reps):
    ts = {v: time_variant(kind, s, v, bwd, warmup, reps) for v in VARIANTS[kind]}
    v = min(ts, key=ts.get)
    return ts[v], v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bwd", action="store_true")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--filter", default=None)
    a = ap.parse_args()
    threads = int(os.environ.get("ADDC_THREADS", "0") or 0) or os.cpu_count()
    torch.set_num_threads(threads)
    reps = max(1, a.reps)
    print(f"# torch {torch.__version__} fp32, {torch.get_num_threads()} threads, median of {reps} "
          f"after {a.warmup} warm-up")
    print(f"{'op':<10} {'shape':<24} {'fwd GFLOP/s':>12} {'f+b GFLOP/s' if a.bwd else '-':>12} note")
    for kind, shape, s in CASES:
        if a.filter and a.filter not in f"{kind} {shape}":
            continue
        fl = flops(kind, s)
        tf, vf = best(kind, s, False, a.warmup, reps)
        gb, note = 0.0, vf
        if a.bwd:
            tb, vb = best(kind, s, True, a.warmup, reps)
            gb = (3.5 if kind == "attention" else 3.0) * fl / tb * 1e-9
            note = f"{vf},{vb}" if vf != vb else vf
        print(f"{kind:<10} {shape:<24} {fl / tf * 1e-9:12.1f} {gb:12.1f} {note}", flush=True)


if __name__ == "__main__":
    main()
