//! What clearing needs of a bank, as a trait: submit money in and out, ask about an order,
//! fetch a channel's statement of a day, read the reserve (master) account's balance. The bank
//! simulator (`banksim`) is one implementation; a real bank's adapter would be another. Clearing
//! talks to banks only through `BankChannel`.
//!
//! Verdicts come back asynchronously, the way banks send them: as signed callbacks to the
//! server (`POST /channels/{bank}/callback`), which hands them to the clearing actor.

pub mod statement;

use engine::ledger::types::OrderId;
use engine::money::{CurrencySpec, Minor};

pub use statement::{StatementError, StatementLine};

/// A channel's tariff: `fixed + ceil(amount × rate_bps / 10,000)`, clamped to `[min, max]`, in
/// minor units of the channel's currency. Rounding up means the channel's cost is never
/// under-charged by a minor unit; integer arithmetic throughout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tariff {
    pub fixed: Minor,
    pub rate_bps: Minor,
    pub min: Minor,
    pub max: Minor,
}

impl Tariff {
    /// The fee on `amount` (a non-negative amount; the result is never negative).
    pub fn fee(&self, amount: Minor) -> Minor {
        let rate = (amount.max(0) as i128 * self.rate_bps as i128 + 9_999) / 10_000;
        let raw = (self.fixed as i128 + rate).min(Minor::MAX as i128) as Minor;
        raw.clamp(self.min, self.max.max(self.min))
    }
}

/// How a simulated bank behaves on one channel (a real bank ignores it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Behaviour {
    /// Milliseconds before the bank answers.
    pub latency_ms: u64,
    /// Orders in a thousand the bank fails (fixed per order and channel).
    pub failure_per_mille: u16,
    /// Payouts in a thousand the bank never receives (no verdict ever comes).
    pub drop_per_mille: u16,
}

/// What a bank knows of one of our channels: its name, currency, tariff and (for a simulated
/// bank) behaviour. Clearing hands the bank every channel at start and after each change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelProfile {
    pub id: u16,
    pub name: String,
    pub currency: CurrencySpec,
    pub tariff: Tariff,
    pub behaviour: Behaviour,
}

/// What the bank is asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Collect `amount` for a pending recharge or direct payment through money-in `channel`.
    MoneyIn { order: OrderId, channel: u16, amount: Minor, currency: CurrencySpec },
    /// Collect `amount` from a member's card for a pending recharge (代收, collection on behalf).
    Collection { order: OrderId, channel: u16, amount: Minor, currency: CurrencySpec, card_no: String },
    /// Pay `amount` to `card_no` for a payout (withdrawal or 代付) through `channel`.
    MoneyOut { order: OrderId, channel: u16, amount: Minor, currency: CurrencySpec, card_no: String },
    /// Pay a verification amount to a card being bound (no order, no verdict); `reference`
    /// names the bind (`card-{id}`) on the card's statement line, since one card number can be
    /// bound many times (to other accounts, again after a lock).
    MicroDeposit { card_no: String, amount: Minor, currency: CurrencySpec, reference: String },
}

/// What the bank says when asked about a payout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BankStatus {
    /// The bank has no such order: it never arrived, so it is safe to send it elsewhere.
    Unknown,
    /// Received, not decided yet.
    Processing,
    /// Decided.
    Decided { succeeded: bool },
}

/// Why a bank could not answer.
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    #[error("the bank is unavailable: {0}")]
    Unavailable(String),
    #[error("the bank's records are unreadable: {0}")]
    Records(String),
}

/// A bank behind one or more of our channels.
pub trait BankChannel: Send + Sync + 'static {
    /// The channels as clearing has them now (names, tariffs, behaviour); called at start and
    /// after every change.
    fn channels_changed(&self, profiles: &[ChannelProfile]);

    /// Hands the bank a request; its verdict comes back later as a callback (money in and out).
    fn submit(&self, request: Request);

    /// The bank's answer to a status query about order `order` through `channel`: a payout, or
    /// (since session 60, at a start) a money-in order.
    fn query(&self, order: OrderId, channel: u16) -> BankStatus;

    /// Payout `order` is final on our side: the bank need not keep it for status queries.
    fn forget(&self, order: OrderId, channel: u16);

    /// A channel's statement of business day `day` (days since 1970-01-01, business-local).
    fn statement(&self, channel: u16, day: u32) -> Result<Vec<StatementLine>, BankError>;

    /// The reserve account's balance at the bank in `currency`, and how many movements make it.
    /// In `i128`: it sums every movement ever, which no per-order bound keeps within `i64` (as
    /// the ledger's system stripes).
    fn reserve_balance(&self, currency: &CurrencySpec) -> Result<(i128, usize), BankError>;

    /// A transfer into the reserve account from outside, as the operator read it on the bank's
    /// statement (an offline transfer): a simulated bank books it; a real one has it already.
    fn transfer_in(&self, currency: &CurrencySpec, bank_ref: &str, amount: Minor);
}

/// The reference of an order we hand a bank: our public order id (`ord_25`).
pub fn order_ref(order: OrderId) -> String {
    format!("ord_{}", order.0)
}

/// The order of a reference `order_ref` made (canonical decimal digits only).
pub fn parse_order_ref(text: &str) -> Option<OrderId> {
    let digits = text.strip_prefix("ord_")?;
    let canonical = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && (digits == "0" || !digits.starts_with('0'));
    canonical.then(|| digits.parse().ok().map(OrderId)).flatten()
}
