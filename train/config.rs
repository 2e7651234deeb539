//! Training configuration: defaults (the reference recipe), a TOML file with the
//! same keys as the flags (`--config`), then the flags given on the command line.
//! The resolved config is written into the run directory as `config.toml`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// What is trained: `adain` (the decoder, for every style) or `johnson`
    /// (a per-style network; `style` is then one image).
    pub model: String,
    /// Photos: a name resolves to data/<name>/, a path is taken as is.
    pub content: String,
    /// Paintings: same rule.
    pub style: String,
    pub lr: f64,
    pub lr_decay: f64,
    pub max_iter: u64,
    pub batch_size: usize,
    pub style_weight: f64,
    pub content_weight: f64,
    pub load_size: u32,
    pub crop_size: u32,
    pub save_every: u64,
    pub log_every: u64,
    pub sample_every: u64,
    /// Checkpoints kept (the newest K).
    pub keep: usize,
    pub seed: u64,
    pub threads: usize,
    /// Convolution arithmetic on the CPU: f32, or bf16 on AMX (see `adain bench`).
    pub precision: adain::conv::Precision,
    pub device: String,
    /// Encoder weights (default: the usual weights/ lookup).
    pub vgg: Option<PathBuf>,
    /// Start a new run from this decoder's weights instead of random ones.
    pub init_decoder: Option<PathBuf>,
    /// Johnson: total-variation weight (0: reported, not trained on).
    pub tv_weight: f64,
    /// Johnson: the encoder layer of the content loss.
    pub content_layer: String,
    /// Johnson: the style image's shorter side for the Gram targets (0: its own
    /// size). It sets the scale of the strokes the network learns to paint, in
    /// output pixels, independent of the crop size.
    pub style_size: u32,
    /// AdaIN: weight of the compound temporal regulariser (0: off; `temporal.rs`).
    pub temporal_weight: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            model: "adain".into(),
            content: "coco".into(),
            style: "wikiart".into(),
            lr: 1e-4,
            lr_decay: 5e-5,
            max_iter: 160_000,
            batch_size: 8,
            style_weight: DEFAULT_STYLE_WEIGHT,
            content_weight: 1.0,
            load_size: 512,
            crop_size: 256,
            save_every: 10_000,
            log_every: 10,
            sample_every: 1_000,
            keep: 3,
            seed: 0,
            threads: 0,
            precision: adain::conv::Precision::F32,
            device: "cpu".into(),
            vgg: None,
            init_decoder: None,
            tv_weight: 0.0,
            content_layer: "relu2_1".into(),
            style_size: 0,
            temporal_weight: 0.0,
        }
    }
}

/// Johnson's recipe where it differs from AdaIN's (seed 003 and PyTorch's
/// `fast_neural_style`: Adam at 1e-3 without decay, batch 4, 256 px crops of
/// photos resized to 256, two epochs of COCO's 80k = 40k steps). The style
/// weight puts the style term at about ten times the content term on the
/// first steps, as the example's 1e10/1e5 does on its VGG-16; our encoder's
/// raw VGG-19 features have other scales. Measured at the start of a run
/// (styleid_wikiart_03, batch 4 at 256 px, weights 1 and 1): content 3.0e4,
/// style 8.7e5, so 0.3. Provisional until a pilot compares weights.
pub fn johnson_defaults() -> Config {
    Config {
        model: "johnson".into(),
        lr: 1e-3,
        lr_decay: 0.0,
        max_iter: 40_000,
        batch_size: 4,
        style_weight: JOHNSON_STYLE_WEIGHT,
        content_weight: 1.0,
        load_size: 256,
        crop_size: 256,
        save_every: 1_000,
        sample_every: 500,
        style_size: JOHNSON_STYLE_SIZE,
        ..Config::default()
    }
}

pub const JOHNSON_STYLE_WEIGHT: f64 = 0.3;

/// The style image's shorter side for a Johnson network: 512, the size the
/// network is meant to stylize at (eval's protocol), so its strokes have the
/// painting's scale there; fast_neural_style keeps the file's own size, which
/// for a large scan means very small strokes and a costly first encode.
pub const JOHNSON_STYLE_SIZE: u32 = 512;

/// See README "Loss balance" and scripts/loss_balance.py: the reference's 10 was tuned for `vgg_normalised`;
/// on the raw VGG-19 the style terms are larger relative to the content term.
pub const DEFAULT_STYLE_WEIGHT: f64 = 50.0;

impl Config {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!("{}: {}", path.display(), e.to_string().replace('\n', " "))
        })
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serialises")
    }

    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0
            || self.max_iter == 0
            || self.save_every == 0
            || self.log_every == 0
            || self.sample_every == 0
        {
            bail!("--batch-size, --max-iter, --save-every, --log-every and --sample-every must be positive");
        }
        if self.crop_size < 16 || self.load_size < self.crop_size {
            bail!("--crop-size must be at least 16 and --load-size at least --crop-size");
        }
        match self.model.as_str() {
            "adain" if self.tv_weight != 0.0 => {
                bail!("--tv-weight is for `adain-train johnson`")
            }
            "adain" if self.style_size != 0 => {
                bail!("--style-size is for `adain-train johnson` (the decoder's styles are cropped like its photos)")
            }
            "adain" => {}
            "johnson" if self.temporal_weight != 0.0 => {
                bail!("--temporal-weight is for the AdaIN decoder (`adain-train`), not `adain-train johnson`")
            }
            "johnson" => {
                if self.crop_size % 4 != 0 {
                    bail!("--crop-size must be a multiple of 4 for a Johnson network");
                }
                if !adain::encoder::FEATURE_NAMES.contains(&self.content_layer.as_str()) {
                    bail!(
                        "--content-layer {}: expected one of {}",
                        self.content_layer,
                        adain::encoder::FEATURE_NAMES.join(", ")
                    );
                }
                if self.tv_weight < 0.0 || self.tv_weight.is_nan() {
                    bail!("--tv-weight must be non-negative");
                }
            }
            other => bail!("model `{other}`: expected adain or johnson"),
        }
        if self.lr.is_nan()
            || self.lr <= 0.0
            || self.lr_decay < 0.0
            || self.style_weight < 0.0
            || self.content_weight < 0.0
            || self.temporal_weight < 0.0
            || self.temporal_weight.is_nan()
        {
            bail!("--lr must be positive; --lr-decay and the loss weights non-negative");
        }
        Ok(())
    }

    /// `coco` -> `<project>/data/coco/` when no such path exists as given.
    pub fn resolve_data(name: &str) -> PathBuf {
        let p = PathBuf::from(name);
        if p.exists() || p.components().count() > 1 {
            return p;
        }
        let local = Path::new("data").join(name);
        if local.exists() {
            return local;
        }
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("data")
            .join(name)
    }

    /// The recipe as recorded in a decoder's metadata.
    pub fn recipe_json(&self) -> String {
        serde_json::json!({
            "lr": self.lr, "lr_decay": self.lr_decay, "max_iter": self.max_iter,
            "batch_size": self.batch_size, "style_weight": self.style_weight,
            "model": self.model, "style": self.style, "tv_weight": self.tv_weight,
            "content_layer": self.content_layer, "style_size": self.style_size,
            "temporal_weight": self.temporal_weight,
            "content_weight": self.content_weight, "load_size": self.load_size,
            "crop_size": self.crop_size, "seed": self.seed,
            "init_decoder": self.init_decoder,
        })
        .to_string()
    }
}
