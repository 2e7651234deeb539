#!/usr/bin/env python3
"""SSIM reference fixture for `adain eval` (tests/fixtures/ssim.safetensors).

Set-up (once): `.venv/bin/pip install scikit-image` (the .venv of scripts/fixtures.sh,
which has torch, numpy and safetensors). Run: `.venv/bin/python scripts/ssim_reference.py`
(chdirs to the repository root). Deterministic (numpy seeds), CPU only.

Contract (what the Rust test `eval::tests::ssim_matches_skimage` reads):
- `a{i}`, `b{i}`: float32 [1,3,H,W] RGB images with values k/255 (as an 8-bit image
  loads); `ssim{i}`: float64 [1], the reference SSIM of their luminance.
- Luminance: Rec. 601, Y = 0.299 R + 0.587 G + 0.114 B (adain::color::luminance),
  computed here in float64.
- SSIM: Wang et al. 2004 as scikit-image `structural_similarity(y_a, y_b,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)`:
  11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, mean of the SSIM map over
  the positions whose window lies inside the image (no downsampling).
- The same value is recomputed with an independent torch implementation (valid 2-D
  convolution with the 11x11 window) and the two must agree to 1e-10.
"""
import os

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from skimage.metrics import structural_similarity

os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
LUMA = np.array([0.299, 0.587, 0.114])


def luma(img):  # [3,H,W] -> [H,W]
    return np.tensordot(LUMA, img, axes=1)


def ssim_torch(x, y):
    x = torch.from_numpy(x)[None, None]
    y = torch.from_numpy(y)[None, None]
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    g = g / g.sum()
    w = (g[:, None] * g[None, :])[None, None]
    f = lambda t: F.conv2d(t, w)  # noqa: E731  (valid)
    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean().item()


def q(img):  # to 8-bit levels, as a saved image
    return np.round(np.clip(img, 0, 1) * 255) / 255


def cases():
    rng = np.random.default_rng(5)
    # 0: a smooth random picture and a noisy, darker copy (32x40)
    h, w = 32, 40
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([0.5 + 0.4 * np.sin(xx / 5 + c) * np.cos(yy / 7 - c) for c in range(3)])
    a = a + 0.05 * rng.standard_normal(a.shape)
    b = 0.8 * a + 0.1 * rng.standard_normal(a.shape)
    yield q(a), q(b)
    # 1: odd, non-square size (29x37): two unrelated textures
    a = rng.random((3, 29, 37))
    b = np.stack([np.linspace(0, 1, 37)[None, :].repeat(29, 0) * (c + 1) / 3 for c in range(3)])
    b = b + 0.2 * rng.random(b.shape)
    yield q(a), q(b)
    # 2: a picture and a shifted, contrast-stretched copy (48x48)
    yy, xx = np.mgrid[0:48, 0:48]
    a = np.stack([((xx // 6 + yy // 6 + c) % 3) / 2 for c in range(3)]) * 0.6 + 0.2
    b = np.roll(a, 2, axis=2) * 1.3 - 0.1
    yield q(a), q(b)


out = {}
for i, (a, b) in enumerate(cases()):
    ya, yb = luma(a), luma(b)
    ref = structural_similarity(
        ya, yb, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
    )
    tv = ssim_torch(ya, yb)
    assert abs(ref - tv) < 1e-10, (i, ref, tv)
    print(f"case {i}: {a.shape[1]}x{a.shape[2]} ssim {ref:.10f} (torch {tv:.10f})")
    out[f"a{i}"] = torch.from_numpy(a[None].astype(np.float32))
    out[f"b{i}"] = torch.from_numpy(b[None].astype(np.float32))
    out[f"ssim{i}"] = torch.tensor([ref], dtype=torch.float64)
save_file(out, "tests/fixtures/ssim.safetensors")
print("wrote tests/fixtures/ssim.safetensors")
