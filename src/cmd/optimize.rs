//! `adain optimize`, `adain reconstruct` and `adain grid`: Gatys et al.'s
//! method from the command line (the method itself is `adain::optimize`, the
//! L-BFGS `adain::optim::Lbfgs`, the labelled sheets `super::sheet`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use clap::{Args, ValueEnum};
use image::RgbImage;

use adain::encoder::FEATURE_NAMES;
use adain::optim::{LbfgsConfig, LineSearch};
use adain::optimize::{
    self, layer_index, layers_label, parse_layers, Ending, Init, LossConfig, Method, Objective,
    Outcome, StyleLoss, Terms, DEFAULT_STYLE_WEIGHT,
};
use adain::{color, image_io, runtime, weights, ColorMode, Encoder};

use super::sheet::{self, Sheet};
use adain::image_io::{collect_images, prepare, stem};

const DEFAULT_ADAM_LR: f64 = 0.02;

const MANUAL: &str = "\
Gatys, Ecker & Bethge (2016): no decoder. The output image itself is optimised so that its VGG-19 \
features match the content's and its Gram matrices match the style's; slow (one encoder forward \
and backward per evaluation) but needs nothing trained, and is the quality reference the \
feed-forward decoder is judged against.

Objective (every term is a mean, so image sizes and layers are comparable):
  content = MSE(F_l(x), F_l(content)) at --content-layer (Gatys: 1/2 sum of squares);
  style   = sum over --style-layers of w_l * MSE(G_l(x), G_l(style)), with the Gram matrix
            G = F F^T / (C*H*W) (the PyTorch tutorial's normalisation; Gatys's
            E_l = 1/(4 N^2 M^2) sum (G - A)^2 on unnormalised Gram matrices is C^2/4 times this,
            so here deep layers weigh relatively less);
            --style-loss musigma uses AdaIN's statistics instead: MSE(mean) + MSE(std) per layer;
  tv      = mean of squared differences of neighbouring pixels, down and across (smooth, as
            L-BFGS needs; Gatys had none);
  total   = content-weight * content + style-weight * style + tv-weight * tv.
Several styles blend their targets with --style-weights (normalised to sum 1).

Layers: the encoder is VGG-19 up to relu4_1, so the layers are relu1_1, relu2_1, relu3_1 and \
relu4_1. Gatys's content layer conv4_2 and style layer relu5_1 are not available; the content \
layer defaults to relu4_1 (the nearest) and the style layers to all four. The encoder takes RGB \
in [0,1] and has Caffe's BGR/mean-subtraction folded into its first conv, so features are on \
Caffe's 0-255 scale, about 58 times torchvision's: content losses are ~58^2 and Gram losses \
~58^4 times larger, so the tutorial's style weight 1e6 corresponds to roughly 3e2 here. The \
default 10 was chosen by eye on the shared eval pairs (try 1 to 1e3).

Pixels stay in [0,1]: the image is clamped in place before every evaluation (as the PyTorch \
tutorial's closure does) and once more before it is saved.

Optimiser: L-BFGS by default (as Gatys), a port of torch.optim.LBFGS: all --iters iterations in \
one step (max_iter = ITERS, at most ITERS*5/4 evaluations, tolerance_grad 1e-7, \
tolerance_change 1e-9, history --history, lr --lr, strong Wolfe line search or a fixed step). \
It stops early when converged. Memory: 2 * HISTORY copies of the image (100: about 600 MB at \
512x512). --optimizer adam: Adam with a constant --lr (default 0.02 on the 0-1 pixel scale).

Time: each evaluation is an encoder forward and backward of the image: on this project's \
2-core CPU about 1-1.5 s at 256x256 and four times that at 512x512, so the default 500 \
iterations (up to 625 evaluations) take 10-15 minutes at 256 and about an hour at 512; hence \
--size defaults to 256 here (stylize's 512 would be a slow default). A progress bar shows iteration, losses and iterations/s; --json prints \
one machine-readable line per output (timings exclude loading and the two extra evaluations of \
the reported initial and final losses). Ctrl-C writes the current image and exits 0.";

/// Set by Ctrl-C: the running optimisation stops after its iteration.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn install_ctrlc() -> Result<()> {
    ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130); // second Ctrl-C: leave now
        }
        eprintln!("\ninterrupted: writing the current image (Ctrl-C again to quit at once)");
    })
    .context("cannot install the Ctrl-C handler")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerKind {
    /// L-BFGS (torch.optim.LBFGS semantics), as Gatys et al.
    Lbfgs,
    /// Adam with a constant learning rate.
    Adam,
}

/// Settings every optimisation command shares.
#[derive(Args, Debug, Clone)]
pub struct SolverArgs {
    /// Iterations (L-BFGS: max_iter of one step; it may stop earlier when converged).
    #[arg(long, default_value_t = 500)]
    iters: usize,
    #[arg(long, value_enum, default_value_t = OptimizerKind::Lbfgs)]
    optimizer: OptimizerKind,
    /// Learning rate: L-BFGS's step scale (default 1), Adam's step (default 0.02).
    #[arg(long)]
    lr: Option<f64>,
    /// L-BFGS line search.
    #[arg(long, value_enum, default_value_t = LineSearch::StrongWolfe)]
    line_search: LineSearch,
    /// L-BFGS history size (correction pairs kept).
    #[arg(long, default_value_t = 100)]
    history: usize,
    /// Total-variation weight (0 = none).
    #[arg(long, default_value_t = 0.0)]
    tv_weight: f64,
    /// Style statistics: Gram matrices (Gatys) or AdaIN's per-channel mean and std.
    #[arg(long, value_enum, default_value_t = StyleLoss::Gram)]
    style_loss: StyleLoss,
    /// Resize the content's shorter side to N (0 = keep); the output has this size.
    #[arg(long, default_value_t = 256)]
    size: u32,
    /// Resize the style's shorter side to N (0 = keep; default: --size).
    #[arg(long)]
    style_size: Option<u32>,
    /// Seed of the noise of --init noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// VGG-19 encoder weights.
    #[arg(long)]
    vgg: Option<PathBuf>,
    /// Threads for the CPU kernels (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Convolution arithmetic: f32 (matches PyTorch), or bf16 products with f32
    /// sums on Intel AMX, several times faster (f32 where the CPU has no AMX).
    #[arg(long, value_enum, default_value_t = adain::conv::Precision::F32)]
    precision: adain::conv::Precision,
    /// Replace outputs that already exist.
    #[arg(long)]
    overwrite: bool,
    /// Print one JSON line per output: iterations, evaluations, seconds, iterations/s,
    /// initial and final losses.
    #[arg(long)]
    json: bool,
    /// No progress bar or messages (errors still print).
    #[arg(long, short = 'q')]
    quiet: bool,
}

impl SolverArgs {
    fn method(&self) -> Result<Method> {
        if let Some(lr) = self.lr {
            if !(lr > 0.0 && lr.is_finite()) {
                bail!("--lr {lr}: must be a positive number");
            }
        }
        if self.iters == 0 {
            bail!("--iters 0: need at least one iteration");
        }
        if self.history == 0 {
            bail!("--history 0: need at least one correction pair");
        }
        Ok(match self.optimizer {
            OptimizerKind::Lbfgs => Method::Lbfgs(LbfgsConfig {
                lr: self.lr.unwrap_or(1.0),
                history_size: self.history,
                line_search: self.line_search,
                ..Default::default()
            }),
            OptimizerKind::Adam => Method::Adam {
                lr: self.lr.unwrap_or(DEFAULT_ADAM_LR),
            },
        })
    }

    fn check_tv(&self) -> Result<()> {
        if !(self.tv_weight.is_finite() && self.tv_weight >= 0.0) {
            bail!(
                "--tv-weight {}: must be a non-negative number",
                self.tv_weight
            );
        }
        Ok(())
    }

    fn style_size(&self) -> u32 {
        self.style_size.unwrap_or(self.size)
    }

    /// Threads, Ctrl-C, and the encoder.
    fn start(&self) -> Result<Encoder> {
        runtime::threads(self.threads);
        adain::conv::set_precision(self.precision);
        let (_, wf) = weights::load_encoder(self.vgg.as_deref())?;
        let dev = Device::Cpu;
        let enc = Encoder::new(VarBuilder::from_tensors(wf.on(&dev)?, DType::F32, &dev))?;
        install_ctrlc()?;
        Ok(enc)
    }
}

#[derive(Args, Debug)]
#[command(after_long_help = MANUAL)]
pub struct OptimizeArgs {
    /// Content image, or a directory of them (searched recursively).
    #[arg(long, short = 'c', required = true)]
    content: PathBuf,
    /// Style image(s) or directories: repeat the flag or give a comma list.
    #[arg(long, short = 's', required = true, value_delimiter = ',')]
    style: Vec<PathBuf>,
    /// Blend all styles into one output with these weights (normalised to sum 1).
    #[arg(long, value_delimiter = ',')]
    style_weights: Option<Vec<f64>>,
    /// Output file (one result only) or directory: `{content}_stylized_{style}.EXT` there
    /// (the names `adain eval --outputs` reads), `{content}_blend.EXT` for a blend.
    #[arg(long, short = 'o', default_value = "output")]
    output: PathBuf,
    /// Output format when writing into a directory.
    #[arg(long, default_value = "jpg", value_parser = ["jpg", "png", "webp"])]
    ext: String,
    /// Content weight.
    #[arg(long, default_value_t = 1.0)]
    content_weight: f64,
    /// Style weight (see the Gram normalisation below).
    #[arg(long, default_value_t = DEFAULT_STYLE_WEIGHT)]
    style_weight: f64,
    /// Content layer: relu1_1, relu2_1, relu3_1 or relu4_1 (conv4_2 is not available).
    #[arg(long, default_value = "relu4_1")]
    content_layer: String,
    /// Style layers with optional weights: `relu1_1,relu2_1:0.5,...` (weight 1 if none).
    #[arg(long, default_value = "relu1_1,relu2_1,relu3_1,relu4_1")]
    style_layers: String,
    /// Starting image.
    #[arg(long, value_enum, default_value_t = Init::Content)]
    init: Init,
    /// Also write the image every K iterations, as DIR/iter_NNNNN/NAME beside the output
    /// DIR/NAME (so `adain eval --outputs DIR/iter_NNNNN` scores each stage).
    #[arg(long, value_name = "K", default_value_t = 0)]
    save_every: usize,
    /// Keep the content's colours: `coral` (default) recolours the style image first;
    /// `luminance` optimises the luminance only and keeps the content's chroma.
    #[arg(long, num_args = 0..=1, default_missing_value = "coral", value_enum)]
    preserve_color: Option<ColorMode>,
    #[command(flatten)]
    solver: SolverArgs,
}

/// `layer_index` with the flag named in the error.
fn flag_layer(flag: &str, name: &str) -> Result<usize> {
    layer_index(name).with_context(|| format!("--{flag}"))
}

fn flag_layers(flag: &str, spec: &str) -> Result<Vec<(usize, f64)>> {
    parse_layers(spec).with_context(|| format!("--{flag}"))
}

fn check_weight(flag: &str, w: f64) -> Result<()> {
    if !(w.is_finite() && w >= 0.0) {
        bail!("--{flag} {w}: must be a non-negative number");
    }
    Ok(())
}

/// A destination that may be written: not an input, not existing unless --overwrite.
fn check_dest(out: &Path, inputs: &BTreeSet<PathBuf>, overwrite: bool) -> Result<()> {
    if !image_io::is_image_path(out) {
        bail!(
            "{}: unknown image extension (use .jpg, .png or .webp)",
            out.display()
        );
    }
    image_io::format_for_ext(out.extension().and_then(|e| e.to_str()).unwrap_or(""))
        .with_context(|| format!("{}", out.display()))?;
    adain::atomic::check_destination(out, inputs, overwrite)
}

fn canonical_inputs<'a>(paths: impl IntoIterator<Item = &'a PathBuf>) -> BTreeSet<PathBuf> {
    paths
        .into_iter()
        .filter_map(|p| p.canonicalize().ok())
        .collect()
}

/// DIR/iter_NNNNN/NAME for the output DIR/NAME.
fn stage_path(out: &Path, iter: usize) -> PathBuf {
    let dir = out.parent().unwrap_or(Path::new(""));
    dir.join(format!("iter_{iter:05}"))
        .join(out.file_name().unwrap_or_default())
}

fn load_image(path: &Path, size: u32) -> Result<Tensor> {
    let pic = image_io::load_checked(path)?;
    let img = prepare(&pic, size, false);
    image_io::to_tensor(&img, &Device::Cpu)
}

fn save_tensor(path: &Path, t: &Tensor, overwrite: bool) -> Result<()> {
    let img = image_io::from_tensor(&t.clamp(0f32, 1f32)?)?;
    image_io::save(path, &img, None, overwrite)
}

fn fmt_terms(t: &Terms) -> String {
    format!(
        "loss {:.4e} (content {:.3e}, style {:.3e}, tv {:.3e})",
        t.total, t.content, t.style, t.tv
    )
}

/// What [`solve`] returns.
struct Solved {
    outcome: Outcome,
    seconds: f64,
    initial: Terms,
    last: Terms,
}

/// Runs one optimisation with a progress bar; `on_stage(iter, image)` runs
/// every `save_every` iterations. Stops early on Ctrl-C (`ending` Stopped).
fn solve(
    s: &SolverArgs,
    obj: &Objective,
    init: &Tensor,
    prefix: &str,
    save_every: usize,
    mut on_stage: impl FnMut(usize, &Tensor) -> Result<()>,
) -> Result<Solved> {
    let method = s.method()?;
    let initial = obj.value_and_grad(init)?.0;
    let bar = indicatif::ProgressBar::new(s.iters as u64);
    if s.quiet {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix}{bar:25} {pos}/{len} [{elapsed_precise}<{eta_precise}, {per_sec}] {msg}",
        )
        .expect("valid template"),
    );
    bar.set_prefix(prefix.to_string());
    bar.set_message(fmt_terms(&initial));
    let start = Instant::now();
    let outcome = optimize::run(obj, init, s.iters, &method, |p| {
        if let Some(t) = &p.terms {
            bar.set_message(fmt_terms(t));
        }
        bar.set_position(p.iter as u64);
        if save_every > 0 && p.iter % save_every == 0 && p.iter < s.iters {
            on_stage(p.iter, &p.image()?)?;
        }
        Ok(!INTERRUPTED.load(Ordering::SeqCst))
    })?;
    let seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let last = obj.value_and_grad(&outcome.image)?.0;
    Ok(Solved {
        outcome,
        seconds,
        initial,
        last,
    })
}

fn report(s: &SolverArgs, what: &str, out: &Path, size: (usize, usize), r: &Solved) {
    let o = &r.outcome;
    let ending = match o.ending {
        Ending::Done => "done",
        Ending::Converged => "converged",
        Ending::Stopped => "interrupted",
    };
    if s.json {
        let v = serde_json::json!({
            "output": out.display().to_string(),
            "what": what,
            "width": size.1,
            "height": size.0,
            "optimizer": format!("{:?}", s.optimizer).to_lowercase(),
            "iterations": o.iterations,
            "evals": o.evals,
            "seconds": r.seconds,
            "iters_per_sec": o.iterations as f64 / r.seconds.max(1e-9),
            "secs_per_iter": r.seconds / (o.iterations.max(1) as f64),
            "secs_per_eval": r.seconds / (o.evals.max(1) as f64),
            "threads": candle_core::utils::get_num_threads(),
            "ending": ending,
            "initial": r.initial,
            "final": r.last,
        });
        println!("{v}");
    }
    if !s.quiet {
        eprintln!(
            "wrote {} ({} iterations, {} evaluations, {:.1} s, {ending}; {})",
            out.display(),
            o.iterations,
            o.evals,
            r.seconds,
            fmt_terms(&r.last)
        );
    }
}

// ------------------------------------------------------------------ optimize

pub fn run_optimize(a: OptimizeArgs) -> Result<()> {
    let s = &a.solver;
    s.method()?;
    s.check_tv()?;
    check_weight("content-weight", a.content_weight)?;
    check_weight("style-weight", a.style_weight)?;
    let content_layer = flag_layer("content-layer", &a.content_layer)?;
    let style_layers = flag_layers("style-layers", &a.style_layers)?;

    let contents = collect_images(&a.content, "content")?;
    let mut styles = Vec::new();
    for p in &a.style {
        styles.extend(collect_images(p, "style")?);
    }
    let n = styles.len();
    let blend = match &a.style_weights {
        Some(w) => {
            if w.len() != n {
                bail!("--style-weights has {} values for {n} styles", w.len());
            }
            if w.iter().any(|x| !x.is_finite() || *x < 0.0) || w.iter().sum::<f64>() <= 0.0 {
                bail!("--style-weights must be non-negative with a positive sum");
            }
            Some(w.clone())
        }
        None => None,
    };
    let jobs: Vec<Option<usize>> = match blend {
        Some(_) => vec![None],
        None => (0..n).map(Some).collect(),
    };
    let n_out = contents.len() * jobs.len();
    let to_file = image_io::is_image_path(&a.output) && !a.output.is_dir();
    if to_file && n_out > 1 {
        bail!(
            "{}: {n_out} outputs would be written: give a directory as --output",
            a.output.display()
        );
    }
    let inputs = canonical_inputs(contents.iter().chain(&styles));
    let mut plan = Vec::new();
    for c in &contents {
        for &j in &jobs {
            let out = if to_file {
                a.output.clone()
            } else {
                let name = match j {
                    Some(i) => format!("{}_stylized_{}.{}", stem(c), stem(&styles[i]), a.ext),
                    None => format!("{}_blend.{}", stem(c), a.ext),
                };
                a.output.join(name)
            };
            check_dest(&out, &inputs, s.overwrite)?;
            for k in (1..s.iters).filter(|k| a.save_every > 0 && k % a.save_every == 0) {
                check_dest(&stage_path(&out, k), &inputs, s.overwrite)?;
            }
            plan.push((c.clone(), j, out));
        }
    }

    let encoder = s.start()?;
    let color = a.preserve_color.unwrap_or(ColorMode::None);
    let style_imgs = styles
        .iter()
        .map(|p| load_image(p, s.style_size()))
        .collect::<Result<Vec<_>>>()?;
    let cfg = LossConfig {
        content_layer,
        content_weight: a.content_weight,
        style_layers,
        style_weight: a.style_weight,
        tv_weight: s.tv_weight,
        style_loss: s.style_loss,
    };
    let total = plan.len();
    for (k, (content, job, out)) in plan.into_iter().enumerate() {
        let ct = load_image(&content, s.size)?;
        let (_, _, h, w) = ct.dims4()?;
        let sel: Vec<usize> = match job {
            Some(i) => vec![i],
            None => (0..n).collect(),
        };
        let weight_of = |i: usize| blend.as_ref().map(|b| b[i]).unwrap_or(1.0);
        // colour preservation: what the objective sees
        let (target, st): (Tensor, Vec<(Tensor, f64)>) = match color {
            ColorMode::None => (
                ct.clone(),
                sel.iter()
                    .map(|&i| (style_imgs[i].clone(), weight_of(i)))
                    .collect(),
            ),
            ColorMode::Coral => (
                ct.clone(),
                sel.iter()
                    .map(|&i| Ok((color::coral(&style_imgs[i], &ct)?, weight_of(i))))
                    .collect::<Result<_>>()?,
            ),
            ColorMode::Luminance => {
                let yc = color::luminance(&ct)?;
                let st = sel
                    .iter()
                    .map(|&i| {
                        let ys = color::match_mean_std(&color::luminance(&style_imgs[i])?, &yc)?;
                        Ok((ys.repeat((1, 3, 1, 1))?, weight_of(i)))
                    })
                    .collect::<Result<_>>()?;
                (yc.repeat((1, 3, 1, 1))?, st)
            }
        };
        let names: Vec<String> = sel
            .iter()
            .map(|&i| styles[i].display().to_string())
            .collect();
        let what = format!("{} with {}", content.display(), names.join(", "));
        let obj = Objective::new(&encoder, cfg.clone(), Some(&target), &st)
            .with_context(|| what.clone())?;
        let init = optimize::init_image(
            a.init,
            Some(&target),
            Some(&st[0].0),
            (h, w),
            s.seed,
            &Device::Cpu,
        )?;
        let finish = |img: &Tensor| -> Result<Tensor> {
            Ok(match color {
                ColorMode::Luminance => color::transfer_luminance(&ct, img)?.clamp(0f32, 1f32)?,
                _ => img.clone(),
            })
        };
        let prefix = if total > 1 {
            format!("{}/{total} ", k + 1)
        } else {
            String::new()
        };
        let solved = solve(s, &obj, &init, &prefix, a.save_every, |it, img| {
            save_tensor(&stage_path(&out, it), &finish(img)?, s.overwrite)
        })
        .with_context(|| what.clone())?;
        save_tensor(&out, &finish(&solved.outcome.image)?, s.overwrite)?;
        report(s, &what, &out, (h, w), &solved);
        if solved.outcome.ending == Ending::Stopped {
            break;
        }
    }
    Ok(())
}

// --------------------------------------------------------------- reconstruct

#[derive(Args, Debug)]
#[command(after_long_help = "\
Reconstruction from noise (Gatys et al.'s Figure 1; seed 001's Figures 3 and 4): the \
image is optimised to match only the content's features at one layer (--content, --layer), or \
only the style's Gram matrices at a set of layers (--style, --layers). Low layers reproduce the \
content almost exactly and deep ones only its structure; style reconstructions from more layers \
show the style's texture at larger scales.

--sweep makes one labelled sheet: for a content, one image per layer of --layers (default all \
four); for a style, one image per growing set relu1_1; relu1_1,relu2_1; ... up to --layers (as \
Gatys's Figure 1). The optimisation settings are those of `adain optimize` (see its --help for \
the losses, the Gram normalisation and the available layers); starting from --init noise.")]
#[command(group(clap::ArgGroup::new("source").required(true).args(["content", "style"])))]
pub struct ReconstructArgs {
    /// Reconstruct this content image's features.
    #[arg(long, short = 'c')]
    content: Option<PathBuf>,
    /// Reconstruct this style image's Gram matrices (or mean/std with --style-loss musigma).
    #[arg(long, short = 's', conflicts_with = "content")]
    style: Option<PathBuf>,
    /// Content layer (with --content, no --sweep).
    #[arg(long, conflicts_with_all = ["style", "sweep"])]
    layer: Option<String>,
    /// Layers: with --style, the style layers (weights allowed: `relu1_1,relu2_1:0.5`);
    /// with --sweep, the layers swept (default all four).
    #[arg(long)]
    layers: Option<String>,
    /// One image per layer (content) or per growing layer set (style), in a labelled sheet.
    #[arg(long)]
    sweep: bool,
    /// Output image (the sheet with --sweep).
    #[arg(long, short = 'o', required = true)]
    output: PathBuf,
    /// Weight of the matched term. Only the loss's scale changes, which matters to
    /// L-BFGS's tolerances and to Adam, not to L-BFGS's steps.
    #[arg(long)]
    weight: Option<f64>,
    /// Starting image.
    #[arg(long, value_enum, default_value_t = Init::Noise)]
    init: Init,
    #[command(flatten)]
    solver: SolverArgs,
}

pub fn run_reconstruct(a: ReconstructArgs) -> Result<()> {
    let s = &a.solver;
    s.method()?;
    s.check_tv()?;
    if a.init == Init::Style && a.style.is_none() || a.init == Init::Content && a.content.is_none()
    {
        bail!("--init {:?}: there is no such image to start from", a.init);
    }
    let (input, is_content) = match (&a.content, &a.style) {
        (Some(c), None) => (c.clone(), true),
        (None, Some(st)) => (st.clone(), false),
        _ => bail!("give exactly one of --content and --style"),
    };
    if !input.is_file() {
        bail!("{}: no such image file", input.display());
    }
    if is_content && a.layers.is_some() && !a.sweep {
        bail!("--layers: with --content, give one --layer (or --sweep over --layers)");
    }
    let weight = a.weight.unwrap_or(1.0);
    check_weight("weight", weight)?;
    let swept = match &a.layers {
        Some(l) => flag_layers("layers", l)?,
        None => (0..4).map(|l| (l, 1.0)).collect(),
    };
    // (label, content layer, style layers) of every image
    type Run = (String, usize, Vec<(usize, f64)>);
    let runs: Vec<Run> = if is_content {
        if a.sweep {
            swept
                .iter()
                .map(|&(l, _)| (FEATURE_NAMES[l].to_string(), l, vec![]))
                .collect()
        } else {
            let l = flag_layer("layer", a.layer.as_deref().unwrap_or("relu4_1"))?;
            vec![(FEATURE_NAMES[l].to_string(), l, vec![])]
        }
    } else if a.sweep {
        (1..=swept.len())
            .map(|k| (layers_label(&swept[..k]), 0, swept[..k].to_vec()))
            .collect()
    } else {
        vec![(layers_label(&swept), 0, swept.clone())]
    };
    check_dest(&a.output, &canonical_inputs([&input]), s.overwrite)?;

    let encoder = s.start()?;
    let img = load_image(&input, if is_content { s.size } else { s.style_size() })?;
    let (_, _, h, w) = img.dims4()?;
    let init = optimize::init_image(a.init, Some(&img), Some(&img), (h, w), s.seed, &Device::Cpu)?;
    let mut cells = Vec::new();
    let mut labels = Vec::new();
    let n = runs.len();
    let mut last_solved = None;
    for (k, (label, content_layer, style_layers)) in runs.into_iter().enumerate() {
        let cfg = LossConfig {
            content_layer,
            content_weight: if is_content { weight } else { 0.0 },
            style_layers,
            style_weight: if is_content { 0.0 } else { weight },
            tv_weight: s.tv_weight,
            style_loss: s.style_loss,
        };
        let obj = if is_content {
            Objective::new(&encoder, cfg, Some(&img), &[])?
        } else {
            Objective::new(&encoder, cfg, None, &[(img.clone(), 1.0)])?
        };
        let prefix = if n > 1 {
            format!("{label} ({}/{n}) ", k + 1)
        } else {
            format!("{label} ")
        };
        let solved = solve(s, &obj, &init, &prefix, 0, |_, _| Ok(()))
            .with_context(|| format!("{}: reconstructing at {label}", input.display()))?;
        if !a.sweep {
            save_tensor(&a.output, &solved.outcome.image, s.overwrite)?;
            report(s, &label, &a.output, (h, w), &solved);
            return Ok(());
        }
        cells.push(Some(to_rgb8(&solved.outcome.image)?));
        labels.push(label);
        let stopped = solved.outcome.ending == Ending::Stopped;
        last_solved = Some(solved);
        if stopped {
            break;
        }
    }
    // The sheet: the input first, then the reconstructions.
    let what = if is_content { "content" } else { "style" };
    let mut row = vec![Some(to_rgb8(&img)?)];
    row.extend(cells);
    let mut cols = vec![format!("{what} image")];
    cols.extend(labels.iter().map(|l| l.replace(',', ", ")));
    while row.len() < n + 1 {
        row.push(None);
        cols.push("(interrupted)".into());
    }
    let title = format!(
        "{} reconstructions of {} from {}, {} {} iterations",
        if is_content { "Content" } else { "Style" },
        input.file_name().unwrap_or_default().to_string_lossy(),
        format!("{:?}", a.init).to_lowercase(),
        s.iters,
        format!("{:?}", s.optimizer).to_uppercase()
    );
    let sheet = Sheet {
        title,
        col_labels: cols,
        row_labels: vec![],
        cells: vec![row],
    };
    sheet::save(&a.output, &sheet, s.overwrite)?;
    if let Some(solved) = last_solved {
        report(s, "sweep", &a.output, (h, w), &solved);
    }
    Ok(())
}

fn to_rgb8(t: &Tensor) -> Result<RgbImage> {
    let img = image_io::from_tensor(&t.clamp(0f32, 1f32)?)?;
    Ok(RgbImage::from_fn(img.width(), img.height(), |x, y| {
        image::Rgb(img.get_pixel(x, y).0.map(|v| (v * 255.0).round() as u8))
    }))
}

// ---------------------------------------------------------------------- grid

#[derive(Args, Debug)]
#[command(after_long_help = "\
The parameter exploration of Gatys et al.'s Figure 3 (seed 001's Figure 7): one optimisation per \
(style layer set, style weight), laid out as a labelled sheet: columns = --style-weights, rows = \
--style-layer-sets. Every cell starts from the same image (--init, --seed) with the same \
settings; see `adain optimize --help` for the losses, the Gram normalisation and the layers. \
Ctrl-C writes the sheet with the cells done so far.")]
pub struct GridArgs {
    /// Content image.
    #[arg(long, short = 'c')]
    content: PathBuf,
    /// Style image.
    #[arg(long, short = 's')]
    style: PathBuf,
    /// Style weights, one column each.
    #[arg(
        long,
        value_delimiter = ',',
        required = true,
        allow_negative_numbers = true
    )]
    style_weights: Vec<f64>,
    /// Style layer sets, one row each, separated by `;`:
    /// `relu1_1;relu1_1,relu2_1;relu1_1,relu2_1,relu3_1`.
    #[arg(
        long,
        default_value = "relu1_1;relu1_1,relu2_1;relu1_1,relu2_1,relu3_1;relu1_1,relu2_1,relu3_1,relu4_1"
    )]
    style_layer_sets: String,
    /// Output sheet (JPEG, PNG or WebP).
    #[arg(long, short = 'o', required = true)]
    output: PathBuf,
    #[arg(long, default_value_t = 1.0)]
    content_weight: f64,
    #[arg(long, default_value = "relu4_1")]
    content_layer: String,
    #[arg(long, value_enum, default_value_t = Init::Content)]
    init: Init,
    #[command(flatten)]
    solver: SolverArgs,
}

pub fn run_grid(a: GridArgs) -> Result<()> {
    let s = &a.solver;
    s.method()?;
    s.check_tv()?;
    check_weight("content-weight", a.content_weight)?;
    for &w in &a.style_weights {
        check_weight("style-weights", w)?;
    }
    let content_layer = flag_layer("content-layer", &a.content_layer)?;
    let sets = a
        .style_layer_sets
        .split(';')
        .map(|set| flag_layers("style-layer-sets", set))
        .collect::<Result<Vec<_>>>()?;
    for (p, what) in [(&a.content, "content"), (&a.style, "style")] {
        if !p.is_file() {
            bail!("{}: no such {what} image file", p.display());
        }
    }
    check_dest(
        &a.output,
        &canonical_inputs([&a.content, &a.style]),
        s.overwrite,
    )?;

    let encoder = s.start()?;
    let ct = load_image(&a.content, s.size)?;
    let st = load_image(&a.style, s.style_size())?;
    let (_, _, h, w) = ct.dims4()?;
    let init = optimize::init_image(a.init, Some(&ct), Some(&st), (h, w), s.seed, &Device::Cpu)?;
    let (nr, nc) = (sets.len(), a.style_weights.len());
    let mut cells: Vec<Vec<Option<RgbImage>>> = vec![vec![None; nc]; nr];
    let mut last_solved = None;
    'rows: for (r, set) in sets.iter().enumerate() {
        for (c, &sw) in a.style_weights.iter().enumerate() {
            let cfg = LossConfig {
                content_layer,
                content_weight: a.content_weight,
                style_layers: set.clone(),
                style_weight: sw,
                tv_weight: s.tv_weight,
                style_loss: s.style_loss,
            };
            let obj = Objective::new(&encoder, cfg, Some(&ct), &[(st.clone(), 1.0)])?;
            let prefix = format!("{}/{} ", r * nc + c + 1, nr * nc);
            let solved = solve(s, &obj, &init, &prefix, 0, |_, _| Ok(()))
                .with_context(|| format!("grid cell {}, style weight {sw:e}", layers_label(set)))?;
            cells[r][c] = Some(to_rgb8(&solved.outcome.image)?);
            let stopped = solved.outcome.ending == Ending::Stopped;
            last_solved = Some(solved);
            if stopped {
                break 'rows;
            }
        }
    }
    let sheet = Sheet {
        title: format!(
            "{} in the style of {}: style weight (columns) x style layers (rows), content {} x {}, {} {} iterations",
            a.content.file_name().unwrap_or_default().to_string_lossy(),
            a.style.file_name().unwrap_or_default().to_string_lossy(),
            FEATURE_NAMES[content_layer],
            a.content_weight,
            s.iters,
            format!("{:?}", s.optimizer).to_uppercase()
        ),
        col_labels: a.style_weights.iter().map(|w| format!("{w:.0e}")).collect(),
        row_labels: sets
            .iter()
            .map(|set| layers_label(set).replace(',', ", "))
            .collect(),
        cells,
    };
    sheet::save(&a.output, &sheet, s.overwrite)?;
    if let Some(solved) = last_solved {
        report(s, "grid", &a.output, (h, w), &solved);
    }
    Ok(())
}
