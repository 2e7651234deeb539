//! Blending the warped previous output into the current stylization without
//! washing the texture out: what `--temporal flow` does where the flow is
//! trusted.
//!
//! A plain blend `S + a (W - S)` of two textures that do not line up stroke
//! for stroke averages them into blur: at a = 0.5 two unrelated textures lose
//! about 30% of their contrast, and the style metrics (VGG feature standard
//! deviations) count it (README "Video": +40% style_musigma on the clip at strength 0.4).
//! So the blend is split into its local mean and its detail, and the detail
//! is scaled back up to the local detail energy of this frame's own
//! stylization `S` (the variance-preserving blending of Heitz & Neyret 2018,
//! measured locally instead of assumed): where the two textures agree (a
//! steady scene), the blend kept its contrast and nothing changes; where they
//! do not, the contrast returns, at most by `1 / sqrt(a^2 + (1 - a)^2)`, the
//! factor that restores two independent textures. Where `a` is 0 the output
//! is `S` exactly.

use rayon::prelude::*;

use super::flow::FrameF;

/// `--flow-blend`: how the warped previous output enters the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Blend {
    /// The blend's detail scaled back to the frame's own contrast ([`keep_contrast`]).
    KeepContrast,
    /// `S + a (W - S)`: steadier, and blurrier where the textures do not line up.
    Plain,
}

/// The scale (Gaussian sigma, pixels) that separates a texture's strokes from
/// its local mean colour.
pub const DETAIL_SIGMA: f32 = 3.0;

/// Keeps the gain finite on flat areas (energies are in [0, 1]^2 units).
const EPS: f32 = 1e-6;

/// `styled + alpha (warped - styled)` per pixel, its detail rescaled to the
/// local detail energy of `styled` (see the module documentation). `alpha`
/// has one value a pixel, in [0, 1].
pub fn keep_contrast(styled: &FrameF, warped: &FrameF, alpha: &[f32]) -> FrameF {
    let (w, h) = (styled.width, styled.height);
    let lin = linear(styled, warped, alpha);
    let mu = gaussian(&lin, w, h, 3, DETAIL_SIGMA);
    let mu_s = gaussian(&styled.data, w, h, 3, DETAIL_SIGMA);
    // detail energy per pixel (mean over the channels), then its local mean
    let energy = |x: &[f32], m: &[f32]| -> Vec<f32> {
        x.par_chunks(3)
            .zip(m.par_chunks(3))
            .map(|(x, m)| (0..3).map(|c| (x[c] - m[c]).powi(2)).sum::<f32>() / 3.0)
            .collect()
    };
    let e_s = gaussian(&energy(&styled.data, &mu_s), w, h, 1, DETAIL_SIGMA);
    let e_b = gaussian(&energy(&lin, &mu), w, h, 1, DETAIL_SIGMA);
    let data = lin
        .par_chunks(3)
        .zip(mu.par_chunks(3))
        .enumerate()
        .flat_map_iter(|(i, (l, m))| {
            let a = alpha[i];
            let most = 1.0 / (a * a + (1.0 - a) * (1.0 - a)).sqrt();
            let g = ((e_s[i] + EPS) / (e_b[i] + EPS)).sqrt().clamp(1.0, most);
            (0..3).map(move |c| m[c] + g * (l[c] - m[c]))
        })
        .collect();
    FrameF {
        width: w,
        height: h,
        data,
    }
}

/// `styled + alpha (warped - styled)` per pixel.
pub fn plain(styled: &FrameF, warped: &FrameF, alpha: &[f32]) -> FrameF {
    FrameF {
        width: styled.width,
        height: styled.height,
        data: linear(styled, warped, alpha),
    }
}

fn linear(styled: &FrameF, warped: &FrameF, alpha: &[f32]) -> Vec<f32> {
    assert_eq!(
        alpha.len(),
        styled.width * styled.height,
        "one alpha a pixel"
    );
    assert_eq!(warped.data.len(), styled.data.len(), "frames of one size");
    styled
        .data
        .par_chunks(3)
        .zip(warped.data.par_chunks(3))
        .zip(alpha.par_iter())
        .flat_map_iter(|((s, p), &a)| (0..3).map(move |c| s[c] + a * (p[c] - s[c])))
        .collect()
}

/// The radius and normalised taps of [`gaussian`]'s kernel: cut at 3 sigma.
fn gaussian_taps(sigma: f32) -> (isize, Vec<f32>) {
    let r = (3.0 * sigma).ceil() as isize;
    let k: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = k.iter().sum();
    (r, k.iter().map(|v| v / sum).collect())
}

/// A separable Gaussian blur of an interleaved `w x h x ch` image, the
/// borders replicated (the kernel is cut at 3 sigma and renormalised).
pub fn gaussian(x: &[f32], w: usize, h: usize, ch: usize, sigma: f32) -> Vec<f32> {
    let (r, k) = gaussian_taps(sigma);
    let row = w * ch;
    // horizontal: the interior pixels (every tap inside the row) one tap at a
    // time over the whole run, a loop the compiler vectorizes (the per-tap
    // clamp of the edge pixels kept it scalar: ~50 ms of a 640x360 flow-mode
    // frame); the sums run in the same order, so the result is the same.
    let mut tmp = vec![0f32; x.len()];
    let ru = r as usize;
    let interior = if w > 2 * ru { ru..w - ru } else { 0..0 };
    tmp.par_chunks_mut(row)
        .zip(x.par_chunks(row))
        .for_each(|(dst, src)| {
            if !interior.is_empty() {
                let (lo, hi) = (interior.start * ch, interior.end * ch);
                for (j, &kv) in k.iter().enumerate() {
                    let from = lo + j * ch - ru * ch;
                    for (d, &v) in dst[lo..hi].iter_mut().zip(&src[from..from + (hi - lo)]) {
                        *d += kv * v;
                    }
                }
            }
            for px in (0..w).filter(|px| !interior.contains(px)) {
                for c in 0..ch {
                    let mut s = 0f32;
                    for (j, &kv) in k.iter().enumerate() {
                        let xx = (px as isize + j as isize - r).clamp(0, w as isize - 1) as usize;
                        s += kv * src[xx * ch + c];
                    }
                    dst[px * ch + c] = s;
                }
            }
        });
    // vertical
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(row).enumerate().for_each(|(y, dst)| {
        for (j, &kv) in k.iter().enumerate() {
            let yy = (y as isize + j as isize - r).clamp(0, h as isize - 1) as usize;
            for (d, &v) in dst.iter_mut().zip(&tmp[yy * row..][..row]) {
                *d += kv * v;
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reproducible texture: a hash of (x, y, seed) per channel, in [0, 1].
    fn texture(w: usize, h: usize, seed: u32) -> FrameF {
        let data = (0..w * h * 3)
            .map(|i| {
                let mut v = (i as u32).wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(97_531);
                v ^= v >> 15;
                v = v.wrapping_mul(2_246_822_519);
                v ^= v >> 13;
                (v % 1000) as f32 / 999.0
            })
            .collect();
        FrameF {
            width: w,
            height: h,
            data,
        }
    }

    /// Mean squared deviation of a frame from its local mean: its detail energy.
    fn detail(f: &FrameF) -> f32 {
        let m = gaussian(&f.data, f.width, f.height, 3, DETAIL_SIGMA);
        f.data
            .iter()
            .zip(&m)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f32>()
            / f.data.len() as f32
    }

    #[test]
    fn gaussian_equals_the_clamped_definition_bit_for_bit() {
        // Wide rows (an interior run) and narrow ones (edges only: w <= 2r).
        for (w, h, ch) in [(40, 9, 3), (33, 5, 1), (7, 6, 3), (19, 4, 1)] {
            let x = texture(w, h, 7).data[..w * h * ch].to_vec();
            let sigma = 3.0f32;
            let (r, k) = gaussian_taps(sigma);
            let at = |v: &[f32], xx: isize, yy: isize, c: usize| {
                let (xx, yy) = (xx.clamp(0, w as isize - 1), yy.clamp(0, h as isize - 1));
                v[(yy as usize * w + xx as usize) * ch + c]
            };
            let mut tmp = vec![0f32; x.len()];
            for y in 0..h as isize {
                for px in 0..w as isize {
                    for c in 0..ch {
                        let mut s = 0f32;
                        for (j, &kv) in k.iter().enumerate() {
                            s += kv * at(&x, px + j as isize - r, y, c);
                        }
                        tmp[(y as usize * w + px as usize) * ch + c] = s;
                    }
                }
            }
            let mut want = vec![0f32; x.len()];
            for y in 0..h as isize {
                for (j, &kv) in k.iter().enumerate() {
                    for px in 0..w as isize {
                        for c in 0..ch {
                            want[(y as usize * w + px as usize) * ch + c] +=
                                kv * at(&tmp, px, y + j as isize - r, c);
                        }
                    }
                }
            }
            let got = gaussian(&x, w, h, ch, sigma);
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{w}x{h}x{ch}"
            );
        }
    }

    #[test]
    fn gaussian_keeps_constants_and_the_mean() {
        let (w, h) = (17, 9);
        let flat = vec![0.25f32; w * h * 3];
        for v in gaussian(&flat, w, h, 3, 2.0) {
            assert!((v - 0.25).abs() < 1e-6);
        }
        // a centred impulse spreads but keeps its mass and its symmetry
        let mut imp = vec![0f32; w * h];
        imp[4 * w + 8] = 1.0;
        let b = gaussian(&imp, w, h, 1, 1.0);
        assert!((b.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!((b[4 * w + 7] - b[4 * w + 9]).abs() < 1e-7);
        assert!(b[4 * w + 8] < 0.5 && b[4 * w + 8] > b[4 * w + 7]);
    }

    #[test]
    fn two_unrelated_textures_keep_their_contrast_where_a_plain_blend_loses_it() {
        let (w, h) = (64, 48);
        let (s, p) = (texture(w, h, 1), texture(w, h, 2));
        let alpha = vec![0.5f32; w * h];
        let plain = FrameF {
            width: w,
            height: h,
            data: s
                .data
                .iter()
                .zip(&p.data)
                .map(|(a, b)| a + 0.5 * (b - a))
                .collect(),
        };
        let kept = keep_contrast(&s, &p, &alpha);
        let (ds, dp, dk) = (detail(&s), detail(&plain), detail(&kept));
        // the plain blend halves the energy of independent textures ...
        assert!(dp < 0.6 * ds, "plain {dp} vs {ds}");
        // ... the kept one is back within a few percent of the frame's own
        assert!((dk / ds - 1.0).abs() < 0.05, "kept {dk} vs {ds}");
        // and it is still the blend: it is as close to either texture as the plain one
        let dist = |a: &FrameF, b: &FrameF| {
            a.data
                .iter()
                .zip(&b.data)
                .map(|(x, y)| (x - y).powi(2))
                .sum::<f32>()
        };
        assert!((dist(&kept, &s) - dist(&kept, &p)).abs() < 0.05 * dist(&kept, &s));
    }

    #[test]
    fn agreeing_textures_and_untrusted_pixels_pass_through() {
        let (w, h) = (40, 30);
        let s = texture(w, h, 3);
        // the previous output says the same: no gain, the same picture
        let same = keep_contrast(&s, &s, &vec![0.7; w * h]);
        for (a, b) in same.data.iter().zip(&s.data) {
            assert!((a - b).abs() < 1e-5);
        }
        // alpha 0 (not trusted) is this frame's stylization, whatever was warped
        let other = texture(w, h, 4);
        let mut alpha = vec![0.0f32; w * h];
        alpha[..w * 10].fill(0.6); // the top third blends
        let out = keep_contrast(&s, &other, &alpha);
        for i in w * 10 * 3..w * h * 3 {
            assert!((out.data[i] - s.data[i]).abs() < 1e-5, "pixel {}", i / 3);
        }
        assert!(out.data[..w * 10 * 3]
            .iter()
            .zip(&s.data)
            .any(|(a, b)| (a - b).abs() > 0.05));
    }
}
