"""tests/ref/make_vit_fixture.py: fixtures of nn/vit.c (tests/unit/test_vit.c) from transformers' Dinov2Model.

Writes under tests/ref/fixtures/vit/:
  dinov2_vits14_params.txt, dinov2_vitl14_params.txt: "name shape" per tensor of Dinov2Model(config) built on the
      meta device, in state-dict order, under the names transformers' save_pretrained writes (checked here
      against the keys of a saved model), then "total N numel";
  tiny_dinov2/model.safetensors: the tiny model (configs/models/tiny_dinov2.yaml) as save_pretrained writes it
      (bfloat16);
  tiny_dinov2_io.safetensors (float32, NHWC): image (B, 48, 48, 3) in [-1, 1]; pixels = ImageNet-normalised
      area resize of (image + 1) / 2 to input_size; tap.<k> = the hidden states the config taps (hidden_states[0]
      for the patch embedding, hidden_states[b + 1] for block b), cls = pooler_output, R.<k>, R_cls and
      grad.image = d (sum_k sum(tap_k R_k) + sum(cls R_cls)) / d image, through the preprocessing;
      pixels_full (1, 56, 56, 3) and cls_full: the same model at its own grid (no interpolation).
Deterministic. Run: python3 tests/ref/make_vit_fixture.py"""

import os
import tempfile

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import Dinov2Config, Dinov2Model
from transformers.utils import logging as hf_logging

from fixture_common import FIXTURES, exact, f32_dict, load_config, nhwc, randomize, uniform, write_param_list

OUT = os.path.join(FIXTURES, "vit")
ADDC_FIELDS = ("tap_blocks", "tap_patch_embedding", "input_size", "image_mean", "image_std")
# transformers 5 names the attention projections q_proj ... o_proj in memory and writes the classic names
RENAME = [(".attention.q_proj.", ".attention.attention.query."), (".attention.k_proj.", ".attention.attention.key."),
          (".attention.v_proj.", ".attention.attention.value."), (".attention.o_proj.", ".attention.output.dense.")]


def file_name(k):
    for a, b in RENAME:
        k = k.replace(a, b)
    return k


def hf_config(name):
    cfg = load_config(name)
    addc = {k: cfg.pop(k) for k in ADDC_FIELDS}
    cfg.pop("model_type", None)
    return Dinov2Config(**cfg), addc


def saved_names(model):
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        with safe_open(os.path.join(d, "model.safetensors"), "pt") as f:
            return set(f.keys())


def param_list(cfg_name, out_name):
    cfg, _ = hf_config(cfg_name)
    with torch.device("meta"):
        m = Dinov2Model(cfg)
    sd = m.state_dict()
    small = Dinov2Model(Dinov2Config(hidden_size=cfg.hidden_size, num_attention_heads=cfg.num_attention_heads,
                                     num_hidden_layers=1, patch_size=cfg.patch_size, image_size=cfg.patch_size))
    want = {file_name(k) for k in small.state_dict()}
    assert want == saved_names(small), sorted(want ^ saved_names(small))[:6]
    write_param_list(os.path.join(OUT, out_name), [(file_name(k), tuple(v.shape)) for k, v in sd.items()])


def tiny(seed=21, batch=2, size=48):
    cfg, addc = hf_config("tiny_dinov2.yaml")
    gen = torch.Generator().manual_seed(seed)
    model = Dinov2Model(cfg)
    randomize(model, gen)
    with torch.no_grad():
        for p in (model.embeddings.cls_token, model.embeddings.position_embeddings):
            p.copy_(exact(uniform(gen, *p.shape).double()))
    model.eval()
    folder = os.path.join(OUT, "tiny_dinov2")
    model.to(torch.bfloat16).save_pretrained(folder)
    for f in os.listdir(folder):
        if f not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(folder, f))
    model.to(torch.float64)

    mean = torch.tensor(addc["image_mean"], dtype=torch.float64)[None, :, None, None]
    std = torch.tensor(addc["image_std"], dtype=torch.float64)[None, :, None, None]
    image = uniform(gen, batch, cfg.num_channels, size, size)
    x = image.double().requires_grad_()
    s = addc["input_size"]
    pixels = (F.interpolate((x + 1) / 2, size=(s, s), mode="area") - mean) / std
    out = model(pixels, output_hidden_states=True)
    hs = out.hidden_states
    taps = ([hs[0]] if addc["tap_patch_embedding"] else []) + [hs[b + 1] for b in addc["tap_blocks"]]
    cls = out.pooler_output
    io = {"image": nhwc(image), "pixels": nhwc(pixels), "cls": cls}
    loss = 0
    for k, t in enumerate(taps):
        R = uniform(gen, *t.shape)
        io[f"tap.{k}"], io[f"R.{k}"] = t, R
        loss = loss + (t * R.double()).sum()
    R_cls = uniform(gen, *cls.shape)
    io["R_cls"] = R_cls
    (loss + (cls * R_cls.double()).sum()).backward()
    io["grad.image"] = nhwc(x.grad)

    full = uniform(gen, 1, cfg.num_channels, cfg.image_size, cfg.image_size)
    io["pixels_full"] = nhwc(full)
    io["cls_full"] = model(full.double()).pooler_output
    save_file(f32_dict(io), os.path.join(OUT, "tiny_dinov2_io.safetensors"))
    n = sum(v.numel() for v in model.state_dict().values())
    print(f"  tiny_dinov2: {len(model.state_dict())} tensors, {n:,} parameters; {len(taps)} taps, "
          f"|cls| max {cls.abs().max():.4g}")


def main():
    hf_logging.set_verbosity_error()
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    param_list("dinov2_vits14.yaml", "dinov2_vits14_params.txt")
    param_list("dinov2_vitl14.yaml", "dinov2_vitl14_params.txt")
    tiny()


if __name__ == "__main__":
    main()
