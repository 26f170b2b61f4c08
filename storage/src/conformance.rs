//! One conformance suite that every `Store` implementation's tests run .

use crate::Store;

/// Checks `store` against the `Store` contract: empty reads, whole batches, overwrites, range deletes, ordered
/// and bounded scans that stop when told, empty batches. Panics on the first difference.
pub fn check_store(store: &dyn Store) {
    // Empty reads.
    assert_eq!(store.get(b"a").expect("get"), None);
    // A batch is written whole.
    store.write(&[(b"k/2", b"two"), (b"k/1", b"one"), (b"k/3", b"three")]).expect("write");
    assert_eq!(store.get(b"k/1").expect("get").as_deref(), Some(&b"one"[..]));
    // Overwrite.
    store.write(&[(b"k/2", b"TWO")]).expect("write");
    assert_eq!(store.get(b"k/2").expect("get").as_deref(), Some(&b"TWO"[..]));
    // Scans are ordered, bounded by [start, end), and stop when told.
    let mut seen = Vec::new();
    store
        .scan(b"k/", b"k/3", &mut |k, v| {
            seen.push((k.to_vec(), v.to_vec()));
            true
        })
        .expect("scan");
    assert_eq!(seen, vec![(b"k/1".to_vec(), b"one".to_vec()), (b"k/2".to_vec(), b"TWO".to_vec())]);
    let mut count = 0;
    store
        .scan(b"k/", b"k/~", &mut |_, _| {
            count += 1;
            false
        })
        .expect("scan");
    assert_eq!(count, 1);
    // A range delete removes `[start, end)` and nothing else.
    store.write(&[(b"d/1", b"x"), (b"d/2", b"y"), (b"d/3", b"z")]).expect("write");
    store.delete_range(b"d/1", b"d/3").expect("delete range");
    assert_eq!(store.get(b"d/1").expect("get"), None);
    assert_eq!(store.get(b"d/2").expect("get"), None);
    assert_eq!(store.get(b"d/3").expect("get").as_deref(), Some(&b"z"[..]));
    assert_eq!(store.get(b"k/1").expect("get").as_deref(), Some(&b"one"[..]));
    // An empty batch is allowed.
    store.write(&[]).expect("empty write");
    assert!(!store.is_poisoned());
}
