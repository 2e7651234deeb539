//! Johnson et al.'s per-style network against PyTorch (`scripts/johnson_torch.py`,
//! whose docstring is the fixture contract): architecture and keys, the import
//! of `fast_neural_style` .pth files (with and without the old running stats),
//! the forward pass, the training objective's losses and gradients, and the
//! `--model` command line.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use adain::johnson::{JohnsonNet, Objective, TransformerNet, Weights};
use adain::weights::{self, Kind, WeightFile};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::{fails_with, gradient, ok, save};

fn fixture(name: &str) -> PathBuf {
    common::fixture(&format!("johnson/{name}"))
}

fn parity() -> HashMap<String, Tensor> {
    common::load_fixture("johnson/parity.safetensors")
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

#[test]
fn keys_and_shapes_match_the_torch_script() {
    let text = std::fs::read_to_string(fixture("keys.json")).unwrap();
    let torch: Vec<(String, Vec<usize>)> = serde_json::from_str(&text).unwrap();
    assert_eq!(torch, TransformerNet::tensor_shapes());
    // and our file of the same weights has exactly these tensors
    let wf = WeightFile::load(&fixture("init.safetensors")).unwrap();
    let mut have: Vec<_> = wf.tensors.keys().cloned().collect();
    have.sort();
    let mut want: Vec<_> = torch.into_iter().map(|(k, _)| k).collect();
    want.sort();
    assert_eq!(have, want);
}

/// Imports both .pth files, then runs the network on the torch input: the
/// output is PyTorch's within 1e-4 of the 0..255 range.
#[test]
fn pth_import_gives_the_torch_output() {
    let fx = parity();
    let dir = tempfile::tempdir().unwrap();
    let (x, want) = (&fx["forward.input"], &fx["forward.output"]);
    let mut files = vec![fixture("init.safetensors")];
    for pth in ["fns.pth", "fns_running.pth", "fns_running_legacy.pth"] {
        let out = dir.path().join(pth.replace(".pth", ".safetensors"));
        let kind = weights::convert_pth(&fixture(pth), &out, false).unwrap();
        assert_eq!(kind, Kind::Johnson, "{pth}");
        let wf = WeightFile::load(&out).unwrap();
        assert!(
            !wf.tensors.keys().any(|k| k.contains("running_")),
            "{pth}: running stats kept"
        );
        assert_eq!(wf.tensors.len(), TransformerNet::tensor_shapes().len());
        assert_eq!(
            wf.metadata.get("format").map(String::as_str),
            Some(adain::johnson::FORMAT)
        );
        files.push(out);
    }
    for f in &files {
        let net = JohnsonNet::load(f, &Device::Cpu).unwrap();
        let got = net.net.forward(x).unwrap();
        assert_eq!(got.dims(), want.dims());
        let d = max_abs(&(&got - want).unwrap());
        eprintln!(
            "{}: max abs diff {d:.3e} (output max {:.1})",
            f.display(),
            max_abs(want)
        );
        assert!(d / 255.0 < 1e-4, "{}: differs by {d}", f.display());
    }
}

/// A file with the old running stats is refused until converted (one line,
/// naming the file), as is a file of the wrong kind.
#[test]
fn loading_refuses_unconverted_and_wrong_files() {
    let dir = tempfile::tempdir().unwrap();
    let wf = WeightFile::load(&fixture("init.safetensors")).unwrap();
    let mut v: Vec<(String, Tensor)> = wf.tensors.into_iter().collect();
    v.push((
        "in1.running_mean".into(),
        Tensor::zeros(32, DType::F32, &Device::Cpu).unwrap(),
    ));
    let stale = dir.path().join("stale.safetensors");
    weights::save_safetensors(&stale, &v, &Default::default(), false).unwrap();
    let e = format!(
        "{:#}",
        JohnsonNet::load(&stale, &Device::Cpu).err().unwrap()
    );
    assert!(
        e.contains("stale.safetensors") && e.contains("adain convert"),
        "{e}"
    );
    let dec = dir.path().join("decoder.safetensors");
    common::write_formula_decoder(&dec, 1.0);
    let e = format!("{:#}", JohnsonNet::load(&dec, &Device::Cpu).err().unwrap());
    assert!(
        e.contains("decoder.safetensors") && e.contains("not a Johnson"),
        "{e}"
    );
    // a wrong shape names the tensor
    v.pop();
    let i = v.iter().position(|(k, _)| k == "in3.weight").unwrap();
    v[i].1 = Tensor::ones(64, DType::F32, &Device::Cpu).unwrap();
    let bad = dir.path().join("bad.safetensors");
    weights::save_safetensors(&bad, &v, &Default::default(), false).unwrap();
    let e = format!("{:#}", JohnsonNet::load(&bad, &Device::Cpu).err().unwrap());
    assert!(
        e.contains("bad.safetensors") && e.contains("in3.weight"),
        "{e}"
    );
    assert!(!e.contains('\n'));
}

fn encoder() -> adain::Encoder {
    let wf = WeightFile::load(&common::vgg_path()).unwrap();
    adain::Encoder::new(VarBuilder::from_tensors(
        wf.on(&Device::Cpu).unwrap(),
        DType::F32,
        &Device::Cpu,
    ))
    .unwrap()
}

/// The objective at the initial weights on step 0's batch: every loss term
/// within 1e-5 (relative) of PyTorch's, and the gradient of the total for
/// every tensor (sampled values, and each tensor's whole sum of squares).
#[test]
fn objective_losses_and_gradients_match_torch() {
    // as the trainer: the encoder's no-gradient convs on F(2x2,3x3) too
    adain::conv::set_f4_forward(false);
    let fx = parity();
    let enc = encoder();
    let vm = VarMap::new();
    let net = TransformerNet::new(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    let init = WeightFile::load(&fixture("init.safetensors")).unwrap();
    for (k, var) in vm.data().lock().unwrap().iter() {
        var.set(&init.tensors[k]).unwrap();
    }
    let w = fx["train.weights"].to_vec1::<f32>().unwrap();
    let layer = fx["train.content_layer"].to_vec1::<f32>().unwrap()[0] as usize;
    let weights = Weights {
        content: w[0] as f64,
        style: w[1] as f64,
        tv: w[2] as f64,
    };
    let obj = Objective::new(&enc, &fx["train.style"], layer, weights).unwrap();
    assert_eq!(obj.content_layer_name(), "relu2_1");
    let l = obj.losses(&enc, &net, &fx["train.content.0"]).unwrap();
    for (name, got) in [
        ("content", &l.content),
        ("style", &l.style),
        ("tv", &l.tv),
        ("total", &l.total),
    ] {
        let want = fx[&format!("loss.{name}")].to_vec1::<f32>().unwrap()[0] as f64;
        let got = scalar(got);
        let rel = (got - want).abs() / want.abs();
        eprintln!("loss {name}: {got:.8e} vs torch {want:.8e} (relative {rel:.2e})");
        assert!(
            rel < 1e-5,
            "loss {name}: {got} vs {want} (relative {rel:.2e})"
        );
    }
    let grads = l.total.backward().unwrap();
    let (mut worst, mut worst_sq) = ((0f32, String::new()), (0f64, String::new()));
    for (k, var) in vm.data().lock().unwrap().iter() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {k}"));
        let flat = g.flatten_all().unwrap();
        let n = flat.dim(0).unwrap();
        let stride = (n / 256).max(1);
        let idx: Vec<u32> = (0..n).step_by(stride).map(|i| i as u32).collect();
        let idx = Tensor::new(idx.as_slice(), &Device::Cpu).unwrap();
        let sample = flat.index_select(&idx, 0).unwrap();
        let want = &fx[&format!("grad0.{k}")];
        let d = max_abs(&(&sample - want).unwrap()) / max_abs(want).max(1e-30);
        if d > worst.0 {
            worst = (d, k.clone());
        }
        let sq = scalar(
            &flat
                .to_dtype(DType::F64)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap(),
        );
        let want_sq = fx[&format!("grad0sq.{k}")].to_vec1::<f32>().unwrap()[0] as f64;
        let dsq = (sq - want_sq).abs() / want_sq.max(1e-30);
        if dsq > worst_sq.0 {
            worst_sq = (dsq, k.clone());
        }
    }
    eprintln!(
        "gradients: worst sampled difference {:.2e} of the tensor's largest ({}), worst sum of squares {:.2e} relative ({})",
        worst.0, worst.1, worst_sq.0, worst_sq.1
    );
    assert!(
        worst.0 < 1e-4,
        "gradient of {} differs by {:.2e}",
        worst.1,
        worst.0
    );
    assert!(
        worst_sq.0 < 1e-4,
        "gradient norm of {} differs by {:.2e}",
        worst_sq.1,
        worst_sq.0
    );
}

fn adain(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adain"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("ADAIN_WEIGHTS")
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn model_flag_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("c.png");
    save(&gradient(40, 32, 0), &c);
    let net = fixture("init.safetensors");
    let out = dir.path().join("o.png");
    // a style with a per-style network
    fails_with(
        &adain(&[
            "stylize",
            "--model",
            s(&net),
            "-c",
            s(&c),
            "-s",
            s(&c),
            "-o",
            s(&out),
        ]),
        &["--style", "--model"],
    );
    // an AdaIN-only flag
    fails_with(
        &adain(&[
            "stylize",
            "--model",
            s(&net),
            "-c",
            s(&c),
            "--alpha",
            "0.5",
            "-o",
            s(&out),
        ]),
        &["--alpha", "--model"],
    );
    // a missing file
    let missing = dir.path().join("nope.safetensors");
    fails_with(
        &adain(&[
            "stylize",
            "--model",
            s(&missing),
            "-c",
            s(&c),
            "-o",
            s(&out),
        ]),
        &["nope.safetensors"],
    );
    // an AdaIN decoder given as --model
    let dec = dir.path().join("decoder.safetensors");
    common::write_formula_decoder(&dec, 1.0);
    fails_with(
        &adain(&["stylize", "--model", s(&dec), "-c", s(&c), "-o", s(&out)]),
        &["decoder.safetensors", "not a Johnson"],
    );
    // a .pth not yet converted
    fails_with(
        &adain(&[
            "stylize",
            "--model",
            s(&fixture("fns.pth")),
            "-c",
            s(&c),
            "-o",
            s(&out),
        ]),
        &["fns.pth", "adain convert"],
    );
    assert!(!out.exists());
}

/// `adain stylize --model` writes exactly what the library computes, at the
/// content's own (odd) size, through the engine's file handling.
#[test]
fn stylize_model_equals_the_library_forward() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("photo.png");
    save(&gradient(45, 31, 2), &c);
    let net_file = fixture("init.safetensors");
    let out_dir = dir.path().join("out");
    ok(&adain(&[
        "stylize",
        "--model",
        s(&net_file),
        "-c",
        s(&c),
        "-o",
        s(&out_dir),
        "--ext",
        "png",
        "--content-size",
        "0",
    ]));
    let out = out_dir.join("photo_stylized_init.png");
    let got = image::open(&out).unwrap().to_rgb8();
    assert_eq!(got.dimensions(), (45, 31));

    let net = JohnsonNet::load(&net_file, &Device::Cpu).unwrap();
    let pic = adain::image_io::load(&c).unwrap();
    let t = adain::image_io::to_tensor(&adain::image_io::prepare(&pic, 0, false), &Device::Cpu)
        .unwrap();
    let y = net.stylize(&t).unwrap();
    let want = adain::image_io::to_rgb8(&adain::image_io::from_tensor(&y).unwrap());
    let d = got
        .as_raw()
        .iter()
        .zip(want.as_raw())
        .map(|(a, b)| (*a as i32 - *b as i32).abs())
        .max()
        .unwrap();
    assert_eq!(d, 0, "CLI output differs from the library's by {d}/255");
    // not a flat picture (the network did something)
    let (lo, hi) = got
        .as_raw()
        .iter()
        .fold((255u8, 0u8), |(l, h), &v| (l.min(v), h.max(v)));
    assert!(hi - lo > 20, "flat output {lo}..{hi}");
    // an existing output is kept without --overwrite
    fails_with(
        &adain(&[
            "stylize",
            "--model",
            s(&net_file),
            "-c",
            s(&c),
            "-o",
            s(&out_dir),
            "--ext",
            "png",
        ]),
        &["photo_stylized_init.png"],
    );
}

#[test]
fn eval_scores_a_network_against_its_style() {
    let dir = tempfile::tempdir().unwrap();
    let contents = dir.path().join("contents");
    save(&gradient(48, 40, 0), &contents.join("a.png"));
    save(&gradient(40, 48, 1), &contents.join("b.png"));
    let style = dir.path().join("style.png");
    save(&gradient(64, 64, 3), &style);
    let report = dir.path().join("report");
    ok(&adain(&[
        "eval",
        "--model",
        s(&fixture("init.safetensors")),
        "-c",
        s(&contents),
        "-s",
        s(&style),
        "-o",
        s(&report),
        "--size",
        "64",
        "--vgg",
        s(&common::vgg_path()),
        "-q",
    ]));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("metrics.json")).unwrap())
            .unwrap();
    let text = json.to_string();
    assert!(text.contains("johnson"), "{text}");
    fails_with(
        &adain(&[
            "eval",
            "--model",
            s(&fixture("init.safetensors")),
            "-c",
            s(&contents),
            "-s",
            s(&style),
            "-o",
            s(&report),
            "--alpha",
            "0.5",
            "--overwrite",
        ]),
        &["--alpha", "--model"],
    );
}
