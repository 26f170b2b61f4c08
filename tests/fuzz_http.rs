//! Fuzz targets of the HTTP edge, against the real server: JSON bodies of every endpoint that
//! takes one (structure-aware, from the OpenAPI document's schemas: valid shapes with wild
//! values, missing and extra members, wrong types), signed headers with wild values, query
//! strings and path ids, and the bank's callback. Every request gets an answer (no dropped
//! connection), never a 5xx, and an error has the API's error shape; at the end the ledger's
//! invariants hold and another platform's balances are untouched.
//!
//! A plain loop over a seeded generator (one server for many cases; proptest's shrinking would
//! replay against a changed server anyway). A failure prints the seed and the exact request, to
//! be written into a named test. `FUZZ_CASES` sets the requests per target (small by default,
//! for CI), `FUZZ_SEED` the seed; before a release:
//! `FUZZ_CASES=100000 cargo nextest run --release --test fuzz_http`.

mod support;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use support::money::*;
use support::*;

fn cases(default: u32) -> u32 {
    std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn seeded() -> (u64, StdRng) {
    let seed = std::env::var("FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| rand::thread_rng().gen());
    println!("FUZZ_SEED={seed}");
    (seed, StdRng::seed_from_u64(seed))
}

/// What the generator names: real ids of the fuzzing platform, so that wild values reach the
/// checks behind the id lookups.
struct Known {
    platform: String,
    members: Vec<String>,
    accounts: Vec<String>,
    orders: Vec<String>,
    cards: Vec<String>,
    foreign_account: String,
    numbers: u64,
}

/// A JSON value that breaks parsers: huge, negative and fractional numbers, long and unicode
/// text, decimal-looking text, nulls, nesting.
fn wild(rng: &mut StdRng, depth: u32) -> Value {
    match rng.gen_range(0..17) {
        0 => Value::Null,
        1 => json!(rng.gen::<bool>()),
        2 => json!(rng.gen::<i64>()),
        3 => json!(u64::MAX),
        4 => json!(i64::MIN),
        5 => json!(1e300),
        6 => json!(-0.5),
        7 => json!(["92233720368547758.07", "92233720368547758.08", "-1.00", "0", "0.00", "1e3", "0.001", "+5", " 5", "1_000", "NaN"][rng.gen_range(0..11)]),
        8 => json!("9".repeat(rng.gen_range(1..60))),
        9 => json!("x".repeat(rng.gen_range(60..5000))),
        10 => json!(["", " ", "\u{0}", "工行备注", "😀", "\u{202e}", "a\"b\\c", "<script>", "../../etc/passwd", "acc_0", "ord_0"][rng.gen_range(0..11)]),
        11 => json!((0..rng.gen_range(1..20)).map(|_| rng.gen::<char>()).collect::<String>()),
        12 if depth < 3 => Value::Array((0..rng.gen_range(0..4)).map(|_| wild(rng, depth + 1)).collect()),
        13 if depth < 3 => Value::Object((0..rng.gen_range(0..3)).map(|i| (format!("k{i}"), wild(rng, depth + 1))).collect()),
        14 => json!(format!("{}.{:02}", rng.gen_range(0..10_000_000_000_000i64), rng.gen_range(0..100))),
        15 => json!(rng.gen_range(-5i64..100_000)),
        _ => json!(format!("{}", rng.gen::<u64>())),
    }
}

fn decimal(rng: &mut StdRng) -> String {
    match rng.gen_range(0..8) {
        0..=2 => "1.00".into(),
        3 => "0.01".into(),
        4 => format!("{}.{:02}", rng.gen_range(0..1000), rng.gen_range(0..100)),
        5 => "10000000000000.00".into(),
        6 => "0.00".into(),
        _ => wild(rng, 3).as_str().map_or_else(|| "5.00".into(), str::to_string),
    }
}

/// A 16-digit card number with a valid Luhn check digit.
fn card_no(rng: &mut StdRng) -> String {
    let body: String = format!("622202{:09}", rng.gen_range(0..1_000_000_000u64));
    format!("{body}{}", gateway::accounts::luhn_check_digit(&body))
}

/// A statement file naming known orders, with amounts, statuses and fees right or wrong.
fn statement_file(rng: &mut StdRng, known: &Known) -> String {
    let mut text =
        String::from(["bank_ref,order_id,direction,amount,status,fee", "bank_ref,order_id,direction,amount,status", "order_id,amount"][rng.gen_range(0..3)]);
    for line in 0..rng.gen_range(0..6) {
        let order = pick(rng, &known.orders);
        let direction = ["in", "out", "in"][rng.gen_range(0..3)];
        let status = ["succeeded", "failed", "lost"][rng.gen_range(0..3)];
        let fee = ["0.00", "0.10", "", "-1"][rng.gen_range(0..4)];
        text.push_str(&format!("\nB{line},{order},{direction},{},{status},{fee}", decimal(rng)));
    }
    text
}

fn pick(rng: &mut StdRng, items: &[String]) -> String {
    items[rng.gen_range(0..items.len())].clone()
}

/// A string for a member called `name`, from what the name says it holds.
fn string_for(name: &str, rng: &mut StdRng, known: &mut Known) -> String {
    let name = name.to_ascii_lowercase();
    if name.contains("amount") || name.starts_with("fee") || name.starts_with("order_m") || name == "daily_cap" || name.contains("weight") {
        return decimal(rng);
    }
    match name.as_str() {
        "currency" => ["CNY", "CNY", "CNY", "USD", "XXX", "cny"][rng.gen_range(0..6)].into(),
        "out_order_no" => {
            known.numbers += 1;
            if rng.gen_bool(0.1) && known.numbers > 1 {
                format!("fz-{}", rng.gen_range(1..known.numbers))
            } else {
                format!("fz-{}", known.numbers)
            }
        }
        "member_id" => pick(rng, &known.members),
        "card_no" => card_no(rng),
        "card_id" => pick(rng, &known.cards),
        "holder_name" | "name" if rng.gen_bool(0.7) => ["Zhang San", "Li Si"][rng.gen_range(0..2)].into(),
        "channel" => ["sim_gateway", "sim_unionpay", "sim_ibps", "sim_wechat_scan", "nope"][rng.gen_range(0..5)].into(),
        "from" => ["0", "100", "1.00", "-1"][rng.gen_range(0..4)].into(),
        "mode" => ["balance", "channel", "guarantee"][rng.gen_range(0..3)].into(),
        "platform_id" => known.platform.clone(),
        "business_date" | "date" | "day" => [business_date(0), business_date(-1), "2026-02-30".into(), "1969-12-31".into()][rng.gen_range(0..4)].clone(),
        "window" => ["00:00-24:00", "09:00-17:00", "25:00-26:00", "17:00-09:00"][rng.gen_range(0..4)].into(),
        "url" | "webhook_url" => ["https://example.com/hook", "http://127.0.0.1:1/", "http://169.254.169.254/", "ftp://x"][rng.gen_range(0..4)].into(),
        "id_number" => "11010519491231002X".into(),
        "phone" => "13800138000".into(),
        "password" | "new_password" | "old_password" => ["123456", "654321", "1", ""][rng.gen_range(0..4)].into(),
        "status" => ["normal", "debit_blocked", "credit_blocked", "closed", "frozen"][rng.gen_range(0..5)].into(),
        "direction" => ["in", "out", "sideways"][rng.gen_range(0..3)].into(),
        "arrival" => ["realtime", "standard", "tomorrow"][rng.gen_range(0..3)].into(),
        "kind" | "type" => ["individual", "corporate", "recharge", "withdrawal", "test"][rng.gen_range(0..5)].into(),
        "rate" | "service_fee" | "service_fee_rate" | "rate_ppm" => ["0.006", "0", "1", "1.5", "-0.1"][rng.gen_range(0..5)].into(),
        "file" => statement_file(rng, known),
        _ if name.ends_with("account_id") || name == "account" || name == "payer" || name == "payee" => {
            if rng.gen_bool(0.1) {
                known.foreign_account.clone()
            } else {
                pick(rng, &known.accounts)
            }
        }
        _ if name.ends_with("order_id") || name == "payment" || name == "order" => pick(rng, &known.orders),
        _ => (0..rng.gen_range(1..12)).map(|_| rng.gen_range(b'a'..=b'z') as char).collect(),
    }
}

/// `schema` with its `$ref` followed.
fn resolve<'a>(schema: &'a Value, components: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap_or_default();
            resolve(&components[name], components)
        }
        None => schema,
    }
}

/// An instance of `schema` (OpenAPI 3.1 as utoipa writes it), values chosen by member name.
fn instance(schema: &Value, components: &Value, name: &str, rng: &mut StdRng, known: &mut Known, depth: u32) -> Value {
    let schema = resolve(schema, components);
    for alternatives in ["oneOf", "anyOf"] {
        if let Some(options) = schema.get(alternatives).and_then(Value::as_array).filter(|o| !o.is_empty()) {
            let chosen = &options[rng.gen_range(0..options.len())];
            return instance(chosen, components, name, rng, known, depth);
        }
    }
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array).filter(|o| !o.is_empty()) {
        let mut merged = Map::new();
        for part in parts {
            if let Value::Object(object) = instance(part, components, name, rng, known, depth) {
                merged.extend(object);
            }
        }
        return Value::Object(merged);
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array).filter(|o| !o.is_empty()) {
        return options[rng.gen_range(0..options.len())].clone();
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let non_null: Vec<&str> = types.iter().copied().filter(|t| *t != "null").collect();
    if types.contains(&"null") && rng.gen_bool(0.1) {
        return Value::Null;
    }
    let kind = if non_null.is_empty() {
        if schema.get("properties").is_some() {
            "object"
        } else {
            ""
        }
    } else {
        non_null[rng.gen_range(0..non_null.len())]
    };
    match kind {
        "object" => {
            let required: Vec<&str> = schema["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            let mut object = Map::new();
            if let Some(properties) = schema["properties"].as_object() {
                for (key, property) in properties {
                    let wanted = if required.contains(&key.as_str()) { rng.gen_bool(0.95) } else { rng.gen_bool(0.5) };
                    if wanted && depth < 5 {
                        object.insert(key.clone(), instance(property, components, key, rng, known, depth + 1));
                    }
                }
            }
            Value::Object(object)
        }
        "array" => {
            let length = if rng.gen_bool(0.05) { rng.gen_range(0..300) } else { rng.gen_range(0..4) };
            Value::Array((0..length).map(|_| instance(&schema["items"], components, name, rng, known, depth + 1)).collect())
        }
        "string" => Value::String(string_for(name, rng, known)),
        "integer" => match rng.gen_range(0..4) {
            0 => json!(rng.gen_range(0..10)),
            1 => json!(rng.gen_range(0..100_000)),
            _ => json!(rng.gen_range(0..1000)),
        },
        "number" => json!(rng.gen::<f64>() * 100.0),
        "boolean" => json!(rng.gen::<bool>()),
        _ => wild(rng, depth),
    }
}

/// Replaces up to three values anywhere in `value` by wild ones, removes or adds a member.
fn mutate(value: &mut Value, rng: &mut StdRng) {
    fn visit(value: &mut Value, rng: &mut StdRng, chance: f64) {
        match value {
            Value::Object(object) => {
                let keys: Vec<String> = object.keys().cloned().collect();
                for key in keys {
                    if rng.gen_bool(chance) {
                        object.insert(key, wild(rng, 1));
                    } else if rng.gen_bool(chance / 3.0) {
                        object.remove(&key);
                    } else if let Some(inner) = object.get_mut(&key) {
                        visit(inner, rng, chance);
                    }
                }
                if rng.gen_bool(chance / 2.0) {
                    object.insert("extra".into(), wild(rng, 1));
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| visit(item, rng, chance)),
            _ => {}
        }
    }
    let chance = [0.0, 0.0, 0.05, 0.2][rng.gen_range(0..4)];
    if rng.gen_bool(0.05) {
        *value = wild(rng, 0);
    } else {
        visit(value, rng, chance);
    }
}

/// Percent-encodes a path segment or query value.
fn encode(text: &str) -> String {
    text.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// A path with its `{parameters}` filled: known ids mostly, wild text sometimes.
fn concrete(path: &str, rng: &mut StdRng, known: &mut Known) -> String {
    let mut result = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        let end = rest[start..].find('}').map_or(rest.len(), |e| start + e);
        result.push_str(&rest[..start]);
        let name = &rest[start + 1..end];
        let value = if rng.gen_bool(0.15) {
            match wild(rng, 3) {
                Value::String(text) => text,
                other => other.to_string(),
            }
        } else {
            match name {
                "name" | "channel" => ["sim_unionpay", "sim_gateway", "nope"][rng.gen_range(0..3)].into(),
                "shard" => rng.gen_range(0..3).to_string(),
                "case_id" => "case_1".into(),
                "card_no" => card_no(rng),
                other => string_for(other, rng, known),
            }
        };
        result.push_str(&encode(&value));
        rest = &rest[(end + 1).min(rest.len())..];
    }
    result.push_str(rest);
    result
}

/// Sends one request as the platform (signed) or the operator (token); the status and body, or
/// `None` when no answer came.
fn send(server: &Server, p: &Client, token: &str, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    let url = format!("{}{path}", server.base);
    let mut request = ureq::request(method, &url).timeout(std::time::Duration::from_secs(30));
    if path.starts_with("/admin/") {
        request = request.set("Authorization", &format!("Bearer {token}"));
    } else {
        let (t, nonce) = (now(), fresh_nonce());
        request = request
            .set("X-Platform-Id", &p.platform)
            .set("X-Timestamp", &t.to_string())
            .set("X-Nonce", &nonce)
            .set("X-Signature", &sign(&p.secret, method, path, t, &nonce, body.unwrap_or_default().as_bytes()));
    }
    let result = match body {
        Some(body) => request.set("Content-Type", "application/json").send_string(body),
        None => request.call(),
    };
    let response = match result {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(_) => return None,
    };
    let status = response.status();
    Some((status, response.into_string().unwrap_or_default()))
}

/// What every answer must be: present, not a 5xx, an error in the API's shape.
/// What every answer must be: present, not a 5xx, an error in the API's shape. Answers the
/// status and the error code (`ok` for a success).
fn check_answer(answer: Option<(u16, String)>, what: &str, seed: u64) -> (u16, String) {
    let Some((status, text)) = answer else { panic!("FUZZ_SEED={seed}: no answer (dropped connection) to {what}") };
    assert!(status < 500, "FUZZ_SEED={seed}: {status} to {what}: {text}");
    if status >= 400 {
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("FUZZ_SEED={seed}: {status} without a JSON body to {what}: {text:?}"));
        assert!(body["error"]["code"].is_string() && body["error"]["message"].is_string(), "FUZZ_SEED={seed}: error shape of {what}: {body}");
        let code = body["error"]["code"].as_str().unwrap_or_default();
        return (status, format!("{code} {}", body["error"]["param"].as_str().unwrap_or_default()));
    }
    (status, "ok".into())
}

struct World {
    dir: tempfile::TempDir,
    server: Server,
    token: &'static str,
    document: Value,
}

impl Drop for World {
    /// A fuzz test that fails leaves no server behind (one that passes has stopped it already).
    fn drop(&mut self) {
        let _ = self.server.child.kill();
        let _ = self.server.child.wait();
    }
}

fn world() -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "fuzz-operator-token-0123456789abcdef";
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let (status, document) = server.get("/openapi.json", None);
    assert_eq!(status, 200);
    World { dir, server, token, document }
}

/// A platform with two funded accounts to fuzz, and another platform with one funded account
/// that nothing may touch: its balances, checked at the end.
fn platforms(world: &World) -> (Client<'_>, Known, Client<'_>, String) {
    let p = Client::create(&world.server, world.token, "{\"name\": \"Fuzz\"}");
    let members = vec![p.member("m-a", "Zhang San"), p.member("m-b", "Li Si")];
    let accounts: Vec<String> = members.iter().map(|m| p.account(m)).collect();
    let orders = vec![p.fund(&accounts[0], "100.00", "r-1"), p.fund(&accounts[1], "100.00", "r-2"), "ord_1".into()];
    let q = Client::create(&world.server, world.token, "{\"name\": \"Bystander\"}");
    let foreign = q.account(&q.member("q-a", "Wang Wu"));
    q.fund(&foreign, "50.00", "q-r-1");
    let known = Known { platform: p.platform.clone(), members, accounts, orders, cards: vec!["card_1".into()], foreign_account: foreign.clone(), numbers: 0 };
    (p, known, q, foreign)
}

/// Keeps the ids an accepted request's answer names, so that later requests reach past the lookups.
fn learn(known: &mut Known, reply: &Value) {
    match reply {
        Value::Object(object) => {
            for (key, value) in object {
                match (key.as_str(), value.as_str()) {
                    ("order_id", Some(id)) if known.orders.len() < 500 => known.orders.push(id.into()),
                    ("card_id", Some(id)) if known.cards.len() < 100 => known.cards.push(id.into()),
                    ("member_id", Some(id)) if known.members.len() < 100 => known.members.push(id.into()),
                    _ => learn(known, value),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| learn(known, item)),
        _ => {}
    }
}

/// After the run: the ledger balances, and the bystander platform's account is as it was.
fn check_untouched(world: &World, q: &Client, foreign: &str, seed: u64) {
    let (status, report) = world.server.get("/admin/invariants", Some(world.token));
    assert_eq!(status, 200, "FUZZ_SEED={seed}: {report}");
    assert_eq!(report["ok"], true, "FUZZ_SEED={seed}: invariants after fuzzing: {report}");
    assert_eq!(q.balances(foreign), ("50.00".into(), "50.00".into(), "0.00".into(), "0.00".into()), "FUZZ_SEED={seed}: another platform's account");
}

/// Platforms the body fuzzer creates at most.
const PLATFORMS_CREATED_MAX: u32 = 20;

#[test]
fn fuzz_http_json_bodies_of_every_endpoint_get_an_answer_never_a_5xx() {
    let world = world();
    let (p, mut known, q, foreign) = platforms(&world);
    let (seed, mut rng) = seeded();
    let components = world.document["components"]["schemas"].clone();
    let mut endpoints: Vec<(String, String, Value)> = Vec::new();
    for (path, item) in world.document["paths"].as_object().expect("paths") {
        // Rotating a secret (with the operator's token) revokes the fuzzing platforms' own
        // secrets mid-run; tests/secrets.rs covers its body.
        if path.ends_with("/rotate-secret") {
            continue;
        }
        for (method, operation) in item.as_object().expect("operations") {
            if let Some(schema) = operation["requestBody"]["content"]["application/json"].get("schema") {
                endpoints.push((method.to_uppercase(), path.clone(), schema.clone()));
            }
        }
    }
    assert!(endpoints.len() >= 25, "the document lists the bodies of the endpoints: {}", endpoints.len());
    let mut outcomes: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u32>> = Default::default();
    for _ in 0..cases(5_000) {
        let (method, path, schema) = endpoints[rng.gen_range(0..endpoints.len())].clone();
        let mut body = instance(&schema, &components, "", &mut rng, &mut known, 0);
        mutate(&mut body, &mut rng);
        let text = body.to_string();
        let concrete = concrete(&path, &mut rng, &mut known);
        let what = format!("{method} {concrete} {text}");
        let answer = send(&world.server, &p, world.token, &method, &concrete, Some(&text));
        if let Some((200..=299, reply)) = &answer {
            learn(&mut known, &serde_json::from_str(reply).unwrap_or_default());
        }
        let (_, code) = check_answer(answer, &what, seed);
        let counts = outcomes.entry(format!("{method} {path}")).or_default();
        *counts.entry(code).or_default() += 1;
        // Every platform adds a command per shard to each settlement run (today's cost): past a
        // few, creating more only slows a long run down, so the endpoint leaves the draw.
        if path == "/admin/platforms" && counts.get("ok").is_some_and(|created| *created >= PLATFORMS_CREATED_MAX) {
            endpoints.retain(|(_, other, _)| other != "/admin/platforms");
        }
    }
    println!("answers per endpoint: {outcomes:#?}");
    let accepted: u32 = outcomes.values().filter_map(|codes| codes.get("ok")).sum();
    assert!(accepted > 0, "the generator reaches past the checks sometimes: {outcomes:?}");
    check_untouched(&world, &q, &foreign, seed);
    stop(world);
}

/// Stops the server gracefully: it must exit with success after everything it was sent.
fn stop(world: World) {
    // SAFETY: a plain signal to our own child process.
    unsafe { libc::kill(world.server.child.id() as i32, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut world = world;
    loop {
        if let Some(status) = world.server.child.try_wait().expect("wait") {
            assert!(status.success(), "server exit status {status:?}");
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the server did not stop within 60 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Header text: printable ASCII (what an HTTP client can send), some of it near the real thing.
fn header_text(rng: &mut StdRng, real: &str) -> String {
    match rng.gen_range(0..8) {
        0 => String::new(),
        1 => (0..rng.gen_range(1..80)).map(|_| rng.gen_range(0x20u8..0x7f) as char).collect(),
        2 => format!("{real}x"),
        3 => real.chars().take(rng.gen_range(0..real.len().max(1))).collect(),
        4 => "9".repeat(rng.gen_range(1..40)),
        _ => real.to_string(),
    }
}

#[test]
fn fuzz_http_signed_headers_are_refused_with_a_4xx_never_a_5xx() {
    let world = world();
    let (p, known, q, foreign) = platforms(&world);
    let (seed, mut rng) = seeded();
    let path = format!("/v1/accounts/{}", known.accounts[0]);
    let mut used_nonce = None;
    let mut accepted = 0;
    for _ in 0..cases(5_000) {
        let method = ["GET", "GET", "POST", "DELETE", "PUT"][rng.gen_range(0..5)];
        let t = now();
        let timestamp = match rng.gen_range(0..9) {
            0 => i64::MIN.to_string(),
            1 => i64::MAX.to_string(),
            2 => (t - 301).to_string(),
            3 => (t + rng.gen_range(-300..300)).to_string(),
            4 => "1e3".into(),
            5 => format!("+{t}"),
            6 => rng.gen::<i64>().to_string(),
            _ => t.to_string(),
        };
        let nonce = match rng.gen_range(0..6) {
            0 => header_text(&mut rng, "abcdefghijklmnop"),
            1 => used_nonce.clone().unwrap_or_else(fresh_nonce),
            _ => fresh_nonce(),
        };
        let platform = match rng.gen_range(0..6) {
            0 => header_text(&mut rng, &p.platform),
            1 => "plt_4294967296".into(),
            2 => "plt_0".into(),
            _ => p.platform.clone(),
        };
        let body = if method == "GET" { String::new() } else { wild(&mut rng, 0).to_string() };
        // A signature of other values (a request signed for another timestamp and nonce).
        let stale = sign(&p.secret, method, &path, 0, "", b"");
        let real = {
            use hmac::{Hmac, Mac};
            use sha2::{Digest, Sha256};
            let canonical = format!("{method}\n{path}\n{timestamp}\n{nonce}\n{}", hex::encode(Sha256::digest(body.as_bytes())));
            let mut mac = Hmac::<Sha256>::new_from_slice(p.secret.as_bytes()).expect("key");
            mac.update(canonical.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        };
        let signature = match rng.gen_range(0..5) {
            0 => header_text(&mut rng, &real),
            1 => stale,
            _ => real,
        };
        let url = format!("{}{path}", world.server.base);
        let request = ureq::request(method, &url)
            .timeout(std::time::Duration::from_secs(30))
            .set("X-Platform-Id", &platform)
            .set("X-Timestamp", &timestamp)
            .set("X-Nonce", &nonce)
            .set("X-Signature", &signature);
        let result = if body.is_empty() { request.call() } else { request.send_string(&body) };
        let answer = match result {
            Ok(response) | Err(ureq::Error::Status(_, response)) => Some((response.status(), response.into_string().unwrap_or_default())),
            Err(_) => None,
        };
        let what = format!("{method} {path} X-Platform-Id: {platform:?} X-Timestamp: {timestamp:?} X-Nonce: {nonce:?} X-Signature: {signature:?} body {body}");
        let (status, _) = check_answer(answer, &what, seed);
        if status == 200 {
            accepted += 1;
            used_nonce = Some(nonce);
        }
    }
    assert!(accepted > 0, "FUZZ_SEED={seed}: some requests were signed right");
    check_untouched(&world, &q, &foreign, seed);
    stop(world);
}

#[test]
fn fuzz_http_query_strings_and_path_ids_get_an_answer_never_a_5xx() {
    let world = world();
    let (p, mut known, q, foreign) = platforms(&world);
    let (seed, mut rng) = seeded();
    let mut gets: Vec<(String, Vec<String>)> = Vec::new();
    for (path, item) in world.document["paths"].as_object().expect("paths") {
        if let Some(operation) = item.get("get") {
            let query = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .filter_map(|p| p["name"].as_str().map(str::to_string))
                .collect();
            gets.push((path.clone(), query));
        }
    }
    for _ in 0..cases(5_000) {
        let (path, names) = &gets[rng.gen_range(0..gets.len())];
        let mut concrete = concrete(path, &mut rng, &mut known);
        let mut separator = '?';
        for name in names.iter().chain(std::iter::once(&"extra".to_string())) {
            if rng.gen_bool(0.5) {
                let value = match (name.as_str(), rng.gen_range(0..3)) {
                    ("limit", 0) => rng.gen_range(0..600).to_string(),
                    ("cursor", 0) => format!("{}-{}", rng.gen::<u64>(), rng.gen::<u64>()),
                    (_, 0 | 1) => string_for(name, &mut rng, &mut known),
                    _ => match wild(&mut rng, 3) {
                        Value::String(text) => text,
                        other => other.to_string(),
                    },
                };
                concrete.push_str(&format!("{separator}{}={}", encode(name), encode(&value)));
                separator = '&';
            }
        }
        if rng.gen_bool(0.05) {
            concrete.push_str(&format!("{separator}limit=1&limit=2&%ZZ=%"));
        }
        check_answer(send(&world.server, &p, world.token, "GET", &concrete, None), &format!("GET {concrete}"), seed);
    }
    check_untouched(&world, &q, &foreign, seed);
    stop(world);
}

#[test]
fn fuzz_http_bank_callbacks_are_refused_unless_signed_and_never_a_5xx() {
    let world = world();
    let (_p, mut known, q, foreign) = platforms(&world);
    let (seed, mut rng) = seeded();
    let components = world.document["components"]["schemas"].clone();
    let schema = world.document["paths"]["/channels/simulator/callback"]["post"]["requestBody"]["content"]["application/json"]["schema"].clone();
    let url = format!("{}/channels/simulator/callback", world.server.base);
    // The simulator's channel key, as the server derives it from its master key, so that half of
    // the callbacks are signed right and their wild bodies reach the checks behind the signature.
    let master = std::fs::read_to_string(world.dir.path().join("master-key")).expect("the master key in the data directory");
    let channel_key = gateway::secrets::hmac_hex(&hex::decode(master.trim()).expect("hex"), b"channel-key/simulator");
    let mut signed_right = 0;
    for _ in 0..cases(2_000) {
        let mut body = instance(&schema, &components, "", &mut rng, &mut known, 0);
        mutate(&mut body, &mut rng);
        let text = body.to_string();
        let t = now();
        let signed = rng.gen_bool(0.5);
        let header = match rng.gen_range(0..5) {
            _ if signed => banksim::signature_header(&channel_key, t, text.as_bytes()),
            0 => "t=-9223372036854775808,v1=00".to_string(),
            1 => format!("t={},v1={}", rng.gen::<i64>(), "0".repeat(64)),
            2 => format!("t={t},v1=zz"),
            3 => header_text(&mut rng, &format!("t={t},v1=00")),
            _ => format!("t={t}"),
        };
        let request = ureq::post(&url).timeout(std::time::Duration::from_secs(30)).set("Content-Type", "application/json");
        let request = if signed || rng.gen_bool(0.9) { request.set("X-Channel-Signature", &header) } else { request };
        let answer = match request.send_string(&text) {
            Ok(response) | Err(ureq::Error::Status(_, response)) => Some((response.status(), response.into_string().unwrap_or_default())),
            Err(_) => None,
        };
        let (status, _) = check_answer(answer, &format!("POST /channels/simulator/callback X-Channel-Signature: {header:?} {text}"), seed);
        if text.len() > gateway::simulator::CALLBACK_BYTES_MAX {
            // Anyone may post here: no more than a verdict's few bytes are read (session 64).
            assert_eq!(status, 413, "FUZZ_SEED={seed}: a callback past its size is refused unread: {header:?}");
        } else if signed {
            signed_right += 1;
        } else {
            assert_eq!(status, 401, "FUZZ_SEED={seed}: an unsigned callback is refused: {header:?} {text}");
        }
    }
    assert!(signed_right > 0);
    check_untouched(&world, &q, &foreign, seed);
    stop(world);
}

#[test]
fn a_journal_damaged_into_an_impossible_record_stops_the_server_at_start_with_a_clear_message() {
    // What fuzz_journal_replay_of_a_damaged_journal_is_an_error_never_a_panic (engine) found, end
    // to end: a batch that decodes but cannot have been written (a credit from the shard to
    // itself) used to panic recovery inside `apply`; the server must refuse to start and say
    // which batch of which shard is corrupt.
    use engine::journal::{batch_key, encode, BatchRecordRef};
    use engine::ledger::command::{Command, Envelope};
    use engine::ledger::types::{AccountId, Bucket, CreditPurpose, OrderId, RemoteCredit};
    use engine::money::CurrencyId;
    use storage::Store;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "fuzz-operator-token-0123456789abcdef";
    let config = config_with(FAST_BANK);
    // Killed, not stopped: the journal is durable at every acknowledgement, and a kill needs no signal handler installed yet.
    start_configured(dir.path(), token, &config).kill();
    {
        let store = storage_rocks::RocksStore::open(dir.path()).expect("the data directory opens");
        let mut last = 0;
        let mut previous_hash = [0u8; 32];
        store
            .scan(&batch_key(0, 0), &batch_key(0, u64::MAX), &mut |key, value| {
                last = u64::from_be_bytes(key[3..11].try_into().expect("a journal key"));
                previous_hash = engine::journal::stored_hash(value).expect("a hashed batch");
                true
            })
            .expect("scan");
        assert!(last > 0, "shard 0 has its genesis");
        let credit = RemoteCredit {
            source: 0,
            sequence: 1,
            order: OrderId(1),
            account: AccountId(2),
            counterparty: AccountId(3),
            currency: CurrencyId(0),
            bucket: Bucket::Unsettled,
            amount: 100,
            purpose: CreditPurpose::PaymentIncome,
        };
        let envelopes = [Envelope { platform: 0, out_order_no: None, command: Command::ApplyCredit(credit) }];
        let mut bytes = Vec::new();
        let record =
            BatchRecordRef { shard: 0, sequence: last + 1, timestamp: u64::MAX / 2, previous_hash, envelopes: &envelopes, entries: &[], postings: &[] };
        encode(&record, &mut bytes);
        store.write(&[(&batch_key(0, last + 1), &bytes)]).expect("write");
    }
    let path = dir.path().join("test-config.toml");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_clearing"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path())
        .env("CLEARING_ADMIN_TOKEN", token)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start server");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started on a corrupt journal");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("piped"), &mut stderr).expect("stderr");
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("journal of shard 0 is corrupt at batch") && stderr.contains("credits to itself"), "{stderr}");
}
