//! Criterion benches of the pure ledger core: applying a batch of 8,189 balance payments in
//! memory on one core (no storage, no threads), and reading a batch's cold idempotency records
//! from RocksDB before it is applied (`cold_probe`). Run with `cargo bench --bench apply`;
//! `-- --test` runs each once with the same inputs (what `make test` does so they never rot).
//! `CLEARING_BENCH_COLD_ROWS` sets how many cold rows the probe bench's database holds
//! (default 10,000,000; 10,000 under `--test`).

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
    // As in a running engine, most accounts have received income already (their unsettled lots
    // and income records exist): three batches of payments without order numbers.
    for seed in 1..=3 {
        for payment in payments_seeded(&accounts, false, seed) {
            assert!(state.apply(&payment, T0, &mut fx).is_ok());
        }
    }
    (state, accounts)
}

fn payments(accounts: &[AccountId], keyed: bool) -> Vec<Envelope> {
    payments_seeded(accounts, keyed, 7)
}

fn payments_seeded(accounts: &[AccountId], keyed: bool, seed: u64) -> Vec<Envelope> {
    let mut rng = StdRng::seed_from_u64(seed);
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

/// A state 10 M (or any number of) orders into its history with a checkpoint every `batches`
/// batches: the older records are cold rows in the store, not in memory, which holds at most one
/// interval's (`batches` * 8,189). Apply's cost depends on this hot set only, whatever the history.
fn with_recent_history(mut state: ShardState, batches: usize) -> ShardState {
    let mut rng = StdRng::seed_from_u64(98);
    state.idempotency.reserve(2 * batches * BATCH);
    for _ in 0..batches * BATCH {
        let record = IdempotencyRecord { content: rng.gen(), reply: Reply::rejected(ResultCode::Ok) };
        state.idempotency.insert(rng.gen(), record);
    }
    state
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
    // Checkpoints every 50 batches (`clearing bench --checkpoint-every-batches 50`) and every 10.
    let state_with_cold_history_50 = with_recent_history(state.clone(), 50);
    let state_with_cold_history_10 = with_recent_history(state.clone(), 10);
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(BATCH as u64));
    let cases = [
        ("payments_with_order_numbers", true, &state),
        ("payments_with_order_numbers_after_1m_orders", true, &state_with_history),
        ("payments_with_order_numbers_cold_history_409k_hot", true, &state_with_cold_history_50),
        ("payments_with_order_numbers_cold_history_82k_hot", true, &state_with_cold_history_10),
        ("payments_without_order_numbers", false, &state),
    ];
    for (name, keyed, state) in cases {
        let batch = payments(&accounts, keyed);
        let (mut fx, mut replies) = (Effects::default(), Vec::with_capacity(BATCH));
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || state.clone(),
                |state| {
                    // As a shard applies a batch (`apply_all`: record slots asked for ahead).
                    fx.clear();
                    replies.clear();
                    state.apply_all(&batch, None, T0 + 1, &mut fx, &mut replies);
                    assert!(replies.iter().all(Reply::is_ok));
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

/// Rows of the probe bench's database (see the module comment).
fn cold_rows() -> u64 {
    let testing = std::env::args().any(|arg| arg == "--test");
    std::env::var("CLEARING_BENCH_COLD_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(if testing { 10_000 } else { 10_000_000 })
}

/// Reading a batch's order numbers from a RocksDB holding `cold_rows()` cold records, as the
/// shard does before applying it (`cold::prefetch`: one sorted batched MultiGet): new numbers
/// (every probe a miss: the bloom filters' case) and old ones (every probe a hit).
fn bench_cold_probe(c: &mut Criterion) {
    let (state, accounts) = funded_state(1);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = storage_rocks::RocksStore::open(dir.path()).expect("a database");
    let rows = cold_rows();
    let numbered = |number: String| Envelope { platform: 1, out_order_no: Some(OutOrderNo::new(&number).unwrap()), ..payments(&accounts, false)[0].clone() };
    let scope = payments(&accounts, false)[0].command.idempotency_scope();
    let record = IdempotencyRecord { content: 1, reply: Reply::rejected(ResultCode::Ok) };
    let mut start = 0;
    while start < rows {
        let end = (start + 65_536).min(rows);
        let puts: Vec<([u8; 20], Vec<u8>)> = (start..end)
            .map(|i| {
                let key = engine::ledger::command::idempotency_key(1, scope, &OutOrderNo::new(&format!("h{i}")).unwrap());
                (engine::cold::cold_key(key), engine::cold::encode_row(&engine::cold::ColdRow { shard: 0, stamp: 1, record }))
            })
            .collect();
        let refs: Vec<(&[u8], &[u8])> = puts.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        storage::Store::write(&store, &refs).expect("rows written");
        start = end;
    }
    let mut rng = StdRng::seed_from_u64(5);
    let new: Vec<Envelope> = (0..BATCH).map(|i| numbered(format!("n{i}"))).collect();
    let old: Vec<Envelope> = (0..BATCH).map(|_| numbered(format!("h{}", rng.gen_range(0..rows)))).collect();
    let mut group = c.benchmark_group("cold_probe");
    group.throughput(Throughput::Elements(BATCH as u64));
    // Without the engine's filter of cold keys (every key read from RocksDB, its bloom filters
    // answering the misses), and with it (what a shard does: only keys that may be cold are read).
    let loaded = engine::cold::ColdFilter::load(&store, engine::cold::COLD_FILTER_BYTES).expect("filter");
    for (name, batch, filter) in
        [("new_numbers", &new, None), ("old_numbers", &old, None), ("new_numbers_filtered", &new, Some(&loaded)), ("old_numbers_filtered", &old, Some(&loaded))]
    {
        let filter = filter.map(|f| f as &engine::cold::ColdFilter);
        let mut probing = state.clone();
        let mut keys = Vec::new();
        group.bench_function(format!("{name}_{rows}_rows"), |b| {
            b.iter(|| {
                let probed = engine::cold::prefetch(&store, filter, &mut probing, 2, batch, &mut keys).expect("probe");
                probing.forget_cold();
                probed
            })
        });
    }
    group.finish();
}

/// The filter of cold order numbers at the size a 100 M run gives it (one segment of 200 MB, as
/// `clearing bench` sizes it): what a checkpoint's thread does with a sealed generation (its keys
/// asked for, then set once their rows are durable), 131,072 random keys a round, into a filter
/// already holding 50 M keys (every block touched, as in a server that has run a while).
fn bench_cold_filter(c: &mut Criterion) {
    const KEYS: usize = 131_072;
    let filter = engine::cold::ColdFilter::with_bytes(200_000_000);
    let mut rng = StdRng::seed_from_u64(9);
    filter.insert_all((0..50_000_000).map(|_| rng.gen::<u128>()));
    let keys: Vec<u128> = (0..KEYS).map(|_| rng.gen::<u128>()).collect();
    let mut group = c.benchmark_group("cold_filter");
    group.throughput(Throughput::Elements(KEYS as u64));
    group.bench_function("positions_maybe_held_200mb", |b| b.iter(|| filter.positions_maybe_held(KEYS, |i| keys[i]).len()));
    group.bench_function("insert_all_200mb", |b| b.iter(|| filter.insert_all(keys.iter().copied())));
    group.finish();
}

criterion_group!(benches, bench_apply, bench_journal_encoding, bench_cold_probe, bench_cold_filter);
criterion_main!(benches);
