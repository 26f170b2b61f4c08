//! The channels money comes in and goes out through. Until the clearing issue makes channels
//! configuration with routing, the gateway knows the bank simulator's three: a quick-pay gateway
//! for recharges, a real-time payout channel (7x24, fee charged) and a standard one (no fee,
//! next business day). Each has a stable number that orders record.

use engine::money::Minor;

/// A channel the gateway can send orders to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Channel {
    pub id: u16,
    pub name: &'static str,
    /// Fee in basis points of the amount, rounded up to a whole minor unit, then clamped.
    pub fee_basis_points: Minor,
    pub fee_minor_min: Minor,
    pub fee_minor_max: Minor,
}

/// Money in: the simulator's quick-pay gateway.
pub const SIM_GATEWAY: Channel = Channel { id: 1, name: "sim_gateway", fee_basis_points: 0, fee_minor_min: 0, fee_minor_max: 0 };
/// Money out, arriving at once: 0.10 % with a minimum of 1.00 and a maximum of 25.00.
pub const SIM_REALTIME: Channel = Channel { id: 2, name: "sim_realtime", fee_basis_points: 10, fee_minor_min: 100, fee_minor_max: 2_500 };
/// Money out, arriving the next business day: free.
pub const SIM_STANDARD: Channel = Channel { id: 3, name: "sim_standard", fee_basis_points: 0, fee_minor_min: 0, fee_minor_max: 0 };

/// Every channel, by id.
pub const ALL: [Channel; 3] = [SIM_GATEWAY, SIM_REALTIME, SIM_STANDARD];

/// The name of a channel number ("unknown" for numbers this build does not know).
pub fn name(id: u16) -> &'static str {
    ALL.iter().find(|c| c.id == id).map_or("unknown", |c| c.name)
}

/// A channel by name.
pub fn by_name(name: &str) -> Option<Channel> {
    ALL.into_iter().find(|c| c.name == name)
}

impl Channel {
    /// The fee on `amount` minor units: `ceil(amount * bps / 10000)` clamped to [min, max]. Exact
    /// integer arithmetic; rounding up means the channel's cost is never under-charged by a cent.
    pub fn fee(&self, amount: Minor) -> Minor {
        if self.fee_basis_points == 0 && self.fee_minor_min == 0 {
            return 0;
        }
        let raw = (amount as i128 * self.fee_basis_points as i128 + 9_999) / 10_000;
        (raw as Minor).clamp(self.fee_minor_min, self.fee_minor_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fee_table() {
        let cases: &[(Channel, Minor, Minor)] = &[
            (SIM_REALTIME, 1, 100),
            (SIM_REALTIME, 100_000, 100),
            (SIM_REALTIME, 100_001, 101),
            (SIM_REALTIME, 1_000_000, 1_000),
            (SIM_REALTIME, 100_000_000, 2_500),
            (SIM_STANDARD, 100_000_000, 0),
            (SIM_GATEWAY, 5, 0),
        ];
        for (channel, amount, fee) in cases {
            assert_eq!(channel.fee(*amount), *fee, "{} {amount}", channel.name);
        }
    }
}
