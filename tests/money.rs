//! End-to-end tests of money movement over HTTP: recharges through the bank simulator, balance
//! and guarantee payments with splits, staged confirm, cancel, refunds, freezes, orders,
//! payment passwords, tenant isolation, and what survives a kill -9.

mod support;

use serde_json::json;
use support::*;

const FAST_BANK: &[(&str, &str)] = &[("latency_ms = 200", "latency_ms = 20")];

fn error_of(reply: &(u16, bool, serde_json::Value)) -> (u16, Option<&str>) {
    (reply.0, reply.2["error"]["code"].as_str())
}

#[test]
fn escrow_scenario_with_staged_confirm_refund_cancel_and_freeze() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-1";
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client::create(&server, token, "{\"name\": \"Home Decor\"}");
    let owner = p.account(&p.member("m-owner", "Zhang San"));
    let company = p.account(&p.member("m-company", "Li Si"));
    let platform_fee = p.account(&p.member("m-platform", "Home Decor Ltd"));

    p.fund(&owner, "1000.00", "r-1");
    assert_eq!(p.balances(&owner), ("1000.00".into(), "1000.00".into(), "0.00".into(), "0.00".into()));

    // The fee goes into escrow: 570 for the company, 30 commission for the platform.
    let hold = json!({"out_order_no": "pay-1", "payer_account_id": owner, "mode": "guarantee", "amount": "600.00", "currency": "CNY",
        "payees": [{"account_id": company, "amount": "570.00"}], "splits": [{"account_id": platform_fee, "amount": "30.00"}]});
    let (status, replayed, held) = p.post("/v1/payments", &hold);
    assert_eq!((status, replayed, held["status"].as_str(), held["kind"].as_str()), (201, false, Some("held"), Some("payment")), "{held}");
    let order = held["order_id"].as_str().unwrap().to_string();
    assert_eq!(p.post("/v1/payments", &hold), (201, true, held.clone()), "a replay answers the same body");
    let mut conflicting = hold.clone();
    conflicting["amount"] = json!("601.00");
    conflicting["payees"][0]["amount"] = json!("571.00");
    assert_eq!(error_of(&p.post("/v1/payments", &conflicting)), (409, Some("idempotency_conflict")));
    assert_eq!(p.balances(&owner).0, "400.00");

    // Confirmed in stages: first 200 to the company, then the rest.
    let confirm = |number: &str, releases: serde_json::Value| {
        let mut body = json!({"out_order_no": number});
        if !releases.is_null() {
            body["releases"] = releases;
        }
        p.post(&format!("/v1/payments/{order}/confirm"), &body)
    };
    let (status, _, first) = confirm("c-1", json!([{"account_id": company, "amount": "200.00"}]));
    assert_eq!((status, first["status"].as_str()), (200, Some("held")), "{first}");
    assert_eq!(error_of(&confirm("c-2", json!([{"account_id": company, "amount": "370.01"}]))), (422, Some("exceeds_held_amount")));
    let (status, _, done) = confirm("c-3", serde_json::Value::Null);
    assert_eq!((status, done["status"].as_str()), (200, Some("succeeded")), "{done}");
    assert_eq!(p.balances(&company).0, "570.00");
    assert_eq!(p.balances(&company).3, "570.00", "income is unsettled until settlement");
    assert_eq!(p.balances(&platform_fee).0, "30.00");

    // A refund from the company back to the owner.
    let refund = |number: &str, amount: &str| {
        p.post("/v1/refunds", &json!({"out_order_no": number, "payment_order_id": order, "amount": amount, "payee_account_id": company}))
    };
    let (status, _, refunded) = refund("rf-1", "50.00");
    assert_eq!((status, refunded["kind"].as_str(), refunded["status"].as_str()), (201, Some("refund"), Some("succeeded")), "{refunded}");
    assert_eq!(error_of(&refund("rf-2", "520.01")), (422, Some("exceeds_refundable_amount")));
    let (_, shown) = p.get(&format!("/v1/orders/{order}"));
    assert_eq!((shown["status"].as_str(), shown["refunded_amount"].as_str()), (Some("partially_refunded"), Some("50.00")), "{shown}");
    assert_eq!(p.balances(&owner).0, "450.00");

    // A second guarantee payment, cancelled in part and then in full.
    let second = json!({"out_order_no": "pay-2", "payer_account_id": owner, "mode": "guarantee", "amount": "100.00", "currency": "CNY",
        "payees": [{"account_id": company, "amount": "100.00"}]});
    let (_, _, held2) = p.post("/v1/payments", &second);
    let order2 = held2["order_id"].as_str().unwrap().to_string();
    let (status, _, part) = p.post(&format!("/v1/payments/{order2}/cancel"), &json!({"out_order_no": "x-1", "amount": "40.00"}));
    assert_eq!((status, part["status"].as_str()), (200, Some("held")), "{part}");
    let (status, _, all) = p.post(&format!("/v1/payments/{order2}/cancel"), &json!({"out_order_no": "x-2"}));
    assert_eq!((status, all["status"].as_str()), (200, Some("cancelled")), "{all}");
    assert_eq!(error_of(&p.post(&format!("/v1/payments/{order2}/confirm"), &json!({"out_order_no": "c-9"}))), (409, Some("order_state_invalid")));
    assert_eq!(p.balances(&owner).0, "450.00");

    // Freeze and release.
    let (status, _, frozen) =
        p.post("/v1/freezes", &json!({"out_order_no": "f-1", "account_id": owner, "amount": "150.00", "currency": "CNY", "reason": "dispute"}));
    assert_eq!((status, frozen["status"].as_str()), (201, Some("held")), "{frozen}");
    assert_eq!(p.balances(&owner), ("300.00".into(), "300.00".into(), "150.00".into(), "0.00".into()));
    let freeze = frozen["order_id"].as_str().unwrap().to_string();
    assert_eq!(
        error_of(&p.post(&format!("/v1/freezes/{freeze}/release"), &json!({"out_order_no": "fr-1", "amount": "150.01"}))),
        (422, Some("exceeds_frozen_amount"))
    );
    let (status, _, released) = p.post(&format!("/v1/freezes/{freeze}/release"), &json!({"out_order_no": "fr-2"}));
    assert_eq!(status, 200, "{released}");
    assert_eq!(p.balances(&owner).0, "450.00");

    // A balance payment lands at once.
    let pay = json!({"out_order_no": "pay-3", "payer_account_id": owner, "mode": "balance", "amount": "10.00", "currency": "CNY",
        "payees": [{"account_id": company, "amount": "10.00"}]});
    let (status, _, paid) = p.post("/v1/payments", &pay);
    assert_eq!((status, paid["status"].as_str()), (201, Some("succeeded")), "{paid}");

    // Orders by out_order_no and by filters, newest first, with a cursor.
    let (status, found) = p.get("/v1/orders?out_order_no=pay-1");
    assert_eq!((status, found["order_id"].as_str()), (200, Some(order.as_str())), "{found}");
    assert_eq!(p.get("/v1/orders?out_order_no=nope").0, 404);
    let (status, page) = p.get(&format!("/v1/orders?account_id={owner}&kind=payment&limit=2"));
    assert_eq!(status, 200, "{page}");
    let first_page: Vec<&str> = page["orders"].as_array().unwrap().iter().map(|o| o["out_order_no"].as_str().unwrap()).collect();
    assert_eq!(first_page, ["pay-3", "pay-2"]);
    let cursor = page["next_cursor"].as_str().expect("more").to_string();
    let (_, page) = p.get(&format!("/v1/orders?account_id={owner}&kind=payment&limit=2&cursor={cursor}"));
    let second_page: Vec<&str> = page["orders"].as_array().unwrap().iter().map(|o| o["out_order_no"].as_str().unwrap()).collect();
    assert_eq!((second_page, page["next_cursor"].is_null()), (vec!["pay-1"], true));
    let (_, held_only) = p.get("/v1/orders?status=refunded");
    assert_eq!(held_only["orders"].as_array().unwrap().len(), 0);
    assert_eq!(p.get("/v1/orders?limit=501").0, 400);
    assert_eq!(p.get("/v1/orders?kind=loan").0, 400);
    assert_eq!(p.get("/v1/orders?colour=red").0, 400);

    let (_, report) = server.get("/admin/invariants", Some(token));
    assert_eq!(report["ok"], true, "{report}");
    server.stop();
}

#[test]
fn bad_money_requests_get_their_codes_and_move_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-2";
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
    let token = "money-token-3";
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
        "/v1/orders?out_order_no=p1".to_string(),
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
    let (_, listed) = b.get("/v1/orders");
    assert!(listed["orders"].as_array().unwrap().iter().all(|o| o["account_id"] == b1), "{listed}");
    assert_eq!(a.balances(&a1).0, "89.00");
    assert_eq!(a.wait_order(&order, "held")["status"], "held");
    server.stop();
}

#[test]
fn payment_passwords_are_checked_and_five_wrong_lock_payments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-4";
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client::create(&server, token, "{\"name\": \"Strict\", \"require_payment_password\": true}");
    let a = p.account(&p.member("m-a", "Zhang San"));
    let b = p.account(&p.member("m-b", "Li Si"));
    p.fund(&a, "100.00", "r-1");
    let pay = |number: &str, password: Option<&str>| {
        let mut body = json!({"out_order_no": number, "payer_account_id": a, "mode": "balance", "amount": "1.00", "currency": "CNY", "payees": [{"account_id": b, "amount": "1.00"}]});
        if let Some(password) = password {
            body["payment_password"] = json!(password);
        }
        p.post("/v1/payments", &body)
    };
    assert_eq!(error_of(&pay("p0", Some("123456"))), (422, Some("payment_password_not_set")));
    assert_eq!(error_of(&p.post(&format!("/v1/accounts/{a}/password"), &json!({"password": "12345"}))), (400, Some("invalid_request")));
    let (status, _, set) = p.post(&format!("/v1/accounts/{a}/password"), &json!({"password": "123456"}));
    assert_eq!(status, 200, "{set}");
    assert_eq!(error_of(&pay("p1", None)), (422, Some("invalid_payment_password")));
    assert_eq!(pay("p2", Some("123456")).0, 201);
    for attempt in 0..4 {
        assert_eq!(error_of(&pay(&format!("w{attempt}"), Some("000000"))), (422, Some("invalid_payment_password")));
    }
    assert_eq!(error_of(&pay("w5", Some("000000"))), (422, Some("payment_locked")));
    assert_eq!(error_of(&pay("p3", Some("123456"))), (422, Some("payment_locked")));
    assert_eq!(p.balances(&a).0, "99.00");
    server.stop();
}

#[test]
fn the_simulator_fails_its_share_and_callbacks_must_be_signed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-5";
    let server =
        start_configured(dir.path(), token, &config_with(&[("latency_ms = 200", "latency_ms = 20"), ("failure_per_mille = 0", "failure_per_mille = 1000")]));
    let p = Client::create(&server, token, "{\"name\": \"Unlucky\"}");
    let a = p.account(&p.member("m-a", "Zhang San"));
    let (_, _, order) = p.post("/v1/recharges", &json!({"out_order_no": "r-1", "account_id": a, "amount": "5.00", "currency": "CNY"}));
    p.wait_order(order["order_id"].as_str().unwrap(), "failed");
    assert_eq!(p.balances(&a).0, "0.00");
    // A forged callback is refused.
    let body = json!({"kind": "recharge", "order_id": order["order_id"], "status": "succeeded", "amount": "5.00"}).to_string();
    for header in ["t=1,v1=00", ""] {
        let request = ureq::post(&format!("{}/channels/simulator/callback", server.base)).set("X-Channel-Signature", header);
        assert_eq!(answer(request.send_string(&body), "callback").status(), 401);
    }
    assert_eq!(p.balances(&a).0, "0.00");
    server.stop();
}

#[test]
fn a_pending_recharge_survives_kill_9_and_completes_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-6";
    let slow = start_configured(dir.path(), token, &config_with(&[("latency_ms = 200", "latency_ms = 600000")]));
    let p = Client::create(&slow, token, "{\"name\": \"Patient\"}");
    let a = p.account(&p.member("m-a", "Zhang San"));
    let (status, _, order) = p.post("/v1/recharges", &json!({"out_order_no": "r-1", "account_id": a, "amount": "7.00", "currency": "CNY"}));
    assert_eq!((status, order["status"].as_str()), (201, Some("pending")));
    let (platform, secret) = (p.platform.clone(), p.secret.clone());
    drop(p);
    slow.kill();
    let fast = start_configured(dir.path(), token, &config_with(FAST_BANK));
    assert!(fast.lines.iter().any(|l| l.contains("1 orders waiting")), "{:?}", fast.lines);
    let p = Client { server: &fast, platform, secret };
    p.wait_order(order["order_id"].as_str().unwrap(), "succeeded");
    assert_eq!(p.balances(&a).0, "7.00");
    let replay = p.post("/v1/recharges", &json!({"out_order_no": "r-1", "account_id": a, "amount": "7.00", "currency": "CNY"}));
    assert_eq!((replay.0, replay.1, &replay.2), (201, true, &order), "the acknowledged order replays after the crash");
    fast.stop();
}

#[test]
fn bulk_answers_each_operation_and_bounds_the_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-7";
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

/// Reads the micro-deposit on a card's statement at the simulated bank, as its holder would.
fn micro_deposit(server: &Server, card_no: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, statement) = server.get(&format!("/sim/cards/{card_no}/transactions"), None);
        assert_eq!(status, 200);
        if let Some(line) = statement["transactions"].as_array().unwrap().iter().find(|t| t["remark"] == "card verification deposit") {
            return line["amount"].as_str().unwrap().to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no micro-deposit on {card_no}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn wrong_amount(right: &str) -> String {
    if right == "0.01" {
        "0.02".into()
    } else {
        "0.01".into()
    }
}

#[test]
fn cards_are_checked_verified_by_micro_deposit_and_locked_after_three_wrong_tries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-9";
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client::create(&server, token, "{\"name\": \"Cards\"}");
    let member = p.member("m-a", "Zhang San");
    let a = p.account(&member);
    let bind = |number: &str, card: &str, name: &str, id: &str| {
        p.post(
            &format!("/v1/accounts/{a}/cards"),
            &json!({"out_order_no": number, "card_no": card, "holder_name": name, "id_number": id, "phone": "13800138000"}),
        )
    };
    let cases = [
        (bind("c-0", "4111111111111112", "Zhang San", "11010519491231002X"), 400, "invalid_card_no"),
        (bind("c-0", "4111111111111111", "Li Si", "11010519491231002X"), 422, "identity_mismatch"),
        (bind("c-0", "4111111111111111", "Zhang San", "110105194912310021"), 422, "identity_mismatch"),
    ];
    for (reply, status, code) in &cases {
        assert_eq!(error_of(reply), (*status, Some(*code)), "{}", reply.2);
    }
    let (status, replayed, card) = bind("c-1", "4111111111111111", "Zhang San", "11010519491231002x");
    assert_eq!((status, replayed, card["status"].as_str()), (201, false, Some("pending_verification")), "{card}");
    assert_eq!(bind("c-1", "4111111111111111", "Zhang San", "11010519491231002x"), (201, true, card.clone()));
    let card_id = card["card_id"].as_str().unwrap().to_string();
    let deposit = micro_deposit(&server, "4111111111111111");
    assert!(deposit.starts_with("0."), "{deposit}");
    let verify = |card_id: &str, amount: &str| p.post(&format!("/v1/accounts/{a}/cards/{card_id}/verify"), &json!({"amount": amount}));
    assert_eq!(error_of(&verify(&card_id, &wrong_amount(&deposit))), (422, Some("verification_failed")));
    let (status, _, verified) = verify(&card_id, &deposit);
    assert_eq!((status, verified["status"].as_str()), (200, Some("verified")), "{verified}");

    // A second card, three wrong tries: locked, even for the right amount.
    let (_, _, second) = bind("c-2", "5555555555554444", "Zhang San", "11010519491231002X");
    let second_id = second["card_id"].as_str().unwrap().to_string();
    let right = micro_deposit(&server, "5555555555554444");
    assert_eq!(error_of(&verify(&second_id, &wrong_amount(&right))), (422, Some("verification_failed")));
    assert_eq!(error_of(&verify(&second_id, &wrong_amount(&right))), (422, Some("verification_failed")));
    assert_eq!(error_of(&verify(&second_id, &wrong_amount(&right))), (422, Some("card_locked")));
    assert_eq!(error_of(&verify(&second_id, &right)), (422, Some("card_locked")));

    // Withdrawals go only to verified cards; the fee is charged on top; over 50,000.00 alerts.
    p.fund(&a, "60000.00", "r-1");
    let withdraw = |number: &str, card: &str, amount: &str, arrival: &str| {
        p.post("/v1/withdrawals", &json!({"out_order_no": number, "account_id": a, "card_id": card, "amount": amount, "currency": "CNY", "arrival": arrival}))
    };
    assert_eq!(error_of(&withdraw("w-0", &second_id, "1.00", "realtime")), (422, Some("card_not_verified")));
    assert_eq!(error_of(&withdraw("w-0", &card_id, "60000.00", "realtime")), (422, Some("insufficient_funds")), "60,000 + fee is more than 60,000");
    let (status, _, first) = withdraw("w-1", &card_id, "1000.00", "realtime");
    assert_eq!(
        (status, first["status"].as_str(), first["fee"].as_str(), first["channel"].as_str()),
        (201, Some("processing"), Some("1.00"), Some("sim_unionpay")),
        "{first}"
    );
    // The routing decision comes with the order: every channel, viable or why not.
    let candidates: Vec<(&str, Option<&str>)> =
        first["routing"]["candidates"].as_array().unwrap().iter().map(|c| (c["channel"].as_str().unwrap(), c["rejected_because"].as_str())).collect();
    assert_eq!(first["routing"]["chosen"], "sim_unionpay");
    assert!(candidates.contains(&("sim_same_city", Some("arrival_too_slow"))), "{candidates:?}");
    assert!(candidates.contains(&("sim_hvps", Some("below_order_minimum"))), "{candidates:?}");
    assert!(candidates.contains(&("sim_ibps", None)), "viable but dearer: {candidates:?}");
    let (_, shown) = p.get(&format!("/v1/orders/{}", first["order_id"].as_str().unwrap()));
    assert_eq!(shown["routing"], first["routing"], "kept with the order");
    let (status, _, large) = withdraw("w-2", &card_id, "50000.01", "standard");
    assert_eq!((status, large["fee"].as_str(), large["channel"].as_str()), (201, Some("0.50"), Some("sim_same_city")), "{large}");
    p.wait_order(first["order_id"].as_str().unwrap(), "succeeded");
    p.wait_order(large["order_id"].as_str().unwrap(), "succeeded");
    assert_eq!(p.balances(&a).0, "8998.49");
    let (_, statement) = server.get("/sim/cards/4111111111111111/transactions", None);
    let amounts: Vec<&str> = statement["transactions"].as_array().unwrap().iter().map(|t| t["amount"].as_str().unwrap()).collect();
    assert!(amounts.contains(&"1000.00") && amounts.contains(&"50000.01"), "{statement}");
    let (_, notes) = p.get(&format!("/v1/members/{member}/notifications"));
    let alerts: Vec<&serde_json::Value> = notes["notifications"].as_array().unwrap().iter().filter(|n| n["kind"] == "large_withdrawal_alert").collect();
    assert_eq!(alerts.len(), 1, "{notes}");
    assert_eq!(alerts[0]["order_id"], large["order_id"]);

    // Unbinding: the card takes no more withdrawals.
    let (status, _) = {
        let t = now();
        let path = format!("/v1/accounts/{a}/cards/{card_id}");
        let nonce = fresh_nonce();
        let request = ureq::delete(&format!("{}{path}", server.base))
            .set("X-Platform-Id", &p.platform)
            .set("X-Timestamp", &t.to_string())
            .set("X-Nonce", &nonce)
            .set("X-Signature", &sign(&p.secret, "DELETE", &path, t, &nonce, b""));
        let response = answer(request.call(), "unbind");
        (response.status(), ())
    };
    assert_eq!(status, 200);
    assert_eq!(error_of(&withdraw("w-3", &card_id, "1.00", "realtime")), (404, Some("not_found")));
    let (_, report) = server.get("/admin/invariants", Some(token));
    assert_eq!(report["ok"], true, "{report}");
    server.stop();
}

#[test]
fn a_failed_withdrawal_returns_amount_and_fee() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-10";
    // Recharges need to succeed first: the failure share is turned on after funding, by restarting.
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client::create(&server, token, "{\"name\": \"Payouts\"}");
    let a = p.account(&p.member("m-a", "Zhang San"));
    p.fund(&a, "100.00", "r-1");
    let (_, _, card) = p.post(
        &format!("/v1/accounts/{a}/cards"),
        &json!({"out_order_no": "c-1", "card_no": "4111111111111111", "holder_name": "Zhang San", "id_number": "11010519491231002X", "phone": "13800138000"}),
    );
    let card_id = card["card_id"].as_str().unwrap().to_string();
    let deposit = micro_deposit(&server, "4111111111111111");
    assert_eq!(p.post(&format!("/v1/accounts/{a}/cards/{card_id}/verify"), &json!({"amount": deposit})).0, 200);
    let (platform, secret) = (p.platform.clone(), p.secret.clone());
    drop(p);
    server.stop();
    let failing =
        start_configured(dir.path(), token, &config_with(&[("latency_ms = 200", "latency_ms = 20"), ("failure_per_mille = 0", "failure_per_mille = 1000")]));
    let p = Client { server: &failing, platform, secret };
    let (status, _, order) = p.post(
        "/v1/withdrawals",
        &json!({"out_order_no": "w-1", "account_id": a, "card_id": card_id, "amount": "50.00", "currency": "CNY", "arrival": "realtime"}),
    );
    assert_eq!(status, 201, "{order}");
    assert_eq!(p.balances(&a).0, "49.00", "amount and fee reserved");
    p.wait_order(order["order_id"].as_str().unwrap(), "failed");
    assert_eq!(p.balances(&a).0, "100.00", "amount and fee returned");
    failing.stop();
}

/// The date `days_ahead` days after today in China Standard Time (the default business day).
fn business_date(days_ahead: i64) -> String {
    let days = (now() + 8 * 3600).div_euclid(86_400) + days_ahead;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn settle(server: &Server, token: &str, date: &str) -> (u16, serde_json::Value) {
    let request = ureq::post(&format!("{}/admin/settlements", server.base)).set("Authorization", &format!("Bearer {token}"));
    let response = answer(request.send_string(&json!({"business_date": date}).to_string()), "settle");
    (response.status(), response.into_json().expect("JSON"))
}

#[test]
fn home_decoration_scenario_from_recharge_to_the_companys_withdrawal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-11";
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client::create(&server, token, "{\"name\": \"Home Decor\", \"settlement_cycle_days\": 1, \"auto_confirm_days\": 1}");
    let homeowner = p.account(&p.member("homeowner", "Zhang San"));
    let company_member = {
        let body = json!({"out_order_no": "company", "type": "enterprise", "name": "Acme Decor", "id_number": "91350100M000100Y43", "phone": "13900139000"});
        let (status, _, member) = p.post("/v1/members", &body);
        assert_eq!(status, 201, "{member}");
        member["member_id"].as_str().unwrap().to_string()
    };
    let company = p.account(&company_member);
    let platform_fee = p.account(&p.member("platform", "Home Decor Ltd"));

    // The homeowner recharges and pays the renovation fee into escrow, 5% to the platform.
    p.fund(&homeowner, "100000.00", "r-1");
    let fee = json!({"out_order_no": "renovation", "payer_account_id": homeowner, "mode": "guarantee", "amount": "80000.00", "currency": "CNY",
        "payees": [{"account_id": company, "amount": "76000.00"}], "splits": [{"account_id": platform_fee, "amount": "4000.00"}]});
    let (_, _, held) = p.post("/v1/payments", &fee);
    let order = held["order_id"].as_str().unwrap().to_string();
    // Confirmed in stages as the work is done: design, then materials.
    for (number, amount) in [("stage-design", "16000.00"), ("stage-materials", "30000.00")] {
        let (status, _, stage) =
            p.post(&format!("/v1/payments/{order}/confirm"), &json!({"out_order_no": number, "releases": [{"account_id": company, "amount": amount}]}));
        assert_eq!((status, stage["status"].as_str()), (200, Some("held")), "{stage}");
    }
    assert_eq!(p.balances(&company), ("46000.00".into(), "0.00".into(), "0.00".into(), "46000.00".into()));

    // Settlement for today matures nothing yet (T+1); tomorrow's matures today's income and
    // auto-confirms what is still held (auto_confirm_days = 1). Re-running changes nothing.
    let (status, today) = settle(&server, token, &business_date(0));
    assert_eq!(status, 200, "{today}");
    assert_eq!(p.balances(&company).1, "0.00");
    let (_, first) = settle(&server, token, &business_date(1));
    let row = first["platforms"].as_array().unwrap().iter().find(|r| r["platform_id"] == p.platform.as_str()).unwrap().clone();
    assert_eq!((row["matured_accounts"].as_u64(), row["auto_confirmed_orders"].as_u64()), (Some(2), Some(1)), "{first}");
    assert_eq!(p.balances(&company), ("76000.00".into(), "76000.00".into(), "0.00".into(), "0.00".into()));
    assert_eq!(p.balances(&platform_fee).1, "4000.00");
    // The statements of that run: the operator's, and the company's own (signed, CSV).
    let statement = ureq::get(&format!("{}/admin/settlements/{}/statement.csv", server.base, business_date(1)))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .expect("operator statement")
        .into_string()
        .unwrap();
    let company_line = statement.lines().find(|l| l.contains(&company)).unwrap_or_else(|| panic!("{statement}"));
    assert!(
        company_line.ends_with(&company_line[company_line.rfind(',').unwrap()..]) && company_line.contains(",CNY,") && company_line.contains(",76000.00,"),
        "{company_line}"
    );
    assert_eq!(statement.lines().count(), 3, "a header and two accounts: {statement}");
    let path = format!("/v1/settlements/{}/statement.csv?account_id={company}", business_date(1));
    let t = now();
    let nonce = fresh_nonce();
    let own = ureq::get(&format!("{}{path}", server.base))
        .set("X-Platform-Id", &p.platform)
        .set("X-Timestamp", &t.to_string())
        .set("X-Nonce", &nonce)
        .set("X-Signature", &sign(&p.secret, "GET", &path, t, &nonce, b""))
        .call()
        .expect("merchant statement")
        .into_string()
        .unwrap();
    assert_eq!(own.lines().count(), 2, "{own}");
    assert!(own.contains(&company) && !own.contains(&platform_fee), "{own}");
    let (_, again) = settle(&server, token, &business_date(1));
    let row = again["platforms"].as_array().unwrap().iter().find(|r| r["platform_id"] == p.platform.as_str()).unwrap().clone();
    assert_eq!((row["matured_accounts"].as_u64(), row["auto_confirmed_orders"].as_u64()), (Some(0), Some(0)), "{again}");
    assert_eq!(settle(&server, token, "2026-13-01").0, 400);

    // The company binds and verifies its card, then withdraws what has settled.
    let (_, _, card) = p.post(&format!("/v1/accounts/{company}/cards"), &json!({"out_order_no": "card", "card_no": "6222020200112233446", "holder_name": "Acme Decor", "id_number": "91350100M000100Y43", "phone": "13900139000"}));
    let card_id = card["card_id"].as_str().expect("card bound").to_string();
    let deposit = micro_deposit(&server, "6222020200112233446");
    assert_eq!(p.post(&format!("/v1/accounts/{company}/cards/{card_id}/verify"), &json!({"amount": deposit})).0, 200);
    assert_eq!(
        error_of(&p.post(
            "/v1/withdrawals",
            &json!({"out_order_no": "w-0", "account_id": company, "card_id": card_id, "amount": "76000.00", "currency": "CNY", "arrival": "realtime"})
        )),
        (422, Some("insufficient_funds")),
        "the fee comes on top"
    );
    let (status, _, withdrawal) = p.post(
        "/v1/withdrawals",
        &json!({"out_order_no": "w-1", "account_id": company, "card_id": card_id, "amount": "45975.00", "currency": "CNY", "arrival": "realtime"}),
    );
    // A company's account: UnionPay serves persons only, HVPS starts at 50,000: IBPS it is.
    assert_eq!((status, withdrawal["fee"].as_str(), withdrawal["channel"].as_str()), (201, Some("11.20"), Some("sim_ibps")), "{withdrawal}");
    p.wait_order(withdrawal["order_id"].as_str().unwrap(), "succeeded");
    assert_eq!(p.balances(&company), ("30013.80".into(), "30013.80".into(), "0.00".into(), "0.00".into()));
    let (_, statement) = server.get("/sim/cards/6222020200112233446/transactions", None);
    assert!(statement["transactions"].as_array().unwrap().iter().any(|t| t["amount"] == "45975.00"), "{statement}");
    let (_, report) = server.get("/admin/invariants", Some(token));
    assert_eq!(report["ok"], true, "{report}");
    server.stop();
}

#[test]
fn kill_9_under_http_load_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-12";
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client::create(&server, token, "{\"name\": \"Crash\"}");
    let accounts: Vec<String> = (0..16).map(|i| p.account(&p.member(&format!("m-{i}"), "Zhang San"))).collect();
    for (i, account) in accounts.iter().enumerate() {
        p.fund(account, "1000.00", &format!("r-{i}"));
    }
    let (platform, secret, base) = (p.platform.clone(), p.secret.clone(), server.base.clone());
    drop(p);
    let acknowledged = std::sync::Mutex::new(Vec::<(String, String, String)>::new());
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for thread in 0..8 {
            let (accounts, acknowledged, stop, platform, secret, base) = (&accounts, &acknowledged, &stop, &platform, &secret, &base);
            scope.spawn(move || {
                let mut sent = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    sent += 1;
                    let payer = &accounts[(thread * 7 + sent) % accounts.len()];
                    let payee = &accounts[(thread * 7 + sent + 1) % accounts.len()];
                    let number = format!("k-{thread}-{sent}");
                    let body = json!({"out_order_no": number, "payer_account_id": payer, "mode": "balance", "amount": "0.01", "currency": "CNY",
                        "payees": [{"account_id": payee, "amount": "0.01"}]})
                    .to_string();
                    match signed_post_to(base, "/v1/payments", platform, secret, &fresh_nonce(), &body) {
                        Some((201, _, reply)) => {
                            acknowledged.lock().unwrap().push((number, body, reply["order_id"].as_str().unwrap().to_string()));
                        }
                        Some((status, _, reply)) => panic!("refused: {status} {reply}"),
                        None => return,
                    }
                }
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(1500));
        // SAFETY: plain signal to our own child process.
        unsafe { libc::kill(server.child.id() as i32, libc::SIGKILL) };
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    server.kill();
    let acknowledged = acknowledged.into_inner().unwrap();
    assert!(acknowledged.len() > 100, "only {} orders were acknowledged before the kill", acknowledged.len());

    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client { server: &server, platform, secret };
    for (number, body, order_id) in &acknowledged {
        let (status, order) = p.get(&format!("/v1/orders/{order_id}"));
        assert_eq!((status, order["out_order_no"].as_str(), order["status"].as_str()), (200, Some(number.as_str()), Some("succeeded")), "{order}");
        let (status, replayed, again) = signed_post(&server, "/v1/payments", &p.platform, &p.secret, &fresh_nonce(), body);
        assert_eq!((status, replayed, again["order_id"].as_str()), (201, true, Some(order_id.as_str())), "{again}");
    }
    let (_, report) = server.get("/admin/invariants", Some(token));
    assert_eq!(report["ok"], true, "{report}");
    server.stop();
}

#[test]
fn batch_payments_are_all_or_none_with_one_password_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-13";
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client::create(&server, token, "{\"name\": \"Payroll\", \"require_payment_password\": true}");
    let payer = p.account(&p.member("m-payer", "Zhang San"));
    let workers: Vec<String> = (0..3).map(|i| p.account(&p.member(&format!("m-w{i}"), "Li Si"))).collect();
    p.fund(&payer, "100.00", "r-1");
    assert_eq!(p.post(&format!("/v1/accounts/{payer}/password"), &json!({"password": "246810"})).0, 200);
    let batch = |number: &str, amounts: [&str; 3], password: &str| {
        let orders: Vec<serde_json::Value> = workers
            .iter()
            .zip(amounts)
            .enumerate()
            .map(|(i, (w, a))| json!({"out_order_no": format!("{number}-{i}"), "amount": a, "payees": [{"account_id": w, "amount": a}]}))
            .collect();
        p.post(
            "/v1/batch-payments",
            &json!({"out_order_no": number, "payer_account_id": payer, "mode": "balance", "currency": "CNY", "payment_password": password, "orders": orders}),
        )
    };
    assert_eq!(error_of(&batch("b-1", ["30.00", "30.00", "40.01"], "246810")), (422, Some("insufficient_funds")));
    assert_eq!(error_of(&batch("b-1", ["30.00", "30.00", "0.001"], "246810")), (400, Some("invalid_amount")));
    assert_eq!(error_of(&batch("b-1", ["30.00", "30.00", "40.00"], "000000")), (422, Some("invalid_payment_password")));
    assert_eq!(p.balances(&payer).0, "100.00", "nothing moved");
    let (status, replayed, paid) = batch("b-1", ["30.00", "30.00", "40.00"], "246810");
    assert_eq!((status, replayed, paid["status"].as_str()), (201, false, Some("succeeded")), "{paid}");
    let orders = paid["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 3);
    for (order, worker) in orders.iter().zip(&workers) {
        let (status, shown) = p.get(&format!("/v1/orders/{}", order["order_id"].as_str().unwrap()));
        assert_eq!(
            (status, shown["out_order_no"].as_str(), shown["receivers"][0]["account_id"].as_str()),
            (200, order["out_order_no"].as_str(), Some(worker.as_str())),
            "{shown}"
        );
    }
    assert_eq!(batch("b-1", ["30.00", "30.00", "40.00"], "246810"), (201, true, paid.clone()));
    assert_eq!(p.balances(&payer).0, "0.00");
    assert_eq!(p.balances(&workers[2]).0, "40.00");
    server.stop();
}

#[test]
fn only_empty_accounts_close_and_closed_ones_take_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-14";
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client::create(&server, token, "{\"name\": \"Closing\"}");
    let a = p.account(&p.member("m-a", "Zhang San"));
    let b = p.account(&p.member("m-b", "Li Si"));
    p.fund(&a, "5.00", "r-1");
    assert_eq!(error_of(&p.post(&format!("/v1/accounts/{a}/close"), &json!({"out_order_no": "close-a"}))), (422, Some("account_not_empty")));
    let (status, replayed, closed) = p.post(&format!("/v1/accounts/{b}/close"), &json!({"out_order_no": "close-b"}));
    assert_eq!((status, replayed, closed["status"].as_str()), (200, false, Some("closed")), "{closed}");
    assert_eq!(p.post(&format!("/v1/accounts/{b}/close"), &json!({"out_order_no": "close-b"})).1, true);
    let pay = json!({"out_order_no": "p-1", "payer_account_id": a, "mode": "balance", "amount": "1.00", "currency": "CNY", "payees": [{"account_id": b, "amount": "1.00"}]});
    assert_eq!(error_of(&p.post("/v1/payments", &pay)), (422, Some("account_closed")));
    assert_eq!(
        error_of(&p.post("/v1/recharges", &json!({"out_order_no": "r-2", "account_id": b, "amount": "1.00", "currency": "CNY"}))),
        (422, Some("account_closed"))
    );
    let (_, shown) = p.get(&format!("/v1/accounts/{b}"));
    assert_eq!(shown["status"], "closed");
    assert_eq!(error_of(&p.post("/v1/accounts/acc_77777/close", &json!({"out_order_no": "close-x"}))), (404, Some("not_found")));
    server.stop();
}

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
    let token = "money-token-15";
    let config = config_with(&[("latency_ms = 200", "latency_ms = 20"), ("backoff_ms = 1000", "backoff_ms = 50")]);
    let server = start_configured(dir.path(), token, &config);
    let p = Client::create(&server, token, "{\"name\": \"Hooks\"}");
    let (url, received) = webhook_receiver(2);
    assert_eq!(error_of(&p.post("/v1/webhook", &json!({"url": "ftp://x"}))), (400, Some("invalid_request")));
    assert_eq!(p.post("/v1/webhook", &json!({"url": url})).0, 200);
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

    // Delivered in order despite two refused attempts, each signed with the platform's secret.
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
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(p.secret.as_bytes()).unwrap();
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
    let token = "money-token-16";
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

#[test]
fn garbage_at_every_endpoint_gets_a_4xx_never_a_5xx_and_the_document_lists_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-17";
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

#[test]
fn direct_payments_go_through_the_channel_straight_to_the_payees() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-18";
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client::create(&server, token, "{\"name\": \"Direct\"}");
    let payer = p.account(&p.member("m-payer", "Zhang San"));
    let shop = p.account(&p.member("m-shop", "Li Si"));
    let body = |number: &str, mode: &str| json!({"out_order_no": number, "payer_account_id": payer, "mode": mode, "funding": "channel", "amount": "12.00", "currency": "CNY", "payees": [{"account_id": shop, "amount": "12.00"}]});
    let (status, _, order) = p.post("/v1/payments", &body("d-1", "balance"));
    assert_eq!((status, order["status"].as_str(), order["funding"].as_str()), (201, Some("pending"), Some("channel")), "{order}");
    let shown = p.wait_order(order["order_id"].as_str().unwrap(), "succeeded");
    assert_eq!((shown["funding"].as_str(), shown["channel"].as_str()), (Some("channel"), Some("sim_gateway")), "{shown}");
    assert_eq!((p.balances(&payer).0, p.balances(&shop).0), ("0.00".to_string(), "12.00".to_string()), "the payer's balance is not touched");
    let (_, _, held) = p.post("/v1/payments", &body("d-2", "guarantee"));
    let held_id = held["order_id"].as_str().unwrap().to_string();
    p.wait_order(&held_id, "held");
    let (status, _, confirmed) = p.post(&format!("/v1/payments/{held_id}/confirm"), &json!({"out_order_no": "c-1"}));
    assert_eq!((status, confirmed["status"].as_str()), (200, Some("succeeded")));
    assert_eq!(p.balances(&shop).0, "24.00");
    let mut named = body("d-3", "balance");
    named["channel"] = json!("carrier_pigeon");
    assert_eq!(error_of(&p.post("/v1/payments", &named)), (400, Some("invalid_request")));
    let (_, found) = p.get("/v1/orders?out_order_no=d-1");
    assert_eq!(found["order_id"], order["order_id"]);
    let (_, report) = server.get("/admin/invariants", Some(token));
    assert_eq!(report["ok"], true, "{report}");
    server.stop();
}

#[test]
fn the_operator_blocks_an_account_and_its_payments_answer_account_frozen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-19";
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client::create(&server, token, "{\"name\": \"Blocked\"}");
    let a = p.account(&p.member("m-a", "Zhang San"));
    let b = p.account(&p.member("m-b", "Li Si"));
    p.fund(&a, "5.00", "r-1");
    let set = |account: &str, status: &str, bearer: &str| {
        let request = ureq::post(&format!("{}/admin/accounts/{account}/status", server.base)).set("Authorization", &format!("Bearer {bearer}"));
        let response = answer(request.send_string(&json!({"status": status}).to_string()), "status");
        (response.status(), response.into_json::<serde_json::Value>().unwrap())
    };
    assert_eq!(set(&a, "debit_blocked", "wrong").0, 401);
    assert_eq!(set(&a, "frozen_solid", token).0, 400);
    assert_eq!(set("acc_424242", "debit_blocked", token).0, 404);
    assert_eq!(set(&a, "debit_blocked", token).0, 200);
    let pay = |number: &str| {
        p.post("/v1/payments", &json!({"out_order_no": number, "payer_account_id": a, "mode": "balance", "amount": "1.00", "currency": "CNY", "payees": [{"account_id": b, "amount": "1.00"}]}))
    };
    assert_eq!(error_of(&pay("p-1")), (422, Some("account_frozen")));
    assert_eq!(p.get(&format!("/v1/accounts/{a}")).1["status"], "debit_blocked");
    assert_eq!(set(&a, "normal", token).0, 200);
    assert_eq!(pay("p-2").0, 201, "unblocked, and still its platform's account");
    server.stop();
}

/// Binds and verifies a card for an account, returning its id.
fn verified_card(p: &Client, server: &Server, account: &str, card_no: &str, name: &str, id_number: &str) -> String {
    let (status, _, card) = p.post(
        &format!("/v1/accounts/{account}/cards"),
        &json!({"out_order_no": format!("card-{card_no}"), "card_no": card_no, "holder_name": name, "id_number": id_number, "phone": "13800138000"}),
    );
    assert_eq!(status, 201, "{card}");
    let card_id = card["card_id"].as_str().unwrap().to_string();
    let deposit = micro_deposit(server, card_no);
    assert_eq!(p.post(&format!("/v1/accounts/{account}/cards/{card_id}/verify"), &json!({"amount": deposit})).0, 200);
    card_id
}

#[test]
fn a_failed_channel_falls_back_to_the_next_and_all_failing_returns_the_funds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-20";
    // UnionPay (the cheapest real-time channel for persons) fails everything; IBPS pays.
    let unionpay_fails = ("sim_failure_per_mille = 0\n\n[[channels]]\nid = 3", "sim_failure_per_mille = 1000\n\n[[channels]]\nid = 3");
    let server =
        start_configured(dir.path(), token, &config_with(&[("latency_ms = 200", "latency_ms = 20"), ("latency_ms = 300", "latency_ms = 20"), unionpay_fails]));
    let p = Client::create(&server, token, "{\"name\": \"Fallback\"}");
    let a = p.account(&p.member("m-a", "Zhang San"));
    p.fund(&a, "1000.00", "r-1");
    let card = verified_card(&p, &server, &a, "4111111111111111", "Zhang San", "11010519491231002X");
    let (status, _, order) = p.post(
        "/v1/withdrawals",
        &json!({"out_order_no": "w-1", "account_id": a, "card_id": card, "amount": "100.00", "currency": "CNY", "arrival": "realtime"}),
    );
    assert_eq!((status, order["channel"].as_str(), order["fee"].as_str()), (201, Some("sim_unionpay"), Some("1.00")), "{order}");
    let done = p.wait_order(order["order_id"].as_str().unwrap(), "succeeded");
    assert_eq!((done["channel"].as_str(), done["fee"].as_str()), (Some("sim_ibps"), Some("2.02")), "{done}");
    let fallbacks = done["routing"]["fallbacks"].as_array().expect("a fallback is recorded");
    assert_eq!(
        (fallbacks[0]["from"].as_str(), fallbacks[0]["to"].as_str(), fallbacks[0]["reason"].as_str()),
        (Some("sim_unionpay"), Some("sim_ibps"), Some("failed")),
        "{done}"
    );
    assert_eq!(done["routing"]["chosen"], "sim_ibps");
    assert_eq!(p.balances(&a).0, "897.98", "amount plus the fee of the channel that paid");
    let (status, report) = server.get("/admin/channels", Some(token));
    assert_eq!(status, 200);
    let row = |name: &str| report["channels"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap().clone();
    assert_eq!((row("sim_unionpay")["health"]["recent_failures"].as_u64(), row("sim_unionpay")["used_today"].as_str()), (Some(1), Some("0.00")), "{report}");
    assert_eq!(row("sim_ibps")["used_today"], "100.00");
    assert_eq!(server.get("/admin/channels", None).0, 401);
    let (_, entries) = p.get(&format!("/v1/accounts/{a}/entries?limit=1"));
    assert_eq!(entries["entries"][0]["kind"], "withdrawal_reroute", "{entries}");
    let (_, statement) = server.get("/sim/cards/4111111111111111/transactions", None);
    assert_eq!(statement["transactions"].as_array().unwrap().iter().filter(|t| t["amount"] == "100.00").count(), 1, "paid once: {statement}");
    let (platform, secret) = (p.platform.clone(), p.secret.clone());
    drop(p);
    server.stop();

    // Every channel fails: tried in turn, then the order fails and everything comes back.
    let all_fail =
        config_with(&[("latency_ms = 200", "latency_ms = 20"), ("latency_ms = 300", "latency_ms = 20"), ("failure_per_mille = 0", "failure_per_mille = 1000")]);
    let server = start_configured(dir.path(), token, &all_fail);
    let p = Client { server: &server, platform, secret };
    let (_, _, order) = p.post(
        "/v1/withdrawals",
        &json!({"out_order_no": "w-2", "account_id": a, "card_id": card, "amount": "100.00", "currency": "CNY", "arrival": "realtime"}),
    );
    let failed = p.wait_order(order["order_id"].as_str().unwrap(), "failed");
    let tried: Vec<&str> = failed["routing"]["fallbacks"].as_array().unwrap().iter().map(|f| f["to"].as_str().unwrap()).collect();
    assert_eq!(tried, ["sim_ibps"], "{failed}");
    assert_eq!(p.balances(&a).0, "897.98", "amount and fee returned");
    let (_, report) = server.get("/admin/invariants", Some(token));
    assert_eq!(report["ok"], true, "{report}");
    server.stop();
}

#[test]
fn offline_transfers_land_by_virtual_account_number_or_become_cases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-21";
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client::create(&server, token, "{\"name\": \"Offline\"}");
    let member = p.member("m-a", "Zhang San");
    let (_, _, account) = p.post("/v1/accounts", &json!({"out_order_no": "acct", "member_id": member, "currency": "CNY"}));
    let (a, number) = (account["account_id"].as_str().unwrap().to_string(), account["virtual_account_no"].as_str().unwrap().to_string());
    let mut wrong_digit = number.clone().into_bytes();
    wrong_digit[16] = if wrong_digit[16] == b'9' { b'0' } else { wrong_digit[16] + 1 };
    let wrong_digit = String::from_utf8(wrong_digit).unwrap();
    let post = |lines: serde_json::Value| {
        let request = ureq::post(&format!("{}/admin/offline-transfers", server.base)).set("Authorization", &format!("Bearer {token}"));
        let response = answer(request.send_string(&json!({"lines": lines}).to_string()), "offline");
        (response.status(), response.into_json::<serde_json::Value>().unwrap())
    };
    let lines = json!([
        {"bank_ref": "B-1", "virtual_account_no": number, "amount": "300.00", "currency": "CNY", "payer_name": "Zhang San"},
        {"bank_ref": "B-2", "virtual_account_no": wrong_digit, "amount": "20.00", "currency": "CNY"},
        {"bank_ref": "B-3", "virtual_account_no": "for the sofa", "amount": "5.00", "currency": "CNY"},
        {"bank_ref": "B-4", "virtual_account_no": number, "amount": "1.001", "currency": "CNY"},
    ]);
    let (status, reply) = post(lines.clone());
    assert_eq!(status, 200, "{reply}");
    let statuses: Vec<&str> = reply["results"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["credited", "suspense", "suspense", "refused"], "{reply}");
    assert_eq!(p.balances(&a).0, "300.00");
    let (_, order) = p.get(&format!("/v1/orders/{}", reply["results"][0]["order_id"].as_str().unwrap()));
    assert_eq!((order["kind"].as_str(), order["channel"].as_str()), (Some("recharge"), Some("offline_transfer")), "{order}");
    // The same statement again changes nothing.
    let (_, again) = post(lines);
    assert!(again["results"].as_array().unwrap()[..3].iter().all(|r| r["replayed"] == true), "{again}");
    assert_eq!(p.balances(&a).0, "300.00");
    let (_, cases) = server.get("/admin/cases", Some(token));
    let open: Vec<&str> = cases["cases"].as_array().unwrap().iter().map(|c| c["case_id"].as_str().unwrap()).collect();
    assert_eq!(open, ["case_B-2", "case_B-3"], "{cases}");
    let resolve = |body: serde_json::Value| {
        let request = ureq::post(&format!("{}/admin/cases/case_B-3/resolve", server.base)).set("Authorization", &format!("Bearer {token}"));
        let response = answer(request.send_string(&body.to_string()), "resolve");
        (response.status(), response.into_json::<serde_json::Value>().unwrap())
    };
    assert_eq!(resolve(json!({"resolution": "", "operator": "li"})).0, 400);
    let (status, resolved) = resolve(json!({"resolution": "returned to the payer's bank", "operator": "li.ops"}));
    assert_eq!((status, resolved["status"].as_str(), resolved["resolved_by"].as_str()), (200, Some("resolved"), Some("li.ops")), "{resolved}");
    assert_eq!(resolve(json!({"resolution": "again", "operator": "li"})).0, 409);
    let (_, report) = server.get("/admin/invariants", Some(token));
    assert_eq!(report["ok"], true, "{report}");
    // Everything that arrived (credited or in suspense, each once) is at the bank and in our reserve.
    let (_, reserve) = server.get("/admin/reserve?currency=CNY&bank=simulator", Some(token));
    assert_eq!((reserve["difference"].as_str(), reserve["ok"].as_bool()), (Some("0.00"), Some(true)), "{reserve}");
    server.stop();
}

#[test]
fn reconciliation_matches_carries_declares_and_auto_resolves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-22";
    // Same-city clearing answers only after ten minutes: its payout stays processing here.
    let server =
        start_configured(dir.path(), token, &config_with(&[("latency_ms = 200", "latency_ms = 20"), ("sim_latency_ms = 500", "sim_latency_ms = 600000")]));
    let p = Client::create(&server, token, "{\"name\": \"Recon\"}");
    let a = p.account(&p.member("m-a", "Zhang San"));
    p.fund(&a, "1000.00", "r-1");
    let card = verified_card(&p, &server, &a, "4111111111111111", "Zhang San", "11010519491231002X");
    let withdraw = |number: &str, amount: &str, arrival: &str| {
        let (status, _, order) = p.post(
            "/v1/withdrawals",
            &json!({"out_order_no": number, "account_id": a, "card_id": card, "amount": amount, "currency": "CNY", "arrival": arrival}),
        );
        assert_eq!(status, 201, "{order}");
        order["order_id"].as_str().unwrap().to_string()
    };
    let (w1, w2, w4, w5, w6) = (
        withdraw("w-1", "100.00", "realtime"),
        withdraw("w-2", "50.00", "realtime"),
        withdraw("w-4", "10.00", "realtime"),
        withdraw("w-5", "30.00", "realtime"),
        withdraw("w-6", "40.00", "realtime"),
    );
    let w3 = withdraw("w-3", "20.00", "standard");
    for id in [&w1, &w2, &w4, &w5, &w6] {
        p.wait_order(id, "succeeded");
    }
    let today = business_date(0);
    let statement = ureq::get(&format!("{}/sim/channels/sim_unionpay/statements/{today}", server.base)).call().unwrap().into_string().unwrap();
    assert_eq!(statement.lines().count(), 6, "a header and five payouts: {statement}");
    assert!(
        statement.starts_with("bank_ref,order_id,direction,amount,status,fee\n") && statement.contains(&format!(",{w1},out,100.00,succeeded,1.00")),
        "the bank's tariff: {statement}"
    );
    // The bank's file as it came, with w-2's amount changed, w-5's fee changed, w-6 failed on
    // their side, w-4's line lost and a stranger added: every kind of difference.
    let mut file: Vec<String> = statement
        .lines()
        .filter(|l| !l.contains(&format!(",{w4},")))
        .map(|l| l.replace(",50.00,", ",49.00,"))
        .map(|l| if l.contains(&format!(",{w5},")) { l.replace(",succeeded,1.00", ",succeeded,1.50") } else { l })
        .map(|l| if l.contains(&format!(",{w6},")) { l.replace(",succeeded,1.00", ",failed,0.00") } else { l })
        .collect();
    file.push("SIMFOREIGN1,ord_999999,out,7.00,succeeded".to_string());
    let file = file.join("\n");
    let reconcile = |channel: &str, date: &str, file: &str| {
        let request = ureq::post(&format!("{}/admin/reconciliations", server.base)).set("Authorization", &format!("Bearer {token}"));
        let response = answer(request.send_string(&json!({"channel": channel, "business_date": date, "file": file}).to_string()), "reconcile");
        let status = response.status();
        (status, response.into_json::<serde_json::Value>().unwrap())
    };
    let (status, report) = reconcile("sim_unionpay", &today, &file);
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report["counts"],
        json!({"matched": 1, "amount_mismatch": 1, "fee_mismatch": 1, "status_mismatch": 1, "carried": 1, "missing_theirs": 1}),
        "{report}"
    );
    let all_cases = || server.get("/admin/cases", Some(token)).1["cases"].as_array().unwrap().clone();
    let cases = || all_cases().len();
    assert_eq!(cases(), 4);
    assert!(all_cases().iter().any(|c| c.to_string().contains("status mismatch: ours succeeded, theirs failed")), "{:?}", all_cases());
    assert!(all_cases().iter().any(|c| c.to_string().contains("fee mismatch: ours 1.00, theirs 1.50")), "{:?}", all_cases());
    let (_, again) = reconcile("sim_unionpay", &today, &file);
    assert_eq!(again["counts"], report["counts"], "{again}");
    assert_eq!(cases(), 4, "a re-run opens nothing twice");
    // Two days on, the stranger is declared missing on our side (长款).
    let (_, later) = reconcile("sim_unionpay", &business_date(2), "bank_ref,order_id,direction,amount,status\n");
    assert_eq!(later["counts"]["missing_ours"], 1, "{later}");
    assert_eq!(cases(), 5);
    // Re-running the first day after that: the stranger is not carried again, it stays declared.
    let (_, rerun) = reconcile("sim_unionpay", &today, &file);
    assert_eq!(
        rerun["counts"],
        json!({"matched": 1, "amount_mismatch": 1, "fee_mismatch": 1, "status_mismatch": 1, "missing_ours": 1, "missing_theirs": 1}),
        "{rerun}"
    );
    assert_eq!(cases(), 5);
    let (_, after) = reconcile("sim_unionpay", &business_date(3), "bank_ref,order_id,direction,amount,status\n");
    assert_eq!(after["counts"], json!({}), "nothing carried any more: {after}");
    // Our payout still processing, the bank's verdict in its file: resolved automatically.
    let same_city = format!("bank_ref,order_id,direction,amount,status\nSIMSC1,{w3},out,20.00,succeeded\n");
    let (_, resolved) = reconcile("sim_same_city", &today, &same_city);
    assert_eq!(resolved["counts"], json!({"auto_resolved": 1}), "{resolved}");
    assert_eq!(p.get(&format!("/v1/orders/{w3}")).1["status"], "succeeded");
    assert_eq!(reconcile("sim_nowhere", &today, "").0, 400);
    assert_eq!(reconcile("sim_unionpay", &today, "h\nbroken").0, 400);
    let (_, invariants) = server.get("/admin/invariants", Some(token));
    assert_eq!(invariants["ok"], true, "{invariants}");
    server.stop();

    // The same file from the command line (server stopped): the same classification.
    let path = dir.path().join("statement.csv");
    std::fs::write(&path, &file).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_clearing"))
        .args(["reconcile", "--channel", "sim_unionpay", "--date", &today, "--file"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--config")
        .arg(dir.path().join("test-config.toml"))
        .output()
        .expect("clearing reconcile");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout} {}", String::from_utf8_lossy(&output.stderr));
    assert!(
        stdout.contains("\"matched\":1")
            && stdout.contains("\"amount_mismatch\":1")
            && stdout.contains("\"fee_mismatch\":1")
            && stdout.contains("\"status_mismatch\":1")
            && stdout.contains("\"missing_theirs\":1"),
        "{stdout}"
    );
}

#[test]
fn an_end_to_end_night_leaves_no_unexplained_difference() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-23";
    let server = start_configured(
        dir.path(),
        token,
        &config_with(&[("latency_ms = 200", "latency_ms = 20"), ("latency_ms = 300", "latency_ms = 20"), ("latency_ms = 500", "latency_ms = 20")]),
    );
    let p = Client::create(&server, token, "{\"name\": \"Night\"}");
    let buyers: Vec<String> = (0..3).map(|i| p.account(&p.member(&format!("buyer-{i}"), "Zhang San"))).collect();
    let seller = p.account(&p.member("seller", "Li Si"));
    // A day of orders: recharges, balance and guarantee payments, a confirm, a refund, payouts.
    for (i, buyer) in buyers.iter().enumerate() {
        p.fund(buyer, "500.00", &format!("day-r-{i}"));
        let mode = if i == 0 { "guarantee" } else { "balance" };
        let (status, _, order) = p.post("/v1/payments", &json!({"out_order_no": format!("day-p-{i}"), "payer_account_id": buyer, "mode": mode, "amount": "120.00", "currency": "CNY", "payees": [{"account_id": seller, "amount": "120.00"}]}));
        assert_eq!(status, 201, "{order}");
        if i == 0 {
            p.post(&format!("/v1/payments/{}/confirm", order["order_id"].as_str().unwrap()), &json!({"out_order_no": "day-c-0"}));
        }
        if i == 1 {
            p.post("/v1/refunds", &json!({"out_order_no": "day-rf-1", "payment_order_id": order["order_id"], "amount": "20.00"}));
        }
    }
    let card = verified_card(&p, &server, &buyers[2], "4111111111111111", "Zhang San", "11010519491231002X");
    let mut payouts = Vec::new();
    for (i, arrival) in ["realtime", "standard"].iter().enumerate() {
        let (_, _, order) = p.post(
            "/v1/withdrawals",
            &json!({"out_order_no": format!("day-w-{i}"), "account_id": buyers[2], "card_id": card, "amount": "30.00", "currency": "CNY", "arrival": arrival}),
        );
        payouts.push((order["order_id"].as_str().unwrap().to_string(), order["channel"].as_str().unwrap().to_string()));
    }
    for (id, _) in &payouts {
        p.wait_order(id, "succeeded");
    }
    // The night: settlement of the day, then every channel's statement reconciled.
    let (status, settled) = settle(&server, token, &business_date(1));
    assert_eq!((status, settled["invariants_ok"].as_bool()), (200, Some(true)), "{settled}");
    let today = business_date(0);
    let channels = server.get("/admin/channels", Some(token)).1;
    for channel in channels["channels"].as_array().unwrap() {
        let name = channel["name"].as_str().unwrap();
        let file = ureq::get(&format!("{}/sim/channels/{name}/statements/{today}", server.base)).call().unwrap().into_string().unwrap();
        let request = ureq::post(&format!("{}/admin/reconciliations", server.base)).set("Authorization", &format!("Bearer {token}"));
        let report: serde_json::Value =
            answer(request.send_string(&json!({"channel": name, "business_date": today, "file": file}).to_string()), "reconcile").into_json().unwrap();
        let unexplained: Vec<&String> = report["counts"].as_object().unwrap().keys().filter(|class| *class != "matched").collect();
        assert!(unexplained.is_empty(), "{name}: {report}");
        let lines = file.lines().count() - 1;
        assert_eq!(report["counts"]["matched"].as_u64().unwrap_or(0) as usize, lines, "{name}: every line matched: {report}");
    }
    assert!(server.get("/admin/cases", Some(token)).1["cases"].as_array().unwrap().is_empty());
    // The reserve check: recharged 1,500.00, paid out 60.00, and the channels kept their fees
    // (1.00 + 0.50), which the run booked out of fee income: 1,438.50 at the bank.
    let fees: Vec<&str> = settled["channel_fees"].as_array().unwrap().iter().map(|f| f["fees"].as_str().unwrap()).collect();
    assert_eq!(fees.len(), 2, "{settled}");
    // The card's micro-deposit also left the reserve, out of fee income.
    let deposit = cents(&micro_deposit(&server, "4111111111111111"));
    let money = |c: i64| format!("{}{}.{:02}", if c < 0 { "-" } else { "" }, c.abs() / 100, c.abs() % 100);
    let (status, reserve) = server.get(&format!("/admin/reserve?currency=CNY&bank_balance={}", money(143_850 - deposit)), Some(token));
    assert_eq!(
        (status, reserve["ok"].as_bool(), reserve["reserve"].as_str(), reserve["fees"].as_str()),
        (200, Some(true), Some(money(143_850 - deposit).as_str()), Some(money(-deposit).as_str())),
        "{reserve}"
    );
    let (_, bank) = server.get("/admin/reserve?currency=CNY&bank=simulator", Some(token));
    assert_eq!((bank["difference"].as_str(), bank["ok"].as_bool()), (Some("0.00"), Some(true)), "the bank's own reserve account agrees: {bank}");
    let (_, short) = server.get(&format!("/admin/reserve?currency=CNY&bank_balance={}", money(143_850 - deposit - 1)), Some(token));
    assert_eq!((short["ok"].as_bool(), short["difference"].as_str()), (Some(false), Some("-0.01")), "{short}");
    assert_eq!(server.get("/admin/reserve?currency=XYZ", Some(token)).0, 400);
    assert_eq!(p.balances(&seller), ("340.00".into(), "340.00".into(), "0.00".into(), "0.00".into()), "all income settled after the refund");
    let (_, report) = server.get("/admin/invariants", Some(token));
    assert_eq!(report["ok"], true, "{report}");
    server.stop();
}

#[test]
fn collections_from_a_verified_card_and_payouts_to_an_outside_card() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-24";
    let server = start_configured(dir.path(), token, &config_with(&[("latency_ms = 200", "latency_ms = 20"), ("latency_ms = 500", "latency_ms = 20")]));
    let p = Client::create(&server, token, "{\"name\": \"Agency\"}");
    let member = p.account(&p.member("m-a", "Zhang San"));
    let platform_account = p.account(&p.member("m-platform", "Agency Ltd"));
    let card = verified_card(&p, &server, &member, "4111111111111111", "Zhang San", "11010519491231002X");
    // 代收: money collected from the member's card into their account.
    let (status, _, collected) =
        p.post("/v1/collections", &json!({"out_order_no": "col-1", "account_id": member, "card_id": card, "amount": "80.00", "currency": "CNY"}));
    assert_eq!((status, collected["status"].as_str(), collected["collection"].as_bool()), (201, Some("pending"), Some(true)), "{collected}");
    p.wait_order(collected["order_id"].as_str().unwrap(), "succeeded");
    assert_eq!(p.balances(&member).0, "80.00");
    let (_, statement) = server.get("/sim/cards/4111111111111111/transactions", None);
    assert!(statement["transactions"].as_array().unwrap().iter().any(|t| t["amount"] == "-80.00"), "{statement}");
    assert_eq!(
        error_of(
            &p.post("/v1/collections", &json!({"out_order_no": "col-2", "account_id": member, "card_id": "card_99", "amount": "1.00", "currency": "CNY"}))
        ),
        (404, Some("not_found"))
    );
    // 代付: from the platform's account to a card nobody bound.
    p.fund(&platform_account, "100.00", "r-platform");
    let payout = |number: &str, card_no: &str| {
        p.post("/v1/payouts", &json!({"out_order_no": number, "account_id": platform_account, "card_no": card_no, "holder_name": "Wang Wu", "amount": "40.00", "currency": "CNY", "arrival": "standard"}))
    };
    assert_eq!(error_of(&payout("po-0", "4111111111111112")), (400, Some("invalid_card_no")));
    let (status, _, paid) = payout("po-1", "5555555555554444");
    assert_eq!((status, paid["channel"].as_str(), paid["fee"].as_str()), (201, Some("sim_same_city"), Some("0.50")), "{paid}");
    assert_eq!(payout("po-1", "5555555555554444").1, true, "a replay");
    assert_eq!(error_of(&payout("po-1", "4111111111111111")), (409, Some("idempotency_conflict")), "the same number to another card");
    p.wait_order(paid["order_id"].as_str().unwrap(), "succeeded");
    assert_eq!(p.balances(&platform_account).0, "59.50");
    let (_, outside) = server.get("/sim/cards/5555555555554444/transactions", None);
    assert!(outside["transactions"].as_array().unwrap().iter().any(|t| t["amount"] == "40.00"), "{outside}");
    server.stop();
}

fn admin_request(server: &Server, method: &str, path: &str, token: &str, body: Option<&serde_json::Value>) -> (u16, serde_json::Value) {
    let request = ureq::request(method, &format!("{}{path}", server.base)).set("Authorization", &format!("Bearer {token}"));
    let response = answer(
        match body {
            Some(body) => request.send_string(&body.to_string()),
            None => request.call(),
        },
        path,
    );
    let status = response.status();
    (status, response.into_json().unwrap_or(serde_json::Value::Null))
}

fn pay_balance(p: &Client, number: &str, payer: &str, payee: &str, amount: &str) {
    let body = json!({"out_order_no": number, "payer_account_id": payer, "mode": "balance", "amount": amount, "currency": "CNY", "payees": [{"account_id": payee, "amount": amount}]});
    let (status, _, order) = p.post("/v1/payments", &body);
    assert_eq!((status, order["status"].as_str()), (201, Some("succeeded")), "{order}");
}

fn statement(server: &Server, token: &str, date: &str) -> Vec<std::collections::HashMap<String, String>> {
    let text = ureq::get(&format!("{}/admin/settlements/{date}/statement.csv", server.base))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .expect("statement")
        .into_string()
        .unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(str::to_string).collect();
    lines.map(|line| header.iter().cloned().zip(line.split(',').map(str::to_string)).collect()).collect()
}

fn cents(text: &str) -> i64 {
    let (whole, fraction) = text.split_once('.').unwrap();
    whole.parse::<i64>().unwrap() * 100 + fraction.parse::<i64>().unwrap()
}

#[test]
fn settlement_charges_tiered_commissions_over_several_days_and_platforms_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-rules";
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    // Platform A: commission by the merchant's income amount over the month, 7:3 to the platform
    // and an agent. Platform B: by the number of income credits, one receiver, a service fee.
    let a = Client::create(&server, token, "{\"name\": \"Mall A\", \"settlement_cycle_days\": 0}");
    let b = Client::create(&server, token, "{\"name\": \"Mall B\", \"settlement_cycle_days\": 0}");
    let (a_payer, m1, m2) =
        (a.account(&a.member("a-payer", "Payer A")), a.account(&a.member("m1", "Merchant One")), a.account(&a.member("m2", "Merchant Two")));
    let (a_platform, agent) = (a.account(&a.member("a-plat", "Mall A Ltd")), a.account(&a.member("agent", "Agent Li")));
    let (b_payer, n1, b_platform) =
        (b.account(&b.member("b-payer", "Payer B")), b.account(&b.member("n1", "Merchant N")), b.account(&b.member("b-plat", "Mall B Ltd")));
    a.fund(&a_payer, "100000.00", "fund-a");
    b.fund(&b_payer, "100000.00", "fund-b");

    // Bad rules are refused and set nothing.
    let rule_path = |client: &Client| format!("/admin/platforms/{}/settlement-rule", client.platform);
    let good_a = json!({"currency": "CNY", "basis": "amount", "period": "month",
        "tiers": [{"from": "0.00", "rate": "0.006"}, {"from": "1000.00", "rate": "0.004"}, {"from": "5000.00", "rate": "0.002"}],
        "receivers": [{"account_id": a_platform, "share": 7}, {"account_id": agent, "share": 3}]});
    let mut bad_cases = Vec::new();
    for (field, value) in [
        ("tiers", json!([{"from": "10.00", "rate": "0.006"}])),
        ("tiers", json!([{"from": "0.00", "rate": "1.5"}])),
        ("receivers", json!([{"account_id": b_platform, "share": 1}])),
        ("receivers", json!([])),
        ("currency", json!("XXX")),
    ] {
        let mut body = good_a.clone();
        body[field] = value;
        bad_cases.push(body);
    }
    for body in &bad_cases {
        let (status, error) = admin_request(&server, "PUT", &rule_path(&a), token, Some(body));
        assert_eq!((status, error["error"]["code"].as_str()), (400, Some("invalid_request")), "{body} -> {error}");
    }
    assert_eq!(admin_request(&server, "GET", &rule_path(&a), token, None).0, 404);
    let (status, shown) = admin_request(&server, "PUT", &rule_path(&a), token, Some(&good_a));
    assert_eq!((status, shown["tiers"][1]["from"].as_str(), shown["tiers"][1]["rate"].as_str()), (200, Some("1000.00"), Some("0.004")), "{shown}");
    let good_b = json!({"currency": "CNY", "basis": "count", "period": "month", "tiers": [{"from": "0", "rate": "0.01"}, {"from": "3", "rate": "0.005"}],
        "receivers": [{"account_id": b_platform, "share": 1}], "service_fee_rate": "0.001"});
    assert_eq!(admin_request(&server, "PUT", &rule_path(&b), token, Some(&good_b)).0, 200);
    assert_eq!(admin_request(&server, "GET", &rule_path(&b), token, None).1["service_fee_rate"], "0.001");
    // Each platform sees its own terms.
    let (_, own) = b.get("/v1/platform");
    assert_eq!((own["settlement_rule"]["basis"].as_str(), own["settlement_rule"]["tiers"][1]["from"].as_str()), (Some("count"), Some("3")), "{own}");

    // Three business days of one month, then the first day of the next (settlement cycle 0:
    // each run matures everything credited so far).
    let days = ["2099-01-10", "2099-01-11", "2099-01-12", "2099-02-01"];
    pay_balance(&a, "a1", &a_payer, &m1, "333.33");
    pay_balance(&a, "a2", &a_payer, &m2, "10.01");
    pay_balance(&b, "b1", &b_payer, &n1, "100.00");
    pay_balance(&b, "b2", &b_payer, &n1, "100.00");
    let (status, first) = settle(&server, token, days[0]);
    assert_eq!((status, first["invariants_ok"].as_bool()), (200, Some(true)), "{first}");
    // m1: 0.6 % of 333.33 = 1.99998 -> 2.00 (1.40 / 0.60); m2: 0.06006 -> 0.06 (0.04 / 0.02,
    // the leftover cent to the larger remainder); n1: two credits -> 1 % of 200.00 = 2.00 and
    // the service fee 0.20.
    assert_eq!(a.balances(&m1).1, "331.33");
    assert_eq!(a.balances(&m2).1, "9.95");
    assert_eq!(b.balances(&n1).1, "197.80");
    let a_row = first["platforms"].as_array().unwrap().iter().find(|r| r["platform_id"] == a.platform.as_str()).unwrap().clone();
    assert_eq!(a_row["totals"], json!([{"currency": "CNY", "matured": "343.34", "commission": "2.06", "service_fee": "0.00", "net": "341.28"}]), "{first}");
    // Re-running the date changes nothing and reports the same totals.
    let (_, again) = settle(&server, token, days[0]);
    let totals = |summary: &serde_json::Value| summary["platforms"].as_array().unwrap().iter().map(|r| r["totals"].clone()).collect::<Vec<_>>();
    assert_eq!(totals(&again), totals(&first));
    assert!(again["platforms"].as_array().unwrap().iter().all(|r| r["matured_accounts"] == 0), "{again}");
    assert_eq!(a.balances(&m1).1, "331.33");

    pay_balance(&a, "a3", &a_payer, &m1, "1000.00");
    pay_balance(&b, "b3", &b_payer, &n1, "100.00");
    pay_balance(&b, "b4", &b_payer, &n1, "100.00");
    settle(&server, token, days[1]);
    // m1's month reaches 1,333.33: 0.4 % of 1,000.00 = 4.00; n1's fourth credit: 0.5 % = 1.00.
    assert_eq!(a.balances(&m1).1, "1327.33");
    assert_eq!(b.balances(&n1).1, "396.60");
    pay_balance(&a, "a4", &a_payer, &m1, "5000.00");
    settle(&server, token, days[2]);
    assert_eq!(a.balances(&m1).1, "6317.33", "0.2 % of 5,000.00 = 10.00 once the month passed 5,000.00");
    pay_balance(&a, "a5", &a_payer, &m1, "100.00");
    settle(&server, token, days[3]);
    assert_eq!(a.balances(&m1).1, "6416.73", "a new month starts at the first tier: 0.60");

    // Receivers got every cent: 11.66 + 5.00 = what A's merchants paid (16.60 + 0.06); B's
    // receiver 3.00; the operator's service fee 0.40 is not theirs.
    assert_eq!(a.balances(&a_platform).1, "11.66");
    assert_eq!(a.balances(&agent).1, "5.00");
    assert_eq!(b.balances(&b_platform).1, "3.00");
    // The statements list each income line and each receiver's commission, and add up.
    for day in days {
        let lines = statement(&server, token, day);
        let charged: i64 = lines.iter().filter(|l| l["line"] == "income").map(|l| cents(&l["commission"])).sum();
        let received: i64 = lines.iter().filter(|l| l["line"] == "commission").map(|l| cents(&l["commission"])).sum();
        assert_eq!(charged, received, "{day}: {lines:?}");
        for line in lines.iter().filter(|l| l["line"] == "income") {
            assert_eq!(cents(&line["matured_amount"]) - cents(&line["commission"]) - cents(&line["service_fee"]), cents(&line["net_amount"]), "{line:?}");
        }
    }
    let lines = statement(&server, token, days[1]);
    let n1_line = lines.iter().find(|l| l["account_id"] == n1).unwrap();
    assert_eq!(
        (n1_line["count"].as_str(), n1_line["period_measure"].as_str(), n1_line["rate"].as_str(), n1_line["service_fee"].as_str()),
        ("2", "4", "0.005", "0.20")
    );
    let receiver_line = lines.iter().find(|l| l["line"] == "commission" && l["account_id"] == b_platform).unwrap();
    assert_eq!((receiver_line["count"].as_str(), receiver_line["commission"].as_str()), ("1", "1.00"), "{receiver_line:?}");
    let (_, invariants) = server.get("/admin/invariants", Some(token));
    assert_eq!(invariants["ok"], true, "{invariants}");
    // Removing the rule: later income only matures.
    assert_eq!(admin_request(&server, "DELETE", &rule_path(&a), token, None).0, 204);
    pay_balance(&a, "a6", &a_payer, &m1, "100.00");
    settle(&server, token, "2099-02-02");
    assert_eq!(a.balances(&m1).1, "6516.73");
    server.stop();
}

#[test]
fn the_operator_changes_channels_at_run_time_and_the_change_outlives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-channels";
    let config = config_with(&[("latency_ms = 200", "latency_ms = 20"), ("latency_ms = 300", "latency_ms = 20")]);
    let server = start_configured(dir.path(), token, &config);
    let p = Client::create(&server, token, "{\"name\": \"Channels\"}");
    let a = p.account(&p.member("m-a", "Zhang San"));
    p.fund(&a, "1000.00", "r-1");
    let card = verified_card(&p, &server, &a, "4111111111111111", "Zhang San", "11010519491231002X");
    let withdraw = |number: &str| {
        let (status, _, order) = p.post(
            "/v1/withdrawals",
            &json!({"out_order_no": number, "account_id": a, "card_id": card, "amount": "100.00", "currency": "CNY", "arrival": "realtime"}),
        );
        assert_eq!(status, 201, "{order}");
        order
    };
    assert_eq!(withdraw("w-1")["channel"], "sim_unionpay");
    // The operator takes UnionPay out and changes IBPS's tariff: the next payout goes by IBPS
    // at the new fee, and the routing says why UnionPay was not taken.
    let (status, row) = admin_request(&server, "PATCH", "/admin/channels/sim_unionpay", token, Some(&json!({"enabled": false})));
    assert_eq!((status, row["enabled"].as_bool()), (200, Some(false)), "{row}");
    let (status, row) = admin_request(&server, "PATCH", "/admin/channels/sim_ibps", token, Some(&json!({"fee_fixed": "3.00", "fee_min": "3.00"})));
    assert_eq!((status, row["fee"]["fixed"].as_str()), (200, Some("3.00")), "{row}");
    let second = withdraw("w-2");
    assert_eq!((second["channel"].as_str(), second["fee"].as_str()), (Some("sim_ibps"), Some("3.02")), "{second}");
    let unionpay = second["routing"]["candidates"].as_array().unwrap().iter().find(|c| c["channel"] == "sim_unionpay").unwrap().clone();
    assert_eq!(unionpay["rejected_because"], "disabled");
    // Bad changes are refused and change nothing; unknown channels are not found.
    for body in [
        json!({"window": "25:00-26:00"}),
        json!({"fee_fixed": "-1"}),
        json!({"order_min": "99999999999.00"}),
        json!({"colour": "red"}),
        json!({"sim_failure_per_mille": 1001}),
    ] {
        let (status, error) = admin_request(&server, "PATCH", "/admin/channels/sim_ibps", token, Some(&body));
        assert_eq!((status, error["error"]["code"].as_str()), (400, Some("invalid_request")), "{body}: {error}");
    }
    assert_eq!(admin_request(&server, "PATCH", "/admin/channels/sim_nowhere", token, Some(&json!({"enabled": false}))).0, 404);
    assert_eq!(admin_request(&server, "PATCH", "/admin/channels/sim_ibps", "wrong-token", Some(&json!({"enabled": false}))).0, 401);
    // The bank simulator's statement shows the tariff in force when it paid.
    p.wait_order(second["order_id"].as_str().unwrap(), "succeeded");
    let statement = ureq::get(&format!("{}/sim/channels/sim_ibps/statements/{}", server.base, business_date(0))).call().unwrap().into_string().unwrap();
    assert!(statement.contains(&format!(",{},out,100.00,succeeded,3.02", second["order_id"].as_str().unwrap())), "{statement}");
    let (platform, secret) = (p.platform.clone(), p.secret.clone());
    drop(p);
    server.stop();

    // After a restart with the same configuration file, the changes still hold.
    let server = start_configured(dir.path(), token, &config);
    let (_, report) = server.get("/admin/channels", Some(token));
    let row = |name: &str| report["channels"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap().clone();
    assert_eq!((row("sim_unionpay")["enabled"].as_bool(), row("sim_ibps")["fee"]["fixed"].as_str()), (Some(false), Some("3.00")), "{report}");
    let p = Client { server: &server, platform, secret };
    let (_, _, third) = p.post(
        "/v1/withdrawals",
        &json!({"out_order_no": "w-3", "account_id": a, "card_id": card, "amount": "100.00", "currency": "CNY", "arrival": "realtime"}),
    );
    assert_eq!(third["channel"], "sim_ibps", "{third}");
    // The operator adds a channel, cheaper than the others: the next payout goes through it and
    // the simulated bank pays it.
    let express = json!({"id": 9, "name": "sim_express", "kind": "unionpay_realtime", "direction": "out", "currency": "CNY",
        "fee_fixed": "0.50", "fee_rate_bps": 0, "fee_min": "0.50", "fee_max": "0.50", "order_min": "0.01", "order_max": "1000.00",
        "daily_cap": "100000.00", "window": "00:00-24:00", "business_days_only": false, "arrival": "realtime", "eta_minutes": 1,
        "serves": ["personal"], "sim_latency_ms": 20, "sim_failure_per_mille": 0});
    let (status, row) = admin_request(&server, "POST", "/admin/channels", token, Some(&express));
    assert_eq!((status, row["fee"]["fixed"].as_str()), (201, Some("0.50")), "{row}");
    for (field, value) in [
        ("id", json!(2)),
        ("name", json!("sim_ibps")),
        ("id", json!(0)),
        ("currency", json!("XYZ")),
        ("window", json!("9-17")),
        ("direction", json!("sideways")),
    ] {
        let mut body = express.clone();
        body[field] = value;
        if field != "name" {
            body["name"] = json!("sim_other");
        }
        let (status, error) = admin_request(&server, "POST", "/admin/channels", token, Some(&body));
        assert_eq!((status, error["error"]["code"].as_str()), (400, Some("invalid_request")), "{field}: {error}");
    }
    let (_, _, fourth) = p.post(
        "/v1/withdrawals",
        &json!({"out_order_no": "w-4", "account_id": a, "card_id": card, "amount": "100.00", "currency": "CNY", "arrival": "realtime"}),
    );
    assert_eq!((fourth["channel"].as_str(), fourth["fee"].as_str()), (Some("sim_express"), Some("0.50")), "{fourth}");
    p.wait_order(fourth["order_id"].as_str().unwrap(), "succeeded");
    let (platform, secret) = (p.platform.clone(), p.secret.clone());
    drop(p);
    server.stop();
    let server = start_configured(dir.path(), token, &config);
    let (_, report) = server.get("/admin/channels", Some(token));
    assert!(report["channels"].as_array().unwrap().iter().any(|c| c["name"] == "sim_express" && c["id"] == 9), "added channels outlive a restart: {report}");
    let p = Client { server: &server, platform, secret };
    let (_, order) = p.get(&format!("/v1/orders/{}", fourth["order_id"].as_str().unwrap()));
    assert_eq!(order["channel"], "sim_express", "{order}");
    server.stop();
}

#[test]
fn a_payout_the_bank_never_received_falls_back_after_the_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-timeout";
    // UnionPay loses every payout on the way (no verdict ever comes) and times out after 300 ms.
    let lost = (
        "timeout_ms = 600000\nsim_drop_per_mille = 0\nsim_latency_ms = 200\nsim_failure_per_mille = 0\n\n[[channels]]\nid = 3",
        "timeout_ms = 300\nsim_drop_per_mille = 1000\nsim_latency_ms = 20\nsim_failure_per_mille = 0\n\n[[channels]]\nid = 3",
    );
    let config = config_with(&[lost, ("latency_ms = 200", "latency_ms = 20"), ("latency_ms = 300", "latency_ms = 20")]);
    assert!(config.contains("sim_drop_per_mille = 1000"), "the replacement applies");
    let server = start_configured(dir.path(), token, &config);
    let p = Client::create(&server, token, "{\"name\": \"Timeout\"}");
    let a = p.account(&p.member("m-a", "Zhang San"));
    p.fund(&a, "1000.00", "r-1");
    let card = verified_card(&p, &server, &a, "4111111111111111", "Zhang San", "11010519491231002X");
    let (status, _, order) = p.post(
        "/v1/withdrawals",
        &json!({"out_order_no": "w-1", "account_id": a, "card_id": card, "amount": "100.00", "currency": "CNY", "arrival": "realtime"}),
    );
    assert_eq!((status, order["channel"].as_str()), (201, Some("sim_unionpay")), "{order}");
    // No callback comes; the watchdog asks UnionPay, which never had it: IBPS pays instead.
    let done = p.wait_order(order["order_id"].as_str().unwrap(), "succeeded");
    assert_eq!((done["channel"].as_str(), done["fee"].as_str()), (Some("sim_ibps"), Some("2.02")), "{done}");
    let fallbacks = done["routing"]["fallbacks"].as_array().expect("a fallback is recorded");
    assert_eq!(
        (fallbacks[0]["from"].as_str(), fallbacks[0]["to"].as_str(), fallbacks[0]["reason"].as_str()),
        (Some("sim_unionpay"), Some("sim_ibps"), Some("timeout")),
        "{done}"
    );
    let (_, statement) = server.get("/sim/cards/4111111111111111/transactions", None);
    assert_eq!(statement["transactions"].as_array().unwrap().iter().filter(|t| t["amount"] == "100.00").count(), 1, "paid once: {statement}");
    // UnionPay's statement has no line for it (the bank never had it); IBPS's has.
    let today = business_date(0);
    let unionpay = ureq::get(&format!("{}/sim/channels/sim_unionpay/statements/{today}", server.base)).call().unwrap().into_string().unwrap();
    assert_eq!(unionpay.lines().count(), 1, "{unionpay}");
    let (_, report) = server.get("/admin/channels", Some(token));
    let row = report["channels"].as_array().unwrap().iter().find(|c| c["name"] == "sim_unionpay").unwrap().clone();
    assert_eq!((row["health"]["recent_failures"].as_u64(), row["timeout_ms"].as_u64()), (Some(1), Some(300)), "{row}");
    assert_eq!(p.balances(&a).0, "897.98");
    let (_, invariants) = server.get("/admin/invariants", Some(token));
    assert_eq!(invariants["ok"], true, "{invariants}");
    server.stop();
}

#[test]
fn the_settlement_run_books_the_channels_fees_and_the_reserve_meets_the_bank() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-channel-fees";
    let server = start_configured(dir.path(), token, &config_with(&[("latency_ms = 200", "latency_ms = 20")]));
    let p = Client::create(&server, token, "{\"name\": \"Fees\"}");
    let a = p.account(&p.member("m-a", "Zhang San"));
    p.fund(&a, "1000.00", "r-1");
    let card = verified_card(&p, &server, &a, "4111111111111111", "Zhang San", "11010519491231002X");
    let (_, _, order) = p.post(
        "/v1/withdrawals",
        &json!({"out_order_no": "w-1", "account_id": a, "card_id": card, "amount": "100.00", "currency": "CNY", "arrival": "realtime"}),
    );
    assert_eq!((order["channel"].as_str(), order["fee"].as_str()), (Some("sim_unionpay"), Some("1.00")), "{order}");
    p.wait_order(order["order_id"].as_str().unwrap(), "succeeded");
    // A recharge by WeChat scan: its tariff is 0.6 %, borne by the operator (the member gets 100.00).
    let (status, _, scan) =
        p.post("/v1/recharges", &json!({"out_order_no": "r-scan", "account_id": a, "amount": "100.00", "currency": "CNY", "channel": "sim_wechat_scan"}));
    assert_eq!((status, scan["channel"].as_str()), (201, Some("sim_wechat_scan")), "{scan}");
    p.wait_order(scan["order_id"].as_str().unwrap(), "succeeded");
    let wechat = ureq::get(&format!("{}/sim/channels/sim_wechat_scan/statements/{}", server.base, business_date(0))).call().unwrap().into_string().unwrap();
    assert!(wechat.contains(",in,100.00,succeeded,0.60"), "{wechat}");
    // At the bank: 1,100.00 in less WeChat's 0.60, 100.00 out, and UnionPay kept its 1.00 fee
    // (the statements say so): 998.40. Our books say so only once the run has booked the fees.
    let today = business_date(0);
    let statement = ureq::get(&format!("{}/sim/channels/sim_unionpay/statements/{today}", server.base)).call().unwrap().into_string().unwrap();
    assert!(statement.contains(",out,100.00,succeeded,1.00"), "{statement}");
    // The micro-deposit that verified the card left the reserve too, at the operator's cost.
    let deposit = cents(&micro_deposit(&server, "4111111111111111"));
    let at_bank = 99_840 - deposit;
    let money = |c: i64| format!("{}{}.{:02}", if c < 0 { "-" } else { "" }, c.abs() / 100, c.abs() % 100);
    let reserve = || server.get(&format!("/admin/reserve?currency=CNY&bank_balance={}", money(at_bank)), Some(token)).1;
    let before = reserve();
    assert_eq!(
        (before["difference"].as_str(), before["fees"].as_str(), before["ok"].as_bool()),
        (Some("-1.60"), Some(money(100 - deposit).as_str()), Some(false)),
        "{before}"
    );
    let (status, run) = settle(&server, token, &today);
    assert_eq!(status, 200, "{run}");
    let fees = run["channel_fees"].as_array().unwrap();
    let unionpay: Vec<_> = fees.iter().filter(|f| f["channel"] == "sim_unionpay" && f["business_date"] == today.as_str()).collect();
    assert_eq!(unionpay.len(), 1, "{run}");
    assert_eq!(
        (unionpay[0]["orders"].as_u64(), unionpay[0]["fees"].as_str(), unionpay[0]["booked_now"].as_str()),
        (Some(1), Some("1.00"), Some("1.00")),
        "{run}"
    );
    let after = reserve();
    assert_eq!(
        (after["difference"].as_str(), after["fees"].as_str(), after["ok"].as_bool()),
        (Some("0.00"), Some(money(-60 - deposit).as_str()), Some(true)),
        "{after}"
    );
    let scan_fee = run["channel_fees"].as_array().unwrap().iter().find(|f| f["channel"] == "sim_wechat_scan").cloned().unwrap_or_default();
    assert_eq!((scan_fee["orders"].as_u64(), scan_fee["fees"].as_str()), (Some(1), Some("0.60")), "{run}");
    // The bank simulator's own reserve account says the same.
    let (_, bank) = server.get("/admin/reserve?currency=CNY&bank=simulator", Some(token));
    assert_eq!((bank["bank_balance"].as_str(), bank["ok"].as_bool()), (Some(money(at_bank).as_str()), Some(true)), "{bank}");
    assert_eq!(server.get("/admin/reserve?currency=CNY&bank=elsewhere", Some(token)).0, 400);
    assert_eq!(server.get("/admin/reserve?currency=CNY&bank=simulator&bank_balance=1.00", Some(token)).0, 400);
    let (_, entries) = p.get(&format!("/v1/accounts/{a}/entries"));
    assert!(entries["entries"].as_array().unwrap().iter().all(|e| e["kind"] != "verification_deposit"), "the operator's cost, not the member's: {entries}");
    // Re-running the date books nothing again.
    let (_, again) = settle(&server, token, &today);
    let unionpay =
        again["channel_fees"].as_array().unwrap().iter().find(|f| f["channel"] == "sim_unionpay" && f["business_date"] == today.as_str()).unwrap().clone();
    assert_eq!(unionpay["booked_now"], "0.00", "{again}");
    assert_eq!(reserve()["ok"], true);
    let (_, invariants) = server.get("/admin/invariants", Some(token));
    assert_eq!(invariants["ok"], true, "{invariants}");
    server.stop();
}

/// Half-up rate of an amount in cents (`ppm` parts per million), as the settlement rule rounds.
fn half_up(cents: i64, ppm: i64) -> i64 {
    (cents * ppm + 500_000) / 1_000_000
}

#[test]
fn a_settlement_run_killed_at_any_moment_and_run_again_charges_each_income_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-settle-crash";
    let config = config_with(FAST_BANK);
    let mut server = start_configured(dir.path(), token, &config);
    let (platform, secret, payer, receivers, merchants) = {
        let p = Client::create(&server, token, "{\"name\": \"Crash night\", \"settlement_cycle_days\": 0}");
        let payer = p.account(&p.member("payer", "Payer"));
        p.fund(&payer, "1000000.00", "fund");
        let receivers = [p.account(&p.member("r-plat", "Platform Ltd")), p.account(&p.member("r-agent", "Agent"))];
        let merchants: Vec<String> = (0..40).map(|i| p.account(&p.member(&format!("m{i}"), "Merchant"))).collect();
        let rule = json!({"currency": "CNY", "basis": "amount", "period": "month", "tiers": [{"from": "0.00", "rate": "0.01"}],
            "receivers": [{"account_id": receivers[0], "share": 3}, {"account_id": receivers[1], "share": 1}], "service_fee_rate": "0.002"});
        assert_eq!(admin_request(&server, "PUT", &format!("/admin/platforms/{}/settlement-rule", p.platform), token, Some(&rule)).0, 200);
        (p.platform.clone(), p.secret.clone(), payer, receivers, merchants)
    };
    let mut expected_net = vec![0i64; merchants.len()];
    let mut expected_parts = [0i64; 2];
    for round in 0..4i64 {
        let p = Client { server: &server, platform: platform.clone(), secret: secret.clone() };
        for (i, merchant) in merchants.iter().enumerate() {
            let cents = 1 + (i as i64 * 7_919 + round * 104_729) % 99_991;
            pay_balance(&p, &format!("r{round}-m{i}"), &payer, merchant, &format!("{}.{:02}", cents / 100, cents % 100));
            let commission = half_up(cents, 10_000);
            let fee = half_up(cents, 2_000).min(cents - commission);
            expected_net[i] += cents - commission - fee;
            // 3:1, the leftover cent to the larger remainder (ties to the platform).
            let (a, b) = (commission * 3 / 4, commission / 4);
            let extra = commission - a - b;
            let (ra, rb) = ((commission * 3) % 4, commission % 4);
            expected_parts[0] += a + if extra > 0 && ra >= rb { 1 } else { 0 };
            expected_parts[1] += b + if extra > 0 && ra < rb { 1 } else { 0 };
        }
        drop(p);
        // The run starts; the server is killed at a random moment around it.
        let date = format!("2099-03-1{round}");
        let url = format!("{}/admin/settlements", server.base);
        let (run_date, run_token) = (date.clone(), token.to_string());
        let run = std::thread::spawn(move || {
            ureq::post(&url).set("Authorization", &format!("Bearer {run_token}")).send_string(&json!({"business_date": run_date}).to_string()).is_ok()
        });
        std::thread::sleep(std::time::Duration::from_micros(rand::random::<u64>() % 4_000));
        server.kill();
        let _ = run.join();
        server = start_configured(dir.path(), token, &config);
        let (status, summary) = settle(&server, token, &date);
        assert_eq!((status, summary["invariants_ok"].as_bool()), (200, Some(true)), "{summary}");
        let lines = statement(&server, token, &date);
        assert_eq!(
            lines.iter().filter(|l| l["line"] == "income" && merchants.contains(&l["account_id"])).count(),
            merchants.len(),
            "each income matured once: {lines:?}"
        );
    }
    let p = Client { server: &server, platform, secret };
    for (i, merchant) in merchants.iter().enumerate() {
        assert_eq!(cents(&p.balances(merchant).1), expected_net[i], "merchant {i}");
    }
    assert_eq!([cents(&p.balances(&receivers[0]).1), cents(&p.balances(&receivers[1]).1)], expected_parts);
    let (_, invariants) = server.get("/admin/invariants", Some(token));
    assert_eq!(invariants["ok"], true, "{invariants}");
    let (_, reserve) = server.get("/admin/reserve?currency=CNY&bank=simulator", Some(token));
    assert_eq!(reserve["ok"], true, "{reserve}");
    server.stop();
}

#[test]
fn a_micro_deposit_the_bank_never_paid_is_asked_again_at_start_and_booked_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-deposit";
    // The bank is away when the card is bound (the deposit is booked, the bank never asked):
    // what a crash between the two would leave.
    let away = config_with(&[("enabled = true", "enabled = false")]);
    let server = start_configured(dir.path(), token, &away);
    let p = Client::create(&server, token, "{\"name\": \"Deposits\"}");
    let a = p.account(&p.member("m-a", "Zhang San"));
    let (status, _, card) = p.post(&format!("/v1/accounts/{a}/cards"), &json!({"out_order_no": "card-1", "card_no": "4111111111111111", "holder_name": "Zhang San", "id_number": "11010519491231002X", "phone": "13800138000"}));
    assert_eq!(status, 201, "{card}");
    let (_, statement) = server.get("/sim/cards/4111111111111111/transactions", None);
    assert!(statement["transactions"].as_array().unwrap().is_empty(), "{statement}");
    let (platform, secret) = (p.platform.clone(), p.secret.clone());
    drop(p);
    server.stop();
    // Back with the bank: the deposit is asked for again, booked once, and the card verifies.
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    assert!(server.lines.iter().any(|l| l.contains("1 card verification deposits were asked of the bank again")), "{:?}", server.lines);
    let p = Client { server: &server, platform, secret };
    let deposit = micro_deposit(&server, "4111111111111111");
    let card_id = card["card_id"].as_str().unwrap();
    let (status, _, verified) = p.post(&format!("/v1/accounts/{a}/cards/{card_id}/verify"), &json!({"amount": deposit}));
    assert_eq!((status, verified["status"].as_str()), (200, Some("verified")), "{verified}");
    let (_, reserve) = server.get("/admin/reserve?currency=CNY&bank=simulator", Some(token));
    assert_eq!((reserve["ok"].as_bool(), reserve["fees"].as_str()), (Some(true), Some(format!("-{deposit}").as_str())), "booked once: {reserve}");
    server.stop();
    // A third start asks nothing again.
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    assert!(!server.lines.iter().any(|l| l.contains("verification deposits were asked")), "{:?}", server.lines);
    let (_, reserve) = server.get("/admin/reserve?currency=CNY&bank=simulator", Some(token));
    assert_eq!(reserve["ok"], true, "{reserve}");
    server.stop();
}
