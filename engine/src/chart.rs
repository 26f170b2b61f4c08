//! The chart of accounts: which subject (accounting code) each kind of account is booked under.
//! Configured by the system operator; every system role and customer funds need exactly one subject.

use crate::ledger::types::{AccountKind, SystemRole};

/// A subject: an accounting code and its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    pub code: String,
    pub name: String,
}

/// Subjects for customer funds and for each system role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChartOfAccounts {
    pub customer_funds: Subject,
    /// Indexed by `SystemRole::index()`.
    pub roles: Vec<Subject>,
}

/// Why a chart was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChartError {
    #[error("chart of accounts: no subject for {0}")]
    Missing(&'static str),
    #[error("chart of accounts: subject code {0:?} is used twice")]
    DuplicateCode(String),
    #[error("chart of accounts: subject code {0:?} is not 4 to 8 digits")]
    BadCode(String),
}

impl ChartOfAccounts {
    /// Builds a chart from (key, code, name) rows; keys are "customer_funds" and role names.
    pub fn from_rows(rows: &[(String, String, String)]) -> Result<ChartOfAccounts, ChartError> {
        let find = |key: &'static str| -> Result<Subject, ChartError> {
            let (_, code, name) = rows.iter().find(|(k, _, _)| k == key).ok_or(ChartError::Missing(key))?;
            if !(4..=8).contains(&code.len()) || !code.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ChartError::BadCode(code.clone()));
            }
            Ok(Subject { code: code.clone(), name: name.clone() })
        };
        let customer_funds = find("customer_funds")?;
        let roles = SystemRole::ALL.iter().map(|role| find(role.name())).collect::<Result<Vec<_>, _>>()?;
        let mut codes: Vec<&String> = roles.iter().map(|s| &s.code).chain([&customer_funds.code]).collect();
        codes.sort();
        if let Some(pair) = codes.windows(2).find(|w| w[0] == w[1]) {
            return Err(ChartError::DuplicateCode(pair[0].clone()));
        }
        Ok(ChartOfAccounts { customer_funds, roles })
    }

    /// The subject an account of `kind` is booked under.
    pub fn subject(&self, kind: AccountKind) -> &Subject {
        match kind {
            AccountKind::Customer => &self.customer_funds,
            AccountKind::System(role) => &self.roles[role.index()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(extra: &[(&str, &str)]) -> Vec<(String, String, String)> {
        let mut rows: Vec<(String, String, String)> = [
            ("customer_funds", "2201"),
            ("reserve", "1002"),
            ("in_transit", "1901"),
            ("escrow", "2203"),
            ("payout_pending", "2205"),
            ("fee_income", "6021"),
            ("suspense", "2241"),
        ]
        .iter()
        .map(|(k, c)| (k.to_string(), c.to_string(), format!("{k} subject")))
        .collect();
        for (k, c) in extra {
            rows.retain(|(key, _, _)| key != k);
            rows.push((k.to_string(), c.to_string(), String::new()));
        }
        rows
    }

    #[test]
    fn chart_table() {
        let cases: &[(&[(&str, &str)], Result<(), ChartError>)] = &[
            (&[], Ok(())),
            (&[("escrow", "1002")], Err(ChartError::DuplicateCode("1002".into()))),
            (&[("escrow", "12")], Err(ChartError::BadCode("12".into()))),
            (&[("escrow", "abcd")], Err(ChartError::BadCode("abcd".into()))),
        ];
        for (extra, expected) in cases {
            assert_eq!(ChartOfAccounts::from_rows(&rows(extra)).map(|_| ()), *expected, "{extra:?}");
        }
        let mut missing = rows(&[]);
        missing.retain(|(k, _, _)| k != "suspense");
        assert_eq!(ChartOfAccounts::from_rows(&missing), Err(ChartError::Missing("suspense")));
        let chart = ChartOfAccounts::from_rows(&rows(&[])).expect("valid");
        assert_eq!(chart.subject(AccountKind::System(SystemRole::Reserve)).code, "1002");
        assert_eq!(chart.subject(AccountKind::Customer).code, "2201");
    }
}
