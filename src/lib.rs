//! `adain`: arbitrary style transfer with adaptive instance normalisation
//! (Huang & Belongie, 2017) on candle.
//!
//! Where things are (the folders are the architecture; each module is also
//! reachable at the crate root, e.g. `adain::encoder`):
//! - [`model`], the network and the method:
//!   - [`encoder`]: the frozen VGG-19 to relu4_1;
//!   - [`adain`]: the AdaIN operation, blends and masked (regional) AdaIN;
//!   - [`decoder`]: the trained decoder, back to an image;
//!   - [`layers`]: reflection padding, padded conv, ceil-mode pooling, upsampling;
//!   - [`loss`]: every loss: training objective, style statistics, Gram matrices;
//!   - [`color`]: colour preservation (coral, luminance);
//!   - [`stylize`]: `Model`, the inference pipeline on tensors (alpha, blends, masks, colour);
//!   - [`johnson`]: Johnson et al.'s per-style feed-forward network (PyTorch
//!     `fast_neural_style` keys) and its perceptual-loss training objective;
//! - [`kernels`], the CPU kernels:
//!   - [`conv`]: the fused CPU pad+conv+ReLU op and the precision switch;
//!   - [`winograd`]: its f32 kernels, Winograd F(2x2, 3x3) (F(4x4, 3x3) where no gradient flows);
//!   - [`amx`]: its bf16 kernels on Intel AMX (`--precision bf16`);
//!   - `kernels::im2col`: the other kernel sizes and strides (9x9, stride 2), f32;
//!   - `kernels::norm`: instance normalisation (+ ReLU, + residual) with its backward;
//!   - `kernels::loss`: the Gram matrices and the mean squared error, with their backward;
//!   - [`alloc`]: the binaries' allocator (huge pages for large tensors);
//!   - `kernels::pad`: what they share (reflection indices, padding kinds);
//! - [`engine`]: a stylization job for every front-end: the plan (inputs,
//!   outputs, jobs), the style-statistics cache, tiled stylization of any size,
//!   progress callbacks;
//! - [`io`], files:
//!   - [`image_io`]: pictures in and out, size limits; [`atomic`]: crash-safe writes;
//!   - [`weights`]: weight files, metadata, locations, embedded defaults, PyTorch import;
//! - [`video`]: `adain video`: ffmpeg in and out, the temporal modes
//!   (statistics smoothing, flow-guided blending), flicker metrics, resumable segments;
//! - [`optim`]: optimisers (Adam with inverse-time decay; L-BFGS);
//! - [`optimize`]: Gatys et al.'s method: the image itself optimised (`adain optimize`);
//! - [`eval`]: scoring stylizers (style and content metrics, SSIM, reports);
//! - [`runtime`]: device, threads, logging and error reporting for the binaries;
//! - [`bench`]: `adain bench`'s workloads, FLOP counts and peak memory;
//! - [`server`]: `adain serve`: the HTTP API, the web page, the worker pool.

pub mod bench;
pub mod engine;
pub mod eval;
pub mod io;
pub mod kernels;
pub mod model;
pub mod optim;
pub mod optimize;
pub mod runtime;
pub mod server;
#[doc(hidden)]
pub mod testing;
pub mod video;

pub use io::{atomic, image_io, weights};
pub use kernels::{alloc, amx, conv, winograd};
pub use model::{adain, color, decoder, encoder, johnson, layers, loss, stylize};

pub use decoder::Decoder;
pub use encoder::Encoder;
pub use stylize::{ColorMode, Control, Model, Options};
