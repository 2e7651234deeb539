//! The one place checkpoints are written and read.
//!
//! `RUN/checkpoints/ckpt_NNNNNNN.safetensors` holds everything a resume needs:
//! the decoder under its own keys (so the file also works as `--decoder`), the
//! Adam moments (`adam.m.*`, `adam.v.*`) and, in `__metadata__`, the decoder
//! metadata plus the iteration and the resolved config. The data order is a pure
//! function of (seed, iteration), so that is the sampler's whole state.
//! `RUN/decoder.safetensors` (`RUN/model.safetensors` for a Johnson network) is
//! the latest model alone. Every write is atomic.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use adain::weights::{self, WeightFile};
use anyhow::{Context, Result};
use candle_core::Tensor;

pub const META_CONFIG: &str = "train_config";
pub const META_DATA: &str = "train_data";

pub fn dir(run: &Path) -> PathBuf {
    run.join("checkpoints")
}

fn name(iteration: u64) -> String {
    format!("ckpt_{iteration:07}.safetensors")
}

fn iteration_of(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_prefix("ckpt_")?
        .strip_suffix(".safetensors")?
        .parse()
        .ok()
}

/// Writes checkpoint `iteration` and the latest model alone as `RUN/latest`,
/// then keeps only the newest `keep` checkpoints. Returns the checkpoint's path.
pub fn save(
    run: &Path,
    iteration: u64,
    decoder: &[(String, Tensor)],
    optimizer: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
    keep: usize,
    latest: &str,
) -> Result<PathBuf> {
    let path = dir(run).join(name(iteration));
    let all: Vec<(String, Tensor)> = decoder.iter().chain(optimizer).cloned().collect();
    weights::save_safetensors(&path, &all, metadata, true)?;
    let mut decoder_meta = metadata.clone();
    decoder_meta.remove(META_CONFIG);
    weights::save_safetensors(&run.join(latest), decoder, &decoder_meta, true)?;
    let mut old = list(run)?;
    while old.len() > keep.max(1) {
        let (_, p) = old.remove(0);
        std::fs::remove_file(&p)
            .with_context(|| format!("{}: cannot remove old checkpoint", p.display()))?;
    }
    Ok(path)
}

/// Checkpoints of a run, oldest first.
pub fn list(run: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let d = dir(run);
    if !d.is_dir() {
        return Ok(vec![]);
    }
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(&d)
        .with_context(|| format!("{}: cannot list", d.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| iteration_of(&p).map(|i| (i, p)))
        .collect();
    out.sort();
    Ok(out)
}

/// A loaded checkpoint.
pub struct Checkpoint {
    pub iteration: u64,
    pub file: WeightFile,
}

impl Checkpoint {
    /// Tensors whose names start with `prefix` (prefix kept).
    pub fn with_prefix(&self, prefix: &str) -> HashMap<String, Tensor> {
        self.file
            .tensors
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect()
    }

    /// The model's own tensors (a decoder's, shape-checked, or a Johnson
    /// network's: everything but Adam's moments), sorted by name.
    pub fn model_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let names: Vec<String> = if self.is_johnson() {
            adain::johnson::TransformerNet::tensor_shapes()
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        } else {
            adain::Decoder::tensor_shapes()
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        };
        let mut v: Vec<(String, Tensor)> = names
            .into_iter()
            .map(|k| {
                let t = self
                    .file
                    .tensors
                    .get(&k)
                    .with_context(|| format!("{}: missing `{k}`", self.file.path.display()))?;
                Ok((k, t.clone()))
            })
            .collect::<Result<_>>()?;
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    }

    /// Whether the checkpoint holds a Johnson network (its format tag).
    pub fn is_johnson(&self) -> bool {
        self.file
            .metadata
            .get(weights::META_FORMAT)
            .map(String::as_str)
            == Some(adain::johnson::FORMAT)
    }
}

/// Exclusive use of a run directory (`RUN/.lock`, an advisory `flock`): a
/// second trainer on the same run is refused, and a killed one leaves no
/// stale lock (the kernel drops a dead process's locks). Held while alive.
pub struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    /// Takes the lock (creating `run`), writes this pid into it, and removes
    /// the temp files a killed trainer left in the run and its checkpoints.
    pub fn acquire(run: &Path) -> Result<RunLock> {
        use std::io::{Read, Seek, Write};
        std::fs::create_dir_all(run)
            .with_context(|| format!("{}: cannot create", run.display()))?;
        let path = run.join(".lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("{}: cannot open the lock file", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let who = match pid.trim() {
                    "" => String::new(),
                    p => format!(" (pid {p})"),
                };
                anyhow::bail!(
                    "{}: another adain-train{who} is using this run directory; wait for it to finish or stop it",
                    run.display()
                );
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("{}: cannot lock", path.display()))
            }
        }
        file.set_len(0)?;
        file.seek(std::io::SeekFrom::Start(0))?;
        write!(file, "{}", std::process::id())?;
        for d in [run.to_path_buf(), dir(run), run.join("samples")] {
            let n = adain::atomic::remove_stale_temps(&d)?;
            if n > 0 {
                tracing::info!(
                    "{}: removed {n} unfinished temp file(s) of an interrupted run",
                    d.display()
                );
            }
        }
        Ok(RunLock { _file: file })
    }
}

/// The newest checkpoint that loads; a damaged newer one is reported and skipped.
pub fn latest(run: &Path) -> Result<Option<Checkpoint>> {
    for (iteration, path) in list(run)?.into_iter().rev() {
        match WeightFile::load(&path) {
            Ok(file) => return Ok(Some(Checkpoint { iteration, file })),
            Err(e) => tracing::warn!("skipping checkpoint: {e:#}"),
        }
    }
    Ok(None)
}
