//! What every CPU kernel shares, at the bottom of the kernel folder so that no
//! two kernel files import each other: reflection indices and the padding
//! kinds, the adjoint of reflection padding, buffers backed by huge pages, the
//! f32 view of a candle storage, the one call into the `gemm` crate
//! ([`matmul`]) and the f64 sums in interleaved lanes ([`sum2_f64`]).

use candle_core::{CpuStorage, Layout, Result};
use rayon::prelude::*;

/// A zeroed buffer backed by 2 MB pages where the kernel allows it (Linux
/// transparent huge pages in `madvise` mode): tile loads and stores touch 16
/// rows a plane apart, which with 4 KB pages costs 16 TLB entries per tile
/// (measured: the 64-channel 512x512 forward ran at half speed without this).
pub fn huge_vec<T: Copy + Default>(len: usize) -> Vec<T> {
    let v = vec![T::default(); len];
    crate::alloc::advise_huge(v.as_ptr() as *mut u8, len * std::mem::size_of::<T>());
    v
}

/// Reflection (no edge repeat) of index `i` (may be -1 or n) into 0..n.
#[inline]
pub(crate) fn reflect(i: isize, n: usize) -> usize {
    if i < 0 {
        (-i) as usize
    } else if i as usize >= n {
        2 * n - 2 - i as usize
    } else {
        i as usize
    }
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Pad {
    /// ReflectionPad2d(1): the forward and weight-gradient input.
    Reflect1,
    /// Zero padding of 2: the output gradient, for the AMX input gradient.
    Zero2,
    /// Zero padding of 1: the output gradient, for the interior of the
    /// input gradient (`winograd::conv_grad_input`).
    Zero1,
}

impl Pad {
    pub(crate) fn size(self) -> usize {
        match self {
            Pad::Reflect1 => 1,
            Pad::Zero2 => 2,
            Pad::Zero1 => 1,
        }
    }
    /// Source index of padded index `p` along a side of `n`, if any.
    #[inline]
    pub(crate) fn src(self, p: usize, n: usize) -> Option<usize> {
        match self {
            Pad::Reflect1 => Some(reflect(p as isize - 1, n)),
            Pad::Zero2 => (p >= 2 && p - 2 < n).then(|| p - 2),
            Pad::Zero1 => (p >= 1 && p - 1 < n).then(|| p - 1),
        }
    }
}

/// Adjoint of ReflectionPad2d(1): [P][H+2][W+2] -> [P][H][W], each padded
/// pixel's gradient added to the pixel it was copied from.
pub(crate) fn fold_reflection(padded: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
    let (hp, wp) = (h + 2, w + 2);
    let mut out = huge_vec(planes * h * w);
    out.par_chunks_mut(h * w).enumerate().for_each(|(i, dst)| {
        let src = &padded[i * hp * wp..][..hp * wp];
        for y in 0..h {
            dst[y * w..][..w].copy_from_slice(&src[(y + 1) * wp + 1..][..w]);
        }
        for yp in 0..hp {
            let sy = reflect(yp as isize - 1, h);
            let edge_row = yp == 0 || yp == hp - 1;
            for xp in 0..wp {
                if edge_row || xp == 0 || xp == wp - 1 {
                    dst[sy * w + reflect(xp as isize - 1, w)] += src[yp * wp + xp];
                }
            }
        }
    });
    out
}

pub(crate) fn f32_slice<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> Result<&'a [f32]> {
    let v = match storage {
        CpuStorage::F32(v) => v,
        _ => candle_core::bail!("{what}: f32 only"),
    };
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{what}: needs a contiguous input"),
    }
}

/// `dst` (m x n, row stride `dst_rs`) (+)= lhs (m x k) rhs (k x n); each
/// operand (pointer, row stride, column stride). `par`: `None` inside a
/// task that already has its thread, `Rayon` to split one product.
///
/// # Safety
/// The views must lie inside live buffers of the sizes their strides imply.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: (*mut f32, usize),
    accumulate: bool,
    lhs: (*const f32, usize, usize),
    rhs: (*const f32, usize, usize),
    par: gemm::Parallelism,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst.0,
        1,
        dst.1 as isize,
        accumulate,
        lhs.0,
        lhs.2 as isize,
        lhs.1 as isize,
        rhs.0,
        rhs.2 as isize,
        rhs.1 as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        par,
    );
}

/// Independent partial sums: a single f64 accumulator is one long dependency
/// chain (an add's latency per value); eight of them vectorise.
pub(crate) const LANES: usize = 8;

/// The f64 sum of `f` over a plane's values, in [`LANES`] interleaved
/// partial sums (value i into partial sum i % LANES, the partials added in
/// order).
#[inline(always)]
pub(crate) fn sum_f64(p: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    // the unused second sum is dead code to the compiler
    sum2_f64([p], |[v]| (f(v), 0.0)).0
}

/// Two sums over `S` planes of one length, read together value by value, in
/// one pass, each in [`LANES`] interleaved partial sums of its own, so each
/// is what a lone [`sum_f64`] of its terms gives, to the bit: the backward's
/// two sums read the same gradient and mask once. The planes are walked in
/// blocks of `LANES` (`as_chunks`), so the compiler sees every read in
/// bounds and keeps the partial sums in one vector register: indexed by
/// position, the reads were bounds-checked one by one and the loop stayed
/// scalar (perf: the norm backward at ~6% of a Johnson training step).
/// Used by the instance norm (`norm`) and the squared error (`loss`).
#[inline(always)]
pub(crate) fn sum2_f64<const S: usize>(
    planes: [&[f32]; S],
    f: impl Fn([f32; S]) -> (f64, f64),
) -> (f64, f64) {
    let n = planes.first().map_or(0, |p| p.len());
    assert!(planes.iter().all(|p| p.len() == n), "planes of one length");
    let blocks: [(&[[f32; LANES]], &[f32]); S] = planes.map(|p| p.as_chunks::<LANES>());
    let (mut a, mut b) = ([0f64; LANES], [0f64; LANES]);
    for k in 0..n / LANES {
        let block: [&[f32; LANES]; S] = std::array::from_fn(|s| &blocks[s].0[k]);
        for j in 0..LANES {
            let (u, v) = f(std::array::from_fn(|s| block[s][j]));
            a[j] += u;
            b[j] += v;
        }
    }
    for j in 0..n % LANES {
        let (u, v) = f(std::array::from_fn(|s| blocks[s].1[j]));
        a[j] += u;
        b[j] += v;
    }
    (a.iter().sum(), b.iter().sum())
}
