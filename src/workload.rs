//! Deterministic order workloads: the demo `serve` runs, and the crash test's workload.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use clap::Args;
use engine::ledger::command::{Command, Envelope, OutOrderNo};
use engine::ledger::types::{AccountId, Leg, Legs, Limits, OrderId, Reply};
use engine::money::CurrencyId;
use engine::Engine;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use storage_rocks::RocksStore;

use crate::config::Config;

/// The platform of the crash workload (run in its own data directory).
const PLATFORM: u32 = 1;
/// The demo's platform: reserved, never handed out to a real platform (those count up from 1).
const DEMO_PLATFORM: u32 = u32::MAX;
const CNY: CurrencyId = CurrencyId(0);

fn envelope(out_order_no: &str, command: Command) -> Envelope {
    Envelope { platform: PLATFORM, out_order_no: Some(OutOrderNo::new(out_order_no).expect("valid order number")), command }
}

fn demo_envelope(out_order_no: &str, command: Command) -> Envelope {
    Envelope { platform: DEMO_PLATFORM, ..envelope(out_order_no, command) }
}

fn legs(items: &[(AccountId, i64)]) -> Legs {
    items.iter().map(|(account, amount)| Leg { account: *account, amount: *amount }).collect()
}

fn expect_ok(what: &str, reply: Reply) -> Result<Reply> {
    if reply.is_ok() {
        Ok(reply)
    } else {
        Err(anyhow!("{what}: {}", reply.code.name()))
    }
}

/// A home-decoration scenario: a homeowner pays a renovation company into escrow with a platform
/// commission split, confirms in two stages, income matures, and the company withdraws.
pub fn demo(engine: &Engine) -> Result<()> {
    let open = |key: &str, owner: u64| -> Result<AccountId> {
        let command = Command::OpenAccount { owner, currency: CNY, limits: Limits::NONE };
        Ok(AccountId(expect_ok(key, engine.execute_one(demo_envelope(key, command))?)?.id))
    };
    let homeowner = open("demo-open-homeowner", 1)?;
    let company = open("demo-open-company", 2)?;
    let platform = open("demo-open-platform", 3)?;
    let run = |key: &str, command: Command| -> Result<Reply> { expect_ok(key, engine.execute_one(demo_envelope(key, command))?) };
    run("demo-recharge", Command::Recharge { account: homeowner, currency: CNY, amount: 10_000_000, channel: 1 })?;
    let payment = run(
        "demo-guarantee",
        Command::Payment {
            payer: homeowner,
            guarantee: true,
            currency: CNY,
            amount: 8_000_000,
            payees: legs(&[(company, 7_600_000)]),
            splits: legs(&[(platform, 400_000)]),
        },
    )?;
    let order = OrderId(payment.id);
    run("demo-confirm-1", Command::Confirm { order, releases: legs(&[(company, 3_000_000)]) })?;
    run("demo-confirm-2", Command::Confirm { order, releases: Legs::new() })?;
    engine.wait_quiescent(std::time::Duration::from_secs(10))?;
    let today = engine.read_shard(0, |state| state.business_day(now_micros()))?;
    engine.broadcast(Envelope { platform: DEMO_PLATFORM, out_order_no: None, command: Command::Mature { through_day: today } })?;
    let withdrawal = run("demo-withdraw", Command::Withdraw { account: company, currency: CNY, amount: 5_000_000, fee: 200, channel: 1 })?;
    let completed = engine.execute_one(Envelope {
        platform: DEMO_PLATFORM,
        out_order_no: None,
        command: Command::CompleteWithdrawal { order: OrderId(withdrawal.id), succeeded: true },
    })?;
    expect_ok("demo-withdraw-complete", completed)?;
    for (name, account) in [("homeowner", homeowner), ("company", company), ("platform", platform)] {
        let shard = account.shard(engine.config().shard_count);
        let line = engine.read_shard(shard, move |state| {
            let a = state.account(account).expect("opened");
            let cny = &state.currencies[0];
            format!(
                "demo {name:<9} account {:>4}: settled {} unsettled {} frozen {}",
                account.0,
                cny.format(a.settled),
                cny.format(a.unsettled),
                cny.format(a.frozen)
            )
        })?;
        println!("{line}");
    }
    Ok(())
}

fn now_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Arguments of `clearing workload`.
#[derive(Args)]
pub struct WorkloadArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Orders after the accounts are opened and funded.
    #[arg(long, default_value_t = 2000)]
    pub orders: u64,
    #[arg(long, default_value_t = 40)]
    pub accounts: u64,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Commands per engine submission.
    #[arg(long, default_value_t = 32)]
    pub round: usize,
}

/// What the workload has learnt from earlier replies (the same on every run: replies replay).
#[derive(Default)]
struct Memory {
    accounts: Vec<AccountId>,
    payments: Vec<(OrderId, AccountId)>,
    guarantees: Vec<OrderId>,
    withdrawals: Vec<OrderId>,
    freezes: Vec<OrderId>,
}

/// Runs the crash workload: every acknowledged order is printed as `ack KEY ID REPLAYED`.
pub fn run(args: WorkloadArgs) -> Result<()> {
    let config = Config::load(args.config.as_deref())?;
    std::fs::create_dir_all(&args.data_dir)?;
    crate::refuse_unfinished_restore(&args.data_dir)?;
    let store = Arc::new(RocksStore::open_with(&args.data_dir, config.rows_compaction)?);
    let engine = Engine::start(config.engine.clone(), store)?;
    let stdout = std::io::stdout();
    let mut memory = Memory::default();
    let opens: Vec<Envelope> =
        (0..args.accounts).map(|k| envelope(&format!("open-{k}"), Command::OpenAccount { owner: k, currency: CNY, limits: Limits::NONE })).collect();
    for reply in submit(&engine, opens, &stdout)? {
        memory.accounts.push(AccountId(expect_ok("open", reply)?.id));
    }
    let recharges: Vec<Envelope> = memory
        .accounts
        .iter()
        .enumerate()
        .map(|(k, a)| envelope(&format!("fund-{k}"), Command::Recharge { account: *a, currency: CNY, amount: 100_000_000, channel: 1 }))
        .collect();
    submit(&engine, recharges, &stdout)?;
    let mut next = 0u64;
    while next < args.orders {
        let end = (next + args.round as u64).min(args.orders);
        let round: Vec<(Envelope, Kind)> = (next..end).map(|i| order(i, args.seed, &memory)).collect();
        let kinds: Vec<Kind> = round.iter().map(|(_, k)| *k).collect();
        let replies = submit(&engine, round.into_iter().map(|(e, _)| e).collect(), &stdout)?;
        for (kind, reply) in kinds.into_iter().zip(replies) {
            if !reply.is_ok() {
                continue;
            }
            let id = OrderId(reply.id);
            match kind {
                Kind::Payment(payee) => memory.payments.push((id, payee)),
                Kind::Guarantee => memory.guarantees.push(id),
                Kind::Withdrawal => memory.withdrawals.push(id),
                Kind::Freeze => memory.freezes.push(id),
                Kind::Other => {}
            }
        }
        next = end;
    }
    engine.wait_quiescent(std::time::Duration::from_secs(30))?;
    let report = engine::invariants::check_engine(&engine)?;
    crate::report::print_invariants(&report, &mut stdout.lock())?;
    engine.shutdown();
    if !report.ok {
        return Err(anyhow!("invariants failed"));
    }
    println!("workload complete");
    Ok(())
}

#[derive(Clone, Copy)]
enum Kind {
    Payment(AccountId),
    Guarantee,
    Withdrawal,
    Freeze,
    Other,
}

/// The `i`-th order: drawn from a generator seeded by (seed, i) and what earlier replies said.
fn order(i: u64, seed: u64, memory: &Memory) -> (Envelope, Kind) {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(i));
    let accounts = &memory.accounts;
    let pick = |rng: &mut StdRng| accounts[rng.gen_range(0..accounts.len())];
    let payer = pick(&mut rng);
    let mut payee = pick(&mut rng);
    while payee == payer {
        payee = pick(&mut rng);
    }
    let amount = rng.gen_range(1..=10_000);
    let roll = rng.gen_range(0..100);
    match roll {
        0..=44 => (
            envelope(
                &format!("pay-{i}"),
                Command::Payment { payer, guarantee: false, currency: CNY, amount, payees: legs(&[(payee, amount)]), splits: Legs::new() },
            ),
            Kind::Payment(payee),
        ),
        45..=59 => (
            envelope(
                &format!("gp-{i}"),
                Command::Payment { payer, guarantee: true, currency: CNY, amount, payees: legs(&[(payee, amount)]), splits: Legs::new() },
            ),
            Kind::Guarantee,
        ),
        60..=67 if !memory.guarantees.is_empty() => {
            let order = memory.guarantees[rng.gen_range(0..memory.guarantees.len())];
            let command = if rng.gen_bool(0.7) { Command::Confirm { order, releases: Legs::new() } } else { Command::Cancel { order, amount: None } };
            (envelope(&format!("settle-{i}"), command), Kind::Other)
        }
        68..=75 if !memory.payments.is_empty() => {
            let (payment, payee) = memory.payments[rng.gen_range(0..memory.payments.len())];
            (envelope(&format!("rf-{i}"), Command::Refund { payment, payee, amount: 1 }), Kind::Other)
        }
        76..=83 => (envelope(&format!("wd-{i}"), Command::Withdraw { account: payer, currency: CNY, amount, fee: 100, channel: 1 }), Kind::Withdrawal),
        84..=89 if !memory.withdrawals.is_empty() => {
            let order = memory.withdrawals[rng.gen_range(0..memory.withdrawals.len())];
            let succeeded = !order.0.is_multiple_of(3);
            (envelope(&format!("wdc-{i}"), Command::CompleteWithdrawal { order, succeeded }), Kind::Other)
        }
        90..=94 => {
            (envelope(&format!("fz-{i}"), Command::Freeze { account: payer, currency: CNY, amount, reason: "dispute".into(), expires_at: None }), Kind::Freeze)
        }
        95..=99 if !memory.freezes.is_empty() => {
            let order = memory.freezes[rng.gen_range(0..memory.freezes.len())];
            (envelope(&format!("fzr-{i}"), Command::ReleaseFreeze { order, amount: None }), Kind::Other)
        }
        _ => (envelope(&format!("rc-{i}"), Command::Recharge { account: payer, currency: CNY, amount, channel: 2 }), Kind::Other),
    }
}

/// Executes one round and prints an `ack` line per command that took effect.
fn submit(engine: &Engine, envelopes: Vec<Envelope>, stdout: &std::io::Stdout) -> Result<Vec<Reply>> {
    let keys: Vec<String> = envelopes.iter().map(|e| e.out_order_no.map(|n| n.as_str().to_string()).unwrap_or_default()).collect();
    let replies = engine.execute(envelopes)?;
    let mut out = stdout.lock();
    for (key, reply) in keys.iter().zip(&replies) {
        if reply.is_ok() {
            writeln!(out, "ack {key} {} {}", reply.id, reply.replayed)?;
        }
    }
    out.flush()?;
    Ok(replies)
}
