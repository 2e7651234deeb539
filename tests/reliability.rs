//! Fault injection (the reliability campaign): `adain-train` killed with
//! SIGKILL at random moments and inside the save window, then resumed; full
//! disks under checkpoint, export, stylize and video writes (a real tmpfs);
//! two trainers on one run; flipped bytes in weight files. These are the short
//! versions: `scripts/kill-campaign.sh` runs the kill campaign with 100 kills
//! (`ADAIN_KILLS`, `ADAIN_KILL_ITERS`, `ADAIN_KILL_SEED`, `ADAIN_KILL_REPORT`).

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use adain::atomic::TEMP_PREFIX;
use adain::weights::WeightFile;
use common::TrainData;
use rand::{Rng, SeedableRng};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The campaign's training flags: tiny crops, one thread (so a resumed run
/// can be compared bit for bit), a checkpoint every 3 steps, samples and the
/// loss plot often enough that their writes are killed too.
fn flags(iters: u64) -> Vec<String> {
    [
        "--max-iter",
        &iters.to_string(),
        "--threads",
        "1",
        "--save-every",
        "3",
        "--keep",
        "2",
        "--sample-every",
        "5",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn resume_cmd(run: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_adain-train"));
    c.arg("--resume")
        .arg(run)
        .args(["--vgg", common::vgg_path().to_str().unwrap()])
        .env_remove("RUST_LOG");
    c
}

/// Temp files (unfinished atomic writes) in the run and its checkpoints.
fn temps(run: &Path) -> BTreeSet<PathBuf> {
    [
        run.to_path_buf(),
        run.join("checkpoints"),
        run.join("samples"),
    ]
    .iter()
    .filter_map(|d| std::fs::read_dir(d).ok())
    .flatten()
    .flatten()
    .filter(|e| e.file_name().to_string_lossy().starts_with(TEMP_PREFIX))
    .map(|e| e.path())
    .collect()
}

/// A checkpoint being written (a new temp file in `checkpoints/`).
fn saving(run: &Path, stale: &BTreeSet<PathBuf>) -> bool {
    let dir = run.join("checkpoints");
    temps(run)
        .iter()
        .any(|p| p.parent() == Some(dir.as_path()) && !stale.contains(p))
}

/// Checkpoint iterations present, oldest first.
fn checkpoints(run: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(run.join("checkpoints"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix("ckpt_")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()
        })
        .collect();
    v.sort();
    v
}

/// Every file of the run under a final name loads: weight files (their
/// checksums verified), pictures, the config; every complete log line parses
/// and the log's iterations increase. A torn last log line (a kill inside an
/// append) is allowed: the trainer drops it. Returns the number of torn lines.
fn check_final_names(run: &Path) -> Result<usize, String> {
    let mut torn = 0;
    for d in [
        run.to_path_buf(),
        run.join("checkpoints"),
        run.join("samples"),
    ] {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(TEMP_PREFIX) || name == ".lock" || p.is_dir() {
                continue;
            }
            let bad = |e: String| format!("{}: {e}", p.display());
            match p.extension().and_then(|x| x.to_str()) {
                Some("safetensors") => {
                    WeightFile::load(&p).map_err(|e| bad(format!("{e:#}")))?;
                }
                Some("png") | Some("jpg") => {
                    image::open(&p).map_err(|e| bad(e.to_string()))?;
                }
                Some("toml") => {
                    let text = std::fs::read_to_string(&p).map_err(|e| bad(e.to_string()))?;
                    text.parse::<toml::Table>()
                        .map_err(|e| bad(e.to_string()))?;
                }
                Some("jsonl") => {
                    let text = std::fs::read_to_string(&p).map_err(|e| bad(e.to_string()))?;
                    let mut last = 0;
                    let lines: Vec<&str> = text.split_inclusive('\n').collect();
                    for (i, l) in lines.iter().enumerate() {
                        match serde_json::from_str::<serde_json::Value>(l) {
                            Ok(v) => {
                                let it = v["iter"].as_u64().ok_or_else(|| bad("no iter".into()))?;
                                if it <= last {
                                    return Err(bad(format!("iteration {it} after {last}")));
                                }
                                last = it;
                            }
                            Err(_) if i + 1 == lines.len() && !l.ends_with('\n') => torn += 1,
                            Err(e) => return Err(bad(format!("line {}: {e}", i + 1))),
                        }
                    }
                }
                _ => return Err(bad("unexpected file".into())),
            }
        }
    }
    Ok(torn)
}

/// A trainer whose stderr lines arrive on a channel.
struct Trainer {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Trainer {
    fn spawn(mut c: Command, delay_ms: u64) -> Trainer {
        let mut child = c
            .env("ADAIN_FAULT_COMMIT_DELAY_MS", delay_ms.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Trainer {
            child,
            lines,
            seen: vec![],
        }
    }
    fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }
    /// SIGKILL; then every line it wrote.
    fn kill(mut self) -> Vec<String> {
        let _ = self.child.kill();
        self.child.wait().unwrap();
        self.seen.extend(self.lines.iter());
        self.seen
    }
}

/// The iteration a resumed trainer said it continues from (0 when it
/// started over), if it got that far.
fn resumed_at(lines: &[String]) -> Option<u64> {
    lines.iter().find_map(|l| {
        if l.contains("starting over from iteration 0") {
            return Some(0);
        }
        let rest = &l[l.find("resuming ")?..];
        let n = &rest[rest.find(" at iteration ")? + 14..];
        n.split_whitespace().next()?.parse().ok()
    })
}

fn losses(run: &Path) -> Vec<(u64, String, String, String)> {
    std::fs::read_to_string(run.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let f = |k: &str| v[k].to_string();
            (
                v["iter"].as_u64().unwrap(),
                f("loss_content"),
                f("loss_style"),
                f("loss"),
            )
        })
        .collect()
}

fn tensors(p: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(k, t)| (k, t.data().to_vec()))
        .collect();
    v.sort();
    v
}

/// SIGKILL at random moments, every third one inside a save (a temp file
/// seen in the run, with each commit held open by the test-only delay),
/// resuming after each. Every resume must continue from the newest
/// checkpoint, checkpoints never go backwards, every file under a final name
/// loads after every kill, stale temp files are gone once a trainer has
/// started, and the final decoder and log equal an uninterrupted run's bit
/// for bit.
#[test]
fn kill_campaign() {
    let kills: usize = env_or("ADAIN_KILLS", 6);
    // enough that the kills, which land within a few steps of a start, do
    // not reach the end first (checked: the test says so if they do)
    let iters: u64 = env_or("ADAIN_KILL_ITERS", 3 * kills as u64 + 12);
    let seed: u64 = env_or("ADAIN_KILL_SEED", 21);
    let delay_ms: u64 = env_or("ADAIN_KILL_DELAY_MS", 150);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let d = TrainData::new();
    let flags = flags(iters);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let t0 = Instant::now();
    common::ok(&d.run("reference", &flags));
    let reference_secs = t0.elapsed().as_secs_f64();
    // random moments span start-up and two checkpoint intervals on this machine
    let step: f64 = std::fs::read_to_string(d.p("reference/log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["secs_per_iter"]
                .as_f64()
                .unwrap()
        })
        .sum::<f64>()
        / iters as f64;
    let startup = (reference_secs - step * iters as f64).max(0.2);
    let latest_kill = startup + 6.0 * step;

    let run = d.p("run");
    let mut report = vec![];
    let (mut in_window, mut other_writes, mut resumes_checked, mut torn_logs) = (0, 0, 0, 0);
    let mut newest_before: Option<u64> = None;
    let t0 = Instant::now();
    for k in 0..kills {
        let stale = temps(&run);
        // until the run has its config.toml (killed before), the user's own
        // command starts it again; from then on --resume continues it
        let cmd = if run.join("config.toml").is_file() {
            resume_cmd(&run)
        } else {
            d.cmd("run", &flags)
        };
        let mut t = Trainer::spawn(cmd, delay_ms);
        let targeted = k % 3 == 2;
        let started = Instant::now();
        let wait = Duration::from_secs_f64(rng.random_range(0.02..latest_kill));
        loop {
            assert!(
                !t.exited(),
                "kill {k}: the trainer ended before it was killed (raise ADAIN_KILL_ITERS): {:?}",
                t.kill()
            );
            if (targeted && saving(&run, &stale)) || (!targeted && started.elapsed() >= wait) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "kill {k}: no save within 120 s"
            );
            std::thread::sleep(Duration::from_millis(if targeted { 1 } else { 5 }));
        }
        let window = saving(&run, &stale);
        let other_write = !window && temps(&run).difference(&stale).next().is_some();
        let lines = t.kill();
        in_window += window as usize;
        other_writes += other_write as usize;
        let at = resumed_at(&lines);
        if let Some(at) = at {
            resumes_checked += 1;
            assert_eq!(
                Some(at),
                newest_before.or(Some(0)),
                "kill {k}: resumed from {at}, newest checkpoint was {newest_before:?}"
            );
            let now = temps(&run);
            let left: Vec<_> = stale.intersection(&now).collect();
            assert!(
                left.is_empty(),
                "kill {k}: stale temp files not removed at start: {left:?}"
            );
        }
        torn_logs += check_final_names(&run).unwrap_or_else(|e| panic!("after kill {k}: {e}"));
        let newest = checkpoints(&run).last().copied();
        assert!(
            newest >= newest_before,
            "kill {k}: checkpoints went back from {newest_before:?} to {newest:?}"
        );
        report.push(format!(
            "kill {k:3}: after {:5.2} s, {}{}, resumed at {}, newest checkpoint now {}",
            started.elapsed().as_secs_f64(),
            if targeted {
                "aimed at a save"
            } else {
                "random moment"
            },
            if window {
                ", inside a checkpoint save"
            } else if other_write {
                ", inside another write"
            } else {
                ""
            },
            at.map_or("- (killed before)".into(), |a| a.to_string()),
            newest.map_or("none".into(), |n| n.to_string()),
        ));
        newest_before = newest;
    }
    // the last resume runs to the end, without the delay
    let o = resume_cmd(&run).output().unwrap();
    common::ok(&o);
    let identical =
        tensors(&run.join("decoder.safetensors")) == tensors(&d.p("reference/decoder.safetensors"));
    let same_log = losses(&run) == losses(&d.p("reference"));
    let summary = format!(
        "kill campaign: {kills} SIGKILLs (seed {seed}, {iters} iterations, commit delay {delay_ms} ms, \
         random moments up to {latest_kill:.2} s after a start), {in_window} inside a checkpoint save, \
         {other_writes} inside another atomic write (config, log rewrite, samples, plot), {resumes_checked} resumes checked against the newest checkpoint, \
         {torn_logs} torn log lines seen (dropped on resume), every file under a final name loaded after every kill; \
         final decoder bit-identical to the uninterrupted run: {}; same losses at every step: {}; \
         uninterrupted run {reference_secs:.1} s, campaign {:.1} s",
        if identical { "yes" } else { "NO" },
        if same_log { "yes" } else { "NO" },
        t0.elapsed().as_secs_f64()
    );
    eprintln!("{}\n{summary}", report.join("\n"));
    if let Ok(p) = std::env::var("ADAIN_KILL_REPORT") {
        std::fs::write(p, format!("{}\n\n{summary}\n", report.join("\n"))).unwrap();
    }
    assert!(
        in_window >= kills / 3,
        "only {in_window} of {kills} kills inside the save window"
    );
    assert!(
        identical,
        "final decoder differs from the uninterrupted run"
    );
    assert!(same_log, "losses differ from the uninterrupted run");
}

/// A second trainer on a run directory is refused while the first lives; a
/// SIGKILLed trainer leaves no lock behind.
#[test]
fn a_run_directory_has_one_trainer() {
    let d = TrainData::new();
    let run = d.p("run");
    let mut first = Trainer::spawn(
        d.cmd("run", &["--max-iter", "100000", "--save-every", "2"]),
        0,
    );
    let t = Instant::now();
    while checkpoints(&run).is_empty() {
        assert!(
            !first.exited() && t.elapsed() < Duration::from_secs(120),
            "no checkpoint"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = resume_cmd(&run).output().unwrap();
    common::fails_with(
        &o,
        &[
            run.to_str().unwrap(),
            "another adain-train (pid",
            "is using this run directory",
        ],
    );
    // a fresh start with --out on the same directory is refused the same way
    let o = d.run("run", &["--max-iter", "3"]);
    common::fails_with(&o, &["another adain-train"]);
    first.kill();
    let next = checkpoints(&run).last().unwrap() + 1;
    let o = resume_cmd(&run)
        .args(["--max-iter", &next.to_string()])
        .output()
        .unwrap();
    common::ok(&o);
}

/// A tmpfs of `size` mounted on a fresh directory (unmounted when dropped).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount");
        assert!(
            o.status.success(),
            "cannot mount a tmpfs (the disk-full tests need root): {}",
            common::stderr(&o)
        );
        Tmpfs { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    /// Fills the filesystem, leaving `leave` bytes free.
    fn fill(&self, leave: u64) {
        use std::io::Write;
        let p = self.path().join("filler");
        let mut f = std::fs::File::create(&p).unwrap();
        let block = vec![7u8; 1 << 16];
        while f.write_all(&block).is_ok() {}
        let _ = f.flush();
        let len = std::fs::metadata(&p).unwrap().len();
        f.set_len(len.saturating_sub(leave)).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// The state of a directory tree: (relative path, sha256) of every file.
fn snapshot(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut v = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if e.file_name() != "filler" {
                let sha = adain::weights::sha256_file(&p).unwrap();
                v.push((p.strip_prefix(dir).unwrap().to_path_buf(), sha));
            }
        }
    }
    v.sort();
    v
}

/// A write that hits a full disk: exit 1, one error line naming `path` and
/// the cause; every file in `kept` unchanged; no file left under a temp name;
/// no other new file except under `new_ok` (a resumable job's parts).
fn full_disk_refused(
    o: &Output,
    path: &str,
    kept: &[&Path],
    before: &[(PathBuf, String)],
    root: &Path,
    new_ok: Option<&str>,
) {
    common::fails_with(o, &[path, "No space left on device"]);
    let after = snapshot(root);
    for k in kept {
        let rel = k.strip_prefix(root).unwrap();
        let sha =
            |s: &[(PathBuf, String)]| s.iter().find(|(p, _)| p == rel).map(|(_, h)| h.clone());
        assert!(sha(before).is_some(), "{}: missing before", k.display());
        assert_eq!(sha(before), sha(&after), "{}: changed or lost", k.display());
    }
    for (p, _) in &after {
        let s = p.to_string_lossy();
        assert!(!s.contains(TEMP_PREFIX), "temp file left: {s}");
        let existed = before.iter().any(|(q, _)| q == p);
        assert!(
            existed || new_ok.is_some_and(|n| s.starts_with(n)),
            "new file after the failure: {s}"
        );
    }
}

#[test]
fn a_full_disk_loses_no_checkpoint_and_no_export() {
    let fs = Tmpfs::new("160m");
    let d = TrainData::new();
    let run = fs.path().join("run");
    let o = d
        .cmd(
            "unused",
            &["--max-iter", "2", "--save-every", "2", "--threads", "2"],
        )
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    common::ok(&o);
    let export = fs.path().join("exported.safetensors");
    let export_cmd = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_adain-train"));
        c.arg("export")
            .arg(&run)
            .arg("--out")
            .arg(&export)
            .arg("--overwrite");
        c
    };
    common::ok(&export_cmd().output().unwrap());
    fs.fill(2 << 20);
    let before = snapshot(fs.path());
    let o = resume_cmd(&run).args(["--max-iter", "4"]).output().unwrap();
    let (ckpt, latest) = (
        run.join("checkpoints/ckpt_0000002.safetensors"),
        run.join("decoder.safetensors"),
    );
    let kept = [ckpt.as_path(), latest.as_path(), export.as_path()];
    let failed = run.join("checkpoints/ckpt_0000004.safetensors");
    full_disk_refused(
        &o,
        failed.to_str().unwrap(),
        &kept,
        &before,
        fs.path(),
        None,
    );
    WeightFile::load(&ckpt).unwrap();
    let o = export_cmd().output().unwrap();
    full_disk_refused(
        &o,
        export.to_str().unwrap(),
        &kept,
        &before,
        fs.path(),
        None,
    );
}

#[test]
fn a_full_disk_loses_no_stylized_picture() {
    let fs = Tmpfs::new("4m");
    let dir = tempfile::tempdir().unwrap();
    let (content, style) = (dir.path().join("c.png"), dir.path().join("s.png"));
    common::gradient(96, 80, 1).save(&content).unwrap();
    common::gradient(64, 64, 2).save(&style).unwrap();
    let out = fs.path().join("out.png");
    let stylize = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_adain"));
        c.args(["stylize", "--overwrite", "-c"])
            .arg(&content)
            .arg("-s")
            .arg(&style)
            .arg("-o")
            .arg(&out);
        c.output().unwrap()
    };
    common::ok(&stylize());
    fs.fill(1024);
    let before = snapshot(fs.path());
    full_disk_refused(
        &stylize(),
        out.to_str().unwrap(),
        &[&out],
        &before,
        fs.path(),
        None,
    );
}

#[test]
fn a_full_disk_loses_no_video() {
    let fs = Tmpfs::new("8m");
    let dir = tempfile::tempdir().unwrap();
    let (clip, style) = (dir.path().join("in.mp4"), dir.path().join("s.png"));
    let o = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x48:rate=10:duration=1",
            "-pix_fmt",
            "yuv420p",
        ])
        .arg(&clip)
        .output()
        .expect("ffmpeg is installed by scripts/system-deps.sh");
    assert!(o.status.success(), "{}", common::stderr(&o));
    common::gradient(64, 64, 2).save(&style).unwrap();
    let out = fs.path().join("out.mp4");
    let video = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_adain"));
        c.args(["video", "--overwrite", "--quiet", "-c"])
            .arg(&clip)
            .arg("-s")
            .arg(&style)
            .arg("-o")
            .arg(&out);
        c.output().unwrap()
    };
    common::ok(&video());
    fs.fill(4096);
    let before = snapshot(fs.path());
    // the failing write may be a part of the job (kept for --resume once
    // there is room): the message names it, inside `.out.mp4.adain-parts`
    let o = video();
    full_disk_refused(
        &o,
        "out.mp4",
        &[&out],
        &before,
        fs.path(),
        Some(".out.mp4.adain-parts/"),
    );
    eprintln!("{}", common::stderr(&o));
}

/// One flipped byte in a decoder's tensor data: `adain stylize` refuses it
/// in one line naming the file; the same tensors without a checksum (a
/// foreign file) work, with a warning.
#[test]
fn a_flipped_weight_byte_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.safetensors");
    common::write_formula_decoder(&good, 1.0);
    let mut bytes = std::fs::read(&good).unwrap();
    let n = bytes.len();
    bytes[n - 1000] ^= 0x01;
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, &bytes).unwrap();
    let (content, out) = (dir.path().join("c.png"), dir.path().join("o.png"));
    common::gradient(64, 48, 1).save(&content).unwrap();
    let stylize = |decoder: &Path| {
        Command::new(env!("CARGO_BIN_EXE_adain"))
            .args(["stylize", "--overwrite", "-c"])
            .arg(&content)
            .arg("-s")
            .arg(&content)
            .arg("-o")
            .arg(&out)
            .arg("--decoder")
            .arg(decoder)
            .output()
            .unwrap()
    };
    common::fails_with(&stylize(&bad), &[bad.to_str().unwrap(), "corrupted"]);
    assert!(!out.exists());
    // strip the checksum: safetensors' own writer, same tensors, no metadata
    let st_bytes = std::fs::read(&good).unwrap();
    let st = safetensors::SafeTensors::deserialize(&st_bytes).unwrap();
    let foreign = dir.path().join("foreign.safetensors");
    safetensors::serialize_to_file(st.tensors(), None, &foreign).unwrap();
    let o = stylize(&foreign);
    common::ok(&o);
    assert!(
        common::stderr(&o).contains("no `tensors_sha256` checksum"),
        "{}",
        common::stderr(&o)
    );
    // the shipped weights verify silently
    let o = stylize(&good);
    common::ok(&o);
    assert!(
        !common::stderr(&o).contains("checksum"),
        "{}",
        common::stderr(&o)
    );
}
