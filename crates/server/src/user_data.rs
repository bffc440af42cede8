//! The `user_data` of every io_uring operation comet submits, in one place.
//!
//! Layout (64 bits): `[op: 8][slot: 24][gen: 32]`.
//! - `op`: which operation completed ([`Op`]).
//! - `slot`: the connection's slot in the worker's connection table, which also names its ring
//!   and its entry in that ring's fixed-file table (`comet_ring::Rings`: ring = slot / files per
//!   ring); for `Accept` the ring and the listener (`ring << 1 | listener`, the listener as
//!   [`comet_http::Listener`] numbers it), for `DoorbellFailed` the target worker.
//! - `gen`: the slot's generation when the operation was submitted. A slot is reused only after
//!   every operation on it completed, so a mismatch is a bug, caught by an assertion.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    Accept = 1,
    Recv,
    /// The kernel's readiness poll on a socket (POLL_ADD): how an idle stream notices a close.
    Watch,
    Send,
    /// A cancel of a connection's operation, the socket's shutdown (which ends its watch) or
    /// a reset's SO_LINGER when it closes: each is one more thing its close waits for.
    Cancel,
    Close,
    /// A MSG_RING from another worker: mail is waiting.
    Doorbell,
    /// Our MSG_RING to another worker failed (its CQE is skipped on success).
    DoorbellFailed,
    Tick,
    Shutdown,
    /// A request whose completion needs no handling (cancelling an accept).
    Ignore,
    /// The primary ring's poll on the eventfd the other rings signal: one of them has work.
    Rings,
}

impl Op {
    fn from_u8(v: u8) -> Op {
        match v {
            1 => Op::Accept,
            2 => Op::Recv,
            3 => Op::Watch,
            4 => Op::Send,
            5 => Op::Cancel,
            6 => Op::Close,
            7 => Op::Doorbell,
            8 => Op::DoorbellFailed,
            9 => Op::Tick,
            10 => Op::Shutdown,
            11 => Op::Ignore,
            12 => Op::Rings,
            _ => unreachable!("unknown op {v} in user_data"),
        }
    }
}

pub const SLOT_MAX: u32 = 1 << 24;
// Every slot a ConnRef can name fits here (the config bounds the rings so that it can).
const _: () = assert!(comet_router::ConnRef::SLOTS_MAX <= SLOT_MAX as usize);

/// The `user_data` of operation `op` on `slot` at generation `gen`.
pub fn pack(op: Op, slot: u32, gen: u32) -> u64 {
    debug_assert!(slot < SLOT_MAX);
    ((op as u64) << 56) | ((slot as u64) << 32) | gen as u64
}

pub fn unpack(user_data: u64) -> (Op, u32, u32) {
    (
        Op::from_u8((user_data >> 56) as u8),
        ((user_data >> 32) as u32) & (SLOT_MAX - 1),
        user_data as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for op in [Op::Accept, Op::Recv, Op::Watch, Op::Send, Op::Shutdown] {
            for (slot, gen) in [(0, 0), (SLOT_MAX - 1, u32::MAX), (12345, 7)] {
                assert_eq!(unpack(pack(op, slot, gen)), (op, slot, gen));
            }
        }
    }
}
