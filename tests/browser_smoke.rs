//! The browser harness against the real server: a card holder opens the link the operator gave
//! them in headless chromium and reads the micro-deposit the bank simulator paid to their card.
//! It proves that chromium, chromedriver and `support::browser` work on this machine (and on CI)
//! before any portal test relies on them, and leaves a screenshot.

mod support;

use serde_json::json;
use support::browser::{screenshot_directory, Browser};
use support::money::{micro_deposit, FAST_BANK};
use support::*;

const TOKEN: &str = "browser-smoke-operator-token-0123456789";
const CARD: &str = "6222021234567890128";

/// A card bound to a member's account: the simulated bank pays it a micro-deposit.
fn card_with_a_micro_deposit(server: &Server) -> String {
    let platform = Client::create(server, TOKEN, "{\"name\": \"browser smoke\"}");
    let member = platform.member("m-browser", "Zhang San");
    let account = platform.account(&member);
    let body = json!({"out_order_no": "card-browser", "card_no": CARD, "holder_name": "Zhang San", "id_number": "11010519491231002X", "phone": "13800138000"});
    let (status, _, card) = platform.post(&format!("/v1/accounts/{account}/cards"), &body);
    assert_eq!(status, 201, "{card}");
    micro_deposit(server, CARD)
}

#[test]
fn a_card_holder_reads_the_micro_deposit_in_chromium() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_configured(dir.path(), TOKEN, &config_with(FAST_BANK));
    let deposit = card_with_a_micro_deposit(&server);
    let request = ureq::post(&format!("{}/admin/sim/cards/{CARD}/link", server.base)).set("Authorization", &format!("Bearer {TOKEN}"));
    let issued: serde_json::Value = answer(request.send_string("{}"), "link").into_json().expect("JSON");
    let link = format!("{}{}", server.base, issued["link"].as_str().expect("a link"));

    let started = std::time::Instant::now();
    let browser = Browser::start();
    let session_ms = started.elapsed().as_millis();
    browser.goto(&link);
    let first_page_ms = started.elapsed().as_millis() - session_ms;
    // Chromium shows a JSON answer as text in a <pre>: what the holder reads is the bank's statement.
    let shown = browser.wait_for_text("body", "card verification deposit");
    let statement: serde_json::Value = serde_json::from_str(&shown).unwrap_or_else(|error| panic!("{error}: {shown}"));
    let lines = statement["transactions"].as_array().expect("transactions");
    assert_eq!(lines.len(), 1, "{statement}");
    assert_eq!(lines[0]["amount"], deposit.as_str(), "the amount the platform's API saw is the one the holder sees");
    assert_eq!(browser.current_url(), link, "no redirect");
    let path = browser.screenshot("browser-smoke-card-link");
    assert!(path.starts_with(screenshot_directory()), "{}", path.display());
    let png = std::fs::read(&path).expect("the screenshot");
    // The PNG header's width and height (IHDR): the window asked for.
    let (width, height) = (u32::from_be_bytes(png[16..20].try_into().unwrap()), u32::from_be_bytes(png[20..24].try_into().unwrap()));
    assert_eq!((width, height), (1280, 900), "{}", path.display());
    eprintln!("chromium session {session_ms} ms, first page {first_page_ms} ms, screenshot {}", path.display());

    // Another visitor with a tampered link gets the API's error, in the same browser.
    browser.goto(&link.replace("signature=", "signature=0"));
    let refused: serde_json::Value = serde_json::from_str(&browser.text_of("body")).expect("an error body");
    assert_eq!(refused["error"]["code"], "unauthenticated", "{refused}");
    drop(browser);
    server.stop();
}

#[test]
fn a_phone_sized_browser_shows_a_phone_sized_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_configured(dir.path(), TOKEN, &config_with(&[]));
    let browser = Browser::start_mobile();
    browser.goto(&format!("{}/healthz", server.base));
    assert_eq!(browser.wait_for_text("body", "ok"), "{\"status\":\"ok\"}");
    assert_eq!(browser.execute("return [screen.width, screen.height]"), json!([390, 844]), "a phone's screen");
    // An H5 page declares its viewport (as phones need); then the layout is the phone's width.
    browser.goto("data:text/html,<meta name=viewport content='width=device-width,initial-scale=1'><h1 id=t>H5</h1>");
    assert_eq!(browser.text_of("#t"), "H5");
    assert_eq!(browser.execute("return [window.innerWidth, window.innerHeight]"), json!([390, 844]));
    let path = browser.screenshot("browser-smoke-mobile");
    let png = std::fs::read(&path).expect("the screenshot");
    let (width, height) = (u32::from_be_bytes(png[16..20].try_into().unwrap()), u32::from_be_bytes(png[20..24].try_into().unwrap()));
    assert_eq!((width, height), (390, 844), "{}", path.display());
    drop(browser);
    server.stop();
}
