//! `clearing bench`: drives the engine directly (no HTTP), in the shape of `tigerbeetle benchmark`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use clap::{Args, ValueEnum};
use engine::ledger::command::{Command, Envelope, OutOrderNo};
use engine::ledger::types::{AccountId, Leg, Legs, Limits, Reply};
use engine::money::CurrencyId;
use engine::{Engine, EngineConfig, EngineError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, WeightedAliasIndex};
use storage_rocks::RocksStore;

/// How payers and payees are drawn.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AccountDistribution {
    Zipf,
    Uniform,
}

/// Arguments of `clearing bench` (the defaults are the issue's).
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[arg(long, default_value_t = 10_000)]
    pub accounts: u64,
    #[arg(long, default_value_t = 10_000_000)]
    pub transfers: u64,
    /// Transfers per submission (and the shards' batch limit).
    #[arg(long, default_value_t = 8189)]
    pub batch: usize,
    #[arg(long, value_enum, default_value_t = AccountDistribution::Zipf)]
    pub distribution: AccountDistribution,
    #[arg(long, default_value_t = 2)]
    pub shards: u16,
    /// Database directory; a fresh temporary directory (removed afterwards) when absent.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Submissions in flight at once (1 to 1,024; with none the bench would wait forever).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=IN_FLIGHT_MAX))]
    pub in_flight: u64,
    /// Transfers a second to offer, paced batch by batch (a batch's latency then counts from
    /// when it was due, so a backlog shows); 0: as fast as the engine takes them. Each batch is
    /// due at the start of its share of the schedule, so `transfers_per_second` may exceed the
    /// rate by one batch's share. Checkpoints' cost to latency is measured below capacity, at
    /// the same rate with and without them.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Batches between checkpoints of each shard's state during the run (0: none during the
    /// run; the stop at the end writes one either way, unless --no-final-checkpoint).
    #[arg(long, default_value_t = 0)]
    pub checkpoint_every_batches: u64,
    /// Orders of each shard between checkpoints during the run (0: no trigger by orders); the
    /// default is the server's (`[engine.checkpoints] every_orders`), which bounds memory.
    #[arg(long, default_value_t = engine::shard::DEFAULT_EVERY_ORDERS)]
    pub checkpoint_every_orders: u64,
    /// Stop without writing a checkpoint (the next start replays the whole journal).
    #[arg(long)]
    pub no_final_checkpoint: bool,
    /// Writes RocksDB's statistics (flushes, compactions and write amplification per level and
    /// column family, blob files) at the end of the run into this file.
    #[arg(long)]
    pub rocksdb_stats: Option<PathBuf>,
    /// Gives the allocator's free memory back to the kernel once the resident memory not in use
    /// grows by this many MiB (as `clearing serve` does, `[memory] trim_above_mib`); 0: never.
    #[arg(long, default_value_t = crate::memory::TRIM_ABOVE_MIB, value_parser = clap::value_parser!(u64).range(0..=crate::memory::TRIM_ABOVE_MIB_MAX))]
    pub trim_above_mib: u64,
    /// The cold-number filter's first segment in MiB, as a server's `[engine] cold_filter_mib`
    /// (it grows from there); by default it is sized for every transfer in one segment.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub cold_filter_mib: Option<u64>,
    /// How the database's rows family compacts, as a server's `[storage] rows_compaction`:
    /// universal or leveled.
    #[arg(long, default_value = "universal")]
    pub rows_compaction: storage_rocks::RowsCompaction,
}

/// The most submissions `--in-flight` may keep in flight.
const IN_FLIGHT_MAX: u64 = 1024;

/// The longest paced schedule `--rate` may make: a year.
const RATE_SCHEDULE_SECONDS_MAX: u64 = 365 * 24 * 3600;

const PLATFORM: u32 = 1;
const CNY: CurrencyId = CurrencyId(0);

use crate::memory::{heap_in_use_bytes, peak_resident_bytes, resident_bytes, HeapSampler};

/// One answered submission: how long it took (from when it was sent, or paced, when it was due,
/// until the engine answered), and whether a shard's checkpoint was under way when it was sent
/// or answered, or began or ended in between.
#[derive(Clone, Copy, Debug)]
struct Answered {
    latency: Duration,
    during_checkpoint: bool,
}

/// When each submission is sent: as soon as one of `in_flight` is free, or also no earlier
/// than its place in a schedule of `rate` transfers a second from `start`.
#[derive(Clone, Copy, Debug)]
struct Pace {
    start: Instant,
    rate: u64,
}

impl Pace {
    /// When the submission after the first `sent` transfers is due.
    fn due(&self, sent: u64) -> Instant {
        self.start + Duration::from_secs_f64(sent as f64 / self.rate as f64)
    }
}

fn run_batches(
    engine: &Engine,
    batches: impl Iterator<Item = Vec<Envelope>>,
    in_flight: usize,
    pace: Option<Pace>,
    answered: &mut Vec<Answered>,
) -> Result<u64> {
    type Outcome = (Duration, bool, Result<Vec<Reply>, EngineError>);
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Outcome>(in_flight.max(1));
    let counters: Arc<[Arc<engine::shard::ShardCounters>]> = engine.counters().into();
    // Whether any shard's checkpoint is under way, and the sum of their epochs (each start and
    // end adds one): a batch is during a checkpoint if one was under way when it was sent or
    // answered, or one began or ended in between (the sums differ).
    let checkpointing = move || {
        let epochs = counters.iter().map(|c| c.checkpoint_epoch.load(std::sync::atomic::Ordering::Relaxed));
        epochs.fold((false, 0u64), |(any, sum), epoch| (any || epoch % 2 == 1, sum.wrapping_add(epoch)))
    };
    let mut outstanding = 0usize;
    let mut rejected = 0u64;
    let mut sent = 0u64;
    let mut collect = |(latency, during_checkpoint, result): Outcome, answered: &mut Vec<Answered>| -> Result<()> {
        answered.push(Answered { latency, during_checkpoint });
        rejected += result?.iter().filter(|r| !r.is_ok()).count() as u64;
        Ok(())
    };
    for batch in batches {
        // Paced, a submission's latency counts from when it was due: time spent waiting for a
        // free slot behind slow answers is part of it (no coordinated omission).
        let due = pace.map(|pace| pace.due(sent));
        sent += batch.len() as u64;
        if let Some(wait) = due.and_then(|due| due.checked_duration_since(Instant::now())) {
            std::thread::sleep(wait);
        }
        if outstanding >= in_flight {
            collect(receiver.recv()?, answered)?;
            outstanding -= 1;
        }
        let sender = sender.clone();
        let started = due.unwrap_or_else(Instant::now);
        let checkpointing = checkpointing.clone();
        let at_send = checkpointing();
        engine.submit(
            batch,
            Box::new(move |result| {
                // Timed here, as the engine answers: an answer may wait in the channel until
                // this thread needs a free slot (paced, until its next submission is due).
                let latency = started.elapsed();
                let at_answer = checkpointing();
                let during = at_send.0 || at_answer.0 || at_send.1 != at_answer.1;
                let _ = sender.send((latency, during, result));
            }),
        );
        outstanding += 1;
    }
    for _ in 0..outstanding {
        collect(receiver.recv()?, answered)?;
    }
    Ok(rejected)
}

/// The `p` quantile (0 to 1) of sorted `latencies`, in milliseconds (0 for none).
fn percentile_ms(latencies: &[Duration], p: f64) -> f64 {
    if latencies.is_empty() {
        return 0.0;
    }
    let index = ((latencies.len() - 1) as f64 * p).round() as usize;
    latencies[index].as_secs_f64() * 1000.0
}

/// The most accounts a bench opens (each is a resident account of the engine).
const BENCH_ACCOUNTS_MAX: u64 = 100_000_000;
/// The most transfers a bench sends (its filter and reply list are sized from it).
const BENCH_TRANSFERS_MAX: u64 = 100_000_000_000;

/// Runs the benchmark and prints `transfers_per_second` and batch latency percentiles.
pub fn run(args: BenchArgs) -> Result<()> {
    let trimmer = crate::memory::Trimmer::start(args.trim_above_mib << 20, crate::memory::TRIM_EVERY, crate::memory::TRIM_GAP);
    if args.accounts < 2 || args.batch == 0 || args.shards == 0 {
        return Err(anyhow!("need at least 2 accounts, a positive batch and at least one shard"));
    }
    // A schedule longer than a year is a typing error: refused before anything runs.
    if args.rate > 0 && args.transfers / args.rate > RATE_SCHEDULE_SECONDS_MAX {
        return Err(anyhow!("--rate {} would spread {} transfers over more than a year", args.rate, args.transfers));
    }
    // Past these the run would not fit in memory or sizes would overflow: refused before it starts.
    if args.accounts > BENCH_ACCOUNTS_MAX || args.transfers > BENCH_TRANSFERS_MAX {
        return Err(anyhow!("at most {BENCH_ACCOUNTS_MAX} accounts and {BENCH_TRANSFERS_MAX} transfers"));
    }
    let temporary = match &args.data_dir {
        Some(_) => None,
        None => Some(tempfile_dir()?),
    };
    let data_dir = args.data_dir.clone().unwrap_or_else(|| temporary.clone().expect("set above"));
    std::fs::create_dir_all(&data_dir)?;
    crate::refuse_unfinished_restore(&data_dir)?;
    let store = Arc::new(RocksStore::open_with(&data_dir, args.rows_compaction)?);
    let checkpoints = engine::shard::CheckpointPolicy {
        every_batches: args.checkpoint_every_batches,
        every_orders: args.checkpoint_every_orders,
        every: Duration::ZERO,
        kept: 2,
        on_shutdown: !args.no_final_checkpoint,
    };
    // The cold-number filter sized for every transfer's order number in one segment (16 bits
    // each: it grows once about 15 bits a key are used), at least the default.
    let sized = (args.transfers as usize * 2).next_multiple_of(64).max(engine::cold::COLD_FILTER_BYTES);
    let cold_filter_bytes = args.cold_filter_mib.map_or(sized, |mib| (mib as usize) << 20);
    let config = EngineConfig { shard_count: args.shards, batch_size_max: args.batch, checkpoints, cold_filter_bytes, ..EngineConfig::default() };
    let engine = Engine::start(config, store.clone())?;
    println!(
        "bench: accounts={} transfers={} batch={} distribution={:?} shards={} in_flight={} rate={} data_dir={}",
        args.accounts,
        args.transfers,
        args.batch,
        args.distribution,
        args.shards,
        args.in_flight,
        if args.rate == 0 { "unpaced".to_string() } else { args.rate.to_string() },
        data_dir.display()
    );

    // Accounts, opened without order numbers so that only account state is measured per account.
    let resident_before = resident_bytes();
    let opens = (0..args.accounts).map(|owner| Envelope {
        platform: PLATFORM,
        out_order_no: None,
        command: Command::OpenAccount { owner, currency: CNY, limits: Limits::NONE },
    });
    let mut accounts: Vec<AccountId> = Vec::with_capacity(args.accounts as usize);
    for chunk in chunked(opens, args.batch) {
        for reply in engine.execute(chunk)? {
            accounts.push(AccountId(reply.id));
        }
    }
    let resident_after = resident_bytes();
    println!("accounts_opened: {} resident_bytes_per_account: {}", accounts.len(), resident_after.saturating_sub(resident_before) / args.accounts);
    let fund = accounts.iter().map(|a| Envelope {
        platform: PLATFORM,
        out_order_no: None,
        command: Command::Recharge { account: *a, currency: CNY, amount: 1_000_000_000_000, channel: 1 },
    });
    run_batches(&engine, chunked(fund, args.batch), args.in_flight as usize, None, &mut Vec::new())?;
    engine.wait_quiescent(Duration::from_secs(60))?;

    // Transfers: balance payments with one payee, each with its own order number (idempotent).
    let mut rng = StdRng::seed_from_u64(args.seed);
    // The Zipf table only for a Zipf run (a uniform one draws without it).
    let zipf = match args.distribution {
        AccountDistribution::Zipf => Some(zipf_ranks(accounts.len())?),
        AccountDistribution::Uniform => None,
    };
    let mut permutation: Vec<usize> = (0..accounts.len()).collect();
    for i in (1..permutation.len()).rev() {
        permutation.swap(i, rng.gen_range(0..=i));
    }
    let draw = move |rng: &mut StdRng| -> usize {
        match &zipf {
            Some(zipf) => permutation[zipf.sample(rng)],
            None => rng.gen_range(0..permutation.len()),
        }
    };
    let transfers = (0..args.transfers).map(|i| {
        let payer = draw(&mut rng);
        let mut payee = draw(&mut rng);
        while payee == payer {
            payee = rng.gen_range(0..accounts.len());
        }
        let amount = rng.gen_range(1..=10_000);
        let mut number = [0u8; 20];
        Envelope {
            platform: PLATFORM,
            out_order_no: Some(OutOrderNo::new(format_number(&mut number, i)).expect("digits are valid")),
            command: Command::Payment {
                payer: accounts[payer],
                guarantee: false,
                currency: CNY,
                amount,
                payees: [Leg { account: accounts[payee], amount }].into_iter().collect(),
                splits: Legs::new(),
            },
        }
    });
    let mut answered = Vec::with_capacity((args.transfers as usize).div_ceil(args.batch));
    let heap = HeapSampler::start();
    let started = Instant::now();
    let pace = (args.rate > 0).then_some(Pace { start: started, rate: args.rate });
    let rejected = run_batches(&engine, chunked(transfers, args.batch), args.in_flight as usize, pace, &mut answered)?;
    engine.wait_quiescent(Duration::from_secs(120))?;
    let elapsed = started.elapsed();
    let report = engine::invariants::check_engine(&engine)?;
    let resident_at_end = resident_bytes();
    let heap_at_end = heap_in_use_bytes();
    let rocksdb_at_end = store.memory_report();
    let (filter_bytes, filter_segments, filter_stopped) = engine.cold_filter_figures();
    if let Some(path) = &args.rocksdb_stats {
        std::fs::write(path, store.statistics())?;
    }
    for shard in 0..args.shards {
        println!("shard {shard} holds: {}", engine.read_shard(shard, |state| state.history_report())?);
    }
    let stopping = Instant::now();
    engine.shutdown();
    let stopped_in = stopping.elapsed();
    for (shard, c) in engine.counters().iter().enumerate() {
        use std::sync::atomic::Ordering::Relaxed;
        println!(
            "shard {shard} checkpoints: {} last_at_batch: {} bytes: {} hold_ms last/max: {:.1}/{:.1} write_ms_last: {:.1} write_s_total: {:.1} lag_holds: {}",
            c.checkpoints.load(Relaxed),
            c.checkpoint_sequence.load(Relaxed),
            c.checkpoint_bytes.load(Relaxed),
            c.checkpoint_hold_us.load(Relaxed) as f64 / 1000.0,
            c.largest_checkpoint_hold_us.load(Relaxed) as f64 / 1000.0,
            c.checkpoint_write_us.load(Relaxed) as f64 / 1000.0,
            c.checkpoint_write_us_total.load(Relaxed) as f64 / 1e6,
            c.checkpoint_lag_holds.load(Relaxed),
        );
        let by_phase = |totals: &[std::sync::atomic::AtomicU64]| -> String {
            let phases = engine::checkpoint::PHASE_NAMES.iter().zip(totals);
            phases.map(|(name, total)| format!("{name} {:.1}", total.load(Relaxed) as f64 / 1e6)).collect::<Vec<_>>().join(", ")
        };
        println!("shard {shard} checkpoint_s_total by phase: {}", by_phase(&c.checkpoint_phase_us_total));
        println!("shard {shard} checkpoint_cpu_s_total by phase: {}", by_phase(&c.checkpoint_phase_cpu_us_total));
        println!("shard {shard} checkpoint_gave_way_s_total: {:.1}", c.checkpoint_gave_way_us_total.load(Relaxed) as f64 / 1e6);
        println!(
            "shard {shard} idempotency in_memory: {} evicted: {} cold_probes: {} cold_probe_ms: {:.1}",
            c.idempotency_in_memory.load(Relaxed),
            c.idempotency_evicted.load(Relaxed),
            c.cold_probes.load(Relaxed),
            c.cold_probe_us.load(Relaxed) as f64 / 1000.0,
        );
    }
    println!("stop_s (final checkpoint included): {:.3}", stopped_in.as_secs_f64());
    let sorted = |during: Option<bool>| -> Vec<Duration> {
        let mut latencies: Vec<Duration> = answered.iter().filter(|a| during.is_none_or(|d| a.during_checkpoint == d)).map(|a| a.latency).collect();
        latencies.sort();
        latencies
    };
    let latencies = sorted(None);
    let percentile = |p: f64| percentile_ms(&latencies, p);
    println!("rejected: {rejected} invariants_ok: {} elapsed_s: {:.3}", report.ok, elapsed.as_secs_f64());
    println!("resident_bytes: {resident_at_end} (peak {})", peak_resident_bytes());
    println!("heap_in_use_bytes: {heap_at_end} (peak of 1 s samples {}) trims: {}", heap.peak(), trimmer.trims());
    println!("cold_filter_bytes: {filter_bytes} segments: {filter_segments} stopped: {filter_stopped}");
    println!(
        "rocksdb at the end of the run: {rocksdb_at_end}; direct_writes: {}; rows_compaction: {}; online_discard: {}; read_ahead_kib: {}",
        store.direct_writes(),
        store.rows_compaction().map_or("default family", |style| style.name()),
        store.online_discard().map_or_else(|| "no".to_string(), |point| format!("yes ({})", point.display())),
        store
            .read_ahead()
            .map_or_else(|| "none (no block device of its own, or unreadable)".to_string(), |read_ahead| format!("{} ({})", read_ahead.kib, read_ahead.disk))
    );
    println!("transfers_per_second: {}", (args.transfers as f64 / elapsed.as_secs_f64()) as u64);
    println!("batch_latency_ms p1 p50 p99 p100: {:.1} {:.1} {:.1} {:.1}", percentile(0.01), percentile(0.50), percentile(0.99), percentile(1.0));
    // Batches with a shard's checkpoint under way when sent or answered (or beginning or ending
    // in between), and the others.
    for (name, during) in [("during_checkpoints", true), ("between_checkpoints", false)] {
        let part = sorted(Some(during));
        let figures = if part.is_empty() {
            "- - -".to_string()
        } else {
            format!("{:.1} {:.1} {:.1}", percentile_ms(&part, 0.50), percentile_ms(&part, 0.99), percentile_ms(&part, 1.0))
        };
        println!("batch_latency_ms {name} batches p50 p99 p100: {} {figures}", part.len());
    }
    // The close a graceful stop makes: memtables into tables (`flush_for_close`), timed.
    let closing = Instant::now();
    let flushed = store.flush_for_close();
    println!(
        "close_s (memtables flushed): {:.3}{}",
        closing.elapsed().as_secs_f64(),
        flushed.err().map(|why| format!(" (not flushed: {why})")).unwrap_or_default()
    );
    drop(store);
    if let Some(dir) = temporary {
        let _ = std::fs::remove_dir_all(dir);
    }
    if !report.ok || rejected > 0 {
        return Err(anyhow!("benchmark failed: invariants ok = {}, rejected = {rejected}", report.ok));
    }
    Ok(())
}

/// Groups an iterator into vectors of `size`.
fn chunked<T>(mut items: impl Iterator<Item = T>, size: usize) -> impl Iterator<Item = Vec<T>> {
    std::iter::from_fn(move || {
        let chunk: Vec<T> = items.by_ref().take(size).collect();
        (!chunk.is_empty()).then_some(chunk)
    })
}

/// Zipf's law with exponent 1 over `n` ranks (rank `k`, from 0, drawn with a chance
/// proportional to `1 / (k + 1)`), as an alias table: a draw is one uniform index and one
/// uniform weight. `rand_distr::Zipf` draws the same law by rejection, a `pow` and an `exp` a
/// draw: 16 % of the thread that generates and submits the transfers at 10 M (session 43), CPU
/// the shards and checkpoints on two cores would use.
fn zipf_ranks(n: usize) -> Result<WeightedAliasIndex<f64>> {
    WeightedAliasIndex::new((1..=n).map(|rank| 1.0 / rank as f64).collect()).map_err(|e| anyhow!("zipf over {n} accounts: {e}"))
}

/// Writes `value` in decimal into `buffer` without allocating; returns the digits.
fn format_number(buffer: &mut [u8; 20], mut value: u64) -> &str {
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    std::str::from_utf8(&buffer[start..]).expect("ASCII digits")
}

/// A fresh directory under the system temporary directory.
fn tempfile_dir() -> Result<PathBuf> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
    let dir = std::env::temp_dir().join(format!("clearing-bench-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The alias table draws Zipf's law: over 10,000 ranks and 2,000,000 seeded draws, each of
    /// the first ranks within 2 % of its share `1 / (k H)`, the top tenth of ranks within 1 %
    /// of its share, and every rank inside the table.
    #[test]
    fn zipf_ranks_follow_the_law() {
        let n = 10_000;
        let draws = 2_000_000;
        let zipf = zipf_ranks(n).expect("table");
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = vec![0u64; n];
        for _ in 0..draws {
            counts[zipf.sample(&mut rng)] += 1;
        }
        let harmonic: f64 = (1..=n).map(|k| 1.0 / k as f64).sum();
        for (rank, &count) in counts.iter().enumerate().take(5) {
            let expected = draws as f64 / ((rank + 1) as f64 * harmonic);
            let seen = count as f64;
            assert!((seen - expected).abs() < 0.02 * expected, "rank {rank}: {seen} draws, expected {expected:.0}");
        }
        let top: u64 = counts[..n / 10].iter().sum();
        let top_share: f64 = (1..=n / 10).map(|k| 1.0 / k as f64).sum::<f64>() / harmonic;
        let expected = draws as f64 * top_share;
        assert!((top as f64 - expected).abs() < 0.01 * expected, "top tenth: {top} draws, expected {expected:.0}");
    }

    /// A paced schedule puts each submission at its share of the rate from the start: 8,189
    /// transfers at 100,000 a second are due 81.89 ms in, a million 10 s in.
    #[test]
    fn pace_schedules_submissions_by_the_transfers_before_them() {
        let start = Instant::now();
        let pace = Pace { start, rate: 100_000 };
        assert_eq!(pace.due(0), start);
        assert_eq!(pace.due(8_189) - start, Duration::from_micros(81_890));
        assert_eq!(pace.due(1_000_000) - start, Duration::from_secs(10));
    }

    #[test]
    fn percentiles_of_sorted_latencies() {
        let latencies: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&latencies, 0.0), 1.0);
        assert_eq!(percentile_ms(&latencies, 0.5), 51.0);
        assert_eq!(percentile_ms(&latencies, 0.99), 99.0);
        assert_eq!(percentile_ms(&latencies, 1.0), 100.0);
        assert_eq!(percentile_ms(&[], 0.99), 0.0, "no batches in a part: 0, not a panic");
    }

    #[test]
    fn zipf_over_no_accounts_is_an_error() {
        assert!(zipf_ranks(0).is_err());
    }
}
