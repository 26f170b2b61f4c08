//! The bank simulator (DESIGN.md, channels): an in-process stand-in for the banks behind the
//! simulator channels, and one implementation of `bank::BankChannel`. It takes money in, payouts
//! and micro-deposits, answers each after the channel's latency with a callback signed with the
//! channel key (over HTTP, to the server's own callback endpoint, exactly as a bank would),
//! fails a configurable share of orders, loses a share of payouts (never received, no verdict),
//! answers status queries, keeps what a card holder sees of their card, each channel's daily
//! statement file with its tariff's fee, and the reserve (master) account at the bank.
//!
//! Its queue is memory only, like a bank's systems are outside ours: after a restart clearing
//! hands it every order still waiting for a verdict again, and verdicts are idempotent.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bank::{BankChannel, BankError, BankStatus, ChannelProfile, Request, StatementLine};
use crossbeam_channel::{unbounded, Receiver, Sender};
use engine::ledger::types::OrderId;
use engine::money::{CurrencySpec, Minor};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use storage::Store;

/// How the simulated bank behaves (config `[simulator]`).
#[derive(Clone, Copy, Debug)]
pub struct SimulatorConfig {
    /// Whether the server runs the simulator (without it, orders wait for a real channel).
    pub enabled: bool,
    /// Milliseconds before the bank answers money in (payouts: each channel's own latency).
    pub latency_ms: u64,
    /// Money-in orders in a thousand the bank fails (fixed per order: a resent order agrees).
    pub failure_per_mille: u16,
    /// Delivery attempts of one callback before the simulator gives up until the next restart.
    pub callback_attempts_max: u32,
    /// The business day's offset from UTC (statement files are per business day).
    pub utc_offset_seconds: i32,
    /// Whether the server shows the simulator's pages (card statements, statement files) to the
    /// operator; production configurations turn them off.
    pub pages: bool,
}

impl Default for SimulatorConfig {
    fn default() -> SimulatorConfig {
        SimulatorConfig { enabled: true, latency_ms: 200, failure_per_mille: 0, callback_attempts_max: 10, utc_offset_seconds: 8 * 3600, pages: true }
    }
}

/// Seconds a callback's timestamp may be off (the same window as platform requests).
pub const CALLBACK_WINDOW_SECONDS: i64 = 300;
/// Threads that deliver callbacks (each delivery waits for a durable write on our side).
const DELIVERY_THREADS: usize = 4;
/// Longest wait between two delivery attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
struct Job {
    request: Request,
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
    /// What the payer named the line by: a micro-deposit's bind (`card-{id}`). Absent on
    /// other lines and on deposits recorded before it was kept (session 55).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// The callback the simulated bank sends when it has decided an order.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Callback {
    /// `recharge` (money in) or `withdrawal` (money out).
    pub kind: String,
    pub order_id: String,
    /// `succeeded` or `failed`.
    pub status: String,
    pub amount: String,
    /// The channel the verdict is about (payouts): a verdict of a channel the order has left
    /// since (after a fallback) is stale and ignored.
    #[serde(default)]
    pub channel: Option<String>,
}

struct Inner {
    config: SimulatorConfig,
    key: String,
    store: Arc<dyn Store>,
    queue: Sender<(Instant, Job)>,
    callback_url: OnceLock<String>,
    sequence: std::sync::atomic::AtomicU64,
    /// The channels as clearing has them: names, tariffs (the fee on statement lines) and
    /// behaviour.
    channels: Mutex<HashMap<u16, ChannelProfile>>,
    /// Payouts the bank received, with its verdict once decided (what a status query answers).
    /// A payout the bank never received (`drop_per_mille`) is not here. Money in (recharges,
    /// collections) is here while it waits for its decision only (session 60): once decided the
    /// kept verdict answers (`decided_before`), so nothing piles up.
    received: Mutex<HashMap<(u64, u16), Option<bool>>>,
    /// Held from a decision's check ("decided before?") to its write, striped by order: two
    /// jobs of one order (an order resent while its first job waits) decide it once.
    deciding: [Mutex<()>; DECIDING_STRIPES],
    /// Each currency's reserve balance at the bank and how many lines make it: summed from the
    /// lines at the first ask after a start, then kept as lines are recorded (every ask read
    /// every line ever recorded). Its lock also orders each line's check-and-write.
    reserve: Mutex<HashMap<String, (i128, usize)>>,
}

/// The running simulator; cheap to clone.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

const CARD_PREFIX: &str = "s/card/";
const STATEMENT_PREFIX: &str = "s/stmt/";
const RESERVE_PREFIX: &str = "s/resv/";
/// The bank's verdict on each order it decided, by channel and order (`true`: succeeded):
/// an order sent again (after a restart of the server or of the bank) is answered with it, and
/// moves no money again (before session 58 a payout resent after its verdict credited the
/// card a second time; a statement line recorded on a later day than the first, a second time).
const DECIDED_PREFIX: &str = "s/decided/";

fn decided_key(channel: u16, order: OrderId) -> Vec<u8> {
    format!("{DECIDED_PREFIX}{channel:05}/{:020}", order.0).into_bytes()
}

/// The verdict the bank gave `order` on `channel` before, if it decided it; an error when its
/// books cannot be read (never "not decided": before session 59 a read error answered a status
/// query "never received", and the order was sent elsewhere though this bank had paid it).
fn decided_before(inner: &Inner, channel: u16, order: OrderId) -> Result<Option<bool>, String> {
    match inner.store.get(&decided_key(channel, order)) {
        Ok(Some(bytes)) => serde_json::from_slice(&bytes).map(Some).map_err(|e| format!("a kept verdict does not parse: {e}")),
        Ok(None) => Ok(None),
        Err(error) => Err(format!("cannot read a verdict: {error}")),
    }
}

/// The signature header of a callback: `t=<unix seconds>,v1=<hex HMAC-SHA256(key, "t.body")>`.
pub fn signature_header(key: &str, timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", hex::encode(mac(key, timestamp, body).finalize().into_bytes()))
}

fn mac(key: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Why a callback's signature was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing or bad X-Channel-Signature")]
    Bad,
    #[error("the callback's timestamp is too far off")]
    OutOfWindow,
}

/// Checks a callback's signature header against its body and the clock (`now`, unix seconds):
/// the MAC's own constant-time `verify_slice`; timestamps far off are refused, never overflow.
pub fn verify_signature(key: &str, header: &str, body: &[u8], now: i64) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signature = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => signature = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (timestamp, signature) = (timestamp.ok_or(SignatureError::Bad)?, signature.ok_or(SignatureError::Bad)?);
    if now.checked_sub(timestamp).is_none_or(|off| off.checked_abs().is_none_or(|off| off > CALLBACK_WINDOW_SECONDS)) {
        return Err(SignatureError::OutOfWindow);
    }
    mac(key, timestamp, body).verify_slice(&signature).map_err(|_| SignatureError::Bad)
}

fn unix_seconds() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn micros_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// RFC 3339 of `micros` since the epoch.
fn format_time(micros: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(micros as i128 * 1_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

impl Simulator {
    /// Starts the simulator's threads; callbacks go out once `set_callback_url` is called.
    pub fn start(config: SimulatorConfig, key: String, store: Arc<dyn Store>) -> Result<Simulator, String> {
        let (queue, incoming) = unbounded();
        let inner = Arc::new(Inner {
            config,
            key,
            store,
            queue,
            callback_url: OnceLock::new(),
            sequence: std::sync::atomic::AtomicU64::new(0),
            channels: Mutex::new(HashMap::new()),
            received: Mutex::new(HashMap::new()),
            deciding: std::array::from_fn(|_| Mutex::new(())),
            reserve: Mutex::new(HashMap::new()),
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

    /// Where callbacks are sent (the server's own `/channels/simulator/callback`).
    pub fn set_callback_url(&self, url: String) {
        let _ = self.inner.callback_url.set(url);
    }

    /// Whether the simulator's pages are served (config `[simulator] pages`).
    pub fn pages(&self) -> bool {
        self.inner.config.pages
    }

    /// The key callbacks are signed with.
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// A card's statement, oldest first: read from the bank's books (`s/card/{card_no}/`, by
    /// time), none of it held in memory (a card line per payout and collection outgrows it).
    pub fn card_transactions(&self, card_no: &str) -> Result<Vec<CardTransaction>, String> {
        let prefix = format!("{CARD_PREFIX}{card_no}/");
        Ok(storage::records::load_all::<CardTransaction>(self.inner.store.as_ref(), prefix.as_bytes())?.into_iter().map(|(_, line)| line).collect())
    }

    fn profile(&self, channel: u16) -> Option<ChannelProfile> {
        self.inner.channels.lock().expect("channels lock").get(&channel).cloned()
    }

    /// (latency_ms, failure_per_mille, drop_per_mille) for `request`: payouts by their channel,
    /// money in by the `[simulator]` defaults.
    fn behaviour_of(&self, request: &Request) -> (u64, u16, u16) {
        let default = (self.inner.config.latency_ms, self.inner.config.failure_per_mille, 0);
        match request {
            Request::MoneyOut { channel, .. } => {
                self.profile(*channel).map_or(default, |c| (c.behaviour.latency_ms, c.behaviour.failure_per_mille, c.behaviour.drop_per_mille))
            }
            _ => default,
        }
    }
}

impl BankChannel for Simulator {
    fn channels_changed(&self, profiles: &[ChannelProfile]) {
        *self.inner.channels.lock().expect("channels lock") = profiles.iter().map(|p| (p.id, p.clone())).collect();
    }

    fn submit(&self, request: Request) {
        if !self.inner.config.enabled {
            return;
        }
        let (latency_ms, failure_per_mille, drop_per_mille) = self.behaviour_of(&request);
        if let Request::MoneyOut { order, channel, .. } = &request {
            if dropped(drop_per_mille, *order, *channel) {
                // Lost on the way: the bank never hears of it, no verdict will come.
                return;
            }
            self.inner.received.lock().expect("received lock").entry((order.0, *channel)).or_insert(None);
        }
        if let Request::MoneyIn { order, channel, .. } | Request::Collection { order, channel, .. } = &request {
            self.inner.received.lock().expect("received lock").entry((order.0, *channel)).or_insert(None);
        }
        let due = Instant::now() + Duration::from_millis(latency_ms);
        let _ = self.inner.queue.send((due, Job { request, attempt: 0, failure_per_mille }));
    }

    fn query(&self, order: OrderId, channel: u16) -> BankStatus {
        if !self.inner.config.enabled {
            // Off, the simulator submits nothing and knows nothing: the order is out at a real
            // channel, which may still pay it. `Unknown` ("never received") made the watchdog
            // fail and refund every payout at its timeout, while the bank could pay it later.
            return BankStatus::Processing;
        }
        let received = self.inner.received.lock().expect("received lock").get(&(order.0, channel)).copied();
        match received {
            // Not received by this run of the bank: decided by an earlier one, or unknown.
            None => match decided_before(&self.inner, channel, order) {
                Ok(Some(succeeded)) => BankStatus::Decided { succeeded },
                Ok(None) => BankStatus::Unknown,
                Err(error) => {
                    // Not known: "processing" keeps it where it is (asked again later).
                    tracing::warn!("simulator: {error}");
                    BankStatus::Processing
                }
            },
            Some(None) => BankStatus::Processing,
            Some(Some(succeeded)) => BankStatus::Decided { succeeded },
        }
    }

    fn forget(&self, order: OrderId, channel: u16) {
        self.inner.received.lock().expect("received lock").remove(&(order.0, channel));
    }

    fn statement(&self, channel: u16, day: u32) -> Result<Vec<StatementLine>, BankError> {
        let prefix = format!("{STATEMENT_PREFIX}{channel:05}/{day:08}/");
        let lines = storage::records::load_all::<StatementLine>(self.inner.store.as_ref(), prefix.as_bytes()).map_err(BankError::Records)?;
        Ok(lines.into_iter().map(|(_, line)| line).collect())
    }

    fn reserve_balance(&self, currency: &CurrencySpec) -> Result<(i128, usize), BankError> {
        let mut totals = self.inner.reserve.lock().expect("reserve lock");
        if let Some(total) = totals.get(currency.code_str()) {
            return Ok(*total);
        }
        let prefix = format!("{RESERVE_PREFIX}{}/", currency.code_str());
        // Each line is within an order's bounds; their sum is not within `i64` (a platform's
        // largest recharges passed it): summed in `i128`, which no count of lines can overflow.
        // Summed line by line as the store is read (the whole history was read into memory
        // first; helper 107).
        let (mut balance, mut lines): (i128, usize) = (0, 0);
        storage::records::for_each::<ReserveLine>(self.inner.store.as_ref(), prefix.as_bytes(), |_, line| {
            let amount = currency.parse(&line.amount).ok_or_else(|| format!("a reserve line's amount {:?}", line.amount))?;
            balance += i128::from(amount);
            lines += 1;
            Ok(())
        })
        .map_err(BankError::Records)?;
        totals.insert(currency.code_str().to_string(), (balance, lines));
        Ok((balance, lines))
    }

    fn transfer_in(&self, currency: &CurrencySpec, bank_ref: &str, amount: Minor) {
        let reserve = ReserveMove { currency, key: format!("in/{bank_ref}"), amount, what: format!("transfer {bank_ref}") };
        if let Err(error) = record_with_reserve(&self.inner, Vec::new(), Some(reserve)) {
            tracing::warn!("simulator: cannot record a transfer in: {error}");
        }
    }
}

/// Whether a payout is lost on its way to the bank: fixed per order and channel (a resent
/// order is lost again), independent of the failure verdict.
fn dropped(drop_per_mille: u16, order: OrderId, channel: u16) -> bool {
    let seed = order.0 ^ ((channel as u64) << 48) ^ 0x5eed_d0d0;
    drop_per_mille > 0 && (xxhash_rust::xxh3::xxh3_64(&seed.to_le_bytes()) % 1000) < drop_per_mille as u64
}

/// A money-in order's decision is kept (`record_decision`): status queries read it from the
/// books from now on, and the order leaves `received` (which holds only what waits).
fn forget_decided<T, E>(inner: &Inner, recorded: &Result<T, E>, order: OrderId, channel: u16) {
    if recorded.is_ok() {
        inner.received.lock().expect("received lock").remove(&(order.0, channel));
    }
}

/// Whether the bank fails this order: a fixed verdict per order, so resent orders agree.
fn fails(failure_per_mille: u16, request: &Request) -> bool {
    let seed = match request {
        Request::MoneyIn { order, .. } | Request::Collection { order, .. } => order.0,
        // Each channel decides on its own: a fallback channel may pay what the first failed.
        Request::MoneyOut { order, channel, .. } => order.0 ^ ((*channel as u64) << 48),
        Request::MicroDeposit { .. } => return false,
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

/// A line on a card's statement (the bank's own books), as a write to make: its key and bytes.
fn card_line(inner: &Inner, card_no: &str, amount: &str, remark: String, reference: Option<String>) -> (Vec<u8>, Vec<u8>) {
    let line = CardTransaction { amount: amount.to_string(), remark, time: format_time(micros_now()), reference };
    let sequence = inner.sequence.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let key = format!("{CARD_PREFIX}{card_no}/{:020}-{sequence:06}", micros_now()).into_bytes();
    (key, serde_json::to_vec(&line).expect("card lines serialize"))
}

/// A card's side of a decided order: the card, its amount (signed, as the card sees it), the
/// line's remark.
struct CardSide<'a> {
    card_no: &'a str,
    amount: Minor,
    remark: String,
}

/// Records the bank's verdict on an order: its line in the statement of the business day, the
/// verdict kept, the card's line and the movement on the reserve account, all in one write (a
/// stop between them, before session 59, left a card credited with no verdict kept, so the
/// order resent at the next start credited it again; or a verdict kept with no reserve line,
/// which no resend wrote). Once per order and channel: an order decided before records nothing.
/// Answers whether the order failed, as the books have it (a job's own draw may differ from
/// an earlier job's of the same order: the callback says what the books say).
#[allow(clippy::too_many_arguments)]
fn record_decision(
    inner: &Inner,
    channel: u16,
    order: OrderId,
    direction: &str,
    amount: Minor,
    currency: &CurrencySpec,
    failed: bool,
    card: Option<CardSide>,
) -> Result<bool, String> {
    let seconds = (micros_now() / 1_000_000) as i64 + inner.config.utc_offset_seconds as i64;
    let day = seconds.div_euclid(86_400);
    let key = format!("{STATEMENT_PREFIX}{channel:05}/{day:08}/{:020}", order.0).into_bytes();
    let _deciding = inner.deciding[(order.0 % DECIDING_STRIPES as u64) as usize].lock().expect("deciding lock");
    let lined = inner.store.get(&key).map_err(|e| format!("cannot read a statement line: {e}"))?.is_some();
    // Decided before: the verdict in the books (a statement line of before session 58, with no
    // verdict kept, keeps this job's).
    match decided_before(inner, channel, order)? {
        Some(succeeded) => return Ok(!succeeded),
        None if lined => return Ok(failed),
        None => {}
    }
    // The bank's tariff: the channel's fee model on the amount; nothing for a failed order.
    let tariff = inner.channels.lock().expect("channels lock").get(&channel).map(|c| c.tariff);
    let fee = tariff.map(|t| if failed { 0 } else { t.fee(amount) });
    let line = StatementLine {
        bank_ref: format!("SIM{channel:03}{day:06}{:012}", order.0),
        order_id: bank::order_ref(order),
        direction: direction.into(),
        amount: currency.format(amount),
        status: if failed { "failed".into() } else { "succeeded".into() },
        fee: fee.map(|f| currency.format(f)),
    };
    let mut writes = vec![
        (key, serde_json::to_vec(&line).expect("statement lines serialize")),
        (decided_key(channel, order), serde_json::to_vec(&!failed).expect("a verdict serializes")),
    ];
    if let Some(card) = card.filter(|_| !failed) {
        writes.push(card_line(inner, card.card_no, &currency.format(card.amount), card.remark, None));
    }
    // The reserve account at the bank: money in less the channel's fee, money out and its fee.
    let reserve = fee.filter(|_| !failed).map(|fee| ReserveMove {
        currency,
        key: format!("st/{channel:05}/{:020}", order.0),
        amount: if direction == "in" { amount - fee } else { -amount - fee },
        what: format!("{direction} {}", line.order_id),
    });
    record_with_reserve(inner, writes, reserve).map(|()| failed)
}

/// One movement on the reserve (master) account at the bank, as its account statement shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReserveLine {
    /// Signed decimal: credits to the reserve positive.
    pub amount: String,
    pub what: String,
}

/// A movement on the reserve account to record: its currency, key (within the currency), signed
/// amount and what it was.
struct ReserveMove<'a> {
    currency: &'a CurrencySpec,
    key: String,
    amount: Minor,
    what: String,
}

/// Writes `writes` and the reserve movement (if any) in one write. A reserve line is recorded
/// once per key: one recorded again (an order of before session 59 resent) changes no balance
/// beyond a changed amount.
fn record_with_reserve(inner: &Inner, mut writes: Vec<(Vec<u8>, Vec<u8>)>, reserve: Option<ReserveMove>) -> Result<(), String> {
    let Some(reserve) = reserve else {
        let pairs: Vec<(&[u8], &[u8])> = writes.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
        return inner.store.write(&pairs).map_err(|e| e.to_string());
    };
    let (currency, amount) = (reserve.currency, reserve.amount);
    let code = currency.code_str();
    let key = format!("{RESERVE_PREFIX}{code}/{}", reserve.key).into_bytes();
    let line = ReserveLine { amount: currency.format(amount), what: reserve.what };
    // The lock orders each line's check-and-write, and keeps the total with the lines.
    let mut totals = inner.reserve.lock().expect("reserve lock");
    // What the line held before, if it was recorded already (its amount may differ if the
    // tariff changed in between): the total moves by the difference.
    let before =
        inner.store.get(&key).map(|held| held.map(|bytes| serde_json::from_slice::<ReserveLine>(&bytes).ok().and_then(|line| currency.parse(&line.amount))));
    writes.push((key, serde_json::to_vec(&line).expect("reserve lines serialize")));
    let pairs: Vec<(&[u8], &[u8])> = writes.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
    let written = inner.store.write(&pairs);
    match (before, written) {
        (Ok(before), Ok(())) if before != Some(None) => {
            if let Some(total) = totals.get_mut(code) {
                match before {
                    Some(Some(old)) => total.0 += i128::from(amount) - i128::from(old),
                    _ => {
                        total.0 += i128::from(amount);
                        total.1 += 1;
                    }
                }
            }
            Ok(())
        }
        (_, written) => {
            // Whether the line is there is not known: the next ask sums the lines again.
            totals.remove(code);
            written.map_err(|e| e.to_string())
        }
    }
}

/// Decides a due job and sends its callback; a failed delivery is queued again with backoff.
fn deliver_one(inner: &Inner, mut job: Job) {
    let mut failed = fails(job.failure_per_mille, &job.request);
    // An order decided before keeps its verdict and moves no card again; one whose verdict
    // cannot be read is not decided now (it waits, as a bank whose books are down).
    let before = match &job.request {
        Request::MoneyIn { order, channel, .. } | Request::Collection { order, channel, .. } | Request::MoneyOut { order, channel, .. } => {
            match decided_before(inner, *channel, *order) {
                Ok(before) => before,
                Err(error) => {
                    tracing::warn!("simulator: {error}; the order waits");
                    return requeue_after(inner, job, WRITE_RETRY);
                }
            }
        }
        Request::MicroDeposit { .. } => None,
    };
    if let Some(succeeded) = before {
        failed = !succeeded;
    }
    let (kind, order, channel, amount, recorded) = match &job.request {
        Request::MicroDeposit { card_no, amount, currency, reference } => {
            let line = card_line(inner, card_no, &currency.format(*amount), DEPOSIT_REMARK.to_string(), Some(reference.clone()));
            let sequence = inner.sequence.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let key = format!("md/{card_no}/{:020}-{sequence:06}", micros_now());
            let reserve = ReserveMove { currency, key, amount: -amount, what: format!("verification deposit to {card_no}") };
            if let Err(error) = record_with_reserve(inner, vec![line], Some(reserve)) {
                // Nothing of it was written (one write): paid when the books take it.
                tracing::warn!("simulator: cannot record a verification deposit: {error}");
                return requeue_after(inner, job, WRITE_RETRY);
            }
            return;
        }
        Request::MoneyIn { order, channel, amount, currency } => {
            let recorded = record_decision(inner, *channel, *order, "in", *amount, currency, failed, None);
            forget_decided(inner, &recorded, *order, *channel);
            ("recharge", *order, None, currency.format(*amount), recorded)
        }
        Request::Collection { order, channel, amount, currency, card_no } => {
            let card = CardSide { card_no, amount: -amount, remark: format!("collection {}", bank::order_ref(*order)) };
            let recorded = record_decision(inner, *channel, *order, "in", *amount, currency, failed, Some(card));
            forget_decided(inner, &recorded, *order, *channel);
            ("recharge", *order, None, currency.format(*amount), recorded)
        }
        Request::MoneyOut { order, channel, amount, currency, card_no } => {
            let card = Some(CardSide { card_no, amount: *amount, remark: format!("withdrawal {}", bank::order_ref(*order)) }).filter(|_| !card_no.is_empty());
            let recorded = record_decision(inner, *channel, *order, "out", *amount, currency, failed, card);
            if let Ok(failed) = recorded {
                if let Some(verdict) = inner.received.lock().expect("received lock").get_mut(&(order.0, *channel)) {
                    *verdict = Some(!failed);
                }
            }
            let name = inner.channels.lock().expect("channels lock").get(channel).map_or_else(|| format!("channel_{channel}"), |c| c.name.clone());
            ("withdrawal", *order, Some(name), currency.format(*amount), recorded)
        }
    };
    let failed = match recorded {
        Ok(failed) => failed,
        Err(error) => {
            // Not in the bank's books: no verdict is given until it is (the job waits and is
            // decided again, the same way: verdicts are fixed per order).
            tracing::warn!("simulator: cannot record the verdict on {}: {error}", bank::order_ref(order));
            return requeue_after(inner, job, WRITE_RETRY);
        }
    };
    let Some(url) = inner.callback_url.get() else {
        return requeue(inner, job);
    };
    let status = if failed { "failed" } else { "succeeded" };
    let verdict = Callback { kind: kind.to_string(), order_id: bank::order_ref(order), status: status.to_string(), amount, channel };
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
                tracing::warn!("simulator: giving up on the {kind} callback of {} until the next restart: {error}", bank::order_ref(order));
                return;
            }
            requeue(inner, job);
        }
    }
}

fn requeue(inner: &Inner, job: Job) {
    let backoff = Duration::from_millis(100u64 << job.attempt.min(10)).min(BACKOFF_MAX);
    requeue_after(inner, job, backoff);
}

/// Stripes of the lock a decision holds from its check to its write.
const DECIDING_STRIPES: usize = 16;

/// How long a job whose books could not be read or written waits before it is tried again (its
/// callback's attempts are not counted: none was made).
const WRITE_RETRY: Duration = Duration::from_secs(1);

fn requeue_after(inner: &Inner, job: Job, wait: Duration) {
    let _ = inner.queue.send((Instant::now() + wait, job));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_signatures_table() {
        let body = br#"{"kind":"recharge"}"#;
        let now = 1_700_000_000;
        let good = signature_header("key", now, body);
        let cases: Vec<(String, i64, Result<(), SignatureError>)> = vec![
            (good.clone(), now, Ok(())),
            (good.clone(), now + 300, Ok(())),
            (good.clone(), now + 301, Err(SignatureError::OutOfWindow)),
            (signature_header("other", now, body), now, Err(SignatureError::Bad)),
            ("t=1700000000".into(), now, Err(SignatureError::Bad)),
            ("garbage".into(), now, Err(SignatureError::Bad)),
            ("t=1700000000,v1=zz".into(), now, Err(SignatureError::Bad)),
            // Regression: an extreme timestamp overflowed the subtraction and panicked.
            ("t=-9223372036854775808,v1=00".into(), now, Err(SignatureError::OutOfWindow)),
            ("t=9223372036854775807,v1=00".into(), -5, Err(SignatureError::OutOfWindow)),
        ];
        for (header, at, expected) in cases {
            assert_eq!(verify_signature("key", &header, body, at), expected, "{header}");
        }
    }

    #[test]
    fn failure_share_is_fixed_per_order() {
        let spec = CurrencySpec::new("CNY", 2).expect("valid");
        let request = |order| Request::MoneyIn { order: OrderId(order), channel: 1, amount: 100, currency: spec };
        let failed = (0..1000).filter(|order| fails(300, &request(*order))).count();
        assert!((200..400).contains(&failed), "about 30 % of orders fail: {failed}");
        assert!((0..100).all(|order| fails(300, &request(order)) == fails(300, &request(order))), "a resent order gets the same verdict");
        assert_eq!((0..100).filter(|order| fails(0, &request(*order))).count(), 0);
    }

    /// The reserve balance is summed from the lines once after a start, then kept as lines are
    /// recorded: a line recorded again (an order resent) counts once, and a new start sums the
    /// same from the store.
    /// A payout sent again after its verdict (the server restarted before it took the verdict,
    /// or the bank did) is answered with the same verdict and credits the card no second time;
    /// a restarted bank still knows the verdict.
    #[test]
    fn an_order_sent_again_after_its_verdict_moves_no_money_again() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let config = SimulatorConfig { latency_ms: 1, ..SimulatorConfig::default() };
        let cny = CurrencySpec::new("CNY", 2).unwrap();
        let payout = || Request::MoneyOut { order: OrderId(77), channel: 3, amount: 12_345, currency: cny, card_no: "6222020200112233445".into() };
        let lines = |bank: &Simulator| bank.card_transactions("6222020200112233445").unwrap().len();
        let settle = |bank: &Simulator| {
            for _ in 0..500 {
                if matches!(bank.query(OrderId(77), 3), BankStatus::Decided { .. }) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("no verdict");
        };
        let bank = Simulator::start(config, "key".into(), store.clone()).unwrap();
        bank.submit(payout());
        settle(&bank);
        assert_eq!(lines(&bank), 1);
        let restarted = Simulator::start(config, "key".into(), store.clone()).unwrap();
        assert_eq!(restarted.query(OrderId(77), 3), BankStatus::Decided { succeeded: true }, "kept across a restart");
        restarted.submit(payout());
        settle(&restarted);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(lines(&restarted), 1, "the card is credited once");
        let off = Simulator::start(SimulatorConfig { enabled: false, ..config }, "key".into(), store).unwrap();
        assert_eq!(off.query(OrderId(99), 3), BankStatus::Processing, "off, it knows nothing and says so");
    }

    /// A stop at any write of a decision leaves it whole or not at all: the order sent again
    /// after the restart credits the card once and moves the reserve once (before session 59 the
    /// card line was written before the verdict: a stop at the second write, `writes` 1,
    /// credited the card twice; a decision is one write now, so only `writes` 0 fails one).
    #[test]
    fn a_stop_at_any_write_of_a_decision_moves_the_card_and_the_reserve_once() {
        let cny = CurrencySpec::new("CNY", 2).unwrap();
        let card = "6222020200112233445";
        let profile = ChannelProfile {
            id: 3,
            name: "fast".into(),
            currency: cny,
            tariff: bank::Tariff { fixed: 200, rate_bps: 0, min: 0, max: 10_000 },
            behaviour: bank::Behaviour { latency_ms: 1, failure_per_mille: 0, drop_per_mille: 0 },
        };
        let payout = || Request::MoneyOut { order: OrderId(78), channel: 3, amount: 12_345, currency: cny, card_no: card.into() };
        for writes in 0..3 {
            let store = Arc::new(storage::MemoryStore::new());
            store.fail_after(writes);
            let bank = Simulator::start(SimulatorConfig::default(), "key".into(), store.clone()).unwrap();
            bank.channels_changed(std::slice::from_ref(&profile));
            bank.submit(payout());
            std::thread::sleep(Duration::from_millis(150));
            // The restart: what the store held when its write failed.
            let store: Arc<dyn Store> = Arc::new(store.snapshot());
            let restarted = Simulator::start(SimulatorConfig::default(), "key".into(), store).unwrap();
            restarted.channels_changed(std::slice::from_ref(&profile));
            restarted.submit(payout());
            let decided = (0..500).any(|_| {
                std::thread::sleep(Duration::from_millis(10));
                matches!(restarted.query(OrderId(78), 3), BankStatus::Decided { succeeded: true })
            });
            assert!(decided, "writes {writes}: no verdict");
            std::thread::sleep(Duration::from_millis(50));
            let lines = restarted.card_transactions(card).unwrap();
            assert_eq!(lines.len(), 1, "writes {writes}: the card credited once: {lines:?}");
            assert_eq!(restarted.reserve_balance(&cny).unwrap(), (-12_545, 1), "writes {writes}: the reserve moved once");
        }
    }

    #[test]
    fn the_reserve_balance_is_kept_as_lines_are_recorded_and_each_line_counts_once() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let bank = Simulator::start(SimulatorConfig::default(), "key".into(), store.clone()).unwrap();
        let cny = CurrencySpec::new("CNY", 2).unwrap();
        let usd = CurrencySpec::new("USD", 2).unwrap();
        bank.transfer_in(&cny, "B1", 10_000);
        assert_eq!(bank.reserve_balance(&cny).unwrap(), (10_000, 1), "summed at the first ask");
        bank.transfer_in(&cny, "B2", 2_550);
        bank.transfer_in(&cny, "B2", 2_550);
        bank.transfer_in(&usd, "B3", 700);
        assert_eq!(bank.reserve_balance(&cny).unwrap(), (12_550, 2), "kept; B2 once");
        assert_eq!(bank.reserve_balance(&usd).unwrap(), (700, 1));
        // Recorded again with another amount (an order resent after a tariff change): the line
        // holds the new amount, and the total moves by the difference.
        bank.transfer_in(&cny, "B2", 2_600);
        assert_eq!(bank.reserve_balance(&cny).unwrap(), (12_600, 2));
        bank.transfer_in(&cny, "B4", i64::MAX);
        bank.transfer_in(&cny, "B5", i64::MAX);
        let expected = (12_600 + 2 * i128::from(i64::MAX), 4);
        assert_eq!(bank.reserve_balance(&cny).unwrap(), expected, "past i64");
        let restarted = Simulator::start(SimulatorConfig::default(), "key".into(), store).unwrap();
        assert_eq!(restarted.reserve_balance(&cny).unwrap(), expected, "the same from the lines");
    }
}
