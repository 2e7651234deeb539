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
        let c = &self.convs;
        let x = self.rgb_to_caffe.forward(x)?;
        let r11 = c[0].forward(&x)?;
        let x = max_pool2x2_ceil(&c[1].forward(&r11)?)?;
        let r21 = c[2].forward(&x)?;
        let x = max_pool2x2_ceil(&c[3].forward(&r21)?)?;
        let r31 = c[4].forward(&x)?;
        let x = c[5].forward(&r31)?;
        let x = c[6].forward(&x)?;
        let x = max_pool2x2_ceil(&c[7].forward(&x)?)?;
        let r41 = c[8].forward(&x)?;
        Ok([r11, r21, r31, r41])
    }

    /// relu4_1 only (what stylization needs). Same layers as [`Self::features`],
    /// but each activation is dropped as soon as the next exists, which halves
    /// the peak memory of a large image.
    pub fn relu4_1(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.convs;
        let mut x = self.rgb_to_caffe.forward(x)?;
        for (i, conv) in c.iter().enumerate() {
            x = conv.forward(&x)?;
            if matches!(i, 1 | 3 | 7) {
                x = max_pool2x2_ceil(&x)?;
            }
        }
        Ok(x)
    }
}

impl Module for Encoder {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.relu4_1(x)
    }
}
