//! The random motion of the compound temporal regulariser (`--temporal-weight`,
//! [`adain::loss::compound_temporal`]; Wang et al. 2020): per image a small
//! affine motion (rotation, zoom, shift) plus a low-frequency wobble, as a
//! camera and the things in front of it move between two video frames, applied
//! by bilinear sampling that gradients pass through, and the pixel noise added
//! to the moved content. Everything is drawn from the run's seed and the batch
//! index, so a resumed run sees the same motions.
//!
//! Written here rather than taken from a crate: candle has no `grid_sample`,
//! and the warp must stay on candle's graph (the regulariser differentiates
//! the moved output); it is four `gather`s and a weighted sum.

use anyhow::Result;
use candle_core::{Device, Tensor};
use rand::RngCore;

use crate::data::DetRng;

/// The largest motion drawn, in pixels of the crop (and radians, and a zoom
/// factor): about what a frame-to-frame step of a hand-held clip does.
pub const MAX_SHIFT: f32 = 2.0;
pub const MAX_ROTATION: f32 = 1.5 * std::f32::consts::PI / 180.0;
pub const MAX_ZOOM: f32 = 0.02;
pub const MAX_WOBBLE: f32 = 1.0;
/// Standard deviation of the noise on the moved content ([0,1] pixels, about 5/255).
pub const NOISE_STD: f32 = 0.02;

/// A bilinear warp of `[B,C,H,W]` pictures: output pixel p takes the input at
/// the source point of p.
pub struct Warp {
    /// Flat source index (y*W + x) of each of the four taps, `[B,1,H*W]` u32.
    idx: [Tensor; 4],
    /// Weight of each tap, `[B,1,H*W]`.
    wts: [Tensor; 4],
    /// 1 where the source point lies inside the picture, `[B,1,H,W]`.
    pub valid: Tensor,
}

fn uniform(rng: &mut DetRng) -> f32 {
    (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32
}

/// Uniform in [-1, 1).
fn signed(rng: &mut DetRng) -> f32 {
    uniform(rng) * 2.0 - 1.0
}

impl Warp {
    /// A random smooth motion per image of a `b` x `h` x `w` batch.
    pub fn random(b: usize, h: usize, w: usize, rng: &mut DetRng, device: &Device) -> Result<Self> {
        let (cx, cy) = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
        let tau = 2.0 * std::f32::consts::PI;
        let mut src = Vec::with_capacity(b * h * w);
        for _ in 0..b {
            let theta = signed(rng) * MAX_ROTATION;
            let zoom = 1.0 + signed(rng) * MAX_ZOOM;
            let (tx, ty) = (signed(rng) * MAX_SHIFT, signed(rng) * MAX_SHIFT);
            // One wave per axis: amplitude, cycles across the picture, phase.
            let mut wave = || {
                (
                    uniform(rng) * MAX_WOBBLE,
                    0.5 + uniform(rng) * 1.5,
                    0.5 + uniform(rng) * 1.5,
                    uniform(rng) * tau,
                )
            };
            let (wx, wy) = (wave(), wave());
            let (sin, cos) = theta.sin_cos();
            for y in 0..h {
                for x in 0..w {
                    let (dx, dy) = (x as f32 - cx, y as f32 - cy);
                    let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
                    let sx = cx
                        + zoom * (cos * dx - sin * dy)
                        + tx
                        + wx.0 * (tau * (wx.1 * u + wx.2 * v) + wx.3).sin();
                    let sy = cy
                        + zoom * (sin * dx + cos * dy)
                        + ty
                        + wy.0 * (tau * (wy.1 * u + wy.2 * v) + wy.3).sin();
                    src.push((sx, sy));
                }
            }
        }
        Self::from_sources(b, h, w, &src, device)
    }

    /// From the source point `(x, y)` of every output pixel, image by image,
    /// row by row (`b*h*w` of them).
    pub fn from_sources(
        b: usize,
        h: usize,
        w: usize,
        src: &[(f32, f32)],
        device: &Device,
    ) -> Result<Self> {
        anyhow::ensure!(
            src.len() == b * h * w,
            "warp: {} source points for {b}x{h}x{w}",
            src.len()
        );
        let n = src.len();
        let mut idx = [(); 4].map(|_| Vec::with_capacity(n));
        let mut wts = [(); 4].map(|_| Vec::with_capacity(n));
        let mut valid = Vec::with_capacity(n);
        let (wm, hm) = (w as f32 - 1.0, h as f32 - 1.0);
        for &(sx, sy) in src {
            valid.push(if (0.0..=wm).contains(&sx) && (0.0..=hm).contains(&sy) {
                1f32
            } else {
                0.0
            });
            let (sx, sy) = (sx.clamp(0.0, wm), sy.clamp(0.0, hm));
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as usize, y0 as usize);
            let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
            let taps = [
                (y0 * w + x0, (1.0 - fx) * (1.0 - fy)),
                (y0 * w + x1, fx * (1.0 - fy)),
                (y1 * w + x0, (1.0 - fx) * fy),
                (y1 * w + x1, fx * fy),
            ];
            for (k, (i, wt)) in taps.into_iter().enumerate() {
                idx[k].push(i as u32);
                wts[k].push(wt);
            }
        }
        let t = |v: Vec<u32>| Tensor::from_vec(v, (b, 1, h * w), device);
        let f = |v: Vec<f32>| Tensor::from_vec(v, (b, 1, h * w), device);
        let [i0, i1, i2, i3] = idx;
        let [w0, w1, w2, w3] = wts;
        Ok(Self {
            idx: [t(i0)?, t(i1)?, t(i2)?, t(i3)?],
            wts: [f(w0)?, f(w1)?, f(w2)?, f(w3)?],
            valid: Tensor::from_vec(valid, (b, 1, h, w), device)?,
        })
    }

    /// The warped pictures, `[B,C,H,W]` (gradients flow to `x`).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let flat = x.reshape((b, c, h * w))?;
        let mut acc: Option<Tensor> = None;
        for (idx, wt) in self.idx.iter().zip(&self.wts) {
            let idx = idx.broadcast_as((b, c, h * w))?.contiguous()?;
            let tap = flat.gather(&idx, 2)?.broadcast_mul(wt)?;
            acc = Some(match acc {
                None => tap,
                Some(a) => (a + tap)?,
            });
        }
        Ok(acc.expect("four taps").reshape((b, c, h, w))?)
    }
}

/// Gaussian noise of standard deviation `std` (Box-Muller on the run's stream).
pub fn noise(
    shape: (usize, usize, usize, usize),
    std: f32,
    rng: &mut DetRng,
    device: &Device,
) -> Result<Tensor> {
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let mut v = Vec::with_capacity(n + 1);
    while v.len() < n {
        let u1 = uniform(rng).max(f32::MIN_POSITIVE);
        let u2 = uniform(rng);
        let r = (-2.0 * u1.ln()).sqrt() * std;
        let a = 2.0 * std::f32::consts::PI * u2;
        v.push(r * a.cos());
        v.push(r * a.sin());
    }
    v.truncate(n);
    Ok(Tensor::from_vec(v, shape, device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picture(b: usize, c: usize, h: usize, w: usize) -> Tensor {
        let v: Vec<f32> = (0..b * c * h * w)
            .map(|i| ((i * 37) % 101) as f32 / 100.0)
            .collect();
        Tensor::from_vec(v, (b, c, h, w), &Device::Cpu).unwrap()
    }

    #[test]
    fn the_identity_warp_changes_nothing_and_a_shift_moves_by_whole_pixels() {
        let (b, c, h, w) = (2, 3, 6, 7);
        let x = picture(b, c, h, w);
        let same: Vec<_> = (0..b * h * w)
            .map(|i| (((i % (h * w)) % w) as f32, ((i % (h * w)) / w) as f32))
            .collect();
        let id = Warp::from_sources(b, h, w, &same, &Device::Cpu).unwrap();
        let diff = (id.apply(&x).unwrap() - &x)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
        assert_eq!(
            id.valid.sum_all().unwrap().to_scalar::<f32>().unwrap(),
            (b * h * w) as f32
        );
        // Each output pixel takes the input one column to its right.
        let shifted: Vec<_> = same.iter().map(|&(x, y)| (x + 1.0, y)).collect();
        let s = Warp::from_sources(b, h, w, &shifted, &Device::Cpu).unwrap();
        let got = s.apply(&x).unwrap().narrow(3, 0, w - 1).unwrap();
        let want = x.narrow(3, 1, w - 1).unwrap();
        let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-6);
        // The last column samples outside the picture.
        assert_eq!(
            s.valid.sum_all().unwrap().to_scalar::<f32>().unwrap(),
            (b * h * (w - 1)) as f32
        );
    }

    #[test]
    fn half_a_pixel_averages_neighbours_and_gradients_pass_through() {
        let (h, w) = (4, 5);
        let x = candle_core::Var::from_tensor(&picture(1, 1, h, w)).unwrap();
        let src: Vec<_> = (0..h * w)
            .map(|i| ((i % w) as f32 + 0.5, (i / w) as f32))
            .collect();
        let warp = Warp::from_sources(1, h, w, &src, &Device::Cpu).unwrap();
        let y = warp.apply(x.as_tensor()).unwrap();
        let xv = x
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let yv = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!((yv[0] - (xv[0] + xv[1]) / 2.0).abs() < 1e-6);
        // d(sum y)/dx: each interior input pixel feeds two half-weight taps.
        let g = y.sum_all().unwrap().backward().unwrap();
        let gx = g
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!((gx[1] - 1.0).abs() < 1e-6, "{gx:?}");
        assert!((gx[0] - 0.5).abs() < 1e-6, "{gx:?}");
    }

    #[test]
    fn random_motions_are_small_and_reproducible() {
        let draw = |seed| {
            let mut rng = DetRng::from_parts(&[seed, 7]);
            Warp::random(2, 32, 32, &mut rng, &Device::Cpu).unwrap()
        };
        let x = picture(2, 3, 32, 32);
        let (a, b, c) = (draw(1), draw(1), draw(2));
        let ya = a.apply(&x).unwrap();
        let same = (&ya - b.apply(&x).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert_eq!(same.to_scalar::<f32>().unwrap(), 0.0);
        let other = (&ya - c.apply(&x).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(other.to_scalar::<f32>().unwrap() > 0.0);
        // Most pixels keep a source inside the picture (the motion is a few pixels).
        let inside = a.valid.mean_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(inside > 0.7, "{inside}");
        let mut rng = DetRng::from_parts(&[3]);
        let n = noise((1, 3, 64, 64), NOISE_STD, &mut rng, &Device::Cpu).unwrap();
        let sd = n
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt();
        assert!((sd - NOISE_STD).abs() < 0.1 * NOISE_STD, "{sd}");
    }
}
