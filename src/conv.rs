//! The CPU fast path for "reflection-pad(1) + 3x3 conv": a fused
//! pad-and-im2col op whose backward is the matching col2im, so that the forward
//! pass and both gradients are single large matrix products.
//!
//! Why it is ours: candle 0.11's CPU conv2d backward goes through a naive
//! `conv_transpose2d` and a conv whose kernel is the whole image, and a
//! reflection pad built from `index_select` backpropagates through a serial
//! `index_add`; together they made a training step several times slower than
//! PyTorch. Other devices keep the plain candle ops (see `layers::PaddedConv`).

use std::sync::atomic::{AtomicU8, Ordering};

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

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
    /// f32 everywhere: matches the PyTorch reference to ~1e-6.
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

/// Whether a conv with `c` input and `o` output channels takes the AMX path
/// (all do in bf16; the image's 3 channels are zero-padded to 32 there).
fn use_amx(_c: usize, _o: usize) -> bool {
    precision() == Precision::Bf16 && crate::amx::available()
}

/// Reflection (no edge repeat) of index `i` (may be -1 or n) into 0..n.
#[inline]
pub(crate) fn reflect(i: isize, n: usize) -> usize {
    if i < 0 {
        (-i) as usize
    } else if i as usize >= n {
        2 * n - 2 - i as usize
    } else {
        i as usize
    }
}

fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    let v = match storage {
        CpuStorage::F32(v) => v,
        _ => candle_core::bail!("{what}: f32 only"),
    };
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{what}: needs a contiguous input"),
    }
}

/// x [N,C,H,W] -> columns [C*9, N*H*W]: row c*9 + ky*3 + kx holds x shifted by
/// (ky-1, kx-1) with reflection at the borders.
fn im2col(x: &[f32], n: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
    let hw = h * w;
    let mut out = vec![0f32; c * 9 * n * hw];
    out.par_chunks_mut(n * hw).enumerate().for_each(|(r, row)| {
        let (ci, ky, kx) = (r / 9, (r % 9) / 3, r % 3);
        for ni in 0..n {
            let plane = &x[(ni * c + ci) * hw..][..hw];
            for y in 0..h {
                let sy = reflect(y as isize + ky as isize - 1, h);
                let src = &plane[sy * w..][..w];
                let dst = &mut row[ni * hw + y * w..][..w];
                match kx {
                    0 => {
                        dst[0] = src[1];
                        dst[1..].copy_from_slice(&src[..w - 1]);
                    }
                    1 => dst.copy_from_slice(src),
                    _ => {
                        dst[..w - 1].copy_from_slice(&src[1..]);
                        dst[w - 1] = src[w - 2];
                    }
                }
            }
        }
    });
    out
}

/// The adjoint of [`im2col`]: each column entry is added back to the pixel it
/// was copied from. Returns [N,C,H,W].
fn col2im(cols: &[f32], n: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
    let hw = h * w;
    let planes: Vec<Vec<f32>> = (0..c)
        .into_par_iter()
        .map(|ci| {
            let mut acc = vec![0f32; n * hw];
            for k in 0..9 {
                let (ky, kx) = (k / 3, k % 3);
                let row = &cols[(ci * 9 + k) * n * hw..][..n * hw];
                for ni in 0..n {
                    for y in 0..h {
                        let sy = reflect(y as isize + ky as isize - 1, h);
                        let src = &row[ni * hw + y * w..][..w];
                        let dst = &mut acc[ni * hw + sy * w..][..w];
                        match kx {
                            0 => {
                                dst[1] += src[0];
                                for x in 1..w {
                                    dst[x - 1] += src[x];
                                }
                            }
                            1 => dst.iter_mut().zip(src).for_each(|(d, s)| *d += s),
                            _ => {
                                for x in 0..w - 1 {
                                    dst[x + 1] += src[x];
                                }
                                dst[w - 2] += src[w - 1];
                            }
                        }
                    }
                }
            }
            acc
        })
        .collect();
    let mut out = vec![0f32; n * c * hw];
    for (ci, plane) in planes.iter().enumerate() {
        for ni in 0..n {
            out[(ni * c + ci) * hw..][..hw].copy_from_slice(&plane[ni * hw..][..hw]);
        }
    }
    out
}

/// A matrix view for [`matmul`]: pointer, row stride, column stride.
struct Mat(*const f32, isize, isize);

/// dst (m x n, row-major, row stride `dst_rs`) (+)= lhs (m x k) * rhs (k x n).
#[allow(clippy::too_many_arguments)] // mirrors gemm's own signature
///
/// # Safety
/// The views must lie inside live buffers of the sizes their strides imply.
unsafe fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
) {
    let threads = candle_core::utils::get_num_threads();
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs.0,
        lhs.2,
        lhs.1,
        rhs.0,
        rhs.2,
        rhs.1,
        1.0,
        1.0,
        false,
        false,
        false,
        par,
    );
}

/// The forward op: (x [N,C,H,W], weight [O,C,3,3], bias [O]) -> [N,O,H,W],
/// with the ReLU that follows most convs fused in (saves a pass over the
/// output and its backward).
struct Conv3x3Reflect {
    relu: bool,
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
        let (hw, k) = (h * w, c * 9);
        let mut out = vec![0f32; n * o * hw];
        out.par_chunks_mut(hw)
            .enumerate()
            .for_each(|(i, plane)| plane.fill(b[i % o]));
        // One image at a time: the column buffer (9x the input) stays one image.
        for ni in 0..n {
            let cols = im2col(&x[ni * c * hw..][..c * hw], 1, c, h, w);
            // out[ni] (o x hw) += W (o x k) * cols (k x hw)
            unsafe {
                matmul(
                    o,
                    hw,
                    k,
                    out.as_mut_ptr().add(ni * o * hw),
                    hw,
                    true,
                    Mat(wt.as_ptr(), k as isize, 1),
                    Mat(cols.as_ptr(), hw as isize, 1),
                );
            }
        }
        if self.relu {
            out.par_chunks_mut(hw)
                .for_each(|p| p.iter_mut().for_each(|v| *v = v.max(0.0)));
        }
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
            let (n, o, h, w) = grad.dims4()?;
            Some(grad.reshape((n, o, h * w))?.sum(2)?.sum(0)?)
        } else {
            None
        };
        Ok((gx, gw, gb))
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

/// (grad [N,O,H,W], weight [O,C,3,3]) -> gradient of the input [N,C,H,W].
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
        let (hw, k) = (h * w, c * 9);
        let mut dx = vec![0f32; n * c * hw];
        let mut cols = vec![0f32; k * hw];
        for ni in 0..n {
            // cols (k x hw) = W^T (k x o) * grad[ni] (o x hw), one image at a time
            unsafe {
                matmul(
                    k,
                    hw,
                    o,
                    cols.as_mut_ptr(),
                    hw,
                    false,
                    Mat(wt.as_ptr(), 1, k as isize),
                    Mat(g.as_ptr().add(ni * o * hw), hw as isize, 1),
                );
            }
            dx[ni * c * hw..][..c * hw].copy_from_slice(&col2im(&cols, 1, c, h, w));
        }
        Ok((CpuStorage::F32(dx), Shape::from((n, c, h, w))))
    }
}

/// (x [N,C,H,W], grad [N,O,H,W]) -> gradient of the weight [O,C,3,3].
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
        let (hw, k) = (h * w, c * 9);
        let mut gw = vec![0f32; o * k];
        for ni in 0..n {
            let cols = im2col(&x[ni * c * hw..][..c * hw], 1, c, h, w);
            // gw (o x k) += grad[ni] (o x hw) * cols^T (hw x k)
            unsafe {
                matmul(
                    o,
                    k,
                    hw,
                    gw.as_mut_ptr(),
                    k,
                    ni > 0,
                    Mat(g.as_ptr().add(ni * o * hw), hw as isize, 1),
                    Mat(cols.as_ptr(), 1, hw as isize),
                );
            }
        }
        Ok((CpuStorage::F32(gw), Shape::from((o, c, 3, 3))))
    }
}

/// `ReflectionPad2d(1)` + 3x3 conv + bias (+ ReLU) on the CPU, in f32 or (see
/// [`set_precision`]) bf16 on AMX.
/// x [N,C,H,W], weight [O,C,3,3], bias [O] -> [N,O,H,W].
pub fn conv3x3_reflect(x: &Tensor, weight: &Tensor, bias: &Tensor, relu: bool) -> Result<Tensor> {
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        Conv3x3Reflect { relu },
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
            let gs = (&slow * &probe)?.sum_all()?.backward()?;
            let what = format!("{precision:?} n{n} c{c} o{o} {h}x{w} relu {relu}");
            let d = max_abs(&(&fast - &slow)?) / max_abs(&slow).max(1e-6);
            assert!(
                d < tol,
                "{what}: forward differs by {d} (relative to the max)"
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
