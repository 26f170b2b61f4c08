//! Stable, numbered business result codes. Numbers are never reused; new codes go at the end.

use serde::{Deserialize, Serialize};

/// The outcome of one command. `Ok` is the only success; every other code but `ShardStopped`
/// means nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u16)]
pub enum ResultCode {
    Ok = 0,
    IdempotencyConflict = 1,
    InvalidAmount = 2,
    AmountTooLarge = 3,
    CurrencyUnknown = 4,
    AccountNotFound = 5,
    PayeeNotFound = 6,
    CurrencyMismatch = 7,
    LegsUnbalanced = 8,
    TooManyLegs = 9,
    AccountClosed = 10,
    AccountFrozen = 11,
    InsufficientFunds = 12,
    ExceedsPerOrderLimit = 13,
    ExceedsDailyLimit = 14,
    OrderNotFound = 15,
    OrderStateInvalid = 16,
    ExceedsHeldAmount = 17,
    ExceedsRefundableAmount = 18,
    ExceedsFrozenAmount = 19,
    AccountNotEmpty = 20,
    AccountExists = 21,
    PayeeIsPayer = 22,
    DuplicateLeg = 23,
    InvalidFee = 24,
    AccountCreditBlocked = 25,
    ReasonTooLong = 26,
    InvalidExpiry = 27,
    /// A shard-wide or internal command sent through `Engine::submit` (use `broadcast`).
    NotRoutable = 28,
    /// A batch payment with no orders, too many, or an order number twice.
    InvalidBatch = 29,
    /// A settlement rule that breaks its shape (`SettlementRule::check`).
    InvalidRule = 30,
    /// A reroute that names a channel the payout is no longer on (another verdict moved it).
    ChannelChanged = 31,
    /// The credit would take the receiving account's total balance above `BALANCE_MINOR_MAX`.
    BalanceLimitExceeded = 32,
    /// The shard's mailbox was full: the command was never queued and nothing changed. Answered
    /// by the router, or by a shard for a client command whose batch had read back all the
    /// history one batch may (`shard::HISTORY_READS_PER_BATCH_MAX`, of which one platform's
    /// commands get `shard::HISTORY_READS_PER_PLATFORM_MAX` before the others have had theirs);
    /// never journaled, the caller
    /// may try again shortly.
    Overloaded = 33,
    /// An operator's adjustment without a reason (an empty or blank one).
    ReasonMissing = 34,
    /// An adjustment's four eyes are missing: the proposer or the approver is not named, a
    /// name passes `OPERATOR_NAME_BYTES_MAX`, or the approver is the proposer.
    ApprovalInvalid = 35,
    /// The command's shard stopped before it answered (`Engine::submit_each` only; a shard
    /// never answers it and it is never journaled). Its outcome is unknown until the shard
    /// starts again: the batch may have been made durable just before the stop. A retry with
    /// the same order number then answers as the first attempt went.
    ShardStopped = 36,
}

impl ResultCode {
    /// Every code, in number order (for documentation and tests).
    pub const ALL: [ResultCode; 37] = [
        ResultCode::Ok,
        ResultCode::IdempotencyConflict,
        ResultCode::InvalidAmount,
        ResultCode::AmountTooLarge,
        ResultCode::CurrencyUnknown,
        ResultCode::AccountNotFound,
        ResultCode::PayeeNotFound,
        ResultCode::CurrencyMismatch,
        ResultCode::LegsUnbalanced,
        ResultCode::TooManyLegs,
        ResultCode::AccountClosed,
        ResultCode::AccountFrozen,
        ResultCode::InsufficientFunds,
        ResultCode::ExceedsPerOrderLimit,
        ResultCode::ExceedsDailyLimit,
        ResultCode::OrderNotFound,
        ResultCode::OrderStateInvalid,
        ResultCode::ExceedsHeldAmount,
        ResultCode::ExceedsRefundableAmount,
        ResultCode::ExceedsFrozenAmount,
        ResultCode::AccountNotEmpty,
        ResultCode::AccountExists,
        ResultCode::PayeeIsPayer,
        ResultCode::DuplicateLeg,
        ResultCode::InvalidFee,
        ResultCode::AccountCreditBlocked,
        ResultCode::ReasonTooLong,
        ResultCode::InvalidExpiry,
        ResultCode::NotRoutable,
        ResultCode::InvalidBatch,
        ResultCode::InvalidRule,
        ResultCode::ChannelChanged,
        ResultCode::BalanceLimitExceeded,
        ResultCode::Overloaded,
        ResultCode::ReasonMissing,
        ResultCode::ApprovalInvalid,
        ResultCode::ShardStopped,
    ];

    /// The stable snake_case name used at the API edge.
    pub fn name(self) -> &'static str {
        match self {
            ResultCode::Ok => "ok",
            ResultCode::IdempotencyConflict => "idempotency_conflict",
            ResultCode::InvalidAmount => "invalid_amount",
            ResultCode::AmountTooLarge => "amount_too_large",
            ResultCode::CurrencyUnknown => "currency_unknown",
            ResultCode::AccountNotFound => "account_not_found",
            ResultCode::PayeeNotFound => "payee_not_found",
            ResultCode::CurrencyMismatch => "currency_mismatch",
            ResultCode::LegsUnbalanced => "legs_unbalanced",
            ResultCode::TooManyLegs => "too_many_legs",
            ResultCode::AccountClosed => "account_closed",
            ResultCode::AccountFrozen => "account_frozen",
            ResultCode::InsufficientFunds => "insufficient_funds",
            ResultCode::ExceedsPerOrderLimit => "exceeds_per_order_limit",
            ResultCode::ExceedsDailyLimit => "exceeds_daily_limit",
            ResultCode::OrderNotFound => "order_not_found",
            ResultCode::OrderStateInvalid => "order_state_invalid",
            ResultCode::ExceedsHeldAmount => "exceeds_held_amount",
            ResultCode::ExceedsRefundableAmount => "exceeds_refundable_amount",
            ResultCode::ExceedsFrozenAmount => "exceeds_frozen_amount",
            ResultCode::AccountNotEmpty => "account_not_empty",
            ResultCode::AccountExists => "account_exists",
            ResultCode::PayeeIsPayer => "payee_is_payer",
            ResultCode::DuplicateLeg => "duplicate_leg",
            ResultCode::InvalidFee => "invalid_fee",
            ResultCode::AccountCreditBlocked => "account_credit_blocked",
            ResultCode::ReasonTooLong => "reason_too_long",
            ResultCode::InvalidExpiry => "invalid_expiry",
            ResultCode::NotRoutable => "not_routable",
            ResultCode::InvalidBatch => "invalid_batch",
            ResultCode::InvalidRule => "invalid_rule",
            ResultCode::ChannelChanged => "channel_changed",
            ResultCode::BalanceLimitExceeded => "balance_limit_exceeded",
            ResultCode::Overloaded => "overloaded",
            ResultCode::ReasonMissing => "reason_missing",
            ResultCode::ApprovalInvalid => "approval_invalid",
            ResultCode::ShardStopped => "shard_stopped",
        }
    }

    /// The stable number of this code.
    pub fn number(self) -> u16 {
        self as u16
    }

    /// Whether a shard keeps this refusal of a command with an order number as that number's
    /// record (journal format 5 on), so that a repeat with the same content is answered the
    /// same refusal as a replay and one with other content is a conflict (API.md: a repeat
    /// returns the original response). Every refusal of the ledger's own checks is; not `Ok`
    /// (an acceptance, recorded anyway), nor `IdempotencyConflict` (answered from the record
    /// another command made), nor what says to try again or is ours (`Overloaded`,
    /// `ShardStopped`: never reached by a command the ledger applies; `InvalidFee`,
    /// `NotRoutable`: a 500, mended by us, after which a retry must run). A refund's payee
    /// shard answers `OrderNotFound` (or `ExceedsRefundableAmount`) for good while the
    /// payment's credit is still on its way to it: the gateway does not send a refund then
    /// (`ShardState::credit_in_flight`, a 503 to repeat; helper 122#1). The match names every
    /// code: a code added later must be placed here, and keeping it changes what journal
    /// format 5's batches record, which needs a format bump (helper 118#9).
    pub fn is_kept_refusal(self) -> bool {
        use ResultCode::*;
        match self {
            Ok | IdempotencyConflict | Overloaded | ShardStopped | InvalidFee | NotRoutable => false,
            InvalidAmount
            | AmountTooLarge
            | CurrencyUnknown
            | AccountNotFound
            | PayeeNotFound
            | CurrencyMismatch
            | LegsUnbalanced
            | TooManyLegs
            | AccountClosed
            | AccountFrozen
            | InsufficientFunds
            | ExceedsPerOrderLimit
            | ExceedsDailyLimit
            | OrderNotFound
            | OrderStateInvalid
            | ExceedsHeldAmount
            | ExceedsRefundableAmount
            | ExceedsFrozenAmount
            | AccountNotEmpty
            | AccountExists
            | PayeeIsPayer
            | DuplicateLeg
            | AccountCreditBlocked
            | ReasonTooLong
            | InvalidExpiry
            | InvalidBatch
            | InvalidRule
            | ChannelChanged
            | BalanceLimitExceeded
            | ReasonMissing
            | ApprovalInvalid => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Codes are stored (idempotency records in checkpoints and cold rows, which hold refusals
    /// too since journal format 5) by serde's variant index, the declaration order: it must be
    /// the number, so that no code is inserted before others (helper 117#6).
    #[test]
    fn every_code_is_stored_as_its_number() {
        for code in ResultCode::ALL {
            assert_eq!(bincode::serialize(&code).expect("a code serializes"), u32::from(code.number()).to_le_bytes(), "{code:?}");
        }
    }

    #[test]
    fn numbers_are_dense_and_names_unique() {
        let mut names = std::collections::HashSet::new();
        for (index, code) in ResultCode::ALL.iter().enumerate() {
            assert_eq!(code.number() as usize, index, "{code:?} is out of order");
            assert!(names.insert(code.name()), "{} named twice", code.name());
        }
    }
}
