//! An operator's audited adjustment (`Command::Adjust`) and a change of an account's caps
//! (`Command::SetLimits`): every result code in precedence order, the postings, the order they
//! leave, cross-shard adjustments through in-transit, and replay reproducing all of it.

use std::sync::Arc;
use std::time::Duration;

use engine::invariants::{check_engine, check_store};
use engine::ledger::command::{Command, Envelope, OutOrderNo};
use engine::ledger::ops::adjust::suspense_account;
use engine::ledger::state::{Effects, ShardState};
use engine::ledger::types::*;
use engine::money::{CurrencyId, CurrencySpec, Minor, AMOUNT_MINOR_MAX, BALANCE_MINOR_MAX};
use engine::result::ResultCode;
use engine::{Engine, EngineConfig};
use storage::MemoryStore;

const CNY: CurrencyId = CurrencyId(0);
const USD: CurrencyId = CurrencyId(1);
const P: u32 = 7;
const OPERATOR: u32 = 0;
const DAY: u64 = 86_400_000_000;
const T0: u64 = 20_000 * DAY;

fn shard(shard: u16, count: u16) -> ShardState {
    let mut state = ShardState::default();
    let genesis = Command::Genesis {
        shard,
        shard_count: count,
        currencies: vec![CurrencySpec::new("CNY", 2).unwrap(), CurrencySpec::new("USD", 2).unwrap()],
        utc_offset_seconds: 8 * 3600,
    };
    state.apply(&Envelope { platform: 0, out_order_no: None, command: genesis }, T0, &mut Effects::default());
    state
}

/// One shard and a counter of order numbers; a refusal must leave the state as it was.
struct World {
    state: ShardState,
    fx: Effects,
    counter: u64,
}

impl World {
    fn new() -> World {
        World { state: shard(0, 1), fx: Effects::default(), counter: 0 }
    }

    fn run_as(&mut self, platform: u32, command: Command) -> Reply {
        self.counter += 1;
        let envelope = Envelope { platform, out_order_no: Some(OutOrderNo::new(&format!("n{}", self.counter)).unwrap()), command };
        let before = self.state.digest();
        let postings = self.fx.postings.len();
        let reply = self.state.apply(&envelope, T0, &mut self.fx);
        if !reply.is_ok() {
            assert_eq!(before, self.state.digest(), "a refused command changed the state");
            assert_eq!(postings, self.fx.postings.len(), "a refused command posted");
        }
        reply
    }

    fn ok_as(&mut self, platform: u32, command: Command) -> u64 {
        let reply = self.run_as(platform, command.clone());
        assert_eq!(reply.code, ResultCode::Ok, "{command:?}");
        reply.id
    }

    fn open_as(&mut self, platform: u32, owner: u64, currency: CurrencyId, limits: Limits) -> AccountId {
        AccountId(self.ok_as(platform, Command::OpenAccount { owner, currency, limits }))
    }

    fn funded(&mut self, owner: u64, amount: Minor) -> AccountId {
        let account = self.open_as(P, owner, CNY, Limits::NONE);
        self.ok_as(P, Command::Recharge { account, currency: CNY, amount, channel: 1 });
        account
    }

    fn settled(&self, account: AccountId) -> Minor {
        self.state.account(account).unwrap().settled
    }

    fn suspense(&self) -> i128 {
        self.state.balance(self.state.account(self.state.system_account(SystemRole::Suspense, CNY)).unwrap())
    }

    fn books(&self) -> i128 {
        self.state.accounts.iter().filter(|a| a.currency == CNY).map(|a| self.state.balance(a)).sum()
    }
}

fn adjust(source: AdjustmentSide, target: AdjustmentSide, amount: Minor) -> Command {
    Command::Adjust { source, target, currency: CNY, amount, reason: "wrong credit".into(), proposer: "ann".into(), approver: "bo".into() }
}

fn with(command: Command, change: impl FnOnce(&mut String, &mut String, &mut String, &mut CurrencyId)) -> Command {
    let mut command = command;
    if let Command::Adjust { reason, proposer, approver, currency, .. } = &mut command {
        change(reason, proposer, approver, currency);
    }
    command
}

fn account(id: AccountId) -> AdjustmentSide {
    AdjustmentSide::Account(id)
}

#[test]
fn adjustment_result_codes_in_precedence_order() {
    let mut w = World::new();
    let a = w.funded(1, 1_000);
    let b = w.open_as(P, 2, CNY, Limits::NONE);
    let usd = w.open_as(P, 3, USD, Limits::NONE);
    let closed = w.open_as(P, 4, CNY, Limits::NONE);
    w.ok_as(P, Command::CloseAccount { account: closed });
    let debit_blocked = w.funded(5, 100);
    w.ok_as(P, Command::SetAccountStatus { account: debit_blocked, status: AccountStatus::DebitBlocked });
    let credit_blocked = w.open_as(P, 6, CNY, Limits::NONE);
    w.ok_as(P, Command::SetAccountStatus { account: credit_blocked, status: AccountStatus::CreditBlocked });
    let others = w.open_as(8, 7, CNY, Limits::NONE);
    let full = w.open_as(P, 9, CNY, Limits::NONE);
    while w.settled(full) < BALANCE_MINOR_MAX {
        let amount = AMOUNT_MINOR_MAX.min(BALANCE_MINOR_MAX - w.settled(full));
        w.ok_as(P, Command::Recharge { account: full, currency: CNY, amount, channel: 1 });
    }
    // Income not yet settled is not what an adjustment takes.
    let earner = w.open_as(P, 10, CNY, Limits::NONE);
    w.ok_as(
        P,
        Command::Payment {
            payer: a,
            guarantee: false,
            currency: CNY,
            amount: 100,
            payees: [Leg { account: earner, amount: 100 }].into_iter().collect(),
            splits: Legs::new(),
        },
    );
    w.ok_as(OPERATOR, Command::CreditSuspense { shard: 0, currency: CNY, amount: 500 });
    let suspense = AdjustmentSide::Suspense(0);
    let unknown = AccountId(999_999);
    let long_name = "x".repeat(OPERATOR_NAME_BYTES_MAX + 1);
    let cases: Vec<(&str, u32, Command, ResultCode)> = vec![
        ("zero amount", P, adjust(account(a), account(b), 0), ResultCode::InvalidAmount),
        ("negative amount", P, adjust(account(a), account(b), -5), ResultCode::InvalidAmount),
        ("amount past the largest", P, adjust(account(a), account(b), AMOUNT_MINOR_MAX + 1), ResultCode::AmountTooLarge),
        ("no reason", P, with(adjust(account(a), account(b), 5), |r, _, _, _| r.clear()), ResultCode::ReasonMissing),
        ("a blank reason", P, with(adjust(account(a), account(b), 5), |r, _, _, _| *r = "  ".into()), ResultCode::ReasonMissing),
        ("a reason too long", P, with(adjust(account(a), account(b), 5), |r, _, _, _| *r = "r".repeat(REASON_BYTES_MAX + 1)), ResultCode::ReasonTooLong),
        // Bytes, not characters: 90 characters of 3 bytes each were refused when journals were
        // written, so replay must refuse them too (a reason counted in characters would post).
        (
            "a reason of 90 Chinese characters (270 bytes)",
            P,
            with(adjust(account(a), account(b), 5), |r, _, _, _| *r = "款".repeat(90)),
            ResultCode::ReasonTooLong,
        ),
        ("no proposer", P, with(adjust(account(a), account(b), 5), |_, p, _, _| p.clear()), ResultCode::ApprovalInvalid),
        ("no approver", P, with(adjust(account(a), account(b), 5), |_, _, x, _| *x = " ".into()), ResultCode::ApprovalInvalid),
        ("approver is the proposer", P, with(adjust(account(a), account(b), 5), |_, p, x, _| *x = format!(" {p}")), ResultCode::ApprovalInvalid),
        ("a name too long", P, with(adjust(account(a), account(b), 5), |_, _, x, _| *x = long_name.clone()), ResultCode::ApprovalInvalid),
        ("unknown currency", P, with(adjust(account(a), account(b), 5), |_, _, _, c| *c = CurrencyId(9)), ResultCode::CurrencyUnknown),
        ("to itself", P, adjust(account(a), account(a), 5), ResultCode::PayeeIsPayer),
        ("suspense to itself", OPERATOR, adjust(suspense, suspense, 5), ResultCode::PayeeIsPayer),
        ("unknown source", P, adjust(account(unknown), account(b), 5), ResultCode::AccountNotFound),
        ("another platform's source", P, adjust(account(others), account(b), 5), ResultCode::AccountNotFound),
        ("suspense is the operator's", P, adjust(suspense, account(b), 5), ResultCode::AccountNotFound),
        ("source in another currency", P, adjust(account(usd), account(b), 5), ResultCode::CurrencyMismatch),
        ("closed source", P, adjust(account(closed), account(b), 5), ResultCode::AccountClosed),
        ("debit-blocked source", P, adjust(account(debit_blocked), account(b), 5), ResultCode::AccountFrozen),
        ("unknown target", P, adjust(account(a), account(unknown), 5), ResultCode::PayeeNotFound),
        ("another platform's target", P, adjust(account(a), account(others), 5), ResultCode::PayeeNotFound),
        ("suspense target is the operator's", P, adjust(account(a), suspense, 5), ResultCode::PayeeNotFound),
        ("target in another currency", P, adjust(account(a), account(usd), 5), ResultCode::CurrencyMismatch),
        ("closed target", P, adjust(account(a), account(closed), 5), ResultCode::AccountClosed),
        ("credit-blocked target", P, adjust(account(a), account(credit_blocked), 5), ResultCode::AccountCreditBlocked),
        ("more than settled", P, adjust(account(a), account(b), 901), ResultCode::InsufficientFunds),
        ("unsettled income is not taken", P, adjust(account(earner), account(b), 1), ResultCode::InsufficientFunds),
        ("more than suspense holds", OPERATOR, adjust(suspense, account(b), 501), ResultCode::InsufficientFunds),
        ("short funds before a full target", P, adjust(account(a), account(full), 901), ResultCode::InsufficientFunds),
        ("a full target", P, adjust(account(a), account(full), 1), ResultCode::BalanceLimitExceeded),
        ("a stripe of a shard this is not", OPERATOR, adjust(AdjustmentSide::Suspense(1), account(b), 5), ResultCode::NotRoutable),
        ("to a suspense stripe that does not exist", OPERATOR, adjust(account(a), AdjustmentSide::Suspense(3), 5), ResultCode::PayeeNotFound),
    ];
    let books = w.books();
    for (name, platform, command, expected) in cases {
        assert_eq!(w.run_as(platform, command).code, expected, "{name}");
    }
    assert_eq!(w.books(), books);

    // What succeeds, by a platform and by the operator, and what it posts.
    let (a_before, suspense_before) = (w.settled(a), w.suspense());
    let order = OrderId(w.ok_as(P, adjust(account(a), account(b), 900)));
    assert_eq!((w.settled(a), w.settled(b)), (a_before - 900, 900));
    w.ok_as(OPERATOR, adjust(suspense, account(b), 500));
    assert_eq!((w.settled(b), w.suspense()), (1_400, suspense_before - 500));
    w.ok_as(OPERATOR, adjust(account(b), suspense, 400));
    assert_eq!((w.settled(b), w.suspense()), (1_000, suspense_before - 100));
    // The operator may move money between platforms.
    w.ok_as(OPERATOR, adjust(account(b), account(others), 100));
    assert_eq!((w.settled(b), w.settled(others)), (900, 100));
    assert_eq!(w.books(), books, "adjustments move money, never create it");

    let recorded = w.state.order(order).unwrap();
    assert_eq!(
        (recorded.kind, recorded.status, recorded.platform, recorded.account, recorded.amount),
        (OrderKind::Adjustment, OrderStatus::Succeeded, P, a, 900)
    );
    assert_eq!(
        recorded.detail,
        OrderDetail::Adjustment(Box::new(AdjustmentDetail {
            source: account(a),
            target: account(b),
            reason: "wrong credit".into(),
            proposer: "ann".into(),
            approver: "bo".into()
        }))
    );
    let adjustments: Vec<&EntryHeader> = w.fx.entries.iter().filter(|e| e.kind == EntryKind::Adjustment).collect();
    assert_eq!(adjustments.len(), 4);
    assert_eq!(adjustments[0].order, order);
    // The operator's adjustment out of suspense belongs to the platform it credits.
    let from_suspense = w.state.orders.iter().filter(|o| o.kind == OrderKind::Adjustment).nth(1).unwrap();
    assert_eq!((from_suspense.platform, from_suspense.account), (P, w.state.system_account(SystemRole::Suspense, CNY)));
    assert_eq!(w.state.daily_volume[&(w.state.business_day(T0), P, OrderKind::Adjustment.index(), CNY.0)].count, 4);
}

#[test]
fn an_adjustment_is_idempotent_by_its_order_number() {
    let mut w = World::new();
    let (a, b) = (w.funded(1, 1_000), w.open_as(P, 2, CNY, Limits::NONE));
    let number = OutOrderNo::new("adj-1").unwrap();
    let envelope = |amount| Envelope { platform: P, out_order_no: Some(number), command: adjust(account(a), account(b), amount) };
    let first = w.state.apply(&envelope(300), T0, &mut w.fx);
    assert!(first.is_ok() && !first.replayed);
    let again = w.state.apply(&envelope(300), T0, &mut w.fx);
    assert_eq!((again.id, again.replayed), (first.id, true));
    assert_eq!(w.state.apply(&envelope(301), T0, &mut w.fx).code, ResultCode::IdempotencyConflict);
    assert_eq!((w.settled(a), w.settled(b)), (700, 300), "moved once");
}

#[test]
fn set_limits_codes_and_the_new_caps_are_what_payments_and_withdrawals_meet() {
    let mut w = World::new();
    let tight = Limits { payment_per_order_max: 100, payment_daily_max: 150, withdrawal_per_order_max: 50, withdrawal_daily_max: 80 };
    let a = w.open_as(P, 1, CNY, tight);
    w.ok_as(P, Command::Recharge { account: a, currency: CNY, amount: 10_000, channel: 1 });
    let b = w.open_as(P, 2, CNY, Limits::NONE);
    let closed = w.open_as(P, 3, CNY, Limits::NONE);
    w.ok_as(P, Command::CloseAccount { account: closed });
    let others = w.open_as(8, 4, CNY, Limits::NONE);
    let pay = |amount| Command::Payment {
        payer: a,
        guarantee: false,
        currency: CNY,
        amount,
        payees: [Leg { account: b, amount }].into_iter().collect(),
        splits: Legs::new(),
    };
    let withdraw = |amount| Command::Withdraw { account: a, currency: CNY, amount, fee: 0, channel: 1 };
    let raised = Limits { payment_per_order_max: 500, payment_daily_max: 700, withdrawal_per_order_max: 300, withdrawal_daily_max: 400 };
    let set = |account, limits| Command::SetLimits { account, limits };
    let cases: Vec<(&str, u32, Command, ResultCode)> = vec![
        ("a zero cap", P, set(a, Limits { payment_daily_max: 0, ..raised }), ResultCode::InvalidAmount),
        ("a negative cap", P, set(a, Limits { withdrawal_per_order_max: -1, ..raised }), ResultCode::InvalidAmount),
        ("unknown account", P, set(AccountId(999_999), raised), ResultCode::AccountNotFound),
        ("another platform's account", P, set(others, raised), ResultCode::AccountNotFound),
        ("closed account", P, set(closed, raised), ResultCode::AccountClosed),
        ("before: over the per-order payment cap", P, pay(120), ResultCode::ExceedsPerOrderLimit),
        ("before: over the per-order withdrawal cap", P, withdraw(60), ResultCode::ExceedsPerOrderLimit),
    ];
    for (name, platform, command, expected) in cases {
        assert_eq!(w.run_as(platform, command).code, expected, "{name}");
    }
    w.ok_as(P, pay(100));
    assert_eq!(w.run_as(P, pay(60)).code, ResultCode::ExceedsDailyLimit, "150 a day");
    assert_eq!(w.ok_as(P, set(a, raised)), a.0, "the reply names the account");
    assert_eq!(w.state.account(a).unwrap().limits, raised);
    // The new caps count what was paid today already.
    w.ok_as(P, pay(450));
    assert_eq!(w.run_as(P, pay(200)).code, ResultCode::ExceedsDailyLimit, "100 + 450 + 200 > 700");
    assert_eq!(w.run_as(P, pay(501)).code, ResultCode::ExceedsPerOrderLimit);
    w.ok_as(P, withdraw(300));
    assert_eq!(w.run_as(P, withdraw(101)).code, ResultCode::ExceedsDailyLimit);
    // The operator may change any platform's account; lowering works the same way.
    w.ok_as(OPERATOR, set(a, tight));
    assert_eq!(w.run_as(P, pay(101)).code, ResultCode::ExceedsPerOrderLimit);
    w.ok_as(OPERATOR, set(others, Limits::NONE));
}

fn config(shards: u16) -> EngineConfig {
    EngineConfig { shard_count: shards, ack_flush_ms: 1, ..EngineConfig::default() }
}

fn keyed(platform: u32, key: &str, command: Command) -> Envelope {
    Envelope { platform, out_order_no: Some(OutOrderNo::new(key).unwrap()), command }
}

fn settled(engine: &Engine, account: AccountId) -> Minor {
    engine.read_shard(account.shard(engine.config().shard_count), move |s| s.account(account).unwrap().settled).unwrap()
}

fn suspense_on(engine: &Engine, shard: u16) -> i128 {
    engine.read_shard(shard, |s| s.balance(s.account(s.system_account(SystemRole::Suspense, CNY)).unwrap())).unwrap()
}

fn digests(engine: &Engine) -> Vec<u64> {
    (0..engine.config().shard_count).map(|s| engine.read_shard(s, |state| state.digest()).unwrap()).collect()
}

#[test]
fn cross_shard_adjustments_go_through_in_transit_and_replay_reproduces_them() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::start(config(2), store.clone()).unwrap();
    // Owners until one account lands on each shard.
    let mut on_shard: [Option<AccountId>; 2] = [None, None];
    for owner in 0..64 {
        let id =
            AccountId(engine.execute_one(keyed(P, &format!("open{owner}"), Command::OpenAccount { owner, currency: CNY, limits: Limits::NONE })).unwrap().id);
        on_shard[id.shard(2) as usize].get_or_insert(id);
        if on_shard.iter().all(Option::is_some) {
            break;
        }
    }
    let [Some(a), Some(b)] = on_shard else { panic!("accounts on both shards") };
    assert!(engine.execute_one(keyed(P, "rch", Command::Recharge { account: a, currency: CNY, amount: 1_000, channel: 1 })).unwrap().is_ok());
    assert!(engine.execute_one(keyed(OPERATOR, "sus", Command::CreditSuspense { shard: 1, currency: CNY, amount: 300 })).unwrap().is_ok());
    let replies = engine
        .execute(vec![
            keyed(P, "adj-1", adjust(account(a), account(b), 250)),
            keyed(OPERATOR, "adj-2", adjust(AdjustmentSide::Suspense(1), account(a), 100)),
            keyed(OPERATOR, "adj-3", adjust(account(a), AdjustmentSide::Suspense(1), 50)),
            // Refused at the router: a suspense stripe that does not exist, suspense for a
            // platform, a target on the other shard that does not exist.
            keyed(OPERATOR, "bad-1", adjust(AdjustmentSide::Suspense(7), account(a), 1)),
            keyed(P, "bad-2", adjust(AdjustmentSide::Suspense(1), account(a), 1)),
            keyed(P, "bad-3", adjust(account(a), account(AccountId(b.0 + 2 * 50)), 1)),
            keyed(P, "bad-4", adjust(account(a), account(b), 10_000)),
            keyed(P, "lim", Command::SetLimits { account: b, limits: Limits { payment_per_order_max: 10, ..Limits::NONE } }),
        ])
        .unwrap();
    let codes: Vec<ResultCode> = replies.iter().map(|r| r.code).collect();
    use ResultCode::*;
    assert_eq!(codes, [Ok, Ok, Ok, AccountNotFound, AccountNotFound, PayeeNotFound, InsufficientFunds, Ok]);
    engine.wait_quiescent(Duration::from_secs(5)).unwrap();
    let report = check_engine(&engine).unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.currencies[0].in_transit_minor, 0, "in-transit back to zero");
    assert_eq!((settled(&engine, a), settled(&engine, b)), (1_000 - 250 + 100 - 50, 250));
    assert_eq!((suspense_on(&engine, 0), suspense_on(&engine, 1)), (0, 300 - 100 + 50));
    let stripe = suspense_account(1, 2, CNY);
    assert_eq!(engine.read_shard(1, |s| s.system_account(SystemRole::Suspense, CNY)).unwrap(), stripe, "the stripe every shard can name");
    let before = digests(&engine);
    engine.shutdown();

    // Replay rebuilds the same state, limits included, and answers the same numbers the same way.
    let restarted = Engine::start(config(2), store.clone()).unwrap();
    assert_eq!(digests(&restarted), before);
    let again = restarted.execute_one(keyed(P, "adj-1", adjust(account(a), account(b), 250))).unwrap();
    assert_eq!((again.code, again.id, again.replayed), (Ok, replies[0].id, true));
    let limits = restarted.read_shard(b.shard(2), move |s| s.account(b).unwrap().limits).unwrap();
    assert_eq!(limits.payment_per_order_max, 10);
    restarted.shutdown();
    let offline = check_store(&*store, 2).unwrap();
    assert!(offline.ok, "{offline:?}");
}
