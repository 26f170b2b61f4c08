//! The clearing actor: one thread owns routing's channel table (channels, daily caps, health),
//! the payout book and the payouts waiting for a bank's verdict, the settlement schedule and the
//! operator's cases. Everything that changes them is a message in its bounded mailbox with a
//! typed reply: route and submit a payout, a bank's verdict, a timeout tick, a day's settlement,
//! a statement file to reconcile, a channel added or changed, cases opened or resolved. Handlers, the CLI and the schedule send messages; none of them locks clearing state,
//! so a verdict, a timeout and a fallback for one payout are handled one after the other.
//!
//! The actor waits for the engine on the payout commands it submits (a group commit, a few
//! milliseconds; payouts are not the hot path). A settlement run and a reconciliation (a file
//! may hold millions of lines), which can take seconds, run on worker threads that report back
//! as messages; a reconciliation's worker asks the actor to open the cases it found. One
//! reconciliation runs at a time (two of one channel would race on its carried lines); a few
//! more wait their turn.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bank::{BankChannel, BankStatus, Request};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use engine::ledger::command::{Command, Envelope, OutOrderNo};
use engine::ledger::types::{AccountId, OrderDetail, OrderId, OrderStatus};
use engine::money::{CurrencyId, CurrencySpec, Minor};
use engine::result::ResultCode;
use engine::Engine;
use storage::Store;
use tokio::sync::oneshot;

use crate::calendar::Clock;
use crate::cases::{Case, CaseBook, CaseFilter, CaseOpening, CasePage, HoldFate, Resolution};
use crate::channels::{At, Channel, ChannelChange, ChannelReport, ChannelSet, ChannelSpec, ChannelTable, Decision, Fallback, RouteRequest};
use crate::error::ClearingError;
use crate::payouts::{HoldDue, HoldsDue, PayoutBook, PayoutNote, PayoutOutcome, PayoutRequest, PayoutVerdict, VerdictOutcome};
use crate::reconcile::ReconcileReport;
use crate::settlement::{PlatformTerms, Schedule, SettlementSummary};

/// The platforms' terms for a business day (the gateway owns platforms and their rules).
pub type TermsSource = Arc<dyn Fn(u32) -> Vec<PlatformTerms> + Send + Sync>;

/// How the actor runs.
#[derive(Clone, Debug)]
pub struct ClearingConfig {
    /// Messages waiting at most; a full mailbox answers `Overloaded`.
    pub mailbox_capacity: usize,
    /// How often the actor looks for overdue payouts and a due settlement.
    pub tick: Duration,
    /// The daily settlement's cut-off (business-local minutes after midnight), if scheduled.
    pub settlement_cutoff_minute: Option<u32>,
    /// Days past today (business-local) a run by hand may name: 0 in production, where a later
    /// date would mature every platform's income early and release every escrow at once; tests
    /// of T+N and auto-confirm set more (`[settlement] days_ahead_max`).
    pub settlement_days_ahead_max: u32,
}

impl Default for ClearingConfig {
    fn default() -> ClearingConfig {
        ClearingConfig { mailbox_capacity: 4_096, tick: Duration::from_millis(200), settlement_cutoff_minute: None, settlement_days_ahead_max: 0 }
    }
}

/// Reconciliations waiting for the one in progress, at most; more answer `Overloaded`.
pub const RECONCILIATIONS_WAITING_MAX: usize = 4;

/// Cases a reconciliation's worker hands the actor in one message (one synced write).
const CASES_PER_MESSAGE: usize = 8_189;
/// Credits sent to suspense turned into cases per tick (`Actor::open_diversion_cases`).
const DIVERSIONS_PER_TICK: usize = 256;
/// Rounds of `DIVERSIONS_PER_TICK` notices a verdict turns into cases at most before it looks
/// for its payout's suspense case (`Actor::returned_to_suspense`).
const DIVERSION_ROUNDS_MAX: usize = 8;

type Reply<T> = oneshot::Sender<Result<T, ClearingError>>;

/// A statement file to reconcile: its channel and business day.
struct ReconcileJob {
    channel: u16,
    day: u32,
    file: Vec<u8>,
    /// A statement an operator pasted: checked, but its verdicts on waiting orders are cases.
    by_hand: bool,
}

enum Message {
    Payout(Box<PayoutRequest>, Reply<PayoutOutcome>),
    Quote(RouteRequest, Reply<Decision>),
    Verdict(PayoutVerdict, Reply<VerdictOutcome>),
    /// A payout's verdict read from a reconciled statement (from the reconciliation worker).
    StatementVerdict(PayoutVerdict, Reply<VerdictOutcome>),
    AddChannel(Box<ChannelSpec>, Reply<Channel>),
    UpdateChannel(String, Box<ChannelChange>, Reply<Channel>),
    Report(Reply<Vec<ChannelReport>>),
    Notes(u32, Vec<String>, Reply<Vec<Option<PayoutNote>>>),
    Settle(u32, Vec<PlatformTerms>, Reply<SettlementSummary>),
    SettlementFinished {
        day: u32,
        result: Result<SettlementSummary, ClearingError>,
        reply: Option<Reply<SettlementSummary>>,
    },
    ScheduleState(Reply<Option<Schedule>>),
    Figures(Reply<ClearingFigures>),
    Reconcile(Box<ReconcileJob>, Reply<ReconcileReport>),
    ReconcileFinished(Result<ReconcileReport, ClearingError>, Reply<ReconcileReport>),
    OpenCases(Vec<CaseOpening>, Reply<usize>),
    CasesPage(CaseFilter, Option<String>, usize, Reply<CasePage>),
    ResolveCase(String, Resolution, Option<HoldFate>, Reply<Case>),
    Trip(u16, Duration, Reply<()>),
    Stop,
}

/// What the clearing actor reports to `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClearingFigures {
    /// Daily settlement runs that failed since the start (each is tried again).
    pub settlement_failures_total: u64,
    /// Failed runs of the next business day in a row (0 once a run succeeds).
    pub settlement_failures_in_a_row: u32,
    /// Reconciliation and suspense cases waiting for an operator.
    pub cases_open: u64,
}

/// A handle on the clearing actor; cheap to clone.
#[derive(Clone)]
pub struct Clearing {
    mailbox: Sender<Message>,
    channels: Arc<ArcSwap<ChannelSet>>,
    bank: Arc<dyn BankChannel>,
    store: Arc<dyn Store>,
    /// One collection note checked and written at a time: two requests with one number and
    /// different cards, at once, could otherwise both find none and both write.
    noting: Arc<std::sync::Mutex<()>>,
    clock: Arc<dyn Clock>,
    resumed: usize,
}

/// Notes the channel fee of money-in order `order` at its channel's tariff now
/// (`fees::note_at_tariff`), before its success is applied; nothing for an order that is not a
/// money-in order waiting for its verdict (the engine answers those).
pub fn note_money_in_fee(engine: &Engine, store: &dyn Store, channels: &ChannelSet, order: OrderId) -> Result<(), ClearingError> {
    let shard = order.shard(engine.config().shard_count);
    let found = engine.read_shard(shard, move |state| {
        state
            .order(order)
            .filter(|o| o.status == OrderStatus::Pending)
            .and_then(|o| money_in_channel(&o.detail).map(|channel| (channel, o.created_at, o.amount)))
    })?;
    if let Some((channel, created_at, amount)) = found {
        crate::fees::note_at_tariff(store, channels.get(channel), engine.config().utc_offset_seconds, order, created_at, amount)
            .map_err(|e| ClearingError::Storage(e.to_string()))?;
    }
    Ok(())
}

/// The channel a money-in order (a recharge, or a direct payment through a channel) came through.
fn money_in_channel(detail: &OrderDetail) -> Option<u16> {
    crate::settlement::channel_of(detail).filter(|_| !matches!(detail, OrderDetail::Withdrawal { .. }))
}

/// Everything the actor owns.
struct Actor {
    engine: Arc<Engine>,
    store: Arc<dyn Store>,
    bank: Arc<dyn BankChannel>,
    clock: Arc<dyn Clock>,
    table: ChannelTable,
    published: Arc<ArcSwap<ChannelSet>>,
    /// Payouts handed to a channel and not answered yet: the channel, when its answer is due and
    /// when it was handed to the bank (its verdict's latency).
    outstanding: HashMap<OrderId, Outstanding>,
    /// Money-in verdicts the bank kept (its callbacks lost) that the engine did not take at a
    /// start: tried again each tick until it does (money in has no watchdog).
    kept_verdicts: Vec<(OrderId, bool)>,
    schedule: Option<Schedule>,
    terms: TermsSource,
    /// The day of the settlement run in progress, if one is.
    running: Option<u32>,
    /// Days past today a run by hand may name (`ClearingConfig::settlement_days_ahead_max`).
    days_ahead_max: u32,
    /// The operator's cases (suspense, reconciliation).
    cases: CaseBook,
    /// A reconciliation is in progress on a worker; these wait their turn.
    reconciling: bool,
    waiting: VecDeque<(ReconcileJob, Reply<ReconcileReport>)>,
    mailbox: Sender<Message>,
}

impl Clearing {
    /// Starts the actor: counts today's payouts against their daily caps and hands the bank again
    /// what still waits for its verdict after a restart (see `Actor::resume`).
    pub fn start(
        engine: Arc<Engine>,
        store: Arc<dyn Store>,
        bank: Arc<dyn BankChannel>,
        table: ChannelTable,
        clock: Arc<dyn Clock>,
        terms: TermsSource,
        config: ClearingConfig,
    ) -> Result<Clearing, ClearingError> {
        let published = Arc::new(ArcSwap::from_pointee(table.set()));
        let (mailbox, inbox) = bounded(config.mailbox_capacity.max(1));
        let schedule = match config.settlement_cutoff_minute {
            Some(cutoff) => {
                // A record that cannot be read: the schedule starts as on a new store (today's
                // run at its cut-off), and says so; it never keeps the server from starting.
                let last_success = crate::settlement::last_scheduled_success(store.as_ref()).unwrap_or_else(|error| {
                    tracing::error!("settlement schedule: {error}; missed days are not made up for");
                    None
                });
                Some(Schedule::new(cutoff, table.calendar(), clock.now_micros(), last_success))
            }
            None => None,
        };
        match crate::payouts::CollectionNotes::drop_orphans_of_earlier_builds(store.as_ref(), &engine) {
            Ok(0) => {}
            Ok(dropped) => tracing::info!(dropped, "collection notes of earlier builds without an order dropped"),
            Err(error) => tracing::error!("collection notes of earlier builds not checked: {error}"),
        }
        let mut actor = Actor {
            engine,
            cases: CaseBook::load(store.as_ref())?,
            reconciling: false,
            waiting: VecDeque::new(),
            store: store.clone(),
            bank: bank.clone(),
            clock: clock.clone(),
            table,
            published: published.clone(),
            outstanding: HashMap::new(),
            kept_verdicts: Vec::new(),
            schedule,
            terms,
            running: None,
            days_ahead_max: config.settlement_days_ahead_max,
            mailbox: mailbox.clone(),
        };
        actor.publish();
        actor.finish_holds_due()?;
        let resumed = actor.resume()?;
        let tick = config.tick;
        std::thread::Builder::new().name("clearing".into()).spawn(move || actor.run(&inbox, tick)).map_err(|e| ClearingError::Storage(e.to_string()))?;
        Ok(Clearing { mailbox, channels: published, bank, clock, resumed, store, noting: Arc::default() })
    }

    /// Notes collection `number` of `platform` (its card, account and amount) durably, before
    /// its recharge is submitted to the engine: a start then hands it to the bank again as the
    /// collection it is. A synced write: call it off the async workers.
    /// Answers whether it wrote the note (`false`: the same note was there, a repeated request);
    /// a note of this number naming another card, account or amount is `IdempotencyConflict`.
    pub fn note_collection(&self, platform: u32, number: &str, note: &crate::payouts::CollectionNote) -> Result<bool, ClearingError> {
        let _one_at_a_time = self.noting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match crate::payouts::CollectionNotes::get(self.store.as_ref(), platform, number)? {
            Some(noted) if noted.same_collection(note) => Ok(false),
            Some(_) => Err(ClearingError::IdempotencyConflict),
            None => crate::payouts::CollectionNotes::save(self.store.as_ref(), platform, number, note).map(|()| true),
        }
    }

    /// Writes `note` over the note of collection `number` of `platform`: the same collection
    /// from another bind of its card (unbound and bound again), whose first request stopped
    /// before the engine held an order (the caller checks). A synced write.
    pub fn replace_collection_note(&self, platform: u32, number: &str, note: &crate::payouts::CollectionNote) -> Result<(), ClearingError> {
        let _one_at_a_time = self.noting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        crate::payouts::CollectionNotes::save(self.store.as_ref(), platform, number, note)
    }

    /// The note of collection `number` of `platform`, if it has one (the number is that
    /// collection's).
    pub fn collection_note(&self, platform: u32, number: &str) -> Result<Option<crate::payouts::CollectionNote>, ClearingError> {
        crate::payouts::CollectionNotes::get(self.store.as_ref(), platform, number)
    }

    /// The notes of collections `numbers` of `platform`, in order (one read of the store).
    pub fn collection_notes(&self, platform: u32, numbers: &[String]) -> Result<Vec<Option<crate::payouts::CollectionNote>>, ClearingError> {
        crate::payouts::CollectionNotes::get_many(self.store.as_ref(), platform, numbers)
    }

    /// Drops the note of collection `number` of `platform` (the engine refused the order).
    pub fn forget_collection(&self, platform: u32, number: &str) -> Result<(), ClearingError> {
        crate::payouts::CollectionNotes::forget(self.store.as_ref(), platform, number)
    }

    /// How many orders waiting for a bank's verdict were handed to the bank again at start.
    pub fn resumed(&self) -> usize {
        self.resumed
    }

    /// Notes the channel fee of money-in order `order` at its channel's tariff now, before a
    /// bank's success is applied to it (`note_money_in_fee`). Blocking (reads a shard).
    pub fn note_money_in_fee(&self, engine: &Engine, order: OrderId) -> Result<(), ClearingError> {
        note_money_in_fee(engine, self.store.as_ref(), &self.channels.load(), order)
    }

    /// The channels as they are now (names, tariffs, money-in channels).
    pub fn channels(&self) -> Arc<ChannelSet> {
        self.channels.load_full()
    }

    /// The clearing clock's now, microseconds since 1970-01-01 UTC (what routing and money-in
    /// channels' windows are judged by).
    pub fn now_micros(&self) -> u64 {
        self.clock.now_micros()
    }

    /// The bank behind the channels (money in and micro-deposits go straight to it).
    pub fn bank(&self) -> &Arc<dyn BankChannel> {
        &self.bank
    }

    fn send(&self, message: Message) -> Result<(), ClearingError> {
        self.mailbox.try_send(message).map_err(|error| match error {
            TrySendError::Full(_) | TrySendError::Disconnected(_) => ClearingError::Overloaded,
        })
    }

    async fn ask<T>(&self, message: impl FnOnce(Reply<T>) -> Message) -> Result<T, ClearingError> {
        let (reply, answer) = oneshot::channel();
        self.send(message(reply))?;
        answer.await.map_err(|_| ClearingError::Overloaded)?
    }

    /// Routes a payout (or, for a repeated order number, reuses its first routing), notes it,
    /// submits it to the engine and hands it to the bank.
    pub async fn payout(&self, request: PayoutRequest) -> Result<PayoutOutcome, ClearingError> {
        self.ask(|reply| Message::Payout(Box::new(request), reply)).await
    }

    /// What routing would decide for a payout now (every candidate, why each was or was not
    /// viable, the chosen channel and its fee), reserving nothing and submitting nothing: the
    /// preview before a withdrawal is confirmed.
    pub async fn quote(&self, request: RouteRequest) -> Result<Decision, ClearingError> {
        self.ask(|reply| Message::Quote(request, reply)).await
    }

    /// A bank's verdict on a payout (its callback).
    pub async fn payout_verdict(&self, verdict: PayoutVerdict) -> Result<VerdictOutcome, ClearingError> {
        self.ask(|reply| Message::Verdict(verdict, reply)).await
    }

    /// Adds a channel at run time (stored; routing sees it at once).
    pub async fn add_channel(&self, spec: ChannelSpec) -> Result<Channel, ClearingError> {
        self.ask(|reply| Message::AddChannel(Box::new(spec), reply)).await
    }

    /// Changes a channel at run time (stored; routing sees it at once).
    pub async fn update_channel(&self, name: String, change: ChannelChange) -> Result<Channel, ClearingError> {
        self.ask(|reply| Message::UpdateChannel(name, Box::new(change), reply)).await
    }

    /// Each channel with today's usage and its health.
    pub async fn report(&self) -> Result<Vec<ChannelReport>, ClearingError> {
        self.ask(Message::Report).await
    }

    /// The payout book's notes of a platform's payouts, by order number (in the same order).
    pub async fn notes(&self, platform: u32, numbers: Vec<String>) -> Result<Vec<Option<PayoutNote>>, ClearingError> {
        self.ask(|reply| Message::Notes(platform, numbers, reply)).await
    }

    /// Runs the settlement of business day `day` (one run at a time: `Busy` while another runs).
    pub async fn settle(&self, day: u32, terms: Vec<PlatformTerms>) -> Result<SettlementSummary, ClearingError> {
        self.ask(|reply| Message::Settle(day, terms, reply)).await
    }

    /// The daily schedule's state (`None` when no cut-off is configured).
    pub async fn schedule(&self) -> Result<Option<Schedule>, ClearingError> {
        self.ask(Message::ScheduleState).await
    }

    /// The figures `/metrics` exports: settlement failures and open cases.
    pub async fn figures(&self) -> Result<ClearingFigures, ClearingError> {
        self.ask(Message::Figures).await
    }

    /// Reconciles statement `file` of `channel` for business day `day` on a worker thread: the
    /// bank's verdicts applied to orders waiting for them, the cases it found opened, the lines
    /// missing on our side carried.
    pub async fn reconcile(&self, channel: u16, day: u32, file: Vec<u8>) -> Result<ReconcileReport, ClearingError> {
        self.ask(|reply| Message::Reconcile(Box::new(ReconcileJob { channel, day, file, by_hand: false }), reply)).await
    }

    /// `reconcile` of a statement an operator pasted by hand: every line is checked as usual,
    /// but a verdict on an order still waiting for one opens a case instead of completing it
    /// (one operator's text is not the bank's word: it would credit a recharge no money came
    /// for, or fail a payout the bank paid).
    pub async fn reconcile_by_hand(&self, channel: u16, day: u32, file: Vec<u8>) -> Result<ReconcileReport, ClearingError> {
        self.ask(|reply| Message::Reconcile(Box::new(ReconcileJob { channel, day, file, by_hand: true }), reply)).await
    }

    /// Opens the cases of `openings` not open yet (one synced write); how many it opened.
    pub async fn open_cases(&self, openings: Vec<CaseOpening>) -> Result<usize, ClearingError> {
        self.ask(|reply| Message::OpenCases(openings, reply)).await
    }

    /// A page of the cases `filter` keeps with ids after `after` (resolved ones are read from
    /// the store).
    pub async fn cases_page(&self, filter: CaseFilter, after: Option<String>, limit: usize) -> Result<CasePage, ClearingError> {
        self.ask(|reply| Message::CasesPage(filter, after, limit, reply)).await
    }

    /// Records how an open case was resolved, by whom and when, with no fate said: its hold (if
    /// it has one) is released; a left channel's case keeps its payout's mark (`resolve_case`).
    pub async fn resolve_case(&self, case_id: String, resolution: Resolution) -> Result<Case, ClearingError> {
        self.ask(|reply| Message::ResolveCase(case_id, resolution, None, reply)).await
    }

    /// Resolves a case with `fate` said: its hold (if it has one) released or captured into
    /// suspense; `Release` of a left channel's case also says that channel's word was wrong
    /// (its payout may fall back again).
    pub async fn resolve_case_with(&self, case_id: String, resolution: Resolution, fate: HoldFate) -> Result<Case, ClearingError> {
        self.ask(|reply| Message::ResolveCase(case_id, resolution, Some(fate), reply)).await
    }

    /// Opens a channel's circuit for `cooldown` (operators and tests).
    pub async fn trip(&self, channel: u16, cooldown: Duration) -> Result<(), ClearingError> {
        self.ask(|reply| Message::Trip(channel, cooldown, reply)).await
    }

    /// Stops the actor after the messages already sent.
    pub fn stop(&self) {
        let _ = self.mailbox.send(Message::Stop);
    }
}

/// `work`'s result, or `Internal` if it panicked: a worker thread always reports back, so a bug
/// in one run fails that run (counted, alerted on) rather than leaving the actor waiting for a
/// report that never comes (every later run `Busy`, the nightly run skipped in silence).
fn caught<T>(worker: &str, work: impl FnOnce() -> Result<T, ClearingError>) -> Result<T, ClearingError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|payload| {
        let why = payload.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| payload.downcast_ref::<String>().cloned()).unwrap_or_default();
        tracing::error!("the {worker} worker panicked: {why}");
        Err(ClearingError::Internal(format!("the {worker} worker failed: {why}")))
    })
}

fn answer<T>(reply: Reply<T>, result: Result<T, ClearingError>) {
    // The asker may have gone (a client that hung up): the work is done either way.
    let _ = reply.send(result);
}

impl Actor {
    fn run(mut self, inbox: &Receiver<Message>, tick: Duration) {
        let mut next_tick = Instant::now() + tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match inbox.recv_timeout(wait) {
                Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(message) => self.handle(message),
                Err(RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() >= next_tick {
                self.tick();
                next_tick = Instant::now() + tick;
            }
        }
    }

    fn handle(&mut self, message: Message) {
        match message {
            Message::Payout(request, reply) => answer(reply, self.payout(*request)),
            Message::Quote(request, reply) => answer(reply, Ok(self.table.quote(&request, self.at()))),
            Message::Verdict(verdict, reply) => answer(reply, self.verdict(verdict, "failed")),
            Message::StatementVerdict(verdict, reply) => answer(reply, self.verdict(verdict, "statement")),
            Message::AddChannel(spec, reply) => {
                let added = self.table.add(self.store.as_ref(), &spec, &self.engine.config().currencies);
                self.publish();
                answer(reply, added);
            }
            Message::UpdateChannel(name, change, reply) => {
                let changed = self.table.update(self.store.as_ref(), &name, &change);
                self.publish();
                answer(reply, changed);
            }
            Message::Report(reply) => answer(reply, Ok(self.table.report(self.at()))),
            Message::Notes(platform, numbers, reply) => answer(reply, PayoutBook::get_many(self.store.as_ref(), platform, &numbers)),
            Message::Settle(day, terms, reply) => self.settle(day, terms, Some(reply)),
            Message::SettlementFinished { day, result, reply } => {
                // The run is over before anyone hears of it: the next run can start at once.
                self.running = None;
                let outcome = result.as_ref().map(|_| ()).map_err(|e| e.to_string());
                if let Err(error) = &outcome {
                    tracing::error!(business_date = %crate::calendar::date_text(day), "settlement failed: {error}");
                }
                let now = self.clock.instant();
                if let Some(schedule) = self.schedule.as_mut() {
                    let before = schedule.last_success_day;
                    schedule.finished(day, outcome, now);
                    if schedule.last_success_day != before {
                        // Kept for the next start, which runs the days it missed from there.
                        if let Err(error) = crate::settlement::save_scheduled_success(self.store.as_ref(), day) {
                            tracing::error!(business_date = %crate::calendar::date_text(day), "settlement schedule not saved: {error}");
                        }
                    }
                }
                if let Some(reply) = reply {
                    answer(reply, result);
                }
            }
            Message::ScheduleState(reply) => answer(reply, Ok(self.schedule.clone())),
            Message::Figures(reply) => answer(reply, Ok(self.figures())),
            Message::Reconcile(job, reply) => self.reconcile(*job, reply),
            Message::ReconcileFinished(result, reply) => {
                // Over before the caller hears of it: its next file waits for no one.
                self.reconciling = false;
                answer(reply, result);
                if let Some((job, reply)) = self.waiting.pop_front() {
                    self.reconcile(job, reply);
                }
            }
            Message::OpenCases(openings, reply) => {
                let opened = self.open_cases(openings);
                answer(reply, opened);
            }
            Message::CasesPage(filter, after, limit, reply) => answer(reply, self.cases.page(self.store.as_ref(), filter, after.as_deref(), limit)),
            Message::ResolveCase(case_id, resolution, fate, reply) => {
                let resolved = self.resolve_case(&case_id, resolution, fate);
                answer(reply, resolved);
            }
            Message::Trip(channel, cooldown, reply) => {
                let until = self.clock.instant() + cooldown;
                self.table.trip(channel, until);
                answer(reply, Ok(()));
            }
            Message::Stop => {}
        }
    }

    fn figures(&self) -> ClearingFigures {
        let (settlement_failures_total, settlement_failures_in_a_row) = self.schedule.as_ref().map_or((0, 0), |s| (s.failures_total, s.failures_in_a_row));
        ClearingFigures { settlement_failures_total, settlement_failures_in_a_row, cases_open: self.cases.open_count() }
    }

    fn at(&self) -> At {
        At { micros: self.clock.now_micros(), instant: self.clock.instant() }
    }

    /// Publishes the channels for readers and tells the bank.
    fn publish(&mut self) {
        let set = self.table.set();
        let profiles: Vec<bank::ChannelProfile> = set.all().iter().map(Channel::profile).collect();
        self.bank.channels_changed(&profiles);
        self.published.store(Arc::new(set));
    }

    fn timeout_of(&self, channel: u16) -> Duration {
        Duration::from_millis(self.table.get(channel).map_or(crate::channels::default_timeout_ms(), |c| c.timeout_ms))
    }

    /// Hands payout `order` to the bank through `channel` and watches for its verdict.
    fn send_payout(&mut self, order: OrderId, channel: u16, amount: Minor, currency: CurrencySpec, card_no: String) {
        self.bank.submit(Request::MoneyOut { order, channel, amount, currency, card_no });
        let sent = self.clock.instant();
        self.outstanding.insert(order, Outstanding { channel, due: sent + self.timeout_of(channel), sent });
    }

    fn payout(&mut self, request: PayoutRequest) -> Result<PayoutOutcome, ClearingError> {
        let PayoutRequest { platform, number, account, currency, spec, amount, arrival, account_type, card_id, card_no, holder_name } = request;
        let at = self.at();
        // A repeated order number keeps its first routing (the engine then replays or refuses
        // it); a new one is routed now, and the decision is noted durably before the order is
        // submitted. A refused one keeps it too when the engine keeps its refusal (journal
        // format 5: the repeat is answered that refusal, routed and counted nowhere); one
        // refused under an earlier build is routed anew.
        // A note naming another card, amount, account, arrival or account type is a conflict
        // before anything is routed, refused or not (a refused one is not overwritten by another
        // body's routing). Arrival and account type since session 68 (helper 125#2: a repeat
        // asking realtime of a payout routed standard was answered a replay saying realtime).
        let conflicts = |noted: &PayoutNote| {
            noted.card != card_id
                || (card_id == 0 && noted.card_no.as_ref().is_some_and(|n| *n != card_no))
                || noted.amount.is_some_and(|noted| noted != (amount, currency.0))
                || noted.account.is_some_and(|noted| noted != account.0)
                || noted.arrival.is_some_and(|noted| noted != arrival)
                || noted.account_type.is_some_and(|noted| noted != account_type)
                || (noted.holder_name.is_some() && noted.holder_name != holder_name)
        };
        let noted = match PayoutBook::get_any(self.store.as_ref(), platform, number.as_str())? {
            Some(note) if note.refused && !conflicts(&note) && !self.refusal_kept(platform, &number, account, &note)? => None,
            other => other,
        };
        let (note, routed_now) = match noted {
            Some(noted) if conflicts(&noted) => return Err(ClearingError::IdempotencyConflict),
            Some(noted) => (noted, false),
            None => {
                let decision = self.table.route(&RouteRequest { amount, currency: spec, arrival, account_type }, at, &[]);
                let Some((channel, fee)) = decision.chosen else {
                    let reasons: Vec<String> =
                        decision.routing.candidates.iter().map(|c| format!("{}: {}", c.channel, c.rejected_because.as_deref().unwrap_or("viable"))).collect();
                    return Err(ClearingError::NoChannel(reasons.join("; ")));
                };
                let note = PayoutNote {
                    card: card_id,
                    card_no: Some(card_no.clone()),
                    channel: Some(channel),
                    fee,
                    routing: Some(decision.routing),
                    arrival: Some(arrival),
                    account_type: Some(account_type),
                    tried: vec![channel],
                    refused: false,
                    first: Some((channel, fee)),
                    amount: Some((amount, currency.0)),
                    paid_by_left: None,
                    account: Some(account.0),
                    holder_name: holder_name.clone(),
                };
                if let Err(error) = PayoutBook::save(self.store.as_ref(), platform, number.as_str(), &note) {
                    self.table.release(channel, amount, at.micros);
                    self.table.release_probe(channel);
                    return Err(error);
                }
                (note, true)
            }
        };
        // The order as first submitted: a fallback since changed the note's channel and fee, not
        // the engine's order (which a repeat of the number must match to be its replay).
        let (channel, fee) = match (note.first, note.channel) {
            (Some(first), _) => first,
            (None, Some(channel)) => (channel, note.fee),
            (None, None) => return Err(ClearingError::Storage("a payout was noted without a channel".into())),
        };
        let command = Command::Withdraw { account, currency, amount, fee, channel };
        // An engine error leaves it unknown whether the order was applied: the note and the
        // usage stay, and a retry with the same number replays or completes it.
        let reply = self.engine.execute_one(Envelope { platform, out_order_no: Some(number), command })?;
        if !reply.is_ok() && routed_now {
            // Refused (funds, limits, status): the routing is given back, probe included, and the
            // number is routed anew next time.
            self.table.release(channel, amount, at.micros);
            self.table.release_probe(channel);
            let refused = PayoutNote { refused: true, ..note.clone() };
            if let Err(error) = PayoutBook::save(self.store.as_ref(), platform, number.as_str(), &refused) {
                tracing::error!("clearing: cannot mark a refused payout's note: {error}");
            }
        }
        if reply.is_ok() && !reply.replayed {
            if !routed_now {
                // Noted before, applied only now (a stop, or an engine error, came between the
                // note and the order): a start rebuilt the day's usage without it, so it counts
                // now (after an engine error in this process it may count twice: the cap errs
                // on the safe side).
                self.table.count_used(channel, amount, at.micros, at.micros);
            }
            self.send_payout(OrderId(reply.id), channel, amount, spec, card_no);
        }
        Ok(PayoutOutcome { reply, channel: self.table.set().name(channel), fee, routing: note.routing })
    }

    /// A channel's verdict on payout `order`: a verdict of a channel the order has left is
    /// stale; a failure falls back to the next channel if one can pay it now; otherwise the
    /// verdict completes the order. Health learns from verdicts on orders that waited for them.
    fn verdict(&mut self, verdict: PayoutVerdict, why: &'static str) -> Result<VerdictOutcome, ClearingError> {
        let PayoutVerdict { order, succeeded, channel: about } = verdict;
        let shard = order.shard(self.engine.config().shard_count);
        let found = self.engine.read_shard(shard, move |state| {
            let o = state.platform_order(0, order)?;
            let OrderDetail::Withdrawal { channel, fee } = o.detail else { return None };
            Some((channel, fee, o.status, o.amount, o.created_at, o.platform, o.out_order_no, state.currencies[o.currency.0 as usize], o.account, o.currency))
        })?;
        let Some((channel, fee, status, amount, created_at, platform, number, spec, account, currency)) = found else { return Err(ClearingError::NotFound) };
        let names = self.table.set();
        if let Some(name) = about.as_deref().filter(|name| *name != names.name(channel)) {
            // A channel the order has left (a fallback moved it on). Its failure is stale; its
            // success means the money may be out twice (the order's channel now may pay it too,
            // or has): the order stays as it is, and an operator's case says so, once per order
            // and channel (before session 59 it was answered stale and nobody was told). A name that is no
            // channel of ours opens nothing.
            if let (true, Some(left)) = (succeeded, names.by_name(name)) {
                let (reference, left_id) = (bank::order_ref(order), left.id);
                let case_id = format!("case_paid_by_left_channel_{}_{left_id}", order.0);
                // Only a channel the payout went through (its note says so) holds anything: a
                // misdirected success about another order's payout is a case, not a hold.
                let noted = match number {
                    Some(number) => PayoutBook::get(self.store.as_ref(), platform, number.as_str())?.map(|note| (number, note)),
                    None => None,
                };
                let tried = noted.as_ref().is_none_or(|(_, note)| note.tried.contains(&left_id));
                if let (true, OrderStatus::Processing, Some((number, mut note))) = (tried, status, noted) {
                    // Still waiting on its next channel: it goes no further, and if that one
                    // fails it for good, what goes back is held (`paid_by_left`). Not once an
                    // operator released this channel's case (its word found wrong): its word
                    // said again (a repeat, its statement read again) does not undo that
                    // decision quietly (since session 62; helper 99).
                    let released =
                        self.cases.get(self.store.as_ref(), &case_id)?.is_some_and(|case| case.status == "resolved" && case.hold.as_deref() != Some("capture"));
                    if released {
                        tracing::warn!(order = order.0, channel = name, "a channel whose word an operator found wrong says again it paid: not marked");
                    }
                    if note.paid_by_left.is_none() && !released {
                        note.paid_by_left = Some(left_id);
                        PayoutBook::save(self.store.as_ref(), platform, number.as_str(), &note)?;
                    }
                }
                // Failed for good since, its money back in the account: held as for a success
                // of its own channel's.
                let (held, hold_order) = if status == OrderStatus::Failed && tried {
                    self.hold_unless_opened(&case_id, order, left_id, account, currency, amount.saturating_add(fee), spec)?
                } else {
                    (String::new(), None)
                };
                let opening = CaseOpening {
                    case_id,
                    line: serde_json::json!({"order_id": reference, "channel": name, "status": "succeeded", "from": why, "order_channel": names.name(channel), "order_status": status.name(), "hold_order_id": hold_order}),
                    reason: format!("{name} says it paid {reference}, which had moved on from it to {} ({}){held}", names.name(channel), status.name()),
                };
                self.cases.open(self.store.as_ref(), vec![opening], self.clock.now_micros())?;
            }
            return Ok(VerdictOutcome::Stale { received: true, stale: true });
        }
        if !succeeded && status == OrderStatus::Failed {
            // Failed for good already: a channel it left that said it paid it (`paid_by_left`)
            // has its hold and case opened now if something stopped them after the failure
            // (an engine that did not answer, a store error, a stop): the watchdog's query or
            // the bank's repeat brings this failure again. Both are once (a fixed number, an id).
            let noted = match number {
                Some(number) => PayoutBook::get(self.store.as_ref(), platform, number.as_str())?,
                None => None,
            };
            if let Some(left) = noted.and_then(|note| note.paid_by_left) {
                self.hold_paid_by_left(order, left, channel, account, currency, amount.saturating_add(fee), spec)?;
                // Made now: a record an error left due is done with too.
                HoldsDue::forget(self.store.as_ref(), order)?;
            }
        }
        if succeeded && status == OrderStatus::Failed {
            // The bank says it paid an order that failed, whose money went back to the account:
            // paid out twice unless the verdict is wrong. Nothing moves here (the engine refuses
            // the verdict, as before); an operator's case says so, once per order and channel
            // (before session 58 the verdict was only refused, and only a statement raised it).
            // Since session 59 what went back (amount and fee) is held first, by a freeze of the
            // system's that the platform cannot release, until an operator resolves the case (the
            // member could withdraw it meanwhile: out twice for good). The hold's number is fixed
            // by the order and channel, so a verdict repeated after a stop between the hold and
            // the case replays it rather than holding twice (and a start opens a case its hold
            // names). Since session 60 a failure whose money went to suspense, not to the
            // account, holds nothing while its suspense case is open.
            let channel_name = names.name(channel);
            let reference = bank::order_ref(order);
            let case_id = format!("case_paid_after_failure_{}_{channel}", order.0);
            let (held, hold_order) = self.hold_unless_opened(&case_id, order, channel, account, currency, amount.saturating_add(fee), spec)?;
            let opening = CaseOpening {
                case_id,
                line: serde_json::json!({"order_id": reference, "channel": channel_name, "status": "succeeded", "from": why, "hold_order_id": hold_order}),
                reason: format!("{channel_name} says it paid {reference}, which had failed and whose money was returned{held}"),
            };
            self.cases.open(self.store.as_ref(), vec![opening], self.clock.now_micros())?;
        }
        let waiting = status == OrderStatus::Processing;
        let now = self.clock.instant();
        // The bank answered (a timeout with no verdict is not a latency): how long it took.
        // (A statement's verdict came by file, days later maybe: not the bank's latency either.)
        let answered = waiting && !matches!(why, "timeout" | "statement");
        // The channel's health (its circuit) learns from what it answers now, not from a
        // statement's lines, which may be days old.
        let health = why != "statement";
        if let (true, Some(sent)) = (answered, self.outstanding.get(&order).filter(|w| w.channel == channel).map(|w| w.sent)) {
            self.table.record_verdict(channel, succeeded, now.saturating_duration_since(sent));
        }
        if !waiting {
            self.forget(order, channel);
        }
        // A failure counts against the channel and gives its daily usage back once the order has
        // moved on (rerouted, or failed for good), never before: a verdict that stops on an error
        // on the way (a note that cannot be read, a shard or store that does not answer) is tried
        // again by the watchdog every timeout, and would count and give back again each time.
        let mut failed_here = false;
        let mut paid_by_left = None;
        if !succeeded && waiting {
            let noted = match number {
                Some(number) => Some((number, PayoutBook::get(self.store.as_ref(), platform, number.as_str())?)),
                None => None,
            };
            paid_by_left = noted.as_ref().and_then(|(_, note)| note.as_ref()).and_then(|note| note.paid_by_left);
            if let Some((number, note)) = noted.filter(|_| paid_by_left.is_none()) {
                match self.fall_back(order, channel, note, platform, number.as_str(), amount, spec, why)? {
                    FallBack::Rerouted(next) => {
                        if health {
                            self.table.record_outcome(channel, false, now);
                        }
                        self.table.release(channel, amount, created_at);
                        return Ok(VerdictOutcome::Rerouted { received: true, status: "processing", rerouted_to: next });
                    }
                    // Another verdict moved it (and counted the failure).
                    FallBack::Stale => return Ok(VerdictOutcome::Stale { received: true, stale: true }),
                    FallBack::Nowhere => {}
                }
            }
            failed_here = true;
        }
        // A failure for good of a payout a left channel said it paid holds what goes back: the
        // hold is noted as due first, so that a stop after the failure and before the hold
        // leaves it to the next start (`finish_holds_due`).
        let hold_due = paid_by_left.filter(|_| failed_here);
        if let Some(left) = hold_due {
            HoldsDue::save(self.store.as_ref(), order, HoldDue { left, channel })?;
        }
        // The system acts (platform 0): verdicts are idempotent by order, so no order number.
        let reply = self.engine.execute_one(Envelope { platform: 0, out_order_no: None, command: Command::CompleteWithdrawal { order, succeeded } })?;
        if let Some(left) = hold_due {
            if reply.is_ok() {
                self.hold_paid_by_left(order, left, channel, account, currency, amount.saturating_add(fee), spec)?;
            }
            HoldsDue::forget(self.store.as_ref(), order)?;
        }
        if reply.is_ok() {
            self.forget(order, channel);
            if failed_here {
                if health {
                    self.table.record_outcome(channel, false, now);
                }
                self.table.release(channel, amount, created_at);
            }
            if waiting && succeeded && !health {
                // Not a health sample, but the payout is decided: a probe it was is over (a
                // half-open circuit waiting on it would never route again).
                self.table.release_probe(channel);
            }
            if waiting && succeeded && health {
                self.table.record_outcome(channel, true, now);
            }
        }
        match reply.code {
            ResultCode::Ok => Ok(VerdictOutcome::Completed { received: true, status: reply.status.map(|s| s.name()) }),
            code => Err(ClearingError::Refused(code)),
        }
    }

    /// Routing's fallback: channel `failed` failed payout `order` (`why`: `failed`, or
    /// `timeout` when it never received it); if another channel can pay it out now, the order
    /// moves there (`RerouteWithdrawal` from `failed`, fee difference settled with the account)
    /// and that bank is asked.
    #[allow(clippy::too_many_arguments)]
    fn fall_back(
        &mut self,
        order: OrderId,
        failed: u16,
        note: Option<PayoutNote>,
        platform: u32,
        number: &str,
        amount: Minor,
        spec: CurrencySpec,
        why: &str,
    ) -> Result<FallBack, ClearingError> {
        let Some(mut note) = note else { return Ok(FallBack::Nowhere) };
        let (Some(arrival), Some(account_type)) = (note.arrival, note.account_type) else { return Ok(FallBack::Nowhere) };
        // A note of before session 58 has no `first`: at its first fallback its channel and fee
        // are still the ones submitted, kept now so that a repeat of its number stays the
        // engine's replay (a note that fell back before has lost them: nothing to keep).
        if note.first.is_none() && note.channel == Some(failed) && note.tried.iter().all(|tried| *tried == failed) {
            note.first = Some((failed, note.fee));
        }
        if !note.tried.contains(&failed) {
            note.tried.push(failed);
        }
        let at = self.at();
        let decision = self.table.route(&RouteRequest { amount, currency: spec, arrival, account_type }, at, &note.tried);
        let Some((next, fee)) = decision.chosen else { return Ok(FallBack::Nowhere) };
        let command = Command::RerouteWithdrawal { order, from: failed, channel: next, fee };
        let reply = self.engine.execute_one(Envelope { platform: 0, out_order_no: None, command })?;
        if !reply.is_ok() {
            self.table.release(next, amount, at.micros);
            self.table.release_probe(next);
            return Ok(if reply.code == ResultCode::ChannelChanged { FallBack::Stale } else { FallBack::Nowhere });
        }
        let names = self.table.set();
        note.tried.push(next);
        note.channel = Some(next);
        note.fee = fee;
        if let Some(routing) = note.routing.as_mut() {
            routing.chosen = Some(names.name(next));
            routing.fallbacks.push(Fallback {
                from: names.name(failed),
                to: names.name(next),
                reason: why.to_string(),
                fee: spec.format(fee),
                candidates: decision.routing.candidates,
            });
        }
        let card_no = note.card_no.clone().unwrap_or_default();
        // The engine moved the order: the next bank is asked whatever becomes of the note (one
        // not saved leaves its channels tried as before this fallback, for the next one).
        if let Err(error) = PayoutBook::save(self.store.as_ref(), platform, number, &note) {
            tracing::error!(order = order.0, "payout rerouted, its note not saved: {error}");
        }
        // The order has left the failed channel: its bank need not keep it for status queries
        // (nobody asks it again; its late verdicts are stale).
        self.bank.forget(order, failed);
        self.send_payout(order, next, amount, spec, card_no);
        Ok(FallBack::Rerouted(names.name(next)))
    }

    /// A channel `left` the payout left said it paid it, and it failed for good on `channel`:
    /// what went back is held under that channel's case of a success after a failure (as if it
    /// had said it now). Once: the case's id and the hold's number are fixed.
    #[allow(clippy::too_many_arguments)]
    fn hold_paid_by_left(
        &mut self,
        order: OrderId,
        left: u16,
        channel: u16,
        account: AccountId,
        currency: CurrencyId,
        amount: Minor,
        spec: CurrencySpec,
    ) -> Result<(), ClearingError> {
        let names = self.table.set();
        let (left_name, reference) = (names.name(left), bank::order_ref(order));
        let case_id = format!("case_paid_after_failure_{}_{left}", order.0);
        let (held, hold_order) = self.hold_unless_opened(&case_id, order, left, account, currency, amount, spec)?;
        let opening = CaseOpening {
            case_id,
            line: serde_json::json!({"order_id": reference, "channel": left_name, "status": "succeeded", "from": "left_channel", "hold_order_id": hold_order}),
            reason: format!("{left_name} said it paid {reference}, which then failed on {} and whose money was returned{held}", names.name(channel)),
        };
        self.cases.open(self.store.as_ref(), vec![opening], self.clock.now_micros())?;
        Ok(())
    }

    /// Makes the holds a stop left due (`HoldsDue`): a payout failed for good whose hold was
    /// noted but may not have been made gets it and its case now (each is once: the hold's
    /// number is fixed, the case opens once); one whose failure did not happen (still waiting:
    /// its verdict comes again) or that is another order's is dropped.
    /// A hold is made only while the payout's note still says the channel paid it (an operator
    /// who released that channel's case since cleared the mark: nothing is held against that
    /// decision). An error leaves the record for the next start and the start goes on (as
    /// `resume` does with an order it cannot look at).
    fn finish_holds_due(&mut self) -> Result<(), ClearingError> {
        for (order, due) in HoldsDue::all(self.store.as_ref())? {
            if let Err(error) = self.finish_hold_due(order, due) {
                tracing::error!(order = order.0, "a hold left due not made at start: {error}");
            }
        }
        Ok(())
    }

    fn finish_hold_due(&mut self, order: OrderId, due: HoldDue) -> Result<(), ClearingError> {
        let shard = order.shard(self.engine.config().shard_count);
        let found = self.engine.read_shard(shard, move |state| {
            let o = state.platform_order(0, order)?;
            let OrderDetail::Withdrawal { fee, .. } = o.detail else { return None };
            Some((o.status, o.platform, o.out_order_no, o.account, o.currency, o.amount.saturating_add(fee), state.currencies[o.currency.0 as usize]))
        })?;
        if let Some((OrderStatus::Failed, platform, Some(number), account, currency, amount, spec)) = found {
            let marked = PayoutBook::get(self.store.as_ref(), platform, number.as_str())?.and_then(|note| note.paid_by_left);
            if marked == Some(due.left) {
                tracing::warn!(order = order.0, "a hold a stop left due is made now");
                self.hold_paid_by_left(order, due.left, due.channel, account, currency, amount, spec)?;
            }
        }
        HoldsDue::forget(self.store.as_ref(), order)
    }

    /// Holds `amount` (capped at an order's largest) of `account` for case `case_id` about
    /// payout `order` and `channel`, unless that case is open already (a later repeat would hold
    /// what no case names): a freeze of platform 0's (the platform cannot release it; resolving
    /// the case does), under a number fixed by the order and channel (a repeat after a stop
    /// between the hold and the case is the engine's replay). Answers the case's words about
    /// the hold and its order. An engine that did not answer, or was overloaded, is an error
    /// before the case opens (the verdict is tried again: the bank's retry, the watchdog, the
    /// statement); a refusal (the account holds less, is closed) opens the case without a hold,
    /// saying why. A payout whose failure sent its money to suspense (not to the account) holds
    /// nothing while that suspense case is open; the suspense case is told.
    #[allow(clippy::too_many_arguments)]
    fn hold_unless_opened(
        &mut self,
        case_id: &str,
        order: OrderId,
        channel: u16,
        account: AccountId,
        currency: CurrencyId,
        amount: Minor,
        spec: CurrencySpec,
    ) -> Result<(String, Option<String>), ClearingError> {
        if self.cases.get(self.store.as_ref(), case_id)?.is_some() {
            return Ok((String::new(), None));
        }
        if let Some(suspense) = self.returned_to_suspense(order)? {
            // Its failure's money never reached the account (before session 60 the account's
            // other funds were held for it): nothing of the account's is the bank's to get back
            // while it stays in suspense, and its suspense case now says the bank paid it (an
            // operator must not return it to the account). Once that case is resolved (the
            // money moved on, to the account maybe) the account is held as any other.
            let warning = format!("the bank since said it paid this payout (case {case_id}): do not return the money to the account");
            if self.cases.amend_open(self.store.as_ref(), &suspense, case_id, &warning)? {
                return Ok((format!("; nothing held: its money went to suspense, not to the account (case {suspense}, still open)"), None));
            }
        }
        let amount = amount.min(engine::money::AMOUNT_MINOR_MAX);
        let Some(number) = OutOrderNo::new(&format!("hold-paid-twice-{}-{channel}", order.0)) else {
            return Err(ClearingError::Storage(format!("no hold number for {case_id}")));
        };
        let command = Command::Freeze { account, currency, amount, reason: format!("{HOLD_REASON}{case_id}"), expires_at: None };
        let reply = self.engine.execute_one(Envelope { platform: 0, out_order_no: Some(number), command })?;
        match reply.code {
            ResultCode::Ok => {
                Ok((format!("; {} held on the account until the case is resolved", spec.format(amount)), Some(bank::order_ref(OrderId(reply.id)))))
            }
            ResultCode::Overloaded => Err(ClearingError::Overloaded),
            code => {
                tracing::warn!(order = order.0, "no hold for {case_id}: {code:?}");
                Ok((format!("; nothing could be held on the account ({})", code.name()), None))
            }
        }
    }

    /// Opens the case a hold of the system's names (`case_id`, from its reason) unless it is
    /// there: a stop between the hold and its case left the hold that only a case's resolution
    /// releases, with no case to resolve (before session 60 only the verdict said again, by the
    /// bank's statement, mended it). The case is about the payout and channel its id names.
    fn open_case_of_hold(&mut self, hold: OrderId, case_id: String, amount: Minor, spec: CurrencySpec) -> Result<(), ClearingError> {
        if case_id.starts_with("recon_") {
            return self.open_recon_case_of_hold(hold, case_id, amount, spec);
        }
        if self.cases.get(self.store.as_ref(), &case_id)?.is_some() {
            return Ok(());
        }
        let mut parts = case_id.rsplitn(3, '_');
        let (channel, order) = (parts.next().and_then(|c| c.parse::<u16>().ok()), parts.next().and_then(|o| o.parse::<u64>().ok()));
        let (Some(channel), Some(order)) = (channel, order) else {
            tracing::error!(hold = hold.0, "a hold names no case of a payout: {case_id}");
            return Ok(());
        };
        let (channel_name, reference, hold_order) = (self.table.set().name(channel), bank::order_ref(OrderId(order)), bank::order_ref(hold));
        let opening = CaseOpening {
            line: serde_json::json!({"order_id": reference, "channel": channel_name, "status": "succeeded", "from": "start", "hold_order_id": hold_order}),
            reason: format!(
                "{channel_name} said it paid {reference} after its money went back to the account; {} held on the account until the case is resolved (the case opened at a start: a stop came between the hold and its case)",
                spec.format(amount)
            ),
            case_id,
        };
        self.cases.open(self.store.as_ref(), vec![opening], self.clock.now_micros())?;
        Ok(())
    }

    /// `open_case_of_hold` for a reconciliation's hold (`Actor::open_cases`): its case opened
    /// if a stop came between them; a case that exists but names another hold, or none (a hold
    /// no resolution would settle), has this one released.
    fn open_recon_case_of_hold(&mut self, hold: OrderId, case_id: String, amount: Minor, spec: CurrencySpec) -> Result<(), ClearingError> {
        let hold_ref = bank::order_ref(hold);
        match self.cases.get(self.store.as_ref(), &case_id)? {
            Some(case) if case.line.get("hold_order_id").and_then(|id| id.as_str()) == Some(hold_ref.as_str()) => Ok(()),
            Some(_) => {
                tracing::warn!(hold = hold.0, "a reconciliation hold that its case {case_id} does not name: released");
                let reply =
                    self.engine.execute_one(Envelope { platform: 0, out_order_no: None, command: Command::ReleaseFreeze { order: hold, amount: None } })?;
                if !reply.is_ok() {
                    tracing::error!(hold = hold.0, "a reconciliation hold not released: {:?}", reply.code);
                }
                Ok(())
            }
            None => {
                let opening = CaseOpening {
                    line: serde_json::json!({"from": "start", "hold_order_id": hold_ref}),
                    reason: format!(
                        "a bank statement said a credited recharge failed; {} held on the account until the case is resolved (the case opened at a start: a stop came between the hold and its case)",
                        spec.format(amount)
                    ),
                    case_id,
                };
                self.cases.open(self.store.as_ref(), vec![opening], self.clock.now_micros())?;
                Ok(())
            }
        }
    }

    /// Resolves a case, its hold (if any) released or captured first (`fate`, recorded on the
    /// case before the engine is asked): what the engine did not do is an error and the case
    /// stays open (before, the case was resolved and the hold, which no other route releases,
    /// stayed). Resolved already the same way, by the same operator, it is a repeat whose
    /// answer was lost (a stop before a portal's approval stored its outcome): it answers the
    /// case, its hold settled if it was not. A repeat asking the other fate is refused.
    ///
    /// A left channel's case (`case_paid_by_left_channel_`) clears its payout's mark only when
    /// `Release` is said (`said`): the operator found that channel's word wrong, and the payout
    /// may fall back again. Resolved with no fate said (the channel did pay, or nobody knows
    /// yet), the mark stays: the payout goes to no further channel and a failure for good is
    /// held (helper 125#1: any resolution cleared it, the only one offered for such a case, and
    /// a third channel then paid the card again).
    fn resolve_case(&mut self, case_id: &str, resolution: Resolution, said: Option<HoldFate>) -> Result<Case, ClearingError> {
        let fate = said.unwrap_or_default();
        crate::cases::check_resolution(&resolution)?;
        let case = self.cases.get(self.store.as_ref(), case_id)?.ok_or(ClearingError::NotFound)?;
        let same = case.resolution.as_deref() == Some(resolution.resolution.as_str()) && case.resolved_by.as_deref() == Some(resolution.operator.as_str());
        if case.status == "resolved" && !same {
            // Another resolution: refused by the book (which also drops a stale open mark).
            return self.cases.resolve(self.store.as_ref(), case_id, resolution, self.clock.now_micros());
        }
        let held = case.line.get("hold_order_id").is_some_and(|id| !id.is_null());
        let left_case = case.case_id.starts_with("case_paid_by_left_channel_") && !held;
        if fate == HoldFate::Capture && !held {
            // Nothing to capture: refused as an order in another state would be (409).
            return Err(ClearingError::Refused(ResultCode::OrderStateInvalid));
        }
        let mut case = case;
        match case.hold.as_deref() {
            // Decided already (answered, or stopped before its hold was settled or its case
            // resolved): the same fate goes on, another is refused (before session 60 it
            // answered 200 with the hold as the first fate left it).
            Some(chosen) if chosen != fate.name() => return Err(ClearingError::HoldDecided(chosen.to_string())),
            Some(_) => {}
            // Recorded before the engine settles the hold, so that no stop lets a repeat settle
            // it the other way. A case resolved before session 60 has none: its hold was settled
            // by its first resolution (a repeat changes nothing in the engine).
            None if held && case.status != "resolved" => self.cases.note_hold(self.store.as_ref(), &mut case, fate)?,
            // A left channel's case with no hold: `release` said is recorded as the hold's fate
            // is, before the mark is cleared (helper 128#4); resolved without it, the mark was
            // kept, and a repeat saying `release` is refused as another fate.
            None if left_case && said == Some(HoldFate::Release) && case.status != "resolved" => {
                self.cases.note_hold(self.store.as_ref(), &mut case, HoldFate::Release)?
            }
            None if left_case && said == Some(HoldFate::Release) => return Err(ClearingError::HoldDecided("kept (the payout goes no further)".into())),
            None => {}
        }
        self.settle_hold_of(&case, fate)?;
        if said == Some(HoldFate::Release) && case.status != "resolved" && case.case_id.starts_with("case_paid_by_left_channel_") {
            // The operator found the left channel's word wrong: the payout may fall back again.
            // Only at the case's resolution (or its repeat before it was recorded): a repeat of
            // a resolution that kept the mark does not clear it.
            self.forget_paid_by_left(&case)?;
        }
        if case.status == "resolved" {
            return Ok(case);
        }
        self.cases.resolve(self.store.as_ref(), case_id, resolution, self.clock.now_micros())
    }

    /// Clears the `paid_by_left` mark a left channel's case set on its payout's note (the case
    /// released: its word was wrong), so the payout falls back again.
    fn forget_paid_by_left(&mut self, case: &Case) -> Result<(), ClearingError> {
        let Some(order) = case.line.get("order_id").and_then(|id| id.as_str()).and_then(bank::parse_order_ref) else { return Ok(()) };
        let shard = order.shard(self.engine.config().shard_count);
        let Some((platform, Some(number))) = self.engine.read_shard(shard, move |state| state.order(order).map(|o| (o.platform, o.out_order_no)))? else {
            return Ok(());
        };
        // Only the mark of the channel this case is about (its id ends with it): releasing another
        // left channel's case leaves the first one's mark (helper 100, session 62: any release
        // cleared it, and the payout fell back again while the marking channel's case was open).
        let channel = case.case_id.rsplit('_').next().and_then(|id| id.parse::<u16>().ok());
        if let Some(mut note) =
            PayoutBook::get(self.store.as_ref(), platform, number.as_str())?.filter(|note| note.paid_by_left.is_some() && note.paid_by_left == channel)
        {
            note.paid_by_left = None;
            PayoutBook::save(self.store.as_ref(), platform, number.as_str(), &note)?;
            // Nothing is held against the operator's decision (a record an error left due).
            HoldsDue::forget(self.store.as_ref(), order)?;
        }
        Ok(())
    }

    /// A case's hold (`hold_order_id` in its line), if any, is released or captured into
    /// suspense (`fate`): the operator decided. One released or captured already is left as it
    /// is; what the engine did not do is an error.
    fn settle_hold_of(&mut self, case: &Case, fate: HoldFate) -> Result<(), ClearingError> {
        let holds = ["case_paid_after_failure_", "case_paid_by_left_channel_", "recon_"];
        if !holds.iter().any(|prefix| case.case_id.starts_with(prefix)) {
            return Ok(());
        }
        let Some(hold) = case.line.get("hold_order_id").and_then(|id| id.as_str()).and_then(bank::parse_order_ref) else { return Ok(()) };
        // Only a hold of the system's (platform 0's freeze): nothing else a line could name.
        let shard = hold.shard(self.engine.config().shard_count);
        let ours =
            self.engine.read_shard(shard, move |state| state.order(hold).is_some_and(|o| o.platform == 0 && matches!(o.detail, OrderDetail::Freeze { .. })))?;
        if !ours {
            tracing::error!(case = case.case_id.as_str(), "the case names no hold of the system's");
            return Ok(());
        }
        let command = match fate {
            HoldFate::Release => Command::ReleaseFreeze { order: hold, amount: None },
            HoldFate::Capture => Command::CaptureFreeze { order: hold },
        };
        let reply = self.engine.execute_one(Envelope { platform: 0, out_order_no: None, command })?;
        match reply.code {
            ResultCode::Ok | ResultCode::OrderStateInvalid => Ok(()),
            ResultCode::Overloaded => Err(ClearingError::Overloaded),
            code => {
                tracing::error!(case = case.case_id.as_str(), "the case's hold was not released: {code:?}");
                Err(ClearingError::Refused(code))
            }
        }
    }

    /// Opens the cases of `openings` not open yet (one synced write); how many it opened. An
    /// opening whose line asks for a hold (`hold_wanted`: reconciliation's credited recharge the
    /// bank's statement says failed, `reconcile::Run::want_hold`) has it made first, once, and
    /// named in its line (`hold_order_id`), only if its case is new and the credit reached the
    /// account: a case that exists (opened by an earlier build, or a run before) gets no hold
    /// no case would name (review 130#2), and a credit the ledger sent to suspense holds
    /// nothing of the account's other money (130#3). A stop between the hold and the case: the
    /// next start opens its case (`open_case_of_hold`).
    fn open_cases(&mut self, mut openings: Vec<CaseOpening>) -> Result<usize, ClearingError> {
        let now = self.clock.now_micros();
        let mut opened = 0;
        if openings.iter().any(|opening| opening.line.get("hold_wanted").is_some()) {
            // The credits' own notices, if the ledger sent them to suspense, are cases first.
            let mut rounds = 0;
            while self.open_diversion_cases()? == DIVERSIONS_PER_TICK {
                rounds += 1;
                if rounds == DIVERSION_ROUNDS_MAX {
                    return Err(ClearingError::Overloaded);
                }
            }
        }
        for opening in &mut openings {
            let Some(wanted) = opening.line.as_object_mut().and_then(|line| line.remove("hold_wanted")) else { continue };
            if self.cases.get(self.store.as_ref(), &opening.case_id)?.is_some() {
                continue;
            }
            let field = |name: &str| wanted.get(name).and_then(serde_json::Value::as_u64);
            let (Some(order), Some(account), Some(currency), Some(amount), Some(channel)) =
                (field("order"), field("account"), field("currency"), field("amount"), field("channel"))
            else {
                continue;
            };
            let (order, currency) = (OrderId(order), CurrencyId(u8::try_from(currency).unwrap_or(u8::MAX)));
            let Some(spec) = self.engine.config().currencies.get(currency.0 as usize).copied() else { continue };
            let amount = Minor::try_from(amount).unwrap_or(Minor::MAX).min(engine::money::AMOUNT_MINOR_MAX);
            // Its credit in suspense, its case open: nothing of the account's is held, and that
            // case is told (an operator must not give it to the account). Once that case is
            // resolved (the money moved on, to the account maybe), held as any other (review
            // 134#1).
            if let Some(suspense) = self.cases.returned_case(self.store.as_ref(), order.0)? {
                let warning = format!("a bank statement says this recharge failed (case {}): do not give the money to the account", opening.case_id);
                if self.cases.amend_open(self.store.as_ref(), &suspense, &opening.case_id, &warning)? {
                    opening.reason = format!("{}; nothing held: its credit went to suspense, not to the account (case {suspense}, still open)", opening.reason);
                    continue;
                }
            }
            let reason = format!("{HOLD_REASON}{}", opening.case_id);
            let Some(number) = OutOrderNo::new(&format!("hold-recon-{channel}-{}", order.0)) else { continue };
            let command = Command::Freeze { account: AccountId(account), currency, amount, reason, expires_at: None };
            let reply = self.engine.execute_one(Envelope { platform: 0, out_order_no: Some(number), command })?;
            match reply.code {
                ResultCode::Ok => {
                    opening.line["hold_order_id"] = serde_json::json!(bank::order_ref(OrderId(reply.id)));
                    opening.line["order_id"] = serde_json::json!(bank::order_ref(order));
                    opening.reason = format!(
                        "{}; {} held on the account until the case is resolved (release: the money came; capture: into suspense, it never came)",
                        opening.reason,
                        spec.format(amount)
                    );
                    // Opened at once with its hold: an error at a later opening leaves no hold
                    // without its case (review 134#3).
                    opened += self.cases.open(self.store.as_ref(), vec![opening.clone()], now)?;
                }
                ResultCode::Overloaded => return Err(ClearingError::Overloaded),
                code => {
                    tracing::warn!(order = order.0, "no hold for {}: {code:?}", opening.case_id);
                    opening.reason = format!("{}; nothing could be held on the account ({})", opening.reason, code.name());
                }
            }
        }
        // The others (the held ones are open already: opening them again opens nothing).
        Ok(opened + self.cases.open(self.store.as_ref(), openings, now)?)
    }

    /// Our side has the final answer on payout `order`: nothing to watch any more.
    fn forget(&mut self, order: OrderId, channel: u16) {
        if self.outstanding.remove(&order).is_some() {
            self.bank.forget(order, channel);
        }
    }

    /// A case for each credit the ledger sent to suspense instead of its account (the engine's
    /// notices, `engine::diversions`), then the notices forgotten: a stop in between opens
    /// nothing twice (a case id is opened once). At most `DIVERSIONS_PER_TICK` a tick; answers
    /// how many notices it read.
    fn open_diversion_cases(&mut self) -> Result<usize, ClearingError> {
        let notices = engine::diversions::read(self.store.as_ref(), DIVERSIONS_PER_TICK).map_err(|e| ClearingError::Storage(e.to_string()))?;
        if notices.is_empty() {
            return Ok(0);
        }
        // A failed payout's money sent to suspense is found by its order when the bank later
        // says it paid it (`hold_unless_opened`): nothing of the account's is held then.
        let returned: Vec<(u64, String)> = notices
            .iter()
            .filter_map(|(_, notice)| notice.as_ref().ok())
            // A recharge's credit sent to suspense too, found by its order when a statement says
            // the recharge failed (`open_cases`: nothing of the account's is held then).
            .filter(|notice| notice.kind == "withdrawal_failure" || notice.kind == "recharge")
            .filter_map(|notice| Some((notice.order?.0, format!("suspense_{}_{}_{}", notice.shard, notice.sequence, notice.index))))
            .collect();
        let openings = notices
            .iter()
            .map(|(key, notice)| match notice {
                Ok(notice) => {
                    let spec = self.engine.config().currencies.iter().find(|c| c.code_str() == notice.currency).copied();
                    let amount = spec.map_or_else(|| notice.amount.to_string(), |spec| spec.format(notice.amount));
                    let account = format!("acc_{}", notice.account.0);
                    let order = notice.order.map(bank::order_ref);
                    CaseOpening {
                        case_id: format!("suspense_{}_{}_{}", notice.shard, notice.sequence, notice.index),
                        line: serde_json::json!({
                            "account_id": account,
                            "order_id": order,
                            "entry": notice.kind,
                            "amount": amount,
                            "currency": notice.currency,
                            "shard": notice.shard,
                            "batch": notice.sequence,
                        }),
                        reason: format!(
                            "a credit to {account} went to suspense: the account could not take it (closed, credit-blocked or at its balance ceiling)"
                        ),
                    }
                }
                // Never in the way of the others: a case that shows the bytes.
                Err(bytes) => CaseOpening {
                    case_id: format!("suspense_notice_{}", engine::diversions::hex_of(key)),
                    line: serde_json::json!({"notice": bytes}),
                    reason: "a notice of a credit sent to suspense could not be read".to_string(),
                },
            })
            .collect();
        let mut index: Vec<(Vec<u8>, Vec<u8>)> =
            returned.into_iter().map(|(order, case_id)| (crate::cases::returned_key(order), case_id.into_bytes())).collect();
        self.cases.open_with(self.store.as_ref(), openings, self.clock.now_micros(), &mut index)?;
        let keys: Vec<Vec<u8>> = notices.into_iter().map(|(key, _)| key).collect();
        let handled = keys.len();
        engine::diversions::forget(self.store.as_ref(), &keys).map_err(|e| ClearingError::Storage(e.to_string()))?;
        Ok(handled)
    }

    /// The suspense case of payout `order`'s money, if its failure sent it to suspense (the
    /// account could not take it back: closed, credit-blocked, at its ceiling). The notices not
    /// yet turned into cases are turned first (a failure's notice is written with its batch).
    /// At most `DIVERSION_ROUNDS_MAX` rounds of notices are turned here: a backlog larger than
    /// that (a flood of credits to suspense) is `Overloaded`, the verdict tried again later (the
    /// bank's retry, the watchdog, the statement) while the ticks drain it.
    fn returned_to_suspense(&mut self, order: OrderId) -> Result<Option<String>, ClearingError> {
        let mut rounds = 0;
        while self.open_diversion_cases()? == DIVERSIONS_PER_TICK {
            rounds += 1;
            if rounds == DIVERSION_ROUNDS_MAX {
                return Err(ClearingError::Overloaded);
            }
        }
        self.cases.returned_case(self.store.as_ref(), order.0)
    }

    /// Payouts whose channel has not answered within its timeout are looked up at the bank: one
    /// the bank never received goes to the next channel (or fails, funds back) as after a
    /// failure; one it decided gets that verdict (the callback was lost); one still processing
    /// is looked at again a timeout later. Never resends what the bank has. Then the schedule.
    /// Applies the money-in verdicts the bank kept (`kept_verdicts`); one the engine does not
    /// answer (an error, overloaded) stays for the next tick, one it refuses (decided otherwise
    /// meanwhile) is logged and dropped.
    fn apply_kept_verdicts(&mut self) {
        let (engine, store, channels) = (self.engine.clone(), self.store.clone(), self.table.set());
        self.kept_verdicts.retain(|&(order, succeeded)| {
            // Its channel fee at the tariff now, noted before the verdict (`fees::note`).
            if succeeded {
                if let Err(error) = note_money_in_fee(&engine, store.as_ref(), &channels, order) {
                    tracing::warn!(order = order.0, "a money-in verdict kept by the bank not applied yet: {error}");
                    return true;
                }
            }
            let command = Command::CompleteRecharge { order, succeeded };
            match engine.execute_one(Envelope { platform: 0, out_order_no: None, command }) {
                Ok(reply) if reply.is_ok() => false,
                Ok(reply) if reply.code == ResultCode::Overloaded => true,
                Ok(reply) => {
                    tracing::error!(order = order.0, "a money-in verdict kept by the bank refused: {:?}", reply.code);
                    false
                }
                Err(error) => {
                    tracing::warn!(order = order.0, "a money-in verdict kept by the bank not applied yet: {error}");
                    true
                }
            }
        });
    }

    fn tick(&mut self) {
        if !self.kept_verdicts.is_empty() {
            self.apply_kept_verdicts();
        }
        let now = self.clock.instant();
        let mut due = Vec::new();
        for (order, waiting) in self.outstanding.iter() {
            if waiting.due <= now {
                due.push((*order, waiting.channel));
            }
        }
        for (order, channel) in due {
            let next = now + self.timeout_of(channel);
            if let Some(waiting) = self.outstanding.get_mut(&order) {
                waiting.due = next;
            }
            let name = Some(self.table.set().name(channel));
            let outcome = match self.bank.query(order, channel) {
                BankStatus::Processing => continue,
                BankStatus::Unknown => self.verdict(PayoutVerdict { order, succeeded: false, channel: name }, "timeout"),
                BankStatus::Decided { succeeded } => self.verdict(PayoutVerdict { order, succeeded, channel: name }, "failed"),
            };
            if let Err(error) = outcome {
                tracing::warn!(order = order.0, "payout watchdog: {error}");
            }
        }
        if let Err(error) = self.open_diversion_cases() {
            tracing::error!("credits sent to suspense: {error}");
        }
        let calendar = self.table.calendar().clone();
        let due = self.schedule.as_ref().and_then(|s| s.due(&calendar, self.clock.now_micros(), now));
        if let (Some(day), None) = (due, self.running) {
            let terms = (self.terms)(day);
            self.settle(day, terms, None);
        }
    }

    /// Starts the run of `day` on a worker thread, which reports back with its result; the actor
    /// then answers `reply` (if any) and tells the schedule. One run at a time.
    fn settle(&mut self, day: u32, terms: Vec<PlatformTerms>, reply: Option<Reply<SettlementSummary>>) {
        // A run by hand (one with a reply) may not name a later day than today's; the scheduled
        // ones never do.
        let today = self.table.calendar().local(self.clock.now_micros()).0;
        let reply = match reply {
            Some(reply) => match crate::settlement::check_day(day, today, self.days_ahead_max) {
                Ok(()) => Some(reply),
                Err(error) => return answer(reply, Err(error)),
            },
            None => None,
        };
        if self.running.is_some() {
            if let Some(reply) = reply {
                answer(reply, Err(ClearingError::Busy));
            }
            return;
        }
        self.running = Some(day);
        let (engine, store, channels, mailbox) = (self.engine.clone(), self.store.clone(), self.table.set(), self.mailbox.clone());
        let worker = std::thread::Builder::new().name("settlement".into()).spawn(move || {
            let result =
                caught("settlement", || crate::settlement::run(&engine, store.as_ref(), &terms, &channels, day, &mut |_, _| {}).map_err(ClearingError::from));
            // A blocking send: the actor waits for this report before it starts another run.
            let _ = mailbox.send(Message::SettlementFinished { day, result, reply });
        });
        if let Err(error) = worker {
            self.running = None;
            tracing::error!(business_date = %crate::calendar::date_text(day), "settlement: cannot start a worker: {error}");
        }
    }

    /// Starts reconciling `job` on a worker thread, which reports back with its result; the
    /// actor then answers `reply`. One at a time, a few waiting.
    fn reconcile(&mut self, job: ReconcileJob, reply: Reply<ReconcileReport>) {
        if self.reconciling {
            if self.waiting.len() < RECONCILIATIONS_WAITING_MAX {
                self.waiting.push_back((job, reply));
            } else {
                answer(reply, Err(ClearingError::Overloaded));
            }
            return;
        }
        if self.table.get(job.channel).is_none() {
            answer(reply, Err(ClearingError::invalid("unknown channel", "channel")));
            return;
        }
        self.reconciling = true;
        let (engine, store, channels, mailbox) = (self.engine.clone(), self.store.clone(), self.table.set(), self.mailbox.clone());
        let worker = std::thread::Builder::new().name("reconcile".into()).spawn(move || {
            let result = caught("reconciliation", || reconcile_and_record(&engine, store.as_ref(), &channels, &mailbox, &job));
            // A blocking send: the actor waits for this report before it starts the next one.
            let _ = mailbox.send(Message::ReconcileFinished(result, reply));
        });
        if let Err(error) = worker {
            // The reply went with the closure: the asker hears `Overloaded`.
            self.reconciling = false;
            tracing::error!("reconciliation: cannot start a worker: {error}");
        }
    }

    /// The note of pending recharge `order` (`Waiting::MoneyIn`) of `platform` under `number`
    /// when the order is that collection: with a note of this build (naming the card's id) only
    /// if the engine's record of its number holds the collection the note describes (before
    /// session 61 a note left by a refused collection on a plain recharge's number would have
    /// had the start debit the card); with an earlier build's note, by its account and amount,
    /// as then.
    fn collection_of(
        &self,
        order: &Waiting,
        platform: u32,
        number: OutOrderNo,
        account: AccountId,
    ) -> Result<Option<crate::payouts::CollectionNote>, ClearingError> {
        let Waiting::MoneyIn { order, channel, amount, currency, .. } = *order else { return Ok(None) };
        let Some(note) = crate::payouts::CollectionNotes::get(self.store.as_ref(), platform, number.as_str())?
            .filter(|note| note.account == account && note.amount == amount)
        else {
            return Ok(None);
        };
        // An earlier build's note: its collection was a plain recharge's command.
        let Some(card) = note.card else { return Ok(Some(note)) };
        let shard_count = self.engine.config().shard_count;
        let content = engine::ledger::command::content_hash(&Command::RequestCollection { account, currency, amount, channel, card });
        let key = engine::ledger::command::idempotency_key(platform, Command::MONEY_IN_SCOPE, &number);
        let record = self.engine.idempotency_record(account.shard(shard_count), key)?;
        Ok(record.filter(|record| record.reply.is_ok() && record.content == content && record.reply.id == order.0).map(|_| note))
    }

    /// Whether the engine keeps its refusal of the payout `note` (refused) was submitted as: a
    /// refusal record under the number on the account's shard, and a first channel and fee
    /// to submit the repeat with (the engine compares the content).
    fn refusal_kept(&self, platform: u32, number: &OutOrderNo, account: AccountId, note: &PayoutNote) -> Result<bool, ClearingError> {
        // The channel and fee the order was submitted with: a note from before session 58 has
        // no `first`, and its repeat is built from `channel` and `fee` (helper 118#4).
        if note.first.is_none() && note.channel.is_none() {
            return Ok(false);
        }
        let scope = Command::Withdraw { account, currency: CurrencyId(0), amount: 0, fee: 0, channel: 0 }.idempotency_scope();
        let key = engine::ledger::command::idempotency_key(platform, scope, number);
        let record = self.engine.idempotency_record(account.shard(self.engine.config().shard_count), key)?;
        Ok(record.is_some_and(|record| !record.reply.is_ok()))
    }

    /// Counts today's payouts against their channels' daily caps and hands the bank again what
    /// still waits for its verdict and the bank's status query says it never received: pending
    /// money-in orders (one it has is left to its callback, one it decided gets that verdict
    /// now; session 60) and processing payouts (one it has is watched, one it decided is taken
    /// at the first tick); returns how many it handed on.
    fn resume(&mut self) -> Result<usize, ClearingError> {
        let now = self.clock.now_micros();
        let mut resumed = 0;
        for shard in 0..self.engine.config().shard_count {
            let waiting = self.engine.read_shard(shard, move |state| {
                let mut found = Vec::new();
                let mut visit = |o: &engine::ledger::types::Order| {
                    let spec = state.currencies[o.currency.0 as usize];
                    match o.detail {
                        OrderDetail::Withdrawal { channel, .. } if o.status != OrderStatus::Failed => {
                            found.push(Waiting::Payout {
                                order: o.id,
                                channel,
                                amount: o.amount,
                                created_at: o.created_at,
                                status: o.status,
                                platform: o.platform,
                                number: o.out_order_no,
                                spec,
                            });
                        }
                        OrderDetail::Recharge { channel } if o.status == OrderStatus::Pending => {
                            let collection = Some((o.platform, o.out_order_no, o.account));
                            found.push(Waiting::MoneyIn { order: o.id, channel, amount: o.amount, spec, currency: o.currency, collection });
                        }
                        OrderDetail::Payment { channel: Some(channel), .. } if o.status == OrderStatus::Pending => {
                            found.push(Waiting::MoneyIn { order: o.id, channel, amount: o.amount, spec, currency: o.currency, collection: None });
                        }
                        // A case's hold (the system's freeze, its case named in its reason).
                        OrderDetail::Freeze { ref reason, remaining, .. } if o.platform == 0 && o.status == OrderStatus::Held => {
                            if let Some(case_id) = reason.strip_prefix(HOLD_REASON).filter(|id| id.starts_with("case_paid_") || id.starts_with("recon_")) {
                                found.push(Waiting::Hold { hold: o.id, case_id: case_id.to_string(), amount: remaining, spec });
                            }
                        }
                        _ => {}
                    }
                };
                // Not the whole history: the orders still open (any age, few) and those of the
                // last two days (today's payouts count against the caps); orders are kept in the
                // order they were created, with timestamps that never go back.
                let since = now.saturating_sub(2 * 86_400_000_000);
                let recent = state.orders.partition_point(|o| o.created_at < since);
                let mut older_open: Vec<u32> = state.platform_orders.values().flat_map(|p| p.open.iter().copied()).filter(|i| (*i as usize) < recent).collect();
                older_open.sort_unstable();
                older_open.iter().filter_map(|i| state.orders.get(*i as usize)).for_each(&mut visit);
                state.orders.scan_from(recent, |o| {
                    visit(o);
                    true
                });
                found
            })?;
            for item in waiting {
                match item {
                    Waiting::Payout { order, channel, amount, created_at, status, platform, number, spec } => {
                        self.table.count_used(channel, amount, now, created_at);
                        if status == OrderStatus::Processing {
                            let noted = match number {
                                Some(number) => PayoutBook::get(self.store.as_ref(), platform, number.as_str()),
                                None => Ok(None),
                            };
                            // A note that cannot be read: the payout is not sent again (its card is
                            // in the note), and the start goes on for every other order.
                            let noted = match noted {
                                Ok(noted) => noted,
                                Err(error) => {
                                    // Watched without being resent: the status query at its
                                    // timeout finds the bank's verdict, if it has one.
                                    tracing::error!(order = order.0, "payout not resent at start: {error}");
                                    let sent = self.clock.instant();
                                    self.outstanding.insert(order, Outstanding { channel, due: sent + self.timeout_of(channel), sent });
                                    continue;
                                }
                            };
                            // The bank is asked first (before session 59 every processing payout
                            // was sent again, and only a bank that deduplicates by the order's
                            // reference kept it from paying twice): one it has is watched, one it
                            // decided gets that verdict, and only one it never received is sent.
                            match self.bank.query(order, channel) {
                                BankStatus::Unknown => {
                                    let card_no = noted.and_then(|note| note.card_no).unwrap_or_default();
                                    resumed += 1;
                                    self.send_payout(order, channel, amount, spec, card_no);
                                }
                                BankStatus::Processing => {
                                    let sent = self.clock.instant();
                                    self.outstanding.insert(order, Outstanding { channel, due: sent + self.timeout_of(channel), sent });
                                }
                                BankStatus::Decided { .. } => {
                                    // Its verdict (its callback lost) is taken by the first tick's
                                    // status query, once every channel's usage of the day is
                                    // counted (a failure here would route a fallback on part of
                                    // it).
                                    let sent = self.clock.instant();
                                    self.outstanding.insert(order, Outstanding { channel, due: sent, sent });
                                }
                            }
                        }
                    }
                    Waiting::MoneyIn { order, channel, amount, spec, currency, collection } => {
                        // The bank is asked first, as for payouts (before session 60 every
                        // pending money-in was sent again: a collection debits a card, and a
                        // bank that did not deduplicate by the order's reference debited it
                        // twice): one it has is left to its callback, one it decided gets that
                        // verdict, and only one it never received is sent.
                        match self.bank.query(order, channel) {
                            BankStatus::Unknown => {}
                            BankStatus::Processing => continue,
                            BankStatus::Decided { succeeded } => {
                                // Applied together once every shard is looked at.
                                self.kept_verdicts.push((order, succeeded));
                                continue;
                            }
                        }
                        resumed += 1;
                        // A collection's card is in its note: sent again as the collection it is.
                        let noted = match collection {
                            Some((platform, Some(number), account)) => {
                                let order_of = Waiting::MoneyIn { order, channel, amount, spec, currency, collection: None };
                                match self.collection_of(&order_of, platform, number, account) {
                                    Ok(note) => note,
                                    Err(error) => {
                                        // Not sent as a plain money-in (no card would pay it): its
                                        // verdict comes from the bank's statement or an operator.
                                        tracing::error!(order = order.0, "collection not resent at start: {error}");
                                        continue;
                                    }
                                }
                            }
                            _ => None,
                        };
                        match noted {
                            Some(note) => self.bank.submit(Request::Collection { order, channel, amount, currency: spec, card_no: note.card_no }),
                            None => self.bank.submit(Request::MoneyIn { order, channel, amount, currency: spec }),
                        }
                    }
                    Waiting::Hold { hold, case_id, amount, spec } => {
                        // As for the orders above: one that cannot be looked at does not stop
                        // the start (its case is opened by the bank's word said again).
                        if let Err(error) = self.open_case_of_hold(hold, case_id, amount, spec) {
                            tracing::error!(hold = hold.0, "the case of a hold not opened at start: {error}");
                        }
                    }
                }
            }
        }
        self.apply_kept_verdicts();
        Ok(resumed)
    }
}

/// A reconciliation on its worker thread: the report, its cases opened by the actor (it owns
/// them; the worker waits for the write), then the carried lines written.
fn reconcile_and_record(
    engine: &Engine,
    store: &dyn Store,
    channels: &ChannelSet,
    mailbox: &Sender<Message>,
    job: &ReconcileJob,
) -> Result<ReconcileReport, ClearingError> {
    // Payouts' verdicts go through the actor, which alone reroutes payouts (see `reconcile`).
    let mut verdicts = |verdict: PayoutVerdict| {
        let (reply, outcome) = oneshot::channel();
        // A blocking send: this is a worker, not a caller the actor must never stall.
        mailbox.send(Message::StatementVerdict(verdict, reply)).map_err(|_| ClearingError::Overloaded)?;
        outcome.blocking_recv().map_err(|_| ClearingError::Overloaded)?
    };
    let mut report = crate::reconcile::reconcile_with(engine, store, channels, (job.channel, job.day), &job.file, &mut verdicts, job.by_hand)?;
    // In slices, so that a file full of differences does not hold routing up for one long write.
    for slice in report.take_cases().chunks(CASES_PER_MESSAGE) {
        let (reply, opened) = oneshot::channel();
        // A blocking send: this is a worker, not a caller the actor must never stall.
        mailbox.send(Message::OpenCases(slice.to_vec(), reply)).map_err(|_| ClearingError::Overloaded)?;
        opened.blocking_recv().map_err(|_| ClearingError::Overloaded)??;
    }
    report.write_carries(store)?;
    Ok(report)
}

/// What a fallback did.
enum FallBack {
    Rerouted(String),
    /// The order is no longer on the failed channel: the verdict was stale.
    Stale,
    /// No other channel can take it.
    Nowhere,
}

/// A payout handed to a channel and not answered yet.
struct Outstanding {
    channel: u16,
    /// When to look the order up at the bank if no verdict came.
    due: Instant,
    /// When it was handed to the bank (or again, after a restart).
    sent: Instant,
}

/// How a case's hold's reason begins; the case's id follows.
pub(crate) const HOLD_REASON: &str = "held for ";

/// An order found waiting at start.
enum Waiting {
    Payout {
        order: OrderId,
        channel: u16,
        amount: Minor,
        created_at: u64,
        status: OrderStatus,
        platform: u32,
        number: Option<engine::ledger::command::OutOrderNo>,
        spec: CurrencySpec,
    },
    /// A hold of the system's for a case about a payout paid twice (`hold_unless_opened`).
    Hold { hold: OrderId, case_id: String, amount: Minor, spec: CurrencySpec },
    MoneyIn {
        order: OrderId,
        channel: u16,
        amount: Minor,
        spec: CurrencySpec,
        currency: CurrencyId,
        /// A recharge's platform, order number and account: its collection note, if it is one.
        collection: Option<(u32, Option<engine::ledger::command::OutOrderNo>, engine::ledger::types::AccountId)>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (helper 109): a settlement or reconciliation worker that panicked never
    /// reported back, and every later run was refused `Busy` until a restart.
    #[test]
    fn a_worker_that_panics_reports_an_internal_error() {
        let failed: Result<(), ClearingError> = caught("settlement", || panic!("attempt to add with overflow"));
        assert!(matches!(&failed, Err(ClearingError::Internal(why)) if why.contains("settlement") && why.contains("overflow")), "{failed:?}");
        let owned: Result<(), ClearingError> = caught("reconciliation", || panic!("{}", String::from("owned message")));
        assert!(matches!(&owned, Err(ClearingError::Internal(why)) if why.contains("owned message")), "{owned:?}");
        assert!(matches!(caught("settlement", || Ok(7)), Ok(7)));
    }
}
