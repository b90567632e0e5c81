"""tests/ref/make_r1_fixture.py: the exact-R1 fixture of a StyleGAN-T discriminator head (tests/unit/test_r1_head.c).

Writes tests/ref/fixtures/r1_head.bin. The head is StyleGAN-T's DiscHead (networks/discriminator.py) at small
sizes, with nn.Linear standing in for the FullyConnectedLayer of the conditioning map:
  main = [SpectralConv1d(C, C, k=1) -> BatchNormLocal(C, virtual_bs=8) -> LeakyReLU(0.2)]
         then ResidualBlock([SpectralConv1d(C, C, k=9, circular) -> BatchNormLocal -> LeakyReLU]): (f(h) + h)/sqrt(2)
  out = SpectralConv1d(C, cmap_dim, k=1)(h); cmap = Linear(c_dim, cmap_dim)(c)
  logits = (out * cmap[:, :, None]).sum(channel) / sqrt(cmap_dim): (B, N)
The module is in training mode, so each spectral norm runs one power iteration in this single forward. Then
  g = d logits.sum() / d x (torch.autograd.grad, create_graph=True), R1 = sum over all elements of g^2
(summed over the batch, not averaged), and R1.backward() gives dR1 / d every parameter and dR1 / dx (zero where
there is no path: cls.bias; the conv biases before BatchNormLocal get zero up to rounding).

Stored, in torch layouts (the C test converts): x (B, C, N), c (B, c_dim), every parameter under its state-dict
name (conv weights "<m>.weight_orig" (Cout, Cin, K)), the spectral-norm state before ("<m>.weight_u0",
"<m>.weight_v0") and after the forward ("<m>.weight_u", "<m>.weight_v"; v runs over (Cin, K)), logits (B, N),
g (B, C, N), r1 (), "grad/<param name>" and "grad/x".
Parameters and inputs are drawn in float32; torch computes in float64 from those values; results are stored as
float32. Deterministic (fixed seed). Run: python3 tests/ref/make_r1_fixture.py

File format (reader: fixture_load in tests/test_util.c): magic "ADDCFIX1", int32 count, then per tensor int32
name length, name bytes, int32 ndim, int64 dims[ndim], float32 data; little-endian."""

import math
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
B, C, N, C_DIM, CMAP_DIM, VIRTUAL_BS = 16, 24, 20, 12, 16, 8


def write_fixture(name, tensors):
    """tensors: list of (name, tensor or array); written as float32 to OUT_DIR/<name>.bin."""
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, f"{name}.bin")
    with open(path, "wb") as f:
        f.write(b"ADDCFIX1")
        f.write(struct.pack("<i", len(tensors)))
        for tname, t in tensors:
            if torch.is_tensor(t):
                t = t.detach().cpu().to(torch.float64).numpy()
            a = np.ascontiguousarray(np.asarray(t, dtype="<f4"))
            nb = tname.encode()
            f.write(struct.pack("<i", len(nb)))
            f.write(nb)
            f.write(struct.pack("<i", a.ndim))
            for d in a.shape:
                f.write(struct.pack("<q", d))
            f.write(a.tobytes())
    print(f"  {os.path.relpath(path)}: {len(tensors)} tensors, {os.path.getsize(path)} bytes")
    return path


class BatchNormLocal(nn.Module):
    """StyleGAN-T: batch statistics over groups of virtual_bs samples, biased variance."""

    def __init__(self, num_features, affine=True, virtual_bs=8, eps=1e-5):
        super().__init__()
        self.virtual_bs, self.eps, self.affine = virtual_bs, eps, affine
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x):
        shape = x.size()
        G = int(np.ceil(x.size(0) / self.virtual_bs))
        x = x.view(G, -1, x.size(-2), x.size(-1))
        mean = x.mean([1, 3], keepdim=True)
        var = x.var([1, 3], keepdim=True, unbiased=False)
        x = (x - mean) / torch.sqrt(var + self.eps)
        if self.affine:
            x = x * self.weight[None, :, None] + self.bias[None, :, None]
        return x.view(shape)


class ResidualBlock(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return (self.fn(x) + x) / np.sqrt(2)


def spectral_conv1d(cin, cout, k, circular):
    conv = nn.Conv1d(cin, cout, kernel_size=k, padding=k // 2, padding_mode="circular" if circular else "zeros")
    return torch.nn.utils.spectral_norm(conv, name="weight", n_power_iterations=1, eps=1e-12, dim=0)


def make_block(channels, k):
    return nn.Sequential(spectral_conv1d(channels, channels, k, k > 1), BatchNormLocal(channels, virtual_bs=VIRTUAL_BS),
                         nn.LeakyReLU(0.2))


class DiscHead(nn.Module):
    def __init__(self, channels, c_dim, cmap_dim):
        super().__init__()
        self.cmap_dim = cmap_dim
        self.main = nn.Sequential(make_block(channels, 1), ResidualBlock(make_block(channels, 9)))
        self.cmapper = nn.Linear(c_dim, cmap_dim)
        self.cls = spectral_conv1d(channels, cmap_dim, 1, False)

    def forward(self, x, c):
        h = self.main(x)
        out = self.cls(h)
        cmap = self.cmapper(c).unsqueeze(-1)
        return ((out * cmap).sum(1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))).squeeze(1)


def f32(t):
    return t.to(torch.float32).to(torch.float64)


def make_r1_head():
    torch.manual_seed(2024)
    head = DiscHead(C, C_DIM, CMAP_DIM).double().train()
    sn_modules = ["main.0.0", "main.1.fn.0", "cls"]
    with torch.no_grad():
        for name, p in head.named_parameters():
            if name.endswith("weight_orig") or name == "cmapper.weight":
                p.copy_(f32(p))
            elif name.endswith(".1.weight"):  # BatchNormLocal gamma
                p.copy_(f32(1 + 0.2 * (torch.rand_like(p) * 2 - 1)))
            else:  # conv, linear and BatchNormLocal biases
                p.copy_(f32(0.2 * (torch.rand_like(p) * 2 - 1)))
        for m in sn_modules:
            mod = head.get_submodule(m)
            mod.weight_u.copy_(f32(F.normalize(torch.randn_like(mod.weight_u), dim=0, eps=1e-12)))
            mod.weight_v.copy_(f32(F.normalize(torch.randn_like(mod.weight_v), dim=0, eps=1e-12)))
    x = f32(torch.randn(B, C, N, dtype=torch.float64)).requires_grad_(True)
    c = f32(torch.randn(B, C_DIM, dtype=torch.float64))

    out = [("x", x), ("c", c)]
    for name, p in head.named_parameters():
        out.append((name, p))
    for m in sn_modules:
        mod = head.get_submodule(m)
        out.append((f"{m}.weight_u0", mod.weight_u.clone()))
        out.append((f"{m}.weight_v0", mod.weight_v.clone()))

    logits = head(x, c)
    (g,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    r1 = g.square().sum()
    r1.backward()

    for m in sn_modules:
        mod = head.get_submodule(m)
        out.append((f"{m}.weight_u", mod.weight_u))
        out.append((f"{m}.weight_v", mod.weight_v))
    out += [("logits", logits), ("g", g), ("r1", r1)]
    for name, p in head.named_parameters():
        out.append((f"grad/{name}", p.grad if p.grad is not None else torch.zeros_like(p)))  # cls.bias: no path
    out.append(("grad/x", x.grad))
    print(f"  R1 = {r1.item():.6g}, logits std {logits.std().item():.4g}")
    write_fixture("r1_head", out)


if __name__ == "__main__":
    make_r1_head()
