//! Johnson et al.'s per-style network as a [`Model`] for the trainer: a
//! `TransformerNet` (PyTorch's default init from the run's seed), trained
//! against one style image with the perceptual losses of
//! `adain::johnson::objective`, and its sample grid.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adain::johnson::objective::{Objective, Weights};
use adain::johnson::{self, TransformerNet};
use adain::{image_io, weights, Encoder};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use crate::checkpoint;
use crate::config::Config;
use crate::data::{self, Batch};
use crate::model::{init_convs, sorted_vars};
use crate::trainer::{Model, Terms};

/// The run's file with the latest network (`adain stylize --model` takes it).
pub const MODEL_FILE: &str = "model.safetensors";

pub struct JohnsonModel {
    encoder: Encoder,
    net: TransformerNet,
    params: Vec<(String, Var)>,
    device: Device,
    objective: Objective,
    style: Tensor,
    samples: Vec<Tensor>,
    encoder_sha: String,
    recipe: String,
    data_json: String,
}

impl JohnsonModel {
    /// `sample_files`: photos for the sample grid (rank 0), else `None`.
    pub fn new(
        cfg: &Config,
        encoder: Encoder,
        encoder_sha: String,
        device: Device,
        sample_files: Option<&[PathBuf]>,
        data_json: String,
    ) -> Result<Self> {
        let varmap = VarMap::new();
        let net = TransformerNet::new(VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
        let params = sorted_vars(&varmap);
        init(&params, cfg.seed)?;
        let style_path = Path::new(&cfg.style);
        let style = load_style(style_path, cfg.style_size, &device)?;
        let layer = adain::encoder::FEATURE_NAMES
            .iter()
            .position(|n| *n == cfg.content_layer)
            .context("content layer")?;
        let objective = Objective::new(
            &encoder,
            &style,
            layer,
            Weights {
                content: cfg.content_weight,
                style: cfg.style_weight,
                tv: cfg.tv_weight,
            },
        )?;
        let mut samples = Vec::new();
        if let Some(files) = sample_files {
            let n = 4.min(files.len());
            for k in 0..n {
                let mut rng = data::DetRng::from_parts(&[cfg.seed, 0x5a3, k as u64]);
                let f = &files[k * files.len() / n];
                if let Ok(v) = data::load_sample(f, cfg.load_size, cfg.crop_size, &mut rng) {
                    let s = cfg.crop_size as usize;
                    samples
                        .push(Tensor::from_vec(v, (1, 3, s, s), &Device::Cpu)?.to_device(&device)?);
                }
            }
        }
        Ok(Self {
            encoder,
            net,
            params,
            device,
            objective,
            style,
            samples,
            encoder_sha,
            recipe: cfg.recipe_json(),
            data_json,
        })
    }
}

/// The style image, shorter side brought down to `size` (never upscaled: a
/// blown-up painting has no strokes at that scale; 0: as it is), `[1,3,H,W]`
/// in `[0,1]`.
fn load_style(path: &Path, size: u32, device: &Device) -> Result<Tensor> {
    if path.is_dir() {
        anyhow::bail!(
            "{}: a Johnson network learns one style: give --style one image, not a directory",
            path.display()
        );
    }
    let pic = image_io::load_checked(path)?;
    let size = if pic.width().min(pic.height()) <= size {
        0
    } else {
        size
    };
    image_io::to_tensor(&image_io::prepare(&pic, size, false), device)
}

/// PyTorch's defaults: convs U(+-1/sqrt(fan_in)) from the seed, instance
/// norms' scale 1 and shift 0.
fn init(params: &[(String, Var)], seed: u64) -> Result<()> {
    let is_conv = |name: &str| {
        let prefix = name.rsplit_once('.').map(|p| p.0).unwrap_or("");
        params
            .iter()
            .any(|(n, v)| *n == format!("{prefix}.weight") && v.rank() == 4)
    };
    let (convs, norms): (Vec<_>, Vec<_>) = params.iter().cloned().partition(|(n, _)| is_conv(n));
    init_convs(&convs, seed, 0x70b5)?;
    for (name, v) in norms {
        let value = if name.ends_with(".weight") { 1.0 } else { 0.0 };
        v.set(&Tensor::full(value as f32, v.shape(), v.device())?)?;
    }
    Ok(())
}

impl Model for JohnsonModel {
    fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    fn losses(&self, batch: &Batch) -> Result<Terms> {
        let l = self.objective.losses(
            &self.encoder,
            &self.net,
            &batch.content.to_device(&self.device)?,
        )?;
        Ok(Terms {
            content: l.content,
            style: l.style,
            tv: Some(l.tv),
            temporal: None,
            total: l.total,
        })
    }

    fn write_samples(&self, path: &Path) -> Result<()> {
        if self.samples.is_empty() {
            return Ok(());
        }
        let outs = self
            .samples
            .iter()
            .map(|c| {
                Ok(johnson::stylize_with(&self.net, c)?
                    .clamp(0f32, 1f32)?
                    .detach())
            })
            .collect::<Result<Vec<_>>>()?;
        let rows: Vec<[&Tensor; 3]> = self
            .samples
            .iter()
            .zip(&outs)
            .map(|(c, o)| [c, &self.style, o])
            .collect();
        crate::plot::save_grid(path, &rows, 192)
    }

    fn metadata(&self, iteration: u64) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                weights::META_FORMAT.to_string(),
                johnson::FORMAT.to_string(),
            ),
            (weights::META_ITER.to_string(), iteration.to_string()),
            ("encoder_sha256".to_string(), self.encoder_sha.clone()),
            ("recipe".to_string(), self.recipe.clone()),
            (checkpoint::META_DATA.to_string(), self.data_json.clone()),
        ])
    }

    fn latest_file(&self) -> (&'static str, &'static str) {
        (MODEL_FILE, "--model")
    }
}
