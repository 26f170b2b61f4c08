//! Pins the journal's on-disk format: the bytes of one batch record holding every `Command`
//! variant, and the declaration order of every enum a record holds (bincode stores a variant by
//! its index, so moving one silently changes what existing journals mean on replay).

use engine::journal::{batch_key, decode, encode, replay_shard, BatchRecord, BatchRecordRef, JournalError, JOURNAL_FORMAT_VERSION};
use engine::ledger::command::{BatchOrder, Command, Envelope, OutOrderNo};
use engine::ledger::types::{
    AccountId, AccountStatus, AdjustmentSide, Bucket, CreditPurpose, EntryHeader, EntryKind, Leg, Legs, Limits, OrderId, Posting, RemoteCredit, SettlementRule,
    Tier, TierBasis, NO_ORDER,
};
use engine::money::{CurrencyId, CurrencySpec};
use serde::de::{DeserializeOwned, Deserializer, Error as _, Visitor};
use storage::{MemoryStore, Store};

/// What every failure here tells the engineer.
const FORMAT_RULES: &str = "The journal stores enum variants by declaration index. Only append new variants at the end of an \
enum; never reorder or remove one. If the encoding change is deliberate, bump JOURNAL_FORMAT_VERSION (engine/src/journal.rs) \
and regenerate GOLDEN in engine/tests/journal_format.rs (appending a variant at the end changes no existing bytes and needs no bump).";

/// `Command`'s variants in declaration order: the index here is the one the journal stores.
const COMMAND_VARIANTS: [&str; 36] = [
    "Genesis",
    "OpenAccount",
    "SetAccountStatus",
    "CloseAccount",
    "Recharge",
    "Payment",
    "Confirm",
    "Cancel",
    "Refund",
    "Freeze",
    "ReleaseFreeze",
    "ExpireFreezes",
    "Withdraw",
    "CompleteWithdrawal",
    "Mature",
    "ApplyCredit",
    "Acknowledge",
    "RequestRecharge",
    "CompleteRecharge",
    "AutoConfirm",
    "BatchPayment",
    "RequestDirectPayment",
    "RerouteWithdrawal",
    "CreditSuspense",
    "Settle",
    "ChargeChannelFees",
    "VerificationDeposit",
    "AutoConfirmChunk",
    "Adjust",
    "SetLimits",
    "CaptureFreeze",
    "RequestCollection",
    "ExpireFreezesChunk",
    "SettleChunk",
    "AutoConfirmStep",
    "CancelLegs",
];

/// The index the journal stores for `command`. No wildcard arm: a new variant does not compile
/// until it has its index here (the next one) and an envelope at the end of `golden_record`.
fn variant_index(command: &Command) -> usize {
    match command {
        Command::Genesis { .. } => 0,
        Command::OpenAccount { .. } => 1,
        Command::SetAccountStatus { .. } => 2,
        Command::CloseAccount { .. } => 3,
        Command::Recharge { .. } => 4,
        Command::Payment { .. } => 5,
        Command::Confirm { .. } => 6,
        Command::Cancel { .. } => 7,
        Command::Refund { .. } => 8,
        Command::Freeze { .. } => 9,
        Command::ReleaseFreeze { .. } => 10,
        Command::ExpireFreezes => 11,
        Command::Withdraw { .. } => 12,
        Command::CompleteWithdrawal { .. } => 13,
        Command::Mature { .. } => 14,
        Command::ApplyCredit(_) => 15,
        Command::Acknowledge { .. } => 16,
        Command::RequestRecharge { .. } => 17,
        Command::CompleteRecharge { .. } => 18,
        Command::AutoConfirm { .. } => 19,
        Command::BatchPayment { .. } => 20,
        Command::RequestDirectPayment { .. } => 21,
        Command::RerouteWithdrawal { .. } => 22,
        Command::CreditSuspense { .. } => 23,
        Command::Settle { .. } => 24,
        Command::ChargeChannelFees { .. } => 25,
        Command::VerificationDeposit { .. } => 26,
        Command::AutoConfirmChunk { .. } => 27,
        Command::Adjust { .. } => 28,
        Command::SetLimits { .. } => 29,
        Command::CaptureFreeze { .. } => 30,
        Command::RequestCollection { .. } => 31,
        Command::ExpireFreezesChunk { .. } => 32,
        Command::SettleChunk { .. } => 33,
        Command::AutoConfirmStep { .. } => 34,
        Command::CancelLegs { .. } => 35,
    }
}

/// The encoding of `golden_record()`, part by part: the version byte, the record's header
/// (shard, sequence, timestamp, envelope count), one envelope per `Command` variant, the entries
/// and the postings. Regenerate only for a deliberate format change (see `FORMAT_RULES`).
const GOLDEN: &[(&str, &str)] = &[
    ("version", "06"),
    ("header", "012afd01401e18240a060000070e151c232a31383f464d545b626970777e858c939aa1a8afb6bdc4cbd2d924"),
    ("Genesis", "070000010202434e59024a505900fb00e1"),
    ("OpenAccount", "070001fbe90300fbe803fbd007fb5802fbb004"),
    ("SetAccountStatus", "0700020301"),
    ("CloseAccount", "0700030d"),
    ("Recharge", "0701057263682d31040300fbd00701"),
    ("Payment", "0701057061792d3105030000c80105b4010914"),
    ("Confirm", "07000606010528"),
    ("Cancel", "070007060114"),
    ("Refund", "0701057266642d310806051e"),
    ("Freeze", "07010566727a2d3109030064076469737075746501fd00401e18240a0600"),
    ("ReleaseFreeze", "07000a0a00"),
    ("ExpireFreezes", "07000b"),
    ("Withdraw", "0701057764722d310c0300fb90010402"),
    ("CompleteWithdrawal", "07000d0c01"),
    ("Mature", "07000efb0b4d"),
    ("ApplyCredit", "07000f000308050300018c01"),
    ("Acknowledge", "0700100004"),
    ("RequestRecharge", "0701057263682d32110300fb580201"),
    ("CompleteRecharge", "0700120e00"),
    ("AutoConfirm", "070013fd00401e18240a0600"),
    ("BatchPayment", "0700140301000203622d313c01053c0003622d325001054601090a"),
    ("RequestDirectPayment", "0701057061792d3215030100780105780001"),
    ("RerouteWithdrawal", "0700160c020308"),
    ("CreditSuspense", "070017010032"),
    ("Settle", "070018fb0c4d0100fbf44c010200fb1027c8fb881302090e0b06fbe803"),
    ("ChargeChannelFees", "0700190101fb0b4d0018"),
    ("VerificationDeposit", "07001a010002"),
    ("AutoConfirmChunk", "07001b01fd00401e18240a0600fb2c01fb0010"),
    ("Adjust", "07010561646a2d311c01010003003212756e6d617463686564207472616e73666572076f70732d616e6e066f70732d626f"),
    ("SetLimits", "0701056c696d2d311d03fbe803fbd007fb5802fbb004"),
    ("CaptureFreeze", "07001e0b"),
    ("RequestCollection", "070105636f6c2d311f0300fb580201fdefcdab8967452301"),
    ("ExpireFreezesChunk", "07002001fd00401e18240a0600fb001020"),
    ("SettleChunk", "07002101fb0c4d0100fbf44c010200fb1027c8fb881302090e0b06fbe803fb2c01fb0010fc00000400"),
    ("AutoConfirmStep", "07002201fd00401e18240a0600fb2c01fb001020"),
    ("CancelLegs", "070105636e6c2d31230601090a"),
    ("entries", "030106010002020a06000203fdffffffffffffffff0b0002"),
    ("postings", "060300c70501c80300630302640501b30500b4"),
    ("hash", "771c31390a4d9580da0b27b4f936971bbff9c05164e3ad40bb0e35d413562874"),
];

const SHARD: u16 = 1;
const SEQUENCE: u64 = 42;

fn account(id: u64) -> AccountId {
    AccountId(id)
}

fn legs(parts: &[(u64, i64)]) -> Legs {
    parts.iter().map(|&(id, amount)| Leg { account: account(id), amount }).collect()
}

fn number(text: &str) -> Option<OutOrderNo> {
    Some(OutOrderNo::new(text).expect("a valid order number"))
}

/// One command of every variant, in declaration order, with small fixed values.
fn every_command() -> Vec<(Option<OutOrderNo>, Command)> {
    let cny = CurrencyId(0);
    let limits = Limits { payment_per_order_max: 500, payment_daily_max: 1000, withdrawal_per_order_max: 300, withdrawal_daily_max: 600 };
    let credit = RemoteCredit {
        source: 0,
        sequence: 3,
        order: OrderId(8),
        account: account(5),
        counterparty: account(3),
        currency: cny,
        bucket: Bucket::Unsettled,
        amount: 70,
        purpose: CreditPurpose::RefundToPayer,
    };
    let rule = SettlementRule {
        currency: cny,
        period_start: 19_700,
        basis: TierBasis::Count,
        tiers: vec![Tier { from: 0, rate_ppm: 10_000 }, Tier { from: 100, rate_ppm: 5_000 }],
        receivers: vec![Leg { account: account(9), amount: 7 }, Leg { account: account(11), amount: 3 }],
        service_fee_ppm: 1_000,
    };
    let orders = vec![
        BatchOrder { out_order_no: OutOrderNo::new("b-1").expect("valid"), amount: 30, payees: legs(&[(5, 30)]), splits: Legs::new() },
        BatchOrder { out_order_no: OutOrderNo::new("b-2").expect("valid"), amount: 40, payees: legs(&[(5, 35)]), splits: legs(&[(9, 5)]) },
    ];
    vec![
        (
            None,
            Command::Genesis {
                shard: SHARD,
                shard_count: 2,
                currencies: vec![CurrencySpec::new("CNY", 2).expect("valid"), CurrencySpec::new("JPY", 0).expect("valid")],
                utc_offset_seconds: 28_800,
            },
        ),
        (None, Command::OpenAccount { owner: 1001, currency: cny, limits }),
        (None, Command::SetAccountStatus { account: account(3), status: AccountStatus::DebitBlocked }),
        (None, Command::CloseAccount { account: account(13) }),
        (number("rch-1"), Command::Recharge { account: account(3), currency: cny, amount: 1000, channel: 1 }),
        (
            number("pay-1"),
            Command::Payment { payer: account(3), guarantee: false, currency: cny, amount: 100, payees: legs(&[(5, 90)]), splits: legs(&[(9, 10)]) },
        ),
        (None, Command::Confirm { order: OrderId(6), releases: legs(&[(5, 20)]) }),
        (None, Command::Cancel { order: OrderId(6), amount: Some(10) }),
        (number("rfd-1"), Command::Refund { payment: OrderId(6), payee: account(5), amount: 15 }),
        (
            number("frz-1"),
            Command::Freeze { account: account(3), currency: cny, amount: 50, reason: "dispute".into(), expires_at: Some(1_700_000_000_000_000) },
        ),
        (None, Command::ReleaseFreeze { order: OrderId(10), amount: None }),
        (None, Command::ExpireFreezes),
        (number("wdr-1"), Command::Withdraw { account: account(3), currency: cny, amount: 200, fee: 2, channel: 2 }),
        (None, Command::CompleteWithdrawal { order: OrderId(12), succeeded: true }),
        (None, Command::Mature { through_day: 19_723 }),
        (None, Command::ApplyCredit(credit)),
        (None, Command::Acknowledge { target: 0, sequence: 4 }),
        (number("rch-2"), Command::RequestRecharge { account: account(3), currency: cny, amount: 300, channel: 1 }),
        (None, Command::CompleteRecharge { order: OrderId(14), succeeded: false }),
        (None, Command::AutoConfirm { created_before: 1_700_000_000_000_000 }),
        (None, Command::BatchPayment { payer: account(3), guarantee: true, currency: cny, orders }),
        (
            number("pay-2"),
            Command::RequestDirectPayment {
                payer: account(3),
                guarantee: true,
                currency: cny,
                amount: 60,
                payees: legs(&[(5, 60)]),
                splits: Legs::new(),
                channel: 1,
            },
        ),
        (None, Command::RerouteWithdrawal { order: OrderId(12), from: 2, channel: 3, fee: 4 }),
        (None, Command::CreditSuspense { shard: SHARD, currency: cny, amount: 25 }),
        (None, Command::Settle { through_day: 19_724, rule: Some(Box::new(rule.clone())) }),
        (None, Command::ChargeChannelFees { shard: SHARD, channel: 1, day: 19_723, currency: cny, total: 12 }),
        (None, Command::VerificationDeposit { shard: SHARD, currency: cny, amount: 1 }),
        (None, Command::AutoConfirmChunk { shard: SHARD, created_before: 1_700_000_000_000_000, after: 300, orders_max: 4096 }),
        (
            number("adj-1"),
            Command::Adjust {
                source: AdjustmentSide::Suspense(SHARD),
                target: AdjustmentSide::Account(account(3)),
                currency: cny,
                amount: 25,
                reason: "unmatched transfer".into(),
                proposer: "ops-ann".into(),
                approver: "ops-bo".into(),
            },
        ),
        (number("lim-1"), Command::SetLimits { account: account(3), limits }),
        (None, Command::CaptureFreeze { order: OrderId(11) }),
        (number("col-1"), Command::RequestCollection { account: account(3), currency: cny, amount: 300, channel: 1, card: 0x0123_4567_89ab_cdef }),
        (None, Command::ExpireFreezesChunk { shard: SHARD, expired_before: 1_700_000_000_000_000, freezes_max: 4096, chunks_max: 32 }),
        (None, Command::SettleChunk { shard: SHARD, through_day: 19_724, rule: Some(Box::new(rule)), after: 300, accounts_max: 4096, examined_max: 262_144 }),
        (None, Command::AutoConfirmStep { shard: SHARD, created_before: 1_700_000_000_000_000, after: 300, orders_max: 4096, chunks_max: 32 }),
        (number("cnl-1"), Command::CancelLegs { order: OrderId(6), cancels: legs(&[(9, 5)]) }),
    ]
}

/// The record the golden bytes hold: every command, and entries and postings of several kinds
/// and buckets (a format test: they need not be what applying the commands would produce).
fn golden_record() -> BatchRecord {
    let envelopes = every_command().into_iter().map(|(out_order_no, command)| Envelope { platform: 7, out_order_no, command }).collect();
    let cny = CurrencyId(0);
    let entry = |entry_id, order, kind, posting_count| EntryHeader { entry_id, order, kind, currency: cny, posting_count };
    let posting = |id, bucket, amount| Posting { account: account(id), bucket, amount };
    BatchRecord {
        version: JOURNAL_FORMAT_VERSION,
        shard: SHARD,
        sequence: SEQUENCE,
        timestamp: 1_700_000_000_000_001,
        previous_hash: std::array::from_fn(|i| i as u8 * 7),
        envelopes,
        entries: vec![entry(1, OrderId(6), EntryKind::Payment, 2), entry(2, OrderId(10), EntryKind::Freeze, 2), entry(3, NO_ORDER, EntryKind::Mature, 2)],
        postings: vec![
            posting(3, Bucket::Settled, -100),
            posting(5, Bucket::Unsettled, 100),
            posting(3, Bucket::Settled, -50),
            posting(3, Bucket::Frozen, 50),
            posting(5, Bucket::Unsettled, -90),
            posting(5, Bucket::Settled, 90),
        ],
    }
}

fn encoded(record: &BatchRecord) -> Vec<u8> {
    let view = BatchRecordRef {
        shard: record.shard,
        sequence: record.sequence,
        timestamp: record.timestamp,
        previous_hash: record.previous_hash,
        envelopes: &record.envelopes,
        entries: &record.entries,
        postings: &record.postings,
    };
    let mut buffer = Vec::new();
    encode(&view, &mut buffer);
    buffer
}

/// The journal's codec options, to encode a record part by part (the test checks that the parts
/// add up to what `journal::encode` writes).
fn part<T: serde::Serialize>(value: &T) -> Vec<u8> {
    use bincode::Options;
    let codec = bincode::DefaultOptions::new().with_varint_encoding().with_little_endian().reject_trailing_bytes();
    codec.serialize(value).expect("parts serialize")
}

/// `golden_record()`'s encoding split like `GOLDEN`.
fn golden_parts(record: &BatchRecord) -> Vec<(String, Vec<u8>)> {
    let header = (record.shard, record.sequence, record.timestamp, record.previous_hash, record.envelopes.len() as u64);
    let mut parts = vec![("version".to_string(), vec![JOURNAL_FORMAT_VERSION]), ("header".to_string(), part(&header))];
    for envelope in &record.envelopes {
        parts.push((COMMAND_VARIANTS[variant_index(&envelope.command)].to_string(), part(envelope)));
    }
    parts.push(("entries".to_string(), part(&record.entries)));
    parts.push(("postings".to_string(), part(&record.postings)));
    // The batch's own hash: BLAKE3 of everything before it.
    let hashed: Vec<u8> = parts.iter().flat_map(|(_, bytes)| bytes.iter().copied()).collect();
    parts.push(("hash".to_string(), blake3::hash(&hashed).as_bytes().to_vec()));
    parts
}

/// `bytes` followed by their BLAKE3 hash: a value whose hash check passes.
fn sealed(bytes: &[u8]) -> Vec<u8> {
    [bytes, blake3::hash(bytes).as_bytes()].concat()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("GOLDEN is hex")).collect()
}

fn golden_bytes() -> Vec<u8> {
    GOLDEN.iter().flat_map(|(_, hex)| unhex(hex)).collect()
}

/// The variant names serde's derive declares for `T`, in declaration order: the order bincode
/// numbers them in. Read by a deserializer that only records what `deserialize_enum` is given.
fn declared_variants<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Capture(Option<&'static [&'static str]>);

    impl<'de> Deserializer<'de> for &mut Capture {
        type Error = serde::de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Self::Error::custom("not an enum"))
        }

        fn deserialize_enum<V: Visitor<'de>>(self, _: &'static str, variants: &'static [&'static str], _: V) -> Result<V::Value, Self::Error> {
            self.0 = Some(variants);
            Err(Self::Error::custom("captured"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit unit_struct
            newtype_struct seq tuple tuple_struct map struct identifier ignored_any
        }
    }

    let mut capture = Capture(None);
    let _ = T::deserialize(&mut capture);
    capture.0.expect("an enum deserializes through deserialize_enum")
}

#[test]
fn enums_in_the_journal_keep_their_declaration_order() {
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("Command", declared_variants::<Command>(), &COMMAND_VARIANTS),
        ("Bucket", declared_variants::<Bucket>(), &["Settled", "Unsettled", "Frozen"]),
        ("AccountStatus", declared_variants::<AccountStatus>(), &["Normal", "DebitBlocked", "CreditBlocked", "Closed"]),
        ("CreditPurpose", declared_variants::<CreditPurpose>(), &["PaymentIncome", "RefundToPayer", "Commission", "Adjustment"]),
        ("AdjustmentSide", declared_variants::<AdjustmentSide>(), &["Account", "Suspense"]),
        ("TierBasis", declared_variants::<TierBasis>(), &["Amount", "Count"]),
        (
            "EntryKind",
            declared_variants::<EntryKind>(),
            &[
                "Recharge",
                "Payment",
                "GuaranteeHold",
                "GuaranteeRelease",
                "GuaranteeCancel",
                "Refund",
                "Freeze",
                "FreezeRelease",
                "WithdrawalReserve",
                "WithdrawalSuccess",
                "WithdrawalFailure",
                "Mature",
                "RemoteCredit",
                "WithdrawalReroute",
                "SuspenseIn",
                "Commission",
                "ServiceFee",
                "ChannelFee",
                "VerificationDeposit",
                "Adjustment",
            ],
        ),
    ];
    for (name, declared, pinned) in cases {
        assert_eq!(
            declared, pinned,
            "the variants of {name} changed (left: declared now, right: as the journal format pins them). A variant appended at the end: \
             add it at the end of the pinned list (for Command also to COMMAND_VARIANTS, variant_index and every_command, then regenerate \
             GOLDEN). {FORMAT_RULES}"
        );
    }
}

#[test]
fn golden_record_holds_every_command_in_declaration_order() {
    let record = golden_record();
    let indices: Vec<usize> = record.envelopes.iter().map(|e| variant_index(&e.command)).collect();
    let expected: Vec<usize> = (0..COMMAND_VARIANTS.len()).collect();
    assert_eq!(indices, expected, "golden_record must hold one envelope of every Command variant, in declaration order. {FORMAT_RULES}");
    for envelope in &record.envelopes {
        let index = variant_index(&envelope.command);
        // The variant index is a varint: one byte below 251.
        let stored = part(&envelope.command)[0] as usize;
        assert_eq!(stored, index, "Command::{} is stored as variant {stored}, the format says {index}. {FORMAT_RULES}", COMMAND_VARIANTS[index]);
    }
}

#[test]
fn encoding_matches_the_golden_bytes() {
    let record = golden_record();
    let parts = golden_parts(&record);
    let joined: Vec<u8> = parts.iter().flat_map(|(_, bytes)| bytes.iter().copied()).collect();
    let written = encoded(&record);
    let source: String = parts.iter().map(|(label, bytes)| format!("    (\"{label}\", \"{}\"),\n", hex(bytes))).collect();
    let regenerate = format!("const GOLDEN: &[(&str, &str)] = &[\n{source}];");
    assert_eq!(
        hex(&written),
        hex(&joined),
        "journal::encode no longer writes the version byte, the record with the journal's codec, then their hash. {FORMAT_RULES}"
    );
    let changed: Vec<&str> = parts
        .iter()
        .enumerate()
        .filter(|(index, (label, bytes))| GOLDEN.get(*index) != Some(&(label.as_str(), hex(bytes).as_str())))
        .map(|(_, (label, _))| label.as_str())
        .collect();
    assert!(
        changed.is_empty() && parts.len() == GOLDEN.len(),
        "the journal encoding of the golden record changed (parts: {changed:?}). {FORMAT_RULES}\nThe encoding now is:\n{regenerate}"
    );
}

/// Every variant has a kind code and a name at it (metrics count commands by kind: a code past
/// the names' end stopped the shard that counted it, found when `CancelLegs` was added).
#[test]
fn every_command_kind_has_its_name() {
    let codes: Vec<u8> = every_command().iter().map(|(_, command)| command.kind_code()).collect();
    assert_eq!(codes.len(), COMMAND_VARIANTS.len());
    assert_eq!(Command::KIND_NAMES.len(), COMMAND_VARIANTS.len(), "a name for each kind");
    for (code, name) in codes.iter().zip(COMMAND_VARIANTS) {
        assert!((*code as usize) < Command::KIND_NAMES.len(), "{name}'s kind code {code} has no name");
    }
    let mut distinct = codes.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), codes.len(), "one code a kind");
}

#[test]
fn golden_bytes_decode_to_the_golden_record() {
    let decoded = decode(SHARD, SEQUENCE, &golden_bytes()).expect("the golden bytes decode");
    assert_eq!(decoded, golden_record(), "GOLDEN no longer decodes to golden_record(). {FORMAT_RULES}");
}

#[test]
fn other_format_versions_are_refused() {
    for version in [0u8, 1, JOURNAL_FORMAT_VERSION + 1, u8::MAX] {
        let mut bytes = golden_bytes();
        bytes[0] = version;
        let error = decode(SHARD, SEQUENCE, &bytes).expect_err("another version is refused");
        assert!(matches!(error, JournalError::UnsupportedFormat { shard: SHARD, sequence: SEQUENCE, version: found } if found == version), "{error:?}");
        let message = error.to_string();
        let expected = format!("format version {version} at batch {SEQUENCE}; this build reads versions 2 to {JOURNAL_FORMAT_VERSION}");
        assert!(message.contains(&expected), "{message}");
    }
}

/// Versions 2 to 4 have version 5's bytes (only the rules changed): their batches decode, and
/// say which version they are, so that replay applies them under their rules.
#[test]
fn batches_of_versions_2_to_4_decode_as_theirs() {
    let golden = golden_bytes();
    for version in [2u8, 3, 4] {
        let mut body = golden[..golden.len() - 32].to_vec();
        body[0] = version;
        let decoded = decode(SHARD, SEQUENCE, &sealed(&body)).expect("an older batch decodes");
        assert_eq!(decoded, BatchRecord { version, ..golden_record() });
    }
}

#[test]
fn truncated_or_garbage_values_are_errors() {
    let golden = golden_bytes();
    for end in 0..golden.len() {
        assert!(decode(SHARD, SEQUENCE, &golden[..end]).is_err(), "a value cut at byte {end} decoded");
    }
    let mut trailing = golden.clone();
    trailing.push(0);
    // The header (shard, batch, timestamp, previous hash), then a count of 2^60 envelopes, with a
    // matching hash after it, so that the record decoder sees it.
    let huge_count = sealed(&[&[JOURNAL_FORMAT_VERSION, 1, 42, 1][..], &[0; 32], &[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]].concat());
    let text = [&[JOURNAL_FORMAT_VERSION][..], b"not a batch"].concat();
    let mut flipped = golden.clone();
    flipped[golden.len() / 2] ^= 0x10;
    let cases: &[(&str, &[u8], u16, u64)] = &[
        ("trailing byte", &trailing, SHARD, SEQUENCE),
        ("another shard's key", &golden, SHARD + 1, SEQUENCE),
        ("another batch's key", &golden, SHARD, SEQUENCE + 1),
        ("a count of 2^60 envelopes", &huge_count, SHARD, SEQUENCE),
        ("text", &text, SHARD, SEQUENCE),
        ("a flipped byte", &flipped, SHARD, SEQUENCE),
        ("text with its hash", &sealed(&text), SHARD, SEQUENCE),
    ];
    for (name, bytes, shard, sequence) in cases {
        match decode(*shard, *sequence, bytes) {
            Err(JournalError::Corrupt { shard: s, sequence: q, .. }) => assert_eq!((s, q), (*shard, *sequence), "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    // Any byte flipped, in the record or in its hash: an error (the hash no longer matches),
    // never a panic and never a record.
    for index in 0..golden.len() {
        for mask in [0x01, 0x80, 0xff] {
            let mut bytes = golden.clone();
            bytes[index] ^= mask;
            assert!(decode(SHARD, SEQUENCE, &bytes).is_err(), "byte {index} flipped with {mask:#x} decoded");
        }
    }
}

#[test]
fn replay_refuses_a_journal_of_another_format() {
    let store = MemoryStore::new();
    let mut bytes = encoded(&BatchRecord { shard: 0, sequence: 1, ..golden_record() });
    bytes[0] = JOURNAL_FORMAT_VERSION + 1;
    store.write(&[(&batch_key(0, 1), &bytes)]).expect("memory store writes");
    match replay_shard(&store, 0) {
        Err(JournalError::UnsupportedFormat { shard: 0, sequence: 1, version }) => assert_eq!(version, JOURNAL_FORMAT_VERSION + 1),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("replayed a journal of another format"),
    }
    // A key of the wrong length inside the shard's range is corruption, not a panic.
    let store = MemoryStore::new();
    store.write(&[(b"j\x00\x00\x01", b"x")]).expect("memory store writes");
    assert!(matches!(replay_shard(&store, 0), Err(JournalError::Corrupt { shard: 0, .. })));
}

/// The bounds replay applies journaled steps with are part of the format: a build that changed
/// them would replay a step of an earlier build differently (other postings: the shard would
/// not start). The nightly run's own bounds travel in the step commands and may change.
#[test]
fn the_bounds_replay_applies_to_steps_never_change() {
    use engine::ledger::command::{AUTO_CONFIRM_ORDERS_MAX, STEP_CHUNKS_LIMIT, STEP_COUNT_LIMIT};
    use engine::ledger::ops::freeze::EXPIRE_WINDOW_PER_FREEZE;
    assert_eq!((AUTO_CONFIRM_ORDERS_MAX, STEP_COUNT_LIMIT, STEP_CHUNKS_LIMIT), (4096, 1 << 20, 1024), "{FORMAT_RULES}");
    assert_eq!(EXPIRE_WINDOW_PER_FREEZE, 4, "{FORMAT_RULES}");
}
