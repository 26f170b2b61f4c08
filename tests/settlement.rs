//! End-to-end tests of the nightly settlement run: maturing and auto-confirm with statements,
//! tiered commission rules over days and platforms, the channels' fees against the reserve, and a
//! run killed at any moment and run again.

mod support;

use serde_json::json;
use support::money::*;
use support::*;

#[test]
fn home_decoration_scenario_from_recharge_to_the_companys_withdrawal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-11-0123456789abcdef0123456789abcdef";
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
    let (_, statement) = server.sim_get("/sim/cards/6222020200112233446/transactions");
    assert!(statement["transactions"].as_array().unwrap().iter().any(|t| t["amount"] == "45975.00"), "{statement}");
    let (_, report) = server.get("/admin/invariants", Some(token));
    assert_eq!(report["ok"], true, "{report}");
    server.stop();
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

#[test]
fn settlement_charges_tiered_commissions_over_several_days_and_platforms_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-rules-0123456789abcdef0123456789abcdef";
    // The runs name days of 2099 (a month's tiers, then the next month's): far past today.
    let server = start_configured(dir.path(), token, &config_with(&[FAST_BANK[0], ("days_ahead_max = 0", "days_ahead_max = 100000")]));
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
    // A receiver the rule names is neither closed by its platform nor credit-blocked by the
    // operator (its commission would go to suspense, one case per merchant each night: helper
    // 121#2); a debit block is fine. A credit-blocked account is no receiver of a new rule.
    let closing = a.post(&format!("/v1/accounts/{agent}/close"), &json!({"out_order_no": "close-agent"}));
    assert_eq!(error_of(&closing), (422, Some("account_is_commission_receiver")), "{:?}", closing);
    let status_path = format!("/admin/accounts/{agent}/status");
    let blocked = admin_request(&server, "POST", &status_path, token, Some(&json!({"status": "credit_blocked"})));
    assert_eq!((blocked.0, blocked.1["error"]["code"].as_str()), (422, Some("account_is_commission_receiver")), "{}", blocked.1);
    for status in ["debit_blocked", "normal"] {
        assert_eq!(admin_request(&server, "POST", &status_path, token, Some(&json!({"status": status}))).0, 200);
    }
    let spare = a.account(&a.member("spare", "Spare Account"));
    assert_eq!(admin_request(&server, "POST", &format!("/admin/accounts/{spare}/status"), token, Some(&json!({"status": "credit_blocked"}))).0, 200);
    let mut naming_blocked = good_a.clone();
    naming_blocked["receivers"] = json!([{"account_id": spare, "share": 1}]);
    let (status, refused) = admin_request(&server, "PUT", &rule_path(&a), token, Some(&naming_blocked));
    assert_eq!((status, refused["error"]["param"].as_str()), (400, Some("receivers")), "{refused}");
    assert_eq!(a.post(&format!("/v1/accounts/{spare}/close"), &json!({"out_order_no": "close-spare"})).0, 200, "not a receiver: closed");
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
fn the_settlement_run_books_the_channels_fees_and_the_reserve_meets_the_bank() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-channel-fees-0123456789abcdef0123456789abcdef";
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
    let wechat = server.sim_text(&format!("/sim/channels/sim_wechat_scan/statements/{}", business_date(0)));
    assert!(wechat.contains(",in,100.00,succeeded,0.60"), "{wechat}");
    // At the bank: 1,100.00 in less WeChat's 0.60, 100.00 out, and UnionPay kept its 1.00 fee
    // (the statements say so): 998.40. Our books say so only once the run has booked the fees.
    let today = business_date(0);
    let statement = server.sim_text(&format!("/sim/channels/sim_unionpay/statements/{today}"));
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
    // WeChat's tariff goes up after the bank took 0.60 and before the run (helper 121#3): the
    // run books what the bank took, noted at the verdict, not 1 % of today's tariff.
    let patch = json!({"fee_rate_bps": 100});
    assert_eq!(admin_request(&server, "PATCH", "/admin/channels/sim_wechat_scan", token, Some(&patch)).0, 200);
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
    // The bank's statement agrees with the fee booked (it was a fee mismatch at today's tariff).
    let request = ureq::post(&format!("{}/admin/reconciliations", server.base)).set("Authorization", &format!("Bearer {token}"));
    let body = json!({"channel": "sim_wechat_scan", "business_date": today, "file": wechat}).to_string();
    let report: serde_json::Value = request.send_string(&body).expect("reconciled").into_json().unwrap();
    assert_eq!(report["counts"], json!({"matched": 1}), "{report}");
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
    // A recharge decided after the change costs the new tariff, at the bank and in the books.
    let (_, _, later) =
        p.post("/v1/recharges", &json!({"out_order_no": "r-scan-2", "account_id": a, "amount": "100.00", "currency": "CNY", "channel": "sim_wechat_scan"}));
    p.wait_order(later["order_id"].as_str().unwrap(), "succeeded");
    assert!(server.sim_text(&format!("/sim/channels/sim_wechat_scan/statements/{today}")).contains(",in,100.00,succeeded,1.00"));
    let (_, third) = settle(&server, token, &today);
    let scan =
        third["channel_fees"].as_array().unwrap().iter().find(|f| f["channel"] == "sim_wechat_scan" && f["business_date"] == today.as_str()).unwrap().clone();
    assert_eq!((scan["orders"].as_u64(), scan["fees"].as_str(), scan["booked_now"].as_str()), (Some(2), Some("1.60"), Some("1.00")), "{third}");
    let (_, bank) = server.get("/admin/reserve?currency=CNY&bank=simulator", Some(token));
    assert_eq!(bank["ok"], true, "{bank}");
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
    let token = "money-token-settle-crash-0123456789abcdef0123456789abcdef";
    // The runs name days of 2099: far past today.
    let config = config_with(&[FAST_BANK[0], ("days_ahead_max = 0", "days_ahead_max = 100000")]);
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

/// A run by hand of a date after today's business date is refused and changes nothing: it would
/// mature every platform's income early and confirm every held escrow at once (before session
/// 58 a mistyped year was enough). `[settlement] days_ahead_max` (0 here, as in production)
/// lets tests name tomorrow.
#[test]
fn a_settlement_of_a_future_date_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-58-0123456789abcdef0123456789abcdef";
    let server = start(dir.path(), Some(token));
    let p = Client::create(&server, token, "{\"name\": \"Shop\", \"settlement_cycle_days\": 1, \"auto_confirm_days\": 1}");
    let (payer, merchant) = (p.account(&p.member("payer", "Zhang San")), p.account(&p.member("merchant", "Li Si")));
    p.fund(&payer, "100.00", "r-1");
    let pay = |number: &str, mode: &str| {
        let body = json!({"out_order_no": number, "payer_account_id": payer, "mode": mode, "amount": "30.00", "currency": "CNY", "payees": [{"account_id": merchant, "amount": "30.00"}]});
        assert_eq!(p.post("/v1/payments", &body).0, 201);
    };
    pay("pay-1", "balance");
    pay("pay-2", "guarantee");
    for date in [business_date(1), "9999-12-31".to_string(), "2999-01-01".to_string()] {
        let (status, reply) = settle(&server, token, &date);
        assert_eq!(
            (status, reply["error"]["code"].as_str(), reply["error"]["param"].as_str()),
            (422, Some("business_date_in_future"), Some("business_date")),
            "{date}: {reply}"
        );
    }
    assert_eq!(p.balances(&merchant), ("30.00".into(), "0.00".into(), "0.00".into(), "30.00".into()), "nothing matured");
    let (_, held) = p.get("/v1/orders?out_order_no=pay-2");
    assert!(held.to_string().contains("\"held\""), "the escrow is still held: {held}");
    let (status, today) = settle(&server, token, &business_date(0));
    assert_eq!(status, 200, "today's run is allowed: {today}");
    server.stop();
}

/// The nightly run releases the freezes whose expiry has passed, in bounded steps since session
/// 62 (`ExpireFreezesChunk`; before, one command a shard released them all in one batch), and
/// leaves the ones still to come; a second run releases nothing more.
#[test]
fn a_run_releases_the_freezes_that_expired_and_keeps_the_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-62-0123456789abcdef0123456789abcdef";
    let server = start_configured(dir.path(), token, &config_with(FAST_BANK));
    let p = Client::create(&server, token, "{\"name\": \"Freezes\"}");
    let accounts: Vec<String> = (0..3).map(|k| p.account(&p.member(&format!("m{k}"), "Li Si"))).collect();
    for (k, account) in accounts.iter().enumerate() {
        p.fund(account, "100.00", &format!("r-{k}"));
    }
    let soon = now() + 2;
    let freeze = |number: &str, account: &str, amount: &str, expires_at: i64| {
        let body = json!({"out_order_no": number, "account_id": account, "amount": amount, "currency": "CNY", "reason": "dispute", "expires_at": rfc3339_utc(expires_at)});
        let (status, _, order) = p.post("/v1/freezes", &body);
        assert_eq!((status, order["status"].as_str()), (201, Some("held")), "{order}");
        order["order_id"].as_str().unwrap().to_string()
    };
    let mut expiring = Vec::new();
    for (k, account) in accounts.iter().enumerate() {
        expiring.push(freeze(&format!("f-{k}-a"), account, "10.00", soon));
        expiring.push(freeze(&format!("f-{k}-b"), account, "5.00", soon));
    }
    let later = freeze("f-later", &accounts[0], "20.00", now() + 3_600);
    assert_eq!(p.balances(&accounts[0]).2, "35.00");
    while now() <= soon {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (status, run) = settle(&server, token, &business_date(0));
    assert_eq!((status, run["expired_freezes"].as_u64(), run["invariants_ok"].as_bool()), (200, Some(6), Some(true)), "{run}");
    for order in &expiring {
        assert_eq!(p.get(&format!("/v1/orders/{order}")).1["status"], "succeeded", "{order}");
    }
    assert_eq!(p.get(&format!("/v1/orders/{later}")).1["status"], "held");
    assert_eq!(p.balances(&accounts[0]).2, "20.00", "only the later freeze holds funds");
    assert_eq!(p.balances(&accounts[1]), ("100.00".into(), "100.00".into(), "0.00".into(), "0.00".into()));
    let (_, again) = settle(&server, token, &business_date(0));
    assert_eq!(again["expired_freezes"].as_u64(), Some(0), "{again}");
}
