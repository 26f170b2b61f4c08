//! Bank cards bound to accounts (API.md): the four-element check (Luhn on the card number, the
//! holder's name and id number match the member, a valid phone), then a micro-deposit of a
//! random amount below 1.00 through the bank simulator that the member reads on their card's
//! statement and reports back; three wrong tries lock the card. Withdrawals go only to
//! verified cards.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix_web::{delete, get, post, web, HttpResponse};
use engine::ledger::command::{Command, Envelope, OutOrderNo};
use engine::ledger::types::AccountId;
use engine::Engine;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use storage::Store;

use crate::accounts::{account_of, luhn_check_digit, parse_account_id, public_account_id};
use crate::error::{blocking, ApiError};
use crate::members::Members;
use crate::signed::Signed;
use crate::simulator::{Simulator, DEPOSIT_REMARK};

/// Wrong verification amounts that lock a card.
pub const VERIFY_TRIES_MAX: u8 = 3;
/// Cards one account may bind per business day unless `[cards]` says otherwise: each bind costs
/// the operator a micro-deposit, and a locked card's re-bind is a bind.
pub const BINDS_PER_ACCOUNT_PER_DAY_DEFAULT: u32 = 5;
const PREFIX: &str = "c/";

/// A card as the gateway keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Card {
    pub id: u64,
    pub platform: u32,
    pub account: u64,
    pub card_no: String,
    pub holder_name: String,
    /// `pending_verification`, `verified`, `locked` or `unbound`.
    pub status: String,
    /// The micro-deposit in minor units (the member reads it at their bank).
    pub deposit_minor: i64,
    pub tries: u8,
    pub out_order_no: String,
    /// SHA-256 of the binding request, to tell a replay from a conflicting reuse.
    pub content: String,
    /// When it was bound (unix seconds; 0 for cards bound before this was recorded).
    #[serde(default)]
    pub bound_at: i64,
}

impl Card {
    /// The card id as the API shows it.
    pub fn public_id(&self) -> String {
        format!("card_{}", self.id)
    }

    /// The card number with all but its first and last four digits hidden.
    pub fn masked(&self) -> String {
        format!("{}****{}", &self.card_no[..4], &self.card_no[self.card_no.len() - 4..])
    }

    /// The API's view of the card.
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({"card_id": self.public_id(), "account_id": public_account_id(AccountId(self.account)), "card_no_masked": self.masked(), "holder_name": self.holder_name, "status": self.status})
    }
}

/// Every card, loaded at start and written through.
pub struct Cards {
    store: Arc<dyn Store>,
    state: Mutex<CardsState>,
    /// Held (on a blocking thread, never an async worker) across each read, change and save of
    /// a card, and across a bind's count, id and save: two verify calls never both see the same
    /// number of tries, and two binds never both pass the day's limit.
    changing: Mutex<()>,
    binds_per_account_per_day: u32,
}

/// Why a bind was refused before anything was written.
enum BindRefusal {
    /// The out_order_no names a card already: replay it, or refuse another body.
    Exists(Card),
    /// The account bound its day's number of cards; retry after this many seconds.
    Limit { retry_after_seconds: i64 },
}

#[derive(Default)]
struct CardsState {
    by_id: HashMap<u64, Card>,
    by_order: HashMap<(u32, String), u64>,
    /// Each account's card ids, oldest first: a bind counts its account's cards of the day and
    /// a listing reads its account's cards, not every card (they walked them all, under the
    /// lock, on every bind and every listing).
    by_account: HashMap<u64, Vec<u64>>,
    highest_id: u64,
}

impl CardsState {
    /// Keeps a new card (its id above every earlier one).
    fn insert_new(&mut self, card: Card) {
        self.by_order.insert((card.platform, card.out_order_no.clone()), card.id);
        self.by_account.entry(card.account).or_default().push(card.id);
        self.by_id.insert(card.id, card);
    }

    /// The cards of `account`, oldest first.
    fn of_account(&self, account: u64) -> impl Iterator<Item = &Card> {
        self.by_account.get(&account).into_iter().flatten().filter_map(|id| self.by_id.get(id))
    }
}

/// A card number: 12 to 19 digits with a valid Luhn check digit.
pub fn valid_card_no(text: &str) -> bool {
    (12..=19).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_digit())
        && luhn_check_digit(&text[..text.len() - 1]) == text.as_bytes()[text.len() - 1] - b'0'
}

impl Cards {
    /// Loads every stored card.
    pub fn load(store: Arc<dyn Store>, binds_per_account_per_day: u32) -> Result<Cards, String> {
        let mut state = CardsState::default();
        let mut loaded = crate::records::load_all::<Card>(store.as_ref(), PREFIX.as_bytes())?;
        // Decimal keys do not sort by number: in id order, so each account's list is oldest first.
        loaded.sort_by_key(|(_, card)| card.id);
        for (_, card) in loaded {
            state.highest_id = state.highest_id.max(card.id);
            state.insert_new(card);
        }
        Ok(Cards { store, state: Mutex::new(state), changing: Mutex::new(()), binds_per_account_per_day })
    }

    /// Binds `card` (its id is given here) unless its order number names a card already or its
    /// account bound its day's number of cards (business days at `utc_offset_seconds`); durable
    /// before it is visible. Blocking: the count, the id and the save are one step.
    fn bind_new(&self, mut card: Card, now: i64, utc_offset_seconds: i32) -> Result<Result<Card, BindRefusal>, ApiError> {
        let _changing = self.changing.lock().expect("cards change lock");
        let day = |at: i64| at.saturating_add(utc_offset_seconds as i64).div_euclid(86_400);
        {
            let mut state = self.state.lock().expect("cards lock");
            if let Some(existing) = state.by_order.get(&(card.platform, card.out_order_no.clone())).and_then(|id| state.by_id.get(id)) {
                return Ok(Err(BindRefusal::Exists(existing.clone())));
            }
            let today = day(now);
            let bound_today = state.of_account(card.account).filter(|c| c.bound_at != 0 && day(c.bound_at) == today).count();
            if bound_today >= self.binds_per_account_per_day as usize {
                let next_day_starts = (today + 1) * 86_400 - utc_offset_seconds as i64;
                return Ok(Err(BindRefusal::Limit { retry_after_seconds: (next_day_starts - now).max(1) }));
            }
            state.highest_id += 1;
            card.id = state.highest_id;
        }
        card.bound_at = now;
        self.save(&card)?;
        self.state.lock().expect("cards lock").insert_new(card.clone());
        Ok(Ok(card))
    }

    /// Reads the card `id` of `account` of `platform`, lets `change` decide, and saves what it
    /// changed, as one step per card (blocking): `change` sees every earlier change.
    fn change<T>(&self, platform: u32, account: AccountId, id: u64, change: impl FnOnce(&mut Card) -> Result<T, ApiError>) -> Result<(T, Card), ApiError> {
        let _changing = self.changing.lock().expect("cards change lock");
        let mut card = self.get(platform, account, id).ok_or_else(ApiError::not_found)?;
        let before = serde_json::to_vec(&card).expect("cards serialize");
        let outcome = change(&mut card)?;
        if serde_json::to_vec(&card).expect("cards serialize") != before {
            self.save(&card)?;
            self.state.lock().expect("cards lock").by_id.insert(card.id, card.clone());
        }
        Ok((outcome, card))
    }

    fn save(&self, card: &Card) -> Result<(), ApiError> {
        crate::records::put(self.store.as_ref(), &[(crate::records::key(PREFIX, card.id), card)])
    }

    /// Cards waiting for a micro-deposit the bank has not paid (no deposit line on the card's
    /// statement): each is booked (idempotent, by the number `card-{id}`) and handed to the bank
    /// again. Run at start: it closes the window between saving a card, booking its deposit and
    /// asking the bank (a crash in between left the card waiting for nothing). Returns how many.
    pub fn resume_deposits(&self, engine: &Engine, simulator: &Simulator, bank: &dyn bank::BankChannel) -> Result<usize, String> {
        let waiting: Vec<Card> = self.state.lock().expect("cards lock").by_id.values().filter(|c| c.status == "pending_verification").cloned().collect();
        let mut resumed = 0;
        for card in waiting {
            if simulator.card_transactions(&card.card_no)?.iter().any(|t| t.remark == DEPOSIT_REMARK) {
                continue;
            }
            let account = AccountId(card.account);
            let found = engine
                .read_shard(account.shard(engine.config().shard_count), move |state| {
                    state.account(account).map(|a| (a.currency, state.currencies[a.currency.0 as usize]))
                })
                .map_err(|e| e.to_string())?;
            let Some((currency, spec)) = found else { continue };
            let number = OutOrderNo::new(&format!("card-{}", card.id)).ok_or("card number")?;
            let command = Command::VerificationDeposit { shard: account.shard(engine.config().shard_count), currency, amount: card.deposit_minor };
            let reply = engine.execute_one(Envelope { platform: 0, out_order_no: Some(number), command }).map_err(|e| e.to_string())?;
            if reply.is_ok() {
                bank.submit(bank::Request::MicroDeposit { card_no: card.card_no.clone(), amount: card.deposit_minor, currency: spec });
                resumed += 1;
            }
        }
        Ok(resumed)
    }

    /// The card `id` of `account` of `platform`.
    pub fn get(&self, platform: u32, account: AccountId, id: u64) -> Option<Card> {
        self.state.lock().expect("cards lock").by_id.get(&id).filter(|c| c.platform == platform && c.account == account.0).cloned()
    }
}

fn unix_seconds() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The answer to a bind whose out_order_no names `card`: the card again, or a conflict.
fn replay_bind(card: Card, content: &str) -> Result<(Card, bool), ApiError> {
    if card.content != content {
        return Err(ApiError::new(409, "idempotency_conflict", "this out_order_no was used with another body"));
    }
    Ok((card, true))
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindBody {
    pub out_order_no: String,
    pub card_no: String,
    pub holder_name: String,
    pub id_number: String,
    pub phone: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifyBody {
    amount: String,
}

fn parse_card_id(text: &str) -> Option<u64> {
    crate::ids::parse_prefixed(text, "card_")
}

#[utoipa::path(post, path = "/v1/accounts/{account_id}/cards", tag = "cards", request_body = crate::cards::BindBody, params(("account_id" = String, Path, description = "Account id (acc_...)")), responses((status = 201, description = "Success", body = crate::schemas::CardView), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[post("/v1/accounts/{account_id}/cards")]
pub async fn bind(
    signed: Signed,
    path: web::Path<String>,
    engine: web::Data<Arc<Engine>>,
    members: web::Data<Arc<Members>>,
    agreements: web::Data<Arc<crate::agreements::Agreements>>,
    cards: web::Data<Arc<Cards>>,
    clearing: web::Data<clearing_actor::Clearing>,
) -> Result<HttpResponse, ApiError> {
    let body = signed.json::<BindBody>()?;
    let account = parse_account_id(&path).ok_or_else(ApiError::not_found)?;
    let (card, replayed) = bind_card(&engine, &members, &agreements, &cards, clearing.bank().as_ref(), &signed.platform, account, &body).await?;
    let mut response = HttpResponse::Created();
    if replayed {
        response.insert_header(("Idempotent-Replay", "true"));
    }
    Ok(response.json(card.view()))
}

/// Binds a card to `account` of `platform` (the API and the pages share it): the four-element
/// check, the agreements the platform requires (`agreement_required`), the day's limit, then
/// the micro-deposit booked and asked of `bank`. Answers the card and whether the order number
/// replayed an earlier bind.
#[allow(clippy::too_many_arguments)]
pub async fn bind_card(
    engine: &Arc<Engine>,
    members: &Members,
    agreements: &crate::agreements::Agreements,
    cards: &Arc<Cards>,
    bank: &dyn bank::BankChannel,
    platform: &crate::platforms::Platform,
    account: AccountId,
    body: &BindBody,
) -> Result<(Card, bool), ApiError> {
    let (platform_record, platform) = (platform, platform.id);
    let (owner, currency, spec) = account_of(engine, platform, account).await?;
    crate::orders::out_order_no(&body.out_order_no, "out_order_no")?;
    let content = hex::encode(Sha256::digest(format!("{}\n{}", account.0, serde_json::to_string(&body).expect("serializes"))));
    let existing = {
        let state = cards.state.lock().expect("cards lock");
        state.by_order.get(&(platform, body.out_order_no.clone())).and_then(|id| state.by_id.get(id)).cloned()
    };
    if let Some(card) = existing {
        return replay_bind(card, &content);
    }
    if !valid_card_no(&body.card_no) {
        return Err(ApiError { param: Some("card_no".into()), ..ApiError::new(400, "invalid_card_no", "the card number fails its Luhn check") });
    }
    if !crate::identity::valid_phone(&body.phone) {
        return Err(ApiError::invalid("phone must be a mainland mobile number of 11 digits", "phone"));
    }
    let member = members.get(platform, owner)?.ok_or_else(ApiError::not_found)?;
    if member.name != body.holder_name.trim() || member.id_number != body.id_number.to_ascii_uppercase() {
        return Err(ApiError::new(422, "identity_mismatch", "the holder's name and id number must be the account member's"));
    }
    agreements.require(platform_record, member.id, crate::agreements::Purpose::BindCard)?;
    // Below 1.00 and at least one minor unit, in the account's currency.
    let deposit_minor = rand::thread_rng().gen_range(1..10i64.pow(spec.exponent as u32).max(2));
    let card = Card {
        id: 0,
        platform,
        account: account.0,
        card_no: body.card_no.clone(),
        holder_name: member.name.clone(),
        status: "pending_verification".into(),
        deposit_minor,
        tries: 0,
        out_order_no: body.out_order_no.clone(),
        content: content.clone(),
        bound_at: 0,
    };
    let (binding, offset) = (cards.clone(), engine.config().utc_offset_seconds);
    let card = match blocking(move || binding.bind_new(card, unix_seconds(), offset)).await?? {
        Ok(card) => card,
        Err(BindRefusal::Exists(card)) => return replay_bind(card, &content),
        Err(BindRefusal::Limit { retry_after_seconds }) => {
            let error = ApiError::new(429, "card_bind_limit_reached", "this account has bound as many cards as it may today; bind again tomorrow");
            return Err(ApiError { retry_after_seconds: Some(u32::try_from(retry_after_seconds).unwrap_or(u32::MAX)), ..error });
        }
    };
    // The deposit leaves the reserve at the operator's cost: booked (once per card) before the
    // bank is asked to pay it.
    let number = crate::orders::out_order_no(&format!("card-{}", card.id), "card_id")?;
    let command = Command::VerificationDeposit { shard: account.shard(engine.config().shard_count), currency, amount: deposit_minor };
    let reply = crate::accounts::execute(engine, Envelope { platform: 0, out_order_no: Some(number), command }).await?;
    if !reply.is_ok() {
        return Err(crate::orders::rejection(reply.code));
    }
    bank.submit(bank::Request::MicroDeposit { card_no: card.card_no.clone(), amount: deposit_minor, currency: spec });
    Ok((card, false))
}

#[utoipa::path(post, path = "/v1/accounts/{account_id}/cards/{card_id}/verify", tag = "cards", request_body = crate::cards::VerifyBody, params(("account_id" = String, Path, description = "Account id (acc_...)"), ("card_id" = String, Path, description = "Card id (card_...)")), responses((status = 200, description = "Success", body = crate::schemas::CardView), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[post("/v1/accounts/{account_id}/cards/{card_id}/verify")]
pub async fn verify(
    signed: Signed,
    path: web::Path<(String, String)>,
    engine: web::Data<Arc<Engine>>,
    cards: web::Data<Arc<Cards>>,
) -> Result<HttpResponse, ApiError> {
    let body = signed.json::<VerifyBody>()?;
    let account = parse_account_id(&path.0).ok_or_else(ApiError::not_found)?;
    let card = verify_card(&engine, &cards, signed.platform.id, account, &path.1, &body.amount).await?;
    Ok(HttpResponse::Ok().json(card.view()))
}

/// Checks the micro-deposit `amount` the member read for card `card_id` of `account` (the API
/// and the pages share it): the verified card, or why not (three wrong amounts lock it).
pub async fn verify_card(engine: &Arc<Engine>, cards: &Arc<Cards>, platform: u32, account: AccountId, card_id: &str, amount: &str) -> Result<Card, ApiError> {
    let (_, _, spec) = account_of(engine, platform, account).await?;
    let id = parse_card_id(card_id).ok_or_else(ApiError::not_found)?;
    // Checked first, whatever the card's state: bad input is a 400 even for a verified card.
    let amount = crate::orders::amount(amount, &spec, "amount")?;
    let changing = cards.clone();
    // The try is counted and saved under the card's change lock: concurrent calls are taken one
    // after the other, so at most VERIFY_TRIES_MAX wrong amounts are ever compared.
    let (right, card) = blocking(move || {
        changing.change(platform, account, id, |card| {
            match card.status.as_str() {
                "verified" => return Ok(true),
                "locked" => return Err(locked()),
                "unbound" => return Err(ApiError::not_found()),
                _ => {}
            }
            let right = amount == card.deposit_minor;
            if right {
                card.status = "verified".into();
            } else {
                card.tries = card.tries.saturating_add(1);
                if card.tries >= VERIFY_TRIES_MAX {
                    card.status = "locked".into();
                }
            }
            Ok(right)
        })
    })
    .await??;
    match (right, card.status.as_str()) {
        (true, _) => Ok(card),
        (false, "locked") => Err(locked()),
        (false, _) => Err(ApiError { param: Some("amount".into()), ..ApiError::new(422, "verification_failed", "that is not the amount deposited") }),
    }
}

fn locked() -> ApiError {
    ApiError::new(422, "card_locked", "three wrong amounts locked this card; bind it again")
}

#[utoipa::path(delete, path = "/v1/accounts/{account_id}/cards/{card_id}", tag = "cards", params(("account_id" = String, Path, description = "Account id (acc_...)"), ("card_id" = String, Path, description = "Card id (card_...)")), responses((status = 200, description = "Success", body = crate::schemas::CardView), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[delete("/v1/accounts/{account_id}/cards/{card_id}")]
pub async fn unbind(
    signed: Signed,
    path: web::Path<(String, String)>,
    engine: web::Data<Arc<Engine>>,
    cards: web::Data<Arc<Cards>>,
) -> Result<HttpResponse, ApiError> {
    let account = parse_account_id(&path.0).ok_or_else(ApiError::not_found)?;
    let card = unbind_card(&engine, &cards, signed.platform.id, account, &path.1).await?;
    Ok(HttpResponse::Ok().json(card.view()))
}

/// Unbinds card `card_id` of `account` of `platform` (the API and the pages share it).
pub async fn unbind_card(engine: &Arc<Engine>, cards: &Arc<Cards>, platform: u32, account: AccountId, card_id: &str) -> Result<Card, ApiError> {
    account_of(engine, platform, account).await?;
    let id = parse_card_id(card_id).ok_or_else(ApiError::not_found)?;
    let changing = cards.clone();
    let ((), card) = blocking(move || {
        changing.change(platform, account, id, |card| {
            if card.status == "unbound" {
                return Err(ApiError::not_found());
            }
            card.status = "unbound".into();
            Ok(())
        })
    })
    .await??;
    Ok(card)
}

/// `GET /v1/accounts/{account_id}/cards` (an addition to API.md): the account's cards.
#[utoipa::path(get, path = "/v1/accounts/{account_id}/cards", operation_id = "list_cards", tag = "cards", params(("account_id" = String, Path, description = "Account id (acc_...)")), responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[get("/v1/accounts/{account_id}/cards")]
pub async fn list(signed: Signed, path: web::Path<String>, engine: web::Data<Arc<Engine>>, cards: web::Data<Arc<Cards>>) -> Result<HttpResponse, ApiError> {
    let account = parse_account_id(&path).ok_or_else(ApiError::not_found)?;
    let found = cards_of(&engine, &cards, signed.platform.id, account).await?;
    let views: Vec<serde_json::Value> = found.iter().map(Card::view).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({"cards": views})))
}

/// Every card of `account` of `platform` (unbound ones too), oldest first.
pub async fn cards_of(engine: &Arc<Engine>, cards: &Cards, platform: u32, account: AccountId) -> Result<Vec<Card>, ApiError> {
    account_of(engine, platform, account).await?;
    let found: Vec<Card> = cards.state.lock().expect("cards lock").of_account(account.0).filter(|c| c.platform == platform).cloned().collect();
    Ok(found)
}

/// Registers the card routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(bind).service(verify).service(unbind).service(list);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_numbers_table() {
        let cases =
            [("6222020200112233441", false), ("4111111111111111", true), ("4111111111111112", false), ("41111111111", false), ("411111111111111a", false)];
        for (number, valid) in cases {
            assert_eq!(valid_card_no(number), valid, "{number}");
        }
    }

    /// Each account's cards are indexed: the day's count and the listing read that account's
    /// cards alone, oldest first, also after a reload (whose keys sort as text: c/10 before c/2).
    #[test]
    fn an_accounts_cards_are_counted_and_listed_from_its_own_index() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let cards = Cards::load(store.clone(), 3).unwrap();
        let card = |account: u64, n: u32| Card {
            id: 0,
            platform: 1,
            account,
            card_no: "4111111111111111".into(),
            holder_name: "Zhang San".into(),
            status: "pending_verification".into(),
            deposit_minor: 12,
            tries: 0,
            out_order_no: format!("c-{account}-{n}"),
            content: String::new(),
            bound_at: 0,
        };
        let now = 1_800_000_000;
        let mut expected: HashMap<u64, Vec<u64>> = HashMap::new();
        for n in 0..12u32 {
            let account = if n % 4 == 3 { 8 } else { 7 };
            // Account 7 binds three a day: the fourth on a later day.
            let at = now + i64::from(n / 4) * 86_400;
            let bound = cards.bind_new(card(account, n), at, 0).unwrap().ok().expect("within the day's limit");
            expected.entry(account).or_default().push(bound.id);
        }
        assert!(matches!(cards.bind_new(card(7, 99), now + 2 * 86_400, 0).unwrap(), Err(BindRefusal::Limit { .. })), "three on that day already");
        for loaded in [cards, Cards::load(store, 3).unwrap()] {
            let state = loaded.state.lock().unwrap();
            for (account, ids) in &expected {
                assert_eq!(state.of_account(*account).map(|c| c.id).collect::<Vec<_>>(), *ids, "account {account}");
            }
        }
    }
}
