//! One conformance suite that every `Store` implementation's tests run .

use crate::Store;

/// Checks `store` against the `Store` contract: empty reads, whole batches, overwrites, ordered
/// and bounded scans that stop when told, range deletes, empty batches. Panics on the first difference.
pub fn check_store(store: &dyn Store) {
    // Empty reads.
    assert_eq!(store.get(b"a").expect("get"), None);
    // A batch is written whole.
    store.write(&[(b"k/2", b"two"), (b"k/1", b"one"), (b"k/3", b"three")]).expect("write");
    assert_eq!(store.get(b"k/1").expect("get").as_deref(), Some(&b"one"[..]));
    // Many keys at once, answered in their order, missing ones as `None`.
    let many = store.get_many(&[b"a", b"k/1", b"k/2", b"k/9"]).expect("get many");
    assert_eq!(many, vec![None, Some(b"one".to_vec()), Some(b"two".to_vec()), None]);
    assert!(store.get_many(&[]).expect("get none").is_empty());
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
    // The last key of a range: bounded by [start, end), none in an empty range.
    assert_eq!(store.last_key_in(b"k/", b"k/3").expect("last").as_deref(), Some(&b"k/2"[..]));
    assert_eq!(store.last_key_in(b"k/", b"k/~").expect("last").as_deref(), Some(&b"k/3"[..]));
    assert_eq!(store.last_key_in(b"k/2", b"k/3").expect("last").as_deref(), Some(&b"k/2"[..]));
    assert_eq!(store.last_key_in(b"k/4", b"k/~").expect("last"), None);
    assert_eq!(store.last_key_in(b"a", b"k/1").expect("last"), None);
    // A range is deleted whole, and only that range.
    store.write(&[(b"r/1", b"1"), (b"r/2", b"2"), (b"r/3", b"3")]).expect("write");
    store.delete_range(b"r/1", b"r/3").expect("delete range");
    assert_eq!(store.get(b"r/1").expect("get"), None);
    assert_eq!(store.get(b"r/2").expect("get"), None);
    assert_eq!(store.get(b"r/3").expect("get").as_deref(), Some(&b"3"[..]));
    assert_eq!(store.get(b"k/1").expect("get").as_deref(), Some(&b"one"[..]));
    // Several ranges at once: each deleted whole, nothing between or beside them.
    store.write(&[(b"d/1", b"1"), (b"d/2", b"2"), (b"d/3", b"3"), (b"d/4", b"4"), (b"d/5", b"5")]).expect("write");
    store.delete_ranges(&[(b"d/1", b"d/2"), (b"d/3", b"d/5")]).expect("delete ranges");
    store.delete_ranges(&[]).expect("no ranges");
    let left = store.get_many(&[b"d/1", b"d/2", b"d/3", b"d/4", b"d/5"]).expect("get many");
    assert_eq!(left, [None, Some(b"2".to_vec()), None, None, Some(b"5".to_vec())]);
    // Puts and deletions in one write: the deletions come after the puts (a put inside a
    // deleted range is gone), nothing else is touched.
    store.write(&[(b"w/1", b"1"), (b"w/2", b"2"), (b"w/3", b"3")]).expect("write");
    store.write_and_delete(&[(b"w/0", b"0"), (b"w/2", b"two"), (b"w/4", b"4")], &[(b"w/1", b"w/3"), (b"w/4", b"w/5")]).expect("write and delete");
    let left = store.get_many(&[b"w/0", b"w/1", b"w/2", b"w/3", b"w/4"]).expect("get many");
    assert_eq!(left, [Some(b"0".to_vec()), None, None, Some(b"3".to_vec()), None]);
    store.write_and_delete(&[], &[]).expect("nothing");
    // Sorted writes read back as any write; keys that do not ascend are written all the same.
    store.write_sorted(&[(b"s/1", b"1"), (b"s/2", b"2")]).expect("sorted write");
    store.write_sorted(&[(b"s/4", b"4"), (b"s/3", b"3")]).expect("unsorted write");
    store.write_sorted(&[]).expect("empty sorted write");
    let sorted = store.get_many(&[b"s/1", b"s/2", b"s/3", b"s/4"]).expect("get many");
    assert_eq!(sorted, [&b"1"[..], b"2", b"3", b"4"].map(|v| Some(v.to_vec())));
    // An empty batch is allowed.
    store.write(&[]).expect("empty write");
    assert!(!store.is_poisoned());
}
