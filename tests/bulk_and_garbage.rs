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
