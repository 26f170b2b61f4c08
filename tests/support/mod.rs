//! Helpers of the end-to-end tests: start the real server, sign requests as a platform; `money`
//! holds what the files of money tests share; `browser` drives headless chromium.
#![allow(dead_code)]

pub mod browser;
pub mod money;
pub mod portal;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const BINARY: &str = env!("CARGO_BIN_EXE_clearing");

pub struct Server {
    pub child: Child,
    pub base: String,
    pub lines: Vec<String>,
    /// The operator token it was started with (`None`: generated into its data directory).
    pub token: Option<String>,
}

/// Starts `clearing serve` on an ephemeral port and waits for its `API:` line.
pub fn start(data_dir: &std::path::Path, token: Option<&str>) -> Server {
    let mut command = Command::new(BINARY);
    command.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(data_dir).stdout(Stdio::piped()).stderr(Stdio::null());
    match token {
        Some(token) => command.env("CLEARING_ADMIN_TOKEN", token),
        None => command.env_remove("CLEARING_ADMIN_TOKEN"),
    };
    let mut server = wait_for_api(command.spawn().expect("start server"));
    server.token = Some(match token {
        Some(token) => token.to_string(),
        None => std::fs::read_to_string(data_dir.join("admin-token")).expect("the generated token").trim().to_string(),
    });
    server
}

/// The response of a call, whatever its status (ureq reports 4xx and 5xx as errors).
pub fn answer(result: Result<ureq::Response, ureq::Error>, what: &str) -> ureq::Response {
    match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(error) => panic!("{what}: {error}"),
    }
}

/// A test that fails (or never calls `stop`) must not leave its server running: the child is
/// killed if it has not exited.
impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Server {
    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        let mut request = ureq::get(&format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        let response = answer(request.call(), path);
        let status = response.status();
        (status, response.into_json().expect("JSON body"))
    }

    /// A page of the bank simulator (JSON), read with the operator token (the pages need it).
    pub fn sim_get(&self, path: &str) -> (u16, serde_json::Value) {
        self.get(path, self.token.as_deref())
    }

    /// A page of the bank simulator as text (statement files), read with the operator token.
    pub fn sim_text(&self, path: &str) -> String {
        let token = self.token.as_deref().expect("the server's token");
        let response = ureq::get(&format!("{}{path}", self.base)).set("Authorization", &format!("Bearer {token}")).call().expect(path);
        response.into_string().expect("text")
    }

    /// Sends SIGTERM and waits: the server must stop gracefully with success.
    pub fn stop(mut self) {
        // SAFETY: plain signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "server exit status {status:?}");
    }
}

pub fn sign(secret: &str, method: &str, path: &str, timestamp: i64, nonce: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    let canonical = format!("{method}\n{path}\n{timestamp}\n{nonce}\n{}", hex::encode(Sha256::digest(body)));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(canonical.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// Sends a signed GET with the given header values (each may be overridden to test failures).
pub fn signed_get(server: &Server, path: &str, platform: &str, timestamp: i64, nonce: &str, signature: &str) -> (u16, serde_json::Value) {
    let request = ureq::get(&format!("{}{path}", server.base))
        .set("X-Platform-Id", platform)
        .set("X-Timestamp", &timestamp.to_string())
        .set("X-Nonce", nonce)
        .set("X-Signature", signature);
    let response = answer(request.call(), path);
    (response.status(), response.into_json().expect("JSON"))
}

pub fn create_platform(server: &Server, token: &str, body: &str) -> (u16, serde_json::Value) {
    let request =
        ureq::post(&format!("{}/admin/platforms", server.base)).set("Authorization", &format!("Bearer {token}")).set("Content-Type", "application/json");
    let response = answer(request.send_string(body), "create platform");
    (response.status(), response.into_json().expect("JSON"))
}

pub fn signed_post(server: &Server, path: &str, platform: &str, secret: &str, nonce: &str, body: &str) -> (u16, bool, serde_json::Value) {
    signed_post_to(&server.base, path, platform, secret, nonce, body).expect("a response")
}

/// A signed POST to a server by its base URL; `None` when no response came (e.g. it was killed).
pub fn signed_post_to(base: &str, path: &str, platform: &str, secret: &str, nonce: &str, body: &str) -> Option<(u16, bool, serde_json::Value)> {
    let t = now();
    let signature = sign(secret, "POST", path, t, nonce, body.as_bytes());
    let request = ureq::post(&format!("{base}{path}"))
        .set("X-Platform-Id", platform)
        .set("X-Timestamp", &t.to_string())
        .set("X-Nonce", nonce)
        .set("X-Signature", &signature)
        .set("Content-Type", "application/json");
    let response = match request.send_string(body) {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(_) => return None,
    };
    let replayed = response.header("Idempotent-Replay") == Some("true");
    let status = response.status();
    Some((status, replayed, response.into_json().ok()?))
}

pub fn signed_get_json(server: &Server, path: &str, platform: &str, secret: &str, nonce: &str) -> (u16, serde_json::Value) {
    let t = now();
    signed_get(server, path, platform, t, nonce, &sign(secret, "GET", path, t, nonce, b""))
}

/// A file of the repository, found at run time (`CARGO_MANIFEST_DIR`, which cargo and nextest set
/// for every test): a test binary built from another clone of the same sources (a shared build
/// cache) still reads this clone's files.
#[allow(dead_code)]
pub fn repo_file(relative: impl AsRef<std::path::Path>) -> std::path::PathBuf {
    let root = std::env::var_os("CARGO_MANIFEST_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    root.join(relative)
}

/// The default configuration with some lines replaced (e.g. the simulator's latency).
pub fn config_with(replacements: &[(&str, &str)]) -> String {
    let mut text = include_str!("../../config/default.toml").to_string();
    for (from, to) in replacements {
        assert!(text.contains(from), "the default configuration has {from:?}");
        text = text.replace(from, to);
    }
    text
}

/// Starts `clearing serve` with a configuration file written into the data directory.
pub fn start_configured(data_dir: &std::path::Path, token: &str, config: &str) -> Server {
    let path = data_dir.join("test-config.toml");
    std::fs::create_dir_all(data_dir).expect("data dir");
    std::fs::write(&path, config).expect("config");
    let mut command = Command::new(BINARY);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env("CLEARING_ADMIN_TOKEN", token);
    let mut server = wait_for_api(command.spawn().expect("start server"));
    server.token = Some(token.to_string());
    server
}

/// Reads a started server's output up to its `API:` line.
pub fn wait_for_api(mut child: Child) -> Server {
    let mut reader = BufReader::new(child.stdout.take().expect("piped"));
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).expect("read") > 0, "server exited early: {lines:?}");
        lines.push(line.trim_end().to_string());
        if let Some(rest) = line.strip_prefix("API: ") {
            let base = rest.split_whitespace().next().expect("address").trim_end_matches('/').to_string();
            std::thread::spawn(move || for _ in reader.lines() {});
            return Server { child, base, lines, token: None };
        }
    }
}

impl Server {
    /// Kills the server at once (SIGKILL): nothing gets to finish.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }
}

static NONCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A nonce no other request of this test process uses.
pub fn fresh_nonce() -> String {
    let count = NONCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
    format!("n{nanos:x}c{count:08}")
}

/// A platform talking to the server with its id and secret.
pub struct Client<'a> {
    pub server: &'a Server,
    pub platform: String,
    pub secret: String,
}

impl<'a> Client<'a> {
    /// Creates a platform through the operator API (`body` is its JSON).
    pub fn create(server: &'a Server, token: &str, body: &str) -> Client<'a> {
        let (status, created) = create_platform(server, token, body);
        assert_eq!(status, 201, "{created}");
        Client { server, platform: created["platform_id"].as_str().unwrap().to_string(), secret: created["secret"].as_str().unwrap().to_string() }
    }

    /// A signed POST: status, whether it was an idempotent replay, and the body.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> (u16, bool, serde_json::Value) {
        signed_post(self.server, path, &self.platform, &self.secret, &fresh_nonce(), &body.to_string())
    }

    /// A signed GET.
    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        signed_get_json(self.server, path, &self.platform, &self.secret, &fresh_nonce())
    }

    /// Creates an individual member and returns its id.
    pub fn member(&self, number: &str, name: &str) -> String {
        let body = serde_json::json!({"out_order_no": number, "type": "individual", "name": name, "id_number": "11010519491231002X", "phone": "13800138000"});
        let (status, _, member) = self.post("/v1/members", &body);
        assert_eq!(status, 201, "{member}");
        member["member_id"].as_str().unwrap().to_string()
    }

    /// Opens a CNY account for a member and returns its id.
    pub fn account(&self, member: &str) -> String {
        let body = serde_json::json!({"out_order_no": format!("acct-{member}"), "member_id": member, "currency": "CNY"});
        let (status, _, account) = self.post("/v1/accounts", &body);
        assert_eq!(status, 201, "{account}");
        account["account_id"].as_str().unwrap().to_string()
    }

    /// Waits until an order reaches `status` (the simulator answers after its latency).
    pub fn wait_order(&self, order_id: &str, status: &str) -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (code, order) = self.get(&format!("/v1/orders/{order_id}"));
            assert_eq!(code, 200, "{order}");
            if order["status"] == status {
                return order;
            }
            assert!(std::time::Instant::now() < deadline, "order {order_id} never became {status}: {order}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Recharges an account through the simulator and waits for the money to land.
    pub fn fund(&self, account: &str, amount: &str, number: &str) -> String {
        let body = serde_json::json!({"out_order_no": number, "account_id": account, "amount": amount, "currency": "CNY"});
        let (status, _, order) = self.post("/v1/recharges", &body);
        assert_eq!((status, order["status"].as_str()), (201, Some("pending")), "{order}");
        let id = order["order_id"].as_str().unwrap().to_string();
        self.wait_order(&id, "succeeded");
        id
    }

    /// An account's balances: (available, withdrawable, frozen, unsettled).
    pub fn balances(&self, account: &str) -> (String, String, String, String) {
        let (status, shown) = self.get(&format!("/v1/accounts/{account}"));
        assert_eq!(status, 200, "{shown}");
        let b = &shown["balances"];
        let text = |key: &str| b[key].as_str().unwrap().to_string();
        (text("available"), text("withdrawable"), text("frozen"), text("unsettled"))
    }
}
