//! Refunds: money a payee received from a payment goes back to the payer. Runs on the payee's shard.

use crate::ledger::state::{check_amount, ok_order, Context, Effects, ShardState};
use crate::ledger::types::*;
use crate::money::Minor;
use crate::result::ResultCode;

/// Refunds `amount` of what `payee` received from `payment`.
pub fn apply(state: &mut ShardState, context: &Context, payment: OrderId, payee: AccountId, amount: Minor, fx: &mut Effects) -> Reply {
    if let Err(code) = check_amount(amount) {
        return Reply::rejected(code);
    }
    let Some(account) = state.customer_account(context.platform, payee) else {
        return Reply::rejected(ResultCode::AccountNotFound);
    };
    let Some(income) = state.income.get(&(payment, payee)).copied() else {
        return Reply::rejected(ResultCode::OrderNotFound);
    };
    if amount > income.received - income.refunded {
        return Reply::rejected(ResultCode::ExceedsRefundableAmount);
    }
    match account.status {
        AccountStatus::Closed => return Reply::rejected(ResultCode::AccountClosed),
        AccountStatus::DebitBlocked => return Reply::rejected(ResultCode::AccountFrozen),
        AccountStatus::Normal | AccountStatus::CreditBlocked => {}
    }
    if account.available() < amount {
        return Reply::rejected(ResultCode::InsufficientFunds);
    }
    // After this point the refund must succeed.
    let currency = account.currency;
    state.income.get_mut(&(payment, payee)).expect("checked").refunded += amount;
    let id = state.open_order(context, OrderKind::Refund, OrderStatus::Succeeded, payee, amount, OrderDetail::Refund { payment, payee });
    state.begin_entry(fx, id, EntryKind::Refund, currency);
    state.debit_available(fx, payee, amount);
    let leg = Leg { account: income.payer, amount };
    if income.payer.shard(state.shard_count) == state.shard {
        credit_refund(state, context, fx, payment, leg);
    } else {
        state.send_credit(fx, payment, leg, payee, CreditPurpose::RefundToPayer, currency);
    }
    state.end_entry(fx);
    ok_order(id, OrderStatus::Succeeded)
}

/// Lands a refund on the payer's shard (which holds the payment): credits the payer (what the
/// payment took from its unsettled income back there first, see `Order::take_unsettled_part`; the rest
/// to its settled bucket), or suspense if the payer can no longer take credits, and updates the
/// payment's status.
pub(crate) fn credit_refund(state: &mut ShardState, context: &Context, fx: &mut Effects, payment: OrderId, leg: Leg) {
    let currency = state.order(payment).expect("a refunded payment lives on the payer's shard").currency;
    let to_unsettled = state.order_mut(payment).take_unsettled_part(leg.amount);
    let target = state.credit_target(fx, leg.account, currency, leg.amount);
    if target == leg.account && to_unsettled > 0 {
        state.return_unsettled(context, fx, target, to_unsettled);
        if leg.amount > to_unsettled {
            state.post(fx, target, Bucket::Settled, leg.amount - to_unsettled);
        }
    } else {
        state.post(fx, target, Bucket::Settled, leg.amount);
    }
    let order = state.order_mut(payment);
    order.updated_at = context.now;
    let paid = order.amount;
    let OrderDetail::Payment { refunded, held, .. } = &mut order.detail else {
        unreachable!("refunds are of payments");
    };
    *refunded += leg.amount;
    let cancelled: Minor = held.iter().map(|l| l.cancelled).sum();
    if order.status != OrderStatus::Held {
        order.status = if *refunded >= paid - cancelled { OrderStatus::Refunded } else { OrderStatus::PartiallyRefunded };
    }
    state.record_change(payment);
}
