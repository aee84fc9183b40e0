//! Where things live: which shard owns a key or an object. Fixed forever: changing it would
//! move every stored object to another shard.

/// 64-bit FNV-1a. Fixed forever: key placement and cluster ids are derived from it.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The owner shard of a routing key. Changing this would move every key to another shard.
pub fn owner_shard(key: &str, shards: usize) -> usize {
    (fnv1a(key.as_bytes()) % shards.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_stable_and_spread() {
        // Placement must never change between versions: pin a few values.
        assert_eq!(owner_shard("", 7), (0xcbf2_9ce4_8422_2325u64 % 7) as usize);
        assert_eq!(owner_shard("a", 1), 0);
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            counts[owner_shard(&format!("key-{i}"), 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
