//! Balance and guarantee payments with several payees and splits.

use crate::ledger::state::{check_amount, check_debit_account, credit_refusal, ok_order, Context, Effects, Income, ShardState};
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
        if let Some(code) = credit_refusal(receiver, currency) {
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

/// Applies a payment: the payer is debited (unsettled first); a balance payment credits each
/// receiver's unsettled bucket, a guarantee payment holds the amount in this shard's escrow stripe.
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
    let (kind, status, released) = if request.guarantee {
        (OrderKind::Guarantee, OrderStatus::Held, false)
    } else {
        (OrderKind::Payment, OrderStatus::Succeeded, true)
    };
    let held = legs
        .map(|leg| HeldLeg { account: leg.account, held: leg.amount, released: if released { leg.amount } else { 0 }, cancelled: 0 })
        .collect();
    let id = state.open_order(context, kind, status, payer, amount, OrderDetail::Payment { refunded: 0, held });
    let entry_kind = if request.guarantee { EntryKind::GuaranteeHold } else { EntryKind::Payment };
    state.begin_entry(fx, id, entry_kind, currency);
    state.debit_available(fx, payer, amount);
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
/// that can no longer take credits sends it to suspense instead.
pub(crate) fn land_income(state: &mut ShardState, fx: &mut Effects, day: u32, order: OrderId, leg: Leg, payer: AccountId, currency: CurrencyId) {
    let target = state.credit_target(leg.account, currency);
    if target != leg.account {
        state.post(fx, target, Bucket::Settled, leg.amount);
        return;
    }
    state.credit_unsettled(fx, leg.account, leg.amount, day);
    let income = state.income.entry((order, leg.account)).or_insert(Income { payer, received: 0, refunded: 0 });
    income.received += leg.amount;
}
