//! A stylization job turned into a validated plan once, before any work (as
//! ripgrep's `HiArgs`): alpha and weights checked, every output named and
//! checked against the inputs and what exists, each output's [`Job`] decided.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::image_io::{self, DEFAULT_MAX_PIXELS};
use crate::ColorMode;

/// The default working-memory budget of the network (`--max-memory`).
pub const DEFAULT_MAX_MEMORY: u64 = 1 << 30;

/// What a stylization asks for, as values (front-ends map their flags or
/// form fields onto it).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Style strength in [0, 1].
    pub alpha: f64,
    /// Blend all styles into one output with these weights (any positive sum).
    pub style_weights: Option<Vec<f64>>,
    pub color: ColorMode,
    /// One mask per style, or one label image.
    pub masks: Vec<PathBuf>,
    /// Shorter side of the content to stylize at (0 = its own size).
    pub content_size: u32,
    /// Shorter side of the styles (0 = their own size).
    pub style_size: u32,
    /// Centre-crop content and styles to squares.
    pub crop: bool,
    pub limits: Limits,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            alpha: 1.0,
            style_weights: None,
            color: ColorMode::None,
            masks: Vec::new(),
            content_size: 512,
            style_size: 512,
            crop: false,
            limits: Limits::default(),
        }
    }
}

/// Bounds on what one image may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Images (content, style, mask) declaring more pixels are refused before decoding.
    pub max_pixels: u64,
    /// Working-memory budget of the network in bytes: an image that needs
    /// more is stylized in tiles.
    pub max_memory: u64,
    /// Force tiles with this many pixels a side (rounded to a multiple of 8).
    pub tile: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
            max_memory: DEFAULT_MAX_MEMORY,
            tile: None,
        }
    }
}

/// What one output is made of.
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    /// Content with style `i` of the plan.
    Single(usize),
    /// Content with every style, weights normalised to sum 1.
    Blend(Vec<f64>),
    /// Content with every style, one per mask region.
    Masked,
    /// Content through a per-style network (no style images).
    Network,
}

/// One output to write.
#[derive(Debug, Clone)]
pub struct Item {
    pub content: PathBuf,
    pub job: Job,
    pub output: PathBuf,
}

/// Every output of a run, checked before any work.
#[derive(Debug, Clone)]
pub struct Plan {
    pub styles: Vec<PathBuf>,
    pub items: Vec<Item>,
    pub settings: Settings,
    pub overwrite: bool,
}

/// Checks alpha and weights; returns the weights normalised to sum 1. The
/// messages name the command-line flags.
pub fn check_settings(s: &Settings, n_styles: usize) -> Result<Option<Vec<f64>>> {
    if !(0.0..=1.0).contains(&s.alpha) || s.alpha.is_nan() {
        bail!("--alpha {}: must be between 0 and 1", s.alpha);
    }
    let weights = match &s.style_weights {
        Some(w) => {
            if w.len() != n_styles {
                bail!(
                    "--style-weights has {} values for {n_styles} styles",
                    w.len()
                );
            }
            if w.iter().any(|x| !x.is_finite() || *x < 0.0) || w.iter().sum::<f64>() <= 0.0 {
                bail!("--style-weights must be non-negative with a positive sum");
            }
            let sum: f64 = w.iter().sum();
            Some(w.iter().map(|x| x / sum).collect::<Vec<_>>())
        }
        None => None,
    };
    if !s.masks.is_empty() && weights.is_some() {
        bail!("--mask and --style-weights cannot be combined: a mask assigns one style per region");
    }
    Ok(weights)
}

impl Plan {
    /// Every content through one per-style network (`network` names the
    /// file, whose stem names the outputs: `{content}_stylized_{stem}.{ext}`
    /// in a directory, or `output` itself for one content). The same checks
    /// as [`Plan::new`]: outputs that are inputs or exist (without
    /// `overwrite`) are refused before any work.
    pub fn network(
        contents: Vec<PathBuf>,
        network: &Path,
        output: &Path,
        ext: &str,
        overwrite: bool,
        settings: Settings,
    ) -> Result<Plan> {
        let to_file = image_io::is_image_path(output) && !output.is_dir();
        if to_file && contents.len() > 1 {
            bail!(
                "{}: {} outputs would be written: give a directory as --output",
                output.display(),
                contents.len()
            );
        }
        let inputs: BTreeSet<PathBuf> = contents
            .iter()
            .chain(std::iter::once(&network.to_path_buf()))
            .filter_map(|p| p.canonicalize().ok())
            .collect();
        let mut items = Vec::new();
        for c in &contents {
            let out = if to_file {
                output.to_owned()
            } else {
                output.join(format!(
                    "{}_stylized_{}.{ext}",
                    image_io::stem(c),
                    image_io::stem(network)
                ))
            };
            crate::atomic::check_destination(&out, &inputs, overwrite)?;
            items.push(Item {
                content: c.clone(),
                job: Job::Network,
                output: out,
            });
        }
        Ok(Plan {
            styles: Vec::new(),
            items,
            settings,
            overwrite,
        })
    }

    /// Contents x styles (one output per pair; a blend or masked run makes
    /// one per content) written to `output`: a file when it names an image and
    /// there is one output, else a directory where outputs are named
    /// `{content}_stylized_{style}.{ext}`, `{content}_blend.{ext}` or
    /// `{content}_masked.{ext}`. An output that is an input, or exists without
    /// `overwrite`, is an error here, before anything is computed.
    pub fn new(
        contents: Vec<PathBuf>,
        styles: Vec<PathBuf>,
        output: &Path,
        ext: &str,
        overwrite: bool,
        settings: Settings,
    ) -> Result<Plan> {
        let n = styles.len();
        let weights = check_settings(&settings, n)?;
        for m in &settings.masks {
            if !m.is_file() {
                bail!("{}: no such mask file", m.display());
            }
        }
        let masked = !settings.masks.is_empty();
        let n_out = contents.len() * if weights.is_some() || masked { 1 } else { n };
        let to_file = image_io::is_image_path(output) && !output.is_dir();
        if to_file && n_out > 1 {
            bail!(
                "{}: {n_out} outputs would be written: give a directory as --output",
                output.display()
            );
        }
        let inputs: BTreeSet<PathBuf> = contents
            .iter()
            .chain(&styles)
            .chain(&settings.masks)
            .filter_map(|p| p.canonicalize().ok())
            .collect();
        let name = |content: &Path, job: &Job| -> PathBuf {
            if to_file {
                return output.to_owned();
            }
            let c = image_io::stem(content);
            output.join(match job {
                Job::Single(i) => format!("{c}_stylized_{}.{ext}", image_io::stem(&styles[*i])),
                Job::Blend(_) => format!("{c}_blend.{ext}"),
                Job::Masked => format!("{c}_masked.{ext}"),
                Job::Network => unreachable!("Plan::network names its own outputs"),
            })
        };
        let mut items = Vec::new();
        for c in &contents {
            let jobs = match &weights {
                Some(w) => vec![Job::Blend(w.clone())],
                None if masked => vec![Job::Masked],
                None => (0..n).map(Job::Single).collect(),
            };
            for job in jobs {
                let out = name(c, &job);
                crate::atomic::check_destination(&out, &inputs, overwrite)?;
                items.push(Item {
                    content: c.clone(),
                    job,
                    output: out,
                });
            }
        }
        Ok(Plan {
            styles,
            items,
            settings,
            overwrite,
        })
    }
}
