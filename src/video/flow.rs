//! Dense optical flow between frames, warping along it, and where a warp
//! can be trusted.
//!
//! The estimators come from OpenCV (the `opencv` crate over Debian's
//! libopencv-dev): DIS for `--temporal flow` (fast: ~13 ms a 640x360 pair)
//! and Farneback for the warping error of `adain eval-video`, so the flow mode
//! is never graded with its own estimator. Warping and the consistency test
//! are a few lines over plain buffers, written here.

use anyhow::Result;
use image::RgbImage;

/// A flow field: at pixel x of the first frame, the displacement `d` with
/// `first(x) ~ second(x + d)`.
#[derive(Debug, Clone)]
pub struct FlowField {
    pub width: usize,
    pub height: usize,
    pub d: Vec<[f32; 2]>,
}

impl FlowField {
    /// The displacement at a real-valued position (bilinear, clamped).
    fn sample(&self, x: f32, y: f32) -> [f32; 2] {
        let (w, h) = (self.width, self.height);
        let x = x.clamp(0.0, (w - 1) as f32);
        let y = y.clamp(0.0, (h - 1) as f32);
        let (x0, y0) = (x.floor() as usize, y.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
        let (fx, fy) = (x - x0 as f32, y - y0 as f32);
        let at = |xx: usize, yy: usize| self.d[yy * w + xx];
        let mut out = [0.0; 2];
        for (k, o) in out.iter_mut().enumerate() {
            let top = at(x0, y0)[k] * (1.0 - fx) + at(x1, y0)[k] * fx;
            let bot = at(x0, y1)[k] * (1.0 - fx) + at(x1, y1)[k] * fx;
            *o = top * (1.0 - fy) + bot * fy;
        }
        out
    }
}

/// A frame as f32 RGB in [0, 1], row-major, 3 values a pixel.
#[derive(Debug, Clone)]
pub struct FrameF {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl FrameF {
    pub fn of(img: &RgbImage) -> Self {
        Self {
            width: img.width() as usize,
            height: img.height() as usize,
            data: img.as_raw().iter().map(|&v| v as f32 / 255.0).collect(),
        }
    }

    pub fn to_rgb8(&self) -> RgbImage {
        let data = self
            .data
            .iter()
            .map(|&v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
            .collect();
        RgbImage::from_raw(self.width as u32, self.height as u32, data).expect("size matches")
    }
}

/// `img` warped into the first frame of `flow`: out(x) = img(x + flow(x)),
/// bilinear; 0 where x + flow(x) leaves the picture (the consistency test
/// already distrusts those positions).
pub fn warp(img: &FrameF, flow: &FlowField) -> FrameF {
    let (w, h) = (flow.width, flow.height);
    let mut out = vec![0f32; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let [dx, dy] = flow.d[i];
            let (sx, sy) = (x as f32 + dx, y as f32 + dy);
            if sx < -0.5 || sy < -0.5 || sx > w as f32 - 0.5 || sy > h as f32 - 0.5 {
                continue;
            }
            let sx = sx.clamp(0.0, (w - 1) as f32);
            let sy = sy.clamp(0.0, (h - 1) as f32);
            let (x0, y0) = (sx.floor() as usize, sy.floor() as usize);
            let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
            let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
            for c in 0..3 {
                let p = |xx: usize, yy: usize| img.data[(yy * w + xx) * 3 + c];
                let top = p(x0, y0) * (1.0 - fx) + p(x1, y0) * fx;
                let bot = p(x0, y1) * (1.0 - fx) + p(x1, y1) * fx;
                out[i * 3 + c] = top * (1.0 - fy) + bot * fy;
            }
        }
    }
    FrameF {
        width: w,
        height: h,
        data: out,
    }
}

/// The constant of the motion-boundary test: Ruder et al.'s 0.002 assumed
/// DeepFlow's smooth fields; DIS and Farneback fields are noisier, and 0.002
/// flagged flat textured areas as boundaries.
const MOTION_BOUNDARY_EPS: f32 = 0.1;

/// Where the backward flow `bwd` (frame t to t-1) can be trusted, given the
/// forward flow `fwd` (t-1 to t): 1 where following `bwd` and then `fwd`
/// comes back (|b + f|^2 <= 0.01 (|b|^2 + |f|^2) + 0.5, Sundaram et al. 2010,
/// as Ruder et al. 2016), the target is inside the frame and x is not on a
/// motion boundary; else 0 (occluded or unreliable).
pub fn consistency(bwd: &FlowField, fwd: &FlowField) -> Vec<f32> {
    let (w, h) = (bwd.width, bwd.height);
    let mut m = vec![0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let b = bwd.d[i];
            let (tx, ty) = (x as f32 + b[0], y as f32 + b[1]);
            if tx < 0.0 || ty < 0.0 || tx > (w - 1) as f32 || ty > (h - 1) as f32 {
                continue;
            }
            let f = fwd.sample(tx, ty);
            let sum = (b[0] + f[0]).powi(2) + (b[1] + f[1]).powi(2);
            let mag = b[0] * b[0] + b[1] * b[1] + f[0] * f[0] + f[1] * f[1];
            if sum > 0.01 * mag + 0.5 {
                continue;
            }
            // motion boundary: a large gradient of the flow
            let xr = (x + 1).min(w - 1);
            let yd = (y + 1).min(h - 1);
            let (gx, gy) = (bwd.d[y * w + xr], bwd.d[yd * w + x]);
            let grad = (gx[0] - b[0]).powi(2)
                + (gx[1] - b[1]).powi(2)
                + (gy[0] - b[0]).powi(2)
                + (gy[1] - b[1]).powi(2);
            if grad > 0.01 * (b[0] * b[0] + b[1] * b[1]) + MOTION_BOUNDARY_EPS {
                continue;
            }
            m[i] = 1.0;
        }
    }
    m
}

/// A box blur of a mask (radius `r`), so blends fade in over a few pixels.
pub fn soften(m: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    let pass = |src: &[f32], horizontal: bool| -> Vec<f32> {
        let mut out = vec![0f32; w * h];
        for y in 0..h {
            for x in 0..w {
                let (mut s, mut n) = (0f32, 0f32);
                for k in -(r as isize)..=(r as isize) {
                    let (xx, yy) = if horizontal {
                        (x as isize + k, y as isize)
                    } else {
                        (x as isize, y as isize + k)
                    };
                    if xx >= 0 && yy >= 0 && (xx as usize) < w && (yy as usize) < h {
                        s += src[yy as usize * w + xx as usize];
                        n += 1.0;
                    }
                }
                out[y * w + x] = s / n;
            }
        }
        out
    };
    // an occluded pixel stays occluded: the blur only narrows trust
    let b = pass(&pass(m, true), false);
    b.iter().zip(m).map(|(&b, &m)| b.min(m)).collect()
}

/// Rec. 601 luma as bytes, what the flow estimators read.
#[cfg_attr(not(feature = "flow"), allow(dead_code))]
fn gray(img: &RgbImage) -> Vec<u8> {
    img.pixels()
        .map(|p| (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32).round() as u8)
        .collect()
}

#[cfg(feature = "flow")]
mod cv {
    use super::*;
    use anyhow::Context;
    use opencv::core::{Mat, Vec2f};
    use opencv::prelude::*;
    use opencv::video;

    /// A grey frame as an owned Mat (one copy: a few hundred KB a frame).
    fn mat(img: &RgbImage) -> Result<Mat> {
        let buf = gray(img);
        let m = Mat::new_rows_cols_with_data(img.height() as i32, img.width() as i32, &buf)?;
        Ok(m.try_clone()?)
    }

    fn field(m: &Mat, width: usize, height: usize) -> Result<FlowField> {
        let d: Vec<[f32; 2]> = m
            .data_typed::<Vec2f>()?
            .iter()
            .map(|v| [v[0], v[1]])
            .collect();
        Ok(FlowField { width, height, d })
    }

    /// OpenCV's DIS (Kroeger et al. 2016), preset medium.
    pub struct Dis(opencv::core::Ptr<video::DISOpticalFlow>);

    impl Dis {
        pub fn new() -> Result<Self> {
            Ok(Self(
                video::DISOpticalFlow::create(video::DISOpticalFlow_PRESET_MEDIUM)
                    .context("OpenCV: DIS optical flow")?,
            ))
        }

        pub fn flow(&mut self, from: &RgbImage, to: &RgbImage) -> Result<FlowField> {
            let (a, b) = (mat(from)?, mat(to)?);
            let mut f = Mat::default();
            self.0.calc(&a, &b, &mut f).context("OpenCV: DIS flow")?;
            field(&f, from.width() as usize, from.height() as usize)
        }
    }

    /// OpenCV's Farneback (2003): the evaluation's independent estimator.
    pub fn farneback(from: &RgbImage, to: &RgbImage) -> Result<FlowField> {
        let (a, b) = (mat(from)?, mat(to)?);
        let mut f = Mat::default();
        video::calc_optical_flow_farneback(&a, &b, &mut f, 0.5, 4, 15, 3, 5, 1.2, 0)
            .context("OpenCV: Farneback flow")?;
        field(&f, from.width() as usize, from.height() as usize)
    }

    /// OpenCV's own thread pool follows `--threads`.
    pub fn set_threads(n: usize) {
        if n > 0 {
            let _ = opencv::core::set_num_threads(n as i32);
        }
    }
}

#[cfg(feature = "flow")]
pub use cv::{farneback, set_threads, Dis};

#[cfg(not(feature = "flow"))]
mod none {
    use super::*;
    const WHY: &str = "optical flow needs OpenCV: this adain was built without the `flow` feature (rebuild with default features and libopencv-dev installed)";
    pub struct Dis;
    impl Dis {
        pub fn new() -> Result<Self> {
            anyhow::bail!(WHY)
        }
        pub fn flow(&mut self, _: &RgbImage, _: &RgbImage) -> Result<FlowField> {
            anyhow::bail!(WHY)
        }
    }
    pub fn farneback(_: &RgbImage, _: &RgbImage) -> Result<FlowField> {
        anyhow::bail!(WHY)
    }
    pub fn set_threads(_: usize) {}
}

#[cfg(not(feature = "flow"))]
pub use none::{farneback, set_threads, Dis};
