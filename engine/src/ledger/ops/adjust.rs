//! An operator's audited adjustment (four eyes): money moves from a customer account's settled
//! bucket or a shard's suspense stripe to another, with a reason and the proposing and approving
//! operators recorded on an order of kind `Adjustment`. It runs on the source's shard (the funds
//! it debits); a target on another shard is credited through the outbox and the in-transit
//! stripes, exactly like a payment's payee there.

use crate::ledger::state::{check_amount, check_debit_account, credit_refusal, credit_refusal_of, ok_order, Context, Effects, ShardState};
use crate::ledger::types::*;
use crate::money::{CurrencyId, Minor};
use crate::result::ResultCode;

/// The arguments of an adjustment, borrowed from the command.
pub struct AdjustRequest<'a> {
    pub source: AdjustmentSide,
    pub target: AdjustmentSide,
    pub currency: CurrencyId,
    pub amount: Minor,
    pub reason: &'a str,
    pub proposer: &'a str,
    pub approver: &'a str,
}

/// The account id of `shard`'s suspense stripe in `currency`. Genesis opens the system stripes
/// first, currency by currency, role by role (`SystemRole::ALL`), so every shard can name
/// another shard's stripe without asking it.
pub fn suspense_account(shard: ShardId, shard_count: u16, currency: CurrencyId) -> AccountId {
    let local_index = currency.0 as usize * SystemRole::ALL.len() + SystemRole::Suspense.index();
    AccountId::compose(shard, local_index as u64, shard_count)
}

/// The reason and the four eyes: a reason of at most `REASON_BYTES_MAX` bytes that is not
/// blank, and two different operators, each named in at most `OPERATOR_NAME_BYTES_MAX` bytes.
fn check_audit(request: &AdjustRequest) -> Result<(), ResultCode> {
    if request.reason.trim().is_empty() {
        return Err(ResultCode::ReasonMissing);
    }
    if request.reason.len() > REASON_BYTES_MAX {
        return Err(ResultCode::ReasonTooLong);
    }
    let named = |name: &str| !name.trim().is_empty() && name.len() <= OPERATOR_NAME_BYTES_MAX;
    if !named(request.proposer) || !named(request.approver) || request.proposer.trim() == request.approver.trim() {
        return Err(ResultCode::ApprovalInvalid);
    }
    Ok(())
}

/// The source side: a customer account `platform` may debit, or (for the system operator only)
/// this shard's suspense stripe.
fn check_source(state: &ShardState, platform: u32, source: AdjustmentSide, currency: CurrencyId) -> Result<(), ResultCode> {
    match source {
        AdjustmentSide::Account(account) => check_debit_account(state, platform, account, currency),
        AdjustmentSide::Suspense(_) if platform != 0 => Err(ResultCode::AccountNotFound),
        // The router sends an adjustment out of suspense to the shard it names.
        AdjustmentSide::Suspense(shard) if shard != state.shard => Err(ResultCode::NotRoutable),
        AdjustmentSide::Suspense(_) => Ok(()),
    }
}

/// The target side as far as this shard knows it: a local customer account must exist for
/// `platform` and take credits in `currency` (the router checked one on another shard against
/// its directory); suspense is the system operator's only.
fn check_target(state: &ShardState, platform: u32, target: AdjustmentSide, currency: CurrencyId) -> Result<(), ResultCode> {
    match target {
        AdjustmentSide::Account(account) if account.shard(state.shard_count) == state.shard => {
            let receiver = state.customer_account(platform, account).ok_or(ResultCode::PayeeNotFound)?;
            credit_refusal(receiver, currency).map_or(Ok(()), Err)
        }
        AdjustmentSide::Account(_) => Ok(()),
        AdjustmentSide::Suspense(_) if platform != 0 => Err(ResultCode::PayeeNotFound),
        AdjustmentSide::Suspense(shard) if shard >= state.shard_count => Err(ResultCode::PayeeNotFound),
        AdjustmentSide::Suspense(_) => Ok(()),
    }
}

/// What the source holds that an adjustment may take: a customer's settled funds (not
/// unsettled income, not frozen money), or all of a suspense stripe.
fn source_funds(state: &ShardState, source: AdjustmentSide, currency: CurrencyId) -> i128 {
    match source {
        AdjustmentSide::Account(account) => state.account(account).expect("checked").settled as i128,
        AdjustmentSide::Suspense(_) => {
            let stripe = state.system_account(SystemRole::Suspense, currency);
            state.balance(state.account(stripe).expect("a stripe of this shard"))
        }
    }
}

/// The platform the order belongs to: the caller's; for the system operator, the platform of
/// the customer account it debits or credits (so that platform sees it), else the operator's.
fn order_platform(state: &ShardState, context: &Context, request: &AdjustRequest) -> u32 {
    if context.platform != 0 {
        return context.platform;
    }
    let local_platform = |side: AdjustmentSide| match side {
        AdjustmentSide::Account(account) => state.account(account).map(|a| a.platform),
        AdjustmentSide::Suspense(_) => None,
    };
    local_platform(request.source).or_else(|| local_platform(request.target)).unwrap_or(0)
}

/// The checks of an adjustment, in precedence order: amount, reason, approval, currency, the two
/// sides being one, the source (exists, currency, open), the target (exists, currency, open),
/// the source's funds, the target's balance ceiling.
fn check(state: &ShardState, context: &Context, request: &AdjustRequest) -> Result<(), ResultCode> {
    let (currency, amount) = (request.currency, request.amount);
    check_amount(amount)?;
    check_audit(request)?;
    if currency.0 as usize >= state.currencies.len() {
        return Err(ResultCode::CurrencyUnknown);
    }
    if request.source == request.target {
        return Err(ResultCode::PayeeIsPayer);
    }
    check_source(state, context.platform, request.source, currency)?;
    check_target(state, context.platform, request.target, currency)?;
    if source_funds(state, request.source, currency) < amount as i128 {
        return Err(ResultCode::InsufficientFunds);
    }
    if let AdjustmentSide::Account(account) = request.target {
        if let Some(code) = state.account(account).and_then(|receiver| credit_refusal_of(receiver, currency, amount)) {
            return Err(code);
        }
    }
    Ok(())
}

/// Applies an adjustment once `check` passed: one entry debits the source and credits the
/// target here, or this shard's in-transit stripe for a target on another shard.
pub fn apply(state: &mut ShardState, context: &Context, request: &AdjustRequest, fx: &mut Effects) -> Reply {
    if let Err(code) = check(state, context, request) {
        return Reply::rejected(code);
    }
    let (currency, amount) = (request.currency, request.amount);
    // After this point the adjustment must succeed.
    let source_account = match request.source {
        AdjustmentSide::Account(account) => account,
        AdjustmentSide::Suspense(_) => state.system_account(SystemRole::Suspense, currency),
    };
    let platform = order_platform(state, context, request);
    let detail = OrderDetail::Adjustment(Box::new(AdjustmentDetail {
        source: request.source,
        target: request.target,
        reason: request.reason.to_string(),
        proposer: request.proposer.to_string(),
        approver: request.approver.to_string(),
    }));
    let kind = (OrderKind::Adjustment, OrderStatus::Succeeded);
    let id = state.open_order_of(context, kind, (source_account, platform, currency), amount, detail);
    let target_account = match request.target {
        AdjustmentSide::Account(account) => account,
        AdjustmentSide::Suspense(shard) => suspense_account(shard, state.shard_count, currency),
    };
    state.begin_entry(fx, id, EntryKind::Adjustment, currency);
    state.post(fx, source_account, Bucket::Settled, -amount);
    let leg = Leg { account: target_account, amount };
    if target_account.shard(state.shard_count) != state.shard {
        state.send_credit(fx, id, leg, source_account, CreditPurpose::Adjustment, currency);
    } else {
        state.post(fx, target_account, Bucket::Settled, amount);
    }
    state.end_entry(fx);
    ok_order(id, OrderStatus::Succeeded)
}
