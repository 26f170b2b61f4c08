//! The RocksDB store against the conformance suite, reopened and read-only.

use storage::conformance::check_store;
use storage::Store;
use storage_rocks::RocksStore;

#[test]
fn rocks_store_conforms_and_persists() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = RocksStore::open(dir.path()).expect("open");
        check_store(&store);
    }
    let reopened = RocksStore::open(dir.path()).expect("reopen");
    assert_eq!(reopened.get(b"k/3").expect("get").as_deref(), Some(&b"three"[..]));
    drop(reopened);
    let read_only = RocksStore::open_read_only(dir.path()).expect("read-only");
    assert_eq!(read_only.get(b"k/1").expect("get").as_deref(), Some(&b"one"[..]));
    assert!(read_only.write(&[(b"x", b"y")]).is_err());
}
