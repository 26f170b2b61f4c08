//! The engine: recovers the shards from the journal, starts their threads, and routes each
//! command to the shard that owns the funds it debits.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, SendTimeoutError, Sender, TrySendError};
use storage::Store;

use crate::claims::{Claimed, Claims};
use crate::directory::Directory;
use crate::journal::{batch_key, encode, recover_shard_filtered, BatchRecordRef, ChainHead, Recovered, META_SHARD_COUNT, ZERO_HASH};
use crate::ledger::command::{own_key, Command, Envelope};
use crate::ledger::ops::payment::check_legs;
use crate::ledger::state::{check_amount, credit_refusal_by, Effects, IdempotencyRecord, ShardState};
use crate::ledger::types::{AdjustmentSide, Leg, Reply, ShardId, Timestamp};
use crate::money::CurrencySpec;
use crate::result::ResultCode;
use crate::shard::{CheckpointPolicy, Checkpoints, ClientRequest, Control, ReplyTo, Shard, ShardCounters, ShardFailure, ShardLimits, DEFAULT_EVERY_ORDERS};
use crate::{EngineError, PREFETCH_AHEAD};

/// How the engine is sized and what it keeps (see config/default.toml for each key).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub shard_count: u16,
    pub mailbox_capacity: usize,
    /// Messages (credits, acknowledgements) one shard's channel from the other shards holds.
    pub inbound_capacity: usize,
    /// Reads and stop requests one shard's control channel holds.
    pub control_capacity: usize,
    pub batch_size_max: usize,
    pub outbox_pending_max: usize,
    pub ack_flush_ms: u64,
    pub currencies: Vec<CurrencySpec>,
    pub utc_offset_seconds: i32,
    /// When shards write checkpoints of their state (recovery loads the newest and replays only
    /// the journal after it).
    pub checkpoints: CheckpointPolicy,
    /// Bytes of the first segment of the filter of cold order numbers (`cold::ColdFilter`, a
    /// multiple of 64): about 1.25 bytes per order number for 1 % false positives; past that the
    /// filter adds a segment twice the newest's size (up to 4 GiB in all).
    pub cold_filter_bytes: usize,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            shard_count: 2,
            mailbox_capacity: 1024,
            inbound_capacity: 256,
            control_capacity: 256,
            batch_size_max: 8189,
            outbox_pending_max: 65536,
            ack_flush_ms: 20,
            currencies: vec![CurrencySpec::new("CNY", 2).expect("valid"), CurrencySpec::new("USD", 2).expect("valid")],
            utc_offset_seconds: 8 * 3600,
            checkpoints: CheckpointPolicy {
                every_batches: 20_000,
                every_orders: DEFAULT_EVERY_ORDERS,
                every: Duration::from_secs(600),
                kept: 2,
                on_shutdown: true,
            },
            cold_filter_bytes: crate::cold::COLD_FILTER_BYTES,
        }
    }
}

/// How long `read_shard` waits for room in a shard's full control channel before it answers
/// `Overloaded` (it runs on blocking threads, never on an async worker).
const READ_QUEUE_WAIT: Duration = Duration::from_secs(2);

/// Whether a submission may wait for room in a full mailbox.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Never: a full mailbox answers `ResultCode::Overloaded` for the commands that did not fit.
    Never,
    /// Block the calling thread until there is room (threads that may wait: clearing, CLI).
    Block,
}

/// A running engine. Dropping it without `shutdown` leaves the threads to finish on their own.
pub struct Engine {
    config: EngineConfig,
    clients: Vec<Sender<ClientRequest>>,
    controls: Vec<Sender<Control>>,
    directory: Arc<Directory>,
    claims: Arc<Claims>,
    counters: Vec<Arc<ShardCounters>>,
    /// Senders of each shard's inbound channel, kept only to read its depth.
    inbound_depths: Vec<Sender<crate::shard::Inbound>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Set by `shutdown`: later submissions are refused instead of queued to stopped shards.
    shut_down: std::sync::atomic::AtomicBool,
    /// The shards' store: cold idempotency records are read from it.
    store: Arc<dyn Store>,
    /// Every cold row's key: saved at a graceful stop, so the next start need not scan the rows.
    cold_filter: Arc<crate::cold::ColdFilter>,
}

/// Collects the replies of one submission's parts (one per shard) and answers once all are in.
struct Gather {
    replies: Vec<Option<Reply>>,
    parts_left: usize,
    error: Option<EngineError>,
    reply: Option<ReplyTo>,
    /// Whether a part whose shard stopped answers `ResultCode::ShardStopped` for each of its
    /// commands (`submit_each`) rather than an error for the whole submission.
    each: bool,
}

impl Gather {
    fn finish_part(&mut self) {
        self.parts_left -= 1;
        if self.parts_left > 0 {
            return;
        }
        let reply = self.reply.take().expect("answered once");
        match self.error.take() {
            Some(error) => reply(Err(error)),
            None => reply(Ok(self.replies.drain(..).map(|r| r.expect("every command answered")).collect())),
        }
    }
}

/// One part's answer into its submission's `Gather`. Carried by the reply closure a shard is
/// given: a closure dropped without being called (a shard that stopped while holding the
/// request, its batch unwinding) answers its commands as a stopped shard's, so the submission
/// is answered and, through `submit_each`, the other parts' replies are not lost (helper 113#1:
/// the gather never answered, and `/v1/bulk` failed whole as before helper 108#2's mend).
struct PartAnswer {
    gather: Arc<Mutex<Gather>>,
    claims: Arc<Claims>,
    shard: usize,
    positions: Vec<(usize, Claimed)>,
    answered: bool,
}

impl PartAnswer {
    fn answer(&mut self, result: Result<Vec<Reply>, EngineError>) {
        self.answered = true;
        // Also taken while a shard's panic unwinds: a poisoned lock's data is still sound (every
        // change under it is a single assignment).
        let mut gather = self.gather.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match result {
            Ok(shard_replies) => {
                for ((index, claim), reply) in self.positions.iter().zip(shard_replies) {
                    self.claims.settle(claim, &reply, self.shard as ShardId);
                    gather.replies[*index] = Some(reply);
                }
            }
            // The commands' claims stay held: their outcome is unknown until the shard starts
            // again and recovery claims what it journaled.
            Err(_) if gather.each => {
                for (index, _) in &self.positions {
                    gather.replies[*index] = Some(Reply::rejected(ResultCode::ShardStopped));
                }
            }
            Err(error) => gather.error = Some(error),
        }
        gather.finish_part();
    }
}

impl Drop for PartAnswer {
    fn drop(&mut self) {
        if !self.answered {
            self.answer(Err(EngineError::ShardStopped(self.shard as ShardId)));
        }
    }
}

fn wall_clock_micros() -> Timestamp {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

impl Engine {
    /// Recovers every shard from `store` (writing genesis for new ones) and starts their threads.
    pub fn start(config: EngineConfig, store: Arc<dyn Store>) -> Result<Engine, EngineError> {
        let shard_count = config.shard_count;
        if shard_count == 0 || config.batch_size_max == 0 || config.mailbox_capacity == 0 || config.inbound_capacity == 0 || config.control_capacity == 0 {
            return Err(EngineError::Config("shard_count, batch_size_max, mailbox_capacity, inbound_capacity and control_capacity must be positive".into()));
        }
        match store.get(META_SHARD_COUNT)? {
            Some(bytes) if bytes != shard_count.to_le_bytes() => {
                return Err(EngineError::Config(format!(
                    "the data was written with {} shards, the configuration asks for {shard_count}",
                    u16::from_le_bytes(bytes.get(..2).and_then(|b| b.try_into().ok()).unwrap_or([0, 0]))
                )))
            }
            Some(_) => {}
            None => store.write(&[(META_SHARD_COUNT, &shard_count.to_le_bytes())])?,
        }
        // Every cold row's key, so that recovery and the shards ask the store only for order
        // numbers that may be cold (nearly every new one is not).
        let (cold_filter, saved) = crate::cold::ColdFilter::load_saved_or_scan(&*store, config.cold_filter_bytes.max(64) / 64 * 64, shard_count)?;
        tracing::info!(saved, "cold-row filter {}", if saved { "read as the last graceful stop saved it" } else { "built by a scan of the cold rows" });
        let cold_filter = Arc::new(cold_filter);
        let recovered = recover_all(&store, &config, &cold_filter)?;
        let directory = Arc::new(Directory::new(shard_count));
        let claims = Arc::new(Claims::new());
        for Recovered { state, .. } in &recovered {
            directory.load(state);
            for (key, _) in state.idempotency.iter() {
                claims.hold(key, state.shard);
            }
        }
        let (mut client_senders, mut client_receivers) = (Vec::new(), Vec::new());
        let (mut inbound_senders, mut inbound_receivers) = (Vec::new(), Vec::new());
        let (mut control_senders, mut control_receivers) = (Vec::new(), Vec::new());
        for _ in 0..shard_count {
            let (s, r) = bounded(config.mailbox_capacity);
            client_senders.push(s);
            client_receivers.push(r);
            let (s, r) = bounded(config.inbound_capacity);
            inbound_senders.push(s);
            inbound_receivers.push(r);
            let (s, r) = bounded(config.control_capacity);
            control_senders.push(s);
            control_receivers.push(r);
        }
        let limits = ShardLimits {
            batch_size_max: config.batch_size_max,
            outbox_pending_max: config.outbox_pending_max,
            ack_flush_ms: config.ack_flush_ms,
            checkpoints: config.checkpoints,
        };
        let mut counters = Vec::new();
        let mut threads = Vec::new();
        // Claims of order numbers that went cold are dropped: a cold row answers for them (a
        // shard that finds another shard's row answers a conflict), so the claims stay as
        // bounded as the hot records.
        let forgetting = claims.clone();
        let forget_claims: crate::shard::ForgetClaims = Arc::new(move |keys: &mut dyn Iterator<Item = u128>| forgetting.forget(keys));
        let receivers = client_receivers.into_iter().zip(inbound_receivers).zip(control_receivers);
        for (recovered, ((clients, inbound), control)) in recovered.into_iter().zip(receivers) {
            let Recovered { state, head: chain_head, timestamp: last_timestamp, checkpoint, blobs, history, .. } = recovered;
            let sequence = chain_head.sequence;
            let shard_counters = Arc::new(ShardCounters::default());
            shard_counters.checkpoint_sequence.store(checkpoint.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
            shard_counters.accounts.store(state.accounts.len() as u64, std::sync::atomic::Ordering::Relaxed);
            shard_counters.last_sequence.store(sequence, std::sync::atomic::Ordering::Relaxed);
            shard_counters.outbox_pending.store(state.outbox_pending() as u64, std::sync::atomic::Ordering::Relaxed);
            counters.push(shard_counters.clone());
            let shard_id = state.shard;
            let orders = state.orders.len();
            let shard = Shard {
                state,
                sequence,
                chain_head,
                last_timestamp,
                store: store.clone(),
                clients,
                inbound,
                control,
                peers: inbound_senders.clone(),
                directory: directory.clone(),
                counters: shard_counters,
                limits,
                checkpoints: Checkpoints::starting_from(checkpoint, blobs, orders),
                forget_claims: forget_claims.clone(),
                cold_filter: cold_filter.clone(),
                history: history.unwrap_or_else(|| crate::checkpoint::HistoryReader::new(store.clone(), shard_id)),
                hold_clients: false,
                deferred_client: None,
            };
            let thread = std::thread::Builder::new()
                .name(format!("shard-{shard_id}"))
                .spawn(move || shard.run())
                .map_err(|e| EngineError::Config(format!("cannot start shard thread: {e}")))?;
            threads.push(thread);
        }
        Ok(Engine {
            config,
            clients: client_senders,
            controls: control_senders,
            directory,
            claims,
            counters,
            inbound_depths: inbound_senders,
            threads: Mutex::new(threads),
            shut_down: std::sync::atomic::AtomicBool::new(false),
            store,
            cold_filter,
        })
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Submits commands; `reply` gets one reply per command, in order, once all are durable.
    /// Never blocks (it runs on async workers): the commands bound for a shard whose mailbox is
    /// full are answered `ResultCode::Overloaded` and were never queued, so nothing of them
    /// changed and their order numbers stay free; the other shards' parts go ahead. A caller of
    /// several commands gets each one's own result, never a half-applied request it cannot see.
    pub fn submit(&self, envelopes: Vec<Envelope>, reply: ReplyTo) {
        self.submit_with(envelopes, reply, Wait::Never, false)
    }

    /// As `submit`, but a part bound for a stopped shard answers each of its commands
    /// `ResultCode::ShardStopped` while the other shards' parts answer as they went, so a
    /// caller of many commands (`/v1/bulk`) can answer and carry on with each one that
    /// succeeded (helper 108#2: the whole bulk failed, and its accepted recharges waited for a
    /// start to reach their bank, their retries being replays). Only a submission after
    /// `shutdown` is an error as a whole.
    pub fn submit_each(&self, envelopes: Vec<Envelope>, reply: ReplyTo) {
        self.submit_with(envelopes, reply, Wait::Never, true)
    }

    fn submit_with(&self, envelopes: Vec<Envelope>, reply: ReplyTo, wait: Wait, each: bool) {
        if self.shut_down.load(std::sync::atomic::Ordering::SeqCst) {
            return reply(Err(EngineError::ShardStopped(ShardId::MAX)));
        }
        // A shard known to have stopped takes nothing: its commands are answered before they
        // are claimed (nothing of them is queued, so nothing is applied), and retries while it
        // is stopped neither grow the claims nor make another shard's use of their numbers a
        // conflict until a restart (helper 113#2). A submission answered as a whole is refused
        // before anything is claimed; `submit_each` answers those commands `ShardStopped`.
        let is_stopped = |shard: ShardId| self.counters.get(shard as usize).is_some_and(|c| c.stopped.load(std::sync::atomic::Ordering::Acquire));
        let any_stopped = (0..self.counters.len()).any(|shard| is_stopped(shard as ShardId));
        if any_stopped && !each {
            if let Some(shard) = envelopes.iter().filter_map(|e| self.route(e).ok()).find(|s| is_stopped(*s)) {
                return reply(Err(EngineError::ShardStopped(shard)));
            }
        }
        let shard_count = self.config.shard_count as usize;
        let mut replies: Vec<Option<Reply>> = vec![None; envelopes.len()];
        // Per shard: its commands, and for each its position in the submission and its claims
        // (keys, and whether this submission made them).
        type Part = (Vec<Envelope>, Vec<(usize, Claimed)>);
        // Sized for an even spread and a quarter more, so that a large submission's parts do not
        // grow (and copy their commands) again and again; a small one allocates only what it uses.
        let expected = if envelopes.len() < 2 * shard_count { 0 } else { envelopes.len() / shard_count * 5 / 4 };
        let mut parts: Vec<Part> = (0..shard_count).map(|_| (Vec::with_capacity(expected), Vec::with_capacity(expected))).collect();
        // Each command's own order number's key is computed `PREFETCH_AHEAD` commands before it
        // is claimed, and its claim's slot asked for then: the claims' cache misses overlap.
        let mut ahead = [None; PREFETCH_AHEAD];
        for (slot, envelope) in ahead.iter_mut().zip(&envelopes) {
            *slot = own_key(envelope);
            if let Some(key) = *slot {
                self.claims.prefetch(key);
            }
        }
        let mut envelopes = envelopes.into_iter();
        for index in 0.. {
            let Some(envelope) = envelopes.next() else { break };
            let coming = envelopes.as_slice().get(PREFETCH_AHEAD - 1).and_then(own_key);
            if let Some(key) = coming {
                self.claims.prefetch(key);
            }
            let own = std::mem::replace(&mut ahead[index % PREFETCH_AHEAD], coming);
            let shard = match self.route(&envelope) {
                Ok(shard) if any_stopped && each && is_stopped(shard) => {
                    replies[index] = Some(Reply::rejected(ResultCode::ShardStopped));
                    continue;
                }
                Ok(shard) => shard,
                Err(code) => {
                    replies[index] = Some(Reply::rejected(code));
                    continue;
                }
            };
            let claim = match self.claims.claim_command(&envelope, own, shard) {
                Ok(claim) => claim,
                Err(code) => {
                    replies[index] = Some(Reply::rejected(code));
                    continue;
                }
            };
            let part = &mut parts[shard as usize];
            part.0.push(envelope);
            part.1.push((index, claim));
        }
        // A request never holds more than one batch: larger parts go as several requests.
        let batch = self.config.batch_size_max;
        let parts_left: usize = parts.iter().map(|p| p.0.len().div_ceil(batch)).sum();
        let gather = Arc::new(Mutex::new(Gather { replies, parts_left: parts_left + 1, error: None, reply: Some(reply), each }));
        let chunks = parts.into_iter().enumerate().flat_map(|(shard, (mut part, mut positions))| {
            let mut chunks = Vec::new();
            while part.len() > batch {
                let rest = part.split_off(batch);
                let rest_positions = positions.split_off(batch);
                chunks.push((shard, std::mem::replace(&mut part, rest), std::mem::replace(&mut positions, rest_positions)));
            }
            if !part.is_empty() {
                chunks.push((shard, part, positions));
            }
            chunks
        });
        for (shard, part, positions) in chunks {
            let mut part_answer = PartAnswer { gather: gather.clone(), claims: self.claims.clone(), shard, positions, answered: false };
            let on_reply: ReplyTo = Box::new(move |result| part_answer.answer(result));
            let request = ClientRequest { envelopes: part, reply: on_reply, refusable: matches!(wait, Wait::Never) };
            let refused = match wait {
                Wait::Block => self.clients[shard].send(request).err().map(|failed| (failed.0, false)),
                Wait::Never => match self.clients[shard].try_send(request) {
                    Ok(()) => None,
                    Err(TrySendError::Full(request)) => Some((request, true)),
                    Err(TrySendError::Disconnected(request)) => Some((request, false)),
                },
            };
            match refused {
                // Never queued: each command is answered `Overloaded` (its claim is released
                // like any rejected command's).
                Some((request, true)) => {
                    let replies = vec![Reply::rejected(ResultCode::Overloaded); request.envelopes.len()];
                    (request.reply)(Ok(replies));
                }
                Some((request, false)) => (request.reply)(Err(EngineError::ShardStopped(shard as ShardId))),
                None => {}
            }
        }
        gather.lock().expect("gather lock").finish_part();
    }

    /// Submits commands and waits for their replies, waiting for room in a full mailbox. For
    /// threads that may block (the clearing actor, settlement, the CLI), never async workers.
    pub fn execute(&self, envelopes: Vec<Envelope>) -> Result<Vec<Reply>, EngineError> {
        let (sender, receiver) = bounded(1);
        self.submit_with(
            envelopes,
            Box::new(move |result| {
                let _ = sender.send(result);
            }),
            Wait::Block,
            false,
        );
        receiver.recv().map_err(|_| EngineError::ShardStopped(ShardId::MAX))?
    }

    /// Submits one command and waits for its reply.
    pub fn execute_one(&self, envelope: Envelope) -> Result<Reply, EngineError> {
        Ok(self.execute(vec![envelope])?.pop().expect("one reply per command"))
    }

    /// Sends a shard-wide command (maturing, expiring freezes) to every shard; one reply each.
    pub fn broadcast(&self, envelope: Envelope) -> Result<Vec<Reply>, EngineError> {
        if !matches!(envelope.command, Command::Mature { .. } | Command::Settle { .. } | Command::ExpireFreezes | Command::AutoConfirm { .. }) {
            return Err(EngineError::NotAClientCommand);
        }
        if self.shut_down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(EngineError::ShardStopped(ShardId::MAX));
        }
        let mut receivers = Vec::new();
        for (shard, clients) in self.clients.iter().enumerate() {
            let (sender, receiver) = bounded(1);
            let reply: ReplyTo = Box::new(move |result| {
                let _ = sender.send(result);
            });
            clients
                .send(ClientRequest { envelopes: vec![envelope.clone()], reply, refusable: false })
                .map_err(|_| EngineError::ShardStopped(shard as ShardId))?;
            receivers.push(receiver);
        }
        let mut replies = Vec::new();
        for (shard, receiver) in receivers.into_iter().enumerate() {
            let result = receiver.recv().map_err(|_| EngineError::ShardStopped(shard as ShardId))?;
            replies.push(result?.pop().expect("one reply"));
        }
        Ok(replies)
    }

    /// Runs `read` on a shard's thread between batches and returns its result. Blocking (call it
    /// off async workers); a control channel still full after `READ_QUEUE_WAIT` is `Overloaded`.
    ///
    /// History out of memory that `read` cannot read back because the store did not answer (a
    /// `StorageFault` that is not `damaged`) fails this read only, as `EngineError::Storage`: the
    /// shard goes on (a read changes nothing; the blob is sound and is read again next time). A
    /// damaged blob (missing, or not what was written) stops the shard, as a batch that needs it
    /// does: the shard's guard marks it and the next start recovers from before it. (Going on
    /// would have every later checkpoint name the damaged blob, and pruning would soon delete the
    /// last checkpoint without it.)
    pub fn read_shard<R: Send + 'static>(&self, shard: ShardId, read: impl FnOnce(&ShardState) -> R + Send + 'static) -> Result<R, EngineError> {
        let (sender, receiver) = bounded(1);
        let control = self.controls.get(shard as usize).ok_or(EngineError::ShardStopped(shard))?;
        let message = Control::Read(Box::new(move |state| {
            // Unwind safety: `read` sees the state only by shared reference; the only interior
            // mutability it may reach is a cold piece's read-back cache (set whole or not at all)
            // and the history reader's counter.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(state))) {
                Ok(value) => {
                    let _ = sender.send(Ok(value));
                }
                Err(payload) => match payload.downcast_ref::<crate::ledger::growth::StorageFault>() {
                    Some(fault) if !fault.damaged => {
                        let _ = sender.send(Err(fault.clone()));
                    }
                    // A damaged blob, or a bug: it stops the shard (its thread's guard reports it
                    // and marks a damaged blob).
                    _ => std::panic::resume_unwind(payload),
                },
            }
        }));
        match control.send_timeout(message, READ_QUEUE_WAIT) {
            Ok(()) => {}
            Err(SendTimeoutError::Timeout(_)) => return Err(EngineError::Overloaded(shard)),
            Err(SendTimeoutError::Disconnected(_)) => return Err(EngineError::ShardStopped(shard)),
        }
        match receiver.recv() {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(fault)) => {
                tracing::error!(shard, "a read of the shard failed: {fault}");
                Err(EngineError::Storage(fault.to_string()))
            }
            Err(_) => Err(EngineError::ShardStopped(shard)),
        }
    }

    /// The idempotency record of `key` on `shard`: from the shard's memory, else its cold row in
    /// the store (`cold`). Blocking, like `read_shard`. A record sealed by a checkpoint leaves
    /// memory only once its row is durable, so nothing falls between the two reads.
    pub fn idempotency_record(&self, shard: ShardId, key: u128) -> Result<Option<IdempotencyRecord>, EngineError> {
        if let Some(record) = self.read_shard(shard, move |state| state.idempotency_record(&key))? {
            return Ok(Some(record));
        }
        // A key the filter rules out has no row (its bit is set right after the row's write,
        // before the record leaves memory): no store read for a new number.
        if !self.cold_filter.may_contain(key) {
            return Ok(None);
        }
        Ok(crate::cold::read_record(&*self.store, shard, key)?)
    }

    /// The cold row of `key`, whichever shard holds it (a query by order number over all shards
    /// reads it once, then asks each shard's memory).
    pub fn cold_idempotency_row(&self, key: u128) -> Result<Option<crate::cold::ColdRow>, EngineError> {
        Ok(crate::cold::read_row(&*self.store, key)?)
    }

    /// How many order numbers the router holds claims of (the hot ones: cold ones are forgotten).
    pub fn claims_held(&self) -> usize {
        self.claims.len()
    }

    /// Whether `shutdown` has begun (every shard stops): a shard that stopped alone (a failed
    /// write, a damaged piece) is not the engine stopping.
    pub fn is_shut_down(&self) -> bool {
        self.shut_down.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every shard that has stopped, and why (a failed write, or a panic).
    pub fn failures(&self) -> Vec<(ShardId, ShardFailure)> {
        self.counters.iter().enumerate().filter_map(|(shard, c)| c.failure().map(|f| (shard as ShardId, f))).collect()
    }

    /// Reads and stop requests queued in a shard's control channel.
    pub fn control_depth(&self, shard: ShardId) -> usize {
        self.controls.get(shard as usize).map_or(0, |s| s.len())
    }

    /// Messages queued in a shard's channel from the other shards.
    pub fn inbound_depth(&self, shard: ShardId) -> usize {
        self.inbound_depths.get(shard as usize).map_or(0, |s| s.len())
    }

    /// Published figures of every shard.
    /// The filter of cold order numbers: its bytes, its segments, and whether it stopped
    /// growing (`cold::ColdFilter`).
    pub fn cold_filter_figures(&self) -> (usize, usize, bool) {
        (self.cold_filter.bytes(), self.cold_filter.segment_count(), self.cold_filter.stopped())
    }

    pub fn counters(&self) -> &[Arc<ShardCounters>] {
        &self.counters
    }

    /// Mailbox depth (queued client requests) of a shard.
    pub fn mailbox_depth(&self, shard: ShardId) -> usize {
        self.clients[shard as usize].len()
    }

    /// Waits until every cross-shard credit sent before this call has been applied by its
    /// target shard. Credits sent afterwards do not hold it up, so continuous cross-shard load
    /// cannot starve it (unlike `wait_quiescent`). What settlement waits for.
    pub fn wait_credits_applied(&self, timeout: Duration) -> Result<(), EngineError> {
        let deadline = Instant::now() + timeout;
        let shards = self.config.shard_count;
        // sent[source][target]: the last sequence each shard had sent each other shard.
        let mut sent = Vec::with_capacity(shards as usize);
        for shard in 0..shards {
            sent.push(self.read_shard(shard, |state| state.outboxes.iter().map(|o| o.next_sequence).collect::<Vec<u64>>())?);
        }
        loop {
            let mut behind = 0;
            for target in 0..shards {
                let applied = self.read_shard(target, |state| state.inbound_applied.clone())?;
                for source in 0..shards as usize {
                    behind += sent[source][target as usize].saturating_sub(applied[source]);
                }
            }
            if behind == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(EngineError::Timeout(format!("{behind} credits sent before the wait still in flight")));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits until no credit is in flight between shards (every outbox acknowledged).
    pub fn wait_quiescent(&self, timeout: Duration) -> Result<(), EngineError> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut pending = 0;
            for shard in 0..self.config.shard_count {
                pending += self.read_shard(shard, |state| state.outbox_pending())?;
            }
            if pending == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(EngineError::Timeout(format!("{pending} credits still in flight")));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Stops every shard after it has finished what is queued, and waits for the threads.
    pub fn shutdown(&self) {
        self.shut_down.store(true, std::sync::atomic::Ordering::SeqCst);
        for control in &self.controls {
            let _ = control.send(Control::Shutdown);
        }
        let threads: Vec<JoinHandle<()>> = self.threads.lock().expect("threads lock").drain(..).collect();
        let stopping = !threads.is_empty();
        for thread in threads {
            let _ = thread.join();
        }
        // The shards have written their last checkpoints: the filter of every cold row is saved
        // for the next start (which checks it still matches those checkpoints). Not after a
        // shard stopped on a fault: a checkpoint thread it left may still be writing (its rows'
        // bits set only after its rows), so the next start scans the rows instead; nor after a
        // shard's last checkpoint failed (defence in depth: the bits of its durable rows are set
        // right after them, but a filter that may lack a row's bit is never saved as complete).
        let all_ran = self
            .counters
            .iter()
            .all(|c| !c.stopped.load(std::sync::atomic::Ordering::SeqCst) && !c.checkpoint_failed.load(std::sync::atomic::Ordering::SeqCst));
        if stopping && all_ran && !self.store.is_poisoned() {
            if let Err(error) = self.cold_filter.save(&*self.store, self.config.shard_count) {
                tracing::warn!("the cold-row filter was not saved (the next start scans the rows): {error}");
            }
        }
    }

    /// The shard a command goes to, or the code it is rejected with before reaching one.
    fn route(&self, envelope: &Envelope) -> Result<ShardId, ResultCode> {
        let shard_count = self.config.shard_count;
        let command = &envelope.command;
        if let Command::Payment { payer, amount, payees, splits, currency, .. }
        | Command::RequestDirectPayment { payer, amount, payees, splits, currency, .. } = command
        {
            check_amount(*amount)?;
            check_legs(*payer, *amount, payees, splits)?;
            let payer_shard = payer.shard(shard_count);
            for leg in payees.iter().chain(splits.iter()) {
                self.check_remote_receiver(envelope.platform, payer_shard, leg, *currency)?;
            }
        }
        if let Command::BatchPayment { payer, orders, currency, .. } = command {
            let payer_shard = payer.shard(shard_count);
            for order in orders {
                check_amount(order.amount)?;
                check_legs(*payer, order.amount, &order.payees, &order.splits)?;
                for leg in order.payees.iter().chain(order.splits.iter()) {
                    self.check_remote_receiver(envelope.platform, payer_shard, leg, *currency)?;
                }
            }
        }
        if let Command::Adjust { source, target, currency, amount, .. } = command {
            // Out of suspense: the stripe of the shard named; a target on another shard is
            // checked against the directory like a payee there.
            let source_shard = match source {
                AdjustmentSide::Account(account) => account.shard(shard_count),
                AdjustmentSide::Suspense(shard) if *shard < shard_count => *shard,
                AdjustmentSide::Suspense(_) => return Err(ResultCode::AccountNotFound),
            };
            if let AdjustmentSide::Account(account) = target {
                self.check_remote_receiver(envelope.platform, source_shard, &Leg { account: *account, amount: *amount }, *currency)?;
            }
            return Ok(source_shard);
        }
        if let Command::OpenAccount { owner, .. } = command {
            // All of one member's accounts live on one shard, so "one per currency" is a local check.
            let mut hasher_input = [0u8; 12];
            hasher_input[..4].copy_from_slice(&envelope.platform.to_le_bytes());
            hasher_input[4..].copy_from_slice(&owner.to_le_bytes());
            return Ok((xxhash_rust::xxh3::xxh3_64(&hasher_input) % shard_count as u64) as ShardId);
        }
        if let Some(account) = command.debited_account() {
            return Ok(account.shard(shard_count));
        }
        if let Command::CreditSuspense { shard, .. }
        | Command::ChargeChannelFees { shard, .. }
        | Command::VerificationDeposit { shard, .. }
        | Command::AutoConfirmChunk { shard, .. }
        | Command::AutoConfirmStep { shard, .. }
        | Command::ExpireFreezesChunk { shard, .. }
        | Command::SettleChunk { shard, .. } = command
        {
            return Ok(*shard % shard_count);
        }
        if let Some(order) = command.target_order() {
            return Ok(order.shard(shard_count));
        }
        // Shard-wide commands go through `broadcast`; internal ones never come from clients.
        Err(ResultCode::NotRoutable)
    }

    /// Checks a receiver on another shard against the directory (the owning shard checks its own).
    fn check_remote_receiver(&self, platform: u32, payer_shard: ShardId, leg: &Leg, currency: crate::money::CurrencyId) -> Result<(), ResultCode> {
        let shard_count = self.config.shard_count;
        if leg.account.shard(shard_count) == payer_shard {
            return Ok(());
        }
        let entry = self.directory.get(leg.account, shard_count).ok_or(ResultCode::PayeeNotFound)?;
        if platform != 0 && entry.platform != platform {
            return Err(ResultCode::PayeeNotFound);
        }
        credit_refusal_by(entry.currency, entry.status, currency).map_or(Ok(()), Err)
    }
}

/// Recovers every shard (in parallel: its newest usable checkpoint, then the journal after it)
/// and writes genesis for shards that have none.
fn recover_all(store: &Arc<dyn Store>, config: &EngineConfig, filter: &crate::cold::ColdFilter) -> Result<Vec<Recovered>, EngineError> {
    let results: Vec<Result<Recovered, EngineError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..config.shard_count)
            .map(|shard| {
                // History a checkpoint kept as blobs stays out of memory until used.
                let history = crate::checkpoint::HistoryReader::new(store.clone(), shard);
                scope.spawn(move || recover_shard_filtered(&**store, shard, Some(filter), Some(&history)).map_err(EngineError::from))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("replay thread")).collect()
    });
    let mut recovered = Vec::new();
    for (shard, result) in results.into_iter().enumerate() {
        let mut shard_recovered = result?;
        for reason in &shard_recovered.skipped {
            tracing::warn!(shard, "skipped a checkpoint at start: {reason}");
        }
        let Recovered { state, head, timestamp, .. } = &mut shard_recovered;
        if head.sequence == 0 {
            let genesis = Envelope {
                platform: 0,
                out_order_no: None,
                command: Command::Genesis {
                    shard: shard as ShardId,
                    shard_count: config.shard_count,
                    currencies: config.currencies.clone(),
                    utc_offset_seconds: config.utc_offset_seconds,
                },
            };
            let mut fx = Effects::default();
            *timestamp = wall_clock_micros();
            state.apply(&genesis, *timestamp, &mut fx);
            let sequence = 1;
            let mut encoded = Vec::new();
            let envelopes = [genesis];
            let record = BatchRecordRef {
                shard: shard as ShardId,
                sequence,
                timestamp: *timestamp,
                previous_hash: ZERO_HASH,
                envelopes: &envelopes,
                entries: &[],
                postings: &[],
            };
            let hash = encode(&record, &mut encoded);
            store.write(&[(&batch_key(shard as ShardId, sequence), &encoded)])?;
            *head = ChainHead { sequence, hash };
        } else if state.currencies != config.currencies || state.utc_offset_seconds != config.utc_offset_seconds {
            return Err(EngineError::Config(format!("shard {shard} was created with other currencies or business-day offset than configured")));
        }
        recovered.push(shard_recovered);
    }
    Ok(recovered)
}
