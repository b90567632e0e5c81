"""tests/ref/make_forward_fixture.py: inputs and reference outputs for `addc forward` (tests/unit/test_forward.c).

The reference models are the tiny ones the other fixture scripts committed, loaded from the files diffusers,
transformers and torch wrote (make_unet_fixture.py, make_vae_fixture.py, make_vit_fixture.py,
make_clip_fixture.py, make_disc_fixture.py: run those first when regenerating everything). Inputs are named
as the libraries' forward arguments and lie in their layout (NCHW images, (B, C, N) head features): exactly
what a user hands to `addc forward`. References run in float64 from float32 (or float16) inputs.

Writes under tests/ref/fixtures/forward/, for each case <case>_in.safetensors and <case>_ref.safetensors:
  unet_xl    tiny_xl (F16 diffusers folder): sample (2, 4, 8, 12), timestep (2,) I64, encoder_hidden_states
             (2, 5, 16), text_embeds (2, 8), time_ids (2, 6) -> sample
  unet_sd21  tiny_sd21 (F32 folder): sample (2, 4, 8, 12), timestep () F32 (diffusers broadcasts it),
             encoder_hidden_states (2, 7, 12) F16 -> sample
  vae        tiny_vae (F16 folder): sample (2, 3, 16, 24) image, z (2, 4, 4, 6) -> latent_dist.mean,
             latent_dist.logvar (posterior after quant_conv), sample = decode(z)
  vit        tiny_dinov2 (BF16 transformers folder): pixel_values (2, 3, 42, 56) (3 x 4 patches: the 4 x 4
             position grid interpolated to a non-square one) -> hidden_states[0], [2], [4] (the taps of
             tiny_dinov2.yaml), last_hidden_state, pooler_output
  vit_image  the same model: image (2, 3, 48, 48) in [-1, 1] -> pixel_values (area resize to 42, ImageNet
             normalisation, as addc preprocesses), hidden_states[...], last_hidden_state, pooler_output
  clip       input_ids (3, 77) I64 (padded with end-of-text, with 0, and full length);
             clip_l_ref (tiny_clip_l, CLIPTextModel): last_hidden_state, hidden_states[-2], pooler_output;
             bigg_ref (tiny_bigg, CLIPTextModelWithProjection): the same + text_embeds
  clip_short input_ids (2, 16) I32 -> clip_short_ref with tiny_clip_l
  heads      tiny_disc_heads.safetensors in eval() mode (stored spectral-norm vectors): features.k (16, 24, 10)
             as DiscHead takes them, c_text (16, 5), c_img (16, 7) -> logits.k (16, 10)
Deterministic. Run: python3 tests/ref/make_forward_fixture.py"""

import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.utils import logging as diffusers_logging
from safetensors.torch import load_file, save_file
from transformers import CLIPTextModel, CLIPTextModelWithProjection, Dinov2Model
from transformers.utils import logging as hf_logging

from fixture_common import FIXTURES, load_config, uniform
from make_disc_fixture import FullyConnectedLayer
from make_r1_fixture import DiscHead

OUT = os.path.join(FIXTURES, "forward")


def write(case, inputs, refs, ref_name=None):
    save_file({k: v.contiguous() for k, v in inputs.items()}, os.path.join(OUT, f"{case}_in.safetensors"))
    refs = {k: v.detach().to(torch.float32).contiguous() for k, v in refs.items()}
    save_file(refs, os.path.join(OUT, f"{ref_name or case}_ref.safetensors"))
    print(f"  {case}: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in refs.items()))


def unets(gen):
    m = UNet2DConditionModel.from_pretrained(os.path.join(FIXTURES, "unet", "tiny_xl"), torch_dtype=torch.float64).eval()
    x, e = uniform(gen, 2, 4, 8, 12), uniform(gen, 2, 5, 16)
    t = torch.tensor([999, 37], dtype=torch.int64)
    te = uniform(gen, 2, 8)
    ids = torch.tensor([[512.0, 512, 0, 0, 512, 512], [768.0, 1024, 16, 32, 512, 512]])
    with torch.no_grad():
        out = m(x.double(), t, encoder_hidden_states=e.double(),
                added_cond_kwargs={"text_embeds": te.double(), "time_ids": ids.double()}).sample
    write("unet_xl", {"sample": x, "timestep": t, "encoder_hidden_states": e, "text_embeds": te, "time_ids": ids},
          {"sample": out})

    m = UNet2DConditionModel.from_pretrained(os.path.join(FIXTURES, "unet", "tiny_sd21"), torch_dtype=torch.float64).eval()
    x, e = uniform(gen, 2, 4, 8, 12), uniform(gen, 2, 7, 12).to(torch.float16)
    t = torch.tensor(500.0)
    with torch.no_grad():
        out = m(x.double(), t.double(), encoder_hidden_states=e.double()).sample
    write("unet_sd21", {"sample": x, "timestep": t, "encoder_hidden_states": e}, {"sample": out})


def vae(gen):
    m = AutoencoderKL.from_pretrained(os.path.join(FIXTURES, "vae", "tiny_vae"), torch_dtype=torch.float64).eval()
    x, z = uniform(gen, 2, 3, 16, 24), uniform(gen, 2, 4, 4, 6, lo=-2.0, hi=2.0)
    with torch.no_grad():
        post = m.encode(x.double()).latent_dist
        dec = m.decode(z.double()).sample
    write("vae", {"sample": x, "z": z}, {"latent_dist.mean": post.mean, "latent_dist.logvar": post.logvar, "sample": dec})


def vit(gen):
    cfg = load_config("tiny_dinov2.yaml")
    m = Dinov2Model.from_pretrained(os.path.join(FIXTURES, "vit", "tiny_dinov2"), torch_dtype=torch.float64).eval()

    def run(px):
        with torch.no_grad():
            o = m(px, output_hidden_states=True)
        taps = ([0] if cfg["tap_patch_embedding"] else []) + [b + 1 for b in cfg["tap_blocks"]]
        r = {f"hidden_states[{i}]": o.hidden_states[i] for i in taps}
        r.update(last_hidden_state=o.last_hidden_state, pooler_output=o.pooler_output)
        return r

    px = uniform(gen, 2, 3, 42, 56, lo=-2.0, hi=2.0)
    write("vit", {"pixel_values": px}, run(px.double()))

    image = uniform(gen, 2, 3, 48, 48)
    mean = torch.tensor(cfg["image_mean"], dtype=torch.float64)[None, :, None, None]
    std = torch.tensor(cfg["image_std"], dtype=torch.float64)[None, :, None, None]
    s = cfg["input_size"]
    px = (F.interpolate((image.double() + 1) / 2, size=(s, s), mode="area") - mean) / std
    write("vit_image", {"image": image}, {"pixel_values": px, **run(px)})


def clip(gen):
    def run(model, ids):
        with torch.no_grad():
            o = model(input_ids=ids, output_hidden_states=True)
        last = o.last_hidden_state
        r = {"last_hidden_state": last, "hidden_states[-2]": o.hidden_states[-2],
             "pooler_output": last[torch.arange(last.shape[0]), ids.argmax(-1)]}
        if isinstance(model, CLIPTextModelWithProjection):
            r["text_embeds"] = o.text_embeds
        return r

    clip_l = CLIPTextModel.from_pretrained(os.path.join(FIXTURES, "clip", "tiny_clip_l"), torch_dtype=torch.float64).eval()
    bigg = CLIPTextModelWithProjection.from_pretrained(os.path.join(FIXTURES, "clip", "tiny_bigg"),
                                                       torch_dtype=torch.float64).eval()
    V, T, sot, eot = 500, 77, 498, 499
    words = torch.randint(1, V - 2, (3, T), generator=gen)
    ids = torch.zeros(3, T, dtype=torch.int64)
    ids[0, 0], ids[0, 1:9], ids[0, 9:] = sot, words[0, 1:9], eot
    ids[1, 0], ids[1, 1:40], ids[1, 40] = sot, words[1, 1:40], eot
    ids[2, 0], ids[2, 1:76], ids[2, 76] = sot, words[2, 1:76], eot
    r_l = run(clip_l, ids)
    assert torch.allclose(r_l["pooler_output"], clip_l(input_ids=ids).pooler_output)
    write("clip", {"input_ids": ids}, r_l, "clip_l")
    write("clip", {"input_ids": ids}, run(bigg, ids), "bigg")

    short = torch.randint(1, V - 2, (2, 16), generator=gen)
    short[:, 0], short[0, 10:], short[1, 15] = sot, eot, eot
    write("clip_short", {"input_ids": short.to(torch.int32)}, run(clip_l, short))


def heads(gen):
    cfg = load_config("tiny_disc_heads.yaml")
    B, N, C = 16, 10, cfg["channels"]
    hs = nn.ModuleDict()
    for k in range(cfg["n_heads"]):
        h = DiscHead(C, cfg["c_dim"], cfg["cmap_dim"])
        h.cmapper = FullyConnectedLayer(cfg["c_dim"], cfg["cmap_dim"])
        hs[str(k)] = h
    disc = nn.Module()
    disc.heads = hs
    sd = load_file(os.path.join(FIXTURES, "disc", "tiny_disc_heads.safetensors"))
    disc.load_state_dict({k: v.double() for k, v in sd.items()})
    disc = disc.double().eval()
    feats = [uniform(gen, B, C, N) for _ in hs]
    c_text, c_img = uniform(gen, B, 5), uniform(gen, B, cfg["c_dim"] - 5)
    c = torch.cat([c_text, c_img], 1).double()
    with torch.no_grad():
        refs = {f"logits.{k}": hs[str(k)](f.double(), c) for k, f in enumerate(feats)}
    after = disc.state_dict()
    assert all(torch.equal(after[k].float(), v) for k, v in sd.items()), "eval() must not move u, v"
    write("heads", {**{f"features.{k}": f for k, f in enumerate(feats)}, "c_text": c_text, "c_img": c_img}, refs)


def main():
    diffusers_logging.set_verbosity_error()
    hf_logging.set_verbosity_error()
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(4242)
    unets(gen)
    vae(gen)
    vit(gen)
    clip(gen)
    heads(gen)


if __name__ == "__main__":
    main()
