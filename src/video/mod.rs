//! `adain video`: a video stylized frame by frame with temporal state, its
//! timing, audio and rotation kept, written in resumable segments.
//!
//! - [`ffmpeg`]: probing, frames in and out of ffmpeg child processes, the final mux;
//! - [`temporal`]: [`FrameStylizer`] (the `--temporal` modes) and [`Flicker`] (E_fd, warping error);
//! - [`flow`]: optical flow (OpenCV), warping, the consistency test;
//! - [`blend`]: the warped previous output blended in without losing contrast.
//!
//! A job runs three threads joined by bounded queues: decoding (ffmpeg),
//! stylizing (this thread), encoding (ffmpeg, one process per segment). The
//! segments (a few seconds each) and the temporal state after each live in
//! a parts directory beside the output; `resume` continues after the last
//! complete one, and the result equals an uninterrupted run frame for frame.
//! At the end the segments are joined without re-encoding, the audio copied
//! in, and the file renamed into place.

pub mod blend;
pub mod ffmpeg;
pub mod flow;
pub mod temporal;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use serde::Serialize;

use crate::adain::Stats;
use crate::engine::{binary_masks, check_settings, Engine, Job, Settings, Style};
use crate::eval::{self, Features, Metrics};
use crate::image_io;
use crate::stylize::StatsEma;
pub use ffmpeg::{Codec, Probe, Rational};
pub use temporal::{Flicker, FrameStylizer, State, Temporal};

/// A style of a video job: a picture, or a video styling frame i with its frame i.
#[derive(Debug, Clone)]
pub enum StyleInput {
    Image(PathBuf),
    Video(PathBuf),
}

impl StyleInput {
    /// A video when the name says so (or it is not a picture ffprobe can
    /// read as one): pictures by extension.
    pub fn of(path: &Path) -> Self {
        if image_io::is_image_path(path) {
            Self::Image(path.to_owned())
        } else {
            Self::Video(path.to_owned())
        }
    }
    pub fn path(&self) -> &Path {
        match self {
            Self::Image(p) | Self::Video(p) => p,
        }
    }
}

/// Everything a video job asks for, as values.
#[derive(Debug, Clone)]
pub struct VideoJob {
    pub input: PathBuf,
    pub output: PathBuf,
    pub styles: Vec<StyleInput>,
    pub settings: Settings,
    pub temporal: Temporal,
    /// How much of the warped previous output `flow` keeps (0..1).
    pub flow_strength: f32,
    /// How `flow` blends it in.
    pub flow_blend: blend::Blend,
    pub codec: Option<Codec>,
    pub crf: Option<u32>,
    /// Frames per segment (the unit of `resume`).
    pub segment_frames: u64,
    pub resume: bool,
    pub overwrite: bool,
    /// Also the warping error and the style metrics (costs two Farneback
    /// flows a frame and an encoder pass a sampled frame).
    pub metrics: bool,
}

/// What the progress callback hears.
pub enum VideoProgress<'a> {
    /// The job is set up: `total` frames (an estimate when the container
    /// does not say), `from` already done (resume).
    Start {
        probe: &'a Probe,
        total: u64,
        from: u64,
    },
    Frame {
        done: u64,
    },
    /// Joining the segments and the audio.
    Muxing,
}

/// What a finished job measured.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub frames: u64,
    /// Frames stylized by this run (fewer than `frames` after a resume).
    pub stylized: u64,
    pub seconds: f64,
    pub fps: f64,
    pub e_fd: Option<f64>,
    pub e_warp: Option<f64>,
    /// `adain eval`'s metrics averaged over sampled frames (with `metrics`).
    pub style: Option<Metrics>,
}

/// The parts directory of an output: `.NAME.adain-parts` beside it.
pub fn parts_dir(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    output
        .parent()
        .unwrap_or(Path::new("."))
        .join(format!(".{name}.adain-parts"))
}

/// Runs a video job (see the module doc).
pub fn run(
    engine: Arc<Engine>,
    job: &VideoJob,
    progress: &mut dyn FnMut(VideoProgress),
) -> Result<Summary> {
    let started = Instant::now();
    ffmpeg::check_installed()?;
    let s = &job.settings;
    let weights = check_settings(s, job.styles.len())?;
    let muxer = ffmpeg::muxer_for(&job.output)?;
    let codec = job.codec.unwrap_or_else(|| Codec::for_path(&job.output));
    codec.check_container(&job.output)?;
    let crf = job.crf.unwrap_or(codec.default_crf());
    if job.segment_frames == 0 {
        bail!("segment length must be at least one frame");
    }
    let input = ffmpeg::probe(&job.input)?;
    if input.frames_exact && input.frames == 0 {
        bail!("{}: the video has no frames", job.input.display());
    }
    let mut inputs = BTreeSet::new();
    for p in std::iter::once(job.input.as_path()).chain(job.styles.iter().map(|s| s.path())) {
        if let Ok(c) = p.canonicalize() {
            inputs.insert(c);
        }
    }
    crate::atomic::check_destination(&job.output, &inputs, job.overwrite)?;

    // the styles: pictures once (cached), videos checked for length
    let mut fixed: Vec<Option<Arc<Style>>> = Vec::new();
    let mut style_videos: Vec<Probe> = Vec::new();
    for st in &job.styles {
        match st {
            StyleInput::Image(p) => fixed.push(Some(engine.style_file(p, s)?)),
            StyleInput::Video(p) => {
                let sp = ffmpeg::probe(p)?;
                let (a, b) = if sp.frames_exact && input.frames_exact {
                    (sp.frames, input.frames)
                } else {
                    (ffmpeg::count_frames(p)?, ffmpeg::count_frames(&job.input)?)
                };
                if a != b {
                    bail!(
                        "{}: the style video has {a} frames but the content {} has {b}: they must match",
                        p.display(),
                        job.input.display()
                    );
                }
                fixed.push(None);
                style_videos.push(sp);
            }
        }
    }
    let n_styles = job.styles.len();
    let jb = match (&weights, s.masks.is_empty()) {
        (_, false) => Job::Masked,
        (Some(w), true) => Job::Blend(w.clone()),
        (None, true) if n_styles == 1 => Job::Single(0),
        (None, true) => bail!(
            "{n_styles} styles for one video: give --style-weights to blend them, or --mask to place them"
        ),
    };
    // mp4/mov keep the rotation as metadata; other containers get the
    // frames turned upright, so every player shows them the right way up
    let upright = input.rotation != 0 && !ffmpeg::keeps_rotation(muxer);
    let size = if upright {
        input.upright_size()
    } else {
        (input.width, input.height)
    };
    let masks = if s.masks.is_empty() {
        Vec::new()
    } else {
        binary_masks(&s.masks, n_styles, &job.input, size, s.limits.max_pixels)?
    };

    // the parts directory: reuse it on resume when it is this job's
    let parts = parts_dir(&job.output);
    let fingerprint = fingerprint(job, &input, codec, crf)?;
    let mut from_segment = 0u64;
    let mut restored: Option<State> = None;
    if job.resume && parts.is_dir() {
        let saved = std::fs::read_to_string(parts.join("job.json")).unwrap_or_default();
        if saved != fingerprint {
            bail!(
                "{}: holds parts of a different job (input, styles or settings changed): remove it, or run without --resume to start over",
                parts.display()
            );
        }
        while parts.join(segment_name(from_segment)).is_file()
            && parts.join(state_name(from_segment)).is_file()
        {
            from_segment += 1;
        }
        if from_segment > 0 {
            restored = Some(load_state(&parts.join(state_name(from_segment - 1)))?);
        }
        tracing::info!(
            "resuming {} after {} complete segment(s)",
            job.input.display(),
            from_segment
        );
    } else {
        if parts.exists() {
            std::fs::remove_dir_all(&parts)
                .with_context(|| format!("{}: cannot remove old parts", parts.display()))?;
        }
        std::fs::create_dir_all(&parts)
            .with_context(|| format!("{}: cannot create", parts.display()))?;
        crate::atomic::write_bytes(&parts.join("job.json"), fingerprint.as_bytes())?;
    }
    let skip = from_segment * job.segment_frames;
    progress(VideoProgress::Start {
        probe: &input,
        total: input.frames,
        from: skip,
    });

    let fixed_styles: Vec<Arc<Style>> = fixed.iter().flatten().cloned().collect();
    let mut stylizer = FrameStylizer::new(
        engine.clone(),
        fixed_styles,
        jb.clone(),
        masks,
        s.clone(),
        job.temporal,
        job.flow_strength,
        job.flow_blend,
    )?;
    if let Some(st) = restored {
        stylizer.restore(st);
    }

    // decoding thread: content frame + this frame of every style video
    let (dec_tx, dec_rx) = sync_channel::<Result<(RgbImage, Vec<RgbImage>)>>(3);
    let decoder = {
        let input = input.clone();
        let style_videos = style_videos.clone();
        std::thread::spawn(move || decode(input, style_videos, skip, upright, dec_tx))
    };
    // encoding thread: segments, each followed by its state file
    let (enc_tx, enc_rx) = sync_channel::<EncoderMsg>(3);
    let encoder = {
        let parts = parts.clone();
        let rate = input.rate;
        let seg = job.segment_frames;
        std::thread::spawn(move || {
            encode(enc_rx, &parts, size, rate, codec, crf, seg, from_segment)
        })
    };

    let mut flicker = Flicker::new(job.metrics);
    let mut scores: Vec<Metrics> = Vec::new();
    let style_feats = match (&jb, job.metrics, fixed.first()) {
        (Job::Single(_), true, Some(Some(st))) => {
            Some(Features::new(&engine.model()?.encoder, &st.tensor)?)
        }
        _ => None,
    };
    let sample_every = (input.frames / 8).max(1);
    let mut index = skip;
    let result: Result<()> = (|| {
        for item in dec_rx.iter() {
            let (frame, style_frames) = item?;
            let styles = if style_videos.is_empty() {
                None
            } else {
                let mut it = style_frames.iter();
                let mut v = Vec::with_capacity(n_styles);
                for (k, f) in fixed.iter().enumerate() {
                    v.push(match f {
                        Some(st) => st.clone(),
                        None => engine.style_frame(
                            it.next().expect("one frame per style video"),
                            &format!("{} frame {}", job.styles[k].path().display(), index + 1),
                            s,
                        )?,
                    });
                }
                Some(v)
            };
            let out = match &styles {
                Some(v) => stylizer.frame_with(&frame, v)?,
                None => stylizer.frame(&frame)?,
            };
            flicker.add(&frame, &out)?;
            if let Some(sf) = &style_feats {
                if index % sample_every == 0 {
                    let dev = engine.device();
                    let o = image_io::to_tensor(&to_f32(&out), dev)?;
                    let c = image_io::to_tensor(&to_f32(&frame), dev)?;
                    let enc = &engine.model()?.encoder;
                    scores.push(eval::score(
                        &Features::new(enc, &o)?,
                        &Features::new(enc, &c)?,
                        sf,
                    )?);
                }
            }
            index += 1;
            let state = (index % job.segment_frames == 0).then(|| stylizer.state());
            if enc_tx.send(EncoderMsg { frame: out, state }).is_err() {
                break; // the encoder failed: its error is reported below
            }
            progress(VideoProgress::Frame { done: index });
        }
        Ok(())
    })();
    drop(enc_tx);
    let enc_result = encoder.join().expect("encoder thread");
    drop(dec_rx);
    let dec_result = decoder.join().expect("decoder thread");
    let done = result
        .and(enc_result)
        .and(dec_result)
        .and_then(|()| match index {
            0 => bail!("{}: the video has no frames", job.input.display()),
            _ => Ok(()),
        });
    if let Err(e) = done {
        // keep the parts only when there is something to resume
        if !parts.join(state_name(0)).is_file() {
            let _ = std::fs::remove_dir_all(&parts);
        }
        return Err(e);
    }
    let segments = index.div_ceil(job.segment_frames);

    // join the segments and the audio; the output appears complete or not at all
    progress(VideoProgress::Muxing);
    let list = parts.join("segments.txt");
    let mut text = String::new();
    for k in 0..segments {
        text.push_str(&format!("file '{}'\n", segment_name(k)));
    }
    crate::atomic::write_bytes(&list, text.as_bytes())?;
    let suffix = format!(
        ".{}",
        job.output
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("mp4")
    );
    let timed = parts.join("timed.mkv");
    let video = match &input.times {
        // variable frame rate: the segments joined, then every frame's time put back
        Some(times) => {
            if times.len() as u64 != index {
                bail!(
                    "{}: {} frame times for {index} frames decoded",
                    job.input.display(),
                    times.len()
                );
            }
            let joined = parts.join("joined.mkv");
            ffmpeg::run(
                &[
                    "-f",
                    "concat",
                    "-safe",
                    "0",
                    "-i",
                    &list.display().to_string(),
                    "-c",
                    "copy",
                    "-f",
                    "matroska",
                    &joined.display().to_string(),
                ]
                .map(String::from),
                &job.input,
            )?;
            ffmpeg::retime(&joined, times, &timed)?;
            ffmpeg::Video::File(&timed)
        }
        None => ffmpeg::Video::Segments(&list),
    };
    crate::atomic::write_via_path(&job.output, &suffix, |tmp| {
        ffmpeg::mux(&video, &input, tmp, muxer)
    })?;
    let _ = std::fs::remove_dir_all(&parts);
    let seconds = started.elapsed().as_secs_f64();
    let stylized = index - skip;
    let style = (!scores.is_empty()).then(|| {
        let n = scores.len() as f64;
        let mut m = Metrics::default();
        for s in &scores {
            m.style_musigma += s.style_musigma / n;
            m.style_gram += s.style_gram / n;
            m.content_in += s.content_in / n;
            m.ssim += s.ssim / n;
        }
        m
    });
    Ok(Summary {
        frames: index,
        stylized,
        seconds,
        fps: stylized as f64 / seconds,
        e_fd: flicker.e_fd(),
        e_warp: flicker.e_warp(),
        style,
    })
}

/// An 8-bit frame as the f32 picture the encoder takes.
pub fn to_f32(img: &RgbImage) -> image::Rgb32FImage {
    image::DynamicImage::ImageRgb8(img.clone()).to_rgb32f()
}

/// What identifies a job, so a resume never mixes parts of two jobs.
fn fingerprint(job: &VideoJob, input: &Probe, codec: Codec, crf: u32) -> Result<String> {
    let file = |p: &Path| -> Result<serde_json::Value> {
        let m = std::fs::metadata(p).with_context(|| format!("{}: cannot read", p.display()))?;
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Ok(
            serde_json::json!({"path": p.canonicalize()?.display().to_string(), "bytes": m.len(), "mtime": mtime}),
        )
    };
    let s = &job.settings;
    let v = serde_json::json!({
        "version": 1,
        "input": file(&job.input)?,
        "frames": input.frames,
        "styles": job.styles.iter().map(|st| file(st.path())).collect::<Result<Vec<_>>>()?,
        "masks": s.masks.iter().map(|m| file(m)).collect::<Result<Vec<_>>>()?,
        "alpha": s.alpha, "weights": s.style_weights, "color": format!("{:?}", s.color),
        "content_size": s.content_size, "style_size": s.style_size, "crop": s.crop,
        "temporal": job.temporal, "flow_strength": job.flow_strength, "flow_blend": job.flow_blend,
        "codec": format!("{codec:?}"), "crf": crf, "container": job.output.extension().map(|e| e.to_string_lossy().into_owned()), "segment_frames": job.segment_frames,
        "adain": env!("CARGO_PKG_VERSION"),
    });
    Ok(serde_json::to_string_pretty(&v)?)
}

fn segment_name(k: u64) -> String {
    format!("seg-{k:06}.mkv")
}

fn state_name(k: u64) -> String {
    format!("seg-{k:06}.state")
}

fn decode(
    input: Probe,
    style_videos: Vec<Probe>,
    skip: u64,
    upright: bool,
    tx: SyncSender<Result<(RgbImage, Vec<RgbImage>)>>,
) -> Result<()> {
    let go = || -> Result<()> {
        let mut content = ffmpeg::FrameReader::open_turned(&input, upright)?;
        let mut styles = style_videos
            .iter()
            .map(ffmpeg::FrameReader::open)
            .collect::<Result<Vec<_>>>()?;
        let mut n = 0u64;
        while let Some(frame) = content.next_frame()? {
            let mut sf = Vec::with_capacity(styles.len());
            for (r, p) in styles.iter_mut().zip(&style_videos) {
                match r.next_frame()? {
                    Some(f) => sf.push(f),
                    None => bail!(
                        "{}: the style video ended at frame {n} before the content {}",
                        p.path.display(),
                        input.path.display()
                    ),
                }
            }
            n += 1;
            if n <= skip {
                continue;
            }
            if tx.send(Ok((frame, sf))).is_err() {
                return Ok(()); // the consumer stopped (an error there)
            }
        }
        if n < skip {
            bail!(
                "{}: has {n} frames, fewer than the {skip} the parts say were done",
                input.path.display()
            );
        }
        Ok(())
    };
    if let Err(e) = go() {
        let _ = tx.send(Err(anyhow::anyhow!("{e:#}")));
    }
    Ok(())
}

struct EncoderMsg {
    frame: RgbImage,
    /// Set on the last frame of a segment: the state after it.
    state: Option<State>,
}

#[allow(clippy::too_many_arguments)]
fn encode(
    rx: Receiver<EncoderMsg>,
    parts: &Path,
    size: (u32, u32),
    rate: Rational,
    codec: Codec,
    crf: u32,
    seg_frames: u64,
    first_segment: u64,
) -> Result<()> {
    let mut k = first_segment;
    let mut writer: Option<ffmpeg::FrameWriter> = None;
    let tmp = |k: u64| parts.join(format!("seg-{k:06}.part.mkv"));
    let mut in_segment = 0u64;
    for msg in rx.iter() {
        if writer.is_none() {
            writer = Some(ffmpeg::FrameWriter::create(
                &tmp(k),
                size,
                rate,
                codec,
                crf,
            )?);
            in_segment = 0;
        }
        let w = writer.as_mut().expect("just opened");
        if msg.frame.dimensions() != size {
            bail!("stylized frame has the wrong size");
        }
        w.write(&msg.frame)?;
        in_segment += 1;
        if in_segment == seg_frames {
            writer.take().expect("open").finish()?;
            std::fs::rename(tmp(k), parts.join(segment_name(k)))?;
            let st = msg.state.context("segment end without its state")?;
            save_state(&parts.join(state_name(k)), &st)?;
            k += 1;
        }
    }
    if let Some(w) = writer.take() {
        // the last, shorter segment: complete once the stream ended cleanly
        w.finish()?;
        std::fs::rename(tmp(k), parts.join(segment_name(k)))?;
    }
    Ok(())
}

fn image_tensor(img: &RgbImage) -> Result<Tensor> {
    Ok(Tensor::from_vec(
        img.as_raw().clone(),
        (img.height() as usize, img.width() as usize, 3),
        &Device::Cpu,
    )?)
}

fn tensor_image(t: &Tensor) -> Result<RgbImage> {
    let (h, w, _) = t.dims3()?;
    RgbImage::from_raw(w as u32, h as u32, t.flatten_all()?.to_vec1::<u8>()?)
        .context("state image size")
}

/// The temporal state after a segment, as safetensors (atomic).
fn save_state(path: &Path, st: &State) -> Result<()> {
    let mut m: HashMap<String, Tensor> = HashMap::new();
    if let Some((i, o)) = &st.prev {
        m.insert("prev_in".into(), image_tensor(i)?);
        m.insert("prev_out".into(), image_tensor(o)?);
    }
    if let Some(e) = &st.ema {
        m.insert(
            "ema_momentum".into(),
            Tensor::new(&[e.momentum], &Device::Cpu)?,
        );
        for (i, s) in e.state.iter().enumerate() {
            if let Some(s) = s {
                m.insert(format!("ema{i}_mean"), s.mean.to_device(&Device::Cpu)?);
                m.insert(format!("ema{i}_std"), s.std.to_device(&Device::Cpu)?);
            }
        }
        m.insert(
            "ema_regions".into(),
            Tensor::new(&[e.state.len() as u32], &Device::Cpu)?,
        );
    }
    m.insert("version".into(), Tensor::new(&[1u32], &Device::Cpu)?);
    crate::atomic::write_via_path(path, ".state", |tmp| {
        Ok(candle_core::safetensors::save(&m, tmp)?)
    })
}

fn load_state(path: &Path) -> Result<State> {
    let m = candle_core::safetensors::load(path, &Device::Cpu).with_context(|| {
        format!(
            "{}: unreadable state (remove the parts to start over)",
            path.display()
        )
    })?;
    let prev = match (m.get("prev_in"), m.get("prev_out")) {
        (Some(i), Some(o)) => Some((tensor_image(i)?, tensor_image(o)?)),
        _ => None,
    };
    let ema = match (m.get("ema_momentum"), m.get("ema_regions")) {
        (Some(mo), Some(n)) => {
            let mut e = StatsEma::new(mo.to_vec1::<f64>()?[0]);
            let n = n.to_vec1::<u32>()?[0] as usize;
            for i in 0..n {
                e.state.push(
                    match (
                        m.get(&format!("ema{i}_mean")),
                        m.get(&format!("ema{i}_std")),
                    ) {
                        (Some(a), Some(b)) => Some(Stats {
                            mean: a.to_dtype(DType::F32)?,
                            std: b.to_dtype(DType::F32)?,
                        }),
                        _ => None,
                    },
                );
            }
            Some(e)
        }
        _ => None,
    };
    Ok(State { ema, prev })
}
