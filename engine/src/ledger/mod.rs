//! The pure ledger core: state, commands and `apply`. No IO, no clock, no randomness in any
//! outcome (the flat tables' slot mix has a random secret: it places entries, it decides nothing).

pub mod command;
pub mod flat;
pub mod growth;
mod keyhash;
pub mod ops;
pub mod state;
pub mod types;
