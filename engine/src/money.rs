//! Exact money: amounts are integers in a currency's minor unit; currencies are a small table.

use serde::{Deserialize, Serialize};

/// An amount in a currency's minor unit (fen for CNY). Signed: credits positive, debits negative.
pub type Minor = i64;

/// The largest amount one command may carry, so that sums of a bounded number of legs never overflow.
pub const AMOUNT_MINOR_MAX: Minor = 1_000_000_000_000_000; // 10^15 minor units (10 trillion yuan)

/// Index of a currency in the shard's currency table (set at genesis, append-only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CurrencyId(pub u8);

/// A currency: ISO 4217 code and the number of decimals of its minor unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CurrencySpec {
    pub code: [u8; 3],
    pub exponent: u8,
}

impl CurrencySpec {
    /// Builds a spec from a three-letter code; `None` when the code is not three ASCII capitals.
    pub fn new(code: &str, exponent: u8) -> Option<CurrencySpec> {
        let bytes = code.as_bytes();
        if bytes.len() != 3 || !bytes.iter().all(u8::is_ascii_uppercase) || exponent > 6 {
            return None;
        }
        Some(CurrencySpec { code: [bytes[0], bytes[1], bytes[2]], exponent })
    }

    /// The code as text.
    pub fn code_str(&self) -> &str {
        std::str::from_utf8(&self.code).expect("currency codes are ASCII by construction")
    }

    /// Formats a minor amount as a decimal string in major units ("-12.05").
    pub fn format(&self, amount_minor: Minor) -> String {
        let negative = amount_minor < 0;
        let magnitude = amount_minor.unsigned_abs();
        let scale = 10u64.pow(self.exponent as u32);
        let sign = if negative { "-" } else { "" };
        if self.exponent == 0 {
            return format!("{sign}{magnitude}");
        }
        format!("{sign}{}.{:0width$}", magnitude / scale, magnitude % scale, width = self.exponent as usize)
    }

    /// Parses a decimal string in major units into minor units; `None` for more decimals than the
    /// currency allows, non-numeric text or overflow. Zero and negatives parse (callers decide).
    pub fn parse(&self, text: &str) -> Option<Minor> {
        parse_decimal(text, self.exponent).ok()
    }
}

/// Why a decimal text was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("not a decimal number")]
    NotANumber,
    #[error("more decimals than allowed")]
    TooManyDecimals,
    #[error("too large")]
    TooLarge,
}

/// The one parser of decimal text in the product (amounts, fees, statement lines, rates):
/// `[-]digits[.digits]` with at most `places` decimals, as an integer of that many decimals
/// (`"-12.05"` with 2 places is -1205). Strict syntax first (no sign `+`, exponent, spaces or
/// separators, which `rust_decimal` alone would take), then `rust_decimal` for the value. More
/// than 18 `places` is `TooLarge` (no i64 holds the scale).
pub fn parse_decimal(text: &str, places: u8) -> Result<i64, DecimalError> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let plain = !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit())
        && !(digits.contains('.') && fraction.is_empty());
    if !plain {
        return Err(DecimalError::NotANumber);
    }
    if fraction.len() > places as usize {
        return Err(DecimalError::TooManyDecimals);
    }
    // Checked: more than 18 places has no i64 scale (the unchecked power panicked; found by fuzzing).
    let scale = 10i64.checked_pow(u32::from(places)).ok_or(DecimalError::TooLarge)?;
    let value: rust_decimal::Decimal = text.parse().map_err(|_| DecimalError::TooLarge)?;
    let scaled = value.checked_mul(rust_decimal::Decimal::from(scale)).ok_or(DecimalError::TooLarge)?;
    i64::try_from(scaled.trunc()).map_err(|_| DecimalError::TooLarge)
}

/// Splits `total` into parts proportional to `weights`, exactly: the parts always sum to `total`.
/// Rounding rule: each part is rounded down, then the leftover minor units go one each to the
/// parts with the largest remainders (ties to the earlier part). Weights must be non-negative
/// and not all zero.
pub fn split_proportionally(total: Minor, weights: &[Minor], parts: &mut Vec<Minor>) {
    parts.clear();
    let weight_sum: i128 = weights.iter().map(|w| *w as i128).sum();
    assert!(weight_sum > 0, "split needs a positive weight");
    assert!(weights.iter().all(|w| *w >= 0), "split weights are non-negative");
    let mut remainders: Vec<(i128, usize)> = Vec::with_capacity(weights.len());
    let mut assigned: i128 = 0;
    for (index, weight) in weights.iter().enumerate() {
        let numerator = total as i128 * *weight as i128;
        let part = numerator.div_euclid(weight_sum);
        remainders.push((numerator.rem_euclid(weight_sum), index));
        parts.push(part as Minor);
        assigned += part;
    }
    let mut leftover = total as i128 - assigned;
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, index) in remainders {
        if leftover == 0 {
            break;
        }
        parts[index] += 1;
        leftover -= 1;
    }
    assert_eq!(leftover, 0, "proportional split must place every minor unit");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cny() -> CurrencySpec {
        CurrencySpec::new("CNY", 2).expect("valid")
    }

    #[test]
    fn parse_table() {
        let cases: &[(&str, Option<Minor>)] = &[
            ("100.50", Some(10050)),
            ("0.01", Some(1)),
            ("7", Some(700)),
            ("1.5", Some(150)),
            ("-3.10", Some(-310)),
            ("1.001", None),
            ("abc", None),
            ("", None),
            (".5", None),
            ("5.", None),
            ("1e3", None),
            ("99999999999999999999", None),
            // rust_decimal alone would take these: the strict syntax refuses them.
            ("1_000", None),
            ("+5", None),
            (" 5", None),
            ("--5", None),
            ("-", None),
            ("92233720368547758.07", Some(i64::MAX)),
            ("92233720368547758.08", None),
            ("1234567890123456789012345678901234567890", None),
        ];
        for (text, expected) in cases {
            assert_eq!(cny().parse(text), *expected, "parse {text:?}");
        }
        let jpy = CurrencySpec::new("JPY", 0).expect("valid");
        assert_eq!(jpy.parse("12"), Some(12));
        assert_eq!(jpy.parse("12.0"), None);
        assert_eq!(parse_decimal("1.5", 0), Err(DecimalError::TooManyDecimals));
        assert_eq!(parse_decimal("0.006", 6), Ok(6_000), "a rate in parts per million");
    }

    #[test]
    fn format_table() {
        let cases: &[(Minor, &str)] = &[(10050, "100.50"), (1, "0.01"), (-310, "-3.10"), (0, "0.00")];
        for (minor, expected) in cases {
            assert_eq!(cny().format(*minor), *expected);
        }
    }

    #[test]
    fn proportional_split_places_every_unit() {
        let mut parts = Vec::new();
        let cases: &[(Minor, &[Minor], &[Minor])] =
            &[(100, &[1, 1, 1], &[34, 33, 33]), (1, &[1, 1], &[1, 0]), (1000, &[3, 7], &[300, 700]), (101, &[50, 50], &[51, 50])];
        for (total, weights, expected) in cases {
            split_proportionally(*total, weights, &mut parts);
            assert_eq!(&parts[..], *expected);
            assert_eq!(parts.iter().sum::<Minor>(), *total);
        }
    }
}
