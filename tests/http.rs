//! End-to-end tests of the HTTP server: the real binary on 127.0.0.1 with a temporary RocksDB.

mod support;

use support::*;

#[test]
fn health_readiness_and_operator_views() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), Some("operator-secret-1-0123456789abcdef0123456789abcdef"));
    assert_eq!(server.get("/healthz", None), (200, serde_json::json!({"status": "ok"})));
    assert_eq!(server.get("/readyz", None), (200, serde_json::json!({"status": "ready"})));
    let cases: &[(&str, Option<&str>, u16, &str)] = &[
        ("/admin/shards", None, 401, "unauthenticated"),
        ("/admin/shards", Some("wrong"), 401, "unauthenticated"),
        ("/admin/invariants", Some("operator-secret-"), 401, "unauthenticated"),
        ("/admin/shards/7", Some("operator-secret-1-0123456789abcdef0123456789abcdef"), 404, "not_found"),
        // Not a shard number at all (the document types it 0-65535): 400 naming it.
        ("/admin/shards/x", Some("operator-secret-1-0123456789abcdef0123456789abcdef"), 400, "invalid_request"),
        ("/no/such/path", None, 404, "not_found"),
    ];
    for (path, token, status, code) in cases {
        let (got, body) = server.get(path, *token);
        assert_eq!((got, body["error"]["code"].as_str()), (*status, Some(*code)), "{path} {token:?}: {body}");
    }
    let (status, shards) = server.get("/admin/shards", Some("operator-secret-1-0123456789abcdef0123456789abcdef"));
    assert_eq!(status, 200);
    let shards = shards["shards"].as_array().expect("shards").clone();
    assert_eq!(shards.len(), 2);
    assert!(shards.iter().all(|s| s["stopped"] == false && s["last_sequence"].as_u64().unwrap() >= 1));
    let (status, one) = server.get("/admin/shards/1", Some("operator-secret-1-0123456789abcdef0123456789abcdef"));
    assert_eq!((status, one["shard"].as_u64()), (200, Some(1)));
    let (status, report) = server.get("/admin/invariants", Some("operator-secret-1-0123456789abcdef0123456789abcdef"));
    assert_eq!(status, 200);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["currencies"][0]["sum_minor"], "0");
    assert!(!server.lines.iter().any(|l| l.contains("operator-secret-1-0123456789abcdef0123456789abcdef")), "a token from the environment is never printed");
    server.stop();
}

#[test]
fn a_sigterm_the_moment_the_address_is_printed_is_a_graceful_stop() {
    // The stop signal's handlers are installed before the `API:` line: a SIGTERM sent as soon as
    // the address is known stops the server gracefully (exit status 0, asserted by `stop`),
    // never kills it with the signal.
    for _ in 0..5 {
        let dir = tempfile::tempdir().expect("tempdir");
        start(dir.path(), Some("sigterm-token-0123456789abcdefghijklmnop")).stop();
    }
}

#[test]
fn a_generated_operator_token_is_private_and_survives_restarts() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), None);
    let path = dir.path().join("admin-token");
    let token = std::fs::read_to_string(&path).expect("token file");
    assert_eq!(std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777, 0o600);
    assert!(server.lines.iter().any(|l| l.contains(&token)), "printed once on first start");
    assert_eq!(server.get("/admin/shards", Some(&token)).0, 200);
    server.stop();
    let again = start(dir.path(), None);
    assert!(!again.lines.iter().any(|l| l.contains(&token)), "not printed again");
    assert_eq!(again.get("/admin/invariants", Some(&token)).0, 200);
    again.stop();
}

#[test]
fn platforms_sign_their_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "operator-secret-2-0123456789abcdef0123456789abcdef";
    let server = start(dir.path(), Some(token));
    let bad_bodies: &[(&str, &str)] = &[
        ("{\"name\": \"\"}", "invalid_request"),
        ("{\"name\": \"x\", \"settlement_cycle_days\": 31}", "invalid_request"),
        ("{\"name\": \"x\", \"auto_confirm_days\": 0}", "invalid_request"),
        ("{\"name\": \"x\", \"colour\": \"red\"}", "invalid_request"),
        ("{\"name\": 5}", "invalid_request"),
        ("not json", "invalid_request"),
    ];
    for (body, code) in bad_bodies {
        let (status, reply) = create_platform(&server, token, body);
        assert_eq!((status, reply["error"]["code"].as_str()), (400, Some(*code)), "{body}: {reply}");
    }
    assert_eq!(create_platform(&server, "wrong", "{\"name\": \"x\"}").0, 401);
    let (status, created) = create_platform(&server, token, "{\"name\": \"Home Decor Mall\", \"settlement_cycle_days\": 2}");
    assert_eq!(status, 201, "{created}");
    let platform = created["platform_id"].as_str().expect("id").to_string();
    let secret = created["secret"].as_str().expect("secret").to_string();
    assert_eq!((created["settlement_cycle_days"].as_u64(), created["auto_confirm_days"].as_u64()), (Some(2), Some(15)));
    let (_, other) = create_platform(&server, token, "{\"name\": \"Other\"}");
    assert_ne!(other["platform_id"], created["platform_id"]);
    assert_ne!(other["secret"], created["secret"]);

    let t = now();
    let good = |nonce: &str| sign(&secret, "GET", "/v1/platform", t, nonce, b"");
    let (status, me) = signed_get(&server, "/v1/platform", &platform, t, "nonce0000000001", &good("nonce0000000001"));
    assert_eq!(status, 401, "a 15-character nonce is too short: {me}");
    let (status, me) = signed_get(&server, "/v1/platform", &platform, t, "nonce00000000001", &good("nonce00000000001"));
    assert_eq!((status, me["name"].as_str()), (200, Some("Home Decor Mall")), "{me}");
    // Timestamps 305 s off, not 301: the server's clock may have moved on a second since `t`.
    let cases: Vec<(&str, String, i64, &str, String, &str)> = vec![
        ("replayed nonce", platform.clone(), t, "nonce00000000001", good("nonce00000000001"), "replayed_request"),
        ("bad signature", platform.clone(), t, "nonce00000000002", good("nonce00000000099"), "unauthenticated"),
        ("other platform's id", other["platform_id"].as_str().unwrap().to_string(), t, "nonce00000000003", good("nonce00000000003"), "unauthenticated"),
        ("unknown platform", "plt_999".into(), t, "nonce00000000004", good("nonce00000000004"), "unauthenticated"),
        (
            "old timestamp",
            platform.clone(),
            t - 305,
            "nonce00000000005",
            sign(&secret, "GET", "/v1/platform", t - 305, "nonce00000000005", b""),
            "timestamp_out_of_window",
        ),
        (
            "future timestamp",
            platform.clone(),
            t + 305,
            "nonce00000000006",
            sign(&secret, "GET", "/v1/platform", t + 305, "nonce00000000006", b""),
            "timestamp_out_of_window",
        ),
        ("signed for another path", platform.clone(), t, "nonce00000000007", sign(&secret, "GET", "/v1/orders", t, "nonce00000000007", b""), "unauthenticated"),
    ];
    for (name, platform_id, timestamp, nonce, signature, code) in cases {
        let (status, reply) = signed_get(&server, "/v1/platform", &platform_id, timestamp, nonce, &signature);
        assert_eq!((status, reply["error"]["code"].as_str()), (401, Some(code)), "{name}: {reply}");
    }
    // A signing header given twice is refused whichever value comes first (a proxy reading the
    // other would see another platform, time or signature), and so is a timestamp with a sign.
    let raw = |headers: &[(&str, String)]| -> (u16, String) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(server.base.trim_start_matches("http://")).expect("connect");
        let mut head = "GET /v1/platform HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n".to_string();
        headers.iter().for_each(|(name, value)| head.push_str(&format!("{name}: {value}\r\n")));
        stream.write_all(format!("{head}\r\n").as_bytes()).expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read");
        (answer.get(9..12).and_then(|code| code.parse().ok()).unwrap_or(0), answer)
    };
    let t = now();
    let signed = |nonce: &str| {
        vec![
            ("X-Platform-Id", platform.clone()),
            ("X-Timestamp", t.to_string()),
            ("X-Nonce", nonce.to_string()),
            ("X-Signature", sign(&secret, "GET", "/v1/platform", t, nonce, b"")),
        ]
    };
    let (status, answer) = raw(&signed("nonceRaw00000001"));
    assert_eq!(status, 200, "the same request, each header once: {answer}");
    for (name, value) in [
        ("X-Platform-Id", other["platform_id"].as_str().unwrap().to_string()),
        ("X-Timestamp", "0".to_string()),
        ("X-Nonce", "nonceRawOther0001".to_string()),
        ("X-Signature", "0".repeat(64)),
    ] {
        for (at, nonce) in [(0, "nonceRaw00000002"), (4, "nonceRaw00000003")] {
            let mut headers = signed(nonce);
            headers.insert(at, (name, value.clone()));
            let (status, answer) = raw(&headers);
            assert!(status == 401 && answer.contains("unauthenticated"), "{name} twice (the other one at {at}): {answer}");
        }
    }
    let plus = format!("+{t}");
    // Signed over the text as sent (the signature is right; the timestamp's form is not).
    let signature = {
        use hmac::{Hmac, Mac};
        use sha2::{Digest, Sha256};
        let canonical = format!("GET\n/v1/platform\n{plus}\nnonceRaw00000004\n{}", hex::encode(Sha256::digest(b"")));
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(canonical.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    };
    let (status, answer) =
        raw(&[("X-Platform-Id", platform.clone()), ("X-Timestamp", plus.clone()), ("X-Nonce", "nonceRaw00000004".to_string()), ("X-Signature", signature)]);
    assert!(status == 401 && answer.contains("X-Timestamp must be unix seconds"), "{answer}");
    let (status, reply) = match ureq::get(&format!("{}/v1/platform", server.base)).call() {
        Err(ureq::Error::Status(status, response)) => (status, response.into_json::<serde_json::Value>().expect("JSON")),
        other => panic!("unsigned request answered {other:?}"),
    };
    assert_eq!((status, reply["error"]["code"].as_str()), (401, Some("unauthenticated")));
    server.stop();

    // Platforms and their secrets survive a restart (the secret is derived, never stored).
    let again = start(dir.path(), Some(token));
    let t = now();
    let (status, me) =
        signed_get(&again, "/v1/platform", &platform, t, "nonceAfterRestart1", &sign(&secret, "GET", "/v1/platform", t, "nonceAfterRestart1", b""));
    assert_eq!((status, me["platform_id"].as_str()), (200, Some(platform.as_str())), "{me}");
    again.stop();
    let stored = std::fs::read_dir(dir.path()).expect("data dir").filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file());
    for file in stored {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "secret found in {}", file.display());
    }
}

/// Sends a signed POST of `body` as the platform; returns status, Idempotent-Replay header and JSON.
#[test]
fn members_are_validated_created_once_and_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "operator-secret-3-0123456789abcdef0123456789abcdef";
    let server = start(dir.path(), Some(token));
    let (_, created) = create_platform(&server, token, "{\"name\": \"Renovation Hub\"}");
    let (platform, secret) = (created["platform_id"].as_str().unwrap().to_string(), created["secret"].as_str().unwrap().to_string());
    let mut nonce = 0u32;
    let mut post = |body: &str| {
        nonce += 1;
        signed_post(&server, "/v1/members", &platform, &secret, &format!("membersnonce{nonce:08}"), body)
    };
    let member = |no: &str, kind: &str, name: &str, id: &str, phone: &str| {
        format!("{{\"out_order_no\": \"{no}\", \"type\": \"{kind}\", \"name\": \"{name}\", \"id_number\": \"{id}\", \"phone\": \"{phone}\"}}")
    };
    let cases: Vec<(String, u16, &str, Option<&str>)> = vec![
        (member("m-1", "individual", "Zhang San", "110105194912310021", "13800138000"), 400, "invalid_id_number", Some("id_number")),
        (member("m-1", "enterprise", "Acme Decor", "11010519491231002X", "13800138000"), 400, "invalid_id_number", Some("id_number")),
        (member("m-1", "robot", "R2", "11010519491231002X", "13800138000"), 400, "invalid_request", Some("type")),
        (member("m-1", "individual", "", "11010519491231002X", "13800138000"), 400, "invalid_request", Some("name")),
        (member("m-1", "individual", "Zhang San", "11010519491231002X", "12345"), 400, "invalid_request", Some("phone")),
        (member("bad no!", "individual", "Zhang San", "11010519491231002X", "13800138000"), 400, "invalid_request", Some("out_order_no")),
        // A missing or an unknown field is named (session 64, helper 110).
        ("{\"out_order_no\": \"m-1\"}".to_string(), 400, "invalid_request", Some("type")),
        (
            "{\"out_order_no\": \"m-1\", \"type\": \"individual\", \"name\": \"a\", \"id_number\": \"x\", \"phone\": \"1\", \"extra\": 1}".to_string(),
            400,
            "invalid_request",
            Some("extra"),
        ),
    ];
    for (body, status, code, param) in &cases {
        let (got, _, reply) = post(body);
        assert_eq!((got, reply["error"]["code"].as_str(), reply["error"]["param"].as_str()), (*status, Some(*code), *param), "{body}: {reply}");
    }
    let zhang = member("m-1", "individual", "Zhang San", "11010519491231002x", "13800138000");
    let (status, replayed, first) = post(&zhang);
    assert_eq!((status, replayed), (201, false), "{first}");
    assert_eq!((first["type"].as_str(), first["name"].as_str(), first["status"].as_str()), (Some("individual"), Some("Zhang San"), Some("active")));
    // The same order number and body: the first answer again, marked as a replay.
    let (status, replayed, again) = post(&zhang);
    assert_eq!((status, replayed, &again), (201, true, &first));
    // The same order number with another body: a conflict.
    let (status, _, conflict) = post(&member("m-1", "individual", "Li Si", "11010519491231002X", "13800138000"));
    assert_eq!((status, conflict["error"]["code"].as_str()), (409, Some("idempotency_conflict")));
    let (status, _, company) = post(&member("m-2", "enterprise", "Acme Decor", "91350100M000100Y43", "13900139000"));
    assert_eq!(status, 201, "{company}");
    assert_ne!(company["member_id"], first["member_id"]);
    server.stop();

    // After a restart the order number still replays the same member.
    let server = start(dir.path(), Some(token));
    let (status, replayed, after) = signed_post(&server, "/v1/members", &platform, &secret, "membersnonceAfter01", &zhang);
    assert_eq!((status, replayed, &after), (201, true, &first));
    server.stop();
}

#[test]
fn accounts_open_once_per_member_and_currency_and_stay_in_their_platform() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "operator-secret-4-0123456789abcdef0123456789abcdef";
    let server = start(dir.path(), Some(token));
    let (_, a) = create_platform(&server, token, "{\"name\": \"A\"}");
    let (_, b) = create_platform(&server, token, "{\"name\": \"B\"}");
    let (pa, sa) = (a["platform_id"].as_str().unwrap().to_string(), a["secret"].as_str().unwrap().to_string());
    let (pb, sb) = (b["platform_id"].as_str().unwrap().to_string(), b["secret"].as_str().unwrap().to_string());
    let person =
        "{\"out_order_no\": \"m1\", \"type\": \"individual\", \"name\": \"Wang Wu\", \"id_number\": \"11010519491231002X\", \"phone\": \"13700137000\"}";
    let (_, _, member) = signed_post(&server, "/v1/members", &pa, &sa, "accountsnonce0001", person);
    let member_id = member["member_id"].as_str().unwrap().to_string();
    let open = |no: &str, member: &str, currency: &str| format!("{{\"out_order_no\": \"{no}\", \"member_id\": \"{member}\", \"currency\": \"{currency}\"}}");

    let (status, replayed, account) = signed_post(&server, "/v1/accounts", &pa, &sa, "accountsnonce0002", &open("a1", &member_id, "CNY"));
    assert_eq!((status, replayed), (201, false), "{account}");
    let account_id = account["account_id"].as_str().unwrap().to_string();
    let number = account["virtual_account_no"].as_str().unwrap().to_string();
    assert_eq!((number.len(), &number[..4]), (17, "6229"));
    assert_eq!((account["currency"].as_str(), account["status"].as_str()), (Some("CNY"), Some("normal")));
    let (status, replayed, again) = signed_post(&server, "/v1/accounts", &pa, &sa, "accountsnonce0003", &open("a1", &member_id, "CNY"));
    assert_eq!((status, replayed, &again), (201, true, &account));
    let failures = [
        (open("a2", &member_id, "CNY"), 409, "account_exists"),
        (open("a1", &member_id, "USD"), 409, "idempotency_conflict"),
        (open("a3", "mem_999", "CNY"), 404, "not_found"),
        (open("a4", &member_id, "EUR"), 400, "invalid_request"),
        (open("bad no", &member_id, "CNY"), 400, "invalid_request"),
    ];
    for (index, (body, status, code)) in failures.iter().enumerate() {
        let (got, _, reply) = signed_post(&server, "/v1/accounts", &pa, &sa, &format!("accountsfail{index:06}"), body);
        assert_eq!((got, reply["error"]["code"].as_str()), (*status, Some(*code)), "{body}: {reply}");
    }
    let (status, usd) = {
        let (s, _, v) = signed_post(&server, "/v1/accounts", &pa, &sa, "accountsnonce0004", &open("a5", &member_id, "USD"));
        (s, v)
    };
    assert_eq!(status, 201, "{usd}");
    // Platform B may not open accounts for A's member, nor see A's account.
    let (status, _, reply) = signed_post(&server, "/v1/accounts", &pb, &sb, "accountsnonce0005", &open("b1", &member_id, "CNY"));
    assert_eq!((status, reply["error"]["code"].as_str()), (404, Some("not_found")));
    let path = format!("/v1/accounts/{account_id}");
    let (status, reply) = signed_get_json(&server, &path, &pb, &sb, "accountsnonce0006");
    assert_eq!((status, reply["error"]["code"].as_str()), (404, Some("not_found")));
    let (status, shown) = signed_get_json(&server, &path, &pa, &sa, "accountsnonce0007");
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["member_id"].as_str(), Some(member_id.as_str()));
    assert_eq!(shown["virtual_account_no"].as_str(), Some(number.as_str()));
    assert_eq!(shown["balances"], serde_json::json!({"available": "0.00", "withdrawable": "0.00", "frozen": "0.00", "unsettled": "0.00"}));
    let (status, _) = signed_get_json(&server, "/v1/accounts/acc_99999", &pa, &sa, "accountsnonce0008");
    assert_eq!(status, 404);
    server.stop();
}

#[test]
fn metrics_show_commands_by_result_shard_state_and_http_latency() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "operator-secret-5-0123456789abcdef0123456789abcdef";
    let server = start(dir.path(), Some(token));
    let (_, created) = create_platform(&server, token, "{\"name\": \"M\"}");
    let (platform, secret) = (created["platform_id"].as_str().unwrap().to_string(), created["secret"].as_str().unwrap().to_string());
    let person =
        "{\"out_order_no\": \"m1\", \"type\": \"individual\", \"name\": \"Zhao Liu\", \"id_number\": \"11010519491231002X\", \"phone\": \"13600136000\"}";
    let (_, _, member) = signed_post(&server, "/v1/members", &platform, &secret, "metricsnonce00001", person);
    let body = format!("{{\"out_order_no\": \"a1\", \"member_id\": \"{}\", \"currency\": \"CNY\"}}", member["member_id"].as_str().unwrap());
    assert_eq!(signed_post(&server, "/v1/accounts", &platform, &secret, "metricsnonce00002", &body).0, 201);
    assert_eq!(signed_post(&server, "/v1/accounts", &platform, &secret, "metricsnonce00003", &body.replace("a1", "a2")).0, 409);
    let scrape = |token: &str| match ureq::get(&format!("{}/metrics", server.base)).set("Authorization", &format!("Bearer {token}")).call() {
        Ok(response) => (response.status(), response.into_string().expect("text")),
        Err(ureq::Error::Status(status, response)) => (status, response.into_string().unwrap_or_default()),
        Err(error) => panic!("scrape: {error}"),
    };
    assert_eq!(scrape("wrong").0, 401);
    let (status, text) = scrape(token);
    assert_eq!(status, 200);
    let has = |needle: &str| {
        text.lines()
            .any(|l| l.starts_with(needle.split('{').next().unwrap()) && needle.split(['{', ',', '}']).filter(|p| !p.is_empty()).all(|part| l.contains(part)))
    };
    assert!(has("clearing_commands_total{kind=\"open_account\",result=\"ok\"}"), "{text}");
    assert!(has("clearing_commands_total{kind=\"open_account\",result=\"account_exists\"}"), "{text}");
    assert!(has("clearing_shard_mailbox_depth{shard=\"1\"}"), "{text}");
    assert!(has("clearing_shard_fsync_duration_seconds_count{shard=\"0\"}"), "{text}");
    assert!(has("clearing_http_request_duration_seconds{method=\"POST\",route=\"/v1/accounts\",status=\"2xx\"}"), "{text}");
    server.stop();
}

#[test]
fn oversized_and_malformed_requests_get_json_errors_not_5xx() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "operator-secret-6-0123456789abcdef0123456789abcdef";
    let server = start(dir.path(), Some(token));
    let post = |path: &str, body: &[u8]| match ureq::post(&format!("{}{path}", server.base))
        .set("Authorization", &format!("Bearer {token}"))
        .set("Content-Type", "application/json")
        .send_bytes(body)
    {
        Ok(response) => (response.status(), response.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(status, response)) => (status, response.into_string().unwrap_or_default()),
        Err(error) => panic!("POST {path}: {error}"),
    };
    let huge = vec![b' '; 17 << 20];
    let (status, body) = post("/admin/platforms", &huge);
    assert_eq!(status, 413, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
    assert_eq!(json["error"]["code"], "payload_too_large");
    let cases: &[(&str, &[u8], u16, &str)] = &[
        ("/admin/platforms", b"{", 400, "invalid_request"),
        ("/admin/platforms", b"[]", 400, "invalid_request"),
        ("/admin/platforms", b"\xff\xfe", 400, "invalid_request"),
        ("/admin/platforms", b"{\"name\": \"x\", \"settlement_cycle_days\": -1}", 400, "invalid_request"),
        ("/admin/platforms", b"{\"name\": \"x\", \"settlement_cycle_days\": 1e3}", 400, "invalid_request"),
        // A documented path asked with a method it does not answer.
        ("/healthz", b"", 405, "method_not_allowed"),
    ];
    for (path, body, status, code) in cases {
        let (got, text) = post(path, body);
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}"));
        assert_eq!((got, json["error"]["code"].as_str()), (*status, Some(*code)), "{path} {body:?}: {text}");
    }
    server.stop();
}

/// `POST /admin/platforms` with an `out_order_no` makes one platform however often it is sent
/// (a retry after a lost answer shows the same platform and secret); other terms under the
/// same number are a conflict. Before session 58 every retry made another platform.
#[test]
fn creating_a_platform_with_an_order_number_twice_makes_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "operator-secret-58-0123456789abcdef0123456789abcdef";
    let server = start(dir.path(), Some(token));
    let post = |body: &str| {
        let request =
            ureq::post(&format!("{}/admin/platforms", server.base)).set("Authorization", &format!("Bearer {token}")).set("Content-Type", "application/json");
        let response = answer(request.send_string(body), "create platform");
        let replayed = response.header("Idempotent-Replay").map(str::to_string);
        (response.status(), replayed, response.into_json::<serde_json::Value>().expect("JSON"))
    };
    let body = r#"{"name": "Once", "settlement_cycle_days": 0, "out_order_no": "plt-create-1"}"#;
    let (status, replayed, first) = post(body);
    assert_eq!((status, replayed), (201, None), "{first}");
    let (status, replayed, again) = post(body);
    assert_eq!((status, replayed.as_deref()), (201, Some("true")), "{again}");
    assert_eq!((&again["platform_id"], &again["secret"]), (&first["platform_id"], &first["secret"]), "the same platform, the same secret");
    for other in [r#"{"name": "Other", "out_order_no": "plt-create-1"}"#, r#"{"name": "Once", "out_order_no": "plt-create-1"}"#] {
        let (status, _, refused) = post(other);
        assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("idempotency_conflict")), "{other}: {refused}");
    }
    let (status, _, refused) = post(r#"{"name": "Bad", "out_order_no": "not a number!"}"#);
    assert_eq!((status, refused["error"]["param"].as_str()), (400, Some("out_order_no")), "{refused}");
    let (platform, secret) = (first["platform_id"].as_str().unwrap(), first["secret"].as_str().unwrap());
    assert_eq!(signed_get_json(&server, "/v1/platform", platform, secret, &fresh_nonce()).0, 200, "the secret shown again signs");
    let (_, _, unnumbered) = post(r#"{"name": "Twice"}"#);
    let (_, _, second) = post(r#"{"name": "Twice"}"#);
    assert_ne!(unnumbered["platform_id"], second["platform_id"], "without a number each request makes one");
    server.stop();
}
