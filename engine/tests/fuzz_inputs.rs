//! Fuzz targets of what the engine parses from outside: decimal text (`money::parse_decimal`, the
//! one parser of amounts, fees and rates) and journal records on replay (arbitrary bytes and a
//! real journal with flipped bits, truncated, reordered or lost batches). Each must answer an
//! error, never panic, never allocate what a length prefix claims.
//!
//! Cases per target come from `FUZZ_CASES` (small by default, for CI); before a release:
//! `FUZZ_CASES=1000000 cargo nextest run --release -E 'test(fuzz_)'`. Whatever a run finds
//! becomes a plain test below with its exact input.

use std::sync::Arc;

use engine::journal::{batch_key, decode, replay_shard, BreakKind, JournalError, HASH_LEN, JOURNAL_FORMAT_VERSION, ZERO_HASH};
use engine::ledger::command::{Command, Envelope, OutOrderNo};
use engine::ledger::types::{AccountId, Leg, Legs, Limits, OrderId};
use engine::money::{parse_decimal, CurrencyId, DecimalError};
use engine::{Engine, EngineConfig};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use storage::{MemoryStore, Store};

/// Cases per fuzz target: `FUZZ_CASES`, else `default` (CI's bounded run).
fn cases(default: u32) -> u32 {
    std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn runner(default: u32) -> TestRunner {
    TestRunner::new(Config { cases: cases(default), failure_persistence: None, ..Config::default() })
}

/// What `parse_decimal` must answer, computed digit by digit in i128 (no decimal library).
fn decimal_model(text: &str, places: u8) -> Result<i64, DecimalError> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let syntax = !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit())
        && !(digits.contains('.') && fraction.is_empty());
    if !syntax {
        return Err(DecimalError::NotANumber);
    }
    if fraction.len() > places as usize {
        return Err(DecimalError::TooManyDecimals);
    }
    if places > 18 {
        return Err(DecimalError::TooLarge);
    }
    let padded = format!("{fraction:0<width$}", width = places as usize);
    let mut value: i128 = 0;
    for byte in whole.bytes().chain(padded.bytes()) {
        value = value.checked_mul(10).and_then(|v| v.checked_add(i128::from(byte - b'0'))).ok_or(DecimalError::TooLarge)?;
    }
    let signed = if negative { -value } else { value };
    i64::try_from(signed).map_err(|_| DecimalError::TooLarge)
}

/// Decimal-looking text: mostly well-formed numbers of every size, some near-misses.
fn decimal_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ("-?", "[0-9]{1,40}", proptest::option::of("[0-9]{0,12}")).prop_map(|(sign, whole, fraction)| match fraction {
            Some(fraction) => format!("{sign}{whole}.{fraction}"),
            None => format!("{sign}{whole}"),
        }),
        "[-+0-9.eE_ ,]{0,30}",
        any::<String>(),
        Just("92233720368547758.07".to_string()),
        Just("-92233720368547758.08".to_string()),
        Just("9223372036854775807".to_string()),
        Just("-9223372036854775808".to_string()),
    ]
}

#[test]
fn fuzz_parse_decimal_agrees_with_an_exact_model() {
    let places = prop_oneof![4 => 0u8..=6, 1 => any::<u8>()];
    runner(100_000)
        .run(&(decimal_text(), places), |(text, places)| {
            prop_assert_eq!(parse_decimal(&text, places), decimal_model(&text, places), "{:?} with {} places", text, places);
            Ok(())
        })
        .unwrap();
}

#[test]
fn decimal_places_past_i64_are_refused_not_a_panic() {
    // Found by fuzz_parse_decimal_agrees_with_an_exact_model: `10i64.pow(places)` overflowed
    // (a panic with overflow checks on) for more than 18 places.
    assert_eq!(parse_decimal("1", 19), Err(DecimalError::TooLarge));
    assert_eq!(parse_decimal("0", 255), Err(DecimalError::TooLarge));
    assert_eq!(parse_decimal("1", 18), Ok(1_000_000_000_000_000_000));
}

const CNY: CurrencyId = CurrencyId(0);

fn envelope(key: Option<&str>, command: Command) -> Envelope {
    Envelope { platform: 3, out_order_no: key.map(|k| OutOrderNo::new(k).expect("valid")), command }
}

/// A real journal of two shards (accounts, recharges, cross-shard payments, a freeze, a
/// withdrawal and its verdict, a refund), as (key, value) pairs.
fn real_journal() -> Vec<(Vec<u8>, Vec<u8>)> {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::start(EngineConfig { shard_count: 2, ack_flush_ms: 1, ..EngineConfig::default() }, store.clone()).expect("engine");
    let opens = (0..6).map(|owner| envelope(None, Command::OpenAccount { owner, currency: CNY, limits: Limits::NONE })).collect();
    let accounts: Vec<AccountId> = engine.execute(opens).expect("open").iter().map(|r| AccountId(r.id)).collect();
    let funds = accounts.iter().map(|a| envelope(None, Command::Recharge { account: *a, currency: CNY, amount: 10_000, channel: 1 })).collect();
    engine.execute(funds).expect("fund");
    let mut payments = Vec::new();
    for i in 0..12usize {
        let (payer, payee) = (accounts[i % 6], accounts[(i * 5 + 1) % 6]);
        if payer != payee {
            let payees: Legs = [Leg { account: payee, amount: 100 }].into_iter().collect();
            let command = Command::Payment { payer, guarantee: i % 2 == 0, currency: CNY, amount: 100, payees, splits: Legs::new() };
            payments.push(envelope(Some(&format!("p{i}")), command));
        }
    }
    let replies = engine.execute(payments).expect("pay");
    let freeze = Command::Freeze { account: accounts[0], currency: CNY, amount: 50, reason: "dispute".into(), expires_at: None };
    let withdraw = Command::Withdraw { account: accounts[1], currency: CNY, amount: 200, fee: 2, channel: 2 };
    let more = engine.execute(vec![envelope(Some("f1"), freeze), envelope(Some("w1"), withdraw)]).expect("more");
    engine.execute_one(envelope(None, Command::CompleteWithdrawal { order: OrderId(more[1].id), succeeded: false })).expect("verdict");
    if let Some(paid) = replies.iter().find(|r| r.is_ok()) {
        let _ = engine.execute_one(envelope(Some("r1"), Command::Refund { payment: OrderId(paid.id), payee: accounts[1], amount: 10 }));
    }
    engine.wait_quiescent(std::time::Duration::from_secs(10)).expect("quiescent");
    engine.shutdown();
    let mut pairs = Vec::new();
    store
        .scan(&batch_key(0, 0), &batch_key(u16::MAX, u64::MAX), &mut |key, value| {
            pairs.push((key.to_vec(), value.to_vec()));
            true
        })
        .expect("scan");
    assert!(pairs.len() >= 4, "a journal of several batches: {}", pairs.len());
    pairs
}

/// A way to damage a journal.
#[derive(Clone, Debug)]
enum Damage {
    FlipBits {
        batch: usize,
        offset: usize,
        mask: u8,
    },
    SetByte {
        batch: usize,
        offset: usize,
        byte: u8,
    },
    Truncate {
        batch: usize,
        length: usize,
    },
    Insert {
        batch: usize,
        offset: usize,
        bytes: Vec<u8>,
    },
    SwapValues {
        first: usize,
        second: usize,
    },
    Drop {
        batch: usize,
    },
    /// Recomputes a value's own hash after earlier damage (a writer that hashed what it broke),
    /// so that damage reaches the decoder and replay behind the hash check.
    Reseal {
        batch: usize,
    },
}

fn damage() -> impl Strategy<Value = Vec<Damage>> {
    let one = prop_oneof![
        4 => (any::<usize>(), any::<usize>(), 1u8..=255).prop_map(|(batch, offset, mask)| Damage::FlipBits { batch, offset, mask }),
        2 => (any::<usize>(), any::<usize>(), any::<u8>()).prop_map(|(batch, offset, byte)| Damage::SetByte { batch, offset, byte }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(batch, length)| Damage::Truncate { batch, length }),
        1 => (any::<usize>(), any::<usize>(), proptest::collection::vec(any::<u8>(), 1..12)).prop_map(|(batch, offset, bytes)| Damage::Insert { batch, offset, bytes }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(first, second)| Damage::SwapValues { first, second }),
        1 => any::<usize>().prop_map(|batch| Damage::Drop { batch }),
        3 => any::<usize>().prop_map(|batch| Damage::Reseal { batch }),
    ];
    proptest::collection::vec(one, 1..4)
}

fn apply_damage(journal: &mut Vec<(Vec<u8>, Vec<u8>)>, damage: &Damage) {
    if journal.is_empty() {
        return;
    }
    let count = journal.len();
    match damage {
        Damage::FlipBits { batch, offset, mask } => {
            let value = &mut journal[batch % count].1;
            if !value.is_empty() {
                let at = offset % value.len();
                value[at] ^= mask;
            }
        }
        Damage::SetByte { batch, offset, byte } => {
            let value = &mut journal[batch % count].1;
            if !value.is_empty() {
                let at = offset % value.len();
                value[at] = *byte;
            }
        }
        Damage::Truncate { batch, length } => {
            let value = &mut journal[batch % count].1;
            let keep = length % (value.len() + 1);
            value.truncate(keep);
        }
        Damage::Insert { batch, offset, bytes } => {
            let value = &mut journal[batch % count].1;
            let at = offset % (value.len() + 1);
            value.splice(at..at, bytes.iter().copied());
        }
        Damage::SwapValues { first, second } => {
            let (first, second) = (first % count, second % count);
            let value = std::mem::take(&mut journal[first].1);
            journal[first].1 = std::mem::replace(&mut journal[second].1, value);
        }
        Damage::Drop { batch } => {
            journal.remove(batch % count);
        }
        Damage::Reseal { batch } => {
            let value = &mut journal[batch % count].1;
            *value = sealed(&value[..value.len().saturating_sub(HASH_LEN)]);
        }
    }
}

fn replay_all(journal: &[(Vec<u8>, Vec<u8>)]) -> Vec<Result<u64, String>> {
    let store = MemoryStore::new();
    let puts: Vec<(&[u8], &[u8])> = journal.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
    store.write(&puts).expect("memory store writes");
    (0..2).map(|shard| replay_shard(&store, shard).map(|(_, last, _)| last).map_err(|e| e.to_string())).collect()
}

#[test]
fn fuzz_journal_replay_of_a_damaged_journal_is_an_error_never_a_panic() {
    let journal = real_journal();
    assert!(replay_all(&journal).iter().all(Result::is_ok), "the undamaged journal replays");
    runner(10_000)
        .run(&damage(), |damages| {
            let mut damaged = journal.clone();
            for d in &damages {
                apply_damage(&mut damaged, d);
            }
            // Ok is possible (a flip in a value that replay does not compare, say a reason text);
            // what must never happen is a panic, which the runner reports as a failure.
            let _ = replay_all(&damaged);
            Ok(())
        })
        .unwrap();
}

#[test]
fn fuzz_journal_decode_of_arbitrary_bytes_is_an_error_never_a_panic() {
    let bytes = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        proptest::collection::vec(any::<u8>(), 0..256).prop_map(|mut v| {
            v.insert(0, JOURNAL_FORMAT_VERSION);
            v
        }),
    ];
    runner(100_000)
        .run(&(bytes, any::<u16>(), any::<u64>()), |(bytes, shard, sequence)| {
            let _ = decode(shard, sequence, &bytes);
            // The same bytes with a matching hash after them reach the record decoder.
            let _ = decode(shard, sequence, &sealed(&bytes));
            Ok(())
        })
        .unwrap();
}

/// `bytes` followed by their BLAKE3 hash: a value whose hash check passes.
fn sealed(bytes: &[u8]) -> Vec<u8> {
    let hash: [u8; HASH_LEN] = blake3::hash(bytes).into();
    [bytes, &hash[..]].concat()
}

/// bincode's varint encoding of `value` (a u64 over 2^32: the marker byte 253, then 8 bytes).
fn varint(value: u64) -> Vec<u8> {
    match value {
        0..=250 => vec![value as u8],
        251..=0xffff => [&[251u8][..], &(value as u16).to_le_bytes()].concat(),
        0x1_0000..=0xffff_ffff => [&[252u8][..], &(value as u32).to_le_bytes()].concat(),
        _ => [&[253u8][..], &value.to_le_bytes()].concat(),
    }
}

#[test]
fn journal_length_prefixes_of_2_pow_60_are_refused_without_allocating() {
    // The record's header (shard 0, batch 1, a timestamp, the previous hash), then a vector claiming 2^60 envelopes,
    // and one claiming 2^60 bytes of text inside an envelope: decoding must refuse either
    // without reserving what the prefix claims (which would abort the process).
    let header = [varint(0), varint(1), varint(1_700_000_000_000_000), ZERO_HASH.to_vec()].concat();
    let huge_vector = sealed(&[&[JOURNAL_FORMAT_VERSION][..], &header, &varint(1 << 60)].concat());
    assert!(matches!(decode(0, 1, &huge_vector), Err(JournalError::Corrupt { kind: BreakKind::Undecodable, .. })));
    // One envelope: platform 3, an order number (Some) of 2^60 bytes.
    let huge_text = sealed(&[&[JOURNAL_FORMAT_VERSION][..], &header, &varint(1), &varint(3), &[1u8][..], &varint(1 << 60), b"abc"].concat());
    assert!(matches!(decode(0, 1, &huge_text), Err(JournalError::Corrupt { kind: BreakKind::Undecodable, .. })));
}

#[test]
fn a_decoded_but_impossible_record_is_a_corrupt_journal_not_a_panic() {
    // Found by fuzz_journal_replay_of_a_damaged_journal_is_an_error_never_a_panic: one byte set
    // to 1 turned a credit's source shard into the shard itself, and `apply`'s assertion
    // ("a shard does not send credits to itself") panicked recovery.
    use engine::journal::{encode, BatchRecordRef};
    use engine::ledger::types::{Bucket, CreditPurpose, RemoteCredit};
    use engine::money::CurrencySpec;
    let genesis = envelope(
        None,
        Command::Genesis { shard: 1, shard_count: 2, currencies: vec![CurrencySpec::new("CNY", 2).expect("valid")], utc_offset_seconds: 28_800 },
    );
    let credit = RemoteCredit {
        source: 1,
        sequence: 1,
        order: OrderId(1),
        account: AccountId(3),
        counterparty: AccountId(2),
        currency: CNY,
        bucket: Bucket::Unsettled,
        amount: 100,
        purpose: CreditPurpose::PaymentIncome,
    };
    let envelopes = [genesis, envelope(None, Command::ApplyCredit(credit))];
    let mut bytes = Vec::new();
    let record = BatchRecordRef {
        shard: 1,
        sequence: 1,
        timestamp: 1_700_000_000_000_000,
        previous_hash: ZERO_HASH,
        envelopes: &envelopes,
        entries: &[],
        postings: &[],
    };
    encode(&record, &mut bytes);
    let store = MemoryStore::new();
    store.write(&[(&batch_key(1, 1), &bytes)]).expect("memory store writes");
    match replay_shard(&store, 1) {
        Err(JournalError::Corrupt { shard: 1, sequence: 1, reason, .. }) => assert!(reason.contains("credits to itself"), "{reason}"),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("replayed an impossible record"),
    }
}
