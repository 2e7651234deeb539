//! `adain`: stylize photos with paintings (AdaIN), convert PyTorch weights,
//! inspect weight files. Thin layer over the `adain` library.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use clap::{Args, Parser, Subcommand};
use image::{GrayImage, Rgb32FImage};

use adain::conv::Precision;
use adain::image_io::{self, Picture};
use adain::weights::{self, Kind, WeightFile};
use adain::{runtime, ColorMode, Control, Model, Options};

mod cmd;

#[global_allocator]
static ALLOC: adain::alloc::HugePageAlloc = adain::alloc::HugePageAlloc;

#[derive(Parser)]
#[command(
    name = "adain",
    version,
    args_override_self = true,
    about = "Arbitrary artistic style transfer in one forward pass (AdaIN, Huang & Belongie 2017)"
)]
#[command(
    long_about = "Repaints photos in the style of paintings with a VGG-19 encoder, adaptive instance \
normalisation and a trained decoder.\n\nWeights: --vgg and --decoder, else $ADAIN_WEIGHTS/vgg19-relu4_1.safetensors and \
$ADAIN_WEIGHTS/decoder.safetensors when ADAIN_WEIGHTS is set (only there), else weights/ in the project \
the binary was built from (the published decoder ships there)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Stylize content image(s) with style image(s).
    Stylize(StylizeArgs),
    /// Score a stylizer (this decoder, or any tool's outputs) on content x style pairs.
    Eval(cmd::eval::EvalArgs),
    /// Gatys et al.'s method: optimise the output image itself (slow; no decoder needed).
    Optimize(cmd::optimize::OptimizeArgs),
    /// Reconstruct a content's features or a style's Gram matrices from noise, per layer.
    Reconstruct(cmd::optimize::ReconstructArgs),
    /// Parameter-exploration sheet: optimise for every style weight x style layer set.
    Grid(cmd::optimize::GridArgs),
    /// Convert a PyTorch checkpoint (.pth: decoder.pth, vgg_normalised.pth, or a training
    /// checkpoint wrapping a state dict) to safetensors.
    Convert {
        input: PathBuf,
        output: PathBuf,
        /// Replace OUTPUT if it exists.
        #[arg(long)]
        overwrite: bool,
    },
    /// Show what a weight file holds: tensors, shapes and metadata.
    Info { file: PathBuf },
    /// Measure speed and memory: stylization at several sizes (with and without a
    /// cached style) and one training step. Prints median and range of several
    /// runs after a warm-up, convolution GFLOP/s, % of this machine's measured
    /// matrix-multiply peak (f32: a 2048^3 matmul; bf16: the AMX kernel) and peak
    /// resident memory. FLOPs count direct 3x3 convolutions: f32's Winograd
    /// kernels do 4/9 of the multiplies, so their rate is effective and may pass
    /// 100% of the peak. Without a decoder a formula one is used (weights do not
    /// change the timing). scripts/bench-vs-pytorch.sh compares with PyTorch.
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// Image sides to time stylization at.
    #[arg(long, value_delimiter = ',', default_value = "256,512,1024,2048")]
    sizes: Vec<usize>,
    /// Timed runs per workload after one warm-up (at most 3 at 1024, 2 at 2048).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Training step: batch size.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Training step: image side.
    #[arg(long, default_value_t = 256)]
    train_size: usize,
    /// Training step: timed steps after one warm-up.
    #[arg(long, default_value_t = 2)]
    train_steps: usize,
    /// Only these workloads, e.g. `stylize_512,stylize_cached_512,train_b8_256`.
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Convolution arithmetic (bf16 needs AMX, else f32 is used).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    precision: Precision,
    /// Threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// cpu, or cuda (needs a build with `--features cuda`; the "% peak" column is
    /// then against the GPU's f32 matrix multiply, and peak memory is not shown).
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    device: String,
    #[arg(long)]
    vgg: Option<PathBuf>,
    #[arg(long)]
    decoder: Option<PathBuf>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct StylizeArgs {
    /// Content image, or a directory of them (searched recursively).
    #[arg(long, short = 'c', required = true)]
    content: PathBuf,
    /// Style image(s) or directories: repeat the flag or give a comma list.
    #[arg(long, short = 's', required = true, value_delimiter = ',')]
    style: Vec<PathBuf>,
    /// Output file (one result only) or directory.
    #[arg(long, short = 'o', default_value = "output")]
    output: PathBuf,
    /// Output format when writing into a directory.
    #[arg(long, default_value = "jpg", value_parser = ["jpg", "png", "webp"])]
    ext: String,
    /// Style strength: 0 = the content as the decoder reconstructs it, 1 = full style.
    #[arg(long, short = 'a', default_value_t = 1.0)]
    alpha: f64,
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
    /// Resize the style's shorter side to N (0 = keep).
    #[arg(long, default_value_t = 512)]
    style_size: u32,
    /// Centre-crop content and style to squares (the output is the cropped square).
    #[arg(long)]
    crop: bool,
    /// VGG-19 encoder weights.
    #[arg(long)]
    vgg: Option<PathBuf>,
    /// Decoder weights.
    #[arg(long)]
    decoder: Option<PathBuf>,
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    device: String,
    /// Threads for the CPU kernels (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Convolution arithmetic: f32 (matches the PyTorch reference to ~1e-5), or
    /// bf16 products with f32 sums on Intel AMX, several times faster (f32 is
    /// used where the CPU has no AMX).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    precision: Precision,
    /// Replace outputs that already exist.
    #[arg(long)]
    overwrite: bool,
    /// Print only warnings and errors.
    #[arg(long, short = 'q')]
    quiet: bool,
}

fn main() {
    let cli = Cli::parse();
    let quiet = matches!(&cli.cmd, Cmd::Stylize(a) if a.quiet);
    runtime::logging(quiet);
    if let Err(e) = run(cli) {
        // One line: the chain of contexts joined.
        eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Stylize(args) => stylize(args),
        Cmd::Eval(args) => cmd::eval::run(args),
        Cmd::Optimize(args) => cmd::optimize::run_optimize(args),
        Cmd::Reconstruct(args) => cmd::optimize::run_reconstruct(args),
        Cmd::Grid(args) => cmd::optimize::run_grid(args),
        Cmd::Convert {
            input,
            output,
            overwrite,
        } => {
            let kind = weights::convert_pth(&input, &output, overwrite)?;
            let what = match kind {
                Kind::Decoder => "decoder",
                Kind::Encoder => "VGG encoder",
                Kind::Other => "tensors",
            };
            eprintln!("wrote {} ({what})", output.display());
            Ok(())
        }
        Cmd::Bench(args) => bench(args),
        Cmd::Info { file } => {
            let wf = WeightFile::load(&file)?;
            for (k, v) in &wf.metadata {
                println!("{k}: {v}");
            }
            let mut names: Vec<_> = wf.tensors.iter().collect();
            names.sort_by(|a, b| a.0.cmp(b.0));
            for (k, t) in names {
                println!("{k} {:?}", t.dims());
            }
            Ok(())
        }
    }
}

/// All image files under `p` (itself if a file), sorted.
fn collect_images(p: &Path, what: &str) -> Result<Vec<PathBuf>> {
    if p.is_file() {
        return Ok(vec![p.to_owned()]);
    }
    if !p.is_dir() {
        bail!("{}: no such {what} file or directory", p.display());
    }
    let mut out = Vec::new();
    let mut stack = vec![p.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("{}: cannot list", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if image_io::is_image_path(&path) {
                out.push(path);
            }
        }
    }
    out.sort();
    if out.is_empty() {
        bail!(
            "{}: no {what} images (jpg, jpeg, png, webp, bmp) in this directory",
            p.display()
        );
    }
    Ok(out)
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into())
}

/// A style image ready for the network (decoded and resized once per run).
struct StyleImage {
    path: PathBuf,
    tensor: Tensor,
    /// relu4_1 statistics, computed once when colour preservation is off.
    stats: Option<adain::adain::Stats>,
}

fn prepare(pic: &Picture, size: u32, crop: bool) -> Rgb32FImage {
    let (w, h) = image_io::shorter_side_size(pic.width(), pic.height(), size);
    let img = image_io::resize(&pic.rgb, w, h);
    if crop {
        image_io::center_crop(&img)
    } else {
        img
    }
}

/// Masks from the files, as one [H,W] 0/1 tensor per style at `(w, h)`.
fn load_masks(
    files: &[PathBuf],
    n_styles: usize,
    content: &Path,
    size: (u32, u32),
    work: (u32, u32),
    crop: bool,
) -> Result<Vec<Tensor>> {
    let masks: Vec<GrayImage> = files
        .iter()
        .map(|f| image_io::load_mask(f))
        .collect::<Result<_>>()?;
    for (f, m) in files.iter().zip(&masks) {
        if m.dimensions() != size {
            bail!(
                "{}: mask is {}x{} but the content {} is {}x{}",
                f.display(),
                m.width(),
                m.height(),
                content.display(),
                size.0,
                size.1
            );
        }
    }
    // Binary masks, one per style; or one label image split by its distinct values.
    let binary: Vec<GrayImage> = if masks.len() == n_styles {
        masks
            .into_iter()
            .map(|m| {
                GrayImage::from_fn(m.width(), m.height(), |x, y| {
                    image::Luma([if m.get_pixel(x, y)[0] >= 128 { 255 } else { 0 }])
                })
            })
            .collect()
    } else if masks.len() == 1 {
        let m = &masks[0];
        let values: BTreeSet<u8> = m.pixels().map(|p| p[0]).collect();
        if values.len() != n_styles {
            bail!(
                "{}: label mask has {} distinct values but there are {n_styles} styles",
                files[0].display(),
                values.len()
            );
        }
        values
            .iter()
            .map(|&v| {
                GrayImage::from_fn(m.width(), m.height(), |x, y| {
                    image::Luma([if m.get_pixel(x, y)[0] == v { 255 } else { 0 }])
                })
            })
            .collect()
    } else {
        bail!(
            "{} masks for {n_styles} styles: give one mask per style, or one label image",
            files.len()
        );
    };
    binary
        .into_iter()
        .map(|m| {
            let m =
                image::imageops::resize(&m, work.0, work.1, image::imageops::FilterType::Nearest);
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
                &Device::Cpu,
            )?)
        })
        .collect()
}

fn no_decoder_help(tried: &[PathBuf]) -> String {
    format!(
        "no decoder found (looked for {}): train one with `adain-train --content coco --style wikiart` \
         and `adain-train export RUN_DIR --out weights/{f}`, or convert a PyTorch decoder.pth with `adain convert decoder.pth weights/{f}`",
        weights::searched("--decoder", tried),
        f = weights::DECODER_FILE
    )
}

fn stylize(a: StylizeArgs) -> Result<()> {
    if !(0.0..=1.0).contains(&a.alpha) || a.alpha.is_nan() {
        bail!("--alpha {}: must be between 0 and 1", a.alpha);
    }
    runtime::threads(a.threads);
    adain::conv::set_precision(a.precision);
    let device = runtime::device(&a.device)?;

    let contents = collect_images(&a.content, "content")?;
    let mut styles = Vec::new();
    for s in &a.style {
        styles.extend(collect_images(s, "style")?);
    }
    let n = styles.len();
    let weights = match &a.style_weights {
        Some(w) => {
            if w.len() != n {
                bail!("--style-weights has {} values for {n} styles", w.len());
            }
            if w.iter().any(|x| !x.is_finite() || *x < 0.0) || w.iter().sum::<f64>() <= 0.0 {
                bail!("--style-weights must be non-negative with a positive sum");
            }
            let sum: f64 = w.iter().sum();
            Some(w.iter().map(|x| x / sum).collect::<Vec<_>>())
        }
        None => None,
    };
    if !a.mask.is_empty() && weights.is_some() {
        bail!("--mask and --style-weights cannot be combined: a mask assigns one style per region");
    }
    for m in &a.mask {
        if !m.is_file() {
            bail!("{}: no such mask file", m.display());
        }
    }

    // One output per (content, job): a blend or masked run makes one per content.
    let one_job = weights.is_some() || !a.mask.is_empty();
    let n_out = contents.len() * if one_job { 1 } else { n };
    let to_file = image_io::is_image_path(&a.output) && !a.output.is_dir();
    if to_file && n_out > 1 {
        bail!(
            "{}: {n_out} outputs would be written: give a directory as --output",
            a.output.display()
        );
    }
    let inputs: BTreeSet<PathBuf> = contents
        .iter()
        .chain(&styles)
        .chain(&a.mask)
        .filter_map(|p| p.canonicalize().ok())
        .collect();
    let out_path = |content: &Path, style: Option<&Path>| -> PathBuf {
        if to_file {
            return a.output.clone();
        }
        let name = match style {
            Some(s) => format!("{}_stylized_{}.{}", stem(content), stem(s), a.ext),
            None if weights.is_some() => format!("{}_blend.{}", stem(content), a.ext),
            None => format!("{}_masked.{}", stem(content), a.ext),
        };
        a.output.join(name)
    };
    // Check every destination before any work.
    let mut plan = Vec::new();
    for c in &contents {
        let jobs: Vec<Option<usize>> = if one_job {
            vec![None]
        } else {
            (0..n).map(Some).collect()
        };
        for j in jobs {
            let out = out_path(c, j.map(|i| styles[i].as_path()));
            if out
                .canonicalize()
                .map(|p| inputs.contains(&p))
                .unwrap_or(false)
            {
                bail!("{}: is an input; refusing to write over it", out.display());
            }
            if out.exists() && !a.overwrite {
                bail!(
                    "{}: already exists (use --overwrite to replace it)",
                    out.display()
                );
            }
            plan.push((c.clone(), j, out));
        }
    }

    let vgg = weights::locate_encoder(a.vgg.as_deref())?;
    let decoder = weights::locate(a.decoder.as_deref(), weights::DECODER_FILE)
        .map_err(|t| anyhow::anyhow!(no_decoder_help(&t)))?;
    for (p, what) in [(&vgg, "encoder"), (&decoder, "decoder")] {
        if !p.is_file() {
            bail!("{}: no such {what} file", p.display());
        }
    }
    let model = Model::load(&vgg, &decoder, &device)?;
    let color = a.preserve_color.unwrap_or(ColorMode::None);

    // Styles: decoded once; encoded once unless colour preservation makes them per-content.
    let mut style_imgs = Vec::new();
    for s in &styles {
        let pic = image_io::load_checked(s)?;
        let tensor = image_io::to_tensor(&prepare(&pic, a.style_size, a.crop), &device)?;
        let stats = if color == ColorMode::None {
            tracing::debug!("encoding style {}", s.display());
            Some(
                model
                    .style_stats(&tensor)
                    .with_context(|| format!("{}: style", s.display()))?,
            )
        } else {
            None
        };
        style_imgs.push(StyleImage {
            path: s.clone(),
            tensor,
            stats,
        });
    }

    let bar = indicatif::ProgressBar::new(plan.len() as u64);
    if a.quiet || plan.len() < 2 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("valid template"),
    );

    let mut current: Option<(PathBuf, Picture, Tensor, Option<Vec<Tensor>>)> = None;
    for (content, job, out) in plan {
        if current.as_ref().map(|c| &c.0) != Some(&content) {
            let pic = image_io::load_checked(&content)?;
            let work_img = prepare(&pic, a.content_size, a.crop);
            let t = image_io::to_tensor(&work_img, &device)?;
            let masks = if a.mask.is_empty() {
                None
            } else {
                let (w, h) = image_io::shorter_side_size(pic.width(), pic.height(), a.content_size);
                Some(load_masks(
                    &a.mask,
                    n,
                    &content,
                    (pic.width(), pic.height()),
                    (w, h),
                    a.crop,
                )?)
            };
            current = Some((content.clone(), pic, t, masks));
        }
        let (_, pic, ct, masks) = current.as_ref().expect("set above");
        let (sel, control): (Vec<usize>, Control) = match (job, &weights, masks) {
            (Some(i), _, _) => (vec![i], Control::Blend(vec![1.0])),
            (None, Some(w), _) => ((0..n).collect(), Control::Blend(w.clone())),
            (None, None, Some(m)) => ((0..n).collect(), Control::Masks(m.clone())),
            (None, None, None) => unreachable!("one_job implies weights or masks"),
        };
        let opts = Options {
            alpha: a.alpha,
            control,
            color,
        };
        let result = if color == ColorMode::None {
            let stats: Vec<_> = sel
                .iter()
                .map(|&i| style_imgs[i].stats.clone().expect("encoded above"))
                .collect();
            model.stylize_with_stats(ct, &stats, &opts)
        } else {
            let ts: Vec<Tensor> = sel.iter().map(|&i| style_imgs[i].tensor.clone()).collect();
            model.stylize(ct, &ts, &opts)
        }
        .with_context(|| {
            let names: Vec<String> = sel
                .iter()
                .map(|&i| style_imgs[i].path.display().to_string())
                .collect();
            format!("stylizing {} with {}", content.display(), names.join(", "))
        })?;
        let mut img = image_io::from_tensor(&result)?;
        // Back to the content's own size (unless cropped to a square on purpose).
        let alpha = if a.crop {
            None
        } else {
            if (img.width(), img.height()) != (pic.width(), pic.height()) {
                img = image_io::resize(&img, pic.width(), pic.height());
            }
            pic.alpha.as_ref()
        };
        image_io::save(&out, &img, alpha, a.overwrite)?;
        if !a.quiet {
            bar.suspend(|| eprintln!("wrote {}", out.display()));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(())
}

fn bench(a: BenchArgs) -> Result<()> {
    runtime::threads(a.threads);
    adain::conv::set_precision(a.precision);
    let dev = runtime::device(&a.device)?;
    let (_, enc) = weights::load_encoder(a.vgg.as_deref())?;
    let dec = match weights::locate(a.decoder.as_deref(), weights::DECODER_FILE) {
        Ok(p) => WeightFile::load(&p)?,
        Err(_) => WeightFile {
            path: "formula decoder".into(),
            tensors: adain::testing::formula_decoder(0.003, &Device::Cpu)?,
            metadata: Default::default(),
        },
    };
    let model = Model::new(&enc, &dec, &dev)?;
    let encoder = adain::Encoder::new(candle_nn::VarBuilder::from_tensors(
        enc.on(&dev)?,
        candle_core::DType::F32,
        &dev,
    ))?;
    let settings = adain::bench::Settings {
        sizes: a.sizes,
        repeat: a.repeat,
        train_batch: a.batch_size,
        train_size: a.train_size,
        train_steps: a.train_steps,
        only: a.only,
    };
    let threads = candle_core::utils::get_num_threads();
    let r = adain::bench::run(&model, &encoder, &settings, threads, &dev)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!(
        "{} | {} | {} threads | precision {} (AMX {}) | measured peak: f32 {:.0} GFLOP/s{}",
        r.device,
        r.cpu,
        r.threads,
        r.precision,
        if r.amx { "yes" } else { "no" },
        r.peak_f32_gflop_per_s,
        r.peak_bf16_gflop_per_s
            .map(|p| format!(", bf16 (AMX) {p:.0} GFLOP/s"))
            .unwrap_or_default()
    );
    println!(
        "{:<22}{:>10}{:>10}{:>10}{:>6}{:>9}{:>10}{:>8}{:>10}",
        "workload", "median s", "min s", "max s", "runs", "GFLOP", "GFLOP/s", "% peak", "peak MB"
    );
    for row in &r.rows {
        println!(
            "{:<22}{:>10.3}{:>10.3}{:>10.3}{:>6}{:>9.0}{:>10.0}{:>8.0}{:>10}",
            row.name,
            row.median_s,
            row.min_s,
            row.max_s,
            row.runs,
            row.gflop,
            row.gflop_per_s,
            row.pct_of_peak,
            row.peak_rss_mb
                .map(|m| format!("{m:.0}"))
                .unwrap_or("-".into())
        );
    }
    Ok(())
}
