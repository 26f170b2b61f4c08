//! Checkpoints: a shard's whole state at a journal position, so that recovery loads it and
//! replays only the journal after it.
//!
//! Layout (shard: 2 bytes, sequence: 8 bytes, part: 4 bytes, all big-endian, so that a shard's
//! checkpoints sort by the batch they follow):
//! - **parts** under `m/p/` + shard + sequence + part: consecutive slices of at most `PART_BYTES`
//!   of the encoded state (bincode, the journal's codec), each in its own synced write;
//! - **blobs** under `m/b/` + shard + BLAKE3 of the blob: the chunks of history
//!   (`ChunkedVec` chunks of 4,096 items, income blocks) a checkpoint keeps apart, each the
//!   codec's encoding of the chunk, named by its own hash. The parts encode such a chunk as a
//!   reference (its hash and size). A chunk unchanged since the previous checkpoint is not
//!   encoded or written again: the shard knows it by id and version (`BlobCache`; see
//!   `growth::Tagged`), so a checkpoint writes what changed since the last one, not the history;
//! - **the manifest** under `m/c/` + shard + sequence, written last, once every part and blob is
//!   durable: `CHECKPOINT_FORMAT_VERSION`, the bincode of a `Manifest` (shard, sequence, the
//!   batch's timestamp and chain hash, the length and the BLAKE3 of each part, the hashes of
//!   the blobs it uses), then the BLAKE3 of those bytes. `journal::CHECKPOINT_PREFIX` and
//!   `journal::checkpoint_key` name the same keys.
//!
//! A checkpoint counts only once its manifest is written, so a crash at any point of writing one
//! leaves the previous checkpoints as they were (parts without a manifest are ignored, then
//! deleted with the next pruning; blobs no kept manifest names are deleted by the first
//! checkpoint after, which finds the writing mark the interrupted one left: `prune`). Loading checks the manifest's hash, every part's hash and
//! that the state decodes to exactly the bytes written, and each blob's hash; recovery takes the newest checkpoint
//! that passes and falls back to older ones, naming each one it skipped and why.
//!
//! The state is taken between two batches, so it is exactly what replaying the journal up to
//! `sequence` rebuilds (a test compares their digests); its encoding is the state's own serde
//! form, so a change of `ShardState`'s fields changes the format: bump
//! `CHECKPOINT_FORMAT_VERSION` (a binary then ignores older checkpoints and replays the journal).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use storage::{StorageError, Store};

use crate::journal::{codec, ChainHead};
use crate::ledger::growth::{BlobSink, Layout};
use crate::ledger::state::{FastMap, ShardState};
use crate::ledger::types::{ShardId, Timestamp};

/// Parts (manifests are under `journal::CHECKPOINT_PREFIX`, `m/c/`; `c/` is the gateway's cards).
const PART_PREFIX: &[u8; 4] = b"m/p/";

/// Blobs: chunks of history shared by the checkpoints that hold them unchanged.
const BLOB_PREFIX: &[u8; 4] = b"m/b/";

/// The version of a checkpoint's encoding, the first byte of its manifest. Bump it whenever
/// `ShardState`'s serialized form changes: checkpoints of other versions are skipped (and the
/// journal replayed from the start), never misread.
///
/// Version 2: the state's hot idempotency map holds only the records created since the previous
/// checkpoint; the older ones are cold rows (`cold`), written before the manifest. The encoding
/// is version 1's, so this build reads both (a version 1 state simply holds all its records
/// hot); a build that knows only version 1 skips version 2 checkpoints and replays its journal
/// from the start, which rebuilds every record in memory, so it never misses a cold one.
///
/// Version 3: the history vectors (`ChunkedVec`) are encoded as flat sequences and the income
/// map as a sequence of entries (both are copy-on-write now, in chunks and blocks of 4,096,
/// so that a checkpoint's snapshot copies pointers, not history). Versions 1 and 2 are still
/// read (`growth::Layout::Legacy`): a data directory whose journal was archived behind
/// such a checkpoint cannot replay from the start, so it must not be skipped.
///
/// Version 4: full chunks of history are blobs of their own (`m/b/`), written once and shared by
/// the checkpoints that hold them unchanged; the manifest names them (`Manifest::blobs`).
/// Versions 1 to 3 are still read (their manifests have no blob list).
///
/// Version 5: the per-account batch index (`growth::BatchList`) is in pieces too: each account's
/// list is its length and its blocks of 1,024 batches, each with its first and last batch and the
/// block inline (the last, still filling) or as a blob. Version 4 encoded every list as a plain
/// sequence of batch numbers, so every checkpoint carried the whole index, growing with history;
/// it is still read.
///
/// Version 6: the state ends with where each business day's settlement rows are
/// (`ShardState::settled_runs`, `commission_runs`), so a statement reads that day's chunks, not
/// all history; they are checked at load (`DayRuns::check`). Versions 1 to 5 are still read:
/// the runs are rebuilt from the rows at each load of such a checkpoint (a scan of them), until
/// the shard writes one of version 6.
///
/// Version 7: a payment order may carry the part of it that came from the payer's unsettled
/// income (`OrderDetail::Payment::from_unsettled`, journal format 3), encoded as a variant
/// appended to `OrderDetail`'s (`DetailRepr::PaymentFromUnsettled`) when it is not 0. Version
/// 6's bytes are version 7's without that variant, so version 6 checkpoints, and their blobs
/// that version 7 checkpoints go on naming, are read as they are.
pub const CHECKPOINT_FORMAT_VERSION: u8 = 7;

/// Older versions this build still reads (see `CHECKPOINT_FORMAT_VERSION`).
const READABLE_FORMAT_VERSIONS: [u8; 7] = [1, 2, 3, 4, 5, 6, CHECKPOINT_FORMAT_VERSION];

/// The most bytes of encoded state one part (one storage value, one write) holds, and about
/// the most one write of blobs carries. Every write is synced, and a shard's journal write that
/// comes while one is under way waits for it: on machine D a synced write of 16 MiB (the size
/// until session 45) takes about 47 ms, one of 1 MiB about 3 (`dd oflag=dsync`; ARCHITECTURE.md,
/// "Measured", session 45).
pub const PART_BYTES: usize = 1 << 20;

/// The key of the manifest of the checkpoint of `shard` after batch `sequence`.
pub fn manifest_key(shard: ShardId, sequence: u64) -> [u8; 14] {
    crate::journal::checkpoint_key(shard, sequence)
}

/// The key of the blob of `shard` with hash `hash`.
pub fn blob_key(shard: ShardId, hash: &[u8; 32]) -> [u8; 38] {
    let mut key = [0u8; 38];
    key[..4].copy_from_slice(BLOB_PREFIX);
    key[4..6].copy_from_slice(&shard.to_be_bytes());
    key[6..].copy_from_slice(hash);
    key
}

/// Set while a checkpoint of a shard is written, from before its first blob until it has pruned:
/// found set when a checkpoint begins, an earlier one stopped half-way (a crash, a failed write)
/// and may have left blobs that no manifest names, so this one's pruning looks at every blob of
/// the shard (`collect_blobs`). Otherwise pruning deletes only the blobs of the checkpoints it
/// prunes that no kept one names, without reading the others.
const WRITING_PREFIX: &[u8; 4] = b"m/w/";

/// A key per manifest with an empty value (`m/l/` + shard + sequence, since session 61),
/// written with its manifest and pruned with it: `list` reads these when a scan of the
/// manifests fails on damage (a scan reads the values, most of them in RocksDB's blob files,
/// so one manifest damaged on disk failed the listing, and with it the start and `clearing
/// verify`). A shard's first checkpoint by this build lists every manifest there.
const LISTED_PREFIX: &[u8; 4] = b"m/l/";

/// The key of `shard`'s listing of its checkpoint at `sequence` (see `LISTED_PREFIX`).
pub fn listed_key(shard: ShardId, sequence: u64) -> [u8; 14] {
    crate::journal::shard_sequence_key(LISTED_PREFIX, shard, sequence)
}

/// The key of `shard`'s writing mark (see `WRITING_PREFIX`).
pub fn writing_key(shard: ShardId) -> [u8; 6] {
    let mut key = [0u8; 6];
    key[..4].copy_from_slice(WRITING_PREFIX);
    key[4..].copy_from_slice(&shard.to_be_bytes());
    key
}

/// The key of part `part` of that checkpoint.
pub fn part_key(shard: ShardId, sequence: u64, part: u32) -> [u8; 18] {
    let mut key = [0u8; 18];
    key[..14].copy_from_slice(&manifest_key(shard, sequence));
    key[..4].copy_from_slice(PART_PREFIX);
    key[14..].copy_from_slice(&part.to_be_bytes());
    key
}

/// What a checkpoint's manifest says of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub shard: ShardId,
    /// The last batch the state includes.
    pub sequence: u64,
    /// That batch's timestamp (the shard's clock goes on from it).
    pub timestamp: Timestamp,
    /// That batch's hash in the journal's chain: the next batch links to it, and recovery checks
    /// it against the batch itself while that is still in the live journal.
    pub chain_hash: [u8; 32],
    /// Bytes of encoded state in all parts.
    pub bytes: u64,
    /// The BLAKE3 of each part, in order.
    pub part_hashes: Vec<[u8; 32]>,
    /// The blobs the state refers to, sorted (format 4; none before).
    pub blobs: Vec<[u8; 32]>,
}

/// The manifest of formats 1 to 3 (no blobs).
#[derive(Deserialize)]
struct ManifestBeforeBlobs {
    shard: ShardId,
    sequence: u64,
    timestamp: Timestamp,
    chain_hash: [u8; 32],
    bytes: u64,
    part_hashes: Vec<[u8; 32]>,
}

/// What a shard remembers of its last checkpoint's blobs: each chunk's id, the version it had,
/// and its blob's hash (a chunk with that id and version is that blob: `growth::Tagged`).
/// Passed from one checkpoint to the next, seeded at a start by the checkpoint loaded; empty
/// after a failure (the next checkpoint then encodes every chunk again, and rewrites the same
/// blobs).
#[derive(Clone, Default)]
pub struct BlobCache {
    known: FastMap<u64, (u64, [u8; 32])>,
    /// The sorted blob lists (`Manifest::blobs`) of the shard's newest checkpoints that it wrote
    /// or loaded, by sequence: the next checkpoint's pruning takes them from here instead of
    /// reading and decoding their manifests again (each names every blob of the history: at 100
    /// M transfers about 120,000 a shard, decoded twice at every checkpoint before session 35).
    /// At most the `kept` newest: 32 bytes a blob each, about 4 MB a list a shard at 100 M
    /// transfers, growing with history as the manifests do.
    named: Vec<(u64, std::sync::Arc<Vec<[u8; 32]>>)>,
}

/// A set of BLAKE3 hashes (uniform already: the cheap hasher is enough, and no input of a
/// platform chooses them).
type HashSet32 = HashSet<[u8; 32], rustc_hash::FxBuildHasher>;

impl std::fmt::Debug for BlobCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlobCache({} chunks, {} blob lists)", self.known.len(), self.named.len())
    }
}

impl BlobCache {
    /// How many chunks it knows.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Whether it knows none.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// The blob of chunk `id` if the checkpoint wrote it at `version` (so the chunk, unchanged
    /// since, is that blob).
    pub fn hash_of(&self, id: u64, version: u64) -> Option<[u8; 32]> {
        self.known.get(&id).filter(|(known, _)| *known == version).map(|(_, hash)| *hash)
    }
}

/// Why a checkpoint could not be written or used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("checkpoint of shard {shard} at batch {sequence} is unusable: {reason}")]
    Unusable { shard: ShardId, sequence: u64, reason: String },
}

/// The phases of writing a checkpoint, in order (`Written::phase_us`): the sealed idempotency
/// records as cold rows, the new blobs of history, the state's parts, then its manifest with
/// the pruning of older checkpoints.
pub const PHASES: usize = 4;

/// Their names, for reports.
pub const PHASE_NAMES: [&str; PHASES] = ["rows", "blobs", "parts", "manifest_and_prune"];

/// A checkpoint written: its manifest and what it cost.
#[derive(Clone, Debug)]
pub struct Written {
    pub manifest: Manifest,
    pub write_us: u64,
    /// That time by phase (`PHASE_NAMES`; the writing mark's read and write before the first
    /// phase are in none).
    pub phase_us: [u64; PHASES],
    /// The CPU time the writing thread used in each phase (`thread_cpu_us`).
    pub phase_cpu_us: [u64; PHASES],
    /// Idempotency records it moved to the store (the state's sealed generation).
    pub evicted: usize,
    /// Blobs it wrote (chunks new or changed since the previous checkpoint), and their bytes.
    pub blobs_written: u64,
    pub blob_bytes: u64,
    /// Blobs it took over from the previous checkpoint without encoding them.
    pub blobs_reused: u64,
    /// What the next checkpoint of the shard starts from.
    pub cache: BlobCache,
}

/// What a shard lends a checkpoint's write besides its state (`Aids::default()`: nothing).
#[derive(Clone, Copy, Default)]
pub struct Aids<'a> {
    /// The engine's filter of every cold row's key: spares the cold rows' write from reading
    /// keys that cannot have a row yet.
    pub rows: Option<&'a crate::cold::ColdFilter>,
    /// Called between pieces of the work (a chunk of cold rows, a blob, about 64 KiB of the
    /// state's encoding); returns when the write may go on. A shard's checkpoint thread gives
    /// way there to the shard's batches (`shard::GiveWay`).
    pub give_way: Option<&'a dyn Fn()>,
}

/// Writes the blobs a checkpoint's state offers (`ShardState::offer_blobs`), batched into writes
/// of about `PART_BYTES`, and builds the next `BlobCache`.
struct Blobber<'a> {
    store: &'a dyn Store,
    shard: ShardId,
    previous: &'a BlobCache,
    next: FastMap<u64, (u64, [u8; 32])>,
    /// Every blob the state uses, as offered (sorted and deduplicated once, for the manifest):
    /// at 100 M transfers about 120,000 a shard, nearly all kept as they were, so no set of them.
    used: Vec<[u8; 32]>,
    /// The blobs this checkpoint wrote (a chunk's content may equal another's: written once; a
    /// chunk encoded again whose content equals a blob kept as it was is written again, the
    /// same bytes under the same key).
    new: HashSet32,
    /// The blobs encoded and not yet written: their keys and where each is in `buffer`, all
    /// written in one store write once `buffer` holds `PART_BYTES`.
    pending: Vec<([u8; 38], std::ops::Range<usize>)>,
    buffer: Vec<u8>,
    written: u64,
    bytes: u64,
    reused: u64,
    error: Option<StorageError>,
    /// `Aids::give_way`, called before each blob is encoded.
    give_way: &'a dyn Fn(),
}

impl Blobber<'_> {
    fn flush(&mut self) {
        if self.pending.is_empty() || self.error.is_some() {
            return;
        }
        let puts: Vec<(&[u8], &[u8])> = self.pending.iter().map(|(key, range)| (&key[..], &self.buffer[range.clone()])).collect();
        if let Err(error) = self.store.write(&puts) {
            self.error = Some(error);
        }
        self.pending.clear();
        self.buffer.clear();
    }
}

impl BlobSink for Blobber<'_> {
    fn offer(&mut self, id: u64, version: u64, encode: &dyn Fn(&mut Vec<u8>)) {
        if self.error.is_some() {
            return;
        }
        let hash = match self.previous.known.get(&id) {
            Some((known, hash)) if *known == version => {
                self.reused += 1;
                *hash
            }
            _ => {
                (self.give_way)();
                let start = self.buffer.len();
                encode(&mut self.buffer);
                let hash = *blake3::hash(&self.buffer[start..]).as_bytes();
                if self.new.insert(hash) {
                    self.written += 1;
                    self.bytes += (self.buffer.len() - start) as u64;
                    self.pending.push((blob_key(self.shard, &hash), start..self.buffer.len()));
                    if self.buffer.len() >= PART_BYTES {
                        self.flush();
                    }
                } else {
                    // Content another chunk of this checkpoint has: written once.
                    self.buffer.truncate(start);
                }
                hash
            }
        };
        self.used.push(hash);
        self.next.insert(id, (version, hash));
    }

    fn keep(&mut self, hash: &[u8; 32]) {
        self.reused += 1;
        self.used.push(*hash);
    }
}

/// Marks of history blobs found damaged or missing: `m/x/` + shard + hash -> why.
const DAMAGED_PREFIX: &[u8; 4] = b"m/x/";

fn damaged_key(shard: ShardId, hash: &[u8; 32]) -> [u8; 38] {
    let mut key = blob_key(shard, hash);
    key[..4].copy_from_slice(DAMAGED_PREFIX);
    key
}

/// Records that `shard`'s history blob `hash` could not be read back (a shard stopped on it, or
/// recovery met it): recovery then skips every checkpoint naming it, and the next checkpoint
/// that writes the blob again (rebuilt by the replay: the same bytes) clears the mark.
pub fn mark_damaged(store: &dyn Store, shard: ShardId, hash: &[u8; 32], reason: &str) -> Result<(), StorageError> {
    store.write(&[(&damaged_key(shard, hash), reason.as_bytes())])
}

/// The history blobs of `shard` marked damaged.
pub fn damaged(store: &dyn Store, shard: ShardId) -> Result<HashSet<[u8; 32]>, StorageError> {
    let mut found = HashSet::new();
    store.scan(&damaged_key(shard, &[0; 32]), &damaged_key(shard, &[0xff; 32]), &mut |key, _| {
        if let Some(hash) = key.get(6..38).and_then(|h| <[u8; 32]>::try_from(h).ok()) {
            found.insert(hash);
        }
        true
    })?;
    Ok(found)
}

/// Clears the marks of damaged blobs that this checkpoint uses and that now read back whole
/// (it wrote them again).
fn clear_repaired(store: &dyn Store, shard: ShardId, used: &[[u8; 32]]) -> Result<(), StorageError> {
    for hash in damaged(store, shard)? {
        let whole = used.binary_search(&hash).is_ok() && store.get(&blob_key(shard, &hash))?.is_some_and(|bytes| blake3::hash(&bytes).as_bytes() == &hash);
        if whole {
            let key = damaged_key(shard, &hash);
            store.delete_range(&key, &[&key[..], &[0]].concat())?;
        }
    }
    Ok(())
}

/// Reads a shard's history blobs back for its pieces out of memory (`growth::Piece::Cold`), and
/// counts the bytes its pieces hold read back, so that the shard drops those copies once they
/// pass `CACHE_BYTES` (`ShardState::uncache`).
pub struct HistoryReader {
    store: std::sync::Arc<dyn Store>,
    shard: ShardId,
    cached: std::sync::atomic::AtomicUsize,
}

impl HistoryReader {
    /// How many bytes of blobs read back the shard keeps before it drops them all.
    pub const CACHE_BYTES: usize = 64 << 20;

    pub fn new(store: std::sync::Arc<dyn Store>, shard: ShardId) -> std::sync::Arc<HistoryReader> {
        std::sync::Arc::new(HistoryReader { store, shard, cached: Default::default() })
    }

    /// Bytes of blobs read back since the last `reset`.
    pub fn cached_bytes(&self) -> usize {
        self.cached.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The shard dropped every copy read back.
    pub fn reset(&self) {
        self.cached.store(0, std::sync::atomic::Ordering::Relaxed);
    }
}

impl crate::ledger::growth::BlobRead for HistoryReader {
    fn read(&self, hash: &[u8; 32]) -> Result<Vec<u8>, crate::ledger::growth::BlobError> {
        use crate::ledger::growth::BlobError;
        // Damage the store's own checksums found marks the blob as a hash mismatch does (a
        // disk that did not answer does not: the blob may be sound).
        let found =
            self.store.get(&blob_key(self.shard, hash)).map_err(|e| BlobError { damaged: matches!(e, StorageError::Corrupt(_)), reason: e.to_string() })?;
        let bytes = found.ok_or_else(|| BlobError::damaged("it is missing"))?;
        if blake3::hash(&bytes).as_bytes() != hash {
            return Err(BlobError::damaged("it does not match its hash"));
        }
        Ok(bytes)
    }

    fn cached(&self, bytes: usize) {
        self.cached.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Streams the encoded state into parts, writing each as it fills (the whole encoding is never
/// held in memory at once).
struct PartWriter<'a> {
    store: &'a dyn Store,
    shard: ShardId,
    sequence: u64,
    buffer: Vec<u8>,
    hashes: Vec<[u8; 32]>,
    bytes: u64,
    error: Option<StorageError>,
}

impl PartWriter<'_> {
    fn flush_part(&mut self) -> std::io::Result<()> {
        let part = u32::try_from(self.hashes.len()).map_err(|_| std::io::Error::other("more than 2^32 parts"))?;
        let hash = *blake3::hash(&self.buffer).as_bytes();
        if let Err(error) = self.store.write(&[(&part_key(self.shard, self.sequence, part), &self.buffer)]) {
            let text = error.to_string();
            self.error = Some(error);
            return Err(std::io::Error::other(text));
        }
        self.hashes.push(hash);
        self.bytes += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }
}

impl Write for PartWriter<'_> {
    fn write(&mut self, mut data: &[u8]) -> std::io::Result<usize> {
        let taken = data.len();
        while !data.is_empty() {
            let room = PART_BYTES - self.buffer.len();
            let (now, rest) = data.split_at(room.min(data.len()));
            self.buffer.extend_from_slice(now);
            data = rest;
            if self.buffer.len() == PART_BYTES {
                self.flush_part()?;
            }
        }
        Ok(taken)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes a checkpoint of `state` (the state after batch `head.sequence`, whose hash is
/// `head.hash`, stamped `timestamp`), then
/// deletes all but the `kept` newest checkpoints of the shard (and any parts a crash left
/// without a manifest below them). Runs on a thread of its own (or at shutdown on the shard's).
///
/// The state's sealed idempotency records (`ShardState::seal_idempotency`, not part of its
/// encoding) are written first as cold rows stamped `head.sequence`: a manifest never names a
/// state whose evicted records are not durable. A crash before the manifest leaves rows that a
/// recovery from an older checkpoint ignores until its replay passes their stamp (`cold`).
///
/// The state's full chunks of history are blobs: those `previous` (the last checkpoint's
/// `Written::cache`) knows, unchanged since, are referred to as they are; the others are encoded
/// and written, before any part. `Written::cache` is what the next checkpoint starts from.
///
/// `aids` are what the shard lends the write besides its state (`Aids`).
pub fn write(
    store: &dyn Store,
    state: &ShardState,
    head: ChainHead,
    timestamp: Timestamp,
    kept: usize,
    previous: BlobCache,
    aids: Aids<'_>,
) -> Result<Written, CheckpointError> {
    let sequence = head.sequence;
    let started = Instant::now();
    let shard = state.shard;
    // An earlier checkpoint that did not finish may have left blobs no manifest names.
    let sweep = store.get(&writing_key(shard))?.is_some();
    if !sweep {
        store.write(&[(&writing_key(shard), &sequence.to_be_bytes())])?;
    }
    let (mut phase_us, mut phase_cpu_us) = ([0u64; PHASES], [0u64; PHASES]);
    let (mut phase_started, mut cpu_started) = (Instant::now(), thread_cpu_us());
    let mut phase_done = |phase: usize| {
        let (now, cpu) = (Instant::now(), thread_cpu_us());
        phase_us[phase] = now.duration_since(phase_started).as_micros() as u64;
        // Nothing unless both ends were read (a failed read is not a thread's whole life).
        phase_cpu_us[phase] = cpu.zip(cpu_started).map_or(0, |(end, start)| end.saturating_sub(start));
        (phase_started, cpu_started) = (now, cpu);
    };
    let give_way = aids.give_way.unwrap_or(&|| {});
    let evicted = match &state.sealed {
        Some(sealed) => {
            let evicted = crate::cold::write_rows(store, shard, sequence, sealed, aids.rows, give_way)?;
            // The rows are durable: the filter learns them now, whatever happens to the rest of
            // this checkpoint. A bit for a durable row is never wrong (a row of a checkpoint
            // that is not loaded is read and found invisible); a durable row without its bit is
            // an order number the engine would take again once its record leaves memory (helper
            // 108: a checkpoint failing after its manifest, in its pruning, left the filter
            // without them, and a graceful stop saved that filter).
            if let Some(filter) = aids.rows {
                filter.insert_all(sealed.iter().map(|(key, _)| key));
            }
            evicted
        }
        None => 0,
    };
    phase_done(0);
    let mut blobber = Blobber {
        store,
        shard,
        previous: &previous,
        next: FastMap::default(),
        used: Vec::new(),
        new: HashSet32::default(),
        pending: Vec::new(),
        // Room for a full write and the blob that fills it (pages are touched only as used).
        buffer: Vec::with_capacity(PART_BYTES + (1 << 20)),
        written: 0,
        bytes: 0,
        reused: 0,
        error: None,
        give_way,
    };
    state.offer_blobs(&mut blobber);
    blobber.flush();
    if let Some(error) = blobber.error.take() {
        return Err(CheckpointError::Storage(error));
    }
    let (next, used, blobs_written, blob_bytes, blobs_reused) = (blobber.next, blobber.used, blobber.written, blobber.bytes, blobber.reused);
    // Its buffer (up to `PART_BYTES` and a blob, written) goes now, not after the parts.
    drop((blobber.buffer, blobber.pending, blobber.new));
    phase_done(1);
    let mut writer = PartWriter { store, shard, sequence, buffer: Vec::with_capacity(PART_BYTES.min(1 << 20)), hashes: Vec::new(), bytes: 0, error: None };
    // The chunks' blobs by id, lent to the encoding and given back for the next checkpoint.
    let (encoded, layout) = crate::ledger::growth::with_layout_at(Layout::PiecesOut(next), CHECKPOINT_FORMAT_VERSION, || {
        // Handed on in slices of about 64 KiB (`codec::STREAM_BYTES`): the whole encoding is
        // never held at once.
        crate::codec::encode_to(state, &mut |bytes| {
            give_way();
            writer.write_all(bytes).map_err(|e| crate::codec::EncodeError::new(e.to_string()))
        })
        .map_err(|e| e.to_string())
    });
    let Layout::PiecesOut(next) = layout else { unreachable!("with_layout gives back the layout it was given") };
    if let Err(error) = encoded {
        return Err(match writer.error.take() {
            Some(storage) => CheckpointError::Storage(storage),
            None => CheckpointError::Unusable { shard, sequence, reason: format!("the state does not encode: {error}") },
        });
    }
    if (!writer.buffer.is_empty() || writer.hashes.is_empty()) && writer.flush_part().is_err() {
        let error = writer.error.take().unwrap_or(StorageError::Io("part write failed".into()));
        return Err(CheckpointError::Storage(error));
    }
    phase_done(2);
    let mut blobs = used;
    blobs.sort_unstable();
    blobs.dedup();
    let manifest = Manifest { shard, sequence, timestamp, chain_hash: head.hash, bytes: writer.bytes, part_hashes: writer.hashes, blobs };
    // Listed with its manifest, one write; the shard's first checkpoint by a build with
    // listings lists the manifests already there too.
    let mut listed: Vec<[u8; 14]> = vec![listed_key(shard, sequence)];
    if listings(store, shard)?.is_empty() {
        // A damaged manifest among them: listed as far as the listing reaches (the rest stay
        // unlisted, usable while the manifests' scan works).
        match manifests(store, shard) {
            Ok(earlier) => listed.extend(earlier.into_iter().map(|earlier| listed_key(shard, earlier))),
            Err(error) => tracing::warn!(shard, "the checkpoints before this one are not listed: {error}"),
        }
    }
    let manifest_key = manifest_key(shard, sequence);
    let encoded = encode_manifest(&manifest);
    let mut puts: Vec<(&[u8], &[u8])> = vec![(&manifest_key, &encoded)];
    puts.extend(listed.iter().map(|key| (&key[..], &[][..])));
    store.write(&puts)?;
    let current = (sequence, std::sync::Arc::new(manifest.blobs.clone()));
    clear_repaired(store, shard, &current.1)?;
    let named = prune(store, shard, kept.max(1), sweep, current, &previous.named)?;
    drop(previous);
    let writing = writing_key(shard);
    store.delete_range(&writing, &[&writing[..], &[0]].concat())?;
    phase_done(3);
    let cache = BlobCache { known: next, named };
    Ok(Written { manifest, write_us: started.elapsed().as_micros() as u64, phase_us, phase_cpu_us, evicted, blobs_written, blob_bytes, blobs_reused, cache })
}

/// The CPU time the calling thread has used, in microseconds (`None` where the clock cannot be
/// read). A checkpoint thread shares two cores with the shards and RocksDB's compactions, so a
/// phase's wall time says more about the others (and about I/O) than about the phase: at 100 M
/// transfers the phases took about four times their CPU time at nice 10 (sessions 41 and 43), about
/// three times at the shard's priority (session 43).
#[cfg(unix)]
fn thread_cpu_us() -> Option<u64> {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `clock_gettime` writes one `timespec` through a pointer to a live one.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } != 0 {
        return None;
    }
    Some((now.tv_sec as u64).saturating_mul(1_000_000).saturating_add(now.tv_nsec as u64 / 1_000))
}

/// No thread clock is read elsewhere: the phases' CPU time stays 0.
#[cfg(not(unix))]
fn thread_cpu_us() -> Option<u64> {
    None
}

/// The format version, the codec's encoding of `manifest`, then the BLAKE3 of those bytes. The
/// blob list (every blob of the history: about 120,000 hashes a shard at 100 M transfers) is
/// copied in as the codec lays it out (its length, then each hash's bytes), not handed to the
/// codec a byte at a time: the same bytes (`tests::a_manifest_encodes_as_the_codec_would`).
fn encode_manifest(manifest: &Manifest) -> Vec<u8> {
    use bincode::Options;
    let Manifest { shard, sequence, timestamp, chain_hash, bytes: state_bytes, part_hashes, blobs } = manifest;
    let mut bytes = Vec::with_capacity(1 + 64 + 32 * (part_hashes.len() + blobs.len() + 2));
    bytes.push(CHECKPOINT_FORMAT_VERSION);
    // A struct's fields are a tuple's to the codec.
    codec().serialize_into(&mut bytes, &(shard, sequence, timestamp, chain_hash, state_bytes, part_hashes, blobs.len() as u64)).expect("manifests serialize");
    blobs.iter().for_each(|hash| bytes.extend_from_slice(hash));
    let hash = blake3::hash(&bytes);
    bytes.extend_from_slice(hash.as_bytes());
    bytes
}

fn decode_manifest(shard: ShardId, sequence: u64, bytes: &[u8]) -> Result<Manifest, CheckpointError> {
    use bincode::Options;
    let unusable = |reason: String| CheckpointError::Unusable { shard, sequence, reason };
    if bytes.len() < 33 {
        return Err(unusable(format!("a manifest of {} bytes", bytes.len())));
    }
    let (body, hash) = bytes.split_at(bytes.len() - 32);
    if blake3::hash(body).as_bytes() != hash {
        return Err(unusable("the manifest's hash does not match its bytes".into()));
    }
    if !READABLE_FORMAT_VERSIONS.contains(&body[0]) {
        return Err(unusable(format!("format version {}; this build reads version {CHECKPOINT_FORMAT_VERSION}", body[0])));
    }
    let manifest: Manifest = if body[0] < 4 {
        let old: ManifestBeforeBlobs = codec().deserialize(&body[1..]).map_err(|e| unusable(format!("the manifest does not decode: {e}")))?;
        Manifest {
            shard: old.shard,
            sequence: old.sequence,
            timestamp: old.timestamp,
            chain_hash: old.chain_hash,
            bytes: old.bytes,
            part_hashes: old.part_hashes,
            blobs: Vec::new(),
        }
    } else {
        codec().deserialize(&body[1..]).map_err(|e| unusable(format!("the manifest does not decode: {e}")))?
    };
    if manifest.shard != shard || manifest.sequence != sequence {
        return Err(unusable(format!("the manifest names batch {} of shard {}", manifest.sequence, manifest.shard)));
    }
    // Loading looks blobs up in the list by bisection, and pruning walks it: every build since
    // format 4 writes it strictly ascending.
    if manifest.blobs.windows(2).any(|pair| pair[0] >= pair[1]) {
        return Err(unusable("the manifest's blob list is not in strictly ascending order".into()));
    }
    Ok(manifest)
}

/// The sequences of `shard`'s checkpoint manifests, oldest first (whether usable or not): from
/// the manifests' keys, or, when that scan meets damage, from their listings
/// (`LISTED_PREFIX`). The manifests stay the authority: a build before session 61 run on the
/// data writes checkpoints without listings and leaves the listings of those it prunes.
pub fn list(store: &dyn Store, shard: ShardId) -> Result<Vec<u64>, StorageError> {
    match manifests(store, shard) {
        Err(StorageError::Corrupt(reason)) => {
            let listed = listings(store, shard)?;
            if listed.is_empty() {
                return Err(StorageError::Corrupt(reason));
            }
            tracing::warn!(shard, "listing the checkpoints from their listings: a manifest is damaged ({reason})");
            Ok(listed)
        }
        other => other,
    }
}

/// The sequences `shard`'s listings name (`LISTED_PREFIX`).
fn listings(store: &dyn Store, shard: ShardId) -> Result<Vec<u64>, StorageError> {
    sequences_under(store, &listed_key(shard, 0), &listed_key(shard, u64::MAX))
}

/// The sequences of `shard`'s manifests, read from their keys (a scan reads their values too).
fn manifests(store: &dyn Store, shard: ShardId) -> Result<Vec<u64>, StorageError> {
    sequences_under(store, &manifest_key(shard, 0), &manifest_key(shard, u64::MAX))
}

fn sequences_under(store: &dyn Store, start: &[u8], end: &[u8]) -> Result<Vec<u64>, StorageError> {
    let mut sequences = Vec::new();
    store.scan(start, end, &mut |key, _| {
        if let Some(tail) = key.get(6..14).and_then(|t| <[u8; 8]>::try_from(t).ok()) {
            sequences.push(u64::from_be_bytes(tail));
        }
        true
    })?;
    Ok(sequences)
}

/// Deletes every checkpoint of `shard` older than its `kept` newest, with any parts without a
/// manifest below the oldest one kept, and the blobs only they named. Parts go first: a crash
/// between the two deletes leaves manifests whose parts are gone, which loading skips as
/// unusable and the next pruning deletes.
///
/// The blobs to delete are those the pruned manifests name and no kept one does: read from the
/// manifests, not by listing the shard's blobs, which would read every blob of its history back
/// (a store's scan reads values; at 100 M transfers, gigabytes at each checkpoint). A checkpoint's
/// list is taken from `cached` (the lists of the checkpoints this shard wrote or loaded) when it
/// is there, so a shard that goes on writing checkpoints decodes no manifest; the lists are
/// sorted, so the difference is a walk, not a hash set of the whole history. Every blob of the
/// shard is looked at (`collect_blobs`) only when `sweep` is asked (an earlier checkpoint
/// stopped half-way: see `WRITING_PREFIX`) or a pruned manifest does not decode. `current`: the
/// checkpoint just written and its blobs, kept whatever its manifest reads back as. Gives the
/// lists of the checkpoints kept (for the next checkpoint's `BlobCache`). A list in memory is
/// trusted over its manifest: one writer of checkpoints per shard (a second engine on the same
/// store beside a stopped shard's checkpoint thread breaks that, see the known limits; two
/// states at one sequence are the same state, so their lists agree).
fn prune(
    store: &dyn Store,
    shard: ShardId,
    kept: usize,
    sweep: bool,
    current: (u64, std::sync::Arc<Vec<[u8; 32]>>),
    cached: &[(u64, std::sync::Arc<Vec<[u8; 32]>>)],
) -> Result<Vec<(u64, std::sync::Arc<Vec<[u8; 32]>>)>, StorageError> {
    let sequences = list(store, shard)?;
    // The `kept` checkpoints are the newest this shard knows usable (the one just written, the
    // ones it wrote or recovered from: `cached`), then, if fewer, the newest others. A newer
    // one recovery skipped as unusable no longer counts (before session 61 it did, and pruning
    // could delete the only checkpoint recovery had used while keeping the damaged one): it
    // stays while an older kept one does, and goes with it.
    let known = |sequence: &u64| *sequence == current.0 || cached.iter().any(|(cached, _)| cached == sequence);
    let mut keep: Vec<u64> = sequences.iter().rev().filter(|sequence| known(sequence)).take(kept).copied().collect();
    for sequence in sequences.iter().rev() {
        if keep.len() >= kept {
            break;
        }
        // Only one whose manifest reads and decodes: with the lists in memory lost (a failed
        // checkpoint took them), a damaged newer one would otherwise be kept over the one
        // recovery used, and that one pruned (helper 111).
        if !keep.contains(sequence) && manifest_blobs(store, shard, *sequence)?.is_some() {
            keep.push(*sequence);
        }
    }
    let oldest_kept = keep.iter().min().copied().unwrap_or(current.0);
    let split = sequences.partition_point(|sequence| *sequence < oldest_kept);
    let pruned = &sequences[..split];
    let kept: Vec<u64> = sequences[split..].iter().filter(|sequence| keep.contains(sequence)).copied().collect();
    // A list from memory, else the manifest's (`None`: missing or it does not decode).
    let list_of = |sequence: u64| -> Result<Option<std::sync::Arc<Vec<[u8; 32]>>>, StorageError> {
        if sequence == current.0 {
            return Ok(Some(current.1.clone()));
        }
        if let Some((_, list)) = cached.iter().find(|(cached, _)| *cached == sequence) {
            return Ok(Some(list.clone()));
        }
        Ok(manifest_blobs(store, shard, sequence)?.map(std::sync::Arc::new))
    };
    // What the kept checkpoints name (a manifest that cannot be read protects nothing: it is
    // unusable anyway), the one just written among them whatever its manifest reads back.
    let mut named = vec![current.clone()];
    for sequence in kept.iter().filter(|sequence| **sequence != current.0) {
        if let Some(list) = list_of(*sequence)? {
            named.push((*sequence, list));
        }
    }
    named.sort_unstable_by_key(|(sequence, _)| *sequence);
    if pruned.is_empty() && !sweep {
        return Ok(named);
    }
    // What the pruned checkpoints name, read before they go.
    let mut sweep = sweep;
    let mut dropped: Vec<std::sync::Arc<Vec<[u8; 32]>>> = Vec::new();
    for sequence in pruned {
        match list_of(*sequence)? {
            Some(list) => dropped.push(list),
            None => sweep = true,
        }
    }
    // Parts first (with a store that deletes ranges one by one, a crash between leaves
    // manifests whose parts are gone, which loading skips and the next pruning deletes), then
    // the manifests, then the blobs only they named: one synced write for all where the store
    // can (each blob's own write before session 35, the process's fsyncs shared with the
    // shards' journal writes).
    let mut ranges: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    if let Some(oldest_kept) = kept.first() {
        ranges.push((part_key(shard, 0, 0).to_vec(), part_key(shard, *oldest_kept, 0).to_vec()));
        ranges.push((manifest_key(shard, 0).to_vec(), manifest_key(shard, *oldest_kept).to_vec()));
        ranges.push((listed_key(shard, 0).to_vec(), listed_key(shard, *oldest_kept).to_vec()));
    }
    let delete = |ranges: &[(Vec<u8>, Vec<u8>)]| {
        let ranges: Vec<(&[u8], &[u8])> = ranges.iter().map(|(start, end)| (&start[..], &end[..])).collect();
        store.delete_ranges(&ranges)
    };
    if sweep {
        delete(&ranges)?;
        collect_blobs(store, shard, &named)?;
        return Ok(named);
    }
    let lists: Vec<&[[u8; 32]]> = named.iter().map(|(_, list)| &list[..]).collect();
    let dropped: std::borrow::Cow<'_, [[u8; 32]]> = match &dropped[..] {
        [one] => std::borrow::Cow::Borrowed(&one[..]),
        several => {
            let mut all: Vec<[u8; 32]> = several.iter().flat_map(|list| list.iter().copied()).collect();
            all.sort_unstable();
            all.dedup();
            std::borrow::Cow::Owned(all)
        }
    };
    for hash in absent_from(&dropped, &lists) {
        let key = blob_key(shard, &hash);
        ranges.push((key.to_vec(), [&key[..], &[0]].concat()));
    }
    delete(&ranges)?;
    forget_marks_unnamed(store, shard, |hash| lists.iter().any(|list| list.binary_search(hash).is_ok()))?;
    Ok(named)
}

/// The hashes of `sorted` that none of the sorted `lists` holds, in order: one walk of each.
fn absent_from(sorted: &[[u8; 32]], lists: &[&[[u8; 32]]]) -> Vec<[u8; 32]> {
    debug_assert!(sorted.is_sorted() && lists.iter().all(|list| list.is_sorted()), "sorted lists");
    let mut at = vec![0usize; lists.len()];
    let mut absent = Vec::new();
    for hash in sorted {
        let mut held = false;
        for (list, at) in lists.iter().zip(at.iter_mut()) {
            while list.get(*at).is_some_and(|other| other < hash) {
                *at += 1;
            }
            held |= list.get(*at) == Some(hash);
        }
        if !held {
            absent.push(*hash);
        }
    }
    absent
}

/// The blobs the manifest of `shard`'s checkpoint at `sequence` names; `None` if it is missing or
/// does not decode.
fn manifest_blobs(store: &dyn Store, shard: ShardId, sequence: u64) -> Result<Option<Vec<[u8; 32]>>, StorageError> {
    // A manifest the store reads as damaged is unusable like one that does not decode (recovery
    // skips it): it protects nothing, and its pruning must not fail every checkpoint after it.
    let bytes = match store.get(&manifest_key(shard, sequence)) {
        Err(StorageError::Corrupt(reason)) => {
            tracing::warn!(shard, sequence, "the manifest of a checkpoint is damaged: {reason}");
            None
        }
        read => read?,
    };
    Ok(bytes.and_then(|bytes| decode_manifest(shard, sequence, &bytes).ok()).map(|manifest| manifest.blobs))
}

/// A damaged mark outlives its blob only while a kept checkpoint names it.
fn forget_marks_unnamed(store: &dyn Store, shard: ShardId, named: impl Fn(&[u8; 32]) -> bool) -> Result<(), StorageError> {
    for hash in damaged(store, shard)? {
        if !named(&hash) {
            let key = damaged_key(shard, &hash);
            store.delete_range(&key, &[&key[..], &[0]].concat())?;
        }
    }
    Ok(())
}

/// Deletes the blobs of `shard` that no remaining manifest names (those of pruned checkpoints,
/// and any a crash left before its manifest), looking at every blob of the shard (a scan that
/// reads them all back: after a checkpoint that stopped half-way only). A manifest that cannot
/// be read protects nothing: it is unusable anyway; the lists held in memory (`kept`: the
/// checkpoint just written, those loaded or written before) protect theirs whatever their
/// manifests read back as (helper 111: a manifest read as damaged once would have lost the
/// blobs of the checkpoint the shard goes on naming).
fn collect_blobs(store: &dyn Store, shard: ShardId, kept: &[(u64, std::sync::Arc<Vec<[u8; 32]>>)]) -> Result<(), StorageError> {
    let mut named: HashSet<[u8; 32]> = kept.iter().flat_map(|(_, list)| list.iter().copied()).collect();
    for sequence in list(store, shard)? {
        named.extend(manifest_blobs(store, shard, sequence)?.unwrap_or_default());
    }
    let (start, end) = (blob_key(shard, &[0; 32]), blob_key(shard, &[0xff; 32]));
    let mut unnamed = Vec::new();
    store.scan(&start, &end, &mut |key, _| {
        if let Some(hash) = key.get(6..38).and_then(|h| <[u8; 32]>::try_from(h).ok()) {
            if !named.contains(&hash) {
                unnamed.push(key.to_vec());
            }
        }
        true
    })?;
    // The scan's end is exclusive: the all-ones hash (never a BLAKE3 in practice) is left alone.
    let afters: Vec<Vec<u8>> = unnamed.iter().map(|key| [&key[..], &[0]].concat()).collect();
    let ranges: Vec<(&[u8], &[u8])> = unnamed.iter().zip(&afters).map(|(key, after)| (&key[..], &after[..])).collect();
    store.delete_ranges(&ranges)?;
    forget_marks_unnamed(store, shard, |hash| named.contains(hash))
}

/// Reads the parts of a checkpoint in order, checking each one's hash before serving a byte.
struct PartReader<'a> {
    store: &'a dyn Store,
    manifest: &'a Manifest,
    next_part: usize,
    part: Vec<u8>,
    position: usize,
}

impl Read for PartReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.position == self.part.len() {
            let Some(expected) = self.manifest.part_hashes.get(self.next_part) else {
                return Ok(0);
            };
            let key = part_key(self.manifest.shard, self.manifest.sequence, self.next_part as u32);
            let bytes = self.store.get(&key).map_err(|e| std::io::Error::other(e.to_string()))?;
            let bytes = bytes.ok_or_else(|| std::io::Error::other(format!("part {} is missing", self.next_part)))?;
            if blake3::hash(&bytes).as_bytes() != expected {
                return Err(std::io::Error::other(format!("part {} does not match its hash", self.next_part)));
            }
            self.part = bytes;
            self.position = 0;
            self.next_part += 1;
        }
        let n = out.len().min(self.part.len() - self.position);
        out[..n].copy_from_slice(&self.part[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

/// Loads the checkpoint of `shard` after batch `sequence`, checking every hash and that the
/// state decodes from exactly the bytes written.
pub fn load(store: &dyn Store, shard: ShardId, sequence: u64) -> Result<(ShardState, Manifest), CheckpointError> {
    load_cached(store, shard, sequence).map(|(state, manifest, _)| (state, manifest))
}

/// `load`, with the `BlobCache` of the chunks it read from blobs (what the shard's next
/// checkpoint starts from).
pub fn load_cached(store: &dyn Store, shard: ShardId, sequence: u64) -> Result<(ShardState, Manifest, BlobCache), CheckpointError> {
    load_with(store, shard, sequence, None)
}

/// `load_cached`, leaving the chunks a checkpoint kept as blobs out of memory when `lazy` is
/// given (they are read back through it when used): a start then reads the hot state only. The
/// blobs are checked against the manifest's list here and against their hashes when read.
pub fn load_with(
    store: &dyn Store,
    shard: ShardId,
    sequence: u64,
    lazy: Option<&std::sync::Arc<HistoryReader>>,
) -> Result<(ShardState, Manifest, BlobCache), CheckpointError> {
    load_avoiding(store, shard, sequence, lazy, &HashSet::new())
}

/// `load_with`, refusing a checkpoint that names a blob of `damaged` (`mark_damaged`).
fn load_avoiding(
    store: &dyn Store,
    shard: ShardId,
    sequence: u64,
    lazy: Option<&std::sync::Arc<HistoryReader>>,
    damaged: &HashSet<[u8; 32]>,
) -> Result<(ShardState, Manifest, BlobCache), CheckpointError> {
    use bincode::Options;
    let unusable = |reason: String| CheckpointError::Unusable { shard, sequence, reason };
    let bytes = match store.get(&manifest_key(shard, sequence)) {
        Ok(found) => found.ok_or_else(|| unusable("no manifest".into()))?,
        // Damaged on disk (the store's checksum): the checkpoint before it is used.
        Err(StorageError::Corrupt(reason)) => return Err(unusable(format!("its manifest cannot be read: {reason}"))),
        Err(error) => return Err(error.into()),
    };
    let manifest = decode_manifest(shard, sequence, &bytes)?;
    if let Some(hash) = manifest.blobs.iter().find(|hash| damaged.contains(*hash)) {
        return Err(unusable(format!("it uses the history blob {}, which a shard found damaged", hex(hash))));
    }
    let mut reader = PartReader { store, manifest: &manifest, next_part: 0, part: Vec::new(), position: 0 };
    // The decoder reads through a buffer; `reject_trailing_bytes` does not apply to readers, so
    // the reader must be spent exactly afterwards.
    let layout = match (bytes[0], lazy) {
        (1 | 2, _) => Layout::Legacy,
        (3, _) => Layout::Flat,
        (_, Some(reader)) => Layout::PiecesLazy(reader.clone(), Vec::new()),
        (_, None) => Layout::PiecesIn(Vec::new()),
    };
    let (decoded, layout) = crate::ledger::growth::with_layout_at(layout, bytes[0], || codec().deserialize_from::<_, ShardState>(&mut reader));
    let mut state = decoded.map_err(|e| unusable(format!("the state does not decode: {e}")))?;
    let mut rest = [0u8; 1];
    match reader.read(&mut rest) {
        Ok(0) => {}
        Ok(_) => return Err(unusable("bytes left after the state".into())),
        Err(error) => return Err(unusable(error.to_string())),
    }
    if state.shard != shard || !state.is_initialized() {
        return Err(unusable(format!("the state is of shard {} with {} shards", state.shard, state.shard_count)));
    }
    let (shard_count, accounts) = (state.shard_count, state.accounts.len());
    state.lots.place(shard, shard_count, accounts).map_err(unusable)?;
    // An account's lots are its unsettled balance by day: a state where they disagree was not
    // written by a sound shard (its hashes match: a bug, not the disk), and settling from it would
    // move other amounts than the balance holds. Recovery takes the checkpoint before.
    // Every lot holds income: a shard drops a lot it empties, and what it adds is positive (a
    // lot's count of income credits may be 0: money returned, journal format 3). A lot of zero
    // or less is refused even where the sum still agrees (one hidden by another's surplus).
    for account in &state.accounts {
        let lots = state.lots.get(account.id).map_or(&[][..], |lots| &lots[..]);
        if let Some(lot) = lots.iter().find(|lot| lot.amount <= 0) {
            return Err(unusable(format!("account {} has a lot of {} for day {}: lots hold income", account.id.0, lot.amount, lot.day)));
        }
        let lots: i128 = lots.iter().map(|lot| lot.amount as i128).sum();
        if lots != account.unsettled as i128 {
            return Err(unusable(format!("account {}'s lots sum to {lots}, its unsettled balance is {}", account.id.0, account.unsettled)));
        }
    }
    let mut cache = match layout {
        Layout::PiecesIn(placeholders) => fill(store, &manifest, &mut state, &placeholders)?,
        Layout::PiecesLazy(_, hashes) => {
            if let Some(hash) = hashes.iter().find(|hash| manifest.blobs.binary_search(hash).is_err()) {
                return Err(unusable(format!("the state refers to blob {}, which its manifest does not name", hex(hash))));
            }
            BlobCache::default()
        }
        _ => BlobCache::default(),
    };
    if bytes[0] < 6 {
        // Where each day's settlement rows are, from the rows (in place now, or readable
        // lazily). A store that does not answer fails the start (as `fill` does); a damaged blob
        // is marked, as a shard marks one it meets, and makes this checkpoint unusable.
        if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| state.rebuild_day_runs())) {
            let Some(fault) = payload.downcast_ref::<crate::ledger::growth::StorageFault>() else { std::panic::resume_unwind(payload) };
            if !fault.damaged {
                return Err(CheckpointError::Storage(StorageError::Io(fault.to_string())));
            }
            // A read-only store (`clearing verify`) cannot mark it: the error below still says it.
            let _ = mark_damaged(store, shard, &fault.hash, &fault.reason);
            return Err(unusable(format!("its settlement rows cannot be read to index them: {fault}")));
        }
    } else {
        state.settled_runs.check(state.settled.len()).map_err(|e| unusable(format!("its settled rows' runs: {e}")))?;
        state.commission_runs.check(state.commissions.len()).map_err(|e| unusable(format!("its commissions' runs: {e}")))?;
    }
    cache.named = vec![(sequence, std::sync::Arc::new(manifest.blobs.clone()))];
    Ok((state, manifest, cache))
}

/// Reads the blobs the decoded state's placeholders stand for, each checked against its hash and
/// against the manifest's list, and puts them in place; gives the `BlobCache` of the filled
/// chunks, so the shard's next checkpoint refers to them instead of writing them again.
fn fill(
    store: &dyn Store,
    manifest: &Manifest,
    state: &mut ShardState,
    placeholders: &[crate::ledger::growth::Placeholder],
) -> Result<BlobCache, CheckpointError> {
    struct Filler<'a> {
        store: &'a dyn Store,
        manifest: &'a Manifest,
        by_id: FastMap<u64, ([u8; 32], u32)>,
        storage_error: Option<StorageError>,
        cache: BlobCache,
    }
    impl crate::ledger::growth::BlobSource for Filler<'_> {
        fn bytes(&mut self, id: u64) -> Result<Option<(Vec<u8>, u32)>, String> {
            let Some((hash, count)) = self.by_id.get(&id) else { return Ok(None) };
            if self.manifest.blobs.binary_search(hash).is_err() {
                return Err("the state refers to a blob its manifest does not name".into());
            }
            let bytes = match self.store.get(&blob_key(self.manifest.shard, hash)) {
                Ok(Some(bytes)) => bytes,
                Ok(None) => return Err(format!("blob {} is missing", hex(hash))),
                Err(error) => {
                    let text = error.to_string();
                    self.storage_error = Some(error);
                    return Err(text);
                }
            };
            if blake3::hash(&bytes).as_bytes() != hash {
                return Err(format!("blob {} does not match its hash", hex(hash)));
            }
            Ok(Some((bytes, *count)))
        }
        fn filled(&mut self, id: u64, version: u64) {
            if let Some((hash, _)) = self.by_id.get(&id) {
                self.cache.known.insert(id, (version, *hash));
            }
        }
    }
    let (shard, sequence) = (manifest.shard, manifest.sequence);
    let unusable = |reason: String| CheckpointError::Unusable { shard, sequence, reason };
    let by_id = placeholders.iter().map(|p| (p.id, (p.hash, p.count))).collect();
    let mut filler = Filler { store, manifest, by_id, storage_error: None, cache: BlobCache::default() };
    let result = state.fill_blobs(&mut filler);
    if let Some(error) = filler.storage_error {
        return Err(CheckpointError::Storage(error));
    }
    result.map_err(&unusable)?;
    if filler.cache.known.len() != placeholders.len() {
        return Err(unusable(format!("{} of {} blob references were filled", filler.cache.known.len(), placeholders.len())));
    }
    Ok(filler.cache)
}

use crate::ledger::growth::hex;

/// Checks the checkpoint of `shard` after batch `sequence` as a whole without holding its
/// history: the manifest, every part and the state's decoding (as `load` does, leaving the
/// blobs out of memory), then every blob it names read and checked against its hash, one at a
/// time, but those in `checked` (blobs found sound for another checkpoint of the shard), which it
/// adds to. Gives how many blobs it read, and the chain head the checkpoint recorded (the
/// journal recovery would replay after it must meet it: `journal::verify_shard` from it). What
/// `clearing verify` runs.
pub fn verify(
    store: &std::sync::Arc<dyn Store>,
    shard: ShardId,
    sequence: u64,
    checked: &mut HashSet<[u8; 32]>,
) -> Result<(usize, crate::journal::ChainHead), CheckpointError> {
    let reader = HistoryReader::new(store.clone(), shard);
    let (_, manifest, _) = load_with(&**store, shard, sequence, Some(&reader))?;
    let unchecked: Vec<[u8; 32]> = manifest.blobs.iter().filter(|hash| !checked.contains(*hash)).copied().collect();
    for hash in &unchecked {
        crate::ledger::growth::BlobRead::read(&*reader, hash).map_err(|error| CheckpointError::Unusable {
            shard,
            sequence,
            reason: format!("blob {}: {}", hex(hash), error.reason),
        })?;
        checked.insert(*hash);
    }
    Ok((unchecked.len(), crate::journal::ChainHead { sequence: manifest.sequence, hash: manifest.chain_hash }))
}

/// The newest usable checkpoint of `shard`, and why each newer one was skipped.
#[allow(clippy::type_complexity)]
pub fn load_newest(
    store: &dyn Store,
    shard: ShardId,
    lazy: Option<&std::sync::Arc<HistoryReader>>,
    damaged: &HashSet<[u8; 32]>,
) -> Result<(Option<(ShardState, Manifest, BlobCache)>, Vec<CheckpointError>), StorageError> {
    let mut skipped = Vec::new();
    for sequence in list(store, shard)?.into_iter().rev() {
        match load_avoiding(store, shard, sequence, lazy, damaged) {
            Ok(loaded) => return Ok((Some(loaded), skipped)),
            Err(CheckpointError::Storage(error)) => return Err(error),
            Err(unusable) => skipped.push(unusable),
        }
    }
    Ok((None, skipped))
}

#[cfg(test)]
mod tests {
    use super::{absent_from, decode_manifest, encode_manifest, thread_cpu_us, Manifest};

    /// The phases' CPU time is the writing thread's own: it advances while the thread works.
    #[cfg(unix)]
    #[test]
    fn thread_cpu_time_advances_while_the_thread_works() {
        let before = thread_cpu_us();
        let started = std::time::Instant::now();
        let mut hash = blake3::hash(b"work");
        while started.elapsed() < std::time::Duration::from_millis(30) {
            hash = blake3::hash(hash.as_bytes());
        }
        let (before, after) = (before.expect("a thread clock on Linux"), thread_cpu_us().expect("a thread clock on Linux"));
        assert!(after > before, "{hash}");
    }

    /// `encode_manifest` writes the blob list itself: the bytes are the codec's for the whole
    /// manifest, which `decode_manifest` reads back.
    #[test]
    fn a_manifest_encodes_as_the_codec_would() {
        use bincode::Options;
        for blobs in [0usize, 1, 130, 70_000] {
            let mut hashes: Vec<[u8; 32]> = (0..blobs).map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes()).collect();
            hashes.sort_unstable();
            let mut manifest = Manifest {
                shard: 1,
                sequence: 300 + blobs as u64,
                timestamp: 1_700_000_000_000_000,
                chain_hash: [9; 32],
                bytes: 123_456_789,
                part_hashes: vec![[1; 32], [2; 32]],
                blobs: hashes,
            };
            let encoded = encode_manifest(&manifest);
            let mut expected = vec![super::CHECKPOINT_FORMAT_VERSION];
            crate::journal::codec().serialize_into(&mut expected, &manifest).unwrap();
            assert_eq!(&encoded[..encoded.len() - 32], &expected[..], "{blobs} blobs");
            assert_eq!(decode_manifest(1, manifest.sequence, &encoded).unwrap(), manifest);
            // A list out of order (no build writes one) is refused: pruning walks it sorted.
            if blobs >= 2 {
                manifest.blobs.swap(0, 1);
                let reason = decode_manifest(1, manifest.sequence, &encode_manifest(&manifest)).unwrap_err().to_string();
                assert!(reason.contains("ascending"), "{reason}");
            }
        }
    }

    /// The walk gives what a hash set would: every hash of the first list in none of the others.
    #[test]
    fn absent_from_is_the_set_difference_of_sorted_lists() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..200 {
            // Hashes from a small range, so that the lists overlap.
            let mut list = |len: u64| {
                let mut hashes: Vec<[u8; 32]> = (0..next() % len).map(|_| [(next() % 64) as u8; 32]).collect();
                hashes.sort_unstable();
                hashes.dedup();
                hashes
            };
            let (dropped, a, b) = (list(40), list(40), list(round % 5 + 1));
            let expected: Vec<[u8; 32]> = dropped.iter().filter(|h| !a.contains(h) && !b.contains(h)).copied().collect();
            assert_eq!(absent_from(&dropped, &[&a, &b]), expected, "round {round}");
            assert_eq!(absent_from(&dropped, &[]), dropped);
        }
    }

    /// Builds before session 45 wrote parts of up to 16 MiB (`PART_BYTES` was 16 MiB then), and
    /// a bank upgrades from them: a checkpoint whose state lies in one part much larger than
    /// today's `PART_BYTES` loads as the same state, records and all.
    #[test]
    fn a_checkpoint_written_in_parts_larger_than_today_loads_the_same() {
        use crate::ledger::command::{Command, Envelope, OutOrderNo};
        use crate::ledger::state::{Effects, ShardState};
        use crate::ledger::types::{AccountId, Leg, Legs, Limits};
        use crate::money::{CurrencyId, CurrencySpec};
        use storage::{MemoryStore, Store};
        const T0: u64 = 1_700_000_000_000_000;
        let mut state = ShardState::default();
        let mut fx = Effects::default();
        let genesis = Command::Genesis { shard: 0, shard_count: 1, currencies: vec![CurrencySpec::new("CNY", 2).unwrap()], utc_offset_seconds: 0 };
        state.apply(&Envelope { platform: 0, out_order_no: None, command: genesis }, T0, &mut fx);
        let mut open = |state: &mut ShardState, owner| {
            let command = Command::OpenAccount { owner, currency: CurrencyId(0), limits: Limits::NONE };
            let id = AccountId(state.apply(&Envelope { platform: 1, out_order_no: None, command }, T0, &mut fx).id);
            let fund = Command::Recharge { account: id, currency: CurrencyId(0), amount: 1_000_000_000, channel: 1 };
            assert!(state.apply(&Envelope { platform: 1, out_order_no: None, command: fund }, T0, &mut fx).is_ok());
            id
        };
        let (a, b) = (open(&mut state, 1), open(&mut state, 2));
        // Enough records in the hot map (encoded in the parts, not in blobs) for several parts.
        for n in 0..80_000 {
            let payees: Legs = [Leg { account: b, amount: 1 }].into_iter().collect();
            let command = Command::Payment { payer: a, guarantee: false, currency: CurrencyId(0), amount: 1, payees, splits: Legs::new() };
            let envelope = Envelope { platform: 1, out_order_no: Some(OutOrderNo::new(&format!("big-{n}")).unwrap()), command };
            assert!(state.apply(&envelope, T0, &mut fx).is_ok());
        }
        let store = MemoryStore::new();
        let head = crate::journal::ChainHead { sequence: 7, hash: [3; 32] };
        super::write(&store, &state, head, T0, 2, Default::default(), Default::default()).unwrap();
        let key = super::manifest_key(0, 7);
        let mut manifest = decode_manifest(0, 7, &store.get(&key).unwrap().unwrap()).unwrap();
        let parts = manifest.part_hashes.len();
        assert!(parts >= 3, "the state spans several parts today: {parts}");
        // Rewritten as an older build would have: all of it in part 0.
        let mut whole = Vec::new();
        for part in 0..parts as u32 {
            whole.extend(store.get(&super::part_key(0, 7, part)).unwrap().unwrap());
        }
        assert!(whole.len() > 2 * super::PART_BYTES);
        store.delete_range(&super::part_key(0, 7, 1), &super::part_key(0, 7, u32::MAX)).unwrap();
        store.write(&[(&super::part_key(0, 7, 0), &whole)]).unwrap();
        manifest.part_hashes = vec![*blake3::hash(&whole).as_bytes()];
        store.write(&[(&key, &encode_manifest(&manifest))]).unwrap();
        let (loaded, read) = super::load(&store, 0, 7).unwrap();
        assert_eq!(read.part_hashes.len(), 1);
        assert_eq!(loaded.digest(), state.digest());
        // Memory's records by key (the store holds no cold rows: nothing was sealed).
        let records = |state: &ShardState| crate::cold::logical_records(&store, state, u64::MAX).unwrap();
        assert_eq!(records(&loaded).len(), 80_000);
        assert_eq!(records(&loaded), records(&state));
    }
}
