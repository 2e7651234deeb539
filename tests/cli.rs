//! The `adain` command line, end to end: outputs, sizes, EXIF, alpha, batches,
//! weight files, and every error a user can provoke (one line, exit 1, no panic).

mod common;
use common::{fails_with, gradient, ok, save, stderr};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use image::{GenericImageView, Rgb, Rgba, RgbaImage};

struct Env {
    dir: tempfile::TempDir,
    decoder: PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let decoder = dir.path().join("decoder.safetensors");
    common::write_formula_decoder(&decoder, 0.003);
    Env { dir, decoder }
}

impl Env {
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// A copy of `adain` outside the project, as `cargo install` leaves it (no
    /// weights/ above it), with a small content image `c.png` beside it.
    fn installed_copy(&self) -> PathBuf {
        save(&gradient(40, 32, 0), &self.p("c.png"));
        common::installed_copy(env!("CARGO_BIN_EXE_adain"), self.dir.path())
    }
    /// `adain stylize` with the test weights and small sizes.
    fn stylize(&self, args: &[&str]) -> Output {
        let vgg = common::vgg_path();
        // small by default (a later flag overrides these)
        let mut all = vec![
            "stylize",
            "--vgg",
            vgg.to_str().unwrap(),
            "--decoder",
            self.decoder.to_str().unwrap(),
        ];
        all.extend_from_slice(&["--content-size", "0", "--style-size", "0"]);
        all.extend_from_slice(args);
        run(&all, &[])
    }
}

fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_adain"));
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("ADAIN_WEIGHTS");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn odd_size_in_odd_size_out() {
    let e = env();
    save(&gradient(301, 217, 0), &e.p("c.png"));
    save(&gradient(64, 48, 1), &e.p("s.png"));
    let out = e.p("out/result.png");
    // --content-size scales it (to 89x64), the output is resized back
    ok(&e.stylize(&[
        "-c",
        e.p("c.png").to_str().unwrap(),
        "-s",
        e.p("s.png").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--content-size",
        "64",
    ]));
    assert_eq!(image::open(&out).unwrap().dimensions(), (301, 217));
    // native size, into a directory with the default naming
    let o = e.stylize(&[
        "-c",
        e.p("c.png").to_str().unwrap(),
        "-s",
        e.p("s.png").to_str().unwrap(),
        "-o",
        e.p("dir").to_str().unwrap(),
        "--ext",
        "png",
    ]);
    ok(&o);
    let named = e.p("dir/c_stylized_s.png");
    assert_eq!(image::open(&named).unwrap().dimensions(), (301, 217));
    assert!(
        stderr(&o).contains("c_stylized_s.png"),
        "one line per written file"
    );
}

#[test]
fn exif_orientation_is_applied() {
    let e = env();
    // 48x24 stored, EXIF orientation 6 (rotate 90 CW): shown as 24x48.
    let mut jpeg = Vec::new();
    gradient(48, 24, 2)
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    let exif: Vec<u8> = [
        b"Exif\0\0".as_slice(),
        &[
            b'I', b'I', 0x2a, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0,
            0, 0,
        ],
    ]
    .concat();
    let len = (exif.len() + 2) as u16;
    let mut with_exif = vec![0xff, 0xd8, 0xff, 0xe1, (len >> 8) as u8, len as u8];
    with_exif.extend_from_slice(&exif);
    with_exif.extend_from_slice(&jpeg[2..]);
    std::fs::write(e.p("rot.jpg"), &with_exif).unwrap();
    save(&gradient(32, 32, 3), &e.p("s.png"));
    let out = e.p("rot_out.png");
    ok(&e.stylize(&[
        "-c",
        e.p("rot.jpg").to_str().unwrap(),
        "-s",
        e.p("s.png").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]));
    assert_eq!(image::open(&out).unwrap().dimensions(), (24, 48));
}

#[test]
fn rgba_alpha_is_carried_to_png() {
    let e = env();
    let rgba = RgbaImage::from_fn(40, 24, |x, y| {
        Rgba([
            (x * 6) as u8,
            (y * 10) as u8,
            128,
            ((x * 7 + y) % 256) as u8,
        ])
    });
    rgba.save(e.p("c.png")).unwrap();
    save(&gradient(32, 32, 4), &e.p("s.png"));
    let out = e.p("o.png");
    ok(&e.stylize(&[
        "-c",
        e.p("c.png").to_str().unwrap(),
        "-s",
        e.p("s.png").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]));
    let got = image::open(&out).unwrap().to_rgba8();
    assert_eq!(got.dimensions(), (40, 24));
    for (a, b) in got.pixels().zip(rgba.pixels()) {
        assert_eq!(a[3], b[3], "alpha must be carried unchanged");
    }
    // greyscale and 16-bit inputs work too
    image::GrayImage::from_fn(30, 20, |x, _| image::Luma([(x * 8) as u8]))
        .save(e.p("g.png"))
        .unwrap();
    image::ImageBuffer::<Rgb<u16>, _>::from_fn(30, 20, |x, y| {
        Rgb([x as u16 * 2000, y as u16 * 3000, 40000])
    })
    .save(e.p("deep.png"))
    .unwrap();
    for c in ["g.png", "deep.png"] {
        let o = e.p(&format!("o_{c}"));
        ok(&e.stylize(&[
            "-c",
            e.p(c).to_str().unwrap(),
            "-s",
            e.p("s.png").to_str().unwrap(),
            "-o",
            o.to_str().unwrap(),
        ]));
        assert_eq!(image::open(&o).unwrap().dimensions(), (30, 20));
    }
}

#[test]
fn directory_batch_encodes_each_style_once() {
    let e = env();
    save(&gradient(32, 24, 0), &e.p("contents/a.png"));
    save(&gradient(24, 32, 1), &e.p("contents/sub/b.PNG"));
    std::fs::write(e.p("contents/notes.txt"), "not an image").unwrap();
    save(&gradient(32, 32, 2), &e.p("styles/x.png"));
    save(&gradient(40, 32, 3), &e.p("styles/y.jpg"));
    let vgg = common::vgg_path();
    let o = run(
        &[
            "stylize",
            "--vgg",
            vgg.to_str().unwrap(),
            "--decoder",
            e.decoder.to_str().unwrap(),
            "-c",
            e.p("contents").to_str().unwrap(),
            "-s",
            e.p("styles").to_str().unwrap(),
            "-o",
            e.p("out").to_str().unwrap(),
            "--content-size",
            "0",
            "--style-size",
            "0",
        ],
        &[("RUST_LOG", "debug")],
    );
    ok(&o);
    for name in [
        "a_stylized_x.jpg",
        "a_stylized_y.jpg",
        "b_stylized_x.jpg",
        "b_stylized_y.jpg",
    ] {
        assert!(e.p("out").join(name).is_file(), "{name} missing");
    }
    let encodes = stderr(&o).matches("encoding style").count();
    assert_eq!(
        encodes,
        2,
        "each style encoded once for all contents: {}",
        stderr(&o)
    );
    // blend: one output per content
    ok(&e.stylize(&[
        "-c",
        e.p("contents/a.png").to_str().unwrap(),
        "-s",
        e.p("styles").to_str().unwrap(),
        "--style-weights",
        "1,3",
        "-o",
        e.p("blend").to_str().unwrap(),
    ]));
    assert!(e.p("blend/a_blend.jpg").is_file());
}

#[test]
fn masks_and_colour_modes_run() {
    let e = env();
    save(&gradient(40, 32, 0), &e.p("c.png"));
    save(&gradient(32, 32, 1), &e.p("s1.png"));
    save(&gradient(32, 32, 2), &e.p("s2.png"));
    let half =
        image::GrayImage::from_fn(40, 32, |x, _| image::Luma([if x < 20 { 255 } else { 0 }]));
    half.save(e.p("m1.png")).unwrap();
    image::GrayImage::from_fn(40, 32, |x, _| image::Luma([if x < 20 { 0 } else { 255 }]))
        .save(e.p("m2.png"))
        .unwrap();
    let (c, s1, s2) = (e.p("c.png"), e.p("s1.png"), e.p("s2.png"));
    let base = [
        "-c",
        c.to_str().unwrap(),
        "-s",
        s1.to_str().unwrap(),
        "-s",
        s2.to_str().unwrap(),
        "--content-size",
        "0",
    ];
    let mut args = base.to_vec();
    let (m1, m2, o1) = (e.p("m1.png"), e.p("m2.png"), e.p("masked.png"));
    args.extend([
        "--mask",
        m1.to_str().unwrap(),
        "--mask",
        m2.to_str().unwrap(),
        "-o",
        o1.to_str().unwrap(),
    ]);
    ok(&e.stylize(&args));
    // One label image (m1: 255 left, 0 right) selects styles by sorted value:
    // 0 -> first style, 255 -> second. With the styles given as s2, s1 that is the
    // assignment of the two masks above (left s1, right s2): the same picture.
    let o2 = e.p("label.png");
    let args = [
        "-c",
        c.to_str().unwrap(),
        "-s",
        s2.to_str().unwrap(),
        "-s",
        s1.to_str().unwrap(),
        "--mask",
        m1.to_str().unwrap(),
        "-o",
        o2.to_str().unwrap(),
    ];
    ok(&e.stylize(&args));
    let (a, b) = (
        image::open(&o1).unwrap().to_rgb8(),
        image::open(&o2).unwrap().to_rgb8(),
    );
    assert_eq!(a.dimensions(), (40, 32));
    assert!(
        a == b,
        "label image and per-style masks must give the same result"
    );
    // and the masked result differs from either style alone
    let whole = e.p("whole.png");
    ok(&e.stylize(&[
        "-c",
        c.to_str().unwrap(),
        "-s",
        s1.to_str().unwrap(),
        "-o",
        whole.to_str().unwrap(),
    ]));
    assert!(
        image::open(&whole).unwrap().to_rgb8() != a,
        "the mask changed nothing"
    );
    for mode in ["coral", "luminance"] {
        let o = e.p(&format!("{mode}.png"));
        ok(&e.stylize(&[
            "-c",
            c.to_str().unwrap(),
            "-s",
            s1.to_str().unwrap(),
            "--preserve-color",
            mode,
            "-o",
            o.to_str().unwrap(),
        ]));
        assert_eq!(image::open(&o).unwrap().dimensions(), (40, 32));
    }
}

#[test]
fn user_errors_are_one_line() {
    let e = env();
    save(&gradient(40, 32, 0), &e.p("c.png"));
    save(&gradient(32, 32, 1), &e.p("s.png"));
    std::fs::write(e.p("bad.jpg"), "this is not a jpeg").unwrap();
    let (c, s) = (
        e.p("c.png").to_str().unwrap().to_owned(),
        e.p("s.png").to_str().unwrap().to_owned(),
    );
    let out = e.p("o.png").to_str().unwrap().to_owned();

    fails_with(
        &e.stylize(&["-c", "/no/such.png", "-s", &s]),
        &["/no/such.png"],
    );
    fails_with(
        &e.stylize(&["-c", e.p("bad.jpg").to_str().unwrap(), "-s", &s, "-o", &out]),
        &["bad.jpg", "decode"],
    );
    fails_with(
        &e.stylize(&["-c", &c, "-s", &s, "--alpha", "1.5", "-o", &out]),
        &["alpha"],
    );
    fails_with(
        &e.stylize(&["-c", &c, "-s", &s, "--alpha=-0.1", "-o", &out]),
        &["alpha"],
    );
    fails_with(
        &e.stylize(&[
            "-c",
            &c,
            "-s",
            &format!("{s},{s}"),
            "--style-weights",
            "1,2,3",
            "-o",
            &out,
        ]),
        &["style-weights", "2 styles"],
    );
    save(&gradient(40, 32, 2), &e.p("m.png"));
    let m = e.p("m.png").to_str().unwrap().to_owned();
    fails_with(
        &e.stylize(&["-c", &c, "-s", &s, "--mask", &m, "--mask", &m, "-o", &out]),
        &["2 masks", "1 styles"],
    );
    save(&gradient(20, 20, 2), &e.p("small_mask.png"));
    fails_with(
        &e.stylize(&[
            "-c",
            &c,
            "-s",
            &s,
            "--mask",
            e.p("small_mask.png").to_str().unwrap(),
            "-o",
            &out,
        ]),
        &["small_mask.png", "20x20", "40x32"],
    );
    save(&gradient(8, 8, 2), &e.p("tiny.png"));
    fails_with(
        &e.stylize(&[
            "-c",
            e.p("tiny.png").to_str().unwrap(),
            "-s",
            &s,
            "-o",
            &out,
        ]),
        &["tiny.png", "8x8"],
    );
    // never write over an input, never clobber an output
    fails_with(
        &e.stylize(&["-c", &c, "-s", &s, "-o", &c]),
        &["c.png", "input"],
    );
    ok(&e.stylize(&["-c", &c, "-s", &s, "-o", &out]));
    fails_with(
        &e.stylize(&["-c", &c, "-s", &s, "-o", &out]),
        &["o.png", "--overwrite"],
    );
    ok(&e.stylize(&["-c", &c, "-s", &s, "-o", &out, "--overwrite"]));
}

#[test]
fn no_decoder_says_how_to_get_one() {
    let e = env();
    let bin = e.installed_copy();
    let vgg = common::vgg_path();
    let o = Command::new(&bin)
        .args([
            "stylize",
            "--vgg",
            vgg.to_str().unwrap(),
            "-c",
            e.p("c.png").to_str().unwrap(),
            "-s",
            e.p("c.png").to_str().unwrap(),
            "-o",
            e.p("o.png").to_str().unwrap(),
        ])
        .env("ADAIN_WEIGHTS", e.p("empty"))
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    fails_with(&o, &["no decoder found", "adain-train", "adain convert"]);
}

/// Only in a build without the built-in weights: with them (the default) the
/// same copy stylizes (`tests/install.rs`).
#[cfg(not(feature = "embed-weights"))]
#[test]
fn an_installed_binary_says_where_it_looked_for_the_encoder() {
    // A copy outside any checkout, as `cargo install` leaves it: no weights/
    // above it, no $ADAIN_WEIGHTS. The error used to read "(looked for --vgg, )".
    let e = env();
    let bin = e.installed_copy();
    let c = e.p("c.png");
    let o = Command::new(&bin)
        .args([
            "stylize",
            "-c",
            c.to_str().unwrap(),
            "-s",
            c.to_str().unwrap(),
        ])
        .args(["-o", e.p("o.png").to_str().unwrap()])
        .env_remove("ADAIN_WEIGHTS")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    fails_with(
        &o,
        &[
            "VGG encoder not found",
            "--vgg",
            "$ADAIN_WEIGHTS (not set)",
            "no checkout's weights/",
        ],
    );
}

#[test]
fn bad_weight_files_name_file_and_tensor() {
    let e = env();
    save(&gradient(40, 32, 0), &e.p("c.png"));
    let c = e.p("c.png").to_str().unwrap().to_owned();
    let o = e.p("o.png").to_str().unwrap().to_owned();
    let vgg = common::vgg_path();
    let with_decoder = |d: &Path| {
        run(
            &[
                "stylize",
                "--vgg",
                vgg.to_str().unwrap(),
                "--decoder",
                d.to_str().unwrap(),
                "-c",
                &c,
                "-s",
                &c,
                "-o",
                &o,
                "--content-size",
                "0",
            ],
            &[],
        )
    };
    // truncated
    let bytes = std::fs::read(&e.decoder).unwrap();
    std::fs::write(e.p("trunc.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    fails_with(
        &with_decoder(&e.p("trunc.safetensors")),
        &["trunc.safetensors"],
    );
    // not safetensors at all
    std::fs::write(e.p("junk.safetensors"), b"hello").unwrap();
    fails_with(
        &with_decoder(&e.p("junk.safetensors")),
        &["junk.safetensors", "safetensors"],
    );
    // a .pth given where safetensors is expected
    let pth = common::fixture("pth/small_zip.pth");
    fails_with(&with_decoder(&pth), &["small_zip.pth", "adain convert"]);
    // missing tensor / wrong shape
    let mut t = adain::testing::formula_decoder(1.0, &candle_core::Device::Cpu).unwrap();
    t.remove("28.bias");
    let v: Vec<_> = t.clone().into_iter().collect();
    adain::weights::save_safetensors(&e.p("missing.safetensors"), &v, &Default::default(), true)
        .unwrap();
    fails_with(
        &with_decoder(&e.p("missing.safetensors")),
        &["missing.safetensors", "28.bias"],
    );
    t.insert(
        "28.bias".into(),
        candle_core::Tensor::zeros(4, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap(),
    );
    let v: Vec<_> = t.into_iter().collect();
    adain::weights::save_safetensors(&e.p("shape.safetensors"), &v, &Default::default(), true)
        .unwrap();
    fails_with(
        &with_decoder(&e.p("shape.safetensors")),
        &["shape.safetensors", "28.bias", "[4]"],
    );
    // an f16 decoder is accepted (upcast), and a decoder trained on another encoder warns
    let mut t = adain::testing::formula_decoder(0.003, &candle_core::Device::Cpu).unwrap();
    let v: Vec<_> = t
        .drain()
        .map(|(k, x)| (k, x.to_dtype(candle_core::DType::F16).unwrap()))
        .collect();
    let meta = adain::weights::decoder_metadata("0123456789abcdef", "{}", 5);
    adain::weights::save_safetensors(&e.p("f16.safetensors"), &v, &meta, true).unwrap();
    let out = with_decoder(&e.p("f16.safetensors"));
    ok(&out);
    assert!(
        stderr(&out).contains("encoder") && stderr(&out).contains("0123456789ab"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn convert_pytorch_checkpoints() {
    let e = env();
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixture("pth/expected.json")).unwrap(),
    )
    .unwrap();
    for file in [
        "decoder_f16_zip.pth",
        "small_zip.pth",
        "wrapped_zip.pth",
        "small_legacy.pth",
    ] {
        let out = e.p(&format!("{file}.safetensors"));
        let o = run(
            &[
                "convert",
                common::fixture(&format!("pth/{file}")).to_str().unwrap(),
                out.to_str().unwrap(),
            ],
            &[],
        );
        ok(&o);
        let wf = adain::weights::WeightFile::load(&out).unwrap();
        let tensors = expected[file]["tensors"].as_array().unwrap();
        assert_eq!(wf.tensors.len(), tensors.len(), "{file}");
        for t in tensors {
            let name = t["name"].as_str().unwrap();
            let got = &wf.tensors[name];
            let shape: Vec<usize> = t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(got.dims(), shape.as_slice(), "{file}: {name}");
            let first: Vec<f32> = got.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                [..4.min(got.elem_count())]
                .to_vec();
            let want: Vec<f32> = t["first4"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(first, want, "{file}: {name}");
        }
        if file.starts_with("decoder") {
            assert_eq!(
                wf.metadata.get("format").map(String::as_str),
                Some("adain-decoder")
            );
            // the whole tensor, not just its head: ((i % 251) - 125) / 256
            let w = wf.tensors["28.weight"]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert!(w
                .iter()
                .enumerate()
                .all(|(i, &x)| x == ((i % 251) as f32 - 125.0) / 256.0));
        }
    }
    // a legacy (pre-1.6) file cut short: one line naming it
    let legacy = std::fs::read(common::fixture("pth/small_legacy.pth")).unwrap();
    std::fs::write(e.p("cut.pth"), &legacy[..legacy.len() - 7]).unwrap();
    fails_with(
        &run(
            &[
                "convert",
                e.p("cut.pth").to_str().unwrap(),
                e.p("l.safetensors").to_str().unwrap(),
            ],
            &[],
        ),
        &["cut.pth", "truncated"],
    );
    std::fs::write(e.p("x.pth"), "nope").unwrap();
    fails_with(
        &run(
            &[
                "convert",
                e.p("x.pth").to_str().unwrap(),
                e.p("y.safetensors").to_str().unwrap(),
            ],
            &[],
        ),
        &["x.pth"],
    );
}

#[test]
fn palette_and_cmyk_inputs_work() {
    let e = env();
    save(&gradient(32, 32, 1), &e.p("s.png"));
    for f in ["palette.png", "cmyk.jpg"] {
        let out = e.p(&format!("out_{f}.png"));
        let input = common::fixture(&format!("images/{f}"));
        ok(&e.stylize(&[
            "-c",
            input.to_str().unwrap(),
            "-s",
            e.p("s.png").to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]));
        assert_eq!(image::open(&out).unwrap().dimensions(), (40, 24), "{f}");
    }
}

/// The README's main command on a fresh clone: no --decoder, no ADAIN_WEIGHTS,
/// so the published `weights/decoder.safetensors` is found, fits the encoder
/// in use (no mismatch warning) and produces a non-flat image.
#[test]
fn the_published_decoder_is_found_by_default() {
    let e = env();
    let published = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/decoder.safetensors");
    let info = run(&["info", published.to_str().unwrap()], &[]);
    ok(&info);
    let info = String::from_utf8_lossy(&info.stdout).into_owned();
    assert!(info.contains("format: adain-decoder"), "{info}");
    save(&gradient(40, 32, 0), &e.p("c.png"));
    save(&gradient(40, 32, 1), &e.p("s.png"));
    let vgg = common::vgg_path();
    let o = run(
        &[
            "stylize",
            "--vgg",
            vgg.to_str().unwrap(),
            "-c",
            e.p("c.png").to_str().unwrap(),
            "-s",
            e.p("s.png").to_str().unwrap(),
            "-o",
            e.p("out.png").to_str().unwrap(),
        ],
        &[],
    );
    ok(&o);
    assert!(!stderr(&o).contains("encoder"), "{}", stderr(&o));
    let img = image::open(e.p("out.png")).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (40, 32));
    let (lo, hi) = img
        .pixels()
        .fold((255u8, 0u8), |(lo, hi), p| (lo.min(p[0]), hi.max(p[0])));
    assert!(hi - lo > 10, "flat output {lo}..{hi}");
}

#[test]
fn bench_reports_its_device_and_refuses_cuda_without_it() {
    let e = env();
    let vgg = common::vgg_path();
    let bench = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_adain"))
            .args(["bench", "--vgg", vgg.to_str().unwrap()])
            .args(["--decoder", e.decoder.to_str().unwrap()])
            .args(["--sizes", "32", "--only", "stylize_32", "--repeat", "1"])
            .args(["--threads", "2", "--json"])
            .args(extra)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let o = bench(&[]);
    ok(&o);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["device"], "cpu");
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["name"], "stylize_32");
    assert!(rows[0]["median_s"].as_f64().unwrap() > 0.0);
    assert!(rows[0]["peak_rss_mb"].as_f64().unwrap() > 0.0);
    if !cfg!(feature = "cuda") {
        fails_with(
            &bench(&["--device", "cuda"]),
            &["--device cuda", "--features cuda"],
        );
    }
}
