//! Money in from a channel: the reserve stripe is debited, the account's settled bucket credited.

use crate::ledger::state::{check_amount, credit_refusal, ok_order, Context, Effects, ShardState};
use crate::ledger::types::*;
use crate::money::{CurrencyId, Minor};
use crate::result::ResultCode;

/// Credits a confirmed channel payment to `account`.
pub fn apply(state: &mut ShardState, context: &Context, account: AccountId, currency: CurrencyId, amount: Minor, channel: u16, fx: &mut Effects) -> Reply {
    if let Err(code) = check_amount(amount) {
        return Reply::rejected(code);
    }
    if currency.0 as usize >= state.currencies.len() {
        return Reply::rejected(ResultCode::CurrencyUnknown);
    }
    let Some(target) = state.customer_account(context.platform, account) else {
        return Reply::rejected(ResultCode::AccountNotFound);
    };
    if let Some(code) = credit_refusal(target, currency) {
        return Reply::rejected(code);
    }
    // After this point the recharge must succeed.
    let id = state.open_order(context.now, OrderKind::Recharge, OrderStatus::Succeeded, account, amount, OrderDetail::Recharge { channel });
    let reserve = state.system_account(SystemRole::Reserve, currency);
    state.begin_entry(fx, id, EntryKind::Recharge, currency);
    state.post(fx, reserve, Bucket::Settled, -amount);
    state.post(fx, account, Bucket::Settled, amount);
    state.end_entry(fx);
    ok_order(id, OrderStatus::Succeeded)
}
