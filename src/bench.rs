//! `adain bench`: the measuring stick for speed and memory. Times the work a
//! user and the trainer do (stylize with and without a cached style, one
//! training step), reports the median and range of several runs after a
//! warm-up, the convolution FLOP rate, its share of this machine's measured
//! matrix-multiply peak, and the peak resident memory of each workload.
//! FLOPs are those of direct 3x3 convolutions whatever the kernel: f32 runs
//! Winograd F(2x2, 3x3), which does 4/9 of the multiplies, so its rate is an
//! effective one and may pass 100% of the peak.
//! `scripts/bench-vs-pytorch.sh` runs the same work in PyTorch, interleaved,
//! and writes BENCHMARKS.md.

use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::Serialize;

use crate::conv::{precision, Precision};
use crate::decoder::DECODER_CONVS;
use crate::encoder::{ENCODER_CONVS, FEATURE_CONVS, POOL_AFTER};
use crate::optim::{Adam, AdamConfig};
use crate::{loss, ColorMode, Control, Decoder, Encoder, Model, Options};

/// FLOPs (2 per multiply-add) of the encoder's convolutions on an h x w image.
pub fn encoder_flops(h: usize, w: usize) -> f64 {
    encoder_flops_upto(h, w, 3)
}

/// FLOPs of the encoder's convolutions up to feature `last` (0 = relu1_1 ..
/// 3 = relu4_1), as [`Encoder::features_upto`] runs them.
pub fn encoder_flops_upto(h: usize, w: usize, last: usize) -> f64 {
    let (mut h, mut w, mut f) = (h, w, 0.0);
    for (i, &(_, ci, co, k)) in ENCODER_CONVS[..=FEATURE_CONVS[last]].iter().enumerate() {
        f += 2.0 * (ci * co * k * k * h * w) as f64;
        // ceil-mode pools
        if POOL_AFTER.contains(&i) {
            (h, w) = (h.div_ceil(2), w.div_ceil(2));
        }
    }
    f
}

/// FLOPs of the decoder's convolutions from relu4_1 features of h x w.
pub fn decoder_flops(h: usize, w: usize) -> f64 {
    let (mut h, mut w, mut f) = (h, w, 0.0);
    for &(_, ci, co, up) in &DECODER_CONVS {
        f += 2.0 * (ci * co * 9 * h * w) as f64;
        if up {
            (h, w) = (2 * h, 2 * w);
        }
    }
    f
}

/// FLOPs of one training step (batch b, s x s): forward through the encoder
/// for content, style and output, the decoder, then the backward: the input
/// gradient through the encoder (its weights are frozen) and both gradients
/// of the decoder.
pub fn train_step_flops(b: usize, s: usize) -> f64 {
    let (e, d) = (encoder_flops(s, s), decoder_flops(s / 8, s / 8));
    b as f64 * (3.0 * e + d + e + 2.0 * d)
}

/// FLOPs of Johnson et al.'s network on an h x w image (multiples of 4):
/// its 9x9 image layers, the stride-2 and upsampled 3x3 layers and the ten
/// 3x3 convs of the residual blocks (at a quarter of the resolution).
pub fn johnson_flops(h: usize, w: usize) -> f64 {
    let px = (h * w) as f64;
    let conv =
        |ci: usize, co: usize, k: usize, share: f64| 2.0 * (ci * co * k * k) as f64 * px * share;
    conv(3, 32, 9, 1.0)
        + conv(32, 64, 3, 0.25)
        + conv(64, 128, 3, 1.0 / 16.0)
        + 2.0 * crate::johnson::RESIDUAL_BLOCKS as f64 * conv(128, 128, 3, 1.0 / 16.0)
        + conv(128, 64, 3, 0.25)
        + conv(64, 32, 3, 1.0)
        + conv(32, 3, 9, 1.0)
}

/// FLOPs of one Johnson training step (batch b, s x s): the network forward
/// and backward (both gradients), the encoder on the content up to the
/// content layer (the target), on the output and its input gradient.
pub fn johnson_train_step_flops(b: usize, s: usize) -> f64 {
    let target = encoder_flops_upto(s, s, crate::johnson::objective::DEFAULT_CONTENT_LAYER);
    b as f64 * (3.0 * johnson_flops(s, s) + target + 2.0 * encoder_flops(s, s))
}

/// One measured workload.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub what: String,
    pub median_s: f64,
    pub min_s: f64,
    pub max_s: f64,
    pub runs: usize,
    pub gflop: f64,
    pub gflop_per_s: f64,
    /// Share of the measured matrix-multiply peak at the precision in use.
    pub pct_of_peak: f64,
    /// Peak resident set of the process during the workload (MB).
    pub peak_rss_mb: Option<f64>,
}

/// The whole report: machine, settings, peaks, rows.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `cpu`, or the GPU the work ran on.
    pub device: String,
    pub cpu: String,
    pub threads: usize,
    pub precision: String,
    pub amx: bool,
    pub peak_f32_gflop_per_s: f64,
    pub peak_bf16_gflop_per_s: Option<f64>,
    pub rows: Vec<Row>,
}

pub struct Settings {
    /// Square sides for stylization.
    pub sizes: Vec<usize>,
    /// Timed runs per workload (after one warm-up); sides >= 1024 use fewer.
    pub repeat: usize,
    pub train_batch: usize,
    pub train_size: usize,
    pub train_steps: usize,
    /// Only these workloads (names as in the report), if given.
    pub only: Option<Vec<String>>,
    /// Images (w, h) stylized at full size through the engine's choice of
    /// whole-image or tiles under `limits` (8-bit in and out, as a user's file).
    pub large: Vec<(u32, u32)>,
    pub limits: crate::engine::Limits,
    /// Square sides for Johnson et al.'s network (rows `johnson_S`).
    pub johnson_sizes: Vec<usize>,
    /// Batch of the Johnson training step (row `johnson_train_bB_S`, S =
    /// `train_size`).
    pub johnson_batch: usize,
}

/// Resets the kernel's peak-RSS counter of this process (Linux).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak RSS since the last reset, in MB (Linux).
fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Times `f` on `dev`: one warm-up, then `runs` timed runs. A GPU runs its
/// work asynchronously, so each run ends by waiting for the device. The peak
/// resident memory is the host's, so it is reported for the CPU only.
fn time_runs(
    dev: &Device,
    runs: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<(f64, f64, f64, Option<f64>)> {
    reset_peak_rss();
    f()?;
    dev.synchronize()?;
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        f()?;
        dev.synchronize()?;
        t.push(start.elapsed().as_secs_f64());
    }
    let peak = if dev.is_cpu() { peak_rss_mb() } else { None };
    t.sort_by(f64::total_cmp);
    Ok((t[t.len() / 2], t[0], t[t.len() - 1], peak))
}

/// Measured f32 and (with AMX) bf16 matrix-multiply peaks in GFLOP/s: a
/// 2048^3 candle matmul, and the AMX kernel on a 512-channel 64x64 conv
/// (a 512 x 4608 x 4096 product).
pub fn measure_peaks(dev: &Device) -> Result<(f64, Option<f64>)> {
    let n = 2048;
    let a = Tensor::rand(0f32, 1., (n, n), dev)?;
    let b = Tensor::rand(0f32, 1., (n, n), dev)?;
    let (f32_t, ..) = time_runs(dev, 3, || Ok(a.matmul(&b).map(|_| ())?))?;
    let f32_peak = 2.0 * (n * n * n) as f64 / f32_t / 1e9;
    let bf16_peak = if dev.is_cpu() && crate::amx::available() {
        let (c, s) = (512, 64);
        let x: Vec<f32> = (0..c * s * s).map(|i| (i % 13) as f32 * 0.1).collect();
        let w: Vec<f32> = (0..c * c * 9).map(|i| (i % 7) as f32 * 0.01).collect();
        let bias = vec![0f32; c];
        let (t, ..) = time_runs(dev, 5, || {
            crate::amx::conv_forward(&x, 1, c, s, s, &w, &bias, c, false);
            Ok(())
        })?;
        Some(2.0 * (c * c * 9 * s * s) as f64 / t / 1e9)
    } else {
        None
    };
    Ok((f32_peak, bf16_peak))
}

/// Runs the workloads on `dev` with `model` and `encoder`, which must live on
/// it (weights do not change the timing).
pub fn run(
    model: &Model,
    encoder: &Encoder,
    s: &Settings,
    threads: usize,
    dev: &Device,
) -> Result<Report> {
    let (peak_f32, peak_bf16) = measure_peaks(dev)?;
    let bf16 = dev.is_cpu() && crate::conv::effective(precision()) == Precision::Bf16;
    let peak = if bf16 {
        peak_bf16.unwrap_or(peak_f32)
    } else {
        peak_f32
    };
    let wanted = |name: &str| s.only.as_ref().is_none_or(|o| o.iter().any(|x| x == name));
    let opts = Options {
        alpha: 1.0,
        control: Control::Blend(vec![1.0]),
        color: ColorMode::None,
        smooth: None,
    };
    let mut rows = Vec::new();
    let mut push =
        |name: String, what: String, gflop: f64, m: (f64, f64, f64, Option<f64>), runs: usize| {
            let row = Row {
                name,
                what,
                median_s: m.0,
                min_s: m.1,
                max_s: m.2,
                runs,
                gflop,
                gflop_per_s: gflop / m.0,
                pct_of_peak: 100.0 * gflop / m.0 / peak,
                peak_rss_mb: m.3,
            };
            tracing::info!("{}: {:.3} s", row.name, row.median_s);
            rows.push(row);
        };
    for &side in &s.sizes {
        let runs = if side >= 2048 {
            s.repeat.min(2)
        } else if side >= 1024 {
            s.repeat.min(3)
        } else {
            s.repeat
        };
        let c = Tensor::rand(0f32, 1., (1, 3, side, side), dev)?;
        let st = Tensor::rand(0f32, 1., (1, 3, side, side), dev)?;
        let (e, d) = (encoder_flops(side, side), decoder_flops(side / 8, side / 8));
        let name = format!("stylize_{side}");
        if wanted(&name) {
            let m = time_runs(dev, runs, || {
                model.stylize(&c, std::slice::from_ref(&st), &opts)?;
                Ok(())
            })?;
            push(
                name,
                format!("stylize {side}x{side} (content + style encode, AdaIN, decode)"),
                (2.0 * e + d) / 1e9,
                m,
                runs,
            );
        }
        let name = format!("stylize_cached_{side}");
        if wanted(&name) {
            let stats = model.style_stats(&st)?;
            let m = time_runs(dev, runs, || {
                model.stylize_with_stats(&c, std::slice::from_ref(&stats), &opts)?;
                Ok(())
            })?;
            push(
                name,
                format!("stylize {side}x{side}, style statistics cached"),
                (e + d) / 1e9,
                m,
                runs,
            );
        }
    }
    for &(w, h) in &s.large {
        let name = format!("stylize_large_{w}x{h}");
        if !wanted(&name) {
            continue;
        }
        let strategy = crate::engine::tile::strategy(w, h, &s.limits);
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let src = crate::image_io::Source {
            image: image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |_, _| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                image::Rgb([rng as u8, (rng >> 8) as u8, (rng >> 16) as u8])
            })),
            alpha: None,
        };
        let stats = model.style_stats(&Tensor::rand(0f32, 1., (1, 3, 512, 512), dev)?)?;
        let mut once = || -> Result<()> {
            match strategy {
                crate::engine::Strategy::Whole => {
                    let t = crate::image_io::to_tensor(&src.to_picture().rgb, dev)?;
                    let out = model.stylize_with_stats(&t, std::slice::from_ref(&stats), &opts)?;
                    crate::image_io::to_rgb8(&crate::image_io::from_tensor(&out)?);
                }
                crate::engine::Strategy::Tiled {
                    tile,
                    keep_features,
                } => {
                    crate::engine::tile::stylize_tiled(
                        model,
                        &src,
                        crate::engine::tile::Styles::Stats(std::slice::from_ref(&stats)),
                        &opts,
                        tile,
                        keep_features,
                        &mut |_, _| {},
                    )?;
                }
            }
            Ok(())
        };
        // Past 16 MP a run takes minutes: one timed run, no warm-up.
        let runs = if (w as u64 * h as u64) > 16 << 20 {
            1
        } else {
            s.repeat.min(2)
        };
        let m = if runs == 1 {
            reset_peak_rss();
            let start = Instant::now();
            once()?;
            dev.synchronize()?;
            let t = start.elapsed().as_secs_f64();
            (t, t, t, if dev.is_cpu() { peak_rss_mb() } else { None })
        } else {
            time_runs(dev, runs, &mut once)?
        };
        let (e, d) = (
            encoder_flops(h as usize, w as usize),
            decoder_flops(h as usize / 8, w as usize / 8),
        );
        let how = match strategy {
            crate::engine::Strategy::Whole => "whole image".to_string(),
            crate::engine::Strategy::Tiled {
                tile,
                keep_features,
            } => format!(
                "tiles of {tile}, {}",
                if keep_features {
                    "features kept"
                } else {
                    "encoded twice"
                }
            ),
        };
        push(
            name,
            format!(
                "stylize {w}x{h} 8-bit, style cached, {how} (budget {} MiB); GFLOP of one whole pass",
                s.limits.max_memory >> 20
            ),
            (e + d) / 1e9,
            m,
            runs,
        );
    }
    // Johnson et al.'s network: formula-free random weights (timing does not
    // depend on them), the same 0..1 -> 0..255 path as `adain stylize --model`.
    let jvm = VarMap::new();
    let jnet = crate::johnson::TransformerNet::new(VarBuilder::from_varmap(&jvm, DType::F32, dev))?;
    for &side in &s.johnson_sizes {
        let name = format!("johnson_{side}");
        if !wanted(&name) {
            continue;
        }
        // As `adain stylize --model` does (see `cmd::common::johnson_engine`).
        crate::alloc::keep_freed_memory();
        let runs = if side >= 1024 {
            s.repeat.min(3)
        } else {
            s.repeat
        };
        let c = Tensor::rand(0f32, 1., (1, 3, side, side), dev)?.detach();
        let m = time_runs(dev, runs, || {
            crate::johnson::stylize_with(&jnet, &c)?;
            Ok(())
        })?;
        push(
            name,
            format!("Johnson network {side}x{side} (per-style, one forward pass)"),
            johnson_flops(side, side) / 1e9,
            m,
            runs,
        );
    }
    let (b, side) = (s.train_batch, s.train_size);
    let jname = format!("johnson_train_b{}_{side}", s.johnson_batch);
    let name = format!("train_b{b}_{side}");
    if wanted(&name) {
        // As `adain-train` does (from here on: the stylize rows above keep
        // glibc's default, as `adain stylize` does).
        crate::alloc::keep_freed_memory();
        crate::conv::set_f4_forward(false);
        let varmap = VarMap::new();
        let decoder = Decoder::new(VarBuilder::from_varmap(&varmap, DType::F32, dev))?;
        let mut params: Vec<(String, candle_core::Var)> =
            varmap.data().lock().unwrap().clone().into_iter().collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let mut adam = Adam::new(params, AdamConfig::default())?;
        let c = Tensor::rand(0f32, 1., (b, 3, side, side), dev)?;
        let st = Tensor::rand(0f32, 1., (b, 3, side, side), dev)?;
        let m = time_runs(dev, s.train_steps, || {
            let l = loss::losses(encoder, &decoder, &c, &st)?;
            let grads = l.total(1.0, 50.0)?.backward()?;
            adam.step_grads(&grads)
        })?;
        push(
            name,
            format!("training step, batch {b}, {side}x{side} (forward, backward, Adam)"),
            train_step_flops(b, side) / 1e9,
            m,
            s.train_steps,
        );
    }
    if wanted(&jname) {
        crate::alloc::keep_freed_memory();
        crate::conv::set_f4_forward(false);
        let jb = s.johnson_batch;
        let mut params: Vec<(String, candle_core::Var)> =
            jvm.data().lock().unwrap().clone().into_iter().collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let cfg = AdamConfig {
            lr: 1e-3,
            lr_decay: 0.0,
            ..AdamConfig::default()
        };
        let mut adam = Adam::new(params, cfg)?;
        let style = Tensor::rand(0f32, 1., (1, 3, side, side), dev)?;
        let obj = crate::johnson::Objective::new(
            encoder,
            &style,
            crate::johnson::objective::DEFAULT_CONTENT_LAYER,
            crate::johnson::Weights {
                content: 1.0,
                style: 1.0,
                tv: 1.0,
            },
        )?;
        let c = Tensor::rand(0f32, 1., (jb, 3, side, side), dev)?;
        let m = time_runs(dev, s.train_steps, || {
            let l = obj.losses(encoder, &jnet, &c)?;
            adam.step_grads(&l.total.backward()?)
        })?;
        push(
            jname,
            format!("Johnson training step, batch {jb}, {side}x{side} (forward, backward, Adam)"),
            johnson_train_step_flops(jb, side) / 1e9,
            m,
            s.train_steps,
        );
    }
    Ok(Report {
        device: match dev.location() {
            candle_core::DeviceLocation::Cpu => "cpu".into(),
            candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
            candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
        },
        cpu: cpu_name(),
        threads,
        precision: precision().to_string(),
        amx: crate::amx::available(),
        peak_f32_gflop_per_s: peak_f32,
        peak_bf16_gflop_per_s: peak_bf16,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flop_counts_match_the_issue_figures() {
        // stylize 512^2 incl. style: ~378 GFLOP; cached: ~252; train b8 @256: ~1.8 TFLOP.
        let (e, d) = (encoder_flops(512, 512), decoder_flops(64, 64));
        assert!(
            ((2.0 * e + d) / 1e9 - 378.0).abs() < 3.0,
            "{}",
            (2.0 * e + d) / 1e9
        );
        assert!(((e + d) / 1e9 - 252.0).abs() < 3.0, "{}", (e + d) / 1e9);
        let t = train_step_flops(8, 256) / 1e12;
        assert!((t - 1.8).abs() < 0.05, "{t}");
    }

    #[test]
    fn the_encoder_to_relu2_1_counts_its_four_convs() {
        // by hand at 256^2: the 1x1 colour conv, conv1_1, conv1_2, then
        // conv2_1 at 128^2 after the pool
        let px = 256.0 * 256.0;
        let want = 2.0 * (3.0 * 3.0 + 3.0 * 64.0 * 9.0 + 64.0 * 64.0 * 9.0) * px
            + 2.0 * 64.0 * 128.0 * 9.0 * px / 4.0;
        assert_eq!(encoder_flops_upto(256, 256, 1), want);
        assert_eq!(encoder_flops_upto(256, 256, 3), encoder_flops(256, 256));
        assert!(encoder_flops_upto(256, 256, 2) < encoder_flops(256, 256));
    }
}
