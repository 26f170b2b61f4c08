//! End-to-end tests of requests at the edge: bulk requests (each operation answered, the request
//! bounded) and garbage bodies at every documented endpoint (a 4xx, never a 5xx).

mod support;

use serde_json::json;
use support::money::*;
use support::*;

#[test]
fn bulk_answers_each_operation_and_bounds_the_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-7-0123456789abcdef0123456789abcdef";
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client::create(&server, token, "{\"name\": \"Bulk\"}");
    let a = p.account(&p.member("m-a", "Zhang San"));
    let b = p.account(&p.member("m-b", "Li Si"));
    p.fund(&a, "10.00", "r-1");
    let payment = |number: &str, amount: &str| json!({"op": "payment", "body": {"out_order_no": number, "payer_account_id": a, "mode": "balance", "amount": amount, "currency": "CNY", "payees": [{"account_id": b, "amount": amount}]}});
    let operations = json!({"operations": [
        payment("b-1", "3.00"),
        payment("b-2", "0.001"),
        {"op": "teleport", "body": {}},
        payment("b-3", "7.01"),
        payment("b-1", "3.00"),
        {"op": "recharge", "body": {"out_order_no": "b-r", "account_id": b, "amount": "1.00", "currency": "CNY"}},
        {"op": "freeze", "body": {"out_order_no": "b-f", "account_id": a, "amount": "1.00", "currency": "CNY", "reason": "check", "colour": "red"}},
    ]});
    let (status, _, reply) = p.post("/v1/bulk", &operations);
    assert_eq!(status, 200, "{reply}");
    let results = reply["results"].as_array().unwrap();
    let summary: Vec<(u64, Option<&str>, Option<&str>)> =
        results.iter().map(|r| (r["status"].as_u64().unwrap(), r["body"]["status"].as_str(), r["body"]["error"]["code"].as_str())).collect();
    assert_eq!(
        summary,
        vec![
            (201, Some("succeeded"), None),
            (400, None, Some("invalid_amount")),
            (400, None, Some("invalid_request")),
            (422, None, Some("insufficient_funds")),
            (201, Some("succeeded"), None),
            (201, Some("pending"), None),
            (400, None, Some("invalid_request")),
        ],
        "{reply}"
    );
    assert_eq!(results[4]["replayed"], true, "the same order number within one request replays");
    assert_eq!(results[0]["body"]["order_id"], results[4]["body"]["order_id"]);
    assert_eq!(p.balances(&a).0, "7.00");

    let too_many: Vec<serde_json::Value> = (0..8190).map(|i| payment(&format!("t-{i}"), "0.01")).collect();
    assert_eq!(error_of(&p.post("/v1/bulk", &json!({"operations": too_many}))), (400, Some("too_many_operations")));
    assert_eq!(error_of(&p.post("/v1/bulk", &json!({"operations": []}))), (400, Some("invalid_request")));
    assert_eq!(error_of(&p.post("/v1/bulk", &json!({"ops": []}))), (400, Some("invalid_request")));
    assert_eq!(p.balances(&a).0, "7.00", "a refused request moves nothing");
    let most: Vec<serde_json::Value> = (0..8189).map(|i| payment(&format!("m-{i}"), "0.01")).collect();
    let (status, _, reply) = p.post("/v1/bulk", &json!({"operations": most}));
    assert_eq!(status, 200);
    let accepted = reply["results"].as_array().unwrap().iter().filter(|r| r["status"] == 201).count();
    assert_eq!(accepted, 700, "7.00 pays 700 orders of 0.01; the rest are refused one by one");
    assert_eq!(p.balances(&a).0, "0.00");
    server.stop();
}

#[test]
fn garbage_at_every_endpoint_gets_a_4xx_never_a_5xx_and_the_document_lists_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-17-0123456789abcdef0123456789abcdef";
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let (status, document) = server.get("/openapi.json", None);
    assert_eq!(status, 200);
    let paths: Vec<String> = document["paths"].as_object().unwrap().keys().cloned().collect();
    assert!(paths.len() >= 30, "{paths:?}");
    let p = Client::create(&server, token, "{\"name\": \"Fuzz\"}");
    let a = p.account(&p.member("m-a", "Zhang San"));
    p.fund(&a, "1.00", "r-1");
    let bodies = [
        "",
        "{",
        "[]",
        "null",
        "42",
        "\"x\"",
        "{\"out_order_no\": 7}",
        "{\"amount\": \"1e400\"}",
        "{\"amount\": \"99999999999999999999999.99\", \"currency\": \"CNY\"}",
        "{\"operations\": [{\"op\": \"payment\", \"body\": 5}]}",
        "{\"operations\": \"all\"}",
        "{\"payees\": [{}]}",
        "\u{0}\u{1}",
    ];
    let mut checked = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("{account_id}", &a)
                .replace("{order_id}", "ord_1")
                .replace("{card_id}", "card_1")
                .replace("{member_id}", "mem_1")
                .replace("{shard}", "0")
                .replace("{card_no}", "4111111111111111")
                .replace("{platform_id}", &p.platform)
                .replace("{business_date}", "2026-13-01")
                .replace("{name}", "sim_unionpay");
            for body in &bodies {
                let status = match method.as_str() {
                    // The operator's POSTs with the operator's token, so their checks see the garbage.
                    "post" if concrete.starts_with("/admin/") => Some(
                        answer(ureq::post(&format!("{}{concrete}", server.base)).set("Authorization", &format!("Bearer {token}")).send_string(body), &concrete)
                            .status(),
                    ),
                    "post" => signed_post_to(&server.base, &concrete, &p.platform, &p.secret, &fresh_nonce(), body).map(|r| r.0),
                    "get" | "delete" => {
                        let t = now();
                        let nonce = fresh_nonce();
                        let verb = method.to_uppercase();
                        let request = ureq::request(&verb, &format!("{}{concrete}", server.base))
                            .set("X-Platform-Id", &p.platform)
                            .set("X-Timestamp", &t.to_string())
                            .set("X-Nonce", &nonce)
                            .set("X-Signature", &sign(&p.secret, &verb, &concrete, t, &nonce, b""));
                        Some(answer(request.call(), &concrete).status())
                    }
                    // The operator's PUTs (settlement rules), with the operator's token.
                    "put" | "patch" => Some(
                        answer(
                            ureq::request(&method.to_uppercase(), &format!("{}{concrete}", server.base))
                                .set("Authorization", &format!("Bearer {token}"))
                                .send_string(body),
                            &concrete,
                        )
                        .status(),
                    ),
                    other => panic!("method {other}"),
                };
                let status = status.expect("an answer");
                assert!(status < 500, "{method} {concrete} with {body:?} answered {status}");
                checked += 1;
            }
        }
    }
    assert!(checked > 300, "{checked}");
    assert_eq!(server.get("/readyz", None).0, 200, "still ready");
    assert_eq!(p.balances(&a).0, "1.00", "garbage moved nothing");
    server.stop();
}

/// Regression (helper 108#2): a bulk request meeting a stopped shard failed whole (503), though
/// the other shards had accepted their operations, and their new recharges never reached the
/// bank until a start (a retry is a replay, which sends nothing). Each operation now answers for
/// itself: the stopped shard's 503 `unavailable` (outcome unknown until it starts), the others
/// as they went, their recharges sent. The shard stops as a bank would meet it: the stored
/// record of an old order number (a cold row) is found damaged when a retry of it needs it.
#[test]
fn a_bulk_meeting_a_stopped_shard_answers_each_operation_and_sends_the_others_recharges() {
    use engine::ledger::command::{idempotency_key, Command, OutOrderNo};
    use storage::Store;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-27-0123456789abcdef0123456789abcdef";
    // A checkpoint every batch: order numbers leave memory for the store after a few.
    let mut replacements = FAST_BANK.to_vec();
    replacements.push(("every_batches = 0", "every_batches = 1"));
    let config = config_with(&replacements);
    let server = start_configured(dir.path(), token, &config);
    let p = Client::create(&server, token, "{\"name\": \"Stopped shard\"}");
    let shard_of = |account: &str| account.trim_start_matches("acc_").parse::<u64>().expect("acc_ and digits") % 2;
    let (mut on_0, mut on_1) = (Vec::new(), Vec::new());
    for i in 0.. {
        if on_0.len() >= 2 && !on_1.is_empty() {
            break;
        }
        let account = p.account(&p.member(&format!("m-{i}"), "Zhang San"));
        if shard_of(&account) == 0 {
            on_0.push(account)
        } else {
            on_1.push(account)
        }
    }
    let (payer, payee, other) = (on_0[0].clone(), on_0[1].clone(), on_1[0].clone());
    p.fund(&payer, "10.00", "r-fund");
    let payment = json!({"op": "payment", "body": {"out_order_no": "old-1", "payer_account_id": payer, "mode": "balance", "amount": "1.00", "currency": "CNY", "payees": [{"account_id": payee, "amount": "1.00"}]}});
    let (status, _, reply) = p.post("/v1/bulk", &json!({"operations": [payment.clone()]}));
    assert_eq!((status, reply["results"][0]["status"].as_u64()), (200, Some(201)), "{reply}");
    let paid = reply["results"][0]["body"]["order_id"].as_str().expect("an order id").to_string();
    for i in 0..4 {
        p.fund(&other, "0.01", &format!("r-later-{i}"));
    }
    let (platform, secret) = (p.platform.clone(), p.secret.clone());
    server.stop();
    {
        let store = storage_rocks::RocksStore::open(dir.path()).expect("open");
        let number: u32 = platform.trim_start_matches("plt_").parse().expect("plt_ and digits");
        let key = idempotency_key(number, Command::PAYMENT_SCOPE, &OutOrderNo::new("old-1").expect("a number"));
        let row = engine::cold::read_row(&store, key).expect("read").expect("the number's record is a cold row");
        assert_eq!((row.shard, format!("ord_{}", row.record.reply.id)), (0, paid.clone()));
        store.write(&[(&engine::cold::cold_key(key), b"not a row")]).expect("write");
    }
    let server = start_configured(dir.path(), token, &config);
    let p = Client { server: &server, platform, secret };
    let recharge = json!({"op": "recharge", "body": {"out_order_no": "s-1", "account_id": other, "amount": "1.00", "currency": "CNY"}});
    let operations = json!({"operations": [payment, recharge]});
    let summary = |reply: &serde_json::Value| -> Vec<(u64, Option<String>, Option<String>)> {
        reply["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| {
                (r["status"].as_u64().unwrap_or(0), r["body"]["status"].as_str().map(str::to_string), r["body"]["error"]["code"].as_str().map(str::to_string))
            })
            .collect()
    };
    // The retry of the old number needs its damaged row: shard 0 stops with that batch.
    let (status, _, reply) = p.post("/v1/bulk", &operations);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(summary(&reply), vec![(503, None, Some("unavailable".into())), (201, Some("pending".into()), None)], "{reply}");
    assert!(reply["results"][0]["body"]["error"]["message"].as_str().unwrap_or_default().contains("retry with the same out_order_no"), "{reply}");
    let (status, shard) = server.get("/admin/shards/0", Some(token));
    assert_eq!((status, shard["stopped"].as_bool()), (200, Some(true)), "{shard}");
    let recharged = reply["results"][1]["body"]["order_id"].as_str().expect("an order id").to_string();
    // The healthy shard's recharge went to the bank with the answer.
    p.wait_order(&recharged, "succeeded");
    // A retry: the stopped shard's operation the same, the recharge a replay of its first
    // answer (no second order, nothing sent again).
    let (status, _, again) = p.post("/v1/bulk", &operations);
    assert_eq!(status, 200, "{again}");
    assert_eq!(summary(&again), summary(&reply), "{again}");
    assert_eq!(again["results"][0]["body"]["error"]["message"], reply["results"][0]["body"]["error"]["message"], "the engine's answer, not the preparation's");
    assert_eq!((again["results"][1]["replayed"].as_bool(), again["results"][1]["body"]["order_id"].as_str()), (Some(true), Some(recharged.as_str())));
    assert_eq!(p.balances(&other).0, "1.04");
    server.kill();
}
