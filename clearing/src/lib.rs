//! Clearing: the actor that owns routing state (channels, daily caps, health), the payout book,
//! the settlement schedule and the operator's cases, and the work it does: routing payouts with
//! fallback and timeouts, bank verdicts, the nightly settlement run, the business calendar,
//! reconciliation of statement files with the cases it opens, and the reserve check. It talks
//! to banks only through `bank::BankChannel` and never sees an HTTP type; the gateway turns its
//! typed results and `ClearingError` into API answers. ARCHITECTURE.md maps the modules.

pub mod actor;
pub mod calendar;
pub mod cases;
pub mod channels;
pub mod commission;
pub mod error;
pub mod fees;
pub mod payouts;
pub mod reconcile;
pub mod reserve;
pub mod settlement;

pub use actor::{Clearing, ClearingConfig, ClearingFigures, TermsSource};
pub use error::ClearingError;
