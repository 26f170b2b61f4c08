//! End-to-end tests of money out and channels: withdrawals to verified cards, collections (代收)
//! and payouts to outside cards (代付), routing and fallback to the next channel, the payout
//! timeout, and the operator changing and adding channels at run time.

mod support;

use serde_json::json;
use support::money::*;
use support::*;

#[test]
fn a_failed_withdrawal_returns_amount_and_fee() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-10-0123456789abcdef0123456789abcdef";
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

#[test]
fn a_failed_channel_falls_back_to_the_next_and_all_failing_returns_the_funds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-20-0123456789abcdef0123456789abcdef";
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
    let (_, statement) = server.sim_get("/sim/cards/4111111111111111/transactions");
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
    // The last channel's statement says it paid w-2 after all: what went back is held under a
    // case until an operator resolves it; taken into suspense, the decision is the case's, and
    // a repeat asking the other fate is refused (since session 60; it answered 200 before).
    let w2 = order["order_id"].as_str().unwrap();
    let file = format!("bank_ref,order_id,direction,amount,status,fee\nSIMX1,{w2},out,100.00,succeeded,2.02\n");
    let request = ureq::post(&format!("{}/admin/reconciliations", server.base)).set("Authorization", &format!("Bearer {token}"));
    let reconciled = answer(request.send_string(&json!({"channel": "sim_ibps", "business_date": business_date(0), "file": file}).to_string()), "reconcile");
    assert_eq!(reconciled.status(), 200);
    assert_eq!((p.balances(&a).0.as_str(), p.balances(&a).2.as_str()), ("795.96", "102.02"), "held until the case is resolved");
    let (_, cases) = server.get("/admin/cases", Some(token));
    let case =
        cases["cases"].as_array().unwrap().iter().find(|c| c["case_id"].as_str().unwrap().starts_with("case_paid_after_failure_")).expect("its case").clone();
    let resolve = |body: serde_json::Value| {
        let url = format!("{}/admin/cases/{}/resolve", server.base, case["case_id"].as_str().unwrap());
        let response = answer(ureq::post(&url).set("Authorization", &format!("Bearer {token}")).send_string(&body.to_string()), "resolve");
        (response.status(), response.into_json::<serde_json::Value>().unwrap())
    };
    let paid = json!({"resolution": "paid on the card", "operator": "li", "hold": "capture"});
    let (status, resolved) = resolve(paid.clone());
    assert_eq!((status, resolved["hold"].as_str()), (200, Some("capture")), "{resolved}");
    assert_eq!(resolve(paid).0, 200, "the same again: its answer");
    let (status, refused) = resolve(json!({"resolution": "paid on the card", "operator": "li"}));
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("order_state_invalid")), "{refused}");
    assert_eq!((p.balances(&a).0.as_str(), p.balances(&a).2.as_str()), ("795.96", "0.00"), "captured, not released");
    let (_, report) = server.get("/admin/invariants", Some(token));
    assert_eq!(report["ok"], true, "{report}");
    server.stop();
}

/// Money in through a channel holds to what the channel takes now, as routing holds payouts:
/// its currency (a USD order never goes through a CNY channel and is booked in USD), its service
/// window and its business days; the order is refused and nothing is created. An order number
/// the channel took before the operator closed it is still answered as the first time.
#[test]
fn money_in_channels_take_only_their_currency_in_their_hours_and_days() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-27-0123456789abcdef0123456789abcdef";
    // Today (business-local) and its neighbours are holidays: a business-days-only channel is shut.
    let holidays = format!("holidays = [\"{}\", \"{}\", \"{}\", ", business_date(-1), business_date(0), business_date(1));
    let server = start_configured(dir.path(), token, &config_with(&[("latency_ms = 200", "latency_ms = 20"), ("holidays = [", holidays.as_str())]));
    let p = Client::create(&server, token, "{\"name\": \"Channels in\"}");
    let member = p.member("m-a", "Zhang San");
    let cny = p.account(&member);
    let (status, _, opened) = p.post("/v1/accounts", &json!({"out_order_no": "acct-usd", "member_id": member, "currency": "USD"}));
    assert_eq!(status, 201, "{opened}");
    let usd = opened["account_id"].as_str().unwrap().to_string();
    let recharge = |number: &str, account: &str, currency: &str, channel: Option<&str>| {
        let mut body = json!({"out_order_no": number, "account_id": account, "amount": "10.00", "currency": currency});
        if let Some(channel) = channel {
            body["channel"] = json!(channel);
        }
        p.post("/v1/recharges", &body)
    };
    let refused = |reply: &(u16, bool, serde_json::Value), param: &str, message: &str| {
        assert_eq!((error_of(reply), reply.2["error"]["param"].as_str()), ((422, Some("no_channel_available")), Some(param)), "{}", reply.2);
        assert!(reply.2["error"]["message"].as_str().unwrap().contains(message), "{}", reply.2);
    };
    // The only money-in channel is sim_gateway, in CNY.
    refused(&recharge("usd-1", &usd, "USD", None), "currency", "sim_gateway takes CNY only");
    refused(&recharge("usd-2", &usd, "USD", Some("sim_gateway")), "currency", "sim_gateway takes CNY only");
    let direct = p.post(
        "/v1/payments",
        &json!({"out_order_no": "usd-3", "payer_account_id": usd, "mode": "balance", "funding": "channel", "amount": "10.00", "currency": "USD", "payees": [{"account_id": usd, "amount": "10.00"}]}),
    );
    refused(&direct, "currency", "takes CNY only");
    // A USD money-in channel: an order naming no channel goes through it, one naming the CNY
    // channel is still refused.
    let usd_in = json!({"id": 9, "name": "sim_usd_in", "kind": "quick_pay", "direction": "in", "currency": "USD",
        "fee_fixed": "0.00", "fee_rate_bps": 0, "fee_min": "0.00", "fee_max": "0.00", "order_min": "0.01", "order_max": "1000.00",
        "daily_cap": "100000.00", "window": "00:00-24:00", "business_days_only": false, "arrival": "realtime", "eta_minutes": 0,
        "serves": ["personal", "corporate"], "sim_latency_ms": 20, "sim_failure_per_mille": 0});
    assert_eq!(admin_request(&server, "POST", "/admin/channels", token, Some(&usd_in)).0, 201);
    let (status, _, in_usd) = recharge("usd-4", &usd, "USD", None);
    assert_eq!((status, in_usd["channel"].as_str()), (201, Some("sim_usd_in")), "{in_usd}");
    p.wait_order(in_usd["order_id"].as_str().unwrap(), "succeeded");
    refused(&recharge("usd-5", &usd, "USD", Some("sim_gateway")), "currency", "sim_gateway takes CNY only");
    let (status, _, first) = recharge("cny-1", &cny, "CNY", None);
    assert_eq!((status, first["channel"].as_str()), (201, Some("sim_gateway")), "{first}");
    p.wait_order(first["order_id"].as_str().unwrap(), "succeeded");
    // Outside the service window (an empty one), then on a holiday: new orders are refused, in
    // bulk too; the order taken before is answered as it was.
    let channel_change = |change: serde_json::Value| assert_eq!(admin_request(&server, "PATCH", "/admin/channels/sim_gateway", token, Some(&change)).0, 200);
    channel_change(json!({"window": "00:00-00:00"}));
    refused(&recharge("cny-2", &cny, "CNY", None), "channel", "sim_gateway takes orders from 00:00 to 00:00 business-local time");
    let bulk = p.post(
        "/v1/bulk",
        &json!({"operations": [{"op": "recharge", "body": {"out_order_no": "cny-3", "account_id": cny, "amount": "10.00", "currency": "CNY"}}]}),
    );
    assert_eq!(bulk.2["results"][0]["body"]["error"]["code"], "no_channel_available", "{}", bulk.2);
    let (status, replayed, again) = recharge("cny-1", &cny, "CNY", None);
    assert_eq!((status, replayed, &again["order_id"]), (201, true, &first["order_id"]), "{again}");
    channel_change(json!({"window": "00:00-24:00", "business_days_only": true}));
    refused(&recharge("cny-4", &cny, "CNY", None), "channel", "sim_gateway takes orders on business days only");
    let (status, replayed, _) = recharge("cny-1", &cny, "CNY", None);
    assert_eq!((status, replayed), (201, true));
    for number in ["usd-1", "usd-2", "usd-3", "usd-5", "cny-2", "cny-3", "cny-4"] {
        let (status, listed) = p.get(&format!("/v1/orders?out_order_no={number}"));
        assert_eq!((status, listed["orders"].as_array().map(Vec::len)), (200, Some(0)), "{number}: {listed}");
    }
    channel_change(json!({"business_days_only": false}));
    let (status, _, last) = recharge("cny-5", &cny, "CNY", None);
    assert_eq!(status, 201, "{last}");
    p.wait_order(last["order_id"].as_str().unwrap(), "succeeded");
    assert_eq!((p.balances(&usd).0, p.balances(&cny).0), ("10.00".to_string(), "20.00".to_string()));
    // sim_gateway taken out: a new order naming no channel goes through the next CNY one
    // (sim_wechat_scan), while a replay of one that went through sim_gateway is still its replay
    // (not a conflict over the channel chosen today).
    let (status, _, named) = recharge("cny-n1", &cny, "CNY", Some("sim_gateway"));
    assert_eq!(status, 201, "{named}");
    p.wait_order(named["order_id"].as_str().unwrap(), "succeeded");
    channel_change(json!({"enabled": false}));
    // Naming the channel taken out: its replay is still its replay; a new number is refused.
    let (status, replayed, again) = recharge("cny-n1", &cny, "CNY", Some("sim_gateway"));
    assert_eq!((status, replayed, &again["order_id"]), (201, true, &named["order_id"]), "{again}");
    let refused = recharge("cny-n2", &cny, "CNY", Some("sim_gateway"));
    assert_eq!((error_of(&refused), refused.2["error"]["param"].as_str()), ((400, Some("invalid_request")), Some("channel")), "{}", refused.2);
    let (status, replayed, again) = recharge("cny-1", &cny, "CNY", None);
    assert_eq!((status, replayed, &again["order_id"], again["channel"].as_str()), (201, true, &first["order_id"], Some("sim_gateway")), "{again}");
    assert_eq!(error_of(&recharge("cny-1", &usd, "USD", None)), (409, Some("idempotency_conflict")), "another body under the number");
    let (status, _, moved) = recharge("cny-6", &cny, "CNY", None);
    assert_eq!((status, moved["channel"].as_str()), (201, Some("sim_wechat_scan")), "{moved}");
    p.wait_order(moved["order_id"].as_str().unwrap(), "succeeded");
    let (_, report) = server.get("/admin/invariants", Some(token));
    assert_eq!(report["ok"], true, "{report}");
    server.stop();
}

#[test]
fn collections_from_a_verified_card_and_payouts_to_an_outside_card() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-24-0123456789abcdef0123456789abcdef";
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
    let (_, statement) = server.sim_get("/sim/cards/4111111111111111/transactions");
    assert!(statement["transactions"].as_array().unwrap().iter().any(|t| t["amount"] == "-80.00"), "{statement}");
    // The same number with another verified card: a conflict, and the order keeps its card
    // (before session 57 the second request replaced the card a restart would resend with).
    let other_card = verified_card(&p, &server, &member, "5555555555554444", "Zhang San", "11010519491231002X");
    let again = json!({"out_order_no": "col-1", "account_id": member, "card_id": other_card, "amount": "80.00", "currency": "CNY"});
    assert_eq!(error_of(&p.post("/v1/collections", &again)), (409, Some("idempotency_conflict")));
    let same = json!({"out_order_no": "col-1", "account_id": member, "card_id": card, "amount": "80.00", "currency": "CNY"});
    assert_eq!(p.post("/v1/collections", &same).0, 201, "the same request replays");
    // A collection and a plain recharge are one engine command: since session 60 each is a
    // conflict under the other's number (a plain recharge under a collection's note would be
    // sent to the bank as that collection at a start, a card debit nobody asked for), and
    // the collection's refused attempt leaves no note behind.
    let plain = json!({"out_order_no": "col-1", "account_id": member, "amount": "80.00", "currency": "CNY"});
    assert_eq!(error_of(&p.post("/v1/recharges", &plain)), (409, Some("idempotency_conflict")));
    let (_, _, bulk) = p.post("/v1/bulk", &json!({"operations": [{"op": "recharge", "body": plain}, {"op": "recharge", "body": {"out_order_no": "rc-0", "account_id": member, "amount": "1.00", "currency": "CNY"}}]}));
    assert_eq!(bulk["results"][0]["body"]["error"]["code"], "idempotency_conflict", "in a bulk request too: {bulk}");
    assert_eq!(bulk["results"][1]["status"], 201, "its other operations go on: {bulk}");
    let (status, _, recharged) = p.post("/v1/recharges", &json!({"out_order_no": "rc-1", "account_id": member, "amount": "10.00", "currency": "CNY"}));
    assert_eq!(status, 201, "{recharged}");
    let taken = json!({"out_order_no": "rc-1", "account_id": member, "card_id": card, "amount": "10.00", "currency": "CNY"});
    assert_eq!(error_of(&p.post("/v1/collections", &taken)), (409, Some("idempotency_conflict")));
    let (status, replayed, again) = p.post("/v1/recharges", &json!({"out_order_no": "rc-1", "account_id": member, "amount": "10.00", "currency": "CNY"}));
    assert_eq!((status, replayed, &again["order_id"]), (201, true, &recharged["order_id"]), "the recharge is still its own: {again}");
    assert_eq!(
        error_of(
            &p.post("/v1/collections", &json!({"out_order_no": "col-2", "account_id": member, "card_id": "card_99", "amount": "1.00", "currency": "CNY"}))
        ),
        (404, Some("not_found"))
    );
    // Money in holds to its channel's per-order bounds (sim_gateway: 0.01 to 5,000,000.00), as
    // routing holds payouts to theirs: recharges, collections and direct payments alike, and
    // nothing is created.
    let over = "5000000.01";
    let refusals = [
        p.post("/v1/recharges", &json!({"out_order_no": "big-1", "account_id": member, "amount": over, "currency": "CNY"})),
        p.post("/v1/collections", &json!({"out_order_no": "big-2", "account_id": member, "card_id": card, "amount": over, "currency": "CNY"})),
        p.post(
            "/v1/payments",
            &json!({"out_order_no": "big-3", "payer_account_id": member, "mode": "balance", "funding": "channel", "amount": over, "currency": "CNY", "payees": [{"account_id": platform_account, "amount": over}]}),
        ),
        p.post("/v1/bulk", &json!({"operations": [{"op": "recharge", "body": {"out_order_no": "big-4", "account_id": member, "amount": over, "currency": "CNY"}}]})),
    ];
    for refused in &refusals[..3] {
        assert_eq!((error_of(refused), refused.2["error"]["param"].as_str()), ((422, Some("no_channel_available")), Some("amount")), "{}", refused.2);
        assert!(refused.2["error"]["message"].as_str().unwrap().contains("5000000.00"), "{}", refused.2);
    }
    assert_eq!(refusals[3].2["results"][0]["body"]["error"]["code"], "no_channel_available", "{}", refusals[3].2);
    for number in ["big-1", "big-2", "big-3", "big-4"] {
        let (status, listed) = p.get(&format!("/v1/orders?out_order_no={number}"));
        assert_eq!((status, listed["orders"].as_array().map(Vec::len)), (200, Some(0)), "{number}: {listed}");
    }
    // An order accepted before the operator lowers the bound is still answered as it was: a
    // replay of its number is a replay (and another body under it a conflict), not a refusal.
    let recharge =
        |number: &str, amount: &str| p.post("/v1/recharges", &json!({"out_order_no": number, "account_id": member, "amount": amount, "currency": "CNY"}));
    let (status, _, first) = recharge("low-1", "100.00");
    assert_eq!(status, 201, "{first}");
    p.wait_order(first["order_id"].as_str().unwrap(), "succeeded");
    let (status, _) = admin_request(&server, "PATCH", "/admin/channels/sim_gateway", token, Some(&json!({"order_max": "50.00"})));
    assert_eq!(status, 200);
    let (status, replayed, again) = recharge("low-1", "100.00");
    assert_eq!((status, replayed, &again["order_id"]), (201, true, &first["order_id"]), "{again}");
    assert_eq!(error_of(&recharge("low-1", "60.00")), (409, Some("idempotency_conflict")));
    assert_eq!(error_of(&recharge("low-2", "60.00")), (422, Some("no_channel_available")));
    assert_eq!(recharge("low-3", "50.00").0, 201);
    assert_eq!(admin_request(&server, "PATCH", "/admin/channels/sim_gateway", token, Some(&json!({"order_max": "5000000.00"}))).0, 200);
    // 代付: from the platform's account to a card nobody bound.
    p.fund(&platform_account, "100.00", "r-platform");
    let payout = |number: &str, card_no: &str| {
        p.post("/v1/payouts", &json!({"out_order_no": number, "account_id": platform_account, "card_no": card_no, "holder_name": "Wang Wu", "amount": "40.00", "currency": "CNY", "arrival": "standard"}))
    };
    assert_eq!(error_of(&payout("po-0", "4111111111111112")), (400, Some("invalid_card_no")));
    let (status, _, paid) = payout("po-1", "5555555555554444");
    assert_eq!((status, paid["channel"].as_str(), paid["fee"].as_str()), (201, Some("sim_same_city"), Some("0.50")), "{paid}");
    assert!(payout("po-1", "5555555555554444").1, "a replay");
    assert_eq!(error_of(&payout("po-1", "4111111111111111")), (409, Some("idempotency_conflict")), "the same number to another card");
    // Helper 125#2: another arrival, account type or holder under the number is another body
    // (it was answered a replay saying the new arrival, routed as the first).
    for (field, value) in [("arrival", "realtime"), ("account_type", "corporate"), ("holder_name", "Li Si")] {
        let mut body = json!({"out_order_no": "po-1", "account_id": platform_account, "card_no": "5555555555554444", "holder_name": "Wang Wu", "amount": "40.00", "currency": "CNY", "arrival": "standard"});
        body[field] = json!(value);
        assert_eq!(error_of(&p.post("/v1/payouts", &body)), (409, Some("idempotency_conflict")), "another {field}");
    }
    p.wait_order(paid["order_id"].as_str().unwrap(), "succeeded");
    assert_eq!(p.balances(&platform_account).0, "59.50");
    let (_, outside) = server.sim_get("/sim/cards/5555555555554444/transactions");
    assert!(outside["transactions"].as_array().unwrap().iter().any(|t| t["amount"] == "40.00"), "{outside}");
    // The card unbound: a retry of a collection accepted before is answered as its order is
    // (since session 60; it was 404, which a platform could take for "not done" and collect
    // again under another number), a new one is refused.
    let path = format!("/v1/accounts/{member}/cards/{card}");
    let (t, nonce) = (now(), fresh_nonce());
    let request = ureq::delete(&format!("{}{path}", server.base))
        .set("X-Platform-Id", &p.platform)
        .set("X-Timestamp", &t.to_string())
        .set("X-Nonce", &nonce)
        .set("X-Signature", &sign(&p.secret, "DELETE", &path, t, &nonce, b""));
    assert_eq!(answer(request.call(), "unbind").status(), 200);
    let (status, replayed, again) = p.post("/v1/collections", &same);
    assert_eq!((status, replayed, &again["order_id"]), (201, true, &collected["order_id"]), "{again}");
    let new = json!({"out_order_no": "col-9", "account_id": member, "card_id": card, "amount": "1.00", "currency": "CNY"});
    assert_eq!(error_of(&p.post("/v1/collections", &new)), (404, Some("not_found")));
    server.stop();
}

#[test]
fn the_operator_changes_channels_at_run_time_and_the_change_outlives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-channels-0123456789abcdef0123456789abcdef";
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
    let statement = server.sim_text(&format!("/sim/channels/sim_ibps/statements/{}", business_date(0)));
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
    let token = "money-token-timeout-0123456789abcdef0123456789abcdef";
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
    let (_, statement) = server.sim_get("/sim/cards/4111111111111111/transactions");
    assert_eq!(statement["transactions"].as_array().unwrap().iter().filter(|t| t["amount"] == "100.00").count(), 1, "paid once: {statement}");
    // UnionPay's statement has no line for it (the bank never had it); IBPS's has.
    let today = business_date(0);
    let unionpay = server.sim_text(&format!("/sim/channels/sim_unionpay/statements/{today}"));
    assert_eq!(unionpay.lines().count(), 1, "{unionpay}");
    let (_, report) = server.get("/admin/channels", Some(token));
    let row = report["channels"].as_array().unwrap().iter().find(|c| c["name"] == "sim_unionpay").unwrap().clone();
    assert_eq!((row["health"]["recent_failures"].as_u64(), row["timeout_ms"].as_u64()), (Some(1), Some(300)), "{row}");
    assert_eq!(p.balances(&a).0, "897.98");
    let (_, invariants) = server.get("/admin/invariants", Some(token));
    assert_eq!(invariants["ok"], true, "{invariants}");
    server.stop();
}

/// Issue item 7: a withdrawal refused for insufficient funds gives back what routing took (the
/// refused channel's cap counts nothing). Since journal format 5 its number keeps the refusal
/// (API.md: a repeat returns the original response): the same body is answered it again, another
/// is `409 idempotency_conflict`. A new number for 200,000.00 is routed anew: not through the
/// first attempt's channel (whose order maximum is 50,000.00), at the new channel's fee,
/// counted in the daily cap of the channel that carries it. After that the number is taken:
/// the same body replays, another body is a conflict.
#[test]
fn a_refused_withdrawal_keeps_its_number_and_a_new_one_is_routed_anew() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-70-0123456789abcdef0123456789abcdef";
    // HVPS open around the clock with a daily cap of 300,000.00, so the routing does not depend
    // on the hour the test runs at.
    let config = config_with(&[
        ("latency_ms = 200", "latency_ms = 20"),
        ("window = \"08:30-17:00\"\nbusiness_days_only = true", "window = \"00:00-24:00\"\nbusiness_days_only = false"),
        ("daily_cap = \"1000000000.00\"", "daily_cap = \"300000.00\""),
    ]);
    let server = start_configured(dir.path(), token, &config);
    let p = Client::create(&server, token, "{\"name\": \"Refused then routed\"}");
    let a = p.account(&p.member("m-a", "Zhang San"));
    p.fund(&a, "100.00", "r-1");
    let card = verified_card(&p, &server, &a, "4111111111111111", "Zhang San", "11010519491231002X");
    let withdraw = |number: &str, amount: &str| {
        p.post(
            "/v1/withdrawals",
            &json!({"out_order_no": number, "account_id": a, "card_id": card, "amount": amount, "currency": "CNY", "arrival": "realtime"}),
        )
    };
    let refused = withdraw("w-1", "1000.00");
    assert_eq!(error_of(&refused), (422, Some("insufficient_funds")), "{}", refused.2);
    p.fund(&a, "500000.00", "r-2");
    let again = withdraw("w-1", "1000.00");
    assert_eq!((again.0, again.1, &again.2), (refused.0, true, &refused.2), "the refusal, kept");
    assert_eq!(error_of(&withdraw("w-1", "200000.00")), (409, Some("idempotency_conflict")));

    let (status, replayed, order) = withdraw("w-1b", "200000.00");
    assert_eq!((status, replayed), (201, false), "{order}");
    assert_ne!(order["channel"], "sim_unionpay", "UnionPay's order maximum is 50,000.00: {order}");
    assert_eq!((order["channel"].as_str(), order["fee"].as_str()), (Some("sim_hvps"), Some("5.00")), "routed anew, at HVPS's fee: {order}");
    assert_eq!(order["amount"], "200000.00");
    let (_, report) = server.get("/admin/channels", Some(token));
    let used = |name: &str| report["channels"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap()["used_today"].as_str().unwrap().to_string();
    assert_eq!((used("sim_unionpay"), used("sim_hvps")), ("0.00".to_string(), "200000.00".to_string()), "{report}");

    // The number is now taken: the same body replays, another body conflicts.
    let (status, replayed, again) = withdraw("w-1b", "200000.00");
    assert_eq!((status, replayed, &again["order_id"]), (201, true, &order["order_id"]), "{again}");
    assert_eq!(error_of(&withdraw("w-1b", "300.00")), (409, Some("idempotency_conflict")));

    // HVPS has 100,000.00 of its cap left: the next 200,000.00 goes to IBPS at its fee.
    let (status, _, next) = withdraw("w-2", "200000.00");
    assert_eq!((status, next["channel"].as_str(), next["fee"].as_str()), (201, Some("sim_ibps"), Some("42.00")), "{next}");
    assert_eq!(p.balances(&a).1, "100053.00", "500,100.00 less both amounts and their fees");
    server.stop();
}

/// A collection the ledger refused (its account takes no credits) keeps its refusal with its
/// number (journal format 5). Repeated after the default money-in channel changed (the first
/// one disabled), the repeat naming no channel is still the engine's replay of that refusal:
/// the channel the refused command had is found by its content (helper 118#3; before, the
/// repeat took today's default, another content, and was answered 409).
#[test]
fn a_refused_collection_is_answered_its_refusal_after_the_default_channel_changed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "money-token-kept-collection-0123456789abcdef0123456789abcdef";
    let server = start_configured(dir.path(), token, &config_with(&[("latency_ms = 200", "latency_ms = 20"), ("latency_ms = 500", "latency_ms = 20")]));
    let p = Client::create(&server, token, "{\"name\": \"Kept collection\"}");
    let member = p.account(&p.member("m-a", "Zhang San"));
    let card = verified_card(&p, &server, &member, "4111111111111111", "Zhang San", "11010519491231002X");
    let admin = |method: &str, path: &str, body: serde_json::Value| {
        let request = ureq::request(method, &format!("{}{path}", server.base)).set("Authorization", &format!("Bearer {token}"));
        answer(request.send_string(&body.to_string()), path).status()
    };
    assert_eq!(admin("POST", &format!("/admin/accounts/{member}/status"), json!({"status": "credit_blocked"})), 200);
    let collection = json!({"out_order_no": "col-refused", "account_id": member, "card_id": card, "amount": "80.00", "currency": "CNY"});
    let first = p.post("/v1/collections", &collection);
    assert_eq!((error_of(&first), first.1), ((422, Some("account_credit_blocked")), false), "{first:?}");
    assert_eq!(admin("PATCH", "/admin/channels/sim_gateway", json!({"enabled": false})), 200);
    let again = p.post("/v1/collections", &collection);
    assert_eq!((again.0, again.1, &again.2), (first.0, true, &first.2), "the refusal, replayed");
    let (_, statement) = server.sim_get("/sim/cards/4111111111111111/transactions");
    assert!(!statement["transactions"].as_array().unwrap().iter().any(|t| t["amount"] == "-80.00"), "nothing collected: {statement}");
    server.stop();
}
