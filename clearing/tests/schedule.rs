//! The daily settlement schedule across a stop: the days whose cut-off passed while the server
//! was down run at the next start, in order, from the day after the last run that succeeded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clearing_actor::calendar::{Calendar, Clock};
use clearing_actor::channels::ChannelTable;
use clearing_actor::settlement::PlatformTerms;
use clearing_actor::{Clearing, ClearingConfig};
use engine::ledger::command::{Command, Envelope};
use engine::ledger::types::{AccountId, Leg, Legs, Limits};
use engine::money::CurrencyId;
use engine::{Engine, EngineConfig};

mod common;
use common::spec;

const P: u32 = 5;
const DAY: u64 = 86_400_000_000;
const HOUR: u64 = 3_600_000_000;

/// A wall clock the test sets (business days); instants are the real ones.
struct SetClock(AtomicU64);

impl Clock for SetClock {
    fn now_micros(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
    fn instant(&self) -> Instant {
        Instant::now()
    }
}

fn run(engine: &Engine, command: Command) -> u64 {
    let reply = engine.execute_one(Envelope { platform: P, out_order_no: None, command }).unwrap();
    assert!(reply.is_ok(), "{reply:?}");
    reply.id
}

/// The merchant's (settled, unsettled) balance.
fn balance(engine: &Engine, account: AccountId) -> (i64, i64) {
    engine.read_shard(0, move |state| state.account(account).map(|a| (a.settled, a.unsettled)).unwrap()).unwrap()
}

#[test]
fn a_start_after_missed_cut_offs_runs_the_missed_days_in_order() {
    let store: Arc<dyn storage::Store> = Arc::new(storage::MemoryStore::new());
    let engine =
        Arc::new(Engine::start(EngineConfig { shard_count: 1, ack_flush_ms: 1, utc_offset_seconds: 0, ..EngineConfig::default() }, store.clone()).unwrap());
    let currencies = engine.config().currencies.clone();
    let table = || ChannelTable::new(vec![spec(1, "cheap", "out", "1.00").build(&currencies).unwrap()], Calendar::default()).unwrap();
    let bank = Arc::new(banksim::Simulator::start(banksim::SimulatorConfig::default(), "key".into(), store.clone()).unwrap());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let terms = Arc::new(|_day| vec![PlatformTerms { id: P, public_id: "plt_5".into(), auto_confirm_days: 3, settlement_cycle_days: 1, rule: None }]);
    let config = ClearingConfig { tick: Duration::from_millis(10), settlement_cutoff_minute: Some(23 * 60), ..ClearingConfig::default() };
    let start = |clock: Arc<SetClock>| Clearing::start(engine.clone(), store.clone(), bank.clone(), table(), clock, terms.clone(), config.clone()).unwrap();
    let wait_for = |clearing: &Clearing, day: u32| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let schedule = runtime.block_on(clearing.schedule()).unwrap().expect("scheduled");
            if schedule.last_success_day >= Some(day) {
                return schedule;
            }
            assert!(Instant::now() < deadline, "the run of day {day} did not happen: {schedule:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    // Income of today (the engine's clock) for a merchant.
    let open = |owner| AccountId(run(&engine, Command::OpenAccount { owner, currency: CurrencyId(0), limits: Limits::NONE }));
    let (buyer, merchant) = (open(1), open(2));
    run(&engine, Command::Recharge { account: buyer, currency: CurrencyId(0), amount: 10_000, channel: 1 });
    let pay = |amount| {
        let payees: Legs = [Leg { account: merchant, amount }].into_iter().collect();
        run(&engine, Command::Payment { payer: buyer, guarantee: false, currency: CurrencyId(0), amount, payees, splits: Legs::new() });
    };
    pay(300);
    // The business day the engine gave that income (its own clock), as the day the test is on.
    let today = engine.read_shard(0, move |state| state.lots.get(merchant).and_then(|lots| lots.first()).map(|lot| lot.day)).unwrap().expect("a lot");

    // Tomorrow at its cut-off the run matures today's income (one day's cycle).
    let clock = Arc::new(SetClock(AtomicU64::new(u64::from(today + 1) * DAY + 22 * HOUR)));
    let first = start(clock.clone());
    clock.0.store(u64::from(today + 1) * DAY + 23 * HOUR, Ordering::SeqCst);
    assert_eq!(wait_for(&first, today + 1).next_day, today + 2);
    assert_eq!(balance(&engine, merchant), (300, 0));
    first.stop();

    // More income of today, then a stop across three cut-offs: the start runs the two missed
    // days at once (today's income matures in the first), and today's at its cut-off.
    pay(200);
    assert_eq!(balance(&engine, merchant), (300, 200));
    let clock = Arc::new(SetClock(AtomicU64::new(u64::from(today + 4) * DAY + 10 * HOUR)));
    let second = start(clock.clone());
    let schedule = wait_for(&second, today + 3);
    assert_eq!((schedule.last_success_day, schedule.next_day), (Some(today + 3), today + 4));
    assert_eq!(balance(&engine, merchant), (500, 0));
    std::thread::sleep(Duration::from_millis(100));
    let schedule = runtime.block_on(second.schedule()).unwrap().unwrap();
    assert_eq!((schedule.last_success_day, schedule.next_day), (Some(today + 3), today + 4), "today's waits for its cut-off");
    second.stop();
    engine.shutdown();
}
