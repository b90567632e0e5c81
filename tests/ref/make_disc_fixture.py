"""tests/ref/make_disc_fixture.py: the multi-head fixture of nn/disc.c (tests/unit/test_disc.c).

The heads are make_r1_fixture.py's StyleGAN-T DiscHead with the conditioning map as StyleGAN-T writes it
(FullyConnectedLayer: weight N(0, 1) scaled by 1/sqrt(c_dim) at run time), configured by
configs/models/tiny_disc_heads.yaml, held as ProjectedDiscriminator holds them (a ModuleDict "heads").
Each head reads tokens (B, 1 + N, C) of one feature tap through StyleGAN-T's readout (CLS added to every
patch token), in training mode: one power iteration per spectral norm in the forward.

Writes under tests/ref/fixtures/disc/:
  tiny_disc_heads.safetensors: the heads' state dict before the forward (parameters and weight_u / weight_v
      buffers, torch names "heads.<k>.*", float32);
  tiny_disc_io.safetensors (float32): tokens.<k> (B, 1 + N, C), c (B, c_dim), logits.<k> (B, N), R.<k>,
      after.<name> for every weight_u / weight_v after the forward, grad.tokens.<k> and grad.<param> of
      L = sum_k sum(logits_k R_k), and for head 0 the exact R1 on its readout features f0:
      g0 = d sum(logits_0) / d f0 (create_graph), r1 = sum(g0^2), r1.grad.<param> = d r1 / d param (head 0),
      r1.grad.tokens.0.
Deterministic. Run: python3 tests/ref/make_disc_fixture.py"""

import os

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file

from fixture_common import FIXTURES, load_config
from make_r1_fixture import DiscHead, f32

OUT = os.path.join(FIXTURES, "disc")


class FullyConnectedLayer(nn.Module):
    """StyleGAN-T networks/shared.py, linear activation, lr_multiplier 1"""

    def __init__(self, in_features, out_features):
        super().__init__()
        self.weight = nn.Parameter(torch.randn([out_features, in_features]))
        self.bias = nn.Parameter(torch.zeros([out_features]))
        self.weight_gain = 1.0 / np.sqrt(in_features)

    def forward(self, x):
        return torch.addmm(self.bias.unsqueeze(0), x, (self.weight * self.weight_gain).t())


def readout(tokens):
    return tokens[:, 1:] + tokens[:, :1]


def main():
    cfg = load_config("tiny_disc_heads.yaml")
    assert cfg["cmapper_equalized_lr"] and cfg["kernel_size"] == 9 and cfg["virtual_bs"] == 8
    torch.manual_seed(77)
    B, N, C, c_dim, cmap = 16, 10, cfg["channels"], cfg["c_dim"], cfg["cmap_dim"]
    heads = nn.ModuleDict()
    for k in range(cfg["n_heads"]):
        h = DiscHead(C, c_dim, cmap)
        h.cmapper = FullyConnectedLayer(c_dim, cmap)
        heads[str(k)] = h
    disc = nn.Module()
    disc.heads = heads
    disc = disc.double().train()
    with torch.no_grad():
        for name, p in disc.named_parameters():
            if name.endswith("weight_orig") or name.endswith("cmapper.weight"):
                p.copy_(f32(p))
            elif name.endswith(".1.weight"):
                p.copy_(f32(1 + 0.2 * (torch.rand_like(p) * 2 - 1)))
            else:
                p.copy_(f32(0.2 * (torch.rand_like(p) * 2 - 1)))
        for name, b in disc.named_buffers():
            b.copy_(f32(torch.nn.functional.normalize(torch.randn_like(b), dim=0, eps=1e-12)))
    os.makedirs(OUT, exist_ok=True)
    before = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in disc.state_dict().items()}
    save_file(before, os.path.join(OUT, "tiny_disc_heads.safetensors"), metadata={"format": "pt"})

    c = f32(torch.randn(B, c_dim, dtype=torch.float64))
    tokens = [f32(torch.randn(B, N + 1, C, dtype=torch.float64)).requires_grad_() for _ in heads]
    feats = [readout(t) for t in tokens]
    logits = [heads[str(k)](f.transpose(1, 2), c).squeeze(1) for k, f in enumerate(feats)]
    R = [f32(torch.rand(B, N, dtype=torch.float64) * 2 - 1) for _ in heads]
    loss = sum((l * r).sum() for l, r in zip(logits, R))
    params = dict(disc.named_parameters())
    grads = torch.autograd.grad(loss, list(params.values()) + tokens, retain_graph=True)
    (g0,) = torch.autograd.grad(logits[0].sum(), feats[0], create_graph=True)
    r1 = g0.square().sum()
    h0 = [n for n in params if n.startswith("heads.0.")]
    r1_grads = torch.autograd.grad(r1, [params[n] for n in h0] + [tokens[0]], allow_unused=True)

    io = {"c": c, "r1": r1, "g0": g0}
    for k in range(len(heads)):
        io[f"tokens.{k}"], io[f"logits.{k}"], io[f"R.{k}"] = tokens[k], logits[k], R[k]
    for name, b in disc.named_buffers():
        io[f"after.{name}"] = b
    for (name, _), g in zip(list(params.items()) + [(f"tokens.{k}", None) for k in range(len(heads))], grads):
        io[f"grad.{name}"] = g
    for name, g in zip(h0 + ["tokens.0"], r1_grads):
        io[f"r1.grad.{name}"] = g if g is not None else torch.zeros_like(params[name])
    io = {k: v.detach().to(torch.float32).contiguous() for k, v in io.items()}
    save_file(io, os.path.join(OUT, "tiny_disc_io.safetensors"))
    n = sum(p.numel() for p in disc.parameters())
    print(f"  tiny_disc_heads: {len(params)} parameters tensors, {n:,} parameters; r1 {r1.item():.6g}")


if __name__ == "__main__":
    main()
