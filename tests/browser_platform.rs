//! The platform portal in headless chromium: a platform operator (made by the first system
//! operator) signs in, registers a member and opens an account through the pages, reads its
//! virtual account number, and finds another platform's member is not there.

mod support;

use support::browser::Browser;
use support::portal::{first_password, Person};
use support::*;

const TOKEN: &str = "browser-platform-operator-token-0123456789";
const PASSWORD: &str = "a long enough password";

#[test]
fn a_platform_operator_registers_a_member_and_opens_an_account_in_chromium() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), Some(TOKEN));
    let alpha = Client::create(&server, TOKEN, r#"{"name": "Alpha"}"#);
    let beta = Client::create(&server, TOKEN, r#"{"name": "Beta"}"#);
    let beta_member = beta.member("beta-1", "Beta Person");

    // The first system operator makes Alpha's operator over HTTP.
    let mut admin = Person::new(&server);
    assert_eq!(admin.login("admin", &first_password(&server)).status, 303);
    let csrf = admin.csrf();
    let made = admin.post(
        "/portal/operators",
        &[
            ("csrf", &csrf),
            ("username", "alpha_ops"),
            ("display_name", "Alpha Ops"),
            ("kind", "platform"),
            ("platform", &alpha.platform),
            ("member", ""),
            ("role", "viewer"),
            ("role", "operator"),
            ("password", PASSWORD),
        ],
    );
    assert!(made.body.contains("created"), "{}", made.body);

    let browser = Browser::start();
    browser.goto(&format!("{}/portal/login", server.base));
    browser.fill("input[name=username]", "alpha_ops");
    browser.fill("input[name=password]", PASSWORD);
    browser.submit("form[action='/portal/login']");
    browser.wait_for_url("/portal/platform");
    browser.wait_for("#platform-metrics");
    assert_eq!(browser.text_of("#metric-members"), "0");
    browser.screenshot("platform-dashboard");

    browser.click("nav.side a[href='/portal/platform/members']");
    browser.wait_for("#register form");
    browser.select("#register select[name=type]", "individual");
    browser.fill("#register input[name=name]", "Zhang San");
    browser.fill("#register input[name=id_number]", "11010519491231002X");
    browser.fill("#register input[name=phone]", "13800138000");
    browser.submit("#register form");
    browser.wait_for_url("/portal/platform/members/mem_");
    assert_eq!(browser.text_of("#id-number"), "**************002X");
    assert_eq!(browser.text_of("#phone"), "138****8000");
    let member = browser.text_of("#member-id");

    browser.select("#accounts select[name=currency]", "CNY");
    browser.submit("#accounts form");
    let van = browser.wait_for_text("#accounts td.van", "6229");
    assert_eq!(van.trim().len(), 17, "{van}");
    browser.screenshot("platform-member");

    // 代付 from the member's page: the preview shows the routing before anything moves.
    browser.fill("#payout input[name=card_no]", "5555555555554444");
    browser.fill("#payout input[name=holder_name]", "Wang Wu");
    browser.fill("#payout input[name=amount]", "40.00");
    browser.submit("#payout form");
    browser.wait_for("#payout-preview");
    assert_eq!(browser.text_of("#payout-preview dd.channel").trim(), "sim_same_city");
    assert_eq!(browser.text_of("#payout-preview dd.fee").trim(), "0.50 CNY");
    assert!(browser.count("#payout-preview table.candidates tr[data-channel]") >= 2, "{}", browser.source());
    browser.screenshot("platform-payout-preview");

    // The API sees what the pages made.
    let (status, shown) = alpha.get(&format!("/v1/members/{member}/notifications"));
    assert_eq!(status, 200, "{shown}");

    // Another platform's member by URL: the not-found page.
    browser.goto(&format!("{}/portal/platform/members/{beta_member}", server.base));
    browser.wait_for("p.error");
    assert_eq!(browser.attribute_of("p.error", "data-code").as_deref(), Some("not_found"));
    assert!(!browser.source().contains("Beta Person"));
    drop(browser);
    server.stop();
}
