//! End-to-end: no balance overflow can stop a shard (the issue's repro: thousands of the
//! largest recharges, confirmed by the simulated bank, past i64 on a system stripe, with a
//! kill -9 while they are pending), and a flood against tiny mailboxes leaves health, metrics
//! and the operator API answering, with nothing 5xx but 503 `overloaded` + Retry-After.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::money::{error_of, FAST_BANK};
use support::{config_with, start_configured, Client, Server};

const TOKEN: &str = "operator-token-for-overflow-and-overload-tests";
/// The largest amount one order may carry (`AMOUNT_MINOR_MAX`), in yuan.
const LARGEST: &str = "10000000000000.00";
const LARGEST_CENTS: i128 = 1_000_000_000_000_000;
/// What one account may hold at most (`BALANCE_MINOR_MAX`), in largest recharges.
const PER_ACCOUNT_MAX: i128 = 1_000;

/// Cents of a decimal text with two decimals (signed, any size).
fn cents(text: &str) -> i128 {
    let (whole, fraction) = text.split_once('.').unwrap();
    let negative = whole.starts_with('-');
    let magnitude = whole.trim_start_matches('-').parse::<i128>().unwrap() * 100 + fraction.parse::<i128>().unwrap();
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

/// The shard of a public account id (`acc_` + the id; ids name their shard: id % shards).
fn shard_of(account: &str, shards: u64) -> u64 {
    account[4..].parse::<u64>().unwrap() % shards
}

fn available(p: &Client, account: &str) -> i128 {
    cents(&p.balances(account).0)
}

/// Sends `count` recharges of the largest amount over `accounts` in one /v1/bulk call and
/// returns the answers' statuses and error codes.
fn bulk_recharges(p: &Client, accounts: &[String], prefix: &str, count: usize) -> Vec<(u64, Option<String>)> {
    let operations: Vec<serde_json::Value> = (0..count)
        .map(|i| {
            let body = json!({"out_order_no": format!("{prefix}-{i}"), "account_id": accounts[i % accounts.len()], "amount": LARGEST, "currency": "CNY"});
            json!({"op": "recharge", "body": body})
        })
        .collect();
    let (status, _, reply) = p.post("/v1/bulk", &json!({"operations": operations}));
    assert_eq!(status, 200, "{reply}");
    reply["results"].as_array().unwrap().iter().map(|r| (r["status"].as_u64().unwrap(), r["body"]["error"]["code"].as_str().map(str::to_string))).collect()
}

/// Waits until the accounts together hold `expected` cents (the bank's callbacks landed).
fn wait_total(p: &Client, accounts: &[String], expected: i128) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let total: i128 = accounts.iter().map(|a| available(p, a)).sum();
        if total == expected {
            return;
        }
        assert!(Instant::now() < deadline, "accounts hold {total}, expected {expected}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every shard runs, readiness says so, and the books balance.
fn assert_healthy(server: &Server) {
    let (status, ready) = server.get("/readyz", None);
    assert_eq!(status, 200, "{ready}");
    let (status, shards) = server.get("/admin/shards", Some(TOKEN));
    assert_eq!(status, 200);
    for shard in shards["shards"].as_array().unwrap() {
        assert_eq!((shard["state"].as_str(), shard["stopped"].as_bool()), (Some("running"), Some(false)), "{shard}");
    }
    let (status, report) = server.get("/admin/invariants", Some(TOKEN));
    assert_eq!((status, &report["ok"]), (200, &json!(true)), "{report}");
}

/// The money-in channel taking orders up to the largest amount (its default `order_max` is
/// 5,000,000.00, which new recharges are held to).
const WHALE_CHANNEL: (&str, &str) = (
    "direction = \"in\"\ncurrency = \"CNY\"\nfee_fixed = \"0.00\"\nfee_rate_bps = 0\nfee_min = \"0.00\"\nfee_max = \"0.00\"\norder_min = \"0.01\"\norder_max = \"5000000.00\"",
    "direction = \"in\"\ncurrency = \"CNY\"\nfee_fixed = \"0.00\"\nfee_rate_bps = 0\nfee_min = \"0.00\"\nfee_max = \"0.00\"\norder_min = \"0.01\"\norder_max = \"10000000000000.00\"",
);

fn start(dir: &std::path::Path) -> Server {
    start_configured(dir, TOKEN, &config_with(&[FAST_BANK[0], WHALE_CHANNEL]))
}

#[test]
fn the_largest_recharges_past_i64_stop_no_shard_even_across_a_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path());
    let p = Client::create(&server, TOKEN, r#"{"name": "whale"}"#);
    // Ten accounts on shard 0: its reserve stripe takes every recharge below.
    let mut accounts = Vec::new();
    for n in 0.. {
        let account = p.account(&p.member(&format!("m{n}"), "Whale"));
        if shard_of(&account, 2) == 0 {
            accounts.push(account);
        }
        if accounts.len() == 10 {
            break;
        }
    }
    // First bulk call: 8,189 of the largest recharges, all confirmed by the bank.
    let first = bulk_recharges(&p, &accounts, "a", 8_189);
    assert!(first.iter().all(|(status, _)| *status == 201), "{:?}", first.iter().find(|r| r.0 != 201));
    wait_total(&p, &accounts, 8_189 * LARGEST_CENTS);
    // Second call: 1,200 more take shard 0's reserve past i64::MIN (9,389 x 10^15 > 2^63);
    // killed while they wait for the bank, so that the restart hands them to it again.
    let second = bulk_recharges(&p, &accounts, "b", 1_200);
    assert!(second.iter().all(|(status, _)| *status == 201));
    let (platform, secret) = (p.platform.clone(), p.secret.clone());
    server.kill();
    let server = start(dir.path());
    let p = Client { server: &server, platform: platform.clone(), secret: secret.clone() };
    wait_total(&p, &accounts, 9_389 * LARGEST_CENTS);
    assert_healthy(&server);
    let (_, reserve) = server.get("/admin/reserve?currency=CNY", Some(TOKEN));
    assert!(cents(reserve["reserve"].as_str().unwrap()) >= 9_389 * LARGEST_CENTS, "{reserve}");
    assert!(9_389 * LARGEST_CENTS > i64::MAX as i128, "the test must pass i64");

    // Third call: nine accounts hold 939 of the largest recharges and one 938; 70 more each are
    // asked and the bank confirms all: what fits lands, the 9 x 9 + 8 = 89 that cannot wait in
    // suspense (never lost, never invented).
    let third = bulk_recharges(&p, &accounts, "c", 700);
    assert!(third.iter().all(|(status, _)| *status == 201));
    wait_total(&p, &accounts, 10 * PER_ACCOUNT_MAX * LARGEST_CENTS);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, reserve) = server.get("/admin/reserve?currency=CNY", Some(TOKEN));
        if cents(reserve["suspense"].as_str().unwrap()) == 89 * LARGEST_CENTS {
            break;
        }
        assert!(Instant::now() < deadline, "suspense never held the 89 recharges that could not land: {reserve}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The reserve check against the simulated bank's own records still answers past i64 (its
    // sum of reserve lines overflowed an i64 and answered 503 from then on), and they agree.
    let (status, checked) = server.get("/admin/reserve?currency=CNY&bank=simulator", Some(TOKEN));
    assert_eq!(status, 200, "{checked}");
    assert!(cents(checked["bank_balance"].as_str().unwrap()) > i64::MAX as i128, "{checked}");
    assert_eq!(cents(checked["bank_balance"].as_str().unwrap()), cents(checked["reserve"].as_str().unwrap()), "{checked}");
    // A full account refuses more with the new code, singly and in bulk.
    let refused = p.post("/v1/recharges", &json!({"out_order_no": "d-1", "account_id": accounts[0], "amount": "0.01", "currency": "CNY"}));
    assert_eq!(error_of(&refused), (422, Some("balance_limit_exceeded")), "{refused:?}");
    let fourth = bulk_recharges(&p, &accounts, "e", 20);
    assert!(fourth.iter().all(|r| *r == (422, Some("balance_limit_exceeded".to_string()))), "{fourth:?}");
    assert_healthy(&server);
    // A graceful restart replays all of it.
    server.stop();
    let server = start(dir.path());
    let p = Client { server: &server, platform, secret };
    assert_healthy(&server);
    assert_eq!(available(&p, &accounts[3]), PER_ACCOUNT_MAX * LARGEST_CENTS);
    server.stop();
}

#[test]
fn a_flood_against_tiny_mailboxes_leaves_health_metrics_and_admin_answering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_with(&[("mailbox_capacity = 1024", "mailbox_capacity = 1")]);
    let server = start_configured(dir.path(), TOKEN, &config);
    let p = Client::create(&server, TOKEN, r#"{"name": "flooder"}"#);
    let accounts: Vec<String> = (0..4).map(|n| p.account(&p.member(&format!("f{n}"), "Flood"))).collect();
    // Funds through a confirmed bulk of recharges, so the flood below has money to move.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let overloaded = std::sync::atomic::AtomicU64::new(0);
    let accepted = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| {
        for thread in 0..16 {
            let (p, accounts, stop, overloaded, accepted) = (&p, &accounts, &stop, &overloaded, &accepted);
            scope.spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let operations: Vec<serde_json::Value> = (0..200)
                        .map(|i| {
                            let body =
                                json!({"out_order_no": format!("t{thread}-{n}-{i}"), "account_id": accounts[i % 4], "amount": "1.00", "currency": "CNY"});
                            json!({"op": "recharge", "body": body})
                        })
                        .collect();
                    let (status, _, reply) = p.post("/v1/bulk", &json!({"operations": operations}));
                    assert_eq!(status, 200, "{reply}");
                    for result in reply["results"].as_array().unwrap() {
                        match (result["status"].as_u64().unwrap(), result["body"]["error"]["code"].as_str()) {
                            (201, _) => accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                            (503, Some("overloaded")) => overloaded.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                            other => panic!("only 201 or 503 overloaded: {other:?}"),
                        };
                    }
                    // An account opened: 201, or 503 overloaded with Retry-After (it was 422).
                    if n % 4 == 0 {
                        let member = p.member(&format!("fm{thread}-{n}"), "Flood");
                        let body = json!({"out_order_no": format!("fa{thread}-{n}"), "member_id": member, "currency": "CNY"});
                        let (status, _, reply) = p.post("/v1/accounts", &body);
                        match (status, reply["error"]["code"].as_str()) {
                            (201, _) => {}
                            (503, Some("overloaded")) => {
                                overloaded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            other => panic!("an account opened during the flood answered {other:?}: {reply}"),
                        }
                    }
                    // A single order: 201, or 503 overloaded with Retry-After.
                    let body = json!({"out_order_no": format!("s{thread}-{n}"), "account_id": accounts[thread % 4], "amount": "1.00", "currency": "CNY"});
                    let request = ureq::post(&format!("{}/v1/recharges", p.server.base));
                    let body = body.to_string();
                    let t = support::now();
                    let nonce = support::fresh_nonce();
                    let signature = support::sign(&p.secret, "POST", "/v1/recharges", t, &nonce, body.as_bytes());
                    let response = support::answer(
                        request
                            .set("X-Platform-Id", &p.platform)
                            .set("X-Timestamp", &t.to_string())
                            .set("X-Nonce", &nonce)
                            .set("X-Signature", &signature)
                            .set("Content-Type", "application/json")
                            .send_string(&body),
                        "recharge",
                    );
                    match response.status() {
                        201 => {}
                        503 => {
                            assert_eq!(response.header("Retry-After"), Some("1"));
                            let error: serde_json::Value = response.into_json().unwrap();
                            assert_eq!(error["error"]["code"], "overloaded", "{error}");
                            overloaded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        other => panic!("single recharge answered {other}"),
                    }
                }
            });
        }
        // While the flood runs, what serves operators keeps answering within a generous deadline.
        let flood_started = Instant::now();
        while flood_started.elapsed() < Duration::from_secs(6) {
            for (path, token) in [("/healthz", None), ("/readyz", None), ("/metrics", Some(TOKEN)), ("/admin/shards", Some(TOKEN))] {
                let started = Instant::now();
                let mut request = ureq::get(&format!("{}{path}", server.base)).timeout(Duration::from_secs(10));
                if let Some(token) = token {
                    request = request.set("Authorization", &format!("Bearer {token}"));
                }
                let response = support::answer(request.call(), path);
                assert_eq!(response.status(), 200, "{path}");
                assert!(started.elapsed() < Duration::from_secs(5), "{path} took {:?} during the flood", started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let (accepted, overloaded) = (accepted.into_inner(), overloaded.into_inner());
    assert!(accepted > 0, "the flood moved orders");
    assert!(overloaded > 0, "a mailbox of one must have been full at times ({accepted} accepted)");
    assert_healthy(&server);
    server.stop();
}
