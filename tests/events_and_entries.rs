//! End-to-end tests of what a platform reads back about its orders: order events, listed and
//! delivered as signed webhooks with retries (also after a kill -9), and an account's entries.

mod support;

use serde_json::json;
use support::money::*;
use support::*;

/// A webhook receiver: answers 500 to the first `failures` deliveries, then 200; keeps the rest.
fn webhook_receiver(failures: usize) -> (String, std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = received.clone();
    std::thread::spawn(move || {
        let mut refused = 0;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut length, mut signature) = (0usize, String::new());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(value) = lower.strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("x-clearing-signature:") {
                    signature = line["x-clearing-signature:".len()..].trim().to_string();
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            let status = if refused < failures {
                refused += 1;
                "500 Internal Server Error"
            } else {
                kept.lock().unwrap().push((signature, String::from_utf8_lossy(&body).into_owned()));
                "200 OK"
            };
            let _ = stream.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
        }
    });
    (url, received)
}

#[test]
fn order_events_are_listed_and_delivered_signed_with_retries_also_after_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-15-0123456789abcdef0123456789abcdef";
    // The receiver is plain http on 127.0.0.1: the development switch.
    let config = config_with(&[
        ("latency_ms = 200", "latency_ms = 20"),
        ("backoff_ms = 1000", "backoff_ms = 50"),
        ("allow_insecure_loopback = false", "allow_insecure_loopback = true"),
    ]);
    let server = start_configured(dir.path(), token, &config);
    let p = Client::create(&server, token, "{\"name\": \"Hooks\"}");
    let (url, received) = webhook_receiver(2);
    assert_eq!(error_of(&p.post("/v1/webhook", &json!({"url": "ftp://x"}))), (400, Some("invalid_request")));
    let (status, _, webhook) = p.post("/v1/webhook", &json!({"url": url}));
    assert_eq!(status, 200, "{webhook}");
    let webhook_secret = webhook["signing_secret"].as_str().expect("the webhook's own secret").to_string();
    let a = p.account(&p.member("m-a", "Zhang San"));
    let b = p.account(&p.member("m-b", "Li Si"));
    let recharge = p.fund(&a, "10.00", "r-1");
    let (_, _, held) = p.post("/v1/payments", &json!({"out_order_no": "g-1", "payer_account_id": a, "mode": "guarantee", "amount": "4.00", "currency": "CNY", "payees": [{"account_id": b, "amount": "4.00"}]}));
    let order = held["order_id"].as_str().unwrap().to_string();
    p.post(&format!("/v1/payments/{order}/confirm"), &json!({"out_order_no": "c-1", "releases": [{"account_id": b, "amount": "1.00"}]}));
    p.post(&format!("/v1/payments/{order}/confirm"), &json!({"out_order_no": "c-2"}));

    // Listed newest first: the guarantee's three changes, then the recharge's two.
    let (status, page) = p.get("/v1/events?limit=4");
    assert_eq!(status, 200, "{page}");
    let types: Vec<&str> = page["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["order.succeeded", "order.held", "order.held", "order.succeeded"]);
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let (_, rest) = p.get(&format!("/v1/events?limit=4&cursor={cursor}"));
    let last: Vec<(&str, &str)> =
        rest["events"].as_array().unwrap().iter().map(|e| (e["type"].as_str().unwrap(), e["data"]["order_id"].as_str().unwrap())).collect();
    assert_eq!(last, [("order.pending", recharge.as_str())]);
    assert!(rest["next_cursor"].is_null());
    // A cursor is opaque and the platform's own (session 64, helper 102): another platform's
    // use of it, a position written by hand, or a changed byte is refused.
    let q = Client::create(&server, token, "{\"name\": \"Other\"}");
    let (status, refused) = q.get(&format!("/v1/events?limit=4&cursor={cursor}"));
    assert_eq!((status, refused["error"]["param"].as_str()), (400, Some("cursor")), "{refused}");
    let flipped = format!("{}{}", &cursor[..cursor.len() - 1], if cursor.ends_with('0') { '1' } else { '0' });
    for chosen in ["99999999999999999-1", flipped.as_str()] {
        let (status, refused) = p.get(&format!("/v1/events?limit=4&cursor={chosen}"));
        assert_eq!((status, refused["error"]["param"].as_str()), (400, Some("cursor")), "{chosen}: {refused}");
    }

    // Delivered in order despite two refused attempts, each signed with the webhook's secret.
    let wait_for = |count: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while received.lock().unwrap().len() < count {
            assert!(std::time::Instant::now() < deadline, "only {:?} delivered", received.lock().unwrap());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    wait_for(5);
    for (signature, body) in received.lock().unwrap().iter() {
        let (t, v1) = signature.split_once(",v1=").unwrap();
        let t = t.trim_start_matches("t=");
        let expected = {
            use hmac::{Hmac, Mac};
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(webhook_secret.as_bytes()).unwrap();
            mac.update(format!("{t}.{body}").as_bytes());
            hex::encode(mac.finalize().into_bytes())
        };
        assert_eq!(v1, expected, "signature of {body}");
    }
    let delivered: Vec<String> = received
        .lock()
        .unwrap()
        .iter()
        .map(|(_, body)| serde_json::from_str::<serde_json::Value>(body).unwrap()["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(delivered, ["order.pending", "order.succeeded", "order.held", "order.held", "order.succeeded"]);

    // After a kill -9 the deliveries go on from where they were.
    let (platform, secret) = (p.platform.clone(), p.secret.clone());
    drop(p);
    server.kill();
    let server = start_configured(dir.path(), token, &config);
    let p = Client { server: &server, platform, secret };
    p.post("/v1/freezes", &json!({"out_order_no": "f-1", "account_id": a, "amount": "1.00", "currency": "CNY", "reason": "r"}));
    wait_for(6);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let events: Vec<serde_json::Value> = received.lock().unwrap().iter().map(|(_, body)| serde_json::from_str(body).unwrap()).collect();
    assert_eq!(events.last().unwrap()["data"]["kind"], "freeze");
    let mut ids: Vec<&str> = events.iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 6, "each event once here (at least once in general): {ids:?}");
    server.stop();
}

#[test]
fn account_entries_page_newest_first_with_balances_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-16-0123456789abcdef0123456789abcdef";
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client::create(&server, token, "{\"name\": \"Ledger\"}");
    let a = p.account(&p.member("m-a", "Zhang San"));
    let b = p.account(&p.member("m-b", "Li Si"));
    let recharge = p.fund(&a, "10.00", "r-1");
    for i in 0..3 {
        p.post("/v1/payments", &json!({"out_order_no": format!("p-{i}"), "payer_account_id": a, "mode": "balance", "amount": "1.00", "currency": "CNY", "payees": [{"account_id": b, "amount": "1.00"}]}));
    }
    p.post("/v1/freezes", &json!({"out_order_no": "f-1", "account_id": a, "amount": "2.00", "currency": "CNY", "reason": "r"}));
    let mut lines = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/accounts/{a}/entries?limit=2&cursor={c}"),
            None => format!("/v1/accounts/{a}/entries?limit=2"),
        };
        let (status, page) = p.get(&path);
        assert_eq!(status, 200, "{page}");
        let entries = page["entries"].as_array().unwrap();
        assert!(entries.len() <= 2);
        lines.extend(entries.iter().map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["direction"].as_str().unwrap().to_string(),
                e["bucket"].as_str().unwrap().to_string(),
                e["amount"].as_str().unwrap().to_string(),
                e["balance_after"].as_str().unwrap().to_string(),
            )
        }));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let expected = [
        ("freeze", "credit", "frozen", "2.00", "2.00"),
        ("freeze", "debit", "settled", "2.00", "5.00"),
        ("payment", "debit", "settled", "1.00", "7.00"),
        ("payment", "debit", "settled", "1.00", "8.00"),
        ("payment", "debit", "settled", "1.00", "9.00"),
        ("recharge", "credit", "settled", "10.00", "10.00"),
    ];
    let got: Vec<(&str, &str, &str, &str, &str)> =
        lines.iter().map(|(k, d, b, a, after)| (k.as_str(), d.as_str(), b.as_str(), a.as_str(), after.as_str())).collect();
    assert_eq!(got, expected);
    let (_, first) = p.get(&format!("/v1/accounts/{a}/entries?limit=500"));
    assert_eq!(first["entries"].as_array().unwrap().last().unwrap()["order_id"].as_str(), Some(recharge.as_str()));
    assert_eq!(p.get(&format!("/v1/accounts/{a}/entries?limit=0")).0, 400);
    assert_eq!(p.get(&format!("/v1/accounts/{a}/entries?cursor=zz")).0, 400);
    // A cursor is bound to its account and balances: changed, or used for another account, refused.
    let (_, page) = p.get(&format!("/v1/accounts/{a}/entries?limit=2"));
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let parts: Vec<&str> = cursor.split('.').collect();
    let forged = format!("{}.{}.99999999.{}.{}.{}", parts[0], parts[1], parts[3], parts[4], parts[5]);
    assert_eq!(p.get(&format!("/v1/accounts/{a}/entries?limit=2&cursor={forged}")).0, 400);
    assert_eq!(p.get(&format!("/v1/accounts/{b}/entries?limit=2&cursor={cursor}")).0, 400);
    assert_eq!(p.get(&format!("/v1/accounts/{a}/entries?limit=2&cursor={cursor}")).0, 200);
    let other = Client::create(&server, token, "{\"name\": \"Other\"}");
    assert_eq!(other.get(&format!("/v1/accounts/{a}/entries")).0, 404);
    server.stop();
}

/// Issue item 13: one entries page decoded up to 256 journal batches whatever their size. An
/// account with one line in each of ten full batches (8,189 payments each, some hundreds of KB
/// stored) now gets its lines over several pages, each within the page's byte budget (1 MiB), and the
/// cursor walk still returns every line exactly once, newest first, with its balance.
#[test]
fn an_entries_page_over_a_long_history_stops_at_its_budget_and_the_walk_returns_every_line_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "entries-budget-token-0123456789abcdef0123456789abcdef";
    // One shard, so that each bulk request is one journal batch holding the account's line.
    let server = start_configured(dir.path(), token, &config_with(&[("latency_ms = 200", "latency_ms = 20"), ("shard_count = 2", "shard_count = 1")]));
    let p = Client::create(&server, token, "{\"name\": \"Long history\"}");
    let (filler, payee, target) = (p.account(&p.member("m-x", "Zhang San")), p.account(&p.member("m-y", "Li Si")), p.account(&p.member("m-t", "Wang Wu")));
    p.fund(&filler, "1000.00", "r-x");
    p.fund(&target, "100.00", "r-t");
    let payment = |number: String, payer: &str| json!({"op": "payment", "body": {"out_order_no": number, "payer_account_id": payer, "mode": "balance", "amount": "0.01", "currency": "CNY", "payees": [{"account_id": payee, "amount": "0.01"}]}});
    let batches = 10;
    for batch in 0..batches {
        let mut operations: Vec<serde_json::Value> = (0..8188).map(|k| payment(format!("f-{batch}-{k}"), &filler)).collect();
        operations.insert(4000, payment(format!("t-{batch}"), &target));
        let (status, _, reply) = p.post("/v1/bulk", &json!({ "operations": operations }));
        assert_eq!(status, 200);
        assert!(reply["results"].as_array().unwrap().iter().all(|r| r["status"] == 201), "every payment accepted");
    }
    let (mut cursor, mut lines, mut pages): (Option<String>, Vec<serde_json::Value>, usize) = (None, Vec::new(), 0);
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/accounts/{target}/entries?limit=500&cursor={c}"),
            None => format!("/v1/accounts/{target}/entries?limit=500"),
        };
        let (status, page) = p.get(&path);
        assert_eq!(status, 200, "{page}");
        pages += 1;
        lines.extend(page["entries"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
        assert!(pages <= 2 * batches + 2, "the walk ends");
    }
    assert!(pages > 1, "ten full batches are more than one page's budget: {pages} page(s)");
    let ids: std::collections::BTreeSet<&str> = lines.iter().map(|l| l["entry_id"].as_str().unwrap()).collect();
    assert_eq!((lines.len(), ids.len()), (batches + 1, batches + 1), "the recharge and each payment once");
    let balances: Vec<&str> = lines.iter().map(|l| l["balance_after"].as_str().unwrap()).collect();
    let expected: Vec<String> = (0..=batches).rev().map(|k| format!("{:.2}", 100.0 - k as f64 * 0.01)).collect();
    assert_eq!(balances, expected, "newest first, each balance after its line");
    assert_eq!(lines.last().unwrap()["kind"], "recharge");
    server.stop();
}
