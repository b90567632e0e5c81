#!/usr/bin/env python3
"""Loads a student exported by `addc export` into diffusers' UNet2DConditionModel (strict: every
key present, no key left over, every shape equal) and runs one forward, as a user would.

    python3 tests/ref/check_export_diffusers.py configs/models/toy_unet.yaml EXPORTED.safetensors

Needs torch, diffusers, safetensors and pyyaml (reference tooling only; addc itself uses none).
Prints the tensor count, the parameter count and the output's shape and mean |x|; exits 1 if the
load is not exact or the output is not finite."""
import sys

import torch
import yaml
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    with open(sys.argv[1]) as f:
        cfg = yaml.safe_load(f)
    model = UNet2DConditionModel.from_config(cfg)
    sd = load_file(sys.argv[2])
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        print(f"NOT EXACT: {len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
              f"(e.g. {unexpected[:3]})")
        return 1
    model.eval()
    s = cfg.get("sample_size", 16)
    s = s if isinstance(s, int) else s[0]
    x = torch.randn(2, cfg["in_channels"], s, s, generator=torch.Generator().manual_seed(0))
    ctx = torch.zeros(2, 1, cfg["cross_attention_dim"])
    kw = {}
    if cfg.get("addition_embed_type") == "text_time":
        pooled = cfg["projection_class_embeddings_input_dim"] - 6 * cfg["addition_time_embed_dim"]
        kw["added_cond_kwargs"] = {"text_embeds": torch.zeros(2, pooled), "time_ids": torch.full((2, 6), float(s))}
    with torch.no_grad():
        y = model(x, torch.tensor([999, 499]), encoder_hidden_states=ctx, **kw).sample
    ok = bool(torch.isfinite(y).all())
    n = sum(p.numel() for p in model.parameters())
    print(f"diffusers loaded {len(sd)} tensors exactly ({n} parameters); forward {tuple(y.shape)}, "
          f"mean |y| {y.abs().mean().item():.4f}, finite: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
