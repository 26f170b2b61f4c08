//! Checkpoints on the in-memory store: recovery from a checkpoint plus the journal after it
//! rebuilds exactly the state a replay of the whole journal does; a torn or corrupt checkpoint
//! is skipped for the one before; a write failure at any point of a checkpoint loses nothing
//! acknowledged; old checkpoints are pruned.

use std::sync::Arc;
use std::time::Duration;

use engine::checkpoint::{self, manifest_key, part_key};
use engine::invariants::check_store;
use engine::journal::{recover_shard, replay_journal};
use engine::ledger::command::{Command, Envelope, OutOrderNo};
use engine::ledger::types::*;
use engine::money::CurrencyId;
use engine::shard::CheckpointPolicy;
use engine::{Engine, EngineConfig};
use storage::{MemoryStore, Store};

const CNY: CurrencyId = CurrencyId(0);
const P: u32 = 3;

fn config(every_batches: u64, kept: usize) -> EngineConfig {
    EngineConfig {
        shard_count: 2,
        ack_flush_ms: 1,
        checkpoints: CheckpointPolicy { every_batches, every_orders: 0, every: Duration::ZERO, kept, on_shutdown: false },
        ..EngineConfig::default()
    }
}

/// Checkpoints only at a graceful stop, one kept: each run's stop writes one and prunes the last.
fn at_stops() -> EngineConfig {
    EngineConfig {
        shard_count: 2,
        ack_flush_ms: 1,
        checkpoints: CheckpointPolicy { every_batches: 0, every_orders: 0, every: Duration::ZERO, kept: 1, on_shutdown: true },
        ..EngineConfig::default()
    }
}

fn keyed(key: &str, command: Command) -> Envelope {
    Envelope { platform: P, out_order_no: Some(OutOrderNo::new(key).unwrap()), command }
}

/// Opens accounts on both shards, funds them, and runs `rounds` rounds of cross-shard payments,
/// guarantees, confirms and refunds, one submission (about one batch) per command. Returns the
/// accounts and every acknowledged command with its order id.
fn workload(engine: &Engine, tag: &str, rounds: usize) -> (Vec<AccountId>, Vec<(Envelope, u64)>) {
    let mut acked = Vec::new();
    let mut run = |key: String, command: Command| -> Option<u64> {
        let envelope = keyed(&key, command);
        match engine.execute_one(envelope.clone()) {
            Ok(reply) if reply.is_ok() => {
                acked.push((envelope, reply.id));
                Some(reply.id)
            }
            _ => None,
        }
    };
    let accounts: Vec<AccountId> = (0..6)
        .filter_map(|owner| run(format!("{tag}-open-{owner}"), Command::OpenAccount { owner, currency: CNY, limits: Limits::NONE }))
        .map(AccountId)
        .collect();
    for (k, account) in accounts.iter().enumerate() {
        run(format!("{tag}-fund-{k}"), Command::Recharge { account: *account, currency: CNY, amount: 10_000_000, channel: 1 });
    }
    if accounts.len() < 2 {
        // A store that failed early: nothing more can be acknowledged anyway.
        return (accounts, acked);
    }
    for round in 0..rounds {
        let payer = accounts[round % accounts.len()];
        let payee = accounts[(round + 1) % accounts.len()];
        let amount = 100 + round as i64;
        let legs = |a: i64| -> Legs { [Leg { account: payee, amount: a }].into_iter().collect() };
        let paid =
            run(format!("{tag}-pay-{round}"), Command::Payment { payer, guarantee: false, currency: CNY, amount, payees: legs(amount), splits: Legs::new() });
        if let Some(payment) = paid.filter(|_| round % 3 == 0) {
            run(format!("{tag}-refund-{round}"), Command::Refund { payment: OrderId(payment), payee, amount: 1 });
        }
        let escrow =
            run(format!("{tag}-escrow-{round}"), Command::Payment { payer, guarantee: true, currency: CNY, amount, payees: legs(amount), splits: Legs::new() });
        if let Some(order) = escrow.filter(|_| round % 2 == 0) {
            run(format!("{tag}-confirm-{round}"), Command::Confirm { order: OrderId(order), releases: Legs::new() });
        }
    }
    (accounts, acked)
}

/// Writes batches on both shards until each has `at_least` checkpoints (a checkpoint still
/// being written when the batches stop holds the next one back: more batches start it).
fn wait_for_checkpoints(engine: &Engine, store: &MemoryStore, at_least: usize) {
    for round in 0..3000u64 {
        if (0..2).all(|shard| checkpoint::list(store, shard).unwrap().len() >= at_least) {
            return;
        }
        let open =
            Envelope { platform: P, out_order_no: None, command: Command::OpenAccount { owner: 1_000_000 + round, currency: CNY, limits: Limits::NONE } };
        engine.execute_one(open).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("fewer than {at_least} checkpoints per shard were written");
}

/// The digest of each shard as recovery (checkpoint + tail) and as a whole replay rebuild it.
fn both_ways(store: &MemoryStore) -> Vec<(u64, u64, Option<u64>, Vec<String>)> {
    (0..2)
        .map(|shard| {
            let recovered = recover_shard(store, shard).unwrap();
            let (full, sequence, timestamp) = replay_journal(store, shard).unwrap();
            assert_eq!((recovered.head.sequence, recovered.timestamp), (sequence, timestamp), "shard {shard}: the same position either way");
            // Digests of the state and of its idempotency records, hot and cold (which of them
            // memory holds differs between the two).
            let recovered_digest = engine::cold::logical_digest(store, &recovered.state, sequence).unwrap();
            (recovered_digest, engine::cold::logical_digest(store, &full, sequence).unwrap(), recovered.checkpoint, recovered.skipped)
        })
        .collect()
}

#[test]
fn recovery_from_a_checkpoint_and_the_journal_after_it_equals_a_whole_replay() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::start(config(7, 2), store.clone()).unwrap();
    let (_, acked) = workload(&engine, "a", 40);
    assert!(acked.len() > 100);
    wait_for_checkpoints(&engine, &store, 2);
    // Once credits are acknowledged (their batches written) the running state is final.
    engine.wait_quiescent(Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let live: Vec<u64> = (0..2)
        .map(|s| {
            let store = store.clone();
            engine.read_shard(s, move |st| engine::cold::logical_digest(&*store, st, u64::MAX).unwrap()).unwrap()
        })
        .collect();
    engine.shutdown();
    for (shard, (recovered, full, checkpoint, skipped)) in both_ways(&store).into_iter().enumerate() {
        assert!(checkpoint.is_some(), "shard {shard} started from a checkpoint");
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(recovered, full, "shard {shard}: checkpoint + tail == whole journal");
        assert_eq!(recovered, live[shard], "shard {shard}: == the state the running shard had");
    }
    // A restarted engine answers every acknowledged command as a replay of the same order.
    let restarted = Engine::start(config(7, 2), store.clone()).unwrap();
    assert_replayed(&restarted, &acked, "after a restart");
    restarted.shutdown();
    assert!(check_store(&*store, 2).unwrap().ok);
}

/// Lots read back from a checkpoint (by account index, `AccountLots::place`) mature as a live
/// shard's would: after a restart from checkpoints, a `Mature` of every day so far moves all
/// unsettled income to settled, and recovery (the same checkpoint and the `Mature` after it)
/// equals a whole replay of the journal.
#[test]
fn lots_read_back_from_a_checkpoint_mature_as_a_whole_replay_does() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::start(config(7, 2), store.clone()).unwrap();
    let (_, acked) = workload(&engine, "m", 30);
    assert!(acked.len() > 60);
    engine.wait_quiescent(Duration::from_secs(10)).unwrap();
    // A checkpoint of each shard after all of it (the lots are in the checkpoint, not only in
    // the journal after it).
    let written: Vec<u64> = engine.counters().iter().map(|c| c.last_sequence.load(std::sync::atomic::Ordering::SeqCst)).collect();
    let after = |engine: &Engine| engine.counters().iter().zip(&written).all(|(c, w)| c.checkpoint_sequence.load(std::sync::atomic::Ordering::SeqCst) >= *w);
    let reached = (0..3000u64).any(|round| {
        let open =
            Envelope { platform: P, out_order_no: None, command: Command::OpenAccount { owner: 2_000_000 + round, currency: CNY, limits: Limits::NONE } };
        engine.execute_one(open).unwrap();
        std::thread::sleep(Duration::from_millis(10));
        after(&engine)
    });
    assert!(reached, "no checkpoint after the workload");
    engine.shutdown();
    drop(engine);
    // No checkpoint in this run: the one it started from is what recovery starts from below.
    let restarted = Engine::start(config(1_000_000, 2), store.clone()).unwrap();
    let unsettled = |engine: &Engine| -> (i64, usize) {
        (0..2u16)
            .map(|s| engine.read_shard(s, |st| (st.accounts.iter().map(|a| a.unsettled).sum::<i64>(), st.lots.iter().count())).unwrap())
            .fold((0, 0), |(sum, lots), (s, l)| (sum + s, lots + l))
    };
    let (before, with_lots) = unsettled(&restarted);
    assert!(before > 0 && with_lots >= 1, "income is unsettled on {with_lots} accounts: {before}");
    let matured: u64 = restarted
        .broadcast(Envelope { platform: 0, out_order_no: None, command: Command::Mature { through_day: 1_000_000 } })
        .unwrap()
        .iter()
        .map(|r| r.id)
        .sum();
    assert_eq!((matured as usize, unsettled(&restarted)), (with_lots, (0, 0)), "every account with lots matured");
    restarted.wait_quiescent(Duration::from_secs(10)).unwrap();
    restarted.shutdown();
    drop(restarted);
    for (shard, (recovered, full, checkpoint, skipped)) in both_ways(&store).into_iter().enumerate() {
        assert!(checkpoint.is_some() && skipped.is_empty(), "shard {shard}: from a checkpoint, {skipped:?}");
        assert_eq!(recovered, full, "shard {shard}: checkpoint + tail (with the Mature) == whole journal");
    }
    assert!(check_store(&*store, 2).unwrap().ok);
}

/// Sends every acknowledged command again: each must be a replay of its order, not a new one.
fn assert_replayed(engine: &Engine, acked: &[(Envelope, u64)], when: &str) {
    for (envelope, id) in acked {
        let reply = engine.execute_one(envelope.clone()).unwrap();
        assert!(reply.is_ok() && reply.replayed && reply.id == *id, "{when}: acknowledged {:?} (order {id}) answered {reply:?}", envelope.out_order_no);
    }
}

#[test]
fn old_checkpoints_are_pruned_to_the_number_kept() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::start(config(3, 2), store.clone()).unwrap();
    workload(&engine, "p", 30);
    wait_for_checkpoints(&engine, &store, 2);
    engine.shutdown();
    for shard in 0..2u16 {
        let kept = checkpoint::list(&*store, shard).unwrap();
        assert!(kept.len() <= 2, "shard {shard} keeps {kept:?}");
        // No part of a pruned checkpoint is left below the oldest kept one.
        let mut stray = 0;
        store
            .scan(&part_key(shard, 0, 0), &part_key(shard, kept[0], 0), &mut |_, _| {
                stray += 1;
                true
            })
            .unwrap();
        assert_eq!(stray, 0, "shard {shard}: parts of pruned checkpoints remain");
    }
}

#[test]
fn a_corrupt_newest_checkpoint_falls_back_to_the_one_before() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::start(config(5, 3), store.clone()).unwrap();
    workload(&engine, "c", 40);
    wait_for_checkpoints(&engine, &store, 2);
    engine.shutdown();
    let newest = *checkpoint::list(&*store, 0).unwrap().last().unwrap();
    // Flip one byte in the middle of the newest checkpoint's first part.
    let key = part_key(0, newest, 0);
    let mut part = store.get(&key).unwrap().unwrap();
    let middle = part.len() / 2;
    part[middle] ^= 0x40;
    store.write(&[(&key, &part)]).unwrap();
    // And on shard 1, a manifest whose parts are missing (a crash between the two, or a prune).
    let newest_1 = *checkpoint::list(&*store, 1).unwrap().last().unwrap();
    store.delete_range(&part_key(1, newest_1, 0), &part_key(1, newest_1 + 1, 0)).unwrap();
    for (shard, (recovered, full, checkpoint, skipped)) in both_ways(&store).into_iter().enumerate() {
        let newest = if shard == 0 { newest } else { newest_1 };
        assert_eq!(skipped.len(), 1, "shard {shard}: {skipped:?}");
        assert!(skipped[0].contains(&format!("at batch {newest}")), "{skipped:?}");
        assert!(checkpoint.is_some_and(|c| c < newest), "shard {shard} fell back to an older checkpoint: {checkpoint:?}");
        assert_eq!(recovered, full, "shard {shard}");
    }
    // A manifest that is itself damaged is skipped too.
    let key = manifest_key(0, newest);
    let mut manifest = store.get(&key).unwrap().unwrap();
    manifest[3] ^= 1;
    store.write(&[(&key, &manifest)]).unwrap();
    let recovered = recover_shard(&*store, 0).unwrap();
    assert!(recovered.skipped[0].contains("hash"), "{:?}", recovered.skipped);
    let engine = Engine::start(config(5, 3), store.clone()).unwrap();
    engine.shutdown();
    assert!(check_store(&*store, 2).unwrap().ok);
}

#[test]
fn parts_without_a_manifest_are_ignored() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::start(config(0, 2), store.clone()).unwrap();
    workload(&engine, "t", 10);
    engine.shutdown();
    assert!(checkpoint::list(&*store, 0).unwrap().is_empty());
    // A crash after writing a part and before the manifest: the part alone is no checkpoint.
    store.write(&[(&part_key(0, 5, 0), b"half a checkpoint")]).unwrap();
    for (shard, (recovered, full, checkpoint, skipped)) in both_ways(&store).into_iter().enumerate() {
        assert_eq!(checkpoint, None, "shard {shard}");
        assert!(skipped.is_empty());
        assert_eq!(recovered, full);
    }
}

#[test]
fn a_graceful_stop_writes_a_checkpoint_so_the_next_start_replays_nothing() {
    let store = Arc::new(MemoryStore::new());
    let policy = CheckpointPolicy { every_batches: 0, every_orders: 0, every: Duration::ZERO, kept: 2, on_shutdown: true };
    let engine = Engine::start(EngineConfig { checkpoints: policy, ..config(0, 2) }, store.clone()).unwrap();
    workload(&engine, "s", 10);
    engine.shutdown();
    for shard in 0..2u16 {
        let recovered = recover_shard(&*store, shard).unwrap();
        let (_, last, _) = replay_journal(&*store, shard).unwrap();
        assert!(last > 3, "shard {shard} wrote batches");
        assert_eq!(recovered.checkpoint, Some(last), "shard {shard}: the checkpoint is of the last batch");
        assert_eq!(recovered.head.sequence, last);
    }
}

/// A state larger than a part (`checkpoint::PART_BYTES`, 1 MiB since session 45) is written
/// in several and loads back as a whole replay rebuilds it.
#[test]
fn a_state_of_several_parts_loads_back_as_written() {
    let store = Arc::new(MemoryStore::new());
    let policy = CheckpointPolicy { every_batches: 0, every_orders: 0, every: Duration::ZERO, kept: 2, on_shutdown: true };
    let engine = Engine::start(EngineConfig { checkpoints: policy, ..config(0, 2) }, store.clone()).unwrap();
    for thousand in 0..40u64 {
        let opens = (0..1_000).map(|owner| plain(Command::OpenAccount { owner: thousand * 1_000 + owner, currency: CNY, limits: Limits::NONE })).collect();
        assert!(engine.execute(opens).unwrap().iter().all(|r| r.is_ok()));
    }
    engine.shutdown();
    let mut parts = Vec::new();
    for (shard, (recovered, full, checkpoint, skipped)) in both_ways(&store).into_iter().enumerate() {
        let sequence = checkpoint.expect("a checkpoint at the stop");
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(recovered, full, "shard {shard}: the checkpoint of several parts == a whole replay");
        parts.push(checkpoint::load(&*store, shard as u16, sequence).unwrap().1.part_hashes.len());
    }
    assert!(parts.iter().all(|&n| n > 1), "parts per shard: {parts:?}");
}

/// A write failure injected at every point of a checkpoint (each part, the manifest, the
/// pruning): the store is poisoned, the shard stops at its next batch, and a restart from what
/// was durable has every acknowledged order and passes the invariants.
#[test]
fn a_write_failure_at_any_point_of_a_checkpoint_loses_nothing_acknowledged() {
    for failing_write in 0..12 {
        let store = Arc::new(MemoryStore::new());
        let engine = Engine::start(config(4, 2), store.clone()).unwrap();
        workload(&engine, "w", 6);
        // From here, the `failing_write`-th write fails: a batch or a piece of a checkpoint.
        store.fail_after(failing_write);
        let (_, acked) = workload(&engine, "x", 12);
        engine.shutdown();
        restart_from_what_was_durable(&store, config(4, 2), &acked, failing_write);
    }
}

/// Restarts from what `store` holds durably: every acknowledged command replays with its order,
/// the invariants hold, and a checkpoint + tail equals a whole replay on each shard.
fn restart_from_what_was_durable(store: &MemoryStore, config: EngineConfig, acked: &[(Envelope, u64)], failing_write: u64) {
    let durable = Arc::new(store.snapshot());
    let restarted = Engine::start(config, durable.clone()).unwrap();
    assert_replayed(&restarted, acked, &format!("failing write {failing_write}"));
    restarted.shutdown();
    let report = check_store(&*durable, 2).unwrap();
    assert!(report.ok, "write {failing_write}: {report:?}");
    for (shard, (recovered, full, _, _)) in both_ways(&durable).into_iter().enumerate() {
        assert_eq!(recovered, full, "write {failing_write}, shard {shard}");
    }
    // No checkpoint left on disk names a blob that is gone (pruning deletes a blob with, or
    // after, the last manifest naming it), whichever write failed.
    for shard in 0..2u16 {
        let stored = blob_keys(&durable, shard);
        let dyn_store: Arc<dyn Store> = durable.clone();
        for sequence in checkpoint::list(&*durable, shard).unwrap() {
            let reader = checkpoint::HistoryReader::new(dyn_store.clone(), shard);
            let Ok((_, manifest, _)) = checkpoint::load_with(&*durable, shard, sequence, Some(&reader)) else { continue };
            for hash in &manifest.blobs {
                assert!(stored.binary_search(hash).is_ok(), "write {failing_write}: shard {shard}'s checkpoint {sequence} names a deleted blob");
            }
        }
    }
}

/// A payment of one cent from `payer` to `payee`.
fn cent(payer: AccountId, payee: AccountId) -> Command {
    Command::Payment {
        payer,
        guarantee: false,
        currency: CNY,
        amount: 1,
        payees: [Leg { account: payee, amount: 1 }].into_iter().collect(),
        splits: Legs::new(),
    }
}

fn plain(command: Command) -> Envelope {
    Envelope { platform: P, out_order_no: None, command }
}

/// Opens accounts (pushing batches) until the newest checkpoint of `shard` has a state for which
/// `ready` holds; returns that checkpoint's manifest.
fn wait_for_a_checkpoint_where(
    engine: &Engine,
    store: &MemoryStore,
    shard: ShardId,
    ready: impl Fn(&engine::ledger::state::ShardState) -> bool,
) -> checkpoint::Manifest {
    for round in 0..3000u64 {
        if let Some(newest) = checkpoint::list(store, shard).unwrap().last() {
            // (A pruning may delete it while it is read: then it is simply not the one.)
            if let Ok((state, manifest)) = checkpoint::load(store, shard, *newest) {
                if ready(&state) {
                    return manifest;
                }
            }
        }
        engine.execute_one(plain(Command::OpenAccount { owner: 2_000_000 + round, currency: CNY, limits: Limits::NONE })).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no checkpoint of shard {shard} came to hold what was asked");
}

/// Two accounts on shard 0, the payer funded, and `submissions` submissions of 4,000 one-cent
/// payments between them (the first of escrows): about a chunk of orders per submission. Gives
/// the payment command (with `guarantee`) and the first escrow.
fn escrow_history(engine: &Engine, submissions: usize) -> (impl Fn(bool) -> Command, OrderId) {
    let opens = (0..8).map(|owner| plain(Command::OpenAccount { owner, currency: CNY, limits: Limits::NONE })).collect();
    let accounts: Vec<AccountId> = engine.execute(opens).unwrap().iter().map(|r| AccountId(r.id)).collect();
    let on_0: Vec<AccountId> = accounts.iter().copied().filter(|a| a.shard(2) == 0).collect();
    let (payer, payee) = (on_0[0], on_0[1]);
    assert!(engine.execute_one(plain(Command::Recharge { account: payer, currency: CNY, amount: 1_000_000_000, channel: 1 })).unwrap().is_ok());
    let pay = move |guarantee| Command::Payment {
        payer,
        guarantee,
        currency: CNY,
        amount: 1,
        payees: [Leg { account: payee, amount: 1 }].into_iter().collect(),
        splits: Legs::new(),
    };
    let mut first_escrow = None;
    for submission in 0..submissions {
        let replies = engine.execute((0..4000).map(|_| plain(pay(submission == 0))).collect()).unwrap();
        assert!(replies.iter().all(|r| r.is_ok()));
        first_escrow.get_or_insert(OrderId(replies[0].id));
    }
    (pay, first_escrow.expect("a submission"))
}

fn blob_keys(store: &MemoryStore, shard: ShardId) -> Vec<[u8; 32]> {
    let mut hashes = Vec::new();
    store
        .scan(&checkpoint::blob_key(shard, &[0; 32]), &checkpoint::blob_key(shard, &[0xff; 32]), &mut |key, _| {
            hashes.push(key[6..38].try_into().unwrap());
            true
        })
        .unwrap();
    hashes
}

/// The blobs of `shard` the kept checkpoints name, sorted.
fn named_blobs(store: &MemoryStore, shard: ShardId) -> Vec<[u8; 32]> {
    let mut named: Vec<[u8; 32]> = Vec::new();
    for sequence in checkpoint::list(store, shard).unwrap() {
        named.extend(checkpoint::load(store, shard, sequence).unwrap().1.blobs);
    }
    named.sort_unstable();
    named.dedup();
    named
}

/// Pruning deletes the blobs that only the pruned checkpoints named, found from their manifests
/// (a listing of the shard's blobs would read every blob of its history back at each
/// checkpoint). A blob no manifest names, which a checkpoint stopped half-way leaves, is looked
/// for only when that checkpoint's writing mark is still set: the next checkpoint then sweeps
/// every blob of the shard, and clears the mark.
#[test]
fn pruning_deletes_what_only_pruned_checkpoints_named_and_sweeps_after_a_checkpoint_left_half_way() {
    let store = Arc::new(MemoryStore::new());
    let at_stops = at_stops();
    let engine = Engine::start(at_stops.clone(), store.clone()).unwrap();
    let (_, first_escrow) = escrow_history(&engine, 3);
    engine.shutdown();
    let first = named_blobs(&store, 0);
    assert!(first.len() >= 2, "full chunks are blobs: {}", first.len());
    assert_eq!(blob_keys(&store, 0), first);
    assert!(store.get(&checkpoint::writing_key(0)).unwrap().is_none(), "a finished checkpoint clears its mark");

    // A blob nobody names, without the mark: not looked for. Confirming the first escrow changes
    // the first chunk, so the next checkpoint names a new blob for it and the old one goes.
    let orphan = [7u8; 32];
    store.write(&[(&checkpoint::blob_key(0, &orphan), b"left by nobody")]).unwrap();
    let engine = Engine::start(at_stops.clone(), store.clone()).unwrap();
    assert!(engine.execute_one(plain(Command::Confirm { order: first_escrow, releases: Legs::new() })).unwrap().is_ok());
    engine.shutdown();
    let second = named_blobs(&store, 0);
    assert!(first.iter().any(|hash| second.binary_search(hash).is_err()), "the changed chunk's old blob is no longer named");
    let mut expected = second.clone();
    expected.push(orphan);
    expected.sort_unstable();
    assert_eq!(blob_keys(&store, 0), expected, "the pruned checkpoint's own blobs went, the orphan stayed");

    // As a checkpoint stopped half-way leaves it: the mark set. The next checkpoint sweeps.
    store.write(&[(&checkpoint::writing_key(0), &1u64.to_be_bytes())]).unwrap();
    let engine = Engine::start(at_stops, store.clone()).unwrap();
    engine.execute_one(plain(Command::OpenAccount { owner: 77, currency: CNY, limits: Limits::NONE })).unwrap();
    engine.shutdown();
    assert_eq!(blob_keys(&store, 0), named_blobs(&store, 0), "every blob left is named, the orphan swept");
    assert!(store.get(&checkpoint::writing_key(0)).unwrap().is_none(), "the sweep cleared the mark");
    for (shard, (recovered, full, checkpoint, skipped)) in both_ways(&store).into_iter().enumerate() {
        assert!(checkpoint.is_some() && skipped.is_empty(), "shard {shard}: {checkpoint:?} {skipped:?}");
        assert_eq!(recovered, full, "shard {shard}: recovery == whole replay");
    }
}

/// A shard that goes on writing checkpoints prunes with the blob lists it keeps in memory (its
/// own, and the one it loaded at the start), not its manifests read back: checkpoint after
/// checkpoint, each changing an old chunk (an escrow confirmed), the blobs in the store are
/// exactly those the kept checkpoints name (none left behind, none named gone), and recovery
/// from them is the journal's replay.
#[test]
fn checkpoints_written_one_after_another_keep_exactly_the_blobs_their_kept_manifests_name() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::start(at_stops(), store.clone()).unwrap();
    let (_, first_escrow) = escrow_history(&engine, 3);
    engine.shutdown();
    let first = named_blobs(&store, 0);
    let policy = CheckpointPolicy { every_batches: 1, every_orders: 0, every: Duration::ZERO, kept: 2, on_shutdown: true };
    let engine = Engine::start(EngineConfig { checkpoints: policy, ..at_stops() }, store.clone()).unwrap();
    let counters = engine.counters()[0].clone();
    let written = || counters.checkpoints.load(std::sync::atomic::Ordering::SeqCst);
    for step in 0..6u64 {
        let before = written();
        // The first escrows one by one: each confirmation changes the first chunk of orders.
        let order = OrderId(first_escrow.0 + step * 2);
        assert!(engine.execute_one(plain(Command::Confirm { order, releases: Legs::new() })).unwrap().is_ok(), "step {step}");
        let waited = std::time::Instant::now();
        while written() == before {
            assert!(waited.elapsed() < Duration::from_secs(20), "step {step}: no checkpoint");
            // A batch lets the shard collect the finished checkpoint and start the next.
            engine.execute_one(plain(Command::OpenAccount { owner: 1_000 + step, currency: CNY, limits: Limits::NONE })).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    engine.shutdown();
    assert!(written() >= 6, "{} checkpoints", written());
    let last = named_blobs(&store, 0);
    assert!(first.iter().any(|hash| last.binary_search(hash).is_err()), "the first chunk's old blob went");
    assert_eq!(blob_keys(&store, 0), last, "the blobs left are exactly those the kept checkpoints name");
    for (shard, (recovered, full, checkpoint, skipped)) in both_ways(&store).into_iter().enumerate() {
        assert!(checkpoint.is_some() && skipped.is_empty(), "shard {shard}: {checkpoint:?} {skipped:?}");
        assert_eq!(recovered, full, "shard {shard}: recovery == whole replay");
    }
}

/// Regression (session 48): the next hot idempotency map, made ahead once a checkpoint is
/// collected, was sized from the hot map's capacity, and as a table is at most 5/8 full each
/// generation's table was twice the last (20-24 GB in the bench). Sized from the generation
/// made cold, the tables stay the size of one interval's records, checkpoint after checkpoint.
#[test]
fn the_hot_maps_made_ahead_stay_the_size_of_an_interval() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::start(at_stops(), store.clone()).unwrap();
    let (accounts, _) = workload(&engine, "h", 2);
    engine.shutdown();
    let on_0: Vec<AccountId> = accounts.iter().copied().filter(|a| a.shard(2) == 0).collect();
    // A checkpoint every 8 batches: about 60,000 order numbers an interval (a table of 131,072
    // slots, 5 MiB, mapped), as many each time.
    let policy = CheckpointPolicy { every_batches: 8, every_orders: 0, every: Duration::ZERO, kept: 2, on_shutdown: false };
    let engine = Engine::start(EngineConfig { checkpoints: policy, ..at_stops() }, store.clone()).unwrap();
    let counters = engine.counters()[0].clone();
    let written = || counters.checkpoints.load(std::sync::atomic::Ordering::SeqCst);
    let mapped_before = engine::ledger::flat::mapped_table_bytes();
    for round in 0..10 {
        let before = written();
        let pay = |i: usize| keyed(&format!("hm{round}-{i}"), cent(on_0[0], on_0[1]));
        for chunk in (0..60_000).collect::<Vec<_>>().chunks(8_000) {
            assert!(engine.execute(chunk.iter().map(|&i| pay(i)).collect()).unwrap().iter().all(|r| r.is_ok()), "round {round}");
        }
        let waited = std::time::Instant::now();
        while written() == before {
            assert!(waited.elapsed() < Duration::from_secs(30), "round {round}: no checkpoint");
            engine.execute_one(plain(Command::OpenAccount { owner: 2_000 + round, currency: CNY, limits: Limits::NONE })).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        // At most a hot, a sealed and a ready table of 131,073 or 262,145 slots of 40 bytes for
        // shard 0; twice the last each time, the fifth would already be past this.
        let grown = engine::ledger::flat::mapped_table_bytes().saturating_sub(mapped_before);
        assert!(grown < 64 << 20, "round {round}: {grown} bytes of tables mapped");
    }
    // Below capacity the seals took the maps made ahead (not one dropped, not one missing).
    let taken = counters.hot_maps_taken.load(std::sync::atomic::Ordering::SeqCst);
    engine.shutdown();
    assert!(taken >= 5, "{taken} hot maps made ahead were taken");
}

/// A checkpoint that stops after writing a new blob (its manifest write fails) leaves that blob
/// named by no manifest and its writing mark set; the next checkpoint sweeps it, and clears the
/// mark. Nothing acknowledged is lost meanwhile.
#[test]
fn the_blob_of_a_checkpoint_stopped_before_its_manifest_goes_with_the_next_checkpoint() {
    let store = Arc::new(FaultyStore::new());
    let at_stops = at_stops();
    let engine = Engine::start(at_stops.clone(), store.clone()).unwrap();
    let (_, first_escrow) = escrow_history(&engine, 3);
    engine.shutdown();
    drop(engine);
    assert_eq!(blob_keys(&store.inner, 0), named_blobs(&store.inner, 0));

    // Confirming the first escrow changes its chunk: the checkpoint at the stop writes a new blob
    // for it, then fails at its manifest.
    let engine = Engine::start(at_stops.clone(), store.clone()).unwrap();
    assert!(engine.execute_one(plain(Command::Confirm { order: first_escrow, releases: Legs::new() })).unwrap().is_ok());
    store.failing_manifest_writes.store(true, std::sync::atomic::Ordering::SeqCst);
    engine.shutdown();
    drop(engine);
    store.failing_manifest_writes.store(false, std::sync::atomic::Ordering::SeqCst);
    let named = named_blobs(&store.inner, 0);
    assert!(blob_keys(&store.inner, 0).iter().any(|hash| named.binary_search(hash).is_err()), "the stopped checkpoint's blob is named by no manifest");
    assert!(store.get(&checkpoint::writing_key(0)).unwrap().is_some(), "its writing mark stayed");

    // The next run changes the chunk again (the second escrow confirmed): its checkpoint names
    // another blob for it, so the stopped one's blob can only go by the sweep.
    let engine = Engine::start(at_stops, store.clone()).unwrap();
    let status = engine.read_shard(0, move |state| state.order(first_escrow).map(|o| o.status)).unwrap();
    assert_eq!(status, Some(OrderStatus::Succeeded), "the confirm was durable in the journal");
    let second_escrow = engine.read_shard(0, move |state| state.orders.get(first_escrow.local_index(2) as usize + 1).map(|o| o.id)).unwrap().unwrap();
    assert!(engine.execute_one(plain(Command::Confirm { order: second_escrow, releases: Legs::new() })).unwrap().is_ok());
    engine.shutdown();
    assert_eq!(blob_keys(&store.inner, 0), named_blobs(&store.inner, 0), "swept: every blob left is named");
    assert!(store.get(&checkpoint::writing_key(0)).unwrap().is_none(), "the mark is cleared");
    assert!(check_store(&store.inner, 2).unwrap().ok);
}

/// Format 4: full chunks of history are blobs, written once and shared by the checkpoints that
/// hold them unchanged, so a later checkpoint writes what changed, not the history; blobs no kept
/// checkpoint names are deleted; recovery from such a checkpoint equals a whole replay; a
/// corrupt or missing blob makes its checkpoint unusable and recovery goes on without it.
#[test]
fn checkpoints_write_history_once_and_then_only_what_changed() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::start(config(2, 2), store.clone()).unwrap();
    let (_, first_escrow) = escrow_history(&engine, 3);
    // A checkpoint holding all 12,000 orders: two full chunks of orders, and income blocks.
    let before = wait_for_a_checkpoint_where(&engine, &store, 0, |state| state.orders.len() >= 12_000);
    assert!(before.blobs.len() >= 2, "full chunks are blobs: {}", before.blobs.len());
    // Confirming the first escrow changes the first chunk of orders (and its income block).
    assert!(engine.execute_one(plain(Command::Confirm { order: first_escrow, releases: Legs::new() })).unwrap().is_ok());
    let after = wait_for_a_checkpoint_where(&engine, &store, 0, |state| state.order(first_escrow).is_some_and(|o| !o.status.is_open()));
    let shared = after.blobs.iter().filter(|hash| before.blobs.binary_search(hash).is_ok()).count();
    let new: Vec<[u8; 32]> = after.blobs.iter().copied().filter(|hash| before.blobs.binary_search(hash).is_err()).collect();
    assert!(shared >= 1, "the unchanged chunks are the same blobs");
    assert!(!new.is_empty(), "the changed chunk is a new blob");
    assert!(new.len() < after.blobs.len(), "only what changed was written again: {} of {}", new.len(), after.blobs.len());
    engine.shutdown();

    // Every blob left is named by a kept checkpoint, and every named one is there.
    for shard in 0..2u16 {
        assert_eq!(blob_keys(&store, shard), named_blobs(&store, shard), "shard {shard}: the blobs are exactly those the kept checkpoints use");
    }
    for (shard, (recovered, full, checkpoint, skipped)) in both_ways(&store).into_iter().enumerate() {
        assert!(checkpoint.is_some() && skipped.is_empty(), "shard {shard}: {checkpoint:?} {skipped:?}");
        assert_eq!(recovered, full, "shard {shard}: checkpoint with blobs + tail == whole journal");
    }

    // What a start loads knows its chunks: the next checkpoint of that state writes no blob.
    let newest = *checkpoint::list(&*store, 0).unwrap().last().unwrap();
    let (state, manifest, cache) = checkpoint::load_cached(&*store, 0, newest).unwrap();
    assert!(cache.len() >= manifest.blobs.len() && !cache.is_empty());
    let known = cache.len() as u64;
    let copy = store.snapshot();
    let head = engine::journal::ChainHead { sequence: manifest.sequence, hash: manifest.chain_hash };
    let again = checkpoint::write(&copy, &state, head, manifest.timestamp, 2, cache, Default::default()).unwrap();
    assert_eq!((again.blobs_written, again.blobs_reused), (0, known), "after a start, unchanged history is not written again");
    assert_eq!(again.manifest.blobs, manifest.blobs);

    // A flipped byte in a blob the newest checkpoint uses makes it unusable; so does a blob gone.
    let key = checkpoint::blob_key(0, &new[0]);
    let mut blob = store.get(&key).unwrap().unwrap();
    let middle = blob.len() / 2;
    blob[middle] ^= 0x08;
    store.write(&[(&key, &blob)]).unwrap();
    let recovered = recover_shard(&*store, 0).unwrap();
    assert!(recovered.skipped.iter().any(|s| s.contains(&format!("at batch {newest}")) && s.contains("does not match its hash")), "{:?}", recovered.skipped);
    blob[middle] ^= 0x08;
    store.write(&[(&key, &blob)]).unwrap();
    let unchanged = after.blobs.iter().find(|hash| before.blobs.binary_search(hash).is_ok()).unwrap();
    let key = checkpoint::blob_key(0, unchanged);
    store.delete_range(&key, &[&key[..], &[0]].concat()).unwrap();
    let recovered = recover_shard(&*store, 0).unwrap();
    assert!(recovered.skipped.iter().any(|s| s.contains("is missing")), "{:?}", recovered.skipped);
    for (shard, (recovered, full, _, _)) in both_ways(&store).into_iter().enumerate() {
        assert_eq!(recovered, full, "shard {shard}: without the damaged checkpoints, still exact");
    }
    let restarted = Engine::start(config(2, 2), store.clone()).unwrap();
    restarted.shutdown();
    assert!(check_store(&*store, 2).unwrap().ok);
}

/// A write failure at any point of a checkpoint that writes blobs (a changed chunk of history,
/// then its parts, manifest, pruning and blob collection) loses nothing acknowledged, and what
/// was durable recovers exactly: the checkpoint it interrupted simply does not count.
#[test]
fn a_write_failure_while_a_checkpoint_writes_blobs_loses_nothing_acknowledged() {
    for failing_write in 0..10 {
        let store = Arc::new(MemoryStore::new());
        let engine = Engine::start(config(2, 2), store.clone()).unwrap();
        let (pay, first_escrow) = escrow_history(&engine, 3);
        // A checkpoint with two full chunks of orders: the blob cache now knows them.
        wait_for_a_checkpoint_where(&engine, &store, 0, |state| state.orders.len() >= 12_000);
        store.fail_after(failing_write);
        let mut acked = Vec::new();
        let mut run = |key: String, command: Command| {
            let envelope = keyed(&key, command);
            if let Ok(reply) = engine.execute_one(envelope.clone()) {
                if reply.is_ok() {
                    acked.push((envelope, reply.id));
                }
            }
        };
        // The next checkpoint writes the first chunk again (an escrow in it changed).
        run(format!("f{failing_write}-confirm"), Command::Confirm { order: first_escrow, releases: Legs::new() });
        for round in 0..12 {
            run(format!("f{failing_write}-pay-{round}"), pay(round % 2 == 0));
            std::thread::sleep(Duration::from_millis(5));
        }
        engine.shutdown();
        restart_from_what_was_durable(&store, config(2, 2), &acked, failing_write);
    }
}

/// Once a checkpoint is durable, the full chunks of history it holds unchanged leave memory (but
/// the newest); an old escrow in such a chunk is still confirmed and an old payment refunded (the
/// chunk read back, then written again as a new blob); a start leaves the checkpoint's chunks
/// out of memory; and every way back (lazy start, eager recovery, whole replay) is the same state.
#[test]
fn history_leaves_memory_after_a_checkpoint_and_old_orders_still_change() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::start(config(2, 2), store.clone()).unwrap();
    let (_, first_escrow) = escrow_history(&engine, 5);
    let cold = |engine: &Engine| engine.read_shard(0, |state| state.orders.cold_chunks()).unwrap();
    wait_for_cold_chunks(&engine, 2);
    assert!(engine.counters()[0].history_cold.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    // The first escrow (chunk 0) and a payment of chunk 1, both out of memory.
    let (payment, payee) = engine
        .read_shard(0, |state| {
            let order = state.orders.get(5_000).unwrap();
            let engine::ledger::types::OrderDetail::Payment { held, .. } = &order.detail else { panic!("a payment") };
            (order.id, held[0].account)
        })
        .unwrap();
    assert!(engine.execute_one(plain(Command::Confirm { order: first_escrow, releases: Legs::new() })).unwrap().is_ok());
    assert!(engine.execute_one(plain(Command::Refund { payment, payee, amount: 1 })).unwrap().is_ok());
    let status = |engine: &Engine, order: OrderId| engine.read_shard(0, move |state| state.order(order).map(|o| o.status)).unwrap();
    assert_eq!(status(&engine, first_escrow), Some(OrderStatus::Succeeded));
    engine.shutdown();
    drop(engine);

    let restarted = Engine::start(config(2, 2), store.clone()).unwrap();
    assert!(cold(&restarted) >= 2, "a start leaves the checkpoint's chunks out of memory");
    assert_eq!(status(&restarted, first_escrow), Some(OrderStatus::Succeeded));
    let refunded = restarted.read_shard(0, move |state| state.order(payment).map(|o| o.detail.clone())).unwrap();
    assert!(matches!(refunded, Some(engine::ledger::types::OrderDetail::Payment { refunded: 1, .. })), "{refunded:?}");
    restarted.shutdown();
    assert!(check_store(&*store, 2).unwrap().ok);
    let shared: Arc<dyn Store> = store.clone();
    for (shard, (recovered, full, checkpoint, _)) in both_ways(&store).into_iter().enumerate() {
        assert!(checkpoint.is_some());
        assert_eq!(recovered, full, "shard {shard}: eager recovery == whole replay");
        let history = checkpoint::HistoryReader::new(shared.clone(), shard as ShardId);
        let lazy = engine::journal::recover_shard_filtered(&*store, shard as ShardId, None, Some(&history)).unwrap();
        let sequence = lazy.head.sequence;
        assert_eq!(engine::cold::logical_digest(&*store, &lazy.state, sequence).unwrap(), full, "shard {shard}: lazy recovery == whole replay");
    }
}

/// The per-account batch index goes out of memory in full blocks (1,024 batches) with the
/// history, a start leaves them out, and what it answers is the same before and after, and the
/// same as a whole replay's.
#[test]
fn the_batch_index_leaves_memory_and_answers_the_same_after_a_start() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::start(config(300, 2), store.clone()).unwrap();
    let opens = (0..6).map(|owner| plain(Command::OpenAccount { owner, currency: CNY, limits: Limits::NONE })).collect();
    let account = engine.execute(opens).unwrap().iter().map(|r| AccountId(r.id)).find(|a| a.shard(2) == 0).unwrap();
    // One recharge a batch: each is a batch in the account's index.
    for _ in 0..2_200 {
        assert!(engine.execute_one(plain(Command::Recharge { account, currency: CNY, amount: 1, channel: 1 })).unwrap().is_ok());
    }
    let index = |engine: &Engine| {
        engine
            .read_shard(0, move |state| {
                let list = &state.batches_of[&account];
                (list.block_counts(), list.window(|_| true, 5_000).0, list.window(|s| s < 1_500, 100))
            })
            .unwrap()
    };
    let mut live = index(&engine);
    for _ in 0..500 {
        if live.0 .1 >= 2 {
            break;
        }
        // Checkpoints are written behind: other batches move the shard on until one is durable.
        engine.execute_one(plain(Command::Recharge { account, currency: CNY, amount: 1, channel: 1 })).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        live = index(&engine);
    }
    assert!(live.0 .1 >= 2, "full blocks left memory: {:?}", live.0);
    assert!(live.1.len() >= 2_200 && live.1.windows(2).all(|w| w[0] < w[1]), "{:?} {}", live.0, live.1.len());
    engine.shutdown();
    drop(engine);
    let restarted = Engine::start(config(300, 2), store.clone()).unwrap();
    let after = index(&restarted);
    assert!(after.0 .1 >= 2, "a start leaves them out: {:?}", after.0);
    assert_eq!((after.1, after.2), (live.1, live.2), "the same batches before and after the start");
    restarted.shutdown();
    let (recovered, full, checkpoint, _) = both_ways(&store).remove(0);
    assert!(checkpoint.is_some());
    assert_eq!(recovered, full, "shard 0: recovery == whole replay");
}

/// An engine whose shard 0 has escrows in more than `HISTORY_READS_PER_BATCH_MAX` + 2 chunks out
/// of memory: the store, the engine, one escrow of each cold chunk, and one of every chunk.
fn escrows_in_cold_chunks() -> (Arc<MemoryStore>, Engine, Vec<OrderId>, Vec<OrderId>) {
    use engine::shard::HISTORY_READS_PER_BATCH_MAX;
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::start(config(2, 2), store.clone()).unwrap();
    let chunks = HISTORY_READS_PER_BATCH_MAX + 8;
    // Escrows on shard 0, in submissions of 4,096: one chunk of orders each (about).
    let opens = (0..8).map(|owner| plain(Command::OpenAccount { owner: 100 + owner, currency: CNY, limits: Limits::NONE })).collect();
    let on_0: Vec<AccountId> = engine.execute(opens).unwrap().iter().map(|r| AccountId(r.id)).filter(|a| a.shard(2) == 0).collect();
    let (payer, payee) = (on_0[0], on_0[1]);
    assert!(engine.execute_one(plain(Command::Recharge { account: payer, currency: CNY, amount: 1_000_000_000, channel: 1 })).unwrap().is_ok());
    let escrow = || Command::Payment {
        payer,
        guarantee: true,
        currency: CNY,
        amount: 1,
        payees: [Leg { account: payee, amount: 1 }].into_iter().collect(),
        splits: Legs::new(),
    };
    let mut by_chunk: std::collections::BTreeMap<u64, OrderId> = std::collections::BTreeMap::new();
    for _ in 0..chunks + 3 {
        let replies = engine.execute((0..4096).map(|_| plain(escrow())).collect()).unwrap();
        for reply in replies {
            assert!(reply.is_ok());
            let id = OrderId(reply.id);
            by_chunk.entry(id.local_index(2) >> 12).or_insert(id);
        }
    }
    wait_for_cold_chunks(&engine, chunks + 1);
    let cold: Vec<OrderId> = engine
        .read_shard(0, {
            let candidates: Vec<OrderId> = by_chunk.values().copied().collect();
            move |state| candidates.into_iter().filter(|id| !state.orders.is_resident(id.local_index(2) as usize)).collect()
        })
        .unwrap();
    assert!(cold.len() > HISTORY_READS_PER_BATCH_MAX + 2, "{} orders in chunks out of memory", cold.len());
    (store, engine, cold, by_chunk.into_values().collect())
}

/// A batch reads back at most `HISTORY_READS_PER_BATCH_MAX` pieces of history for its client
/// commands: a request naming more old orders (each in a chunk out of memory) gets `overloaded`
/// for the rest, which are not applied or journaled, and go through when sent again. A platform
/// alone in its batch reads up to the whole bound, not only its share.
#[test]
fn a_batch_reads_back_a_bounded_amount_of_history_and_refuses_the_rest_as_overloaded() {
    let (store, engine, cold, by_chunk) = escrows_in_cold_chunks();
    let confirms: Vec<Envelope> = cold.iter().map(|order| plain(Command::Confirm { order: *order, releases: Legs::new() })).collect();
    // As the HTTP edge submits (`Engine::submit`: the caller sees 503 and tries again).
    let submit = |envelopes: Vec<Envelope>| {
        let (sender, receiver) = std::sync::mpsc::channel();
        engine.submit(
            envelopes,
            Box::new(move |result| {
                let _ = sender.send(result);
            }),
        );
        receiver.recv().unwrap().unwrap()
    };
    let replies = submit(confirms.clone());
    let overloaded: Vec<usize> = (0..replies.len()).filter(|i| replies[*i].code == engine::result::ResultCode::Overloaded).collect();
    let applied = replies.iter().filter(|r| r.is_ok()).count();
    assert!(applied > engine::shard::HISTORY_READS_PER_PLATFORM_MAX, "only {applied} applied: the share held a platform alone in its batch");
    // Each confirm reads its order's chunk and the order's income block: two pieces, or one
    // when the block was read already.
    assert!(!overloaded.is_empty() && overloaded.len() < cold.len(), "{} of {} refused", overloaded.len(), cold.len());
    assert!(replies.iter().enumerate().all(|(i, r)| overloaded.contains(&i) || r.is_ok()), "the others were applied");
    assert!(overloaded.windows(2).all(|w| w[1] == w[0] + 1) && *overloaded.last().unwrap() == replies.len() - 1, "the last ones are refused");
    assert_eq!(engine.counters()[0].history_reads_refused.load(std::sync::atomic::Ordering::Relaxed), overloaded.len() as u64);
    let again: Vec<Envelope> = overloaded.iter().map(|i| confirms[*i].clone()).collect();
    let second = submit(again);
    assert!(second.iter().all(|r| r.is_ok() || r.code == engine::result::ResultCode::Overloaded), "{second:?}");
    assert!(second.iter().any(|r| r.is_ok()), "sent again, they go through");
    // A blocking caller (the clearing actor, settlement, the CLI) acts on every outcome as
    // final: its commands are never refused, however much history they read back.
    let refused_before = engine.counters()[0].history_reads_refused.load(std::sync::atomic::Ordering::Relaxed);
    let cancels: Vec<Envelope> = by_chunk.iter().map(|order| plain(Command::Cancel { order: *order, amount: None })).collect();
    let cancelled = engine.execute(cancels).unwrap();
    assert!(cancelled.iter().all(|r| r.code != engine::result::ResultCode::Overloaded), "{cancelled:?}");
    assert_eq!(engine.counters()[0].history_reads_refused.load(std::sync::atomic::Ordering::Relaxed), refused_before);
    engine.shutdown();
    assert!(check_store(&*store, 2).unwrap().ok);
    // The refused commands are not in the journal: a whole replay is the live state.
    for (shard, (recovered, full, _, _)) in both_ways(&store).into_iter().enumerate() {
        assert_eq!(recovered, full, "shard {shard}");
    }
}

/// One platform's commands take at most `HISTORY_READS_PER_PLATFORM_MAX` of a batch's history
/// reads: another platform's commands in the same batch still read theirs and are applied (or
/// refused by the ledger), not answered `Overloaded`.
#[test]
fn one_platform_naming_old_orders_leaves_the_batchs_history_reads_to_the_others() {
    use engine::shard::{HISTORY_READS_PER_BATCH_MAX, HISTORY_READS_PER_PLATFORM_MAX};
    let (store, engine, cold, _) = escrows_in_cold_chunks();
    let confirm = |platform: u32, order: OrderId| Envelope { platform, out_order_no: None, command: Command::Confirm { order, releases: Legs::new() } };
    // Platform P names more old orders than the whole batch may read (a piece or two each),
    // then platform P + 1 names two, in the same submission (so in the same batch).
    let hostile = HISTORY_READS_PER_BATCH_MAX + 1;
    assert!(cold.len() >= hostile + 2, "{} orders in chunks out of memory", cold.len());
    let mut envelopes: Vec<Envelope> = cold[..hostile].iter().map(|order| confirm(P, *order)).collect();
    envelopes.extend(cold[hostile..hostile + 2].iter().map(|order| confirm(P + 1, *order)));
    let (sender, receiver) = std::sync::mpsc::channel();
    engine.submit(
        envelopes,
        Box::new(move |result| {
            let _ = sender.send(result);
        }),
    );
    let replies = receiver.recv().unwrap().unwrap();
    let overloaded = |replies: &[engine::ledger::types::Reply]| replies.iter().filter(|r| r.code == engine::result::ResultCode::Overloaded).count();
    // P's are read for up to its share, then in what the other left of the bound; the rest
    // are refused for now (more are named than the bound holds).
    let applied = replies[..hostile].iter().filter(|r| r.is_ok()).count();
    assert!(applied > HISTORY_READS_PER_PLATFORM_MAX && applied < hostile, "{applied} of P's applied: {replies:?}");
    assert_eq!(overloaded(&replies[..hostile]), hostile - applied);
    let refused = engine.counters()[0].history_reads_refused.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(refused, (hostile - applied) as u64);
    // The other platform's are not refused for want of reads (the ledger answers them: the
    // orders are P's).
    assert_eq!(overloaded(&replies[hostile..]), 0, "{:?}", &replies[hostile..]);
    engine.shutdown();
    assert!(check_store(&*store, 2).unwrap().ok);
    // The refused commands are not in the journal: a whole replay is the live state.
    for (shard, (recovered, full, _, _)) in both_ways(&store).into_iter().enumerate() {
        assert_eq!(recovered, full, "shard {shard}");
    }
}

/// Pushes batches until at least `at_least` chunks of shard 0's orders are out of memory.
fn wait_for_cold_chunks(engine: &Engine, at_least: usize) {
    let cold = |engine: &Engine| engine.read_shard(0, |state| state.orders.cold_chunks()).unwrap();
    for round in 0..3000u64 {
        if cold(engine) >= at_least {
            return;
        }
        engine.execute_one(plain(Command::OpenAccount { owner: 3_000_000 + round, currency: CNY, limits: Limits::NONE })).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("fewer than {at_least} chunks of orders left memory");
}

/// A blob of history that turns out damaged when a command needs it stops the shard as a
/// storage failure before the batch is applied (nothing acknowledged), and marks the blob; the
/// next start recovers without the checkpoints that use it (here: from the whole journal), the
/// command then succeeds, and the next checkpoints write the history again and drop the marks.
#[test]
fn a_damaged_history_blob_stops_the_shard_and_the_next_start_recovers_without_it() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::start(config(2, 2), store.clone()).unwrap();
    let (_, first_escrow) = escrow_history(&engine, 5);
    wait_for_cold_chunks(&engine, 2);
    for hash in blob_keys(&store, 0) {
        store.write(&[(&checkpoint::blob_key(0, &hash), b"not the blob")]).unwrap();
    }
    // A read that meets it (a gateway query) stops the shard as a batch would.
    let read = engine.read_shard(0, move |state| state.order(first_escrow).map(|o| o.status));
    assert!(read.is_err(), "{read:?}");
    let confirm = plain(Command::Confirm { order: first_escrow, releases: Legs::new() });
    let refused = engine.execute_one(confirm.clone());
    assert!(refused.is_err(), "{refused:?}");
    let failure = engine.counters()[0].failure();
    assert!(matches!(&failure, Some(engine::shard::ShardFailure::Storage(text)) if text.contains("storage fault")), "{failure:?}");
    assert!(!checkpoint::damaged(&*store, 0).unwrap().is_empty(), "the blob is marked");
    engine.shutdown();
    drop(engine);

    let restarted = Engine::start(config(2, 2), store.clone()).unwrap();
    let status = restarted.read_shard(0, move |state| state.order(first_escrow).map(|o| o.status)).unwrap();
    assert_eq!(status, Some(OrderStatus::Held), "recovered without the damaged blob; the refused confirm left nothing");
    assert!(restarted.execute_one(confirm).unwrap().is_ok());
    for round in 0..3000u64 {
        if checkpoint::damaged(&*store, 0).unwrap().is_empty() {
            break;
        }
        restarted.execute_one(plain(Command::OpenAccount { owner: 4_000_000 + round, currency: CNY, limits: Limits::NONE })).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(checkpoint::damaged(&*store, 0).unwrap().is_empty(), "rewritten or no longer named: the marks are gone");
    restarted.shutdown();
    assert!(check_store(&*store, 2).unwrap().ok);
    for (shard, (recovered, full, _, _)) in both_ways(&store).into_iter().enumerate() {
        assert_eq!(recovered, full, "shard {shard}");
    }
}

/// A blob that a replay after a lazily loaded checkpoint needs and cannot read back sends
/// recovery to a checkpoint without it (here: the whole journal), marking the blob, and nothing
/// acknowledged is lost.
#[test]
fn recovery_that_meets_a_damaged_blob_falls_back_without_it() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::start(config(2, 2), store.clone()).unwrap();
    let (_, first_escrow) = escrow_history(&engine, 5);
    wait_for_cold_chunks(&engine, 2);
    engine.shutdown();
    drop(engine);
    // Without checkpoints, a confirm of the first escrow (a cold chunk) is journal only.
    let quiet = config(0, 2);
    let engine = Engine::start(quiet.clone(), store.clone()).unwrap();
    let confirm = keyed("confirm-first", Command::Confirm { order: first_escrow, releases: Legs::new() });
    let id = engine.execute_one(confirm.clone()).unwrap();
    assert!(id.is_ok());
    engine.shutdown();
    drop(engine);
    for hash in blob_keys(&store, 0) {
        store.write(&[(&checkpoint::blob_key(0, &hash), b"not the blob")]).unwrap();
    }
    let restarted = Engine::start(quiet, store.clone()).unwrap();
    assert!(!checkpoint::damaged(&*store, 0).unwrap().is_empty(), "recovery marked the blob it could not read");
    let status = restarted.read_shard(0, move |state| state.order(first_escrow).map(|o| o.status)).unwrap();
    assert_eq!(status, Some(OrderStatus::Succeeded));
    assert_replayed(&restarted, &[(confirm, id.id)], "after the fall-back");
    restarted.shutdown();
    assert!(check_store(&*store, 2).unwrap().ok);
}

/// A store whose writes of keys under a prefix are slow: checkpoint parts (`m/p/`, 60 ms: a
/// disk that cannot keep up) or journal batches (`j`, 2 ms: a shard busy with every batch).
struct SlowWrites(MemoryStore, &'static [u8], Duration);

impl SlowWrites {
    fn checkpoints() -> SlowWrites {
        SlowWrites(MemoryStore::new(), b"m/p/", Duration::from_millis(60))
    }
    fn journal() -> SlowWrites {
        SlowWrites(MemoryStore::new(), b"j", Duration::from_millis(2))
    }
}

impl Store for SlowWrites {
    fn write(&self, puts: &[(&[u8], &[u8])]) -> Result<(), storage::StorageError> {
        if puts.iter().any(|(key, _)| key.starts_with(self.1)) {
            std::thread::sleep(self.2);
        }
        self.0.write(puts)
    }
    fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<(), storage::StorageError> {
        self.0.delete_range(start, end)
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, storage::StorageError> {
        self.0.get(key)
    }
    fn scan(&self, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<(), storage::StorageError> {
        self.0.scan(start, end, visit)
    }
    fn is_poisoned(&self) -> bool {
        self.0.is_poisoned()
    }
}

/// A shard that writes faster than its checkpoints can keep up holds new client requests once
/// twice the interval was written since the checkpoint in flight began, so the history it
/// holds in memory stays bounded; nothing is refused or lost, only slowed.
#[test]
fn a_shard_waits_for_a_checkpoint_that_cannot_keep_up() {
    waits_for_checkpoints(config(2, 2));
}

/// The same with checkpoints by orders alone (the server's default trigger besides time): an
/// interval of 2 orders, and each recharge here is one order in (about) one batch.
#[test]
fn a_shard_checkpointing_by_orders_waits_for_a_checkpoint_that_cannot_keep_up() {
    let mut by_orders = config(0, 2);
    by_orders.checkpoints.every_orders = 2;
    waits_for_checkpoints(by_orders);
}

fn waits_for_checkpoints(config: EngineConfig) {
    let store = Arc::new(SlowWrites::checkpoints());
    let engine = Arc::new(Engine::start(config, store.clone()).unwrap());
    let opens = (0..4).map(|owner| plain(Command::OpenAccount { owner, currency: CNY, limits: Limits::NONE })).collect();
    let accounts: Vec<AccountId> = engine.execute(opens).unwrap().iter().map(|r| AccountId(r.id)).filter(|a| a.shard(2) == 0).collect();
    let payer = accounts[0];
    assert!(engine.execute_one(plain(Command::Recharge { account: payer, currency: CNY, amount: 1_000_000, channel: 1 })).unwrap().is_ok());
    let counters = engine.counters()[0].clone();
    let lag = || {
        counters.last_sequence.load(std::sync::atomic::Ordering::SeqCst).saturating_sub(counters.checkpoint_sequence.load(std::sync::atomic::Ordering::SeqCst))
    };
    let senders: Vec<_> = (0..4)
        .map(|thread| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for round in 0..15 {
                    let key = format!("lag-{thread}-{round}");
                    let pay = Command::Recharge { account: payer, currency: CNY, amount: 1, channel: 1 };
                    assert!(engine.execute_one(keyed(&key, pay)).unwrap().is_ok());
                }
            })
        })
        .collect();
    let mut largest = 0;
    while senders.iter().any(|s| !s.is_finished()) {
        largest = largest.max(lag());
        std::thread::sleep(Duration::from_millis(2));
    }
    senders.into_iter().for_each(|s| s.join().unwrap());
    assert!(counters.checkpoint_lag_holds.load(std::sync::atomic::Ordering::SeqCst) > 0, "the shard waited for its checkpoints");
    assert!(counters.checkpoints.load(std::sync::atomic::Ordering::SeqCst) > 1, "its own trigger started checkpoints");
    // Past the last durable checkpoint: the batches until the one in flight began (at most twice
    // the interval, as it waited itself), then at most twice the interval since (an order is at
    // most a batch: one more for the batch that crosses it).
    assert!(largest <= 4 * 2 + 1, "batches past the last durable checkpoint: {largest}");
    engine.shutdown();
    assert!(check_store(&store.0, 2).unwrap().ok);
}

/// A checkpoint's thread gives the cores to its shard's batches while the shard works, and
/// still ends (the shard nears the next one and it stops giving way; the stop waits for it):
/// under requests that keep the shard busy every checkpoint is written, none is lost, and the
/// time given way is counted. Four clients at once keep requests queued whenever a checkpoint
/// starts (with one, a small checkpoint could run its few give-way points in the gap before the
/// next request arrived, and none gave way: 2 runs in 15).
#[test]
fn a_checkpoint_gives_way_to_its_shards_batches_and_still_ends() {
    let store = Arc::new(SlowWrites::journal());
    let engine = Engine::start(config(3, 2), store.clone()).unwrap();
    let opens = (0..4).map(|owner| plain(Command::OpenAccount { owner, currency: CNY, limits: Limits::NONE })).collect();
    let accounts: Vec<AccountId> = engine.execute(opens).unwrap().iter().map(|r| AccountId(r.id)).filter(|a| a.shard(2) == 0).collect();
    let payer = accounts[0];
    std::thread::scope(|scope| {
        for client in 0..4 {
            let engine = &engine;
            scope.spawn(move || {
                for round in 0..40 {
                    let pay = Command::Recharge { account: payer, currency: CNY, amount: 1, channel: 1 };
                    assert!(engine.execute_one(keyed(&format!("way-{client}-{round}"), pay)).unwrap().is_ok());
                }
            });
        }
    });
    let counters = engine.counters()[0].clone();
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    assert!(counters.checkpoints.load(relaxed) > 2, "checkpoints under load: {}", counters.checkpoints.load(relaxed));
    assert!(counters.checkpoint_gave_way_us_total.load(relaxed) > 0, "no checkpoint gave way to the shard's batches");
    engine.shutdown();
    assert!(!counters.working.load(relaxed));
    assert!(check_store(&store.0, 2).unwrap().ok);
    // Every recharge is in the state the last checkpoint and the journal give back.
    let restarted = Engine::start(config(3, 2), store.clone()).unwrap();
    let balance = restarted.read_shard(0, move |state| state.account(payer).map(|a| a.unsettled + a.settled)).unwrap();
    assert_eq!(balance, Some(160));
    restarted.shutdown();
}

/// A store that fails to answer reads of history blobs while `failing` is set (an I/O error, not
/// damage), and fails writes of checkpoint manifests while `failing_manifest_writes` is.
struct FaultyStore {
    inner: MemoryStore,
    failing: std::sync::atomic::AtomicBool,
    failing_manifest_writes: std::sync::atomic::AtomicBool,
    /// Keys whose reads fail as RocksDB's checksums fail on damage (`StorageError::Corrupt`).
    corrupt: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl FaultyStore {
    fn new() -> FaultyStore {
        FaultyStore { inner: MemoryStore::new(), failing: Default::default(), failing_manifest_writes: Default::default(), corrupt: Default::default() }
    }
}

impl Store for FaultyStore {
    fn write(&self, puts: &[(&[u8], &[u8])]) -> Result<(), storage::StorageError> {
        if self.failing_manifest_writes.load(std::sync::atomic::Ordering::SeqCst) && puts.iter().any(|(key, _)| key.starts_with(b"m/c/")) {
            return Err(storage::StorageError::Io("the manifest write failed".into()));
        }
        self.inner.write(puts)
    }
    fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<(), storage::StorageError> {
        self.inner.delete_range(start, end)
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, storage::StorageError> {
        if key.starts_with(b"m/b/") && self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(storage::StorageError::Io("the disk did not answer".into()));
        }
        if self.corrupt.lock().unwrap().iter().any(|corrupt| corrupt.as_slice() == key) {
            return Err(storage::StorageError::Corrupt("Corruption: block checksum mismatch".into()));
        }
        self.inner.get(key)
    }
    /// A scan reads values too (RocksDB's iterators load a blob file's value for each entry),
    /// so one over a damaged key fails as its read does.
    fn scan(&self, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<(), storage::StorageError> {
        let corrupt = self.corrupt.lock().unwrap().clone();
        let mut damaged = false;
        self.inner.scan(start, end, &mut |key, value| {
            if corrupt.iter().any(|corrupt| corrupt.as_slice() == key) {
                damaged = true;
                return false;
            }
            visit(key, value)
        })?;
        if damaged {
            return Err(storage::StorageError::Corrupt("Corruption: block checksum mismatch".into()));
        }
        Ok(())
    }
    fn is_poisoned(&self) -> bool {
        self.inner.is_poisoned()
    }
}

/// A store that fails to answer a history read stops the shard as a storage failure, but marks
/// nothing: the blob is sound, and the next start uses the checkpoints as they are.
#[test]
fn a_history_read_the_store_fails_to_answer_stops_the_shard_without_marking_the_blob() {
    let store = Arc::new(FaultyStore::new());
    let engine = Engine::start(config(2, 2), store.clone()).unwrap();
    let (_, first_escrow) = escrow_history(&engine, 5);
    wait_for_cold_chunks(&engine, 2);
    store.failing.store(true, std::sync::atomic::Ordering::SeqCst);
    // A read that meets it (a gateway query) fails alone: the blob is sound, the shard goes on.
    let read = engine.read_shard(0, move |state| state.order(first_escrow).map(|o| o.status));
    assert!(matches!(&read, Err(engine::EngineError::Storage(text)) if text.contains("the disk did not answer")), "{read:?}");
    assert!(engine.counters()[0].failure().is_none(), "a read does not stop the shard");
    assert!(engine.execute_one(plain(Command::OpenAccount { owner: 9_999_999, currency: CNY, limits: Limits::NONE })).unwrap().is_ok());
    let confirm = plain(Command::Confirm { order: first_escrow, releases: Legs::new() });
    assert!(engine.execute_one(confirm.clone()).is_err());
    let failure = engine.counters()[0].failure();
    assert!(matches!(&failure, Some(engine::shard::ShardFailure::Storage(text)) if text.contains("the disk did not answer")), "{failure:?}");
    assert!(checkpoint::damaged(&store.inner, 0).unwrap().is_empty(), "nothing marked: the blob is sound");
    engine.shutdown();
    drop(engine);
    store.failing.store(false, std::sync::atomic::Ordering::SeqCst);
    let restarted = Engine::start(config(2, 2), store.clone()).unwrap();
    let from = restarted.counters()[0].checkpoint_sequence.load(std::sync::atomic::Ordering::SeqCst);
    assert!(from > 0, "the start used a checkpoint");
    assert!(restarted.execute_one(confirm).unwrap().is_ok());
    restarted.shutdown();
    assert!(check_store(&store.inner, 2).unwrap().ok);
}

/// Damage the store's own checksums find (RocksDB's `Corruption`, since session 61 a
/// `StorageError::Corrupt`) is taken as damage: a newest manifest that cannot be read, by a
/// read or by a scan over it, sends the start to the checkpoint before it (it stopped the
/// start: the checkpoints are listed from keys of their own since), and a history blob that
/// cannot be read is marked damaged and recovered without (it stopped the shard at every
/// start).
#[test]
fn damage_the_store_finds_falls_back_as_damage_it_reads_does() {
    let store = Arc::new(FaultyStore::new());
    let engine = Engine::start(config(2, 3), store.clone()).unwrap();
    let (_, first_escrow) = escrow_history(&engine, 5);
    wait_for_cold_chunks(&engine, 2);
    engine.shutdown();
    drop(engine);
    let newest = *checkpoint::list(&store.inner, 0).unwrap().last().unwrap();
    store.corrupt.lock().unwrap().push(manifest_key(0, newest).to_vec());
    let recovered = recover_shard(&*store, 0).unwrap();
    assert!(recovered.checkpoint.is_some_and(|used| used < newest), "fell back: {:?} of {newest}", recovered.checkpoint);
    assert!(recovered.skipped.iter().any(|why| why.contains("cannot be read") && why.contains(&format!("at batch {newest}"))), "{:?}", recovered.skipped);
    // Every history blob of shard 0 unreadable as damage while a server runs from the newest
    // checkpoint: a read that needs one stops the shard and marks it, and the next start
    // recovers without them, losing nothing.
    store.corrupt.lock().unwrap().clear();
    let engine = Engine::start(config(2, 3), store.clone()).unwrap();
    let blobs: Vec<Vec<u8>> = blob_keys(&store.inner, 0).iter().map(|hash| checkpoint::blob_key(0, hash).to_vec()).collect();
    assert!(!blobs.is_empty());
    store.corrupt.lock().unwrap().extend(blobs);
    let read = engine.read_shard(0, move |state| state.order(first_escrow).map(|o| o.status));
    assert!(read.is_err(), "{read:?}");
    let confirm = plain(Command::Confirm { order: first_escrow, releases: Legs::new() });
    assert!(engine.execute_one(confirm.clone()).is_err(), "the shard stopped");
    assert!(!checkpoint::damaged(&store.inner, 0).unwrap().is_empty(), "the blob is marked damaged");
    engine.shutdown();
    drop(engine);
    let restarted = Engine::start(config(2, 3), store.clone()).unwrap();
    let status = restarted.read_shard(0, move |state| state.order(first_escrow).map(|o| o.status)).unwrap();
    assert_eq!(status, Some(OrderStatus::Held));
    assert!(restarted.execute_one(confirm).unwrap().is_ok());
    restarted.shutdown();
    assert!(check_store(&store.inner, 2).unwrap().ok);
}

/// Pruning counts only the checkpoints a shard knows usable: after a start that skipped a
/// damaged newest checkpoint and recovered from the one before, the next checkpoint keeps that
/// one (before session 61 it kept the damaged one and deleted the only checkpoint recovery had
/// used), and it stays the fallback when the new one is damaged too.
#[test]
fn pruning_keeps_the_checkpoint_recovery_used_over_a_damaged_newer_one() {
    let stops = EngineConfig { checkpoints: CheckpointPolicy { kept: 2, ..at_stops().checkpoints }, ..at_stops() };
    let store = Arc::new(MemoryStore::new());
    for (round, tag) in ["a", "b"].into_iter().enumerate() {
        let engine = Engine::start(stops.clone(), store.clone()).unwrap();
        workload(&engine, tag, 4 + round);
        engine.shutdown();
    }
    let [used, damaged] = checkpoint::list(&*store, 0).unwrap()[..] else { panic!("two checkpoints kept") };
    let key = part_key(0, damaged, 0);
    let mut part = store.get(&key).unwrap().unwrap();
    let middle = part.len() / 2;
    part[middle] ^= 0x40;
    store.write(&[(&key, &part)]).unwrap();
    let engine = Engine::start(stops.clone(), store.clone()).unwrap();
    assert_eq!(engine.counters()[0].checkpoint_sequence.load(std::sync::atomic::Ordering::SeqCst), used, "recovered from the older one");
    workload(&engine, "c", 3);
    engine.shutdown();
    let sequences = checkpoint::list(&*store, 0).unwrap();
    assert!(sequences.contains(&used), "the checkpoint recovery used is kept: {sequences:?}");
    let newest = *sequences.last().unwrap();
    assert!(newest > damaged);
    // The new one damaged too: recovery falls back to the one it used before.
    let key = part_key(0, newest, 0);
    let mut part = store.get(&key).unwrap().unwrap();
    let middle = part.len() / 2;
    part[middle] ^= 0x40;
    store.write(&[(&key, &part)]).unwrap();
    let recovered = recover_shard(&*store, 0).unwrap();
    assert_eq!(recovered.checkpoint, Some(used), "{:?}", recovered.skipped);
    assert_eq!(recovered.skipped.len(), 2, "{:?}", recovered.skipped);
}

/// The checkpoint fixture of the current format: a whole store (journal, checkpoints with blobs
/// of history, cold rows) that a build of this format wrote. Written again with
/// `CLEARING_WRITE_CHECKPOINT_FIXTURE=1` when `CHECKPOINT_FORMAT_VERSION` is bumped (the old
/// fixture stays, under its own version's name).
fn fixture_path(version: u8) -> std::path::PathBuf {
    // At run time first (cargo and nextest set it): a test binary built from another clone of
    // the same sources (a shared build cache) reads this clone's files.
    let root = std::env::var_os("CARGO_MANIFEST_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    root.join(format!("tests/fixtures/checkpoint-format-{version}.store.zst"))
}

/// Every key and value of `store`: each as its length (4 bytes, little-endian) and its bytes.
fn dump(store: &MemoryStore) -> Vec<u8> {
    let mut bytes = Vec::new();
    store
        .scan(&[], &[0xff; 64], &mut |key, value| {
            for field in [key, value] {
                bytes.extend_from_slice(&(field.len() as u32).to_le_bytes());
                bytes.extend_from_slice(field);
            }
            true
        })
        .unwrap();
    bytes
}

/// The store of the fixture of checkpoint format `version`, if there is one.
fn fixture_store(version: u8) -> Option<MemoryStore> {
    fixture_store_at(&fixture_path(version))
}

/// The store of the fixture at `path`, if there is one.
fn fixture_store_at(path: &std::path::Path) -> Option<MemoryStore> {
    let compressed = std::fs::read(path).ok()?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut ruzstd::decoding::StreamingDecoder::new(&compressed[..]).unwrap(), &mut bytes).unwrap();
    Some(undump(&bytes))
}

/// The store `dump` wrote.
fn undump(mut bytes: &[u8]) -> MemoryStore {
    let store = MemoryStore::new();
    let take = |bytes: &mut &[u8]| -> Vec<u8> {
        let (length, rest) = bytes.split_at(4);
        let length = u32::from_le_bytes(length.try_into().unwrap()) as usize;
        let (field, rest) = rest.split_at(length);
        *bytes = rest;
        field.to_vec()
    };
    while !bytes.is_empty() {
        let (key, value) = (take(&mut bytes), take(&mut bytes));
        store.write(&[(&key, &value)]).unwrap();
    }
    store
}

/// A store as an older build left it is what an upgrade starts from: each checkpoint format this
/// build reads has a fixture (a workload with escrows, refunds, cross-shard credits, unsettled
/// lots and a full chunk of history out of memory as blobs, checkpointed at a graceful stop). This
/// build must start from those checkpoints, not fall back to replaying the whole journal (a
/// checkpoint it decodes to other bytes than were written is unusable: after an upgrade, a
/// start of minutes), and what it loads must equal a whole replay of the fixture's journal. For
/// the current format, writing the loaded state again gives the same blobs (chunks of orders,
/// changes, income: the parts differ in the pieces' ids, which a load gives anew): a change of the
/// encoding without a new format version fails here.
#[test]
fn checkpoints_an_earlier_build_wrote_load_as_this_build_replays() {
    let current = checkpoint::CHECKPOINT_FORMAT_VERSION;
    if std::env::var_os("CLEARING_WRITE_CHECKPOINT_FIXTURE").is_some() {
        let store = Arc::new(MemoryStore::new());
        let engine = Engine::start(at_stops(), store.clone()).unwrap();
        let (accounts, acked) = workload(&engine, "f", 30);
        assert!(acked.len() > 60);
        // Settlement rows, and where each day's are (format 6), before the lots of the payments below.
        let settle = Envelope { platform: 0, out_order_no: None, command: Command::Settle { through_day: 1_000_000, rule: None } };
        let settled = engine.broadcast(settle).unwrap();
        assert!(settled.iter().all(Reply::is_ok) && settled.iter().map(|r| r.id).sum::<u64>() > 0, "{settled:?}");
        // More than a chunk of orders (4,096) on shard 0: the full one leaves memory as blobs.
        let on_0: Vec<AccountId> = accounts.iter().copied().filter(|a| a.shard(2) == 0).collect();
        let pay = || plain(cent(on_0[0], on_0[1]));
        for _ in 0..2 {
            assert!(engine.execute((0..2100).map(|_| pay()).collect()).unwrap().iter().all(|r| r.is_ok()));
        }
        engine.wait_quiescent(Duration::from_secs(10)).unwrap();
        engine.shutdown();
        drop(engine);
        let compressed = ruzstd::encoding::compress_to_vec(&dump(&store)[..], ruzstd::encoding::CompressionLevel::Fastest);
        std::fs::create_dir_all(fixture_path(current).parent().unwrap()).unwrap();
        std::fs::write(fixture_path(current), compressed).unwrap();
    }
    let mut checked = 0;
    // Each format's fixture, and a second of format 5 with settlement rows (written by that
    // format's build with the settlement the writer above now runs): loading it rebuilds where
    // each day's rows are (`DayRuns`, format 6), which must equal what the replay derives.
    let fixtures =
        (1..=current).map(|version| (version, fixture_path(version))).chain([(5, fixture_path(5).with_file_name("checkpoint-format-5-settled.store.zst"))]);
    for (version, path) in fixtures {
        let Some(store) = fixture_store_at(&path) else { continue };
        let settled_fixture = version >= 6 || path.to_string_lossy().contains("-settled");
        let mut settled_runs = 0;
        for shard in 0..2u16 {
            let newest = *checkpoint::list(&store, shard).unwrap().last().expect("the fixture has a checkpoint of each shard");
            let manifest_bytes = store.get(&manifest_key(shard, newest)).unwrap().unwrap();
            assert_eq!(manifest_bytes[0], version, "fixture {version}: shard {shard}'s manifest is of another format");
            let recovered = recover_shard(&store, shard).unwrap();
            assert_eq!((recovered.checkpoint, &recovered.skipped), (Some(newest), &Vec::new()), "fixture {version}: shard {shard} starts from its checkpoint");
            let (full, sequence, _) = replay_journal(&store, shard).unwrap();
            assert_eq!(recovered.head.sequence, sequence, "fixture {version}: the checkpoint is at the journal's end");
            let state = &recovered.state;
            assert_eq!(
                engine::cold::logical_digest(&store, state, sequence).unwrap(),
                engine::cold::logical_digest(&store, &full, sequence).unwrap(),
                "fixture {version}: shard {shard}'s checkpoint == a whole replay of its journal"
            );
            let (_, manifest) = checkpoint::load(&store, shard, newest).unwrap();
            settled_runs += state.settled_runs.len();
            if shard == 0 {
                // What the fixture covers, so that a change of any of it is caught here.
                assert!(!manifest.blobs.is_empty(), "fixture {version}: history out of memory");
                assert!(state.lots.iter().count() >= 1 && state.income.iter().count() >= 1, "fixture {version}: unsettled income");
                assert!(state.orders.iter().any(|order| order.status == OrderStatus::Held), "fixture {version}: open escrows");
                if version >= 7 {
                    let unsettled_part = |order: &Order| matches!(order.detail, OrderDetail::Payment { from_unsettled, .. } if from_unsettled > 0);
                    assert!(state.orders.iter().any(unsettled_part), "fixture {version}: payments with an unsettled part to return");
                }
            }
            if version == current {
                // The engine's encoder (`codec`) writes the state as bincode does, every field of it.
                let mut ours = Vec::new();
                engine::codec::encode_into(state, &mut ours).unwrap();
                use bincode::Options;
                let bincode = bincode::DefaultOptions::new().with_varint_encoding().with_little_endian().serialize(state).unwrap();
                assert!(ours == bincode, "shard {shard}: codec::encode_into is not bincode ({} against {} bytes)", ours.len(), bincode.len());
                // And streamed (`codec::encode_to`, the parts' way) with pieces as the parts lay
                // them out (here each inline: no blob is named to the layout).
                let pieces = || engine::ledger::growth::Layout::PiecesOut(Default::default());
                let (streamed, _) = engine::ledger::growth::with_layout_at(pieces(), engine::checkpoint::CHECKPOINT_FORMAT_VERSION, || {
                    let mut joined = Vec::new();
                    engine::codec::encode_to(state, &mut |slice| {
                        joined.extend_from_slice(slice);
                        Ok(())
                    })
                    .unwrap();
                    joined
                });
                let (expected, _) = engine::ledger::growth::with_layout_at(pieces(), engine::checkpoint::CHECKPOINT_FORMAT_VERSION, || {
                    bincode::DefaultOptions::new().with_varint_encoding().with_little_endian().serialize(state).unwrap()
                });
                assert!(
                    streamed == expected,
                    "shard {shard}: codec::encode_to is not bincode with pieces ({} against {} bytes)",
                    streamed.len(),
                    expected.len()
                );
                let written = checkpoint::write(
                    &MemoryStore::new(),
                    state,
                    engine::journal::ChainHead { sequence: manifest.sequence, hash: manifest.chain_hash },
                    manifest.timestamp,
                    1,
                    checkpoint::BlobCache::default(),
                    Default::default(),
                )
                .unwrap();
                assert!(
                    written.manifest.blobs == manifest.blobs,
                    "shard {shard}: this build encodes the fixture's chunks of history (format {current}) to other bytes than the build \
                     that wrote it. If the change is deliberate, bump CHECKPOINT_FORMAT_VERSION (engine/src/checkpoint.rs), keep this \
                     fixture (its format must still load) and write the new one with CLEARING_WRITE_CHECKPOINT_FIXTURE=1"
                );
            }
        }
        assert!(!settled_fixture || settled_runs > 0, "fixture {}: settlement rows and where each day's are", path.display());
        checked += 1;
    }
    assert!(checked >= 1 && fixture_path(current).exists(), "no fixture of the current checkpoint format {current}");
}

/// A checkpoint whose runs of settlement rows (`DayRuns`, format 6) cannot describe its rows
/// (hashes intact: what a bug in a build would write) is unusable: statements would leave rows
/// out. Recovery skips it, naming why, and ends with the state a whole replay gives.
#[test]
fn a_checkpoint_whose_settlement_runs_do_not_describe_its_rows_is_skipped() {
    let store = fixture_store(checkpoint::CHECKPOINT_FORMAT_VERSION).expect("the fixture of the current format");
    let shard = (0..2u16)
        .find(|shard| {
            let newest = *checkpoint::list(&store, *shard).unwrap().last().unwrap();
            !checkpoint::load(&store, *shard, newest).unwrap().0.settled.is_empty()
        })
        .expect("the fixture has settlement rows");
    let newest = *checkpoint::list(&store, shard).unwrap().last().unwrap();
    let (mut state, manifest) = checkpoint::load(&store, shard, newest).unwrap();
    state.settled_runs = engine::ledger::growth::DayRuns::default();
    let head = engine::journal::ChainHead { sequence: manifest.sequence, hash: manifest.chain_hash };
    checkpoint::write(&store, &state, head, manifest.timestamp, 1, checkpoint::BlobCache::default(), Default::default()).unwrap();
    let recovered = recover_shard(&store, shard).unwrap();
    assert_eq!(recovered.checkpoint, None, "{:?}", recovered.skipped);
    assert!(recovered.skipped.iter().any(|why| why.contains("its settled rows' runs: no runs for")), "{:?}", recovered.skipped);
    let (full, _, _) = replay_journal(&store, shard).unwrap();
    assert_eq!(recovered.state.digest(), full.digest());
}

/// The fixture's newest checkpoint of shard 0 written again with the lots of its first account
/// holding unsettled income changed by `edit` (hashes intact: what a bug in a build would
/// write): recovery must not use it, and must end with the state a whole replay gives. Gives
/// that account and why recovery skipped checkpoints.
fn recover_with_lots_edited(edit: impl FnOnce(&mut Lots)) -> (AccountId, Vec<String>) {
    let store = fixture_store(checkpoint::CHECKPOINT_FORMAT_VERSION).expect("the fixture of the current format");
    let shard = 0;
    let newest = *checkpoint::list(&store, shard).unwrap().last().unwrap();
    let (mut state, manifest) = checkpoint::load(&store, shard, newest).unwrap();
    let account = state.accounts.iter().find(|account| account.unsettled > 0).expect("the fixture has unsettled income").id;
    let index = account.local_index(state.shard_count) as usize;
    edit(state.lots.at_mut(index));
    let head = engine::journal::ChainHead { sequence: manifest.sequence, hash: manifest.chain_hash };
    checkpoint::write(&store, &state, head, manifest.timestamp, 1, checkpoint::BlobCache::default(), Default::default()).unwrap();
    let recovered = recover_shard(&store, shard).unwrap();
    assert_eq!(recovered.checkpoint, None, "{:?}", recovered.skipped);
    let (full, sequence, _) = replay_journal(&store, shard).unwrap();
    assert_eq!(recovered.head.sequence, sequence);
    assert_eq!(recovered.state.digest(), full.digest(), "the journal gives the state the checkpoint should have held");
    (account, recovered.skipped)
}

/// A checkpoint holding a lot of zero or less is unusable even where each account's lots still
/// sum to its unsettled balance (a lot's surplus hiding another's shortfall): a shard drops the
/// lots it empties and credits only positive amounts. Recovery names it and takes the journal.
#[test]
fn a_checkpoint_with_a_lot_of_zero_or_less_is_skipped_though_the_sums_agree() {
    for (name, shortfall) in [("zero", 0), ("negative", -7)] {
        let mut day = 0;
        let (account, skipped) = recover_with_lots_edited(|lots| {
            lots[0].amount -= shortfall;
            day = lots[0].day + 1;
            lots.push(Lot { day, credits: 1, amount: shortfall });
        });
        let named = format!("account {} has a lot of {shortfall} for day {day}", account.0);
        assert!(skipped.iter().any(|why| why.contains(&named)), "{name}: {skipped:?}");
    }
}

/// A checkpoint whose lots disagree with the unsettled balances is unusable: recovery names it
/// and takes the journal instead, and ends with the state a whole replay gives.
#[test]
fn a_checkpoint_whose_lots_disagree_with_the_unsettled_balances_is_skipped() {
    let (account, skipped) = recover_with_lots_edited(|lots| lots[0].amount += 1);
    assert!(skipped.iter().any(|why| why.contains(&format!("account {}'s lots sum to", account.0)) && why.contains("unsettled balance")), "{skipped:?}");
}

/// A store whose checkpoint manifests wait at a gate until it opens, then fail while `fail` is
/// set: a checkpoint held half-way, for as long as a test needs.
struct GatedManifests {
    inner: MemoryStore,
    open: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
    fail: std::sync::atomic::AtomicBool,
}

impl GatedManifests {
    fn set_open(&self, open: bool) {
        *self.open.lock().unwrap() = open;
        self.opened.notify_all();
    }
}

impl Store for GatedManifests {
    fn write(&self, puts: &[(&[u8], &[u8])]) -> Result<(), storage::StorageError> {
        if puts.iter().any(|(key, _)| key.starts_with(b"m/c/")) {
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(storage::StorageError::Io("the manifest write failed".into()));
            }
        }
        self.inner.write(puts)
    }
    fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<(), storage::StorageError> {
        self.inner.delete_range(start, end)
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, storage::StorageError> {
        self.inner.get(key)
    }
    fn scan(&self, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<(), storage::StorageError> {
        self.inner.scan(start, end, visit)
    }
    fn is_poisoned(&self) -> bool {
        self.inner.is_poisoned()
    }
}

/// Polls `condition` every millisecond for up to 10 s; whether it came true.
fn within_10s(condition: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    condition()
}

/// `checkpoint_in_flight` (what `clearing bench` splits latencies by) is true while a checkpoint
/// is under way, however long its writes take, and cleared once the shard has collected it,
/// whether it was written or failed.
#[test]
fn the_in_flight_flag_covers_a_checkpoint_until_it_is_collected_written_or_failed() {
    use std::sync::atomic::Ordering::SeqCst;
    let store = Arc::new(GatedManifests { inner: MemoryStore::new(), open: std::sync::Mutex::new(true), opened: Default::default(), fail: Default::default() });
    // Opened whatever happens, so that a failing assertion cannot leave a checkpoint waiting.
    struct OpenOnDrop(Arc<GatedManifests>);
    impl Drop for OpenOnDrop {
        fn drop(&mut self) {
            self.0.set_open(true);
        }
    }
    let _open_at_the_end = OpenOnDrop(store.clone());
    let engine = Engine::start(config(1, 2), store.clone()).unwrap();
    let opens = (0..4).map(|owner| plain(Command::OpenAccount { owner, currency: CNY, limits: Limits::NONE })).collect();
    let account = engine.execute(opens).unwrap().iter().map(|r| AccountId(r.id)).find(|a| a.shard(2) == 0).expect("an account of shard 0");
    let counters = engine.counters()[0].clone();
    let in_flight = || counters.checkpoint_in_flight();
    assert!(within_10s(|| !in_flight()), "the checkpoints of the opening batches are collected");
    let recharge = || plain(Command::Recharge { account, currency: CNY, amount: 100, channel: 1 });

    for fail in [false, true] {
        let written_before = counters.checkpoints.load(SeqCst);
        let epoch_before = counters.checkpoint_epoch.load(SeqCst);
        store.set_open(false);
        store.fail.store(fail, SeqCst);
        assert!(engine.execute_one(recharge()).unwrap().is_ok());
        assert!(within_10s(in_flight), "set once the batch's checkpoint began (fail: {fail})");
        std::thread::sleep(Duration::from_millis(50));
        assert!(in_flight(), "still set while its manifest waits (fail: {fail})");
        store.set_open(true);
        assert!(within_10s(|| !in_flight()), "cleared once collected (fail: {fail})");
        // Each start and each end counted: a reader sees a checkpoint it missed in between.
        assert!(counters.checkpoint_epoch.load(SeqCst) >= epoch_before + 2, "fail: {fail}");
        // Written (a later batch may have started and written another), or none while failing.
        let written = counters.checkpoints.load(SeqCst) - written_before;
        assert!(if fail { written == 0 } else { written >= 1 }, "written: {written} (fail: {fail})");
    }
    store.fail.store(false, SeqCst);
    engine.shutdown();
    assert!(!in_flight(), "not set after a stop");
}

/// A platform's read of one order is checked against its own orders before the order's piece
/// is read back: another platform's old order, out of memory, stays out of memory and answers
/// nothing (helper 102, session 63: it was read back first, a piece of about 650 KB decoded on
/// the shard's thread for each of a bulk request's operations).
#[test]
fn another_platforms_old_order_is_not_read_back_for_a_platform_that_does_not_own_it() {
    let engine = Engine::start(config(2, 2), Arc::new(MemoryStore::new())).unwrap();
    let plain = |platform: u32, command| Envelope { platform, out_order_no: None, command };
    let opens = (0..8).map(|owner| plain(P, Command::OpenAccount { owner, currency: CNY, limits: Limits::NONE })).collect();
    let on_0: Vec<AccountId> = engine.execute(opens).unwrap().iter().map(|r| AccountId(r.id)).filter(|a| a.shard(2) == 0).collect();
    let (payer, payee) = (on_0[0], on_0[1]);
    assert!(engine.execute_one(plain(P, Command::Recharge { account: payer, currency: CNY, amount: 1_000_000_000, channel: 9 })).unwrap().is_ok());
    let legs: Legs = [Leg { account: payee, amount: 1 }].into_iter().collect();
    let mut first = None;
    for _ in 0..6 {
        let payments = (0..4096)
            .map(|_| plain(P, Command::Payment { payer, guarantee: false, currency: CNY, amount: 1, payees: legs.clone(), splits: Legs::new() }))
            .collect();
        for reply in engine.execute(payments).unwrap() {
            first.get_or_insert(OrderId(reply.id));
        }
    }
    let old = first.unwrap();
    let resident = |engine: &Engine| engine.read_shard(0, move |state| state.orders.is_resident(old.local_index(2) as usize)).unwrap();
    for round in 0..3000u64 {
        if !resident(&engine) {
            break;
        }
        engine.execute_one(plain(P, Command::OpenAccount { owner: 1_000 + round, currency: CNY, limits: Limits::NONE })).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!resident(&engine), "the old order's piece is out of memory");
    // Another platform (with orders of its own, and one without any) gets nothing, and the
    // piece stays out of memory.
    engine.execute_one(plain(P + 1, Command::OpenAccount { owner: 1, currency: CNY, limits: Limits::NONE })).unwrap();
    for other in [P + 1, P + 2] {
        assert!(engine.read_shard(0, move |state| state.owned_order(other, old).is_none()).unwrap());
        assert!(!resident(&engine), "platform {other}'s read brought another's old order back");
    }
    // Its own platform and the system read it (back).
    assert!(engine.read_shard(0, move |state| state.owned_order(P, old).map(|o| o.id) == Some(old)).unwrap());
    assert!(engine.read_shard(0, move |state| state.owned_order(0, old).map(|o| o.platform) == Some(P)).unwrap());
    // Ids of another shard or past the end name nothing.
    let elsewhere = OrderId::compose(1, 0, 2);
    let past = OrderId::compose(0, 1 << 40, 2);
    assert!(engine.read_shard(0, move |state| state.owned_order(P, elsewhere).is_none() && state.owned_order(P, past).is_none()).unwrap());
    engine.shutdown();
}

/// Regression (helper 108): a checkpoint whose pruning failed after its manifest was durable
/// (a damaged older manifest the store reads as `Corrupt`, left by a fall-back) left the cold
/// rows it wrote without their filter bits, and a graceful stop saved that filter as complete:
/// at the next start the order numbers of those rows were taken again as new orders (money
/// moved twice). Now the filter learns a checkpoint's rows right after they are written, a
/// damaged manifest prunes as an unusable one, and a filter is not saved after a shard's
/// checkpoint failed.
#[test]
fn order_numbers_stay_taken_after_a_checkpoint_that_met_a_damaged_older_manifest() {
    let stops = EngineConfig { checkpoints: CheckpointPolicy { kept: 2, ..at_stops().checkpoints }, ..at_stops() };
    let store = Arc::new(FaultyStore::new());
    let mut acked = Vec::new();
    for tag in ["a", "b"] {
        let engine = Engine::start(stops.clone(), store.clone()).unwrap();
        acked.extend(workload(&engine, tag, 4).1);
        engine.shutdown();
    }
    let damaged = *checkpoint::list(&store.inner, 0).unwrap().last().unwrap();
    store.corrupt.lock().unwrap().push(manifest_key(0, damaged).to_vec());
    // A start falls back past the damaged manifest; its stop's checkpoint keeps the one it used.
    // The next run's stop prunes both older ones, the damaged manifest among them.
    for tag in ["c", "d"] {
        let engine = Engine::start(stops.clone(), store.clone()).unwrap();
        acked.extend(workload(&engine, tag, 4).1);
        engine.shutdown();
        assert!(engine.counters().iter().all(|c| !c.checkpoint_failed.load(std::sync::atomic::Ordering::SeqCst)), "run {tag}: the stop's checkpoint succeeded");
    }
    assert!(!checkpoint::list(&store.inner, 0).unwrap().contains(&damaged), "the damaged checkpoint was pruned");
    let restarted = Engine::start(stops.clone(), store.clone()).unwrap();
    assert_replayed(&restarted, &acked, "after the stop whose checkpoint pruned a damaged manifest");
    restarted.shutdown();
    assert!(check_store(&store.inner, 2).unwrap().ok);
}

/// Regression (helper 111): a failed checkpoint takes the lists of blobs the shard held in
/// memory with it, so the next checkpoint's pruning tops its kept ones up from the store. It
/// took the newest others whatever they were: a damaged newer manifest was kept and the
/// checkpoint recovery had used was pruned. Now only a manifest that reads is taken.
#[test]
fn after_a_failed_checkpoint_pruning_keeps_the_checkpoint_recovery_used() {
    let store = Arc::new(FaultyStore::new());
    let engine = Engine::start(config(2, 2), store.clone()).unwrap();
    workload(&engine, "a", 4);
    wait_for_checkpoints(&engine, &store.inner, 2);
    engine.shutdown();
    drop(engine);
    let [used, damaged] = checkpoint::list(&store.inner, 0).unwrap()[..] else { panic!("two checkpoints kept") };
    store.corrupt.lock().unwrap().push(manifest_key(0, damaged).to_vec());
    let engine = Engine::start(config(2, 2), store.clone()).unwrap();
    assert_eq!(engine.counters()[0].checkpoint_sequence.load(std::sync::atomic::Ordering::SeqCst), used, "recovered from the older one");
    // One checkpoint of shard 0 fails (its manifest's write), then one succeeds.
    store.failing_manifest_writes.store(true, std::sync::atomic::Ordering::SeqCst);
    let failed = |engine: &Engine| engine.counters()[0].checkpoint_failed.load(std::sync::atomic::Ordering::SeqCst);
    for round in 0..3000u64 {
        if failed(&engine) {
            break;
        }
        let open =
            Envelope { platform: P, out_order_no: None, command: Command::OpenAccount { owner: 2_000_000 + round, currency: CNY, limits: Limits::NONE } };
        let _ = engine.execute_one(open);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(failed(&engine), "a checkpoint failed");
    store.failing_manifest_writes.store(false, std::sync::atomic::Ordering::SeqCst);
    for round in 0..3000u64 {
        if !failed(&engine) {
            break;
        }
        let open =
            Envelope { platform: P, out_order_no: None, command: Command::OpenAccount { owner: 3_000_000 + round, currency: CNY, limits: Limits::NONE } };
        let _ = engine.execute_one(open);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!failed(&engine), "a checkpoint succeeded after");
    let listed = checkpoint::list(&store.inner, 0).unwrap();
    assert!(listed.contains(&used), "the checkpoint recovery used is kept over the damaged one: {listed:?} (damaged {damaged})");
    engine.shutdown();
}

/// A refusal kept with its order number (journal format 5) makes a record and no order, so
/// records count towards `every_orders` too (four to an order): a platform flooding a shard
/// with refused requests brings its checkpoints, and so the records' way out of memory, as
/// orders would (helper 117#1). Without it no checkpoint came: no order was made.
#[test]
fn a_flood_of_refused_requests_brings_checkpoints_like_orders() {
    let config = EngineConfig {
        shard_count: 1,
        ack_flush_ms: 1,
        checkpoints: CheckpointPolicy { every_batches: 0, every_orders: 10, every: Duration::ZERO, kept: 2, on_shutdown: false },
        ..EngineConfig::default()
    };
    let engine = Engine::start(config, Arc::new(MemoryStore::new())).unwrap();
    let open = |owner| {
        AccountId(
            engine
                .execute_one(Envelope { platform: P, out_order_no: None, command: Command::OpenAccount { owner, currency: CNY, limits: Limits::NONE } })
                .unwrap()
                .id,
        )
    };
    let (payer, payee) = (open(1), open(2));
    let legs: Legs = [Leg { account: payee, amount: 5 }].into_iter().collect();
    let refused: Vec<Envelope> = (0..48)
        .map(|n| {
            keyed(&format!("short-{n}"), Command::Payment { payer, guarantee: false, currency: CNY, amount: 5, payees: legs.clone(), splits: Legs::new() })
        })
        .collect();
    let replies = engine.execute(refused).unwrap();
    assert!(replies.iter().all(|r| r.code == engine::result::ResultCode::InsufficientFunds), "{replies:?}");
    // The check runs between batches: one more batch, then the checkpoint's thread.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while engine.counters()[0].checkpoint_sequence.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "no checkpoint after 48 kept refusals (12 orders' worth, every 10)");
        let _ = engine.execute_one(Envelope {
            platform: P,
            out_order_no: None,
            command: Command::SetAccountStatus { account: payee, status: AccountStatus::Normal },
        });
        std::thread::sleep(Duration::from_millis(20));
    }
    engine.shutdown();
}
