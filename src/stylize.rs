//! The whole method at inference: encode, AdaIN (with alpha, blends, masks and
//! colour preservation), decode. Works on tensors; `main.rs` does the files.

use std::path::Path;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::adain::{self, Stats};
use crate::color;
use crate::decoder::{Decoder, STRIDE};
use crate::encoder::Encoder;
use crate::layers::reflect_pad;
use crate::weights::{self, WeightFile};

/// `--preserve-color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorMode {
    /// Keep the style's colours (no preservation).
    #[default]
    #[value(skip)]
    None,
    /// Give the style image the content's colour statistics first (reference `coral`).
    Coral,
    /// Stylize the luminance only; keep the content's chroma.
    Luminance,
}

/// How the style(s) act on the content features.
#[derive(Debug, Clone)]
pub enum Control {
    /// Weighted blend of the styles' AdaIN targets (weights sum to 1; one style: `[1.0]`).
    Blend(Vec<f64>),
    /// One 0/1 mask [H,W] (content size) per style: region r gets style r.
    Masks(Vec<Tensor>),
}

#[derive(Debug, Clone)]
pub struct Options {
    /// 0 = the decoder's reconstruction of the content, 1 = full style.
    pub alpha: f64,
    pub control: Control,
    pub color: ColorMode,
}

/// Encoder + decoder, ready to stylize.
pub struct Model {
    pub encoder: Encoder,
    pub decoder: Decoder,
    pub device: Device,
}

impl Model {
    pub fn new(encoder: &WeightFile, decoder: &WeightFile, device: &Device) -> Result<Self> {
        encoder.check(&weights::encoder_shapes())?;
        decoder.check(&Decoder::tensor_shapes())?;
        let enc = Encoder::new(VarBuilder::from_tensors(
            encoder.on(device)?,
            DType::F32,
            device,
        ))?;
        let dec = Decoder::new(VarBuilder::from_tensors(
            decoder.on(device)?,
            DType::F32,
            device,
        ))?;
        Ok(Self {
            encoder: enc,
            decoder: dec,
            device: device.clone(),
        })
    }

    /// Loads both files; warns when the decoder was trained against another encoder.
    pub fn load(vgg: &Path, decoder: &Path, device: &Device) -> Result<Self> {
        let enc = WeightFile::load(vgg)?;
        let dec = WeightFile::load(decoder)?;
        if dec.metadata.contains_key(weights::META_ENCODER_SHA) {
            weights::warn_if_other_encoder(&dec, vgg, &weights::sha256_file(vgg)?);
        }
        Self::new(&enc, &dec, device)
    }

    /// relu4_1 statistics of a style image [1,3,H,W]: all AdaIN needs of a style.
    pub fn style_stats(&self, style: &Tensor) -> Result<Stats> {
        Ok(adain::mean_std(&self.encoder.relu4_1(style)?)?)
    }

    /// Stylizes `content` [1,3,H,W] with `styles` (images [1,3,h,w]); the
    /// output has the content's size. Colour preservation changes the styles
    /// per content, so their statistics are computed here.
    pub fn stylize(&self, content: &Tensor, styles: &[Tensor], opts: &Options) -> Result<Tensor> {
        match opts.color {
            ColorMode::None => {
                let stats = styles
                    .iter()
                    .map(|s| self.style_stats(s))
                    .collect::<Result<Vec<_>>>()?;
                self.stylize_with_stats(content, &stats, opts)
            }
            ColorMode::Coral => {
                let stats = styles
                    .iter()
                    .map(|s| self.style_stats(&color::coral(s, content)?))
                    .collect::<Result<Vec<_>>>()?;
                self.stylize_with_stats(content, &stats, opts)
            }
            ColorMode::Luminance => {
                let yc = color::luminance(content)?;
                let stats = styles
                    .iter()
                    .map(|s| {
                        let ys = color::match_mean_std(&color::luminance(s)?, &yc)?;
                        self.style_stats(&ys.repeat((1, 3, 1, 1))?)
                    })
                    .collect::<Result<Vec<_>>>()?;
                let out = self.stylize_with_stats(&yc.repeat((1, 3, 1, 1))?, &stats, opts)?;
                Ok(color::transfer_luminance(content, &out)?)
            }
        }
    }

    /// Stylizes with precomputed style statistics (no colour preservation):
    /// what lets a batch encode each style once. Any content size works: it is
    /// reflection-padded to a multiple of 8 and the output cropped back.
    pub fn stylize_with_stats(
        &self,
        content: &Tensor,
        styles: &[Stats],
        opts: &Options,
    ) -> Result<Tensor> {
        let (_, _, h, w) = content.dims4()?;
        let (pt, pb) = split_pad(h);
        let (pl, pr) = split_pad(w);
        // The block frees the padded content, its features and the unmixed
        // target before the decoder's full-size layers (at 2048^2 they were
        // 0.3 GB of the peak).
        let t = {
            let c = self
                .encoder
                .relu4_1(&reflect_pad(content, pt, pb, pl, pr)?)?;
            let t = match &opts.control {
                Control::Blend(weights) => adain::blend(&c, styles, weights)?,
                Control::Masks(masks) => {
                    if masks.len() != styles.len() {
                        bail!("{} masks for {} styles", masks.len(), styles.len());
                    }
                    let (_, _, fh, fw) = c.dims4()?;
                    let mut taken = Tensor::zeros((fh, fw), DType::F32, &self.device)?;
                    let mut regions = Vec::new();
                    for (m, s) in masks.iter().zip(styles) {
                        let m = m.to_device(&self.device)?.to_dtype(DType::F32)?;
                        let m = reflect_pad(&m.reshape((1, 1, h, w))?, pt, pb, pl, pr)?;
                        let m = downsample_nearest(&m.squeeze(0)?.squeeze(0)?, fh, fw)?;
                        // binarise, and a position already taken by an earlier mask stays there
                        let m = m
                            .ge(0.5)?
                            .to_dtype(DType::F32)?
                            .mul(&taken.affine(-1.0, 1.0)?)?;
                        taken = (&taken + &m)?;
                        regions.push((m, s.clone()));
                    }
                    adain::masked(&c, &regions)?
                }
            };
            adain::mix_alpha(&t, &c, opts.alpha)?
        };
        let out = self.decoder.decode(t)?;
        Ok(out.narrow(2, pt, h)?.narrow(3, pl, w)?)
    }
}

/// Reflection padding (before, after) that brings `n` to a multiple of STRIDE.
fn split_pad(n: usize) -> (usize, usize) {
    let p = n.div_ceil(STRIDE) * STRIDE - n;
    (p / 2, p - p / 2)
}

/// Nearest-neighbour resize of a [H,W] map, as `F.interpolate(mode="nearest")`:
/// source index floor(i * H / h).
pub fn downsample_nearest(m: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (sh, sw) = m.dims2()?;
    let rows: Vec<u32> = (0..h).map(|i| (i * sh / h) as u32).collect();
    let cols: Vec<u32> = (0..w).map(|j| (j * sw / w) as u32).collect();
    let rows = Tensor::new(rows.as_slice(), m.device())?;
    let cols = Tensor::new(cols.as_slice(), m.device())?;
    Ok(m.index_select(&rows, 0)?.index_select(&cols, 1)?)
}
