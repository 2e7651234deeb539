//! f32 kernels of "reflection-pad(k/2) + k x k conv, stride s" for the kernel
//! sizes and strides Winograd does not cover (Johnson et al.'s 9x9 image
//! layers and its stride-2 3x3 downsampling): im2col over a chunk of output
//! pixels at a time, then one matrix product per chunk (the `gemm` crate).
//!
//! With few output channels the forward and the input gradient take per-tap
//! products instead (`conv_forward_taps`, `conv_grad_input_taps`).
//!
//! Why chunks: a whole-image im2col of the 9x9 output layer (32 channels in)
//! is 2592 values per pixel, 10 GB at 1024^2; a chunk is sized to stay in
//! cache (`CHUNK_BYTES`). The reflection is folded into the gather (a table
//! of source rows and columns), so no padded copy of the input is made.
//!
//! Layouts: x `[N][C][H][W]`, weight `[O][C][k][k]` (rows of C*k*k), out
//! `[N][O][Ho][Wo]` with Ho = (H + 2p - k) / s + 1, p = k / 2 (as PyTorch).

use rayon::prelude::*;

use super::pad::{huge_vec, matmul, reflect};

/// The im2col buffer of one chunk is about this large (fits a core's L2).
const CHUNK_BYTES: usize = 1 << 20;

/// Shape of one convolution.
#[derive(Debug, Clone, Copy)]
pub struct Geo {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub k: usize,
    pub s: usize,
}

impl Geo {
    pub fn pad(&self) -> usize {
        self.k / 2
    }
    pub fn out_hw(&self) -> (usize, usize) {
        let p = self.pad();
        (
            (self.h + 2 * p - self.k) / self.s + 1,
            (self.w + 2 * p - self.k) / self.s + 1,
        )
    }
    /// Rows of the im2col matrix: C*k*k.
    fn ckk(&self) -> usize {
        self.c * self.k * self.k
    }
    /// `(image, first, end output pixel)` of every chunk.
    fn chunks(&self) -> Vec<(usize, usize, usize)> {
        let (ho, wo) = self.out_hw();
        let px = ho * wo;
        let len = (CHUNK_BYTES / (4 * self.ckk())).clamp(64, px.max(64));
        (0..self.n)
            .flat_map(|ni| {
                (0..px)
                    .step_by(len)
                    .map(move |a| (ni, a, (a + len).min(px)))
            })
            .collect()
    }
    /// Source row (`rows`) and column (`cols`) of every padded index.
    fn tables(&self) -> (Vec<usize>, Vec<usize>) {
        let p = self.pad() as isize;
        let hp = self.h + 2 * self.pad();
        let wp = self.w + 2 * self.pad();
        (
            (0..hp).map(|i| reflect(i as isize - p, self.h)).collect(),
            (0..wp).map(|i| reflect(i as isize - p, self.w)).collect(),
        )
    }
}

/// A pointer that tasks writing disjoint parts of one buffer share.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

/// cols `[C*k*k]`[a..b] of image `x` (one image's planes) into `cols` (at
/// least C*k*k*(b-a) long), row by row of the output: the columns whose
/// source lies inside the image are a plain (stride 1) or strided copy, only
/// the reflected edges go through the index table.
fn im2col(
    g: &Geo,
    tables: &(Vec<usize>, Vec<usize>),
    x: &[f32],
    (a, b): (usize, usize),
    cols: &mut [f32],
) {
    let (_, wo) = g.out_hw();
    let (k, s, p, len) = (g.k, g.s, g.pad(), b - a);
    let mut j = a;
    while j < b {
        let (oy, ox0) = (j / wo, j % wo);
        let ox1 = wo.min(ox0 + (b - j));
        let off = j - a;
        for kx in 0..k {
            // ox with 0 <= ox*s + kx - p < w: a copy from the row
            let lo = p.saturating_sub(kx).div_ceil(s).clamp(ox0, ox1);
            let hi = ((g.w + p - kx - 1) / s + 1).clamp(lo, ox1);
            for ci in 0..g.c {
                let plane = &x[ci * g.h * g.w..][..g.h * g.w];
                for ky in 0..k {
                    let src = &plane[tables.0[oy * s + ky] * g.w..][..g.w];
                    let row = &mut cols[((ci * k + ky) * k + kx) * len + off..][..ox1 - ox0];
                    for ox in (ox0..lo).chain(hi..ox1) {
                        row[ox - ox0] = src[tables.1[ox * s + kx]];
                    }
                    if hi > lo {
                        let first = lo * s + kx - p;
                        let dst = &mut row[lo - ox0..hi - ox0];
                        if s == 1 {
                            dst.copy_from_slice(&src[first..first + (hi - lo)]);
                        } else {
                            for (d, v) in dst.iter_mut().zip(src[first..].iter().step_by(s)) {
                                *d = *v;
                            }
                        }
                    }
                }
            }
        }
        j += ox1 - ox0;
    }
}

/// The chunks split into one contiguous run per thread, in order: each run
/// reuses one im2col buffer (a fresh 1 MB buffer per chunk cost a page
/// fault per 4 KB), and sums over runs come out the same every time.
fn runs(chunks: &[(usize, usize, usize)]) -> Vec<&[(usize, usize, usize)]> {
    let n = rayon::current_num_threads().clamp(1, chunks.len().max(1));
    (0..n)
        .map(|r| &chunks[r * chunks.len() / n..(r + 1) * chunks.len() / n])
        .collect()
}

/// The longest chunk.
fn max_len(chunks: &[(usize, usize, usize)]) -> usize {
    chunks.iter().map(|c| c.2 - c.1).max().unwrap_or(0)
}

/// Forward: out `[N][O][Ho][Wo]` = conv(reflect_pad(x), wt) + b.
pub fn conv_forward(g: &Geo, x: &[f32], wt: &[f32], b: &[f32]) -> Vec<f32> {
    if g.s == 1 && 4 * g.o <= g.c {
        return conv_forward_taps(g, x, wt, b);
    }
    let (ho, wo) = g.out_hw();
    let px = ho * wo;
    let mut out = huge_vec(g.n * g.o * px);
    let dst = Shared(out.as_mut_ptr());
    let tables = g.tables();
    let chunks = g.chunks();
    let longest = max_len(&chunks);
    runs(&chunks).into_par_iter().for_each(|mine| {
        let dst = dst;
        let mut cols = vec![0f32; g.ckk() * longest];
        for &(ni, a, b_) in mine {
            let len = b_ - a;
            im2col(
                g,
                &tables,
                &x[ni * g.c * g.h * g.w..][..g.c * g.h * g.w],
                (a, b_),
                &mut cols,
            );
            // SAFETY: each chunk writes its own columns a..b of image ni's planes.
            unsafe {
                let d = dst.0.add(ni * g.o * px + a);
                for oi in 0..g.o {
                    std::slice::from_raw_parts_mut(d.add(oi * px), len).fill(b[oi]);
                }
                matmul(
                    (g.o, len, g.ckk()),
                    (d, px),
                    true,
                    (wt.as_ptr(), g.ckk(), 1),
                    (cols.as_ptr(), len, 1),
                    gemm::Parallelism::None,
                );
            }
        }
    });
    out
}

/// The weight `[O][C][k][k]` rearranged `[O*k*k][C]` (row `(o, ky, kx)`).
fn tap_weights(g: &Geo, wt: &[f32]) -> Vec<f32> {
    let (k, c) = (g.k, g.c);
    let mut wr = vec![0f32; g.o * k * k * c];
    for oi in 0..g.o {
        for ci in 0..c {
            for t in 0..k * k {
                wr[(oi * k * k + t) * c + ci] = wt[(oi * c + ci) * k * k + t];
            }
        }
    }
    wr
}

/// `(image, first, end row)` of bands of `rows` rows per image, enough of
/// them for every thread, none shorter than `min` unless the image is.
fn bands(n: usize, rows: usize, min: usize) -> Vec<(usize, usize, usize)> {
    let per_image = (2 * rayon::current_num_threads())
        .div_ceil(n)
        .clamp(1, (rows / min.max(1)).max(1));
    (0..n)
        .flat_map(|ni| {
            (0..per_image).map(move |i| (ni, i * rows / per_image, (i + 1) * rows / per_image))
        })
        .filter(|&(_, a, b)| b > a)
        .collect()
}

/// The forward for few output channels (stride 1): per padded input row, the
/// products of every tap `(o, ky, kx)` with the row's C channels, z `[O*k*k][Wp]`
/// = weight rearranged `[O*k*k][C]` times the row `[C][Wp]`; then each output
/// row `y` adds tap `(o, ky, kx)` of padded row `y + ky`, shifted by `kx`.
///
/// Why: Johnson et al.'s last layer (32 -> 3 channels, 9x9) through im2col
/// writes C*k*k = 2592 values per pixel for 3*2592 products, and its product
/// has 3 rows, where the kernel's 16-lane columns ran mostly empty: 24% of a
/// 512^2 stylization. Here a pixel costs O*k*k = 243 stored values and the
/// product has 243 rows (the same multiplies; the sums only run in another
/// order). Each task takes a band of output rows of one image and computes
/// the k-1 padded rows it shares with the next band again.
fn conv_forward_taps(g: &Geo, x: &[f32], wt: &[f32], b: &[f32]) -> Vec<f32> {
    let (k, c, o, h, w) = (g.k, g.c, g.o, g.h, g.w);
    let p = g.pad();
    let wp = w + 2 * p;
    let taps = o * k * k;
    let wr = tap_weights(g, wt);
    let (_, cols_t) = g.tables();
    // Bands of at least 4(k-1) rows (a quarter recomputed at most).
    let bands = bands(g.n, h, 4 * (k - 1));
    let mut out = huge_vec(g.n * o * h * w);
    let dst = Shared(out.as_mut_ptr());
    bands.into_par_iter().for_each(|(ni, y0, y1)| {
        let dst = dst;
        let img = &x[ni * c * h * w..][..c * h * w];
        let mut row = vec![0f32; c * wp];
        let mut z = vec![0f32; taps * wp];
        // SAFETY: each band writes rows y0..y1 of image ni's O planes only.
        let mut mine: Vec<&mut [f32]> = (0..o)
            .map(|oi| unsafe {
                std::slice::from_raw_parts_mut(
                    dst.0.add(((ni * o + oi) * h + y0) * w),
                    (y1 - y0) * w,
                )
            })
            .collect();
        for (d, &bias) in mine.iter_mut().zip(b) {
            d.fill(bias);
        }
        for py in y0..y1 + k - 1 {
            let sy = reflect(py as isize - p as isize, h);
            for ci in 0..c {
                let src = &img[(ci * h + sy) * w..][..w];
                let r = &mut row[ci * wp..][..wp];
                r[p..p + w].copy_from_slice(src);
                for px in (0..p).chain(p + w..wp) {
                    r[px] = src[cols_t[px]];
                }
            }
            // SAFETY: wr is taps x c, row c x wp, z taps x wp.
            unsafe {
                matmul(
                    (taps, wp, c),
                    (z.as_mut_ptr(), wp),
                    false,
                    (wr.as_ptr(), c, 1),
                    (row.as_ptr(), wp, 1),
                    gemm::Parallelism::None,
                );
            }
            for ky in 0..k {
                let Some(y) = py.checked_sub(ky).filter(|y| (y0..y1).contains(y)) else {
                    continue;
                };
                for (oi, rows) in mine.iter_mut().enumerate() {
                    let d = &mut rows[(y - y0) * w..][..w];
                    for kx in 0..k {
                        let t = &z[((oi * k + ky) * k + kx) * wp + kx..][..w];
                        for (d, v) in d.iter_mut().zip(t) {
                            *d += v;
                        }
                    }
                }
            }
        }
    });
    out
}

/// Weight gradient: dW `[O][C*k*k]` = sum over chunks of grad (O x len) times
/// cols^T. Chunks are summed per thread in order, then the threads' sums in
/// order: the same result every time for a given thread count.
pub fn conv_grad_weight(g: &Geo, x: &[f32], grad: &[f32]) -> Vec<f32> {
    let (ho, wo) = g.out_hw();
    let px = ho * wo;
    let chunks = g.chunks();
    let longest = max_len(&chunks);
    let tables = g.tables();
    let parts: Vec<Vec<f32>> = runs(&chunks)
        .into_par_iter()
        .map(|mine| {
            let mut acc = vec![0f32; g.o * g.ckk()];
            let mut cols = vec![0f32; g.ckk() * longest];
            for (i, &(ni, a, b)) in mine.iter().enumerate() {
                let len = b - a;
                im2col(
                    g,
                    &tables,
                    &x[ni * g.c * g.h * g.w..][..g.c * g.h * g.w],
                    (a, b),
                    &mut cols,
                );
                // SAFETY: grad rows of image ni, columns a..b; cols is ckk x len.
                unsafe {
                    matmul(
                        (g.o, g.ckk(), len),
                        (acc.as_mut_ptr(), g.ckk()),
                        i > 0,
                        (grad.as_ptr().add(ni * g.o * px + a), px, 1),
                        (cols.as_ptr(), 1, len),
                        gemm::Parallelism::None,
                    );
                }
            }
            acc
        })
        .collect();
    let mut out = parts[0].clone();
    for p in &parts[1..] {
        for (o, v) in out.iter_mut().zip(p) {
            *o += v;
        }
    }
    out
}

/// The input gradient for few output channels (stride 1), the adjoint of
/// `conv_forward_taps`: per padded row `py`, the grad rows every tap
/// `(o, ky, kx)` reads there (row `py - ky` of channel o, shifted by `kx`;
/// zero outside) gathered `[O*k*k][Wp]`, times the rearranged weight
/// transposed `[C][O*k*k]`, give the padded input gradient's row `[C][Wp]`;
/// then the padding is folded back.
///
/// Why: the general path's product had O = 3 as its inner dimension and
/// wrote 2592 values per pixel, and its scatter divided per value: 14% of
/// a Johnson training step (batch 4, 256^2).
fn conv_grad_input_taps(g: &Geo, grad: &[f32], wt: &[f32]) -> Vec<f32> {
    let (k, c, o, h, w) = (g.k, g.c, g.o, g.h, g.w);
    let p = g.pad();
    let (hp, wp) = (h + 2 * p, w + 2 * p);
    let taps = o * k * k;
    let wr = tap_weights(g, wt);
    let mut padded = huge_vec(g.n * c * hp * wp);
    let dst = Shared(padded.as_mut_ptr());
    bands(g.n, hp, 8)
        .into_par_iter()
        .for_each(|(ni, py0, py1)| {
            let dst = dst;
            let mut gs = vec![0f32; taps * wp];
            for py in py0..py1 {
                for oi in 0..o {
                    let plane = &grad[(ni * o + oi) * h * w..][..h * w];
                    for ky in 0..k {
                        let src = py
                            .checked_sub(ky)
                            .filter(|&y| y < h)
                            .map(|y| &plane[y * w..][..w]);
                        for kx in 0..k {
                            let row = &mut gs[((oi * k + ky) * k + kx) * wp..][..wp];
                            match src {
                                Some(src) => {
                                    row[..kx].fill(0.0);
                                    row[kx..kx + w].copy_from_slice(src);
                                    row[kx + w..].fill(0.0);
                                }
                                None => row.fill(0.0),
                            }
                        }
                    }
                }
                // SAFETY: wr read transposed (c x taps), gs taps x wp; each band
                // writes its own padded rows of image ni's C planes.
                unsafe {
                    matmul(
                        (c, wp, taps),
                        (dst.0.add((ni * c * hp + py) * wp), hp * wp),
                        false,
                        (wr.as_ptr(), 1, c),
                        (gs.as_ptr(), wp, 1),
                        gemm::Parallelism::None,
                    );
                }
            }
        });
    let (rows, cols_t) = g.tables();
    let mut dx = huge_vec(g.n * c * h * w);
    dx.par_chunks_mut(h * w)
        .zip(padded.par_chunks(hp * wp))
        .for_each(|(d, src)| {
            for (py, r) in src.chunks_exact(wp).enumerate() {
                let d = &mut d[rows[py] * w..][..w];
                for (d, v) in d.iter_mut().zip(&r[p..p + w]) {
                    *d += v;
                }
                for px in (0..p).chain(p + w..wp) {
                    d[cols_t[px]] += r[px];
                }
            }
        });
    dx
}

/// Input gradient: dcols = W^T grad per chunk, scattered back (col2im) into a
/// padded image, whose padding is then folded onto the pixels it was copied
/// from. Images run in parallel (chunks of one image overlap in the input);
/// with fewer images than threads each product uses every thread instead.
pub fn conv_grad_input(g: &Geo, grad: &[f32], wt: &[f32]) -> Vec<f32> {
    if g.s == 1 && 4 * g.o <= g.c {
        return conv_grad_input_taps(g, grad, wt);
    }
    let (ho, wo) = g.out_hw();
    let (k, s, p) = (g.k, g.s, g.pad());
    let (hp, wp) = (g.h + 2 * p, g.w + 2 * p);
    let px = ho * wo;
    let chunks = g.chunks();
    let threads = rayon::current_num_threads();
    let par = if g.n >= threads {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(threads)
    };
    let (rows, cols_t) = g.tables();
    let one_image = |ni: usize| -> Vec<f32> {
        let mut padded = vec![0f32; g.c * hp * wp];
        let mut dcols = vec![0f32; g.ckk() * max_len(&chunks)];
        for &(_, a, b) in chunks.iter().filter(|c| c.0 == ni) {
            let len = b - a;
            // SAFETY: wt is O x ckk (read transposed), grad rows of image ni.
            unsafe {
                matmul(
                    (g.ckk(), len, g.o),
                    (dcols.as_mut_ptr(), len),
                    false,
                    (wt.as_ptr(), 1, g.ckk()),
                    (grad.as_ptr().add(ni * g.o * px + a), px, 1),
                    par,
                );
            }
            for ci in 0..g.c {
                let plane = &mut padded[ci * hp * wp..][..hp * wp];
                for ky in 0..k {
                    for kx in 0..k {
                        let row = &dcols[((ci * k + ky) * k + kx) * len..][..len];
                        for (j, v) in row.iter().enumerate() {
                            let (oy, ox) = ((a + j) / wo, (a + j) % wo);
                            plane[(oy * s + ky) * wp + ox * s + kx] += v;
                        }
                    }
                }
            }
        }
        // Fold the padding back (the adjoint of the reflection gather).
        let mut dx = vec![0f32; g.c * g.h * g.w];
        for ci in 0..g.c {
            let (src, dst) = (
                &padded[ci * hp * wp..][..hp * wp],
                &mut dx[ci * g.h * g.w..][..g.h * g.w],
            );
            for yp in 0..hp {
                for xp in 0..wp {
                    dst[rows[yp] * g.w + cols_t[xp]] += src[yp * wp + xp];
                }
            }
        }
        dx
    };
    let images: Vec<Vec<f32>> = if g.n >= threads {
        (0..g.n).into_par_iter().map(one_image).collect()
    } else {
        (0..g.n).map(one_image).collect()
    };
    let mut out = huge_vec(g.n * g.c * g.h * g.w);
    for (dst, src) in out.chunks_exact_mut(g.c * g.h * g.w).zip(&images) {
        dst.copy_from_slice(src);
    }
    out
}
