//! The journal's hash chain and its archives: every break is found and named (shard, batch, what),
//! recovery refuses a broken chain, restarts go on with the chain, and archiving moves only what a
//! checkpoint covers, durably, leaving a chain that verifies across archive and live journal.

use std::sync::Arc;

use engine::archive::{archive_shard, read_manifests, verify_dir, verify_live, Archived};
use engine::journal::{
    archivable_through, batch_key, checkpoint_key, decode, first_live_sequence, stored_hash, verify_shard, Break, BreakKind, ChainHead, JournalError, HASH_LEN,
};
use engine::ledger::command::{Command, Envelope};
use engine::ledger::types::{AccountId, Limits};
use engine::money::CurrencyId;
use engine::{Engine, EngineConfig};
use storage::{MemoryStore, Store};

const CNY: CurrencyId = CurrencyId(0);

/// No checkpoints: these tests write the `m/c/` keys they need themselves, and recovery must
/// walk the whole journal.
fn config() -> EngineConfig {
    EngineConfig { shard_count: 2, ack_flush_ms: 1, checkpoints: engine::shard::CheckpointPolicy::NEVER, ..EngineConfig::default() }
}

fn envelope(command: Command) -> Envelope {
    Envelope { platform: 3, out_order_no: None, command }
}

/// Runs `rounds` rounds of two submissions (account openings, then recharges), each split over
/// both shards: about two batches per shard per round.
fn run_rounds(engine: &Engine, rounds: usize) {
    for round in 0..rounds as u64 {
        let opens = (0..10).map(|i| envelope(Command::OpenAccount { owner: round * 10 + i, currency: CNY, limits: Limits::NONE })).collect();
        let opened = engine.execute(opens).expect("open");
        let recharges = opened.iter().map(|r| envelope(Command::Recharge { account: AccountId(r.id), currency: CNY, amount: 1_000, channel: 1 })).collect();
        engine.execute(recharges).expect("recharge");
    }
    engine.wait_quiescent(std::time::Duration::from_secs(10)).expect("quiescent");
}

/// A store holding a journal of several batches on each of two shards.
fn journal(rounds: usize) -> Arc<MemoryStore> {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::start(config(), store.clone()).expect("engine");
    run_rounds(&engine, rounds);
    engine.shutdown();
    store
}

fn value(store: &dyn Store, shard: u16, sequence: u64) -> Vec<u8> {
    store.get(&batch_key(shard, sequence)).expect("get").expect("the batch exists")
}

fn head_of(store: &dyn Store, shard: u16) -> ChainHead {
    verify_shard(store, shard, None).expect("a sound chain")
}

/// One way to break a journal and the break `verify_shard` must report.
struct Case {
    name: &'static str,
    damage: fn(&MemoryStore),
    expected: (u16, u64, BreakKind),
}

fn flip(store: &MemoryStore, shard: u16, sequence: u64, at: fn(usize) -> usize) {
    let mut bytes = value(store, shard, sequence);
    let index = at(bytes.len());
    bytes[index] ^= 0x04;
    store.write(&[(&batch_key(shard, sequence), &bytes)]).expect("write");
}

/// Rewrites a batch with another timestamp and a hash that matches (what a writer that forged a
/// batch would do): only the next batch's link shows it.
fn forge(store: &MemoryStore, shard: u16, sequence: u64) {
    let bytes = value(store, shard, sequence);
    let record = decode(shard, sequence, &bytes).expect("decodes");
    let view = engine::journal::BatchRecordRef {
        shard,
        sequence,
        timestamp: record.timestamp + 1,
        previous_hash: record.previous_hash,
        envelopes: &record.envelopes,
        entries: &record.entries,
        postings: &record.postings,
    };
    let mut forged = Vec::new();
    engine::journal::encode(&view, &mut forged);
    store.write(&[(&batch_key(shard, sequence), &forged)]).expect("write");
}

#[test]
fn verify_names_the_first_break_of_a_shard() {
    let cases = [
        Case { name: "a flipped byte inside a batch", damage: |s| flip(s, 1, 3, |len| len / 2), expected: (1, 3, BreakKind::HashMismatch) },
        Case {
            name: "a flipped byte in the newest batch",
            damage: |s| flip(s, 0, head_of(s, 0).sequence, |len| len / 3),
            expected: (0, 0, BreakKind::HashMismatch),
        },
        Case { name: "a flipped byte in a batch's stored hash", damage: |s| flip(s, 0, 2, |len| len - 1), expected: (0, 2, BreakKind::HashMismatch) },
        Case { name: "a deleted batch", damage: |s| s.delete_range(&batch_key(1, 4), &batch_key(1, 5)).expect("delete"), expected: (1, 4, BreakKind::Gap) },
        Case { name: "a forged batch with its own hash", damage: |s| forge(s, 0, 3), expected: (0, 4, BreakKind::LinkMismatch) },
        Case {
            name: "a value that is no batch",
            damage: |s| s.write(&[(&batch_key(1, 2), b"\x02garbage")]).expect("write"),
            expected: (1, 2, BreakKind::Undecodable),
        },
    ];
    let pristine = journal(6);
    for shard in 0..2 {
        assert!(head_of(&*pristine, shard).sequence >= 6, "several batches per shard");
    }
    for case in cases {
        let store = pristine.snapshot();
        let newest = head_of(&store, 0).sequence;
        (case.damage)(&store);
        let (shard, mut sequence, kind) = case.expected;
        if sequence == 0 {
            sequence = newest;
        }
        let other = 1 - shard;
        let broken = verify_shard(&store, shard, None).expect_err(case.name);
        assert_eq!((broken.shard, broken.sequence, &broken.kind), (shard, sequence, &kind), "{}: {broken}", case.name);
        assert!(verify_shard(&store, other, None).is_ok(), "{}: the other shard is sound", case.name);
        // Recovery refuses to start on it, naming the shard and the batch.
        let refused = Engine::start(config(), Arc::new(store.snapshot())).err().expect(case.name).to_string();
        assert!(refused.contains(&format!("journal of shard {shard} is corrupt at batch {sequence}")), "{}: {refused}", case.name);
    }
}

#[test]
fn a_restart_goes_on_with_the_chain_and_an_anchor_checks_the_head() {
    let store = journal(3);
    let before: Vec<ChainHead> = (0..2).map(|shard| head_of(&*store, shard)).collect();
    let engine = Engine::start(config(), store.clone()).expect("restart");
    run_rounds(&engine, 3);
    engine.shutdown();
    for shard in 0..2u16 {
        let head = head_of(&*store, shard);
        assert!(head.sequence > before[shard as usize].sequence, "new batches");
        // From an anchor (what a checkpoint records): the same head, and a wrong anchor is a break.
        assert_eq!(verify_shard(&*store, shard, Some(before[shard as usize])), Ok(head));
        let mut wrong = before[shard as usize];
        wrong.hash[0] ^= 1;
        let broken = verify_shard(&*store, shard, Some(wrong)).expect_err("a wrong anchor");
        assert_eq!((broken.sequence, broken.kind), (wrong.sequence, BreakKind::LinkMismatch));
        // An anchor beyond the journal's end (its tail lost) is a break too.
        let beyond = ChainHead { sequence: head.sequence + 5, hash: head.hash };
        assert_eq!(verify_shard(&*store, shard, Some(beyond)).expect_err("a lost tail").kind, BreakKind::Gap);
        assert_eq!(stored_hash(&value(&*store, shard, head.sequence)), Some(head.hash));
    }
}

#[test]
fn nothing_is_archived_without_a_checkpoint() {
    let store = journal(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let keys_before = all_keys(&*store);
    for shard in 0..2 {
        assert_eq!(archivable_through(&*store, shard).expect("read"), 0);
        assert_eq!(archive_shard(&*store, shard, u64::MAX, dir.path()).expect("runs"), Archived::Nothing("nothing to archive: no checkpoint".into()));
    }
    assert_eq!(all_keys(&*store), keys_before, "nothing changed");
    assert!(read_manifests(dir.path()).expect("reads").is_empty());
}

fn all_keys(store: &dyn Store) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    store
        .scan(b"", b"\xff", &mut |key, _| {
            keys.push(key.to_vec());
            true
        })
        .expect("scan");
    keys
}

/// Writes a checkpoint key as the checkpoint contract defines it (the value is the checkpoint
/// module's; archiving reads only the key).
fn checkpoint(store: &dyn Store, shard: u16, sequence: u64) {
    store.write(&[(&checkpoint_key(shard, sequence), b"checkpoint")]).expect("write");
}

#[test]
fn archiving_moves_batches_up_to_the_oldest_checkpoint_and_the_chain_verifies_across() {
    let store = journal(6);
    let dir = tempfile::tempdir().expect("tempdir");
    let heads: Vec<ChainHead> = (0..2).map(|shard| head_of(&*store, shard)).collect();
    // Shard 0: checkpoints at 4 and 6 (the oldest counts); shard 1: one at its newest batch
    // (which stays live); a batch's timestamp as the cut-off for shard 1 keeps the later ones.
    checkpoint(&*store, 0, 6);
    checkpoint(&*store, 0, 4);
    checkpoint(&*store, 1, heads[1].sequence);
    assert_eq!(archivable_through(&*store, 0).expect("read"), 4);
    let third = decode(1, 3, &value(&*store, 1, 3)).expect("decodes").timestamp;
    let Archived::Moved(zero) = archive_shard(&*store, 0, u64::MAX, dir.path()).expect("archives") else { panic!("moved") };
    assert_eq!((zero.first_sequence, zero.last_sequence), (1, 4));
    let Archived::Moved(one) = archive_shard(&*store, 1, third, dir.path()).expect("archives") else { panic!("moved") };
    assert_eq!((one.first_sequence, one.last_sequence), (1, 2), "batches older than the cut-off only");
    assert_eq!(first_live_sequence(&*store, 0).expect("read"), 5);
    assert_eq!(first_live_sequence(&*store, 1).expect("read"), 3);
    // The live journal alone still verifies from its first batch, and with the archives from 1.
    for shard in 0..2u16 {
        assert_eq!(verify_shard(&*store, shard, None), Ok(heads[shard as usize]));
    }
    let archives = verify_dir(dir.path()).expect("reads");
    assert_eq!(archives.len(), 2);
    for (shard, chain) in &archives {
        let chain = chain.as_ref().expect("sound archives");
        assert_eq!(verify_live(&*store, *shard, Some(chain)), Ok(heads[*shard as usize]));
    }
    // A second run after more checkpoints writes the next file, which chains onto the first.
    assert!(heads[1].sequence > 5, "shard 1 has more than five batches");
    checkpoint(&*store, 1, 5);
    let Archived::Moved(next) = archive_shard(&*store, 1, u64::MAX, dir.path()).expect("archives") else { panic!("moved") };
    assert_eq!((next.first_sequence, next.last_sequence), (3, 5));
    let archives = verify_dir(dir.path()).expect("reads");
    let (_, chain) = archives.iter().find(|(shard, _)| *shard == 1).expect("shard 1");
    let chain = chain.as_ref().expect("sound");
    assert_eq!((chain.files, chain.batches, chain.head.sequence), (2, 5, 5));
    assert_eq!(verify_live(&*store, 1, Some(chain)), Ok(heads[1]));
    // Replay from batch 1 cannot rebuild a shard whose first batches were archived: a clear error.
    match engine::journal::replay_journal(&*store, 0) {
        Err(JournalError::Corrupt { shard: 0, sequence: 1, kind: BreakKind::Gap, reason }) => assert!(reason.contains("archived"), "{reason}"),
        other => panic!("{:?}", other.map(|(_, sequence, _)| sequence)),
    }
}

#[test]
fn verify_finds_a_flipped_byte_in_an_archive_and_a_missing_archive() {
    let store = journal(4);
    let dir = tempfile::tempdir().expect("tempdir");
    checkpoint(&*store, 0, 3);
    let Archived::Moved(manifest) = archive_shard(&*store, 0, u64::MAX, dir.path()).expect("archives") else { panic!("moved") };
    let path = dir.path().join(&manifest.file);
    let pristine = std::fs::read(&path).expect("read");
    let mut bytes = pristine.clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, &bytes).expect("write");
    let archives = verify_dir(dir.path()).expect("reads");
    let broken: &Break = archives[0].1.as_ref().expect_err("a flipped byte");
    assert_eq!((broken.shard, broken.sequence, &broken.kind), (0, 1, &BreakKind::HashMismatch), "{broken}");
    assert!(broken.reason.contains(&manifest.file), "{broken}");
    // The file restored, its manifest gone: the live journal no longer goes on from batch 1.
    std::fs::write(&path, &pristine).expect("write");
    assert!(verify_dir(dir.path()).expect("reads")[0].1.is_ok());
    std::fs::remove_file(dir.path().join(format!("{}.json", manifest.file))).expect("remove");
    let broken = verify_live(&*store, 0, Some(&engine::archive::ArchivedChain { files: 0, batches: 0, head: ChainHead::EMPTY })).expect_err("a gap");
    assert_eq!((broken.sequence, broken.kind), (1, BreakKind::Gap));
}

#[test]
fn an_interrupted_archive_run_is_finished_by_the_next() {
    let store = journal(5);
    checkpoint(&*store, 0, 3);
    // The state before the run: as if the run crashed after writing its files, before deleting.
    let crashed = store.snapshot();
    let dir = tempfile::tempdir().expect("tempdir");
    let Archived::Moved(manifest) = archive_shard(&*store, 0, u64::MAX, dir.path()).expect("archives") else { panic!("moved") };
    assert_eq!(first_live_sequence(&crashed, 0).expect("read"), 1);
    let again = archive_shard(&crashed, 0, u64::MAX, dir.path()).expect("finishes");
    assert!(matches!(again, Archived::Nothing(_)), "{again:?}");
    assert_eq!(first_live_sequence(&crashed, 0).expect("read"), manifest.last_sequence + 1);
    assert_eq!(read_manifests(dir.path()).expect("reads").len(), 1, "no second file of the same batches");
    let archives = verify_dir(dir.path()).expect("reads");
    assert!(verify_live(&crashed, 0, Some(archives[0].1.as_ref().expect("sound"))).is_ok());
    assert_eq!(HASH_LEN, 32);
}

/// An interrupted run is finished only from an archive that reads back whole: its file gone or
/// damaged since, the batches stay (before session 61 they were deleted on the manifest's word).
#[test]
fn an_interrupted_run_whose_file_is_gone_deletes_nothing() {
    let store = journal(5);
    checkpoint(&*store, 0, 3);
    let crashed = store.snapshot();
    let dir = tempfile::tempdir().expect("tempdir");
    let Archived::Moved(manifest) = archive_shard(&*store, 0, u64::MAX, dir.path()).expect("archives") else { panic!("moved") };
    let file = dir.path().join(&manifest.file);
    let pristine = std::fs::read(&file).expect("read");
    let keys = all_keys(&crashed);
    std::fs::remove_file(&file).expect("remove");
    assert!(archive_shard(&crashed, 0, u64::MAX, dir.path()).is_err(), "the file is gone");
    let mut damaged = pristine.clone();
    damaged[pristine.len() / 2] ^= 0x08;
    std::fs::write(&file, &damaged).expect("write");
    assert!(archive_shard(&crashed, 0, u64::MAX, dir.path()).is_err(), "the file is damaged");
    assert_eq!(all_keys(&crashed), keys, "no batch left the journal");
    std::fs::write(&file, &pristine).expect("write");
    archive_shard(&crashed, 0, u64::MAX, dir.path()).expect("finishes");
    assert_eq!(first_live_sequence(&crashed, 0).expect("read"), manifest.last_sequence + 1);
}

/// Another database archiving the same batches' numbers into the same directory is refused and
/// keeps its batches; the first database's archive is untouched (before session 61 it was
/// replaced).
#[test]
fn an_archive_never_replaces_another_databases_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = journal(5);
    checkpoint(&*first, 0, 3);
    let Archived::Moved(manifest) = archive_shard(&*first, 0, u64::MAX, dir.path()).expect("archives") else { panic!("moved") };
    let kept = std::fs::read(dir.path().join(&manifest.file)).expect("read");
    let other = journal(5);
    checkpoint(&*other, 0, 3);
    assert_ne!(value(&*first, 0, 4), value(&*other, 0, 4), "two journals");
    let keys = all_keys(&*other);
    let refused = archive_shard(&*other, 0, u64::MAX, dir.path());
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(all_keys(&*other), keys, "its batches stay");
    assert_eq!(std::fs::read(dir.path().join(&manifest.file)).expect("read"), kept);
    assert!(
        std::fs::read_dir(dir.path()).expect("read").all(|entry| !entry.expect("entry").file_name().to_string_lossy().ends_with(".tmp")),
        "no file left behind"
    );
}
