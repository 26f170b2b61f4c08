//! A channel's statement file: one line per order the bank decided on a business day,
//! `bank_ref,order_id,direction,amount,status[,fee]`. Read and written with the `csv` crate
//! (quoting, a UTF-8 byte-order mark); files in GBK, as Chinese banks send them, are decoded
//! with `encoding_rs`.

use serde::{Deserialize, Serialize};

/// Lines one file may hold.
pub const LINES_MAX: usize = 2_000_000;

/// The header of the files we write.
pub const HEADER: [&str; 6] = ["bank_ref", "order_id", "direction", "amount", "status", "fee"];

/// One statement line (amounts as the bank wrote them: decimal text in major units).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementLine {
    pub bank_ref: String,
    pub order_id: String,
    /// `in` or `out`.
    pub direction: String,
    pub amount: String,
    /// `succeeded` or `failed`.
    pub status: String,
    /// What the bank charged by its tariff (0 for a failed order); files without the column are
    /// not checked for fees.
    #[serde(default)]
    pub fee: Option<String>,
}

/// The longest bank reference a statement line may have, in characters.
pub const BANK_REF_CHARS_MAX: usize = 100;

/// Why a statement file was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    #[error("the file is neither UTF-8 nor GBK text")]
    Encoding,
    #[error("the header lacks the column {0}")]
    MissingColumn(&'static str),
    #[error("line {line}: {reason}")]
    Line { line: u64, reason: String },
    #[error("more than {LINES_MAX} lines")]
    TooManyLines,
}

/// The file's text: UTF-8 (a byte-order mark is dropped), else GBK.
pub fn decode(bytes: &[u8]) -> Result<std::borrow::Cow<'_, str>, StatementError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Ok(std::borrow::Cow::Borrowed(text));
    }
    encoding_rs::GBK.decode_without_bom_handling_and_without_replacement(bytes).ok_or(StatementError::Encoding)
}

/// Parses a statement file (UTF-8 or GBK; a header line naming the columns, in any order, then
/// one line per order; blank lines skipped).
pub fn parse(bytes: &[u8]) -> Result<Vec<StatementLine>, StatementError> {
    let text = decode(bytes)?;
    let mut reader = csv::ReaderBuilder::new().flexible(true).trim(csv::Trim::All).from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| StatementError::Line { line: 1, reason: e.to_string() })?.clone();
    let column = |name: &'static str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let required = |name: &'static str| column(name).ok_or(StatementError::MissingColumn(name));
    let (bank_ref, order_id, direction, amount, status) =
        (required("bank_ref")?, required("order_id")?, required("direction")?, required("amount")?, required("status")?);
    let fee = column("fee");
    let mut lines = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for record in reader.records() {
        let record = record.map_err(|e| StatementError::Line { line: e.position().map_or(0, |p| p.line()), reason: e.to_string() })?;
        if record.iter().all(str::is_empty) {
            continue;
        }
        let line = record.position().map_or(0, |p| p.line());
        let field = |index: usize| record.get(index).unwrap_or_default().to_string();
        let parsed = StatementLine {
            bank_ref: field(bank_ref),
            order_id: field(order_id),
            direction: field(direction),
            amount: field(amount),
            status: field(status),
            fee: fee.map(field).filter(|f| !f.is_empty()),
        };
        if !matches!(parsed.status.as_str(), "succeeded" | "failed") || !matches!(parsed.direction.as_str(), "in" | "out") {
            return Err(StatementError::Line { line, reason: "direction is in or out, status succeeded or failed".into() });
        }
        if parsed.bank_ref.is_empty() || parsed.order_id.is_empty() || parsed.amount.is_empty() {
            return Err(StatementError::Line { line, reason: "bank_ref, order_id and amount are required".into() });
        }
        // A reference names a line's case (`recon_hand_{channel}_{bank_ref}` at most: 117
        // characters, within the 128 the portal's forms take) and its carry: one of 100
        // characters at most, once a file (since session 62: two lines of one reference
        // shared a case about the first, and a reference of any length made a case id the
        // cases' pages could not page past).
        if parsed.bank_ref.chars().count() > BANK_REF_CHARS_MAX {
            return Err(StatementError::Line { line, reason: format!("bank_ref is longer than {BANK_REF_CHARS_MAX} characters") });
        }
        if !seen.insert(parsed.bank_ref.clone()) {
            return Err(StatementError::Line { line, reason: format!("bank_ref {} is on an earlier line too", parsed.bank_ref) });
        }
        lines.push(parsed);
        if lines.len() > LINES_MAX {
            return Err(StatementError::TooManyLines);
        }
    }
    Ok(lines)
}

/// Writes lines as a UTF-8 CSV file with the header (`HEADER`).
pub fn write(lines: &[StatementLine]) -> String {
    let mut writer = csv::Writer::from_writer(Vec::with_capacity(64 * (lines.len() + 1)));
    let mut put = |row: [&str; 6]| writer.write_record(row).expect("writing to memory cannot fail");
    put(HEADER);
    for line in lines {
        put([&line.bank_ref, &line.order_id, &line.direction, &line.amount, &line.status, line.fee.as_deref().unwrap_or("")]);
    }
    let bytes = writer.into_inner().expect("writing to memory cannot fail");
    String::from_utf8(bytes).expect("the csv writer writes the UTF-8 it is given")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(bank_ref: &str, order: &str, amount: &str, fee: Option<&str>) -> StatementLine {
        StatementLine {
            bank_ref: bank_ref.into(),
            order_id: order.into(),
            direction: "in".into(),
            amount: amount.into(),
            status: "succeeded".into(),
            fee: fee.map(Into::into),
        }
    }

    #[test]
    fn files_table() {
        let cases: &[(&[u8], Result<Vec<StatementLine>, StatementError>)] = &[
            (b"bank_ref,order_id,direction,amount,status\nB1,ord_1,in,1.00,succeeded\n", Ok(vec![line("B1", "ord_1", "1.00", None)])),
            (b"bank_ref,order_id,direction,amount,status,fee\nB1,ord_1,in,1.00,succeeded,0.01\n\n", Ok(vec![line("B1", "ord_1", "1.00", Some("0.01"))])),
            // A byte-order mark, columns in another order, quoted fields, spaces.
            (
                b"\xEF\xBB\xBFstatus,amount,order_id,bank_ref,direction\n succeeded ,\"1,000.00\",ord_2,\"B,2\", in \n",
                Ok(vec![line("B,2", "ord_2", "1,000.00", None)]),
            ),
            (b"bank_ref,order_id,direction,amount\nB1,ord_1,in,1.00\n", Err(StatementError::MissingColumn("status"))),
            (
                b"bank_ref,order_id,direction,amount,status\nB1,ord_1,sideways,1.00,succeeded\n",
                Err(StatementError::Line { line: 2, reason: "direction is in or out, status succeeded or failed".into() }),
            ),
            (b"\xFF\xFE\x00", Err(StatementError::Encoding)),
            (
                b"bank_ref,order_id,direction,amount,status\nB1,ord_1,in,1.00,succeeded\nB1,ord_2,in,2.00,succeeded\n",
                Err(StatementError::Line { line: 3, reason: "bank_ref B1 is on an earlier line too".into() }),
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(&parse(bytes), expected, "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn a_bank_reference_is_at_most_100_characters() {
        let file = |chars: usize| format!("bank_ref,order_id,direction,amount,status\n{},ord_1,in,1.00,succeeded\n", "工".repeat(chars));
        assert_eq!(parse(file(100).as_bytes()).map(|lines| lines[0].bank_ref.chars().count()), Ok(100));
        assert_eq!(parse(file(101).as_bytes()), Err(StatementError::Line { line: 2, reason: "bank_ref is longer than 100 characters".into() }));
    }

    #[test]
    fn gbk_files_are_decoded() {
        // "备注" (remark) in GBK as an extra column, and a bank reference in Chinese.
        let (header, _, _) = encoding_rs::GBK.encode("bank_ref,order_id,direction,amount,status,备注\n工行001,ord_3,out,2.50,failed,退票\n");
        let parsed = parse(&header).expect("GBK parses");
        assert_eq!(parsed[0].bank_ref, "工行001");
        assert_eq!(parsed[0].status, "failed");
    }

    #[test]
    fn what_we_write_we_read_back() {
        let lines = vec![line("B1", "ord_1", "1.00", Some("0.01")), line("B,\"2\"", "ord_2", "3.00", None)];
        assert_eq!(parse(write(&lines).as_bytes()).expect("round trip"), lines);
    }
}
