//! `adain video` and `adain eval-video`: flags onto [`adain::video`], a
//! progress bar, a summary line.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use adain::engine::{Limits, Settings};
use adain::eval::Features;
use adain::image_io;
use adain::video::{self, ffmpeg, Codec, Flicker, StyleInput, Temporal, VideoJob, VideoProgress};
use adain::ColorMode;

use super::common::ModelArgs;

#[derive(Args)]
#[command(after_help = "Examples:
  adain video -c clip.mp4 -s painting.jpg -o clip-styled.mp4
  adain video -c clip.mp4 -s a.jpg -s b.jpg --style-weights 1,1 --temporal stats -o out.webm
  adain video -c long.mp4 -s painting.jpg -o out.mp4 --resume     # after Ctrl-C or a crash

Needs ffmpeg and ffprobe on PATH. The output keeps the input's frame count, exact frame
rate, size, rotation and audio streams (copied; re-encoded only where the container
cannot hold them). Work is written in segments beside the output (.NAME.adain-parts/);
the output appears only when complete.")]
pub struct VideoArgs {
    /// Content video.
    #[arg(long, short = 'c', required = true)]
    content: PathBuf,
    /// Style image(s), or a video (its frame i styles frame i; lengths must
    /// match): repeat the flag or give a comma list.
    #[arg(long, short = 's', required = true, value_delimiter = ',')]
    style: Vec<PathBuf>,
    /// Output video: .mp4 (H.264), .webm (VP9), .mkv or .mov.
    #[arg(long, short = 'o', required = true)]
    output: PathBuf,
    /// Style strength: 0 = the content as the decoder reconstructs it, 1 = full style.
    #[arg(long, short = 'a', default_value_t = 1.0)]
    alpha: f64,
    /// Blend all styles with these weights (normalised to sum 1).
    #[arg(long, value_delimiter = ',')]
    style_weights: Option<Vec<f64>>,
    /// Keep the content's colours: `coral` (default) or `luminance`.
    #[arg(long, num_args = 0..=1, default_missing_value = "coral", value_enum)]
    preserve_color: Option<ColorMode>,
    /// Spatial control, the same for every frame: one mask per style, or one label image
    /// (the video's size).
    #[arg(long)]
    mask: Vec<PathBuf>,
    /// Stylize at this shorter side (0 = the video's own size); the output always has the
    /// input's size.
    #[arg(long, default_value_t = 0)]
    content_size: u32,
    /// Resize the styles' shorter side to N (0 = keep).
    #[arg(long, default_value_t = 512)]
    style_size: u32,
    /// Temporal stability: `none` (each frame alone: flickers), `stats` (content statistics
    /// smoothed: no colour pumping), `flow` (the previous output carried along the optical
    /// flow: the least flicker; see the README's table).
    #[arg(long, value_enum, default_value_t = Temporal::Flow)]
    temporal: Temporal,
    /// How much of the warped previous output `--temporal flow` keeps where the flow is
    /// trusted (0..1).
    #[arg(long, default_value_t = video::temporal::FLOW_STRENGTH)]
    flow_strength: f32,
    /// How `--temporal flow` blends the warped previous output in: `keep-contrast` scales the
    /// blend's detail back to the frame's own contrast (no blur where textures do not line
    /// up); `plain` averages (steadier, blurrier).
    #[arg(long, value_enum, default_value_t = video::blend::Blend::KeepContrast)]
    flow_blend: video::blend::Blend,
    /// Video codec [default: by extension: H.264, VP9 for .webm].
    #[arg(long, value_enum)]
    codec: Option<Codec>,
    /// Quality (lower = better, larger) [default: 18 for H.264, 31 for VP9].
    #[arg(long)]
    crf: Option<u32>,
    /// Seconds per segment: the unit of --resume.
    #[arg(long, default_value_t = 4.0)]
    segment: f64,
    /// Frames per segment (overrides --segment).
    #[arg(long)]
    segment_frames: Option<u64>,
    /// Continue an interrupted job from its last complete segment.
    #[arg(long)]
    resume: bool,
    /// Also measure the warping error (Farneback flow) and the style metrics of sampled
    /// frames (slower).
    #[arg(long)]
    metrics: bool,
    /// Write the summary as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// Refuse inputs whose frames, styles or masks have more pixels than this.
    #[arg(long, default_value_t = adain::image_io::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
    /// Working-memory budget of the network: larger frames are stylized in tiles.
    #[arg(long, default_value = "1GiB", value_parser = adain::runtime::parse_size)]
    max_memory: u64,
    /// Replace the output if it exists.
    #[arg(long)]
    overwrite: bool,
    /// Print only warnings and errors.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub fn run(a: VideoArgs) -> Result<()> {
    let settings = Settings {
        alpha: a.alpha,
        style_weights: a.style_weights.clone(),
        color: a.preserve_color.unwrap_or(ColorMode::None),
        masks: a.mask.clone(),
        content_size: a.content_size,
        style_size: a.style_size,
        crop: false,
        limits: Limits {
            max_pixels: a.max_pixels,
            max_memory: a.max_memory,
            tile: None,
        },
    };
    if !(a.segment > 0.0) {
        bail!("--segment {}: must be positive", a.segment);
    }
    ffmpeg::check_installed()?;
    let probe = ffmpeg::probe(&a.content)?;
    let segment_frames = a
        .segment_frames
        .unwrap_or_else(|| (a.segment * probe.rate.as_f64()).round().max(1.0) as u64);
    let job = VideoJob {
        input: a.content.clone(),
        output: a.output.clone(),
        styles: a.style.iter().map(|p| StyleInput::of(p)).collect(),
        settings,
        temporal: a.temporal,
        flow_strength: a.flow_strength,
        flow_blend: a.flow_blend,
        codec: a.codec,
        crf: a.crf,
        segment_frames,
        resume: a.resume,
        overwrite: a.overwrite,
        metrics: a.metrics,
    };
    let engine = Arc::new(a.model.engine()?);
    video::flow::set_threads(a.model.threads);
    // Every frame allocates and frees the same layer buffers: kept in the heap,
    // they are not faulted in again per frame (see `keep_freed_memory`).
    adain::alloc::keep_freed_memory();

    let bar = ProgressBar::new(0);
    if a.quiet {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} frames, {per_sec} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("valid template"),
    );
    let s = video::run(engine, &job, &mut |p| match p {
        VideoProgress::Start { probe, total, from } => {
            bar.set_length(total);
            bar.set_position(from);
            bar.reset_eta();
            if !a.quiet {
                bar.suspend(|| {
                    eprintln!(
                        "{}: {}x{}, {} fps, {} frames{}, {} audio stream(s){}",
                        probe.path.display(),
                        probe.width,
                        probe.height,
                        probe.rate,
                        probe.frames,
                        if probe.frames_exact {
                            ""
                        } else {
                            " (estimated)"
                        },
                        probe.audio.len(),
                        if from > 0 {
                            format!("; resuming at frame {}", from + 1)
                        } else {
                            String::new()
                        }
                    )
                });
            }
        }
        VideoProgress::Frame { done } => {
            if done > bar.length().unwrap_or(0) {
                bar.set_length(done);
            }
            bar.set_position(done);
        }
        VideoProgress::Muxing => bar.set_message("joining segments and audio"),
    })?;
    bar.finish_and_clear();
    if !a.quiet {
        let mut line = format!(
            "wrote {}: {} frames, {} stylized in {:.1} s ({:.2} fps)",
            a.output.display(),
            s.frames,
            s.stylized,
            s.seconds,
            s.fps
        );
        if let Some(e) = s.e_fd {
            line.push_str(&format!(", E_fd {e:.5}"));
        }
        if let Some(e) = s.e_warp {
            line.push_str(&format!(", warping error {e:.5}"));
        }
        if let Some(m) = &s.style {
            line.push_str(&format!(
                ", style_musigma {:.4e}, content_in {:.3}",
                m.style_musigma, m.content_in
            ));
        }
        eprintln!("{line}");
    }
    if let Some(p) = &a.json {
        adain::atomic::write_bytes(p, serde_json::to_string_pretty(&s)?.as_bytes())?;
    }
    Ok(())
}

#[derive(Args)]
#[command(after_help = "Example:
  adain eval-video --input clip.mp4 --output clip-styled.mp4 --style painting.jpg

E_fd: mean over t of mean(((O_t - O_{t-1}) - (I_t - I_{t-1}))^2), RGB in [0,1].
Warping error: mean squared difference between O_t and O_{t-1} warped along the input's
Farneback flow, over pixels whose flow is forward-backward consistent (Lai et al. 2018).
Style metrics: adain eval's, averaged over --samples frames spread over the clip.")]
pub struct EvalVideoArgs {
    /// The input video.
    #[arg(long)]
    input: PathBuf,
    /// The stylized video (any tool's), same frame count and size.
    #[arg(long)]
    output: PathBuf,
    /// The style image, for the style metrics (omit to measure flicker only).
    #[arg(long)]
    style: Option<PathBuf>,
    /// Style image size (shorter side) for the style metrics.
    #[arg(long, default_value_t = 512)]
    style_size: u32,
    /// Frames sampled for the style metrics.
    #[arg(long, default_value_t = 8)]
    samples: u64,
    /// Write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
}

pub fn eval(a: EvalVideoArgs) -> Result<()> {
    ffmpeg::check_installed()?;
    let pi = ffmpeg::probe(&a.input)?;
    let po = ffmpeg::probe(&a.output)?;
    if (pi.width, pi.height) != (po.width, po.height) {
        bail!(
            "{}: is {}x{} but the input {} is {}x{}",
            a.output.display(),
            po.width,
            po.height,
            a.input.display(),
            pi.width,
            pi.height
        );
    }
    video::flow::set_threads(a.model.threads);
    let engine = match &a.style {
        Some(_) => Some(a.model.engine()?),
        None => None,
    };
    let style_feats = match (&engine, &a.style) {
        (Some(e), Some(p)) => {
            let pic = image_io::load_checked(p)?;
            let t = image_io::to_tensor(&image_io::prepare(&pic, a.style_size, false), e.device())?;
            Some(Features::new(&e.model()?.encoder, &t)?)
        }
        _ => None,
    };
    let every = (pi.frames / a.samples.max(1)).max(1);
    let mut ri = ffmpeg::FrameReader::open(&pi)?;
    let mut ro = ffmpeg::FrameReader::open(&po)?;
    let mut flicker = Flicker::new(true);
    let mut scores = Vec::new();
    let mut n = 0u64;
    loop {
        match (ri.next_frame()?, ro.next_frame()?) {
            (Some(i), Some(o)) => {
                flicker.add(&i, &o)?;
                if let (Some(e), Some(sf)) = (&engine, &style_feats) {
                    if n % every == 0 {
                        let dev = e.device();
                        let to =
                            |im: &image::RgbImage| image_io::to_tensor(&video::to_f32(im), dev);
                        let enc = &e.model()?.encoder;
                        scores.push(adain::eval::score(
                            &Features::new(enc, &to(&o)?)?,
                            &Features::new(enc, &to(&i)?)?,
                            sf,
                        )?);
                    }
                }
                n += 1;
            }
            (None, None) => break,
            _ => bail!(
                "{} and {} have different frame counts",
                a.input.display(),
                a.output.display()
            ),
        }
    }
    let mean = |f: fn(&adain::eval::Metrics) -> f64| {
        (!scores.is_empty()).then(|| scores.iter().map(f).sum::<f64>() / scores.len() as f64)
    };
    let out = serde_json::json!({
        "frames": n,
        "e_fd": flicker.e_fd(),
        "e_warp": flicker.e_warp(),
        "style_musigma": mean(|m| m.style_musigma),
        "style_gram": mean(|m| m.style_gram),
        "content_in": mean(|m| m.content_in),
        "ssim": mean(|m| m.ssim),
        "sampled": scores.len(),
    });
    let f = |k: &str| match out[k].as_f64() {
        Some(v) => format!("{v:.5e}"),
        None => "-".into(),
    };
    println!(
        "{}: {n} frames  E_fd {}  warping error {}  style_musigma {}  content_in {}  ({} frames scored)",
        a.output.display(),
        f("e_fd"),
        f("e_warp"),
        f("style_musigma"),
        f("content_in"),
        scores.len()
    );
    if let Some(p) = &a.json {
        adain::atomic::write_bytes(p, serde_json::to_string_pretty(&out)?.as_bytes())?;
    }
    Ok(())
}
