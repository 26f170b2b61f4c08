//! The clearing actor with a real engine (in-memory store) and the bank simulator: payouts are
//! routed, refused ones give their routing back, and two verdicts about one failure move a
//! payout at most once.

use std::sync::Arc;
use std::time::Duration;

use bank::{BankChannel, BankStatus};
use clearing_actor::calendar::{Calendar, SystemClock};
use clearing_actor::cases::HoldFate;
use clearing_actor::channels::{AccountType, Arrival, ChannelTable};
use clearing_actor::payouts::{PayoutRequest, PayoutVerdict, VerdictOutcome};
use clearing_actor::settlement::StepBounds;
use clearing_actor::{Clearing, ClearingConfig, ClearingError};
use engine::ledger::command::{Command, Envelope, OutOrderNo};
use engine::ledger::types::{AccountId, Limits, OrderDetail, OrderId, OrderStatus};
use engine::money::{CurrencyId, CurrencySpec};
use engine::result::ResultCode;
use engine::{Engine, EngineConfig};

mod common;
use common::spec;

const P: u32 = 5;

fn cny() -> CurrencySpec {
    CurrencySpec::new("CNY", 2).unwrap()
}

struct World {
    engine: Arc<Engine>,
    clearing: Clearing,
    bank: Arc<banksim::Simulator>,
    store: Arc<dyn storage::Store>,
    runtime: tokio::runtime::Runtime,
}

/// The simulated bank takes a minute to answer in these tests (they give the verdicts).
fn slow() -> banksim::SimulatorConfig {
    banksim::SimulatorConfig { latency_ms: 60_000, ..banksim::SimulatorConfig::default() }
}

impl World {
    fn new() -> World {
        let store: Arc<dyn storage::Store> = Arc::new(storage::MemoryStore::new());
        let engine = Arc::new(Engine::start(EngineConfig { shard_count: 1, ack_flush_ms: 1, ..EngineConfig::default() }, store.clone()).unwrap());
        let bank = Arc::new(banksim::Simulator::start(slow(), "key".into(), store.clone()).unwrap());
        let clearing = World::clearing(&engine, &store, bank.clone());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        World { engine, clearing, bank, store, runtime }
    }

    /// The clearing actor on `engine` and `store`, speaking to `bank` (a start: it resumes what
    /// waits for a verdict).
    fn clearing(engine: &Arc<Engine>, store: &Arc<dyn storage::Store>, bank: Arc<dyn BankChannel>) -> Clearing {
        let currencies = engine.config().currencies.clone();
        let channels = vec![spec(1, "cheap", "out", "1.00").build(&currencies).unwrap(), spec(2, "dear", "out", "5.00").build(&currencies).unwrap()];
        let table = ChannelTable::new(channels, Calendar { utc_offset_seconds: 8 * 3600, ..Calendar::default() }).unwrap();
        Clearing::start(
            engine.clone(),
            store.clone(),
            bank,
            table,
            Arc::new(SystemClock),
            Arc::new(|_| Vec::new()),
            ClearingConfig { settlement_days_ahead_max: 7, ..ClearingConfig::default() },
        )
        .unwrap()
    }

    fn account(&self, owner: u64, amount: i64) -> AccountId {
        let open = Command::OpenAccount { owner, currency: CurrencyId(0), limits: Limits::NONE };
        let account = AccountId(self.engine.execute_one(Envelope { platform: P, out_order_no: None, command: open }).unwrap().id);
        if amount > 0 {
            let fund = Command::Recharge { account, currency: CurrencyId(0), amount, channel: 9 };
            assert!(self.engine.execute_one(Envelope { platform: P, out_order_no: None, command: fund }).unwrap().is_ok());
        }
        account
    }

    fn request(number: &str, account: AccountId, amount: i64) -> PayoutRequest {
        PayoutRequest {
            platform: P,
            number: OutOrderNo::new(number).unwrap(),
            account,
            currency: CurrencyId(0),
            spec: cny(),
            amount,
            arrival: Arrival::Realtime,
            account_type: AccountType::Personal,
            card_id: 0,
            card_no: "6222020200112233445".into(),
            holder_name: None,
        }
    }

    fn payout(&self, number: &str, account: AccountId, amount: i64) -> clearing_actor::payouts::PayoutOutcome {
        self.runtime.block_on(self.clearing.payout(World::request(number, account, amount))).unwrap()
    }

    /// A channel's verdict on payout `order`.
    fn verdict(&self, order: OrderId, succeeded: bool, channel: &str) -> Result<VerdictOutcome, clearing_actor::ClearingError> {
        self.runtime.block_on(self.clearing.payout_verdict(PayoutVerdict { order, succeeded, channel: Some(channel.into()) }))
    }

    /// A payout both channels failed: failed for good, its amount and fee back in the account.
    fn failed_for_good(&self, number: &str, account: AccountId, amount: i64) -> OrderId {
        let order = OrderId(self.payout(number, account, amount).reply.id);
        assert!(matches!(self.verdict(order, false, "cheap").unwrap(), VerdictOutcome::Rerouted { .. }));
        assert!(matches!(self.verdict(order, false, "dear").unwrap(), VerdictOutcome::Completed { status: Some("failed"), .. }));
        order
    }

    /// A bank of a moment's latency on this store decides `request` (its order on channel 1):
    /// its verdict, kept in the store for a bank started later.
    fn decided_by_a_quick_bank(&self, request: bank::Request) -> Option<bool> {
        let order = match &request {
            bank::Request::MoneyIn { order, .. } | bank::Request::MoneyOut { order, .. } | bank::Request::Collection { order, .. } => *order,
            bank::Request::MicroDeposit { .. } => return None,
        };
        let quick = banksim::Simulator::start(banksim::SimulatorConfig { latency_ms: 1, ..slow() }, "key".into(), self.store.clone()).unwrap();
        quick.submit(request);
        (0..500).find_map(|_| match quick.query(order, 1) {
            BankStatus::Decided { succeeded } => Some(succeeded),
            _ => {
                std::thread::sleep(Duration::from_millis(10));
                None
            }
        })
    }

    /// The open cases (the tests open a few).
    fn open_cases(&self) -> Vec<clearing_actor::cases::Case> {
        self.runtime.block_on(self.clearing.cases_page(clearing_actor::cases::CaseFilter::Open, None, 10)).unwrap().cases
    }

    fn channel_of(&self, order: OrderId) -> (u16, i64) {
        self.engine
            .read_shard(0, move |state| match state.order(order).unwrap().detail {
                OrderDetail::Withdrawal { channel, fee } => (channel, fee),
                _ => unreachable!("a withdrawal"),
            })
            .unwrap()
    }
}

#[test]
fn a_probe_the_engine_refused_does_not_leave_the_channel_stuck() {
    let w = World::new();
    let (rich, poor) = (w.account(1, 1_000_000), w.account(2, 0));
    w.runtime.block_on(w.clearing.trip(1, Duration::ZERO)).unwrap();
    let refused = w.payout("p1", poor, 10_000);
    assert_eq!((refused.reply.code, refused.channel.as_str()), (ResultCode::InsufficientFunds, "cheap"), "the probe, refused by the engine");
    // Regression: the refused probe kept the half-open channel "probing" for good.
    let next = w.payout("p2", rich, 10_000);
    assert_eq!((next.reply.code, next.channel.as_str()), (ResultCode::Ok, "cheap"), "the next order may probe the channel");
    // The refused order number keeps its refusal (journal format 5): its repeat is the engine's
    // replay on the first channel, and the number for another account is a conflict before
    // anything is routed (the note names its account).
    let again = w.payout("p1", poor, 10_000);
    assert_eq!((again.reply.code, again.reply.replayed, again.channel.as_str()), (ResultCode::InsufficientFunds, true, "cheap"));
    let other = w.runtime.block_on(w.clearing.payout(World::request("p1", rich, 10_000)));
    assert!(matches!(other, Err(clearing_actor::ClearingError::IdempotencyConflict)), "{other:?}");
    let again = w.payout("p1", poor, 10_000);
    assert_eq!((again.reply.code, again.reply.replayed), (ResultCode::InsufficientFunds, true), "the note was not overwritten");
}

#[test]
fn two_verdicts_about_one_failure_move_a_payout_once() {
    let w = World::new();
    let account = w.account(1, 1_000_000);
    let first = w.payout("w1", account, 10_000);
    let order = OrderId(first.reply.id);
    assert_eq!((first.channel.as_str(), w.channel_of(order)), ("cheap", (1, 100)));
    // A late failure callback and the timeout's status query, both about channel `cheap`.
    let verdict = || PayoutVerdict { order, succeeded: false, channel: Some("cheap".into()) };
    let (a, b) = w.runtime.block_on(async { tokio::join!(w.clearing.payout_verdict(verdict()), w.clearing.payout_verdict(verdict())) });
    let outcomes = [a.unwrap(), b.unwrap()];
    let rerouted = outcomes.iter().filter(|o| matches!(o, VerdictOutcome::Rerouted { rerouted_to, .. } if rerouted_to == "dear")).count();
    let stale = outcomes.iter().filter(|o| matches!(o, VerdictOutcome::Stale { .. })).count();
    assert_eq!((rerouted, stale), (1, 1), "{outcomes:?}");
    assert_eq!(w.channel_of(order), (2, 500), "on the second channel, its fee charged once");
    // The first channel's bank no longer holds the order that left it (it held one entry per
    // fallback for the life of the process); the second one does.
    assert_eq!((w.bank.query(order, 1), w.bank.query(order, 2)), (BankStatus::Unknown, BankStatus::Processing));
    let balance = || w.engine.read_shard(0, move |s| s.account(account).unwrap().settled).unwrap();
    assert_eq!(balance(), 1_000_000 - 10_000 - 500);
    // The same request again (its answer lost): the engine's replay (before session 58 it was
    // built with the fallback's channel and fee, and the engine answered 409: a platform that
    // then sent it under a new number paid the member out twice).
    let again = w.payout("w1", account, 10_000);
    assert!(again.reply.is_ok() && again.reply.replayed && again.reply.id == first.reply.id, "{:?}", again.reply);
    assert_eq!(balance(), 1_000_000 - 10_000 - 500, "nothing moved again");
    let notes = w.runtime.block_on(w.clearing.notes(P, vec!["w1".into()])).unwrap();
    let note = notes[0].clone().unwrap();
    assert_eq!((note.tried, note.routing.unwrap().fallbacks.len()), (vec![1, 2], 1));
    // The second channel pays: the order succeeds.
    let paid = w.runtime.block_on(w.clearing.payout_verdict(PayoutVerdict { order, succeeded: true, channel: Some("dear".into()) })).unwrap();
    assert_eq!(paid, VerdictOutcome::Completed { received: true, status: Some("succeeded") });
}

/// A note written before session 58 (no `first`) keeps its channel and fee at its first
/// fallback, so a repeat of its number afterwards is the engine's replay (it was 409, and a
/// platform that then used a new number paid the member out twice).
#[test]
fn a_note_of_an_earlier_build_keeps_its_first_channel_at_its_first_fallback() {
    let w = World::new();
    let account = w.account(1, 1_000_000);
    let first = w.payout("w1", account, 10_000);
    let order = OrderId(first.reply.id);
    // The note as an earlier build wrote it: no `first`, no amount.
    let key = format!("x/{P}/w1").into_bytes();
    let mut note: serde_json::Value = serde_json::from_slice(&w.store.get(&key).unwrap().expect("noted")).unwrap();
    let fields = note.as_object_mut().unwrap();
    assert!(fields.remove("first").is_some() && fields.remove("amount").is_some(), "{note}");
    w.store.write(&[(key.as_slice(), serde_json::to_vec(&note).unwrap().as_slice())]).unwrap();
    let failed = w.runtime.block_on(w.clearing.payout_verdict(PayoutVerdict { order, succeeded: false, channel: Some("cheap".into()) })).unwrap();
    assert!(matches!(failed, VerdictOutcome::Rerouted { .. }), "{failed:?}");
    let again = w.payout("w1", account, 10_000);
    assert!(again.reply.is_ok() && again.reply.replayed && again.reply.id == first.reply.id, "{:?}", again.reply);
}

/// A success from the channel of a payout that failed for good (its money back in the account)
/// moves nothing and opens an operator's case, once: the money may be out twice.
#[test]
fn a_success_after_a_failure_for_good_opens_a_case() {
    let w = World::new();
    let account = w.account(1, 1_000_000);
    let order = w.failed_for_good("w1", account, 10_000);
    let verdict = |succeeded: bool, channel: &str| w.verdict(order, succeeded, channel);
    let balance = || w.engine.read_shard(0, move |s| s.account(account).unwrap().settled).unwrap();
    assert_eq!(balance(), 1_000_000, "failed for good: the money back");
    let cases = || w.open_cases();
    assert!(cases().is_empty());
    for _ in 0..2 {
        assert!(verdict(true, "dear").is_err(), "the engine refuses it, as before");
    }
    let open = cases();
    assert_eq!(open.len(), 1, "one case, however often the bank says it");
    assert!(open[0].case_id.starts_with("case_paid_after_failure_") && open[0].reason.contains("had failed"), "{:?}", open[0]);
    // What went back (the amount and the second channel's fee) is held until the case is
    // resolved (since session 59; the member could withdraw it meanwhile), once however often
    // the bank says it, and the platform cannot release the hold.
    let buckets = || w.engine.read_shard(0, move |s| s.account(account).map(|a| (a.available(), a.frozen)).unwrap()).unwrap();
    assert_eq!(buckets(), (1_000_000 - 10_500, 10_500), "{}", open[0].reason);
    assert!(open[0].reason.contains("105.00 held"), "{}", open[0].reason);
    let hold = bank::parse_order_ref(open[0].line["hold_order_id"].as_str().unwrap()).unwrap();
    let by_platform = Command::ReleaseFreeze { order: hold, amount: None };
    assert_eq!(w.engine.execute_one(Envelope { platform: P, out_order_no: None, command: by_platform }).unwrap().code, ResultCode::OrderNotFound);
    let resolution = |text: &str| clearing_actor::cases::Resolution { resolution: text.into(), operator: "ops".into() };
    let resolve = |text: &str| w.runtime.block_on(w.clearing.resolve_case(open[0].case_id.clone(), resolution(text)));
    resolve("the bank reversed its payment").unwrap();
    assert_eq!(buckets(), (1_000_000, 0), "released once the case is resolved");
    // The same resolution again (its answer lost, a portal's approval carried out again after a
    // stop) answers the case; another is refused.
    let repeated = resolve("the bank reversed its payment").unwrap();
    assert_eq!((repeated.status.as_str(), repeated.hold.as_deref()), ("resolved", Some("release")), "the hold's fate recorded");
    assert!(resolve("something else").is_err());
    // The same resolution asking the other fate is refused (before session 60 it answered 200,
    // the hold released all the same).
    let capture = w.runtime.block_on(w.clearing.resolve_case_with(open[0].case_id.clone(), resolution("the bank reversed its payment"), HoldFate::Capture));
    assert!(matches!(capture, Err(ClearingError::HoldDecided(ref fate)) if fate == "release"), "{capture:?}");
    assert_eq!(buckets(), (1_000_000, 0));
    assert_eq!(balance(), 1_000_000, "nothing moved");

    // An account that no longer holds what went back: nothing is held, and the case says so.
    let poor = w.account(2, 20_000);
    let order = w.failed_for_good("w2", poor, 10_000);
    let verdict = |succeeded: bool, channel: &str| w.verdict(order, succeeded, channel);
    let spent = w.payout("w3", poor, 15_000);
    assert!(spent.reply.is_ok(), "{:?}", spent.reply);
    assert!(verdict(true, "dear").is_err());
    let open = cases();
    assert_eq!(open.len(), 1, "{open:?}");
    assert!(open[0].reason.contains("nothing could be held") && open[0].line["hold_order_id"].is_null(), "{:?}", open[0]);
}

/// A success from a channel the payout has left (a fallback moved it on) moves nothing, as a
/// stale verdict, and opens an operator's case once: the money may be out twice. A failure
/// from it is only stale.
#[test]
fn a_success_from_a_channel_the_payout_left_opens_a_case() {
    let w = World::new();
    let account = w.account(1, 1_000_000);
    let order = OrderId(w.payout("w1", account, 10_000).reply.id);
    let verdict = |succeeded: bool, channel: &str| w.verdict(order, succeeded, channel);
    assert!(matches!(verdict(false, "cheap").unwrap(), VerdictOutcome::Rerouted { .. }));
    let cases = || w.open_cases();
    assert!(matches!(verdict(false, "cheap").unwrap(), VerdictOutcome::Stale { .. }));
    assert!(matches!(verdict(true, "nobody").unwrap(), VerdictOutcome::Stale { .. }), "no channel of ours");
    assert!(cases().is_empty(), "a stale failure and a stranger's word open nothing");
    for _ in 0..2 {
        assert!(matches!(verdict(true, "cheap").unwrap(), VerdictOutcome::Stale { .. }));
    }
    let open = cases();
    assert_eq!(open.len(), 1, "one case, however often the bank says it: {open:?}");
    assert!(open[0].case_id.starts_with("case_paid_by_left_channel_") && open[0].reason.contains("moved on from it to dear"), "{:?}", open[0]);
    assert_eq!(w.channel_of(order), (2, 500), "still the second channel's");
    let balance = || w.engine.read_shard(0, move |s| s.account(account).unwrap().settled).unwrap();
    assert_eq!(balance(), 1_000_000 - 10_000 - 500, "nothing moved");
}

/// The bank's statement saying it paid a payout that failed for good holds what went back, as
/// its callback would (before session 59 the statement only opened its own case), and a
/// success from a channel the payout left once it failed for good holds it too.
#[test]
fn a_statement_or_a_left_channel_saying_a_failed_payout_was_paid_holds_what_went_back() {
    use clearing_actor::calendar::Clock;
    let w = World::new();
    let account = w.account(1, 1_000_000);
    let order = w.failed_for_good("w1", account, 10_000);
    let verdict = |succeeded: bool, channel: &str| w.verdict(order, succeeded, channel);
    let day = Calendar { utc_offset_seconds: w.engine.config().utc_offset_seconds, ..Calendar::default() }.day(SystemClock.now_micros());
    let file = format!("bank_ref,order_id,direction,amount,status,fee\nB1,{},out,100.00,succeeded,5.00\n", bank::order_ref(order));
    w.runtime.block_on(w.clearing.reconcile(2, day, file.into_bytes())).unwrap();
    let frozen = || w.engine.read_shard(0, move |s| s.account(account).unwrap().frozen).unwrap();
    assert_eq!(frozen(), 10_500, "held by the statement's word");
    let open = w.open_cases();
    assert!(open.iter().any(|c| c.case_id.starts_with("case_paid_after_failure_") && !c.line["hold_order_id"].is_null()), "{open:?}");
    // The channel it left says it paid too: a payment of its own, its own case and hold.
    assert!(matches!(verdict(true, "cheap").unwrap(), VerdictOutcome::Stale { .. }));
    let open = w.open_cases();
    let left = open.iter().find(|c| c.case_id.starts_with("case_paid_by_left_channel_")).expect("the left channel's case");
    assert!(left.reason.contains("held on the account"), "{left:?}");
    assert_eq!(frozen(), 21_000, "both channels say they paid: twice what went back is held");

    // The left channel's own statement says so (its callback lost): held as well.
    let order = w.failed_for_good("w2", account, 10_000);
    let file = format!("bank_ref,order_id,direction,amount,status,fee\nC1,{},out,100.00,succeeded,1.00\n", bank::order_ref(order));
    w.runtime.block_on(w.clearing.reconcile(1, day, file.into_bytes())).unwrap();
    assert_eq!(frozen(), 31_500, "held by the left channel's statement");
    let open = w.open_cases();
    assert!(open.iter().any(|c| c.case_id == format!("case_paid_by_left_channel_{}_1", order.0) && !c.line["hold_order_id"].is_null()), "{open:?}");
    // The operator decides the member was paid: the hold is taken into suspense, not released.
    let case_id = format!("case_paid_by_left_channel_{}_1", order.0);
    let resolution = clearing_actor::cases::Resolution { resolution: "paid on the card by cheap".into(), operator: "ops".into() };
    let total = || w.engine.read_shard(0, move |s| s.account(account).unwrap().total()).unwrap();
    let before = total();
    let captured = w.runtime.block_on(w.clearing.resolve_case_with(case_id.clone(), resolution.clone(), HoldFate::Capture)).unwrap();
    assert_eq!(captured.hold.as_deref(), Some("capture"));
    assert_eq!((frozen(), total()), (21_000, before - 10_500), "taken into suspense");
    // Asked again as a release (the default of a repeat that forgot `hold`): refused, nothing moves.
    let release = w.runtime.block_on(w.clearing.resolve_case_with(case_id.clone(), resolution.clone(), HoldFate::Release));
    assert!(matches!(release, Err(ClearingError::HoldDecided(ref fate)) if fate == "capture"), "{release:?}");
    assert_eq!((frozen(), total()), (21_000, before - 10_500));
    assert_eq!(
        w.runtime.block_on(w.clearing.resolve_case_with(case_id, resolution, HoldFate::Capture)).unwrap().hold.as_deref(),
        Some("capture"),
        "the same again: its answer"
    );
}

/// The left channel's own statement saying it paid a payout that waits on the next channel
/// marks it as that channel's callback does (helper 98, session 62: the statement only opened
/// its case, so a failure on the next channel sent the payout to a third, or refunded it with
/// nothing held: out twice).
#[test]
fn a_left_channels_statement_while_the_payout_waits_holds_its_failure_for_good() {
    use clearing_actor::calendar::Clock;
    let w = World::new();
    w.runtime.block_on(w.clearing.add_channel(spec(3, "spare", "out", "9.00"))).unwrap();
    let account = w.account(1, 1_000_000);
    let order = OrderId(w.payout("w1", account, 10_000).reply.id);
    assert!(matches!(w.verdict(order, false, "cheap").unwrap(), VerdictOutcome::Rerouted { .. }));
    let day = Calendar { utc_offset_seconds: w.engine.config().utc_offset_seconds, ..Calendar::default() }.day(SystemClock.now_micros());
    let file = format!("bank_ref,order_id,direction,amount,status,fee\nC1,{},out,100.00,succeeded,1.00\n", bank::order_ref(order));
    let report = serde_json::to_value(w.runtime.block_on(w.clearing.reconcile(1, day, file.into_bytes())).unwrap()).unwrap();
    assert_eq!(report["counts"]["status_mismatch"], 1, "{report}");
    assert_eq!(w.channel_of(order), (2, 500), "still waiting on dear");
    let frozen = || w.engine.read_shard(0, move |s| s.account(account).unwrap().frozen).unwrap();
    let failed = w.verdict(order, false, "dear").unwrap();
    assert!(matches!(failed, VerdictOutcome::Completed { status: Some("failed"), .. }), "no fallback to spare: {failed:?}");
    assert_eq!(frozen(), 10_500, "what went back is held");
    assert!(w.open_cases().iter().any(|c| c.case_id == format!("case_paid_after_failure_{}_1", order.0)));
    // Pasted by hand, the same line marks nothing: a payout waiting still falls back.
    let second = OrderId(w.payout("w2", account, 10_000).reply.id);
    assert!(matches!(w.verdict(second, false, "cheap").unwrap(), VerdictOutcome::Rerouted { .. }));
    let file = format!("bank_ref,order_id,direction,amount,status,fee\nC2,{},out,100.00,succeeded,1.00\n", bank::order_ref(second));
    w.runtime.block_on(w.clearing.reconcile_by_hand(1, day, file.into_bytes())).unwrap();
    assert!(matches!(w.verdict(second, false, "dear").unwrap(), VerdictOutcome::Rerouted { rerouted_to, .. } if rerouted_to == "spare"));
}

/// A pasted statement carries nothing and ends no carry, and its cases have ids of their own
/// (helper 98, session 62: its lines naming orders not made yet were carried, and the next run
/// of the bank's own statement took them for the bank's word).
#[test]
fn a_pasted_statement_carries_nothing_and_ends_no_carry() {
    use clearing_actor::calendar::Clock;
    let w = World::new();
    let day = Calendar { utc_offset_seconds: w.engine.config().utc_offset_seconds, ..Calendar::default() }.day(SystemClock.now_micros());
    let carries = || {
        let mut keys = Vec::new();
        w.store
            .scan(b"r/carry/", b"r/carry0", &mut |key, _| {
                keys.push(String::from_utf8_lossy(key).into_owned());
                true
            })
            .unwrap();
        keys
    };
    // The bank's own statement lists a line we do not have: carried.
    let future = bank::order_ref(OrderId(900_000));
    let bank_file = format!("bank_ref,order_id,direction,amount,status,fee\nB1,{future},out,100.00,succeeded,1.00\n");
    w.runtime.block_on(w.clearing.reconcile(1, day, bank_file.into_bytes())).unwrap();
    assert_eq!(carries(), ["r/carry/00001/B1"]);
    // A paste naming another future order, and one listing B1 again: nothing carried, B1 kept.
    let other = bank::order_ref(OrderId(900_001));
    let pasted = format!("bank_ref,order_id,direction,amount,status,fee\nP1,{other},out,50.00,failed,0.00\nB1,{future},out,100.00,succeeded,1.00\n");
    let report = serde_json::to_value(w.runtime.block_on(w.clearing.reconcile_by_hand(1, day, pasted.into_bytes())).unwrap()).unwrap();
    assert_eq!(report["counts"]["carried"], 2, "{report}");
    assert_eq!(carries(), ["r/carry/00001/B1"], "the paste carried nothing and ended nothing");
    // A pasted line with another amount than our payout's opens the paste's own case, not the
    // one the bank's line of that reference will open.
    let account = w.account(1, 1_000_000);
    let order = OrderId(w.payout("w1", account, 10_000).reply.id);
    let wrong = format!("bank_ref,order_id,direction,amount,status,fee\nP2,{},out,99.00,succeeded,1.00\n", bank::order_ref(order));
    w.runtime.block_on(w.clearing.reconcile_by_hand(1, day, wrong.into_bytes())).unwrap();
    let ids: Vec<String> = w.open_cases().into_iter().map(|c| c.case_id).collect();
    assert_eq!(ids, ["recon_hand_1_P2"]);
    // Our paid payout missing from a pasted (here: empty) statement: the paste's own case too.
    assert!(matches!(w.verdict(order, true, "cheap").unwrap(), VerdictOutcome::Completed { .. }));
    w.runtime.block_on(w.clearing.reconcile_by_hand(1, day, b"bank_ref,order_id,direction,amount,status,fee\n".to_vec())).unwrap();
    let missing = format!("recon_hand_1_{}", bank::order_ref(order));
    assert!(w.open_cases().iter().any(|c| c.case_id == missing), "{:?}", w.open_cases());
    // A made-up id as large as the type, on this one-shard engine: no order, carried (in the
    // report), nothing else (helper 99: the grouped read overflowed past it and stopped the shard).
    let largest = "bank_ref,order_id,direction,amount,status,fee\nX1,ord_18446744073709551615,out,1.00,succeeded,\n";
    let report = serde_json::to_value(w.runtime.block_on(w.clearing.reconcile(1, day, largest.as_bytes().to_vec())).unwrap()).unwrap();
    let carried = report["details"].as_array().unwrap().iter().any(|d| d["class"] == "carried" && d["detail"]["bank_ref"] == "X1");
    assert!(carried, "{report}");
}

/// A stop after a failure for good of a payout a left channel said it paid, before its hold
/// (helper 98, session 62): the hold was noted as due first, and the next start makes it and
/// its case (before, nothing did: the watchdog asks only about payouts still waiting, and a
/// timeout's failure is never said again).
#[test]
fn a_hold_a_stop_left_due_is_made_at_the_next_start() {
    use clearing_actor::payouts::{HoldDue, HoldsDue};
    let w = World::new();
    let account = w.account(1, 1_000_000);
    let frozen = || w.engine.read_shard(0, move |s| s.account(account).unwrap().frozen).unwrap();
    // The path without a stop leaves nothing due.
    let first = OrderId(w.payout("w1", account, 10_000).reply.id);
    assert!(matches!(w.verdict(first, false, "cheap").unwrap(), VerdictOutcome::Rerouted { .. }));
    assert!(matches!(w.verdict(first, true, "cheap").unwrap(), VerdictOutcome::Stale { .. }));
    assert!(matches!(w.verdict(first, false, "dear").unwrap(), VerdictOutcome::Completed { status: Some("failed"), .. }));
    assert_eq!(frozen(), 10_500);
    assert!(HoldsDue::all(w.store.as_ref()).unwrap().is_empty(), "made, so no longer due");
    // The stop: the hold noted as due and the failure durable, nothing after.
    let order = OrderId(w.payout("w2", account, 10_000).reply.id);
    assert!(matches!(w.verdict(order, false, "cheap").unwrap(), VerdictOutcome::Rerouted { .. }));
    assert!(matches!(w.verdict(order, true, "cheap").unwrap(), VerdictOutcome::Stale { .. }));
    w.clearing.stop();
    HoldsDue::save(w.store.as_ref(), order, HoldDue { left: 1, channel: 2 }).unwrap();
    let command = Command::CompleteWithdrawal { order, succeeded: false };
    assert!(w.engine.execute_one(Envelope { platform: 0, out_order_no: None, command }).unwrap().is_ok());
    assert_eq!(frozen(), 10_500, "the failure gave the money back, unheld");
    let clearing = World::clearing(&w.engine, &w.store, w.bank.clone());
    assert_eq!(frozen(), 2 * 10_500, "held at the start");
    let open = w.runtime.block_on(clearing.cases_page(clearing_actor::cases::CaseFilter::Open, None, 50)).unwrap().cases;
    let case_id = format!("case_paid_after_failure_{}_1", order.0);
    assert!(open.iter().any(|c| c.case_id == case_id && !c.line["hold_order_id"].is_null()), "{open:?}");
    assert!(HoldsDue::all(w.store.as_ref()).unwrap().is_empty());
    // A hold due on a payout whose failure never happened is dropped: nothing is held.
    let waiting = OrderId(w.runtime.block_on(clearing.payout(World::request("w3", account, 10_000))).unwrap().reply.id);
    clearing.stop();
    HoldsDue::save(w.store.as_ref(), waiting, HoldDue { left: 1, channel: 2 }).unwrap();
    let _clearing = World::clearing(&w.engine, &w.store, w.bank.clone());
    assert_eq!(frozen(), 2 * 10_500);
    assert!(HoldsDue::all(w.store.as_ref()).unwrap().is_empty());
    // One due on a payout failed for good whose note no longer says the left channel paid it
    // (an operator released that channel's case): nothing is held against that decision.
    let clearing = _clearing;
    let fourth = OrderId(w.runtime.block_on(clearing.payout(World::request("w4", account, 10_000))).unwrap().reply.id);
    for channel in ["cheap", "dear"] {
        let verdict = PayoutVerdict { order: fourth, succeeded: false, channel: Some(channel.into()) };
        let _ = w.runtime.block_on(clearing.payout_verdict(verdict)).unwrap();
    }
    assert_eq!(w.engine.read_shard(0, move |s| s.order(fourth).unwrap().status).unwrap(), OrderStatus::Failed);
    clearing.stop();
    HoldsDue::save(w.store.as_ref(), fourth, HoldDue { left: 1, channel: 2 }).unwrap();
    let _clearing = World::clearing(&w.engine, &w.store, w.bank.clone());
    assert_eq!(frozen(), 2 * 10_500, "not marked: nothing held");
    assert!(HoldsDue::all(w.store.as_ref()).unwrap().is_empty());
}

/// Helper 125#1: a left channel's case resolved with no fate said (the operator found it did
/// pay the card, the only resolution offered for a case with no hold) keeps the payout's mark:
/// it goes to no third channel, and a failure for good is held. Before, any resolution cleared
/// the mark, and the third channel paid the card a second time. Said `release` (its word was
/// wrong), the mark goes; a repeat of the first resolution with `release` does not clear it.
#[test]
fn a_left_channels_case_resolved_as_paid_keeps_the_payout_from_paying_again() {
    let w = World::new();
    w.runtime.block_on(w.clearing.add_channel(spec(3, "spare", "out", "9.00"))).unwrap();
    let account = w.account(1, 1_000_000);
    let frozen = || w.engine.read_shard(0, move |s| s.account(account).unwrap().frozen).unwrap();
    let resolution = |text: &str| clearing_actor::cases::Resolution { resolution: text.into(), operator: "ops".into() };
    let order = OrderId(w.payout("w1", account, 10_000).reply.id);
    assert!(matches!(w.verdict(order, false, "cheap").unwrap(), VerdictOutcome::Rerouted { .. }));
    assert!(matches!(w.verdict(order, true, "cheap").unwrap(), VerdictOutcome::Stale { .. }));
    let case = format!("case_paid_by_left_channel_{}_1", order.0);
    let resolved = w.runtime.block_on(w.clearing.resolve_case(case.clone(), resolution("confirmed with cheap: card credited"))).unwrap();
    assert_eq!(resolved.status, "resolved");
    // A repeat of that resolution saying `release` is another fate: refused, nothing changes
    // (helper 128#4: it answered 200 and did nothing).
    let again = w.runtime.block_on(w.clearing.resolve_case_with(case.clone(), resolution("confirmed with cheap: card credited"), HoldFate::Release));
    assert!(matches!(again, Err(clearing_actor::ClearingError::HoldDecided(_))), "{again:?}");
    assert!(w.runtime.block_on(w.clearing.resolve_case(case, resolution("confirmed with cheap: card credited"))).is_ok(), "the same again: its answer");
    let failed = w.verdict(order, false, "dear").unwrap();
    assert!(matches!(failed, VerdictOutcome::Completed { status: Some("failed"), .. }), "no fallback to spare: {failed:?}");
    assert_eq!(frozen(), 10_500, "what went back is held");
    assert!(w.open_cases().iter().any(|c| c.case_id == format!("case_paid_after_failure_{}_1", order.0) && !c.line["hold_order_id"].is_null()));
}

/// A channel the payout left says it paid while the payout waits on the next one: it falls
/// back no further, and when that one fails it for good what went back is held under a case
/// (before, the left channel's case opened without a hold, and the payout could go on to a
/// third channel, or fail and refund the account with nothing held).
#[test]
fn a_left_channels_success_while_the_payout_waits_holds_its_failure_for_good() {
    let w = World::new();
    // A third channel, dearer still: where a failure on the second would fall back to.
    w.runtime.block_on(w.clearing.add_channel(spec(3, "spare", "out", "9.00"))).unwrap();
    let account = w.account(1, 1_000_000);
    let order = OrderId(w.payout("w1", account, 10_000).reply.id);
    let verdict = |succeeded: bool, channel: &str| w.verdict(order, succeeded, channel);
    assert!(matches!(verdict(false, "cheap").unwrap(), VerdictOutcome::Rerouted { .. }));
    assert!(matches!(verdict(true, "cheap").unwrap(), VerdictOutcome::Stale { .. }), "cheap says it paid after all");
    let frozen = || w.engine.read_shard(0, move |s| s.account(account).unwrap().frozen).unwrap();
    assert_eq!(frozen(), 0, "nothing went back yet: nothing to hold");
    let failed = verdict(false, "dear").unwrap();
    assert!(matches!(failed, VerdictOutcome::Completed { status: Some("failed"), .. }), "no further fallback to spare: {failed:?}");
    assert_eq!(frozen(), 10_500, "what went back is held");
    let open = w.open_cases();
    let held = open.iter().find(|c| c.case_id == format!("case_paid_after_failure_{}_1", order.0)).expect("a case for the hold");
    assert!(!held.line["hold_order_id"].is_null() && held.reason.contains("then failed on dear"), "{held:?}");
    // Capturing needs a hold: the left channel's own case holds nothing.
    let left_case = format!("case_paid_by_left_channel_{}_1", order.0);
    let resolution = |text: &str| clearing_actor::cases::Resolution { resolution: text.into(), operator: "ops".into() };
    let capture = w.runtime.block_on(w.clearing.resolve_case_with(left_case.clone(), resolution("paid"), HoldFate::Capture));
    assert!(matches!(capture, Err(clearing_actor::ClearingError::Refused(ResultCode::OrderStateInvalid))), "{capture:?}");

    // The operator finds a left channel's word wrong (its case released, said so): the payout
    // falls back again.
    let second = OrderId(w.payout("w2", account, 10_000).reply.id);
    assert!(matches!(w.verdict(second, false, "cheap").unwrap(), VerdictOutcome::Rerouted { .. }));
    assert!(matches!(w.verdict(second, true, "cheap").unwrap(), VerdictOutcome::Stale { .. }));
    let case = format!("case_paid_by_left_channel_{}_1", second.0);
    let released = w.runtime.block_on(w.clearing.resolve_case_with(case.clone(), resolution("cheap's callback was wrong"), HoldFate::Release)).unwrap();
    assert_eq!(released.hold.as_deref(), Some("release"), "the fate said is recorded");
    // Its repeat with no fate said is the same resolution (release is the default).
    assert!(w.runtime.block_on(w.clearing.resolve_case(case, resolution("cheap's callback was wrong"))).is_ok());
    // Its word said again (a repeat, its statement read again) does not undo the decision.
    assert!(matches!(w.verdict(second, true, "cheap").unwrap(), VerdictOutcome::Stale { .. }));
    assert!(matches!(w.verdict(second, false, "dear").unwrap(), VerdictOutcome::Rerouted { rerouted_to, .. } if rerouted_to == "spare"));

    // Two channels it left say they paid: the first marks it. Releasing the second's case (its
    // word wrong) leaves the first's mark, whose case is still open (helper 100: any release
    // cleared it, and the payout fell back again).
    let both = OrderId(w.payout("w5", account, 10_000).reply.id);
    for channel in ["cheap", "dear"] {
        assert!(matches!(w.verdict(both, false, channel).unwrap(), VerdictOutcome::Rerouted { .. }));
    }
    for channel in ["cheap", "dear"] {
        assert!(matches!(w.verdict(both, true, channel).unwrap(), VerdictOutcome::Stale { .. }));
    }
    let dear_case = format!("case_paid_by_left_channel_{}_2", both.0);
    w.runtime.block_on(w.clearing.resolve_case_with(dear_case, resolution("dear's callback was wrong"), HoldFate::Release)).unwrap();
    let held_before = frozen();
    assert!(matches!(w.verdict(both, false, "spare").unwrap(), VerdictOutcome::Completed { status: Some("failed"), .. }));
    assert!(frozen() > held_before, "still marked by cheap: what went back is held");

    // A stop after a failure for good and before its hold (simulated: the mark written on a
    // failed payout's note): the failure said again, by the watchdog or the bank, holds it.
    let third = OrderId(w.payout("w3", account, 10_000).reply.id);
    for channel in ["cheap", "dear"] {
        assert!(matches!(w.verdict(third, false, channel).unwrap(), VerdictOutcome::Rerouted { .. }));
    }
    assert!(matches!(w.verdict(third, false, "spare").unwrap(), VerdictOutcome::Completed { status: Some("failed"), .. }));
    let key = format!("x/{P}/w3").into_bytes();
    let mut note: serde_json::Value = serde_json::from_slice(&w.store.get(&key).unwrap().unwrap()).unwrap();
    note["paid_by_left"] = serde_json::json!(1);
    w.store.write(&[(key.as_slice(), serde_json::to_vec(&note).unwrap().as_slice())]).unwrap();
    let before = frozen();
    let again = w.verdict(third, false, "spare");
    assert!(!matches!(again, Ok(VerdictOutcome::Rerouted { .. })), "failed already, it goes nowhere: {again:?}");
    assert_eq!(frozen(), before + 10_900, "held now: the amount and spare's fee");
    assert!(w.open_cases().iter().any(|c| c.case_id == format!("case_paid_after_failure_{}_1", third.0)));
}

/// A bank that counts the payouts handed to it (and passes everything to the simulator).
struct Counting {
    bank: Arc<banksim::Simulator>,
    payouts: std::sync::atomic::AtomicUsize,
    /// Money in of both kinds.
    money_in: std::sync::atomic::AtomicUsize,
    /// Of which collections (card debits).
    collections: std::sync::atomic::AtomicUsize,
}

impl Counting {
    fn over(bank: &Arc<banksim::Simulator>) -> Arc<Counting> {
        Arc::new(Counting { bank: bank.clone(), payouts: 0.into(), money_in: 0.into(), collections: 0.into() })
    }
}

impl BankChannel for Counting {
    fn channels_changed(&self, profiles: &[bank::ChannelProfile]) {
        self.bank.channels_changed(profiles)
    }
    fn submit(&self, request: bank::Request) {
        if matches!(request, bank::Request::MoneyOut { .. }) {
            self.payouts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        if matches!(request, bank::Request::MoneyIn { .. } | bank::Request::Collection { .. }) {
            self.money_in.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        if matches!(request, bank::Request::Collection { .. }) {
            self.collections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.bank.submit(request)
    }
    fn query(&self, order: OrderId, channel: u16) -> BankStatus {
        self.bank.query(order, channel)
    }
    fn forget(&self, order: OrderId, channel: u16) {
        self.bank.forget(order, channel)
    }
    fn statement(&self, channel: u16, day: u32) -> Result<Vec<bank::StatementLine>, bank::BankError> {
        self.bank.statement(channel, day)
    }
    fn reserve_balance(&self, currency: &CurrencySpec) -> Result<(i128, usize), bank::BankError> {
        self.bank.reserve_balance(currency)
    }
    fn transfer_in(&self, currency: &CurrencySpec, bank_ref: &str, amount: i64) {
        self.bank.transfer_in(currency, bank_ref, amount)
    }
}

/// A start asks the bank about each processing payout before sending it again: one the bank
/// has is watched, one it decided (its callback lost) gets that verdict, and only one it never
/// received is sent again (before session 59 every one was sent again: a bank that did not
/// deduplicate by the order's reference paid it twice).
#[test]
fn a_start_asks_the_bank_before_sending_a_payout_again() {
    let w = World::new();
    w.clearing.stop();
    let account = w.account(1, 1_000_000);
    let counting = |bank: &Arc<banksim::Simulator>| Counting::over(bank);
    let sent = |bank: &Counting| bank.payouts.load(std::sync::atomic::Ordering::SeqCst);
    let bank = counting(&w.bank);
    let clearing = World::clearing(&w.engine, &w.store, bank.clone());
    let payout = |number: &str| OrderId(w.runtime.block_on(clearing.payout(World::request(number, account, 10_000))).unwrap().reply.id);
    let orders = [payout("w1"), payout("w2"), payout("w3")];
    assert_eq!(sent(&bank), 3);
    clearing.stop();
    // Our side restarts; the bank has all three, undecided: none is sent again.
    let clearing = World::clearing(&w.engine, &w.store, bank.clone());
    assert_eq!((sent(&bank), clearing.resumed()), (3, 0), "the bank has them");
    clearing.stop();
    // The bank decides w2 (its callback never arrives), then restarts and loses what it had in
    // hand: w1 and w3 are sent again, w2 gets the verdict the bank kept.
    let cny = cny();
    let decided = w.decided_by_a_quick_bank(bank::Request::MoneyOut {
        order: orders[1],
        channel: 1,
        amount: 10_000,
        currency: cny,
        card_no: "6222020200112233445".into(),
    });
    assert_eq!(decided, Some(true), "the bank paid w2");
    let restarted = counting(&Arc::new(banksim::Simulator::start(slow(), "key".into(), w.store.clone()).unwrap()));
    let clearing = World::clearing(&w.engine, &w.store, restarted.clone());
    assert_eq!((sent(&restarted), clearing.resumed()), (2, 2), "only what the bank never received");
    let status = |order: OrderId| w.engine.read_shard(0, move |s| s.order(order).unwrap().status).unwrap();
    // The verdict is taken at the first tick, once the day's usage is counted.
    let paid = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        status(orders[1]).name() == "succeeded"
    });
    assert!(paid, "w2 succeeded by the verdict the bank kept");
    assert_eq!(orders.map(status).map(|s| s.name()), ["processing", "succeeded", "processing"]);
    let balance = w.engine.read_shard(0, move |s| s.account(account).unwrap().settled).unwrap();
    assert_eq!(balance, 1_000_000 - 3 * (10_000 + 100), "each paid out once, its fee once");
}

/// A failed payout whose note cannot be read is an error before anything is given back: the
/// watchdog retries the verdict every timeout, and each try gave the channel's daily usage back
/// again (until its cap no longer held) before the note was read.
#[test]
fn a_verdict_on_a_payout_whose_note_cannot_be_read_gives_nothing_back() {
    let w = World::new();
    let account = w.account(1, 1_000_000);
    let first = w.payout("w1", account, 10_000);
    let order = OrderId(first.reply.id);
    let used = || {
        let report = w.runtime.block_on(w.clearing.report()).unwrap();
        report.iter().find(|c| c.name == "cheap").unwrap().used_today.clone()
    };
    assert_eq!(used(), "100.00");
    w.store.write(&[(format!("x/{P}/w1").as_bytes(), b"{not a note".as_slice())]).unwrap();
    for _ in 0..3 {
        let outcome = w.runtime.block_on(w.clearing.payout_verdict(PayoutVerdict { order, succeeded: false, channel: Some("cheap".into()) }));
        assert!(matches!(outcome, Err(clearing_actor::ClearingError::Storage(ref message)) if message.contains("x/5/w1")), "{outcome:?}");
        assert_eq!(used(), "100.00", "nothing given back");
    }
    assert_eq!(w.channel_of(order), (1, 100), "still on its channel, charged once");
}

#[test]
fn the_channel_report_has_each_channels_verdicts_and_their_latency() {
    let w = World::new();
    let account = w.account(1, 1_000_000);
    let orders: Vec<OrderId> = (0..4).map(|n| OrderId(w.payout(&format!("l{n}"), account, 10_000).reply.id)).collect();
    // The simulated bank takes a minute; our verdicts come after at least 30 ms.
    std::thread::sleep(Duration::from_millis(30));
    for (n, order) in orders.iter().enumerate() {
        let verdict = PayoutVerdict { order: *order, succeeded: n != 3, channel: Some("cheap".into()) };
        w.runtime.block_on(w.clearing.payout_verdict(verdict)).unwrap();
    }
    // A second verdict on a completed order (whatever it answers) is no new latency.
    let _again = w.runtime.block_on(w.clearing.payout_verdict(PayoutVerdict { order: orders[0], succeeded: true, channel: Some("cheap".into()) }));
    let report = w.runtime.block_on(w.clearing.report()).unwrap();
    let cheap = &report.iter().find(|c| c.name == "cheap").unwrap().latency;
    assert_eq!((cheap.verdicts_succeeded, cheap.verdicts_failed, cheap.samples), (3, 1, 4), "{cheap:?}");
    assert!(cheap.p50_ms.unwrap() >= 30 && cheap.p95_ms >= cheap.p50_ms && cheap.max_ms >= cheap.p95_ms, "{cheap:?}");
    // The failed order went on to `dear`, which has not answered yet.
    assert_eq!(report.iter().find(|c| c.name == "dear").unwrap().latency.samples, 0);
}

#[test]
fn a_settlement_run_that_answered_has_finished_so_the_next_one_starts() {
    // Regression: the worker answered the caller before the actor heard the run was over, so
    // an operator's next run right after it could be refused as busy.
    let w = World::new();
    for day in 20_000..20_050 {
        let summary = w.runtime.block_on(w.clearing.settle(day, Vec::new())).unwrap();
        assert!(summary.invariants_ok);
    }
}

#[test]
fn the_nightly_auto_confirm_works_in_bounded_steps_on_every_shard() {
    // Regression (issue item 13): auto-confirm was one command per shard that scanned every
    // order of the shard, however old, for each platform inside one batch.
    let store: Arc<dyn storage::Store> = Arc::new(storage::MemoryStore::new());
    let engine = Engine::start(EngineConfig { shard_count: 2, ack_flush_ms: 1, ..EngineConfig::default() }, store).unwrap();
    let open = |owner| {
        let command = Command::OpenAccount { owner, currency: CurrencyId(0), limits: Limits::NONE };
        AccountId(engine.execute_one(Envelope { platform: P, out_order_no: None, command }).unwrap().id)
    };
    let accounts: Vec<AccountId> = (1..=8).map(open).collect();
    let payers: Vec<AccountId> = accounts.iter().copied().take(4).collect();
    let payee = accounts[7];
    let mut held = Vec::new();
    for (k, payer) in payers.iter().enumerate() {
        let fund = Command::Recharge { account: *payer, currency: CurrencyId(0), amount: 1_000, channel: 9 };
        assert!(engine.execute_one(Envelope { platform: P, out_order_no: None, command: fund }).unwrap().is_ok());
        for n in 0..5 {
            let legs = [engine::ledger::types::Leg { account: payee, amount: 10 }].into_iter().collect();
            let command = Command::Payment { payer: *payer, guarantee: true, currency: CurrencyId(0), amount: 10, payees: legs, splits: Default::default() };
            let number = OutOrderNo::new(&format!("g{k}-{n}")).unwrap();
            let reply = engine.execute_one(Envelope { platform: P, out_order_no: Some(number), command }).unwrap();
            assert_eq!(reply.status, Some(engine::ledger::types::OrderStatus::Held));
            held.push(OrderId(reply.id));
        }
    }
    let steps_before = auto_confirm_steps(&engine);
    let confirmed = clearing_actor::settlement::auto_confirm(&engine, P, u64::MAX, StepBounds { items: 3, ..StepBounds::NIGHTLY }).unwrap();
    assert_eq!(confirmed, 20);
    let steps = auto_confirm_steps(&engine) - steps_before;
    assert!(steps >= 20 / 3, "steps of at most 3 orders each: {steps}");
    for order in held {
        let status = engine.read_shard(order.shard(2), move |s| s.order(order).unwrap().status).unwrap();
        assert_eq!(status, engine::ledger::types::OrderStatus::Succeeded);
    }
    assert_eq!(clearing_actor::settlement::auto_confirm(&engine, P, u64::MAX, StepBounds::NIGHTLY).unwrap(), 0, "a second run finds nothing");
    engine.shutdown();
}

/// Maturing and expiring freezes go in bounded steps on every shard too (session 62): one
/// `Settle` or `ExpireFreezes` a shard did all of a platform's accounts or all expired freezes in
/// one batch, so a platform with a million one-cent freezes of one expiry held its shards for
/// the whole of them.
#[test]
fn the_nightly_maturing_and_freeze_expiry_work_in_bounded_steps_on_every_shard() {
    let store: Arc<dyn storage::Store> = Arc::new(storage::MemoryStore::new());
    let engine = Engine::start(EngineConfig { shard_count: 2, ack_flush_ms: 1, ..EngineConfig::default() }, store).unwrap();
    let run = |platform, command| engine.execute_one(Envelope { platform, out_order_no: None, command }).unwrap();
    let open = |owner| AccountId(run(P, Command::OpenAccount { owner, currency: CurrencyId(0), limits: Limits::NONE }).id);
    let payer = open(1);
    assert!(run(P, Command::Recharge { account: payer, currency: CurrencyId(0), amount: 1_000_000, channel: 9 }).is_ok());
    let payees: Vec<AccountId> = (2..=13).map(open).collect();
    assert!(payees.iter().any(|a| a.shard(2) != payer.shard(2)), "payees on both shards");
    for (k, payee) in payees.iter().enumerate() {
        let legs = [engine::ledger::types::Leg { account: *payee, amount: 100 + k as i64 }].into_iter().collect();
        let command = Command::Payment { payer, guarantee: false, currency: CurrencyId(0), amount: 100 + k as i64, payees: legs, splits: Default::default() };
        let number = OutOrderNo::new(&format!("m{k}")).unwrap();
        assert!(engine.execute_one(Envelope { platform: P, out_order_no: Some(number), command }).unwrap().is_ok());
    }
    engine.wait_credits_applied(std::time::Duration::from_secs(10)).unwrap();
    let now = clearing_actor::calendar::Clock::now_micros(&SystemClock);
    let mut freezes = Vec::new();
    for amount in 1..=10 {
        let command = Command::Freeze { account: payer, currency: CurrencyId(0), amount, reason: "r".into(), expires_at: Some(now + 200_000) };
        freezes.push(OrderId(run(P, command).id));
    }
    let settle_steps = |engine: &Engine| steps_of(engine, "settle_chunk");
    let before = settle_steps(&engine);
    let today = Calendar { utc_offset_seconds: engine.config().utc_offset_seconds, ..Calendar::default() }.day(now);
    let matured = clearing_actor::settlement::mature(&engine, P, today, None, StepBounds { items: 2, ..StepBounds::NIGHTLY }).unwrap();
    assert_eq!(matured, 12, "each payee's income of today");
    assert!(settle_steps(&engine) - before >= 6, "steps of at most 2 accounts: {}", settle_steps(&engine) - before);
    for payee in &payees {
        let payee = *payee;
        let (settled, unsettled) = engine.read_shard(payee.shard(2), move |s| s.account(payee).map(|a| (a.settled, a.unsettled)).unwrap()).unwrap();
        assert!(settled >= 100 && unsettled == 0, "{payee:?}: {settled} {unsettled}");
    }
    assert_eq!(clearing_actor::settlement::mature(&engine, P, today, None, StepBounds::NIGHTLY).unwrap(), 0, "a second run finds nothing");
    std::thread::sleep(std::time::Duration::from_millis(250));
    let before = steps_of(&engine, "expire_freezes_chunk");
    let cut_off = clearing_actor::calendar::Clock::now_micros(&SystemClock);
    assert_eq!(clearing_actor::settlement::expire_freezes(&engine, cut_off, StepBounds { items: 3, ..StepBounds::NIGHTLY }).unwrap(), 10);
    assert!(steps_of(&engine, "expire_freezes_chunk") - before >= 4, "steps of at most 3 freezes");
    for order in freezes {
        let status = engine.read_shard(order.shard(2), move |s| s.order(order).unwrap().status).unwrap();
        assert_eq!(status, engine::ledger::types::OrderStatus::Succeeded);
    }
    let frozen = engine.read_shard(payer.shard(2), move |s| s.account(payer).unwrap().frozen).unwrap();
    assert_eq!(frozen, 0);
    assert!(engine::invariants::check_engine(&engine).unwrap().ok);
    engine.shutdown();
}

/// `AutoConfirmStep` commands the shards applied so far.
fn auto_confirm_steps(engine: &Engine) -> u64 {
    steps_of(engine, "auto_confirm_step")
}

/// The commands of kind `name` the shards applied so far.
fn steps_of(engine: &Engine, name: &str) -> u64 {
    let kind = Command::KIND_NAMES.iter().position(|kind| *kind == name).unwrap();
    let cell = kind * ResultCode::ALL.len() + ResultCode::Ok.number() as usize;
    engine.counters().iter().map(|c| c.outcomes[cell].load(std::sync::atomic::Ordering::Relaxed)).sum()
}

/// A statement's failure of a payout and the bank's own failure callback, whichever comes first,
/// move it to the next channel once (both go through the actor, which alone reroutes): applied
/// straight to the engine from the reconciliation worker, the statement's verdict could fail an
/// order the actor had just rerouted to a channel that then paid it (paid twice). The file read
/// again afterwards matches the line (the failure is what moved it); a success on the channel
/// it left is a case.
#[test]
fn a_statements_failure_and_the_banks_callback_move_a_payout_once() {
    let w = World::new();
    let account = w.account(1, 1_000_000);
    let day = Calendar { utc_offset_seconds: 8 * 3600, ..Calendar::default() }.day(clearing_actor::calendar::Clock::now_micros(&SystemClock));
    let mut orders = Vec::new();
    for (number, callback_first) in [("s1", false), ("s2", true)] {
        let order = OrderId(w.payout(number, account, 10_000).reply.id);
        orders.push(order);
        assert_eq!(w.channel_of(order), (1, 100));
        let file = format!("bank_ref,order_id,direction,amount,status,fee\nB-{number},{},out,100.00,failed,0.00\n", bank::order_ref(order));
        let callback = PayoutVerdict { order, succeeded: false, channel: Some("cheap".into()) };
        let (report, verdict) = w.runtime.block_on(async {
            if callback_first {
                let verdict = w.clearing.payout_verdict(callback).await;
                (w.clearing.reconcile(1, day, file.clone().into_bytes()).await, verdict)
            } else {
                let report = w.clearing.reconcile(1, day, file.clone().into_bytes()).await;
                (report, w.clearing.payout_verdict(callback).await)
            }
        });
        let (report, verdict) = (serde_json::to_value(report.unwrap()).unwrap(), verdict.unwrap());
        assert_eq!(w.channel_of(order), (2, 500), "{number}: on the second channel, once");
        let status = w.engine.read_shard(0, move |s| s.order(order).unwrap().status).unwrap();
        assert_eq!(status, engine::ledger::types::OrderStatus::Processing, "{number}");
        if callback_first {
            assert!(matches!(verdict, VerdictOutcome::Rerouted { .. }), "{verdict:?}");
            assert_eq!(report["counts"], serde_json::json!({"matched": 1}), "{report}");
        } else {
            assert!(matches!(verdict, VerdictOutcome::Stale { .. }), "{verdict:?}");
            assert_eq!(report["counts"], serde_json::json!({"auto_resolved": 1}), "{report}");
            assert_eq!(report["details"][0]["detail"]["status"], "processing", "{report}");
        }
    }
    let balance = w.engine.read_shard(0, move |s| s.account(account).unwrap().settled).unwrap();
    assert_eq!(balance, 1_000_000 - 2 * (10_000 + 500), "each payout held once, at the second channel's fee");
    // The first channel's statement saying it paid an order that moved on: a case, nothing moves.
    let order = orders[0];
    let paid_here = format!("bank_ref,order_id,direction,amount,status,fee\nP-1,{},out,100.00,succeeded,1.00\n", bank::order_ref(order));
    let report = serde_json::to_value(w.runtime.block_on(w.clearing.reconcile(1, day, paid_here.into_bytes())).unwrap()).unwrap();
    assert_eq!(report["counts"], serde_json::json!({"status_mismatch": 1}), "{report}");
    let status = w.engine.read_shard(0, move |s| s.order(order).unwrap().status).unwrap();
    assert_eq!(status, engine::ledger::types::OrderStatus::Processing);
    // A channel's line failing a payout that never went through it (its note never tried it):
    // a case, not a match.
    let elsewhere = OrderId(w.payout("s3", account, 10_000).reply.id);
    assert_eq!(w.channel_of(elsewhere).0, 1);
    let wrong = format!("bank_ref,order_id,direction,amount,status,fee\nW-1,{},out,100.00,failed,0.00\n", bank::order_ref(elsewhere));
    let report = serde_json::to_value(w.runtime.block_on(w.clearing.reconcile(2, day, wrong.into_bytes())).unwrap()).unwrap();
    assert_eq!(report["counts"]["status_mismatch"], 1, "{report}");
    assert_eq!(report["details"][0]["detail"]["bank_ref"], "W-1", "{report}");
    assert_eq!(w.channel_of(elsewhere).0, 1, "nothing moved");
}

/// A payout decided days after it was made has its channel fee booked by the next run: the
/// runs book their day and the day before, and since session 56 the days that still had orders
/// waiting for their channel (before, such a fee was never booked: fee income overstated and the
/// reserve short of what the bank took).
#[test]
fn a_payout_decided_days_later_has_its_fee_booked_once() {
    let w = World::new();
    let account = w.account(1, 1_000_000);
    let today = Calendar { utc_offset_seconds: w.engine.config().utc_offset_seconds, ..Calendar::default() }
        .day(clearing_actor::calendar::Clock::now_micros(&SystemClock));
    let order = OrderId(w.payout("late", account, 10_000).reply.id);
    let early = OrderId(w.payout("early", account, 10_000).reply.id);
    let paid = w.runtime.block_on(w.clearing.payout_verdict(PayoutVerdict { order: early, succeeded: true, channel: Some("cheap".into()) })).unwrap();
    assert_eq!(paid, VerdictOutcome::Completed { received: true, status: Some("succeeded") });
    let settle = |day: u32| {
        let summary = w.runtime.block_on(w.clearing.settle(day, Vec::new())).unwrap();
        assert!(summary.invariants_ok);
        serde_json::to_value(&summary.channel_fees).unwrap()
    };
    let first = settle(today);
    assert_eq!(
        (first[0]["fees"].as_str(), first[0]["booked_now"].as_str(), first.as_array().map(Vec::len)),
        (Some("1.00"), Some("1.00"), Some(1)),
        "the early one only: {first}"
    );
    let second = settle(today + 1);
    assert_eq!((second[0]["fees"].as_str(), second[0]["booked_now"].as_str()), (Some("1.00"), Some("0.00")), "read again as the day before: {second}");
    let paid = w.runtime.block_on(w.clearing.payout_verdict(PayoutVerdict { order, succeeded: true, channel: Some("cheap".into()) })).unwrap();
    assert_eq!(paid, VerdictOutcome::Completed { received: true, status: Some("succeeded") });
    let booked = settle(today + 3);
    assert_eq!(booked.as_array().map(Vec::len), Some(1), "{booked}");
    assert_eq!(
        (booked[0]["channel"].as_str(), booked[0]["fees"].as_str(), booked[0]["booked_now"].as_str()),
        (Some("cheap"), Some("2.00"), Some("1.00")),
        "the day's total now 2.00, of which only the late order's 1.00 is booked now: {booked}"
    );
    assert_eq!(booked[0]["orders"], 1, "{booked}");
    assert_eq!(booked[0]["business_date"], clearing_actor::calendar::date_text(today), "{booked}");
    assert_eq!(settle(today + 4), serde_json::json!([]), "booked once, the day no longer read");
}

/// A run that stops after booking a late fee but before it wrote that it had (its last write
/// fails) books nothing twice when run again: the late rows are written ahead with their
/// totals, and the order left the waiting list in the same write.
#[test]
fn a_late_fee_is_booked_once_whatever_stops_the_run() {
    let engine_store: Arc<dyn storage::Store> = Arc::new(storage::MemoryStore::new());
    let engine = Engine::start(EngineConfig { shard_count: 1, ack_flush_ms: 1, ..EngineConfig::default() }, engine_store).unwrap();
    let currencies = engine.config().currencies.clone();
    let channels = ChannelTable::new(vec![spec(1, "cheap", "out", "1.00").build(&currencies).unwrap()], Calendar::default()).unwrap().set();
    let run = |command: Command| engine.execute_one(Envelope { platform: P, out_order_no: None, command }).unwrap();
    let account = AccountId(run(Command::OpenAccount { owner: 1, currency: CurrencyId(0), limits: Limits::NONE }).id);
    assert!(run(Command::Recharge { account, currency: CurrencyId(0), amount: 1_000_000, channel: 9 }).is_ok());
    let order = OrderId(run(Command::Withdraw { account, currency: CurrencyId(0), amount: 10_000, fee: 100, channel: 1 }).id);
    let today = Calendar { utc_offset_seconds: engine.config().utc_offset_seconds, ..Calendar::default() }
        .day(clearing_actor::calendar::Clock::now_micros(&SystemClock));
    let store = storage::MemoryStore::new();
    let settle = |day: u32| clearing_actor::settlement::run(&engine, &store, &[], &channels, day, &mut |_, _| {});
    settle(today).unwrap();
    settle(today + 1).unwrap();
    let complete = Command::CompleteWithdrawal { order, succeeded: true };
    assert!(engine.execute_one(Envelope { platform: 0, out_order_no: None, command: complete }).unwrap().is_ok());
    let booked = || engine.read_shard(0, move |s| s.channel_fees.get(&(1, today, 0)).copied().unwrap_or(0)).unwrap();
    assert_eq!(booked(), 0);
    // The write after the bookings fails: the run stops there.
    store.fail_after(1);
    assert!(settle(today + 3).is_err());
    assert_eq!(booked(), 100, "booked before the stop");
    // Started again on what was written.
    let store = store.snapshot();
    let settle = |day: u32| clearing_actor::settlement::run(&engine, &store, &[], &channels, day, &mut |_, _| {});
    for again in [today + 3, today + 4] {
        let summary = settle(again).unwrap();
        assert!(summary.invariants_ok);
        assert_eq!(booked(), 100, "booked once (run of {again})");
    }
    engine.shutdown();
}

/// A payout noted but never applied (a stop between its note and its order) counts against its
/// channel's daily cap when a retry applies it: a start rebuilt the day's usage from the
/// engine's orders, which did not hold it.
#[test]
fn a_payout_noted_before_a_stop_counts_against_the_cap_when_applied() {
    let w = World::new();
    let account = w.account(1, 1_000_000);
    let used = || {
        let report = w.runtime.block_on(w.clearing.report()).unwrap();
        report.iter().find(|c| c.name == "cheap").unwrap().used_today.clone()
    };
    let note = clearing_actor::payouts::PayoutNote {
        card: 0,
        card_no: Some("6222020200112233445".into()),
        channel: Some(1),
        fee: 100,
        routing: None,
        arrival: Some(Arrival::Realtime),
        account_type: Some(AccountType::Personal),
        tried: vec![1],
        refused: false,
        first: None,
        amount: Some((10_000, 0)),
        paid_by_left: None,
        account: None,
        holder_name: None,
    };
    w.store.write(&[(format!("x/{P}/n1").as_bytes(), serde_json::to_vec(&note).unwrap().as_slice())]).unwrap();
    // Another amount under the noted number: a conflict before anything is routed or counted
    // (before session 58 the old channel and fee were reused and the cap counted the new amount).
    let other = w.runtime.block_on(w.clearing.payout(World::request("n1", account, 20_000)));
    assert!(matches!(other, Err(clearing_actor::ClearingError::IdempotencyConflict)), "{other:?}");
    assert_eq!(used(), "0.00", "nothing counted");
    assert_eq!(used(), "0.00");
    let applied = w.payout("n1", account, 10_000);
    assert_eq!((applied.reply.code, applied.reply.replayed, applied.channel.as_str()), (ResultCode::Ok, false, "cheap"));
    assert_eq!(used(), "100.00", "counted when applied");
    let again = w.payout("n1", account, 10_000);
    assert!(again.reply.replayed);
    assert_eq!(used(), "100.00", "a replay counts nothing");
}

/// A stop between a hold of the system's and its case left a hold that only the case's
/// resolution releases, and no case: the next start opens the case its reason names (before
/// session 60 only the bank saying it again mended it). A freeze of the system's naming no
/// case of a payout opens nothing.
#[test]
fn a_hold_whose_case_a_stop_kept_from_opening_gets_it_at_the_next_start() {
    let w = World::new();
    let account = w.account(1, 1_000_000);
    let order = w.failed_for_good("w1", account, 10_000);
    let freeze = |number: &str, amount: i64, reason: String| {
        let command = Command::Freeze { account, currency: CurrencyId(0), amount, reason, expires_at: None };
        let reply = w.engine.execute_one(Envelope { platform: 0, out_order_no: OutOrderNo::new(number), command }).unwrap();
        assert!(reply.is_ok(), "{reply:?}");
        OrderId(reply.id)
    };
    // What `hold_unless_opened` writes before its case, the stop coming in between.
    let case_id = format!("case_paid_after_failure_{}_2", order.0);
    let hold = freeze(&format!("hold-paid-twice-{}-2", order.0), 10_500, format!("held for {case_id}"));
    freeze("audit-1", 700, "held for an audit".into());
    let frozen = || w.engine.read_shard(0, move |s| s.account(account).unwrap().frozen).unwrap();
    assert_eq!((frozen(), w.open_cases().len()), (11_200, 0));
    w.clearing.stop();
    let clearing = World::clearing(&w.engine, &w.store, w.bank.clone());
    let open = w.runtime.block_on(clearing.cases_page(clearing_actor::cases::CaseFilter::Open, None, 10)).unwrap().cases;
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!((open[0].case_id.as_str(), open[0].line["hold_order_id"].as_str()), (case_id.as_str(), Some(bank::order_ref(hold).as_str())));
    assert!(open[0].reason.contains("105.00 held") && open[0].line["channel"] == "dear", "{:?}", open[0]);
    // The bank says it again: the case is there, nothing more is held.
    let again = w.runtime.block_on(clearing.payout_verdict(PayoutVerdict { order, succeeded: true, channel: Some("dear".into()) }));
    assert!(again.is_err(), "the engine refuses it, as before");
    assert_eq!(frozen(), 11_200);
    let resolution = clearing_actor::cases::Resolution { resolution: "the bank reversed it".into(), operator: "ops".into() };
    w.runtime.block_on(clearing.resolve_case(case_id, resolution)).unwrap();
    assert_eq!(frozen(), 700, "released by the case's resolution");
    clearing.stop();
    let clearing = World::clearing(&w.engine, &w.store, w.bank.clone());
    let open = w.runtime.block_on(clearing.cases_page(clearing_actor::cases::CaseFilter::Open, None, 10)).unwrap().cases;
    assert!(open.is_empty(), "a released hold opens nothing: {open:?}");
}

/// A payout that failed for good while its account could not take the money back (here
/// credit-blocked: it went to suspense) and that the bank then says it paid holds nothing of
/// the account's: its other funds are not the bank's to get back (before session 60 they were
/// held). The case names the suspense case where the money is.
#[test]
fn a_success_after_a_failure_whose_money_went_to_suspense_holds_nothing() {
    use engine::ledger::types::AccountStatus;
    let w = World::new();
    let account = w.account(1, 1_000_000);
    let order = OrderId(w.payout("w1", account, 10_000).reply.id);
    assert!(matches!(w.verdict(order, false, "cheap").unwrap(), VerdictOutcome::Rerouted { .. }));
    let status = |status: AccountStatus| {
        let command = Command::SetAccountStatus { account, status };
        assert!(w.engine.execute_one(Envelope { platform: P, out_order_no: None, command }).unwrap().is_ok());
    };
    status(AccountStatus::CreditBlocked);
    assert!(matches!(w.verdict(order, false, "dear").unwrap(), VerdictOutcome::Completed { status: Some("failed"), .. }));
    status(AccountStatus::Normal);
    let buckets = || w.engine.read_shard(0, move |s| s.account(account).map(|a| (a.settled, a.frozen)).unwrap()).unwrap();
    assert_eq!(buckets(), (1_000_000 - 10_500, 0), "its money went to suspense");
    assert!(w.verdict(order, true, "dear").is_err(), "the engine refuses it, as before");
    let open = w.open_cases();
    let case = open.iter().find(|c| c.case_id.starts_with("case_paid_after_failure_")).expect("its case");
    let suspense = open.iter().find(|c| c.case_id.starts_with("suspense_") && c.line["entry"] == "withdrawal_failure").expect("the suspense case");
    assert!(
        case.line["hold_order_id"].is_null() && case.reason.contains(&format!("went to suspense, not to the account (case {}, still open)", suspense.case_id)),
        "{case:?}"
    );
    assert_eq!(buckets(), (1_000_000 - 10_500, 0), "nothing of the account's held");
    let warned = w.open_cases().into_iter().find(|c| c.case_id == suspense.case_id).unwrap();
    assert!(warned.reason.contains("do not return the money to the account") && warned.line["see_also"] == case.case_id.as_str(), "{warned:?}");
    // A second such payout whose suspense case an operator resolved first (the money returned
    // to the account once it took credits again): the account holds it, and is held.
    let order = OrderId(w.payout("w3", account, 10_000).reply.id);
    assert!(matches!(w.verdict(order, false, "cheap").unwrap(), VerdictOutcome::Rerouted { .. }));
    status(AccountStatus::CreditBlocked);
    assert!(matches!(w.verdict(order, false, "dear").unwrap(), VerdictOutcome::Completed { status: Some("failed"), .. }));
    status(AccountStatus::Normal);
    // Its notice becomes a case at the clearing actor's next tick.
    let returned = (0..200)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(10));
            w.open_cases().into_iter().find(|c| c.case_id.starts_with("suspense_") && c.case_id != suspense.case_id)
        })
        .expect("its suspense case");
    let resolution = clearing_actor::cases::Resolution { resolution: "returned to the account".into(), operator: "ops".into() };
    w.runtime.block_on(w.clearing.resolve_case(returned.case_id.clone(), resolution)).unwrap();
    assert!(w.verdict(order, true, "dear").is_err());
    assert_eq!(buckets().1, 10_500, "held: the suspense case was resolved");
    // Another payout of the account's, whose money did go back: held as before.
    let order = w.failed_for_good("w2", account, 10_000);
    assert!(w.verdict(order, true, "dear").is_err());
    assert_eq!(buckets(), (1_000_000 - 10_500 - 21_000 - 10_500, 21_000), "what went back, held");
}

/// The fate an operator chose is written on the case before the engine settles the hold: after
/// a stop in between (the case open, its fate written, its hold still there) a repeat asking
/// the other fate is refused and the hold stays; the same fate carries it out.
#[test]
fn a_fate_written_before_a_stop_is_the_one_carried_out() {
    let w = World::new();
    let account = w.account(1, 1_000_000);
    let order = w.failed_for_good("w1", account, 10_000);
    assert!(w.verdict(order, true, "dear").is_err());
    let mut case = w.open_cases().into_iter().find(|c| c.case_id.starts_with("case_paid_after_failure_")).expect("its case");
    // What `note_hold` wrote before the stop.
    case.hold = Some("capture".into());
    let record = serde_json::to_vec(&case).unwrap();
    w.store.write(&[(format!("k/{}", case.case_id).as_bytes(), record.as_slice())]).unwrap();
    let buckets = || w.engine.read_shard(0, move |s| s.account(account).map(|a| (a.total(), a.frozen)).unwrap()).unwrap();
    let before = buckets();
    assert_eq!(before.1, 10_500);
    let resolution = clearing_actor::cases::Resolution { resolution: "decided".into(), operator: "ops".into() };
    let release = w.runtime.block_on(w.clearing.resolve_case(case.case_id.clone(), resolution.clone()));
    assert!(matches!(release, Err(ClearingError::HoldDecided(ref fate)) if fate == "capture"), "{release:?}");
    assert_eq!(buckets(), before, "nothing moved");
    let captured = w.runtime.block_on(w.clearing.resolve_case_with(case.case_id.clone(), resolution, HoldFate::Capture)).unwrap();
    assert_eq!((captured.status.as_str(), captured.hold.as_deref()), ("resolved", Some("capture")));
    assert_eq!(buckets(), (before.0 - 10_500, 0), "taken into suspense");
}

/// A left channel's hold whose case a stop kept from opening gets its case at the next start
/// too, naming that channel; released, the hold goes back to the account.
#[test]
fn a_left_channels_hold_without_its_case_gets_it_at_the_next_start() {
    let w = World::new();
    let account = w.account(1, 1_000_000);
    let order = w.failed_for_good("w1", account, 10_000);
    let case_id = format!("case_paid_by_left_channel_{}_1", order.0);
    let command = Command::Freeze { account, currency: CurrencyId(0), amount: 10_500, reason: format!("held for {case_id}"), expires_at: None };
    let number = OutOrderNo::new(&format!("hold-paid-twice-{}-1", order.0));
    assert!(w.engine.execute_one(Envelope { platform: 0, out_order_no: number, command }).unwrap().is_ok());
    w.clearing.stop();
    let clearing = World::clearing(&w.engine, &w.store, w.bank.clone());
    let open = w.runtime.block_on(clearing.cases_page(clearing_actor::cases::CaseFilter::Open, None, 10)).unwrap().cases;
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!((open[0].case_id.as_str(), open[0].line["channel"].as_str()), (case_id.as_str(), Some("cheap")), "{:?}", open[0]);
    let frozen = || w.engine.read_shard(0, move |s| s.account(account).unwrap().frozen).unwrap();
    assert_eq!(frozen(), 10_500);
    let resolution = clearing_actor::cases::Resolution { resolution: "cheap never paid it".into(), operator: "ops".into() };
    w.runtime.block_on(clearing.resolve_case(case_id, resolution)).unwrap();
    assert_eq!(frozen(), 0);
}

/// Money in too: a start asks the bank about each pending money-in order before sending it
/// again (before session 60 every one was sent again: a collection debits a card, and a bank
/// that did not deduplicate by the order's reference debited it twice). One the bank has is
/// left to its callback, one it decided gets that verdict at the start, and only one it never
/// received is sent again.
#[test]
fn a_start_asks_the_bank_before_sending_money_in_again() {
    let w = World::new();
    w.clearing.stop();
    let account = w.account(1, 0);
    let counting = |bank: &Arc<banksim::Simulator>| Counting::over(bank);
    let sent = |bank: &Counting| bank.money_in.load(std::sync::atomic::Ordering::SeqCst);
    let bank = counting(&w.bank);
    let clearing = World::clearing(&w.engine, &w.store, bank.clone());
    let cny = cny();
    // Pending recharges handed to the bank, as the gateway does.
    let request = |number: &str| {
        let command = Command::RequestRecharge { account, currency: CurrencyId(0), amount: 1_000, channel: 1 };
        let order = OrderId(w.engine.execute_one(Envelope { platform: P, out_order_no: OutOrderNo::new(number), command }).unwrap().id);
        bank.submit(bank::Request::MoneyIn { order, channel: 1, amount: 1_000, currency: cny });
        order
    };
    let orders = [request("r1"), request("r2"), request("r3")];
    assert_eq!(sent(&bank), 3);
    clearing.stop();
    let clearing = World::clearing(&w.engine, &w.store, bank.clone());
    assert_eq!((sent(&bank), clearing.resumed()), (3, 0), "the bank has them");
    clearing.stop();
    // The bank decides r2 (its callback never arrives), then restarts and loses what it had in
    // hand: r1 and r3 are sent again, r2 gets the verdict the bank kept.
    let decided = w.decided_by_a_quick_bank(bank::Request::MoneyIn { order: orders[1], channel: 1, amount: 1_000, currency: cny });
    assert_eq!(decided, Some(true), "the bank took r2");
    let restarted = counting(&Arc::new(banksim::Simulator::start(slow(), "key".into(), w.store.clone()).unwrap()));
    let clearing = World::clearing(&w.engine, &w.store, restarted.clone());
    assert_eq!((sent(&restarted), clearing.resumed()), (2, 2), "only what the bank never received");
    let status = |order: OrderId| w.engine.read_shard(0, move |s| s.order(order).unwrap().status.name()).unwrap();
    assert_eq!(orders.map(status), ["pending", "succeeded", "pending"], "r2's kept verdict applied at the start");
    assert_eq!(w.engine.read_shard(0, move |s| s.account(account).unwrap().settled).unwrap(), 1_000, "credited once");
}

/// A start sends a pending recharge to the bank as a collection (a card debit) only when it is
/// one. Since session 61 a collection is its own command (`RequestCollection`, naming the
/// card's id, which its note records), and a note a refused collection left on a plain
/// recharge's number (a stop before its removal) is not taken for it; an earlier build's note
/// (no card id: its collection was a plain recharge's command) is taken by itself, as then.
#[test]
fn a_start_sends_as_a_collection_only_a_collections_order() {
    let w = World::new();
    w.clearing.stop();
    let account = w.account(1, 0);
    let count = |bank: &Counting| {
        let load = |n: &std::sync::atomic::AtomicUsize| n.load(std::sync::atomic::Ordering::SeqCst);
        (load(&bank.money_in), load(&bank.collections))
    };
    let pending = |number: &str, command: Command, card: Option<u64>| {
        let reply = w.engine.execute_one(Envelope { platform: P, out_order_no: OutOrderNo::new(number), command }).unwrap();
        assert_eq!(reply.status, Some(OrderStatus::Pending), "{number}");
        let note = clearing_actor::payouts::CollectionNote { account, amount: 1_000, card_no: "6222020200112233445".into(), card };
        clearing_actor::payouts::CollectionNotes::save(w.store.as_ref(), P, number, &note).unwrap();
    };
    let plain = Command::RequestRecharge { account, currency: CurrencyId(0), amount: 1_000, channel: 1 };
    // An earlier build's collection (a plain recharge's command, a note without the card's id);
    // this build's collection; a plain recharge carrying this build's note of a refused one.
    pending("old-collection", plain.clone(), None);
    pending("new-collection", Command::RequestCollection { account, currency: CurrencyId(0), amount: 1_000, channel: 1, card: 7 }, Some(7));
    pending("plain-with-a-note", plain, Some(7));
    let bank = Counting::over(&w.bank);
    let clearing = World::clearing(&w.engine, &w.store, bank.clone());
    assert_eq!(count(&bank), (3, 2), "both collections debit the card; the plain recharge is sent as money in");
    assert_eq!(clearing.resumed(), 3);
    clearing.stop();
}

/// Once, at a start: an earlier build's collection note (no card id) whose number the engine
/// holds no order for (a stop between the note and the engine) is dropped, so that a plain
/// recharge made later under that number is never taken for a collection by it; one with its
/// order stays.
#[test]
fn notes_of_an_earlier_build_without_an_order_are_dropped_once() {
    let w = World::new();
    w.clearing.stop();
    let account = w.account(1, 0);
    let note = clearing_actor::payouts::CollectionNote { account, amount: 1_000, card_no: "6222020200112233445".into(), card: None };
    let plain = Command::RequestRecharge { account, currency: CurrencyId(0), amount: 1_000, channel: 1 };
    w.engine.execute_one(Envelope { platform: P, out_order_no: OutOrderNo::new("held"), command: plain }).unwrap();
    for number in ["held", "orphan"] {
        clearing_actor::payouts::CollectionNotes::save(w.store.as_ref(), P, number, &note).unwrap();
    }
    w.store.delete_range(b"ki/notes-checked", b"ki/notes-checked\0").unwrap();
    let clearing = World::clearing(&w.engine, &w.store, w.bank.clone());
    let noted = |number: &str| clearing_actor::payouts::CollectionNotes::get(w.store.as_ref(), P, number).unwrap();
    assert_eq!(noted("held"), Some(note.clone()), "a note with its order stays");
    assert_eq!(noted("orphan"), None, "a note without an order goes");
    clearing.stop();
    // Checked once: a note written after is not looked at again.
    clearing_actor::payouts::CollectionNotes::save(w.store.as_ref(), P, "orphan", &note).unwrap();
    let clearing = World::clearing(&w.engine, &w.store, w.bank.clone());
    assert_eq!(noted("orphan"), Some(note));
    clearing.stop();
}
