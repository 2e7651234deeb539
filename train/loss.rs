//! The training objective, exactly as the reference `Net.forward`:
//! content = MSE(relu4_1(g(t)), t) with t = AdaIN(relu4_1(c), relu4_1(s));
//! style = sum over relu1_1..relu4_1 of MSE(mean) + MSE(std) between g(t) and s.

use adain::adain::{adain, mean_std};
use adain::{Decoder, Encoder};
use candle_core::{Module, Result, Tensor};

/// Both loss terms (scalars, still attached to the decoder's graph).
pub struct Losses {
    pub content: Tensor,
    pub style: Tensor,
}

impl Losses {
    /// `cw * content + sw * style`.
    pub fn total(&self, content_weight: f64, style_weight: f64) -> Result<Tensor> {
        (&self.content * content_weight)? + (&self.style * style_weight)?
    }
}

fn mse(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    (a - b)?.sqr()?.mean_all()
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
    let content_loss = mse(&g_feats[3], &t)?;
    let mut style_loss: Option<Tensor> = None;
    for (gf, sf) in g_feats.iter().zip(&style_feats) {
        let (g, s) = (mean_std(gf)?, mean_std(sf)?);
        let term = (mse(&g.mean, &s.mean.detach())? + mse(&g.std, &s.std.detach())?)?;
        style_loss = Some(match style_loss {
            None => term,
            Some(acc) => (acc + term)?,
        });
    }
    Ok(Losses {
        content: content_loss,
        style: style_loss.expect("four features"),
    })
}
