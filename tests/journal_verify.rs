//! End-to-end tests of `clearing verify` and `clearing archive` against a real RocksDB directory
//! written by the server: a sound directory verifies with exit status 0, a flipped byte or a
//! deleted batch is found and named (shard, batch, what) with a non-zero status, the server
//! refuses to start on it, and an archive run without a checkpoint changes nothing.

use std::path::Path;
use std::process::Command;

use engine::journal::batch_key;
use storage::Store;
use storage_rocks::RocksStore;

const BINARY: &str = env!("CARGO_BIN_EXE_clearing");

fn run(args: &[&str], data_dir: &Path) -> (bool, String) {
    let output = Command::new(BINARY).args(args).arg("--data-dir").arg(data_dir).output().expect("run clearing");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// A data directory the server wrote (the demo: several batches on both shards), stopped
/// without writing a checkpoint: recovery and `archive` then see the journal alone.
fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = include_str!("../config/default.toml").to_string();
    assert!(config.contains("on_shutdown = true"), "the default configuration writes a checkpoint at a stop");
    let config_file = tempfile::NamedTempFile::new().expect("config file");
    std::fs::write(config_file.path(), config.replace("on_shutdown = true", "on_shutdown = false")).expect("write config");
    let output = Command::new(BINARY)
        .args(["serve", "--once", "--demo", "--config"])
        .arg(config_file.path())
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("run clearing");
    assert!(output.status.success(), "{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    dir
}

fn last_sequence(store: &RocksStore, shard: u16) -> u64 {
    let mut last = 0;
    store
        .scan(&batch_key(shard, 0), &batch_key(shard, u64::MAX), &mut |key, _| {
            last = u64::from_be_bytes(key[3..11].try_into().expect("a journal key"));
            true
        })
        .expect("scan");
    last
}

#[test]
fn verify_passes_a_sound_directory_and_names_a_flipped_byte_and_a_deleted_batch() {
    let dir = data_dir();
    let (ok, text) = run(&["verify"], dir.path());
    assert!(ok, "{text}");
    assert!(text.contains("shard 0: ok, ") && text.contains("shard 1: ok, ") && text.contains("verify: ok (2 shards)"), "{text}");
    let head_line = text.lines().find(|l| l.starts_with("shard 1: ok")).expect("a line").to_string();
    assert!(head_line.split_whitespace().next_back().is_some_and(|hash| hash.len() == 64), "{head_line}");

    // A flipped byte in batch 2 of shard 1.
    let pristine = {
        let store = RocksStore::open(dir.path()).expect("open");
        assert!(last_sequence(&store, 1) >= 3, "several batches on shard 1");
        let pristine = store.get(&batch_key(1, 2)).expect("get").expect("batch 2");
        let mut damaged = pristine.clone();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0x20;
        store.write(&[(&batch_key(1, 2), &damaged)]).expect("write");
        pristine
    };
    let (ok, text) = run(&["verify"], dir.path());
    assert!(!ok, "{text}");
    assert!(text.contains("shard 1: BROKEN at batch 2: hash mismatch"), "{text}");
    assert!(text.contains("shard 0: ok, ") && text.contains("verify: 1 of 2 shards broken"), "{text}");
    // The server refuses to start on it, naming the shard and the batch.
    let (ok, text) = run(&["serve", "--once"], dir.path());
    assert!(!ok, "{text}");
    assert!(text.contains("journal of shard 1 is corrupt at batch 2: hash mismatch"), "{text}");

    // Restored, then batch 2 of shard 0 deleted: a gap.
    {
        let store = RocksStore::open(dir.path()).expect("open");
        store.write(&[(&batch_key(1, 2), &pristine)]).expect("write");
        store.delete_range(&batch_key(0, 2), &batch_key(0, 3)).expect("delete");
    }
    let (ok, text) = run(&["verify"], dir.path());
    assert!(!ok, "{text}");
    assert!(text.contains("shard 0: BROKEN at batch 2: gap in sequences") && text.contains("shard 1: ok, "), "{text}");
}

#[test]
fn archive_without_a_checkpoint_changes_nothing_and_the_server_still_serves() {
    let dir = data_dir();
    let archives = tempfile::tempdir().expect("tempdir");
    let (ok, before) = run(&["verify"], dir.path());
    assert!(ok, "{before}");
    let to = archives.path().to_str().expect("utf-8 path");
    let (ok, text) = run(&["archive", "--before", "2999-01-01", "--to", to], dir.path());
    assert!(ok, "{text}");
    assert!(text.contains("shard 0: nothing to archive: no checkpoint") && text.contains("shard 1: nothing to archive: no checkpoint"), "{text}");
    assert_eq!(std::fs::read_dir(archives.path()).expect("read").count(), 0, "no file written");
    // The same chains, checked with the (empty) archive directory too.
    let (ok, after) = run(&["verify", "--archives", to], dir.path());
    assert!(ok, "{after}");
    assert_eq!(before, after);
    // Bad input: a clear error, nothing changed.
    let (ok, text) = run(&["archive", "--before", "yesterday", "--to", to], dir.path());
    assert!(!ok && text.contains("--before must be YYYY-MM-DD"), "{text}");
    let (ok, text) = run(&["verify"], &dir.path().join("nothing-here"));
    assert!(!ok && text.contains("is not a database directory"), "{text}");
    // The server restarts on the directory and serves the same books.
    let (ok, text) = run(&["serve", "--once", "--demo"], dir.path());
    assert!(ok && text.contains("invariants: ok"), "{text}");
}

/// A flipped byte in a checkpoint (here a part of the one a graceful stop wrote) is found and
/// named by `clearing verify`, which loads every checkpoint in full.
#[test]
fn verify_names_a_flipped_byte_in_a_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(BINARY).args(["serve", "--once", "--demo", "--data-dir"]).arg(dir.path()).output().expect("run clearing");
    assert!(output.status.success(), "{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let (ok, text) = run(&["verify"], dir.path());
    assert!(ok && text.contains("shard 1: 1 checkpoints ok (parts and history blobs checked)"), "{text}");
    {
        let store = RocksStore::open(dir.path()).expect("open");
        let newest = *engine::checkpoint::list(&store, 1).expect("list").last().expect("a checkpoint at the stop");
        let key = engine::checkpoint::part_key(1, newest, 0);
        let mut part = store.get(&key).expect("get").expect("part 0");
        let middle = part.len() / 2;
        part[middle] ^= 0x04;
        store.write(&[(&key, &part)]).expect("write");
    }
    let (ok, text) = run(&["verify"], dir.path());
    assert!(!ok, "{text}");
    assert!(text.contains("shard 1: CHECKPOINT BROKEN: checkpoint of shard 1 at batch") && text.contains("does not match its hash"), "{text}");
    assert!(text.contains("verify: 1 of 2 shards broken"), "{text}");
}

/// `clearing archive` moves a shard's batches out of the live journal only while one of its kept
/// checkpoints is sound in full (recovery starts from it once they are gone): with the only
/// checkpoint of shard 1 damaged it archives nothing, on any shard, and says why; mended, it
/// archives and names the checkpoint it checked.
#[test]
fn archive_moves_nothing_while_no_kept_checkpoint_of_a_shard_is_sound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(BINARY).args(["serve", "--once", "--demo", "--data-dir"]).arg(dir.path()).output().expect("run clearing");
    assert!(output.status.success(), "{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let archives = tempfile::tempdir().expect("tempdir");
    let to = archives.path().to_str().expect("utf-8 path");
    let (key, pristine) = {
        let store = RocksStore::open(dir.path()).expect("open");
        let newest = *engine::checkpoint::list(&store, 1).expect("list").last().expect("a checkpoint at the stop");
        let key = engine::checkpoint::part_key(1, newest, 0);
        let pristine = store.get(&key).expect("get").expect("part 0");
        let mut part = pristine.clone();
        let middle = part.len() / 2;
        part[middle] ^= 0x10;
        store.write(&[(&key, &part)]).expect("write");
        (key, pristine)
    };
    let (_, before) = run(&["verify"], dir.path());
    let (ok, text) = run(&["archive", "--before", "2999-01-01", "--to", to], dir.path());
    assert!(!ok, "{text}");
    assert!(text.contains("shard 1: no kept checkpoint is sound, so nothing was archived") && text.contains("does not match its hash"), "{text}");
    assert_eq!(std::fs::read_dir(archives.path()).expect("read").count(), 0, "no file written");
    let (_, after) = run(&["verify"], dir.path());
    assert_eq!(before, after, "no batch left the journal of either shard");
    {
        let store = RocksStore::open(dir.path()).expect("open");
        store.write(&[(&key, &pristine)]).expect("write");
    }
    let (ok, text) = run(&["archive", "--before", "2999-01-01", "--to", to], dir.path());
    assert!(ok, "{text}");
    assert!(text.contains("shard 0: checkpoint at batch ") && text.contains("shard 1: checkpoint at batch ") && text.contains("is sound"), "{text}");
    assert!(text.contains("shard 1: archived batches 1..="), "{text}");
    let (ok, text) = run(&["verify", "--archives", to], dir.path());
    assert!(ok, "{text}");
    // Asked to check archives that are not there: broken, not "not checked" (before session 61).
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let (ok, text) = run(&["verify", "--archives", elsewhere.path().to_str().expect("utf-8 path")], dir.path());
    assert!(!ok && text.contains("--archives holds none of this shard's") && text.contains("verify: 2 of 2 shards broken"), "{text}");
    // The books offline, after an archive: the balances against what the live journal and
    // the checkpoint give (before session 61 every account with archived activity failed).
    let (ok, text) = run(&["invariants"], dir.path());
    assert!(ok, "{text}");
    let (ok, text) = run(&["serve", "--once", "--demo"], dir.path());
    assert!(ok && text.contains("invariants: ok"), "{text}");
}

/// A journal cut short below a checkpoint (its last batches lost) is broken for `clearing
/// verify`, as it is for recovery, which refuses to start on it (before session 61 verify
/// walked the shorter chain and said ok).
#[test]
fn verify_finds_a_journal_that_ends_before_its_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(BINARY).args(["serve", "--once", "--demo", "--data-dir"]).arg(dir.path()).output().expect("run clearing");
    assert!(output.status.success(), "{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let newest = {
        let store = RocksStore::open(dir.path()).expect("open");
        let newest = *engine::checkpoint::list(&store, 1).expect("list").last().expect("a checkpoint at the stop");
        assert_eq!(last_sequence(&store, 1), newest, "the stop's checkpoint is at the last batch");
        store.delete_range(&batch_key(1, newest), &batch_key(1, newest + 1)).expect("delete");
        newest
    };
    let (ok, text) = run(&["verify"], dir.path());
    assert!(!ok, "{text}");
    assert!(text.contains(&format!("shard 1: CHECKPOINT at batch {newest} does not meet the journal")) && text.contains("journal ends before batch"), "{text}");
    assert!(text.contains("verify: 1 of 2 shards broken"), "{text}");
    let (ok, text) = run(&["serve", "--once"], dir.path());
    assert!(!ok && text.contains("journal ends before batch"), "{text}");
}

/// `clearing verify` walks the whole audit chain, which a start no longer reads: an edited old
/// record is found and named, with a non-zero status.
#[test]
fn verify_walks_the_whole_audit_chain() {
    let dir = data_dir();
    let key = |sequence: u64| [b"o/au/".as_slice(), &sequence.to_be_bytes()].concat();
    {
        let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(RocksStore::open(dir.path()).expect("open"));
        let audit = gateway::portal::audit::Audit::load(store.clone()).expect("an empty log");
        for n in 0..3 {
            let scope = gateway::portal::operators::Scope::System;
            let (before, after) = (serde_json::Value::Null, serde_json::json!({"n": n}));
            audit.append(1, "alice", "admin", scope, "channel.change", "sim_ibps", before, after, "127.0.0.1", "ok").expect("appended");
        }
    }
    let (ok, text) = run(&["verify"], dir.path());
    assert!(ok && text.contains("audit log: ok (3 records)") && text.contains("verify: ok (2 shards)"), "{text}");
    {
        let store = RocksStore::open(dir.path()).expect("open");
        let mut record: serde_json::Value = serde_json::from_slice(&store.get(&key(1)).expect("get").expect("record 1")).expect("json");
        record["target"] = serde_json::json!("sim_unionpay");
        store.write(&[(&key(1), &serde_json::to_vec(&record).expect("json"))]).expect("write");
    }
    let (ok, text) = run(&["verify"], dir.path());
    assert!(!ok, "{text}");
    assert!(text.contains("audit log: BROKEN: audit log chain broken at record 2") && text.contains("verify: the audit log is broken"), "{text}");
}
