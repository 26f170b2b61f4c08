//! `clearing load`: the load generator. Drives a running server over HTTP exactly as a platform
//! would: creates its own platform (operator token), members and accounts, funds them with
//! recharges through the bank simulator, then sends balance payments one per request (`single`)
//! or 8,189 per `/v1/bulk` request (`bulk`) from `--concurrency` connections, and reports
//! throughput and request latency.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// Operations per `/v1/bulk` request.
const BULK_SIZE: usize = gateway::bulk::OPERATIONS_MAX;
/// What every account is funded with, in yuan: enough for any run's payments of at most 1.00.
const FUNDING: &str = "1000000.00";
/// The longest response body the load generator reads (a bulk answer is well below it).
const RESPONSE_BYTES_MAX: usize = 64 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Single,
    Bulk,
}

#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// Base URL of the server, e.g. http://127.0.0.1:8080
    #[arg(long)]
    url: String,
    /// The system operator's token (creates the load's own platform).
    #[arg(long)]
    admin_token: String,
    #[arg(long, value_enum, default_value = "single")]
    mode: Mode,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Balance payments to send.
    #[arg(long, default_value_t = 100_000)]
    orders: usize,
    /// Accounts (one member each) to pay between.
    #[arg(long, default_value_t = 10_000)]
    accounts: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Milliseconds to wait before resending a request answered 429 `rate_limited` or 503
    /// `overloaded` (default: what the answer's `Retry-After` says). A small value keeps a
    /// platform pushing far over its quota (the overload test of DESIGN.md invariant 12).
    #[arg(long)]
    retry_pause_ms: Option<u64>,
}

/// A plain HTTP/1.1 keep-alive connection: the load generator shares the cores it measures, so
/// it spends as little as it can per request (no per-header allocations, one write per request).
struct Connection {
    address: String,
    stream: Option<std::net::TcpStream>,
    buffer: Vec<u8>,
}

impl Connection {
    /// Sends a request and reads its response. A kept-alive connection the server has closed
    /// meanwhile (idle timeout) is replaced once; requests carry order numbers, so a resend is safe.
    fn exchange(&mut self, request: &[u8]) -> Result<Answer> {
        let reused = self.stream.is_some();
        match self.exchange_once(request) {
            Err(_) if reused => {
                self.stream = None;
                self.exchange_once(request)
            }
            other => other,
        }
    }

    fn exchange_once(&mut self, request: &[u8]) -> Result<Answer> {
        use std::io::{Read, Write};
        if self.stream.is_none() {
            let stream = std::net::TcpStream::connect(&self.address).with_context(|| format!("connecting to {}", self.address))?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(Duration::from_secs(120)))?;
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut().expect("connected");
        if let Err(error) = stream.write_all(request) {
            self.stream = None;
            return Err(error.into());
        }
        self.buffer.clear();
        let mut chunk = [0u8; 16 * 1024];
        let header_end = loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let read = match stream.read(&mut chunk) {
                Ok(read) => read,
                Err(error) => {
                    self.stream = None;
                    return Err(error.into());
                }
            };
            if read == 0 {
                self.stream = None;
                bail!("the server closed the connection");
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        };
        let head = std::str::from_utf8(&self.buffer[..header_end]).context("response head is not UTF-8")?;
        let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| anyhow!("bad status line"))?;
        let header = |wanted: &str| -> Option<u64> {
            head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case(wanted).then(|| value.trim().parse().ok())?
            })
        };
        // The server's length, bounded: a garbage header ends this connection, not the process.
        let length = header("content-length").ok_or_else(|| anyhow!("response without content-length"))?;
        let length = usize::try_from(length)
            .ok()
            .filter(|l| *l <= RESPONSE_BYTES_MAX)
            .ok_or_else(|| anyhow!("response content-length {length} past {RESPONSE_BYTES_MAX}"))?;
        let retry_after_seconds = header("retry-after");
        while self.buffer.len() < header_end + length {
            let read = stream.read(&mut chunk)?;
            if read == 0 {
                self.stream = None;
                bail!("the server closed the connection mid-body");
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
        Ok(Answer { status, body: self.buffer[header_end..header_end + length].to_vec(), retry_after_seconds })
    }
}

/// A response: status, body and `Retry-After` (seconds) if the server sent one.
struct Answer {
    status: u16,
    body: Vec<u8>,
    retry_after_seconds: Option<u64>,
}

/// Responses the load saw besides its answers, over all its clients.
#[derive(Default)]
struct Counts {
    /// 429 `rate_limited`: the platform is over a quota; resent after the pause.
    throttled: AtomicU64,
    /// 503 `overloaded`: a full queue; resent after the pause.
    overloaded: AtomicU64,
    /// Any other 5xx (never expected).
    server_errors: AtomicU64,
}

/// One signing platform client with a keep-alive connection.
struct Client {
    connection: std::sync::Mutex<Connection>,
    base: String,
    platform: String,
    secret: String,
    nonce_prefix: String,
    nonces: AtomicU64,
    counts: Arc<Counts>,
    retry_pause_ms: Option<u64>,
}

#[derive(serde::Deserialize)]
struct BulkStatuses {
    results: Vec<BulkStatus>,
}

#[derive(serde::Deserialize)]
struct BulkStatus {
    status: u16,
}

impl Client {
    fn call(&self, method: &str, path: &str, body: &str) -> Result<(u16, Value)> {
        let (status, bytes) = self.send(method, path, body)?;
        let value: Value = serde_json::from_slice(&bytes).with_context(|| format!("{method} {path}: body is not JSON"))?;
        Ok((status, value))
    }

    /// Sends a signed request and returns the status and the raw body. A 429 `rate_limited` or a
    /// 503 `overloaded` is counted and sent again (signed anew) after the pause.
    fn send(&self, method: &str, path: &str, body: &str) -> Result<(u16, Vec<u8>)> {
        loop {
            let answer = self.send_once(method, path, body)?;
            let counter = match answer.status {
                429 => &self.counts.throttled,
                503 if answer.body.windows(12).any(|w| w == b"\"overloaded\"") => &self.counts.overloaded,
                status => {
                    if status >= 500 {
                        self.counts.server_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok((answer.status, answer.body));
                }
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let pause = self.retry_pause_ms.unwrap_or(1000 * answer.retry_after_seconds.unwrap_or(1).min(60));
            std::thread::sleep(Duration::from_millis(pause));
        }
    }

    fn send_once(&self, method: &str, path: &str, body: &str) -> Result<Answer> {
        let timestamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs().to_string();
        let nonce = format!("{}{:012}", self.nonce_prefix, self.nonces.fetch_add(1, Ordering::Relaxed));
        let canonical = gateway::auth::canonical(method, path, &timestamp, &nonce, body.as_bytes());
        let signature = gateway::secrets::hmac_hex(self.secret.as_bytes(), canonical.as_bytes());
        let host = self.base.trim_start_matches("http://");
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nX-Platform-Id: {}\r\nX-Timestamp: {timestamp}\r\nX-Nonce: {nonce}\r\nX-Signature: {signature}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.platform,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body.as_bytes());
        let mut connection = self.connection.lock().expect("one request at a time per client");
        connection.exchange(&request).with_context(|| format!("{method} {path}"))
    }

    fn post(&self, path: &str, body: &str) -> Result<Value> {
        let (status, value) = self.call("POST", path, body)?;
        if !(200..300).contains(&status) {
            bail!("POST {path}: {status} {value}");
        }
        Ok(value)
    }
}

/// A one-line progress bar on stderr, redrawn twice a second while work runs.
struct Progress {
    done: Arc<AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    fn start(label: &'static str, total: usize) -> Progress {
        let done = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (shown, stopping) = (done.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            loop {
                let finished = stopping.load(Ordering::Relaxed);
                let count = shown.load(Ordering::Relaxed).min(total);
                let filled = (count * 30).checked_div(total).unwrap_or(30);
                let rate = count as f64 / started.elapsed().as_secs_f64().max(1e-9);
                eprint!("\r{label:<9} [{}{}] {count}/{total} {rate:.0}/s   ", "#".repeat(filled), ".".repeat(30 - filled));
                if finished {
                    eprintln!();
                    return;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        Progress { done, stop, thread: Some(thread) }
    }

    fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `work(index)` for every index in `0..count` on `threads` threads; the first error stops all.
fn parallel(threads: usize, count: usize, progress: &Progress, step: usize, work: impl Fn(usize) -> Result<()> + Sync) -> Result<()> {
    let next = AtomicUsize::new(0);
    let failed = std::sync::Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count || failed.lock().expect("lock").is_some() {
                    return;
                }
                if let Err(error) = work(index) {
                    failed.lock().expect("lock").get_or_insert(error);
                    return;
                }
                progress.done.fetch_add(step, Ordering::Relaxed);
            });
        }
    });
    match failed.into_inner().expect("lock") {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank].as_secs_f64() * 1000.0
}

fn create_platform(args: &LoadArgs) -> Result<(String, String)> {
    let name = format!("load {}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs());
    let response = ureq::post(&format!("{}/admin/platforms", args.url))
        .set("Authorization", &format!("Bearer {}", args.admin_token))
        .send_json(json!({"name": name}))
        .map_err(|e| anyhow!("creating the load's platform: {e}"))?;
    let created: Value = response.into_json()?;
    let field = |key: &str| created[key].as_str().map(str::to_string).ok_or_else(|| anyhow!("no {key} in {created}"));
    Ok((field("platform_id")?, field("secret")?))
}

/// Creates members and accounts; returns the account ids.
fn open_accounts(args: &LoadArgs, clients: &[Client]) -> Result<Vec<String>> {
    let accounts: Vec<std::sync::OnceLock<String>> = (0..args.accounts).map(|_| std::sync::OnceLock::new()).collect();
    let progress = Progress::start("accounts", args.accounts);
    let thread_of = AtomicUsize::new(0);
    parallel(args.concurrency, args.accounts, &progress, 1, |index| {
        let client = &clients[thread_of.fetch_add(1, Ordering::Relaxed) % clients.len()];
        let member = client.post(
            "/v1/members",
            &json!({"out_order_no": format!("m{index}"), "type": "individual", "name": format!("Load Member {index}"), "id_number": "11010519491231002X", "phone": "13800138000"}).to_string(),
        )?;
        let member_id = member["member_id"].as_str().ok_or_else(|| anyhow!("no member_id"))?;
        let account = client.post("/v1/accounts", &json!({"out_order_no": format!("a{index}"), "member_id": member_id, "currency": "CNY"}).to_string())?;
        let id = account["account_id"].as_str().ok_or_else(|| anyhow!("no account_id"))?;
        let _ = accounts[index].set(id.to_string());
        Ok(())
    })?;
    progress.finish();
    Ok(accounts.into_iter().map(|a| a.into_inner().expect("every account opened")).collect())
}

/// Funds every account through the simulator and waits until no recharge is pending.
fn fund(args: &LoadArgs, clients: &[Client], accounts: &[String]) -> Result<()> {
    // Only recharges from now on are looked at while waiting (the listing stops at `from`).
    let since = time_rfc3339(std::time::SystemTime::now() - Duration::from_secs(5));
    let progress = Progress::start("funding", accounts.len());
    let chunks: Vec<&[String]> = accounts.chunks(BULK_SIZE).collect();
    let thread_of = AtomicUsize::new(0);
    parallel(args.concurrency.min(chunks.len()), chunks.len(), &progress, 0, |index| {
        let client = &clients[thread_of.fetch_add(1, Ordering::Relaxed) % clients.len()];
        let operations: Vec<Value> = chunks[index]
            .iter()
            .map(|account| json!({"op": "recharge", "body": {"out_order_no": format!("fund-{account}"), "account_id": account, "amount": FUNDING, "currency": "CNY"}}))
            .collect();
        let reply = client.post("/v1/bulk", &json!({"operations": operations}).to_string())?;
        let results = reply["results"].as_array().ok_or_else(|| anyhow!("no results"))?;
        if let Some(failed) = results.iter().find(|r| r["status"].as_u64() != Some(201)) {
            bail!("a funding recharge was refused: {failed}");
        }
        progress.done.fetch_add(chunks[index].len(), Ordering::Relaxed);
        Ok(())
    })?;
    progress.finish();
    wait_funded(&clients[0], &since, accounts.len())
}

/// How long the bank simulator may take to answer every funding recharge.
const FUNDING_WAIT: Duration = Duration::from_secs(120);

/// Waits until the bank simulator has answered every funding recharge of this run (none of the
/// platform's recharges since `since` is pending); fails, saying what it waited for, when one
/// failed or after `FUNDING_WAIT`.
fn wait_funded(client: &Client, since: &str, funded: usize) -> Result<()> {
    let deadline = Instant::now() + FUNDING_WAIT;
    loop {
        if count_orders(client, "failed", since, 1, deadline)? > 0 {
            bail!("the bank simulator failed a funding recharge (is simulator.failure_per_mille above 0?)");
        }
        let pending = count_orders(client, "pending", since, usize::MAX, deadline)?;
        if pending == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{pending} of {funded} funding recharges still pending at the bank simulator after {} s (is the simulator enabled?)", FUNDING_WAIT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Counts the platform's recharges in `status` created since `since`, up to `enough`, following
/// the listing's cursor to its end (a page can be empty and still have a next one).
fn count_orders(client: &Client, status: &str, since: &str, enough: usize, deadline: Instant) -> Result<usize> {
    let mut count = 0;
    let mut cursor = String::new();
    loop {
        let path = format!("/v1/orders?kind=recharge&status={status}&limit=500&from={since}{cursor}");
        let (code, page) = client.call("GET", &path, "")?;
        if code != 200 {
            bail!("GET {path}: {code} {page}");
        }
        count += page["orders"].as_array().map_or(0, Vec::len);
        match page["next_cursor"].as_str() {
            Some(next) if count < enough => cursor = format!("&cursor={next}"),
            _ => return Ok(count),
        }
        if Instant::now() > deadline {
            bail!("listing the {status} funding recharges did not reach its end within {} s", FUNDING_WAIT.as_secs());
        }
    }
}

fn time_rfc3339(at: std::time::SystemTime) -> String {
    let micros = at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
    gateway::orders::format_time(micros)
}

fn payment_json(index: usize, accounts: &[String], random: &mut rand::rngs::StdRng) -> String {
    let payer = random.gen_range(0..accounts.len());
    let mut payee = random.gen_range(0..accounts.len() - 1);
    if payee >= payer {
        payee += 1;
    }
    let cents: u32 = random.gen_range(1..=100);
    let amount = format!("{}.{:02}", cents / 100, cents % 100);
    format!(
        "{{\"out_order_no\":\"p{index}\",\"payer_account_id\":\"{}\",\"mode\":\"balance\",\"amount\":\"{amount}\",\"currency\":\"CNY\",\"payees\":[{{\"account_id\":\"{}\",\"amount\":\"{amount}\"}}]}}",
        accounts[payer], accounts[payee]
    )
}

/// Runs the load and prints `orders_per_second` and request latency percentiles.
pub fn run(args: LoadArgs) -> Result<()> {
    if args.accounts < 2 || args.concurrency == 0 || args.orders == 0 {
        bail!("--accounts must be at least 2, --concurrency and --orders at least 1");
    }
    let (platform, secret) = create_platform(&args)?;
    println!("platform: {platform} ({} accounts, {} orders, mode {:?}, concurrency {})", args.accounts, args.orders, args.mode, args.concurrency);
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    let address = args.url.trim_end_matches('/').strip_prefix("http://").ok_or_else(|| anyhow!("--url must be http://HOST:PORT"))?.to_string();
    let counts = Arc::new(Counts::default());
    let clients: Vec<Client> = (0..args.concurrency)
        .map(|index| Client {
            connection: std::sync::Mutex::new(Connection { address: address.clone(), stream: None, buffer: Vec::new() }),
            base: args.url.trim_end_matches('/').to_string(),
            platform: platform.clone(),
            secret: secret.clone(),
            // Unique per run: nonces are remembered by the server for the signing window.
            nonce_prefix: format!("L{run}T{index}X"),
            nonces: AtomicU64::new(0),
            counts: counts.clone(),
            retry_pause_ms: args.retry_pause_ms,
        })
        .collect();
    let accounts = open_accounts(&args, &clients)?;
    fund(&args, &clients, &accounts)?;

    let (requests, per_request) = match args.mode {
        Mode::Single => (args.orders, 1),
        Mode::Bulk => (args.orders.div_ceil(BULK_SIZE), BULK_SIZE),
    };
    let latencies: Vec<std::sync::Mutex<Vec<Duration>>> = (0..args.concurrency).map(|_| std::sync::Mutex::new(Vec::new())).collect();
    let refused = AtomicUsize::new(0);
    let thread_of = AtomicUsize::new(0);
    let progress = Progress::start("payments", args.orders);
    let started = Instant::now();
    parallel(args.concurrency.min(requests), requests, &progress, 0, |request| {
        let slot = thread_of.fetch_add(1, Ordering::Relaxed) % clients.len();
        let mut random = rand::rngs::StdRng::seed_from_u64(args.seed ^ (request as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let first = request * per_request;
        let last = (first + per_request).min(args.orders);
        let (path, body) = match args.mode {
            Mode::Single => ("/v1/payments", payment_json(first, &accounts, &mut random)),
            Mode::Bulk => {
                let mut body = String::with_capacity((last - first) * 200 + 20);
                body.push_str("{\"operations\":[");
                for index in first..last {
                    if index > first {
                        body.push(',');
                    }
                    body.push_str("{\"op\":\"payment\",\"body\":");
                    body.push_str(&payment_json(index, &accounts, &mut random));
                    body.push('}');
                }
                body.push_str("]}");
                ("/v1/bulk", body)
            }
        };
        let sent = Instant::now();
        let (status, reply) = clients[slot].send("POST", path, &body)?;
        latencies[slot].lock().expect("lock").push(sent.elapsed());
        let failures = match args.mode {
            Mode::Single => usize::from(status != 201),
            // Only each result's status is read: the load generator shares the cores it measures.
            Mode::Bulk => match serde_json::from_slice::<BulkStatuses>(&reply) {
                Ok(parsed) => parsed.results.iter().filter(|r| r.status != 201).count(),
                Err(_) => last - first,
            },
        };
        refused.fetch_add(failures, Ordering::Relaxed);
        progress.done.fetch_add(last - first, Ordering::Relaxed);
        Ok(())
    })?;
    let elapsed = started.elapsed();
    progress.finish();
    let mut all: Vec<Duration> = latencies.into_iter().flat_map(|l| l.into_inner().expect("lock")).collect();
    all.sort_unstable();
    let refused = refused.into_inner();
    println!("orders: {} accepted, {refused} refused, in {:.2} s ({requests} requests)", args.orders - refused, elapsed.as_secs_f64());
    println!("orders_per_second: {:.0}", args.orders as f64 / elapsed.as_secs_f64());
    println!("latency_ms p50 p99 p100: {:.2} {:.2} {:.2}", percentile(&all, 50.0), percentile(&all, 99.0), percentile(&all, 100.0));
    let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    println!(
        "resent: {} rate_limited (429), {} overloaded (503); other 5xx answers: {}",
        count(&counts.throttled),
        count(&counts.overloaded),
        count(&counts.server_errors)
    );
    let listing = time_listing(&clients[0])?;
    println!("listing_ms p50 p99 p100: {:.2} {:.2} {:.2}", percentile(&listing, 50.0), percentile(&listing, 99.0), percentile(&listing, 100.0));
    if refused > 0 {
        bail!("{refused} payments were refused");
    }
    Ok(())
}

/// Pages of the load's own orders each listing measurement asks for, per filter.
const LISTING_PAGES: usize = 20;

/// Times filtered listing pages of the load's platform (what a platform's back office asks
/// while other platforms' history fills the shards): newest payments, and pending recharges.
fn time_listing(client: &Client) -> Result<Vec<Duration>> {
    let mut timings = Vec::with_capacity(2 * LISTING_PAGES);
    for path in ["/v1/orders?kind=payment&limit=50", "/v1/orders?kind=recharge&status=pending&limit=50"] {
        for _ in 0..LISTING_PAGES {
            let sent = Instant::now();
            let (status, page) = client.call("GET", path, "")?;
            timings.push(sent.elapsed());
            if status != 200 {
                bail!("GET {path}: {status} {page}");
            }
        }
    }
    timings.sort_unstable();
    Ok(timings)
}
