//! The shard actor: one thread owns one `ShardState`, drains its mailbox in batches, writes one
//! durable storage batch per round (group commit) and only then replies and sends its outbox.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{never, select, Receiver, Sender};
use storage::Store;

use crate::directory::Directory;
use crate::journal::{batch_key, encode, BatchRecordRef};
use crate::ledger::command::{Command, Envelope};
use crate::ledger::state::{Effects, ShardState};
use crate::ledger::types::{RemoteCredit, Reply, ShardId, Timestamp};
use crate::result::ResultCode;
use crate::EngineError;

/// Where a client's replies go: called once, after the batch holding its commands is durable.
pub type ReplyTo = Box<dyn FnOnce(Result<Vec<Reply>, EngineError>) + Send>;

/// Commands from a client, applied in order, answered together.
pub struct ClientRequest {
    pub envelopes: Vec<Envelope>,
    pub reply: ReplyTo,
}

/// Messages between shards (unbounded channel: their volume is bounded by the senders' outbox limit).
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
    pub stopped: AtomicBool,
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
            stopped: AtomicBool::default(),
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
}

/// Everything one shard thread needs.
pub struct Shard {
    pub state: ShardState,
    pub sequence: u64,
    pub last_timestamp: Timestamp,
    pub store: Arc<dyn Store>,
    pub clients: Receiver<ClientRequest>,
    pub inbound: Receiver<Inbound>,
    pub control: Receiver<Control>,
    pub peers: Vec<Sender<Inbound>>,
    pub directory: Arc<Directory>,
    pub counters: Arc<ShardCounters>,
    pub limits: ShardLimits,
}

/// Reusable buffers of the loop: nothing on the hot path allocates once they have grown.
struct Round {
    envelopes: Vec<Envelope>,
    replies: Vec<Reply>,
    waiting: Vec<(ReplyTo, usize, usize)>,
    deferred_acks: Vec<Envelope>,
    fx: Effects,
    encoded: Vec<u8>,
    /// Highest outbox sequence already sent to each target.
    sent: Vec<u64>,
    /// Credits applied from each source before this round (to know whom to acknowledge).
    inbound_before: Vec<u64>,
    /// When the oldest deferred acknowledgement arrived.
    acks_since: Option<Instant>,
    /// Per batch: commands by (kind, result code), for metrics.
    outcomes: Vec<u32>,
}

/// The cell of (command kind, result code) in `ShardCounters::outcomes`.
pub fn outcome_cell(kind_code: u8, code: ResultCode) -> usize {
    kind_code as usize * ResultCode::ALL.len() + code.number() as usize
}

impl Shard {
    /// Runs the loop until shutdown or a storage failure.
    pub fn run(mut self) {
        let shard_count = self.state.shard_count as usize;
        let mut round = Round {
            envelopes: Vec::with_capacity(self.limits.batch_size_max),
            replies: Vec::with_capacity(self.limits.batch_size_max),
            waiting: Vec::new(),
            deferred_acks: Vec::new(),
            fx: Effects::default(),
            encoded: Vec::new(),
            sent: self.state.outboxes.iter().map(|o| o.acknowledged).collect(),
            inbound_before: Vec::with_capacity(shard_count),
            acks_since: None,
            outcomes: vec![0; Command::KIND_NAMES.len() * ResultCode::ALL.len()],
        };
        assert_eq!(round.sent.len(), shard_count);
        // Whatever the previous run left unacknowledged is sent again; receivers skip duplicates.
        self.send_outbox(&mut round.sent);
        let mut shutting_down = false;
        loop {
            let backpressured = self.state.outbox_pending() > self.limits.outbox_pending_max;
            let clients = if backpressured || shutting_down { never() } else { self.clients.clone() };
            // Deferred acknowledgements are flushed once the oldest has waited `ack_flush_ms`,
            // whatever else wakes the loop (reads must not starve them).
            let flush_after = Duration::from_millis(self.limits.ack_flush_ms);
            let mut timeout = round.acks_since.map_or(Duration::from_secs(3600), |since| flush_after.saturating_sub(since.elapsed()));
            if shutting_down {
                // Finish what is queued without waiting for anything new.
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
            let flush_acks = round.acks_since.is_some_and(|since| since.elapsed() >= flush_after);
            self.drain(&mut round);
            let only_acks = round.envelopes.is_empty();
            if only_acks && !round.deferred_acks.is_empty() && (flush_acks || backpressured || shutting_down) {
                round.envelopes.append(&mut round.deferred_acks);
            }
            if shutting_down && round.envelopes.is_empty() && self.clients.is_empty() && self.inbound.is_empty() {
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
            if !self.commit(&mut round) {
                self.refuse_until_shutdown();
                return;
            }
        }
    }

    /// After a storage failure: answer every request with an error until the engine shuts down.
    /// The thread stays, rather than exiting, so that no request can be queued to a mailbox
    /// nobody reads (its caller would wait forever). Reads are refused too: the in-memory state
    /// holds the batch that was never written.
    fn refuse_until_shutdown(&self) {
        let shard = self.state.shard;
        loop {
            select! {
                recv(self.clients) -> message => match message {
                    Ok(request) => (request.reply)(Err(EngineError::ShardStopped(shard))),
                    Err(_) => return,
                },
                recv(self.control) -> message => match message {
                    Ok(Control::Read(_)) => {}
                    Ok(Control::Shutdown) | Err(_) => break,
                },
                recv(self.inbound) -> _ => {}
            }
        }
        while let Ok(request) = self.clients.try_recv() {
            (request.reply)(Err(EngineError::ShardStopped(shard)));
        }
    }

    fn take_inbound(&mut self, message: Inbound, round: &mut Round) {
        match message {
            Inbound::Credits(credits) => {
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
    }

    /// Takes what is already queued, without waiting, up to the batch limit.
    fn drain(&mut self, round: &mut Round) {
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
        let backpressured = self.state.outbox_pending() > self.limits.outbox_pending_max;
        if backpressured {
            return;
        }
        while round.envelopes.len() < self.limits.batch_size_max {
            match self.clients.try_recv() {
                Ok(request) => self.take_client(request, round),
                Err(_) => break,
            }
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
        for envelope in &round.envelopes {
            let reply = self.state.apply(envelope, now, &mut round.fx);
            round.replies.push(reply);
        }
        self.sequence += 1;
        self.state.note_batch(self.sequence, &round.fx.postings);
        let record = BatchRecordRef {
            shard: self.state.shard,
            sequence: self.sequence,
            timestamp: now,
            envelopes: &round.envelopes,
            entries: &round.fx.entries,
            postings: &round.fx.postings,
        };
        encode(&record, &mut round.encoded);
        let key = batch_key(self.state.shard, self.sequence);
        let started = Instant::now();
        let written = self.store.write(&[(&key, &round.encoded)]);
        let fsync_us = started.elapsed().as_micros() as u64;
        if let Err(error) = written {
            // Invariant 4: a failed write stops the shard; nothing in this batch is acknowledged.
            self.counters.stopped.store(true, Ordering::SeqCst);
            for (reply, _, _) in round.waiting.drain(..) {
                reply(Err(EngineError::Storage(error.to_string())));
            }
            return false;
        }
        self.publish(round.envelopes.len() as u64, fsync_us);
        self.record_outcomes(round);
        for (account, platform, currency, status) in round.fx.directory.drain(..) {
            self.directory.set(account, self.state.shard_count, platform, currency, status);
        }
        for (reply, start, count) in round.waiting.drain(..) {
            reply(Ok(round.replies[start..start + count].to_vec()));
        }
        round.envelopes.clear();
        self.send_outbox(&mut round.sent);
        for (source, before) in round.inbound_before.iter().enumerate() {
            let applied = self.state.inbound_applied[source];
            if applied > *before {
                let _ = self.peers[source].send(Inbound::Acknowledged { target: self.state.shard, sequence: applied });
            }
        }
        true
    }

    /// Sends every outbox credit not yet sent to its target shard, one message per target.
    fn send_outbox(&mut self, sent: &mut [u64]) {
        for (target, outbox) in self.state.outboxes.iter().enumerate() {
            let first_unsent = outbox.pending.partition_point(|c| c.sequence <= sent[target]);
            if first_unsent == outbox.pending.len() {
                continue;
            }
            // At most a batch of credits per message, so that a receiving batch stays bounded.
            let fresh: Vec<RemoteCredit> = outbox.pending.range(first_unsent..).copied().collect();
            for chunk in fresh.chunks(self.limits.batch_size_max) {
                sent[target] = chunk.last().expect("chunks are not empty").sequence;
                // A stopped peer drops the message; the credits stay pending and are resent on restart.
                let _ = self.peers[target].send(Inbound::Credits(chunk.to_vec()));
            }
        }
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
        c.last_sequence.store(self.sequence, Ordering::Relaxed);
        c.outbox_pending.store(self.state.outbox_pending() as u64, Ordering::Relaxed);
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.commands.fetch_add(batch_size, Ordering::Relaxed);
        c.last_batch_size.store(batch_size, Ordering::Relaxed);
        c.largest_batch_size.fetch_max(batch_size, Ordering::Relaxed);
        c.last_fsync_us.store(fsync_us, Ordering::Relaxed);
        c.largest_fsync_us.fetch_max(fsync_us, Ordering::Relaxed);
        c.total_fsync_us.fetch_add(fsync_us, Ordering::Relaxed);
    }
}
