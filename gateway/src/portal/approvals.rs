//! Four-eyes control: what moves money or trust by hand (a manual adjustment, a channel change,
//! a secret rotation, a case resolution, a raised limit) is proposed by one operator and carried
//! out only when a different operator with the `approver` role, whose scope contains the
//! proposal's, approves it. Proposals are JSON under `o/ap/{id}`; each step is written (synced)
//! and in the audit log before its answer. The decision is stored before the action runs, so a
//! proposal is carried out at most once; money actions carry an order number made from the
//! proposal's id, so the engine's idempotency makes a retry after a crash harmless.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use storage::Store;

use super::operators::{now_seconds, Role, Scope};
use super::sessions::Session;
use crate::error::ApiError;

const PREFIX: &str = "o/ap/";
/// Longest reason or note, in characters.
pub const REASON_CHARS_MAX: usize = 200;

/// What a proposal does when approved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// A new secret for a platform (shown once, to the approver).
    RotateSecret { platform: u32, overlap_seconds: Option<u64> },
    /// A change of a channel's settings (the `PATCH /admin/channels/{name}` body).
    ChangeChannel { channel: String, change: serde_json::Value },
    /// Closing a case with what was done.
    ResolveCase { case_id: String, resolution: String },
    /// A manual movement between accounts (or suspense), posted as an engine order.
    Adjustment { platform: u32, from: String, to: String, amount: String, currency: String, reason: String },
    /// New caps of an account.
    SetLimits { platform: u32, account: String, limits: BTreeMap<String, String> },
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::RotateSecret { .. } => "rotate_secret",
            Action::ChangeChannel { .. } => "change_channel",
            Action::ResolveCase { .. } => "resolve_case",
            Action::Adjustment { .. } => "adjustment",
            Action::SetLimits { .. } => "set_limits",
        }
    }

    /// One line for lists and the audit log.
    pub fn summary(&self) -> String {
        match self {
            Action::RotateSecret { platform, overlap_seconds } => {
                format!("rotate the secret of plt_{platform} (old one valid {} s more)", overlap_seconds.map_or("default".to_string(), |s| s.to_string()))
            }
            Action::ChangeChannel { channel, change } => format!("change channel {channel}: {change}"),
            Action::ResolveCase { case_id, resolution } => format!("resolve case {case_id}: {resolution}"),
            Action::Adjustment { from, to, amount, currency, reason, .. } => format!("adjust {amount} {currency} from {from} to {to}: {reason}"),
            Action::SetLimits { account, limits, .. } => {
                format!("set limits of {account}: {}", limits.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "))
            }
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

impl Proposal {
    /// The order number of a money action: unique per proposal, so a retry is a replay.
    pub fn out_order_no(&self) -> String {
        format!("approval-{}", self.id)
    }
}

pub struct Approvals {
    store: Arc<dyn Store>,
    inner: Mutex<BTreeMap<u64, Proposal>>,
}

impl Approvals {
    pub fn load(store: Arc<dyn Store>) -> Result<Approvals, String> {
        let proposals = crate::records::load_all::<Proposal>(store.as_ref(), PREFIX.as_bytes())?.into_iter().map(|(_, p)| (p.id, p)).collect();
        Ok(Approvals { store, inner: Mutex::new(proposals) })
    }

    fn save(&self, proposal: &Proposal) -> Result<(), ApiError> {
        crate::records::put(self.store.as_ref(), &[(crate::records::key(PREFIX, proposal.id), proposal)])
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
        let mut inner = self.inner.lock().expect("approvals lock");
        let proposal = Proposal {
            id: inner.keys().next_back().copied().unwrap_or(0) + 1,
            scope,
            action,
            note: note.to_string(),
            proposed_by: session.operator.id,
            proposer: session.operator.username.clone(),
            proposed_at: now_seconds(),
            status: Status::Pending,
            decided_by: None,
            decider: None,
            decided_at: None,
            outcome: String::new(),
        };
        self.save(&proposal)?;
        inner.insert(proposal.id, proposal.clone());
        Ok(proposal)
    }

    /// Proposals `scope` may see, newest first, optionally only one status.
    pub fn list(&self, scope: &Scope, status: Option<Status>, limit: usize) -> Vec<Proposal> {
        let inner = self.inner.lock().expect("approvals lock");
        inner.values().rev().filter(|p| scope.contains(&p.scope) && status.is_none_or(|s| p.status == s)).take(limit).cloned().collect()
    }

    pub fn get(&self, scope: &Scope, id: u64) -> Option<Proposal> {
        self.inner.lock().expect("approvals lock").get(&id).filter(|p| scope.contains(&p.scope)).cloned()
    }

    /// The decision of `session` on a pending proposal: the four-eyes rules, then the new
    /// status stored. Approving returns the proposal to carry out; the caller then calls
    /// `finish` with the outcome.
    pub fn decide(&self, session: &Session, id: u64, approve: bool) -> Result<Proposal, ApiError> {
        let mut inner = self.inner.lock().expect("approvals lock");
        let proposal = inner.get_mut(&id).filter(|p| session.scope().contains(&p.scope)).ok_or_else(ApiError::not_found)?;
        if proposal.status != Status::Pending {
            return Err(ApiError::new(409, "already_decided", &format!("this proposal is {} already", proposal.status.name())));
        }
        if !session.has(Role::Approver) {
            return Err(ApiError::new(403, "forbidden", "deciding needs the approver role"));
        }
        if proposal.proposed_by == session.operator.id {
            return Err(ApiError::new(403, "four_eyes", "a proposal is decided by another operator than the one who proposed it"));
        }
        let mut decided = proposal.clone();
        decided.status = if approve { Status::Approved } else { Status::Rejected };
        decided.decided_by = Some(session.operator.id);
        decided.decider = Some(session.operator.username.clone());
        decided.decided_at = Some(now_seconds());
        self.save(&decided)?;
        *proposal = decided.clone();
        Ok(decided)
    }

    /// Stores what carrying out an approved proposal gave.
    pub fn finish(&self, id: u64, outcome: Result<String, String>) -> Result<Proposal, ApiError> {
        let mut inner = self.inner.lock().expect("approvals lock");
        let proposal = inner.get_mut(&id).ok_or_else(ApiError::not_found)?;
        let mut finished = proposal.clone();
        (finished.status, finished.outcome) = match outcome {
            Ok(text) => (Status::Executed, text),
            Err(text) => (Status::Failed, text),
        };
        self.save(&finished)?;
        *proposal = finished.clone();
        Ok(finished)
    }
}
