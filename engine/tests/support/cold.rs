//! Scenarios of cold idempotency records, run on any store: `engine/tests/cold_idempotency.rs`
//! runs them on the in-memory store, `tests/cold_idempotency_rocksdb.rs` on RocksDB in a
//! temporary directory.

use std::sync::Arc;
use std::time::Duration;

use engine::checkpoint::{self, part_key};
use engine::cold::{self, cold_key};
use engine::invariants::check_store;
use engine::journal::{recover_shard, replay_journal};
use engine::ledger::command::{idempotency_key, BatchOrder, Command, Envelope, OutOrderNo};
use engine::ledger::types::*;
use engine::money::CurrencyId;
use engine::result::ResultCode;
use engine::shard::CheckpointPolicy;
use engine::{Engine, EngineConfig};
use storage::Store;

pub const CNY: CurrencyId = CurrencyId(0);
pub const P: u32 = 3;

/// Where a scenario's engine keeps its data, and how it is opened again after a stop.
pub trait Harness {
    /// The store (the same one until `reopen`).
    fn store(&mut self) -> Arc<dyn Store>;
    /// Closes and opens the store again (the caller has dropped every engine and handle).
    fn reopen(&mut self);
}

/// Two shards, a checkpoint every `every_batches` batches and at a graceful stop, three kept.
pub fn config(every_batches: u64) -> EngineConfig {
    EngineConfig {
        shard_count: 2,
        ack_flush_ms: 1,
        checkpoints: CheckpointPolicy { every_batches, every_orders: 0, every: Duration::ZERO, kept: 3, on_shutdown: true },
        ..EngineConfig::default()
    }
}

pub fn keyed(number: &str, command: Command) -> Envelope {
    Envelope { platform: P, out_order_no: Some(OutOrderNo::new(number).unwrap()), command }
}

fn plain(command: Command) -> Envelope {
    Envelope { platform: P, out_order_no: None, command }
}

pub fn pay(payer: AccountId, payee: AccountId, amount: i64) -> Command {
    Command::Payment { payer, guarantee: false, currency: CNY, amount, payees: [Leg { account: payee, amount }].into_iter().collect(), splits: Legs::new() }
}

pub fn batch(payer: AccountId, payee: AccountId, numbers: &[String], amount: i64) -> Command {
    let orders = numbers
        .iter()
        .map(|number| BatchOrder {
            out_order_no: OutOrderNo::new(number).unwrap(),
            amount,
            payees: [Leg { account: payee, amount }].into_iter().collect(),
            splits: Legs::new(),
        })
        .collect();
    Command::BatchPayment { payer, guarantee: false, currency: CNY, orders }
}

/// Four funded accounts: two on each shard.
pub fn accounts(engine: &Engine) -> Vec<AccountId> {
    let opens = (0..8).map(|owner| plain(Command::OpenAccount { owner, currency: CNY, limits: Limits::NONE })).collect();
    let all: Vec<AccountId> = engine.execute(opens).unwrap().iter().map(|r| AccountId(r.id)).collect();
    let mut chosen: Vec<AccountId> = all.iter().filter(|a| a.shard(2) == 0).take(2).copied().collect();
    chosen.extend(all.iter().filter(|a| a.shard(2) == 1).take(2));
    assert_eq!(chosen.len(), 4, "two accounts per shard");
    let funds = chosen.iter().map(|a| plain(Command::Recharge { account: *a, currency: CNY, amount: 1_000_000_000, channel: 1 })).collect();
    assert!(engine.execute(funds).unwrap().iter().all(|r| r.is_ok()));
    chosen
}

/// Accepted commands with order numbers and the order ids they got.
pub type Acked = Vec<(Envelope, u64)>;

/// `rounds` single payments on each shard (one submission each, so one batch each) and a batch
/// payment of three orders per shard every fourth round. Returns what was acknowledged.
pub fn orders(engine: &Engine, accounts: &[AccountId], tag: &str, rounds: usize) -> Acked {
    let mut acked = Vec::new();
    for round in 0..rounds {
        for (payer, payee) in [(accounts[0], accounts[2]), (accounts[3], accounts[1])] {
            let shard = payer.shard(2);
            let envelope = keyed(&format!("{tag}-{shard}-{round}"), pay(payer, payee, 100 + round as i64));
            if let Ok(reply) = engine.execute_one(envelope.clone()) {
                if reply.is_ok() {
                    acked.push((envelope, reply.id));
                }
            }
            if round % 4 == 0 {
                let numbers: Vec<String> = (0..3).map(|k| format!("{tag}-b{shard}-{round}-{k}")).collect();
                let envelope = keyed(&format!("{tag}-batch{shard}-{round}"), batch(payer, payee, &numbers, 7));
                if let Ok(reply) = engine.execute_one(envelope.clone()) {
                    if reply.is_ok() {
                        acked.push((envelope, reply.id));
                    }
                }
            }
        }
    }
    acked
}

/// The idempotency key of an acknowledged command's own order number.
pub fn key_of(envelope: &Envelope) -> u128 {
    idempotency_key(envelope.platform, envelope.command.idempotency_scope(), envelope.out_order_no.as_ref().unwrap())
}

/// Runs batches (account openings, no order numbers) until both shards have written at least
/// `at_least` checkpoints, the newest after every batch written before the call (a checkpoint
/// started earlier may finish late on a busy machine: it does not count).
pub fn wait_for_checkpoints(engine: &Engine, store: &dyn Store, at_least: usize) {
    let written: Vec<u64> = engine.counters().iter().map(|c| c.last_sequence.load(std::sync::atomic::Ordering::SeqCst)).collect();
    for round in 0..3000u64 {
        let done = |shard: usize| {
            let list = checkpoint::list(store, shard as u16).unwrap();
            list.len() >= at_least && list.last().is_some_and(|newest| *newest >= written[shard])
        };
        if (0..2).all(done) {
            return;
        }
        engine.execute_one(plain(Command::OpenAccount { owner: 5_000_000 + round, currency: CNY, limits: Limits::NONE })).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("fewer than {at_least} checkpoints per shard were written");
}

/// Sends every acknowledged command again (each must replay its order), then each with other
/// content (each must be a conflict), and, for single payments, the number with a payer on the
/// other shard (a conflict too: the number is taken).
pub fn assert_replays_and_conflicts(engine: &Engine, accounts: &[AccountId], acked: &Acked, when: &str) {
    for (envelope, id) in acked {
        let reply = engine.execute_one(envelope.clone()).unwrap();
        assert!(reply.is_ok() && reply.replayed && reply.id == *id, "{when}: {:?} (order {id}) answered {reply:?}", envelope.out_order_no);
        let mut other = envelope.clone();
        match &mut other.command {
            Command::Payment { amount, payees, .. } => {
                *amount += 1;
                payees[0].amount += 1;
            }
            Command::BatchPayment { orders, .. } => {
                orders[0].amount += 1;
                orders[0].payees[0].amount += 1;
            }
            command => panic!("unexpected {command:?}"),
        }
        let reply = engine.execute_one(other.clone()).unwrap();
        assert_eq!(reply.code, ResultCode::IdempotencyConflict, "{when}: other content under {:?}", envelope.out_order_no);
        if let Command::Payment { payer, .. } = &envelope.command {
            let elsewhere = accounts.iter().copied().find(|a| a.shard(2) != payer.shard(2)).unwrap();
            let payee = accounts.iter().copied().find(|a| *a != elsewhere && a.shard(2) == elsewhere.shard(2)).unwrap();
            let moved = keyed(envelope.out_order_no.as_ref().unwrap().as_str(), pay(elsewhere, payee, 5));
            assert_eq!(engine.execute_one(moved).unwrap().code, ResultCode::IdempotencyConflict, "{when}: the number from the other shard");
        }
    }
}

/// Every acknowledged batch payment's order numbers are taken: a single payment under one of
/// them (from either shard) is a conflict.
pub fn assert_batch_numbers_taken(engine: &Engine, accounts: &[AccountId], acked: &Acked, when: &str) {
    for (envelope, _) in acked {
        if let Command::BatchPayment { orders, .. } = &envelope.command {
            for (payer, payee) in [(accounts[0], accounts[1]), (accounts[2], accounts[3])] {
                let reply = engine.execute_one(keyed(orders[1].out_order_no.as_str(), pay(payer, payee, 3))).unwrap();
                assert_eq!(reply.code, ResultCode::IdempotencyConflict, "{when}: {:?} from shard {}", orders[1].out_order_no, payer.shard(2));
            }
        }
    }
}

/// Each shard's logical digest (state + hot and cold records) as recovery and as a whole replay
/// rebuild it: they must be equal. Returns recovery's checkpoint per shard.
pub fn assert_recovery_equals_whole_replay(store: &dyn Store, when: &str) -> Vec<Option<u64>> {
    (0..2)
        .map(|shard| {
            let recovered = recover_shard(store, shard).unwrap();
            let (full, sequence, _) = replay_journal(store, shard).unwrap();
            assert_eq!(recovered.head.sequence, sequence);
            let from_checkpoint = cold::logical_digest(store, &recovered.state, sequence).unwrap();
            let whole = cold::logical_digest(store, &full, sequence).unwrap();
            assert_eq!(from_checkpoint, whole, "{when}, shard {shard}: checkpoint + tail == whole journal (hot + cold records)");
            recovered.checkpoint
        })
        .collect()
}

/// Each running shard's logical digest.
pub fn live_digests(engine: &Engine, store: &Arc<dyn Store>) -> Vec<u64> {
    (0..2)
        .map(|shard| {
            let store = store.clone();
            engine.read_shard(shard, move |state| cold::logical_digest(&*store, state, u64::MAX).unwrap()).unwrap()
        })
        .collect()
}

/// Orders whose records went cold are still replays and conflicts: live, after a restart, and
/// after a fall-back from a corrupt newest checkpoint to the one before, where the newer one's
/// rows (records created after the older checkpoint) must not change the replay.
pub fn cold_records_stay_replays_and_conflicts(harness: &mut dyn Harness) {
    let store = harness.store();
    let engine = Engine::start(config(3), store.clone()).unwrap();
    let accounts = accounts(&engine);
    let old = orders(&engine, &accounts, "old", 12);
    assert!(old.len() >= 30);
    wait_for_checkpoints(&engine, &*store, 2);
    engine.wait_quiescent(Duration::from_secs(10)).unwrap();
    // The first orders' records are in the store and no longer in memory.
    for (envelope, id) in &old[..4] {
        let (key, shard) = (key_of(envelope), envelope.command.debited_account().unwrap().shard(2));
        let row = cold::read_row(&*store, key).unwrap().expect("a cold row");
        assert_eq!((row.shard, row.record.reply.id), (shard, *id));
        // The shard drops the sealed generation once it sees its checkpoint finished.
        let in_memory = || engine.read_shard(shard, move |state| state.idempotency_record(&key)).unwrap();
        for _ in 0..100 {
            if in_memory().is_none() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(in_memory(), None, "not in memory");
        assert_eq!(engine.idempotency_record(shard, key).unwrap().map(|r| r.reply.id), Some(*id), "the engine's query reads it cold");
    }
    let evicted: u64 = engine.counters().iter().map(|c| c.idempotency_evicted.load(std::sync::atomic::Ordering::Relaxed)).sum();
    assert!(evicted >= 10, "checkpoints evicted {evicted} records");
    // The router forgot the claims of what went cold: a conflict from the other shard (below)
    // is then the other shard's answer from the cold row.
    let numbers: usize = old.iter().map(|(envelope, _)| 1 + if let Command::BatchPayment { orders, .. } = &envelope.command { orders.len() } else { 0 }).sum();
    assert!(engine.claims_held() + 10 <= numbers, "{} claims of {numbers} numbers", engine.claims_held());
    assert_replays_and_conflicts(&engine, &accounts, &old, "live");
    assert_batch_numbers_taken(&engine, &accounts, &old, "live");
    // Newer orders, then more checkpoints: the newest checkpoint's rows hold records the one
    // before it did not.
    let newer = orders(&engine, &accounts, "new", 6);
    wait_for_checkpoints(&engine, &*store, 3);
    // Once credits are acknowledged (their batches written) the running state is final.
    engine.wait_quiescent(Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let before_stop = live_digests(&engine, &store);
    engine.shutdown();
    drop(engine);
    assert_recovery_equals_whole_replay(&*store, "after a stop");
    drop(store);

    harness.reopen();
    let store = harness.store();
    // No periodic checkpoint now: the stop's checkpoint is the only one, and it evicts every
    // record created since the restart.
    let engine = Engine::start(config(1_000_000), store.clone()).unwrap();
    assert_eq!(live_digests(&engine, &store), before_stop, "a restart rebuilds the same records");
    let mut all: Acked = old.iter().chain(&newer).cloned().collect();
    assert_replays_and_conflicts(&engine, &accounts, &all, "after a restart");
    assert_batch_numbers_taken(&engine, &accounts, &all, "after a restart");
    all.extend(orders(&engine, &accounts, "late", 4));
    engine.wait_quiescent(Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let before_second_stop = live_digests(&engine, &store);
    engine.shutdown();
    drop(engine);

    // Corrupt the newest checkpoint of each shard: recovery falls back to the one before,
    // while rows the newest wrote (stamped after the older one) are in the store.
    let mut corrupted = Vec::new();
    for shard in 0..2u16 {
        let newest = *checkpoint::list(&*store, shard).unwrap().last().unwrap();
        corrupted.push(newest);
        let key = part_key(shard, newest, 0);
        let mut part = store.get(&key).unwrap().unwrap();
        let middle = part.len() / 2;
        part[middle] ^= 0x40;
        store.write(&[(&key, &part)]).unwrap();
    }
    let fell_back = assert_recovery_equals_whole_replay(&*store, "after a fall-back");
    for shard in 0..2u16 {
        let older = fell_back[shard as usize].expect("an older checkpoint");
        assert!(older < corrupted[shard as usize], "shard {shard} fell back");
        let mut newer_rows = 0;
        let mut end = cold::COLD_PREFIX.to_vec();
        end.extend_from_slice(&[0xff; 17]);
        store
            .scan(cold::COLD_PREFIX, &end, &mut |key, value| {
                let key = u128::from_be_bytes(key[4..20].try_into().unwrap());
                let row = cold::decode_row(key, value).unwrap();
                newer_rows += usize::from(row.shard == shard && row.stamp > older);
                true
            })
            .unwrap();
        assert!(newer_rows > 0, "shard {shard}: the newest checkpoint wrote rows the fall-back must not see early");
    }
    let engine = Engine::start(config(3), store.clone()).unwrap();
    assert_eq!(live_digests(&engine, &store), before_second_stop, "a fall-back rebuilds the same records");
    assert_replays_and_conflicts(&engine, &accounts, &all, "after a fall-back");
    engine.shutdown();
    drop(engine);
    assert!(check_store(&*store, 2).unwrap().ok);
    // Unused here, but the row key layout is part of the format: pinned.
    assert_eq!(&cold_key(0x0102)[..6], b"h/i/\0\0");
}
