//! The HTTP edge: the only crate that knows HTTP and JSON. The signed platform OpenAPI of
//! API.md, the operator API, the bank simulator, order events and webhooks, and turning API
//! amounts (decimal strings in major units) into exact minor units. ARCHITECTURE.md maps the
//! modules.

pub mod accounts;
pub mod adjustments;
pub mod admin;
pub mod agreements;
pub mod auth;
pub mod backups;
pub mod bulk;
pub mod cards;
pub mod charts;
pub mod commission;
pub mod contract;
pub mod deadline;
pub mod entries;
pub mod error;
pub mod events;
pub mod h5;
pub mod h5_cashier;
pub mod h5_text;
pub mod h5_wallet;
pub mod health;
pub mod identity;
pub mod ids;
pub mod members;
pub mod metrics;
pub mod notifications;
pub mod offline;
pub mod openapi;
pub mod orders;
pub mod passwords;
pub mod payments;
pub mod platforms;
pub mod portal;
pub mod quotas;
pub mod recharges;
pub mod reconcile;
pub mod records;
pub mod replay;
pub mod request_id;
pub mod schemas;
pub mod secrets;
pub mod server;
pub mod settlements;
pub mod signed;
pub mod simulator;
pub mod stats;
pub mod v1;
pub mod withdrawals;

use engine::money::{CurrencySpec, DecimalError, Minor, AMOUNT_MINOR_MAX};

/// Why an API amount was refused (each maps to the API's `invalid_amount` code).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount is not a decimal number")]
    NotANumber,
    #[error("amount has more decimals than the currency allows")]
    TooManyDecimals,
    #[error("amount must be positive")]
    NotPositive,
    #[error("amount is too large")]
    TooLarge,
}

impl AmountError {
    /// The API error code (API.md): always `invalid_amount`.
    pub fn code(&self) -> &'static str {
        "invalid_amount"
    }
}

/// Parses an API amount like `"100.50"` into minor units of `currency` (the engine's one decimal
/// parser), positive and within `AMOUNT_MINOR_MAX`. Written the one way the document's pattern
/// says (`contract::amount_pattern`): no leading zeros (`"0100"`, `"00.5"` are not amounts).
/// Text a person typed for a name, title or note: not all blank and no control characters
/// (tabs and line breaks too when `paragraphs`): what the document's text patterns say.
pub fn plain_text(text: &str, paragraphs: bool) -> bool {
    !text.trim().is_empty() && text.chars().all(|c| !c.is_control() || (paragraphs && matches!(c, '\t' | '\n' | '\r')))
}

pub fn parse_amount(text: &str, currency: &CurrencySpec) -> Result<Minor, AmountError> {
    if text.len() > 1 && text.starts_with('0') && !text.starts_with("0.") {
        return Err(AmountError::NotANumber);
    }
    let minor = engine::money::parse_decimal(text, currency.exponent).map_err(|error| match error {
        DecimalError::NotANumber => AmountError::NotANumber,
        DecimalError::TooManyDecimals => AmountError::TooManyDecimals,
        DecimalError::TooLarge => AmountError::TooLarge,
    })?;
    if minor <= 0 {
        return Err(AmountError::NotPositive);
    }
    if minor > AMOUNT_MINOR_MAX {
        return Err(AmountError::TooLarge);
    }
    Ok(minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The modules of this crate import each other without a circle (ARCHITECTURE.md): module
    /// `a` depends on `b` when its non-test code names `crate::b`; no module may reach itself.
    #[test]
    fn modules_import_each_other_without_a_circle() {
        use std::collections::{BTreeMap, BTreeSet};
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in std::fs::read_dir(dir).unwrap() {
            let path = file.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if name == "lib" || path.extension().is_some_and(|e| e != "rs") {
                continue;
            }
            // A directory is one module: the code of all its Rust files.
            let files = if path.is_dir() {
                std::fs::read_dir(&path).unwrap().map(|f| f.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "rs")).collect()
            } else {
                vec![path.clone()]
            };
            let code: String = files
                .iter()
                .map(|file| std::fs::read_to_string(file).unwrap().split("#[cfg(test)]").next().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
                .join("\n");
            let named = code
                .match_indices("crate::")
                .map(|(at, _)| code[at + 7..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit()).collect::<String>());
            uses.insert(name.clone(), named.filter(|other| *other != name).collect());
        }
        for start in uses.keys() {
            let (mut seen, mut stack) = (BTreeSet::new(), vec![start.clone()]);
            while let Some(module) = stack.pop() {
                for next in uses.get(&module).into_iter().flatten() {
                    assert_ne!(next, start, "{start} reaches itself through {module}");
                    if seen.insert(next.clone()) {
                        stack.push(next.clone());
                    }
                }
            }
        }
    }

    #[test]
    fn amount_table() {
        let cny = CurrencySpec::new("CNY", 2).expect("valid");
        let cases: &[(&str, Result<Minor, AmountError>)] = &[
            ("100.50", Ok(10050)),
            ("0.01", Ok(1)),
            ("100", Ok(10000)),
            ("1.500", Err(AmountError::TooManyDecimals)),
            ("1.505", Err(AmountError::TooManyDecimals)),
            ("0", Err(AmountError::NotPositive)),
            ("0.00", Err(AmountError::NotPositive)),
            ("-1", Err(AmountError::NotPositive)),
            ("abc", Err(AmountError::NotANumber)),
            ("1e5", Err(AmountError::NotANumber)),
            ("", Err(AmountError::NotANumber)),
            (" 1", Err(AmountError::NotANumber)),
            ("99999999999999999999", Err(AmountError::TooLarge)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_amount(text, &cny), *expected, "{text:?}");
        }
    }
}
