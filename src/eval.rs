//! Scoring stylized images (`adain eval`): style and content metrics computed
//! with the VGG encoder, SSIM, the report and the contact sheet.
//!
//! For an output `o` of a content `c` and a style `s` (all [1,3,H,W] in [0,1]):
//! - `style_musigma`: sum over relu1_1..relu4_1 of MSE(mean) + MSE(std) between
//!   `o` and `s`: the training style loss, [`crate::loss::style_musigma`];
//! - `style_gram`: sum over the same layers of the MSE between Gram matrices
//!   normalised by C*H*W ([`crate::loss::gram`]);
//! - `content_in`: MSE between the instance-normalised relu4_1 of `o` and of `c`
//!   (`(f - mean) / std` per channel with [`crate::adain::mean_std`]): structure
//!   with the style statistics removed;
//! - `ssim`: SSIM (Wang et al. 2004) of the Rec. 601 luminance of `o` and `c`
//!   ([`crate::color::luminance`]): 11x11 Gaussian window with sigma 1.5,
//!   K1 = 0.01, K2 = 0.03, data range 1, mean over the positions whose window lies
//!   inside the image, no downsampling: scikit-image's `structural_similarity(...,
//!   gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)`.
//!
//! Lower is better for the first three, higher for `ssim` (1 = identical).

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use image::imageops::FilterType;
use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use crate::adain::{mean_std, Stats};
use crate::color;
use crate::loss::{gram, mse};
use crate::Encoder;

/// SSIM window side, Gaussian sigma and constants (Wang et al. 2004).
pub const SSIM_WINDOW: usize = 11;
pub const SSIM_SIGMA: f64 = 1.5;
pub const SSIM_K1: f64 = 0.01;
pub const SSIM_K2: f64 = 0.03;

/// The four metrics of one (output, content, style) triple.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Metrics {
    pub style_musigma: f64,
    pub style_gram: f64,
    pub content_in: f64,
    pub ssim: f64,
}

/// Metric names, in report order.
pub const METRIC_NAMES: [&str; 4] = ["style_musigma", "style_gram", "content_in", "ssim"];

impl Metrics {
    pub fn values(&self) -> [f64; 4] {
        [
            self.style_musigma,
            self.style_gram,
            self.content_in,
            self.ssim,
        ]
    }
}

/// A grey plane (row-major, `w * h` values).
#[derive(Debug, Clone)]
pub struct Plane {
    pub w: usize,
    pub h: usize,
    pub data: Vec<f64>,
}

impl Plane {
    /// The Rec. 601 luminance of an RGB tensor [1,3,H,W].
    pub fn luminance(rgb: &Tensor) -> Result<Self> {
        let (n, c, h, w) = rgb.dims4()?;
        if n != 1 || c != 3 {
            bail!(
                "luminance: expected one RGB image [1,3,H,W], got {:?}",
                rgb.dims()
            );
        }
        let data = color::luminance(rgb)?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        Ok(Self { w, h, data })
    }
}

/// Everything the metrics need of one image, computed once: the per-channel
/// mean and std and the Gram matrix of relu1_1..relu4_1, the instance-normalised
/// relu4_1 and the luminance. An image can then play any role (output, content
/// or style) without another pass through the encoder.
pub struct Features {
    pub stats: Vec<Stats>,
    pub grams: Vec<Tensor>,
    /// relu4_1 with its per-channel mean and std removed.
    pub relu4_1_in: Tensor,
    pub luma: Plane,
}

impl Features {
    /// Encodes `image` ([1,3,H,W] in [0,1]).
    pub fn new(encoder: &Encoder, image: &Tensor) -> Result<Self> {
        let feats = encoder.features(image)?;
        let stats = feats
            .iter()
            .map(mean_std)
            .collect::<candle_core::Result<Vec<_>>>()?;
        let grams = feats
            .iter()
            .map(gram)
            .collect::<candle_core::Result<Vec<_>>>()?;
        let relu4_1_in = instance_norm(&feats[3], &stats[3])?;
        Ok(Self {
            stats,
            grams,
            relu4_1_in,
            luma: Plane::luminance(image)?,
        })
    }
}

/// `(f - mean) / std` per sample and channel.
fn instance_norm(feat: &Tensor, s: &Stats) -> candle_core::Result<Tensor> {
    feat.broadcast_sub(&s.mean)?.broadcast_div(&s.std)
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// The style loss of the training objective on precomputed statistics: equal to
/// [`crate::loss::style_musigma`] of the features (a unit test checks it).
pub fn style_musigma(output: &[Stats], style: &[Stats]) -> Result<f64> {
    let mut total = 0.0;
    for (o, s) in output.iter().zip(style) {
        total += scalar(&mse(&o.mean, &s.mean)?)? + scalar(&mse(&o.std, &s.std)?)?;
    }
    Ok(total)
}

/// Sum over the layers of the MSE between Gram matrices.
pub fn style_gram(output: &[Tensor], style: &[Tensor]) -> Result<f64> {
    let mut total = 0.0;
    for (o, s) in output.iter().zip(style) {
        total += scalar(&mse(o, s)?)?;
    }
    Ok(total)
}

/// The normalised 1-D Gaussian of the SSIM window.
fn gaussian_window() -> [f64; SSIM_WINDOW] {
    let r = (SSIM_WINDOW / 2) as f64;
    let mut g = [0.0; SSIM_WINDOW];
    for (i, v) in g.iter_mut().enumerate() {
        let x = i as f64 - r;
        *v = (-x * x / (2.0 * SSIM_SIGMA * SSIM_SIGMA)).exp();
    }
    let sum: f64 = g.iter().sum();
    g.map(|v| v / sum)
}

/// Separable 'valid' filtering of a w x h plane with `k` in both directions.
fn filter_valid(data: &[f64], w: usize, h: usize, k: &[f64]) -> Vec<f64> {
    let n = k.len();
    let (ow, oh) = (w + 1 - n, h + 1 - n);
    let mut rows = vec![0.0; ow * h];
    for y in 0..h {
        let src = &data[y * w..(y + 1) * w];
        for x in 0..ow {
            rows[y * ow + x] = k.iter().zip(&src[x..x + n]).map(|(a, b)| a * b).sum();
        }
    }
    let mut out = vec![0.0; ow * oh];
    for y in 0..oh {
        for (i, kv) in k.iter().enumerate() {
            let src = &rows[(y + i) * ow..(y + i + 1) * ow];
            for (o, s) in out[y * ow..(y + 1) * ow].iter_mut().zip(src) {
                *o += kv * s;
            }
        }
    }
    out
}

/// SSIM of two grey planes of the same size (values in [0,1]); see the module doc.
pub fn ssim(a: &Plane, b: &Plane) -> Result<f64> {
    if (a.w, a.h) != (b.w, b.h) {
        bail!("ssim: images are {}x{} and {}x{}", a.w, a.h, b.w, b.h);
    }
    let (w, h) = (a.w, a.h);
    if w < SSIM_WINDOW || h < SSIM_WINDOW {
        bail!("ssim: image is {w}x{h}, at least {SSIM_WINDOW} px per side is needed");
    }
    let k = gaussian_window();
    let prod = |f: fn(f64, f64) -> f64| -> Vec<f64> {
        a.data.iter().zip(&b.data).map(|(&x, &y)| f(x, y)).collect()
    };
    let mx = filter_valid(&a.data, w, h, &k);
    let my = filter_valid(&b.data, w, h, &k);
    let mxx = filter_valid(&prod(|x, _| x * x), w, h, &k);
    let myy = filter_valid(&prod(|_, y| y * y), w, h, &k);
    let mxy = filter_valid(&prod(|x, y| x * y), w, h, &k);
    let (c1, c2) = (SSIM_K1 * SSIM_K1, SSIM_K2 * SSIM_K2);
    let mut sum = 0.0;
    for i in 0..mx.len() {
        let (ux, uy) = (mx[i], my[i]);
        let vx = mxx[i] - ux * ux;
        let vy = myy[i] - uy * uy;
        let cxy = mxy[i] - ux * uy;
        sum +=
            ((2.0 * ux * uy + c1) * (2.0 * cxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2));
    }
    Ok(sum / mx.len() as f64)
}

/// Scores `output` against its `content` and `style` (see the module doc).
/// Output and content must have the same size; the style may have any size.
pub fn score(output: &Features, content: &Features, style: &Features) -> Result<Metrics> {
    if (output.luma.w, output.luma.h) != (content.luma.w, content.luma.h) {
        bail!(
            "output is {}x{} but the content is {}x{}",
            output.luma.w,
            output.luma.h,
            content.luma.w,
            content.luma.h
        );
    }
    Ok(Metrics {
        style_musigma: style_musigma(&output.stats, &style.stats)?,
        style_gram: style_gram(&output.grams, &style.grams)?,
        content_in: scalar(&mse(&output.relu4_1_in, &content.relu4_1_in)?)?,
        ssim: ssim(&output.luma, &content.luma)?,
    })
}

/// [`score`] of three images ([1,3,H,W] in [0,1]), encoding each.
pub fn score_images(
    encoder: &Encoder,
    output: &Tensor,
    content: &Tensor,
    style: &Tensor,
) -> Result<Metrics> {
    score(
        &Features::new(encoder, output)?,
        &Features::new(encoder, content)?,
        &Features::new(encoder, style)?,
    )
}

/// One scored pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairScore {
    pub content: String,
    pub style: String,
    /// The scored file (`--outputs`), or where the output was saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(flatten)]
    pub metrics: Metrics,
    /// Seconds to stylize this pair (self-stylization only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

/// The pairs of one set and their means.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Section {
    pub mean: Metrics,
    /// Mean seconds per stylized image, when timed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_seconds: Option<f64>,
    pub pairs: Vec<PairScore>,
}

impl Section {
    pub fn new(pairs: Vec<PairScore>) -> Self {
        let n = pairs.len().max(1) as f64;
        let mut m = [0.0; 4];
        for p in &pairs {
            for (acc, v) in m.iter_mut().zip(p.metrics.values()) {
                *acc += v / n;
            }
        }
        let secs: Vec<f64> = pairs.iter().filter_map(|p| p.seconds).collect();
        let mean_seconds =
            (!secs.is_empty() && secs.len() == pairs.len()).then(|| secs.iter().sum::<f64>() / n);
        Self {
            mean: Metrics {
                style_musigma: m[0],
                style_gram: m[1],
                content_in: m[2],
                ssim: m[3],
            },
            mean_seconds,
            pairs,
        }
    }
}

/// How the images were brought to the scoring size, and what each metric is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Protocol {
    pub size: u32,
    pub transform: String,
    /// Metric name -> what it measures.
    pub metrics: BTreeMap<String, String>,
}

impl Protocol {
    pub fn new(size: u32) -> Self {
        let d = |a: &str, b: &str| (a.to_string(), b.to_string());
        Self {
            size,
            transform: format!(
                "content, style and output: shorter side resized to {size} (Catmull-Rom), centre \
                 crop to {size}x{size}, clamped to [0,1]; a self-stylized output is scored as the \
                 8-bit image it is saved as"
            ),
            metrics: BTreeMap::from([
                d(
                    "style_musigma",
                    "sum over relu1_1..relu4_1 of MSE(mean) + MSE(std), output vs style (the \
                     training style loss); lower = closer to the style",
                ),
                d(
                    "style_gram",
                    "sum over relu1_1..relu4_1 of the MSE of Gram matrices normalised by C*H*W, \
                     output vs style; lower = closer to the style",
                ),
                d(
                    "content_in",
                    "MSE of instance-normalised relu4_1, output vs content; lower = closer to \
                     the content's structure",
                ),
                d(
                    "ssim",
                    "SSIM (Wang et al. 2004; Gaussian 11x11, sigma 1.5, K1 0.01, K2 0.03, data \
                     range 1) of the Rec. 601 luminance, output vs content; 1 = identical",
                ),
                d(
                    "seconds",
                    "wall time of one stylization (self-stylization only)",
                ),
            ]),
        }
    }
}

/// `metrics.json`: the scored outputs and the two framing baselines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub protocol: Protocol,
    /// What made the outputs: `adain (decoder PATH)` or `files in DIR`.
    pub source: String,
    pub encoder: String,
    pub contents: Vec<String>,
    pub styles: Vec<String>,
    /// `{content}_stylized_{style}` pairs with no output (`--allow-missing`).
    pub missing: Vec<String>,
    pub stylized: Section,
    /// Baseline: the content itself as the output (no stylization).
    pub output_is_content: Section,
    /// Baseline: the style image itself as the output.
    pub output_is_style: Section,
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

impl Report {
    /// Set names of the CSV (and the JSON keys of the sections).
    pub fn sections(&self) -> [(&'static str, &Section); 3] {
        [
            ("stylized", &self.stylized),
            ("output_is_content", &self.output_is_content),
            ("output_is_style", &self.output_is_style),
        ]
    }

    /// `metrics.csv`: `set,row,content,style,<metrics>,seconds`; `row` is `pair`,
    /// or `mean` (content and style empty) for the averages of the set.
    pub fn to_csv(&self) -> String {
        let mut out = format!("set,row,content,style,{},seconds\n", METRIC_NAMES.join(","));
        let line = |row: [&str; 4], m: &Metrics, t: Option<f64>| -> String {
            let v: Vec<String> = m.values().iter().map(|x| x.to_string()).collect();
            let t = t.map(|x| x.to_string()).unwrap_or_default();
            let [set, kind, c, s] = row;
            format!(
                "{set},{kind},{},{},{},{t}\n",
                csv_field(c),
                csv_field(s),
                v.join(",")
            )
        };
        for (name, sec) in self.sections() {
            for p in &sec.pairs {
                out += &line([name, "pair", &p.content, &p.style], &p.metrics, p.seconds);
            }
            out += &line([name, "mean", "", ""], &sec.mean, sec.mean_seconds);
        }
        out
    }
}

/// Contact sheet: rows = contents, columns = styles; the contents in the left
/// margin and the styles in the top margin, every picture a `thumb` square
/// (a missing output is a grey square), with a white gap after the margins.
pub fn contact_sheet(
    contents: &[RgbImage],
    styles: &[RgbImage],
    outputs: &[Vec<Option<RgbImage>>],
    thumb: u32,
) -> RgbImage {
    let gap = (thumb / 16).max(2);
    let (nc, ns) = (contents.len() as u32, styles.len() as u32);
    let w = thumb * (ns + 1) + gap;
    let h = thumb * (nc + 1) + gap;
    let mut sheet = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    let fit = |img: &RgbImage| -> RgbImage {
        if img.dimensions() == (thumb, thumb) {
            img.clone()
        } else {
            image::imageops::resize(img, thumb, thumb, FilterType::Triangle)
        }
    };
    let grey = RgbImage::from_pixel(thumb, thumb, Rgb([128, 128, 128]));
    let at = |i: u32| i64::from(thumb * (i + 1) + gap);
    for (j, s) in styles.iter().enumerate() {
        image::imageops::replace(&mut sheet, &fit(s), at(j as u32), 0);
    }
    for (i, c) in contents.iter().enumerate() {
        let y = at(i as u32);
        image::imageops::replace(&mut sheet, &fit(c), 0, y);
        for j in 0..styles.len() {
            let o = outputs
                .get(i)
                .and_then(|r| r.get(j))
                .and_then(|o| o.as_ref());
            let tile = o.map(fit).unwrap_or_else(|| grey.clone());
            image::imageops::replace(&mut sheet, &tile, at(j as u32), y);
        }
    }
    sheet
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use std::path::Path;

    fn encoder() -> Option<Encoder> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut c = vec![root.join("weights/vgg19-relu4_1.safetensors")];
        if let Some(d) = std::env::var_os("ADAIN_WEIGHTS") {
            c.insert(0, Path::new(&d).join("vgg19-relu4_1.safetensors"));
        }
        c.push(root.join("../shared/weights/vgg19-relu4_1.safetensors"));
        let p = c.into_iter().find(|p| p.is_file())?;
        let wf = crate::weights::WeightFile::load(&p).unwrap();
        let vb = candle_nn::VarBuilder::from_tensors(wf.tensors, DType::F32, &Device::Cpu);
        Some(Encoder::new(vb).unwrap())
    }

    fn image(seed: u64, h: usize, w: usize) -> Tensor {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let v: Vec<f32> = (0..3 * h * w)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 40) % 256) as f32 / 255.0
            })
            .collect();
        Tensor::from_vec(v, (1, 3, h, w), &Device::Cpu).unwrap()
    }

    fn plane(t: &Tensor) -> Plane {
        Plane::luminance(t).unwrap()
    }

    #[test]
    fn ssim_matches_skimage() {
        // tests/fixtures/ssim.safetensors: scripts/ssim_reference.py (scikit-image,
        // cross-checked there against a torch implementation).
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ssim.safetensors");
        let f = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
        let mut n = 0;
        while let Some(a) = f.get(&format!("a{n}")) {
            let b = &f[&format!("b{n}")];
            let want = f[&format!("ssim{n}")].to_vec1::<f64>().unwrap()[0];
            let got = ssim(&plane(a), &plane(b)).unwrap();
            // luminance in f32 here, f64 in the reference
            eprintln!("case {n}: {got:.10} vs skimage {want:.10}");
            assert!(
                (got - want).abs() < 1e-7,
                "case {n}: {got} vs skimage {want}"
            );
            n += 1;
        }
        assert_eq!(n, 3, "fixture cases");
    }

    #[test]
    fn ssim_of_identical_is_one_and_is_symmetric() {
        let (a, b) = (plane(&image(1, 20, 23)), plane(&image(2, 20, 23)));
        assert!((ssim(&a, &a).unwrap() - 1.0).abs() < 1e-12);
        let (ab, ba) = (ssim(&a, &b).unwrap(), ssim(&b, &a).unwrap());
        assert!((ab - ba).abs() < 1e-12);
        assert!(ab < 0.5, "unrelated noise: {ab}");
        assert!(ssim(&a, &plane(&image(1, 20, 22))).is_err());
        assert!(ssim(&plane(&image(1, 10, 30)), &plane(&image(2, 10, 30))).is_err());
    }

    #[test]
    fn style_musigma_is_the_training_loss() {
        let Some(enc) = encoder() else {
            eprintln!("skipped: no VGG weights");
            return;
        };
        let (o, s) = (image(3, 32, 40), image(4, 24, 24));
        let (fo, fs) = (enc.features(&o).unwrap(), enc.features(&s).unwrap());
        let want = scalar(&crate::loss::style_musigma(&fo, &fs).unwrap()).unwrap();
        let (o, s) = (
            Features::new(&enc, &o).unwrap(),
            Features::new(&enc, &s).unwrap(),
        );
        let got = style_musigma(&o.stats, &s.stats).unwrap();
        assert!(want > 0.0);
        assert!((got - want).abs() <= 1e-6 * want, "{got} vs {want}");
    }

    #[test]
    fn identical_images_score_zero_and_one() {
        let Some(enc) = encoder() else {
            eprintln!("skipped: no VGG weights");
            return;
        };
        let (c, s) = (image(5, 32, 32), image(6, 32, 32));
        // output = content: content metrics exact
        let m = score_images(&enc, &c, &c, &s).unwrap();
        assert_eq!(m.content_in, 0.0);
        assert!((m.ssim - 1.0).abs() < 1e-12);
        assert!(m.style_musigma > 0.0 && m.style_gram > 0.0);
        // output = style: style metrics exact
        let m = score_images(&enc, &s, &c, &s).unwrap();
        assert_eq!((m.style_musigma, m.style_gram), (0.0, 0.0));
        assert!(m.content_in > 0.0 && m.ssim < 0.5);
        // a brightness change of the content keeps its structure better than the style
        let c2 = c.affine(0.8, 0.1).unwrap();
        let m2 = score_images(&enc, &c2, &c, &s).unwrap();
        assert!(m2.content_in < m.content_in && m2.ssim > m.ssim);
        // mismatched output size is an error, not a panic
        assert!(score_images(&enc, &image(7, 24, 32), &c, &s).is_err());
    }

    #[test]
    fn report_means_and_csv() {
        let p = |c: &str, v: f64, t: Option<f64>| PairScore {
            content: c.into(),
            style: "s".into(),
            output: None,
            metrics: Metrics {
                style_musigma: v,
                style_gram: 2.0 * v,
                content_in: 3.0 * v,
                ssim: 1.0 - v,
            },
            seconds: t,
        };
        let sec = Section::new(vec![p("a", 1.0, Some(2.0)), p("b,c", 3.0, Some(4.0))]);
        assert_eq!(sec.mean.style_musigma, 2.0);
        assert_eq!(sec.mean.ssim, -1.0);
        assert_eq!(sec.mean_seconds, Some(3.0));
        let untimed = Section::new(vec![p("a", 1.0, None)]);
        assert_eq!(untimed.mean_seconds, None);
        let r = Report {
            protocol: Protocol::new(32),
            source: "test".into(),
            encoder: "vgg".into(),
            contents: vec!["a".into(), "b,c".into()],
            styles: vec!["s".into()],
            missing: vec![],
            stylized: sec,
            output_is_content: untimed.clone(),
            output_is_style: untimed,
        };
        let csv = r.to_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "set,row,content,style,style_musigma,style_gram,content_in,ssim,seconds"
        );
        assert_eq!(lines[2], "stylized,pair,\"b,c\",s,3,6,9,-2,4");
        assert_eq!(lines[3], "stylized,mean,,,2,4,6,-1,3");
        assert_eq!(lines.len(), 1 + 3 + 2 + 2);
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), r);
    }

    #[test]
    fn contact_sheet_layout() {
        let solid = |v: u8, s: u32| RgbImage::from_pixel(s, s, Rgb([v, v, v]));
        let contents = vec![solid(10, 20), solid(20, 20)];
        let styles = vec![solid(30, 20), solid(40, 20), solid(50, 20)];
        let outputs = vec![vec![Some(solid(60, 20)), None, Some(solid(70, 20))]; 2];
        let t = 16;
        let sheet = contact_sheet(&contents, &styles, &outputs, t);
        let gap = 2;
        assert_eq!(sheet.dimensions(), (4 * t + gap, 3 * t + gap));
        let px = |x: u32, y: u32| sheet.get_pixel(x, y)[0];
        assert_eq!(px(1, 1), 255, "corner is blank");
        assert_eq!(px(t + gap + 1, 1), 30, "first style on top");
        assert_eq!(px(3 * t + gap + 1, 1), 50, "last style on top");
        assert_eq!(px(1, 2 * t + gap + 1), 20, "second content on the left");
        assert_eq!(px(t + gap + 1, t + gap + 1), 60);
        assert_eq!(
            px(2 * t + gap + 1, t + gap + 1),
            128,
            "missing output is grey"
        );
        assert_eq!(px(3 * t + gap + 1, 2 * t + gap + 1), 70);
    }
}
