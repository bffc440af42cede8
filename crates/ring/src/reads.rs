//! The provided buffer ring: read buffers shared by every connection of one ring.
//!
//! The kernel picks a buffer when data arrives (multishot recv), so a connection with nothing
//! to read owns no buffer. The caller looks at the bytes with [`ReadBufs::get`] and hands the
//! buffer back with [`ReadBufs::recycle`] as soon as it has copied or parsed what it needs.
//!
//! The kernel takes buffers in ring order, so every buffer it was ever given is written in
//! turn (and costs its pages) however few reads are in flight. It is given [`GROW_STEP`] at
//! first and that many more each time it runs out ([`ReadBufs::grow`], on an ENOBUFS): a ring
//! whose reads come one at a time touches a few pages, not all of its buffers (256 KiB at the
//! defaults), which matters for a thread that drives dozens of rings.

use std::alloc::{self, Layout};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// Buffers handed to the kernel at first, and added each time it ran out.
pub const GROW_STEP: u16 = 8;

pub struct ReadBufs {
    /// The ring of buffer descriptors shared with the kernel (page-aligned, `count` entries).
    entries: *mut BufRingEntry,
    entries_layout: Layout,
    /// The buffers themselves, `count * size` bytes of an anonymous mapping. Only the kernel
    /// writes them, and a page costs memory only once the kernel has written it: a ring whose
    /// connections read little holds little (the allocator's zeroed or aligned allocations would
    /// touch every page up front, 256 KiB per ring at the defaults).
    data: *mut u8,
    data_len: usize,
    count: u16,
    size: u32,
    /// Our copy of the ring's tail: buffers handed to the kernel so far (wrapping).
    tail: u16,
    /// Buffers `0..given` have been handed to the kernel; the rest never were (untouched).
    given: u16,
    /// Fault injection (see `faults`): buffers handed to the caller and not yet recycled, and
    /// while a dry spell lasts (`dry`), the buffers recycled and held back from the kernel.
    #[cfg(feature = "faults")]
    pub(crate) out: u64,
    #[cfg(feature = "faults")]
    pub(crate) dry: bool,
    #[cfg(feature = "faults")]
    held: Vec<u16>,
}

impl ReadBufs {
    pub(crate) fn new(ring: &IoUring, group: u16, count: u16, size: u32) -> io::Result<ReadBufs> {
        assert!(
            count.is_power_of_two() && count <= 32768,
            "read buffer count"
        );
        assert!(size > 0);
        let entries_layout =
            Layout::from_size_align(count as usize * std::mem::size_of::<BufRingEntry>(), 4096)
                .expect("buffer ring layout");
        let data_len = count as usize * size as usize;
        // SAFETY: the layout has non-zero size (count >= 1).
        let entries = unsafe { alloc::alloc_zeroed(entries_layout) as *mut BufRingEntry };
        assert!(!entries.is_null(), "out of memory for read buffers");
        // SAFETY: a new private anonymous mapping: no pointer is handed in, none is aliased.
        let data = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                data_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if data == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            // SAFETY: allocated above with this layout and not handed to anyone yet.
            unsafe { alloc::dealloc(entries as *mut u8, entries_layout) };
            return Err(e);
        }
        let data = data as *mut u8;
        let mut bufs = ReadBufs {
            entries,
            entries_layout,
            data,
            data_len,
            count,
            size,
            tail: 0,
            given: 0,
            #[cfg(feature = "faults")]
            out: 0,
            #[cfg(feature = "faults")]
            dry: false,
            #[cfg(feature = "faults")]
            held: Vec::new(),
        };
        // SAFETY: `entries` is page-aligned, `count` entries long and owned by `bufs`, which is
        // dropped only after the ring (field order in `Ring`), so the kernel never sees it freed.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, count, group, 0)?;
        }
        bufs.grow();
        Ok(bufs)
    }

    /// Hands [`GROW_STEP`] more buffers to the kernel, if any are left: after a recv found none
    /// (ENOBUFS). True when some were added.
    pub fn grow(&mut self) -> bool {
        let end = self.given.saturating_add(GROW_STEP).min(self.count);
        if end == self.given {
            return false;
        }
        for bid in self.given..end {
            self.put(bid);
        }
        self.given = end;
        self.publish();
        true
    }

    /// Buffers handed to the kernel so far (the rest have never been touched).
    pub fn given(&self) -> u16 {
        self.given
    }

    /// The first `len` bytes of buffer `bid`, which a completion just handed to us.
    pub fn get(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < self.count && len <= self.size as usize);
        // SAFETY: buffer `bid` was returned by the kernel in a completion and is not back in
        // the ring until `recycle`, which needs `&mut self`, so nobody writes it while this
        // borrow lives. The range lies inside the allocation owned by `self`.
        unsafe { std::slice::from_raw_parts(self.data.add(bid as usize * self.size as usize), len) }
    }

    /// Gives buffer `bid` back to the kernel.
    pub fn recycle(&mut self, bid: u16) {
        assert!(bid < self.count);
        #[cfg(feature = "faults")]
        {
            self.out = self
                .out
                .checked_sub(1)
                .expect("a read buffer recycled twice");
            if self.dry {
                self.held.push(bid);
                return;
            }
        }
        self.put(bid);
        self.publish();
    }

    /// Ends a dry spell: the buffers held back go to the kernel.
    #[cfg(feature = "faults")]
    pub(crate) fn end_dry_spell(&mut self) {
        self.dry = false;
        if self.held.is_empty() {
            return;
        }
        for bid in std::mem::take(&mut self.held) {
            self.put(bid);
        }
        self.publish();
    }

    fn put(&mut self, bid: u16) {
        let index = (self.tail & (self.count - 1)) as usize;
        // SAFETY: `index < count`, inside the entries allocation owned by `self`. The kernel only
        // reads entries between its head and our published tail, and this one is past the tail.
        let entry = unsafe { &mut *self.entries.add(index) };
        // SAFETY: the buffer lies inside `data`, owned by `self` and alive as long as the ring.
        entry.set_addr(unsafe { self.data.add(bid as usize * self.size as usize) } as u64);
        entry.set_len(self.size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field overlays the first entry's reserved bytes and is only written
        // by us; the kernel reads it with acquire ordering, so a release store publishes the
        // entries written before it.
        unsafe {
            let tail = BufRingEntry::tail(self.entries) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for ReadBufs {
    fn drop(&mut self) {
        // SAFETY: allocated and mapped in `new` with these sizes; the ring that used them is
        // already closed (it is dropped first), so the kernel holds no reference.
        unsafe {
            alloc::dealloc(self.entries as *mut u8, self.entries_layout);
            libc::munmap(self.data.cast(), self.data_len);
        }
    }
}
