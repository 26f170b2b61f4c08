//! Containers that grow without long stalls. A `Vec` or `HashMap` of millions of entries doubles
//! by copying (or rehashing) all of them at once, which stalls the shard's batch for hundreds of
//! milliseconds; these grow in small pieces instead.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ledger::state::FastMap;

thread_local! {
    static LEGACY_LAYOUT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `decode` with the containers below reading the layout checkpoints of format versions 1
/// and 2 were written in (`ChunkedVec` as its chunks of 65,536, nested; the income map as the
/// 64 stripes of a `StripedMap`) when `legacy` holds: so a data directory whose journal was
/// archived behind such a checkpoint still starts after an upgrade.
pub fn with_legacy_layout<R>(legacy: bool, decode: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            LEGACY_LAYOUT.with(|flag| flag.set(self.0));
        }
    }
    let _restore = Restore(LEGACY_LAYOUT.with(|flag| flag.replace(legacy)));
    decode()
}

fn legacy_layout() -> bool {
    LEGACY_LAYOUT.with(|flag| flag.get())
}

const CHUNK_BITS: u32 = 12;
const CHUNK_LEN: usize = 1 << CHUNK_BITS;

/// An append-only vector stored in fixed chunks of 4,096: growing never moves existing items.
///
/// Chunks are shared copy-on-write (`Arc`), so a clone (a checkpoint's snapshot of the shard's
/// state) copies only the chunk pointers, whatever the history, and the live side copies a chunk
/// the first time it changes one that a snapshot still holds: the last chunk when it appends,
/// an older one when an old item changes (an order's status). Encoded as a flat sequence of its
/// items, so the encoding does not depend on the chunk size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkedVec<T> {
    chunks: Vec<Arc<Vec<T>>>,
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

    /// The item at `index`.
    pub fn get(&self, index: usize) -> Option<&T> {
        self.chunks.get(index >> CHUNK_BITS)?.get(index & (CHUNK_LEN - 1))
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
        self.chunks.iter().flat_map(|chunk| chunk.iter())
    }

    /// How many chunks a snapshot shares with this vector (tests and figures).
    pub fn shared_chunks(&self) -> usize {
        self.chunks.iter().filter(|chunk| Arc::strong_count(chunk) > 1).count()
    }
}

impl<T: Clone> ChunkedVec<T> {
    /// Appends an item.
    pub fn push(&mut self, item: T) {
        if self.len.is_multiple_of(CHUNK_LEN) {
            // The first chunk grows as a `Vec` does (many small vectors stay small); later ones
            // are taken whole, so growing never copies more than one chunk.
            let chunk = if self.chunks.is_empty() { Vec::new() } else { Vec::with_capacity(CHUNK_LEN) };
            self.chunks.push(Arc::new(chunk));
        }
        let first = self.chunks.len() == 1;
        own(self.chunks.last_mut().expect("a chunk with room"), first).push(item);
        self.len += 1;
    }

    /// The item at `index`, mutably (the chunk is copied first if a snapshot shares it).
    pub fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        let chunk = index >> CHUNK_BITS;
        let first = chunk == 0;
        own(self.chunks.get_mut(chunk)?, first).get_mut(index & (CHUNK_LEN - 1))
    }
}

/// The chunk, unshared: copied (with a whole chunk's room, so appending to the copy does not
/// grow it again; the first chunk keeps growing as a `Vec`) when a snapshot still holds it.
fn own<T: Clone>(chunk: &mut Arc<Vec<T>>, first: bool) -> &mut Vec<T> {
    if Arc::get_mut(chunk).is_none() {
        let mut copy = Vec::with_capacity(if first { chunk.capacity() } else { CHUNK_LEN });
        copy.extend_from_slice(chunk);
        *chunk = Arc::new(copy);
    }
    Arc::get_mut(chunk).expect("just made unique")
}

impl<T: Serialize> Serialize for ChunkedVec<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len))?;
        for item in self.iter() {
            seq.serialize_element(item)?;
        }
        seq.end()
    }
}

impl<'de, T: Deserialize<'de> + Clone> Deserialize<'de> for ChunkedVec<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if legacy_layout() {
            #[derive(Deserialize)]
            struct Legacy<T> {
                chunks: Vec<Vec<T>>,
                len: usize,
            }
            let legacy = Legacy::<T>::deserialize(deserializer)?;
            let mut items = ChunkedVec::default();
            legacy.chunks.into_iter().flatten().for_each(|item| items.push(item));
            if items.len() != legacy.len {
                return Err(serde::de::Error::custom(format!("{} items in chunks said to hold {}", items.len(), legacy.len)));
            }
            return Ok(items);
        }
        struct Items<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Clone> Visitor<'de> for Items<T> {
            type Value = ChunkedVec<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sequence of items")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = ChunkedVec::default();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(items)
            }
        }
        deserializer.deserialize_seq(Items(PhantomData))
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

/// Keys that say which block of an `OrderBlocks` map they live in: consecutive order ids share a
/// block, so the keys of new orders fall in the newest blocks.
pub trait BlockKey {
    fn block(&self) -> usize;
}

impl BlockKey for (crate::ledger::types::OrderId, crate::ledger::types::AccountId) {
    fn block(&self) -> usize {
        // An id past `usize` (only a caller's made-up id can be) names no existing block.
        usize::try_from(self.0 .0 >> CHUNK_BITS).unwrap_or(usize::MAX)
    }
}

/// A hash map keyed by order, in copy-on-write blocks of 4,096 consecutive order ids. Entries
/// of new orders land in the newest blocks, so a clone (a checkpoint's snapshot) copies only the
/// block pointers, and the live side copies the few blocks it changes while a snapshot holds
/// them (the newest ones, and an old one when a refund changes an old payment's income).
/// Encoded as a flat sequence of (key, value) in block order.
#[derive(Clone, Debug)]
pub struct OrderBlocks<K: std::hash::Hash + Eq, V> {
    blocks: Vec<Option<Arc<FastMap<K, V>>>>,
    len: usize,
}

impl<K: std::hash::Hash + Eq, V> Default for OrderBlocks<K, V> {
    fn default() -> Self {
        OrderBlocks { blocks: Vec::new(), len: 0 }
    }
}

impl<K: std::hash::Hash + Eq + BlockKey + Clone, V: Clone> OrderBlocks<K, V> {
    /// The value of `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.blocks.get(key.block())?.as_ref()?.get(key)
    }

    /// The value of `key`, mutably (its block is copied first if a snapshot shares it).
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let block = self.blocks.get_mut(key.block())?.as_mut()?;
        if !block.contains_key(key) {
            return None;
        }
        Arc::make_mut(block).get_mut(key)
    }

    /// The entry of `key` (to insert or update in place). Only for keys of orders that exist:
    /// the blocks up to the key's are made.
    pub fn entry(&mut self, key: K) -> std::collections::hash_map::Entry<'_, K, V> {
        let index = key.block();
        if self.blocks.len() <= index {
            self.blocks.resize_with(index + 1, || None);
        }
        let block = Arc::make_mut(self.blocks[index].get_or_insert_with(Default::default));
        let entry = block.entry(key);
        if matches!(entry, std::collections::hash_map::Entry::Vacant(_)) {
            self.len += 1;
        }
        entry
    }

    /// Inserts or replaces.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.entry(key) {
            std::collections::hash_map::Entry::Occupied(mut occupied) => Some(occupied.insert(value)),
            std::collections::hash_map::Entry::Vacant(vacant) => {
                vacant.insert(value);
                None
            }
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every entry, block by block (in no particular order within a block).
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.blocks.iter().flatten().flat_map(|block| block.iter())
    }

    /// How many blocks a snapshot shares with this map (tests and figures).
    pub fn shared_blocks(&self) -> usize {
        self.blocks.iter().flatten().filter(|block| Arc::strong_count(block) > 1).count()
    }
}

impl<K: std::hash::Hash + Eq + BlockKey + Clone + Serialize, V: Clone + Serialize> Serialize for OrderBlocks<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len))?;
        for entry in self.iter() {
            seq.serialize_element(&entry)?;
        }
        seq.end()
    }
}

impl<'de, K, V> Deserialize<'de> for OrderBlocks<K, V>
where
    K: std::hash::Hash + Eq + BlockKey + Clone + Deserialize<'de>,
    V: Clone + Deserialize<'de>,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if legacy_layout() {
            #[derive(Deserialize)]
            struct Legacy<K: std::hash::Hash + Eq, V> {
                stripes: Vec<FastMap<K, V>>,
            }
            let legacy = Legacy::<K, V>::deserialize(deserializer)?;
            let mut map = OrderBlocks::default();
            for (key, value) in legacy.stripes.into_iter().flatten() {
                if key.block() == usize::MAX {
                    return Err(serde::de::Error::custom("an order id past the address space"));
                }
                map.insert(key, value);
            }
            return Ok(map);
        }
        struct Entries<K, V>(PhantomData<(K, V)>);
        impl<'de, K, V> Visitor<'de> for Entries<K, V>
        where
            K: std::hash::Hash + Eq + BlockKey + Clone + Deserialize<'de>,
            V: Clone + Deserialize<'de>,
        {
            type Value = OrderBlocks<K, V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sequence of (key, value)")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut map = OrderBlocks::default();
                while let Some((key, value)) = seq.next_element::<(K, V)>()? {
                    if key.block() == usize::MAX {
                        return Err(serde::de::Error::custom("an order id past the address space"));
                    }
                    map.insert(key, value);
                }
                Ok(map)
            }
        }
        deserializer.deserialize_seq(Entries(PhantomData))
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

    #[test]
    fn a_clone_shares_chunks_and_the_live_side_copies_what_it_changes() {
        let mut live: ChunkedVec<u64> = ChunkedVec::default();
        for i in 0..(CHUNK_LEN * 3 + 10) as u64 {
            live.push(i);
        }
        let snapshot = live.clone();
        assert_eq!(live.shared_chunks(), 4, "a clone copies pointers only");
        live.push(1_000_000);
        *live.get_mut(5).unwrap() = 55;
        assert_eq!(live.shared_chunks(), 2, "the first and the last chunk were copied, the two between still shared");
        assert_eq!((snapshot.len(), snapshot.get(5), snapshot.get(CHUNK_LEN * 3 + 10)), (CHUNK_LEN * 3 + 10, Some(&5), None), "the snapshot is what it was");
        assert_eq!((live.len(), live.get(5), live.get(CHUNK_LEN * 3 + 10)), (CHUNK_LEN * 3 + 11, Some(&55), Some(&1_000_000)));
        drop(snapshot);
        assert_eq!(live.shared_chunks(), 0);
    }

    #[test]
    fn chunked_vecs_encode_as_flat_sequences_and_read_the_old_layout() {
        use bincode::Options;
        let codec = crate::journal::codec;
        let mut v: ChunkedVec<u32> = ChunkedVec::default();
        for i in 0..(CHUNK_LEN as u32 * 2 + 3) {
            v.push(i * 3);
        }
        let bytes = codec().serialize(&v).unwrap();
        assert_eq!(bytes, codec().serialize(&v.iter().copied().collect::<Vec<_>>()).unwrap());
        let back: ChunkedVec<u32> = codec().deserialize(&bytes).unwrap();
        assert_eq!(back, v);
        // Checkpoint format 2 wrote the derived form: { chunks: [[..65,536], ..], len }.
        #[derive(Serialize)]
        struct Old {
            chunks: Vec<Vec<u32>>,
            len: usize,
        }
        let all: Vec<u32> = v.iter().copied().collect();
        let old = Old { chunks: all.chunks(65_536).map(<[u32]>::to_vec).collect(), len: all.len() };
        let old_bytes = codec().serialize(&old).unwrap();
        let read: ChunkedVec<u32> = with_legacy_layout(true, || codec().deserialize(&old_bytes)).unwrap();
        assert_eq!(read, v);
        assert!(!legacy_layout(), "the flag is put back");
        let lying = codec().serialize(&Old { chunks: old.chunks.clone(), len: old.len + 1 }).unwrap();
        assert!(with_legacy_layout(true, || codec().deserialize::<ChunkedVec<u32>>(&lying)).is_err());
    }

    #[test]
    fn order_blocks_behave_as_a_map_share_blocks_and_read_the_old_stripes() {
        use crate::ledger::types::{AccountId, OrderId};
        use bincode::Options;
        let codec = crate::journal::codec;
        let mut live: OrderBlocks<(OrderId, AccountId), u64> = OrderBlocks::default();
        for i in 0..20_000u64 {
            assert_eq!(live.insert((OrderId(i), AccountId(i % 7)), i), None);
        }
        assert_eq!(live.len(), 20_000);
        assert_eq!(live.get(&(OrderId(12_345), AccountId(12_345 % 7))), Some(&12_345));
        assert_eq!(live.get(&(OrderId(12_345), AccountId(0))), None);
        assert_eq!(live.get(&(OrderId(u64::MAX), AccountId(0))), None, "a made-up id finds nothing and allocates nothing");
        assert!(live.get_mut(&(OrderId(u64::MAX - 5), AccountId(0))).is_none());
        let snapshot = live.clone();
        let blocks = live.shared_blocks();
        assert_eq!(blocks, 20_000usize.div_ceil(CHUNK_LEN));
        *live.get_mut(&(OrderId(7), AccountId(0))).unwrap() += 1;
        *live.entry((OrderId(20_001), AccountId(1))).or_insert(0) += 9;
        assert_eq!(live.shared_blocks(), blocks - 2, "only the changed blocks were copied");
        assert_eq!(snapshot.get(&(OrderId(7), AccountId(0))), Some(&7));
        assert_eq!(snapshot.get(&(OrderId(20_001), AccountId(1))), None);
        assert_eq!((live.get(&(OrderId(7), AccountId(0))), live.len()), (Some(&8), 20_001));
        assert!(live.get_mut(&(OrderId(7), AccountId(1))).is_none(), "no entry is made by get_mut");
        assert_eq!(live.len(), 20_001);

        let sorted = |m: &OrderBlocks<(OrderId, AccountId), u64>| {
            let mut all: Vec<_> = m.iter().map(|(k, v)| (*k, *v)).collect();
            all.sort();
            all
        };
        let back: OrderBlocks<(OrderId, AccountId), u64> = codec().deserialize(&codec().serialize(&live).unwrap()).unwrap();
        assert_eq!((sorted(&back), back.len()), (sorted(&live), live.len()));
        // Checkpoint format 2 wrote a `StripedMap`: 64 maps.
        let mut old: StripedMap<(OrderId, AccountId), u64> = StripedMap::default();
        live.iter().for_each(|(k, v)| {
            old.insert(*k, *v);
        });
        let old_bytes = codec().serialize(&old).unwrap();
        let read: OrderBlocks<(OrderId, AccountId), u64> = with_legacy_layout(true, || codec().deserialize(&old_bytes)).unwrap();
        assert_eq!((sorted(&read), read.len()), (sorted(&live), live.len()));
    }
}
