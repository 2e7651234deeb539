//! Instance normalisation with affine parameters (PyTorch's
//! `InstanceNorm2d(affine=True)`) as one CPU op with its own backward: one
//! plane per task, statistics and the backward's sums accumulated in f64.
//!
//! Why it is ours: built from candle's ops it took five reductions and as
//! many elementwise passes, each on one thread, and its f32 sums (over up to
//! H*W*N values, much of it cancelling) put the gradients of the norms'
//! biases ten times further from exact than PyTorch's f32 ones
//! (`tests/johnson.rs`).

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::pad::f32_slice;

/// (x `[N,C,H,W]`, weight `[C]`, bias `[C]`) -> `(x - mean) / sqrt(var + eps) *
/// weight + bias`, mean and biased variance over each H*W plane.
struct InstanceNorm {
    eps: f64,
}

/// Mean and 1/sqrt(var + eps) of one plane, in f64.
fn stats(p: &[f32], eps: f64) -> (f64, f64) {
    let n = p.len() as f64;
    let mean = p.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = p.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

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
        let (_, c, h, w) = xl.shape().dims4()?;
        let (x, wt, b) = (
            f32_slice(xs, xl, "x")?,
            f32_slice(ws, wl, "weight")?,
            f32_slice(bs, bl, "bias")?,
        );
        if wt.len() != c || b.len() != c || h * w == 0 {
            candle_core::bail!("instance-norm: {:?} with {} weights", xl.shape(), wt.len());
        }
        let mut out = super::pad::huge_vec(x.len());
        out.par_chunks_mut(h * w)
            .zip(x.par_chunks(h * w))
            .enumerate()
            .for_each(|(i, (dst, src))| {
                let (mean, rstd) = stats(src, self.eps);
                let (g, beta) = (wt[i % c] as f64 * rstd, b[i % c] as f64);
                for (d, &v) in dst.iter_mut().zip(src) {
                    *d = ((v as f64 - mean) * g + beta) as f32;
                }
            });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wt: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, h, w) = x.dims4()?;
        let xv = x.flatten_all()?.to_vec1::<f32>()?;
        let gv = grad.flatten_all()?.to_vec1::<f32>()?;
        let wv = wt.to_vec1::<f32>()?;
        let hw = h * w;
        // per plane: dx, and its sums for the weight and bias gradients
        let per: Vec<(Vec<f32>, f64, f64)> = xv
            .par_chunks(hw)
            .zip(gv.par_chunks(hw))
            .enumerate()
            .map(|(i, (xp, gp))| {
                let (mean, rstd) = stats(xp, self.eps);
                let (mut sg, mut sgx) = (0f64, 0f64);
                for (&xv, &g) in xp.iter().zip(gp) {
                    sg += g as f64;
                    sgx += g as f64 * (xv as f64 - mean) * rstd;
                }
                let (mg, mgx) = (sg / hw as f64, sgx / hw as f64);
                let k = wv[i % c] as f64 * rstd;
                let dx = xp
                    .iter()
                    .zip(gp)
                    .map(|(&xv, &g)| (k * (g as f64 - mg - (xv as f64 - mean) * rstd * mgx)) as f32)
                    .collect();
                (dx, sgx, sg)
            })
            .collect();
        let mut dw = vec![0f64; c];
        let mut db = vec![0f64; c];
        let mut dx = Vec::with_capacity(n * c * hw);
        for (i, (d, sgx, sg)) in per.into_iter().enumerate() {
            dw[i % c] += sgx;
            db[i % c] += sg;
            dx.extend_from_slice(&d);
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

/// `InstanceNorm` on the CPU (f32, contiguous): x `[N,C,H,W]`, weight and
/// bias `[C]`.
pub fn instance_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        InstanceNorm { eps },
    )
}
