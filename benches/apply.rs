//! Criterion benches of the pure ledger core: applying a batch of 8,189 balance payments in
//! memory on one core (no storage, no threads). Run with `cargo bench --bench apply`;
//! `-- --test` runs each once with the same inputs (what `make test` does so they never rot).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use engine::ledger::command::{Command, Envelope, OutOrderNo};
use engine::ledger::state::{Effects, IdempotencyRecord, ShardState};
use engine::ledger::types::{AccountId, Leg, Legs, Limits, Reply};
use engine::money::{CurrencyId, CurrencySpec};
use engine::result::ResultCode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ACCOUNTS: u64 = 10_000;
const BATCH: usize = 8_189;
const T0: u64 = 1_700_000_000_000_000;

fn funded_state(shard_count: u16) -> (ShardState, Vec<AccountId>) {
    let mut state = ShardState::default();
    let mut fx = Effects::default();
    let genesis = Command::Genesis { shard: 0, shard_count, currencies: vec![CurrencySpec::new("CNY", 2).unwrap()], utc_offset_seconds: 0 };
    state.apply(&Envelope { platform: 0, out_order_no: None, command: genesis }, T0, &mut fx);
    let mut accounts = Vec::new();
    for owner in 0..ACCOUNTS {
        let open = Command::OpenAccount { owner, currency: CurrencyId(0), limits: Limits::NONE };
        let id = AccountId(state.apply(&Envelope { platform: 1, out_order_no: None, command: open }, T0, &mut fx).id);
        let fund = Command::Recharge { account: id, currency: CurrencyId(0), amount: 1_000_000_000_000, channel: 1 };
        state.apply(&Envelope { platform: 1, out_order_no: None, command: fund }, T0, &mut fx);
        accounts.push(id);
    }
    (state, accounts)
}

fn payments(accounts: &[AccountId], keyed: bool) -> Vec<Envelope> {
    let mut rng = StdRng::seed_from_u64(7);
    (0..BATCH)
        .map(|i| {
            let payer = accounts[rng.gen_range(0..accounts.len())];
            let mut payee = accounts[rng.gen_range(0..accounts.len())];
            while payee == payer {
                payee = accounts[rng.gen_range(0..accounts.len())];
            }
            let amount = rng.gen_range(1..=10_000);
            let payees: Legs = [Leg { account: payee, amount }].into_iter().collect();
            Envelope {
                platform: 1,
                out_order_no: keyed.then(|| OutOrderNo::new(&format!("t{i}")).unwrap()),
                command: Command::Payment { payer, guarantee: false, currency: CurrencyId(0), amount, payees, splits: Legs::new() },
            }
        })
        .collect()
}

/// A state that has already accepted a million orders: its idempotency map is large (inserts
/// miss the cache, as in a running engine) and has room to grow without rehashing in the bench.
fn with_history(mut state: ShardState) -> ShardState {
    let mut rng = StdRng::seed_from_u64(99);
    state.idempotency.reserve(1 << 21);
    for _ in 0..1_000_000 {
        let record = IdempotencyRecord { content: rng.gen(), reply: Reply::rejected(ResultCode::Ok) };
        state.idempotency.insert(rng.gen(), record);
    }
    state
}

fn bench_apply(c: &mut Criterion) {
    let (state, accounts) = funded_state(1);
    let state_with_history = with_history(state.clone());
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(BATCH as u64));
    let cases = [
        ("payments_with_order_numbers", true, &state),
        ("payments_with_order_numbers_after_1m_orders", true, &state_with_history),
        ("payments_without_order_numbers", false, &state),
    ];
    for (name, keyed, state) in cases {
        let batch = payments(&accounts, keyed);
        let mut fx = Effects::default();
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || state.clone(),
                |state| {
                    fx.clear();
                    for envelope in &batch {
                        let reply = state.apply(envelope, T0 + 1, &mut fx);
                        assert!(reply.is_ok());
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn bench_journal_encoding(c: &mut Criterion) {
    let (mut state, accounts) = funded_state(1);
    let batch = payments(&accounts, true);
    let mut fx = Effects::default();
    for envelope in &batch {
        state.apply(envelope, T0 + 1, &mut fx);
    }
    let mut buffer = Vec::new();
    let mut group = c.benchmark_group("journal");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("encode_batch", |b| {
        b.iter(|| {
            let record = engine::journal::BatchRecordRef {
                shard: 0,
                sequence: 1,
                timestamp: T0,
                previous_hash: engine::journal::ZERO_HASH,
                envelopes: &batch,
                entries: &fx.entries,
                postings: &fx.postings,
            };
            engine::journal::encode(&record, &mut buffer);
            buffer.len()
        })
    });
    // The hash chain's share of `encode_batch`: BLAKE3 of the same bytes alone.
    group.bench_function("hash_batch", |b| b.iter(|| blake3::hash(&buffer[..buffer.len() - engine::journal::HASH_LEN])));
    group.finish();
}

criterion_group!(benches, bench_apply, bench_journal_encoding);
criterion_main!(benches);
