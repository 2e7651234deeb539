//! adain-train: see the training issue.
fn main() {}
