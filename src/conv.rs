//! The CPU fast path for "reflection-pad(1) + 3x3 conv": a fused
//! pad-and-im2col op whose backward is the matching col2im, so that the forward
//! pass and both gradients are single large matrix products.
//!
//! Why it is ours: candle 0.11's CPU conv2d backward goes through a naive
//! `conv_transpose2d` and a conv whose kernel is the whole image, and a
//! reflection pad built from `index_select` backpropagates through a serial
//! `index_add`; together they made a training step several times slower than
//! PyTorch. Other devices keep the plain candle ops (see `layers::PaddedConv`).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Reflection (no edge repeat) of index `i` (may be -1 or n) into 0..n.
#[inline]
fn reflect(i: isize, n: usize) -> usize {
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

/// The forward op: (x [N,C,H,W], weight [O,C,3,3], bias [O]) -> [N,O,H,W].
struct Conv3x3Reflect;

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
        let (hw, k) = (h * w, c * 9);
        let cols = im2col(x, n, c, h, w);
        let mut out = vec![0f32; n * o * hw];
        out.par_chunks_mut(hw)
            .enumerate()
            .for_each(|(i, plane)| plane.fill(b[i % o]));
        for ni in 0..n {
            // out[ni] (o x hw) += W (o x k) * cols[:, ni*hw..] (k x hw)
            unsafe {
                matmul(
                    o,
                    hw,
                    k,
                    out.as_mut_ptr().add(ni * o * hw),
                    hw,
                    true,
                    Mat(wt.as_ptr(), k as isize, 1),
                    Mat(cols.as_ptr().add(ni * hw), (n * hw) as isize, 1),
                );
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((n, o, h, w))))
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
        let (hw, k) = (h * w, c * 9);
        let mut cols = vec![0f32; k * n * hw];
        for ni in 0..n {
            // cols[:, ni*hw..] (k x hw) = W^T (k x o) * grad[ni] (o x hw)
            unsafe {
                matmul(
                    k,
                    hw,
                    o,
                    cols.as_mut_ptr().add(ni * hw),
                    n * hw,
                    false,
                    Mat(wt.as_ptr(), 1, k as isize),
                    Mat(g.as_ptr().add(ni * o * hw), hw as isize, 1),
                );
            }
        }
        Ok((
            CpuStorage::F32(col2im(&cols, n, c, h, w)),
            Shape::from((n, c, h, w)),
        ))
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
        let (hw, k) = (h * w, c * 9);
        let cols = im2col(x, n, c, h, w);
        let mut gw = vec![0f32; o * k];
        for ni in 0..n {
            // gw (o x k) += grad[ni] (o x hw) * cols[:, ni*hw..]^T (hw x k)
            unsafe {
                matmul(
                    o,
                    k,
                    hw,
                    gw.as_mut_ptr(),
                    k,
                    ni > 0,
                    Mat(g.as_ptr().add(ni * o * hw), hw as isize, 1),
                    Mat(cols.as_ptr().add(ni * hw), 1, (n * hw) as isize),
                );
            }
        }
        Ok((CpuStorage::F32(gw), Shape::from((o, c, 3, 3))))
    }
}

/// `ReflectionPad2d(1)` + 3x3 conv + bias on the CPU in f32.
/// x [N,C,H,W], weight [O,C,3,3], bias [O] -> [N,O,H,W].
pub fn conv3x3_reflect(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, Conv3x3Reflect)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::reflect_pad;
    use candle_core::{Device, Var};

    fn reference(x: &Tensor, wt: &Tensor, b: &Tensor) -> Result<Tensor> {
        reflect_pad(x, 1, 1, 1, 1)?
            .conv2d(wt, 0, 1, 1, 1)?
            .broadcast_add(&b.reshape((1, (), 1, 1))?)
    }

    #[test]
    fn forward_and_gradients_match_plain_candle() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1., (2, 3, 5, 4), &dev)?;
        let wt = Var::randn(0f32, 1., (4, 3, 3, 3), &dev)?;
        let b = Var::randn(0f32, 1., 4, &dev)?;
        let probe = Tensor::randn(0f32, 1., (2, 4, 5, 4), &dev)?;
        let fast = conv3x3_reflect(&x, &wt, &b)?;
        let slow = reference(&x, &wt, &b)?;
        let d = (&fast - &slow)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(d < 1e-5, "forward differs by {d}");
        let gf = (fast * &probe)?.sum_all()?.backward()?;
        let gs = (slow * &probe)?.sum_all()?.backward()?;
        for v in [&x, &wt, &b] {
            let (a, b) = (
                gf.get(v.as_tensor()).unwrap(),
                gs.get(v.as_tensor()).unwrap(),
            );
            let d = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(d < 1e-4, "gradient differs by {d}");
        }
        Ok(())
    }
}
