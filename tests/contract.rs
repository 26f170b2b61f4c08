//! The OpenAPI document as the contract (issue "A contract clients can generate from"): the real
//! server's `/openapi.json` is checked by the tools API clients use (openapi-spec-validator,
//! Redocly CLI `recommended`, Spectral `spectral:oas`, with the rulesets in contract/), and
//! Schemathesis sends every operation signed requests (contract/hooks.py) with every check,
//! bounded to fit CI. A missing tool fails the test: `scripts/install-deps.sh` installs them.
//! Also the server behaviours the document promises: 405 with `Allow`, filters checked with the
//! parameter named, framework rejections in the JSON error shape, `out_order_no` as a page.

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use support::*;

const TOKEN: &str = "contract-operator-token-0123456789abcdef";

fn repo(path: &str) -> PathBuf {
    support::repo_file(path)
}

/// A Python checker from the virtual environment scripts/install-deps.sh makes
/// (`CLEARING_CONTRACT_VENV`, default /var/tmp/clearing-contract-venv).
fn venv_tool(name: &str) -> Command {
    let venv = std::env::var_os("CLEARING_CONTRACT_VENV").map_or_else(|| PathBuf::from("/var/tmp/clearing-contract-venv"), PathBuf::from);
    Command::new(venv.join("bin").join(name))
}

/// Runs a checker; a missing one fails with how to install it, a finding fails with its output.
fn run(tool: &str, command: &mut Command) -> String {
    let output = match command.output() {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            panic!("{tool} is not installed: run scripts/install-deps.sh ({error})")
        }
        Err(error) => panic!("{tool} could not start: {error}"),
    };
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{tool} found problems in the document (exit {:?}):\n{text}", output.status.code());
    text
}

fn document(server: &Server, dir: &Path) -> (Value, PathBuf) {
    let response = ureq::get(&format!("{}/openapi.json", server.base)).call().expect("GET /openapi.json");
    assert_eq!(response.content_type(), "application/json");
    let text = response.into_string().expect("text");
    let path = dir.join("openapi.json");
    std::fs::write(&path, &text).expect("write the document");
    (serde_json::from_str(&text).expect("JSON"), path)
}

/// Zero errors and zero warnings from each checker.
#[test]
fn the_document_passes_every_checker() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"), Some(TOKEN));
    let (doc, path) = document(&server, dir.path());
    server.stop();
    run("openapi-spec-validator", venv_tool("openapi-spec-validator").arg(&path));
    // Redocly exits 0 on warnings: its JSON report's totals must be zero too.
    let redocly = run(
        "redocly",
        Command::new("redocly").args(["lint", "--format", "json", "--config"]).arg(repo("contract/redocly.yaml")).arg(&path).env("REDOCLY_TELEMETRY", "off"),
    );
    let report = &redocly[redocly.find('{').unwrap_or_else(|| panic!("redocly's report: {redocly}"))..];
    let totals: Value = serde_json::Deserializer::from_str(report).into_iter::<Value>().next().and_then(Result::ok).unwrap_or_default()["totals"].clone();
    assert_eq!((totals["errors"].as_u64(), totals["warnings"].as_u64()), (Some(0), Some(0)), "redocly:\n{redocly}");
    run("spectral", Command::new("spectral").args(["lint", "--fail-severity", "hint", "--ruleset"]).arg(repo("contract/.spectral.yaml")).arg(&path));
    // What the checkers do not look for: every operation is named, described, tagged, secured
    // (or says it needs nothing) and lists its error codes by status.
    let mut ids = std::collections::BTreeSet::new();
    for (route, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let at = format!("{method} {route}");
            assert!(ids.insert(operation["operationId"].as_str().unwrap().to_string()), "{at}: operationId repeats");
            for key in ["summary", "description"] {
                assert!(operation[key].as_str().is_some_and(|s| !s.is_empty()), "{at}: {key}");
            }
            assert!(operation["tags"].as_array().is_some_and(|t| t.len() == 1), "{at}: tags");
            assert!(operation["security"].is_array(), "{at}: security");
            let responses = operation["responses"].as_object().unwrap();
            assert!(responses.keys().all(|status| status.parse::<u16>().is_ok()), "{at}: every response has its status: {:?}", responses.keys());
            assert!(responses.contains_key("404") && responses.contains_key("405") && responses.contains_key("500"), "{at}: error statuses");
        }
    }
    let orders = &doc["paths"]["/v1/orders"]["get"]["parameters"];
    let limit = orders.as_array().unwrap().iter().find(|p| p["name"] == "limit").unwrap();
    assert_eq!(limit["schema"], json!({"type": "integer", "minimum": 1, "maximum": 500, "default": 50}));
    let csv = &doc["paths"]["/v1/settlements/{business_date}/statement.csv"]["get"]["responses"]["200"]["content"];
    assert!(csv.get("text/csv").is_some(), "{csv}");
}

/// Schemathesis against the built server: every operation, signed requests, every check,
/// bounded for CI (`CONTRACT_MAX_EXAMPLES`, default 8 per operation; `make contract-long`
/// runs many more). Any finding fails the test with Schemathesis' report.
#[test]
fn schemathesis_finds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"), Some(TOKEN));
    // plt_1, the platform the document's examples name, takes Schemathesis' secret rotations
    // (hooks.py sends the run's own platform's there too); the run signs as the second.
    let decoy = Client::create(&server, TOKEN, r#"{"name": "contract decoy"}"#);
    let platform = Client::create(&server, TOKEN, r#"{"name": "contract"}"#);
    // The account commission rules in the run pay (hooks.py).
    let receiver = platform.account(&platform.member("contract-receiver", "Receiver"));
    let (_, path) = document(&server, dir.path());
    let examples = std::env::var("CONTRACT_MAX_EXAMPLES").unwrap_or_else(|_| "8".to_string());
    let seconds = std::env::var("CONTRACT_MAX_SECONDS").unwrap_or_else(|_| "150".to_string());
    // Another seed explores other cases (before a release: several); the default is the CI's.
    let seed = std::env::var("CONTRACT_SEED").unwrap_or_else(|_| "20261201".to_string());
    let report = dir.path().join("report");
    let mut command = venv_tool("schemathesis");
    command
        .arg("--config-file")
        .arg(repo("contract/schemathesis.toml"))
        .arg("run")
        .arg(&path)
        .args([
            "--url",
            server.base.as_str(),
            "--checks",
            "all",
            "--max-examples",
            examples.as_str(),
            "--max-time",
            seconds.as_str(),
            // One worker: with the fixed seed the run is the same each time (two interleave their
            // cases with the server's state differently from run to run).
            "--workers",
            "1",
            "--seed",
            seed.as_str(),
            // Each call copies the whole database into a new directory under `[backups] root`
            // (off in this run's configuration, so every call would be the same 400); tests/backups.rs
            // drives it.
            "--exclude-operation-id",
            "take_backup",
        ])
        .args(["--no-color", "--output-truncate", "false", "--report-dir"])
        .arg(&report)
        .env("PYTHONPATH", repo("contract"))
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("CONTRACT_PLATFORM_ID", &platform.platform)
        .env("CONTRACT_DECOY_PLATFORM_ID", &decoy.platform)
        .env("CONTRACT_RECEIVER_ACCOUNT", &receiver)
        .env("CONTRACT_PLATFORM_SECRET", &platform.secret)
        .env("CONTRACT_ADMIN_TOKEN", TOKEN);
    let output = run("schemathesis", &mut command);
    assert!(output.contains("passed") || output.contains("PASSED") || output.contains("No issues found"), "{output}");
    // The run really reached the operations: a signing that broke would leave every signed case
    // at 401, which Schemathesis only warns about. The server's own counts say how many signed
    // platform requests were answered 2xx.
    let metrics =
        ureq::get(&format!("{}/metrics", server.base)).set("Authorization", &format!("Bearer {TOKEN}")).call().expect("metrics").into_string().expect("text");
    let signed_ok: f64 = metrics
        .lines()
        .filter(|line| line.starts_with("clearing_http_request_duration_seconds_count{") && line.contains("route=\"/v1/") && line.contains("status=\"2xx\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(signed_ok >= 200.0, "only {signed_ok} signed /v1 requests were answered 2xx: is contract/hooks.py signing?\n{output}");
    server.stop();
}

fn raw(server: &Server, request: &str) -> (u16, String, String) {
    let address = server.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// A method a documented path does not take is 405 with `Allow` naming the ones it does, in
/// the JSON error shape; a path nobody serves stays 404.
#[test]
fn an_undeclared_method_is_405_with_allow() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"), Some(TOKEN));
    for (method, path, allow) in [
        ("DELETE", "/v1/orders", "GET"),
        ("PUT", "/v1/orders/ord_1", "GET"),
        ("POST", "/admin/platforms/plt_1/settlement-rule", "GET, PUT, DELETE"),
        ("PATCH", "/v1/payments", "POST"),
        ("GET", "/v1/accounts/acc_1/close", "POST"),
    ] {
        let (status, head, body) = raw(&server, &format!("{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"));
        assert_eq!(status, 405, "{method} {path}: {head}");
        assert!(head.to_ascii_lowercase().contains(&format!("allow: {}", allow.to_ascii_lowercase())), "{method} {path}: {head}");
        let body: Value = serde_json::from_str(&body).expect("a JSON body");
        assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
    }
    let (status, _, body) = raw(&server, "DELETE /v1/nothing-here HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 404);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"]["code"], "not_found");
    server.stop();
}

/// Every filter of the listing is checked before anything is read, and the error names it;
/// A caller's made-up field names are named back to it, and no number of them takes the name
/// away from anyone's next error: the names were kept in a process-wide table of 512, which one
/// platform could fill, after which every platform's errors about fields not yet in it lost their
/// `param`.
#[test]
fn made_up_field_names_never_cost_another_platform_its_param() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_configured(dir.path(), TOKEN, &config_with(support::money::FAST_BANK));
    let hostile = Client::create(&server, TOKEN, r#"{"name": "hostile"}"#);
    let other = Client::create(&server, TOKEN, r#"{"name": "other"}"#);
    for i in 0..600 {
        let name = format!("made_up_{i}");
        let (status, body) = hostile.get(&format!("/v1/orders?{name}=1"));
        assert_eq!((status, body["error"]["param"].as_str()), (400, Some(name.as_str())), "{body}");
    }
    let (status, body) = other.get("/v1/orders?colour_of_the_sky=blue");
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("colour_of_the_sky")), "{body}");
}

/// `out_order_no` narrows a page (the other filters still apply) instead of answering one order.
#[test]
fn listing_filters_are_checked_and_out_order_no_is_a_page() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_configured(dir.path(), TOKEN, &config_with(support::money::FAST_BANK));
    let p = Client::create(&server, TOKEN, r#"{"name": "listing"}"#);
    let account = p.account(&p.member("m-1", "Li Lei"));
    let recharge = p.fund(&account, "10.00", "same-1");
    let (status, _, freeze) =
        p.post("/v1/freezes", &json!({"out_order_no": "same-1", "account_id": account, "amount": "1.00", "currency": "CNY", "reason": "hold"}));
    assert_eq!(status, 201, "{freeze}");
    for (query, param) in [
        ("out_order_no=X&kind=freeze&cursor=1e100&from=junk", "from"),
        ("out_order_no=X&kind=freeze&cursor=1e100", "cursor"),
        ("out_order_no=X&from=junk", "from"),
        ("kind=nothing", "kind"),
        ("status=bad", "status"),
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("account_id=nope", "account_id"),
        ("out_order_no=a%20b", "out_order_no"),
        ("colour=red", "colour"),
    ] {
        let (status, body) = p.get(&format!("/v1/orders?{query}"));
        assert_eq!((status, body["error"]["param"].as_str()), (400, Some(param)), "{query}: {body}");
    }
    // Both orders numbered same-1 (a recharge and a freeze), newest first, as a page.
    let (status, page) = p.get("/v1/orders?out_order_no=same-1");
    assert_eq!(status, 200, "{page}");
    let ids: Vec<&str> = page["orders"].as_array().unwrap().iter().map(|o| o["order_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [freeze["order_id"].as_str().unwrap(), recharge.as_str()], "{page}");
    assert_eq!(page["next_cursor"], Value::Null);
    let (_, page) = p.get("/v1/orders?out_order_no=same-1&kind=recharge");
    assert_eq!(page["orders"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["orders"][0]["order_id"], json!(recharge));
    let (_, page) = p.get("/v1/orders?out_order_no=same-1&status=failed");
    assert_eq!(page, json!({"orders": [], "next_cursor": null}));
    // A page of one, then the next by its cursor.
    let (_, first) = p.get("/v1/orders?out_order_no=same-1&limit=1");
    assert_eq!(first["orders"][0]["order_id"], freeze["order_id"]);
    let cursor = first["next_cursor"].as_str().expect("a cursor").to_string();
    let (_, second) = p.get(&format!("/v1/orders?out_order_no=same-1&limit=1&cursor={cursor}"));
    assert_eq!(second["orders"][0]["order_id"], json!(recharge), "{second}");
    let (_, none) = p.get("/v1/orders?out_order_no=nobody-used-this");
    assert_eq!(none, json!({"orders": [], "next_cursor": null}));
    server.stop();
}

/// What actix refuses before a handler runs answers in the API's JSON error shape: a body
/// that is not JSON, a path segment past its type, a number past its type in a body.
#[test]
fn framework_rejections_are_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"), Some(TOKEN));
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    for (request, status, param) in [
        (format!("GET /admin/shards/99999999 HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"), 400, None),
        (format!("GET /admin/shards/-1 HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"), 400, None),
        (
            {
                let body = r#"{"sim_latency_ms": 18446744073709551616}"#;
                format!("PATCH /admin/channels/sim_gateway HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
            },
            400,
            Some("sim_latency_ms"),
        ),
        (
            format!(
                "POST /admin/platforms HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{{nope"
            ),
            400,
            None,
        ),
    ] {
        let (got, head, body) = raw(&server, &request);
        assert_eq!(got, status, "{request}: {head}\n{body}");
        assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
        let body: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{request}: not JSON ({e}): {body}"));
        assert!(body["error"]["code"].is_string(), "{body}");
        if let Some(param) = param {
            assert_eq!(body["error"]["param"], param, "{body}");
        }
    }
    server.stop();
}

/// Regression (CI's Schemathesis run): a platform name of 129 characters, the first a blank, was
/// taken because the length was counted after trimming, while the document's maxLength counts
/// what the client sends. Names and titles now count what was sent; the blanks are then dropped.
#[test]
fn text_limits_count_what_the_client_sent() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"), Some(TOKEN));
    let at_limit = "名".repeat(128);
    let past = format!(" {at_limit}");
    let (status, body) = create_platform(&server, TOKEN, &json!({ "name": past }).to_string());
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("name")), "{body}");
    let (status, created) = create_platform(&server, TOKEN, &json!({ "name": at_limit }).to_string());
    assert_eq!(status, 201, "{created}");
    // A tab around a name is a control character (the document's pattern), trimmed or not.
    let (status, body) = create_platform(&server, TOKEN, &json!({ "name": "\t3¬Ú" }).to_string());
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("name")), "{body}");
    let (status, padded) = create_platform(&server, TOKEN, &json!({ "name": " Renovation Hub " }).to_string());
    assert_eq!((status, padded["name"].as_str()), (201, Some("Renovation Hub")), "blanks around a name within the limit are dropped");
    let (platform, secret) = (created["platform_id"].as_str().unwrap(), created["secret"].as_str().unwrap());
    let member = |name: &str| {
        json!({"out_order_no": "m-limit", "type": "enterprise", "name": name, "id_number": "91110108MA01ABCD3N", "phone": "13800138000"}).to_string()
    };
    let (status, _, body) = signed_post(&server, "/v1/members", platform, secret, "limitnonce000001", &member(&format!(" {}", "名".repeat(64))));
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("name")), "{body}");
    let template = |title: &str| json!({"out_order_no": format!("t-{}", title.len()), "code": "terms", "title": title, "text": "Terms."}).to_string();
    let (status, _, body) = signed_post(&server, "/v1/agreement-templates", platform, secret, "limitnonce000002", &template(&format!("{} ", "条".repeat(128))));
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("title")), "{body}");
    let (status, _, body) = signed_post(&server, "/v1/agreement-templates", platform, secret, "limitnonce000003", &template(&"条".repeat(128)));
    assert_eq!(status, 201, "{body}");
    server.stop();
}
