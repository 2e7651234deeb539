//! `adain-train`: trains the AdaIN decoder on photo/painting pairs with the
//! paper's losses and schedule, resumably; `adain-train export` makes a
//! shareable decoder file from a run.

mod checkpoint;
mod config;
mod data;
mod dist;
mod johnson;
mod model;
#[cfg(test)]
mod parity_test;
mod plot;
mod temporal;
mod trainer;

use std::path::{Path, PathBuf};

use adain::weights;
use adain::{runtime, Encoder};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use clap::{Args, Parser, Subcommand};
use config::Config;

#[global_allocator]
static ALLOC: adain::alloc::HugePageAlloc = adain::alloc::HugePageAlloc;

#[derive(Parser)]
#[command(
    name = "adain-train",
    version,
    args_conflicts_with_subcommands = true,
    args_override_self = true
)]
#[command(about = "Train an AdaIN decoder on photos (content) and paintings (style)")]
#[command(
    long_about = "Train an AdaIN decoder on photos (content) and paintings (style).\n\n\
Defaults are the reference recipe (lr 1e-4, decay 5e-5, 160k iterations, batch 8, crops of 256 from images \
resized to 512). A run directory holds config.toml, log.jsonl, loss.png, samples/ and checkpoints/; \
--resume continues it exactly. Ctrl-C saves a checkpoint and exits.\n\n\
Examples:\n  adain-train --content coco --style wikiart --out runs/main\n  adain-train --resume runs/main\n  \
adain-train export runs/main --out weights/decoder.safetensors --dtype f16"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a Johnson et al. per-style network (PyTorch fast_neural_style's
    /// TransformerNet) against ONE style image: `adain-train johnson --style
    /// painting.jpg --content coco --out runs/NAME`. Defaults: Adam lr 1e-3 (no
    /// decay), batch 4, 256 px crops of photos resized to 256, content loss at
    /// relu2_1, 40,000 steps. The run's model.safetensors goes to `adain stylize
    /// --model`; --resume, export, Ctrl-C and mpirun work as for the decoder.
    Johnson(TrainArgs),
    /// Write the latest decoder of a run as a shareable safetensors file with metadata.
    Export {
        run: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "f32", value_parser = ["f32", "f16", "bf16"])]
        dtype: String,
        #[arg(long)]
        overwrite: bool,
    },
}

#[derive(Args, Default)]
struct TrainArgs {
    /// Photos: a name (data/<name>/) or a directory.
    #[arg(long)]
    content: Option<String>,
    /// Paintings: a name (data/<name>/) or a directory; for `johnson`, one image.
    #[arg(long)]
    style: Option<String>,
    /// Run directory [default: runs/adain].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue a run (RUN_DIR, or --out) from its latest checkpoint.
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    resume: Option<PathBuf>,
    /// TOML file with the same keys as these flags (kebab-case).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Learning rate lr0 [default: 1e-4].
    #[arg(long)]
    lr: Option<f64>,
    /// Inverse-time decay: lr_i = lr0 / (1 + decay * i) [default: 5e-5].
    #[arg(long)]
    lr_decay: Option<f64>,
    /// [default: 160000]
    #[arg(long)]
    max_iter: Option<u64>,
    /// [default: 8]
    #[arg(long)]
    batch_size: Option<usize>,
    /// Style loss weight [default: 50; the reference's 10 assumed a normalised VGG, see README]
    #[arg(long)]
    style_weight: Option<f64>,
    /// [default: 1]
    #[arg(long)]
    content_weight: Option<f64>,
    /// Shorter side images are resized to (never upscaled past the crop) [default: 512].
    #[arg(long)]
    load_size: Option<u32>,
    /// Random square crop [default: 256].
    #[arg(long)]
    crop_size: Option<u32>,
    /// Checkpoint every N iterations [default: 10000].
    #[arg(long)]
    save_every: Option<u64>,
    /// Log a record to log.jsonl every N iterations [default: 10].
    #[arg(long)]
    log_every: Option<u64>,
    /// Write a sample grid every N iterations [default: 1000].
    #[arg(long)]
    sample_every: Option<u64>,
    /// Checkpoints to keep [default: 3].
    #[arg(long)]
    keep: Option<usize>,
    /// [default: 0]
    #[arg(long)]
    seed: Option<u64>,
    /// CPU threads (0 = all cores) [default: 0].
    #[arg(long)]
    threads: Option<usize>,
    /// Convolution arithmetic: f32 (matches PyTorch), or bf16 products with f32
    /// sums on Intel AMX, ~3x faster per step (f32 where the CPU has no AMX)
    /// [default: f32].
    #[arg(long, value_enum)]
    precision: Option<adain::conv::Precision>,
    /// cpu or cuda [default: cpu].
    #[arg(long, value_parser = ["cpu", "cuda"])]
    device: Option<String>,
    /// VGG-19 encoder weights.
    #[arg(long)]
    vgg: Option<PathBuf>,
    /// Start a new run from this decoder instead of random weights, e.g.
    /// weights/decoder.safetensors to train the published decoder further on
    /// another machine (f16/bf16 files are upcast). Adam's moments start at
    /// zero and the iteration count at 0; the file is named in the run's
    /// recipe. Use a new --seed so the batches differ from the run that made it.
    #[arg(long)]
    init_decoder: Option<PathBuf>,
    /// johnson: total-variation weight [default: 0].
    #[arg(long)]
    tv_weight: Option<f64>,
    /// johnson: encoder layer of the content loss (relu1_1..relu4_1) [default: relu2_1].
    #[arg(long)]
    content_layer: Option<String>,
    /// johnson: the style image's shorter side (0 = its own size); sets the
    /// stroke scale in output pixels [default: 512].
    #[arg(long)]
    style_size: Option<u32>,
    /// Weight of the compound temporal regulariser (Wang et al. 2020): each
    /// step also stylizes a slightly moved, noisy copy of the photos and pulls
    /// it towards the moved output (L1), for a decoder that flickers less in
    /// video without optical flow. 0 = off [default: 0].
    #[arg(long)]
    temporal_weight: Option<f64>,
}

impl TrainArgs {
    /// Flags given on the command line override `base`.
    fn apply(&self, mut c: Config) -> Config {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = &self.$f { c.$f = v.clone().into(); } )* };
        }
        set!(
            content,
            style,
            lr,
            lr_decay,
            max_iter,
            batch_size,
            style_weight,
            content_weight,
            load_size,
            crop_size,
            tv_weight,
            content_layer,
            style_size,
            temporal_weight
        );
        set!(
            save_every,
            log_every,
            sample_every,
            keep,
            seed,
            threads,
            precision,
            device
        );
        if let Some(v) = &self.vgg {
            c.vgg = Some(v.clone());
        }
        if let Some(v) = &self.init_decoder {
            c.init_decoder = Some(v.clone());
        }
        c
    }
}

fn main() {
    let cli = Cli::parse();
    let dist = match dist::Dist::from_launcher() {
        Ok(d) => d,
        Err(e) => dist::Dist::single().fail(&format!("{e:#}"), 1),
    };
    // Rank 0 speaks for the job; the others report only warnings and errors.
    runtime::logging(!dist.is_root());
    let result = match cli.cmd {
        Some(Cmd::Export {
            run,
            out,
            dtype,
            overwrite,
        }) => export(&run, &out, &dtype, overwrite),
        Some(Cmd::Johnson(args)) => train(args, config::johnson_defaults(), &dist),
        None => train(cli.train, Config::default(), &dist),
    };
    if let Err(e) = result {
        dist.fail(&format!("{e:#}").replace('\n', " "), 1);
    }
}

fn train(args: TrainArgs, defaults: Config, dist: &dist::Dist) -> Result<()> {
    // Every step frees and allocates the same large blocks: keep them.
    adain::alloc::keep_freed_memory();
    let run = resolve_run(&args, defaults, dist)?;
    let cfg = run.cfg.clone();
    if cfg.batch_size % dist.size() != 0 {
        bail!(
            "--batch-size {} does not split evenly across {} processes (it is the global batch)",
            cfg.batch_size,
            dist.size()
        );
    }
    runtime::threads(cfg.threads);
    adain::conv::set_precision(cfg.precision);
    adain::conv::set_f4_forward(false);
    let device = dist.device(&cfg.device)?;

    // Encoder (frozen: plain tensors, no variables).
    let (vgg_path, vgg) = weights::load_encoder(cfg.vgg.as_deref())?;
    let encoder = Encoder::new(VarBuilder::from_tensors(
        vgg.on(&device)?,
        DType::F32,
        &device,
    ))?;
    let encoder_sha = vgg_path.sha256()?;

    if cfg.model == "johnson" {
        let content = data::discover(&Config::resolve_data(&cfg.content), cfg.crop_size / 2)?;
        tracing::info!(
            "content: {} usable, {} skipped in {}; style: {}",
            content.files.len(),
            content.skipped.len(),
            content.root.display(),
            cfg.style
        );
        same_everywhere(dist, &[("content", &content)], &encoder_sha)?;
        let data_json = serde_json::json!({
            "content_dir": content.root, "content_files": content.files.len(),
            "content_skipped": content.skipped.len(), "style_image": cfg.style,
        })
        .to_string();
        let net = johnson::JohnsonModel::new(
            &cfg,
            encoder,
            encoder_sha,
            device.clone(),
            dist.is_root().then_some(&content.files[..]),
            data_json,
        )?;
        return fit(run, net, dist, device, content, None);
    }

    // Data: every rank must see the same files, or the ranks would not
    // follow one trajectory.
    let min_side = cfg.crop_size / 2;
    let content = data::discover(&Config::resolve_data(&cfg.content), min_side)?;
    let style = data::discover(&Config::resolve_data(&cfg.style), min_side)?;
    for (what, ds) in [("content", &content), ("style", &style)] {
        tracing::info!(
            "{what}: {} usable, {} skipped in {}",
            ds.files.len(),
            ds.skipped.len(),
            ds.root.display()
        );
    }
    same_everywhere(
        dist,
        &[("content", &content), ("style", &style)],
        &encoder_sha,
    )?;
    let data_json = serde_json::json!({
        "content_dir": content.root, "content_files": content.files.len(), "content_skipped": content.skipped.len(),
        "style_dir": style.root, "style_files": style.files.len(), "style_skipped": style.skipped.len(),
    })
    .to_string();

    let decoder = model::AdainDecoder::new(model::Setup {
        cfg: &cfg,
        encoder,
        encoder_path: &vgg_path.label(),
        encoder_sha,
        device: device.clone(),
        sample_files: dist
            .is_root()
            .then_some((&content.files[..], &style.files[..])),
        data_json,
        resuming: run.resuming,
    })?;
    fit(run, decoder, dist, device, content, Some(style))
}

/// The trainer and this rank's loader over its share of every global batch.
fn fit<M: trainer::Model>(
    run: trainer::Run,
    model: M,
    dist: &dist::Dist,
    device: candle_core::Device,
    content: data::Dataset,
    style: Option<data::Dataset>,
) -> Result<()> {
    let cfg = run.cfg.clone();
    let trainer = trainer::Trainer::new(run, model, dist, device)?;
    let share = cfg.batch_size / dist.size();
    let loader = data::Loader::new(
        content,
        style,
        data::LoaderConfig {
            batch_size: cfg.batch_size,
            load_size: cfg.load_size,
            crop_size: cfg.crop_size,
            seed: cfg.seed,
            prefetch: 2,
            slots: Some(dist.rank() * share..(dist.rank() + 1) * share),
        },
        trainer.start(),
    );
    if dist.size() > 1 && dist.is_root() {
        tracing::info!(
            "data-parallel over {} processes ({}): {share} of the global batch of {} each",
            dist.size(),
            dist.backend_name(),
            cfg.batch_size
        );
    }
    trainer.run(loader)
}

/// The run directory and its config: from the flags, a `--config` file, or
/// (on `--resume`) the run's own config.toml. Rank 0 resolves it and sends it
/// to the others, which need no run directory of their own.
fn resolve_run(args: &TrainArgs, defaults: Config, dist: &dist::Dist) -> Result<trainer::Run> {
    let (dir, mut resuming) = match &args.resume {
        Some(p) if !p.as_os_str().is_empty() => (p.clone(), true),
        _ => (
            args.out
                .clone()
                .unwrap_or_else(|| PathBuf::from("runs/adain")),
            args.resume.is_some(),
        ),
    };
    let mut cfg_toml = String::new();
    let mut lock = None;
    if dist.is_root() {
        let config_path = dir.join("config.toml");
        if resuming && !config_path.is_file() {
            bail!("{}: nothing to resume (no config.toml)", dir.display());
        }
        // Before anything is read: a second trainer on this run stops here.
        lock = Some(checkpoint::RunLock::acquire(&dir)?);
        let base = if resuming {
            Config::from_file(&config_path)?
        } else if let Some(f) = &args.config {
            Config::from_file(f)?
        } else {
            defaults
        };
        if resuming && checkpoint::list(&dir)?.is_empty() {
            // killed before its first save: the run is its config, so start it over
            tracing::info!(
                "{}: no checkpoint yet (stopped before its first save): starting over from iteration 0",
                dir.display()
            );
            resuming = false;
        }
        let cfg = args.apply(base);
        cfg.validate()?;
        if args.resume.is_none() && !checkpoint::list(&dir)?.is_empty() {
            bail!(
                "{}: already holds checkpoints: continue it with --resume {0}, or choose another --out",
                dir.display()
            );
        }
        cfg_toml = cfg.to_toml();
    }
    let shared = dist.broadcast_bytes(cfg_toml.into_bytes())?;
    let cfg: Config =
        toml::from_str(std::str::from_utf8(&shared)?).context("the configuration rank 0 sent")?;
    Ok(trainer::Run {
        dir,
        resuming,
        cfg,
        lock,
    })
}

/// Refuses to start, on every rank, when a rank's data or encoder differs
/// from rank 0's (before the first step).
fn same_everywhere(
    dist: &dist::Dist,
    sets: &[(&str, &data::Dataset)],
    encoder_sha: &str,
) -> Result<()> {
    if dist.size() == 1 {
        return Ok(());
    }
    let mine: Vec<String> = sets
        .iter()
        .map(|(what, ds)| format!("{what} data {}: {}", ds.root.display(), ds.fingerprint()))
        .chain([format!("encoder sha256 {encoder_sha}")])
        .collect();
    let text = mine.join("\n");
    let root = String::from_utf8(dist.broadcast_bytes(text.clone().into_bytes())?)?;
    let differs: Vec<String> = mine
        .iter()
        .zip(root.lines())
        .filter(|(a, b)| a.as_str() != *b)
        .map(|(a, b)| format!("{a} (rank 0 has {})", b.split(": ").last().unwrap_or(b)))
        .collect();
    if dist.any(!differs.is_empty())? {
        if !differs.is_empty() {
            bail!(
                "rank {} differs from rank 0: {}",
                dist.rank(),
                differs.join("; ")
            );
        }
        bail!("another rank's data differs from rank 0's (see its message): not starting");
    }
    Ok(())
}

fn export(run: &Path, out: &Path, dtype: &str, overwrite: bool) -> Result<()> {
    let ck = checkpoint::latest(run)?
        .with_context(|| format!("{}: no checkpoint found", run.display()))?;
    let dt = match dtype {
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        _ => DType::F32,
    };
    let tensors: Vec<(String, Tensor)> = ck
        .model_tensors()?
        .into_iter()
        .map(|(k, t)| Ok((k, t.to_dtype(dt)?)))
        .collect::<Result<_>>()?;
    let mut meta = ck.file.metadata.clone();
    meta.remove(checkpoint::META_CONFIG);
    meta.insert("dtype".into(), dtype.into());
    weights::save_safetensors(out, &tensors, &meta, overwrite)?;
    eprintln!(
        "wrote {} (iteration {}, {dtype})",
        out.display(),
        ck.iteration
    );
    Ok(())
}
