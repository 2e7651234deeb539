//! Subcommands of the `adain` binary that live in their own files.

pub mod eval;
pub mod optimize;
pub mod sheet;
