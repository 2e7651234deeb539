//! bf16 kernels on Intel AMX for the reflection-padded 3x3 convolution: the
//! forward pass, the input gradient and the weight gradient, all with f32
//! accumulation. Used by [`crate::conv`] when `--precision bf16` is chosen and
//! the CPU has AMX (checked at run time; everything else keeps the f32 path).
//!
//! Why it is ours: no crate offers AMX matrix tiles (Rust's AMX intrinsics are
//! unstable, so the five instructions used here are written as inline asm), and
//! a direct convolution needs no im2col buffer: a 3x3 tap is a pointer shift
//! into the padded input, so each input element is converted to bf16 once.
//!
//! Layout trick ("padded-width domain"): with the input padded to `hp x wp`, an
//! output position `j = y * wp + x` reads input `j + ky * wp + kx` for tap
//! (ky, kx). Positions with `x >= wout` are junk and are dropped (forward) or
//! given a zero gradient (weight gradient). 16 consecutive positions form a tile
//! column block whatever the row boundaries.
//!
//! Tiles: all eight are 16 rows x 64 bytes. `tdpbf16ps C, A, B` computes
//! `C[m][n] += sum_k A[m][2k..2k+2] . B[k][2n..2n+2]` (A: 16x32 bf16, B: 16
//! pairs-of-rows x 16 columns, C: 16x16 f32). The micro-kernel keeps a 2x2 block
//! of C tiles (tmm0-3), two A tiles (tmm4-5) and two B tiles (tmm6-7).

use std::arch::asm;
use std::borrow::Cow;
use std::sync::OnceLock;

use rayon::prelude::*;

pub use super::pad::huge_vec;
use super::pad::{fold_reflection, reflect, Pad};

/// Whether the AMX kernels can run here: the CPU has AMX-BF16 and AMX-TILE and
/// the kernel grants this process the tile data state.
pub fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            let ext = std::arch::x86_64::__cpuid_count(7, 0);
            let (bf16, tile) = (ext.edx & (1 << 22) != 0, ext.edx & (1 << 24) != 0);
            let avx512 = std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw");
            bf16 && tile && avx512 && request_tile_permission()
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        false
    })
}

/// Linux hands out the (8 KB) tile state only on request, once per process.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tile_permission() -> bool {
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    const SYS_ARCH_PRCTL: i64 = 158;
    let ret: i64;
    // SAFETY: a plain syscall with integer arguments; rcx/r11 are clobbered.
    unsafe {
        asm!("syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _, lateout("r11") _,
            options(nostack));
    }
    ret == 0
}

/// f32 -> bf16 bits, rounding to nearest even (as the hardware converters do).
#[inline(always)]
pub fn bf16(x: f32) -> u32 {
    let b = x.to_bits();
    b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16
}

/// The bf16 value as f32 (for tests and for rounding reference data).
pub fn round_bf16(x: f32) -> f32 {
    f32::from_bits(bf16(x) << 16)
}

#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    bf16(lo) | (bf16(hi) << 16)
}

fn round_up(x: usize, m: usize) -> usize {
    x.div_ceil(m) * m
}

/// Geometry of one convolution in the padded-width domain.
#[derive(Clone, Copy)]
struct Geo {
    /// Padded input width: row stride of positions.
    wp: usize,
    /// Output rows and valid columns.
    hout: usize,
    wout: usize,
    /// Output positions computed: hout * wp rounded up to 32.
    npos: usize,
    /// Input positions stored per channel (padded image + slack for the last
    /// tiles' reads past the end).
    plane: usize,
}

impl Geo {
    fn new(h: usize, w: usize, pad: Pad) -> Self {
        let p = pad.size();
        let (hp, wp) = (h + 2 * p, w + 2 * p);
        let (hout, wout) = (hp - 2, wp - 2);
        let npos = round_up(hout * wp, 32);
        let plane = round_up(npos + 2 * wp + 2 + 32, 32);
        debug_assert!(plane >= hp * wp);
        Self {
            wp,
            hout,
            wout,
            npos,
            plane,
        }
    }
    fn hp(&self) -> usize {
        self.hout + 2
    }
    /// Position offset of tap t = ky * 3 + kx.
    fn off(&self, t: usize) -> usize {
        (t / 3) * self.wp + t % 3
    }
}

/// x [N,C,H,W] -> padded planes of channel pairs: u32 [N][C2/2][plane], each
/// u32 the bf16 of channels (2q, 2q+1) at one padded position (the B operand of
/// the forward and input-gradient kernels). Channels from C to C2 are zeros.
/// `g` may cover a slab of rows: padded row `yp` of the planes is padded row
/// `y0 + yp` of the whole image.
#[allow(clippy::too_many_arguments)]
fn pack_channel_pairs(
    x: &[f32],
    n: usize,
    c: usize,
    c2: usize,
    h: usize,
    w: usize,
    pad: Pad,
    g: &Geo,
    y0: usize,
) -> Vec<u32> {
    let half = c2 / 2;
    let mut out = huge_vec(n * half * g.plane);
    let (hw, wp) = (h * w, g.wp);
    let zeros = vec![0f32; w];
    out.par_chunks_mut(g.plane)
        .enumerate()
        .for_each(|(i, dst)| {
            let (ni, q) = (i / half, i % half);
            if 2 * q >= c {
                return;
            }
            let a = &x[(ni * c + 2 * q) * hw..][..hw];
            let b = (2 * q + 1 < c).then(|| &x[(ni * c + 2 * q + 1) * hw..][..hw]);
            let p = pad.size();
            for yp in 0..g.hp() {
                let row = &mut dst[yp * wp..][..wp];
                let Some(sy) = pad.src(y0 + yp, h) else {
                    continue;
                };
                let ra = &a[sy * w..][..w];
                let rb = b.map_or(&zeros[..], |b| &b[sy * w..][..w]);
                for ((d, &va), &vb) in row[p..p + w].iter_mut().zip(ra).zip(rb) {
                    *d = pair(va, vb);
                }
                for xp in (0..p).chain(p + w..wp) {
                    if let Some(sx) = pad.src(xp, w) {
                        row[xp] = pair(ra[sx], rb[sx]);
                    }
                }
            }
        });
    out
}

/// x [N,C,H,W] -> reflection-padded planes, bf16 bits [N][C][plane] (the A
/// operand of the weight-gradient kernel).
fn pack_planes(x: &[f32], n: usize, c: usize, h: usize, w: usize, g: &Geo) -> Vec<u16> {
    let mut out = huge_vec(n * c * g.plane);
    let (hw, wp) = (h * w, g.wp);
    out.par_chunks_mut(g.plane)
        .enumerate()
        .for_each(|(i, dst)| {
            let a = &x[i * hw..][..hw];
            for yp in 0..g.hp() {
                let sy = reflect(yp as isize - 1, h);
                let (row, src) = (&mut dst[yp * wp..][..wp], &a[sy * w..][..w]);
                for (d, &v) in row[1..=w].iter_mut().zip(src) {
                    *d = bf16(v) as u16;
                }
                row[0] = bf16(src[1]) as u16;
                row[w + 1] = bf16(src[w - 2]) as u16;
            }
        });
    out
}

/// dy [N,O,H,W] -> position pairs in the forward's padded-width domain:
/// u32 [N][npos/2][O], each u32 the bf16 of positions (2p, 2p+1) of one channel,
/// zero at junk columns (the B operand of the weight-gradient kernel).
fn pack_position_pairs(dy: &[f32], n: usize, o: usize, h: usize, w: usize, g: &Geo) -> Vec<u32> {
    let half = g.npos / 2;
    let mut out = huge_vec(n * half * o);
    let hw = h * w;
    out.par_chunks_mut(half * o)
        .enumerate()
        .for_each(|(ni, dst)| {
            let img = &dy[ni * o * hw..][..o * hw];
            let at = |ch: usize, j: usize| -> f32 {
                let (y, x) = (j / g.wp, j % g.wp);
                if y < h && x < w {
                    img[ch * hw + y * w + x]
                } else {
                    0.0
                }
            };
            for (pp, row) in dst.chunks_mut(o).enumerate() {
                let j = 2 * pp;
                if j / g.wp >= h {
                    break;
                }
                for (ch, d) in row.iter_mut().enumerate() {
                    *d = pair(at(ch, j), at(ch, j + 1));
                }
            }
        });
    out
}

/// Weights as A tiles: [tap][co/16][ci/32] tiles of 16 x 32 bf16, element
/// (r, e) = `f(co_block * 16 + r, ci_block * 32 + e, tap)`.
fn pack_weight_tiles(
    co: usize,
    ci: usize,
    f: impl Fn(usize, usize, usize) -> f32 + Sync,
) -> Vec<u16> {
    let (ob, cb) = (co / 16, ci / 32);
    let mut out = vec![0u16; 9 * ob * cb * 512];
    out.par_chunks_mut(512).enumerate().for_each(|(i, tile)| {
        let (t, rest) = (i / (ob * cb), i % (ob * cb));
        let (b, k) = (rest / cb, rest % cb);
        for r in 0..16 {
            for e in 0..32 {
                tile[r * 32 + e] = bf16(f(b * 16 + r, k * 32 + e, t)) as u16;
            }
        }
    });
    out
}

/// Tile configuration: palette 1, eight tiles of 16 rows x 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

const CONFIG: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut i = 0;
    while i < 8 {
        c[16 + 2 * i] = 64;
        c[48 + i] = 16;
        i += 1;
    }
    TileConfig(c)
};

macro_rules! tload {
    ($t:literal, $ptr:expr, $stride:expr) => {
        asm!(concat!("tileloadd tmm", $t, ", [{p} + {s}*1]"),
            p = in(reg) $ptr, s = in(reg) $stride, options(nostack, readonly))
    };
}
macro_rules! tstore {
    ($t:literal, $ptr:expr, $stride:expr) => {
        asm!(concat!("tilestored [{p} + {s}*1], tmm", $t),
            p = in(reg) $ptr, s = in(reg) $stride, options(nostack))
    };
}

/// Runs `f` with the tile configuration loaded on this thread.
fn with_tiles<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: `available()` was checked by the caller (all entry points assert
    // it); the config is a valid palette-1 layout.
    unsafe { asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly)) };
    let r = f();
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
    r
}

/// Where the micro-kernel's four C tiles (i = output block, j = strip: tile
/// `2 * i + j`) start from and go to: pointer and row stride in bytes.
struct CTiles {
    init: Option<([*const u8; 4], [usize; 4])>,
    out: [*mut u8; 4],
    stride: [usize; 4],
}

/// 2x2 block micro-kernel: C(i, j) (+)= sum over steps s of A(s, i) . B(s, j),
/// with the tile pointers `a0[i] + steps[s].0`, `b0[j] + steps[s].1`.
///
/// # Safety
/// Tiles configured; every pointer valid for 16 rows of 64 bytes at its stride.
#[inline(always)]
unsafe fn block2x2(
    steps: &[(usize, usize)],
    a0: [*const u8; 2],
    sa: usize,
    b0: [*const u8; 2],
    sb: usize,
    c: &CTiles,
) {
    match c.init {
        Some((p, st)) => {
            tload!("0", p[0], st[0]);
            tload!("1", p[1], st[1]);
            tload!("2", p[2], st[2]);
            tload!("3", p[3], st[3]);
        }
        None => asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        ),
    }
    for &(da, db) in steps {
        tload!("4", a0[0].add(da), sa);
        tload!("6", b0[0].add(db), sb);
        asm!("tdpbf16ps tmm0, tmm4, tmm6", options(nostack, nomem));
        tload!("7", b0[1].add(db), sb);
        asm!("tdpbf16ps tmm1, tmm4, tmm7", options(nostack, nomem));
        tload!("5", a0[1].add(da), sa);
        asm!(
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            options(nostack, nomem)
        );
    }
    tstore!("0", c.out[0], c.stride[0]);
    tstore!("1", c.out[1], c.stride[1]);
    tstore!("2", c.out[2], c.stride[2]);
    tstore!("3", c.out[3], c.stride[3]);
}

/// One strip of 16 output positions: where its input starts (position in the
/// padded plane), and where its 16 outputs go (`Some(offset)` into the output
/// plane when all 16 are valid, else through a scratch tile: `(offset, valid)`).
#[derive(Clone, Copy)]
struct Strip {
    input: usize,
    out: usize,
    valid: usize,
}

fn strips(g: &Geo) -> Vec<Strip> {
    let mut v = Vec::with_capacity(g.hout * g.wout.div_ceil(16) + 1);
    for y in 0..g.hout {
        for x in (0..g.wout).step_by(16) {
            v.push(Strip {
                input: y * g.wp + x,
                out: y * g.wout + x,
                valid: (g.wout - x).min(16),
            });
        }
    }
    if v.len() % 2 == 1 {
        // A dummy partner for the last strip: computed, never written.
        v.push(Strip {
            input: 0,
            out: 0,
            valid: 0,
        });
    }
    v
}

/// Where [`direct_conv`] writes: output (n, co, position p) goes to
/// `buf[(n * co_total + co) * plane + offset + p]`, so a slab of rows lands in
/// place in the whole output.
struct Dest<'a> {
    buf: &'a mut [f32],
    plane: usize,
    offset: usize,
}

/// out[n][co][y][x] = bias[co] + sum over ci, taps of A(co, ci, tap) x(n, ci,
/// (y + ky) * wp + x + kx), then ReLU if asked. `xp` from [`pack_channel_pairs`],
/// `wt` from [`pack_weight_tiles`].
#[allow(clippy::too_many_arguments)]
fn direct_conv(
    xp: &[u32],
    wt: &[u16],
    n: usize,
    ci: usize,
    co: usize,
    g: &Geo,
    bias: Option<&[f32]>,
    relu: bool,
    dest: Dest,
) {
    assert!(available() && ci.is_multiple_of(32) && co.is_multiple_of(32));
    let (cb, ob) = (ci / 32, co / 16);
    let hw = g.hout * g.wout;
    assert!(dest.plane >= dest.offset + hw && dest.buf.len() >= n * co * dest.plane);
    // The K loop: for each tap and block of 32 input channels, the byte offsets
    // of its A tile (within one output block's weights) and its B tile.
    let steps: Vec<(usize, usize)> = (0..9)
        .flat_map(|t| (0..cb).map(move |k| (t, k)))
        .map(|(t, k)| ((t * ob * cb + k) * 1024, (k * 16 * g.plane + g.off(t)) * 4))
        .collect();
    // Bias as C tiles to start from (16 rows, each one channel's bias).
    let bias_tiles: Vec<f32> = match bias {
        Some(b) => b.iter().flat_map(|&v| [v; 16]).collect(),
        None => Vec::new(),
    };
    let strips = strips(g);
    // Work unit: one image, one band of strips, all output channels (the band's
    // input stays in L2 while the weights stream).
    const BAND: usize = 16;
    let bands = strips.len().div_ceil(BAND);
    let out_ptr = dest.buf.as_mut_ptr() as usize + dest.offset * 4;
    let out_plane = dest.plane * 4;
    (0..n * bands).into_par_iter().for_each(|u| {
        let (ni, band) = (u / bands, u % bands);
        let band = &strips[band * BAND..((band + 1) * BAND).min(strips.len())];
        let x0 = xp.as_ptr() as usize + ni * (ci / 2) * g.plane * 4;
        let mut scratch = [[0f32; 256]; 4];
        with_tiles(|| {
            // K blocking: the weight tiles of KC steps (2 KB each) stay near L1
            // while every strip pair of the band runs them; partial sums wait in
            // `acc` between blocks.
            const KC: usize = 24;
            let nchunks = steps.len().div_ceil(KC);
            let mut acc = vec![[[0f32; 256]; 4]; band.len() / 2];
            for op in 0..ob / 2 {
                let a0 =
                    [0, 1].map(|i| (wt.as_ptr() as usize + (2 * op + i) * cb * 1024) as *const u8);
                let chan0 = out_ptr + (ni * co + op * 32) * out_plane;
                for (kc, chunk) in steps.chunks(KC).enumerate() {
                    let last = kc + 1 == nchunks;
                    for (pi, pair) in band.chunks_exact(2).enumerate() {
                        let b0 = [0, 1].map(|j| (x0 + pair[j].input * 4) as *const u8);
                        let partial = acc[pi].each_mut().map(|t| t.as_mut_ptr() as *mut u8);
                        let mut c = CTiles {
                            init: None,
                            out: partial,
                            stride: [64; 4],
                        };
                        if kc > 0 {
                            c.init = Some((partial.map(|p| p as *const u8), [64; 4]));
                        } else if !bias_tiles.is_empty() {
                            let p = [0, 1].map(|i| {
                                bias_tiles[(op * 32 + i * 16) * 16..].as_ptr() as *const u8
                            });
                            c.init = Some(([p[0], p[0], p[1], p[1]], [64; 4]));
                        }
                        if last {
                            for (t, tile) in scratch.iter_mut().enumerate() {
                                let (i, j) = (t / 2, t % 2);
                                if pair[j].valid == 16 {
                                    c.out[t] =
                                        (chan0 + i * 16 * out_plane + pair[j].out * 4) as *mut u8;
                                    c.stride[t] = out_plane;
                                } else {
                                    c.out[t] = tile.as_mut_ptr() as *mut u8;
                                    c.stride[t] = 64;
                                }
                            }
                        }
                        // SAFETY: tiles configured; B reads stay inside the padded
                        // planes (plane covers every strip + 2 wp + 2 + 16), A inside
                        // the weight tiles, C reads/writes inside acc, out or scratch.
                        unsafe { block2x2(chunk, a0, 64, b0, g.plane * 4, &c) };
                        if !last {
                            continue;
                        }
                        for (t, tile) in scratch.iter().enumerate() {
                            let (i, j) = (t / 2, t % 2);
                            let valid = pair[j].valid;
                            if valid == 16 {
                                if relu {
                                    for r in 0..16 {
                                        // SAFETY: the 16 values just stored by the tile.
                                        let row = unsafe {
                                            std::slice::from_raw_parts_mut(
                                                c.out[t].add(r * out_plane) as *mut f32,
                                                16,
                                            )
                                        };
                                        row.iter_mut().for_each(|v| *v = v.max(0.0));
                                    }
                                }
                            } else if valid > 0 {
                                for r in 0..16 {
                                    let dst = chan0
                                        + i * 16 * out_plane
                                        + r * out_plane
                                        + pair[j].out * 4;
                                    // SAFETY: `valid` positions of this output row.
                                    let row = unsafe {
                                        std::slice::from_raw_parts_mut(dst as *mut f32, valid)
                                    };
                                    for (d, v) in row.iter_mut().zip(&tile[r * 16..]) {
                                        *d = if relu { v.max(0.0) } else { *v };
                                    }
                                }
                            }
                        }
                    }
                }
            }
        })
    });
}

/// Input gradient: dy [N,O,H,W], weight [O,C,3,3] -> dx [N,C,H,W]. The
/// gradient of the padded input is a full correlation of dy with the flipped,
/// transposed kernel (dy zero-padded by 2); the reflection is then folded back.
fn conv_grad_input32(
    dy: &[f32],
    n: usize,
    o: usize,
    h: usize,
    w: usize,
    weight: &[f32],
    c: usize,
) -> Vec<f32> {
    let g = Geo::new(h, w, Pad::Zero2);
    let yp = pack_channel_pairs(dy, n, o, o, h, w, Pad::Zero2, &g, 0);
    let wt = pack_weight_tiles(c, o, |ic, oc, t| weight[(oc * c + ic) * 9 + (8 - t)]);
    let plane = g.hout * g.wout;
    let mut padded = vec![0f32; n * c * plane];
    let dest = Dest {
        buf: &mut padded,
        plane,
        offset: 0,
    };
    direct_conv(&yp, &wt, n, o, c, &g, None, false, dest);
    fold_reflection(&padded, n * c, h, w)
}

/// `x` [N][C][HW] with zero channels appended up to `c2` (borrowed if C = c2).
fn pad_channels(x: &[f32], n: usize, c: usize, c2: usize, hw: usize) -> Cow<'_, [f32]> {
    if c == c2 {
        return Cow::Borrowed(x);
    }
    let mut out = vec![0f32; n * c2 * hw];
    for ni in 0..n {
        out[ni * c2 * hw..][..c * hw].copy_from_slice(&x[ni * c * hw..][..c * hw]);
    }
    Cow::Owned(out)
}

/// The first `c` of `c2` channels of [N][C2][HW] (as is if C = c2).
fn crop_channels(x: Vec<f32>, n: usize, c: usize, c2: usize, hw: usize) -> Vec<f32> {
    if c == c2 {
        return x;
    }
    let mut out = vec![0f32; n * c * hw];
    for ni in 0..n {
        out[ni * c * hw..][..c * hw].copy_from_slice(&x[ni * c2 * hw..][..c * hw]);
    }
    out
}

/// Weights [O][C][9] zero-padded to [O2][C2][9] (borrowed if already so).
fn pad_weight(w: &[f32], o: usize, c: usize, o2: usize, c2: usize) -> Cow<'_, [f32]> {
    if (o, c) == (o2, c2) {
        return Cow::Borrowed(w);
    }
    let mut out = vec![0f32; o2 * c2 * 9];
    for oi in 0..o {
        out[oi * c2 * 9..][..c * 9].copy_from_slice(&w[oi * c * 9..][..c * 9]);
    }
    Cow::Owned(out)
}

/// Bytes of packed input per slab of rows in [`conv_forward`]: the bf16 copy
/// of a large image never exists whole (at 2048^2 with 64 channels it was
/// 0.5 GB, a fifth of stylize's peak memory), at the cost of repacking two
/// halo rows per slab.
const SLAB_BYTES: usize = 64 << 20;

/// Forward: reflection pad 1 + 3x3 conv + bias (+ ReLU). x [N,C,H,W], weight
/// [O,C,3,3], bias [O] -> [N,O,H,W]. Channel counts that are not multiples of
/// 32 (the image's 3) are zero-padded: wasted products, but still faster than
/// the f32 path on such thin matrices. Runs over slabs of rows (see
/// [`SLAB_BYTES`]), each packed and convolved straight into the output.
#[allow(clippy::too_many_arguments)]
pub fn conv_forward(
    x: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    weight: &[f32],
    bias: &[f32],
    o: usize,
    relu: bool,
) -> Vec<f32> {
    let c2 = round_up(c, 32);
    let rows = (SLAB_BYTES / (n * (c2 / 2) * (w + 2) * 4)).clamp(1, h);
    forward_in_slabs(x, n, c, h, w, weight, bias, o, relu, rows)
}

/// [`conv_forward`] over slabs of `rows` output rows.
#[allow(clippy::too_many_arguments)]
fn forward_in_slabs(
    x: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    weight: &[f32],
    bias: &[f32],
    o: usize,
    relu: bool,
    rows: usize,
) -> Vec<f32> {
    let (c2, o2, hw) = (round_up(c, 32), round_up(o, 32), h * w);
    let mut b2 = bias.to_vec();
    b2.resize(o2, 0.0);
    let wt = pack_weight_tiles(o2, c2, |oc, ic, t| {
        if oc < o && ic < c {
            weight[(oc * c + ic) * 9 + t]
        } else {
            0.0
        }
    });
    let mut out = vec![0f32; n * o * hw];
    // Padded output channels (o < o2) go to a slab-sized buffer first.
    let mut tmp = if o2 == o {
        Vec::new()
    } else {
        vec![0f32; n * o2 * rows * w]
    };
    for y0 in (0..h).step_by(rows) {
        let r = rows.min(h - y0);
        let g = Geo::new(r, w, Pad::Reflect1);
        let xp = pack_channel_pairs(x, n, c, c2, h, w, Pad::Reflect1, &g, y0);
        if o2 == o {
            let dest = Dest {
                buf: &mut out,
                plane: hw,
                offset: y0 * w,
            };
            direct_conv(&xp, &wt, n, c2, o2, &g, Some(&b2), relu, dest);
            continue;
        }
        let dest = Dest {
            buf: &mut tmp,
            plane: r * w,
            offset: 0,
        };
        direct_conv(&xp, &wt, n, c2, o2, &g, Some(&b2), relu, dest);
        for ni in 0..n {
            for oc in 0..o {
                out[(ni * o + oc) * hw + y0 * w..][..r * w]
                    .copy_from_slice(&tmp[(ni * o2 + oc) * r * w..][..r * w]);
            }
        }
    }
    out
}

/// Input gradient: dy [N,O,H,W], weight [O,C,3,3] -> dx [N,C,H,W] (any C, O).
pub fn conv_grad_input(
    dy: &[f32],
    n: usize,
    o: usize,
    h: usize,
    w: usize,
    weight: &[f32],
    c: usize,
) -> Vec<f32> {
    let (c2, o2, hw) = (round_up(c, 32), round_up(o, 32), h * w);
    let dx = conv_grad_input32(
        &pad_channels(dy, n, o, o2, hw),
        n,
        o2,
        h,
        w,
        &pad_weight(weight, o, c, o2, c2),
        c2,
    );
    crop_channels(dx, n, c, c2, hw)
}

/// Weight gradient: x [N,C,H,W], dy [N,O,H,W] -> dw [O,C,3,3] (any C, O).
pub fn conv_grad_weight(
    x: &[f32],
    dy: &[f32],
    n: usize,
    c: usize,
    o: usize,
    h: usize,
    w: usize,
) -> Vec<f32> {
    let (c2, o2, hw) = (round_up(c, 32), round_up(o, 32), h * w);
    let dw = conv_grad_weight32(
        &pad_channels(x, n, c, c2, hw),
        &pad_channels(dy, n, o, o2, hw),
        n,
        c2,
        o2,
        h,
        w,
    );
    if (o, c) == (o2, c2) {
        return dw;
    }
    let mut out = vec![0f32; o * c * 9];
    for oi in 0..o {
        out[oi * c * 9..][..c * 9].copy_from_slice(&dw[oi * c2 * 9..][..c * 9]);
    }
    out
}

/// Weight gradient: x [N,C,H,W], dy [N,O,H,W] -> dw [O,C,3,3] =
/// sum over images and positions of dy(o, j) x_pad(c, j + off(tap)).
fn conv_grad_weight32(
    x: &[f32],
    dy: &[f32],
    n: usize,
    c: usize,
    o: usize,
    h: usize,
    w: usize,
) -> Vec<f32> {
    assert!(available() && c.is_multiple_of(32) && o.is_multiple_of(32));
    let g = Geo::new(h, w, Pad::Reflect1);
    let xa = pack_planes(x, n, c, h, w, &g);
    let yb = pack_position_pairs(dy, n, o, h, w, &g);
    // Work unit: one image, one chunk of positions; partial sums per rayon
    // split, accumulated in [tap][C][O] f32 (C rows of O columns).
    const CHUNK: usize = 1024;
    let chunks = g.npos.div_ceil(CHUNK);
    let size = 9 * c * o;
    let (xa0, yb0) = (xa.as_ptr() as usize, yb.as_ptr() as usize);
    // Work units (image, chunk) are split into one contiguous group per thread;
    // each group sums into its own accumulator and the groups are added in
    // order, so the result depends only on the thread count (a resumed training
    // run reproduces an uninterrupted one).
    let units = n * chunks;
    let groups = rayon::current_num_threads().clamp(1, units);
    let partial: Vec<Vec<f32>> = (0..groups)
        .into_par_iter()
        .map(|gi| {
            let mut acc = vec![0f32; size];
            for u in gi * units / groups..(gi + 1) * units / groups {
                let (ni, ch) = (u / chunks, u % chunks);
                let (j0, j1) = (ch * CHUNK, ((ch + 1) * CHUNK).min(g.npos));
                let xn = xa0 + ni * c * g.plane * 2;
                let yn = yb0 + ni * (g.npos / 2) * o * 4;
                let acc_ptr = acc.as_mut_ptr() as usize;
                with_tiles(|| {
                    // K loop over this chunk's positions, 32 at a time.
                    let steps: Vec<(usize, usize)> =
                        (0..(j1 - j0) / 32).map(|s| (64 * s, 64 * s * o)).collect();
                    for t in 0..9 {
                        let off = g.off(t);
                        for cp in 0..c / 32 {
                            for op in 0..o / 32 {
                                let a0 = [0, 1].map(|i| {
                                    (xn + ((cp * 32 + i * 16) * g.plane + j0 + off) * 2)
                                        as *const u8
                                });
                                let b0 = [0, 1].map(|i| {
                                    (yn + ((j0 / 2) * o + op * 32 + i * 16) * 4) as *const u8
                                });
                                let c00 = acc_ptr + ((t * c + cp * 32) * o + op * 32) * 4;
                                let tiles =
                                    [c00, c00 + 64, c00 + 16 * o * 4, c00 + 16 * o * 4 + 64];
                                let ct = CTiles {
                                    init: Some((tiles.map(|p| p as *const u8), [o * 4; 4])),
                                    out: tiles.map(|p| p as *mut u8),
                                    stride: [o * 4; 4],
                                };
                                // SAFETY: tiles configured; A reads inside the
                                // padded planes, B inside npos/2 rows, C inside acc.
                                unsafe { block2x2(&steps, a0, g.plane * 2, b0, o * 4, &ct) };
                            }
                        }
                    }
                });
            }
            acc
        })
        .collect();
    let mut acc = vec![0f32; size];
    for p in &partial {
        acc.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
    // [tap][C][O] -> [O][C][3][3]
    let mut dw = vec![0f32; size];
    for t in 0..9 {
        for ci in 0..c {
            for oi in 0..o {
                dw[(oi * c + ci) * 9 + t] = acc[(t * c + ci) * o + oi];
            }
        }
    }
    dw
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain f64 reference of the padded 3x3 conv on bf16-rounded inputs.
    fn reference(
        x: &[f32],
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        wt: &[f32],
        o: usize,
    ) -> Vec<f64> {
        let mut out = vec![0f64; n * o * h * w];
        for ni in 0..n {
            for oi in 0..o {
                for y in 0..h {
                    for xx in 0..w {
                        let mut s = 0f64;
                        for ci in 0..c {
                            for t in 0..9 {
                                let sy = reflect(y as isize + (t / 3) as isize - 1, h);
                                let sx = reflect(xx as isize + (t % 3) as isize - 1, w);
                                let xv = round_bf16(x[((ni * c + ci) * h + sy) * w + sx]) as f64;
                                s += xv * round_bf16(wt[(oi * c + ci) * 9 + t]) as f64;
                            }
                        }
                        out[((ni * o + oi) * h + y) * w + xx] = s;
                    }
                }
            }
        }
        out
    }

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as f32 * 0.7315 + seed as f32 * 1.3).sin() * 43758.547).fract() - 0.5)
            .collect()
    }

    #[test]
    fn forward_matches_f64_on_bf16_inputs() {
        if !available() {
            eprintln!("no AMX here: skipped");
            return;
        }
        let (n, c, o, h, w) = (2, 32, 64, 5, 19);
        let x = data(n * c * h * w, 1);
        let wt = data(o * c * 9, 2);
        let bias = data(o, 3);
        let got = conv_forward(&x, n, c, h, w, &wt, &bias, o, false);
        let want = reference(&x, n, c, h, w, &wt, o);
        for (i, (g, r)) in got.iter().zip(&want).enumerate() {
            let r = r + bias[(i / (h * w)) % o] as f64;
            assert!((*g as f64 - r).abs() < 1e-4, "at {i}: {g} vs {r}");
        }
    }

    /// Slabs of rows give the same numbers as one slab (each output sums the
    /// same products in the same order), also for the 3-channel layers whose
    /// channels are zero-padded, batched, with ReLU.
    #[test]
    fn slabs_of_rows_change_nothing() {
        if !available() {
            eprintln!("no AMX here: skipped");
            return;
        }
        for (n, c, o, h, w) in [(2, 3, 64, 7, 21), (1, 64, 3, 9, 17), (2, 32, 32, 6, 33)] {
            let x = data(n * c * h * w, 4);
            let wt = data(o * c * 9, 5);
            let bias = data(o, 6);
            let whole = forward_in_slabs(&x, n, c, h, w, &wt, &bias, o, true, h);
            let want = reference(&x, n, c, h, w, &wt, o);
            for (i, (g, r)) in whole.iter().zip(&want).enumerate() {
                let r = (r + bias[(i / (h * w)) % o] as f64).max(0.0);
                assert!((*g as f64 - r).abs() < 1e-4, "{c}->{o} at {i}: {g} vs {r}");
            }
            for rows in [1, 2, 4] {
                let got = forward_in_slabs(&x, n, c, h, w, &wt, &bias, o, true, rows);
                assert!(got == whole, "{c}->{o}, {h} rows in slabs of {rows}");
            }
        }
    }

    #[test]
    fn gradients_match_f64_on_bf16_inputs() {
        if !available() {
            eprintln!("no AMX here: skipped");
            return;
        }
        let (n, c, o, h, w) = (2, 64, 32, 7, 18);
        let x = data(n * c * h * w, 4);
        let wt = data(o * c * 9, 5);
        let dy = data(n * o * h * w, 6);
        // <dy, conv(x)> is bilinear: its derivatives are the two gradients.
        let mut gx = vec![0f64; x.len()];
        let mut gw = vec![0f64; wt.len()];
        for ni in 0..n {
            for oi in 0..o {
                for y in 0..h {
                    for xx in 0..w {
                        let d = round_bf16(dy[((ni * o + oi) * h + y) * w + xx]) as f64;
                        for ci in 0..c {
                            for t in 0..9 {
                                let sy = reflect(y as isize + (t / 3) as isize - 1, h);
                                let sx = reflect(xx as isize + (t % 3) as isize - 1, w);
                                let xi = ((ni * c + ci) * h + sy) * w + sx;
                                let wi = (oi * c + ci) * 9 + t;
                                gx[xi] += d * round_bf16(wt[wi]) as f64;
                                gw[wi] += d * round_bf16(x[xi]) as f64;
                            }
                        }
                    }
                }
            }
        }
        let got_x = conv_grad_input(&dy, n, o, h, w, &wt, c);
        let got_w = conv_grad_weight(&x, &dy, n, c, o, h, w);
        for (what, got, want) in [("input", &got_x, &gx), ("weight", &got_w, &gw)] {
            assert_eq!(got.len(), want.len());
            for (i, (g, r)) in got.iter().zip(want.iter()).enumerate() {
                assert!(
                    (*g as f64 - r).abs() < 1e-3,
                    "{what} gradient at {i}: {g} vs {r}"
                );
            }
        }
    }
}

#[cfg(test)]
mod timing {
    use super::*;
    use std::time::Instant;

    /// `cargo test --lib amx::timing -- --ignored --nocapture`: where a forward goes.
    #[test]
    #[ignore]
    fn split() {
        if !available() {
            return;
        }
        for (c, o, h) in [
            (64usize, 64usize, 512usize),
            (128, 128, 256),
            (256, 256, 128),
            (512, 256, 64),
        ] {
            let n = 1;
            let x: Vec<f32> = (0..n * c * h * h).map(|i| (i % 7) as f32 * 0.1).collect();
            let wt: Vec<f32> = (0..o * c * 9).map(|i| (i % 5) as f32 * 0.01).collect();
            let g = Geo::new(h, h, Pad::Reflect1);
            for _ in 0..2 {
                let t0 = Instant::now();
                let xp = pack_channel_pairs(&x, n, c, c, h, h, Pad::Reflect1, &g, 0);
                let t1 = Instant::now();
                let wtp = pack_weight_tiles(o, c, |oc, ic, t| wt[(oc * c + ic) * 9 + t]);
                let t2 = Instant::now();
                let mut out = vec![0f32; n * o * h * h];
                let dest = Dest {
                    buf: &mut out,
                    plane: h * h,
                    offset: 0,
                };
                direct_conv(&xp, &wtp, n, c, o, &g, None, true, dest);
                let t3 = Instant::now();
                let t4 = Instant::now();
                let flops = 2.0 * (n * o * c * 9 * h * h) as f64;
                eprintln!(
                    "c{c} o{o} {h}x{h}: pack {:.1} ms, weights {:.1} ms, conv {:.1} ms ({:.0} GFLOP/s), crop {:.1} ms  [{}]",
                    (t1 - t0).as_secs_f64() * 1e3,
                    (t2 - t1).as_secs_f64() * 1e3,
                    (t3 - t2).as_secs_f64() * 1e3,
                    flops / (t3 - t2).as_secs_f64() / 1e9,
                    (t4 - t3).as_secs_f64() * 1e3,
                    out.len()
                );
            }
        }
    }
}
