//! The platform operators' portal over HTTP against the real server: members registered and
//! accounts opened through the forms are the API's; another platform's objects are 404 by URL and
//! absent from every list; the ledgers filter, page with a cursor and export CSV; a form posted
//! twice is one order; freezes and releases.

mod support;

use support::portal::{first_password, Page, Person, MAKERS_PASSWORD};
use support::*;

const TOKEN: &str = "portal-platform-tests-operator-token-0123";
const PASSWORD: &str = "a long enough password";

fn admin(server: &Server) -> Person {
    let mut person = Person::new(server);
    let page = person.login("admin", &first_password(server));
    assert_eq!(page.status, 303, "{}", page.body);
    person
}

/// A platform (through the operator API) and a signed-in platform operator of it with every role.
fn platform_with_operator<'a>(server: &'a Server, admin: &mut Person, name: &str) -> (Client<'a>, Person) {
    let client = Client::create(server, TOKEN, &format!(r#"{{"name": "{name}"}}"#));
    let operator = platform_operator(server, admin, &client.platform, &format!("{}_ops", name.to_lowercase()));
    (client, operator)
}

/// An operator of `platform` with every role, made by `admin`, that chose its own password
/// (`PASSWORD`), signed in.
fn platform_operator(server: &Server, admin: &mut Person, platform: &str, username: &str) -> Person {
    platform_operator_with(server, admin, platform, username, &["viewer", "operator", "approver", "admin"])
}

/// An operator of `platform` with `roles`, made by `admin`, signed in.
fn platform_operator_with(server: &Server, admin: &mut Person, platform: &str, username: &str, roles: &[&str]) -> Person {
    let csrf = admin.csrf();
    let made = admin.post(
        "/portal/operators",
        &[("csrf", csrf.as_str()), ("username", username), ("display_name", username), ("kind", "platform"), ("platform", platform), ("member", "")]
            .into_iter()
            .chain(roles.iter().map(|role| ("role", *role)))
            .chain([("password", MAKERS_PASSWORD)])
            .collect::<Vec<_>>(),
    );
    assert!(made.body.contains("created"), "{}", made.body);
    Person::take_over_at(&server.base, username, PASSWORD);
    let mut operator = Person::new(server);
    assert_eq!(operator.login(username, PASSWORD).status, 303);
    operator
}

fn hidden(page: &Page, action: &str, name: &str) -> String {
    let form = &page.body[page.body.find(&format!("action=\"{action}\"")).unwrap_or_else(|| panic!("a form posting to {action}: {}", page.body))..];
    let marker = format!("name=\"{name}\" value=\"");
    let at = form.find(&marker).expect("the hidden field") + marker.len();
    form[at..].split('"').next().unwrap().to_string()
}

/// Registers an individual member through the members page; its id (`mem_N`).
fn register(person: &mut Person, name: &str) -> String {
    let form = person.get("/portal/platform/members");
    assert_eq!(form.status, 200);
    let number = hidden(&form, "/portal/platform/members", "out_order_no");
    let fields = [
        ("csrf", form.csrf()),
        ("out_order_no", number),
        ("type", "individual".into()),
        ("name", name.into()),
        ("id_number", "11010519491231002X".into()),
        ("phone", "13800138000".into()),
    ];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let done = person.post("/portal/platform/members", &fields);
    assert_eq!(done.status, 303, "{}", done.body);
    done.location.unwrap().rsplit('/').next().unwrap().to_string()
}

/// Opens a CNY account for `member` through its page; the account id and virtual account number.
fn open_account(person: &mut Person, member: &str) -> (String, String) {
    let path = format!("/portal/platform/members/{member}");
    let before = person.get(&path);
    assert_eq!(before.status, 200);
    let action = format!("{path}/accounts");
    let number = hidden(&before, &action, "out_order_no");
    let done = person.post(&action, &[("csrf", &before.csrf()), ("out_order_no", &number), ("currency", "CNY")]);
    assert_eq!((done.status, done.location.as_deref()), (303, Some(path.as_str())), "{}", done.body);
    let shown = person.get(&path);
    let at = shown.body.find(">acc_").expect("the account is listed") + 1;
    let account = shown.body[at..].split('<').next().unwrap().to_string();
    let at = shown.body.find("<td class=\"van\"><code>").expect("the virtual account number") + "<td class=\"van\"><code>".len();
    let van = shown.body[at..].split('<').next().unwrap().to_string();
    (account, van)
}

/// Whether a page shows `id` as a whole cell or link text (not as part of a longer id).
fn shows(page: &Page, id: &str) -> bool {
    page.body.contains(&format!(">{id}<"))
}

/// Posts a money form of the money page (with its generated order number unless `number` says).
fn money_form(person: &mut Person, action: &str, fields: &[(&str, &str)], number: Option<&str>) -> Page {
    let form = person.get("/portal/platform/money");
    let generated = hidden(&form, action, "out_order_no");
    let csrf = form.csrf();
    let mut all = vec![("csrf", csrf.as_str()), ("out_order_no", number.unwrap_or(&generated))];
    all.extend_from_slice(fields);
    person.post(action, &all)
}

/// The member ids a members page lists, in order.
fn listed_members(page: &Page) -> Vec<String> {
    page.body.split("href=\"/portal/platform/members/").skip(1).map(|rest| rest.split('"').next().unwrap().to_string()).collect()
}

#[test]
fn the_members_list_pages_from_the_store_and_counts_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Some(TOKEN));
    let mut admin = admin(&server);
    let (alpha, _) = platform_with_operator(&server, &mut admin, "Alpha");
    let beta = Client::create(&server, TOKEN, r#"{"name": "Beta"}"#);
    let mut made = Vec::new();
    for n in 0..60 {
        made.push(alpha.member(&format!("a-{n}"), &format!("Alpha Member {n}")));
        beta.member(&format!("b-{n}"), &format!("Beta Member {n}"));
    }
    let (platform, secret) = (alpha.platform.clone(), alpha.secret.clone());
    server.stop();

    // After a restart: the list pages through Alpha's members only, fifty at a time.
    let server = start(dir.path(), Some(TOKEN));
    let mut operator = Person::new(&server);
    assert_eq!(operator.login("alpha_ops", PASSWORD).status, 303);
    let first = operator.get("/portal/platform/members");
    assert_eq!(first.status, 200);
    assert_eq!(listed_members(&first), made[..50]);
    let last_id: u64 = made[49].trim_start_matches("mem_").parse().unwrap();
    assert!(first.body.contains(&format!("/portal/platform/members?after={last_id}")), "{}", first.body);
    let second = operator.get(&format!("/portal/platform/members?after={last_id}"));
    assert_eq!(listed_members(&second), made[50..]);
    assert!(!second.body.contains("Next page"), "{}", second.body);
    let filtered = operator.get("/portal/platform/members?q=member%2059");
    assert_eq!(listed_members(&filtered), made[59..]);
    let dashboard = operator.get("/portal/platform");
    assert!(dashboard.body.contains("id=\"metric-members\">60<"), "{}", dashboard.body);

    // Order numbers from before the restart replay; a new member takes an id never used.
    let alpha = Client { server: &server, platform, secret };
    let body =
        serde_json::json!({"out_order_no": "a-0", "type": "individual", "name": "Alpha Member 0", "id_number": "11010519491231002X", "phone": "13800138000"});
    let (status, replayed, shown) = alpha.post("/v1/members", &body);
    assert_eq!((status, replayed, shown["member_id"].as_str()), (201, true, Some(made[0].as_str())));
    let newest = alpha.member("a-new", "Alpha Newest");
    let newest_id: u64 = newest.trim_start_matches("mem_").parse().unwrap();
    assert_eq!(newest_id, 121, "two platforms made 120 members before");
    let (status, shown) = alpha.get(&format!("/v1/members/{newest}/notifications"));
    assert_eq!(status, 200, "{shown}");
    assert!(operator.get("/portal/platform").body.contains("id=\"metric-members\">61<"));
    server.stop();
}

#[test]
fn members_and_accounts_made_through_the_forms_are_the_apis() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Some(TOKEN));
    let mut admin = admin(&server);
    let (client, mut operator) = platform_with_operator(&server, &mut admin, "Alpha");
    let dashboard = operator.get("/portal/platform");
    assert_eq!(dashboard.status, 200);
    assert!(dashboard.body.contains("id=\"metric-members\">0<"), "{}", dashboard.body);

    let member = register(&mut operator, "Zhang San");
    assert!(member.starts_with("mem_"));
    let page = operator.get(&format!("/portal/platform/members/{member}"));
    assert!(page.body.contains("Zhang San") && page.body.contains("**************002X") && page.body.contains("138****8000"), "{}", page.body);
    assert!(!page.body.contains("11010519491231002X") && !page.body.contains("13800138000"), "identity numbers are masked");
    let (account, van) = open_account(&mut operator, &member);
    assert_eq!(van.len(), 17);

    // The API sees the member and the account.
    let (status, shown) = client.get(&format!("/v1/accounts/{account}"));
    assert_eq!(status, 200, "{shown}");
    assert_eq!((shown["member_id"].as_str(), shown["virtual_account_no"].as_str()), (Some(member.as_str()), Some(van.as_str())));
    let (status, _) = client.get(&format!("/v1/members/{member}/notifications"));
    assert_eq!(status, 200);

    // Bad input is a notice naming the field, and changes nothing.
    let form = operator.get("/portal/platform/members");
    let number = hidden(&form, "/portal/platform/members", "out_order_no");
    let refused = operator.post(
        "/portal/platform/members",
        &[("csrf", &form.csrf()), ("out_order_no", &number), ("type", "individual"), ("name", "Li Si"), ("id_number", "123"), ("phone", "13800138000")],
    );
    assert_eq!(refused.status, 200);
    assert!(refused.body.contains("notice error") && refused.body.contains("id_number"), "{}", refused.body);
    let list = operator.get("/portal/platform/members?q=zhang");
    assert!(list.body.contains(&member) && !list.body.contains("Li Si"));
    assert!(!operator.get("/portal/platform/members?q=nobody").body.contains(&member));
    let dashboard = operator.get("/portal/platform");
    assert!(dashboard.body.contains("id=\"metric-members\">1<") && dashboard.body.contains("id=\"metric-accounts\">1<"), "{}", dashboard.body);

    // Every action is in the audit log.
    let audit = operator.get("/portal/audit");
    assert!(audit.body.contains("member.create") && audit.body.contains("account.open"));
    assert_eq!(admin.get("/portal/platform").status, 404, "a system operator has no platform portal");
    server.stop();
}

#[test]
fn another_platforms_objects_are_not_found_and_never_listed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Some(TOKEN));
    let mut admin = admin(&server);
    let (_, mut alpha) = platform_with_operator(&server, &mut admin, "Alpha");
    let (beta_client, mut beta) = platform_with_operator(&server, &mut admin, "Beta");
    let beta_member = register(&mut beta, "Beta Member");
    let (beta_account, _) = open_account(&mut beta, &beta_member);
    let beta_order = beta_client.fund(&beta_account, "10.00", "beta-fund-1");

    for path in [
        format!("/portal/platform/members/{beta_member}"),
        format!("/portal/platform/entries?account_id={beta_account}"),
        format!("/portal/platform/orders/{beta_order}"),
    ] {
        let page = alpha.get(&path);
        assert_eq!(page.status, 404, "{path}: {}", page.body);
        assert!(!page.body.contains("Beta Member"));
    }
    assert!(!alpha.get("/portal/platform/members").body.contains(&beta_member));
    let orders = alpha.get(&format!("/portal/platform/orders?account_id={beta_account}"));
    assert_eq!(orders.status, 200);
    assert!(!orders.body.contains(&beta_order), "another platform's orders are never listed");
    assert!(!alpha.get("/portal/platform/orders").body.contains(&beta_order));
    let csv = alpha.get("/portal/platform/orders?format=csv");
    assert!(!csv.body.contains(&beta_order));
    // A form naming another platform's account is refused and moves nothing.
    let refused = money_form(&mut alpha, "/portal/platform/recharge", &[("account_id", &beta_account), ("amount", "1.00"), ("currency", "CNY")], None);
    assert_eq!(refused.status, 200);
    assert!(refused.body.contains("notice error") && refused.body.contains("account_id"), "{}", refused.body);
    let refused = money_form(&mut alpha, "/portal/platform/release", &[("order_id", &beta_order)], None);
    assert!(refused.body.contains("notice error"), "{}", refused.body);
    // Opening an account for another platform's member by its URL is not found.
    let page = alpha.get("/portal/platform/members");
    let posted =
        alpha.post(&format!("/portal/platform/members/{beta_member}/accounts"), &[("csrf", &page.csrf()), ("out_order_no", "x-1"), ("currency", "CNY")]);
    assert_eq!(posted.status, 404);
    // The other portals' operators have no platform portal.
    assert_eq!(admin.get("/portal/platform/members").status, 404);
    server.stop();
}

/// A suspended platform's portal moves no money (its signed requests are refused, and before
/// session 57 its operators went on recharging, paying out and refunding through the portal):
/// its operators may still sign out; resumed, the forms work again.
#[test]
fn a_suspended_platforms_portal_moves_no_money() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Some(TOKEN));
    let mut admin = admin(&server);
    let (client, mut operator) = platform_with_operator(&server, &mut admin, "Gamma");
    let member = register(&mut operator, "Wang Wu");
    let (account, _) = open_account(&mut operator, &member);
    let fields = [("account_id", account.as_str()), ("amount", "100.00"), ("currency", "CNY")];
    let csrf = admin.csrf();
    let suspend = admin.post(&format!("/portal/system/platforms/{}/suspend", client.platform), &[("csrf", &csrf)]);
    assert!(suspend.body.contains("Platform suspended"), "{}", suspend.body);
    let refused = money_form(&mut operator, "/portal/platform/recharge", &fields, None);
    assert!(refused.status == 403 && refused.body.contains("suspended"), "{} {}", refused.status, refused.body);
    assert_eq!(client.get(&format!("/v1/orders?account_id={account}")).0, 403, "the API refuses it too");
    let resume = admin.post(&format!("/portal/system/platforms/{}/resume", client.platform), &[("csrf", &csrf)]);
    assert!(resume.body.contains("Platform resumed"), "{}", resume.body);
    let (_, listed) = client.get(&format!("/v1/orders?account_id={account}"));
    assert_eq!(listed["orders"].as_array().map(Vec::len), Some(0), "nothing moved while suspended: {listed}");
    let accepted = money_form(&mut operator, "/portal/platform/recharge", &fields, None);
    assert_eq!(accepted.status, 303, "{}", accepted.body);
    let csrf = operator.csrf();
    let admin_csrf = admin.csrf();
    assert_eq!(admin.post(&format!("/portal/system/platforms/{}/suspend", client.platform), &[("csrf", &admin_csrf)]).status, 200);
    assert_eq!(operator.post("/portal/logout", &[("csrf", &csrf)]).status, 303, "signing out is always allowed");
    server.stop();
}

#[test]
fn a_recharge_form_posted_twice_is_one_order_and_freezes_release() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Some(TOKEN));
    let mut admin = admin(&server);
    let (client, mut operator) = platform_with_operator(&server, &mut admin, "Alpha");
    let member = register(&mut operator, "Wang Wu");
    let (account, _) = open_account(&mut operator, &member);

    let form = operator.get("/portal/platform/money");
    let number = hidden(&form, "/portal/platform/recharge", "out_order_no");
    let fields = [("account_id", account.as_str()), ("amount", "100.00"), ("currency", "CNY")];
    let first = money_form(&mut operator, "/portal/platform/recharge", &fields, Some(&number));
    let second = money_form(&mut operator, "/portal/platform/recharge", &fields, Some(&number));
    assert_eq!(first.status, 303, "{}", first.body);
    assert_eq!(first.location, second.location, "the same order");
    let order = first.location.unwrap().rsplit('/').next().unwrap().to_string();
    client.wait_order(&order, "succeeded");
    let (status, listed) = client.get(&format!("/v1/orders?account_id={account}&kind=recharge"));
    assert_eq!(status, 200);
    assert_eq!(listed["orders"].as_array().unwrap().len(), 1, "one order: {listed}");
    assert_eq!(client.balances(&account).0, "100.00");

    let frozen = money_form(
        &mut operator,
        "/portal/platform/freeze",
        &[("account_id", &account), ("amount", "30.00"), ("currency", "CNY"), ("reason", "dispute")],
        None,
    );
    assert_eq!(frozen.status, 303, "{}", frozen.body);
    let freeze_order = frozen.location.unwrap().rsplit('/').next().unwrap().to_string();
    assert_eq!(client.balances(&account).2, "30.00");
    let shown = operator.get(&format!("/portal/platform/orders/{freeze_order}"));
    assert!(shown.body.contains("freeze") && shown.body.contains("dispute"), "{}", shown.body);
    let released = money_form(&mut operator, "/portal/platform/release", &[("order_id", &freeze_order), ("amount", "10.00")], None);
    assert_eq!(released.status, 303, "{}", released.body);
    assert_eq!(client.balances(&account).2, "20.00");
    let released = money_form(&mut operator, "/portal/platform/release", &[("order_id", &freeze_order)], None);
    assert_eq!(released.status, 303, "{}", released.body);
    assert_eq!(client.balances(&account).2, "0.00");
    // More than the balance is refused with the engine's reason.
    let refused =
        money_form(&mut operator, "/portal/platform/freeze", &[("account_id", &account), ("amount", "1000.00"), ("currency", "CNY"), ("reason", "x")], None);
    assert_eq!(refused.status, 200);
    assert!(refused.body.contains("notice error"), "{}", refused.body);
    let audit = operator.get("/portal/audit");
    assert!(audit.body.contains("order.recharge") && audit.body.contains("order.freeze") && audit.body.contains("order.release"));
    // Each freeze's start is in the log before its outcome (since session 60: a stop in between
    // no longer loses the record), the refused one's too.
    let freezes = operator.get("/portal/audit?action=order.freeze");
    let outcomes: Vec<&str> = freezes.body.match_indices("<td>started</td>").map(|_| "started").collect();
    assert_eq!((freezes.body.matches("<code>order.freeze</code>").count(), outcomes.len()), (4, 2), "{}", freezes.body);
    assert!(freezes.body.contains("<td>ok</td>") && freezes.body.contains("<td>refused: insufficient_funds</td>"), "{}", freezes.body);
    server.stop();
}

/// The money forms of a member's page: 代收 (collect from the member's verified card) and 代付
/// (pay out to an outside card after a routing preview, carried out when another approves).
#[test]
fn collections_and_payouts_from_a_members_page_move_money_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(&[("latency_ms = 200", "latency_ms = 20"), ("latency_ms = 500", "latency_ms = 20")]);
    let server = start_configured(dir.path(), TOKEN, &config);
    let mut admin = admin(&server);
    let (client, mut operator) = platform_with_operator(&server, &mut admin, "Alpha");
    let member = register(&mut operator, "Zhang San");
    let (account, _) = open_account(&mut operator, &member);
    let card = support::money::verified_card(&client, &server, &account, "4111111111111111", "Zhang San", "11010519491231002X");
    let member_path = format!("/portal/platform/members/{member}");

    // 代收: the form's order number makes a second submit the same order; the money moves once.
    let page = operator.get(&member_path);
    let collect_path = format!("{member_path}/collection");
    let number = hidden(&page, &collect_path, "out_order_no");
    let fields = [("csrf", page.csrf()), ("out_order_no", number), ("account_id", account.clone()), ("card_id", card.clone()), ("amount", "80.00".into())];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let first = operator.post(&collect_path, &fields);
    assert_eq!(first.status, 303, "{}", first.body);
    let second = operator.post(&collect_path, &fields);
    assert_eq!(first.location, second.location, "a replay is the same order");
    let order = first.location.unwrap().rsplit('/').next().unwrap().to_string();
    let shown = client.wait_order(&order, "succeeded");
    assert_eq!(shown["kind"], "recharge", "{shown}");
    assert_eq!(client.balances(&account).0, "80.00", "collected once");
    let (_, statement) = server.sim_get("/sim/cards/4111111111111111/transactions");
    let debits = statement["transactions"].as_array().unwrap().iter().filter(|t| t["amount"] == "-80.00").count();
    assert_eq!(debits, 1, "the card is debited once: {statement}");
    // Without the CSRF token: refused, nothing moves.
    let without: Vec<(&str, &str)> = fields.iter().filter(|(k, _)| *k != "csrf").copied().collect();
    assert_eq!(operator.post(&collect_path, &without).status, 403);
    // A card of another account of nobody: the API's checks, shown on the member's page.
    let refused = operator
        .post(&collect_path, &[("csrf", &page.csrf()), ("out_order_no", "pt-other-1"), ("account_id", &account), ("card_id", "card_999"), ("amount", "1.00")]);
    assert_eq!(refused.status, 200);
    assert!(refused.body.contains("notice error") && refused.body.contains("card_id"), "{}", refused.body);

    // 代付: a preview with the routing (channel, candidates, fee, total), then a confirm form.
    let preview_path = format!("{member_path}/payout/preview");
    let payout_fields = |csrf: &str| {
        vec![
            ("csrf".to_string(), csrf.to_string()),
            ("account_id".to_string(), account.clone()),
            ("card_no".to_string(), "5555555555554444".to_string()),
            ("holder_name".to_string(), "Wang Wu".to_string()),
            ("amount".to_string(), "40.00".to_string()),
            ("arrival".to_string(), "standard".to_string()),
            ("account_type".to_string(), "personal".to_string()),
        ]
    };
    let post = |person: &mut support::portal::Person, path: &str, fields: &[(String, String)]| {
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        person.post(path, &fields)
    };
    let bad_card = {
        let mut fields = payout_fields(&page.csrf());
        fields[2].1 = "4111111111111112".into();
        post(&mut operator, &preview_path, &fields)
    };
    assert!(bad_card.body.contains("notice error") && bad_card.body.contains("card_no"), "the API's Luhn check: {}", bad_card.body);
    let preview = post(&mut operator, &preview_path, &payout_fields(&page.csrf()));
    assert_eq!(preview.status, 200, "{}", preview.body);
    assert!(preview.body.contains("Propose the payout") && preview.body.contains("data-channel=\"sim_same_city\""), "{}", preview.body);
    assert!(preview.body.contains("<dd class=\"fee\">0.50 CNY</dd>") && preview.body.contains("<dd class=\"total\">40.50 CNY</dd>"), "{}", preview.body);
    assert_eq!(client.balances(&account).0, "80.00", "a preview moves nothing");
    // Confirmed, it is a proposal: nothing moves until another operator approves it (four eyes).
    let payout_path = format!("{member_path}/payout");
    let number = hidden(&preview, &payout_path, "out_order_no");
    let mut confirm = payout_fields(&preview.csrf());
    confirm.push(("out_order_no".into(), number));
    let proposed = post(&mut operator, &payout_path, &confirm);
    assert!(proposed.status == 200 && proposed.body.contains("recorded") && proposed.body.contains("5555****4444"), "{}", proposed.body);
    let proposal = |page: &Page| page.body.split("Proposal ").nth(1).and_then(|rest| rest.split(' ').next()).expect("a proposal's id").to_string();
    let (first, second) = (proposal(&proposed), proposal(&post(&mut operator, &payout_path, &confirm)));
    assert_ne!(first, second, "a double submit is two proposals of one order number");
    assert_eq!(client.balances(&account).0, "80.00", "nothing moves before an approval");
    let approve = |person: &mut Person, id: &str| {
        let csrf = person.csrf();
        person.post(&format!("/portal/approvals/{id}/approve"), &[("csrf", &csrf)])
    };
    assert!(approve(&mut operator, &first).body.contains("another operator than the one who proposed"));
    let mut approver = platform_operator(&server, &mut admin, &client.platform, "alpha_approver");
    let approved = approve(&mut approver, &first);
    assert!(approved.body.contains("paid out through sim_same_city") && approved.body.contains("(executed)."), "{}", approved.body);
    let order = approved.body.split("approved: order ").nth(1).and_then(|rest| rest.split(' ').next()).expect("the order").to_string();
    let again = approve(&mut approver, &second);
    assert!(again.body.contains(&format!("order {order} ")) && again.body.contains("a replay of its order number"), "{}", again.body);
    let paid = client.wait_order(&order, "succeeded");
    assert_eq!(paid["channel"], "sim_same_city", "{paid}");
    assert_eq!(client.balances(&account).0, "39.50", "paid out once, with its fee");
    let (_, outside) = server.sim_get("/sim/cards/5555555555554444/transactions");
    assert_eq!(outside["transactions"].as_array().unwrap().iter().filter(|t| t["amount"] == "40.00").count(), 1, "{outside}");
    // The clearing actor timed the bank's verdict: the channel report and the system's charts.
    let (status, report) = support::money::admin_request(&server, "GET", "/admin/channels", TOKEN, None);
    assert_eq!(status, 200);
    let same_city = report["channels"].as_array().unwrap().iter().find(|c| c["name"] == "sim_same_city").unwrap()["latency"].clone();
    assert_eq!((same_city["verdicts_succeeded"].as_u64(), same_city["samples"].as_u64()), (Some(1), Some(1)), "{same_city}");
    assert!(same_city["p50_ms"].as_u64().unwrap() >= 15, "the simulated bank answers after 20 ms: {same_city}");
    let channels = admin.get("/portal/system/channels");
    assert!(channels.body.contains("id=\"chart-latency\"") && channels.body.contains("sim_same_city p95"), "{}", channels.body);
    assert!(admin.get("/portal/system").body.contains("id=\"chart-latency\""), "the system dashboard charts it too");
    let without: Vec<(String, String)> = confirm.iter().filter(|(k, _)| k != "csrf").cloned().collect();
    assert_eq!(post(&mut operator, &payout_path, &without).status, 403, "CSRF missing");

    // Another platform's member is not found by URL; its account is refused on our member's page.
    let (_, mut beta) = platform_with_operator(&server, &mut admin, "Beta");
    let beta_member = register(&mut beta, "Beta Member");
    let (beta_account, _) = open_account(&mut beta, &beta_member);
    let beta_path = format!("/portal/platform/members/{beta_member}");
    let csrf = operator.get(&member_path).csrf();
    for path in [format!("{beta_path}/collection"), format!("{beta_path}/payout/preview"), format!("{beta_path}/payout")] {
        let mut fields = payout_fields(&csrf);
        fields.push(("out_order_no".into(), "pt-beta-1".into()));
        fields.push(("card_id".into(), card.clone()));
        assert_eq!(post(&mut operator, &path, &fields).status, 404, "{path}");
    }
    let mut fields = payout_fields(&csrf);
    fields[1].1 = beta_account.clone();
    fields.push(("out_order_no".into(), "pt-beta-2".into()));
    let refused = post(&mut operator, &payout_path, &fields);
    assert!(refused.status == 200 && refused.body.contains("notice error") && refused.body.contains("account_id"), "{}", refused.body);
    assert_eq!(client.balances(&account).0, "39.50", "nothing moved");

    let audit = operator.get("/portal/audit");
    assert!(audit.body.contains("order.collection") && audit.body.contains("approval.executed") && audit.body.contains("5555****4444"), "{}", audit.body);
    assert!(!audit.body.contains("5555555555554444"), "the audit log keeps the card number masked");
    server.stop();
}

#[test]
fn ledgers_filter_page_with_a_cursor_and_export_csv() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Some(TOKEN));
    let mut admin = admin(&server);
    let (client, mut operator) = platform_with_operator(&server, &mut admin, "Alpha");
    let member = register(&mut operator, "Zhao Liu");
    let (account, _) = open_account(&mut operator, &member);
    let mut recharges = Vec::new();
    for n in 0..3 {
        recharges.push(client.fund(&account, "5.00", &format!("fund-{n}")));
    }
    let (status, _, freeze) =
        client.post("/v1/freezes", &serde_json::json!({"out_order_no": "-1-1", "account_id": account, "amount": "1.00", "currency": "CNY", "reason": "check"}));
    assert_eq!(status, 201, "{freeze}");

    let all = operator.get("/portal/platform/orders");
    assert!(recharges.iter().all(|id| shows(&all, id.as_str())) && shows(&all, freeze["order_id"].as_str().unwrap()));
    // Filters.
    let only = operator.get("/portal/platform/orders?kind=freeze");
    assert!(shows(&only, freeze["order_id"].as_str().unwrap()) && !shows(&only, recharges[0].as_str()));
    let bad = operator.get("/portal/platform/orders?kind=nonsense");
    assert_eq!(bad.status, 200);
    assert!(bad.body.contains("notice error") && bad.body.contains("kind:"), "{}", bad.body);
    let bad = operator.get("/portal/platform/orders?from=yesterday");
    assert!(bad.body.contains("notice error") && bad.body.contains("from:"), "{}", bad.body);
    let future = operator.get("/portal/platform/orders?from=2999-01-01");
    assert!(!shows(&future, recharges[0].as_str()));
    let channels = operator.get("/portal/platform/channels");
    assert!(shows(&channels, recharges[0].as_str()) && !shows(&channels, freeze["order_id"].as_str().unwrap()), "{}", channels.body);

    // Cursor paging: two per page, the next link carries the filters and the cursor.
    let first = operator.get("/portal/platform/orders?kind=recharge&limit=2");
    assert!(shows(&first, recharges[2].as_str()) && shows(&first, recharges[1].as_str()) && !shows(&first, recharges[0].as_str()));
    let at = first.body.find("class=\"next\" href=\"").expect("a next page link") + "class=\"next\" href=\"".len();
    let next = first.body[at..].split('"').next().unwrap().replace("&amp;", "&");
    assert!(next.contains("kind=recharge") && next.contains("cursor="), "{next}");
    let second = operator.get(&next);
    assert!(shows(&second, recharges[0].as_str()) && !shows(&second, recharges[1].as_str()), "{}", second.body);
    assert!(!second.body.contains("class=\"next\""), "the last page has no next link");
    let bad = operator.get("/portal/platform/orders?cursor=garbage");
    assert!(bad.body.contains("cursor:"));

    // CSV.
    let csv = operator.get("/portal/platform/orders?kind=recharge&format=csv");
    assert!(csv.content_type.starts_with("text/csv"), "{}", csv.content_type);
    let mut lines = csv.body.lines();
    assert_eq!(lines.next(), Some("order_id,out_order_no,kind,status,amount,currency,account_id,channel,created_at,updated_at"));
    assert_eq!(lines.count(), 3);
    // A platform's order number a spreadsheet would compute (-1-1 is -2) is written as text.
    let csv = operator.get("/portal/platform/orders?kind=freeze&format=csv");
    assert!(csv.body.contains(",'-1-1,freeze,"), "{}", csv.body);
    let entries = operator.get(&format!("/portal/platform/entries?account_id={account}"));
    assert_eq!(entries.status, 200);
    assert!(entries.body.contains("ent_"), "{}", entries.body);
    let csv = operator.get(&format!("/portal/platform/entries?account_id={account}&format=csv"));
    assert!(csv.content_type.starts_with("text/csv"));
    assert!(csv.body.starts_with("entry_id,order_id,kind,direction,amount,balance_after,created_at\n"));
    assert!(csv.body.lines().count() > 3, "{}", csv.body);
    let bad = operator.get("/portal/platform/entries?account_id=nonsense");
    assert!(bad.body.contains("account_id:"));
    server.stop();
}

#[test]
fn the_webhook_is_set_through_the_api_checks_and_rotation_is_a_proposal() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Some(TOKEN));
    let mut admin = admin(&server);
    let (client, mut operator) = platform_with_operator(&server, &mut admin, "Alpha");
    let page = operator.get("/portal/platform/api");
    assert!(page.body.contains("id=\"secret-version\">1<"), "{}", page.body);
    let refused = operator.post("/portal/platform/api/webhook", &[("csrf", &page.csrf()), ("url", "http://10.0.0.1/hook")]);
    assert!(refused.body.contains("notice error") && refused.body.contains("url:"), "{}", refused.body);
    let saved = operator.post("/portal/platform/api/webhook", &[("csrf", &page.csrf()), ("url", "https://example.com/hook")]);
    assert!(saved.body.contains("notice ok"), "{}", saved.body);
    let (status, shown) = client.get("/v1/webhook");
    assert_eq!((status, shown["url"].as_str()), (200, Some("https://example.com/hook")));
    let proposed = operator.post("/portal/approvals", &[("csrf", &page.csrf()), ("kind", "rotate_secret"), ("overlap_seconds", "60"), ("note", "yearly")]);
    assert!(proposed.status == 200 && proposed.body.contains("recorded"), "{}", proposed.body);
    assert!(operator.get("/portal/platform").body.contains("id=\"metric-pending\"><a href=\"/portal/approvals\">1<"));
    // The webhook's own signing secret (never the API secret): shown to the platform's admins,
    // not to a viewer; an admin rotates it from the version the page showed, once.
    let first = shown["signing_secret"].as_str().expect("the webhook secret").to_string();
    let page = operator.get("/portal/platform/api");
    assert!(page.body.contains(&format!("id=\"webhook-secret\">{first}<")) && page.body.contains("webhook secret version 1"), "{}", page.body);
    let mut viewer = platform_operator_with(&server, &mut admin, &client.platform, "alpha_viewer", &["viewer"]);
    let seen = viewer.get("/portal/platform/api");
    assert!(seen.status == 200 && seen.body.contains("webhook secret version 1") && !seen.body.contains(&first), "{}", seen.body);
    let form =
        [("csrf", page.csrf()), ("from_version", hidden(&page, "/portal/platform/api/webhook-secret", "from_version")), ("overlap_seconds", "600".into())];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(viewer.post("/portal/platform/api/webhook-secret", &[("csrf", &seen.csrf()), ("overlap_seconds", "0")]).status, 403);
    let rotated = operator.post("/portal/platform/api/webhook-secret", &form);
    assert!(rotated.body.contains("The webhook secret is rotated") && rotated.body.contains("webhook secret version 2"), "{}", rotated.body);
    let (_, now_shown) = client.get("/v1/webhook");
    let second = now_shown["signing_secret"].as_str().unwrap().to_string();
    assert!(second != first && rotated.body.contains(&second) && rotated.body.contains("version 1 also signs until"), "{}", rotated.body);
    let again = operator.post("/portal/platform/api/webhook-secret", &form);
    assert!(again.body.contains("rotated already"), "a form sent twice rotates once: {}", again.body);
    assert_eq!(client.get("/v1/webhook").1["signing_secret_version"], 2);
    let bad = operator.post("/portal/platform/api/webhook-secret", &[("csrf", &page.csrf()), ("overlap_seconds", "soon")]);
    assert!(bad.body.contains("notice error") && bad.body.contains("overlap_seconds"), "{}", bad.body);
    server.stop();
}

#[test]
fn agreements_are_published_in_the_portal_and_a_members_signatures_shown_as_signed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Some(TOKEN));
    let mut admin = admin(&server);
    let (client, mut operator) = platform_with_operator(&server, &mut admin, "Deco");
    let (_, mut stranger) = platform_with_operator(&server, &mut admin, "Other");
    let page = operator.get("/portal/platform/agreements");
    assert_eq!(page.status, 200);
    let text = "甲方与乙方约定：资金由银行存管。\nFunds are held by the bank.";
    let fields = [
        ("csrf", page.csrf()),
        ("out_order_no", hidden(&page, "/portal/platform/agreements", "out_order_no")),
        ("code", "service".into()),
        ("title", "Service".into()),
        ("text", text.into()),
    ];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let published = operator.post("/portal/platform/agreements", &fields);
    assert!(published.body.contains("Published service version 1"), "{}", published.body);
    assert!(operator.post("/portal/platform/agreements", &fields).body.contains("Published service version 1"), "a resubmitted form is the same version");
    let without_token: Vec<(&str, &str)> = fields.iter().filter(|(k, _)| *k != "csrf").copied().collect();
    assert_eq!(operator.post("/portal/platform/agreements", &without_token).status, 403);
    // The API sees the version the portal published; a member signs it over the API.
    let (status, listed) = client.get("/v1/agreement-templates?code=service");
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed.to_string().matches("\"version\":1").count(), 1, "{listed}");
    let member = client.member("m-sign", "Zhang San");
    let (status, _, signed) =
        client.post(&format!("/v1/members/{member}/agreements"), &serde_json::json!({"out_order_no": "s-1", "code": "service", "version": 1}));
    assert_eq!(status, 201, "{signed}");
    let shown = operator.get(&format!("/portal/platform/agreements?member={member}"));
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()));
    assert!(shown.body.contains(&sha) && shown.body.contains(signed["signature_id"].as_str().unwrap()), "{}", shown.body);
    // Another platform's operator neither sees the member nor the template.
    assert_eq!(stranger.get(&format!("/portal/platform/agreements?member={member}")).status, 404);
    assert!(!stranger.get("/portal/platform/agreements").body.contains("资金由银行存管"));
    server.stop();
}
