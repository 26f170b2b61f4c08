//! Balance and guarantee payments with several payees and splits.

use crate::ledger::command::{content_hash, idempotency_key, BatchOrder, Command, BATCH_ORDERS_MAX};
use crate::ledger::state::{check_amount, check_debit_account, credit_refusal_of, ok_order, Context, Effects, IdempotencyRecord, Income, ShardState};
use crate::ledger::types::*;
use crate::money::{CurrencyId, Minor};
use crate::result::ResultCode;

/// The arguments of a payment, borrowed from the command.
pub struct PaymentRequest<'a> {
    pub payer: AccountId,
    pub guarantee: bool,
    pub currency: CurrencyId,
    pub amount: Minor,
    pub payees: &'a [Leg],
    pub splits: &'a [Leg],
}

/// Checks the legs of a payment: count, amounts, sum, duplicates, payer among them.
pub(crate) fn check_legs(payer: AccountId, amount: Minor, payees: &[Leg], splits: &[Leg]) -> Result<(), ResultCode> {
    if payees.is_empty() {
        return Err(ResultCode::LegsUnbalanced);
    }
    if payees.len() + splits.len() > LEGS_MAX {
        return Err(ResultCode::TooManyLegs);
    }
    let mut sum: i128 = 0;
    for (index, leg) in payees.iter().chain(splits).enumerate() {
        check_amount(leg.amount)?;
        sum += leg.amount as i128;
        if leg.account == payer {
            return Err(ResultCode::PayeeIsPayer);
        }
        if payees.iter().chain(splits).take(index).any(|earlier| earlier.account == leg.account) {
            return Err(ResultCode::DuplicateLeg);
        }
    }
    if sum != amount as i128 {
        return Err(ResultCode::LegsUnbalanced);
    }
    Ok(())
}

/// Checks the receivers this shard owns; remote receivers are checked by the router's directory.
fn check_local_receivers(state: &ShardState, platform: u32, currency: CurrencyId, legs: &[Leg]) -> Result<(), ResultCode> {
    for leg in legs {
        if leg.account.shard(state.shard_count) != state.shard {
            continue;
        }
        let receiver = state.customer_account(platform, leg.account).ok_or(ResultCode::PayeeNotFound)?;
        if let Some(code) = credit_refusal_of(receiver, currency, leg.amount) {
            return Err(code);
        }
    }
    Ok(())
}

/// Checks the payer's per-order and daily payment caps and its available funds.
fn check_spend(state: &ShardState, payer: AccountId, amount: Minor, day: u32) -> Result<(), ResultCode> {
    let account = state.account(payer).expect("payer checked");
    if amount > account.limits.payment_per_order_max {
        return Err(ResultCode::ExceedsPerOrderLimit);
    }
    let paid_today = if account.usage_day == day { account.paid_today } else { 0 };
    if paid_today as i128 + amount as i128 > account.limits.payment_daily_max as i128 {
        return Err(ResultCode::ExceedsDailyLimit);
    }
    if account.available() < amount {
        return Err(ResultCode::InsufficientFunds);
    }
    Ok(())
}

/// Applies a payment: the payer is debited (unsettled first, the order recording that part: see
/// `OrderDetail::Payment`); a balance payment credits each receiver's unsettled bucket, a
/// guarantee payment holds the amount in this shard's escrow stripe.
pub fn apply(state: &mut ShardState, context: &Context, request: &PaymentRequest, fx: &mut Effects) -> Reply {
    let checks = check_amount(request.amount)
        .and_then(|_| check_legs(request.payer, request.amount, request.payees, request.splits))
        .and_then(|_| check_debit_account(state, context.platform, request.payer, request.currency))
        .and_then(|_| check_local_receivers(state, context.platform, request.currency, request.payees))
        .and_then(|_| check_local_receivers(state, context.platform, request.currency, request.splits))
        .and_then(|_| check_spend(state, request.payer, request.amount, context.day));
    if let Err(code) = checks {
        return Reply::rejected(code);
    }
    // After this point the payment must succeed.
    let (payer, currency, amount) = (request.payer, request.currency, request.amount);
    state.roll_day(payer, context.day);
    state.account_mut(payer).paid_today += amount;
    let legs = request.payees.iter().chain(request.splits);
    let (kind, status, released) =
        if request.guarantee { (OrderKind::Guarantee, OrderStatus::Held, false) } else { (OrderKind::Payment, OrderStatus::Succeeded, true) };
    let held = legs.map(|leg| HeldLeg { account: leg.account, held: leg.amount, released: if released { leg.amount } else { 0 }, cancelled: 0 }).collect();
    // What `debit_available` takes from unsettled income.
    let from_unsettled = if context.returns_unsettled() { state.account(payer).expect("payer checked").unsettled.min(amount) } else { 0 };
    let id = state.open_order(context, kind, status, payer, amount, OrderDetail::Payment { refunded: 0, held, channel: None, from_unsettled });
    let entry_kind = if request.guarantee { EntryKind::GuaranteeHold } else { EntryKind::Payment };
    state.begin_entry(fx, id, entry_kind, currency);
    let taken = state.debit_available(fx, payer, amount);
    debug_assert!(!context.returns_unsettled() || taken == from_unsettled, "the order records what the debit took from unsettled");
    if request.guarantee {
        let escrow = state.system_account(SystemRole::Escrow, currency);
        state.post(fx, escrow, Bucket::Settled, amount);
    } else {
        for leg in request.payees.iter().chain(request.splits) {
            credit_income(state, fx, context.day, id, *leg, payer, currency);
        }
    }
    state.end_entry(fx);
    ok_order(id, status)
}

/// Opens a direct payment that waits for its channel: the same checks as a payment except the
/// payer's funds and daily cap (the money does not come from the balance); nothing is posted.
pub fn request_direct(state: &mut ShardState, context: &Context, request: &PaymentRequest, channel: u16) -> Reply {
    let checks = check_amount(request.amount)
        .and_then(|_| check_legs(request.payer, request.amount, request.payees, request.splits))
        .and_then(|_| check_debit_account(state, context.platform, request.payer, request.currency))
        .and_then(|_| check_local_receivers(state, context.platform, request.currency, request.payees))
        .and_then(|_| check_local_receivers(state, context.platform, request.currency, request.splits));
    if let Err(code) = checks {
        return Reply::rejected(code);
    }
    if request.amount > state.account(request.payer).expect("checked").limits.payment_per_order_max {
        return Reply::rejected(ResultCode::ExceedsPerOrderLimit);
    }
    // After this point the request must succeed.
    let kind = if request.guarantee { OrderKind::Guarantee } else { OrderKind::Payment };
    let held = request.payees.iter().chain(request.splits).map(|leg| HeldLeg { account: leg.account, held: leg.amount, released: 0, cancelled: 0 }).collect();
    let id = state.open_order(
        context,
        kind,
        OrderStatus::Pending,
        request.payer,
        request.amount,
        OrderDetail::Payment { refunded: 0, held, channel: Some(channel), from_unsettled: 0 },
    );
    ok_order(id, OrderStatus::Pending)
}

/// The channel confirmed a direct payment: the money goes from the reserve straight to the
/// receivers (balance) or into escrow (guarantee), and the order goes on as a payment.
pub(crate) fn complete_direct(state: &mut ShardState, context: &Context, id: OrderId, fx: &mut Effects) -> OrderStatus {
    let order = state.order(id).expect("checked by the caller");
    let OrderDetail::Payment { held, .. } = &order.detail else {
        unreachable!("a direct payment");
    };
    let (mut held, payer, currency, amount) = (held.clone(), order.account, order.currency, order.amount);
    let guarantee = order.kind == OrderKind::Guarantee;
    let reserve = state.system_account(SystemRole::Reserve, currency);
    state.begin_entry(fx, id, if guarantee { EntryKind::GuaranteeHold } else { EntryKind::Payment }, currency);
    state.post(fx, reserve, Bucket::Settled, -amount);
    if guarantee {
        let escrow = state.system_account(SystemRole::Escrow, currency);
        state.post(fx, escrow, Bucket::Settled, amount);
    } else {
        for leg in held.iter_mut() {
            leg.released = leg.held;
            credit_income(state, fx, context.day, id, Leg { account: leg.account, amount: leg.held }, payer, currency);
        }
    }
    state.end_entry(fx);
    let status = if guarantee { OrderStatus::Held } else { OrderStatus::Succeeded };
    let order = state.order_mut(id);
    if let OrderDetail::Payment { held: legs, .. } = &mut order.detail {
        *legs = held;
    }
    order.status = status;
    order.updated_at = context.now;
    status
}

/// Credits payment income to a receiver: locally (see `land_income`), or through the outbox
/// when another shard owns it.
pub(crate) fn credit_income(state: &mut ShardState, fx: &mut Effects, day: u32, order: OrderId, leg: Leg, payer: AccountId, currency: CurrencyId) {
    if leg.account.shard(state.shard_count) != state.shard {
        state.send_credit(fx, order, leg, payer, CreditPurpose::PaymentIncome, currency);
    } else {
        land_income(state, fx, day, order, leg, payer, currency);
    }
}

/// Lands income on a local receiver's unsettled bucket and remembers it for refunds; a receiver
/// that can no longer take credits (or whose balance would pass `BALANCE_MINOR_MAX`: a
/// cross-shard credit cannot be refused) sends it to suspense instead.
pub(crate) fn land_income(state: &mut ShardState, fx: &mut Effects, day: u32, order: OrderId, leg: Leg, payer: AccountId, currency: CurrencyId) {
    let target = state.credit_target(fx, leg.account, currency, leg.amount);
    if target != leg.account {
        state.post(fx, target, Bucket::Settled, leg.amount);
        return;
    }
    state.credit_unsettled(fx, leg.account, leg.amount, day);
    let income = state.income.entry((order, leg.account)).or_insert(Income { payer, received: 0, refunded: 0 });
    income.received += leg.amount;
}

/// Checks a balance batch's credits to each local receiver together against the balance
/// ceiling: each order's were checked alone, but a receiver several orders pay takes their sum,
/// and an order refused halfway through the batch would leave it half applied.
fn check_batch_credits(state: &ShardState, orders: &[BatchOrder]) -> Result<(), ResultCode> {
    let mut credits: Vec<(AccountId, Minor)> = orders
        .iter()
        .flat_map(|order| order.payees.iter().chain(order.splits.iter()))
        .filter(|leg| leg.account.shard(state.shard_count) == state.shard)
        .map(|leg| (leg.account, leg.amount))
        .collect();
    credits.sort_unstable_by_key(|(account, _)| *account);
    for run in credits.chunk_by(|a, b| a.0 == b.0) {
        if run.len() < 2 {
            continue;
        }
        let sum: i128 = run.iter().map(|(_, amount)| *amount as i128).sum();
        let total = state.account(run[0].0).map_or(0, |account| account.total() as i128);
        if total + sum > crate::money::BALANCE_MINOR_MAX as i128 {
            return Err(ResultCode::BalanceLimitExceeded);
        }
    }
    Ok(())
}

/// The payment command equivalent to one order of a batch (its idempotency record's content).
fn equivalent_payment(payer: AccountId, guarantee: bool, currency: CurrencyId, order: &BatchOrder) -> Command {
    Command::Payment { payer, guarantee, currency, amount: order.amount, payees: order.payees.clone(), splits: order.splits.clone() }
}

/// Applies a batch payment: every order is checked first, against the payer's funds and limits
/// for the whole batch, and only then are all applied, so either all are accepted or none.
/// Each order gets its own order and the idempotency record of a payment with its number (a
/// later payment request with that number replays it). Replies with the first order's id; the
/// others follow it (`id + k * shard_count`).
pub fn apply_batch(
    state: &mut ShardState,
    context: &Context,
    payer: AccountId,
    guarantee: bool,
    currency: CurrencyId,
    orders: &[BatchOrder],
    fx: &mut Effects,
) -> Reply {
    if orders.is_empty() || orders.len() > BATCH_ORDERS_MAX {
        return Reply::rejected(ResultCode::InvalidBatch);
    }
    if let Err(code) = check_debit_account(state, context.platform, payer, currency) {
        return Reply::rejected(code);
    }
    let payment_kind = Command::PAYMENT_SCOPE;
    debug_assert_eq!(payment_kind, equivalent_payment(payer, guarantee, currency, &orders[0]).idempotency_scope());
    let mut total: i128 = 0;
    for (index, order) in orders.iter().enumerate() {
        let checks = check_amount(order.amount)
            .and_then(|_| check_legs(payer, order.amount, &order.payees, &order.splits))
            .and_then(|_| check_local_receivers(state, context.platform, currency, &order.payees))
            .and_then(|_| check_local_receivers(state, context.platform, currency, &order.splits));
        if let Err(code) = checks {
            return Reply::rejected(code);
        }
        if orders[..index].iter().any(|earlier| earlier.out_order_no == order.out_order_no) {
            return Reply::rejected(ResultCode::InvalidBatch);
        }
        if state.idempotency_taken(&idempotency_key(context.platform, payment_kind, &order.out_order_no)) {
            return Reply::rejected(ResultCode::IdempotencyConflict);
        }
        let account = state.account(payer).expect("checked");
        if order.amount > account.limits.payment_per_order_max {
            return Reply::rejected(ResultCode::ExceedsPerOrderLimit);
        }
        total += order.amount as i128;
    }
    if !guarantee {
        if let Err(code) = check_batch_credits(state, orders) {
            return Reply::rejected(code);
        }
    }
    let account = state.account(payer).expect("checked");
    let paid_today = if account.usage_day == context.day { account.paid_today } else { 0 };
    if paid_today as i128 + total > account.limits.payment_daily_max as i128 {
        return Reply::rejected(ResultCode::ExceedsDailyLimit);
    }
    if (account.available() as i128) < total {
        return Reply::rejected(ResultCode::InsufficientFunds);
    }
    // After this point every order of the batch must succeed.
    let mut first = None;
    for order in orders {
        let order_context = Context { out_order_no: Some(order.out_order_no), ..*context };
        let request = PaymentRequest { payer, guarantee, currency, amount: order.amount, payees: &order.payees, splits: &order.splits };
        let reply = apply(state, &order_context, &request, fx);
        assert!(reply.is_ok(), "a checked batch order is accepted: {reply:?}");
        let key = idempotency_key(context.platform, payment_kind, &order.out_order_no);
        let content = content_hash(&equivalent_payment(payer, guarantee, currency, order));
        state.idempotency.insert(key, IdempotencyRecord { content, reply });
        first.get_or_insert(reply.id);
    }
    let status = if guarantee { OrderStatus::Held } else { OrderStatus::Succeeded };
    ok_order(OrderId(first.expect("at least one order")), status)
}
