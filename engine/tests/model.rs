//! Property test: random command sequences on several shards (real threads, in-memory store)
//! against a simple model of balances; then a restart must rebuild identical state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use engine::invariants::check_engine;
use engine::ledger::command::{Command, Envelope, OutOrderNo};
use engine::ledger::types::*;
use engine::money::CurrencyId;
use engine::{Engine, EngineConfig};
use proptest::prelude::*;
use storage::MemoryStore;

const ACCOUNTS: usize = 6;
const CNY: CurrencyId = CurrencyId(0);

#[derive(Clone, Debug)]
enum Op {
    Recharge(usize, i64),
    Pay(usize, usize, i64),
    Hold(usize, usize, i64),
    Confirm(usize, i64),
    Cancel(usize),
    Refund(usize, i64),
    Freeze(usize, i64),
    Release(usize),
    Withdraw(usize, i64, i64),
    Complete(usize, bool),
}

fn op() -> impl Strategy<Value = Op> {
    let account = 0..ACCOUNTS;
    let amount = 1i64..2_000;
    prop_oneof![
        2 => (account.clone(), amount.clone()).prop_map(|(a, x)| Op::Recharge(a, x)),
        4 => (account.clone(), account.clone(), amount.clone()).prop_map(|(a, b, x)| Op::Pay(a, b, x)),
        2 => (account.clone(), account.clone(), amount.clone()).prop_map(|(a, b, x)| Op::Hold(a, b, x)),
        1 => (0usize..8, amount.clone()).prop_map(|(i, x)| Op::Confirm(i, x)),
        1 => (0usize..8).prop_map(Op::Cancel),
        1 => (0usize..8, amount.clone()).prop_map(|(i, x)| Op::Refund(i, x)),
        1 => (account.clone(), amount.clone()).prop_map(|(a, x)| Op::Freeze(a, x)),
        1 => (0usize..8).prop_map(Op::Release),
        1 => (account, amount, 0i64..20).prop_map(|(a, x, f)| Op::Withdraw(a, x, f)),
        1 => (0usize..8, any::<bool>()).prop_map(|(i, ok)| Op::Complete(i, ok)),
    ]
}

/// The model: three buckets per account and the open orders.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
struct Buckets {
    settled: i64,
    unsettled: i64,
    frozen: i64,
}

impl Buckets {
    /// Spends `amount`, unsettled first; returns the part taken from unsettled.
    fn spend(&mut self, amount: i64) -> i64 {
        let from_unsettled = self.unsettled.min(amount);
        self.unsettled -= from_unsettled;
        self.settled -= amount - from_unsettled;
        from_unsettled
    }

    /// Takes back `amount` of a payment whose unsettled part not yet returned is `part`: that
    /// part first, as unsettled, the rest as settled.
    fn take_back(&mut self, part: &mut i64, amount: i64) {
        let to_unsettled = (*part).min(amount);
        *part -= to_unsettled;
        self.unsettled += to_unsettled;
        self.settled += amount - to_unsettled;
    }
}

#[derive(Default)]
struct Model {
    accounts: Vec<Buckets>,
    /// Guarantees: (order, payer, payee, remaining held, released).
    holds: Vec<(OrderId, usize, usize, i64, i64)>,
    /// Payments with income: (order, payer, payee, received, refunded).
    incomes: Vec<(OrderId, usize, usize, i64, i64)>,
    /// Freezes: (order, account, remaining, from_unsettled).
    freezes: Vec<(OrderId, usize, i64, i64)>,
    /// Withdrawals: (order, account, amount + fee, verdict once completed).
    withdrawals: Vec<(OrderId, usize, i64, Option<bool>)>,
    /// Per payment, what it took from the payer's unsettled income and has not given back.
    unsettled_parts: HashMap<OrderId, i64>,
}

fn envelope(n: usize, command: Command) -> Envelope {
    Envelope { platform: 1, out_order_no: Some(OutOrderNo::new(&format!("m{n}")).unwrap()), command }
}

fn one(account: AccountId, amount: i64) -> Legs {
    [Leg { account, amount }].into_iter().collect()
}

/// Runs one op on the engine and the model; returns an error text on disagreement.
fn step(engine: &Engine, model: &mut Model, ids: &[AccountId], n: usize, op: &Op) -> Result<(), String> {
    let m = &mut model.accounts;
    let (command, expected_ok) = match *op {
        Op::Recharge(a, x) => (Command::Recharge { account: ids[a], currency: CNY, amount: x, channel: 1 }, true),
        Op::Pay(a, b, x) => {
            let ok = a != b && m[a].settled + m[a].unsettled >= x;
            (Command::Payment { payer: ids[a], guarantee: false, currency: CNY, amount: x, payees: one(ids[b], x), splits: Legs::new() }, ok)
        }
        Op::Hold(a, b, x) => {
            let ok = a != b && m[a].settled + m[a].unsettled >= x;
            (Command::Payment { payer: ids[a], guarantee: true, currency: CNY, amount: x, payees: one(ids[b], x), splits: Legs::new() }, ok)
        }
        Op::Confirm(i, x) => match model.holds.get(i) {
            None => return Ok(()),
            Some(h) => (Command::Confirm { order: h.0, releases: one(ids[h.2], x) }, h.3 > 0 && x <= h.3),
        },
        Op::Cancel(i) => match model.holds.get(i) {
            None => return Ok(()),
            Some(h) => (Command::Cancel { order: h.0, amount: None }, h.3 > 0),
        },
        Op::Refund(i, x) => match model.incomes.get(i) {
            None => return Ok(()),
            Some(inc) => {
                let payee = &m[inc.2];
                let ok = x <= inc.3 - inc.4 && payee.settled + payee.unsettled >= x;
                (Command::Refund { payment: inc.0, payee: ids[inc.2], amount: x }, ok)
            }
        },
        Op::Freeze(a, x) => {
            let ok = m[a].settled + m[a].unsettled >= x;
            (Command::Freeze { account: ids[a], currency: CNY, amount: x, reason: "model".into(), expires_at: None }, ok)
        }
        Op::Release(i) => match model.freezes.get(i) {
            None => return Ok(()),
            Some(f) => (Command::ReleaseFreeze { order: f.0, amount: None }, f.2 > 0),
        },
        Op::Withdraw(a, x, fee) => (Command::Withdraw { account: ids[a], currency: CNY, amount: x, fee, channel: 1 }, m[a].settled >= x + fee),
        Op::Complete(i, succeeded) => match model.withdrawals.get(i) {
            None => return Ok(()),
            // A repeated verdict is answered ok (callbacks repeat); the opposite one is refused.
            Some(w) => (Command::CompleteWithdrawal { order: w.0, succeeded }, w.3.is_none_or(|v| v == succeeded)),
        },
    };
    let reply = engine.execute_one(envelope(n, command)).map_err(|e| e.to_string())?;
    if reply.is_ok() != expected_ok {
        return Err(format!("{op:?}: engine said {:?}, model expected ok = {expected_ok}", reply.code));
    }
    if !expected_ok {
        return Ok(());
    }
    let order = OrderId(reply.id);
    match *op {
        Op::Recharge(a, x) => m[a].settled += x,
        Op::Pay(a, b, x) => {
            model.unsettled_parts.insert(order, m[a].spend(x));
            m[b].unsettled += x;
            model.incomes.push((order, a, b, x, 0));
        }
        Op::Hold(a, b, x) => {
            model.unsettled_parts.insert(order, m[a].spend(x));
            model.holds.push((order, a, b, x, 0));
        }
        Op::Confirm(i, x) => {
            let h = &mut model.holds[i];
            h.3 -= x;
            h.4 += x;
            m[h.2].unsettled += x;
            match model.incomes.iter_mut().find(|inc| inc.0 == h.0) {
                Some(inc) => inc.3 += x,
                None => model.incomes.push((h.0, h.1, h.2, x, 0)),
            }
        }
        Op::Cancel(i) => {
            let h = &mut model.holds[i];
            m[h.1].take_back(model.unsettled_parts.get_mut(&h.0).expect("a payment"), h.3);
            h.3 = 0;
        }
        Op::Refund(i, x) => {
            let inc = &mut model.incomes[i];
            inc.4 += x;
            m[inc.2].spend(x);
            m[inc.1].take_back(model.unsettled_parts.get_mut(&inc.0).expect("a payment"), x);
        }
        Op::Freeze(a, x) => {
            let from_settled = m[a].settled.min(x);
            m[a].settled -= from_settled;
            m[a].unsettled -= x - from_settled;
            m[a].frozen += x;
            model.freezes.push((order, a, x, x - from_settled));
        }
        Op::Release(i) => {
            let f = &mut model.freezes[i];
            m[f.1].frozen -= f.2;
            m[f.1].unsettled += f.3;
            m[f.1].settled += f.2 - f.3;
            f.2 = 0;
        }
        Op::Withdraw(a, x, fee) => {
            m[a].settled -= x + fee;
            model.withdrawals.push((order, a, x + fee, None));
        }
        Op::Complete(i, succeeded) => {
            let w = &mut model.withdrawals[i];
            if w.3.is_none() && !succeeded {
                m[w.1].settled += w.2;
            }
            w.3 = Some(succeeded);
        }
    }
    // Let cross-shard credits land before the next step, so the model's view is the engine's.
    engine.wait_quiescent(Duration::from_secs(5)).map_err(|e| e.to_string())
}

fn balances(engine: &Engine, ids: &[AccountId]) -> Vec<Buckets> {
    ids.iter()
        .map(|id| {
            let id = *id;
            engine
                .read_shard(id.shard(engine.config().shard_count), move |s| {
                    let a = s.account(id).unwrap();
                    Buckets { settled: a.settled, unsettled: a.unsettled, frozen: a.frozen }
                })
                .unwrap()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_model(ops in proptest::collection::vec(op(), 1..60), shards in 1u16..4) {
        let store = Arc::new(MemoryStore::new());
        let config = EngineConfig { shard_count: shards, ack_flush_ms: 1, ..EngineConfig::default() };
        let engine = Engine::start(config.clone(), store.clone()).unwrap();
        let opens = (0..ACCOUNTS as u64)
            .map(|owner| Envelope { platform: 1, out_order_no: None, command: Command::OpenAccount { owner, currency: CNY, limits: Limits::NONE } })
            .collect();
        let ids: Vec<AccountId> = engine.execute(opens).unwrap().iter().map(|r| AccountId(r.id)).collect();
        let funds = ids.iter().map(|id| Envelope { platform: 1, out_order_no: None, command: Command::Recharge { account: *id, currency: CNY, amount: 3_000, channel: 1 } }).collect();
        prop_assert!(engine.execute(funds).unwrap().iter().all(|r| r.is_ok()));
        let funded = Buckets { settled: 3_000, ..Buckets::default() };
        let mut model = Model { accounts: vec![funded; ACCOUNTS], ..Model::default() };
        for (n, op) in ops.iter().enumerate() {
            if let Err(message) = step(&engine, &mut model, &ids, n, op) {
                engine.shutdown();
                prop_assert!(false, "{}", message);
            }
        }
        prop_assert_eq!(balances(&engine, &ids), model.accounts.clone());
        let report = check_engine(&engine).unwrap();
        prop_assert!(report.ok, "{:?}", report);
        let digests: HashMap<u16, u64> = (0..shards).map(|s| (s, engine.read_shard(s, |st| st.digest()).unwrap())).collect();
        engine.shutdown();
        // A restart replays the journal into the very same state.
        let restarted = Engine::start(config, Arc::new(store.snapshot())).unwrap();
        let replayed: HashMap<u16, u64> = (0..shards).map(|s| (s, restarted.read_shard(s, |st| st.digest()).unwrap())).collect();
        restarted.shutdown();
        prop_assert_eq!(digests, replayed);
    }
}
