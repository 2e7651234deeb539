//! The training losses' two large terms as CPU ops with their own backward.
//!
//! Why they are ours: built from candle's ops, each op is a node whose
//! gradient candle adds into fresh zeros, and the terms of a Johnson
//! training step run over relu1_1 of a 256^2 batch of four (16.8M floats)
//! and relu2_1 (8.4M) several times a pass.
//!
//! [`gram`]: `G = F F^T * scale` for each image's `[C, H*W]` feature matrix
//! F. As a graph (`reshape`, `matmul` with `t()`) its backward multiplied
//! twice (once for F, once for F^T) and brought the second product back
//! through a transpose as a strided `[H*W, C]` tensor before adding the two;
//! with G symmetric by construction, F's gradient is one product:
//! `(dG + dG^T) F * scale`.
//!
//! [`mse`]: the mean of `(a - b)^2`, summed in f64 (an f32 sum over the
//! half-million entries of relu4_1's Gram matrices was 1e-5 off, and the
//! graph's row-by-row sum took five nodes); its gradient is `2 (a - b) / n`.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::pad::{f32_slice, matmul, sum2_f64};

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
                    matmul(
                        (c, c, hw),
                        (g.as_mut_ptr(), c),
                        false,
                        (f.as_ptr(), hw, 1),
                        (f.as_ptr(), 1, hw),
                        par,
                    )
                }
                // the product's one rounding, then the scale's (as gemm's
                // own scaling of the product would round them)
                let scale = self.scale as f32;
                g.iter_mut().for_each(|v| *v *= scale);
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

/// `mean((a - b)^2)` over all elements, as a scalar.
struct Mse;

/// Squares summed per chunk of this many values, each chunk in
/// [`sum2_f64`]'s f64 partial sums, the chunks' sums added in order: the same
/// bits on any number of threads.
const CHUNK: usize = 1 << 16;

impl CustomOp2 for Mse {
    fn name(&self) -> &'static str {
        "mse"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (f32_slice(s1, l1, "mse")?, f32_slice(s2, l2, "mse")?);
        if l1.shape() != l2.shape() || a.is_empty() {
            candle_core::bail!("mse: shapes {:?} and {:?}", l1.shape(), l2.shape());
        }
        let sums: Vec<f64> = a
            .par_chunks(CHUNK)
            .zip(b.par_chunks(CHUNK))
            .map(|(a, b)| {
                sum2_f64([a, b], |[x, y]| {
                    let d = x as f64 - y as f64;
                    (d * d, 0.0)
                })
                .0
            })
            .collect();
        let mean = sums.iter().sum::<f64>() / a.len() as f64;
        Ok((CpuStorage::F32(vec![mean as f32]), Shape::from(())))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let k = (grad * (2.0 / a.elem_count() as f64))?;
        let ga = (a.detach() - b.detach())?.broadcast_mul(&k)?;
        let gb = if b.track_op() { Some(ga.neg()?) } else { None };
        let ga = if a.track_op() { Some(ga) } else { None };
        Ok((ga, gb))
    }
}

/// `mean((a - b)^2)` of two CPU f32 tensors of one shape, summed in f64.
pub fn mse(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.contiguous()?.apply_op2(&b.contiguous()?, Mse)
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

    /// The mean of squares against an f64 sum, and both gradients against
    /// candle's graph, on a length past several chunks with a ragged end.
    #[test]
    fn mse_matches_f64_and_the_graph_gradients() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let len = 3 * super::CHUNK + 13;
        let mut r = |s: f32| -> candle_core::Result<Var> {
            let v: Vec<f32> = (0..len).map(|_| rng.random_range(-s..s)).collect();
            Var::from_tensor(&Tensor::from_vec(v, (1, 1, len), &dev)?)
        };
        let (a, b) = (r(3.0)?, r(1.0)?);
        let (av, bv) = (
            a.flatten_all()?.to_vec1::<f32>()?,
            b.flatten_all()?.to_vec1::<f32>()?,
        );
        let exact = av
            .iter()
            .zip(&bv)
            .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
            .sum::<f64>()
            / len as f64;
        let fast = super::mse(a.as_tensor(), b.as_tensor())?;
        let got = fast.to_scalar::<f32>()? as f64;
        assert!((got - exact).abs() / exact < 1e-6, "{got} against {exact}");
        let slow = (a.as_tensor() - b.as_tensor())?.sqr()?.mean_all()?;
        let (gf, gs) = ((&fast * 3.0)?.backward()?, (&slow * 3.0)?.backward()?);
        for v in [&a, &b] {
            let (x, y) = (
                gf.get(v.as_tensor()).unwrap(),
                gs.get(v.as_tensor()).unwrap(),
            );
            let d = (x - y)?.abs()?.max_all()?.to_scalar::<f32>()?
                / y.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-6, "gradients differ by {d} of the largest");
        }
        Ok(())
    }
}
