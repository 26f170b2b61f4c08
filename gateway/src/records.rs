//! JSON records under a key prefix (`storage::records`), with write failures as API errors.

use serde::de::DeserializeOwned;
use serde::Serialize;
use storage::Store;

use crate::error::ApiError;

pub use storage::records::{key, load_all};

/// Writes records in one atomic, synced store write.
pub fn put<T: Serialize>(store: &dyn Store, records: &[(Vec<u8>, &T)]) -> Result<(), ApiError> {
    storage::records::put(store, records).map_err(|e| ApiError::unavailable(e.to_string()))
}

/// Records one pass over a prefix hands its caller at a time (`for_each_chunk`).
pub const CHUNK_RECORDS: usize = 65_536;

/// Visits the JSON records of `[start, end)` in key order, `CHUNK_RECORDS` at a time: for
/// building keys beside records once (cards, signatures). A record that does not decode, or
/// whose key is not `key_of` it, is an error naming the key in hex (`what`: the record's kind).
pub fn for_each_chunk<T: DeserializeOwned>(
    store: &dyn Store,
    (start, end): (&[u8], &[u8]),
    what: &str,
    key_of: impl Fn(&T) -> Vec<u8>,
    mut visit: impl FnMut(&[T]) -> Result<(), String>,
) -> Result<(), String> {
    let mut from = start.to_vec();
    loop {
        let mut chunk: Vec<T> = Vec::new();
        let mut last_key = Vec::new();
        let mut failure = None;
        store
            .scan(&from, end, &mut |key, value| match serde_json::from_slice::<T>(value) {
                Ok(record) if key == key_of(&record).as_slice() => {
                    chunk.push(record);
                    last_key = key.to_vec();
                    chunk.len() < CHUNK_RECORDS
                }
                _ => {
                    failure = Some(format!("{what} record {} is corrupt", hex::encode(key)));
                    false
                }
            })
            .map_err(|e| e.to_string())?;
        if let Some(failure) = failure {
            return Err(failure);
        }
        visit(&chunk)?;
        if chunk.len() < CHUNK_RECORDS {
            return Ok(());
        }
        // The next key after the last one read.
        last_key.push(0);
        from = last_key;
    }
}

/// Writes `rows` in one synced write (nothing for none).
pub fn write_rows(store: &dyn Store, rows: &[(Vec<u8>, Vec<u8>)]) -> Result<(), String> {
    if rows.is_empty() {
        return Ok(());
    }
    let puts: Vec<(&[u8], &[u8])> = rows.iter().map(|(key, value)| (key.as_slice(), value.as_slice())).collect();
    store.write(&puts).map_err(|e| e.to_string())
}

/// The key of an order number `out_order_no` of `platform` under `prefix`:
/// `{prefix}{platform BE}/{out_order_no}` (members', cards' and signatures' order numbers).
pub fn order_key(prefix: &[u8], platform: u32, out_order_no: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 5 + out_order_no.len());
    key.extend_from_slice(prefix);
    key.extend_from_slice(&platform.to_be_bytes());
    key.push(b'/');
    key.extend_from_slice(out_order_no.as_bytes());
    key
}

/// The big-endian `u64` under `key` (a highest id), 0 when there is none; `what` names it in
/// the error for a value that is not 8 bytes.
pub fn read_u64(store: &dyn Store, key: &[u8], what: &str) -> Result<u64, String> {
    match store.get(key).map_err(|e| e.to_string())? {
        None => Ok(0),
        Some(value) => value.as_slice().try_into().map(u64::from_be_bytes).map_err(|_| format!("{what} is corrupt")),
    }
}

/// The last of ids that run from 1 without a gap (0 for none), `exists` telling which are
/// present: found by doubling, then bisection, in a logarithmic number of reads.
pub fn last_of_dense(mut exists: impl FnMut(u64) -> Result<bool, String>) -> Result<u64, String> {
    let (mut low, mut high) = (0u64, 1u64);
    while exists(high)? {
        low = high;
        high = high.checked_mul(2).ok_or("more records than ids")?;
    }
    // low is present (or 0), high is not.
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if exists(middle)? {
            low = middle;
        } else {
            high = middle;
        }
    }
    Ok(low)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Row {
        id: u64,
    }

    /// Every record once, in key order, a chunk at a time across the chunk's edge; a record
    /// under another record's key is an error naming it.
    #[test]
    fn a_pass_over_records_takes_each_once_in_chunks() {
        let store = storage::MemoryStore::new();
        let count = CHUNK_RECORDS as u64 + 3;
        let rows: Vec<(Vec<u8>, Row)> = (1..=count).map(|id| (key("t/", id), Row { id })).collect();
        let refs: Vec<(Vec<u8>, &Row)> = rows.iter().map(|(k, r)| (k.clone(), r)).collect();
        storage::records::put(&store, &refs).unwrap();
        let (mut seen, mut sizes) = (Vec::new(), Vec::new());
        for_each_chunk(
            &store,
            (b"t/", b"t0"),
            "row",
            |r: &Row| key("t/", r.id),
            |chunk: &[Row]| {
                sizes.push(chunk.len());
                seen.extend(chunk.iter().map(|r| r.id));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(sizes, [CHUNK_RECORDS, 3]);
        seen.sort_unstable();
        assert_eq!(seen, (1..=count).collect::<Vec<_>>());
        storage::records::put(&store, &[(key("t/", 5), &Row { id: 6 })]).unwrap();
        let refused = for_each_chunk(&store, (b"t/", b"t0"), "row", |r: &Row| key("t/", r.id), |_: &[Row]| Ok(()));
        assert!(refused.unwrap_err().contains("row record"));
    }

    #[test]
    fn the_last_of_dense_ids_is_found() {
        for last in [0u64, 1, 2, 3, 4, 5, 7, 8, 9, 100, 1_000, 65_537] {
            let mut reads = 0;
            let found = last_of_dense(|id| {
                reads += 1;
                Ok(id >= 1 && id <= last)
            })
            .unwrap();
            assert_eq!(found, last);
            assert!(reads <= 2 * 64, "{reads} reads for {last}");
        }
    }
}
