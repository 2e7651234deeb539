//! The building blocks both networks are made of: a reflection-padded 3x3
//! convolution (optionally followed by ReLU), the reflection pad itself, and
//! the resampling layers (2x2 max-pool, nearest 2x upsampling).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Module, Result, Shape, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Init, VarBuilder};
use rayon::prelude::*;

/// Pads the last two dims of an NCHW tensor by reflection (no edge repeat), like
/// `torch.nn.ReflectionPad2d((left, right, top, bottom))`.
///
/// Done as one gather per axis, so it is differentiable (index_select's backward
/// is index_add) and works for any pad smaller than the side.
pub fn reflect_pad(
    x: &Tensor,
    top: usize,
    bottom: usize,
    left: usize,
    right: usize,
) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let x = pad_axis(x, 2, h, top, bottom)?;
    pad_axis(&x, 3, w, left, right)
}

fn pad_axis(x: &Tensor, dim: usize, n: usize, before: usize, after: usize) -> Result<Tensor> {
    if before == 0 && after == 0 {
        return Ok(x.clone());
    }
    if before >= n || after >= n {
        candle_core::bail!("reflection pad of {before}/{after} needs a side longer than {n}");
    }
    let idx: Vec<u32> = (0..before)
        .rev()
        .map(|i| i + 1)
        .chain(0..n)
        .chain((0..after).map(|i| n - 2 - i))
        .map(|i| i as u32)
        .collect();
    let idx = Tensor::from_vec(idx, before + n + after, x.device())?;
    x.contiguous()?.index_select(&idx, dim)
}

/// `ReflectionPad2d(k/2)` + k x k conv (no padding of its own, stride 1
/// unless built with [`PaddedConv::strided`]) + optional ReLU.
///
/// On the CPU in f32: 3x3 stride 1 takes the fused Winograd/AMX op
/// ([`crate::conv::conv3x3_reflect`]), 1x1 a matrix product, any other size
/// or stride the chunked im2col op ([`crate::conv::conv_reflect`]). Other
/// devices use candle's pad + conv2d.
#[derive(Debug, Clone)]
pub struct PaddedConv {
    conv: Conv2d,
    relu: bool,
    stride: usize,
}

impl PaddedConv {
    /// Weights `{prefix}.weight` [out, in, k, k] and `{prefix}.bias` [out]. When the
    /// VarBuilder creates them (training from scratch) they get PyTorch's default
    /// `Conv2d` init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as the reference decoder does.
    pub fn new(vb: VarBuilder, c_in: usize, c_out: usize, k: usize, relu: bool) -> Result<Self> {
        Self::strided(vb, c_in, c_out, k, 1, relu)
    }

    /// [`Self::new`] with a stride (PyTorch's `Conv2d(.., stride)` after
    /// `ReflectionPad2d(k // 2)`).
    pub fn strided(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        relu: bool,
    ) -> Result<Self> {
        let bound = 1.0 / ((c_in * k * k) as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let weight = vb.get_with_hints((c_out, c_in, k, k), "weight", init)?;
        let bias = vb.get_with_hints(c_out, "bias", init)?;
        let cfg = Conv2dConfig {
            stride,
            ..Default::default()
        };
        let conv = Conv2d::new(weight, Some(bias), cfg);
        Ok(Self { conv, relu, stride })
    }
}

impl Module for PaddedConv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, _, k) = self.conv.weight().dims4()?;
        let fast = x.device().is_cpu() && x.dtype() == candle_core::DType::F32;
        let s = self.stride;
        let y = match self.conv.bias() {
            Some(b) if fast && k == 3 && s == 1 => {
                return crate::conv::conv3x3_reflect(x, self.conv.weight(), b, self.relu)
            }
            Some(b) if fast && k == 1 && s == 1 => conv1x1(x, self.conv.weight(), b)?,
            Some(b) if fast => crate::conv::conv_reflect(x, self.conv.weight(), b, s)?,
            _ => {
                let p = k / 2;
                let x = if p > 0 {
                    reflect_pad(x, p, p, p, p)?
                } else {
                    x.clone()
                };
                // Only the rows and columns an output reads: candle's strided
                // conv2d backward returns a gradient one short otherwise
                // (when (side + 2p - k) is not a multiple of the stride).
                let (_, _, hp, wp) = x.dims4()?;
                let used = |n: usize| (n.saturating_sub(k) / s) * s + k;
                let x = if s > 1 && (used(hp) < hp || used(wp) < wp) {
                    x.narrow(2, 0, used(hp).min(hp))?
                        .narrow(3, 0, used(wp).min(wp))?
                } else {
                    x
                };
                self.conv.forward(&x)?
            }
        };
        if self.relu {
            y.relu()
        } else {
            Ok(y)
        }
    }
}

/// A 1x1 conv as one matrix product (candle's conv backward is slow on CPU).
fn conv1x1(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let o = weight.dim(0)?;
    let cols = x.permute((1, 0, 2, 3))?.reshape((c, n * h * w))?;
    let y = weight
        .reshape((o, c))?
        .matmul(&cols)?
        .broadcast_add(&bias.reshape((o, 1))?)?;
    y.reshape((o, n, h, w))?.permute((1, 0, 2, 3))
}

/// Nearest-neighbour x2 upsampling: [`Resample`] on the CPU; elsewhere a
/// broadcast, whose backward is a plain sum (candle's `upsample_nearest2d`
/// backward is a grouped conv).
pub fn upsample2x(x: &Tensor) -> Result<Tensor> {
    if on_cpu(x) {
        return x.contiguous()?.apply_op1(Resample::Upsample2x);
    }
    upsample_graph(x)
}

fn upsample_graph(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    x.reshape((n, c, h, 1, w, 1))?
        .broadcast_as((n, c, h, 2, w, 2))?
        .reshape((n, c, 2 * h, 2 * w))
}

/// 2x2 max-pool, stride 2, `ceil_mode=True` as in the reference VGG: an odd side
/// keeps its last row/column as a window of its own (padded by repeating it, which
/// leaves the max unchanged).
///
/// [`Resample`] on the CPU. Elsewhere built from a reshape and two max
/// reductions rather than `Tensor::max_pool2d`: candle 0.11's max-pool backward
/// scales the gradient by the window's share of maxima (1/4 for a single
/// maximum) instead of routing it whole, which made training gradients disagree
/// with PyTorch (tests in train/parity_test.rs).
pub fn max_pool2x2_ceil(x: &Tensor) -> Result<Tensor> {
    if on_cpu(x) {
        return x.contiguous()?.apply_op1(Resample::MaxPool2x2Ceil);
    }
    pool_graph(x)
}

fn pool_graph(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let x = if h % 2 == 1 {
        x.pad_with_same(2, 0, 1)?
    } else {
        x.clone()
    };
    let x = if w % 2 == 1 {
        x.pad_with_same(3, 0, 1)?
    } else {
        x
    };
    let (n, c, h, w) = x.dims4()?;
    x.reshape((n, c, h / 2, 2, w / 2, 2))?.max(5)?.max(3)
}

/// Whether `x` takes [`Resample`]: f32 on the CPU.
fn on_cpu(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32
}

/// The two resampling layers as CPU kernels, forward and backward, one plane
/// per task. candle's graph versions (still used on other devices) run on one
/// thread: 4% (max-pool's two reductions) and 3% (upsampling's strided copy)
/// of a 512^2 stylization, and their backward (a comparison, a select and
/// reductions) was most of a training step's serial time.
#[derive(Clone, Copy)]
enum Resample {
    Upsample2x,
    MaxPool2x2Ceil,
}

impl CustomOp1 for Resample {
    fn name(&self) -> &'static str {
        match self {
            Resample::Upsample2x => "upsample2x",
            Resample::MaxPool2x2Ceil => "max-pool2x2-ceil",
        }
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = layout.shape().dims4()?;
        let x = crate::kernels::pad::f32_slice(storage, layout, self.name())?;
        let (ho, wo) = match self {
            Resample::Upsample2x => (2 * h, 2 * w),
            Resample::MaxPool2x2Ceil => (h.div_ceil(2), w.div_ceil(2)),
        };
        let mut out = vec![0f32; n * c * ho * wo];
        out.par_chunks_mut(ho * wo)
            .zip(x.par_chunks(h * w))
            .for_each(|(dst, src)| match self {
                Resample::Upsample2x => {
                    for (y, row) in src.chunks_exact(w).enumerate() {
                        let (d0, d1) = dst[2 * y * wo..][..2 * wo].split_at_mut(wo);
                        for (pair, &v) in d0.chunks_exact_mut(2).zip(row) {
                            pair.fill(v);
                        }
                        d1.copy_from_slice(d0);
                    }
                }
                Resample::MaxPool2x2Ceil => {
                    for (oy, d) in dst.chunks_exact_mut(wo).enumerate() {
                        // An odd side's last window is its last row or column alone.
                        let r0 = &src[2 * oy * w..][..w];
                        let r1 = &src[(2 * oy + 1).min(h - 1) * w..][..w];
                        for (ox, v) in d.iter_mut().enumerate() {
                            let (x0, x1) = (2 * ox, (2 * ox + 1).min(w - 1));
                            *v = r0[x0].max(r0[x1]).max(r1[x0].max(r1[x1]));
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c, ho, wo))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        Ok(Some(match self {
            Resample::Upsample2x => grad.apply_op1_no_bwd(&UpsampleGrad)?,
            Resample::MaxPool2x2Ceil => arg.contiguous()?.apply_op2_no_bwd(&grad, &PoolGrad)?,
        }))
    }
}

/// Upsampling's backward: grad [N,C,2H,2W] -> the sums of its 2x2 blocks.
struct UpsampleGrad;

impl CustomOp1 for UpsampleGrad {
    fn name(&self) -> &'static str {
        "upsample2x-grad"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h2, w2) = layout.shape().dims4()?;
        let g = crate::kernels::pad::f32_slice(storage, layout, self.name())?;
        let (h, w) = (h2 / 2, w2 / 2);
        let mut out = vec![0f32; n * c * h * w];
        out.par_chunks_mut(h * w)
            .zip(g.par_chunks(h2 * w2))
            .for_each(|(dst, src)| {
                for (y, d) in dst.chunks_exact_mut(w).enumerate() {
                    let (r0, r1) = (&src[2 * y * w2..][..w2], &src[(2 * y + 1) * w2..][..w2]);
                    for ((v, a), b) in d.iter_mut().zip(r0.chunks_exact(2)).zip(r1.chunks_exact(2))
                    {
                        *v = (a[0] + a[1]) + (b[0] + b[1]);
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c, h, w))))
    }
}

/// Max-pool's backward: (x [N,C,H,W], grad [N,C,ceil(H/2),ceil(W/2)]) -> dx,
/// each window's gradient whole to its first largest element in row-major
/// order, as PyTorch's CPU kernel routes it.
struct PoolGrad;

impl CustomOp2 for PoolGrad {
    fn name(&self) -> &'static str {
        "max-pool2x2-ceil-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = xl.shape().dims4()?;
        let (x, g) = (
            crate::kernels::pad::f32_slice(xs, xl, self.name())?,
            crate::kernels::pad::f32_slice(gs, gl, self.name())?,
        );
        let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
        let mut out = vec![0f32; n * c * h * w];
        out.par_chunks_mut(h * w)
            .zip(x.par_chunks(h * w).zip(g.par_chunks(ho * wo)))
            .for_each(|(dst, (src, grad))| {
                for (oy, grow) in grad.chunks_exact(wo).enumerate() {
                    for (ox, &gv) in grow.iter().enumerate() {
                        let mut best = (2 * oy) * w + 2 * ox;
                        for (y, xx) in [(0, 1), (1, 0), (1, 1)] {
                            let (yy, xc) = (2 * oy + y, 2 * ox + xx);
                            if yy < h && xc < w && src[yy * w + xc] > src[best] {
                                best = yy * w + xc;
                            }
                        }
                        dst[best] += gv;
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c, h, w))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn reflect_pad_matches_torch_semantics() -> Result<()> {
        let x = Tensor::arange(0f32, 12., &Device::Cpu)?.reshape((1, 1, 3, 4))?;
        let y = reflect_pad(&x, 1, 2, 2, 1)?;
        assert_eq!(y.dims4()?, (1, 1, 6, 7));
        // row order: 1,0,1,2,1,0 ; col order: 2,1,0,1,2,3,2
        let rows = [1, 0, 1, 2, 1, 0];
        let cols = [2, 1, 0, 1, 2, 3, 2];
        let got = y.flatten_all()?.to_vec1::<f32>()?;
        for (i, r) in rows.iter().enumerate() {
            for (j, c) in cols.iter().enumerate() {
                assert_eq!(got[i * 7 + j], (r * 4 + c) as f32);
            }
        }
        assert!(reflect_pad(&x, 3, 0, 0, 0).is_err());
        Ok(())
    }

    #[test]
    fn ceil_pool_keeps_odd_edge() -> Result<()> {
        let x = Tensor::arange(0f32, 15., &Device::Cpu)?.reshape((1, 1, 3, 5))?;
        let y = max_pool2x2_ceil(&x)?;
        assert_eq!(y.dims4()?, (1, 1, 2, 3));
        assert_eq!(
            y.flatten_all()?.to_vec1::<f32>()?,
            vec![6., 8., 9., 11., 13., 14.]
        );
        Ok(())
    }

    #[test]
    fn upsample_is_nearest() -> Result<()> {
        let x = Tensor::arange(0f32, 6., &Device::Cpu)?.reshape((1, 1, 2, 3))?;
        let a = upsample2x(&x)?;
        let b = x.upsample_nearest2d(4, 6)?;
        assert_eq!(
            a.flatten_all()?.to_vec1::<f32>()?,
            b.flatten_all()?.to_vec1::<f32>()?
        );
        Ok(())
    }

    /// The CPU kernels give the graph versions' values exactly, on odd sides
    /// and batch > 1, and their gradients too (random inputs: no ties), except
    /// max-pool's at an odd side's edge: the graph pads by repeating the edge,
    /// and the tie sends the edge's gradient twice. There each window's
    /// gradient must arrive once, whole (PyTorch's ceil-mode windows hold only
    /// real elements).
    #[test]
    fn cpu_kernels_match_the_graphs() -> Result<()> {
        let dev = Device::Cpu;
        for (n, c, h, w) in [(2, 3, 7, 5), (1, 4, 8, 6), (3, 2, 1, 9), (1, 1, 2, 1)] {
            let x = candle_core::Var::from_tensor(&Tensor::randn(0f32, 1., (n, c, h, w), &dev)?)?;
            for (name, fast, graph) in [
                (
                    "pool",
                    max_pool2x2_ceil as fn(&Tensor) -> Result<Tensor>,
                    pool_graph as fn(&Tensor) -> Result<Tensor>,
                ),
                ("upsample", upsample2x, upsample_graph),
            ] {
                let what = format!("{name} {n}x{c}x{h}x{w}");
                let (a, b) = (fast(x.as_tensor())?, graph(x.as_tensor())?);
                assert_eq!(a.dims(), b.dims(), "{what}");
                let v = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
                assert_eq!(v(&a)?, v(&b)?, "{what}");
                let probe = Tensor::randn(0f32, 1., a.dims(), &dev)?;
                let ga = (&a * &probe)?.sum_all()?.backward()?;
                let gb = (&b * &probe)?.sum_all()?.backward()?;
                let (ga, gb) = (
                    ga.get(x.as_tensor()).unwrap(),
                    gb.get(x.as_tensor()).unwrap(),
                );
                if name == "upsample" {
                    // Sums of the same four values, in another order.
                    let d = (ga - gb)?
                        .abs()?
                        .flatten_all()?
                        .max(0)?
                        .to_scalar::<f32>()?;
                    assert!(d < 1e-5, "{what}: gradient differs by {d}");
                } else if h % 2 == 0 && w % 2 == 0 {
                    assert_eq!(v(ga)?, v(gb)?, "{what}: gradient");
                } else {
                    // One element per window gets it, the window's gradient whole.
                    let (g, p) = (v(ga)?, v(&probe)?);
                    assert_eq!(g.iter().filter(|x| **x != 0.0).count(), p.len(), "{what}");
                    let (mut gs, mut ps) = (g.clone(), p.clone());
                    gs.retain(|x| *x != 0.0);
                    gs.sort_by(f32::total_cmp);
                    ps.sort_by(f32::total_cmp);
                    assert_eq!(gs, ps, "{what}: gradient");
                }
            }
        }
        Ok(())
    }

    /// A window of equal values sends its gradient to the first, as PyTorch.
    #[test]
    fn pool_gradient_of_a_tie_goes_to_the_first() -> Result<()> {
        let x = candle_core::Var::from_tensor(&Tensor::zeros(
            (1, 1, 2, 2),
            candle_core::DType::F32,
            &Device::Cpu,
        )?)?;
        let grads = max_pool2x2_ceil(x.as_tensor())?.sum_all()?.backward()?;
        let g = grads
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(g, vec![1., 0., 0., 0.]);
        Ok(())
    }

    #[test]
    fn pool_gradient_goes_whole_to_the_max() -> Result<()> {
        let x = candle_core::Var::from_tensor(&Tensor::new(
            &[[[[1f32, 5.], [2., 3.]]]],
            &Device::Cpu,
        )?)?;
        let grads = max_pool2x2_ceil(x.as_tensor())?.sum_all()?.backward()?;
        let g = grads
            .get(x.as_tensor())
            .expect("grad")
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(g, vec![0., 1., 0., 0.]);
        Ok(())
    }
}
