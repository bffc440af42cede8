//! [`Subscribers`]: one shard of the id -> connections table.

use std::collections::HashMap;
use std::slice;

use crate::{ConnRef, Id};

/// One shard's table: id -> bag of connections.
///
/// Set semantics per (id, conn): logging the same conn in twice under one id is idempotent
/// (like the ets bag of the 2008 Erlang original), and logging out an absent pair is a no-op.
/// An id whose last connection logs out is removed, so the table ends empty once everything
/// has logged out and holds no memory for ids nobody listens to.
///
/// Cost: one map entry per id of 24 bytes (8 for the id, 16 for its bag) plus the map's
/// control byte and load-factor slack; only ids with several connections allocate more.
/// login and logout are linear in the size of the id's bag, which is expected to be small.
#[derive(Debug, Default)]
pub struct Subscribers {
    table: HashMap<Id, Subs, ahash::RandomState>,
    /// Total (id, conn) pairs, kept so that `entries` is O(1).
    entries: usize,
}

/// The connections of one id. Invariant: `Many` holds at least two distinct connections, so
/// one connection is always stored inline and an id is never present with an empty bag.
#[derive(Debug)]
enum Subs {
    One(ConnRef),
    /// Boxed so that the common case stays 16 bytes: a bare `Vec` (24 bytes) would make every
    /// value 32, a `Box<[ConnRef]>` (16) would make it 24 and reallocate on every login. The
    /// extra allocation is paid only by ids with several connections.
    #[allow(
        clippy::box_collection,
        reason = "a thin pointer keeps the one-connection case at 16 bytes"
    )]
    Many(Box<Vec<ConnRef>>),
}

impl Subs {
    fn as_slice(&self) -> &[ConnRef] {
        match self {
            Subs::One(conn) => slice::from_ref(conn),
            Subs::Many(conns) => conns,
        }
    }
}

impl Subscribers {
    /// An empty table. Allocates nothing until the first login.
    pub fn new() -> Self {
        Self::default()
    }

    /// Logs `conn` in as `id`. Returns true if the pair was newly added, false if it was
    /// already there (the table is unchanged).
    pub fn login(&mut self, id: Id, conn: ConnRef) -> bool {
        let added = match self.table.get_mut(&id) {
            None => {
                self.table.insert(id, Subs::One(conn));
                true
            }
            Some(subs) => match subs {
                Subs::One(first) if *first == conn => false,
                Subs::One(first) => {
                    *subs = Subs::Many(Box::new(vec![*first, conn]));
                    true
                }
                Subs::Many(conns) if conns.contains(&conn) => false,
                Subs::Many(conns) => {
                    conns.push(conn);
                    true
                }
            },
        };
        if added {
            self.entries += 1;
        }
        self.check(id);
        added
    }

    /// Logs `conn` out of `id`. Returns true if the pair was there and is removed, false if
    /// it was absent (the table is unchanged). Removes `id` when its last connection leaves.
    pub fn logout(&mut self, id: Id, conn: ConnRef) -> bool {
        let Some(subs) = self.table.get_mut(&id) else {
            return false;
        };
        let removed = match subs {
            Subs::One(only) if *only == conn => {
                self.table.remove(&id);
                true
            }
            Subs::One(_) => false,
            Subs::Many(conns) => match conns.iter().position(|&c| c == conn) {
                None => false,
                Some(index) => {
                    // Keep login order: fan-out order then follows arrival order, which makes
                    // delivery easier to reason about in tests and logs.
                    conns.remove(index);
                    if conns.len() == 1 {
                        *subs = Subs::One(conns[0]);
                    }
                    true
                }
            },
        };
        if removed {
            assert!(self.entries > 0, "logout count exceeds login count");
            self.entries -= 1;
        }
        self.check(id);
        removed
    }

    /// The connections logged in as `id`, in login order; empty if none.
    pub fn get(&self, id: Id) -> &[ConnRef] {
        self.table.get(&id).map_or(&[], Subs::as_slice)
    }

    /// Ids with at least one connection.
    pub fn ids(&self) -> usize {
        self.table.len()
    }

    /// Total (id, conn) pairs.
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// True when no id has a connection.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Cheap invariants always; the bag of the id just touched in debug builds. (Not a recount
    /// of the whole table: that would make every login O(ids) in a debug server.)
    fn check(&self, id: Id) {
        assert!(self.entries >= self.table.len(), "fewer entries than ids");
        if let Some(Subs::Many(conns)) = self.table.get(&id) {
            debug_assert!(conns.len() >= 2, "id {id}: Many with {} conns", conns.len());
            debug_assert!(
                conns
                    .iter()
                    .enumerate()
                    .all(|(i, c)| !conns[..i].contains(c)),
                "id {id}: duplicate conn"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(slot: u32) -> ConnRef {
        ConnRef::new(0, slot, 0)
    }

    #[test]
    fn value_is_small() {
        assert!(
            size_of::<Subs>() <= 16,
            "Subs is {} bytes",
            size_of::<Subs>()
        );
    }

    #[test]
    fn login_get_logout() {
        let mut subs = Subscribers::new();
        assert!(subs.is_empty());
        assert_eq!(subs.get(1), &[]);

        assert!(subs.login(1, conn(10)));
        assert!(subs.login(1, conn(11)));
        assert!(subs.login(2, conn(10)));
        assert_eq!(subs.get(1), &[conn(10), conn(11)]);
        assert_eq!(subs.get(2), &[conn(10)]);
        assert_eq!((subs.ids(), subs.entries()), (2, 3));

        assert!(subs.logout(1, conn(10)));
        assert_eq!(subs.get(1), &[conn(11)]);
        assert_eq!((subs.ids(), subs.entries()), (2, 2));
    }

    #[test]
    fn double_login_is_idempotent() {
        let mut subs = Subscribers::new();
        assert!(subs.login(1, conn(10)));
        assert!(!subs.login(1, conn(10)));
        assert!(subs.login(1, conn(11)));
        assert!(!subs.login(1, conn(11)));
        assert!(!subs.login(1, conn(10)));
        assert_eq!(subs.get(1), &[conn(10), conn(11)]);
        assert_eq!(subs.entries(), 2);
        // One logout undoes both logins of the same pair.
        assert!(subs.logout(1, conn(10)));
        assert_eq!(subs.get(1), &[conn(11)]);
    }

    #[test]
    fn logout_of_an_absent_pair_is_false() {
        let mut subs = Subscribers::new();
        assert!(!subs.logout(1, conn(10)));
        subs.login(1, conn(10));
        assert!(!subs.logout(1, conn(11)));
        assert!(!subs.logout(2, conn(10)));
        // Same worker and slot, newer generation: another connection.
        assert!(!subs.logout(1, ConnRef::new(0, 10, 1)));
        subs.login(1, conn(11));
        assert!(!subs.logout(1, conn(12)));
        assert_eq!(subs.entries(), 2);
    }

    #[test]
    fn table_empties() {
        let mut subs = Subscribers::new();
        for id in 0..10 {
            for slot in 0..3 {
                subs.login(id, conn(slot));
            }
        }
        assert_eq!((subs.ids(), subs.entries()), (10, 30));
        for id in 0..10 {
            for slot in [1, 0, 2] {
                assert!(subs.logout(id, conn(slot)));
            }
        }
        assert!(subs.is_empty());
        assert_eq!((subs.ids(), subs.entries()), (0, 0));
        assert_eq!(subs.get(0), &[]);
    }
}
