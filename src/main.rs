//! `adain`: stylize photos with paintings (AdaIN), convert PyTorch weights,
//! inspect weight files. Thin layer over the `adain` library.

use anyhow::Result;
use clap::{Parser, Subcommand};

use adain::runtime;

mod cmd;

#[global_allocator]
static ALLOC: adain::alloc::HugePageAlloc = adain::alloc::HugePageAlloc;

#[derive(Parser)]
#[command(
    name = "adain",
    version,
    args_override_self = true,
    about = "Arbitrary artistic style transfer in one forward pass (AdaIN, Huang & Belongie 2017)"
)]
#[command(
    long_about = "Repaints photos in the style of paintings with a VGG-19 encoder, adaptive instance \
normalisation and a trained decoder.\n\nWeights: --vgg and --decoder, else $ADAIN_WEIGHTS/vgg19-relu4_1.safetensors and \
$ADAIN_WEIGHTS/decoder.safetensors when ADAIN_WEIGHTS is set (only there), else weights/ in the project \
the binary was built from, else the copies built into this binary (the published encoder and decoder)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Stylize content image(s) with style image(s), any size (tiled when large).
    Stylize(cmd::stylize::StylizeArgs),
    /// Stylize a video: audio, timing and rotation kept, temporally stable, resumable.
    Video(cmd::video::VideoArgs),
    /// Measure a stylized video's flicker (E_fd, warping error) and style metrics.
    EvalVideo(cmd::video::EvalVideoArgs),
    /// Score a stylizer (this decoder, or any tool's outputs) on content x style pairs.
    Eval(cmd::eval::EvalArgs),
    /// Gatys et al.'s method: optimise the output image itself (slow; no decoder needed).
    Optimize(cmd::optimize::OptimizeArgs),
    /// Reconstruct a content's features or a style's Gram matrices from noise, per layer.
    Reconstruct(cmd::optimize::ReconstructArgs),
    /// Parameter-exploration sheet: optimise for every style weight x style layer set.
    Grid(cmd::optimize::GridArgs),
    /// Convert a PyTorch checkpoint (.pth: decoder.pth, vgg_normalised.pth, a
    /// fast_neural_style network such as candy.pth, or a training checkpoint
    /// wrapping a state dict) to safetensors; a .safetensors input is written
    /// again with a tensors_sha256 checksum (files from before checksums or
    /// from other tools).
    Convert(cmd::weights::ConvertArgs),
    /// Show what a weight file holds (tensors, shapes, metadata); without FILE,
    /// which encoder and decoder `adain stylize` would use, and from where.
    Info(cmd::weights::InfoArgs),
    /// Measure speed and memory: stylization at several sizes (with and without a
    /// cached style), one training step, and Johnson et al.'s per-style network
    /// (stylization at --johnson-sizes, one training step). Prints median and range of several
    /// runs after a warm-up, convolution GFLOP/s, % of this machine's measured
    /// matrix-multiply peak (f32: a 2048^3 matmul; bf16: the AMX kernel) and peak
    /// resident memory. FLOPs count direct 3x3 convolutions: f32's Winograd
    /// kernels do 4/9 of the multiplies, so their rate is effective and may pass
    /// 100% of the peak. Without a decoder a formula one is used (weights do not
    /// change the timing). scripts/bench-vs-pytorch.sh compares with PyTorch.
    Bench(cmd::bench::BenchArgs),
    /// HTTP API and web page (live preview, webcam) on one loaded model:
    /// POST /v1/stylize, GET /v1/styles, /healthz, /metrics, /openapi.json.
    Serve(cmd::serve::ServeArgs),
}

fn main() {
    let cli = Cli::parse();
    let quiet = matches!(&cli.cmd, Cmd::Stylize(a) if a.quiet)
        || matches!(&cli.cmd, Cmd::Video(a) if a.quiet);
    runtime::logging(quiet);
    if let Err(e) = run(cli) {
        // One line: the chain of contexts joined.
        eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Stylize(args) => cmd::stylize::run(args),
        Cmd::Video(args) => cmd::video::run(args),
        Cmd::EvalVideo(args) => cmd::video::eval(args),
        Cmd::Eval(args) => cmd::eval::run(args),
        Cmd::Optimize(args) => cmd::optimize::run_optimize(args),
        Cmd::Reconstruct(args) => cmd::optimize::run_reconstruct(args),
        Cmd::Grid(args) => cmd::optimize::run_grid(args),
        Cmd::Convert(args) => cmd::weights::convert(args),
        Cmd::Info(args) => cmd::weights::info(args),
        Cmd::Bench(args) => cmd::bench::run(args),
        Cmd::Serve(args) => cmd::serve::run(args),
    }
}
