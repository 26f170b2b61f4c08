//! Flat open-addressed tables of 128-bit keys: the router's claims (`crate::claims`) and a
//! shard's hot and sealed idempotency records (`FlatMap`).
//!
//! Both are looked up once per order number, at hundreds of thousands a second, in tables of
//! tens of MB: each lookup is a cache miss. A flat table keeps the whole key and its value in one
//! slot (linear probing, at most 5/8 of the slots used, so a lookup reads about one cache line),
//! and a caller that knows the next keys asks for their slots ahead (`prefetch`): the misses of
//! several keys overlap instead of coming one after another. Slots are chosen by a keyed mix of
//! the key (a secret per claims or per map), so that order numbers chosen to collide cannot build
//! long probe runs.
//!
//! A slot whose key words are both zero is empty, so a new table is zeroed memory: a table of
//! 2 MB or more is mapped from the kernel, whose pages are zero and arrive as they are first
//! written (a large new or resized table costs no fill), and is advised onto huge pages (a
//! lookup in tens of MB is then a cache miss but not also a TLB miss, for which a prefetch would
//! wait on its page walk). Key 0, a key like any other, has a slot of its own past the probed
//! ones.

use std::alloc::Layout;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ptr::NonNull;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A table never has fewer probed slots (a power of two).
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

/// One entry: the key's two words and the value. A probed slot whose key words are both zero
/// is empty (its value is then never read); an occupied slot's value was written with its key.
#[repr(C)]
pub(crate) struct Slot<V> {
    low: u64,
    high: u64,
    value: MaybeUninit<V>,
}

impl<V: Copy> Clone for Slot<V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<V: Copy> Copy for Slot<V> {}

impl<V: Copy> Slot<V> {
    const EMPTY: Slot<V> = Slot { low: 0, high: 0, value: MaybeUninit::uninit() };

    fn new(key: u128, value: V) -> Slot<V> {
        Slot { low: key as u64, high: (key >> 64) as u64, value: MaybeUninit::new(value) }
    }

    /// Whether a probed slot is empty (no key but 0 has both words zero; key 0 is not probed).
    #[inline]
    fn is_empty(&self) -> bool {
        self.low | self.high == 0
    }

    /// Whether the slot's key words are `key`'s.
    #[inline]
    fn has_key(&self, key: u128) -> bool {
        self.low == key as u64 && self.high == (key >> 64) as u64
    }

    fn key(&self) -> u128 {
        u128::from(self.high) << 64 | u128::from(self.low)
    }
}

/// Slots of this many bytes or more are mapped from the kernel on huge pages (the size of one).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
const HUGE_PAGE: usize = 2 << 20;

/// Asks the kernel to back the whole huge pages inside `bytes` at `start` (memory the caller
/// owns: a table's mapping, a filter segment's allocation) with huge pages as they are first
/// written. Advice only: it never changes the memory's contents, and the kernel may ignore it
/// (huge pages off, none free); a range holding no whole huge page is left as it is. Nothing
/// off Linux.
pub(crate) fn advise_huge_pages(start: *mut u8, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        let first = (start as usize).next_multiple_of(HUGE_PAGE);
        let end = (start as usize + bytes) / HUGE_PAGE * HUGE_PAGE;
        if end > first {
            // SAFETY: the range lies inside the caller's memory (from its first huge-page
            // boundary to its last one); `MADV_HUGEPAGE` changes how the kernel backs those
            // pages, never what they hold, and a refusal changes nothing.
            unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (start, bytes);
}

/// Bytes of slots in tables mapped from the kernel, outside the allocator's own figures.
static MAPPED_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Bytes of slots the flat tables have mapped from the kernel (resident as they are written;
/// a table's slots are spread at random, so all of them soon after it is made). The allocator's
/// in-use figure does not count them; the process's memory accounting adds them.
pub fn mapped_table_bytes() -> u64 {
    MAPPED_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Owned slots, all zero (empty) when made: mapped from the kernel for `HUGE_PAGE` bytes or
/// more (on Linux), from the allocator's zeroed memory below.
struct Slots<V> {
    first: NonNull<Slot<V>>,
    count: usize,
    /// The mapping's start and length, when mapped (`first` is its first huge-page boundary).
    mapping: Option<(NonNull<u8>, usize)>,
}

// SAFETY: `Slots` owns its memory alone, like a `Box<[Slot<V>]>`.
unsafe impl<V: Send> Send for Slots<V> {}
// SAFETY: as above; shared access only reads.
unsafe impl<V: Sync> Sync for Slots<V> {}

impl<V> Slots<V> {
    fn layout(count: usize) -> Layout {
        Layout::array::<Slot<V>>(count).expect("a table's size fits the address space")
    }

    /// `count` (at least one) empty slots.
    fn zeroed(count: usize) -> Slots<V> {
        let layout = Self::layout(count);
        #[cfg(target_os = "linux")]
        if layout.size() >= HUGE_PAGE {
            // Room for the slots from the first huge-page boundary in the mapping on, in whole
            // huge pages (pages never written are never backed).
            let length = layout.size().next_multiple_of(HUGE_PAGE) + HUGE_PAGE;
            // SAFETY: an anonymous private mapping of fresh memory, placed by the kernel; it
            // touches nothing of ours.
            let start = unsafe { libc::mmap(std::ptr::null_mut(), length, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
            if start == libc::MAP_FAILED {
                std::alloc::handle_alloc_error(layout);
            }
            let first = (start as usize).next_multiple_of(HUGE_PAGE);
            // The mapping's whole huge pages from `first` on: the slots' and the rest of the
            // last one (`first` is less than a huge page past `start`).
            advise_huge_pages(first as *mut u8, layout.size().next_multiple_of(HUGE_PAGE));
            let first = NonNull::new(first as *mut Slot<V>).expect("a mapping is not at address 0");
            let mapping = NonNull::new(start.cast::<u8>()).expect("a mapping is not at address 0");
            MAPPED_BYTES.fetch_add(layout.size() as u64, std::sync::atomic::Ordering::Relaxed);
            return Slots { first, count, mapping: Some((mapping, length)) };
        }
        // SAFETY: `layout` is non-zero-sized (at least one slot of 16 bytes or more).
        let pointer = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<Slot<V>>();
        let first = NonNull::new(pointer).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Slots { first, count, mapping: None }
    }
}

impl<V> Slots<V> {
    /// Backs every page of the slots now, each written once with the zero it holds, so that
    /// the thread that fills them later does not wait for the kernel to clear fresh pages as
    /// entries land (`FlatMap::with_capacity_resident`).
    fn make_resident(&mut self) {
        let bytes = self.count * std::mem::size_of::<Slot<V>>();
        let start = self.first.as_ptr().cast::<u8>();
        // Every page's first byte, and the last byte (a table from the allocator need not start
        // on a page).
        for offset in (0..bytes).step_by(RESIDENT_STEP).chain(bytes.checked_sub(1)) {
            // SAFETY: inside the slots this value owns, borrowed exclusively (`&mut self`); the
            // byte is zero (the slots are empty) and stays zero, a valid `Slot`'s byte.
            unsafe { std::ptr::write_volatile(start.add(offset), 0) };
        }
    }
}

/// Bytes between two writes of `Slots::make_resident`: the smallest page.
const RESIDENT_STEP: usize = 4096;

impl<V> std::ops::Deref for Slots<V> {
    type Target = [Slot<V>];
    fn deref(&self) -> &[Slot<V>] {
        // SAFETY: `first` points at `count` slots this value owns, initialised: all-zero bytes
        // are a valid `Slot` (two integers and a `MaybeUninit`), and every write is a `Slot`.
        unsafe { std::slice::from_raw_parts(self.first.as_ptr(), self.count) }
    }
}

impl<V> std::ops::DerefMut for Slots<V> {
    fn deref_mut(&mut self) -> &mut [Slot<V>] {
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.first.as_ptr(), self.count) }
    }
}

impl<V: Copy> Clone for Slots<V> {
    fn clone(&self) -> Self {
        let mut copy = Slots::zeroed(self.count);
        copy.copy_from_slice(self);
        copy
    }
}

impl<V> Drop for Slots<V> {
    fn drop(&mut self) {
        match self.mapping {
            #[cfg(target_os = "linux")]
            Some((start, length)) => {
                MAPPED_BYTES.fetch_sub(Self::layout(self.count).size() as u64, std::sync::atomic::Ordering::Relaxed);
                // SAFETY: the mapping `zeroed` made, unmapped once; nothing refers to it past `self`.
                unsafe { libc::munmap(start.as_ptr().cast(), length) };
            }
            // SAFETY: the memory `zeroed` had from the allocator with this layout, freed once.
            _ => unsafe { std::alloc::dealloc(self.first.as_ptr().cast(), Self::layout(self.count)) },
        }
    }
}

/// A power-of-two number of probed slots, at most 5/8 of the table used (linear probing then
/// looks at about four slots for a key it does not hold, two for one it does), then key 0's slot.
pub(crate) struct Table<V> {
    slots: Slots<V>,
    len: usize,
    /// Whether key 0 is held (in the last slot).
    zero: bool,
}

impl<V: Copy> Clone for Table<V> {
    fn clone(&self) -> Self {
        Table { slots: self.slots.clone(), len: self.len, zero: self.zero }
    }
}

impl<V: Copy> Table<V> {
    /// A table of at least `count` probed slots.
    pub(crate) fn with_slots(count: usize) -> Table<V> {
        Table { slots: Slots::zeroed(count.max(MIN_SLOTS).next_power_of_two() + 1), len: 0, zero: false }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// How many slots are probed (a power of two).
    fn probed(&self) -> usize {
        self.slots.len() - 1
    }

    /// The probed slots' mask.
    pub(crate) fn mask(&self) -> usize {
        self.probed() - 1
    }

    /// Key 0's slot.
    fn zero_index(&self) -> usize {
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
        if key == 0 {
            let index = self.zero_index();
            return if self.zero { Ok(index) } else { Err(index) };
        }
        let mask = self.mask();
        let mut index = home & mask;
        loop {
            let slot = &self.slots[index];
            if slot.has_key(key) {
                return Ok(index);
            }
            if slot.is_empty() {
                return Err(index);
            }
            index = (index + 1) & mask;
        }
    }

    /// Whether slot `index` holds an entry.
    #[inline]
    fn occupied(&self, index: usize) -> bool {
        if index == self.zero_index() {
            self.zero
        } else {
            !self.slots[index].is_empty()
        }
    }

    /// The value in slot `index` (`None` if it is empty).
    pub(crate) fn value(&self, index: usize) -> Option<&V> {
        // SAFETY: an occupied slot's value was written with its key (`place`).
        self.occupied(index).then(|| unsafe { self.slots[index].value.assume_init_ref() })
    }

    /// The value in slot `index`, mutably.
    pub(crate) fn value_mut(&mut self, index: usize) -> Option<&mut V> {
        // SAFETY: as in `value`.
        self.occupied(index).then(|| unsafe { self.slots[index].value.assume_init_mut() })
    }

    /// Writes `key` and `value` into the empty slot `index` (from `find`).
    fn place(&mut self, index: usize, key: u128, value: V) {
        self.slots[index] = Slot::new(key, value);
        self.zero |= key == 0;
        self.len += 1;
    }

    /// Puts `key` and `value` in the empty slot `index` (from `find`), growing the table past
    /// 5/8 full.
    pub(crate) fn put(&mut self, index: usize, key: u128, value: V, seed: &Seed) {
        self.place(index, key, value);
        if self.len * 8 > self.probed() * 5 {
            self.resize(self.probed() * 2, seed);
        }
    }

    /// Empties slot `index` and moves later slots of its probe run back (backward-shift
    /// deletion: no tombstones, so lookups stay as short as the load allows). Shrinks a table
    /// that fell under 1/8 full.
    pub(crate) fn remove(&mut self, mut index: usize, seed: &Seed) {
        if index == self.zero_index() {
            self.zero = false;
        } else {
            let mask = self.mask();
            let mut next = (index + 1) & mask;
            loop {
                let slot = self.slots[next];
                if slot.is_empty() {
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
        }
        self.slots[index] = Slot::EMPTY;
        self.len -= 1;
        if self.probed() > MIN_SLOTS && self.len * 8 < self.probed() {
            self.resize(self.probed() / 2, seed);
        }
    }

    /// Makes room for `additional` more entries without growing in between.
    pub(crate) fn reserve(&mut self, additional: usize, seed: &Seed) {
        let needed = slots_for(self.len + additional);
        if needed > self.probed() {
            self.resize(needed, seed);
        }
    }

    fn resize(&mut self, count: usize, seed: &Seed) {
        let old = std::mem::replace(self, Table::with_slots(count));
        for (key, value) in old.iter() {
            if let Err(index) = self.find(key, seed.home(key)) {
                self.place(index, key, *value);
            }
        }
    }

    /// Every entry, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u128, &V)> {
        let probed = self.slots[..self.zero_index()].iter().filter(|slot| !slot.is_empty());
        probed.chain(self.zero.then(|| &self.slots[self.zero_index()])).map(|slot| {
            // SAFETY: only occupied slots pass the filters above (see `value`).
            (slot.key(), unsafe { slot.value.assume_init_ref() })
        })
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

/// How many maps the encoding has: the 64 hash maps `FlatMap` replaced, entry `key` in map
/// `key % 64`.
const ENCODED_MAPS: usize = 64;

/// A map of 128-bit keys (already hashes) to small copyable values in one flat table at slots
/// of a keyed mix. Insert-only (it is emptied whole). It grows by doubling; sized first
/// (`with_capacity` or `reserve`, as a shard does for each new generation of records, from the
/// one before) it does not pause to grow until it holds more. Encoded as a sequence of 64 maps
/// of key to value, entry `key` in map `key % 64`: the format of the striped hash maps it
/// replaced, so checkpoints are read right by the builds before as well as after (the entries'
/// order within a map is not kept: the same map's bytes differ between processes; nothing
/// compares them).
pub struct FlatMap<V> {
    table: Table<V>,
    seed: Seed,
}

impl<V: Copy> Clone for FlatMap<V> {
    fn clone(&self) -> Self {
        FlatMap { table: self.table.clone(), seed: self.seed }
    }
}

impl<V: Copy> Default for FlatMap<V> {
    fn default() -> Self {
        FlatMap::with_capacity(0)
    }
}

impl<V: Copy> FlatMap<V> {
    /// An empty map with room for `capacity` entries (its pages are backed as entries land).
    pub fn with_capacity(capacity: usize) -> Self {
        FlatMap { table: Table::with_slots(slots_for(capacity)), seed: Seed::new() }
    }

    /// `with_capacity`, every page of its table backed now: made ahead of time on a thread of
    /// its own, it spares the thread that fills it the kernel's clearing of fresh pages (the
    /// shard's next hot map, `ShardState::expect_records_with`).
    pub fn with_capacity_resident(capacity: usize) -> Self {
        let mut map = FlatMap::with_capacity(capacity);
        map.table.slots.make_resident();
        map
    }

    /// The value of `key`.
    #[inline]
    pub fn get(&self, key: u128) -> Option<&V> {
        self.table.find(key, self.seed.home(key)).ok().and_then(|index| self.table.value(index))
    }

    /// Inserts or replaces; returns the value replaced.
    pub fn insert(&mut self, key: u128, value: V) -> Option<V> {
        match self.table.find(key, self.seed.home(key)) {
            Ok(index) => self.table.value_mut(index).map(|old| std::mem::replace(old, value)),
            Err(index) => {
                self.table.put(index, key, value, &self.seed);
                None
            }
        }
    }

    /// Asks for the cache lines `get(key)` or `insert(key, ..)` will read first (a hint, for a
    /// lookup a few keys later).
    #[inline]
    pub fn prefetch(&self, key: u128) {
        prefetch_slot(self.table.slots.as_ptr(), self.table.mask(), self.seed.home(key));
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.table.len
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.table.len == 0
    }

    /// How many entries it holds before it grows.
    pub fn capacity(&self) -> usize {
        self.table.probed() * 5 / 8
    }

    /// Makes room for `additional` more entries.
    pub fn reserve(&mut self, additional: usize) {
        self.table.reserve(additional, &self.seed);
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u128, &V)> {
        self.table.iter()
    }
}

impl<V: Copy + fmt::Debug> fmt::Debug for FlatMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// The encoded map of `key`.
fn encoded_map_of(key: u128) -> usize {
    (key % ENCODED_MAPS as u128) as usize
}

/// The entries of one encoded map, encoded as a map.
struct Entries<'a, V>(&'a [(u128, V)]);

impl<V: Copy + Serialize> Serialize for Entries<'_, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<V: Copy + Serialize> Serialize for FlatMap<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut entries: Vec<(u128, V)> = self.iter().map(|(key, value)| (key, *value)).collect();
        entries.sort_unstable_by_key(|(key, _)| encoded_map_of(*key));
        let mut seq = serializer.serialize_seq(Some(ENCODED_MAPS))?;
        let mut rest = &entries[..];
        for map in 0..ENCODED_MAPS {
            let (these, after) = rest.split_at(rest.partition_point(|(key, _)| encoded_map_of(*key) == map));
            seq.serialize_element(&Entries(these))?;
            rest = after;
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
        let slots = map.table.probed();
        assert!(slots * 5 / 8 >= 100_000, "{slots} slots");
        for key in 0..100_000u128 {
            map.insert(key.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835), key as u64);
        }
        assert_eq!((map.table.probed(), map.len()), (slots, 100_000));
        let copy = map.clone();
        assert_eq!((copy.len(), copy.get(0), copy.get(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)), (100_000, Some(&0), Some(&1)));
    }

    /// A table of 2 MB or more is a mapping on huge-page boundaries (on Linux); filled well
    /// past its first size, with key 0 among its keys, it and its copy answer for every key, and
    /// its slots outside the entries read empty.
    #[test]
    fn a_large_table_is_mapped_zeroed_and_answers_through_growth() {
        let before = mapped_table_bytes();
        let mut map: FlatMap<u64> = FlatMap::with_capacity(60_000);
        assert_eq!(map.table.probed(), 131_072);
        #[cfg(target_os = "linux")]
        {
            assert!(map.table.slots.mapping.is_some() && (map.table.slots.as_ptr() as usize).is_multiple_of(HUGE_PAGE));
            // Counted for the process's memory figures (nextest runs each test in its own process).
            assert_eq!(mapped_table_bytes() - before, 131_073 * 24);
        }
        assert!(map.table.slots.iter().all(Slot::is_empty) && map.iter().next().is_none());
        let key = |n: u64| u128::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
        for n in 0..200_000 {
            assert_eq!(map.insert(key(n), n), None);
        }
        assert_eq!((map.len(), map.table.probed()), (200_000, 524_288));
        let copy = map.clone();
        drop(map);
        assert!((0..200_000).all(|n| copy.get(key(n)) == Some(&n)));
        assert_eq!((copy.get(key(200_000)), copy.iter().count()), (None, 200_000));
        let occupied = copy.table.slots.iter().filter(|slot| !slot.is_empty()).count();
        assert_eq!(occupied, 199_999, "key 0 (n = 0) sits in its own slot past the probed ones");
        drop(copy);
        assert_eq!(mapped_table_bytes(), before, "every mapping is counted out when dropped");
    }

    /// A map made resident ahead of time is an empty map of the same room, every page backed
    /// (read from `/proc/self/smaps_rollup`'s anonymous bytes where there is one), that fills
    /// and answers as any other.
    #[test]
    fn a_resident_map_is_empty_backed_and_fills_as_another() {
        let anonymous = || -> Option<u64> {
            let text = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
            text.lines().find_map(|line| line.strip_prefix("Anonymous:")).and_then(|kib| kib.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        };
        let before = anonymous();
        let mut map: FlatMap<u64> = FlatMap::with_capacity_resident(300_000);
        let after = anonymous();
        assert_eq!((map.len(), map.capacity()), (0, FlatMap::<u64>::with_capacity(300_000).capacity()));
        assert!(map.table.slots.iter().all(Slot::is_empty) && map.iter().next().is_none());
        if let (Some(before), Some(after)) = (before, after) {
            // 524,289 slots of 24 bytes (12 MiB): all backed at once, not as entries land.
            assert!(after.saturating_sub(before) >= 12_000, "{before} -> {after} KiB anonymous");
        }
        let key = |n: u64| u128::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
        for n in 0..300_000 {
            assert_eq!(map.insert(key(n), n), None);
        }
        assert_eq!(map.table.probed(), 524_288, "sized first, it did not grow");
        assert!((0..300_000).all(|n| map.get(key(n)) == Some(&n)) && map.get(key(300_000)).is_none());
        let small: FlatMap<u64> = FlatMap::with_capacity_resident(3);
        assert_eq!((small.len(), small.table.slots.mapping.is_none()), (0, true), "small tables come from the allocator");
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
        let mut striped = StripedMap { stripes: vec![FastMap::default(); ENCODED_MAPS] };
        let mut map: FlatMap<u64> = FlatMap::default();
        for n in 0..5_000u128 {
            let key = n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
            striped.stripes[(key as usize) % ENCODED_MAPS].insert(key, n as u64 * 3);
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
