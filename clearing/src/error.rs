//! The one error type of clearing. The gateway turns each variant into an API error in one table
//! (`gateway::error`), as it does for the engine's result codes.

use engine::result::ResultCode;

/// Why clearing could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum ClearingError {
    /// The request is malformed or out of range; `param` names the field at fault.
    #[error("{message}")]
    Invalid { message: String, param: &'static str },
    /// No such object (a channel, an order).
    #[error("not found")]
    NotFound,
    /// An order number was used before with another body.
    #[error("this out_order_no was used with another body")]
    IdempotencyConflict,
    /// No channel can pay this out now; each candidate with why not.
    #[error("no channel can pay this out now ({0})")]
    NoChannel(String),
    /// The engine refused the command (a business outcome).
    #[error("refused: {0:?}")]
    Refused(ResultCode),
    /// A settlement run by hand names a date after today's business date (and the days ahead
    /// allowed).
    #[error("{0}")]
    FutureBusinessDate(String),
    /// A settlement run is in progress; try again when it has finished.
    #[error("a settlement run is in progress")]
    Busy,
    /// The case is resolved already.
    #[error("the case is already resolved")]
    CaseResolved,
    /// The case's hold was given another fate already (`release` or `capture`): a repeat
    /// cannot change it.
    #[error("the case's hold was decided already: {0}")]
    HoldDecided(String),
    /// The clearing actor's mailbox is full (or it has stopped): try again later.
    #[error("clearing is overloaded")]
    Overloaded,
    /// The engine could not answer (a shard stopped, a wait timed out).
    #[error("engine: {0}")]
    Engine(#[from] engine::EngineError),
    /// The bank could not answer (its reserve balance, for the reserve check).
    #[error("{0}")]
    Bank(#[from] bank::BankError),
    /// A record could not be read or written.
    #[error("storage: {0}")]
    Storage(String),
    /// A worker of ours failed (it panicked): a bug, reported rather than left hanging.
    #[error("internal: {0}")]
    Internal(String),
}

impl ClearingError {
    /// A malformed request, with the field at fault.
    pub fn invalid(message: impl Into<String>, param: &'static str) -> ClearingError {
        ClearingError::Invalid { message: message.into(), param }
    }
}
