//! Fuzz targets of what clearing parses from outside: dates, minutes and windows (configuration,
//! operator requests, statement days), commission rates, and channel specs and changes (the
//! configuration file, `POST /admin/channels`, `PATCH /admin/channels/{name}`) with wild values,
//! then fees and routing on what was accepted. Each must refuse with an error, never panic, and a
//! refused change must change nothing.
//!
//! Cases per target come from `FUZZ_CASES` (small by default, for CI); before a release:
//! `FUZZ_CASES=1000000 cargo nextest run --release -E 'test(fuzz_)'`.

mod common;

use std::time::Instant;

use clearing_actor::calendar::{date_text, parse_date, parse_minute, parse_window, Calendar};
use clearing_actor::channels::{AccountType, Arrival, At, ChannelChange, ChannelSpec, ChannelTable, RouteRequest};
use clearing_actor::commission::{format_rate, parse_rate};
use engine::money::{CurrencySpec, AMOUNT_MINOR_MAX};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};
use storage::MemoryStore;

fn cases(default: u32) -> u32 {
    std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn runner(default: u32) -> TestRunner {
    TestRunner::new(Config { cases: cases(default), failure_persistence: None, ..Config::default() })
}

#[test]
fn fuzz_dates_minutes_and_windows_parse_or_refuse() {
    let text = prop_oneof![
        (0i64..20_000, 0u32..20, 0u32..40).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}")),
        (0u32..30, 0u32..100, 0u32..30, 0u32..100).prop_map(|(a, b, c, d)| format!("{a:02}:{b:02}-{c:02}:{d:02}")),
        "[-0-9:+ ]{0,20}",
        any::<String>(),
    ];
    runner(20_000)
        .run(&text, |text| {
            if let Some(day) = parse_date(&text) {
                prop_assert_eq!(&date_text(day), &text, "a date reads back as written");
            }
            if let Some(minute) = parse_minute(&text) {
                prop_assert!(minute <= 1440);
            }
            if let Some((start, end)) = parse_window(&text) {
                prop_assert!(start <= end && end <= 1440);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn fuzz_calendar_arithmetic_saturates() {
    let calendar = (any::<i32>(), any::<u64>(), any::<i64>());
    runner(20_000)
        .run(&calendar, |(offset, micros, day)| {
            let calendar = Calendar { utc_offset_seconds: offset, holidays: Default::default() };
            let (local_day, minute) = calendar.local(micros);
            prop_assert!(minute < 1440);
            let _ = calendar.is_business_day(local_day);
            let _ = calendar.day_start_micros(day);
            Ok(())
        })
        .unwrap();
}

#[test]
fn fuzz_commission_rates_parse_within_one_and_read_back() {
    let text = prop_oneof!["-?[0-9]{1,8}(\\.[0-9]{0,9})?", "[-+0-9.e]{0,12}", any::<String>()];
    runner(20_000)
        .run(&text, |text| {
            if let Some(ppm) = parse_rate(&text) {
                prop_assert!(ppm <= 1_000_000);
                prop_assert_eq!(parse_rate(&format_rate(ppm)), Some(ppm));
            }
            Ok(())
        })
        .unwrap();
}

/// A JSON value of any shape, with the values that break parsers: huge and negative numbers,
/// floats, long and unicode text, decimal-looking text, nulls, nesting.
fn wild_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(1e300)),
        Just(json!(-0.5)),
        "-?[0-9]{1,30}(\\.[0-9]{0,12})?".prop_map(Value::from),
        "[0-9]{2}:[0-9]{2}-[0-9]{2}:[0-9]{2}".prop_map(Value::from),
        prop_oneof![Just("in"), Just("out"), Just("CNY"), Just("USD"), Just("realtime"), Just("standard"), Just("personal"), Just("corporate")]
            .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        Just(Value::from("x".repeat(70))),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..3).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid object with some members replaced by wild values, some removed, maybe one added.
fn mutated(valid: Value) -> impl Strategy<Value = Value> {
    let keys: Vec<String> = valid.as_object().expect("an object").keys().cloned().collect();
    let count = keys.len();
    (proptest::collection::vec((0..count, wild_value()), 0..5), proptest::collection::vec(0..count, 0..2), proptest::option::of(("[a-z]{1,6}", wild_value())))
        .prop_map(move |(replacements, removals, extra)| {
            let mut object = valid.as_object().expect("an object").clone();
            for (index, value) in replacements {
                object.insert(keys[index].clone(), value);
            }
            for index in removals {
                object.remove(&keys[index]);
            }
            if let Some((key, value)) = extra {
                object.insert(key, value);
            }
            Value::Object(object)
        })
}

fn currencies() -> Vec<CurrencySpec> {
    vec![CurrencySpec::new("CNY", 2).expect("valid"), CurrencySpec::new("JPY", 0).expect("valid")]
}

/// Fees and routing on an accepted channel, for amounts up to the largest one a command carries.
fn exercise(table: &mut ChannelTable, id: u16, minute_of_day: u64) {
    let channel = table.get(id).expect("accepted").clone();
    for amount in [1, 100, 5_000_000, AMOUNT_MINOR_MAX - 1, AMOUNT_MINOR_MAX] {
        let fee = channel.fee(amount);
        assert!(fee >= 0, "{channel:?} charges {fee} on {amount}");
        let request = RouteRequest { amount, currency: channel.spec(), arrival: Arrival::Standard, account_type: AccountType::Personal };
        let at = At { micros: 1_764_547_200_000_000 + minute_of_day * 60_000_000, instant: Instant::now() };
        let decision = table.route(&request, at, &[]);
        if let Some((chosen, fee)) = decision.chosen {
            assert!(fee >= 0);
            table.release(chosen, amount, at.micros);
        }
    }
}

#[test]
fn fuzz_channel_specs_are_built_or_refused() {
    let valid = serde_json::to_value(common::spec(7, "fuzz_out", "out", "1.00")).expect("a spec serializes");
    runner(5_000)
        .run(&(mutated(valid), 0u64..1440), |(body, minute)| {
            let Ok(spec) = serde_json::from_value::<ChannelSpec>(body) else { return Ok(()) };
            let Ok(channel) = spec.build(&currencies()) else { return Ok(()) };
            let mut table = ChannelTable::new(vec![channel], Calendar::default()).expect("one channel");
            exercise(&mut table, spec.id, minute);
            Ok(())
        })
        .unwrap();
}

#[test]
fn fuzz_channel_changes_apply_or_change_nothing() {
    let change = json!({
        "enabled": true, "fee_fixed": "1.00", "fee_rate_bps": 10, "fee_min": "0.00", "fee_max": "5.00", "order_min": "0.01",
        "order_max": "50000.00", "daily_cap": "100000.00", "window": "00:00-24:00", "business_days_only": false, "eta_minutes": 5,
        "sim_latency_ms": 100, "sim_failure_per_mille": 0, "sim_drop_per_mille": 0, "timeout_ms": 1000
    });
    let channel = common::spec(7, "fuzz_out", "out", "1.00").build(&currencies()).expect("valid");
    runner(5_000)
        .run(&(mutated(change), 0u64..1440), |(body, minute)| {
            let Ok(change) = serde_json::from_value::<ChannelChange>(body) else { return Ok(()) };
            let store = MemoryStore::new();
            let mut table = ChannelTable::new(vec![channel.clone()], Calendar::default()).expect("one channel");
            match table.update(&store, "fuzz_out", &change) {
                Ok(_) => exercise(&mut table, 7, minute),
                Err(_) => prop_assert_eq!(table.get(7), Some(&channel), "a refused change changes nothing"),
            }
            Ok(())
        })
        .unwrap();
}
