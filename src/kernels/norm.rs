//! Instance normalisation with affine parameters (PyTorch's
//! `InstanceNorm2d(affine=True)`) as one CPU op with its own backward: one
//! plane per task, statistics and the backward's sums accumulated in f64.
//! The ReLU that follows most norms is fused in (its mask in the backward is
//! the op's own output), and where no gradient is wanted the op can overwrite
//! its input and add a residual in the same pass ([`instance_norm_in_place`]).
//!
//! Why it is ours: built from candle's ops it took five reductions and as
//! many elementwise passes, each on one thread, and its f32 sums (over up to
//! H*W*N values, much of it cancelling) put the gradients of the norms'
//! biases ten times further from exact than PyTorch's f32 ones
//! (`tests/johnson.rs`). Why fused: the norms, their ReLUs and the residual
//! sums were a pass and a fresh buffer each, 14% of a 512^2 Johnson
//! stylization.

use candle_core::{CpuStorage, CustomOp3, InplaceOp1, InplaceOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

#[cfg(test)]
use super::pad::LANES;
use super::pad::{f32_slice, sum2_f64, sum_f64};

/// (x `[N,C,H,W]`, weight `[C]`, bias `[C]`) -> `(x - mean) / sqrt(var + eps) *
/// weight + bias` (then `max(0, .)` with `relu`), mean and biased variance
/// over each H*W plane.
struct InstanceNorm {
    eps: f64,
    relu: bool,
}

/// Mean and 1/sqrt(var + eps) of one plane, in f64.
#[inline(always)]
fn stats(p: &[f32], eps: f64) -> (f64, f64) {
    let n = p.len() as f64;
    let mean = sum_f64(p, |v| v as f64) / n;
    let var = sum_f64(p, |v| (v as f64 - mean).powi(2)) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// One plane's affine map: `(v - mean) * scale + shift` (scale is
/// weight * rstd, shift the bias), in f64 as the statistics.
#[derive(Clone, Copy)]
struct Affine {
    mean: f64,
    scale: f64,
    shift: f64,
    relu: bool,
}

impl Affine {
    #[inline(always)]
    fn of(p: &[f32], eps: f64, weight: f32, bias: f32, relu: bool) -> Self {
        let (mean, rstd) = stats(p, eps);
        Self {
            mean,
            scale: weight as f64 * rstd,
            shift: bias as f64,
            relu,
        }
    }

    #[inline(always)]
    fn apply(self, v: f32) -> f32 {
        let y = ((v as f64 - self.mean) * self.scale + self.shift) as f32;
        if self.relu {
            y.max(0.0)
        } else {
            y
        }
    }
}

// The per-plane work, compiled for the widest vector unit (`widest_simd!`):
// the f64 arithmetic ran on SSE2 in the baseline build, two lanes wide
// (perf: the norms' closures at ~8% of a Johnson training step). The sums'
// order is fixed by `sum_f64`'s partial sums, so every build gives the same
// bits.

/// One plane of the forward: `dst = affine(src)`.
#[inline(always)]
fn forward_plane_body(src: &[f32], dst: &mut [f32], eps: f64, w: f32, b: f32, relu: bool) {
    let a = Affine::of(src, eps, w, b, relu);
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = a.apply(v);
    }
}
widest_simd!(forward_plane => forward_plane_body(
    src: &[f32], dst: &mut [f32], eps: f64, w: f32, b: f32, relu: bool
));

/// One plane of the inference form, over itself: `relu(affine(p) + r)`.
#[inline(always)]
fn in_place_plane_body(p: &mut [f32], r: Option<&[f32]>, eps: f64, w: f32, b: f32, relu: bool) {
    match r {
        // The ReLU comes after the sum, so the plane's map has none.
        Some(r) => {
            let a = Affine::of(p, eps, w, b, false);
            for (v, &r) in p.iter_mut().zip(r) {
                let y = a.apply(*v) + r;
                *v = if relu { y.max(0.0) } else { y };
            }
        }
        None => {
            let a = Affine::of(p, eps, w, b, relu);
            for v in p.iter_mut() {
                *v = a.apply(*v);
            }
        }
    }
}
widest_simd!(in_place_plane => in_place_plane_body(
    p: &mut [f32], r: Option<&[f32]>, eps: f64, w: f32, b: f32, relu: bool
));

/// One plane of the backward: its input gradient into `dp`, and the sums
/// the weight and bias gradients gather over planes, `(sum g x_hat, sum g)`.
#[inline(always)]
fn backward_plane_body(
    dp: &mut [f32],
    xp: &[f32],
    gp: &[f32],
    rp: &[f32],
    eps: f64,
    weight: f32,
    relu: bool,
) -> (f64, f64) {
    // The ReLU's gradient: through where the output is positive.
    let g = |gv: f32, rv: f32| {
        if relu && rv <= 0.0 {
            0.0
        } else {
            gv as f64
        }
    };
    let (mean, rstd) = stats(xp, eps);
    let (sg, sgx) = sum2_f64([xp, gp, rp], |[xv, gv, rv]| {
        let gj = g(gv, rv);
        (gj, gj * (xv as f64 - mean) * rstd)
    });
    let hw = xp.len() as f64;
    let (mg, mgx) = (sg / hw, sgx / hw);
    let k = weight as f64 * rstd;
    // zipped, so no read is bounds-checked (see `sum2_f64`)
    for (d, ((&xv, &gv), &rv)) in dp.iter_mut().zip(xp.iter().zip(gp).zip(rp)) {
        *d = (k * (g(gv, rv) - mg - (xv as f64 - mean) * rstd * mgx)) as f32;
    }
    (sgx, sg)
}
widest_simd!(backward_plane => backward_plane_body(
    dp: &mut [f32], xp: &[f32], gp: &[f32], rp: &[f32], eps: f64, weight: f32, relu: bool
) -> (f64, f64));

impl CustomOp3 for InstanceNorm {
    fn name(&self) -> &'static str {
        "instance-norm"
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
        let (x, wt, b) = (
            f32_slice(xs, xl, "x")?,
            f32_slice(ws, wl, "weight")?,
            f32_slice(bs, bl, "bias")?,
        );
        let (c, hw) = plane_shape(xl, wt.len(), b.len())?;
        let mut out = super::pad::huge_vec(x.len());
        out.par_chunks_mut(hw)
            .zip(x.par_chunks(hw))
            .enumerate()
            .for_each(|(i, (dst, src))| {
                forward_plane(src, dst, self.eps, wt[i % c], b[i % c], self.relu)
            });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wt: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, h, w) = x.dims4()?;
        let hw = h * w;
        let grad = grad.contiguous()?;
        let wv = wt.to_vec1::<f32>()?;
        let (xs, xl) = x.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let (rs, rl) = res.storage_and_layout();
        let (xv, gv, rv) = (
            cpu_f32(&xs, xl, "x")?,
            cpu_f32(&gs, gl, "grad")?,
            cpu_f32(&rs, rl, "output")?,
        );
        let relu = self.relu;
        let mut dx = super::pad::huge_vec(n * c * hw);
        // per plane: dx, and its sums for the weight and bias gradients
        let per: Vec<(f64, f64)> = dx
            .par_chunks_mut(hw)
            .zip(xv.par_chunks(hw))
            .zip(gv.par_chunks(hw).zip(rv.par_chunks(hw)))
            .enumerate()
            .map(|(i, ((dp, xp), (gp, rp)))| {
                backward_plane(dp, xp, gp, rp, self.eps, wv[i % c], relu)
            })
            .collect();
        let mut dw = vec![0f64; c];
        let mut db = vec![0f64; c];
        for (i, (sgx, sg)) in per.into_iter().enumerate() {
            dw[i % c] += sgx;
            db[i % c] += sg;
        }
        let dev = x.device();
        let f = |v: Vec<f64>| {
            Tensor::from_vec(v.into_iter().map(|x| x as f32).collect::<Vec<_>>(), c, dev)
        };
        Ok((
            Some(Tensor::from_vec(dx, (n, c, h, w), dev)?),
            Some(f(dw)?),
            Some(f(db)?),
        ))
    }
}

/// Channels and plane size of x `[N,C,H,W]`, checked against the parameters.
fn plane_shape(xl: &Layout, weights: usize, biases: usize) -> Result<(usize, usize)> {
    let (_, c, h, w) = xl.shape().dims4()?;
    if weights != c || biases != c || h * w == 0 {
        candle_core::bail!("instance-norm: {:?} with {weights} weights", xl.shape());
    }
    Ok((c, h * w))
}

/// The f32 slice of a CPU tensor's storage.
fn cpu_f32<'a>(s: &'a candle_core::Storage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    match s {
        candle_core::Storage::Cpu(s) => f32_slice(s, l, what),
        _ => candle_core::bail!("instance-norm: {what} not on the CPU"),
    }
}

/// `InstanceNorm` (+ ReLU) on the CPU (f32, contiguous): x `[N,C,H,W]`,
/// weight and bias `[C]`.
pub fn instance_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<Tensor> {
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        InstanceNorm { eps, relu },
    )
}

/// The inference form: normalises x's own storage, then adds the residual
/// (InplaceOp2) or not (InplaceOp1), then the ReLU. No backward.
struct InPlace {
    eps: f64,
    relu: bool,
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl InPlace {
    fn run(&self, xs: &mut CpuStorage, xl: &Layout, residual: Option<&[f32]>) -> Result<()> {
        let (c, hw) = plane_shape(xl, self.weight.len(), self.bias.len())?;
        let x = match (xs, xl.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => &mut v[a..b],
            _ => candle_core::bail!("instance-norm: needs a contiguous f32 input"),
        };
        if residual.is_some_and(|r| r.len() != x.len()) {
            candle_core::bail!(
                "instance-norm: residual of another shape than {:?}",
                xl.shape()
            );
        }
        x.par_chunks_mut(hw).enumerate().for_each(|(i, p)| {
            let (w, b) = (self.weight[i % c], self.bias[i % c]);
            let r = residual.map(|r| &r[i * hw..][..hw]);
            in_place_plane(p, r, self.eps, w, b, self.relu)
        });
        Ok(())
    }
}

impl InplaceOp1 for InPlace {
    fn name(&self) -> &'static str {
        "instance-norm-in-place"
    }

    fn cpu_fwd(&self, xs: &mut CpuStorage, xl: &Layout) -> Result<()> {
        self.run(xs, xl, None)
    }
}

impl InplaceOp2 for InPlace {
    fn name(&self) -> &'static str {
        "instance-norm-add-in-place"
    }

    fn cpu_fwd(
        &self,
        xs: &mut CpuStorage,
        xl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
    ) -> Result<()> {
        self.run(xs, xl, Some(f32_slice(rs, rl, "residual")?))
    }
}

/// [`instance_norm`] for inference, in place: `relu(norm(x) + residual)`
/// (without the residual when `None`, without the ReLU unless `relu`) written
/// over x's storage, which is returned. x must be a contiguous f32 CPU tensor
/// that nothing else reads afterwards (a conv's fresh output) and that no
/// gradient flows through: in the 512^2 stylization each norm then costs no
/// new buffer (a fresh one is a page fault per 4 KB) and the residual sum no
/// pass of its own.
pub fn instance_norm_in_place(
    x: Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    relu: bool,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    if x.track_op() || !x.is_contiguous() {
        candle_core::bail!("instance-norm-in-place: needs a contiguous input without gradient");
    }
    let op = InPlace {
        eps,
        relu,
        weight: weight.to_vec1()?,
        bias: bias.to_vec1()?,
    };
    match residual {
        Some(r) => x.inplace_op2(&r.contiguous()?, &op)?,
        None => x.inplace_op1(&op)?,
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plane of mixed signs and scales (some exact zeros for the ReLU mask).
    fn plane(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let v = (i as u32 ^ seed).wrapping_mul(2_654_435_761) >> 8;
                let x = (v % 2001) as f32 / 1000.0 - 1.0;
                if i % 17 == 0 {
                    0.0
                } else {
                    x * (1.0 + (i % 7) as f32)
                }
            })
            .collect()
    }

    #[test]
    fn the_fused_pair_of_sums_equals_two_sums_bit_for_bit() {
        for n in [0, 5, 8, 1021] {
            let x = plane(n, 4);
            let f = |v: f32| v as f64 * 1.1;
            let g = |v: f32| (v as f64).powi(2) - 0.3;
            // the definition: term i into partial sum i % LANES, the partial
            // sums added in order
            let lanes = |t: &dyn Fn(f32) -> f64| {
                let mut acc = [0f64; LANES];
                for (i, &v) in x.iter().enumerate() {
                    acc[i % LANES] += t(v);
                }
                acc.iter().sum::<f64>()
            };
            let (a, b) = sum2_f64([&x[..]], |[v]| (f(v), g(v)));
            assert_eq!(a.to_bits(), lanes(&f).to_bits(), "{n}");
            assert_eq!(b.to_bits(), lanes(&g).to_bits(), "{n}");
            assert_eq!(sum_f64(&x, f).to_bits(), lanes(&f).to_bits(), "{n}");
        }
    }

    #[test]
    fn the_widest_simd_planes_equal_the_baseline_bit_for_bit() {
        let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        // a length that is not a multiple of the lanes, and one that is
        for n in [1021, 4096] {
            let (x, g, r) = (plane(n, 1), plane(n, 2), plane(n, 3));
            for relu in [false, true] {
                let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
                forward_plane(&x, &mut a, 1e-5, 0.7, -0.2, relu);
                forward_plane_body(&x, &mut b, 1e-5, 0.7, -0.2, relu);
                assert!(same(&a, &b), "forward, relu {relu}");

                for res in [None, Some(&r[..])] {
                    let (mut a, mut b) = (x.clone(), x.clone());
                    in_place_plane(&mut a, res, 1e-5, 1.3, 0.1, relu);
                    in_place_plane_body(&mut b, res, 1e-5, 1.3, 0.1, relu);
                    assert!(same(&a, &b), "in place, relu {relu}");
                }

                let sa = backward_plane(&mut a, &x, &g, &r, 1e-5, 0.9, relu);
                let sb = backward_plane_body(&mut b, &x, &g, &r, 1e-5, 0.9, relu);
                assert!(same(&a, &b), "backward, relu {relu}");
                assert_eq!(
                    (sa.0.to_bits(), sa.1.to_bits()),
                    (sb.0.to_bits(), sb.1.to_bits())
                );
            }
        }
    }
}
