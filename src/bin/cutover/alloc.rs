//! The global allocator: mimalloc, called the cheap way for ordinary layouts.
//!
//! The `mimalloc` crate passes every allocation to `mi_malloc_aligned`,
//! whose fast path only serves blocks up to 1 KiB that happen to sit on the
//! right boundary; anything larger (a request's boxed future, a read buffer)
//! takes the generic path and then the over-allocating one. Every mimalloc
//! block is aligned to a machine word, so a layout that asks for no more
//! than that is served by plain `mi_malloc`; only larger alignments take the
//! aligned entry points.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every mimalloc block has: its smallest size classes are
/// one machine word apart.
const WORD: usize = std::mem::size_of::<usize>();

/// mimalloc as the global allocator.
pub struct MiMalloc;

// SAFETY: each method hands the layout's size (and, above a word, its
// alignment) to the matching mimalloc function, which returns a block at
// least that large and that aligned, or null when out of memory; `mi_free`
// and `mi_realloc*` accept any pointer mimalloc returned.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_malloc(layout.size()).cast()
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_zalloc(layout.size()).cast()
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_realloc(ptr.cast(), new_size).cast()
        } else {
            mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every layout comes back aligned as asked, zeroed when asked, and keeps
    /// its bytes through a reallocation, for word and larger alignments,
    /// sizes around the small-block limit and sizes well past it.
    #[test]
    fn blocks_are_aligned_zeroed_and_kept_through_realloc() {
        let a = MiMalloc;
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in [1, 7, 8, 24, 40, 100, 1000, 1024, 1025, 3000, 9000, 70_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: the layout has a non-zero size; each block is freed
                // once with the layout it was (re)allocated with.
                unsafe {
                    let p = a.alloc_zeroed(layout);
                    assert!(!p.is_null(), "alloc_zeroed({size}, {align})");
                    assert_eq!(p as usize % align, 0, "alloc_zeroed({size}, {align})");
                    assert!(std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0));
                    std::ptr::write_bytes(p, 0xA5, size);
                    let grown = size * 3;
                    let q = a.realloc(p, layout, grown);
                    assert!(!q.is_null());
                    assert_eq!(q as usize % align, 0, "realloc({size}→{grown}, {align})");
                    assert!(std::slice::from_raw_parts(q, size)
                        .iter()
                        .all(|&b| b == 0xA5));
                    a.dealloc(q, Layout::from_size_align(grown, align).unwrap());

                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "alloc({size}, {align})");
                    a.dealloc(p, layout);
                }
            }
        }
    }
}
