#!/usr/bin/env python3
"""Golden test fixtures for the Rust AdaIN port (PyTorch reference).

Python is used ONLY to generate these fixtures; the Rust crate never runs it.
Rerun with `bash scripts/fixtures.sh` (creates .venv if missing, then runs this
script), or `.venv/bin/python scripts/make_fixtures.py` from anywhere (the script
chdirs to the repository root). Output is deterministic: torch.manual_seed +
per-image torch.Generator seeds, CPU only, torch.set_num_threads(2), float32
everywhere, torch.backends left at their defaults.

This docstring is the CONTRACT the Rust tests rely on.

Encoder weights
---------------
`$ADAIN_WEIGHTS/vgg19-relu4_1.safetensors`, else `weights/vgg19-relu4_1.safetensors`,
else `../shared/weights/vgg19-relu4_1.safetensors` (relative to repo root). Keys
`0,2,5,9,12,16,19,22,25,29` (.weight/.bias), the indices of naoto0804/pytorch-AdaIN
`net.vgg`. Nothing is copied from that file into the repo.

Reference architecture (naoto0804/pytorch-AdaIN, nn.Sequential indices)
----------------------------------------------------------------------
Encoder `vgg[:31]`: 0 Conv(3,3,1x1); then per 3x3 conv: ReflectionPad2d(1), conv
(no own padding), ReLU; MaxPool2d(2,2,0,ceil_mode=True) at indices 7, 14, 27.
Convs at 2,5 | 9,12 | 16,19,22,25 | 29. Features = outputs after index 3 (relu1_1),
10 (relu2_1), 17 (relu3_1), 30 (relu4_1). Input RGB in [0,1], NCHW.
Decoder: 0 pad; 1 Conv(512,256); 2 ReLU; 3 Upsample x2 nearest; 4 pad; 5 Conv(256,256);
6 ReLU; 7 pad; 8 Conv(256,256); 9 ReLU; 10 pad; 11 Conv(256,256); 12 ReLU; 13 pad;
14 Conv(256,128); 15 ReLU; 16 Upsample; 17 pad; 18 Conv(128,128); 19 ReLU; 20 pad;
21 Conv(128,64); 22 ReLU; 23 Upsample; 24 pad; 25 Conv(64,64); 26 ReLU; 27 pad;
28 Conv(64,3). All convs 3x3, pads ReflectionPad2d(1). No output activation.
calc_mean_std(feat, eps=1e-5): per (N,C) mean over H*W; std = sqrt(unbiased var + eps).
adain(c, s) = (c - mu_c) / sigma_c * sigma_s + mu_s.

Formula decoder (deterministic weights; the Rust tests compute the same formula)
--------------------------------------------------------------------------------
Conv keys j = 0..8 <-> [1,5,8,11,14,18,21,25,28]. Weight [O,I,3,3], fan_in = I*9,
flat row-major index i: w[i] = sin(0.37*i + 1e-3*i*i + 1.1*j) * sqrt(3.0/fan_in), computed
left to right in float64, cast to float32. Bias b[o] = 0.01*cos(0.5*o + j) (f64 -> f32), except j=8
(key 28): b[o] = 0.5 + 0.01*cos(0.5*o + 8). Then (parity fixture only) the last
layer's WEIGHT (not bias) is multiplied in float32 by the float32 scalar stored as
`decoder_gain` [1] in parity.safetensors (chosen, rounded to 3 significant
digits, so that std(out.alpha1) ~= 0.25). The training fixture uses the same gain
(stored there too as `decoder_gain`).
Precision: the quadratic phase term (DEC_QUAD) keeps the formula decoder well
conditioned: a float64 evaluation of every output agrees with float32 to ~2e-6 (a pure
sinusoid with 0.37*9 ~ pi cancels 100-200x per layer and made outputs noisy to 1e-2).

tests/fixtures/parity.safetensors (float32)
-------------------------------------------
Inputs: `content` [1,3,32,40], `style1` [1,3,40,36], `style2` [1,3,44,28] (smooth
colourful images in [0,1]); `mask0` [32,40] 0/1; `decoder_gain` [1].
stylize(x, s, alpha): c = relu4_1(x); t = adain(c, relu4_1(s)); t = alpha*t + (1-alpha)*c;
out = decoder(t) (raw, NOT clamped).
- `enc.content.relu1_1` [1,64,32,40], `.relu2_1` [1,128,16,20], `.relu3_1` [1,256,8,10],
  `.relu4_1` [1,512,4,5]; `enc.style2.relu3_1` [1,256,11,7], `enc.style2.relu4_1`
  [1,512,6,4] (ceil-mode pooling).
- `adain.t` = adain(relu4_1(content), relu4_1(style1)).
- `out.alpha1`, `out.alpha05`, `out.alpha0` = stylize(content, style1, 1.0 / 0.5 / 0.0).
- `out.blend`: weights [1,3] -> [0.25,0.75] for (style1, style2), alpha 0.8:
  t = sum_i w_i * adain(c, relu4_1(style_i)); t = 0.8*t + 0.2*c; decoder(t).
- `coral.style1` [1,3,40,36] = reference coral(style1[0], content[0]) (function.py:
  3xHW flatten, per-channel mean and unbiased std, normalise, cov = f f^T + eye(3),
  matrix sqrt U diag(sqrt D) V^T via torch.svd, sqrt(cov_t) @ inverse(sqrt(cov_s)) @ f_s,
  then * target_std + target_mean). `out.coral` = stylize(content, coral.style1, 1.0).
- `out.luminance`: Y(x) = 0.299R + 0.587G + 0.114B -> [1,1,H,W]; Yc = Y(content),
  Ys = Y(style1); Ys2 = (Ys - mean(Ys)) / std(Ys) * std(Yc) + mean(Yc) (unbiased std
  over all pixels); o = stylize(Yc.repeat(1,3,1,1), Ys2.repeat(1,3,1,1), 1.0);
  out.luminance = content + (Y(o) - Yc) (broadcast over channels, not clamped).
- `out.mask`: m0 = F.interpolate(mask0[None,None], size=(4,5), mode='nearest') >= 0.5
  (stored as `mask.m0_feat` [4,5] float 0/1), m1 = 1 - m0. Region r (m0 -> style1,
  m1 -> style2): per-channel mean and std of c = relu4_1(content) over the positions of
  that region only (unbiased var + 1e-5); style stats over the whole style map;
  t_r = (c - mu_cr)/sigma_cr*sigma_s + mu_s; t = m0*t_0 + m1*t_1 (alpha 1); decoder(t).

tests/fixtures/pth/ (for `adain convert`)
-----------------------------------------
- `decoder_f16_zip.pth`: OrderedDict of the 18 decoder keys (`1.weight`, `1.bias`,
  ..., `28.bias`), reference shapes, float16, values ((arange(n) % 251) - 125) / 256
  reshaped (exact in f16); torch.save zip format.
- `small_zip.pth`: {'a.weight': f32 [4,3] = arange(12)/10 - 0.5, 'b.bias': f64 [5] =
  arange(5)*0.25, 'c.half': bf16 [2,2] = [[1,2],[3,-0.5]]}, zip format.
- `small_legacy.pth`: same dict, `_use_new_zipfile_serialization=False`; storage keys
  renamed "0","1","2" afterwards so the bytes are reproducible (canonicalize_legacy).
- `wrapped_zip.pth`: {'iter': 7, 'state_dict': {'module.a.weight', 'module.b.bias'}
  (values as in small), 'optimizer': {'lr': 1e-4}}, zip format.
- `expected.json`: per file: format, tensors [{key (as in the pickled dict), path
  (dotted path from the pickle root, e.g. "state_dict.module.a.weight"), name (key with
  a leading "module." stripped), dtype, shape, first4 (first 4 values, upcast to f32)}].

tests/fixtures/train_parity.safetensors (float32)
-------------------------------------------------
Reference Net.forward + train.py step: style_feats = [relu1_1..relu4_1](style);
t = adain(relu4_1(content), style_feats[-1]) (constant, no grad); g = decoder(t);
loss_c = mse(relu4_1(g), t); loss_s = sum_k mse(mean(g_k), mean(s_k)) + mse(std(g_k), std(s_k))
(calc_mean_std, eps 1e-5); loss = 1.0*loss_c + 10.0*loss_s. Encoder frozen. Decoder
starts as the formula decoder with the parity fixture's decoder_gain. torch.optim.Adam(lr=1e-6 (TRAIN_LR, see make_train), betas
(0.9,0.999), eps 1e-8); before iteration i (0-based) lr = 1e-4 / (1 + 5e-5*i). 3 steps.
Stored: `batch{k}.content`, `batch{k}.style` [2,3,32,32] (k = 0,1,2); `loss_c` [3],
`loss_s` [3] (UNWEIGHTED values as returned by Net.forward, before the update of that
step), `loss` [3] (= loss_c + 10*loss_s), `lr` [3]. For each decoder key K (e.g.
`1.weight`), with n = numel, stride = max(1, n // 256), idx = arange(0, n, stride) of
the flattened tensor: `init.K`, `final.K` (after 3 steps), `grad0.K` (gradient of the
total loss at step 0).
"""

import json
import math
import os
import sys
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.chdir(REPO)

torch.manual_seed(0)
torch.set_num_threads(2)
torch.set_default_dtype(torch.float32)

FIX = os.path.join("tests", "fixtures")
PTH = os.path.join(FIX, "pth")

DEC_KEYS = [1, 5, 8, 11, 14, 18, 21, 25, 28]
ENC_KEYS = [0, 2, 5, 9, 12, 16, 19, 22, 25, 29]
# Quadratic phase term of the formula decoder (`0.37*i + DEC_QUAD*i*i + 1.1*j`, left to
# right in f64): without it the weights are ill-conditioned. `adain::testing` matches it.
DEC_QUAD = 1e-3


# --------------------------------------------------------------------------- nets
def pad():
    return nn.ReflectionPad2d((1, 1, 1, 1))


def make_vgg():
    return nn.Sequential(
        nn.Conv2d(3, 3, (1, 1)),
        pad(), nn.Conv2d(3, 64, (3, 3)), nn.ReLU(),  # 3 relu1_1
        pad(), nn.Conv2d(64, 64, (3, 3)), nn.ReLU(),
        nn.MaxPool2d((2, 2), (2, 2), (0, 0), ceil_mode=True),
        pad(), nn.Conv2d(64, 128, (3, 3)), nn.ReLU(),  # 10 relu2_1
        pad(), nn.Conv2d(128, 128, (3, 3)), nn.ReLU(),
        nn.MaxPool2d((2, 2), (2, 2), (0, 0), ceil_mode=True),
        pad(), nn.Conv2d(128, 256, (3, 3)), nn.ReLU(),  # 17 relu3_1
        pad(), nn.Conv2d(256, 256, (3, 3)), nn.ReLU(),
        pad(), nn.Conv2d(256, 256, (3, 3)), nn.ReLU(),
        pad(), nn.Conv2d(256, 256, (3, 3)), nn.ReLU(),
        nn.MaxPool2d((2, 2), (2, 2), (0, 0), ceil_mode=True),
        pad(), nn.Conv2d(256, 512, (3, 3)), nn.ReLU(),  # 30 relu4_1
    )


def make_decoder():
    return nn.Sequential(
        pad(), nn.Conv2d(512, 256, (3, 3)), nn.ReLU(),
        nn.Upsample(scale_factor=2, mode="nearest"),
        pad(), nn.Conv2d(256, 256, (3, 3)), nn.ReLU(),
        pad(), nn.Conv2d(256, 256, (3, 3)), nn.ReLU(),
        pad(), nn.Conv2d(256, 256, (3, 3)), nn.ReLU(),
        pad(), nn.Conv2d(256, 128, (3, 3)), nn.ReLU(),
        nn.Upsample(scale_factor=2, mode="nearest"),
        pad(), nn.Conv2d(128, 128, (3, 3)), nn.ReLU(),
        pad(), nn.Conv2d(128, 64, (3, 3)), nn.ReLU(),
        nn.Upsample(scale_factor=2, mode="nearest"),
        pad(), nn.Conv2d(64, 64, (3, 3)), nn.ReLU(),
        pad(), nn.Conv2d(64, 3, (3, 3)),
    )


def find_weights():
    cands = []
    env = os.environ.get("ADAIN_WEIGHTS")
    if env:
        cands.append(os.path.join(env, "vgg19-relu4_1.safetensors"))
    cands.append(os.path.join("weights", "vgg19-relu4_1.safetensors"))
    cands.append(os.path.join("..", "shared", "weights", "vgg19-relu4_1.safetensors"))
    for c in cands:
        if os.path.isfile(c):
            return c
    sys.exit("vgg19-relu4_1.safetensors not found; tried: " + ", ".join(cands))


def load_vgg():
    path = find_weights()
    print(f"encoder weights: {path}")
    sd = load_file(path)
    vgg = make_vgg()
    expect = {f"{k}.{p}" for k in ENC_KEYS for p in ("weight", "bias")}
    assert set(sd.keys()) == expect, sorted(sd.keys())
    vgg.load_state_dict({k: v.to(torch.float32) for k, v in sd.items()})
    vgg.eval()
    for p in vgg.parameters():
        p.requires_grad_(False)
    return vgg


def formula_decoder_state(gain=1.0):
    """Formula decoder weights (see module docstring)."""
    shapes = {k: tuple(v.shape) for k, v in make_decoder().state_dict().items()}
    sd = OrderedDict()
    for j, key in enumerate(DEC_KEYS):
        o, i_ch, kh, kw = shapes[f"{key}.weight"]
        n = o * i_ch * kh * kw
        fan_in = i_ch * kh * kw
        idx = np.arange(n, dtype=np.float64)
        # DEC_QUAD == 0.0 gives exactly the contract formula (adding +0.0 is exact).
        w = (np.sin(0.37 * idx + DEC_QUAD * idx * idx + 1.1 * j)
             * math.sqrt(3.0 / fan_in)).astype(np.float32)
        ob = np.arange(o, dtype=np.float64)
        b = 0.01 * np.cos(0.5 * ob + j)
        if j == 8:
            b = 0.5 + b
        b = b.astype(np.float32)
        wt = torch.from_numpy(w).reshape(o, i_ch, kh, kw)
        if j == 8:
            wt = wt * torch.tensor(gain, dtype=torch.float32)  # float32 multiply
        sd[f"{key}.weight"] = wt.contiguous()
        sd[f"{key}.bias"] = torch.from_numpy(b)
    return sd


def load_decoder(gain):
    dec = make_decoder()
    dec.load_state_dict(formula_decoder_state(gain))
    return dec


# ---------------------------------------------------------------- functions
def calc_mean_std(feat, eps=1e-5):
    size = feat.size()
    assert len(size) == 4
    n, c = size[:2]
    feat_var = feat.view(n, c, -1).var(dim=2) + eps
    feat_std = feat_var.sqrt().view(n, c, 1, 1)
    feat_mean = feat.view(n, c, -1).mean(dim=2).view(n, c, 1, 1)
    return feat_mean, feat_std


def adain(content_feat, style_feat):
    assert content_feat.size()[:2] == style_feat.size()[:2]
    size = content_feat.size()
    style_mean, style_std = calc_mean_std(style_feat)
    content_mean, content_std = calc_mean_std(content_feat)
    normalized = (content_feat - content_mean.expand(size)) / content_std.expand(size)
    return normalized * style_std.expand(size) + style_mean.expand(size)


def _calc_feat_flatten_mean_std(feat):
    assert feat.size()[0] == 3
    assert feat.dtype == torch.float32 and feat.device.type == "cpu"
    feat_flatten = feat.reshape(3, -1)
    mean = feat_flatten.mean(dim=-1, keepdim=True)
    std = feat_flatten.std(dim=-1, keepdim=True)
    return feat_flatten, mean, std


def _mat_sqrt(x):
    u, d, v = torch.svd(x)
    return torch.mm(torch.mm(u, d.pow(0.5).diag()), v.t())


def coral(source, target):
    source_f, source_f_mean, source_f_std = _calc_feat_flatten_mean_std(source)
    source_f_norm = (source_f - source_f_mean.expand_as(source_f)) / source_f_std.expand_as(source_f)
    source_f_cov_eye = torch.mm(source_f_norm, source_f_norm.t()) + torch.eye(3)

    target_f, target_f_mean, target_f_std = _calc_feat_flatten_mean_std(target)
    target_f_norm = (target_f - target_f_mean.expand_as(target_f)) / target_f_std.expand_as(target_f)
    target_f_cov_eye = torch.mm(target_f_norm, target_f_norm.t()) + torch.eye(3)

    source_f_norm_transfer = torch.mm(
        _mat_sqrt(target_f_cov_eye),
        torch.mm(torch.inverse(_mat_sqrt(source_f_cov_eye)), source_f_norm),
    )
    source_f_transfer = (source_f_norm_transfer * target_f_std.expand_as(source_f_norm)
                         + target_f_mean.expand_as(source_f_norm))
    return source_f_transfer.view(source.size())


FEAT_IDX = {"relu1_1": 3, "relu2_1": 10, "relu3_1": 17, "relu4_1": 30}


def encode_all(vgg, x):
    """The four AdaIN features (relu1_1, relu2_1, relu3_1, relu4_1)."""
    feats = []
    h = x
    for i, layer in enumerate(vgg):
        h = layer(h)
        if i in FEAT_IDX.values():
            feats.append(h)
    assert len(feats) == 4
    return feats


def encode(vgg, x):
    return encode_all(vgg, x)[-1]


def luma(x):
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


# ------------------------------------------------------------------ images
def smooth_image(seed, h, w, lo, scale, offset, sin_amp, freq):
    """Smooth colourful image in [0,1]: low-res noise upsampled + sinusoids."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, lo[0], lo[1], generator=g)
    up = F.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    phase = torch.rand(3, generator=g) * 2 * math.pi
    yy = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1) / h
    xx = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w) / w
    sin = torch.sin(2 * math.pi * (freq[0] * xx + freq[1] * yy) + phase.view(1, 3, 1, 1))
    img = (up * torch.tensor(scale).view(1, 3, 1, 1) + torch.tensor(offset).view(1, 3, 1, 1)
           + sin_amp * sin)
    return img.clamp(0.0, 1.0).to(torch.float32).contiguous()


def random_batch(seed, n=2, h=32, w=32):
    g = torch.Generator().manual_seed(seed)
    imgs = []
    for b in range(n):
        scale = (0.4 + 0.6 * torch.rand(3, generator=g)).tolist()
        offset = (0.3 * torch.rand(3, generator=g)).tolist()
        fx, fy = (0.5 + 3.0 * torch.rand(2, generator=g)).tolist()
        sub = int(torch.randint(0, 1_000_000, (1,), generator=g))
        imgs.append(smooth_image(sub, h, w, (4, 4), scale, offset, 0.15, (fx, fy)))
    return torch.cat(imgs, 0)


def stats(name, t):
    print(f"  {name:<22} shape={list(t.shape)} mean={t.mean().item():+.4f} "
          f"std={t.std().item():.4f} min={t.min().item():+.4f} max={t.max().item():+.4f}")


# ------------------------------------------------------------------ parity
def make_parity(vgg):
    content = smooth_image(11, 32, 40, (4, 5), [0.6, 0.6, 0.6], [0.2, 0.2, 0.2], 0.15, (1.5, 1.0))
    style1 = smooth_image(22, 40, 36, (5, 4), [0.5, 0.4, 0.3], [0.5, 0.25, 0.0], 0.25, (3.0, 2.0))
    style2 = smooth_image(33, 44, 28, (6, 4), [0.3, 0.4, 0.5], [0.0, 0.3, 0.5], 0.1, (0.7, 2.5))

    ys, xs = torch.meshgrid(torch.arange(32, dtype=torch.float32),
                            torch.arange(40, dtype=torch.float32), indexing="ij")
    mask0 = ((xs < 13) | ((xs - 27.0) ** 2 + (ys - 20.0) ** 2 < 9.0 ** 2)).to(torch.float32)

    with torch.no_grad():
        cf = encode_all(vgg, content)
        c = cf[-1]
        s2f = encode_all(vgg, style2)
        s1 = encode(vgg, style1)
        s2 = s2f[-1]
        assert tuple(c.shape) == (1, 512, 4, 5)
        assert tuple(s2f[2].shape) == (1, 256, 11, 7) and tuple(s2.shape) == (1, 512, 6, 4)

        t1 = adain(c, s1)

        # choose the gain from the un-gained decoder's alpha-1 output
        dec1 = load_decoder(1.0)
        raw = dec1(t1)
        # output = gain * A + B with A = (W x) and B = last bias (per channel); pick
        # gain so that std(out.alpha1) ~= 0.25: solve g^2 var(A) + 2g cov(A,B) + var(B)
        # = 0.25^2, then round to 3 significant digits.
        bias = formula_decoder_state(1.0)["28.bias"].view(1, 3, 1, 1)
        a = (raw - bias).reshape(-1).double()
        b = bias.expand_as(raw).reshape(-1).double()
        va, vb = a.var().item(), b.var().item()
        cab = ((a - a.mean()) * (b - b.mean())).sum().item() / (a.numel() - 1)
        target_std = 0.25
        g = (-cab + math.sqrt(cab * cab - va * (vb - target_std ** 2))) / va
        gain = float(f"{g:.3g}")
        gain_t = torch.tensor([gain], dtype=torch.float32)
        print(f"un-gained out.alpha1 std = {raw.std().item():.5f} (weight part "
              f"{math.sqrt(va):.5f}) -> decoder_gain = {gain}")
        dec = load_decoder(gain_t.item())

        def stylize_feat(t, alpha):
            t = alpha * t + (1 - alpha) * c
            return dec(t)

        def stylize(x, s, alpha):
            cx = encode(vgg, x)
            t = adain(cx, encode(vgg, s))
            t = alpha * t + (1 - alpha) * cx
            return dec(t)

        out = {}
        out["out.alpha1"] = stylize(content, style1, 1.0)
        out["out.alpha05"] = stylize(content, style1, 0.5)
        out["out.alpha0"] = stylize(content, style1, 0.0)
        assert torch.allclose(out["out.alpha1"], stylize_feat(t1, 1.0))

        wts = [1.0, 3.0]
        wts = [w_ / sum(wts) for w_ in wts]
        tb = wts[0] * adain(c, s1) + wts[1] * adain(c, s2)
        out["out.blend"] = stylize_feat(tb, 0.8)

        coral_s1 = coral(style1[0], content[0]).unsqueeze(0).contiguous()
        out["coral.style1"] = coral_s1
        out["out.coral"] = stylize(content, coral_s1, 1.0)

        yc = luma(content)
        ys_ = luma(style1)
        ys2 = (ys_ - ys_.mean()) / ys_.std() * yc.std() + yc.mean()
        o = stylize(yc.repeat(1, 3, 1, 1), ys2.repeat(1, 3, 1, 1), 1.0)
        out["out.luminance"] = content + (luma(o) - yc)

        m0 = (F.interpolate(mask0[None, None], size=(4, 5), mode="nearest") >= 0.5).to(torch.float32)
        m1 = 1.0 - m0
        n0, n1 = int(m0.sum()), int(m1.sum())
        print(f"mask0 coverage {mask0.mean().item():.3f}; feature mask m0 has {n0} / {n1} positions")
        assert n0 >= 3 and n1 >= 3

        def region_t(m, s):
            cflat = c.view(512, -1)
            sel = cflat[:, m.view(-1) > 0.5]
            mu = sel.mean(dim=1).view(1, 512, 1, 1)
            sd = (sel.var(dim=1) + 1e-5).sqrt().view(1, 512, 1, 1)
            smu, ssd = calc_mean_std(s)
            return (c - mu) / sd * ssd + smu

        tm = m0 * region_t(m0, s1) + m1 * region_t(m1, s2)
        out["out.mask"] = stylize_feat(tm, 1.0)

    tensors = OrderedDict()
    tensors["content"] = content
    tensors["style1"] = style1
    tensors["style2"] = style2
    tensors["mask0"] = mask0
    tensors["decoder_gain"] = gain_t
    for name, f in zip(FEAT_IDX.keys(), cf):
        tensors[f"enc.content.{name}"] = f
    tensors["enc.style2.relu3_1"] = s2f[2]
    tensors["enc.style2.relu4_1"] = s2f[3]
    tensors["adain.t"] = t1
    tensors.update(out)
    tensors["mask.m0_feat"] = m0[0, 0]

    print("parity stats:")
    for k in ["content", "style1", "style2", "out.alpha1", "out.alpha05", "out.alpha0",
              "out.blend", "coral.style1", "out.coral", "out.luminance", "out.mask"]:
        stats(k, tensors[k])
    for k in ["content", "style1", "style2", "coral.style1"]:
        t = tensors[k][0].reshape(3, -1)
        print(f"  {k:<14} per-channel mean={[round(v, 3) for v in t.mean(1).tolist()]} "
              f"std={[round(v, 3) for v in t.std(1).tolist()]}")
    return {k: v.detach().to(torch.float32).contiguous() for k, v in tensors.items()}


# -------------------------------------------------------------------- train
TRAIN_LR = 1e-6


def make_train(vgg, gain):
    # Same image-scaled gain as the parity fixture: outputs in ~[0,1] keep the
    # losses in the regime training sees (with gain 1 they are ~1e11 and three
    # Adam steps diverge chaotically from f32 rounding alone).
    dec = load_decoder(gain)
    params = OrderedDict(dec.named_parameters())
    assert list(params.keys()) == [f"{k}.{p}" for k in DEC_KEYS for p in ("weight", "bias")]

    def sample(t):
        flat = t.detach().reshape(-1)
        n = flat.numel()
        stride = max(1, n // 256)
        return flat[torch.arange(0, n, stride)].clone().to(torch.float32)

    def mse(inp, target):
        return F.mse_loss(inp, target.detach())

    def calc_style_loss(inp, target):
        im, isd = calc_mean_std(inp)
        tm, tsd = calc_mean_std(target)
        return mse(im, tm) + mse(isd, tsd)

    out = OrderedDict()
    for k, p in params.items():
        out[f"init.{k}"] = sample(p)

    # lr 1e-6, not the recipe's 1e-4: Adam's first step moves every weight by +-lr
    # whatever its gradient, and at 1e-4 the formula decoder's loss jumps 16x in one
    # step, so f32 noise in near-zero gradients (sign flips) would dominate the
    # comparison. Same optimiser and decay code, on a smooth trajectory.
    opt = torch.optim.Adam(dec.parameters(), lr=TRAIN_LR)
    lc_l, ls_l, l_l, lr_l = [], [], [], []
    for i in range(3):
        lr = TRAIN_LR / (1.0 + 5e-5 * i)
        for group in opt.param_groups:
            group["lr"] = lr
        content = random_batch(1000 + 2 * i)
        style = random_batch(1001 + 2 * i)
        out[f"batch{i}.content"] = content
        out[f"batch{i}.style"] = style

        with torch.no_grad():
            style_feats = encode_all(vgg, style)
            t = adain(encode(vgg, content), style_feats[-1])
        g = dec(t)
        g_feats = encode_all(vgg, g)
        loss_c = mse(g_feats[-1], t)
        loss_s = calc_style_loss(g_feats[0], style_feats[0])
        for k in range(1, 4):
            loss_s = loss_s + calc_style_loss(g_feats[k], style_feats[k])
        loss = 1.0 * loss_c + 10.0 * loss_s

        opt.zero_grad()
        loss.backward()
        if i == 0:
            for k, p in params.items():
                out[f"grad0.{k}"] = sample(p.grad)
        opt.step()
        lc_l.append(loss_c.item())
        ls_l.append(loss_s.item())
        l_l.append(loss.item())
        lr_l.append(lr)
        print(f"train step {i}: lr={lr:.8g} loss_c={loss_c.item():.6g} "
              f"loss_s={loss_s.item():.6g} loss={loss.item():.6g}")

    for k, p in params.items():
        out[f"final.{k}"] = sample(p)
    out["loss_c"] = torch.tensor(lc_l, dtype=torch.float32)
    out["loss_s"] = torch.tensor(ls_l, dtype=torch.float32)
    out["loss"] = torch.tensor(l_l, dtype=torch.float32)
    out["lr"] = torch.tensor(lr_l, dtype=torch.float32)
    out["decoder_gain"] = torch.tensor([gain], dtype=torch.float32)
    return {k: v.detach().to(torch.float32).contiguous() for k, v in out.items()}


# ---------------------------------------------------------------------- pth
def canonicalize_legacy(path):
    """Make a legacy (non-zip) torch.save file byte-deterministic.

    The legacy writer names each storage by its memory address (str(storage._cdata))
    and writes the storage blocks sorted by that name, so the bytes change from run to
    run. Rename the storages "0", "1", ... in order of first appearance in the pickle
    and rewrite the key list and the data blocks in the new sorted order. The layout is
    magic / protocol / sys_info / object pickles, the pickled key list, then per key
    an int64 element count and the raw data.
    """
    import io
    import pickle

    class _U(pickle.Unpickler):
        def persistent_load(self, pid):
            pids.append(pid)
            return None

        def find_class(self, module, name):
            return _Global(name)

    class _Global:
        def __init__(self, name):
            self.name = name

        def __call__(self, *args, **kwargs):
            return {}

    raw = open(path, "rb").read()
    f = io.BytesIO(raw)
    for _ in range(3):
        pickle.load(f)
    start = f.tell()
    pids = []
    _U(f).load()
    obj_end = f.tell()
    keys = pickle.load(f)
    data_start = f.tell()
    type_size = {"FloatStorage": 4, "DoubleStorage": 8, "HalfStorage": 2,
                 "BFloat16Storage": 2, "LongStorage": 8, "IntStorage": 4,
                 "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1}
    order, tsize = [], {}
    for pid in pids:  # ("storage", storage_type, key, location, numel)
        key = pid[2]
        if key not in tsize:
            order.append(key)
            tsize[key] = type_size[pid[1].name]
    assert sorted(order) == sorted(keys), (order, keys)
    blocks = {}
    pos = data_start
    for key in keys:
        numel = int.from_bytes(raw[pos:pos + 8], "little")
        nb = numel * tsize[key]
        blocks[key] = raw[pos:pos + 8 + nb]
        pos += 8 + nb
    assert pos == len(raw), (pos, len(raw))
    rename = {k: str(i) for i, k in enumerate(order)}
    obj = raw[start:obj_end]
    for k, nk in rename.items():
        enc_old = b"X" + len(k).to_bytes(4, "little") + k.encode()
        enc_new = b"X" + len(nk).to_bytes(4, "little") + nk.encode()
        assert obj.count(enc_old) >= 1
        obj = obj.replace(enc_old, enc_new)
    new_keys = sorted(rename.values())
    inv = {v: k for k, v in rename.items()}
    out = raw[:start] + obj + pickle.dumps(new_keys, protocol=2)
    for nk in new_keys:
        out += blocks[inv[nk]]
    with open(path, "wb") as fh:
        fh.write(out)


def make_pth():
    os.makedirs(PTH, exist_ok=True)
    expected = OrderedDict()

    def describe(fname, fmt, root, container):
        sd = root[container] if container else root
        tensors = []
        for key, t in sd.items():
            name = key[len("module."):] if key.startswith("module.") else key
            tensors.append(OrderedDict([
                ("key", key),
                ("path", f"{container}.{key}" if container else key),
                ("name", name),
                ("dtype", str(t.dtype).replace("torch.", "")),
                ("shape", list(t.shape)),
                ("first4", [float(v) for v in t.reshape(-1)[:4].to(torch.float32).tolist()]),
            ]))
        expected[fname] = OrderedDict([("format", fmt), ("container", container),
                                       ("tensors", tensors)])

    # decoder, float16, zip
    shapes = OrderedDict((k, tuple(v.shape)) for k, v in make_decoder().state_dict().items())
    dsd = OrderedDict()
    for k, shp in shapes.items():
        n = int(np.prod(shp))
        v = ((torch.arange(n, dtype=torch.float64) % 251) - 125) / 256
        t16 = v.to(torch.float16)
        assert torch.equal(t16.to(torch.float64), v)
        dsd[k] = t16.reshape(shp).contiguous()
    assert len(dsd) == 18
    torch.save(dsd, os.path.join(PTH, "decoder_f16_zip.pth"))
    describe("decoder_f16_zip.pth", "zip", dsd, None)

    def small():
        return OrderedDict([
            ("a.weight", (torch.arange(12, dtype=torch.float32) / 10 - 0.5).reshape(4, 3)),
            ("b.bias", torch.arange(5, dtype=torch.float64) * 0.25),
            ("c.half", torch.tensor([[1.0, 2.0], [3.0, -0.5]], dtype=torch.bfloat16)),
        ])

    s = small()
    torch.save(s, os.path.join(PTH, "small_zip.pth"))
    describe("small_zip.pth", "zip", s, None)
    s = small()
    torch.save(s, os.path.join(PTH, "small_legacy.pth"), _use_new_zipfile_serialization=False)
    canonicalize_legacy(os.path.join(PTH, "small_legacy.pth"))
    describe("small_legacy.pth", "legacy", s, None)

    s = small()
    wrapped = {
        "iter": 7,
        "state_dict": OrderedDict([("module.a.weight", s["a.weight"]),
                                   ("module.b.bias", s["b.bias"])]),
        "optimizer": {"lr": 1e-4},
    }
    torch.save(wrapped, os.path.join(PTH, "wrapped_zip.pth"))
    describe("wrapped_zip.pth", "zip", wrapped, "state_dict")

    # round-trip check
    for fname, info in expected.items():
        obj = torch.load(os.path.join(PTH, fname), weights_only=True)
        sd = obj[info["container"]] if info["container"] else obj
        for t in info["tensors"]:
            assert list(sd[t["key"]].shape) == t["shape"], (fname, t["key"])
    with open(os.path.join(PTH, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")


def summary(path):
    from safetensors import safe_open
    print(f"{path}: {os.path.getsize(path)} bytes")
    with safe_open(path, "pt") as f:
        for k in f.keys():
            t = f.get_tensor(k)
            print(f"  {k:<24} {str(t.dtype).replace('torch.', ''):<8} {list(t.shape)}")


# one key only: safetensors writes the metadata map in hash order
META = {"generator": f"scripts/make_fixtures.py (torch {torch.__version__})"}


def make_images():
    """Input formats the Rust side cannot write itself: a palette PNG and a CMYK JPEG."""
    from PIL import Image
    d = os.path.join(FIX, "images")
    os.makedirs(d, exist_ok=True)
    x = np.arange(40)[None, :].repeat(24, 0)
    y = np.arange(24)[:, None].repeat(40, 1)
    rgb = np.stack([x * 6, y * 10, (x + y) * 3], -1).astype(np.uint8)
    img = Image.fromarray(rgb)
    img.convert("P", palette=Image.ADAPTIVE, colors=16).save(os.path.join(d, "palette.png"))
    img.convert("CMYK").save(os.path.join(d, "cmyk.jpg"), quality=90)


def main():
    os.makedirs(FIX, exist_ok=True)
    vgg = load_vgg()
    parity = make_parity(vgg)
    save_file(parity, os.path.join(FIX, "parity.safetensors"),
              metadata=META)
    train = make_train(vgg, parity["decoder_gain"].item())
    save_file(train, os.path.join(FIX, "train_parity.safetensors"),
              metadata=META)
    make_pth()
    make_images()
    summary(os.path.join(FIX, "parity.safetensors"))
    summary(os.path.join(FIX, "train_parity.safetensors"))
    for f in sorted(os.listdir(PTH)):
        print(f"{os.path.join(PTH, f)}: {os.path.getsize(os.path.join(PTH, f))} bytes")


if __name__ == "__main__":
    main()
