//! Gram matrices of feature maps as one CPU op with its own backward:
//! `G = F F^T * scale` for each image's `[C, H*W]` feature matrix F.
//!
//! Why it is ours: as candle's graph (`reshape`, `matmul` with `t()`) its
//! backward multiplies twice (once for F, once for F^T), brings the second
//! product back through a transpose as a strided `[H*W, C]` tensor, and adds
//! the two into F's gradient; each node also adds its gradient into fresh
//! zeros. For relu1_1 of a 256^2 batch of four that is 16.8M floats a pass.
//! With G symmetric by construction, F's gradient is one product:
//! `(dG + dG^T) F * scale`.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::pad::f32_slice;

struct Gram {
    scale: f64,
}

impl CustomOp1 for Gram {
    fn name(&self) -> &'static str {
        "gram"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = layout.shape().dims4()?;
        let hw = h * w;
        let f = f32_slice(storage, layout, self.name())?;
        let mut g = vec![0f32; n * c * c];
        // One image per task; a lone image splits its product instead.
        let par = if n >= rayon::current_num_threads() {
            gemm::Parallelism::None
        } else {
            gemm::Parallelism::Rayon(0)
        };
        g.par_chunks_mut(c * c)
            .zip(f.par_chunks(c * hw))
            .for_each(|(g, f)| {
                // SAFETY: g is c x c (row stride c), f is c x hw (row stride
                // hw), read as F (rows c, columns hw) and as F^T.
                unsafe {
                    gemm::gemm(
                        c,
                        c,
                        hw,
                        g.as_mut_ptr(),
                        1,
                        c as isize,
                        false,
                        f.as_ptr(),
                        1,
                        hw as isize,
                        f.as_ptr(),
                        hw as isize,
                        1,
                        0.0,
                        self.scale as f32,
                        false,
                        false,
                        false,
                        par,
                    )
                }
            });
        Ok((CpuStorage::F32(g), Shape::from((n, c, c))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (n, c, h, w) = arg.dims4()?;
        let f = arg.detach().reshape((n, c, h * w))?;
        let sym = ((grad + grad.t()?)? * self.scale)?;
        Ok(Some(sym.matmul(&f)?.reshape((n, c, h, w))?))
    }
}

/// `F F^T * scale` per image of `feat` `[N,C,H,W]` (CPU, f32) -> `[N,C,C]`.
pub fn gram(feat: &Tensor, scale: f64) -> Result<Tensor> {
    feat.contiguous()?.apply_op1(Gram { scale })
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};
    use rand::{Rng, SeedableRng};

    /// Values and the input gradient against candle's graph, on batches of
    /// one (the split product) and several images, and on odd sides.
    #[test]
    fn the_op_matches_the_graph_and_its_gradient() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for &(n, c, h, w) in &[(1, 5, 7, 9), (3, 16, 12, 10), (4, 64, 32, 33)] {
            let v: Vec<f32> = (0..n * c * h * w)
                .map(|_| rng.random_range(0f32..2.))
                .collect();
            let x = Var::from_tensor(&Tensor::from_vec(v, (n, c, h, w), &dev)?)?;
            let probe: Vec<f32> = (0..n * c * c)
                .map(|_| rng.random_range(-1f32..1.))
                .collect();
            let probe = Tensor::from_vec(probe, (n, c, c), &dev)?;
            let scale = 1.0 / (c * h * w) as f64;
            let fast = super::gram(x.as_tensor(), scale)?;
            let slow = crate::loss::gram_graph(x.as_tensor(), scale)?;
            let max = |t: &Tensor| -> candle_core::Result<f32> { t.abs()?.max_all()?.to_scalar() };
            let d = max(&(&fast - &slow)?)? / max(&slow)?;
            assert!(
                d < 1e-6,
                "{n}x{c}x{h}x{w}: values differ by {d} of the largest"
            );
            let gf = (&fast * &probe)?.sum_all()?.backward()?;
            let gs = (&slow * &probe)?.sum_all()?.backward()?;
            let (a, b) = (
                gf.get(x.as_tensor()).unwrap(),
                gs.get(x.as_tensor()).unwrap(),
            );
            let d = max(&(a - b)?)? / max(b)?;
            assert!(
                d < 1e-5,
                "{n}x{c}x{h}x{w}: gradients differ by {d} of the largest"
            );
        }
        Ok(())
    }
}
