//! What the portals execute once an operator's request has its second pair of eyes: an audited
//! adjustment between accounts and suspense (`Command::Adjust`) and a change of an account's
//! caps (`Command::SetLimits`). No routes here: the portals' approval workflow calls these.

use std::sync::Arc;

use engine::ledger::command::{idempotency_key, Command, Envelope};
use engine::ledger::ops::adjust::suspense_account;
use engine::ledger::types::{AccountId, AccountKind, AdjustmentSide, Limits, OrderId, ShardId, SystemRole};
use engine::money::{CurrencyId, CurrencySpec, Minor};
use engine::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::accounts::{execute, public_account_id};
use crate::error::{blocking, ApiError};
use crate::orders::{currency, out_order_no, read_order, view};

/// An adjustment as the approval workflow hands it over: both operators are known by now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdjustmentRequest {
    /// `acc_N`, `suspense` (the stripe that holds the money, see `resolve_suspense`) or
    /// `suspense:SHARD`.
    pub from: String,
    /// `acc_N`, `suspense` (the source's shard's stripe) or `suspense:SHARD`.
    pub to: String,
    /// Decimal string in major units (`"12.50"`).
    pub amount: String,
    pub currency: String,
    pub reason: String,
    pub out_order_no: String,
    /// The operator who proposed it.
    pub proposer: String,
    /// The operator who approved it (not the proposer: the engine refuses that).
    pub approver: String,
}

/// A side of an adjustment as written: an account, a named suspense stripe, or "suspense".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Account(AccountId),
    Suspense(Option<ShardId>),
}

/// Parses `acc_N`, `suspense` or `suspense:SHARD` (an unknown account is 404 naming `param`).
fn side(text: &str, shard_count: u16, param: &'static str) -> Result<Side, ApiError> {
    let text = text.trim();
    if text == "suspense" {
        return Ok(Side::Suspense(None));
    }
    if let Some(shard) = text.strip_prefix("suspense:") {
        let shard = shard.parse::<ShardId>().ok().filter(|s| *s < shard_count);
        return shard.map(|s| Side::Suspense(Some(s))).ok_or_else(|| ApiError::invalid("suspense:SHARD names a shard of this server", param));
    }
    Ok(Side::Account(crate::orders::account(text, param)?))
}

/// Which shard's suspense stripe "suspense" means as the source: the shard that already holds
/// an adjustment with this order number (a retry goes where the first went), else `preferred`
/// (the target's shard: no money in transit) if its stripe holds `amount`, else the first shard
/// whose stripe does, else `preferred` (which then refuses it: insufficient funds).
async fn resolve_suspense(engine: &Arc<Engine>, key: u128, preferred: ShardId, currency: CurrencyId, amount: Minor) -> Result<ShardId, ApiError> {
    let mut holding = Vec::new();
    for shard in 0..engine.config().shard_count {
        let reading = engine.clone();
        let (seen, balance) = blocking(move || {
            let balance = reading.read_shard(shard, move |state| {
                let stripe = state.account(state.system_account(SystemRole::Suspense, currency)).expect("a stripe of the shard");
                state.balance(stripe)
            })?;
            reading.idempotency_record(shard, key).map(|record| (record.is_some(), balance))
        })
        .await??;
        if seen {
            return Ok(shard);
        }
        if balance >= amount as i128 {
            holding.push(shard);
        }
    }
    Ok(if holding.contains(&preferred) { preferred } else { holding.first().copied().unwrap_or(preferred) })
}

/// Executes an adjustment the portals' approvals carried for `platform`: between its accounts as
/// the platform; into or out of suspense as the system (platform 0, which alone may touch
/// suspense in the engine), once its account side, if any, is found to be `platform`'s (404
/// naming `from` or `to` otherwise). Before session 63 those were carried out as the platform,
/// which the engine refuses for suspense: every such proposal failed `not_found`, and money in
/// suspense could not be given back from the portal (helper 103). The order is the platform's
/// (the engine gives a system adjustment the platform of the account it touches).
pub async fn adjust_approved(engine: &Arc<Engine>, platform: u32, request: &AdjustmentRequest) -> Result<Value, ApiError> {
    let shard_count = engine.config().shard_count;
    let sides = [(side(&request.from, shard_count, "from")?, "from"), (side(&request.to, shard_count, "to")?, "to")];
    if !sides.iter().any(|(side, _)| matches!(side, Side::Suspense(_))) {
        return adjust(engine, platform, request).await;
    }
    for (side, param) in sides {
        if let Side::Account(account) = side {
            crate::accounts::account_of(engine, platform, account).await.map_err(|error| ApiError { param: Some(param.into()), ..error })?;
        }
    }
    adjust(engine, 0, request).await
}

/// Executes an approved adjustment for `platform` (0: the system operator, who alone may touch
/// suspense) and answers the order's view. Checked here as the API checks (order number,
/// currency, amount, ids); everything else is the engine's (its result codes mapped by
/// `rejection`). The same `out_order_no` with the same content answers the same order.
pub async fn adjust(engine: &Arc<Engine>, platform: u32, request: &AdjustmentRequest) -> Result<Value, ApiError> {
    let number = out_order_no(&request.out_order_no, "out_order_no")?;
    let (currency_id, spec) = currency(engine, &request.currency)?;
    let amount = crate::orders::amount(&request.amount, &spec, "amount")?;
    let shard_count = engine.config().shard_count;
    let (from, to) = (side(&request.from, shard_count, "from")?, side(&request.to, shard_count, "to")?);
    let target = match to {
        Side::Account(account) => AdjustmentSide::Account(account),
        Side::Suspense(Some(shard)) => AdjustmentSide::Suspense(shard),
        Side::Suspense(None) => AdjustmentSide::Suspense(match from {
            Side::Account(account) => account.shard(shard_count),
            Side::Suspense(shard) => shard.unwrap_or(0),
        }),
    };
    let scope =
        Command::Adjust { source: target, target, currency: currency_id, amount, reason: String::new(), proposer: String::new(), approver: String::new() }
            .idempotency_scope();
    let source = match from {
        Side::Account(account) => AdjustmentSide::Account(account),
        Side::Suspense(Some(shard)) => AdjustmentSide::Suspense(shard),
        Side::Suspense(None) => {
            let preferred = match target {
                AdjustmentSide::Account(account) => account.shard(shard_count),
                AdjustmentSide::Suspense(shard) => shard,
            };
            let key = idempotency_key(platform, scope, &number);
            AdjustmentSide::Suspense(resolve_suspense(engine, key, preferred, currency_id, amount).await?)
        }
    };
    let command = Command::Adjust {
        source,
        target,
        currency: currency_id,
        amount,
        reason: request.reason.clone(),
        proposer: request.proposer.clone(),
        approver: request.approver.clone(),
    };
    let reply = execute(engine, Envelope { platform, out_order_no: Some(number), command }).await?;
    if !reply.is_ok() {
        return Err(crate::error::refused(&reply));
    }
    let id = OrderId(reply.id);
    let channels = clearing_actor::channels::ChannelSet::default();
    let order = read_order(engine, platform, id, move |state, order| view(state, order, &channels)).await?;
    let mut order = order.ok_or_else(|| ApiError::unavailable(format!("adjustment {} accepted but not found", id.0)))?;
    order["replayed"] = json!(reply.replayed);
    Ok(order)
}

/// New caps for an account, as decimal strings in its currency. `None` keeps the cap as it
/// is; `"unlimited"` removes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsRequest {
    pub payment_per_order_max: Option<String>,
    pub payment_daily_max: Option<String>,
    pub withdrawal_per_order_max: Option<String>,
    pub withdrawal_daily_max: Option<String>,
}

/// The word that removes a cap.
pub const UNLIMITED: &str = "unlimited";

/// A cap as text: a decimal string, or `unlimited` for none.
fn cap_text(spec: &CurrencySpec, cap: Minor) -> String {
    if cap == Minor::MAX {
        UNLIMITED.to_string()
    } else {
        spec.format(cap)
    }
}

/// An account's caps as JSON (what `limits_of` and `set_limits` answer).
fn limits_view(account: AccountId, spec: &CurrencySpec, limits: &Limits) -> Value {
    json!({
        "account_id": public_account_id(account),
        "currency": spec.code_str(),
        "limits": {
            "payment_per_order_max": cap_text(spec, limits.payment_per_order_max),
            "payment_daily_max": cap_text(spec, limits.payment_daily_max),
            "withdrawal_per_order_max": cap_text(spec, limits.withdrawal_per_order_max),
            "withdrawal_daily_max": cap_text(spec, limits.withdrawal_daily_max),
        },
    })
}

/// Reads a customer account's caps and currency as `platform` may see it (0 sees all).
async fn read_limits(engine: &Arc<Engine>, platform: u32, account: AccountId) -> Result<(Limits, CurrencySpec), ApiError> {
    let reading = engine.clone();
    let shard = account.shard(engine.config().shard_count);
    let found = blocking(move || {
        reading.read_shard(shard, move |state| {
            state
                .account(account)
                .filter(|a| a.kind == AccountKind::Customer && (platform == 0 || a.platform == platform))
                .map(|a| (a.limits, state.currencies[a.currency.0 as usize]))
        })
    })
    .await??;
    found.ok_or(ApiError { param: Some("account_id".into()), ..ApiError::not_found() })
}

/// An account's caps (`unlimited` where there is none), for the page that changes them.
pub async fn limits_of(engine: &Arc<Engine>, platform: u32, account: &str) -> Result<Value, ApiError> {
    let id = crate::orders::account(account, "account_id")?;
    let (limits, spec) = read_limits(engine, platform, id).await?;
    Ok(limits_view(id, &spec, &limits))
}

/// Changes an approved set of caps of `account` for `platform` (0: any platform's) and answers
/// the caps now in force. Fields left `None` keep their value as read just before (an operator
/// form that changes one cap); `out_order_no` makes a retry apply it once.
pub async fn set_limits(engine: &Arc<Engine>, platform: u32, account: &str, request: &LimitsRequest, number: &str) -> Result<Value, ApiError> {
    let number = out_order_no(number, "out_order_no")?;
    let id = crate::orders::account(account, "account_id")?;
    let (current, spec) = read_limits(engine, platform, id).await?;
    let cap = |text: &Option<String>, now: Minor, param: &'static str| -> Result<Minor, ApiError> {
        match text.as_deref().map(str::trim) {
            None => Ok(now),
            Some(UNLIMITED) => Ok(Minor::MAX),
            Some(text) => crate::orders::amount(text, &spec, param),
        }
    };
    let limits = Limits {
        payment_per_order_max: cap(&request.payment_per_order_max, current.payment_per_order_max, "payment_per_order_max")?,
        payment_daily_max: cap(&request.payment_daily_max, current.payment_daily_max, "payment_daily_max")?,
        withdrawal_per_order_max: cap(&request.withdrawal_per_order_max, current.withdrawal_per_order_max, "withdrawal_per_order_max")?,
        withdrawal_daily_max: cap(&request.withdrawal_daily_max, current.withdrawal_daily_max, "withdrawal_daily_max")?,
    };
    let reply = execute(engine, Envelope { platform, out_order_no: Some(number), command: Command::SetLimits { account: id, limits } }).await?;
    if !reply.is_ok() {
        return Err(crate::error::refused(&reply));
    }
    let (now, _) = read_limits(engine, platform, id).await?;
    let mut answer = limits_view(id, &spec, &now);
    answer["replayed"] = json!(reply.replayed);
    Ok(answer)
}

/// What each shard's suspense stripe holds, per currency, for the page where an operator picks
/// the money to resolve: `[{shard, side: "suspense:N", currency, balance, balance_minor}]`.
pub async fn suspense_balances(engine: &Arc<Engine>) -> Result<Vec<Value>, ApiError> {
    let mut rows = Vec::new();
    let shard_count = engine.config().shard_count;
    for shard in 0..shard_count {
        let reading = engine.clone();
        let figures = blocking(move || {
            reading.read_shard(shard, move |state| {
                (0..state.currencies.len())
                    .map(|c| {
                        let currency = CurrencyId(c as u8);
                        let stripe = state.account(suspense_account(shard, shard_count, currency)).expect("genesis opened it");
                        (state.currencies[c], state.balance(stripe))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .await??;
        for (spec, balance) in figures {
            rows.push(json!({
                "shard": shard,
                "side": format!("suspense:{shard}"),
                "currency": spec.code_str(),
                "balance": crate::stats::format_wide(&spec, balance),
                "balance_minor": balance.to_string(),
            }));
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_parse_like_the_api_names_them() {
        assert_eq!(side("acc_42", 2, "from").unwrap(), Side::Account(AccountId(42)));
        assert_eq!(side(" suspense ", 2, "from").unwrap(), Side::Suspense(None));
        assert_eq!(side("suspense:1", 2, "to").unwrap(), Side::Suspense(Some(1)));
        for (text, status) in [("suspense:2", 400), ("suspense:x", 400), ("suspense:-1", 400), ("acc_x", 404), ("", 404)] {
            let error = side(text, 2, "from").unwrap_err();
            assert_eq!((error.status, error.param.as_deref()), (status, Some("from")), "{text:?}");
        }
    }

    #[test]
    fn caps_show_unlimited_for_no_cap() {
        let spec = CurrencySpec::new("CNY", 2).unwrap();
        let limits = Limits { payment_per_order_max: 12_345, ..Limits::NONE };
        let shown = limits_view(AccountId(4), &spec, &limits);
        assert_eq!(shown["limits"]["payment_per_order_max"], "123.45");
        assert_eq!(shown["limits"]["withdrawal_daily_max"], UNLIMITED);
    }
}
