//! `adain stylize`: flags onto [`adain::engine`] (AdaIN, or a per-style network
//! with `--model`), a progress bar, one line per output.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use adain::engine::{Limits, Plan, Progress, Settings};
use adain::image_io::collect_images;
use adain::ColorMode;

use super::common::ModelArgs;

#[derive(Args)]
pub struct StylizeArgs {
    /// Content image, or a directory of them (searched recursively).
    #[arg(long, short = 'c', required = true)]
    content: PathBuf,
    /// Style image(s) or directories: repeat the flag or give a comma list.
    #[arg(
        long,
        short = 's',
        required_unless_present = "network",
        value_delimiter = ','
    )]
    style: Vec<PathBuf>,
    /// A per-style network (Johnson et al.; `adain convert` imports
    /// fast_neural_style's .pth files) instead of AdaIN: no --style, and none
    /// of AdaIN's own flags (--alpha, --style-weights, --preserve-color,
    /// --mask, --style-size, --tile, --vgg, --decoder).
    #[arg(long = "model", id = "network", value_name = "FILE")]
    network: Option<PathBuf>,
    /// Output file (one result only) or directory.
    #[arg(long, short = 'o', default_value = "output")]
    output: PathBuf,
    /// Output format when writing into a directory.
    #[arg(long, default_value = "jpg", value_parser = ["jpg", "png", "webp", "tiff"])]
    ext: String,
    /// Style strength: 0 = the content as the decoder reconstructs it, 1 = full
    /// style (default 1).
    #[arg(long, short = 'a')]
    alpha: Option<f64>,
    /// Blend all styles into one output with these weights (normalised to sum 1).
    #[arg(long, value_delimiter = ',')]
    style_weights: Option<Vec<f64>>,
    /// Keep the content's colours: `coral` (default) recolours the style image first;
    /// `luminance` stylizes the luminance only.
    #[arg(long, num_args = 0..=1, default_missing_value = "coral", value_enum)]
    preserve_color: Option<ColorMode>,
    /// Spatial control: one mask per style (white = that style), or a single label
    /// image whose distinct grey values (sorted) select among the styles.
    #[arg(long)]
    mask: Vec<PathBuf>,
    /// Resize the content's shorter side to N before stylizing (0 = keep). The output
    /// is resized back to the content's size.
    #[arg(long, default_value_t = 512)]
    content_size: u32,
    /// Resize the style's shorter side to N (0 = keep; default 512).
    #[arg(long)]
    style_size: Option<u32>,
    /// Centre-crop content and style to squares (the output is the cropped square).
    #[arg(long)]
    crop: bool,
    #[command(flatten)]
    model: ModelArgs,
    /// Refuse images (content, style, mask) whose header declares more pixels
    /// than this (default 16384^2 = 268 MP), before decoding them.
    #[arg(long, default_value_t = adain::image_io::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
    /// Working-memory budget of the network (e.g. 512MB, 2GiB): an image that
    /// needs more is stylized in tiles, with the same result.
    #[arg(long, default_value = "1GiB", value_parser = adain::runtime::parse_size)]
    max_memory: u64,
    /// Always stylize in tiles of N px a side (rounded up to a multiple of 8).
    #[arg(long)]
    tile: Option<u32>,
    /// Replace outputs that already exist.
    #[arg(long)]
    overwrite: bool,
    /// Print only warnings and errors.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub fn run(a: StylizeArgs) -> Result<()> {
    if let Some(net) = &a.network {
        let adain_only = [
            ("--style", !a.style.is_empty()),
            ("--alpha", a.alpha.is_some()),
            ("--style-weights", a.style_weights.is_some()),
            ("--preserve-color", a.preserve_color.is_some()),
            ("--mask", !a.mask.is_empty()),
            ("--style-size", a.style_size.is_some()),
            ("--tile", a.tile.is_some()),
        ];
        if let Some((flag, _)) = adain_only.iter().find(|(_, given)| *given) {
            bail!(
                "{flag} cannot be used with --model {}: a per-style network carries its one style (AdaIN flags do not apply)",
                net.display()
            );
        }
    }
    let contents = collect_images(&a.content, "content")?;
    let mut styles = Vec::new();
    for s in &a.style {
        styles.extend(collect_images(s, "style")?);
    }
    let settings = Settings {
        alpha: a.alpha.unwrap_or(1.0),
        style_weights: a.style_weights.clone(),
        color: a.preserve_color.unwrap_or(ColorMode::None),
        masks: a.mask.clone(),
        content_size: a.content_size,
        style_size: a.style_size.unwrap_or(512),
        crop: a.crop,
        limits: Limits {
            max_pixels: a.max_pixels,
            max_memory: a.max_memory,
            tile: a.tile,
        },
    };
    // Every destination is checked before any work.
    let (plan, engine) = match &a.network {
        Some(net) => {
            if !net.is_file() {
                bail!("{}: no such network file (--model)", net.display());
            }
            let plan = Plan::network(contents, net, &a.output, &a.ext, a.overwrite, settings)?;
            (plan, a.model.johnson_engine(net)?)
        }
        None => {
            let plan = Plan::new(contents, styles, &a.output, &a.ext, a.overwrite, settings)?;
            (plan, a.model.engine()?)
        }
    };

    let bar = ProgressBar::new(plan.items.len() as u64);
    if a.quiet || plan.items.len() < 2 {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("valid template"),
    );
    engine.run(&plan, &mut |p| match p {
        Progress::Tile { done, total } => bar.set_message(format!("tile {done}/{total}")),
        Progress::Wrote { output, .. } => {
            if !a.quiet {
                bar.suspend(|| eprintln!("wrote {}", output.display()));
            }
            bar.set_message("");
            bar.inc(1);
        }
    })?;
    bar.finish_and_clear();
    Ok(())
}
