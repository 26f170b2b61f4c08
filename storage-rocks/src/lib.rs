//! The RocksDB `Store`: one database, every batch written with `sync = true` (WAL fsync). The
//! only code that names rocksdb, in its own crate so that the engine's and clearing's tests build
//! without RocksDB's C++.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rocksdb::{BlockBasedOptions, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};

use storage::{StorageError, Store};

/// A RocksDB database in a directory.
pub struct RocksStore {
    db: DB,
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
        // The default column family named, so that its handle serves batched multi-gets, and
        // opened with these options: `DB::open_cf` by name would give it RocksDB's defaults (no
        // blob files, no bloom filters), which it silently did for a while (journal values
        // inline in tables, rewritten by every compaction; point lookups without filters).
        let db = DB::open_cf_with_opts(&options, path, [(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, options.clone())]).map_err(io)?;
        Ok(RocksStore { db, read_only: false, poisoned: AtomicBool::new(false) })
    }

    /// Opens an existing database read-only (for offline checks beside a running server).
    pub fn open_read_only(path: &Path) -> Result<RocksStore, StorageError> {
        let mut options = Options::default();
        with_point_lookup_filters(&mut options);
        let db = DB::open_for_read_only(&options, path, false).map_err(io)?;
        Ok(RocksStore { db, read_only: true, poisoned: AtomicBool::new(false) })
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
        let db = DB::open_for_read_only(&options, path, false).map_err(io)?;
        Ok(RocksStore { db, read_only: true, poisoned: AtomicBool::new(false) })
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
            batch.put(key, value);
        }
        self.write_batch(batch)
    }

    fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<(), StorageError> {
        // One range tombstone: cheap to write whatever the range holds; compaction drops the data.
        let mut batch = WriteBatch::default();
        batch.delete_range(start, end);
        self.write_batch(batch)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.db.get(key).map_err(io)
    }

    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        let Some(family) = self.db.cf_handle(rocksdb::DEFAULT_COLUMN_FAMILY_NAME) else {
            // Read-only opens name no column family: one lookup per key through MultiGet.
            return self.db.multi_get(keys).into_iter().map(|found| found.map_err(io)).collect();
        };
        let sorted = keys.windows(2).all(|pair| pair[0] <= pair[1]);
        self.db
            .batched_multi_get_cf(family, keys.iter().copied(), sorted)
            .into_iter()
            .map(|found| found.map(|value| value.map(|v| v.to_vec())).map_err(io))
            .collect()
    }

    fn scan(&self, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<(), StorageError> {
        for item in self.db.iterator(IteratorMode::From(start, Direction::Forward)) {
            let (key, value) = item.map_err(io)?;
            if key.as_ref() >= end || !visit(&key, &value) {
                break;
            }
        }
        Ok(())
    }

    fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }

    fn last_key_in(&self, start: &[u8], end: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        // Seek to the last key at or before `end`, step back over `end` itself: keys only, no
        // value (a journal batch's value lives in a blob file) is read.
        let mut iterator = self.db.raw_iterator();
        iterator.seek_for_prev(end);
        if iterator.valid() && iterator.key() == Some(end) {
            iterator.prev();
        }
        iterator.status().map_err(io)?;
        Ok(iterator.key().filter(|key| *key >= start && *key < end).map(<[u8]>::to_vec))
    }
}
