//! The binaries' global allocator: the system allocator, plus transparent huge
//! pages for large blocks.
//!
//! Why it is ours: activations of a 512x512 image are 64 MB tensors, allocated
//! and freed per layer; glibc serves them with fresh mmaps, so every run pays a
//! page fault per 4 KB (measured: ~15% of a bf16 stylization in the kernel's
//! fault path). Asking for 2 MB pages on those blocks cuts the faults 512-fold
//! and the TLB misses of the strided tile loads with them. A general-purpose
//! crate (mimalloc, jemalloc) would bring a C build for what is one `madvise`.

use std::alloc::{GlobalAlloc, Layout, System};

pub struct HugePageAlloc;

/// Blocks from this size get huge-page advice.
const LARGE: usize = 4 << 20;

/// Asks for 2 MB pages on the whole pages inside `p..p + size` (Linux THP in
/// `madvise` mode; a no-op elsewhere).
pub(crate) fn advise_huge(p: *mut u8, size: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = p as usize;
        let (a, b) = (start.next_multiple_of(HUGE), (start + size) / HUGE * HUGE);
        if b > a {
            // SAFETY: advice on whole pages inside a block we own; it changes
            // how the pages are backed, never their contents.
            unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (p, size);
}

// SAFETY: every call is forwarded to `System` unchanged; the advice only
// affects page backing.
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() && layout.size() >= LARGE {
            advise_huge(p, layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() && layout.size() >= LARGE {
            advise_huge(p, layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        System.dealloc(p, layout)
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = System.realloc(p, layout, new_size);
        if !q.is_null() && new_size >= LARGE {
            advise_huge(q, new_size);
        }
        q
    }
}
