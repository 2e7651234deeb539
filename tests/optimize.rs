//! `adain optimize` (Gatys et al.'s method): the objective, its image gradient
//! and the L-BFGS against PyTorch (tests/fixtures/optimize_parity.safetensors,
//! written by scripts/make_optimize_fixtures.py, whose docstring is the
//! contract), and the `optimize`, `reconstruct` and `grid` commands end to end.

mod common;
use common::{fails_with, ok, stderr};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use adain::optim::{Lbfgs, LbfgsConfig, LineSearch};
use adain::optimize::{self, LossConfig, Method, Objective, StyleLoss};
use adain::Encoder;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use image::{Rgb, RgbImage};

// ------------------------------------------------------------------ parity

const LAYERS: [&str; 4] = ["relu1_1", "relu2_1", "relu3_1", "relu4_1"];
/// The per-layer style weights, style weight and TV weight of the fixture.
const LW: [f64; 4] = [1.0, 0.5, 2.0, 1.0];
const SW: f64 = 0.05;
const TVW: f64 = 1e6;

fn encoder() -> Encoder {
    let (_, wf) = adain::weights::load_encoder(Some(&common::vgg_path())).unwrap();
    let dev = Device::Cpu;
    Encoder::new(VarBuilder::from_tensors(
        wf.on(&dev).unwrap(),
        DType::F32,
        &dev,
    ))
    .unwrap()
}

fn fixture() -> HashMap<String, Tensor> {
    common::load_fixture("optimize_parity.safetensors")
}

fn scalar(f: &HashMap<String, Tensor>, k: &str) -> f64 {
    f[k].flatten_all().unwrap().to_vec1::<f32>().unwrap()[0] as f64
}

fn vec1(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// max |a - b| / max |b|.
fn rel_max(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (vec1(a), vec1(b));
    assert_eq!(a.len(), b.len());
    let d = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let m = b.iter().map(|y| y.abs()).fold(0f32, f32::max);
    (d / m.max(1e-30)) as f64
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-30)
}

/// Objective with only the given terms (content at relu4_1 with weight `cw`,
/// style over `style` layers with weight `sw`, TV with weight `tvw`).
fn objective(
    enc: &Encoder,
    f: &HashMap<String, Tensor>,
    cw: f64,
    style: &[(usize, f64)],
    sw: f64,
    tvw: f64,
    style_loss: StyleLoss,
) -> Objective {
    let cfg = LossConfig {
        content_layer: 3,
        content_weight: cw,
        style_layers: style.to_vec(),
        style_weight: sw,
        tv_weight: tvw,
        style_loss,
    };
    Objective::new(enc, cfg, Some(&f["content"]), &[(f["style"].clone(), 1.0)]).unwrap()
}

fn fixture_style_layers() -> Vec<(usize, f64)> {
    LW.iter().copied().enumerate().collect()
}

/// Tolerances: losses 1e-4 relative; gradients 1e-3 of the largest component.
#[test]
fn losses_and_image_gradient_match_torch() {
    let enc = encoder();
    let f = fixture();
    let x0 = &f["x0"];
    let mut worst_loss = 0f64;
    for (l, name) in LAYERS.iter().enumerate() {
        let cfg = LossConfig {
            content_layer: l,
            content_weight: 1.0,
            style_layers: vec![(l, 1.0)],
            style_weight: 1.0,
            tv_weight: 0.0,
            style_loss: StyleLoss::Gram,
        };
        let content = Objective::new(&enc, cfg.clone(), Some(&f["content"]), &[])
            .unwrap()
            .value_and_grad(x0)
            .unwrap()
            .0
            .content;
        let style_of = |style_loss| {
            let cfg = LossConfig {
                style_loss,
                ..cfg.clone()
            };
            Objective::new(&enc, cfg, None, &[(f["style"].clone(), 1.0)])
                .unwrap()
                .value_and_grad(x0)
                .unwrap()
                .0
                .style
        };
        for (what, got, key) in [
            ("content", content, format!("content.{name}")),
            ("gram", style_of(StyleLoss::Gram), format!("gram.{name}")),
            (
                "musigma",
                style_of(StyleLoss::Musigma),
                format!("musigma.{name}"),
            ),
        ] {
            let r = rel(got, scalar(&f, &key));
            assert!(
                r < 1e-4,
                "{what} at {name}: {got} vs {} ({r:.2e})",
                scalar(&f, &key)
            );
            worst_loss = worst_loss.max(r);
        }
    }
    let tv = optimize::tv_loss(x0).unwrap().to_scalar::<f32>().unwrap() as f64;
    assert!(rel(tv, scalar(&f, "tv")) < 1e-5, "tv {tv}");

    let style = fixture_style_layers();
    let full = objective(&enc, &f, 1.0, &style, SW, TVW, StyleLoss::Gram);
    let (terms, g) = full.value_and_grad(x0).unwrap();
    let r = rel(terms.total, scalar(&f, "total"));
    assert!(r < 1e-4, "total {} vs {}", terms.total, scalar(&f, "total"));
    worst_loss = worst_loss.max(r);

    let mut worst_grad = 0f64;
    for (key, obj) in [
        ("grad.total", full),
        (
            "grad.content",
            objective(&enc, &f, 1.0, &style, 0.0, 0.0, StyleLoss::Gram),
        ),
        (
            "grad.style",
            objective(&enc, &f, 0.0, &style, 1.0, 0.0, StyleLoss::Gram),
        ),
        (
            "grad.musigma",
            objective(&enc, &f, 0.0, &style, 1.0, 0.0, StyleLoss::Musigma),
        ),
        (
            "grad.tv",
            objective(&enc, &f, 0.0, &style, 0.0, 1.0, StyleLoss::Gram),
        ),
    ] {
        let g = if key == "grad.total" {
            g.clone()
        } else {
            obj.value_and_grad(x0).unwrap().1
        };
        let r = rel_max(&g, &f[key]);
        assert!(r < 1e-3, "{key}: {r:.2e} of the largest component");
        worst_grad = worst_grad.max(r);
    }
    println!(
        "objective vs torch: losses within {worst_loss:.1e} relative, image gradients within \
         {worst_grad:.1e} of their largest component"
    );
}

/// The evaluations of one L-BFGS step on the fixture's objective, clamping in
/// the closure as the torch side does.
fn lbfgs_on_fixture(line_search: LineSearch) -> (Vec<f64>, Tensor) {
    let enc = encoder();
    let f = fixture();
    let obj = objective(
        &enc,
        &f,
        1.0,
        &fixture_style_layers(),
        SW,
        TVW,
        StyleLoss::Gram,
    );
    let dims = f["x0"].dims4().unwrap();
    let mut x = vec1(&f["x0"]);
    let mut opt = Lbfgs::new(LbfgsConfig {
        max_iter: 6,
        history_size: 4,
        line_search,
        ..Default::default()
    })
    .unwrap();
    let mut losses = Vec::new();
    opt.step(
        &mut x,
        |x| {
            x.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
            let t = Tensor::from_slice(x, dims, &Device::Cpu)?;
            let (terms, g) = obj.value_and_grad(&t)?;
            losses.push(terms.total);
            Ok((terms.total, vec1(&g)))
        },
        |_| true,
    )
    .unwrap();
    (losses, Tensor::from_vec(x, dims, &Device::Cpu).unwrap())
}

/// Tolerances. Fixed step: every evaluated loss within 1e-5 relative of
/// torch's and the image after the step within 1e-5 (absolute, pixels in
/// [0,1]). Strong Wolfe: the same number of evaluations, the first three
/// within 1e-4 and all within 3e-3 relative, the image within 1e-2: torch runs
/// the line search's cubic interpolation on float32 tensors (its `gtd` and `t`
/// are 0-d tensors) and we run it in f64, so the chosen steps drift apart by
/// rounding, a little more at each evaluation.
#[test]
fn lbfgs_steps_on_a_tiny_image_match_torch() {
    let f = fixture();
    for (name, ls, tol_first, tol_all, tol_x) in [
        ("none", LineSearch::None, 1e-5, 1e-5, 1e-5),
        ("wolfe", LineSearch::StrongWolfe, 1e-4, 3e-3, 1e-2),
    ] {
        let (losses, x) = lbfgs_on_fixture(ls);
        let want: Vec<f64> = vec1(&f[&format!("lbfgs.{name}.losses")])
            .iter()
            .map(|v| *v as f64)
            .collect();
        assert_eq!(
            losses.len(),
            want.len(),
            "{name}: evaluations {losses:?} vs {want:?}"
        );
        let errs: Vec<f64> = losses.iter().zip(&want).map(|(a, b)| rel(*a, *b)).collect();
        let first = errs[..3].iter().copied().fold(0.0, f64::max);
        let worst = errs.iter().copied().fold(0.0, f64::max);
        assert!(
            first < tol_first && worst < tol_all,
            "{name}: {losses:?} vs {want:?}"
        );
        assert!(want.last() < want.first(), "the torch run lowers the loss");
        let dx = adain::testing::max_abs_diff(&x, &f[&format!("lbfgs.{name}.x")]).unwrap();
        assert!((dx as f64) < tol_x, "{name}: image differs by {dx}");
        println!(
            "L-BFGS ({name}) vs torch: {} evaluations, losses within {first:.1e} (first three) \
             and {worst:.1e} (all) relative, image within {dx:.1e}",
            losses.len()
        );
    }
}

/// torch's L-BFGS with strong Wolfe on the 4-d Rosenbrock function (float32,
/// ill-conditioned): the same number of evaluations, the first twelve losses
/// within 1e-5 relative (later ones drift apart by rounding, as above), and
/// both runs end at the minimum (1,1,1,1) within 2e-2.
#[test]
fn lbfgs_matches_torch_on_rosenbrock() {
    let f = fixture();
    let mut x = vec1(&f["rosen.x0"]);
    let mut opt = Lbfgs::new(LbfgsConfig {
        max_iter: 40,
        history_size: 5,
        line_search: LineSearch::StrongWolfe,
        ..Default::default()
    })
    .unwrap();
    let mut losses = Vec::new();
    opt.step(
        &mut x,
        |x| {
            let n = x.len();
            let mut loss = 0f32;
            let mut g = vec![0f32; n];
            for i in 0..n - 1 {
                let a = x[i + 1] - x[i] * x[i];
                let b = 1.0 - x[i];
                loss += 100.0 * a * a + b * b;
                g[i] += -400.0 * a * x[i] - 2.0 * b;
                g[i + 1] += 200.0 * a;
            }
            losses.push(loss as f64);
            Ok((loss as f64, g))
        },
        |_| true,
    )
    .unwrap();
    let want = vec1(&f["rosen.losses"]);
    assert_eq!(losses.len(), want.len(), "{losses:?}\nvs {want:?}");
    for (i, (a, b)) in losses.iter().zip(&want).take(12).enumerate() {
        assert!(rel(*a, *b as f64) < 1e-5, "evaluation {i}: {a} vs {b}");
    }
    let end = vec1(&f["rosen.x"]);
    for v in x.iter().chain(&end) {
        assert!((v - 1.0).abs() < 2e-2, "{x:?} vs torch {end:?}");
    }
}

#[test]
fn blending_styles_has_the_gradient_of_the_weighted_losses() {
    let enc = encoder();
    let f = fixture();
    let x0 = &f["x0"];
    let s2 = f["style"].flip(&[3]).unwrap().contiguous().unwrap();
    let make = |styles: &[(Tensor, f64)]| {
        let cfg = LossConfig {
            content_weight: 0.0,
            style_weight: 1.0,
            ..Default::default()
        };
        Objective::new(&enc, cfg, None, styles).unwrap()
    };
    let (_, g_blend) = make(&[(f["style"].clone(), 1.0), (s2.clone(), 3.0)])
        .value_and_grad(x0)
        .unwrap();
    let (_, g1) = make(&[(f["style"].clone(), 1.0)])
        .value_and_grad(x0)
        .unwrap();
    let (_, g2) = make(&[(s2, 1.0)]).value_and_grad(x0).unwrap();
    let want = ((g1 * 0.25).unwrap() + (g2 * 0.75).unwrap()).unwrap();
    let r = rel_max(&g_blend, &want);
    assert!(r < 1e-4, "{r}");
}

#[test]
fn twenty_iterations_lower_the_loss_with_either_optimizer() {
    let enc = encoder();
    let f = fixture();
    let obj = objective(
        &enc,
        &f,
        1.0,
        &fixture_style_layers(),
        SW,
        TVW,
        StyleLoss::Gram,
    );
    let start = obj.value_and_grad(&f["x0"]).unwrap().0.total;
    for method in [
        Method::Lbfgs(LbfgsConfig {
            line_search: LineSearch::StrongWolfe,
            ..Default::default()
        }),
        Method::Adam { lr: 0.02 },
    ] {
        let mut seen = 0;
        let out = optimize::run(&obj, &f["x0"], 20, &method, |p| {
            seen = p.iter;
            Ok(true)
        })
        .unwrap();
        assert_eq!(seen, out.iterations);
        let img = &out.image;
        let v = vec1(img);
        assert!(v.iter().all(|x| (0.0..=1.0).contains(x)), "pixels in [0,1]");
        let end = obj.value_and_grad(img).unwrap().0.total;
        assert!(end < 0.8 * start, "{method:?}: {start} -> {end}");
    }
}

// --------------------------------------------------------------------- CLI

fn gradient(w: u32, h: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            ((x * 255 / w + seed * 40) % 256) as u8,
            ((y * 255 / h + seed * 90) % 256) as u8,
            (((x * y) / 3 + seed * 70) % 256) as u8,
        ])
    })
}

struct Env {
    dir: tempfile::TempDir,
    content: PathBuf,
    style: PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("c.png");
    let style = dir.path().join("s.png");
    gradient(40, 32, 1).save(&content).unwrap();
    gradient(32, 36, 4).save(&style).unwrap();
    Env {
        dir,
        content,
        style,
    }
}

impl Env {
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn s(&self, name: &str) -> String {
        self.p(name).to_str().unwrap().to_string()
    }
    /// `adain CMD --vgg ... --size 32 --quiet ARGS`.
    fn cmd(&self, sub: &str, args: &[&str]) -> Command {
        let vgg = common::vgg_path();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_adain"));
        cmd.arg(sub)
            .args(["--vgg", vgg.to_str().unwrap(), "--size", "32", "--quiet"])
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("ADAIN_WEIGHTS");
        cmd
    }
    fn run(&self, sub: &str, args: &[&str]) -> Output {
        self.cmd(sub, args).output().unwrap()
    }
    fn optimize(&self, args: &[&str]) -> Output {
        let (c, s) = (self.content.to_str().unwrap(), self.style.to_str().unwrap());
        let mut all = vec!["-c", c, "-s", s];
        all.extend_from_slice(args);
        self.run("optimize", &all)
    }
}

fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn optimize_lowers_the_loss_and_writes_stages() {
    let e = env();
    let out = e.s("out/result.png");
    let o = e.optimize(&["-o", &out, "--iters", "20", "--save-every", "10", "--json"]);
    ok(&o);
    let j = &json_lines(&o)[0];
    let (first, last) = (
        j["initial"]["total"].as_f64().unwrap(),
        j["final"]["total"].as_f64().unwrap(),
    );
    assert!(last < 0.5 * first, "loss {first} -> {last}");
    assert!(j["iterations"].as_u64().unwrap() >= 10);
    assert!(j["iters_per_sec"].as_f64().unwrap() > 0.0);
    // the working size: shorter side 32
    assert_eq!(image::image_dimensions(&out).unwrap(), (40, 32));
    assert!(e.p("out/iter_00010/result.png").is_file(), "stage image");
    // outputs are not replaced without --overwrite, inputs never
    let o = e.optimize(&["-o", &out, "--iters", "2"]);
    fails_with(&o, &["result.png", "--overwrite"]);
    let o = e.optimize(&[
        "-o",
        e.content.to_str().unwrap(),
        "--iters",
        "2",
        "--overwrite",
    ]);
    fails_with(&o, &["c.png", "input"]);
}

#[test]
fn adam_and_musigma_and_colour_options_run() {
    let e = env();
    let o = e.optimize(&[
        "-o",
        &e.s("dir"),
        "--ext",
        "png",
        "--iters",
        "8",
        "--optimizer",
        "adam",
        "--style-loss",
        "musigma",
        "--tv-weight",
        "10",
        "--init",
        "noise",
        "--preserve-color",
        "luminance",
        "--json",
    ]);
    ok(&o);
    let j = &json_lines(&o)[0];
    assert_eq!(j["iterations"].as_u64(), Some(8));
    assert!(j["final"]["total"].as_f64().unwrap() < j["initial"]["total"].as_f64().unwrap());
    assert!(e.p("dir/c_stylized_s.png").is_file());
}

#[test]
fn bad_flags_are_one_line_errors() {
    let e = env();
    let out = e.s("o.png");
    for (args, needles) in [
        (
            vec!["--content-layer", "conv4_2"],
            vec!["--content-layer", "conv4_2", "relu4_1"],
        ),
        (
            vec!["--style-layers", "relu1_1,relu5_1"],
            vec!["--style-layers", "relu5_1"],
        ),
        (
            vec!["--style-layers", "relu1_1:-2"],
            vec!["--style-layers", "-2"],
        ),
        (
            vec!["--style-layers", "relu1_1,relu1_1"],
            vec!["--style-layers", "twice"],
        ),
        (vec!["--style-weight=-1"], vec!["--style-weight", "-1"]),
        (vec!["--content-weight", "NaN"], vec!["--content-weight"]),
        (vec!["--tv-weight=-3"], vec!["--tv-weight"]),
        (vec!["--lr", "0"], vec!["--lr"]),
        (vec!["--iters", "0"], vec!["--iters"]),
        (
            vec!["--style-weights", "1,2"],
            vec!["--style-weights", "2 values"],
        ),
    ] {
        let mut all = vec!["-o", out.as_str()];
        all.extend(args.iter().copied());
        fails_with(&e.optimize(&all), &needles);
    }
    assert!(!e.p("o.png").exists(), "nothing written on errors");
    let o = e.run(
        "optimize",
        &["-c", &e.s("nope.png"), "-s", &e.s("s.png"), "-o", &out],
    );
    fails_with(&o, &["nope.png"]);
    let o = e.run(
        "grid",
        &[
            "-c",
            e.content.to_str().unwrap(),
            "-s",
            e.style.to_str().unwrap(),
            "-o",
            &e.s("g.jpg"),
            "--style-weights",
            "1,10",
            "--style-layer-sets",
            "relu1_1;relu9_9",
        ],
    );
    fails_with(&o, &["--style-layer-sets", "relu9_9"]);
    let o = e.run(
        "reconstruct",
        &[
            "-c",
            e.content.to_str().unwrap(),
            "-o",
            &out,
            "--layer",
            "relu5_1",
        ],
    );
    fails_with(&o, &["--layer", "relu5_1"]);
}

#[test]
fn reconstruct_sweep_and_grid_write_labelled_sheets() {
    let e = env();
    let sheet = e.p("recon.jpg");
    let o = e.run(
        "reconstruct",
        &[
            "-s",
            e.style.to_str().unwrap(),
            "--sweep",
            "--layers",
            "relu1_1,relu2_1",
            "--iters",
            "3",
            "-o",
            sheet.to_str().unwrap(),
        ],
    );
    ok(&o);
    let (w, h) = image::image_dimensions(&sheet).unwrap();
    // input + 2 reconstructions of 32x36 side by side, plus labels
    assert!(w >= 3 * 32 && h > 36, "{w}x{h}");

    let one = e.p("recon1.png");
    let o = e.run(
        "reconstruct",
        &[
            "-c",
            e.content.to_str().unwrap(),
            "--layer",
            "relu2_1",
            "--iters",
            "3",
            "-o",
            one.to_str().unwrap(),
        ],
    );
    ok(&o);
    assert_eq!(image::image_dimensions(&one).unwrap(), (40, 32));

    let grid = e.p("grid.jpg");
    let o = e.run(
        "grid",
        &[
            "-c",
            e.content.to_str().unwrap(),
            "-s",
            e.style.to_str().unwrap(),
            "--style-weights",
            "1e2,1e4",
            "--style-layer-sets",
            "relu1_1;relu1_1,relu2_1",
            "--iters",
            "2",
            "-o",
            grid.to_str().unwrap(),
        ],
    );
    ok(&o);
    let (w, h) = image::image_dimensions(&grid).unwrap();
    assert!(w >= 2 * 40 && h >= 2 * 32, "{w}x{h}");
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ctrl_c_writes_the_current_image_and_exits_0() {
    let e = env();
    let out = e.p("run/out.png");
    let (c, s) = (e.content.to_str().unwrap(), e.style.to_str().unwrap());
    let child = e
        .cmd(
            "optimize",
            &[
                "-c",
                c,
                "-s",
                s,
                "-o",
                out.to_str().unwrap(),
                "--iters",
                "100000",
                "--save-every",
                "1",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = e.p("run/iter_00001/out.png");
    wait_for("the first iteration", || Path::new(&first).is_file());
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(out.is_file(), "the current image is written");
    assert!(stderr(&o).contains("interrupted"), "{}", stderr(&o));
}
