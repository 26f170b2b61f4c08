//! End-to-end tests of per-platform quotas (issue item 11 and the quotas): a platform over its
//! request rate or its share of the nonce cache is answered 429 `rate_limited` with
//! `Retry-After`, and another platform's requests go through meanwhile.

mod support;

use support::*;

const TOKEN: &str = "quotas-token-0123456789abcdefghijklmn";

/// A signed GET at timestamp `t`: status, `Retry-After` and body.
fn get_at(server: &Server, client: &Client, path: &str, t: i64) -> (u16, Option<String>, serde_json::Value) {
    let nonce = fresh_nonce();
    let signature = sign(&client.secret, "GET", path, t, &nonce, b"");
    let request = ureq::get(&format!("{}{path}", server.base))
        .set("X-Platform-Id", &client.platform)
        .set("X-Timestamp", &t.to_string())
        .set("X-Nonce", &nonce)
        .set("X-Signature", &signature);
    let response = answer(request.call(), path);
    let retry_after = response.header("Retry-After").map(str::to_string);
    (response.status(), retry_after, response.into_json().expect("JSON"))
}

#[test]
fn a_platform_over_its_rate_gets_429_with_retry_after_and_another_is_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_with(&[("# [quotas.platforms.plt_7]", "[quotas.platforms.plt_1]\nrequests_per_second = 1\nburst = 3")]);
    let server = start_configured(dir.path(), TOKEN, &config);
    let slow = Client::create(&server, TOKEN, "{\"name\": \"Slow\"}");
    let other = Client::create(&server, TOKEN, "{\"name\": \"Other\"}");
    assert_eq!(slow.platform, "plt_1");
    let mut limited = 0;
    for index in 0..10 {
        let (status, retry_after, body) = get_at(&server, &slow, "/v1/platform", now());
        if index < 3 {
            assert_eq!(status, 200, "the burst is served: {body}");
        }
        if status == 429 {
            limited += 1;
            assert_eq!(body["error"]["code"], "rate_limited", "{body}");
            let seconds: u32 = retry_after.expect("Retry-After").parse().expect("seconds");
            assert!(seconds >= 1, "{seconds}");
        }
        let (status, retry_after, body) = get_at(&server, &other, "/v1/platform", now());
        assert_eq!((status, retry_after), (200, None), "another platform is never limited by this one: {body}");
    }
    assert!(limited >= 5, "a platform at 1 request/s with a burst of 3 sent 10 at once; {limited} were limited");
    server.stop();
}

#[test]
fn a_platform_filling_its_nonce_share_with_future_timestamps_leaves_others_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_with(&[("# [quotas.platforms.plt_7]", "[quotas.platforms.plt_1]\nnonces_max = 20")]);
    let server = start_configured(dir.path(), TOKEN, &config);
    let flooder = Client::create(&server, TOKEN, "{\"name\": \"Flooder\"}");
    let other = Client::create(&server, TOKEN, "{\"name\": \"Other\"}");
    assert_eq!(flooder.platform, "plt_1");
    // Timestamps 290 s ahead stay in the cache longest (the window is 300 s either way).
    for _ in 0..20 {
        let (status, _, body) = get_at(&server, &flooder, "/v1/platform", now() + 290);
        assert_eq!(status, 200, "{body}");
    }
    let (status, retry_after, body) = get_at(&server, &flooder, "/v1/platform", now() + 290);
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("rate_limited")), "{body}");
    let seconds: i64 = retry_after.expect("Retry-After").parse().expect("seconds");
    assert!((1..=601).contains(&seconds), "until its oldest nonce leaves the window: {seconds}");
    for _ in 0..30 {
        let (status, _, body) = get_at(&server, &other, "/v1/platform", now());
        assert_eq!(status, 200, "another platform keeps its own share: {body}");
    }
    server.stop();
}
