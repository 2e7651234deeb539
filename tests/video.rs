//! `adain video` against the real ffmpeg: timing, size, rotation and audio
//! kept (ffprobe), frames equal to `adain stylize` of each frame, style-video
//! lengths checked, resume after kill -9 equal to an uninterrupted run, bad
//! inputs refused with one line and nothing left under the output name.
//! The videos are tiny ones the tests make with ffmpeg's test sources.

mod common;
use common::{fails_with, ok};

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn adain(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adain"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("ADAIN_WEIGHTS")
        .output()
        .unwrap()
}

fn ffmpeg(args: &[&str]) {
    let o = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg is installed by scripts/system-deps.sh");
    assert!(
        o.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// ffprobe's JSON for a file's streams.
fn probe(p: &Path) -> serde_json::Value {
    let o = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_streams",
            "-show_format",
            "-count_frames",
        ])
        .arg(p)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn stream<'a>(j: &'a serde_json::Value, kind: &str) -> Vec<&'a serde_json::Value> {
    j["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["codec_type"] == kind)
        .collect()
}

/// testsrc2 (moving pattern) of `size` at `rate` for `secs`, with a sine
/// track; `extra` goes before the output name.
fn make_video(path: &Path, size: &str, rate: &str, secs: &str, extra: &[&str]) {
    make_video_audio(path, size, rate, secs, 44100, extra)
}

/// [`make_video`] with the sine track at `audio_rate` Hz.
fn make_video_audio(
    path: &Path,
    size: &str,
    rate: &str,
    secs: &str,
    audio_rate: u32,
    extra: &[&str],
) {
    let src = format!("testsrc2=size={size}:rate={rate}");
    let sine = format!("sine=frequency=440:sample_rate={audio_rate}");
    let mut a = vec![
        "-f", "lavfi", "-i", &src, "-f", "lavfi", "-i", &sine, "-t", secs, "-c:v", "libx264",
        "-pix_fmt", "yuv444p", "-crf", "10", "-c:a", "aac",
    ];
    a.extend_from_slice(extra);
    let p = path.to_str().unwrap();
    a.push(p);
    ffmpeg(&a);
}

fn style() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/painting.jpg")
}

/// Decoded RGB frames of a video (at its stored orientation).
fn frames(p: &Path) -> Vec<Vec<u8>> {
    let j = probe(p);
    let v = stream(&j, "video")[0];
    let (w, h) = (
        v["width"].as_u64().unwrap() as usize,
        v["height"].as_u64().unwrap() as usize,
    );
    let o = Command::new("ffmpeg")
        .args(["-v", "error", "-noautorotate", "-i"])
        .arg(p)
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .unwrap();
    assert!(o.status.success());
    o.stdout.chunks(w * h * 3).map(|c| c.to_vec()).collect()
}

fn max_diff(a: &[u8], b: &[u8]) -> u8 {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

fn video(input: &Path, out: &Path, extra: &[&str]) -> Output {
    let s = style();
    let mut a = vec![
        "video",
        "-c",
        input.to_str().unwrap(),
        "-s",
        s.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--style-size",
        "128",
        "-q",
    ];
    a.extend_from_slice(extra);
    adain(&a)
}

fn parts(out: &Path) -> PathBuf {
    out.with_file_name(format!(
        ".{}.adain-parts",
        out.file_name().unwrap().to_str().unwrap()
    ))
}

#[test]
fn timing_size_and_audio_are_kept() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in.mp4");
    make_video(&input, "96x64", "30000/1001", "2", &[]);
    let out = d.path().join("out.mp4");
    ok(&video(&input, &out, &["--temporal", "none"]));
    let (i, o) = (probe(&input), probe(&out));
    let (vi, vo) = (stream(&i, "video")[0], stream(&o, "video")[0]);
    assert_eq!(vo["r_frame_rate"], "30000/1001");
    assert_eq!(vo["nb_read_frames"], vi["nb_read_frames"]);
    assert_eq!(vo["nb_read_frames"], "60");
    assert_eq!((&vo["width"], &vo["height"]), (&vi["width"], &vi["height"]));
    assert_eq!(vo["codec_name"], "h264");
    assert_eq!(vo["pix_fmt"], "yuv420p");
    let dur = |v: &serde_json::Value| v["duration"].as_str().unwrap().parse::<f64>().unwrap();
    assert!(
        (dur(vo) - dur(vi)).abs() <= 1001.0 / 30000.0,
        "{} vs {}",
        dur(vo),
        dur(vi)
    );
    // the audio stream is copied: same codec, same packets
    let (ai, ao) = (stream(&i, "audio"), stream(&o, "audio"));
    assert_eq!(ao.len(), 1);
    assert_eq!(ao[0]["codec_name"], ai[0]["codec_name"]);
    assert_eq!(ao[0]["nb_frames"], ai[0]["nb_frames"]);
    assert_eq!(ao[0]["sample_rate"], ai[0]["sample_rate"]);
    assert!(!parts(&out).exists(), "the parts are removed when done");
}

#[test]
fn odd_sizes_and_rotation_are_kept() {
    let d = tempfile::tempdir().unwrap();
    // an odd size (testsrc2 makes even ones: scaled), then a rotation tag
    // added on a stream copy (the muxer turns it into the display matrix)
    let plain = d.path().join("plain.mp4");
    make_video(&plain, "96x64", "25", "0.4", &["-vf", "scale=97:65"]);
    let input = d.path().join("odd.mp4");
    ffmpeg(&[
        "-i",
        plain.to_str().unwrap(),
        "-c",
        "copy",
        "-metadata:s:v:0",
        "rotate=90",
        input.to_str().unwrap(),
    ]);
    let i = probe(&input);
    let rot = |v: &serde_json::Value| {
        v["side_data_list"]
            .as_array()
            .and_then(|l| l.iter().find_map(|d| d["rotation"].as_i64()))
    };
    let ri = rot(stream(&i, "video")[0]);
    assert!(
        ri.is_some_and(|r| r != 0),
        "the test input carries a rotation: {i}"
    );
    for ext in ["mp4", "webm", "mkv"] {
        let out = d.path().join(format!("out.{ext}"));
        ok(&video(&input, &out, &["--temporal", "none"]));
        let o = probe(&out);
        let v = stream(&o, "video")[0];
        assert_eq!(v["nb_read_frames"], "10", "{ext}");
        if ext == "mp4" {
            assert_eq!(
                (v["width"].as_u64(), v["height"].as_u64()),
                (Some(97), Some(65))
            );
            assert_eq!(rot(v), ri, "rotation in .{ext}");
        } else {
            // WebM and Matroska hold no display matrix: the frames are turned
            assert_eq!(
                (v["width"].as_u64(), v["height"].as_u64()),
                (Some(65), Some(97)),
                "{ext}"
            );
            assert_eq!(rot(v), None, "{ext}");
        }
        assert_eq!(stream(&o, "audio").len(), 1, "{ext}: audio kept");
    }
}

/// `--temporal none` is `adain stylize` of each frame: compared before any
/// lossy encoding (FFV1 output, frames extracted losslessly).
#[test]
fn each_frame_equals_adain_stylize_of_it() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=80x48:rate=10",
        "-t",
        "0.5",
        "-c:v",
        "ffv1",
        "-pix_fmt",
        "bgr0",
        input.to_str().unwrap(),
    ]);
    let out = d.path().join("out.mkv");
    ok(&video(
        &input,
        &out,
        &["--temporal", "none", "--codec", "ffv1"],
    ));
    let dir = d.path().join("frames");
    std::fs::create_dir(&dir).unwrap();
    ffmpeg(&[
        "-i",
        input.to_str().unwrap(),
        &format!("{}/f%03d.png", dir.display()),
    ]);
    let styled = d.path().join("styled");
    let s = style();
    ok(&adain(&[
        "stylize",
        "-c",
        dir.to_str().unwrap(),
        "-s",
        s.to_str().unwrap(),
        "-o",
        styled.to_str().unwrap(),
        "--ext",
        "png",
        "--content-size",
        "0",
        "--style-size",
        "128",
        "-q",
    ]));
    let got = frames(&out);
    assert_eq!(got.len(), 5);
    let mut names: Vec<_> = std::fs::read_dir(&styled)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    assert_eq!(names.len(), 5);
    for (k, (g, p)) in got.iter().zip(&names).enumerate() {
        let want = image::open(p).unwrap().to_rgb8();
        let m = max_diff(g, want.as_raw());
        assert!(m <= 2, "frame {k}: max |diff| {m}/255");
    }
}

#[test]
fn flow_mode_flickers_less_than_per_frame_and_keeps_the_texture() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in.mp4");
    make_video(&input, "96x64", "15", "1.4", &[]);
    // (E_fd, warping error, style_musigma) of a run with these flags
    let run = |name: &str, flags: &[&str]| {
        let out = d.path().join(format!("{name}.mkv"));
        let js = d.path().join(format!("{name}.json"));
        let mut a = vec![
            "--codec",
            "ffv1",
            "--metrics",
            "--json",
            js.to_str().unwrap(),
        ];
        a.extend_from_slice(flags);
        ok(&video(&input, &out, &a));
        let j: serde_json::Value = serde_json::from_slice(&std::fs::read(js).unwrap()).unwrap();
        (
            j["e_fd"].as_f64().unwrap(),
            j["e_warp"].as_f64().unwrap(),
            j["style"]["style_musigma"].as_f64().unwrap(),
        )
    };
    let none = run("none", &["--temporal", "none"]);
    let strong = run(
        "strong",
        &[
            "--temporal",
            "flow",
            "--flow-strength",
            "0.8",
            "--flow-blend",
            "plain",
        ],
    );
    assert!(
        strong.0 < 0.8 * none.0,
        "E_fd plain 0.8 {strong:?} vs none {none:?}"
    );
    // the default (keep-contrast) steadies the texture along the flow ...
    let kept = run("kept", &["--temporal", "flow"]);
    assert!(
        kept.1 < 0.8 * none.1,
        "warping error {kept:?} vs none {none:?}"
    );
    // ... without the blur a plain blend of the same strength pays in style
    let plain = run("plain", &["--temporal", "flow", "--flow-blend", "plain"]);
    assert!(
        kept.2 < 0.95 * plain.2,
        "style keep-contrast {kept:?} vs plain {plain:?}"
    );
}

#[test]
fn a_style_video_of_another_length_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in.mp4");
    make_video(&input, "64x48", "10", "1", &[]);
    let sv = d.path().join("style.mp4");
    make_video(&sv, "64x48", "10", "0.5", &[]);
    let out = d.path().join("out.mp4");
    let o = adain(&[
        "video",
        "-c",
        input.to_str().unwrap(),
        "-s",
        sv.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    fails_with(&o, &["style.mp4", "5 frames", "10"]);
    assert!(!out.exists());
    // the same length works: frame i styled by frame i
    let sv2 = d.path().join("style2.mp4");
    make_video(&sv2, "64x48", "10", "1", &[]);
    ok(&adain(&[
        "video",
        "-c",
        input.to_str().unwrap(),
        "-s",
        sv2.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--temporal",
        "none",
        "-q",
    ]));
    assert_eq!(stream(&probe(&out), "video")[0]["nb_read_frames"], "10");
}

#[test]
fn resume_after_kill_9_equals_an_uninterrupted_run() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in.mp4");
    make_video(&input, "96x64", "30", "2", &[]);
    let whole = d.path().join("whole.mp4");
    let args = ["--temporal", "flow", "--segment-frames", "12"];
    ok(&video(&input, &whole, &args));

    let out = d.path().join("out.mp4");
    let s = style();
    let mut child = Command::new(env!("CARGO_BIN_EXE_adain"))
        .args([
            "video",
            "-c",
            input.to_str().unwrap(),
            "-s",
            s.to_str().unwrap(),
        ])
        .args(["-o", out.to_str().unwrap(), "--style-size", "128", "-q"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // kill -9 once two segments are complete
    let t = Instant::now();
    let seg = parts(&out).join("seg-000001.state");
    while !seg.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "no segment appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!out.exists(), "nothing under the output name after a kill");

    let o = video(&input, &out, &[&args[..], &["--resume"]].concat());
    ok(&o);
    let (a, b) = (frames(&whole), frames(&out));
    assert_eq!(a.len(), 60);
    assert_eq!(a.len(), b.len());
    for (k, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(max_diff(x, y), 0, "frame {k} differs after resume");
    }
    assert!(!parts(&out).exists());
    // parts of another job are refused, never mixed in
    let other = d.path().join("other.mp4");
    std::fs::create_dir(parts(&other)).unwrap();
    std::fs::write(parts(&other).join("job.json"), "{}").unwrap();
    let o = video(&input, &other, &[&args[..], &["--resume"]].concat());
    fails_with(&o, &["different job"]);
    assert!(!other.exists());
}

#[test]
fn bad_inputs_are_refused_with_one_line() {
    let d = tempfile::tempdir().unwrap();
    let dp = |n: &str| d.path().join(n);
    let check = |input: &Path, needles: &[&str]| {
        let out = dp("out.mp4");
        let o = video(input, &out, &["--temporal", "none"]);
        let mut n = vec![input.file_name().unwrap().to_str().unwrap()];
        n.extend_from_slice(needles);
        fails_with(&o, &n);
        assert!(
            !out.exists(),
            "{}: nothing under the output name",
            input.display()
        );
    };
    // not a video
    std::fs::write(dp("text.mp4"), b"hello, not a video").unwrap();
    check(&dp("text.mp4"), &["not a video"]);
    // no video stream
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440",
        "-t",
        "0.5",
        "-c:a",
        "aac",
        dp("audio.m4a").to_str().unwrap(),
    ]);
    check(&dp("audio.m4a"), &["no video stream"]);
    // missing
    check(&dp("missing.mp4"), &["no such file"]);
    // zero frames: a video stream with no frames in it
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=10",
        "-frames:v",
        "0",
        "-c:v",
        "libx264",
        dp("empty.mkv").to_str().unwrap(),
    ]);
    check(&dp("empty.mkv"), &["no frames"]);
    // corrupt mid-stream: the middle of a file overwritten with garbage
    let good = dp("good.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=96x64:rate=10",
        "-t",
        "3",
        "-c:v",
        "mpeg4",
        "-q:v",
        "2",
        good.to_str().unwrap(),
    ]);
    let mut b = std::fs::read(&good).unwrap();
    let n = b.len();
    for (k, v) in b[n / 3..2 * n / 3].iter_mut().enumerate() {
        *v = (k * 7919 % 251) as u8;
    }
    std::fs::write(dp("corrupt.mkv"), b).unwrap();
    check(&dp("corrupt.mkv"), &["corrupt"]);
    // a codec ffmpeg cannot decode (an unknown FourCC)
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=10",
        "-t",
        "0.3",
        "-c:v",
        "mpeg4",
        dp("m.avi").to_str().unwrap(),
    ]);
    let b = std::fs::read(dp("m.avi")).unwrap();
    let fourcc = b.windows(4).filter(|w| w == b"FMP4").count();
    assert!(fourcc > 0);
    let mut b = b;
    for i in 0..b.len() - 3 {
        if &b[i..i + 4] == b"FMP4" {
            b[i..i + 4].copy_from_slice(b"QQQQ"); // the AVI's FourCC, twice
        }
    }
    std::fs::write(dp("odd.avi"), b).unwrap();
    check(&dp("odd.avi"), &["unsupported video codec", "QQQQ"]);
}

#[test]
fn a_missing_ffmpeg_says_how_to_install_it() {
    let d = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_adain"))
        .args(["video", "-c", "in.mp4", "-s", "s.jpg", "-o", "out.mp4"])
        .env("PATH", d.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    fails_with(&o, &["ffmpeg", "apt-get install ffmpeg"]);
}

/// Presentation times of a file's video packets, sorted, from the first.
fn times(p: &Path) -> Vec<f64> {
    let o = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(p)
        .output()
        .unwrap();
    let mut t: Vec<f64> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.trim().trim_end_matches(',').parse().unwrap())
        .collect();
    t.sort_by(f64::total_cmp);
    let t0 = t[0];
    t.iter().map(|v| v - t0).collect()
}

#[test]
fn variable_frame_rate_timestamps_pass_through() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("vfr.mp4");
    // every fourth frame dropped, the others keep their times: irregular steps
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine",
        "-t",
        "1.2",
        "-vf",
        "select='not(eq(mod(n\\,4)\\,1))'",
        "-fps_mode",
        "vfr",
        "-c:v",
        "libx264",
        "-c:a",
        "aac",
        input.to_str().unwrap(),
    ]);
    let ti = times(&input);
    let steps: std::collections::BTreeSet<i64> = ti
        .windows(2)
        .map(|w| ((w[1] - w[0]) * 1000.0).round() as i64)
        .collect();
    assert!(steps.len() > 1, "the input is variable-rate: {steps:?}");
    for ext in ["mp4", "mkv"] {
        let out = d.path().join(format!("out.{ext}"));
        ok(&video(&input, &out, &["--temporal", "none"]));
        let to = times(&out);
        assert_eq!(to.len(), ti.len(), "{ext}: frame count");
        for (k, (a, b)) in ti.iter().zip(&to).enumerate() {
            assert!(
                (a - b).abs() <= 0.0015,
                "{ext}: frame {k} at {b}, input at {a}"
            );
        }
        assert_eq!(stream(&probe(&out), "audio").len(), 1);
    }
}

#[test]
fn matroska_with_millisecond_times_reads_back() {
    // 24 fps with 48 kHz AAC starts the video at 21 ms: in Matroska's
    // millisecond times (21, 63, 104, ...) two frames fall on one 1/24 s tick,
    // and a reader at the frame rate's time base stopped as if the file were
    // corrupt, on adain's own .mkv outputs too
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in.mp4");
    make_video_audio(&input, "96x64", "24", "2", 48000, &[]);
    let out = d.path().join("out.mkv");
    ok(&video(
        &input,
        &out,
        &["--temporal", "none", "--codec", "ffv1"],
    ));
    let o = adain(&[
        "eval-video",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("48 frames"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}
