//! `adain-train johnson` end to end on tiny generated data, through the same
//! trainer as the decoder: the loss goes down, resume is exact, the run's
//! model stylizes with `adain stylize --model`, export works, bad input is a
//! one-line error.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{Device, Tensor};

struct Data {
    dir: tempfile::TempDir,
}

impl Data {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("photos")).unwrap();
        for i in 0..5 {
            common::save(
                &common::gradient(56, 48, i),
                &dir.path().join(format!("photos/p{i}.png")),
            );
        }
        common::save(
            &common::gradient(64, 64, 9),
            &dir.path().join("painting.png"),
        );
        Self { dir }
    }
    fn p(&self, s: &str) -> PathBuf {
        self.dir.path().join(s)
    }
    fn train(&self, run: &str, extra: &[&str]) -> Output {
        let vgg = common::vgg_path();
        Command::new(env!("CARGO_BIN_EXE_adain-train"))
            .arg("johnson")
            .args(["--vgg", vgg.to_str().unwrap()])
            .args(["--content", self.p("photos").to_str().unwrap()])
            .args(["--style", self.p("painting.png").to_str().unwrap()])
            .args(["--out", self.p(run).to_str().unwrap()])
            .args([
                "--crop-size",
                "32",
                "--load-size",
                "40",
                "--batch-size",
                "2",
            ])
            .args([
                "--log-every",
                "1",
                "--sample-every",
                "2",
                "--save-every",
                "1000",
            ])
            .args(["--threads", "2", "--tv-weight", "1"])
            .args(extra)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }
}

fn log(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn tensors(f: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(f, &Device::Cpu).unwrap()
}

fn same(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) -> bool {
    a.len() == b.len()
        && a.iter().all(|(k, t)| {
            let x = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let y = b[k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits())
        })
}

#[test]
fn a_johnson_network_trains_resumes_exactly_and_stylizes() {
    let d = Data::new();
    let out = d.train("full", &["--max-iter", "6"]);
    common::ok(&out);
    let run = d.p("full");
    let recs = log(&run);
    assert_eq!(recs.len(), 6);
    for r in &recs {
        for k in ["loss_content", "loss_style", "loss_tv", "loss"] {
            assert!(r[k].as_f64().unwrap().is_finite(), "{k} in {r}");
        }
    }
    let first = recs[0]["loss"].as_f64().unwrap();
    let last = recs[5]["loss"].as_f64().unwrap();
    assert!(last < first, "the loss did not go down: {first} -> {last}");
    assert!(run.join("samples/iter_000002.jpg").is_file());
    let model = run.join("model.safetensors");
    assert!(model.is_file());
    assert!(!run.join("decoder.safetensors").exists());

    // Stopped at 3 and resumed: the same network, bit for bit, and the same log.
    common::ok(&d.train("cut", &["--max-iter", "3"]));
    let resumed = Command::new(env!("CARGO_BIN_EXE_adain-train"))
        .args(["--resume", d.p("cut").to_str().unwrap(), "--max-iter", "6"])
        .output()
        .unwrap();
    common::ok(&resumed);
    assert!(same(
        &tensors(&model),
        &tensors(&d.p("cut/model.safetensors"))
    ));
    let (a, b) = (log(&run), log(&d.p("cut")));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x["loss"], y["loss"]);
    }

    // The run's file and an exported f16 copy stylize with --model.
    let exported = d.p("johnson.safetensors");
    let out = Command::new(env!("CARGO_BIN_EXE_adain-train"))
        .args([
            "export",
            run.to_str().unwrap(),
            "--out",
            exported.to_str().unwrap(),
        ])
        .args(["--dtype", "f16"])
        .output()
        .unwrap();
    common::ok(&out);
    for (i, m) in [&model, &exported].iter().enumerate() {
        let dest = d.p(&format!("out{i}.png"));
        let out = Command::new(env!("CARGO_BIN_EXE_adain"))
            .args(["stylize", "--model", m.to_str().unwrap()])
            .args(["-c", d.p("photos/p0.png").to_str().unwrap()])
            .args(["-o", dest.to_str().unwrap()])
            .output()
            .unwrap();
        common::ok(&out);
        let img = image::open(&dest).unwrap();
        assert_eq!((img.width(), img.height()), (56, 48));
    }
}

#[test]
fn johnson_training_input_errors_are_one_line() {
    let d = Data::new();
    // A directory of paintings: a Johnson network learns one style.
    let vgg = common::vgg_path();
    let out = Command::new(env!("CARGO_BIN_EXE_adain-train"))
        .arg("johnson")
        .args(["--vgg", vgg.to_str().unwrap()])
        .args(["--content", d.p("photos").to_str().unwrap()])
        .args(["--style", d.p("photos").to_str().unwrap()])
        .args(["--out", d.p("dir").to_str().unwrap(), "--max-iter", "1"])
        .args(["--crop-size", "32", "--load-size", "40"])
        .output()
        .unwrap();
    common::fails_with(&out, &["photos", "one image, not a directory"]);
    let out = d.train("odd", &["--crop-size", "30", "--max-iter", "1"]);
    common::fails_with(&out, &["--crop-size must be a multiple of 4"]);
    let out = d.train("layer", &["--content-layer", "relu5_1", "--max-iter", "1"]);
    common::fails_with(&out, &["--content-layer relu5_1", "relu2_1"]);
    // The decoder's styles are cropped like its photos: --style-size is Johnson's.
    let out = Command::new(env!("CARGO_BIN_EXE_adain-train"))
        .args(["--vgg", vgg.to_str().unwrap()])
        .args(["--content", d.p("photos").to_str().unwrap()])
        .args(["--style", d.p("photos").to_str().unwrap()])
        .args(["--out", d.p("adain").to_str().unwrap(), "--max-iter", "1"])
        .args([
            "--crop-size",
            "32",
            "--load-size",
            "40",
            "--style-size",
            "64",
        ])
        .output()
        .unwrap();
    common::fails_with(&out, &["--style-size is for `adain-train johnson`"]);
}

/// `--style-size` sets the size the Gram targets are taken at: the 64 px
/// painting brought down to 32 gives another first-step style loss; asked
/// for 128 it is not blown up, so it scores as the default (512, also no
/// upscale) does, to the last digit.
#[test]
fn johnson_style_size_scales_the_style_down_never_up() {
    let d = Data::new();
    let first_style_loss = |run: &str, extra: &[&str]| {
        let mut args = vec!["--max-iter", "1"];
        args.extend_from_slice(extra);
        let out = d.train(run, &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        log(&d.p(run))[0]["loss_style"].as_f64().unwrap()
    };
    let default = first_style_loss("default", &[]);
    let up = first_style_loss("up", &["--style-size", "128"]);
    let down = first_style_loss("down", &["--style-size", "32"]);
    assert_eq!(default, up, "a 64 px style asked at 128 must stay 64 px");
    assert!(
        (down - default).abs() > 1e-3 * default.abs(),
        "the style brought down to 32 px should change the style loss: {down} vs {default}"
    );
}
