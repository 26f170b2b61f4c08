//! Fuzz targets of the gateway's parsers of outside text: ids (accounts, orders, members,
//! platforms, virtual account numbers, bank order references), platform order numbers, card
//! numbers, listing cursors, times and API amounts. Each answers a value or a refusal, never
//! panics, and accepts only the canonical text it would print itself. (Signed headers, bodies and
//! query strings are fuzzed through the real server: `tests/fuzz_http.rs`.)
//!
//! Cases per target come from `FUZZ_CASES` (small by default, for CI); before a release:
//! `FUZZ_CASES=1000000 cargo nextest run --release -E 'test(fuzz_)'`.

use engine::ledger::types::{AccountId, OrderId};
use engine::money::{CurrencySpec, AMOUNT_MINOR_MAX};
use gateway::accounts::{parse_account_id, parse_virtual_account_no, public_account_id, virtual_account_no};
use gateway::cards::valid_card_no;
use gateway::ids::{out_order_no, parse_prefixed};
use gateway::members::Member;
use gateway::orders::{format_time, parse_cursor, parse_order_id, parse_time, public_order_id, Position};
use gateway::platforms::Platform;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn cases(default: u32) -> u32 {
    std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn runner(default: u32) -> TestRunner {
    TestRunner::new(Config { cases: cases(default), failure_persistence: None, ..Config::default() })
}

/// Id-looking text: a known prefix and digits (leading zeros, signs, overflow), or anything.
fn id_text() -> impl Strategy<Value = String> {
    let prefix = prop_oneof![Just("acc_"), Just("ord_"), Just("mem_"), Just("plt_"), Just("card_"), Just(""), Just("ACC_")];
    prop_oneof![
        (prefix.clone(), "[0-9]{1,25}").prop_map(|(p, d)| format!("{p}{d}")),
        (prefix, "[-+ 0-9a-f_.]{0,22}").prop_map(|(p, d)| format!("{p}{d}")),
        "[0-9]{13,20}",
        any::<String>(),
    ]
}

#[test]
fn fuzz_ids_accept_only_their_canonical_text() {
    runner(20_000)
        .run(&id_text(), |text| {
            if let Some(id) = parse_account_id(&text) {
                prop_assert_eq!(public_account_id(id), text.clone());
            }
            if let Some(id) = parse_order_id(&text) {
                prop_assert_eq!(public_order_id(id), text.clone());
                prop_assert_eq!(bank::parse_order_ref(&text), Some(id));
            }
            if let Some(id) = bank::parse_order_ref(&text) {
                prop_assert_eq!(public_order_id(id), text.clone());
            }
            if let Some(id) = Member::parse_public_id(&text) {
                prop_assert_eq!(Member::public_id_of(id), text.clone());
            }
            if let Some(id) = Platform::parse_public_id(&text) {
                prop_assert_eq!(format!("plt_{id}"), text.clone());
            }
            if let Some(id) = parse_prefixed::<u64>(&text, "card_") {
                prop_assert_eq!(format!("card_{id}"), text.clone());
            }
            if let Some(id) = parse_virtual_account_no(&text) {
                prop_assert_eq!(virtual_account_no(id), text.clone());
            }
            let _ = valid_card_no(&text);
            Ok(())
        })
        .unwrap();
}

#[test]
fn fuzz_ids_round_trip() {
    runner(20_000)
        .run(&(any::<u64>(), 0u64..1_000_000_000_000), |(id, small)| {
            prop_assert_eq!(parse_account_id(&public_account_id(AccountId(id))), Some(AccountId(id)));
            prop_assert_eq!(parse_order_id(&public_order_id(OrderId(id))), Some(OrderId(id)));
            prop_assert_eq!(Member::parse_public_id(&Member::public_id_of(id)), Some(id));
            prop_assert_eq!(parse_virtual_account_no(&virtual_account_no(AccountId(small))), Some(AccountId(small)));
            Ok(())
        })
        .unwrap();
}

#[test]
fn fuzz_out_order_numbers_are_1_to_64_of_the_allowed_characters() {
    let text = prop_oneof!["[A-Za-z0-9_-]{0,70}", "[A-Za-z0-9_ .\u{0}é工-]{0,70}", any::<String>()];
    runner(20_000)
        .run(&text, |text| {
            let allowed = (1..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            let parsed = out_order_no(&text, "out_order_no");
            prop_assert_eq!(parsed.is_ok(), allowed, "{:?}", text);
            if let Err(error) = parsed {
                prop_assert_eq!(error.code, "invalid_request");
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn fuzz_cursors_and_times_parse_or_refuse() {
    let text = prop_oneof![
        (any::<u64>(), any::<u64>()).prop_map(|(a, b)| format!("{a}-{b}")),
        "[-0-9]{0,45}",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})",
        "-?[0-9]{1,6}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z",
        any::<String>(),
    ];
    runner(20_000)
        .run(&text, |text| {
            match parse_cursor(Some(&text)) {
                Ok(Position(at, number)) => prop_assert_eq!(parse_cursor(Some(&format!("{at}-{number}"))).ok(), Some(Position(at, number))),
                Err(error) => prop_assert_eq!(error.code, "invalid_request"),
            }
            match parse_time(&text, "created_after") {
                Ok(at) => prop_assert_eq!(parse_time(&format_time(at), "created_after").ok(), Some(at)),
                Err(error) => prop_assert_eq!(error.code, "invalid_request"),
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn fuzz_api_amounts_are_positive_bounded_and_exact() {
    let text = prop_oneof!["-?[0-9]{1,22}(\\.[0-9]{0,4})?", "[-+0-9.eE_ ]{0,24}", any::<String>()];
    let currencies = [CurrencySpec::new("CNY", 2).expect("valid"), CurrencySpec::new("JPY", 0).expect("valid"), CurrencySpec::new("BHD", 3).expect("valid")];
    runner(20_000)
        .run(&(text, 0usize..3), |(text, which)| {
            let currency = currencies[which];
            if let Ok(minor) = gateway::parse_amount(&text, &currency) {
                prop_assert!(minor > 0 && minor <= AMOUNT_MINOR_MAX, "{:?} is {}", text, minor);
                prop_assert_eq!(gateway::parse_amount(&currency.format(minor), &currency), Ok(minor));
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn fuzz_bank_callback_signatures_verify_only_when_signed_within_the_window() {
    // `X-Channel-Signature: t=..,v1=..` as a bank (or anyone) sends it: wild timestamps (the ends
    // of i64, whose distance to now once overflowed), hex or not, repeated or missing parts.
    let key = "0123456789abcdef0123456789abcdef";
    let now = 1_764_547_200i64;
    let timestamp = prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(now), now - 400..now + 400, any::<i64>()];
    let header = prop_oneof![(timestamp.clone(), "[0-9a-f]{0,70}").prop_map(|(t, v)| format!("t={t},v1={v}")), "[tv1=,0-9a-fA-F -]{0,40}", any::<String>(),];
    let body = proptest::collection::vec(any::<u8>(), 0..64);
    runner(20_000)
        .run(&(header, body, timestamp), |(header, body, signed_at)| {
            let _ = banksim::verify_signature(key, &header, &body, now);
            let signed = banksim::signature_header(key, signed_at, &body);
            let inside = (i128::from(signed_at) - i128::from(now)).abs() <= i128::from(banksim::CALLBACK_WINDOW_SECONDS);
            prop_assert_eq!(banksim::verify_signature(key, &signed, &body, now).is_ok(), inside, "{}", signed);
            Ok(())
        })
        .unwrap();
}
