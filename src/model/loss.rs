//! Every loss in the project, in one place.
//!
//! The training objective, exactly as the reference `Net.forward`:
//! content = MSE(relu4_1(g(t)), t) with t = AdaIN(relu4_1(c), relu4_1(s));
//! style = sum over relu1_1..relu4_1 of MSE(mean) + MSE(std) between g(t) and s
//! ([`style_musigma`]). The same terms score stylizers (`adain eval`) and drive
//! the optimisation method (`adain optimize`), together with [`gram`] matrices.

use crate::adain::{adain, mean_std};
use crate::{Decoder, Encoder};
use candle_core::{Module, Result, Tensor};

/// Both loss terms (scalars, still attached to the decoder's graph), and
/// what the temporal regulariser ([`compound_temporal`]) reuses.
pub struct Losses {
    pub content: Tensor,
    pub style: Tensor,
    /// The decoder's output g(t), `[B,3,H,W]`.
    pub output: Tensor,
    /// relu4_1 of the style images (the AdaIN statistics' source).
    pub style_relu4_1: Tensor,
}

impl Losses {
    /// `cw * content + sw * style`.
    pub fn total(&self, content_weight: f64, style_weight: f64) -> Result<Tensor> {
        (&self.content * content_weight)? + (&self.style * style_weight)?
    }
}

/// Mean squared error over all elements (a scalar).
pub fn mse(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    (a - b)?.sqr()?.mean_all()
}

/// AdaIN's style loss: sum over the given layers of MSE(mean) + MSE(std) between
/// the features of an image and those of the style (the style side is detached).
pub fn style_musigma(feats: &[Tensor], style_feats: &[Tensor]) -> Result<Tensor> {
    let mut total: Option<Tensor> = None;
    for (gf, sf) in feats.iter().zip(style_feats) {
        let (g, s) = (mean_std(gf)?, mean_std(sf)?);
        let term = (mse(&g.mean, &s.mean.detach())? + mse(&g.std, &s.std.detach())?)?;
        total = Some(match total {
            None => term,
            Some(acc) => (acc + term)?,
        });
    }
    match total {
        Some(t) => Ok(t),
        None => candle_core::bail!("style loss over no layers"),
    }
}

/// Gram matrices of a feature map [N,C,H,W] -> [N,C,C], normalised by C*H*W:
/// `G = F F^T / (C H W)` with F the [C, H*W] feature matrix. On the CPU in
/// f32 one op whose backward is one product ([`crate::kernels::loss`]).
pub fn gram(feat: &Tensor) -> Result<Tensor> {
    let (_, c, h, w) = feat.dims4()?;
    let scale = 1.0 / (c * h * w) as f64;
    if feat.device().is_cpu() && feat.dtype() == candle_core::DType::F32 {
        return crate::kernels::loss::gram(feat, scale);
    }
    gram_graph(feat, scale)
}

/// [`gram`] as candle's graph (other devices and dtypes; the op's reference
/// in tests).
pub fn gram_graph(feat: &Tensor, scale: f64) -> Result<Tensor> {
    let (n, c, h, w) = feat.dims4()?;
    let f = feat.reshape((n, c, h * w))?;
    f.matmul(&f.t()?)? * scale
}

/// One forward pass of the objective for a batch of content and style images
/// ([B,3,H,W] in [0,1]). The encoder has no variables, so no gradient is ever
/// computed for it; gradients reach the decoder through it.
pub fn losses(
    encoder: &Encoder,
    decoder: &Decoder,
    content: &Tensor,
    style: &Tensor,
) -> Result<Losses> {
    let style_feats = encoder.features(style)?;
    let content_feat = encoder.relu4_1(content)?;
    let t = adain(&content_feat, &style_feats[3])?.detach();
    let g = decoder.forward(&t)?;
    let g_feats = encoder.features(&g)?;
    Ok(Losses {
        content: mse(&g_feats[3], &t)?,
        style: style_musigma(&g_feats, &style_feats)?,
        output: g,
        style_relu4_1: style_feats[3].clone(),
    })
}

/// The compound temporal regulariser of Wang et al. (2020, "Consistent video
/// style transfer via compound regularization"): stylizing a slightly moved
/// and noisy copy of the content should give the moved output. `moved_content`
/// is W(c) + noise for a smooth warp W, `moved_output` is W(g(t)) (the warp
/// applied to [`Losses::output`], differentiable), `valid` `[B,1,H,W]` is 1
/// where W samples inside the picture. Returns the mean absolute difference
/// over the valid pixels: |g(AdaIN(relu4_1(W c + n), s)) - W g(t)|.
pub fn compound_temporal(
    encoder: &Encoder,
    decoder: &Decoder,
    moved_content: &Tensor,
    style_relu4_1: &Tensor,
    moved_output: &Tensor,
    valid: &Tensor,
) -> Result<Tensor> {
    let t = adain(&encoder.relu4_1(moved_content)?, style_relu4_1)?.detach();
    let g = decoder.forward(&t)?;
    let diff = (g - moved_output)?.abs()?.broadcast_mul(valid)?;
    let channels = moved_output.dim(1)? as f64;
    let count = (valid.sum_all()? * channels)?;
    diff.sum_all()?.div(&count.clamp(1.0, f64::INFINITY)?)
}
