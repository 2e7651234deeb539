//! Johnson et al.'s training objective (perceptual losses), in the shape of
//! [`crate::loss::losses`]: one forward pass of the network on a content
//! batch, then content, style and total-variation terms through our frozen
//! VGG-19 encoder. The trainer (`train/`) owns the loop and the optimiser.
//!
//! Pixel ranges: the network works in 0..255 (the `fast_neural_style`
//! example); our encoder takes RGB in `[0,1]` (its first 1x1 conv makes Caffe
//! BGR minus the mean, see `encoder.rs`). So the content batch is given in
//! `[0,1]`, multiplied by 255 for the network, and the output divided by 255
//! for the encoder and the TV term. The example normalises with ImageNet's
//! mean and std for torchvision's VGG-16 instead; our encoder's own input
//! convention replaces that.

use anyhow::{bail, Result};
use candle_core::{Module, Tensor};

use super::TransformerNet;
use crate::encoder::FEATURE_NAMES;
use crate::loss::gram;
use crate::Encoder;

/// The content layer by default: relu2_1 (index 1 of
/// [`FEATURE_NAMES`]). Johnson et al. take relu2_2 of VGG-16: the end of the
/// second block, 128 channels at half resolution, deep enough to let
/// textures change and shallow enough to keep edges where they are. Our
/// encoder stops at relu4_1 of VGG-19 and exposes relu1_1..relu4_1; relu2_1 is
/// the same block (128 channels, half resolution), one conv earlier.
/// relu1_1 is nearly the pixels (no room for style), relu3_1 is at a quarter
/// of the resolution and lets outlines move.
pub const DEFAULT_CONTENT_LAYER: usize = 1;

/// The weights of the three terms in the total.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Weights {
    pub content: f64,
    pub style: f64,
    /// 0 leaves total variation out of the total (it is still reported).
    pub tv: f64,
}

/// Every term as a scalar tensor, still attached to the network's graph.
/// `content`, `style` and `tv` are unweighted; `total` is
/// `w.content * content + w.style * style + w.tv * tv`.
pub struct Losses {
    pub content: Tensor,
    pub style: Tensor,
    pub tv: Tensor,
    pub total: Tensor,
}

/// The objective against one style image: its Gram matrices computed once.
pub struct Objective {
    /// Index into relu1_1..relu4_1 ([`FEATURE_NAMES`]) of the content loss.
    pub content_layer: usize,
    pub weights: Weights,
    /// `[1,C,C]` per layer relu1_1..relu4_1, of the style image (detached).
    pub style_grams: Vec<Tensor>,
}

impl Objective {
    /// `style` `[1,3,H,W]` in `[0,1]`.
    pub fn new(
        encoder: &Encoder,
        style: &Tensor,
        content_layer: usize,
        weights: Weights,
    ) -> Result<Self> {
        if content_layer >= FEATURE_NAMES.len() {
            bail!(
                "content layer {content_layer}: must be 0..{} ({})",
                FEATURE_NAMES.len() - 1,
                FEATURE_NAMES.join(", ")
            );
        }
        if style.dim(0)? != 1 {
            bail!("one style image expected, got a batch of {}", style.dim(0)?);
        }
        let style_grams = encoder
            .features(&style.detach())?
            .iter()
            .map(|f| Ok(gram(f)?.detach()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            content_layer,
            weights,
            style_grams,
        })
    }

    /// The content layer's name (`relu2_1`).
    pub fn content_layer_name(&self) -> &'static str {
        FEATURE_NAMES[self.content_layer]
    }

    /// One forward pass: `content` `[B,3,H,W]` in `[0,1]`, H and W multiples of
    /// [`super::STRIDE`] (training crops). Content = MSE of the features at
    /// the content layer, output vs content; style = sum over relu1_1..relu4_1
    /// of the MSE between the output's Gram matrices and the style's (each
    /// `F F^T / (C H W)`, the example's `gram_matrix`; MSE over B*C*C); tv =
    /// mean squared difference of vertically plus of horizontally adjacent
    /// pixels of the output in `[0,1]`.
    pub fn losses(
        &self,
        encoder: &Encoder,
        net: &TransformerNet,
        content: &Tensor,
    ) -> Result<Losses> {
        let (b, _, h, w) = content.dims4()?;
        if h % super::STRIDE != 0 || w % super::STRIDE != 0 {
            bail!(
                "content batch {h}x{w}: sides must be multiples of {}",
                super::STRIDE
            );
        }
        let y = (net.forward(&(content * 255.0)?)? / 255.0)?;
        // the target needs the content's features up to its layer only
        let target = encoder
            .features_upto(&content.detach(), self.content_layer)?
            .pop()
            .expect("a feature")
            .detach();
        let feats = encoder.features(&y)?;
        let content_loss = mse(&feats[self.content_layer], &target)?;
        let mut style: Option<Tensor> = None;
        for (f, g) in feats.iter().zip(&self.style_grams) {
            let (_, c, _) = g.dims3()?;
            let term = mse(&gram(f)?, &g.broadcast_as((b, c, c))?)?;
            style = Some(match style {
                None => term,
                Some(acc) => (acc + term)?,
            });
        }
        let style = style.expect("four layers");
        let tv = total_variation(&y)?;
        let wt = self.weights;
        let total = (((&content_loss * wt.content)? + (&style * wt.style)?)? + (&tv * wt.tv)?)?;
        Ok(Losses {
            content: content_loss,
            style,
            tv,
            total,
        })
    }
}

/// Mean squared error, summed in f64: one f32 sum over the half-million
/// entries of relu4_1's Gram matrices was 1e-5 off (float64:
/// `tests/johnson.rs`). On the CPU in f32 one op ([`crate::kernels::loss`]);
/// elsewhere summed per row of the last dimension first.
fn mse(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    if a.device().is_cpu() && a.dtype() == candle_core::DType::F32 {
        return crate::kernels::loss::mse(a, b);
    }
    let d = (a - b)?.sqr()?;
    let last = d.dims().last().copied().unwrap_or(1).max(1);
    let rows = d.elem_count() / last;
    d.reshape((rows, last))?.sum(1)?.sum_all()? / d.elem_count() as f64
}

/// mean((x[.., 1:, :] - x[.., :-1, :])^2) + mean((x[.., :, 1:] - x[.., :, :-1])^2).
pub fn total_variation(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let dy = (x.narrow(2, 1, h - 1)? - x.narrow(2, 0, h - 1)?)?;
    let dx = (x.narrow(3, 1, w - 1)? - x.narrow(3, 0, w - 1)?)?;
    Ok((dy.sqr()?.mean_all()? + dx.sqr()?.mean_all()?)?)
}
