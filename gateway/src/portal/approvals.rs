//! Four-eyes control: what moves money or trust by hand (a manual adjustment, a channel change,
//! a secret rotation, a case resolution, a raised limit, a platform's settlement rule, a payout to
//! an outside card) is proposed by one operator and carried
//! out only when a different operator with the `approver` role, whose scope contains the
//! proposal's, approves it. Proposals are JSON under `o/ap/{id}`; each step is written (synced)
//! and in the audit log before its answer. The decision is stored before the action runs, so a
//! proposal is carried out at most once by its decision; money actions carry an order number made
//! from the proposal's id (a payout: the one its preview made), so the engine's idempotency makes
//! a retry after a crash harmless. A
//! proposal left `approved` with no outcome (the server stopped while it was carried out) is
//! carried out again only when an approver asks (`retry`), never while this process carries it
//! out already.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use storage::Store;

use super::operators::{now_seconds, Role, Scope};
use super::sessions::Session;
use crate::error::ApiError;

const PREFIX: &str = "o/ap/";
/// Longest reason or note, in characters.
pub const REASON_CHARS_MAX: usize = 200;
/// Pending proposals the operators of one platform (its merchants' included) may have at once;
/// pending ones are held in memory and every Approvals page and dashboard walks them under one
/// lock, so one tenant's flood slowed every other's (helper 103, session 63).
pub const PENDING_PER_PLATFORM_MAX: usize = 100;
/// Pending proposals the system operators may have at once.
pub const PENDING_SYSTEM_MAX: usize = 1_000;

/// What a proposal does when approved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// A new secret for a platform (shown once, to the approver), rotated from the version it
    /// had when proposed (`from_version`; `None` in proposals made before session 56: from
    /// whatever version it has), so that carrying it out again rotates at most once.
    RotateSecret {
        platform: u32,
        overlap_seconds: Option<u64>,
        #[serde(default)]
        from_version: Option<u32>,
    },
    /// A change of a channel's settings (the `PATCH /admin/channels/{name}` body).
    ChangeChannel { channel: String, change: serde_json::Value },
    /// Closing a case with what was done; `capture` takes its hold (if it has one) into
    /// suspense instead of releasing it (since session 59); `left_wrong`, on a case of a channel
    /// a payout left that says it paid it, finds that channel's word wrong: the payout may go on
    /// to another channel (since session 68; without it the payout goes no further).
    ResolveCase {
        case_id: String,
        resolution: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        capture: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        left_wrong: bool,
    },
    /// A manual movement between accounts (or suspense), posted as an engine order.
    Adjustment { platform: u32, from: String, to: String, amount: String, currency: String, reason: String },
    /// New caps of an account.
    SetLimits { platform: u32, account: String, limits: BTreeMap<String, String> },
    /// A platform's settlement rule (commission tiers, receivers, service fee): the body of
    /// `PUT /admin/platforms/{id}/settlement-rule`, or `None` to remove the rule.
    SetSettlementRule { platform: u32, rule: Option<serde_json::Value> },
    /// A 代付 of a member's money to an outside card: the `POST /v1/payouts` body, with the
    /// order number its preview made (two proposals of one preview pay out once).
    Payout { platform: u32, member: String, payout: crate::withdrawals::PayoutBody },
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::RotateSecret { .. } => "rotate_secret",
            Action::ChangeChannel { .. } => "change_channel",
            Action::ResolveCase { .. } => "resolve_case",
            Action::Adjustment { .. } => "adjustment",
            Action::SetLimits { .. } => "set_limits",
            Action::SetSettlementRule { .. } => "settlement_rule",
            Action::Payout { .. } => "payout",
        }
    }

    /// One line for lists and the audit log.
    pub fn summary(&self) -> String {
        match self {
            Action::RotateSecret { platform, overlap_seconds, .. } => {
                format!("rotate the secret of plt_{platform} (old one valid {} s more)", overlap_seconds.map_or("default".to_string(), |s| s.to_string()))
            }
            Action::ChangeChannel { channel, change } => format!("change channel {channel}: {change}"),
            Action::ResolveCase { case_id, resolution, capture, left_wrong } => {
                let fate = match (capture, left_wrong) {
                    (true, _) => " (its hold captured into suspense)",
                    (false, true) => " (the left channel's word found wrong: the payout may go on to another channel)",
                    (false, false) => "",
                };
                format!("resolve case {case_id}: {resolution}{fate}")
            }
            Action::Adjustment { from, to, amount, currency, reason, .. } => format!("adjust {amount} {currency} from {from} to {to}: {reason}"),
            Action::SetLimits { account, limits, .. } => {
                format!("set limits of {account}: {}", limits.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "))
            }
            Action::SetSettlementRule { platform, rule: Some(rule) } => format!("set the settlement rule of plt_{platform}: {rule}"),
            Action::SetSettlementRule { platform, rule: None } => format!("remove the settlement rule of plt_{platform}"),
            Action::Payout { member, payout, .. } => format!(
                "pay {} {} out of {} ({member}) to card {} of {} ({} account, {} arrival; fee by the route then; order {})",
                payout.amount,
                payout.currency,
                payout.account_id,
                crate::withdrawals::masked_card_no(&payout.card_no),
                payout.holder_name,
                payout.account_type.as_deref().unwrap_or("personal"),
                payout.arrival.as_deref().unwrap_or("standard"),
                payout.out_order_no
            ),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    /// Approved and being carried out (stays so if the server stopped in between).
    Approved,
    Executed,
    Failed,
    Rejected,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Executed => "executed",
            Status::Failed => "failed",
            Status::Rejected => "rejected",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Proposal {
    pub id: u64,
    pub scope: Scope,
    pub action: Action,
    pub note: String,
    pub proposed_by: u64,
    pub proposer: String,
    /// The platform of the proposer's own scope, 0 for a system operator (`None`: a proposal
    /// from before session 63, counted by the platform of its own scope): what
    /// `PENDING_PER_PLATFORM_MAX` counts by (`counted_as`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposer_platform: Option<u32>,
    pub proposed_at: i64,
    pub status: Status,
    #[serde(default)]
    pub decided_by: Option<u64>,
    #[serde(default)]
    pub decider: Option<String>,
    #[serde(default)]
    pub decided_at: Option<i64>,
    /// What carrying it out gave (an order id, the error), never a secret.
    #[serde(default)]
    pub outcome: String,
}

/// How long after its approval a proposal left without outcome may be carried out again: later,
/// what it does (a rotation's secret shown again, a change of limits or of a channel) is
/// proposed afresh. An adjustment or a payout has no such limit: carried out again it is the
/// engine's replay of its order number whenever it was applied, and a fresh proposal (another
/// number) would move the money a second time.
pub const RETRY_SECONDS_MAX: i64 = 86_400;

impl Proposal {
    /// The platform whose operators' waiting proposals this one counts among (`None`: the
    /// system operators'). A proposal from before the field counts by its own scope: a flood
    /// of a platform's proposals before the upgrade counts against that platform, not against
    /// the system operators (helper 104).
    fn counted_as(&self) -> Option<u32> {
        match self.proposer_platform {
            Some(0) => None,
            Some(platform) => Some(platform),
            None => self.scope.platform(),
        }
    }

    /// The order number of a money action: unique per proposal, so a retry is a replay.
    pub fn out_order_no(&self) -> String {
        format!("approval-{}", self.id)
    }

    /// Whether, approved and left without outcome, it may still be carried out again at `now`
    /// (unix seconds).
    pub fn retryable(&self, now: i64) -> bool {
        let in_time = |at: i64| matches!(self.action, Action::Adjustment { .. } | Action::Payout { .. }) || now.saturating_sub(at) <= RETRY_SECONDS_MAX;
        self.status == Status::Approved && self.decided_at.is_some_and(in_time)
    }
}

/// A platform's secret rotation shows the new API secret to whoever carries it out, once: that
/// one must be a platform admin too, as the webhook's secret and settings need (the API secret
/// reads and sets them through `/v1/webhook`, and pays out to any card alone). Since session 68
/// (helper 126#1: an approver without the admin role got the API secret, and with it every
/// admin power). Rejecting needs no more than the approver role.
fn reveals_secret_check(session: &Session, proposal: &Proposal) -> Result<(), ApiError> {
    if matches!(proposal.action, Action::RotateSecret { .. }) && matches!(proposal.scope, Scope::Platform { .. }) && !session.has(Role::Admin) {
        return Err(ApiError::new(403, "forbidden", "approving a secret rotation needs the admin role too: it shows the new API secret"));
    }
    Ok(())
}

/// Proposals: the pending ones in memory (what the dashboards count and approvers act on), every
/// one in the store (`o/ap/{id}`, ids dense from 1), read from it where listed or finished.
pub struct Approvals {
    store: Arc<dyn Store>,
    inner: Mutex<Inner>,
}

struct Inner {
    pending: BTreeMap<u64, Proposal>,
    highest: u64,
    /// Approved proposals this process is carrying out (from `decide` or `retry` to `finish` or
    /// `release`): not carried out again meanwhile. Empty at a start.
    carrying: BTreeSet<u64>,
}

/// `o/aq/{id BE}` (empty): a pending proposal, written with it; dropped once it is decided.
const PENDING_PREFIX: &[u8] = b"o/aq/";
const PENDING_PREFIX_END: &[u8] = b"o/aq0";
/// Written once the `o/aq/` marks exist: a database from before them (session 54) has them
/// built by one pass over its proposals at its first start.
const PENDING_BUILT: &[u8] = b"o/ai/pending";
/// The highest proposal id (u64, big-endian), written with each proposal.
const HIGHEST: &[u8] = b"o/ai/highest";
/// Ids past a taken one a proposal tries before giving up (`propose`).
const IDS_TRIED_MAX: u64 = 1_000;
/// Proposals one list examines at most, newest first (each a record read).
pub const LIST_SCAN_MAX: u64 = 5_000;
/// Proposals read from the store at a time when listing.
const LIST_WINDOW: u64 = 256;

fn record_key(id: u64) -> Vec<u8> {
    crate::records::key(PREFIX, id)
}

fn pending_key(id: u64) -> [u8; 13] {
    let mut key = [0u8; 13];
    key[..5].copy_from_slice(PENDING_PREFIX);
    key[5..].copy_from_slice(&id.to_be_bytes());
    key
}

fn decode(id: u64, value: &[u8]) -> Result<Proposal, ApiError> {
    serde_json::from_slice(value).map_err(|_| ApiError::corrupt(&format!("proposal record {id}")))
}

/// The highest proposal id: ids are dense from 1 (each is the highest + 1, written before the
/// next is made), so the largest id with a record is found by doubling, then bisection.
fn find_highest(store: &dyn Store) -> Result<u64, String> {
    crate::records::last_of_dense(|id| store.get(&record_key(id)).map(|v| v.is_some()).map_err(|e| e.to_string()))
}

/// See `Approvals::carrying`.
pub struct Carrying<'a> {
    approvals: &'a Approvals,
    id: u64,
}

impl Drop for Carrying<'_> {
    fn drop(&mut self) {
        self.approvals.release(self.id);
    }
}

impl Approvals {
    /// Opens the proposals in `store`: the pending ones (by their marks) and the highest id.
    pub fn load(store: Arc<dyn Store>) -> Result<Approvals, String> {
        if store.get(PENDING_BUILT).map_err(|e| e.to_string())?.is_none() {
            let all = crate::records::load_all::<Proposal>(store.as_ref(), PREFIX.as_bytes())?;
            let marks: Vec<[u8; 13]> = all.iter().filter(|(_, p)| p.status == Status::Pending).map(|(_, p)| pending_key(p.id)).collect();
            let mut puts: Vec<(&[u8], &[u8])> = marks.iter().map(|key| (key.as_slice(), &b""[..])).collect();
            puts.push((PENDING_BUILT, b"1"));
            storage::write_in_chunks(store.as_ref(), &puts).map_err(|e| e.to_string())?;
        }
        let mut ids = Vec::new();
        store
            .scan(PENDING_PREFIX, PENDING_PREFIX_END, &mut |key, _| {
                if let Some(id) = key.get(PENDING_PREFIX.len()..).and_then(|id| <[u8; 8]>::try_from(id).ok()) {
                    ids.push(u64::from_be_bytes(id));
                }
                true
            })
            .map_err(|e| e.to_string())?;
        let mut pending = BTreeMap::new();
        for id in ids {
            match store.get(&record_key(id)).map_err(|e| e.to_string())? {
                Some(value) => {
                    let proposal = decode(id, &value).map_err(|e| e.message)?;
                    if proposal.status == Status::Pending {
                        pending.insert(id, proposal);
                        continue;
                    }
                    // Decided by a run that stopped before dropping its mark.
                    Approvals::unmark(store.as_ref(), id).map_err(|e| e.to_string())?;
                }
                None => Approvals::unmark(store.as_ref(), id).map_err(|e| e.to_string())?,
            }
        }
        let stored = match store.get(HIGHEST).map_err(|e| e.to_string())? {
            Some(value) => Some(value.as_slice().try_into().map(u64::from_be_bytes).map_err(|_| "the highest proposal id is corrupt".to_string())?),
            None => None,
        };
        // Before the key (session 54) ids were dense: found by bisection. Proposals past the
        // stored id were made by a binary from before these keys (a downgrade, then upgrade):
        // the pending ones among them are marked, so they can be decided.
        let mut highest = match stored {
            Some(highest) => highest,
            None => find_highest(store.as_ref())?,
        };
        while let Some(value) = store.get(&record_key(highest + 1)).map_err(|e| e.to_string())? {
            highest += 1;
            let proposal = decode(highest, &value).map_err(|e| e.message)?;
            if proposal.status == Status::Pending {
                store.write(&[(&pending_key(highest)[..], &b""[..])]).map_err(|e| e.to_string())?;
                pending.insert(highest, proposal);
            }
        }
        if stored != Some(highest) {
            store.write(&[(HIGHEST, &highest.to_be_bytes()[..])]).map_err(|e| e.to_string())?;
        }
        Ok(Approvals { store, inner: Mutex::new(Inner { pending, highest, carrying: BTreeSet::new() }) })
    }

    fn unmark(store: &dyn Store, id: u64) -> Result<(), storage::StorageError> {
        let start = pending_key(id);
        let mut end = start.to_vec();
        end.push(0);
        store.delete_range(&start, &end)
    }

    fn save(&self, proposal: &Proposal) -> Result<(), ApiError> {
        crate::records::put(self.store.as_ref(), &[(record_key(proposal.id), proposal)])
    }

    fn read(&self, id: u64) -> Result<Option<Proposal>, ApiError> {
        self.store.get(&record_key(id)).map_err(ApiError::store)?.map(|value| decode(id, &value)).transpose()
    }

    /// Records a proposal by `session` (who needs the `operator` role and a scope containing
    /// `scope`).
    pub fn propose(&self, session: &Session, scope: Scope, action: Action, note: &str) -> Result<Proposal, ApiError> {
        if !session.has(Role::Operator) {
            return Err(ApiError::new(403, "forbidden", "proposing needs the operator role"));
        }
        if !session.scope().contains(&scope) {
            return Err(ApiError::not_found());
        }
        let note = note.trim();
        if note.chars().count() > REASON_CHARS_MAX {
            return Err(ApiError::invalid("the note must be at most 200 characters", "note"));
        }
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Counted by the proposer's own scope: a platform's flood never blocks the system
        // operators' proposals about it (a rotation of its secret, say).
        let own = session.scope().platform();
        let waiting = inner.pending.values().filter(|p| p.counted_as() == own).count();
        let most = if own.is_some() { PENDING_PER_PLATFORM_MAX } else { PENDING_SYSTEM_MAX };
        if waiting >= most {
            let message = format!("{most} proposals are waiting for an approver already: decide some first");
            return Err(ApiError::new(422, "proposal_limit_reached", &message));
        }
        // Past any id taken by a write this process did not see through (it failed, yet
        // reached the disk): a proposal's id is its money action's order number.
        // Pending ones found there (an older binary's, unmarked) are marked with this one.
        let mut id = inner.highest + 1;
        let mut found = Vec::new();
        while let Some(value) = self.store.get(&record_key(id)).map_err(ApiError::store)? {
            if id - inner.highest >= IDS_TRIED_MAX {
                return Err(ApiError::new(500, "internal_error", "proposal ids past the highest are taken"));
            }
            let taken = decode(id, &value)?;
            if taken.status == Status::Pending {
                found.push(taken);
            }
            id += 1;
        }
        let proposal = Proposal {
            id,
            scope,
            action,
            note: note.to_string(),
            proposed_by: session.operator.id,
            proposer: session.operator.username.clone(),
            proposer_platform: Some(own.unwrap_or(0)),
            proposed_at: now_seconds(),
            status: Status::Pending,
            decided_by: None,
            decider: None,
            decided_at: None,
            outcome: String::new(),
        };
        let (key, record, mark) = (record_key(proposal.id), serde_json::to_vec(&proposal).expect("proposals serialize"), pending_key(proposal.id));
        // One synced write: the proposal, its pending mark and the highest id.
        let highest = proposal.id.to_be_bytes();
        let marks: Vec<[u8; 13]> = found.iter().map(|p| pending_key(p.id)).collect();
        let mut puts: Vec<(&[u8], &[u8])> = vec![(&key, &record), (&mark, b""), (HIGHEST, &highest)];
        puts.extend(marks.iter().map(|mark| (mark.as_slice(), &b""[..])));
        self.store.write(&puts).map_err(ApiError::store)?;
        inner.highest = proposal.id;
        inner.pending.extend(found.into_iter().map(|p| (p.id, p)));
        inner.pending.insert(proposal.id, proposal.clone());
        Ok(proposal)
    }

    /// Proposals `scope` may see, newest first, optionally only one status: pending ones from
    /// memory; others read from the store, examining at most `LIST_SCAN_MAX` of the newest.
    pub fn list(&self, scope: &Scope, status: Option<Status>, limit: usize) -> Result<Vec<Proposal>, ApiError> {
        let keeps = |p: &Proposal| scope.contains(&p.scope) && status.is_none_or(|s| p.status == s);
        let highest = {
            let inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if status == Some(Status::Pending) {
                return Ok(inner.pending.values().rev().filter(|p| keeps(p)).take(limit).cloned().collect());
            }
            inner.highest
        };
        let mut found = Vec::new();
        let lowest = highest.saturating_sub(LIST_SCAN_MAX) + 1;
        let mut top = highest;
        while top >= lowest && found.len() < limit && top > 0 {
            let bottom = top.saturating_sub(LIST_WINDOW - 1).max(lowest);
            let keys: Vec<Vec<u8>> = (bottom..=top).rev().map(record_key).collect();
            let borrowed: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            for (id, value) in (bottom..=top).rev().zip(self.store.get_many(&borrowed).map_err(ApiError::store)?) {
                let Some(value) = value else { continue };
                let proposal = decode(id, &value)?;
                if keeps(&proposal) && found.len() < limit {
                    found.push(proposal);
                }
            }
            top = bottom - 1;
        }
        Ok(found)
    }

    /// Proposal `id` if `scope` may see it.
    pub fn get(&self, scope: &Scope, id: u64) -> Result<Option<Proposal>, ApiError> {
        Ok(self.read(id)?.filter(|p| scope.contains(&p.scope)))
    }

    /// The decision of `session` on a pending proposal: the four-eyes rules, then the new
    /// status stored (then its pending mark dropped). Approving returns the proposal to carry
    /// out; the caller then calls `finish` with the outcome.
    pub fn decide(&self, session: &Session, id: u64, approve: bool) -> Result<Proposal, ApiError> {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(proposal) = inner.pending.get(&id).filter(|p| session.scope().contains(&p.scope)) else {
            drop(inner);
            return match self.get(&session.scope(), id)? {
                Some(decided) => Err(ApiError::new(409, "already_decided", &format!("this proposal is {} already", decided.status.name()))),
                None => Err(ApiError::not_found()),
            };
        };
        if !session.has(Role::Approver) {
            return Err(ApiError::new(403, "forbidden", "deciding needs the approver role"));
        }
        if proposal.proposed_by == session.operator.id {
            return Err(ApiError::new(403, "four_eyes", "a proposal is decided by another operator than the one who proposed it"));
        }
        if approve {
            reveals_secret_check(session, proposal)?;
        }
        let mut decided = proposal.clone();
        decided.status = if approve { Status::Approved } else { Status::Rejected };
        decided.decided_by = Some(session.operator.id);
        decided.decider = Some(session.operator.username.clone());
        decided.decided_at = Some(now_seconds());
        self.save(&decided)?;
        inner.pending.remove(&id);
        if approve {
            inner.carrying.insert(id);
        }
        // The decision is durable: a mark that cannot be dropped now is dropped at the next start.
        if let Err(error) = Approvals::unmark(self.store.as_ref(), id) {
            tracing::warn!("approvals: proposal {id} left its pending mark: {error}");
        }
        Ok(decided)
    }

    /// An approved proposal whose outcome was never stored (the server stopped while it was
    /// carried out), to carry out again, asked by `session`: an approver other than its
    /// proposer, whose scope contains it. Refused while this process is carrying it out; the
    /// caller then calls `finish` (or `release`) as after `decide`. A money action carries the
    /// same order number again, so the engine answers it as a replay if it went through.
    pub fn retry(&self, session: &Session, id: u64) -> Result<Proposal, ApiError> {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let proposal = self.read(id)?.filter(|p| session.scope().contains(&p.scope)).ok_or_else(ApiError::not_found)?;
        if proposal.status != Status::Approved {
            let message = format!("only an approved proposal whose outcome was never stored is carried out again; this one is {}", proposal.status.name());
            return Err(ApiError::new(409, "already_decided", &message));
        }
        if !session.has(Role::Approver) {
            return Err(ApiError::new(403, "forbidden", "carrying a proposal out again needs the approver role"));
        }
        if proposal.proposed_by == session.operator.id {
            return Err(ApiError::new(403, "four_eyes", "a proposal is carried out by another operator than the one who proposed it"));
        }
        reveals_secret_check(session, &proposal)?;
        if !proposal.retryable(now_seconds()) {
            return Err(ApiError::new(409, "already_decided", "approved more than a day ago: propose it again"));
        }
        if !inner.carrying.insert(id) {
            return Err(ApiError::new(409, "in_progress", "this proposal is being carried out now"));
        }
        Ok(proposal)
    }

    /// This process's carrying out of proposal `id`, ended when the value is dropped however the
    /// carrying out ends (a panic unwinding its task included: before session 59 one left it
    /// "being carried out", refused to every "Carry out again", until a restart). `finish` and
    /// `release` end it too; ending it twice is harmless.
    pub fn carrying(&self, id: u64) -> Carrying<'_> {
        Carrying { approvals: self, id }
    }

    /// Whether this process is carrying out proposal `id` now.
    pub fn is_carrying(&self, id: u64) -> bool {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).carrying.contains(&id)
    }

    /// Gives up carrying out `id` with nothing stored (it stays `approved`, to be retried).
    pub fn release(&self, id: u64) {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).carrying.remove(&id);
    }

    /// Stores what carrying out an approved proposal gave (and ends its carrying out, stored or
    /// not: a proposal whose outcome could not be stored stays `approved`, to be retried).
    pub fn finish(&self, id: u64, outcome: Result<String, String>) -> Result<Proposal, ApiError> {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.carrying.remove(&id);
        let mut finished = self.read(id)?.ok_or_else(ApiError::not_found)?;
        (finished.status, finished.outcome) = match outcome {
            Ok(text) => (Status::Executed, text),
            Err(text) => (Status::Failed, text),
        };
        self.save(&finished)?;
        Ok(finished)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::portal::operators::Operator;

    fn session(id: u64, scope: Scope, roles: &[Role]) -> Session {
        let operator: Operator = serde_json::from_value(serde_json::json!({
            "id": id, "username": format!("op{id}"), "display_name": "", "scope": scope, "roles": roles,
            "password_hash": "", "created_at": 0, "created_by": "test",
        }))
        .expect("an operator");
        Session { operator, csrf: String::new(), from: "127.0.0.1".into(), token: String::new() }
    }

    fn limits(platform: u32) -> Action {
        Action::SetLimits { platform, account: "acc_1".into(), limits: BTreeMap::new() }
    }

    fn ids(list: &[Proposal]) -> Vec<u64> {
        list.iter().map(|p| p.id).collect()
    }

    /// A platform's operators (its merchants' too) have at most `PENDING_PER_PLATFORM_MAX`
    /// proposals waiting; another platform and the system operators are not held by its flood,
    /// also about that platform; a decision makes room (helper 103, session 63).
    #[test]
    fn pending_proposals_are_bounded_by_the_proposers_platform() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let approvals = Approvals::load(store.clone()).unwrap();
        let flooder = session(1, Scope::Platform { platform: 2 }, &[Role::Operator]);
        let merchant = session(2, Scope::Merchant { platform: 2, member: 7 }, &[Role::Operator]);
        for n in 0..PENDING_PER_PLATFORM_MAX {
            let who = if n % 2 == 0 { &flooder } else { &merchant };
            approvals.propose(who, who.scope(), limits(2), "").unwrap();
        }
        for who in [&flooder, &merchant] {
            let refused = approvals.propose(who, who.scope(), limits(2), "").unwrap_err();
            assert_eq!((refused.status, refused.code), (422, "proposal_limit_reached"));
        }
        let other = session(3, Scope::Platform { platform: 3 }, &[Role::Operator]);
        approvals.propose(&other, other.scope(), limits(3), "").expect("another platform's operators propose");
        let system = session(4, Scope::System, &[Role::Operator]);
        approvals.propose(&system, Scope::Platform { platform: 2 }, limits(2), "").expect("the system operators propose about it");
        // A decision makes room.
        let approver = session(5, Scope::Platform { platform: 2 }, &[Role::Approver]);
        let first = approvals.list(&Scope::Platform { platform: 2 }, Some(Status::Pending), 1000).unwrap().into_iter().find(|p| p.proposed_by == 1).unwrap();
        approvals.decide(&approver, first.id, false).unwrap();
        approvals.propose(&flooder, flooder.scope(), limits(2), "").expect("room again");
        // Proposals from before the field (none written) count by their own scope's platform,
        // not against the system operators.
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let template = Approvals::load(store.clone()).unwrap().propose(&flooder, flooder.scope(), limits(2), "").unwrap();
        let count = PENDING_SYSTEM_MAX as u64 + 1;
        for id in 1..=count {
            let old = Proposal { id, proposer_platform: None, ..template.clone() };
            let record = serde_json::to_vec(&old).unwrap();
            assert!(!String::from_utf8_lossy(&record).contains("proposer_platform"), "written as an earlier build wrote it");
            store.write(&[(&record_key(id)[..], &record[..]), (&pending_key(id)[..], &b""[..]), (HIGHEST, &count.to_be_bytes()[..])]).unwrap();
        }
        let reloaded = Approvals::load(store.clone()).unwrap();
        reloaded.propose(&system, Scope::Platform { platform: 2 }, limits(2), "").expect("old proposals are not the system operators'");
        let refused = reloaded.propose(&flooder, flooder.scope(), limits(2), "").unwrap_err();
        assert_eq!(refused.code, "proposal_limit_reached", "they are platform 2's");
    }

    #[test]
    fn pending_proposals_are_kept_decided_ones_read_from_the_store() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let approvals = Approvals::load(store.clone()).unwrap();
        let (proposer, approver) = (session(1, Scope::System, &[Role::Operator]), session(2, Scope::System, &[Role::Approver]));
        let platform_two = session(3, Scope::Platform { platform: 2 }, &[Role::Operator, Role::Approver]);
        for n in 1..=6u32 {
            approvals.propose(&proposer, Scope::Platform { platform: n % 2 + 1 }, limits(n % 2 + 1), "").unwrap();
        }
        approvals.decide(&approver, 2, true).unwrap();
        approvals.finish(2, Ok("done".into())).unwrap();
        approvals.decide(&approver, 3, false).unwrap();
        assert_eq!(approvals.decide(&approver, 3, true).unwrap_err().code, "already_decided");
        assert_eq!(approvals.decide(&platform_two, 4, true).unwrap_err().status, 404, "platform 1's, out of scope");
        for loaded in [approvals, Approvals::load(store.clone()).unwrap()] {
            assert_eq!(ids(&loaded.list(&Scope::System, Some(Status::Pending), 10).unwrap()), [6, 5, 4, 1]);
            assert_eq!(ids(&loaded.list(&Scope::System, None, 10).unwrap()), [6, 5, 4, 3, 2, 1]);
            assert_eq!(ids(&loaded.list(&Scope::System, None, 2).unwrap()), [6, 5]);
            assert_eq!(ids(&loaded.list(&Scope::Platform { platform: 2 }, None, 10).unwrap()), [5, 3, 1]);
            assert_eq!(ids(&loaded.list(&Scope::System, Some(Status::Executed), 10).unwrap()), [2]);
            assert_eq!(loaded.get(&Scope::System, 2).unwrap().map(|p| p.outcome), Some("done".to_string()));
            assert_eq!(loaded.get(&Scope::Platform { platform: 1 }, 3).unwrap().map(|p| p.id), None);
            assert_eq!(loaded.inner.lock().unwrap().highest, 6);
        }
        let marks = |store: &Arc<dyn Store>| {
            let mut found = Vec::new();
            store
                .scan(PENDING_PREFIX, PENDING_PREFIX_END, &mut |key, _| {
                    found.push(u64::from_be_bytes(key[5..].try_into().unwrap()));
                    true
                })
                .unwrap();
            found
        };
        assert_eq!(marks(&store), [1, 4, 5, 6]);
        // A mark a stop left behind (decision saved, mark not yet dropped) is dropped at start.
        store.write(&[(&pending_key(2)[..], &b""[..])]).unwrap();
        let approvals = Approvals::load(store.clone()).unwrap();
        assert_eq!(ids(&approvals.list(&Scope::System, Some(Status::Pending), 10).unwrap()), [6, 5, 4, 1]);
        assert_eq!(marks(&store), [1, 4, 5, 6]);
        assert_eq!(approvals.propose(&proposer, Scope::System, limits(1), "").unwrap().id, 7);
    }

    /// A proposal approved by a process that stopped before storing its outcome: carried out
    /// again only at an approver's request (not its proposer's, not out of scope), once at a
    /// time, and never while this process carries it out.
    #[test]
    fn an_approved_proposal_without_outcome_is_carried_out_again_once_at_a_time() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let approvals = Approvals::load(store.clone()).unwrap();
        let proposer = session(1, Scope::System, &[Role::Operator, Role::Approver]);
        let (approver, other) = (session(2, Scope::System, &[Role::Approver]), session(4, Scope::System, &[Role::Approver]));
        let viewer = session(5, Scope::System, &[Role::Viewer]);
        let platform_two = session(3, Scope::Platform { platform: 2 }, &[Role::Approver]);
        for _ in 0..5 {
            approvals.propose(&proposer, Scope::Platform { platform: 1 }, limits(1), "").unwrap();
        }
        assert_eq!(approvals.retry(&approver, 1).unwrap_err().code, "already_decided", "pending: decided first");
        approvals.decide(&approver, 1, true).unwrap();
        assert!(approvals.is_carrying(1));
        assert_eq!(approvals.retry(&other, 1).unwrap_err().code, "in_progress", "carried out by its decision now");
        approvals.finish(1, Ok("done".into())).unwrap();
        assert!(!approvals.is_carrying(1));
        assert_eq!(approvals.retry(&other, 1).unwrap_err().code, "already_decided", "executed");
        // A carrying out that panics ends with its task: another approver may carry it out again.
        approvals.decide(&approver, 5, true).unwrap();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _carrying = approvals.carrying(5);
            panic!("a bug in the carrying out");
        }));
        assert!(panicked.is_err() && !approvals.is_carrying(5));
        assert_eq!(approvals.retry(&other, 5).unwrap().status, Status::Approved);
        approvals.finish(5, Ok("done".into())).unwrap();
        approvals.decide(&approver, 2, true).unwrap();
        approvals.decide(&approver, 3, false).unwrap();
        assert_eq!(approvals.retry(&other, 3).unwrap_err().code, "already_decided", "rejected");
        // The process stops while 2 is carried out: approved, no outcome.
        let approvals = Approvals::load(store.clone()).unwrap();
        assert!(!approvals.is_carrying(2));
        assert_eq!(approvals.retry(&proposer, 2).unwrap_err().code, "four_eyes");
        assert_eq!(approvals.retry(&viewer, 2).unwrap_err().code, "forbidden");
        assert_eq!(approvals.retry(&platform_two, 2).unwrap_err().status, 404, "platform 1's, out of scope");
        assert_eq!(approvals.retry(&approver, 99).unwrap_err().status, 404);
        let again = approvals.retry(&other, 2).unwrap();
        assert_eq!((again.id, again.status, again.out_order_no()), (2, Status::Approved, "approval-2".to_string()));
        assert_eq!(approvals.retry(&approver, 2).unwrap_err().code, "in_progress", "one retry at a time");
        approvals.release(2);
        approvals.retry(&approver, 2).unwrap();
        assert_eq!(approvals.finish(2, Err("no such account".into())).unwrap().status, Status::Failed);
        assert_eq!(approvals.retry(&other, 2).unwrap_err().code, "already_decided", "failed is an outcome");
        assert_eq!(ids(&approvals.list(&Scope::System, Some(Status::Approved), 10).unwrap()), Vec::<u64>::new());
        // Approved more than a day ago: not carried out again.
        approvals.decide(&other, 4, true).unwrap_or_else(|_| panic!("4 is pending"));
        approvals.finish(4, Ok("done".into())).unwrap();
        let mut old = approvals.get(&Scope::System, 4).unwrap().unwrap();
        (old.status, old.outcome, old.decided_at) = (Status::Approved, String::new(), Some(now_seconds() - RETRY_SECONDS_MAX - 1));
        approvals.save(&old).unwrap();
        let message = approvals.retry(&approver, 4).unwrap_err().message;
        assert!(message.contains("more than a day ago"), "{message}");
        // An adjustment, whenever approved: carried out again it is a replay of its order
        // number (a fresh proposal would move the money again).
        old.action =
            Action::Adjustment { platform: 1, from: "acc_1".into(), to: "acc_2".into(), amount: "1.00".into(), currency: "CNY".into(), reason: "r".into() };
        old.decided_at = Some(now_seconds() - 30 * RETRY_SECONDS_MAX);
        approvals.save(&old).unwrap();
        assert_eq!(approvals.retry(&approver, 4).map(|p| p.out_order_no()).unwrap(), "approval-4");
    }

    #[test]
    fn the_highest_id_is_found_by_bisection_and_lists_examine_a_bounded_number() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        assert_eq!(find_highest(store.as_ref()).unwrap(), 0);
        let proposer = session(1, Scope::System, &[Role::Operator]);
        let approvals = Approvals::load(store.clone()).unwrap();
        let count = LIST_SCAN_MAX + 300;
        // Decided as they come (at most `PENDING_SYSTEM_MAX` wait at once), but platform 9's.
        let decider = session(2, Scope::System, &[Role::Approver]);
        for n in 1..=count {
            let scope = if n <= 5 { Scope::Platform { platform: 9 } } else { Scope::System };
            let proposal = approvals.propose(&proposer, scope, limits(1), "").unwrap();
            if n > 5 {
                approvals.decide(&decider, proposal.id, false).unwrap();
            }
            if [1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 100, 255, 256, 257, 1000].contains(&n) {
                assert_eq!(find_highest(store.as_ref()).unwrap(), n);
            }
        }
        assert_eq!(find_highest(store.as_ref()).unwrap(), count);
        // Platform 9's proposals are older than the newest LIST_SCAN_MAX: not reached by a list
        // of everything (only the pending ones, kept in memory, are).
        assert!(approvals.list(&Scope::Platform { platform: 9 }, None, 10).unwrap().is_empty());
        assert_eq!(ids(&approvals.list(&Scope::Platform { platform: 9 }, Some(Status::Pending), 10).unwrap()), [5, 4, 3, 2, 1]);
        assert_eq!(ids(&approvals.list(&Scope::System, None, 300).unwrap()).first(), Some(&count));
        assert_eq!(approvals.list(&Scope::System, None, 300).unwrap().len(), 300);
    }

    #[test]
    fn a_database_from_before_the_marks_has_them_built_once() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let approvals = Approvals::load(store.clone()).unwrap();
        let (proposer, approver) = (session(1, Scope::System, &[Role::Operator]), session(2, Scope::System, &[Role::Approver]));
        for _ in 0..12 {
            approvals.propose(&proposer, Scope::System, limits(1), "").unwrap();
        }
        approvals.decide(&approver, 10, false).unwrap();
        store.delete_range(b"o/aq/", b"o/aq0").unwrap();
        store.delete_range(b"o/ai/", b"o/ai0").unwrap();
        store
            .write(&[(&record_key(13)[..], &serde_json::to_vec(&Proposal { id: 13, ..approvals.get(&Scope::System, 12).unwrap().unwrap() }).unwrap()[..])])
            .unwrap();
        let approvals = Approvals::load(store.clone()).unwrap();
        let pending = ids(&approvals.list(&Scope::System, Some(Status::Pending), 100).unwrap());
        assert_eq!(pending, [13, 12, 11, 9, 8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(approvals.decide(&approver, 10, true).unwrap_err().code, "already_decided");
        assert_eq!(approvals.propose(&proposer, Scope::System, limits(1), "").unwrap().id, 14);
    }

    /// Proposals an older binary made after the marks were built (a downgrade) are found, and
    /// pending ones can be decided; an id taken behind this process's back is not written over.
    #[test]
    fn proposals_past_the_highest_id_are_found_and_never_written_over() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let approvals = Approvals::load(store.clone()).unwrap();
        let (proposer, approver) = (session(1, Scope::System, &[Role::Operator]), session(2, Scope::System, &[Role::Approver]));
        let first = approvals.propose(&proposer, Scope::System, limits(1), "").unwrap();
        // Written by another binary: ids 2 and 3, no marks, no highest.
        for id in [2u64, 3] {
            let old = Proposal { id, note: format!("old {id}"), ..first.clone() };
            crate::records::put(store.as_ref(), &[(record_key(id), &old)]).unwrap();
        }
        // This process does not know of them: it takes the next free id.
        assert_eq!(approvals.propose(&proposer, Scope::System, limits(1), "").unwrap().id, 4);
        let approvals = Approvals::load(store.clone()).unwrap();
        assert_eq!(ids(&approvals.list(&Scope::System, Some(Status::Pending), 10).unwrap()), [4, 3, 2, 1]);
        assert_eq!(approvals.decide(&approver, 3, false).unwrap().status, Status::Rejected);
        assert_eq!(approvals.propose(&proposer, Scope::System, limits(1), "").unwrap().id, 5);
        assert_eq!(approvals.get(&Scope::System, 2).unwrap().map(|p| p.note), Some("old 2".to_string()));
    }
}
