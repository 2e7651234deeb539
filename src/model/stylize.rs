//! The whole method at inference: encode, AdaIN (with alpha, blends, masks and
//! colour preservation), decode. Works on tensors; `main.rs` does the files.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::adain::{self, Stats};
use crate::color;
use crate::decoder::{Decoder, STRIDE};
use crate::encoder::Encoder;
use crate::layers::reflect_pad;
use crate::weights::{self, WeightFile, WeightSource};

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
    /// Video: the content statistics smoothed over frames (`None`: this
    /// picture's own, as for stills).
    pub smooth: Option<Arc<Mutex<StatsEma>>>,
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
        Self::from_sources(
            &WeightSource::File(vgg.to_owned()),
            &WeightSource::File(decoder.to_owned()),
            device,
        )
    }

    /// [`Self::load`] for files or the weights built into the binary.
    pub fn from_sources(
        vgg: &WeightSource,
        decoder: &WeightSource,
        device: &Device,
    ) -> Result<Self> {
        let enc = vgg.load()?;
        let dec = decoder.load()?;
        if dec.metadata.contains_key(weights::META_ENCODER_SHA) {
            weights::warn_if_other_encoder(&dec, &vgg.label(), &vgg.sha256()?);
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
        let summary = ContentColor::of(content, opts.color)?;
        let stats = self.styles_for(styles, opts.color, &summary)?;
        match opts.color {
            ColorMode::Luminance => {
                let yc = color::luminance(content)?;
                let out = self.stylize_with_stats(&yc.repeat((1, 3, 1, 1))?, &stats, opts)?;
                Ok(color::transfer_luminance(content, &out)?)
            }
            _ => self.stylize_with_stats(content, &stats, opts),
        }
    }

    /// The style statistics AdaIN uses for these style images under a colour
    /// mode: coral recolours each style to the content's colours first,
    /// luminance encodes its luminance matched to the content's.
    pub fn styles_for(
        &self,
        styles: &[Tensor],
        color: ColorMode,
        content: &ContentColor,
    ) -> Result<Vec<Stats>> {
        styles
            .iter()
            .map(|s| match (color, content) {
                (ColorMode::Coral, ContentColor::Rgb(c)) => {
                    self.style_stats(&color::coral_to(s, c)?)
                }
                (ColorMode::Luminance, ContentColor::Luma(m)) => {
                    let ys = color::match_mean_std_to(&color::luminance(s)?, *m)?;
                    self.style_stats(&ys.repeat((1, 3, 1, 1))?)
                }
                (ColorMode::None, _) => self.style_stats(s),
                _ => bail!("colour statistics of the content do not match the mode {color:?}"),
            })
            .collect()
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
            let (_, _, fh, fw) = c.dims4()?;
            let content_stats = match &opts.control {
                Control::Blend(_) => ContentStats::Whole(adain::mean_std(&c)?),
                Control::Masks(masks) => {
                    let regions = feature_masks(masks, (h, w), (fh, fw), &self.device)?;
                    let stats = regions
                        .iter()
                        .map(|m| Ok(adain::region_stats(&c, m)?))
                        .collect::<Result<Vec<_>>>()?;
                    ContentStats::Regions(regions.into_iter().zip(stats).collect())
                }
            };
            let content_stats = smoothed(content_stats, opts)?;
            self.target(&c, &content_stats, styles, opts)?
        };
        let out = self.decoder.decode(t)?;
        Ok(out.narrow(2, pt, h)?.narrow(3, pl, w)?)
    }

    /// The decoder's input for content features `c` (the whole map or a tile
    /// of it) given the content statistics (of the whole image): AdaIN, blend
    /// or regional AdaIN, then the alpha mix.
    pub fn target(
        &self,
        c: &Tensor,
        content: &ContentStats,
        styles: &[Stats],
        opts: &Options,
    ) -> Result<Tensor> {
        let t = match (&opts.control, content) {
            (Control::Blend(weights), ContentStats::Whole(cs)) => {
                adain::blend_given(c, cs, styles, weights)?
            }
            (Control::Masks(_), ContentStats::Regions(regions)) => {
                if regions.len() != styles.len() {
                    bail!("{} masks for {} styles", regions.len(), styles.len());
                }
                let given: Vec<_> = regions
                    .iter()
                    .zip(styles)
                    .map(|((m, cs), s)| (m.clone(), cs.clone(), s.clone()))
                    .collect();
                adain::masked_given(c, &given)?
            }
            _ => bail!("content statistics do not match the control (blend or masks)"),
        };
        Ok(adain::mix_alpha(&t, c, opts.alpha)?)
    }
}

/// What colour preservation needs to know of the content: its colour
/// statistics (coral) or its luminance's mean and std (luminance mode).
#[derive(Debug, Clone)]
pub enum ContentColor {
    None,
    Rgb(color::ColorStats),
    Luma((f64, f64)),
}

impl ContentColor {
    /// Of a whole content image [1,3,H,W].
    pub fn of(content: &Tensor, mode: ColorMode) -> Result<Self> {
        Ok(match mode {
            ColorMode::None => Self::None,
            ColorMode::Coral => Self::Rgb(color::ColorStats::of(content)?),
            ColorMode::Luminance => {
                Self::Luma(color::tensor_mean_std(&color::luminance(content)?)?)
            }
        })
    }
}

/// The content's relu4_1 statistics: over the whole map, or over each mask's
/// region (mask [fh,fw] at feature resolution, `None` for a region too small).
#[derive(Debug, Clone)]
pub enum ContentStats {
    Whole(Stats),
    Regions(Vec<(Tensor, Option<Stats>)>),
}

/// An exponential moving average of the content statistics over the frames
/// of a video (per region with masks): frame t uses
/// `m_t = momentum * m_{t-1} + (1 - momentum) * (this frame's)`, the same for
/// the std. Stops brightness and colour pumping; not texture flicker.
#[derive(Debug, Clone)]
pub struct StatsEma {
    pub momentum: f64,
    /// Per region (one for the whole frame); `None` before the first frame
    /// that has it.
    pub state: Vec<Option<Stats>>,
}

impl StatsEma {
    pub fn new(momentum: f64) -> Self {
        Self {
            momentum,
            state: Vec::new(),
        }
    }

    /// This frame's statistics folded in; returns the smoothed ones.
    pub fn apply(&mut self, cs: ContentStats) -> Result<ContentStats> {
        Ok(match cs {
            ContentStats::Whole(s) => ContentStats::Whole(self.mix(0, s)?),
            ContentStats::Regions(v) => {
                let (masks, stats): (Vec<_>, Vec<_>) = v.into_iter().unzip();
                ContentStats::Regions(masks.into_iter().zip(self.apply_each(stats)?).collect())
            }
        })
    }

    /// [`Self::apply`] on per-region statistics (`None`: a region absent
    /// from this frame, which leaves its average as it was).
    pub fn apply_each(&mut self, stats: Vec<Option<Stats>>) -> Result<Vec<Option<Stats>>> {
        stats
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.map(|s| self.mix(i, s)).transpose())
            .collect()
    }

    fn mix(&mut self, i: usize, s: Stats) -> Result<Stats> {
        if self.state.len() <= i {
            self.state.resize(i + 1, None);
        }
        let m = self.momentum;
        let new = match self.state[i].take() {
            Some(p) => Stats {
                mean: ((p.mean * m)? + (s.mean * (1.0 - m))?)?,
                std: ((p.std * m)? + (s.std * (1.0 - m))?)?,
            },
            None => s,
        };
        self.state[i] = Some(new.clone());
        Ok(new)
    }
}

/// The content statistics AdaIN should use: smoothed when `opts` says so.
pub fn smoothed(cs: ContentStats, opts: &Options) -> Result<ContentStats> {
    match &opts.smooth {
        Some(ema) => ema.lock().expect("stats lock").apply(cs),
        None => Ok(cs),
    }
}

/// The masks (one 0/1 [H,W] per style, content size `(h, w)`) at feature
/// resolution `(fh, fw)` of the padded content, as the network sees them:
/// reflection-padded like the content, sampled nearest, binarised, and a
/// position claimed by an earlier mask stays with it.
pub fn feature_masks(
    masks: &[Tensor],
    (h, w): (usize, usize),
    (fh, fw): (usize, usize),
    device: &Device,
) -> Result<Vec<Tensor>> {
    let (pt, pb) = split_pad(h);
    let (pl, pr) = split_pad(w);
    let mut taken = Tensor::zeros((fh, fw), DType::F32, device)?;
    let mut out = Vec::new();
    for m in masks {
        let m = m.to_device(device)?.to_dtype(DType::F32)?;
        let m = reflect_pad(&m.reshape((1, 1, h, w))?, pt, pb, pl, pr)?;
        let m = downsample_nearest(&m.squeeze(0)?.squeeze(0)?, fh, fw)?;
        let m = m
            .ge(0.5)?
            .to_dtype(DType::F32)?
            .mul(&taken.affine(-1.0, 1.0)?)?;
        taken = (&taken + &m)?;
        out.push(m);
    }
    Ok(out)
}

/// Reflection padding (before, after) that brings `n` to a multiple of STRIDE.
pub fn split_pad(n: usize) -> (usize, usize) {
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
