//! The frozen VGG-19 encoder up to relu4_1, exactly as the reference port's
//! `nn.Sequential` (keys `0`, `2`, `5`, ... `29`): a 1x1 colour conv, then
//! reflection-padded 3x3 convs with ReLU and 2x2 ceil-mode max-pools.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::layers::{max_pool2x2_ceil, PaddedConv};

/// (key, in, out, kernel) of every conv the encoder uses, in order.
pub const ENCODER_CONVS: [(&str, usize, usize, usize); 10] = [
    ("0", 3, 3, 1),
    ("2", 3, 64, 3),
    ("5", 64, 64, 3),
    ("9", 64, 128, 3),
    ("12", 128, 128, 3),
    ("16", 128, 256, 3),
    ("19", 256, 256, 3),
    ("22", 256, 256, 3),
    ("25", 256, 256, 3),
    ("29", 256, 512, 3),
];

/// Names of the four features used by AdaIN's losses.
pub const FEATURE_NAMES: [&str; 4] = ["relu1_1", "relu2_1", "relu3_1", "relu4_1"];

/// The index in [`ENCODER_CONVS`] of the conv whose (ReLU) output is each
/// feature of [`FEATURE_NAMES`].
pub const FEATURE_CONVS: [usize; 4] = [1, 3, 5, 9];

/// The convs of [`ENCODER_CONVS`] that a 2x2 ceil-mode max-pool follows.
pub const POOL_AFTER: [usize; 3] = [2, 4, 8];

/// VGG-19 to relu4_1. Input: RGB in [0,1], NCHW.
#[derive(Debug, Clone)]
pub struct Encoder {
    /// 1x1 conv: RGB [0,1] -> Caffe BGR minus mean (no ReLU).
    rgb_to_caffe: PaddedConv,
    convs: Vec<PaddedConv>,
}

impl Encoder {
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let mut layers = ENCODER_CONVS
            .iter()
            .map(|&(key, i, o, k)| PaddedConv::new(vb.pp(key), i, o, k, k == 3))
            .collect::<Result<Vec<_>>>()?;
        let rgb_to_caffe = layers.remove(0);
        Ok(Self {
            rgb_to_caffe,
            convs: layers,
        })
    }

    /// relu1_1, relu2_1, relu3_1, relu4_1.
    pub fn features(&self, x: &Tensor) -> Result<[Tensor; 4]> {
        let f = self.features_upto(x, 3)?;
        Ok(f.try_into().expect("four features"))
    }

    /// The features up to and including `FEATURE_NAMES[last]`, and none of
    /// the layers after it: a loss on relu2_1 alone (Johnson's content
    /// target) needs a quarter of the multiplies of the pass to relu4_1.
    pub fn features_upto(&self, x: &Tensor, last: usize) -> Result<Vec<Tensor>> {
        let Some(&end) = FEATURE_CONVS.get(last) else {
            candle_core::bail!(
                "feature {last} asked for; the encoder has {}",
                FEATURE_CONVS.len()
            );
        };
        let mut out = Vec::with_capacity(last + 1);
        let mut x = self.rgb_to_caffe.forward(x)?;
        for i in 1..=end {
            // no pool follows a feature's conv, so the feature is `x` itself
            x = self.layer(i, &x)?;
            if FEATURE_CONVS.contains(&i) {
                out.push(x.clone());
            }
        }
        Ok(out)
    }

    /// Conv `i` of [`ENCODER_CONVS`] (1 and on: 0 is the colour conv) and
    /// the pool after it, if one follows.
    fn layer(&self, i: usize, x: &Tensor) -> Result<Tensor> {
        let y = self.convs[i - 1].forward(x)?;
        if POOL_AFTER.contains(&i) {
            max_pool2x2_ceil(&y)
        } else {
            Ok(y)
        }
    }

    /// relu4_1 only (what stylization needs). Same layers as [`Self::features`],
    /// but each activation is dropped as soon as the next exists, which halves
    /// the peak memory of a large image.
    pub fn relu4_1(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = self.rgb_to_caffe.forward(x)?;
        for i in 1..ENCODER_CONVS.len() {
            x = self.layer(i, &x)?;
        }
        Ok(x)
    }
}

impl Module for Encoder {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.relu4_1(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use std::collections::HashMap;

    #[test]
    fn features_upto_stops_at_the_layer_and_agrees_with_the_whole_pass() -> Result<()> {
        let dev = Device::Cpu;
        let mut w = HashMap::new();
        for (k, &(key, i, o, ks)) in ENCODER_CONVS.iter().enumerate() {
            let scale = (2.0 / (i * ks * ks) as f64).sqrt();
            w.insert(
                format!("{key}.weight"),
                (Tensor::randn(0f32, 1.0, (o, i, ks, ks), &dev)? * scale)?,
            );
            w.insert(
                format!("{key}.bias"),
                Tensor::full(0.01 * k as f32, o, &dev)?,
            );
        }
        let enc = Encoder::new(VarBuilder::from_tensors(w, DType::F32, &dev))?;
        // an odd size: the ceil-mode pools must line up too
        let x = Tensor::rand(0f32, 1.0, (2, 3, 37, 29), &dev)?;
        // the reference port's order, written out: relu1_1, conv, pool,
        // relu2_1, conv, pool, relu3_1, three convs, pool, relu4_1
        let c = &enc.convs;
        let x0 = enc.rgb_to_caffe.forward(&x)?;
        let r11 = c[0].forward(&x0)?;
        let r21 = c[2].forward(&max_pool2x2_ceil(&c[1].forward(&r11)?)?)?;
        let r31 = c[4].forward(&max_pool2x2_ceil(&c[3].forward(&r21)?)?)?;
        let y = c[6].forward(&c[5].forward(&r31)?)?;
        let r41 = c[8].forward(&max_pool2x2_ceil(&c[7].forward(&y)?)?)?;
        let all = [r11, r21, r31, r41];
        assert_eq!(
            (&enc.relu4_1(&x)? - &all[3])?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?,
            0.0
        );
        for (a, b) in enc.features(&x)?.iter().zip(&all) {
            assert_eq!((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?, 0.0);
        }
        for last in 0..4 {
            let part = enc.features_upto(&x, last)?;
            assert_eq!(part.len(), last + 1);
            for (a, b) in part.iter().zip(&all) {
                assert_eq!(a.dims(), b.dims());
                let d = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert_eq!(d, 0.0, "feature {last}");
            }
        }
        assert!(enc.features_upto(&x, 4).is_err());
        Ok(())
    }
}
