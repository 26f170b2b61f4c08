//! Cases for an operator: money in suspense (an offline transfer that names no account able to
//! take it) and differences reconciliation cannot settle by itself (长款, 短款, amount, status
//! and fee mismatches). Cases are clearing state, owned by the clearing actor: the gateway's
//! offline transfers and reconciliation reports open them through it, operators list and
//! resolve them through it, so a case is never written by two threads at once. The CLI, which
//! runs without the actor, uses a `CaseBook` of its own.
//!
//! Stored as JSON `Case` records under `k/{case_id}` (the format the gateway wrote before).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use storage::Store;

use crate::error::ClearingError;

/// Key prefix of the cases.
const PREFIX: &str = "k/";
/// Longest resolution text an operator may record, in characters (what the API documents).
pub const RESOLUTION_CHARS_MAX: usize = 1024;
/// Longest operator name, in characters.
pub const OPERATOR_CHARS_MAX: usize = 128;

/// A case for an operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    pub case_id: String,
    /// The statement line (or order) the case is about.
    pub line: serde_json::Value,
    pub reason: String,
    /// `open` or `resolved`.
    pub status: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub resolution: Option<String>,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<String>,
}

/// A case to open (unless one with its id exists).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseOpening {
    pub case_id: String,
    pub line: serde_json::Value,
    pub reason: String,
}

/// How an operator resolved a case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// What was done (e.g. "returned to the payer's bank, ref ...").
    pub resolution: String,
    /// Who did it.
    pub operator: String,
}

/// Every case, loaded at start and written through (synced before it is kept in memory).
#[derive(Debug, Default)]
pub struct CaseBook {
    by_id: BTreeMap<String, Case>,
}

/// The key of a case.
pub(crate) fn case_key(case_id: &str) -> Vec<u8> {
    format!("{PREFIX}{case_id}").into_bytes()
}

impl CaseBook {
    /// Loads every stored case.
    pub fn load(store: &dyn Store) -> Result<CaseBook, ClearingError> {
        let records = storage::records::load_all::<Case>(store, PREFIX.as_bytes()).map_err(ClearingError::Storage)?;
        Ok(CaseBook { by_id: records.into_iter().map(|(_, case)| (case.case_id.clone(), case)).collect() })
    }

    /// Every case, by id.
    pub fn all(&self) -> Vec<Case> {
        self.by_id.values().cloned().collect()
    }

    /// How many cases are still open.
    pub fn open_count(&self) -> u64 {
        self.by_id.values().filter(|case| case.status == "open").count() as u64
    }

    /// One case.
    pub fn get(&self, case_id: &str) -> Option<&Case> {
        self.by_id.get(case_id)
    }

    /// The cases of `openings` not open yet (re-runs open nothing twice; the first of two
    /// openings with one id wins), as they would be stored, created at `now_micros`.
    pub(crate) fn new_cases(&self, openings: Vec<CaseOpening>, now_micros: u64) -> Vec<Case> {
        let created_at = crate::calendar::rfc3339(now_micros);
        let mut fresh: BTreeMap<String, Case> = BTreeMap::new();
        for CaseOpening { case_id, line, reason } in openings {
            if self.by_id.contains_key(&case_id) || fresh.contains_key(&case_id) {
                continue;
            }
            let case = Case {
                case_id: case_id.clone(),
                line,
                reason,
                status: "open".into(),
                created_at: created_at.clone(),
                resolution: None,
                resolved_by: None,
                resolved_at: None,
            };
            fresh.insert(case_id, case);
        }
        fresh.into_values().collect()
    }

    /// Keeps cases that were written.
    pub(crate) fn keep(&mut self, cases: Vec<Case>) {
        for case in cases {
            self.by_id.insert(case.case_id.clone(), case);
        }
    }

    /// Opens the cases of `openings` not open yet, in one synced write; returns how many it opened.
    pub fn open(&mut self, store: &dyn Store, openings: Vec<CaseOpening>, now_micros: u64) -> Result<usize, ClearingError> {
        let fresh = self.new_cases(openings, now_micros);
        if fresh.is_empty() {
            return Ok(0);
        }
        let records: Vec<(Vec<u8>, &Case)> = fresh.iter().map(|case| (case_key(&case.case_id), case)).collect();
        storage::records::put(store, &records).map_err(|e| ClearingError::Storage(e.to_string()))?;
        let opened = fresh.len();
        self.keep(fresh);
        Ok(opened)
    }

    /// Records how an open case was resolved, by whom and when (`now_micros`).
    pub fn resolve(&mut self, store: &dyn Store, case_id: &str, resolution: Resolution, now_micros: u64) -> Result<Case, ClearingError> {
        let Resolution { resolution, operator } = resolution;
        // Not all blank, no control characters (tabs and line breaks allowed in the resolution).
        let plain =
            |text: &str, paragraphs: bool| !text.trim().is_empty() && text.chars().all(|c| !c.is_control() || (paragraphs && matches!(c, '\t' | '\n' | '\r')));
        if !plain(&resolution, true) || resolution.chars().count() > RESOLUTION_CHARS_MAX {
            return Err(ClearingError::invalid(
                "resolution must be 1 to 1024 characters, not all blank, without control characters but tabs and line breaks",
                "resolution",
            ));
        }
        if !plain(&operator, false) || operator.chars().count() > OPERATOR_CHARS_MAX {
            return Err(ClearingError::invalid("operator must be 1 to 128 characters, not all blank, without control characters", "operator"));
        }
        let mut case = self.by_id.get(case_id).cloned().ok_or(ClearingError::NotFound)?;
        if case.status == "resolved" {
            return Err(ClearingError::CaseResolved);
        }
        case.status = "resolved".into();
        case.resolution = Some(resolution);
        case.resolved_by = Some(operator);
        case.resolved_at = Some(crate::calendar::rfc3339(now_micros));
        storage::records::put(store, &[(case_key(&case.case_id), &case)]).map_err(|e| ClearingError::Storage(e.to_string()))?;
        self.by_id.insert(case.case_id.clone(), case.clone());
        Ok(case)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opening(id: &str) -> CaseOpening {
        CaseOpening { case_id: id.into(), line: serde_json::json!({"bank_ref": id}), reason: "why".into() }
    }

    #[test]
    fn cases_open_once_resolve_once_and_survive_a_reload() {
        let store = storage::MemoryStore::new();
        let mut book = CaseBook::load(&store).unwrap();
        assert_eq!(book.open(&store, vec![opening("a"), opening("b"), opening("a")], 0).unwrap(), 2);
        assert_eq!(book.open(&store, vec![opening("b"), opening("c")], 0).unwrap(), 1, "b is open already");
        let resolution = |text: &str, operator: &str| Resolution { resolution: text.into(), operator: operator.into() };
        // (case, resolution, operator, expected error)
        let too_long = "x".repeat(RESOLUTION_CHARS_MAX + 1);
        let cases: &[(&str, &str, &str, Option<&str>)] = &[
            ("a", "", "li", Some("invalid")),
            ("a", "refunded", " ", Some("invalid")),
            ("a", &too_long, "li", Some("invalid")),
            ("zzz", "refunded", "li", Some("not found")),
            ("a", "refunded", "li", None),
            ("a", "again", "li", Some("resolved")),
        ];
        for (id, text, operator, expected) in cases {
            let outcome = book.resolve(&store, id, resolution(text, operator), 1_000_000);
            match (outcome, expected) {
                (Ok(case), None) => assert_eq!((case.status.as_str(), case.resolved_at.as_deref()), ("resolved", Some("1970-01-01T00:00:01Z"))),
                (Err(error), Some(expected)) => {
                    let name = match error {
                        ClearingError::Invalid { .. } => "invalid",
                        ClearingError::NotFound => "not found",
                        ClearingError::CaseResolved => "resolved",
                        other => panic!("{id}: {other}"),
                    };
                    assert_eq!(name, *expected, "{id} {text:?}");
                }
                (outcome, expected) => panic!("{id}: {outcome:?}, expected {expected:?}"),
            }
        }
        let reloaded = CaseBook::load(&store).unwrap();
        let ids: Vec<(String, String)> = reloaded.all().into_iter().map(|c| (c.case_id, c.status)).collect();
        assert_eq!(ids, [("a".into(), "resolved".into()), ("b".into(), "open".into()), ("c".into(), "open".into())]);
    }

    #[test]
    fn cases_the_gateway_stored_still_load() {
        // A record exactly as the gateway wrote it before cases moved to clearing.
        let store = storage::MemoryStore::new();
        let stored = br#"{"case_id":"case_B-2","line":{"amount":"20.00","bank_ref":"B-2","currency":"CNY","payer_name":null,"virtual_account_no":"x"},"reason":"no virtual account number","status":"open","created_at":"2026-12-01T08:00:00.5Z","resolution":null,"resolved_by":null,"resolved_at":null}"#;
        store.write(&[(b"k/case_B-2".as_slice(), stored.as_slice())]).unwrap();
        let book = CaseBook::load(&store).unwrap();
        let case = book.get("case_B-2").expect("loaded");
        assert_eq!((case.reason.as_str(), case.line["amount"].as_str()), ("no virtual account number", Some("20.00")));
        assert_eq!(serde_json::to_vec(case).unwrap(), stored.to_vec(), "written back byte for byte");
    }
}
