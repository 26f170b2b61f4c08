//! What the clearing crate's tests share.

use clearing_actor::channels::ChannelSpec;

/// A CNY channel open all day with a fixed fee, whose simulated bank takes a minute to answer
/// (the tests give the verdicts themselves).
pub fn spec(id: u16, name: &str, direction: &str, fee: &str) -> ChannelSpec {
    ChannelSpec {
        id,
        name: name.into(),
        kind: "test".into(),
        direction: direction.into(),
        currency: "CNY".into(),
        fee_fixed: fee.into(),
        fee_rate_bps: 0,
        fee_min: "0.00".into(),
        fee_max: "100.00".into(),
        order_min: "0.01".into(),
        order_max: "50000.00".into(),
        daily_cap: "1000000.00".into(),
        window: "00:00-24:00".into(),
        business_days_only: false,
        arrival: "realtime".into(),
        eta_minutes: 1,
        serves: vec!["personal".into()],
        sim_latency_ms: 60_000,
        sim_failure_per_mille: 0,
        enabled: true,
        sim_drop_per_mille: 0,
        timeout_ms: 600_000,
    }
}
