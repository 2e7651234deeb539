//! Process set-up shared by both binaries: device choice, thread count, logging.

use anyhow::{bail, Result};
use candle_core::Device;

/// `--device cpu|cuda`.
pub fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => {
            if !candle_core::utils::cuda_is_available() {
                bail!("--device cuda: this build has no CUDA support (rebuild with `cargo build --release --features cuda`)");
            }
            Ok(Device::new_cuda(0)?)
        }
        other => bail!("--device {other}: expected cpu or cuda"),
    }
}

/// `--threads N` (0 = all cores): candle's CPU kernels and rayon both read
/// RAYON_NUM_THREADS, so it is set before any of them starts.
pub fn threads(n: usize) {
    if n > 0 {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
}

/// Logs to stderr as `level: message`; `RUST_LOG` overrides the default.
pub fn logging(quiet: bool) {
    let default = if quiet { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .try_init();
}

/// Median wall time in seconds of `repeat` runs of `f`, after one untimed warm-up.
pub fn median_secs(repeat: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(repeat);
    for _ in 0..repeat.max(1) {
        let t = std::time::Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Fonts tried, in order, for the text of figures (loss plots, labelled sheets).
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// Registers the first TTF found with plotters (once per process) and returns
/// its family name, or `None` (figures are then drawn without text).
pub fn font_family() -> Option<&'static str> {
    const FAMILY: &str = "adain-sans";
    static FONT: std::sync::OnceLock<Option<&'static str>> = std::sync::OnceLock::new();
    *FONT.get_or_init(|| {
        for p in FONT_PATHS {
            let Ok(bytes) = std::fs::read(p) else {
                continue;
            };
            // plotters needs 'static font data; this happens once.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            let style = plotters::style::FontStyle::Normal;
            if plotters::style::register_font(FAMILY, style, bytes).is_ok() {
                return Some(FAMILY);
            }
        }
        tracing::warn!("no TTF font found; figures will have no text");
        None
    })
}
