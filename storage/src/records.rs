//! JSON records under a key prefix: how the gateway, clearing and the bank simulator keep their
//! own objects (cards, channels, routing notes, the simulated bank's books) beside the journal.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{StorageError, Store};

/// The key that follows every key starting with `prefix` (prefixes end in `/`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    let last = end.last_mut().expect("non-empty prefix");
    *last += 1;
    end
}

/// Every record under `prefix`, with the rest of its key; a corrupt one fails the load.
pub fn load_all<T: DeserializeOwned>(store: &dyn Store, prefix: &[u8]) -> Result<Vec<(Vec<u8>, T)>, String> {
    let mut records = Vec::new();
    for_each(store, prefix, |rest, record| {
        records.push((rest.to_vec(), record));
        Ok(())
    })?;
    Ok(records)
}

/// Visits every record under `prefix` in key order with the rest of its key, holding one at a
/// time (a sum over a history need not hold the history); a corrupt record, or `visit`'s
/// error, ends the walk with that error.
pub fn for_each<T: DeserializeOwned>(store: &dyn Store, prefix: &[u8], mut visit: impl FnMut(&[u8], T) -> Result<(), String>) -> Result<(), String> {
    let mut failure = None;
    store
        .scan(prefix, &prefix_end(prefix), &mut |key, value| {
            let visited = serde_json::from_slice::<T>(value)
                .map_err(|error| format!("record {}: {error}", String::from_utf8_lossy(key)))
                .and_then(|record| visit(&key[prefix.len()..], record));
            match visited {
                Ok(()) => true,
                Err(error) => {
                    failure = Some(error);
                    false
                }
            }
        })
        .map_err(|e| e.to_string())?;
    failure.map_or(Ok(()), Err)
}

/// Writes records in one atomic, synced store write.
pub fn put<T: Serialize>(store: &dyn Store, records: &[(Vec<u8>, &T)]) -> Result<(), StorageError> {
    let encoded: Vec<(Vec<u8>, Vec<u8>)> = records.iter().map(|(key, record)| (key.clone(), serde_json::to_vec(record).expect("records serialize"))).collect();
    let pairs: Vec<(&[u8], &[u8])> = encoded.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
    store.write(&pairs)
}

/// `prefix` followed by the decimal id: keys whose order does not matter.
pub fn key(prefix: &str, id: impl std::fmt::Display) -> Vec<u8> {
    format!("{prefix}{id}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `for_each` visits the records under a prefix in key order, one at a time, and a corrupt
    /// record or the visitor's error ends the walk with that error.
    #[test]
    fn records_are_visited_in_order_and_a_corrupt_one_ends_the_walk() {
        let store = crate::MemoryStore::new();
        put(&store, &[(key("r/", 2), &20u64), (key("r/", 1), &10u64), (key("s/", 1), &99u64)]).unwrap();
        let mut seen = Vec::new();
        for_each::<u64>(&store, b"r/", |rest, value| {
            seen.push((rest.to_vec(), value));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, [(b"1".to_vec(), 10), (b"2".to_vec(), 20)]);
        let stopped = for_each::<u64>(&store, b"r/", |_, value| if value == 10 { Err("no tens".into()) } else { Ok(()) });
        assert_eq!(stopped, Err("no tens".to_string()));
        store.write(&[(b"r/3", b"not json")]).unwrap();
        assert!(for_each::<u64>(&store, b"r/", |_, _| Ok(())).unwrap_err().contains("record r/3"));
        assert!(load_all::<u64>(&store, b"r/").is_err());
    }
}
