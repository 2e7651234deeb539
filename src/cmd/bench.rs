//! `adain bench`: the workloads are `adain::bench`; this prints them.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::Args;

use adain::conv::Precision;
use adain::weights::{self, WeightFile};
use adain::{runtime, Model};

#[derive(Args)]
pub struct BenchArgs {
    /// Image sides to time stylization at.
    #[arg(long, value_delimiter = ',', default_value = "256,512,1024,2048")]
    sizes: Vec<usize>,
    /// Timed runs per workload after one warm-up (at most 3 at 1024, 2 at 2048).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Training step: batch size.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Training step: image side.
    #[arg(long, default_value_t = 256)]
    train_size: usize,
    /// Training step: timed steps after one warm-up.
    #[arg(long, default_value_t = 2)]
    train_steps: usize,
    /// Only these workloads, e.g. `stylize_512,stylize_cached_512,train_b8_256`.
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Convolution arithmetic (bf16 needs AMX, else f32 is used).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    precision: Precision,
    /// Threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// cpu, or cuda (needs a build with `--features cuda`; the "% peak" column is
    /// then against the GPU's f32 matrix multiply, and peak memory is not shown).
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    device: String,
    #[arg(long)]
    vgg: Option<PathBuf>,
    #[arg(long)]
    decoder: Option<PathBuf>,
    /// Large images stylized at full size, 8-bit in and out, through the
    /// engine's choice of whole image or tiles (rows `stylize_large_WxH`).
    #[arg(long, value_delimiter = ',', default_value = "2048x2048,7680x4320", value_parser = parse_wh)]
    large: Vec<(u32, u32)>,
    /// Working-memory budget for the large rows (as `adain stylize --max-memory`).
    #[arg(long, default_value = "1GiB", value_parser = runtime::parse_size)]
    max_memory: u64,
    /// Force tiles of N px for the large rows (as `adain stylize --tile`).
    #[arg(long)]
    tile: Option<u32>,
    /// Image sides for Johnson et al.'s network (rows `johnson_S`).
    #[arg(long, value_delimiter = ',', default_value = "512,1024")]
    johnson_sizes: Vec<usize>,
    /// Batch of the Johnson training step (row `johnson_train_bB_S`, S = --train-size).
    #[arg(long, default_value_t = 4)]
    johnson_batch_size: usize,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(a: BenchArgs) -> Result<()> {
    runtime::threads(a.threads);
    adain::conv::set_precision(a.precision);
    let dev = runtime::device(&a.device)?;
    let (_, enc) = weights::load_encoder(a.vgg.as_deref())?;
    let dec = match weights::locate(a.decoder.as_deref(), weights::DECODER_FILE) {
        Ok(p) => WeightFile::load(&p)?,
        Err(_) => WeightFile {
            path: "formula decoder".into(),
            tensors: adain::testing::formula_decoder(0.003, &Device::Cpu)?,
            metadata: Default::default(),
        },
    };
    let model = Model::new(&enc, &dec, &dev)?;
    let encoder = adain::Encoder::new(candle_nn::VarBuilder::from_tensors(
        enc.on(&dev)?,
        candle_core::DType::F32,
        &dev,
    ))?;
    let settings = adain::bench::Settings {
        sizes: a.sizes,
        repeat: a.repeat,
        train_batch: a.batch_size,
        train_size: a.train_size,
        train_steps: a.train_steps,
        only: a.only,
        large: a.large,
        limits: adain::engine::Limits {
            max_memory: a.max_memory,
            tile: a.tile,
            ..Default::default()
        },
        johnson_sizes: a.johnson_sizes,
        johnson_batch: a.johnson_batch_size,
    };
    let threads = candle_core::utils::get_num_threads();
    let r = adain::bench::run(&model, &encoder, &settings, threads, &dev)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!(
        "{} | {} | {} threads | precision {} (AMX {}) | measured peak: f32 {:.0} GFLOP/s{}",
        r.device,
        r.cpu,
        r.threads,
        r.precision,
        if r.amx { "yes" } else { "no" },
        r.peak_f32_gflop_per_s,
        r.peak_bf16_gflop_per_s
            .map(|p| format!(", bf16 (AMX) {p:.0} GFLOP/s"))
            .unwrap_or_default()
    );
    println!(
        "{:<22}{:>10}{:>10}{:>10}{:>6}{:>9}{:>10}{:>8}{:>10}",
        "workload", "median s", "min s", "max s", "runs", "GFLOP", "GFLOP/s", "% peak", "peak MB"
    );
    for row in &r.rows {
        println!(
            "{:<22}{:>10.3}{:>10.3}{:>10.3}{:>6}{:>9.0}{:>10.0}{:>8.0}{:>10}",
            row.name,
            row.median_s,
            row.min_s,
            row.max_s,
            row.runs,
            row.gflop,
            row.gflop_per_s,
            row.pct_of_peak,
            row.peak_rss_mb
                .map(|m| format!("{m:.0}"))
                .unwrap_or("-".into())
        );
    }
    Ok(())
}

/// `WxH`, e.g. `7680x4320`.
fn parse_wh(s: &str) -> std::result::Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("`{s}`: expected WxH, e.g. 7680x4320"))?;
    let p = |v: &str| {
        v.trim()
            .parse::<u32>()
            .ok()
            .filter(|&n| n >= 16)
            .ok_or_else(|| format!("`{s}`: sides must be whole numbers of at least 16"))
    };
    Ok((p(w)?, p(h)?))
}
