"""tests/bench/bench_train_torch.py: the PyTorch side of tests/bench/run_train.sh: one `addc train` step of a
training config (configs/train/toy_teacher.yaml: diffusion, configs/train/toy_add.yaml: ADD), written in PyTorch
with the same networks, the same batch size, the same losses and optimizers, timed in seconds per step.

Networks (float32, CPU, random weights; each from the model YAML the training config names, the fields above the
`# ---- addc ----` line only):
  UNet          diffusers UNet2DConditionModel.from_config (student; the ADD teacher is a frozen copy the student
                starts from, as student_init: teacher)
  text encoder  transformers CLIPTextModelWithProjection, frozen: context = penultimate hidden states, pooled =
                text_embeds (text.layer: penultimate)
  features      transformers Dinov2Model, frozen (no parameter gradients) but differentiated on the fake path;
                taps = the patch-embedding output and the outputs of tap_blocks, read out as patches + CLS
  heads         tests/ref/make_r1_fixture.py's DiscHead (StyleGAN-T) with make_disc_fixture.py's
                FullyConnectedLayer as the conditioning map, one per tap, conditioned on the pooled text embedding
The codec is the 2x2 pixel unshuffle (F.pixel_unshuffle / F.pixel_shuffle) times codec.scale.

One diffusion step: tokenize the captions (10% replaced by "", text.drop_prob), text encoder without autograd,
t uniform over 0..999, z_t = alpha z0 + sigma eps, the UNet's v prediction, per-sample mean squared error to
alpha eps - sigma z0, backward, global-norm clipping, AdamW, EMA of the student (ema_decay).

One ADD step (launch/train.c add_step): tokenize, encode text; student forward at s from {999, 749, 499, 249} on
z_s; x_student = alpha_s z_s - sigma_s v; teacher forward without autograd on z_t = alpha_t sg(x_student) +
sigma_t eps' (t uniform over 1..999), x_teacher through the teacher's epsilon; decode both; distillation loss
mean_b alpha_t mean_e (img_student - img_teacher)^2; DINOv2 on the decoded student images (autograd on), the
heads (one spectral-norm power iteration each), L_G = -sum_k mean D_k + lambda L_distill; backward into the
student (the heads' gradients from it are dropped), clipping, AdamW. Then D: DINOv2 on the real images without
autograd, the heads on the real features (leaves that require grad) and the detached fake features (heads in eval
mode: no further power iteration, as addc), hinge loss, exact R1 = sum_k mean_b ||d sum D_k / d x_k||^2 through
torch.autograd.grad(create_graph=True), L_D = hinge + gamma/2 R1, backward, clipping, AdamW (beta1 0).

Data loading is not compared: the batch is a fixed synthetic one (B gray 32x32 images in [-1, 1], captions of the
ten Fashion-MNIST classes "a photo of a ..."; addc runs with data.fixed_batch, so it loads once too). Captions are
tokenized every step with transformers' CLIPTokenizer built from configs/tokenizer/bpe_simple_vocab_16e6.txt.gz
(tests/ref/make_tokenizer_fixture.py, needs `pip install --no-deps open_clip_torch ftfy regex`); without open_clip,
fixed token ids of the same length stand in (printed).

Threads: torch.set_num_threads(--threads or ADDC_THREADS), set_num_interop_threads(1). Eager mode, PyTorch's
default kernels (AdamW's default implementation, SDPA attention in diffusers and transformers).

Prints "# ..." lines and "result <mode> <median s/step> <min s/step> <max s/step> <student params>"; with
--losses, the losses of every step. Usage:
  python3 bench_train_torch.py --config configs/train/toy_add.yaml [--steps 10] [--warmup 2] [--threads 2]"""

import argparse
import copy
import os
import platform
import statistics
import sys
import time
import zlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "ref"))
import make_r1_fixture  # noqa: E402  (DiscHead, StyleGAN-T's head)
from make_disc_fixture import FullyConnectedLayer, readout  # noqa: E402

CLASSES = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
ADDC_MARK = "# ---- addc ----"


def get(d, path, default):
    """d["a"]["b"] for path "a.b", default where absent"""
    for k in path.split("."):
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def model_yaml(path):
    """(library fields, addc fields) of a model YAML: the part above the addc marker, and all of it"""
    text = open(os.path.join(ROOT, path)).read()
    return yaml.safe_load(text.split(ADDC_MARK)[0]), yaml.safe_load(text)


class Schedule:
    """losses/diffusion.h: scaled-linear betas, optionally rescaled to zero terminal SNR (alphabar_{T-1} set to
    terminal_alpha_bar); alpha_t = sqrt(alphabar_t), sigma_t = sqrt(1 - alphabar_t), as float32 tensors"""

    def __init__(self, cfg):
        T = get(cfg, "num_train_timesteps", 1000)
        b0, b1 = get(cfg, "beta_start", 0.00085), get(cfg, "beta_end", 0.012)
        if get(cfg, "kind", "scaled_linear") == "scaled_linear":
            betas = np.linspace(b0 ** 0.5, b1 ** 0.5, T, dtype=np.float64) ** 2
        else:
            betas = np.linspace(b0, b1, T, dtype=np.float64)
        ab = np.cumprod(1.0 - betas)
        if get(cfg, "zero_terminal_snr", False):
            s = np.sqrt(ab)
            s0, sT = s[0], s[-1]
            s = (s - sT) * s0 / (s0 - sT)
            ab = s ** 2
            ab[-1] = get(cfg, "terminal_alpha_bar", 2.0 ** -24)
        self.T = T
        self.alpha = torch.tensor(np.sqrt(ab), dtype=torch.float32)
        self.sigma = torch.tensor(np.sqrt(1.0 - ab), dtype=torch.float32)

    def coef(self, t):
        """alpha_t, sigma_t as (B, 1, 1, 1)"""
        return self.alpha[t].view(-1, 1, 1, 1), self.sigma[t].view(-1, 1, 1, 1)


class Text:
    """the frozen text encoder and the tokenizer (or fixed ids when open_clip is missing)"""

    def __init__(self, path):
        from transformers import CLIPTextConfig, CLIPTextModelWithProjection
        hf, _ = model_yaml(path)
        self.T = hf["max_position_embeddings"]
        for k in ("architectures", "pad_token", "model_type"):
            hf.pop(k, None)
        self.model = CLIPTextModelWithProjection(CLIPTextConfig(**hf)).eval().requires_grad_(False)
        try:
            from make_tokenizer_fixture import hf_tokenizer, load_open_clip_tokenizer
            self.tok = hf_tokenizer(load_open_clip_tokenizer())
            self.how = "captions tokenized every step (transformers CLIPTokenizer, the CLIP BPE vocabulary)"
        except Exception as e:  # no open_clip: ids of the same shape, one row per caption
            self.tok, self.how = None, f"fixed token ids (no tokenizer: {type(e).__name__})"
            self.fixed = {}

    def ids(self, captions):
        if self.tok is not None:
            return self.tok(captions, padding="max_length", max_length=self.T, truncation=True,
                            return_tensors="pt").input_ids
        rows = []
        for c in captions:
            if c not in self.fixed:
                words = [49406] + [1000 + zlib.crc32(w.encode()) % 40000 for w in c.split()] + [49407]
                self.fixed[c] = (words + [49407] * self.T)[:self.T]
            rows.append(self.fixed[c])
        return torch.tensor(rows)

    @torch.no_grad()
    def encode(self, captions):
        o = self.model(input_ids=self.ids(captions), output_hidden_states=True)
        return o.hidden_states[-2], o.text_embeds


class Features:
    """the frozen DINOv2 and its taps, read out as (B, N, D) tokens"""

    def __init__(self, path):
        from transformers import Dinov2Config, Dinov2Model
        hf, full = model_yaml(path)
        hf.pop("model_type", None)
        self.model = Dinov2Model(Dinov2Config(**hf)).eval().requires_grad_(False)
        self.C = hf.get("num_channels", 3)
        self.taps = ([0] if full.get("tap_patch_embedding", True) else []) + [b + 1 for b in full["tap_blocks"]]
        assert full["input_size"] == hf["image_size"], "the benchmark does not resize"
        mean = torch.tensor(full["image_mean"], dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(full["image_std"], dtype=torch.float32).view(1, -1, 1, 1)
        self.a, self.b = 0.5 / std, (0.5 - mean) / std  # ((x + 1) / 2 - mean) / std

    def __call__(self, images):
        px = images.expand(-1, self.C, -1, -1) * self.a + self.b
        hs = self.model(pixel_values=px, output_hidden_states=True).hidden_states
        return [readout(hs[i]) for i in self.taps]


def make_heads(path, n_taps, width, c_dim):
    cfg, _ = model_yaml(path)
    assert cfg["n_heads"] == n_taps and cfg["channels"] == width and cfg["c_dim"] == c_dim
    # make_r1_fixture's DiscHead is StyleGAN-T's with kernel 9, virtual_bs VIRTUAL_BS, eps 1e-5, slope 0.2
    assert cfg["kernel_size"] == 9 and cfg["virtual_bs"] == make_r1_fixture.VIRTUAL_BS and cfg["leaky_slope"] == 0.2
    heads = nn.ModuleList()
    for _ in range(cfg["n_heads"]):
        h = make_r1_fixture.DiscHead(cfg["channels"], cfg["c_dim"], cfg["cmap_dim"])
        if cfg.get("cmapper_equalized_lr", False):
            h.cmapper = FullyConnectedLayer(cfg["c_dim"], cfg["cmap_dim"])
        heads.append(h)
    return heads.train()


def adamw(params, o, lr_default):
    return torch.optim.AdamW(params, lr=get(o, "lr", lr_default), betas=(get(o, "beta1", 0.9), get(o, "beta2", 0.999)),
                             eps=get(o, "eps", 1e-8), weight_decay=get(o, "weight_decay", 0.0))


def set_lr(opt, o, step):
    lr, w = get(o, "lr", 1e-4), get(o, "warmup", 0)
    for g in opt.param_groups:
        g["lr"] = lr * (step + 1) / w if w > 0 and step < w else lr


class Bench:
    def __init__(self, cfg, batch):
        self.cfg, self.B = cfg, batch
        self.mode = cfg.get("mode", "add")
        self.sched = Schedule(get(cfg, "loss.schedule", {}))
        assert get(cfg, "loss.prediction", "epsilon") == "v_prediction", "the toy configs are v models"
        assert get(cfg, "codec.kind", "vae") == "unshuffle", "the toy configs use the pixel-unshuffle codec"
        self.scale = get(cfg, "codec.scale", 1.0)
        assert get(cfg, "text.source", "none") == "encoder", "the toy configs condition on a text encoder"
        self.text = Text(cfg["text"]["encoder"]["config"])
        hf, _ = model_yaml(cfg["student"]["config"])
        from diffusers import UNet2DConditionModel
        self.student = UNet2DConditionModel.from_config(hf).to(torch.float32).train()
        self.opt_g = adamw(self.student.parameters(), cfg.get("opt_g", {}), 1e-4)
        self.ema_decay = cfg.get("ema_decay", 0.0)
        self.ema = [p.detach().clone() for p in self.student.parameters()] if self.ema_decay > 0 else None
        if self.mode == "add":
            self.teacher = copy.deepcopy(self.student).eval().requires_grad_(False)
            self.features = Features(cfg["feature"]["config"])
            pooled = self.text.model.config.projection_dim
            self.heads = make_heads(cfg["heads"]["config"], len(self.features.taps),
                                    self.features.model.config.hidden_size, pooled)
            self.opt_d = adamw(self.heads.parameters(), cfg.get("opt_d", {}), 1e-4)
        S = get(cfg, "data.size", 32)
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(batch, 1, S, S, generator=g) * 2 - 1
        self.captions = [f"a photo of {'an' if c[0] in 'aeiou' else 'a'} {c}" for c in
                         (CLASSES[i % 10] for i in range(batch))]
        self.time_ids = torch.tensor([[S, S, 0, 0, S, S]], dtype=torch.float32).expand(batch, 6).contiguous()
        self.step = 0

    def unet(self, net, z, t, ctx, pooled):
        return net(z, t.to(torch.float32), encoder_hidden_states=ctx,
                   added_cond_kwargs={"text_embeds": pooled, "time_ids": self.time_ids}).sample

    def update_g(self, loss):
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        o = self.cfg.get("opt_g", {})
        torch.nn.utils.clip_grad_norm_(self.student.parameters(), get(o, "grad_clip", 1.0))
        set_lr(self.opt_g, o, self.step)
        self.opt_g.step()
        if self.ema is not None:
            with torch.no_grad():
                for e, p in zip(self.ema, self.student.parameters()):
                    e.lerp_(p, 1.0 - self.ema_decay)

    def diffusion_step(self):
        B, sch = self.B, self.sched
        drop = torch.rand(B) < get(self.cfg, "text.drop_prob", 0.0)
        ctx, pooled = self.text.encode(["" if d else c for d, c in zip(drop.tolist(), self.captions)])
        z0 = F.pixel_unshuffle(self.images, 2) * self.scale
        t = torch.randint(get(self.cfg, "loss.diffusion.t_min", 0), get(self.cfg, "loss.diffusion.t_max", 999) + 1,
                          (B,))
        eps = torch.randn_like(z0)
        a, s = sch.coef(t)
        pred = self.unet(self.student, a * z0 + s * eps, t, ctx, pooled)
        loss = (pred - (a * eps - s * z0)).square().mean((1, 2, 3)).mean()
        self.update_g(loss)
        return {"loss": loss.item()}

    def add_step(self):
        B, sch, cfg, K = self.B, self.sched, self.cfg, len(self.heads)
        x0 = self.images
        z0 = F.pixel_unshuffle(x0, 2) * self.scale
        ctx, pooled = self.text.encode(self.captions)
        ts = torch.tensor(get(cfg, "loss.timesteps.student", [999, 749, 499, 249]))
        s = ts[torch.randint(0, len(ts), (B,))]
        a_s, s_s = sch.coef(s)
        z_s = a_s * z0 + s_s * torch.randn_like(z0)
        x_student = a_s * z_s - s_s * self.unet(self.student, z_s, s, ctx, pooled)
        t = torch.randint(get(cfg, "loss.timesteps.teacher_min", 1), get(cfg, "loss.timesteps.teacher_max", 999) + 1,
                          (B,))
        a_t, s_t = sch.coef(t)
        with torch.no_grad():
            z_t = a_t * x_student.detach() + s_t * torch.randn_like(z0)
            eps_c = s_t * z_t + a_t * self.unet(self.teacher, z_t, t, ctx, pooled)
            img_teacher = F.pixel_shuffle((z_t - s_t * eps_c) / a_t / self.scale, 2)
        img_student = F.pixel_shuffle(x_student / self.scale, 2)
        distill = (a_t.view(B) * (img_student - img_teacher).square().mean((1, 2, 3))).mean()
        feat_fake = self.features(img_student)
        logits_fake = [self.heads[k](feat_fake[k].transpose(1, 2), pooled) for k in range(K)]
        adv = -sum(l.mean() for l in logits_fake)
        loss_g = get(cfg, "adv_weight", 1.0) * adv + get(cfg, "loss.distill.lambda", 2.5) * distill
        self.update_g(loss_g)

        self.heads.zero_grad(set_to_none=True)  # the generator's backward passed through the heads
        self.heads.eval()  # the step's one power iteration ran in the generator pass
        with torch.no_grad():
            feat_real = [f.requires_grad_(True) for f in self.features(x0)]
        logits_real = [self.heads[k](feat_real[k].transpose(1, 2), pooled) for k in range(K)]
        logits_sg = [self.heads[k](feat_fake[k].detach().transpose(1, 2), pooled) for k in range(K)]
        hinge = sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(logits_real, logits_sg))
        grads = torch.autograd.grad([l.sum() for l in logits_real], feat_real, create_graph=True)
        r1 = sum(g.square().sum() / B for g in grads)
        loss_d = hinge + get(cfg, "loss.adv.r1_gamma", 1e-5) / 2 * r1
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        o = cfg.get("opt_d", {})
        torch.nn.utils.clip_grad_norm_(self.heads.parameters(), get(o, "grad_clip", 1.0))
        set_lr(self.opt_d, o, self.step)
        self.opt_d.step()
        self.heads.train()
        return {"loss_g": loss_g.item(), "distill": distill.item(), "loss_d": loss_d.item(), "r1": r1.item()}

    def run_step(self):
        m = self.add_step() if self.mode == "add" else self.diffusion_step()
        self.step += 1
        return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True, help="training YAML (configs/train/)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("ADDC_THREADS", 2)))
    ap.add_argument("--batch", type=int, default=0, help="0: the config's batch")
    ap.add_argument("--losses", action="store_true", help="print every step's losses")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()

    with open(a.config) as f:
        cfg = yaml.safe_load(f)
    batch = a.batch or cfg.get("batch", 8)
    bench = Bench(cfg, batch)
    times = []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        m = bench.run_step()
        dt = time.perf_counter() - t0
        if i >= a.warmup:
            times.append(dt)
        if a.losses:
            print(f"# step {i + 1}: {dt:.3f} s " + " ".join(f"{k} {v:.5g}" for k, v in m.items()))
    import diffusers
    import transformers
    n = sum(p.numel() for p in bench.student.parameters())
    name = os.path.splitext(os.path.basename(a.config))[0]
    print(f"# torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}, "
          f"python {platform.python_version()}; {torch.get_num_threads()} threads "
          f"({torch.get_num_interop_threads()} inter-op)")
    print(f"# torch {name} ({bench.mode}): batch {batch}, student {n} parameters, {bench.text.how}; "
          f"median of {a.steps} steps after {a.warmup}")
    print(f"result {bench.mode} {statistics.median(times):.4f} {min(times):.4f} {max(times):.4f} {n}")


if __name__ == "__main__":
    main()
