//! [`ConnRef`]: which connection, on which worker, in which incarnation of its slot.

/// A reference to one connection somewhere in the process: worker (thread) index, slot index
/// in that worker's connection table, and the slot's generation (so a reused slot is
/// recognised: a message routed to an old `ConnRef` must not reach the slot's new tenant).
///
/// Packed in one `u64`: `gen` in bits 63..32, `worker` in bits 30..22, `slot` in bits 21..0;
/// bit 31 is never set ([`ConnRef::SPARE_BIT`]).
/// The derived ordering is that of the packed integer (generation first); it exists so that
/// `ConnRef`s can live in sorted sets, and means nothing beyond that.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct ConnRef(u64);

const SLOT_BITS: u32 = 22;
const WORKER_BITS: u32 = 9;
const GEN_SHIFT: u32 = 32;
const _: () = assert!(SLOT_BITS + WORKER_BITS < GEN_SHIFT);

impl ConnRef {
    /// Never set in a packed `ConnRef`: the subscriber table tags its 8-byte values with it
    /// (one connection inline, or the index of a bag).
    pub const SPARE_BIT: u64 = 1 << (SLOT_BITS + WORKER_BITS);
    /// Workers addressable by a `ConnRef`: 512 = 2^9.
    pub const WORKERS_MAX: usize = 1 << WORKER_BITS;
    /// Slots per worker addressable by a `ConnRef`: 4,194,304 = 2^22.
    pub const SLOTS_MAX: usize = 1 << SLOT_BITS;

    /// Packs a reference. Panics if `worker >= WORKERS_MAX` or `slot >= SLOTS_MAX`: a
    /// truncated field would silently name another connection, so the check stays in release.
    pub fn new(worker: usize, slot: u32, gen: u32) -> ConnRef {
        assert!(worker < Self::WORKERS_MAX, "worker {worker} out of range");
        assert!(
            (slot as usize) < Self::SLOTS_MAX,
            "slot {slot} out of range"
        );
        ConnRef((u64::from(gen) << GEN_SHIFT) | ((worker as u64) << SLOT_BITS) | u64::from(slot))
    }

    /// The worker (thread) whose connection table holds this connection.
    pub fn worker(self) -> usize {
        ((self.0 >> SLOT_BITS) as usize) & (Self::WORKERS_MAX - 1)
    }

    /// The slot index in that worker's connection table.
    pub fn slot(self) -> u32 {
        (self.0 as u32) & (Self::SLOTS_MAX as u32 - 1)
    }

    /// The slot's generation when this reference was made.
    pub fn gen(self) -> u32 {
        (self.0 >> GEN_SHIFT) as u32
    }

    /// The packed form, to travel through code that does not know connections (the cluster
    /// bridge's tickets); [`ConnRef::from_raw`] gives it back.
    pub fn raw(self) -> u64 {
        self.0
    }

    pub fn from_raw(raw: u64) -> ConnRef {
        ConnRef(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_at_the_edges() {
        let workers = [0, 1, ConnRef::WORKERS_MAX - 1];
        let slots = [0, 1, ConnRef::SLOTS_MAX as u32 - 1];
        let gens = [0, 1, u32::MAX];
        for worker in workers {
            for slot in slots {
                for gen in gens {
                    let conn = ConnRef::new(worker, slot, gen);
                    assert_eq!(
                        (conn.worker(), conn.slot(), conn.gen()),
                        (worker, slot, gen)
                    );
                }
            }
        }
    }

    #[test]
    fn packing_is_the_documented_one() {
        let conn = ConnRef::new(3, 5, 7);
        assert_eq!(conn.0, (7 << 32) | (3 << 22) | 5);
        assert_eq!(size_of::<ConnRef>(), 8);
    }

    #[test]
    fn the_spare_bit_is_never_set() {
        let edge = ConnRef::new(
            ConnRef::WORKERS_MAX - 1,
            ConnRef::SLOTS_MAX as u32 - 1,
            u32::MAX,
        );
        assert_eq!(edge.raw() & ConnRef::SPARE_BIT, 0);
        assert_eq!(ConnRef::SPARE_BIT, 1 << 31);
    }

    #[test]
    fn generation_distinguishes_a_reused_slot() {
        assert_ne!(ConnRef::new(1, 2, 0), ConnRef::new(1, 2, 1));
    }

    #[test]
    #[should_panic(expected = "worker 512 out of range")]
    fn worker_out_of_range_panics() {
        ConnRef::new(ConnRef::WORKERS_MAX, 0, 0);
    }

    #[test]
    #[should_panic(expected = "slot 4194304 out of range")]
    fn slot_out_of_range_panics() {
        ConnRef::new(0, ConnRef::SLOTS_MAX as u32, 0);
    }
}
