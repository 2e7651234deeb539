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
    let c = mean_std(content)?;
    content
        .broadcast_sub(&c.mean)?
        .broadcast_div(&c.std)?
        .broadcast_mul(&style.std)?
        .broadcast_add(&style.mean)
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
    if styles.is_empty() || styles.len() != weights.len() {
        candle_core::bail!("{} styles but {} weights", styles.len(), weights.len());
    }
    let mut t: Option<Tensor> = None;
    for (s, &w) in styles.iter().zip(weights) {
        let ti = (adain_with(content, s)? * w)?;
        t = Some(match t {
            None => ti,
            Some(acc) => (acc + ti)?,
        });
    }
    Ok(t.expect("at least one style"))
}

/// Spatial control: region r (a 0/1 mask [h,w] at feature resolution) gets AdaIN
/// with style r, the content statistics being taken over that region only; a
/// position in no region keeps the content features. Masks must not overlap.
pub fn masked(content: &Tensor, regions: &[(Tensor, Stats)]) -> Result<Tensor> {
    let (n, c, h, w) = content.dims4()?;
    let mut out = Tensor::zeros((n, c, h, w), content.dtype(), content.device())?;
    let mut covered = Tensor::zeros((h, w), content.dtype(), content.device())?;
    for (mask, style) in regions {
        let count = mask.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
        if count < 2.0 {
            // Too few positions for a variance: leave them as content.
            continue;
        }
        let m = mask.reshape((1, 1, h, w))?;
        let mean = (content.broadcast_mul(&m)?.sum_keepdim((2, 3))? / count)?;
        let centred = content.broadcast_sub(&mean)?;
        let var = (centred.sqr()?.broadcast_mul(&m)?.sum_keepdim((2, 3))? / (count - 1.0))?;
        let std = (var + EPS)?.sqrt()?;
        let t = centred
            .broadcast_div(&std)?
            .broadcast_mul(&style.std)?
            .broadcast_add(&style.mean)?;
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
