//! The CPU fast path for "reflection-pad(1) + 3x3 conv (+ bias, ReLU)": one
//! fused op with its own backward. In f32 its three kernels (forward, input
//! gradient, weight gradient) are Winograd F(2x2, 3x3) ([`crate::winograd`]),
//! the forward F(4x4, 3x3) where no gradient flows; in bf16 on AMX they are
//! direct convolutions ([`crate::amx`]).
//!
//! Why it is ours: candle 0.11's CPU conv2d backward goes through a naive
//! `conv_transpose2d` and a conv whose kernel is the whole image, and a
//! reflection pad built from `index_select` backpropagates through a serial
//! `index_add`; together they made a training step several times slower than
//! PyTorch. Other devices keep the plain candle ops (see `layers::PaddedConv`).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::pad::f32_slice;

/// Arithmetic of the 3x3 convolutions on the CPU.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 everywhere: matches the PyTorch reference to ~1e-5 (Winograd
    /// F(4x4,3x3) forward, see `crate::winograd`).
    #[default]
    F32,
    /// bf16 products with f32 sums on Intel AMX (falls back to f32 where the CPU
    /// has no AMX).
    Bf16,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        })
    }
}

static PRECISION: AtomicU8 = AtomicU8::new(0);

/// The precision the convolutions really run at when `p` is asked for: bf16
/// needs AMX, else f32 is used.
pub fn effective(p: Precision) -> Precision {
    if p == Precision::Bf16 && !crate::amx::available() {
        Precision::F32
    } else {
        p
    }
}

/// Says (once per call) that a bf16 request runs in f32 on this CPU.
pub fn warn_if_unavailable(p: Precision) {
    if effective(p) != p {
        tracing::warn!("--precision bf16 needs Intel AMX, which this CPU lacks: using f32");
    }
}

/// Sets the precision of every following 3x3 convolution (process-wide),
/// warning when bf16 is asked for on a CPU without AMX.
pub fn set_precision(p: Precision) {
    warn_if_unavailable(p);
    PRECISION.store(p as u8, Ordering::Relaxed);
}

thread_local! {
    static OVERRIDE: std::cell::Cell<Option<Precision>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with convolutions on this thread at precision `p` (tests compare
/// both paths side by side without touching the process-wide setting).
pub fn with_precision<R>(p: Precision, f: impl FnOnce() -> R) -> R {
    let old = OVERRIDE.with(|o| o.replace(Some(p)));
    let r = f();
    OVERRIDE.with(|o| o.set(old));
    r
}

pub fn precision() -> Precision {
    OVERRIDE
        .with(|o| o.get())
        .unwrap_or(match PRECISION.load(Ordering::Relaxed) {
            1 => Precision::Bf16,
            _ => Precision::F32,
        })
}

static F4_FORWARD: AtomicBool = AtomicBool::new(true);

/// Whether f32 convolutions that no gradient flows through may take Winograd
/// F(4x4, 3x3) (process-wide; on by default). The trainer turns it off: the
/// targets it encodes with F4 differ from F2's by ~1e-5, and through Adam's
/// sign-like first steps that moved weights PyTorch left still
/// (`train/parity_test.rs`). Training's differentiable convs use F2 anyway
/// (see `Conv3x3Reflect`'s `tile`).
pub fn set_f4_forward(on: bool) {
    F4_FORWARD.store(on, Ordering::Relaxed);
}

/// Whether a conv with `c` input and `o` output channels takes the AMX path
/// (all do in bf16; the image's 3 channels are zero-padded to 32 there).
fn use_amx(_c: usize, _o: usize) -> bool {
    precision() == Precision::Bf16 && crate::amx::available()
}

/// The forward op: (x `[N,C,H,W]`, weight `[O,C,3,3]`, bias `[O]`) -> `[N,O,H,W]`,
/// with the ReLU that follows most convs fused in (saves a pass over the
/// output and its backward).
struct Conv3x3Reflect {
    relu: bool,
    /// The f32 Winograd variant: F(4x4, 3x3) where no gradient flows back
    /// (stylization, the training targets' encodings), F(2x2, 3x3) where one
    /// does. F4 rounds more (about 4e-6 of relu4_1's largest value against
    /// 6e-7); through the ReLU masks that became gradient differences of up to
    /// 5% of a layer's largest against PyTorch's in `train/parity_test.rs`.
    tile: crate::winograd::Tile,
}

impl CustomOp3 for Conv3x3Reflect {
    fn name(&self) -> &'static str {
        "conv3x3-reflect"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = xl.shape().dims4()?;
        let (o, c2, _, _) = wl.shape().dims4()?;
        if c != c2 || h < 2 || w < 2 {
            candle_core::bail!(
                "{}: input {:?} and weight {:?} do not fit",
                self.name(),
                xl.shape(),
                wl.shape()
            );
        }
        let (x, wt, b) = (
            f32_slice(xs, xl, "x")?,
            f32_slice(ws, wl, "weight")?,
            f32_slice(bs, bl, "bias")?,
        );
        if use_amx(c, o) {
            let out = crate::amx::conv_forward(x, n, c, h, w, wt, b, o, self.relu);
            return Ok((CpuStorage::F32(out), Shape::from((n, o, h, w))));
        }
        let out = crate::winograd::conv_forward(x, n, c, h, w, wt, b, o, self.relu, self.tile);
        Ok((CpuStorage::F32(out), Shape::from((n, o, h, w))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wt: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = if self.relu {
            grad.contiguous()?.apply_op2_no_bwd(res, &ReluGrad)?
        } else {
            grad.contiguous()?
        };
        // Only what something upstream needs: the frozen encoder's weights and
        // the images get no gradient.
        let gx = if x.track_op() {
            Some(grad.apply_op2_no_bwd(wt, &GradInput { shape: x.dims4()? })?)
        } else {
            None
        };
        let gw = if wt.track_op() {
            Some(x.contiguous()?.apply_op2_no_bwd(&grad, &GradWeight)?)
        } else {
            None
        };
        let gb = if b.track_op() {
            Some(grad.apply_op1_no_bwd(&GradBias)?)
        } else {
            None
        };
        Ok((gx, gw, gb))
    }
}

/// grad `[N,O,H,W]` -> its sum over images and pixels `[O]`, one channel per task
/// (candle's two reductions ran on one thread).
struct GradBias;

impl candle_core::CustomOp1 for GradBias {
    fn name(&self) -> &'static str {
        "bias-grad"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, o, h, w) = layout.shape().dims4()?;
        let g = f32_slice(storage, layout, self.name())?;
        let out: Vec<f32> = (0..o)
            .into_par_iter()
            .map(|oi| {
                (0..n)
                    .map(|ni| g[(ni * o + oi) * h * w..][..h * w].iter().sum::<f32>())
                    .sum()
            })
            .collect();
        Ok((CpuStorage::F32(out), Shape::from(o)))
    }
}

/// (grad, relu output) -> grad where the output is positive, else 0.
struct ReluGrad;

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "relu-grad"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, y) = (f32_slice(gs, gl, "grad")?, f32_slice(ys, yl, "output")?);
        let mut out = vec![0f32; g.len()];
        out.par_chunks_mut(1 << 16)
            .zip(g.par_chunks(1 << 16).zip(y.par_chunks(1 << 16)))
            .for_each(|(o, (g, y))| {
                for ((o, g), y) in o.iter_mut().zip(g).zip(y) {
                    *o = if *y > 0.0 { *g } else { 0.0 };
                }
            });
        Ok((CpuStorage::F32(out), gl.shape().clone()))
    }
}

/// (grad `[N,O,H,W]`, weight `[O,C,3,3]`) -> gradient of the input `[N,C,H,W]`.
struct GradInput {
    shape: (usize, usize, usize, usize),
}

impl CustomOp2 for GradInput {
    fn name(&self) -> &'static str {
        "conv3x3-reflect-grad-input"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = self.shape;
        let o = wl.shape().dims4()?.0;
        let (g, wt) = (f32_slice(gs, gl, "grad")?, f32_slice(ws, wl, "weight")?);
        if use_amx(c, o) {
            let dx = crate::amx::conv_grad_input(g, n, o, h, w, wt, c);
            return Ok((CpuStorage::F32(dx), Shape::from((n, c, h, w))));
        }
        let dx = crate::winograd::conv_grad_input(g, n, o, h, w, wt, c);
        Ok((CpuStorage::F32(dx), Shape::from((n, c, h, w))))
    }
}

/// (x `[N,C,H,W]`, grad `[N,O,H,W]`) -> gradient of the weight `[O,C,3,3]`.
struct GradWeight;

impl CustomOp2 for GradWeight {
    fn name(&self) -> &'static str {
        "conv3x3-reflect-grad-weight"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = xl.shape().dims4()?;
        let o = gl.shape().dims4()?.1;
        let (x, g) = (f32_slice(xs, xl, "x")?, f32_slice(gs, gl, "grad")?);
        if use_amx(c, o) {
            let dw = crate::amx::conv_grad_weight(x, g, n, c, o, h, w);
            return Ok((CpuStorage::F32(dw), Shape::from((o, c, 3, 3))));
        }
        let gw = crate::winograd::conv_grad_weight(x, g, n, c, o, h, w);
        Ok((CpuStorage::F32(gw), Shape::from((o, c, 3, 3))))
    }
}

/// `ReflectionPad2d(1)` + 3x3 conv + bias (+ ReLU) on the CPU, in f32 or (see
/// [`set_precision`]) bf16 on AMX.
/// x `[N,C,H,W]`, weight `[O,C,3,3]`, bias `[O]` -> `[N,O,H,W]`.
pub fn conv3x3_reflect(x: &Tensor, weight: &Tensor, bias: &Tensor, relu: bool) -> Result<Tensor> {
    let differentiable = x.track_op() || weight.track_op() || bias.track_op();
    let tile = if differentiable || !F4_FORWARD.load(Ordering::Relaxed) {
        crate::winograd::Tile::F2
    } else {
        crate::winograd::Tile::F4
    };
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        Conv3x3Reflect { relu, tile },
    )
}

/// The general op: (x `[N,C,H,W]`, weight `[O,C,k,k]`, bias `[O]`) -> `[N,O,Ho,Wo]`,
/// `ReflectionPad2d(k/2)` then a k x k conv of stride `stride`, through
/// [`crate::kernels::im2col`]'s chunked im2col + gemm, in f32 at any
/// precision (the AMX kernels are 3x3 stride 1 only). Johnson et al.'s 9x9
/// image layers and stride-2 downsampling take it; its backward is ours for
/// the same reason as [`conv3x3_reflect`]'s (candle's CPU conv backward).
struct ConvReflect {
    k: usize,
    stride: usize,
}

impl ConvReflect {
    fn geo(&self, x: &Layout, w: &Layout) -> Result<crate::kernels::im2col::Geo> {
        let (n, c, h, wd) = x.shape().dims4()?;
        let (o, c2, k1, k2) = w.shape().dims4()?;
        let p = self.k / 2;
        if c != c2 || k1 != self.k || k2 != self.k || h <= p || wd <= p || self.stride == 0 {
            candle_core::bail!(
                "conv{}x{}-reflect: input {:?} and weight {:?} do not fit (a side must pass the padding {p})",
                self.k,
                self.k,
                x.shape(),
                w.shape()
            );
        }
        Ok(crate::kernels::im2col::Geo {
            n,
            c,
            h,
            w: wd,
            o,
            k: self.k,
            s: self.stride,
        })
    }
}

impl CustomOp3 for ConvReflect {
    fn name(&self) -> &'static str {
        "conv-reflect"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.geo(xl, wl)?;
        let (x, wt, b) = (
            f32_slice(xs, xl, "x")?,
            f32_slice(ws, wl, "weight")?,
            f32_slice(bs, bl, "bias")?,
        );
        let (ho, wo) = g.out_hw();
        let out = crate::kernels::im2col::conv_forward(&g, x, wt, b);
        Ok((CpuStorage::F32(out), Shape::from((g.n, g.o, ho, wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wt: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let x = x.contiguous()?;
        let op = GradK {
            k: self.k,
            stride: self.stride,
            x_shape: x.dims4()?,
        };
        let gx = if x.track_op() {
            Some(grad.apply_op2_no_bwd(wt, &GradInputK(op))?)
        } else {
            None
        };
        let gw = if wt.track_op() {
            Some(x.apply_op2_no_bwd(&grad, &GradWeightK(op))?)
        } else {
            None
        };
        let gb = if b.track_op() {
            Some(grad.apply_op1_no_bwd(&GradBias)?)
        } else {
            None
        };
        Ok((gx, gw, gb))
    }
}

#[derive(Clone, Copy)]
struct GradK {
    k: usize,
    stride: usize,
    x_shape: (usize, usize, usize, usize),
}

impl GradK {
    fn geo(&self, o: usize) -> crate::kernels::im2col::Geo {
        let (n, c, h, w) = self.x_shape;
        crate::kernels::im2col::Geo {
            n,
            c,
            h,
            w,
            o,
            k: self.k,
            s: self.stride,
        }
    }
}

/// (grad `[N,O,Ho,Wo]`, weight `[O,C,k,k]`) -> gradient of the input `[N,C,H,W]`.
struct GradInputK(GradK);

impl CustomOp2 for GradInputK {
    fn name(&self) -> &'static str {
        "conv-reflect-grad-input"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0.geo(wl.shape().dims4()?.0);
        let (gr, wt) = (f32_slice(gs, gl, "grad")?, f32_slice(ws, wl, "weight")?);
        let dx = crate::kernels::im2col::conv_grad_input(&g, gr, wt);
        Ok((CpuStorage::F32(dx), Shape::from(self.0.x_shape)))
    }
}

/// (x `[N,C,H,W]`, grad `[N,O,Ho,Wo]`) -> gradient of the weight `[O,C,k,k]`.
struct GradWeightK(GradK);

impl CustomOp2 for GradWeightK {
    fn name(&self) -> &'static str {
        "conv-reflect-grad-weight"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0.geo(gl.shape().dims4()?.1);
        let (x, gr) = (f32_slice(xs, xl, "x")?, f32_slice(gs, gl, "grad")?);
        let dw = crate::kernels::im2col::conv_grad_weight(&g, x, gr);
        Ok((CpuStorage::F32(dw), Shape::from((g.o, g.c, g.k, g.k))))
    }
}

/// `ReflectionPad2d(k/2)` + k x k conv of stride `stride` + bias on the CPU
/// (f32; see `ConvReflect`). x `[N,C,H,W]`, weight `[O,C,k,k]`, bias `[O]`.
pub fn conv_reflect(x: &Tensor, weight: &Tensor, bias: &Tensor, stride: usize) -> Result<Tensor> {
    let k = weight.dim(3)?;
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        ConvReflect { k, stride },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::reflect_pad;
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};

    /// The plain candle graph the fused op replaces.
    fn reference(x: &Tensor, wt: &Tensor, b: &Tensor, relu: bool) -> Result<Tensor> {
        let y = reflect_pad(x, 1, 1, 1, 1)?
            .conv2d(wt, 0, 1, 1, 1)?
            .broadcast_add(&b.reshape((1, (), 1, 1))?)?;
        if relu {
            y.relu()
        } else {
            Ok(y)
        }
    }

    fn max_abs(t: &Tensor) -> f32 {
        t.abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// Rounds to bf16 (kept in f32), so the bf16 kernels and the f32 reference
    /// multiply the same numbers and differ only in the order of the f32 sums.
    fn bf16_exact(t: &Tensor) -> Tensor {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        let v: Vec<f32> = v.into_iter().map(crate::amx::round_bf16).collect();
        Tensor::from_vec(v, t.shape(), t.device()).unwrap()
    }

    /// Forward and all three gradients of the fused op against the candle graph
    /// on random shapes (odd sides, batch > 1, with and without ReLU).
    fn agree(
        precision: Precision,
        shapes: &[(usize, usize, usize, usize, usize)],
        tol: f32,
    ) -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for &(n, c, o, h, w) in shapes {
            let relu = rng.random_bool(0.5);
            let mut r = |shape: &[usize]| -> Result<Var> {
                let len = shape.iter().product();
                let v: Vec<f32> = (0..len).map(|_| rng.random_range(-1f32..1.)).collect();
                let t = bf16_exact(&Tensor::from_vec(v, shape, &dev)?);
                Var::from_tensor(&t)
            };
            let (x, wt, b) = (r(&[n, c, h, w])?, r(&[o, c, 3, 3])?, r(&[o])?);
            let probe = r(&[n, o, h, w])?.as_tensor().clone();
            let (fast, gf) = with_precision(precision, || -> Result<_> {
                let f = conv3x3_reflect(&x, &wt, &b, relu)?;
                let g = (&f * &probe)?.sum_all()?.backward()?;
                Ok((f, g))
            })?;
            let slow = reference(&x, &wt, &b, relu)?;
            // Without gradients, the forward pass alone (F4 in f32).
            let plain = with_precision(precision, || {
                conv3x3_reflect(
                    &x.as_tensor().detach(),
                    &wt.as_tensor().detach(),
                    &b.as_tensor().detach(),
                    relu,
                )
            })?;
            let gs = (&slow * &probe)?.sum_all()?.backward()?;
            let what = format!("{precision:?} n{n} c{c} o{o} {h}x{w} relu {relu}");
            let d = max_abs(&(&fast - &slow)?) / max_abs(&slow).max(1e-6);
            assert!(
                d < tol,
                "{what}: forward differs by {d} (relative to the max)"
            );
            let d = max_abs(&(&plain - &slow)?) / max_abs(&slow).max(1e-6);
            assert!(
                d < tol,
                "{what}: forward without gradients differs by {d} (relative to the max)"
            );
            for (name, v) in [("input", &x), ("weight", &wt), ("bias", &b)] {
                let (a, e) = (
                    gf.get(v.as_tensor()).unwrap(),
                    gs.get(v.as_tensor()).unwrap(),
                );
                let d = max_abs(&(a - e)?) / max_abs(e).max(1e-6);
                assert!(
                    d < tol,
                    "{what}: {name} gradient differs by {d} (relative to the max)"
                );
            }
        }
        Ok(())
    }

    /// The general op (9x9, stride 2, odd sides, batch > 1) and its three
    /// gradients against candle's own pad + conv2d graph.
    #[test]
    fn general_op_matches_candle() -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for &(n, c, o, h, w, k, s) in &[
            (2, 3, 5, 11, 13, 9, 1),
            (1, 4, 3, 9, 10, 9, 1),
            (3, 5, 6, 13, 8, 3, 2),
            (2, 2, 3, 4, 7, 3, 2),
            (1, 32, 3, 40, 33, 9, 1),
            (2, 24, 4, 10, 37, 9, 1),
            (3, 8, 1, 6, 5, 3, 1),
            (2, 6, 4, 17, 9, 5, 3),
        ] {
            let mut r = |shape: &[usize]| -> Result<Var> {
                let len = shape.iter().product();
                let v: Vec<f32> = (0..len).map(|_| rng.random_range(-1f32..1.)).collect();
                Var::from_tensor(&Tensor::from_vec(v, shape, &dev)?)
            };
            let (x, wt, b) = (r(&[n, c, h, w])?, r(&[o, c, k, k])?, r(&[o])?);
            // Stride 1, then every s-th row and column: candle's own strided
            // conv2d backward drops the last input column when (W + 2p - k)
            // is not a multiple of the stride.
            let p = k / 2;
            let full = reflect_pad(&x, p, p, p, p)?.conv2d(&wt, 0, 1, 1, 1)?;
            let every = |n: usize| {
                let idx: Vec<u32> = (0..n).step_by(s).map(|i| i as u32).collect();
                Tensor::new(idx.as_slice(), &dev)
            };
            let (_, _, fh, fw) = full.dims4()?;
            let slow = full
                .index_select(&every(fh)?, 2)?
                .index_select(&every(fw)?, 3)?
                .broadcast_add(&b.reshape((1, (), 1, 1))?)?;
            let fast = conv_reflect(&x, &wt, &b, s)?;
            let what = format!("n{n} c{c} o{o} {h}x{w} k{k} s{s}");
            assert_eq!(fast.dims(), slow.dims(), "{what}");
            let probe = r(slow.dims())?.as_tensor().clone();
            let gf = (&fast * &probe)?.sum_all()?.backward()?;
            let gs = (&slow * &probe)?.sum_all()?.backward()?;
            let d = max_abs(&(&fast - &slow)?) / max_abs(&slow).max(1e-6);
            assert!(d < 1e-5, "{what}: forward differs by {d}");
            for (name, v) in [("input", &x), ("weight", &wt), ("bias", &b)] {
                let (a, e) = (
                    gf.get(v.as_tensor()).unwrap(),
                    gs.get(v.as_tensor()).unwrap(),
                );
                let d = max_abs(&(a - e)?) / max_abs(e).max(1e-6);
                assert!(d < 1e-5, "{what}: {name} gradient differs by {d}");
            }
        }
        Ok(())
    }

    #[test]
    fn f32_op_matches_candle_on_random_shapes() -> Result<()> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let shapes: Vec<_> = (0..8)
            .map(|_| {
                (
                    rng.random_range(1..4),
                    rng.random_range(1..20),
                    rng.random_range(1..20),
                    rng.random_range(2..24),
                    rng.random_range(2..24),
                )
            })
            .chain([(2, 3, 4, 5, 4), (1, 3, 64, 2, 2)])
            .collect();
        agree(Precision::F32, &shapes, 1e-5)
    }

    #[test]
    fn f32_op_is_unchanged_by_chunks_of_tile_rows() -> Result<()> {
        let two_threads = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let chunks =
            |n, c, o, h, w| two_threads.install(|| crate::winograd::tile_row_chunks(n, c, o, h, w));
        // 16 channels 180 wide: chunks of 5 tile rows of 4 (5, 2) per image,
        // the last one short and ending in a partial tile (27 rows).
        let split = chunks(2, 16, 5, 27, 180);
        assert_eq!(split.len(), 4);
        assert_eq!(&split[2..], [(1, (0, 5)), (1, (5, 7))]);
        // One small image still gives each thread a chunk.
        assert_eq!(chunks(1, 512, 512, 32, 32), [(0, (0, 4)), (0, (4, 8))]);
        two_threads.install(|| {
            agree(
                Precision::F32,
                &[
                    (2, 16, 5, 27, 180),
                    (2, 64, 5, 27, 700),
                    (1, 40, 24, 32, 18),
                ],
                1e-5,
            )
        })
    }

    #[test]
    fn bf16_amx_op_matches_candle_on_bf16_inputs() -> Result<()> {
        if !crate::amx::available() {
            eprintln!("no AMX on this CPU: the bf16 path is not taken here, skipped");
            return Ok(());
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let shapes: Vec<_> = (0..6)
            .map(|_| {
                (
                    rng.random_range(1..4),
                    32 * rng.random_range(1..3),
                    32 * rng.random_range(1..3),
                    rng.random_range(2..30),
                    rng.random_range(2..40),
                )
            })
            .chain([(3, 32, 64, 17, 33), (1, 64, 32, 2, 2), (2, 32, 32, 16, 16)])
            // The image layers: 3 channels in, 3 out (zero-padded to 32).
            .chain([(2, 3, 64, 9, 21), (2, 64, 3, 20, 7)])
            .collect();
        // Inputs are exact in bf16, so only the f32 summation order differs.
        agree(Precision::Bf16, &shapes, 1e-5)
    }
}
