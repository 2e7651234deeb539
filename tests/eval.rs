//! `adain eval` end to end on tiny images (--size 32): self-stylized scores are
//! reproduced by `--outputs` on the saved files, identical images score zero
//! (and SSIM one), and every error is one line naming the file.

mod common;
use common::{fails_with, gradient, ok, save};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use image::{Rgb, RgbImage};
use serde_json::Value;

struct Env {
    dir: tempfile::TempDir,
    decoder: PathBuf,
}

/// Two contents (one not square, so the centre crop is exercised) and two styles.
fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let decoder = dir.path().join("decoder.safetensors");
    common::write_formula_decoder(&decoder, 0.003);
    let e = Env { dir, decoder };
    save(&gradient(40, 32, 0), &e.p("content/c0.png"));
    save(&gradient(32, 32, 1), &e.p("content/c1.png"));
    save(&gradient(36, 36, 2), &e.p("style/s0.png"));
    save(&stripes(48, 40), &e.p("style/s1.png"));
    e
}

impl Env {
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn s(&self, name: &str) -> String {
        self.p(name).to_str().unwrap().to_owned()
    }
    /// `adain eval` on content/ and style/ at 32 px with the test weights.
    fn eval(&self, args: &[&str]) -> Output {
        let vgg = common::vgg_path();
        let (c, s) = (self.s("content"), self.s("style"));
        let mut all = vec![
            "eval",
            "--vgg",
            vgg.to_str().unwrap(),
            "-c",
            &c,
            "-s",
            &s,
            "--size",
            "32",
            "--thumb",
            "16",
            "-q",
        ];
        if !args.contains(&"--outputs") {
            all.extend_from_slice(&["--decoder", self.decoder.to_str().unwrap()]);
        }
        all.extend_from_slice(args);
        run(&all)
    }

    /// `adain stylize` of every content x style pair into `out/`, square at
    /// 32 px as `adain eval` stylizes them, saved as PNG; `extra` flags added.
    fn stylize_as_eval_does(&self, out: &str, extra: &[&str]) -> Output {
        let vgg = common::vgg_path();
        let (c, s, o) = (self.s("content"), self.s("style"), self.s(out));
        let mut all = vec!["stylize", "--vgg", vgg.to_str().unwrap()];
        all.extend_from_slice(&["--decoder", self.decoder.to_str().unwrap()]);
        all.extend_from_slice(&["-c", &c, "-s", &s, "-o", &o, "--crop"]);
        all.extend_from_slice(&["--content-size", "32", "--style-size", "32"]);
        all.extend_from_slice(&["--ext", "png", "-q"]);
        all.extend_from_slice(extra);
        run(&all)
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adain"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("ADAIN_WEIGHTS")
        .output()
        .unwrap()
}

fn stripes(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let v = if (x / 3 + y / 5) % 2 == 0 { 230 } else { 20 };
        Rgb([v, 255 - v, (x * 5 % 256) as u8])
    })
}

fn report(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap()
}

const METRICS: [&str; 4] = ["style_musigma", "style_gram", "content_in", "ssim"];

/// (content, style, [metrics]) of every pair of a section.
fn pairs(r: &Value, section: &str) -> Vec<(String, String, [f64; 4])> {
    r[section]["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["content"].as_str().unwrap().to_owned(),
                p["style"].as_str().unwrap().to_owned(),
                METRICS.map(|m| p[m].as_f64().unwrap()),
            )
        })
        .collect()
}

/// Same pairs, metrics equal within `rel` relative (absolute for values near 0).
fn assert_same(a: &Value, b: &Value, section: &str, rel: f64) {
    let (pa, pb) = (pairs(a, section), pairs(b, section));
    assert_eq!(pa.len(), pb.len(), "{section}: pair count");
    let mut worst = 0f64;
    for (x, y) in pa.iter().zip(&pb) {
        assert_eq!((&x.0, &x.1), (&y.0, &y.1));
        for ((u, v), name) in x.2.iter().zip(&y.2).zip(METRICS) {
            let d = (u - v).abs() / u.abs().max(v.abs()).max(1e-6);
            worst = worst.max(d);
            assert!(d <= rel, "{section} {} x {} {name}: {u} vs {v}", x.0, x.1);
        }
    }
    eprintln!("{section}: largest relative difference {worst:.1e}");
}

/// Metrics of identical images: content terms for output = content, style terms
/// for output = style.
fn check_baselines(r: &Value) {
    for (_, _, m) in pairs(r, "output_is_content") {
        assert_eq!(m[2], 0.0, "content_in of the content itself");
        assert!(
            (m[3] - 1.0).abs() < 1e-12,
            "ssim of the content itself: {}",
            m[3]
        );
        assert!(m[0] > 0.0 && m[1] > 0.0);
    }
    for (_, _, m) in pairs(r, "output_is_style") {
        assert_eq!((m[0], m[1]), (0.0, 0.0), "style terms of the style itself");
        assert!(m[2] > 0.0 && m[3] < 1.0);
    }
}

#[test]
fn outputs_mode_reproduces_self_stylized_scores() {
    let e = env();
    ok(&e.eval(&["-o", &e.s("rep1"), "--save-outputs", &e.s("outs")]));
    let r1 = report(&e.p("rep1"));
    assert_eq!(r1["stylized"]["pairs"].as_array().unwrap().len(), 4);
    assert_eq!(r1["contents"], serde_json::json!(["c0", "c1"]));
    assert_eq!(r1["styles"], serde_json::json!(["s0", "s1"]));
    for p in r1["stylized"]["pairs"].as_array().unwrap() {
        assert!(p["seconds"].as_f64().unwrap() > 0.0);
        let out = PathBuf::from(p["output"].as_str().unwrap());
        assert!(out.ends_with(format!(
            "{}_stylized_{}.png",
            p["content"].as_str().unwrap(),
            p["style"].as_str().unwrap()
        )));
        assert_eq!(image::image_dimensions(&out).unwrap(), (32, 32));
    }
    assert!(r1["stylized"]["mean_seconds"].as_f64().unwrap() > 0.0);
    check_baselines(&r1);
    // report files: csv has a header, 4 pairs + a mean per set; the sheet is 3x3 thumbs
    let csv = std::fs::read_to_string(e.p("rep1/metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 3 * 5);
    assert!(
        csv.starts_with("set,row,content,style,style_musigma,style_gram,content_in,ssim,seconds\n")
    );
    assert_eq!(
        image::image_dimensions(e.p("rep1/sheet.jpg")).unwrap(),
        (3 * 16 + 2, 3 * 16 + 2)
    );

    // The same files scored with --outputs: the self-stylized output is scored as
    // the 8-bit image saved as PNG, so the scores agree to float rounding.
    ok(&e.eval(&["-o", &e.s("rep2"), "--outputs", &e.s("outs")]));
    let r2 = report(&e.p("rep2"));
    for s in ["stylized", "output_is_content", "output_is_style"] {
        assert_same(&r1, &r2, s, 1e-6);
    }
    for p in r2["stylized"]["pairs"].as_array().unwrap() {
        assert!(p.get("seconds").is_none(), "no time for --outputs");
    }
    assert!(r2["stylized"].get("mean_seconds").is_none());
    assert!(r2["source"].as_str().unwrap().starts_with("files in"));

    // ... and so are `adain stylize --crop` outputs at the same size.
    ok(&e.stylize_as_eval_does("by_stylize", &[]));
    ok(&e.eval(&["-o", &e.s("rep3"), "--outputs", &e.s("by_stylize")]));
    assert_same(&r1, &report(&e.p("rep3")), "stylized", 1e-6);

    // The scores can tell outputs apart: swapping two outputs changes them.
    let (a, b) = (
        e.p("outs/c0_stylized_s0.png"),
        e.p("outs/c0_stylized_s1.png"),
    );
    std::fs::rename(&a, e.p("tmp.png")).unwrap();
    std::fs::rename(&b, &a).unwrap();
    std::fs::rename(e.p("tmp.png"), &b).unwrap();
    ok(&e.eval(&["-o", &e.s("rep4"), "--outputs", &e.s("outs")]));
    let (p1, p4) = (
        pairs(&r1, "stylized"),
        pairs(&report(&e.p("rep4")), "stylized"),
    );
    assert_ne!(p1[0].2[0], p4[0].2[0]);
    assert_eq!(p1[2].2, p4[2].2, "other pairs unchanged");
}

#[test]
fn alpha_is_scored_as_stylize_makes_it() {
    let e = env();
    ok(&e.eval(&["-o", &e.s("full")]));
    ok(&e.eval(&["-o", &e.s("half"), "--alpha", "0.5"]));
    let (full, half) = (report(&e.p("full")), report(&e.p("half")));
    assert!(half["source"].as_str().unwrap().contains("alpha 0.5"));
    // a different operating point: every pair's scores move
    for (f, h) in pairs(&full, "stylized")
        .iter()
        .zip(pairs(&half, "stylized"))
    {
        assert_ne!(f.2, h.2, "{} x {}", f.0, f.1);
    }
    // and they are the scores of `adain stylize --alpha 0.5` at the same size
    ok(&e.stylize_as_eval_does("by_stylize", &["--alpha", "0.5"]));
    ok(&e.eval(&["-o", &e.s("rep"), "--outputs", &e.s("by_stylize")]));
    assert_same(&half, &report(&e.p("rep")), "stylized", 1e-6);
    fails_with(
        &e.eval(&["--alpha", "1.5"]),
        &["--alpha 1.5", "between 0 and 1"],
    );
}

#[test]
fn identical_images_score_zero() {
    let e = env();
    // every output is the content itself, then the style itself (other sizes and
    // formats: they go through the same resize and crop)
    for (dir, from) in [("as_content", "content"), ("as_style", "style")] {
        for c in ["c0", "c1"] {
            for s in ["s0", "s1"] {
                let src = e.p(&format!(
                    "{from}/{}.png",
                    if from == "content" { c } else { s }
                ));
                let dst = e.p(&format!("{dir}/{c}_stylized_{s}.png"));
                std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
                std::fs::copy(src, dst).unwrap();
            }
        }
    }
    ok(&e.eval(&["-o", &e.s("rc"), "--outputs", &e.s("as_content")]));
    let r = report(&e.p("rc"));
    assert_same(&r, &r, "stylized", 0.0);
    for (_, _, m) in pairs(&r, "stylized") {
        assert_eq!(m[2], 0.0);
        assert!((m[3] - 1.0).abs() < 1e-12);
    }
    let (a, b) = (pairs(&r, "stylized"), pairs(&r, "output_is_content"));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.2, y.2, "output = content scores as the baseline");
    }
    ok(&e.eval(&["-o", &e.s("rs"), "--outputs", &e.s("as_style")]));
    let r = report(&e.p("rs"));
    for (_, _, m) in pairs(&r, "stylized") {
        assert_eq!((m[0], m[1]), (0.0, 0.0));
    }
    let mean = &r["stylized"]["mean"];
    assert_eq!(mean["style_musigma"].as_f64(), Some(0.0));
    assert_eq!(
        mean["content_in"].as_f64(),
        r["output_is_style"]["mean"]["content_in"].as_f64()
    );
}

#[test]
fn missing_outputs_error_or_skip() {
    let e = env();
    ok(&e.eval(&["-o", &e.s("rep1"), "--save-outputs", &e.s("outs")]));
    std::fs::remove_file(e.p("outs/c1_stylized_s0.png")).unwrap();
    std::fs::remove_file(e.p("outs/c1_stylized_s1.png")).unwrap();
    let o = e.eval(&["-o", &e.s("rep2"), "--outputs", &e.s("outs")]);
    fails_with(&o, &["c1_stylized_s0", "2 of 4", "--allow-missing"]);
    assert!(!e.p("rep2").exists(), "nothing written on error");
    ok(&e.eval(&[
        "-o",
        &e.s("rep2"),
        "--outputs",
        &e.s("outs"),
        "--allow-missing",
    ]));
    let r = report(&e.p("rep2"));
    assert_eq!(
        r["missing"],
        serde_json::json!(["c1_stylized_s0", "c1_stylized_s1"])
    );
    for s in ["stylized", "output_is_content", "output_is_style"] {
        assert_eq!(r[s]["pairs"].as_array().unwrap().len(), 2, "{s}");
    }
    // two files for one pair is ambiguous
    std::fs::copy(
        e.p("outs/c0_stylized_s0.png"),
        e.p("outs/c0_stylized_s0.jpg"),
    )
    .unwrap();
    let o = e.eval(&[
        "-o",
        &e.s("rep3"),
        "--outputs",
        &e.s("outs"),
        "--allow-missing",
    ]);
    fails_with(
        &o,
        &[
            "c0_stylized_s0.jpg",
            "c0_stylized_s0.png",
            "several outputs",
        ],
    );
    // no output at all
    std::fs::create_dir_all(e.p("empty")).unwrap();
    let o = e.eval(&[
        "-o",
        &e.s("rep3"),
        "--outputs",
        &e.s("empty"),
        "--allow-missing",
    ]);
    fails_with(&o, &["empty", "no outputs named"]);
}

#[test]
fn errors_are_one_line() {
    let e = env();
    // the report is not replaced without --overwrite
    ok(&e.eval(&["-o", &e.s("rep")]));
    let before = std::fs::read(e.p("rep/metrics.json")).unwrap();
    fails_with(
        &e.eval(&["-o", &e.s("rep")]),
        &["metrics.json", "--overwrite"],
    );
    assert_eq!(std::fs::read(e.p("rep/metrics.json")).unwrap(), before);
    ok(&e.eval(&["-o", &e.s("rep"), "--overwrite"]));
    // a broken image names the file
    std::fs::write(e.p("content/broken.jpg"), b"not a jpeg").unwrap();
    fails_with(&e.eval(&["-o", &e.s("r2")]), &["broken.jpg", "decode"]);
    std::fs::remove_file(e.p("content/broken.jpg")).unwrap();
    // a broken output too
    std::fs::create_dir_all(e.p("outs")).unwrap();
    for c in ["c0", "c1"] {
        for s in ["s0", "s1"] {
            std::fs::copy(
                e.p("style/s0.png"),
                e.p(&format!("outs/{c}_stylized_{s}.png")),
            )
            .unwrap();
        }
    }
    std::fs::write(e.p("outs/c1_stylized_s1.png"), b"truncated").unwrap();
    fails_with(
        &e.eval(&["-o", &e.s("r2"), "--outputs", &e.s("outs")]),
        &["c1_stylized_s1.png", "decode"],
    );
    fails_with(
        &e.eval(&["-o", &e.s("r2"), "--outputs", &e.s("nowhere")]),
        &["nowhere", "no such outputs directory"],
    );
    // two inputs with one name
    save(&gradient(32, 32, 3), &e.p("content/sub/c0.jpg"));
    fails_with(&e.eval(&["-o", &e.s("r2")]), &["c0", "same name"]);
    std::fs::remove_dir_all(e.p("content/sub")).unwrap();
    fails_with(&e.eval(&["-o", &e.s("r2"), "--size", "8"]), &["--size 8"]);
    // saving outputs over an input is refused
    std::fs::copy(e.p("content/c0.png"), e.p("content/c0_stylized_s0.png")).unwrap();
    let o = e.eval(&[
        "-o",
        &e.s("r2"),
        "--save-outputs",
        &e.s("content"),
        "--overwrite",
    ]);
    fails_with(&o, &["c0_stylized_s0.png", "is an input"]);
    std::fs::remove_file(e.p("content/c0_stylized_s0.png")).unwrap();
}

#[test]
fn no_decoder_says_how_to_get_one() {
    let e = env();
    // a copy of the binary outside the project, so no weights/ is next to it
    let bin = common::installed_copy(env!("CARGO_BIN_EXE_adain"), e.dir.path());
    let vgg = common::vgg_path();
    let o = Command::new(&bin)
        .args([
            "eval",
            "--vgg",
            vgg.to_str().unwrap(),
            "-c",
            &e.s("content"),
            "-s",
            &e.s("style"),
            "-o",
            &e.s("rep"),
            "--size",
            "32",
        ])
        .env("ADAIN_WEIGHTS", e.p("empty"))
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    fails_with(&o, &["no decoder found", "adain-train", "adain convert"]);
}

/// `--precision bf16` changes only the stylization: the report says so, the
/// baselines (no stylization) score exactly as in f32, and the stylized scores
/// stay near the f32 ones.
#[test]
fn bf16_stylization_keeps_f32_metrics() {
    let e = env();
    ok(&e.eval(&["-o", &e.s("f32")]));
    ok(&e.eval(&["-o", &e.s("bf16"), "--precision", "bf16"]));
    let (a, b) = (report(&e.p("f32")), report(&e.p("bf16")));
    // the report names the precision that ran: f32 on a CPU without AMX
    let ran = adain::conv::effective(adain::conv::Precision::Bf16);
    assert!(b["source"]
        .as_str()
        .unwrap()
        .contains(&format!("precision {ran}")));
    assert!(a["source"].as_str().unwrap().contains("precision f32"));
    assert_same(&a, &b, "output_is_content", 0.0);
    assert_same(&a, &b, "output_is_style", 0.0);
    assert_same(&a, &b, "stylized", 0.1);
}
