//! The decoder: mirror of the encoder from relu4_1 back to RGB, with the
//! reference's `nn.Sequential` keys (`1`, `5`, ... `28`) so a PyTorch
//! `decoder.pth` state dict loads unchanged.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::layers::{upsample2x, PaddedConv};

/// (key, in, out, upsample x2 after this conv), in order.
pub const DECODER_CONVS: [(&str, usize, usize, bool); 9] = [
    ("1", 512, 256, true),
    ("5", 256, 256, false),
    ("8", 256, 256, false),
    ("11", 256, 256, false),
    ("14", 256, 128, true),
    ("18", 128, 128, false),
    ("21", 128, 64, true),
    ("25", 64, 64, false),
    ("28", 64, 3, false),
];

/// The side of an image must be a multiple of this for decode(encode(x)) to keep its size.
pub const STRIDE: usize = 8;

#[derive(Debug, Clone)]
pub struct Decoder {
    convs: Vec<(PaddedConv, bool)>,
}

impl Decoder {
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let last = DECODER_CONVS.len() - 1;
        let convs = DECODER_CONVS
            .iter()
            .enumerate()
            .map(|(n, &(key, i, o, up))| Ok((PaddedConv::new(vb.pp(key), i, o, 3, n != last)?, up)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { convs })
    }

    /// Every tensor the decoder owns: (key, shape).
    pub fn tensor_shapes() -> Vec<(String, Vec<usize>)> {
        DECODER_CONVS
            .iter()
            .flat_map(|&(k, i, o, _)| {
                [
                    (format!("{k}.weight"), vec![o, i, 3, 3]),
                    (format!("{k}.bias"), vec![o]),
                ]
            })
            .collect()
    }

    /// As [`Module::forward`], taking the features: they are freed after the
    /// first layer (at 2048^2 they are 134 MB of the decoder's peak).
    pub fn decode(&self, mut x: Tensor) -> Result<Tensor> {
        for (conv, up) in &self.convs {
            x = conv.forward(&x)?;
            if *up {
                x = upsample2x(&x)?;
            }
        }
        Ok(x)
    }
}

impl Module for Decoder {
    /// relu4_1-shaped features [N,512,h,w] -> image [N,3,8h,8w], not clamped.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.decode(x.clone())
    }
}
