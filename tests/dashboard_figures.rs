//! The dashboards' figures (gateway::stats) and the operators' engine commands
//! (gateway::adjustments) end to end: orders made through the signed API of a real server, a
//! settlement run through the operator API, then the figures read from what the server left on
//! disk (the engine replays the journal, so the aggregates are checked as rebuilt by replay),
//! an approved adjustment and a raised limit executed there, and the server started again to
//! show both through the API.

mod support;

use std::sync::Arc;

use engine::{Engine, EngineConfig};
use gateway::adjustments::{adjust, limits_of, set_limits, suspense_balances, AdjustmentRequest, LimitsRequest};
use gateway::stats::{balances_held, daily_volume, member_figures, settlement_days, today, DayKindTotal, HeldBalance, SettlementDay};
use serde_json::json;
use support::money::*;
use support::*;

const TOKEN: &str = "dashboard-token-0123456789abcdef0123456789abcdef";

fn platform_number(client: &Client) -> u32 {
    client.platform.strip_prefix("plt_").and_then(|n| n.parse().ok()).expect("plt_N")
}

/// (kind, count, amount in minor units) of the rows, summed over the days asked.
fn by_kind(rows: &[DayKindTotal]) -> Vec<(&'static str, u64, i128)> {
    let mut sums: std::collections::BTreeMap<&'static str, (u64, i128)> = Default::default();
    for row in rows {
        assert_eq!(row.currency, "CNY");
        let sum = sums.entry(row.kind).or_default();
        sum.0 += row.count;
        sum.1 += row.amount_minor;
    }
    sums.into_iter().map(|(kind, (count, amount))| (kind, count, amount)).collect()
}

fn cny(rows: &[HeldBalance]) -> HeldBalance {
    rows.iter().find(|r| r.currency == "CNY").cloned().expect("a CNY row")
}

#[test]
fn figures_of_orders_made_through_the_api_are_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    // sim_gateway charges 1.50 a recharge, so the run books channel fees.
    let config = config_with(&[
        ("latency_ms = 200", "latency_ms = 20"),
        ("days_ahead_max = 0", "days_ahead_max = 3"),
        (
            "name = \"sim_gateway\"\nkind = \"quick_pay\"\ndirection = \"in\"\ncurrency = \"CNY\"\nfee_fixed = \"0.00\"\nfee_rate_bps = 0\nfee_min = \"0.00\"\nfee_max = \"0.00\"",
            "name = \"sim_gateway\"\nkind = \"quick_pay\"\ndirection = \"in\"\ncurrency = \"CNY\"\nfee_fixed = \"1.50\"\nfee_rate_bps = 0\nfee_min = \"0.00\"\nfee_max = \"1.50\"",
        ),
    ]);
    let server = start_configured(dir.path(), TOKEN, &config);
    let (a, b, d, shop_credentials, shop, other) = {
        let p = Client::create(&server, TOKEN, "{\"name\": \"Shop\", \"settlement_cycle_days\": 1, \"auto_confirm_days\": 7}");
        let q = Client::create(&server, TOKEN, "{\"name\": \"Other\"}");
        let (a, b, receiver) = (p.account(&p.member("a", "Zhang San")), p.account(&p.member("b", "Li Si")), p.account(&p.member("c", "Wang Wu")));
        let d = q.account(&q.member("d", "Zhao Liu"));
        p.fund(&a, "1000.00", "r-a");
        p.fund(&b, "200.00", "r-b");
        q.fund(&d, "50.00", "r-d");
        let pay = |number: &str, mode: &str, amount: &str| {
            let body = json!({"out_order_no": number, "payer_account_id": a, "mode": mode, "amount": amount, "currency": "CNY", "payees": [{"account_id": b, "amount": amount}]});
            let (status, _, order) = p.post("/v1/payments", &body);
            assert_eq!(status, 201, "{order}");
        };
        pay("pay-1", "balance", "300.00");
        pay("pay-2", "guarantee", "100.00");
        let (status, _, frozen) =
            p.post("/v1/freezes", &json!({"out_order_no": "f-1", "account_id": a, "amount": "50.00", "currency": "CNY", "reason": "dispute"}));
        assert_eq!(status, 201, "{frozen}");
        let rule = json!({"currency": "CNY", "basis": "amount", "period": "month", "tiers": [{"from": "0.00", "rate": "0.01"}],
        "receivers": [{"account_id": receiver, "share": 1}], "service_fee_rate": "0.002"});
        assert_eq!(admin_request(&server, "PUT", &format!("/admin/platforms/{}/settlement-rule", p.platform), TOKEN, Some(&rule)).0, 200);
        let (status, run) = settle(&server, TOKEN, &business_date(1));
        assert_eq!(status, 200, "{run}");
        (a, b, d, (p.platform.clone(), p.secret.clone()), platform_number(&p), platform_number(&q))
    };
    server.stop();

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let store: Arc<dyn storage::Store> = Arc::new(storage_rocks::RocksStore::open(dir.path()).expect("the server's database"));
    let engine = Arc::new(Engine::start(EngineConfig::default(), store.clone()).expect("recovered"));
    let day = today(&engine);
    let days = day - 1..=day;
    runtime.block_on(async {
        // Orders created, by kind (pending recharges count when they were created).
        let everyone = daily_volume(&engine, None, days.clone()).await.unwrap();
        assert_eq!(by_kind(&everyone), [("freeze", 1, 5_000), ("guarantee", 1, 10_000), ("payment", 1, 30_000), ("recharge", 3, 125_000)]);
        assert!(everyone.iter().all(|row| !row.date.is_empty()));
        let shop_rows = daily_volume(&engine, Some(shop), days.clone()).await.unwrap();
        assert_eq!(by_kind(&shop_rows), [("freeze", 1, 5_000), ("guarantee", 1, 10_000), ("payment", 1, 30_000), ("recharge", 2, 120_000)]);
        assert_eq!(by_kind(&daily_volume(&engine, Some(other), days.clone()).await.unwrap()), [("recharge", 1, 5_000)]);
        assert!(daily_volume(&engine, None, day - 30..=day - 2).await.unwrap().is_empty(), "nothing on other days");
        assert_eq!(daily_volume(&engine, None, 0..=400).await.unwrap_err().status, 400, "at most 400 days");

        // Held now: a 1000 - 300 - 100 - 50 frozen = 550; b 200 + 300 matured - 3.00 commission
        // - 0.60 service fee = 496.40; the receiver 3.00; escrow 100; d 50.
        let shop_held = cny(&balances_held(&engine, Some(shop)).await.unwrap());
        let expected = HeldBalance { currency: "CNY".into(), settled: 55_000 + 49_640 + 300, unsettled: 0, frozen: 5_000, escrow: 10_000, suspense: None };
        assert_eq!(shop_held, expected);
        // One member's figures read only its own accounts: a paid, guaranteed and froze; b
        // received (the payment matured; the guarantee waits in escrow for b).
        let id = |text: &str| gateway::accounts::parse_account_id(text).expect("acc_N");
        let of_a = member_figures(&engine, shop, &[id(&a)], days.clone()).await.unwrap();
        assert_eq!(by_kind(&of_a.volume), [("freeze", 1, 5_000), ("guarantee", 1, 10_000), ("payment", 1, 30_000), ("recharge", 1, 100_000)]);
        assert_eq!(cny(&of_a.held), HeldBalance { currency: "CNY".into(), settled: 55_000, unsettled: 0, frozen: 5_000, escrow: 0, suspense: None });
        let of_b = member_figures(&engine, shop, &[id(&b)], days.clone()).await.unwrap();
        assert_eq!(by_kind(&of_b.volume), [("recharge", 1, 20_000)], "payments received are the payer's orders");
        assert_eq!(cny(&of_b.held), HeldBalance { currency: "CNY".into(), settled: 49_640, unsettled: 0, frozen: 0, escrow: 10_000, suspense: None });
        assert!(!of_a.truncated && !of_b.truncated);
        let not_ours = member_figures(&engine, shop, &[id(&d)], days.clone()).await.unwrap();
        assert!(
            not_ours.volume.is_empty() && cny(&not_ours.held) == HeldBalance { currency: "CNY".into(), ..HeldBalance::default() },
            "another platform's account"
        );
        assert!(member_figures(&engine, shop, &[id(&a)], day - 30..=day - 2).await.unwrap().volume.is_empty(), "nothing on other days");
        let all = cny(&balances_held(&engine, None).await.unwrap());
        assert_eq!(all, HeldBalance { settled: expected.settled + 5_000, suspense: Some(0), ..expected.clone() });

        // Settlement of today's income: 300 matured, 1% commission, 0.2% service fee; channel
        // fees: three recharges at 1.50.
        let settled: Vec<SettlementDay> = settlement_days(&engine, None, days.clone()).await.unwrap();
        assert_eq!(settled.len(), 1, "{settled:?}");
        let row = &settled[0];
        assert_eq!(
            (row.currency.as_str(), row.accounts, row.matured, row.commissions, row.service_fees, row.channel_fees),
            ("CNY", 1, 30_000, 300, 60, Some(450))
        );
        let shop_days = settlement_days(&engine, Some(shop), days.clone()).await.unwrap();
        assert_eq!((shop_days[0].matured, shop_days[0].channel_fees), (30_000, None));
        assert!(settlement_days(&engine, Some(other), days.clone()).await.unwrap().is_empty());

        // The operator moves 10.00 from b to d (another platform) with two pairs of eyes.
        let request = AdjustmentRequest {
            from: b.clone(),
            to: d.clone(),
            amount: "10.00".into(),
            currency: "CNY".into(),
            reason: "paid to the wrong member".into(),
            out_order_no: "adj-1".into(),
            proposer: "ann".into(),
            approver: "bo".into(),
        };
        let order = adjust(&engine, 0, &request).await.unwrap();
        assert_eq!((order["kind"].as_str(), order["status"].as_str(), order["amount"].as_str()), (Some("adjustment"), Some("succeeded"), Some("10.00")));
        assert_eq!((order["from"].as_str(), order["to"].as_str(), order["approver"].as_str()), (Some(b.as_str()), Some(d.as_str()), Some("bo")));
        assert_eq!(order["replayed"], false);
        let again = adjust(&engine, 0, &request).await.unwrap();
        assert_eq!((again["order_id"].clone(), again["replayed"].clone()), (order["order_id"].clone(), json!(true)));
        let one_pair = AdjustmentRequest { approver: "ann".into(), out_order_no: "adj-2".into(), ..request.clone() };
        let refused = adjust(&engine, 0, &one_pair).await.unwrap_err();
        assert_eq!((refused.status, refused.code), (422, "approval_invalid"));
        let from_suspense = AdjustmentRequest { from: "suspense".into(), out_order_no: "adj-3".into(), ..request.clone() };
        assert_eq!(adjust(&engine, 0, &from_suspense).await.unwrap_err().code, "insufficient_funds", "suspense holds nothing");
        assert_eq!(adjust(&engine, shop, &from_suspense).await.unwrap_err().status, 404, "suspense is the operator's");
        assert!(suspense_balances(&engine).await.unwrap().iter().all(|row| row["balance_minor"] == "0"));
        engine.wait_quiescent(std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(cny(&balances_held(&engine, Some(shop)).await.unwrap()).settled, expected.settled - 1_000);
        assert_eq!(cny(&balances_held(&engine, Some(other)).await.unwrap()).settled, 6_000);
        let shop_rows = daily_volume(&engine, Some(shop), days.clone()).await.unwrap();
        assert!(by_kind(&shop_rows).contains(&("adjustment", 1, 1_000)), "{shop_rows:?}");

        // The shop's operators raise a's per-order payment cap... then lower it below 30.00.
        assert_eq!(limits_of(&engine, shop, &a).await.unwrap()["limits"]["payment_per_order_max"], "unlimited");
        let lowered = LimitsRequest { payment_per_order_max: Some("20.00".into()), ..LimitsRequest::default() };
        let shown = set_limits(&engine, shop, &a, &lowered, "lim-1").await.unwrap();
        assert_eq!((shown["limits"]["payment_per_order_max"].as_str(), shown["limits"]["payment_daily_max"].as_str()), (Some("20.00"), Some("unlimited")));
        assert_eq!(set_limits(&engine, other, &a, &lowered, "lim-2").await.unwrap_err().status, 404, "not the other platform's");
        let zero = LimitsRequest { withdrawal_daily_max: Some("0".into()), ..LimitsRequest::default() };
        assert_eq!(set_limits(&engine, shop, &a, &zero, "lim-3").await.unwrap_err().code, "invalid_amount");
    });
    let report = engine::invariants::check_engine(&engine).unwrap();
    assert!(report.ok, "{report:?}");
    engine.shutdown();
    drop(engine);
    drop(store);

    // The server again: the adjustment and the cap came back from the journal.
    let server = start_configured(dir.path(), TOKEN, &config);
    let p = Client { server: &server, platform: shop_credentials.0, secret: shop_credentials.1 };
    let body = json!({"out_order_no": "pay-3", "payer_account_id": a, "mode": "balance", "amount": "30.00", "currency": "CNY", "payees": [{"account_id": b, "amount": "30.00"}]});
    assert_eq!(error_of(&p.post("/v1/payments", &body)), (422, Some("exceeds_per_order_limit")));
    let (status, listed) = p.get("/v1/orders?kind=adjustment");
    assert_eq!(status, 200, "{listed}");
    let orders = listed["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 1, "{listed}");
    assert_eq!((orders[0]["reason"].as_str(), orders[0]["proposer"].as_str()), (Some("paid to the wrong member"), Some("ann")));
    server.stop();
}
