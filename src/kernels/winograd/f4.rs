//! The tile transforms of Winograd F(4x4, 3x3) (Lavin & Gray 2015, points
//! 0, 1, -1, 2, -2 and infinity): each 4x4 block of outputs comes from a 6x6
//! block of the padded input, 36 multiplies per input channel where F2 takes
//! 64 for the same 16 outputs. Used for the forward pass where no gradient
//! flows (stylization; see `crate::conv`'s `set_f4_forward`); the training
//! path stays F(2x2, 3x3).
//!
//! Written out by hand, one transform per function, as loops over the tiles
//! of a tile row (the tile index in the vector lanes): a first attempt
//! generic over F2 and F4 on fixed-size lane arrays spilled them to the
//! stack and was no faster than F2 (notes item 15).
//!
//! Accuracy: the transforms multiply by up to 8 and the weight transform
//! divides by 6 and 24, so F4 rounds more than F2: about 1e-6 of the largest
//! output against F2's 1e-7 (see the tests in `crate::conv`).

use super::Geo;

/// `U[xi][o][c]` (36 positions) `= (G w[o][c] G^T)[xi]` for w [O,C,3,3].
/// Computed in f64 and rounded once, on all threads (on one it took 4% of a
/// stylization).
pub(super) fn transform_weights(wt: &[f32], o: usize, c: usize) -> Vec<f32> {
    use rayon::prelude::*;
    const SIXTH: f64 = 1.0 / 6.0;
    const TWELFTH: f64 = 1.0 / 12.0;
    const TWENTYFOURTH: f64 = 1.0 / 24.0;
    // G g for one column g of three taps.
    #[inline(always)]
    fn gcol(g0: f64, g1: f64, g2: f64) -> [f64; 6] {
        let (s, d) = ((g0 + g2) * SIXTH, g1 * SIXTH);
        let (p, q) = (g0 * TWENTYFOURTH + g2 * SIXTH, g1 * TWELFTH);
        [0.25 * g0, -(s + d), d - s, p + q, p - q, g2]
    }
    let mut u = vec![0f32; 36 * o * c];
    let dst = super::SendPtr(u.as_mut_ptr());
    (0..o).into_par_iter().for_each(|oi| {
        // This output channel's 36 rows of `c` values, then written out.
        let mut local = vec![0f32; 36 * c];
        for ci in 0..c {
            let k: [f64; 9] = std::array::from_fn(|t| f64::from(wt[(oi * c + ci) * 9 + t]));
            // t = G g (6x3, by columns), then u = t G^T (6x6).
            let t0 = gcol(k[0], k[3], k[6]);
            let t1 = gcol(k[1], k[4], k[7]);
            let t2 = gcol(k[2], k[5], k[8]);
            for y in 0..6 {
                let row = gcol(t0[y], t1[y], t2[y]);
                for x in 0..6 {
                    local[(y * 6 + x) * c + ci] = row[x] as f32;
                }
            }
        }
        for (xi, vals) in local.chunks_exact(c).enumerate() {
            // SAFETY: in bounds of `u`; each (position, oi) row is written by
            // the task of its `oi` only.
            unsafe { dst.copy_from((xi * o + oi) * c, vals) };
        }
    });
    u
}

/// V[xi][c][t] (36 positions) for tile rows `i0..i1` of one image x
/// [C,H,W]; `t` counts tiles row-major within the chunk.
#[inline(always)]
pub(super) fn transform_input_body(
    x: &[f32],
    c: usize,
    g: &Geo,
    (i0, i1): (usize, usize),
    v: &mut [f32],
) {
    let (h, w, tw) = (g.h, g.w, g.tw);
    let tc = (i1 - i0) * tw;
    // Padded columns 0..4*tw+2, rounded up to whole groups of four.
    let wpad = 4 * (tw + 1);
    let off = g.pad.size();
    let reflect = g.pad == crate::kernels::pad::Pad::Reflect1;
    let zeros = vec![0f32; w];
    let mut t = vec![0f32; 6 * wpad];
    let mut ph = vec![0f32; wpad];
    for ci in 0..c {
        let plane = &x[ci * h * w..][..h * w];
        for i in i0..i1 {
            // The six padded rows of this tile row, read in place.
            let d: [&[f32]; 6] = super::padded_rows(plane, &zeros, g, 4 * i);
            // t = B^T d down the columns: the image's columns in one straight
            // loop, then the few border columns.
            {
                let (t0, rest) = t.split_at_mut(wpad);
                let (t1, rest) = rest.split_at_mut(wpad);
                let (t2, rest) = rest.split_at_mut(wpad);
                let (t3, rest) = rest.split_at_mut(wpad);
                let (t4, t5) = rest.split_at_mut(wpad);
                let (a0, a1, a2) = (
                    &mut t0[off..off + w],
                    &mut t1[off..off + w],
                    &mut t2[off..off + w],
                );
                let (a3, a4, a5) = (
                    &mut t3[off..off + w],
                    &mut t4[off..off + w],
                    &mut t5[off..off + w],
                );
                let (d0, d1, d2) = (&d[0][..w], &d[1][..w], &d[2][..w]);
                let (d3, d4, d5) = (&d[3][..w], &d[4][..w], &d[5][..w]);
                for q in 0..w {
                    let (s12, m12) = (d1[q] + d2[q], d1[q] - d2[q]);
                    let (e42, e31) = (d4[q] - d2[q], 2.0 * (d3[q] - d1[q]));
                    a0[q] = 4.0 * d0[q] - 5.0 * d2[q] + d4[q];
                    a1[q] = (d3[q] + d4[q]) - 4.0 * s12;
                    a2[q] = (d4[q] - d3[q]) + 4.0 * m12;
                    a3[q] = e42 + e31;
                    a4[q] = e42 - e31;
                    a5[q] = 4.0 * d1[q] - 5.0 * d3[q] + d5[q];
                }
                for p in (0..off).chain(off + w..wpad) {
                    let b: [f32; 6] = std::array::from_fn(|k| super::border(d[k], p, off, reflect));
                    let (s12, m12) = (b[1] + b[2], b[1] - b[2]);
                    let (e42, e31) = (b[4] - b[2], 2.0 * (b[3] - b[1]));
                    t0[p] = 4.0 * b[0] - 5.0 * b[2] + b[4];
                    t1[p] = (b[3] + b[4]) - 4.0 * s12;
                    t2[p] = (b[4] - b[3]) + 4.0 * m12;
                    t3[p] = e42 + e31;
                    t4[p] = e42 - e31;
                    t5[p] = 4.0 * b[1] - 5.0 * b[3] + b[5];
                }
            }
            // Then (B^T d) B along each of the six rows: tile j's columns are
            // 4j..4j+5, i.e. phases 0..3 at j and phases 0, 1 at j + 1.
            let base = (i - i0) * tw;
            for (r, trow) in t.chunks_exact(wpad).enumerate() {
                {
                    let (p01, p23) = ph.split_at_mut(2 * (tw + 1));
                    let (p0, p1) = p01.split_at_mut(tw + 1);
                    let (p2, p3) = p23.split_at_mut(tw + 1);
                    for ((((a, b), c), d), q) in p0
                        .iter_mut()
                        .zip(p1.iter_mut())
                        .zip(p2.iter_mut())
                        .zip(p3.iter_mut())
                        .zip(trow.chunks_exact(4))
                    {
                        *a = q[0];
                        *b = q[1];
                        *c = q[2];
                        *d = q[3];
                    }
                }
                let n1 = tw + 1;
                let (c0, c1, c2) = (&ph[..tw], &ph[n1..n1 + tw], &ph[2 * n1..2 * n1 + tw]);
                let (c3, c4, c5) = (&ph[3 * n1..3 * n1 + tw], &ph[1..n1], &ph[n1 + 1..2 * n1]);
                let row = (r * 6) * c + ci;
                let vr = &mut v[row * tc..];
                // Six outputs, each a slice of `tw` tiles, `c * tc` apart.
                let stride = c * tc;
                let (v0, rest) = vr.split_at_mut(stride);
                let (v1, rest) = rest.split_at_mut(stride);
                let (v2, rest) = rest.split_at_mut(stride);
                let (v3, rest) = rest.split_at_mut(stride);
                let (v4, v5) = rest.split_at_mut(stride);
                let (v0, v1, v2) = (
                    &mut v0[base..base + tw],
                    &mut v1[base..base + tw],
                    &mut v2[base..base + tw],
                );
                let (v3, v4, v5) = (
                    &mut v3[base..base + tw],
                    &mut v4[base..base + tw],
                    &mut v5[base..base + tw],
                );
                for j in 0..tw {
                    let (s12, m12) = (c1[j] + c2[j], c1[j] - c2[j]);
                    let (e42, e31) = (c4[j] - c2[j], 2.0 * (c3[j] - c1[j]));
                    v0[j] = 4.0 * c0[j] - 5.0 * c2[j] + c4[j];
                    v1[j] = (c3[j] + c4[j]) - 4.0 * s12;
                    v2[j] = (c4[j] - c3[j]) + 4.0 * m12;
                    v3[j] = e42 + e31;
                    v4[j] = e42 - e31;
                    v5[j] = 4.0 * c1[j] - 5.0 * c3[j] + c5[j];
                }
            }
        }
    }
}

/// out [O,hout,wout] rows of tile rows `i0..i1` = A^T M A (+ bias, ReLU).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn transform_output_body(
    m: &[f32],
    o: usize,
    g: &Geo,
    (i0, i1): (usize, usize),
    bias: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
) {
    let (tw, wout) = (g.tw, g.wout);
    let tc = (i1 - i0) * tw;
    let stride = o * tc;
    // s = A^T m: [column k of the tile][output row a][tile].
    let mut s = vec![0f32; 24 * tw];
    let mut y = vec![0f32; 4 * tw];
    for oi in 0..o {
        let b = bias.map_or(0.0, |b| b[oi]);
        for i in i0..i1 {
            let base = (i - i0) * tw;
            for (k, sk) in s.chunks_exact_mut(4 * tw).enumerate() {
                // Rows r = 0..6 of column k: M[r * 6 + k].
                let first = (k * o + oi) * tc + base;
                let mr = &m[first..];
                let (m0, m1, m2) = (&mr[..tw], &mr[6 * stride..][..tw], &mr[12 * stride..][..tw]);
                let (m3, m4, m5) = (
                    &mr[18 * stride..][..tw],
                    &mr[24 * stride..][..tw],
                    &mr[30 * stride..][..tw],
                );
                let (s01, s23) = sk.split_at_mut(2 * tw);
                let (s0, s1) = s01.split_at_mut(tw);
                let (s2, s3) = s23.split_at_mut(tw);
                for j in 0..tw {
                    let (a12, d12) = (m1[j] + m2[j], m1[j] - m2[j]);
                    let (a34, d34) = (m3[j] + m4[j], m3[j] - m4[j]);
                    s0[j] = m0[j] + a12 + a34;
                    s1[j] = d12 + 2.0 * d34;
                    s2[j] = a12 + 4.0 * a34;
                    s3[j] = d12 + 8.0 * d34 + m5[j];
                }
            }
            // y = s A for each output row, with bias and ReLU.
            for a in 0..4 {
                let oy = 4 * i + a;
                if oy >= g.hout {
                    break;
                }
                let col = |k: usize| &s[(k * 4 + a) * tw..][..tw];
                let (c0, c1, c2, c3, c4, c5) = (col(0), col(1), col(2), col(3), col(4), col(5));
                let (y01, y23) = y.split_at_mut(2 * tw);
                let (y0, y1) = y01.split_at_mut(tw);
                let (y2, y3) = y23.split_at_mut(tw);
                for j in 0..tw {
                    let (a12, d12) = (c1[j] + c2[j], c1[j] - c2[j]);
                    let (a34, d34) = (c3[j] + c4[j], c3[j] - c4[j]);
                    y0[j] = c0[j] + a12 + a34 + b;
                    y1[j] = d12 + 2.0 * d34 + b;
                    y2[j] = a12 + 4.0 * a34 + b;
                    y3[j] = d12 + 8.0 * d34 + c5[j] + b;
                }
                let dst = &mut out[(oi * g.hout + oy) * wout..][..wout];
                let whole = wout / 4;
                let (y0, y1, y2, y3) = (&y0[..whole], &y1[..whole], &y2[..whole], &y3[..whole]);
                if relu {
                    for ((((d, p), q), r), s) in
                        dst.chunks_exact_mut(4).zip(y0).zip(y1).zip(y2).zip(y3)
                    {
                        d[0] = p.max(0.0);
                        d[1] = q.max(0.0);
                        d[2] = r.max(0.0);
                        d[3] = s.max(0.0);
                    }
                } else {
                    for ((((d, p), q), r), s) in
                        dst.chunks_exact_mut(4).zip(y0).zip(y1).zip(y2).zip(y3)
                    {
                        d[0] = *p;
                        d[1] = *q;
                        d[2] = *r;
                        d[3] = *s;
                    }
                }
                for (q, d) in dst[4 * whole..].iter_mut().enumerate() {
                    let v = y[q * tw + whole];
                    *d = if relu { v.max(0.0) } else { v };
                }
            }
        }
    }
}
