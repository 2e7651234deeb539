//! The one training loop: every model (the AdaIN decoder, and any other
//! network trained here) supplies its variables, its losses on a batch and its
//! sample grid through [`Model`]; the [`Trainer`] owns what every run needs:
//! Adam and its exact resume, the data-parallel all-reduce, the log, the loss
//! plot, samples, checkpoints, the finite checks and Ctrl-C.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use adain::optim::{Adam, AdamConfig};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::config::Config;
use crate::data::{Batch, Loader};
use crate::dist::Dist;
use crate::plot;

/// One step's loss terms: scalar tensors on the model's device. `total` is
/// what is minimised (the weighted sum; its weights are the model's).
pub struct Terms {
    pub content: Tensor,
    pub style: Tensor,
    pub tv: Option<Tensor>,
    /// The compound temporal regulariser (`--temporal-weight`), when on.
    pub temporal: Option<Tensor>,
    pub total: Tensor,
}

/// What a model contributes to training.
pub trait Model {
    /// The trainable variables, in a fixed order (sorted by name).
    fn params(&self) -> &[(String, Var)];
    /// The loss terms on this process's share of a batch.
    fn losses(&self, batch: &Batch) -> Result<Terms>;
    /// A grid of fixed examples, written as training goes on.
    fn write_samples(&self, path: &Path) -> Result<()>;
    /// Metadata for the checkpoint at `iteration` (and the exported file).
    fn metadata(&self, iteration: u64) -> BTreeMap<String, String>;
    /// The run's file holding the latest model alone, and how to use it.
    fn latest_file(&self) -> (&'static str, &'static str);
}

/// One line of RUN/log.jsonl.
#[derive(Serialize, Deserialize, Clone)]
pub struct LogRecord {
    pub iter: u64,
    pub loss_content: f64,
    pub loss_style: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_tv: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_temporal: Option<f64>,
    pub loss: f64,
    pub lr: f64,
    pub secs_per_iter: f64,
    /// Mean seconds per step spent averaging gradients across processes
    /// (flatten, all-reduce, unflatten); only in multi-process runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm_secs_per_iter: Option<f64>,
}

/// A run directory and its resolved configuration.
pub struct Run {
    pub dir: PathBuf,
    pub resuming: bool,
    pub cfg: Config,
    /// Rank 0's exclusive use of `dir`: held (never read) for the whole run.
    #[allow(dead_code)]
    pub lock: Option<checkpoint::RunLock>,
}

pub struct Trainer<'a, M: Model> {
    run: Run,
    model: M,
    dist: &'a Dist,
    device: Device,
    adam: Adam,
    start: u64,
    records: Vec<LogRecord>,
    log: Option<std::fs::File>,
}

impl<'a, M: Model> Trainer<'a, M> {
    /// Adam over the model's variables; on a resume, rank 0 restores the
    /// variables and Adam's state from the latest checkpoint; in a
    /// multi-process job it then sends the starting state to every rank (so
    /// only rank 0 needs the run directory, and all ranks start equal).
    pub fn new(run: Run, model: M, dist: &'a Dist, device: Device) -> Result<Self> {
        let params = model.params().to_vec();
        let mut adam = Adam::new(
            params.clone(),
            AdamConfig {
                lr: run.cfg.lr,
                lr_decay: run.cfg.lr_decay,
                ..Default::default()
            },
        )?;
        let mut start = 0;
        if dist.is_root() && run.resuming {
            let ck = checkpoint::latest(&run.dir)?
                .with_context(|| format!("{}: no checkpoint to resume from", run.dir.display()))?;
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
                run.dir.display(),
                adam.step()
            );
        }
        if dist.reduces() {
            start = share_state(dist, &params, &mut adam, start, &device)?;
        }
        let (mut records, mut log) = (Vec::new(), None);
        if dist.is_root() {
            std::fs::create_dir_all(run.dir.join("samples"))
                .with_context(|| format!("{}: cannot create", run.dir.display()))?;
            adain::atomic::write_bytes(&run.dir.join("config.toml"), run.cfg.to_toml().as_bytes())?;
            // The log keeps only what the checkpoint has seen: records after it are redone.
            let log_path = run.dir.join("log.jsonl");
            records = read_log(&log_path)?;
            records.retain(|r| r.iter <= start);
            let mut text = String::new();
            for r in &records {
                text.push_str(&serde_json::to_string(r)?);
                text.push('\n');
            }
            adain::atomic::write_bytes(&log_path, text.as_bytes())?;
            log = Some(std::fs::OpenOptions::new().append(true).open(&log_path)?);
        }
        Ok(Self {
            run,
            model,
            dist,
            device,
            adam,
            start,
            records,
            log,
        })
    }

    /// The iteration training continues from.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Trains to `max_iter`, or until Ctrl-C (then saves and returns).
    pub fn run(mut self, mut loader: Loader) -> Result<()> {
        let cfg = self.run.cfg.clone();
        let root = self.dist.is_root();
        let stop = interrupt_flag()?;
        let bar = if root {
            indicatif::ProgressBar::new(cfg.max_iter)
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_position(self.start);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{pos}/{len} {per_sec} ETA {eta} {wide_bar} {msg}",
            )
            .expect("template"),
        );
        let mut bad_files: HashSet<PathBuf> = HashSet::new();
        let mut last_saved = checkpoint::list(&self.run.dir)?
            .last()
            .map(|(_, p)| p.clone());
        let (mut t_last, mut since_log, mut comm_secs) = (Instant::now(), 0u64, 0f64);
        for it in self.start..cfg.max_iter {
            let batch = loader.next()?;
            if batch.index != it {
                bail!(
                    "data loader out of step: batch {} at iteration {it}",
                    batch.index
                );
            }
            for (p, why) in &batch.skipped {
                if bad_files.insert(p.clone()) {
                    bar.suspend(|| tracing::warn!("skipped {}: {why}", p.display()));
                }
            }
            let lr = self.adam.lr_at(it);
            let step = self.step(&batch, stop.load(Ordering::SeqCst))?;
            comm_secs += step.comm_secs;
            let (lc, ls, lt) = (step.content, step.style, step.total);
            if !lt.is_finite() {
                bar.abandon();
                bail!(
                    "loss is {lt} at iteration {it} (content {lc}, style {ls}): stopping. The last good checkpoint is {}; \
                     try a lower --lr or --style-weight",
                    shown(&last_saved)
                );
            }
            let done = it + 1;
            since_log += 1;
            bar.set_position(done);
            bar.set_message(format!("content {lc:.4} style {ls:.4} lr {lr:.3e}"));
            if done % cfg.log_every == 0 || done == 1 || done == cfg.max_iter {
                let n = since_log as f64;
                let rec = LogRecord {
                    iter: done,
                    loss_content: lc,
                    loss_style: ls,
                    loss_tv: step.tv,
                    loss_temporal: step.temporal,
                    loss: lt,
                    lr,
                    secs_per_iter: t_last.elapsed().as_secs_f64() / n,
                    comm_secs_per_iter: self.dist.reduces().then_some(comm_secs / n),
                };
                self.append_log(rec)?;
                (t_last, since_log, comm_secs) = (Instant::now(), 0, 0.0);
            }
            if root && done % cfg.sample_every == 0 {
                let p = self
                    .run
                    .dir
                    .join("samples")
                    .join(format!("iter_{done:06}.jpg"));
                self.model.write_samples(&p)?;
            }
            if done % cfg.save_every == 0 || done == cfg.max_iter || step.stop {
                if let Err(e) = self.check_finite(done) {
                    bar.abandon();
                    bail!(
                        "{e:#}. The last good checkpoint is {}; try a lower --lr",
                        shown(&last_saved)
                    );
                }
                if root {
                    let p = self.save(done)?;
                    bar.suspend(|| tracing::info!("saved {}", p.display()));
                    last_saved = Some(p);
                }
            }
            if step.stop {
                bar.abandon();
                if root {
                    eprintln!(
                        "stopped at iteration {done}; continue with: adain-train --resume {}",
                        self.run.dir.display()
                    );
                }
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
        if root {
            let (file, flag) = self.model.latest_file();
            eprintln!(
                "done: {} (use it with `adain stylize {flag} {0}` or share it with `adain-train export`)",
                self.run.dir.join(file).display()
            );
        }
        Ok(())
    }

    /// Forward, backward, the gradients averaged across processes (with the
    /// losses and the stop flag in the same buffer: one all-reduce), and the
    /// Adam update, unless the loss is not finite.
    fn step(&mut self, batch: &Batch, stop: bool) -> Result<StepResult> {
        let terms = self.model.losses(batch)?;
        let local = [
            scalar(&terms.content)?,
            scalar(&terms.style)?,
            match &terms.tv {
                Some(t) => scalar(t)?,
                None => 0.0,
            },
            scalar(&terms.total)?,
            match &terms.temporal {
                Some(t) => scalar(t)?,
                None => 0.0,
            },
        ];
        let grads = terms.total.backward()?;
        let mut gs = self.adam.gradients(&grads)?;
        drop(grads);
        let n = self.dist.size();
        let (global, stop, comm_secs) = if !self.dist.reduces() {
            (local, stop, 0.0)
        } else {
            let t0 = Instant::now();
            let mut parts = gs
                .iter()
                .map(|g| g.flatten_all())
                .collect::<candle_core::Result<Vec<_>>>()?;
            let mut tail: Vec<f32> = local.iter().map(|&x| x as f32).collect();
            tail.push(stop as u8 as f32);
            parts.push(Tensor::new(tail.as_slice(), &self.device)?);
            let sum = self.dist.all_reduce_sum(&Tensor::cat(&parts, 0)?)?;
            let avg = (sum * (1.0 / n as f64))?;
            let mut off = 0;
            for g in gs.iter_mut() {
                let k = g.elem_count();
                *g = avg.narrow(0, off, k)?.reshape(g.shape())?;
                off += k;
            }
            let l = avg.narrow(0, off, 6)?.to_vec1::<f32>()?;
            let global = [0, 1, 2, 3, 4].map(|i| l[i] as f64);
            (global, l[5] > 0.0, t0.elapsed().as_secs_f64())
        };
        if global[3].is_finite() {
            self.adam.step_with(&gs)?;
        }
        Ok(StepResult {
            content: global[0],
            style: global[1],
            tv: terms.tv.is_some().then_some(global[2]),
            temporal: terms.temporal.is_some().then_some(global[4]),
            total: global[3],
            stop,
            comm_secs,
        })
    }

    /// Never checkpoint weights an update has made non-finite (the weights
    /// are equal on every rank, so every rank comes to the same answer).
    fn check_finite(&self, done: u64) -> Result<()> {
        for (name, v) in self.model.params() {
            if !scalar(&v.as_tensor().abs()?.sum_all()?)?.is_finite() {
                bail!("weights of `{name}` are not finite after iteration {done}: stopping");
            }
        }
        Ok(())
    }

    fn append_log(&mut self, rec: LogRecord) -> Result<()> {
        if let Some(log) = &mut self.log {
            writeln!(log, "{}", serde_json::to_string(&rec)?)?;
            log.flush()?;
            self.records.push(rec);
        }
        Ok(())
    }

    fn save(&self, iteration: u64) -> Result<PathBuf> {
        let tensors: Vec<(String, Tensor)> = self
            .model
            .params()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        let mut meta = self.model.metadata(iteration);
        meta.insert(checkpoint::META_CONFIG.into(), self.run.cfg.to_toml());
        let p = checkpoint::save(
            &self.run.dir,
            iteration,
            &tensors,
            &self.adam.state(),
            &meta,
            self.run.cfg.keep,
            self.model.latest_file().0,
        )?;
        let points: Vec<plot::LossPoint> = self
            .records
            .iter()
            .map(|r| plot::LossPoint {
                iter: r.iter,
                content: r.loss_content,
                style: r.loss_style,
                total: r.loss,
            })
            .collect();
        if let Err(e) = plot::plot_losses(&self.run.dir.join("loss.png"), &points) {
            tracing::warn!("loss plot: {e:#}");
        }
        Ok(p)
    }
}

struct StepResult {
    content: f64,
    style: f64,
    tv: Option<f64>,
    temporal: Option<f64>,
    total: f64,
    stop: bool,
    comm_secs: f64,
}

/// Rank 0's variables, Adam moments, step and start iteration on every rank,
/// in one broadcast. Returns the start iteration.
fn share_state(
    dist: &Dist,
    params: &[(String, Var)],
    adam: &mut Adam,
    start: u64,
    device: &Device,
) -> Result<u64> {
    let state = adam.state();
    let mut buf: Vec<f32> = Vec::new();
    for t in params
        .iter()
        .map(|(_, v)| v.as_tensor())
        .chain(state.iter().map(|(_, t)| t))
    {
        buf.extend(t.flatten_all()?.to_vec1::<f32>()?);
    }
    // Counts as two f32 halves each (exact for any count below 2^48).
    for x in [start, adam.step()] {
        buf.push((x >> 24) as f32);
        buf.push((x & 0xff_ffff) as f32);
    }
    dist.broadcast_f32(&mut buf)?;
    let count = |i: usize| ((buf[i] as u64) << 24) | buf[i + 1] as u64;
    let n = buf.len();
    let (start, step) = (count(n - 4), count(n - 2));
    let mut off = 0;
    let mut take = |shape: &candle_core::Shape| -> Result<Tensor> {
        let k = shape.elem_count();
        let t = Tensor::from_slice(&buf[off..off + k], shape, device)?;
        off += k;
        Ok(t)
    };
    for (_, v) in params {
        v.set(&take(v.shape())?)?;
    }
    let mut moments = HashMap::new();
    for (name, t) in &state {
        moments.insert(name.clone(), take(t.shape())?);
    }
    adam.load_state(&moments, step)?;
    Ok(start)
}

/// Set by the first Ctrl-C (the step finishes, a checkpoint is saved, the run
/// stops); a second one a second later quits at once.
fn interrupt_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let mut first: Option<Instant> = None;
    ctrlc::set_handler(move || match on_interrupt(&mut first, Instant::now()) {
        Interrupt::Save => {
            flag.store(true, Ordering::SeqCst);
            eprintln!(
                "\ninterrupted: saving a checkpoint after this step (Ctrl-C again to quit at once)"
            );
        }
        Interrupt::Same => {}
        Interrupt::Quit => std::process::exit(130),
    })
    .context("cannot install the Ctrl-C handler")?;
    Ok(stop)
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

fn shown(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "none".into())
}

pub fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
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
