//! The network and the method: the VGG encoder, AdaIN, the decoder, their
//! layers, the losses, colour preservation and the inference pipeline
//! ([`stylize::Model`]); beside them Johnson et al.'s per-style network and
//! its perceptual-loss objective ([`johnson`]).

pub mod adain;
pub mod color;
pub mod decoder;
pub mod encoder;
pub mod johnson;
pub mod layers;
pub mod loss;
pub mod stylize;
