//! Stylization of any size in bounded memory, with the whole-image result.
//!
//! AdaIN needs the content's relu4_1 mean and std over the WHOLE image, so
//! this runs in two passes over tiles of the padded image (padded to a
//! multiple of 8 by reflection at the true border, as the whole-image path):
//! 1. encode each tile with a halo, keep its centre's features and pool their
//!    per-channel sums and sums of squares (per mask region with masks): the
//!    exact statistics of the whole map;
//! 2. take each tile's features with the decoder's halo (kept from pass 1 when
//!    the whole feature map fits the budget, else encoded again), apply AdaIN
//!    with the pooled statistics, decode and keep the centre.
//!
//! The halos cover the receptive fields, worked out layer by layer:
//! - encoder: a relu4_1 cell (8x8 pixels) depends on the pixels within 30 of
//!   it (convs of radius 1, 1 at full size, 2, 2 at 1/2, 4 x 4 at 1/4, 8 at
//!   1/8, plus the pooling windows), so [`ENCODER_HALO`] = 32 px (4 cells);
//! - decoder: an output pixel depends on the relu4_1 cells within 4 of its own
//!   cell (conv 1 at 1/8, four convs at 1/4, two at 1/2, two at full size,
//!   with the nearest upsamplings in between), so [`DECODER_HALO`] = 4 cells.
//!
//! Tiles start at multiples of 8, so every pooling window is the one the whole
//! image has, and the halo holds the image's own pixels (reflection happens
//! only at the true border). What remains is float rounding (the Winograd
//! kernels' blocks fall elsewhere in a tile): see `tests/tiles.rs`.

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use image::RgbImage;

use super::plan::Limits;
use crate::adain::{Stats, StatsSum};
use crate::color::{self, ColorStats, Mat3};
use crate::decoder::STRIDE;
use crate::image_io::{self, Source};
use crate::layers::reflect_pad;
use crate::stylize::{feature_masks, split_pad, ContentColor, ContentStats};
use crate::{ColorMode, Control, Model, Options};

/// Pixels of halo around a tile for its relu4_1 features to be exact.
pub const ENCODER_HALO: usize = 32;
/// relu4_1 cells of halo around a tile for its decoded pixels to be exact.
pub const DECODER_HALO: usize = 4;
/// Channels of relu4_1.
const FEATURES: usize = 512;

/// Peak working memory of the network per pixel of the (padded) image it
/// runs on, measured with `adain bench` (stylize at 512-2048: 540-560 bytes a
/// pixel over the weights; the 64-channel full-size activations, the conv
/// outputs and the Winograd buffers).
pub const BYTES_PER_PIXEL: u64 = 560;

/// Resident memory of the process besides the network and the pictures: the
/// weights as f32 (28 MB), the binary, the allocator's and threads' buffers
/// (measured: 60-90 MB).
pub const BASELINE: u64 = 96 << 20;

/// How an image of a given size is run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Strategy {
    /// One pass over the whole image.
    Whole,
    /// Tiles whose centres are at most `tile` px a side; `keep_features`:
    /// pass 1's feature map is kept (fits the budget) instead of encoding twice.
    Tiled { tile: usize, keep_features: bool },
}

/// Whole-image when it fits `limits.max_memory` (and no tile size is forced),
/// else the largest tiles that fit beside the 8-bit picture and output.
pub fn strategy(w: u32, h: u32, limits: &Limits) -> Strategy {
    // the padded image's size (a multiple of 8, as split_pad makes it)
    let (wp, hp) = (round8(w as usize), round8(h as usize));
    let pixels = (wp * hp) as u64;
    if limits.tile.is_none() && pixels * BYTES_PER_PIXEL <= limits.max_memory {
        return Strategy::Whole;
    }
    // The budget also holds the 8-bit picture and output of a tiled image (at
    // 8K they are 200 MB of it) and the process itself (weights, buffers).
    let images = w as u64 * h as u64 * 6;
    let network = limits
        .max_memory
        .saturating_sub(images + BASELINE)
        .max(64 << 20);
    let feature_bytes = pixels / 64 * FEATURES as u64 * 4;
    let keep_features = feature_bytes <= network / 4;
    let tile = match limits.tile {
        Some(t) => round8(t as usize).max(STRIDE),
        None => {
            let budget = network - if keep_features { feature_bytes } else { 0 };
            let halo = if keep_features {
                ENCODER_HALO.max(DECODER_HALO * STRIDE)
            } else {
                ENCODER_HALO + DECODER_HALO * STRIDE
            };
            let side = ((budget / BYTES_PER_PIXEL) as f64).sqrt() as usize;
            (side.saturating_sub(2 * halo) / STRIDE * STRIDE).max(64)
        }
    };
    Strategy::Tiled {
        tile,
        keep_features,
    }
}

fn round8(n: usize) -> usize {
    n.div_ceil(STRIDE) * STRIDE
}

/// Splits 0..n (a multiple of 8) into spans of at most `tile` (multiples of 8)
/// of nearly equal size.
fn spans(n: usize, tile: usize) -> Vec<(usize, usize)> {
    let count = n.div_ceil(tile);
    let cells = n / STRIDE;
    (0..count)
        .map(|i| (cells * i / count * STRIDE, cells * (i + 1) / count * STRIDE))
        .filter(|(a, b)| b > a)
        .collect()
}

/// The styles of a tiled stylization.
pub enum Styles<'a> {
    /// relu4_1 statistics (no colour preservation).
    Stats(&'a [Stats]),
    /// Style images [1,3,h,w], encoded here once the content's colours are known.
    Images(&'a [Tensor]),
}

/// The work image in padded coordinates.
struct Padded<'a> {
    img: &'a Source,
    w: usize,
    h: usize,
    pt: usize,
    pl: usize,
    luminance: bool,
    device: &'a Device,
}

impl Padded<'_> {
    /// The network's input over padded rows y0..y1, columns x0..x1: the
    /// image's pixels, reflected only where the rectangle passes its border.
    fn input(&self, (x0, x1): (usize, usize), (y0, y1): (usize, usize)) -> Result<Tensor> {
        let (ux0, ux1) = (
            x0.saturating_sub(self.pl),
            (x1 - self.pl.min(x1)).min(self.w),
        );
        let (uy0, uy1) = (
            y0.saturating_sub(self.pt),
            (y1 - self.pt.min(y1)).min(self.h),
        );
        let t = self.rgb((ux0, ux1), (uy0, uy1))?;
        let t = reflect_pad(
            &t,
            (self.pt + uy0).saturating_sub(y0),
            y1.saturating_sub(self.pt + uy1),
            (self.pl + ux0).saturating_sub(x0),
            x1.saturating_sub(self.pl + ux1),
        )?;
        Ok(if self.luminance {
            color::luminance(&t)?.repeat((1, 3, 1, 1))?
        } else {
            t
        })
    }

    /// Image pixels (unpadded coordinates) as [1,3,h,w].
    fn rgb(&self, (x0, x1): (usize, usize), (y0, y1): (usize, usize)) -> Result<Tensor> {
        let crop = self
            .img
            .crop_rgb32f(x0 as u32, y0 as u32, (x1 - x0) as u32, (y1 - y0) as u32);
        image_io::to_tensor(&crop, self.device)
    }
}

/// Colour statistics of the whole work image, read in strips of rows.
fn content_color(img: &Source, mode: ColorMode) -> Result<ContentColor> {
    if mode == ColorMode::None {
        return Ok(ContentColor::None);
    }
    let (w, h) = (img.width(), img.height());
    let (mut sum, mut cross, mut y_sum, mut y_sq) = ([0f64; 3], [[0f64; 3]; 3] as Mat3, 0f64, 0f64);
    let strip = 256;
    for y0 in (0..h).step_by(strip) {
        let rows = strip.min((h - y0) as usize) as u32;
        let px = img.crop_rgb32f(0, y0, w, rows);
        for p in px.pixels() {
            let v = p.0.map(|x| x as f64);
            for i in 0..3 {
                sum[i] += v[i];
                for j in 0..3 {
                    cross[i][j] += v[i] * v[j];
                }
            }
            // as color::luminance computes it (f32)
            let y = (p.0[0] * color::LUMA[0] as f32
                + p.0[1] * color::LUMA[1] as f32
                + p.0[2] * color::LUMA[2] as f32) as f64;
            y_sum += y;
            y_sq += y * y;
        }
    }
    let n = w as f64 * h as f64;
    Ok(match mode {
        ColorMode::Coral => ContentColor::Rgb(ColorStats::from_sums(n, sum, cross)),
        _ => {
            let m = y_sum / n;
            let var = ((y_sq - n * m * m) / (n - 1.0).max(1.0)).max(0.0);
            ContentColor::Luma((m, var.sqrt()))
        }
    })
}

/// Stylizes the work image `img` (already at the working size) in tiles and
/// returns the 8-bit output at its size. `opts.control` masks are [H,W] at the
/// work size. `progress(done, total)` is called after each tile of each pass.
pub fn stylize_tiled(
    model: &Model,
    img: &Source,
    styles: Styles,
    opts: &Options,
    tile: usize,
    keep_features: bool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<RgbImage> {
    let device = &model.device;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (pt, pb) = split_pad(h);
    let (pl, pr) = split_pad(w);
    let (wp, hp) = (w + pl + pr, h + pt + pb);
    let (fw, fh) = (wp / STRIDE, hp / STRIDE);
    let src = Padded {
        img,
        w,
        h,
        pt,
        pl,
        luminance: opts.color == ColorMode::Luminance,
        device,
    };
    let style_stats = match styles {
        Styles::Stats(s) => s.to_vec(),
        Styles::Images(images) => {
            model.styles_for(images, opts.color, &content_color(img, opts.color)?)?
        }
    };
    let regions = match &opts.control {
        Control::Masks(m) => Some(feature_masks(m, (h, w), (fh, fw), device)?),
        Control::Blend(_) => None,
    };
    let (xs, ys) = (spans(wp, tile), spans(hp, tile));
    let total = 2 * xs.len() * ys.len();
    let mut done = 0;

    // Pass 1: pooled statistics (and the feature map, when kept).
    let n_sums = regions.as_ref().map_or(1, |r| r.len());
    let mut sums = vec![StatsSum::new(FEATURES); n_sums];
    let mut kept_rows = Vec::new();
    for &(y0, y1) in &ys {
        let mut kept_row = Vec::new();
        for &(x0, x1) in &xs {
            let ix = (x0.saturating_sub(ENCODER_HALO), (x1 + ENCODER_HALO).min(wp));
            let iy = (y0.saturating_sub(ENCODER_HALO), (y1 + ENCODER_HALO).min(hp));
            let f = model.encoder.relu4_1(&src.input(ix, iy)?)?;
            let f = f
                .narrow(2, (y0 - iy.0) / STRIDE, (y1 - y0) / STRIDE)?
                .narrow(3, (x0 - ix.0) / STRIDE, (x1 - x0) / STRIDE)?;
            match &regions {
                None => sums[0].add(&f, None)?,
                Some(masks) => {
                    for (sum, m) in sums.iter_mut().zip(masks) {
                        let m = m.narrow(0, y0 / STRIDE, (y1 - y0) / STRIDE)?.narrow(
                            1,
                            x0 / STRIDE,
                            (x1 - x0) / STRIDE,
                        )?;
                        sum.add(&f, Some(&m))?;
                    }
                }
            }
            if keep_features {
                kept_row.push(f.contiguous()?);
            }
            done += 1;
            progress(done, total);
        }
        if keep_features {
            kept_rows.push(Tensor::cat(&kept_row, 3)?);
        }
    }
    let kept = if keep_features {
        Some(Tensor::cat(&kept_rows, 2)?)
    } else {
        None
    };
    drop(kept_rows);
    let pooled = |s: &StatsSum| -> Result<Option<Stats>> {
        Ok(if s.count() < 2.0 {
            None
        } else {
            Some(s.finish(device)?)
        })
    };
    let whole = match &regions {
        None => Some(
            sums[0]
                .finish(device)
                .context("content features: too few positions")?,
        ),
        Some(_) => None,
    };
    let region_stats = sums.iter().map(pooled).collect::<Result<Vec<_>>>()?;
    // video: smoothed over frames once per frame, before any tile uses them
    let (whole, region_stats) = match (&opts.smooth, whole) {
        (None, whole) => (whole, region_stats),
        (Some(ema), Some(s)) => {
            let mut e = ema.lock().expect("stats lock");
            (e.apply_each(vec![Some(s)])?.pop().flatten(), region_stats)
        }
        (Some(ema), None) => (
            None,
            ema.lock().expect("stats lock").apply_each(region_stats)?,
        ),
    };

    // Pass 2: AdaIN with the pooled statistics, decode, keep the centres.
    let mut out = RgbImage::new(w as u32, h as u32);
    for &(y0, y1) in &ys {
        for &(x0, x1) in &xs {
            let dh = DECODER_HALO * STRIDE;
            let fx = (x0.saturating_sub(dh), (x1 + dh).min(wp));
            let fy = (y0.saturating_sub(dh), (y1 + dh).min(hp));
            let (cx, cy) = (
                (fx.0 / STRIDE, (fx.1 - fx.0) / STRIDE),
                (fy.0 / STRIDE, (fy.1 - fy.0) / STRIDE),
            );
            let f = match &kept {
                Some(k) => k
                    .narrow(2, cy.0, cy.1)?
                    .narrow(3, cx.0, cx.1)?
                    .contiguous()?,
                None => {
                    let ix = (
                        fx.0.saturating_sub(ENCODER_HALO),
                        (fx.1 + ENCODER_HALO).min(wp),
                    );
                    let iy = (
                        fy.0.saturating_sub(ENCODER_HALO),
                        (fy.1 + ENCODER_HALO).min(hp),
                    );
                    let f = model.encoder.relu4_1(&src.input(ix, iy)?)?;
                    f.narrow(2, (fy.0 - iy.0) / STRIDE, cy.1)?
                        .narrow(3, (fx.0 - ix.0) / STRIDE, cx.1)?
                        .contiguous()?
                }
            };
            let stats = match (&whole, &regions) {
                (Some(s), _) => ContentStats::Whole(s.clone()),
                (None, Some(masks)) => ContentStats::Regions(
                    masks
                        .iter()
                        .zip(&region_stats)
                        .map(|(m, s)| {
                            Ok((m.narrow(0, cy.0, cy.1)?.narrow(1, cx.0, cx.1)?, s.clone()))
                        })
                        .collect::<Result<Vec<_>>>()?,
                ),
                (None, None) => unreachable!("statistics are whole or per region"),
            };
            let t = model.target(&f, &stats, &style_stats, opts)?;
            drop(f);
            let decoded = model.decoder.decode(t)?;
            // the centre, less the border padding: unpadded x0..x1, y0..y1
            let (ux0, ux1) = (x0.max(pl) - pl, x1.min(pl + w) - pl);
            let (uy0, uy1) = (y0.max(pt) - pt, y1.min(pt + h) - pt);
            if ux1 > ux0 && uy1 > uy0 {
                let centre = decoded.narrow(2, uy0 + pt - fy.0, uy1 - uy0)?.narrow(
                    3,
                    ux0 + pl - fx.0,
                    ux1 - ux0,
                )?;
                let centre = if src.luminance {
                    color::transfer_luminance(&src.rgb((ux0, ux1), (uy0, uy1))?, &centre)?
                } else {
                    centre
                };
                let rgb = image_io::from_tensor(&centre)?;
                for (x, y, p) in rgb.enumerate_pixels() {
                    out.put_pixel(
                        ux0 as u32 + x,
                        uy0 as u32 + y,
                        image::Rgb(p.0.map(image_io::quantize)),
                    );
                }
            }
            done += 1;
            progress(done, total);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_cover_in_multiples_of_eight() {
        for (n, t) in [(8, 64), (64, 64), (1008, 128), (776, 200), (4320, 1184)] {
            let s = spans(n, t);
            assert_eq!(s[0].0, 0);
            assert_eq!(s.last().unwrap().1, n);
            for w in s.windows(2) {
                assert_eq!(w[0].1, w[1].0);
            }
            for (a, b) in s {
                assert!(a % 8 == 0 && b % 8 == 0 && b - a <= t.max(8));
            }
        }
    }

    #[test]
    fn small_images_run_whole_large_ones_in_tiles() {
        let l = Limits::default();
        assert_eq!(strategy(512, 512, &l), Strategy::Whole);
        match strategy(2048, 2048, &l) {
            Strategy::Tiled {
                tile,
                keep_features,
            } => {
                assert!(keep_features && tile % 8 == 0 && tile >= 512, "{tile}");
            }
            s => panic!("{s:?}"),
        }
        assert!(matches!(
            strategy(7680, 4320, &l),
            Strategy::Tiled {
                keep_features: false,
                ..
            }
        ));
        let forced = Limits {
            tile: Some(100),
            ..l
        };
        assert_eq!(
            strategy(300, 200, &forced),
            Strategy::Tiled {
                tile: 104,
                keep_features: true
            }
        );
    }
}
