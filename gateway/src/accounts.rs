//! `POST /v1/accounts` and `GET /v1/accounts/{account_id}`: virtual sub-accounts of members.

use std::sync::Arc;

use actix_web::{get, post, web, HttpResponse};
use engine::ledger::command::{Command, Envelope, OutOrderNo};
use engine::ledger::types::{AccountId, AccountKind, Limits, Reply};
use engine::money::CurrencyId;
use engine::result::ResultCode;
use engine::Engine;
use serde::{Deserialize, Serialize};

use crate::agreements::Agreements;
use crate::error::{blocking, ApiError};
use crate::members::{Member, Members};
use crate::platforms::Platform;
use crate::signed::Signed;

/// The bank's prefix of virtual account numbers under the master account.
const VIRTUAL_ACCOUNT_PREFIX: &str = "6229";

/// The account id as the API shows it (`acc_25`).
pub fn public_account_id(id: AccountId) -> String {
    format!("acc_{}", id.0)
}

/// Parses an API account id.
pub fn parse_account_id(text: &str) -> Option<AccountId> {
    crate::ids::parse_prefixed(text, "acc_").map(AccountId)
}

/// The Luhn check digit of a string of digits.
pub fn luhn_check_digit(digits: &str) -> u8 {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(index, b)| {
            let d = (b - b'0') as u32;
            if index % 2 == 0 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// An account's virtual account number: the bank prefix, the account id in 12 digits, and a Luhn
/// check digit. Unique because account ids are; an offline transfer naming it finds the account.
pub fn virtual_account_no(id: AccountId) -> String {
    let body = format!("{VIRTUAL_ACCOUNT_PREFIX}{:012}", id.0);
    let check = luhn_check_digit(&body);
    format!("{body}{check}")
}

/// The account a virtual account number names, if it is one (prefix, length and check digit).
pub fn parse_virtual_account_no(text: &str) -> Option<AccountId> {
    let digits = text.as_bytes();
    if digits.len() != 17 || !digits.iter().all(u8::is_ascii_digit) || !text.starts_with(VIRTUAL_ACCOUNT_PREFIX) {
        return None;
    }
    if luhn_check_digit(&text[..16]) != digits[16] - b'0' {
        return None;
    }
    text[4..16].parse().ok().map(AccountId)
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewAccount {
    out_order_no: String,
    member_id: String,
    currency: String,
}

/// Sends one command to the engine and awaits its durable reply without blocking a worker.
pub async fn execute(engine: &Engine, envelope: Envelope) -> Result<Reply, ApiError> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    engine.submit(
        vec![envelope],
        Box::new(move |result| {
            let _ = sender.send(result);
        }),
    );
    let replies = receiver.await.map_err(|_| ApiError::unavailable("the engine dropped the request".into()))??;
    Ok(replies.into_iter().next().expect("one reply per command"))
}

fn currency_of(engine: &Engine, code: &str) -> Option<CurrencyId> {
    engine.config().currencies.iter().position(|c| c.code_str() == code).map(|i| CurrencyId(i as u8))
}

#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", request_body = crate::accounts::NewAccount, responses((status = 201, description = "Success", body = crate::schemas::AccountView), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[post("/v1/accounts")]
pub async fn open_account(
    signed: Signed,
    members: web::Data<Arc<Members>>,
    agreements: web::Data<Arc<Agreements>>,
    engine: web::Data<Arc<Engine>>,
) -> Result<HttpResponse, ApiError> {
    let new = signed.json::<NewAccount>()?;
    let (id, replayed) = open(&engine, &members, &agreements, &signed.platform, &new.out_order_no, &new.member_id, &new.currency).await?;
    let mut response = HttpResponse::Created();
    if replayed {
        response.insert_header(("Idempotent-Replay", "true"));
    }
    Ok(response.json(serde_json::json!({
        "account_id": public_account_id(id),
        "virtual_account_no": virtual_account_no(id),
        "currency": new.currency,
        "status": "normal",
    })))
}

/// Opens an account of `currency` for the platform's member `member_id` (the API and the pages
/// share it): the account and whether the order number replayed an earlier opening. The member
/// must have signed the agreements the platform requires first (`agreement_required`).
pub async fn open(
    engine: &Engine,
    members: &Arc<Members>,
    agreements: &Arc<Agreements>,
    platform: &Platform,
    out_order_no: &str,
    member_id: &str,
    currency: &str,
) -> Result<(AccountId, bool), ApiError> {
    let out_order_no =
        OutOrderNo::new(out_order_no).ok_or_else(|| ApiError::invalid("out_order_no must be 1 to 64 characters [A-Za-z0-9_-]", "out_order_no"))?;
    let currency = currency_of(engine, currency);
    // The member's record and signatures are read from the store: off the HTTP worker. The
    // checks answer in this order: the member, the currency, the agreements.
    let (members, agreements, platform_record, member_text) = (members.clone(), agreements.clone(), platform.clone(), member_id.to_string());
    let (member, currency): (Member, CurrencyId) = blocking(move || -> Result<(Member, CurrencyId), ApiError> {
        let member = members.named(platform_record.id, &member_text)?.ok_or_else(|| ApiError { param: Some("member_id".into()), ..ApiError::not_found() })?;
        let currency = currency.ok_or_else(|| ApiError::invalid("unknown currency", "currency"))?;
        agreements.require(&platform_record, member.id, crate::agreements::Purpose::OpenAccount)?;
        Ok((member, currency))
    })
    .await??;
    let command = Command::OpenAccount { owner: member.id, currency, limits: Limits::NONE };
    let reply = execute(engine, Envelope { platform: platform.id, out_order_no: Some(out_order_no), command }).await?;
    match reply.code {
        ResultCode::Ok => Ok((AccountId(reply.id), reply.replayed)),
        // The one table of the engine's refusals: `overloaded` is 503 with Retry-After (it was
        // answered 422 here, which a client must not retry; helper 110).
        _ => Err(crate::error::refused(&reply)),
    }
}

/// An account as its member sees it: balances formatted in its currency.
#[derive(Clone, Debug, Serialize)]
pub struct AccountSummary {
    pub account_id: String,
    pub member_id: String,
    pub currency: String,
    pub status: String,
    pub virtual_account_no: String,
    pub available: String,
    pub withdrawable: String,
    pub frozen: String,
    pub unsettled: String,
}

/// The customer account `id` of `platform` with its balances (`None`: not the platform's).
pub async fn summary(engine: &Arc<Engine>, platform: u32, id: AccountId) -> Result<Option<AccountSummary>, ApiError> {
    let shard_count = engine.config().shard_count;
    let engine = engine.clone();
    // Reading waits on the shard's thread: off the async workers.
    blocking(move || {
        engine.read_shard(id.shard(shard_count), move |state| {
            let account = state.account(id).filter(|a| a.kind == AccountKind::Customer && a.platform == platform)?;
            let currency = state.currencies[account.currency.0 as usize];
            Some(AccountSummary {
                account_id: public_account_id(id),
                member_id: Member::public_id_of(account.owner),
                currency: currency.code_str().to_string(),
                status: account.status.name().to_string(),
                virtual_account_no: virtual_account_no(id),
                available: currency.format(account.available()),
                withdrawable: currency.format(account.settled),
                frozen: currency.format(account.frozen),
                unsettled: currency.format(account.unsettled),
            })
        })
    })
    .await?
    .map_err(ApiError::from)
}

/// The accounts of member `member` of `platform`, one per currency, looked up on every shard.
pub async fn accounts_of_member(engine: &Arc<Engine>, platform: u32, member: u64) -> Result<Vec<AccountId>, ApiError> {
    let mut found = Vec::new();
    for shard in 0..engine.config().shard_count {
        let engine = engine.clone();
        let ids = blocking(move || {
            engine.read_shard(shard, move |state| {
                (0..state.currencies.len()).filter_map(|c| state.owners.get(&(platform, member, CurrencyId(c as u8))).copied()).collect::<Vec<_>>()
            })
        })
        .await??;
        found.extend(ids);
    }
    found.sort_by_key(|id| id.0);
    Ok(found)
}

#[utoipa::path(get, path = "/v1/accounts/{account_id}", tag = "accounts", params(("account_id" = String, Path, description = "Account id (acc_...)")), responses((status = 200, description = "Success", body = crate::schemas::AccountView), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[get("/v1/accounts/{account_id}")]
pub async fn show_account(signed: Signed, path: web::Path<String>, engine: web::Data<Arc<Engine>>) -> Result<HttpResponse, ApiError> {
    let id = parse_account_id(&path).ok_or_else(ApiError::not_found)?;
    let view = summary(&engine, signed.platform.id, id).await?.ok_or_else(ApiError::not_found)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "account_id": view.account_id,
        "member_id": view.member_id,
        "currency": view.currency,
        "status": view.status,
        "virtual_account_no": view.virtual_account_no,
        "balances": {
            "available": view.available,
            "withdrawable": view.withdrawable,
            "frozen": view.frozen,
            "unsettled": view.unsettled,
        },
    })))
}

/// The member owning customer account `id` of `platform` (404 when it is not the platform's).
pub async fn owner_of(engine: &Arc<Engine>, platform: u32, id: AccountId) -> Result<u64, ApiError> {
    Ok(account_of(engine, platform, id).await?.0)
}

/// The owning member and currency of customer account `id` of `platform` (404 otherwise).
pub async fn account_of(engine: &Arc<Engine>, platform: u32, id: AccountId) -> Result<(u64, CurrencyId, engine::money::CurrencySpec), ApiError> {
    let shard = id.shard(engine.config().shard_count);
    let engine = engine.clone();
    let found = blocking(move || {
        engine.read_shard(shard, move |state| {
            state
                .account(id)
                .filter(|a| a.kind == AccountKind::Customer && a.platform == platform)
                .map(|a| (a.owner, a.currency, state.currencies[a.currency.0 as usize]))
        })
    })
    .await??;
    found.ok_or(ApiError { param: Some("account_id".into()), ..ApiError::not_found() })
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CloseBody {
    out_order_no: String,
}

/// `POST /v1/accounts/{account_id}/close`: closes an account whose balances are all zero.
#[utoipa::path(post, path = "/v1/accounts/{account_id}/close", tag = "accounts", request_body = crate::accounts::CloseBody, params(("account_id" = String, Path, description = "Account id (acc_...)")), responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[post("/v1/accounts/{account_id}/close")]
pub async fn close_account(signed: Signed, path: web::Path<String>, engine: web::Data<Arc<Engine>>) -> Result<HttpResponse, ApiError> {
    let body = signed.json::<CloseBody>()?;
    crate::ids::out_order_no(&body.out_order_no, "out_order_no")?;
    let id = parse_account_id(&path).ok_or_else(ApiError::not_found)?;
    let reply = close(&engine, &signed.platform, id, &body.out_order_no).await?;
    let mut response = HttpResponse::Ok();
    if reply.replayed {
        response.insert_header(("Idempotent-Replay", "true"));
    }
    Ok(response.json(serde_json::json!({"account_id": public_account_id(id), "status": "closed"})))
}

/// Closes account `id` of `platform` (its balances must all be zero); the API and the pages
/// share it. A refusal is the API error of its result code. An account the platform's
/// settlement rule names as a commission receiver is not closed (422
/// `account_is_commission_receiver`): every merchant's part of the commission would go to
/// suspense each night, one operator's case each (helper 121#2); the operator changes the rule
/// first.
pub async fn close(engine: &Engine, platform: &crate::platforms::Platform, id: AccountId, out_order_no: &str) -> Result<Reply, ApiError> {
    let number = crate::ids::out_order_no(out_order_no, "out_order_no")?;
    if names_as_receiver(platform, id) {
        return Err(receiver_refusal());
    }
    let command = Command::CloseAccount { account: id };
    let reply = execute(engine, Envelope { platform: platform.id, out_order_no: Some(number), command }).await?;
    if !reply.is_ok() {
        return Err(crate::error::refused(&reply));
    }
    Ok(reply)
}

/// Whether `platform`'s settlement rule names `account` as a commission receiver.
pub fn names_as_receiver(platform: &crate::platforms::Platform, account: AccountId) -> bool {
    platform.settlement_rule.as_ref().is_some_and(|rule| rule.receivers.iter().any(|(receiver, _)| *receiver == account.0))
}

/// The refusal to close or credit-block a commission receiver.
pub fn receiver_refusal() -> ApiError {
    let message = "the platform's settlement rule names this account as a commission receiver: change the rule first (its commission would go to suspense)";
    ApiError::new(422, "account_is_commission_receiver", message)
}

/// Registers the account routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(open_account).service(show_account).service(close_account);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_and_virtual_numbers() {
        assert_eq!(luhn_check_digit("7992739871"), 3);
        let number = virtual_account_no(AccountId(25));
        assert_eq!(number, format!("6229000000000025{}", luhn_check_digit("6229000000000025")));
        assert_eq!(number.len(), 17);
        assert_ne!(virtual_account_no(AccountId(25)), virtual_account_no(AccountId(27)));
        assert_eq!(parse_virtual_account_no(&number), Some(AccountId(25)));
        let mut wrong = number.clone().into_bytes();
        wrong[16] = if wrong[16] == b'9' { b'0' } else { wrong[16] + 1 };
        assert_eq!(parse_virtual_account_no(std::str::from_utf8(&wrong).unwrap()), None, "a wrong check digit");
        assert_eq!(parse_virtual_account_no("1234"), None);
    }

    #[test]
    fn account_ids_table() {
        let cases: &[(&str, Option<u64>)] = &[("acc_25", Some(25)), ("acc_0", Some(0)), ("acc_01", None), ("acc_", None), ("25", None), ("acc_x", None)];
        for (text, expected) in cases {
            assert_eq!(parse_account_id(text).map(|a| a.0), *expected, "{text}");
        }
    }
}
