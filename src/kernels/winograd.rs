//! f32 3x3 convolutions by Winograd's F(2x2, 3x3): the forward pass and both
//! gradients of [`crate::conv`]'s op in f32 (all CPUs without AMX, and
//! `--precision f32` everywhere). Where no gradient flows (stylization), the
//! forward pass takes F(4x4, 3x3) instead (the transforms in
//! `winograd/f4.rs`, same driver).
//!
//! Each 2x2 block of outputs comes from a 4x4 block of the padded input:
//! `Y = A^T [(G g G^T) . (B^T d B)] A` (Lavin & Gray 2015), 16 multiplies per
//! input channel where the direct form takes 36. The products for all tiles
//! are 16 matrix multiplies, one per position in the 4x4 transformed tile:
//! `M[xi]` (O x tiles) = `U[xi]` (O x C) `V[xi]` (C x tiles).
//! F(2x2, 3x3) keeps f32 accuracy (its transforms only add, subtract and
//! halve; the parity tests against PyTorch pass at their old tolerances). The
//! larger F(4x4, 3x3) takes 36 multiplies per 16 outputs but rounds more
//! (about 4e-6 of relu4_1's largest value against 6e-7), which is why training
//! keeps F2 (see `crate::conv::set_f4_forward`).
//!
//! Why it is ours: no crate offers a Winograd convolution on the CPU; the
//! matrix multiplies are the `gemm` crate's.
//!
//! The weight gradient is the same scheme run backwards: the output gradient's
//! tiles are transformed by `A . A^T`, multiplied with the input's transformed
//! tiles and summed over tiles, then brought back to 3x3 by `G^T . G`.
//!
//! Work is split into chunks of tile rows of one image (transformed buffers of
//! a few hundred KB to a few MB, where im2col needs 9x the whole input); each thread takes one
//! chunk at a time with its own buffers. The forward pass writes disjoint
//! output rows per chunk; the weight gradient, which sums over chunks, gives
//! each thread one contiguous run of them, so its sums come out the same on
//! every run (training resumes bit for bit).

use rayon::prelude::*;

use super::pad::{matmul, Pad};

mod f4;
use f4::{transform_input_body as f4_input_body, transform_output_body as f4_output_body};

/// Transformed-tile buffers hold about this many floats per chunk (512 KB):
/// small enough that a chunk's tiles are still in the core's L2 cache when the
/// matrix multiplies read them, and that a thread slowed by other work hands
/// its remaining chunks to the other. Measured on an AMD EPYC (AVX-512, 2 MB
/// L2 per core, 2 threads) against the former 8 MB and 256 tiles: 512^2
/// stylization 1.00-1.11 -> 0.85-0.92 s, the Johnson network at 1024^2
/// 1.49-1.59 -> 1.29-1.30 s, its training step 4.05-4.19 -> 3.58-3.68 s, a
/// 640x360 video in flow mode 1.39 -> 1.69 fps (`adain bench` and `adain
/// video`, the two settings alternated; 1 MB, 256 KB and 128 tiles were
/// within the noise of this or a little slower, 32 tiles a little slower).
/// Other CPUs (the AVX2-only or AMX Xeons earlier sessions had) were not
/// measured with it: see docs/performance-notes.md item 21.
const CHUNK_FLOATS: usize = 1 << 17;
/// Tiles per chunk at least (keeps the matrix multiplies efficient: the deep
/// layers' chunk is set by this, not by [`CHUNK_FLOATS`]), unless smaller
/// chunks are needed to give every thread work (see [`chunks`]).
const MIN_TILES: usize = 64;

/// `U[xi][o][c] = (G w[o][c] G^T)[xi]` for w [O,C,3,3]; with `flip`, the
/// kernel used is w[o][c] rotated by 180 degrees and the roles of O and C
/// swapped (the input gradient's kernel): U [16][C][O].
fn transform_weights(wt: &[f32], o: usize, c: usize, flip: bool) -> Vec<f32> {
    let (rows, cols) = if flip { (c, o) } else { (o, c) };
    let mut u = vec![0f32; 16 * rows * cols];
    let dst = SendPtr(u.as_mut_ptr());
    // One row of U per task, on all threads (as F4's): written one kernel at
    // a time on the calling thread, this scatter with a stride of the whole
    // [rows][cols] block left the other core idle (perf: ~1% of a Johnson
    // training step's samples, all on one thread).
    (0..rows).into_par_iter().for_each(|r| {
        // This row's 16 positions of `cols` values, then written out.
        let mut local = vec![0f32; 16 * cols];
        for cc in 0..cols {
            let (oi, ci) = if flip { (cc, r) } else { (r, cc) };
            let k = &wt[(oi * c + ci) * 9..][..9];
            let g = |y: usize, x: usize| -> f32 {
                if flip {
                    k[(2 - y) * 3 + (2 - x)]
                } else {
                    k[y * 3 + x]
                }
            };
            // t = G g (4x3), then u = t G^T (4x4).
            let t: [[f32; 3]; 4] = std::array::from_fn(|y| {
                std::array::from_fn(|x| {
                    let (g0, g1, g2) = (g(0, x), g(1, x), g(2, x));
                    match y {
                        0 => g0,
                        1 => 0.5 * (g0 + g1 + g2),
                        2 => 0.5 * (g0 - g1 + g2),
                        _ => g2,
                    }
                })
            });
            for (y, t) in t.iter().enumerate() {
                let row = [
                    t[0],
                    0.5 * (t[0] + t[1] + t[2]),
                    0.5 * (t[0] - t[1] + t[2]),
                    t[2],
                ];
                for (x, v) in row.into_iter().enumerate() {
                    local[(y * 4 + x) * cols + cc] = v;
                }
            }
        }
        for (xi, vals) in local.chunks_exact(cols).enumerate() {
            // SAFETY: in bounds of `u`; each (position, r) row is written by
            // the task of its `r` only.
            unsafe { dst.copy_from((xi * rows + r) * cols, vals) };
        }
    });
    u
}

/// The Winograd variant: output tiles of 2x2 or 4x4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tile {
    F2,
    F4,
}

impl Tile {
    /// Side of an output tile.
    fn m(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
        }
    }
    /// Positions in a transformed tile (one matrix multiply each).
    fn positions(self) -> usize {
        (self.m() + 2).pow(2)
    }
}

/// Geometry: the input [C,H,W] is padded by `pad` on every side; the output
/// is the "valid" 3x3 correlation of the padded input, `hout x wout`, tiled
/// by `tile` blocks (`th x tw` of them).
#[derive(Clone, Copy)]
struct Geo {
    h: usize,
    w: usize,
    pad: Pad,
    tile: Tile,
    hout: usize,
    wout: usize,
    th: usize,
    tw: usize,
}

impl Geo {
    fn new(h: usize, w: usize, pad: Pad, tile: Tile) -> Self {
        let (hout, wout) = (h + 2 * pad.size() - 2, w + 2 * pad.size() - 2);
        Self {
            h,
            w,
            pad,
            tile,
            hout,
            wout,
            th: hout.div_ceil(tile.m()),
            tw: wout.div_ceil(tile.m()),
        }
    }
}

/// Padded column `p` of source row `r` (the image's `w` columns start at
/// `off`; reflected border columns where `reflect`; zero elsewhere). Only
/// the few border columns go through here.
#[inline(always)]
fn border(r: &[f32], p: usize, off: usize, reflect: bool) -> f32 {
    let w = r.len();
    if (off..off + w).contains(&p) {
        r[p - off]
    } else if reflect && p == 0 {
        r[1]
    } else if reflect && p == w + 1 {
        r[w - 2]
    } else {
        0.0
    }
}

/// The `K` padded rows from `first` on of one input plane [H,W], read in
/// place (`zeros` where a row is outside): no padded copy is made.
#[inline(always)]
fn padded_rows<'a, const K: usize>(
    plane: &'a [f32],
    zeros: &'a [f32],
    g: &Geo,
    first: usize,
) -> [&'a [f32]; K] {
    std::array::from_fn(|k| {
        let p = first + k;
        match (p < g.hout + 2).then(|| g.pad.src(p, g.h)).flatten() {
            Some(sy) => &plane[sy * g.w..][..g.w],
            None => zeros,
        }
    })
}

/// V[xi][c][t] for tile rows `i0..i1` of one image x [C,H,W]; `t` counts
/// tiles row-major within the chunk.
#[inline(always)]
fn transform_input_body(x: &[f32], c: usize, g: &Geo, (i0, i1): (usize, usize), v: &mut [f32]) {
    let (h, w, tw) = (g.h, g.w, g.tw);
    let tc = (i1 - i0) * tw;
    // Padded columns 0..2*tw+2.
    let wpad = 2 * tw + 2;
    let off = g.pad.size();
    let reflect = g.pad == Pad::Reflect1;
    let zeros = vec![0f32; w];
    let mut t = vec![0f32; 4 * wpad];
    let (mut even, mut odd) = (vec![0f32; tw + 1], vec![0f32; tw + 1]);
    for ci in 0..c {
        let plane = &x[ci * h * w..][..h * w];
        for i in i0..i1 {
            // The four padded rows of this tile row, read in place.
            let d: [&[f32]; 4] = padded_rows(plane, &zeros, g, 2 * i);
            // t = B^T d along the rows: the image's columns in one straight
            // loop, then the few padded border columns.
            let (t0, rest) = t.split_at_mut(wpad);
            let (t1, rest) = rest.split_at_mut(wpad);
            let (t2, t3) = rest.split_at_mut(wpad);
            {
                let (d0, d1, d2, d3) = (&d[0][..w], &d[1][..w], &d[2][..w], &d[3][..w]);
                let (a0, a1) = (&mut t0[off..off + w], &mut t1[off..off + w]);
                let (a2, a3) = (&mut t2[off..off + w], &mut t3[off..off + w]);
                for q in 0..w {
                    a0[q] = d0[q] - d2[q];
                    a1[q] = d1[q] + d2[q];
                    a2[q] = d2[q] - d1[q];
                    a3[q] = d1[q] - d3[q];
                }
            }
            for p in (0..off).chain(off + w..wpad) {
                let (x0, x1, x2, x3) = (
                    border(d[0], p, off, reflect),
                    border(d[1], p, off, reflect),
                    border(d[2], p, off, reflect),
                    border(d[3], p, off, reflect),
                );
                t0[p] = x0 - x2;
                t1[p] = x1 + x2;
                t2[p] = x2 - x1;
                t3[p] = x1 - x3;
            }
            // Then (B^T d) B along the columns of each of the four rows.
            let base = (i - i0) * tw;
            for (r, trow) in t.chunks_exact(wpad).enumerate() {
                // Split into even and odd columns (pairs: no bounds check per
                // element, which made this the hottest loop of the transform).
                for ((e, o), pair) in even
                    .iter_mut()
                    .zip(odd.iter_mut())
                    .zip(trow.chunks_exact(2))
                {
                    *e = pair[0];
                    *o = pair[1];
                }
                let at = |k: usize| ((r * 4 + k) * c + ci) * tc + base;
                // Zipped slices of equal length: no bounds checks, so these
                // vectorize in every build of `widest_simd!`.
                let (e0, e1, o0, o1) = (&even[..tw], &even[1..], &odd[..tw], &odd[1..]);
                let v0 = &mut v[at(0)..][..tw];
                for ((d, a), b) in v0.iter_mut().zip(e0).zip(e1) {
                    *d = a - b;
                }
                let v1 = &mut v[at(1)..][..tw];
                for ((d, a), b) in v1.iter_mut().zip(o0).zip(e1) {
                    *d = a + b;
                }
                let v2 = &mut v[at(2)..][..tw];
                for ((d, a), b) in v2.iter_mut().zip(e1).zip(o0) {
                    *d = a - b;
                }
                let v3 = &mut v[at(3)..][..tw];
                for ((d, a), b) in v3.iter_mut().zip(o0).zip(o1) {
                    *d = a - b;
                }
            }
        }
    }
}

/// out [O,hout,wout] rows of tile rows `i0..i1` = A^T M A (+ bias, ReLU).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn transform_output_body(
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
    let mut s = vec![0f32; 8 * tw];
    let mut y = vec![0f32; 2 * tw];
    for oi in 0..o {
        let b = bias.map_or(0.0, |b| b[oi]);
        for i in i0..i1 {
            let base = (i - i0) * tw;
            let mrow = |xi: usize| &m[(xi * o + oi) * tc + base..][..tw];
            // s = A^T m: two rows of four columns.
            for k in 0..4 {
                let (m0, m1, m2, m3) = (mrow(k), mrow(4 + k), mrow(8 + k), mrow(12 + k));
                let (s0, s1) = s.split_at_mut(4 * tw);
                let (s0, s1) = (&mut s0[k * tw..][..tw], &mut s1[k * tw..][..tw]);
                for j in 0..tw {
                    s0[j] = m0[j] + m1[j] + m2[j];
                    s1[j] = m1[j] - m2[j] - m3[j];
                }
            }
            // y = s A, written to the output rows with bias and ReLU.
            for a in 0..2 {
                let oy = 2 * i + a;
                if oy >= g.hout {
                    break;
                }
                let sa = &s[a * 4 * tw..][..4 * tw];
                let (c0, c1, c2, c3) = (
                    &sa[..tw],
                    &sa[tw..2 * tw],
                    &sa[2 * tw..3 * tw],
                    &sa[3 * tw..],
                );
                let (ye, yo) = y.split_at_mut(tw);
                for j in 0..tw {
                    ye[j] = c0[j] + c1[j] + c2[j] + b;
                    yo[j] = c1[j] - c2[j] - c3[j] + b;
                }
                let dst = &mut out[(oi * g.hout + oy) * wout..][..wout];
                let act = |v: f32| if relu { v.max(0.0) } else { v };
                for (d, (e, o)) in dst.chunks_exact_mut(2).zip(ye.iter().zip(yo.iter())) {
                    d[0] = act(*e);
                    d[1] = act(*o);
                }
                if wout % 2 == 1 {
                    dst[wout - 1] = act(ye[wout / 2]);
                }
            }
        }
    }
}

widest_simd!(transform_input => transform_input_body(
    x: &[f32], c: usize, g: &Geo, rows: (usize, usize), v: &mut [f32]
));
widest_simd!(transform_output => transform_output_body(
    m: &[f32], o: usize, g: &Geo, rows: (usize, usize), bias: Option<&[f32]>, relu: bool, out: &mut [f32]
));
widest_simd!(transform_input4 => f4_input_body(
    x: &[f32], c: usize, g: &Geo, rows: (usize, usize), v: &mut [f32]
));
widest_simd!(transform_output4 => f4_output_body(
    m: &[f32], o: usize, g: &Geo, rows: (usize, usize), bias: Option<&[f32]>, relu: bool, out: &mut [f32]
));
widest_simd!(transform_grad => transform_grad_body(
    dy: &[f32], o: usize, g: &Geo, rows: (usize, usize), z: &mut [f32]
));

/// The chunks `(image, (i0, i1))` of tile rows for `c` input and `o` output
/// channels.
fn chunks(n: usize, c: usize, o: usize, g: &Geo) -> Vec<(usize, (usize, usize))> {
    let per_row = g.tile.positions() * c.max(o) * g.tw;
    // Each image split at least this many ways when the batch alone cannot keep
    // every thread busy (one 256x256 photo: its 32x32 layers are one chunk else).
    let per_image = rayon::current_num_threads().div_ceil(n.max(1));
    let rows = (CHUNK_FLOATS / per_row)
        .max(MIN_TILES.div_ceil(g.tw))
        .min(g.th.div_ceil(per_image))
        .clamp(1, g.th);
    (0..n)
        .flat_map(|ni| {
            (0..g.th)
                .step_by(rows)
                .map(move |i0| (ni, (i0, (i0 + rows).min(g.th))))
        })
        .collect()
}

/// The chunks split into one contiguous run per thread, in order: each run
/// reuses one set of buffers, and sums over runs come out the same every time.
fn per_thread<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    let runs = rayon::current_num_threads().clamp(1, items.len().max(1));
    (0..runs)
        .map(|r| items[r * items.len() / runs..(r + 1) * items.len() / runs].to_vec())
        .collect()
}

/// The largest chunk's tile count.
fn max_tiles(chunks: &[(usize, (usize, usize))], g: &Geo) -> usize {
    chunks
        .iter()
        .map(|(_, (a, b))| (b - a) * g.tw)
        .max()
        .unwrap_or(0)
}

/// The forward pass's chunks `(image, (first, end tile row))` (for tests).
#[cfg(test)]
pub(crate) fn tile_row_chunks(
    n: usize,
    c: usize,
    o: usize,
    h: usize,
    w: usize,
) -> Vec<(usize, (usize, usize))> {
    chunks(n, c, o, &Geo::new(h, w, Pad::Reflect1, Tile::F4))
}

/// The valid 3x3 correlation of x [N,C,H,W], padded by `pad`, with
/// transformed weights `u` [positions][O][C] (of `tile`) -> [N,O,hout,wout].
#[allow(clippy::too_many_arguments)]
fn correlate(
    x: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    pad: Pad,
    u: &[f32],
    o: usize,
    bias: Option<&[f32]>,
    relu: bool,
    tile: Tile,
) -> Vec<f32> {
    let g = Geo::new(h, w, pad, tile);
    let positions = tile.positions();
    let out_plane = o * g.hout * g.wout;
    let mut out = vec![0f32; n * out_plane];
    let out_ptr = SendPtr(out.as_mut_ptr());
    let chunks = chunks(n, c, o, &g);
    let max_tc = max_tiles(&chunks, &g);
    // Chunks handed out one at a time (not one run per thread as in the
    // weight gradient, which sums over them): each writes only its own output
    // rows, so the result does not depend on which thread took it, and a thread
    // slowed by other work (the video's motion thread, ffmpeg) no longer
    // leaves the other waiting at the end of every layer.
    chunks
        .par_iter()
        .with_max_len(1)
        .for_each(|&(ni, (i0, i1))| {
            with_scratch(positions * c * max_tc, positions * o * max_tc, |v, m| {
                let tc = (i1 - i0) * g.tw;
                let x = &x[ni * c * h * w..][..c * h * w];
                match tile {
                    Tile::F2 => transform_input(x, c, &g, (i0, i1), v),
                    Tile::F4 => transform_input4(x, c, &g, (i0, i1), v),
                }
                for xi in 0..positions {
                    // M[xi] (o x tc) = U[xi] (o x c) * V[xi] (c x tc)
                    // SAFETY: the three views lie inside `u`, `v` and `m`.
                    unsafe {
                        matmul(
                            (o, tc, c),
                            (m.as_mut_ptr().add(xi * o * tc), tc),
                            false,
                            (u.as_ptr().add(xi * o * c), c, 1),
                            (v.as_ptr().add(xi * c * tc), tc, 1),
                            gemm::Parallelism::None,
                        );
                    }
                }
                // SAFETY: chunks cover disjoint output rows of image `ni`.
                let out = unsafe { out_ptr.image(ni, out_plane) };
                match tile {
                    Tile::F2 => transform_output(m, o, &g, (i0, i1), bias, relu, out),
                    Tile::F4 => transform_output4(m, o, &g, (i0, i1), bias, relu, out),
                }
            })
        });
    out
}

thread_local! {
    /// Each thread's transformed-tile buffers, kept from call to call: fresh
    /// ones were zeroed by `memset` and the kernel's page faults every layer
    /// (about 4% of a 512^2 stylization). Their size is bounded by the chunks
    /// (see [`chunks`]), a few tens of MB per thread at most.
    static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Runs `f` on this thread's scratch buffers of `a` and `b` floats (their
/// contents are left from earlier calls: `f` writes before it reads).
fn with_scratch<R>(a: usize, b: usize, f: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => {
            let (va, vb) = &mut *bufs;
            if va.len() < a {
                va.resize(a, 0.0);
            }
            if vb.len() < b {
                vb.resize(b, 0.0);
            }
            f(&mut va[..a], &mut vb[..b])
        }
        // Already lent on this thread (not expected): fresh buffers.
        Err(_) => f(&mut vec![0f32; a], &mut vec![0f32; b]),
    })
}

/// The output buffer, shared by the threads of [`correlate`].
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: each thread writes only its own chunk's rows (see `correlate`).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// Copies `src` to the elements from `at` on.
    ///
    /// # Safety
    /// In bounds, and no two threads write the same element.
    unsafe fn copy_from(self, at: usize, src: &[f32]) {
        std::ptr::copy_nonoverlapping(src.as_ptr(), self.0.add(at), src.len());
    }

    /// Image `ni` of the output, `len` floats.
    ///
    /// # Safety
    /// In bounds, and no two threads write the same element.
    unsafe fn image(self, ni: usize, len: usize) -> &'static mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(ni * len), len)
    }
}

/// ReflectionPad2d(1) + 3x3 conv + bias (+ ReLU): x [N,C,H,W], w [O,C,3,3]
/// -> [N,O,H,W].
#[allow(clippy::too_many_arguments)]
pub fn conv_forward(
    x: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    wt: &[f32],
    b: &[f32],
    o: usize,
    relu: bool,
    tile: Tile,
) -> Vec<f32> {
    let u = match tile {
        Tile::F2 => transform_weights(wt, o, c, false),
        Tile::F4 => f4::transform_weights(wt, o, c),
    };
    correlate(x, n, c, h, w, Pad::Reflect1, &u, o, Some(b), relu, tile)
}

/// Input gradient: dy [N,O,H,W], w [O,C,3,3] -> dx [N,C,H,W]. The gradient
/// of the padded input, P [C][H+2][W+2], is the correlation of dy,
/// zero-padded by 2, with the rotated kernel; dx is P's interior plus its
/// one-pixel border folded back (the adjoint of the reflection). The interior
/// is dy zero-padded by 1 through the Winograd correlation, on the forward's
/// grid of H/2 x W/2 tiles; the border, 2(H+W)+4 values a plane, is summed
/// directly ([`add_folded_border`]). Correlating all of P gave W/2+1 tiles a
/// row, never a multiple of the matrix multiply's 16-row blocks: every chunk
/// ended in a mostly empty block and had its tiles repacked first.
#[allow(clippy::too_many_arguments)]
pub fn conv_grad_input(
    dy: &[f32],
    n: usize,
    o: usize,
    h: usize,
    w: usize,
    wt: &[f32],
    c: usize,
) -> Vec<f32> {
    let u = transform_weights(wt, o, c, true);
    let mut dx = correlate(dy, n, o, h, w, Pad::Zero1, &u, c, None, false, Tile::F2);
    add_folded_border(&mut dx, dy, wt, n, o, c, h, w);
    dx
}

/// Adds P's border (see [`conv_grad_input`]) to the interior `dx`, each value
/// where the reflection had copied it from and in
/// [`super::pad::fold_reflection`]'s order (row by row). A rotated kernel's
/// edge meets only dy's edge, so each side of P is a 1-D correlation of the
/// matching side of dy with one edge of the kernel: P's top row is
/// `sum_o sum_j w[o][c][0][j] dy[o][0][q - j]`, its bottom row the same with
/// `w[..][2][j]` and dy's last row, its left and right columns the same down
/// dy's first and last columns with `w[..][j][0]` and `w[..][j][2]`. Each side
/// of an image is one matrix multiply, (C x 3O) kernel edges by (3O x length)
/// shifted copies of dy's side: summed element by element instead, the
/// borders of a Johnson training step took 3% of it.
#[allow(clippy::too_many_arguments)]
fn add_folded_border(
    dx: &mut [f32],
    dy: &[f32],
    wt: &[f32],
    n: usize,
    o: usize,
    c: usize,
    h: usize,
    w: usize,
) {
    use super::pad::reflect;
    // Per side: its length, the kernel tap for shift j, and dy's value at
    // position q of that side of plane `p`.
    const SIDES: usize = 4;
    let len = |side: usize| if side < 2 { w } else { h };
    let tap = |side: usize, j: usize| [j, 6 + j, 3 * j, 3 * j + 2][side];
    let at = |side: usize, p: &[f32], q: usize| match side {
        0 => p[q],
        1 => p[(h - 1) * w + q],
        2 => p[q * w],
        _ => p[q * w + w - 1],
    };
    // The kernel edges, [side][C][3][O].
    let mut edges = vec![0f32; SIDES * c * 3 * o];
    edges.par_chunks_mut(3 * o).enumerate().for_each(|(i, e)| {
        let (side, ci) = (i / c, i % c);
        for j in 0..3 {
            for oi in 0..o {
                e[j * o + oi] = wt[(oi * c + ci) * 9 + tap(side, j)];
            }
        }
    });
    // P's sides: [N][side] blocks of `line` floats a plane, each side's
    // [C][its length + 2] at the start of its block.
    let line = w.max(h) + 2;
    let mut sides = vec![0f32; n * SIDES * c * line];
    sides
        .par_chunks_mut(c * line)
        .enumerate()
        .for_each(|(i, out)| {
            let (ni, side) = (i / SIDES, i % SIDES);
            let l = len(side) + 2;
            // rows j * O + o: dy's side shifted right by j, zero outside
            let mut shifted = vec![0f32; 3 * o * l];
            for oi in 0..o {
                let plane = &dy[(ni * o + oi) * h * w..][..h * w];
                for j in 0..3 {
                    let row = &mut shifted[(j * o + oi) * l..][..l];
                    for (q, v) in row[j..j + len(side)].iter_mut().enumerate() {
                        *v = at(side, plane, q);
                    }
                }
            }
            // SAFETY: `out` holds c * line >= c * l floats, `edges` this
            // side's [C][3O] and `shifted` [3O][l].
            unsafe {
                matmul(
                    (c, l, 3 * o),
                    (out.as_mut_ptr(), l),
                    false,
                    (edges.as_ptr().add(side * c * 3 * o), 3 * o, 1),
                    (shifted.as_ptr(), l, 1),
                    gemm::Parallelism::None,
                );
            }
        });
    dx.par_chunks_mut(h * w).enumerate().for_each(|(i, dst)| {
        let (ni, ci) = (i / c, i % c);
        let side = |s: usize| {
            let l = len(s) + 2;
            &sides[(ni * SIDES + s) * c * line + ci * l..][..l]
        };
        let (top, bottom, left, right) = (side(0), side(1), side(2), side(3));
        let row = |r: isize| reflect(r, h) * w;
        let col = |q: usize| reflect(q as isize - 1, w);
        for (q, v) in top.iter().enumerate() {
            dst[row(-1) + col(q)] += v;
        }
        for p in 1..=h {
            dst[(p - 1) * w + col(0)] += left[p];
            dst[(p - 1) * w + col(w + 1)] += right[p];
        }
        for (q, v) in bottom.iter().enumerate() {
            dst[row(h as isize) + col(q)] += v;
        }
    });
}

/// Z[xi][o][t] = (A dY A^T)[xi] for the 2x2 output-gradient tiles of tile
/// rows `i0..i1` of one image dy [O,H,W] (zero past the edges).
#[inline(always)]
fn transform_grad_body(dy: &[f32], o: usize, g: &Geo, (i0, i1): (usize, usize), z: &mut [f32]) {
    let (h, w, tw) = (g.hout, g.wout, g.tw);
    let tc = (i1 - i0) * tw;
    // even/odd columns of the tile row's two output rows, and one row of P.
    let mut eo = vec![0f32; 4 * tw];
    let (mut pe, mut po) = (vec![0f32; tw], vec![0f32; tw]);
    for oi in 0..o {
        let plane = &dy[oi * h * w..][..h * w];
        for i in i0..i1 {
            eo.fill(0.0);
            for a in 0..2 {
                if 2 * i + a < h {
                    let row = &plane[(2 * i + a) * w..][..w];
                    let (e, od) = eo[2 * a * tw..][..2 * tw].split_at_mut(tw);
                    for (j, pair) in row.chunks(2).enumerate() {
                        e[j] = pair[0];
                        od[j] = pair.get(1).copied().unwrap_or(0.0);
                    }
                }
            }
            let (e0, o0) = eo[..2 * tw].split_at(tw);
            let (e1, o1) = eo[2 * tw..].split_at(tw);
            let base = (i - i0) * tw;
            for r in 0..4 {
                // Row r of P = A dY: d0, d0 + d1, d0 - d1, -d1 (even and odd columns).
                for j in 0..tw {
                    (pe[j], po[j]) = match r {
                        0 => (e0[j], o0[j]),
                        1 => (e0[j] + e1[j], o0[j] + o1[j]),
                        2 => (e0[j] - e1[j], o0[j] - o1[j]),
                        _ => (-e1[j], -o1[j]),
                    };
                }
                // Row r of Z = P A^T: p0, p0 + p1, p0 - p1, -p1.
                let at = |k: usize| ((r * 4 + k) * o + oi) * tc + base;
                z[at(0)..][..tw].copy_from_slice(&pe);
                for (d, (e, od)) in z[at(1)..][..tw].iter_mut().zip(pe.iter().zip(&po)) {
                    *d = e + od;
                }
                for (d, (e, od)) in z[at(2)..][..tw].iter_mut().zip(pe.iter().zip(&po)) {
                    *d = e - od;
                }
                for (d, od) in z[at(3)..][..tw].iter_mut().zip(&po) {
                    *d = -od;
                }
            }
        }
    }
}

/// Weight gradient: x [N,C,H,W], dy [N,O,H,W] -> dw [O,C,3,3], as
/// `G^T (sum over tiles of Z[xi] V[xi]^T) G`, the adjoint of the forward pass.
#[allow(clippy::too_many_arguments)]
pub fn conv_grad_weight(
    x: &[f32],
    dy: &[f32],
    n: usize,
    c: usize,
    o: usize,
    h: usize,
    w: usize,
) -> Vec<f32> {
    let g = Geo::new(h, w, Pad::Reflect1, Tile::F2);
    let chunks = chunks(n, c, o, &g);
    let max_tc = max_tiles(&chunks, &g);
    let partial: Vec<Vec<f32>> = per_thread(&chunks)
        .into_par_iter()
        .map(|run| {
            let mut du = vec![0f32; 16 * o * c];
            with_scratch(16 * c * max_tc, 16 * o * max_tc, |v, z| {
                for (ni, (i0, i1)) in run {
                    let tc = (i1 - i0) * g.tw;
                    transform_input(&x[ni * c * h * w..][..c * h * w], c, &g, (i0, i1), v);
                    transform_grad(&dy[ni * o * h * w..][..o * h * w], o, &g, (i0, i1), z);
                    for xi in 0..16 {
                        // dU[xi] (o x c) += Z[xi] (o x tc) * V[xi]^T (tc x c)
                        // SAFETY: the three views lie inside `z`, `v` and `du`.
                        unsafe {
                            matmul(
                                (o, c, tc),
                                (du.as_mut_ptr().add(xi * o * c), c),
                                true,
                                (z.as_ptr().add(xi * o * tc), tc, 1),
                                (v.as_ptr().add(xi * c * tc), 1, tc),
                                gemm::Parallelism::None,
                            );
                        }
                    }
                }
            });
            du
        })
        .collect();
    let mut du = vec![0f32; 16 * o * c];
    for p in &partial {
        du.iter_mut().zip(p).for_each(|(d, s)| *d += s);
    }
    // dw = G^T dU G for each (o, c).
    let mut dw = vec![0f32; o * c * 9];
    for (oc, k) in dw.chunks_exact_mut(9).enumerate() {
        let d = |xi: usize| du[xi * o * c + oc];
        // q = G^T dU (3x4)
        let q: [[f32; 4]; 3] = std::array::from_fn(|y| {
            std::array::from_fn(|col| {
                let (d0, d1, d2, d3) = (d(col), d(4 + col), d(8 + col), d(12 + col));
                match y {
                    0 => d0 + 0.5 * (d1 + d2),
                    1 => 0.5 * (d1 - d2),
                    _ => 0.5 * (d1 + d2) + d3,
                }
            })
        });
        for (y, q) in q.iter().enumerate() {
            k[y * 3] = q[0] + 0.5 * (q[1] + q[2]);
            k[y * 3 + 1] = 0.5 * (q[1] - q[2]);
            k[y * 3 + 2] = 0.5 * (q[1] + q[2]) + q[3];
        }
    }
    dw
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 16777216.0
                    - 0.5
            })
            .collect()
    }

    /// The versions `widest_simd!` picks between (here: whatever this CPU has)
    /// give the baseline build's results bit for bit, on odd shapes and both pads.
    #[test]
    fn simd_versions_of_the_transforms_are_bit_identical() {
        for &(c, h, w, pad) in &[
            (3, 7, 9, Pad::Reflect1),
            (5, 6, 11, Pad::Zero2),
            (4, 9, 12, Pad::Zero1),
            (2, 33, 40, Pad::Reflect1),
        ] {
            let g = Geo::new(h, w, pad, Tile::F2);
            let rows = (1, g.th);
            let tc = (rows.1 - rows.0) * g.tw;
            let x = noise(c * h * w, 1);
            let (mut a, mut b) = (vec![0f32; 16 * c * tc], vec![0f32; 16 * c * tc]);
            transform_input(&x, c, &g, rows, &mut a);
            transform_input_body(&x, c, &g, rows, &mut b);
            assert_eq!(a, b, "input transform, {c}x{h}x{w}");

            let m = noise(16 * c * tc, 2);
            let bias = noise(c, 3);
            let (mut a, mut b) = (
                vec![0f32; c * g.hout * g.wout],
                vec![0f32; c * g.hout * g.wout],
            );
            transform_output(&m, c, &g, rows, Some(&bias), true, &mut a);
            transform_output_body(&m, c, &g, rows, Some(&bias), true, &mut b);
            assert_eq!(a, b, "output transform, {c}x{h}x{w}");

            // F4's transforms, on the same shapes.
            let g4 = Geo::new(h, w, pad, Tile::F4);
            let rows4 = (0, g4.th);
            let tc4 = g4.th * g4.tw;
            let (mut a, mut b) = (vec![0f32; 36 * c * tc4], vec![0f32; 36 * c * tc4]);
            transform_input4(&x, c, &g4, rows4, &mut a);
            f4_input_body(&x, c, &g4, rows4, &mut b);
            assert_eq!(a, b, "F4 input transform, {c}x{h}x{w}");
            let m = noise(36 * c * tc4, 5);
            let (mut a, mut b) = (
                vec![0f32; c * g4.hout * g4.wout],
                vec![0f32; c * g4.hout * g4.wout],
            );
            transform_output4(&m, c, &g4, rows4, Some(&bias), true, &mut a);
            f4_output_body(&m, c, &g4, rows4, Some(&bias), true, &mut b);
            assert_eq!(a, b, "F4 output transform, {c}x{h}x{w}");

            if pad == Pad::Reflect1 {
                let dy = noise(c * h * w, 4);
                let (mut a, mut b) = (vec![0f32; 16 * c * tc], vec![0f32; 16 * c * tc]);
                transform_grad(&dy, c, &g, rows, &mut a);
                transform_grad_body(&dy, c, &g, rows, &mut b);
                assert_eq!(a, b, "gradient transform, {c}x{h}x{w}");
            }
        }
    }
}
