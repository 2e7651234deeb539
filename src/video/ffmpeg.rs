//! Video in and out through the `ffmpeg` and `ffprobe` programs as child
//! processes: raw RGB frames piped, never temporary frame files.
//!
//! Why programs and not a crate: the FFmpeg bindings on crates.io track
//! particular library versions and need the -dev headers at build time, while
//! the programs are stable across Debian releases and are what users have.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use image::RgbImage;
use serde::Deserialize;

/// The one line a user without ffmpeg sees.
pub const INSTALL_HINT: &str =
    "ffmpeg and ffprobe are needed for video: install them (Debian/Ubuntu: apt-get install ffmpeg; macOS: brew install ffmpeg)";

/// Fails with [`INSTALL_HINT`] when either program is missing.
pub fn check_installed() -> Result<()> {
    for prog in ["ffmpeg", "ffprobe"] {
        let ok = Command::new(prog)
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            bail!("{prog} not found: {INSTALL_HINT}");
        }
    }
    Ok(())
}

/// A frame rate or time base as the exact fraction ffprobe prints (30000/1001).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rational {
    pub num: u64,
    pub den: u64,
}

impl Rational {
    pub fn parse(s: &str) -> Option<Self> {
        let (n, d) = s.split_once('/').unwrap_or((s, "1"));
        let (num, den) = (n.trim().parse().ok()?, d.trim().parse().ok()?);
        (num > 0 && den > 0).then_some(Self { num, den })
    }
    pub fn as_f64(&self) -> f64 {
        self.num as f64 / self.den as f64
    }
}

impl std::fmt::Display for Rational {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}/{}", self.num, self.den)
    }
}

/// What the job needs to know of an input, from ffprobe.
#[derive(Debug, Clone)]
pub struct Probe {
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    /// The video stream's frame rate (`r_frame_rate`), exact.
    pub rate: Rational,
    /// Frames in the stream when the container says (most do), else estimated
    /// from duration * rate; `frames_exact` tells which.
    pub frames: u64,
    pub frames_exact: bool,
    pub duration: Option<f64>,
    /// Display rotation in degrees as ffprobe reports it (the display matrix).
    pub rotation: i64,
    pub codec: String,
    /// Codec name of every audio stream, in order.
    pub audio: Vec<String>,
    /// A variable frame rate: every frame's presentation time in seconds
    /// from the first (`None`: the frames sit on the `rate` grid).
    pub times: Option<Vec<f64>>,
}

#[derive(Deserialize)]
struct ProbeJson {
    #[serde(default)]
    streams: Vec<StreamJson>,
    format: Option<FormatJson>,
}

#[derive(Deserialize)]
struct StreamJson {
    codec_type: Option<String>,
    codec_name: Option<String>,
    codec_tag_string: Option<String>,
    #[serde(default)]
    disposition: std::collections::HashMap<String, i64>,
    width: Option<u32>,
    height: Option<u32>,
    r_frame_rate: Option<String>,
    avg_frame_rate: Option<String>,
    nb_frames: Option<String>,
    duration: Option<String>,
    #[serde(default)]
    side_data_list: Vec<serde_json::Value>,
    #[serde(default)]
    tags: std::collections::HashMap<String, String>,
}

#[derive(Deserialize)]
struct FormatJson {
    duration: Option<String>,
}

/// Probes `path`; a file ffprobe cannot read, or one without a video
/// stream, is a one-line error naming it.
pub fn probe(path: &Path) -> Result<Probe> {
    let name = path.display();
    if !path.is_file() {
        bail!("{name}: no such file");
    }
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_streams",
            "-show_format",
        ])
        .arg(path)
        .output()
        .map_err(|_| anyhow::anyhow!("ffprobe not found: {INSTALL_HINT}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let line = last_line(&err).unwrap_or("unreadable");
        if line.ends_with("End of file") {
            bail!("{name}: no frames (the file ends before its first)");
        }
        bail!(
            "{name}: not a video ffmpeg can read ({})",
            strip_path(line, path)
        );
    }
    let mut p = parse_probe(path, &out.stdout)?;
    let times = frame_times(path)?;
    p.times = (!on_grid(&times, p.rate)).then_some(times);
    Ok(p)
}

/// ffprobe's JSON (`-show_streams -show_format`) for `path` (which only
/// names it in errors): what [`probe`] returns, but for `times` (`None`).
pub fn parse_probe(path: &Path, json: &[u8]) -> Result<Probe> {
    let name = path.display();
    let j: ProbeJson = serde_json::from_slice(json)
        .with_context(|| format!("{name}: unexpected ffprobe output"))?;
    let audio = j
        .streams
        .iter()
        .filter(|s| s.codec_type.as_deref() == Some("audio"))
        .map(|s| s.codec_name.clone().unwrap_or_default())
        .collect();
    // cover art in an audio file is a one-picture "video" stream: not a video
    let Some(v) = j.streams.iter().find(|s| {
        s.codec_type.as_deref() == Some("video")
            && s.disposition.get("attached_pic").copied().unwrap_or(0) == 0
    }) else {
        bail!("{name}: no video stream");
    };
    if v.codec_name
        .as_deref()
        .is_none_or(|c| matches!(c, "" | "none" | "unknown"))
    {
        bail!(
            "{name}: unsupported video codec (FourCC {}): ffmpeg has no decoder for it",
            v.codec_tag_string.as_deref().unwrap_or("unknown")
        );
    }
    let (width, height) = match (v.width, v.height) {
        (Some(w), Some(h)) if w > 0 && h > 0 => (w, h),
        _ => bail!("{name}: the video stream has no size"),
    };
    let rate = v
        .r_frame_rate
        .as_deref()
        .and_then(Rational::parse)
        .or_else(|| v.avg_frame_rate.as_deref().and_then(Rational::parse))
        .with_context(|| format!("{name}: the video stream has no frame rate"))?;
    let duration = v
        .duration
        .as_deref()
        .or(j.format.as_ref().and_then(|f| f.duration.as_deref()))
        .and_then(|d| d.parse::<f64>().ok());
    let nb = v.nb_frames.as_deref().and_then(|n| n.parse::<u64>().ok());
    let (frames, frames_exact) = match nb {
        Some(n) => (n, true),
        None => (
            duration
                .map(|d| (d * rate.as_f64()).round() as u64)
                .unwrap_or(0),
            false,
        ),
    };
    let rotation = v
        .side_data_list
        .iter()
        .find_map(|d| d.get("rotation").and_then(|r| r.as_i64()))
        .or_else(|| v.tags.get("rotate").and_then(|r| r.parse::<i64>().ok()))
        .unwrap_or(0);
    Ok(Probe {
        times: None,
        path: path.to_owned(),
        width,
        height,
        rate,
        frames,
        frames_exact,
        duration,
        rotation,
        codec: v.codec_name.clone().unwrap_or_default(),
        audio,
    })
}

/// Presentation times of the video packets (seconds, sorted, from the
/// first); empty when the container gives none.
fn frame_times(path: &Path) -> Result<Vec<f64>> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time",
        ])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .map_err(|_| anyhow::anyhow!("ffprobe not found: {INSTALL_HINT}"))?;
    Ok(parse_frame_times(&String::from_utf8_lossy(&out.stdout)))
}

/// ffprobe's `packet=pts_time` lines (csv) as sorted times from the first;
/// empty when one is not a number (N/A: no timestamps to keep).
pub fn parse_frame_times(text: &str) -> Vec<f64> {
    let mut t: Vec<f64> = Vec::new();
    for line in text.lines() {
        match line.trim().trim_end_matches(',').parse::<f64>() {
            Ok(v) => t.push(v),
            Err(_) => return Vec::new(),
        }
    }
    t.sort_by(f64::total_cmp);
    if let Some(&t0) = t.first() {
        t.iter_mut().for_each(|v| *v -= t0);
    }
    t
}

/// Whether frame times are those of a constant `rate` (to a quarter frame).
pub fn on_grid(times: &[f64], rate: Rational) -> bool {
    let step = rate.den as f64 / rate.num as f64;
    times
        .iter()
        .enumerate()
        .all(|(i, &t)| (t - i as f64 * step).abs() <= step / 4.0)
}

/// Gives the video stream of `video` (Matroska) the frame times `times`
/// (seconds) with mkvmerge: what passes variable-frame-rate timing through.
pub fn retime(video: &Path, times: &[f64], out: &Path) -> Result<()> {
    let ts = out.with_extension("timestamps.txt");
    let mut text = String::from("# timestamp format v2\n");
    for t in times {
        text.push_str(&format!("{:.6}\n", t * 1000.0));
    }
    std::fs::write(&ts, text).with_context(|| format!("{}: cannot write", ts.display()))?;
    let o = Command::new("mkvmerge")
        .arg("-q")
        .arg("-o")
        .arg(out)
        .arg("--timestamps")
        .arg(format!("0:{}", ts.display()))
        .arg(video)
        .output()
        .map_err(|_| {
            anyhow::anyhow!(
                "mkvmerge not found: a variable-frame-rate video needs it to keep its timing (Debian/Ubuntu: apt-get install mkvtoolnix)"
            )
        })?;
    // mkvmerge exits 1 for warnings, 2 for errors
    if o.status.code().is_none_or(|c| c > 1) {
        bail!(
            "{}: mkvmerge failed ({})",
            video.display(),
            last_line(&String::from_utf8_lossy(&o.stdout)).unwrap_or("no message")
        );
    }
    Ok(())
}

impl Probe {
    /// The size as shown: sides swapped by a quarter turn.
    pub fn upright_size(&self) -> (u32, u32) {
        if self.rotation.rem_euclid(180) == 90 {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }
}

/// Whether a container keeps rotation metadata (else frames are turned).
pub fn keeps_rotation(muxer: &str) -> bool {
    matches!(muxer, "mp4" | "mov")
}

/// Counts the frames of the video stream exactly (decodes it).
pub fn count_frames(path: &Path) -> Result<u64> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .map_err(|_| anyhow::anyhow!("ffprobe not found: {INSTALL_HINT}"))?;
    let s = String::from_utf8_lossy(&out.stdout);
    s.trim()
        .trim_end_matches(',')
        .parse()
        .with_context(|| format!("{}: cannot count its frames", path.display()))
}

fn last_line(s: &str) -> Option<&str> {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).last()
}

/// ffmpeg prefixes messages with the file name; the error already names it.
fn strip_path(line: &str, path: &Path) -> String {
    let p = path.display().to_string();
    line.replace(&format!("{p}: "), "").replace(&p, "the file")
}

/// The last lines a child wrote to stderr (a bounded buffer drained by a
/// thread, so a chatty child can never block on a full pipe).
#[derive(Clone, Default)]
struct StderrTail(Arc<Mutex<VecDeque<String>>>);

impl StderrTail {
    fn drain(child: &mut Child) -> Self {
        let tail = Self::default();
        if let Some(err) = child.stderr.take() {
            let t = tail.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(|l| l.ok()) {
                    let mut q = t.0.lock().expect("stderr lock");
                    if q.len() == 32 {
                        q.pop_front();
                    }
                    q.push_back(line);
                }
            });
        }
        tail
    }
    fn first_error(&self) -> Option<String> {
        let q = self.0.lock().expect("stderr lock");
        q.iter().find(|l| !l.trim().is_empty()).cloned()
    }
}

/// Decodes the first video stream of a file to RGB frames at its stored
/// size and orientation (rotation is metadata the output gets back), every
/// frame exactly once (no frame-rate conversion).
pub struct FrameReader {
    child: Child,
    out: BufReader<ChildStdout>,
    err: StderrTail,
    path: PathBuf,
    width: u32,
    height: u32,
    pub read: u64,
}

impl FrameReader {
    /// Frames at the stored orientation.
    pub fn open(p: &Probe) -> Result<Self> {
        Self::open_turned(p, false)
    }

    /// With `upright`, frames turned by the rotation metadata (as players
    /// show them; [`Probe::upright_size`]).
    pub fn open_turned(p: &Probe, upright: bool) -> Result<Self> {
        let (width, height) = if upright {
            p.upright_size()
        } else {
            (p.width, p.height)
        };
        let mut child = Command::new("ffmpeg")
            .args(["-v", "error", "-nostdin", "-xerror"])
            .args(if upright {
                &[][..]
            } else {
                &["-noautorotate"][..]
            })
            .arg("-i")
            .arg(&p.path)
            .args([
                "-map",
                "0:v:0",
                "-fps_mode",
                "passthrough",
                // the frames' own time base: with the default (1/rate) a
                // millisecond-timestamped input (Matroska, ours too) can put
                // two frames on one tick, and ffmpeg stops as if the file
                // were corrupt
                "-enc_time_base",
                "-1",
                "-f",
                "rawvideo",
            ])
            .args(["-pix_fmt", "rgb24", "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|_| anyhow::anyhow!("ffmpeg not found: {INSTALL_HINT}"))?;
        let err = StderrTail::drain(&mut child);
        let out = BufReader::with_capacity(
            (width * height * 3) as usize,
            child.stdout.take().expect("piped"),
        );
        Ok(Self {
            child,
            out,
            err,
            path: p.path.clone(),
            width,
            height,
            read: 0,
        })
    }

    /// The next frame, `None` at the end; a decoding error names the file.
    pub fn next_frame(&mut self) -> Result<Option<RgbImage>> {
        let mut buf = vec![0u8; (self.width * self.height * 3) as usize];
        let mut filled = 0;
        while filled < buf.len() {
            match self.out.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => bail!("{}: reading frames: {e}", self.path.display()),
            }
        }
        if filled == 0 {
            self.finish()?;
            return Ok(None);
        }
        if filled < buf.len() {
            let _ = self.finish();
            bail!(
                "{}: corrupt video (frame {} is incomplete)",
                self.path.display(),
                self.read + 1
            );
        }
        self.read += 1;
        Ok(Some(
            RgbImage::from_raw(self.width, self.height, buf).expect("size matches"),
        ))
    }

    fn finish(&mut self) -> Result<()> {
        let status = self.child.wait()?;
        // the stderr thread may still be draining: give it a moment
        std::thread::sleep(std::time::Duration::from_millis(20));
        if !status.success() || self.err.first_error().is_some() {
            let why = self
                .err
                .first_error()
                .map(|l| strip_path(&l, &self.path))
                .unwrap_or_else(|| format!("ffmpeg exited with {status}"));
            bail!(
                "{}: corrupt video after frame {} ({why})",
                self.path.display(),
                self.read
            );
        }
        Ok(())
    }
}

impl Drop for FrameReader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The video codec of the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Codec {
    /// H.264 (libx264), yuv420p (4:4:4 when a side is odd, to keep the exact size).
    H264,
    /// VP9 (libvpx-vp9), yuv420p.
    Vp9,
    /// FFV1, lossless RGB (large files; for editing and tests).
    Ffv1,
}

impl Codec {
    /// The default codec for an output file name.
    pub fn for_path(path: &Path) -> Self {
        match ext(path).as_str() {
            "webm" => Self::Vp9,
            _ => Self::H264,
        }
    }

    pub fn default_crf(self) -> u32 {
        match self {
            Self::H264 => 18,
            Self::Vp9 => 31,
            Self::Ffv1 => 0,
        }
    }

    fn args(self, crf: u32, width: u32, height: u32) -> Vec<String> {
        let odd = width % 2 == 1 || height % 2 == 1;
        let v: Vec<&str> = match self {
            // x264 is deterministic for any thread count, so segments encoded
            // in separate runs (resume) equal one uninterrupted run.
            Self::H264 => vec![
                "-c:v",
                "libx264",
                "-preset",
                "medium",
                "-pix_fmt",
                if odd { "yuv444p" } else { "yuv420p" },
                "-crf",
            ],
            Self::Vp9 => vec![
                "-c:v",
                "libvpx-vp9",
                "-pix_fmt",
                "yuv420p",
                "-b:v",
                "0",
                "-row-mt",
                "1",
                "-crf",
            ],
            Self::Ffv1 => vec!["-c:v", "ffv1", "-level", "3", "-pix_fmt", "bgr0"],
        };
        let mut v: Vec<String> = v.into_iter().map(String::from).collect();
        if self != Self::Ffv1 {
            v.push(crf.to_string());
        }
        v
    }

    /// Can this codec live in the container of `path`?
    pub fn check_container(self, path: &Path) -> Result<()> {
        let e = ext(path);
        let ok = match (self, e.as_str()) {
            (_, "mkv") => true,
            (Self::H264, "mp4" | "mov") => true,
            (Self::Vp9, "webm" | "mp4") => true,
            _ => false,
        };
        if !ok {
            bail!(
                "{}: a {:?} video cannot be written as .{e} (use .mkv, or .mp4 for H.264, .webm for VP9)",
                path.display(),
                self
            );
        }
        Ok(())
    }
}

fn ext(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// ffmpeg's muxer name for an output extension.
pub fn muxer_for(path: &Path) -> Result<&'static str> {
    Ok(match ext(path).as_str() {
        "mp4" | "m4v" => "mp4",
        "mov" => "mov",
        "mkv" => "matroska",
        "webm" => "webm",
        other => bail!(
            "{}: unknown video extension .{other} (use .mp4, .mov, .mkv or .webm)",
            path.display()
        ),
    })
}

/// Encodes RGB frames from a pipe into one file (a segment).
pub struct FrameWriter {
    child: Child,
    stdin: Option<ChildStdin>,
    err: StderrTail,
    path: PathBuf,
}

impl FrameWriter {
    pub fn create(
        path: &Path,
        (width, height): (u32, u32),
        rate: Rational,
        codec: Codec,
        crf: u32,
    ) -> Result<Self> {
        let mut child = Command::new("ffmpeg")
            .args([
                "-v", "error", "-nostdin", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
            ])
            .args([
                "-s",
                &format!("{width}x{height}"),
                "-framerate",
                &rate.to_string(),
            ])
            .args(["-i", "-", "-an"])
            .args(codec.args(crf, width, height))
            .args(["-f", "matroska"])
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|_| anyhow::anyhow!("ffmpeg not found: {INSTALL_HINT}"))?;
        let err = StderrTail::drain(&mut child);
        let stdin = child.stdin.take();
        Ok(Self {
            child,
            stdin,
            err,
            path: path.to_owned(),
        })
    }

    pub fn write(&mut self, frame: &RgbImage) -> Result<()> {
        let stdin = self.stdin.as_mut().expect("open until finish");
        if stdin.write_all(frame.as_raw()).is_err() {
            let why = self
                .err
                .first_error()
                .unwrap_or_else(|| "ffmpeg stopped".into());
            bail!("{}: encoding failed ({why})", self.path.display());
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<()> {
        drop(self.stdin.take());
        let status = self.child.wait()?;
        if !status.success() {
            std::thread::sleep(std::time::Duration::from_millis(20));
            let why = self.err.first_error().unwrap_or_else(|| status.to_string());
            bail!("{}: encoding failed ({why})", self.path.display());
        }
        Ok(())
    }
}

impl Drop for FrameWriter {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Which audio codecs a container takes as they are (others are re-encoded).
fn audio_fits(muxer: &str, codec: &str) -> bool {
    match muxer {
        "matroska" => true,
        "webm" => matches!(codec, "opus" | "vorbis"),
        "mp4" => matches!(
            codec,
            "aac" | "mp3" | "ac3" | "eac3" | "alac" | "opus" | "flac"
        ),
        "mov" => !matches!(codec, "opus" | "vorbis"),
        _ => false,
    }
}

/// Runs ffmpeg with `args`; a failure is one line naming `what`.
pub fn run(args: &[String], what: &Path) -> Result<()> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|_| anyhow::anyhow!("ffmpeg not found: {INSTALL_HINT}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!(
            "{}: ffmpeg failed ({})",
            what.display(),
            last_line(&err).unwrap_or("no message")
        );
    }
    Ok(())
}

/// The stylized video stream: segments to join, or one file.
pub enum Video<'a> {
    /// An ffmpeg concat list of segment files.
    Segments(&'a Path),
    File(&'a Path),
}

/// Joins the segments (listed in `list`, ffmpeg's concat demuxer) into
/// `out` without re-encoding the video, with every audio stream of `input`
/// copied (re-encoded only where the container cannot hold it, said on
/// stderr) and the input's rotation and metadata. `out` is written as
/// `muxer` whatever its name (the caller renames it into place).
pub fn mux(video: &Video, input: &Probe, out: &Path, muxer: &str) -> Result<()> {
    let mut a: Vec<String> = match video {
        Video::Segments(list) => ["-f", "concat", "-safe", "0", "-i"]
            .map(String::from)
            .to_vec()
            .into_iter()
            .chain([list.display().to_string()])
            .collect(),
        Video::File(f) => vec!["-i".into(), f.display().to_string()],
    };
    a.push("-i".into());
    a.push(input.path.display().to_string());
    a.extend(
        [
            "-map",
            "0:v:0",
            "-map",
            "1:a?",
            "-map_metadata",
            "1",
            "-c:v",
            "copy",
        ]
        .map(String::from),
    );
    for (i, codec) in input.audio.iter().enumerate() {
        a.push(format!("-c:a:{i}"));
        if audio_fits(muxer, codec) {
            a.push("copy".into());
        } else {
            let (enc, name) = if muxer == "webm" {
                ("libopus", "Opus")
            } else {
                ("aac", "AAC")
            };
            tracing::warn!(
                "{}: audio stream {i} ({codec}) cannot go into .{} as it is: re-encoded as {name}",
                input.path.display(),
                out.extension().and_then(|e| e.to_str()).unwrap_or(muxer)
            );
            a.push(enc.into());
        }
    }
    if input.rotation != 0 && keeps_rotation(muxer) {
        // the mp4/mov muxers turn this tag into the display matrix (the
        // test checks that ffprobe then reports the input's rotation)
        a.push("-metadata:s:v:0".into());
        a.push(format!("rotate={}", input.rotation.rem_euclid(360)));
    }
    if muxer == "mp4" || muxer == "mov" {
        a.extend(["-movflags", "+faststart"].map(String::from));
    }
    a.extend([
        "-f".to_string(),
        muxer.to_string(),
        out.display().to_string(),
    ]);
    run(&a, &input.path)
}
