//! Flat open-addressed tables of 128-bit keys: the router's claims (`crate::claims`) and a
//! shard's hot and sealed idempotency records (`FlatMap`).
//!
//! Both are looked up once per order number, at hundreds of thousands a second, in tables of
//! tens of MB: each lookup is a cache miss. A flat table keeps the whole key and its value in one
//! slot (linear probing, at most 5/8 of the slots used, so a lookup reads about one cache line),
//! and a caller that knows the next keys asks for their slots ahead (`prefetch`): the misses of
//! several keys overlap instead of coming one after another. Slots are chosen by a keyed mix of
//! the key (a secret per claims or per map), so that order numbers chosen to collide cannot build long probe
//! runs. A slot is empty when its value is `None`, so a key of all zero bits is a key like any
//! other (and for values with a niche, such as the records, `Option` costs no byte).

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::marker::PhantomData;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A table never has fewer slots (a power of two).
const MIN_SLOTS: usize = 16;

/// The secret of a table's slot mix.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seed(pub(crate) u64, pub(crate) u64);

impl Seed {
    /// A fresh secret (from the process's random hasher keys).
    pub(crate) fn new() -> Seed {
        let state = RandomState::new();
        Seed(state.hash_one(0x5eed_u64), state.hash_one(0x5eed_u64 + 1))
    }

    /// `key`'s first slot (before masking): a folded 64x64->128 multiply of its keyed words.
    #[inline]
    pub(crate) fn home(&self, key: u128) -> usize {
        let product = u128::from(key as u64 ^ self.0) * u128::from((key >> 64) as u64 ^ self.1);
        ((product >> 64) as u64 ^ product as u64) as usize
    }
}

/// One entry: the key's two words and the value (`None`: the slot is empty).
#[derive(Clone, Copy)]
pub(crate) struct Slot<V> {
    low: u64,
    high: u64,
    value: Option<V>,
}

impl<V: Copy> Slot<V> {
    const EMPTY: Slot<V> = Slot { low: 0, high: 0, value: None };

    /// Whether the slot's key words are `key`'s (meaningful for an occupied slot only).
    #[inline]
    fn has_key(&self, key: u128) -> bool {
        self.low == key as u64 && self.high == (key >> 64) as u64
    }

    fn key(&self) -> u128 {
        u128::from(self.high) << 64 | u128::from(self.low)
    }
}

/// A power-of-two number of slots, at most 5/8 of them used (linear probing then looks at about
/// four slots for a key it does not hold, two for one it does).
#[derive(Clone)]
pub(crate) struct Table<V> {
    slots: Box<[Slot<V>]>,
    len: usize,
}

impl<V: Copy> Table<V> {
    pub(crate) fn with_slots(count: usize) -> Table<V> {
        Table { slots: vec![Slot::EMPTY; count.max(MIN_SLOTS).next_power_of_two()].into_boxed_slice(), len: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The first slot, for a lock-free `prefetch_slot` (see `crate::claims`).
    pub(crate) fn slots_ptr(&mut self) -> *mut Slot<V> {
        self.slots.as_mut_ptr()
    }

    /// The slot holding `key` (`Ok`) or the empty slot where it would go (`Err`); `home` is
    /// `Seed::home(key)`.
    #[inline]
    pub(crate) fn find(&self, key: u128, home: usize) -> Result<usize, usize> {
        let mask = self.mask();
        let mut index = home & mask;
        loop {
            let slot = &self.slots[index];
            if slot.value.is_none() {
                return Err(index);
            }
            if slot.has_key(key) {
                return Ok(index);
            }
            index = (index + 1) & mask;
        }
    }

    /// The value in slot `index` (`None` if it is empty).
    pub(crate) fn value(&self, index: usize) -> Option<&V> {
        self.slots[index].value.as_ref()
    }

    /// The value in slot `index`, mutably.
    pub(crate) fn value_mut(&mut self, index: usize) -> Option<&mut V> {
        self.slots[index].value.as_mut()
    }

    /// Puts `key` and `value` in the empty slot `index` (from `find`), growing the table past
    /// 5/8 full.
    pub(crate) fn put(&mut self, index: usize, key: u128, value: V, seed: &Seed) {
        self.slots[index] = Slot { low: key as u64, high: (key >> 64) as u64, value: Some(value) };
        self.len += 1;
        if self.len * 8 > self.slots.len() * 5 {
            self.resize(self.slots.len() * 2, seed);
        }
    }

    /// Empties slot `index` and moves later slots of its probe run back (backward-shift
    /// deletion: no tombstones, so lookups stay as short as the load allows). Shrinks a table
    /// that fell under 1/8 full.
    pub(crate) fn remove(&mut self, mut index: usize, seed: &Seed) {
        let mask = self.mask();
        let mut next = (index + 1) & mask;
        loop {
            let slot = self.slots[next];
            if slot.value.is_none() {
                break;
            }
            // The slot may move back to `index` when `index` lies on its way from its home
            // (cyclically, home ..= next): otherwise a lookup from its home would stop at the hole.
            let home = seed.home(slot.key()) & mask;
            if (next.wrapping_sub(home) & mask) >= (next.wrapping_sub(index) & mask) {
                self.slots[index] = slot;
                index = next;
            }
            next = (next + 1) & mask;
        }
        self.slots[index] = Slot::EMPTY;
        self.len -= 1;
        if self.slots.len() > MIN_SLOTS && self.len * 8 < self.slots.len() {
            self.resize(self.slots.len() / 2, seed);
        }
    }

    /// Makes room for `additional` more entries without growing in between.
    pub(crate) fn reserve(&mut self, additional: usize, seed: &Seed) {
        let needed = slots_for(self.len + additional);
        if needed > self.slots.len() {
            self.resize(needed, seed);
        }
    }

    fn resize(&mut self, count: usize, seed: &Seed) {
        let old = std::mem::replace(self, Table::with_slots(count));
        for slot in old.slots.iter().filter(|slot| slot.value.is_some()) {
            if let Err(index) = self.find(slot.key(), seed.home(slot.key())) {
                self.slots[index] = *slot;
                self.len += 1;
            }
        }
    }

    /// Every entry, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u128, &V)> {
        self.slots.iter().filter_map(|slot| slot.value.as_ref().map(|value| (slot.key(), value)))
    }
}

/// The slots a table needs to hold `entries` at most 5/8 full.
fn slots_for(entries: usize) -> usize {
    (entries.saturating_mul(8) / 5 + 1).max(MIN_SLOTS).next_power_of_two()
}

/// Asks the CPU for the cache lines of the slot at `home` in the table whose first slot is
/// `slots` and whose mask is `mask` (a hint: it never faults and changes nothing, so a stale
/// address is harmless). Both lines when the slot straddles two.
#[inline]
pub(crate) fn prefetch_slot<V>(slots: *const Slot<V>, mask: usize, home: usize) {
    let slot = slots.wrapping_add(home & mask);
    crate::prefetch(slot);
    crate::prefetch(slot.cast::<u8>().wrapping_add(std::mem::size_of::<Slot<V>>() - 1));
}

/// Independent tables: each resize moves 1/64 of the entries (no batch waits for a whole
/// map's copy), and the encoding's maps.
const STRIPES: usize = 64;

/// A map of 128-bit keys (already hashes) to small copyable values: 64 flat tables, key `key` in
/// table `key % 64` (the stripe of the 64 hash maps it replaced) at a slot of the keyed mix.
/// Insert-only (it is emptied whole). Encoded as the sequence of the 64 tables, each a map of
/// key to value: the format of those hash maps, so checkpoints are read right by the builds
/// before as well as after (entries come in slot order, which the secret decides: the same
/// map's bytes differ between processes; nothing compares them). `reserve` is for benches.
#[derive(Clone)]
pub struct FlatMap<V> {
    stripes: Box<[Table<V>]>,
    seed: Seed,
}

impl<V: Copy> Default for FlatMap<V> {
    fn default() -> Self {
        FlatMap { stripes: (0..STRIPES).map(|_| Table::with_slots(MIN_SLOTS)).collect(), seed: Seed::new() }
    }
}

impl<V: Copy> FlatMap<V> {
    /// The table of `key`.
    #[inline]
    fn stripe_of(key: u128) -> usize {
        (key % STRIPES as u128) as usize
    }

    #[inline]
    fn stripe(&self, key: u128) -> &Table<V> {
        &self.stripes[Self::stripe_of(key)]
    }

    /// The value of `key`.
    #[inline]
    pub fn get(&self, key: u128) -> Option<&V> {
        let table = self.stripe(key);
        table.find(key, self.seed.home(key)).ok().and_then(|index| table.value(index))
    }

    /// Inserts or replaces; returns the value replaced.
    pub fn insert(&mut self, key: u128, value: V) -> Option<V> {
        let (home, seed) = (self.seed.home(key), self.seed);
        let table = &mut self.stripes[Self::stripe_of(key)];
        match table.find(key, home) {
            Ok(index) => table.slots[index].value.replace(value),
            Err(index) => {
                table.put(index, key, value, &seed);
                None
            }
        }
    }

    /// Asks for the cache lines `get(key)` or `insert(key, ..)` will read first (a hint, for a
    /// lookup a few keys later).
    #[inline]
    pub fn prefetch(&self, key: u128) {
        let table = self.stripe(key);
        prefetch_slot(table.slots.as_ptr(), table.mask(), self.seed.home(key));
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.stripes.iter().map(Table::len).sum()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.stripes.iter().all(|table| table.len == 0)
    }

    /// Makes room for `additional` more entries spread over the stripes.
    pub fn reserve(&mut self, additional: usize) {
        let seed = self.seed;
        for table in self.stripes.iter_mut() {
            table.reserve(additional / STRIPES + 1, &seed);
        }
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u128, &V)> {
        self.stripes.iter().flat_map(Table::iter)
    }
}

impl<V: Copy + fmt::Debug> fmt::Debug for FlatMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// One stripe, encoded as a map.
struct StripeEntries<'a, V>(&'a Table<V>);

impl<V: Copy + Serialize> Serialize for StripeEntries<'_, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len))?;
        for (key, value) in self.0.iter() {
            map.serialize_entry(&key, value)?;
        }
        map.end()
    }
}

impl<V: Copy + Serialize> Serialize for FlatMap<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(STRIPES))?;
        for table in self.stripes.iter() {
            seq.serialize_element(&StripeEntries(table))?;
        }
        seq.end()
    }
}

/// Reads one encoded map's entries into the map being decoded (wherever they belong now).
struct IntoMap<'a, V>(&'a mut FlatMap<V>);

impl<'de, V: Copy + Deserialize<'de>> DeserializeSeed<'de> for IntoMap<'_, V> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, V: Copy + Deserialize<'de>> Visitor<'de> for IntoMap<'_, V> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of keys to values")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
        while let Some((key, value)) = entries.next_entry::<u128, V>()? {
            self.0.insert(key, value);
        }
        Ok(())
    }
}

impl<'de, V: Copy + Deserialize<'de>> Deserialize<'de> for FlatMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Stripes<V>(PhantomData<V>);
        impl<'de, V: Copy + Deserialize<'de>> Visitor<'de> for Stripes<V> {
            type Value = FlatMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sequence of maps")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FlatMap<V>, A::Error> {
                let mut map = FlatMap::default();
                while seq.next_element_seed(IntoMap(&mut map))?.is_some() {}
                Ok(map)
            }
        }
        deserializer.deserialize_seq(Stripes(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_record_slot_takes_40_bytes_and_a_claim_24() {
        assert_eq!(std::mem::size_of::<Slot<crate::ledger::state::IdempotencyRecord>>(), 40);
        assert_eq!(std::mem::size_of::<Slot<crate::ledger::types::ShardId>>(), 24);
    }

    #[test]
    fn the_zero_key_is_a_key_and_keys_differing_in_one_word_are_two() {
        let mut map: FlatMap<u32> = FlatMap::default();
        assert_eq!(map.get(0), None);
        assert_eq!(map.insert(0, 1), None);
        assert_eq!(map.insert(1, 2), None);
        assert_eq!(map.insert(1 << 64, 3), None);
        assert_eq!(map.insert(0, 4), Some(1));
        assert_eq!((map.get(0), map.get(1), map.get(1 << 64), map.len()), (Some(&4), Some(&2), Some(&3), 3));
    }

    #[test]
    fn a_map_sized_first_does_not_grow_and_its_copy_answers_the_same() {
        let mut map: FlatMap<u64> = FlatMap::default();
        map.reserve(100_000);
        let slots: usize = map.stripes.iter().map(|table| table.slots.len()).sum();
        assert!(slots * 5 / 8 >= 100_000, "{slots} slots");
        for key in 0..100_000u128 {
            map.insert(key.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835), key as u64);
        }
        assert_eq!((map.stripes.iter().map(|table| table.slots.len()).sum::<usize>(), map.len()), (slots, 100_000));
        let copy = map.clone();
        assert_eq!((copy.len(), copy.get(0), copy.get(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)), (100_000, Some(&0), Some(&1)));
    }

    /// The encoding is the one of the 64 hash maps it replaced (`StripedMap`, entry `key` in
    /// map `key % 64`), both ways: old checkpoints decode, and builds before read new ones.
    #[test]
    fn encodes_as_the_striped_hash_maps_did() {
        use crate::ledger::state::FastMap;
        use bincode::Options;
        /// What the builds before encoded (`growth::StripedMap`): one field, 64 Fx hash maps.
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct StripedMap {
            stripes: Vec<FastMap<u128, u64>>,
        }
        let codec = crate::journal::codec;
        let mut striped = StripedMap { stripes: vec![FastMap::default(); STRIPES] };
        let mut map: FlatMap<u64> = FlatMap::default();
        for n in 0..5_000u128 {
            let key = n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
            striped.stripes[(key as usize) % STRIPES].insert(key, n as u64 * 3);
            map.insert(key, n as u64 * 3);
        }
        let sorted = |map: &FlatMap<u64>| {
            let mut all: Vec<(u128, u64)> = map.iter().map(|(k, v)| (k, *v)).collect();
            all.sort_unstable();
            all
        };
        let old: FlatMap<u64> = codec().deserialize(&codec().serialize(&striped).unwrap()).unwrap();
        assert_eq!(sorted(&old), sorted(&map));
        let back: StripedMap = codec().deserialize(&codec().serialize(&map).unwrap()).unwrap();
        assert_eq!(back, striped);
    }

    proptest! {
        /// Inserts, lookups, reserves and a clone answer like a `HashMap`, with keys spread or all
        /// crowded on one home slot (a seed of zero: home = low * high = 0 for a high word of 0),
        /// through growth.
        #[test]
        fn flat_map_behaves_like_a_map(ops in proptest::collection::vec((any::<u16>(), any::<u32>(), 0..8u8), 1..800), crowded in any::<bool>()) {
            let mut map: FlatMap<u32> = FlatMap::default();
            if crowded {
                map.seed = Seed(0, 0);
            }
            let key_of = |k: u16| if crowded { u128::from(k) } else { u128::from(k).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835) };
            let mut model = std::collections::HashMap::new();
            for (k, value, action) in ops {
                match action {
                    0 => map.reserve(usize::from(k) % 300),
                    1 => prop_assert_eq!(map.get(key_of(k)), model.get(&k)),
                    _ => prop_assert_eq!(map.insert(key_of(k), value), model.insert(k, value)),
                }
                prop_assert_eq!(map.len(), model.len());
            }
            let copy = map.clone();
            for (k, value) in &model {
                prop_assert_eq!(copy.get(key_of(*k)), Some(value));
            }
            prop_assert_eq!(copy.iter().count(), model.len());
        }
    }
}
