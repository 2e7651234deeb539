//! Adaptive instance normalisation: the one operation the method is named after.
//!
//! Statistics follow the reference `calc_mean_std`: per sample and channel, the
//! mean over H*W and the std as sqrt(unbiased variance + 1e-5).

use candle_core::{DType, Result, Tensor, D};

pub const EPS: f64 = 1e-5;

/// Per-channel mean and std of a feature map [N,C,H,W], each [N,C,1,1].
#[derive(Debug, Clone)]
pub struct Stats {
    pub mean: Tensor,
    pub std: Tensor,
}

/// Mean and std over H*W (std from the unbiased variance + EPS).
pub fn mean_std(feat: &Tensor) -> Result<Stats> {
    let (n, c, h, w) = feat.dims4()?;
    if h * w < 2 {
        candle_core::bail!("feature map of {h}x{w} is too small for a variance (image too small)");
    }
    let flat = feat.reshape((n, c, h * w))?;
    let mean = flat.mean_keepdim(D::Minus1)?;
    let var = (flat.broadcast_sub(&mean)?.sqr()?.sum_keepdim(D::Minus1)? / (h * w - 1) as f64)?;
    let std = (var + EPS)?.sqrt()?;
    Ok(Stats {
        mean: mean.reshape((n, c, 1, 1))?,
        std: std.reshape((n, c, 1, 1))?,
    })
}

/// Renormalises `content` features to have the style's statistics.
pub fn adain_with(content: &Tensor, style: &Stats) -> Result<Tensor> {
    adain_given(content, &mean_std(content)?, style)
}

/// AdaIN with the content statistics given: `content` may be a tile of the
/// feature map whose statistics `c` were pooled over the whole image.
pub fn adain_given(content: &Tensor, c: &Stats, style: &Stats) -> Result<Tensor> {
    content
        .broadcast_sub(&c.mean)?
        .broadcast_div(&c.std)?
        .broadcast_mul(&style.std)?
        .broadcast_add(&style.mean)
}

/// Per-channel sums of a feature map, pooled over tiles (or regions) so that
/// a whole image's statistics come out without the whole map in memory:
/// the same mean and unbiased std as [`mean_std`], accumulated in f64.
#[derive(Debug, Clone)]
pub struct StatsSum {
    count: f64,
    sum: Vec<f64>,
    sum_sq: Vec<f64>,
}

impl StatsSum {
    pub fn new(channels: usize) -> Self {
        Self {
            count: 0.0,
            sum: vec![0.0; channels],
            sum_sq: vec![0.0; channels],
        }
    }

    /// Adds the positions of `feat` [1,C,h,w] where `mask` [h,w] (0/1) is 1, or all.
    pub fn add(&mut self, feat: &Tensor, mask: Option<&Tensor>) -> Result<()> {
        let (_, c, h, w) = feat.dims4()?;
        let f = feat
            .to_dtype(DType::F32)?
            .reshape((c, h * w))?
            .to_vec2::<f32>()?;
        let m = match mask {
            Some(m) => Some(m.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
            None => None,
        };
        if let Some(m) = &m {
            self.count += m.iter().filter(|&&v| v > 0.5).count() as f64;
        } else {
            self.count += (h * w) as f64;
        }
        for (ch, row) in f.iter().enumerate() {
            let (mut s, mut q) = (0f64, 0f64);
            match &m {
                Some(m) => {
                    for (&x, &k) in row.iter().zip(m) {
                        if k > 0.5 {
                            s += x as f64;
                            q += x as f64 * x as f64;
                        }
                    }
                }
                None => {
                    for &x in row {
                        s += x as f64;
                        q += x as f64 * x as f64;
                    }
                }
            }
            self.sum[ch] += s;
            self.sum_sq[ch] += q;
        }
        Ok(())
    }

    /// Positions added so far.
    pub fn count(&self) -> f64 {
        self.count
    }

    /// Mean and std ([1,C,1,1] each) of everything added.
    pub fn finish(&self, device: &candle_core::Device) -> Result<Stats> {
        let n = self.count;
        if n < 2.0 {
            candle_core::bail!(
                "{n} feature positions are too few for a variance (image too small)"
            );
        }
        let c = self.sum.len();
        let mean: Vec<f32> = self.sum.iter().map(|s| (s / n) as f32).collect();
        let std: Vec<f32> = self
            .sum
            .iter()
            .zip(&self.sum_sq)
            .map(|(s, q)| {
                let m = s / n;
                let var = ((q - n * m * m) / (n - 1.0)).max(0.0);
                ((var + EPS).sqrt()) as f32
            })
            .collect();
        Ok(Stats {
            mean: Tensor::from_vec(mean, (1, c, 1, 1), device)?,
            std: Tensor::from_vec(std, (1, c, 1, 1), device)?,
        })
    }
}

/// `adain(c, s) = (c - mu_c) / sigma_c * sigma_s + mu_s`.
pub fn adain(content: &Tensor, style: &Tensor) -> Result<Tensor> {
    adain_with(content, &mean_std(style)?)
}

/// `alpha * t + (1 - alpha) * c`: how much style, from 0 (content) to 1.
pub fn mix_alpha(t: &Tensor, content: &Tensor, alpha: f64) -> Result<Tensor> {
    if alpha == 1.0 {
        return Ok(t.clone());
    }
    (t * alpha)? + (content * (1.0 - alpha))?
}

/// Weighted blend of several styles' AdaIN targets, as the reference's
/// interpolation: `sum_i w_i * adain(c, s_i)`. Weights must already sum to 1.
pub fn blend(content: &Tensor, styles: &[Stats], weights: &[f64]) -> Result<Tensor> {
    blend_given(content, &mean_std(content)?, styles, weights)
}

/// [`blend`] with the content statistics given (see [`adain_given`]).
pub fn blend_given(
    content: &Tensor,
    c: &Stats,
    styles: &[Stats],
    weights: &[f64],
) -> Result<Tensor> {
    if styles.is_empty() || styles.len() != weights.len() {
        candle_core::bail!("{} styles but {} weights", styles.len(), weights.len());
    }
    let mut terms = styles
        .iter()
        .zip(weights)
        .map(|(s, &w)| adain_given(content, c, s)? * w);
    let first = terms.next().expect("at least one style")?;
    terms.try_fold(first, |acc, t| acc + t?)
}

/// Spatial control: region r (a 0/1 mask [h,w] at feature resolution) gets AdaIN
/// with style r, the content statistics being taken over that region only; a
/// position in no region keeps the content features. Masks must not overlap.
pub fn masked(content: &Tensor, regions: &[(Tensor, Stats)]) -> Result<Tensor> {
    let given = regions
        .iter()
        .map(|(m, s)| Ok((m.clone(), region_stats(content, m)?, s.clone())))
        .collect::<Result<Vec<_>>>()?;
    masked_given(content, &given)
}

/// Statistics of `content` [N,C,h,w] over the positions where `mask` [h,w] is
/// 1; `None` when fewer than two positions (no variance: left as content).
pub fn region_stats(content: &Tensor, mask: &Tensor) -> Result<Option<Stats>> {
    let (_, _, h, w) = content.dims4()?;
    let count = mask.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
    if count < 2.0 {
        return Ok(None);
    }
    let m = mask.reshape((1, 1, h, w))?;
    let mean = (content.broadcast_mul(&m)?.sum_keepdim((2, 3))? / count)?;
    let centred = content.broadcast_sub(&mean)?;
    let var = (centred.sqr()?.broadcast_mul(&m)?.sum_keepdim((2, 3))? / (count - 1.0))?;
    let std = (var + EPS)?.sqrt()?;
    Ok(Some(Stats { mean, std }))
}

/// [`masked`] with each region's content statistics given (pooled over the
/// whole image when `content` is a tile): (mask, content stats, style stats).
pub fn masked_given(
    content: &Tensor,
    regions: &[(Tensor, Option<Stats>, Stats)],
) -> Result<Tensor> {
    let (n, c, h, w) = content.dims4()?;
    let mut out = Tensor::zeros((n, c, h, w), content.dtype(), content.device())?;
    let mut covered = Tensor::zeros((h, w), content.dtype(), content.device())?;
    for (mask, cs, style) in regions {
        let Some(cs) = cs else { continue };
        let m = mask.reshape((1, 1, h, w))?;
        let t = adain_given(content, cs, style)?;
        out = (out + t.broadcast_mul(&m)?)?;
        covered = (covered + mask)?;
    }
    let rest = covered.affine(-1.0, 1.0)?.reshape((1, 1, h, w))?;
    out + content.broadcast_mul(&rest)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn adain_gives_style_statistics() -> Result<()> {
        let dev = Device::Cpu;
        let c = Tensor::randn(0f32, 1., (2, 4, 5, 6), &dev)?;
        let s = Tensor::randn(0f32, 1., (2, 4, 7, 3), &dev)?.affine(3.0, 2.0)?;
        let t = adain(&c, &s)?;
        let (st, ss) = (mean_std(&t)?, mean_std(&s)?);
        let d = (st.mean - ss.mean)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-4, "mean differs by {d}");
        // std of t is the style's std (up to the eps inside both)
        let d = (st.std - ss.std)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-3, "std differs by {d}");
        Ok(())
    }

    #[test]
    fn full_mask_equals_plain_adain() -> Result<()> {
        let dev = Device::Cpu;
        let c = Tensor::randn(0f32, 1., (1, 3, 4, 5), &dev)?;
        let s = Tensor::randn(1f32, 2., (1, 3, 6, 6), &dev)?;
        let ones = Tensor::ones((4, 5), DType::F32, &dev)?;
        let a = masked(&c, &[(ones, mean_std(&s)?)])?;
        let b = adain(&c, &s)?;
        let d = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-5);
        Ok(())
    }
}
