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
    let mut failure = None;
    store
        .scan(prefix, &prefix_end(prefix), &mut |key, value| match serde_json::from_slice::<T>(value) {
            Ok(record) => {
                records.push((key[prefix.len()..].to_vec(), record));
                true
            }
            Err(error) => {
                failure = Some(format!("record {}: {error}", String::from_utf8_lossy(key)));
                false
            }
        })
        .map_err(|e| e.to_string())?;
    failure.map_or(Ok(records), Err)
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
