#!/usr/bin/env python3
"""Golden fixture for `adain optimize` (Gatys et al.'s method) and its L-BFGS.

Python is used ONLY to generate this fixture; the Rust crate never runs it.
Rerun with `bash scripts/fixtures.sh` (runs make_fixtures.py, then this script) or
`.venv/bin/python scripts/make_optimize_fixtures.py`. Deterministic: CPU,
torch.set_num_threads(2), float32, fixed generator seeds. The encoder (weights and
layers) is the one of make_fixtures.py, imported from there.

This docstring is the CONTRACT tests/optimize.rs relies on.

Objective (src/optimize.rs), for an image x [1,3,H,W] in [0,1]
---------------------------------------------------------------
F_l = features at l in relu1_1, relu2_1, relu3_1, relu4_1 (make_fixtures.encode_all).
- content_l(x) = mean((F_l(x) - F_l(c))^2)
- gram(F) = F F^T / (C*H*W), F reshaped [C, H*W] (batch 1)
- gram_l(x) = mean((gram(F_l(x)) - gram(F_l(s)))^2)
- musigma_l(x) = mean((mu_l(x) - mu_l(s))^2) + mean((sigma_l(x) - sigma_l(s))^2) with
  make_fixtures.calc_mean_std (unbiased variance + 1e-5)
- tv(x) = mean((x[:,:,1:,:] - x[:,:,:-1,:])^2) + mean((x[:,:,:,1:] - x[:,:,:,:-1])^2)
- total = CW * content_{relu4_1} + SW * sum_l LW_l gram_l + TVW * tv,
  CW = 1, SW = 0.05, LW = [1, 0.5, 2, 1] (relu1_1..relu4_1), TVW = 1e6.

tests/fixtures/optimize_parity.safetensors (float32)
----------------------------------------------------
Images: `content` [1,3,24,32], `style` [1,3,28,20] (make_fixtures.smooth_image),
`x0` [1,3,24,32] = 0.6 content + 0.4 uniform noise (in [0,1]).
- `content.{l}`, `gram.{l}`, `musigma.{l}` [1] for each layer l; `tv` [1]; `total` [1]:
  the terms at x0.
- `grad.total` [1,3,24,32]: d total / d x0. `grad.content` (of content_{relu4_1}),
  `grad.style` (of sum_l LW_l gram_l), `grad.musigma` (of sum_l LW_l musigma_l),
  `grad.tv`: the gradients of the single terms.
- `lbfgs.{none,wolfe}.losses` [E]: the loss of every closure evaluation, in order, of
  one torch.optim.LBFGS(lr=1, max_iter=6, history_size=4, line_search_fn=None or
  "strong_wolfe") .step(closure) on `total` from x0; the closure first clamps x to
  [0,1] in place (as the PyTorch tutorial), then evaluates. `lbfgs.{none,wolfe}.x`
  [1,3,24,32]: x after the step (not clamped again).
- `rosen.x0` [4] = [-1.2, 1.0, -0.5, 0.8]; `rosen.losses` [E], `rosen.x` [4]: LBFGS(lr=1,
  max_iter=40, history_size=5, line_search_fn="strong_wolfe") one step on the 4-d
  Rosenbrock sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2 (float32).
"""

import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as ref  # noqa: E402

LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1"]
CW, SW, TVW = 1.0, 0.05, 1e6
LW = [1.0, 0.5, 2.0, 1.0]


def gram(f):
    n, c, h, w = f.shape
    m = f.reshape(n, c, h * w)
    return m @ m.transpose(1, 2) / (c * h * w)


def mse(a, b):
    return ((a - b) ** 2).mean()


def tv(x):
    return ((x[:, :, 1:, :] - x[:, :, :-1, :]) ** 2).mean() + \
        ((x[:, :, :, 1:] - x[:, :, :, :-1]) ** 2).mean()


def musigma(f, s):
    (fm, fs), (sm, ss) = ref.calc_mean_std(f), ref.calc_mean_std(s)
    return mse(fm, sm) + mse(fs, ss)


class Gatys:
    """The objective of src/optimize.rs (content at one layer, Gram style, TV)."""

    def __init__(self, vgg, content, style, content_layer=3, cw=CW, sw=SW, lw=LW, tvw=TVW):
        self.vgg, self.cl, self.cw, self.sw, self.lw, self.tvw = vgg, content_layer, cw, sw, lw, tvw
        with torch.no_grad():
            self.cf = ref.encode_all(vgg, content)[content_layer]
            self.sf = ref.encode_all(vgg, style)
            self.sg = [gram(f) for f in self.sf]

    def terms(self, x):
        f = ref.encode_all(self.vgg, x)
        content = mse(f[self.cl], self.cf)
        style = sum(w * mse(gram(a), g) for w, a, g in zip(self.lw, f, self.sg))
        t = tv(x)
        return content, style, t, self.cw * content + self.sw * style + self.tvw * t


def grad_of(fn, x0):
    x = x0.clone().requires_grad_(True)
    fn(x).backward()
    return x.grad.detach().clone()


def lbfgs_run(obj, x0, line_search):
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1, max_iter=6, history_size=4, line_search_fn=line_search)
    losses = []

    def closure():
        with torch.no_grad():
            x.clamp_(0, 1)
        opt.zero_grad()
        loss = obj(x)
        loss.backward()
        losses.append(loss.item())
        return loss

    opt.step(closure)
    return torch.tensor(losses, dtype=torch.float32), x.detach().clone()


def rosenbrock(x):
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def main():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    vgg = ref.load_vgg()
    content = ref.smooth_image(41, 24, 32, (3, 4), [0.6, 0.5, 0.6], [0.2, 0.3, 0.1], 0.15, (1.5, 1.0))
    style = ref.smooth_image(42, 28, 20, (4, 3), [0.5, 0.4, 0.3], [0.5, 0.25, 0.0], 0.25, (3.0, 2.0))
    g = torch.Generator().manual_seed(43)
    x0 = (0.6 * content + 0.4 * torch.rand(content.shape, generator=g)).contiguous()
    out = {"content": content, "style": style, "x0": x0}

    obj = Gatys(vgg, content, style)
    with torch.no_grad():
        cf = ref.encode_all(vgg, content)
        sf = ref.encode_all(vgg, style)
        xf = ref.encode_all(vgg, x0)
        for i, l in enumerate(LAYERS):
            out[f"content.{l}"] = mse(xf[i], cf[i]).reshape(1)
            out[f"gram.{l}"] = mse(gram(xf[i]), gram(sf[i])).reshape(1)
            out[f"musigma.{l}"] = musigma(xf[i], sf[i]).reshape(1)
        out["tv"] = tv(x0).reshape(1)
        out["total"] = obj.terms(x0)[3].reshape(1)

    out["grad.total"] = grad_of(lambda x: obj.terms(x)[3], x0)
    out["grad.content"] = grad_of(lambda x: obj.terms(x)[0], x0)
    out["grad.style"] = grad_of(lambda x: obj.terms(x)[1], x0)
    out["grad.tv"] = grad_of(tv, x0)
    out["grad.musigma"] = grad_of(
        lambda x: sum(w * musigma(a, b) for w, a, b in zip(LW, ref.encode_all(vgg, x), sf)), x0)

    for name, ls in [("none", None), ("wolfe", "strong_wolfe")]:
        losses, x = lbfgs_run(lambda x: obj.terms(x)[3], x0, ls)
        out[f"lbfgs.{name}.losses"] = losses
        out[f"lbfgs.{name}.x"] = x
        print(f"lbfgs {name}: {len(losses)} evaluations, losses {losses.tolist()}")

    r0 = torch.tensor([-1.2, 1.0, -0.5, 0.8], dtype=torch.float32)
    r = r0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([r], lr=1, max_iter=40, history_size=5, line_search_fn="strong_wolfe")
    rl = []

    def closure():
        opt.zero_grad()
        loss = rosenbrock(r)
        loss.backward()
        rl.append(loss.item())
        return loss

    opt.step(closure)
    out["rosen.x0"] = r0
    out["rosen.losses"] = torch.tensor(rl, dtype=torch.float32)
    out["rosen.x"] = r.detach().clone()
    print(f"rosenbrock: {len(rl)} evaluations, final loss {rl[-1]:.3e}, x {r.tolist()}")

    for k in sorted(out):
        if out[k].numel() == 1:
            print(f"  {k:<18} {out[k].item():.6g}")
    path = os.path.join(ref.FIX, "optimize_parity.safetensors")
    save_file({k: v.detach().to(torch.float32).contiguous() for k, v in out.items()}, path,
              metadata={"generator": f"scripts/make_optimize_fixtures.py (torch {torch.__version__})"})
    print(f"{path}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
