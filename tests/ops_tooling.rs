//! Operations tooling against the real server: `/metrics` clean under `promtool check metrics`,
//! the alert rules and the Grafana dashboard naming only metrics the server exports, the rules'
//! unit tests, and request ids in responses and in the log (text and JSON).
//!
//! `promtool` comes from Debian's `prometheus` package (scripts/install-deps.sh).

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use support::{answer, config_with, wait_for_api, Client, Server};

const TOKEN: &str = "operator-secret-ops-0123456789abcdef0123456789abcdef";

/// A server whose stderr (its log) is collected line by line.
struct Logged {
    server: Server,
    log: Arc<Mutex<Vec<String>>>,
}

impl Logged {
    fn start(data_dir: &Path, log_section: &str) -> Logged {
        let config = config_with(&[("[log]\nformat = \"text\"\nlevel = \"info\"\n", log_section)]);
        let path = data_dir.join("ops-config.toml");
        std::fs::create_dir_all(data_dir).expect("data dir");
        std::fs::write(&path, config).expect("config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_clearing"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&path)
            .arg("--data-dir")
            .arg(data_dir)
            .env("CLEARING_ADMIN_TOKEN", TOKEN)
            .env_remove("CLEARING_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start server");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log lock").push(line);
            }
        });
        let mut server = wait_for_api(child);
        server.token = Some(TOKEN.to_string());
        Logged { server, log }
    }

    /// Stops the server gracefully and returns every line it logged.
    fn stop(self) -> Vec<String> {
        self.server.stop();
        // The reader thread reaches the end of the pipe right after the process exits.
        for _ in 0..100 {
            if Arc::strong_count(&self.log) == 1 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let mut lines = Vec::new();
        lines.extend(self.log.lock().expect("log lock").iter().cloned());
        lines
    }

    /// A GET with an optional `X-Request-Id`: the status and the id the response carries.
    fn get_with_id(&self, path: &str, id: Option<&str>) -> (u16, String) {
        let mut request = ureq::get(&format!("{}{path}", self.server.base));
        if let Some(id) = id {
            request = request.set("X-Request-Id", id);
        }
        let response = answer(request.call(), path);
        (response.status(), response.header("X-Request-Id").expect("every response carries a request id").to_string())
    }
}

fn scrape(server: &Server) -> String {
    let response = ureq::get(&format!("{}/metrics", server.base)).set("Authorization", &format!("Bearer {TOKEN}")).call().expect("scrape");
    response.into_string().expect("text")
}

/// Runs promtool with `args` (and `input` on stdin): its exit success and everything it printed.
fn promtool(args: &[&str], input: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(support::repo_file(""))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/install-deps.sh installs it)");
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).expect("write to promtool");
    }
    drop(stdin);
    let output = child.wait_with_output().expect("promtool output");
    (output.status.success(), format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
}

/// Sample names of an exposition (`name{labels} value` or `name value`).
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_string()).collect()
}

/// The `clearing_*` metric names in a text (PromQL expressions).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("clearing_") {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

fn every_expr(value: &serde_json::Value, exprs: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", serde_json::Value::String(expr)) => exprs.push(expr.clone()),
                    _ => every_expr(value, exprs),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| every_expr(item, exprs)),
        _ => {}
    }
}

#[test]
fn metrics_pass_promtool_and_the_dashboard_and_alerts_name_only_exported_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logged = Logged::start(dir.path(), "[log]\nformat = \"text\"\nlevel = \"info\"\n");
    let server = &logged.server;
    let platform = Client::create(server, TOKEN, "{\"name\": \"Ops\"}");
    let member = platform.member("ops-m1", "Zhao Liu");
    platform.account(&member);
    assert_eq!(logged.get_with_id("/no/such/path", None).0, 404);
    let text = scrape(server);
    let (clean, printed) = promtool(&["check", "metrics"], Some(&text));
    assert!(clean && printed.trim().is_empty(), "promtool check metrics: {printed}\n{text}");
    // Every family has HELP and TYPE; none is in microseconds any more.
    for family in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(|l| l.split(' ').next().unwrap_or_default()) {
        assert!(text.contains(&format!("# HELP {family} ")), "{family} has no HELP");
    }
    assert!(!text.contains("microseconds"), "{text}");
    let names = sample_names(&text);
    for needed in [
        "clearing_http_request_duration_seconds_bucket",
        "clearing_shard_fsync_duration_seconds_bucket",
        "clearing_shard_batch_size_bucket",
        "clearing_commands_total",
        "clearing_invariants_ok",
        "clearing_reconciliation_cases_open",
        "clearing_settlement_failures_in_a_row",
    ] {
        assert!(names.contains(needed), "{needed} missing: {names:?}");
    }
    let has = |line: &str| text.lines().any(|l| l.starts_with(line));
    assert!(has("clearing_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/accounts\",status=\"2xx\"}"), "{text}");
    assert!(has("clearing_http_request_duration_seconds_count{method=\"GET\",route=\"unmatched\",status=\"4xx\"}"), "raw paths never become labels: {text}");
    assert!(!text.contains("/no/such/path"), "{text}");
    assert!(has("clearing_invariants_ok 1"), "{text}");
    // The dashboard is valid JSON and every expression names only exported series.
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(support::repo_file("ops/grafana/clearing.json")).expect("dashboard")).expect("JSON");
    let mut exprs = Vec::new();
    every_expr(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "{exprs:?}");
    let alerts = std::fs::read_to_string(support::repo_file("ops/prometheus/alerts.yml")).expect("alert rules");
    for (source, text) in exprs.iter().map(|e| ("dashboard", e.as_str())).chain([("alerts.yml", alerts.as_str())]) {
        for name in metric_names(text) {
            assert!(names.contains(&name), "{source} names {name}, which /metrics does not export: {text}");
        }
    }
    let lines = logged.stop();
    assert!(lines.iter().all(|l| !l.contains("ERROR")), "{lines:?}");
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let (clean, printed) = promtool(&["check", "rules", "ops/prometheus/alerts.yml"], None);
    assert!(clean && printed.contains("SUCCESS: 7 rules found"), "{printed}");
    let (passed, printed) = promtool(&["test", "rules", "ops/prometheus/alerts_test.yml"], None);
    assert!(passed && printed.contains("SUCCESS"), "{printed}");
}

#[test]
fn request_ids_are_echoed_and_on_the_log_lines_of_their_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logged = Logged::start(dir.path(), "[log]\nformat = \"text\"\nlevel = \"info,gateway::request_id=debug\"\n");
    // A sane client id is kept; a missing, empty, too long or unprintable one is replaced.
    let given = "client-0f8fad5b-d9cb-469f.a165~70867728950e";
    assert_eq!(logged.get_with_id("/healthz", Some(given)), (200, given.to_string()));
    let too_long = "x".repeat(65);
    let mut generated = Vec::new();
    for (path, id) in [("/healthz", None), ("/readyz", Some("")), ("/healthz", Some(too_long.as_str())), ("/missing-page", Some("has space"))] {
        let (_, echoed) = logged.get_with_id(path, id);
        assert!(echoed.len() == 24 && echoed.bytes().all(|b| b.is_ascii_hexdigit()), "{id:?} -> {echoed:?}");
        generated.push((path, echoed));
    }
    assert_eq!(generated.iter().map(|(_, id)| id).collect::<BTreeSet<_>>().len(), generated.len(), "generated ids are distinct");
    // An error answered by the signature check carries the id too.
    let (status, echoed) = logged.get_with_id("/v1/accounts/acc_1", Some("unsigned-1"));
    assert_eq!((status, echoed.as_str()), (401, "unsigned-1"));
    let lines = logged.stop();
    // The line names the route's pattern, never the path (which may hold a token or a card
    // number; since session 63): a path no route serves is "(no route)".
    let route = |path: &str| match path {
        "/missing-page" => "(no route)".to_string(),
        "/v1/accounts/acc_1" => "/v1/accounts/{account_id}".to_string(),
        other => other.to_string(),
    };
    for (path, id) in std::iter::once(("/healthz", given.to_string())).chain(generated).chain([("/v1/accounts/acc_1", "unsigned-1".to_string())]) {
        let of_request: Vec<&String> = lines.iter().filter(|l| l.contains(&format!("request_id={id}"))).collect();
        assert_eq!(of_request.len(), 1, "one line per request at debug: {id} {lines:?}");
        assert!(of_request[0].contains(&format!("path={}", route(path))) && of_request[0].contains("status="), "{of_request:?}");
        assert!(path == route(path) || !of_request[0].contains(path), "{of_request:?}");
    }
    // Every line written inside a request's span names its id.
    assert!(lines.iter().filter(|l| l.contains("request{")).all(|l| l.contains("request{request_id=")), "{lines:?}");
}

#[test]
fn json_logs_are_one_object_per_line_with_the_request_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logged = Logged::start(dir.path(), "[log]\nformat = \"json\"\nlevel = \"info,gateway::request_id=debug\"\n");
    let (status, id) = logged.get_with_id("/healthz", Some("json-probe-1"));
    assert_eq!((status, id.as_str()), (200, "json-probe-1"));
    let platform = Client::create(&logged.server, TOKEN, "{\"name\": \"Json\"}");
    platform.member("ops-json-1", "Qian Qi");
    let lines = logged.stop();
    assert!(lines.len() >= 3, "{lines:?}");
    let mut of_probe = 0;
    for line in &lines {
        let object: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
        assert!(object["timestamp"].is_string() && object["level"].is_string() && object["fields"].is_object(), "{line}");
        if object["span"]["request_id"] == "json-probe-1" && object["fields"]["message"] == "request" {
            of_probe += 1;
            assert_eq!((object["fields"]["path"].as_str(), object["fields"]["status"].as_u64()), (Some("/healthz"), Some(200)), "{line}");
        }
    }
    assert_eq!(of_probe, 1, "{lines:?}");
}
