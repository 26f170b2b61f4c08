//! Commands: what a shard can be asked to do. Each is validated, then applied, by `ShardState::apply`.

use std::hash::{Hash, Hasher};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ledger::types::{AccountId, AccountStatus, AdjustmentSide, Leg, Legs, Limits, OrderId, RemoteCredit, SettlementRule, ShardId, Timestamp};
use crate::money::{CurrencyId, CurrencySpec, Minor};

/// The longest platform order number (API.md: 1–64 chars of `[A-Za-z0-9_-]`).
pub const OUT_ORDER_NO_BYTES_MAX: usize = 64;

/// A platform's own order number, stored inline so that commands need no heap for it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OutOrderNo {
    /// Never zero (a number has 1 to 64 characters), so `Option<OutOrderNo>` takes no byte more
    /// (an order holds one). Hashes as the `u8` it holds.
    len: std::num::NonZeroU8,
    bytes: [u8; OUT_ORDER_NO_BYTES_MAX],
}

impl OutOrderNo {
    /// Validates and stores `text`; `None` when it is empty, too long or has other characters.
    pub fn new(text: &str) -> Option<OutOrderNo> {
        let source = text.as_bytes();
        let allowed = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-';
        if source.is_empty() || source.len() > OUT_ORDER_NO_BYTES_MAX || !source.iter().all(allowed) {
            return None;
        }
        let len = std::num::NonZeroU8::new(source.len() as u8)?;
        let mut bytes = [0u8; OUT_ORDER_NO_BYTES_MAX];
        bytes[..source.len()].copy_from_slice(source);
        Some(OutOrderNo { len, bytes })
    }

    /// The number as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len.get())]).expect("validated as ASCII")
    }
}

impl std::fmt::Debug for OutOrderNo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl Serialize for OutOrderNo {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for OutOrderNo {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        OutOrderNo::new(&text).ok_or_else(|| serde::de::Error::custom("invalid out_order_no"))
    }
}

/// One command for a shard, with the tenant that sent it and its idempotency key.
///
/// Stored in the journal field by field in this order: changing the fields means bumping
/// `journal::JOURNAL_FORMAT_VERSION`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Envelope {
    /// The platform acting; 0 is the system operator, who may act on every account.
    pub platform: u32,
    /// The platform's order number; commands without one are not deduplicated.
    pub out_order_no: Option<OutOrderNo>,
    pub command: Command,
}

/// Everything a shard can be asked to do.
///
/// The journal stores a command by its variant's declaration index (bincode), not its name: only
/// append new variants at the end, never reorder or remove one. A change to the bytes of existing
/// commands (a variant moved, a field added, removed or reordered) means bumping
/// `journal::JOURNAL_FORMAT_VERSION`; `tests/journal_format.rs` fails until the golden record
/// holds every variant and matches.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Command {
    /// First command of every shard's journal: fixes its identity, currencies and business day.
    Genesis { shard: ShardId, shard_count: u16, currencies: Vec<CurrencySpec>, utc_offset_seconds: i32 },
    /// Opens a customer account (one per owner and currency within a platform).
    OpenAccount { owner: u64, currency: CurrencyId, limits: Limits },
    /// Sets an account's status (not `Closed`: that is `CloseAccount`).
    SetAccountStatus { account: AccountId, status: AccountStatus },
    /// Closes an account whose buckets are all zero.
    CloseAccount { account: AccountId },
    /// Money in from a channel, confirmed: the reserve stripe is debited, the account's settled credited.
    Recharge { account: AccountId, currency: CurrencyId, amount: Minor, channel: u16 },
    /// A balance payment (payees credited to `unsettled` at once) or a guarantee payment (held in escrow).
    Payment { payer: AccountId, guarantee: bool, currency: CurrencyId, amount: Minor, payees: Legs, splits: Legs },
    /// Releases escrow of a guarantee payment to its receivers; empty `releases` releases all that is held.
    Confirm { order: OrderId, releases: Legs },
    /// Returns unreleased escrow to the payer; `None` returns all of it.
    Cancel { order: OrderId, amount: Option<Minor> },
    /// Returns money a payee received from a payment to the payer. Runs on the payee's shard.
    Refund { payment: OrderId, payee: AccountId, amount: Minor },
    /// Holds part of an account's available funds.
    Freeze { account: AccountId, currency: CurrencyId, amount: Minor, reason: String, expires_at: Option<Timestamp> },
    /// Releases a freeze, in part or (with `None`) in full.
    ReleaseFreeze { order: OrderId, amount: Option<Minor> },
    /// Releases every freeze on this shard whose expiry has passed.
    ExpireFreezes,
    /// Reserves `amount + fee` from the account's settled funds for a payout through `channel`.
    Withdraw { account: AccountId, currency: CurrencyId, amount: Minor, fee: Minor, channel: u16 },
    /// The channel's verdict on a withdrawal: success pays out, failure returns the funds and the fee.
    CompleteWithdrawal { order: OrderId, succeeded: bool },
    /// Moves a platform's unsettled income of business days up to `through_day` into settled.
    Mature { through_day: u32 },
    /// A credit from another shard's outbox (exactly once, by sequence).
    ApplyCredit(RemoteCredit),
    /// Another shard has durably applied our credits to it up to `sequence`.
    Acknowledge { target: ShardId, sequence: u64 },
    /// A recharge sent to a channel: the order is `pending` and nothing moves until the channel confirms.
    RequestRecharge { account: AccountId, currency: CurrencyId, amount: Minor, channel: u16 },
    /// The channel's verdict on a pending recharge: success credits the account's settled bucket.
    CompleteRecharge { order: OrderId, succeeded: bool },
    /// Confirms in full every held guarantee payment created before `created_before` (shard-wide).
    AutoConfirm { created_before: Timestamp },
    /// Several payments from one payer, all accepted or none.
    BatchPayment { payer: AccountId, guarantee: bool, currency: CurrencyId, orders: Vec<BatchOrder> },
    /// A direct payment (直接支付): the payer pays through a channel, not from the balance. The
    /// order is `pending` until the channel's verdict (`CompleteRecharge`); then the money goes
    /// from the reserve straight to the receivers (balance) or into escrow (guarantee).
    RequestDirectPayment { payer: AccountId, guarantee: bool, currency: CurrencyId, amount: Minor, payees: Legs, splits: Legs, channel: u16 },
    /// A withdrawal whose channel failed goes out through another channel with its fee (routing's
    /// fallback); the fee difference moves between the account and payout-pending. `from` is the
    /// channel it leaves: a reroute from a channel the order is no longer on is refused
    /// (`ChannelChanged`), so two verdicts about one failure can never move it twice.
    RerouteWithdrawal { order: OrderId, from: u16, channel: u16, fee: Minor },
    /// Money that arrived at the bank (an offline transfer) matching no account: reserve debited,
    /// `shard`'s suspense stripe credited, for an operator's case.
    CreditSuspense { shard: ShardId, currency: CurrencyId, amount: Minor },
    /// `Mature` with the platform's settlement rule: commissions and service fees are charged
    /// on the income it matures (shard-wide, for the calling platform).
    Settle { through_day: u32, rule: Option<Box<SettlementRule>> },
    /// What `channel` charges (its tariff) for this shard's orders of business day `day`, in
    /// total so far: the part not yet booked moves from fee income to the reserve (the bank takes
    /// it from the reserve account). Booking the same total again books nothing.
    ChargeChannelFees { shard: ShardId, channel: u16, day: u32, currency: CurrencyId, total: Minor },
    /// The amount a bank pays to a card being bound, for its holder to read back: it leaves the
    /// reserve and is the operator's cost (out of fee income). Idempotent by the card's number.
    VerificationDeposit { shard: ShardId, currency: CurrencyId, amount: Minor },
    /// `AutoConfirm` in bounded steps, on one shard: examines at most `orders_max` (clamped to
    /// `AUTO_CONFIRM_ORDERS_MAX`) of the platform's open orders from local index `after` on,
    /// oldest first, and confirms the held guarantee payments among them created before
    /// `created_before`. The reply says how many and where the next step starts
    /// (`StepProgress`), so the nightly run never holds a shard for the whole history.
    AutoConfirmChunk { shard: ShardId, created_before: Timestamp, after: u32, orders_max: u32 },
    /// An operator's audited adjustment (four eyes): moves `amount` from `source` (a customer
    /// account's settled bucket, or a shard's suspense stripe) to `target`, opening an order of
    /// kind `Adjustment` that records the reason and both operators. Runs on the source's
    /// shard; a target on another shard is credited through the outbox like a payment's payee.
    Adjust { source: AdjustmentSide, target: AdjustmentSide, currency: CurrencyId, amount: Minor, reason: String, proposer: String, approver: String },
    /// Changes an account's per-order and daily caps (an operator raising or lowering a limit).
    SetLimits { account: AccountId, limits: Limits },
    /// The system takes what remains of a freeze of its own (platform 0's: an operator's case's
    /// hold) into the shard's suspense stripe: the operator decided the money is not the
    /// account's (a payout the bank paid after it failed). Platform 0 only; since session 59.
    CaptureFreeze { order: OrderId },
    /// A collection (代收): a pending recharge that debits a member's card, named by the card's
    /// record id (the gateway's `Card::id`, never its number: the journal is kept for good). It
    /// shares a recharge's order numbers and is applied as
    /// one (`RequestRecharge`'s order, `CompleteRecharge`'s verdict), but its content is its
    /// own: a plain recharge and a collection under one number conflict, as do two collections
    /// from different cards, and a start can tell a collection's order by its idempotency
    /// record. Since session 61 (before, a collection was a `RequestRecharge`).
    RequestCollection { account: AccountId, currency: CurrencyId, amount: Minor, channel: u16, card: u64 },
    /// `ExpireFreezes` in bounded steps, on one shard: releases at most `freezes_max` of the
    /// freezes whose expiry is at or before both `expired_before` and the batch's time, soonest
    /// first, stopping before a freeze of a `chunks_max + 1`th chunk of stored orders (bounds
    /// clamped to `STEP_COUNT_LIMIT` and `STEP_CHUNKS_LIMIT`: the command carries its bounds, so
    /// replay does what the step did whatever build replays it). The reply (`StepProgress`) says how many and whether
    /// more are due (`resume_at` is `Some(0)`: the released ones are gone from the list, so the
    /// next step starts at its head again). Since session 62: one `ExpireFreezes` released a
    /// shard's every expired freeze in one batch (a platform's million one-cent freezes of one
    /// expiry held the shard for the whole of them).
    ExpireFreezesChunk { shard: ShardId, expired_before: Timestamp, freezes_max: u32, chunks_max: u32 },
    /// `Settle` in bounded steps, on one shard: from local account index `after` on, examines at
    /// most `examined_max` account indices and matures the income due of at most `accounts_max`
    /// of them (both clamped to `STEP_COUNT_LIMIT`), with the rule's charges; the reply (`StepProgress`) says how many and where the next step
    /// starts. Each step writes its own commission rows (a run's rows per receiver are summed
    /// where read). Since session 62: one `Settle` matured a platform's every due account of a
    /// shard in one batch.
    SettleChunk { shard: ShardId, through_day: u32, rule: Option<Box<SettlementRule>>, after: u32, accounts_max: u32, examined_max: u32 },
    /// `AutoConfirmChunk` with bounds of its own: examines at most `orders_max` open orders and
    /// stops before an order of a `chunks_max + 1`th chunk of stored orders (clamped to
    /// `STEP_COUNT_LIMIT` and `STEP_CHUNKS_LIMIT`). The orders it examines may be out of memory,
    /// and 4,096 open orders one a chunk apart (a platform's freezes without expiry among its
    /// payments) made one `AutoConfirmChunk` read 4,096 chunks back inside its batch. Since
    /// session 62; the nightly run sends this one (`AutoConfirmChunk` stays for the journals
    /// that hold it).
    AutoConfirmStep { shard: ShardId, created_before: Timestamp, after: u32, orders_max: u32, chunks_max: u32 },
    /// `Cancel` of the named receivers' held parts: each leg returns that much of what that
    /// receiver still holds to the payer (a platform cancelling its own split while the
    /// merchant's part stays held). It shares `Cancel`'s order numbers. Since session 68 (helper
    /// 127: a partial `Cancel` always came off the first receivers).
    CancelLegs { order: OrderId, cancels: Legs },
}

/// The most open orders one `AutoConfirmChunk` examines. Part of the journal's format: replay
/// applies journaled steps with it, so it never changes.
pub const AUTO_CONFIRM_ORDERS_MAX: u32 = 4096;

/// The largest count bound a step command takes (`AutoConfirmStep::orders_max`,
/// `ExpireFreezesChunk::freezes_max`, `SettleChunk`'s `accounts_max` and `examined_max`): larger
/// ones are taken as this. Part of the journal's format (replay clamps with it), so it never
/// changes; the nightly run's own bounds are far below it (`settlement::StepBounds`).
pub const STEP_COUNT_LIMIT: u32 = 1 << 20;

/// The largest `chunks_max` a step command takes: the chunks of stored orders (4,096 orders
/// each, read back as one piece when out of memory) one step may touch, counted from the
/// orders' indices, so replay stops where the step stopped whatever is in memory then. Part of
/// the journal's format, so it never changes.
pub const STEP_CHUNKS_LIMIT: u32 = 1024;

/// What one step of a nightly command (`AutoConfirmChunk`, `AutoConfirmStep`,
/// `ExpireFreezesChunk`, `SettleChunk`)
/// did, packed into its reply's `id` (how many it confirmed, released or matured in the low 32
/// bits, the next step's `after` plus one in the high 32 bits, 0 when the shard is done).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepProgress {
    pub count: u32,
    pub resume_at: Option<u32>,
}

impl StepProgress {
    /// The reply `id` that carries this progress.
    pub fn to_reply_id(self) -> u64 {
        let resume = self.resume_at.map_or(0, |at| u64::from(at) + 1);
        (resume << 32) | u64::from(self.count)
    }

    /// The progress a step's reply carries.
    pub fn of_reply_id(id: u64) -> StepProgress {
        let resume = (id >> 32) as u32;
        StepProgress { count: id as u32, resume_at: resume.checked_sub(1) }
    }
}

/// The most orders one batch payment may carry.
pub const BATCH_ORDERS_MAX: usize = 1000;

/// One order of a batch payment, with its own order number.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BatchOrder {
    pub out_order_no: OutOrderNo,
    pub amount: Minor,
    pub payees: Legs,
    pub splits: Legs,
}

impl Command {
    /// At most how many credits to other shards applying this command on `shard` (of
    /// `shard_count`) sends: a payment's receivers elsewhere (of every order of a batch), a
    /// release's, one for a refund, a cancel or an adjustment. What a shard counts before it
    /// takes a request, so that one batch cannot take the outbox far past its limit (a
    /// platform's batch payments of 1,000 orders of 32 receivers each made 32,000 credits a
    /// command, and a batch of them millions; helper 101, session 63). The nightly system
    /// commands (maturing with commissions) count 0: the platforms cannot send them.
    pub fn remote_credits_at_most(&self, shard: ShardId, shard_count: u16) -> usize {
        let elsewhere = |legs: &Legs| legs.iter().filter(|leg| leg.account.shard(shard_count) != shard).count();
        match self {
            Command::Payment { payees, splits, .. } | Command::RequestDirectPayment { payees, splits, .. } => elsewhere(payees) + elsewhere(splits),
            Command::BatchPayment { orders, .. } => orders.iter().map(|order| elsewhere(&order.payees) + elsewhere(&order.splits)).sum(),
            // All that is held goes to every receiver: at most all legs of a payment.
            Command::Confirm { releases, .. } if releases.is_empty() => 2 * crate::ledger::types::LEGS_MAX,
            Command::Confirm { releases, .. } => elsewhere(releases),
            Command::Refund { .. } | Command::Cancel { .. } | Command::CancelLegs { .. } | Command::Adjust { .. } => 1,
            // A direct payment's completion pays its receivers (helper 106).
            Command::CompleteRecharge { succeeded: true, .. } => 2 * crate::ledger::types::LEGS_MAX,
            _ => 0,
        }
    }

    /// A stable number per command kind; idempotency keys are scoped by it.
    pub fn kind_code(&self) -> u8 {
        match self {
            Command::Genesis { .. } => 0,
            Command::OpenAccount { .. } => 1,
            Command::SetAccountStatus { .. } => 2,
            Command::CloseAccount { .. } => 3,
            Command::Recharge { .. } => 4,
            Command::Payment { .. } => 5,
            Command::Confirm { .. } => 6,
            Command::Cancel { .. } => 7,
            Command::Refund { .. } => 8,
            Command::Freeze { .. } => 9,
            Command::ReleaseFreeze { .. } => 10,
            Command::ExpireFreezes => 11,
            Command::Withdraw { .. } => 12,
            Command::CompleteWithdrawal { .. } => 13,
            Command::Mature { .. } => 14,
            Command::ApplyCredit(_) => 15,
            Command::Acknowledge { .. } => 16,
            Command::RequestRecharge { .. } => 17,
            Command::CompleteRecharge { .. } => 18,
            Command::AutoConfirm { .. } => 19,
            Command::BatchPayment { .. } => 20,
            Command::RequestDirectPayment { .. } => 21,
            Command::RerouteWithdrawal { .. } => 22,
            Command::CreditSuspense { .. } => 23,
            Command::Settle { .. } => 24,
            Command::ChargeChannelFees { .. } => 25,
            Command::VerificationDeposit { .. } => 26,
            Command::AutoConfirmChunk { .. } => 27,
            Command::Adjust { .. } => 28,
            Command::SetLimits { .. } => 29,
            Command::CaptureFreeze { .. } => 30,
            Command::RequestCollection { .. } => 31,
            Command::ExpireFreezesChunk { .. } => 32,
            Command::SettleChunk { .. } => 33,
            Command::AutoConfirmStep { .. } => 34,
            Command::CancelLegs { .. } => 35,
        }
    }

    /// The scope of payment order numbers: single payments, direct payments and each order of
    /// a batch payment share it (one `out_order_no` names one payment, however it is made).
    pub const PAYMENT_SCOPE: u8 = 5;

    /// The scope of money-in order numbers: a recharge and a collection share it (one
    /// `out_order_no` names one money-in order, whichever endpoint took it).
    pub const MONEY_IN_SCOPE: u8 = 17;

    /// The scope of cancellations' order numbers: a cancel by amount and one by receiver share
    /// it (one `out_order_no` names one cancellation).
    pub const CANCEL_SCOPE: u8 = 7;

    /// The kind that scopes this command's order numbers: a direct payment shares the numbers
    /// of payments (one `out_order_no` names one payment, however it is funded).
    pub fn idempotency_scope(&self) -> u8 {
        match self {
            Command::RequestDirectPayment { .. } => Command::PAYMENT_SCOPE,
            Command::RequestCollection { .. } => Command::MONEY_IN_SCOPE,
            Command::CancelLegs { .. } => Command::CANCEL_SCOPE,
            other => other.kind_code(),
        }
    }

    /// Every kind's name, by `kind_code` (for metrics and reports). A kind code past its end
    /// stopped the shard that counted it (`shard::outcome_cell`): the journal's format test
    /// checks every variant's code against it.
    pub const KIND_NAMES: [&'static str; 36] = [
        "genesis",
        "open_account",
        "set_account_status",
        "close_account",
        "recharge",
        "payment",
        "confirm",
        "cancel",
        "refund",
        "freeze",
        "release_freeze",
        "expire_freezes",
        "withdraw",
        "complete_withdrawal",
        "mature",
        "apply_credit",
        "acknowledge",
        "request_recharge",
        "complete_recharge",
        "auto_confirm",
        "batch_payment",
        "direct_payment",
        "reroute_withdrawal",
        "credit_suspense",
        "settle",
        "charge_channel_fees",
        "verification_deposit",
        "auto_confirm_chunk",
        "adjust",
        "set_limits",
        "capture_freeze",
        "request_collection",
        "expire_freezes_chunk",
        "settle_chunk",
        "auto_confirm_step",
        "cancel_legs",
    ];

    /// The account whose funds this command debits (or which it concerns): decides the shard.
    /// `None` for commands addressed by order id or to a whole shard.
    pub fn debited_account(&self) -> Option<AccountId> {
        match self {
            Command::SetAccountStatus { account, .. }
            | Command::CloseAccount { account }
            | Command::Recharge { account, .. }
            | Command::RequestRecharge { account, .. }
            | Command::RequestCollection { account, .. }
            | Command::Freeze { account, .. }
            | Command::Withdraw { account, .. }
            | Command::SetLimits { account, .. }
            | Command::Adjust { source: AdjustmentSide::Account(account), .. } => Some(*account),
            Command::Payment { payer, .. } | Command::BatchPayment { payer, .. } | Command::RequestDirectPayment { payer, .. } => Some(*payer),
            Command::Refund { payee, .. } => Some(*payee),
            _ => None,
        }
    }

    /// The order this command acts on, for commands addressed by order.
    pub fn target_order(&self) -> Option<OrderId> {
        match self {
            Command::Confirm { order, .. }
            | Command::Cancel { order, .. }
            | Command::CancelLegs { order, .. }
            | Command::ReleaseFreeze { order, .. }
            | Command::CaptureFreeze { order }
            | Command::CompleteWithdrawal { order, .. }
            | Command::CompleteRecharge { order, .. }
            | Command::RerouteWithdrawal { order, .. } => Some(*order),
            _ => None,
        }
    }
}

/// 128-bit key of (platform, command kind, out_order_no): wide enough that collisions do not happen.
///
/// XXH3-128 of the platform (little-endian), the kind and the number's text. Keys are stored
/// (cold rows, the cold-key filter), so these bytes never change; `keyhash` hashes them where
/// they lie instead of copying them into a buffer first.
pub fn idempotency_key(platform: u32, kind: u8, out_order_no: &OutOrderNo) -> u128 {
    let prefix = u64::from(platform) | u64::from(kind) << 32;
    super::keyhash::xxh3_128_prefixed(prefix, &out_order_no.bytes, usize::from(out_order_no.len.get()))
}

/// The idempotency key of `envelope`'s own order number, if it has one.
pub fn own_key(envelope: &Envelope) -> Option<u128> {
    envelope.out_order_no.as_ref().map(|number| idempotency_key(envelope.platform, envelope.command.idempotency_scope(), number))
}

/// A fingerprint of a command's content, to tell a replay from a conflicting reuse of a key:
/// XXH3-64 of the bytes its derived `Hash` writes. Stored with idempotency records (cold rows,
/// checkpoints), so those bytes never change. A payment of up to `PAYMENT_FAST_LEGS` legs is
/// hashed from its fields (`payment_content_hash`: the same value).
pub fn content_hash(command: &Command) -> u64 {
    #[cfg(target_endian = "little")]
    if let Command::Payment { payer, guarantee, currency, amount, payees, splits } = command {
        if let Some(hash) = payment_content_hash(*payer, *guarantee, *currency, *amount, payees, splits) {
            return hash;
        }
    }
    let mut hasher = BufferedXxh3::default();
    command.hash(&mut hasher);
    hasher.finish()
}

/// The legs (payees and splits) a payment's content hash takes from its fields: its bytes are
/// then at most 128 (42 and 16 a leg), all that `keyhash::xxh3_64_17to128` covers.
const PAYMENT_FAST_LEGS: usize = 5;

/// `Payment`'s place among `Command`'s variants: the discriminant its derived `Hash` writes
/// first (as an `isize`).
const PAYMENT_DISCRIMINANT: u64 = 5;

/// `content_hash` of a payment, computed from its fields where `BufferedXxh3` copies the bytes
/// `Hash` writes into a buffer and hashes that. Those bytes are the variant (8), the payer (8),
/// the guarantee and currency (a byte each), then eight-byte values: amount, payees' count,
/// each payee's account and amount, splits' count, each split's. Reading back a buffer just
/// written cost a sixth of a payment's apply in criterion `apply`: a read that spans several
/// recent stores (the two single bytes shift every later value off the eight-byte grid) cannot
/// take their data and waits for them to reach the cache. Here the hash asks for its words and
/// gets them from registers. Bit for bit the derived hash (the tests compare them on payments of
/// every leg count); `None` past `PAYMENT_FAST_LEGS` legs.
#[cfg(target_endian = "little")]
#[inline]
fn payment_content_hash(payer: AccountId, guarantee: bool, currency: CurrencyId, amount: Minor, payees: &[Leg], splits: &[Leg]) -> Option<u64> {
    // Without legs (refused by `apply` and by the router, but hashed first) the bytes are 42 and
    // the hash reads at 10, neither a word nor a value: the buffer takes it.
    if payees.is_empty() && splits.is_empty() || payees.len() + splits.len() > PAYMENT_FAST_LEGS {
        return None;
    }
    // The eight-byte values from byte 18 on, value `k` at `18 + 8k`, and one zero past them.
    let mut values = [0u64; 4 + 2 * PAYMENT_FAST_LEGS];
    let mut count = 0;
    let mut push = |value: u64| {
        values[count] = value;
        count += 1;
    };
    push(amount as u64);
    push(payees.len() as u64);
    for leg in payees {
        push(leg.account.0);
        push(leg.amount as u64);
    }
    push(splits.len() as u64);
    for leg in splits {
        push(leg.account.0);
        push(leg.amount as u64);
    }
    // The input's eight-byte words: the variant, the payer, then from byte 16 the last two bytes
    // of each value (the guarantee and currency bytes before the first) and the first six of
    // the next. The hash reads these words, or (at `len - 16`, `len - 8` and the like: 2 past a
    // word, since the input is 18 bytes and values of eight) the values themselves.
    let mut words = [0u64; 3 + 3 + 2 * PAYMENT_FAST_LEGS];
    words[0] = PAYMENT_DISCRIMINANT;
    words[1] = payer.0;
    let mut before = u64::from(guarantee) | u64::from(currency.0) << 8;
    for (word, value) in words[2..].iter_mut().zip(&values[..=count]) {
        *word = before | value << 16;
        before = value >> 48;
    }
    let read64 = |offset: usize| {
        debug_assert!(offset.is_multiple_of(8) || (offset >= 18 && offset % 8 == 2), "the hash reads words or values");
        if offset.is_multiple_of(8) {
            words[offset / 8]
        } else {
            values[(offset - 18) / 8]
        }
    };
    Some(super::keyhash::xxh3_64_17to128(18 + 8 * count, read64))
}

/// XXH3 over the bytes a `Hash` impl writes, gathered in a stack buffer and hashed in one shot
/// (the streaming hasher costs more per small write than the hashing itself). Commands that
/// write more than the buffer holds continue in the streaming hasher.
struct BufferedXxh3 {
    buffer: [u8; 256],
    length: usize,
    overflow: Option<Box<xxhash_rust::xxh3::Xxh3>>,
}

impl Default for BufferedXxh3 {
    fn default() -> Self {
        BufferedXxh3 { buffer: [0; 256], length: 0, overflow: None }
    }
}

impl BufferedXxh3 {
    /// Bytes past the buffer's room, or after it overflowed: the streaming hasher.
    #[cold]
    fn spill(&mut self, bytes: &[u8]) {
        let streaming = self.overflow.get_or_insert_with(|| {
            let mut streaming = Box::new(xxhash_rust::xxh3::Xxh3::new());
            streaming.update(&self.buffer[..self.length]);
            streaming
        });
        streaming.update(bytes);
    }
}

impl Hasher for BufferedXxh3 {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        match self.buffer.get_mut(self.length..self.length + bytes.len()) {
            Some(room) if self.overflow.is_none() => {
                room.copy_from_slice(bytes);
                self.length += bytes.len();
            }
            _ => self.spill(bytes),
        }
    }

    fn finish(&self) -> u64 {
        match &self.overflow {
            Some(streaming) => streaming.digest(),
            None => xxhash_rust::xxh3::xxh3_64(&self.buffer[..self.length]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::types::{AccountId, Leg};
    use crate::money::CurrencyId;

    /// What `content_hash` gave before payments were hashed from their fields: the bytes the
    /// derived `Hash` writes, through the buffer.
    fn derived_content_hash(command: &Command) -> u64 {
        let mut hasher = BufferedXxh3::default();
        command.hash(&mut hasher);
        hasher.finish()
    }

    /// Stored content hashes depend on it: a payment's hash from its fields is the derived one,
    /// at every count of payees and splits (past `PAYMENT_FAST_LEGS` through the buffer), for
    /// values at their extremes too.
    #[test]
    fn a_payments_content_hash_from_its_fields_is_the_derived_one() {
        let mut values = crate::ledger::TestValues::seeded(0x5EED_0000_0000_0001);
        let mut next = || values.next();
        let mut compared = 0;
        for legs in 0..=LEGS_MAX_FOR_TEST {
            for payees in 0..=legs {
                for round in 0..40u64 {
                    // Random values, values at the top and bottom, and random ones of every width.
                    let values: Vec<u64> = (0..200u64)
                        .map(|index| match round % 4 {
                            0 => next(),
                            1 => u64::MAX - index,
                            2 => index,
                            _ => next() >> (next() % 64),
                        })
                        .collect();
                    let leg = |index: usize| Leg { account: AccountId(values[index]), amount: values[index + 1] as Minor };
                    let command = Command::Payment {
                        payer: AccountId(values[1]),
                        guarantee: round % 2 == 1,
                        currency: CurrencyId(values[2] as u8),
                        amount: values[3] as Minor,
                        payees: (0..payees).map(|i| leg(10 + 2 * i)).collect(),
                        splits: (0..legs - payees).map(|i| leg(100 + 2 * i)).collect(),
                    };
                    assert_eq!(content_hash(&command), derived_content_hash(&command), "{payees} payees of {legs} legs: {command:?}");
                    compared += 1;
                }
            }
        }
        assert!(compared > 1000);
        // Other commands go through the buffer as before.
        let recharge = Command::Recharge { account: AccountId(7), currency: CurrencyId(0), amount: 100, channel: 2 };
        assert_eq!(content_hash(&recharge), derived_content_hash(&recharge));
        // Pinned, both paths: what session 45's code gave for these (a change to `Command`'s
        // variants or fields would change both the same way, and the records of old orders).
        let leg = |account: u64, amount: Minor| Leg { account: AccountId(account), amount };
        let payment = Command::Payment {
            payer: AccountId(3),
            guarantee: false,
            currency: CurrencyId(0),
            amount: 1_500,
            payees: [leg(5, 1_000)].into_iter().collect(),
            splits: [leg(9, 500)].into_iter().collect(),
        };
        assert_eq!((content_hash(&payment), derived_content_hash(&payment)), (PINNED_PAYMENT, PINNED_PAYMENT));
        assert_eq!(content_hash(&recharge), PINNED_RECHARGE);
    }

    const PINNED_PAYMENT: u64 = 8_226_014_586_944_156_537;
    const PINNED_RECHARGE: u64 = 14_381_012_837_287_605_587;

    /// Past the fast path's five legs, to see the buffer take over.
    const LEGS_MAX_FOR_TEST: usize = PAYMENT_FAST_LEGS + 3;

    /// Content hashes are stored with idempotency records: the number's `Hash` must write what
    /// it wrote when its length was a plain `u8`.
    #[test]
    fn an_order_number_hashes_as_its_length_byte_and_its_bytes() {
        for text in ["a", "order-42", &"x".repeat(OUT_ORDER_NO_BYTES_MAX)] {
            let number = OutOrderNo::new(text).unwrap();
            let mut bytes = [0u8; OUT_ORDER_NO_BYTES_MAX];
            bytes[..text.len()].copy_from_slice(text.as_bytes());
            let (mut now, mut before) = (BufferedXxh3::default(), BufferedXxh3::default());
            number.hash(&mut now);
            (text.len() as u8).hash(&mut before);
            bytes.hash(&mut before);
            assert_eq!(now.finish(), before.finish(), "{text}");
        }
        assert!(OutOrderNo::new("").is_none());
    }

    #[test]
    fn idempotency_key_hashes_platform_kind_and_the_text_only() {
        // The definition the stored keys were made with: XXH3-128 of the platform (LE), the kind
        // and the text, whatever the number's length (the inline array's zeros are not hashed).
        let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-";
        for len in 1..=OUT_ORDER_NO_BYTES_MAX {
            let text = std::str::from_utf8(&alphabet[..len]).unwrap();
            let number = OutOrderNo::new(text).unwrap();
            for (platform, kind) in [(0u32, 0u8), (7, 3), (u32::MAX, 255)] {
                let mut bytes = platform.to_le_bytes().to_vec();
                bytes.push(kind);
                bytes.extend_from_slice(text.as_bytes());
                assert_eq!(idempotency_key(platform, kind, &number), xxhash_rust::xxh3::xxh3_128(&bytes), "{len} {platform} {kind}");
            }
        }
    }

    #[test]
    fn content_hash_tells_commands_apart_and_is_stable() {
        let payment = |amount| Command::Payment {
            payer: AccountId(1),
            guarantee: false,
            currency: CurrencyId(0),
            amount,
            payees: [Leg { account: AccountId(2), amount }].into_iter().collect(),
            splits: Default::default(),
        };
        assert_eq!(content_hash(&payment(5)), content_hash(&payment(5)));
        assert_ne!(content_hash(&payment(5)), content_hash(&payment(6)));
        // A command larger than the stack buffer takes the streaming path, with the same result
        // for the same content and a different one for other content.
        let long = |reason: &str| Command::Freeze { account: AccountId(1), currency: CurrencyId(0), amount: 1, reason: reason.to_string(), expires_at: None };
        assert_eq!(content_hash(&long(&"a".repeat(300))), content_hash(&long(&"a".repeat(300))));
        assert_ne!(content_hash(&long(&"a".repeat(300))), content_hash(&long(&"b".repeat(300))));
    }

    /// Content hashes are stored with idempotency records, so the buffered hasher's typed writes
    /// must hash exactly the bytes `Hasher`'s defaults pass to `write`: XXH3-64 of that stream,
    /// below, at and past the buffer's size.
    #[test]
    fn content_hash_is_xxh3_of_the_bytes_hash_writes() {
        #[derive(Default)]
        struct Bytes(Vec<u8>);
        impl Hasher for Bytes {
            fn write(&mut self, bytes: &[u8]) {
                self.0.extend_from_slice(bytes);
            }
            fn finish(&self) -> u64 {
                0
            }
        }
        let freeze = |reason: String| Command::Freeze { account: AccountId(7), currency: CurrencyId(1), amount: 123_456, reason, expires_at: Some(99) };
        let payment = Command::Payment {
            payer: AccountId(1),
            guarantee: true,
            currency: CurrencyId(0),
            amount: 500,
            payees: (0..40).map(|n| Leg { account: AccountId(n), amount: 12 }).collect(),
            splits: Default::default(),
        };
        let mut commands: Vec<Command> = (0..300).step_by(7).map(|n| freeze("r".repeat(n))).collect();
        commands.push(payment);
        for command in commands {
            let mut bytes = Bytes::default();
            command.hash(&mut bytes);
            assert_eq!(content_hash(&command), xxhash_rust::xxh3::xxh3_64(&bytes.0), "{} bytes", bytes.0.len());
        }
    }

    #[test]
    fn out_order_numbers_table() {
        let cases: &[(&str, bool)] = &[("A-1_b", true), ("", false), ("has space", false), ("ünï", false), (&"x".repeat(64), true), (&"x".repeat(65), false)];
        for (text, valid) in cases {
            assert_eq!(OutOrderNo::new(text).is_some(), *valid, "{text:?}");
        }
    }
}
