//! Platforms' settlement rules: tiered commission by the merchant's cumulative income amount or
//! number of income credits over a period, split among several receivers (e.g. the platform and
//! an agent), and the operator's service fee. A rule is stored with its platform (the gateway's
//! record); every settlement run hands the engine's form of it (`SettlementRule`) to the shards
//! inside the `SettleChunk` steps (`Settle` before session 62), which charge it on the income
//! they mature.

use engine::ledger::types::{AccountId, Leg, SettlementRule, Tier, TierBasis, RATE_PPM_ONE};
use engine::money::CurrencyId;
use serde::{Deserialize, Serialize};

/// The most tiers and receivers a rule may have.
pub const TIERS_MAX: usize = 16;
pub const RECEIVERS_MAX: usize = 8;

/// A period a tier measure counts over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Week,
    Month,
}

impl Period {
    /// The first business day of the period holding `day` (days since 1970-01-01, a Thursday).
    pub fn start(self, day: u32) -> u32 {
        match self {
            Period::Day => day,
            Period::Week => day.saturating_sub((day + 3) % 7),
            Period::Month => {
                let epoch = time::Date::from_calendar_date(1970, time::Month::January, 1).expect("a valid date");
                match epoch.checked_add(time::Duration::days(day as i64)) {
                    Some(date) => day - (date.day() as u32 - 1),
                    None => day,
                }
            }
        }
    }
}

/// What picks the tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    Amount,
    Count,
}

/// A rule as the platform record stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleConfig {
    pub currency: String,
    pub basis: Basis,
    pub period: Period,
    /// (from: minor units or credits, rate in parts per million), ascending from 0.
    pub tiers: Vec<(i64, u32)>,
    /// (account, weight).
    pub receivers: Vec<(u64, i64)>,
    pub service_fee_ppm: u32,
}

impl RuleConfig {
    /// The engine's form of the rule, for a run whose period began on `period_start`.
    pub fn engine_rule(&self, currency: CurrencyId, period_start: u32) -> SettlementRule {
        SettlementRule {
            currency,
            period_start,
            basis: match self.basis {
                Basis::Amount => TierBasis::Amount,
                Basis::Count => TierBasis::Count,
            },
            tiers: self.tiers.iter().map(|(from, rate_ppm)| Tier { from: *from, rate_ppm: *rate_ppm }).collect(),
            receivers: self.receivers.iter().map(|(account, weight)| Leg { account: AccountId(*account), amount: *weight }).collect(),
            service_fee_ppm: self.service_fee_ppm,
        }
    }

    /// The rule a settlement run of business day `day` applies, in `currency`.
    pub fn for_run(&self, currency: CurrencyId, day: u32) -> Box<SettlementRule> {
        Box::new(self.engine_rule(currency, self.period.start(day)))
    }
}

/// Parses a rate: a decimal fraction from 0 to 1 with up to 6 places, in parts per million (the
/// engine's one decimal parser; unsigned).
pub fn parse_rate(text: &str) -> Option<u32> {
    if text.starts_with('-') {
        return None;
    }
    let ppm = engine::money::parse_decimal(text, 6).ok()?;
    u32::try_from(ppm).ok().filter(|ppm| *ppm <= RATE_PPM_ONE)
}

/// A rate in parts per million as the shortest decimal fraction ("0.006").
pub fn format_rate(ppm: u32) -> String {
    let text = format!("{}.{:06}", ppm / RATE_PPM_ONE, ppm % RATE_PPM_ONE);
    let text = text.trim_end_matches('0');
    text.strip_suffix('.').map_or_else(|| text.to_string(), str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_table() {
        let cases: &[(&str, Option<u32>)] = &[
            ("0.006", Some(6_000)),
            ("0", Some(0)),
            ("1", Some(1_000_000)),
            ("1.0", Some(1_000_000)),
            ("0.000001", Some(1)),
            ("0.0000001", None),
            ("1.000001", None),
            ("-0.1", None),
            (".5", None),
            ("5.", None),
            ("abc", None),
            ("", None),
        ];
        for (text, ppm) in cases {
            assert_eq!(parse_rate(text), *ppm, "{text}");
        }
        assert_eq!(format_rate(6_000), "0.006");
        assert_eq!(format_rate(0), "0");
        assert_eq!(format_rate(1_000_000), "1");
        assert_eq!(format_rate(123_456), "0.123456");
    }

    #[test]
    fn periods_table() {
        let day = crate::calendar::parse_date;
        let d = |t: &str| day(t).expect("date");
        // 2026-11-22 is a Sunday: its week began on Monday 2026-11-16.
        assert_eq!(Period::Week.start(d("2026-11-22")), d("2026-11-16"));
        assert_eq!(Period::Week.start(d("2026-11-16")), d("2026-11-16"));
        assert_eq!(Period::Month.start(d("2026-11-22")), d("2026-11-01"));
        assert_eq!(Period::Month.start(d("2026-03-01")), d("2026-03-01"));
        assert_eq!(Period::Month.start(d("2024-02-29")), d("2024-02-01"));
        assert_eq!(Period::Day.start(d("2026-11-22")), d("2026-11-22"));
        // The first days since the epoch have no Monday before them: the period starts at 0.
        assert_eq!([Period::Week.start(0), Period::Week.start(2), Period::Month.start(0)], [0, 0, 0]);
    }
}
