//! The portals' rules over HTTP against the real server: sign-in, lockout, CSRF and origin,
//! session timeouts, the second factor, operators within a scope, the audit log and four-eyes
//! approvals.

mod support;

use support::portal::{first_password, Person, MAKERS_PASSWORD};
use support::*;

const TOKEN: &str = "portal-tests-operator-token-0123456789";

fn started(dir: &std::path::Path) -> Server {
    start(dir, Some(TOKEN))
}

fn admin(server: &Server) -> Person {
    let mut person = Person::new(server);
    let page = person.login("admin", &first_password(server));
    assert_eq!((page.status, page.location.as_deref()), (303, Some("/portal/")), "{}", page.body);
    person
}

/// Creates an operator through the operators page as `by`; once made, it chooses its own
/// password, "a long enough password" (the maker's is `MAKERS_PASSWORD`).
fn make_operator(by: &mut Person, username: &str, kind: &str, platform: &str, member: &str, roles: &[&str]) -> support::portal::Page {
    let csrf = by.csrf();
    let mut fields =
        vec![("csrf", csrf.as_str()), ("username", username), ("display_name", username), ("kind", kind), ("platform", platform), ("member", member)];
    fields.extend(roles.iter().map(|role| ("role", *role)));
    fields.push(("password", MAKERS_PASSWORD));
    let made = by.post("/portal/operators", &fields);
    if made.body.contains(&format!("Operator {username} created")) {
        Person::take_over_at(&by.base, username, "a long enough password");
    }
    made
}

/// Proposes moving `amount` from account `from` to `to` as `person`.
fn propose_adjustment(person: &mut Person, from: &str, to: &str, amount: &str) -> support::portal::Page {
    let csrf = person.csrf();
    let fields = [("csrf", csrf.as_str()), ("kind", "adjustment"), ("from", from), ("to", to), ("amount", amount), ("currency", "CNY"), ("reason", "r")];
    person.post("/portal/approvals", &fields)
}

/// A platform with two members' accounts, the first (the payer) funded with 100.00.
fn platform_with_a_funded_payer(server: &Server) -> (Client<'_>, String, String) {
    let client = Client::create(server, TOKEN, r#"{"name": "One"}"#);
    let (payer, payee) = (client.account(&client.member("m-a", "Ann")), client.account(&client.member("m-b", "Bob")));
    client.fund(&payer, "100.00", "fund-1");
    (client, payer, payee)
}

#[test]
fn every_page_needs_a_session_and_the_first_operator_signs_in() {
    let dir = tempfile::tempdir().unwrap();
    let server = started(dir.path());
    let mut stranger = Person::new(&server);
    for path in
        ["/portal/", "/portal/system", "/portal/platform", "/portal/merchant", "/portal/audit", "/portal/approvals", "/portal/operators", "/portal/account"]
    {
        let page = stranger.get(path);
        assert_eq!((page.status, page.location.as_deref()), (303, Some("/portal/login")), "{path}");
    }
    let login = stranger.get("/portal/login");
    assert_eq!(login.status, 200);
    assert!(login.content_type.starts_with("text/html") && login.body.contains("Sign in"));
    assert_eq!(stranger.login("admin", "not the password at all").status, 401);
    assert_eq!(stranger.cookie, None);

    let mut admin = admin(&server);
    let cookie_line = admin.cookie.clone().expect("a session cookie");
    assert!(cookie_line.starts_with("portal_session=") && cookie_line.len() == "portal_session=".len() + 64);
    let home = admin.get("/portal/");
    assert_eq!(home.location.as_deref(), Some("/portal/system"));
    let system = admin.get("/portal/system");
    assert_eq!(system.status, 200);
    assert!(system.body.contains("system") && system.body.contains("Sign out"));
    // Another kind's portal is not there for a system operator.
    assert_eq!(admin.get("/portal/merchant").status, 404);
    server.stop();
}

#[test]
fn the_session_cookie_is_http_only_and_strict() {
    let dir = tempfile::tempdir().unwrap();
    let server = started(dir.path());
    let response = ureq::AgentBuilder::new()
        .redirects(0)
        .build()
        .post(&format!("{}/portal/login", server.base))
        .send_form(&[("username", "admin"), ("password", &first_password(&server))]);
    let response = answer(response, "login");
    let cookie = response.header("set-cookie").expect("cookie").to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Path=/"), "{cookie}");
    server.stop();
}

#[test]
fn five_wrong_passwords_lock_the_operator_and_the_audit_log_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = started(dir.path());
    let mut admin = admin(&server);
    let created = make_operator(&mut admin, "alice", "system", "", "", &["viewer"]);
    assert!(created.body.contains("Operator alice created"), "{}", created.body);
    let mut alice = Person::new(&server);
    // What a refused sign-in of a name nobody has says: every refusal of alice's says the same,
    // locked or not, so that five tries do not tell whether a name exists.
    let unknown = Person::new(&server).login("nobody", "wrong password number x");
    assert_eq!(unknown.status, 401);
    for attempt in 1..=5 {
        let page = alice.login("alice", "wrong password number x");
        assert_eq!((page.status, &page.body), (401, &unknown.body), "attempt {attempt}");
    }
    let right = alice.login("alice", "a long enough password");
    assert_eq!((right.status, &right.body), (401, &unknown.body), "locked: the right password is refused, saying the same");
    assert_eq!(alice.cookie, None);
    for _ in 0..3 {
        assert_eq!(alice.login("alice", "wrong password number y").status, 401, "tries against the lock are refused");
    }
    let audit = admin.get("/portal/audit?action=session.login_failed");
    assert_eq!(audit.body.matches("<code>session.login_failed</code>").count(), 5 + 1, "five wrong passwords and one try while locked");
    assert!(audit.body.contains(">locked<"));
    server.stop();
}

/// One client failing to sign in too often (here four times, names it made up, which no
/// operator's lockout counts) is refused before any password is checked, the right one too,
/// until its window ends; the audit log records its address once (since session 60). Behind a
/// trusted proxy the client is the one its `X-Forwarded-For` names: another client behind the
/// same proxy still signs in, and an untrusted peer's header is not believed.
#[test]
fn an_address_that_fails_too_often_is_refused_whoever_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        config_with(&[("sign_in_failures_per_address = 0", "sign_in_failures_per_address = 4"), ("trusted_proxies = []", "trusted_proxies = [\"127.0.0.1\"]")]);
    let server = start_configured(dir.path(), TOKEN, &config);
    let mut admin = admin(&server);
    let login = |client: &str, username: &str, password: &str| {
        let request = ureq::post(&format!("{}/portal/login", server.base)).set("X-Forwarded-For", client);
        let response = answer(request.send_form(&[("username", username), ("password", password)]), "login");
        (response.status(), response.into_string().unwrap_or_default())
    };
    // A client's own header to the left of what the proxy appended is not who it is.
    for name in ["ann", "bob", "cy", "dee"] {
        assert_eq!(login("10.9.9.9, 203.0.113.7", name, "a guessed password").0, 401, "{name}");
    }
    let (status, body) = login("203.0.113.7", "admin", &first_password(&server));
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("Too many failed sign-ins from this address"), "{body}");
    assert_eq!(login("198.51.100.2", "admin", &first_password(&server)).0, 200, "another client behind the proxy signs in (its portal, after the redirect)");
    // An IPv6 client is counted by its /64: rotating addresses within it does not help.
    for n in 1..=4 {
        assert_eq!(login(&format!("2001:db8:1:2::{n}"), "eve", "a guessed password").0, 401);
    }
    assert_eq!(login("2001:db8:1:2::99", "admin", &first_password(&server)).0, 429);
    let audit = admin.get("/portal/audit?action=session.address_limited");
    assert_eq!(audit.body.matches("<code>session.address_limited</code>").count(), 2, "{}", audit.body);
    assert!(audit.body.contains("203.0.113.7") && audit.body.contains("2001:db8:1:2::4"), "{}", audit.body);
    server.stop();

    // Without trusted proxies the socket's peer is the client, whatever the header says.
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(&[("sign_in_failures_per_address = 0", "sign_in_failures_per_address = 2")]);
    let server = start_configured(dir.path(), TOKEN, &config);
    let login = |client: &str, username: &str, password: &str| {
        let request = ureq::post(&format!("{}/portal/login", server.base)).set("X-Forwarded-For", client);
        answer(request.send_form(&[("username", username), ("password", password)]), "login").status()
    };
    assert_eq!((login("10.0.0.1", "ann", "guess one"), login("10.0.0.2", "bob", "guess two")), (401, 401));
    assert_eq!(login("10.0.0.3", "admin", &first_password(&server)), 429, "one peer, however it names itself");
    server.stop();
}

#[test]
fn forms_without_the_token_or_from_another_origin_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = started(dir.path());
    let mut admin = admin(&server);
    let fields = [("username", "mallory"), ("display_name", "M"), ("kind", "system"), ("role", "admin"), ("password", "a long enough password")];
    let missing = admin.post("/portal/operators", &fields);
    assert_eq!(missing.status, 403);
    assert!(missing.body.contains("csrf_failed"));
    let csrf = admin.csrf();
    let mut with_token = vec![("csrf", csrf.as_str())];
    with_token.extend_from_slice(&fields);
    let wrong_token: Vec<(&str, &str)> = with_token.iter().map(|(k, v)| if *k == "csrf" { (*k, "0".repeat(64).leak() as &str) } else { (*k, *v) }).collect();
    assert_eq!(admin.post("/portal/operators", &wrong_token).status, 403);
    assert_eq!(admin.post_from("/portal/operators", &with_token, Some("https://evil.example")).status, 403);
    assert_eq!(admin.post_from("/portal/login", &[("username", "admin"), ("password", "x")], Some("https://evil.example")).status, 403);
    let list = admin.get("/portal/operators");
    assert!(!list.body.contains("mallory"), "nothing was created");
    let made = admin.post("/portal/operators", &with_token);
    assert!(made.body.contains("Operator mallory created"), "{}", made.body);
    server.stop();
}

#[test]
fn an_idle_session_expires_and_signing_out_ends_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(&[("session_idle_seconds = 900", "session_idle_seconds = 2")]);
    let server = start_configured(dir.path(), TOKEN, &config);
    let mut admin = admin(&server);
    assert_eq!(admin.get("/portal/system").status, 200);
    std::thread::sleep(std::time::Duration::from_millis(1200));
    assert_eq!(admin.get("/portal/system").status, 200, "a request keeps the session alive");
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(admin.get("/portal/system").location.as_deref(), Some("/portal/login"), "idle past the timeout");

    let mut again = Person::new(&server);
    again.login("admin", &first_password(&server));
    let cookie = again.cookie.clone();
    let csrf = again.csrf();
    let out = again.post("/portal/logout", &[("csrf", &csrf)]);
    assert_eq!(out.location.as_deref(), Some("/portal/login"));
    again.cookie = cookie;
    assert_eq!(again.get("/portal/system").location.as_deref(), Some("/portal/login"), "the old cookie no longer works");
    server.stop();
}

/// The Shards page refreshes itself; its refreshes are not the operator's activity, so an
/// unattended tab does not keep the session open past the idle timeout.
#[test]
fn a_pages_own_refresh_does_not_keep_an_idle_session_open() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(&[("session_idle_seconds = 900", "session_idle_seconds = 2")]);
    let server = start_configured(dir.path(), TOKEN, &config);
    let mut admin = admin(&server);
    let page = admin.get("/portal/system/shards");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("5; url=/portal/system/shards?auto=1"), "the page refreshes itself as such: {}", page.body);
    let mut refreshes = 0;
    let started = std::time::Instant::now();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let refreshed = admin.get("/portal/system/shards?auto=1");
        if refreshed.location.as_deref() == Some("/portal/login") {
            break;
        }
        assert_eq!(refreshed.status, 200, "a live session's refresh shows the page");
        refreshes += 1;
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "refreshes kept the session open for 10 s");
    }
    assert!(refreshes >= 2, "the page was refreshed while the session lived ({refreshes})");
    assert_eq!(admin.get("/portal/system").location.as_deref(), Some("/portal/login"), "the session ended at its idle timeout");
    server.stop();
}

#[test]
fn a_second_factor_is_asked_once_turned_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = started(dir.path());
    let mut admin = admin(&server);
    let csrf = admin.csrf();
    let enrolling = admin.post("/portal/account/totp", &[("csrf", &csrf)]);
    let at = enrolling.body.find("id=\"totp-secret\">").expect("the secret is shown") + "id=\"totp-secret\">".len();
    let secret = enrolling.body[at..].split('<').next().unwrap().to_string();
    let totp = totp_rs::Builder::new().with_secret(totp_rs::Secret::try_from_base32(&secret).unwrap()).build().unwrap();
    let password = first_password(&server);
    let wrong = admin.post("/portal/account/totp", &[("csrf", &csrf), ("secret", &secret), ("current", &password), ("code", "000000")]);
    assert!(wrong.body.contains("not right") || totp.generate_current().to_string() == "000000");
    // Without the operator's password a session cannot put a second factor on (a stolen one
    // would lock the owner out for good).
    let code = totp.generate_current().to_string();
    let without_password = admin.post("/portal/account/totp", &[("csrf", &csrf), ("secret", &secret), ("code", &code)]);
    assert!(without_password.body.contains("current password is wrong"), "{}", without_password.body);
    let on = admin.post("/portal/account/totp", &[("csrf", &csrf), ("secret", &secret), ("current", &password), ("code", &code)]);
    assert!(on.body.contains("The second factor is on"), "{}", on.body);

    let mut later = Person::new(&server);
    let without = later.login("admin", &first_password(&server));
    assert_eq!(without.status, 401);
    assert!(without.body.contains("authenticator"));
    let code = totp.generate_current().to_string();
    let with = later.post("/portal/login", &[("username", "admin"), ("password", &first_password(&server)), ("totp", &code)]);
    assert_eq!(with.status, 303, "{}", with.body);
    server.stop();
}

/// Guessing the current password inside a session counts like sign-ins: five wrong tries lock
/// the operator and end its sessions (a stolen session cannot guess at the hashing rate).
#[test]
fn five_wrong_current_passwords_in_a_session_lock_the_operator_and_end_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = started(dir.path());
    let mut admin = admin(&server);
    make_operator(&mut admin, "carol", "system", "", "", &["viewer"]);
    let mut carol = Person::new(&server);
    assert_eq!(carol.login("carol", "a long enough password").status, 303);
    let csrf = carol.csrf();
    for attempt in 1..=4 {
        let page = carol.post("/portal/account/password", &[("csrf", &csrf), ("current", "a wrong guess number x"), ("password", "another long password")]);
        assert!(page.body.contains("current password is wrong"), "attempt {attempt}: {}", page.body);
    }
    let fifth = carol.post("/portal/account/password", &[("csrf", &csrf), ("current", "a wrong guess number y"), ("password", "another long password")]);
    assert_eq!(fifth.location.as_deref(), Some("/portal/login"), "{}", fifth.body);
    assert_eq!(carol.get("/portal/account").location.as_deref(), Some("/portal/login"), "the session ended");
    assert_eq!(Person::new(&server).login("carol", "a long enough password").status, 401, "locked");
    server.stop();
}

/// Four eyes are two people: an operator the proposer made (or one made by those), whose
/// password the proposer chose, does not approve its proposals; another approver does.
#[test]
fn an_operator_made_by_the_proposer_does_not_approve_its_proposals() {
    let dir = tempfile::tempdir().unwrap();
    let server = started(dir.path());
    let (client, payer, payee) = platform_with_a_funded_payer(&server);
    let mut admin = admin(&server);
    make_operator(&mut admin, "boss", "platform", &client.platform, "", &["operator", "approver", "admin"]);
    make_operator(&mut admin, "checker", "platform", &client.platform, "", &["approver"]);
    let mut boss = Person::new(&server);
    assert_eq!(boss.login("boss", "a long enough password").status, 303);
    assert!(propose_adjustment(&mut boss, &payer, &payee, "12.50").body.contains("Proposal 1 recorded"));
    // The proposer makes an approver, and that one an approver too: neither may approve.
    make_operator(&mut boss, "puppet", "platform", &client.platform, "", &["operator", "approver", "admin"]);
    let mut puppet = Person::new(&server);
    assert_eq!(puppet.login("puppet", "a long enough password").status, 303);
    make_operator(&mut puppet, "puppet2", "platform", &client.platform, "", &["approver"]);
    for name in ["puppet", "puppet2"] {
        let mut person = Person::new(&server);
        assert_eq!(person.login(name, "a long enough password").status, 303);
        let csrf = person.csrf();
        let refused = person.post("/portal/approvals/1/approve", &[("csrf", &csrf)]);
        assert!(refused.body.contains("four eyes are two people"), "{name}: {}", refused.body);
    }
    assert_eq!(client.balances(&payer).0, "100.00", "nothing moved");
    // Nor the other way round: the proposer proposing as one it made, then approving.
    assert!(propose_adjustment(&mut puppet, &payer, &payee, "1.00").body.contains("Proposal 2 recorded"));
    let csrf = boss.csrf();
    let refused = boss.post("/portal/approvals/2/approve", &[("csrf", &csrf)]);
    assert!(refused.body.contains("four eyes are two people"), "{}", refused.body);
    let mut checker = Person::new(&server);
    assert_eq!(checker.login("checker", "a long enough password").status, 303);
    let csrf = checker.csrf();
    assert!(checker.post("/portal/approvals/1/approve", &[("csrf", &csrf)]).body.contains("executed"));
    assert_eq!(client.balances(&payer).0, "87.50");
    server.stop();
}

#[test]
fn platform_operators_work_within_their_platform_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = started(dir.path());
    let (_, one) = create_platform(&server, TOKEN, r#"{"name": "One"}"#);
    let (_, two) = create_platform(&server, TOKEN, r#"{"name": "Two"}"#);
    let (one_id, two_id) = (one["platform_id"].as_str().unwrap(), two["platform_id"].as_str().unwrap());
    let mut admin = admin(&server);
    assert!(make_operator(&mut admin, "one_admin", "platform", one_id, "", &["admin", "viewer"]).body.contains("created"));
    assert!(make_operator(&mut admin, "two_ops", "platform", two_id, "", &["operator"]).body.contains("created"));
    let mut one_admin = Person::new(&server);
    assert_eq!(one_admin.login("one_admin", "a long enough password").status, 303);
    assert_eq!(one_admin.get("/portal/").location.as_deref(), Some("/portal/platform"));
    assert_eq!(one_admin.get("/portal/system").status, 404);
    let system_try = make_operator(&mut one_admin, "sneaky", "system", "", "", &["admin"]);
    assert!(system_try.body.contains("within your own scope"), "{}", system_try.body);
    // Naming the other platform makes an operator of its own platform, never of the other one.
    let made = make_operator(&mut one_admin, "one_ops", "platform", two_id, "", &["operator"]);
    assert!(made.body.contains("created"));
    let list = one_admin.get("/portal/operators");
    assert!(list.body.contains("one_ops") && !list.body.contains("two_ops") && !list.body.contains("<td>admin</td>"));
    assert!(list.body.contains(&format!("platform {one_id}")) && !list.body.contains(&format!("platform {two_id}")));
    let audit = one_admin.get("/portal/audit");
    assert!(audit.body.contains("one_ops") && !audit.body.contains("two_ops"), "the audit log keeps to the scope");
    let csv = one_admin.get("/portal/audit?format=csv");
    assert!(csv.content_type.starts_with("text/csv"));
    assert!(csv.body.starts_with("sequence,at,operator,roles,scope,action,target,before,after,from,outcome"));
    assert!(csv.body.contains("operator.create") && !csv.body.contains("two_ops"));
    server.stop();
}

#[test]
fn four_eyes_a_rotation_is_carried_out_only_when_another_approver_approves() {
    let dir = tempfile::tempdir().unwrap();
    let server = started(dir.path());
    let (_, one) = create_platform(&server, TOKEN, r#"{"name": "One"}"#);
    let (_, two) = create_platform(&server, TOKEN, r#"{"name": "Two"}"#);
    let (one_id, two_id, old_secret) = (one["platform_id"].as_str().unwrap(), two["platform_id"].as_str().unwrap(), one["secret"].as_str().unwrap());
    let mut admin = admin(&server);
    make_operator(&mut admin, "proposer", "platform", one_id, "", &["operator", "approver"]);
    make_operator(&mut admin, "approver", "platform", one_id, "", &["approver", "admin"]);
    make_operator(&mut admin, "plain", "platform", one_id, "", &["approver"]);
    make_operator(&mut admin, "other", "platform", two_id, "", &["approver"]);
    let mut proposer = Person::new(&server);
    proposer.login("proposer", "a long enough password");
    let csrf = proposer.csrf();
    let proposed = proposer.post("/portal/approvals", &[("csrf", &csrf), ("kind", "rotate_secret"), ("overlap_seconds", "3600"), ("note", "leaked in a log")]);
    assert!(proposed.body.contains("Proposal 1 recorded"), "{}", proposed.body);
    // The proposer cannot approve its own proposal, even with the approver role.
    let own = proposer.post("/portal/approvals/1/approve", &[("csrf", &csrf)]);
    assert!(own.body.contains("another operator than the one who proposed"), "{}", own.body);
    // An approver of another platform does not see it.
    let mut other = Person::new(&server);
    other.login("other", "a long enough password");
    let csrf_other = other.csrf();
    assert_eq!(other.post("/portal/approvals/1/approve", &[("csrf", &csrf_other)]).status, 404);
    assert!(!other.get("/portal/approvals?status=all").body.contains("leaked in a log"));
    // Nothing happened yet: the old secret alone signs.
    let signed = |secret: &str| signed_get_json(&server, "/v1/orders?limit=1", one_id, secret, &fresh_nonce()).0;
    assert_eq!(signed(old_secret), 200);
    // Helper 126#1: an approver without the admin role cannot approve it (the new API secret
    // would be shown to it, and with it the admin's powers: the webhook's secret and settings).
    let mut plain = Person::new(&server);
    plain.login("plain", "a long enough password");
    let csrf_plain = plain.csrf();
    let refused = plain.post("/portal/approvals/1/approve", &[("csrf", &csrf_plain)]);
    assert!(refused.body.contains("needs the admin role too") && !refused.body.contains("new-secret"), "{}", refused.body);
    assert_eq!(signed(old_secret), 200);
    let mut approver = Person::new(&server);
    approver.login("approver", "a long enough password");
    let csrf_approver = approver.csrf();
    let approved = approver.post("/portal/approvals/1/approve", &[("csrf", &csrf_approver)]);
    assert!(approved.body.contains("executed"), "{}", approved.body);
    let at = approved.body.find("id=\"new-secret\">").expect("the new secret is shown once") + "id=\"new-secret\">".len();
    let new_secret = approved.body[at..].split('<').next().unwrap().to_string();
    assert_eq!(signed(&new_secret), 200);
    assert_eq!(signed(old_secret), 200, "the old secret verifies during the overlap");
    // Decided once: a second approval is refused.
    assert!(approver.post("/portal/approvals/1/approve", &[("csrf", &csrf_approver)]).body.contains("already"));
    let audit = admin.get("/portal/audit?action=approval.");
    for action in ["approval.propose", "approval.approve", "approval.executed"] {
        assert!(audit.body.contains(action), "{action}");
    }
    assert!(!audit.body.contains(&new_secret), "the secret is not in the audit log");
    server.stop();
}

#[test]
fn four_eyes_an_adjustment_moves_money_once_and_suspense_stays_with_the_system() {
    let dir = tempfile::tempdir().unwrap();
    let server = started(dir.path());
    let (client, payer, payee) = platform_with_a_funded_payer(&server);
    let mut admin = admin(&server);
    make_operator(&mut admin, "clerk", "platform", &client.platform, "", &["operator"]);
    make_operator(&mut admin, "checker", "platform", &client.platform, "", &["approver"]);
    let mut clerk = Person::new(&server);
    clerk.login("clerk", "a long enough password");
    let csrf = clerk.csrf();
    let adjustment = [
        ("csrf", csrf.as_str()),
        ("kind", "adjustment"),
        ("from", payer.as_str()),
        ("to", payee.as_str()),
        ("amount", "12.50"),
        ("currency", "CNY"),
        ("reason", "goods returned offline"),
    ];
    assert!(clerk.post("/portal/approvals", &adjustment).body.contains("Proposal 1 recorded"));
    let from_suspense = [
        ("csrf", csrf.as_str()),
        ("kind", "adjustment"),
        ("from", "suspense"),
        ("to", payee.as_str()),
        ("amount", "1.00"),
        ("currency", "CNY"),
        ("reason", "x"),
    ];
    assert!(clerk.post("/portal/approvals", &from_suspense).body.contains("only system operators"));
    assert_eq!(client.balances(&payer).0, "100.00", "nothing moves before the approval");
    let mut checker = Person::new(&server);
    checker.login("checker", "a long enough password");
    let csrf_checker = checker.csrf();
    let approved = checker.post("/portal/approvals/1/approve", &[("csrf", &csrf_checker)]);
    assert!(approved.body.contains("executed"), "{}", approved.body);
    assert_eq!(client.balances(&payer).0, "87.50");
    assert_eq!(client.balances(&payee).1, "12.50", "an adjustment lands in settled funds");
    let (_, listed) = client.get(&format!("/v1/orders?kind=adjustment&account_id={payer}"));
    assert_eq!(listed["orders"].as_array().map(Vec::len), Some(1), "{listed}");
    assert!(checker.post("/portal/approvals/1/approve", &[("csrf", &csrf_checker)]).body.contains("already"));
    assert_eq!(client.balances(&payer).0, "87.50", "carried out once");
    server.stop();
}

/// A server that stops between an approval and storing its outcome leaves the proposal
/// `approved`: another approver carries it out again from the Approvals page, once. Proposal 1
/// went through the engine before the stop (the retry is the engine's replay: the same order,
/// no second movement); proposal 2 never reached it (the retry moves its money, once).
#[test]
fn an_approval_left_without_outcome_by_a_stop_is_carried_out_again_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = started(dir.path());
    let client = Client::create(&server, TOKEN, r#"{"name": "One"}"#);
    let (platform, secret) = (client.platform.clone(), client.secret.clone());
    let (payer, payee) = (client.account(&client.member("m-a", "Ann")), client.account(&client.member("m-b", "Bob")));
    client.fund(&payer, "100.00", "fund-1");
    let mut admin = admin(&server);
    make_operator(&mut admin, "clerk", "platform", &platform, "", &["operator", "approver"]);
    make_operator(&mut admin, "checker", "platform", &platform, "", &["approver"]);
    let adjust = |person: &mut Person, amount: &str| {
        let csrf = person.csrf();
        let fields = [
            ("csrf", csrf.as_str()),
            ("kind", "adjustment"),
            ("from", payer.as_str()),
            ("to", payee.as_str()),
            ("amount", amount),
            ("currency", "CNY"),
            ("reason", "goods returned offline"),
        ];
        person.post("/portal/approvals", &fields)
    };
    let (mut clerk, mut checker) = (Person::new(&server), Person::new(&server));
    clerk.login("clerk", "a long enough password");
    checker.login("checker", "a long enough password");
    assert!(adjust(&mut clerk, "12.50").body.contains("Proposal 1 recorded"));
    assert!(adjust(&mut clerk, "3.00").body.contains("Proposal 2 recorded"));
    let csrf = checker.csrf();
    let approved = checker.post("/portal/approvals/1/approve", &[("csrf", &csrf)]);
    assert!(approved.body.contains("(executed)."), "{}", approved.body);
    let order = approved.body.split("approved: order ").nth(1).and_then(|rest| rest.split(' ').next()).expect("the order in the outcome").to_string();
    assert_eq!(client.balances(&payer).0, "87.50");
    drop(client);
    server.stop();
    // As a stop between the decision and its outcome leaves them: both approved by checker,
    // no outcome stored.
    {
        let store = storage_rocks::RocksStore::open(dir.path()).expect("the server's database");
        for id in [1u64, 2] {
            let key = storage::records::key("o/ap/", id);
            let mut proposal: serde_json::Value = serde_json::from_slice(&storage::Store::get(&store, &key).unwrap().expect("the proposal")).unwrap();
            proposal["status"] = "approved".into();
            proposal["outcome"] = "".into();
            proposal["decider"] = "checker".into();
            proposal["decided_by"] = 3.into();
            proposal["decided_at"] = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs().into();
            storage::Store::write(&store, &[(&key[..], &serde_json::to_vec(&proposal).unwrap()[..])]).unwrap();
        }
    }
    let server = started(dir.path());
    let client = Client { server: &server, platform, secret };
    let (mut clerk, mut checker) = (Person::new(&server), Person::new(&server));
    clerk.login("clerk", "a long enough password");
    checker.login("checker", "a long enough password");
    let listed = clerk.get("/portal/approvals?status=approved");
    assert!(listed.body.contains("outcome was never stored"), "{}", listed.body);
    assert!(!listed.body.contains("/portal/approvals/1/retry"), "not offered to its proposer");
    let csrf_clerk = clerk.csrf();
    assert!(clerk.post("/portal/approvals/1/retry", &[("csrf", &csrf_clerk)]).body.contains("another operator than the one who proposed"));
    assert!(checker.get("/portal/approvals?status=approved").body.contains("/portal/approvals/1/retry"));
    let csrf = checker.csrf();
    // Without the form's token nothing happens.
    assert_ne!(checker.post("/portal/approvals/2/retry", &[]).status, 200);
    assert_eq!(client.balances(&payer).0, "87.50");
    let again = checker.post("/portal/approvals/1/retry", &[("csrf", &csrf)]);
    assert!(again.body.contains(&format!("approved: order {order} succeeded (executed).")), "the engine's replay: {}", again.body);
    assert_eq!(client.balances(&payer).0, "87.50", "moved once");
    let again = checker.post("/portal/approvals/2/retry", &[("csrf", &csrf)]);
    assert!(again.body.contains("(executed)."), "{}", again.body);
    assert_eq!(client.balances(&payer).0, "84.50");
    assert_eq!(client.balances(&payee).1, "15.50");
    for id in [1, 2] {
        let refused = checker.post(&format!("/portal/approvals/{id}/retry"), &[("csrf", &csrf)]);
        assert!(refused.body.contains("this one is executed"), "{}", refused.body);
    }
    assert_eq!(client.balances(&payer).0, "84.50", "carried out once each");
    let (_, listed) = client.get(&format!("/v1/orders?kind=adjustment&account_id={payer}"));
    assert_eq!(listed["orders"].as_array().map(Vec::len), Some(2), "{listed}");
    assert!(checker.get("/portal/audit?action=approval.").body.contains("approval.retry"));
    drop(client);
    server.stop();
}

/// An operator approves nothing before it has chosen its own password: the one its maker chose
/// is known to the maker, who could otherwise approve as it what it proposed as another (two
/// operators of one admin). The same password again is not a new one.
#[test]
fn an_approver_approves_only_once_it_chose_its_own_password() {
    let dir = tempfile::tempdir().unwrap();
    let server = started(dir.path());
    let (client, payer, payee) = platform_with_a_funded_payer(&server);
    let mut admin = admin(&server);
    make_operator(&mut admin, "clerk", "platform", &client.platform, "", &["operator"]);
    let csrf = admin.csrf();
    let fields = [
        ("csrf", csrf.as_str()),
        ("username", "fresh"),
        ("display_name", "fresh"),
        ("kind", "platform"),
        ("platform", client.platform.as_str()),
        ("member", ""),
        ("role", "approver"),
        ("password", MAKERS_PASSWORD),
    ];
    assert!(admin.post("/portal/operators", &fields).body.contains("Operator fresh created"));
    let mut clerk = Person::new(&server);
    clerk.login("clerk", "a long enough password");
    assert!(propose_adjustment(&mut clerk, &payer, &payee, "12.50").body.contains("Proposal 1 recorded"));
    let mut fresh = Person::new(&server);
    assert_eq!(fresh.login("fresh", MAKERS_PASSWORD).status, 303);
    assert!(fresh.get("/portal/account").body.contains("choose your own"));
    let csrf = fresh.csrf();
    let refused = fresh.post("/portal/approvals/1/approve", &[("csrf", &csrf)]);
    assert!(refused.body.contains("choose your own password first"), "{}", refused.body);
    assert_eq!(client.balances(&payer).0, "100.00", "nothing moved");
    let same = fresh.post("/portal/account/password", &[("csrf", &csrf), ("current", MAKERS_PASSWORD), ("password", MAKERS_PASSWORD)]);
    assert!(same.body.contains("choose a new password"), "{}", same.body);
    Person::take_over_at(&server.base, "fresh", "fresh's own long password");
    let mut fresh = Person::new(&server);
    assert_eq!(fresh.login("fresh", "fresh's own long password").status, 303);
    let csrf = fresh.csrf();
    let approved = fresh.post("/portal/approvals/1/approve", &[("csrf", &csrf)]);
    assert!(approved.body.contains("(executed)."), "{}", approved.body);
    assert_eq!(client.balances(&payer).0, "87.50");
    server.stop();
}
