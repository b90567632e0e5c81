"""tests/ref/make_convnet_fixture.py: fixtures of the classifiers (tests/unit/test_convnet.c): nn/convnet.c's
pre-activation ResNet, implemented here in torch under the same parameter names, and DINOv2 (transformers'
Dinov2Model) with addc's classification head, a Linear on the final-norm CLS (pooler_output; not transformers'
Dinov2ForImageClassification, which reads [CLS, mean patch token]).

Writes under tests/ref/fixtures/classify/, for NAME in tiny_convnet, tiny_dinov2_cls:
  NAME.yaml                 the model YAML addc builds (model_build detects the kind from it);
  NAME_params.txt           "name shape" per tensor in state-dict order, then "total N numel";
  NAME.safetensors          the weights (float32, torch layout: conv weights OIHW), names as addc saves them;
  NAME_io.safetensors       (float32) image (B, C, H, W) in [-1, 1] in torch's layout (the convnet: 3 channels,
                            11 x 10, odd sizes through the stride-2 downsample; DINOv2: gray 12 x 12, repeated to
                            its 3 channels and area-resized to 8 x 8 by the preprocessing); labels (B) as floats;
                            R (B, F); features (B, F), logits (B, K); loss = cross_entropy(logits, labels) (mean)
                            + sum(features R); grad.image and grad.<param> = d loss / d (image, param) in torch
                            layout.
Weights are random, rounded to values bf16 holds exactly (fixture_common.exact); the references run in float64.
Deterministic. Run: python3 tests/ref/make_convnet_fixture.py (tests/ref/make_fixtures.sh runs every make_*.py)."""

import os

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml
from safetensors.torch import save_file
from transformers import Dinov2Config, Dinov2Model
from transformers.utils import logging as hf_logging

from fixture_common import FIXTURES, exact, f32_dict, randomize, uniform, write_param_list

OUT = os.path.join(FIXTURES, "classify")

TINY_CONVNET = {
    "model_type": "convnet",
    "in_channels": 3,
    "image_size": 12,
    "widths": [8, 16],
    "blocks_per_stage": 2,
    "norm_num_groups": 4,
    "norm_eps": 1.0e-5,
    "num_labels": 5,
}

TINY_DINOV2 = {
    "model_type": "dinov2",
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "mlp_ratio": 4,
    "hidden_act": "gelu",
    "layer_norm_eps": 1.0e-6,
    "image_size": 8,
    "patch_size": 4,
    "num_channels": 3,
    "qkv_bias": True,
    "layerscale_value": 1.0,
    "use_swiglu_ffn": False,
    # addc
    "tap_blocks": [1],
    "tap_patch_embedding": True,
    "input_size": 8,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "num_labels": 3,
}
ADDC_FIELDS = ("model_type", "tap_blocks", "tap_patch_embedding", "input_size", "image_mean", "image_std",
               "num_labels")
# transformers 5 names the attention projections q_proj ... o_proj in memory and writes the classic names
RENAME = [(".attention.q_proj.", ".attention.attention.query."), (".attention.k_proj.", ".attention.attention.key."),
          (".attention.v_proj.", ".attention.attention.value."), (".attention.o_proj.", ".attention.output.dense.")]


def file_name(k):
    for a, b in RENAME:
        k = k.replace(a, b)
    return k


# ---- the convnet, as nn/convnet.h describes it ----
class Block(nn.Module):
    """pre-activation residual block: GroupNorm, SiLU, conv3x3, GroupNorm, SiLU, conv3x3 (+ 1x1 shortcut)"""

    def __init__(self, cin, cout, groups, eps):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, cout, eps)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.conv_shortcut(x) if self.conv_shortcut is not None else x) + h


class Stage(nn.Module):
    def __init__(self, cin, cout, n_blocks, groups, eps, downsample):
        super().__init__()
        self.blocks = nn.ModuleList([Block(cin if j == 0 else cout, cout, groups, eps) for j in range(n_blocks)])
        self.downsample = nn.Conv2d(cout, cout, 3, stride=2, padding=1) if downsample else None

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.downsample(x) if self.downsample is not None else x


class ConvNet(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        w, g, eps = cfg["widths"], cfg["norm_num_groups"], cfg["norm_eps"]
        self.stem = nn.Conv2d(cfg["in_channels"], w[0], 3, padding=1)
        self.stages = nn.ModuleList([Stage(w[i - 1] if i else w[0], w[i], cfg["blocks_per_stage"], g, eps,
                                           i + 1 < len(w)) for i in range(len(w))])
        self.norm_out = nn.GroupNorm(g, w[-1], eps)
        self.classifier = nn.Linear(w[-1], cfg["num_labels"])

    def forward(self, image):
        x = self.stem(image)
        for s in self.stages:
            x = s(x)
        features = F.silu(self.norm_out(x)).mean(dim=(2, 3))
        return features, self.classifier(features)


# ---- DINOv2 with addc's head ----
class Dinov2Cls(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        hf = {k: v for k, v in cfg.items() if k not in ADDC_FIELDS}
        self.dinov2 = Dinov2Model(Dinov2Config(**hf))
        self.classifier = nn.Linear(cfg["hidden_size"], cfg["num_labels"])
        self.cfg = cfg

    def named_params(self):
        """(addc name, tensor): the Dinov2Model's names as its files hold them, then the classifier"""
        out = [(file_name(k), p) for k, p in self.dinov2.named_parameters()]
        return out + [("classifier." + k, p) for k, p in self.classifier.named_parameters()]

    def forward(self, image):
        c = self.cfg
        x = image.expand(-1, c["num_channels"], -1, -1)  # gray repeated to the network's channels
        mean = torch.tensor(c["image_mean"], dtype=x.dtype)[None, :, None, None]
        std = torch.tensor(c["image_std"], dtype=x.dtype)[None, :, None, None]
        s = c["input_size"]
        pixels = (F.interpolate((x + 1) / 2, size=(s, s), mode="area") - mean) / std
        features = self.dinov2(pixels).pooler_output
        return features, self.classifier(features)


def write(name, cfg, model, named, image, gen):
    with open(os.path.join(OUT, f"{name}.yaml"), "w") as f:
        f.write(f"# {name}: written by tests/ref/make_convnet_fixture.py for tests/unit/test_convnet.c\n")
        yaml.safe_dump(cfg, f, sort_keys=False, default_flow_style=None)
    write_param_list(os.path.join(OUT, f"{name}_params.txt"), [(k, tuple(p.shape)) for k, p in named])
    save_file(f32_dict({k: p for k, p in named}), os.path.join(OUT, f"{name}.safetensors"))

    model.to(torch.float64)
    x = image.double().requires_grad_()
    features, logits = model(x)
    B, K = logits.shape
    labels = torch.randint(0, K, (B,), generator=gen)
    R = uniform(gen, *features.shape)
    loss = F.cross_entropy(logits, labels) + (features * R.double()).sum()
    params = [p for _, p in named]
    grads = torch.autograd.grad(loss, [x] + params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, [x] + params)]
    io = {"image": image, "labels": labels.float(), "R": R, "features": features, "logits": logits,
          "loss": loss.reshape(1), "grad.image": grads[0]}
    for (k, _), g in zip(named, grads[1:]):
        io[f"grad.{k}"] = g
    save_file(f32_dict(io), os.path.join(OUT, f"{name}_io.safetensors"))
    print(f"  {name}: loss {loss.item():.6f}, |features| max {features.abs().max():.4g}, "
          f"|logits| max {logits.abs().max():.4g}")


def main():
    hf_logging.set_verbosity_error()
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(41)

    net = ConvNet(TINY_CONVNET)
    randomize(net, gen)
    image = uniform(gen, 2, TINY_CONVNET["in_channels"], 11, 10)
    write("tiny_convnet", TINY_CONVNET, net, list(net.named_parameters()), image, gen)

    vit = Dinov2Cls(TINY_DINOV2)
    randomize(vit, gen)
    with torch.no_grad():
        for p in (vit.dinov2.embeddings.cls_token, vit.dinov2.embeddings.position_embeddings):
            p.copy_(exact(uniform(gen, *p.shape).double()))
    vit.eval()
    image = uniform(gen, 3, 1, 12, 12)
    write("tiny_dinov2_cls", TINY_DINOV2, vit, vit.named_params(), image, gen)


if __name__ == "__main__":
    main()
