//! The bank simulator's pages show every platform's orders and any card's deposits: only the
//! operator sees them, and a production configuration turns them off. The bank's signed
//! callbacks are served either way.

mod support;

use support::*;

const TOKEN: &str = "simulator-pages-operator-token-0123456789";
const PAGES: [&str; 2] = ["/sim/cards/4111111111111111/transactions", "/sim/channels/sim_gateway/statements/2026-01-05"];

fn status(server: &Server, path: &str, token: Option<&str>) -> (u16, Option<String>) {
    let mut request = ureq::get(&format!("{}{path}", server.base));
    if let Some(token) = token {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    let response = answer(request.call(), path);
    let status = response.status();
    let body = response.into_string().expect("body");
    let code = serde_json::from_str::<serde_json::Value>(&body).ok().and_then(|b| b["error"]["code"].as_str().map(str::to_string));
    (status, code)
}

#[test]
fn the_simulator_pages_need_the_operator_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_configured(dir.path(), TOKEN, &config_with(&[]));
    for page in PAGES {
        assert_eq!(status(&server, page, None), (401, Some("unauthenticated".into())), "{page}");
        assert_eq!(status(&server, page, Some("simulator-pages-operator-token-012345678")), (401, Some("unauthenticated".into())), "{page}");
        assert_eq!(status(&server, page, Some(TOKEN)).0, 200, "{page}");
    }
    server.stop();
}

fn link(server: &Server, card_no: &str, body: &str) -> (u16, serde_json::Value) {
    let request = ureq::post(&format!("{}/admin/sim/cards/{card_no}/link", server.base)).set("Authorization", &format!("Bearer {TOKEN}"));
    let response = answer(request.send_string(body), "link");
    (response.status(), response.into_json().expect("JSON"))
}

#[test]
fn a_card_holder_reads_their_own_card_through_a_short_lived_link() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_configured(dir.path(), TOKEN, &config_with(&[]));
    let (code, issued) = link(&server, "4111111111111111", "{\"seconds\": 2}");
    assert_eq!(code, 201, "{issued}");
    let url = issued["link"].as_str().unwrap().to_string();
    assert_eq!(status(&server, &url, None).0, 200, "the link works without the token");
    let other_card = url.replace("4111111111111111", "5555555555554444");
    let tampered = url.replace("signature=", "signature=0");
    let longer = url.replace(&format!("expires={}", issued["expires"]), &format!("expires={}", issued["expires"].as_i64().unwrap() + 60));
    for bad in [other_card, tampered, longer] {
        assert_eq!(status(&server, &bad, None), (401, Some("unauthenticated".into())), "{bad}");
    }
    for (body, code) in [("{\"seconds\": 3601}", 400), ("{\"seconds\": 0}", 400), ("", 201)] {
        assert_eq!(link(&server, "4111111111111111", body).0, code, "{body}");
    }
    assert_eq!(link(&server, "4111111111111112", "").0, 400, "not a card number");
    std::thread::sleep(std::time::Duration::from_millis(3_100));
    assert_eq!(status(&server, &url, None), (401, Some("unauthenticated".into())), "expired");
    server.stop();
}

#[test]
fn production_configuration_turns_the_simulator_pages_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_configured(dir.path(), TOKEN, &config_with(&[("pages = true", "pages = false")]));
    assert_eq!(link(&server, "4111111111111111", "").0, 404, "no links either");
    for page in PAGES {
        for token in [None, Some(TOKEN)] {
            assert_eq!(status(&server, page, token), (404, Some("not_found".into())), "{page} {token:?}");
        }
    }
    // The bank's callbacks are still served, and still need the channel's signature.
    let response =
        answer(ureq::post(&format!("{}/channels/simulator/callback", server.base)).set("X-Channel-Signature", "t=1,v1=00").send_string("{}"), "callback");
    assert_eq!(response.status(), 401);
    server.stop();
}
