//! The pure ledger core: state, commands and `apply`. No IO, no clock, no randomness in any
//! outcome (the flat tables' slot mix has a random secret: it places entries, it decides nothing).

pub mod command;
pub mod flat;
pub mod growth;
mod keyhash;
pub mod ops;
pub mod state;
pub mod types;

/// A seeded stream of test values (Knuth's MMIX linear congruential generator): the same values
/// every run, so a failing case is found again by its seed.
#[cfg(test)]
pub(crate) struct TestValues(u64);

#[cfg(test)]
impl TestValues {
    pub(crate) fn seeded(seed: u64) -> TestValues {
        TestValues(seed)
    }

    /// The next value: every bit used, the high ones the most random.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0
    }
}
