"""tests/ref/make_vae_fixture.py: fixtures of nn/vae.c (tests/unit/test_vae.c) from diffusers' AutoencoderKL.

Writes under tests/ref/fixtures/vae/:
  sdxl_vae_params.txt: the state dict of AutoencoderKL(**configs/models/sdxl_vae.yaml) built on the meta device:
      "name shape single-file-name" per tensor in diffusers' order, then "total N numel"; the single-file
      names are made here independently of nn/vae.c and checked with diffusers' convert_ldm_vae_checkpoint;
  tiny_vae/diffusion_pytorch_model.safetensors: the tiny VAE (configs/models/tiny_vae.yaml) as diffusers'
      save_pretrained writes it (float16);
  tiny_vae_ldm.safetensors (bfloat16): the same weights in the Stability single-file layout (1x1-conv attention
      weights, "first_stage_model." prefix), plus two tensors of other networks that a VAE load ignores;
  tiny_vae_io.safetensors (float32, NHWC): image, mean, logvar (the posterior after quant_conv), eps,
      latents = scaling_factor * (mean + exp(logvar / 2) eps), z, decoded = decode(z), R_dec and
      grad.z = d sum(decoded * R_dec) / dz, R_enc and grad.image = d sum(mean * R_enc) / d image.
Deterministic. Run: python3 tests/ref/make_vae_fixture.py"""

import os

import torch
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from diffusers.utils import logging as diffusers_logging
from safetensors.torch import save_file

from fixture_common import FIXTURES, f32_dict, load_config, nhwc, randomize, uniform, write_param_list

OUT = os.path.join(FIXTURES, "vae")
LDM = "first_stage_model."
ATTN = [("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out.")]
FIXED = [("encoder.conv_norm_out.", "encoder.norm_out."), ("decoder.conv_norm_out.", "decoder.norm_out.")]


def resnet_rest(rest):
    return rest.replace("conv_shortcut.", "nin_shortcut.", 1) if rest.startswith("conv_shortcut.") else rest


def ldm_name(cfg, key):
    nb = len(cfg["block_out_channels"])
    for a, b in FIXED:
        if key.startswith(a):
            return LDM + b + key[len(a):]
    p = key.split(".")
    if p[1] == "mid_block":
        if p[2] == "resnets":
            return LDM + f"{p[0]}.mid.block_{int(p[3]) + 1}." + resnet_rest(".".join(p[4:]))
        rest = ".".join(p[4:])
        for a, b in ATTN:
            if rest.startswith(a):
                return LDM + f"{p[0]}.mid.attn_1.{b}" + rest[len(a):]
        raise KeyError(key)
    if p[1] == "down_blocks":
        if p[3] == "downsamplers":
            return LDM + f"encoder.down.{p[2]}.downsample.conv." + p[-1]
        return LDM + f"encoder.down.{p[2]}.block.{p[4]}." + resnet_rest(".".join(p[5:]))
    if p[1] == "up_blocks":
        i = nb - 1 - int(p[2])
        if p[3] == "upsamplers":
            return LDM + f"decoder.up.{i}.upsample.conv." + p[-1]
        return LDM + f"decoder.up.{i}.block.{p[4]}." + resnet_rest(".".join(p[5:]))
    return LDM + key


def to_ldm(cfg, sd):
    """our single-file state dict (attention weights as 1x1 convs), checked with diffusers' converter"""
    names = {k: ldm_name(cfg, k) for k in sd}
    assert len(set(names.values())) == len(names), "single-file names are not unique"
    ldm = {}
    for k, v in sd.items():
        if ".mid_block.attentions." in k and k.endswith("weight") and v.dim() == 2:
            v = v[:, :, None, None]
        ldm[names[k]] = v
    back = convert_ldm_vae_checkpoint(ldm, cfg)
    assert set(back) == set(sd), (sorted(set(sd) - set(back))[:5], sorted(set(back) - set(sd))[:5])
    for k in sd:
        assert torch.equal(back[k].reshape(sd[k].shape), sd[k]), k
    return names, ldm


def param_list(cfg_name, out_name):
    cfg = load_config(cfg_name)
    with torch.device("meta"):
        m = AutoencoderKL.from_config(cfg)
    sd = m.state_dict()
    fake = {k: torch.full(v.shape, float(i)) for i, (k, v) in enumerate(sd.items())}
    names, _ = to_ldm(cfg, fake)
    write_param_list(os.path.join(OUT, out_name), [(k, tuple(v.shape)) for k, v in sd.items()], names)
    n = lambda mod: sum(p.numel() for p in mod.parameters())
    print(f"    encoder {n(m.encoder):,}, decoder {n(m.decoder):,}")


def tiny(seed=11, batch=2, size=16):
    cfg = load_config("tiny_vae.yaml")
    gen = torch.Generator().manual_seed(seed)
    model = AutoencoderKL.from_config(cfg)
    randomize(model, gen)
    model.eval()
    sd = {k: v.clone() for k, v in model.state_dict().items()}

    folder = os.path.join(OUT, "tiny_vae")
    model.to(torch.float16).save_pretrained(folder, safe_serialization=True)
    for f in os.listdir(folder):
        if f not in ("config.json", "diffusion_pytorch_model.safetensors"):
            os.remove(os.path.join(folder, f))
    model.to(torch.float64)

    _, ldm = to_ldm(cfg, sd)
    ldm = {k: v.to(torch.bfloat16).contiguous() for k, v in ldm.items()}
    ldm["model.diffusion_model.conv_in.bias"] = torch.zeros(4, dtype=torch.bfloat16)
    ldm["conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"] = torch.ones(3, dtype=torch.bfloat16)
    save_file(ldm, os.path.join(OUT, "tiny_vae_ldm.safetensors"), metadata={"format": "pt"})

    f = 2 ** (len(cfg["block_out_channels"]) - 1)
    lc = cfg["latent_channels"]
    image = uniform(gen, batch, cfg["in_channels"], size, size)
    z = uniform(gen, batch, lc, size // f, size // f, lo=-2.0, hi=2.0)
    eps = torch.randn(batch, lc, size // f, size // f, generator=gen).to(torch.float32)

    x = image.double().requires_grad_()
    moments = model.quant_conv(model.encoder(x))
    mean, logvar = moments.chunk(2, dim=1)
    R_enc = uniform(gen, *mean.shape)
    (mean * R_enc.double()).sum().backward()
    sf = cfg["scaling_factor"]
    latents = sf * (mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * eps.double())

    zz = z.double().requires_grad_()
    dec = model.decode(zz).sample
    R_dec = uniform(gen, *dec.shape)
    (dec * R_dec.double()).sum().backward()

    io = {"image": nhwc(image), "mean": nhwc(mean), "logvar": nhwc(logvar), "eps": nhwc(eps),
          "latents": nhwc(latents), "R_enc": nhwc(R_enc), "grad.image": nhwc(x.grad), "z": nhwc(z),
          "decoded": nhwc(dec), "R_dec": nhwc(R_dec), "grad.z": nhwc(zz.grad)}
    save_file(f32_dict(io), os.path.join(OUT, "tiny_vae_io.safetensors"))
    n = sum(v.numel() for v in sd.values())
    print(f"  tiny_vae: {len(sd)} tensors, {n:,} parameters; |decoded| max {dec.abs().max():.4g}, "
          f"|mean| max {mean.abs().max():.4g}")


def main():
    diffusers_logging.set_verbosity_error()
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    param_list("sdxl_vae.yaml", "sdxl_vae_params.txt")
    tiny()


if __name__ == "__main__":
    main()
