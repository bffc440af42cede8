//! Property tests over the public API, composed the way the server composes it.

use std::collections::{BTreeMap, BTreeSet};

use comet_router::{parse_id, parse_id_list, shard_of, ConnRef, Id, IdError, Subscribers};
use proptest::prelude::*;

/// Ids are drawn from 0..IDS so that operations collide often.
const IDS: Id = 6;

#[derive(Clone, Debug)]
enum Op {
    Login(Id, ConnRef),
    Logout(Id, ConnRef),
    Close(ConnRef),
}

/// Connections on `workers` workers, 3 slots each, 2 generations per slot: the same
/// (worker, slot) with another generation is another connection (a reused slot).
fn conn(workers: usize) -> impl Strategy<Value = ConnRef> {
    (0..workers, 0..3u32, 0..2u32).prop_map(|(worker, slot, gen)| ConnRef::new(worker, slot, gen))
}

fn op(workers: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..IDS, conn(workers)).prop_map(|(id, conn)| Op::Login(id, conn)),
        2 => (0..IDS, conn(workers)).prop_map(|(id, conn)| Op::Logout(id, conn)),
        1 => conn(workers).prop_map(Op::Close),
    ]
}

fn workers_and_ops() -> impl Strategy<Value = (usize, Vec<Op>)> {
    (1..=4usize).prop_flat_map(|workers| (Just(workers), prop::collection::vec(op(workers), 0..80)))
}

/// The process as the server builds it: one `Subscribers` shard per worker, the owner of an id
/// being `shard_of(id, workers)`, and on the connection's side the ids it logged in as.
struct Router {
    shards: Vec<Subscribers>,
    /// Per connection, the ids it holds, in login order; kept by the connection's worker.
    held: BTreeMap<ConnRef, Vec<Id>>,
}

impl Router {
    fn new(workers: usize) -> Self {
        Router {
            shards: (0..workers).map(|_| Subscribers::new()).collect(),
            held: BTreeMap::new(),
        }
    }

    fn owner(&mut self, id: Id) -> &mut Subscribers {
        let workers = self.shards.len();
        &mut self.shards[shard_of(id, workers)]
    }

    fn login(&mut self, id: Id, conn: ConnRef) -> bool {
        let added = self.owner(id).login(id, conn);
        if added {
            self.held.entry(conn).or_default().push(id);
        }
        added
    }

    fn logout(&mut self, id: Id, conn: ConnRef) -> bool {
        let removed = self.owner(id).logout(id, conn);
        if removed {
            let ids = self.held.get_mut(&conn).expect("removed pair was held");
            ids.retain(|&held| held != id);
            if ids.is_empty() {
                self.held.remove(&conn);
            }
        }
        removed
    }

    /// Logs `conn` out of every id it holds, each on its owner shard.
    fn close(&mut self, conn: ConnRef) -> usize {
        let ids = self.held.remove(&conn).unwrap_or_default();
        for &id in &ids {
            assert!(
                self.owner(id).logout(id, conn),
                "held id {id} not in its owner's table"
            );
        }
        ids.len()
    }

    fn send(&self, id: Id) -> &[ConnRef] {
        self.shards[shard_of(id, self.shards.len())].get(id)
    }
}

proptest! {
    #[test]
    fn send_reaches_exactly_the_logged_in((workers, ops) in workers_and_ops()) {
        let mut router = Router::new(workers);
        let mut model: BTreeSet<(Id, ConnRef)> = BTreeSet::new();

        for op in ops {
            match op {
                Op::Login(id, conn) => {
                    prop_assert_eq!(router.login(id, conn), model.insert((id, conn)));
                }
                Op::Logout(id, conn) => {
                    prop_assert_eq!(router.logout(id, conn), model.remove(&(id, conn)));
                }
                Op::Close(conn) => {
                    let before = model.len();
                    model.retain(|&(_, held)| held != conn);
                    prop_assert_eq!(router.close(conn), before - model.len());
                }
            }

            for id in 0..IDS {
                let sent: Vec<ConnRef> = router.send(id).to_vec();
                let sent_set: BTreeSet<ConnRef> = sent.iter().copied().collect();
                prop_assert_eq!(sent.len(), sent_set.len(), "id {} sent twice to one conn", id);
                let expected: BTreeSet<ConnRef> =
                    model.range((id, ConnRef::new(0, 0, 0))..).take_while(|&&(i, _)| i == id).map(|&(_, c)| c).collect();
                prop_assert_eq!(sent_set, expected, "id {}", id);
                for (shard, subs) in router.shards.iter().enumerate() {
                    if shard != shard_of(id, workers) {
                        prop_assert!(subs.get(id).is_empty(), "id {} on non-owner shard {}", id, shard);
                    }
                }
            }
            let entries: usize = router.shards.iter().map(Subscribers::entries).sum();
            let ids: usize = router.shards.iter().map(Subscribers::ids).sum();
            let model_ids = model.iter().map(|&(id, _)| id).collect::<BTreeSet<_>>().len();
            prop_assert_eq!(entries, model.len());
            prop_assert_eq!(ids, model_ids);
        }

        let conns: Vec<ConnRef> = router.held.keys().copied().collect();
        for conn in conns {
            router.close(conn);
        }
        prop_assert!(router.held.is_empty());
        for subs in &router.shards {
            prop_assert!(subs.is_empty());
            prop_assert_eq!((subs.ids(), subs.entries()), (0, 0));
        }
    }

    #[test]
    fn parse_id_round_trips(n in any::<u64>()) {
        prop_assert_eq!(parse_id(n.to_string().as_bytes()), Ok(n));
        prop_assert_eq!(parse_id(format!("000{n}").as_bytes()), Ok(n));
    }

    #[test]
    fn parse_id_agrees_with_std(text in prop::collection::vec(prop_oneof![b'0'..=b'9', any::<u8>()], 0..24)) {
        let digits_only = !text.is_empty() && text.iter().all(u8::is_ascii_digit);
        match parse_id(&text) {
            Ok(id) => {
                prop_assert!(digits_only);
                prop_assert_eq!(Ok(id), std::str::from_utf8(&text).unwrap().parse::<u64>());
            }
            Err(IdError::Empty) => prop_assert!(text.is_empty()),
            Err(IdError::NotANumber(_)) => prop_assert!(!text.is_empty() && !digits_only),
            Err(IdError::TooLarge(_)) => {
                prop_assert!(digits_only);
                prop_assert!(std::str::from_utf8(&text).unwrap().parse::<u64>().is_err());
            }
            Err(other) => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    #[test]
    fn parse_id_list_round_trips(ids in prop::collection::vec(0..20u64, 1..40)) {
        let text = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        let mut expected: Vec<Id> = Vec::new();
        for &id in &ids {
            if !expected.contains(&id) {
                expected.push(id);
            }
        }
        prop_assert_eq!(parse_id_list(text.as_bytes(), 64), Ok(expected.clone()));
        let max = expected.len() - 1;
        prop_assert_eq!(
            parse_id_list(text.as_bytes(), max),
            Err(IdError::TooMany { count: expected.len(), max })
        );
    }

    #[test]
    fn shard_of_is_in_range(id in any::<u64>(), shards in 1..=ConnRef::WORKERS_MAX) {
        prop_assert!(shard_of(id, shards) < shards);
        prop_assert!(shard_of(id, usize::MAX) < usize::MAX);
    }
}
