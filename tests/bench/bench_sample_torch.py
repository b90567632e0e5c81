"""tests/bench/bench_sample_torch.py: the diffusers side of bench_sample.c (the sampling row of run_cuda.sh).

One 1-step sampling latency: UNet2DConditionModel forward on a noisy latent batch (t = 999), then
AutoencoderKL.decode of its output / scaling_factor (+ shift_factor when the config has one) to images, under
torch.no_grad(). Both models come from the same model YAMLs as addc's (from_config), with diffusers' own random
init (torch.manual_seed(1) and (2); timing only) and float32 weights created on --device; --dtype bf16 (cuda
only) runs both under torch.autocast(device_type="cuda", dtype=torch.bfloat16) over those fp32 weights, as addc
computes in bf16 over fp32 masters (the model is NOT converted to bf16). Inputs uniform(-1, 1) in bench_sample's
shapes (latent (B, in_channels, S, S), text states (B, T, cross_attention_dim), pooled text; time_ids 512 512 0 0
512 512). Attention: diffusers' default (SDPA). The scheduler's few elementwise ops between the two models are
left out, as in bench_sample. Timed with three torch.cuda.Event (start, after the UNet, end) and
torch.cuda.synchronize() on cuda, the wall clock on the cpu (torch.set_num_threads(ADDC_THREADS)); median of
`reps` after `warmup`. MFU = (UNet + decode FLOPs) / median total / --peak-tflops; the FLOPs are --gflops U,V
(run_cuda.sh passes addc's counts) or counted here by FlopCounterMode over one untimed run. Peak memory:
torch.cuda.max_memory_allocated() (nan on the cpu).

Prints "# ..." lines and "result <unet> <vae> <image size> <unet GFLOPs> <vae GFLOPs> <unet ms> <vae ms> <total ms>
<total min ms> <MFU %> <peak GiB>", as bench_sample.
Usage: python3 bench_sample_torch.py --model UNET.yaml --vae VAE.yaml [--batch 1] [--size 64] [--tokens 77]
       [--warmup 2] [--reps 5] [--device cpu|cuda] [--dtype f32|bf16] [--gflops U,V] [--peak-tflops 989.4]"""

import argparse
import contextlib
import math
import os
import statistics
import time

import torch
import yaml
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.utils import logging as diffusers_logging


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--vae", required=True)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=77)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--dtype", choices=("f32", "bf16"), default="f32")
    ap.add_argument("--gflops")
    ap.add_argument("--peak-tflops", type=float, default=989.4)
    a = ap.parse_args()
    if a.dtype == "bf16" and a.device != "cuda":
        ap.error("--dtype bf16 needs --device cuda (autocast to bf16 on cuda)")
    diffusers_logging.set_verbosity_error()
    torch.set_num_threads(int(os.environ.get("ADDC_THREADS", os.cpu_count())))
    dev = torch.device(a.device)

    with open(a.model) as f:
        ucfg = yaml.safe_load(f)
    with open(a.vae) as f:
        vcfg = yaml.safe_load(f)
    t_init = time.perf_counter()
    with dev:  # parameters created (and randomly initialised) on the device directly
        torch.manual_seed(1)
        unet = UNet2DConditionModel.from_config(ucfg).to(torch.float32).eval()
        torch.manual_seed(2)
        vae = AutoencoderKL.from_config(vcfg).to(torch.float32).eval()
    B, S, T = a.batch, a.size, a.tokens
    g = torch.Generator().manual_seed(7)

    def u(*shape):
        return (torch.rand(*shape, generator=g) * 2 - 1).to(dev)

    x = u(B, ucfg["in_channels"], S, S)
    e = u(B, T, ucfg["cross_attention_dim"])
    t = torch.full((B,), 999.0, device=dev)
    kw = {"encoder_hidden_states": e}
    if ucfg.get("addition_embed_type"):
        dtxt = ucfg["projection_class_embeddings_input_dim"] - 6 * ucfg["addition_time_embed_dim"]
        kw["added_cond_kwargs"] = {"text_embeds": u(B, dtxt),
                                   "time_ids": torch.tensor([[512.0, 512, 0, 0, 512, 512]] * B, device=dev)}
    sf, shift = vae.config.scaling_factor, vae.config.shift_factor or 0.0
    if a.device == "cuda":
        torch.cuda.synchronize()
    t_init = time.perf_counter() - t_init

    def autocast():
        if a.dtype == "bf16":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def run_unet():
        with autocast():
            return unet(x, t, **kw).sample

    def run_vae(y):
        with autocast():
            return vae.decode(y / sf + shift).sample

    note = "given"
    if a.gflops:
        gu, gv = (float(s) for s in a.gflops.split(","))
    else:
        from torch.utils.flop_counter import FlopCounterMode
        with torch.no_grad():
            with FlopCounterMode(display=False) as fc:
                y = run_unet()
            gu = fc.get_total_flops() * 1e-9
            with FlopCounterMode(display=False) as fc:
                run_vae(y)
            gv = fc.get_total_flops() * 1e-9
        note = "counted by FlopCounterMode"

    cuda = a.device == "cuda"
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(3)] if cuda else None
    tu, tv, tt = [], [], []
    img = None
    with torch.no_grad():
        for i in range(a.warmup + a.reps):
            if cuda:
                ev[0].record()
            else:
                w0 = time.perf_counter()
            y = run_unet()
            if cuda:
                ev[1].record()
            else:
                w1 = time.perf_counter()
            img = run_vae(y)
            if cuda:
                ev[2].record()
                torch.cuda.synchronize()
                s = tuple(1e-3 * ev[i].elapsed_time(ev[j]) for i, j in ((0, 1), (1, 2), (0, 2)))
            else:
                w2 = time.perf_counter()
                s = (w1 - w0, w2 - w1, w2 - w0)
            if i >= a.warmup:
                tu.append(s[0])
                tv.append(s[1])
                tt.append(s[2])
    med = statistics.median(tt)
    mfu = 100.0 * (gu + gv) * 1e9 / med / (a.peak_tflops * 1e12)
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**30
        where = torch.cuda.get_device_name()
    else:
        peak = math.nan
        where = f"cpu, {torch.get_num_threads()} threads"
    nu = os.path.splitext(os.path.basename(a.model))[0]
    nv = os.path.splitext(os.path.basename(a.vae))[0]
    n_u = sum(p.numel() for p in unet.parameters())
    n_v = sum(p.numel() for p in vae.parameters())
    ac = " autocast" if a.dtype == "bf16" else ""
    print(f"# torch {torch.__version__} diffusers sample on {where}, {a.dtype}{ac}: "
          f"{nu} ({n_u} parameters) + {nv} decode ({n_v} parameters), own random init ({t_init:.1f} s); batch {B}, "
          f"{S}x{S} latent -> {img.shape[2]}x{img.shape[3]} image, {T} tokens, no_grad, median of {a.reps} after "
          f"{a.warmup}")
    print(f"# torch UNet {gu:.4g} GFLOPs, VAE decode {gv:.4g} GFLOPs ({note}); MFU {mfu:.1f}% of {a.peak_tflops:.1f} "
          f"TFLOP/s; min/max: UNet {1e3 * min(tu):.2f}/{1e3 * max(tu):.2f} ms, VAE {1e3 * min(tv):.2f}/"
          f"{1e3 * max(tv):.2f} ms, total {1e3 * min(tt):.2f}/{1e3 * max(tt):.2f} ms"
          + (f"; max_memory_allocated {peak:.2f} GiB" if cuda else ""))
    print(f"result {nu} {nv} {img.shape[2]} {gu:.3f} {gv:.3f} {1e3 * statistics.median(tu):.2f} "
          f"{1e3 * statistics.median(tv):.2f} "
          f"{1e3 * med:.2f} {1e3 * min(tt):.2f} {mfu:.2f} {peak:.3f}")


if __name__ == "__main__":
    main()
