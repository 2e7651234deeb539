//! Colour preservation, both modes of `--preserve-color`:
//! - `coral`: the reference's `coral(source, target)`: give the style image the
//!   content's colour mean and covariance before encoding it;
//! - luminance-only transfer (Gatys et al. 2016): stylize the luminance and keep
//!   the content's chroma.

use candle_core::{DType, Result, Tensor};

/// Rec. 601 luma weights.
pub const LUMA: [f64; 3] = [0.299, 0.587, 0.114];

/// [N,3,H,W] -> [N,1,H,W] luma.
pub fn luminance(rgb: &Tensor) -> Result<Tensor> {
    let w = Tensor::new(
        &[LUMA[0] as f32, LUMA[1] as f32, LUMA[2] as f32],
        rgb.device(),
    )?
    .to_dtype(rgb.dtype())?
    .reshape((1, 3, 1, 1))?;
    rgb.broadcast_mul(&w)?.sum_keepdim(1)
}

/// Shifts and scales `y` so its mean and (unbiased) std are those of `reference`.
pub fn match_mean_std(y: &Tensor, reference: &Tensor) -> Result<Tensor> {
    match_mean_std_to(y, tensor_mean_std(reference)?)
}

/// Mean and unbiased std of all values of `t`.
pub fn tensor_mean_std(t: &Tensor) -> Result<(f64, f64)> {
    let v = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    Ok(mean_std(&v))
}

/// Shifts and scales `y` to the given (mean, unbiased std).
pub fn match_mean_std_to(y: &Tensor, (mr, sr): (f64, f64)) -> Result<Tensor> {
    let (my, sy) = tensor_mean_std(y)?;
    y.affine(sr / sy.max(1e-12), mr - my * sr / sy.max(1e-12))
}

/// Puts the luma of `stylized` into `content`: adding the luma change to all three
/// channels keeps the content's chroma (R-Y, G-Y, B-Y) exactly, since the luma
/// weights sum to one.
pub fn transfer_luminance(content: &Tensor, stylized: &Tensor) -> Result<Tensor> {
    let delta = (luminance(stylized)? - luminance(content)?)?;
    content.broadcast_add(&delta)
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

pub type Mat3 = [[f64; 3]; 3];

fn matmul(a: &Mat3, b: &Mat3) -> Mat3 {
    let mut c = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            c[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    c
}

/// Eigen-decomposition of a symmetric 3x3 matrix by cyclic Jacobi rotations:
/// returns (eigenvalues, eigenvectors as columns). Hand-written because it is
/// all `coral` needs; a linear-algebra crate would be a large dependency for it.
fn sym_eigen(mut a: Mat3) -> ([f64; 3], Mat3) {
    let mut v = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    for _sweep in 0..64 {
        let off = a[0][1].powi(2) + a[0][2].powi(2) + a[1][2].powi(2);
        if off < 1e-30 {
            break;
        }
        for (p, q) in [(0, 1), (0, 2), (1, 2)] {
            if a[p][q].abs() < 1e-300 {
                continue;
            }
            let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
            let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
            let t = if theta == 0.0 { 1.0 } else { t };
            let c = 1.0 / (t * t + 1.0).sqrt();
            let s = t * c;
            // A <- J^T A J
            for row in a.iter_mut() {
                let (akp, akq) = (row[p], row[q]);
                row[p] = c * akp - s * akq;
                row[q] = s * akp + c * akq;
            }
            #[allow(clippy::needless_range_loop)] // two rows of the same matrix
            for k in 0..3 {
                let (apk, aqk) = (a[p][k], a[q][k]);
                a[p][k] = c * apk - s * aqk;
                a[q][k] = s * apk + c * aqk;
            }
            for row in v.iter_mut() {
                let (vp, vq) = (row[p], row[q]);
                row[p] = c * vp - s * vq;
                row[q] = s * vp + c * vq;
            }
        }
    }
    ([a[0][0], a[1][1], a[2][2]], v)
}

/// V diag(f(lambda)) V^T for a symmetric positive definite matrix.
fn sym_fn(a: &Mat3, f: impl Fn(f64) -> f64) -> Mat3 {
    let (l, v) = sym_eigen(*a);
    let mut out = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            out[i][j] = (0..3).map(|k| v[i][k] * f(l[k].max(0.0)) * v[j][k]).sum();
        }
    }
    out
}

/// What coral takes from its target: per-channel (mean, unbiased std) and
/// `norm norm^T + I`, where `norm` is the image normalised per channel (not
/// divided by the pixel count, as the reference does).
#[derive(Debug, Clone)]
pub struct ColorStats {
    pub mean_std: [(f64, f64); 3],
    pub cov_eye: Mat3,
}

impl ColorStats {
    /// Of an RGB image [1,3,H,W] or [3,H,W].
    pub fn of(img: &Tensor) -> Result<Self> {
        let f = flatten(img)?;
        Ok(Self {
            mean_std: f.mean_std,
            cov_eye: f.cov_eye,
        })
    }

    /// From sums over N pixels: `sum[i]` of channel i, `cross[i][j]` of the
    /// products of channels i and j (what a tiled pass accumulates).
    pub fn from_sums(n: f64, sum: [f64; 3], cross: Mat3) -> Self {
        let mut ms = [(0.0, 0.0); 3];
        for i in 0..3 {
            let m = sum[i] / n;
            let var = ((cross[i][i] - n * m * m) / (n - 1.0).max(1.0)).max(0.0);
            ms[i] = (m, var.sqrt());
        }
        let mut cov = [[0.0; 3]; 3];
        for i in 0..3 {
            for j in 0..3 {
                let (mi, si) = ms[i];
                let (mj, sj) = ms[j];
                let dot = (cross[i][j] - n * mi * mj) / (si.max(1e-12) * sj.max(1e-12));
                cov[i][j] = dot + if i == j { 1.0 } else { 0.0 };
            }
        }
        Self {
            mean_std: ms,
            cov_eye: cov,
        }
    }
}

/// An RGB image flattened per channel and normalised, with what coral needs.
struct Flat {
    /// (x - mean) / std per channel.
    norm: [Vec<f64>; 3],
    mean_std: [(f64, f64); 3],
    /// norm norm^T + I (not divided by N, as the reference does).
    cov_eye: Mat3,
}

fn flatten(img: &Tensor) -> Result<Flat> {
    let v = img
        .to_dtype(DType::F64)?
        .reshape((3, ()))?
        .to_vec2::<f64>()?;
    let mut norm: [Vec<f64>; 3] = Default::default();
    let mut ms = [(0.0, 0.0); 3];
    for c in 0..3 {
        let (m, s) = mean_std(&v[c]);
        ms[c] = (m, s);
        norm[c] = v[c].iter().map(|x| (x - m) / s.max(1e-12)).collect();
    }
    let mut cov = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            let dot: f64 = norm[i].iter().zip(&norm[j]).map(|(a, b)| a * b).sum();
            cov[i][j] = dot + if i == j { 1.0 } else { 0.0 };
        }
    }
    Ok(Flat {
        norm,
        mean_std: ms,
        cov_eye: cov,
    })
}

/// The reference `coral(source, target)`: returns `source` (an RGB image
/// [1,3,H,W] or [3,H,W]) with the colour mean, std and covariance of `target`.
pub fn coral(source: &Tensor, target: &Tensor) -> Result<Tensor> {
    coral_to(source, &ColorStats::of(target)?)
}

/// [`coral`] with the target's statistics given (a tiled image's, pooled).
pub fn coral_to(source: &Tensor, t: &ColorStats) -> Result<Tensor> {
    let s = flatten(source)?;
    let m = matmul(
        &sym_fn(&t.cov_eye, f64::sqrt),
        &sym_fn(&s.cov_eye, |l| 1.0 / l.sqrt()),
    );
    let n = s.norm[0].len();
    let mut out = vec![0f32; 3 * n];
    for i in 0..3 {
        let (mean, std) = t.mean_std[i];
        for p in 0..n {
            let x = m[i][0] * s.norm[0][p] + m[i][1] * s.norm[1][p] + m[i][2] * s.norm[2][p];
            out[i * n + p] = (x * std + mean) as f32;
        }
    }
    Tensor::from_vec(out, source.shape().clone(), source.device())?.to_dtype(source.dtype())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_reconstructs_matrix() {
        let a = [[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]];
        let sq = sym_fn(&a, f64::sqrt);
        let back = matmul(&sq, &sq);
        for i in 0..3 {
            for j in 0..3 {
                assert!((back[i][j] - a[i][j]).abs() < 1e-10);
            }
        }
    }
}
