//! The pure ledger core: state, commands and `apply`. No IO, no clock, no randomness.

pub mod command;
pub mod growth;
mod keyhash;
pub mod ops;
pub mod state;
pub mod types;
