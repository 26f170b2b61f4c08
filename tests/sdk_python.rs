//! End-to-end tests of the Python SDK (sdk/python): the client is generated from the running
//! server's `/openapi.json` by `sdk/python/generate.sh` (openapi-python-client, in the virtual
//! environment scripts/install-deps.sh makes), then `sdk/python/e2e.py` drives members, accounts,
//! a recharge through the bank simulator, a guarantee payment confirmed in stages, a refund and
//! a withdrawal through it, checking balances after each step; what it reports is checked again
//! here with the tests' own client. A wrong secret is refused through the SDK, and the SDK's
//! signature is the one the tests' helper computes.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::money::FAST_BANK;
use support::*;

/// The virtual environment with the generator and the client's dependencies.
fn venv() -> PathBuf {
    std::env::var_os("CLEARING_SDK_VENV").map_or_else(|| PathBuf::from("/var/tmp/clearing-sdk-venv"), PathBuf::from)
}

fn python() -> PathBuf {
    let python = venv().join("bin/python");
    assert!(python.exists(), "{} is missing: run scripts/install-deps.sh (it makes the SDK's virtual environment)", python.display());
    python
}

/// Runs a command with its output in files under `dir`, failing the test if it is still running
/// after `limit` (a hang: a healthy run takes seconds). Returns its status, stdout and stderr.
fn run_bounded(mut command: Command, name: &str, dir: &Path, limit: Duration) -> (ExitStatus, String, String) {
    let (out, err) = (dir.join(format!("{name}.out")), dir.join(format!("{name}.err")));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        // No __pycache__ left in the repository's sdk/python.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .spawn()
        .unwrap_or_else(|error| panic!("start {name}: {error}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{name} still running after {} s:\n{}\n{}",
                limit.as_secs(),
                std::fs::read_to_string(&out).unwrap_or_default(),
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, std::fs::read_to_string(&out).unwrap_or_default(), std::fs::read_to_string(&err).unwrap_or_default())
}

/// Generates the client from the server's document into `dir/sdk` with the script people use.
fn generate(server: &Server, dir: &Path) -> PathBuf {
    let out = dir.join("sdk");
    let mut command = Command::new("bash");
    command.arg(support::repo_file("sdk/python/generate.sh")).arg(&server.base).arg(&out).env("CLEARING_SDK_VENV", venv());
    let (status, stdout, stderr) = run_bounded(command, "generate", dir, Duration::from_secs(120));
    assert!(status.success(), "generate.sh failed ({status}):\n{stdout}\n{stderr}");
    assert!(out.join("clearing_api/api").is_dir() && out.join("openapi.json").is_file(), "generate.sh wrote no client:\n{stdout}\n{stderr}");
    out
}

/// Runs `sdk/python/e2e.py MODE` as the platform; returns its output, failing with it on failure.
fn e2e(server: &Server, p: &Client, generated: &Path, dir: &Path, mode: &str) -> String {
    let mut command = Command::new(python());
    command
        .arg(support::repo_file("sdk/python/e2e.py"))
        .arg(mode)
        .env("PYTHONPATH", format!("{}:{}", generated.display(), support::repo_file("sdk/python").display()))
        .env("CLEARING_URL", &server.base)
        .env("CLEARING_PLATFORM_ID", &p.platform)
        .env("CLEARING_SECRET", &p.secret)
        .env("CLEARING_ADMIN_TOKEN", server.token.as_deref().expect("the server's token"));
    let (status, stdout, stderr) = run_bounded(command, mode, dir, Duration::from_secs(90));
    assert!(status.success(), "e2e.py {mode} failed ({status}):\n{stdout}\n{stderr}");
    stdout
}

#[test]
fn the_generated_sdk_drives_recharge_escrow_confirm_refund_and_withdrawal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "sdk-token-1-0123456789abcdef0123456789abcdef";
    let server = start_configured(&dir.path().join("data"), token, &config_with(FAST_BANK));
    let p = Client::create(&server, token, "{\"name\": \"Python SDK\"}");
    let generated = generate(&server, dir.path());
    let stdout = e2e(&server, &p, &generated, dir.path(), "all");
    for step in ["recharge", "guarantee payment", "confirm", "refund", "withdraw", "a wrong secret"] {
        assert!(stdout.lines().any(|line| line.starts_with("step: ") && line.contains(step)), "e2e.py ran no {step} step:\n{stdout}");
    }
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().expect("a summary line")).expect("the summary is JSON");

    // What the SDK reported, checked again with the tests' own signed client.
    let (payer, payee) = (summary["payer"].as_str().expect("payer"), summary["payee"].as_str().expect("payee"));
    let fee: f64 = summary["fee"].as_str().expect("fee").parse().expect("a fee");
    let left = format!("{:.2}", 750.0 - 100.0 - fee);
    assert_eq!(p.balances(payer), (left.clone(), left.clone(), "0.00".into(), "0.00".into()), "{summary}");
    assert_eq!(p.balances(payee), ("250.00".into(), "0.00".into(), "0.00".into(), "250.00".into()), "{summary}");
    assert_eq!(summary["payer_balances"], json!([left, left, "0.00", "0.00"]));
    let (status, withdrawal) = p.get(&format!("/v1/orders/{}", summary["withdrawal"].as_str().expect("withdrawal")));
    assert_eq!((status, withdrawal["status"].as_str(), withdrawal["amount"].as_str()), (200, Some("succeeded"), Some("100.00")), "{withdrawal}");
    // The payer's ledger: what e2e.py did and nothing that was refused (the payment over the
    // balance, the withdrawal with a wrong secret).
    let (status, ledger) = p.get(&format!("/v1/orders?account_id={payer}"));
    assert_eq!(status, 200, "{ledger}");
    let orders: Vec<(&str, &str)> = ledger["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .map(|order| (order["kind"].as_str().unwrap_or("?"), order["status"].as_str().unwrap_or("?")))
        .collect();
    assert_eq!(orders, [("withdrawal", "succeeded"), ("payment", "partially_refunded"), ("recharge", "succeeded")], "{ledger}");
    let (_, report) = server.get("/admin/invariants", Some(token));
    assert_eq!(report["ok"], true, "{report}");
    drop(p);
    server.stop();
}

/// The SDK verifies the webhook's deliveries (helper 110#6: it had no verifier): e2e.py
/// receives the real server's signed deliveries of a recharge's events on a loopback receiver
/// and checks each with `verify_webhook` (and refuses another secret, a changed body and an
/// old timestamp).
#[test]
fn the_sdk_verifies_the_webhooks_deliveries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "sdk-token-3-0123456789abcdef0123456789abcdef";
    let mut replacements = FAST_BANK.to_vec();
    replacements.push(("allow_insecure_loopback = false", "allow_insecure_loopback = true"));
    let server = start_configured(&dir.path().join("data"), token, &config_with(&replacements));
    let p = Client::create(&server, token, "{\"name\": \"Python SDK webhook\"}");
    let generated = generate(&server, dir.path());
    let stdout = e2e(&server, &p, &generated, dir.path(), "webhook");
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().expect("a summary line")).expect("the summary is JSON");
    assert!(summary["deliveries"].as_u64().unwrap_or(0) >= 2, "{stdout}");
    assert_eq!(summary["types"], json!(["order.pending", "order.succeeded"]), "{stdout}");
    assert!(summary["rotated"].as_u64().unwrap_or(0) >= 1, "deliveries during a rotation's overlap were verified: {stdout}");
    drop(p);
    server.stop();
}

#[test]
fn a_wrong_secret_is_refused_through_the_sdk_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "sdk-token-2-0123456789abcdef0123456789abcdef";
    let server = start_configured(&dir.path().join("data"), token, &config_with(FAST_BANK));
    let p = Client::create(&server, token, "{\"name\": \"Python SDK wrong secret\"}");
    let generated = generate(&server, dir.path());
    let stdout = e2e(&server, &p, &generated, dir.path(), "wrong-secret");
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().expect("a summary line")).expect("the summary is JSON");
    assert_eq!(summary["wrong_secret"], "refused", "{stdout}");
    // The member exists once, made by the right secret after the wrong one was refused: the same
    // request is now a replay of that one.
    let body = json!({"out_order_no": "e2e-wrong-1", "type": "individual", "name": "Zhang San", "id_number": "11010519491231002X", "phone": "13800138000"});
    let (status, replayed, member) = p.post("/v1/members", &body);
    assert_eq!((status, replayed, &member["member_id"]), (201, true, &summary["member_id"]), "{member}");
    drop(p);
    server.stop();
}

#[test]
fn the_sdk_signs_what_the_server_verifies() {
    // (secret, method, path and query, timestamp, nonce, body)
    let cases = [
        ("s3cr3t", "GET", "/v1/orders?kind=payment&limit=5", 1_700_000_000_i64, "abcdefghijklmnop", ""),
        ("another-secret", "POST", "/v1/payments", 1_700_000_123, "N0nce0123456789abcdefXYZ", "{\"description\": \"装修 deposit\"}"),
        ("k", "DELETE", "/v1/accounts/acc_1/cards/card_2", 0, "0000000000000000", "{}"),
    ];
    let script = "import json, sys\nfrom clearing_sdk.signing import sign\nfor secret, method, path, timestamp, nonce, body in json.load(sys.stdin):\n    print(sign(secret, method, path, str(timestamp), nonce, body.encode('utf-8')))\n";
    let input = json!(cases.iter().map(|c| json!([c.0, c.1, c.2, c.3, c.4, c.5])).collect::<Vec<_>>());
    let mut child = Command::new(python())
        .arg("-c")
        .arg(script)
        .env("PYTHONPATH", support::repo_file("sdk/python"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    child.stdin.take().expect("stdin").write_all(input.to_string().as_bytes()).expect("write");
    let output = child.wait_with_output().expect("python output");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let signed: Vec<String> = String::from_utf8(output.stdout).expect("utf-8").lines().map(str::to_string).collect();
    let expected: Vec<String> =
        cases.iter().map(|(secret, method, path, timestamp, nonce, body)| sign(secret, method, path, *timestamp, nonce, body.as_bytes())).collect();
    assert_eq!(signed, expected);
}
