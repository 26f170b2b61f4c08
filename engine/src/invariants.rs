//! The ledger's invariants (DESIGN.md 3), checked online against running shards or offline from
//! the journal alone.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use storage::Store;

use crate::engine::Engine;
use crate::journal::{read_shard, replay_shard};
use crate::ledger::state::ShardState;
use crate::ledger::types::{AccountId, AccountKind, Bucket, SystemRole};
use crate::money::Minor;
use crate::EngineError;

/// Per-currency figures of an invariant check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CurrencyReport {
    pub currency: String,
    /// Sum of every bucket of every account: zero when the books balance.
    pub sum_minor: i128,
    /// Sum of the in-transit stripes of all shards.
    pub in_transit_minor: i128,
    /// Credits sent and not yet applied by their target: in-transit must equal this.
    pub in_flight_minor: i128,
}

/// The result of an invariant check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InvariantReport {
    pub ok: bool,
    pub currencies: Vec<CurrencyReport>,
    pub entries_checked: u64,
    pub failures: Vec<String>,
}

/// What one shard contributes to the report.
#[derive(Clone, Debug, Default)]
struct ShardFigures {
    sums: Vec<i128>,
    in_transit: Vec<i128>,
    /// Per target shard, the credits pending in the outbox: (sequence, currency index, amount).
    pending: Vec<Vec<(u64, usize, Minor)>>,
    inbound_applied: Vec<u64>,
    codes: Vec<String>,
    failures: Vec<String>,
}

fn figures(state: &ShardState) -> ShardFigures {
    let currency_count = state.currencies.len();
    let mut f = ShardFigures {
        sums: vec![0; currency_count],
        in_transit: vec![0; currency_count],
        pending: Vec::new(),
        inbound_applied: state.inbound_applied.clone(),
        codes: state.currencies.iter().map(|c| c.code_str().to_string()).collect(),
        failures: Vec::new(),
    };
    for account in &state.accounts {
        let c = account.currency.0 as usize;
        let balance = state.balance(account);
        f.sums[c] += balance;
        if account.kind == AccountKind::System(SystemRole::InTransit) {
            f.in_transit[c] += balance;
        }
        if account.kind == AccountKind::Customer && (account.settled < 0 || account.unsettled < 0 || account.frozen < 0) {
            f.failures.push(format!("account {} has a negative bucket", account.id.0));
        }
        let lots: Minor = state.lots.get(account.id).map_or(0, |l| l.iter().map(|lot| lot.amount).sum());
        if lots != account.unsettled {
            f.failures.push(format!("account {}: unsettled {} but lots sum to {lots}", account.id.0, account.unsettled));
        }
    }
    for outbox in &state.outboxes {
        f.pending.push(outbox.pending.iter().map(|c| (c.sequence, c.currency.0 as usize, c.amount)).collect());
    }
    f
}

fn combine(shards: Vec<ShardFigures>, entries_checked: u64, mut failures: Vec<String>) -> InvariantReport {
    let Some(first) = shards.first() else {
        return InvariantReport { ok: true, ..InvariantReport::default() };
    };
    let mut currencies: Vec<CurrencyReport> = first.codes.iter().map(|code| CurrencyReport { currency: code.clone(), ..CurrencyReport::default() }).collect();
    for (source, shard) in shards.iter().enumerate() {
        failures.extend(shard.failures.iter().cloned());
        for (c, report) in currencies.iter_mut().enumerate() {
            report.sum_minor += shard.sums[c];
            report.in_transit_minor += shard.in_transit[c];
        }
        for (target, pending) in shard.pending.iter().enumerate() {
            let applied = shards[target].inbound_applied[source];
            for (sequence, c, amount) in pending {
                if *sequence > applied {
                    currencies[*c].in_flight_minor += *amount as i128;
                }
            }
        }
    }
    for report in &currencies {
        if report.sum_minor != 0 {
            failures.push(format!("{}: accounts sum to {} instead of 0", report.currency, report.sum_minor));
        }
        if report.in_transit_minor != report.in_flight_minor {
            failures.push(format!("{}: in-transit stripes hold {} but {} is in flight", report.currency, report.in_transit_minor, report.in_flight_minor));
        }
    }
    InvariantReport { ok: failures.is_empty(), currencies, entries_checked, failures }
}

/// Checks a running engine: every shard computes its figures on its own thread, all of them at
/// one moment (`Moment`): each shard waits in its read until every shard is in its own, so none
/// applies anything between the first figures and the last. Read one after the other (before
/// session 63), a credit sent, applied and acknowledged between two reads was in a stripe and in
/// no outbox, and under cross-shard traffic about half the checks said money was in transit that
/// nothing carried (helper 101). Checks run one at a time in a process (two at once, their reads
/// queued in different orders on different shards, waited on each other; helper 104); a shard
/// that has failed is not read (`ShardStopped` at once), and a read that fails lets the others
/// go at once. A shard that does not come to the moment within `MOMENT_WAIT` (busy with a long
/// batch) has the check taken again, up to `MOMENT_TRIES` times; then the answer is
/// `Overloaded` rather than figures that may disagree.
pub fn check_engine(engine: &Engine) -> Result<InvariantReport, EngineError> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((shard, _)) = engine.failures().first() {
        return Err(EngineError::ShardStopped(*shard));
    }
    let count = engine.config().shard_count as usize;
    let mut late = 0;
    for _ in 0..MOMENT_TRIES {
        let moment = Arc::new(Moment::new(count));
        let read: Vec<Result<(ShardFigures, bool), EngineError>> = std::thread::scope(|scope| {
            let reads: Vec<_> = (0..count)
                .map(|shard| {
                    let moment = moment.clone();
                    scope.spawn(move || {
                        let reading = moment.clone();
                        let read = engine.read_shard(shard as u16, move |state| {
                            let together = reading.arrive();
                            let figures = figures(state);
                            reading.leave(together);
                            (figures, together)
                        });
                        if read.is_err() {
                            // Its read never came to the moment: the others need not wait.
                            moment.abandon();
                        }
                        read
                    })
                })
                .collect();
            reads.into_iter().map(|read| read.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
        });
        let read: Vec<(ShardFigures, bool)> = read.into_iter().collect::<Result<_, _>>()?;
        if read.iter().any(|(_, together)| !together) {
            // The late one came to the moment after the others had given up: it saw them all.
            late = read.iter().position(|(_, together)| *together).unwrap_or(0);
            continue;
        }
        return Ok(combine(read.into_iter().map(|(figures, _)| figures).collect(), 0, Vec::new()));
    }
    Err(EngineError::Overloaded(late as u16))
}

/// How long a shard waits in its read for the others to come to the moment.
const MOMENT_WAIT: Duration = Duration::from_millis(500);
/// How long a shard that has its figures waits for the others to have theirs.
const MOMENT_LEAVE_WAIT: Duration = Duration::from_secs(30);
/// Checks taken before the check answers `Overloaded`.
const MOMENT_TRIES: u32 = 3;

/// The shards' reads of one check, held together: `arrive` returns once every shard is in its
/// read (true) or after `MOMENT_WAIT` or once a read failed (false: this check is not at one
/// moment); `leave` waits, once all arrived, until every shard has its figures, so that no
/// shard goes on to its next batch while another is still reading.
struct Moment {
    count: usize,
    /// Arrived, left, abandoned.
    state: Mutex<(usize, usize, bool)>,
    changed: Condvar,
}

impl Moment {
    fn new(count: usize) -> Moment {
        Moment { count, state: Mutex::new((0, 0, false)), changed: Condvar::new() }
    }

    fn arrive(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.0 += 1;
        self.changed.notify_all();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, MOMENT_WAIT, |(arrived, _, abandoned)| *arrived < self.count && !*abandoned)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.0 >= self.count && !state.2
    }

    fn leave(&self, together: bool) {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.1 += 1;
        self.changed.notify_all();
        if together {
            let _ = self.changed.wait_timeout_while(state, MOMENT_LEAVE_WAIT, |(_, left, abandoned)| *left < self.count && !*abandoned);
        }
    }

    /// A read that failed: nobody waits for it.
    fn abandon(&self) {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).2 = true;
        self.changed.notify_all();
    }
}

/// Checks a store offline: replays every shard (which verifies that the journal's postings are
/// what the commands produce), checks that every entry balances, and that each account's
/// balances equal the sum of its journal lines. A shard whose journal's start was archived
/// (`clearing archive`) sums its lines onto the balances of its oldest checkpoint the live
/// journal reaches (before session 61 the archived lines were missed and every account with
/// archived activity failed).
pub fn check_store(store: &dyn Store, shard_count: u16) -> Result<InvariantReport, EngineError> {
    check_store_with(store, None, shard_count)
}

/// `check_store` on a shared store (`clearing invariants`): the checkpoint a shard's balances
/// start from after an archive is loaded as a start loads it, its history left out of memory.
pub fn check_shared_store(store: &std::sync::Arc<dyn Store>, shard_count: u16) -> Result<InvariantReport, EngineError> {
    check_store_with(&**store, Some(store), shard_count)
}

fn check_store_with(store: &dyn Store, shared: Option<&std::sync::Arc<dyn Store>>, shard_count: u16) -> Result<InvariantReport, EngineError> {
    let mut shards = Vec::new();
    let mut failures = Vec::new();
    let mut entries_checked = 0u64;
    for shard in 0..shard_count {
        let (state, _, _) = replay_shard(store, shard)?;
        let mut lines: BTreeMap<(AccountId, u8), i128> = BTreeMap::new();
        let first_live = crate::journal::first_live_sequence(store, shard)?;
        let mut after = 0;
        let mut compare = true;
        if first_live > 1 {
            let load = |sequence: u64| match shared {
                Some(shared) => {
                    let history = crate::checkpoint::HistoryReader::new(shared.clone(), shard);
                    crate::checkpoint::load_with(store, shard, sequence, Some(&history)).ok().map(|(state, _, _)| state)
                }
                None => crate::checkpoint::load(store, shard, sequence).ok().map(|(state, _)| state),
            };
            let base = crate::checkpoint::list(store, shard)?
                .into_iter()
                .filter(|sequence| *sequence + 1 >= first_live)
                .find_map(|sequence| load(sequence).map(|state| (sequence, state)));
            match base {
                Some((sequence, base)) => {
                    after = sequence;
                    for account in &base.accounts {
                        for bucket in [Bucket::Settled, Bucket::Unsettled, Bucket::Frozen] {
                            lines.insert((account.id, bucket_index(bucket)), base.bucket_balance(account, bucket));
                        }
                    }
                }
                None => {
                    compare = false;
                    failures.push(format!(
                        "shard {shard}: its journal before batch {first_live} is archived and no checkpoint from there on loads: balances not checked against the journal"
                    ));
                }
            }
        }
        read_shard(store, shard, &mut |record| {
            let counted = record.sequence > after;
            let mut offset = 0usize;
            for entry in &record.entries {
                let postings = &record.postings[offset..offset + entry.posting_count as usize];
                offset += entry.posting_count as usize;
                entries_checked += 1;
                let sum: i128 = postings.iter().map(|p| p.amount as i128).sum();
                if sum != 0 {
                    failures.push(format!("entry {} is unbalanced by {sum}", entry.entry_id));
                }
                if counted {
                    for p in postings {
                        *lines.entry((p.account, bucket_index(p.bucket))).or_default() += p.amount as i128;
                    }
                }
            }
            Ok(())
        })?;
        for account in state.accounts.iter().filter(|_| compare) {
            for bucket in [Bucket::Settled, Bucket::Unsettled, Bucket::Frozen] {
                let journal = lines.get(&(account.id, bucket_index(bucket))).copied().unwrap_or(0);
                let balance = state.bucket_balance(account, bucket);
                if journal != balance {
                    failures.push(format!("account {} {bucket:?}: balance {balance} but journal lines sum to {journal}", account.id.0));
                }
            }
        }
        shards.push(figures(&state));
    }
    Ok(combine(shards, entries_checked, failures))
}

fn bucket_index(bucket: Bucket) -> u8 {
    match bucket {
        Bucket::Settled => 0,
        Bucket::Unsettled => 1,
        Bucket::Frozen => 2,
    }
}
