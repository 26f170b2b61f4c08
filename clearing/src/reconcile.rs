//! Reconciliation: a channel's statement file of a business date against the engine's channel
//! ledger (the orders that went through that channel). Each line is matched by order id and
//! classified: matched; missing on our side (长款: the bank has it, we do not); missing on
//! theirs (短款: we have a final order the bank does not list); amount or status mismatch, and
//! fee mismatch (the bank's fee column against what we charged a payout, or the channel's
//! tariff for money in). Lines missing on our side are carried to the next days
//! (`r/carry/{channel}/{bank_ref}`) before they are declared; the safe case (our order still
//! pending or processing, the bank's verdict final) is resolved automatically by applying the
//! verdict; everything else becomes a case for an operator. Re-running a date opens no case twice.
//!
//! A payout's verdict goes through `Verdicts`: under the server, the clearing actor, which alone
//! moves payouts between channels, so its check that the order is still on this channel and the
//! completion are one step (a verdict applied straight to the engine from a worker could fail an
//! order the actor had just rerouted to a channel that then paid it: paid twice); it may also
//! fall back to another channel, as after the bank's own failure callback.
//!
//! `reconcile` reads and applies verdicts but writes no record: the report carries the cases to
//! open and the carried lines to write. The clearing actor runs it on a worker thread, opens the
//! cases (it owns them), then the worker writes the carries; the CLI does the same with a
//! `CaseBook` of its own (`record`). Cases go first, so a line is never marked declared without
//! its case.

use std::collections::{BTreeMap, HashMap, HashSet};

use bank::StatementLine;
use engine::ledger::command::{Command, Envelope};
use engine::ledger::growth::chunk_of;
use engine::ledger::types::{AccountId, OrderDetail, OrderId, OrderKind, OrderStatus};
use engine::money::{CurrencyId, CurrencySpec, Minor};
use engine::Engine;
use serde::{Deserialize, Serialize};
use storage::Store;

use crate::calendar::{date_text, Calendar};
use crate::cases::{CaseBook, CaseOpening};
use crate::channels::{Channel, ChannelSet};
use crate::error::ClearingError;
use crate::payouts::{PayoutVerdict, VerdictOutcome};
use crate::settlement::channel_of;

/// Applies a statement's verdict on one payout (see the module's note).
pub type Verdicts<'a> = &'a mut dyn FnMut(PayoutVerdict) -> Result<VerdictOutcome, ClearingError>;

/// `Verdicts` straight to the engine, for where nothing else moves payouts (tests of the
/// reconciliation alone): the payout is completed whatever channel it is on now (the actor
/// checks that; since session 62 a statement also sends the verdict of a channel a waiting
/// payout left, which this would complete). No case's hold: the command line reconciles
/// through the clearing actor since session 59.
pub fn verdicts_to_engine(engine: &Engine) -> impl FnMut(PayoutVerdict) -> Result<VerdictOutcome, ClearingError> + '_ {
    move |verdict| {
        let command = Command::CompleteWithdrawal { order: verdict.order, succeeded: verdict.succeeded };
        let reply = engine.execute_one(Envelope { platform: 0, out_order_no: None, command })?;
        match reply.code {
            engine::result::ResultCode::Ok => Ok(VerdictOutcome::Completed { received: true, status: reply.status.map(|s| s.name()) }),
            code => Err(ClearingError::Refused(code)),
        }
    }
}

/// Days a line missing on our side is carried before it becomes a case.
pub const CARRY_DAYS: u32 = 2;
/// Findings a report lists at most (the counts count them all).
pub const DETAILS_MAX: usize = 1000;

/// How a statement line (or one of our orders) came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Matched,
    /// Missing on our side, carried to the next days.
    Carried,
    /// 长款: the bank lists an order we do not have (after `CARRY_DAYS`).
    MissingOurs,
    /// 短款: our final order of the day is not on the bank's statement.
    MissingTheirs,
    AmountMismatch,
    FeeMismatch,
    StatusMismatch,
    /// Our order waited, the bank had decided: its verdict was applied.
    AutoResolved,
    /// Our order of the day is still waiting and not on the statement.
    AwaitingBank,
}

/// One difference, as the report lists it: `{"class": ..., "detail": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "class", content = "detail", rename_all = "snake_case")]
pub enum Finding {
    Carried { bank_ref: String, first_seen: String },
    MissingOurs { bank_ref: String, case_id: String },
    MissingTheirs { order_id: String, case_id: String },
    AmountMismatch { bank_ref: String, order_id: String, case_id: String },
    FeeMismatch { bank_ref: String, order_id: String, case_id: String },
    StatusMismatch { bank_ref: String, order_id: String, case_id: String },
    AutoResolved { order_id: String, status: Option<&'static str> },
    AwaitingBank { order_id: String },
}

/// What reconciling one file found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    /// The channel's name.
    pub channel: String,
    pub business_date: String,
    /// Lines (and orders) per class.
    pub counts: BTreeMap<Class, u64>,
    /// Every finding but matches, the first `DETAILS_MAX`.
    pub details: Vec<Finding>,
    /// Cases to open (each once), before the carries are written.
    #[serde(skip)]
    pub cases: Vec<CaseOpening>,
    /// Carried lines to write (`None` ends a carry: its record is deleted).
    #[serde(skip)]
    carries: Vec<(Vec<u8>, Option<Carried>)>,
    /// Records of carries that ended before (stored as null until session 53), to delete.
    #[serde(skip)]
    ended: Vec<Vec<u8>>,
    /// The first line of each order this run matched that no line listed before
    /// (`lined_key` and the line's bank reference), written with the carries.
    #[serde(skip)]
    lined: Vec<(Vec<u8>, String)>,
    /// Those of orders of business days before this one are dropped then.
    #[serde(skip)]
    lined_before: u32,
    /// The channel whose old records are dropped (none for a pasted statement).
    #[serde(skip)]
    lined_channel: Option<u16>,
}

/// A line missing on our side, carried across days.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Carried {
    line: StatementLine,
    first_day: u32,
    /// Declared missing on our side (a case is open): a re-run of an earlier date that lists
    /// the line again does not carry it again.
    #[serde(default)]
    declared: bool,
}

/// What reconciliation needs of one of our orders.
#[derive(Clone, Copy)]
struct Ours {
    amount: Minor,
    /// The fee we charged a payout, or noted at a money-in order's verdict (`fees::note`);
    /// `None`: the channel's tariff applies (money in decided before session 68).
    fee: Option<Minor>,
    status: OrderStatus,
    withdrawal: bool,
    /// A recharge or collection: its money went into `account` (a direct payment's went to its
    /// receivers).
    recharge: bool,
    account: AccountId,
    currency: CurrencyId,
    created_day: u32,
    spec: CurrencySpec,
    /// A payout the statement names that is on another channel now (its platform and order
    /// number, to read its note: routing's fallback moved it off this one if the note says it
    /// tried this channel).
    left: Option<(u32, Option<engine::ledger::command::OutOrderNo>)>,
}

impl Ours {
    /// The order's verdict as we have it: `None` while it waits for the bank.
    fn verdict(&self) -> Option<bool> {
        match self.status {
            OrderStatus::Pending | OrderStatus::Processing => None,
            OrderStatus::Failed => Some(false),
            _ => Some(true),
        }
    }
}

/// A statement line to classify: the day it was first seen if it was carried, and whether it
/// was declared missing on our side already.
struct Pending {
    line: StatementLine,
    carried_since: Option<u32>,
    declared: bool,
}

/// Reconciles statement `file` of `channel` for business day `day`. Blocking: reads every
/// shard and applies the bank's verdict to orders still waiting for it.
pub fn reconcile(
    engine: &Engine,
    store: &dyn Store,
    channels: &ChannelSet,
    channel: u16,
    day: u32,
    file: &[u8],
    verdicts: Verdicts<'_>,
) -> Result<ReconcileReport, ClearingError> {
    reconcile_with(engine, store, channels, (channel, day), file, verdicts, false)
}

/// `reconcile`; `by_hand` (a statement an operator pasted) opens a case for each verdict on an
/// order still waiting instead of applying it.
pub fn reconcile_with(
    engine: &Engine,
    store: &dyn Store,
    channels: &ChannelSet,
    (channel, day): (u16, u32),
    file: &[u8],
    verdicts: Verdicts<'_>,
    by_hand: bool,
) -> Result<ReconcileReport, ClearingError> {
    // A pasted statement is checked on its own lines: the bank's carried lines are the bank's
    // runs' (a paste declaring one that came due opened a case the bank's next run opened again).
    let (lines, ended) = lines_with_carries(store, channel, file, !by_hand)?;
    let named: Vec<OrderId> = lines.iter().filter_map(|pending| bank::parse_order_ref(&pending.line.order_id)).collect();
    let ours = with_noted_fees(store, channel_ledger(engine, channel, day, &named)?)?;
    let lined = lined_before(store, channel, &named, &ours)?;
    let mut run = Run {
        store,
        report: ReconcileReport {
            channel: channels.name(channel),
            business_date: date_text(day),
            counts: BTreeMap::new(),
            details: Vec::new(),
            cases: Vec::new(),
            carries: Vec::new(),
            ended,
            lined: Vec::new(),
            // Counted from the statement's day, or today if it names a later one (a mistyped
            // year must not drop every record, helper 130#8).
            lined_before: {
                let calendar = Calendar { utc_offset_seconds: engine.config().utc_offset_seconds, ..Calendar::default() };
                day.min(calendar.day(crate::calendar::Clock::now_micros(&crate::calendar::SystemClock))).saturating_sub(LINED_DAYS)
            },
            lined_channel: (!by_hand).then_some(channel),
        },
        channel,
        day,
        tariff: channels.get(channel),
        by_hand,
        lined,
        failed_or_moved: HashSet::new(),
    };
    let mut seen: HashSet<u64> = HashSet::new();
    for pending in lines {
        if let Some(id) = run.line(engine, &mut *verdicts, &ours, pending)? {
            seen.insert(id.0);
        }
    }
    // Our orders of the day the bank does not list.
    let mut missing: Vec<(&u64, &Ours)> = ours.iter().filter(|(id, o)| o.created_day == day && !seen.contains(id)).collect();
    missing.sort_by_key(|(id, _)| **id);
    for (id, order) in missing {
        run.missing_theirs(OrderId(*id), order);
    }
    if by_hand {
        // Nor does it record which line listed an order first (the bank's own statement will).
        run.report.lined.clear();
        // A pasted statement carries nothing and ends no carry (helper 98, session 62: its
        // lines were carried and a later run of the bank's own statement took them for the
        // bank's word, crediting a recharge or failing a payout on an operator's paste alone;
        // and it could end the bank's own carries).
        run.report.carries.clear();
        run.report.ended.clear();
    }
    Ok(run.report)
}

/// How long the first line of each order is remembered (`r/lined/`), by the order's business
/// day: a line naming it again within this is a case.
const LINED_DAYS: u32 = 62;

/// `r/lined/{channel:05}/{order's business day:08}/{order:020}`: the bank reference of the
/// first statement line that listed the order (helper 129#1, session 68).
fn lined_key(channel: u16, day: u32, order: u64) -> Vec<u8> {
    format!("r/lined/{channel:05}/{day:08}/{order:020}").into_bytes()
}

/// The first lines recorded of the orders `named` that `ours` holds, by order.
fn lined_before(store: &dyn Store, channel: u16, named: &[OrderId], ours: &HashMap<u64, Ours>) -> Result<HashMap<u64, String>, ClearingError> {
    let orders: Vec<(u64, u32)> = named.iter().filter_map(|id| ours.get(&id.0).map(|o| (id.0, o.created_day))).collect();
    let keys: Vec<Vec<u8>> = orders.iter().map(|(order, day)| lined_key(channel, *day, *order)).collect();
    let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let found = store.get_many(&keys).map_err(|e| ClearingError::Storage(e.to_string()))?;
    Ok(orders.iter().zip(found).filter_map(|((order, _), value)| Some((*order, String::from_utf8(value?).ok()?))).collect())
}

/// The file's lines, then the lines carried from earlier days that it does not list; a line in
/// the file that was carried keeps the day it was first seen. A carry that ended and was kept
/// as null (before session 53) is skipped, and its key returned to be deleted.
fn lines_with_carries(store: &dyn Store, channel: u16, file: &[u8], with_carries: bool) -> Result<(Vec<Pending>, Vec<Vec<u8>>), ClearingError> {
    let parsed = bank::statement::parse(file).map_err(|error| ClearingError::invalid(error.to_string(), "file"))?;
    let mut lines: Vec<Pending> = parsed.into_iter().map(|line| Pending { line, carried_since: None, declared: false }).collect();
    if !with_carries {
        return Ok((lines, Vec::new()));
    }
    let mut in_file: HashMap<String, usize> = lines.iter().enumerate().map(|(index, p)| (p.line.bank_ref.clone(), index)).collect();
    let prefix = carry_prefix(channel);
    let carried = storage::records::load_all::<Option<Carried>>(store, prefix.as_bytes()).map_err(ClearingError::Storage)?;
    let mut ended = Vec::new();
    for (rest, carried) in carried {
        let Some(carried) = carried else {
            ended.push([prefix.as_bytes(), &rest].concat());
            continue;
        };
        match in_file.get(&carried.line.bank_ref) {
            Some(index) => (lines[*index].carried_since, lines[*index].declared) = (Some(carried.first_day), carried.declared),
            None if carried.declared => {}
            None => {
                in_file.insert(carried.line.bank_ref.clone(), lines.len());
                lines.push(Pending { line: carried.line, carried_since: Some(carried.first_day), declared: false });
            }
        }
    }
    Ok((lines, ended))
}

fn carry_prefix(channel: u16) -> String {
    format!("r/carry/{channel:05}/")
}

/// `ours` with the fees noted at their verdicts on its money-in orders (`fees::note`).
fn with_noted_fees(store: &dyn Store, mut ours: HashMap<u64, Ours>) -> Result<HashMap<u64, Ours>, ClearingError> {
    let wanted: Vec<(u32, OrderId)> = ours.iter().filter(|(_, o)| !o.withdrawal && o.fee.is_none()).map(|(id, o)| (o.created_day, OrderId(*id))).collect();
    let noted = crate::fees::of_orders(store, &wanted).map_err(|e| ClearingError::Storage(e.to_string()))?;
    for ((_, id), fee) in wanted.iter().zip(noted) {
        if let (Some(fee), Some(order)) = (fee, ours.get_mut(&id.0)) {
            order.fee = Some(fee);
        }
    }
    Ok(ours)
}

/// Orders one read of a shard visits at most while the channel ledger is gathered: the shard's
/// batches wait while it reads, so a day of a busy channel is read a slice at a time.
const ORDERS_PER_READ: usize = 16_384;

/// Our channel ledger for business day `day`: the orders through `channel` created that day,
/// and those the lines name (a carried line, or a verdict the bank lists a day after the order),
/// each with its business day. Reads only that day's orders of each shard (orders are kept in
/// the order they were created, with timestamps that never go back), never the whole history:
/// the history's old orders are out of memory, and reading them all back held every shard for
/// as long as the bank had been running.
fn channel_ledger(engine: &Engine, channel: u16, day: u32, named: &[OrderId]) -> Result<HashMap<u64, Ours>, ClearingError> {
    let calendar = Calendar { utc_offset_seconds: engine.config().utc_offset_seconds, ..Calendar::default() };
    let (start, end) = (calendar.day_start_micros(day as i64), calendar.day_start_micros(day as i64 + 1));
    let shard_count = engine.config().shard_count;
    let mut ours = HashMap::new();
    for shard in 0..shard_count {
        let (first, last) = engine
            .read_shard(shard, move |state| (state.orders.partition_point(|o| o.created_at < start), state.orders.partition_point(|o| o.created_at < end)))?;
        let mut from = first;
        while from < last {
            let to = last.min(from + ORDERS_PER_READ);
            let calendar = calendar.clone();
            let part = engine.read_shard(shard, move |state| {
                let mut part = Vec::new();
                state.orders.scan_range(from..to, |o| part.extend(ours_of(o, channel, &calendar, state)));
                part
            })?;
            ours.extend(part);
            from = to;
        }
        // The orders the lines name on other days, by local index, grouped by the chunk of
        // stored orders that holds them: read a few chunks at a time, each read back for the
        // visit only (helper 98, session 62: they were read in one closure, each chunk read
        // back and kept, so a file naming one order of every chunk held the shard while it
        // brought the whole history into memory).
        let mut elsewhere: Vec<u64> =
            named.iter().filter(|id| id.shard(shard_count) == shard && !ours.contains_key(&id.0)).map(|id| id.local_index(shard_count)).collect();
        elsewhere.sort_unstable();
        elsewhere.dedup();
        let groups: Vec<Vec<u64>> = elsewhere.chunk_by(|a, b| chunk_of(*a as usize) == chunk_of(*b as usize)).map(<[u64]>::to_vec).collect();
        for some in groups.chunks(NAMED_CHUNKS_PER_READ) {
            let (some, calendar) = (some.to_vec(), calendar.clone());
            let part = engine.read_shard(shard, move |state| {
                let mut part = Vec::new();
                for wanted in &some {
                    // Ids past the shard's orders name none (and on one shard a made-up id may
                    // be as large as the type: no sum past it).
                    let (first, last) = (wanted[0] as usize, wanted[wanted.len() - 1] as usize);
                    if first >= state.orders.len() {
                        continue;
                    }
                    state.orders.scan_range(first..last.saturating_add(1), |order| {
                        if wanted.binary_search(&order.id.local_index(shard_count)).is_ok() {
                            part.extend(ours_of(order, channel, &calendar, state).or_else(|| left_payout(order, channel, &calendar, state)));
                        }
                    });
                }
                part
            })?;
            ours.extend(part);
        }
    }
    Ok(ours)
}

/// The chunks of stored orders one read of the orders a statement names reads back (see
/// `channel_ledger`).
const NAMED_CHUNKS_PER_READ: usize = 8;

/// A payout now on another channel than `channel`, as `ours_of` reads it, marked `left`.
fn left_payout(o: &engine::ledger::types::Order, channel: u16, calendar: &Calendar, state: &engine::ledger::state::ShardState) -> Option<(u64, Ours)> {
    let OrderDetail::Withdrawal { channel: now, .. } = o.detail else { return None };
    let (id, ours) = ours_of(o, now, calendar, state)?;
    (now != channel).then_some((id, Ours { left: Some((o.platform, o.out_order_no)), ..ours }))
}

/// What reconciliation needs of order `o`, if it went through `channel`.
fn ours_of(o: &engine::ledger::types::Order, channel: u16, calendar: &Calendar, state: &engine::ledger::state::ShardState) -> Option<(u64, Ours)> {
    if channel_of(&o.detail) != Some(channel) {
        return None;
    }
    let fee = match o.detail {
        OrderDetail::Withdrawal { fee, .. } => Some(fee),
        _ => None,
    };
    let ours = Ours {
        amount: o.amount,
        fee,
        status: o.status,
        withdrawal: o.kind == OrderKind::Withdrawal,
        recharge: matches!(o.detail, OrderDetail::Recharge { .. }),
        account: o.account,
        currency: o.currency,
        created_day: calendar.day(o.created_at),
        spec: state.currencies[o.currency.0 as usize],
        left: None,
    };
    Some((o.id.0, ours))
}

/// What applying a waiting order's verdict from a line came to.
enum Applied {
    /// Applied (or already so): the order's status now.
    Status(Option<&'static str>),
    /// The order moved on in a way the line agrees with.
    AlreadyAgrees,
    /// The order moved on in a way the line contradicts: a case.
    Differs(&'static str),
}

/// One reconciliation in progress.
struct Run<'a> {
    store: &'a dyn Store,
    report: ReconcileReport,
    channel: u16,
    day: u32,
    tariff: Option<&'a Channel>,
    /// A statement pasted by hand: its verdicts on waiting orders are cases, not applied.
    by_hand: bool,
    /// The bank reference of the first line that listed each order the lines name (recorded
    /// before, or earlier in this file).
    lined: HashMap<u64, String>,
    /// Orders a line of this run failed here or moved to another channel.
    failed_or_moved: HashSet<u64>,
}

impl Run<'_> {
    fn note(&mut self, class: Class, finding: Option<Finding>) {
        *self.report.counts.entry(class).or_default() += 1;
        if let Some(finding) = finding {
            if self.report.details.len() < DETAILS_MAX {
                self.report.details.push(finding);
            }
        }
    }

    /// Asks the actor to hold what recharge `id` credited, when it opens this line's case
    /// (`hold_wanted` in the case's line, which the actor takes out: `Actor::open_cases`): the
    /// bank's own statement says the money never came (helper 129#2: only the case opened, and
    /// the member could withdraw the money meanwhile). Made by the actor with the case, only if
    /// the case is new and the credit reached the account (not diverted to suspense). A direct
    /// payment's money went to its receivers: nothing is asked.
    fn want_hold(&self, id: OrderId, order: &Ours, line: &mut serde_json::Value) {
        if order.recharge {
            line["hold_wanted"] = serde_json::json!({
                "order": id.0, "account": order.account.0, "currency": order.currency.0, "amount": order.amount, "channel": self.channel,
            });
        }
    }

    fn open_case(&mut self, case_id: &str, line: serde_json::Value, reason: String) {
        self.report.cases.push(CaseOpening { case_id: case_id.to_string(), line, reason });
    }

    /// Classifies one statement line; returns the order it matched, if any.
    fn line(&mut self, engine: &Engine, verdicts: Verdicts<'_>, ours: &HashMap<u64, Ours>, pending: Pending) -> Result<Option<OrderId>, ClearingError> {
        let Pending { line, carried_since, declared } = pending;
        let carry_key = format!("{}{}", carry_prefix(self.channel), line.bank_ref).into_bytes();
        // A pasted statement's cases have ids of their own: its lines are an operator's word, and
        // must not take the ids the bank's own statement's lines will have (since session 62).
        let case_id = format!("recon_{}{}_{}", if self.by_hand { "hand_" } else { "" }, self.channel, line.bank_ref);
        let found = bank::parse_order_ref(&line.order_id).and_then(|id| ours.get(&id.0).map(|o| (id, *o)));
        let Some((id, order)) = found else {
            self.missing_ours(line, carry_key, case_id, carried_since, declared);
            return Ok(None);
        };
        if carried_since.is_some() {
            // A carried line that matched is no longer carried.
            self.report.carries.push((carry_key, None));
        }
        let theirs_ok = line.status == "succeeded";
        let line_value = || serde_json::to_value(&line).expect("lines serialize");
        let mismatch = |class: Class| {
            let (bank_ref, order_id, case_id) = (line.bank_ref.clone(), line.order_id.clone(), case_id.clone());
            match class {
                Class::AmountMismatch => Finding::AmountMismatch { bank_ref, order_id, case_id },
                Class::FeeMismatch => Finding::FeeMismatch { bank_ref, order_id, case_id },
                _ => Finding::StatusMismatch { bank_ref, order_id, case_id },
            }
        };
        // A second line naming an order another line listed (in this file or a statement
        // before; the same line again, a statement read again, is the first): the bank moved
        // its money twice, or lists it wrongly. Where it agrees with the order it is no match,
        // and it applies no verdict to an order still waiting: a case (helper 129#1: it was
        // matched again, the second movement in no account and no case). Where it contradicts
        // the order, it is judged as any line is (a payout the bank says it paid after it failed
        // is held by the actor's verdict, helper 130#1).
        let listed_again = match self.lined.get(&id.0) {
            Some(first) if *first != line.bank_ref => Some(first.clone()),
            Some(_) => None,
            None => {
                self.lined.insert(id.0, line.bank_ref.clone());
                self.report.lined.push((lined_key(self.channel, order.created_day, id.0), line.bank_ref.clone()));
                None
            }
        };
        let again_reason = |first: &str| {
            let twice = if order.withdrawal { "paid out" } else { "taken in" };
            format!("the bank lists {} again (first as {first}): the money {twice} twice, or a wrong line", line.order_id)
        };
        // Money out is a payout, money in anything else: a line of the other direction is not
        // about this order as we have it (since session 62; before, a returned payout listed
        // `in` matched it).
        if (line.direction == "out") != order.withdrawal {
            let ours = if order.withdrawal { "out (a payout)" } else { "in" };
            let reason = format!("direction mismatch: ours {ours}, theirs {}", line.direction);
            self.open_case(&case_id, line_value(), reason);
            self.note(Class::StatusMismatch, Some(mismatch(Class::StatusMismatch)));
            return Ok(Some(id));
        }
        // A payout the bank says it paid that failed here, whose money went back to the account
        // (failed for good when the ledger was read, or by a line of this run): the actor's
        // verdict holds what went back (refused by the engine, as ever), whatever else this
        // line's case says (an amount, a fee, a line listing it again: helpers 130#1, 132#1-2; after
        // the direction check: an `in` line of a payout is its money coming back, helper 133#1).
        // Once per line; an engine that did not answer is an error (the run is tried again).
        let failed_here = order.status == OrderStatus::Failed || self.failed_or_moved.contains(&id.0);
        let protect = order.withdrawal && theirs_ok && !self.by_hand && order.left.is_none() && failed_here;
        if protect {
            match verdicts(PayoutVerdict { order: id, succeeded: true, channel: Some(self.report.channel.clone()) }) {
                Ok(_) | Err(ClearingError::Refused(_)) => {}
                Err(error) => return Err(error),
            }
        }
        // The bank's amount, read like its fee: exact decimal text in the currency's minor unit.
        if order.spec.parse(&line.amount) != Some(order.amount) {
            let reason = format!("amount mismatch: ours {}, theirs {}", order.spec.format(order.amount), line.amount);
            self.open_case(&case_id, line_value(), reason);
            self.note(Class::AmountMismatch, Some(mismatch(Class::AmountMismatch)));
            return Ok(Some(id));
        }
        if let Some((platform, number)) = order.left {
            // A failure here is what moved it (nothing to do) if its note says it tried this
            // channel; a success here means this bank paid it as well as the channel it moved
            // to may, and a line about a payout that never went through this channel is wrong:
            // an operator's case at once.
            let tried_here = match number {
                Some(number) => crate::payouts::PayoutBook::get(self.store, platform, number.as_str())?.is_some_and(|note| note.tried.contains(&self.channel)),
                None => false,
            };
            if theirs_ok && tried_here && !self.by_hand && matches!(order.status, OrderStatus::Failed | OrderStatus::Processing) {
                // This bank paid a payout that moved on from it. Failed for good since: the
                // actor's verdict opens its case and holds what went back (since session 59;
                // before, only this case opened). Still waiting on another channel: the actor
                // marks it (`paid_by_left`: it falls back no further, and a failure for good
                // there holds what goes back) and completes nothing (since session 62; before,
                // only this case opened, and a failure there could send it to a third channel
                // or refund it with nothing held: out twice). The actor's verdict is the one
                // path (the command line reconciles through it too since session 59).
                match verdicts(PayoutVerdict { order: id, succeeded: true, channel: Some(self.report.channel.clone()) }) {
                    Ok(_) | Err(ClearingError::Refused(_)) => {}
                    Err(error) => return Err(error),
                }
            }
            if theirs_ok || !tried_here {
                let ours = if tried_here { "rerouted to another channel after this one" } else { "on another channel, never on this one" };
                let reason = format!("status mismatch: ours {ours}, theirs {}", line.status);
                self.open_case(&case_id, line_value(), reason);
                self.note(Class::StatusMismatch, Some(mismatch(Class::StatusMismatch)));
            } else {
                self.note(Class::Matched, None);
            }
            return Ok(Some(id));
        }
        // A money-in order still waiting has no fee of ours yet: the bank's line gives it (noted
        // as the verdict is applied below), whatever the tariff is now (helper 129#3: a tariff
        // changed since the bank decided made it a fee mismatch, and the verdict was never
        // applied).
        // (A line's fee past the order's amount is no fee: compared, a mismatch, helper 130#7.)
        let their_fee_fits = line.fee.as_deref().and_then(|fee| order.spec.parse(fee)).is_some_and(|fee| (0..=order.amount).contains(&fee));
        let fee_known = order.withdrawal || order.fee.is_some() || order.verdict().is_some() || !their_fee_fits || !theirs_ok;
        if let (Some(their_fee), true, None) = (&line.fee, fee_known, &listed_again) {
            // A failed order costs nothing; otherwise the fee we charged (payouts), noted (money
            // in, since session 68) or the channel's tariff (money in decided before).
            let ours_fee = if !theirs_ok { 0 } else { order.fee.unwrap_or_else(|| self.tariff.map_or(0, |c| c.fee(order.amount))) };
            if order.spec.parse(their_fee) != Some(ours_fee) {
                let reason = format!("fee mismatch: ours {}, theirs {their_fee}", order.spec.format(ours_fee));
                self.open_case(&case_id, line_value(), reason);
                self.note(Class::FeeMismatch, Some(mismatch(Class::FeeMismatch)));
                return Ok(Some(id));
            }
        }
        match order.verdict() {
            Some(ok) if ok == theirs_ok => match &listed_again {
                // (Another failed line moves no money: matched.)
                Some(first) if theirs_ok => {
                    self.open_case(&case_id, line_value(), again_reason(first));
                    self.note(Class::StatusMismatch, Some(mismatch(Class::StatusMismatch)));
                }
                _ => self.note(Class::Matched, None),
            },
            Some(_) => {
                let mut held = String::new();
                if protect {
                    // The bank's own statement says it paid a payout that failed for good: the
                    // verdict went through `verdicts` above (refused, as ever), whose case holds
                    // what went back to the account (before session 59 only this case opened,
                    // and nothing held the money).
                    held = format!("; the money that went back: case case_paid_after_failure_{}_{}", id.0, self.channel);
                }
                let reason = format!("status mismatch: ours {}, theirs {}{held}", order.status.name(), line.status);
                let mut line_value = line_value();
                if !theirs_ok && !self.by_hand {
                    self.want_hold(id, &order, &mut line_value);
                }
                self.open_case(&case_id, line_value, reason);
                self.note(Class::StatusMismatch, Some(mismatch(Class::StatusMismatch)));
            }
            None if listed_again.is_some() => {
                // Still waiting, and another line listed it: which line is the bank's word is
                // an operator's to find out; nothing applied.
                self.open_case(&case_id, line_value(), again_reason(listed_again.as_deref().unwrap_or_default()));
                self.note(Class::StatusMismatch, Some(mismatch(Class::StatusMismatch)));
            }
            None if self.by_hand => {
                // One operator's pasted text is not the bank's word: a case, for the verdict to
                // come from the bank's channel (callback, status query or its own statement).
                let reason = format!("waiting for the bank's verdict; a statement pasted by hand says {}", line.status);
                self.open_case(&case_id, line_value(), reason);
                self.note(Class::StatusMismatch, Some(mismatch(Class::StatusMismatch)));
            }
            None => {
                // The safe case: we wait, the bank has decided. Apply its verdict (a payout's
                // through `verdicts`, which checks it is still on this channel).
                let applied = if order.withdrawal {
                    match verdicts(PayoutVerdict { order: id, succeeded: theirs_ok, channel: Some(self.report.channel.clone()) }) {
                        Ok(VerdictOutcome::Completed { status, .. }) => Applied::Status(status),
                        Ok(VerdictOutcome::Rerouted { status, .. }) => Applied::Status(Some(status)),
                        // It left this channel since it was read (a fallback): a failure here is
                        // what moved it; a success here means this bank paid it too.
                        Ok(VerdictOutcome::Stale { .. }) if !theirs_ok => Applied::AlreadyAgrees,
                        Ok(VerdictOutcome::Stale { .. }) => Applied::Differs("rerouted to another channel"),
                        Err(ClearingError::Refused(_)) => Applied::Differs("given the opposite verdict meanwhile"),
                        Err(error) => return Err(error),
                    }
                } else {
                    // Its fee as the bank's line says (the same as ours, checked above), noted
                    // before the verdict (`fees::note`; the first note stays).
                    if theirs_ok {
                        let fee = line.fee.as_deref().and_then(|fee| order.spec.parse(fee)).or(order.fee);
                        let fee = fee.unwrap_or_else(|| self.tariff.map_or(0, |c| c.fee(order.amount)));
                        crate::fees::note(self.store, order.created_day, id, fee).map_err(|e| ClearingError::Storage(e.to_string()))?;
                    }
                    let command = Command::CompleteRecharge { order: id, succeeded: theirs_ok };
                    let reply = engine.execute_one(Envelope { platform: 0, out_order_no: None, command })?;
                    if reply.is_ok() {
                        Applied::Status(reply.status.map(|s| s.name()))
                    } else {
                        Applied::Differs("given the opposite verdict meanwhile")
                    }
                };
                if let Applied::Status(Some("failed" | "processing")) = applied {
                    // Failed here (its money back) or moved to another channel by this line: a
                    // later paid line of this run about the order is judged so (the ledger was
                    // read before: helper 132#1).
                    self.failed_or_moved.insert(id.0);
                }
                match applied {
                    Applied::Status(status) => self.note(Class::AutoResolved, Some(Finding::AutoResolved { order_id: bank::order_ref(id), status })),
                    Applied::AlreadyAgrees => self.note(Class::Matched, None),
                    Applied::Differs(what) => {
                        let reason = format!("status mismatch: ours {what} while reconciling, theirs {}", line.status);
                        // A recharge a callback credited while the run read the file, which the
                        // bank's line says failed (review 130#4): held as above.
                        let mut line_value = line_value();
                        if !theirs_ok && !self.by_hand {
                            self.want_hold(id, &order, &mut line_value);
                        }
                        self.open_case(&case_id, line_value, reason);
                        self.note(Class::StatusMismatch, Some(mismatch(Class::StatusMismatch)));
                    }
                }
            }
        }
        Ok(Some(id))
    }

    /// A line that names no order of ours: carried while it is young, then declared (a case).
    fn missing_ours(&mut self, line: StatementLine, carry_key: Vec<u8>, case_id: String, carried_since: Option<u32>, declared: bool) {
        let first_day = carried_since.unwrap_or(self.day).min(self.day);
        if declared || self.day.saturating_sub(first_day) >= CARRY_DAYS {
            let reason = "missing on our side (长款): the bank lists an order we do not have".to_string();
            self.open_case(&case_id, serde_json::to_value(&line).expect("lines serialize"), reason);
            self.note(Class::MissingOurs, Some(Finding::MissingOurs { bank_ref: line.bank_ref.clone(), case_id }));
            if !declared {
                self.report.carries.push((carry_key, Some(Carried { line, first_day, declared: true })));
            }
        } else {
            self.note(Class::Carried, Some(Finding::Carried { bank_ref: line.bank_ref.clone(), first_seen: date_text(first_day) }));
            self.report.carries.push((carry_key, Some(Carried { line, first_day, declared: false })));
        }
    }

    /// Our order of the day that the bank does not list: a case once it is final.
    fn missing_theirs(&mut self, id: OrderId, order: &Ours) {
        let order_id = bank::order_ref(id);
        if order.verdict().is_none() {
            self.note(Class::AwaitingBank, Some(Finding::AwaitingBank { order_id }));
            return;
        }
        let case_id = format!("recon_{}{}_{order_id}", if self.by_hand { "hand_" } else { "" }, self.channel);
        let line = serde_json::json!({"order_id": order_id, "amount": order.spec.format(order.amount), "status": order.status.name()});
        self.open_case(&case_id, line, "missing on their side (短款): our order is not on the bank's statement".into());
        self.note(Class::MissingTheirs, Some(Finding::MissingTheirs { order_id, case_id }));
    }
}

impl ReconcileReport {
    /// Takes the cases to open out of the report.
    pub fn take_cases(&mut self) -> Vec<CaseOpening> {
        std::mem::take(&mut self.cases)
    }

    /// Writes the carried lines in one synced write (after the cases are open), then deletes
    /// the carries that ended (in one more: a stop in between leaves an ended carry, which the
    /// next run matches again and deletes).
    pub fn write_carries(&mut self, store: &dyn Store) -> Result<(), ClearingError> {
        let lined = std::mem::take(&mut self.lined);
        if !lined.is_empty() {
            let puts: Vec<(&[u8], &[u8])> = lined.iter().map(|(key, bank_ref)| (key.as_slice(), bank_ref.as_bytes())).collect();
            store.write(&puts).map_err(|e| ClearingError::Storage(e.to_string()))?;
        }
        if let Some(channel) = self.lined_channel.take() {
            // Orders older than any run looks at again (housekeeping: an error is the next
            // run's to retry).
            let (start, end) = (format!("r/lined/{channel:05}/"), format!("r/lined/{channel:05}/{:08}", self.lined_before));
            if let Err(error) = store.delete_range(start.as_bytes(), end.as_bytes()) {
                tracing::warn!("reconciliation: old first-line records not dropped: {error}");
            }
        }
        let carries = std::mem::take(&mut self.carries);
        let mut ended = std::mem::take(&mut self.ended);
        let records: Vec<(Vec<u8>, &Carried)> = carries.iter().filter_map(|(key, carried)| Some((key.clone(), carried.as_ref()?))).collect();
        if !records.is_empty() {
            storage::records::put(store, &records).map_err(|e| ClearingError::Storage(e.to_string()))?;
        }
        // A key this run carries again (a null left by an earlier version, now a line missing on
        // our side once more) is not deleted.
        ended.retain(|key| !records.iter().any(|(written, _)| written == key));
        ended.extend(carries.iter().filter(|(_, carried)| carried.is_none()).map(|(key, _)| key.clone()));
        if ended.is_empty() {
            return Ok(());
        }
        let ends: Vec<Vec<u8>> = ended.iter().map(|key| [key.as_slice(), &[0]].concat()).collect();
        let ranges: Vec<(&[u8], &[u8])> = ended.iter().zip(&ends).map(|(start, end)| (start.as_slice(), end.as_slice())).collect();
        store.delete_ranges(&ranges).map_err(|e| ClearingError::Storage(e.to_string()))
    }
}

/// Records what a report found without the actor (the CLI): opens its cases in `book`, then
/// writes its carries.
pub fn record(report: &mut ReconcileReport, store: &dyn Store, book: &mut CaseBook, now_micros: u64) -> Result<(), ClearingError> {
    book.open(store, report.take_cases(), now_micros)?;
    report.write_carries(store)
}
