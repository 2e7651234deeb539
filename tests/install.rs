//! A self-contained install: `cargo install --root TMP --path .`, then the
//! installed `adain`, run from an empty directory with `ADAIN_WEIGHTS` unset
//! and no checkout above it, stylizes with the weights built into it.
//!
//! The install is a `--debug` build into this test run's own target
//! directory, so it reuses what `cargo test` compiled (the release profile
//! would rebuild everything with LTO: minutes). The built-in weights are the
//! same in both profiles.

#![cfg(feature = "embed-weights")]

mod common;

use std::path::Path;
use std::process::Command;

#[test]
fn cargo_install_gives_an_adain_that_works_anywhere() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // target/debug/deps/install-HASH -> target
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap().to_owned();
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("prefix");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let o = Command::new(cargo)
        .args([
            "install",
            "--locked",
            "--offline",
            "--debug",
            "--bin",
            "adain",
            "--root",
        ])
        .arg(&prefix)
        .arg("--path")
        .arg(root)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "cargo install failed: {}",
        common::stderr(&o)
    );
    let bin = prefix.join("bin/adain");
    assert!(bin.is_file());

    let work = tmp.path().join("empty");
    std::fs::create_dir(&work).unwrap();
    common::save(
        &common::gradient(64, 48, 0),
        &tmp.path().join("in/photo.png"),
    );
    common::save(
        &common::gradient(48, 48, 3),
        &tmp.path().join("in/paint.png"),
    );
    let run = |args: &[&str]| {
        Command::new(&bin)
            .args(args)
            .current_dir(&work)
            .env_remove("ADAIN_WEIGHTS")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let o = run(&[
        "stylize",
        "-c",
        "../in/photo.png",
        "-s",
        "../in/paint.png",
        "--content-size",
        "0",
    ]);
    common::ok(&o);
    let out = work.join("output/photo_stylized_paint.jpg");
    assert_eq!(image::open(&out).unwrap().to_rgb8().dimensions(), (64, 48));
    // and it says which weights ran: the built-in ones, with their hashes
    let o = run(&["info"]);
    common::ok(&o);
    let text = String::from_utf8_lossy(&o.stdout);
    let sha = adain::weights::sha256_file(&root.join("weights/vgg19-relu4_1.safetensors")).unwrap();
    assert!(text.contains("built into this binary"), "{text}");
    assert!(text.contains(&sha), "{text}");
    let sha = adain::weights::sha256_file(&root.join("weights/decoder.safetensors")).unwrap();
    assert!(text.contains(&sha), "{text}");
}
