//! [`Subscribers`]: one shard of the id -> connections table.

use std::collections::hash_map::Entry;
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
/// Cost: one map entry per id of 16 bytes (8 for the id, 8 for its connections: one inline,
/// or the index of its bag) plus the map's control byte and load-factor slack; only ids with
/// several connections have a bag. At a million ids on two workers the map holds 2^20 buckets
/// per shard (500,000 ids is past 7/8 of 2^19): 17 MiB a shard at 16 + 1 bytes a bucket,
/// where a 16-byte value (a one-or-boxed enum) made it 25 MiB.
/// login and logout are linear in the size of the id's bag, which is expected to be small.
#[derive(Debug, Default)]
pub struct Subscribers {
    table: HashMap<Id, Subs, ahash::RandomState>,
    /// The bags of the ids with several connections (at least two each, distinct, in login
    /// order), named by index from their `Subs`. A bag emptied is freed and its index reused.
    bags: Vec<Vec<ConnRef>>,
    free_bags: Vec<u32>,
    /// Total (id, conn) pairs, kept so that `entries` is O(1).
    entries: usize,
}

/// The connections of one id, in 8 bytes: one connection inline, or, with
/// [`ConnRef::SPARE_BIT`] set (never set in a real `ConnRef`), the index of its bag in the
/// packed form's low bits. Invariant: an id is never present with an empty bag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Subs(ConnRef);

impl Subs {
    fn one(conn: ConnRef) -> Subs {
        debug_assert_eq!(conn.raw() & ConnRef::SPARE_BIT, 0);
        Subs(conn)
    }

    fn bag(index: u32) -> Subs {
        Subs(ConnRef::from_raw(ConnRef::SPARE_BIT | u64::from(index)))
    }

    /// The bag's index, or the one connection.
    fn get(self) -> Result<usize, ConnRef> {
        let raw = self.0.raw();
        if raw & ConnRef::SPARE_BIT != 0 {
            Ok((raw & !ConnRef::SPARE_BIT) as usize)
        } else {
            Err(self.0)
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
        // One lookup (the entry) per login and logout: at a million ids the table is far
        // bigger than the caches, and each lookup is a miss.
        let added = match self.table.entry(id) {
            Entry::Vacant(entry) => {
                entry.insert(Subs::one(conn));
                true
            }
            Entry::Occupied(mut entry) => match entry.get().get() {
                Err(first) if first == conn => false,
                Err(first) => {
                    let bag = new_bag(&mut self.bags, &mut self.free_bags, vec![first, conn]);
                    entry.insert(bag);
                    true
                }
                Ok(bag) if self.bags[bag].contains(&conn) => false,
                Ok(bag) => {
                    self.bags[bag].push(conn);
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
        let Entry::Occupied(mut entry) = self.table.entry(id) else {
            return false;
        };
        let removed = match entry.get().get() {
            Err(only) if only == conn => {
                entry.remove();
                true
            }
            Err(_) => false,
            Ok(bag) => match self.bags[bag].iter().position(|&c| c == conn) {
                None => false,
                Some(index) => {
                    // Keep login order: fan-out order then follows arrival order, which makes
                    // delivery easier to reason about in tests and logs.
                    let conns = &mut self.bags[bag];
                    conns.remove(index);
                    if conns.len() == 1 {
                        let last = conns[0];
                        // Freed, not kept: a big room emptied gives its memory back.
                        self.bags[bag] = Vec::new();
                        self.free_bags.push(bag as u32);
                        entry.insert(Subs::one(last));
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
        match self.table.get(&id) {
            None => &[],
            Some(subs) => match subs.get() {
                Ok(bag) => &self.bags[bag],
                Err(_) => slice::from_ref(&subs.0),
            },
        }
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
        if !cfg!(debug_assertions) {
            return; // the lookup below would be one more cache miss at a million ids
        }
        if let Some(Ok(bag)) = self.table.get(&id).map(|s| s.get()) {
            let conns = &self.bags[bag];
            debug_assert!(conns.len() >= 2, "id {id}: a bag of {}", conns.len());
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

/// A bag holding `conns`: a freed index again, or a new one.
fn new_bag(bags: &mut Vec<Vec<ConnRef>>, free_bags: &mut Vec<u32>, conns: Vec<ConnRef>) -> Subs {
    let index = match free_bags.pop() {
        Some(index) => {
            bags[index as usize] = conns;
            index
        }
        None => {
            let index = u32::try_from(bags.len()).expect("fewer than 2^31 bags");
            assert_eq!(
                u64::from(index) & ConnRef::SPARE_BIT,
                0,
                "bag index overflow"
            );
            bags.push(conns);
            index
        }
    };
    Subs::bag(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(slot: u32) -> ConnRef {
        ConnRef::new(0, slot, 0)
    }

    #[test]
    fn value_is_small() {
        assert_eq!(size_of::<(Id, Subs)>(), 16);
    }

    #[test]
    fn bags_are_reused_and_freed() {
        let mut subs = Subscribers::new();
        for slot in 0..100 {
            subs.login(1, conn(slot));
        }
        subs.login(2, conn(0));
        subs.login(2, conn(1));
        assert_eq!(subs.bags.len(), 2);
        for slot in 0..99 {
            assert!(subs.logout(1, conn(slot)));
        }
        assert_eq!(subs.get(1), &[conn(99)]);
        assert_eq!(subs.bags[0].capacity(), 0, "an emptied bag holds no memory");
        subs.login(3, conn(5));
        subs.login(3, conn(6));
        assert_eq!(subs.bags.len(), 2, "its index is reused");
        assert_eq!(subs.get(3), &[conn(5), conn(6)]);
        assert_eq!(subs.get(2), &[conn(0), conn(1)]);
    }

    #[test]
    fn the_last_worker_and_the_largest_slot_and_generation_stay_inline() {
        let mut subs = Subscribers::new();
        let edge = ConnRef::new(
            ConnRef::WORKERS_MAX - 1,
            ConnRef::SLOTS_MAX as u32 - 1,
            u32::MAX,
        );
        subs.login(7, edge);
        assert_eq!(subs.get(7), &[edge]);
        subs.login(7, conn(1));
        assert_eq!(subs.get(7), &[edge, conn(1)]);
        assert!(subs.logout(7, conn(1)));
        assert_eq!(subs.get(7), &[edge]);
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
