//! Files: pictures in and out ([`image_io`]), weight files ([`weights`]) and
//! crash-safe writes ([`atomic`]).

pub mod atomic;
pub mod image_io;
pub mod weights;
