"""tests/ref/make_tokenizer_fixture.py: the CLIP tokenizer fixture (tests/unit/test_tokenizer.c).

The reference tokenizers:
  open_clip's SimpleTokenizer (open_clip/tokenizer.py, loaded by file path: the package's __init__ needs
      torchvision) with the vocabulary committed at configs/tokenizer/bpe_simple_vocab_16e6.txt.gz (the file open_clip
      ships; `pip install --no-deps open_clip_torch ftfy regex`): context 77, padded with 0;
  transformers' CLIPTokenizer built from the same merges (vocab / merges as openai/clip-vit-large-patch14 holds them),
      padding="max_length", max_length=77, truncation=True: padded with <|endoftext|> (49407).

Writes tests/ref/fixtures/tokenizer/captions.safetensors:
  text (bytes) U8 and offsets (N + 1) I64: the captions, UTF-8, back to back;
  open_clip (N, 77) I32: open_clip's ids;  hf (N, 77) I32: transformers' ids;
  hf_skip (N) U8: 1 where the transformers comparison is skipped (special-token text, which transformers matches
      before normalising as an added token);
  head (N, 77) I32: open_clip's ids with only the first 2000 merges (vocabulary of 2514), for
and tests/ref/fixtures/tokenizer/merges_head.txt: those 2000 merges as a plain transformers-style merges.txt.
Deterministic. Run: python3 tests/ref/make_tokenizer_fixture.py"""

import gzip
import importlib.util
import os

import numpy as np
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOCAB = os.path.join(ROOT, "configs", "tokenizer", "bpe_simple_vocab_16e6.txt.gz")
OUT = os.path.join(ROOT, "tests", "ref", "fixtures", "tokenizer")

LONG = ("a breathtaking panoramic photograph of the snow capped mountains at sunrise, with a crystal clear lake in "
        "the foreground reflecting the pink and orange sky, pine trees along the shore, a small wooden cabin with "
        "smoke rising from its chimney, a red canoe tied to a dock, mist drifting over the water, birds flying in a "
        "v formation, highly detailed, 8k, award winning, trending on artstation, by a famous landscape photographer")

CAPTIONS = [
    "a photo of a cat",
    "A PHOTO OF A DOG, sitting on the grass!!!",
    "Café au lait — 3 cups, 12.5% off; isn't it great?",
    "she's here; they're gone; we've won; I'm fine; you'll see; he'd go; it's HIS",
    "  multiple   spaces\tand\ttabs\nand\r\nnewlines  ",
    "1234567890 and 3.14159 and 2,000,000 and 0x1F",
    "a 🐱 cat with a 🎩 hat 👍🏽 and 👨‍👩‍👧",
    "东京的夜景 渋谷のスクランブル交差点 서울 스카이라인",
    "ΟΔΟΣ ΣΟΦΟΣ Σ ΑΣ. Κάτι ελληνικό",
    "İstanbul ISTANBUL ß STRASSE",
    "cafe\u0301 nai\u0308ve \u1100\u1161\u11a8 A\u030a",
    "Tom &amp; Jerry &lt;3 &quot;quoted&quot; &#39;single&#39; &#x263A; &copy; 2024&nbsp;done &amp;amp; &NTILDE;",
    "<b>bold</b> &amp; text &amp;amp; &eacute;",
    "\u201cHello,\u201d she said \u2014 \u2018it\u2019s fine\u2019 \u02bcn",
    "\ufb01ne \ufb02our \uff2c\uff2f\uff35\uff24\u3000\uff2e\uff2f\uff29\uff33\uff25\uff33 \uff71\uff72",
    "\u0093smart\u0094 quotes and \u0080 euro",
    "bell\u0007 char\u0000 nul \u007f del \u200bzero width",
    "wow!!! ...??? -- ++ $$$ @user #hashtag :) <3 ^_^",
    "https://example.com/path?q=1&x=2#frag",
    LONG,
    LONG + " " + LONG,
    "",
    "   ",
    "rock'n'roll 'quoted' don't won't y'all '''s",
    "ÀÉÎÕÜ Ñandú ÇA ÿ",
    "مرحبا بالعالم שלום עולם नमस्ते दुनिया",
    "x² + y³ = ½ ⅔ Ⅻ ①",
    "\x1b[31mred\x1b[0m text",
    "a" * 300,
    "Tiếng Việt có dấu",
    "<start_of_text> literal <end_of_text>",
    "<|startoftext|> transformers spelling <|endoftext|>",
    "tab\tseparated\u00a0nbsp\u2009thin\u3000ideographic",
    "email: john.doe+tag@mail.co.uk, phone +1 (555) 123-4567",
    "the year 1999's best",
    "ﾊﾟﾝ halfwidth katakana ｶﾞ",
]
HF_SKIP = {"<start_of_text> literal <end_of_text>", "<|startoftext|> transformers spelling <|endoftext|>"}


def load_open_clip_tokenizer(bpe=VOCAB):
    import site
    for d in site.getsitepackages():
        path = os.path.join(d, "open_clip", "tokenizer.py")
        if os.path.exists(path):
            spec = importlib.util.spec_from_file_location("open_clip_tokenizer", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            return mod.SimpleTokenizer(bpe_path=bpe)
    raise RuntimeError("open_clip is not installed: pip install --no-deps open_clip_torch ftfy regex")


def hf_tokenizer(oc):
    from transformers import CLIPTokenizer
    vocab = {("<|startoftext|>" if k == "<start_of_text>" else "<|endoftext|>" if k == "<end_of_text>" else k): v
             for k, v in oc.encoder.items()}
    merges = gzip.open(VOCAB).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    return CLIPTokenizer(vocab=vocab, merges=[tuple(m.split()) for m in merges])


def head_tokenizer(n=2000):
    """open_clip's tokenizer on the first n merges, and the same merges as a plain merges.txt"""
    import gzip as gz
    import tempfile
    lines = gzip.open(VOCAB).read().decode("utf-8").split("\n")[1:n + 1]
    with open(os.path.join(OUT, "merges_head.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(lines) + "\n")
    with tempfile.NamedTemporaryFile(suffix=".txt.gz", delete=False) as f:
        f.write(gz.compress(("#version: 0.2\n" + "\n".join(lines)).encode("utf-8")))  # no empty last merge
    return load_open_clip_tokenizer(f.name)


def main():
    os.makedirs(OUT, exist_ok=True)
    oc = load_open_clip_tokenizer()
    head = head_tokenizer()
    assert head.vocab_size == 2514
    hf = hf_tokenizer(oc)
    ids_oc = oc(CAPTIONS, context_length=77).numpy().astype(np.int32)
    ids_hf = np.array(hf(CAPTIONS, padding="max_length", max_length=77, truncation=True)["input_ids"], dtype=np.int32)
    raw = [c.encode("utf-8") for c in CAPTIONS]
    offsets = np.cumsum([0] + [len(r) for r in raw]).astype(np.int64)
    skip = np.array([c in HF_SKIP for c in CAPTIONS], dtype=np.uint8)
    save_file({"text": np.frombuffer(b"".join(raw), dtype=np.uint8).copy(), "offsets": offsets, "open_clip": ids_oc,
               "hf": ids_hf, "hf_skip": skip, "head": head(CAPTIONS, context_length=77).numpy().astype(np.int32)}, os.path.join(OUT, "captions.safetensors"))
    differ = sum(int((a != b).any()) for a, b in zip(ids_oc, ids_hf))
    print(f"  {len(CAPTIONS)} captions; open_clip and transformers differ (beyond padding) on "
          f"{sum(int((np.where(a == 0, 49407, a) != np.where(b == 0, 49407, b)).any()) for a, b in zip(ids_oc, ids_hf))}"
          f" ({differ} with padding)")


if __name__ == "__main__":
    main()
