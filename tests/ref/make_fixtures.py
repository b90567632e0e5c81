"""tests/ref/make_fixtures.py: PyTorch reference fixtures for every addc op (tests/unit/test_torch_ops.c).

Writes tests/ref/fixtures/ops_<family>.bin, one file per op family. Each op configuration ("case") is
named "<op>:<variant>" where <op> is the addc op name (core/ops/op_table.c) and stores:
  <case>/in<i>  the op's i-th input in addc layout (absent = NULL, e.g. no bias)
  <case>/p      the op's scalar parameters (floats, meaning per op: see PARAMS below / the C builders)
  <case>/dy     a random upstream gradient, shape of the output
  <case>/out    torch's output in addc layout (extra outputs: out_u, out_v for spectral_norm)
  <case>/g<i>   the gradient of input i (present only for inputs that are differentiated)
Layouts are addc's: NHWC images, (B, N, C) tokens, conv2d weights (Cout, KH, KW, Cin), conv1d weights
(Cout, K, Cin); the script converts to torch's layouts and back.

Precision: inputs and dy are drawn in float32; outputs and gradients are computed by torch autograd in
float64 from those float32 values and stored as float32. Exceptions: op "cast" is float32 -> bf16/f16
rounding (torch's own rounding); the timestep embedding is the diffusers formula evaluated in float64.

File format (reader: fixture_load in tests/test_util.c): magic "ADDCFIX1", int32 count, then per tensor
int32 name length, name bytes, int32 ndim, int64 dims[ndim], float32 data; little-endian.
Run tests/ref/make_fixtures.sh to regenerate all fixtures. Deterministic (fixed seeds)."""

import math
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

F64 = torch.float64
OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


class FixtureFile:
    def __init__(self, family):
        self.family = family
        self.tensors = []
        self.cases = []

    def add(self, name, t):
        if torch.is_tensor(t):
            t = t.detach().cpu().to(torch.float32).numpy()
        a = np.array(t, dtype=np.float32, order="C")
        self.tensors.append((name, a))

    def case(self, name, inputs, out, dy, grads, params=(), extra_out=None):
        """inputs: list of addc-layout tensors or None; grads: list aligned with inputs (None = no grad)."""
        self.cases.append(name)
        for i, x in enumerate(inputs):
            if x is not None:
                self.add(f"{name}/in{i}", x)
        self.add(f"{name}/p", torch.tensor(list(params), dtype=torch.float64).reshape(-1))
        self.add(f"{name}/dy", dy)
        self.add(f"{name}/out", out)
        for k, v in (extra_out or {}).items():
            self.add(f"{name}/{k}", v)
        for i, g in enumerate(grads):
            if g is not None:
                self.add(f"{name}/g{i}", g)

    def write(self):
        path = os.path.join(OUT_DIR, f"ops_{self.family}.bin")
        with open(path, "wb") as f:
            f.write(b"ADDCFIX1")
            f.write(struct.pack("<i", len(self.tensors)))
            for name, a in self.tensors:
                nb = name.encode()
                f.write(struct.pack("<i", len(nb)))
                f.write(nb)
                f.write(struct.pack("<i", a.ndim))
                for d in a.shape:
                    f.write(struct.pack("<q", d))
                f.write(a.astype("<f4").tobytes())
        return path, os.path.getsize(path), len(self.cases)


def rnd(*shape, lo=-1.0, hi=1.0):
    """float32 uniform values, returned as float32 (the stored input)."""
    return torch.rand(tuple(shape), dtype=torch.float32) * (hi - lo) + lo


def autograd_case(fx, name, fn, inputs, diff, params=(), dy_scale=1.0):
    """fn(*float64 inputs) -> float64 output (addc layout). inputs: float32 tensors (or None) in addc layout;
    diff[i]: whether input i is differentiated. Stores everything."""
    xs = []
    for x, d in zip(inputs, diff):
        if x is None:
            xs.append(None)
            continue
        x64 = x.to(F64).clone()
        x64.requires_grad_(bool(d))
        xs.append(x64)
    y = fn(*xs)
    dy = rnd(*y.shape) * dy_scale
    wrt = [x for x, d in zip(xs, diff) if x is not None and d]
    gs = torch.autograd.grad(y, wrt, grad_outputs=dy.to(F64), allow_unused=False) if wrt else []
    grads, k = [], 0
    for x, d in zip(xs, diff):
        if x is not None and d:
            grads.append(gs[k])
            k += 1
        else:
            grads.append(None)
    fx.case(name, inputs, y, dy, grads, params)


# ---- layout helpers ----
def nhwc_to_nchw(x):
    return x.permute(0, 3, 1, 2)


def nchw_to_nhwc(x):
    return x.permute(0, 2, 3, 1)


def bnc_to_bcn(x):
    return x.transpose(1, 2)


# ---- elementwise ----
def make_elementwise():
    fx = FixtureFile("elementwise")
    ops = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div}
    for op, f in ops.items():
        lo = 0.5 if op == "div" else -1.0
        autograd_case(fx, f"{op}:same", f, [rnd(2, 3, 4), rnd(2, 3, 4, lo=lo, hi=2.0 if op == "div" else 1.0)],
                      [True, True])
        autograd_case(fx, f"{op}:bcast", f, [rnd(2, 1, 4, 5), rnd(3, 1, 5, lo=lo, hi=2.0 if op == "div" else 1.0)],
                      [True, True])
    autograd_case(fx, "scale:a", lambda x: -1.5 * x + 0.25, [rnd(3, 4, 5)], [True], params=(-1.5, 0.25))
    autograd_case(fx, "rsqrt:a", lambda x: (x + 1e-5) ** -0.5, [rnd(3, 4, 5, lo=0.2, hi=3.0)], [True],
                  params=(1e-5,))
    # cast: float32 -> bf16 / f16 rounding by torch; gradient = dy cast back to float32. dy is chosen exactly
    # representable in the target type so that torch's rounding of the gradient does not matter.
    for dt, code, tdt in (("bf16", 1, torch.bfloat16), ("f16", 2, torch.float16)):
        x = rnd(4, 33) * 3.0
        x[0, :4] = torch.tensor([1.0 + 2.0 ** -9, 1.0 + 3 * 2.0 ** -9, 1e-3, 65504.0 if dt == "f16" else 1e30])
        x64 = x.clone().requires_grad_(True)
        y = x64.to(tdt)
        dy = rnd(*y.shape).to(tdt)
        (g,) = torch.autograd.grad(y, [x64], grad_outputs=dy)
        fx.case(f"cast:{dt}", [x], y.float(), dy.float(), [g], params=(code,))
    return fx


# ---- reduce / view ----
def make_reduce():
    fx = FixtureFile("reduce")
    x = rnd(2, 3, 4, 5)
    autograd_case(fx, "sum_to:mid", lambda a: a.sum(dim=(0, 2), keepdim=True)[0], [x], [True], params=(3, 1, 5))
    autograd_case(fx, "sum_to:last", lambda a: a.sum(dim=(0, 1, 2)), [x], [True], params=(5,))
    autograd_case(fx, "broadcast_to:a", lambda a: a.expand(2, 3, 4, 5), [rnd(3, 1, 5)], [True],
                  params=(2, 3, 4, 5))
    autograd_case(fx, "broadcast_to:lead", lambda a: a.expand(4, 3, 5), [rnd(1, 5)], [True], params=(4, 3, 5))
    autograd_case(fx, "sum:a", lambda a: a.sum(), [rnd(4, 7, 9)], [True])
    autograd_case(fx, "mean:a", lambda a: a.mean(), [rnd(4, 7, 9)], [True])
    autograd_case(fx, "mean_square:a", lambda a: (a * a).mean(), [rnd(4, 7, 9)], [True])
    autograd_case(fx, "mean_to:a", lambda a: a.mean(dim=(0, 2), keepdim=True)[0], [rnd(2, 3, 4, 5)], [True],
                  params=(3, 1, 5))
    autograd_case(fx, "reshape:a", lambda a: a.reshape(6, 10), [rnd(3, 4, 5)], [True], params=(6, 10))
    return fx


# ---- activations ----
def geglu_diffusers(x):
    hidden, gate = x.chunk(2, dim=-1)
    return hidden * F.gelu(gate)


def make_act():
    fx = FixtureFile("act")
    x = rnd(3, 5, 8, lo=-4.0, hi=4.0)
    autograd_case(fx, "silu:a", F.silu, [x], [True])
    autograd_case(fx, "gelu:erf", lambda a: F.gelu(a), [x], [True], params=(0,))
    autograd_case(fx, "gelu:tanh", lambda a: F.gelu(a, approximate="tanh"), [x], [True], params=(1,))
    autograd_case(fx, "geglu:a", geglu_diffusers, [rnd(2, 3, 12, lo=-3.0, hi=3.0)], [True])
    autograd_case(fx, "leaky_relu:0.2", lambda a: F.leaky_relu(a, 0.2), [x], [True], params=(0.2,))
    autograd_case(fx, "relu:a", F.relu, [x], [True])
    autograd_case(fx, "hinge:neg", lambda a: F.relu(1.0 - a), [rnd(4, 9, lo=-3.0, hi=3.0)], [True], params=(-1,))
    autograd_case(fx, "hinge:pos", lambda a: F.relu(1.0 + a), [rnd(4, 9, lo=-3.0, hi=3.0)], [True], params=(1,))
    return fx


# ---- matmul / linear ----
def make_matmul():
    fx = FixtureFile("matmul")

    def mm(ta, tb):
        def f(a, b):
            a2 = a.transpose(-1, -2) if ta else a
            b2 = b.transpose(-1, -2) if tb else b
            return torch.matmul(a2, b2)
        return f

    M, K, N = 5, 7, 6
    autograd_case(fx, "matmul:nn", mm(0, 0), [rnd(2, 3, M, K), rnd(2, 3, K, N)], [True, True], params=(0, 0))
    autograd_case(fx, "matmul:tn", mm(1, 0), [rnd(2, K, M), rnd(2, K, N)], [True, True], params=(1, 0))
    autograd_case(fx, "matmul:nt", mm(0, 1), [rnd(2, M, K), rnd(2, N, K)], [True, True], params=(0, 1))
    autograd_case(fx, "matmul:tt", mm(1, 1), [rnd(3, K, M), rnd(3, N, K)], [True, True], params=(1, 1))
    autograd_case(fx, "matmul:shared_b", mm(0, 0), [rnd(2, 3, M, K), rnd(K, N)], [True, True], params=(0, 0))
    autograd_case(fx, "matmul:shared_a", mm(0, 1), [rnd(M, K), rnd(2, 3, N, K)], [True, True], params=(0, 1))
    autograd_case(fx, "matmul:bcast", mm(0, 0), [rnd(2, 3, M, K), rnd(3, K, N)], [True, True], params=(0, 0))
    autograd_case(fx, "matmul:2d", mm(0, 0), [rnd(M, K), rnd(K, N)], [True, True], params=(0, 0))
    autograd_case(fx, "linear:bias", lambda x, w, b: F.linear(x, w, b), [rnd(2, 5, 7), rnd(6, 7), rnd(6)],
                  [True, True, True])
    autograd_case(fx, "linear:nobias", lambda x, w, b: F.linear(x, w), [rnd(4, 7), rnd(6, 7), None],
                  [True, True, False])
    return fx


# ---- conv ----
def conv2d_addc(stride, pad):
    def f(x, w, b):
        y = F.conv2d(nhwc_to_nchw(x), w.permute(0, 3, 1, 2), b, stride=stride, padding=pad)
        return nchw_to_nhwc(y)
    return f


def conv1d_torch(x, w, b, circular):
    """x (B, N, Cin), w (Cout, K, Cin) -> (B, N, Cout), 'same' padding K//2."""
    K = w.shape[1]
    xt = bnc_to_bcn(x)
    wt = w.permute(0, 2, 1)
    if circular:
        xt = F.pad(xt, (K // 2, K // 2), mode="circular")
        y = F.conv1d(xt, wt, b)
    else:
        y = F.conv1d(xt, wt, b, padding=K // 2)
    return bnc_to_bcn(y)


def conv1d_module_check(circular):
    """The functional form above equals nn.Conv1d(padding_mode='circular' / 'zeros')."""
    torch.manual_seed(5)
    m = torch.nn.Conv1d(3, 4, 5, padding=2, padding_mode="circular" if circular else "zeros").double()
    x = torch.randn(2, 7, 3, dtype=F64)
    ref = bnc_to_bcn(m(bnc_to_bcn(x)))
    got = conv1d_torch(x, m.weight.permute(0, 2, 1), m.bias, circular)
    assert torch.allclose(ref, got, atol=1e-12), "conv1d functional form disagrees with nn.Conv1d"


def make_conv():
    fx = FixtureFile("conv")
    autograd_case(fx, "conv2d:3x3s1p1", conv2d_addc(1, 1), [rnd(2, 6, 5, 3), rnd(4, 3, 3, 3), rnd(4)],
                  [True, True, True], params=(1, 1))
    autograd_case(fx, "conv2d:3x3s2p1", conv2d_addc(2, 1), [rnd(2, 7, 8, 3), rnd(5, 3, 3, 3), rnd(5)],
                  [True, True, True], params=(2, 1))
    autograd_case(fx, "conv2d:1x1nobias", conv2d_addc(1, 0), [rnd(2, 4, 4, 6), rnd(3, 1, 1, 6), None],
                  [True, True, False], params=(1, 0))
    autograd_case(fx, "conv2d:4x4s2p1", conv2d_addc(2, 1), [rnd(1, 8, 6, 2), rnd(3, 4, 4, 2), rnd(3)],
                  [True, True, True], params=(2, 1))
    conv1d_module_check(False)
    conv1d_module_check(True)
    for mode, circ in (("zeros", 0), ("circular", 1)):
        autograd_case(fx, f"conv1d:{mode}k3", lambda x, w, b, c=circ: conv1d_torch(x, w, b, c),
                      [rnd(2, 7, 3), rnd(4, 3, 3), rnd(4)], [True, True, True], params=(circ,))
        autograd_case(fx, f"conv1d:{mode}k9", lambda x, w, b, c=circ: conv1d_torch(x, w, b, c),
                      [rnd(2, 12, 5), rnd(6, 9, 5), None], [True, True, False], params=(circ,))

        # conv1d_t(y, w) = d/dx <conv1d(x, w), y>: the input gradient of conv1d, itself differentiated
        def conv1d_t(y, w, c=circ):
            B, N, _ = y.shape
            x0 = torch.zeros(B, N, w.shape[2], dtype=F64, requires_grad=True)
            out = conv1d_torch(x0, w, None, c)
            (gx,) = torch.autograd.grad(out, [x0], grad_outputs=y, create_graph=True)
            return gx
        autograd_case(fx, f"conv1d_t:{mode}k3", conv1d_t, [rnd(2, 7, 4), rnd(4, 3, 3)], [True, True],
                      params=(circ,))
        autograd_case(fx, f"conv1d_t:{mode}k9", conv1d_t, [rnd(2, 12, 6), rnd(6, 9, 5)], [True, True],
                      params=(circ,))
    return fx


# ---- norms ----
class BatchNormLocal(torch.nn.Module):
    """StyleGAN-T (autonomousvision/stylegan-t networks/discriminator.py), x (B, C, N)."""

    def __init__(self, num_features, affine=True, virtual_bs=8, eps=1e-5):
        super().__init__()
        self.virtual_bs, self.eps, self.affine = virtual_bs, eps, affine
        if self.affine:
            self.weight = torch.nn.Parameter(torch.ones(num_features))
            self.bias = torch.nn.Parameter(torch.zeros(num_features))

    def forward(self, x):
        shape = x.size()
        G = np.ceil(x.size(0) / self.virtual_bs).astype(int)
        x = x.view(G, -1, x.size(-2), x.size(-1))
        mean = x.mean([1, 3], keepdim=True)
        var = x.var([1, 3], keepdim=True, unbiased=False)
        x = (x - mean) / (torch.sqrt(var + self.eps))
        if self.affine:
            x = x * self.weight[None, :, None] + self.bias[None, :, None]
        return x.view(shape)


def batch_norm_local_addc(vbs, eps, affine):
    def f(x, g, b):
        m = BatchNormLocal(x.shape[-1], affine=affine, virtual_bs=vbs, eps=eps).double()
        if affine:
            del m.weight, m.bias
            m.weight, m.bias = g, b
        return bnc_to_bcn(m(bnc_to_bcn(x)))
    return f


def group_norm_addc(groups, eps):
    def f(x, g, b):
        perm = [0, x.dim() - 1] + list(range(1, x.dim() - 1))
        inv = [0] + list(range(2, x.dim())) + [1]
        return F.group_norm(x.permute(*perm), groups, g, b, eps).permute(*inv)
    return f


def make_norm():
    fx = FixtureFile("norm")
    autograd_case(fx, "group_norm:nhwc_affine", group_norm_addc(4, 1e-5),
                  [rnd(2, 4, 5, 8, lo=-2.0, hi=3.0), rnd(8, lo=0.5, hi=1.5), rnd(8)], [True, True, True],
                  params=(4, 1e-5))
    autograd_case(fx, "group_norm:tokens_plain", group_norm_addc(3, 1e-6), [rnd(2, 7, 6), None, None],
                  [True, False, False], params=(3, 1e-6))
    autograd_case(fx, "group_norm:g1", group_norm_addc(1, 1e-5), [rnd(2, 3, 3, 4), rnd(4), rnd(4)],
                  [True, True, True], params=(1, 1e-5))
    autograd_case(fx, "layer_norm:affine", lambda x, g, b: F.layer_norm(x, (x.shape[-1],), g, b, 1e-5),
                  [rnd(2, 5, 8, lo=-1.0, hi=2.0), rnd(8, lo=0.5, hi=1.5), rnd(8)], [True, True, True],
                  params=(1e-5,))
    autograd_case(fx, "layer_norm:plain", lambda x, g, b: F.layer_norm(x, (x.shape[-1],), None, None, 1e-6),
                  [rnd(3, 16), None, None], [True, False, False], params=(1e-6,))
    autograd_case(fx, "batch_norm_local:vbs2", batch_norm_local_addc(2, 1e-5, True),
                  [rnd(4, 5, 6, lo=-1.0, hi=2.0), rnd(6, lo=0.5, hi=1.5), rnd(6)], [True, True, True],
                  params=(2, 1e-5))
    autograd_case(fx, "batch_norm_local:vbs8_plain", batch_norm_local_addc(8, 1e-5, False),
                  [rnd(3, 7, 4), None, None], [True, False, False], params=(8, 1e-5))
    return fx


# ---- softmax / attention ----
def attention_addc(heads, scale, causal):
    def f(q, k, v):
        B, Nq, _ = q.shape
        Nk = k.shape[1]
        dh = q.shape[2] // heads
        dv = v.shape[2] // heads
        qh = q.view(B, Nq, heads, dh).transpose(1, 2)
        kh = k.view(B, Nk, heads, dh).transpose(1, 2)
        vh = v.view(B, Nk, heads, dv).transpose(1, 2)
        o = F.scaled_dot_product_attention(qh, kh, vh, is_causal=causal, scale=scale if scale > 0 else None)
        return o.transpose(1, 2).reshape(B, Nq, heads * dv)
    return f


def make_attention():
    fx = FixtureFile("attention")
    autograd_case(fx, "softmax:a", lambda x: torch.softmax(x, -1), [rnd(3, 4, 7, lo=-3.0, hi=3.0)], [True])
    autograd_case(fx, "softmax:wide", lambda x: torch.softmax(x, -1), [rnd(2, 77, lo=-8.0, hi=8.0)], [True])
    autograd_case(fx, "attention:self", attention_addc(2, 0, False), [rnd(2, 6, 8), rnd(2, 6, 8), rnd(2, 6, 8)],
                  [True, True, True], params=(2, 0, 0))
    autograd_case(fx, "attention:cross_dv", attention_addc(2, 0.3, False),
                  [rnd(2, 5, 8), rnd(2, 7, 8), rnd(2, 7, 6)], [True, True, True], params=(2, 0.3, 0))
    autograd_case(fx, "attention:causal", attention_addc(2, 0, True), [rnd(2, 6, 8), rnd(2, 6, 8), rnd(2, 6, 8)],
                  [True, True, True], params=(2, 0, 1))
    autograd_case(fx, "attention:blocks", attention_addc(2, 0, False),
                  [rnd(1, 70, 16, lo=-2.0, hi=2.0), rnd(1, 33, 16, lo=-2.0, hi=2.0), rnd(1, 33, 16)],
                  [True, True, True], params=(2, 0, 0))
    autograd_case(fx, "attention:causal_blocks", attention_addc(1, 0, True),
                  [rnd(1, 80, 8, lo=-2.0, hi=2.0), rnd(1, 80, 8, lo=-2.0, hi=2.0), rnd(1, 80, 8)],
                  [True, True, True], params=(1, 0, 1))
    return fx


# ---- shape ----
def make_shape():
    fx = FixtureFile("shape")
    autograd_case(fx, "concat:axis1", lambda a, b: torch.cat([a, b], 1), [rnd(2, 3, 4), rnd(2, 5, 4)],
                  [True, True], params=(1,))
    autograd_case(fx, "concat:last", lambda a, b: torch.cat([a, b], -1), [rnd(2, 3, 4), rnd(2, 3, 2)],
                  [True, True], params=(-1,))
    autograd_case(fx, "slice:mid", lambda a: a[:, 2:6], [rnd(2, 7, 3)], [True], params=(1, 2, 4))
    autograd_case(fx, "slice:last", lambda a: a[..., 1:3], [rnd(2, 3, 5)], [True], params=(-1, 1, 2))
    autograd_case(fx, "permute:0312", lambda a: a.permute(0, 3, 1, 2), [rnd(2, 3, 4, 5)], [True],
                  params=(0, 3, 1, 2))
    autograd_case(fx, "permute:021", lambda a: a.permute(0, 2, 1), [rnd(3, 4, 6)], [True], params=(0, 2, 1))
    autograd_case(fx, "upsample_nearest2x:a",
                  lambda a: nchw_to_nhwc(F.interpolate(nhwc_to_nchw(a), scale_factor=2, mode="nearest")),
                  [rnd(2, 3, 4, 5)], [True])

    def resize(mode, oh, ow):
        kw = {"align_corners": False} if mode == "bicubic" else {}
        return lambda a: nchw_to_nhwc(F.interpolate(nhwc_to_nchw(a), size=(oh, ow), mode=mode, **kw))

    autograd_case(fx, "resize_area:down_frac", resize("area", 3, 4), [rnd(2, 7, 9, 3)], [True], params=(3, 4))
    autograd_case(fx, "resize_area:down_int", resize("area", 4, 2), [rnd(1, 8, 6, 2)], [True], params=(4, 2))
    autograd_case(fx, "resize_area:up", resize("area", 5, 7), [rnd(2, 3, 3, 2)], [True], params=(5, 7))
    autograd_case(fx, "resize_bicubic:up", resize("bicubic", 9, 11), [rnd(2, 5, 6, 3)], [True], params=(9, 11))
    autograd_case(fx, "resize_bicubic:down", resize("bicubic", 5, 4), [rnd(1, 12, 10, 3)], [True], params=(5, 4))
    autograd_case(fx, "resize_bicubic:mixed", resize("bicubic", 3, 8), [rnd(1, 4, 3, 2)], [True], params=(3, 8))
    return fx


# ---- embeddings ----
def get_timestep_embedding(timesteps, embedding_dim, flip_sin_to_cos=False, downscale_freq_shift=1, scale=1,
                           max_period=10000):
    """diffusers.models.embeddings.get_timestep_embedding (copied; evaluated here in float64)."""
    assert len(timesteps.shape) == 1, "Timesteps should be a 1d-array"
    half_dim = embedding_dim // 2
    exponent = -math.log(max_period) * torch.arange(start=0, end=half_dim, dtype=F64, device=timesteps.device)
    exponent = exponent / (half_dim - downscale_freq_shift)
    emb = torch.exp(exponent)
    emb = timesteps[:, None].to(F64) * emb[None, :]
    emb = scale * emb
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half_dim:], emb[:, :half_dim]], dim=-1)
    if embedding_dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1, 0, 0))
    return emb


def make_embed():
    fx = FixtureFile("embed")
    t = torch.tensor([0.0, 1.0, 17.25, 250.5, 999.0], dtype=torch.float32)
    for dim, flip, shift in ((16, True, 0), (16, False, 1), (9, True, 1), (10, False, 0)):
        y = get_timestep_embedding(t, dim, flip_sin_to_cos=flip, downscale_freq_shift=shift)
        dy = rnd(*y.shape)
        fx.case(f"timestep_embedding:d{dim}_flip{int(flip)}_shift{shift}", [t], y, dy, [None],
                params=(dim, int(flip), shift, 10000))
    ids = torch.tensor([[3, 0, 7, 3], [9, 3, 1, 0]], dtype=torch.float32)
    for code, nm in ((0, "i32"), (1, "i64")):
        autograd_case(fx, f"embedding:{nm}", lambda i, w: F.embedding(i.long(), w), [ids, rnd(10, 5)],
                      [False, True], params=(code,))
    return fx


# ---- spectral norm ----
def spectral_case(fx, name, module, n_iter, eps, update):
    """torch.nn.utils.spectral_norm on `module` (float64). addc: w (rows, cols) with cols in addc order."""
    module = module.double()
    w0 = (torch.rand_like(module.weight, dtype=torch.float32) * 2 - 1)
    with torch.no_grad():
        module.weight.copy_(w0.to(F64))
    sn = torch.nn.utils.spectral_norm(module, n_power_iterations=n_iter, eps=eps)
    rows = w0.shape[0]
    u0 = F.normalize(torch.randn(rows), dim=0, eps=eps).to(torch.float32)
    vt0 = F.normalize(torch.randn(w0[0].numel()), dim=0, eps=eps).to(torch.float32)
    with torch.no_grad():
        sn.weight_u.copy_(u0.to(F64))
        sn.weight_v.copy_(vt0.to(F64))
    sn.train(update)
    conv = w0.dim() == 4
    to_addc_w = (lambda w: w.permute(0, 2, 3, 1)) if conv else (lambda w: w)
    # torch's v runs over (Cin, KH, KW); addc's over (KH, KW, Cin)
    to_addc_v = (lambda v: v.reshape(w0.shape[1:]).permute(1, 2, 0).reshape(-1)) if conv else (lambda v: v)
    x = torch.zeros((1, w0.shape[1], 3, 3) if conv else (1, w0.shape[1]), dtype=F64)
    sn(x)  # the pre-forward hook computes sn.weight (and updates u, v in training)
    y = sn.weight
    dy_t = rnd(*y.shape)
    (g,) = torch.autograd.grad(y, [sn.weight_orig], grad_outputs=dy_t.to(F64))
    fx.case(name, [to_addc_w(w0), u0, to_addc_v(vt0)], to_addc_w(y), to_addc_w(dy_t), [to_addc_w(g), None, None],
            params=(n_iter, eps, int(update)),
            extra_out={"out_u": sn.weight_u, "out_v": to_addc_v(sn.weight_v)})


def make_spectral():
    fx = FixtureFile("spectral")
    spectral_case(fx, "spectral_norm:linear_train", torch.nn.Linear(7, 5, bias=False), 1, 1e-12, True)
    spectral_case(fx, "spectral_norm:linear_eval", torch.nn.Linear(4, 6, bias=False), 1, 1e-12, False)
    spectral_case(fx, "spectral_norm:conv_train3", torch.nn.Conv2d(3, 4, 3, bias=False), 3, 1e-12, True)
    return fx


# ---- cross entropy ----
def make_xent():
    fx = FixtureFile("xent")
    for name, b, k, scale in (("a", 5, 7, 3.0), ("classes10", 16, 10, 8.0), ("one_row", 1, 4, 1.0),
                              ("large", 4, 10, 1e4)):
        labels = torch.randint(0, k, (b,))
        autograd_case(fx, f"cross_entropy:{name}", lambda x, lab: F.cross_entropy(x, lab.long()),
                      [rnd(b, k, lo=-scale, hi=scale), labels.float()], [True, False])
    return fx


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    total = 0
    makers = [make_elementwise, make_reduce, make_act, make_matmul, make_conv, make_norm, make_attention,
              make_shape, make_embed, make_spectral, make_xent]
    for i, mk in enumerate(makers):
        torch.manual_seed(1000 + i)
        fx = mk()
        path, size, ncases = fx.write()
        total += size
        print(f"  {os.path.relpath(path)}: {ncases} cases, {size} bytes")
    print(f"  ops fixtures total {total} bytes")


if __name__ == "__main__":
    main()
