//! One shard's ledger state and the pure `apply`: no IO, no clock, no randomness.
//!
//! Every command is validated by a flat list of checks in precedence order and only then
//! applied; a rejected command leaves the state exactly as it was.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::ledger::command::{content_hash, own_key, Command, Envelope, AUTO_CONFIRM_ORDERS_MAX, STEP_CHUNKS_LIMIT, STEP_COUNT_LIMIT};
use crate::ledger::flat::FlatMap;
use crate::ledger::growth::{BatchList, ChunkedVec, DayRuns, OrderBlocks};
use crate::ledger::ops;
use crate::ledger::types::*;
use crate::money::{CurrencyId, CurrencySpec, Minor};
use crate::result::ResultCode;

/// Deterministic fast hashing (FxHash) for lookup maps. Their iteration order never reaches the
/// journal: whatever iterates one sorts first.
pub type FastMap<K, V> = HashMap<K, V, rustc_hash::FxBuildHasher>;

/// What the shard remembers of an order number it has accepted, or (journal format 5 on) whose
/// command it refused with a refusal it keeps (`ResultCode::is_kept_refusal`: the code, no
/// order, `reply.id` 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub content: u64,
    pub reply: Reply,
}

/// What a batch's prefetch found in the store for an order number memory does not hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColdHit {
    /// This shard accepted it (or kept its refusal): the record answers a replay or a conflict.
    Own(IdempotencyRecord),
    /// Another shard accepted it: any use here is a conflict.
    Foreign,
}

/// What the shard knows of an order number, from memory or this batch's prefetch.
enum Seen {
    Record(IdempotencyRecord),
    Foreign,
}

/// Income an account received from a payment, kept on the payee's shard so refunds can be checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Income {
    pub payer: AccountId,
    pub received: Minor,
    pub refunded: Minor,
}

/// The outbox towards one other shard: credits not yet acknowledged, in sequence order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbox {
    pub pending: VecDeque<RemoteCredit>,
    pub next_sequence: u64,
    pub acknowledged: u64,
}

/// A credit `credit_target` sent to suspense: the account it was for, the amount and currency,
/// and how many postings the batch had before it (its suspense posting comes at or after).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Diverted {
    pub account: AccountId,
    pub currency: CurrencyId,
    pub amount: Minor,
    pub from_posting: usize,
}

/// Postings and entries produced by commands, appended into reusable buffers.
#[derive(Debug, Default)]
pub struct Effects {
    pub postings: Vec<Posting>,
    pub entries: Vec<EntryHeader>,
    /// Accounts opened or changed status in this batch (the router's directory learns them).
    pub directory: Vec<(AccountId, u32, CurrencyId, AccountStatus)>,
    /// Credits `credit_target` sent to suspense instead of their account in this batch (the
    /// shard writes a notice of each with the batch: `diversions`); empty but for those.
    pub diverted: Vec<Diverted>,
    open_entry: Option<(usize, EntryHeader)>,
}

impl Effects {
    /// Empties the buffers, keeping their capacity.
    pub fn clear(&mut self) {
        assert!(self.open_entry.is_none(), "an entry was left open");
        self.postings.clear();
        self.entries.clear();
        self.directory.clear();
        self.diverted.clear();
    }
}

/// Income blocks from the shard's next order id's up that stay in memory after a checkpoint: its
/// new payments land there (`ShardState::cool`).
const INCOME_BLOCKS_KEPT: u64 = 2;

/// A piece of history a command touches (`ShardState::warm_history`): the order at a local
/// index, or an income record's block.
#[derive(Clone, Copy, Debug)]
enum HistoryTouch {
    Order(usize),
    Income((OrderId, AccountId)),
}

/// One shard's state: its accounts, open and past orders, idempotency records and outboxes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ShardState {
    pub shard: ShardId,
    pub shard_count: u16,
    pub currencies: Vec<CurrencySpec>,
    pub utc_offset_seconds: i32,
    /// Accounts by local index.
    pub accounts: Vec<Account>,
    /// System account stripes: `[currency * ROLES + role]`.
    pub system: Vec<AccountId>,
    /// The balances of the system stripes, by local index (genesis opens them first), in `i128`:
    /// a stripe sums every movement of its shard over all history, which no per-order limit
    /// bounds (money recharged on one shard and withdrawn on another moves both reserves
    /// further from zero each time), so it must not live in an `i64`. The stripe's
    /// `Account::settled` mirrors it clamped to `i64`, for displays of one stripe only; sums read
    /// `ShardState::balance`.
    pub stripes: Vec<i128>,
    /// (platform, owner, currency) -> account, for "one account per member per currency".
    pub owners: FastMap<(u32, u64, CurrencyId), AccountId>,
    /// Orders by local index.
    pub orders: ChunkedVec<Order>,
    /// Hot idempotency records: the order numbers accepted since the last checkpoint (older ones
    /// are cold rows in the store, see `cold`). Read through `idempotency_record`.
    pub idempotency: FlatMap<IdempotencyRecord>,
    /// The generation a checkpoint in flight is writing cold: still answered from memory until
    /// that checkpoint is durable. Never encoded (a checkpoint's state is taken after sealing).
    #[serde(skip)]
    pub sealed: Option<crate::cold::Sealed>,
    /// Cold records the current batch may look up (`cold::prefetch`), empty between batches.
    #[serde(skip)]
    cold: FastMap<u128, ColdHit>,
    /// Unsettled income lots per account, by local index: (business day, amount), oldest
    /// first. An entry stays (empty) once created, so accounts that keep receiving and spending
    /// do not reallocate.
    pub lots: AccountLots,
    /// (payment, payee) -> income received, on the payee's shard.
    pub income: OrderBlocks<(OrderId, AccountId), Income>,
    /// Outboxes by target shard.
    pub outboxes: Vec<Outbox>,
    /// Highest credit sequence applied from each source shard.
    pub inbound_applied: Vec<u64>,
    pub next_entry: u64,
    /// Open freezes with an expiry (order ids), to release them without scanning every order.
    pub expiring_freezes: BTreeMap<(Timestamp, OrderId), ()>,
    /// The journal batches (sequences, ascending) holding postings of each customer account: how
    /// an account's entries are found in the journal without scanning all of it.
    pub batches_of: FastMap<AccountId, BatchList>,
    /// Every maturing of unsettled income (what settlement statements list), in order.
    pub settled: ChunkedVec<SettledRow>,
    /// Every creation and change of an order on this shard, in order: the platforms' events.
    /// Rebuilt by replay like everything else, so the journal is their durable outbox.
    pub order_changes: ChunkedVec<OrderChange>,
    /// Each account's matured income in the current settlement-rule period (tier measures).
    pub period_totals: FastMap<AccountId, PeriodTotal>,
    /// What each commission receiver got from this shard's accounts in each settlement.
    pub commissions: ChunkedVec<CommissionRow>,
    /// Channel fees booked per (channel, business day, currency) for this shard's orders.
    pub channel_fees: BTreeMap<(u16, u32, u8), Minor>,
    /// Each platform's orders on this shard: how a listing filtered by platform (and by an open
    /// status) costs what the platform holds, not what the shard holds. Derived from the orders,
    /// rebuilt by replay.
    pub platform_orders: FastMap<u32, PlatformOrders>,
    /// By order local index: the local index of the same account's previous order
    /// (`NO_ORDER_INDEX` for its first). With `Account::last_order` it lists an account's orders
    /// newest first without looking at anyone else's. Derived from the orders, rebuilt by replay.
    pub previous_order_of_account: ChunkedVec<u32>,
    /// Orders created per (business day, platform, order kind index, currency): what the
    /// dashboards chart without reading the orders. Derived in `open_order`, rebuilt by replay.
    pub daily_volume: BTreeMap<(u32, u32, u8, u8), VolumeTotal>,
    /// Settlement figures per (`through_day`, platform, currency): the sums of the `settled`
    /// rows, so a dashboard reads the days it shows, not the history. Rebuilt by replay.
    pub settled_days: BTreeMap<(u32, u32, u8), SettledDayTotal>,
    /// Where each `through_day`'s rows are in `settled`: a statement reads that day's chunks
    /// only. Derived from the rows, rebuilt by replay (and by `rebuild_day_runs` after a
    /// checkpoint of format 5 or before).
    pub settled_runs: DayRuns,
    /// Where each `through_day`'s rows are in `commissions` (as `settled_runs`).
    pub commission_runs: DayRuns,
}

/// How many orders one (day, platform, kind, currency) cell saw created, and their amounts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeTotal {
    pub count: u64,
    /// Summed in `i128`: no number of orders can overflow it.
    pub amount: i128,
}

/// What settlement matured and charged for one (through_day, platform, currency).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettledDayTotal {
    /// Accounts whose income matured (settled rows).
    pub accounts: u64,
    pub matured: i128,
    pub commission: i128,
    pub service_fee: i128,
}

/// One platform's orders on a shard, by local index (ascending, so oldest first).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformOrders {
    /// Every order of the platform.
    pub all: ChunkedVec<u32>,
    /// Orders whose status is open (`OrderStatus::is_open`): few, whatever the history.
    pub open: BTreeSet<u32>,
    /// Orders closed other than succeeded (`OrderStatus::is_exceptional`).
    pub exceptional: BTreeSet<u32>,
    /// Every order of the platform by kind (`OrderKind as usize`), so that a listing of a rare
    /// kind (withdrawals among a million payments) reads only that kind.
    pub by_kind: Vec<ChunkedVec<u32>>,
}

impl PlatformOrders {
    /// The platform's orders of `kind`, oldest first (empty when it has none).
    pub fn of_kind(&self, kind: OrderKind) -> Option<&ChunkedVec<u32>> {
        self.by_kind.get(kind as usize)
    }

    /// Puts order `index` in the status sets its `status` belongs to, and in no other.
    fn file_status(&mut self, index: u32, status: OrderStatus) {
        if status.is_open() {
            self.open.insert(index);
        } else {
            self.open.remove(&index);
        }
        if status.is_exceptional() {
            self.exceptional.insert(index);
        } else {
            self.exceptional.remove(&index);
        }
    }
}

/// An account's matured income since `period_start` (a settlement rule's period).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodTotal {
    pub period_start: u32,
    pub credits: u64,
    pub amount: Minor,
}

/// One receiver's commission from one shard's accounts in one settlement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommissionRow {
    pub through_day: u32,
    pub platform: u32,
    pub receiver: AccountId,
    pub currency: CurrencyId,
    pub amount: Minor,
    /// How many accounts' commissions it gathers.
    pub accounts: u32,
}

/// Income of one account that a settlement run made withdrawable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettledRow {
    /// The last business day of income it covered (`Mature::through_day`).
    pub through_day: u32,
    pub account: AccountId,
    pub platform: u32,
    pub currency: CurrencyId,
    pub amount: Minor,
    pub at: Timestamp,
    /// Income credits the matured lots held.
    pub credits: u32,
    /// The period measure (amount or credits, by the rule's basis) that picked the tier.
    pub period_measure: i64,
    pub rate_ppm: u32,
    pub commission: Minor,
    pub service_fee: Minor,
}

/// An order was created or changed (its status may be the same, e.g. a partial confirm).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderChange {
    pub order: OrderId,
    pub platform: u32,
    pub status: OrderStatus,
    pub at: Timestamp,
}

impl ShardState {
    /// True once genesis has run.
    pub fn is_initialized(&self) -> bool {
        self.shard_count > 0
    }

    /// Applies one command at time `now`, appending its postings to `fx`. Pure and deterministic.
    pub fn apply(&mut self, envelope: &Envelope, now: Timestamp, fx: &mut Effects) -> Reply {
        self.apply_keyed(envelope, own_key(envelope), now, crate::journal::JOURNAL_FORMAT_VERSION, fx)
    }

    /// Applies `envelopes` in order at time `now` as `apply` does each (except those `skip`
    /// marks: left out, answered `Overloaded`), pushing each reply to `replies`. The same
    /// outcome as `apply` one by one; each command's record slot (hot, and sealed if a
    /// checkpoint is in flight) is asked for `PREFETCH_AHEAD` commands before it is looked up,
    /// so the lookups' cache misses overlap (a batch's order numbers are in tables of MBs).
    pub fn apply_all(&mut self, envelopes: &[Envelope], skip: Option<&[bool]>, now: Timestamp, fx: &mut Effects, replies: &mut Vec<Reply>) {
        self.apply_all_as(crate::journal::JOURNAL_FORMAT_VERSION, envelopes, skip, now, fx, replies);
    }

    /// `apply_all` under the rules of journal format `version` (a replayed batch's own: see
    /// `journal::JOURNAL_FORMAT_VERSION`), so that a batch written by an older build replays
    /// to exactly the postings it recorded.
    pub fn apply_all_as(&mut self, version: u8, envelopes: &[Envelope], skip: Option<&[bool]>, now: Timestamp, fx: &mut Effects, replies: &mut Vec<Reply>) {
        // One mark a command: the journal keeps the commands not skipped, by the same marks.
        if let Some(skip) = skip {
            assert_eq!(skip.len(), envelopes.len(), "a skip mark for each command");
        }
        // Its own ring, not `each_prefetched`: applying needs the state mutably, asking ahead
        // reads it.
        let mut ring = [None; crate::PREFETCH_AHEAD];
        let key_ahead = |state: &ShardState, index: usize| {
            let envelope = envelopes.get(index)?;
            state.prefetch_accounts(&envelope.command);
            let key = own_key(envelope)?;
            state.idempotency.prefetch(key);
            if let Some(sealed) = &state.sealed {
                sealed.prefetch(key);
            }
            Some(key)
        };
        for (index, slot) in ring.iter_mut().enumerate() {
            *slot = key_ahead(self, index);
        }
        let mut roomy = self.has_room(envelopes.len());
        for (index, envelope) in envelopes.iter().enumerate() {
            // At the first command with an order number that finds less room in the records'
            // map than commands left, room for as many records as commands left, made once: a
            // map that grows from small doubles many times in a batch, and each growth moves
            // the slots asked for ahead (criterion `apply`, map starting empty: +10 %). A batch
            // without order numbers, or with room, never looks. (Counting the records the rest
            // may add, a batch payment's orders among them, cost that case 2.5 %; a batch
            // payment's orders can still grow the map as they land.)
            if !roomy && envelope.out_order_no.is_some() {
                self.make_room(envelopes.len() - index);
                roomy = true;
            }
            let key = std::mem::replace(&mut ring[index % crate::PREFETCH_AHEAD], key_ahead(self, index + crate::PREFETCH_AHEAD));
            let reply = match skip {
                Some(skip) if skip[index] => Reply::rejected(ResultCode::Overloaded),
                _ => self.apply_keyed(envelope, key, now, version, fx),
            };
            replies.push(reply);
        }
    }

    /// Whether the records' map holds `records` more without growing.
    #[inline]
    fn has_room(&self, records: usize) -> bool {
        self.idempotency.capacity().saturating_sub(self.idempotency.len()) >= records
    }

    /// Makes room in the records' map for `records` more (`apply_all`, at most once a batch;
    /// out of line).
    #[cold]
    #[inline(never)]
    fn make_room(&mut self, records: usize) {
        if !self.has_room(records) {
            self.idempotency.reserve(records);
        }
    }

    /// Asks for the cache lines of the local accounts `command` will read first (a payment's
    /// payer and receivers; a credit's, recharge's, withdrawal's or freeze's account): a hint for
    /// a command a few places later in the batch, so that the accounts' misses overlap.
    #[inline]
    fn prefetch_accounts(&self, command: &Command) {
        match command {
            Command::Payment { payer, payees, splits, .. } => {
                self.prefetch_account(*payer);
                payees.iter().chain(splits.iter()).for_each(|leg| self.prefetch_account(leg.account));
            }
            Command::ApplyCredit(credit) => self.prefetch_account(credit.account),
            Command::Recharge { account, .. } | Command::Withdraw { account, .. } | Command::Freeze { account, .. } => self.prefetch_account(*account),
            _ => {}
        }
    }

    /// Asks for the cache lines of account `id` if this shard holds it (a hint: an id of
    /// another shard or past the accounts asks for nothing).
    #[inline]
    fn prefetch_account(&self, id: AccountId) {
        if self.shard_count == 0 || id.shard(self.shard_count) != self.shard {
            return;
        }
        let index = id.local_index(self.shard_count) as usize;
        if let Some(account) = self.accounts.get(index) {
            let start: *const Account = account;
            crate::prefetch(start);
            crate::prefetch(start.cast::<u8>().wrapping_add(std::mem::size_of::<Account>() - 1));
            self.lots.prefetch(index);
        }
    }

    /// `apply` with the command's own idempotency key (`own_key`) already computed.
    fn apply_keyed(&mut self, envelope: &Envelope, key: Option<u128>, now: Timestamp, version: u8, fx: &mut Effects) -> Reply {
        let command = &envelope.command;
        if let Command::Genesis { shard, shard_count, currencies, utc_offset_seconds } = command {
            return self.genesis(*shard, *shard_count, currencies, *utc_offset_seconds);
        }
        assert!(self.is_initialized(), "commands before genesis");
        let mut content = 0;
        if let Some(key) = key {
            content = content_hash(command);
            match self.seen(&key) {
                Some(Seen::Record(record)) if record.content == content => return Reply { replayed: true, ..record.reply },
                Some(_) => return Reply::rejected(ResultCode::IdempotencyConflict),
                None => {}
            }
        }
        let context = Context { platform: envelope.platform, out_order_no: envelope.out_order_no, now, day: self.business_day(now), version };
        let postings_before = fx.postings.len();
        let reply = match command {
            Command::Genesis { .. } => unreachable!("handled above"),
            Command::OpenAccount { owner, currency, limits } => ops::account::open(self, &context, *owner, *currency, *limits, fx),
            Command::SetAccountStatus { account, status } => ops::account::set_status(self, &context, *account, *status, fx),
            Command::CloseAccount { account } => ops::account::close(self, &context, *account, fx),
            Command::Recharge { account, currency, amount, channel } => ops::recharge::apply(self, &context, *account, *currency, *amount, *channel, fx),
            Command::Payment { payer, guarantee, currency, amount, payees, splits } => {
                let request = ops::payment::PaymentRequest { payer: *payer, guarantee: *guarantee, currency: *currency, amount: *amount, payees, splits };
                ops::payment::apply(self, &context, &request, fx)
            }
            Command::Confirm { order, releases } => ops::guarantee::confirm(self, &context, *order, releases, fx),
            Command::Cancel { order, amount } => ops::guarantee::cancel(self, &context, *order, *amount, fx),
            Command::CancelLegs { order, cancels } => ops::guarantee::cancel_legs(self, &context, *order, cancels, fx),
            Command::Refund { payment, payee, amount } => ops::refund::apply(self, &context, *payment, *payee, *amount, fx),
            Command::Freeze { account, currency, amount, reason, expires_at } => {
                ops::freeze::freeze(self, &context, *account, *currency, *amount, reason, *expires_at, fx)
            }
            Command::ReleaseFreeze { order, amount } => ops::freeze::release(self, &context, *order, *amount, fx),
            Command::CaptureFreeze { order } => ops::freeze::capture(self, &context, *order, fx),
            Command::ExpireFreezes => ops::freeze::expire(self, &context, fx),
            Command::ExpireFreezesChunk { expired_before, freezes_max, chunks_max, .. } => {
                ops::freeze::expire_chunk(self, &context, *expired_before, (*freezes_max, *chunks_max), fx)
            }
            Command::Withdraw { account, currency, amount, fee, channel } => {
                ops::withdrawal::reserve(self, &context, *account, *currency, *amount, *fee, *channel, fx)
            }
            Command::CompleteWithdrawal { order, succeeded } => ops::withdrawal::complete(self, &context, *order, *succeeded, fx),
            Command::Mature { through_day } => ops::settle::settle(self, &context, *through_day, None, fx),
            Command::Settle { through_day, rule } => ops::settle::settle(self, &context, *through_day, rule.as_deref(), fx),
            Command::SettleChunk { through_day, rule, after, accounts_max, examined_max, .. } => {
                ops::settle::settle_chunk(self, &context, (*through_day, rule.as_deref()), *after, (*accounts_max, *examined_max), fx)
            }
            Command::ChargeChannelFees { channel, day, currency, total, .. } => ops::settle::charge_channel_fees(self, *channel, *day, *currency, *total, fx),
            Command::VerificationDeposit { currency, amount, .. } => ops::settle::verification_deposit(self, *currency, *amount, fx),
            Command::ApplyCredit(credit) => ops::transfer::apply_credit(self, &context, credit, fx),
            Command::Acknowledge { target, sequence } => ops::transfer::acknowledge(self, *target, *sequence),
            Command::RequestRecharge { account, currency, amount, channel } | Command::RequestCollection { account, currency, amount, channel, .. } => {
                ops::recharge::request(self, &context, *account, *currency, *amount, *channel)
            }
            Command::CompleteRecharge { order, succeeded } => ops::recharge::complete(self, &context, *order, *succeeded, fx),
            Command::BatchPayment { payer, guarantee, currency, orders } => {
                ops::payment::apply_batch(self, &context, *payer, *guarantee, *currency, orders, fx)
            }
            Command::RequestDirectPayment { payer, guarantee, currency, amount, payees, splits, channel } => {
                let request = ops::payment::PaymentRequest { payer: *payer, guarantee: *guarantee, currency: *currency, amount: *amount, payees, splits };
                ops::payment::request_direct(self, &context, &request, *channel)
            }
            Command::RerouteWithdrawal { order, from, channel, fee } => ops::withdrawal::reroute(self, &context, *order, (*from, *channel), *fee, fx),
            Command::CreditSuspense { currency, amount, .. } => ops::recharge::credit_suspense(self, *currency, *amount, fx),
            Command::AutoConfirm { created_before } => ops::guarantee::auto_confirm(self, &context, *created_before, fx),
            Command::AutoConfirmChunk { created_before, after, orders_max, .. } => {
                let orders_max = (*orders_max).clamp(1, AUTO_CONFIRM_ORDERS_MAX);
                ops::guarantee::auto_confirm_chunk(self, &context, (*created_before, *after, orders_max), usize::MAX, fx)
            }
            Command::AutoConfirmStep { created_before, after, orders_max, chunks_max, .. } => {
                let (orders_max, chunks_max) = ((*orders_max).clamp(1, STEP_COUNT_LIMIT), (*chunks_max).clamp(1, STEP_CHUNKS_LIMIT));
                ops::guarantee::auto_confirm_chunk(self, &context, (*created_before, *after, orders_max), chunks_max as usize, fx)
            }
            Command::Adjust { source, target, currency, amount, reason, proposer, approver } => {
                let request = ops::adjust::AdjustRequest { source: *source, target: *target, currency: *currency, amount: *amount, reason, proposer, approver };
                ops::adjust::apply(self, &context, &request, fx)
            }
            Command::SetLimits { account, limits } => ops::account::set_limits(self, &context, *account, *limits),
        };
        if !reply.is_ok() {
            assert_eq!(fx.postings.len(), postings_before, "a rejected command posted");
        }
        if let Some(key) = key {
            if reply.is_ok() {
                // Built from the two fields that vary, not read whole across the single-field
                // stores that wrote it (such a read cannot take their data and waits for every
                // older store to reach the cache). The code is `Ok` (just checked). A stored
                // reply is never a replay: a replay answers with the record marked `replayed`
                // (`seen` above), and the one accepted reply marked so when made, a credit's
                // resend skipped, carries no order number.
                let stored = Reply { code: ResultCode::Ok, id: reply.id, status: reply.status, replayed: false };
                self.idempotency.insert(key, IdempotencyRecord { content, reply: stored });
            } else if context.keeps_refusals() && reply.code.is_kept_refusal() {
                // A refusal the order number keeps (journal format 5 on): a repeat is answered
                // the same refusal (`seen` above marks it a replay), other content is a
                // conflict. Nothing else of the refused command is kept.
                self.idempotency.insert(key, IdempotencyRecord { content, reply: Reply::rejected(reply.code) });
            }
        }
        reply
    }

    fn genesis(&mut self, shard: ShardId, shard_count: u16, currencies: &[CurrencySpec], offset: i32) -> Reply {
        assert!(!self.is_initialized(), "genesis twice");
        assert!(shard_count > 0 && shard < shard_count, "shard {shard} of {shard_count}");
        assert!(!currencies.is_empty() && currencies.len() <= 255, "genesis needs 1..=255 currencies");
        self.shard = shard;
        self.shard_count = shard_count;
        self.currencies = currencies.to_vec();
        self.utc_offset_seconds = offset;
        self.outboxes = vec![Outbox::default(); shard_count as usize];
        self.inbound_applied = vec![0; shard_count as usize];
        self.lots = AccountLots::of_shard(shard, shard_count);
        for currency_index in 0..currencies.len() {
            for role in SystemRole::ALL {
                let id = self.push_account(0, 0, CurrencyId(currency_index as u8), AccountKind::System(role), Limits::NONE);
                self.system.push(id);
                self.stripes.push(0);
            }
        }
        Reply { code: ResultCode::Ok, id: 0, status: None, replayed: false }
    }

    /// The business day (days since the epoch in the configured time zone) of `now`.
    pub fn business_day(&self, now: Timestamp) -> u32 {
        let seconds = (now / 1_000_000) as i64 + self.utc_offset_seconds as i64;
        seconds.div_euclid(86_400) as u32
    }

    pub(crate) fn push_account(&mut self, platform: u32, owner: u64, currency: CurrencyId, kind: AccountKind, limits: Limits) -> AccountId {
        let id = AccountId::compose(self.shard, self.accounts.len() as u64, self.shard_count);
        self.accounts.push(Account {
            id,
            platform,
            owner,
            currency,
            kind,
            status: AccountStatus::Normal,
            settled: 0,
            unsettled: 0,
            frozen: 0,
            limits,
            usage_day: 0,
            paid_today: 0,
            withdrawn_today: 0,
            last_order: NO_ORDER_INDEX,
        });
        id
    }

    /// The account with `id` if this shard owns it.
    pub fn account(&self, id: AccountId) -> Option<&Account> {
        if self.shard_count == 0 || id.shard(self.shard_count) != self.shard {
            return None;
        }
        self.accounts.get(id.local_index(self.shard_count) as usize)
    }

    pub(crate) fn account_mut(&mut self, id: AccountId) -> &mut Account {
        let index = id.local_index(self.shard_count) as usize;
        &mut self.accounts[index]
    }

    /// The customer account `id` as `platform` may see it (platform 0 sees all).
    pub fn customer_account(&self, platform: u32, id: AccountId) -> Option<&Account> {
        self.account(id).filter(|a| a.kind == AccountKind::Customer && (platform == 0 || a.platform == platform))
    }

    /// This shard's stripe of a system account.
    pub fn system_account(&self, role: SystemRole, currency: CurrencyId) -> AccountId {
        self.system[currency.0 as usize * SystemRole::ALL.len() + role.index()]
    }

    /// The order with `id` if this shard owns it.
    pub fn order(&self, id: OrderId) -> Option<&Order> {
        if self.shard_count == 0 || id.shard(self.shard_count) != self.shard {
            return None;
        }
        self.orders.get(id.local_index(self.shard_count) as usize)
    }

    /// The order `id` as `platform` may see it.
    pub fn platform_order(&self, platform: u32, id: OrderId) -> Option<&Order> {
        self.order(id).filter(|o| platform == 0 || o.platform == platform)
    }

    /// The order `id` if it is `platform`'s (any for platform 0), found among the platform's
    /// own orders first: its list of local indexes is bisected (its own pieces read back for the
    /// look if out of memory), so another platform's old order is never read back from the
    /// store for a platform that does not own it. What the API's reads of one order use:
    /// `platform_order` read the order's piece first and looked at its platform after, so a
    /// platform naming one old order of another in each of a bulk request's 8,189 operations
    /// had the shard read back and decode 8,189 pieces (and a slow 404 told another's old
    /// order from no order; helper 102, session 63).
    pub fn owned_order(&self, platform: u32, id: OrderId) -> Option<&Order> {
        if platform == 0 {
            return self.order(id);
        }
        if self.shard_count == 0 || id.shard(self.shard_count) != self.shard {
            return None;
        }
        let index = u32::try_from(id.local_index(self.shard_count)).ok()?;
        let all = &self.platform_orders.get(&platform)?.all;
        let owned = all.partition_point(|i| *i <= index) > all.partition_point(|i| *i < index);
        if owned {
            self.order(id).filter(|o| o.platform == platform)
        } else {
            None
        }
    }

    pub(crate) fn order_mut(&mut self, id: OrderId) -> &mut Order {
        let index = id.local_index(self.shard_count) as usize;
        self.orders.get_mut(index).expect("order ids name existing orders")
    }

    /// The id the shard's next order will have.
    pub fn next_order_id(&self) -> OrderId {
        OrderId::compose(self.shard, self.orders.len() as u64, self.shard_count)
    }

    /// Records a new order of a local account (its platform and currency are the account's).
    pub(crate) fn open_order(
        &mut self,
        context: &Context,
        kind: OrderKind,
        status: OrderStatus,
        account: AccountId,
        amount: Minor,
        detail: OrderDetail,
    ) -> OrderId {
        let owner = self.account(account).expect("orders belong to local accounts");
        let (platform, currency) = (owner.platform, owner.currency);
        self.open_order_of(context, (kind, status), (account, platform, currency), amount, detail)
    }

    /// Records a new order of `account` (local) for `platform` in `currency`: an order whose
    /// platform is not its account's (an adjustment out of a suspense stripe).
    pub(crate) fn open_order_of(
        &mut self,
        context: &Context,
        (kind, status): (OrderKind, OrderStatus),
        (account, platform, currency): (AccountId, u32, CurrencyId),
        amount: Minor,
        detail: OrderDetail,
    ) -> OrderId {
        let now = context.now;
        let volume = self.daily_volume.entry((context.day, platform, kind.index(), currency.0)).or_default();
        volume.count += 1;
        volume.amount += amount as i128;
        let index = u32::try_from(self.orders.len()).expect("fewer than 2^32 orders per shard");
        assert!(index != NO_ORDER_INDEX, "fewer than 2^32 - 1 orders per shard");
        let previous = std::mem::replace(&mut self.account_mut(account).last_order, index);
        let id = self.next_order_id();
        let out_order_no = context.out_order_no;
        self.orders.push_with(|| Order { id, out_order_no, kind, status, platform, account, currency, amount, created_at: now, updated_at: now, detail });
        self.previous_order_of_account.push(previous);
        let orders = self.platform_orders.entry(platform).or_default();
        orders.all.push(index);
        let kind_slot = kind as usize;
        if orders.by_kind.len() <= kind_slot {
            orders.by_kind.resize_with(kind_slot + 1, Default::default);
        }
        orders.by_kind[kind_slot].push(index);
        orders.file_status(index, status);
        // Its event, from the values just written (not read back through the chunks).
        self.order_changes.push(OrderChange { order: id, platform, status, at: now });
        id
    }

    /// Notes which customer accounts batch `sequence` posted to (called by the shard loop and by
    /// replay, with the batch's postings).
    ///
    /// In three passes, so that the accounts' cache misses overlap: over the postings, each
    /// customer account's list noted (its last block's reference asked for when the batch is new
    /// to it); over the accounts new to this batch, each open block's data asked for; then their
    /// appends.
    pub fn note_batch(&mut self, sequence: u64, postings: &[Posting]) {
        let mut new = Vec::with_capacity(postings.len().min(4096));
        for posting in postings {
            let customer = self.account(posting.account).is_some_and(|a| a.kind == AccountKind::Customer);
            if customer && self.batches_of.entry(posting.account).or_default().note(sequence) {
                new.push(posting.account);
            }
        }
        for account in &new {
            if let Some(batches) = self.batches_of.get(account) {
                batches.prefetch_open();
            }
        }
        for account in &new {
            if let Some(batches) = self.batches_of.get_mut(account) {
                batches.append(sequence);
            }
        }
    }

    /// Records that order `id` changed (an event for its platform; the open-order index follows
    /// its status).
    pub(crate) fn record_change(&mut self, id: OrderId) {
        let order = self.order(id).expect("a local order");
        let (platform, status) = (order.platform, order.status);
        let index = id.local_index(self.shard_count) as u32;
        if let Some(orders) = self.platform_orders.get_mut(&platform) {
            orders.file_status(index, status);
        }
        self.push_change(id);
    }

    /// Appends the event of order `id` as it is now.
    fn push_change(&mut self, id: OrderId) {
        let order = self.order(id).expect("a local order");
        let change = OrderChange { order: id, platform: order.platform, status: order.status, at: order.updated_at };
        self.order_changes.push(change);
    }

    /// Opens a journal entry; postings until `end_entry` belong to it.
    pub(crate) fn begin_entry(&mut self, fx: &mut Effects, order: OrderId, kind: EntryKind, currency: CurrencyId) {
        assert!(fx.open_entry.is_none(), "entries do not nest");
        let entry_id = self.next_entry * self.shard_count as u64 + self.shard as u64;
        self.next_entry += 1;
        let header = EntryHeader { entry_id, order, kind, currency, posting_count: 0 };
        fx.open_entry = Some((fx.postings.len(), header));
    }

    /// Closes the open entry, asserting that its debits equal its credits.
    pub(crate) fn end_entry(&mut self, fx: &mut Effects) {
        let (start, mut header) = fx.open_entry.take().expect("an entry is open");
        let lines = &fx.postings[start..];
        let sum: i128 = lines.iter().map(|p| p.amount as i128).sum();
        assert_eq!(sum, 0, "entry {} is unbalanced: {lines:?}", header.entry_id);
        assert!(!lines.is_empty(), "empty entry");
        header.posting_count = lines.len() as u32;
        fx.entries.push(header);
    }

    /// Posts `amount` (credit positive) to one bucket of an account on this shard.
    ///
    /// A customer account never passes `BALANCE_MINOR_MAX` in all its buckets (every credit is
    /// checked or redirected to suspense by `credit_target`), far inside `i64`; a system stripe
    /// accumulates in `i128` (`stripes`). So neither addition can overflow.
    pub(crate) fn post(&mut self, fx: &mut Effects, account: AccountId, bucket: Bucket, amount: Minor) {
        assert!(fx.open_entry.is_some(), "posting outside an entry");
        assert_ne!(amount, 0, "zero posting");
        let index = account.local_index(self.shard_count) as usize;
        let a = &mut self.accounts[index];
        if let AccountKind::System(_) = a.kind {
            assert_eq!(bucket, Bucket::Settled, "system stripes have one bucket");
            let wide = &mut self.stripes[index];
            *wide = wide.checked_add(amount as i128).expect("an i128 stripe needs about 10^23 postings of AMOUNT_MINOR_MAX to overflow");
            a.settled = (*wide).clamp(Minor::MIN as i128, Minor::MAX as i128) as Minor;
        } else {
            let slot = match bucket {
                Bucket::Settled => &mut a.settled,
                Bucket::Unsettled => &mut a.unsettled,
                Bucket::Frozen => &mut a.frozen,
            };
            *slot = slot.checked_add(amount).expect("customer balances stay within BALANCE_MINOR_MAX, far inside i64");
            assert!(*slot >= 0, "customer bucket {bucket:?} of {account:?} went negative");
        }
        fx.postings.push(Posting { account, bucket, amount });
    }

    /// The total of an account of this shard in `i128`: a system stripe's wide balance, a
    /// customer account's buckets summed. What every sum over accounts reads.
    pub fn balance(&self, account: &Account) -> i128 {
        match account.kind {
            AccountKind::System(_) => self.stripes[account.id.local_index(self.shard_count) as usize],
            AccountKind::Customer => account.total() as i128,
        }
    }

    /// One bucket of an account in `i128` (a system stripe has only `Settled`).
    pub fn bucket_balance(&self, account: &Account, bucket: Bucket) -> i128 {
        match (account.kind, bucket) {
            (AccountKind::System(_), Bucket::Settled) => self.balance(account),
            _ => account.bucket(bucket) as i128,
        }
    }

    /// One entry (of no order) moving `amount` from this shard's `from` stripe to its `to` stripe.
    pub(crate) fn move_between_roles(&mut self, fx: &mut Effects, kind: EntryKind, currency: CurrencyId, from: SystemRole, to: SystemRole, amount: Minor) {
        let (from, to) = (self.system_account(from, currency), self.system_account(to, currency));
        self.begin_entry(fx, NO_ORDER, kind, currency);
        self.post(fx, from, Bucket::Settled, -amount);
        self.post(fx, to, Bucket::Settled, amount);
        self.end_entry(fx);
    }

    /// Credits income to an account's unsettled bucket, as a lot of business day `day`.
    pub(crate) fn credit_unsettled(&mut self, fx: &mut Effects, account: AccountId, amount: Minor, day: u32) {
        self.add_to_lot(fx, account, amount, day, 1);
    }

    /// Puts `amount` back into an account's unsettled bucket, as a lot of business day `day`
    /// (it matures no earlier than it would have): what a freeze's release, a cancel or a refund
    /// returns. Journal format 3 on (`Context::returns_unsettled`) it is not an income credit
    /// (a count-based tier's measure); before, a freeze's release counted as one.
    pub(crate) fn return_unsettled(&mut self, context: &Context, fx: &mut Effects, account: AccountId, amount: Minor) {
        let credits = if context.returns_unsettled() { 0 } else { 1 };
        self.add_to_lot(fx, account, amount, context.day, credits);
    }

    fn add_to_lot(&mut self, fx: &mut Effects, account: AccountId, amount: Minor, day: u32, credits: u32) {
        self.post(fx, account, Bucket::Unsettled, amount);
        let lots = self.lots.at_mut(account.local_index(self.shard_count) as usize);
        match lots.last_mut() {
            Some(lot) if lot.day == day => {
                // Lots sum to the unsettled bucket, which stays within BALANCE_MINOR_MAX.
                lot.amount += amount;
                lot.credits = lot.credits.saturating_add(credits);
            }
            _ => lots.push(Lot { day, credits, amount }),
        }
    }

    /// Takes `amount` out of unsettled lots, oldest first (the unsettled bucket is posted by the
    /// caller); the lots it empties go in one move of those left.
    fn consume_lots(&mut self, account: AccountId, mut amount: Minor) {
        let lots = self.lots.at_mut(account.local_index(self.shard_count) as usize);
        let mut emptied = 0;
        while amount > 0 {
            let lot = lots.get_mut(emptied).expect("lots cover the unsettled bucket");
            let take = lot.amount.min(amount);
            lot.amount -= take;
            amount -= take;
            if lot.amount == 0 {
                emptied += 1;
            }
        }
        lots.drain(..emptied);
    }

    /// Debits `amount` from the unsettled bucket, consuming its lots oldest first.
    pub(crate) fn debit_unsettled_only(&mut self, fx: &mut Effects, account: AccountId, amount: Minor) {
        self.post(fx, account, Bucket::Unsettled, -amount);
        self.consume_lots(account, amount);
    }

    /// Debits `amount` of available funds, unsettled first; returns the part taken from unsettled.
    pub(crate) fn debit_available(&mut self, fx: &mut Effects, account: AccountId, amount: Minor) -> Minor {
        let unsettled = self.account_mut(account).unsettled;
        let from_unsettled = unsettled.min(amount);
        let from_settled = amount - from_unsettled;
        if from_unsettled > 0 {
            self.debit_unsettled_only(fx, account, from_unsettled);
        }
        if from_settled > 0 {
            self.post(fx, account, Bucket::Settled, -from_settled);
        }
        from_unsettled
    }

    /// Sends a credit to `account` on another shard: this shard's in-transit stripe is credited
    /// now (inside the caller's open entry), the remote shard debits its stripe when it applies it.
    pub(crate) fn send_credit(&mut self, fx: &mut Effects, order: OrderId, leg: Leg, counterparty: AccountId, purpose: CreditPurpose, currency: CurrencyId) {
        let target = leg.account.shard(self.shard_count);
        assert_ne!(target, self.shard, "local credits do not travel");
        let transit = self.system_account(SystemRole::InTransit, currency);
        self.post(fx, transit, Bucket::Settled, leg.amount);
        let outbox = &mut self.outboxes[target as usize];
        outbox.next_sequence += 1;
        outbox.pending.push_back(RemoteCredit {
            source: self.shard,
            sequence: outbox.next_sequence,
            order,
            account: leg.account,
            counterparty,
            currency,
            // What the sender meant; for a refund the payer's shard decides (the payment's
            // unsettled part lands in unsettled first: `refund::credit_refund`).
            bucket: match purpose {
                CreditPurpose::PaymentIncome => Bucket::Unsettled,
                CreditPurpose::RefundToPayer | CreditPurpose::Commission | CreditPurpose::Adjustment => Bucket::Settled,
            },
            amount: leg.amount,
            purpose,
        });
    }

    /// Where a credit of `amount` to `account` lands: the account itself, or this shard's
    /// suspense stripe when it is not a local customer account that can take it in `currency`
    /// (closed, credit-blocked, or the credit would pass `BALANCE_MINOR_MAX`). For credits that
    /// cannot be refused: a cross-shard credit, a bank's verdict, a returned withdrawal.
    /// A credit sent to suspense is noted in `fx.diverted`; one meant for the suspense stripe
    /// itself (an operator's adjustment into another shard's suspense) is not a diversion.
    pub(crate) fn credit_target(&self, fx: &mut Effects, account: AccountId, currency: CurrencyId, amount: Minor) -> AccountId {
        match self.account(account) {
            Some(a) if a.kind == AccountKind::Customer && credit_refusal_of(a, currency, amount).is_none() => account,
            _ => {
                let suspense = self.system_account(SystemRole::Suspense, currency);
                if account != suspense {
                    fx.diverted.push(Diverted { account, currency, amount, from_posting: fx.postings.len() });
                }
                suspense
            }
        }
    }

    /// Resets an account's daily counters when the business day has changed.
    pub(crate) fn roll_day(&mut self, account: AccountId, day: u32) {
        let a = self.account_mut(account);
        if a.usage_day != day {
            a.usage_day = day;
            a.paid_today = 0;
            a.withdrawn_today = 0;
        }
    }

    /// What is known of idempotency key `key`: memory (hot, then sealed), then what this batch's
    /// prefetch found in the store.
    #[inline]
    fn seen(&self, key: &u128) -> Option<Seen> {
        // The common answers first: a hot record, or a miss while nothing is sealed or prefetched.
        if let Some(record) = self.idempotency.get(*key) {
            return Some(Seen::Record(*record));
        }
        if self.sealed.is_none() && self.cold.is_empty() {
            return None;
        }
        self.seen_beyond_hot(key)
    }

    /// `seen` past the hot map: the sealed generation, then this batch's prefetch.
    #[cold]
    fn seen_beyond_hot(&self, key: &u128) -> Option<Seen> {
        if let Some(record) = self.sealed.as_ref().and_then(|sealed| sealed.get(*key)) {
            return Some(Seen::Record(*record));
        }
        match self.cold.get(key)? {
            ColdHit::Own(record) => Some(Seen::Record(*record)),
            ColdHit::Foreign => Some(Seen::Foreign),
        }
    }

    /// Whether order-number key `key` is taken as far as this batch knows (memory or prefetch):
    /// what a batch payment checks for each of its orders.
    pub(crate) fn idempotency_taken(&self, key: &u128) -> bool {
        self.seen(key).is_some()
    }

    /// The record of `key` if memory holds it (hot or sealed); a cold one is in the store
    /// (`cold::read_record`, `Engine::idempotency_record`).
    pub fn idempotency_record(&self, key: &u128) -> Option<IdempotencyRecord> {
        if let Some(record) = self.idempotency.get(*key) {
            return Some(*record);
        }
        self.sealed.as_ref().and_then(|sealed| sealed.get(*key).copied())
    }

    /// Whether memory holds a record of `key` (a prefetch need not read it).
    pub fn holds_idempotency(&self, key: &u128) -> bool {
        self.idempotency.get(*key).is_some() || self.sealed.as_ref().is_some_and(|sealed| sealed.get(*key).is_some())
    }

    /// Every record memory holds (hot and sealed), in no particular order.
    pub fn memory_idempotency(&self) -> impl Iterator<Item = (u128, IdempotencyRecord)> + '_ {
        let sealed = self.sealed.iter().flat_map(|sealed| sealed.iter());
        self.idempotency.iter().chain(sealed).map(|(key, record)| (key, *record))
    }

    /// Takes the cold records a batch may look up (`cold::prefetch`), replacing the last batch's.
    pub fn admit_cold(&mut self, hits: impl IntoIterator<Item = (u128, ColdHit)>) {
        self.cold.clear();
        self.cold.extend(hits);
    }

    /// Forgets the prefetched cold records once their batch is applied.
    pub fn forget_cold(&mut self) {
        self.cold.clear();
    }

    /// Seals the hot records for a checkpoint: they move, as they are, into the sealed
    /// generation (still answered from memory) and the hot map starts empty. Returns the sealed
    /// generation for the checkpoint to write cold. The previous one must have been dropped
    /// (`drop_sealed`) or given back (`unseal`): one checkpoint at a time. A live shard then
    /// sizes the new hot map (`expect_records`) once it has taken its checkpoint's copy of the
    /// state (a copy of a small empty map costs nothing, of a sized one its whole table).
    pub fn seal_idempotency(&mut self) -> crate::cold::Sealed {
        assert!(self.sealed.is_none(), "one sealed generation at a time");
        let sealed = std::sync::Arc::new(std::mem::take(&mut self.idempotency));
        self.sealed = Some(sealed.clone());
        sealed
    }

    /// Sizes the hot map for `records` more: a shard expects as many as the generation it just
    /// sealed and a quarter more (the next interval is most likely as long), so the map does not
    /// pause a batch to grow unless the interval brings more (its table is resident soon after:
    /// records land on slots spread over all of it).
    pub fn expect_records(&mut self, records: usize) {
        let _ = self.expect_records_with(records, None);
    }

    /// `expect_records`, taking `ready` as the hot map instead when the hot map is empty (just
    /// sealed) and `ready` is an empty map with room for them: a table made resident ahead of
    /// time off the shard's thread (`FlatMap::with_capacity_resident`), so that the batches
    /// after a seal do not wait while the kernel clears the new table's pages as records land
    /// (ARCHITECTURE.md, "Measured", session 48). Otherwise `ready` is dropped. True when it
    /// took `ready`.
    pub fn expect_records_with(&mut self, records: usize, ready: Option<FlatMap<IdempotencyRecord>>) -> bool {
        match ready {
            Some(map) if self.idempotency.is_empty() && map.is_empty() && map.capacity() >= records => {
                self.idempotency = map;
                true
            }
            unfit => {
                // Dropped before the hot map grows: never three tables at once.
                drop(unfit);
                self.idempotency.reserve(records);
                false
            }
        }
    }

    /// Drops the sealed generation once the checkpoint that wrote it cold is durable.
    pub fn drop_sealed(&mut self) {
        self.sealed = None;
    }

    /// Gives the sealed generation back to the hot map (its checkpoint never started).
    pub fn unseal(&mut self) {
        if let Some(sealed) = self.sealed.take() {
            for (key, record) in sealed.iter() {
                self.idempotency.insert(key, *record);
            }
        }
    }

    /// Credits not yet acknowledged by their target shards.
    pub fn outbox_pending(&self) -> usize {
        self.outboxes.iter().map(|o| o.pending.len()).sum()
    }

    /// The last credit of `order` to `account` (on another shard) still in this shard's outbox,
    /// sent and not yet acknowledged (it may not have landed): its target shard and sequence.
    /// A refund of a payment made here would be refused by the payee's shard for good meanwhile
    /// (no income of it yet, or not all of it: a kept `OrderNotFound` or
    /// `ExceedsRefundableAmount`), so the gateway waits until `acknowledged` reaches that
    /// sequence before it sends one (helper 122#1-2; later credits do not lengthen the wait,
    /// helper 124). Acknowledged credits have been applied. Scans the one outbox toward the
    /// account's shard.
    pub fn credit_in_flight(&self, order: OrderId, account: AccountId) -> Option<(ShardId, u64)> {
        let target = account.shard(self.shard_count);
        let outbox = self.outboxes.get(target as usize)?;
        outbox.pending.iter().rev().find(|credit| credit.order == order && credit.account == account).map(|credit| (target, credit.sequence))
    }

    /// The highest credit sequence `target` has acknowledged to this shard.
    pub fn acknowledged_by(&self, target: ShardId) -> u64 {
        self.outboxes.get(target as usize).map_or(0, |outbox| outbox.acknowledged)
    }

    /// Offers every chunk of history a checkpoint may keep as a blob (`checkpoint::write`): the
    /// `ChunkedVec`s, the income blocks and the batch index. A field left out here is simply encoded inline.
    pub fn offer_blobs(&self, sink: &mut dyn crate::ledger::growth::BlobSink) {
        self.orders.offer_blobs(sink);
        self.income.offer_blobs(sink);
        self.settled.offer_blobs(sink);
        self.order_changes.offer_blobs(sink);
        self.commissions.offer_blobs(sink);
        self.previous_order_of_account.offer_blobs(sink);
        for orders in self.platform_orders.values() {
            orders.all.offer_blobs(sink);
            orders.by_kind.iter().for_each(|kind| kind.offer_blobs(sink));
        }
        self.batches_of.values().for_each(|batches| batches.offer_blobs(sink));
    }

    /// After a durable checkpoint: moves out of memory the chunks and blocks of history it holds
    /// as they are now (`durable`: id and version to blob hash), but the newest of each vector,
    /// and drops every copy read back. The same fields as `offer_blobs`. Gives how many pieces
    /// it moved out.
    pub fn cool(&mut self, durable: &dyn Fn(u64, u64) -> Option<[u8; 32]>, reader: &std::sync::Arc<dyn crate::ledger::growth::BlobRead>) -> usize {
        let mut moved = self.orders.cool(durable, reader);
        // Income blocks are keyed by order id, shared by every shard's orders: the block of this
        // shard's next order and those after it stay in memory (its new payments land there).
        let frontier = if self.shard_count > 0 { self.next_order_id().0 >> 12 } else { 0 };
        moved += self.income.cool(durable, reader, frontier..frontier + INCOME_BLOCKS_KEPT);
        moved += self.settled.cool(durable, reader);
        moved += self.order_changes.cool(durable, reader);
        moved += self.commissions.cool(durable, reader);
        moved += self.previous_order_of_account.cool(durable, reader);
        for orders in self.platform_orders.values_mut() {
            moved += orders.all.cool(durable, reader);
            for kind in &mut orders.by_kind {
                moved += kind.cool(durable, reader);
            }
        }
        moved += self.batches_of.values_mut().map(|batches| batches.cool(durable, reader)).sum::<usize>();
        moved
    }

    /// Reads back, before a batch is applied, the history out of memory that `envelope` will
    /// touch: the order a command acts on, a refunded payment and its income, the income block
    /// a payment's credit lands in, the payment a refund's credit returns to. So `apply` finds
    /// them in memory, and a blob that cannot be read stops the batch before anything is
    /// applied. (The nightly `ExpireFreezes` and `AutoConfirm` walk open orders of any age: a
    /// cold one among them is read inside `apply`.)
    pub fn warm_history(&self, envelope: &Envelope) -> Result<(), crate::ledger::growth::StorageFault> {
        self.history_touched(envelope, &mut |touch| match touch {
            HistoryTouch::Order(index) => self.orders.warm(index),
            HistoryTouch::Income(key) => self.income.warm(&key),
        })
    }

    /// Reads back the income blocks the orders `envelopes` may open land in, if out of memory:
    /// from the block of the shard's next order id on (the shard's next id moves on past the
    /// blocks its last checkpoint kept, into blocks that held only other shards' orders then and
    /// may have left memory). At most a handful of blocks, usually all in memory.
    pub fn warm_own_income(&self, envelopes: &[Envelope]) -> Result<(), crate::ledger::growth::StorageFault> {
        if self.shard_count == 0 {
            return Ok(());
        }
        // At most one order a command, but a batch payment: one an item and one of its own.
        let orders: u64 = envelopes
            .iter()
            .map(|envelope| match &envelope.command {
                Command::BatchPayment { orders, .. } => orders.len() as u64 + 1,
                _ => 1,
            })
            .sum();
        let next = self.next_order_id().0;
        let last = next.saturating_add(orders.saturating_mul(self.shard_count as u64)) >> 12;
        for block in (next >> 12)..=last {
            self.income.warm_block(block)?;
        }
        Ok(())
    }

    /// How many pieces of history out of memory `warm_history` would read back for `envelope`
    /// (a piece two of its touches share counted twice): none for nearly every command.
    pub fn history_reads(&self, envelope: &Envelope) -> usize {
        let mut reads = 0;
        let _ = self.history_touched(envelope, &mut |touch| {
            let resident = match touch {
                HistoryTouch::Order(index) => self.orders.is_resident(index),
                HistoryTouch::Income(key) => self.income.is_resident(&key),
            };
            reads += usize::from(!resident);
            Ok(())
        });
        reads
    }

    /// Calls `visit` with each piece of history `envelope` touches (see `warm_history`).
    fn history_touched(
        &self,
        envelope: &Envelope,
        visit: &mut dyn FnMut(HistoryTouch) -> Result<(), crate::ledger::growth::StorageFault>,
    ) -> Result<(), crate::ledger::growth::StorageFault> {
        let order = |id: OrderId, visit: &mut dyn FnMut(HistoryTouch) -> Result<(), crate::ledger::growth::StorageFault>| {
            if self.shard_count > 0 && id.shard(self.shard_count) == self.shard {
                visit(HistoryTouch::Order(id.local_index(self.shard_count) as usize))
            } else {
                Ok(())
            }
        };
        if let Some(target) = envelope.command.target_order() {
            order(target, visit)?;
            // Confirming a guarantee or completing a direct payment lands its income here (same
            // shard, keyed by the order: `credit_income`); no other targeted command touches it.
            if matches!(envelope.command, Command::Confirm { .. } | Command::CompleteRecharge { .. }) {
                visit(HistoryTouch::Income((target, AccountId(0))))?;
            }
        }
        match &envelope.command {
            Command::Refund { payment, payee, .. } => {
                order(*payment, visit)?;
                visit(HistoryTouch::Income((*payment, *payee)))
            }
            Command::ApplyCredit(credit) => match credit.purpose {
                CreditPurpose::PaymentIncome => visit(HistoryTouch::Income((credit.order, credit.account))),
                CreditPurpose::RefundToPayer => order(credit.order, visit),
                CreditPurpose::Commission | CreditPurpose::Adjustment => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// Drops every copy of history read back (the pieces stay out of memory).
    pub fn uncache(&mut self) {
        self.orders.uncache();
        self.income.uncache();
        self.settled.uncache();
        self.order_changes.uncache();
        self.commissions.uncache();
        self.previous_order_of_account.uncache();
        for orders in self.platform_orders.values_mut() {
            orders.all.uncache();
            orders.by_kind.iter_mut().for_each(ChunkedVec::uncache);
        }
        self.batches_of.values_mut().for_each(BatchList::uncache);
    }

    /// What the shard holds of its history, in memory and out (for `clearing bench` and
    /// operators): one line.
    pub fn history_report(&self) -> String {
        let vector = |name: &str, v: usize, chunks: usize, cold: usize| format!("{name} {v} ({cold}/{chunks} chunks out)");
        let (mut all, mut all_chunks, mut all_cold) = (0, 0, 0);
        for orders in self.platform_orders.values() {
            for list in std::iter::once(&orders.all).chain(orders.by_kind.iter()) {
                all += list.len();
                all_chunks += list.chunk_count();
                all_cold += list.cold_chunks();
            }
        }
        [
            vector("orders", self.orders.len(), self.orders.chunk_count(), self.orders.cold_chunks()),
            vector("changes", self.order_changes.len(), self.order_changes.chunk_count(), self.order_changes.cold_chunks()),
            vector(
                "previous",
                self.previous_order_of_account.len(),
                self.previous_order_of_account.chunk_count(),
                self.previous_order_of_account.cold_chunks(),
            ),
            vector("order_lists", all, all_chunks, all_cold),
            format!("income {} ({}/{} blocks out)", self.income.len(), self.income.cold_blocks(), self.income.block_count()),
            format!("idempotency {} hot, {} sealed", self.idempotency.len(), self.sealed.as_ref().map_or(0, |s| s.len())),
            {
                let (blocks, cold) = self.batches_of.values().map(BatchList::block_counts).fold((0, 0), |(b, c), (nb, nc)| (b + nb, c + nc));
                let entries = self.batches_of.values().map(BatchList::len).sum::<usize>();
                format!("batch_index {entries} entries for {} accounts ({cold}/{blocks} blocks out)", self.batches_of.len())
            },
            format!("lots {}", self.lots.iter().map(|(_, lots)| lots.len()).sum::<usize>()),
            format!("open_orders {}", self.platform_orders.values().map(|p| p.open.len()).sum::<usize>()),
        ]
        .join(", ")
    }

    /// How many chunks and blocks of history are out of memory.
    pub fn cold_pieces(&self) -> usize {
        let mut cold = self.orders.cold_chunks() + self.income.cold_blocks() + self.settled.cold_chunks() + self.order_changes.cold_chunks();
        cold += self.commissions.cold_chunks() + self.previous_order_of_account.cold_chunks();
        for orders in self.platform_orders.values() {
            cold += orders.all.cold_chunks() + orders.by_kind.iter().map(ChunkedVec::cold_chunks).sum::<usize>();
        }
        cold + self.batches_of.values().map(|batches| batches.block_counts().1).sum::<usize>()
    }

    /// Reads back every chunk a checkpoint kept as a blob (`checkpoint::load`): the same fields
    /// as `offer_blobs`.
    pub fn fill_blobs(&mut self, source: &mut dyn crate::ledger::growth::BlobSource) -> Result<(), String> {
        self.orders.fill_blobs(source)?;
        self.income.fill_blobs(source)?;
        self.settled.fill_blobs(source)?;
        self.order_changes.fill_blobs(source)?;
        self.commissions.fill_blobs(source)?;
        self.previous_order_of_account.fill_blobs(source)?;
        for orders in self.platform_orders.values_mut() {
            orders.all.fill_blobs(source)?;
            for kind in &mut orders.by_kind {
                kind.fill_blobs(source)?;
            }
        }
        for batches in self.batches_of.values_mut() {
            batches.fill_blobs(source)?;
        }
        Ok(())
    }

    /// Rebuilds `settled_runs` and `commission_runs` from the rows (a scan of both; after a
    /// checkpoint of a format that did not encode them). A chunk that cannot be read back
    /// panics with its `StorageFault`, as any read of history does.
    pub fn rebuild_day_runs(&mut self) {
        self.settled_runs = DayRuns::of_rows(&self.settled, |row| row.through_day);
        self.commission_runs = DayRuns::of_rows(&self.commissions, |row| row.through_day);
    }

    /// A digest of the whole state in a canonical order (equal states have equal digests), but
    /// for its idempotency records: which of them memory holds depends on when checkpoints
    /// sealed them (a live shard, one recovered from a checkpoint and a replay of the whole
    /// journal hold different hot sets of the same records). `cold::logical_digest` adds the
    /// records, hot and cold, read through the store.
    pub fn digest(&self) -> u64 {
        let mut canonical = self.clone();
        canonical.idempotency = FlatMap::default();
        canonical.sealed = None;
        canonical.cold.clear();
        let mut owners: Vec<_> = canonical.owners.drain().collect();
        owners.sort_by_key(|(k, _)| *k);
        let mut income: Vec<_> = std::mem::take(&mut canonical.income).iter().map(|(k, v)| (*k, *v)).collect();
        income.sort_by_key(|(k, _)| *k);
        let lots: Vec<_> = std::mem::take(&mut canonical.lots).iter().map(|(id, lots)| (id, lots.clone())).collect();
        let mut batches_of: Vec<_> = canonical.batches_of.drain().collect();
        batches_of.sort_by_key(|(k, _)| *k);
        let mut period_totals: Vec<_> = canonical.period_totals.drain().collect();
        period_totals.sort_by_key(|(k, _)| *k);
        let bytes = bincode::serialize(&(&canonical, owners, income, lots, batches_of, period_totals)).expect("state serializes");
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }
}

/// What every operation is told about the request besides its arguments.
#[derive(Clone, Copy)]
pub struct Context {
    pub platform: u32,
    /// The order number of the command, recorded on the order it opens.
    pub out_order_no: Option<crate::ledger::command::OutOrderNo>,
    pub now: Timestamp,
    pub day: u32,
    /// The journal format of the batch (`journal::JOURNAL_FORMAT_VERSION` live; a replayed
    /// batch's own): the rules it was applied under.
    pub version: u8,
}

impl Context {
    /// Journal format 3 on: a payment records what it took from the payer's unsettled income
    /// (`OrderDetail::Payment::from_unsettled`), and what goes back to unsettled income (that,
    /// and a freeze's release) is not counted as an income credit of its lot.
    pub(crate) fn returns_unsettled(&self) -> bool {
        self.version >= 3
    }

    /// Journal format 4 on: a guarantee's cancel whose payer can no longer take the credit
    /// (closed, credit-blocked, at its balance ceiling) sends it to suspense with a notice, as
    /// a refund does (before, it was refused, and the nightly auto-confirm then paid the
    /// payees what the platform had cancelled).
    pub(crate) fn diverts_cancels(&self) -> bool {
        self.version >= 4
    }

    /// Journal format 4 on: a freeze the system (platform 0) places is the system's order, which
    /// the account's platform cannot release (before, every freeze was its account's
    /// platform's order).
    pub(crate) fn system_holds(&self) -> bool {
        self.version >= 4
    }

    /// Journal format 5 on: a refusal of a command with an order number is kept as that
    /// number's record (`ResultCode::is_kept_refusal`): a repeat with the same content is
    /// answered the same refusal as a replay, one with other content is a conflict (before, a
    /// repeat ran again and could succeed where the first attempt was refused).
    pub(crate) fn keeps_refusals(&self) -> bool {
        self.version >= 5
    }

    /// Journal format 6 on: a receiver of the settlement rule's commission pays the service fee
    /// on its own maturing income, as the rule says of every account of the platform (before,
    /// naming an account a receiver exempted it from the fee too; helper 121#1).
    pub(crate) fn charges_receivers_service_fee(&self) -> bool {
        self.version >= 6
    }
}

/// Shared checks of an amount: positive and not above `AMOUNT_MINOR_MAX`.
pub(crate) fn check_amount(amount: Minor) -> Result<(), ResultCode> {
    if amount <= 0 {
        return Err(ResultCode::InvalidAmount);
    }
    if amount > crate::money::AMOUNT_MINOR_MAX {
        return Err(ResultCode::AmountTooLarge);
    }
    Ok(())
}

/// Shared checks of an account that is to be debited by `platform` in `currency`.
pub(crate) fn check_debit_account(state: &ShardState, platform: u32, id: AccountId, currency: CurrencyId) -> Result<(), ResultCode> {
    if currency.0 as usize >= state.currencies.len() {
        return Err(ResultCode::CurrencyUnknown);
    }
    let account = state.customer_account(platform, id).ok_or(ResultCode::AccountNotFound)?;
    if account.currency != currency {
        return Err(ResultCode::CurrencyMismatch);
    }
    match account.status {
        AccountStatus::Closed => Err(ResultCode::AccountClosed),
        AccountStatus::DebitBlocked => Err(ResultCode::AccountFrozen),
        AccountStatus::Normal | AccountStatus::CreditBlocked => Ok(()),
    }
}

/// Whether a local account can take a credit; `None` if it can, else why not.
pub(crate) fn credit_refusal(account: &Account, currency: CurrencyId) -> Option<ResultCode> {
    credit_refusal_by(account.currency, account.status, currency)
}

/// Whether a local account can take a credit of `amount`: its status and currency, then room
/// below `BALANCE_MINOR_MAX` for all its buckets together.
pub(crate) fn credit_refusal_of(account: &Account, currency: CurrencyId, amount: Minor) -> Option<ResultCode> {
    credit_refusal(account, currency).or_else(|| {
        let after = account.total() as i128 + amount as i128;
        (after > crate::money::BALANCE_MINOR_MAX as i128).then_some(ResultCode::BalanceLimitExceeded)
    })
}

/// Whether an account of `account_currency` in `status` can take a credit in `currency`
/// (also used by the router for accounts on other shards).
pub(crate) fn credit_refusal_by(account_currency: CurrencyId, status: AccountStatus, currency: CurrencyId) -> Option<ResultCode> {
    if account_currency != currency {
        return Some(ResultCode::CurrencyMismatch);
    }
    match status {
        AccountStatus::Closed => Some(ResultCode::AccountClosed),
        AccountStatus::CreditBlocked => Some(ResultCode::AccountCreditBlocked),
        AccountStatus::Normal | AccountStatus::DebitBlocked => None,
    }
}

/// The reply of a command that created or touched an order.
pub(crate) fn ok_order(id: OrderId, status: OrderStatus) -> Reply {
    Reply { code: ResultCode::Ok, id: id.0, status: Some(status), replayed: false }
}
