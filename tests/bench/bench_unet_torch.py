"""tests/bench/bench_unet_torch.py: the diffusers side of tests/bench/run_unet.sh, mirroring bench_unet.c.

Builds UNet2DConditionModel.from_config(model YAML) in float32 on the CPU, loads the weights bench_unet wrote
(DIR/weights.safetensors, strict: every key, the same values) and its inputs (DIR/inputs.safetensors: sample
NCHW, timestep, encoder_hidden_states, text_embeds, time_ids, dy), and times with torch.set_num_threads(N)
(N = ADDC_THREADS, default all cores), no activation checkpointing, diffusers' default attention (SDPA):
  fwd      the forward under torch.no_grad();
  fwd+bwd  the forward and out.backward(dy) into every parameter's .grad (zero_grad(set_to_none=True) runs
           before the timer starts, as bench_unet zeroes its gradient buffer outside the timer).
The median of `reps` runs after `warmup`. Then compares the output and two parameter gradients with
DIR/out_addc.safetensors (max relative error, printed: the two sides computed the same thing).

Prints "# ..." lines and "result <name> <params> <fwd ms> <fwd+bwd ms> <out err> <grad err> <fwd min ms> <fwd+bwd min ms>".
Usage: python3 bench_unet_torch.py --model YAML --dir DIR [--warmup 2] [--reps 5]"""

import argparse
import os
import statistics
import time

import torch
import yaml
from diffusers import UNet2DConditionModel
from diffusers.utils import logging as diffusers_logging
from safetensors.torch import load_file


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    diffusers_logging.set_verbosity_error()
    threads = int(os.environ.get("ADDC_THREADS", os.cpu_count()))
    torch.set_num_threads(threads)

    with open(a.model) as f:
        cfg = yaml.safe_load(f)
    model = UNet2DConditionModel.from_config(cfg).to(torch.float32)
    model.load_state_dict(load_file(os.path.join(a.dir, "weights.safetensors")), strict=True)
    model.eval()
    io = load_file(os.path.join(a.dir, "inputs.safetensors"))
    kw = {"encoder_hidden_states": io["encoder_hidden_states"]}
    if "text_embeds" in io:
        kw["added_cond_kwargs"] = {"text_embeds": io["text_embeds"], "time_ids": io["time_ids"]}
    x, t, dy = io["sample"], io["timestep"], io["dy"]

    tf, tb = [], []
    with torch.no_grad():
        for i in range(a.warmup + a.reps):
            t0 = time.perf_counter()
            out = model(x, t, **kw).sample
            if i >= a.warmup:
                tf.append(time.perf_counter() - t0)
    for i in range(a.warmup + a.reps):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        y = model(x, t, **kw).sample
        y.backward(dy)
        if i >= a.warmup:
            tb.append(time.perf_counter() - t0)

    ref = load_file(os.path.join(a.dir, "out_addc.safetensors"))
    params = dict(model.named_parameters())
    e_out = rel_err(out, ref["sample"])
    e_grad = max(rel_err(params[k[5:]].grad, v) for k, v in ref.items() if k.startswith("grad."))
    n = sum(p.numel() for p in model.parameters())
    name = os.path.splitext(os.path.basename(a.model))[0]
    print(f"# torch {torch.__version__} diffusers, {name}: {n} parameters, {torch.get_num_threads()} threads, "
          f"median of {a.reps} after {a.warmup}; fwd min/max {1e3 * min(tf):.1f}/{1e3 * max(tf):.1f} ms, "
          f"fwd+bwd min/max {1e3 * min(tb):.1f}/{1e3 * max(tb):.1f} ms")
    print(f"result {name} {n} {1e3 * statistics.median(tf):.2f} {1e3 * statistics.median(tb):.2f} {e_out:.3g} {e_grad:.3g} "
          f"{1e3 * min(tf):.2f} {1e3 * min(tb):.2f}")


if __name__ == "__main__":
    main()
