//! The AdaIN decoder as a [`Model`] for the trainer: its variables (PyTorch's
//! default init from the run's seed, or a published decoder), its losses
//! (`adain::loss::losses`, the paper's) and its sample grid.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adain::weights;
use adain::{Decoder, Encoder};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use crate::checkpoint;
use crate::config::Config;
use crate::data::{self, Batch};
use crate::temporal;
use crate::trainer::{Model, Terms};

pub struct AdainDecoder {
    encoder: Encoder,
    decoder: Decoder,
    params: Vec<(String, Var)>,
    device: Device,
    content_weight: f64,
    style_weight: f64,
    /// `--temporal-weight` (0: the regulariser is not computed).
    temporal_weight: f64,
    seed: u64,
    samples: Option<SamplePairs>,
    /// Decoder metadata without the iteration: encoder hash, recipe, data.
    encoder_sha: String,
    recipe: String,
    data_json: String,
}

pub struct Setup<'a> {
    pub cfg: &'a Config,
    pub encoder: Encoder,
    pub encoder_path: &'a Path,
    pub encoder_sha: String,
    pub device: Device,
    /// Files for the sample grid (rank 0 only; `None` elsewhere).
    pub sample_files: Option<(&'a [PathBuf], &'a [PathBuf])>,
    pub data_json: String,
    /// Whether a checkpoint will overwrite the initial weights.
    pub resuming: bool,
}

impl AdainDecoder {
    pub fn new(s: Setup) -> Result<Self> {
        let varmap = VarMap::new();
        let decoder = Decoder::new(VarBuilder::from_varmap(&varmap, DType::F32, &s.device))?;
        let params = sorted_vars(&varmap);
        init_decoder(&params, s.cfg.seed)?;
        if let (Some(file), false) = (&s.cfg.init_decoder, s.resuming) {
            warm_start(&params, file, s.encoder_path, &s.encoder_sha)?;
        }
        let samples = match s.sample_files {
            Some((content, style)) => Some(SamplePairs::new(
                content, style, s.cfg, &s.encoder, &s.device,
            )?),
            None => None,
        };
        Ok(Self {
            encoder: s.encoder,
            decoder,
            params,
            device: s.device,
            content_weight: s.cfg.content_weight,
            style_weight: s.cfg.style_weight,
            temporal_weight: s.cfg.temporal_weight,
            seed: s.cfg.seed,
            samples,
            encoder_sha: s.encoder_sha,
            recipe: s.cfg.recipe_json(),
            data_json: s.data_json,
        })
    }
}

impl Model for AdainDecoder {
    fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    fn losses(&self, batch: &Batch) -> Result<Terms> {
        let style = batch
            .style
            .as_ref()
            .context("a batch without style images")?;
        let content = batch.content.to_device(&self.device)?;
        let l = adain::loss::losses(
            &self.encoder,
            &self.decoder,
            &content,
            &style.to_device(&self.device)?,
        )?;
        let mut total = l.total(self.content_weight, self.style_weight)?;
        let mut temporal = None;
        if self.temporal_weight > 0.0 {
            // The motion and noise of this batch, from the seed and its index
            // (a resumed run draws the same ones).
            let mut rng = data::DetRng::from_parts(&[self.seed, 0x7e3b0_4a1, batch.index]);
            let (b, c, h, w) = content.dims4()?;
            let warp = temporal::Warp::random(b, h, w, &mut rng, &self.device)?;
            let noise = temporal::noise((b, c, h, w), temporal::NOISE_STD, &mut rng, &self.device)?;
            let moved = (warp.apply(&content)? + noise)?.clamp(0f32, 1f32)?;
            let term = adain::loss::compound_temporal(
                &self.encoder,
                &self.decoder,
                &moved,
                &l.style_relu4_1,
                &warp.apply(&l.output)?,
                &warp.valid,
            )?;
            total = (total + (&term * self.temporal_weight)?)?;
            temporal = Some(term);
        }
        Ok(Terms {
            content: l.content,
            style: l.style,
            tv: None,
            temporal,
            total,
        })
    }

    fn write_samples(&self, path: &Path) -> Result<()> {
        match &self.samples {
            Some(s) => s.write(&self.decoder, path),
            None => Ok(()),
        }
    }

    fn metadata(&self, iteration: u64) -> BTreeMap<String, String> {
        let mut m = weights::decoder_metadata(&self.encoder_sha, &self.recipe, iteration);
        m.insert(checkpoint::META_DATA.into(), self.data_json.clone());
        m
    }

    fn latest_file(&self) -> (&'static str, &'static str) {
        (weights::DECODER_FILE, "--decoder")
    }
}

pub fn sorted_vars(varmap: &VarMap) -> Vec<(String, Var)> {
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
    init_convs(params, seed, 0xdec0de)
}

/// PyTorch's default init for every `*.weight` / `*.bias` pair of a conv
/// (fan-in from the weight), from `(seed, salt, index)`; names are
/// `PREFIX.weight` / `PREFIX.bias`.
pub fn init_convs(params: &[(String, Var)], seed: u64, salt: u64) -> Result<()> {
    for (i, (name, var)) in params.iter().enumerate() {
        let prefix = name.rsplit_once('.').map(|p| p.0).unwrap_or("");
        let fan_in = params
            .iter()
            .find(|(n, _)| *n == format!("{prefix}.weight"))
            .map(|(_, w)| w.dims()[1..].iter().product::<usize>())
            .context("weight of a bias")?;
        let bound = 1.0 / (fan_in as f64).sqrt();
        let mut rng = data::DetRng::from_parts(&[seed, salt, i as u64]);
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
        crate::plot::save_grid(path, &rows, 192)
    }
}
