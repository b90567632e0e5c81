"""tests/ref/make_samplers_fixture.py: the samplers of losses/samplers.c run by diffusers' schedulers on a toy
analytic denoiser, read by tests/unit/test_samplers.c.

Writes tests/ref/fixtures/samplers/steps.bin:
  ts/N              the "trailing" timesteps diffusers computes for N inference steps (DDIMScheduler; Euler and
                    Euler ancestral give the same integers as float32), N in 1 2 3 4 6 7 8 16 40 50 1000
  noise/k           (2, 4, 2, 3) float32 N(0, 1) draws, k = 0 .. 50: k = 0 the initial latent, k = i + 1 the noise of
                    step i (the C test passes these as SamplerNoise.given)
  <case>/x/i        the scheduler's prev_sample after step i
  <case>/x0/i       its pred_original_sample at step i
  (every step for N <= 4; for N = 50 steps 0, 1, 24, 48 and 49)

The toy denoiser (both sides compute it in float32): for the model input z (2, 24 elements per sample) at timestep t,
  out[b, e] = 0.1 z[b, e] + float32(1e-4 t + 0.05 cos(0.37 e))
read as epsilon or v. Cases <sampler>_<eps|v>_<N>, sampler in add, euler_a, ddim, euler, N in 1, 2, 4, 50, with
the SD/SDXL schedule (scaled_linear 0.00085..0.012, T 1000), float32 as diffusers keeps it:
  add      the ADD sampler: x0 = DDIMScheduler.step(...).pred_original_sample at t_i, then
           DDPMScheduler.add_noise(x0, noise/(i+1), t_{i+1}); the last step returns x0. Starts from noise/0.
  euler_a  EulerAncestralDiscreteScheduler(trailing): latents noise/0 * init_noise_sigma, model input
           scale_model_input(x, t), step with randn_tensor replaced by noise/(i+1)
  ddim     DDIMScheduler(trailing, clip_sample False, set_alpha_to_one True), eta 0; ddim1 the same with
           set_alpha_to_one False (final_alpha_cumprod = alphas_cumprod[0])
  euler    EulerDiscreteScheduler(trailing)
plus zero terminal SNR v-prediction cases with rescale_betas_zero_snr (DDIM: alphabar_999 = 0 exactly;
Euler ancestral: 2^-24): zddim_v_4, zeuler_a_v_4, zadd_v_4 (DDPM's table, alphabar_999 = 0), and
zeuler_a_v_4_f64: Euler ancestral's step formulas in float64 on diffusers' float32 sigmas (at sigma 4096 diffusers'
float32 x + d dt keeps only ~5e-4 of x0's digits: an ulp of 4096 x).

Deterministic. Run: python3 tests/ref/make_samplers_fixture.py
File format: magic "ADDCFIX1", int32 count, per tensor int32 name length, name, int32 ndim, int64 dims, float32 data."""

import os
import struct

import numpy as np
import torch
import diffusers.schedulers.scheduling_euler_ancestral_discrete as ea_mod
from diffusers import DDIMScheduler, DDPMScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "samplers")
SHAPE = (2, 4, 2, 3)
COMMON = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def write_fixture(name, tensors):
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, f"{name}.bin")
    with open(path, "wb") as f:
        f.write(b"ADDCFIX1")
        f.write(struct.pack("<i", len(tensors)))
        for tname, t in tensors:
            if torch.is_tensor(t):
                t = t.detach().cpu().numpy()
            a = np.ascontiguousarray(np.asarray(t, dtype="<f4"))
            nb = tname.encode()
            f.write(struct.pack("<i", len(nb)))
            f.write(nb)
            f.write(struct.pack("<i", a.ndim))
            for d in a.shape:
                f.write(struct.pack("<q", d))
            f.write(a.tobytes())
    print(f"  {os.path.relpath(path)}: {len(tensors)} tensors, {os.path.getsize(path)} bytes")


E = int(np.prod(SHAPE[1:]))
PATTERN = np.cos(0.37 * np.arange(E, dtype=np.float64)) * 0.05


def toy(z, t):
    bias = torch.from_numpy((1e-4 * float(t) + PATTERN).astype(np.float32)).reshape(SHAPE[1:])
    return z * 0.1 + bias


def kept(i, n):
    return n <= 4 or i in (0, 1, 24, 48, 49)


def run_add(noise, n, pred, zsnr):
    ddim = DDIMScheduler(**COMMON, prediction_type=pred, clip_sample=False, timestep_spacing="trailing",
                         rescale_betas_zero_snr=zsnr)
    ddpm = DDPMScheduler(**COMMON, prediction_type=pred, clip_sample=False, rescale_betas_zero_snr=zsnr)
    ddim.set_timesteps(n)
    ts = ddim.timesteps
    z = noise[0].clone()
    out = []
    for i, t in enumerate(ts):
        x0 = ddim.step(toy(z, t), t, z).pred_original_sample
        z = x0 if i == n - 1 else ddpm.add_noise(x0, noise[i + 1], ts[i + 1].reshape(1))
        out.append((z, x0))
    return out


def run_euler(noise, n, pred, ancestral, zsnr):
    cls = EulerAncestralDiscreteScheduler if ancestral else EulerDiscreteScheduler
    s = cls(**COMMON, prediction_type=pred, timestep_spacing="trailing", rescale_betas_zero_snr=zsnr)
    s.set_timesteps(n)
    x = noise[0] * s.init_noise_sigma
    out = []
    for i, t in enumerate(s.timesteps):
        ea_mod.randn_tensor = lambda *a, _k=i + 1, **kw: noise[_k].clone()
        r = s.step(toy(s.scale_model_input(x, t), t), t, x)
        x = r.prev_sample
        out.append((x, r.pred_original_sample))
    return out


def run_euler_a_f64(noise, n):
    """zero terminal SNR, v: EulerAncestralDiscreteScheduler.step's formulas in float64 on its float32 sigmas (at
    sigma 4096 its float32 x + d dt loses digits of x0: an ulp of 4096 x is 5e-4)"""
    s = EulerAncestralDiscreteScheduler(**COMMON, prediction_type="v_prediction", timestep_spacing="trailing",
                                        rescale_betas_zero_snr=True)
    s.set_timesteps(n)
    sig = s.sigmas.to(torch.float64)
    x = noise[0].to(torch.float64) * sig.max()
    pattern = torch.from_numpy(PATTERN).reshape(SHAPE[1:])
    out = []
    for i, t in enumerate(s.timesteps):
        sg, to = sig[i], sig[i + 1]
        mo = x / (sg ** 2 + 1) ** 0.5 * 0.1 + (1e-4 * float(t) + pattern)
        x0 = mo * (-sg / (sg ** 2 + 1) ** 0.5) + x / (sg ** 2 + 1)
        up = (to ** 2 * (sg ** 2 - to ** 2) / sg ** 2) ** 0.5
        down = (to ** 2 - up ** 2) ** 0.5
        x = x + (x - x0) / sg * (down - sg) + noise[i + 1].to(torch.float64) * up
        out.append((x, x0))
    return out


def run_ddim(noise, n, pred, alpha_one, zsnr):
    s = DDIMScheduler(**COMMON, prediction_type=pred, clip_sample=False, timestep_spacing="trailing",
                      set_alpha_to_one=alpha_one, rescale_betas_zero_snr=zsnr)
    s.set_timesteps(n)
    x = noise[0] * s.init_noise_sigma
    out = []
    for t in s.timesteps:
        r = s.step(toy(x, t), t, x, eta=0.0)
        x = r.prev_sample
        out.append((x, r.pred_original_sample))
    return out


def main():
    gen = torch.Generator().manual_seed(20240605)
    noise = [torch.randn(SHAPE, generator=gen, dtype=torch.float32) for _ in range(51)]
    tensors = []
    for n in (1, 2, 3, 4, 6, 7, 8, 16, 40, 50, 1000):
        s = DDIMScheduler(**COMMON, timestep_spacing="trailing")
        s.set_timesteps(n)
        e = EulerAncestralDiscreteScheduler(**COMMON, timestep_spacing="trailing")
        e.set_timesteps(n)
        assert torch.equal(s.timesteps.to(torch.float32), e.timesteps), n
        tensors.append((f"ts/{n}", s.timesteps.to(torch.float64)))
    for k, z in enumerate(noise):
        tensors.append((f"noise/{k}", z))
    cases = []
    for pname, pred in (("eps", "epsilon"), ("v", "v_prediction")):
        for n in (1, 2, 4, 50):
            cases.append((f"add_{pname}_{n}", run_add(noise, n, pred, False), n))
            cases.append((f"euler_a_{pname}_{n}", run_euler(noise, n, pred, True, False), n))
            cases.append((f"ddim_{pname}_{n}", run_ddim(noise, n, pred, True, False), n))
            cases.append((f"ddim1_{pname}_{n}", run_ddim(noise, n, pred, False, False), n))
            cases.append((f"euler_{pname}_{n}", run_euler(noise, n, pred, False, False), n))
    cases.append(("zddim_v_4", run_ddim(noise, 4, "v_prediction", True, True), 4))
    cases.append(("zeuler_a_v_4", run_euler(noise, 4, "v_prediction", True, True), 4))
    cases.append(("zadd_v_4", run_add(noise, 4, "v_prediction", True), 4))
    cases.append(("zeuler_a_v_4_f64", run_euler_a_f64(noise, 4), 4))
    for name, steps, n in cases:
        for i, (x, x0) in enumerate(steps):
            if kept(i, n):
                tensors.append((f"{name}/x/{i}", x))
                tensors.append((f"{name}/x0/{i}", x0))
    write_fixture("steps", tensors)


if __name__ == "__main__":
    main()
