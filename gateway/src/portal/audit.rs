//! The operators' audit log: append-only records (who, role, scope, what, before/after, when,
//! from where, outcome) under `o/au/{sequence}`, each carrying the SHA-256 of the record before
//! it, so that a changed or removed record breaks the chain (`verify`). Written (synced) before
//! the answer to the action it records; searched within the searcher's scope; exported as CSV.
//! Memory holds the chain's head only (the next sequence, the last record's hash): records are
//! read from the store, a window at a time, newest first, for each search (operators act every
//! day for years, and each sign-in is a record).

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use storage::Store;

use super::operators::{now_seconds, Scope};
use super::sessions::Session;
use crate::error::ApiError;

/// The outcome of a record written before its action runs (`Audit::begin`).
pub const STARTED: &str = "started";

/// What an operator's action on the engine came to, for its outcome's record: the order it
/// made (`ok`, `replayed`), or `otherwise` with the refusal.
pub fn reply_outcome(result: &Result<engine::ledger::types::Reply, ApiError>, otherwise: &str) -> (String, String) {
    match result {
        Ok(reply) if reply.is_ok() => {
            (crate::orders::public_order_id(engine::ledger::types::OrderId(reply.id)), if reply.replayed { "replayed" } else { "ok" }.to_string())
        }
        Ok(reply) => (otherwise.to_string(), format!("refused: {}", crate::error::rejection(reply.code).code)),
        Err(error) => (otherwise.to_string(), format!("refused: {}", error.code)),
    }
}

/// The outcome of an action answering with a summary (a settlement run, a reconciliation):
/// `target` as named, `ok` with `fill` adding what the summary shows to the record, or the
/// error's message.
pub fn summary_outcome<T>(
    target: String,
    fill: impl FnOnce(&T, &mut serde_json::Value) + 'static,
) -> impl FnOnce(&Result<T, ApiError>, &mut serde_json::Value) -> (String, String) + 'static {
    move |outcome, after| match outcome {
        Ok(summary) => {
            fill(summary, after);
            (target, "ok".to_string())
        }
        Err(error) => (target, error.message.clone()),
    }
}

/// Runs `work`, an operator's money action, on a task of its own between its `started` record
/// and its outcome's (`outcome` gives the target and words from what it came to, and may add
/// to the request what the outcome's record shows after it): a request
/// cut short (its client gone, a proxy's timeout) neither stops the action halfway nor loses
/// its outcome's record (session 60). An action whose `started` record cannot be written does
/// not run.
#[allow(clippy::too_many_arguments)]
pub async fn audited<T: 'static>(
    portal: Arc<super::Portal>,
    session: Session,
    scope: Scope,
    action: &'static str,
    target: String,
    request: serde_json::Value,
    work: impl std::future::Future<Output = T> + 'static,
    outcome: impl FnOnce(&T, &mut serde_json::Value) -> (String, String) + 'static,
) -> Result<T, ApiError> {
    let (recording, recorder, named) = (portal.clone(), session.clone(), target.clone());
    let task = actix_web::rt::spawn(async move {
        portal.audit.begin(&session, scope, action, &target, &request)?;
        let done = work.await;
        let mut after = request;
        let (target, words) = outcome(&done, &mut after);
        // The action is done: an outcome's record that cannot be written is logged, not
        // answered as the action's failure (an operator would send the form again, under a
        // new order number).
        if let Err(error) = portal.audit.record(&session, scope, action, &target, serde_json::Value::Null, after, &words) {
            tracing::error!(action, "an audit outcome was not written: {}", error.message);
        }
        Ok(done)
    });
    match task.await {
        Ok(result) => result,
        Err(ended) => {
            // A panic (no input should reach one) ends the task before its outcome's record:
            // the log says so rather than leave the start alone.
            if ended.is_panic() {
                let _ =
                    recording.audit.record(&recorder, scope, action, &named, serde_json::Value::Null, serde_json::Value::Null, "failed: the action panicked");
                return Err(ApiError::new(500, "internal_error", "the action failed; the audit log records it"));
            }
            Err(ApiError::unavailable("the server is stopping".into()))
        }
    }
}

const PREFIX: &[u8] = b"o/au/";
/// Longest text kept of a before/after value (a record is never unbounded).
const VALUE_CHARS_MAX: usize = 4096;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub sequence: u64,
    pub at: i64,
    pub operator_id: u64,
    pub operator: String,
    pub roles: String,
    /// The scope the action concerns (a platform operator's records are its platform's).
    pub scope: Scope,
    pub action: String,
    pub target: String,
    pub before: String,
    pub after: String,
    pub from: String,
    pub outcome: String,
    /// Hex SHA-256 of the previous record's bytes ("" for the first).
    pub previous: String,
}

/// What a search asks for; every field narrows.
#[derive(Clone, Debug, Default)]
pub struct Query {
    pub operator: Option<String>,
    pub action: Option<String>,
    pub text: Option<String>,
    pub from_at: Option<i64>,
    pub to_at: Option<i64>,
    /// Records older than this sequence (the cursor of the previous page).
    pub before_sequence: Option<u64>,
    pub limit: usize,
}

pub struct Audit {
    store: Arc<dyn Store>,
    /// How many records there are (the last one's sequence), and the hash of the last one.
    inner: Mutex<(u64, String)>,
}

/// Records a start checks the links of (the newest ones); `verify` checks them all.
pub const START_CHECKED: u64 = 10_000;
/// Records one read of a search takes from the store.
const SEARCH_WINDOW: u64 = 256;
/// Records one search page examines at most.
const SEARCH_EXAMINED_MAX: usize = 100_000;

fn key(sequence: u64) -> Vec<u8> {
    let mut key = PREFIX.to_vec();
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

fn clip(value: String) -> String {
    if value.chars().count() <= VALUE_CHARS_MAX {
        value
    } else {
        value.chars().take(VALUE_CHARS_MAX).collect::<String>() + "…"
    }
}

fn text_of(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn prefix_end() -> Vec<u8> {
    let mut end = PREFIX.to_vec();
    *end.last_mut().expect("prefix") += 1;
    end
}

/// Walks the records from `from` to `to` (sequences, `to` excluded) in order, checking that each
/// names the hash of the one before (`previous`: the hash the first must name, `None` to take
/// the first as it is); returns how many it walked and the last one's hash.
fn walk_chain(store: &dyn Store, from: u64, to: u64, mut previous: Option<String>) -> Result<(u64, String), String> {
    let (mut walked, mut failure, mut expected) = (0u64, None, from);
    let end = if to == u64::MAX { prefix_end() } else { key(to) };
    store
        .scan(&key(from), &end, &mut |_, value| {
            let record = match serde_json::from_slice::<Record>(value) {
                Ok(record) => record,
                Err(error) => {
                    failure = Some(format!("audit record: {error}"));
                    return false;
                }
            };
            if record.sequence != expected || previous.as_ref().is_some_and(|previous| record.previous != *previous) {
                failure = Some(format!("audit log chain broken at record {}", record.sequence));
                return false;
            }
            previous = Some(hex::encode(Sha256::digest(value)));
            expected += 1;
            walked += 1;
            true
        })
        .map_err(|e| e.to_string())?;
    match failure {
        Some(failure) => Err(failure),
        None => Ok((walked, previous.unwrap_or_default())),
    }
}

impl Audit {
    /// Finds the chain's head and checks the links of the newest `START_CHECKED` records (the
    /// first names no record before it): a broken chain refuses the start (someone changed the
    /// records behind the server's back). `verify` checks the whole chain.
    pub fn load(store: Arc<dyn Store>) -> Result<Audit, String> {
        // Sequences run from 1 without a gap: the last one by doubling, then bisection.
        let last = crate::records::last_of_dense(|sequence| store.get(&key(sequence)).map(|v| v.is_some()).map_err(|e| e.to_string()))?;
        let first = last.saturating_sub(START_CHECKED).max(1);
        let previous = if first == 1 { Some(String::new()) } else { None };
        // Up to the end of the prefix: a record past a gap breaks the walk too.
        let (_, hash) = walk_chain(store.as_ref(), first, u64::MAX, previous)?;
        Ok(Audit { store, inner: Mutex::new((last, hash)) })
    }

    /// Appends a record of `session`'s action on `scope`; synced before it returns.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        session: &Session,
        scope: Scope,
        action: &str,
        target: &str,
        before: serde_json::Value,
        after: serde_json::Value,
        outcome: &str,
    ) -> Result<(), ApiError> {
        self.append(
            session.operator.id,
            &session.operator.username,
            &session.operator.role_names(),
            scope,
            action,
            target,
            before,
            after,
            &session.from,
            outcome,
        )
    }

    /// Records that an operator's action moving money starts (outcome `started`), before it
    /// runs: its outcome's record follows it, so a stop in between leaves the attempt in the
    /// log, with its order number (before session 60 only the outcome was written, after the
    /// action, and a stop in between lost the record). An action whose record cannot be
    /// written does not run.
    pub fn begin(&self, session: &Session, scope: Scope, action: &str, target: &str, request: &serde_json::Value) -> Result<(), ApiError> {
        self.record(session, scope, action, target, serde_json::Value::Null, request.clone(), STARTED)
    }

    /// Appends a record made without a session (a login attempt, the first operator at start).
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &self,
        operator_id: u64,
        operator: &str,
        roles: &str,
        scope: Scope,
        action: &str,
        target: &str,
        before: serde_json::Value,
        after: serde_json::Value,
        from: &str,
        outcome: &str,
    ) -> Result<(), ApiError> {
        let mut inner = self.inner.lock().expect("audit lock");
        let record = Record {
            sequence: inner.0 + 1,
            at: now_seconds(),
            operator_id,
            operator: operator.to_string(),
            roles: roles.to_string(),
            scope,
            action: action.to_string(),
            target: clip(target.to_string()),
            before: clip(text_of(&before)),
            after: clip(text_of(&after)),
            from: from.to_string(),
            outcome: clip(outcome.to_string()),
            previous: inner.1.clone(),
        };
        let bytes = serde_json::to_vec(&record).expect("records serialize");
        self.store.write(&[(&key(record.sequence), &bytes)]).map_err(|e| ApiError::unavailable(e.to_string()))?;
        inner.1 = hex::encode(Sha256::digest(&bytes));
        inner.0 = record.sequence;
        Ok(())
    }

    /// Records visible to `scope` that match `query`, newest first, and the cursor of the next
    /// page. Work per call is bounded by the records examined (at most 100,000 per page), read
    /// from the store `SEARCH_WINDOW` at a time.
    pub fn search(&self, scope: &Scope, query: &Query) -> Result<(Vec<Arc<Record>>, Option<u64>), ApiError> {
        let count = self.inner.lock().expect("audit lock").0;
        // Records below `index` (a sequence) are still to examine.
        let mut index = query.before_sequence.map_or(count + 1, |before| before.min(count + 1));
        let limit = query.limit.clamp(1, 500);
        let text = query.text.as_ref().map(|text| text.to_lowercase());
        let mut found = Vec::new();
        let mut examined = 0usize;
        while index > 1 && found.len() < limit && examined < SEARCH_EXAMINED_MAX {
            let low = index.saturating_sub(SEARCH_WINDOW).max(1);
            let mut window: Vec<(u64, Record)> = Vec::with_capacity((index - low) as usize);
            let mut failure = None;
            self.store
                .scan(&key(low), &key(index), &mut |stored, value| match serde_json::from_slice::<Record>(value) {
                    Ok(record) => {
                        // The page moves by the key's sequence, not the record's own field.
                        let sequence = stored.get(PREFIX.len()..).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes);
                        window.push((sequence, record));
                        true
                    }
                    Err(error) => {
                        failure = Some(error.to_string());
                        false
                    }
                })
                .map_err(|e| ApiError::unavailable(e.to_string()))?;
            if let Some(failure) = failure {
                return Err(ApiError::unavailable(format!("audit record: {failure}")));
            }
            if window.len() as u64 != index - low {
                return Err(ApiError::unavailable(format!("audit records {low} to {} are not all in the store", index - 1)));
            }
            for (sequence, record) in window.into_iter().rev() {
                if found.len() >= limit || examined >= SEARCH_EXAMINED_MAX {
                    break;
                }
                index = sequence;
                examined += 1;
                let visible = scope.contains(&record.scope);
                let matches = visible
                    && query.operator.as_ref().is_none_or(|name| &record.operator == name)
                    && query.action.as_ref().is_none_or(|action| record.action.starts_with(action.as_str()))
                    && query.from_at.is_none_or(|from| record.at >= from)
                    && query.to_at.is_none_or(|to| record.at < to)
                    && text.as_ref().is_none_or(|text| {
                        [&record.target, &record.before, &record.after, &record.outcome, &record.action]
                            .iter()
                            .any(|field| field.to_lowercase().contains(text.as_str()))
                    });
                if matches {
                    found.push(Arc::new(record));
                }
            }
        }
        let next = (index > 1).then_some(index);
        Ok((found, next))
    }

    /// Checks the whole chain against the store, one record at a time (nothing kept); how many
    /// records it holds.
    pub fn verify(&self) -> Result<u64, String> {
        verify_store(self.store.as_ref())
    }
}

/// Checks the whole audit chain of `store` (`clearing verify`, `Audit::verify`), one record at a
/// time; how many records it holds.
pub fn verify_store(store: &dyn Store) -> Result<u64, String> {
    walk_chain(store, 1, u64::MAX, Some(String::new())).map(|(walked, _)| walked)
}

/// CSV of records (header first; `csv_file`: quoted, no cell a spreadsheet would run).
pub fn csv(records: &[Arc<Record>]) -> Vec<u8> {
    let header = ["sequence", "at", "operator", "roles", "scope", "action", "target", "before", "after", "from", "outcome"];
    let rows = records.iter().map(|record| {
        [
            record.sequence.to_string(),
            crate::portal::format_time(record.at),
            record.operator.clone(),
            record.roles.clone(),
            record.scope.describe(),
            record.action.clone(),
            record.target.clone(),
            record.before.clone(),
            record.after.clone(),
            record.from.clone(),
            record.outcome.clone(),
        ]
    });
    crate::portal::csv_file(&header, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A money action runs between its `started` record and its outcome's; one that panics
    /// gets a `failed` outcome instead of leaving its start alone.
    #[actix_web::test]
    async fn an_audited_action_has_its_start_and_its_outcome_even_when_it_panics() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let (portal, _) = super::super::Portal::load(store, super::super::SessionLimits::default(), Vec::new()).expect("a portal");
        let portal = Arc::new(portal);
        let operator: super::super::Operator = serde_json::from_value(serde_json::json!({
            "id": 7, "username": "op7", "display_name": "", "scope": Scope::System, "roles": ["operator"],
            "password_hash": "", "created_at": 0, "created_by": "test",
        }))
        .expect("an operator");
        let session = Session { operator, csrf: String::new(), from: "127.0.0.1".into(), token: String::new() };
        let done = audited(
            portal.clone(),
            session.clone(),
            Scope::System,
            "order.freeze",
            "acc_1".into(),
            serde_json::json!({"amount": "1.00"}),
            async { 42 },
            |n: &i32, after: &mut serde_json::Value| {
                after["n"] = serde_json::json!(n);
                ("ord_9".to_string(), "ok".to_string())
            },
        )
        .await;
        assert_eq!(done.ok(), Some(42));
        let panicked = audited(
            portal.clone(),
            session,
            Scope::System,
            "order.release",
            "ord_9".into(),
            serde_json::Value::Null,
            async { panic!("a bug") },
            |_: &(), _: &mut serde_json::Value| (String::new(), "ok".to_string()),
        )
        .await;
        assert_eq!(panicked.err().map(|e| e.status), Some(500));
        let (records, _) = portal.audit.search(&Scope::System, &Query { limit: 50, ..Query::default() }).unwrap();
        let seen: Vec<(&str, &str, &str)> =
            records.iter().rev().filter(|r| r.action.starts_with("order.")).map(|r| (r.action.as_str(), r.target.as_str(), r.outcome.as_str())).collect();
        assert_eq!(
            seen,
            [
                ("order.freeze", "acc_1", STARTED),
                ("order.freeze", "ord_9", "ok"),
                ("order.release", "ord_9", STARTED),
                ("order.release", "ord_9", "failed: the action panicked")
            ]
        );
        assert_eq!(
            records.iter().find(|r| r.outcome == "ok").and_then(|r| serde_json::from_str::<serde_json::Value>(&r.after).ok()),
            Some(serde_json::json!({"amount": "1.00", "n": 42}))
        );
    }

    #[test]
    fn the_chain_finds_a_changed_record_and_search_keeps_to_the_scope() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let audit = Audit::load(store.clone()).expect("empty");
        for (n, scope) in [Scope::System, Scope::Platform { platform: 1 }, Scope::Platform { platform: 2 }, Scope::Merchant { platform: 1, member: 9 }]
            .into_iter()
            .enumerate()
        {
            audit
                .append(
                    1,
                    "alice",
                    "operator",
                    scope,
                    "platform.create",
                    &format!("target {n}"),
                    serde_json::Value::Null,
                    serde_json::json!({"n": n}),
                    "127.0.0.1",
                    "ok",
                )
                .expect("written");
        }
        assert_eq!(audit.verify(), Ok(4));
        let (mine, next) = audit.search(&Scope::Platform { platform: 1 }, &Query { limit: 50, ..Query::default() }).unwrap();
        assert_eq!(mine.iter().map(|r| r.sequence).collect::<Vec<_>>(), vec![4, 2]);
        assert_eq!(next, None);
        let (page, next) = audit.search(&Scope::System, &Query { limit: 2, ..Query::default() }).unwrap();
        assert_eq!((page.len(), next), (2, Some(3)));
        let (rest, _) = audit.search(&Scope::System, &Query { limit: 2, before_sequence: next, ..Query::default() }).unwrap();
        assert_eq!(rest.iter().map(|r| r.sequence).collect::<Vec<_>>(), vec![2, 1]);
        // Someone edits record 2 in the store: the chain breaks at record 3.
        let mut changed: Record = serde_json::from_slice(&store.get(&key(2)).unwrap().unwrap()).unwrap();
        changed.after = "{\"n\":100}".into();
        store.write(&[(&key(2), &serde_json::to_vec(&changed).unwrap())]).unwrap();
        assert_eq!(audit.verify(), Err("audit log chain broken at record 3".to_string()));
        let text = String::from_utf8(csv(&page)).unwrap();
        assert!(text.starts_with("sequence,at,operator"), "{text}");
    }

    fn append(audit: &Audit, n: u64) {
        let scope = if n.is_multiple_of(2) { Scope::Platform { platform: 1 } } else { Scope::Platform { platform: 2 } };
        audit
            .append(1, "alice", "operator", scope, "member.freeze", &format!("t{n}"), serde_json::Value::Null, serde_json::Value::Null, "127.0.0.1", "ok")
            .expect("written");
    }

    /// The log is read from the store for each search, a window at a time, and a start finds
    /// its head without reading it all: pages walk every visible record once, newest first,
    /// across windows and restarts.
    #[test]
    fn searches_read_the_store_a_window_at_a_time_and_a_start_finds_the_head() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let audit = Audit::load(store.clone()).expect("empty");
        for n in 1..=700 {
            append(&audit, n);
        }
        let audit = Audit::load(store.clone()).expect("reloaded");
        append(&audit, 701);
        assert_eq!(audit.inner.lock().unwrap().0, 701, "the next record follows the last one stored");
        assert_eq!(audit.verify(), Ok(701));
        let mine: Vec<u64> = (1..=701u64).rev().filter(|n| n.is_multiple_of(2)).collect();
        for limit in [1, 7, 100, 500] {
            let (mut seen, mut cursor) = (Vec::new(), None);
            loop {
                let (page, next) = audit.search(&Scope::Platform { platform: 1 }, &Query { limit, before_sequence: cursor, ..Query::default() }).unwrap();
                seen.extend(page.iter().map(|r| r.sequence));
                match next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            assert_eq!(seen, mine, "pages of {limit}");
        }
        // A record whose own sequence field was changed (older than a start checks): pages move
        // by the keys, so they still walk every record once.
        let mut changed: Record = serde_json::from_slice(&store.get(&key(50)).unwrap().unwrap()).unwrap();
        changed.sequence = 9_999;
        store.write(&[(&key(50), &serde_json::to_vec(&changed).unwrap())]).unwrap();
        let (mut walked, mut cursor) = (0, None);
        loop {
            let (page, next) = audit.search(&Scope::Platform { platform: 1 }, &Query { limit: 7, before_sequence: cursor, ..Query::default() }).unwrap();
            walked += page.len();
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(walked, mine.len());
        let (text, _) = audit.search(&Scope::System, &Query { limit: 500, text: Some("T69".into()), ..Query::default() }).unwrap();
        assert_eq!(text.iter().map(|r| r.sequence).collect::<Vec<_>>(), vec![699, 698, 697, 696, 695, 694, 693, 692, 691, 690, 69]);
    }

    /// A start checks the newest `START_CHECKED` links (and that nothing follows a gap); an
    /// older change is found by `verify`, which walks the whole chain.
    #[test]
    fn a_start_checks_the_newest_links_and_verify_all_of_them() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let audit = Audit::load(store.clone()).expect("empty");
        let count = START_CHECKED + 50;
        for n in 1..=count {
            append(&audit, n);
        }
        let tamper = |sequence: u64| {
            let mut changed: Record = serde_json::from_slice(&store.get(&key(sequence)).unwrap().unwrap()).unwrap();
            changed.target = "edited".into();
            store.write(&[(&key(sequence), &serde_json::to_vec(&changed).unwrap())]).unwrap();
        };
        tamper(20);
        assert!(Audit::load(store.clone()).is_ok(), "older than the records a start checks");
        assert_eq!(Audit::load(store.clone()).unwrap().verify(), Err("audit log chain broken at record 21".to_string()));
        tamper(count - 5);
        assert_eq!(Audit::load(store.clone()).err(), Some(format!("audit log chain broken at record {}", count - 4)));
        // A record past a gap refuses the start, as does a missing first one in a short log.
        let short: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let audit = Audit::load(short.clone()).expect("empty");
        for n in 1..=3 {
            append(&audit, n);
        }
        short.delete_range(&key(1), &key(2)).unwrap();
        assert_eq!(Audit::load(short.clone()).err(), Some("audit log chain broken at record 2".to_string()));
        short.delete_range(&key(2), &key(3)).unwrap();
        assert_eq!(Audit::load(short.clone()).err(), Some("audit log chain broken at record 3".to_string()));
    }
}
