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

/// A size in bytes: `1073741824`, `512MB`, `1.5GiB`, `800M`, `2g` (K/M/G/T
/// are powers of 1024; KB/MB/GB/TB powers of 1000).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}`: not a size (e.g. 512MB, 2GiB)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024f64.powi(2),
        "g" | "gib" => 1024f64.powi(3),
        "t" | "tib" => 1024f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        u => {
            return Err(format!(
                "`{s}`: unknown unit `{u}` (use B, KB, MB, GB, KiB, MiB, GiB)"
            ))
        }
    };
    let v = n * mult;
    if !v.is_finite() || v < 1.0 {
        return Err(format!("`{s}`: must be at least 1 byte"));
    }
    Ok(v as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_parse() {
        assert_eq!(super::parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(super::parse_size("512MB"), Ok(512_000_000));
        assert_eq!(super::parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(super::parse_size("4096"), Ok(4096));
        assert!(super::parse_size("lots").is_err());
        assert!(super::parse_size("5 parsecs").is_err());
    }
}
