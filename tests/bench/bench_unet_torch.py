"""tests/bench/bench_unet_torch.py: the diffusers side of tests/bench/run_unet.sh and run_cuda.sh (bench_unet.c).

Builds UNet2DConditionModel.from_config(model YAML) with float32 weights on --device cpu or cuda. By default it
loads the weights bench_unet wrote (DIR/weights.safetensors, strict: every key, the same values) and its inputs
(DIR/inputs.safetensors: sample NCHW, timestep, encoder_hidden_states, text_embeds, time_ids, dy). With --no-share
(full SDXL: no 10 GB weight file) the model keeps diffusers' own random init (torch.manual_seed(1)) and the inputs
are drawn here, uniform(-1, 1), in the shapes bench_unet uses (--batch, --size, --tokens; timesteps 999 - 250 b,
time_ids 512 512 0 0 512 512): timing only, no output comparison.
--dtype bf16 (cuda only) keeps the fp32 weights, as addc keeps fp32 masters, and runs the forward under
torch.autocast(device_type="cuda", dtype=torch.bfloat16) (matmuls, convolutions and attention in bf16, the
normalisations in fp32 as autocast decides); the model itself is NOT converted to bf16. Parameter gradients are f32.
--checkpointing 1 calls unet.enable_gradient_checkpointing() (diffusers' per-block torch.utils.checkpoint,
use_reentrant=False). Attention is diffusers' default (AttnProcessor2_0: F.scaled_dot_product_attention), eager
mode, NCHW contiguous, PyTorch's default TF32 / cuDNN settings (printed).
Threads: torch.set_num_threads(N), N = ADDC_THREADS (default all cores). Timed:
  fwd      the forward under torch.no_grad();
  fwd+bwd  the forward and out.backward(dy) into every parameter's .grad (zero_grad(set_to_none=True) runs
           before the timer starts, as bench_unet zeroes its gradient buffer outside the timer).
On cuda each step is timed with two torch.cuda.Event on the current stream, then torch.cuda.synchronize().
The median of `reps` runs after `warmup`. Unless --no-share it then compares the output and two parameter
gradients with DIR/out_addc.safetensors (max relative error, printed: the two sides computed the same thing).
MFU = 3 x forward FLOPs / median fwd+bwd time / --peak-tflops (default 989.4: H100/H200 SXM dense bf16); the
forward FLOPs are --gflops when given (run_cuda.sh passes addc's count, so both sides share one numerator), else
counted here by torch.utils.flop_counter.FlopCounterMode over one untimed forward. Peak memory: on cuda
torch.cuda.max_memory_allocated() over the whole run (weights, gradients, activations, workspaces); nan on the cpu.

Prints "# ..." lines and "result <name> <params> <fwd ms> <fwd+bwd ms> <out err> <grad err> <fwd min ms>
<fwd+bwd min ms> <fwd+bwd MFU %> <peak GiB>" (errors nan with --no-share).
Usage: python3 bench_unet_torch.py --model YAML (--dir DIR | --no-share) [--warmup 2] [--reps 5] [--device cpu|cuda]
       [--dtype f32|bf16] [--checkpointing 0|1] [--phase fwd|bwd|both] [--batch 2] [--size 32] [--tokens 77]
       [--gflops G] [--peak-tflops 989.4]"""

import argparse
import contextlib
import math
import os
import statistics
import time

import torch
import yaml
from diffusers import UNet2DConditionModel
from diffusers.utils import logging as diffusers_logging
from safetensors.torch import load_file


def rel_err(a, b):
    a, b = a.float().cpu(), b.float().cpu()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


class Timer:
    """Wall clock on the cpu; two CUDA events around the step and a synchronize on cuda."""

    def __init__(self, device):
        self.cuda = device == "cuda"
        if self.cuda:
            self.ev = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))

    def start(self):
        if self.cuda:
            self.ev[0].record()
        else:
            self.t0 = time.perf_counter()

    def stop(self):
        """seconds since start"""
        if not self.cuda:
            return time.perf_counter() - self.t0
        self.ev[1].record()
        torch.cuda.synchronize()
        return 1e-3 * self.ev[0].elapsed_time(self.ev[1])


def make_inputs(cfg, batch, size, tokens, device):
    """The inputs bench_unet draws, in its shapes (NCHW here), uniform(-1, 1); not its values."""
    g = torch.Generator().manual_seed(7)

    def u(*shape):
        return (torch.rand(*shape, generator=g) * 2 - 1).to(device)

    io = {"sample": u(batch, cfg["in_channels"], size, size),
          "timestep": torch.tensor([float(999 - (250 * b) % 1000) for b in range(batch)], device=device),
          "encoder_hidden_states": u(batch, tokens, cfg["cross_attention_dim"])}
    if cfg.get("addition_embed_type"):
        dtxt = cfg["projection_class_embeddings_input_dim"] - 6 * cfg["addition_time_embed_dim"]
        io["text_embeds"] = u(batch, dtxt)
        io["time_ids"] = torch.tensor([[512.0, 512, 0, 0, 512, 512]] * batch, device=device)
    io["dy"] = u(batch, cfg.get("out_channels", 4), size, size)
    return io


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--dir")
    ap.add_argument("--no-share", action="store_true")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--dtype", choices=("f32", "bf16"), default="f32")
    ap.add_argument("--checkpointing", type=int, choices=(0, 1), default=0)
    ap.add_argument("--phase", choices=("fwd", "bwd", "both"), default="both")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=77)
    ap.add_argument("--gflops", type=float)
    ap.add_argument("--peak-tflops", type=float, default=989.4)
    a = ap.parse_args()
    if not a.no_share and not a.dir:
        ap.error("--dir DIR or --no-share is required")
    if a.dtype == "bf16" and a.device != "cuda":
        ap.error("--dtype bf16 needs --device cuda (autocast to bf16 on cuda)")
    diffusers_logging.set_verbosity_error()
    threads = int(os.environ.get("ADDC_THREADS", os.cpu_count()))
    torch.set_num_threads(threads)
    dev = torch.device(a.device)

    with open(a.model) as f:
        cfg = yaml.safe_load(f)
    t_init = time.perf_counter()
    torch.manual_seed(1)
    with dev:  # parameters are created (and randomly initialised) on the device directly
        model = UNet2DConditionModel.from_config(cfg).to(torch.float32)
    if a.no_share:
        io = make_inputs(cfg, a.batch, a.size, a.tokens, dev)
    else:
        model.load_state_dict(load_file(os.path.join(a.dir, "weights.safetensors"), device=a.device), strict=True)
        io = load_file(os.path.join(a.dir, "inputs.safetensors"), device=a.device)
    if a.device == "cuda":
        torch.cuda.synchronize()
    t_init = time.perf_counter() - t_init
    model.eval()  # no dropout in these configs; diffusers checkpoints whenever grad is enabled, in eval too
    if a.checkpointing:
        model.enable_gradient_checkpointing()
    kw = {"encoder_hidden_states": io["encoder_hidden_states"]}
    if "text_embeds" in io:
        kw["added_cond_kwargs"] = {"text_embeds": io["text_embeds"], "time_ids": io["time_ids"]}
    x, t, dy = io["sample"], io["timestep"], io["dy"]

    def autocast():
        if a.dtype == "bf16":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    flop_note = "given"
    gflops = a.gflops
    if gflops is None:
        from torch.utils.flop_counter import FlopCounterMode
        with torch.no_grad(), autocast(), FlopCounterMode(display=False) as fc:
            model(x, t, **kw)
        gflops = fc.get_total_flops() * 1e-9
        flop_note = "counted by FlopCounterMode"

    timer = Timer(a.device)
    tf, tb = [], []
    out = None
    with torch.no_grad():
        for i in range(1 if a.phase == "bwd" else a.warmup + a.reps):
            timer.start()
            with autocast():
                out = model(x, t, **kw).sample
            s = timer.stop()
            if i >= a.warmup or a.phase == "bwd":
                tf.append(s)
    for i in range(1 if a.phase == "fwd" else a.warmup + a.reps):
        model.zero_grad(set_to_none=True)
        timer.start()
        with autocast():
            y = model(x, t, **kw).sample
        y.backward(dy.to(y.dtype))
        s = timer.stop()
        del y
        if i >= a.warmup or a.phase == "fwd":
            tb.append(s)

    e_out = e_grad = math.nan
    if not a.no_share:
        ref = load_file(os.path.join(a.dir, "out_addc.safetensors"))
        params = dict(model.named_parameters())
        e_out = rel_err(out, ref["sample"])
        if a.phase != "fwd":
            e_grad = max(rel_err(params[k[5:]].grad, v) for k, v in ref.items() if k.startswith("grad."))
    n = sum(p.numel() for p in model.parameters())
    name = os.path.splitext(os.path.basename(a.model))[0]
    mtf, mtb = statistics.median(tf), statistics.median(tb)
    mfu = math.nan if a.phase == "fwd" else 100.0 * 3.0 * gflops * 1e9 / mtb / (a.peak_tflops * 1e12)
    if a.device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
        where = (f"{torch.cuda.get_device_name()}, tf32 matmul {torch.backends.cuda.matmul.allow_tf32} "
                 f"cudnn {torch.backends.cudnn.allow_tf32}, cudnn.benchmark {torch.backends.cudnn.benchmark}")
        mem = (f"max_memory_allocated {peak:.2f} GiB, max_memory_reserved "
               f"{torch.cuda.max_memory_reserved() / 2**30:.2f} GiB")
    else:
        peak = math.nan
        where = f"cpu, {torch.get_num_threads()} threads"
        mem = "not measured on the cpu"
    one = {"fwd": " (fwd+bwd: one run)", "bwd": " (fwd: one run)"}.get(a.phase, "")
    print(f"# torch {torch.__version__} diffusers, {name} on {where}, {a.dtype}"
          f"{' autocast' if a.dtype == 'bf16' else ''}, checkpointing {'on' if a.checkpointing else 'off'}, "
          f"{'own random init' if a.no_share else 'addc weights'} ({t_init:.1f} s): {n} parameters, batch "
          f"{x.shape[0]}, {x.shape[2]}x{x.shape[3]} latent, median of {a.reps} after {a.warmup}")
    mfu_fwd = 100 * gflops * 1e9 / mtf / (a.peak_tflops * 1e12)
    print(f"# torch fwd {gflops:.4g} GFLOPs ({flop_note}), MFU fwd {mfu_fwd:.1f}% of {a.peak_tflops:.1f} TFLOP/s; "
          f"fwd min/max {1e3 * min(tf):.1f}/{1e3 * max(tf):.1f} ms, fwd+bwd min/max "
          f"{1e3 * min(tb):.1f}/{1e3 * max(tb):.1f} ms{one}; memory: {mem}")
    print(f"result {name} {n} {1e3 * mtf:.2f} {1e3 * mtb:.2f} {e_out:.3g} {e_grad:.3g} "
          f"{1e3 * min(tf):.2f} {1e3 * min(tb):.2f} {mfu:.2f} {peak:.3f}")


if __name__ == "__main__":
    main()
