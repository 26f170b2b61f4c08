//! The journal: one storage value per shard batch, holding the commands applied (with the
//! injected timestamp) and the postings they produced. Replaying the commands rebuilds the state;
//! the stored postings are what auditors and the invariant check read, and replay must match them.
//!
//! A stored value is one byte, `JOURNAL_FORMAT_VERSION`, then the bincode of the batch record,
//! then the record's own hash (`HASH_LEN` bytes). bincode stores an enum variant by its
//! declaration index, so the order of the variants of `Command` and of every enum inside a record
//! is part of the format; `tests/journal_format.rs` pins the bytes of a record holding every
//! command.
//!
//! The batches of a shard form a hash chain. The hash of batch N is BLAKE3 of its stored bytes
//! without the trailing hash (the version byte and the record), and the record holds the hash of
//! batch N - 1 (`previous_hash`; zeros for batch 1), so the hash of batch N covers the whole chain
//! before it: H(N) = BLAKE3(version || record N including H(N - 1)). The hash is carried in the
//! value (rather than recomputed from the chain by every reader) so that each value checks itself
//! (a flipped byte in the newest batch, which no later batch links to, is found too) and a reader
//! of one batch (an entries page) needs nothing but that batch. The shard keeps the head (the last
//! batch's sequence and hash) in memory: writing a batch reads nothing and hashes its bytes once.

use serde::{Deserialize, Serialize};
use storage::{StorageError, Store};

use crate::ledger::command::Envelope;
use crate::ledger::state::{Effects, ShardState};
use crate::ledger::types::{EntryHeader, Posting, ShardId, Timestamp};

const JOURNAL_PREFIX: u8 = b'j';
/// Meta key holding the shard count the data was written with.
pub const META_SHARD_COUNT: &[u8] = b"m/shard_count";

/// Bytes of a batch hash (BLAKE3).
pub const HASH_LEN: usize = 32;

/// The hash a batch 1 names as its predecessor.
pub const ZERO_HASH: [u8; HASH_LEN] = [0; HASH_LEN];

/// The key prefix of shard checkpoints, in the engine's meta space.
///
/// The checkpoint of shard S at batch N is stored under `CHECKPOINT_PREFIX` + S (2 bytes, big
/// endian) + N (8 bytes, big endian), so a shard's checkpoints sort by sequence and its oldest is
/// the first key of its range (`checkpoint_key`). A checkpoint at batch N holds the state after
/// batch N and the chain head `ChainHead { sequence: N, hash: H(N) }`; the value's encoding is the
/// checkpoint module's. The journal reads only the keys: `archivable_through` lets batches up to
/// the oldest checkpoint leave the live journal, since recovery starts from a checkpoint and
/// replays only what follows it. (`c/` is taken: the gateway's card records live there.)
pub const CHECKPOINT_PREFIX: &[u8] = b"m/c/";

/// The storage key of the checkpoint of `shard` at batch `sequence` (see `CHECKPOINT_PREFIX`).
pub fn checkpoint_key(shard: ShardId, sequence: u64) -> [u8; 14] {
    shard_sequence_key(CHECKPOINT_PREFIX, shard, sequence)
}

/// A four-byte prefix (a constant's), then `shard` and `sequence` big-endian: the layout of the checkpoints'
/// keys and of their listings' (`checkpoint::listed_key`), which sort by shard, then batch.
pub(crate) fn shard_sequence_key(prefix: &[u8], shard: ShardId, sequence: u64) -> [u8; 14] {
    let mut key = [0u8; 14];
    key[..4].copy_from_slice(prefix);
    key[4..6].copy_from_slice(&shard.to_be_bytes());
    key[6..14].copy_from_slice(&sequence.to_be_bytes());
    key
}

/// The storage key of batch `sequence` of `shard`: ordered by shard, then sequence.
pub fn batch_key(shard: ShardId, sequence: u64) -> [u8; 11] {
    let mut key = [0u8; 11];
    key[0] = JOURNAL_PREFIX;
    key[1..3].copy_from_slice(&shard.to_be_bytes());
    key[3..11].copy_from_slice(&sequence.to_be_bytes());
    key
}

/// One batch as written (borrowing the shard's buffers, so encoding copies nothing first).
#[derive(Serialize)]
pub struct BatchRecordRef<'a> {
    pub shard: ShardId,
    pub sequence: u64,
    pub timestamp: Timestamp,
    /// The hash of batch `sequence - 1` (`ZERO_HASH` for batch 1).
    pub previous_hash: [u8; HASH_LEN],
    pub envelopes: &'a [Envelope],
    pub entries: &'a [EntryHeader],
    pub postings: &'a [Posting],
}

/// One batch as read back.
#[derive(Debug, PartialEq, Eq, Deserialize)]
pub struct BatchRecord {
    /// The journal format the batch was written in (its value's first byte, not in the record):
    /// replay applies it under that format's rules (`ShardState::apply_all_as`).
    #[serde(skip)]
    pub version: u8,
    pub shard: ShardId,
    pub sequence: u64,
    pub timestamp: Timestamp,
    /// The hash of batch `sequence - 1` (`ZERO_HASH` for batch 1).
    pub previous_hash: [u8; HASH_LEN],
    pub envelopes: Vec<Envelope>,
    pub entries: Vec<EntryHeader>,
    pub postings: Vec<Posting>,
}

/// The version of the journal's encoding, the first byte of every stored batch.
///
/// Bump it whenever the bytes of records already written would change or change meaning: a field
/// added, removed or reordered in `BatchRecord`, `Envelope`, `EntryHeader`, `Posting` or anything
/// they hold; an enum variant inserted before others, removed or reordered; another codec option.
/// Appending a variant at the end of an enum changes no existing bytes and needs no bump (a binary
/// without it refuses a record that holds it as corrupt); `tests/journal_format.rs` then wants the
/// new variant in its golden record. Decoding refuses every other version, so a binary never
/// misreads a journal written in another format, and nothing converts old versions: a bump makes
/// existing data directories unreadable (acceptable while nothing is in production). Data
/// directories written before version 1 (values without this byte) are refused too: recreate them.
/// Version 2 added the hash chain (`previous_hash` in the record, the record's hash after it).
/// Version 3 has version 2's bytes and new rules: a payment records what it took from the
/// payer's unsettled income, and a cancel or a refund returns that part as unsettled income
/// (`OrderDetail::Payment`), not as settled funds. A batch of version 2 is still read and
/// replayed under version 2's rules (`BatchRecord::version`), so it gives exactly the postings
/// it recorded.
/// Version 4 (session 59) has version 3's bytes and new rules: a guarantee's cancel whose payer
/// can no longer take the credit goes to suspense with a notice (it was refused:
/// `Context::diverts_cancels`), and a freeze the system places is the system's order
/// (`Context::system_holds`). Batches of versions 2 and 3 replay under theirs.
/// Version 5 (session 66) has version 4's bytes and one new rule: a refusal of a command with
/// an order number is kept as that number's record (`Context::keeps_refusals`), so a repeat is
/// answered the same refusal and other content is a conflict (before, a repeat ran again).
/// Batches of versions 2 to 4 replay under theirs.
/// Version 6 (session 67) has version 5's bytes and one new rule: a receiver of the settlement
/// rule's commission pays the service fee on its own income
/// (`Context::charges_receivers_service_fee`). Batches of version 5 replay under theirs.
pub const JOURNAL_FORMAT_VERSION: u8 = 6;

/// The journal formats this build reads: versions 2 to 5 (the same bytes, older rules) and its
/// own.
pub const READABLE_JOURNAL_VERSIONS: std::ops::RangeInclusive<u8> = 2..=JOURNAL_FORMAT_VERSION;

/// The head of a shard's hash chain: its last batch and that batch's hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChainHead {
    pub sequence: u64,
    pub hash: [u8; HASH_LEN],
}

impl ChainHead {
    /// The head of a shard with no batch yet: batch 1 names `ZERO_HASH` as its predecessor.
    pub const EMPTY: ChainHead = ChainHead { sequence: 0, hash: ZERO_HASH };

    /// The hash as lowercase hex.
    pub fn hash_hex(&self) -> String {
        hex_of(&self.hash)
    }
}

/// Lowercase hex of `bytes`.
pub fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What is wrong with a batch of the journal (or of an archive).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BreakKind {
    /// The value's bytes do not hash to the hash stored after them (a byte changed).
    #[error("hash mismatch")]
    HashMismatch,
    /// The batch names another hash for its predecessor than the predecessor has.
    #[error("broken link to the previous batch")]
    LinkMismatch,
    /// The value is not a batch record of this format, shard and sequence.
    #[error("undecodable")]
    Undecodable,
    /// A batch is missing where one must be.
    #[error("gap in sequences")]
    Gap,
    /// Replaying the batch does not give what it holds.
    #[error("replay mismatch")]
    Replay,
}

/// Why the journal could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("journal of shard {shard} is corrupt at batch {sequence}: {kind}: {reason}")]
    Corrupt { shard: ShardId, sequence: u64, kind: BreakKind, reason: String },
    #[error("journal of shard {shard} has format version {version} at batch {sequence}; this build reads versions {oldest} to {supported}", oldest = READABLE_JOURNAL_VERSIONS.start(), supported = JOURNAL_FORMAT_VERSION)]
    UnsupportedFormat { shard: ShardId, sequence: u64, version: u8 },
    /// Replaying batch `sequence` needed a chunk of history whose blob could not be read back
    /// (`growth::StorageFault`): not the journal's fault; recovery retries without that blob.
    #[error("shard {shard} at batch {sequence}: {fault}")]
    History { shard: ShardId, sequence: u64, fault: crate::ledger::growth::StorageFault },
}

/// The journal's encoding: bincode with variable-length integers (ids and amounts are mostly
/// small, so a batch takes about half the bytes of fixed-width encoding).
pub(crate) fn codec() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new().with_varint_encoding().with_little_endian().reject_trailing_bytes()
}

/// Encodes a batch into `buffer` (cleared first): the format version, the record, then the
/// hash of those bytes, which it returns (the batch's link in the chain).
pub fn encode(record: &BatchRecordRef, buffer: &mut Vec<u8>) -> [u8; HASH_LEN] {
    buffer.clear();
    // The version goes into the buffer the encoder then appends to: no second copy of the batch.
    buffer.push(JOURNAL_FORMAT_VERSION);
    crate::codec::encode_into(record, buffer).expect("batch records serialize");
    let hash: [u8; HASH_LEN] = blake3::hash(buffer).into();
    buffer.extend_from_slice(&hash);
    hash
}

/// The hash stored at the end of a batch value, if the value is long enough to hold one.
pub fn stored_hash(bytes: &[u8]) -> Option<[u8; HASH_LEN]> {
    let start = bytes.len().checked_sub(HASH_LEN)?;
    bytes[start..].try_into().ok()
}

/// Checks that a stored value hashes to the hash it carries; returns that hash.
pub fn check_hash(shard: ShardId, sequence: u64, bytes: &[u8]) -> Result<[u8; HASH_LEN], JournalError> {
    let corrupt = |kind, reason: String| JournalError::Corrupt { shard, sequence, kind, reason };
    let Some(stored) = stored_hash(bytes) else {
        return Err(corrupt(BreakKind::Undecodable, format!("a value of {} bytes cannot hold a batch and its hash", bytes.len())));
    };
    let body = &bytes[..bytes.len() - HASH_LEN];
    let computed: [u8; HASH_LEN] = blake3::hash(body).into();
    if computed != stored {
        return Err(corrupt(BreakKind::HashMismatch, format!("the bytes hash to {}, the value says {}", hex_of(&computed), hex_of(&stored))));
    }
    Ok(stored)
}

/// Decodes the value stored under `batch_key(shard, sequence)`, checking its format version, its
/// hash and that it is that batch.
pub fn decode(shard: ShardId, sequence: u64, bytes: &[u8]) -> Result<BatchRecord, JournalError> {
    decode_hashed(shard, sequence, bytes).map(|(record, _)| record)
}

/// `decode`, also returning the batch's hash.
pub fn decode_hashed(shard: ShardId, sequence: u64, bytes: &[u8]) -> Result<(BatchRecord, [u8; HASH_LEN]), JournalError> {
    use bincode::Options;
    let corrupt = |reason: String| JournalError::Corrupt { shard, sequence, kind: BreakKind::Undecodable, reason };
    let (&version, _) = bytes.split_first().ok_or_else(|| corrupt("empty value".into()))?;
    if !READABLE_JOURNAL_VERSIONS.contains(&version) {
        return Err(JournalError::UnsupportedFormat { shard, sequence, version });
    }
    let hash = check_hash(shard, sequence, bytes)?;
    let body = &bytes[1..bytes.len() - HASH_LEN];
    let mut record: BatchRecord = codec().deserialize(body).map_err(|e| corrupt(e.to_string()))?;
    record.version = version;
    if record.shard != shard || record.sequence != sequence {
        return Err(corrupt(format!("the value holds batch {} of shard {}", record.sequence, record.shard)));
    }
    Ok((record, hash))
}

/// A break in a shard's chain: the first batch (or archive) that is not what the chain says.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("shard {shard} batch {sequence}: {kind}: {reason}")]
pub struct Break {
    pub shard: ShardId,
    pub sequence: u64,
    pub kind: BreakKind,
    pub reason: String,
}

impl Break {
    /// The break a journal error stands for (a storage failure is `BreakKind::Undecodable` of the
    /// batch the walk had reached: the batch could not be read).
    pub fn from_error(shard: ShardId, reached: u64, error: JournalError) -> Break {
        match error {
            JournalError::Corrupt { shard, sequence, kind, reason } => Break { shard, sequence, kind, reason },
            JournalError::UnsupportedFormat { shard, sequence, version } => Break {
                shard,
                sequence,
                kind: BreakKind::Undecodable,
                reason: format!("format version {version}, this build reads {} to {JOURNAL_FORMAT_VERSION}", READABLE_JOURNAL_VERSIONS.start()),
            },
            JournalError::Storage(error) => Break { shard, sequence: reached, kind: BreakKind::Undecodable, reason: format!("cannot read: {error}") },
            JournalError::History { shard, sequence, fault } => Break { shard, sequence, kind: BreakKind::Replay, reason: fault.to_string() },
        }
    }
}

/// Walks the live batches of `shard` in sequence order, checking each one's hash, that sequences
/// have no gaps and that each batch links to the one before; `visit` sees every batch after the
/// start. Returns the chain head (the last batch; `from`, or `ChainHead::EMPTY`, when there is
/// none after the start).
///
/// `from: None` starts at the first live batch: batch 1 must link to `ZERO_HASH`, a later first
/// batch (the ones before it archived) is taken as it is. `from: Some(anchor)` (a checkpoint's or
/// an archive's head) starts at the anchor: if batch `anchor.sequence` is still live it must hash
/// to `anchor.hash` (it is not visited), the next batch must link to it, and a journal that ends
/// before the anchor is a break.
pub fn walk_chain(
    store: &dyn Store,
    shard: ShardId,
    from: Option<ChainHead>,
    visit: &mut dyn FnMut(BatchRecord) -> Result<(), JournalError>,
) -> Result<ChainHead, JournalError> {
    let start = from.map_or(0, |anchor| anchor.sequence);
    let mut head = from;
    let mut reached_anchor = from.is_none_or(|anchor| anchor.sequence == 0);
    let mut failure: Option<JournalError> = None;
    store.scan(&batch_key(shard, start), &batch_key(shard, u64::MAX), &mut |key, value| {
        let expected = head.map_or(1, |h| h.sequence + 1);
        match check_link(shard, key, value, head, visit) {
            Ok(next) => {
                reached_anchor = true;
                head = Some(next);
                true
            }
            Err(error) => {
                failure = Some(error.unwrap_or_else(|| JournalError::Corrupt {
                    shard,
                    sequence: expected,
                    kind: BreakKind::Undecodable,
                    reason: format!("a journal key of {} bytes", key.len()),
                }));
                false
            }
        }
    })?;
    if let Some(error) = failure {
        return Err(error);
    }
    let head = head.unwrap_or(ChainHead::EMPTY);
    if !reached_anchor {
        return Err(JournalError::Corrupt {
            shard,
            sequence: head.sequence,
            kind: BreakKind::Gap,
            reason: format!("the journal ends before batch {}, which a checkpoint or an archive names", head.sequence),
        });
    }
    Ok(head)
}

/// Checks one stored batch against the chain head before it and visits it; returns the new head.
/// `Err(None)`: the key itself is malformed.
fn check_link(
    shard: ShardId,
    key: &[u8],
    value: &[u8],
    head: Option<ChainHead>,
    visit: &mut dyn FnMut(BatchRecord) -> Result<(), JournalError>,
) -> Result<ChainHead, Option<JournalError>> {
    // Keys come from storage: one of another length is corruption, not a reason to panic.
    let sequence = key.get(3..).and_then(|tail| <[u8; 8]>::try_from(tail).ok()).map(u64::from_be_bytes).ok_or(None)?;
    let broken = |sequence, kind, reason: String| Some(JournalError::Corrupt { shard, sequence, kind, reason });
    if let Some(previous) = head {
        if sequence == previous.sequence {
            // The anchor's own batch, still live: it must be the batch the anchor names.
            let hash = check_hash(shard, sequence, value).map_err(Some)?;
            if hash != previous.hash {
                return Err(broken(
                    sequence,
                    BreakKind::LinkMismatch,
                    format!("the batch hashes to {}, the checkpoint or archive says {}", hex_of(&hash), previous.hash_hex()),
                ));
            }
            return Ok(previous);
        }
        if sequence != previous.sequence + 1 {
            return Err(broken(
                previous.sequence + 1,
                BreakKind::Gap,
                format!("batch {} is missing (the next one present is {sequence})", previous.sequence + 1),
            ));
        }
    }
    let (record, hash) = decode_hashed(shard, sequence, value).map_err(Some)?;
    let linked_to = match head {
        Some(previous) => Some(previous.hash),
        None if sequence == 1 => Some(ZERO_HASH),
        // The first live batch after archived ones: what it names is checked against the archive.
        None => None,
    };
    if linked_to.is_some_and(|expected| expected != record.previous_hash) {
        return Err(broken(sequence, BreakKind::LinkMismatch, format!("the batch names {} as the previous hash", hex_of(&record.previous_hash))));
    }
    visit(record).map_err(Some)?;
    Ok(ChainHead { sequence, hash })
}

/// Checks the chain of `shard` from `from` (see `walk_chain`) without replaying it; returns the
/// head, or the first break.
pub fn verify_shard(store: &dyn Store, shard: ShardId, from: Option<ChainHead>) -> Result<ChainHead, Break> {
    walk_chain(store, shard, from, &mut |_| Ok(())).map_err(|error| Break::from_error(shard, from.map_or(1, |anchor| anchor.sequence), error))
}

/// The first live batch of `shard` (0 when it has none): 1 unless earlier batches were archived.
pub fn first_live_sequence(store: &dyn Store, shard: ShardId) -> Result<u64, StorageError> {
    let mut first = 0;
    store.scan(&batch_key(shard, 0), &batch_key(shard, u64::MAX), &mut |key, _| {
        first = key.get(3..).and_then(|tail| <[u8; 8]>::try_from(tail).ok()).map_or(0, u64::from_be_bytes);
        false
    })?;
    Ok(first)
}

/// The last batch of `shard` that may leave the live journal: the sequence of its oldest
/// checkpoint (see `CHECKPOINT_PREFIX`), 0 (nothing) when it has none.
pub fn archivable_through(store: &dyn Store, shard: ShardId) -> Result<u64, StorageError> {
    // From the checkpoints' listings (`checkpoint::list`): a scan of the manifests reads their
    // values.
    Ok(crate::checkpoint::list(store, shard)?.first().copied().unwrap_or(0))
}

/// Visits every live batch of `shard` in sequence order, checking the chain (see `walk_chain`);
/// returns the last sequence.
pub fn read_shard(store: &dyn Store, shard: ShardId, visit: &mut dyn FnMut(BatchRecord) -> Result<(), JournalError>) -> Result<u64, JournalError> {
    walk_chain(store, shard, None, visit).map(|head| head.sequence)
}

/// The sequence of `shard`'s last stored batch (0 when it has none), found by seeking to the
/// end of its key range: nothing is decoded.
pub fn last_sequence(store: &dyn Store, shard: ShardId) -> Result<u64, JournalError> {
    let Some(key) = store.last_key_in(&batch_key(shard, 0), &batch_key(shard, u64::MAX))? else {
        return Ok(0);
    };
    key.get(3..).and_then(|tail| <[u8; 8]>::try_from(tail).ok()).map(u64::from_be_bytes).ok_or_else(|| JournalError::Corrupt {
        shard,
        sequence: 0,
        kind: BreakKind::Undecodable,
        reason: format!("a journal key of {} bytes", key.len()),
    })
}

/// The shard count the data was written with (`None` for a store no engine has started on).
pub fn stored_shard_count(store: &dyn Store) -> Result<Option<ShardId>, JournalError> {
    let Some(bytes) = store.get(META_SHARD_COUNT)? else {
        return Ok(None);
    };
    let count = <[u8; 2]>::try_from(bytes.as_slice()).map_err(|_| JournalError::Corrupt {
        shard: 0,
        sequence: 0,
        kind: BreakKind::Undecodable,
        reason: format!("the shard count is stored in {} bytes", bytes.len()),
    })?;
    Ok(Some(ShardId::from_le_bytes(count)))
}

/// A shard's state as recovery rebuilt it.
pub struct Recovered {
    pub state: ShardState,
    /// The last batch applied and its hash (the shard's next batch links to it).
    pub head: ChainHead,
    /// That batch's timestamp.
    pub timestamp: Timestamp,
    /// The batch of the checkpoint recovery started from, if any.
    pub checkpoint: Option<u64>,
    /// Newer checkpoints recovery could not use, and why (a torn or corrupt one).
    pub skipped: Vec<String>,
    /// The chunks of history the checkpoint kept as blobs, as the state now holds them: the
    /// shard's first checkpoint refers to those still unchanged instead of writing them again.
    pub blobs: crate::checkpoint::BlobCache,
    /// What the state's chunks out of memory are read back through (a lazy recovery's reader).
    pub history: Option<std::sync::Arc<crate::checkpoint::HistoryReader>>,
}

/// Rebuilds a shard's state: loads its newest usable checkpoint (falling back to older ones) and
/// re-applies the journal after it, checking that every batch produces exactly the postings that
/// were stored.
pub fn recover_shard(store: &dyn Store, shard: ShardId) -> Result<Recovered, JournalError> {
    recover_shard_filtered(store, shard, None, None)
}

/// `recover_shard`, reading from the store only the order numbers `filter` may hold (the
/// engine's start: a filter of every cold row, `cold::ColdFilter::load`), and with `lazy`
/// leaving the checkpoint's chunks of history out of memory, read back through it when used
/// (`checkpoint::load_with`).
pub fn recover_shard_filtered(
    store: &dyn Store,
    shard: ShardId,
    filter: Option<&crate::cold::ColdFilter>,
    lazy: Option<&std::sync::Arc<crate::checkpoint::HistoryReader>>,
) -> Result<Recovered, JournalError> {
    // Blobs a shard found damaged (`checkpoint::mark_damaged`) rule out the checkpoints that
    // name them; one found damaged during the replay below is marked and the recovery retried
    // from a checkpoint without it (or from the journal's start).
    let mut damaged = crate::checkpoint::damaged(store, shard)?;
    loop {
        let (loaded, skipped) = crate::checkpoint::load_newest(store, shard, lazy, &damaged)?;
        let skipped = skipped.into_iter().map(|e| e.to_string()).collect();
        let (state, anchor, timestamp, blobs) = match loaded {
            Some((state, manifest, blobs)) => (state, Some(ChainHead { sequence: manifest.sequence, hash: manifest.chain_hash }), manifest.timestamp, blobs),
            None => (ShardState::default(), None, 0, Default::default()),
        };
        // From a checkpoint, the walk checks that the journal's batch at the checkpoint (if still
        // live) hashes to the head the checkpoint recorded, and that the next batch links to it.
        match replay_after(store, filter, shard, state, anchor, timestamp) {
            Ok((state, head, timestamp)) => {
                return Ok(Recovered { state, head, timestamp, checkpoint: anchor.map(|a| a.sequence), skipped, blobs, history: lazy.cloned() });
            }
            Err(JournalError::History { fault, sequence, .. }) if fault.damaged && damaged.insert(fault.hash) => {
                tracing::warn!(shard, sequence, "{fault}; recovering without the checkpoints that use it");
                // A read-only store (`clearing shards`) cannot keep the mark: the retry still
                // avoids the blob.
                let _ = crate::checkpoint::mark_damaged(store, shard, &fault.hash, &fault.reason);
            }
            Err(error) => return Err(error),
        }
    }
}

/// Rebuilds a shard's state (from its newest usable checkpoint and the journal after it).
/// Returns the state, the last sequence and timestamp.
pub fn replay_shard(store: &dyn Store, shard: ShardId) -> Result<(ShardState, u64, Timestamp), JournalError> {
    let recovered = recover_shard(store, shard)?;
    Ok((recovered.state, recovered.head.sequence, recovered.timestamp))
}

/// `replay_shard`, returning the chain head instead of the last sequence (the shard goes on from it).
pub fn replay_shard_chained(store: &dyn Store, shard: ShardId) -> Result<(ShardState, ChainHead, Timestamp), JournalError> {
    let recovered = recover_shard(store, shard)?;
    Ok((recovered.state, recovered.head, recovered.timestamp))
}

/// Rebuilds a shard's state from its whole journal, ignoring checkpoints (what a checkpoint is
/// checked against). Returns the state, the last sequence and timestamp.
pub fn replay_journal(store: &dyn Store, shard: ShardId) -> Result<(ShardState, u64, Timestamp), JournalError> {
    replay_after(store, None, shard, ShardState::default(), None, 0).map(|(state, head, timestamp)| (state, head.sequence, timestamp))
}

/// Re-applies the batches after `anchor` (the state's batch and its hash; `None`: an empty state
/// before batch 1) to `state`, walking and checking the chain from there.
fn replay_after(
    store: &dyn Store,
    filter: Option<&crate::cold::ColdFilter>,
    shard: ShardId,
    mut state: ShardState,
    anchor: Option<ChainHead>,
    timestamp: Timestamp,
) -> Result<(ShardState, ChainHead, Timestamp), JournalError> {
    let mut fx = Effects::default();
    let mut probe_keys = Vec::new();
    let mut replies = Vec::new();
    let mut last_timestamp = timestamp;
    let mut first = anchor.is_none();
    let head = walk_chain(store, shard, anchor, &mut |record| {
        if std::mem::take(&mut first) && record.sequence != 1 {
            // Replay from an empty state needs every batch since genesis.
            return Err(JournalError::Corrupt {
                shard,
                sequence: 1,
                kind: BreakKind::Gap,
                reason: format!("the live journal starts at batch {}: the batches before it were archived and replay needs them", record.sequence),
            });
        }
        fx.clear();
        // The batch's cold records, as the live shard read them before applying it: only rows
        // stamped before this batch count (a newer checkpoint's rows wait until the replay has
        // passed their stamp).
        crate::cold::prefetch(store, filter, &mut state, record.sequence, &record.envelopes, &mut probe_keys)?;
        state.warm_own_income(&record.envelopes).map_err(|fault| JournalError::History { shard, sequence: record.sequence, fault })?;
        for envelope in &record.envelopes {
            state.warm_history(envelope).map_err(|fault| JournalError::History { shard, sequence: record.sequence, fault })?;
        }
        // A record that decodes but was damaged (a flipped bit that still makes a command) can
        // break an assertion of `apply` (a credit from the shard itself, a sequence gap): that is
        // a corrupt journal, and recovery refuses to start with this error instead of a panic.
        // The state is dropped with the error, so what the panic left half-done is never used.
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            replies.clear();
            state.apply_all_as(record.version, &record.envelopes, None, record.timestamp, &mut fx, &mut replies);
        }));
        if let Err(panic) = applied {
            if let Some(fault) = panic.downcast_ref::<crate::ledger::growth::StorageFault>() {
                return Err(JournalError::History { shard, sequence: record.sequence, fault: fault.clone() });
            }
            let message = panic.downcast_ref::<String>().map(String::as_str).or_else(|| panic.downcast_ref::<&str>().copied()).unwrap_or("a panic");
            return Err(JournalError::Corrupt {
                shard,
                sequence: record.sequence,
                kind: BreakKind::Replay,
                reason: format!("replay broke an invariant: {message}"),
            });
        }
        if fx.postings != record.postings || fx.entries != record.entries {
            return Err(JournalError::Corrupt {
                shard,
                sequence: record.sequence,
                kind: BreakKind::Replay,
                reason: "replay produced other postings than the journal holds".into(),
            });
        }
        state.forget_cold();
        state.note_batch(record.sequence, &record.postings);
        last_timestamp = record.timestamp;
        Ok(())
    })?;
    Ok((state, head, last_timestamp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_sequence_and_shard_count_are_read_without_decoding() {
        let store = storage::MemoryStore::new();
        assert_eq!((last_sequence(&store, 0).expect("empty"), stored_shard_count(&store).expect("none")), (0, None));
        // Values need not decode: only keys are read.
        for (shard, sequence) in [(0u16, 1u64), (0, 2), (0, 300), (1, 1), (2, 9)] {
            store.write(&[(&batch_key(shard, sequence), b"x")]).expect("write");
        }
        store.write(&[(META_SHARD_COUNT, &3u16.to_le_bytes())]).expect("write");
        let found: Vec<u64> = (0..4).map(|shard| last_sequence(&store, shard).expect("last")).collect();
        assert_eq!(found, [300, 1, 9, 0]);
        assert_eq!(stored_shard_count(&store).expect("count"), Some(3));
        store.write(&[(META_SHARD_COUNT, b"abc")]).expect("write");
        assert!(stored_shard_count(&store).is_err());
    }
}
