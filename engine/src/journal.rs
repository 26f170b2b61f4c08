//! The journal: one storage value per shard batch, holding the commands applied (with the
//! injected timestamp) and the postings they produced. Replaying the commands rebuilds the state;
//! the stored postings are what auditors and the invariant check read, and replay must match them.
//!
//! A stored value is one byte, `JOURNAL_FORMAT_VERSION`, then the bincode of the batch record.
//! bincode stores an enum variant by its declaration index, so the order of the variants of
//! `Command` and of every enum inside a record is part of the format; `tests/journal_format.rs`
//! pins the bytes of a record holding every command.

use serde::{Deserialize, Serialize};
use storage::{StorageError, Store};

use crate::ledger::command::Envelope;
use crate::ledger::state::{Effects, ShardState};
use crate::ledger::types::{EntryHeader, Posting, ShardId, Timestamp};

const JOURNAL_PREFIX: u8 = b'j';
/// Meta key holding the shard count the data was written with.
pub const META_SHARD_COUNT: &[u8] = b"m/shard_count";

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
    pub envelopes: &'a [Envelope],
    pub entries: &'a [EntryHeader],
    pub postings: &'a [Posting],
}

/// One batch as read back.
#[derive(Debug, PartialEq, Eq, Deserialize)]
pub struct BatchRecord {
    pub shard: ShardId,
    pub sequence: u64,
    pub timestamp: Timestamp,
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
pub const JOURNAL_FORMAT_VERSION: u8 = 1;

/// Why the journal could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("journal of shard {shard} is corrupt at batch {sequence}: {reason}")]
    Corrupt { shard: ShardId, sequence: u64, reason: String },
    #[error("journal of shard {shard} has format version {version} at batch {sequence}; this build reads only version {supported}", supported = JOURNAL_FORMAT_VERSION)]
    UnsupportedFormat { shard: ShardId, sequence: u64, version: u8 },
}

/// The journal's encoding: bincode with variable-length integers (ids and amounts are mostly
/// small, so a batch takes about half the bytes of fixed-width encoding).
pub(crate) fn codec() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new().with_varint_encoding().with_little_endian().reject_trailing_bytes()
}

/// Encodes a batch into `buffer` (cleared first): the format version, then the record.
pub fn encode(record: &BatchRecordRef, buffer: &mut Vec<u8>) {
    use bincode::Options;
    buffer.clear();
    // The version goes into the buffer the encoder then appends to: no second copy of the batch.
    buffer.push(JOURNAL_FORMAT_VERSION);
    codec().serialize_into(&mut *buffer, record).expect("batch records serialize");
}

/// Decodes the value stored under `batch_key(shard, sequence)`, checking its format version and
/// that it is that batch.
pub fn decode(shard: ShardId, sequence: u64, bytes: &[u8]) -> Result<BatchRecord, JournalError> {
    use bincode::Options;
    let corrupt = |reason: String| JournalError::Corrupt { shard, sequence, reason };
    let (&version, body) = bytes.split_first().ok_or_else(|| corrupt("empty value".into()))?;
    if version != JOURNAL_FORMAT_VERSION {
        return Err(JournalError::UnsupportedFormat { shard, sequence, version });
    }
    let record: BatchRecord = codec().deserialize(body).map_err(|e| corrupt(e.to_string()))?;
    if record.shard != shard || record.sequence != sequence {
        return Err(corrupt(format!("the value holds batch {} of shard {}", record.sequence, record.shard)));
    }
    Ok(record)
}

/// Visits every batch of `shard` in sequence order, checking that sequences have no gaps.
pub fn read_shard(store: &dyn Store, shard: ShardId, visit: &mut dyn FnMut(BatchRecord) -> Result<(), JournalError>) -> Result<u64, JournalError> {
    read_shard_from(store, shard, 1, visit)
}

/// Visits the batches of `shard` from `first` on in sequence order, checking that they start at
/// `first` (when there are any) and have no gaps. Returns the last sequence (`first - 1` when
/// there is none from `first` on).
pub fn read_shard_from(
    store: &dyn Store,
    shard: ShardId,
    first: u64,
    visit: &mut dyn FnMut(BatchRecord) -> Result<(), JournalError>,
) -> Result<u64, JournalError> {
    let start = batch_key(shard, first);
    let end = batch_key(shard, u64::MAX);
    let mut expected = first;
    let mut failure: Option<JournalError> = None;
    store.scan(&start, &end, &mut |key, value| {
        // Keys come from storage: one of another length is corruption, not a reason to panic.
        let Some(sequence) = key.get(3..).and_then(|tail| <[u8; 8]>::try_from(tail).ok()).map(u64::from_be_bytes) else {
            failure = Some(JournalError::Corrupt { shard, sequence: expected, reason: format!("a journal key of {} bytes", key.len()) });
            return false;
        };
        let result = if sequence != expected {
            Err(JournalError::Corrupt { shard, sequence, reason: format!("expected batch {expected}") })
        } else {
            decode(shard, sequence, value).and_then(&mut *visit)
        };
        expected += 1;
        match result {
            Ok(()) => true,
            Err(error) => {
                failure = Some(error);
                false
            }
        }
    })?;
    match failure {
        Some(error) => Err(error),
        None => Ok(expected - 1),
    }
}

/// A shard's state as recovery rebuilt it.
pub struct Recovered {
    pub state: ShardState,
    /// The last batch applied.
    pub sequence: u64,
    /// That batch's timestamp.
    pub timestamp: Timestamp,
    /// The batch of the checkpoint recovery started from, if any.
    pub checkpoint: Option<u64>,
    /// Newer checkpoints recovery could not use, and why (a torn or corrupt one).
    pub skipped: Vec<String>,
}

/// Rebuilds a shard's state: loads its newest usable checkpoint (falling back to older ones) and
/// re-applies the journal after it, checking that every batch produces exactly the postings that
/// were stored.
pub fn recover_shard(store: &dyn Store, shard: ShardId) -> Result<Recovered, JournalError> {
    let (loaded, skipped) = crate::checkpoint::load_newest(store, shard)?;
    let skipped = skipped.into_iter().map(|e| e.to_string()).collect();
    let (state, checkpoint, timestamp) = match loaded {
        Some((state, manifest)) => (state, Some(manifest.sequence), manifest.timestamp),
        None => (ShardState::default(), None, 0),
    };
    let (state, sequence, timestamp) = replay_after(store, shard, state, checkpoint.unwrap_or(0), timestamp)?;
    Ok(Recovered { state, sequence, timestamp, checkpoint, skipped })
}

/// Rebuilds a shard's state (from its newest usable checkpoint and the journal after it).
/// Returns the state, the last sequence and timestamp.
pub fn replay_shard(store: &dyn Store, shard: ShardId) -> Result<(ShardState, u64, Timestamp), JournalError> {
    let recovered = recover_shard(store, shard)?;
    Ok((recovered.state, recovered.sequence, recovered.timestamp))
}

/// Rebuilds a shard's state from its whole journal, ignoring checkpoints (what a checkpoint is
/// checked against).
pub fn replay_journal(store: &dyn Store, shard: ShardId) -> Result<(ShardState, u64, Timestamp), JournalError> {
    replay_after(store, shard, ShardState::default(), 0, 0)
}

/// Re-applies the batches after `after` to `state` (the state after batch `after`).
fn replay_after(
    store: &dyn Store,
    shard: ShardId,
    mut state: ShardState,
    after: u64,
    timestamp: Timestamp,
) -> Result<(ShardState, u64, Timestamp), JournalError> {
    let mut fx = Effects::default();
    let mut last_timestamp = timestamp;
    let last_sequence = read_shard_from(store, shard, after + 1, &mut |record| {
        fx.clear();
        // A record that decodes but was damaged (a flipped bit that still makes a command) can
        // break an assertion of `apply` (a credit from the shard itself, a sequence gap): that is
        // a corrupt journal, and recovery refuses to start with this error instead of a panic.
        // The state is dropped with the error, so what the panic left half-done is never used.
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for envelope in &record.envelopes {
                state.apply(envelope, record.timestamp, &mut fx);
            }
        }));
        if let Err(panic) = applied {
            let message = panic.downcast_ref::<String>().map(String::as_str).or_else(|| panic.downcast_ref::<&str>().copied()).unwrap_or("a panic");
            return Err(JournalError::Corrupt { shard, sequence: record.sequence, reason: format!("replay broke an invariant: {message}") });
        }
        if fx.postings != record.postings || fx.entries != record.entries {
            return Err(JournalError::Corrupt { shard, sequence: record.sequence, reason: "replay produced other postings than the journal holds".into() });
        }
        state.note_batch(record.sequence, &record.postings);
        last_timestamp = record.timestamp;
        Ok(())
    })?;
    Ok((state, last_sequence, last_timestamp))
}
