//! Johnson et al.'s per-style feed-forward network (seed 003, "Perceptual
//! losses for real-time style transfer"), exactly as PyTorch's
//! `fast_neural_style` example builds it (`neural_style/transformer_net.py`,
//! `TransformerNet`), with its state-dict keys, so that the example's files
//! import (`adain convert`) and ours load in it:
//!
//! ```text
//! conv1   ConvLayer 3->32 9x9      in1  relu
//! conv2   ConvLayer 32->64 3x3 s2  in2  relu
//! conv3   ConvLayer 64->128 3x3 s2 in3  relu
//! res1..res5  ResidualBlock(128): conv1 in1 relu conv2 in2, + input
//! deconv1 UpsampleConvLayer 128->64 3x3 (nearest x2 first)  in4 relu
//! deconv2 UpsampleConvLayer 64->32 3x3 (nearest x2 first)   in5 relu
//! deconv3 ConvLayer 32->3 9x9 (no norm, no activation)
//! ```
//!
//! ConvLayer = `ReflectionPad2d(k // 2)` + `Conv2d(k, stride)`, keys
//! `NAME.conv2d.weight`/`.bias`; every norm is `InstanceNorm2d(affine=True)`
//! (eps 1e-5, biased variance), keys `inN.weight`/`.bias`. Input and output
//! are in the example's pixel range, RGB 0..255 (the output is not clamped).
//! The convolutions take [`PaddedConv`]: the 3x3 stride-1 ones (ten in the
//! residual blocks, two after the upsamplings) the fused Winograd/AMX op and
//! so the precision switch; the 9x9 and stride-2 ones the chunked im2col op,
//! in f32 at any precision. The training objective is [`objective`].

pub mod objective;

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Init, VarBuilder};

use crate::layers::{reflect_pad, upsample2x, PaddedConv};
use crate::weights::WeightFile;

pub use objective::{Losses, Objective, Weights};

/// `__metadata__` `format` of our Johnson network files.
pub const FORMAT: &str = "johnson-transformer-net";

/// The side of an input must be a multiple of this for the output to keep
/// its size (two stride-2 convs, two x2 upsamplings); [`JohnsonNet::stylize`]
/// pads to it.
pub const STRIDE: usize = 4;

/// `InstanceNorm2d(c, affine=True)`: per sample and channel,
/// `(x - mean) / sqrt(biased var + 1e-5) * weight + bias` over H*W.
#[derive(Debug, Clone)]
pub struct InstanceNorm {
    weight: Tensor,
    bias: Tensor,
}

/// InstanceNorm2d's default eps.
pub const IN_EPS: f64 = 1e-5;

impl InstanceNorm {
    /// `weight` `[c]` (initially 1) and `bias` `[c]` (initially 0), as PyTorch.
    pub fn new(vb: VarBuilder, c: usize) -> candle_core::Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(c, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(c, "bias", Init::Const(0.0))?,
        })
    }
}

impl Module for InstanceNorm {
    /// On the CPU in f32 one op with f64 sums ([`crate::kernels::norm`]);
    /// elsewhere candle's ops.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            return crate::kernels::norm::instance_norm(x, &self.weight, &self.bias, IN_EPS, false);
        }
        self.forward_graph(x)
    }
}

impl InstanceNorm {
    /// `relu(norm(x) + residual)`, without the residual when `None` and the
    /// ReLU unless `relu`: the norm's three uses in the network, each one op
    /// on the CPU in f32. `x` is a conv's fresh output that nothing reads
    /// again: where no gradient is tracked (stylization) its storage is
    /// overwritten instead of a new buffer taken
    /// ([`crate::kernels::norm::instance_norm_in_place`]).
    fn forward_fused(
        &self,
        x: Tensor,
        relu: bool,
        residual: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        use crate::kernels::norm;
        if !(x.device().is_cpu() && x.dtype() == DType::F32) {
            let y = self.forward_graph(&x)?;
            let y = match residual {
                Some(r) => (y + r)?,
                None => y,
            };
            return if relu { y.relu() } else { Ok(y) };
        }
        let tracked = [&x, &self.weight, &self.bias]
            .into_iter()
            .chain(residual)
            .any(|t| t.track_op());
        if !tracked && x.is_contiguous() {
            return norm::instance_norm_in_place(
                x,
                &self.weight,
                &self.bias,
                IN_EPS,
                relu,
                residual,
            );
        }
        match residual {
            // The blocks' second norm has no ReLU, so the sum comes last.
            Some(r) => norm::instance_norm(&x, &self.weight, &self.bias, IN_EPS, false)? + r,
            None => norm::instance_norm(&x, &self.weight, &self.bias, IN_EPS, relu),
        }
    }
}

impl InstanceNorm {
    /// The same from candle's ops (any device; the reference in tests).
    pub fn forward_graph(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let flat = x.reshape((n, c, h * w))?;
        let mean = flat.mean_keepdim(D::Minus1)?;
        let centred = flat.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let y = centred.broadcast_div(&(var + IN_EPS)?.sqrt()?)?;
        y.broadcast_mul(&self.weight.reshape((1, c, 1))?)?
            .broadcast_add(&self.bias.reshape((1, c, 1))?)?
            .reshape((n, c, h, w))
    }
}

/// `ConvLayer`: reflection pad k/2 + conv (key `conv2d`).
#[derive(Debug, Clone)]
pub struct ConvLayer {
    conv: PaddedConv,
}

impl ConvLayer {
    pub fn new(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            conv: PaddedConv::strided(vb.pp("conv2d"), c_in, c_out, k, stride, false)?,
        })
    }
}

impl Module for ConvLayer {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.conv.forward(x)
    }
}

/// `UpsampleConvLayer`: nearest x2, then a stride-1 [`ConvLayer`].
#[derive(Debug, Clone)]
pub struct UpsampleConvLayer {
    conv: ConvLayer,
}

impl UpsampleConvLayer {
    pub fn new(vb: VarBuilder, c_in: usize, c_out: usize, k: usize) -> candle_core::Result<Self> {
        Ok(Self {
            conv: ConvLayer::new(vb, c_in, c_out, k, 1)?,
        })
    }
}

impl Module for UpsampleConvLayer {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.conv.forward(&upsample2x(x)?)
    }
}

/// `ResidualBlock(c)`: conv1 in1 relu conv2 in2, plus the input.
#[derive(Debug, Clone)]
pub struct ResidualBlock {
    conv1: ConvLayer,
    in1: InstanceNorm,
    conv2: ConvLayer,
    in2: InstanceNorm,
}

impl ResidualBlock {
    pub fn new(vb: VarBuilder, c: usize) -> candle_core::Result<Self> {
        Ok(Self {
            conv1: ConvLayer::new(vb.pp("conv1"), c, c, 3, 1)?,
            in1: InstanceNorm::new(vb.pp("in1"), c)?,
            conv2: ConvLayer::new(vb.pp("conv2"), c, c, 3, 1)?,
            in2: InstanceNorm::new(vb.pp("in2"), c)?,
        })
    }
}

impl Module for ResidualBlock {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.in1.forward_fused(self.conv1.forward(x)?, true, None)?;
        self.in2
            .forward_fused(self.conv2.forward(&y)?, false, Some(x))
    }
}

/// Every conv of the network: (key, in, out, kernel, stride), in the order
/// of the forward pass (`res{i}` stands for five blocks of two 128->128 3x3).
pub const CONVS: [(&str, usize, usize, usize, usize); 6] = [
    ("conv1", 3, 32, 9, 1),
    ("conv2", 32, 64, 3, 2),
    ("conv3", 64, 128, 3, 2),
    ("deconv1", 128, 64, 3, 1),
    ("deconv2", 64, 32, 3, 1),
    ("deconv3", 32, 3, 9, 1),
];

/// Residual blocks (128 channels each).
pub const RESIDUAL_BLOCKS: usize = 5;

/// Norms outside the residual blocks: (key, channels).
pub const NORMS: [(&str, usize); 5] = [
    ("in1", 32),
    ("in2", 64),
    ("in3", 128),
    ("in4", 64),
    ("in5", 32),
];

/// The network (`TransformerNet`). See the module documentation.
#[derive(Debug, Clone)]
pub struct TransformerNet {
    conv1: ConvLayer,
    in1: InstanceNorm,
    conv2: ConvLayer,
    in2: InstanceNorm,
    conv3: ConvLayer,
    in3: InstanceNorm,
    res: Vec<ResidualBlock>,
    deconv1: UpsampleConvLayer,
    in4: InstanceNorm,
    deconv2: UpsampleConvLayer,
    in5: InstanceNorm,
    deconv3: ConvLayer,
}

impl TransformerNet {
    /// From a VarBuilder (a weight file's tensors, or a VarMap for training:
    /// PyTorch's default init, U(+-1/sqrt(fan_in)) for convs, 1 and 0 for norms).
    pub fn new(vb: VarBuilder) -> candle_core::Result<Self> {
        let norm = |i: usize| InstanceNorm::new(vb.pp(NORMS[i].0), NORMS[i].1);
        Ok(Self {
            conv1: ConvLayer::new(vb.pp("conv1"), 3, 32, 9, 1)?,
            in1: norm(0)?,
            conv2: ConvLayer::new(vb.pp("conv2"), 32, 64, 3, 2)?,
            in2: norm(1)?,
            conv3: ConvLayer::new(vb.pp("conv3"), 64, 128, 3, 2)?,
            in3: norm(2)?,
            res: (1..=RESIDUAL_BLOCKS)
                .map(|i| ResidualBlock::new(vb.pp(format!("res{i}")), 128))
                .collect::<candle_core::Result<_>>()?,
            deconv1: UpsampleConvLayer::new(vb.pp("deconv1"), 128, 64, 3)?,
            in4: norm(3)?,
            deconv2: UpsampleConvLayer::new(vb.pp("deconv2"), 64, 32, 3)?,
            in5: norm(4)?,
            deconv3: ConvLayer::new(vb.pp("deconv3"), 32, 3, 9, 1)?,
        })
    }

    /// Every tensor of the state dict, (key, shape), in the example's order.
    pub fn tensor_shapes() -> Vec<(String, Vec<usize>)> {
        let conv = |k: &str, i: usize, o: usize, ks: usize| {
            [
                (format!("{k}.conv2d.weight"), vec![o, i, ks, ks]),
                (format!("{k}.conv2d.bias"), vec![o]),
            ]
        };
        let norm = |k: &str, c: usize| {
            [
                (format!("{k}.weight"), vec![c]),
                (format!("{k}.bias"), vec![c]),
            ]
        };
        let mut v = Vec::new();
        for (i, &(k, ci, co, ks, _)) in CONVS[..3].iter().enumerate() {
            v.extend(conv(k, ci, co, ks));
            v.extend(norm(NORMS[i].0, NORMS[i].1));
        }
        for r in 1..=RESIDUAL_BLOCKS {
            v.extend(conv(&format!("res{r}.conv1"), 128, 128, 3));
            v.extend(norm(&format!("res{r}.in1"), 128));
            v.extend(conv(&format!("res{r}.conv2"), 128, 128, 3));
            v.extend(norm(&format!("res{r}.in2"), 128));
        }
        for (i, &(k, ci, co, ks, _)) in CONVS[3..].iter().enumerate() {
            v.extend(conv(k, ci, co, ks));
            if let Some(&(n, c)) = NORMS.get(3 + i) {
                v.extend(norm(n, c));
            }
        }
        v
    }

    /// Whether a state dict's key is one `fast_neural_style` drops on load:
    /// the `running_mean`/`running_var` (and `num_batches_tracked`) that
    /// InstanceNorm2d saved before PyTorch 0.4 stopped tracking them.
    pub fn is_stale_key(key: &str) -> bool {
        let Some((module, what)) = key.rsplit_once('.') else {
            return false;
        };
        let norm = module.rsplit('.').next().unwrap_or(module);
        norm.strip_prefix("in")
            .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
            && matches!(what, "running_mean" | "running_var" | "num_batches_tracked")
    }
}

impl Module for TransformerNet {
    /// `[N,3,H,W]` in 0..255 -> `[N,3,H',W']` (H' = H when H is a multiple of
    /// [`STRIDE`]), not clamped.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.in1.forward_fused(self.conv1.forward(x)?, true, None)?;
        let y = self
            .in2
            .forward_fused(self.conv2.forward(&y)?, true, None)?;
        let mut y = self
            .in3
            .forward_fused(self.conv3.forward(&y)?, true, None)?;
        for r in &self.res {
            y = r.forward(&y)?;
        }
        let y = self
            .in4
            .forward_fused(self.deconv1.forward(&y)?, true, None)?;
        let y = self
            .in5
            .forward_fused(self.deconv2.forward(&y)?, true, None)?;
        self.deconv3.forward(&y)
    }
}

/// A Johnson network loaded from a file, ready to stylize.
pub struct JohnsonNet {
    pub net: TransformerNet,
    pub device: Device,
    /// The file it came from (names it in errors and outputs).
    pub path: std::path::PathBuf,
}

impl JohnsonNet {
    /// Loads a safetensors file with the example's keys (any float dtype),
    /// shape-checked: errors are one line naming the file.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let wf = WeightFile::load(path)?;
        Self::from_file(&wf, device)
    }

    /// [`Self::load`] on a file already read.
    pub fn from_file(wf: &WeightFile, device: &Device) -> Result<Self> {
        let p = wf.path.display();
        if wf.tensors.keys().any(|k| TransformerNet::is_stale_key(k)) {
            anyhow::bail!(
                "{p}: has instance-norm running_mean/running_var entries: import it with `adain convert {p} OUT.safetensors`"
            );
        }
        let expected = TransformerNet::tensor_shapes();
        if !wf.tensors.contains_key(&expected[0].0) {
            anyhow::bail!(
                "{p}: not a Johnson (fast_neural_style) network: no tensor `{}` (an AdaIN decoder goes to --decoder)",
                expected[0].0
            );
        }
        wf.check(&expected)?;
        let vb = VarBuilder::from_tensors(wf.on(device)?, DType::F32, device);
        let net = TransformerNet::new(vb).with_context(|| format!("{p}: building the network"))?;
        Ok(Self {
            net,
            device: device.clone(),
            path: wf.path.clone(),
        })
    }

    /// Stylizes `content` `[N,3,H,W]` in `[0,1]` (our image tensors): reflection-
    /// padded to a multiple of [`STRIDE`], scaled to 0..255 for the network,
    /// back to `[0,1]` (not clamped) and cropped to the content's size.
    pub fn stylize(&self, content: &Tensor) -> Result<Tensor> {
        stylize_with(&self.net, content)
    }
}

/// [`JohnsonNet::stylize`] for any [`TransformerNet`] (the trainer's samples).
pub fn stylize_with(net: &TransformerNet, content: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = content.dims4()?;
    let split = |n: usize| {
        let p = n.div_ceil(STRIDE) * STRIDE - n;
        (p / 2, p - p / 2)
    };
    let ((pt, pb), (pl, pr)) = (split(h), split(w));
    let x = (reflect_pad(content, pt, pb, pl, pr)? * 255.0)?;
    let y = (net.forward(&x)? / 255.0)?;
    Ok(y.narrow(2, pt, h)?.narrow(3, pl, w)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_keys_are_the_norms_running_stats() {
        for k in [
            "in1.running_mean",
            "in5.running_var",
            "res3.in2.running_mean",
            "res1.in1.num_batches_tracked",
        ] {
            assert!(TransformerNet::is_stale_key(k), "{k}");
        }
        for k in [
            "in1.weight",
            "res3.in2.bias",
            "conv1.conv2d.weight",
            "running_mean",
            "bn1.running_mean",
            "in.running_var",
        ] {
            assert!(!TransformerNet::is_stale_key(k), "{k}");
        }
    }

    /// The CPU op, with and without its fused ReLU, and its three gradients
    /// against candle's graph.
    #[test]
    fn instance_norm_op_matches_the_graph() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        // 7x6 planes: a tail after the sums' lanes of 8.
        let x =
            candle_core::Var::from_tensor(&(Tensor::randn(0f32, 3., (2, 5, 7, 6), &dev)? + 2.0)?)?;
        let w = candle_core::Var::from_tensor(&Tensor::randn(1f32, 0.3, 5, &dev)?)?;
        let b = candle_core::Var::from_tensor(&Tensor::randn(0f32, 0.3, 5, &dev)?)?;
        let norm = InstanceNorm {
            weight: w.as_tensor().clone(),
            bias: b.as_tensor().clone(),
        };
        let probe = Tensor::randn(0f32, 1., (2, 5, 7, 6), &dev)?;
        let max = |t: &Tensor| -> candle_core::Result<f32> {
            t.abs()?.flatten_all()?.max(0)?.to_scalar()
        };
        for relu in [false, true] {
            let slow = norm.forward_graph(&x)?;
            let (fast, slow) = if relu {
                (
                    norm.forward_fused(x.as_tensor().clone(), true, None)?,
                    slow.relu()?,
                )
            } else {
                (norm.forward(&x)?, slow)
            };
            assert!(fast.track_op(), "the op's output must stay on the graph");
            let gf = (&fast * &probe)?.sum_all()?.backward()?;
            let gs = (&slow * &probe)?.sum_all()?.backward()?;
            assert!(max(&(&fast - &slow)?)? < 1e-5, "relu {relu}");
            for v in [&x, &w, &b] {
                let (a, e) = (
                    gf.get(v.as_tensor()).unwrap(),
                    gs.get(v.as_tensor()).unwrap(),
                );
                let d = max(&(a - e)?)? / max(e)?;
                assert!(d < 1e-4, "relu {relu}: gradient differs by {d}");
            }
        }
        Ok(())
    }

    /// Without gradients the norm overwrites its input: `relu(norm(x))` and
    /// `norm(x) + residual` as the graph computes them, and the input's
    /// storage holds the result.
    #[test]
    fn in_place_norm_matches_the_graph() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let norm = InstanceNorm {
            weight: Tensor::randn(1f32, 0.3, 4, &dev)?,
            bias: Tensor::randn(0f32, 0.3, 4, &dev)?,
        };
        let x = (Tensor::randn(0f32, 3., (3, 4, 9, 5), &dev)? - 1.0)?;
        let r = Tensor::randn(0f32, 1., (3, 4, 9, 5), &dev)?;
        let max = |t: &Tensor| -> candle_core::Result<f32> {
            t.abs()?.flatten_all()?.max(0)?.to_scalar()
        };
        let want = [
            norm.forward_graph(&x)?.relu()?,
            (norm.forward_graph(&x)? + &r)?,
        ];
        for (i, want) in want.iter().enumerate() {
            let fresh = x.copy()?;
            let got = if i == 0 {
                norm.forward_fused(fresh.clone(), true, None)?
            } else {
                norm.forward_fused(fresh.clone(), false, Some(&r))?
            };
            assert!(max(&(&got - want)?)? < 1e-5, "case {i}");
            assert!(max(&(&fresh - &got)?)? == 0.0, "case {i}: not in place");
        }
        Ok(())
    }

    #[test]
    fn keys_and_forward_shape() -> candle_core::Result<()> {
        let shapes = TransformerNet::tensor_shapes();
        // 6 convs + 5 norms + 5 blocks x (2 convs + 2 norms), two tensors each
        assert_eq!(shapes.len(), 2 * (6 + 5 + 5 * 4));
        let vm = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let net = TransformerNet::new(vb)?;
        let vars = vm.data().lock().unwrap();
        let mut made: Vec<_> = vars
            .iter()
            .map(|(k, v)| (k.clone(), v.dims().to_vec()))
            .collect();
        let mut want = shapes.clone();
        made.sort();
        want.sort();
        assert_eq!(made, want);
        drop(vars);
        let x = Tensor::rand(0f32, 255., (2, 3, 20, 12), &Device::Cpu)?;
        assert_eq!(net.forward(&x)?.dims4()?, (2, 3, 20, 12));
        let x = Tensor::rand(0f32, 1., (1, 3, 19, 13), &Device::Cpu)?;
        let y = stylize_with(&net, &x).unwrap();
        assert_eq!(y.dims4()?, (1, 3, 19, 13));
        Ok(())
    }
}
