//! End-to-end tests that bad money requests get their documented error codes and move nothing,
//! and that a platform can neither see nor touch another platform's accounts, orders and cards.

mod support;

use serde_json::json;
use support::money::*;
use support::*;

#[test]
fn bad_money_requests_get_their_codes_and_move_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-2-0123456789abcdef0123456789abcdef";
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client::create(&server, token, "{\"name\": \"Market\"}");
    let a = p.account(&p.member("m-a", "Zhang San"));
    let b = p.account(&p.member("m-b", "Li Si"));
    p.fund(&a, "100.00", "r-a");
    let pay = |amount: &str, payee_amount: &str| {
        json!({"out_order_no": "p-bad", "payer_account_id": a, "mode": "balance", "amount": amount, "currency": "CNY",
            "payees": [{"account_id": b, "amount": payee_amount}]})
    };
    let mut unknown_field = pay("1.00", "1.00");
    unknown_field["tip"] = json!("1.00");
    let mut wrong_type = pay("1.00", "1.00");
    wrong_type["amount"] = json!(1);
    let mut bad_payee = pay("1.00", "1.00");
    bad_payee["payees"][0]["account_id"] = json!("acc_x");
    let mut to_self = pay("1.00", "1.00");
    to_self["payees"][0]["account_id"] = json!(a);
    let mut bad_currency = pay("1.00", "1.00");
    bad_currency["currency"] = json!("EUR");
    let cases: Vec<(&str, serde_json::Value, u16, &str)> = vec![
        ("too many decimals", pay("1.001", "1.001"), 400, "invalid_amount"),
        ("zero", pay("0", "0"), 400, "invalid_amount"),
        ("negative", pay("-1.00", "-1.00"), 400, "invalid_amount"),
        ("not a number", pay("abc", "abc"), 400, "invalid_amount"),
        ("legs do not sum", pay("2.00", "1.00"), 400, "invalid_request"),
        ("unknown field", unknown_field, 400, "invalid_request"),
        ("wrong type", wrong_type, 400, "invalid_request"),
        ("bad payee id", bad_payee, 404, "not_found"),
        ("pay oneself", to_self, 400, "invalid_request"),
        ("unknown currency", bad_currency, 400, "invalid_request"),
        ("more than the balance", pay("100.01", "100.01"), 422, "insufficient_funds"),
    ];
    for (name, body, status, code) in &cases {
        assert_eq!(error_of(&p.post("/v1/payments", body)), (*status, Some(*code)), "{name}");
    }
    let malformed = signed_post(&server, "/v1/payments", &p.platform, &p.secret, &fresh_nonce(), "{\"out_order_no\": ");
    assert_eq!(error_of(&malformed), (400, Some("invalid_request")));
    assert_eq!(error_of(&p.post("/v1/refunds", &json!({"out_order_no": "rf", "payment_order_id": "ord_999999", "amount": "1.00"}))), (404, Some("not_found")));
    assert_eq!(
        error_of(&p.post("/v1/freezes", &json!({"out_order_no": "f", "account_id": a, "amount": "1.00", "currency": "CNY", "reason": ""}))),
        (400, Some("invalid_request"))
    );
    assert_eq!(
        error_of(
            &p.post("/v1/freezes", &json!({"out_order_no": "f", "account_id": a, "amount": "1.00", "currency": "CNY", "reason": "r", "expires_at": "soon"}))
        ),
        (400, Some("invalid_request"))
    );
    assert_eq!(
        error_of(&p.post("/v1/recharges", &json!({"out_order_no": "r", "account_id": a, "amount": "1.00", "currency": "CNY", "channel": "carrier_pigeon"}))),
        (400, Some("invalid_request"))
    );
    assert_eq!(p.get("/v1/orders/ord_abc").0, 404);
    // Nothing moved.
    assert_eq!(p.balances(&a).0, "100.00");
    assert_eq!(p.balances(&b).0, "0.00");
    server.stop();
}

#[test]
fn a_platform_never_touches_another_platforms_money() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-3-0123456789abcdef0123456789abcdef";
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let a = Client::create(&server, token, "{\"name\": \"A\"}");
    let b = Client::create(&server, token, "{\"name\": \"B\"}");
    let a1 = a.account(&a.member("a1", "Zhang San"));
    let a2 = a.account(&a.member("a2", "Li Si"));
    let b1 = b.account(&b.member("b1", "Wang Wu"));
    a.fund(&a1, "100.00", "r-1");
    b.fund(&b1, "100.00", "r-1");
    let (_, _, held) = a.post("/v1/payments", &json!({"out_order_no": "p1", "payer_account_id": a1, "mode": "guarantee", "amount": "10.00", "currency": "CNY", "payees": [{"account_id": a2, "amount": "10.00"}]}));
    let order = held["order_id"].as_str().unwrap().to_string();
    let (_, _, frozen) = a.post("/v1/freezes", &json!({"out_order_no": "f1", "account_id": a1, "amount": "1.00", "currency": "CNY", "reason": "r"}));
    let freeze = frozen["order_id"].as_str().unwrap().to_string();
    let attempts: Vec<(&str, String, serde_json::Value)> = vec![
        (
            "pay from A's account",
            "/v1/payments".into(),
            json!({"out_order_no": "x1", "payer_account_id": a1, "mode": "balance", "amount": "1.00", "currency": "CNY", "payees": [{"account_id": b1, "amount": "1.00"}]}),
        ),
        (
            "pay to A's account",
            "/v1/payments".into(),
            json!({"out_order_no": "x2", "payer_account_id": b1, "mode": "balance", "amount": "1.00", "currency": "CNY", "payees": [{"account_id": a2, "amount": "1.00"}]}),
        ),
        ("confirm A's payment", format!("/v1/payments/{order}/confirm"), json!({"out_order_no": "x3"})),
        ("cancel A's payment", format!("/v1/payments/{order}/cancel"), json!({"out_order_no": "x4"})),
        ("refund A's payment", "/v1/refunds".into(), json!({"out_order_no": "x5", "payment_order_id": order, "amount": "1.00"})),
        ("freeze A's account", "/v1/freezes".into(), json!({"out_order_no": "x6", "account_id": a1, "amount": "1.00", "currency": "CNY", "reason": "r"})),
        ("release A's freeze", format!("/v1/freezes/{freeze}/release"), json!({"out_order_no": "x7"})),
        ("recharge A's account", "/v1/recharges".into(), json!({"out_order_no": "x8", "account_id": a1, "amount": "1.00", "currency": "CNY"})),
        ("set A's password", format!("/v1/accounts/{a1}/password"), json!({"password": "123456"})),
        ("close A's account", format!("/v1/accounts/{a1}/close"), json!({"out_order_no": "x9"})),
        (
            "bind a card to A's account",
            format!("/v1/accounts/{a1}/cards"),
            json!({"out_order_no": "x10", "card_no": "4111111111111111", "holder_name": "Zhang San", "id_number": "11010519491231002X", "phone": "13800138000"}),
        ),
        ("verify A's card", format!("/v1/accounts/{a1}/cards/card_1/verify"), json!({"amount": "0.01"})),
        (
            "withdraw from A's account",
            "/v1/withdrawals".into(),
            json!({"out_order_no": "x11", "account_id": a1, "card_id": "card_1", "amount": "1.00", "currency": "CNY"}),
        ),
        (
            "batch from A's account",
            "/v1/batch-payments".into(),
            json!({"out_order_no": "x12", "payer_account_id": a1, "mode": "balance", "currency": "CNY", "orders": [{"out_order_no": "x12-1", "amount": "1.00", "payees": [{"account_id": b1, "amount": "1.00"}]}]}),
        ),
    ];
    for (name, path, body) in &attempts {
        assert_eq!(error_of(&b.post(path, body)), (404, Some("not_found")), "{name}");
    }
    // A's card exists (card_1), so the 404s above are isolation, not absence.
    let (status, _, card) = a.post(
        &format!("/v1/accounts/{a1}/cards"),
        &json!({"out_order_no": "c1", "card_no": "4111111111111111", "holder_name": "Zhang San", "id_number": "11010519491231002X", "phone": "13800138000"}),
    );
    assert_eq!((status, card["card_id"].as_str()), (201, Some("card_1")), "{card}");
    assert_eq!(error_of(&b.post(&format!("/v1/accounts/{a1}/cards/card_1/verify"), &json!({"amount": "0.01"}))), (404, Some("not_found")));
    let a_member = a.get(&format!("/v1/accounts/{a1}")).1["member_id"].as_str().unwrap().to_string();
    for path in [
        format!("/v1/orders/{order}"),
        format!("/v1/accounts/{a1}"),
        format!("/v1/accounts/{a1}/entries"),
        format!("/v1/accounts/{a1}/cards"),
        format!("/v1/members/{a_member}/notifications"),
    ] {
        assert_eq!(b.get(&path).0, 404, "{path}");
    }
    let (_, _, bulk) = b.post("/v1/bulk", &json!({"operations": [{"op": "payment", "body": {"out_order_no": "x13", "payer_account_id": a1, "mode": "balance", "amount": "1.00", "currency": "CNY", "payees": [{"account_id": b1, "amount": "1.00"}]}}, {"op": "confirm", "body": {"order_id": order, "out_order_no": "x14"}}]}));
    let statuses: Vec<u64> = bulk["results"].as_array().unwrap().iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [404, 404], "{bulk}");
    let (_, events) = b.get("/v1/events?limit=500");
    assert!(events["events"].as_array().unwrap().iter().all(|e| e["data"]["account_id"] == b1.as_str()), "{events}");
    // Another platform's order number finds nothing: an empty page, as for a number never used.
    assert_eq!(b.get("/v1/orders?out_order_no=p1").1, json!({"orders": [], "next_cursor": null}));
    let (_, listed) = b.get("/v1/orders");
    assert!(listed["orders"].as_array().unwrap().iter().all(|o| o["account_id"] == b1), "{listed}");
    assert_eq!(a.balances(&a1).0, "89.00");
    assert_eq!(a.wait_order(&order, "held")["status"], "held");
    server.stop();
}

/// Issue item 12: operator input past its type or past any sensible bound. Each row is one
/// field out of range: 400 `invalid_request` with that field as `param`, and nothing stored.
#[test]
fn operator_numbers_past_their_bounds_are_refused_with_the_field_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "bounds-token-0123456789abcdef0123456789abcdef";
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client::create(&server, token, "{\"name\": \"Bounds\"}");
    let receiver = p.account(&p.member("m-r", "Zhang San"));
    let express = json!({"id": 9, "name": "sim_express", "kind": "unionpay_realtime", "direction": "out", "currency": "CNY",
        "fee_fixed": "0.50", "fee_rate_bps": 0, "fee_min": "0.50", "fee_max": "0.50", "order_min": "0.01", "order_max": "1000.00",
        "daily_cap": "100000.00", "window": "00:00-24:00", "business_days_only": false, "arrival": "realtime", "eta_minutes": 1,
        "serves": ["personal"], "sim_latency_ms": 20, "sim_failure_per_mille": 0});
    let new_channel = |field: &str, value: serde_json::Value| {
        let mut body = express.clone();
        body[field] = value;
        body
    };
    let rule = |share: serde_json::Value| json!({"currency": "CNY", "basis": "amount", "period": "day", "tiers": [{"from": "0", "rate": "0.01"}], "receivers": [{"account_id": receiver, "share": share}]});
    let rule_path = format!("/admin/platforms/{}/settlement-rule", p.platform);
    let big = |text: &str| serde_json::from_str::<serde_json::Value>(text).expect("a JSON number");
    let cases: Vec<(&str, &str, serde_json::Value, &str)> = vec![
        ("POST", "/admin/platforms", json!({"name": "a", "settlement_cycle_days": 31}), "settlement_cycle_days"),
        ("POST", "/admin/platforms", json!({"name": "a", "settlement_cycle_days": 300}), "settlement_cycle_days"),
        ("POST", "/admin/platforms", json!({"name": "a", "settlement_cycle_days": -1}), "settlement_cycle_days"),
        ("POST", "/admin/platforms", json!({"name": "a", "auto_confirm_days": 0}), "auto_confirm_days"),
        ("POST", "/admin/platforms", json!({"name": "a", "auto_confirm_days": 91}), "auto_confirm_days"),
        ("POST", "/admin/platforms", json!({"name": "a", "auto_confirm_days": big("18446744073709551616")}), "auto_confirm_days"),
        ("PATCH", "/admin/channels/sim_ibps", json!({"sim_latency_ms": u64::MAX}), "sim_latency_ms"),
        ("PATCH", "/admin/channels/sim_ibps", json!({"sim_latency_ms": big("18446744073709551616")}), "sim_latency_ms"),
        ("PATCH", "/admin/channels/sim_ibps", json!({"sim_latency_ms": 86_400_001}), "sim_latency_ms"),
        ("PATCH", "/admin/channels/sim_ibps", json!({"timeout_ms": 99}), "timeout_ms"),
        ("PATCH", "/admin/channels/sim_ibps", json!({"timeout_ms": 86_400_001}), "timeout_ms"),
        ("PATCH", "/admin/channels/sim_ibps", json!({"eta_minutes": 43_201}), "eta_minutes"),
        ("PATCH", "/admin/channels/sim_ibps", json!({"eta_minutes": 4_294_967_296u64}), "eta_minutes"),
        ("PATCH", "/admin/channels/sim_ibps", json!({"fee_rate_bps": 10_001}), "fee_rate_bps"),
        ("PATCH", "/admin/channels/sim_ibps", json!({"fee_rate_bps": -1}), "fee_rate_bps"),
        ("PATCH", "/admin/channels/sim_ibps", json!({"sim_failure_per_mille": 1001}), "sim_failure_per_mille"),
        ("PATCH", "/admin/channels/sim_ibps", json!({"sim_failure_per_mille": 65_536}), "sim_failure_per_mille"),
        ("PATCH", "/admin/channels/sim_ibps", json!({"sim_drop_per_mille": 1001}), "sim_drop_per_mille"),
        ("POST", "/admin/channels", new_channel("eta_minutes", json!(43_201)), "eta_minutes"),
        ("POST", "/admin/channels", new_channel("sim_latency_ms", json!(86_400_001)), "sim_latency_ms"),
        ("POST", "/admin/channels", new_channel("timeout_ms", json!(50)), "timeout_ms"),
        ("POST", "/admin/channels", new_channel("fee_rate_bps", json!(10_001)), "fee_rate_bps"),
        ("POST", "/admin/channels", new_channel("sim_failure_per_mille", json!(1001)), "sim_failure_per_mille"),
        ("POST", "/admin/channels", new_channel("sim_drop_per_mille", json!(2000)), "sim_drop_per_mille"),
        ("POST", "/admin/channels", new_channel("id", json!(65_536)), "id"),
        ("PUT", &rule_path, rule(json!(0)), "receivers"),
        ("PUT", &rule_path, rule(json!(1_000_001)), "receivers"),
        ("PUT", &rule_path, rule(json!(4_294_967_296u64)), "share"),
    ];
    let channels_before = server.get("/admin/channels", Some(token)).1;
    for (method, path, body, param) in &cases {
        let (status, error) = admin_request(&server, method, path, token, Some(body));
        assert_eq!(
            (status, error["error"]["code"].as_str(), error["error"]["param"].as_str()),
            (400, Some("invalid_request"), Some(*param)),
            "{method} {path} {body}: {error}"
        );
    }
    // Nothing was stored: the channels are as they were, no rule, and the next platform is the second.
    assert_eq!(server.get("/admin/channels", Some(token)).1, channels_before);
    assert_eq!(admin_request(&server, "GET", &rule_path, token, None).0, 404);
    let (status, created) = create_platform(&server, token, "{\"name\": \"Next\"}");
    assert_eq!((status, created["platform_id"].as_str()), (201, Some("plt_2")), "{created}");
    server.stop();
}
