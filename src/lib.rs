//! `adain`: arbitrary style transfer with adaptive instance normalisation
//! (Huang & Belongie, 2017) on candle.
//!
//! Where things are:
//! - [`encoder`]: the frozen VGG-19 to relu4_1;
//! - [`adain`]: the AdaIN operation, blends and masked (regional) AdaIN;
//! - [`decoder`]: the trained decoder, back to an image;
//! - [`layers`]: reflection padding, padded conv, ceil-mode pooling, upsampling;
//! - [`conv`]: the fused CPU pad+conv+ReLU op and the precision switch;
//! - [`winograd`]: its f32 forward pass and gradients by Winograd F(2x2, 3x3)
//!   (the forward F(4x4, 3x3) where no gradient flows);
//! - [`amx`]: the bf16 kernels of that op on Intel AMX (`--precision bf16`);
//! - [`loss`]: every loss: training objective, style statistics, Gram matrices;
//! - [`optim`]: optimisers (Adam with inverse-time decay; L-BFGS);
//! - [`optimize`]: Gatys et al.'s method: the image itself optimised (`adain optimize`);
//! - [`stylize`]: the inference pipeline (alpha, blends, masks, colour);
//! - [`eval`]: scoring stylizers (style and content metrics, SSIM, reports);
//! - [`color`]: colour preservation (coral, luminance);
//! - [`weights`]: weight files, metadata, locations, PyTorch import;
//! - [`image_io`]: pictures in and out; [`atomic`]: crash-safe writes;
//! - [`runtime`]: device, threads and logging for the binaries;
//! - [`bench`]: `adain bench`'s workloads, FLOP counts and peak memory;
//! - [`alloc`]: the binaries' allocator (huge pages for large tensors).

pub mod adain;
pub mod alloc;
pub mod amx;
pub mod atomic;
pub mod bench;
pub mod color;
pub mod conv;
pub mod decoder;
pub mod encoder;
pub mod eval;
pub mod image_io;
pub mod layers;
pub mod loss;
pub mod optim;
pub mod optimize;
pub mod runtime;
pub mod stylize;
#[doc(hidden)]
pub mod testing;
pub mod weights;
pub mod winograd;

pub use decoder::Decoder;
pub use encoder::Encoder;
pub use stylize::{ColorMode, Control, Model, Options};
