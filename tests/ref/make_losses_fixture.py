"""tests/ref/make_losses_fixture.py: fixtures of the ADD objective (losses/) from diffusers and PyTorch, read by
tests/unit/test_losses.c.

Writes two files under tests/ref/fixtures/losses/:

schedule.bin, the noise schedules as diffusers builds them:
  sl/ddpm          DDPMScheduler(scaled_linear, 0.00085, 0.012, T=1000).alphas_cumprod (float32, as diffusers has it)
  sl/f64           the same formulas in float64 (torch.linspace(.., float64) ** 2, cumprod)
  zsnr/ddpm        DDPMScheduler(..., rescale_betas_zero_snr=True).alphas_cumprod (last entry exactly 0)
  zsnr/euler       EulerDiscreteScheduler(..., rescale_betas_zero_snr=True).alphas_cumprod (last entry 2^-24)
  zsnr/f64         diffusers' rescale_zero_terminal_snr on the float64 betas, cumprod in float64
  lin/ddpm, lin/f64  DDPMScheduler(linear, 1e-4, 0.02)
  conv/t           timesteps (4) of the conversion checks: 999, 749, 499, 0
  conv/x0, conv/noise, conv/sample, conv/model_output  (4, 2, 3, 2) inputs (float32 values)
  conv/add_noise   DDPMScheduler.add_noise(x0, noise, t)
  conv/velocity    DDPMScheduler.get_velocity(x0, noise, t)
  conv/x0_eps      DDPMScheduler(epsilon, clip_sample=False).step(model_output, t, sample).pred_original_sample
  conv/x0_v        the same with prediction_type v_prediction
  (all with the scaled_linear schedule; the scheduler computes in float32)

terms.bin, each loss term on fixed float32 inputs, computed by torch in float64 (B = 4 samples of (3, 4, 2)):
  in/xs, in/xt               student and teacher x0 (B, 3, 4, 2); in/t_teacher (B): 999, 450, 150, 10
  distill/{exp,sds,sds1}     c(t) * mean_e (xs - xt)^2 averaged over the batch; c = alpha; alpha/(2 sigma) sigma^2;
                             alpha/(2 sigma); "<name>/grad" = dL/dxs
  distill/sds_sum            sds with a per-sample sum over elements (and its grad)
  in/eps_u, in/eps_c, in/eps_neg   teacher noise predictions; cfg/w3 = eps_u + 3 (eps_c - eps_u)
  nfsd/target                xs - (sigma/alpha) (delta_D + 7.5 delta_C), delta_C = eps_c - eps_u, delta_D = eps_u for
                             t < 200 else eps_u - eps_neg; nfsd/loss (sds c(t), sum over elements), nfsd/grad its dL/dxs,
                             nfsd/direct = w(t) (delta_D + 7.5 delta_C) / B with w = 1 - alphabar (threestudio's NFSD
                             gradient, which nfsd/grad must equal); nfsd/target_noneg: delta_D = 0 for t >= 200
  in/real0 (B, 5), in/fake0 (B, 5), in/real1 (B, 7), in/fake1 (B, 7)   two heads' logits
  hinge/g, hinge/d, hinge/d_mean and their grads ("hinge/g/fake0", "hinge/d/real0", ...)
  in/pred, in/x0, in/eps (B, 3, 4, 2), in/t_diff (B): 999, 500, 20, 0
  diff/eps, diff/eps_snr5, diff/v_snr5   the plain diffusion loss as diffusers' train_text_to_image.py computes it
                             (compute_snr, min(snr, 5) / snr or / (snr + 1), per-sample mean, batch mean) and
                             "<name>/grad" = dL/dpred
  r1: two heads D_k(x) = leaky_relu(x W_k^T + b_k, 0.2) v_k on x_k (B, N_k, 6) (N 5 and 7), hidden 8:
      in/r1_x{k}, in/r1_W{k} (8, 6), in/r1_b{k} (8), in/r1_v{k} (8); g_k = d sum(D_k) / d x_k (create_graph),
      r1/value = sum_k (1/B) sum ||g_k||^2; r1/grad/{W,b,v}{k} its gradients
  in/pert0, in/pert1: perturbed logits; r1a/value = sum_k mean (real_k - pert_k)^2

Deterministic (fixed seed). Run: python3 tests/ref/make_losses_fixture.py
File format (reader: fixture_load in tests/test_util.c): magic "ADDCFIX1", int32 count, then per tensor int32
name length, name bytes, int32 ndim, int64 dims[ndim], float32 data; little-endian."""

import os
import struct

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, EulerDiscreteScheduler
from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr
from diffusers.training_utils import compute_snr

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "losses")


def write_fixture(name, tensors):
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, f"{name}.bin")
    with open(path, "wb") as f:
        f.write(b"ADDCFIX1")
        f.write(struct.pack("<i", len(tensors)))
        for tname, t in tensors:
            if torch.is_tensor(t):
                t = t.detach().cpu().to(torch.float64).numpy()
            a = np.ascontiguousarray(np.asarray(t, dtype="<f4"))
            nb = tname.encode()
            f.write(struct.pack("<i", len(nb)))
            f.write(nb)
            f.write(struct.pack("<i", a.ndim))
            for d in a.shape:
                f.write(struct.pack("<q", d))
            f.write(a.tobytes())
    print(f"  {os.path.relpath(path)}: {len(tensors)} tensors, {os.path.getsize(path)} bytes")


def f32(t):
    """float32 values, held in float64"""
    return t.to(torch.float32).to(torch.float64)


def sched_f64(kind, b0, b1, zsnr=False, T=1000):
    if kind == "scaled_linear":
        betas = torch.linspace(b0 ** 0.5, b1 ** 0.5, T, dtype=torch.float64) ** 2
    else:
        betas = torch.linspace(b0, b1, T, dtype=torch.float64)
    if zsnr:
        betas = rescale_zero_terminal_snr(betas)
    return torch.cumprod(1.0 - betas, dim=0)


def make_schedule():
    sl = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000)
    out = [
        ("sl/ddpm", DDPMScheduler(**sl).alphas_cumprod),
        ("sl/f64", sched_f64("scaled_linear", 0.00085, 0.012)),
        ("zsnr/ddpm", DDPMScheduler(**sl, rescale_betas_zero_snr=True).alphas_cumprod),
        ("zsnr/euler", EulerDiscreteScheduler(**sl, rescale_betas_zero_snr=True).alphas_cumprod),
        ("zsnr/f64", sched_f64("scaled_linear", 0.00085, 0.012, zsnr=True)),
        ("lin/ddpm", DDPMScheduler(beta_schedule="linear", beta_start=1e-4, beta_end=0.02).alphas_cumprod),
        ("lin/f64", sched_f64("linear", 1e-4, 0.02)),
    ]
    a = out[1][1]
    print(f"  alphabar_999 = {a[999].item():.10g}, alphabar_499 = {a[499].item():.10g} (float64)")

    g = torch.Generator().manual_seed(7)
    t = torch.tensor([999, 749, 499, 0])
    x0, noise, sample, mo = (torch.randn(4, 2, 3, 2, generator=g) for _ in range(4))
    ddpm = DDPMScheduler(**sl)
    x0_eps, x0_v = [], []
    for pt, dst in (("epsilon", x0_eps), ("v_prediction", x0_v)):
        s = DDPMScheduler(**sl, prediction_type=pt, clip_sample=False)
        for b in range(4):
            dst.append(s.step(mo[b:b + 1], int(t[b]), sample[b:b + 1]).pred_original_sample)
    out += [("conv/t", t.float()), ("conv/x0", x0), ("conv/noise", noise), ("conv/sample", sample),
            ("conv/model_output", mo), ("conv/add_noise", ddpm.add_noise(x0, noise, t)),
            ("conv/velocity", ddpm.get_velocity(x0, noise, t)), ("conv/x0_eps", torch.cat(x0_eps)),
            ("conv/x0_v", torch.cat(x0_v))]
    write_fixture("schedule", out)


def make_terms():
    g = torch.Generator().manual_seed(11)
    B, shp = 4, (3, 4, 2)
    ab = sched_f64("scaled_linear", 0.00085, 0.012)
    alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
    bc = (B, 1, 1, 1)

    def rnd(*s):
        return f32(torch.randn(*s, generator=g, dtype=torch.float64))

    out = []
    xs, xt = rnd(B, *shp), rnd(B, *shp)
    tt = torch.tensor([999, 450, 150, 10])
    out += [("in/xs", xs), ("in/xt", xt), ("in/t_teacher", tt.double())]
    a, s = alpha[tt].view(bc), sigma[tt].view(bc)
    for name, cw, red in (("exp", a, "mean"), ("sds", a / (2 * s) * s * s, "mean"), ("sds1", a / (2 * s), "mean"),
                          ("sds_sum", a / (2 * s) * s * s, "sum")):
        x = xs.clone().requires_grad_(True)
        d = (x - xt) ** 2
        per = d.mean(dim=(1, 2, 3)) if red == "mean" else d.sum(dim=(1, 2, 3))
        loss = (cw.view(B) * per).mean()
        loss.backward()
        out += [(f"distill/{name}", loss), (f"distill/{name}/grad", x.grad)]

    eu, ec, en = rnd(B, *shp), rnd(B, *shp), rnd(B, *shp)
    out += [("in/eps_u", eu), ("in/eps_c", ec), ("in/eps_neg", en), ("cfg/w3", eu + 3 * (ec - eu))]
    scale = 7.5
    low = (tt < 200).double().view(bc)
    delta_c = ec - eu
    delta_d = low * eu + (1 - low) * (eu - en)
    target = xs - s / a * (delta_d + scale * delta_c)
    target_noneg = xs - s / a * (low * eu + scale * delta_c)
    x = xs.clone().requires_grad_(True)
    c_sds = (a / (2 * s) * s * s).view(B)
    loss = (c_sds * ((x - target) ** 2).sum(dim=(1, 2, 3))).mean()
    loss.backward()
    w = (1 - ab[tt]).view(bc)
    out += [("nfsd/target", target), ("nfsd/target_noneg", target_noneg), ("nfsd/loss", loss), ("nfsd/grad", x.grad),
            ("nfsd/direct", w * (delta_d + scale * delta_c) / B)]

    logits = {"real0": rnd(B, 5) * 2, "fake0": rnd(B, 5) * 2, "real1": rnd(B, 7) * 2, "fake1": rnd(B, 7) * 2}
    for k, v in logits.items():
        out.append((f"in/{k}", v))
    lg = {k: v.clone().requires_grad_(True) for k, v in logits.items()}
    loss_g = -(lg["fake0"].mean() + lg["fake1"].mean())
    loss_g.backward()
    out += [("hinge/g", loss_g), ("hinge/g/fake0", lg["fake0"].grad), ("hinge/g/fake1", lg["fake1"].grad)]
    for name, k in (("d", 1.0), ("d_mean", 0.5)):
        lg = {kk: v.clone().requires_grad_(True) for kk, v in logits.items()}
        loss_d = k * sum(F.relu(1 - lg[f"real{h}"]).mean() + F.relu(1 + lg[f"fake{h}"]).mean() for h in range(2))
        loss_d.backward()
        out.append((f"hinge/{name}", loss_d))
        for kk in lg:
            out.append((f"hinge/{name}/{kk}", lg[kk].grad))

    pred, x0, eps = rnd(B, *shp), rnd(B, *shp), rnd(B, *shp)
    td = torch.tensor([999, 500, 20, 0])
    out += [("in/pred", pred), ("in/x0", x0), ("in/eps", eps), ("in/t_diff", td.double())]
    sch = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    sch.alphas_cumprod = ab  # the float64 table: compute_snr reads it
    snr = compute_snr(sch, td)
    ad, sd = alpha[td].view(bc), sigma[td].view(bc)
    for name, target, wts in (("eps", eps, torch.ones(B, dtype=torch.float64)),
                              ("eps_snr5", eps, torch.minimum(snr, torch.full_like(snr, 5.0)) / snr),
                              ("v_snr5", ad * eps - sd * x0, torch.minimum(snr, torch.full_like(snr, 5.0)) / (snr + 1))):
        p = pred.clone().requires_grad_(True)
        per = F.mse_loss(p, target, reduction="none").mean(dim=(1, 2, 3))
        loss = (per * wts).mean()
        loss.backward()
        out += [(f"diff/{name}", loss), (f"diff/{name}/grad", p.grad)]

    C, Hd = 6, 8
    r1 = 0
    params = []
    for k, N in enumerate((5, 7)):
        xk = rnd(B, N, C).requires_grad_(True)
        W = (rnd(Hd, C) / C ** 0.5).requires_grad_(True)
        bk = (rnd(Hd) * 0.2).requires_grad_(True)
        v = (rnd(Hd) / Hd ** 0.5).requires_grad_(True)
        out += [(f"in/r1_x{k}", xk), (f"in/r1_W{k}", W), (f"in/r1_b{k}", bk), (f"in/r1_v{k}", v)]
        logit = F.leaky_relu(xk @ W.T + bk, 0.2) @ v
        (gk,) = torch.autograd.grad(logit.sum(), xk, create_graph=True)
        r1 = r1 + gk.square().sum() / B
        params.append((k, W, bk, v))
    r1.backward()
    out.append(("r1/value", r1))
    for k, W, bk, v in params:
        out += [(f"r1/grad/W{k}", W.grad), (f"r1/grad/b{k}", bk.grad), (f"r1/grad/v{k}", v.grad)]
    pert = {0: rnd(B, 5) * 2, 1: rnd(B, 7) * 2}
    out += [("in/pert0", pert[0]), ("in/pert1", pert[1]),
            ("r1a/value", sum(((logits[f"real{h}"] - pert[h]) ** 2).mean() for h in range(2)))]
    print(f"  R1 = {r1.item():.6g}")
    write_fixture("terms", out)


if __name__ == "__main__":
    make_schedule()
    make_terms()
