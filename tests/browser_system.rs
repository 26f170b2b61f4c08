//! The system operators' portal in headless chromium against the real server: the first system
//! operator signs in, registers a platform through the form (the platform then signs API calls
//! with the secret the page showed), runs a settlement and downloads its statement, proposes a
//! channel change that a second operator approves; the dashboard is saved as a screenshot.

mod support;

use serde_json::json;
use support::browser::Browser;
use support::money::{business_date, FAST_BANK};
use support::portal::{first_password, Person, MAKERS_PASSWORD};
use support::*;

const TOKEN: &str = "browser-system-operator-token-0123456789";

fn sign_in(browser: &Browser, server: &Server, username: &str, password: &str) {
    browser.goto(&format!("{}/portal/login", server.base));
    browser.fill("input[name=username]", username);
    browser.fill("input[name=password]", password);
    browser.submit("form[action='/portal/login']");
    browser.wait_for_url("/portal/system");
}

#[test]
fn a_system_operator_registers_settles_and_changes_a_channel_with_four_eyes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_configured(dir.path(), TOKEN, &config_with(FAST_BANK));
    let browser = Browser::start();
    sign_in(&browser, &server, "admin", &first_password(&server));

    // Register a platform through the form; the secret is on the result page only.
    browser.goto(&format!("{}/portal/system/platforms", server.base));
    browser.fill("#register input[name=name]", "Browser Shop");
    browser.fill("#register input[name=settlement_cycle_days]", "1");
    browser.submit("#register");
    let platform = browser.wait_for_text("#platform-id", "plt_");
    let secret = browser.text_of("#platform-secret");
    assert_eq!((platform.as_str(), secret.len()), ("plt_1", 64));
    let client = Client { server: &server, platform: platform.clone(), secret };
    let payer = client.account(&client.member("payer", "Zhang San"));
    let merchant = client.account(&client.member("merchant", "Li Si"));
    client.fund(&payer, "100.00", "r-1");
    let body = json!({"out_order_no": "pay-1", "payer_account_id": payer, "mode": "balance", "amount": "25.00", "currency": "CNY", "payees": [{"account_id": merchant, "amount": "25.00"}]});
    assert_eq!(client.post("/v1/payments", &body).0, 201);

    // Run the settlement of tomorrow (T+1 matures today's income) and take the statement's link.
    browser.goto(&format!("{}/portal/system/settlement", server.base));
    let date = business_date(1);
    browser.fill("#settle input[name=business_date]", &date);
    browser.submit("#settle");
    browser.wait_for_text(".notice", &format!("Settlement of {date} done."));
    let link = browser.attribute_of("a.statement", "href").expect("a statement link");
    // The CSV through HTTP with the browser's session cookie (downloads are awkward headless).
    let (name, value) = browser.cookies().into_iter().find(|(name, _)| name == "portal_session").expect("the session cookie");
    let response = answer(ureq::get(&format!("{}{link}", server.base)).set("Cookie", &format!("{name}={value}")).call(), "statement");
    assert!(response.header("content-disposition").is_some_and(|d| d.starts_with("attachment")));
    let csv = response.into_string().unwrap();
    assert!(csv.lines().any(|l| l.contains(&merchant) && l.contains(",25.00,")), "{csv}");

    // A clerk proposes a channel change and a second operator approves (both made over HTTP with
    // the admin's session: four eyes are two people, and an operator the proposer made would
    // not do).
    let mut admin = Person::new(&server);
    admin.cookie = Some(format!("{name}={value}"));
    let csrf = admin.csrf();
    for (username, role) in [("second", "approver"), ("clerk", "operator")] {
        let fields = [
            ("csrf", csrf.as_str()),
            ("username", username),
            ("display_name", username),
            ("kind", "system"),
            ("platform", ""),
            ("member", ""),
            ("role", "viewer"),
            ("role", role),
            ("password", MAKERS_PASSWORD),
        ];
        assert_eq!(admin.post("/portal/operators", &fields).status, 200);
        // Each chooses its own password (an operator approves nothing before it has).
        Person::take_over_at(&server.base, username, "a long enough password");
    }
    browser.delete_cookies();
    sign_in(&browser, &server, "clerk", "a long enough password");
    browser.goto(&format!("{}/portal/system/channels", server.base));
    browser.fill("form.channel-change[data-channel=sim_gateway] input[name=fee_rate_bps]", "55");
    browser.fill("form.channel-change[data-channel=sim_gateway] input[name=note]", "new tariff");
    browser.submit("form.channel-change[data-channel=sim_gateway]");
    browser.wait_for_text(".notice", "Proposal 1 recorded");
    browser.delete_cookies();
    sign_in(&browser, &server, "second", "a long enough password");
    browser.goto(&format!("{}/portal/approvals", server.base));
    browser.submit("form[action='/portal/approvals/1/approve']");
    browser.wait_for_text(".notice", "(executed)");
    browser.goto(&format!("{}/portal/system/channels", server.base));
    assert!(browser.text_of("tr[data-channel=sim_gateway] td.fee").contains("+ 55 bps"));

    browser.goto(&format!("{}/portal/system", server.base));
    browser.wait_for("div.cards");
    assert!(browser.count("div.charts svg") >= 3, "{}", browser.source());
    browser.screenshot("system-dashboard");
    drop(browser);
    server.stop();
}
