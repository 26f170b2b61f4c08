//! Journal archives: batches older than a shard's oldest checkpoint move out of the live database
//! into zstd-compressed files, one per shard per run, each with a JSON manifest (`clearing
//! archive`); `verify_dir` checks them and the chain from them into the live journal
//! (`clearing verify --archives`).
//!
//! A file holds the stored values of consecutive batches, in order, exactly as the live journal
//! held them (each one hashed and linked, see `journal`), each after its length (4 bytes, little
//! endian), compressed as consecutive zstd frames of whole batches (`zstd -d` reads it; the
//! compressor works on one chunk in memory at a time, so it does no IO and a full disk is an
//! error here, never a panic inside it). Its manifest names the shard, the first and
//! last batch, the chain head before the first batch and after the last, and the BLAKE3 of the
//! compressed file. The file and its manifest are durable (written to a temporary name, synced,
//! renamed, the directory synced) before the batches leave the live journal in one range delete.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use storage::{StorageError, Store};

use crate::journal::{
    archivable_through, batch_key, check_hash, decode_hashed, first_live_sequence, hex_of, Break, BreakKind, ChainHead, JournalError, HASH_LEN, ZERO_HASH,
};
use crate::ledger::types::{ShardId, Timestamp};

/// The version of the archive layout a manifest names; other versions are refused.
pub const ARCHIVE_FORMAT_VERSION: u32 = 1;

/// The largest stored batch an archive file may hold (a length prefix above it is damage; the
/// reader never allocates what a damaged prefix claims).
pub const ARCHIVED_BATCH_BYTES_MAX: u32 = 1 << 30;

/// Raw bytes compressed into one zstd frame (whole batches: a frame may exceed it by one batch).
const CHUNK_BYTES: usize = 16 << 20;

/// The most a frame of an archive may decompress to (a chunk and the largest batch).
const CHUNK_BYTES_MAX: u64 = CHUNK_BYTES as u64 + ARCHIVED_BATCH_BYTES_MAX as u64 + 4;

/// A chain head as the manifest writes it (the hash in hex).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadText {
    pub sequence: u64,
    pub hash: String,
}

impl From<ChainHead> for HeadText {
    fn from(head: ChainHead) -> HeadText {
        HeadText { sequence: head.sequence, hash: head.hash_hex() }
    }
}

impl HeadText {
    /// The head, if the hash is 64 hex digits.
    pub fn head(&self) -> Option<ChainHead> {
        let text = self.hash.as_bytes();
        if text.len() != 2 * HASH_LEN {
            return None;
        }
        let mut hash = [0u8; HASH_LEN];
        for (index, byte) in hash.iter_mut().enumerate() {
            let digits = std::str::from_utf8(&text[2 * index..2 * index + 2]).ok()?;
            *byte = u8::from_str_radix(digits, 16).ok()?;
        }
        Some(ChainHead { sequence: self.sequence, hash })
    }
}

/// What an archive file holds, written beside it as `<file>.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub shard: ShardId,
    pub first_sequence: u64,
    pub last_sequence: u64,
    /// The head the first batch links to (batch `first_sequence - 1`).
    pub head_before: HeadText,
    /// The last batch and its hash.
    pub head_after: HeadText,
    /// The archive file's name, in the same directory.
    pub file: String,
    /// BLAKE3 of the archive file, hex.
    pub file_blake3: String,
    /// The cut-off the run was given: every batch in the file is older (microseconds since the epoch).
    pub before_micros: Timestamp,
}

/// Why archiving or reading archives failed (a break in what is read is `Break`).
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Broken(#[from] Break),
}

fn io(what: &str, path: &Path, error: std::io::Error) -> ArchiveError {
    ArchiveError::Io(format!("{what} {}: {error}", path.display()))
}

/// What an archive run did for one shard.
#[derive(Debug, PartialEq, Eq)]
pub enum Archived {
    /// Batches moved into a file (and out of the live journal).
    Moved(Manifest),
    /// Nothing moved, and why.
    Nothing(String),
}

/// The file name of the archive of `shard`'s batches `first..=last` (sorts by shard, then batch).
pub fn file_name(shard: ShardId, first: u64, last: u64) -> String {
    format!("journal-{shard:05}-{first:020}-{last:020}.zst")
}

/// Moves the batches of `shard` that are older than `before` (a batch timestamp) and not after
/// its oldest checkpoint into a new archive file in `directory`, then deletes them from the live
/// journal. The newest live batch always stays. Finishes an earlier run that archived batches
/// but stopped before deleting them.
pub fn archive_shard(store: &dyn Store, shard: ShardId, before: Timestamp, directory: &Path) -> Result<Archived, ArchiveError> {
    let through = archivable_through(store, shard)?;
    if through == 0 {
        return Ok(Archived::Nothing("nothing to archive: no checkpoint".into()));
    }
    let mut first = first_live_sequence(store, shard)?;
    if first == 0 {
        return Ok(Archived::Nothing("nothing to archive: no journal".into()));
    }
    first = finish_interrupted(store, shard, first, directory)?;
    let head_before = match first {
        1 => ChainHead::EMPTY,
        _ => {
            let bytes = store.get(&batch_key(shard, first))?.ok_or_else(|| gap(shard, first))?;
            let (record, _) = decode_hashed(shard, first, &bytes).map_err(|e| Break::from_error(shard, first, e))?;
            ChainHead { sequence: first - 1, hash: record.previous_hash }
        }
    };
    create_dir_durably(directory)?;
    // Named for this process: two runs into one directory never write one file.
    let temporary = directory.join(format!(".journal-{shard:05}.{}.zst.tmp", std::process::id()));
    let written = write_file(store, shard, first, through, before, head_before, &temporary)?;
    let Some((head_after, file_blake3)) = written else {
        std::fs::remove_file(&temporary).map_err(|e| io("removing", &temporary, e))?;
        return Ok(Archived::Nothing(format!("nothing to archive: no batch from {first} to checkpoint {through} is older than the date (the newest stays)")));
    };
    let file = file_name(shard, first, head_after.sequence);
    let manifest = Manifest {
        format: ARCHIVE_FORMAT_VERSION,
        shard,
        first_sequence: first,
        last_sequence: head_after.sequence,
        head_before: head_before.into(),
        head_after: head_after.into(),
        file: file.clone(),
        file_blake3,
        before_micros: before,
    };
    place_durably(&temporary, &directory.join(&file))?;
    let json = serde_json::to_vec_pretty(&manifest).expect("manifests serialize");
    let manifest_temporary = directory.join(format!(".{file}.{}.json.tmp", std::process::id()));
    write_synced(&manifest_temporary, &json)?;
    let manifest_path = directory.join(format!("{file}.json"));
    place_durably(&manifest_temporary, &manifest_path)?;
    // Read back as `clearing verify` reads it: only an archive that gives back every batch it
    // took, chained, lets them leave.
    let read_back = verify_file(&manifest_path, &manifest, head_before).map_err(ArchiveError::Broken)?;
    if read_back != head_after {
        return Err(ArchiveError::Io(format!("archive {file} read back ends at batch {}, not {}", read_back.sequence, head_after.sequence)));
    }
    // Only now, with both files on disk, do the batches leave the live journal: one atomic write;
    // then their space (RocksDB keeps deleted data until a compaction meets the range).
    let (from, to) = (batch_key(shard, first), batch_key(shard, head_after.sequence + 1));
    store.delete_range(&from, &to)?;
    store.reclaim(&from, &to)?;
    Ok(Archived::Moved(manifest))
}

fn gap(shard: ShardId, sequence: u64) -> Break {
    Break { shard, sequence, kind: BreakKind::Gap, reason: format!("batch {sequence} is missing") }
}

/// Streams the qualifying batches into `path`; returns the head after the last one and the file's
/// BLAKE3, or `None` when no batch qualifies. A batch qualifies when it is at most `through`,
/// older than `before`, and not the newest live batch (the scan looks one batch ahead).
fn write_file(
    store: &dyn Store,
    shard: ShardId,
    first: u64,
    through: u64,
    before: Timestamp,
    head_before: ChainHead,
    path: &Path,
) -> Result<Option<(ChainHead, String)>, ArchiveError> {
    let file = File::create(path).map_err(|e| io("creating", path, e))?;
    let mut output = HashingWriter::new(BufWriter::new(file));
    let mut chunk: Vec<u8> = Vec::new();
    let mut head = head_before;
    // The batch seen last, written once the next one shows it is not the newest.
    let mut pending: Option<(ChainHead, Timestamp, Vec<u8>)> = None;
    let mut failure: Option<ArchiveError> = None;
    let mut written = 0u64;
    let end = batch_key(shard, through.saturating_add(2));
    store.scan(&batch_key(shard, first), &end, &mut |key, value| {
        let mut step = || -> Result<bool, ArchiveError> {
            let sequence = key.get(3..).and_then(|tail| <[u8; 8]>::try_from(tail).ok()).map(u64::from_be_bytes).ok_or_else(|| gap(shard, head.sequence + 1))?;
            let expected = pending.as_ref().map_or(head.sequence, |(h, _, _)| h.sequence) + 1;
            if sequence != expected {
                return Err(gap(shard, expected).into());
            }
            let (record, hash) = decode_hashed(shard, sequence, value).map_err(|e| Break::from_error(shard, sequence, e))?;
            let linked_to = pending.as_ref().map_or(head.hash, |(h, _, _)| h.hash);
            if record.previous_hash != linked_to {
                return Err(Break { shard, sequence, kind: BreakKind::LinkMismatch, reason: "the batch names another previous hash".into() }.into());
            }
            if let Some((pending_head, timestamp, bytes)) = pending.take() {
                if pending_head.sequence > through || timestamp >= before {
                    return Ok(false);
                }
                chunk.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                chunk.extend_from_slice(&bytes);
                if chunk.len() >= CHUNK_BYTES {
                    write_frame(&mut chunk, &mut output).map_err(|e| io("writing", path, e))?;
                }
                head = pending_head;
                written += 1;
            }
            pending = Some((ChainHead { sequence, hash }, record.timestamp, value.to_vec()));
            Ok(true)
        };
        match step() {
            Ok(go_on) => go_on,
            Err(error) => {
                failure = Some(error);
                false
            }
        }
    })?;
    if let Some(error) = failure {
        return Err(error);
    }
    write_frame(&mut chunk, &mut output).map_err(|e| io("writing", path, e))?;
    let (writer, hash) = output.finish();
    let file = writer.into_inner().map_err(|e| io("writing", path, e.into_error()))?;
    file.sync_all().map_err(|e| io("syncing", path, e))?;
    Ok((written > 0).then(|| (head, hex_of(&hash))))
}

/// Compresses `chunk` (if not empty) into one zstd frame on `output`, and empties it.
fn write_frame(chunk: &mut Vec<u8>, output: &mut impl Write) -> std::io::Result<()> {
    if chunk.is_empty() {
        return Ok(());
    }
    let frame = ruzstd::encoding::compress_to_vec(chunk.as_slice(), ruzstd::encoding::CompressionLevel::Fastest);
    chunk.clear();
    output.write_all(&frame)
}

/// A writer that hashes what passes through it.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> HashingWriter<W> {
        HashingWriter { inner, hasher: blake3::Hasher::new() }
    }

    fn finish(self) -> (W, [u8; HASH_LEN]) {
        (self.inner, self.hasher.finalize().into())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.hasher.update(&bytes[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ArchiveError> {
    let mut file = File::create(path).map_err(|e| io("creating", path, e))?;
    file.write_all(bytes).map_err(|e| io("writing", path, e))?;
    file.sync_all().map_err(|e| io("syncing", path, e))
}

/// Gives `from` the name `to` unless another file has it, and syncs the directory, so the new
/// name survives a crash. A file already there with the same bytes (a run that stopped after
/// placing it) is taken; another is refused (before session 61 it was replaced: two databases
/// archiving into one directory overwrote each other's files).
fn place_durably(from: &Path, to: &Path) -> Result<(), ArchiveError> {
    match std::fs::hard_link(from, to) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            let same = hash_file(from).map_err(|e| io("reading", from, e))? == hash_file(to).map_err(|e| io("reading", to, e))?;
            if !same {
                let _ = std::fs::remove_file(from);
                return Err(ArchiveError::Io(format!(
                    "{} holds another file of that name (another database's archives?): archive each database into a directory of its own",
                    to.display()
                )));
            }
        }
        Err(error) => return Err(io("linking to", to, error)),
    }
    std::fs::remove_file(from).map_err(|e| io("removing", from, e))?;
    sync_parent(to)
}

fn sync_parent(path: &Path) -> Result<(), ArchiveError> {
    let directory = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(directory).and_then(|d| d.sync_all()).map_err(|e| io("syncing", directory, e))
}

/// Creates `directory` and any missing parents, each new name synced in its parent (before
/// session 61 a power cut after the batches left the journal could lose a new directory's
/// entry, and with it the archive).
fn create_dir_durably(directory: &Path) -> Result<(), ArchiveError> {
    let mut missing = Vec::new();
    let mut at = Some(directory);
    while let Some(path) = at.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        missing.push(path.to_path_buf());
        at = path.parent();
    }
    std::fs::create_dir_all(directory).map_err(|e| io("creating", directory, e))?;
    for created in missing.iter().rev() {
        sync_parent(created)?;
    }
    Ok(())
}

/// An earlier run may have written an archive and stopped before deleting its batches from the
/// live journal: if an archive of `shard` ends at or after `first`, its batches still live are
/// deleted now (after checking the last one is the batch the archive ends with). Returns the
/// first batch left.
fn finish_interrupted(store: &dyn Store, shard: ShardId, first: u64, directory: &Path) -> Result<u64, ArchiveError> {
    let Some((path, last)) = read_manifests(directory)?.into_iter().filter(|(_, m)| m.shard == shard).max_by_key(|(_, m)| m.last_sequence) else {
        return Ok(first);
    };
    if last.last_sequence < first {
        return Ok(first);
    }
    // The archive must hold every batch about to leave, and read back whole (before session 61
    // its file was not looked at: one deleted or damaged since let the batches go).
    let before = last.head_before.head().ok_or_else(|| ArchiveError::Io(format!("manifest {}: a malformed head hash", last.file)))?;
    if last.first_sequence > first {
        return Err(gap(shard, first).into());
    }
    verify_file(&path, &last, before).map_err(ArchiveError::Broken)?;
    let head = last.head_after.head().ok_or_else(|| ArchiveError::Io(format!("manifest {}: a malformed head hash", last.file)))?;
    let bytes = store.get(&batch_key(shard, head.sequence))?.ok_or_else(|| gap(shard, head.sequence))?;
    let hash = check_hash(shard, head.sequence, &bytes).map_err(|e| Break::from_error(shard, head.sequence, e))?;
    if hash != head.hash {
        return Err(
            Break { shard, sequence: head.sequence, kind: BreakKind::LinkMismatch, reason: format!("archive {} ends with another batch", last.file) }.into()
        );
    }
    let (from, to) = (batch_key(shard, first), batch_key(shard, head.sequence + 1));
    store.delete_range(&from, &to)?;
    store.reclaim(&from, &to)?;
    Ok(head.sequence + 1)
}

/// Every manifest in `directory` (files named `*.zst.json`), sorted by shard and first batch.
pub fn read_manifests(directory: &Path) -> Result<Vec<(PathBuf, Manifest)>, ArchiveError> {
    let mut manifests = Vec::new();
    let entries = match std::fs::read_dir(directory) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(manifests),
        Err(error) => return Err(io("reading", directory, error)),
    };
    for entry in entries {
        let path = entry.map_err(|e| io("reading", directory, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if !name.ends_with(".zst.json") || name.starts_with('.') {
            continue;
        }
        let text = std::fs::read(&path).map_err(|e| io("reading", &path, e))?;
        let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| ArchiveError::Io(format!("manifest {}: {e}", path.display())))?;
        manifests.push((path, manifest));
    }
    manifests.sort_by_key(|(_, m)| (m.shard, m.first_sequence));
    Ok(manifests)
}

/// What the archives of one shard hold, once checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivedChain {
    pub files: usize,
    pub batches: u64,
    /// The last archived batch: the live journal goes on from it.
    pub head: ChainHead,
}

/// Checks every archive in `directory`: each file's hash against its manifest, every batch's
/// hash and link, and that a shard's archives follow each other from batch 1 without a gap.
/// Returns, per shard with archives, the checked chain or its first break.
pub fn verify_dir(directory: &Path) -> Result<Vec<(ShardId, Result<ArchivedChain, Break>)>, ArchiveError> {
    let manifests = read_manifests(directory)?;
    let mut shards: Vec<(ShardId, Result<ArchivedChain, Break>)> = Vec::new();
    for (path, manifest) in manifests {
        let shard = manifest.shard;
        if shards.last().is_none_or(|(s, _)| *s != shard) {
            shards.push((shard, Ok(ArchivedChain { files: 0, batches: 0, head: ChainHead::EMPTY })));
        }
        let (_, state) = shards.last_mut().expect("pushed above");
        let Ok(chain) = state else { continue };
        match verify_file(&path, &manifest, chain.head) {
            Ok(head) => {
                chain.files += 1;
                chain.batches += manifest.last_sequence - manifest.first_sequence + 1;
                chain.head = head;
            }
            Err(broken) => *state = Err(broken),
        }
    }
    Ok(shards)
}

/// Checks one archive file against its manifest and the head before it; returns the head after.
fn verify_file(manifest_path: &Path, manifest: &Manifest, before: ChainHead) -> Result<ChainHead, Break> {
    let shard = manifest.shard;
    let first = manifest.first_sequence;
    let broken = |sequence, kind, reason: String| Break { shard, sequence, kind, reason: format!("archive {}: {reason}", manifest.file) };
    if manifest.format != ARCHIVE_FORMAT_VERSION {
        return Err(broken(first, BreakKind::Undecodable, format!("archive format {}, this build reads {ARCHIVE_FORMAT_VERSION}", manifest.format)));
    }
    let head_before = manifest.head_before.head().ok_or_else(|| broken(first, BreakKind::Undecodable, "a malformed hash in the manifest".into()))?;
    let head_after = manifest.head_after.head().ok_or_else(|| broken(first, BreakKind::Undecodable, "a malformed hash in the manifest".into()))?;
    if first != before.sequence + 1 || head_before.sequence != before.sequence || manifest.last_sequence < first {
        return Err(broken(
            before.sequence + 1,
            BreakKind::Gap,
            format!("holds batches {first}..={}, the chain needs {} next", manifest.last_sequence, before.sequence + 1),
        ));
    }
    if head_before.hash != before.hash {
        return Err(broken(first, BreakKind::LinkMismatch, "the manifest's head before differs from the chain's".into()));
    }
    // The manifest names a file in its own directory, never a path elsewhere.
    if manifest.file.contains('/') || manifest.file.contains('\\') || manifest.file.starts_with('.') {
        return Err(broken(first, BreakKind::Undecodable, "the manifest names a file outside its directory".into()));
    }
    let path = manifest_path.with_file_name(&manifest.file);
    let file_hash = hash_file(&path).map_err(|e| broken(first, BreakKind::Undecodable, format!("cannot read: {e}")))?;
    if hex_of(&file_hash) != manifest.file_blake3 {
        return Err(broken(first, BreakKind::HashMismatch, format!("the file hashes to {}, the manifest says {}", hex_of(&file_hash), manifest.file_blake3)));
    }
    let file = File::open(&path).map_err(|e| broken(first, BreakKind::Undecodable, format!("cannot read: {e}")))?;
    let mut reader = BufReader::new(file);
    let mut head = before;
    let mut chunk = Vec::new();
    loop {
        let at_end = reader.fill_buf().map(|b| b.is_empty()).map_err(|e| broken(head.sequence + 1, BreakKind::Undecodable, e.to_string()))?;
        if at_end {
            break;
        }
        let undecodable = |e: String| broken(head.sequence + 1, BreakKind::Undecodable, format!("zstd: {e}"));
        let decoder = ruzstd::decoding::StreamingDecoder::new(&mut reader).map_err(|e| undecodable(e.to_string()))?;
        chunk.clear();
        decoder.take(CHUNK_BYTES_MAX + 1).read_to_end(&mut chunk).map_err(|e| undecodable(e.to_string()))?;
        if chunk.len() as u64 > CHUNK_BYTES_MAX {
            return Err(undecodable("a frame larger than an archive writes".into()));
        }
        let mut rest = chunk.as_slice();
        while !rest.is_empty() {
            let sequence = head.sequence + 1;
            let Some((length, tail)) = rest.split_first_chunk::<4>() else {
                return Err(broken(sequence, BreakKind::Undecodable, "a frame ends inside a length".into()));
            };
            let length = u32::from_le_bytes(*length) as usize;
            if length > tail.len() {
                return Err(broken(sequence, BreakKind::Undecodable, "a frame ends inside a batch".into()));
            }
            let (bytes, after) = tail.split_at(length);
            rest = after;
            let (record, hash) = decode_hashed(shard, sequence, bytes).map_err(|e| with_file(Break::from_error(shard, sequence, e), &manifest.file))?;
            let expected = if sequence == 1 { ZERO_HASH } else { head.hash };
            if record.previous_hash != expected {
                return Err(broken(sequence, BreakKind::LinkMismatch, "the batch names another previous hash".into()));
            }
            head = ChainHead { sequence, hash };
        }
    }
    if head != head_after || head.sequence != manifest.last_sequence {
        return Err(broken(
            head.sequence + 1,
            BreakKind::Gap,
            format!("the file ends at batch {}, the manifest says {}", head.sequence, manifest.last_sequence),
        ));
    }
    Ok(head)
}

fn with_file(mut broken: Break, file: &str) -> Break {
    broken.reason = format!("archive {file}: {}", broken.reason);
    broken
}

fn hash_file(path: &Path) -> std::io::Result<[u8; HASH_LEN]> {
    let mut hasher = blake3::Hasher::new();
    let mut file = File::open(path)?;
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finalize().into())
}

/// Checks a shard's live journal on from its archives (or from its first live batch when it has
/// none): the live journal must go on from the last archived batch.
pub fn verify_live(store: &dyn Store, shard: ShardId, archived: Option<&ArchivedChain>) -> Result<ChainHead, Break> {
    crate::journal::verify_shard(store, shard, archived.map(|chain| chain.head))
}

impl From<JournalError> for ArchiveError {
    fn from(error: JournalError) -> ArchiveError {
        match error {
            JournalError::Storage(error) => ArchiveError::Storage(error),
            other => ArchiveError::Io(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read};

    #[test]
    fn consecutive_zstd_frames_read_back_one_after_another() {
        // A file of several frames (an archive over `CHUNK_BYTES`): each decoder must stop at its
        // frame's end, so the next one starts where it should.
        let chunks: Vec<Vec<u8>> = (0..3u8).map(|i| (0..50_000u32).map(|n| (n % 251) as u8 ^ i).collect()).collect();
        let mut file = Vec::new();
        for chunk in &chunks {
            let mut chunk = chunk.clone();
            super::write_frame(&mut chunk, &mut file).expect("writes");
        }
        let mut reader = BufReader::new(file.as_slice());
        let mut read = Vec::new();
        while !reader.fill_buf().expect("reads").is_empty() {
            let mut frame = Vec::new();
            ruzstd::decoding::StreamingDecoder::new(&mut reader).expect("a frame").read_to_end(&mut frame).expect("decodes");
            read.push(frame);
        }
        assert_eq!(read, chunks);
    }
}
