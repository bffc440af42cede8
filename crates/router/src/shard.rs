//! [`shard_of`]: which worker owns an id.

use crate::Id;

/// Which shard (worker) owns `id`'s table entry, for `shards` shards. Panics if `shards == 0`.
///
/// The answer must be the same in every process, on every host and CPU, and in every version
/// of this crate (a publisher and a subscriber may be routed by different processes), so this
/// is a fixed function and not `ahash` or a std hasher, which are keyed or unspecified:
///
/// 1. mix: the SplitMix64 finalizer (Steele, Lea, Flood 2014) applied to `id` as it is,
///    without SplitMix64's additive step, so consecutive ids spread over all 64 bits;
/// 2. reduce: `(mixed * shards) >> 64` in 128-bit arithmetic, which maps the 64-bit hash
///    onto `[0, shards)` by its high bits, without a division.
///
/// Changing either step moves ids between workers: the test vectors below pin both.
pub fn shard_of(id: Id, shards: usize) -> usize {
    assert!(shards >= 1, "shard_of needs at least one shard");
    let reduced = (u128::from(mix(id)) * shards as u128) >> 64;
    reduced as usize
}

/// The SplitMix64 finalizer: a bijection on `u64` with good avalanche.
fn mix(id: Id) -> u64 {
    let mut z = id;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_is_splitmix64() {
        // SplitMix64 seeded with 0 first outputs 0xe220a8397b1dcdaf: the finalizer applied to
        // the golden gamma 0x9e3779b97f4a7c15 (the seed plus one step).
        assert_eq!(mix(0x9e37_79b9_7f4a_7c15), 0xe220_a839_7b1d_cdaf);
        assert_eq!(mix(0), 0);
    }

    #[test]
    fn test_vectors() {
        // (id, shards, shard): computed once with an independent implementation. If one of
        // these changes, ids move between workers: that is a protocol change, not a refactor.
        let vectors: [(Id, usize, usize); 8] = [
            (0, 1, 0),
            (1, 2, 0),
            (1, 8, 2),
            (42, 4, 2),
            (7, 1024, 74),
            (123_456_789, 64, 60),
            (u64::MAX, 1000, 706),
            (u64::MAX, 1, 0),
        ];
        for (id, shards, shard) in vectors {
            assert_eq!(shard_of(id, shards), shard, "shard_of({id}, {shards})");
        }
    }

    #[test]
    fn consecutive_ids_spread_evenly() {
        // msggen and floodtest use ids 1..=N, so that is the distribution that matters.
        let ids: u64 = 1_000_000;
        for shards in [2, 3, 4, 7, 8, 16, 64] {
            let mut counts = vec![0u64; shards];
            for id in 1..=ids {
                counts[shard_of(id, shards)] += 1;
            }
            let expected = ids / shards as u64;
            for (shard, &count) in counts.iter().enumerate() {
                // 64 shards: expected 15,625, standard deviation ~124; 5% is ~6 of them.
                assert!(
                    count.abs_diff(expected) * 20 <= expected,
                    "{shards} shards: shard {shard} got {count}, expected about {expected}"
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "at least one shard")]
    fn zero_shards_panics() {
        shard_of(1, 0);
    }
}
