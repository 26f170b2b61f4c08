//! End-to-end tests of recharges through the bank simulator (its failure share, signed callbacks)
//! and of what survives a kill -9 of the server: a pending recharge, and every payment
//! acknowledged under HTTP load.

mod support;

use serde_json::json;
use support::money::*;
use support::*;

#[test]
fn the_simulator_fails_its_share_and_callbacks_must_be_signed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-5-0123456789abcdef0123456789abcdef";
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
    // Signed by the bank but about another amount: refused, nothing moves (session 62).
    let master = std::fs::read_to_string(dir.path().join("master-key")).expect("the master key in the data directory");
    let channel_key = gateway::secrets::hmac_hex(&hex::decode(master.trim()).expect("hex"), b"channel-key/simulator");
    let (_, _, waiting) = p.post("/v1/recharges", &json!({"out_order_no": "r-2", "account_id": a, "amount": "5.00", "currency": "CNY"}));
    for amount in ["50.00", "5.001", "-5.00"] {
        let body = json!({"kind": "recharge", "order_id": waiting["order_id"], "status": "succeeded", "amount": amount}).to_string();
        let header = banksim::signature_header(&channel_key, now(), body.as_bytes());
        let request = ureq::post(&format!("{}/channels/simulator/callback", server.base)).set("X-Channel-Signature", &header);
        let response = answer(request.send_string(&body), "callback");
        assert_eq!(response.status(), 400, "{amount}");
        let error: serde_json::Value = response.into_json().unwrap();
        assert_eq!(error["error"]["code"], "invalid_request", "{error}");
    }
    assert_eq!(p.balances(&a).0, "0.00");
    // A payout's verdict that does not name its channel is refused (session 62).
    let body = json!({"kind": "withdrawal", "order_id": waiting["order_id"], "status": "failed", "amount": "5.00"}).to_string();
    let header = banksim::signature_header(&channel_key, now(), body.as_bytes());
    let request = ureq::post(&format!("{}/channels/simulator/callback", server.base)).set("X-Channel-Signature", &header);
    let error: serde_json::Value = answer(request.send_string(&body), "callback").into_json().unwrap();
    assert_eq!((error["error"]["code"].as_str(), error["error"]["param"].as_str()), (Some("invalid_request"), Some("channel")), "{error}");
    server.stop();
}

#[test]
fn a_pending_recharge_survives_kill_9_and_completes_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-6-0123456789abcdef0123456789abcdef";
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

/// A collection (代收) still pending at a kill -9 is handed to the bank again at the start as
/// the collection it is: the member's card is debited (before session 57 the start sent it as a
/// plain money-in, which credited the account with money no card paid).
#[test]
fn a_pending_collection_survives_kill_9_and_debits_its_card() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-7-0123456789abcdef0123456789abcdef";
    let fast = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client::create(&fast, token, "{\"name\": \"Collector\"}");
    let a = p.account(&p.member("m-a", "Zhang San"));
    let card = verified_card(&p, &fast, &a, "4111111111111111", "Zhang San", "11010519491231002X");
    let (platform, secret) = (p.platform.clone(), p.secret.clone());
    drop(p);
    fast.stop();
    let slow = start_configured(dir.path(), token, &config_with(&[("latency_ms = 200", "latency_ms = 600000")]));
    let p = Client { server: &slow, platform: platform.clone(), secret: secret.clone() };
    let body = json!({"out_order_no": "col-1", "account_id": a, "card_id": card, "amount": "80.00", "currency": "CNY"});
    let (status, _, order) = p.post("/v1/collections", &body);
    assert_eq!((status, order["status"].as_str()), (201, Some("pending")), "{order}");
    drop(p);
    slow.kill();
    let fast = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client { server: &fast, platform, secret };
    p.wait_order(order["order_id"].as_str().unwrap(), "succeeded");
    assert_eq!(p.balances(&a).0, "80.00");
    let (_, statement) = fast.sim_get("/sim/cards/4111111111111111/transactions");
    let debits = statement["transactions"].as_array().unwrap().iter().filter(|t| t["amount"] == "-80.00").count();
    assert_eq!(debits, 1, "the card paid the collection: {statement}");
    fast.stop();
}

#[test]
fn kill_9_under_http_load_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-12-0123456789abcdef0123456789abcdef";
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

/// Sends a captured signed POST again, byte for byte (same timestamp, nonce and signature).
fn send_captured(base: &str, platform: &str, captured: &(String, i64, String, String, String)) -> (u16, serde_json::Value) {
    let (path, timestamp, nonce, signature, body) = captured;
    let request = ureq::post(&format!("{base}{path}"))
        .set("X-Platform-Id", platform)
        .set("X-Timestamp", &timestamp.to_string())
        .set("X-Nonce", nonce)
        .set("X-Signature", signature)
        .set("Content-Type", "application/json");
    let response = answer(request.send_string(body), path);
    (response.status(), response.into_json().expect("JSON"))
}

#[test]
fn a_request_without_an_order_number_does_not_replay_after_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-replay-0123456789abcdefghij";
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client::create(&server, token, "{\"name\": \"Strict\", \"require_payment_password\": true}");
    let payer = p.account(&p.member("m-a", "Zhang San"));
    let payee = p.account(&p.member("m-b", "Li Si"));
    // The platform sets a password; an attacker captures the request.
    let path = format!("/v1/accounts/{payer}/password");
    let (timestamp, nonce, body) = (now(), fresh_nonce(), json!({"password": "123456"}).to_string());
    let captured = (path.clone(), timestamp, nonce.clone(), sign(&p.secret, "POST", &path, timestamp, &nonce, body.as_bytes()), body);
    assert_eq!(send_captured(&server.base, &p.platform, &captured).0, 200);
    // Five wrong passwords lock the account's payments.
    let pay = |client: &Client, number: &str, password: &str| {
        let body = json!({"out_order_no": number, "payer_account_id": payer, "mode": "balance", "amount": "1.00", "currency": "CNY",
            "payees": [{"account_id": payee, "amount": "1.00"}], "payment_password": password});
        let (status, _, reply) = client.post("/v1/payments", &body);
        (status, reply["error"]["code"].as_str().map(str::to_string))
    };
    for attempt in 0..5 {
        assert_eq!(pay(&p, &format!("w{attempt}"), "000000").0, 422);
    }
    assert_eq!(pay(&p, "locked-1", "123456"), (422, Some("payment_locked".to_string())));
    let within_process = send_captured(&server.base, &p.platform, &captured);
    assert_eq!((within_process.0, within_process.1["error"]["code"].as_str()), (401, Some("replayed_request")));
    let (platform, secret) = (p.platform.clone(), p.secret.clone());
    drop(p);
    server.kill();

    // Restarted within the signing window, the captured request is still a replay, and the lock
    // stays.
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client { server: &server, platform, secret };
    let (status, refused) = send_captured(&server.base, &p.platform, &captured);
    assert_eq!((status, refused["error"]["code"].as_str()), (401, Some("replayed_request")), "{refused}");
    assert_eq!(pay(&p, "locked-2", "123456"), (422, Some("payment_locked".to_string())), "the replay lifted nothing");
    server.stop();
}

/// A recharge the bank confirms after its account was closed lands in suspense (the money is at
/// the bank; the ledger cannot credit a closed account): an operator's case says so, once, with
/// the order and the amount, also after a restart.
#[test]
fn a_recharge_confirmed_for_a_closed_account_opens_a_case_for_its_suspense_credit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-diverted-0123456789abcdef0123456789abcdef";
    let config = config_with(&[("latency_ms = 200", "latency_ms = 2500")]);
    let server = start_configured(dir.path(), token, &config);
    let p = Client::create(&server, token, "{\"name\": \"Closing\"}");
    let a = p.account(&p.member("m-a", "Zhang San"));
    let (status, _, order) = p.post("/v1/recharges", &json!({"out_order_no": "r-1", "account_id": a, "amount": "12.34", "currency": "CNY"}));
    assert_eq!((status, order["status"].as_str()), (201, Some("pending")), "{order}");
    let (status, _, closed) = p.post(&format!("/v1/accounts/{a}/close"), &json!({"out_order_no": "close-1"}));
    assert_eq!(status, 200, "{closed}");
    let order_id = order["order_id"].as_str().unwrap().to_string();
    p.wait_order(&order_id, "succeeded");
    let suspense_cases = |server: &Server| {
        let (status, page) = server.get("/admin/cases?status=open&limit=500", Some(token));
        assert_eq!(status, 200, "{page}");
        page["cases"].as_array().unwrap().iter().filter(|c| c["case_id"].as_str().unwrap().starts_with("suspense_")).cloned().collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut cases = suspense_cases(&server);
    while cases.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        cases = suspense_cases(&server);
    }
    assert_eq!(cases.len(), 1, "{cases:?}");
    let case = &cases[0];
    let line = &case["line"];
    assert_eq!(
        (line["order_id"].as_str(), line["account_id"].as_str(), line["amount"].as_str(), line["entry"].as_str()),
        (Some(order_id.as_str()), Some(a.as_str()), Some("12.34"), Some("recharge")),
        "{case}"
    );
    assert!(case["reason"].as_str().unwrap().contains(&format!("a credit to {a} went to suspense")), "{case}");
    let (_, reserve) = server.get("/admin/reserve?currency=CNY&bank=simulator", Some(token));
    assert_eq!((reserve["ok"].as_bool(), reserve["suspense"].as_str()), (Some(true), Some("12.34")), "{reserve}");
    server.stop();
    // Opened once: a restart finds the case, and no second one.
    let server = start_configured(dir.path(), token, &config);
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(suspense_cases(&server).len(), 1);
    server.stop();
}
