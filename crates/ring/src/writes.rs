//! Write buffers: a pool of byte vectors, each either open for appending or frozen while the
//! kernel sends from it.
//!
//! A connection with nothing to send holds no buffer. Typically a connection holds one frozen
//! buffer (in flight) and appends later messages to a second one, which becomes the next send.
//! Freed buffers are kept for reuse up to a bound, and oversized ones shrink when freed.
//! [`WriteBufs::trim`], called on a timer, gives back the capacity of the free buffers the
//! last period did not need, so the pool follows the load down after a burst instead of
//! keeping its high-water mark for ever (a slow climb that a 24-hour soak shows as a slope).

use std::num::NonZeroU32;

/// A handle to one buffer of the pool. Copyable; the pool checks its use (frozen or not).
/// Stored as index + 1 so that `Option<WBuf>` is 4 bytes in a connection slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WBuf(NonZeroU32);

impl WBuf {
    fn new(index: u32) -> WBuf {
        WBuf(NonZeroU32::new(index + 1).expect("write buffer index"))
    }
    fn index(self) -> usize {
        self.0.get() as usize - 1
    }
}

struct Slot {
    data: Vec<u8>,
    /// Bytes of `data` already sent.
    sent: usize,
    /// True exactly when a send from this buffer is in flight.
    frozen: bool,
    /// True while the buffer is handed out (not on the free list).
    used: bool,
    /// Byte ranges of `data` that are records (messages) the owner may drop as a whole,
    /// oldest first; bytes outside them (a response head, a heartbeat) are never dropped.
    records: Vec<(u32, u32)>,
}

/// Buffers kept on the free list at most; more are released to the allocator.
const FREE_KEPT_MAX: usize = 1024;
/// Capacity a freed buffer keeps at most, so one burst does not pin memory for ever.
const FREE_CAPACITY_MAX: usize = 16 * 1024;

#[derive(Default)]
pub struct WriteBufs {
    slots: Vec<Slot>,
    /// Free buffers that keep their capacity, most recently freed last (reused first).
    free: Vec<u32>,
    /// Free buffers that hold no memory (trimmed, or freed past [`FREE_KEPT_MAX`]).
    bare: Vec<u32>,
    /// The fewest entries `free` had since the last trim: its oldest `free_low` entries were
    /// not needed during the period.
    free_low: usize,
    /// Buffers handed out now (used).
    used: usize,
}

/// What is left after a send completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// Everything was sent; the buffer is free again (and its handle invalid).
    All,
    /// A short send: the rest must be sent with another `Ring::send` of the same buffer.
    Partial,
}

impl WriteBufs {
    /// An empty buffer, open for appending.
    pub fn alloc(&mut self) -> WBuf {
        self.used += 1;
        let reused = match self.free.pop() {
            Some(index) => {
                self.free_low = self.free_low.min(self.free.len());
                Some(index)
            }
            None => self.bare.pop(),
        };
        if let Some(index) = reused {
            let slot = &mut self.slots[index as usize];
            debug_assert!(!slot.used && slot.data.is_empty());
            slot.used = true;
            return WBuf::new(index);
        }
        let index = u32::try_from(self.slots.len()).expect("write buffer index");
        self.slots.push(Slot {
            data: Vec::new(),
            sent: 0,
            frozen: false,
            used: true,
            records: Vec::new(),
        });
        WBuf::new(index)
    }

    /// The bytes of an open buffer, for appending.
    pub fn get_mut(&mut self, buf: WBuf) -> &mut Vec<u8> {
        let slot = &mut self.slots[buf.index()];
        assert!(slot.used && !slot.frozen, "write buffer is in flight");
        &mut slot.data
    }

    /// Bytes in the buffer not sent yet.
    pub fn unsent(&self, buf: WBuf) -> usize {
        let slot = &self.slots[buf.index()];
        slot.data.len() - slot.sent
    }

    /// Releases a buffer that is not in flight.
    pub fn free(&mut self, buf: WBuf) {
        let slot = &mut self.slots[buf.index()];
        assert!(
            slot.used && !slot.frozen,
            "freeing a write buffer in flight"
        );
        slot.used = false;
        slot.sent = 0;
        slot.data.clear();
        slot.records.clear();
        slot.records.shrink_to(64);
        self.used -= 1;
        if self.free.len() < FREE_KEPT_MAX {
            slot.data.shrink_to(FREE_CAPACITY_MAX);
            self.free.push(buf.index() as u32);
        } else {
            slot.data = Vec::new();
            slot.records = Vec::new();
            self.bare.push(buf.index() as u32);
        }
    }

    /// Gives back the memory of the free buffers that were not needed since the last trim
    /// (the oldest ones on the free list, which no allocation reached), and returns how many.
    /// Meant for a periodic timer: what a burst grew is released one period after it ends.
    pub fn trim(&mut self) -> usize {
        let idle = self.free_low.min(self.free.len());
        for index in self.free.drain(..idle) {
            let slot = &mut self.slots[index as usize];
            slot.data = Vec::new();
            slot.records = Vec::new();
            self.bare.push(index);
        }
        self.free_low = self.free.len();
        idle
    }

    /// Bytes of capacity the free buffers keep for reuse.
    pub fn kept_bytes(&self) -> usize {
        self.free
            .iter()
            .map(|&i| {
                let slot = &self.slots[i as usize];
                slot.data.capacity() + slot.records.capacity() * std::mem::size_of::<(u32, u32)>()
            })
            .sum()
    }

    /// Marks `data[start..]` of an open buffer, just appended, as one record.
    pub fn mark_record(&mut self, buf: WBuf, start: usize) {
        let slot = &mut self.slots[buf.index()];
        assert!(slot.used && !slot.frozen && start <= slot.data.len());
        let range = (to_u32(start), to_u32(slot.data.len()));
        slot.records.push(range);
    }

    /// Records in the buffer (a frozen buffer keeps counting its records until it is freed).
    pub fn records(&self, buf: WBuf) -> usize {
        self.slots[buf.index()].records.len()
    }

    /// Removes the `n` oldest records of an open buffer (all if fewer) and returns the bytes
    /// removed. O(buffer length): callers drop in batches.
    pub fn drop_records(&mut self, buf: WBuf, n: usize) -> usize {
        let slot = &mut self.slots[buf.index()];
        assert!(slot.used && !slot.frozen, "write buffer is in flight");
        let n = n.min(slot.records.len());
        let mut write = slot.records.first().map_or(0, |r| r.0 as usize);
        let mut read = write;
        let mut removed = 0;
        for &(start, end) in &slot.records[..n] {
            let (start, end) = (start as usize, end as usize);
            // Keep what lies between records (non-record frames).
            slot.data.copy_within(read..start, write);
            write += start - read;
            read = end;
            removed += end - start;
        }
        let tail = slot.data.len();
        slot.data.copy_within(read..tail, write);
        slot.data.truncate(tail - removed);
        slot.records.drain(..n);
        let shift = to_u32(removed);
        for r in &mut slot.records {
            *r = (r.0 - shift, r.1 - shift);
        }
        removed
    }

    /// Buffers handed out now.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Marks the buffer in flight and returns the unsent range for the kernel.
    pub(crate) fn freeze(&mut self, buf: WBuf) -> (*const u8, u32) {
        let slot = &mut self.slots[buf.index()];
        assert!(slot.used && !slot.frozen, "two sends from one write buffer");
        assert!(slot.sent < slot.data.len(), "sending an empty write buffer");
        slot.frozen = true;
        let unsent = &slot.data[slot.sent..];
        let len = u32::try_from(unsent.len()).expect("write buffer over 4 GiB");
        (unsent.as_ptr(), len)
    }

    /// Records the result of the send from `buf`: `sent` bytes (>= 0). Frees the buffer when
    /// everything was sent.
    pub fn complete(&mut self, buf: WBuf, sent: usize) -> Sent {
        let slot = &mut self.slots[buf.index()];
        assert!(
            slot.used && slot.frozen,
            "completion for a write buffer not in flight"
        );
        slot.frozen = false;
        slot.sent += sent;
        assert!(slot.sent <= slot.data.len());
        if slot.sent == slot.data.len() {
            self.free(buf);
            Sent::All
        } else {
            Sent::Partial
        }
    }

    /// Ends a send that failed or was cancelled: the buffer is unfrozen and freed.
    pub fn abort(&mut self, buf: WBuf) {
        let slot = &mut self.slots[buf.index()];
        assert!(
            slot.used && slot.frozen,
            "abort for a write buffer not in flight"
        );
        slot.frozen = false;
        self.free(buf);
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).expect("write buffer over 4 GiB")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_records_are_dropped_and_the_rest_kept() {
        let mut bufs = WriteBufs::default();
        let b = bufs.alloc();
        let append = |bufs: &mut WriteBufs, bytes: &[u8], record: bool| {
            let start = bufs.get_mut(b).len();
            bufs.get_mut(b).extend_from_slice(bytes);
            if record {
                bufs.mark_record(b, start);
            }
        };
        append(&mut bufs, b"HEAD|", false);
        append(&mut bufs, b"m1|", true);
        append(&mut bufs, b"beat|", false);
        append(&mut bufs, b"m2|", true);
        append(&mut bufs, b"m3|", true);
        assert_eq!(bufs.records(b), 3);
        assert_eq!(bufs.drop_records(b, 2), 6);
        assert_eq!(bufs.get_mut(b).as_slice(), b"HEAD|beat|m3|");
        assert_eq!(bufs.records(b), 1);
        append(&mut bufs, b"m4|", true);
        assert_eq!(bufs.drop_records(b, 1), 3);
        assert_eq!(bufs.get_mut(b).as_slice(), b"HEAD|beat|m4|");
        assert_eq!(bufs.drop_records(b, 5), 3);
        assert_eq!(bufs.get_mut(b).as_slice(), b"HEAD|beat|");
        assert_eq!(bufs.drop_records(b, 1), 0);
        bufs.free(b);
        let again = bufs.alloc();
        assert_eq!(bufs.records(again), 0);
    }

    #[test]
    fn trim_releases_what_the_last_period_did_not_need() {
        let mut bufs = WriteBufs::default();
        // A burst: 10 buffers of 1000 bytes at once, then all freed.
        let burst: Vec<WBuf> = (0..10).map(|_| bufs.alloc()).collect();
        for &b in &burst {
            bufs.get_mut(b).extend_from_slice(&[7; 1000]);
        }
        for &b in &burst {
            bufs.free(b);
        }
        assert!(bufs.kept_bytes() >= 10_000);
        // The first trim closes the burst's period (which needed them all).
        assert_eq!(bufs.trim(), 0);
        // A quiet period: two buffers at a time.
        for _ in 0..5 {
            let (a, b) = (bufs.alloc(), bufs.alloc());
            bufs.get_mut(a).push(1);
            bufs.free(a);
            bufs.free(b);
        }
        assert_eq!(
            bufs.trim(),
            8,
            "the 8 buffers the quiet period never reached go"
        );
        assert!(bufs.kept_bytes() <= 2 * 1000 + 2 * 64 * 8);
        assert_eq!(bufs.trim(), 2, "nothing allocated since: the rest goes too");
        assert_eq!(bufs.kept_bytes(), 0);
        // Trimmed buffers are reused before new ones are made.
        let again: Vec<WBuf> = (0..10).map(|_| bufs.alloc()).collect();
        assert!(again.iter().all(|b| b.index() < 10));
        assert_eq!(bufs.used(), 10);
        assert!(again.iter().all(|&b| bufs.unsent(b) == 0));
    }

    #[test]
    fn an_optional_handle_is_four_bytes() {
        assert_eq!(std::mem::size_of::<Option<WBuf>>(), 4);
    }

    #[test]
    fn partial_sends_then_free_and_reuse() {
        let mut bufs = WriteBufs::default();
        let b = bufs.alloc();
        bufs.get_mut(b).extend_from_slice(b"hello world");
        let (_, len) = bufs.freeze(b);
        assert_eq!(len, 11);
        assert_eq!(bufs.complete(b, 5), Sent::Partial);
        assert_eq!(bufs.unsent(b), 6);
        let (_, len) = bufs.freeze(b);
        assert_eq!(len, 6);
        assert_eq!(bufs.complete(b, 6), Sent::All);
        assert_eq!(bufs.used(), 0);
        let again = bufs.alloc();
        assert_eq!(again, b, "a freed buffer is reused");
        assert!(bufs.get_mut(again).is_empty());
    }

    #[test]
    #[should_panic(expected = "in flight")]
    fn a_frozen_buffer_cannot_be_appended_to() {
        let mut bufs = WriteBufs::default();
        let b = bufs.alloc();
        bufs.get_mut(b).push(1);
        bufs.freeze(b);
        bufs.get_mut(b).push(2);
    }
}
