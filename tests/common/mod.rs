//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use std::process::Output;

use candle_core::{Device, Tensor};
use image::{Rgb, RgbImage};

/// The VGG encoder: `weights/` (linked by scripts/setup.sh), `$ADAIN_WEIGHTS`,
/// or `../shared/weights`. The parity tests need the real network.
pub fn vgg_path() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut candidates = vec![root.join("weights/vgg19-relu4_1.safetensors")];
    if let Some(d) = std::env::var_os("ADAIN_WEIGHTS") {
        candidates.insert(0, PathBuf::from(d).join("vgg19-relu4_1.safetensors"));
    }
    candidates.push(root.join("../shared/weights/vgg19-relu4_1.safetensors"));
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .expect("VGG weights not found: run scripts/setup.sh (links ../shared/weights) or set ADAIN_WEIGHTS")
}

pub mod serve;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn load_fixture(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name), &Device::Cpu)
        .expect("fixture (regenerate with scripts/fixtures.sh)")
}

/// Writes the formula decoder (see `adain::testing`) as a decoder file.
pub fn write_formula_decoder(path: &Path, gain: f32) {
    let t = adain::testing::formula_decoder(gain, &Device::Cpu).unwrap();
    let mut v: Vec<(String, Tensor)> = t.into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    let sha = adain::weights::sha256_file(&vgg_path()).unwrap();
    let meta = adain::weights::decoder_metadata(&sha, "{\"test\":\"formula decoder\"}", 0);
    adain::weights::save_safetensors(path, &v, &meta, true).unwrap();
}

/// What the binary wrote to stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit 0 and no panic.
pub fn ok(o: &Output) {
    assert!(o.status.success(), "failed: {}", stderr(o));
    assert!(!stderr(o).contains("panicked"));
}

/// Exit 1, a single `error:` line that contains every `needle`, no panic.
pub fn fails_with(o: &Output, needles: &[&str]) {
    let e = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected failure, got {:?}: {e}",
        o.status
    );
    assert!(!e.contains("panicked"), "panic: {e}");
    let lines: Vec<&str> = e.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "want one error line: {e}");
    for n in needles {
        assert!(lines[0].contains(n), "error line lacks `{n}`: {}", lines[0]);
    }
}

/// A smooth test picture; `seed` shifts its colours.
pub fn gradient(w: u32, h: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            ((x * 255 / w + seed * 40) % 256) as u8,
            ((y * 255 / h + seed * 90) % 256) as u8,
            (((x + y) * 3 + seed * 70) % 256) as u8,
        ])
    })
}

/// Saves `img`, creating its directory.
pub fn save(img: &RgbImage, path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

/// A copy of the binary `exe` in `dir`, outside the project, as `cargo install`
/// leaves it (no weights/ above it). A test thread that forked while the copy's
/// write handle was open holds it until its child execs, and running the copy
/// meanwhile fails with "Text file busy" (ETXTBSY): this waits for that to pass.
pub fn installed_copy(exe: &str, dir: &Path) -> PathBuf {
    let bin = dir.join(Path::new(exe).file_name().unwrap());
    std::fs::copy(exe, &bin).unwrap();
    for _ in 0..200 {
        match std::process::Command::new(&bin).arg("--version").output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            r => {
                r.unwrap();
                break;
            }
        }
    }
    bin
}

/// `n` generated training pictures `img{i}.png` of `w`x`h` in `dir` (each
/// different, `seed` shifts the set), for the `adain-train` tests.
pub fn write_images(dir: &Path, n: u32, seed: u32, w: u32, h: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let img = RgbImage::from_fn(w, h, |x, y| {
            let v = (x * (3 + i) + y * (5 + seed) + i * 37 + seed * 11) as u8;
            Rgb([
                v,
                v.wrapping_mul(3).wrapping_add((i * 50) as u8),
                ((x ^ y) * (seed + 2)) as u8,
            ])
        });
        img.save(dir.join(format!("img{i}.png"))).unwrap();
    }
}

/// Tiny generated photos and paintings, and `adain-train` on them.
pub struct TrainData {
    pub dir: tempfile::TempDir,
}

impl TrainData {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_images(&dir.path().join("photos"), 6, 1, 48, 40);
        write_images(&dir.path().join("paintings"), 5, 2, 48, 40);
        Self { dir }
    }
    pub fn p(&self, s: &str) -> PathBuf {
        self.dir.path().join(s)
    }
    /// adain-train on this data with tiny crops; `extra` flags win.
    pub fn cmd(&self, run: &str, extra: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_adain-train"));
        let vgg = vgg_path();
        c.args([
            "--vgg",
            vgg.to_str().unwrap(),
            "--content",
            self.p("photos").to_str().unwrap(),
        ])
        .args([
            "--style",
            self.p("paintings").to_str().unwrap(),
            "--out",
            self.p(run).to_str().unwrap(),
        ])
        .args([
            "--crop-size",
            "32",
            "--load-size",
            "40",
            "--batch-size",
            "2",
            "--log-every",
            "1",
        ])
        .args([
            "--sample-every",
            "1000",
            "--save-every",
            "1000",
            "--threads",
            "2",
        ])
        .args(extra)
        .env_remove("RUST_LOG");
        c
    }
    pub fn run(&self, run: &str, extra: &[&str]) -> Output {
        self.cmd(run, extra).output().unwrap()
    }
}
