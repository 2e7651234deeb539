#!/usr/bin/env python3
"""Measure the content/style loss balance of AdaIN training with the RAW VGG-19.

Why: the reference recipe (naoto0804/pytorch-AdaIN) trains with
    total = 1.0 * content + 10.0 * style
but that 10 was tuned for `vgg_normalised.pth`, the Gatys-"normalised" VGG in
which every conv layer is rescaled so that each channel's mean activation over
ImageNet images is ~1. We only have the raw (Caffe) VGG-19, so this script
measures how much the style/content ratio changes and what --style-weight
reproduces the recipe's balance.

Normalised vs raw features. Gatys et al. normalise layer by layer: with
m_{k,c} the mean activation of channel c of layer k (raw network, over images
and positions), layer k is rewritten as
    W'_k[c, c'] = W_k[c, c'] * m_{k-1,c'} / m_{k,c},   b'_k[c] = b_k[c] / m_{k,c}.
If the input of layer k is the normalised f_{k-1} / m_{k-1}, the normalised
pre-activation is exactly conv_k(f_{k-1}) / m_{k,c}; ReLU is positively
homogeneous (relu(x / m) = relu(x) / m for m > 0), and reflection padding and
max-pooling commute with a positive per-channel scale, so by induction every
normalised relu feature is raw_relu_k / m_{k,c}, per channel. Hence the
normalised relu1_1..relu4_1 features can be emulated by dividing the raw ones
by m_{k,c} measured on the raw network (for the relu layers AdaIN reads; the
intermediate layers' factors cancel). Our m is measured on ~40 of our photos
instead of ImageNet, so it matches vgg_normalised only up to the dataset
difference. The normalised relu2_1 term is carried mostly by a few channels
with small m, so the script also reports w_raw with m estimated from each half
of the photos and with m floored at 10% of the layer median; the spread of
those numbers is the precision of the recommendation (~x1.5, enough to pick
a clean default, not more). With only ~4 photos m is far too noisy (w_raw
came out in the thousands), so keep N_IMG at ~40 or more.

Losses (exactly as in the reference train.py / net.py):
  calc_mean_std: per-channel mean, sqrt(unbiased var + 1e-5)
  t       = adain(relu4_1(c), relu4_1(s))
  content = MSE(relu4_1(g), t)
  style   = sum_k MSE(mean(g_k), mean(s_k)) + MSE(std(g_k), std(s_k)),
            k in relu1_1, relu2_1, relu3_1, relu4_1
"Normalised" losses apply the same functions to features divided by m_{k,c}
(the adain target is recomputed in normalised space, so the eps is handled as
the reference would).

Outputs g considered:
  (a)  init:    the reference decoder at PyTorch default init applied to t
                (raw t for the raw losses, normalised t for the normalised ones,
                i.e. what iteration 0 of each setup sees);
  (b1) colour:  the content photo with its RGB per-channel mean/std matched to
                the painting, clamped to [0,1] (a plausible output late in
                training: content kept, global style statistics roughly right);
  (b2) recrop:  a different crop of the same painting (ideal style match,
                wrong content).
Recommended raw weight: w_raw = 10 * R_norm / R_raw with R = style/content
(ratio of pair-averaged losses, as a batch MSE averages them). As a cross-check
the script also compares ||grad_g style|| / ||grad_g content|| (what Adam's
update direction actually balances) on a few pairs, and prints the per-layer
weights lambda_k that would reproduce the normalised per-layer balance (the
relu4_1 one should come out ~10: content and relu4_1 style share one scale).

Env overrides: N_IMG (40), N_GRAD (6), VGG, DATA.

Usage: .venv/bin/python scripts/loss_balance.py   (one CPU thread, ~4 min)
Writes the summary to scripts/loss_balance.out.txt as well.
"""
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

torch.set_num_threads(1)
torch.manual_seed(0)

HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHTS = os.environ.get("VGG", "/work/shared/weights/vgg19-relu4_1.safetensors")
DATA = os.environ.get("DATA", "/work/shared/data/train")
N_IMG = int(os.environ.get("N_IMG", "40"))
N_GRAD = int(os.environ.get("N_GRAD", "6"))  # pairs for the gradient-norm check
SIZE = 256
RECIPE_SW = 10.0
LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1"]


# ----------------------------------------------------------------- encoder
class Encoder(nn.Module):
    """vgg[:31] of pytorch-AdaIN (conv 0 .. relu4_1), raw weights."""

    def __init__(self, path):
        super().__init__()
        sd = load_file(path)
        for k, v in sd.items():
            self.register_buffer("p" + k.replace(".", "_"), v.float())

    def conv(self, x, i, pad=True):
        w = getattr(self, f"p{i}_weight")
        b = getattr(self, f"p{i}_bias")
        if pad:
            x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        return F.conv2d(x, w, b)

    def forward(self, x):
        pool = lambda t: F.max_pool2d(t, 2, 2, ceil_mode=True)
        x = self.conv(x, 0, pad=False)
        r11 = F.relu(self.conv(x, 2))
        x = pool(F.relu(self.conv(r11, 5)))
        r21 = F.relu(self.conv(x, 9))
        x = pool(F.relu(self.conv(r21, 12)))
        r31 = F.relu(self.conv(x, 16))
        x = F.relu(self.conv(r31, 19))
        x = F.relu(self.conv(x, 22))
        x = pool(F.relu(self.conv(x, 25)))
        r41 = F.relu(self.conv(x, 29))
        return [r11, r21, r31, r41]


def make_decoder():
    """net.decoder of pytorch-AdaIN at PyTorch default init."""
    L = []

    def conv(i, o):
        L.extend([nn.ReflectionPad2d(1), nn.Conv2d(i, o, 3)])

    conv(512, 256); L.append(nn.ReLU()); L.append(nn.Upsample(scale_factor=2, mode="nearest"))
    conv(256, 256); L.append(nn.ReLU())
    conv(256, 256); L.append(nn.ReLU())
    conv(256, 256); L.append(nn.ReLU())
    conv(256, 128); L.append(nn.ReLU()); L.append(nn.Upsample(scale_factor=2, mode="nearest"))
    conv(128, 128); L.append(nn.ReLU())
    conv(128, 64); L.append(nn.ReLU()); L.append(nn.Upsample(scale_factor=2, mode="nearest"))
    conv(64, 64); L.append(nn.ReLU())
    conv(64, 3)
    dec = nn.Sequential(*L)
    convs = [i for i, m in enumerate(dec) if isinstance(m, nn.Conv2d)]
    assert convs == [1, 5, 8, 11, 14, 18, 21, 25, 28], convs
    return dec


# ----------------------------------------------------------------- losses
def mean_std(f, eps=1e-5):
    n, c = f.shape[:2]
    v = f.reshape(n, c, -1)
    return v.mean(2), (v.var(2, unbiased=True) + eps).sqrt()


def adain(c, s):
    cm, cs = mean_std(c)
    sm, ss = mean_std(s)
    return (c - cm[..., None, None]) / cs[..., None, None] * ss[..., None, None] + sm[..., None, None]


def losses(gf, sf, t):
    """-> content, [style term per layer]; per sample (tensors of shape [N])."""
    content = ((gf[3] - t) ** 2).flatten(1).mean(1)
    terms = []
    for g, s in zip(gf, sf):
        gm, gs = mean_std(g)
        sm, ss = mean_std(s)
        terms.append(((gm - sm) ** 2).mean(1) + ((gs - ss) ** 2).mean(1))
    return content, terms


def scale(feats, m):
    return [f / mk[None, :, None, None] for f, mk in zip(feats, m)]


# ----------------------------------------------------------------- data
def list_images(d):
    return sorted(f for f in os.listdir(d) if f.lower().endswith((".jpg", ".jpeg", ".png")))


def pick(d, n):
    fs = list_images(d)
    k = max(1, len(fs) // n)
    return [os.path.join(d, f) for f in fs[::k][:n]]


def load(path, short=SIZE, crop="center"):
    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = short / min(w, h)
    nw, nh = max(short, round(w * s)), max(short, round(h * s))
    im = im.resize((nw, nh), Image.BICUBIC)
    if crop == "center":
        x0, y0 = (nw - SIZE) // 2, (nh - SIZE) // 2
    else:  # bottom-right corner: a different crop of the same picture
        x0, y0 = nw - SIZE, nh - SIZE
    im = im.crop((x0, y0, x0 + SIZE, y0 + SIZE))
    a = np.asarray(im, dtype=np.float32) / 255.0
    return torch.from_numpy(a).permute(2, 0, 1).contiguous()


def colour_match(c, s):
    cm, cs = c.mean((1, 2), keepdim=True), c.std((1, 2), keepdim=True) + 1e-6
    sm, ss = s.mean((1, 2), keepdim=True), s.std((1, 2), keepdim=True)
    return ((c - cm) / cs * ss + sm).clamp(0, 1)


# ----------------------------------------------------------------- main
def main():
    t0 = time.time()
    enc = Encoder(WEIGHTS).eval()
    photos = pick(os.path.join(DATA, "content"), N_IMG)
    paints = pick(os.path.join(DATA, "style"), N_IMG)
    n = min(len(photos), len(paints))
    C = torch.stack([load(p) for p in photos[:n]])
    S = torch.stack([load(p) for p in paints[:n]])
    # a different crop of each painting: shorter side 320, bottom-right 256 crop
    S2 = torch.stack([load(p, short=320, crop="corner") for p in paints[:n]])
    # pair photo i with painting (7 i + 3) mod n: deterministic, not aligned by name
    perm = [(7 * i + 3) % n for i in range(n)]
    if len(set(perm)) != n:
        perm = list(range(n))

    def encode(x, bs=4):
        out = [[], [], [], []]
        with torch.no_grad():
            for i in range(0, len(x), bs):
                for k, f in enumerate(enc(x[i : i + bs])):
                    out[k].append(f)
        return [torch.cat(o) for o in out]

    cf = encode(C)
    sf = encode(S)
    print(f"[{time.time()-t0:5.1f}s] encoded {n} photos + {n} paintings", file=sys.stderr)

    # --- step 2: Gatys normalisation factors over the photos
    m_raw = [f.mean((0, 2, 3)) for f in cf]
    m = []
    stats = []
    for name, mk in zip(LAYERS, m_raw):
        med = mk.median()
        floor = 1e-3 * med
        dead = int((mk < floor).sum())
        m.append(mk.clamp_min(floor))
        stats.append((name, mk.numel(), float(mk.mean()), float(med), float(mk.min()), float(mk.max()), dead))

    sfp = [sf[k][perm] for k in range(4)]
    Sp = S[perm]
    S2p = S2[perm]

    # --- step 3: losses for each kind of g, raw and normalised
    results = {}  # name -> dict(raw=(content[N], terms[4][N]), norm=...)

    def eval_feats(gf_raw, gf_norm, tag, sel=slice(None)):
        c_r = [f[sel] for f in cf]
        s_r = [f[sel] for f in sfp]
        t_r = adain(c_r[3], s_r[3])
        c_n, s_n = scale(c_r, m), scale(s_r, m)
        t_n = adain(c_n[3], s_n[3])
        results[tag] = dict(raw=losses(gf_raw, s_r, t_r), norm=losses(scale(gf_norm, m), s_n, t_n))

    # (a) decoder at default init, per setup
    dec = make_decoder().eval()
    g_raw, g_norm = [], []
    with torch.no_grad():
        for i in range(0, n, 4):
            sl = slice(i, i + 4)
            t_r = adain(cf[3][sl], sfp[3][sl])
            t_n = adain(cf[3][sl] / m[3][None, :, None, None], sfp[3][sl] / m[3][None, :, None, None])
            g_raw.append(dec(t_r))
            g_norm.append(dec(t_n))
    g_raw, g_norm = torch.cat(g_raw), torch.cat(g_norm)
    init_range = dict(raw=(float(g_raw.mean()), float(g_raw.std())), norm=(float(g_norm.mean()), float(g_norm.std())))
    eval_feats(encode(g_raw), encode(g_norm), "(a) init decoder")
    print(f"[{time.time()-t0:5.1f}s] (a) done", file=sys.stderr)

    # (b1) colour-matched content
    G = torch.stack([colour_match(C[i], Sp[i]) for i in range(n)])
    gf = encode(G)
    eval_feats(gf, gf, "(b1) colour-matched photo")
    print(f"[{time.time()-t0:5.1f}s] (b1) done", file=sys.stderr)

    # (b2) re-cropped painting
    gf2 = encode(S2p)
    eval_feats(gf2, gf2, "(b2) re-cropped painting")
    print(f"[{time.time()-t0:5.1f}s] (b2) done", file=sys.stderr)

    # --- sensitivity of the normalised losses to the estimate of m:
    # m from each half of the photos, and m with every channel's factor floored
    # at 10% of its layer median (tames near-dead channels, which carry most of
    # the normalised relu2_1 term)
    half = lambda sel: [f[sel].mean((0, 2, 3)).clamp_min(1e-3 * f[sel].mean((0, 2, 3)).median()) for f in cf]
    variants = {
        f"m from photos 0,2,4.. ({(n + 1) // 2})": half(slice(0, None, 2)),
        f"m from photos 1,3,5.. ({n // 2})": half(slice(1, None, 2)),
        "m floored at 10% of median": [mk.clamp_min(0.1 * mk.median()) for mk in m],
    }
    sens = {}
    for vname, mv in variants.items():
        for tag, g_f in (("(b1) colour-matched photo", gf), ("(b2) re-cropped painting", gf2)):
            c_n, s_n = scale(cf, mv), scale(sfp, mv)
            sens[(vname, tag)] = losses(scale(g_f, mv), s_n, adain(c_n[3], s_n[3]))
    # which channels carry the normalised style loss: share of each layer's
    # normalised term due to its 5% of channels with the smallest m
    conc = {}
    for tag, g_f in (("(b1) colour-matched photo", gf), ("(b2) re-cropped painting", gf2)):
        row = []
        for k in range(4):
            gm, gs = mean_std(g_f[k] / m[k][None, :, None, None])
            sm, ss = mean_std(sfp[k] / m[k][None, :, None, None])
            per_c = ((gm - sm) ** 2 + (gs - ss) ** 2).mean(0)
            idx = torch.argsort(m[k])[: max(1, len(m[k]) // 20)]
            row.append(float(per_c[idx].sum() / per_c.sum()))
        conc[tag] = row

    # --- gradient check: ||d style/dg|| / ||d content/dg||, raw vs normalised
    # (Adam makes the decoder feel the *direction* of the summed gradient, so
    # the balance of the two gradients is the other fair reading of "balance")
    grad = {}
    ng = min(N_GRAD, n)
    for tag, img_r, img_n in (("(a) init decoder", g_raw, g_norm),
                              ("(b1) colour-matched photo", G, G),
                              ("(b2) re-cropped painting", S2p, S2p)):
        rr = {"raw": [], "norm": []}
        for i in range(ng):
            c1 = [f[i : i + 1] for f in cf]
            s1 = [f[i : i + 1] for f in sfp]
            for mode, img in (("raw", img_r), ("norm", img_n)):
                g = img[i : i + 1].clone().requires_grad_(True)
                feats = enc(g)
                if mode == "raw":
                    ff, cc, ss = feats, c1, s1
                else:
                    ff, cc, ss = scale(feats, m), scale(c1, m), scale(s1, m)
                lc, terms = losses(ff, ss, adain(cc[3], ss[3]))
                gc, = torch.autograd.grad(lc.sum(), g, retain_graph=True)
                gs, = torch.autograd.grad(sum(terms).sum(), g)
                rr[mode].append(float(gs.norm() / gc.norm()))
        grad[tag] = {k: np.array(v) for k, v in rr.items()}
    print(f"[{time.time()-t0:5.1f}s] gradient check done", file=sys.stderr)

    # --- step 4/5: report
    out = []
    P = out.append
    P(f"AdaIN loss balance, raw VGG-19 vs Gatys-normalised emulation")
    P(f"photos: {n} of {DATA}/content (sorted, every {len(list_images(os.path.join(DATA,'content')))//N_IMG}th); "
      f"paintings: {n} of {DATA}/style (every {len(list_images(os.path.join(DATA,'style')))//N_IMG}th); "
      f"{SIZE}x{SIZE} center crops; pairs photo i <-> painting (7i+3) mod {n}")
    P("")
    P("Per-channel mean activation m_{k,c} over the photos (= Gatys normalisation factor)")
    P(f"{'layer':8} {'C':>4} {'mean':>9} {'median':>9} {'min':>9} {'max':>9} {'dead(<1e-3 med)':>16}")
    for name, cnum, mean, med, mn, mx, dead in stats:
        P(f"{name:8} {cnum:4d} {mean:9.3f} {med:9.3f} {mn:9.4f} {mx:9.3f} {dead:16d}")
    P("")
    P(f"init decoder output (mean, std): raw-t input {init_range['raw'][0]:.3g}, {init_range['raw'][1]:.3g}; "
      f"normalised-t input {init_range['norm'][0]:.3g}, {init_range['norm'][1]:.3g}")
    P("")
    P("Losses, averaged over pairs (style terms per layer = MSE(mean)+MSE(std))")
    hdr = f"{'g':28} {'space':5} {'content':>10} " + " ".join(f"{l:>10}" for l in LAYERS) + f" {'style':>10} {'R=s/c':>9}"
    P(hdr)
    P("-" * len(hdr))
    summary = {}
    for tag, r in results.items():
        row = {}
        for mode in ("raw", "norm"):
            c, terms = r[mode]
            cm = float(c.mean())
            tm = [float(t.mean()) for t in terms]
            st = sum(tm)
            R = st / cm
            row[mode] = dict(content=cm, terms=tm, style=st, R=R,
                             per_pair=(sum(terms) / c).numpy())
            P(f"{tag:28} {mode:5} {cm:10.4g} " + " ".join(f"{t:10.4g}" for t in tm) + f" {st:10.4g} {R:9.4g}")
        summary[tag] = row
    P("")
    P("Style-loss share per layer (%)")
    P(f"{'g':28} {'space':5} " + " ".join(f"{l:>8}" for l in LAYERS))
    for tag, row in summary.items():
        for mode in ("raw", "norm"):
            tm, st = row[mode]["terms"], row[mode]["style"]
            P(f"{tag:28} {mode:5} " + " ".join(f"{100*t/st:8.1f}" for t in tm))
    P("")
    P(f"Equivalent raw style weight  w_raw = {RECIPE_SW:g} * R_norm / R_raw")
    P(f"{'g':28} {'R_raw':>10} {'R_norm':>10} {'w_raw':>9} {'w_raw median/IQR over pairs':>30}")
    for tag, row in summary.items():
        w = RECIPE_SW * row["norm"]["R"] / row["raw"]["R"]
        wp = RECIPE_SW * row["norm"]["per_pair"] / row["raw"]["per_pair"]
        q1, q2, q3 = np.percentile(wp, [25, 50, 75])
        row["w"] = w
        P(f"{tag:28} {row['raw']['R']:10.4g} {row['norm']['R']:10.4g} {w:9.3g} {q2:12.3g} [{q1:.3g}, {q3:.3g}]")
    P("")
    P("Sensitivity of w_raw (loss ratio) to the estimate of m")
    for (vname, tag), (c, terms) in sens.items():
        st = sum(float(t.mean()) for t in terms)
        R = st / float(c.mean())
        P(f"  {vname:30} {tag:27} w_raw {RECIPE_SW * R / summary[tag]['raw']['R']:6.3g}; "
          f"norm shares % " + " ".join(f"{100*float(t.mean())/st:4.1f}" for t in terms))
    P("Share of each layer's normalised style term from its 5% lowest-m channels (%)")
    for tag, row in conc.items():
        P(f"  {tag:28} " + " ".join(f"{l} {100*x:.0f}" for l, x in zip(LAYERS, row)))
    P("")
    P(f"Gradient check, {ng} pairs: ratio ||grad_g style|| / ||grad_g content|| (medians); "
      f"w_raw = 10 * ratio_norm / ratio_raw")
    for tag, rr in grad.items():
        wg = RECIPE_SW * rr["norm"] / rr["raw"]
        summary[tag]["wg"] = float(np.median(wg))
        P(f"  {tag:28} raw {np.median(rr['raw']):9.4g}  norm {np.median(rr['norm']):9.4g}  "
          f"w_raw median {np.median(wg):.3g} [IQR {np.percentile(wg,25):.3g}, {np.percentile(wg,75):.3g}]")
    P("")
    P("Per-layer raw weights that would reproduce the normalised balance exactly")
    P("  lambda_k = 10 * (norm_k / content_norm) / (raw_k / content_raw)")
    for tag, row in summary.items():
        lam = [RECIPE_SW * (tn / row["norm"]["content"]) / (tr / row["raw"]["content"])
               for tn, tr in zip(row["norm"]["terms"], row["raw"]["terms"])]
        P(f"  {tag:28} " + " ".join(f"{l} {x:8.3g}" for l, x in zip(LAYERS, lam)))
    late = [summary[t]["w"] for t in summary if t.startswith("(b")]
    w_late = math.exp(sum(math.log(x) for x in late) / len(late))
    w_init = summary["(a) init decoder"]["w"]
    P("")
    P(f"late-training proxies (b1,b2): w_raw = {', '.join(f'{x:.3g}' for x in late)} "
      f"(geometric mean {w_late:.3g}); at init (a): {w_init:.3g}")
    P("A single weight only rescales the style total; it cannot restore the per-layer shares above:")
    P("raw, relu4_1 (largest activations) is ~90% of the style loss and relu1_1 ~0.1-1%; normalised,")
    P("every layer gets ~10-50%. Matching that needs per-layer weights (lambda_k above), not one number.")
    P(f"runtime {time.time()-t0:.0f}s")
    text = "\n".join(out) + "\n"
    print(text)
    with open(os.path.join(HERE, "loss_balance.out.txt"), "w") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
