//! Opening, blocking and closing customer accounts.

use crate::ledger::state::{Context, Effects, ShardState};
use crate::ledger::types::{AccountId, AccountKind, AccountStatus, Limits, Reply};
use crate::money::CurrencyId;
use crate::result::ResultCode;

/// Opens an account for `owner` of the calling platform in `currency`.
pub fn open(state: &mut ShardState, context: &Context, owner: u64, currency: CurrencyId, limits: Limits, fx: &mut Effects) -> Reply {
    if currency.0 as usize >= state.currencies.len() {
        return Reply::rejected(ResultCode::CurrencyUnknown);
    }
    let limit_values = [limits.payment_per_order_max, limits.payment_daily_max, limits.withdrawal_per_order_max, limits.withdrawal_daily_max];
    if limit_values.iter().any(|v| *v <= 0) {
        return Reply::rejected(ResultCode::InvalidAmount);
    }
    let owner_key = (context.platform, owner, currency);
    if state.owners.contains_key(&owner_key) {
        return Reply::rejected(ResultCode::AccountExists);
    }
    // After this point the account is opened.
    let id = state.push_account(context.platform, owner, currency, AccountKind::Customer, limits);
    state.owners.insert(owner_key, id);
    fx.directory.push((id, context.platform, currency, AccountStatus::Normal));
    Reply { code: ResultCode::Ok, id: id.0, status: None, replayed: false }
}

/// Blocks or unblocks debits or credits of an account.
pub fn set_status(state: &mut ShardState, context: &Context, id: AccountId, status: AccountStatus, fx: &mut Effects) -> Reply {
    let Some(account) = state.customer_account(context.platform, id) else {
        return Reply::rejected(ResultCode::AccountNotFound);
    };
    if account.status == AccountStatus::Closed {
        return Reply::rejected(ResultCode::AccountClosed);
    }
    if status == AccountStatus::Closed {
        return Reply::rejected(ResultCode::OrderStateInvalid);
    }
    // The directory records the account's own platform (the operator, platform 0, may act).
    let (currency, owner_platform) = (account.currency, account.platform);
    state.account_mut(id).status = status;
    fx.directory.push((id, owner_platform, currency, status));
    Reply { code: ResultCode::Ok, id: id.0, status: None, replayed: false }
}

/// Closes an account whose buckets are all zero; a closed account takes no debits or credits.
pub fn close(state: &mut ShardState, context: &Context, id: AccountId, fx: &mut Effects) -> Reply {
    let Some(account) = state.customer_account(context.platform, id) else {
        return Reply::rejected(ResultCode::AccountNotFound);
    };
    if account.status == AccountStatus::Closed {
        return Reply::rejected(ResultCode::AccountClosed);
    }
    if account.settled != 0 || account.unsettled != 0 || account.frozen != 0 {
        return Reply::rejected(ResultCode::AccountNotEmpty);
    }
    let (platform, currency) = (account.platform, account.currency);
    state.account_mut(id).status = AccountStatus::Closed;
    fx.directory.push((id, platform, currency, AccountStatus::Closed));
    Reply { code: ResultCode::Ok, id: id.0, status: None, replayed: false }
}

/// Replaces an account's per-order and daily caps (an operator raising or lowering a limit).
/// Every cap is positive (`Minor::MAX` is no cap); the new caps apply to the next order,
/// counted against what was already paid or withdrawn today.
pub fn set_limits(state: &mut ShardState, context: &Context, id: AccountId, limits: Limits) -> Reply {
    let limit_values = [limits.payment_per_order_max, limits.payment_daily_max, limits.withdrawal_per_order_max, limits.withdrawal_daily_max];
    if limit_values.iter().any(|v| *v <= 0) {
        return Reply::rejected(ResultCode::InvalidAmount);
    }
    let Some(account) = state.customer_account(context.platform, id) else {
        return Reply::rejected(ResultCode::AccountNotFound);
    };
    if account.status == AccountStatus::Closed {
        return Reply::rejected(ResultCode::AccountClosed);
    }
    // After this point the change must succeed.
    state.account_mut(id).limits = limits;
    Reply { code: ResultCode::Ok, id: id.0, status: None, replayed: false }
}
