//! Test support shared by the parity tests (`tests/`, `train/`) and
//! `scripts/make_fixtures.py`: a decoder whose weights come from a formula both
//! sides compute, so no 14 MB decoder file is needed as a fixture.

use std::collections::HashMap;

use candle_core::{Device, Result, Tensor};

use crate::decoder::DECODER_CONVS;

/// The "formula decoder": for conv j (keys 1, 5, ... 28 in order) with weight
/// [O,I,3,3], flat index i: `w[i] = sin(0.37 i + 0.001 i^2 + 1.1 j) * sqrt(3 / (9 I))`;
/// bias `b[o] = 0.01 cos(0.5 o + j)` (+0.5 for the last conv). The last conv's
/// weight is then multiplied by `gain`. Computed in f64, stored as f32.
pub fn formula_decoder(gain: f32, device: &Device) -> Result<HashMap<String, Tensor>> {
    let last = DECODER_CONVS.len() - 1;
    let mut out = HashMap::new();
    for (j, &(key, c_in, c_out, _)) in DECODER_CONVS.iter().enumerate() {
        let n = c_out * c_in * 9;
        let scale = (3.0 / (c_in * 9) as f64).sqrt();
        let mut w: Vec<f32> = (0..n)
            .map(|i| {
                ({
                    let i = i as f64;
                    (0.37 * i + 1e-3 * i * i + 1.1 * j as f64).sin()
                } * scale) as f32
            })
            .collect();
        if j == last {
            w.iter_mut().for_each(|x| *x *= gain);
        }
        let offset = if j == last { 0.5 } else { 0.0 };
        let b: Vec<f32> = (0..c_out)
            .map(|o| (offset + 0.01 * (0.5 * o as f64 + j as f64).cos()) as f32)
            .collect();
        out.insert(
            format!("{key}.weight"),
            Tensor::from_vec(w, (c_out, c_in, 3, 3), device)?,
        );
        out.insert(format!("{key}.bias"), Tensor::from_vec(b, c_out, device)?);
    }
    Ok(out)
}

/// Max |a - b| over all elements.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
}
