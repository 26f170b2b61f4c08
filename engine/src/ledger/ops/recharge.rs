//! Money in from a channel: the reserve stripe is debited, the account's settled bucket credited.
//! `apply` books a recharge the channel has already confirmed; `request` and `complete` are the
//! two steps of one that waits for the channel (API.md: `pending`, then `succeeded` or `failed`).

use crate::ledger::state::{check_amount, credit_refusal_of, ok_order, Context, Effects, ShardState};
use crate::ledger::types::*;
use crate::money::{CurrencyId, Minor};
use crate::result::ResultCode;

/// The checks shared by both kinds of recharge.
fn check(state: &ShardState, context: &Context, account: AccountId, currency: CurrencyId, amount: Minor) -> Result<(), ResultCode> {
    check_amount(amount)?;
    if currency.0 as usize >= state.currencies.len() {
        return Err(ResultCode::CurrencyUnknown);
    }
    let target = state.customer_account(context.platform, account).ok_or(ResultCode::AccountNotFound)?;
    credit_refusal_of(target, currency, amount).map_or(Ok(()), Err)
}

/// Posts a confirmed recharge of order `id`: reserve debited, the account (or suspense, if it
/// can no longer take credits or the credit would pass `BALANCE_MINOR_MAX`) credited.
fn post(state: &mut ShardState, id: OrderId, account: AccountId, currency: CurrencyId, amount: Minor, fx: &mut Effects) {
    let reserve = state.system_account(SystemRole::Reserve, currency);
    let target = state.credit_target(fx, account, currency, amount);
    state.begin_entry(fx, id, EntryKind::Recharge, currency);
    state.post(fx, reserve, Bucket::Settled, -amount);
    state.post(fx, target, Bucket::Settled, amount);
    state.end_entry(fx);
}

/// Credits a confirmed channel payment to `account`.
pub fn apply(state: &mut ShardState, context: &Context, account: AccountId, currency: CurrencyId, amount: Minor, channel: u16, fx: &mut Effects) -> Reply {
    if let Err(code) = check(state, context, account, currency, amount) {
        return Reply::rejected(code);
    }
    // After this point the recharge must succeed.
    let id = state.open_order(context, OrderKind::Recharge, OrderStatus::Succeeded, account, amount, OrderDetail::Recharge { channel });
    post(state, id, account, currency, amount, fx);
    ok_order(id, OrderStatus::Succeeded)
}

/// Opens a pending recharge that a channel will confirm or fail; nothing is posted yet.
pub fn request(state: &mut ShardState, context: &Context, account: AccountId, currency: CurrencyId, amount: Minor, channel: u16) -> Reply {
    if let Err(code) = check(state, context, account, currency, amount) {
        return Reply::rejected(code);
    }
    // After this point the request must succeed.
    let id = state.open_order(context, OrderKind::Recharge, OrderStatus::Pending, account, amount, OrderDetail::Recharge { channel });
    ok_order(id, OrderStatus::Pending)
}

/// Applies the channel's verdict on a pending recharge. Repeating the verdict already applied
/// answers with the order as it is (callbacks come more than once); the opposite one is refused.
/// The money has arrived at the bank whatever the account's status is now, so a success always
/// posts: to the account, or to suspense for an operator when it can no longer take credits.
pub fn complete(state: &mut ShardState, context: &Context, id: OrderId, succeeded: bool, fx: &mut Effects) -> Reply {
    let Some(order) = state.platform_order(context.platform, id) else {
        return Reply::rejected(ResultCode::OrderNotFound);
    };
    let direct = match order.detail {
        OrderDetail::Recharge { .. } => false,
        OrderDetail::Payment { channel: Some(_), .. } => true,
        _ => return Reply::rejected(ResultCode::OrderNotFound),
    };
    match (order.status, succeeded) {
        (OrderStatus::Pending, _) => {}
        // The verdict already applied, again: the order as it is now.
        (OrderStatus::Failed, false) => return ok_order(id, OrderStatus::Failed),
        (status, true) if status != OrderStatus::Failed => return ok_order(id, status),
        _ => return Reply::rejected(ResultCode::OrderStateInvalid),
    }
    if direct {
        // After this point the completion must succeed.
        let status = if succeeded {
            crate::ledger::ops::payment::complete_direct(state, context, id, fx)
        } else {
            let order = state.order_mut(id);
            order.status = OrderStatus::Failed;
            order.updated_at = context.now;
            OrderStatus::Failed
        };
        state.record_change(id);
        return ok_order(id, status);
    }
    let verdict = if succeeded { OrderStatus::Succeeded } else { OrderStatus::Failed };
    // After this point the completion must succeed.
    let (account, currency, amount) = (order.account, order.currency, order.amount);
    if succeeded {
        post(state, id, account, currency, amount, fx);
    }
    let order = state.order_mut(id);
    order.status = verdict;
    order.updated_at = context.now;
    state.record_change(id);
    ok_order(id, verdict)
}

/// Books money that arrived at the bank but matched no account into this shard's suspense
/// stripe (reserve debited), for an operator to resolve. Not an order of any platform.
pub fn credit_suspense(state: &mut ShardState, currency: CurrencyId, amount: Minor, fx: &mut Effects) -> Reply {
    if let Err(code) = check_amount(amount) {
        return Reply::rejected(code);
    }
    if currency.0 as usize >= state.currencies.len() {
        return Reply::rejected(ResultCode::CurrencyUnknown);
    }
    // After this point the credit must succeed.
    state.move_between_roles(fx, EntryKind::SuspenseIn, currency, SystemRole::Reserve, SystemRole::Suspense, amount);
    Reply { code: ResultCode::Ok, id: 0, status: None, replayed: false }
}
