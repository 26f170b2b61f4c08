//! The payout book: what clearing notes of each payout (withdrawal or 代付) before the engine
//! sees it: its card, the routing decision, the channels tried. Noted durably before the order
//! is submitted, so a replay reuses the decision and a restart resends the payout to the same
//! card through the same channel.

use engine::ledger::command::OutOrderNo;
use engine::ledger::types::{AccountId, OrderId, Reply};
use engine::money::{CurrencyId, CurrencySpec, Minor};
use serde::{Deserialize, Serialize};
use storage::Store;

use crate::channels::{AccountType, Arrival, Routing};
use crate::error::ClearingError;

/// Key prefix of the payout notes (`x/{platform}/{out_order_no}`).
const NOTE_PREFIX: &str = "x/";

/// What clearing notes of a payout before submitting it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutNote {
    /// The bound card, or 0 for an outside card (代付).
    pub card: u64,
    /// The card's number (notes written before it was kept for bound cards have none).
    #[serde(default)]
    pub card_no: Option<String>,
    /// The channel chosen, its fee in minor units, and the decision as answered.
    #[serde(default)]
    pub channel: Option<u16>,
    #[serde(default)]
    pub fee: Minor,
    #[serde(default)]
    pub routing: Option<Routing>,
    /// What routing needs again for a fallback: the requested arrival and the account type.
    #[serde(default)]
    pub arrival: Option<Arrival>,
    #[serde(default)]
    pub account_type: Option<AccountType>,
    /// Channels tried so far, in order.
    #[serde(default)]
    pub tried: Vec<u16>,
    /// The engine refused the order. Since journal format 5 the engine keeps the refusal as the
    /// number's record: a repeat is submitted with the note's first channel and fee, and the
    /// engine answers it the same refusal (`Actor::payout`). A note refused under an earlier
    /// build (the engine kept nothing) frees its number: the next request with it is routed
    /// anew (limits, fee and daily caps as they are then).
    #[serde(default)]
    pub refused: bool,
    /// The channel and fee the order was submitted with (the engine's order holds them): a
    /// repeat of its number is built from them whatever fallbacks changed `channel` and `fee`
    /// since, so the engine answers it as a replay. `None` in notes written before session 58
    /// (a repeat after a fallback was then 409 `idempotency_conflict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<(u16, Minor)>,
    /// The amount and currency routed (`None` in notes written before session 58): a repeat
    /// of the number naming others is 409 before anything is counted, also when a stop left
    /// the note without its order (the old channel, fee and caps were reused for any amount).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<(Minor, u8)>,
    /// A channel the payout left said it paid it while it waited on the next one (since
    /// session 59): it falls back no further, and a failure for good there holds what goes back
    /// to the account under a case of that channel's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_by_left: Option<u16>,
    /// The account paying out (`None` in notes written before session 66): a repeat of the
    /// number naming another is 409 before anything is routed, also when the engine refused
    /// the order (its kept refusal is on the first account's shard; helper 117#3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<u64>,
    /// An outside card's holder as the platform named it (代付; since session 68, `None` before
    /// and for bound cards): a repeat of the number naming another is 409 (helper 125#2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_name: Option<String>,
}

/// A payout to route and submit: a member's verified card (withdrawal) or an outside one (代付).
#[derive(Clone, Debug)]
pub struct PayoutRequest {
    pub platform: u32,
    pub number: OutOrderNo,
    /// The account paying out.
    pub account: AccountId,
    pub currency: CurrencyId,
    pub spec: CurrencySpec,
    pub amount: Minor,
    pub arrival: Arrival,
    pub account_type: AccountType,
    /// The bound card, or 0 for an outside card.
    pub card_id: u64,
    pub card_no: String,
    /// An outside card's holder as the platform named it (代付; `None` for a bound card's).
    pub holder_name: Option<String>,
}

/// What became of a payout request: the engine's reply and the routing it went with.
#[derive(Clone, Debug)]
pub struct PayoutOutcome {
    pub reply: Reply,
    pub channel: String,
    pub fee: Minor,
    pub routing: Option<Routing>,
}

/// A bank's verdict on a payout (from its callback, or from a status query after a timeout).
#[derive(Clone, Debug)]
pub struct PayoutVerdict {
    pub order: OrderId,
    pub succeeded: bool,
    /// The channel the verdict is about: a verdict of a channel the order has left is stale.
    pub channel: Option<String>,
}

/// What a verdict did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum VerdictOutcome {
    /// The order is final (or was already): its status now.
    Completed { received: bool, status: Option<&'static str> },
    /// The order failed on its channel and went to the next one.
    Rerouted { received: bool, status: &'static str, rerouted_to: String },
    /// A verdict of a channel the order has left after a fallback: ignored.
    Stale { received: bool, stale: bool },
}

fn note_key(platform: u32, number: &str) -> Vec<u8> {
    format!("{NOTE_PREFIX}{platform}/{number}").into_bytes()
}

fn decoded(key: &[u8], value: Option<Vec<u8>>) -> Result<Option<PayoutNote>, ClearingError> {
    let Some(value) = value else { return Ok(None) };
    serde_json::from_slice(&value).map(Some).map_err(|error| ClearingError::Storage(format!("payout note {}: {error}", String::from_utf8_lossy(key))))
}

/// The notes, in the store alone: one is read when a payout with its number comes again, falls
/// back, is listed or is resumed at start. Not held in memory: a bank's payouts over the years
/// outgrow it (about 1 KB a note with its routing), and reading them all made every start
/// slower with age.
pub(crate) struct PayoutBook;

impl PayoutBook {
    /// The note of a payout, unless the engine refused it.
    pub(crate) fn get(store: &dyn Store, platform: u32, number: &str) -> Result<Option<PayoutNote>, ClearingError> {
        let key = note_key(platform, number);
        let value = store.get(&key).map_err(|e| ClearingError::Storage(e.to_string()))?;
        Ok(decoded(&key, value)?.filter(|n| !n.refused))
    }

    /// The note of a payout, also one the engine refused (`refused`).
    pub(crate) fn get_any(store: &dyn Store, platform: u32, number: &str) -> Result<Option<PayoutNote>, ClearingError> {
        let key = note_key(platform, number);
        let value = store.get(&key).map_err(|e| ClearingError::Storage(e.to_string()))?;
        decoded(&key, value)
    }

    /// The notes of `numbers` of one platform, in their order (a listing's page): one read.
    pub(crate) fn get_many(store: &dyn Store, platform: u32, numbers: &[String]) -> Result<Vec<Option<PayoutNote>>, ClearingError> {
        let keys: Vec<Vec<u8>> = numbers.iter().map(|number| note_key(platform, number)).collect();
        let borrowed: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let values = store.get_many(&borrowed).map_err(|e| ClearingError::Storage(e.to_string()))?;
        keys.iter().zip(values).map(|(key, value)| Ok(decoded(key, value)?.filter(|n| !n.refused))).collect()
    }

    /// Writes a note durably.
    pub(crate) fn save(store: &dyn Store, platform: u32, number: &str, note: &PayoutNote) -> Result<(), ClearingError> {
        storage::records::put(store, &[(note_key(platform, number), note)]).map_err(|e| ClearingError::Storage(e.to_string()))
    }
}

/// Key prefix of the collection notes (`xc/{platform}/{out_order_no}`).
const COLLECTION_PREFIX: &str = "xc/";

/// What is noted of a collection (代收) before the engine sees it: the card it debits, and the
/// account and amount it is for (a note that does not match its order is not used).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionNote {
    pub account: AccountId,
    pub amount: Minor,
    pub card_no: String,
    /// The card's record id, which the collection's command names (`RequestCollection::card`):
    /// written since session 61. A note without it is an earlier build's, whose collection was
    /// a plain recharge's command: a start takes its order for a collection by the note alone,
    /// and a retry of it is answered as that order's replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<u64>,
}

impl CollectionNote {
    /// Whether `other` notes the same collection (its card, account and amount), whichever
    /// build wrote either.
    pub fn same_collection(&self, other: &CollectionNote) -> bool {
        (self.account, self.amount, &self.card_no) == (other.account, other.amount, &other.card_no)
    }
}

/// The collection notes, in the store alone (`xc/`, JSON): a collection is a pending recharge
/// to the engine, so the card it debits lives here, written before the order is submitted, and
/// a start hands the bank a collection waiting for its verdict again with its card (before
/// session 57 a start sent it as a plain money-in, which no card pays).
pub struct CollectionNotes;

impl CollectionNotes {
    fn key(platform: u32, number: &str) -> Vec<u8> {
        format!("{COLLECTION_PREFIX}{platform}/{number}").into_bytes()
    }

    /// Writes the note of collection `number` of `platform` durably.
    pub fn save(store: &dyn Store, platform: u32, number: &str, note: &CollectionNote) -> Result<(), ClearingError> {
        storage::records::put(store, &[(Self::key(platform, number), note)]).map_err(|e| ClearingError::Storage(e.to_string()))
    }

    /// Drops the note of collection `number` of `platform`.
    pub fn forget(store: &dyn Store, platform: u32, number: &str) -> Result<(), ClearingError> {
        let key = Self::key(platform, number);
        let mut end = key.clone();
        end.push(0);
        store.delete_range(&key, &end).map_err(|e| ClearingError::Storage(e.to_string()))
    }

    /// Once (`ki/notes-checked`): drops the notes an earlier build left without an order (a
    /// stop between a note and the engine, a removal that failed). Such a note names no card
    /// id, so a start takes the order under its number for a collection by the note alone: a
    /// plain recharge made later under that number would have been sent as a card debit.
    pub fn drop_orphans_of_earlier_builds(store: &dyn Store, engine: &engine::Engine) -> Result<usize, ClearingError> {
        const CHECKED: &[u8] = b"ki/notes-checked";
        let storage = |e: storage::StorageError| ClearingError::Storage(e.to_string());
        if store.get(CHECKED).map_err(storage)?.is_some() {
            return Ok(0);
        }
        let mut earlier: Vec<(Vec<u8>, u32, String, AccountId)> = Vec::new();
        store
            .scan(COLLECTION_PREFIX.as_bytes(), b"xc0", &mut |key, value| {
                let text = String::from_utf8_lossy(&key[COLLECTION_PREFIX.len()..]).into_owned();
                let parsed = text.split_once('/').and_then(|(platform, number)| Some((platform.parse::<u32>().ok()?, number.to_string())));
                if let (Some((platform, number)), Ok(note)) = (parsed, serde_json::from_slice::<CollectionNote>(value)) {
                    if note.card.is_none() {
                        earlier.push((key.to_vec(), platform, number, note.account));
                    }
                }
                true
            })
            .map_err(storage)?;
        let shard_count = engine.config().shard_count;
        let mut dropped = 0;
        for (key, platform, number, account) in earlier {
            let Some(number) = OutOrderNo::new(&number) else { continue };
            let held = engine::ledger::command::idempotency_key(platform, engine::ledger::command::Command::MONEY_IN_SCOPE, &number);
            // A refusal the number keeps (journal format 5) is no order either.
            if !engine.idempotency_record(account.shard(shard_count), held)?.is_some_and(|record| record.reply.is_ok()) {
                let mut end = key.clone();
                end.push(0);
                store.delete_range(&key, &end).map_err(storage)?;
                dropped += 1;
            }
        }
        store.write(&[(CHECKED, b"1")]).map_err(storage)?;
        Ok(dropped)
    }

    /// The notes of collections `numbers` of `platform`, in order: one read of the store.
    pub fn get_many(store: &dyn Store, platform: u32, numbers: &[String]) -> Result<Vec<Option<CollectionNote>>, ClearingError> {
        let keys: Vec<Vec<u8>> = numbers.iter().map(|number| Self::key(platform, number)).collect();
        let borrowed: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let values = store.get_many(&borrowed).map_err(|e| ClearingError::Storage(e.to_string()))?;
        values
            .into_iter()
            .zip(&keys)
            .map(|(value, key)| {
                value
                    .map(|value| serde_json::from_slice(&value))
                    .transpose()
                    .map_err(|error| ClearingError::Storage(format!("collection note {}: {error}", String::from_utf8_lossy(key))))
            })
            .collect()
    }

    /// The note of collection `number` of `platform`, if one was written.
    pub fn get(store: &dyn Store, platform: u32, number: &str) -> Result<Option<CollectionNote>, ClearingError> {
        let key = Self::key(platform, number);
        let Some(value) = store.get(&key).map_err(|e| ClearingError::Storage(e.to_string()))? else { return Ok(None) };
        serde_json::from_slice(&value).map(Some).map_err(|error| ClearingError::Storage(format!("collection note {}: {error}", String::from_utf8_lossy(&key))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::MemoryStore;

    fn note(card: u64, refused: bool) -> PayoutNote {
        PayoutNote {
            card,
            card_no: Some("6222020200112233445".into()),
            channel: Some(2),
            fee: 50,
            routing: None,
            arrival: Some(Arrival::Standard),
            account_type: Some(AccountType::Personal),
            tried: vec![2],
            refused,
            first: Some((2, 50)),
            amount: Some((10_000, 0)),
            paid_by_left: None,
            account: Some(5),
            holder_name: None,
        }
    }

    #[test]
    fn notes_are_read_back_from_the_store_and_a_refused_one_is_none() {
        let store = MemoryStore::new();
        PayoutBook::save(&store, 7, "w-1", &note(3, false)).unwrap();
        PayoutBook::save(&store, 7, "w-2", &note(4, true)).unwrap();
        PayoutBook::save(&store, 8, "w-1", &note(5, false)).unwrap();
        assert_eq!(PayoutBook::get(&store, 7, "w-1").unwrap(), Some(note(3, false)));
        assert_eq!(PayoutBook::get(&store, 7, "w-2").unwrap(), None, "refused: the number is routed anew");
        assert_eq!(PayoutBook::get(&store, 9, "w-1").unwrap(), None);
        let numbers = ["w-1".to_string(), "w-2".into(), "w-3".into()];
        assert_eq!(PayoutBook::get_many(&store, 8, &numbers).unwrap(), vec![Some(note(5, false)), None, None]);
        assert_eq!(PayoutBook::get_many(&store, 7, &numbers).unwrap(), vec![Some(note(3, false)), None, None]);
        // A note that does not decode is an error, never a payout routed anew.
        store.write(&[(b"x/7/w-1".as_slice(), b"{not json".as_slice())]).unwrap();
        assert!(matches!(PayoutBook::get(&store, 7, "w-1"), Err(ClearingError::Storage(message)) if message.contains("x/7/w-1")));
        assert!(PayoutBook::get_many(&store, 7, &numbers).is_err());
    }
}

/// Key prefix of the holds due (`xh/{order:020}`).
const HOLD_DUE_PREFIX: &str = "xh/";

/// A hold due on a payout that a channel it left said it paid (`PayoutNote::paid_by_left`) and
/// that is being failed for good: written before the failure is submitted, dropped once the
/// hold and its case are made. A stop between the failure and the hold (the failure durable,
/// the hold not) leaves it for the next start, which makes the hold (before session 62 nothing
/// did: the watchdog asks only about payouts still waiting, and a timeout's failure is never
/// said again by the bank).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldDue {
    /// The channel that said it paid (the hold's and case's).
    pub left: u16,
    /// The channel whose failure failed it for good.
    pub channel: u16,
}

/// The holds due, in the store alone (`xh/`, JSON).
pub struct HoldsDue;

impl HoldsDue {
    fn key(order: OrderId) -> Vec<u8> {
        format!("{HOLD_DUE_PREFIX}{:020}", order.0).into_bytes()
    }

    /// Writes the hold due on `order` durably.
    pub fn save(store: &dyn Store, order: OrderId, due: HoldDue) -> Result<(), ClearingError> {
        storage::records::put(store, &[(Self::key(order), &due)]).map_err(|e| ClearingError::Storage(e.to_string()))
    }

    /// Drops the hold due on `order`.
    pub fn forget(store: &dyn Store, order: OrderId) -> Result<(), ClearingError> {
        let key = Self::key(order);
        let mut end = key.clone();
        end.push(0);
        store.delete_range(&key, &end).map_err(|e| ClearingError::Storage(e.to_string()))
    }

    /// Every hold due, by order (few: each is one payout's failure in flight at a stop).
    pub fn all(store: &dyn Store) -> Result<Vec<(OrderId, HoldDue)>, ClearingError> {
        let mut found = Vec::new();
        store
            .scan(HOLD_DUE_PREFIX.as_bytes(), b"xh0", &mut |key, value| {
                let order = std::str::from_utf8(&key[HOLD_DUE_PREFIX.len()..]).ok().and_then(|text| text.parse::<u64>().ok());
                match (order, serde_json::from_slice::<HoldDue>(value)) {
                    (Some(order), Ok(due)) => found.push((OrderId(order), due)),
                    _ => tracing::error!("a hold due that cannot be read: {}", String::from_utf8_lossy(key)),
                }
                true
            })
            .map_err(|e| ClearingError::Storage(e.to_string()))?;
        Ok(found)
    }
}
