//! The CPU kernels: the fused reflection-pad + 3x3 conv op and its precision
//! switch ([`conv`]), its f32 Winograd kernels ([`winograd`]), its bf16 kernels
//! on Intel AMX ([`amx`]), the chunked im2col kernels of the other kernel
//! sizes and strides ([`im2col`]: Johnson et al.'s 9x9 and stride-2 layers),
//! instance normalisation with its backward ([`norm`]),
//! the allocator ([`alloc`]) and the helpers they all share ([`pad`]). `conv`
//! calls `winograd`, `amx` and `im2col`; they call only `pad` and `alloc`.

pub mod alloc;
pub mod amx;
pub mod conv;
pub mod im2col;
pub mod norm;
pub mod pad;
pub mod winograd;
