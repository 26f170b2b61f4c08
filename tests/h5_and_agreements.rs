//! End-to-end tests of electronic agreements (templates, signatures, the requirement before an
//! account is opened or a card bound) and of the members' H5 pages: the short-lived link (once,
//! expiring, bound to one member and one purpose), the cashier (the right password pays, wrong
//! ones count down and lock), CSRF, and the wallet (recharge, card, withdraw, password, close,
//! agreement). Pages are driven over HTTP with a cookie kept by hand (ureq has no cookie jar
//! without its `cookies` feature).

mod support;

use serde_json::json;
use sha2::{Digest, Sha256};
use support::money::*;
use support::*;

const ID_NUMBER: &str = "11010519491231002X";

fn server(dir: &std::path::Path, token: &str) -> Server {
    start_configured(dir, token, &config_with(FAST_BANK))
}

/// A signed PUT as the platform.
fn put(p: &Client, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let (t, nonce, text) = (now(), fresh_nonce(), body.to_string());
    let request = ureq::put(&format!("{}{path}", p.server.base))
        .set("X-Platform-Id", &p.platform)
        .set("X-Timestamp", &t.to_string())
        .set("X-Nonce", &nonce)
        .set("X-Signature", &sign(&p.secret, "PUT", path, t, &nonce, text.as_bytes()))
        .set("Content-Type", "application/json");
    let response = answer(request.send_string(&text), path);
    (response.status(), response.into_json().expect("JSON"))
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A member's browser: keeps the session cookie, never follows redirects.
struct Browser {
    base: String,
    agent: ureq::Agent,
    cookie: Option<String>,
}

impl Browser {
    fn new(base: &str) -> Browser {
        Browser { base: base.to_string(), agent: ureq::AgentBuilder::new().redirects(0).build(), cookie: None }
    }

    fn keep(&mut self, response: &ureq::Response) {
        for header in response.all("Set-Cookie") {
            let pair = header.split(';').next().unwrap_or_default();
            if pair.starts_with("h5_session=") {
                assert!(header.contains("HttpOnly") && header.contains("SameSite=Strict"), "{header}");
                self.cookie = Some(pair.to_string());
            }
        }
    }

    /// Opens a URL the server handed out (absolute) or a path.
    fn get(&mut self, url: &str) -> (u16, String) {
        let url = if url.starts_with("http") { url.to_string() } else { format!("{}{url}", self.base) };
        let mut request = self.agent.get(&url).set("Accept-Language", "en-US,en;q=0.9");
        if let Some(cookie) = &self.cookie {
            request = request.set("Cookie", cookie);
        }
        let response = answer(request.call(), &url);
        self.keep(&response);
        (response.status(), response.into_string().expect("text"))
    }

    /// Posts the wallet's payment password form (`password` twice), with the member's id number
    /// and phone when given: the page it answers.
    fn set_password(&mut self, csrf: &str, account: &str, password: &str, identity: Option<(&str, &str)>) -> String {
        let mut fields = vec![("csrf", csrf), ("account", account), ("password", password), ("repeat", password)];
        if let Some((id_number, phone)) = identity {
            fields.extend([("id_number", id_number), ("phone", phone)]);
        }
        self.post("/h5/wallet/password", &fields).1
    }

    /// Opens a link as a member does: its page, then the page's button (a POST to the link).
    fn open_link(&mut self, url: &str) -> (u16, String) {
        let (status, page) = self.get(url);
        if status != 200 {
            return (status, page);
        }
        let path = url.strip_prefix(&self.base).unwrap_or(url).to_string();
        self.post(&path, &[])
    }

    fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let mut request = self.agent.post(&format!("{}{path}", self.base));
        if let Some(cookie) = &self.cookie {
            request = request.set("Cookie", cookie);
        }
        let response = answer(request.send_form(fields), path);
        self.keep(&response);
        (response.status(), response.into_string().expect("text"))
    }
}

/// The value of the form field `name` on a page (maud writes `name="..." value="..."`).
fn field(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker).unwrap_or_else(|| panic!("no field {name} in {page}")) + marker.len();
    page[start..start + page[start..].find('"').expect("closing quote")].to_string()
}

/// The text of the element with id `id` (no nested elements).
fn by_id(page: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\"");
    let at = page.find(&marker).unwrap_or_else(|| panic!("no #{id} in {page}"));
    let start = at + page[at..].find('>').expect("tag end") + 1;
    page[start..start + page[start..].find('<').expect("next tag")].to_string()
}

/// Asks for a link and opens it in a new browser: the browser holds the session.
fn open(p: &Client, body: serde_json::Value) -> Browser {
    let (status, _, link) = p.post("/v1/h5/sessions", &body);
    assert_eq!(status, 201, "{link}");
    let mut browser = Browser::new(&p.server.base);
    let (status, page) = browser.open_link(link["url"].as_str().unwrap());
    assert_eq!(status, 200, "{page}");
    assert!(browser.cookie.is_some());
    browser
}

#[test]
fn agreements_are_published_signed_listed_shown_and_required() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "h5-token-1-0123456789abcdef0123456789abcdef";
    let server = server(dir.path(), token);
    let p = Client::create(&server, token, "{\"name\": \"Shop\"}");
    let other = Client::create(&server, token, "{\"name\": \"Other\"}");
    let opening = "账户开立协议 v1\nThe member agrees to open a virtual account.";
    let (status, _, v1) = p.post("/v1/agreement-templates", &json!({"out_order_no": "t-1", "code": "account_opening", "title": "开户协议", "text": opening}));
    assert_eq!((status, v1["version"].as_u64()), (201, Some(1)), "{v1}");
    assert_eq!(v1["sha256"], sha256_hex(opening));
    let replay = p.post("/v1/agreement-templates", &json!({"out_order_no": "t-1", "code": "account_opening", "title": "开户协议", "text": opening}));
    assert_eq!((replay.0, replay.1, replay.2["version"].as_u64()), (201, true, Some(1)));
    assert_eq!(
        error_of(&p.post("/v1/agreement-templates", &json!({"out_order_no": "t-1", "code": "account_opening", "title": "x", "text": "y"}))),
        (409, Some("idempotency_conflict"))
    );
    assert_eq!(
        error_of(&p.post("/v1/agreement-templates", &json!({"out_order_no": "t-x", "code": "Bad Code", "title": "x", "text": "y"}))),
        (400, Some("invalid_request"))
    );
    let card_text = "Card binding terms v1";
    assert_eq!(p.post("/v1/agreement-templates", &json!({"out_order_no": "t-2", "code": "card_binding", "title": "Card", "text": card_text})).0, 201);
    let (status, listed) = p.get("/v1/agreement-templates");
    assert_eq!((status, listed["templates"].as_array().map(Vec::len)), (200, Some(2)), "{listed}");
    assert!(listed["templates"][0].get("text").is_none(), "the list leaves texts out");
    assert_eq!(other.get("/v1/agreement-templates").1["templates"].as_array().map(Vec::len), Some(0), "another platform's are not listed");
    let (status, shown) = p.get("/v1/agreement-templates/account_opening/versions/1");
    assert_eq!((status, shown["text"].as_str()), (200, Some(opening)));
    assert_eq!(p.get("/v1/agreement-templates/account_opening/versions/2").0, 404);

    assert_eq!(put(&p, "/v1/agreement-requirements", &json!({"open_account": ["nothing_like_it"]})).0, 404, "only published codes");
    let (status, required) = put(&p, "/v1/agreement-requirements", &json!({"open_account": ["account_opening"], "bind_card": ["card_binding"]}));
    assert_eq!(status, 200, "{required}");
    assert_eq!(p.get("/v1/agreement-requirements").1, json!({"open_account": ["account_opening"], "bind_card": ["card_binding"]}));

    let member = p.member("m-1", "Zhang San");
    let open_body = json!({"out_order_no": "acct-1", "member_id": member, "currency": "CNY"});
    let refused = p.post("/v1/accounts", &open_body);
    assert_eq!((error_of(&refused), refused.2["error"]["param"].as_str()), ((422, Some("agreement_required")), Some("account_opening")), "{}", refused.2);
    assert_eq!(error_of(&p.post(&format!("/v1/members/{member}/agreements"), &json!({"out_order_no": "s-0", "code": "account_opening", "version": 2}))).0, 404);
    assert_eq!(other.post(&format!("/v1/members/{member}/agreements"), &json!({"out_order_no": "s-0", "code": "account_opening", "version": 1})).0, 404);
    let (status, replayed, signature) =
        p.post(&format!("/v1/members/{member}/agreements"), &json!({"out_order_no": "s-1", "code": "account_opening", "version": 1}));
    assert_eq!((status, replayed), (201, false), "{signature}");
    assert_eq!(
        (signature["sha256"].as_str(), signature["channel"].as_str(), signature["client_address"].as_str()),
        (Some(sha256_hex(opening).as_str()), Some("api"), Some("127.0.0.1"))
    );
    assert!(p.post(&format!("/v1/members/{member}/agreements"), &json!({"out_order_no": "s-1", "code": "account_opening", "version": 1})).1, "a replay");
    let (status, _, account) = p.post("/v1/accounts", &open_body);
    assert_eq!(status, 201, "{account}");
    let account = account["account_id"].as_str().unwrap().to_string();

    let bind = json!({"out_order_no": "card-1", "card_no": "4111111111111111", "holder_name": "Zhang San", "id_number": ID_NUMBER, "phone": "13800138000"});
    let refused = p.post(&format!("/v1/accounts/{account}/cards"), &bind);
    assert_eq!((error_of(&refused), refused.2["error"]["param"].as_str()), ((422, Some("agreement_required")), Some("card_binding")));
    assert_eq!(p.post(&format!("/v1/members/{member}/agreements"), &json!({"out_order_no": "s-2", "code": "card_binding", "version": 1})).0, 201);
    assert_eq!(p.post(&format!("/v1/accounts/{account}/cards"), &bind).0, 201);

    let (status, signatures) = p.get(&format!("/v1/members/{member}/agreements"));
    assert_eq!((status, signatures["agreements"].as_array().map(Vec::len)), (200, Some(2)), "{signatures}");
    let id = signatures["agreements"][0]["signature_id"].as_str().unwrap();
    let (status, shown) = p.get(&format!("/v1/members/{member}/agreements/{id}"));
    assert_eq!((status, shown["text"].as_str(), shown["version"].as_u64()), (200, Some(opening), Some(1)), "{shown}");
    assert_eq!(shown["sha256"].as_str(), Some(sha256_hex(shown["text"].as_str().unwrap()).as_str()), "the hash is of the text as signed");

    // A new version must be signed again before the next opening; the old signature still shows v1.
    assert_eq!(
        p.post("/v1/agreement-templates", &json!({"out_order_no": "t-3", "code": "account_opening", "title": "开户协议", "text": "v2"})).2["version"],
        2
    );
    let second = p.member("m-2", "Li Si");
    p.post(&format!("/v1/members/{second}/agreements"), &json!({"out_order_no": "s-3", "code": "account_opening", "version": 1}));
    let refused = p.post("/v1/accounts", &json!({"out_order_no": "acct-2", "member_id": second, "currency": "CNY"}));
    assert_eq!(error_of(&refused), (422, Some("agreement_required")));
    assert_eq!(p.get(&format!("/v1/members/{member}/agreements/{id}")).1["text"].as_str(), Some(opening));
    assert_eq!(other.get(&format!("/v1/members/{member}/agreements/{id}")).0, 404);
    server.stop();
}

#[test]
fn an_h5_link_expires_opens_once_and_is_bound_to_its_member_and_purpose() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "h5-token-2-0123456789abcdef0123456789abcdef";
    let server = server(dir.path(), token);
    let p = Client::create(&server, token, "{\"name\": \"Shop\"}");
    let other = Client::create(&server, token, "{\"name\": \"Other\"}");
    let (a, b) = (p.member("m-a", "Zhang San"), p.member("m-b", "Li Si"));
    let (account_a, account_b) = (p.account(&a), p.account(&b));

    assert_eq!(error_of(&p.post("/v1/h5/sessions", &json!({"member_id": a, "purpose": "wallet", "account_id": account_b}))), (404, Some("not_found")));
    assert_eq!(error_of(&other.post("/v1/h5/sessions", &json!({"member_id": a, "purpose": "wallet"}))), (404, Some("not_found")));
    assert_eq!(error_of(&p.post("/v1/h5/sessions", &json!({"member_id": a, "purpose": "cashier"}))), (400, Some("invalid_request")));
    assert_eq!(
        error_of(&p.post("/v1/h5/sessions", &json!({"member_id": a, "purpose": "wallet", "return_url": "javascript:alert(1)"}))),
        (400, Some("invalid_request"))
    );
    assert_eq!(error_of(&p.post("/v1/h5/sessions", &json!({"member_id": a, "purpose": "wallet", "expires_in_seconds": 301}))), (400, Some("invalid_request")));

    let (status, _, short) = p.post("/v1/h5/sessions", &json!({"member_id": a, "purpose": "wallet", "expires_in_seconds": 1}));
    assert_eq!(status, 201, "{short}");
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    let mut late = Browser::new(&server.base);
    let (status, page) = late.get(short["url"].as_str().unwrap());
    assert_eq!((status, late.cookie.is_none()), (404, true), "an expired link: {page}");
    assert!(page.contains("link_invalid"), "{page}");

    let (status, _, link) = p.post("/v1/h5/sessions", &json!({"member_id": a, "purpose": "wallet", "return_url": "https://shop.example/back"}));
    assert_eq!(status, 201, "{link}");
    let url = link["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/h5/s/", server.base)) && url.len() == server.base.len() + 6 + 64, "{url}");
    // Fetching the link (what a chat app's preview does) shows a button and uses nothing up.
    let mut preview = Browser::new(&server.base);
    for _ in 0..2 {
        let (status, page) = preview.get(url);
        assert_eq!((status, preview.cookie.is_none()), (200, true), "{page}");
        assert!(page.contains(&format!("<form method=\"post\" action=\"{}\"", &url[server.base.len()..])), "{page}");
    }
    // Another site's form posting the link is refused (login CSRF), and uses nothing up.
    let cross = answer(ureq::post(url).set("Sec-Fetch-Site", "cross-site").call(), "a cross-site post");
    assert_eq!((cross.status(), cross.header("Set-Cookie").is_none()), (403, true));
    let mut browser = Browser::new(&server.base);
    let (status, page) = browser.open_link(url);
    assert_eq!(status, 200);
    assert!(page.contains("url=/h5/wallet") && !page.contains(&url[url.len() - 64..]), "on to the wallet, the token gone: {page}");
    assert_eq!(Browser::new(&server.base).get(url).0, 404, "a link opens once");

    let (status, wallet) = browser.get("/h5/wallet");
    assert_eq!(status, 200, "{wallet}");
    assert!(wallet.contains(&account_a) && !wallet.contains(&account_b), "{wallet}");
    assert!(wallet.contains("https://shop.example/back"));
    assert_eq!(browser.get(&format!("/h5/wallet?account={account_b}")).0, 404, "another member's account");
    assert_eq!(browser.get(&format!("/h5/wallet/recharge?account={account_b}")).0, 404);
    assert_eq!(browser.get("/h5/cashier").0, 403, "a wallet session opens no cashier");
    assert_eq!(Browser::new(&server.base).get("/h5/wallet").0, 401, "no cookie, no wallet");
    let mut forged = Browser::new(&server.base);
    forged.cookie = Some(format!("h5_session={}", "ab".repeat(32)));
    assert_eq!(forged.get("/h5/wallet").0, 401);

    // A suspended platform's member pages refuse, as its signed requests and portals do (before
    // session 58 its links and sessions went on moving money).
    let (status, _, spare) = p.post("/v1/h5/sessions", &json!({"member_id": a, "purpose": "wallet"}));
    assert_eq!(status, 201, "{spare}");
    let mut admin = support::portal::Person::new(&server);
    assert_eq!(admin.login("admin", &support::portal::first_password(&server)).status, 303);
    let set = |admin: &mut support::portal::Person, verb: &str| {
        let csrf = admin.csrf();
        let page = admin.post(&format!("/portal/system/platforms/{}/{verb}", p.platform), &[("csrf", &csrf)]);
        assert_eq!(page.status, 200, "{}", page.body);
    };
    set(&mut admin, "suspend");
    let (status, page) = browser.get("/h5/wallet");
    assert!(status == 403 && page.contains("platform_suspended"), "{status} {page}");
    let (status, page) = browser.post("/h5/wallet/recharge", &[("csrf", "x"), ("amount", "1.00")]);
    assert!(status == 403 && page.contains("platform_suspended"), "{status} {page}");
    assert_eq!(Browser::new(&server.base).get(spare["url"].as_str().unwrap()).0, 403, "a link of a suspended platform does not open");
    let spare_path = spare["url"].as_str().unwrap()[server.base.len()..].to_string();
    assert_eq!(Browser::new(&server.base).post(&spare_path, &[]).0, 403, "nor does its button");
    set(&mut admin, "resume");
    assert_eq!(browser.get("/h5/wallet").0, 200, "resumed, the session goes on");
    assert_eq!(Browser::new(&server.base).open_link(spare["url"].as_str().unwrap()).0, 200, "the link refused while suspended was kept");
    server.stop();
}

#[test]
fn the_cashier_pays_with_the_right_password_and_wrong_ones_count_down_and_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "h5-token-3-0123456789abcdef0123456789abcdef";
    let server = server(dir.path(), token);
    // The platform does not require passwords over the API: the cashier asks for one anyway.
    let p = Client::create(&server, token, "{\"name\": \"Shop\"}");
    let (payer, payee) = (p.account(&p.member("m-a", "Zhang San")), p.account(&p.member("m-b", "Li Si")));
    p.fund(&payer, "100.00", "r-1");
    assert_eq!(p.post(&format!("/v1/accounts/{payer}/password"), &json!({"password": "123456"})).0, 200);
    let member = p.get(&format!("/v1/accounts/{payer}")).1["member_id"].as_str().unwrap().to_string();
    let payment = |number: &str| {
        json!({"out_order_no": number, "payer_account_id": payer, "mode": "balance", "amount": "10.00", "currency": "CNY",
            "payees": [{"account_id": payee, "amount": "10.00"}], "description": "Coffee <b>beans</b>"})
    };
    let payee_member = p.get(&format!("/v1/accounts/{payee}")).1["member_id"].as_str().unwrap().to_string();
    assert_eq!(
        error_of(&p.post("/v1/h5/sessions", &json!({"member_id": payee_member, "purpose": "cashier", "payment": payment("x")}))).0,
        404,
        "the payer is not this member's"
    );
    let mut refused = payment("x");
    refused["amount"] = json!("10.001");
    assert_eq!(error_of(&p.post("/v1/h5/sessions", &json!({"member_id": member, "purpose": "cashier", "payment": refused}))).0, 400, "checked when asked");

    let mut browser = open(&p, json!({"member_id": member, "purpose": "cashier", "payment": payment("pay-1"), "locale": "en"}));
    let (status, page) = browser.get("/h5/cashier");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("10.00 CNY") && page.contains("Zhang San") && page.contains("Li Si") && page.contains(&payee), "{page}");
    assert!(page.contains("Coffee &lt;b&gt;beans&lt;/b&gt;") && !page.contains("<b>beans"), "escaped: {page}");
    let csrf = field(&page, "csrf");
    assert_eq!(browser.get("/h5/wallet").0, 403, "a cashier session opens no wallet");

    let (status, refused) = browser.post("/h5/cashier", &[("password", "123456")]);
    assert_eq!(status, 403, "no CSRF token: {refused}");
    // A form is a few hundred bytes: one past 16 KiB is refused (its session's page, 413).
    let padding = "x".repeat(16 * 1024);
    let (status, too_large) = browser.post("/h5/cashier", &[("password", "123456"), ("csrf", &csrf), ("pad", &padding)]);
    assert_eq!(status, 413, "{too_large}");
    assert!(refused.contains("csrf_failed"));
    assert_eq!(browser.post("/h5/cashier", &[("password", "123456"), ("csrf", "00")]).0, 403);
    assert_eq!(p.balances(&payer).0, "100.00", "nothing paid without the token");

    let (status, wrong) = browser.post("/h5/cashier", &[("password", "000000"), ("csrf", &csrf)]);
    assert_eq!(status, 200);
    assert!(wrong.contains("invalid_payment_password"), "{wrong}");
    assert_eq!(by_id(&wrong, "tries-left"), "4");
    let (_, paid) = browser.post("/h5/cashier", &[("password", "123456"), ("csrf", &csrf)]);
    let order = by_id(&paid, "order-id");
    assert!(order.starts_with("ord_"), "{paid}");
    assert_eq!((p.balances(&payer).0, p.balances(&payee).0), ("90.00".to_string(), "10.00".to_string()));
    let (_, again) = browser.post("/h5/cashier", &[("password", "123456"), ("csrf", &csrf)]);
    assert_eq!(by_id(&again, "order-id"), order, "a second submission is the same order");
    assert_eq!(p.balances(&payer).0, "90.00");
    assert_eq!(p.get("/v1/orders?out_order_no=pay-1").1["orders"][0]["order_id"].as_str(), Some(order.as_str()));

    // A payment the payer's funds cannot cover is not submitted (the ledger would keep its
    // refusal with the session's number, journal format 5): the member tops up and pays in the
    // same session.
    let mut large = payment("pay-large");
    (large["amount"], large["payees"][0]["amount"]) = (json!("200.00"), json!("200.00"));
    let mut short = open(&p, json!({"member_id": member, "purpose": "cashier", "payment": large, "locale": "en"}));
    let csrf = field(&short.get("/h5/cashier").1, "csrf");
    let (_, refused) = short.post("/h5/cashier", &[("password", "123456"), ("csrf", &csrf)]);
    assert!(refused.contains("insufficient_funds"), "{refused}");
    p.fund(&payer, "200.00", "r-2");
    let (_, paid) = short.post("/h5/cashier", &[("password", "123456"), ("csrf", &csrf)]);
    assert!(by_id(&paid, "order-id").starts_with("ord_"), "paid once the funds are there: {paid}");
    assert_eq!(p.balances(&payer).0, "90.00");

    let mut second = open(&p, json!({"member_id": member, "purpose": "cashier", "payment": payment("pay-2"), "locale": "en"}));
    let csrf = field(&second.get("/h5/cashier").1, "csrf");
    for left in ["4", "3", "2", "1"] {
        let (_, page) = second.post("/h5/cashier", &[("password", "111111"), ("csrf", &csrf)]);
        assert_eq!(by_id(&page, "tries-left"), left, "{page}");
    }
    let (_, locked) = second.post("/h5/cashier", &[("password", "111111"), ("csrf", &csrf)]);
    assert!(locked.contains("payment_locked") && !locked.contains("id=\"pay\""), "{locked}");
    let (_, still) = second.post("/h5/cashier", &[("password", "123456"), ("csrf", &csrf)]);
    assert!(still.contains("payment_locked"), "locked even for the right one: {still}");
    assert_eq!(p.balances(&payer).0, "90.00");
    server.stop();
}

#[test]
fn the_wallet_recharges_binds_a_card_withdraws_sets_a_password_and_signs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "h5-token-4-0123456789abcdef0123456789abcdef";
    let server = server(dir.path(), token);
    let p = Client::create(&server, token, "{\"name\": \"Shop\"}");
    let member = p.member("m-a", "Zhang San");
    let account = p.account(&member);
    let mut browser = open(&p, json!({"member_id": member, "purpose": "wallet", "locale": "en"}));

    // Recharge: the form's order number makes a second submission the same order.
    let form = browser.get("/h5/wallet/recharge").1;
    let (csrf, order_no) = (field(&form, "csrf"), field(&form, "order"));
    let fields = [("csrf", csrf.as_str()), ("account", account.as_str()), ("order", order_no.as_str()), ("amount", "100.00")];
    let (status, page) = browser.post("/h5/wallet/recharge", &fields);
    assert_eq!(status, 200, "{page}");
    let order = by_id(&page, "order-id");
    assert_eq!(by_id(&browser.post("/h5/wallet/recharge", &fields).1, "order-id"), order);
    p.wait_order(&order, "succeeded");
    let home = browser.get("/h5/wallet").1;
    assert_eq!(by_id(&home, "available"), "100.00", "{home}");
    assert_eq!(by_id(&home, "holder"), "Z**** S**", "whose wallet it is, masked");
    assert_eq!(by_id(&browser.get("/h5/wallet/recharge").1, "holder"), "Z**** S**");
    assert!(home.contains("recharge"), "the entry is listed: {home}");
    let bad =
        browser.post("/h5/wallet/recharge", &[("csrf", &csrf), ("account", &account), ("order", &format!("h5r-{}", "2".repeat(24))), ("amount", "1.001")]).1;
    assert!(bad.contains("invalid_amount"), "{bad}");
    // The member's order numbers are its own: a number the platform's back end may use is refused.
    let (_, made) = p.get(&format!("/v1/orders/{order}"));
    assert_eq!(made["out_order_no"].as_str(), Some(format!("u{}-{order_no}", member.trim_start_matches("mem_")).as_str()), "{made}");
    for taken in ["pay-1", "h5r-2", &format!("h5r-{}", "G".repeat(24))] {
        let (status, page) = browser.post("/h5/wallet/recharge", &[("csrf", &csrf), ("account", &account), ("order", taken), ("amount", "1.00")]);
        assert!(status == 400 && page.contains("invalid_request"), "{taken}: {status} {page}");
    }

    // A card through the pages: the four elements and the payment password (set first, with the
    // member's id number and phone), then the micro-deposit the member reads.
    let form = browser.get("/h5/wallet/card").1;
    let card_fields = |order: &str, password: &str| {
        vec![
            ("csrf", csrf.clone()),
            ("account", account.clone()),
            ("order", order.to_string()),
            ("card_no", "4111 1111 1111 1111".to_string()),
            ("holder_name", "Zhang San".to_string()),
            ("id_number", ID_NUMBER.to_string()),
            ("phone", "13800138000".to_string()),
            ("password", password.to_string()),
        ]
    };
    let bind = |browser: &mut Browser, password: &str| {
        let bound: Vec<(&str, String)> = card_fields(&field(&form, "order"), password);
        let pairs: Vec<(&str, &str)> = bound.iter().map(|(k, v)| (*k, v.as_str())).collect();
        browser.post("/h5/wallet/card/bind", &pairs)
    };
    let (status, page) = bind(&mut browser, "123456");
    assert!(status == 200 && page.contains("payment_password_not_set") && page.contains("/h5/wallet/password") && !page.contains("card_1"), "{page}");
    // Whoever holds the session does not set the first password alone (before session 59 it
    // could, then bind its card and withdraw): the id number and phone are asked.
    let refused = browser.set_password(&csrf, &account, "123456", None);
    assert!(refused.contains("The ID number or phone is not right") && refused.contains("needs your ID number and phone"), "{refused}");
    let set = browser.set_password(&csrf, &account, "123456", Some((ID_NUMBER, "13800138000")));
    assert!(set.contains("The payment password is set"), "{set}");
    // A card number that cannot be is refused before the password is hashed (helper 131#2: a
    // flood of such forms queued every password check of the platform): no wrong try counted.
    let bad: Vec<(&str, String)> = card_fields(&field(&form, "order"), "000000")
        .into_iter()
        .map(|(k, v)| if k == "card_no" { (k, "4111111111111112".to_string()) } else { (k, v) })
        .collect();
    let pairs: Vec<(&str, &str)> = bad.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let page = browser.post("/h5/wallet/card/bind", &pairs).1;
    assert!(page.contains("invalid_card_no") && !page.contains("invalid_payment_password"), "{page}");
    let (status, page) = bind(&mut browser, "000000");
    assert!(status == 200 && page.contains("invalid_payment_password") && !page.contains("card_1"), "a wrong password binds nothing: {page}");
    let (status, page) = bind(&mut browser, "123456");
    assert!(status == 200 && page.contains("card_1"), "{page}");
    let deposit = micro_deposit(&server, "4111111111111111");
    let verified = browser.post("/h5/wallet/card/verify", &[("csrf", &csrf), ("account", &account), ("card", "card_1"), ("amount", &deposit)]).1;
    assert!(verified.contains("The card is verified"), "{verified}");

    // Withdraw: the expected channel and fee first, then the order with the payment password.
    let form = browser.get("/h5/wallet/withdraw").1;
    assert!(form.contains("4111****1111"), "{form}");
    let quote = browser
        .post(
            "/h5/wallet/withdraw",
            &[("csrf", &csrf), ("account", &account), ("step", "quote"), ("amount", "10.00"), ("card", "card_1"), ("arrival", "standard")],
        )
        .1;
    let (channel, fee) = (by_id(&quote, "quote-channel"), by_id(&quote, "quote-fee"));
    assert_eq!(by_id(&quote, "quote-amount"), "10.00 CNY", "{quote}");
    let order_no = field(&quote, "order");
    let confirm = [
        ("csrf", csrf.as_str()),
        ("account", account.as_str()),
        ("step", "confirm"),
        ("order", order_no.as_str()),
        ("amount", "10.00"),
        ("card", "card_1"),
        ("arrival", "standard"),
        ("password", "123456"),
    ];
    let mut wrong = confirm;
    wrong[7].1 = "000000";
    let refused = browser.post("/h5/wallet/withdraw", &wrong).1;
    assert!(refused.contains("invalid_payment_password") && !refused.contains("order-id"), "a wrong password withdraws nothing: {refused}");
    let done = browser.post("/h5/wallet/withdraw", &confirm).1;
    assert_eq!((by_id(&done, "channel"), by_id(&done, "fee")), (channel, fee), "{done}");
    let withdrawal = by_id(&done, "order-id");
    assert_eq!(by_id(&browser.post("/h5/wallet/withdraw", &confirm).1, "order-id"), withdrawal, "submitted twice, one order");
    p.wait_order(&withdrawal, "succeeded");
    assert_eq!(cents(&p.balances(&account).0), 10_000 - 1_000 - cents(&by_id(&done, "fee")), "the amount and the fee shown");

    // The payment password (set above): reset only with the id number and phone.
    assert!(browser.set_password(&csrf, &account, "654321", Some((ID_NUMBER, "13900000000"))).contains("The ID number or phone is not right"));
    assert!(browser.set_password(&csrf, &account, "654321", Some((ID_NUMBER, "13800138000"))).contains("The payment password is set"));

    // An agreement signed in the page records the hash of the text the page showed.
    let text = "服务协议\n<script>alert(1)</script> & more";
    p.post("/v1/agreement-templates", &json!({"out_order_no": "t-1", "code": "service", "title": "Service", "text": text}));
    let page = browser.get("/h5/agreement?code=service&version=1").1;
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; more") && !page.contains("<script>"), "{page}");
    let shown = field(&page, "sha256");
    assert_eq!(shown, sha256_hex(text));
    let tampered = browser.post("/h5/agreement", &[("csrf", &csrf), ("code", "service"), ("version", "1"), ("sha256", &sha256_hex("other"))]).1;
    assert!(tampered.contains("agreement_changed"), "{tampered}");
    let signed = browser.post("/h5/agreement", &[("csrf", &csrf), ("code", "service"), ("version", "1"), ("sha256", &shown)]).1;
    assert!(signed.contains("Signed."), "{signed}");
    let listed = p.get(&format!("/v1/members/{member}/agreements")).1;
    assert_eq!((listed["agreements"][0]["channel"].as_str(), listed["agreements"][0]["sha256"].as_str()), (Some("h5"), Some(shown.as_str())));

    // Closing needs zero balances.
    let form = browser.get("/h5/wallet/close").1;
    let refused = browser.post("/h5/wallet/close", &[("csrf", &csrf), ("account", &account), ("order", &field(&form, "order"))]).1;
    assert!(refused.contains("code: <span class=\"code\">"), "{refused}");
    assert_eq!(p.get(&format!("/v1/accounts/{account}")).1["status"], "normal");
    server.stop();
}

#[test]
fn an_agreement_session_signs_only_its_version_in_chinese() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "h5-token-5-0123456789abcdef0123456789abcdef";
    let server = server(dir.path(), token);
    let p = Client::create(&server, token, "{\"name\": \"Shop\"}");
    let member = p.member("m-a", "Zhang San");
    p.post("/v1/agreement-templates", &json!({"out_order_no": "t-1", "code": "service", "title": "服务协议", "text": "第一版"}));
    p.post("/v1/agreement-templates", &json!({"out_order_no": "t-2", "code": "service", "title": "服务协议", "text": "第二版"}));
    assert_eq!(
        error_of(&p.post("/v1/h5/sessions", &json!({"member_id": member, "purpose": "agreement", "agreement": {"code": "service", "version": 3}}))).0,
        404
    );
    let mut browser = open(&p, json!({"member_id": member, "purpose": "agreement", "agreement": {"code": "service", "version": 2}, "locale": "zh-CN"}));
    let page = browser.get("/h5/agreement?code=service&version=1").1;
    assert!(page.contains("第二版") && !page.contains("第一版") && page.contains("同意并签署") && page.contains("lang=\"zh-CN\""), "{page}");
    let (csrf, sha) = (field(&page, "csrf"), field(&page, "sha256"));
    assert_eq!(browser.post("/h5/agreement", &[("csrf", &csrf), ("code", "service"), ("version", "1"), ("sha256", &sha256_hex("第一版"))]).0, 403);
    assert!(browser.post("/h5/agreement", &[("csrf", &csrf), ("code", "service"), ("version", "2"), ("sha256", &sha)]).1.contains("签署成功"));
    assert_eq!(browser.get("/h5/wallet").0, 403);
    let listed = p.get(&format!("/v1/members/{member}/agreements")).1;
    assert_eq!(listed["agreements"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed["agreements"][0]["version"], 2);
    server.stop();
}

#[test]
fn a_member_pays_at_the_cashier_in_chromium() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "h5-token-6-0123456789abcdef0123456789abcdef";
    let server = server(dir.path(), token);
    let p = Client::create(&server, token, "{\"name\": \"Shop\"}");
    let (payer, payee) = (p.account(&p.member("m-a", "Zhang San")), p.account(&p.member("m-b", "Li Si")));
    p.fund(&payer, "100.00", "r-1");
    assert_eq!(p.post(&format!("/v1/accounts/{payer}/password"), &json!({"password": "123456"})).0, 200);
    let member = p.get(&format!("/v1/accounts/{payer}")).1["member_id"].as_str().unwrap().to_string();
    let payment = json!({"out_order_no": "pay-chromium", "payer_account_id": payer, "mode": "balance", "amount": "25.00", "currency": "CNY",
        "payees": [{"account_id": payee, "amount": "25.00"}], "description": "Order 1024: two coffees"});
    // English: the machine's chromium has no CJK fonts, so a Chinese screenshot would show boxes.
    let (status, _, link) = p.post(
        "/v1/h5/sessions",
        &json!({"member_id": member, "purpose": "cashier", "payment": payment, "locale": "en", "return_url": "https://shop.example/orders/1024"}),
    );
    assert_eq!(status, 201, "{link}");
    let url = link["url"].as_str().unwrap();

    let chromium = support::browser::Browser::start_mobile();
    chromium.goto(url);
    chromium.click("form button[type=submit]");
    chromium.wait_for("input#password");
    let address = chromium.current_url();
    assert!(address.ends_with("/h5/cashier") && !address.contains(&url[url.len() - 64..]), "the token left the address bar: {address}");
    let cookie = chromium.cookies_in_full().into_iter().find(|c| c.name() == "h5_session").expect("the session cookie");
    assert_eq!((cookie.http_only(), format!("{:?}", cookie.same_site())), (Some(true), "Some(Strict)".to_string()));
    assert!(chromium.text_of("p.amount").contains("25.00 CNY"));
    assert!(chromium.text_of("main").contains("Order 1024: two coffees"));
    chromium.screenshot("h5-cashier");

    chromium.fill("input#password", "000000");
    chromium.submit("form");
    assert_eq!(chromium.wait_for_text("#tries-left", "4"), "4");
    assert!(chromium.text_of(".notice.error").contains("Wrong payment password"));
    chromium.fill("input#password", "123456");
    chromium.submit("form");
    let order = chromium.wait_for_text("#order-id", "ord_");
    chromium.screenshot("h5-cashier-paid");
    assert_eq!(p.get("/v1/orders?out_order_no=pay-chromium").1["orders"][0]["order_id"].as_str(), Some(order.as_str()));
    assert_eq!((p.balances(&payer).0, p.balances(&payee).0), ("75.00".to_string(), "25.00".to_string()));
    // The same link does not open a second time, even in the same browser.
    chromium.goto(url);
    assert!(chromium.wait_for_text("main", "link_invalid").contains("link_invalid"));
    drop(chromium);
    server.stop();
}

/// `[portal] secure_cookies` marks the members' H5 session cookie `Secure` as it does the
/// operators' (before session 58 the H5 cookie never was).
#[test]
fn secure_cookies_mark_the_wallets_cookie_and_the_portals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "h5-token-9-0123456789abcdef0123456789abcdef";
    let server = start_configured(dir.path(), token, &config_with(&[("secure_cookies = false", "secure_cookies = true")]));
    let p = Client::create(&server, token, "{\"name\": \"Shop\"}");
    let member = p.member("m-a", "Zhang San");
    let (status, _, link) = p.post("/v1/h5/sessions", &json!({"member_id": member, "purpose": "wallet"}));
    assert_eq!(status, 201, "{link}");
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let opened = answer(agent.post(link["url"].as_str().unwrap()).call(), "link");
    let cookie = opened.all("Set-Cookie").into_iter().find(|c| c.starts_with("h5_session=")).expect("the session cookie").to_string();
    assert!(cookie.contains("; Secure") && cookie.contains("HttpOnly"), "{cookie}");
    let signed_in = answer(
        agent.post(&format!("{}/portal/login", server.base)).send_form(&[("username", "admin"), ("password", &support::portal::first_password(&server))]),
        "login",
    );
    let cookie = signed_in.all("Set-Cookie").into_iter().find(|c| c.starts_with("portal_session=")).expect("the portal's cookie").to_string();
    assert!(cookie.contains("; Secure"), "{cookie}");
    server.stop();
}

/// Wrong identity answers in the wallet are counted: after five, binding a card and resetting the
/// payment password are refused for the day, the right answer too (before session 58 a stolen
/// wallet session could try id numbers without end, then bind its own card and withdraw).
#[test]
fn wrong_identity_answers_lock_card_binding_and_the_password_reset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "h5-token-10-0123456789abcdef0123456789abcdef";
    let server = server(dir.path(), token);
    let p = Client::create(&server, token, "{\"name\": \"Shop\"}");
    let member = p.member("m-a", "Zhang San");
    let account = p.account(&member);
    let mut browser = open(&p, json!({"member_id": member, "purpose": "wallet", "locale": "en"}));
    let csrf = field(&browser.get("/h5/wallet/card").1, "csrf");
    let set = browser.set_password(&csrf, &account, "123456", Some((ID_NUMBER, "13800138000")));
    assert!(set.contains("The payment password is set"), "{set}");
    let mut bind = |id_number: &str| {
        let order = field(&browser.get("/h5/wallet/card").1, "order");
        let fields = [
            ("csrf", csrf.as_str()),
            ("account", account.as_str()),
            ("order", order.as_str()),
            ("card_no", "4111111111111111"),
            ("holder_name", "Zhang San"),
            ("id_number", id_number),
            ("phone", "13800138000"),
            ("password", "123456"),
        ];
        browser.post("/h5/wallet/card/bind", &fields).1
    };
    for n in 5..10 {
        let page = bind(&format!("11010519491231{n:03}X"));
        assert!(page.contains("identity_mismatch"), "{page}");
    }
    let page = bind(ID_NUMBER);
    assert!(page.contains("identity_locked") && !page.contains("card_1"), "{page}");
    let refused = browser.set_password(&csrf, &account, "654321", Some((ID_NUMBER, "13800138000")));
    assert!(refused.contains("identity_locked"), "{refused}");
    server.stop();
}
