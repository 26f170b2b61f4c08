//! The ledger's data: ids, accounts, orders, journal lines and the messages between shards.

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::ledger::command::OutOrderNo;
use crate::money::{CurrencyId, Minor};
use crate::result::ResultCode;

/// Microseconds since the Unix epoch, injected by the shard loop (never read inside the core).
pub type Timestamp = u64;

/// A shard number, `0..shard_count`.
pub type ShardId = u16;

/// The most payees plus splits one payment may carry.
pub const LEGS_MAX: usize = 32;

/// The longest freeze or adjustment reason, in bytes of UTF-8. A rule of the engine: replaying
/// a journal must refuse exactly what was refused when it was written, so this never loosens
/// (nor moves to characters) without a journal format that says which rule a command met.
pub const REASON_BYTES_MAX: usize = 256;
/// The longest payment description, in characters (a gateway rule; the engine does not check it).
pub const DESCRIPTION_CHARS_MAX: usize = 256;

/// The longest operator name an adjustment records (proposer, approver), in bytes.
pub const OPERATOR_NAME_BYTES_MAX: usize = 64;

/// Ids that name their owning shard: `id = local_index * shard_count + shard`.
macro_rules! sharded_id {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub u64);

        impl $name {
            /// Builds the id of the `local_index`-th object of `shard`.
            pub fn compose(shard: ShardId, local_index: u64, shard_count: u16) -> $name {
                $name(local_index * shard_count as u64 + shard as u64)
            }
            /// The shard that owns this id.
            #[inline]
            pub fn shard(self, shard_count: u16) -> ShardId {
                // A mask for a power of two (what deployments run): a division takes tens of
                // cycles, and a payment asks several times.
                if shard_count.is_power_of_two() {
                    (self.0 & (shard_count as u64 - 1)) as ShardId
                } else {
                    (self.0 % shard_count as u64) as ShardId
                }
            }
            /// The index of this object within its shard.
            #[inline]
            pub fn local_index(self, shard_count: u16) -> u64 {
                if shard_count.is_power_of_two() {
                    self.0 >> shard_count.trailing_zeros()
                } else {
                    self.0 / shard_count as u64
                }
            }
        }

        impl From<$name> for u64 {
            fn from(id: $name) -> u64 {
                id.0
            }
        }
    };
}

sharded_id!(AccountId, "An account; the shard that owns it is encoded in the id.");
sharded_id!(OrderId, "An order; it lives on the shard that owns the funds it debited.");

/// The three balance buckets of an account (DESIGN.md, money model).
///
/// The journal stores it by variant index: append new variants only at the end, never reorder or
/// remove one; a change to its encoding means bumping `journal::JOURNAL_FORMAT_VERSION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Bucket {
    /// Available and withdrawable.
    Settled,
    /// Income not yet past its settlement cycle: spendable, not withdrawable.
    Unsettled,
    /// Held by freeze orders.
    Frozen,
}

/// Whether an account may be debited and credited.
///
/// The journal stores it by variant index: append new variants only at the end, never reorder or
/// remove one; a change to its encoding means bumping `journal::JOURNAL_FORMAT_VERSION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AccountStatus {
    Normal,
    DebitBlocked,
    CreditBlocked,
    Closed,
}

impl AccountStatus {
    /// Stable lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            AccountStatus::Normal => "normal",
            AccountStatus::DebitBlocked => "debit_blocked",
            AccountStatus::CreditBlocked => "credit_blocked",
            AccountStatus::Closed => "closed",
        }
    }
}

/// The internal accounts every shard keeps one stripe of, per currency (DESIGN.md invariant 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SystemRole {
    /// Reserve at the bank (备付金): money that came in through channels. Debit-normal.
    Reserve,
    /// Cross-shard clearing: credits on their way to another shard.
    InTransit,
    /// Guarantee (escrow) payments held for payees.
    Escrow,
    /// Withdrawals sent to a channel and not yet confirmed.
    PayoutPending,
    /// Fees charged to customers.
    FeeIncome,
    /// Credits that could not land (closed account, unknown payee): for an operator.
    Suspense,
}

impl SystemRole {
    /// Every role, in the order genesis opens them.
    pub const ALL: [SystemRole; 6] =
        [SystemRole::Reserve, SystemRole::InTransit, SystemRole::Escrow, SystemRole::PayoutPending, SystemRole::FeeIncome, SystemRole::Suspense];

    /// Stable name, also the key in the chart of accounts configuration.
    pub fn name(self) -> &'static str {
        match self {
            SystemRole::Reserve => "reserve",
            SystemRole::InTransit => "in_transit",
            SystemRole::Escrow => "escrow",
            SystemRole::PayoutPending => "payout_pending",
            SystemRole::FeeIncome => "fee_income",
            SystemRole::Suspense => "suspense",
        }
    }

    /// Position in `ALL`.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Per-order and daily caps in minor units; `Minor::MAX` means no cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Limits {
    pub payment_per_order_max: Minor,
    pub payment_daily_max: Minor,
    pub withdrawal_per_order_max: Minor,
    pub withdrawal_daily_max: Minor,
}

impl Limits {
    /// No caps at all.
    pub const NONE: Limits =
        Limits { payment_per_order_max: Minor::MAX, payment_daily_max: Minor::MAX, withdrawal_per_order_max: Minor::MAX, withdrawal_daily_max: Minor::MAX };
}

/// What an account is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AccountKind {
    /// A platform's member or merchant, or the platform itself.
    Customer,
    /// One stripe of an internal account.
    System(SystemRole),
}

/// One account's state. Balances are signed "credits minus debits": customer buckets never go
/// below zero; system accounts may (the reserve is debit-normal).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub platform: u32,
    pub owner: u64,
    pub currency: CurrencyId,
    pub kind: AccountKind,
    pub status: AccountStatus,
    pub settled: Minor,
    pub unsettled: Minor,
    pub frozen: Minor,
    pub limits: Limits,
    /// The business day the two counters below belong to.
    pub usage_day: u32,
    pub paid_today: Minor,
    pub withdrawn_today: Minor,
    /// Local index of the newest order of this account (`NO_ORDER_INDEX`: none yet); with
    /// `ShardState::previous_order_of_account` it chains the account's orders, newest first.
    pub last_order: u32,
}

impl Account {
    /// Spendable by payments: settled plus unsettled.
    pub fn available(&self) -> Minor {
        self.settled + self.unsettled
    }

    /// The balance of one bucket.
    pub fn bucket(&self, bucket: Bucket) -> Minor {
        match bucket {
            Bucket::Settled => self.settled,
            Bucket::Unsettled => self.unsettled,
            Bucket::Frozen => self.frozen,
        }
    }

    /// The sum of all buckets.
    pub fn total(&self) -> Minor {
        self.settled + self.unsettled + self.frozen
    }
}

/// One journal line: `amount` is positive for a credit and negative for a debit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    pub account: AccountId,
    pub bucket: Bucket,
    pub amount: Minor,
}

/// What a journal entry records.
///
/// The journal stores it by variant index: append new variants only at the end, never reorder or
/// remove one; a change to its encoding means bumping `journal::JOURNAL_FORMAT_VERSION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    Recharge,
    Payment,
    GuaranteeHold,
    GuaranteeRelease,
    GuaranteeCancel,
    Refund,
    Freeze,
    FreezeRelease,
    WithdrawalReserve,
    WithdrawalSuccess,
    WithdrawalFailure,
    Mature,
    RemoteCredit,
    /// A withdrawal moved to another channel: the fee difference between the account and the
    /// payout-pending account.
    WithdrawalReroute,
    /// Money that arrived at the bank and matched no account, held in suspense for an operator.
    SuspenseIn,
    /// A merchant's commission on matured income, split among the platform's rule receivers.
    Commission,
    /// The operator's service fee on matured income.
    ServiceFee,
    /// A channel's charges for a day's orders, taken by the bank from the reserve.
    ChannelFee,
    /// A card-verification micro-deposit paid out of the reserve at the operator's cost.
    VerificationDeposit,
    /// An operator's audited adjustment between customer accounts and suspense.
    Adjustment,
}

/// The order id of entries that belong to no order (settlement maturing).
pub const NO_ORDER: OrderId = OrderId(u64::MAX);

impl EntryKind {
    /// The kind's name in the API (an account's entries) and in operators' cases.
    pub fn name(self) -> &'static str {
        let kind = self;
        match kind {
            EntryKind::Recharge => "recharge",
            EntryKind::Payment => "payment",
            EntryKind::GuaranteeHold => "guarantee_hold",
            EntryKind::GuaranteeRelease => "guarantee_release",
            EntryKind::GuaranteeCancel => "guarantee_cancel",
            EntryKind::Refund => "refund",
            EntryKind::Freeze => "freeze",
            EntryKind::FreezeRelease => "freeze_release",
            EntryKind::WithdrawalReserve => "withdrawal",
            EntryKind::WithdrawalSuccess => "withdrawal_success",
            EntryKind::WithdrawalFailure => "withdrawal_failure",
            EntryKind::Mature => "settlement",
            EntryKind::RemoteCredit => "transfer_in",
            EntryKind::WithdrawalReroute => "withdrawal_reroute",
            EntryKind::SuspenseIn => "suspense_in",
            EntryKind::Commission => "commission",
            EntryKind::ServiceFee => "service_fee",
            EntryKind::ChannelFee => "channel_fee",
            EntryKind::VerificationDeposit => "verification_deposit",
            EntryKind::Adjustment => "adjustment",
        }
    }
}

/// "No order": the end of an account's chain of orders (`Account::last_order`).
pub const NO_ORDER_INDEX: u32 = u32::MAX;

/// A balanced group of consecutive postings in a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryHeader {
    pub entry_id: u64,
    pub order: OrderId,
    pub kind: EntryKind,
    pub currency: CurrencyId,
    pub posting_count: u32,
}

/// The kinds of orders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderKind {
    Recharge,
    Payment,
    Guarantee,
    Refund,
    Freeze,
    Withdrawal,
    /// An operator's audited adjustment (`Command::Adjust`).
    Adjustment,
}

impl OrderKind {
    /// Every kind, in declaration order (`index` is the position here).
    pub const ALL: [OrderKind; 7] =
        [OrderKind::Recharge, OrderKind::Payment, OrderKind::Guarantee, OrderKind::Refund, OrderKind::Freeze, OrderKind::Withdrawal, OrderKind::Adjustment];

    /// Position in `ALL` (the key of per-kind aggregates).
    pub fn index(self) -> u8 {
        self as u8
    }
}

/// One side of an operator's adjustment: a customer account's settled bucket, or a shard's
/// suspense stripe (money that matched no account, or that an operator takes out of one).
///
/// The journal stores it by variant index: append new variants only at the end, never reorder or
/// remove one; a change to its encoding means bumping `journal::JOURNAL_FORMAT_VERSION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AdjustmentSide {
    /// A customer account (its settled bucket).
    Account(AccountId),
    /// The suspense stripe of a shard (in the adjustment's currency).
    Suspense(ShardId),
}

/// Order status values of API.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderStatus {
    Pending,
    Processing,
    Held,
    Succeeded,
    Failed,
    Cancelled,
    PartiallyRefunded,
    Refunded,
}

impl OrderStatus {
    /// Whether the order still waits for something (a bank's verdict, a confirmation, a
    /// release): the statuses the shard indexes per platform.
    pub fn is_open(self) -> bool {
        matches!(self, OrderStatus::Pending | OrderStatus::Processing | OrderStatus::Held)
    }

    /// Closed other than `succeeded` (failed, cancelled, refunded in part or whole): few orders
    /// in a ledger, indexed per platform so that listing them never walks the successes.
    pub fn is_exceptional(self) -> bool {
        matches!(self, OrderStatus::Failed | OrderStatus::Cancelled | OrderStatus::PartiallyRefunded | OrderStatus::Refunded)
    }

    /// Stable lower-case name of API.md.
    pub fn name(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Processing => "processing",
            OrderStatus::Held => "held",
            OrderStatus::Succeeded => "succeeded",
            OrderStatus::Failed => "failed",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::PartiallyRefunded => "partially_refunded",
            OrderStatus::Refunded => "refunded",
        }
    }
}

/// A payee or split receiver and its amount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Leg {
    pub account: AccountId,
    pub amount: Minor,
}

/// The legs of a payment, inline for the common case of one or two.
pub type Legs = SmallVec<[Leg; 2]>;

/// A leg of a payment: what was held for a receiver and what has been released or cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldLeg {
    pub account: AccountId,
    pub held: Minor,
    pub released: Minor,
    pub cancelled: Minor,
}

/// The legs of a payment order, inline for the common single receiver.
pub type HeldLegs = SmallVec<[HeldLeg; 1]>;

/// Kind-specific order state.
///
/// Encoded as `DetailRepr`: a payment with `from_unsettled` of 0 as the `Payment` variant it
/// always was, one with unsettled funds left to return as a variant appended at the end, so the
/// bytes of every order written before (checkpoints, blobs shared by later checkpoints) decode
/// unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(from = "DetailRepr")]
pub enum OrderDetail {
    None,
    /// Recharge: the channel the money came in through.
    Recharge {
        channel: u16,
    },
    /// Payments: what has been refunded to the payer so far, and each receiver's leg (a balance
    /// payment's legs are released in full at once; a guarantee payment's as it is confirmed).
    /// `channel` is set for a direct payment (paid through a channel, `pending` until it confirms).
    /// `from_unsettled` is the part of the payer's debit that came from its unsettled income and
    /// has not gone back yet: a cancel or a refund returns it first, as unsettled income of its
    /// day, so undoing a payment never makes income withdrawable before it matures (journal
    /// format 3 on; 0 for payments of older batches, which return everything as settled).
    Payment {
        refunded: Minor,
        held: HeldLegs,
        channel: Option<u16>,
        from_unsettled: Minor,
    },
    /// Refund of a payment: which payment and payee.
    Refund {
        payment: OrderId,
        payee: AccountId,
    },
    /// Freeze: what is still frozen and from which buckets it came.
    Freeze {
        remaining: Minor,
        from_unsettled: Minor,
        expires_at: Option<Timestamp>,
        reason: Box<str>,
    },
    /// Withdrawal: the fee charged on top and the channel it went to.
    Withdrawal {
        fee: Minor,
        channel: u16,
    },
    /// An operator's adjustment: boxed, so that the rare adjustment's texts do not make every
    /// order larger (the box encodes as its fields: the format is that of the struct variant
    /// it was).
    Adjustment(Box<AdjustmentDetail>),
}

/// `OrderDetail` as it is encoded (see there): its variants in their order, and at the end the
/// payment with unsettled funds to return.
#[derive(Deserialize)]
enum DetailRepr {
    None,
    Recharge { channel: u16 },
    Payment { refunded: Minor, held: HeldLegs, channel: Option<u16> },
    Refund { payment: OrderId, payee: AccountId },
    Freeze { remaining: Minor, from_unsettled: Minor, expires_at: Option<Timestamp>, reason: Box<str> },
    Withdrawal { fee: Minor, channel: u16 },
    Adjustment(Box<AdjustmentDetail>),
    PaymentFromUnsettled { refunded: Minor, held: HeldLegs, channel: Option<u16>, from_unsettled: Minor },
}

/// `DetailRepr` borrowing an `OrderDetail`'s fields (encoding copies nothing).
#[derive(Serialize)]
enum DetailRef<'a> {
    None,
    Recharge { channel: u16 },
    Payment { refunded: Minor, held: &'a HeldLegs, channel: Option<u16> },
    Refund { payment: OrderId, payee: AccountId },
    Freeze { remaining: Minor, from_unsettled: Minor, expires_at: Option<Timestamp>, reason: &'a str },
    Withdrawal { fee: Minor, channel: u16 },
    Adjustment(&'a AdjustmentDetail),
    PaymentFromUnsettled { refunded: Minor, held: &'a HeldLegs, channel: Option<u16>, from_unsettled: Minor },
}

impl From<DetailRepr> for OrderDetail {
    fn from(repr: DetailRepr) -> OrderDetail {
        match repr {
            DetailRepr::None => OrderDetail::None,
            DetailRepr::Recharge { channel } => OrderDetail::Recharge { channel },
            DetailRepr::Payment { refunded, held, channel } => OrderDetail::Payment { refunded, held, channel, from_unsettled: 0 },
            DetailRepr::Refund { payment, payee } => OrderDetail::Refund { payment, payee },
            DetailRepr::Freeze { remaining, from_unsettled, expires_at, reason } => OrderDetail::Freeze { remaining, from_unsettled, expires_at, reason },
            DetailRepr::Withdrawal { fee, channel } => OrderDetail::Withdrawal { fee, channel },
            DetailRepr::Adjustment(detail) => OrderDetail::Adjustment(detail),
            DetailRepr::PaymentFromUnsettled { refunded, held, channel, from_unsettled } => OrderDetail::Payment { refunded, held, channel, from_unsettled },
        }
    }
}

impl Serialize for OrderDetail {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let repr = match self {
            OrderDetail::None => DetailRef::None,
            OrderDetail::Recharge { channel } => DetailRef::Recharge { channel: *channel },
            OrderDetail::Payment { refunded, held, channel, from_unsettled: 0 } => DetailRef::Payment { refunded: *refunded, held, channel: *channel },
            OrderDetail::Payment { refunded, held, channel, from_unsettled } => {
                DetailRef::PaymentFromUnsettled { refunded: *refunded, held, channel: *channel, from_unsettled: *from_unsettled }
            }
            OrderDetail::Refund { payment, payee } => DetailRef::Refund { payment: *payment, payee: *payee },
            OrderDetail::Freeze { remaining, from_unsettled, expires_at, reason } => {
                DetailRef::Freeze { remaining: *remaining, from_unsettled: *from_unsettled, expires_at: *expires_at, reason }
            }
            OrderDetail::Withdrawal { fee, channel } => DetailRef::Withdrawal { fee: *fee, channel: *channel },
            OrderDetail::Adjustment(detail) => DetailRef::Adjustment(detail),
        };
        repr.serialize(serializer)
    }
}

/// An operator's adjustment: where the money came from and went, why, and who proposed and who
/// approved it (four eyes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdjustmentDetail {
    pub source: AdjustmentSide,
    pub target: AdjustmentSide,
    pub reason: String,
    pub proposer: String,
    pub approver: String,
}

/// An order as the owning shard keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: OrderId,
    /// The platform's order number, if the command carried one.
    pub out_order_no: Option<OutOrderNo>,
    pub kind: OrderKind,
    pub status: OrderStatus,
    pub platform: u32,
    pub account: AccountId,
    pub currency: CurrencyId,
    pub amount: Minor,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub detail: OrderDetail,
}

impl Order {
    /// What of `amount` going back to a payment's payer returns to its unsettled income: the
    /// part of the payment that came from there and has not gone back yet, first
    /// (`OrderDetail::Payment::from_unsettled`); taken off that part. Only payments are undone.
    pub(crate) fn take_unsettled_part(&mut self, amount: Minor) -> Minor {
        let OrderDetail::Payment { from_unsettled, .. } = &mut self.detail else {
            unreachable!("only payments are cancelled or refunded");
        };
        let part = (*from_unsettled).min(amount);
        *from_unsettled -= part;
        part
    }
}

/// Why a cross-shard credit is sent; decides how the receiving shard records it.
///
/// The journal stores it by variant index: append new variants only at the end, never reorder or
/// remove one; a change to its encoding means bumping `journal::JOURNAL_FORMAT_VERSION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CreditPurpose {
    /// A payee or split receiver of a payment (balance, or a guarantee release): refundable later.
    PaymentIncome,
    /// A refund returning to the payer, whose shard holds the payment order.
    RefundToPayer,
    /// A receiver's part of a settlement commission: lands in settled, not refundable.
    Commission,
    /// The target side of an operator's adjustment: lands in settled (or the target shard's
    /// suspense stripe), not refundable.
    Adjustment,
}

/// A credit on its way from the debiting shard to the account's shard through the durable outbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RemoteCredit {
    pub source: ShardId,
    /// Sequence per (source, target) pair, starting at 1 and without gaps.
    pub sequence: u64,
    pub order: OrderId,
    pub account: AccountId,
    /// The other side of the movement (the payer for income, the payee for refunds).
    pub counterparty: AccountId,
    pub currency: CurrencyId,
    pub bucket: Bucket,
    pub amount: Minor,
    pub purpose: CreditPurpose,
}

/// The successful or rejected outcome of one command, as stored for idempotent replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub code: ResultCode,
    /// The order (or for account opening, the account) the command created or touched; 0 if none.
    pub id: u64,
    pub status: Option<OrderStatus>,
    /// True when this is the stored result of an earlier request with the same order number.
    pub replayed: bool,
}

impl Reply {
    /// A rejection with `code`.
    pub fn rejected(code: ResultCode) -> Reply {
        Reply { code, id: 0, status: None, replayed: false }
    }

    /// Whether the command took effect.
    pub fn is_ok(&self) -> bool {
        self.code == ResultCode::Ok
    }
}

/// Rates are parts per million: 1,000,000 is 100 %.
pub const RATE_PPM_ONE: u32 = 1_000_000;

/// What picks a commission tier: the merchant's matured income over the period, or how many
/// income credits it held.
///
/// The journal stores it by variant index: append new variants only at the end, never reorder or
/// remove one; a change to its encoding means bumping `journal::JOURNAL_FORMAT_VERSION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TierBasis {
    Amount,
    Count,
}

/// One tier: from this measure (minor units or credits) on, this rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tier {
    pub from: i64,
    pub rate_ppm: u32,
}

/// A platform's settlement rule, carried by the `Settle` command (since session 62 each
/// `SettleChunk` step) that applies it (so replay applies the same rule whatever the
/// platform's rule is today).
///
/// For every account of the platform in `currency` whose income matures, the period measure
/// (income amount or credits matured since `period_start`, this run's included) picks the tier
/// whose `from` it has reached; the commission is the matured amount times that tier's rate,
/// rounded half up to the minor unit, and is split among `receivers` by their weights (largest
/// remainder, so the parts sum to the commission). The service fee is the matured amount times
/// `service_fee_ppm`, rounded half up, and goes to the operator's fee income.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SettlementRule {
    pub currency: CurrencyId,
    /// Business day the period began; tier measures count from it.
    pub period_start: u32,
    pub basis: TierBasis,
    /// Ascending `from`, the first from 0.
    pub tiers: Vec<Tier>,
    /// Receivers of the commission; `amount` is each one's weight.
    pub receivers: Vec<Leg>,
    pub service_fee_ppm: u32,
}

impl SettlementRule {
    /// Checks the rule's shape: tiers ascending from 0, rates within 100 % together with the
    /// service fee, receivers distinct with positive weights (at least one when a rate is set).
    pub fn check(&self) -> Result<(), &'static str> {
        if self.tiers.is_empty() || self.tiers[0].from != 0 {
            return Err("tiers start from 0");
        }
        if self.tiers.windows(2).any(|w| w[1].from <= w[0].from) {
            return Err("tiers ascend");
        }
        if self.tiers.iter().any(|t| t.rate_ppm as u64 + self.service_fee_ppm as u64 > RATE_PPM_ONE as u64) {
            return Err("a tier's rate and the service fee together exceed 100 %");
        }
        if self.receivers.iter().any(|r| r.amount <= 0) {
            return Err("receiver weights are positive");
        }
        if self.receivers.iter().enumerate().any(|(i, r)| self.receivers[..i].iter().any(|e| e.account == r.account)) {
            return Err("receivers are distinct");
        }
        if self.receivers.is_empty() && self.tiers.iter().any(|t| t.rate_ppm > 0) {
            return Err("a commission needs receivers");
        }
        Ok(())
    }

    /// The rate of the tier that `measure` has reached.
    pub fn rate_at(&self, measure: i64) -> u32 {
        self.tiers.iter().take_while(|t| t.from <= measure).last().map_or(0, |t| t.rate_ppm)
    }
}

/// `amount * rate_ppm / 1,000,000`, rounded half up to the minor unit (amounts are non-negative).
pub fn apply_rate(amount: Minor, rate_ppm: u32) -> Minor {
    ((amount as i128 * rate_ppm as i128 + RATE_PPM_ONE as i128 / 2) / RATE_PPM_ONE as i128) as Minor
}

/// Unsettled income of one business day on one account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lot {
    pub day: u32,
    /// How many income credits the lot gathered (a count-based tier's measure).
    pub credits: u32,
    pub amount: Minor,
}

/// An account's unsettled lots, oldest first: one a business day, so an account settled daily
/// holds one or two, kept in place (its `AccountLots` element holds them: no second cache miss
/// for a buffer). Encoded as a sequence, as the `VecDeque` it replaced was.
pub type Lots = SmallVec<[Lot; 2]>;

/// A shard's accounts' unsettled lots, by the accounts' local index (as `ShardState::accounts`):
/// an account's lots are found without a look-up, so they can be asked for ahead with the
/// account. Encoded as the map of account id to lots it replaced (accounts with lots only, in
/// id order); decoding reads that map, empty entries included, into `decoded` until `place`
/// knows the shard.
#[derive(Clone, Debug, Default)]
pub struct AccountLots {
    by_index: Vec<Lots>,
    shard: ShardId,
    shard_count: u16,
    /// Entries decoded, before `place`.
    decoded: Vec<(AccountId, Lots)>,
}

impl AccountLots {
    /// Empty lots for the accounts of `shard` of `shard_count` (at genesis).
    pub fn of_shard(shard: ShardId, shard_count: u16) -> AccountLots {
        AccountLots { shard, shard_count, ..AccountLots::default() }
    }

    /// After decoding, puts the decoded entries in place for `shard` of `shard_count`, whose
    /// accounts number `accounts`; refuses lots of an account this shard does not hold, and an
    /// account named twice (a map's encoding never does).
    pub fn place(&mut self, shard: ShardId, shard_count: u16, accounts: usize) -> Result<(), String> {
        if shard_count == 0 {
            return Err("lots of a shard of no shards".into());
        }
        self.shard = shard;
        self.shard_count = shard_count;
        let mut decoded = std::mem::take(&mut self.decoded);
        decoded.sort_unstable_by_key(|(id, _)| *id);
        if let Some(pair) = decoded.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(format!("lots of account {} twice", pair[0].0 .0));
        }
        for (id, lots) in decoded {
            let index = id.local_index(shard_count) as usize;
            if id.shard(shard_count) != shard || index >= accounts {
                return Err(format!("lots of account {}, which shard {shard} of {shard_count} does not hold", id.0));
            }
            if !lots.is_empty() {
                *self.at_mut(index) = lots;
            }
        }
        Ok(())
    }

    /// The lots of the account with local index `index` (empty if it never had any).
    #[inline]
    pub fn at_mut(&mut self, index: usize) -> &mut Lots {
        if index >= self.by_index.len() {
            self.by_index.resize_with(index + 1, Lots::new);
        }
        &mut self.by_index[index]
    }

    /// The lots of account `id` (`None` if it has none, or is not of this shard).
    pub fn get(&self, id: AccountId) -> Option<&Lots> {
        if self.shard_count == 0 || id.shard(self.shard_count) != self.shard {
            return None;
        }
        self.by_index.get(id.local_index(self.shard_count) as usize).filter(|lots| !lots.is_empty())
    }

    /// Asks for the cache lines of the lots of the account with local index `index` (a hint).
    #[inline]
    pub fn prefetch(&self, index: usize) {
        if let Some(lots) = self.by_index.get(index) {
            let start: *const Lots = lots;
            crate::prefetch(start);
            crate::prefetch(start.cast::<u8>().wrapping_add(std::mem::size_of::<Lots>() - 1));
        }
    }

    /// The local account indices from `after` on that this list holds, in id order, with the
    /// account and its lots, empty ones included (so a caller can bound what it examines): up
    /// to the highest index that had lots since the list was built (a checkpoint's load builds
    /// it up to the highest one with lots then).
    pub fn iter_from(&self, after: u32) -> impl Iterator<Item = (u32, AccountId, &Lots)> + '_ {
        let (shard, shard_count) = (self.shard, self.shard_count);
        self.by_index.get(after as usize..).unwrap_or_default().iter().enumerate().map(move |(offset, lots)| {
            let index = after + offset as u32;
            (index, AccountId::compose(shard, u64::from(index), shard_count), lots)
        })
    }

    /// Every account with lots, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (AccountId, &Lots)> + '_ {
        let (shard, shard_count) = (self.shard, self.shard_count);
        self.by_index
            .iter()
            .enumerate()
            .filter(|(_, lots)| !lots.is_empty())
            .map(move |(index, lots)| (AccountId::compose(shard, index as u64, shard_count), lots))
    }
}

/// Equal when they hold the same lots for the same accounts (however many empty entries); a
/// decoded value not yet placed equals only one with the same entries decoded.
impl PartialEq for AccountLots {
    fn eq(&self, other: &AccountLots) -> bool {
        self.iter().eq(other.iter()) && self.decoded == other.decoded
    }
}

impl Serialize for AccountLots {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.iter().count() + self.decoded.len()))?;
        for (id, lots) in self.iter() {
            map.serialize_entry(&id, lots)?;
        }
        // (Only a state decoded and not yet placed has these.)
        for (id, lots) in &self.decoded {
            map.serialize_entry(id, lots)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for AccountLots {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = AccountLots;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of account id to lots")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut entries: A) -> Result<AccountLots, A::Error> {
                let mut decoded = Vec::with_capacity(entries.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(entry) = entries.next_entry::<AccountId, Lots>()? {
                    decoded.push(entry);
                }
                Ok(AccountLots { decoded, ..AccountLots::default() })
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bincode::Options;

    /// Ids are stored: the mask and shift for a power of two of shards name the same shard and
    /// index as the division, for every count (and `compose` undoes them).
    #[test]
    fn an_ids_shard_and_index_are_the_divisions_at_every_shard_count() {
        let mut values = crate::ledger::TestValues::seeded(0x001D_50F5_A4D5);
        for shard_count in 1..=64u16 {
            for round in 0..2_000u64 {
                let raw = match round % 3 {
                    0 => values.next(),
                    1 => u64::MAX - round,
                    _ => round,
                };
                let id = AccountId(raw);
                assert_eq!(id.shard(shard_count), (raw % shard_count as u64) as ShardId, "{raw} of {shard_count}");
                assert_eq!(id.local_index(shard_count), raw / shard_count as u64, "{raw} of {shard_count}");
                let order = OrderId(raw);
                assert_eq!((order.shard(shard_count), order.local_index(shard_count)), (id.shard(shard_count), id.local_index(shard_count)));
                let index = raw / shard_count as u64;
                let shard = (raw % shard_count as u64) as ShardId;
                assert_eq!(AccountId::compose(shard, index, shard_count), id);
            }
        }
    }

    /// An order is what the hot window holds per order (issue 12): boxing the rare kinds' texts
    /// and the order number's niche took it from 224 to 168 bytes; a payment's unsettled part
    /// (journal format 3) to 176.
    #[test]
    fn an_order_stays_small() {
        assert!(std::mem::size_of::<Order>() <= 176, "Order is {} bytes", std::mem::size_of::<Order>());
        assert_eq!(std::mem::size_of::<Option<crate::ledger::command::OutOrderNo>>(), std::mem::size_of::<crate::ledger::command::OutOrderNo>());
    }

    /// Two lots fit in place: an account's element of `AccountLots` is 40 bytes.
    #[test]
    fn lots_stay_small() {
        assert!(std::mem::size_of::<Lots>() <= 40, "Lots is {} bytes", std::mem::size_of::<Lots>());
        assert!(!Lots::from_slice(&[Lot { day: 1, credits: 1, amount: 1 }; 2]).spilled());
    }

    /// Lots are encoded as the `VecDeque` they were (a sequence): checkpoints written before
    /// decode now, and the bytes are the same, with more lots than are kept in place too.
    #[test]
    fn lots_encode_as_the_queue_they_replaced() {
        let codec = crate::journal::codec;
        for count in [0, 1, 2, 5] {
            let items: Vec<Lot> = (0..count).map(|n| Lot { day: 20_000 + n, credits: n + 1, amount: 100 * n as i64 + 1 }).collect();
            let before: std::collections::VecDeque<Lot> = items.iter().copied().collect();
            let now: Lots = items.iter().copied().collect();
            let bytes = codec().serialize(&before).unwrap();
            assert_eq!(codec().serialize(&now).unwrap(), bytes);
            assert_eq!(codec().deserialize::<Lots>(&bytes).unwrap(), now);
        }
    }

    /// The lots by account index encode as the map of id to lots they replaced (accounts with
    /// lots, in id order), and read that map back, empty entries included; lots of an account
    /// of another shard, or past the shard's accounts, are refused.
    #[test]
    fn account_lots_encode_as_the_map_they_replaced() {
        let codec = crate::journal::codec;
        let lot = |day: u32, amount: Minor| Lot { day, credits: 1, amount };
        let (shard, shard_count) = (1, 3);
        let mut lots = AccountLots::of_shard(shard, shard_count);
        lots.at_mut(4).push(lot(20_000, 5));
        lots.at_mut(0).extend([lot(20_000, 1), lot(20_001, 2), lot(20_002, 3)]);
        lots.at_mut(2);
        let id = |index: u64| AccountId::compose(shard, index, shard_count);
        let before: std::collections::BTreeMap<AccountId, Lots> = [(id(0), lots.at_mut(0).clone()), (id(4), lots.at_mut(4).clone())].into_iter().collect();
        let bytes = codec().serialize(&before).unwrap();
        assert_eq!(codec().serialize(&lots).unwrap(), bytes);
        assert_eq!(lots.iter().map(|(id, lots)| (id, lots.len())).collect::<Vec<_>>(), vec![(id(0), 3), (id(4), 1)]);
        assert_eq!((lots.get(id(2)), lots.get(id(4)).map(|l| l[0].amount), lots.get(AccountId::compose(0, 4, shard_count))), (None, Some(5), None));
        // The old map, with an empty entry (accounts that had spent their lots kept one).
        let mut old: crate::ledger::state::FastMap<AccountId, Lots> = before.clone().into_iter().collect();
        old.insert(id(3), Lots::new());
        let mut back: AccountLots = codec().deserialize(&codec().serialize(&old).unwrap()).unwrap();
        assert_eq!(back.get(id(0)), None, "not placed yet");
        back.place(shard, shard_count, 5).unwrap();
        assert_eq!(codec().serialize(&back).unwrap(), bytes);
        assert_eq!((back.get(id(3)), back.get(id(0)).map(|l| l.len())), (None, Some(3)));
        let mut foreign: AccountLots = codec().deserialize(&codec().serialize(&old).unwrap()).unwrap();
        assert!(foreign.place(0, shard_count, 5).is_err(), "ids of shard 1 are not shard 0's");
        let mut beyond: AccountLots = codec().deserialize(&bytes).unwrap();
        assert!(beyond.place(shard, shard_count, 4).is_err(), "account index 4 past four accounts");
        // The same account twice (an empty entry after one with lots): refused, not merged.
        let twice = AccountLots { decoded: vec![(id(0), lots.at_mut(0).clone()), (id(4), Lots::new()), (id(0), Lots::new())], ..AccountLots::default() };
        let mut twice: AccountLots = codec().deserialize(&codec().serialize(&twice).unwrap()).unwrap();
        assert!(twice.place(shard, shard_count, 5).unwrap_err().contains("twice"));
    }

    /// The details as they were before the boxes: checkpoints and history blobs written then
    /// must decode now, and the encoding must not change.
    #[derive(Serialize)]
    #[allow(dead_code)]
    enum DetailBefore {
        None,
        Recharge { channel: u16 },
        Payment { refunded: Minor, held: HeldLegs, channel: Option<u16> },
        Refund { payment: OrderId, payee: AccountId },
        Freeze { remaining: Minor, from_unsettled: Minor, expires_at: Option<Timestamp>, reason: String },
        Withdrawal { fee: Minor, channel: u16 },
        Adjustment { source: AdjustmentSide, target: AdjustmentSide, reason: String, proposer: String, approver: String },
    }

    #[test]
    fn boxed_details_encode_as_the_fields_they_were() {
        let codec = crate::journal::codec;
        let before = DetailBefore::Adjustment {
            source: AdjustmentSide::Suspense(1),
            target: AdjustmentSide::Account(AccountId(77)),
            reason: "wrong credit".into(),
            proposer: "ann".into(),
            approver: "bo".into(),
        };
        let now = OrderDetail::Adjustment(Box::new(AdjustmentDetail {
            source: AdjustmentSide::Suspense(1),
            target: AdjustmentSide::Account(AccountId(77)),
            reason: "wrong credit".into(),
            proposer: "ann".into(),
            approver: "bo".into(),
        }));
        let bytes = codec().serialize(&before).unwrap();
        assert_eq!(bytes, codec().serialize(&now).unwrap());
        assert_eq!(codec().deserialize::<OrderDetail>(&bytes).unwrap(), now);

        let before = DetailBefore::Freeze { remaining: 5, from_unsettled: 2, expires_at: Some(9), reason: "court order".into() };
        let now = OrderDetail::Freeze { remaining: 5, from_unsettled: 2, expires_at: Some(9), reason: "court order".into() };
        let bytes = codec().serialize(&before).unwrap();
        assert_eq!(bytes, codec().serialize(&now).unwrap());
        assert_eq!(codec().deserialize::<OrderDetail>(&bytes).unwrap(), now);
    }

    /// A payment with no unsettled part to return encodes as payments always did (checkpoint
    /// format 6's bytes, and the blobs later checkpoints share); one with a part as the variant
    /// appended after every earlier one, and both decode back.
    #[test]
    fn a_payments_unsettled_part_is_encoded_only_when_it_has_one() {
        let codec = crate::journal::codec;
        let held: HeldLegs = [HeldLeg { account: AccountId(7), held: 10, released: 4, cancelled: 1 }].into_iter().collect();
        let before = DetailBefore::Payment { refunded: 3, held: held.clone(), channel: Some(2) };
        let now = OrderDetail::Payment { refunded: 3, held: held.clone(), channel: Some(2), from_unsettled: 0 };
        let bytes = codec().serialize(&before).unwrap();
        assert_eq!(bytes, codec().serialize(&now).unwrap());
        assert_eq!(codec().deserialize::<OrderDetail>(&bytes).unwrap(), now);
        let with_part = OrderDetail::Payment { refunded: 3, held, channel: None, from_unsettled: 6 };
        let bytes = codec().serialize(&with_part).unwrap();
        assert_eq!(bytes[0], 7, "the variant after None .. Adjustment (0 to 6)");
        assert_eq!(codec().deserialize::<OrderDetail>(&bytes).unwrap(), with_part);
    }
}
