//! `adain-train`: trains the AdaIN decoder on photo/painting pairs with the
//! paper's losses and schedule, resumably; `adain-train export` makes a
//! shareable decoder file from a run.

mod checkpoint;
mod config;
mod data;
#[cfg(test)]
mod parity_test;
mod plot;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use adain::weights;
use adain::{runtime, Decoder, Encoder};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use clap::{Args, Parser, Subcommand};
use config::Config;
use serde::{Deserialize, Serialize};

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
    /// Paintings: a name (data/<name>/) or a directory.
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
            crop_size
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
    runtime::logging(false);
    let result = match cli.cmd {
        Some(Cmd::Export {
            run,
            out,
            dtype,
            overwrite,
        }) => export(&run, &out, &dtype, overwrite),
        None => train(cli.train),
    };
    if let Err(e) = result {
        eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}

/// One line of RUN/log.jsonl.
#[derive(Serialize, Deserialize, Clone)]
struct LogRecord {
    iter: u64,
    loss_content: f64,
    loss_style: f64,
    loss: f64,
    lr: f64,
    secs_per_iter: f64,
}

fn train(args: TrainArgs) -> Result<()> {
    // Every step frees and allocates the same large blocks: keep them.
    adain::alloc::keep_freed_memory();
    // Resolve the run directory and the config.
    let (run, resuming) = match &args.resume {
        Some(p) if !p.as_os_str().is_empty() => (p.clone(), true),
        Some(_) => (
            args.out
                .clone()
                .unwrap_or_else(|| PathBuf::from("runs/adain")),
            true,
        ),
        None => (
            args.out
                .clone()
                .unwrap_or_else(|| PathBuf::from("runs/adain")),
            false,
        ),
    };
    let config_path = run.join("config.toml");
    let base = if resuming {
        if !config_path.is_file() {
            bail!("{}: nothing to resume (no config.toml)", run.display());
        }
        Config::from_file(&config_path)?
    } else if let Some(f) = &args.config {
        Config::from_file(f)?
    } else {
        Config::default()
    };
    let cfg = args.apply(base);
    cfg.validate()?;
    if !resuming && !checkpoint::list(&run)?.is_empty() {
        bail!(
            "{}: already holds checkpoints: continue it with --resume {0}, or choose another --out",
            run.display()
        );
    }
    runtime::threads(cfg.threads);
    adain::conv::set_precision(cfg.precision);
    adain::conv::set_f4_forward(false);
    let device = runtime::device(&cfg.device)?;

    // Encoder (frozen: plain tensors, no variables).
    let (vgg_path, vgg) = weights::load_encoder(cfg.vgg.as_deref())?;
    let encoder = Encoder::new(VarBuilder::from_tensors(
        vgg.on(&device)?,
        DType::F32,
        &device,
    ))?;
    let encoder_sha = vgg_path.sha256()?;

    // Data.
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
    let data_json = serde_json::json!({
        "content_dir": content.root, "content_files": content.files.len(), "content_skipped": content.skipped.len(),
        "style_dir": style.root, "style_files": style.files.len(), "style_skipped": style.skipped.len(),
    })
    .to_string();

    // Decoder variables, initialised from the seed (PyTorch's default conv init).
    let varmap = VarMap::new();
    let decoder = Decoder::new(VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
    let params = sorted_vars(&varmap);
    init_decoder(&params, cfg.seed)?;
    if let (Some(file), false) = (&cfg.init_decoder, resuming) {
        warm_start(&params, file, &vgg_path.label(), &encoder_sha)?;
    }
    let mut adam = adain::optim::Adam::new(
        params.clone(),
        adain::optim::AdamConfig {
            lr: cfg.lr,
            lr_decay: cfg.lr_decay,
            ..Default::default()
        },
    )?;

    std::fs::create_dir_all(run.join("samples"))
        .with_context(|| format!("{}: cannot create", run.display()))?;
    let mut start = 0;
    if resuming {
        let ck = checkpoint::latest(&run)?
            .with_context(|| format!("{}: no checkpoint to resume from", run.display()))?;
        for (name, var) in &params {
            let t = ck
                .file
                .tensors
                .get(name)
                .with_context(|| format!("{}: missing `{name}`", ck.file.path.display()))?;
            var.set(&t.to_device(&device)?)?;
        }
        let state: HashMap<String, Tensor> = ck
            .with_prefix("adam.")
            .into_iter()
            .map(|(k, t)| Ok((k, t.to_device(&device)?)))
            .collect::<Result<_>>()?;
        adam.load_state(&state, ck.iteration)?;
        start = ck.iteration;
        tracing::info!(
            "resuming {} at iteration {start} (optimizer step {})",
            run.display(),
            adam.step()
        );
    }
    adain::atomic::write_bytes(&config_path, cfg.to_toml().as_bytes())?;

    // The log keeps only what the checkpoint has seen: records after it are redone.
    let log_path = run.join("log.jsonl");
    let mut records = read_log(&log_path)?;
    records.retain(|r| r.iter <= start);
    let mut log_text = String::new();
    for r in &records {
        log_text.push_str(&serde_json::to_string(r)?);
        log_text.push('\n');
    }
    adain::atomic::write_bytes(&log_path, log_text.as_bytes())?;
    let mut log = std::fs::OpenOptions::new().append(true).open(&log_path)?;

    let samples = SamplePairs::new(&content.files, &style.files, &cfg, &encoder, &device)?;
    let mut loader = data::Loader::new(
        content,
        style,
        data::LoaderConfig {
            batch_size: cfg.batch_size,
            load_size: cfg.load_size,
            crop_size: cfg.crop_size,
            seed: cfg.seed,
            prefetch: 2,
        },
        start,
    );

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let mut first: Option<Instant> = None;
        ctrlc::set_handler(move || match on_interrupt(&mut first, Instant::now()) {
            Interrupt::Save => {
                stop.store(true, Ordering::SeqCst);
                eprintln!(
                    "\ninterrupted: saving a checkpoint after this step (Ctrl-C again to quit at once)"
                );
            }
            Interrupt::Same => {}
            Interrupt::Quit => std::process::exit(130),
        })
        .context("cannot install the Ctrl-C handler")?;
    }

    let meta = |iteration: u64| -> BTreeMap<String, String> {
        let mut m = weights::decoder_metadata(&encoder_sha, &cfg.recipe_json(), iteration);
        m.insert(checkpoint::META_CONFIG.into(), cfg.to_toml());
        m.insert(checkpoint::META_DATA.into(), data_json.clone());
        m
    };
    let save =
        |iteration: u64, adam: &adain::optim::Adam, records: &[LogRecord]| -> Result<PathBuf> {
            let dec: Vec<(String, Tensor)> = params
                .iter()
                .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
                .collect();
            let p = checkpoint::save(
                &run,
                iteration,
                &dec,
                &adam.state(),
                &meta(iteration),
                cfg.keep,
            )?;
            let points: Vec<plot::LossPoint> = records
                .iter()
                .map(|r| plot::LossPoint {
                    iter: r.iter,
                    content: r.loss_content,
                    style: r.loss_style,
                    total: r.loss,
                })
                .collect();
            if let Err(e) = plot::plot_losses(&run.join("loss.png"), &points) {
                tracing::warn!("loss plot: {e:#}");
            }
            Ok(p)
        };

    let bar = indicatif::ProgressBar::new(cfg.max_iter);
    bar.set_position(start);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{pos}/{len} {per_sec} ETA {eta} {wide_bar} {msg}")
            .expect("template"),
    );
    let mut bad_files: HashSet<PathBuf> = HashSet::new();
    let mut last_saved: Option<PathBuf> = checkpoint::list(&run)?.last().map(|(_, p)| p.clone());
    let mut t_last = Instant::now();
    let mut since_log = 0u64;
    for it in start..cfg.max_iter {
        let batch = loader.next()?;
        if batch.index != it {
            bail!(
                "data loader out of step: batch {} at iteration {it}",
                batch.index
            );
        }
        for (p, why) in batch.skipped {
            if bad_files.insert(p.clone()) {
                tracing::warn!("skipped {}: {why}", p.display());
            }
        }
        let lr = adam.lr_at(it);
        let losses = adain::loss::losses(
            &encoder,
            &decoder,
            &batch.content.to_device(&device)?,
            &batch.style.to_device(&device)?,
        )?;
        let total = losses.total(cfg.content_weight, cfg.style_weight)?;
        let (lc, ls, lt) = (
            scalar(&losses.content)?,
            scalar(&losses.style)?,
            scalar(&total)?,
        );
        if !lt.is_finite() {
            bar.abandon();
            bail!(
                "loss is {lt} at iteration {it} (content {lc}, style {ls}): stopping. The last good checkpoint is {}; \
                 try a lower --lr or --style-weight",
                last_saved.map(|p| p.display().to_string()).unwrap_or_else(|| "none".into())
            );
        }
        let grads = total.backward()?;
        adam.step_grads(&grads)?;
        let done = it + 1;
        since_log += 1;
        bar.set_position(done);
        bar.set_message(format!("content {lc:.4} style {ls:.4} lr {lr:.3e}"));

        if done % cfg.log_every == 0 || done == 1 || done == cfg.max_iter {
            let secs = t_last.elapsed().as_secs_f64() / since_log as f64;
            let rec = LogRecord {
                iter: done,
                loss_content: lc,
                loss_style: ls,
                loss: lt,
                lr,
                secs_per_iter: secs,
            };
            writeln!(log, "{}", serde_json::to_string(&rec)?)?;
            log.flush()?;
            records.push(rec);
            t_last = Instant::now();
            since_log = 0;
        }
        if done % cfg.sample_every == 0 {
            let p = run.join("samples").join(format!("iter_{done:06}.jpg"));
            samples.write(&decoder, &p)?;
        }
        let interrupted = stop.load(Ordering::SeqCst);
        if done % cfg.save_every == 0 || done == cfg.max_iter || interrupted {
            // Never checkpoint weights an update has made non-finite.
            for (name, v) in &params {
                if !scalar(&v.as_tensor().abs()?.sum_all()?)?.is_finite() {
                    bar.abandon();
                    bail!(
                        "weights of `{name}` are not finite after iteration {done}: stopping. The last good checkpoint is {}; \
                         try a lower --lr",
                        last_saved.map(|p| p.display().to_string()).unwrap_or_else(|| "none".into())
                    );
                }
            }
            let p = save(done, &adam, &records)?;
            bar.suspend(|| tracing::info!("saved {}", p.display()));
            last_saved = Some(p);
        }
        if interrupted {
            bar.abandon();
            eprintln!(
                "stopped at iteration {done}; continue with: adain-train --resume {}",
                run.display()
            );
            return Ok(());
        }
    }
    bar.finish();
    if !bad_files.is_empty() {
        tracing::warn!(
            "{} files could not be decoded and were skipped",
            bad_files.len()
        );
    }
    eprintln!(
        "done: {} (use it with `adain stylize --decoder {0}` or share it with `adain-train export`)",
        run.join(weights::DECODER_FILE).display()
    );
    Ok(())
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

fn sorted_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Sets the decoder's variables from a decoder file (`--init-decoder`): every
/// tensor must be there with the decoder's shape (the check `adain` applies).
fn warm_start(params: &[(String, Var)], file: &Path, vgg: &Path, encoder_sha: &str) -> Result<()> {
    let w = weights::WeightFile::load(file)?;
    w.check(&Decoder::tensor_shapes())?;
    for (name, var) in params {
        let t = w.tensors.get(name).context("decoder tensor names")?;
        var.set(&t.to_device(var.device())?)?;
    }
    weights::warn_if_other_encoder(&w, vgg, encoder_sha);
    tracing::info!(
        "decoder initialised from {} (its iteration: {})",
        file.display(),
        w.metadata
            .get(weights::META_ITER)
            .map(String::as_str)
            .unwrap_or("unknown")
    );
    Ok(())
}

/// PyTorch's default Conv2d init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and
/// bias, drawn from the run's seed so a run is reproducible from its config.
fn init_decoder(params: &[(String, Var)], seed: u64) -> Result<()> {
    for (i, (name, var)) in params.iter().enumerate() {
        let prefix = name.split('.').next().unwrap_or("");
        let fan_in = params
            .iter()
            .find(|(n, _)| *n == format!("{prefix}.weight"))
            .map(|(_, w)| w.dims()[1..].iter().product::<usize>())
            .context("weight of a bias")?;
        let bound = 1.0 / (fan_in as f64).sqrt();
        let mut rng = data::DetRng::from_parts(&[seed, 0xdec0de, i as u64]);
        let n = var.elem_count();
        let vals: Vec<f32> = (0..n)
            .map(|_| {
                ((rand::RngCore::next_u64(&mut rng) >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)
                    * bound
            })
            .map(|x| x as f32)
            .collect();
        var.set(&Tensor::from_vec(vals, var.shape(), var.device())?)?;
    }
    Ok(())
}

fn read_log(path: &Path) -> Result<Vec<LogRecord>> {
    if !path.exists() {
        return Ok(vec![]);
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    // A torn last line (killed mid-write) is dropped.
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Fixed content/style pairs whose stylization is saved as training goes on,
/// with their AdaIN targets (the encoder is frozen, so these never change).
struct SamplePairs {
    pairs: Vec<(Tensor, Tensor, Tensor)>,
}

impl SamplePairs {
    fn new(
        content: &[PathBuf],
        style: &[PathBuf],
        cfg: &Config,
        encoder: &Encoder,
        device: &Device,
    ) -> Result<Self> {
        let n = 4.min(content.len()).min(style.len());
        let pick = |files: &[PathBuf], k: usize| files[k * files.len() / n].clone();
        let mut pairs = Vec::new();
        for k in 0..n {
            let load = |p: &Path| -> Result<Tensor> {
                let mut rng = data::DetRng::from_parts(&[cfg.seed, 0x5a3, k as u64]);
                let v = data::load_sample(p, cfg.load_size, cfg.crop_size, &mut rng)?;
                let s = cfg.crop_size as usize;
                Ok(Tensor::from_vec(v, (1, 3, s, s), &Device::Cpu)?.to_device(device)?)
            };
            if let (Ok(c), Ok(s)) = (load(&pick(content, k)), load(&pick(style, k))) {
                let t = adain::adain::adain(&encoder.relu4_1(&c)?, &encoder.relu4_1(&s)?)?;
                pairs.push((c, s, t));
            }
        }
        Ok(Self { pairs })
    }

    fn write(&self, decoder: &Decoder, path: &Path) -> Result<()> {
        let outs = self
            .pairs
            .iter()
            .map(|(_, _, t)| Ok(decoder.forward(t)?.detach()))
            .collect::<Result<Vec<_>>>()?;
        let rows: Vec<[&Tensor; 3]> = self
            .pairs
            .iter()
            .zip(&outs)
            .map(|((c, s, _), o)| [c, s, o])
            .collect();
        plot::save_grid(path, &rows, 192)
    }
}

/// What a Ctrl-C (SIGINT) means to a training run.
#[derive(Debug, PartialEq)]
enum Interrupt {
    /// The first: finish the step, save a checkpoint, stop.
    Save,
    /// The first one again: `timeout -s INT` signals the trainer and then its
    /// whole process group, so one interrupt can arrive twice within
    /// microseconds. Ignored.
    Same,
    /// A second Ctrl-C a second or more after the first: leave now.
    Quit,
}

fn on_interrupt(first: &mut Option<Instant>, now: Instant) -> Interrupt {
    match *first {
        None => {
            *first = Some(now);
            Interrupt::Save
        }
        Some(t) if now.duration_since(t) < std::time::Duration::from_secs(1) => Interrupt::Same,
        Some(_) => Interrupt::Quit,
    }
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
        .decoder_tensors()?
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

#[cfg(test)]
mod interrupt_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_doubled_interrupt_saves_and_a_later_one_quits() {
        let t0 = Instant::now();
        let mut first = None;
        assert_eq!(on_interrupt(&mut first, t0), Interrupt::Save);
        // timeout's second delivery, microseconds later
        let echo = t0 + Duration::from_micros(50);
        assert_eq!(on_interrupt(&mut first, echo), Interrupt::Same);
        assert_eq!(
            on_interrupt(&mut first, t0 + Duration::from_millis(999)),
            Interrupt::Same
        );
        // a person pressing Ctrl-C again
        let again = t0 + Duration::from_millis(1500);
        assert_eq!(on_interrupt(&mut first, again), Interrupt::Quit);
    }
}
