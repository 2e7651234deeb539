//! The original neural style transfer (Gatys, Ecker & Bethge 2016): no
//! decoder; the output image itself is optimised so that its VGG features
//! match the content's and its Gram matrices (or AdaIN's mean/std statistics)
//! match the style's. Slow, but the quality reference the decoder is judged
//! against, and it needs nothing trained. `adain optimize`, `reconstruct` and
//! `grid` are built on [`Objective`] and [`run`].
//!
//! The objective, for an image x in [0,1] (all terms are means, so sizes and
//! layers are comparable):
//! - content: `mse(F_l(x), F_l(c))` at one layer l (Gatys: `1/2 sum`);
//! - style, Gram: `sum_l w_l mse(G_l(x), G_l(s))` with `G = F F^T / (C H W)`
//!   ([`crate::loss::gram`], as the PyTorch tutorial): Gatys's
//!   `E_l = 1/(4 N^2 M^2) sum (G - A)^2` with unnormalised Gram matrices is
//!   `C^2 / 4` times this term, so deep layers weigh relatively less here;
//! - style, mean/std: `sum_l w_l (mse(mu_l(x), mu_l(s)) + mse(sigma_l(x), sigma_l(s)))`
//!   ([`crate::loss::style_musigma`], AdaIN's statistics);
//! - total variation: `mean((x[i+1,j] - x[i,j])^2) + mean((x[i,j+1] - x[i,j])^2)`
//!   (squared differences: smooth, which L-BFGS needs);
//! - total = `content_weight * content + style_weight * style + tv_weight * tv`.
//!
//! Several styles blend their targets (Gram matrices, or means and stds) with
//! weights summing to 1: for these quadratic losses that has the same gradient
//! as the weighted sum of the per-style losses.
//!
//! Pixels stay in [0,1]: the image is clamped in place before every
//! evaluation (as the PyTorch tutorial's closure does) and once more at the end.
//! The encoder ends at relu4_1, so the layers are relu1_1, relu2_1, relu3_1 and
//! relu4_1; Gatys's conv4_2 (content) and relu5_1 (style) do not exist here.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};

use crate::adain::mean_std;
use crate::encoder::FEATURE_NAMES;
use crate::loss::{gram, mse};
use crate::optim::{Adam, AdamConfig, Lbfgs, LbfgsConfig, LbfgsIteration, LbfgsStop};
use crate::Encoder;

/// Index (0..4) of a layer name of [`FEATURE_NAMES`].
pub fn layer_index(name: &str) -> Result<usize> {
    let name = name.trim();
    FEATURE_NAMES
        .iter()
        .position(|l| l.eq_ignore_ascii_case(name))
        .with_context(|| {
            format!(
                "unknown layer `{name}`: the encoder has {} (it ends at relu4_1, so conv4_2 and relu5_1 do not exist)",
                FEATURE_NAMES.join(", ")
            )
        })
}

/// Parses `relu1_1,relu2_1:0.5,...`: layers with optional weights (default
/// 1). A layer may appear once.
pub fn parse_layers(spec: &str) -> Result<Vec<(usize, f64)>> {
    let mut out: Vec<(usize, f64)> = Vec::new();
    for item in spec.split(',').map(str::trim) {
        if item.is_empty() {
            bail!("`{spec}`: empty layer name");
        }
        let (name, weight) = match item.split_once(':') {
            Some((n, w)) => {
                let w: f64 = w
                    .trim()
                    .parse()
                    .ok()
                    .filter(|w: &f64| w.is_finite() && *w >= 0.0)
                    .with_context(|| {
                        format!("`{item}`: layer weight `{w}` is not a non-negative number")
                    })?;
                (n, w)
            }
            None => (item, 1.0),
        };
        let l = layer_index(name)?;
        if out.iter().any(|(i, _)| *i == l) {
            bail!("`{spec}`: layer {} appears twice", FEATURE_NAMES[l]);
        }
        out.push((l, weight));
    }
    Ok(out)
}

/// `relu1_1,relu2_1:0.5` from parsed layers (weights of 1 left out).
pub fn layers_label(layers: &[(usize, f64)]) -> String {
    layers
        .iter()
        .map(|&(l, w)| {
            if w == 1.0 {
                FEATURE_NAMES[l].to_string()
            } else {
                format!("{}:{w}", FEATURE_NAMES[l])
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Which statistics the style term matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StyleLoss {
    /// Gram matrices `F F^T / (C H W)`, as Gatys et al.
    #[default]
    Gram,
    /// Per-channel mean and std, as AdaIN's training loss.
    Musigma,
}

/// Where the optimisation starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// The content image.
    #[default]
    Content,
    /// Uniform noise in [0,1] (from --seed), as Gatys's reconstructions.
    Noise,
    /// The (first) style image, resized to the output's size.
    Style,
}

/// Weights and layers of the objective.
#[derive(Debug, Clone, PartialEq)]
pub struct LossConfig {
    /// Index into relu1_1..relu4_1.
    pub content_layer: usize,
    pub content_weight: f64,
    /// (layer index, weight) pairs.
    pub style_layers: Vec<(usize, f64)>,
    pub style_weight: f64,
    pub tv_weight: f64,
    pub style_loss: StyleLoss,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            content_layer: 3,
            content_weight: 1.0,
            style_layers: (0..4).map(|l| (l, 1.0)).collect(),
            style_weight: DEFAULT_STYLE_WEIGHT,
            tv_weight: 0.0,
            style_loss: StyleLoss::Gram,
        }
    }
}

/// Default `--style-weight` for Gram losses with the default layers, chosen by
/// eye on pairs of the shared eval set (1 barely changes the content, 1e3
/// leaves little of it at 256 px after a few hundred L-BFGS iterations).
pub const DEFAULT_STYLE_WEIGHT: f64 = 10.0;

/// The loss terms at one image (unweighted, but the style term includes the
/// per-layer weights) and the weighted total.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Terms {
    pub content: f64,
    pub style: f64,
    pub tv: f64,
    pub total: f64,
}

/// The same terms as tensors, still attached to the graph of the image.
pub struct TermTensors {
    pub content: Tensor,
    pub style: Tensor,
    pub tv: Tensor,
    pub total: Tensor,
}

impl TermTensors {
    pub fn values(&self) -> Result<Terms> {
        let v = |t: &Tensor| -> Result<f64> { Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?) };
        Ok(Terms {
            content: v(&self.content)?,
            style: v(&self.style)?,
            tv: v(&self.tv)?,
            total: v(&self.total)?,
        })
    }
}

enum StyleTarget {
    Gram(Tensor),
    MuSigma { mean: Tensor, std: Tensor },
}

/// The Gatys objective for one content and one or more styles. The encoder is
/// frozen (plain tensors), so gradients reach only the image.
pub struct Objective {
    encoder: Encoder,
    cfg: LossConfig,
    content: Option<Tensor>,
    /// One target per entry of `cfg.style_layers`.
    style: Vec<StyleTarget>,
}

impl Objective {
    /// `content`: [1,3,H,W] in [0,1], or `None` for no content term (style
    /// reconstruction). `styles`: images with blend weights (normalised
    /// here), or empty for no style term (content reconstruction).
    pub fn new(
        encoder: &Encoder,
        cfg: LossConfig,
        content: Option<&Tensor>,
        styles: &[(Tensor, f64)],
    ) -> Result<Self> {
        for (what, w) in [
            ("content weight", cfg.content_weight),
            ("style weight", cfg.style_weight),
            ("tv weight", cfg.tv_weight),
        ] {
            if !(w.is_finite() && w >= 0.0) {
                bail!("{what} {w}: must be a non-negative number");
            }
        }
        if cfg.content_layer >= FEATURE_NAMES.len() {
            bail!("content layer index {} out of range", cfg.content_layer);
        }
        if !styles.is_empty() && cfg.style_layers.is_empty() {
            bail!("no style layers");
        }
        if let Some(&(l, _)) = cfg.style_layers.iter().find(|(l, _)| *l >= 4) {
            bail!("style layer index {l} out of range");
        }
        if content.is_none() && styles.is_empty() {
            bail!("nothing to optimise for: no content and no style");
        }
        let content = match content {
            Some(c) => Some(encoder.features(c)?[cfg.content_layer].detach()),
            None => None,
        };
        let sum: f64 = styles.iter().map(|s| s.1).sum();
        if !styles.is_empty()
            && (styles.iter().any(|s| !(s.1.is_finite() && s.1 >= 0.0)) || sum <= 0.0)
        {
            bail!("style blend weights must be non-negative with a positive sum");
        }
        let mut style = Vec::new();
        if !styles.is_empty() {
            let feats = styles
                .iter()
                .map(|(s, w)| Ok((encoder.features(s)?, w / sum)))
                .collect::<Result<Vec<_>>>()?;
            for &(l, _) in &cfg.style_layers {
                let blend = |f: &dyn Fn(&Tensor) -> Result<Tensor>| -> Result<Tensor> {
                    let mut acc: Option<Tensor> = None;
                    for (fs, w) in &feats {
                        let t = (f(&fs[l])? * *w)?;
                        acc = Some(match acc {
                            None => t,
                            Some(a) => (a + t)?,
                        });
                    }
                    Ok(acc.expect("at least one style").detach())
                };
                style.push(match cfg.style_loss {
                    StyleLoss::Gram => StyleTarget::Gram(blend(&|f| Ok(gram(f)?))?),
                    StyleLoss::Musigma => StyleTarget::MuSigma {
                        mean: blend(&|f| Ok(mean_std(f)?.mean))?,
                        std: blend(&|f| Ok(mean_std(f)?.std))?,
                    },
                });
            }
        }
        Ok(Self {
            encoder: encoder.clone(),
            cfg,
            content,
            style,
        })
    }

    pub fn config(&self) -> &LossConfig {
        &self.cfg
    }

    /// All terms at the image `x` [1,3,H,W] (attached to `x`'s graph).
    pub fn terms(&self, x: &Tensor) -> Result<TermTensors> {
        let feats = self.encoder.features(x)?;
        let zero = Tensor::zeros((), DType::F32, x.device())?;
        let content = match &self.content {
            Some(c) => mse(&feats[self.cfg.content_layer], c)?,
            None => zero.clone(),
        };
        let mut style = zero.clone();
        for (&(l, w), target) in self.cfg.style_layers.iter().zip(&self.style) {
            let term = match target {
                StyleTarget::Gram(g) => mse(&gram(&feats[l])?, g)?,
                StyleTarget::MuSigma { mean, std } => {
                    let s = mean_std(&feats[l])?;
                    (mse(&s.mean, mean)? + mse(&s.std, std)?)?
                }
            };
            style = (style + (term * w)?)?;
        }
        let tv = tv_loss(x)?;
        let total = ((&content * self.cfg.content_weight)?
            + (&style * self.cfg.style_weight)?
            + (&tv * self.cfg.tv_weight)?)?;
        Ok(TermTensors {
            content,
            style,
            tv,
            total,
        })
    }

    /// The terms at `x` and the gradient of the total with respect to `x`.
    pub fn value_and_grad(&self, x: &Tensor) -> Result<(Terms, Tensor)> {
        let var = Var::from_tensor(&x.detach())?;
        let t = self.terms(var.as_tensor())?;
        let grads = t.total.backward()?;
        let g = match grads.get(var.as_tensor()) {
            Some(g) => g.clone(),
            None => var.as_tensor().zeros_like()?,
        };
        Ok((t.values()?, g))
    }
}

/// Total variation with squared differences:
/// `mean((x[i+1,j] - x[i,j])^2) + mean((x[i,j+1] - x[i,j])^2)` over all
/// channels, for [N,C,H,W].
pub fn tv_loss(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if h < 2 || w < 2 {
        bail!("total variation of a {h}x{w} image");
    }
    let dy = (x.narrow(2, 1, h - 1)? - x.narrow(2, 0, h - 1)?)?;
    let dx = (x.narrow(3, 1, w - 1)? - x.narrow(3, 0, w - 1)?)?;
    Ok((dy.sqr()?.mean_all()? + dx.sqr()?.mean_all()?)?)
}

/// Uniform noise in [0,1], [1,3,h,w], reproducible from `seed`.
pub fn noise(h: usize, w: usize, seed: u64, device: &Device) -> Result<Tensor> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let data: Vec<f32> = (0..3 * h * w).map(|_| rng.random::<f32>()).collect();
    Ok(Tensor::from_vec(data, (1, 3, h, w), device)?)
}

/// The starting image of size (h, w): the content, noise, or the style
/// resized to (h, w).
pub fn init_image(
    init: Init,
    content: Option<&Tensor>,
    style: Option<&Tensor>,
    (h, w): (usize, usize),
    seed: u64,
    device: &Device,
) -> Result<Tensor> {
    match init {
        Init::Content => {
            let c = content.context("--init content needs a content image")?;
            if c.dims4()? != (1, 3, h, w) {
                bail!("content is {:?}, the output {h}x{w}", c.dims());
            }
            Ok(c.clone())
        }
        Init::Noise => noise(h, w, seed, device),
        Init::Style => {
            let s = style.context("--init style needs a style image")?;
            let img = crate::image_io::from_tensor(s)?;
            let img = crate::image_io::resize(&img, w as u32, h as u32);
            crate::image_io::to_tensor(&img, device)
        }
    }
}

/// The optimiser and its settings.
#[derive(Debug, Clone)]
pub enum Method {
    /// L-BFGS; `max_iter` is replaced by the iteration count of [`run`]
    /// (all iterations in one torch-style `step`, as Gatys implementations do).
    Lbfgs(LbfgsConfig),
    /// Adam with a constant learning rate.
    Adam { lr: f64 },
}

/// What the callback of [`run`] sees after each iteration.
pub struct Progress<'a> {
    /// Iterations done (1-based).
    pub iter: usize,
    /// Objective evaluations so far (one VGG forward + backward each).
    pub evals: usize,
    /// The terms at the latest evaluated point (for Adam the point before the
    /// step; `None` when nothing new was evaluated).
    pub terms: Option<Terms>,
    x: &'a [f32],
    dims: (usize, usize, usize, usize),
    device: &'a Device,
}

impl Progress<'_> {
    /// The current image, clamped to [0,1].
    pub fn image(&self) -> Result<Tensor> {
        Ok(Tensor::from_slice(self.x, self.dims, self.device)?.clamp(0f32, 1f32)?)
    }
}

/// Why [`run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// All iterations done.
    Done,
    /// L-BFGS stopped early on one of its tolerances (converged or no progress).
    Converged,
    /// The callback asked to stop.
    Stopped,
}

/// The result of [`run`].
pub struct Outcome {
    /// The final image [1,3,H,W], clamped to [0,1].
    pub image: Tensor,
    pub iterations: usize,
    pub evals: usize,
    pub ending: Ending,
}

fn clamp01(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = v.clamp(0.0, 1.0);
    }
}

/// Optimises the image from `init` for `iters` iterations. `on_iter` runs
/// after each iteration; `Ok(false)` stops (the image so far is returned).
pub fn run<C>(
    obj: &Objective,
    init: &Tensor,
    iters: usize,
    method: &Method,
    mut on_iter: C,
) -> Result<Outcome>
where
    C: FnMut(&Progress) -> Result<bool>,
{
    let dims = init.dims4()?;
    if dims.1 != 3 {
        bail!("the image must have 3 channels, not {}", dims.1);
    }
    let device = init.device().clone();
    let mut x: Vec<f32> = init.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    match method {
        Method::Lbfgs(cfg) => {
            let mut opt = Lbfgs::new(LbfgsConfig {
                max_iter: iters,
                ..cfg.clone()
            })?;
            // Terms of the evaluations of the current iteration, to find those
            // of the point the line search kept.
            let evaluated = std::cell::RefCell::new(Vec::<Terms>::new());
            let mut failure: Option<anyhow::Error> = None;
            let report = opt.step(
                &mut x,
                |x: &mut [f32]| {
                    clamp01(x);
                    let t = Tensor::from_slice(x, dims, &device)?;
                    let (terms, g) = obj.value_and_grad(&t)?;
                    evaluated.borrow_mut().push(terms);
                    Ok((terms.total, g.flatten_all()?.to_vec1::<f32>()?))
                },
                |it: LbfgsIteration| {
                    let terms = it.loss.and_then(|l| {
                        evaluated
                            .borrow()
                            .iter()
                            .rev()
                            .find(|t| t.total.to_bits() == l.to_bits())
                            .copied()
                    });
                    evaluated.borrow_mut().clear();
                    let p = Progress {
                        iter: it.iter,
                        evals: it.evals,
                        terms,
                        x: it.x,
                        dims,
                        device: &device,
                    };
                    match on_iter(&p) {
                        Ok(go) => go,
                        Err(e) => {
                            failure = Some(e);
                            false
                        }
                    }
                },
            )?;
            if let Some(e) = failure {
                return Err(e);
            }
            clamp01(&mut x);
            let ending = match report.stop {
                LbfgsStop::MaxIter => Ending::Done,
                LbfgsStop::Stopped => Ending::Stopped,
                // MaxEval: torch's evaluation budget (max_iter * 5/4) ran out
                LbfgsStop::MaxEval => Ending::Done,
                _ => Ending::Converged,
            };
            Ok(Outcome {
                image: Tensor::from_vec(x, dims, &device)?,
                iterations: report.iterations,
                evals: report.evals,
                ending,
            })
        }
        Method::Adam { lr } => {
            if !(*lr > 0.0 && lr.is_finite()) {
                bail!("Adam: learning rate {lr} must be positive");
            }
            let var = Var::from_tensor(&Tensor::from_vec(x, dims, &device)?)?;
            let mut adam = Adam::new(
                vec![("image".into(), var.clone())],
                AdamConfig {
                    lr: *lr,
                    lr_decay: 0.0,
                    ..Default::default()
                },
            )?;
            let mut ending = Ending::Done;
            let mut done = 0;
            for i in 1..=iters {
                var.set(&var.as_tensor().clamp(0f32, 1f32)?)?;
                let t = obj.terms(var.as_tensor())?;
                let terms = t.values()?;
                let grads = t.total.backward()?;
                adam.step_grads(&grads)?;
                done = i;
                let x = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
                let p = Progress {
                    iter: i,
                    evals: i,
                    terms: Some(terms),
                    x: &x,
                    dims,
                    device: &device,
                };
                if !on_iter(&p)? {
                    ending = Ending::Stopped;
                    break;
                }
            }
            Ok(Outcome {
                image: var.as_tensor().clamp(0f32, 1f32)?,
                iterations: done,
                evals: done,
                ending,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_specs() {
        assert_eq!(
            parse_layers("relu1_1, relu3_1:0.5").unwrap(),
            vec![(0, 1.0), (2, 0.5)]
        );
        assert_eq!(layers_label(&[(0, 1.0), (2, 0.5)]), "relu1_1,relu3_1:0.5");
        for bad in [
            "conv4_2",
            "relu5_1",
            "relu1_1,relu1_1",
            "relu2_1:-1",
            "relu2_1:x",
            "",
        ] {
            let e = format!("{:#}", parse_layers(bad).unwrap_err());
            assert!(e.contains('`'), "{bad}: {e}");
        }
        let e = format!("{:#}", layer_index("conv4_2").unwrap_err());
        assert!(e.contains("conv4_2") && e.contains("relu4_1"), "{e}");
    }

    #[test]
    fn tv_of_a_ramp() -> Result<()> {
        // x[i,j] = i: vertical differences all 1, horizontal 0
        let x = Tensor::arange(0f32, 4., &Device::Cpu)?
            .reshape((1, 1, 4, 1))?
            .repeat((1, 3, 1, 5))?;
        let tv = tv_loss(&x)?.to_scalar::<f32>()?;
        assert!((tv - 1.0).abs() < 1e-6, "{tv}");
        Ok(())
    }

    #[test]
    fn noise_is_seeded_and_in_range() -> Result<()> {
        let a = noise(4, 5, 7, &Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let b = noise(4, 5, 7, &Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let c = noise(4, 5, 8, &Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
        Ok(())
    }
}
