//! `adain convert` and `adain info`: weight files.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use adain::weights::{self, Kind, WeightFile, WeightSource};

#[derive(Args)]
pub struct ConvertArgs {
    input: PathBuf,
    output: PathBuf,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    overwrite: bool,
}

#[derive(Args)]
pub struct InfoArgs {
    /// A weight file; without it, the weights `adain stylize` would run.
    file: Option<PathBuf>,
    /// With no FILE: this encoder instead of the default one.
    #[arg(long)]
    vgg: Option<PathBuf>,
    /// With no FILE: this decoder instead of the default one.
    #[arg(long)]
    decoder: Option<PathBuf>,
}

pub fn convert(a: ConvertArgs) -> Result<()> {
    if a.input.extension().is_some_and(|e| e == "safetensors") {
        weights::add_checksum(&a.input, &a.output, a.overwrite)?;
        eprintln!(
            "wrote {} (same tensors, with a tensors_sha256 checksum)",
            a.output.display()
        );
        return Ok(());
    }
    let kind = weights::convert_pth(&a.input, &a.output, a.overwrite)?;
    let what = match kind {
        Kind::Decoder => "decoder",
        Kind::Encoder => "VGG encoder",
        Kind::Johnson => "Johnson network (fast_neural_style)",
        Kind::Other => "tensors",
    };
    eprintln!("wrote {} ({what})", a.output.display());
    Ok(())
}

pub fn info(a: InfoArgs) -> Result<()> {
    let Some(file) = a.file else {
        let (vgg, decoder) = weights::locate_model(a.vgg.as_deref(), a.decoder.as_deref())?;
        for (what, src) in [("encoder", &vgg), ("decoder", &decoder)] {
            let from = match src {
                WeightSource::File(_) => "file",
                WeightSource::Embedded { .. } => "built into this binary",
            };
            println!(
                "{what}: {} ({from}), sha256 {}",
                src.label().display(),
                src.sha256()?
            );
            let wf = src.load()?;
            if let Some(it) = wf.metadata.get(weights::META_ITER) {
                println!("  iteration: {it}");
            }
        }
        return Ok(());
    };
    let wf = WeightFile::load(&file)?;
    for (k, v) in &wf.metadata {
        println!("{k}: {v}");
    }
    let mut names: Vec<_> = wf.tensors.iter().collect();
    names.sort_by(|a, b| a.0.cmp(b.0));
    for (k, t) in names {
        println!("{k} {:?}", t.dims());
    }
    Ok(())
}
