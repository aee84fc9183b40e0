//! A growable byte buffer whose start is aligned for O_DIRECT, usable as a monoio `IoBuf`.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

use crate::options::DIRECT_IO_ALIGN_BYTES;
use crate::record::RecordSink;

/// Heap buffer aligned to [`DIRECT_IO_ALIGN_BYTES`]. Capacity is always a multiple of the
/// alignment so padding a batch to a block boundary never needs a reallocation of its own.
pub(crate) struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    cap: usize,
}

// The buffer owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    pub(crate) fn with_capacity(cap: usize) -> AlignedBuf {
        let mut b = AlignedBuf {
            ptr: NonNull::dangling(),
            len: 0,
            cap: 0,
        };
        b.reserve(cap.max(DIRECT_IO_ALIGN_BYTES));
        b
    }

    fn layout(cap: usize) -> Layout {
        // Alignment is a constant power of two and capacities stay far below isize::MAX
        // (bounded by batch_bytes_max), so this cannot fail.
        Layout::from_size_align(cap, DIRECT_IO_ALIGN_BYTES).expect("valid aligned layout")
    }

    pub(crate) fn reserve(&mut self, additional: usize) {
        let need = self.len + additional;
        if need <= self.cap {
            return;
        }
        let new_cap = need
            .max(self.cap * 2)
            .div_ceil(DIRECT_IO_ALIGN_BYTES)
            .max(1)
            * DIRECT_IO_ALIGN_BYTES;
        let layout = Self::layout(new_cap);
        // SAFETY: layout has non-zero size.
        let p = unsafe { alloc::alloc_zeroed(layout) };
        let Some(p) = NonNull::new(p) else {
            alloc::handle_alloc_error(layout)
        };
        if self.cap > 0 {
            // SAFETY: both regions are valid for `len` bytes and do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), p.as_ptr(), self.len);
                alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.cap));
            }
        }
        self.ptr = p;
        self.cap = new_cap;
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    #[cfg(test)]
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: the first `len` bytes are initialised (allocation is zeroed, writes go
        // through put/put_zeros).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl RecordSink for AlignedBuf {
    fn put(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        // SAFETY: reserve made room for bytes.len() more bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.as_ptr().add(self.len),
                bytes.len(),
            );
        }
        self.len += bytes.len();
    }

    fn put_zeros(&mut self, n: usize) {
        self.reserve(n);
        // SAFETY: reserve made room for n more bytes.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(self.len), 0, n) };
        self.len += n;
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.cap > 0 {
            // SAFETY: allocated in reserve with this exact layout.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.cap)) };
        }
    }
}

// SAFETY: the pointer stays valid and unmoved for the buffer's life (moving the struct does
// not move the heap allocation), and `bytes_init` bytes from it are initialised.
unsafe impl monoio::buf::IoBuf for AlignedBuf {
    fn read_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_keeps_contents_and_alignment() {
        let mut b = AlignedBuf::with_capacity(10);
        for i in 0..10_000u32 {
            b.put(&i.to_le_bytes());
        }
        b.put_zeros(3);
        assert_eq!(b.len(), 40_003);
        assert_eq!(b.as_slice().as_ptr() as usize % DIRECT_IO_ALIGN_BYTES, 0);
        assert_eq!(&b.as_slice()[4 * 9999..4 * 10_000], &9999u32.to_le_bytes());
        b.clear();
        assert_eq!(b.len(), 0);
    }
}
