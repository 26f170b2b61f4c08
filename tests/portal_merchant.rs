//! The merchant operations portal over HTTP against the real server: a merchant operator (made
//! by the first system operator for an enterprise member the platform made over the signed API)
//! sees its balances, recharges (one order on a double submit), previews a withdrawal (channel,
//! candidates, fee), confirms it, refunds a payment it received and reads its ledgers; another
//! member's accounts and orders are 404.

mod support;

use serde_json::json;
use support::money::{micro_deposit, FAST_BANK};
use support::portal::{first_password, Page, Person};
use support::*;

const TOKEN: &str = "portal-merchant-operator-token-0123456789";
const COMPANY_CARD: &str = "6222020200112233446";
const PASSWORD: &str = "a long enough password";

/// The value of the first input named `name` on a page.
fn field(page: &Page, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = page.body.find(&marker).unwrap_or_else(|| panic!("no field {name}: {}", page.body)) + marker.len();
    page.body[at..].split('"').next().expect("quoted").to_string()
}

/// The first system operator, signed in.
fn admin(server: &Server) -> Person {
    let mut person = Person::new(server);
    let page = person.login("admin", &first_password(server));
    assert_eq!(page.status, 303, "{}", page.body);
    person
}

/// An enterprise member of the platform with a CNY account.
fn company(p: &Client, number: &str) -> (String, String) {
    let body = json!({"out_order_no": number, "type": "enterprise", "name": "Acme Decor", "id_number": "91350100M000100Y43", "phone": "13900139000"});
    let (status, _, member) = p.post("/v1/members", &body);
    assert_eq!(status, 201, "{member}");
    let member = member["member_id"].as_str().unwrap().to_string();
    let account = p.account(&member);
    (member, account)
}

/// A merchant operator for `member`, made by the first system operator, signed in.
fn merchant_operator(server: &Server, admin: &mut Person, username: &str, platform: &str, member: &str) -> Person {
    let csrf = admin.csrf();
    let fields = [
        ("csrf", csrf.as_str()),
        ("username", username),
        ("display_name", username),
        ("kind", "merchant"),
        ("platform", platform),
        ("member", member),
        ("role", "operator"),
        ("role", "viewer"),
        ("password", PASSWORD),
    ];
    let made = admin.post("/portal/operators", &fields);
    assert!(made.body.contains("created"), "{}", made.body);
    let mut person = Person::new(server);
    assert_eq!(person.login(username, PASSWORD).status, 303);
    assert_eq!(person.get("/portal/").location.as_deref(), Some("/portal/merchant"));
    person
}

/// The order id a form's redirect names.
fn order_of(page: &Page) -> String {
    assert_eq!(page.status, 303, "{}", page.body);
    let location = page.location.as_deref().expect("a redirect");
    location.strip_prefix("/portal/merchant/orders/").unwrap_or_else(|| panic!("not an order page: {location}")).to_string()
}

/// Binds and verifies the company's card.
fn company_card(p: &Client, server: &Server, account: &str) -> String {
    let body = json!({"out_order_no": "card", "card_no": COMPANY_CARD, "holder_name": "Acme Decor", "id_number": "91350100M000100Y43", "phone": "13900139000"});
    let (status, _, card) = p.post(&format!("/v1/accounts/{account}/cards"), &body);
    assert_eq!(status, 201, "{card}");
    let card_id = card["card_id"].as_str().unwrap().to_string();
    let deposit = micro_deposit(server, COMPANY_CARD);
    assert_eq!(p.post(&format!("/v1/accounts/{account}/cards/{card_id}/verify"), &json!({"amount": deposit})).0, 200);
    card_id
}

#[test]
fn a_merchant_recharges_withdraws_after_a_preview_refunds_and_reads_its_ledgers() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_configured(dir.path(), TOKEN, &config_with(FAST_BANK));
    let p = Client::create(&server, TOKEN, r#"{"name": "Home Decor"}"#);
    let (member, account) = company(&p, "company");
    let buyer = p.account(&p.member("buyer", "Zhang San"));
    let mut admin = admin(&server);
    // A merchant operator names a member of its platform (helper 126: another platform's was
    // taken): another platform's member is no merchant of this one.
    let other = Client::create(&server, TOKEN, r#"{"name": "Elsewhere"}"#);
    let csrf = admin.csrf();
    let fields = [("csrf", csrf.as_str()), ("username", "stray"), ("display_name", "stray"), ("kind", "merchant"), ("platform", other.platform.as_str())];
    let fields: Vec<(&str, &str)> = fields.into_iter().chain([("member", member.as_str()), ("role", "viewer"), ("password", PASSWORD)]).collect();
    let stray = admin.post("/portal/operators", &fields);
    assert!(stray.body.contains("no such merchant") && !stray.body.contains("Operator stray created"), "{}", stray.body);
    let mut ops = merchant_operator(&server, &mut admin, "acme_ops", &p.platform, &member);

    // The dashboard: the account with its balances.
    let home = ops.get("/portal/merchant");
    assert_eq!(home.status, 200, "{}", home.body);
    assert!(home.body.contains(&account) && home.body.contains("Acme Decor") && home.body.contains("0.00"), "{}", home.body);
    let kyc = ops.get("/portal/merchant/kyc");
    assert!(kyc.body.contains("913***********0Y43") && kyc.body.contains("139****9000") && !kyc.body.contains("91350100M000100Y43"), "{}", kyc.body);

    // Recharge: the form's order number makes a double submit one order.
    let form = ops.get("/portal/merchant/recharge");
    let (csrf, number) = (form.csrf(), field(&form, "out_order_no"));
    let fields = [("csrf", csrf.as_str()), ("out_order_no", number.as_str()), ("account_id", account.as_str()), ("amount", "1000.00")];
    let first = order_of(&ops.post("/portal/merchant/recharge", &fields));
    let second = order_of(&ops.post("/portal/merchant/recharge", &fields));
    assert_eq!(first, second, "a double submit is one order");
    p.wait_order(&first, "succeeded");
    assert_eq!(p.balances(&account), ("1000.00".into(), "1000.00".into(), "0.00".into(), "0.00".into()));
    // The dashboard's charts: the merchant's own orders per day by kind and what it holds.
    let home = ops.get("/portal/merchant");
    assert!(home.body.contains("id=\"merchant-orders-per-day\"") && home.body.contains("id=\"merchant-held-CNY\""), "{}", home.body);
    assert!(home.body.contains("settled 1000.00 CNY") && home.body.contains("escrow 0.00 CNY"), "{}", home.body);
    let shown = ops.get(&format!("/portal/merchant/orders/{first}"));
    assert!(shown.body.contains("recharge") && shown.body.contains("1000.00"), "{}", shown.body);
    let bad = ops.post(
        "/portal/merchant/recharge",
        &[("csrf", &csrf), ("out_order_no", &format!("prc-{}", "0".repeat(24))), ("account_id", &account), ("amount", "1.001")],
    );
    assert!(bad.status == 200 && bad.body.contains("notice error") && bad.body.contains("amount"), "{}", bad.body);
    // The order number is the merchant's own: the platform's numbers are out of its reach.
    let (_, made) = p.get(&format!("/v1/orders/{first}"));
    assert!(made["out_order_no"].as_str().is_some_and(|n| n.starts_with('m') && n.ends_with(&number) && n.len() > number.len()), "{made}");
    for taken in ["pay-1", "prc-0", &format!("prc-{}", "g".repeat(24))] {
        let tampered = ops.post("/portal/merchant/recharge", &[("csrf", &csrf), ("out_order_no", taken), ("account_id", &account), ("amount", "1.00")]);
        assert!(tampered.status == 400 && tampered.body.contains("order number"), "{taken}: {} {}", tampered.status, tampered.body);
    }

    // Withdrawal: the preview names the channel, every candidate and why, the fee and the total.
    let card = company_card(&p, &server, &account);
    let form = ops.get("/portal/merchant/withdraw");
    assert!(form.body.contains(&card), "{}", form.body);
    let preview = ops.post(
        "/portal/merchant/withdraw/preview",
        &[("csrf", &csrf), ("account_id", &account), ("card_id", &card), ("amount", "100.00"), ("arrival", "realtime")],
    );
    assert_eq!(preview.status, 200, "{}", preview.body);
    let body = &preview.body;
    // A company's account: UnionPay serves persons only; IBPS is the cheapest that serves it.
    assert!(body.contains("<dd class=\"channel\">sim_ibps</dd>"), "{body}");
    assert!(body.contains("<dd class=\"fee\">2.02 CNY</dd>") && body.contains("<dd class=\"total\">102.02 CNY</dd>"), "{body}");
    assert!(body.contains("data-channel=\"sim_unionpay\"") && body.contains("account type not served"), "{body}");
    assert!(body.contains("data-channel=\"sim_hvps\"") && body.contains("below order minimum"), "every money-out channel is a candidate: {body}");
    assert!(body.contains("data-channel=\"sim_same_city\"") && body.contains("arrival too slow"), "{body}");
    // The preview took nothing.
    assert_eq!(p.balances(&account).1, "1000.00");
    let (status, report) = support::money::admin_request(&server, "GET", "/admin/channels", TOKEN, None);
    assert_eq!(status, 200);
    let ibps = report["channels"].as_array().unwrap().iter().find(|c| c["name"] == "sim_ibps").unwrap().clone();
    assert_eq!(ibps["used_today"], "0.00", "a preview reserves no cap: {ibps}");
    let confirm: Vec<(&str, String)> = ["csrf", "out_order_no", "account_id", "card_id", "amount", "arrival"]
        .iter()
        .map(|name| (*name, if *name == "csrf" { csrf.clone() } else { field(&preview, name) }))
        .collect();
    let confirm: Vec<(&str, &str)> = confirm.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let withdrawal = order_of(&ops.post("/portal/merchant/withdraw", &confirm));
    assert_eq!(order_of(&ops.post("/portal/merchant/withdraw", &confirm)), withdrawal, "a double confirm is one order");
    let (_, order) = p.get(&format!("/v1/orders/{withdrawal}"));
    assert!(order["status"] == "processing" || order["status"] == "succeeded", "{order}");
    let order = p.wait_order(&withdrawal, "succeeded");
    assert_eq!((order["fee"].as_str(), order["channel"].as_str()), (Some("2.02"), Some("sim_ibps")), "{order}");
    assert_eq!(p.balances(&account).1, "897.98", "amount and fee debited");
    let shown = ops.get(&format!("/portal/merchant/orders/{withdrawal}"));
    assert!(shown.body.contains("sim_ibps") && shown.body.contains("succeeded"), "{}", shown.body);

    // A payment the merchant received, refunded in part from the portal.
    p.fund(&buyer, "500.00", "buyer-fund");
    let pay = json!({"out_order_no": "pay-1", "payer_account_id": buyer, "mode": "balance", "amount": "50.00", "currency": "CNY", "payees": [{"account_id": account, "amount": "50.00"}]});
    let (status, _, payment) = p.post("/v1/payments", &pay);
    assert_eq!(status, 201, "{payment}");
    let payment = payment["order_id"].as_str().unwrap().to_string();
    let received = ops.get("/portal/merchant/refunds");
    assert!(received.body.contains(&payment) && !received.body.contains(&first), "only payments received: {}", received.body);
    let shown = ops.get(&format!("/portal/merchant/orders/{payment}"));
    let refund_number = field(&shown, "out_order_no");
    let refund = order_of(&ops.post(
        &format!("/portal/merchant/orders/{payment}/refund"),
        &[("csrf", &csrf), ("out_order_no", &refund_number), ("payee_account_id", &account), ("amount", "20.00")],
    ));
    let (_, refund_order) = p.get(&format!("/v1/orders/{refund}"));
    assert_eq!(refund_order["kind"], "refund", "{refund_order}");
    let (_, paid) = p.get(&format!("/v1/orders/{payment}"));
    assert_eq!((paid["refunded_amount"].as_str(), paid["status"].as_str()), (Some("20.00"), Some("partially_refunded")), "{paid}");
    let too_much = ops.post(
        &format!("/portal/merchant/orders/{payment}/refund"),
        &[("csrf", &csrf), ("out_order_no", &format!("prf-{}", "1".repeat(24))), ("payee_account_id", &account), ("amount", "40.00")],
    );
    assert!(too_much.status == 200 && too_much.body.contains("notice error"), "{}", too_much.body);

    // Every action is in the audit log, in the merchant's scope.
    let audit = ops.get("/portal/audit");
    for action in ["merchant.recharge", "merchant.withdraw", "merchant.refund"] {
        assert!(audit.body.contains(action), "{action}: {}", audit.body);
    }

    // Ledgers: orders with filters and a CSV export, channel out only, entries, statements.
    let orders = ops.get("/portal/merchant/orders");
    for id in [&first, &withdrawal, &payment, &refund] {
        assert!(orders.body.contains(id.as_str()), "{id}: {}", orders.body);
    }
    let out = ops.get("/portal/merchant/orders?kind=withdrawal");
    assert!(out.body.contains(&withdrawal) && !out.body.contains(&first), "{}", out.body);
    let bad = ops.get("/portal/merchant/orders?kind=bogus");
    assert!(bad.status == 200 && bad.body.contains("notice error") && bad.body.contains("kind"), "{}", bad.body);
    let bad = ops.get("/portal/merchant/orders?from=yesterday");
    assert!(bad.body.contains("notice error") && bad.body.contains("from"), "{}", bad.body);
    let paged = ops.get(&format!("/portal/merchant/orders?account={account}&cursor=1-1"));
    assert_eq!(paged.status, 200);
    let csv = ops.get("/portal/merchant/orders?format=csv");
    assert!(csv.content_type.starts_with("text/csv"), "{}", csv.content_type);
    let mut lines = csv.body.lines();
    assert!(lines.next().unwrap().starts_with("order_id,out_order_no,kind,status,amount"), "{}", csv.body);
    assert_eq!(lines.count(), 4, "recharge, withdrawal, payment, refund: {}", csv.body);
    assert!(!csv.body.contains("buyer-fund"), "not the buyer's orders: {}", csv.body);
    let entries = ops.get(&format!("/portal/merchant/entries?account={account}"));
    assert!(entries.body.contains("ent_") && entries.body.contains(&withdrawal), "{}", entries.body);
    let entries_csv = ops.get(&format!("/portal/merchant/entries?account={account}&format=csv"));
    assert!(entries_csv.content_type.starts_with("text/csv") && entries_csv.body.starts_with("entry_id,"), "{}", entries_csv.body);
    let statement = ops.get("/portal/merchant/statements");
    assert_eq!(statement.status, 200, "{}", statement.body);
    let statement_csv = ops.get(&format!("/portal/merchant/statements?date={}&format=csv", support::money::business_date(0)));
    assert!(statement_csv.content_type.starts_with("text/csv") && statement_csv.body.starts_with("business_date,"), "{}", statement_csv.body);
    assert!(ops.get("/portal/merchant/statements?date=2026-13-01").body.contains("notice error"));
    server.stop();
}

#[test]
fn another_members_accounts_and_orders_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_configured(dir.path(), TOKEN, &config_with(FAST_BANK));
    let p = Client::create(&server, TOKEN, r#"{"name": "Home Decor"}"#);
    let other_platform = Client::create(&server, TOKEN, r#"{"name": "Elsewhere"}"#);
    let (member, account) = company(&p, "company");
    let other = p.account(&p.member("other", "Li Si"));
    let elsewhere = other_platform.account(&other_platform.member("far", "Wang Wu"));
    let other_fund = p.fund(&other, "100.00", "other-fund");
    // A payment between two other members of the same platform.
    let third = p.account(&p.member("third", "Zhao Liu"));
    let pay = json!({"out_order_no": "pay-other", "payer_account_id": other, "mode": "balance", "amount": "10.00", "currency": "CNY", "payees": [{"account_id": third, "amount": "10.00"}]});
    let (status, _, payment) = p.post("/v1/payments", &pay);
    assert_eq!(status, 201, "{payment}");
    let payment = payment["order_id"].as_str().unwrap().to_string();
    let far_fund = other_platform.fund(&elsewhere, "5.00", "far-fund");

    let mut admin = admin(&server);
    assert_eq!(admin.get("/portal/merchant").status, 404, "a system operator is not a merchant");
    let mut ops = merchant_operator(&server, &mut admin, "acme_ops", &p.platform, &member);
    let csrf = ops.csrf();
    for order in [&other_fund, &payment, &far_fund] {
        assert_eq!(ops.get(&format!("/portal/merchant/orders/{order}")).status, 404, "{order}");
    }
    assert_eq!(ops.get(&format!("/portal/merchant/entries?account={other}")).status, 404);
    assert_eq!(ops.get(&format!("/portal/merchant/entries?account={elsewhere}")).status, 404);
    let listing = ops.get(&format!("/portal/merchant/orders?account={other}"));
    assert!(listing.body.contains("notice error") && !listing.body.contains(&other_fund), "{}", listing.body);
    assert!(!ops.get("/portal/merchant/orders").body.contains(&other_fund));
    // Forms naming another member's account or order change nothing.
    let recharge = ops.post("/portal/merchant/recharge", &[("csrf", &csrf), ("out_order_no", "prc-x"), ("account_id", &other), ("amount", "1.00")]);
    assert_eq!(recharge.status, 404);
    let preview = ops.post(
        "/portal/merchant/withdraw/preview",
        &[("csrf", &csrf), ("account_id", &other), ("card_id", "card_1"), ("amount", "1.00"), ("arrival", "standard")],
    );
    assert_eq!(preview.status, 404);
    let withdraw =
        ops.post("/portal/merchant/withdraw", &[("csrf", &csrf), ("out_order_no", "pwd-x"), ("account_id", &other), ("card_id", "card_1"), ("amount", "1.00")]);
    assert_eq!(withdraw.status, 404);
    let refund = ops.post(
        &format!("/portal/merchant/orders/{payment}/refund"),
        &[("csrf", &csrf), ("out_order_no", "prf-x"), ("payee_account_id", &third), ("amount", "1.00")],
    );
    assert_eq!(refund.status, 404);
    // Naming its own account as the payee of someone else's payment is no better.
    let refund = ops.post(
        &format!("/portal/merchant/orders/{payment}/refund"),
        &[("csrf", &csrf), ("out_order_no", "prf-y"), ("payee_account_id", &account), ("amount", "1.00")],
    );
    assert_eq!(refund.status, 404);
    let (_, paid) = p.get(&format!("/v1/orders/{payment}"));
    assert_eq!(paid["refunded_amount"], "0.00", "{paid}");
    assert_eq!(p.balances(&other).0, "90.00");
    // Without the CSRF token nothing happens either.
    let forged = ops.post("/portal/merchant/recharge", &[("out_order_no", "prc-z"), ("account_id", &account), ("amount", "1.00")]);
    assert_eq!(forged.status, 403);
    assert_eq!(p.balances(&account).0, "0.00");
    // A split payment to this merchant and another: its page shows its own leg only, not the
    // other receiver's share nor what that one refunded.
    let split = json!({"out_order_no": "pay-split", "payer_account_id": other, "mode": "balance", "amount": "30.00", "currency": "CNY",
        "payees": [{"account_id": account, "amount": "12.00"}, {"account_id": third, "amount": "18.00"}]});
    let (status, _, split) = p.post("/v1/payments", &split);
    assert_eq!(status, 201, "{split}");
    let split = split["order_id"].as_str().unwrap().to_string();
    let refund = json!({"out_order_no": "rf-third", "payment_order_id": split, "amount": "5.00", "payee_account_id": third});
    assert_eq!(p.post("/v1/refunds", &refund).0, 201);
    let shown = ops.get(&format!("/portal/merchant/orders/{split}"));
    assert_eq!(shown.status, 200);
    assert!(shown.body.contains(&account) && shown.body.contains("12.00"), "{}", shown.body);
    assert!(!shown.body.contains(&third) && !shown.body.contains("18.00") && !shown.body.contains("5.00"), "{}", shown.body);
    let csv = ops.get("/portal/merchant/orders?format=csv");
    let line = csv.body.lines().find(|line| line.starts_with(&split)).unwrap_or_else(|| panic!("{}", csv.body));
    assert!(!line.contains("5.00"), "the export does not say what the other receiver refunded: {line}");
    server.stop();
}

#[test]
fn a_merchant_signs_an_agreement_with_the_hash_of_the_text_shown() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let server = start_configured(dir.path(), TOKEN, &config_with(FAST_BANK));
    let p = Client::create(&server, TOKEN, r#"{"name": "Home Decor"}"#);
    let (member, _) = company(&p, "company");
    let text = "Merchant service agreement <v1>: fees are as published & settled daily.";
    let published = p.post("/v1/agreement-templates", &json!({"out_order_no": "t-1", "code": "service", "title": "Service", "text": text}));
    assert_eq!(published.0, 201, "{}", published.2);
    let mut admin = admin(&server);
    let mut ops = merchant_operator(&server, &mut admin, "acme_ops", &p.platform, &member);
    let kyc = ops.get("/portal/merchant/kyc");
    assert!(kyc.body.contains("Merchant service agreement &lt;v1&gt;: fees are as published &amp; settled daily."), "shown escaped: {}", kyc.body);
    let csrf = kyc.csrf();
    let shown = field(&kyc, "sha256");
    assert_eq!(shown, hex::encode(sha2::Sha256::digest(text.as_bytes())));
    // A text other than the one shown is refused.
    let wrong = ops.post("/portal/merchant/agreements/sign", &[("csrf", &csrf), ("code", "service"), ("version", "1"), ("sha256", &"0".repeat(64))]);
    assert!(wrong.body.contains("notice error") && wrong.body.contains("sha256"), "{}", wrong.body);
    let signed = ops.post("/portal/merchant/agreements/sign", &[("csrf", &csrf), ("code", "service"), ("version", "1"), ("sha256", &shown)]);
    assert_eq!((signed.status, signed.location.as_deref()), (303, Some("/portal/merchant/kyc")), "{}", signed.body);
    let (status, list) = p.get(&format!("/v1/members/{member}/agreements"));
    assert_eq!(status, 200);
    let signature = &list["agreements"][0];
    assert_eq!(
        (signature["channel"].as_str(), signature["sha256"].as_str(), signature["version"].as_u64()),
        (Some("portal"), Some(shown.as_str()), Some(1)),
        "{list}"
    );
    assert_eq!(signature["client_address"], "127.0.0.1");
    let kyc = ops.get("/portal/merchant/kyc");
    assert!(kyc.body.contains("Nothing to sign.") && kyc.body.contains(signature["signature_id"].as_str().unwrap()), "{}", kyc.body);
    assert!(ops.get("/portal/audit").body.contains("merchant.agreement_sign"));

    // Many large agreements: the KYC page shows the first five texts whole and lists the
    // others, each signed on a page of its own with the hash of the text that page shows.
    let large = |n: u32| format!("Agreement {n}: {}", "clause ".repeat(8_000));
    for n in 0..8u32 {
        let published = p.post(
            "/v1/agreement-templates",
            &json!({"out_order_no": format!("big-{n}"), "code": format!("a{n}"), "title": format!("Annex {n}"), "text": large(n)}),
        );
        assert_eq!(published.0, 201, "{}", published.2);
    }
    let kyc = ops.get("/portal/merchant/kyc");
    assert_eq!(kyc.body.matches("<pre class=\"agreement-text\">").count(), 5, "five texts whole");
    assert!(kyc.body.contains("3 more to sign") && kyc.body.contains("href=\"/portal/merchant/agreements/a7\""), "{}", &kyc.body[..2000.min(kyc.body.len())]);
    assert!(kyc.body.len() < 5 * 60_000, "{} bytes", kyc.body.len());
    let own = ops.get("/portal/merchant/agreements/a7");
    assert!(own.body.contains(&large(7)[..40]) && own.body.contains("Sign version 1"), "{}", &own.body[..2000.min(own.body.len())]);
    let shown = field(&own, "sha256");
    assert_eq!(shown, hex::encode(sha2::Sha256::digest(large(7).as_bytes())));
    let signed = ops.post("/portal/merchant/agreements/sign", &[("csrf", &own.csrf()), ("code", "a7"), ("version", "1"), ("sha256", &shown)]);
    assert_eq!((signed.status, signed.location.as_deref()), (303, Some("/portal/merchant/kyc")), "{}", signed.body);
    let own = ops.get("/portal/merchant/agreements/a7");
    assert!(own.body.contains("signed") && !own.body.contains("Sign version 1"));
    assert!(ops.get("/portal/merchant/kyc").body.contains("2 more to sign"));
    assert_eq!(ops.get("/portal/merchant/agreements/nope").status, 404);
    // Another platform's agreements are not this merchant's: not found by their code, and one
    // with this platform's code (two versions of it) leaves this platform's version 1 shown.
    let other = Client::create(&server, TOKEN, r#"{"name": "Other"}"#);
    for (n, code) in [(1, "theirs"), (2, "a6"), (3, "a6")] {
        let published = other
            .post("/v1/agreement-templates", &json!({"out_order_no": format!("o-{n}"), "code": code, "title": "Theirs", "text": format!("Not yours {n}.")}));
        assert_eq!(published.0, 201, "{}", published.2);
    }
    assert_eq!(ops.get("/portal/merchant/agreements/theirs").status, 404);
    let own = ops.get("/portal/merchant/agreements/a6");
    assert!(own.body.contains("Sign version 1") && !own.body.contains("Not yours"), "{}", &own.body[..2000.min(own.body.len())]);
    assert_eq!(field(&own, "sha256"), hex::encode(sha2::Sha256::digest(large(6).as_bytes())));
    let refused = ops.post(
        "/portal/merchant/agreements/sign",
        &[("csrf", &own.csrf()), ("code", "a6"), ("version", "2"), ("sha256", &hex::encode(sha2::Sha256::digest(b"Not yours 3.")))],
    );
    assert!(refused.body.contains("notice error"), "{}", refused.body);
    server.stop();
}

/// An export stops at 10,000 rows (or 20 pages read) and says so in its last row, with the
/// cursor to export the rest from: it neither ends silently nor walks the whole history.
#[test]
fn an_export_that_stops_short_says_where_to_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Some(TOKEN));
    let p = Client::create(&server, TOKEN, r#"{"name": "Bulk shop"}"#);
    let (member, account) = company(&p, "m-export");
    let mut admin = admin(&server);
    let mut ops = merchant_operator(&server, &mut admin, "exporter", &p.platform, &member);
    let recharge = |n: usize| json!({"op": "recharge", "body": {"out_order_no": format!("x-{n}"), "account_id": account, "amount": "0.01", "currency": "CNY"}});
    for range in [0..8_189, 8_189..10_002] {
        let operations: Vec<serde_json::Value> = range.map(recharge).collect();
        let (status, _, reply) = p.post("/v1/bulk", &json!({"operations": operations}));
        assert_eq!(status, 200);
        assert!(reply["results"].as_array().unwrap().iter().all(|r| r["status"] == 201), "every recharge is made");
    }
    let csv = ops.get("/portal/merchant/orders?format=csv");
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(lines.len(), 1 + 10_000 + 1, "header, 10,000 orders, the note");
    let note = lines.last().unwrap();
    let cursor = note.split("export again with cursor=").nth(1).and_then(|rest| rest.split(')').next()).unwrap_or_else(|| panic!("{note}"));
    let rest = ops.get(&format!("/portal/merchant/orders?format=csv&cursor={cursor}"));
    let rest: Vec<&str> = rest.body.lines().collect();
    assert_eq!(rest.len(), 1 + 2, "the two oldest, and no note: {rest:?}");
    assert!(rest.iter().all(|line| !line.contains("more rows")));
    server.stop();
}
