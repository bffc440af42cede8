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
//! defaults), which matters for a thread that drives dozens of rings. A burst (a million clients
//! connecting) grows every ring to all of its buffers; [`ReadBufs::trim`] gives their pages
//! back once the ring has gone quiet.

use std::alloc::{self, Layout};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// Buffers handed to the kernel at first, and added each time it ran out.
pub const GROW_STEP: u16 = 8;

/// The page size of every Linux target comet builds for (mincore counts in pages).
const PAGE: usize = 4096;

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
    /// Buffers handed to the caller by completions and not yet recycled.
    out: u32,
    /// A buffer came out since the last [`ReadBufs::trim`].
    used: bool,
    /// The pages were given back and no buffer has come out since.
    released: bool,
    /// Fault injection (see `faults`): while a dry spell lasts (`dry`), the buffers recycled
    /// and held back from the kernel.
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
            out: 0,
            used: false,
            released: false,
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

    /// Buffers handed to the caller and not yet recycled.
    pub fn out(&self) -> u32 {
        self.out
    }

    /// Bytes of the buffers that are resident (mincore): what they cost now.
    pub fn resident(&self) -> io::Result<usize> {
        let pages = self.data_len.div_ceil(PAGE);
        let mut vec = vec![0u8; pages];
        // SAFETY: `data` is page-aligned (mmap) and `data_len` bytes long, owned by `self`;
        // `vec` has one byte per page of that range, as mincore writes.
        let rc = unsafe { libc::mincore(self.data.cast(), self.data_len, vec.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(vec.iter().filter(|&&v| v & 1 != 0).count() * PAGE)
    }

    /// A completion handed a buffer to the caller (counted until [`ReadBufs::recycle`]).
    pub(crate) fn taken(&mut self) {
        self.out += 1;
        self.used = true;
        self.released = false;
    }

    /// Gives the buffers' pages back to the kernel when no buffer came out since the last call
    /// and none is out now (a ring whose connections have gone quiet), once per quiet spell; the
    /// kernel's next reads fault them in again, a page per read. Returns the bytes given back
    /// (0 when it did nothing). Meant for a periodic timer, called when the completion queue
    /// is empty: a posted completion not yet drained may name a buffer it filled.
    pub(crate) fn trim(&mut self) -> usize {
        let used = std::mem::take(&mut self.used);
        if used || self.out > 0 || self.released {
            return 0;
        }
        let len = self.given as usize * self.size as usize;
        // SAFETY: the range lies inside the mapping owned by `self`. No buffer is out, so the
        // caller holds no bytes of it; the kernel writes a buffer only while it completes a recv,
        // which on a single-issuer ring with deferred task work happens inside this thread's own
        // io_uring_enter, never during this call, and the completion queue is empty (the
        // caller's promise). Zero-fill-on-demand pages are what a fresh mapping has anyway.
        let rc = unsafe { libc::madvise(self.data.cast(), len, libc::MADV_DONTNEED) };
        if rc != 0 {
            return 0;
        }
        self.released = true;
        len
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
        self.out = self
            .out
            .checked_sub(1)
            .expect("a read buffer recycled twice");
        #[cfg(feature = "faults")]
        {
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
