//! The nightly settlement run of a business date, shared by the clearing actor (the API and the
//! daily schedule) and `clearing settle`: for each platform, guarantee payments past its
//! auto-confirm limit are confirmed, unsettled income past its cycle matures with the platform's
//! settlement rule (commissions, service fee), then each channel's charges for the day's orders
//! are booked, expired freezes released and the invariants checked. Every step is idempotent, so
//! re-running a date changes nothing. `Schedule` decides when the daily run is due.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::ledger::command::{Command, Envelope, StepProgress};
use engine::ledger::types::{OrderDetail, OrderId, OrderStatus, SettlementRule};
use engine::money::{CurrencyId, Minor};
use engine::{Engine, EngineError};
use serde::Serialize;

use crate::calendar::{date_text, Calendar};
use crate::channels::ChannelSet;

/// How long a settlement run waits for the cross-shard credits sent before it to land.
const CREDITS_WAIT: Duration = Duration::from_secs(60);

/// A platform's terms for one run: its cycles and the settlement rule in force that day.
#[derive(Clone, Debug)]
pub struct PlatformTerms {
    pub id: u32,
    /// The id as the API shows it (`plt_7`).
    pub public_id: String,
    pub auto_confirm_days: u8,
    pub settlement_cycle_days: u8,
    pub rule: Option<Box<SettlementRule>>,
}

/// What a run did, per platform and in total.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SettlementSummary {
    pub business_date: String,
    pub platforms: Vec<PlatformSettlement>,
    pub channel_fees: Vec<ChannelFees>,
    pub expired_freezes: u64,
    pub invariants_ok: bool,
}

/// One platform's part of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlatformSettlement {
    pub platform_id: String,
    pub matured_accounts: u64,
    pub auto_confirmed_orders: u64,
    /// The last business day of income that matured (none while the cycle reaches before 1970).
    pub income_through: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub totals: Option<Vec<CurrencyTotals>>,
}

/// What the settlement of a date charged a platform's accounts in one currency.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CurrencyTotals {
    pub currency: String,
    pub matured: String,
    pub commission: String,
    pub service_fee: String,
    pub net: String,
}

/// One channel's charges for one shard's orders of a day, as booked by the run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChannelFees {
    pub channel: String,
    pub business_date: String,
    pub shard: u16,
    pub currency: String,
    pub orders: u64,
    pub fees: String,
    pub booked_now: String,
}

/// The bounds of the nightly run's steps (the step commands carry them, so replay does what each
/// step did whichever build replays it; changing these changes only later runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepBounds {
    /// The most orders confirmed or examined (auto-confirm), freezes released or accounts
    /// matured a step.
    pub items: u32,
    /// The most account indices a maturing step examines.
    pub examined: u32,
    /// The most chunks of stored orders (4,096 orders each) a step that walks open orders touches.
    pub chunks: u32,
}

impl StepBounds {
    /// The nightly run's: 4,096 items; 262,144 indices examined (a median 1.2 ms for 65,536 of
    /// them, half with another platform's lots, in a timing run of session 62 on machine F: ten
    /// million accounts are about 40 steps a platform a shard when little is due); 32 chunks.
    pub const NIGHTLY: StepBounds = StepBounds { items: 4096, examined: 262_144, chunks: 32 };
}

/// Confirms the platform's held guarantee payments created before `created_before` on every
/// shard, in steps (`AutoConfirmStep`) that each examine at most `bounds.items` open orders of
/// at most `bounds.chunks` chunks of stored orders, so no shard batch does work that grows with
/// history and payments interleave with the run. Returns how many were confirmed.
pub fn auto_confirm(engine: &Engine, platform: u32, created_before: engine::ledger::types::Timestamp, bounds: StepBounds) -> Result<u64, EngineError> {
    in_steps(engine, platform, |shard, after| Command::AutoConfirmStep { shard, created_before, after, orders_max: bounds.items, chunks_max: bounds.chunks })
}

/// Matures the platform's (every platform's for the operator, 0) income of business days up to
/// `through_day` with `rule` on every shard, in steps (`SettleChunk`) of at most `bounds.items`
/// matured accounts and `bounds.examined` examined each (before session 62 one `Settle` a shard
/// matured them all in one batch). Returns how many accounts matured.
pub fn mature(engine: &Engine, platform: u32, through_day: u32, rule: Option<&SettlementRule>, bounds: StepBounds) -> Result<u64, EngineError> {
    let rule = rule.map(|rule| Box::new(rule.clone()));
    in_steps(engine, platform, |shard, after| Command::SettleChunk {
        shard,
        through_day,
        rule: rule.clone(),
        after,
        accounts_max: bounds.items,
        examined_max: bounds.examined,
    })
}

/// Releases the freezes on every shard whose expiry is at or before `expired_before` (and the
/// batch's time), in steps (`ExpireFreezesChunk`) of at most `bounds.items` freezes of
/// `bounds.chunks` chunks of stored orders each (before session 62 one `ExpireFreezes` a shard
/// released them all in one batch). Returns how many.
pub fn expire_freezes(engine: &Engine, expired_before: engine::ledger::types::Timestamp, bounds: StepBounds) -> Result<u64, EngineError> {
    in_steps(engine, 0, |shard, _| Command::ExpireFreezesChunk { shard, expired_before, freezes_max: bounds.items, chunks_max: bounds.chunks })
}

/// Runs a nightly command in bounded steps on every shard until each says it is done (its
/// reply's `StepProgress` has no `resume_at`): `step` makes a shard's next command from where
/// it resumes (0 first). The shards work in parallel, one step each at a time, so payments
/// interleave with the run. A step refused ends its shard's part (logged: a refused step
/// changed nothing, and the command is one the run built). Returns the steps' counts summed.
fn in_steps(engine: &Engine, platform: u32, mut step: impl FnMut(u16, u32) -> Command) -> Result<u64, EngineError> {
    let mut next: Vec<Option<u32>> = vec![Some(0); engine.config().shard_count as usize];
    let mut done = 0u64;
    loop {
        let shards: Vec<(usize, u32)> = next.iter().enumerate().filter_map(|(shard, after)| after.map(|after| (shard, after))).collect();
        if shards.is_empty() {
            return Ok(done);
        }
        let steps = shards.iter().map(|&(shard, after)| Envelope { platform, out_order_no: None, command: step(shard as u16, after) }).collect();
        for ((shard, _), reply) in shards.into_iter().zip(engine.execute(steps)?) {
            let progress = if reply.is_ok() {
                StepProgress::of_reply_id(reply.id)
            } else {
                tracing::error!(shard, platform, "settlement: a step was refused: {:?}", reply.code);
                StepProgress { count: 0, resume_at: None }
            };
            done += u64::from(progress.count);
            next[shard] = progress.resume_at;
        }
    }
}

/// Refuses a run by hand of a day more than `days_ahead_max` days past `today`: such a
/// run matures every platform's income early and confirms every held escrow at once, and its
/// tier periods and channel fees' waiting list move to the future (before session 58 a mistyped
/// year in `POST /admin/settlements`, the portal's form or `clearing settle` was enough).
pub fn check_day(day: u32, today: u32, days_ahead_max: u32) -> Result<(), crate::error::ClearingError> {
    if day > today.saturating_add(days_ahead_max) {
        let message = format!(
            "business_date is after today's business date{}: a run matures income and confirms escrow up to its date",
            if days_ahead_max == 0 { String::new() } else { format!(" by more than {days_ahead_max} days") }
        );
        return Err(crate::error::ClearingError::FutureBusinessDate(message));
    }
    Ok(())
}

/// Runs the settlement of business day `day` for every platform in `terms`, calling `progress`
/// after each platform. Blocking: waits on the shards.
pub fn run(
    engine: &Engine,
    store: &dyn storage::Store,
    terms: &[PlatformTerms],
    channels: &ChannelSet,
    day: u32,
    progress: &mut dyn FnMut(usize, &PlatformSettlement),
) -> Result<SettlementSummary, EngineError> {
    let calendar = Calendar { utc_offset_seconds: engine.config().utc_offset_seconds, ..Calendar::default() };
    let mut rows = Vec::new();
    for (index, platform) in terms.iter().enumerate() {
        // Auto-confirm first: what it releases is income that the maturing may then cover.
        let created_before = calendar.day_start_micros(day as i64 - platform.auto_confirm_days as i64 + 1);
        let confirmed = auto_confirm(engine, platform.id, created_before, StepBounds::NIGHTLY)?;
        // Released income travels to receivers on other shards: let it land before maturing.
        engine.wait_credits_applied(CREDITS_WAIT)?;
        let through_day = day.checked_sub(platform.settlement_cycle_days as u32);
        let matured: u64 = match through_day {
            Some(through_day) => mature(engine, platform.id, through_day, platform.rule.as_deref(), StepBounds::NIGHTLY)?,
            None => 0,
        };
        let totals = match through_day {
            Some(through_day) => Some(totals(engine, platform.id, through_day)?),
            None => None,
        };
        let row = PlatformSettlement {
            platform_id: platform.public_id.clone(),
            matured_accounts: matured,
            auto_confirmed_orders: confirmed,
            income_through: through_day.map(date_text),
            totals,
        };
        progress(index + 1, &row);
        rows.push(row);
    }
    // Commissions travel to receivers on other shards: let them land before the statement.
    engine.wait_credits_applied(CREDITS_WAIT)?;
    // The channels' charges for the day's orders (and the day before's, for orders that came in
    // after that run): the bank takes them from the reserve. Booking a day's total again books
    // only what it did not book yet. Orders of earlier days that were still waiting for their
    // channel at an earlier run and have been decided since are booked one by one (`late_fees`).
    // Late rows a run wrote ahead and may not have booked (it stopped): booked first, with the
    // totals they were written with (booking a total again books nothing more).
    let mut fees = Vec::new();
    let ahead = late_rows_ahead(store)?;
    if !ahead.is_empty() {
        fees.extend(book_fees(engine, channels, &ahead)?);
        save_fee_state(store, None, &[])?;
    }
    let stored = waiting_fee_orders(store)?;
    let days = [day.saturating_sub(1), day];
    let (fee_rows, found_waiting) = channel_fees(engine, store, channels, days)?;
    let (late_rows, still_waiting) = late_fees(engine, store, channels, &stored, day)?;
    // Kept for the next runs: what still waits (examined now, or of days after `day`: a run of
    // an earlier day again leaves them as they were), within `FEE_WAITING_DAYS_MAX`.
    let mut waiting_after: Vec<WaitingFee> = stored.into_iter().filter(|w| w.day > day).collect();
    waiting_after.extend(still_waiting);
    waiting_after.extend(found_waiting);
    waiting_after.retain(|w| w.day.saturating_add(FEE_WAITING_DAYS_MAX) >= day);
    waiting_after.sort_by_key(|w| (std::cmp::Reverse(w.day), w.shard, w.order));
    waiting_after.dedup_by_key(|w| (w.shard, w.order));
    if waiting_after.len() > FEE_WAITING_ORDERS_MAX {
        tracing::warn!(
            business_date = %date_text(day),
            "settlement: {} channel orders wait for their verdict; the fees of the oldest {} will not be booked when they are decided",
            waiting_after.len(),
            waiting_after.len() - FEE_WAITING_ORDERS_MAX
        );
        waiting_after.truncate(FEE_WAITING_ORDERS_MAX);
    }
    // The late rows' totals depend on what their days had booked when read: written ahead in
    // one write with the orders still waiting (the decided ones leave the list in the same
    // write), so a stop anywhere after it books them at most once (the next run books them
    // first, with these totals), never twice. The days' own rows are written ahead too: a run
    // of an earlier day by hand has just dropped its days' waiting orders from the list,
    // counting on its rows, and no later run looks at those days again (before session 58 a
    // stop here lost their fees).
    let rows_ahead: Vec<ChannelFeeRow> = fee_rows.iter().chain(&late_rows).copied().collect();
    save_fee_state(store, Some(&waiting_after), &rows_ahead)?;
    fees.extend(book_fees(engine, channels, &rows_ahead)?);
    if !rows_ahead.is_empty() {
        save_fee_state(store, None, &[])?;
    }
    // Money-in fees noted of days no run looks at again (older than the orders kept waiting).
    // Housekeeping: a failure is logged, the run goes on (the next run prunes them).
    if let Err(error) = crate::fees::prune_before(store, day.saturating_sub(FEE_WAITING_DAYS_MAX + 1)) {
        tracing::warn!(business_date = %date_text(day), "settlement: the money-in fee notes of old days were not dropped: {error}");
    }
    // Freezes that expire after this point are the next run's (a fixed cut-off ends the steps).
    // The shards' batch time is the wall clock, or ahead of it after the host's clock stepped
    // back (it never goes back): the later of the two, as one command at this point would have.
    let batch_time = engine.counters().iter().map(|c| c.last_batch_at.load(std::sync::atomic::Ordering::Relaxed)).max().unwrap_or(0);
    let cut_off = crate::calendar::Clock::now_micros(&crate::calendar::SystemClock).max(batch_time);
    let expired = expire_freezes(engine, cut_off, StepBounds::NIGHTLY)?;
    // The shards are read at one moment: under load that can take a few tries, and the run's
    // work is done by now, so it waits for them rather than fail (helper 106).
    let mut tries = 0;
    let invariants = loop {
        match engine::invariants::check_engine(engine) {
            Err(engine::EngineError::Overloaded(_)) if tries < INVARIANT_TRIES => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            checked => break checked?,
        }
    };
    Ok(SettlementSummary { business_date: date_text(day), platforms: rows, channel_fees: fees, expired_freezes: expired, invariants_ok: invariants.ok })
}

/// Checks of the invariants a run makes at its end while the shards cannot be read at one moment.
const INVARIANT_TRIES: u32 = 20;

/// The channel an order went through, if any.
pub fn channel_of(detail: &OrderDetail) -> Option<u16> {
    match detail {
        OrderDetail::Withdrawal { channel, .. } | OrderDetail::Recharge { channel } => Some(*channel),
        OrderDetail::Payment { channel, .. } => *channel,
        _ => None,
    }
}

/// Books `rows` (`ChargeChannelFees`: each total less what its day has booked) and reports them.
fn book_fees(engine: &Engine, channels: &ChannelSet, rows: &[ChannelFeeRow]) -> Result<Vec<ChannelFees>, EngineError> {
    let mut fees = Vec::new();
    for row in rows {
        let command = Command::ChargeChannelFees { shard: row.shard, channel: row.channel, day: row.day, currency: row.currency, total: row.total };
        let reply = engine.execute_one(Envelope { platform: 0, out_order_no: None, command })?;
        if !reply.is_ok() {
            tracing::error!(business_date = %date_text(row.day), shard = row.shard, channel = row.channel, "settlement: channel fees refused: {:?}", reply.code);
        }
        let spec = engine.config().currencies[row.currency.0 as usize];
        fees.push(ChannelFees {
            channel: channels.name(row.channel),
            business_date: date_text(row.day),
            shard: row.shard,
            currency: spec.code_str().to_string(),
            orders: row.orders,
            fees: spec.format(row.total),
            booked_now: spec.format(reply.id as Minor),
        });
    }
    Ok(fees)
}

/// One channel's charges for one shard's orders of a day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct ChannelFeeRow {
    day: u32,
    shard: u16,
    channel: u16,
    currency: CurrencyId,
    total: Minor,
    orders: u64,
}

/// Channel orders that were still waiting for their channel at the last run (`sf/waiting`,
/// JSON), to book their fees once they are decided: (shard, order, the day it was created).
const WAITING_FEE_ORDERS: &[u8] = b"sf/waiting";
/// How long an order still waiting is looked at again at each run: one decided later than
/// this is not booked (forgotten).
pub const FEE_WAITING_DAYS_MAX: u32 = 62;
/// Orders kept waiting for their fee at most (the newest days first): past this, the oldest
/// are forgotten.
pub const FEE_WAITING_ORDERS_MAX: usize = 100_000;
/// Orders one `read_shard` of the fees' work reads (the shard's batches wait meanwhile).
const FEE_ORDERS_PER_READ: usize = 16_384;
/// Pieces of history out of memory one `read_shard` of the late fees reads back at most.
const FEE_COLD_READS_MAX: usize = 32;

/// A channel order that waited for its channel at a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct WaitingFee {
    shard: u16,
    order: u64,
    day: u32,
}

fn waiting_fee_orders(store: &dyn storage::Store) -> Result<Vec<WaitingFee>, EngineError> {
    let value = store.get(WAITING_FEE_ORDERS).map_err(|e| EngineError::Storage(e.to_string()))?;
    value.map_or(Ok(Vec::new()), |bytes| serde_json::from_slice(&bytes).map_err(|e| EngineError::Storage(format!("sf/waiting: {e}"))))
}

/// Rows written ahead of their booking (`sf/late`, JSON; empty once booked): the run's late
/// rows, and since session 58 its days' own rows before them.
const LATE_ROWS_AHEAD: &[u8] = b"sf/late";

fn late_rows_ahead(store: &dyn storage::Store) -> Result<Vec<ChannelFeeRow>, EngineError> {
    let value = store.get(LATE_ROWS_AHEAD).map_err(|e| EngineError::Storage(e.to_string()))?;
    value.map_or(Ok(Vec::new()), |bytes| serde_json::from_slice(&bytes).map_err(|e| EngineError::Storage(format!("sf/late: {e}"))))
}

/// Writes, in one synced write, the rows about to be booked and (when given) the orders still
/// waiting.
fn save_fee_state(store: &dyn storage::Store, waiting: Option<&[WaitingFee]>, late: &[ChannelFeeRow]) -> Result<(), EngineError> {
    let late = serde_json::to_vec(late).expect("rows serialize");
    let waiting = waiting.map(|waiting| serde_json::to_vec(waiting).expect("waiting orders serialize"));
    let mut puts: Vec<(&[u8], &[u8])> = vec![(LATE_ROWS_AHEAD, &late)];
    if let Some(waiting) = &waiting {
        puts.push((WAITING_FEE_ORDERS, waiting));
    }
    store.write(&puts).map_err(|e| EngineError::Storage(e.to_string()))
}

/// What channel `channel` charges for `order` once carried out: a payout the fee booked with it,
/// money in the fee noted at its verdict (`fees::note`: the tariff then, or the bank's word
/// from a statement), else the channel's tariff now (an order decided before session 68, or
/// whose note could not be written).
fn fee_of(order: &engine::ledger::types::Order, channel: u16, tariffs: &HashMap<u16, bank::Tariff>, noted: Option<Minor>) -> Minor {
    match order.detail {
        OrderDetail::Withdrawal { fee, .. } => fee,
        _ => noted.unwrap_or_else(|| tariffs.get(&channel).map_or(0, |t| t.fee(order.amount))),
    }
}

fn store_error(error: storage::StorageError) -> EngineError {
    EngineError::Storage(error.to_string())
}

/// What each channel charges (its tariff) for each shard's orders of the business `days` that
/// it carried out: payouts at the fee we booked with them, money in at the channel's tariff.
/// Each day's orders are one run of each shard's orders (found by bisection: a shard's
/// timestamps never go back), read `FEE_ORDERS_PER_READ` at a time. Only rows with a positive
/// total, in day order; and the orders of `days` still waiting for their channel.
fn channel_fees(
    engine: &Engine,
    store: &dyn storage::Store,
    channels: &ChannelSet,
    days: [u32; 2],
) -> Result<(Vec<ChannelFeeRow>, Vec<WaitingFee>), EngineError> {
    let tariffs: Arc<HashMap<u16, bank::Tariff>> = Arc::new(channels.all().iter().map(|c| (c.id, c.tariff())).collect());
    let calendar = Calendar { utc_offset_seconds: engine.config().utc_offset_seconds, ..Calendar::default() };
    let mut rows = Vec::new();
    let mut waiting = Vec::new();
    let days: std::collections::BTreeSet<u32> = days.into_iter().collect();
    for shard in 0..engine.config().shard_count {
        for &day in &days {
            let (start, end) = (calendar.day_start_micros(day as i64), calendar.day_start_micros(day as i64 + 1));
            let (first, last) = engine.read_shard(shard, move |state| {
                (state.orders.partition_point(|o| o.created_at < start), state.orders.partition_point(|o| o.created_at < end))
            })?;
            let mut sums: BTreeMap<(u16, u8), (Minor, u64)> = BTreeMap::new();
            let mut from = first;
            while from < last {
                let to = last.min(from + FEE_ORDERS_PER_READ);
                let tariffs = tariffs.clone();
                // Each decided order's fee: a payout's, or money in's at the tariff now with its
                // id, whose note (read after the slice: an order seen decided was noted before
                // its verdict) replaces it. The notes of the slice's orders only (a day's can be
                // millions).
                type Decided = (u16, u8, Minor, Option<OrderId>);
                let (mut part, waits) = engine.read_shard(shard, move |state| {
                    let (mut part, mut waits): (Vec<Decided>, Vec<u64>) = (Vec::new(), Vec::new());
                    state.orders.scan_range(from..to, |order| {
                        let Some(channel) = channel_of(&order.detail) else { return };
                        let money_in = (!matches!(order.detail, OrderDetail::Withdrawal { .. })).then_some(order.id);
                        match order.status {
                            OrderStatus::Pending | OrderStatus::Processing => waits.push(order.id.0),
                            OrderStatus::Failed => {}
                            _ => part.push((channel, order.currency.0, fee_of(order, channel, &tariffs, None), money_in)),
                        }
                    });
                    (part, waits)
                })?;
                let wanted: Vec<(u32, OrderId)> = part.iter().filter_map(|(_, _, _, id)| id.map(|id| (day, id))).collect();
                let mut notes = crate::fees::of_orders(store, &wanted).map_err(store_error)?.into_iter();
                for decided in part.iter_mut().filter(|decided| decided.3.is_some()) {
                    if let Some(fee) = notes.next().flatten() {
                        decided.2 = fee;
                    }
                }
                for (channel, currency, fee, _) in part {
                    let sum = sums.entry((channel, currency)).or_default();
                    sum.0 = sum.0.saturating_add(fee);
                    sum.1 += 1;
                }
                waiting.extend(waits.into_iter().map(|order| WaitingFee { shard, order, day }));
                from = to;
            }
            for ((channel, currency), (total, orders)) in sums {
                if total > 0 {
                    rows.push(ChannelFeeRow { day, shard, channel, currency: CurrencyId(currency), total, orders });
                }
            }
        }
    }
    rows.sort_by_key(|r| (r.day, r.shard, r.channel, r.currency.0));
    Ok((rows, waiting))
}

/// The fees of orders that waited for their channel at an earlier run, created before the
/// days this run reads (`day` and the one before), and decided since: one row per (shard,
/// channel, day, currency) whose total is what that day has booked plus these orders' fees (so
/// `ChargeChannelFees` books exactly them, whatever the tariff is now for the day's other
/// orders); and those still waiting.
fn late_fees(
    engine: &Engine,
    store: &dyn storage::Store,
    channels: &ChannelSet,
    stored: &[WaitingFee],
    day: u32,
) -> Result<(Vec<ChannelFeeRow>, Vec<WaitingFee>), EngineError> {
    let tariffs: Arc<HashMap<u16, bank::Tariff>> = Arc::new(channels.all().iter().map(|c| (c.id, c.tariff())).collect());
    let mut rows = Vec::new();
    let mut still = Vec::new();
    for shard in 0..engine.config().shard_count {
        let mine: Vec<WaitingFee> = stored.iter().filter(|w| w.shard == shard && w.day < day.saturating_sub(1)).copied().collect();
        let mut sums: BTreeMap<(u16, u32, u8), (Minor, u64)> = BTreeMap::new();
        // In order (so orders of one piece of history come together), at most
        // `FEE_COLD_READS_MAX` pieces read back from the store per `read_shard`.
        let mut mine = mine;
        mine.sort_by_key(|w| w.order);
        let mine = Arc::new(mine);
        let mut from = 0;
        while from < mine.len() {
            let (entries, tariffs) = (mine.clone(), tariffs.clone());
            let (decided, waits, next) = engine.read_shard(shard, move |state| {
                let (mut decided, mut waits, mut cold_reads) = (Vec::new(), Vec::new(), 0);
                let mut at = from;
                while at < entries.len() && at - from < FEE_ORDERS_PER_READ {
                    let w = entries[at];
                    let id = OrderId(w.order);
                    let local = usize::try_from(id.local_index(state.shard_count)).unwrap_or(usize::MAX);
                    if !state.orders.is_resident(local) {
                        if cold_reads == FEE_COLD_READS_MAX {
                            break;
                        }
                        cold_reads += 1;
                    }
                    at += 1;
                    let Some(order) = state.order(id) else { continue };
                    let Some(channel) = channel_of(&order.detail) else { continue };
                    match order.status {
                        OrderStatus::Pending | OrderStatus::Processing => waits.push(w),
                        OrderStatus::Failed => {}
                        _ => {
                            let money_in = (!matches!(order.detail, OrderDetail::Withdrawal { .. })).then_some(id);
                            decided.push((channel, w.day, order.currency.0, fee_of(order, channel, &tariffs, None), money_in));
                        }
                    }
                }
                (decided, waits, at)
            })?;
            from = next;
            // The money-in orders' notes, read after the orders (as `channel_fees` does).
            let mut decided = decided;
            let wanted: Vec<(u32, OrderId)> = decided.iter().filter_map(|(_, day, _, _, id)| id.map(|id| (*day, id))).collect();
            let mut notes = crate::fees::of_orders(store, &wanted).map_err(store_error)?.into_iter();
            for decided in decided.iter_mut().filter(|decided| decided.4.is_some()) {
                if let Some(fee) = notes.next().flatten() {
                    decided.3 = fee;
                }
            }
            for (channel, day, currency, fee, _) in decided {
                let sum = sums.entry((channel, day, currency)).or_default();
                sum.0 = sum.0.saturating_add(fee);
                sum.1 += 1;
            }
            still.extend(waits);
        }
        for ((channel, day, currency), (fees, orders)) in sums {
            if fees > 0 {
                let booked = engine.read_shard(shard, move |state| state.channel_fees.get(&(channel, day, currency)).copied().unwrap_or(0))?;
                rows.push(ChannelFeeRow { day, shard, channel, currency: CurrencyId(currency), total: booked.saturating_add(fees), orders });
            }
        }
    }
    Ok((rows, still))
}

/// What the settlement of `through_day`'s income charged a platform's accounts, per currency:
/// matured income, commission, service fee and what stayed with the accounts (from every run of
/// that date, so a re-run shows the same figures).
fn totals(engine: &Engine, platform: u32, through_day: u32) -> Result<Vec<CurrencyTotals>, EngineError> {
    let mut sums: BTreeMap<u8, [i128; 4]> = BTreeMap::new();
    for shard in 0..engine.config().shard_count {
        let part = engine.read_shard(shard, move |state| {
            // The shard keeps these sums per (day, platform, currency): no settled row is read.
            state
                .settled_days
                .range((through_day, platform, 0)..=(through_day, platform, u8::MAX))
                .map(|((_, _, currency), day)| (*currency, [day.matured, day.commission, day.service_fee, day.matured - day.commission - day.service_fee]))
                .collect::<Vec<(u8, [i128; 4])>>()
        })?;
        for (currency, figures) in part {
            let sum = sums.entry(currency).or_default();
            for (total, figure) in sum.iter_mut().zip(figures) {
                *total += figure;
            }
        }
    }
    let currencies = &engine.config().currencies;
    let format = |spec: &engine::money::CurrencySpec, value: i128| spec.format(Minor::try_from(value).unwrap_or(Minor::MAX));
    Ok(sums
        .into_iter()
        .map(|(currency, [matured, commission, service_fee, net])| {
            let spec = currencies[currency as usize];
            CurrencyTotals {
                currency: spec.code_str().to_string(),
                matured: format(&spec, matured),
                commission: format(&spec, commission),
                service_fee: format(&spec, service_fee),
                net: format(&spec, net),
            }
        })
        .collect())
}

/// How long the schedule waits before it tries a failed run again.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);

/// The last business day whose run the schedule saw succeed (`sf/schedule`, JSON), so that a
/// start after missed cut-offs runs those days first.
const SCHEDULE_STATE: &[u8] = b"sf/schedule";

/// Missed days a start makes up for at most (older ones are left to an operator's run).
pub const CATCH_UP_DAYS_MAX: u32 = 7;

/// The last day whose run the schedule saw succeed, as stored (`None` before the first).
pub fn last_scheduled_success(store: &dyn storage::Store) -> Result<Option<u32>, EngineError> {
    let value = store.get(SCHEDULE_STATE).map_err(|e| EngineError::Storage(e.to_string()))?;
    value.map_or(Ok(None), |bytes| serde_json::from_slice(&bytes).map(Some).map_err(|e| EngineError::Storage(format!("sf/schedule: {e}"))))
}

/// Stores the last day whose run the schedule saw succeed.
pub fn save_scheduled_success(store: &dyn storage::Store, day: u32) -> Result<(), EngineError> {
    let value = serde_json::to_vec(&day).expect("a day serializes");
    store.write(&[(SCHEDULE_STATE, &value)]).map_err(|e| EngineError::Storage(e.to_string()))
}

/// When the daily run is due: at the cut-off (business-local minute) of each business day, for
/// that day. A failed run is tried again `RETRY_AFTER` later, for the same day, until it
/// succeeds; the schedule itself never stops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub cutoff_minute: u32,
    /// The business day whose run is next.
    pub next_day: u32,
    /// When a failed run may be tried again.
    pub retry_at: Option<Instant>,
    /// Runs that failed, since the start (a counter for `/metrics`).
    pub failures_total: u64,
    /// Failed runs of `next_day` in a row.
    pub failures_in_a_row: u32,
    pub last_error: Option<String>,
    /// The last day whose run succeeded.
    pub last_success_day: Option<u32>,
}

impl Schedule {
    /// A schedule starting at `now_micros`, after the run of `last_success` (the last day whose
    /// run succeeded, as stored): the day after it, if its cut-off has passed (a stop across
    /// cut-offs: those days run at once, one after another, at most `CATCH_UP_DAYS_MAX` back);
    /// else today's run if the cut-off is still ahead, or tomorrow's. A day already run is not
    /// run again.
    pub fn new(cutoff_minute: u32, calendar: &Calendar, now_micros: u64, last_success: Option<u32>) -> Schedule {
        let (today, minute) = calendar.local(now_micros);
        let upcoming = if minute < cutoff_minute { today } else { today + 1 };
        let next_day = match last_success {
            Some(last) => last.saturating_add(1).clamp(upcoming.saturating_sub(CATCH_UP_DAYS_MAX), upcoming + 1),
            None => upcoming,
        };
        Schedule { cutoff_minute, next_day, retry_at: None, failures_total: 0, failures_in_a_row: 0, last_error: None, last_success_day: last_success }
    }

    /// The day whose run is due now, if one is.
    pub fn due(&self, calendar: &Calendar, now_micros: u64, now: Instant) -> Option<u32> {
        let (today, minute) = calendar.local(now_micros);
        let reached = today > self.next_day || (today == self.next_day && minute >= self.cutoff_minute);
        (reached && self.retry_at.is_none_or(|at| now >= at)).then_some(self.next_day)
    }

    /// Records how the run of `day` ended.
    pub fn finished(&mut self, day: u32, outcome: Result<(), String>, now: Instant) {
        if day != self.next_day {
            return;
        }
        match outcome {
            Ok(()) => {
                self.next_day += 1;
                self.retry_at = None;
                self.failures_in_a_row = 0;
                self.last_error = None;
                self.last_success_day = Some(day);
            }
            Err(error) => {
                self.failures_total += 1;
                self.failures_in_a_row += 1;
                self.last_error = Some(error);
                self.retry_at = Some(now + RETRY_AFTER);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000_000;

    #[test]
    fn the_schedule_survives_a_failed_run_and_tries_again() {
        // Regression: the daily thread returned on its first error and never ran again.
        let calendar = Calendar { utc_offset_seconds: 0, ..Calendar::default() };
        let start = Instant::now();
        let day = 20_000u64;
        let at = |hour: u64| day * 24 * HOUR + hour * HOUR;
        let mut schedule = Schedule::new(23 * 60, &calendar, at(10), None);
        assert_eq!(schedule.due(&calendar, at(22), start), None, "before the cut-off");
        assert_eq!(schedule.due(&calendar, at(23), start), Some(20_000));
        schedule.finished(20_000, Err("shard 1 has stopped".into()), start);
        assert_eq!((schedule.failures_total, schedule.last_error.as_deref()), (1, Some("shard 1 has stopped")));
        assert_eq!(schedule.due(&calendar, at(23), start + Duration::from_secs(1)), None, "not at once");
        assert_eq!(schedule.due(&calendar, at(23), start + RETRY_AFTER), Some(20_000), "the same day, a minute later");
        schedule.finished(20_000, Ok(()), start + RETRY_AFTER);
        assert_eq!((schedule.failures_in_a_row, schedule.last_error.clone(), schedule.last_success_day), (0, None, Some(20_000)));
        assert_eq!(schedule.due(&calendar, at(24 + 22), start + RETRY_AFTER), None, "the next day before its cut-off");
        assert_eq!(schedule.due(&calendar, at(24 + 23), start + RETRY_AFTER), Some(20_001));
        // Started after the cut-off with no run before: tomorrow's is next.
        assert_eq!(Schedule::new(23 * 60, &calendar, at(23), None).next_day, 20_001);
        // A run of another day (an operator's, by hand) does not move the schedule.
        schedule.finished(19_999, Ok(()), start);
        assert_eq!(schedule.next_day, 20_001);
    }

    /// A start after missed cut-offs runs the missed days first, at once and in order, from the
    /// day after the last run that succeeded (at most `CATCH_UP_DAYS_MAX` back); a day already
    /// run is not run again.
    #[test]
    fn a_start_after_missed_cut_offs_runs_the_missed_days_first() {
        let calendar = Calendar { utc_offset_seconds: 0, ..Calendar::default() };
        let start = Instant::now();
        let day = 20_000u32;
        let at = |day: u32, hour: u64| day as u64 * 24 * HOUR + hour * HOUR;
        // Stopped after the run of 20,000; started on 20,003 at 10:00.
        let mut schedule = Schedule::new(23 * 60, &calendar, at(day + 3, 10), Some(day));
        assert_eq!((schedule.next_day, schedule.last_success_day), (day + 1, Some(day)));
        for missed in [day + 1, day + 2] {
            assert_eq!(schedule.due(&calendar, at(day + 3, 10), start), Some(missed), "at once, in order");
            schedule.finished(missed, Ok(()), start);
        }
        assert_eq!(schedule.due(&calendar, at(day + 3, 10), start), None, "today's waits for its cut-off");
        assert_eq!(schedule.due(&calendar, at(day + 3, 23), start), Some(day + 3));
        // Started after today's cut-off: today's run too is made up for.
        assert_eq!(Schedule::new(23 * 60, &calendar, at(day + 3, 23), Some(day + 2)).next_day, day + 3);
        // Already run (by an operator, before the cut-off): not again.
        assert_eq!(Schedule::new(23 * 60, &calendar, at(day, 10), Some(day)).next_day, day + 1);
        // A month stopped: a week is made up for, not the month.
        assert_eq!(Schedule::new(23 * 60, &calendar, at(day + 30, 10), Some(day)).next_day, day + 30 - CATCH_UP_DAYS_MAX);
        // A stored day ahead of the clock (a clock set back) waits for tomorrow's at most.
        assert_eq!(Schedule::new(23 * 60, &calendar, at(day, 10), Some(day + 9)).next_day, day + 1);
    }
}
