//! The stylization engine every front-end calls (`adain stylize`, `adain
//! eval`, video, the server): the loaded network ([`Net`]: the AdaIN
//! [`Model`], or a per-style Johnson network), a cache of prepared styles
//! and their statistics, the [`Plan`] of a run, whole-image or tiled
//! stylization of any size ([`tile`]), atomic writing and progress callbacks.

pub mod plan;
pub mod tile;

use std::collections::{BTreeSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use image::{GrayImage, RgbImage};
use sha2::{Digest, Sha256};

pub use plan::{check_settings, Item, Job, Limits, Plan, Settings};
pub use tile::Strategy;

use crate::adain::Stats;
use crate::image_io::{self, Source};
use crate::johnson::JohnsonNet;
use crate::stylize::StatsEma;
use crate::{ColorMode, Control, Model, Options};

/// A style image decoded and resized once, with its relu4_1 statistics when
/// they do not depend on the content (no colour preservation).
pub struct Style {
    pub name: String,
    /// [1,3,h,w] at the working size.
    pub tensor: Tensor,
    pub stats: Option<Stats>,
}

/// Cache key: the file's content hash, the working size and crop, and
/// whether the statistics were computed (colour modes do not use them).
type Key = (String, u32, bool, bool);

/// Prepared styles, most recent last, at most `capacity` of them.
struct StyleCache {
    entries: VecDeque<(Key, Arc<Style>)>,
    capacity: usize,
    encoded: usize,
    reused: usize,
}

/// How many styles were encoded and how many lookups reused one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheCounts {
    pub encoded: usize,
    pub reused: usize,
}

/// What a run reports as it goes.
pub enum Progress<'a> {
    /// A tile of a large image is done (`done` of `total`, both passes).
    Tile { done: usize, total: usize },
    /// An output was written (`done` of `total` outputs).
    Wrote {
        output: &'a Path,
        done: usize,
        total: usize,
    },
}

/// One picture to stylize: the content, the styles, how they combine, the
/// loaded masks (see [`binary_masks`]) for [`Job::Masked`], the settings.
pub struct Request<'a> {
    pub content: &'a Source,
    /// Names the content in errors.
    pub content_name: &'a str,
    pub styles: &'a [Arc<Style>],
    pub job: &'a Job,
    pub masks: &'a [GrayImage],
    pub settings: &'a Settings,
}

/// What a plan keeps of its current content: the picture, its masks, its styles.
struct Current<'a> {
    content: &'a Path,
    source: Source,
    masks: Vec<GrayImage>,
    styles: Vec<Arc<Style>>,
}

/// What an engine stylizes with.
pub enum Net {
    /// Arbitrary style: encoder, AdaIN, decoder; the styles come with each job.
    Adain(Model),
    /// One style, built into the network ([`Job::Network`]; no style images).
    Johnson(JohnsonNet),
}

/// The network and the style cache, shared by every job (the cache is behind a
/// lock, so one engine serves several threads).
pub struct Engine {
    pub net: Net,
    cache: Mutex<StyleCache>,
}

impl Engine {
    /// An AdaIN engine whose cache keeps up to 64 styles.
    pub fn new(model: Model) -> Self {
        Self::with_cache_capacity(model, 64)
    }

    /// An engine for a per-style Johnson network (its jobs are [`Job::Network`]).
    pub fn johnson(net: JohnsonNet) -> Self {
        Self::with_net(Net::Johnson(net), 1)
    }

    pub fn with_cache_capacity(model: Model, capacity: usize) -> Self {
        Self::with_net(Net::Adain(model), capacity)
    }

    /// The AdaIN model; an error for a per-style network, which has no
    /// encoder or decoder of its own.
    pub fn model(&self) -> Result<&Model> {
        match &self.net {
            Net::Adain(m) => Ok(m),
            Net::Johnson(j) => bail!(
                "{}: a per-style network stylizes without style images (AdaIN only)",
                j.path.display()
            ),
        }
    }

    fn with_net(net: Net, capacity: usize) -> Self {
        Self {
            net,
            cache: Mutex::new(StyleCache {
                entries: VecDeque::new(),
                capacity: capacity.max(1),
                encoded: 0,
                reused: 0,
            }),
        }
    }

    pub fn device(&self) -> &Device {
        match &self.net {
            Net::Adain(m) => &m.device,
            Net::Johnson(j) => &j.device,
        }
    }

    /// Styles encoded so far and cache hits.
    pub fn cache_counts(&self) -> CacheCounts {
        let c = self.cache.lock().expect("cache lock");
        CacheCounts {
            encoded: c.encoded,
            reused: c.reused,
        }
    }

    /// A style from its file, prepared for `settings` (cached by content hash).
    pub fn style_file(&self, path: &Path, settings: &Settings) -> Result<Arc<Style>> {
        let bytes =
            std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
        self.style_bytes(&bytes, &path.display().to_string(), settings)
    }

    /// A style from bytes (an upload); `name` stands for it in errors.
    pub fn style_bytes(&self, bytes: &[u8], name: &str, settings: &Settings) -> Result<Arc<Style>> {
        let with_stats = settings.color == ColorMode::None;
        let key: Key = (
            hex(&Sha256::digest(bytes)),
            settings.style_size,
            settings.crop,
            with_stats,
        );
        {
            let mut c = self.cache.lock().expect("cache lock");
            if let Some(i) = c.entries.iter().position(|(k, _)| *k == key) {
                let e = c.entries.remove(i).expect("found");
                c.entries.push_back(e.clone());
                c.reused += 1;
                return Ok(e.1);
            }
        }
        let src = image_io::open_bytes(bytes, name, settings.limits.max_pixels)?;
        let style = Arc::new(self.style_of(src, name, settings)?);
        let mut c = self.cache.lock().expect("cache lock");
        c.encoded += 1;
        if c.entries.len() >= c.capacity {
            c.entries.pop_front();
        }
        c.entries.push_back((key, style.clone()));
        Ok(style)
    }

    /// A style from a decoded picture, not cached (a style video's frame).
    pub fn style_frame(
        &self,
        img: &RgbImage,
        name: &str,
        settings: &Settings,
    ) -> Result<Arc<Style>> {
        let src = Source {
            image: image::DynamicImage::ImageRgb8(img.clone()),
            alpha: None,
        };
        Ok(Arc::new(self.style_of(src, name, settings)?))
    }

    fn style_of(&self, src: Source, name: &str, settings: &Settings) -> Result<Style> {
        let with_stats = settings.color == ColorMode::None;
        image_io::check_min_side(Path::new(name), src.width(), src.height())?;
        let size = image_io::shorter_side_size(src.width(), src.height(), settings.style_size);
        check_working_size("style", size, &settings.limits)?;
        let pic = src.to_picture();
        drop(src);
        let img = image_io::prepare(&pic, settings.style_size, settings.crop);
        let tensor = image_io::to_tensor(&img, self.device())?;
        let stats = if with_stats {
            tracing::debug!("encoding style {name}");
            Some(
                self.model()?
                    .style_stats(&tensor)
                    .with_context(|| format!("{name}: style"))?,
            )
        } else {
            None
        };
        Ok(Style {
            name: name.to_owned(),
            tensor,
            stats,
        })
    }

    /// Stylizes one picture. Returns the 8-bit output at the content's size
    /// (the square when cropping). Whole-image when it fits
    /// `settings.limits`, else tiled, with the same result.
    pub fn stylize(&self, r: &Request, progress: &mut dyn FnMut(Progress)) -> Result<RgbImage> {
        self.stylize_smoothed(r, None, progress)
    }

    /// [`Self::stylize`] with the content statistics smoothed by `smooth`
    /// (a video frame: see [`StatsEma`]).
    pub fn stylize_smoothed(
        &self,
        r: &Request,
        smooth: Option<&Arc<Mutex<StatsEma>>>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<RgbImage> {
        let Request {
            content,
            content_name,
            styles,
            job,
            masks,
            settings,
        } = *r;
        check_settings(settings, styles.len())?;
        let (cw, ch) = (content.width(), content.height());
        image_io::check_min_side(Path::new(content_name), cw, ch)?;
        let model = match (&self.net, job) {
            (Net::Johnson(net), Job::Network) => {
                return self.stylize_network(net, content, content_name, settings)
            }
            (Net::Johnson(net), _) => bail!(
                "{}: a per-style network takes no style images",
                net.path.display()
            ),
            (Net::Adain(_), Job::Network) => {
                bail!("a style network job needs a per-style network, not the AdaIN model")
            }
            (Net::Adain(m), _) => m,
        };
        let (w, h) = image_io::shorter_side_size(cw, ch, settings.content_size);
        check_working_size("content", (w, h), &settings.limits)?;
        let (ww, wh) = if settings.crop {
            (w.min(h), w.min(h))
        } else {
            (w, h)
        };
        let (sel, control): (Vec<&Arc<Style>>, Control) = match job {
            Job::Single(i) if *i >= styles.len() => {
                bail!("style {i} asked for, but {} given", styles.len())
            }
            Job::Single(i) => (vec![&styles[*i]], Control::Blend(vec![1.0])),
            Job::Blend(wt) => (styles.iter().collect(), Control::Blend(wt.clone())),
            Job::Masked => (
                styles.iter().collect(),
                Control::Masks(mask_tensors(masks, (w, h), settings.crop, self.device())?),
            ),
            Job::Network => unreachable!("handled above"),
        };
        let opts = Options {
            alpha: settings.alpha,
            control,
            color: settings.color,
            smooth: smooth.cloned(),
        };
        let names = || {
            let n: Vec<&str> = sel.iter().map(|s| s.name.as_str()).collect();
            format!("stylizing {content_name} with {}", n.join(", "))
        };
        let stats: Option<Vec<Stats>> = sel.iter().map(|s| s.stats.clone()).collect();
        let tensors: Vec<Tensor> = sel.iter().map(|s| s.tensor.clone()).collect();
        let out = match tile::strategy(ww, wh, &settings.limits) {
            Strategy::Whole => {
                let pic = content.to_picture();
                let t = image_io::to_tensor(
                    &image_io::prepare(&pic, settings.content_size, settings.crop),
                    self.device(),
                )?;
                let result = match (&stats, settings.color) {
                    (Some(stats), ColorMode::None) => model.stylize_with_stats(&t, stats, &opts),
                    _ => model.stylize(&t, &tensors, &opts),
                }
                .with_context(names)?;
                drop(t);
                let mut img = image_io::from_tensor(&result)?;
                if !settings.crop && (img.width(), img.height()) != (cw, ch) {
                    img = image_io::resize(&img, cw, ch);
                }
                image_io::to_rgb8(&img)
            }
            Strategy::Tiled {
                tile,
                keep_features,
            } => {
                tracing::debug!(
                    "{content_name}: {ww}x{wh} in tiles of {tile} (features kept: {keep_features})"
                );
                let work = content.resized(w, h);
                let work = if settings.crop {
                    let s = w.min(h);
                    Source {
                        image: work.image.crop_imm((w - s) / 2, (h - s) / 2, s, s),
                        alpha: None,
                    }
                } else {
                    work
                };
                let styles_in = match (&stats, settings.color) {
                    (Some(s), ColorMode::None) => tile::Styles::Stats(s),
                    _ => tile::Styles::Images(&tensors),
                };
                let mut on_tile = |done, total| progress(Progress::Tile { done, total });
                let img = tile::stylize_tiled(
                    model,
                    &work,
                    styles_in,
                    &opts,
                    tile,
                    keep_features,
                    &mut on_tile,
                )
                .with_context(names)?;
                if !settings.crop && (img.width(), img.height()) != (cw, ch) {
                    image::imageops::resize(&img, cw, ch, image::imageops::FilterType::CatmullRom)
                } else {
                    img
                }
            }
        };
        Ok(out)
    }

    /// A content through a per-style network: the same sizes as AdaIN's
    /// whole-image path (working size from `settings.content_size`, centre
    /// crop, the output resized back to the content's size). Never tiled: the
    /// network's instance norms take statistics of the whole picture at every
    /// layer, so tiles would not give the whole-image result.
    fn stylize_network(
        &self,
        net: &JohnsonNet,
        content: &Source,
        content_name: &str,
        settings: &Settings,
    ) -> Result<RgbImage> {
        let (cw, ch) = (content.width(), content.height());
        let size = image_io::shorter_side_size(cw, ch, settings.content_size);
        check_working_size("content", size, &settings.limits)?;
        let pic = content.to_picture();
        let t = image_io::to_tensor(
            &image_io::prepare(&pic, settings.content_size, settings.crop),
            self.device(),
        )?;
        let result = net
            .stylize(&t)
            .with_context(|| format!("stylizing {content_name} with {}", net.path.display()))?;
        drop(t);
        let mut img = image_io::from_tensor(&result)?;
        if !settings.crop && (img.width(), img.height()) != (cw, ch) {
            img = image_io::resize(&img, cw, ch);
        }
        Ok(image_io::to_rgb8(&img))
    }

    /// Runs a whole plan: each content decoded once, each style prepared once
    /// (the cache), every output written atomically.
    pub fn run(&self, plan: &Plan, progress: &mut dyn FnMut(Progress)) -> Result<()> {
        let s = &plan.settings;
        let total = plan.items.len();
        // per content: the picture, its masks, the styles (looked up in the cache)
        let mut current: Option<Current> = None;
        for (done, item) in plan.items.iter().enumerate() {
            if current.as_ref().map(|c| c.content) != Some(item.content.as_path()) {
                drop(current.take()); // free the previous picture first
                let src = image_io::open(&item.content, s.limits.max_pixels)?;
                image_io::check_min_side(&item.content, src.width(), src.height())?;
                let masks = if s.masks.is_empty() {
                    Vec::new()
                } else {
                    binary_masks(
                        &s.masks,
                        plan.styles.len(),
                        &item.content,
                        (src.width(), src.height()),
                        s.limits.max_pixels,
                    )?
                };
                let styles = plan
                    .styles
                    .iter()
                    .map(|p| self.style_file(p, s))
                    .collect::<Result<Vec<_>>>()?;
                current = Some(Current {
                    content: &item.content,
                    source: src,
                    masks,
                    styles,
                });
            }
            let c = current.as_ref().expect("set above");
            let name = item.content.display().to_string();
            let request = Request {
                content: &c.source,
                content_name: &name,
                styles: &c.styles,
                job: &item.job,
                masks: &c.masks,
                settings: s,
            };
            let out = self.stylize(&request, progress)?;
            let alpha = if s.crop {
                None
            } else {
                c.source.alpha.as_ref()
            };
            image_io::save8(&item.output, &out, alpha, plan.overwrite)?;
            progress(Progress::Wrote {
                output: &item.output,
                done: done + 1,
                total,
            });
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The mask files for a content of `size`, as one binary (0/255) mask per
/// style: one file per style (white = that style), or one label image whose
/// distinct values, in increasing order, pick the styles.
pub fn binary_masks(
    files: &[std::path::PathBuf],
    n_styles: usize,
    content: &Path,
    size: (u32, u32),
    max_pixels: u64,
) -> Result<Vec<GrayImage>> {
    let masks: Vec<(String, GrayImage)> = files
        .iter()
        .map(|f| {
            Ok((
                f.display().to_string(),
                image_io::load_mask_limited(f, max_pixels)?,
            ))
        })
        .collect::<Result<_>>()?;
    split_masks(masks, n_styles, &content.display().to_string(), size)
}

/// A `--content-size`/`--style-size` (the server's `content_size`/
/// `style_size` fields) that would resize a picture past `--max-pixels`:
/// the picture at that size is held whole, so it is refused as a file
/// declaring as many pixels is (a 40x24 upload at style_size=100000 asked
/// for 166666x100000 floats). A type of its own so the server can answer
/// 400 (the client's field) rather than 500.
#[derive(Debug, thiserror::Error)]
#[error(
    "--{what}-size: the {what} would be resized to {w}x{h} ({mp:.0} MP), more than the limit \
     of {max:.0} MP (--max-pixels raises it)",
    mp = *w as f64 * *h as f64 / 1e6,
    max = *max_pixels as f64 / 1e6
)]
pub struct WorkingSizeTooLarge {
    pub what: &'static str,
    pub w: u32,
    pub h: u32,
    pub max_pixels: u64,
}

fn check_working_size(what: &'static str, (w, h): (u32, u32), limits: &Limits) -> Result<()> {
    if w as u64 * h as u64 > limits.max_pixels {
        return Err(WorkingSizeTooLarge {
            what,
            w,
            h,
            max_pixels: limits.max_pixels,
        }
        .into());
    }
    Ok(())
}

/// [`binary_masks`] for masks already decoded, each with its name for errors.
pub fn split_masks(
    masks: Vec<(String, GrayImage)>,
    n_styles: usize,
    content: &str,
    size: (u32, u32),
) -> Result<Vec<GrayImage>> {
    for (f, m) in &masks {
        if m.dimensions() != size {
            bail!(
                "{f}: mask is {}x{} but the content {content} is {}x{}",
                m.width(),
                m.height(),
                size.0,
                size.1
            );
        }
    }
    let threshold = |m: &GrayImage, on: &dyn Fn(u8) -> bool| {
        GrayImage::from_fn(m.width(), m.height(), |x, y| {
            image::Luma([if on(m.get_pixel(x, y)[0]) { 255 } else { 0 }])
        })
    };
    if masks.len() == n_styles {
        Ok(masks
            .iter()
            .map(|(_, m)| threshold(m, &|v| v >= 128))
            .collect())
    } else if masks.len() == 1 {
        let (f, m) = &masks[0];
        let values: BTreeSet<u8> = m.pixels().map(|p| p[0]).collect();
        if values.len() != n_styles {
            bail!(
                "{f}: label mask has {} distinct values but there are {n_styles} styles",
                values.len()
            );
        }
        Ok(values.iter().map(|&v| threshold(m, &|x| x == v)).collect())
    } else {
        bail!(
            "{} masks for {n_styles} styles: give one mask per style, or one label image",
            masks.len()
        );
    }
}

/// Binary masks at the content's size as 0/1 [H,W] tensors at the working
/// size `work` (nearest), centre-cropped like the content when `crop`.
fn mask_tensors(
    masks: &[GrayImage],
    work: (u32, u32),
    crop: bool,
    device: &Device,
) -> Result<Vec<Tensor>> {
    masks
        .iter()
        .map(|m| {
            let m =
                image::imageops::resize(m, work.0, work.1, image::imageops::FilterType::Nearest);
            let m = if crop {
                let s = m.width().min(m.height());
                image::imageops::crop_imm(&m, (m.width() - s) / 2, (m.height() - s) / 2, s, s)
                    .to_image()
            } else {
                m
            };
            let data: Vec<f32> = m
                .pixels()
                .map(|p| if p[0] >= 128 { 1.0 } else { 0.0 })
                .collect();
            Ok(Tensor::from_vec(
                data,
                (m.height() as usize, m.width() as usize),
                device,
            )?)
        })
        .collect()
}
