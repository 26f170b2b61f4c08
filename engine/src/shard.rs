//! The shard actor: one thread owns one `ShardState`, drains its mailbox in batches, writes one
//! durable storage batch per round (group commit) and only then replies and sends its outbox.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{never, select, Receiver, Sender, TrySendError};
use storage::Store;

use crate::directory::Directory;
use crate::histogram::{FixedHistogram, BATCH_SIZE_BOUNDS, FSYNC_MICROSECONDS_BOUNDS};
use crate::journal::{batch_key, encode, BatchRecordRef, ChainHead};
use crate::ledger::command::{Command, Envelope};
use crate::ledger::flat::FlatMap;
use crate::ledger::state::{Effects, IdempotencyRecord, ShardState};
use crate::ledger::types::{RemoteCredit, Reply, ShardId, Timestamp};
use crate::result::ResultCode;
use crate::EngineError;

/// Where a client's replies go: called once, after the batch holding its commands is durable.
pub type ReplyTo = Box<dyn FnOnce(Result<Vec<Reply>, EngineError>) + Send>;

/// Commands from a client, applied in order, answered together.
pub struct ClientRequest {
    pub envelopes: Vec<Envelope>,
    pub reply: ReplyTo,
    /// Whether the shard may answer a platform's command of it `Overloaded` instead of applying
    /// it (`Shard::warm_round`): requests from the HTTP edge, whose callers see a 503 and try
    /// again; never a blocking caller's (the clearing actor, settlement, the CLI), which acts on
    /// every outcome as final.
    pub refusable: bool,
}

/// Messages between shards, over a bounded channel (`inbound_capacity` messages). A sender never
/// blocks on it: a full channel leaves credits in the sender's durable outbox and
/// acknowledgements owed, and both are sent again on the sender's next round.
pub enum Inbound {
    Credits(Vec<RemoteCredit>),
    Acknowledged { target: ShardId, sequence: u64 },
}

/// Requests that read a shard or stop it.
pub enum Control {
    /// Runs a read-only closure on the shard's thread, between batches.
    Read(Box<dyn FnOnce(&ShardState) + Send>),
    /// Finishes what is queued, then stops.
    Shutdown,
}

/// Figures a shard publishes for operators, updated after every batch.
pub struct ShardCounters {
    /// Commands applied, by `outcome_cell(kind, result code)`.
    pub outcomes: Box<[AtomicU64]>,
    pub accounts: AtomicU64,
    pub last_sequence: AtomicU64,
    pub outbox_pending: AtomicU64,
    pub batches: AtomicU64,
    pub commands: AtomicU64,
    pub last_batch_size: AtomicU64,
    pub largest_batch_size: AtomicU64,
    pub last_fsync_us: AtomicU64,
    pub largest_fsync_us: AtomicU64,
    pub total_fsync_us: AtomicU64,
    /// Commands per durable batch.
    pub batch_sizes: FixedHistogram,
    /// Microseconds per durable storage write.
    pub fsync_us: FixedHistogram,
    /// The injected timestamp of the last durable batch (microseconds since the epoch).
    pub last_batch_at: AtomicU64,
    pub stopped: AtomicBool,
    /// The shard's last checkpoint failed (cleared by one that succeeds): the engine does not
    /// save the cold-row filter at its stop then, so the next start rebuilds it from the rows.
    pub checkpoint_failed: AtomicBool,
    /// Why the shard stopped (a failed write, or a panic); `None` while it runs.
    pub failure: std::sync::Mutex<Option<ShardFailure>>,
    /// The batch of the newest checkpoint written or loaded (0: none).
    pub checkpoint_sequence: AtomicU64,
    /// When it was written (wall-clock microseconds; 0: loaded at start or none).
    pub checkpoint_at: AtomicU64,
    /// Checkpoints written since start.
    pub checkpoints: AtomicU64,
    /// Bytes of encoded state of the newest checkpoint written.
    pub checkpoint_bytes: AtomicU64,
    /// How long the shard's own thread was held by the last checkpoint (copying its state), and
    /// the longest such hold, in microseconds.
    pub checkpoint_hold_us: AtomicU64,
    pub largest_checkpoint_hold_us: AtomicU64,
    /// Seals that took a hot idempotency map made ahead (`Shard::prepare_hot_map`).
    pub hot_maps_taken: AtomicU64,
    /// Counts the starts and ends of this shard's checkpoints: odd while one is under way. It
    /// goes odd on the shard's thread before the shard copies its state for one (the hold), and
    /// even once the shard has collected it (written, failed or panicked; after the collect
    /// drops the sealed records and cools the history it wrote), or when the shard's loop ends.
    /// It is odd too while the final checkpoint of a graceful stop is written. `clearing bench`
    /// reads it at a batch's send and answer: a batch is during a checkpoint if either reading
    /// is odd or they differ (`checkpoint_in_flight`).
    pub checkpoint_epoch: AtomicU64,
    /// How long the last checkpoint took to encode and write (off the shard's thread).
    pub checkpoint_write_us: AtomicU64,
    /// How long all checkpoints since start took to encode and write.
    pub checkpoint_write_us_total: AtomicU64,
    /// The same time by phase (`checkpoint::PHASE_NAMES`): the cold rows, the blobs of history, the
    /// state's parts, the manifest and pruning.
    pub checkpoint_phase_us_total: [AtomicU64; crate::checkpoint::PHASES],
    /// The CPU time the writing threads used in those phases (the wall time above also waits
    /// for the CPU, which the shards and RocksDB's compactions share, and for I/O).
    pub checkpoint_phase_cpu_us_total: [AtomicU64; crate::checkpoint::PHASES],
    /// Idempotency records in memory (hot, and sealed by a checkpoint in flight).
    pub idempotency_in_memory: AtomicU64,
    /// Idempotency records checkpoints moved to the store since start.
    pub idempotency_evicted: AtomicU64,
    /// Order-number keys read from the store before batches (memory did not hold them).
    pub cold_probes: AtomicU64,
    /// Microseconds spent reading them.
    pub cold_probe_us: AtomicU64,
    /// Chunks and blocks of history out of memory (as of the last checkpoint collected).
    pub history_cold: AtomicU64,
    /// Turns of the shard's loop in which client requests waited for a lagging checkpoint.
    pub checkpoint_lag_holds: AtomicU64,
    /// Client commands answered `Overloaded` because their batch had read back all the history
    /// it may (`HISTORY_READS_PER_BATCH_MAX`).
    pub history_reads_refused: AtomicU64,
    /// Set by the shard while it works on a batch (`commit`: from its cold probes until it has
    /// answered, sent its credits and acknowledged): its checkpoint thread gives way meanwhile
    /// (`GiveWay`).
    pub working: AtomicBool,
    /// Set by the shard once it is a quarter of the way to its next checkpoint while one is still
    /// being written (`GIVE_WAY_SHARE`), or when it is backpressured, lags, or waits for that one:
    /// from then that one no longer gives way. Cleared when the next checkpoint starts.
    pub checkpoint_overdue: AtomicBool,
    /// How long checkpoint threads have waited for the shard's batches since start (`GiveWay`).
    pub checkpoint_gave_way_us_total: AtomicU64,
}

/// Why a shard stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardFailure {
    /// A storage write failed (DESIGN.md 4: never retried; the store is poisoned).
    Storage(String),
    /// The shard's thread panicked: a programming error. Its state is not trusted any more.
    Panicked(String),
}

impl std::fmt::Display for ShardFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShardFailure::Storage(message) => write!(f, "storage failed: {message}"),
            ShardFailure::Panicked(message) => write!(f, "panicked: {message}"),
        }
    }
}

impl ShardCounters {
    /// Records that the shard stopped and why (the first reason wins).
    pub fn mark_stopped(&self, failure: ShardFailure) {
        let mut slot = self.failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        slot.get_or_insert(failure);
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// Why the shard stopped, if it has.
    pub fn failure(&self) -> Option<ShardFailure> {
        self.failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

impl Default for ShardCounters {
    fn default() -> ShardCounters {
        ShardCounters {
            outcomes: (0..Command::KIND_NAMES.len() * ResultCode::ALL.len()).map(|_| AtomicU64::new(0)).collect(),
            accounts: AtomicU64::default(),
            last_sequence: AtomicU64::default(),
            outbox_pending: AtomicU64::default(),
            batches: AtomicU64::default(),
            commands: AtomicU64::default(),
            last_batch_size: AtomicU64::default(),
            largest_batch_size: AtomicU64::default(),
            last_fsync_us: AtomicU64::default(),
            largest_fsync_us: AtomicU64::default(),
            total_fsync_us: AtomicU64::default(),
            batch_sizes: FixedHistogram::new(&BATCH_SIZE_BOUNDS),
            fsync_us: FixedHistogram::new(&FSYNC_MICROSECONDS_BOUNDS),
            last_batch_at: AtomicU64::default(),
            stopped: AtomicBool::default(),
            checkpoint_failed: AtomicBool::default(),
            failure: std::sync::Mutex::new(None),
            checkpoint_sequence: AtomicU64::default(),
            checkpoint_at: AtomicU64::default(),
            checkpoints: AtomicU64::default(),
            checkpoint_bytes: AtomicU64::default(),
            checkpoint_hold_us: AtomicU64::default(),
            largest_checkpoint_hold_us: AtomicU64::default(),
            checkpoint_epoch: AtomicU64::default(),
            checkpoint_write_us: AtomicU64::default(),
            checkpoint_write_us_total: AtomicU64::default(),
            checkpoint_phase_us_total: Default::default(),
            checkpoint_phase_cpu_us_total: Default::default(),
            idempotency_in_memory: AtomicU64::default(),
            idempotency_evicted: AtomicU64::default(),
            cold_probes: AtomicU64::default(),
            cold_probe_us: AtomicU64::default(),
            history_cold: AtomicU64::default(),
            checkpoint_lag_holds: AtomicU64::default(),
            history_reads_refused: AtomicU64::default(),
            working: AtomicBool::default(),
            checkpoint_overdue: AtomicBool::default(),
            checkpoint_gave_way_us_total: AtomicU64::default(),
            hot_maps_taken: AtomicU64::default(),
        }
    }
}

/// Limits of one shard's loop.
#[derive(Clone, Copy, Debug)]
pub struct ShardLimits {
    /// Most commands applied in one batch (one storage write).
    pub batch_size_max: usize,
    /// Unacknowledged outbox credits above which the shard stops taking client requests.
    pub outbox_pending_max: usize,
    /// How long acknowledgements may wait for a batch to ride on before they get their own.
    pub ack_flush_ms: u64,
    /// When checkpoints are taken (see `CheckpointPolicy`).
    pub checkpoints: CheckpointPolicy,
}

/// The default `CheckpointPolicy::every_orders`: 250,000 orders a shard. Each interval of
/// orders is memory (orders, their events, order numbers, income, the router's claims) until a
/// checkpoint holding it is durable, at most about three intervals a shard
/// (`Shard::checkpoint_lagging`); each checkpoint costs a fixed share of work (its state's
/// parts, its manifest, one more small run of cold rows for RocksDB to merge). With checkpoints
/// at the shard's priority, 100 M transfers on machine D (ARCHITECTURE.md "Measured", session
/// 43), alternated pairs: 187,500 against 125,000 390.9 / 388.9 against 346.9 / 316.9 k/s, then
/// 250,000 against 187,500 410.0 / 368.3 against 347.3 / 327.8 k/s; peak resident 1.11-1.15,
/// 1.17-1.20 and 1.27-1.33 GB (`time -v`). Until session 43 it was 125,000, when checkpoints at
/// nice 10 fell behind and spaced themselves out anyway.
pub const DEFAULT_EVERY_ORDERS: u64 = 250_000;

/// Records of order numbers (a 40-byte slot in the hot map, 24 in the router's claims) counted
/// as one order (about 300 bytes with its events and number) towards `every_orders`.
const RECORDS_PER_ORDER: usize = 4;

/// When a shard writes a checkpoint of its state: after `every_batches` batches, `every_orders`
/// orders or `every` time since the last one (with at least one batch since), whichever comes
/// first; zero turns that trigger off. A graceful stop writes one too when batches were written
/// since the last.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointPolicy {
    pub every_batches: u64,
    /// Orders created since the last checkpoint's snapshot (or order numbers recorded, kept
    /// refusals among them, if more). History (orders, their events and order numbers) leaves
    /// memory only with a durable checkpoint, so this is what bounds the shard's memory
    /// whatever the traffic: about 300 bytes an order, for at most three such intervals (see
    /// `Shard::checkpoint_lagging`).
    pub every_orders: u64,
    pub every: Duration,
    /// Checkpoints kept per shard (at least 1; 2 or more lets recovery fall back past a bad one).
    pub kept: usize,
    pub on_shutdown: bool,
}

impl CheckpointPolicy {
    /// No checkpoints at all: recovery replays the whole journal.
    pub const NEVER: CheckpointPolicy = CheckpointPolicy { every_batches: 0, every_orders: 0, every: Duration::ZERO, kept: 2, on_shutdown: false };

    fn enabled(&self) -> bool {
        self.every_batches > 0 || self.every_orders > 0 || !self.every.is_zero() || self.on_shutdown
    }
}

/// The checkpoints a shard has taken, and the one being written.
pub struct Checkpoints {
    /// The batch of the last checkpoint written (or loaded at start); 0 when none.
    pub last_sequence: u64,
    last_at: Instant,
    /// How many orders the state held at the last checkpoint's snapshot (or at start).
    last_orders: usize,
    /// How many of the hot map's records are from before the last snapshot: 0 after a seal
    /// (the map starts empty) and at start (replay fills it with the records since the
    /// checkpoint), the records put back by a checkpoint that failed (`Shard::unseal`).
    last_records: usize,
    /// The checkpoint's thread, and its mark (`ShardCounters::checkpoint_epoch`), dropped once
    /// the shard has collected it.
    in_flight: Option<(std::thread::JoinHandle<Result<crate::checkpoint::Written, crate::checkpoint::CheckpointError>>, InFlight)>,
    /// The chunks of history the last checkpoint wrote as blobs (`checkpoint::BlobCache`): the
    /// next one refers to those unchanged instead of writing them again. Handed to the
    /// checkpoint in flight, back when it is collected; at a start, those recovery read from
    /// blobs; empty after a failure.
    blobs: crate::checkpoint::BlobCache,
    /// The thread making the next hot idempotency map resident, started after a checkpoint is
    /// collected (`prepare_hot_map`), joined at the next seal (`ShardState::expect_records_with`).
    ready_hot: Option<std::thread::JoinHandle<FlatMap<IdempotencyRecord>>>,
    /// Room for the next hot map to make ahead, set when a checkpoint is collected, taken by
    /// the first batch after it at which the next checkpoint is not yet due.
    next_hot_records: Option<usize>,
}

impl Checkpoints {
    /// Nothing in flight; the last checkpoint is the one recovery started from (if any), and
    /// the recovered state holds `orders` orders.
    pub fn starting_from(last_sequence: Option<u64>, blobs: crate::checkpoint::BlobCache, orders: usize) -> Checkpoints {
        Checkpoints {
            last_sequence: last_sequence.unwrap_or(0),
            last_at: Instant::now(),
            last_orders: orders,
            last_records: 0,
            in_flight: None,
            blobs,
            ready_hot: None,
            next_hot_records: None,
        }
    }
}

/// Everything one shard thread needs.
pub struct Shard {
    pub state: ShardState,
    pub sequence: u64,
    /// The last durable batch and its hash: the next batch links to it.
    pub chain_head: ChainHead,
    pub last_timestamp: Timestamp,
    pub store: Arc<dyn Store>,
    pub clients: Receiver<ClientRequest>,
    pub inbound: Receiver<Inbound>,
    pub control: Receiver<Control>,
    pub peers: Vec<Sender<Inbound>>,
    pub directory: Arc<Directory>,
    pub counters: Arc<ShardCounters>,
    pub limits: ShardLimits,
    pub checkpoints: Checkpoints,
    /// Called with the keys a checkpoint made cold, once it is durable (on the checkpoint's
    /// thread): the router forgets its claims of them, since the cold rows now answer for them.
    pub forget_claims: ForgetClaims,
    /// The keys of every cold row (all shards'): a prefetch asks the store only for those.
    pub cold_filter: Arc<crate::cold::ColdFilter>,
    /// Reads history out of memory back (its pieces' `Piece::Cold`), and counts what they hold
    /// read back: past `HistoryReader::CACHE_BYTES` the shard drops it between batches.
    pub history: Arc<crate::checkpoint::HistoryReader>,
    /// This turn of the loop takes no new client requests (`checkpoint_lagging`).
    pub hold_clients: bool,
    /// A client request taken off the queue that waits for the next batch: its credits would
    /// have taken the outbox past its limit in this one (`drain`).
    pub deferred_client: Option<ClientRequest>,
}

/// What a shard calls with the idempotency keys a durable checkpoint moved to the store.
pub type ForgetClaims = Arc<dyn Fn(&mut dyn Iterator<Item = u128>) + Send + Sync>;

/// Reusable buffers of the loop: nothing on the hot path allocates once they have grown.
struct Round {
    envelopes: Vec<Envelope>,
    replies: Vec<Reply>,
    waiting: Vec<(ReplyTo, usize, usize)>,
    /// The envelopes (start, count) of refusable client requests (`ClientRequest::refusable`).
    refusable: Vec<(usize, usize)>,
    deferred_acks: Vec<Envelope>,
    fx: Effects,
    encoded: Vec<u8>,
    /// Highest outbox sequence already sent to each target.
    sent: Vec<u64>,
    /// Credits applied from each source before this round (to know whom to acknowledge).
    inbound_before: Vec<u64>,
    /// Per source shard: whether this round holds credits from it. A round of resent credits
    /// only (all applied before a crash whose acknowledgement was lost) advances nothing but
    /// must still be acknowledged, or the source keeps them pending until it sends a new one.
    credited: Vec<bool>,
    /// When the oldest deferred acknowledgement arrived.
    acks_since: Option<Instant>,
    /// Per source shard: the highest applied sequence whose acknowledgement could not be sent
    /// yet (the source's channel was full); 0 when none is owed.
    acks_owed: Vec<u64>,
    /// Outbox credits could not all be sent (a target's channel was full): try again soon.
    outbox_unsent: bool,
    /// Per batch: commands by (kind, result code), for metrics.
    outcomes: Vec<u32>,
    /// Order-number keys of the batch (`cold::prefetch`'s buffer).
    probe_keys: Vec<u128>,
}

/// The cell of (command kind, result code) in `ShardCounters::outcomes`.
pub fn outcome_cell(kind_code: u8, code: ResultCode) -> usize {
    kind_code as usize * ResultCode::ALL.len() + code.number() as usize
}

/// How often an idle shard looks whether its checkpoint in flight has finished.
const CHECKPOINT_POLL: Duration = Duration::from_millis(10);

/// Pieces of history out of memory (chunks of 4,096 orders, income blocks) one batch may read
/// back for its client commands (see `Shard::warm_round`): a few tens of
/// milliseconds of reads.
pub const HISTORY_READS_PER_BATCH_MAX: usize = 32;

/// Of `HISTORY_READS_PER_BATCH_MAX`, what one platform's commands may read back in one batch
/// before every other platform's have had theirs (`Shard::warm_round`; what is left then goes
/// to the commands held back, in order): a platform naming old orders (or made-up ids in old
/// chunks) at its request quota no longer takes every batch's reads from the other platforms'
/// commands that need history (before, it took all 32 and theirs were answered `Overloaded`),
/// and a platform alone in its batch still reads up to the whole bound.
pub const HISTORY_READS_PER_PLATFORM_MAX: usize = 8;

/// How soon a shard tries again to send credits or acknowledgements a full channel refused.
const RESEND_AFTER: Duration = Duration::from_millis(1);

/// Marks the blob of `fault` damaged if it is (not when the store only failed to answer).
fn mark_if_damaged(store: &dyn Store, shard: ShardId, fault: &crate::ledger::growth::StorageFault) {
    if fault.damaged {
        if let Err(error) = crate::checkpoint::mark_damaged(store, shard, &fault.hash, &fault.reason) {
            tracing::error!(shard, "the damaged blob could not be marked: {error}");
        }
    }
}

/// The text of a panic's payload.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| payload.downcast_ref::<String>().cloned()).unwrap_or_else(|| "(no message)".to_string())
}

impl Shard {
    /// Runs the loop until shutdown or a storage failure. A panic (a programming error) is
    /// caught here: the shard is marked stopped with the panic's text (readiness and
    /// `/admin/shards` show it; the server then exits, see `Engine::failures`), and every
    /// request that reaches it afterwards is answered with an error, never left waiting.
    pub fn run(self) {
        let shard = self.state.shard;
        let (clients, control, inbound, counters) = (self.clients.clone(), self.control.clone(), self.inbound.clone(), self.counters.clone());
        let store = self.store.clone();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || self.run_loop()));
        if let Err(payload) = outcome {
            if let Some(fault) = payload.downcast_ref::<crate::ledger::growth::StorageFault>() {
                // A blob of history could not be read back: a storage fault, not a bug. A damaged
                // one is marked, so that the next start recovers from a checkpoint without it.
                mark_if_damaged(&*store, shard, fault);
                counters.mark_stopped(ShardFailure::Storage(fault.to_string()));
                tracing::error!(shard, "shard stopped: {fault}");
            } else {
                let text = panic_text(&*payload);
                counters.mark_stopped(ShardFailure::Panicked(text.clone()));
                tracing::error!(shard, "shard panicked and has stopped: {text}");
            }
            refuse_until_shutdown(shard, &clients, &control, &inbound);
        }
    }

    fn run_loop(mut self) {
        let shard_count = self.state.shard_count as usize;
        let mut round = Round {
            envelopes: Vec::with_capacity(self.limits.batch_size_max),
            replies: Vec::with_capacity(self.limits.batch_size_max),
            waiting: Vec::new(),
            refusable: Vec::new(),
            deferred_acks: Vec::new(),
            fx: Effects::default(),
            encoded: Vec::new(),
            sent: self.state.outboxes.iter().map(|o| o.acknowledged).collect(),
            inbound_before: Vec::with_capacity(shard_count),
            credited: vec![false; shard_count],
            acks_since: None,
            acks_owed: vec![0; shard_count],
            outbox_unsent: false,
            outcomes: vec![0; Command::KIND_NAMES.len() * ResultCode::ALL.len()],
            probe_keys: Vec::new(),
        };
        assert_eq!(round.sent.len(), shard_count);
        // Whatever the previous run left unacknowledged is sent again; receivers skip duplicates.
        round.outbox_unsent = !self.send_outbox(&mut round.sent);
        let mut shutting_down = false;
        loop {
            let backpressured = self.state.outbox_pending() > self.limits.outbox_pending_max;
            if backpressured && self.checkpoints.in_flight.is_some() {
                // Requests wait in the queue that this shard does not take now: nothing to
                // give way to.
                self.checkpoint_overdue();
            }
            // A stop takes what is queued at once (the last checkpoint is written at the end).
            self.hold_clients = !shutting_down && self.checkpoint_lagging();
            // A request held back from the last batch goes first in the next: no newer one is
            // taken before it (helper 106: the wait took newer ones, and the held one, never
            // fitting after them, starved while each batch took one request).
            let clients = if backpressured || self.hold_clients || shutting_down || self.deferred_client.is_some() { never() } else { self.clients.clone() };
            // Deferred acknowledgements are flushed once the oldest has waited `ack_flush_ms`,
            // whatever else wakes the loop (reads must not starve them).
            let flush_after = Duration::from_millis(self.limits.ack_flush_ms);
            let mut timeout = round.acks_since.map_or(Duration::from_secs(3600), |since| flush_after.saturating_sub(since.elapsed()));
            let owed = round.outbox_unsent || round.acks_owed.iter().any(|a| *a > 0);
            if owed {
                timeout = timeout.min(RESEND_AFTER);
            }
            if self.checkpoints.in_flight.is_some() {
                // Collect it soon even when idle: the sealed idempotency records leave memory then.
                timeout = timeout.min(CHECKPOINT_POLL);
            }
            if shutting_down || (self.deferred_client.is_some() && !backpressured && !self.hold_clients) {
                // Finish what is queued without waiting for anything new (a request held back
                // from the last batch is queued).
                timeout = Duration::ZERO;
            }
            select! {
                recv(self.control) -> message => match message {
                    Ok(Control::Read(read)) => read(&self.state),
                    Ok(Control::Shutdown) | Err(_) => shutting_down = true,
                },
                recv(self.inbound) -> message => if let Ok(message) = message { self.take_inbound(message, &mut round) },
                recv(clients) -> message => match message {
                    Ok(request) => self.take_client(request, &mut round),
                    Err(_) => shutting_down = true,
                },
                default(timeout) => {},
            }
            if owed {
                self.resend(&mut round);
            }
            if let Some((handle, _mark)) = self.checkpoints.in_flight.take_if(|(h, _)| h.is_finished()) {
                self.collect_checkpoint(handle);
            }
            if self.history.cached_bytes() > crate::checkpoint::HistoryReader::CACHE_BYTES {
                // Old history read back by queries and commands: dropped at once past the
                // budget (between batches, so nothing holds a reference into it).
                self.state.uncache();
                self.history.reset();
            }
            let flush_acks = round.acks_since.is_some_and(|since| since.elapsed() >= flush_after);
            self.drain(&mut round, shutting_down);
            let only_acks = round.envelopes.is_empty();
            if only_acks && !round.deferred_acks.is_empty() && (flush_acks || backpressured || shutting_down) {
                round.envelopes.append(&mut round.deferred_acks);
            }
            if shutting_down && round.envelopes.is_empty() && self.clients.is_empty() && self.deferred_client.is_none() && self.inbound.is_empty() {
                self.checkpoint_at_shutdown();
                break;
            }
            if round.envelopes.is_empty() {
                continue;
            }
            if !only_acks {
                // Acknowledgements ride on a batch that is written anyway.
                round.envelopes.append(&mut round.deferred_acks);
            }
            round.acks_since = None;
            let working = Working::set(self.counters.clone());
            let committed = self.commit(&mut round);
            drop(working);
            self.wake_checkpoint();
            if !committed {
                if let Some(request) = self.deferred_client.take() {
                    (request.reply)(Err(EngineError::ShardStopped(self.state.shard)));
                }
                refuse_until_shutdown(self.state.shard, &self.clients, &self.control, &self.inbound);
                return;
            }
            self.maybe_checkpoint();
        }
    }

    /// Whether new client requests wait for the checkpoint in flight: with checkpoints every
    /// N batches (or N orders), once 2N batches were written (or 2N orders made) since its
    /// snapshot. History leaves memory only once a checkpoint holding it is durable, so a shard
    /// that writes faster than its checkpoints can keep up would hold ever more of it; this
    /// holds the shard's memory to about three intervals of history, at the pace the store can
    /// take (credits from other shards and reads still go on). Counted in
    /// `checkpoint_lag_holds`.
    fn checkpoint_lagging(&self) -> bool {
        if self.checkpoints.in_flight.is_none() {
            return false;
        }
        let policy = &self.limits.checkpoints;
        let batches = self.sequence.saturating_sub(self.checkpoints.last_sequence);
        let orders = self.orders_since_checkpoint() as u64;
        let lagging = (policy.every_batches > 0 && batches >= policy.every_batches.saturating_mul(2))
            || (policy.every_orders > 0 && orders >= policy.every_orders.saturating_mul(2));
        if lagging {
            self.counters.checkpoint_lag_holds.fetch_add(1, Ordering::Relaxed);
            // Set already a quarter of the way to the next one (a lag is two intervals); again here,
            // since the requests this leaves queued must not hold the checkpoint back.
            self.checkpoint_overdue();
        }
        lagging
    }

    /// The checkpoint in flight no longer gives way to the batches (`GiveWay`): marked, and its
    /// thread woken (once: marked already, it no longer waits).
    fn checkpoint_overdue(&self) {
        if !self.counters.checkpoint_overdue.swap(true, Ordering::Relaxed) {
            self.wake_checkpoint();
        }
    }

    /// Wakes the checkpoint thread in flight if it is giving way (`GiveWay::wait`); nothing
    /// otherwise (an unpark of a thread that is not parked only makes its next park return).
    fn wake_checkpoint(&self) {
        if let Some((handle, _mark)) = &self.checkpoints.in_flight {
            handle.thread().unpark();
        }
    }

    /// Reads back the history out of memory the round's commands touch (so that `apply` finds
    /// it in memory), at most `HISTORY_READS_PER_BATCH_MAX` pieces of it for client commands:
    /// gives which commands to leave out (`None`: none, the usual case) or the fault that stops
    /// the shard. Client commands are read for in their order of arrival up to the bound, each
    /// platform's up to its share (`HISTORY_READS_PER_PLATFORM_MAX`) at first, then those held
    /// back while the bound has room; the rest are left out and answered `Overloaded`. Credits
    /// from other shards cannot fail and are always read for.
    /// Each piece is a store read of up to a few hundred kilobytes, so without a bound a batch of
    /// commands naming old orders (a platform confirming made-up ids, which `apply` refuses only
    /// once their chunks are read) would hold every other platform's batch for seconds and fill
    /// memory with history. Commands are taken one after the other, so a piece two of them
    /// share is counted once.
    fn warm_round(&self, round: &Round) -> Result<Option<Vec<bool>>, crate::ledger::growth::StorageFault> {
        // New orders land in the income blocks from the shard's next order id up.
        self.state.warm_own_income(&round.envelopes)?;
        // A platform's command from the HTTP edge; the system's own (platform 0: callbacks,
        // clearing) are always applied.
        let refusable =
            |index: usize, envelope: &Envelope| envelope.platform != 0 && round.refusable.iter().any(|&(start, count)| (start..start + count).contains(&index));
        let mut reads = 0;
        // Reads by platform (refusable commands only); a batch's platforms that read history
        // are few (at most one an admitted read), and none allocates this in a batch that reads
        // none. A platform's first command of the batch is never held to its share.
        let mut by_platform: Vec<(u32, usize)> = Vec::new();
        let mut skipped: Option<Vec<bool>> = None;
        for (index, envelope) in round.envelopes.iter().enumerate() {
            let needed = self.state.history_reads(envelope);
            if needed == 0 {
                continue;
            }
            let refusable = refusable(index, envelope);
            if refusable && reads + needed > HISTORY_READS_PER_BATCH_MAX {
                skipped.get_or_insert_with(|| vec![false; round.envelopes.len()])[index] = true;
                continue;
            }
            let share = refusable.then(|| match by_platform.iter().position(|(platform, _)| *platform == envelope.platform) {
                Some(at) => at,
                None => {
                    by_platform.push((envelope.platform, 0));
                    by_platform.len() - 1
                }
            });
            if share.is_some_and(|share| by_platform[share].1 > 0 && by_platform[share].1 + needed > HISTORY_READS_PER_PLATFORM_MAX) {
                skipped.get_or_insert_with(|| vec![false; round.envelopes.len()])[index] = true;
                continue;
            }
            self.state.warm_history(envelope)?;
            reads += needed;
            if let Some(share) = share {
                by_platform[share].1 += needed;
            }
        }
        // What the shares left of the batch's bound goes to the commands held back, in their
        // order: a platform alone in its batch still reads up to the whole bound, and one that
        // shares it with others takes only what they left.
        if let Some(skip) = skipped.as_mut() {
            for (index, envelope) in round.envelopes.iter().enumerate() {
                if !skip[index] {
                    continue;
                }
                let needed = self.state.history_reads(envelope);
                if reads + needed <= HISTORY_READS_PER_BATCH_MAX {
                    self.state.warm_history(envelope)?;
                    reads += needed;
                    skip[index] = false;
                }
            }
            let refused = skip.iter().filter(|&&skip| skip).count();
            self.counters.history_reads_refused.fetch_add(refused as u64, Ordering::Relaxed);
            if refused == 0 {
                skipped = None;
            }
        }
        Ok(skipped)
    }

    /// Orders made since the last checkpoint's snapshot, or the order numbers' records made
    /// since, `RECORDS_PER_ORDER` to an order, if more: a refusal kept with its number (journal
    /// format 5) makes a record and no order, so a flood of refused requests is bounded as
    /// orders are (helper 117#1), while confirms, releases and the like (records without an
    /// order of their own) do not bring checkpoints sooner (helper 118#2).
    fn orders_since_checkpoint(&self) -> usize {
        let orders = self.state.orders.len().saturating_sub(self.checkpoints.last_orders);
        let records = self.state.idempotency.len().saturating_sub(self.checkpoints.last_records);
        orders.max(records / RECORDS_PER_ORDER)
    }

    /// Puts the sealed records back into the hot map after a checkpoint that did not happen,
    /// counting them as from before the snapshot: the next checkpoint is due an interval later,
    /// not at the next batch (helper 118#1).
    fn unseal(&mut self) {
        let new = self.state.idempotency.len();
        self.state.unseal();
        self.checkpoints.last_records = self.state.idempotency.len().saturating_sub(new);
    }

    /// Between batches: collects a finished checkpoint, and starts the next one when due. The
    /// shard's thread only copies its state (the hold, published as `checkpoint_hold_us`); a
    /// thread of the checkpoint's own encodes and writes it. One at a time per shard.
    fn maybe_checkpoint(&mut self) {
        let policy = self.limits.checkpoints;
        if let Some((handle, _mark)) = self.checkpoints.in_flight.take_if(|(h, _)| h.is_finished()) {
            self.collect_checkpoint(handle);
        }
        if self.store.is_poisoned() {
            return;
        }
        let since = self.sequence - self.checkpoints.last_sequence.min(self.sequence);
        let (orders, elapsed) = (self.orders_since_checkpoint() as u64, self.checkpoints.last_at.elapsed());
        // Whether the next checkpoint is due (`share` 1) or `1 / share` of the way to due.
        let due = |share: u32| {
            let by_count = policy.every_batches > 0 && since.saturating_mul(share as u64) >= policy.every_batches;
            let by_orders = policy.every_orders > 0 && since > 0 && orders.saturating_mul(share as u64) >= policy.every_orders;
            let by_time = !policy.every.is_zero() && since > 0 && elapsed.saturating_mul(share) >= policy.every;
            by_count || by_orders || by_time
        };
        if self.checkpoints.in_flight.is_some() {
            // A quarter of an interval on, the one in flight stops giving way to the batches,
            // so that at full load it ends at most about that much later than it would.
            if due(GIVE_WAY_SHARE) {
                self.checkpoint_overdue();
            }
            return;
        }
        if !due(1) {
            // Not at the collect itself: at full load the next seal comes at once, and it would
            // wait for the table to be made in the hold; there the seal sizes it as before.
            if let Some(records) = self.checkpoints.next_hot_records.take() {
                self.prepare_hot_map(records);
            }
            return;
        }
        self.counters.checkpoint_overdue.store(false, Ordering::Relaxed);
        let queues: Queues = Arc::new(std::sync::Mutex::new(Some((self.clients.clone(), self.inbound.clone()))));
        let in_flight = InFlight::start(self.counters.clone(), Some(queues.clone()));
        let held = Instant::now();
        // The hot idempotency records move to the sealed generation (a pointer swap): the
        // checkpoint writes them cold before its manifest, and the state it encodes holds none.
        let sealed = self.state.seal_idempotency().len();
        let snapshot = self.state.clone();
        // Waited for if not made yet (at full load the seal comes as soon as the last checkpoint
        // is collected): memory then never holds a third table beside the hot and sealed ones.
        self.checkpoints.next_hot_records = None;
        let ready = self.checkpoints.ready_hot.take().and_then(|making| {
            let made = making.join();
            if made.is_err() {
                tracing::warn!(shard = self.state.shard, "the thread making the next hot map panicked; the seal sizes it");
            }
            made.ok()
        });
        if self.state.expect_records_with(sealed.saturating_add(sealed / 4), ready) {
            self.counters.hot_maps_taken.fetch_add(1, Ordering::Relaxed);
        }
        let hold_us = held.elapsed().as_micros() as u64;
        self.counters.checkpoint_hold_us.store(hold_us, Ordering::Relaxed);
        self.counters.largest_checkpoint_hold_us.fetch_max(hold_us, Ordering::Relaxed);
        let (store, head, timestamp, kept) = (self.store.clone(), self.chain_head, self.last_timestamp, policy.kept);
        let (forget_claims, cold_filter) = (self.forget_claims.clone(), self.cold_filter.clone());
        let give_way = GiveWay { counters: self.counters.clone(), queues };
        debug_assert_eq!(head.sequence, self.sequence, "the chain head is the last batch");
        self.checkpoints.last_sequence = head.sequence;
        self.checkpoints.last_at = Instant::now();
        self.checkpoints.last_orders = self.state.orders.len();
        self.checkpoints.last_records = 0;
        let blobs = std::mem::take(&mut self.checkpoints.blobs);
        // The checkpoint thread runs at the shard's own priority. At nice 10 (sessions 20-42)
        // it got the cores last, behind RocksDB's compactions, while its shard, past
        // `checkpoint_lagging`, waited for it with every client's batch: on machine D at 10 M
        // transfers batch p99 was 259-400 ms against 127-169 ms at the shard's priority, peak
        // memory 0.87-0.89 against 0.66-0.69 GB, throughput the same (ARCHITECTURE.md,
        // "Measured", session 43).
        let spawned = std::thread::Builder::new().name(format!("checkpoint-{}", self.state.shard)).spawn(move || {
            let aids = crate::checkpoint::Aids { rows: Some(&*cold_filter), give_way: Some(&|| give_way.wait()) };
            let written = crate::checkpoint::write(&*store, &snapshot, head, timestamp, kept, blobs, aids)?;
            if let Some(sealed) = &snapshot.sealed {
                // Their rows are durable and the filter learned them (in `write`, right after
                // the rows): the router forgets its claims before the shard drops the records.
                forget_claims(&mut sealed.iter().map(|(key, _)| key));
            }
            Ok(written)
        });
        match spawned {
            Ok(handle) => {
                self.checkpoints.in_flight = Some((handle, in_flight));
            }
            Err(error) => {
                // The next try comes an interval later (the counts above were reset: a shard
                // out of threads does not seal, copy and unseal its records every batch). The
                // blob cache went with the closure, so that one encodes every chunk again and
                // rewrites the same blobs (`BlobCache`: more work once, nothing lost).
                self.unseal();
                tracing::error!(shard = self.state.shard, "cannot start a checkpoint thread: {error}; trying again later")
            }
        }
    }

    /// Makes the next hot idempotency map ahead of the next seal, on a thread of its own, with
    /// room for `records` (the generation just made cold and a quarter more, as the seal sizes
    /// it: most likely enough; sized from the hot map's own capacity instead, each generation's
    /// table would be twice the last, as a table is at most 5/8 full), with every page backed
    /// (`FlatMap::with_capacity_resident`): the kernel clears those pages on that thread, not
    /// in the shard's first batches after the seal, where it was most of the shard's extra CPU
    /// during a checkpoint (ARCHITECTURE.md, "Measured", session 48). Started at the first batch
    /// after a collect (the sealed generation dropped) at which the next checkpoint is not yet
    /// due, and joined at the next seal, so that memory holds two tables, as before (a first
    /// version that did not wait held a third at full load: 100 M transfers peaked at 1.59
    /// against 1.48 GB); a thread that cannot start leaves the seal to size the map as before.
    fn prepare_hot_map(&mut self, records: usize) {
        let made = std::thread::Builder::new().name(format!("hot-map-{}", self.state.shard)).spawn(move || FlatMap::with_capacity_resident(records));
        match made {
            Ok(making) => self.checkpoints.ready_hot = Some(making),
            Err(error) => tracing::warn!(shard = self.state.shard, "no thread to make the next hot map ahead: {error}"),
        }
    }

    /// Publishes the outcome of a checkpoint thread. A failed write has poisoned the store, so
    /// the shard's next batch fails and stops it (never retried, DESIGN.md 4); recovery then uses
    /// the previous checkpoint.
    ///
    /// Once it is durable, the shard drops the idempotency records it sealed (they are cold rows
    /// now); a checkpoint that failed gives them back to the hot map (its rows, if written, are
    /// the same records, and a later checkpoint writes them again).
    fn collect_checkpoint(&mut self, handle: std::thread::JoinHandle<Result<crate::checkpoint::Written, crate::checkpoint::CheckpointError>>) {
        match handle.join() {
            Ok(Ok(mut written)) => {
                let sealed = self.state.sealed.as_ref().map_or(0, |sealed| sealed.len());
                self.state.drop_sealed();
                self.checkpoints.next_hot_records = Some(sealed.saturating_add(sealed / 4));
                self.publish_checkpoint(&written);
                self.checkpoints.blobs = std::mem::take(&mut written.cache);
                // The history it holds unchanged leaves memory (the snapshot that shared it has
                // ended with the checkpoint's thread), and copies read back are dropped.
                let known = &self.checkpoints.blobs;
                let durable = |id: u64, version: u64| known.hash_of(id, version);
                let reader: Arc<dyn crate::ledger::growth::BlobRead> = self.history.clone();
                self.state.cool(&durable, &reader);
                self.history.reset();
                self.counters.history_cold.store(self.state.cold_pieces() as u64, Ordering::Relaxed);
            }
            Ok(Err(error)) => {
                self.unseal();
                self.counters.checkpoint_failed.store(true, Ordering::SeqCst);
                tracing::error!(shard = self.state.shard, "checkpoint failed: {error}")
            }
            Err(_) => {
                self.unseal();
                self.counters.checkpoint_failed.store(true, Ordering::SeqCst);
                tracing::error!(shard = self.state.shard, "the checkpoint thread panicked")
            }
        }
    }

    fn publish_checkpoint(&self, written: &crate::checkpoint::Written) {
        let c = &self.counters;
        c.checkpoint_failed.store(false, Ordering::SeqCst);
        c.checkpoint_sequence.store(written.manifest.sequence, Ordering::Relaxed);
        c.checkpoint_at.store(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0), Ordering::Relaxed);
        c.checkpoints.fetch_add(1, Ordering::Relaxed);
        // What it wrote: its parts and the blobs new since the previous checkpoint.
        c.checkpoint_bytes.store(written.manifest.bytes + written.blob_bytes, Ordering::Relaxed);
        c.checkpoint_write_us.store(written.write_us, Ordering::Relaxed);
        c.checkpoint_write_us_total.fetch_add(written.write_us, Ordering::Relaxed);
        for (total, us) in c.checkpoint_phase_us_total.iter().zip(written.phase_us) {
            total.fetch_add(us, Ordering::Relaxed);
        }
        for (total, us) in c.checkpoint_phase_cpu_us_total.iter().zip(written.phase_cpu_us) {
            total.fetch_add(us, Ordering::Relaxed);
        }
        c.idempotency_evicted.fetch_add(written.evicted as u64, Ordering::Relaxed);
    }

    /// At a graceful stop: waits for the checkpoint in flight, then writes one of the final
    /// state (on this thread: nothing else is waiting) if batches were written since the last,
    /// so that the next start loads it instead of replaying.
    fn checkpoint_at_shutdown(&mut self) {
        // Nothing to give way to now: this thread waits for it. A next hot map being made is
        // not wanted any more: its thread ends before the shard does.
        self.checkpoint_overdue();
        self.checkpoints.next_hot_records = None;
        if let Some(making) = self.checkpoints.ready_hot.take() {
            let _ = making.join();
        }
        if let Some((handle, _mark)) = self.checkpoints.in_flight.take() {
            self.collect_checkpoint(handle);
        }
        let policy = self.limits.checkpoints;
        // After a failed checkpoint the stop tries again even without a batch since: one that
        // succeeds lets the engine save the cold-row filter (the next start reads it rather than
        // scanning every row; helper 111).
        let failed = self.counters.checkpoint_failed.load(Ordering::SeqCst);
        if !policy.enabled() || !policy.on_shutdown || self.store.is_poisoned() || (self.sequence <= self.checkpoints.last_sequence && !failed) {
            return;
        }
        let _in_flight = InFlight::start(self.counters.clone(), None);
        self.state.seal_idempotency();
        let blobs = std::mem::take(&mut self.checkpoints.blobs);
        let aids = crate::checkpoint::Aids { rows: Some(&*self.cold_filter), give_way: None };
        match crate::checkpoint::write(&*self.store, &self.state, self.chain_head, self.last_timestamp, policy.kept, blobs, aids) {
            Ok(written) => {
                // The filter learned the sealed records' keys in `write`, right after their rows.
                self.state.drop_sealed();
                self.checkpoints.last_sequence = self.sequence;
                self.publish_checkpoint(&written);
            }
            Err(error) => {
                self.unseal();
                self.counters.checkpoint_failed.store(true, Ordering::SeqCst);
                tracing::error!(shard = self.state.shard, "checkpoint at shutdown failed: {error}")
            }
        }
    }

    /// Sends again what a full channel refused: outbox credits and owed acknowledgements.
    fn resend(&mut self, round: &mut Round) {
        if round.outbox_unsent {
            round.outbox_unsent = !self.send_outbox(&mut round.sent);
        }
        for source in 0..round.acks_owed.len() {
            let sequence = round.acks_owed[source];
            if sequence > 0 && self.acknowledge(source, sequence) {
                round.acks_owed[source] = 0;
            }
        }
    }

    /// Tells `source` that its credits up to `sequence` are durable here; false when its
    /// channel is full (the caller owes it and tries again). A stopped source needs none.
    fn acknowledge(&self, source: usize, sequence: u64) -> bool {
        match self.peers[source].try_send(Inbound::Acknowledged { target: self.state.shard, sequence }) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => true,
            Err(TrySendError::Full(_)) => false,
        }
    }

    fn take_inbound(&mut self, message: Inbound, round: &mut Round) {
        match message {
            Inbound::Credits(credits) => {
                if let Some(flag) = credits.first().and_then(|credit| round.credited.get_mut(credit.source as usize)) {
                    *flag = true;
                }
                for credit in credits {
                    round.envelopes.push(Envelope { platform: 0, out_order_no: None, command: Command::ApplyCredit(credit) });
                }
            }
            Inbound::Acknowledged { target, sequence } => {
                // Acknowledgements are cumulative: keep one per target, the highest.
                for deferred in round.deferred_acks.iter_mut() {
                    if let Command::Acknowledge { target: t, sequence: s } = &mut deferred.command {
                        if *t == target {
                            *s = (*s).max(sequence);
                            return;
                        }
                    }
                }
                round.deferred_acks.push(Envelope { platform: 0, out_order_no: None, command: Command::Acknowledge { target, sequence } });
                round.acks_since.get_or_insert_with(Instant::now);
            }
        }
    }

    fn take_client(&mut self, mut request: ClientRequest, round: &mut Round) {
        let start = round.envelopes.len();
        let count = request.envelopes.len();
        round.envelopes.append(&mut request.envelopes);
        round.waiting.push((request.reply, start, count));
        if request.refusable {
            round.refusable.push((start, count));
        }
    }

    /// Takes what is already queued, without waiting, up to the batch limit. A stopping shard
    /// takes its queue whatever its outbox holds: its peers may have stopped already, so no
    /// acknowledgement may come to bring the outbox under its limit (a stop waited on it for
    /// ever, helper 101, session 63); the credits are durable and sent again at the next start.
    fn drain(&mut self, round: &mut Round, shutting_down: bool) {
        // Credits from other shards first (they free the senders' outboxes), then whole client
        // requests, each while the batch is below `batch_size_max`. Credit messages and client
        // requests hold at most `batch_size_max` commands each (the sender and the router split
        // them), so a batch holds at most 2 * batch_size_max - 1 commands plus one acknowledgement
        // per shard. Taking a whole request past the limit, rather than holding it back, keeps
        // two half-full requests in one fsync.
        while round.envelopes.len() < self.limits.batch_size_max {
            match self.inbound.try_recv() {
                Ok(message) => self.take_inbound(message, round),
                Err(_) => break,
            }
        }
        let pending = self.state.outbox_pending();
        let backpressured = pending > self.limits.outbox_pending_max && !shutting_down;
        if backpressured || self.hold_clients {
            return;
        }
        // The credits the requests taken may send, counted before each is taken: a request that
        // would take the outbox past its limit waits for the next batch (unless it is the
        // batch's first, or the shard is stopping), so one batch overshoots the limit by one
        // request's credits at most (helper 101, session 63: by millions before).
        let (shard, shard_count) = (self.state.shard, self.state.shard_count);
        let credits_of = |envelopes: &[Envelope]| envelopes.iter().map(|e| e.command.remote_credits_at_most(shard, shard_count)).sum::<usize>();
        // A request the loop took before (from its wait) counts as this batch's.
        let mut projected =
            round.waiting.iter().fold(pending, |sum, (_, start, count)| sum.saturating_add(credits_of(&round.envelopes[*start..*start + *count])));
        let mut taken_any = !round.waiting.is_empty();
        while round.envelopes.len() < self.limits.batch_size_max {
            if self.deferred_client.is_none() {
                match self.clients.try_recv() {
                    Ok(request) => self.deferred_client = Some(request),
                    Err(_) => break,
                }
            }
            let credits = self.deferred_client.as_ref().map_or(0, |request| credits_of(&request.envelopes));
            if taken_any && !shutting_down && projected.saturating_add(credits) > self.limits.outbox_pending_max {
                break;
            }
            let request = self.deferred_client.take().expect("a request waits");
            projected = projected.saturating_add(credits);
            taken_any = true;
            self.take_client(request, round);
        }
    }

    /// Applies the round's commands, writes them durably, then replies and sends the outbox.
    /// Returns false when the shard must stop (storage failure).
    fn commit(&mut self, round: &mut Round) -> bool {
        let now = self.tick();
        round.fx.clear();
        round.replies.clear();
        round.inbound_before.clear();
        round.inbound_before.extend_from_slice(&self.state.inbound_applied);
        // Cold records the batch names are read before it is applied (`apply` does no IO).
        let probe_started = Instant::now();
        match crate::cold::prefetch(&*self.store, Some(&self.cold_filter), &mut self.state, self.sequence + 1, &round.envelopes, &mut round.probe_keys) {
            Ok(0) => {}
            Ok(probed) => {
                self.counters.cold_probes.fetch_add(probed as u64, Ordering::Relaxed);
                self.counters.cold_probe_us.fetch_add(probe_started.elapsed().as_micros() as u64, Ordering::Relaxed);
            }
            Err(error) => {
                // Without its cold records the batch cannot be answered right: stop, as after a
                // failed write (nothing of this batch was applied or acknowledged).
                self.counters.mark_stopped(ShardFailure::Storage(error.to_string()));
                for (reply, _, _) in round.waiting.drain(..) {
                    reply(Err(EngineError::Storage(error.to_string())));
                }
                return false;
            }
        }
        // So is the history out of memory the batch touches, up to a bound: client commands
        // that would read back more are answered `Overloaded` and left out of the batch.
        let skipped = match self.warm_round(round) {
            Ok(skipped) => skipped,
            Err(fault) => {
                mark_if_damaged(&*self.store, self.state.shard, &fault);
                tracing::error!(shard = self.state.shard, "shard stopped: {fault}");
                self.counters.mark_stopped(ShardFailure::Storage(fault.to_string()));
                for (reply, _, _) in round.waiting.drain(..) {
                    reply(Err(EngineError::Storage(fault.to_string())));
                }
                return false;
            }
        };
        self.state.apply_all(&round.envelopes, skipped.as_deref(), now, &mut round.fx, &mut round.replies);
        // The journal holds what was applied: a command left out is not replayed either.
        let applied: Option<Vec<Envelope>> =
            skipped.as_ref().map(|skipped| round.envelopes.iter().zip(skipped).filter(|(_, skip)| !**skip).map(|(envelope, _)| envelope.clone()).collect());
        self.state.forget_cold();
        self.sequence += 1;
        self.state.note_batch(self.sequence, &round.fx.postings);
        let record = BatchRecordRef {
            shard: self.state.shard,
            sequence: self.sequence,
            timestamp: now,
            previous_hash: self.chain_head.hash,
            envelopes: applied.as_deref().unwrap_or(&round.envelopes),
            entries: &round.fx.entries,
            postings: &round.fx.postings,
        };
        let hash = encode(&record, &mut round.encoded);
        let key = batch_key(self.state.shard, self.sequence);
        // Credits sent to suspense: a notice of each in the same write (`diversions`).
        let notices = crate::diversions::collect(&self.state, &round.fx, self.sequence, now);
        let started = Instant::now();
        let written = if notices.is_empty() {
            self.store.write(&[(&key, &round.encoded)])
        } else {
            let mut puts: Vec<(&[u8], &[u8])> = vec![(&key, &round.encoded)];
            puts.extend(notices.iter().map(|(key, value)| (key.as_slice(), value.as_slice())));
            self.store.write(&puts)
        };
        let fsync_us = started.elapsed().as_micros() as u64;
        if let Err(error) = written {
            // Invariant 4: a failed write stops the shard; nothing in this batch is acknowledged.
            self.counters.mark_stopped(ShardFailure::Storage(error.to_string()));
            for (reply, _, _) in round.waiting.drain(..) {
                reply(Err(EngineError::Storage(error.to_string())));
            }
            return false;
        }
        self.chain_head = ChainHead { sequence: self.sequence, hash };
        self.publish(round.envelopes.len() as u64, fsync_us);
        self.counters.last_batch_at.store(now, Ordering::Relaxed);
        self.record_outcomes(round);
        for (account, platform, currency, status) in round.fx.directory.drain(..) {
            self.directory.set(account, self.state.shard_count, platform, currency, status);
        }
        for (reply, start, count) in round.waiting.drain(..) {
            reply(Ok(round.replies[start..start + count].to_vec()));
        }
        round.envelopes.clear();
        round.refusable.clear();
        round.outbox_unsent = !self.send_outbox(&mut round.sent);
        for source in 0..round.inbound_before.len() {
            let applied = self.state.inbound_applied[source];
            let credited = std::mem::take(&mut round.credited[source]);
            if applied > round.inbound_before[source] || credited {
                // Cumulative: a sent acknowledgement also covers any older one still owed.
                round.acks_owed[source] = if self.acknowledge(source, applied) { 0 } else { applied };
            }
        }
        true
    }

    /// Sends every outbox credit not yet sent to its target shard, at most a batch per message.
    /// Never blocks: a full channel stops the sending towards that target, and the credits stay
    /// in the outbox (durable, part of the journaled state) for the next try. Returns false when
    /// some credits were left unsent that way.
    fn send_outbox(&mut self, sent: &mut [u64]) -> bool {
        let mut all_sent = true;
        for (target, outbox) in self.state.outboxes.iter().enumerate() {
            let first_unsent = outbox.pending.partition_point(|c| c.sequence <= sent[target]);
            if first_unsent == outbox.pending.len() {
                continue;
            }
            // At most a batch of credits per message, so that a receiving batch stays bounded.
            // Copied a chunk at a time as it goes (a full peer takes none: all of them were
            // copied at every try before, each millisecond while the peer was full).
            let mut from = first_unsent;
            while from < outbox.pending.len() {
                let to = outbox.pending.len().min(from + self.limits.batch_size_max);
                let chunk: Vec<RemoteCredit> = outbox.pending.range(from..to).copied().collect();
                from = to;
                let last = chunk.last().expect("chunks are not empty").sequence;
                match self.peers[target].try_send(Inbound::Credits(chunk)) {
                    Ok(()) => sent[target] = last,
                    // A stopped peer: the credits stay pending and are resent on restart.
                    Err(TrySendError::Disconnected(_)) => break,
                    // Full: the rest goes, in order, on a later try (no gap reaches the peer).
                    Err(TrySendError::Full(_)) => {
                        all_sent = false;
                        break;
                    }
                }
            }
        }
        all_sent
    }

    /// The batch timestamp: wall-clock microseconds, strictly increasing across batches and restarts.
    fn tick(&mut self) -> Timestamp {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
        self.last_timestamp = wall.max(self.last_timestamp + 1);
        self.last_timestamp
    }

    /// Counts commands by kind and result once per batch (not per command: the hot path stays
    /// free of shared-counter traffic).
    fn record_outcomes(&self, round: &mut Round) {
        round.outcomes.fill(0);
        for (envelope, reply) in round.envelopes.iter().zip(&round.replies) {
            round.outcomes[outcome_cell(envelope.command.kind_code(), reply.code)] += 1;
        }
        for (cell, count) in round.outcomes.iter().enumerate().filter(|(_, count)| **count > 0) {
            self.counters.outcomes[cell].fetch_add(*count as u64, Ordering::Relaxed);
        }
    }

    fn publish(&self, batch_size: u64, fsync_us: u64) {
        let c = &self.counters;
        c.accounts.store(self.state.accounts.len() as u64, Ordering::Relaxed);
        let sealed = self.state.sealed.as_ref().map_or(0, |sealed| sealed.len());
        c.idempotency_in_memory.store((self.state.idempotency.len() + sealed) as u64, Ordering::Relaxed);
        c.last_sequence.store(self.sequence, Ordering::Relaxed);
        c.outbox_pending.store(self.state.outbox_pending() as u64, Ordering::Relaxed);
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.commands.fetch_add(batch_size, Ordering::Relaxed);
        c.last_batch_size.store(batch_size, Ordering::Relaxed);
        c.largest_batch_size.fetch_max(batch_size, Ordering::Relaxed);
        c.last_fsync_us.store(fsync_us, Ordering::Relaxed);
        c.largest_fsync_us.fetch_max(fsync_us, Ordering::Relaxed);
        c.total_fsync_us.fetch_add(fsync_us, Ordering::Relaxed);
        c.batch_sizes.record(batch_size);
        c.fsync_us.record(fsync_us);
    }
}

/// After a storage failure or a panic: answer every request with an error until the engine
/// shuts down. The thread stays, rather than exiting, so that no request can be queued to a
/// mailbox nobody reads (its caller would wait forever). Reads are refused too (their reply
/// sender is dropped, so the reader gets `ShardStopped`): the in-memory state is not trusted.
fn refuse_until_shutdown(shard: ShardId, clients: &Receiver<ClientRequest>, control: &Receiver<Control>, inbound: &Receiver<Inbound>) {
    loop {
        select! {
            recv(clients) -> message => match message {
                Ok(request) => (request.reply)(Err(EngineError::ShardStopped(shard))),
                Err(_) => return,
            },
            recv(control) -> message => match message {
                Ok(Control::Read(_)) => {}
                Ok(Control::Shutdown) | Err(_) => break,
            },
            recv(inbound) -> _ => {}
        }
    }
    while let Ok(request) = clients.try_recv() {
        (request.reply)(Err(EngineError::ShardStopped(shard)));
    }
}

/// How a checkpoint's thread gives the cores to its shard's batches. Between pieces of its work
/// (`checkpoint::Aids::give_way`) it waits while the shard works on a batch or has requests or
/// credits queued, until the shard is a quarter of the way to its next checkpoint
/// (`ShardCounters::checkpoint_overdue`, `GIVE_WAY_SHARE`), has stopped, or waits for it. From then
/// it no longer waits, so a shard at full load still gets its checkpoints, at most about a quarter
/// of an interval later than without giving way (a little more history in memory meanwhile). On two
/// cores the checkpoint threads and RocksDB's compactions otherwise share them fairly with the
/// shards, and a batch that arrives waits for a core: at 300,000 transfers/s on machine D, batch
/// p99 was 24.9-33.1 ms against 40.8-46.6 without giving way (ARCHITECTURE.md, "Measured",
/// session 45).
struct GiveWay {
    counters: Arc<ShardCounters>,
    queues: Queues,
}

/// The shard's own receivers of requests and of credits, lent to its checkpoint's `GiveWay` only
/// to see whether anything waits (never received from). The shard takes them back when it
/// collects the checkpoint or its loop ends (`InFlight`'s drop), so a checkpoint thread that
/// outlives its shard (after a panic) never keeps the channels open: senders still find them
/// closed (`TrySendError::Disconnected`) once the shard is gone.
type Queues = Arc<std::sync::Mutex<Option<(Receiver<ClientRequest>, Receiver<Inbound>)>>>;

impl GiveWay {
    fn wait(&self) {
        let c = &self.counters;
        // A stopped shard takes nothing more: nothing to give way to.
        let yielding = || !c.checkpoint_overdue.load(Ordering::Relaxed) && !c.stopped.load(Ordering::Relaxed);
        let queued = || {
            let queues = self.queues.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            queues.as_ref().is_some_and(|(clients, inbound)| !clients.is_empty() || !inbound.is_empty())
        };
        let busy = || yielding() && (c.working.load(Ordering::Relaxed) || queued());
        if !busy() {
            return;
        }
        let started = Instant::now();
        // Bounded, whatever the shard does: a checkpoint always ends.
        while busy() && started.elapsed() < GIVE_WAY_MAX {
            // Woken by the shard when a batch is done (`Shard::wake_checkpoint`) or when the
            // checkpoint falls overdue; the timeout covers requests that leave the queue
            // without a batch (a stop, a refusal).
            std::thread::park_timeout(GIVE_WAY_NAP);
        }
        c.checkpoint_gave_way_us_total.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}

/// `ShardCounters::working` set while this lives: cleared when the batch is done, and also if
/// `commit` panics (the unwind drops it), so that a checkpoint thread does not give way to a
/// batch that will never end for up to `GIVE_WAY_MAX` at each of its waits.
struct Working(Arc<ShardCounters>);

impl Working {
    fn set(counters: Arc<ShardCounters>) -> Working {
        counters.working.store(true, Ordering::Relaxed);
        Working(counters)
    }
}

impl Drop for Working {
    fn drop(&mut self) {
        self.0.working.store(false, Ordering::Relaxed);
    }
}

/// The longest a checkpoint thread that gives way sleeps before it looks again whether its
/// shard is still busy (unless the shard wakes it).
const GIVE_WAY_NAP: Duration = Duration::from_millis(2);

/// A checkpoint in flight gives way until its shard is `1 / GIVE_WAY_SHARE` of the way to the
/// next one: at full load it ends that much of an interval later than it would, and the history
/// and order numbers of that much longer stay in memory. At 100 M transfers on machine D, half an
/// interval (2) peaked at 1.41-1.52 GB, a quarter at 1.40-1.41, against 1.30-1.31 without giving
/// way (ARCHITECTURE.md, "Measured", session 45); six runs alternated, 1.35-1.40 against 1.30-1.37
/// GB, with the same throughput (medians 711.3 against 719.6 k transfers/s, session 46).
const GIVE_WAY_SHARE: u32 = 4;

/// The longest a checkpoint thread gives way at once.
const GIVE_WAY_MAX: Duration = Duration::from_secs(1);

/// `ShardCounters::checkpoint_epoch` odd while this lives: kept with the checkpoint's thread
/// (`Checkpoints::in_flight`) until the shard has collected it, dropped at once if the thread
/// could not start, and with the shard's `Checkpoints` if its loop ends first.
struct InFlight(Arc<ShardCounters>, Option<Queues>);

impl InFlight {
    /// `queues`: those lent to the checkpoint's `GiveWay`, taken back when this drops.
    fn start(counters: Arc<ShardCounters>, queues: Option<Queues>) -> InFlight {
        counters.checkpoint_epoch.fetch_add(1, Ordering::Relaxed);
        InFlight(counters, queues)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(queues) = &self.1 {
            queues.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        }
        self.0.checkpoint_epoch.fetch_add(1, Ordering::Relaxed);
    }
}

impl ShardCounters {
    /// Whether a checkpoint of this shard is under way (`checkpoint_epoch` is odd).
    pub fn checkpoint_in_flight(&self) -> bool {
        self.checkpoint_epoch.load(Ordering::Relaxed) % 2 == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn give_way() -> (GiveWay, Sender<ClientRequest>, Sender<Inbound>, Queues) {
        let (client_tx, clients) = crossbeam_channel::unbounded();
        let (inbound_tx, inbound) = crossbeam_channel::unbounded();
        let queues: Queues = Arc::new(std::sync::Mutex::new(Some((clients, inbound))));
        (GiveWay { counters: Arc::new(ShardCounters::default()), queues: queues.clone() }, client_tx, inbound_tx, queues)
    }

    /// Calls `wait` on this thread while `busy` holds the shard busy, `release` undoing it from
    /// another thread after `after`: how long the wait took, and what it counted.
    fn wait_released(give_way: &GiveWay, after: Duration, release: impl FnOnce() + Send + 'static) -> (Duration, u64) {
        let before = give_way.counters.checkpoint_gave_way_us_total.load(Ordering::Relaxed);
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(after);
            release();
        });
        let started = Instant::now();
        give_way.wait();
        let waited = started.elapsed();
        releaser.join().unwrap();
        (waited, give_way.counters.checkpoint_gave_way_us_total.load(Ordering::Relaxed) - before)
    }

    /// Nothing counted: `wait` returned without waiting (had it waited, `GIVE_WAY_MAX` would
    /// have ended it with a second counted).
    fn went_on_at_once(give_way: &GiveWay) -> bool {
        let before = give_way.counters.checkpoint_gave_way_us_total.load(Ordering::Relaxed);
        give_way.wait();
        give_way.counters.checkpoint_gave_way_us_total.load(Ordering::Relaxed) == before
    }

    #[test]
    fn a_checkpoint_gives_way_while_its_shard_works_and_not_once_overdue_or_stopped() {
        let (give_way, _clients, _inbound, _queues) = give_way();
        let c = give_way.counters.clone();
        assert!(went_on_at_once(&give_way), "an idle shard held its checkpoint");
        // A shard at work holds the checkpoint until it is done.
        c.working.store(true, Ordering::Relaxed);
        let working = c.clone();
        let (waited, counted) = wait_released(&give_way, Duration::from_millis(200), move || working.working.store(false, Ordering::Relaxed));
        assert!(waited >= Duration::from_millis(200) && counted >= 200_000, "waited {waited:?}, counted {counted} µs");
        // However busy the shard: not once a quarter of the way to the next checkpoint, nor
        // once it has stopped.
        c.working.store(true, Ordering::Relaxed);
        c.checkpoint_overdue.store(true, Ordering::Relaxed);
        assert!(went_on_at_once(&give_way), "an overdue checkpoint gave way");
        c.checkpoint_overdue.store(false, Ordering::Relaxed);
        c.mark_stopped(ShardFailure::Storage("gone".into()));
        assert!(went_on_at_once(&give_way), "a checkpoint gave way to a stopped shard");
    }

    #[test]
    fn a_batch_that_panics_leaves_its_shard_not_working() {
        let (give_way, _clients, _inbound, _queues) = give_way();
        let counters = give_way.counters.clone();
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _working = Working::set(counters.clone());
            assert!(counters.working.load(Ordering::Relaxed));
            panic!("a commit that panics");
        }));
        assert!(unwound.is_err());
        assert!(!counters.working.load(Ordering::Relaxed), "the shard still reads as working");
        assert!(went_on_at_once(&give_way), "a checkpoint gave way to a batch that had ended in a panic");
    }

    #[test]
    fn queued_requests_and_credits_count_as_work_until_the_shard_takes_its_queues_back() {
        let (give_way, clients, inbound, queues) = give_way();
        let give_way = Arc::new(give_way);
        clients.send(ClientRequest { envelopes: Vec::new(), reply: Box::new(|_| {}), refusable: false }).unwrap();
        let taking = give_way.clone();
        let (waited, _) = wait_released(&give_way, Duration::from_millis(200), move || {
            let queues = taking.queues.lock().unwrap();
            queues.as_ref().unwrap().0.recv().unwrap();
        });
        assert!(waited >= Duration::from_millis(200), "the checkpoint went on with a request queued ({waited:?})");
        inbound.send(Inbound::Acknowledged { target: 0, sequence: 1 }).unwrap();
        let taking = give_way.clone();
        let (waited, _) = wait_released(&give_way, Duration::from_millis(200), move || {
            let queues = taking.queues.lock().unwrap();
            queues.as_ref().unwrap().1.recv().unwrap();
        });
        assert!(waited >= Duration::from_millis(200), "the checkpoint went on with a credit queued ({waited:?})");
        // Once the shard has taken its receivers back (the checkpoint collected, or the loop
        // ended), the checkpoint sees no queue, and keeps no channel open.
        inbound.send(Inbound::Acknowledged { target: 0, sequence: 2 }).unwrap();
        drop(InFlight::start(give_way.counters.clone(), Some(queues)));
        assert!(went_on_at_once(&give_way));
        assert!(inbound.send(Inbound::Acknowledged { target: 0, sequence: 3 }).is_err(), "the credits' channel is still open");
        assert!(clients.send(ClientRequest { envelopes: Vec::new(), reply: Box::new(|_| {}), refusable: false }).is_err());
    }
}
