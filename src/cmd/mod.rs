//! The subcommands of the `adain` binary, one file each (flags and printing;
//! the work is in the library).

pub mod bench;
pub mod common;
pub mod eval;
pub mod optimize;
pub mod serve;
pub mod sheet;
pub mod stylize;
pub mod video;
pub mod weights;
