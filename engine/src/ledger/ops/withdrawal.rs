//! Withdrawals: reserve `amount + fee` from settled funds, then pay out or return them.

use crate::ledger::state::{check_amount, check_debit_account, ok_order, Context, Effects, ShardState};
use crate::ledger::types::*;
use crate::money::{CurrencyId, Minor, AMOUNT_MINOR_MAX};
use crate::result::ResultCode;

/// Reserves a withdrawal of `amount` (the card receives it) plus `fee` (charged on top).
#[allow(clippy::too_many_arguments)]
pub fn reserve(
    state: &mut ShardState,
    context: &Context,
    id: AccountId,
    currency: CurrencyId,
    amount: Minor,
    fee: Minor,
    channel: u16,
    fx: &mut Effects,
) -> Reply {
    if let Err(code) = check_amount(amount) {
        return Reply::rejected(code);
    }
    if !(0..=AMOUNT_MINOR_MAX).contains(&fee) {
        return Reply::rejected(ResultCode::InvalidFee);
    }
    if let Err(code) = check_debit_account(state, context.platform, id, currency) {
        return Reply::rejected(code);
    }
    let account = state.account(id).expect("checked");
    if amount > account.limits.withdrawal_per_order_max {
        return Reply::rejected(ResultCode::ExceedsPerOrderLimit);
    }
    let withdrawn_today = if account.usage_day == context.day { account.withdrawn_today } else { 0 };
    if withdrawn_today as i128 + amount as i128 > account.limits.withdrawal_daily_max as i128 {
        return Reply::rejected(ResultCode::ExceedsDailyLimit);
    }
    if account.settled < amount + fee {
        return Reply::rejected(ResultCode::InsufficientFunds);
    }
    // After this point the reservation must succeed.
    state.roll_day(id, context.day);
    state.account_mut(id).withdrawn_today += amount;
    let order = state.open_order(context, OrderKind::Withdrawal, OrderStatus::Processing, id, amount, OrderDetail::Withdrawal { fee, channel });
    let pending = state.system_account(SystemRole::PayoutPending, currency);
    state.begin_entry(fx, order, EntryKind::WithdrawalReserve, currency);
    state.post(fx, id, Bucket::Settled, -(amount + fee));
    state.post(fx, pending, Bucket::Settled, amount + fee);
    state.end_entry(fx);
    ok_order(order, OrderStatus::Processing)
}

/// Applies the channel's verdict. Repeating the verdict already applied is answered with the
/// order as it is (callbacks come more than once); the opposite verdict is refused.
pub fn complete(state: &mut ShardState, context: &Context, id: OrderId, succeeded: bool, fx: &mut Effects) -> Reply {
    let Some(order) = state.platform_order(context.platform, id) else {
        return Reply::rejected(ResultCode::OrderNotFound);
    };
    let OrderDetail::Withdrawal { fee, .. } = order.detail else {
        return Reply::rejected(ResultCode::OrderNotFound);
    };
    let verdict = if succeeded { OrderStatus::Succeeded } else { OrderStatus::Failed };
    if order.status == verdict {
        return ok_order(id, verdict);
    }
    if order.status != OrderStatus::Processing {
        return Reply::rejected(ResultCode::OrderStateInvalid);
    }
    // After this point the completion must succeed.
    let (account, currency, amount, created_at) = (order.account, order.currency, order.amount, order.created_at);
    let pending = state.system_account(SystemRole::PayoutPending, currency);
    let entry_kind = if succeeded { EntryKind::WithdrawalSuccess } else { EntryKind::WithdrawalFailure };
    state.begin_entry(fx, id, entry_kind, currency);
    state.post(fx, pending, Bucket::Settled, -(amount + fee));
    if succeeded {
        let reserve = state.system_account(SystemRole::Reserve, currency);
        state.post(fx, reserve, Bucket::Settled, amount);
        if fee > 0 {
            let income = state.system_account(SystemRole::FeeIncome, currency);
            state.post(fx, income, Bucket::Settled, fee);
        }
    } else {
        // The bank's verdict cannot be refused: an account that cannot take the money back
        // (closed, or its balance would pass BALANCE_MINOR_MAX) leaves it in suspense.
        let target = state.credit_target(fx, account, currency, amount + fee);
        state.post(fx, target, Bucket::Settled, amount + fee);
        let reserved_day = state.business_day(created_at);
        let a = state.account_mut(account);
        if a.usage_day == reserved_day {
            a.withdrawn_today -= amount;
        }
    }
    state.end_entry(fx);
    let order = state.order_mut(id);
    order.status = verdict;
    order.updated_at = context.now;
    state.record_change(id);
    ok_order(id, verdict)
}

/// Moves a processing withdrawal to another channel with its own fee (routing's fallback after
/// the first channel failed). A higher fee is taken from the account's settled funds, a lower
/// one returned to them; the amount stays reserved.
pub fn reroute(state: &mut ShardState, context: &Context, id: OrderId, (from, channel): (u16, u16), fee: Minor, fx: &mut Effects) -> Reply {
    let Some(order) = state.platform_order(context.platform, id) else {
        return Reply::rejected(ResultCode::OrderNotFound);
    };
    let OrderDetail::Withdrawal { fee: old_fee, channel: current } = order.detail else {
        return Reply::rejected(ResultCode::OrderNotFound);
    };
    if order.status != OrderStatus::Processing {
        return Reply::rejected(ResultCode::OrderStateInvalid);
    }
    if current != from {
        return Reply::rejected(ResultCode::ChannelChanged);
    }
    if !(0..=AMOUNT_MINOR_MAX).contains(&fee) {
        return Reply::rejected(ResultCode::InvalidFee);
    }
    let (account, currency) = (order.account, order.currency);
    let more = fee - old_fee;
    if more > 0 && state.account(account).expect("local").settled < more {
        return Reply::rejected(ResultCode::InsufficientFunds);
    }
    // After this point the reroute must succeed.
    if more != 0 {
        let pending = state.system_account(SystemRole::PayoutPending, currency);
        let target = if more < 0 { state.credit_target(fx, account, currency, -more) } else { account };
        state.begin_entry(fx, id, EntryKind::WithdrawalReroute, currency);
        state.post(fx, target, Bucket::Settled, -more);
        state.post(fx, pending, Bucket::Settled, more);
        state.end_entry(fx);
    }
    let order = state.order_mut(id);
    order.detail = OrderDetail::Withdrawal { fee, channel };
    order.updated_at = context.now;
    state.record_change(id);
    ok_order(id, OrderStatus::Processing)
}
