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

/// Keeps freed memory in the process for reuse instead of handing it back to
/// the kernel. glibc serves blocks over 32 MB (a training step's activations)
/// by fresh mmaps and unmaps them when freed, and the kernel zeroes every
/// fresh page: `perf` put 13% of an f32 training step in `clear_page_erms`
/// and 4% in memset. A step frees and allocates the same blocks every time,
/// so with them kept no page is faulted in after the first step. The cost:
/// the process holds on to its high-water mark, and blocks served from one
/// heap fragment a little (`adain bench`, batch 8, 128^2: peak RSS 871 ->
/// 951 MB). So the trainer (and the bench's training step) call this;
/// AdaIN stylization, whose peak memory is a target of its own, does not.
/// Johnson et al.'s network does (`adain stylize --model`, the bench's
/// `johnson_*` rows): its fresh buffers are most of what its forward
/// allocates, and with them kept its peak RSS stayed the same (624 MB at
/// 512^2, 2177 MB at 1024^2) while 1024^2 ran in 3.77 s instead of 4.57 s
/// (`adain bench --only johnson_512,johnson_1024 --johnson-sizes 512,1024
/// --threads 2`, alternated with and without the equivalent GLIBC_TUNABLES).
///
/// It acts on the main thread's heap: glibc still maps large blocks that
/// other threads allocate in their own arenas (a libtest thread showed it);
/// the trainer's tensors are allocated on its main thread. Nothing here is
/// checked by a test: the evidence is the timing and `perf` in
/// docs/performance-notes.md item 14.
///
/// Why not the allocator above: a cache of freed blocks there was tried and
/// gave no clear gain (docs/performance-notes.md item 12); glibc's own free
/// lists do the same job once blocks stay in its heap.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocation policy; both settings
    // are documented (mallopt(3)): no mmap for large blocks, and a trim
    // threshold of -1 never returns the heap's top to the kernel.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
    }
}
