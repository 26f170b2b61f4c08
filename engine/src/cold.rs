//! Cold idempotency records: order numbers accepted (or, since journal format 5, whose command
//! was refused with a refusal the number keeps) long enough ago that memory no longer holds
//! them, kept in the store and read back before a batch that names them.
//!
//! A shard's hot map (`ShardState::idempotency`) holds the records created since its last
//! checkpoint. A checkpoint seals that map (`ShardState::seal_idempotency`) and writes every
//! sealed record here as a row, stamped with the checkpoint's batch, BEFORE the state and the
//! manifest (see `checkpoint::write`); the checkpoint's state then holds none of them, and the
//! live shard drops the sealed map once the checkpoint is durable.
//!
//! Layout: `h/i/` + the record's key (16 bytes, big-endian) -> `COLD_FORMAT_VERSION`, then the
//! codec's encoding of a `ColdRow` (the shard that accepted the order number, the stamp, the
//! record). An order number belongs to one shard only (the router's claims see to it), so the key
//! needs no shard and a lookup from any shard is one point read.
//!
//! Rows are written once and never changed or deleted (a later checkpoint that writes the same
//! key again, after a fall-back replayed its batch, writes the same bytes: replay is exact).
//!
//! **Versioning.** The stamp is the batch of the checkpoint that sealed the record, so the record
//! was created at or before it. A shard applying batch B sees only its rows stamped before B:
//! after a fall-back to an older checkpoint, the rows a newer (torn or corrupt) checkpoint wrote
//! are ignored until the replay has passed their stamp, by when the replay has made those records
//! again, in memory, exactly as they were.
//!
//! **Lookups stay out of `apply`.** Before a batch is applied (live in the shard loop, and in
//! every replay), `prefetch` gathers the batch's order-number keys that memory does not hold,
//! drops those the engine's `ColdFilter` (every cold key, in memory) says are not cold (nearly
//! every new number: measured, RocksDB alone took ~25 µs per missing key with 10 M rows), reads
//! the rest in one sorted `get_many`, and hands what it found to the state
//! (`ShardState::admit_cold`) for that batch only. A row of another shard means the order number is taken: the command is a conflict, as
//! the router's claims would have said before a restart forgot them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use storage::{StorageError, Store};

use crate::journal::codec;
use crate::ledger::command::{idempotency_key, Command, Envelope};
use crate::ledger::flat::FlatMap;
use crate::ledger::state::{ColdHit, IdempotencyRecord, ShardState};
use crate::ledger::types::ShardId;
use crate::PREFETCH_AHEAD;

/// The key prefix of cold idempotency rows (`h/` for history moved out of memory).
pub const COLD_PREFIX: &[u8; 4] = b"h/i/";

/// The first byte of every cold row's value.
pub const COLD_FORMAT_VERSION: u8 = 1;

/// Rows whose earlier rows a checkpoint looks up at once (one batched read) before writing them.
pub const ROWS_PER_LOOKUP: usize = 65_536;

/// Rows encoded between two calls of `write_rows`' `give_way` (a few hundred microseconds).
const GIVE_WAY_ROWS: usize = 4_096;

/// One cold record as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColdRow {
    /// The shard that accepted the order number.
    pub shard: ShardId,
    /// The batch of the checkpoint that sealed it (it was created at or before that batch).
    pub stamp: u64,
    pub record: IdempotencyRecord,
}

/// The storage key of the cold row of idempotency key `key`.
pub fn cold_key(key: u128) -> [u8; 20] {
    let mut bytes = [0u8; 20];
    bytes[..4].copy_from_slice(COLD_PREFIX);
    bytes[4..].copy_from_slice(&key.to_be_bytes());
    bytes
}

/// Encodes a row: the version byte, then the codec's bytes.
pub fn encode_row(row: &ColdRow) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_row_into(row, &mut bytes);
    bytes
}

/// Appends a row's encoding (`encode_row`) to `bytes`.
fn encode_row_into(row: &ColdRow, bytes: &mut Vec<u8>) {
    bytes.push(COLD_FORMAT_VERSION);
    crate::codec::encode_into(row, bytes).expect("cold rows serialize");
}

/// Decodes a row stored under `key`; a row that does not decode is a storage error (the store
/// returned other bytes than were written).
pub fn decode_row(key: u128, bytes: &[u8]) -> Result<ColdRow, StorageError> {
    use bincode::Options;
    match bytes.split_first() {
        Some((&COLD_FORMAT_VERSION, body)) => {
            codec().deserialize(body).map_err(|e| StorageError::Io(format!("cold idempotency row {key:032x} does not decode: {e}")))
        }
        Some((version, _)) => {
            Err(StorageError::Io(format!("cold idempotency row {key:032x} has format version {version}; this build reads {COLD_FORMAT_VERSION}")))
        }
        None => Err(StorageError::Io(format!("cold idempotency row {key:032x} is empty"))),
    }
}

/// Writes every record of `sealed` as a cold row of `shard` stamped `stamp`, all in one
/// `Store::write_sorted` (RocksDB: one table file; other stores: synced writes in parts), the
/// rows already there looked up `ROWS_PER_LOOKUP` at a time. Every row is held encoded until
/// then (about 60 bytes each beside the sealed records: 15 MB for a checkpoint of 250,000).
/// Returns how many records it covered.
///
/// A record the shard already has a row for, stamped at or below `stamp`, keeps that row: the
/// lower stamp is the truer one (the record existed by then), and a checkpoint between the two
/// stamps may rely on it (its state no longer holds the record; a fall-back to it replays the
/// batches after it, which must see the row). This happens after a fall-back to an older
/// checkpoint, or when a checkpoint's sealed records went back to memory after its rows were
/// written (a failed pruning): the same records are sealed again by a later checkpoint.
///
/// Only keys `filter` (every durable row's key, when given) may hold are read first: almost
/// every sealed record is new, and reading millions of absent keys would cost the checkpoint
/// seconds. `give_way` is called before each chunk of lookups and every `GIVE_WAY_ROWS` rows
/// (`checkpoint::Aids::give_way`).
pub fn write_rows(
    store: &dyn Store,
    shard: ShardId,
    stamp: u64,
    sealed: &FlatMap<IdempotencyRecord>,
    filter: Option<&ColdFilter>,
    give_way: &dyn Fn(),
) -> Result<usize, StorageError> {
    let mut records: Vec<(u128, IdempotencyRecord)> = sealed.iter().map(|(key, record)| (key, *record)).collect();
    records.sort_unstable_by_key(|(key, _)| *key);
    // Every row in one sorted write (`Store::write_sorted`: RocksDB takes them in as one table
    // file, so one file a checkpoint, not one a chunk); the keys and values each in one buffer.
    let mut keys: Vec<[u8; 20]> = Vec::with_capacity(records.len());
    let mut values = Vec::with_capacity(records.len() * 24);
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::with_capacity(records.len());
    for chunk in records.chunks(ROWS_PER_LOOKUP) {
        give_way();
        let chunk_keys: Vec<[u8; 20]> = chunk.iter().map(|(key, _)| cold_key(*key)).collect();
        let maybe: Vec<usize> = match filter {
            Some(filter) => filter.positions_maybe_held(chunk.len(), |i| chunk[i].0),
            None => (0..chunk.len()).collect(),
        };
        let found = store.get_many(&maybe.iter().map(|i| &chunk_keys[*i][..]).collect::<Vec<_>>())?;
        let mut existing: Vec<Option<Vec<u8>>> = vec![None; chunk.len()];
        for (i, value) in maybe.into_iter().zip(found) {
            existing[i] = value;
        }
        for (i, ((key, record), (stored_key, found))) in chunk.iter().zip(chunk_keys.into_iter().zip(existing)).enumerate() {
            if i % GIVE_WAY_ROWS == GIVE_WAY_ROWS - 1 {
                give_way();
            }
            if let Some(bytes) = found {
                let row = decode_row(*key, &bytes)?;
                if row.shard == shard && row.stamp <= stamp {
                    continue;
                }
            }
            let start = values.len();
            encode_row_into(&ColdRow { shard, stamp, record: *record }, &mut values);
            keys.push(stored_key);
            ranges.push(start..values.len());
        }
    }
    // Ascending: the records are sorted by key, and a cold key is the key big-endian.
    let puts: Vec<(&[u8], &[u8])> = keys.iter().zip(ranges).map(|(key, value)| (&key[..], &values[value])).collect();
    if !puts.is_empty() {
        store.write_sorted(&puts)?;
    }
    Ok(records.len())
}

/// The cold row of `key`, whichever shard it belongs to.
pub fn read_row(store: &dyn Store, key: u128) -> Result<Option<ColdRow>, StorageError> {
    store.get(&cold_key(key))?.map(|bytes| decode_row(key, &bytes)).transpose()
}

/// The record of `key` a running shard `shard` holds in the store (any stamp: a running shard
/// has replayed past every stamp of its own rows).
pub fn read_record(store: &dyn Store, shard: ShardId, key: u128) -> Result<Option<IdempotencyRecord>, StorageError> {
    Ok(read_row(store, key)?.filter(|row| row.shard == shard).map(|row| row.record))
}

/// Appends the idempotency keys `envelope` looks up: its own order number and, for a batch
/// payment, each order's (in the payment scope).
pub fn keys_of(envelope: &Envelope, keys: &mut Vec<u128>) {
    if let Some(number) = &envelope.out_order_no {
        keys.push(idempotency_key(envelope.platform, envelope.command.idempotency_scope(), number));
    }
    if let Command::BatchPayment { orders, .. } = &envelope.command {
        keys.extend(orders.iter().map(|order| idempotency_key(envelope.platform, Command::PAYMENT_SCOPE, &order.out_order_no)));
    }
}

/// An in-memory Bloom filter of the keys of every cold row, of all shards: a new order number
/// (nearly every probe) is answered here without asking the store. No false negatives: a key's
/// bits are set once its row is durable and before memory or the router's claims let go of it,
/// and `load` sets them for every row already stored. False positives (at most about 0.15 % a
/// segment) only cost a store read, which the stamp rule then judges as usual.
///
/// Blocked (one 64-byte block per key, six bits in it, from the key itself: keys are XXH3-128
/// hashes already), so a lookup touches one cache line a segment. It grows with the rows: new
/// keys go into the newest segment, and once a third of that segment's bits are set (about 15
/// bits a key) a segment twice its size is added (up to `COLD_FILTER_BYTES_MAX` in all). A
/// lookup asks every segment, so the false positives are about the sum of the segments' (a
/// server that began with 32 MiB holds 100 M rows in 32 + 64 + 128 MiB, about 0.3 %; at 45 %
/// set, 10 bits a key, until session 34 the same bytes let about 2 % through, each a RocksDB
/// read on the shard's thread of 0.2-0.4 ms at 100 M rows). A filter of a fixed
/// size, as before, let most new numbers through to the store past about 27 M rows, each a
/// RocksDB read on the shard's thread.
pub struct ColdFilter {
    /// The segments, oldest first; those set are a prefix.
    segments: [std::sync::OnceLock<Segment>; MAX_SEGMENTS],
    /// Held while adding a segment (one at a time).
    growing: std::sync::Mutex<()>,
    /// Set once a segment could not be added (the byte bound, the segment count, or the
    /// allocator refused): the newest takes every key from then on, its false positives climb.
    stopped: std::sync::atomic::AtomicBool,
    /// The most bytes the segments may take in all (`COLD_FILTER_BYTES_MAX`; less in tests).
    bytes_max: usize,
    /// The saved head this filter was read from and checked against (`load_saved`): a stop that
    /// would save the same (no checkpoint since, the same bits) writes nothing.
    saved_head: Option<Vec<u8>>,
}

/// The most segments a filter has (with each twice the one before, far past the byte bound).
const MAX_SEGMENTS: usize = 12;

/// One segment: 64-byte blocks of bits, and how many of them are set.
struct Segment {
    /// The allocation: the blocks' words and up to seven words before them, so that the first
    /// block can start on a cache line (`first`).
    memory: Box<[std::sync::atomic::AtomicU64]>,
    /// The index in `memory` of the first block's first word (64-byte aligned): each key's bits
    /// are then in one cache line, so a probe misses the cache once (the allocator's 16-byte
    /// header put most blocks of a plain array across two lines).
    first: usize,
    /// How many 64-byte blocks.
    blocks: usize,
    set_bits: std::sync::atomic::AtomicU64,
}

impl Segment {
    /// A segment of `bytes` (a multiple of 64), all bits clear. The memory comes zeroed from the
    /// allocator (`calloc`: pages the kernel maps in only once written), so adding a segment of
    /// hundreds of megabytes costs no pass over it on the thread that adds it. Aborts when the
    /// allocator refuses, as any allocation does (`try_with_bytes` does not).
    fn with_bytes(bytes: usize) -> Segment {
        Segment::try_with_bytes(bytes).unwrap_or_else(|layout| std::alloc::handle_alloc_error(layout))
    }

    /// As `with_bytes`, or the layout the allocator refused.
    fn try_with_bytes(bytes: usize) -> Result<Segment, std::alloc::Layout> {
        assert!(bytes >= 64 && bytes.is_multiple_of(64), "whole 64-byte blocks");
        // Seven words more than the blocks need, to start them on a cache line. The layout's
        // alignment stays that of `u64`: a larger one would make the allocator zero the whole
        // segment itself (`posix_memalign` and a memset) instead of `calloc`.
        let len = bytes / 8 + 7;
        let layout = std::alloc::Layout::array::<std::sync::atomic::AtomicU64>(len).expect("a segment's size fits the address space");
        // SAFETY: `layout` is non-zero-sized (at least 15 words) and of `len` `AtomicU64`s; an
        // all-zero `AtomicU64` is a valid one (it has the in-memory representation of `u64`); the
        // pointer comes from the global allocator with exactly this layout, as `Box` frees it.
        let pointer = unsafe { std::alloc::alloc_zeroed(layout).cast::<std::sync::atomic::AtomicU64>() };
        if pointer.is_null() {
            return Err(layout);
        }
        // Every probe and insert lands on a random block of a segment of up to hundreds of
        // megabytes: with 4 KiB pages nearly each one also missed the TLB and walked the page
        // tables. On a 200 MB segment holding 50 M keys (criterion `cold_filter`, alternated),
        // inserts 34 against 25 M keys/s and the checkpoint's lookups 47 against 41 M keys/s
        // (ARCHITECTURE.md, "Measured", session 37).
        crate::ledger::flat::advise_huge_pages(pointer.cast(), layout.size());
        // SAFETY: as above; the pointer is non-null and owned by nothing else.
        let memory: Box<[std::sync::atomic::AtomicU64]> = unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(pointer, len)) };
        let first = (memory.as_ptr() as usize).wrapping_neg() % 64 / 8;
        Ok(Segment { memory, first, blocks: bytes / 64, set_bits: std::sync::atomic::AtomicU64::new(0) })
    }

    /// The blocks' words, in order.
    fn words(&self) -> &[std::sync::atomic::AtomicU64] {
        &self.memory[self.first..self.first + self.blocks * 8]
    }

    fn bytes(&self) -> usize {
        self.blocks * 64
    }

    /// Asks the CPU to bring `key`'s block into its cache (a hint: it never faults), so that a
    /// probe or insert a few keys later does not wait for it.
    fn prefetch(&self, key: u128) {
        crate::prefetch(&self.words()[self.block_of(key)]);
    }

    /// The first word of `key`'s block.
    fn block_of(&self, key: u128) -> usize {
        ((key as u64) % self.blocks as u64) as usize * 8
    }

    /// The block (first word) and the six bits of `key`.
    fn positions(&self, key: u128) -> (usize, [(usize, u64); 6]) {
        let block = self.block_of(key);
        let mut high = (key >> 64) as u64;
        let mut bits = [(0, 0); 6];
        for bit in &mut bits {
            let position = (high & 511) as usize;
            high >>= 9;
            *bit = (position / 64, 1u64 << (position % 64));
        }
        (block, bits)
    }

    fn insert(&self, key: u128) {
        let (block, bits) = self.positions(key);
        let words = self.words();
        let mut newly = 0;
        for (word, mask) in bits {
            if words[block + word].fetch_or(mask, std::sync::atomic::Ordering::Release) & mask == 0 {
                newly += 1;
            }
        }
        if newly > 0 {
            self.set_bits.fetch_add(newly, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn may_contain(&self, key: u128) -> bool {
        let (block, bits) = self.positions(key);
        let words = self.words();
        bits.iter().all(|(word, mask)| words[block + word].load(std::sync::atomic::Ordering::Acquire) & mask != 0)
    }

    /// A third of its bits set (about 15 bits a key; about 0.15 % false positives, a sixth of
    /// what 45 % set let through): new keys go to a new segment.
    fn full(&self) -> bool {
        self.set_bits.load(std::sync::atomic::Ordering::Relaxed) * 3 >= self.blocks as u64 * 512
    }

    /// Counts the bits set (after its words were filled in directly).
    fn count_bits(&self) {
        let set: u64 = self.words().iter().map(|w| u64::from(w.load(std::sync::atomic::Ordering::Relaxed).count_ones())).sum();
        self.set_bits.store(set, std::sync::atomic::Ordering::Relaxed);
    }

    /// More than 55 % of its bits set: fuller than growth leaves a segment (a third, 45 % before
    /// session 34, and a few keys inserted while the next one is added), so written by a filter
    /// that could not grow (the
    /// build before segments: one 32 MiB filter at 100 M rows was 89 % set, about half of all
    /// new numbers let through).
    fn overfull(&self) -> bool {
        self.set_bits.load(std::sync::atomic::Ordering::Relaxed) * 20 > self.blocks as u64 * 512 * 11
    }
}

/// Where a graceful stop saves the filter: its head, and its pieces under `m/f/p` + index.
const FILTER_HEAD: &[u8] = b"m/f/h";
const FILTER_PIECE_BYTES: usize = 4 << 20;

/// The saved head's format. 3 (session 64) has format 2's layout (each segment's size) and is
/// written by builds that set a checkpoint's bits right after its rows. Formats 1 (one size)
/// and 2 are not read: their builds set the bits only after a checkpoint's pruning, so a filter
/// they saved may lack the numbers of a checkpoint that failed there, and its retries would be
/// taken as new orders (helper 111). A start after an upgrade scans the rows once instead.
const FILTER_FORMAT: u8 = 3;

fn filter_piece_key(index: u32) -> [u8; 9] {
    let mut key = *b"m/f/p\0\0\0\0";
    key[5..].copy_from_slice(&index.to_be_bytes());
    key
}

/// A saved filter's head (`FILTER_FORMAT`, the layout of format 2): the format, the segment
/// count and each segment's size, the shard count, each shard's newest checkpoint, the hash of
/// the sizes and the pieces (`layout_hasher`). Formats 1 and 2 are no longer read.
fn filter_head(store: &dyn Store, sizes: &[usize], shard_count: u16, hash: &[u8; 32]) -> Result<Vec<u8>, StorageError> {
    let mut head = vec![FILTER_FORMAT, sizes.len() as u8];
    for size in sizes {
        head.extend_from_slice(&(*size as u64).to_le_bytes());
    }
    head.extend_from_slice(&shard_count.to_le_bytes());
    for shard in 0..shard_count {
        let newest = crate::checkpoint::list(store, shard)?.last().copied().unwrap_or(0);
        head.extend_from_slice(&newest.to_le_bytes());
    }
    head.extend_from_slice(hash);
    Ok(head)
}

/// The hasher of a saved filter, fed its segment sizes first: a head naming other sizes
/// (reordered, merged) for the same pieces would load the bits at other places, and keys would
/// be missed.
fn layout_hasher(sizes: &[usize]) -> blake3::Hasher {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[sizes.len() as u8]);
    sizes.iter().for_each(|size| {
        hasher.update(&(*size as u64).to_le_bytes());
    });
    hasher
}

/// The segment sizes a saved head names, if they are ones a filter can have.
fn saved_sizes(head: &[u8]) -> Option<Vec<usize>> {
    let (&format, rest) = head.split_first()?;
    if format != FILTER_FORMAT {
        return None;
    }
    let (count, rest) = (usize::from(*rest.first()?), rest.get(1..)?);
    if count == 0 || count > MAX_SEGMENTS {
        return None;
    }
    let sizes: Vec<usize> =
        rest.get(..count * 8)?.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))).map(|s| usize::try_from(s).unwrap_or(0)).collect();
    let total = sizes.iter().try_fold(0usize, |sum, size| sum.checked_add(*size))?;
    (sizes.iter().all(|size| *size >= 64 && size.is_multiple_of(64)) && total <= COLD_FILTER_BYTES_MAX).then_some(sizes)
}

/// Bytes of the cold-key filter's first segment: 32 MiB, about 27 million keys before the
/// filter grows.
pub const COLD_FILTER_BYTES: usize = 32 << 20;

/// The most bytes a filter grows to, and the largest saved filter a start takes.
const COLD_FILTER_BYTES_MAX: usize = 4096 << 20;

impl ColdFilter {
    /// An empty filter whose first segment is `bytes` (a multiple of 64).
    pub fn with_bytes(bytes: usize) -> ColdFilter {
        ColdFilter::of_segments(vec![Segment::with_bytes(bytes)])
    }

    fn of_segments(segments: Vec<Segment>) -> ColdFilter {
        let filter = ColdFilter {
            segments: Default::default(),
            growing: std::sync::Mutex::new(()),
            stopped: std::sync::atomic::AtomicBool::new(false),
            bytes_max: COLD_FILTER_BYTES_MAX,
            saved_head: None,
        };
        for (slot, segment) in filter.segments.iter().zip(segments) {
            let _ = slot.set(segment);
        }
        filter
    }

    fn each(&self) -> impl Iterator<Item = &Segment> + Clone {
        self.segments.iter().map_while(|slot| slot.get())
    }

    /// Bytes of every segment.
    pub fn bytes(&self) -> usize {
        self.each().map(Segment::bytes).sum()
    }

    /// How many segments the filter has grown to.
    pub fn segment_count(&self) -> usize {
        self.each().count()
    }

    /// Whether it could not add a segment when its newest was full (`grow`).
    pub fn stopped(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The filter of every cold row in `store` (a scan of the keys under `COLD_PREFIX`), its
    /// first segment `bytes`.
    pub fn load(store: &dyn Store, bytes: usize) -> Result<ColdFilter, StorageError> {
        let filter = ColdFilter::with_bytes(bytes);
        let mut end = COLD_PREFIX.to_vec();
        end.extend_from_slice(&[0xff; 17]);
        store.scan(COLD_PREFIX, &end, &mut |key, _| {
            if let Some(key) = key.get(4..20).and_then(|k| <[u8; 16]>::try_from(k).ok()) {
                filter.insert(u128::from_be_bytes(key));
            }
            true
        })?;
        Ok(filter)
    }

    /// The filter a graceful stop saved (`save`), if it still describes the store: the newest
    /// checkpoint of every shard is the one it was saved with (a checkpoint since, after a start
    /// that used it, may have written rows it lacks), and its bytes match their hash. Otherwise
    /// the filter of a scan of every cold row (`load`). Gives whether the saved one was used.
    ///
    /// Rows written by a checkpoint whose manifest never landed (a crash while writing one) are
    /// not in a saved filter; they need not be: recovery replays the batches that made those
    /// records, so they are in memory again, and rows of later checkpoints set their bits.
    pub fn load_saved_or_scan(store: &dyn Store, bytes: usize, shard_count: u16) -> Result<(ColdFilter, bool), StorageError> {
        if let Some(filter) = ColdFilter::load_saved(store, bytes, shard_count)? {
            return Ok((filter, true));
        }
        Ok((ColdFilter::load(store, bytes)?, false))
    }

    /// A saved filter of at least `bytes` in all is used with its own segments (one larger than
    /// asked, such as `clearing bench`'s, sized by the transfers it makes, answers with fewer
    /// false positives, and a scan of hundreds of millions of rows would take a minute). A
    /// smaller one is not: the configuration asks for more.
    fn load_saved(store: &dyn Store, bytes: usize, shard_count: u16) -> Result<Option<ColdFilter>, StorageError> {
        let Some(head) = store.get(FILTER_HEAD)? else { return Ok(None) };
        let Some(sizes) = saved_sizes(&head) else { return Ok(None) };
        if sizes.iter().sum::<usize>() < bytes {
            return Ok(None);
        }
        let expected = filter_head(store, &sizes, shard_count, &[0; 32])?;
        if head.len() != expected.len() || head[..expected.len() - 32] != expected[..expected.len() - 32] {
            return Ok(None);
        }
        let mut filter = ColdFilter::of_segments(sizes.iter().map(|size| Segment::with_bytes(*size)).collect());
        let mut hasher = layout_hasher(&sizes);
        for (index, piece) in filter.pieces(sizes.len()).enumerate() {
            let Some(value) = store.get(&filter_piece_key(index as u32))? else { return Ok(None) };
            if value.len() != piece.len() * 8 {
                return Ok(None);
            }
            hasher.update(&value);
            for (word, bytes) in piece.iter().zip(value.chunks_exact(8)) {
                word.store(u64::from_le_bytes(bytes.try_into().expect("8 bytes")), std::sync::atomic::Ordering::Relaxed);
            }
        }
        if hasher.finalize().as_bytes()[..] != head[head.len() - 32..] {
            return Ok(None);
        }
        filter.each().for_each(Segment::count_bits);
        // A segment fuller than growth leaves one, in a filter that can still grow: rebuilt by a
        // scan (once), so that it grows as it should have.
        if filter.each().any(Segment::overfull) && filter.next_size().is_some() {
            tracing::warn!(bytes = filter.bytes(), "the saved cold-key filter is fuller than growth leaves one: rebuilt from the rows");
            return Ok(None);
        }
        filter.saved_head = Some(head);
        Ok(Some(filter))
    }

    /// The words in saved pieces: each of the first `segments` segments' in turn,
    /// `FILTER_PIECE_BYTES` at most a piece.
    fn pieces(&self, segments: usize) -> impl Iterator<Item = &[std::sync::atomic::AtomicU64]> + Clone {
        self.each().take(segments).flat_map(|segment| segment.words().chunks(FILTER_PIECE_BYTES / 8))
    }

    /// Saves the filter for the next start (`load_saved_or_scan`): its pieces, then a head
    /// naming each segment's size, each shard's newest checkpoint and the pieces' hash. Called
    /// at a graceful stop, once the shards have stopped and written their last checkpoints.
    /// Writes nothing when what is saved is this filter already (read from it at the start,
    /// checked whole, and neither a checkpoint nor a bit since): a start and stop with no batch
    /// in between costs no rewrite of the whole filter (125 MB for `clearing bench`'s 100 M
    /// transfers).
    pub fn save(&self, store: &dyn Store, shard_count: u16) -> Result<(), StorageError> {
        let mut value = Vec::with_capacity(FILTER_PIECE_BYTES);
        let encode = |piece: &[std::sync::atomic::AtomicU64], value: &mut Vec<u8>| {
            value.clear();
            piece.iter().for_each(|word| value.extend_from_slice(&word.load(std::sync::atomic::Ordering::Acquire).to_le_bytes()));
        };
        // The segments are read once here: one added meanwhile (no shard runs at a stop) would
        // not be named by the head nor hashed.
        let sizes: Vec<usize> = self.each().map(Segment::bytes).collect();
        let mut hasher = layout_hasher(&sizes);
        let pieces = self.pieces(sizes.len());
        for piece in pieces.clone() {
            encode(piece, &mut value);
            hasher.update(&value);
        }
        // (One read from a format-1 head is written again, once, in format 2.)
        let head = filter_head(store, &sizes, shard_count, hasher.finalize().as_bytes())?;
        if self.saved_head.as_deref() == Some(&head[..]) {
            return Ok(());
        }
        for (index, piece) in pieces.enumerate() {
            encode(piece, &mut value);
            store.write(&[(&filter_piece_key(index as u32), &value)])?;
        }
        store.write(&[(FILTER_HEAD, &head)])
    }

    /// Sets the bits of `key` (in the newest segment), and adds a segment when a third of that
    /// one's bits are set.
    pub fn insert(&self, key: u128) {
        let newest = self.each().last().expect("a filter has its first segment from its making");
        newest.insert(key);
        if newest.full() && !self.stopped.load(std::sync::atomic::Ordering::Relaxed) {
            self.grow();
        }
    }

    /// The size of the segment to add: twice the newest's, or what is left under the bound
    /// (`COLD_FILTER_BYTES_MAX`) if that is at least half the newest's; none past the bound or
    /// the segment count.
    fn next_size(&self) -> Option<usize> {
        let count = self.segment_count();
        let newest = self.each().last()?.bytes();
        let left = self.bytes_max.saturating_sub(self.bytes()) / 64 * 64;
        let size = (newest * 2).min(left);
        (count < MAX_SEGMENTS && size >= newest / 2 && size >= 64).then_some(size)
    }

    /// Adds a segment (`next_size`), unless another thread just did. When none can be added
    /// (the bound, or the allocator refuses), says so once and stops trying: the newest then
    /// takes every key, and the false positives climb.
    fn grow(&self) {
        let _growing = self.growing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = self.segment_count();
        if !self.segments[count - 1].get().is_some_and(Segment::full) || self.stopped.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let added = self.next_size().ok_or(None).and_then(|size| Segment::try_with_bytes(size).map_err(Some));
        match added {
            Ok(segment) => {
                let _ = self.segments[count].set(segment);
                tracing::info!(segments = count + 1, bytes = self.bytes(), "the cold-key filter grew");
            }
            Err(refused) => {
                self.stopped.store(true, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(
                    segments = count,
                    bytes = self.bytes(),
                    allocator_refused = refused.map(|layout| layout.size()),
                    "the cold-key filter cannot grow: its false positives will climb, and more new order numbers be read from the store"
                );
            }
        }
    }

    /// False when no cold row of `key` exists; true when one may.
    pub fn may_contain(&self, key: u128) -> bool {
        self.each().any(|segment| segment.may_contain(key))
    }

    /// Asks for `key`'s block in every segment (a hint), for a `may_contain` a few keys later.
    pub fn prefetch(&self, key: u128) {
        self.each().for_each(|segment| segment.prefetch(key));
    }

    /// The positions in `0..count` whose key (`key_at`) may have a cold row, each key's blocks
    /// asked for `PREFETCH_AHEAD` keys before it is tested.
    pub fn positions_maybe_held(&self, count: usize, key_at: impl Fn(usize) -> u128) -> Vec<usize> {
        let mut maybe = Vec::new();
        crate::each_prefetched(
            0..count,
            |index| self.prefetch(key_at(index)),
            |index| {
                if self.may_contain(key_at(index)) {
                    maybe.push(index);
                }
            },
        );
        maybe
    }

    /// `insert` of every key of `keys`, each key's block asked for `PREFETCH_AHEAD` keys
    /// before it is set: the blocks' cache misses overlap instead of coming one after another.
    pub fn insert_all(&self, keys: impl Iterator<Item = u128>) {
        // The newest segment asked each time: an insert may add one.
        let prefetch = |key| self.each().last().iter().for_each(|segment| segment.prefetch(key));
        crate::each_prefetched(keys, prefetch, |key| self.insert(key));
    }
}

/// Reads the cold records batch `batch` of `state`'s shard may look up (`envelopes`' keys that
/// memory does not hold and, given a `filter`, that it may hold) and hands them to the state for
/// that batch (`ShardState::admit_cold`; the caller calls `ShardState::forget_cold` after
/// applying it). `keys` is a reusable buffer. Returns how many keys were read from the store.
pub fn prefetch(
    store: &dyn Store,
    filter: Option<&ColdFilter>,
    state: &mut ShardState,
    batch: u64,
    envelopes: &[Envelope],
    keys: &mut Vec<u128>,
) -> Result<usize, StorageError> {
    keys.clear();
    for envelope in envelopes {
        keys_of(envelope, keys);
    }
    // `retain`, with each key's filter blocks asked for a few keys ahead (the first ones now).
    if let Some(filter) = filter {
        keys.iter().take(PREFETCH_AHEAD).for_each(|key| filter.prefetch(*key));
    }
    let mut kept = 0;
    for index in 0..keys.len() {
        let key = keys[index];
        if let (Some(filter), Some(ahead)) = (filter, keys.get(index + PREFETCH_AHEAD)) {
            filter.prefetch(*ahead);
        }
        // The filter (its block asked for ahead) first: it rules out nearly every new key, which
        // then costs no lookup in the hot and sealed maps (each a cache miss).
        if filter.is_none_or(|filter| filter.may_contain(key)) && !state.holds_idempotency(&key) {
            keys[kept] = key;
            kept += 1;
        }
    }
    keys.truncate(kept);
    if keys.is_empty() {
        return Ok(0);
    }
    keys.sort_unstable();
    keys.dedup();
    let storage_keys: Vec<[u8; 20]> = keys.iter().map(|key| cold_key(*key)).collect();
    let refs: Vec<&[u8]> = storage_keys.iter().map(|key| &key[..]).collect();
    let found = store.get_many(&refs)?;
    let mut hits = Vec::new();
    for (key, value) in keys.iter().zip(found) {
        let Some(bytes) = value else { continue };
        let row = decode_row(*key, &bytes)?;
        if row.shard != state.shard {
            hits.push((*key, ColdHit::Foreign));
        } else if row.stamp < batch {
            hits.push((*key, ColdHit::Own(row.record)));
        }
        // Else: stamped at or after this batch by a checkpoint newer than the state being
        // replayed (a fall-back): this batch may create the record itself; the row must not
        // be seen yet.
    }
    state.admit_cold(hits);
    Ok(keys.len())
}

/// Every idempotency record `state` stands for at batch `through`: its hot and sealed maps and
/// its shard's cold rows stamped at or before `through`, by key. What tests compare between a
/// live shard, a recovered one and a replay of the whole journal (their split between memory
/// and store differs; the records must not). Scans every cold row: for tests and tools only.
pub fn logical_records(store: &dyn Store, state: &ShardState, through: u64) -> Result<Vec<(u128, IdempotencyRecord)>, StorageError> {
    let mut records = std::collections::BTreeMap::new();
    let mut end = COLD_PREFIX.to_vec();
    end.extend_from_slice(&[0xff; 17]);
    let mut failure = None;
    store.scan(COLD_PREFIX, &end, &mut |key, value| {
        let Some(key) = key.get(4..20).and_then(|k| <[u8; 16]>::try_from(k).ok()).map(u128::from_be_bytes) else { return true };
        match decode_row(key, value) {
            Ok(row) if row.shard == state.shard && row.stamp <= through => {
                records.insert(key, row.record);
            }
            Ok(_) => {}
            Err(error) => {
                failure = Some(error);
                return false;
            }
        }
        true
    })?;
    if let Some(error) = failure {
        return Err(error);
    }
    for (key, record) in state.memory_idempotency() {
        if let Some(cold) = records.insert(key, record) {
            assert_eq!(cold, record, "a record in memory differs from its cold row");
        }
    }
    Ok(records.into_iter().collect())
}

/// A digest of `state` (`ShardState::digest`, which leaves idempotency records out) and of its
/// logical idempotency records at batch `through` (`logical_records`).
pub fn logical_digest(store: &dyn Store, state: &ShardState, through: u64) -> Result<u64, StorageError> {
    let records = logical_records(store, state, through)?;
    let bytes = bincode::serialize(&(state.digest(), records)).expect("records serialize");
    Ok(xxhash_rust::xxh3::xxh3_64(&bytes))
}

/// A sealed generation of hot records, shared between the live shard (which still answers from
/// it) and the checkpoint thread writing it cold.
pub type Sealed = Arc<FlatMap<IdempotencyRecord>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::command::OutOrderNo;
    use crate::ledger::state::Effects;
    use crate::ledger::types::{AccountId, Leg, Legs, Limits, Reply};
    use crate::money::{CurrencyId, CurrencySpec};
    use crate::result::ResultCode;
    use storage::MemoryStore;

    const T0: u64 = 1_700_000_000_000_000;

    /// Shard 0 of 1 with two funded accounts.
    fn state() -> (ShardState, AccountId, AccountId) {
        let mut state = ShardState::default();
        let mut fx = Effects::default();
        let genesis = Command::Genesis { shard: 0, shard_count: 1, currencies: vec![CurrencySpec::new("CNY", 2).unwrap()], utc_offset_seconds: 0 };
        state.apply(&Envelope { platform: 0, out_order_no: None, command: genesis }, T0, &mut fx);
        let mut open = |owner| {
            let command = Command::OpenAccount { owner, currency: CurrencyId(0), limits: Limits::NONE };
            let id = AccountId(state.apply(&Envelope { platform: 1, out_order_no: None, command }, T0, &mut fx).id);
            let fund = Command::Recharge { account: id, currency: CurrencyId(0), amount: 1_000_000, channel: 1 };
            state.apply(&Envelope { platform: 1, out_order_no: None, command: fund }, T0, &mut fx);
            id
        };
        let (a, b) = (open(1), open(2));
        (state, a, b)
    }

    fn payment(number: &str, payer: AccountId, payee: AccountId, amount: i64) -> Envelope {
        let payees: Legs = [Leg { account: payee, amount }].into_iter().collect();
        let command = Command::Payment { payer, guarantee: false, currency: CurrencyId(0), amount, payees, splits: Legs::new() };
        Envelope { platform: 1, out_order_no: Some(OutOrderNo::new(number).unwrap()), command }
    }

    fn row(store: &MemoryStore, envelope: &Envelope, shard: ShardId, stamp: u64, id: u64) {
        let mut keys = Vec::new();
        keys_of(envelope, &mut keys);
        let record = IdempotencyRecord {
            content: crate::ledger::command::content_hash(&envelope.command),
            reply: Reply { code: ResultCode::Ok, id, status: None, replayed: false },
        };
        store.write(&[(&cold_key(keys[0]), &encode_row(&ColdRow { shard, stamp, record }))]).unwrap();
    }

    /// Applies `envelope` as batch `batch` after the prefetch: what it answers, and how many keys
    /// the prefetch read.
    fn apply_as(store: &MemoryStore, state: &mut ShardState, batch: u64, envelope: &Envelope) -> (Reply, usize) {
        let mut keys = Vec::new();
        let probed = prefetch(store, None, state, batch, std::slice::from_ref(envelope), &mut keys).unwrap();
        let reply = state.apply(envelope, T0 + batch, &mut Effects::default());
        state.forget_cold();
        (reply, probed)
    }

    /// Keys as the engine makes them (XXH3-128 hashes), the same sequence for a seed.
    fn random_keys(seed: u128) -> impl FnMut() -> u128 {
        let mut rng = seed;
        move || {
            rng = rng.wrapping_mul(0x2545_f491_4f6c_dd1d_6a09_e667_f3bc_c909).wrapping_add(1);
            xxhash_rust::xxh3::xxh3_128(&rng.to_le_bytes())
        }
    }

    #[test]
    fn the_filter_has_no_false_negatives_and_few_false_positives() {
        let filter = ColdFilter::with_bytes(1 << 16);
        let mut next = random_keys(0x9e37_79b9_7f4a_7c15);
        let inserted: Vec<u128> = (0..40_000).map(|_| next()).collect();
        inserted.iter().for_each(|key| filter.insert(*key));
        assert!(inserted.iter().all(|key| filter.may_contain(*key)));
        let false_positives = (0..100_000).filter(|_| filter.may_contain(next())).count();
        assert!(false_positives < 5_000, "{false_positives} of 100,000 at 13 bits per key");
        // `load` finds every stored row.
        let store = MemoryStore::new();
        let record = IdempotencyRecord { content: 1, reply: Reply::rejected(ResultCode::Ok) };
        for key in &inserted[..100] {
            store.write(&[(&cold_key(*key), &encode_row(&ColdRow { shard: 0, stamp: 1, record }))]).unwrap();
        }
        let loaded = ColdFilter::load(&store, 1 << 12).unwrap();
        assert!(inserted[..100].iter().all(|key| loaded.may_contain(*key)));
    }

    /// `insert_all` sets exactly the bits `insert` key by key sets (whatever the count against
    /// its look-ahead, and across a growth), and every block sits in one cache line.
    #[test]
    fn inserting_many_keys_at_once_sets_the_same_bits_in_aligned_blocks() {
        let words = |f: &ColdFilter| f.pieces(MAX_SEGMENTS).flatten().map(|w| w.load(std::sync::atomic::Ordering::Relaxed)).collect::<Vec<_>>();
        for count in [0, 1, PREFETCH_AHEAD - 1, PREFETCH_AHEAD, PREFETCH_AHEAD + 1, 1_000] {
            let keys: Vec<u128> = std::iter::repeat_with(random_keys(count as u128 + 7)).take(count).collect();
            let (one_by_one, at_once) = (ColdFilter::with_bytes(1 << 9), ColdFilter::with_bytes(1 << 9));
            keys.iter().for_each(|key| one_by_one.insert(*key));
            at_once.insert_all(keys.iter().copied());
            assert_eq!(words(&at_once), words(&one_by_one), "{count} keys");
            assert_eq!(at_once.segment_count(), one_by_one.segment_count());
            assert!(keys.iter().all(|key| at_once.may_contain(*key)), "{count} keys");
            assert!(at_once.each().all(|segment| (segment.words().as_ptr() as usize).is_multiple_of(64)), "blocks on cache lines");
        }
    }

    /// Before, the filter had one fixed size: past about 0.8 keys a byte (27 M for a server's
    /// 32 MiB) nearly every new order number got through to a RocksDB read on the shard's thread.
    #[test]
    fn the_filter_grows_with_its_keys_and_keeps_its_false_positives_low() {
        let filter = ColdFilter::with_bytes(1 << 10);
        let mut next = random_keys(0x1234_5678_9abc_def0);
        // About 120 times what the first segment takes at 15 bits a key.
        let inserted: Vec<u128> = (0..66_000).map(|_| next()).collect();
        inserted.iter().for_each(|key| filter.insert(*key));
        assert!(inserted.iter().all(|key| filter.may_contain(*key)), "no false negatives across segments");
        let segments: Vec<usize> = filter.each().map(Segment::bytes).collect();
        assert_eq!(segments, [1 << 10, 2 << 10, 4 << 10, 8 << 10, 16 << 10, 32 << 10, 64 << 10], "each segment twice the one before");
        let false_positives = (0..100_000).filter(|_| filter.may_contain(next())).count();
        assert!(false_positives < 8_000, "{false_positives} of 100,000 across {} segments", segments.len());
        // Saved and read back with its segments; a start asking for more in all scans instead.
        let store = MemoryStore::new();
        store.write(&[(&crate::checkpoint::manifest_key(0, 3), b"m")]).unwrap();
        filter.save(&store, 1).unwrap();
        let (read, saved) = ColdFilter::load_saved_or_scan(&store, 1 << 10, 1).unwrap();
        assert!(saved);
        assert_eq!(read.each().map(Segment::bytes).collect::<Vec<_>>(), segments);
        assert!(inserted.iter().all(|key| read.may_contain(*key)));
        let set = |f: &ColdFilter| f.each().map(|s| s.set_bits.load(std::sync::atomic::Ordering::Relaxed)).collect::<Vec<_>>();
        assert_eq!(set(&read), set(&filter), "the bits set are counted again");
        assert!(!ColdFilter::load_saved_or_scan(&store, 256 << 10, 1).unwrap().1);
        // A new key goes on into the newest segment, which is not yet half set.
        read.insert(next());
        assert_eq!(read.segment_count(), segments.len());
        // The bound: the last segment takes what is left under it if that is at least half the
        // newest; then no more, and the newest takes every key.
        let mut bounded = ColdFilter::with_bytes(1 << 10);
        bounded.bytes_max = 5 << 10;
        let keys: Vec<u128> = (0..20_000).map(|_| next()).collect();
        keys.iter().for_each(|key| bounded.insert(*key));
        assert_eq!(bounded.each().map(Segment::bytes).collect::<Vec<_>>(), [1 << 10, 2 << 10, 2 << 10]);
        assert!(bounded.stopped.load(std::sync::atomic::Ordering::Relaxed));
        assert!(keys.iter().all(|key| bounded.may_contain(*key)), "still no false negatives");
        // The segment count bounds it too.
        let mut counted = ColdFilter::with_bytes(64);
        counted.bytes_max = usize::MAX;
        (0..400_000).for_each(|_| counted.insert(next()));
        assert_eq!(counted.segment_count(), MAX_SEGMENTS);
        assert!(counted.stopped.load(std::sync::atomic::Ordering::Relaxed));
    }

    /// Rewrites the saved head as the build before wrote it: format 1 (one size, no segment
    /// count), its hash over the pieces only.
    fn as_format_1(store: &MemoryStore) {
        let mut head = store.get(FILTER_HEAD).unwrap().unwrap();
        assert_eq!(&head[..2], &[FILTER_FORMAT, 1], "one segment");
        head.remove(1);
        head[0] = 1;
        let mut hasher = blake3::Hasher::new();
        for index in 0.. {
            let Some(piece) = store.get(&filter_piece_key(index)).unwrap() else { break };
            hasher.update(&piece);
        }
        let at = head.len() - 32;
        head[at..].copy_from_slice(hasher.finalize().as_bytes());
        store.write(&[(FILTER_HEAD, &head)]).unwrap();
    }

    /// A filter saved by an earlier build (head format 1, one size; format 2, before session
    /// 64) is not read: such a build set a checkpoint's bits only after its pruning, so its
    /// saved filter may lack the numbers of a checkpoint that failed there (helper 111). The
    /// start scans the rows once, and the stop saves format 3, read again after.
    #[test]
    fn a_filter_saved_by_an_earlier_build_is_rebuilt_by_a_scan() {
        let store = MemoryStore::new();
        store.write(&[(&crate::checkpoint::manifest_key(0, 5), b"m")]).unwrap();
        let filter = ColdFilter::with_bytes(64 << 10);
        let keys: Vec<u128> = (1..500u128).map(|k| k.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)).collect();
        keys.iter().for_each(|key| filter.insert(*key));
        filter.save(&store, 1).unwrap();
        assert!(ColdFilter::load_saved_or_scan(&store, 64 << 10, 1).unwrap().1, "format 3 is read");
        // Format 2: the same layout and hash under the earlier format byte.
        let head = store.get(FILTER_HEAD).unwrap().unwrap();
        let mut format_2 = head.clone();
        format_2[0] = 2;
        store.write(&[(FILTER_HEAD, &format_2)]).unwrap();
        assert!(!ColdFilter::load_saved_or_scan(&store, 64 << 10, 1).unwrap().1, "format 2: rebuilt by a scan");
        filter.save(&store, 1).unwrap();
        as_format_1(&store);
        assert!(!ColdFilter::load_saved_or_scan(&store, 64 << 10, 1).unwrap().1, "format 1: rebuilt by a scan");
        filter.save(&store, 1).unwrap();
        assert_eq!(store.get(FILTER_HEAD).unwrap().unwrap()[0], FILTER_FORMAT, "written again in format 3");
        let (read, saved) = ColdFilter::load_saved_or_scan(&store, 64 << 10, 1).unwrap();
        assert!(saved && keys.iter().all(|key| read.may_contain(*key)));
        // Heads that name no possible filter are not read (a scan instead).
        for bad in [vec![4u8, 1], vec![3, 0], vec![3, 13], vec![1, 7, 0, 0, 0, 0, 0, 0, 0]] {
            let mut bad_head = bad.clone();
            bad_head.extend_from_slice(&head[bad.len().min(head.len())..]);
            store.write(&[(FILTER_HEAD, &bad_head)]).unwrap();
            assert!(!ColdFilter::load_saved_or_scan(&store, 64 << 10, 1).unwrap().1, "{bad:?}");
        }
    }

    /// A segment of whole huge pages is advised onto them (the kernel's `hg` flag on its
    /// mapping, whatever pages it then gives), starts all clear and holds what is set.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_large_segment_is_advised_onto_huge_pages_and_starts_clear() {
        let segment = Segment::with_bytes(8 << 20);
        assert!(segment.words().iter().all(|word| word.load(std::sync::atomic::Ordering::Relaxed) == 0));
        let inside = segment.words().as_ptr() as usize + (4 << 20);
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let mut mapping_holds = false;
        let mut flags = None;
        for line in smaps.lines() {
            let range = line.split_whitespace().next().and_then(|range| range.split_once('-'));
            if let Some((Ok(start), Ok(end))) = range.map(|(start, end)| (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16))) {
                mapping_holds = (start..end).contains(&inside);
            } else if mapping_holds && line.starts_with("VmFlags:") {
                flags = Some(line.to_string());
            }
        }
        let flags = flags.expect("the segment's mapping in /proc/self/smaps");
        assert!(flags.split_whitespace().any(|flag| flag == "hg"), "not advised: {flags}");
        let filter = ColdFilter::of_segments(vec![segment]);
        let keys: Vec<u128> = (1..100_000u128).map(|k| k.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)).collect();
        filter.insert_all(keys.iter().copied());
        assert!(keys.iter().all(|key| filter.may_contain(*key)));
    }

    /// Review finding: the saved hash covered the pieces, not the sizes, so a head naming the
    /// same pieces as other segments (8 + 16 MiB read as 16 + 8: every piece 4 MiB either way)
    /// would load the bits at other places and miss keys.
    #[test]
    fn a_saved_filter_read_with_other_segment_sizes_is_not_used() {
        let store = MemoryStore::new();
        store.write(&[(&crate::checkpoint::manifest_key(0, 5), b"m")]).unwrap();
        let filter = ColdFilter::of_segments(vec![Segment::with_bytes(8 << 20), Segment::with_bytes(16 << 20)]);
        let keys: Vec<u128> = (1..5_000u128).map(|k| k.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)).collect();
        keys.iter().for_each(|key| filter.insert(*key));
        filter.save(&store, 1).unwrap();
        assert!(ColdFilter::load_saved_or_scan(&store, 64 << 10, 1).unwrap().1);
        let mut head = store.get(FILTER_HEAD).unwrap().unwrap();
        let (first, second) = (head[2..10].to_vec(), head[10..18].to_vec());
        head[2..10].copy_from_slice(&second);
        head[10..18].copy_from_slice(&first);
        store.write(&[(FILTER_HEAD, &head)]).unwrap();
        let (read, saved) = ColdFilter::load_saved_or_scan(&store, 64 << 10, 1).unwrap();
        assert!(!saved, "sizes swapped: not the filter that was saved");
        assert!(read.bytes() == 64 << 10, "rebuilt by a scan at the asked size");
    }

    #[test]
    fn rows_round_trip_and_keys_sort_by_key() {
        let record = IdempotencyRecord { content: 7, reply: Reply::rejected(ResultCode::Ok) };
        let row = ColdRow { shard: 3, stamp: 99, record };
        assert_eq!(decode_row(1, &encode_row(&row)).unwrap(), row);
        assert!(decode_row(1, &[]).is_err());
        assert!(decode_row(1, &[9, 0]).is_err(), "another format version");
        assert!(cold_key(1) < cold_key(2) && cold_key(0xff) < cold_key(0x100), "big-endian keys sort by key");
    }

    #[test]
    fn a_batch_sees_its_shards_rows_stamped_before_it_and_none_after() {
        let store = MemoryStore::new();
        let (mut state, a, b) = state();
        let old = payment("old", a, b, 5);
        row(&store, &old, 0, 10, 42);
        // Batch 11 sees the row stamped 10: the same content replays its order, other content conflicts.
        let (reply, probed) = apply_as(&store, &mut state, 11, &old);
        assert_eq!((reply.code, reply.replayed, reply.id, probed), (ResultCode::Ok, true, 42, 1));
        let (reply, _) = apply_as(&store, &mut state, 11, &payment("old", a, b, 6));
        assert_eq!(reply.code, ResultCode::IdempotencyConflict);
        // A replay of batch 10 (or earlier) from an older checkpoint must not see it: the batch
        // creates the record itself.
        let (mut replaying, _, _) = self::state();
        let (reply, _) = apply_as(&store, &mut replaying, 10, &old);
        assert!(reply.is_ok() && !reply.replayed, "{reply:?}");
        assert!(replaying
            .idempotency_record(&{
                let mut keys = Vec::new();
                keys_of(&old, &mut keys);
                keys[0]
            })
            .is_some());
        // Prefetched records last one batch: without a prefetch the row is not seen.
        let reply = state.apply(&old, T0, &mut Effects::default());
        assert!(reply.is_ok() && !reply.replayed, "without a prefetch the number looks new: {reply:?}");
    }

    #[test]
    fn a_row_of_another_shard_is_a_conflict_whatever_the_content() {
        let store = MemoryStore::new();
        let (mut state, a, b) = state();
        let taken = payment("taken", a, b, 5);
        row(&store, &taken, 1, 1_000, 7);
        let (reply, _) = apply_as(&store, &mut state, 2, &taken);
        assert_eq!(reply.code, ResultCode::IdempotencyConflict);
    }

    #[test]
    fn a_batch_payment_probes_every_order_number_and_memory_spares_the_store() {
        let store = MemoryStore::new();
        let (mut state, a, b) = state();
        let single = payment("in-batch", a, b, 5);
        row(&store, &single, 0, 1, 9);
        let orders = ["fresh", "in-batch"]
            .iter()
            .map(|number| crate::ledger::command::BatchOrder {
                out_order_no: OutOrderNo::new(number).unwrap(),
                amount: 5,
                payees: [Leg { account: b, amount: 5 }].into_iter().collect(),
                splits: Legs::new(),
            })
            .collect();
        let batch = Envelope {
            platform: 1,
            out_order_no: Some(OutOrderNo::new("the-batch").unwrap()),
            command: Command::BatchPayment { payer: a, guarantee: false, currency: CurrencyId(0), orders },
        };
        let (reply, probed) = apply_as(&store, &mut state, 5, &batch);
        assert_eq!((reply.code, probed), (ResultCode::IdempotencyConflict, 3), "its own number and both orders' are read");
        // A number memory holds is not read again.
        let fresh = payment("fresh-single", a, b, 5);
        assert!(apply_as(&store, &mut state, 6, &fresh).0.is_ok());
        assert_eq!(apply_as(&store, &mut state, 7, &fresh).1, 0);
    }

    /// `apply_all` (slots asked for ahead) answers and posts exactly as `apply` one by one: a
    /// number used twice in the batch (a replay, then a conflict), commands without numbers, one
    /// left out, a sealed generation holding earlier numbers, and more commands than the ring.
    #[test]
    fn applying_a_batch_at_once_is_applying_it_one_by_one() {
        let (mut state, a, b) = state();
        let mut earlier = Effects::default();
        for n in 0..20 {
            state.apply(&payment(&format!("old{n}"), a, b, 1), T0, &mut earlier);
        }
        let _sealed = state.seal_idempotency();
        let mut batch: Vec<Envelope> =
            (0..30).map(|n| payment(&format!("new{n}"), if n % 2 == 0 { a } else { b }, if n % 2 == 0 { b } else { a }, 3)).collect();
        batch[5] = payment("new1", b, a, 3);
        batch[6] = payment("new1", b, a, 4);
        batch[7] = payment("old3", a, b, 1);
        batch[8] = payment("old4", a, b, 2);
        batch[9].out_order_no = None;
        // Accounts no shard holds (asked for ahead too: past the accounts, any id).
        batch[10] = payment("ghost-payer", AccountId(u64::MAX), b, 3);
        batch[11] = payment("ghost-payee", a, AccountId(1 << 40), 3);
        let skip: Vec<bool> = (0..batch.len()).map(|n| n == 12).collect();
        let (mut one_by_one, mut at_once) = (state.clone(), state);
        let (mut fx_one, mut fx_all) = (Effects::default(), Effects::default());
        let expected: Vec<Reply> = batch
            .iter()
            .zip(&skip)
            .map(|(envelope, skipped)| if *skipped { Reply::rejected(ResultCode::Overloaded) } else { one_by_one.apply(envelope, T0 + 1, &mut fx_one) })
            .collect();
        let mut replies = Vec::new();
        at_once.apply_all(&batch, Some(&skip), T0 + 1, &mut fx_all, &mut replies);
        assert_eq!(replies, expected);
        assert_eq!(fx_all.postings, fx_one.postings);
        assert!(expected[5].replayed && expected[7].replayed);
        assert_eq!((expected[6].code, expected[8].code), (ResultCode::IdempotencyConflict, ResultCode::IdempotencyConflict));
        assert!(!expected[10].is_ok() && !expected[11].is_ok(), "{:?}", &expected[10..12]);
        let records = |state: &ShardState| {
            let mut all: Vec<(u128, IdempotencyRecord)> = state.memory_idempotency().collect();
            all.sort_unstable_by_key(|(key, _)| *key);
            all
        };
        assert_eq!(records(&at_once), records(&one_by_one));
        // 20 new payments and the two refused ghosts' numbers (refusals kept, journal format 5).
        assert_eq!(at_once.idempotency.len(), 24);
    }

    /// A batch payment of `count` orders of `amount` each from `payer` to `payee`, numbered
    /// `prefix-N`, under its own number `prefix`.
    fn batch_payment(prefix: &str, payer: AccountId, payee: AccountId, count: usize, amount: i64) -> Envelope {
        let orders = (0..count)
            .map(|n| crate::ledger::command::BatchOrder {
                out_order_no: OutOrderNo::new(&format!("{prefix}-{n}")).unwrap(),
                amount,
                payees: [Leg { account: payee, amount }].into_iter().collect(),
                splits: Legs::new(),
            })
            .collect();
        Envelope {
            platform: 1,
            out_order_no: Some(OutOrderNo::new(prefix).unwrap()),
            command: Command::BatchPayment { payer, guarantee: false, currency: CurrencyId(0), orders },
        }
    }

    /// `apply_all` makes the records' map's room once, at a batch's first order number, for as
    /// many records as commands left; a batch without order numbers, or one the map has room
    /// for, leaves the map as it was.
    #[test]
    fn a_batch_makes_room_for_its_records_once_and_only_with_order_numbers() {
        let (mut state, a, b) = state();
        let _sealed = state.seal_idempotency();
        let empty = state.idempotency.capacity();
        let unnumbered = |n: usize| {
            let mut envelope = payment(&format!("none{n}"), a, b, 1);
            envelope.out_order_no = None;
            envelope
        };
        let (mut fx, mut replies) = (Effects::default(), Vec::new());
        let plain: Vec<Envelope> = (0..100).map(unnumbered).collect();
        state.apply_all(&plain, None, T0 + 1, &mut fx, &mut replies);
        assert!(replies.iter().all(Reply::is_ok));
        assert_eq!((state.idempotency.len(), state.idempotency.capacity()), (0, empty), "no order numbers, no room made");
        // Fifty without numbers, one numbered payment, then 99 more without: room for 100 is
        // made at the number (growing as records land would have kept the smallest table).
        let mut mixed: Vec<Envelope> = (0..150).map(unnumbered).collect();
        mixed[50] = payment("first", a, b, 1);
        replies.clear();
        state.apply_all(&mixed, None, T0 + 1, &mut fx, &mut replies);
        assert!(replies.iter().all(Reply::is_ok));
        assert_eq!(state.idempotency.len(), 1);
        assert!(state.idempotency.capacity() >= 100, "room for the commands left: {}", state.idempotency.capacity());
        // A map with room for the batch is left as it is.
        state.expect_records(10_000);
        let roomy = state.idempotency.capacity();
        let numbered: Vec<Envelope> = (0..100).map(|n| payment(&format!("roomy{n}"), a, b, 1)).collect();
        replies.clear();
        state.apply_all(&numbered, None, T0 + 1, &mut fx, &mut replies);
        assert!(replies.iter().all(Reply::is_ok));
        assert_eq!((state.idempotency.len(), state.idempotency.capacity()), (101, roomy));
    }

    /// `apply_all` equals `apply` one by one when the records' map's room is made in the middle
    /// of the batch (the first order number past the ring of slots asked for ahead) and a batch
    /// payment's orders land in it, and when the map grows inside the batch (a batch payment
    /// in a batch the map seemed to have room for).
    #[test]
    fn a_batch_that_makes_room_mid_way_applies_as_one_by_one() {
        let (state, a, b) = state();
        let mut late: Vec<Envelope> = (0..20)
            .map(|n| {
                let mut envelope = payment(&format!("late{n}"), a, b, 1);
                if n < 12 {
                    envelope.out_order_no = None;
                }
                envelope
            })
            .collect();
        late.insert(15, batch_payment("batch", b, a, 300, 2));
        let mut grows: Vec<Envelope> = vec![batch_payment("grows", a, b, 200, 1)];
        grows.push(payment("after", a, b, 1));
        for batch in [late, grows] {
            let (mut one_by_one, mut at_once) = (state.clone(), state.clone());
            let (mut fx_one, mut fx_all) = (Effects::default(), Effects::default());
            let expected: Vec<Reply> = batch.iter().map(|envelope| one_by_one.apply(envelope, T0 + 1, &mut fx_one)).collect();
            assert!(expected.iter().all(Reply::is_ok), "{expected:?}");
            let mut replies = Vec::new();
            at_once.apply_all(&batch, None, T0 + 1, &mut fx_all, &mut replies);
            assert_eq!(replies, expected);
            assert_eq!(fx_all.postings, fx_one.postings);
            // Memory's records by key (an empty store: none cold).
            let records = |state: &ShardState| logical_records(&MemoryStore::new(), state, u64::MAX).unwrap();
            assert_eq!(records(&at_once), records(&one_by_one));
            assert_eq!(at_once.digest(), one_by_one.digest());
        }
    }

    #[test]
    fn sealing_moves_records_out_of_the_hot_map_and_a_checkpoint_writes_them_cold() {
        let store = MemoryStore::new();
        let (mut state, a, b) = state();
        let paid = payment("sealed", a, b, 5);
        let id = state.apply(&paid, T0, &mut Effects::default()).id;
        let mut keys = Vec::new();
        keys_of(&paid, &mut keys);
        let sealed = state.seal_idempotency();
        assert!(state.idempotency.is_empty() && sealed.len() == 1);
        assert_eq!(state.idempotency_record(&keys[0]).map(|r| r.reply.id), Some(id), "still answered from memory");
        let head = crate::journal::ChainHead { sequence: 4, hash: [0; 32] };
        let written = crate::checkpoint::write(&store, &state, head, T0, 2, Default::default(), Default::default()).unwrap();
        assert_eq!(written.evicted, 1);
        state.drop_sealed();
        assert_eq!(state.idempotency_record(&keys[0]), None);
        let row = read_row(&store, keys[0]).unwrap().unwrap();
        assert_eq!((row.shard, row.stamp, row.record.reply.id), (0, 4, id));
        // The checkpoint's state holds no record; replayed with the row, the order is a replay.
        let (loaded, _) = crate::checkpoint::load(&store, 0, 4).unwrap();
        assert!(loaded.idempotency.is_empty());
        let mut loaded = loaded;
        let (reply, _) = apply_as(&store, &mut loaded, 5, &paid);
        assert!(reply.replayed && reply.id == id);
        // A checkpoint that never started gives its sealed records back.
        state.apply(&payment("back", a, b, 5), T0, &mut Effects::default());
        state.seal_idempotency();
        state.unseal();
        assert_eq!(state.idempotency.len(), 1);
        assert!(state.sealed.is_none());
        // A live shard sizes the new hot map once it has its checkpoint's copy; records given
        // back land in it.
        state.seal_idempotency();
        state.expect_records(100_000);
        assert!(state.idempotency.is_empty() && state.idempotency.capacity() >= 100_000);
        state.unseal();
        assert_eq!((state.idempotency.len(), state.idempotency.capacity() >= 100_000), (1, true));
        // A map made ahead of time is taken at a seal when it has the room, not otherwise, and
        // never over a hot map that holds records.
        let sealed = state.seal_idempotency();
        assert!(state.expect_records_with(1_000, Some(FlatMap::with_capacity_resident(2_000))));
        assert!(state.idempotency.is_empty() && (2_000..100_000).contains(&state.idempotency.capacity()), "taken");
        state.unseal();
        assert_eq!(state.idempotency.len(), sealed.len());
        drop(sealed);
        state.drop_sealed();
        state.seal_idempotency();
        assert!(!state.expect_records_with(50_000, Some(FlatMap::with_capacity_resident(2_000))));
        assert!(state.idempotency.is_empty() && state.idempotency.capacity() >= 50_000, "too small: sized as before");
        state.unseal();
        let held = state.idempotency.len();
        assert!(!state.expect_records_with(10, Some(FlatMap::with_capacity_resident(1_000))));
        assert_eq!(state.idempotency.len(), held, "a hot map with records is kept");
    }

    /// Review finding (two faults needed): records sealed again by a later checkpoint, after a
    /// fall-back or a failed pruning gave them back to memory, kept being rewritten with the
    /// higher stamp, so a fall-back to a checkpoint between the two stamps (whose state no
    /// longer holds them) did not see them cold until the replay passed the new stamp.
    #[test]
    fn a_record_sealed_again_keeps_its_lower_stamp() {
        let store = MemoryStore::new();
        let (mut state, a, b) = state();
        let paid = payment("twice", a, b, 5);
        state.apply(&paid, T0, &mut Effects::default());
        let mut keys = Vec::new();
        keys_of(&paid, &mut keys);
        let sealed = state.seal_idempotency();
        assert_eq!(write_rows(&store, 0, 4, &sealed, None, &|| {}).unwrap(), 1);
        assert_eq!(write_rows(&store, 0, 9, &sealed, None, &|| {}).unwrap(), 1);
        assert_eq!(read_row(&store, keys[0]).unwrap().unwrap().stamp, 4, "the lower stamp stays");
        // With the engine's filter, only keys it may hold are read first: this one is.
        let filter = ColdFilter::with_bytes(1 << 12);
        filter.insert(keys[0]);
        write_rows(&store, 0, 10, &sealed, Some(&filter), &|| {}).unwrap();
        assert_eq!(read_row(&store, keys[0]).unwrap().unwrap().stamp, 4, "the lower stamp stays (read through the filter)");
        // A row of another shard (which no order number can have) or with a higher stamp is
        // replaced as before.
        write_rows(&store, 1, 2, &sealed, None, &|| {}).unwrap();
        assert_eq!(read_row(&store, keys[0]).unwrap().unwrap().shard, 1);
        write_rows(&store, 0, 7, &sealed, None, &|| {}).unwrap();
        assert_eq!((read_row(&store, keys[0]).unwrap().unwrap().shard, read_row(&store, keys[0]).unwrap().unwrap().stamp), (0, 7));
        let other = payment("other", a, b, 5);
        state.unseal();
        state.apply(&other, T0, &mut Effects::default());
        let both = state.seal_idempotency();
        assert_eq!(both.len(), 2);
        write_rows(&store, 0, 12, &both, None, &|| {}).unwrap();
        keys.clear();
        keys_of(&other, &mut keys);
        assert_eq!(read_row(&store, keys[0]).unwrap().unwrap().stamp, 12, "a new record gets the checkpoint's stamp");
    }

    /// A saved filter is read back as it was while the shards' newest checkpoints are those it
    /// was saved with; a checkpoint since, a damaged piece or a larger size asked for make the
    /// start scan the rows instead.
    #[test]
    fn a_saved_filter_is_used_only_while_it_matches_the_checkpoints() {
        let store = MemoryStore::new();
        let keys: Vec<u128> = (1..2_000u128).map(|k| k.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)).collect();
        let filter = ColdFilter::with_bytes(64 << 10);
        for key in &keys {
            filter.insert(*key);
        }
        store.write(&[(&crate::checkpoint::manifest_key(0, 7), b"m")]).unwrap();
        assert!(!ColdFilter::load_saved_or_scan(&store, 64 << 10, 2).unwrap().1, "nothing saved yet: a scan");
        filter.save(&store, 2).unwrap();
        let (read, saved) = ColdFilter::load_saved_or_scan(&store, 64 << 10, 2).unwrap();
        assert!(saved, "saved and still matching");
        assert!(keys.iter().all(|k| read.may_contain(*k)));
        let words = |f: &ColdFilter| f.pieces(MAX_SEGMENTS).flatten().map(|w| w.load(std::sync::atomic::Ordering::Relaxed)).collect::<Vec<_>>();
        assert_eq!(words(&read), words(&filter));
        assert!(!ColdFilter::load_saved_or_scan(&store, 128 << 10, 2).unwrap().1, "a larger size than saved: a scan");
        let (smaller, saved) = ColdFilter::load_saved_or_scan(&store, 32 << 10, 2).unwrap();
        assert!(saved, "a smaller size than saved: the saved one, at its own size");
        assert_eq!(words(&smaller), words(&filter));
        assert!(!ColdFilter::load_saved_or_scan(&store, 64 << 10, 3).unwrap().1, "another shard count");
        // A checkpoint written since (its rows may be missing from the saved bits).
        store.write(&[(&crate::checkpoint::manifest_key(1, 3), b"m")]).unwrap();
        assert!(!ColdFilter::load_saved_or_scan(&store, 64 << 10, 2).unwrap().1);
        filter.save(&store, 2).unwrap();
        let (read, saved) = ColdFilter::load_saved_or_scan(&store, 64 << 10, 2).unwrap();
        assert!(saved);
        // Saving what was read, unchanged, writes nothing (a write would fail here); a bit or a
        // checkpoint since, and it is written again.
        store.fail_after(0);
        read.save(&store, 2).unwrap();
        store.fail_after(u64::MAX);
        read.insert(keys[0].wrapping_add(1));
        read.save(&store, 2).unwrap();
        let (again, saved) = ColdFilter::load_saved_or_scan(&store, 64 << 10, 2).unwrap();
        assert!(saved && again.may_contain(keys[0].wrapping_add(1)));
        store.write(&[(&crate::checkpoint::manifest_key(0, 9), b"m")]).unwrap();
        store.fail_after(0);
        assert!(again.save(&store, 2).is_err(), "a checkpoint since: written again");
        let store = store.snapshot();
        // A flipped bit in a piece.
        let key = filter_piece_key(0);
        let mut piece = store.get(&key).unwrap().unwrap();
        piece[100] ^= 1;
        store.write(&[(&key, &piece)]).unwrap();
        assert!(!ColdFilter::load_saved_or_scan(&store, 64 << 10, 2).unwrap().1);
    }
}
