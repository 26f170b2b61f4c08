//! Containers that grow without long stalls. A `Vec` or `HashMap` of millions of entries doubles
//! by copying (or rehashing) all of them at once, which stalls the shard's batch for hundreds of
//! milliseconds; these grow in small pieces instead.

use serde::{Deserialize, Serialize};

use crate::ledger::state::FastMap;

const CHUNK_BITS: u32 = 16;
const CHUNK_LEN: usize = 1 << CHUNK_BITS;

/// An append-only vector stored in fixed chunks of 65,536: growing never moves existing items.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkedVec<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for ChunkedVec<T> {
    fn default() -> Self {
        ChunkedVec { chunks: Vec::new(), len: 0 }
    }
}

impl<T> ChunkedVec<T> {
    /// Number of items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends an item.
    pub fn push(&mut self, item: T) {
        if self.len.is_multiple_of(CHUNK_LEN) {
            // The first chunk grows as a `Vec` does (many small vectors stay small); later ones
            // are taken whole, so growing never copies more than one chunk.
            let chunk = if self.chunks.is_empty() { Vec::new() } else { Vec::with_capacity(CHUNK_LEN) };
            self.chunks.push(chunk);
        }
        self.chunks.last_mut().expect("a chunk with room").push(item);
        self.len += 1;
    }

    /// The item at `index`.
    pub fn get(&self, index: usize) -> Option<&T> {
        self.chunks.get(index >> CHUNK_BITS)?.get(index & (CHUNK_LEN - 1))
    }

    /// The item at `index`, mutably.
    pub fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        self.chunks.get_mut(index >> CHUNK_BITS)?.get_mut(index & (CHUNK_LEN - 1))
    }

    /// The number of leading items for which `below` holds (they must come first), by bisection.
    pub fn partition_point(&self, below: impl Fn(&T) -> bool) -> usize {
        let (mut low, mut high) = (0, self.len);
        while low < high {
            let middle = low + (high - low) / 2;
            if below(self.get(middle).expect("in range")) {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        low
    }

    /// All items in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }
}

const STRIPES: usize = 64;

/// Keys that say which stripe of a `StripedMap` they live in (from bits that are already mixed).
pub trait StripeKey {
    fn stripe(&self) -> usize;
}

impl StripeKey for u128 {
    fn stripe(&self) -> usize {
        (*self as usize) % STRIPES
    }
}

impl<A: Copy + Into<u64>, B: Copy + Into<u64>> StripeKey for (A, B) {
    fn stripe(&self) -> usize {
        let mixed = self.0.into().wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.1.into();
        (mixed.rotate_left(17) as usize) % STRIPES
    }
}

/// A hash map split into 64 maps by key, so that each rehash moves 1/64 of the entries.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StripedMap<K: std::hash::Hash + Eq, V> {
    stripes: Vec<FastMap<K, V>>,
}

impl<K: std::hash::Hash + Eq, V> Default for StripedMap<K, V> {
    fn default() -> Self {
        StripedMap { stripes: (0..STRIPES).map(|_| FastMap::default()).collect() }
    }
}

impl<K: std::hash::Hash + Eq + StripeKey, V> StripedMap<K, V> {
    /// The value of `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.stripes[key.stripe()].get(key)
    }

    /// The value of `key`, mutably.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.stripes[key.stripe()].get_mut(key)
    }

    /// Inserts or replaces.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.stripes[key.stripe()].insert(key, value)
    }

    /// The entry of `key` (to insert or update in place).
    pub fn entry(&mut self, key: K) -> std::collections::hash_map::Entry<'_, K, V> {
        self.stripes[key.stripe()].entry(key)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.stripes.iter().map(|s| s.len()).sum()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.stripes.iter().all(|s| s.is_empty())
    }

    /// Makes room for `additional` entries spread over the stripes.
    pub fn reserve(&mut self, additional: usize) {
        for stripe in &mut self.stripes {
            stripe.reserve(additional / STRIPES + 1);
        }
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.stripes.iter().flat_map(|s| s.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_vec_crosses_chunks() {
        let mut v = ChunkedVec::default();
        for i in 0..(CHUNK_LEN * 2 + 5) {
            v.push(i);
        }
        assert_eq!(v.len(), CHUNK_LEN * 2 + 5);
        assert_eq!(v.get(CHUNK_LEN), Some(&CHUNK_LEN));
        assert_eq!(v.get(CHUNK_LEN * 2 + 4), Some(&(CHUNK_LEN * 2 + 4)));
        assert_eq!(v.get(CHUNK_LEN * 2 + 5), None);
        *v.get_mut(3).unwrap() = 7;
        assert_eq!(v.iter().nth(3), Some(&7));
        assert_eq!(v.iter().count(), v.len());
    }

    #[test]
    fn striped_map_behaves_as_a_map() {
        let mut m: StripedMap<u128, u32> = StripedMap::default();
        for k in 0..1000u128 {
            assert_eq!(m.insert(k * 7919, k as u32), None);
        }
        assert_eq!(m.len(), 1000);
        assert_eq!(m.get(&(5 * 7919)), Some(&5));
        *m.get_mut(&(5 * 7919)).unwrap() = 50;
        assert_eq!(m.insert(5 * 7919, 51), Some(50));
        *m.entry(1).or_insert(0) += 2;
        assert_eq!(m.get(&1), Some(&2));
        assert_eq!(m.iter().count(), 1001);
        let used = m.stripes.iter().filter(|s| !s.is_empty()).count();
        assert!(used > STRIPES / 2, "keys spread over the stripes ({used})");
    }
}
