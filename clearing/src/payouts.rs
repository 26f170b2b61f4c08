//! The payout book: what clearing notes of each payout (withdrawal or 代付) before the engine
//! sees it: its card, the routing decision, the channels tried. Noted durably before the order
//! is submitted, so a replay reuses the decision and a restart resends the payout to the same
//! card through the same channel.

use std::collections::HashMap;

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
    /// The engine refused the order: its number is free again, and the next request with it is
    /// routed anew (limits, fee and daily caps as they are then).
    #[serde(default)]
    pub refused: bool,
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

/// The notes, in memory and in the store.
#[derive(Debug, Default)]
pub(crate) struct PayoutBook {
    notes: HashMap<(u32, String), PayoutNote>,
}

fn note_key(platform: u32, number: &str) -> Vec<u8> {
    format!("{NOTE_PREFIX}{platform}/{number}").into_bytes()
}

impl PayoutBook {
    /// Loads every note.
    pub(crate) fn load(store: &dyn Store) -> Result<PayoutBook, ClearingError> {
        let mut notes = HashMap::new();
        for (rest, note) in storage::records::load_all::<PayoutNote>(store, NOTE_PREFIX.as_bytes()).map_err(ClearingError::Storage)? {
            let rest = String::from_utf8_lossy(&rest).into_owned();
            if let Some((platform, number)) = rest.split_once('/') {
                if let Ok(platform) = platform.parse() {
                    notes.insert((platform, number.to_string()), note);
                }
            }
        }
        Ok(PayoutBook { notes })
    }

    /// The note of a payout, unless the engine refused it.
    pub(crate) fn get(&self, platform: u32, number: &str) -> Option<&PayoutNote> {
        self.notes.get(&(platform, number.to_string())).filter(|n| !n.refused)
    }

    /// Writes a note durably, then keeps it.
    pub(crate) fn save(&mut self, store: &dyn Store, platform: u32, number: &str, note: PayoutNote) -> Result<(), ClearingError> {
        storage::records::put(store, &[(note_key(platform, number), &note)]).map_err(|e| ClearingError::Storage(e.to_string()))?;
        self.notes.insert((platform, number.to_string()), note);
        Ok(())
    }
}
