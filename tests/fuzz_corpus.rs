//! Replays the fuzzing corpus (tests/fuzz/corpus/<target>/, minimized) and
//! every input a fuzzer found a bug with (tests/fuzz/regressions/<target>/)
//! through the fuzz targets' own entry functions, so a fixed crash, hang or
//! allocation blow-up stays fixed in the normal test suite. scripts/fuzz.sh
//! runs the fuzzers themselves.

#![allow(unexpected_cfgs)] // cfg(fuzzing): set by cargo-fuzz only

#[allow(dead_code)]
#[path = "fuzz/src/lib.rs"]
mod fuzz;

use std::path::Path;
use std::time::{Duration, Instant};

/// Any one input taking longer than this is a failure (libFuzzer's
/// `-timeout` in scripts/fuzz.sh is 10 s; a replay in a debug-free test
/// build should be far below it).
const SLOW: Duration = Duration::from_secs(10);

fn replay(target: &str, entry: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
    let mut files = Vec::new();
    for kind in ["corpus", "regressions"] {
        let dir = root.join(kind).join(target);
        if let Ok(rd) = std::fs::read_dir(&dir) {
            files.extend(
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file()),
            );
        }
    }
    files.sort();
    assert!(
        !files.is_empty(),
        "tests/fuzz/corpus/{target}: no inputs (scripts/fuzz.sh makes them)"
    );
    let mut failed = Vec::new();
    for f in &files {
        let data = std::fs::read(f).unwrap();
        let t = Instant::now();
        let ok = std::panic::catch_unwind(|| entry(&data)).is_ok();
        let took = t.elapsed();
        if !ok {
            failed.push(format!("{}: panicked", f.display()));
        } else if took > SLOW {
            failed.push(format!("{}: took {took:?}", f.display()));
        }
    }
    eprintln!("{target}: {} inputs replayed", files.len());
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs failed:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

#[test]
fn image() {
    replay("image", fuzz::image);
}

#[test]
fn mask() {
    replay("mask", fuzz::mask);
}

#[test]
fn weights() {
    replay("weights", fuzz::weights);
}

#[test]
fn pth() {
    replay("pth", fuzz::pth);
}

#[test]
fn config() {
    replay("config", fuzz::config);
}

#[test]
fn checkpoint() {
    replay("checkpoint", fuzz::checkpoint);
}

#[test]
fn server_form() {
    replay("server_form", fuzz::server_form);
}

#[test]
fn webcam_query() {
    replay("webcam_query", fuzz::webcam_query);
}

#[test]
fn probe() {
    replay("probe", fuzz::probe);
}

/// Each .pth a fuzzer (or a reader of candle's unpickler) found a bug with
/// is now refused with one line naming the file; the fixtures still read.
#[test]
fn pth_regressions_are_one_line_errors() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests/fuzz/regressions/pth");
    let mut n = 0;
    for f in std::fs::read_dir(&dir).unwrap() {
        let f = f.unwrap().path();
        let e = match adain::weights::read_pth(&f) {
            Ok(t) => panic!(
                "{}: read {} tensors, expected an error",
                f.display(),
                t.len()
            ),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            !e.contains('\n'),
            "{}: a multi-line error: {e}",
            f.display()
        );
        assert!(
            e.contains(&f.display().to_string()),
            "{}: the error does not name it: {e}",
            f.display()
        );
        n += 1;
    }
    assert!(n > 0);
    for f in ["small_zip.pth", "small_legacy.pth", "wrapped_zip.pth"] {
        let t = adain::weights::read_pth(&root.join("tests/fixtures/pth").join(f)).unwrap();
        assert!(!t.is_empty(), "{f}");
    }
}

/// A client's `style_size`/`content_size` cannot make the server resize a
/// picture past `--max-pixels` (a 40x24 upload at style_size=100000 asked
/// for 166666x100000 floats): a one-line error instead.
#[test]
fn huge_working_sizes_are_refused() {
    use adain::engine::{Job, Request, Settings};
    let (_, st) = fuzz::server();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(root.join("tests/fixtures/images/palette.png")).unwrap();
    let settings = Settings {
        style_size: 100_000,
        limits: st.config.defaults.limits,
        ..Settings::default()
    };
    let e = format!(
        "{:#}",
        st.engine
            .style_bytes(&bytes, "s.png", &settings)
            .err()
            .unwrap()
    );
    assert!(e.contains("--style-size") && !e.contains('\n'), "{e}");
    let content = adain::image_io::open_bytes(&bytes, "c.png", fuzz::MAX_PIXELS).unwrap();
    let style = st
        .engine
        .style_bytes(&bytes, "s.png", &st.config.defaults)
        .unwrap();
    let settings = Settings {
        content_size: 100_000,
        ..st.config.defaults.clone()
    };
    let r = Request {
        content: &content,
        content_name: "c.png",
        styles: &[style],
        job: &Job::Single(0),
        masks: &[],
        settings: &settings,
    };
    let e = format!("{:#}", st.engine.stylize(&r, &mut |_| {}).err().unwrap());
    assert!(e.contains("--content-size") && !e.contains('\n'), "{e}");
}
