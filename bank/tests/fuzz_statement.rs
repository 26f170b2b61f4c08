//! Fuzz targets of statement files (what a bank sends and the operator uploads): arbitrary bytes,
//! and structure-aware files (headers in any order and case, quoting, a byte-order mark, GBK,
//! ragged lines, wild field values). Parsing answers lines or an error, never panics; every line
//! it answers has the fields the reconciliation relies on; what we write we read back.
//!
//! Cases per target come from `FUZZ_CASES` (small by default, for CI); before a release:
//! `FUZZ_CASES=1000000 cargo nextest run --release -E 'test(fuzz_)'`.

use bank::statement::{parse, write, StatementLine, HEADER};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn cases(default: u32) -> u32 {
    std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn runner(default: u32) -> TestRunner {
    TestRunner::new(Config { cases: cases(default), failure_persistence: None, ..Config::default() })
}

/// Checks what `parse` answered for `bytes`: no panic, and accepted lines are complete.
fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(lines) = parse(bytes) {
        for line in lines {
            prop_assert!(matches!(line.direction.as_str(), "in" | "out"), "{:?}", line);
            prop_assert!(matches!(line.status.as_str(), "succeeded" | "failed"), "{:?}", line);
            prop_assert!(!line.bank_ref.is_empty() && !line.order_id.is_empty() && !line.amount.is_empty(), "{:?}", line);
        }
    }
    Ok(())
}

#[test]
fn fuzz_statement_of_arbitrary_bytes_is_lines_or_an_error() {
    let bytes = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        proptest::collection::vec(any::<u8>(), 0..512).prop_map(|v| [&b"bank_ref,order_id,direction,amount,status,fee\n"[..], &v].concat()),
        proptest::collection::vec(any::<u8>(), 0..512).prop_map(|v| [&b"\xEF\xBB\xBFbank_ref,order_id,direction,amount,status\n"[..], &v].concat()),
    ];
    runner(20_000).run(&bytes, |bytes| check(&bytes)).unwrap();
}

/// One field as banks write them, and as they should not.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("in".to_string()),
        Just("out".to_string()),
        Just("succeeded".to_string()),
        Just("failed".to_string()),
        "-?[0-9]{1,25}(\\.[0-9]{0,4})?",
        "[A-Za-z0-9_-]{0,20}",
        "[ \t\"',\r\n]{0,4}[A-Za-z0-9]{0,4}[ \t\"',\r\n]{0,4}",
        "[工行备注退票成功失败]{0,6}",
        any::<String>(),
    ]
}

/// A statement file: a header (the known columns, shuffled, in any case, maybe one missing or
/// one extra), ragged lines, quoting, then UTF-8 with or without a byte-order mark, or GBK.
fn statement_file() -> impl Strategy<Value = Vec<u8>> {
    let columns = Just(HEADER.iter().map(|c| c.to_string()).chain(["备注".to_string()]).collect::<Vec<_>>()).prop_shuffle();
    let lines = proptest::collection::vec(proptest::collection::vec(field(), 0..9), 0..8);
    (columns, 0usize..8, any::<bool>(), lines, 0u8..3, any::<bool>()).prop_map(|(mut columns, drop, upper, lines, encoding, quote)| {
        if drop < columns.len() {
            columns.remove(drop);
        }
        if upper {
            columns.iter_mut().for_each(|c| *c = c.to_uppercase());
        }
        let quoted = |f: &String| if quote { format!("\"{}\"", f.replace('"', "\"\"")) } else { f.clone() };
        let mut text = columns.iter().map(quoted).collect::<Vec<_>>().join(",");
        for line in &lines {
            text.push('\n');
            text.push_str(&line.iter().map(quoted).collect::<Vec<_>>().join(","));
        }
        match encoding {
            0 => text.into_bytes(),
            1 => [&b"\xEF\xBB\xBF"[..], text.as_bytes()].concat(),
            _ => encoding_rs::GBK.encode(&text).0.into_owned(),
        }
    })
}

#[test]
fn fuzz_statement_of_structured_files_is_lines_or_an_error() {
    runner(3_000).run(&statement_file(), |bytes| check(&bytes)).unwrap();
}

/// Text the file keeps as it is (the reader trims spaces around fields, so none at the ends).
fn kept() -> impl Strategy<Value = String> {
    prop_oneof!["[A-Za-z0-9_-]{1,20}", "[A-Za-z0-9工]([A-Za-z0-9 ,\"'\n工行]{0,20}[A-Za-z0-9工])?"]
}

#[test]
fn fuzz_statement_what_we_write_we_read_back() {
    let line = (kept(), kept(), any::<bool>(), kept(), any::<bool>(), proptest::option::of(kept())).prop_map(
        |(bank_ref, order_id, inward, amount, succeeded, fee)| StatementLine {
            bank_ref,
            order_id,
            direction: if inward { "in" } else { "out" }.into(),
            amount,
            status: if succeeded { "succeeded" } else { "failed" }.into(),
            fee,
        },
    );
    // A statement names each bank reference once (`parse` refuses a file naming one twice).
    let distinct = proptest::collection::vec(line, 0..10).prop_map(|mut lines| {
        let mut seen = std::collections::HashSet::new();
        lines.retain(|line| seen.insert(line.bank_ref.clone()));
        lines
    });
    runner(1_500)
        .run(&distinct, |lines| {
            prop_assert_eq!(parse(write(&lines).as_bytes()), Ok(lines));
            Ok(())
        })
        .unwrap();
}
