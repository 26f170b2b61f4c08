//! The API's ids: a type prefix and the engine's number in canonical decimal (`acc_25`).

/// Validates a platform order number (`invalid_request` naming `param` otherwise).
pub fn out_order_no(text: &str, param: &'static str) -> Result<engine::ledger::command::OutOrderNo, crate::error::ApiError> {
    engine::ledger::command::OutOrderNo::new(text).ok_or_else(|| crate::error::ApiError::invalid("an order number is 1 to 64 characters [A-Za-z0-9_-]", param))
}

/// Parses `PREFIX` + canonical decimal digits (no sign, no leading zero but for "0", no overflow).
pub fn parse_prefixed<T: std::str::FromStr>(text: &str, prefix: &str) -> Option<T> {
    let digits = text.strip_prefix(prefix)?;
    let canonical = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && (digits == "0" || !digits.starts_with('0'));
    if canonical {
        digits.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_ids_table() {
        let cases: &[(&str, Option<u32>)] =
            &[("x_25", Some(25)), ("x_0", Some(0)), ("x_01", None), ("x_", None), ("25", None), ("x_+5", None), ("x_1a", None), ("x_99999999999", None)];
        for (text, expected) in cases {
            assert_eq!(parse_prefixed::<u32>(text, "x_"), *expected, "{text}");
        }
    }
}
