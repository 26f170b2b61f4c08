//! Secrets apart from the data (DESIGN.md invariant 14): the master key and the operator token
//! from files outside the data directory, a private data directory, refused short tokens and
//! empty keys with a clear message, and platform secrets rotated with an overlap that outlives
//! restarts.

mod support;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

const BINARY: &str = env!("CARGO_BIN_EXE_clearing");
const TOKEN: &str = "secrets-test-operator-token-0123456789abcdef";

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

fn write_mode(path: &std::path::Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// `clearing serve` on an ephemeral port, without the secrets' environment variables.
fn serve(data_dir: &std::path::Path) -> Command {
    let mut command = Command::new(BINARY);
    command.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(data_dir).env_remove("CLEARING_ADMIN_TOKEN").env_remove("CLEARING_MASTER_KEY");
    command
}

/// Runs a start that must fail: its output once it exits, or `None` if it still runs after a
/// generous deadline (it was killed then: the start was not refused).
fn refused_start(mut command: Command) -> Option<Output> {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if child.try_wait().expect("wait").is_some() {
            return Some(child.wait_with_output().expect("output"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().expect("kill");
    child.wait().expect("wait");
    None
}

fn assert_refused(command: Command, expected: &str) {
    let output = refused_start(command).unwrap_or_else(|| panic!("the server started; expected a refusal saying {expected:?}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "exit status {:?}", output.status);
    assert!(stderr.contains(expected), "expected {expected:?} in: {stderr}");
}

#[test]
fn operator_tokens_shorter_than_32_characters_are_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = serve(&dir.path().join("data"));
    command.env("CLEARING_ADMIN_TOKEN", "tok");
    assert_refused(command, "at least 32 characters");
    let token_file = dir.path().join("token");
    write_mode(&token_file, "0123456789abcdef0123456789abcde\n", 0o600); // 31 characters
    let mut command = serve(&dir.path().join("data"));
    command.arg("--admin-token-file").arg(&token_file);
    assert_refused(command, "at least 32 characters");
}

#[test]
fn an_empty_master_key_left_by_an_older_version_stops_the_start_with_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("data")).expect("mkdir");
    write_mode(&dir.path().join("data/master-key"), "", 0o600);
    let mut command = serve(&dir.path().join("data"));
    command.env("CLEARING_ADMIN_TOKEN", TOKEN);
    assert_refused(command, "is empty");
}

#[test]
fn the_keys_can_live_outside_the_private_data_directory() {
    use hmac::{Hmac, Mac};
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, keys) = (dir.path().join("data"), dir.path().join("keys"));
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::create_dir(&keys).expect("mkdir");
    let master_key = "5a".repeat(32);
    write_mode(&keys.join("master-key"), &format!("{master_key}\n"), 0o600);
    write_mode(&keys.join("admin-token"), TOKEN, 0o600);
    // A key file other users can read is refused.
    write_mode(&keys.join("open-key"), &master_key, 0o644);
    let mut command = serve(&dir.path().join("other"));
    command.arg("--master-key-file").arg(keys.join("open-key")).env("CLEARING_ADMIN_TOKEN", TOKEN);
    assert_refused(command, "chmod 600");

    let mut command = serve(&data);
    command.arg("--master-key-file").arg(keys.join("master-key")).arg("--admin-token-file").arg(keys.join("admin-token"));
    let server = spawn(command);
    assert_eq!(mode(&data), 0o700, "the data directory is tightened");
    assert!(server.lines.iter().any(|l| l.contains("was open to other users")), "{:?}", server.lines);
    assert!(!server.lines.iter().any(|l| l.contains("lives in the data directory")), "{:?}", server.lines);
    assert!(!data.join("master-key").exists() && !data.join("admin-token").exists(), "no secret in the data directory");
    let (status, created) = create_platform(&server, TOKEN, "{\"name\": \"Keys apart\"}");
    assert_eq!(status, 201, "{created}");
    // The platform's secret derives from the key in the file.
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&hex::decode(&master_key).unwrap()).unwrap();
    mac.update(b"platform-secret/1/1");
    assert_eq!(created["secret"], hex::encode(mac.finalize().into_bytes()));
    server.stop();

    // Zero setup: both generated into a new data directory (0700, files 0600), with a warning.
    let fresh = dir.path().join("fresh");
    let server = spawn(serve(&fresh));
    assert_eq!((mode(&fresh), mode(&fresh.join("master-key")), mode(&fresh.join("admin-token"))), (0o700, 0o600, 0o600));
    for what in ["master key", "operator token"] {
        assert!(server.lines.iter().any(|l| l.contains(&format!("warning: the {what} lives in the data directory"))), "{what}: {:?}", server.lines);
    }
    server.stop();
}

/// Starts a prepared `clearing serve` command and waits for its `API:` line.
fn spawn(mut command: Command) -> Server {
    wait_for_api(command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("start"))
}

fn rotate(server: &Server, token: &str, platform: &str, body: &str) -> (u16, serde_json::Value) {
    let request = ureq::post(&format!("{}/admin/platforms/{platform}/rotate-secret", server.base))
        .set("Authorization", &format!("Bearer {token}"))
        .set("Content-Type", "application/json");
    let response = answer(request.send_string(body), "rotate");
    (response.status(), response.into_json().expect("JSON"))
}

/// Whether a signed request with `secret` is let in (any answer but 401).
fn verifies(server: &Server, platform: &str, secret: &str) -> bool {
    let (status, body) = signed_get_json(server, "/v1/webhook", platform, secret, &fresh_nonce());
    assert!(status == 200 || status == 401, "{status} {body}");
    status == 200
}

#[test]
fn a_rotated_secret_overlaps_the_old_one_then_replaces_it_also_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_with(&[]);
    let server = start_configured(dir.path(), TOKEN, &config);
    let p = Client::create(&server, TOKEN, "{\"name\": \"Rotating\"}");
    let first = p.secret.clone();
    let refused = [
        ("wrong-token-wrong-token-wrong-token", p.platform.as_str(), "{}", 401, "unauthenticated"),
        (TOKEN, "plt_99", "{}", 404, "not_found"),
        (TOKEN, p.platform.as_str(), "{\"overlap_seconds\": 604801}", 400, "invalid_request"),
        (TOKEN, p.platform.as_str(), "{\"overlap\": 5}", 400, "invalid_request"),
    ];
    for (token, platform, body, status, code) in refused {
        let (got, answer) = rotate(&server, token, platform, body);
        assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{body}: {answer}");
    }
    assert!(verifies(&server, &p.platform, &first), "nothing refused changed the secret");

    let (status, rotated) = rotate(&server, TOKEN, &p.platform, "{\"overlap_seconds\": 3600}");
    assert_eq!((status, rotated["secret_version"].as_u64()), (200, Some(2)), "{rotated}");
    assert!(rotated["previous_secret_valid_until"].is_string(), "{rotated}");
    let second = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    assert!(verifies(&server, &p.platform, &first) && verifies(&server, &p.platform, &second), "both during the overlap");
    let platform = p.platform.clone();
    drop(p);
    server.stop();

    let server = start_configured(dir.path(), TOKEN, &config);
    assert!(verifies(&server, &platform, &first) && verifies(&server, &platform, &second), "the overlap outlives a restart");
    // A rotation during the overlap ends the oldest secret at once.
    let (status, rotated) = rotate(&server, TOKEN, &platform, "{\"overlap_seconds\": 2}");
    assert_eq!(status, 200, "{rotated}");
    let third = rotated["secret"].as_str().unwrap().to_string();
    assert!(!verifies(&server, &platform, &first));
    assert!(verifies(&server, &platform, &second) && verifies(&server, &platform, &third));
    std::thread::sleep(Duration::from_millis(3_100));
    assert!(!verifies(&server, &platform, &second), "the overlap is over");
    assert!(verifies(&server, &platform, &third));
    // Without a body: the configured overlap.
    let (status, rotated) = rotate(&server, TOKEN, &platform, "");
    assert_eq!(status, 200, "{rotated}");
    let fourth = rotated["secret"].as_str().unwrap().to_string();
    server.stop();

    let server = start_configured(dir.path(), TOKEN, &config);
    assert!(!verifies(&server, &platform, &second));
    assert!(verifies(&server, &platform, &third) && verifies(&server, &platform, &fourth), "a day's overlap by default");
    let p = Client { server: &server, platform: platform.clone(), secret: fourth.clone() };
    assert_eq!(
        p.post("/v1/members", &json!({"out_order_no": "m-1", "type": "individual", "name": "A", "id_number": "11010519491231002X", "phone": "13800138000"})).0,
        201
    );
    drop(p);
    // With `from_version`, a rotation repeated (its answer lost) shows its secret again instead
    // of rotating twice (the secret in use keeps its overlap); from another version: 409.
    let body = "{\"overlap_seconds\": 600, \"from_version\": 4}";
    let (status, rotated) = rotate(&server, TOKEN, &platform, body);
    assert_eq!((status, rotated["secret_version"].as_u64()), (200, Some(5)), "{rotated}");
    let (status, again) = rotate(&server, TOKEN, &platform, body);
    assert_eq!((status, &again), (200, &rotated), "shown again, not rotated");
    assert!(verifies(&server, &platform, &fourth), "the secret in use still verifies");
    let (status, refused) = rotate(&server, TOKEN, &platform, "{\"from_version\": 3}");
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("idempotency_conflict")), "{refused}");
    // Shown again only while the secret it replaced still verifies: without an overlap, never.
    let body = "{\"overlap_seconds\": 0, \"from_version\": 5}";
    assert_eq!(rotate(&server, TOKEN, &platform, body).0, 200);
    let (status, refused) = rotate(&server, TOKEN, &platform, body);
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("idempotency_conflict")), "{refused}");
    server.stop();
}

/// Starts `command` and waits until it prints where its API is (then stops it): whether it did.
fn serves(mut command: Command, dir: &std::path::Path) -> bool {
    let log = dir.join("serve.log");
    let mut child = command.stdout(std::fs::File::create(&log).expect("log")).stderr(Stdio::null()).spawn().expect("start");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut listening = false;
    while Instant::now() < deadline && !listening {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        listening = std::fs::read_to_string(&log).unwrap_or_default().contains("API: http://");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait().expect("wait");
    listening
}

/// A database keeps an HMAC of the master key it was served with (since session 61): a start
/// with another key, or with none where one was (a key generated then is removed again), is
/// refused instead of changing every platform's secret; a directory never served with a key (a
/// `serve --once` or benchmark directory) takes the first one it is served with.
#[test]
fn a_database_refuses_a_master_key_other_than_the_one_it_was_served_with() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let once = Command::new(BINARY).args(["serve", "--once", "--demo", "--data-dir"]).arg(&data).env_remove("CLEARING_MASTER_KEY").output().expect("run");
    assert!(once.status.success(), "{}", String::from_utf8_lossy(&once.stderr));
    assert!(!data.join("master-key").exists(), "`serve --once` makes no key");
    let mut first = serve(&data);
    first.env("CLEARING_ADMIN_TOKEN", TOKEN);
    assert!(serves(first, dir.path()), "the first keyed start is taken");
    let key = std::fs::read_to_string(data.join("master-key")).expect("the key generated");
    let mut other = serve(&data);
    other.env("CLEARING_ADMIN_TOKEN", TOKEN).env("CLEARING_MASTER_KEY", "ab".repeat(32));
    assert_refused(other, "not the one this database was served with");
    std::fs::remove_file(data.join("master-key")).expect("remove");
    let mut without = serve(&data);
    without.env("CLEARING_ADMIN_TOKEN", TOKEN);
    assert_refused(without, "was served with one");
    assert!(!data.join("master-key").exists(), "the key generated by the refused start is gone");
    write_mode(&data.join("master-key"), &key, 0o600);
    let mut again = serve(&data);
    again.env("CLEARING_ADMIN_TOKEN", TOKEN);
    assert!(serves(again, dir.path()), "the right key is taken again");
}
