//! The CPU kernels: the fused reflection-pad + 3x3 conv op and its precision
//! switch ([`conv`]), its f32 Winograd kernels ([`winograd`]), its bf16 kernels
//! on Intel AMX ([`amx`]), the allocator ([`alloc`]) and the helpers they all
//! share ([`pad`]). `conv` calls `winograd` and `amx`; they call only `pad`
//! and `alloc`.

pub mod alloc;
pub mod amx;
pub mod conv;
pub mod pad;
pub mod winograd;
