//! The engine with its shard threads on RocksDB: what it wrote survives a restart (guarantees,
//! freezes, outboxes), and the journal alone passes the invariant check. (The engine's own tests
//! use the in-memory store, so that they build without RocksDB's C++.)

use std::sync::Arc;
use std::time::Duration;

use engine::invariants::check_store;
use engine::ledger::command::{Command, Envelope, OutOrderNo};
use engine::ledger::types::*;
use engine::money::CurrencyId;
use engine::{Engine, EngineConfig};
use storage::Store;
use storage_rocks::RocksStore;

const CNY: CurrencyId = CurrencyId(0);
const P: u32 = 3;

fn config(shards: u16) -> EngineConfig {
    EngineConfig { shard_count: shards, ack_flush_ms: 1, ..EngineConfig::default() }
}

fn keyed(key: &str, command: Command) -> Envelope {
    Envelope { platform: P, out_order_no: Some(OutOrderNo::new(key).unwrap()), command }
}

fn plain(command: Command) -> Envelope {
    Envelope { platform: P, out_order_no: None, command }
}

fn open_funded(engine: &Engine, owners: std::ops::Range<u64>, amount: i64) -> Vec<AccountId> {
    let opens = owners.map(|owner| plain(Command::OpenAccount { owner, currency: CNY, limits: Limits::NONE })).collect();
    let accounts: Vec<AccountId> = engine.execute(opens).unwrap().iter().map(|r| AccountId(r.id)).collect();
    let funds = accounts.iter().map(|a| plain(Command::Recharge { account: *a, currency: CNY, amount, channel: 1 })).collect();
    assert!(engine.execute(funds).unwrap().iter().all(|r| r.is_ok()));
    accounts
}

fn balance(engine: &Engine, account: AccountId) -> (i64, i64, i64) {
    let shard = account.shard(engine.config().shard_count);
    engine
        .read_shard(shard, move |s| {
            let a = s.account(account).unwrap();
            (a.settled, a.unsettled, a.frozen)
        })
        .unwrap()
}

fn digests(engine: &Engine) -> Vec<u64> {
    (0..engine.config().shard_count).map(|s| engine.read_shard(s, |state| state.digest()).unwrap()).collect()
}

#[test]
fn rocksdb_engine_recovers_guarantees_freezes_and_outboxes() {
    let dir = tempfile::tempdir().unwrap();
    let accounts;
    let before;
    let order;
    {
        let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path()).unwrap());
        let engine = Engine::start(config(2), store).unwrap();
        accounts = open_funded(&engine, 0..6, 10_000);
        let a0 = *accounts.iter().find(|a| a.shard(2) == 0).unwrap();
        let a1 = *accounts.iter().find(|a| a.shard(2) == 1).unwrap();
        let hold = Command::Payment {
            payer: a0,
            guarantee: true,
            currency: CNY,
            amount: 500,
            payees: [Leg { account: a1, amount: 500 }].into_iter().collect(),
            splits: Legs::new(),
        };
        order = OrderId(engine.execute_one(keyed("g1", hold)).unwrap().id);
        assert!(engine
            .execute_one(keyed("c1", Command::Confirm { order, releases: [Leg { account: a1, amount: 200 }].into_iter().collect() }))
            .unwrap()
            .is_ok());
        assert!(engine
            .execute_one(keyed("f1", Command::Freeze { account: a1, currency: CNY, amount: 100, reason: "audit".into(), expires_at: None }))
            .unwrap()
            .is_ok());
        engine.wait_quiescent(Duration::from_secs(5)).unwrap();
        before = digests(&engine);
        engine.shutdown();
    }
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path()).unwrap());
    let engine = Engine::start(config(2), store.clone()).unwrap();
    assert_eq!(digests(&engine), before);
    let a1 = *accounts.iter().find(|a| a.shard(2) == 1).unwrap();
    assert_eq!(balance(&engine, a1), (10_000 - 100, 200, 100));
    let status = engine.read_shard(0, move |s| s.order(order).map(|o| o.status)).unwrap();
    assert_eq!(status, Some(OrderStatus::Held));
    assert!(engine.execute_one(keyed("c2", Command::Confirm { order, releases: Legs::new() })).unwrap().is_ok());
    engine.wait_quiescent(Duration::from_secs(5)).unwrap();
    assert_eq!(balance(&engine, a1), (9_900, 500, 100));
    engine.shutdown();
    let report = check_store(&*store, 2).unwrap();
    assert!(report.ok, "{report:?}");
}
