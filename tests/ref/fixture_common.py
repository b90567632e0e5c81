"""tests/ref/fixture_common.py: helpers shared by the network fixture scripts (make_vae_fixture.py,
make_vit_fixture.py, make_clip_fixture.py, make_disc_fixture.py).

Weights are random and rounded so that float32, float16 and bfloat16 files all hold exactly the same
values (bf16's 8-bit mantissa, nothing below f16's normal range); references run in float64 from those
weights and float32 inputs; everything is written with safetensors as the libraries write it."""

import os

import torch
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "ref", "fixtures")


def load_config(name):
    with open(os.path.join(ROOT, "configs", "models", name)) as f:
        return yaml.safe_load(f)


def exact(v):
    """float64 values every float dtype of the fixtures represents exactly"""
    v = v.to(torch.bfloat16).to(torch.float64)
    v[v.abs() < 2.0 ** -14] = 0.0
    return v


def randomize(model, gen, norm_words=("norm", "layernorm", "ln"), scale_words=("lambda1",)):
    """weights uniform(-1, 1) / sqrt(fan_in); norm scales 1 + 0.2 u, norm biases 0.2 u; LayerScale 0.5 + 0.5 u"""
    with torch.no_grad():
        for name, p in model.named_parameters():
            parts = name.split(".")
            owner = parts[-2] if len(parts) > 1 else ""
            r = torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1
            if any(w in owner for w in norm_words) or owner.startswith("layer_norm"):
                v = (1.0 if parts[-1] == "weight" else 0.0) + 0.2 * r
            elif parts[-1] in scale_words:
                v = 0.5 + 0.5 * r
            else:
                fan_in = p[0].numel() if p.dim() > 1 else p.numel()
                v = r / fan_in ** 0.5
            p.copy_(exact(v))


def uniform(gen, *shape, lo=-1.0, hi=1.0):
    """float32 values uniform in [lo, hi)"""
    return (torch.rand(*shape, generator=gen) * (hi - lo) + lo).to(torch.float32)


def nhwc(x):
    return x.permute(0, 2, 3, 1).contiguous()


def f32_dict(d):
    return {k: v.detach().to(torch.float32).contiguous() for k, v in d.items()}


def write_param_list(path, names_shapes, extra=None):
    """one line per tensor: name, comma-separated shape, optional extra column; then 'total N numel'"""
    total = 0
    with open(path, "w") as f:
        for k, shape in names_shapes:
            n = 1
            for d in shape:
                n *= d
            total += n
            col = f" {extra[k]}" if extra else ""
            f.write(f"{k} {','.join(str(d) for d in shape)}{col}\n")
        f.write(f"total {len(names_shapes)} {total}\n")
    print(f"  {os.path.relpath(path, ROOT)}: {len(names_shapes)} tensors, {total:,} parameters")
