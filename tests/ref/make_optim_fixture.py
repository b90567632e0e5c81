"""tests/ref/make_optim_fixture.py: torch.optim.AdamW reference steps for tests/unit/test_optim.c.

Writes tests/ref/fixtures/adamw.bin. For each configuration <k> (a name below), torch.optim.AdamW (CPU, float32,
the default for-loop implementation) takes STEPS steps on one float32 parameter of N elements with the stored
gradients. Stored: "<k>/cfg" = [lr, beta1, beta2, eps, weight_decay] (each exactly a float32 value, and torch is
given those same values as Python floats, so the C test uses identical doubles), "<k>/p0" the initial parameter,
"<k>/g<t>" the gradient of step t = 1..STEPS, and "<k>/p", "<k>/m", "<k>/v" after the last step (parameter,
exp_avg, exp_avg_sq). N is not a multiple of the vector width, so torch's scalar tail loop is exercised too.
Run: python3 tests/ref/make_optim_fixture.py (deterministic)."""

import numpy as np
import torch

from make_r1_fixture import write_fixture

N, STEPS = 1003, 10
CONFIGS = {  # name: (lr, beta1, beta2, eps, weight_decay)
    "d_beta1_0": (1e-3, 0.0, 0.99, 1e-8, 0.01),  # the discriminator's setting
    "g_beta1_0.9": (1e-2, 0.9, 0.999, 1e-8, 0.05),
    "no_wd": (3e-3, 0.5, 0.9, 1e-6, 0.0),
}


def as_f32(x):
    return float(np.float32(x))


def make_adamw():
    torch.manual_seed(77)
    out = []
    for name, cfg in CONFIGS.items():
        lr, b1, b2, eps, wd = (as_f32(v) for v in cfg)
        p = torch.nn.Parameter(torch.randn(N, dtype=torch.float32))
        out += [(f"{name}/cfg", np.array([lr, b1, b2, eps, wd], dtype=np.float32)), (f"{name}/p0", p.detach().clone())]
        opt = torch.optim.AdamW([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
        for t in range(1, STEPS + 1):
            g = torch.randn(N, dtype=torch.float32) * (0.1 * t)
            g[::97] = 0.0
            p.grad = g.clone()
            opt.step()
            out.append((f"{name}/g{t}", g))
        st = opt.state[p]
        out += [(f"{name}/p", p.detach().clone()), (f"{name}/m", st["exp_avg"]), (f"{name}/v", st["exp_avg_sq"])]
    write_fixture("adamw", out)


if __name__ == "__main__":
    make_adamw()
