//! The reserve check: our reserve (the money the bank holds for us, by our books) must equal
//! customer funds + in transit + escrow + payouts sent + fees + suspense; with the bank's own
//! figure (typed in from its statement, or read from the bank through `BankChannel`) it also
//! shows the difference to explain.

use bank::BankChannel;
use engine::ledger::types::{AccountKind, SystemRole};
use engine::money::{CurrencyId, CurrencySpec, Minor};
use engine::Engine;
use serde::Serialize;

use crate::error::ClearingError;

/// Where the bank's balance of the reserve account comes from, if anywhere.
#[derive(Clone, Copy)]
pub enum BankFigure<'a> {
    /// No bank figure: our books only.
    None,
    /// As the operator typed it from the bank's statement (decimal text in major units).
    Stated(&'a str),
    /// Asked of the bank.
    Bank(&'a dyn BankChannel),
}

/// Our reserve against what it covers, per currency, in minor units (sums over every shard's
/// stripes; balances with credits positive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReserveReport {
    pub currency: CurrencySpec,
    /// The reserve by our books (the money the bank holds for us).
    pub reserve: i128,
    pub customer_funds: i128,
    pub in_transit: i128,
    pub escrow: i128,
    pub payouts_sent: i128,
    pub fees: i128,
    pub suspense: i128,
    /// The bank's balance of the reserve account, when given.
    pub bank_balance: Option<i128>,
}

impl ReserveReport {
    /// What the reserve must cover.
    pub fn liabilities(&self) -> i128 {
        self.customer_funds + self.in_transit + self.escrow + self.payouts_sent + self.fees + self.suspense
    }

    /// The bank's balance less our reserve.
    pub fn difference(&self) -> Option<i128> {
        self.bank_balance.map(|bank| bank - self.reserve)
    }

    /// The reserve covers exactly what it must, and the bank agrees (when asked).
    pub fn ok(&self) -> bool {
        self.reserve == self.liabilities() && self.difference().is_none_or(|d| d == 0)
    }
}

/// The report as the API answers it: amounts as decimal text.
#[derive(Serialize)]
struct ReserveView {
    currency: String,
    reserve: String,
    customer_funds: String,
    in_transit: String,
    escrow: String,
    payouts_sent: String,
    fees: String,
    suspense: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    bank_balance: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    difference: Option<String>,
}

impl Serialize for ReserveReport {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let money = |value: i128| format_wide(&self.currency, value);
        ReserveView {
            currency: self.currency.code_str().to_string(),
            reserve: money(self.reserve),
            customer_funds: money(self.customer_funds),
            in_transit: money(self.in_transit),
            escrow: money(self.escrow),
            payouts_sent: money(self.payouts_sent),
            fees: money(self.fees),
            suspense: money(self.suspense),
            ok: self.ok(),
            bank_balance: self.bank_balance.map(money),
            difference: self.difference().map(money),
        }
        .serialize(serializer)
    }
}

/// Formats a sum over shards, which may exceed one amount's range.
pub fn format_wide(spec: &CurrencySpec, value: i128) -> String {
    if let Ok(minor) = Minor::try_from(value) {
        return spec.format(minor);
    }
    let scale = 10u128.pow(spec.exponent as u32);
    let (sign, magnitude) = (if value < 0 { "-" } else { "" }, value.unsigned_abs());
    match spec.exponent {
        0 => format!("{sign}{magnitude}"),
        width => format!("{sign}{}.{:0width$}", magnitude / scale, magnitude % scale, width = width as usize),
    }
}

/// The reserve check of `currency`. Blocking: reads every shard, and the bank when asked.
pub fn check(engine: &Engine, currency: CurrencyId, bank: BankFigure<'_>) -> Result<ReserveReport, ClearingError> {
    let spec = *engine.config().currencies.get(currency.0 as usize).ok_or_else(|| ClearingError::invalid("unknown currency", "currency"))?;
    let bank_balance = match bank {
        BankFigure::None => None,
        BankFigure::Stated(text) => Some(i128::from(spec.parse(text).ok_or_else(|| ClearingError::invalid("bank_balance is an amount", "bank_balance"))?)),
        BankFigure::Bank(bank) => Some(bank.reserve_balance(&spec)?.0),
    };
    // Per shard: [customer funds, then each system role], as balances (credit positive).
    let roles = SystemRole::ALL.len();
    let mut totals = vec![0i128; roles + 1];
    for shard in 0..engine.config().shard_count {
        let part = engine.read_shard(shard, move |state| {
            let mut sums = vec![0i128; roles + 1];
            for account in state.accounts.iter().filter(|a| a.currency == currency) {
                let slot = match account.kind {
                    AccountKind::Customer => 0,
                    AccountKind::System(role) => 1 + role.index(),
                };
                sums[slot] += state.balance(account);
            }
            sums
        })?;
        for (total, value) in totals.iter_mut().zip(part) {
            *total += value;
        }
    }
    let role = |r: SystemRole| totals[1 + r.index()];
    Ok(ReserveReport {
        currency: spec,
        reserve: -role(SystemRole::Reserve),
        customer_funds: totals[0],
        in_transit: role(SystemRole::InTransit),
        escrow: role(SystemRole::Escrow),
        payouts_sent: role(SystemRole::PayoutPending),
        fees: role(SystemRole::FeeIncome),
        suspense: role(SystemRole::Suspense),
        bank_balance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_sums_format_exactly() {
        let cny = CurrencySpec::new("CNY", 2).expect("valid");
        let jpy = CurrencySpec::new("JPY", 0).expect("valid");
        let beyond = i64::MAX as i128 * 10 + 7;
        let cases: &[(CurrencySpec, i128, &str)] = &[
            (cny, 0, "0.00"),
            (cny, -1, "-0.01"),
            (cny, 143_850, "1438.50"),
            (cny, beyond, "922337203685477580.77"),
            (cny, -beyond, "-922337203685477580.77"),
            (jpy, beyond, "92233720368547758077"),
        ];
        for (spec, value, expected) in cases {
            assert_eq!(format_wide(spec, *value), *expected, "{value}");
        }
    }
}
