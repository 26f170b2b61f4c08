//! Bank cards bound to accounts (API.md): the four-element check (Luhn on the card number, the
//! holder's name and id number match the member, a valid phone), then a micro-deposit of a
//! random amount below 1.00 (1 to 99 of the smallest unit where the currency has fewer than two
//! decimals) through the bank simulator that the member reads on their card's
//! statement and reports back; three wrong tries lock the card. Withdrawals go only to
//! verified cards.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{delete, get, post, web, HttpResponse};
use engine::ledger::command::{Command, Envelope, OutOrderNo};
use engine::ledger::types::AccountId;
use engine::money::{CurrencyId, CurrencySpec};
use engine::Engine;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use storage::Store;

use crate::accounts::{account_of, luhn_check_digit, parse_account_id, public_account_id};
use crate::error::{blocking, ApiError};
use crate::members::{Member, Members};
use crate::signed::Signed;
use crate::simulator::{Simulator, DEPOSIT_REMARK};

/// Wrong verification amounts that lock a card.
pub const VERIFY_TRIES_MAX: u8 = 3;
/// Wrong verification amounts one platform may give for one card number, whichever of its binds
/// they were given for, within `CARD_NO_WINDOW_SECONDS` of the first: past them the number's
/// binds are locked and it cannot be bound again on that platform until the window ends. A
/// bind's deposit is one of 99 amounts, so three guesses a bind, bound again and again (a
/// platform can open any number of accounts for one identity), found any card's amount within
/// about 33 binds, and a verified card can be debited by a collection (helper 102, session 63).
pub const CARD_NO_WRONG_MAX: u8 = VERIFY_TRIES_MAX;
/// The window of `CARD_NO_WRONG_MAX` (30 days).
pub const CARD_NO_WINDOW_SECONDS: i64 = 30 * 86_400;
/// Binds (each a micro-deposit at the operator's cost) one platform may make of one card number
/// a business day, whatever the accounts.
pub const CARD_NO_BINDS_PER_DAY: u8 = 3;
/// Cards one account may bind per business day unless `[cards]` says otherwise: each bind costs
/// the operator a micro-deposit, and a locked card's re-bind is a bind.
pub const BINDS_PER_ACCOUNT_PER_DAY_DEFAULT: u32 = 5;
const PREFIX: &str = "c/";
/// `cw/{platform}{card number's digest}`: a card number's guard on a platform (`NumberGuard`).
const GUARD_PREFIX: &[u8] = b"cw/";

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

/// Cards, kept in the store and read from it where used: memory holds only the highest id.
///
/// Keys: `c/{id}` the card (JSON, decimal id), `cg/{platform}/{out_order_no}` the card an order
/// number bound (its id), `ca/{account}{id}` an account's cards in id order (the bind time, for
/// the day's count), `cp/{id}` a card waiting for its deposit (for `resume_deposits`),
/// `cn/highest` the highest id. A bind writes all five in one synced batch.
pub struct Cards {
    store: Arc<dyn Store>,
    /// Held (on a blocking thread, never an async worker) across each read, change and save of
    /// a card, and across a bind's count, id and save: two verify calls never both see the same
    /// number of tries, and two binds never both pass the day's limit.
    changing: Mutex<()>,
    highest_id: AtomicU64,
    binds_per_account_per_day: u32,
}

const ORDER_PREFIX: &[u8] = b"cg/";
const ACCOUNT_PREFIX: &[u8] = b"ca/";
const PENDING_PREFIX: &[u8] = b"cp/";
const PENDING_PREFIX_END: &[u8] = b"cp0";
const HIGHEST: &[u8] = b"cn/highest";
/// Written once the `cg/`, `ca/`, `cp/` keys and `cn/highest` exist: a database from before
/// them (session 54) has them built by one pass over its cards at its first start.
const INDEX_BUILT: &[u8] = b"ci/built";

fn card_key(id: u64) -> Vec<u8> {
    crate::records::key(PREFIX, id)
}

fn order_key(platform: u32, out_order_no: &str) -> Vec<u8> {
    crate::records::order_key(ORDER_PREFIX, platform, out_order_no)
}

fn account_key(account: u64, id: u64) -> [u8; 19] {
    let mut key = [0u8; 19];
    key[..3].copy_from_slice(ACCOUNT_PREFIX);
    key[3..11].copy_from_slice(&account.to_be_bytes());
    key[11..].copy_from_slice(&id.to_be_bytes());
    key
}

fn pending_key(id: u64) -> [u8; 11] {
    let mut key = [0u8; 11];
    key[..3].copy_from_slice(PENDING_PREFIX);
    key[3..].copy_from_slice(&id.to_be_bytes());
    key
}

fn decode_card(id: u64, value: &[u8]) -> Result<Card, ApiError> {
    serde_json::from_slice(value).map_err(|_| ApiError::corrupt(&format!("card record {id}")))
}

fn read_highest(store: &dyn Store) -> Result<u64, String> {
    crate::records::read_u64(store, HIGHEST, "the highest card id")
}

fn decode_u64(value: &[u8], what: &str) -> Result<u64, ApiError> {
    value.try_into().map(u64::from_be_bytes).map_err(|_| ApiError::corrupt(what))
}

/// Why a bind was refused before anything was written.
enum BindRefusal {
    /// The out_order_no names a card already: replay it, or refuse another body.
    Exists(Card),
    /// The account bound its day's number of cards; retry after this many seconds.
    Limit { retry_after_seconds: i64 },
    /// The card number was bound its day's number of times on the platform.
    NumberLimit { retry_after_seconds: i64 },
    /// The card number met `CARD_NO_WRONG_MAX` wrong amounts on the platform; bind it again
    /// after this many seconds.
    NumberLocked { retry_after_seconds: i64 },
}

/// What a platform did with one card number lately, whichever accounts bound it: its wrong
/// verification amounts in the window begun at `wrong_since`, and its binds on business day
/// `binds_day`. Written with the card it concerns, in one write under the cards' lock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct NumberGuard {
    wrong: u8,
    wrong_since: i64,
    binds: u8,
    binds_day: i64,
}

impl NumberGuard {
    /// Until when (unix seconds) the number is locked at `now`, if it is.
    fn locked_until(&self, now: i64) -> Option<i64> {
        let until = self.wrong_since.saturating_add(CARD_NO_WINDOW_SECONDS);
        (self.wrong >= CARD_NO_WRONG_MAX && now < until).then_some(until)
    }

    /// Counts a wrong amount given at `now` (a window ended begins again).
    fn wrong_at(&mut self, now: i64) {
        // A window that ended begins again at `now` (a clock set back before the window began
        // keeps it and its tries: that errs on the side of locking).
        if now >= self.wrong_since.saturating_add(CARD_NO_WINDOW_SECONDS) {
            (self.wrong, self.wrong_since) = (0, now);
        }
        self.wrong = self.wrong.saturating_add(1);
    }

    /// Binds of the number counted on business day `today` (a later day, the clock set back
    /// since, counts as today's).
    fn binds_on(&self, today: i64) -> u8 {
        if self.binds_day >= today {
            self.binds
        } else {
            0
        }
    }
}

/// The key of `card_no`'s guard on `platform`: the number's SHA-256 (16 bytes of it), not the
/// number.
fn guard_key(platform: u32, card_no: &str) -> [u8; 23] {
    let mut key = [0u8; 23];
    key[..3].copy_from_slice(GUARD_PREFIX);
    key[3..7].copy_from_slice(&platform.to_be_bytes());
    key[7..].copy_from_slice(&Sha256::digest(card_no.as_bytes())[..16]);
    key
}

/// A card number: 12 to 19 digits with a valid Luhn check digit.
pub fn valid_card_no(text: &str) -> bool {
    (12..=19).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_digit())
        && luhn_check_digit(&text[..text.len() - 1]) == text.as_bytes()[text.len() - 1] - b'0'
}

impl Cards {
    /// Opens the cards in `store` (building their indexes first on a database from before them).
    pub fn load(store: Arc<dyn Store>, binds_per_account_per_day: u32) -> Result<Cards, String> {
        if store.get(INDEX_BUILT).map_err(|e| e.to_string())?.is_none() {
            build_index(store.as_ref())?;
        }
        let mut highest = read_highest(store.as_ref())?;
        // Cards past the highest id: written by a binary from before these keys (a downgrade
        // and upgrade again). Built again, so no id is handed out twice.
        if store.get(&card_key(highest + 1)).map_err(|e| e.to_string())?.is_some() {
            build_index(store.as_ref())?;
            highest = read_highest(store.as_ref())?;
        }
        Ok(Cards { store, changing: Mutex::new(()), highest_id: AtomicU64::new(highest), binds_per_account_per_day })
    }

    /// Binds `card` (its id is given here) unless its order number names a card already or its
    /// account bound its day's number of cards (business days at `utc_offset_seconds`); durable
    /// before it is visible. Blocking: the count, the id and the save are one step.
    #[cfg(test)]
    fn bind_new(&self, card: Card, now: i64, utc_offset_seconds: i32) -> Result<Result<Card, BindRefusal>, ApiError> {
        self.bind_new_at(card, || now, utc_offset_seconds)
    }

    /// `bind_new` at the time `clock` tells once the cards lock is held: binds take their times
    /// in the order of their ids (the day's count walks ids newest first).
    fn bind_new_at(&self, mut card: Card, clock: impl FnOnce() -> i64, utc_offset_seconds: i32) -> Result<Result<Card, BindRefusal>, ApiError> {
        let _changing = self.changing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = clock();
        let day = |at: i64| at.saturating_add(utc_offset_seconds as i64).div_euclid(86_400);
        let order = order_key(card.platform, &card.out_order_no);
        if let Some(existing) = self.card_of_order(&order)? {
            return Ok(Err(BindRefusal::Exists(existing)));
        }
        let today = day(now);
        let bound_today = self.bound_on(card.account, today, &day)?;
        let next_day_starts = (today + 1) * 86_400 - utc_offset_seconds as i64;
        if bound_today >= self.binds_per_account_per_day as usize {
            return Ok(Err(BindRefusal::Limit { retry_after_seconds: (next_day_starts - now).max(1) }));
        }
        let number = guard_key(card.platform, &card.card_no);
        let mut guard = self.guard(&number)?;
        if let Some(until) = guard.locked_until(now) {
            return Ok(Err(BindRefusal::NumberLocked { retry_after_seconds: (until - now).max(1) }));
        }
        if guard.binds_on(today) >= CARD_NO_BINDS_PER_DAY {
            return Ok(Err(BindRefusal::NumberLimit { retry_after_seconds: (next_day_starts - now).max(1) }));
        }
        (guard.binds, guard.binds_day) = (guard.binds_on(today).saturating_add(1), today.max(guard.binds_day));
        let guard = serde_json::to_vec(&guard).expect("guards serialize");
        card.id = self.highest_id.load(Ordering::Relaxed) + 1;
        if self.store.get(&card_key(card.id)).map_err(ApiError::store)?.is_some() {
            // Bound behind this process's back (a binary from before these keys, or a write
            // that failed yet reached the disk): the keys are built again, then the next id.
            build_index(self.store.as_ref()).map_err(|e| ApiError::corrupt(&format!("the cards' keys ({e})")))?;
            card.id = read_highest(self.store.as_ref()).map_err(|e| ApiError::corrupt(&format!("the highest card id ({e})")))? + 1;
            self.highest_id.store(card.id - 1, Ordering::Relaxed);
            if self.store.get(&card_key(card.id)).map_err(ApiError::store)?.is_some() {
                return Err(ApiError::corrupt(&format!("the highest card id (card {} exists)", card.id)));
            }
        }
        card.bound_at = now;
        let record = serde_json::to_vec(&card).expect("cards serialize");
        let id_bytes = card.id.to_be_bytes();
        let (key, by_account, bound_at, pending) = (card_key(card.id), account_key(card.account, card.id), now.to_be_bytes(), pending_key(card.id));
        let mut puts: Vec<(&[u8], &[u8])> = Vec::with_capacity(6);
        puts.extend([(key.as_slice(), record.as_slice()), (&order, &id_bytes), (&by_account, &bound_at), (HIGHEST, &id_bytes), (&number, &guard)]);
        if card.status == "pending_verification" {
            puts.push((&pending, b""));
        }
        self.store.write(&puts).map_err(ApiError::store)?;
        self.highest_id.store(card.id, Ordering::Relaxed);
        Ok(Ok(card))
    }

    /// How many cards `account` bound on business day `today` (`day` of a bind time): its
    /// `ca/` rows walked newest first (ids grow with time), one backwards seek and one read a
    /// card, stopping at the first card bound on an earlier day or without a bind time (bound
    /// before bind times were kept, as every card before it was), or once the day's limit is
    /// reached. So a bind reads at most the day's limit and one more of the account's cards,
    /// however many it bound over the years. A card bound on a later day than `today` (the
    /// clock was set back since) counts as today's: the limit errs on the side of refusing.
    fn bound_on(&self, account: u64, today: i64, day: &impl Fn(i64) -> i64) -> Result<usize, ApiError> {
        let start = account_key(account, 0);
        let mut end = account_key(account, u64::MAX).to_vec();
        end.push(0);
        let mut bound = 0usize;
        while bound < self.binds_per_account_per_day as usize {
            let Some(key) = self.store.last_key_in(&start, &end).map_err(ApiError::store)? else { break };
            let at = self
                .store
                .get(&key)
                .map_err(ApiError::store)?
                .ok_or_else(|| ApiError::corrupt(&format!("a bind time of account {account}'s cards (missing)")))?;
            let at = <[u8; 8]>::try_from(at.as_slice())
                .map(i64::from_be_bytes)
                .map_err(|_| ApiError::corrupt(&format!("a bind time of account {account}'s cards")))?;
            // No bind time: bound before bind times were kept, as is every card before it
            // (unless an older binary bound it after a downgrade: the walk then stops early).
            if at == 0 || day(at) < today {
                break;
            }
            // Today's, or "later" (the clock was set back since): counted as today's.
            bound += 1;
            end = key;
        }
        Ok(bound)
    }

    /// The card an order number (its `cg/` key) bound, if any.
    fn card_of_order(&self, order: &[u8]) -> Result<Option<Card>, ApiError> {
        let Some(id) = self.store.get(order).map_err(ApiError::store)? else { return Ok(None) };
        let id = decode_u64(&id, "a card order number")?;
        self.read(id)?.map(Some).ok_or_else(|| ApiError::corrupt("an order number's card (missing)"))
    }

    /// Reads the card `id` of `account` of `platform`, lets `change` decide, and saves what it
    /// changed, as one step per card (blocking): `change` sees every earlier change. A card
    /// that leaves `pending_verification` loses its `cp/` mark after it is saved (a stop in
    /// between leaves a mark `resume_deposits` drops).
    fn change<T>(&self, platform: u32, account: AccountId, id: u64, change: impl FnOnce(&mut Card) -> Result<T, ApiError>) -> Result<(T, Card), ApiError> {
        let _changing = self.changing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut card = self.get(platform, account, id)?.ok_or_else(ApiError::not_found)?;
        let before = serde_json::to_vec(&card).expect("cards serialize");
        let was_pending = card.status == "pending_verification";
        let outcome = change(&mut card)?;
        if serde_json::to_vec(&card).expect("cards serialize") != before {
            self.save(&card)?;
            // The change is durable: a mark that cannot be dropped now is dropped by the next
            // start's `waiting`, so the caller is not told it failed.
            if was_pending && card.status != "pending_verification" {
                if let Err(error) = self.unmark(card.id) {
                    tracing::warn!("cards: card {} left its waiting mark: {error}", card.id);
                }
            }
        }
        Ok((outcome, card))
    }

    /// The guard of a card number on a platform (`guard_key`); a default one if none is kept.
    fn guard(&self, key: &[u8]) -> Result<NumberGuard, ApiError> {
        match self.store.get(key).map_err(ApiError::store)? {
            Some(value) => serde_json::from_slice(&value).map_err(|_| ApiError::corrupt("a card number's guard")),
            None => Ok(NumberGuard::default()),
        }
    }

    /// Checks `amount` against card `id`'s micro-deposit at `now`, as one step under the cards'
    /// lock (blocking): concurrent calls are taken one after the other, so at most
    /// `VERIFY_TRIES_MAX` wrong amounts are compared for a card and `CARD_NO_WRONG_MAX` for its
    /// number on its platform in a window. A wrong amount counts for the card and for its number
    /// (one write of both); a card whose number is locked is locked without a comparison.
    /// Answers whether the amount was right, and the card as saved.
    fn verify_amount(&self, platform: u32, account: AccountId, id: u64, amount: i64, now: i64) -> Result<(bool, Card), ApiError> {
        let _changing = self.changing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut card = self.get(platform, account, id)?.ok_or_else(ApiError::not_found)?;
        match card.status.as_str() {
            "verified" => return Ok((true, card)),
            "locked" => return Err(locked()),
            "unbound" => return Err(ApiError::not_found()),
            _ => {}
        }
        let number = guard_key(platform, &card.card_no);
        let mut guard = self.guard(&number)?;
        let right = guard.locked_until(now).is_none() && amount == card.deposit_minor;
        if right {
            card.status = "verified".into();
        } else if guard.locked_until(now).is_some() {
            card.status = "locked".into();
        } else {
            card.tries = card.tries.saturating_add(1);
            guard.wrong_at(now);
            if card.tries >= VERIFY_TRIES_MAX || guard.locked_until(now).is_some() {
                card.status = "locked".into();
            }
        }
        let (record, guard) = (serde_json::to_vec(&card).expect("cards serialize"), serde_json::to_vec(&guard).expect("guards serialize"));
        let key = card_key(card.id);
        self.store.write(&[(key.as_slice(), record.as_slice()), (&number, &guard)]).map_err(ApiError::store)?;
        // The change is durable: a mark that cannot be dropped now is dropped by the next
        // start's `waiting`, so the caller is not told it failed.
        if card.status != "pending_verification" {
            if let Err(error) = self.unmark(card.id) {
                tracing::warn!("cards: card {} left its waiting mark: {error}", card.id);
            }
        }
        Ok((right, card))
    }

    fn save(&self, card: &Card) -> Result<(), ApiError> {
        crate::records::put(self.store.as_ref(), &[(card_key(card.id), card)])
    }

    fn unmark(&self, id: u64) -> Result<(), storage::StorageError> {
        let start = pending_key(id);
        let mut end = start.to_vec();
        end.push(0);
        self.store.delete_range(&start, &end)
    }

    /// The cards marked waiting for their deposit (`cp/`), oldest first; marks of cards no
    /// longer waiting (a stop between a card's save and its mark's removal) are dropped.
    fn waiting(&self) -> Result<Vec<Card>, String> {
        let mut ids = Vec::new();
        self.store
            .scan(PENDING_PREFIX, PENDING_PREFIX_END, &mut |key, _| {
                if let Some(id) = key.get(PENDING_PREFIX.len()..).and_then(|id| <[u8; 8]>::try_from(id).ok()) {
                    ids.push(u64::from_be_bytes(id));
                }
                true
            })
            .map_err(|e| e.to_string())?;
        let mut waiting = Vec::new();
        for id in ids {
            match self.read(id).map_err(|e| e.message)? {
                Some(card) if card.status == "pending_verification" => waiting.push(card),
                _ => self.unmark(id).map_err(|e| e.to_string())?,
            }
        }
        Ok(waiting)
    }

    fn read(&self, id: u64) -> Result<Option<Card>, ApiError> {
        self.store.get(&card_key(id)).map_err(ApiError::store)?.map(|value| decode_card(id, &value)).transpose()
    }

    /// Cards waiting for a micro-deposit the bank has not paid (no deposit line on the card's
    /// statement): each is booked (idempotent, by the number `card-{id}`) and handed to the bank
    /// again. Run at start: it closes the window between saving a card, booking its deposit and
    /// asking the bank (a crash in between left the card waiting for nothing). Reads the cards
    /// marked waiting (`cp/`), not every card. A card whose deposit line names it (the line's
    /// reference `card-{id}`: one card number can be bound many times) loses its mark here, so
    /// later starts do not read it; a deposit line without a reference (recorded before
    /// references were kept) may be another bind's, so its card is not asked again but keeps
    /// its mark (as before). Returns how many were asked again.
    pub fn resume_deposits(&self, engine: &Engine, simulator: &Simulator, bank: &dyn bank::BankChannel) -> Result<usize, String> {
        let mut resumed = 0;
        for card in self.waiting()? {
            let reference = deposit_reference(card.id);
            let lines = simulator.card_transactions(&card.card_no)?;
            let deposits = || lines.iter().filter(|t| t.remark == DEPOSIT_REMARK);
            if deposits().any(|t| t.reference.as_deref() == Some(reference.as_str())) {
                // Paid: nothing to resume for this card any more, whether or not the member
                // ever verifies it. A mark that cannot be dropped is read again next start.
                if let Err(error) = self.unmark(card.id) {
                    tracing::warn!("cards: card {} keeps its waiting mark: {error}", card.id);
                }
                continue;
            }
            if deposits().any(|t| t.reference.is_none()) {
                continue;
            }
            let account = AccountId(card.account);
            let found = engine
                .read_shard(account.shard(engine.config().shard_count), move |state| {
                    state.account(account).map(|a| (a.currency, state.currencies[a.currency.0 as usize]))
                })
                .map_err(|e| e.to_string())?;
            let Some((currency, spec)) = found else { continue };
            let number = OutOrderNo::new(&reference).ok_or("card number")?;
            let command = Command::VerificationDeposit { shard: account.shard(engine.config().shard_count), currency, amount: card.deposit_minor };
            let reply = engine.execute_one(Envelope { platform: 0, out_order_no: Some(number), command }).map_err(|e| e.to_string())?;
            if reply.is_ok() {
                bank.submit(bank::Request::MicroDeposit { card_no: card.card_no.clone(), amount: card.deposit_minor, currency: spec, reference });
                resumed += 1;
            }
        }
        Ok(resumed)
    }

    /// The card `id` of `account` of `platform` (one read of the store).
    pub fn get(&self, platform: u32, account: AccountId, id: u64) -> Result<Option<Card>, ApiError> {
        Ok(self.read(id)?.filter(|c| c.platform == platform && c.account == account.0))
    }

    /// The card an API id (`card_N`) names if it is `account`'s of `platform`; `None` for a text
    /// that is no card id.
    pub fn named(&self, platform: u32, account: AccountId, text: &str) -> Result<Option<Card>, ApiError> {
        match parse_card_id(text) {
            Some(id) => self.get(platform, account, id),
            None => Ok(None),
        }
    }

    /// The card an API id names, whatever its status (unbound too), read on a blocking thread:
    /// what a retry of an order accepted for it is checked against.
    pub async fn any_named(self: &Arc<Cards>, platform: u32, account: AccountId, text: &str) -> Result<Option<Card>, ApiError> {
        let (cards, text) = (self.clone(), text.to_string());
        blocking(move || cards.named(platform, account, &text)).await?
    }

    /// The verified card an API id names for money to or from it (a withdrawal, a collection;
    /// `refusal` is the message for a card not verified): 404 naming `card_id` for no such card of `account`
    /// or an unbound one, 422 `card_not_verified` for one not verified. Read on a blocking
    /// thread (a card read is a store read).
    pub async fn verified(self: &Arc<Cards>, platform: u32, account: AccountId, text: &str, refusal: &'static str) -> Result<Card, ApiError> {
        let (cards, text) = (self.clone(), text.to_string());
        let card = blocking(move || cards.named(platform, account, &text)).await??;
        let card = card.filter(|c| c.status != "unbound").ok_or(ApiError { param: Some("card_id".into()), ..ApiError::not_found() })?;
        if card.status != "verified" {
            return Err(ApiError { param: Some("card_id".into()), ..ApiError::new(422, "card_not_verified", refusal) });
        }
        Ok(card)
    }

    /// The cards of `account` of `platform` (unbound ones too), oldest first: its `ca/` keys,
    /// then one read of their records.
    fn of_account(&self, platform: u32, account: u64) -> Result<Vec<Card>, ApiError> {
        let mut ids = Vec::new();
        self.store
            .scan(&account_key(account, 0), &account_key(account, u64::MAX), &mut |key, _| {
                if let Some(id) = key.get(11..).and_then(|id| <[u8; 8]>::try_from(id).ok()) {
                    ids.push(u64::from_be_bytes(id));
                }
                true
            })
            .map_err(ApiError::store)?;
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| card_key(*id)).collect();
        let borrowed: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let mut found = Vec::with_capacity(keys.len());
        for (id, value) in ids.iter().zip(self.store.get_many(&borrowed).map_err(ApiError::store)?) {
            let Some(value) = value else { continue };
            let card = decode_card(*id, &value)?;
            if card.platform == platform && card.account == account {
                found.push(card);
            }
        }
        Ok(found)
    }
}

/// Builds the `cg/`, `ca/`, `cp/` keys and `cn/highest` of a database from before them: one
/// pass over the cards, `records::CHUNK_RECORDS` at a time (the keys are idempotent), the highest id
/// and the marker written last, together (a start stopped before them builds it all again).
fn build_index(store: &dyn Store) -> Result<(), String> {
    let mut highest = 0u64;
    crate::records::for_each_chunk(
        store,
        (PREFIX.as_bytes(), b"c0"),
        "card",
        |card: &Card| card_key(card.id),
        |chunk| {
            let mut rows: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(chunk.len() * 3);
            for card in chunk {
                highest = highest.max(card.id);
                rows.push((order_key(card.platform, &card.out_order_no), card.id.to_be_bytes().to_vec()));
                rows.push((account_key(card.account, card.id).to_vec(), card.bound_at.to_be_bytes().to_vec()));
                if card.status == "pending_verification" {
                    rows.push((pending_key(card.id).to_vec(), Vec::new()));
                }
            }
            crate::records::write_rows(store, &rows)
        },
    )?;
    let highest = highest.to_be_bytes();
    store.write(&[(HIGHEST, &highest[..]), (INDEX_BUILT, b"1")]).map_err(|e| e.to_string())
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

/// The micro-deposits' amounts in minor units for a currency of `exponent` decimals: below 1.00
/// (1 to 10^exponent - 1), or 1 to 99 minor units where that leaves fewer than 99 (exponents 0
/// and 1).
fn deposit_range(exponent: u8) -> std::ops::Range<i64> {
    1..10i64.pow(exponent.min(6) as u32).max(100)
}

/// The order number a card's micro-deposit is booked under, and the reference the bank's line
/// of it carries.
fn deposit_reference(card: u64) -> String {
    format!("card-{card}")
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
    let (card, replayed) = bind_card(&engine, &members, &agreements, &cards, clearing.bank(), &signed.platform, account, &body).await?;
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
    members: &Arc<Members>,
    agreements: &Arc<crate::agreements::Agreements>,
    cards: &Arc<Cards>,
    bank: &Arc<dyn bank::BankChannel>,
    platform: &crate::platforms::Platform,
    account: AccountId,
    body: &BindBody,
) -> Result<(Card, bool), ApiError> {
    let (platform_record, platform) = (platform, platform.id);
    let (owner, currency, spec) = account_of(engine, platform, account).await?;
    crate::orders::out_order_no(&body.out_order_no, "out_order_no")?;
    let content = hex::encode(Sha256::digest(format!("{}\n{}", account.0, serde_json::to_string(&body).expect("serializes"))));
    // The replay, the member and the signatures are read from the store: off the HTTP worker,
    // in the order the checks answer (replay, card number, phone, member, identity, agreements).
    // What the closure needs of the body is checked or copied here: the body itself (up to the
    // request size) is not copied.
    let (card_no_valid, phone_valid) = (valid_card_no(&body.card_no), crate::identity::valid_phone(&body.phone));
    let (order, holder_name, id_number) = (order_key(platform, &body.out_order_no), body.holder_name.trim().to_string(), body.id_number.to_ascii_uppercase());
    let checked = {
        let (cards, members, agreements, platform_record) = (cards.clone(), members.clone(), agreements.clone(), platform_record.clone());
        blocking(move || -> Result<Result<Member, Card>, ApiError> {
            if let Some(card) = cards.card_of_order(&order)? {
                return Ok(Err(card));
            }
            if !card_no_valid {
                return Err(ApiError { param: Some("card_no".into()), ..ApiError::new(400, "invalid_card_no", "the card number fails its Luhn check") });
            }
            if !phone_valid {
                return Err(ApiError::invalid("phone must be a mainland mobile number of 11 digits", "phone"));
            }
            let member = members.get(platform_record.id, owner)?.ok_or_else(ApiError::not_found)?;
            if member.name != holder_name || member.id_number != id_number {
                return Err(ApiError::new(422, "identity_mismatch", "the holder's name and id number must be the account member's"));
            }
            agreements.require(&platform_record, member.id, crate::agreements::Purpose::BindCard)?;
            Ok(Ok(member))
        })
        .await??
    };
    let member = match checked {
        Ok(member) => member,
        Err(card) => return replay_pending(engine, bank, card, &content, (currency, spec), account).await,
    };
    // Below 1.00 and at least one minor unit, in the account's currency; one of at least 99
    // amounts whatever its exponent (one with no minor unit drew 1 every time, helper 102).
    let deposit_minor = rand::thread_rng().gen_range(deposit_range(spec.exponent));
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
    let card = match blocking(move || binding.bind_new_at(card, unix_seconds, offset)).await?? {
        Ok(card) => card,
        Err(BindRefusal::Exists(card)) => return replay_pending(engine, bank, card, &content, (currency, spec), account).await,
        Err(BindRefusal::Limit { retry_after_seconds }) => {
            let error = ApiError::new(429, "card_bind_limit_reached", "this account has bound as many cards as it may today; bind again tomorrow");
            return Err(ApiError { retry_after_seconds: Some(u32::try_from(retry_after_seconds).unwrap_or(u32::MAX)), ..error });
        }
        Err(BindRefusal::NumberLimit { retry_after_seconds }) => {
            let error = ApiError::new(429, "card_bind_limit_reached", "this card number was bound as many times as it may be today; bind it again tomorrow");
            return Err(ApiError { retry_after_seconds: Some(u32::try_from(retry_after_seconds).unwrap_or(u32::MAX)), param: Some("card_no".into()), ..error });
        }
        Err(BindRefusal::NumberLocked { retry_after_seconds }) => {
            let error = ApiError::new(
                422,
                "card_locked",
                "three wrong amounts were given for this card number within 30 days; it cannot be bound again before Retry-After",
            );
            return Err(ApiError { retry_after_seconds: Some(u32::try_from(retry_after_seconds).unwrap_or(u32::MAX)), param: Some("card_no".into()), ..error });
        }
    };
    deposit(engine, bank, &card, (currency, spec), account).await?;
    Ok((card, false))
}

/// Books card `card`'s micro-deposit (once per card: its number is the card's) and, when this
/// call booked it, asks `bank` to pay it. The deposit leaves the reserve at the operator's cost.
async fn deposit(
    engine: &Arc<Engine>,
    bank: &Arc<dyn bank::BankChannel>,
    card: &Card,
    (currency, spec): (CurrencyId, CurrencySpec),
    account: AccountId,
) -> Result<(), ApiError> {
    let reference = deposit_reference(card.id);
    let number = crate::orders::out_order_no(&reference, "card_id")?;
    let command = Command::VerificationDeposit { shard: account.shard(engine.config().shard_count), currency, amount: card.deposit_minor };
    // Booked and handed to the bank on a task of its own: a request cut short between the two
    // (its client gone) would leave a booked deposit that its retry, the engine's replay,
    // never sends (before session 60 the member waited for a start).
    let (engine, bank, card_no, amount) = (engine.clone(), bank.clone(), card.card_no.clone(), card.deposit_minor);
    let reply = actix_web::rt::spawn(async move {
        let reply = crate::accounts::execute(&engine, Envelope { platform: 0, out_order_no: Some(number), command }).await?;
        if reply.is_ok() && !reply.replayed {
            bank.submit(bank::Request::MicroDeposit { card_no, amount, currency: spec, reference });
        }
        Ok::<engine::ledger::types::Reply, ApiError>(reply)
    })
    .await
    .map_err(|_| ApiError::unavailable("the server is stopping".into()))??;
    if !reply.is_ok() {
        return Err(crate::orders::rejection(reply.code));
    }
    Ok(())
}

/// A bind repeated with its order number: the card as it is. A card still waiting for its
/// verification has its deposit booked and sent now if the first request never got that far
/// (the engine answered it `overloaded`, or it was cut short): before session 57 the replay
/// answered the card while no deposit was ever made, until a restart.
async fn replay_pending(
    engine: &Arc<Engine>,
    bank: &Arc<dyn bank::BankChannel>,
    card: Card,
    content: &str,
    money: (CurrencyId, CurrencySpec),
    account: AccountId,
) -> Result<(Card, bool), ApiError> {
    let (card, replayed) = replay_bind(card, content)?;
    if card.status == "pending_verification" {
        deposit(engine, bank, &card, money, account).await?;
    }
    Ok((card, replayed))
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
    // The try is counted and saved under the cards' lock, for the card and for its number on
    // the platform (`Cards::verify_amount`).
    let (right, card) = blocking(move || changing.verify_amount(platform, account, id, amount, unix_seconds())).await??;
    match (right, card.status.as_str()) {
        (true, _) => Ok(card),
        (false, "locked") => Err(locked()),
        (false, _) => Err(ApiError { param: Some("amount".into()), ..ApiError::new(422, "verification_failed", "that is not the amount deposited") }),
    }
}

fn locked() -> ApiError {
    ApiError::new(
        422,
        "card_locked",
        "three wrong amounts locked this card (or its number, given for any of its binds within 30 days); bind it again after that",
    )
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
pub async fn cards_of(engine: &Arc<Engine>, cards: &Arc<Cards>, platform: u32, account: AccountId) -> Result<Vec<Card>, ApiError> {
    account_of(engine, platform, account).await?;
    // Every card the account ever bound (up to the day's limit a day): read off the HTTP worker.
    let reading = cards.clone();
    blocking(move || reading.of_account(platform, account.0)).await?
}

/// Registers the card routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(bind).service(verify).service(unbind).service(list);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn card_numbers_table() {
        let cases =
            [("6222020200112233441", false), ("4111111111111111", true), ("4111111111111112", false), ("41111111111", false), ("411111111111111a", false)];
        for (number, valid) in cases {
            assert_eq!(valid_card_no(number), valid, "{number}");
        }
    }

    /// A card of its own number (binds of one number are counted apart: `NumberGuard`).
    fn card(account: u64, n: u32) -> Card {
        Card {
            id: 0,
            platform: 1,
            account,
            card_no: format!("62{account:08}{n:08}"),
            holder_name: "Zhang San".into(),
            status: "pending_verification".into(),
            deposit_minor: 12,
            tries: 0,
            out_order_no: format!("c-{account}-{n}"),
            content: String::new(),
            bound_at: 0,
        }
    }

    fn pending_ids(store: &dyn Store) -> Vec<u64> {
        let mut ids = Vec::new();
        store
            .scan(PENDING_PREFIX, PENDING_PREFIX_END, &mut |key, _| {
                ids.push(u64::from_be_bytes(key[3..].try_into().unwrap()));
                true
            })
            .unwrap();
        ids
    }

    #[test]
    fn deposits_are_one_of_at_least_99_amounts_below_one_unit_where_the_currency_allows() {
        assert_eq!(deposit_range(2), 1..100, "0.01 to 0.99");
        assert_eq!(deposit_range(3), 1..1000);
        assert_eq!(deposit_range(0), 1..100, "no minor unit: 1 to 99, not always 1");
        assert_eq!(deposit_range(1), 1..100);
        assert_eq!(deposit_range(6), 1..1_000_000);
    }

    /// Three wrong amounts for one card number on a platform, over three of its binds (on
    /// different accounts), lock the number: its pending binds are locked without a comparison
    /// and it cannot be bound again until 30 days after the first; another platform's binds
    /// of the number are its own. A number is bound at most `CARD_NO_BINDS_PER_DAY` times a day
    /// on a platform, whatever the accounts (helper 102, session 63).
    #[test]
    fn wrong_amounts_and_binds_are_counted_by_card_number_across_binds() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let cards = Cards::load(store.clone(), 5).unwrap();
        let now = 1_800_000_000i64;
        let same = |account: u64, n: u32, platform: u32| Card { card_no: "4111111111111111".into(), platform, ..card(account, n) };
        let bound = |c: Card, at: i64| match cards.bind_new(c, at, 0).unwrap() {
            Ok(card) => card,
            Err(_) => panic!("refused"),
        };
        let first = bound(same(1, 1, 1), now);
        let second = bound(same(2, 1, 1), now + 1);
        let third = bound(same(3, 1, 1), now + 2);
        assert!(matches!(cards.bind_new(same(4, 1, 1), now + 3, 0).unwrap(), Err(BindRefusal::NumberLimit { .. })), "three binds of the number today");
        let elsewhere = bound(same(4, 1, 2), now + 3);
        // One wrong amount on each of two binds, then one on the third: the number is locked.
        for (c, at) in [(&first, now + 10), (&second, now + 11)] {
            let (right, card) = cards.verify_amount(1, AccountId(c.account), c.id, 99, at).unwrap();
            assert!(!right && card.status == "pending_verification", "{card:?}");
        }
        let (right, card) = cards.verify_amount(1, AccountId(third.account), third.id, 99, now + 12).unwrap();
        assert!(!right && card.status == "locked", "the third wrong amount for the number: {card:?}");
        // The first bind's right amount is not compared any more.
        let (right, card) = cards.verify_amount(1, AccountId(first.account), first.id, first.deposit_minor, now + 13).unwrap();
        assert!(!right && card.status == "locked", "{card:?}");
        assert!(pending_ids(store.as_ref()).iter().all(|id| *id != first.id && *id != third.id), "locked cards wait for nothing");
        let next_day = now + 86_400;
        assert!(
            matches!(cards.bind_new(same(5, 1, 1), next_day, 0).unwrap(), Err(BindRefusal::NumberLocked { retry_after_seconds }) if retry_after_seconds == CARD_NO_WINDOW_SECONDS + 10 - 86_400)
        );
        let unlocked = now + 10 + CARD_NO_WINDOW_SECONDS;
        let again = bound(same(5, 2, 1), unlocked);
        let (right, card) = cards.verify_amount(1, AccountId(again.account), again.id, again.deposit_minor, unlocked + 1).unwrap();
        assert!(right && card.status == "verified", "a new window: {card:?}");
        // The other platform's bind of the number was never locked.
        let other = cards.get(2, AccountId(4), elsewhere.id).unwrap().expect("the other platform's card");
        assert_eq!(other.status, "pending_verification");
        // The guards survive a reload (they are in the store).
        let reloaded = Cards::load(store.clone(), 5).unwrap();
        assert!(matches!(reloaded.bind_new(same(6, 1, 1), next_day, 0).unwrap(), Err(BindRefusal::NumberLocked { .. })));
    }

    /// Each account's cards are indexed in the store: the day's count and the listing read that
    /// account's cards alone, oldest first, also after a reload.
    #[test]
    fn an_accounts_cards_are_counted_and_listed_from_its_own_index() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let cards = Cards::load(store.clone(), 3).unwrap();
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
        assert!(matches!(cards.bind_new(card(7, 0), now + 9 * 86_400, 0).unwrap(), Err(BindRefusal::Exists(c)) if c.id == expected[&7][0]));
        for loaded in [cards, Cards::load(store.clone(), 3).unwrap()] {
            for (account, ids) in &expected {
                assert_eq!(loaded.of_account(1, *account).unwrap().iter().map(|c| c.id).collect::<Vec<_>>(), *ids, "account {account}");
                assert!(loaded.of_account(2, *account).unwrap().is_empty(), "another platform's");
            }
            // Ids go on from the highest after a reload.
            assert_eq!(loaded.highest_id.load(Ordering::Relaxed), 12);
        }
        assert_eq!(pending_ids(store.as_ref()), (1..=12).collect::<Vec<_>>());
    }

    /// A store that counts its point reads.
    struct CountingStore {
        inner: storage::MemoryStore,
        gets: AtomicU64,
    }

    impl Store for CountingStore {
        fn write(&self, puts: &[(&[u8], &[u8])]) -> Result<(), storage::StorageError> {
            self.inner.write(puts)
        }
        fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<(), storage::StorageError> {
            self.inner.delete_range(start, end)
        }
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, storage::StorageError> {
            self.gets.fetch_add(1, Ordering::Relaxed);
            self.inner.get(key)
        }
        fn scan(&self, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<(), storage::StorageError> {
            self.inner.scan(start, end, visit)
        }
        fn last_key_in(&self, start: &[u8], end: &[u8]) -> Result<Option<Vec<u8>>, storage::StorageError> {
            self.inner.last_key_in(start, end)
        }
        fn is_poisoned(&self) -> bool {
            false
        }
    }

    /// The day's count reads the account's newest cards only: after years of binds (here 300
    /// cards over 100 days, after two bound before bind times were kept) a bind reads at most
    /// the day's limit and one more, and counts exactly the day's binds (a card bound
    /// "tomorrow", by a clock set back since, counts as today's).
    #[test]
    fn a_binds_day_count_reads_only_the_accounts_newest_cards() {
        let store = Arc::new(CountingStore { inner: storage::MemoryStore::new(), gets: AtomicU64::new(0) });
        let cards = Cards::load(store.clone(), 3).unwrap();
        let today = 1_800_000_000 / 86_400 * 86_400;
        let day = |at: i64| at.div_euclid(86_400);
        // Two cards of each account from before bind times were kept.
        for account in [7, 8] {
            let untimed: Vec<Card> = (0..2).map(|n| cards.bind_new(card(account, 1000 + n), today - 86_400 * 300, 0).unwrap().ok().unwrap()).collect();
            let rows: Vec<([u8; 19], [u8; 8])> = untimed.iter().map(|c| (account_key(account, c.id), 0i64.to_be_bytes())).collect();
            store.write(&rows.iter().map(|(k, v)| (&k[..], &v[..])).collect::<Vec<_>>()).unwrap();
        }
        for n in 0..300u32 {
            let at = today - 100 * 86_400 + i64::from(n / 3) * 86_400 + i64::from(n % 3);
            cards.bind_new(card(7, n), at, 0).unwrap().ok().expect("three a day");
        }
        let counted = |account| {
            store.gets.store(0, Ordering::Relaxed);
            let bound = cards.bound_on(account, day(today), &day).unwrap();
            (bound, store.gets.load(Ordering::Relaxed))
        };
        assert_eq!(counted(7), (0, 1), "yesterday's newest card ends the walk");
        assert_eq!(counted(8), (0, 1), "a card without a bind time ends the walk");
        cards.bind_new(card(7, 2000), today + 86_400 + 5, 0).unwrap().ok().unwrap();
        assert_eq!(counted(7), (1, 2), "a card of 'tomorrow' counts as today's");
        cards.bind_new(card(7, 3000), today + 60, 0).unwrap().ok().expect("within the day's limit");
        assert_eq!(counted(7), (2, 3));
        cards.bind_new(card(7, 3001), today + 61, 0).unwrap().ok().expect("within the day's limit");
        assert_eq!(counted(7), (3, 3), "the limit reached: no more read");
        store.gets.store(0, Ordering::Relaxed);
        assert!(matches!(cards.bind_new(card(7, 4000), today + 120, 0).unwrap(), Err(BindRefusal::Limit { .. })));
        assert_eq!(store.gets.load(Ordering::Relaxed), 4, "the order number's key and three cards");
    }

    /// A card that leaves `pending_verification` loses its mark; a mark a stop left behind is
    /// dropped when deposits are resumed (that needs an engine: tests/).
    #[test]
    fn verified_locked_and_unbound_cards_are_no_longer_marked_waiting() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let cards = Cards::load(store.clone(), 9).unwrap();
        let ids: Vec<u64> = (0..4).map(|n| cards.bind_new(card(7, n), 1_800_000_000, 0).unwrap().ok().unwrap().id).collect();
        for (id, status) in ids.iter().zip(["verified", "locked", "unbound"]) {
            cards
                .change(1, AccountId(7), *id, |c| {
                    c.status = status.into();
                    Ok(())
                })
                .unwrap();
        }
        assert_eq!(pending_ids(store.as_ref()), [ids[3]]);
        // A mark left by a stop between the save and the mark's removal is dropped.
        store.write(&[(&pending_key(ids[0])[..], &b""[..])]).unwrap();
        assert_eq!(cards.waiting().unwrap().iter().map(|c| c.id).collect::<Vec<_>>(), [ids[3]]);
        assert_eq!(pending_ids(store.as_ref()), [ids[3]]);
        // Another platform's or account's card is not found, and changes nothing.
        assert_eq!(cards.change(2, AccountId(7), ids[3], |_| Ok(())).err().map(|e| e.status), Some(404));
        assert_eq!(cards.change(1, AccountId(8), ids[3], |_| Ok(())).err().map(|e| e.status), Some(404));
        assert_eq!(cards.named(1, AccountId(7), &format!("card_{}", ids[0])).unwrap().map(|c| c.status), Some("verified".to_string()));
        assert_eq!(cards.named(1, AccountId(7), "card_x").unwrap().map(|c| c.id), None);
    }

    /// Cards a binary from before these keys bound after they were built (a downgrade) are
    /// found at the next start: their ids are not handed out again, their accounts list them.
    #[test]
    fn cards_bound_past_the_index_are_indexed_at_the_next_start() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let cards = Cards::load(store.clone(), 9).unwrap();
        let first = cards.bind_new(card(7, 0), 1_800_000_000, 0).unwrap().ok().unwrap();
        let old = Card { id: 2, out_order_no: "old-1".into(), ..first.clone() };
        crate::records::put(store.as_ref(), &[(card_key(2), &old)]).unwrap();
        // This process does not know of it: it does not write over it, it finds it.
        assert_eq!(cards.bind_new(card(7, 1), 1_800_000_000, 0).unwrap().ok().map(|c| c.id), Some(3));
        assert_eq!(cards.of_account(1, 7).unwrap().iter().map(|c| c.id).collect::<Vec<_>>(), [1, 2, 3]);
        let cards = Cards::load(store.clone(), 9).unwrap();
        assert_eq!(cards.of_account(1, 7).unwrap().iter().map(|c| c.id).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(cards.bind_new(card(7, 4), 1_800_000_000, 0).unwrap().ok().map(|c| c.id), Some(4));
        let mut replay = card(7, 0);
        replay.out_order_no = "old-1".into();
        assert!(matches!(cards.bind_new(replay, 1_800_000_000, 0).unwrap(), Err(BindRefusal::Exists(c)) if c.id == 2));
    }

    #[test]
    fn a_database_from_before_the_index_has_it_built_once_at_its_first_start() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        // Cards exactly as the old code wrote them: c/{decimal id} only (c/10 sorts before c/2).
        let mut old = Vec::new();
        for id in 1..=12u64 {
            let mut made = card(if id % 3 == 0 { 8 } else { 7 }, id as u32);
            made.id = id;
            made.bound_at = if id == 1 { 0 } else { 1_800_000_000 };
            if id % 4 == 0 {
                made.status = "verified".into();
            }
            old.push((card_key(id), made));
        }
        let refs: Vec<(Vec<u8>, &Card)> = old.iter().map(|(k, c)| (k.clone(), c)).collect();
        crate::records::put(store.as_ref(), &refs).unwrap();
        let cards = Cards::load(store.clone(), 8).unwrap();
        assert_eq!(cards.highest_id.load(Ordering::Relaxed), 12);
        assert_eq!(cards.of_account(1, 8).unwrap().iter().map(|c| c.id).collect::<Vec<_>>(), [3, 6, 9, 12]);
        assert_eq!(pending_ids(store.as_ref()), [1, 2, 3, 5, 6, 7, 9, 10, 11]);
        // Order numbers bound before replay; account 7 bound 7 of its 8 cards today (one has no
        // time), and may bind 8 a day.
        let now = 1_800_000_000;
        assert!(matches!(cards.bind_new(card(7, 2), now, 0).unwrap(), Err(BindRefusal::Exists(c)) if c.id == 2));
        assert_eq!(cards.bind_new(card(7, 50), now, 0).unwrap().ok().map(|c| c.id), Some(13));
        assert!(matches!(cards.bind_new(card(7, 51), now, 0).unwrap(), Err(BindRefusal::Limit { .. })));
        // Built once.
        assert_eq!(Cards::load(store.clone(), 9).unwrap().highest_id.load(Ordering::Relaxed), 13);
        // A corrupt card stops the first start of an old database, and is a 500 where read.
        store.write(&[(&card_key(5)[..], &b"{"[..])]).unwrap();
        assert_eq!(cards.get(1, AccountId(7), 5).err().map(|e| e.status), Some(500));
        store.delete_range(b"ci/", b"ci0").unwrap();
        assert!(Cards::load(store, 9).err().expect("refused").contains("corrupt"));
    }
}
