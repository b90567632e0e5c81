"""tests/ref/make_unet_fixture.py: diffusers references for the UNets (tests/unit/test_unet.c, test_safetensors.c).

Reads the model YAMLs in configs/models/ and builds the diffusers twin of each with
UNet2DConditionModel.from_config, so the C presets and these references cannot drift apart.

Writes under tests/ref/fixtures/unet/:
  sdxl_params.txt, sd21_params.txt
      the full SDXL / SD 2.1 UNets built on the meta device: one line per state-dict entry, in
      state-dict order, "<diffusers name> <d0,d1,..> <Stability single-file name>", then a last
      line "total <tensors> <parameters>". The single-file names come from ldm_name() below and are
      checked here against diffusers' own single-file converter (convert_ldm_unet_checkpoint):
      converting a checkpoint with those names must give back exactly the diffusers state dict.
  tiny_xl/ (configs/models/tiny_unet.yaml) and tiny_sd21/ (tiny_sd21_unet.yaml):
      config.json + diffusion_pytorch_model.safetensors as diffusers' save_pretrained writes them
      (tiny_xl in float16, tiny_sd21 in float32);
  tiny_xl_ldm.safetensors (bfloat16), tiny_sd21_ldm.safetensors (float16):
      the same weights in the Stability single-file layout (written by safetensors.torch.save_file,
      checked with convert_ldm_unet_checkpoint), plus a few tensors of other networks
      ("first_stage_model.", "conditioner.") that a UNet load must ignore;
  tiny_xl_io.safetensors, tiny_sd21_io.safetensors (float32, addc layouts: NHWC images):
      sample, timesteps, encoder_hidden_states (+ text_embeds, time_ids), R, out = unet(...),
      and the gradients of sum(out * R): grad.sample, grad.encoder_hidden_states (grad.text_embeds)
      and grad.<name> for a few parameters (in the file layout, OIHW for convs).
  pyfile.safetensors: one tensor of each dtype written by safetensors.torch.save_file, with metadata.

Weights: every parameter is random (norm scales 1 + noise), rounded to values that bf16 and f16 both
hold exactly, so the float16 and bfloat16 files carry exactly the float32 weights of the reference.
The reference forward and backward run in float64 from those weights and float32 inputs.
Deterministic (fixed seeds). Run tests/ref/make_fixtures.sh (or this script) to regenerate."""

import json
import os

import torch
import yaml
from diffusers import UNet2DConditionModel
from diffusers.utils import logging as diffusers_logging
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "ref", "fixtures", "unet")
LDM = "model.diffusion_model."


def load_config(name):
    with open(os.path.join(ROOT, "configs", "models", name)) as f:
        return yaml.safe_load(f)


# ---- the Stability single-file layout (written independently of nn/unet.c, checked by diffusers) ----

RESNET = [("norm1.", "in_layers.0."), ("conv1.", "in_layers.2."), ("time_emb_proj.", "emb_layers.1."),
          ("norm2.", "out_layers.0."), ("conv2.", "out_layers.3."), ("conv_shortcut.", "skip_connection.")]
FIXED = [("conv_in.", "input_blocks.0.0."), ("time_embedding.linear_1.", "time_embed.0."),
         ("time_embedding.linear_2.", "time_embed.2."), ("add_embedding.linear_1.", "label_emb.0.0."),
         ("add_embedding.linear_2.", "label_emb.0.2."), ("conv_norm_out.", "out.0."), ("conv_out.", "out.2.")]


def resnet_rest(rest):
    for a, b in RESNET:
        if rest.startswith(a):
            return b + rest[len(a):]
    raise KeyError(rest)


def ldm_name(cfg, key):
    lpb = cfg["layers_per_block"]
    for a, b in FIXED:
        if key.startswith(a):
            return LDM + b + key[len(a):]
    p = key.split(".")
    if p[0] == "down_blocks":
        b, kind = int(p[1]), p[2]
        if kind == "downsamplers":
            return LDM + f"input_blocks.{1 + b * (lpb + 1) + lpb}.0.op." + ".".join(p[5:])
        j, rest = int(p[3]), ".".join(p[4:])
        idx = 1 + b * (lpb + 1) + j
        return LDM + (f"input_blocks.{idx}.0." + resnet_rest(rest) if kind == "resnets" else f"input_blocks.{idx}.1." + rest)
    if p[0] == "mid_block":
        j, rest = int(p[2]), ".".join(p[3:])
        return LDM + (f"middle_block.{2 * j}." + resnet_rest(rest) if p[1] == "resnets" else f"middle_block.{2 * j + 1}." + rest)
    if p[0] == "up_blocks":
        b, kind = int(p[1]), p[2]
        if kind == "upsamplers":
            slot = 2 if cfg["up_block_types"][b] == "CrossAttnUpBlock2D" else 1
            return LDM + f"output_blocks.{b * (lpb + 1) + lpb}.{slot}.conv." + ".".join(p[5:])
        j, rest = int(p[3]), ".".join(p[4:])
        idx = b * (lpb + 1) + j
        return LDM + (f"output_blocks.{idx}.0." + resnet_rest(rest) if kind == "resnets" else f"output_blocks.{idx}.1." + rest)
    raise KeyError(key)


def check_ldm_names(cfg, sd):
    """diffusers' converter must map our single-file names back onto exactly sd's names."""
    names = {k: ldm_name(cfg, k) for k in sd}
    assert len(set(names.values())) == len(names), "single-file names are not unique"
    fake = {v: torch.tensor([float(i)]) for i, v in enumerate(names.values())}
    back = convert_ldm_unet_checkpoint(fake, cfg)
    assert set(back) == set(sd), (sorted(set(sd) - set(back))[:5], sorted(set(back) - set(sd))[:5])
    for k, v in names.items():
        assert torch.equal(back[k], fake[v]), k
    return names


def param_list(cfg_name, out_name):
    cfg = load_config(cfg_name)
    with torch.device("meta"):
        m = UNet2DConditionModel.from_config(cfg)
    sd = m.state_dict()
    names = check_ldm_names(cfg, sd)
    total = 0
    with open(os.path.join(OUT, out_name), "w") as f:
        for k, v in sd.items():
            f.write(f"{k} {','.join(str(d) for d in v.shape)} {names[k]}\n")
            total += v.numel()
        f.write(f"total {len(sd)} {total}\n")
    print(f"  {out_name}: {len(sd)} tensors, {total:,} parameters")


# ---- tiny models with references ----

def randomize(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            fan_in = p[0].numel() if p.dim() > 1 else p.numel()
            r = torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1
            if "norm" in name.split(".")[-2]:
                v = (1.0 if name.endswith("weight") else 0.0) + 0.2 * r
            else:
                v = r / fan_in ** 0.5
            v = v.to(torch.bfloat16).to(torch.float64)
            v[v.abs() < 2.0 ** -14] = 0.0  # below f16's normal range: zero, so f16 holds every value
            p.copy_(v)


def nhwc(x):
    return x.permute(0, 2, 3, 1).contiguous()


GRAD_PARAMS = {
    "tiny_xl": ["conv_in.weight", "time_embedding.linear_1.weight", "add_embedding.linear_2.weight",
                "down_blocks.0.resnets.1.conv1.weight", "down_blocks.0.downsamplers.0.conv.weight",
                "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight",
                "down_blocks.1.attentions.1.transformer_blocks.1.ff.net.0.proj.weight",
                "down_blocks.1.resnets.0.conv_shortcut.weight",
                "mid_block.attentions.0.transformer_blocks.1.attn2.to_k.weight", "mid_block.resnets.1.norm2.weight",
                "up_blocks.0.attentions.2.proj_out.weight", "up_blocks.0.upsamplers.0.conv.weight",
                "up_blocks.1.resnets.2.conv_shortcut.weight", "conv_norm_out.weight", "conv_out.bias"],
    "tiny_sd21": ["conv_in.weight", "time_embedding.linear_2.bias",
                  "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v.weight",
                  "down_blocks.0.attentions.0.norm.weight", "down_blocks.1.resnets.0.conv2.weight",
                  "mid_block.attentions.0.transformer_blocks.0.norm3.bias",
                  "up_blocks.0.resnets.1.time_emb_proj.weight", "up_blocks.1.attentions.1.proj_in.weight",
                  "conv_out.weight"],
}


def tiny(tag, cfg_name, weight_dtype, ldm_dtype, seed, batch=2, size=8, tokens=5):
    cfg = load_config(cfg_name)
    gen = torch.Generator().manual_seed(seed)
    model = UNet2DConditionModel.from_config(cfg)
    randomize(model, gen)
    model.eval()
    sd = {k: v.clone() for k, v in model.state_dict().items()}

    # the diffusers folder, as save_pretrained writes it
    folder = os.path.join(OUT, tag)
    model.to(weight_dtype).save_pretrained(folder, safe_serialization=True)
    model.to(torch.float64)
    for f in os.listdir(folder):
        if f not in ("config.json", "diffusion_pytorch_model.safetensors"):
            os.remove(os.path.join(folder, f))

    # the single-file layout, plus keys of other networks
    names = check_ldm_names(cfg, sd)
    ldm = {names[k]: v.to(ldm_dtype).contiguous() for k, v in sd.items()}
    ldm["first_stage_model.decoder.conv_in.bias"] = torch.zeros(4, dtype=ldm_dtype)
    ldm["conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"] = torch.ones(3, dtype=ldm_dtype)
    back = convert_ldm_unet_checkpoint({k: v.to(torch.float64) for k, v in ldm.items()}, cfg)
    assert all(torch.equal(back[k], sd[k].to(torch.float64)) for k in sd)
    save_file(ldm, os.path.join(OUT, f"{tag}_ldm.safetensors"), metadata={"format": "pt"})

    # inputs, outputs, gradients (float64 reference from float32 inputs)
    f32 = lambda *s: (torch.rand(*s, generator=gen) * 2 - 1)
    sample = f32(batch, cfg["in_channels"], size, size)
    timesteps = torch.tensor([999.0, 37.0])[:batch]
    ehs = f32(batch, tokens, cfg["cross_attention_dim"])
    io = {"sample": nhwc(sample), "timesteps": timesteps, "encoder_hidden_states": ehs}
    kw = {}
    if cfg.get("addition_embed_type") == "text_time":
        dt = cfg["projection_class_embeddings_input_dim"] - 6 * cfg["addition_time_embed_dim"]
        text = f32(batch, dt)
        time_ids = torch.tensor([[512.0, 512, 0, 0, 512, 512], [768.0, 1024, 16, 32, 512, 512]])[:batch]
        io.update(text_embeds=text, time_ids=time_ids)
        kw["added_cond_kwargs"] = {"text_embeds": text.double().requires_grad_(), "time_ids": time_ids.double()}
    x = sample.double().requires_grad_()
    e = ehs.double().requires_grad_()
    out = model(x, timesteps.double(), encoder_hidden_states=e, **kw).sample
    R = f32(*out.shape)
    (out * R.double()).sum().backward()
    io.update(R=nhwc(R), out=nhwc(out.detach()), **{"grad.sample": nhwc(x.grad), "grad.encoder_hidden_states": e.grad})
    if kw:
        io["grad.text_embeds"] = kw["added_cond_kwargs"]["text_embeds"].grad
    params = dict(model.named_parameters())
    for n in GRAD_PARAMS[tag]:
        io["grad." + n] = params[n].grad
    io = {k: v.detach().to(torch.float32).contiguous() for k, v in io.items()}
    save_file(io, os.path.join(OUT, f"{tag}_io.safetensors"))
    n = sum(v.numel() for v in sd.values())
    print(f"  {tag}: {len(sd)} tensors, {n:,} parameters; |out| max {io['out'].abs().max():.4g}")


def python_file():
    t = {
        "f32": torch.arange(6, dtype=torch.float32).reshape(2, 3) / 4,
        "f16": torch.tensor([1.5, -2.25, 65504.0], dtype=torch.float16),
        "bf16": torch.tensor([[1.0, -3.0e38], [0.5, 7.0]], dtype=torch.bfloat16),
        "f64": torch.tensor([1.0 / 3.0], dtype=torch.float64),
        "i64": torch.tensor([-5, 1 << 40], dtype=torch.int64),
        "i32": torch.tensor([[7]], dtype=torch.int32),
        "u8": torch.tensor([0, 255, 9], dtype=torch.uint8),
        "empty": torch.zeros(0, 4, dtype=torch.float32),
        "scalar": torch.tensor(2.5, dtype=torch.float32),
    }
    save_file(t, os.path.join(OUT, "pyfile.safetensors"), metadata={"note": "w\u00e9ights \"q\""})


def main():
    diffusers_logging.set_verbosity_error()
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    param_list("sdxl_unet.yaml", "sdxl_params.txt")
    param_list("sd21_unet.yaml", "sd21_params.txt")
    tiny("tiny_xl", "tiny_unet.yaml", torch.float16, torch.bfloat16, seed=1)
    tiny("tiny_sd21", "tiny_sd21_unet.yaml", torch.float32, torch.float16, seed=2)
    python_file()


if __name__ == "__main__":
    main()
