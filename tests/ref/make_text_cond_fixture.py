"""tests/ref/make_text_cond_fixture.py: SDXL's two-encoder text conditioning (tests/unit/test_text_cond.c) from
diffusers' own StableDiffusionXLPipeline.encode_prompt.

The encoders are tests/data/text/toy_clip_l_text.yaml (CLIPTextModel, quick_gelu, pad <|endoftext|>) and
toy_bigg_text.yaml (CLIPTextModelWithProjection, gelu, pad "!" = id 0), both over the full CLIP BPE vocabulary with
16 positions, so their weights (49408 x 8 token embeddings) are not stored: every parameter is a formula of its name,
which test_text_cond.c writes the same way,
    w[k] = base + amp * sin(0.731 k + 0.1 (fnv1a32(name) % 997)),  k the flat index in the file's (torch) layout,
name without the "text_model." prefix; base 1 for a LayerNorm weight, else 0; amp 0.1 for LayerNorm tensors, else
0.5. The tokenizers are transformers' CLIPTokenizer on the committed merges (as make_tokenizer_fixture.py builds it),
model_max_length 16, the second with pad_token "!" (SDXL's tokenizer_2).

Writes tests/ref/fixtures/text_cond/sdxl_dual.safetensors in the layout `addc embed` writes: encoder_hidden_states
(N, 16, 16) (prompt_embeds: hidden_states[-2] of both, concatenated), text_embeds (N, 8) (pooled_prompt_embeds: the
second encoder's projection) and __metadata__ {"captions": JSON list of the N captions}.
Deterministic. Run: python3 tests/ref/make_text_cond_fixture.py"""

import json
import os

import numpy as np
import torch
import yaml
from safetensors.numpy import save_file

from fixture_common import FIXTURES, ROOT
from make_tokenizer_fixture import hf_tokenizer, load_open_clip_tokenizer

OUT = os.path.join(FIXTURES, "text_cond")
CAPTIONS = ["a photo of a bag", "", "A PHOTO OF A DOG, sitting on the grass!!!",
            "a very long caption that has far more than sixteen tokens so both tokenizers cut it to the context"]


def fnv1a32(s):
    h = 2166136261
    for b in s.encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def fill(model):
    for name, p in model.named_parameters():
        key = name[len("text_model."):] if name.startswith("text_model.") else name
        norm = "layer_norm" in key
        base = 1.0 if norm and key.endswith(".weight") else 0.0
        k = np.arange(p.numel(), dtype=np.float64)
        v = base + (0.1 if norm else 0.5) * np.sin(0.731 * k + 0.1 * (fnv1a32(key) % 997))
        with torch.no_grad():
            p.copy_(torch.from_numpy(v.astype(np.float32)).reshape(p.shape))


def build(path):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    with open(os.path.join(ROOT, path)) as f:
        cfg = yaml.safe_load(f)
    arch = cfg.pop("architectures")[0]
    cfg.pop("pad_token")
    cfg.pop("model_type", None)
    cls = CLIPTextModelWithProjection if arch == "CLIPTextModelWithProjection" else CLIPTextModel
    m = cls(CLIPTextConfig(**cfg)).eval()
    fill(m)
    return m


def main():
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    oc = load_open_clip_tokenizer()
    tok1, tok2 = hf_tokenizer(oc), hf_tokenizer(oc)
    tok2.pad_token = "!"
    tok1.model_max_length = tok2.model_max_length = 16
    enc1 = build("tests/data/text/toy_clip_l_text.yaml")
    enc2 = build("tests/data/text/toy_bigg_text.yaml")
    pipe = StableDiffusionXLPipeline(vae=None, text_encoder=enc1, text_encoder_2=enc2, tokenizer=tok1,
                                     tokenizer_2=tok2, unet=None, scheduler=EulerDiscreteScheduler())
    ctx, pooled = [], []
    with torch.no_grad():
        for c in CAPTIONS:
            pe, _, pp, _ = pipe.encode_prompt(c, device="cpu", do_classifier_free_guidance=False)
            ctx.append(pe[0].float().numpy())
            pooled.append(pp[0].float().numpy())
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "sdxl_dual.safetensors")
    save_file({"encoder_hidden_states": np.stack(ctx), "text_embeds": np.stack(pooled)}, path,
              metadata={"captions": json.dumps(CAPTIONS), "format": "diffusers encode_prompt"})
    print(f"wrote {path}: context {np.stack(ctx).shape}, pooled {np.stack(pooled).shape}")


if __name__ == "__main__":
    main()
