//! The CPU kernels: the fused reflection-pad + 3x3 conv op and its precision
//! switch ([`conv`]), its f32 Winograd kernels ([`winograd`]), its bf16 kernels
//! on Intel AMX ([`amx`]), the chunked im2col kernels of the other kernel
//! sizes and strides ([`im2col`]: Johnson et al.'s 9x9 and stride-2 layers),
//! instance normalisation with its backward ([`norm`]), the training losses'
//! Gram matrices and squared error with theirs ([`loss`]),
//! the allocator ([`alloc`]) and the helpers they all share ([`pad`]). `conv`
//! calls `winograd`, `amx` and `im2col`; they call only `pad` and `alloc`.

/// Defines `$name` to run `$body` compiled for the widest vector unit the CPU
/// has (AVX-512, else AVX2, else the baseline build, which has SSE2 only).
/// Every body given to it computes in a fixed order (the Winograd transforms'
/// adds and subtracts, the norms' interleaved partial sums), so every version
/// gives bit-identical results; only their speed differs (SSE2 ran the
/// input transform at about 11% of a stylization, perf, 2026-11-29).
macro_rules! widest_simd {
    ($name:ident => $body:ident ($($arg:ident : $ty:ty),*) $(-> $ret:ty)?) => {
        #[allow(clippy::too_many_arguments)]
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

pub mod alloc;
pub mod amx;
pub mod conv;
pub mod im2col;
pub mod loss;
pub mod norm;
pub mod pad;
pub mod winograd;
