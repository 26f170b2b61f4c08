//! No balance can overflow (DESIGN.md 11): system stripes accumulate in `i128` whatever the
//! history, a customer account never holds more than `BALANCE_MINOR_MAX`; a credit that would
//! pass it is refused with `BalanceLimitExceeded` when the command can be refused, and lands in
//! suspense when it cannot (a cross-shard credit, a bank's verdict). Nothing panics.

use engine::ledger::command::{Command, Envelope, OutOrderNo};
use engine::ledger::state::{Effects, ShardState};
use engine::ledger::types::*;
use engine::money::{CurrencyId, CurrencySpec, Minor, AMOUNT_MINOR_MAX, BALANCE_MINOR_MAX};
use engine::result::ResultCode;

const CNY: CurrencyId = CurrencyId(0);
const P: u32 = 7;
const T0: u64 = 20_000 * 86_400_000_000;

fn shard(shard: u16, count: u16) -> ShardState {
    let mut state = ShardState::default();
    let genesis = Command::Genesis { shard, shard_count: count, currencies: vec![CurrencySpec::new("CNY", 2).unwrap()], utc_offset_seconds: 8 * 3600 };
    state.apply(&Envelope { platform: 0, out_order_no: None, command: genesis }, T0, &mut Effects::default());
    state
}

/// Applies a command (with a fresh order number) and checks that a refusal changed nothing.
fn run(state: &mut ShardState, fx: &mut Effects, command: Command) -> Reply {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let number = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let envelope = Envelope { platform: P, out_order_no: Some(OutOrderNo::new(&format!("n{number}")).unwrap()), command };
    let before = state.digest();
    let reply = state.apply(&envelope, T0, fx);
    if !reply.is_ok() {
        assert_eq!(before, state.digest(), "a refused command changed the state");
    }
    reply
}

fn open(state: &mut ShardState, fx: &mut Effects, owner: u64) -> AccountId {
    AccountId(run(state, fx, Command::OpenAccount { owner, currency: CNY, limits: Limits::NONE }).id)
}

fn recharge(account: AccountId, amount: Minor) -> Command {
    Command::Recharge { account, currency: CNY, amount, channel: 1 }
}

fn pay(payer: AccountId, payee: AccountId, amount: Minor, guarantee: bool) -> Command {
    Command::Payment { payer, guarantee, currency: CNY, amount, payees: [Leg { account: payee, amount }].into_iter().collect(), splits: Legs::new() }
}

fn stripe(state: &ShardState, role: SystemRole) -> i128 {
    state.balance(state.account(state.system_account(role, CNY)).unwrap())
}

fn books(states: &[&ShardState]) -> i128 {
    states.iter().flat_map(|s| s.accounts.iter().map(move |a| s.balance(a))).sum()
}

/// Applies an accepted command without comparing digests (fast, for long histories).
fn accept(state: &mut ShardState, fx: &mut Effects, command: Command) {
    fx.postings.clear();
    fx.entries.clear();
    let reply = state.apply(&Envelope { platform: P, out_order_no: None, command }, T0, fx);
    assert!(reply.is_ok(), "{reply:?}");
}

/// Fills `account` to exactly `BALANCE_MINOR_MAX` with recharges of the largest amount.
fn fill(state: &mut ShardState, fx: &mut Effects, account: AccountId) {
    for _ in 0..BALANCE_MINOR_MAX / AMOUNT_MINOR_MAX {
        accept(state, fx, recharge(account, AMOUNT_MINOR_MAX));
    }
    assert_eq!(state.account(account).unwrap().total(), BALANCE_MINOR_MAX);
}

#[test]
fn the_reserve_stripe_passes_i64_without_a_panic_and_the_books_balance() {
    // The repro on one shard: about 9,300 recharges of the largest amount take the
    // reserve stripe past i64::MIN (the old `expect` panicked the shard there).
    let (mut state, mut fx) = (shard(0, 1), Effects::default());
    let accounts: Vec<AccountId> = (0..10).map(|owner| open(&mut state, &mut fx, owner)).collect();
    let per_account = BALANCE_MINOR_MAX / AMOUNT_MINOR_MAX;
    for account in &accounts {
        for _ in 0..per_account {
            accept(&mut state, &mut fx, recharge(*account, AMOUNT_MINOR_MAX));
        }
    }
    let expected = -(10 * per_account as i128 * AMOUNT_MINOR_MAX as i128);
    assert!(expected < i64::MIN as i128, "the test must pass i64");
    assert_eq!(stripe(&state, SystemRole::Reserve), expected);
    assert_eq!(books(&[&state]), 0);
    // Every account is full: one more minor unit is a business refusal, not a panic.
    assert_eq!(run(&mut state, &mut fx, recharge(accounts[0], 1)).code, ResultCode::BalanceLimitExceeded);
    // Money goes out again (withdrawals) and the stripe comes back exactly.
    let withdraw = Command::Withdraw { account: accounts[0], currency: CNY, amount: AMOUNT_MINOR_MAX, fee: 0, channel: 1 };
    let order = run(&mut state, &mut fx, withdraw);
    assert!(order.is_ok());
    assert!(run(&mut state, &mut fx, Command::CompleteWithdrawal { order: OrderId(order.id), succeeded: true }).is_ok());
    assert_eq!(stripe(&state, SystemRole::Reserve), expected + AMOUNT_MINOR_MAX as i128);
    assert_eq!(books(&[&state]), 0);
}

#[test]
fn credits_that_can_be_refused_are_refused_at_the_ceiling() {
    let (mut state, mut fx) = (shard(0, 1), Effects::default());
    let (full, payer) = (open(&mut state, &mut fx, 1), open(&mut state, &mut fx, 2));
    fill(&mut state, &mut fx, full);
    assert!(run(&mut state, &mut fx, recharge(payer, 500)).is_ok());
    let cases: Vec<(&str, Command)> = vec![
        ("a confirmed recharge", recharge(full, 1)),
        ("a recharge waiting for the channel", Command::RequestRecharge { account: full, currency: CNY, amount: 1, channel: 1 }),
        ("a balance payment to a local receiver", pay(payer, full, 100, false)),
    ];
    for (what, command) in cases {
        assert_eq!(run(&mut state, &mut fx, command).code, ResultCode::BalanceLimitExceeded, "{what}");
    }
}

#[test]
fn credits_that_cannot_be_refused_land_in_suspense_at_the_ceiling() {
    let (mut state, mut fx) = (shard(0, 1), Effects::default());
    let account = open(&mut state, &mut fx, 1);
    // A recharge requested while there was room, confirmed by the bank once there is none.
    let pending = run(&mut state, &mut fx, Command::RequestRecharge { account, currency: CNY, amount: 300, channel: 1 });
    assert!(pending.is_ok());
    // A withdrawal reserved, failed by the bank once the account filled up again.
    fill(&mut state, &mut fx, account);
    let withdrawal = run(&mut state, &mut fx, Command::Withdraw { account, currency: CNY, amount: 1_000, fee: 5, channel: 1 });
    assert!(withdrawal.is_ok());
    assert!(run(&mut state, &mut fx, recharge(account, 1_005)).is_ok());
    let completed = run(&mut state, &mut fx, Command::CompleteRecharge { order: OrderId(pending.id), succeeded: true });
    assert_eq!(completed.code, ResultCode::Ok, "the bank's verdict is never refused");
    let failed = run(&mut state, &mut fx, Command::CompleteWithdrawal { order: OrderId(withdrawal.id), succeeded: false });
    assert_eq!(failed.code, ResultCode::Ok);
    assert_eq!(state.account(account).unwrap().total(), BALANCE_MINOR_MAX, "the account never passes the ceiling");
    assert_eq!(stripe(&state, SystemRole::Suspense), 300 + 1_005, "what could not land waits in suspense");
    assert_eq!(books(&[&state]), 0);

    // A cross-shard credit to a full account: applied (it cannot fail), into suspense.
    let (mut s0, mut s1) = (shard(0, 2), shard(1, 2));
    let (mut fx0, mut fx1) = (Effects::default(), Effects::default());
    let payer = open(&mut s0, &mut fx0, 1);
    let payee = open(&mut s1, &mut fx1, 2);
    assert_eq!((payer.shard(2), payee.shard(2)), (0, 1));
    assert!(run(&mut s0, &mut fx0, recharge(payer, 700)).is_ok());
    assert!(run(&mut s0, &mut fx0, pay(payer, payee, 700, false)).is_ok(), "the payer's shard cannot see the payee's balance");
    fill(&mut s1, &mut fx1, payee);
    let credit = *s0.outboxes[1].pending.front().expect("one credit pending");
    let applied = s1.apply(&Envelope { platform: 0, out_order_no: None, command: Command::ApplyCredit(credit) }, T0, &mut fx1);
    assert!(applied.is_ok());
    assert_eq!(s1.account(payee).unwrap().total(), BALANCE_MINOR_MAX);
    assert_eq!(stripe(&s1, SystemRole::Suspense), 700);
    assert_eq!(books(&[&s0, &s1]), 0);

    // A guarantee payment held while the payer had room, cancelled once it has none: the cancel
    // lands in suspense with a notice (journal format 4; format 3 refused it, and the nightly
    // auto-confirm then paid the payee).
    let (mut state, mut fx) = (shard(0, 1), Effects::default());
    let (payer, payee) = (open(&mut state, &mut fx, 1), open(&mut state, &mut fx, 2));
    fill(&mut state, &mut fx, payer);
    let held = run(&mut state, &mut fx, pay(payer, payee, 10, true));
    assert!(held.is_ok());
    assert!(run(&mut state, &mut fx, recharge(payer, 10)).is_ok(), "room again after the hold");
    let cancel = Command::Cancel { order: OrderId(held.id), amount: None };
    assert_eq!(run(&mut state, &mut fx, cancel).code, ResultCode::Ok);
    assert_eq!(state.account(payer).unwrap().total(), BALANCE_MINOR_MAX);
    assert_eq!(stripe(&state, SystemRole::Suspense), 10);
    assert_eq!(fx.diverted.len(), 1, "a notice: an operator's case");
    assert_eq!(books(&[&state]), 0);
}

/// A balance batch whose orders each fit under the receiver's ceiling but together pass it is
/// refused whole, not applied halfway (the shard asserted every checked order was accepted).
#[test]
fn a_batch_whose_orders_pass_the_ceiling_only_together_is_refused_whole() {
    use engine::ledger::command::BatchOrder;
    let (mut state, mut fx) = (shard(0, 1), Effects::default());
    let (near, payer, other) = (open(&mut state, &mut fx, 1), open(&mut state, &mut fx, 2), open(&mut state, &mut fx, 3));
    fill(&mut state, &mut fx, near);
    let out = Command::Withdraw { account: near, currency: CNY, amount: 100, fee: 0, channel: 1 };
    assert!(run(&mut state, &mut fx, out).is_ok(), "100 below the ceiling");
    assert!(run(&mut state, &mut fx, recharge(payer, 1_000)).is_ok());
    let order = |number: &str, legs: &[(AccountId, Minor)]| BatchOrder {
        out_order_no: OutOrderNo::new(number).unwrap(),
        amount: legs.iter().map(|(_, amount)| amount).sum(),
        payees: legs.iter().map(|&(account, amount)| Leg { account, amount }).collect(),
        splits: Legs::new(),
    };
    let batch = |orders: Vec<BatchOrder>, guarantee: bool| Command::BatchPayment { payer, guarantee, currency: CNY, orders };
    // 60 + 60 to `near`, which has room for 100: each fits alone.
    let over = vec![order("b-1", &[(near, 60)]), order("b-2", &[(other, 5), (near, 60)])];
    assert_eq!(run(&mut state, &mut fx, batch(over.clone(), false)).code, ResultCode::BalanceLimitExceeded);
    // Held in escrow, the same batch credits no one yet: accepted.
    assert!(run(&mut state, &mut fx, batch(over, true)).is_ok());
    // Exactly the room left: accepted, and `near` is full.
    let fits = vec![order("b-3", &[(near, 40)]), order("b-4", &[(near, 60), (other, 1)])];
    assert!(run(&mut state, &mut fx, batch(fits, false)).is_ok());
    assert_eq!(state.account(near).unwrap().total(), BALANCE_MINOR_MAX);
    assert_eq!(books(&[&state]), 0);
}
