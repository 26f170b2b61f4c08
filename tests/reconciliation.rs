//! End-to-end tests of reconciliation: offline transfers by virtual account number (or suspense
//! cases), a channel's statement file against our books (every kind of difference), the reserve
//! against the bank, and a whole night with no unexplained difference.

mod support;

use serde_json::json;
use support::money::*;
use support::*;

/// A member's CNY account: its id and its virtual account number.
fn account_with_its_number(p: &Client) -> (String, String) {
    let member = p.member("m-a", "Zhang San");
    let (_, _, account) = p.post("/v1/accounts", &json!({"out_order_no": "acct", "member_id": member, "currency": "CNY"}));
    (account["account_id"].as_str().unwrap().to_string(), account["virtual_account_no"].as_str().unwrap().to_string())
}

#[test]
fn offline_transfers_land_by_virtual_account_number_or_become_cases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-21-0123456789abcdef0123456789abcdef";
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client::create(&server, token, "{\"name\": \"Offline\"}");
    let (a, number) = account_with_its_number(&p);
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
    // A line taken stays that line: uploaded again naming no account, another account or another
    // amount it is a conflict, never a second booking (before session 58 a credited line whose
    // number came garbled was booked to suspense as well: one transfer counted twice).
    for (account_no, amount) in [("garbled", "300.00"), (wrong_digit.as_str(), "300.00"), (number.as_str(), "300.01")] {
        let (status, reply) = post(json!([{"bank_ref": "B-1", "virtual_account_no": account_no, "amount": amount, "currency": "CNY"}]));
        assert_eq!((status, reply["results"][0]["error"]["code"].as_str()), (200, Some("idempotency_conflict")), "{reply}");
    }
    let (status, reply) = post(json!([{"bank_ref": "B-3", "virtual_account_no": number, "amount": "5.00", "currency": "CNY"}]));
    assert_eq!((status, reply["results"][0]["error"]["code"].as_str()), (200, Some("idempotency_conflict")), "a parked line stays parked: {reply}");
    assert_eq!(p.balances(&a).0, "300.00");
    // A reference whose case id would be one of the clearing's own (a payout paid twice) is
    // refused, nothing taken (session 62).
    let (status, reply) = post(json!([{"bank_ref": "paid_after_failure_7_1", "virtual_account_no": "none", "amount": "5.00", "currency": "CNY"}]));
    assert_eq!((status, reply["results"][0]["error"]["code"].as_str()), (200, Some("invalid_request")), "{reply}");
    assert!(reply["results"][0]["error"]["message"].as_str().is_some_and(|m| m.contains("paid_")), "{reply}");
    let (_, cases) = server.get("/admin/cases", Some(token));
    let open: Vec<&str> = cases["cases"].as_array().unwrap().iter().map(|c| c["case_id"].as_str().unwrap()).collect();
    assert_eq!(open, ["case_B-2", "case_B-3"], "{cases}");
    let resolve = |body: serde_json::Value| {
        let request = ureq::post(&format!("{}/admin/cases/case_B-3/resolve", server.base)).set("Authorization", &format!("Bearer {token}"));
        let response = answer(request.send_string(&body.to_string()), "resolve");
        (response.status(), response.into_json::<serde_json::Value>().unwrap())
    };
    assert_eq!(resolve(json!({"resolution": "", "operator": "li"})).0, 400);
    assert_eq!(resolve(json!({"resolution": "done", "operator": "li", "hold": "sideways"})).0, 400);
    let (status, resolved) = resolve(json!({"resolution": "returned to the payer's bank", "operator": "li.ops"}));
    assert_eq!((status, resolved["status"].as_str(), resolved["resolved_by"].as_str()), (200, Some("resolved"), Some("li.ops")), "{resolved}");
    assert_eq!(resolve(json!({"resolution": "again", "operator": "li"})).0, 409);
    // Listed a page at a time, by status: open ones from memory, resolved ones from the store.
    let listed = |query: &str| {
        let (status, page) = server.get(&format!("/admin/cases{query}"), Some(token));
        let ids: Vec<String> = page["cases"].as_array().map(|a| a.iter().map(|c| c["case_id"].as_str().unwrap().to_string()).collect()).unwrap_or_default();
        (status, ids, page["next_cursor"].as_str().map(str::to_string), page)
    };
    let (_, first, next, _) = listed("?limit=1");
    assert_eq!((first, next.as_deref()), (vec!["case_B-2".to_string()], Some("case_B-2")));
    let (_, second, next, _) = listed("?limit=1&cursor=case_B-2");
    assert_eq!((second, next), (vec!["case_B-3".to_string()], None));
    assert_eq!(listed("?status=open").1, ["case_B-2"]);
    assert_eq!(listed("?status=resolved").1, ["case_B-3"]);
    for bad in ["?status=closed", "?limit=0", "?limit=501", "?cursor=", "?colour=red"] {
        let (status, _, _, page) = listed(bad);
        assert_eq!((status, page["error"]["code"].as_str()), (400, Some("invalid_request")), "{bad}: {page}");
    }
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
    let token = "money-token-22-0123456789abcdef0123456789abcdef";
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
    let statement = server.sim_text(&format!("/sim/channels/sim_unionpay/statements/{today}"));
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
    let token = "money-token-23-0123456789abcdef0123456789abcdef";
    let server = start_configured(
        dir.path(),
        token,
        &config_with(&[
            ("latency_ms = 200", "latency_ms = 20"),
            ("latency_ms = 300", "latency_ms = 20"),
            ("latency_ms = 500", "latency_ms = 20"),
            ("days_ahead_max = 0", "days_ahead_max = 3"),
        ]),
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
        let file = server.sim_text(&format!("/sim/channels/{name}/statements/{today}"));
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

/// The same statement uploaded by several operators at once while the account's status
/// changes: each line lands once, on the account or in suspense, never both (uploads are one
/// at a time: a line checked for suspense, then credited, could be booked to both).
#[test]
fn concurrent_uploads_of_one_statement_credit_each_line_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-21-0123456789abcdef0123456789abcdef";
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client::create(&server, token, "{\"name\": \"Offline\"}");
    let (a, number) = account_with_its_number(&p);
    let lines: Vec<serde_json::Value> =
        (0..60).map(|n| json!({"bank_ref": format!("C-{n}"), "virtual_account_no": number, "amount": "1.00", "currency": "CNY"})).collect();
    let body = json!({"lines": lines}).to_string();
    let base = server.base.clone();
    std::thread::scope(|scope| {
        let toggler = scope.spawn(|| {
            for n in 0..40 {
                let status = if n % 2 == 0 { "credit_blocked" } else { "normal" };
                let request = ureq::post(&format!("{base}/admin/accounts/{a}/status")).set("Authorization", &format!("Bearer {token}"));
                answer(request.send_string(&json!({"status": status}).to_string()), "status");
            }
            let request = ureq::post(&format!("{base}/admin/accounts/{a}/status")).set("Authorization", &format!("Bearer {token}"));
            answer(request.send_string(&json!({"status": "normal"}).to_string()), "status");
        });
        let uploads: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let request = ureq::post(&format!("{base}/admin/offline-transfers")).set("Authorization", &format!("Bearer {token}"));
                    answer(request.send_string(&body), "offline").status()
                })
            })
            .collect();
        for upload in uploads {
            assert_eq!(upload.join().unwrap(), 200);
        }
        toggler.join().unwrap();
    });
    let (_, report) = server.get("/admin/invariants", Some(token));
    assert_eq!(report["ok"], true, "{report}");
    // Each line once: what the account and suspense hold together is what the bank received.
    let (_, reserve) = server.get("/admin/reserve?currency=CNY&bank=simulator", Some(token));
    assert_eq!((reserve["difference"].as_str(), reserve["ok"].as_bool()), (Some("0.00"), Some(true)), "{reserve}");
    let credited: f64 = p.balances(&a).1.parse().unwrap();
    assert!(credited <= 60.0, "{credited}");
    server.stop();
}
