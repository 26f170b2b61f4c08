//! Freezes: part of an account's available funds is held (settled first), and released later.

use std::collections::BTreeSet;

use crate::ledger::command::{StepProgress, STEP_CHUNKS_LIMIT, STEP_COUNT_LIMIT};
use crate::ledger::growth::chunk_of;
use crate::ledger::state::{check_amount, ok_order, Context, Effects, ShardState};
use crate::ledger::types::*;
use crate::money::{CurrencyId, Minor};
use crate::result::ResultCode;

/// Freezes `amount` of `account`'s available funds for `reason`, optionally until `expires_at`.
#[allow(clippy::too_many_arguments)]
pub fn freeze(
    state: &mut ShardState,
    context: &Context,
    id: AccountId,
    currency: CurrencyId,
    amount: Minor,
    reason: &str,
    expires_at: Option<Timestamp>,
    fx: &mut Effects,
) -> Reply {
    if let Err(code) = check_amount(amount) {
        return Reply::rejected(code);
    }
    if reason.len() > REASON_BYTES_MAX {
        return Reply::rejected(ResultCode::ReasonTooLong);
    }
    if expires_at.is_some_and(|at| at <= context.now) {
        return Reply::rejected(ResultCode::InvalidExpiry);
    }
    if currency.0 as usize >= state.currencies.len() {
        return Reply::rejected(ResultCode::CurrencyUnknown);
    }
    let Some(account) = state.customer_account(context.platform, id) else {
        return Reply::rejected(ResultCode::AccountNotFound);
    };
    if account.currency != currency {
        return Reply::rejected(ResultCode::CurrencyMismatch);
    }
    if account.status == AccountStatus::Closed {
        return Reply::rejected(ResultCode::AccountClosed);
    }
    if account.available() < amount {
        return Reply::rejected(ResultCode::InsufficientFunds);
    }
    // After this point the freeze must succeed.
    let from_settled = account.settled.min(amount);
    let from_unsettled = amount - from_settled;
    // The system's freeze (platform 0: a hold an operator's case placed) is the system's order
    // from journal format 4 on, so the account's platform cannot release it; a platform's is
    // the platform's.
    let platform = if context.platform == 0 && context.system_holds() { 0 } else { account.platform };
    let detail = OrderDetail::Freeze { remaining: amount, from_unsettled, expires_at, reason: reason.into() };
    let order = state.open_order_of(context, (OrderKind::Freeze, OrderStatus::Held), (id, platform, currency), amount, detail);
    if let Some(at) = expires_at {
        state.expiring_freezes.insert((at, order), ());
    }
    state.begin_entry(fx, order, EntryKind::Freeze, currency);
    if from_settled > 0 {
        state.post(fx, id, Bucket::Settled, -from_settled);
    }
    if from_unsettled > 0 {
        // Spend unsettled lots exactly as a payment would, so that lots keep covering the bucket.
        state.debit_unsettled_only(fx, id, from_unsettled);
    }
    state.post(fx, id, Bucket::Frozen, amount);
    state.end_entry(fx);
    ok_order(order, OrderStatus::Held)
}

/// Releases `amount` (or all that remains) of a freeze.
pub fn release(state: &mut ShardState, context: &Context, id: OrderId, amount: Option<Minor>, fx: &mut Effects) -> Reply {
    let Some(order) = state.platform_order(context.platform, id) else {
        return Reply::rejected(ResultCode::OrderNotFound);
    };
    let OrderDetail::Freeze { remaining, .. } = &order.detail else {
        return Reply::rejected(ResultCode::OrderNotFound);
    };
    if order.status != OrderStatus::Held {
        return Reply::rejected(ResultCode::OrderStateInvalid);
    }
    let amount = amount.unwrap_or(*remaining);
    if let Err(code) = check_amount(amount) {
        return Reply::rejected(code);
    }
    if amount > *remaining {
        return Reply::rejected(ResultCode::ExceedsFrozenAmount);
    }
    // After this point the release must succeed.
    release_unchecked(state, context, id, amount, fx);
    ok_order(id, state.order(id).expect("exists").status)
}

/// Takes what remains of a freeze of the system's (platform 0's order) into the shard's
/// suspense stripe: one entry, the account's frozen bucket down, suspense up (what the freeze
/// took from unsettled income is not given back to its lots). Platform 0 only: any other
/// caller, or a platform's freeze, is `OrderNotFound`.
pub fn capture(state: &mut ShardState, context: &Context, id: OrderId, fx: &mut Effects) -> Reply {
    if context.platform != 0 {
        return Reply::rejected(ResultCode::OrderNotFound);
    }
    let Some(order) = state.order(id).filter(|o| o.platform == 0) else {
        return Reply::rejected(ResultCode::OrderNotFound);
    };
    let OrderDetail::Freeze { remaining, expires_at, .. } = &order.detail else {
        return Reply::rejected(ResultCode::OrderNotFound);
    };
    if order.status != OrderStatus::Held {
        return Reply::rejected(ResultCode::OrderStateInvalid);
    }
    let (account, currency, amount, expiry) = (order.account, order.currency, *remaining, *expires_at);
    // After this point the capture must succeed.
    let order = state.order_mut(id);
    if let OrderDetail::Freeze { remaining, from_unsettled, .. } = &mut order.detail {
        (*remaining, *from_unsettled) = (0, 0);
    }
    order.status = OrderStatus::Succeeded;
    order.updated_at = context.now;
    if let Some(at) = expiry {
        state.expiring_freezes.remove(&(at, id));
    }
    let suspense = state.system_account(SystemRole::Suspense, currency);
    state.begin_entry(fx, id, EntryKind::Adjustment, currency);
    state.post(fx, account, Bucket::Frozen, -amount);
    state.post(fx, suspense, Bucket::Settled, amount);
    state.end_entry(fx);
    state.record_change(id);
    ok_order(id, OrderStatus::Succeeded)
}

/// Releases every freeze whose expiry is at or before now; replies with how many were released.
pub fn expire(state: &mut ShardState, context: &Context, fx: &mut Effects) -> Reply {
    let mut released = 0u64;
    while let Some((&(at, id), _)) = state.expiring_freezes.first_key_value() {
        if at > context.now {
            break;
        }
        release_in_full(state, context, id, fx);
        released += 1;
    }
    Reply { code: ResultCode::Ok, id: released, status: None, replayed: false }
}

/// How many expiring freezes an `ExpireFreezesChunk` looks at for each it may release (see
/// `expire_chunk`). Part of the journal's format: replay applies journaled steps with it.
pub const EXPIRE_WINDOW_PER_FREEZE: usize = 4;

/// `expire` in a bounded step (`ExpireFreezesChunk`): looks at the expiring freezes soonest
/// first, at most `EXPIRE_WINDOW_PER_FREEZE` x `freezes_max` of them up to the cut-off (the
/// earlier of `expired_before` and now), and releases at most `freezes_max` of them, of at
/// most `chunks_max` chunks of stored orders: a freeze of another chunk once the step has its
/// chunks is left for the next step, not an end to this one (freezes whose expiries take turns
/// among many chunks would otherwise make steps of `chunks_max` freezes). Bounds clamped to the
/// format's limits. The reply (`StepProgress`) says how many and, with `resume_at` `Some(0)`,
/// that more are due. Every step releases the soonest freeze at least, so steps end.
pub fn expire_chunk(state: &mut ShardState, context: &Context, expired_before: Timestamp, (freezes_max, chunks_max): (u32, u32), fx: &mut Effects) -> Reply {
    let (freezes_max, chunks_max) = (freezes_max.clamp(1, STEP_COUNT_LIMIT) as usize, chunks_max.clamp(1, STEP_CHUNKS_LIMIT) as usize);
    let (through, window) = (expired_before.min(context.now), freezes_max * EXPIRE_WINDOW_PER_FREEZE);
    let mut chosen: Vec<OrderId> = Vec::new();
    let mut chunks: BTreeSet<usize> = BTreeSet::new();
    let mut more = false;
    for (looked, &(at, id)) in state.expiring_freezes.keys().enumerate() {
        if at > through {
            break;
        }
        if chosen.len() == freezes_max || looked == window {
            more = true;
            break;
        }
        let chunk = chunk_of(id.local_index(state.shard_count) as usize);
        if chunks.len() == chunks_max && !chunks.contains(&chunk) {
            more = true;
            continue;
        }
        chunks.insert(chunk);
        chosen.push(id);
    }
    for id in &chosen {
        release_in_full(state, context, *id, fx);
    }
    let progress = StepProgress { count: chosen.len() as u32, resume_at: more.then_some(0) };
    Reply { code: ResultCode::Ok, id: progress.to_reply_id(), status: None, replayed: false }
}

/// Releases what remains of the listed freeze `id`.
fn release_in_full(state: &mut ShardState, context: &Context, id: OrderId, fx: &mut Effects) {
    let OrderDetail::Freeze { remaining, .. } = &state.order(id).expect("listed freezes exist").detail else {
        unreachable!("only freezes are listed");
    };
    let remaining = *remaining;
    release_unchecked(state, context, id, remaining, fx);
}

/// Moves `amount` from frozen back to the buckets it came from (the unsettled part first, as a
/// lot of today: it matures no earlier than it would have).
fn release_unchecked(state: &mut ShardState, context: &Context, id: OrderId, amount: Minor, fx: &mut Effects) {
    let order = state.order_mut(id);
    let (account, currency) = (order.account, order.currency);
    let OrderDetail::Freeze { remaining, from_unsettled, expires_at, .. } = &mut order.detail else {
        unreachable!("checked");
    };
    let to_unsettled = (*from_unsettled).min(amount);
    *from_unsettled -= to_unsettled;
    *remaining -= amount;
    let done = *remaining == 0;
    let expiry = *expires_at;
    order.updated_at = context.now;
    if done {
        order.status = OrderStatus::Succeeded;
        if let Some(at) = expiry {
            state.expiring_freezes.remove(&(at, id));
        }
    }
    state.begin_entry(fx, id, EntryKind::FreezeRelease, currency);
    state.post(fx, account, Bucket::Frozen, -amount);
    if to_unsettled > 0 {
        state.return_unsettled(context, fx, account, to_unsettled);
    }
    if amount > to_unsettled {
        state.post(fx, account, Bucket::Settled, amount - to_unsettled);
    }
    state.end_entry(fx);
    state.record_change(id);
}
