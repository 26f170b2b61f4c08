//! End-to-end tests of the HTTP server: the real binary on 127.0.0.1 with a temporary RocksDB.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const BINARY: &str = env!("CARGO_BIN_EXE_clearing");

struct Server {
    child: Child,
    base: String,
    lines: Vec<String>,
}

/// Starts `clearing serve` on an ephemeral port and waits for its `API:` line.
fn start(data_dir: &std::path::Path, token: Option<&str>) -> Server {
    let mut command = Command::new(BINARY);
    command.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(data_dir).stdout(Stdio::piped()).stderr(Stdio::null());
    match token {
        Some(token) => command.env("CLEARING_ADMIN_TOKEN", token),
        None => command.env_remove("CLEARING_ADMIN_TOKEN"),
    };
    let mut child = command.spawn().expect("start server");
    let mut reader = BufReader::new(child.stdout.take().expect("piped"));
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).expect("read") > 0, "server exited early: {lines:?}");
        lines.push(line.trim_end().to_string());
        if let Some(rest) = line.strip_prefix("API: ") {
            let base = rest.split_whitespace().next().expect("address").trim_end_matches('/').to_string();
            std::thread::spawn(move || for _ in reader.lines() {});
            return Server { child, base, lines };
        }
    }
}

impl Server {
    fn get(&self, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        let mut request = ureq::get(&format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        let response = match request.call() {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => response,
            Err(error) => panic!("GET {path}: {error}"),
        };
        let status = response.status();
        (status, response.into_json().expect("JSON body"))
    }

    /// Sends SIGTERM and waits: the server must stop gracefully with success.
    fn stop(mut self) {
        // SAFETY: plain signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "server exit status {status:?}");
    }
}

#[test]
fn health_readiness_and_operator_views() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), Some("operator-secret-1"));
    assert_eq!(server.get("/healthz", None), (200, serde_json::json!({"status": "ok"})));
    assert_eq!(server.get("/readyz", None), (200, serde_json::json!({"status": "ready"})));
    let cases: &[(&str, Option<&str>, u16, &str)] = &[
        ("/admin/shards", None, 401, "unauthenticated"),
        ("/admin/shards", Some("wrong"), 401, "unauthenticated"),
        ("/admin/invariants", Some("operator-secret-"), 401, "unauthenticated"),
        ("/admin/shards/7", Some("operator-secret-1"), 404, "not_found"),
        ("/admin/shards/x", Some("operator-secret-1"), 404, "not_found"),
        ("/no/such/path", None, 404, "not_found"),
    ];
    for (path, token, status, code) in cases {
        let (got, body) = server.get(path, *token);
        assert_eq!((got, body["error"]["code"].as_str()), (*status, Some(*code)), "{path} {token:?}: {body}");
    }
    let (status, shards) = server.get("/admin/shards", Some("operator-secret-1"));
    assert_eq!(status, 200);
    let shards = shards["shards"].as_array().expect("shards").clone();
    assert_eq!(shards.len(), 2);
    assert!(shards.iter().all(|s| s["stopped"] == false && s["last_sequence"].as_u64().unwrap() >= 1));
    let (status, one) = server.get("/admin/shards/1", Some("operator-secret-1"));
    assert_eq!((status, one["shard"].as_u64()), (200, Some(1)));
    let (status, report) = server.get("/admin/invariants", Some("operator-secret-1"));
    assert_eq!(status, 200);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["currencies"][0]["sum_minor"], "0");
    assert!(!server.lines.iter().any(|l| l.contains("operator-secret-1")), "a token from the environment is never printed");
    server.stop();
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
