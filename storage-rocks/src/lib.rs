//! The RocksDB `Store`: one database, every batch written with `sync = true` (WAL fsync). The
//! only code that names rocksdb, in its own crate so that the engine's and clearing's tests build
//! without RocksDB's C++.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rocksdb::{BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};

use storage::{StorageError, Store};

/// The column family of the engine's cold idempotency rows (keys under `ROWS_PREFIX`).
///
/// One row per order number ever accepted: hundreds of millions of small rows with random keys,
/// written by every checkpoint and read only behind the engine's filter. In the default family
/// their compactions rewrote them with LZ4 beside the journal and the checkpoints (about a
/// quarter of the process's CPU at 100 M orders, most of it merging each flush of random keys
/// into the whole level below). Apart, they get options of their own (`rows_options`): no
/// compression (random keys do not compress), and more flushes gathered before a merge.
const ROWS_FAMILY: &str = "rows";

/// Keys that live in `ROWS_FAMILY`: the engine's cold idempotency rows (`engine::cold`). Other
/// `h/` keys (clearing's channel records) stay in the default family.
const ROWS_PREFIX: &[u8] = b"h/i/";

/// A RocksDB database in a directory.
pub struct RocksStore {
    db: DB,
    /// Whether `ROWS_PREFIX` keys live in `ROWS_FAMILY`: true for every database made by this
    /// build; false for one made before (every key in the default family, as it was written).
    rows_apart: bool,
    read_only: bool,
    poisoned: AtomicBool,
}

fn io(error: rocksdb::Error) -> StorageError {
    StorageError::Io(error.into_string())
}

impl RocksStore {
    /// Opens (creating if missing) the database in `path` for reading and writing.
    pub fn open(path: &Path) -> Result<RocksStore, StorageError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        // Journal values are large (one per batch) and written once: a larger write buffer
        // and LZ4 keep compaction cheap.
        options.set_write_buffer_size(64 << 20);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        options.set_max_background_jobs(2);
        // Values of a whole batch (about a megabyte) go to blob files, so compaction moves only
        // keys and pointers instead of rewriting the journal again and again.
        options.set_enable_blob_files(true);
        options.set_min_blob_size(4096);
        // Blob values are not compressed: LZ4 on every journal batch and checkpoint piece, at
        // flush and again when blob garbage collection moves them, cost about a sixth of the
        // process's CPU for a quarter less disk (10 M transfers with a checkpoint every 200
        // batches: 96 -> 80 s of CPU, 1.7 -> 2.2 GB; ARCHITECTURE.md "Measured"). Blob files
        // written compressed before stay readable: each file records its own compression.
        options.set_blob_compression_type(rocksdb::DBCompressionType::None);
        // A blob file is freed only once every value in it is dead; checkpoint parts and blobs
        // (pruned every checkpoint) share files with journal batches (kept), so without this the
        // space of every pruned checkpoint stayed on disk for good. Compactions relocate the
        // live values of the oldest quarter of blob files, which then go.
        options.set_enable_blob_gc(true);
        options.set_blob_gc_age_cutoff(0.25);
        with_point_lookup_filters(&mut options);
        // A new database gets the rows family; one made before it keeps every key where it is.
        let existing = if path.join("CURRENT").is_file() { DB::list_cf(&options, path).map_err(io)? } else { Vec::new() };
        let rows_apart = existing.is_empty() || existing.iter().any(|name| name == ROWS_FAMILY);
        options.create_missing_column_families(true);
        // The rows family flushes seldom, and the log is kept until every family has flushed
        // what it holds: bound it, so that a start after a crash replays at most this much.
        options.set_max_total_wal_size(256 << 20);
        // Each column family named and opened with its options: `DB::open_cf` by name would give
        // the default one RocksDB's defaults (no blob files, no bloom filters), which it silently
        // did for a while (journal values inline in tables, rewritten by every compaction; point
        // lookups without filters).
        let mut families = vec![ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, options.clone())];
        if rows_apart {
            families.push(ColumnFamilyDescriptor::new(ROWS_FAMILY, rows_options()));
        }
        let db = DB::open_cf_descriptors(&options, path, families).map_err(io)?;
        Ok(RocksStore { db, rows_apart, read_only: false, poisoned: AtomicBool::new(false) })
    }

    /// Opens an existing database read-only (for offline checks beside a running server).
    pub fn open_read_only(path: &Path) -> Result<RocksStore, StorageError> {
        let mut options = Options::default();
        with_point_lookup_filters(&mut options);
        Self::open_families_read_only(&options, path)
    }

    /// Opens every column family of the database in `path` read-only.
    fn open_families_read_only(options: &Options, path: &Path) -> Result<RocksStore, StorageError> {
        let existing = DB::list_cf(options, path).map_err(io)?;
        let rows_apart = existing.iter().any(|name| name == ROWS_FAMILY);
        // Each family with its own options (its bloom filters, for the rows' point lookups).
        let families = existing.iter().map(|name| ColumnFamilyDescriptor::new(name, if name == ROWS_FAMILY { rows_options() } else { options.clone() }));
        let db = DB::open_cf_descriptors_read_only(options, path, families, false).map_err(io)?;
        Ok(RocksStore { db, rows_apart, read_only: true, poisoned: AtomicBool::new(false) })
    }

    /// Opens a copy (a checkpoint, a backup, a restored directory) read-only without writing
    /// anything into its directory: RocksDB's info log, which a plain open creates (and rotates)
    /// there, goes nowhere, so the files a manifest lists stay exactly as they were.
    pub fn open_copy(path: &Path) -> Result<RocksStore, StorageError> {
        if !path.join("CURRENT").is_file() {
            return Err(StorageError::Io(format!("{} holds no database (no CURRENT file)", path.display())));
        }
        // The same blob settings as the server's database, so that values kept in blob files read back.
        let mut options = Options::default();
        options.set_enable_blob_files(true);
        options.set_min_blob_size(4096);
        options.set_blob_compression_type(rocksdb::DBCompressionType::None);
        options.set_info_logger(rocksdb::InfoLogger::new_callback_logger(rocksdb::LogLevel::Fatal, |_, _| {}));
        with_point_lookup_filters(&mut options);
        Self::open_families_read_only(&options, path)
    }

    /// Writes a RocksDB checkpoint of the whole database into `target`, which must not exist:
    /// every key (all shards' journals and every record: they share this one database and its
    /// default column family) as of one sequence number, memtables flushed first; table and blob
    /// files are hard links when `target` is on the same file system (copies otherwise), the
    /// write-ahead log is copied. Writers go on meanwhile.
    pub fn checkpoint(&self, target: &Path) -> Result<(), StorageError> {
        let checkpoint = rocksdb::checkpoint::Checkpoint::new(&self.db).map_err(io)?;
        checkpoint.create_checkpoint(target).map_err(io)
    }
}

/// The options of `ROWS_FAMILY`: small values in the tables (no blob files), no compression,
/// the same bloom filters, and eight flushes gathered before they are merged into the level below
/// (each merge of random keys rewrites all of that level, so half as many halves that cost).
fn rows_options() -> Options {
    let mut options = Options::default();
    options.set_write_buffer_size(64 << 20);
    options.set_compression_type(rocksdb::DBCompressionType::None);
    options.set_level_zero_file_num_compaction_trigger(8);
    with_point_lookup_filters(&mut options);
    options
}

/// Bloom filters for point lookups: cold idempotency records (`h/i/` + key) are probed for every
/// new order number, and nearly every probe is a miss. A whole-key filter of 10 bits per key
/// (about 1 % false positives) in every table file, and one in the memtable, answer most misses
/// without reading a data block. Iterators (journal scans) do not use them. Filters are written
/// into new table files only; older files get them as compaction rewrites them.
fn with_point_lookup_filters(options: &mut Options) {
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    table.set_whole_key_filtering(true);
    table.set_cache_index_and_filter_blocks(false);
    options.set_block_based_table_factory(&table);
    options.set_memtable_whole_key_filtering(true);
    options.set_memtable_prefix_bloom_ratio(0.02);
}

impl RocksStore {
    /// The keys from `start` to `end` (excluded) as ranges of one column family each, in key
    /// order: the part before `ROWS_PREFIX`, the rows, the part after them. (The engine's ranges
    /// lie within one prefix, so nearly always one range; the `Store` contract allows any.)
    fn ranges<'k>(&self, start: &'k [u8], end: &'k [u8]) -> Vec<(&ColumnFamily, &'k [u8], &'k [u8])> {
        const ROWS_END: &[u8] = b"h/i0";
        let default = self.family(b"");
        if !self.rows_apart {
            return vec![(default, start, end)];
        }
        let rows = self.family(ROWS_PREFIX);
        let pieces = [
            (default, start, end.min(ROWS_PREFIX)),
            (rows, start.clamp(ROWS_PREFIX, ROWS_END), end.clamp(ROWS_PREFIX, ROWS_END)),
            (default, start.max(ROWS_END), end),
        ];
        pieces.into_iter().filter(|(_, from, to)| from < to).collect()
    }

    /// The column family `key` lives in.
    fn family(&self, key: &[u8]) -> &ColumnFamily {
        let name = if self.rows_apart && key.starts_with(ROWS_PREFIX) { ROWS_FAMILY } else { rocksdb::DEFAULT_COLUMN_FAMILY_NAME };
        self.db.cf_handle(name).expect("every column family is opened with the database")
    }

    /// Writes one batch with sync (WAL fsync); a failure poisons the store.
    fn write_batch(&self, batch: WriteBatch) -> Result<(), StorageError> {
        if self.read_only {
            return Err(StorageError::ReadOnly);
        }
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(StorageError::Poisoned);
        }
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options).map_err(|error| {
            // A failed fsync leaves the file's state unknown: never write again in this process.
            self.poisoned.store(true, Ordering::SeqCst);
            io(error)
        })
    }
}

impl Store for RocksStore {
    fn write(&self, puts: &[(&[u8], &[u8])]) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        for (key, value) in puts {
            batch.put_cf(self.family(key), key, value);
        }
        self.write_batch(batch)
    }

    fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<(), StorageError> {
        // One range tombstone: cheap to write whatever the range holds; compaction drops the data.
        let mut batch = WriteBatch::default();
        for (family, from, to) in self.ranges(start, end) {
            batch.delete_range_cf(family, from, to);
        }
        self.write_batch(batch)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.db.get_cf(self.family(key), key).map_err(io)
    }

    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        let Some(first) = keys.first() else { return Ok(Vec::new()) };
        let family = self.family(first);
        if keys.iter().any(|key| !std::ptr::eq(self.family(key), family)) {
            // Keys of several families (no caller sends such): one lookup each.
            return keys.iter().map(|key| self.get(key)).collect();
        }
        let sorted = keys.windows(2).all(|pair| pair[0] <= pair[1]);
        self.db
            .batched_multi_get_cf(family, keys.iter().copied(), sorted)
            .into_iter()
            .map(|found| found.map(|value| value.map(|v| v.to_vec())).map_err(io))
            .collect()
    }

    fn scan(&self, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<(), StorageError> {
        for (family, from, to) in self.ranges(start, end) {
            for item in self.db.iterator_cf(family, IteratorMode::From(from, Direction::Forward)) {
                let (key, value) = item.map_err(io)?;
                if key.as_ref() >= to {
                    break;
                }
                if !visit(&key, &value) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }

    fn last_key_in(&self, start: &[u8], end: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        // Seek to the last key at or before `end`, step back over `end` itself: keys only, no
        // value (a journal batch's value lives in a blob file) is read. The ranges from the last.
        for (family, from, to) in self.ranges(start, end).into_iter().rev() {
            let mut iterator = self.db.raw_iterator_cf(family);
            iterator.seek_for_prev(to);
            if iterator.valid() && iterator.key() == Some(to) {
                iterator.prev();
            }
            iterator.status().map_err(io)?;
            if let Some(key) = iterator.key().filter(|key| *key >= from && *key < to) {
                return Ok(Some(key.to_vec()));
            }
        }
        Ok(None)
    }
}
