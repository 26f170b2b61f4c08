//! JSON records under a key prefix (`storage::records`), with write failures as API errors.

use serde::Serialize;
use storage::Store;

use crate::error::ApiError;

pub use storage::records::{key, load_all};

/// Writes records in one atomic, synced store write.
pub fn put<T: Serialize>(store: &dyn Store, records: &[(Vec<u8>, &T)]) -> Result<(), ApiError> {
    storage::records::put(store, records).map_err(|e| ApiError::unavailable(e.to_string()))
}
