//! `adain eval`: score stylized images (the metrics are in `adain::eval`).

use std::collections::{BTreeSet, HashMap};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use clap::Args;
use image::{DynamicImage, Rgb32FImage, RgbImage};

use adain::conv::{with_precision, Precision};
use adain::engine::{Engine, Job, Request, Settings, Style};
use adain::eval::{self, Features, Metrics, PairScore, Protocol, Report, Section};
use adain::image_io;
use adain::image_io::Source;
use adain::johnson::JohnsonNet;
use adain::weights;
use adain::{runtime, Encoder, Model};

use adain::image_io::{collect_images, prepare, stem};

/// JPEG quality of sheet.jpg: 20 x 40 pairs at --thumb 96 stay near 2.5 MB.
const SHEET_QUALITY: u8 = 80;

const SCORING: &str = "Every image (content, style and output) is brought to SIZE x SIZE the same \
way: shorter side resized to SIZE (Catmull-Rom), then centre-cropped to a square; so outputs of \
any tool at any size are scored alike. Self-stylization runs at that size (as `adain stylize \
--crop --content-size SIZE --style-size SIZE`) and its output is scored as the 8-bit image it \
is saved as, so `--outputs` on saved PNGs reproduces the scores.";

#[derive(Args)]
#[command(
    after_long_help = format!("Score a stylizer on every content x style pair: the current decoder \
(default), or existing outputs of any tool (--outputs).\n\n{SCORING}\n\nMetrics (VGG-19 encoder): \
style_musigma = sum over relu1_1..relu4_1 of MSE(mean) + MSE(std), output vs style (the training \
style loss); style_gram = sum over the same layers of the MSE of Gram matrices normalised by \
C*H*W; content_in = MSE of instance-normalised relu4_1, output vs content; ssim = SSIM (Wang et \
al. 2004: Gaussian 11x11, sigma 1.5, K1 0.01, K2 0.03, data range 1, no downsampling) of the \
Rec. 601 luminance, output vs content; seconds = one stylization (self-stylization only). The \
same metrics for output = content and output = style frame the scale.\n\nWrites \
OUT/metrics.json, OUT/metrics.csv and OUT/sheet.jpg (rows = contents, columns = styles, in \
the order of `contents` and `styles` in metrics.json); existing report files need --overwrite.\n\n\
Without --outputs a decoder is needed, found as by `adain stylize` (--decoder, \
$ADAIN_WEIGHTS/decoder.safetensors when set, else weights/), or a per-style network (--model FILE, \
scored against each --style). With --outputs a pair without a file is an error \
naming the first missing file and the count, unless --allow-missing: then it is skipped, listed \
under `missing` in metrics.json, and left out of every set, baselines included.")
)]
pub struct EvalArgs {
    /// Content image, or a directory of them (searched recursively).
    #[arg(long, short = 'c')]
    content: PathBuf,
    /// Style image, or a directory of them (searched recursively).
    #[arg(long, short = 's')]
    style: PathBuf,
    /// Score the files in DIR instead of stylizing: `{content}_stylized_{style}.EXT`
    /// (any image extension) for every pair, made by any tool.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["decoder", "save_outputs", "network"])]
    outputs: Option<PathBuf>,
    /// Score a per-style network (Johnson et al., `adain stylize --model`)
    /// instead of the AdaIN decoder: each content is stylized once and scored
    /// against every --style (normally the one style it was trained on).
    #[arg(
        long = "model",
        id = "network",
        value_name = "FILE",
        conflicts_with = "decoder"
    )]
    network: Option<PathBuf>,
    /// With --outputs: skip pairs that have no file and list them in the report
    /// (default: a missing output is an error).
    #[arg(long, requires = "outputs")]
    allow_missing: bool,
    /// Report directory (metrics.json, metrics.csv, sheet.jpg).
    #[arg(
        long,
        short = 'o',
        value_name = "REPORT_DIR",
        default_value = "eval-report"
    )]
    out: PathBuf,
    /// Side of the square every image is scored at (the shared protocol: 512).
    #[arg(long, default_value_t = 512)]
    size: u32,
    /// Side of a contact-sheet thumbnail.
    #[arg(long, default_value_t = 96)]
    thumb: u32,
    /// Also save the self-stylized outputs in DIR as `{content}_stylized_{style}.EXT`.
    #[arg(long, value_name = "DIR")]
    save_outputs: Option<PathBuf>,
    /// Format of --save-outputs (png is lossless: the saved file scores the same).
    #[arg(long, default_value = "png", value_parser = ["png", "jpg", "webp"])]
    ext: String,
    /// VGG-19 encoder weights.
    #[arg(long)]
    vgg: Option<PathBuf>,
    /// Decoder weights (located like `adain stylize`; not used with --outputs).
    #[arg(long)]
    decoder: Option<PathBuf>,
    /// Style strength of the self-stylization, as `adain stylize --alpha`: scoring
    /// a few values traces the decoder's content/style trade-off.
    #[arg(long, short = 'a', default_value_t = 1.0, conflicts_with = "outputs")]
    alpha: f64,
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    device: String,
    /// Threads for the CPU kernels (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Convolution arithmetic of the stylization (as `adain stylize
    /// --precision`); the metrics are always computed in f32.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    precision: Precision,
    /// Replace report files (and --save-outputs files) that already exist.
    #[arg(long)]
    overwrite: bool,
    /// Print only the summary, warnings and errors.
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// An input image at the scoring size, encoded once.
struct Prepared {
    tensor: Tensor,
    features: Features,
    thumb: RgbImage,
}

/// `prepare` (shorter side to `size`, centre crop), clamped to [0,1].
fn to_square(pic: &image_io::Picture, size: u32) -> Rgb32FImage {
    let mut img = prepare(pic, size, true);
    img.pixels_mut()
        .for_each(|p| p.0 = p.0.map(|v| v.clamp(0.0, 1.0)));
    img
}

/// To 8 bits as `image_io::save` writes it.
fn quantize(img: &Rgb32FImage) -> RgbImage {
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        image::Rgb(
            img.get_pixel(x, y)
                .0
                .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8),
        )
    })
}

fn thumbnail(img: &Rgb32FImage, side: u32) -> RgbImage {
    image::imageops::thumbnail(&quantize(img), side, side)
}

fn encode(
    img: Rgb32FImage,
    path: &Path,
    encoder: &Encoder,
    thumb: u32,
    device: &Device,
) -> Result<Prepared> {
    let tensor = image_io::to_tensor(&img, device)?;
    let features =
        Features::new(encoder, &tensor).with_context(|| format!("{}: encoding", path.display()))?;
    Ok(Prepared {
        tensor,
        features,
        thumb: thumbnail(&img, thumb),
    })
}

/// File stems, which name the pairs: two inputs with the same stem are an error.
fn unique_stems(paths: &[PathBuf], what: &str) -> Result<Vec<String>> {
    let mut seen: HashMap<String, &PathBuf> = HashMap::new();
    for p in paths {
        if let Some(first) = seen.insert(stem(p), p) {
            bail!(
                "{}: another {what} image has the same name ({}): pairs are named by file stem",
                p.display(),
                first.display()
            );
        }
    }
    Ok(paths.iter().map(|p| stem(p)).collect())
}

/// The output file of every pair (`None`: missing), and the names of the missing.
type Found = (Vec<Vec<Option<PathBuf>>>, Vec<String>);

fn find_outputs(dir: &Path, cs: &[String], ss: &[String], allow_missing: bool) -> Result<Found> {
    if !dir.is_dir() {
        bail!("{}: no such outputs directory", dir.display());
    }
    let mut by_stem: HashMap<String, Vec<PathBuf>> = HashMap::new();
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?
    {
        let path = entry?.path();
        if path.is_file() && image_io::is_image_path(&path) {
            by_stem.entry(stem(&path)).or_default().push(path);
        }
    }
    let mut missing = Vec::new();
    let mut found = Vec::new();
    for c in cs {
        let mut row = Vec::new();
        for s in ss {
            let key = format!("{c}_stylized_{s}");
            row.push(match by_stem.get_mut(&key) {
                None => {
                    missing.push(key);
                    None
                }
                Some(v) if v.len() > 1 => {
                    v.sort();
                    let names: Vec<String> = v.iter().map(|p| p.display().to_string()).collect();
                    bail!(
                        "{}: several outputs for one pair: keep one",
                        names.join(", ")
                    );
                }
                Some(v) => Some(v[0].clone()),
            });
        }
        found.push(row);
    }
    let total = cs.len() * ss.len();
    if missing.len() == total {
        bail!(
            "{}: no outputs named {{content}}_stylized_{{style}}.EXT for these contents and styles \
             (looked for {}.jpg, .png, ...)",
            dir.display(),
            missing[0]
        );
    }
    if !missing.is_empty() && !allow_missing {
        bail!(
            "{}: missing output ({} of {total} pairs have no {{content}}_stylized_{{style}}.EXT \
             file; --allow-missing skips them)",
            dir.join(format!("{}.jpg", missing[0])).display(),
            missing.len()
        );
    }
    Ok((found, missing))
}

fn load_encoder(vgg: &weights::WeightSource, device: &Device) -> Result<Encoder> {
    let wf = vgg.load()?;
    wf.check(&weights::encoder_shapes())?;
    Ok(Encoder::new(VarBuilder::from_tensors(
        wf.on(device)?,
        DType::F32,
        device,
    ))?)
}

pub fn run(a: EvalArgs) -> Result<()> {
    if a.size < image_io::MIN_SIDE {
        bail!(
            "--size {}: at least {} px is needed",
            a.size,
            image_io::MIN_SIDE
        );
    }
    if !(8..=1024).contains(&a.thumb) {
        bail!("--thumb {}: must be between 8 and 1024", a.thumb);
    }
    if !(0.0..=1.0).contains(&a.alpha) {
        bail!("--alpha {}: must be between 0 and 1", a.alpha);
    }
    if a.network.is_some() && a.alpha != 1.0 {
        bail!("--alpha cannot be used with --model: a per-style network has no style strength");
    }
    runtime::threads(a.threads);
    let device = runtime::device(&a.device)?;

    let contents = collect_images(&a.content, "content")?;
    let styles = collect_images(&a.style, "style")?;
    let cnames = unique_stems(&contents, "content")?;
    let snames = unique_stems(&styles, "style")?;
    let (found, missing) = match &a.outputs {
        Some(dir) => {
            let (f, m) = find_outputs(dir, &cnames, &snames, a.allow_missing)?;
            (Some(f), m)
        }
        None => (None, Vec::new()),
    };

    // Every destination checked before any work.
    let inputs: BTreeSet<PathBuf> = contents
        .iter()
        .chain(&styles)
        .chain(found.iter().flatten().flatten().flatten())
        .filter_map(|p| p.canonicalize().ok())
        .collect();
    let report_files = ["metrics.json", "metrics.csv", "sheet.jpg"].map(|f| a.out.join(f));
    for p in &report_files {
        adain::atomic::check_destination(p, &inputs, a.overwrite)?;
    }
    let save_path = |i: usize, j: usize| -> Option<PathBuf> {
        a.save_outputs
            .as_ref()
            .map(|d| d.join(format!("{}_stylized_{}.{}", cnames[i], snames[j], a.ext)))
    };
    for i in 0..contents.len() {
        for j in 0..styles.len() {
            if let Some(p) = save_path(i, j) {
                adain::atomic::check_destination(&p, &inputs, a.overwrite)?;
            }
        }
    }

    let vgg = weights::locate_encoder(a.vgg.as_deref())?;
    let (model, encoder, source) = match &a.outputs {
        Some(dir) => (
            None,
            load_encoder(&vgg, &device)?,
            format!("files in {}", dir.display()),
        ),
        None if a.network.is_some() => {
            let net = a.network.as_deref().expect("checked");
            if !net.is_file() {
                bail!("{}: no such network file (--model)", net.display());
            }
            adain::conv::set_precision(a.precision);
            let engine = Engine::johnson(JohnsonNet::load(net, &device)?);
            let source = format!(
                "johnson (network {}, precision {})",
                net.display(),
                adain::conv::effective(a.precision)
            );
            (Some(engine), load_encoder(&vgg, &device)?, source)
        }
        None => {
            let decoder = weights::locate_decoder(a.decoder.as_deref())?;
            let engine = Engine::new(Model::from_sources(&vgg, &decoder, &device)?);
            let encoder = engine.model()?.encoder.clone();
            adain::conv::warn_if_unavailable(a.precision);
            let source = format!(
                "adain (decoder {}, precision {}, alpha {})",
                decoder.label().display(),
                adain::conv::effective(a.precision),
                a.alpha
            );
            (Some(engine), encoder, source)
        }
    };
    // Self-stylization through the engine, on the prepared squares (content
    // at its own size, as `adain stylize --content-size 0`).
    let settings = Settings {
        alpha: a.alpha,
        content_size: 0,
        ..Settings::default()
    };

    let load = |p: &Path| -> Result<Prepared> {
        let pic = image_io::load_checked(p)?;
        encode(to_square(&pic, a.size), p, &encoder, a.thumb, &device)
    };
    let cs = contents
        .iter()
        .map(|p| load(p))
        .collect::<Result<Vec<_>>>()?;
    let sources = match &model {
        Some(_) => cs
            .iter()
            .map(|c| {
                Ok(Source {
                    image: DynamicImage::ImageRgb32F(image_io::from_tensor(&c.tensor)?),
                    alpha: None,
                })
            })
            .collect::<Result<Vec<_>>>()?,
        None => Vec::new(),
    };

    let n_pairs = contents.len() * styles.len() - missing.len();
    let bar = indicatif::ProgressBar::new(n_pairs as u64);
    if a.quiet || n_pairs < 2 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("valid template"),
    );

    // (content index, style index, scores of: output, content as output, style as output)
    let mut scored: Vec<(usize, usize, PairScore, Metrics, Metrics)> = Vec::new();
    let mut tiles: Vec<Vec<Option<RgbImage>>> = vec![vec![None; styles.len()]; contents.len()];
    let mut style_thumbs = Vec::new();
    let mut warm = false;
    // --model: each content's output (and its time), made once
    let mut net_outputs: Vec<Option<(Rgb32FImage, f64)>> = vec![None; contents.len()];
    for (j, spath) in styles.iter().enumerate() {
        let st = load(spath)?;
        for (i, c) in cs.iter().enumerate() {
            let (out_img, seconds, output) = match (&found, &model) {
                (Some(found), _) => {
                    let Some(p) = &found[i][j] else { continue };
                    let pic = image_io::load(p)?;
                    (to_square(&pic, a.size), None, Some(p.display().to_string()))
                }
                (None, Some(_)) if net_outputs[i].is_some() => {
                    let (img, secs) = net_outputs[i].clone().expect("checked");
                    let saved = save_path(i, j);
                    if let Some(p) = &saved {
                        image_io::save(p, &img, None, a.overwrite)?;
                    }
                    (img, Some(secs), saved.map(|p| p.display().to_string()))
                }
                (None, Some(engine)) => {
                    let name = contents[i].display().to_string();
                    let style = [Arc::new(Style {
                        name: spath.display().to_string(),
                        tensor: st.tensor.clone(),
                        stats: None,
                    })];
                    let (styles_in, job): (&[Arc<Style>], Job) = match a.network {
                        Some(_) => (&[], Job::Network),
                        None => (&style, Job::Single(0)),
                    };
                    let request = Request {
                        content: &sources[i],
                        content_name: &name,
                        styles: styles_in,
                        job: &job,
                        masks: &[],
                        settings: &settings,
                    };
                    let run = || engine.stylize(&request, &mut |_| {});
                    if !warm {
                        // untimed warm-up (allocations, kernel selection)
                        with_precision(a.precision, run)?;
                        warm = true;
                    }
                    let t0 = Instant::now();
                    let out = with_precision(a.precision, run)?;
                    let secs = t0.elapsed().as_secs_f64();
                    // scored as the 8-bit image it is saved as
                    let img = DynamicImage::ImageRgb8(out).to_rgb32f();
                    if a.network.is_some() {
                        // the same output for every style
                        net_outputs[i] = Some((img.clone(), secs));
                    }
                    let saved = save_path(i, j);
                    if let Some(p) = &saved {
                        image_io::save(p, &img, None, a.overwrite)?;
                    }
                    (img, Some(secs), saved.map(|p| p.display().to_string()))
                }
                (None, None) => unreachable!("a model is loaded without --outputs"),
            };
            let what = output.clone().unwrap_or_else(|| "output".into());
            let o = encode(out_img, Path::new(&what), &encoder, a.thumb, &device)?;
            let m = eval::score(&o.features, &c.features, &st.features)
                .with_context(|| format!("{what}: scoring"))?;
            let as_content = eval::score(&c.features, &c.features, &st.features)?;
            let as_style = eval::score(&st.features, &c.features, &st.features)?;
            tiles[i][j] = Some(o.thumb);
            let pair = PairScore {
                content: cnames[i].clone(),
                style: snames[j].clone(),
                output,
                metrics: m,
                seconds,
            };
            scored.push((i, j, pair, as_content, as_style));
            bar.inc(1);
        }
        style_thumbs.push(st.thumb);
    }
    bar.finish_and_clear();
    scored.sort_by_key(|s| (s.0, s.1));

    let baseline = |pick: fn(&(usize, usize, PairScore, Metrics, Metrics)) -> Metrics| {
        Section::new(
            scored
                .iter()
                .map(|s| PairScore {
                    output: None,
                    metrics: pick(s),
                    seconds: None,
                    ..s.2.clone()
                })
                .collect(),
        )
    };
    let report = Report {
        protocol: Protocol::new(a.size),
        source,
        encoder: vgg.label().display().to_string(),
        contents: cnames,
        styles: snames,
        missing,
        output_is_content: baseline(|s| s.3),
        output_is_style: baseline(|s| s.4),
        stylized: Section::new(scored.into_iter().map(|s| s.2).collect()),
    };

    let json = serde_json::to_string_pretty(&report)? + "\n";
    let sheet = eval::contact_sheet(
        &cs.iter().map(|c| c.thumb.clone()).collect::<Vec<_>>(),
        &style_thumbs,
        &tiles,
        a.thumb,
    );
    let mut jpeg = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(sheet)
        .write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
            &mut jpeg,
            SHEET_QUALITY,
        ))
        .map_err(|e| anyhow!("{}: cannot encode ({e})", report_files[2].display()))?;
    let contents_of = [
        json.into_bytes(),
        report.to_csv().into_bytes(),
        jpeg.into_inner(),
    ];
    for (p, bytes) in report_files.iter().zip(&contents_of) {
        adain::atomic::write_with(p, a.overwrite, |w| Ok(std::io::Write::write_all(w, bytes)?))?;
    }

    print_summary(&report);
    if !a.quiet {
        eprintln!(
            "wrote {}, metrics.csv, sheet.jpg",
            report_files[0].display()
        );
    }
    Ok(())
}

fn print_summary(r: &Report) {
    let n = r.stylized.pairs.len();
    println!(
        "{:<24} {:>14} {:>14} {:>12} {:>8} {:>9}",
        format!("{n} pairs at {}px", r.protocol.size),
        "style_musigma",
        "style_gram",
        "content_in",
        "ssim",
        "s/image"
    );
    let rows = [
        ("stylized", &r.stylized),
        ("output = content", &r.output_is_content),
        ("output = style", &r.output_is_style),
    ];
    for (name, s) in rows {
        let m = &s.mean;
        let t = s
            .mean_seconds
            .map(|t| format!("{t:.3}"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{name:<24} {:>14.4} {:>14.4} {:>12.4} {:>8.4} {t:>9}",
            m.style_musigma, m.style_gram, m.content_in, m.ssim
        );
    }
    if !r.missing.is_empty() {
        println!("{} pairs had no output (skipped)", r.missing.len());
    }
}
