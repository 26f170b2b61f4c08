//! The operators' audit log: append-only records (who, role, scope, what, before/after, when,
//! from where, outcome) under `o/au/{sequence}`, each carrying the SHA-256 of the record before
//! it, so that a changed or removed record breaks the chain (`verify`). Written (synced) before
//! the answer to the action it records; searched within the searcher's scope; exported as CSV.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use storage::Store;

use super::operators::{now_seconds, Scope};
use super::sessions::Session;
use crate::error::ApiError;

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
    /// Every record in order (operator actions are few; see ARCHITECTURE.md's known limits),
    /// and the hash of the last one.
    inner: Mutex<(Vec<Arc<Record>>, String)>,
}

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

impl Audit {
    /// Loads the log and checks its chain: a broken chain refuses the start (someone changed
    /// the records behind the server's back).
    pub fn load(store: Arc<dyn Store>) -> Result<Audit, String> {
        let mut records = Vec::new();
        let mut previous = String::new();
        let mut failure = None;
        let mut end = PREFIX.to_vec();
        *end.last_mut().expect("prefix") += 1;
        store
            .scan(PREFIX, &end, &mut |_, value| {
                let record = match serde_json::from_slice::<Record>(value) {
                    Ok(record) => record,
                    Err(error) => {
                        failure = Some(format!("audit record: {error}"));
                        return false;
                    }
                };
                if record.previous != previous {
                    failure = Some(format!("audit log chain broken at record {}", record.sequence));
                    return false;
                }
                previous = hex::encode(Sha256::digest(value));
                records.push(Arc::new(record));
                true
            })
            .map_err(|e| e.to_string())?;
        if let Some(failure) = failure {
            return Err(failure);
        }
        Ok(Audit { store, inner: Mutex::new((records, previous)) })
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
            sequence: inner.0.len() as u64 + 1,
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
        inner.0.push(Arc::new(record));
        Ok(())
    }

    /// Records visible to `scope` that match `query`, newest first, and the cursor of the next
    /// page. Work per call is bounded by the records examined (at most 100,000 per page).
    pub fn search(&self, scope: &Scope, query: &Query) -> (Vec<Arc<Record>>, Option<u64>) {
        let inner = self.inner.lock().expect("audit lock");
        let records = &inner.0;
        let start = query.before_sequence.map_or(records.len(), |before| (before.saturating_sub(1) as usize).min(records.len()));
        let limit = query.limit.clamp(1, 500);
        let text = query.text.as_ref().map(|text| text.to_lowercase());
        let mut found = Vec::new();
        let mut examined = 0usize;
        let mut index = start;
        while index > 0 && found.len() < limit && examined < 100_000 {
            index -= 1;
            examined += 1;
            let record = &records[index];
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
                found.push(record.clone());
            }
        }
        let next = (index > 0).then_some(index as u64 + 1);
        (found, next)
    }

    /// Checks the whole chain against the store (what `load` checks, on demand).
    pub fn verify(&self) -> Result<usize, String> {
        Audit::load(self.store.clone()).map(|audit| audit.inner.lock().expect("audit lock").0.len())
    }
}

/// CSV of records (header first), quoted by the csv crate.
pub fn csv(records: &[Arc<Record>]) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let _ = writer.write_record(["sequence", "at", "operator", "roles", "scope", "action", "target", "before", "after", "from", "outcome"]);
    for record in records {
        let _ = writer.write_record([
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
        ]);
    }
    writer.into_inner().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let (mine, next) = audit.search(&Scope::Platform { platform: 1 }, &Query { limit: 50, ..Query::default() });
        assert_eq!(mine.iter().map(|r| r.sequence).collect::<Vec<_>>(), vec![4, 2]);
        assert_eq!(next, None);
        let (page, next) = audit.search(&Scope::System, &Query { limit: 2, ..Query::default() });
        assert_eq!((page.len(), next), (2, Some(3)));
        let (rest, _) = audit.search(&Scope::System, &Query { limit: 2, before_sequence: next, ..Query::default() });
        assert_eq!(rest.iter().map(|r| r.sequence).collect::<Vec<_>>(), vec![2, 1]);
        // Someone edits record 2 in the store: the chain breaks at record 3.
        let mut changed: Record = serde_json::from_slice(&store.get(&key(2)).unwrap().unwrap()).unwrap();
        changed.after = "{\"n\":100}".into();
        store.write(&[(&key(2), &serde_json::to_vec(&changed).unwrap())]).unwrap();
        assert_eq!(audit.verify(), Err("audit log chain broken at record 3".to_string()));
        let text = String::from_utf8(csv(&page)).unwrap();
        assert!(text.starts_with("sequence,at,operator"), "{text}");
    }
}
