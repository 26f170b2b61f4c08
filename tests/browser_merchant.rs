//! The merchant portal in headless chromium: a merchant operator signs in, sees the dashboard,
//! fills in a withdrawal, reads the routing preview (the channel, every candidate and why, the
//! fee and the total) and confirms it; screenshots of the dashboard and the preview.

mod support;

use serde_json::json;
use support::browser::Browser;
use support::money::{micro_deposit, FAST_BANK};
use support::portal::{first_password, Person};
use support::*;

const TOKEN: &str = "browser-merchant-operator-token-0123456789";
const CARD: &str = "6222020200112233446";
const PASSWORD: &str = "a long enough password";

#[test]
fn a_merchant_operator_previews_and_confirms_a_withdrawal_in_chromium() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_configured(dir.path(), TOKEN, &config_with(FAST_BANK));
    let p = Client::create(&server, TOKEN, r#"{"name": "Home Decor"}"#);
    let body = json!({"out_order_no": "company", "type": "enterprise", "name": "Acme Decor", "id_number": "91350100M000100Y43", "phone": "13900139000"});
    let (status, _, member) = p.post("/v1/members", &body);
    assert_eq!(status, 201, "{member}");
    let member = member["member_id"].as_str().unwrap().to_string();
    let account = p.account(&member);
    p.fund(&account, "1000.00", "fund-1");
    let card = json!({"out_order_no": "card", "card_no": CARD, "holder_name": "Acme Decor", "id_number": "91350100M000100Y43", "phone": "13900139000"});
    let (status, _, card) = p.post(&format!("/v1/accounts/{account}/cards"), &card);
    assert_eq!(status, 201, "{card}");
    let card_id = card["card_id"].as_str().unwrap().to_string();
    let deposit = micro_deposit(&server, CARD);
    assert_eq!(p.post(&format!("/v1/accounts/{account}/cards/{card_id}/verify"), &json!({"amount": deposit})).0, 200);

    // The first system operator makes the merchant operator (over HTTP).
    let mut admin = Person::new(&server);
    assert_eq!(admin.login("admin", &first_password(&server)).status, 303);
    let csrf = admin.csrf();
    let made = admin.post(
        "/portal/operators",
        &[
            ("csrf", csrf.as_str()),
            ("username", "acme_ops"),
            ("display_name", "Acme operations"),
            ("kind", "merchant"),
            ("platform", p.platform.as_str()),
            ("member", member.as_str()),
            ("role", "operator"),
            ("password", PASSWORD),
        ],
    );
    assert!(made.body.contains("created"), "{}", made.body);

    let browser = Browser::start();
    browser.goto(&format!("{}/portal/login", server.base));
    browser.fill("input[name=username]", "acme_ops");
    browser.fill("input[name=password]", PASSWORD);
    browser.submit("form");
    browser.wait_for_url("/portal/merchant");
    let balances = browser.wait_for_text(&format!("tr[data-account='{account}']"), "1000.00");
    assert!(balances.contains("1000.00"), "{balances}");
    browser.screenshot("merchant-dashboard");

    browser.goto(&format!("{}/portal/merchant/withdraw", server.base));
    browser.select("form.withdraw select[name=account_id]", &account);
    browser.select("form.withdraw select[name=card_id]", &card_id);
    browser.fill("form.withdraw input[name=amount]", "100.00");
    browser.select("form.withdraw select[name=arrival]", "realtime");
    browser.submit("form.withdraw");
    assert_eq!(browser.wait_for_text("dd.channel", "sim_ibps"), "sim_ibps");
    assert_eq!(browser.text_of("dd.fee"), "2.02 CNY");
    assert_eq!(browser.text_of("dd.total"), "102.02 CNY");
    let candidates = browser.texts_of("table.candidates tbody tr");
    assert_eq!(candidates.len(), 4, "every money-out channel: {candidates:?}");
    assert!(candidates.iter().any(|row| row.contains("sim_unionpay") && row.contains("account type not served")), "{candidates:?}");
    assert!(browser.text_of("table.candidates tr.chosen").contains("sim_ibps"));
    browser.screenshot("merchant-withdrawal-preview");

    browser.submit("form.confirm");
    let url = browser.wait_for_url("/portal/merchant/orders/ord_");
    let order = url.rsplit('/').next().unwrap().to_string();
    let done = p.wait_order(&order, "succeeded");
    assert_eq!((done["channel"].as_str(), done["fee"].as_str(), done["amount"].as_str()), (Some("sim_ibps"), Some("2.02"), Some("100.00")), "{done}");
    browser.goto(&format!("{}/portal/merchant/orders/{order}", server.base));
    assert_eq!(browser.text_of("dd[data-field=status]"), "succeeded");
    assert_eq!(p.balances(&account).1, "897.98");
    drop(browser);
    server.stop();
}
