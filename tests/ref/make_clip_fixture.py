"""tests/ref/make_clip_fixture.py: fixtures of nn/clip.c (tests/unit/test_clip.c) from transformers' CLIP text models.

Writes under tests/ref/fixtures/clip/:
  clip_l_text_params.txt, openclip_bigg_text_params.txt, vitg14_text_params.txt: "name shape file-name" per
      tensor of CLIPTextModel / CLIPTextModelWithProjection(config) built on the meta device, in state-dict order,
      under the names of transformers' files ("text_model." prefix), then "total N numel". The third column is
      where the tensor lies in Stability's SDXL single file: "conditioner.embedders.0.transformer.<name>" for
      CLIP-L; for the open_clip models the open_clip key ("conditioner.embedders.1.model." for bigG, none for
      ViT-g), "key[a:b]" for rows of the fused in_proj and "key.T" for the transposed text_projection. The open_clip
      names are made here and checked with diffusers' convert_open_clip_checkpoint;
  tiny_clip_l/model.safetensors (float16): the tiny CLIP-L-like model as transformers 5's save_pretrained writes a
      CLIPTextModel (no "text_model." prefix);
  tiny_bigg/model.safetensors (float16): the tiny bigG-like model as save_pretrained writes a
      CLIPTextModelWithProjection ("text_model." prefix);
  tiny_sdxl_te.safetensors (bfloat16): both in one file as SDXL's single file holds them: CLIP-L under
      "conditioner.embedders.0.transformer." (with its position_ids buffer), bigG in the open_clip layout under
      "conditioner.embedders.1.model." (with logit_scale), plus a UNet tensor;
  tiny_clip_io.safetensors (float32): ids (3, 77) int64 (a CLIP-L-style caption padded with the end-of-text id,
      an open_clip-style one padded with 0, a full-length one), and per model <m>.penultimate (hidden_states[-2]),
      <m>.last (last_hidden_state), <m>.pooled (pooler_output), bigg.text_embeds.
Deterministic. Run: python3 tests/ref/make_clip_fixture.py"""

import os

import torch
from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
from transformers.utils import logging as hf_logging

from fixture_common import FIXTURES, exact, f32_dict, load_config, randomize, write_param_list

OUT = os.path.join(FIXTURES, "clip")
SDXL_L = "conditioner.embedders.0.transformer."
SDXL_G = "conditioner.embedders.1.model."
LAYER = [("self_attn.out_proj.", "attn.out_proj."), ("layer_norm1.", "ln_1."), ("layer_norm2.", "ln_2."),
         ("mlp.fc1.", "mlp.c_fc."), ("mlp.fc2.", "mlp.c_proj.")]
FIXED = {"text_model.embeddings.token_embedding.weight": "token_embedding.weight",
         "text_model.embeddings.position_embedding.weight": "positional_embedding",
         "text_model.final_layer_norm.weight": "ln_final.weight",
         "text_model.final_layer_norm.bias": "ln_final.bias"}


def build(cfg_name, device=None):
    cfg = load_config(cfg_name)
    arch = cfg.pop("architectures")[0]
    cfg.pop("pad_token")
    cfg.pop("model_type", None)
    conf = CLIPTextConfig(**cfg)
    cls = CLIPTextModelWithProjection if arch == "CLIPTextModelWithProjection" else CLIPTextModel
    if device == "meta":
        with torch.device("meta"):
            return cls(conf)
    return cls(conf)


def file_state_dict(model):
    """the state dict under the names transformers 4 files and SDXL use: text_model.* (+ text_projection.weight)"""
    sd = model.state_dict()
    if isinstance(model, CLIPTextModel):
        return {"text_model." + k: v for k, v in sd.items()}
    return dict(sd)


def open_clip_name(key, width):
    """(open_clip key, rows or None, transposed)"""
    if key in FIXED:
        return FIXED[key], None, False
    if key == "text_projection.weight":
        return "text_projection", None, True
    p = key.split(".")
    i, rest = int(p[3]), ".".join(p[4:])
    for j, q in enumerate(("self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj.")):
        if rest.startswith(q):
            return f"transformer.resblocks.{i}.attn.in_proj_{rest[len(q):]}", (j * width, (j + 1) * width), False
    for a, b in LAYER:
        if rest.startswith(a):
            return f"transformer.resblocks.{i}." + b + rest[len(a):], None, False
    raise KeyError(key)


def to_open_clip(model, sd, prefix):
    """open_clip state dict of an HF text model, checked with diffusers' converter"""
    width = model.config.hidden_size
    oc = {}
    for k, v in sd.items():
        name, rows, tr = open_clip_name(k, width)
        name = prefix + name
        if rows:
            oc.setdefault(name, [None, None, None])[rows[0] // width] = v
        else:
            oc[name] = v.T.contiguous() if tr else v
    oc = {k: torch.cat(v, 0) if isinstance(v, list) else v for k, v in oc.items()}
    back = convert_open_clip_checkpoint(model, oc, prefix=prefix)
    assert set(back) == set(sd), (sorted(set(sd) - set(back))[:4], sorted(set(back) - set(sd))[:4])
    for k in sd:
        assert torch.equal(back[k], sd[k]), k
    return oc


def describe(key, prefix, width, open_clip):
    if not open_clip:
        return prefix + key
    name, rows, tr = open_clip_name(key, width)
    if rows:
        return f"{prefix}{name}[{rows[0]}:{rows[1]}]"
    return prefix + name + (".T" if tr else "")


def param_list(cfg_name, out_name, prefix, open_clip):
    m = build(cfg_name, "meta")
    sd = file_state_dict(m)
    width = m.config.hidden_size
    extra = {k: describe(k, prefix, width, open_clip) for k in sd}
    write_param_list(os.path.join(OUT, out_name), [(k, tuple(v.shape)) for k, v in sd.items()], extra)


def check_converter(cfg_name, prefix):
    """our open_clip names on a random model of the full width, layers cut to 2"""
    cfg = load_config(cfg_name)
    cfg.pop("architectures")
    cfg.pop("pad_token")
    cfg.pop("model_type", None)
    cfg["num_hidden_layers"] = 2
    cfg["vocab_size"] = 16
    m = CLIPTextModelWithProjection(CLIPTextConfig(**cfg))
    to_open_clip(m, file_state_dict(m), prefix)


def tiny_model(cfg_name, gen):
    m = build(cfg_name)
    randomize(m, gen, norm_words=("layer_norm", "final_layer_norm"))
    with torch.no_grad():  # embeddings of order 1, like real CLIP's
        emb = getattr(m, "text_model", m).embeddings
        for p in (emb.token_embedding.weight, emb.position_embedding.weight):
            p.copy_(exact(p.double() * p.shape[1] ** 0.5))
    return m.eval()


def save_folder(model, name):
    folder = os.path.join(OUT, name)
    model.to(torch.float16).save_pretrained(folder)
    for f in os.listdir(folder):
        if f not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(folder, f))
    model.to(torch.float64)


def run(model, ids, tag, io):
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    io[f"{tag}.penultimate"] = out.hidden_states[-2]
    io[f"{tag}.last"] = out.last_hidden_state
    if isinstance(model, CLIPTextModelWithProjection):
        io[f"{tag}.text_embeds"] = out.text_embeds
        last = out.last_hidden_state
        io[f"{tag}.pooled"] = last[torch.arange(last.shape[0]), ids.argmax(-1)]
    else:
        io[f"{tag}.pooled"] = out.pooler_output


def tiny(seed=31):
    gen = torch.Generator().manual_seed(seed)
    clip_l = tiny_model("tiny_clip_l_text.yaml", gen)
    bigg = tiny_model("tiny_openclip_text.yaml", gen)
    sd_l, sd_g = file_state_dict(clip_l), file_state_dict(bigg)
    save_folder(clip_l, "tiny_clip_l")
    save_folder(bigg, "tiny_bigg")

    single = {SDXL_L + k: v for k, v in sd_l.items()}
    single[SDXL_L + "text_model.embeddings.position_ids"] = torch.arange(77)[None].to(torch.float32)
    single.update(to_open_clip(bigg, sd_g, SDXL_G))
    single[SDXL_G + "logit_scale"] = torch.tensor(4.6052)
    single["model.diffusion_model.out.2.bias"] = torch.zeros(4)
    single = {k: (v.to(torch.bfloat16) if k.endswith(("weight", "bias", "embedding", "projection", "scale"))
                  else v.to(torch.int64)).contiguous() for k, v in single.items()}
    save_file(single, os.path.join(OUT, "tiny_sdxl_te.safetensors"), metadata={"format": "pt"})

    V, T, eot = 500, 77, 499
    ids = torch.zeros(3, T, dtype=torch.int64)
    words = torch.randint(1, V - 2, (3, T), generator=gen)
    ids[0, 0], ids[0, 1:12], ids[0, 12:] = 498, words[0, 1:12], eot  # padded with end-of-text (CLIP-L)
    ids[1, 0], ids[1, 1:30], ids[1, 30] = 498, words[1, 1:30], eot  # padded with 0 (open_clip)
    ids[2, 0], ids[2, 1:76], ids[2, 76] = 498, words[2, 1:76], eot  # full context
    io = {"ids": ids}
    run(clip_l, ids, "clip_l", io)
    run(bigg, ids, "bigg", io)
    save_file({k: (v if k == "ids" else v.detach().to(torch.float32).contiguous()) for k, v in io.items()},
              os.path.join(OUT, "tiny_clip_io.safetensors"))
    for name, m in (("tiny_clip_l", clip_l), ("tiny_bigg", bigg)):
        n = sum(v.numel() for v in file_state_dict(m).values())
        print(f"  {name}: {len(file_state_dict(m))} tensors, {n:,} parameters")


def main():
    hf_logging.set_verbosity_error()
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    param_list("clip_l_text.yaml", "clip_l_text_params.txt", SDXL_L, False)
    param_list("openclip_bigg_text.yaml", "openclip_bigg_text_params.txt", SDXL_G, True)
    param_list("vitg14_text.yaml", "vitg14_text_params.txt", "", True)
    check_converter("openclip_bigg_text.yaml", SDXL_G)
    check_converter("vitg14_text.yaml", "")
    tiny()


if __name__ == "__main__":
    main()
