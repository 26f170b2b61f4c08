//! Checks of Chinese identity numbers and phone numbers, exact to their standards.

/// GB 11643-1999 resident identity number: 17 digits, a valid birth date, and the ISO 7064
/// MOD 11-2 check character (0-9 or X).
pub fn valid_resident_id(text: &str) -> bool {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: &[u8; 11] = b"10X98765432";
    let bytes = text.as_bytes();
    if bytes.len() != 18 || !bytes[..17].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = bytes[..17].iter().zip(WEIGHTS).map(|(b, w)| (b - b'0') as u32 * w).sum();
    if bytes[17].to_ascii_uppercase() != CHECK[(sum % 11) as usize] {
        return false;
    }
    let number = |range: std::ops::Range<usize>| text[range].parse::<u32>().unwrap_or(0);
    let (year, month, day) = (number(6..10), number(10..12), number(12..14));
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => 0,
    };
    (1850..=2100).contains(&year) && (1..=days_in_month).contains(&day)
}

/// GB 32100-2015 unified social credit code: 18 characters of the 31-character set (no I, O, S,
/// V, Z) with the MOD 31 check character.
pub fn valid_credit_code(text: &str) -> bool {
    const CHARSET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
    const WEIGHTS: [u32; 17] = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28];
    let bytes = text.as_bytes();
    if bytes.len() != 18 {
        return false;
    }
    let mut values = [0u32; 18];
    for (slot, byte) in values.iter_mut().zip(bytes) {
        match CHARSET.iter().position(|c| c == byte) {
            Some(value) => *slot = value as u32,
            None => return false,
        }
    }
    let sum: u32 = values[..17].iter().zip(WEIGHTS).map(|(v, w)| v * w).sum();
    let check = (31 - sum % 31) % 31;
    values[17] == check
}

/// A mainland China mobile number: 11 digits starting with 13 to 19.
pub fn valid_phone(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 11 && bytes.iter().all(u8::is_ascii_digit) && bytes[0] == b'1' && (b'3'..=b'9').contains(&bytes[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_id_table() {
        let cases: &[(&str, bool)] = &[
            ("11010519491231002X", true),
            ("11010519491231002x", true),
            ("110105194912310021", false), // wrong check character
            ("1101051949123100", false),
            ("11010519491231002Y", false),
            ("440524188001010014", true),
            ("11010520000229001X", false),
        ];
        for (text, expected) in cases {
            assert_eq!(valid_resident_id(text), *expected, "{text}");
        }
        // Impossible birth dates fail even with a correct check character.
        for first17 in ["11010519490230002", "11010519491331002", "11010518000101002"] {
            assert!(!valid_resident_id(&with_check(first17)), "{first17}");
        }
        assert!(valid_resident_id(&with_check("11010520000229001")), "29 February 2000 existed");
    }

    fn with_check(first17: &str) -> String {
        const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
        let sum: u32 = first17.bytes().zip(WEIGHTS).map(|(b, w)| (b - b'0') as u32 * w).sum();
        format!("{first17}{}", b"10X98765432"[(sum % 11) as usize] as char)
    }

    #[test]
    fn credit_code_table() {
        let cases: &[(&str, bool)] = &[
            ("91350100M000100Y43", true),
            ("91350100M000100Y44", false),
            ("91350100M000100Y4", false),
            ("91350100M000100I43", false),
            ("911100007109288314", true),
        ];
        for (text, expected) in cases {
            assert_eq!(valid_credit_code(text), *expected, "{text}");
        }
    }

    #[test]
    fn phone_table() {
        let cases: &[(&str, bool)] = &[("13800138000", true), ("12800138000", false), ("1380013800", false), ("1380013800a", false)];
        for (text, expected) in cases {
            assert_eq!(valid_phone(text), *expected, "{text}");
        }
    }
}
