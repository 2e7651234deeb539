//! Large images from the command line: decompression bombs refused before
//! decoding, `--tile` / `--max-memory` giving the default's picture, TIFF out.

mod common;
use common::{fails_with, gradient, ok, save};

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn adain(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adain"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("ADAIN_WEIGHTS")
        .output()
        .unwrap()
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A valid PNG header declaring `w` x `h` RGB pixels, with one tiny IDAT: a
/// few dozen bytes that a decoder would expand to w*h*3.
fn bomb_png(path: &Path, w: u32, h: u32) {
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut v = (data.len() as u32).to_be_bytes().to_vec();
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        v.extend_from_slice(&body);
        v.extend_from_slice(&crc32(&body).to_be_bytes());
        v
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    png.extend(chunk(b"IEND", &[]));
    std::fs::write(path, png).unwrap();
}

#[test]
fn a_decompression_bomb_is_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    bomb_png(&p("bomb.png"), 30000, 30000);
    assert!(std::fs::metadata(p("bomb.png")).unwrap().len() < 100);
    save(&gradient(48, 40, 1), &p("ok.png"));
    let vgg = common::vgg_path();
    let decoder = p("decoder.safetensors");
    common::write_formula_decoder(&decoder, 0.003);
    let base = [
        "stylize",
        "--vgg",
        vgg.to_str().unwrap(),
        "--decoder",
        decoder.to_str().unwrap(),
    ];
    let (bomb, good) = (p("bomb.png"), p("ok.png"));
    let (bomb, good) = (bomb.to_str().unwrap(), good.to_str().unwrap());
    for (i, roles) in [["-c", bomb, "-s", good], ["-c", good, "-s", bomb]]
        .iter()
        .enumerate()
    {
        let out = p(&format!("o{i}.png"));
        let mut args = base.to_vec();
        args.extend_from_slice(roles);
        args.extend_from_slice(&["-o", out.to_str().unwrap()]);
        let t = Instant::now();
        let o = adain(&args);
        let took = t.elapsed();
        fails_with(&o, &["bomb.png", "30000x30000", "--max-pixels"]);
        assert!(took < Duration::from_secs(20), "took {took:?}");
        assert!(!out.exists());
    }
    // the same as a mask
    let out = p("o-mask.png");
    let mut args = base.to_vec();
    args.extend_from_slice(&[
        "-c",
        good,
        "-s",
        good,
        "--mask",
        bomb,
        "-o",
        out.to_str().unwrap(),
    ]);
    fails_with(&adain(&args), &["bomb.png", "30000x30000", "--max-pixels"]);
    // a cap below an ordinary picture's size refuses it too, naming its size
    let mut args = base.to_vec();
    args.extend_from_slice(&[
        "-c",
        good,
        "-s",
        good,
        "--max-pixels",
        "1000",
        "-o",
        out.to_str().unwrap(),
    ]);
    fails_with(&adain(&args), &["ok.png", "48x40", "--max-pixels"]);
}

#[test]
fn forced_tiles_from_the_command_line_match_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    save(&gradient(203, 150, 2), &p("c.png"));
    save(&gradient(64, 64, 4), &p("s.png"));
    let vgg = common::vgg_path();
    let decoder = p("decoder.safetensors");
    common::write_formula_decoder(&decoder, 0.003);
    let run = |extra: &[&str], out: &str| {
        let mut args = vec![
            "stylize",
            "--vgg",
            vgg.to_str().unwrap(),
            "--decoder",
            decoder.to_str().unwrap(),
            "--content-size",
            "0",
            "-c",
            p("c.png").to_str().unwrap().to_owned().leak(),
            "-s",
            p("s.png").to_str().unwrap().to_owned().leak(),
            "-o",
            p(out).to_str().unwrap().to_owned().leak(),
        ];
        args.extend_from_slice(extra);
        ok(&adain(&args));
        image::open(p(out)).unwrap().to_rgb8()
    };
    let whole = run(&[], "whole.png");
    let tiled = run(&["--tile", "64"], "tiled.png");
    let small_budget = run(&["--max-memory", "8MB"], "budget.tiff");
    assert_eq!(whole.dimensions(), (203, 150));
    for other in [&tiled, &small_budget] {
        let max = whole
            .as_raw()
            .iter()
            .zip(other.as_raw())
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(max <= 2, "max |diff| {max}");
    }
    // a bad size is refused by the flag parser, naming it
    let o = adain(&[
        "stylize",
        "-c",
        "x.png",
        "-s",
        "y.png",
        "--max-memory",
        "lots",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(common::stderr(&o).contains("lots"));
}
