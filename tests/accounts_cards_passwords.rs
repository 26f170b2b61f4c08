//! End-to-end tests of what guards an account: payment passwords (five wrong lock payments),
//! cards (identity check, micro-deposit verification, three wrong tries lock, the deposit asked
//! again after a restart), closing accounts, and the operator blocking an account.

mod support;

use serde_json::json;
use support::money::*;
use support::*;

#[test]
fn payment_passwords_are_checked_and_five_wrong_lock_payments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-4-0123456789abcdef0123456789abcdef";
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
    // Regression (helper 110): a retry of the accepted payment answers its original response,
    // locked or not, whatever password it carries (a 422 for a payment that moved money would
    // have the platform charge again), and counts no try.
    let first = pay("p2", Some("123456"));
    assert_eq!((first.0, first.1), (201, true), "{}", first.2);
    for password in [Some("123456"), Some("000000"), None] {
        let again = pay("p2", password);
        assert_eq!((again.0, again.1, &again.2["order_id"]), (201, true, &first.2["order_id"]), "{password:?}: {}", again.2);
    }
    // Another body under the number is still a conflict, and a new payment still locked.
    let mut other = json!({"out_order_no": "p2", "payer_account_id": a, "mode": "balance", "amount": "2.00", "currency": "CNY", "payees": [{"account_id": b, "amount": "2.00"}], "payment_password": "123456"});
    assert_eq!(error_of(&p.post("/v1/payments", &other)), (409, Some("idempotency_conflict")));
    other["out_order_no"] = json!("p4");
    assert_eq!(error_of(&p.post("/v1/payments", &other)), (422, Some("payment_locked")));
    assert_eq!(p.balances(&a).0, "99.00");
    server.stop();
}

/// A payment the ledger refused (`insufficient_funds`, kept with its number) repeated after the
/// payer changed the password is answered its kept refusal, whatever password it carries, and
/// counts no try: it was answered `invalid_payment_password` and counted (helper 122#2), so a
/// platform's retries could lock its member out over a payment that moved nothing.
#[test]
fn a_refused_payments_repeat_is_its_kept_refusal_whatever_the_password_says_now() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-4k-0123456789abcdef0123456789abcdef";
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client::create(&server, token, "{\"name\": \"Strict\", \"require_payment_password\": true}");
    let a = p.account(&p.member("m-a", "Zhang San"));
    let b = p.account(&p.member("m-b", "Li Si"));
    p.fund(&a, "5.00", "r-1");
    assert_eq!(p.post(&format!("/v1/accounts/{a}/password"), &json!({"password": "123456"})).0, 200);
    let pay = |number: &str, amount: &str, password: &str| {
        let body = json!({"out_order_no": number, "payer_account_id": a, "mode": "balance", "amount": amount, "currency": "CNY", "payees": [{"account_id": b, "amount": amount}], "payment_password": password});
        p.post("/v1/payments", &body)
    };
    let first = pay("k1", "10.00", "123456");
    assert_eq!((error_of(&first), first.1), ((422, Some("insufficient_funds")), false), "{}", first.2);
    assert_eq!(p.post(&format!("/v1/accounts/{a}/password"), &json!({"password": "654321"})).0, 200);
    for _ in 0..6 {
        let again = pay("k1", "10.00", "123456");
        assert_eq!((error_of(&again), again.1), ((422, Some("insufficient_funds")), true), "{}", again.2);
        assert_eq!(again.2, first.2, "the same body");
    }
    assert_eq!(error_of(&pay("k1", "9.00", "654321")), (409, Some("idempotency_conflict")));
    // No try was counted: the payer pays with the new password.
    assert_eq!(pay("k2", "1.00", "654321").0, 201);
    assert_eq!(p.balances(&a).0, "4.00");
    server.stop();
}

/// A platform that requires payment passwords names another platform's account as the payer
/// with wrong passwords, one payment, a batch and a bulk request at a time: each is refused as
/// any unknown account is (no hint whether it has a password), and the account is not locked.
#[test]
fn another_platforms_account_is_neither_locked_nor_probed_through_payment_passwords() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-4-0123456789abcdef0123456789abcdef";
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let hostile = Client::create(&server, token, "{\"name\": \"Hostile\", \"require_payment_password\": true}");
    let victim = Client::create(&server, token, "{\"name\": \"Victim\", \"require_payment_password\": true}");
    let own = hostile.account(&hostile.member("m-h", "Zhang San"));
    let (locked_out, other) = (victim.account(&victim.member("m-v", "Li Si")), victim.account(&victim.member("m-w", "Wang Wu")));
    victim.fund(&locked_out, "10.00", "r-1");
    assert_eq!(victim.post(&format!("/v1/accounts/{locked_out}/password"), &json!({"password": "654321"})).0, 200);
    let payment = |number: &str, payer: &str| {
        json!({"out_order_no": number, "payer_account_id": payer, "mode": "balance", "amount": "1.00", "currency": "CNY",
            "payees": [{"account_id": own, "amount": "1.00"}], "payment_password": "000000"})
    };
    // The answer for an account that does not exist at all: the same for the other platform's.
    let unknown_answer = hostile.post("/v1/payments", &payment("u-1", "acc_999999999"));
    let unknown = error_of(&unknown_answer);
    assert_ne!(unknown.1, Some("invalid_payment_password"));
    for attempt in 0..6 {
        assert_eq!(error_of(&hostile.post("/v1/payments", &payment(&format!("h-{attempt}"), &locked_out))), unknown, "attempt {attempt}");
    }
    let orders = json!([{"out_order_no": "hb-1", "amount": "1.00", "payees": [{"account_id": own, "amount": "1.00"}]}]);
    for attempt in 0..6 {
        let batch = json!({"out_order_no": format!("hb-{attempt}"), "payer_account_id": locked_out, "mode": "balance", "currency": "CNY", "payment_password": "000000", "orders": orders});
        let (status, _, reply) = hostile.post("/v1/batch-payments", &batch);
        assert_ne!(reply["error"]["code"].as_str(), Some("invalid_payment_password"), "{status} {reply}");
        assert!(status >= 400, "{reply}");
    }
    let operations: Vec<serde_json::Value> = (0..6).map(|i| json!({"op": "payment", "body": payment(&format!("hk-{i}"), &locked_out)})).collect();
    let (status, _, reply) = hostile.post("/v1/bulk", &json!({"operations": operations}));
    assert_eq!(status, 200, "{reply}");
    for result in reply["results"].as_array().unwrap() {
        assert_eq!((result["status"].as_u64(), result["body"]["error"]["code"].as_str()), (Some(unknown.0 as u64), unknown.1), "{result}");
    }
    // Not one try was counted: the owner pays with its password, and a wrong one has 4 left.
    let pay = |number: &str, password: &str| {
        let body = json!({"out_order_no": number, "payer_account_id": locked_out, "mode": "balance", "amount": "1.00", "currency": "CNY",
            "payees": [{"account_id": other, "amount": "1.00"}], "payment_password": password});
        victim.post("/v1/payments", &body)
    };
    assert_eq!(error_of(&pay("v-0", "000000")), (422, Some("invalid_payment_password")));
    let (status, _, paid) = pay("v-1", "654321");
    assert_eq!(status, 201, "{paid}");
    assert_eq!(victim.balances(&locked_out).0, "9.00");
    assert_eq!(hostile.balances(&own).0, "0.00");
    server.stop();
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
    let token = "money-token-9-0123456789abcdef0123456789abcdef";
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
    // A replay of a pending bind makes sure its deposit was booked and sent, but never pays it
    // twice (the engine answers the deposit's number as a replay).
    assert_eq!(bind("c-1", "4111111111111111", "Zhang San", "11010519491231002x"), (201, true, card.clone()));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (_, statement) = server.sim_get("/sim/cards/4111111111111111/transactions");
    let deposits = statement["transactions"].as_array().unwrap().iter().filter(|t| t["remark"] == "card verification deposit").count();
    assert_eq!(deposits, 1, "{statement}");
    let verify = |card_id: &str, amount: &str| p.post(&format!("/v1/accounts/{a}/cards/{card_id}/verify"), &json!({"amount": amount}));
    assert_eq!(error_of(&verify(&card_id, &wrong_amount(&deposit))), (422, Some("verification_failed")));
    let (status, _, verified) = verify(&card_id, &deposit);
    assert_eq!((status, verified["status"].as_str()), (200, Some("verified")), "{verified}");
    // Verified again with the amount: the card as it is; bad input is still refused as such.
    assert_eq!(verify(&card_id, &deposit).0, 200);
    for bad in ["abc", "-1.00", "1e9", "0.001"] {
        assert_eq!(error_of(&verify(&card_id, bad)), (400, Some("invalid_amount")), "{bad} for a verified card");
    }

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
    let (_, statement) = server.sim_get("/sim/cards/4111111111111111/transactions");
    let amounts: Vec<&str> = statement["transactions"].as_array().unwrap().iter().map(|t| t["amount"].as_str().unwrap()).collect();
    assert!(amounts.contains(&"1000.00") && amounts.contains(&"50000.01"), "{statement}");
    let (_, notes) = p.get(&format!("/v1/members/{member}/notifications"));
    let alerts: Vec<&serde_json::Value> = notes["notifications"].as_array().unwrap().iter().filter(|n| n["kind"] == "large_withdrawal_alert").collect();
    assert_eq!(alerts.len(), 1, "{notes}");
    assert_eq!(alerts[0]["order_id"], large["order_id"]);
    // Two more: the member's notifications page newest first, and a page's cursor goes on.
    p.fund(&a, "100001.00", "r-2");
    let (_, _, third) = withdraw("w-3", &card_id, "50000.02", "standard");
    let (_, _, fourth) = withdraw("w-4", &card_id, "50000.03", "standard");
    let orders_of = |page: &serde_json::Value| page["notifications"].as_array().unwrap().iter().map(|n| n["order_id"].clone()).collect::<Vec<_>>();
    let (status, first_page) = p.get(&format!("/v1/members/{member}/notifications?limit=2"));
    assert_eq!((status, orders_of(&first_page)), (200, vec![fourth["order_id"].clone(), third["order_id"].clone()]), "{first_page}");
    let cursor = first_page["next_cursor"].as_str().expect("a cursor: one more is older").to_string();
    let (status, last_page) = p.get(&format!("/v1/members/{member}/notifications?limit=2&cursor={cursor}"));
    assert_eq!((status, orders_of(&last_page), &last_page["next_cursor"]), (200, vec![large["order_id"].clone()], &serde_json::Value::Null), "{last_page}");
    for bad in ["limit=0", "limit=501", "cursor=abc", "cursor=0", "cursor=", "page=2"] {
        let (status, refused) = p.get(&format!("/v1/members/{member}/notifications?{bad}"));
        assert_eq!((status, refused["error"]["code"].as_str()), (400, Some("invalid_request")), "{bad}: {refused}");
    }

    // A withdrawal refused before the unbind (its number noted for the card, no order made).
    assert_eq!(error_of(&withdraw("w-6", &card_id, "500000.00", "realtime")), (422, Some("insufficient_funds")));
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
    assert_eq!(error_of(&withdraw("w-5", &card_id, "1.00", "realtime")), (404, Some("not_found")));
    // A retry of a withdrawal accepted before the unbind is answered as its order is (since
    // session 60; it was 404, which a platform could take for "not done" and pay out again
    // under another number), and another body under its number is still a conflict.
    let (status, replayed, again) = withdraw("w-1", &card_id, "1000.00", "realtime");
    assert_eq!((status, replayed, &again["order_id"]), (201, true, &first["order_id"]), "{again}");
    assert_eq!(error_of(&withdraw("w-1", &card_id, "999.00", "realtime")), (409, Some("idempotency_conflict")));
    // The refused one's retry (its note marked refused, no order behind it) is not let past
    // the card's check: it would pay the unbound card now that the account could afford it.
    // (A note a stop or an engine error left without its order is held back by the engine's
    // record, `recharges::order_held`; no test here reaches that window.)
    p.fund(&a, "500000.00", "r-3");
    assert_eq!(error_of(&withdraw("w-6", &card_id, "500000.00", "realtime")), (404, Some("not_found")));
    let (_, report) = server.get("/admin/invariants", Some(token));
    assert_eq!(report["ok"], true, "{report}");
    server.stop();
}

#[test]
fn only_empty_accounts_close_and_closed_ones_take_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-14-0123456789abcdef0123456789abcdef";
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client::create(&server, token, "{\"name\": \"Closing\"}");
    let a = p.account(&p.member("m-a", "Zhang San"));
    let b = p.account(&p.member("m-b", "Li Si"));
    p.fund(&a, "5.00", "r-1");
    assert_eq!(error_of(&p.post(&format!("/v1/accounts/{a}/close"), &json!({"out_order_no": "close-a"}))), (422, Some("account_not_empty")));
    let (status, replayed, closed) = p.post(&format!("/v1/accounts/{b}/close"), &json!({"out_order_no": "close-b"}));
    assert_eq!((status, replayed, closed["status"].as_str()), (200, false, Some("closed")), "{closed}");
    assert!(p.post(&format!("/v1/accounts/{b}/close"), &json!({"out_order_no": "close-b"})).1);
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

#[test]
fn the_operator_blocks_an_account_and_its_payments_answer_account_frozen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-19-0123456789abcdef0123456789abcdef";
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

#[test]
fn a_micro_deposit_the_bank_never_paid_is_asked_again_at_start_and_booked_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-deposit-0123456789abcdef0123456789abcdef";
    // The bank is away when the card is bound (the deposit is booked, the bank never asked):
    // what a crash between the two would leave.
    let away = config_with(&[("enabled = true", "enabled = false")]);
    let server = start_configured(dir.path(), token, &away);
    let p = Client::create(&server, token, "{\"name\": \"Deposits\"}");
    let a = p.account(&p.member("m-a", "Zhang San"));
    let (status, _, card) = p.post(&format!("/v1/accounts/{a}/cards"), &json!({"out_order_no": "card-1", "card_no": "4111111111111111", "holder_name": "Zhang San", "id_number": "11010519491231002X", "phone": "13800138000"}));
    assert_eq!(status, 201, "{card}");
    let (_, statement) = server.sim_get("/sim/cards/4111111111111111/transactions");
    assert!(statement["transactions"].as_array().unwrap().is_empty(), "{statement}");
    let (platform, secret) = (p.platform.clone(), p.secret.clone());
    drop(p);
    server.stop();
    // Back with the bank: the deposit is asked for again, booked once, and the card verifies.
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    assert!(server.lines.iter().any(|l| l.contains("1 card verification deposits were asked of the bank again")), "{:?}", server.lines);
    let (p_platform, p_secret) = (platform.clone(), secret.clone());
    let p = Client { server: &server, platform, secret };
    let deposit = micro_deposit(&server, "4111111111111111");
    let card_id = card["card_id"].as_str().unwrap();
    let (status, _, verified) = p.post(&format!("/v1/accounts/{a}/cards/{card_id}/verify"), &json!({"amount": deposit}));
    assert_eq!((status, verified["status"].as_str()), (200, Some("verified")), "{verified}");
    let (_, reserve) = server.get("/admin/reserve?currency=CNY&bank=simulator", Some(token));
    assert_eq!((reserve["ok"].as_bool(), reserve["fees"].as_str()), (Some(true), Some(format!("-{deposit}").as_str())), "booked once: {reserve}");
    // A second card whose deposit the bank pays and the member never verifies.
    let (status, _, second) = p.post(&format!("/v1/accounts/{a}/cards"), &json!({"out_order_no": "card-2", "card_no": "5555555555554444", "holder_name": "Zhang San", "id_number": "11010519491231002X", "phone": "13800138000"}));
    assert_eq!(status, 201, "{second}");
    let second_deposit = micro_deposit(&server, "5555555555554444");
    drop(p);
    server.stop();
    // A third start asks nothing again, and no longer keeps the paid card among those waiting
    // for their deposit (later starts do not read it); the card still verifies.
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    assert!(!server.lines.iter().any(|l| l.contains("verification deposits were asked")), "{:?}", server.lines);
    let (_, reserve) = server.get("/admin/reserve?currency=CNY&bank=simulator", Some(token));
    assert_eq!(reserve["ok"], true, "{reserve}");
    server.stop();
    {
        let store = storage_rocks::RocksStore::open(dir.path()).expect("the server's database");
        let mut waiting = 0;
        storage::Store::scan(&store, b"cp/", b"cp0", &mut |_, _| {
            waiting += 1;
            true
        })
        .unwrap();
        assert_eq!(waiting, 0, "no card is waiting for a deposit");
    }
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client { server: &server, platform: p_platform.clone(), secret: p_secret.clone() };
    let second_id = second["card_id"].as_str().unwrap();
    let (status, _, verified) = p.post(&format!("/v1/accounts/{a}/cards/{second_id}/verify"), &json!({"amount": second_deposit}));
    assert_eq!((status, verified["status"].as_str()), (200, Some("verified")), "{verified}");
    drop(p);
    server.stop();
    // The first card's number bound again while the bank is away: the deposit line of the
    // first bind is not this bind's, so the next start asks the bank for this one.
    let server = start_configured(dir.path(), token, &away);
    let p = Client { server: &server, platform: p_platform.clone(), secret: p_secret.clone() };
    let (status, _, third) = p.post(&format!("/v1/accounts/{a}/cards"), &json!({"out_order_no": "card-3", "card_no": "4111111111111111", "holder_name": "Zhang San", "id_number": "11010519491231002X", "phone": "13800138000"}));
    assert_eq!(status, 201, "{third}");
    drop(p);
    server.stop();
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    assert!(server.lines.iter().any(|l| l.contains("1 card verification deposits were asked of the bank again")), "{:?}", server.lines);
    let third_id = third["card_id"].as_str().unwrap();
    let reference = format!("card-{}", third_id.trim_start_matches("card_"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let third_deposit = loop {
        let (_, statement) = server.sim_get("/sim/cards/4111111111111111/transactions");
        if let Some(line) = statement["transactions"].as_array().unwrap().iter().find(|t| t["reference"] == reference.as_str()) {
            break line["amount"].as_str().unwrap().to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no deposit for {reference}: {statement}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let p = Client { server: &server, platform: p_platform, secret: p_secret };
    let (status, _, verified) = p.post(&format!("/v1/accounts/{a}/cards/{third_id}/verify"), &json!({"amount": third_deposit}));
    assert_eq!((status, verified["status"].as_str()), (200, Some("verified")), "{verified}");
    drop(p);
    server.stop();
}

#[test]
fn concurrent_verification_attempts_are_counted_one_by_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "cards-race-token-0123456789abcdef0123456789abcdef";
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client::create(&server, token, "{\"name\": \"Brute force\"}");
    let a = p.account(&p.member("m-a", "Zhang San"));
    let body =
        json!({"out_order_no": "c-1", "card_no": "4111111111111111", "holder_name": "Zhang San", "id_number": "11010519491231002X", "phone": "13800138000"});
    let (status, _, card) = p.post(&format!("/v1/accounts/{a}/cards"), &body);
    assert_eq!(status, 201, "{card}");
    let card_id = card["card_id"].as_str().unwrap().to_string();
    let deposit = micro_deposit(&server, "4111111111111111");
    // Every amount from 0.01 to 0.99 at once, the right one among them, as an attacker would.
    let amounts: Vec<String> = (1..=99).map(|cents| format!("0.{cents:02}")).collect();
    assert!(amounts.contains(&deposit), "{deposit}");
    let path = format!("/v1/accounts/{a}/cards/{card_id}/verify");
    let codes: Vec<(u16, Option<String>)> = std::thread::scope(|scope| {
        let calls: Vec<_> = amounts
            .iter()
            .map(|amount| {
                let (p, path) = (&p, &path);
                scope.spawn(move || {
                    let (status, _, body) = p.post(path, &json!({"amount": amount}));
                    (status, body["error"]["code"].as_str().map(str::to_string))
                })
            })
            .collect();
        calls.into_iter().map(|call| call.join().expect("call")).collect()
    });
    let count = |code: Option<&str>| codes.iter().filter(|(_, c)| c.as_deref() == code).count();
    let (failed, locked, verified) = (count(Some("verification_failed")), count(Some("card_locked")), count(None));
    assert_eq!(failed + locked + verified, 99, "only these answers: {codes:?}");
    assert!(failed <= 2, "at most two wrong amounts answered before the third locks the card: {failed} did");
    let (_, cards) = p.get(&format!("/v1/accounts/{a}/cards"));
    let status = cards["cards"][0]["status"].as_str().unwrap().to_string();
    if verified == 0 {
        // The right amount came after the third wrong one: the card is locked for good.
        assert_eq!((status.as_str(), locked), ("locked", 97), "{codes:?}");
    } else {
        // The right amount was among the first three compared; later calls see a verified card.
        assert_eq!((status.as_str(), locked, failed + verified), ("verified", 0, 99), "{codes:?}");
    }
    server.stop();
}

#[test]
fn an_account_binds_a_bounded_number_of_cards_per_day() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "cards-binds-token-0123456789abcdef0123456789abcdef";
    let server = start_configured(dir.path(), token, &config_with(&[FAST_BANK[0], ("binds_per_account_per_day = 5", "binds_per_account_per_day = 2")]));
    let p = Client::create(&server, token, "{\"name\": \"Rebinding\"}");
    let (a, b) = (p.account(&p.member("m-a", "Zhang San")), p.account(&p.member("m-b", "Zhang San")));
    let numbers = |number: &str| match number {
        "c-1" => "4111111111111111",
        "c-2" => "5555555555554444",
        "c-3" => "6011111111111117",
        _ => "378282246310005",
    };
    let bind_body = |number: &str| json!({"out_order_no": number, "card_no": numbers(number), "holder_name": "Zhang San", "id_number": "11010519491231002X", "phone": "13800138000"});
    let bind = |account: &str, number: &str| p.post(&format!("/v1/accounts/{account}/cards"), &bind_body(number));
    // The first card is locked by three wrong amounts; a bind of another card is a bind like
    // any other (binding its number again is refused: see the next test).
    let (status, _, first) = bind(&a, "c-1");
    assert_eq!(status, 201, "{first}");
    let first_id = first["card_id"].as_str().unwrap();
    for _ in 0..3 {
        p.post(&format!("/v1/accounts/{a}/cards/{first_id}/verify"), &json!({"amount": "1.00"}));
    }
    assert_eq!(bind(&a, "c-2").0, 201);
    // The third bind of the day: refused before any micro-deposit, with when to come back.
    let path = format!("/v1/accounts/{a}/cards");
    let (t, nonce, body) = (now(), fresh_nonce(), bind_body("c-3").to_string());
    let response = answer(
        ureq::post(&format!("{}{path}", server.base))
            .set("X-Platform-Id", &p.platform)
            .set("X-Timestamp", &t.to_string())
            .set("X-Nonce", &nonce)
            .set("X-Signature", &sign(&p.secret, "POST", &path, t, &nonce, body.as_bytes()))
            .set("Content-Type", "application/json")
            .send_string(&body),
        "third bind",
    );
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.header("Retry-After").expect("Retry-After").parse().expect("seconds");
    assert!((1..=86_400).contains(&retry_after), "{retry_after}");
    assert_eq!(response.into_json::<serde_json::Value>().unwrap()["error"]["code"], "card_bind_limit_reached");
    // A replay of a bind is no new bind; another account has its own count.
    assert!(bind(&a, "c-1").1, "a replay");
    assert_eq!(bind(&b, "c-4").0, 201);
    let (_, cards) = p.get(&format!("/v1/accounts/{a}/cards"));
    assert_eq!(cards["cards"].as_array().unwrap().len(), 2, "{cards}");
    server.stop();
}

/// A card's micro-deposit is one of 99 amounts: three wrong guesses a bind, bound again on
/// account after account (a platform opens any number for one identity), found any card's
/// amount in about 33 binds, and a verified card can be debited by a collection (helper 102,
/// session 63). Wrong amounts now count by card number on the platform, whichever bind they
/// were given for: three within 30 days lock the number (its pending binds too) and refuse
/// its binds until the window ends; a number is bound at most three times a day on a
/// platform. Another platform's binds of the number are its own.
#[test]
fn wrong_amounts_lock_a_card_number_across_its_binds_and_accounts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "cards-number-token-0123456789abcdef0123456789abcdef";
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client::create(&server, token, "{\"name\": \"Guesser\"}");
    let accounts: Vec<String> = (0..5).map(|k| p.account(&p.member(&format!("m-{k}"), "Zhang San"))).collect();
    let bind = |p: &Client, account: &str, number: &str| {
        p.post(&format!("/v1/accounts/{account}/cards"), &json!({"out_order_no": number, "card_no": "4111111111111111", "holder_name": "Zhang San", "id_number": "11010519491231002X", "phone": "13800138000"}))
    };
    let verify = |account: &str, card: &str, amount: &str| p.post(&format!("/v1/accounts/{account}/cards/{card}/verify"), &json!({"amount": amount}));
    let mut cards = Vec::new();
    for (k, account) in accounts.iter().take(3).enumerate() {
        let (status, _, card) = bind(&p, account, &format!("g-{k}"));
        assert_eq!(status, 201, "{card}");
        cards.push(card["card_id"].as_str().unwrap().to_string());
    }
    let (status, _, refused) = bind(&p, &accounts[3], "g-3");
    assert_eq!((status, refused["error"]["code"].as_str()), (429, Some("card_bind_limit_reached")), "a fourth bind of the number today: {refused}");
    // One wrong amount on each bind (1.00 is never a deposit): the third locks the number.
    for (k, card) in cards.iter().enumerate() {
        let (status, _, answer) = verify(&accounts[k], card, "1.00");
        let expected = if k < 2 { "verification_failed" } else { "card_locked" };
        assert_eq!((status, answer["error"]["code"].as_str()), (422, Some(expected)), "wrong amount {k}: {answer}");
    }
    // The first bind's own amount is not compared any more: every amount is refused.
    for cents in 1..=99 {
        let (status, _, answer) = verify(&accounts[0], &cards[0], &format!("0.{cents:02}"));
        assert_eq!((status, answer["error"]["code"].as_str()), (422, Some("card_locked")), "0.{cents:02}: {answer}");
    }
    let (_, listed) = p.get(&format!("/v1/accounts/{}/cards", accounts[0]));
    assert_eq!(listed["cards"][0]["status"], "locked", "{listed}");
    // A bind of the locked number on this platform is refused as locked (checked before the
    // day's count), with when it may be bound again, and before any deposit.
    let (status, _, refused) = bind(&p, &accounts[4], "g-4");
    assert_eq!((status, refused["error"]["code"].as_str(), refused["error"]["param"].as_str()), (422, Some("card_locked"), Some("card_no")), "{refused}");
    let p2 = Client::create(&server, token, "{\"name\": \"Honest\"}");
    let theirs = p2.account(&p2.member("m-x", "Zhang San"));
    let (status, _, card) = bind(&p2, &theirs, "h-1");
    assert_eq!(status, 201, "another platform's bind of the number is its own: {card}");
    server.stop();
}

/// A large withdrawal's alert is written after the payout: a stop in between left the member
/// without it for good (before session 58); a replay of the withdrawal writes it now, and only
/// when it is missing.
#[test]
fn a_large_withdrawals_alert_lost_by_a_stop_is_written_by_its_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-58-alert-0123456789abcdef0123456789abcdef";
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client::create(&server, token, "{\"name\": \"Shop\"}");
    let member = p.member("m-a", "Zhang San");
    let account = p.account(&member);
    let card = verified_card(&p, &server, &account, "4111111111111111", "Zhang San", "11010519491231002X");
    p.fund(&account, "60000.00", "r-1");
    let body = json!({"out_order_no": "w-big", "account_id": account, "card_id": card, "amount": "50000.01", "currency": "CNY"});
    let alerts = |p: &Client| {
        let (_, notes) = p.get(&format!("/v1/members/{member}/notifications"));
        notes["notifications"].as_array().unwrap().iter().filter(|n| n["kind"] == "large_withdrawal_alert").count()
    };
    let (status, _, first) = p.post("/v1/withdrawals", &body);
    assert_eq!(status, 201, "{first}");
    assert_eq!(alerts(&p), 1);
    assert!(p.post("/v1/withdrawals", &body).1, "a replay");
    assert_eq!(alerts(&p), 1, "a replay finds the alert and writes none");
    let (platform, secret) = (p.platform.clone(), p.secret.clone());
    drop(p);
    server.stop();
    // As a stop between the payout and its alert leaves them: the alert never written.
    {
        let store = storage_rocks::RocksStore::open(dir.path()).expect("the server's database");
        storage::Store::delete_range(&store, b"n/", b"n0").unwrap();
    }
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client { server: &server, platform, secret };
    assert_eq!(alerts(&p), 0);
    let (status, replayed, again) = p.post("/v1/withdrawals", &body);
    assert_eq!((status, replayed, &again["order_id"]), (201, true, &first["order_id"]), "{again}");
    assert_eq!(alerts(&p), 1, "the replay wrote the missing alert");
    server.stop();
}
