//! The journal: one storage value per shard batch, holding the commands applied (with the
//! injected timestamp) and the postings they produced. Replaying the commands rebuilds the state;
//! the stored postings are what auditors and the invariant check read, and replay must match them.

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
#[derive(Debug, Deserialize)]
pub struct BatchRecord {
    pub shard: ShardId,
    pub sequence: u64,
    pub timestamp: Timestamp,
    pub envelopes: Vec<Envelope>,
    pub entries: Vec<EntryHeader>,
    pub postings: Vec<Posting>,
}

/// Why the journal could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("journal of shard {shard} is corrupt at batch {sequence}: {reason}")]
    Corrupt { shard: ShardId, sequence: u64, reason: String },
}

/// The journal's encoding: bincode with variable-length integers (ids and amounts are mostly
/// small, so a batch takes about half the bytes of fixed-width encoding).
fn codec() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new().with_varint_encoding().with_little_endian().reject_trailing_bytes()
}

/// Encodes a batch into `buffer` (cleared first).
pub fn encode(record: &BatchRecordRef, buffer: &mut Vec<u8>) {
    use bincode::Options;
    buffer.clear();
    codec().serialize_into(&mut *buffer, record).expect("batch records serialize");
}

/// Decodes one stored batch.
pub fn decode(bytes: &[u8]) -> Result<BatchRecord, String> {
    use bincode::Options;
    codec().deserialize(bytes).map_err(|e| e.to_string())
}

/// Visits every batch of `shard` in sequence order, checking that sequences have no gaps.
pub fn read_shard(store: &dyn Store, shard: ShardId, visit: &mut dyn FnMut(BatchRecord) -> Result<(), JournalError>) -> Result<u64, JournalError> {
    let start = batch_key(shard, 0);
    let end = batch_key(shard, u64::MAX);
    let mut expected = 1u64;
    let mut failure: Option<JournalError> = None;
    store.scan(&start, &end, &mut |key, value| {
        let sequence = u64::from_be_bytes(key[3..11].try_into().expect("key length"));
        let decoded = decode(value);
        let result = match decoded {
            Err(reason) => Err(JournalError::Corrupt { shard, sequence, reason }),
            Ok(record) if record.sequence != sequence || sequence != expected || record.shard != shard => {
                Err(JournalError::Corrupt { shard, sequence, reason: format!("expected batch {expected}") })
            }
            Ok(record) => visit(record),
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

/// Rebuilds a shard's state by re-applying its journal, checking that every batch produces
/// exactly the postings that were stored. Returns the state, the last sequence and timestamp.
pub fn replay_shard(store: &dyn Store, shard: ShardId) -> Result<(ShardState, u64, Timestamp), JournalError> {
    let mut state = ShardState::default();
    let mut fx = Effects::default();
    let mut last_timestamp = 0;
    let last_sequence = read_shard(store, shard, &mut |record| {
        fx.clear();
        for envelope in &record.envelopes {
            state.apply(envelope, record.timestamp, &mut fx);
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
