//! The bank simulator (DESIGN.md, channels): an in-process stand-in for the banks behind the
//! simulator channels. It takes recharges, withdrawals and micro-deposits, answers each after a
//! configurable latency with a callback signed with the channel key (over HTTP, to the server's
//! own callback endpoint, exactly as a bank would), fails a configurable share of orders, and
//! keeps what a bank customer sees of their card (`GET /sim/cards/{card_no}/transactions`).
//!
//! Its queue is memory only, like a bank's systems are outside ours: after a restart the server
//! hands it every order still waiting for a verdict again (`resume`), and verdicts are idempotent.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use crossbeam_channel::{unbounded, Receiver, Sender};
use engine::ledger::command::{Command, Envelope};
use engine::ledger::types::{OrderId, OrderKind, OrderStatus};
use engine::money::Minor;
use engine::result::ResultCode;
use engine::Engine;
use serde::{Deserialize, Serialize};
use storage::Store;

use crate::error::ApiError;
use crate::orders::{parse_order_id, public_order_id};
use crate::secrets::hmac_hex;

/// How the simulated bank behaves (config `[simulator]`).
#[derive(Clone, Copy, Debug)]
pub struct SimulatorConfig {
    /// Whether the server runs the simulator (without it, orders wait for a real channel).
    pub enabled: bool,
    /// Milliseconds before the bank answers an order.
    pub latency_ms: u64,
    /// Orders in a thousand the bank fails (decided per order, so a resent order gets the same verdict).
    pub failure_per_mille: u16,
    /// Delivery attempts of one callback before the simulator gives up until the next restart.
    pub callback_attempts_max: u32,
    /// The business day's offset from UTC (statement files are per business day).
    pub utc_offset_seconds: i32,
}

impl Default for SimulatorConfig {
    fn default() -> SimulatorConfig {
        SimulatorConfig { enabled: true, latency_ms: 200, failure_per_mille: 0, callback_attempts_max: 10, utc_offset_seconds: 8 * 3600 }
    }
}

/// Seconds a callback's timestamp may be off (the same window as platform requests).
const CALLBACK_WINDOW_SECONDS: i64 = 300;
/// Threads that deliver callbacks (each delivery waits for a durable write on our side).
const DELIVERY_THREADS: usize = 4;
/// Longest wait between two delivery attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What the bank is asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Work {
    /// Collect `amount` for a pending recharge or direct payment through money-in `channel`.
    Recharge { order: OrderId, channel: u16 },
    /// Pay `amount` to `card_no` for a withdrawal order through `channel`.
    Withdrawal { order: OrderId, card_no: String, channel: u16 },
    /// Collect `amount` from a member's card for a pending recharge (代收, collection on behalf).
    Collection { order: OrderId, channel: u16, card_no: String },
    /// Pay a verification amount to a card being bound (no order, no callback).
    MicroDeposit { card_no: String, currency: String },
}

#[derive(Clone, Debug)]
struct Job {
    work: Work,
    /// Decimal string, as the bank shows it.
    amount: String,
    attempt: u32,
    /// Orders in a thousand this job's channel fails.
    failure_per_mille: u16,
}

/// The remark of a micro-deposit on the card's statement.
pub const DEPOSIT_REMARK: &str = "card verification deposit";

/// One line of a card's statement as its holder sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CardTransaction {
    pub amount: String,
    pub remark: String,
    pub time: String,
}

/// The callback a bank sends when it has decided an order.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Callback {
    pub kind: String,
    pub order_id: String,
    pub status: String,
    pub amount: String,
    /// The channel the verdict is about (withdrawals): a verdict of a channel the order has
    /// left since (after a fallback) is stale and ignored.
    #[serde(default)]
    pub channel: Option<String>,
}

struct Inner {
    config: SimulatorConfig,
    key: String,
    store: Arc<dyn Store>,
    queue: Sender<(Instant, Job)>,
    callback_url: OnceLock<String>,
    cards: Mutex<HashMap<String, Vec<CardTransaction>>>,
    sequence: std::sync::atomic::AtomicU64,
    /// The channels: each one's behaviour (latency, failure share) and tariff (the fee its
    /// statement lines show), as the operator has them now.
    channels: OnceLock<Arc<crate::channels::Channels>>,
    /// The bank's side: payouts it received, with its verdict once decided (what a status query
    /// answers). A payout the bank never received (`sim_drop_per_mille`) is not here.
    received: Mutex<HashMap<(u64, u16), Option<bool>>>,
    /// Our side: payouts handed to a channel and not yet answered, with the channel and when
    /// the answer is due (the timeout watchdog reads it).
    outstanding: Mutex<HashMap<u64, (u16, Instant)>>,
}

/// What the bank says when asked about a payout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BankStatus {
    /// The bank has no such order: it never arrived, so it is safe to send it elsewhere.
    Unknown,
    Processing,
    Decided {
        succeeded: bool,
    },
}

/// The running simulator; cheap to clone.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

const CARD_PREFIX: &str = "s/card/";

/// The signature header of a callback: `t=<unix seconds>,v1=<hex HMAC-SHA256(key, "t.body")>`.
pub fn signature_header(key: &str, timestamp: i64, body: &[u8]) -> String {
    let mut message = format!("{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    format!("t={timestamp},v1={}", hmac_hex(key.as_bytes(), &message))
}

/// Checks a callback's signature header against its body and the clock.
pub fn verify_signature(key: &str, header: &str, body: &[u8], now: i64) -> Result<(), ApiError> {
    let bad = || ApiError::unauthenticated("missing or bad X-Channel-Signature");
    let mut timestamp = None;
    let mut signature = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => signature = Some(value),
            _ => {}
        }
    }
    let (timestamp, signature) = (timestamp.ok_or_else(bad)?, signature.ok_or_else(bad)?);
    if (now - timestamp).abs() > CALLBACK_WINDOW_SECONDS {
        return Err(ApiError::new(401, "timestamp_out_of_window", "the callback's timestamp is too far off"));
    }
    let expected = signature_header(key, timestamp, body);
    let expected = expected.rsplit_once("v1=").expect("built above").1;
    let equal = crate::auth::constant_time_equal(expected.as_bytes(), signature.as_bytes());
    if equal {
        Ok(())
    } else {
        Err(bad())
    }
}

fn unix_seconds() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl Simulator {
    /// Starts the simulator's threads; callbacks go out once `set_callback_url` is called.
    pub fn start(config: SimulatorConfig, key: String, store: Arc<dyn Store>) -> Result<Simulator, String> {
        let mut cards: HashMap<String, Vec<CardTransaction>> = HashMap::new();
        for (rest, line) in crate::records::load_all::<CardTransaction>(store.as_ref(), CARD_PREFIX.as_bytes())? {
            let rest = String::from_utf8_lossy(&rest).into_owned();
            let card = rest.split('/').next().unwrap_or_default().to_string();
            cards.entry(card).or_default().push(line);
        }
        let (queue, incoming) = unbounded();
        let inner = Arc::new(Inner {
            config,
            key,
            store,
            queue,
            callback_url: OnceLock::new(),
            cards: Mutex::new(cards),
            sequence: std::sync::atomic::AtomicU64::new(0),
            channels: OnceLock::new(),
            received: Mutex::new(HashMap::new()),
            outstanding: Mutex::new(HashMap::new()),
        });
        let (deliver, deliveries) = unbounded();
        std::thread::Builder::new().name("sim-bank".into()).spawn(move || timer_loop(&incoming, &deliver)).map_err(|e| e.to_string())?;
        for index in 0..DELIVERY_THREADS {
            let (worker, deliveries) = (inner.clone(), deliveries.clone());
            std::thread::Builder::new()
                .name(format!("sim-callback-{index}"))
                .spawn(move || {
                    for job in deliveries.iter() {
                        deliver_one(&worker, job);
                    }
                })
                .map_err(|e| e.to_string())?;
        }
        Ok(Simulator { inner })
    }

    /// The channels whose behaviour the bank follows (payouts: per channel; money in: the
    /// `[simulator]` defaults) and whose tariff its statements show.
    pub fn set_channels(&self, channels: Arc<crate::channels::Channels>) {
        let _ = self.inner.channels.set(channels);
    }

    /// (latency_ms, failure_per_mille, drop_per_mille) of the channel doing `work`.
    fn behaviour_of(&self, work: &Work) -> (u64, u16, u16) {
        let default = (self.inner.config.latency_ms, self.inner.config.failure_per_mille, 0);
        match work {
            Work::Withdrawal { channel, .. } => {
                self.inner.channels.get().and_then(|c| c.get(*channel)).map_or(default, |c| (c.sim_latency_ms, c.sim_failure_per_mille, c.sim_drop_per_mille))
            }
            _ => default,
        }
    }

    /// The bank's answer to a status query about payout `order` through `channel`.
    pub fn query(&self, order: OrderId, channel: u16) -> BankStatus {
        match self.inner.received.lock().expect("received lock").get(&(order.0, channel)) {
            None => BankStatus::Unknown,
            Some(None) => BankStatus::Processing,
            Some(Some(succeeded)) => BankStatus::Decided { succeeded: *succeeded },
        }
    }

    /// Payouts whose answer is overdue at `now` (`timeout_of` a channel); each is re-armed, so
    /// one still processing is looked at again a timeout later.
    pub fn overdue(&self, now: Instant, timeout_of: impl Fn(u16) -> Duration) -> Vec<(OrderId, u16)> {
        let mut outstanding = self.inner.outstanding.lock().expect("outstanding lock");
        let mut due = Vec::new();
        for (order, (channel, deadline)) in outstanding.iter_mut() {
            if *deadline <= now {
                due.push((OrderId(*order), *channel));
                *deadline = now + timeout_of(*channel);
            }
        }
        due
    }

    /// Our side has the final answer on payout `order`: nothing to watch any more.
    pub fn answered(&self, order: OrderId) {
        if let Some((channel, _)) = self.inner.outstanding.lock().expect("outstanding lock").remove(&order.0) {
            self.inner.received.lock().expect("received lock").remove(&(order.0, channel));
        }
    }

    /// Where callbacks are sent (the server's own `/channels/simulator/callback`).
    pub fn set_callback_url(&self, url: String) {
        let _ = self.inner.callback_url.set(url);
    }

    /// The key callbacks are signed with.
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// Hands the bank an order; it answers after the configured latency.
    pub fn submit(&self, work: Work, amount: String) {
        if !self.inner.config.enabled {
            return;
        }
        let (latency_ms, failure_per_mille, drop_per_mille) = self.behaviour_of(&work);
        if let Work::Withdrawal { order, channel, .. } = &work {
            let timeout = self.inner.channels.get().and_then(|c| c.get(*channel)).map_or(Duration::from_secs(600), |c| Duration::from_millis(c.timeout_ms));
            self.inner.outstanding.lock().expect("outstanding lock").insert(order.0, (*channel, Instant::now() + timeout));
            if dropped(drop_per_mille, *order, *channel) {
                // Lost on the way: the bank never hears of it, no verdict will come.
                return;
            }
            self.inner.received.lock().expect("received lock").entry((order.0, *channel)).or_insert(None);
        }
        let due = Instant::now() + Duration::from_millis(latency_ms);
        let _ = self.inner.queue.send((due, Job { work, amount, attempt: 0, failure_per_mille }));
    }

    /// A card's statement, oldest first.
    pub fn card_transactions(&self, card_no: &str) -> Vec<CardTransaction> {
        self.inner.cards.lock().expect("cards lock").get(card_no).cloned().unwrap_or_default()
    }

    /// Hands the bank again every order that still waits for a simulator channel's verdict
    /// (after a restart); `card_of` names the card of a withdrawal.
    pub fn resume(&self, engine: &Engine, card_of: impl Fn(u32, &str) -> Option<String>) -> Result<usize, engine::EngineError> {
        let mut waiting = Vec::new();
        if !self.inner.config.enabled {
            return Ok(0);
        }
        for shard in 0..engine.config().shard_count {
            let part = engine.read_shard(shard, |state| {
                state
                    .orders
                    .iter()
                    .filter(|o| {
                        let money_in =
                            o.kind == OrderKind::Recharge || matches!(o.detail, engine::ledger::types::OrderDetail::Payment { channel: Some(_), .. });
                        (money_in && o.status == OrderStatus::Pending) || (o.kind == OrderKind::Withdrawal && o.status == OrderStatus::Processing)
                    })
                    .map(|o| {
                        let channel = match o.detail {
                            engine::ledger::types::OrderDetail::Withdrawal { channel, .. } | engine::ledger::types::OrderDetail::Recharge { channel } => {
                                channel
                            }
                            engine::ledger::types::OrderDetail::Payment { channel: Some(channel), .. } => channel,
                            _ => 0,
                        };
                        (o.id, o.kind, o.platform, o.out_order_no, state.currencies[o.currency.0 as usize].format(o.amount), channel)
                    })
                    .collect::<Vec<_>>()
            })?;
            waiting.extend(part);
        }
        let count = waiting.len();
        for (order, kind, platform, number, amount, channel) in waiting {
            let work = match kind {
                OrderKind::Withdrawal => {
                    let card_no = number.and_then(|n| card_of(platform, n.as_str())).unwrap_or_default();
                    Work::Withdrawal { order, card_no, channel }
                }
                _ => Work::Recharge { order, channel },
            };
            self.submit(work, amount);
        }
        Ok(count)
    }
}

/// Whether a payout is lost on its way to the bank: fixed per order and channel (a resent
/// order is lost again), independent of the failure verdict.
fn dropped(drop_per_mille: u16, order: OrderId, channel: u16) -> bool {
    let seed = order.0 ^ ((channel as u64) << 48) ^ 0x5eed_d0d0;
    drop_per_mille > 0 && (xxhash_rust::xxh3::xxh3_64(&seed.to_le_bytes()) % 1000) < drop_per_mille as u64
}

/// Whether the bank fails this order: a fixed verdict per order, so resent orders agree.
fn fails(failure_per_mille: u16, work: &Work) -> bool {
    let seed = match work {
        Work::Recharge { order, .. } | Work::Collection { order, .. } => order.0,
        // Each channel decides on its own: a fallback channel may pay what the first failed.
        Work::Withdrawal { order, channel, .. } => order.0 ^ ((*channel as u64) << 48),
        Work::MicroDeposit { .. } => return false,
    };
    (xxhash_rust::xxh3::xxh3_64(&seed.to_le_bytes()) % 1000) < failure_per_mille as u64
}

/// Keeps the jobs in due order and hands each to a delivery thread when it is due.
fn timer_loop(incoming: &Receiver<(Instant, Job)>, deliver: &Sender<Job>) {
    let mut heap: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut jobs: HashMap<u64, Job> = HashMap::new();
    let mut next_id = 0u64;
    loop {
        let now = Instant::now();
        while let Some(Reverse((due, id))) = heap.peek().copied() {
            if due > now {
                break;
            }
            heap.pop();
            if deliver.send(jobs.remove(&id).expect("queued")).is_err() {
                return;
            }
        }
        let wait = heap.peek().map_or(Duration::from_secs(3600), |Reverse((due, _))| due.saturating_duration_since(now));
        match incoming.recv_timeout(wait) {
            Ok((due, job)) => {
                next_id += 1;
                jobs.insert(next_id, job);
                heap.push(Reverse((due, next_id)));
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Records a line on a card's statement (durably: the bank's own books).
fn record_card_line(inner: &Inner, card_no: &str, amount: &str, remark: String) {
    let line = CardTransaction { amount: amount.to_string(), remark, time: crate::orders::format_time(micros_now()) };
    let sequence = inner.sequence.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let key = format!("{CARD_PREFIX}{card_no}/{:020}-{sequence:06}", micros_now()).into_bytes();
    if let Err(error) = crate::records::put(inner.store.as_ref(), &[(key, &line)]) {
        eprintln!("simulator: cannot record a card line: {error}");
    }
    inner.cards.lock().expect("cards lock").entry(card_no.to_string()).or_default().push(line);
}

const STATEMENT_PREFIX: &str = "s/stmt/";

/// Records the bank's verdict on an order in its statement of the business day (once per order
/// and channel: a resent order keeps its line).
fn record_statement_line(inner: &Inner, channel: u16, order: OrderId, direction: &str, amount: &str, failed: bool) {
    let seconds = (micros_now() / 1_000_000) as i64 + inner.config.utc_offset_seconds as i64;
    let day = seconds.div_euclid(86_400);
    let key = format!("{STATEMENT_PREFIX}{channel:05}/{day:08}/{:020}", order.0).into_bytes();
    if matches!(inner.store.get(&key), Ok(Some(_))) {
        return;
    }
    // The bank's tariff: the channel's fee model on the amount; nothing for a failed order.
    let fee = inner.channels.get().and_then(|c| c.get(channel)).and_then(|c| {
        let spec = engine::money::CurrencySpec::new(&c.currency, c.exponent)?;
        let minor = spec.parse(amount)?;
        Some(spec.format(if failed { 0 } else { c.fee(minor) }))
    });
    let line = crate::reconcile::Line {
        bank_ref: format!("SIM{channel:03}{day:06}{:012}", order.0),
        order_id: public_order_id(order),
        direction: direction.into(),
        amount: amount.into(),
        status: if failed { "failed".into() } else { "succeeded".into() },
        fee,
    };
    if let Err(error) = crate::records::put(inner.store.as_ref(), &[(key, &line)]) {
        eprintln!("simulator: cannot record a statement line: {error}");
    }
    // The reserve account at the bank: money in less the channel's fee, money out and its fee.
    let Some(c) = inner.channels.get().and_then(|c| c.get(channel)) else { return };
    let (Some(spec), false) = (engine::money::CurrencySpec::new(&c.currency, c.exponent), failed) else { return };
    let (Some(minor), Some(fee)) = (spec.parse(amount), line.fee.as_deref().and_then(|f| spec.parse(f))) else { return };
    let moved = if direction == "in" { minor - fee } else { -minor - fee };
    record_reserve_line(inner, &c.currency, &format!("st/{channel:05}/{:020}", order.0), spec.format(moved), format!("{direction} {}", line.order_id));
}

/// One movement on the reserve (master) account at the bank, as its account statement shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReserveLine {
    /// Signed decimal: credits to the reserve positive.
    pub amount: String,
    pub what: String,
}

const RESERVE_PREFIX: &str = "s/resv/";

/// Records a movement on the reserve account at the bank (once per `key`).
fn record_reserve_line(inner: &Inner, currency: &str, key: &str, amount: String, what: String) {
    let key = format!("{RESERVE_PREFIX}{currency}/{key}").into_bytes();
    if let Err(error) = crate::records::put(inner.store.as_ref(), &[(key, &ReserveLine { amount, what })]) {
        eprintln!("simulator: cannot record a reserve line: {error}");
    }
}

impl Simulator {
    /// The bank learned of a transfer into the reserve account from outside (an offline transfer
    /// naming a virtual account number; the operator hands us the bank's line).
    pub fn note_transfer_in(&self, currency: &str, bank_ref: &str, amount: &str) {
        record_reserve_line(&self.inner, currency, &format!("in/{bank_ref}"), amount.to_string(), format!("transfer {bank_ref}"));
    }

    /// The balance of the reserve account at the bank in `spec`'s currency, and how many
    /// movements make it (what the bank's account statement would show).
    pub fn reserve_balance(&self, spec: &engine::money::CurrencySpec) -> Result<(Minor, usize), String> {
        let prefix = format!("{RESERVE_PREFIX}{}/", spec.code_str());
        let lines = crate::records::load_all::<ReserveLine>(self.inner.store.as_ref(), prefix.as_bytes())?;
        let mut balance: Minor = 0;
        for (_, line) in &lines {
            balance += spec.parse(&line.amount).ok_or_else(|| format!("a reserve line's amount {:?}", line.amount))?;
        }
        Ok((balance, lines.len()))
    }

    /// A channel's statement of a business day as CSV
    /// (`bank_ref,order_id,direction,amount,status,fee`).
    pub fn statement_csv(&self, channel: u16, day: u32) -> Result<String, String> {
        let prefix = format!("{STATEMENT_PREFIX}{channel:05}/{day:08}/");
        let mut csv = String::from("bank_ref,order_id,direction,amount,status,fee\n");
        for (_, line) in crate::records::load_all::<crate::reconcile::Line>(self.inner.store.as_ref(), prefix.as_bytes())? {
            let fee = line.fee.as_deref().unwrap_or("");
            csv.push_str(&format!("{},{},{},{},{},{fee}\n", line.bank_ref, line.order_id, line.direction, line.amount, line.status));
        }
        Ok(csv)
    }
}

fn micros_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Decides a due job and sends its callback; a failed delivery is queued again with backoff.
fn deliver_one(inner: &Inner, mut job: Job) {
    let failed = fails(job.failure_per_mille, &job.work);
    let (kind, order, channel) = match &job.work {
        Work::MicroDeposit { card_no, currency } => {
            record_card_line(inner, card_no, &job.amount, DEPOSIT_REMARK.to_string());
            let sequence = inner.sequence.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let key = format!("md/{card_no}/{:020}-{sequence:06}", micros_now());
            record_reserve_line(inner, currency, &key, format!("-{}", job.amount), format!("verification deposit to {card_no}"));
            return;
        }
        Work::Recharge { order, channel } => {
            record_statement_line(inner, *channel, *order, "in", &job.amount, failed);
            ("recharge", *order, None)
        }
        Work::Collection { order, channel, card_no } => {
            if job.attempt == 0 && !failed {
                record_card_line(inner, card_no, &format!("-{}", job.amount), format!("collection {}", public_order_id(*order)));
            }
            record_statement_line(inner, *channel, *order, "in", &job.amount, failed);
            ("recharge", *order, None)
        }
        Work::Withdrawal { order, card_no, channel } => {
            if job.attempt == 0 && !failed && !card_no.is_empty() {
                record_card_line(inner, card_no, &job.amount, format!("withdrawal {}", public_order_id(*order)));
            }
            record_statement_line(inner, *channel, *order, "out", &job.amount, failed);
            if let Some(verdict) = inner.received.lock().expect("received lock").get_mut(&(order.0, *channel)) {
                *verdict = Some(!failed);
            }
            ("withdrawal", *order, Some(crate::channels::name(*channel)))
        }
    };
    let Some(url) = inner.callback_url.get() else {
        return requeue(inner, job);
    };
    let status = if failed { "failed" } else { "succeeded" };
    let verdict = Callback { kind: kind.to_string(), order_id: public_order_id(order), status: status.to_string(), amount: job.amount.clone(), channel };
    let body = serde_json::to_vec(&verdict).expect("callbacks serialize");
    let signature = signature_header(&inner.key, unix_seconds(), &body);
    let sent =
        ureq::post(url).timeout(Duration::from_secs(10)).set("Content-Type", "application/json").set("X-Channel-Signature", &signature).send_bytes(&body);
    match sent {
        Ok(_) => {}
        // The order is unknown to the server: nothing to retry.
        Err(ureq::Error::Status(404, _)) => {}
        Err(error) => {
            job.attempt += 1;
            if job.attempt >= inner.config.callback_attempts_max {
                eprintln!("simulator: giving up on the {kind} callback of {} until the next restart: {error}", public_order_id(order));
                return;
            }
            requeue(inner, job);
        }
    }
}

fn requeue(inner: &Inner, job: Job) {
    let backoff = Duration::from_millis(100u64 << job.attempt.min(10)).min(BACKOFF_MAX);
    let _ = inner.queue.send((Instant::now() + backoff, job));
}

/// `POST /channels/simulator/callback`: the bank's verdict on an order, signed with the channel key.
#[utoipa::path(post, path = "/channels/simulator/callback", tag = "simulator", request_body = crate::simulator::Callback, responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::openapi::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::openapi::ErrorBody)), security(("channel_signature" = [])))]
#[post("/channels/simulator/callback")]
pub async fn receive_callback(
    request: HttpRequest,
    body: web::Bytes,
    simulator: web::Data<Simulator>,
    engine: web::Data<Arc<Engine>>,
    channels: web::Data<Arc<crate::channels::Channels>>,
    cards: web::Data<Arc<crate::cards::Cards>>,
) -> Result<HttpResponse, ApiError> {
    let header = request.headers().get("X-Channel-Signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
    verify_signature(simulator.key(), header, &body, unix_seconds())?;
    let callback: Callback = crate::v1::parse_json(&body)?;
    let order = parse_order_id(&callback.order_id).ok_or_else(ApiError::not_found)?;
    let succeeded = match callback.status.as_str() {
        "succeeded" => true,
        "failed" => false,
        _ => return Err(ApiError::invalid("status is succeeded or failed", "status")),
    };
    match callback.kind.as_str() {
        "withdrawal" => {
            Ok(HttpResponse::Ok().json(payout_verdict(&engine, &channels, &cards, &simulator, order, succeeded, callback.channel.as_deref(), "failed").await?))
        }
        "recharge" => {
            // The system acts (platform 0): verdicts are idempotent by order, so no order number.
            let command = Command::CompleteRecharge { order, succeeded };
            let reply = crate::accounts::execute(&engine, Envelope { platform: 0, out_order_no: None, command }).await?;
            match reply.code {
                ResultCode::Ok => Ok(HttpResponse::Ok().json(serde_json::json!({"received": true, "status": reply.status.map(|s| s.name())}))),
                code => Err(crate::orders::rejection(code)),
            }
        }
        _ => Err(ApiError::invalid("kind is recharge or withdrawal", "kind")),
    }
}

/// A channel's verdict on payout `order` (from its callback, or from a status query after a
/// timeout): a verdict of a channel the order has left is stale; a failure falls back to the
/// next channel if one can pay it now; otherwise the verdict completes the order. Health learns
/// from verdicts on orders that were waiting for them.
#[allow(clippy::too_many_arguments)]
pub async fn payout_verdict(
    engine: &Arc<Engine>,
    channels: &crate::channels::Channels,
    cards: &Arc<crate::cards::Cards>,
    simulator: &Simulator,
    order: OrderId,
    succeeded: bool,
    channel_name: Option<&str>,
    why: &'static str,
) -> Result<serde_json::Value, ApiError> {
    let current = crate::orders::read_order(engine, 0, order, |_, o| match o.detail {
        engine::ledger::types::OrderDetail::Withdrawal { channel, .. } => Some((channel, o.status, o.amount, o.created_at)),
        _ => None,
    })
    .await?
    .flatten();
    let Some((channel, status, amount, created_at)) = current else { return Err(ApiError::not_found()) };
    if channel_name.is_some_and(|name| name != crate::channels::name(channel)) {
        // A verdict of a channel this order has left after a fallback.
        return Ok(serde_json::json!({"received": true, "stale": true}));
    }
    let waiting = status == engine::ledger::types::OrderStatus::Processing;
    if !waiting {
        simulator.answered(order);
    }
    if !succeeded && waiting {
        channels.record_outcome(channel, false);
        channels.release(channel, amount, created_at);
        if let Some(next) = crate::withdrawals::fall_back(engine, channels, cards, simulator, order, why).await? {
            return Ok(serde_json::json!({"received": true, "status": "processing", "rerouted_to": next}));
        }
    }
    // The system acts (platform 0): verdicts are idempotent by order, so no order number.
    let command = Command::CompleteWithdrawal { order, succeeded };
    let reply = crate::accounts::execute(engine, Envelope { platform: 0, out_order_no: None, command }).await?;
    if reply.is_ok() {
        simulator.answered(order);
        if waiting && succeeded {
            // Failures were counted above, before the fallback.
            channels.record_outcome(channel, true);
        }
    }
    match reply.code {
        ResultCode::Ok => Ok(serde_json::json!({"received": true, "status": reply.status.map(|s| s.name())})),
        code => Err(crate::orders::rejection(code)),
    }
}

/// Watches payouts whose channel has not answered within its `timeout_ms` and asks the bank
/// about each (a status query): one the bank never received goes to the next channel (or fails,
/// funds back) as after a failure; one it decided gets that verdict (the callback was lost); one
/// still processing is looked at again a timeout later. Never resends what the bank has.
pub fn start_watchdog(
    engine: Arc<Engine>,
    channels: Arc<crate::channels::Channels>,
    cards: Arc<crate::cards::Cards>,
    simulator: Simulator,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("payout-watchdog".into()).spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            loop {
                actix_web::rt::time::sleep(WATCHDOG_INTERVAL).await;
                let timeout_of = |channel: u16| channels.get(channel).map_or(Duration::from_secs(600), |c| Duration::from_millis(c.timeout_ms));
                for (order, channel) in simulator.overdue(Instant::now(), timeout_of) {
                    let outcome = match simulator.query(order, channel) {
                        BankStatus::Processing => continue,
                        BankStatus::Unknown => {
                            payout_verdict(&engine, &channels, &cards, &simulator, order, false, Some(&crate::channels::name(channel)), "timeout").await
                        }
                        BankStatus::Decided { succeeded } => {
                            payout_verdict(&engine, &channels, &cards, &simulator, order, succeeded, Some(&crate::channels::name(channel)), "failed").await
                        }
                    };
                    if let Err(error) = outcome {
                        eprintln!("payout watchdog: {}: {}", public_order_id(order), error.message);
                    }
                }
            }
        })
    })?;
    Ok(())
}

/// How often the watchdog looks for overdue payouts.
const WATCHDOG_INTERVAL: Duration = Duration::from_millis(200);

/// `GET /sim/cards/{card_no}/transactions`: what the card's holder sees at their bank.
#[utoipa::path(get, path = "/sim/cards/{card_no}/transactions", tag = "simulator", params(("card_no" = String, Path, description = "Card number")), responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::openapi::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::openapi::ErrorBody)))]
#[get("/sim/cards/{card_no}/transactions")]
pub async fn card_transactions(path: web::Path<String>, simulator: web::Data<Simulator>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"transactions": simulator.card_transactions(&path)}))
}

/// `GET /sim/channels/{channel}/statements/{date}`: the simulated bank's statement file of a
/// channel and business date (CSV), as reconciliation reads it.
#[utoipa::path(get, path = "/sim/channels/{channel}/statements/{date}", tag = "simulator", params(("channel" = String, Path, description = "Channel name"), ("date" = String, Path, description = "YYYY-MM-DD")), responses((status = 200, description = "CSV", body = String), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::openapi::ErrorBody)))]
#[get("/sim/channels/{channel}/statements/{date}")]
pub async fn statement_file(
    path: web::Path<(String, String)>,
    simulator: web::Data<Simulator>,
    channels: web::Data<Arc<crate::channels::Channels>>,
) -> Result<HttpResponse, ApiError> {
    let (name, date) = path.into_inner();
    let channel = channels.all().iter().find(|c| c.name == name).map(|c| c.id).ok_or_else(ApiError::not_found)?;
    let day = crate::settlements::day_number(&date).ok_or_else(|| ApiError::invalid("date is YYYY-MM-DD", "date"))?;
    let simulator = simulator.get_ref().clone();
    let csv = crate::error::blocking(move || simulator.statement_csv(channel, day)).await?.map_err(ApiError::unavailable)?;
    Ok(HttpResponse::Ok().content_type("text/csv").body(csv))
}

/// Registers the simulator's routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(receive_callback).service(card_transactions).service(statement_file);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_signatures_table() {
        let key = "channel-key";
        let body = b"{\"a\":1}";
        let good = signature_header(key, 1_000, body);
        let cases: &[(&str, &[u8], i64, Option<&str>)] = &[
            (&good, body, 1_000, None),
            (&good, body, 1_300, None),
            (&good, body, 1_301, Some("timestamp_out_of_window")),
            (&good, b"{\"a\":2}", 1_000, Some("unauthenticated")),
            ("t=1000", body, 1_000, Some("unauthenticated")),
            ("", body, 1_000, Some("unauthenticated")),
        ];
        for (header, body, now, expected) in cases {
            assert_eq!(verify_signature(key, header, body, *now).err().map(|e| e.code), *expected, "{header} at {now}");
        }
        assert!(verify_signature("other-key", &good, body, 1_000).is_err());
    }

    #[test]
    fn failure_share_is_fixed_per_order() {
        let failed = (0..10_000u64).filter(|i| fails(300, &Work::Recharge { order: OrderId(*i), channel: 1 })).count();
        assert!((2_500..3_500).contains(&failed), "{failed} of 10000 failed at 30 %");
        assert_eq!(fails(300, &Work::Recharge { order: OrderId(7), channel: 1 }), fails(300, &Work::Recharge { order: OrderId(7), channel: 1 }));
    }
}
