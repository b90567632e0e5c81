"""tests/ref/make_metrics_fixture.py: reference values for losses/metrics.c, read by tests/unit/test_metrics.c.

Writes tests/ref/fixtures/metrics/fd.bin:
  a (300, 64), b (400, 64)  float32 features: correlated (x = mean + z L, z ~ N(0, 1), L a random 64 x 64 mixing
                            matrix, a different one and a shifted mean for b), so the covariances are full,
                            anisotropic and different
  mu_a, mu_b (64)           numpy means of the float32 features in float64
  cov_a, cov_b (64, 64)     numpy.cov(x, rowvar=False): the unbiased (n - 1) estimator
  fd_hi, fd_lo (1)          the Frechet distance as pytorch-fid's calculate_frechet_distance computes it
                            (scipy.linalg.sqrtm of sigma1 @ sigma2, real part of its trace), in float64 split
                            into float32 hi + lo (hi + lo carries ~48 bits)
  trsqrt_hi, trsqrt_lo (1)  trace of that square root, split the same way
  div_a_hi, div_a_lo (1)    mean pairwise L2 distance of a's rows (scipy.spatial.distance.pdist, float64)
  group_a (300)             a class label 0..4 per row of a (as float32); div_group_hi, div_group_lo (1): the mean
                            over classes of their mean pairwise distance
  logits (50, 7), labels (50), acc (1): argmax accuracy

Deterministic (numpy seed 20240611). Run: python3 tests/ref/make_metrics_fixture.py
File format: magic "ADDCFIX1", int32 count, per tensor int32 name length, name, int32 ndim, int64 dims, float32 data."""

import os
import struct

import numpy as np
import scipy.linalg
from scipy.spatial.distance import pdist

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "metrics")
F = 64


def write_fixture(name, tensors):
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, f"{name}.bin")
    with open(path, "wb") as f:
        f.write(b"ADDCFIX1")
        f.write(struct.pack("<i", len(tensors)))
        for tname, t in tensors:
            a = np.ascontiguousarray(np.asarray(t, dtype="<f4"))
            nb = tname.encode()
            f.write(struct.pack("<i", len(nb)))
            f.write(nb)
            f.write(struct.pack("<i", a.ndim))
            for d in a.shape:
                f.write(struct.pack("<q", d))
            f.write(a.tobytes())
    print(f"  {os.path.relpath(path)}: {len(tensors)} tensors")


def split(x):
    """float64 -> (hi, lo) float32 with hi + lo == x to ~48 bits"""
    hi = np.float32(x)
    lo = np.float32(x - np.float64(hi))
    return [np.array([hi]), np.array([lo])]


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid's calculate_frechet_distance (src/pytorch_fid/fid_score.py), returning the trace term too"""
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))  # pytorch-fid passes disp=False (deprecated in SciPy 1.16)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    tr_covmean = np.trace(covmean)
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean, tr_covmean


def main():
    rng = np.random.default_rng(20240611)
    la = rng.normal(size=(F, F)) / np.sqrt(F)
    lb = la + 0.5 * rng.normal(size=(F, F)) / np.sqrt(F)
    a = (rng.normal(size=F) + rng.normal(size=(300, F)) @ la).astype(np.float32)
    b = (rng.normal(size=F) * 0.5 + 1.5 * rng.normal(size=(400, F)) @ lb).astype(np.float32)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    mu_a, mu_b = a64.mean(axis=0), b64.mean(axis=0)
    cov_a, cov_b = np.cov(a64, rowvar=False), np.cov(b64, rowvar=False)
    fd, trs = frechet_distance(mu_a, cov_a, mu_b, cov_b)
    group = rng.integers(0, 5, size=300)
    per = [pdist(a64[group == g]).mean() for g in range(5)]
    logits = rng.normal(size=(50, 7)).astype(np.float32)
    labels = rng.integers(0, 7, size=50)
    acc = float((logits.argmax(axis=1) == labels).mean())
    print(f"  fd {fd:.12g}, tr sqrt {trs:.12g}, diversity {pdist(a64).mean():.12g}, by group {np.mean(per):.12g}, "
          f"accuracy {acc}")
    write_fixture("fd", [
        ("a", a), ("b", b), ("mu_a", mu_a), ("mu_b", mu_b), ("cov_a", cov_a), ("cov_b", cov_b),
        ("fd_hi", split(fd)[0]), ("fd_lo", split(fd)[1]),
        ("trsqrt_hi", split(trs)[0]), ("trsqrt_lo", split(trs)[1]),
        ("div_a_hi", split(pdist(a64).mean())[0]), ("div_a_lo", split(pdist(a64).mean())[1]),
        ("group_a", group.astype(np.float32)),
        ("div_group_hi", split(np.mean(per))[0]), ("div_group_lo", split(np.mean(per))[1]),
        ("logits", logits), ("labels", labels.astype(np.float32)), ("acc", np.array([acc])),
    ])


if __name__ == "__main__":
    main()
