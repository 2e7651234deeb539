#!/usr/bin/env python3
"""Johnson et al.'s network in PyTorch: golden fixtures for `src/model/johnson.rs`,
and a check that our files load in PyTorch.

    .venv/bin/python scripts/johnson_torch.py            # (re)write tests/fixtures/johnson/
    .venv/bin/python scripts/johnson_torch.py --check weights/johnson-NAME.safetensors

Python is used ONLY here (fixtures, checks); the Rust crate never runs it.
Deterministic: no random numbers at all (weights and images are formulas), CPU,
torch.set_num_threads(2), float32.

This docstring is the CONTRACT the Rust tests (tests/johnson.rs) and the
trainer's parity test (train/) rely on.

The network (`TransformerNet`)
------------------------------
Exactly pytorch/examples `fast_neural_style/neural_style/transformer_net.py` (copied
below): ConvLayer = ReflectionPad2d(k // 2) + Conv2d(k, stride), keys NAME.conv2d.*;
conv1 3->32 9x9, in1, relu; conv2 32->64 3x3 s2, in2, relu; conv3 64->128 3x3 s2,
in3, relu; res1..res5 = ResidualBlock(128) (conv1, in1, relu, conv2, in2, + input);
deconv1 = UpsampleConvLayer(128, 64, 3, upsample=2) (F.interpolate nearest x2, then
ConvLayer), in4, relu; deconv2 (64 -> 32), in5, relu; deconv3 = ConvLayer(32, 3, 9).
InstanceNorm2d(c, affine=True) (eps 1e-5, no running stats). Input/output RGB in
0..255 (not clamped).

Initial weights (the formula; every value exact in float16)
---------------------------------------------------------
Tensors j = 0, 1, ... in state-dict order (keys.json); n = numel, flat row-major
index i, u[i] = (((7*i + 13*j) % 251) - 125) / 125 in float64. Conv weight and bias:
u * 1/sqrt(fan_in) (fan_in = C_in*k*k: PyTorch's default init bound); norm weight:
1 + 0.1*u; norm bias: 0.1*u; except deconv3 (the output layer, so that the output
lies in 0..255 like a trained network's): weight u * 64/sqrt(fan_in), bias
128 + 10*u. Each cast to float16, then to float32. (A periodic
formula rather than random draws: git compresses the 1.7M values of each file.)

tests/fixtures/johnson/
-----------------------
- `keys.json`: [[key, shape], ...] of the state dict, in order (the architecture).
- `init.safetensors`: the initial weights, float16, our format (keys as the state
  dict, metadata {"format": "johnson-transformer-net"}).
- `fns_running.pth`: the same weights as an old `fast_neural_style` file:
  torch.save (zip) of an OrderedDict with, after each norm's weight and bias,
  `running_mean` (zeros) and `running_var` (ones), all float16 (the published files
  are float32; float16 keeps the fixture small, and the importer upcasts any float).
- `fns_running_legacy.pth`: the same dict in the legacy (pre-1.6, non-zip) format
  the published networks have, storage keys renamed "0", "1", ... so the bytes are
  reproducible (make_fixtures.canonicalize_legacy).
- `fns.pth`: the same without the running_* entries (a current file).
- `parity.safetensors` (float32):
  - `forward.input` [1,3,32,40] in 0..255 (image formula below, x255) and
    `forward.output` = TransformerNet(init)(forward.input) [1,3,32,40];
    `forward.output64`: the same in float64 (rounded to f32 when stored).
  - Training inputs: `train.content.K` [2,3,64,64] in [0,1], K = 0,1,2 (the batch
    of step K), `train.style` [1,3,64,64] in [0,1]; `train.weights` [3] = (content,
    style, tv) weights; `train.content_layer` [1] = index into relu1_1..relu4_1 of
    our VGG-19 encoder (`vgg19-relu4_1.safetensors`, looked up as by
    scripts/make_fixtures.py).
  - The objective (adain::johnson::Objective::losses): y = net(255*c) / 255;
    content = mse(F_l(y), F_l(c)) at the content layer l; style = sum over relu1_1..
    relu4_1 of mse(gram(F(y)), gram(F(style)) repeated over the batch), gram(F) =
    F F^T / (C*H*W); tv = mean((y[:,:,1:]-y[:,:,:-1])^2) + mean((y[...,1:]-
    y[...,:-1])^2); total = wc*content + ws*style + wtv*tv.
  - 3 steps of torch.optim.Adam(lr 1e-3, betas (0.9, 0.999), eps 1e-8, no decay)
    from the initial weights, step K on batch K: zero_grad, losses, total.backward(),
    step. `loss.content`, `loss.style`, `loss.tv`, `loss.total` [3]: step K's
    UNWEIGHTED terms (total weighted), before its update.
  - For each key KEY, with n = numel, stride = max(1, n // 256) and
    idx = arange(0, n, stride) of the flattened tensor: `grad0.KEY` (the gradient of
    step 0's total at the initial weights) and `final.KEY` (after the 3 updates) at
    idx; and whole-tensor `grad0sq.KEY`, `finalsum.KEY` [1] (sum of squares of the
    gradient; sum of the final weights), so no tensor goes unchecked.
  - `grad0_f64.KEY` (same idx) and `loss64.content/style/tv/total` [1]: step 0 in
    float64 (network, encoder and inputs cast to double), the exact values f32 runs
    are measured against. PyTorch's own f32 gradients are up to ~9e-4 of a tensor's
    largest away from them (the instance norms amplify rounding), so gradient parity
    is judged as: ours as close to float64 as PyTorch's f32 is.
  - `loss64_steps.content/style/tv/total` [3] and `final64.KEY` (idx as above):
    the same 3 Adam steps in float64.
  - Caution for the trainer's 3-step parity: the conv biases that feed an instance
    norm and each residual block's `in2.bias` have gradients that are zero but for
    rounding (a per-channel constant before an instance norm changes nothing), in
    PyTorch too; Adam's first steps are sign-like, so their `final.*` values are
    rounding noise of size ~STEPS*lr: compare them with an absolute tolerance of
    ~2*STEPS*lr (they do not change the output). The same holds, more rarely, for
    any entry whose gradient is within rounding of zero, and those do change the
    output a little (after one step PyTorch's own f32 tv term is ~1e-4 from its
    float64 run's): judge the steps against `loss64_steps`/`final64` as tests/
    johnson.rs does (ours no further from float64 than PyTorch's f32 is).
Images (in [0,1]): img(seed, h, w)[c, y, x] = 0.5 + 0.35*sin(2*pi*(fx*x/w + fy*y/h)
+ phase_c) + 0.1*cos(2*pi*(x*y)/(h*w)*(1+seed)), fx = 1 + 0.7*seed, fy = 2 - 0.3*seed,
phase_c = seed + 2.1*c, float64 then float32. forward.input: seed 0 (1 image, 32x40);
train.content.K: seeds 1+2K, 2+2K; train.style: seed 9.
"""

import argparse
import copy
import json
import math
import os
import sys
from collections import OrderedDict

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import canonicalize_legacy  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.chdir(REPO)
torch.set_num_threads(2)
torch.set_default_dtype(torch.float32)
FIX = os.path.join("tests", "fixtures", "johnson")

# The training check's weights: each term moves the total at the initial
# weights (raw terms there: content ~1e5, style ~4e7, tv ~6e-3).
WEIGHTS = (1.0, 1e-2, 1e7)
CONTENT_LAYER = 1  # relu2_1 (see src/model/johnson/objective.rs)
LR = 1e-3
DECONV3_GAIN = 64.0
STEPS = 3


# ---------------------------------------------- transformer_net.py (pytorch/examples)
class TransformerNet(torch.nn.Module):
    def __init__(self):
        super(TransformerNet, self).__init__()
        # Initial convolution layers
        self.conv1 = ConvLayer(3, 32, kernel_size=9, stride=1)
        self.in1 = torch.nn.InstanceNorm2d(32, affine=True)
        self.conv2 = ConvLayer(32, 64, kernel_size=3, stride=2)
        self.in2 = torch.nn.InstanceNorm2d(64, affine=True)
        self.conv3 = ConvLayer(64, 128, kernel_size=3, stride=2)
        self.in3 = torch.nn.InstanceNorm2d(128, affine=True)
        # Residual layers
        self.res1 = ResidualBlock(128)
        self.res2 = ResidualBlock(128)
        self.res3 = ResidualBlock(128)
        self.res4 = ResidualBlock(128)
        self.res5 = ResidualBlock(128)
        # Upsampling Layers
        self.deconv1 = UpsampleConvLayer(128, 64, kernel_size=3, stride=1, upsample=2)
        self.in4 = torch.nn.InstanceNorm2d(64, affine=True)
        self.deconv2 = UpsampleConvLayer(64, 32, kernel_size=3, stride=1, upsample=2)
        self.in5 = torch.nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = ConvLayer(32, 3, kernel_size=9, stride=1)
        # Non-linearities
        self.relu = torch.nn.ReLU()

    def forward(self, X):
        y = self.relu(self.in1(self.conv1(X)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        y = self.res1(y)
        y = self.res2(y)
        y = self.res3(y)
        y = self.res4(y)
        y = self.res5(y)
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        y = self.deconv3(y)
        return y


class ConvLayer(torch.nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride):
        super(ConvLayer, self).__init__()
        reflection_padding = kernel_size // 2
        self.reflection_pad = torch.nn.ReflectionPad2d(reflection_padding)
        self.conv2d = torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x):
        out = self.reflection_pad(x)
        out = self.conv2d(out)
        return out


class ResidualBlock(torch.nn.Module):
    def __init__(self, channels):
        super(ResidualBlock, self).__init__()
        self.conv1 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in1 = torch.nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in2 = torch.nn.InstanceNorm2d(channels, affine=True)
        self.relu = torch.nn.ReLU()

    def forward(self, x):
        residual = x
        out = self.relu(self.in1(self.conv1(x)))
        out = self.in2(self.conv2(out))
        out = out + residual
        return out


class UpsampleConvLayer(torch.nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride, upsample=None):
        super(UpsampleConvLayer, self).__init__()
        self.upsample = upsample
        reflection_padding = kernel_size // 2
        self.reflection_pad = torch.nn.ReflectionPad2d(reflection_padding)
        self.conv2d = torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x):
        x_in = x
        if self.upsample:
            x_in = torch.nn.functional.interpolate(x_in, mode='nearest', scale_factor=self.upsample)
        out = self.reflection_pad(x_in)
        out = self.conv2d(out)
        return out


# --------------------------------------------------------------- our VGG-19 encoder
FEAT_IDX = (3, 10, 17, 30)  # relu1_1, relu2_1, relu3_1, relu4_1 (make_fixtures.py)
ENC_KEYS = [0, 2, 5, 9, 12, 16, 19, 22, 25, 29]


def make_vgg():
    pad = lambda: torch.nn.ReflectionPad2d((1, 1, 1, 1))
    conv, relu = torch.nn.Conv2d, torch.nn.ReLU
    pool = lambda: torch.nn.MaxPool2d((2, 2), (2, 2), (0, 0), ceil_mode=True)
    return torch.nn.Sequential(
        conv(3, 3, (1, 1)),
        pad(), conv(3, 64, (3, 3)), relu(), pad(), conv(64, 64, (3, 3)), relu(), pool(),
        pad(), conv(64, 128, (3, 3)), relu(), pad(), conv(128, 128, (3, 3)), relu(), pool(),
        pad(), conv(128, 256, (3, 3)), relu(), pad(), conv(256, 256, (3, 3)), relu(),
        pad(), conv(256, 256, (3, 3)), relu(), pad(), conv(256, 256, (3, 3)), relu(), pool(),
        pad(), conv(256, 512, (3, 3)), relu(),
    )


def load_vgg():
    cands = []
    if os.environ.get("ADAIN_WEIGHTS"):
        cands.append(os.path.join(os.environ["ADAIN_WEIGHTS"], "vgg19-relu4_1.safetensors"))
    cands += [os.path.join("weights", "vgg19-relu4_1.safetensors"),
              os.path.join("..", "shared", "weights", "vgg19-relu4_1.safetensors")]
    path = next((c for c in cands if os.path.isfile(c)), None)
    if path is None:
        sys.exit("vgg19-relu4_1.safetensors not found; tried: " + ", ".join(cands))
    vgg = make_vgg()
    vgg.load_state_dict({k: v.float() for k, v in load_file(path).items()})
    vgg.eval()
    for p in vgg.parameters():
        p.requires_grad_(False)
    return vgg


def features(vgg, x):
    out, h = [], x
    for i, layer in enumerate(vgg):
        h = layer(h)
        if i in FEAT_IDX:
            out.append(h)
    return out


def gram_matrix(y):  # as the example's utils.gram_matrix
    (b, ch, h, w) = y.size()
    f = y.view(b, ch, w * h)
    return f.bmm(f.transpose(1, 2)) / (ch * h * w)


def objective(vgg, net, content, style_grams, weights=WEIGHTS, layer=CONTENT_LAYER):
    y = net(content * 255.0) / 255.0
    fy, fc = features(vgg, y), features(vgg, content)
    c = F.mse_loss(fy[layer], fc[layer])
    s = 0.0
    for f, g in zip(fy, style_grams):
        s = s + F.mse_loss(gram_matrix(f), g.expand(content.shape[0], -1, -1))
    tv = ((y[:, :, 1:, :] - y[:, :, :-1, :]) ** 2).mean() + \
         ((y[:, :, :, 1:] - y[:, :, :, :-1]) ** 2).mean()
    total = weights[0] * c + weights[1] * s + weights[2] * tv
    return c, s, tv, total


# ------------------------------------------------------------------------ fixtures
def image(seed, h, w):
    yy = torch.arange(h, dtype=torch.float64).view(h, 1)
    xx = torch.arange(w, dtype=torch.float64).view(1, w)
    fx, fy = 1 + 0.7 * seed, 2 - 0.3 * seed
    chans = [0.5 + 0.35 * torch.sin(2 * math.pi * (fx * xx / w + fy * yy / h) + seed + 2.1 * c)
             + 0.1 * torch.cos(2 * math.pi * (xx * yy) / (h * w) * (1 + seed)) for c in range(3)]
    return torch.stack(chans).unsqueeze(0).float()


def formula_state(net):
    sd = OrderedDict()
    for j, (k, v) in enumerate(net.state_dict().items()):
        n = v.numel()
        i = torch.arange(n, dtype=torch.float64)
        u = (torch.remainder(7 * i + 13 * j, 251) - 125) / 125
        if k.endswith("conv2d.weight") or k.endswith("conv2d.bias"):
            w = net.get_submodule(k.rsplit(".", 1)[0]).weight
            fan_in = w.shape[1] * w.shape[2] * w.shape[3]
            val = u / math.sqrt(fan_in)
            if k.startswith("deconv3."):  # an output in 0..255, as a trained net's
                val = val * DECONV3_GAIN if k.endswith("weight") else 128 + 10 * u
        elif k.endswith(".weight"):
            val = 1 + 0.1 * u
        else:
            val = 0.1 * u
        sd[k] = val.to(torch.float16).to(torch.float32).view(v.shape)
    return sd


def subsample(t):
    flat = t.detach().reshape(-1)
    return flat[torch.arange(0, flat.numel(), max(1, flat.numel() // 256))].clone()


def make():
    os.makedirs(FIX, exist_ok=True)
    net = TransformerNet()
    sd = formula_state(net)
    net.load_state_dict(sd)
    keys = [[k, list(v.shape)] for k, v in sd.items()]
    with open(os.path.join(FIX, "keys.json"), "w") as f:
        json.dump(keys, f, indent=0)
        f.write("\n")
    save_file({k: v.half().contiguous() for k, v in sd.items()}, os.path.join(FIX, "init.safetensors"),
              metadata={"format": "johnson-transformer-net"})
    old = OrderedDict()
    for k, v in sd.items():
        old[k] = v.half()
        if k.rsplit(".", 1)[0].split(".")[-1].startswith("in") and k.endswith(".bias"):
            m = k.rsplit(".", 1)[0]
            old[m + ".running_mean"] = torch.zeros_like(v).half()
            old[m + ".running_var"] = torch.ones_like(v).half()
    torch.save(old, os.path.join(FIX, "fns_running.pth"))
    legacy = os.path.join(FIX, "fns_running_legacy.pth")
    torch.save(old, legacy, _use_new_zipfile_serialization=False)
    canonicalize_legacy(legacy)
    torch.save(OrderedDict((k, v.half()) for k, v in sd.items()), os.path.join(FIX, "fns.pth"))

    out = {}
    x = image(0, 32, 40) * 255.0
    with torch.no_grad():
        out["forward.input"] = x
        out["forward.output"] = net(x)
        out["forward.output64"] = net_from(sd).double()(x.double()).float()

    vgg = load_vgg()
    style = image(9, 64, 64)
    with torch.no_grad():
        style_grams = [gram_matrix(f) for f in features(vgg, style)]
    batches = [torch.cat([image(1 + 2 * k, 64, 64), image(2 + 2 * k, 64, 64)]) for k in range(STEPS)]
    for k, b in enumerate(batches):
        out[f"train.content.{k}"] = b
    out["train.style"] = style
    out["train.weights"] = torch.tensor(WEIGHTS, dtype=torch.float32)
    out["train.content_layer"] = torch.tensor([float(CONTENT_LAYER)])
    # the same step-0 objective in float64: what f32 rounding costs either side
    v64, n64 = copy.deepcopy(vgg).double(), copy.deepcopy(net).double()
    with torch.no_grad():
        g64 = [gram_matrix(f) for f in features(v64, style.double())]
    terms = objective(v64, n64, batches[0].double(), g64)
    terms[3].backward()
    for n, v in zip(("content", "style", "tv", "total"), terms):
        out[f"loss64.{n}"] = torch.tensor([v.item()], dtype=torch.float32)
    for name, p in n64.named_parameters():
        out[f"grad0_f64.{name}"] = subsample(p.grad).float()
    del v64, n64
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    hist = {n: [] for n in ("content", "style", "tv", "total")}
    params = dict(net.named_parameters())
    for k in range(STEPS):
        opt.zero_grad()
        c, s, tv, total = objective(vgg, net, batches[k], style_grams)
        total.backward()
        for n, v in zip(hist, (c, s, tv, total)):
            hist[n].append(v.item())
        if k == 0:
            for name, p in params.items():
                out[f"grad0.{name}"] = subsample(p.grad)
                out[f"grad0sq.{name}"] = (p.grad.double() ** 2).sum().float().view(1)
        opt.step()
        print(f"step {k}: " + ", ".join(f"{n} {hist[n][-1]:.6g}" for n in hist))
    for n, v in hist.items():
        out[f"loss.{n}"] = torch.tensor(v, dtype=torch.float32)
    # the same 3 steps in float64
    v64, n64 = copy.deepcopy(vgg).double(), net_from(sd).double()
    with torch.no_grad():
        g64 = [gram_matrix(f) for f in features(v64, style.double())]
    opt64 = torch.optim.Adam(n64.parameters(), lr=LR)
    hist64 = {n: [] for n in hist}
    for k in range(STEPS):
        opt64.zero_grad()
        terms = objective(v64, n64, batches[k].double(), g64)
        terms[3].backward()
        for n, v in zip(hist64, terms):
            hist64[n].append(v.item())
        opt64.step()
    for n, v in hist64.items():
        out[f"loss64_steps.{n}"] = torch.tensor(v, dtype=torch.float32)
    for name, p in n64.named_parameters():
        out[f"final64.{name}"] = subsample(p).float()
    del v64, n64
    for name, p in params.items():
        out[f"final.{name}"] = subsample(p)
        out[f"finalsum.{name}"] = p.detach().double().sum().float().view(1)
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(FIX, "parity.safetensors"))
    # our own file loads back into the example's network
    check(os.path.join(FIX, "init.safetensors"), expect=net_from(sd))
    for f in sorted(os.listdir(FIX)):
        print(f"{os.path.join(FIX, f)}: {os.path.getsize(os.path.join(FIX, f)) / 1e6:.2f} MB")


def net_from(sd):
    n = TransformerNet()
    n.load_state_dict(sd)
    return n


def check(path, expect=None):
    """Loads one of our safetensors files into the example's TransformerNet (strict:
    every key, no extra) and runs it on a 64x64 image."""
    sd = {k: v.float() for k, v in load_file(path).items()}
    net = TransformerNet()
    net.load_state_dict(sd, strict=True)
    x = image(3, 64, 64) * 255.0
    with torch.no_grad():
        y = net(x)
        assert torch.isfinite(y).all(), f"{path}: non-finite output"
        if expect is not None:
            d = (y - expect(x)).abs().max().item()
            assert d == 0.0, f"{path}: output differs by {d}"
    print(f"{path}: loads in PyTorch's TransformerNet (strict), output {tuple(y.shape)}, "
          f"range {y.min().item():.1f}..{y.max().item():.1f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", metavar="FILE", help="load our safetensors FILE in PyTorch")
    a = ap.parse_args()
    if a.check:
        check(a.check)
    else:
        make()
