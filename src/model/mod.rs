//! The network and the method: the VGG encoder, AdaIN, the decoder, their
//! layers, the losses, colour preservation and the inference pipeline
//! ([`stylize::Model`]).

pub mod adain;
pub mod color;
pub mod decoder;
pub mod encoder;
pub mod layers;
pub mod loss;
pub mod stylize;
