//! Flags more than one subcommand takes: which model, where it runs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;

use adain::conv::Precision;
use adain::engine::Engine;
use adain::johnson::JohnsonNet;
use adain::{runtime, weights, Model};

/// `--vgg`, `--decoder`, `--device`, `--threads`, `--precision`.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// VGG-19 encoder weights.
    #[arg(long)]
    pub vgg: Option<PathBuf>,
    /// Decoder weights.
    #[arg(long)]
    pub decoder: Option<PathBuf>,
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    pub device: String,
    /// Threads for the CPU kernels (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Convolution arithmetic: f32 (matches the PyTorch reference to ~1e-5), or
    /// bf16 products with f32 sums on Intel AMX, several times faster (f32 is
    /// used where the CPU has no AMX).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
}

impl ModelArgs {
    /// Sets the process-wide switches (threads, precision) once, then loads
    /// the model into an engine.
    pub fn engine(&self) -> Result<Engine> {
        let device = self.switches()?;
        let (vgg, decoder) = weights::locate_model(self.vgg.as_deref(), self.decoder.as_deref())?;
        Ok(Engine::new(Model::from_sources(&vgg, &decoder, &device)?))
    }

    /// [`Self::engine`] for a per-style Johnson network file (`--model`);
    /// `--vgg` and `--decoder` must not be given.
    pub fn johnson_engine(&self, network: &Path) -> Result<Engine> {
        for (flag, given) in [
            ("--vgg", self.vgg.is_some()),
            ("--decoder", self.decoder.is_some()),
        ] {
            if given {
                bail!("{flag} cannot be used with --model: a per-style network needs no encoder or decoder");
            }
        }
        let device = self.switches()?;
        // Its layers' buffers come and go at the same sizes every image: kept
        // in the heap, the 1024^2 forward ran 17% faster at the same peak
        // (see `keep_freed_memory`).
        adain::alloc::keep_freed_memory();
        Ok(Engine::johnson(JohnsonNet::load(network, &device)?))
    }

    /// Sets the process-wide switches (threads, precision) once; the device.
    fn switches(&self) -> Result<candle_core::Device> {
        runtime::threads(self.threads);
        adain::conv::set_precision(self.precision);
        runtime::device(&self.device)
    }
}
