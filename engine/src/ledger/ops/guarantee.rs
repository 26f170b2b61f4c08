//! Guarantee (escrow) payments: staged confirmation to receivers, and cancellation to the payer.

use crate::ledger::command::StepProgress;
use crate::ledger::growth::{chunk_of, order_block_of};
use crate::ledger::ops::payment::credit_income;
use crate::ledger::state::{check_amount, credit_refusal_of, ok_order, Context, Effects, ShardState};
use crate::ledger::types::*;
use crate::money::Minor;
use crate::result::ResultCode;

/// The guarantee order `id` as the caller may act on it, if it is still held.
fn held_order(state: &ShardState, platform: u32, id: OrderId) -> Result<&Order, ResultCode> {
    let order = state.platform_order(platform, id).ok_or(ResultCode::OrderNotFound)?;
    if order.kind != OrderKind::Guarantee {
        return Err(ResultCode::OrderNotFound);
    }
    if order.status != OrderStatus::Held {
        return Err(ResultCode::OrderStateInvalid);
    }
    Ok(order)
}

fn held_legs(order: &Order) -> &[HeldLeg] {
    match &order.detail {
        OrderDetail::Payment { held, .. } => held,
        _ => unreachable!("guarantee orders carry held legs"),
    }
}

fn held_legs_mut(order: &mut Order) -> &mut HeldLegs {
    match &mut order.detail {
        OrderDetail::Payment { held, .. } => held,
        _ => unreachable!("guarantee orders carry held legs"),
    }
}

fn remaining(leg: &HeldLeg) -> Minor {
    leg.held - leg.released - leg.cancelled
}

/// Checks a list of releases against what each leg still holds.
fn check_releases(order: &Order, releases: &[Leg]) -> Result<(), ResultCode> {
    if releases.len() > LEGS_MAX {
        return Err(ResultCode::TooManyLegs);
    }
    let legs = held_legs(order);
    for (index, release) in releases.iter().enumerate() {
        check_amount(release.amount)?;
        if releases[..index].iter().any(|earlier| earlier.account == release.account) {
            return Err(ResultCode::DuplicateLeg);
        }
        let leg = legs.iter().find(|l| l.account == release.account).ok_or(ResultCode::PayeeNotFound)?;
        if release.amount > remaining(leg) {
            return Err(ResultCode::ExceedsHeldAmount);
        }
    }
    Ok(())
}

/// Releases escrow to receivers: the listed amounts, or everything still held when `releases` is empty.
pub fn confirm(state: &mut ShardState, context: &Context, id: OrderId, releases: &[Leg], fx: &mut Effects) -> Reply {
    let order = match held_order(state, context.platform, id) {
        Ok(order) => order,
        Err(code) => return Reply::rejected(code),
    };
    if let Err(code) = check_releases(order, releases) {
        return Reply::rejected(code);
    }
    // After this point the confirmation must succeed.
    let mut plan: Legs = if releases.is_empty() {
        held_legs(order).iter().map(|l| Leg { account: l.account, amount: remaining(l) }).filter(|l| l.amount > 0).collect()
    } else {
        releases.iter().copied().collect()
    };
    plan.retain(|l| l.amount > 0);
    let (payer, currency) = (order.account, order.currency);
    let total: Minor = plan.iter().map(|l| l.amount).sum();
    let escrow = state.system_account(SystemRole::Escrow, currency);
    state.begin_entry(fx, id, EntryKind::GuaranteeRelease, currency);
    state.post(fx, escrow, Bucket::Settled, -total);
    for leg in &plan {
        credit_income(state, fx, context.day, id, *leg, payer, currency);
    }
    state.end_entry(fx);
    let order = state.order_mut(id);
    for leg in &plan {
        let held = held_legs_mut(order).iter_mut().find(|l| l.account == leg.account).expect("checked");
        held.released += leg.amount;
    }
    finish_if_nothing_held(order, context);
    let status = order.status;
    state.record_change(id);
    ok_order(id, status)
}

/// Returns unreleased escrow to the payer: `amount`, or all that is held; what the payment took
/// from the payer's unsettled income goes back there first (see `Order::take_unsettled_part`), the
/// rest to its settled bucket.
pub fn cancel(state: &mut ShardState, context: &Context, id: OrderId, amount: Option<Minor>, fx: &mut Effects) -> Reply {
    cancel_as(state, context, id, Cancelled::Amount(amount), fx)
}

/// Returns the named receivers' held parts to the payer: each leg that much of what that
/// receiver still holds (checked as releases are: each a receiver of the order, once, within
/// what it holds), the others' parts staying held. Otherwise as `cancel`.
pub fn cancel_legs(state: &mut ShardState, context: &Context, id: OrderId, cancels: &[Leg], fx: &mut Effects) -> Reply {
    cancel_as(state, context, id, Cancelled::Legs(cancels), fx)
}

/// What a cancellation returns: an amount (or all) off the receivers in their order, or named
/// receivers' parts.
enum Cancelled<'a> {
    Amount(Option<Minor>),
    Legs(&'a [Leg]),
}

fn cancel_as(state: &mut ShardState, context: &Context, id: OrderId, cancelled: Cancelled, fx: &mut Effects) -> Reply {
    let order = match held_order(state, context.platform, id) {
        Ok(order) => order,
        Err(code) => return Reply::rejected(code),
    };
    let held_total: Minor = held_legs(order).iter().map(remaining).sum();
    let amount = match cancelled {
        Cancelled::Amount(amount) => amount.unwrap_or(held_total),
        Cancelled::Legs(legs) => {
            if legs.is_empty() {
                return Reply::rejected(ResultCode::InvalidAmount);
            }
            if let Err(code) = check_releases(order, legs) {
                return Reply::rejected(code);
            }
            // Each within what its receiver holds: the sum within what the order holds.
            legs.iter().map(|leg| leg.amount).sum()
        }
    };
    if let Err(code) = check_amount(amount) {
        return Reply::rejected(code);
    }
    if amount > held_total {
        return Reply::rejected(ResultCode::ExceedsHeldAmount);
    }
    let (payer, currency) = (order.account, order.currency);
    let payer_account = state.account(payer).expect("payer of a local order is local");
    if let (false, Some(code)) = (context.diverts_cancels(), credit_refusal_of(payer_account, currency, amount)) {
        return Reply::rejected(code);
    }
    // After this point the cancellation must succeed.
    let to_unsettled = state.order_mut(id).take_unsettled_part(amount);
    let escrow = state.system_account(SystemRole::Escrow, currency);
    state.begin_entry(fx, id, EntryKind::GuaranteeCancel, currency);
    state.post(fx, escrow, Bucket::Settled, -amount);
    // A payer that can no longer take the credit: to suspense, with a notice (an operator's
    // case), as a refund's (journal format 4 on; before, the cancel was refused, and the
    // nightly auto-confirm then paid the payees what the platform had cancelled).
    let target = if context.diverts_cancels() { state.credit_target(fx, payer, currency, amount) } else { payer };
    if target != payer {
        state.post(fx, target, Bucket::Settled, amount);
    } else {
        if to_unsettled > 0 {
            state.return_unsettled(context, fx, payer, to_unsettled);
        }
        if amount > to_unsettled {
            state.post(fx, payer, Bucket::Settled, amount - to_unsettled);
        }
    }
    state.end_entry(fx);
    let order = state.order_mut(id);
    match cancelled {
        Cancelled::Amount(_) => {
            let mut left = amount;
            for leg in held_legs_mut(order).iter_mut() {
                let take = remaining(leg).min(left);
                leg.cancelled += take;
                left -= take;
            }
            assert_eq!(left, 0, "cancel covered by held legs");
        }
        Cancelled::Legs(legs) => {
            for cancel in legs {
                let held = held_legs_mut(order).iter_mut().find(|l| l.account == cancel.account).expect("checked");
                held.cancelled += cancel.amount;
            }
        }
    }
    finish_if_nothing_held(order, context);
    let status = order.status;
    state.record_change(id);
    ok_order(id, status)
}

/// Moves a guarantee order out of `held` once nothing is held any more (API.md: `succeeded`
/// once nothing is held, whatever its receivers refunded meanwhile, which `refunded_amount`
/// shows; `cancelled` if nothing was released).
fn finish_if_nothing_held(order: &mut Order, context: &Context) {
    order.updated_at = context.now;
    let legs = held_legs(order);
    if legs.iter().map(remaining).sum::<Minor>() > 0 {
        return;
    }
    let released: Minor = legs.iter().map(|l| l.released).sum();
    order.status = if released > 0 { OrderStatus::Succeeded } else { OrderStatus::Cancelled };
}

/// Confirms in full every held guarantee payment of the platform (every platform for 0) created
/// before `created_before`, oldest first. Only the platform's open orders are examined (kept
/// per platform by the shard), not its whole history; the nightly run uses `auto_confirm_chunk`,
/// which also bounds what one command does. Kept for journals that hold it.
pub fn auto_confirm(state: &mut ShardState, context: &Context, created_before: Timestamp, fx: &mut Effects) -> Reply {
    let due: Vec<OrderId> = if context.platform == 0 {
        let mut due = Vec::new();
        state.orders.scan(|o| {
            if is_due(o, created_before) {
                due.push(o.id);
            }
        });
        due
    } else {
        let Some(index) = state.platform_orders.get(&context.platform) else { return Reply { code: ResultCode::Ok, id: 0, status: None, replayed: false } };
        index
            .open
            .iter()
            .map(|&local| state.orders.get(local as usize).expect("indexed orders exist"))
            .filter(|o| is_due(o, created_before))
            .map(|o| o.id)
            .collect()
    };
    for id in &due {
        let reply = confirm(state, context, *id, &[], fx);
        assert!(reply.is_ok(), "a held order confirms in full: {reply:?}");
    }
    Reply { code: ResultCode::Ok, id: due.len() as u64, status: None, replayed: false }
}

/// A held guarantee payment created before `created_before`.
fn is_due(order: &Order, created_before: Timestamp) -> bool {
    order.kind == OrderKind::Guarantee && order.status == OrderStatus::Held && order.created_at < created_before
}

/// One bounded step of auto-confirm on this shard: examines at most `orders_max` (at least 1;
/// the command clamps it) of the platform's open orders with local index `after` or more,
/// oldest first, and confirms in full the due ones. Orders are indexed in creation order, so the
/// first one created at or after `created_before` ends the work. The reply's id carries an
/// `StepProgress`: how many were confirmed, and where the next step starts if any. The step
/// also stops before it would touch a `chunks_max + 1`th piece of stored history: the chunks of
/// the orders it examines and the income blocks of those it confirms (a confirmed payment's
/// local receivers' income is kept by order, `OrderBlocks`), counted from the ids, so replay
/// stops where the step stopped; the first order examined is always taken, so steps end
/// (`AutoConfirmStep`; `usize::MAX` for `AutoConfirmChunk`, which had no such bound).
pub fn auto_confirm_chunk(
    state: &mut ShardState,
    context: &Context,
    (created_before, after, orders_max): (Timestamp, u32, u32),
    chunks_max: usize,
    fx: &mut Effects,
) -> Reply {
    let orders_max = orders_max.max(1) as usize;
    let mut due = Vec::new();
    let mut resume_at = None;
    if let Some(index) = state.platform_orders.get(&context.platform) {
        // Open orders come in index order (and so in id order), so a chunk or a block once
        // left is never touched again.
        let (mut pieces, mut last_chunk, mut last_block) = (0usize, None, None);
        for (examined, &local) in index.open.range(after..).enumerate() {
            let chunk = chunk_of(local as usize);
            let full = examined > 0 && pieces >= chunks_max;
            if examined == orders_max || (last_chunk != Some(chunk) && full) {
                resume_at = Some(local);
                break;
            }
            if last_chunk != Some(chunk) {
                (pieces, last_chunk) = (pieces + 1, Some(chunk));
            }
            let order = state.orders.get(local as usize).expect("indexed orders exist");
            if order.created_at >= created_before {
                break;
            }
            if is_due(order, created_before) {
                let block = order_block_of(order.id.0);
                if last_block != Some(block) {
                    if examined > 0 && pieces >= chunks_max {
                        resume_at = Some(local);
                        break;
                    }
                    (pieces, last_block) = (pieces + 1, Some(block));
                }
                due.push(order.id);
            }
        }
    }
    for id in &due {
        let reply = confirm(state, context, *id, &[], fx);
        assert!(reply.is_ok(), "a held order confirms in full: {reply:?}");
    }
    let progress = StepProgress { count: due.len() as u32, resume_at };
    Reply { code: ResultCode::Ok, id: progress.to_reply_id(), status: None, replayed: false }
}
