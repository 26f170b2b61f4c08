//! Cases for an operator: money in suspense (an offline transfer that names no account able to
//! take it) and differences reconciliation cannot settle by itself (长款, 短款, amount, status
//! and fee mismatches). Cases are clearing state, owned by the clearing actor: the gateway's
//! offline transfers and reconciliation reports open them through it, operators list and
//! resolve them through it, so a case is never written by two threads at once. The CLI, which
//! runs without the actor, uses a `CaseBook` of its own.
//!
//! Stored as JSON `Case` records under `k/{case_id}` (the format the gateway wrote before), with
//! an empty `ko/{case_id}` beside each open one, written in the case's own write and deleted in
//! its resolution's. Memory holds how many are open, nothing else: open cases (which a hostile
//! platform can multiply, a suspense credit of a cent at a time) and resolved ones (which pile up
//! for as long as the bank runs) are read from the store when asked, a page at a time; open ones
//! through their `ko/` marks. `kw/{order}` names the suspense case of a failed payout's money
//! that went to suspense (not to its account), written with the cases; `ki/returned` marks
//! the suspense cases of earlier builds indexed so once.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use storage::Store;

use crate::error::ClearingError;

/// Key prefix of the cases.
const PREFIX: &str = "k/";
/// The key after every case's.
const PREFIX_END: &str = "k0";
/// Key prefix of the open cases' marks (empty values).
const OPEN_PREFIX: &str = "ko/";
const OPEN_PREFIX_END: &str = "ko0";
/// Written once the `ko/` marks exist: a database from before them (session 53) has them built
/// by one scan of its cases at its first start.
const OPEN_INDEX_BUILT: &[u8] = b"ki/open";
/// Written once the marks were checked against their cases: before session 55 a resolution
/// wrote its case and deleted its mark in two writes, so a stop between them left a mark of a
/// resolved case. Since, one write does both; a database from before has its marks checked
/// once, at its first start.
const OPEN_MARKS_CHECKED: &[u8] = b"ki/checked";
/// Key prefix of the suspense cases of failed payouts' money (`kw/{order id, big-endian}`, the
/// case's id as value): what a later success of the payout must not hold on the account.
const RETURNED_PREFIX: &[u8] = b"kw/";
/// Written once the suspense cases of earlier builds are indexed by order (`kw/`).
const RETURNED_INDEXED: &[u8] = b"ki/returned";
/// Written once the suspense cases of recharges' credits are indexed by order too (session 68:
/// a statement saying a credited recharge failed holds nothing of the account's other money
/// while its credit is in suspense).
const RETURNED_RECHARGES_INDEXED: &[u8] = b"ki/returned-recharges";
/// Cases one page lists at most.
pub const PAGE_MAX: usize = 1000;
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
    /// What the operator chose for the case's hold (`release` or `capture`), recorded before
    /// the hold is settled: a repeat that asks the other fate is refused, not answered as if
    /// done. Absent on cases without a hold and on those resolved before session 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
}

/// A case to open (unless one with its id exists).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseOpening {
    pub case_id: String,
    pub line: serde_json::Value,
    pub reason: String,
}

/// Checks a resolution's text and operator: not all blank, no control characters (tabs and
/// line breaks allowed in the resolution), within their lengths.
pub fn check_resolution(resolution: &Resolution) -> Result<(), ClearingError> {
    let plain =
        |text: &str, paragraphs: bool| !text.trim().is_empty() && text.chars().all(|c| !c.is_control() || (paragraphs && matches!(c, '\t' | '\n' | '\r')));
    if !plain(&resolution.resolution, true) || resolution.resolution.chars().count() > RESOLUTION_CHARS_MAX {
        return Err(ClearingError::invalid(
            "resolution must be 1 to 1024 characters, not all blank, without control characters but tabs and line breaks",
            "resolution",
        ));
    }
    if !plain(&resolution.operator, false) || resolution.operator.chars().count() > OPERATOR_CHARS_MAX {
        return Err(ClearingError::invalid("operator must be 1 to 128 characters, not all blank, without control characters", "operator"));
    }
    Ok(())
}

/// What becomes of a case's hold (a payout the bank says it paid after it failed) when the
/// case is resolved: released to the account (the bank's word was wrong, or it reversed), or
/// captured into suspense (the member was paid on its card: the money is not the account's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HoldFate {
    #[default]
    Release,
    Capture,
}

impl HoldFate {
    /// `release` or `capture`: the word of the API's `hold` and of `Case::hold`.
    pub fn name(self) -> &'static str {
        match self {
            HoldFate::Release => "release",
            HoldFate::Capture => "capture",
        }
    }
}

/// How an operator resolved a case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// What was done (e.g. "returned to the payer's bank, ref ...").
    pub resolution: String,
    /// Who did it.
    pub operator: String,
}

/// The cases, in the store; memory holds how many are open (counted from their marks at start,
/// kept by every opening and resolution after their write, by the marks each writes or drops).
/// Made by `load` only: a count must start from the store's marks.
#[derive(Debug)]
pub struct CaseBook {
    open_count: u64,
}

/// The key of a case.
pub(crate) fn case_key(case_id: &str) -> Vec<u8> {
    format!("{PREFIX}{case_id}").into_bytes()
}

fn open_key(case_id: &str) -> Vec<u8> {
    format!("{OPEN_PREFIX}{case_id}").into_bytes()
}

/// The key naming the suspense case of failed payout `order`'s money.
pub(crate) fn returned_key(order: u64) -> Vec<u8> {
    [RETURNED_PREFIX, &order.to_be_bytes()].concat()
}

/// Marks read per step when marks are walked.
const MARKS_CHUNK: usize = 1024;

/// The ids of up to `limit` open cases' marks after the mark `after` (from the first without
/// one), by id.
fn marked_ids(store: &dyn Store, after: Option<&[u8]>, limit: usize) -> Result<Vec<String>, ClearingError> {
    let mut start = after.map_or_else(|| OPEN_PREFIX.as_bytes().to_vec(), <[u8]>::to_vec);
    if after.is_some() {
        start.push(0);
    }
    let mut ids = Vec::with_capacity(limit.min(MARKS_CHUNK));
    store
        .scan(&start, OPEN_PREFIX_END.as_bytes(), &mut |key, _| {
            ids.push(String::from_utf8_lossy(&key[OPEN_PREFIX.len()..]).into_owned());
            ids.len() < limit
        })
        .map_err(storage)?;
    Ok(ids)
}

fn storage(error: impl std::fmt::Display) -> ClearingError {
    ClearingError::Storage(error.to_string())
}

fn decode(key: &[u8], value: &[u8]) -> Result<Case, ClearingError> {
    serde_json::from_slice(value).map_err(|error| ClearingError::Storage(format!("case {}: {error}", String::from_utf8_lossy(key))))
}

/// Which cases a page lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaseFilter {
    Open,
    Resolved,
    All,
}

impl CaseFilter {
    /// `open`, `resolved` or `all`.
    pub fn parse(text: &str) -> Option<CaseFilter> {
        match text {
            "open" => Some(CaseFilter::Open),
            "resolved" => Some(CaseFilter::Resolved),
            "all" => Some(CaseFilter::All),
            _ => None,
        }
    }

    fn keeps(self, case: &Case) -> bool {
        match self {
            CaseFilter::Open => case.status == "open",
            CaseFilter::Resolved => case.status != "open",
            CaseFilter::All => true,
        }
    }
}

/// One page of cases by id, and the id to list on from when there are more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CasePage {
    pub cases: Vec<Case>,
    pub next_cursor: Option<String>,
}

impl CaseBook {
    /// Counts the open cases by their marks (building the marks first on a database from before
    /// them, and checking them once on one from before a resolution dropped its mark in its own
    /// write): a scan of keys, no case read.
    pub fn load(store: &dyn Store) -> Result<CaseBook, ClearingError> {
        if store.get(OPEN_INDEX_BUILT).map_err(storage)?.is_none() {
            let all = storage::records::load_all::<Case>(store, PREFIX.as_bytes()).map_err(ClearingError::Storage)?;
            let marks: Vec<Vec<u8>> = all.iter().filter(|(_, case)| case.status == "open").map(|(_, case)| open_key(&case.case_id)).collect();
            let mut puts: Vec<(&[u8], &[u8])> = marks.iter().map(|key| (key.as_slice(), &b""[..])).collect();
            puts.push((OPEN_INDEX_BUILT, b"1"));
            puts.push((OPEN_MARKS_CHECKED, b"1"));
            storage::write_in_chunks(store, &puts).map_err(storage)?;
        }
        if store.get(OPEN_MARKS_CHECKED).map_err(storage)?.is_none() {
            CaseBook::drop_stale_marks(store)?;
            store.write(&[(OPEN_MARKS_CHECKED, b"1")]).map_err(storage)?;
        }
        if store.get(RETURNED_INDEXED).map_err(storage)?.is_none() {
            CaseBook::index_returned(store, &["withdrawal_failure", "recharge"], &[RETURNED_INDEXED, RETURNED_RECHARGES_INDEXED])?;
        } else if store.get(RETURNED_RECHARGES_INDEXED).map_err(storage)?.is_none() {
            CaseBook::index_returned(store, &["recharge"], &[RETURNED_RECHARGES_INDEXED])?;
        }
        let mut open_count = 0u64;
        store
            .scan(OPEN_PREFIX.as_bytes(), OPEN_PREFIX_END.as_bytes(), &mut |_, _| {
                open_count += 1;
                true
            })
            .map_err(storage)?;
        Ok(CaseBook { open_count })
    }

    /// Indexes by order (`kw/`) the suspense cases of the entries `kinds` (failed payouts' money,
    /// recharges' credits) that earlier builds opened without it, once (`markers` written after):
    /// one scan of the suspense cases.
    fn index_returned(store: &dyn Store, kinds: &[&str], markers: &[&[u8]]) -> Result<(), ClearingError> {
        let mut index: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let start = format!("{PREFIX}suspense_");
        let end = format!("{PREFIX}suspense`");
        store
            .scan(start.as_bytes(), end.as_bytes(), &mut |key, value| {
                // A record that does not decode is listed as it is; it names no order here.
                if let Ok(case) = decode(key, value) {
                    let order = case.line.get("order_id").and_then(|id| id.as_str()).and_then(bank::parse_order_ref);
                    let entry = case.line.get("entry").and_then(|e| e.as_str());
                    if let (Some(order), true) = (order, entry.is_some_and(|entry| kinds.contains(&entry))) {
                        index.push((returned_key(order.0), case.case_id.into_bytes()));
                    }
                }
                true
            })
            .map_err(storage)?;
        let mut puts: Vec<(&[u8], &[u8])> = index.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
        puts.extend(markers.iter().map(|marker| (*marker, b"1".as_slice())));
        storage::write_in_chunks(store, &puts).map_err(storage)
    }

    /// Deletes the marks of cases that are not open (a stop between the two writes of a
    /// resolution before session 55), reading every marked case once, a chunk at a time.
    fn drop_stale_marks(store: &dyn Store) -> Result<(), ClearingError> {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let ids = marked_ids(store, after.as_deref(), MARKS_CHUNK)?;
            let Some(last) = ids.last() else { return Ok(()) };
            after = Some(open_key(last));
            let keys: Vec<Vec<u8>> = ids.iter().map(|id| case_key(id)).collect();
            let borrowed: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            for ((id, key), value) in ids.iter().zip(&keys).zip(store.get_many(&borrowed).map_err(storage)?) {
                let open = value.map(|value| decode(key, &value)).transpose()?.is_some_and(|case| case.status == "open");
                if !open {
                    CaseBook::unmark(store, id)?;
                }
            }
        }
    }

    fn unmark(store: &dyn Store, case_id: &str) -> Result<(), ClearingError> {
        let mut end = open_key(case_id);
        let start = end.clone();
        end.push(0);
        store.delete_range(&start, &end).map_err(storage)
    }

    /// How many cases are still open.
    pub fn open_count(&self) -> u64 {
        self.open_count
    }

    /// One case, open or resolved (one read of the store).
    pub fn get(&self, store: &dyn Store, case_id: &str) -> Result<Option<Case>, ClearingError> {
        let key = case_key(case_id);
        store.get(&key).map_err(storage)?.map(|value| decode(&key, &value)).transpose()
    }

    /// The cases `filter` keeps with ids after `after`, by id, at most `limit` (1 to
    /// `PAGE_MAX`), read from the store: open ones through their marks (a mark whose case is not
    /// open, which only an older binary can leave, is passed over), the others by a scan of
    /// the cases.
    pub fn page(&self, store: &dyn Store, filter: CaseFilter, after: Option<&str>, limit: usize) -> Result<CasePage, ClearingError> {
        let limit = limit.clamp(1, PAGE_MAX);
        let mut cases: Vec<Case> = Vec::with_capacity(limit + 1);
        if filter == CaseFilter::Open {
            let mut from = after.map(open_key);
            while cases.len() <= limit {
                let ids = marked_ids(store, from.as_deref(), limit + 1 - cases.len())?;
                let Some(last) = ids.last() else { break };
                from = Some(open_key(last));
                let keys: Vec<Vec<u8>> = ids.iter().map(|id| case_key(id)).collect();
                let borrowed: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                for (key, value) in keys.iter().zip(store.get_many(&borrowed).map_err(storage)?) {
                    if let Some(case) = value.map(|value| decode(key, &value)).transpose()?.filter(|case| case.status == "open") {
                        cases.push(case);
                    }
                }
            }
        } else {
            let mut start = case_key(after.unwrap_or_default());
            if after.is_some() {
                start.push(0);
            }
            let mut failure = None;
            store
                .scan(&start, PREFIX_END.as_bytes(), &mut |key, value| match decode(key, value) {
                    Ok(case) => {
                        if filter.keeps(&case) {
                            cases.push(case);
                        }
                        cases.len() <= limit
                    }
                    Err(error) => {
                        failure = Some(error);
                        false
                    }
                })
                .map_err(storage)?;
            if let Some(error) = failure {
                return Err(error);
            }
        }
        let next_cursor = (cases.len() > limit).then(|| {
            cases.truncate(limit);
            cases.last().map(|case| case.case_id.clone()).unwrap_or_default()
        });
        Ok(CasePage { cases, next_cursor })
    }

    /// The cases of `openings` not opened before (re-runs open nothing twice, resolved ones
    /// included; the first of two openings with one id wins), as they would be stored, created
    /// at `now_micros`.
    pub(crate) fn new_cases(&self, store: &dyn Store, openings: Vec<CaseOpening>, now_micros: u64) -> Result<Vec<Case>, ClearingError> {
        let created_at = crate::calendar::rfc3339(now_micros);
        let keys: Vec<Vec<u8>> = openings.iter().map(|o| case_key(&o.case_id)).collect();
        let borrowed: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let stored: HashSet<&[u8]> = borrowed.iter().zip(store.get_many(&borrowed).map_err(storage)?).filter(|(_, v)| v.is_some()).map(|(k, _)| *k).collect();
        let mut fresh: BTreeMap<String, Case> = BTreeMap::new();
        for CaseOpening { case_id, line, reason } in openings {
            if fresh.contains_key(&case_id) || stored.contains(case_key(&case_id).as_slice()) {
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
                hold: None,
            };
            fresh.insert(case_id, case);
        }
        Ok(fresh.into_values().collect())
    }

    /// Opens the cases of `openings` not opened before, each with its mark, in one synced
    /// write; returns how many it opened.
    pub fn open(&mut self, store: &dyn Store, openings: Vec<CaseOpening>, now_micros: u64) -> Result<usize, ClearingError> {
        self.open_with(store, openings, now_micros, &mut Vec::new())
    }

    /// `open`, writing the records of `index` (keys beside the cases that find them) in the
    /// same write, even when no case is new (a stop may have come after the cases' write).
    pub(crate) fn open_with(
        &mut self,
        store: &dyn Store,
        openings: Vec<CaseOpening>,
        now_micros: u64,
        index: &mut Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<usize, ClearingError> {
        let fresh = self.new_cases(store, openings, now_micros)?;
        if fresh.is_empty() && index.is_empty() {
            return Ok(0);
        }
        let mut encoded: Vec<(Vec<u8>, Vec<u8>)> = fresh
            .iter()
            .flat_map(|case| [(case_key(&case.case_id), serde_json::to_vec(case).expect("cases serialize")), (open_key(&case.case_id), Vec::new())])
            .collect();
        // A mark already there (with no case: not written by this code) was counted at start.
        let marks: Vec<&[u8]> = encoded.iter().skip(1).step_by(2).map(|(key, _)| key.as_slice()).collect();
        let unmarked = store.get_many(&marks).map_err(storage)?.iter().filter(|mark| mark.is_none()).count();
        encoded.append(index);
        let puts: Vec<(&[u8], &[u8])> = encoded.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
        store.write(&puts).map_err(storage)?;
        self.open_count += unmarked as u64;
        Ok(fresh.len())
    }

    /// The suspense case of failed payout `order`'s money, if its failure sent it there.
    pub(crate) fn returned_case(&self, store: &dyn Store, order: u64) -> Result<Option<String>, ClearingError> {
        Ok(store.get(&returned_key(order)).map_err(storage)?.map(|id| String::from_utf8_lossy(&id).into_owned()))
    }

    /// Adds `warning` to open case `case_id`'s reason and `about` to its line's `see_also`
    /// (once: a repeat changes nothing); answers whether the case is open (a resolved or
    /// missing one is not changed).
    pub(crate) fn amend_open(&self, store: &dyn Store, case_id: &str, about: &str, warning: &str) -> Result<bool, ClearingError> {
        let Some(mut case) = self.get(store, case_id)?.filter(|case| case.status == "open") else { return Ok(false) };
        if case.line.get("see_also").and_then(|v| v.as_str()) == Some(about) {
            return Ok(true);
        }
        if let Some(line) = case.line.as_object_mut() {
            line.insert("see_also".into(), serde_json::Value::String(about.into()));
        }
        case.reason = format!("{}; {warning}", case.reason);
        let (key, record) = (case_key(&case.case_id), serde_json::to_vec(&case).expect("cases serialize"));
        store.write(&[(&key, &record)]).map_err(storage)?;
        Ok(true)
    }

    /// Records on open case `case` the fate its operator chose for its hold (one write of the
    /// case; its mark stays): written before the hold is settled, so that a repeat after a stop
    /// settles it the same way.
    pub(crate) fn note_hold(&self, store: &dyn Store, case: &mut Case, fate: HoldFate) -> Result<(), ClearingError> {
        case.hold = Some(fate.name().to_string());
        let (key, record) = (case_key(&case.case_id), serde_json::to_vec(&*case).expect("cases serialize"));
        store.write(&[(&key, &record)]).map_err(storage)
    }

    /// Records how an open case was resolved, by whom and when (`now_micros`).
    pub fn resolve(&mut self, store: &dyn Store, case_id: &str, resolution: Resolution, now_micros: u64) -> Result<Case, ClearingError> {
        check_resolution(&resolution)?;
        let Resolution { resolution, operator } = resolution;
        let mut case = self.get(store, case_id)?.ok_or(ClearingError::NotFound)?;
        let mark = open_key(&case.case_id);
        let mark_end = [mark.as_slice(), &[0]].concat();
        let marked = store.get(&mark).map_err(storage)?.is_some();
        if case.status == "resolved" {
            if marked {
                // A mark left beside a resolved case (by a store whose `write_and_delete` is
                // not one write, or an older binary): dropped, and no longer counted.
                store.delete_range(&mark, &mark_end).map_err(storage)?;
                self.open_count = self.open_count.saturating_sub(1);
            }
            return Err(ClearingError::CaseResolved);
        }
        case.status = "resolved".into();
        case.resolution = Some(resolution);
        case.resolved_by = Some(operator);
        case.resolved_at = Some(crate::calendar::rfc3339(now_micros));
        // The case and the end of its mark, one write.
        let (key, record) = (case_key(&case.case_id), serde_json::to_vec(&case).expect("cases serialize"));
        store.write_and_delete(&[(&key, &record)], &[(&mark, &mark_end)]).map_err(storage)?;
        if marked {
            self.open_count = self.open_count.saturating_sub(1);
        }
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
        let all = reloaded.page(&store, CaseFilter::All, None, PAGE_MAX).unwrap();
        let ids: Vec<(String, String)> = all.cases.into_iter().map(|c| (c.case_id, c.status)).collect();
        assert_eq!(ids, [("a".into(), "resolved".into()), ("b".into(), "open".into()), ("c".into(), "open".into())]);
        // Memory holds the count; a resolved one is read back, and never opened again.
        assert_eq!(reloaded.open_count(), 2);
        assert_eq!(reloaded.get(&store, "a").unwrap().map(|c| c.status), Some("resolved".into()));
        let mut reloaded = reloaded;
        assert_eq!(reloaded.open(&store, vec![opening("a"), opening("d")], 0).unwrap(), 1, "a was opened before");
        assert!(matches!(reloaded.resolve(&store, "a", resolution("again", "li"), 0), Err(ClearingError::CaseResolved)));
    }

    fn marks(store: &storage::MemoryStore) -> Vec<String> {
        let mut found = Vec::new();
        store
            .scan(OPEN_PREFIX.as_bytes(), OPEN_PREFIX_END.as_bytes(), &mut |key, _| {
                found.push(String::from_utf8_lossy(&key[OPEN_PREFIX.len()..]).into_owned());
                true
            })
            .unwrap();
        found
    }

    #[test]
    fn open_cases_are_marked_and_pages_walk_every_case_once() {
        let store = storage::MemoryStore::new();
        let mut book = CaseBook::load(&store).unwrap();
        let ids: Vec<String> = (0..25).map(|n| format!("c{n:02}")).collect();
        book.open(&store, ids.iter().map(|id| opening(id)).collect(), 0).unwrap();
        let resolution = Resolution { resolution: "done".into(), operator: "li".into() };
        for id in ids.iter().step_by(3) {
            book.resolve(&store, id, resolution.clone(), 0).unwrap();
        }
        let open: Vec<String> = ids.iter().enumerate().filter(|(n, _)| n % 3 != 0).map(|(_, id)| id.clone()).collect();
        assert_eq!(marks(&store), open, "a mark for each open case, none for resolved ones");
        for (filter, expected) in
            [(CaseFilter::All, ids.clone()), (CaseFilter::Open, open.clone()), (CaseFilter::Resolved, ids.iter().step_by(3).cloned().collect::<Vec<_>>())]
        {
            for limit in [1, 4, 7, 100] {
                let (mut seen, mut after) = (Vec::new(), None::<String>);
                loop {
                    let page = book.page(&store, filter, after.as_deref(), limit).unwrap();
                    assert!(page.cases.len() <= limit);
                    seen.extend(page.cases.into_iter().map(|c| c.case_id));
                    match page.next_cursor {
                        Some(next) => after = Some(next),
                        None => break,
                    }
                }
                assert_eq!(seen, expected, "{filter:?} by {limit}");
            }
        }
        assert_eq!((book.open_count(), CaseBook::load(&store).unwrap().open_count()), (open.len() as u64, open.len() as u64));
        // A resolution is one write: the case is open and marked (its write failed), or
        // resolved and unmarked (its write, the store's one write left, went through), never
        // resolved with its mark (two writes would leave that with the second failing).
        for (fail_after, resolved) in [(0, false), (1, true)] {
            let store = store.snapshot();
            let mut book = CaseBook::load(&store).unwrap();
            store.fail_after(fail_after);
            assert_eq!(book.resolve(&store, "c01", resolution.clone(), 0).is_ok(), resolved);
            let store = store.snapshot();
            let status = book.get(&store, "c01").unwrap().map(|c| c.status);
            assert_eq!(
                (status.as_deref(), marks(&store).contains(&"c01".to_string())),
                if resolved { (Some("resolved"), false) } else { (Some("open"), true) }
            );
            assert_eq!(book.open_count(), open.len() as u64 - u64::from(resolved));
        }
        // A mark of a resolved case (an older binary stopped between its two writes) is passed
        // over by pages, and dropped by the first load that checks the marks.
        let resolved = Case { status: "resolved".into(), ..book.get(&store, "c01").unwrap().unwrap() };
        storage::records::put(&store, &[(case_key("c01"), &resolved)]).unwrap();
        let walked = |limit| {
            let (mut seen, mut after) = (Vec::new(), None::<String>);
            loop {
                let page = book.page(&store, CaseFilter::Open, after.as_deref(), limit).unwrap();
                seen.extend(page.cases.into_iter().map(|c| c.case_id));
                match page.next_cursor {
                    Some(next) => after = Some(next),
                    None => return seen,
                }
            }
        };
        let still_open: Vec<String> = open.iter().filter(|id| *id != "c01").cloned().collect();
        for limit in [1, 2, 100] {
            assert_eq!(walked(limit), still_open, "by {limit}");
        }
        assert_eq!(CaseBook::load(&store).unwrap().open_count(), open.len() as u64, "checked once, before session 55's marker");
        // Resolving it again answers that it is resolved, and drops the mark and its count.
        {
            let store = store.snapshot();
            let mut book = CaseBook::load(&store).unwrap();
            assert!(matches!(book.resolve(&store, "c01", resolution.clone(), 0), Err(ClearingError::CaseResolved)));
            assert_eq!((book.open_count(), marks(&store).contains(&"c01".to_string())), (open.len() as u64 - 1, false));
            assert_eq!(CaseBook::load(&store).unwrap().open_count(), open.len() as u64 - 1);
        }
        // A mark with no case (not written by this code) is counted once, not again when a
        // case with its id is opened; its resolution counts it out once.
        {
            let store = store.snapshot();
            store.write(&[(&open_key("c99")[..], &b""[..])]).unwrap();
            let mut book = CaseBook::load(&store).unwrap();
            assert_eq!(book.open_count(), open.len() as u64 + 1);
            assert_eq!(book.open(&store, vec![opening("c99")], 0).unwrap(), 1);
            assert_eq!(book.open_count(), open.len() as u64 + 1);
            book.resolve(&store, "c99", resolution.clone(), 0).unwrap();
            assert_eq!((book.open_count(), CaseBook::load(&store).unwrap().open_count()), (open.len() as u64, open.len() as u64));
        }
        store.delete_range(OPEN_MARKS_CHECKED, &[OPEN_MARKS_CHECKED, &[0]].concat()).unwrap();
        assert_eq!(CaseBook::load(&store).unwrap().open_count(), open.len() as u64 - 1);
        assert!(!marks(&store).contains(&"c01".to_string()));
    }

    #[test]
    fn a_database_from_before_the_marks_gets_them_at_its_first_load() {
        let store = storage::MemoryStore::new();
        let case = |id: &str, status: &str| Case {
            case_id: id.into(),
            line: serde_json::json!({}),
            reason: "why".into(),
            status: status.into(),
            created_at: "2026-12-01T08:00:00Z".into(),
            resolution: None,
            resolved_by: None,
            resolved_at: None,
            hold: None,
        };
        // As session 52's book wrote them: records only.
        let records = [case("x", "open"), case("y", "resolved"), case("z", "open")];
        let keyed: Vec<(Vec<u8>, &Case)> = records.iter().map(|c| (case_key(&c.case_id), c)).collect();
        storage::records::put(&store, &keyed).unwrap();
        let book = CaseBook::load(&store).unwrap();
        let open = book.page(&store, CaseFilter::Open, None, PAGE_MAX).unwrap().cases;
        assert_eq!((open.into_iter().map(|c| c.case_id).collect::<Vec<_>>(), book.open_count()), (vec!["x".to_string(), "z".to_string()], 2));
        assert_eq!(marks(&store), ["x", "z"]);
        assert_eq!(store.get(OPEN_INDEX_BUILT).unwrap().as_deref(), Some(&b"1"[..]));
        // Built once: a record written without a mark afterwards is not found as open.
        storage::records::put(&store, &[(case_key("w"), &case("w", "open"))]).unwrap();
        assert_eq!(CaseBook::load(&store).unwrap().open_count(), 2);
    }

    #[test]
    fn suspense_cases_of_earlier_builds_are_indexed_by_their_payout_once() {
        let store = storage::MemoryStore::new();
        let case = |id: &str, entry: &str, order: &str| Case {
            case_id: id.into(),
            line: serde_json::json!({"account_id": "acc_1", "order_id": order, "entry": entry}),
            reason: "why".into(),
            status: "open".into(),
            created_at: "2026-12-01T08:00:00Z".into(),
            resolution: None,
            resolved_by: None,
            resolved_at: None,
            hold: None,
        };
        // As session 59's book left them: no `kw/` key.
        let records = [
            case("suspense_0_7_0", "withdrawal_failure", "ord_42"),
            case("suspense_0_8_0", "recharge", "ord_43"),
            case("case_B-1", "withdrawal_failure", "ord_44"),
        ];
        let keyed: Vec<(Vec<u8>, &Case)> = records.iter().map(|c| (case_key(&c.case_id), c)).collect();
        storage::records::put(&store, &keyed).unwrap();
        let book = CaseBook::load(&store).unwrap();
        let found = |order: u64| book.returned_case(&store, order).unwrap();
        // A payout's money and (since session 68) a recharge's credit in suspense, by order.
        assert_eq!((found(42).as_deref(), found(43).as_deref(), found(44)), (Some("suspense_0_7_0"), Some("suspense_0_8_0"), None));
        // A book that indexed payouts only (sessions 60 to 67) indexes the recharges' cases once.
        let older = storage::MemoryStore::new();
        storage::records::put(&older, &[(case_key("suspense_0_8_0"), &records[1])]).unwrap();
        older.write(&[(RETURNED_INDEXED, b"1".as_slice())]).unwrap();
        assert_eq!(CaseBook::load(&older).unwrap().returned_case(&older, 43).unwrap().as_deref(), Some("suspense_0_8_0"));
        // Once: a case written afterwards without its key is not indexed by a later load.
        storage::records::put(&store, &[(case_key("suspense_0_9_0"), &case("suspense_0_9_0", "withdrawal_failure", "ord_45"))]).unwrap();
        assert_eq!(CaseBook::load(&store).unwrap().returned_case(&store, 45).unwrap(), None);
    }

    #[test]
    fn cases_the_gateway_stored_still_load() {
        // A record exactly as the gateway wrote it before cases moved to clearing.
        let store = storage::MemoryStore::new();
        let stored = br#"{"case_id":"case_B-2","line":{"amount":"20.00","bank_ref":"B-2","currency":"CNY","payer_name":null,"virtual_account_no":"x"},"reason":"no virtual account number","status":"open","created_at":"2026-12-01T08:00:00.5Z","resolution":null,"resolved_by":null,"resolved_at":null}"#;
        store.write(&[(b"k/case_B-2".as_slice(), stored.as_slice())]).unwrap();
        let book = CaseBook::load(&store).unwrap();
        let case = book.get(&store, "case_B-2").unwrap().expect("loaded");
        assert_eq!((case.reason.as_str(), case.line["amount"].as_str()), ("no virtual account number", Some("20.00")));
        assert_eq!(serde_json::to_vec(&case).unwrap(), stored.to_vec(), "written back byte for byte");
        assert_eq!(book.open_count(), 1, "an open case of the gateway's is open");
    }
}
