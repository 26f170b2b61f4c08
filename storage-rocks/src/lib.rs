//! The RocksDB `Store`: one database, every batch written with `sync = true` (WAL fsync). The
//! only code that names rocksdb, in its own crate so that the engine's and clearing's tests build
//! without RocksDB's C++.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rocksdb::{BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};

use storage::{StorageError, Store};

/// A column family of its own for the keys under one prefix, with options of its own.
struct Apart {
    family: &'static str,
    /// The prefix: keys from `start` up to `end` (excluded) live in `family`.
    start: &'static [u8],
    end: &'static [u8],
    options: fn(&Cache) -> Options,
}

/// The engine's cold idempotency rows (`engine::cold`, keys `h/i/`): one row per order number
/// ever accepted, hundreds of millions of small rows with random keys, written by every
/// checkpoint and read only behind the engine's filter. In the default family their compactions
/// rewrote them with LZ4 beside the journal and the checkpoints (about a quarter of the process's
/// CPU at 100 M orders, most of it merging each flush of random keys into the whole level below).
/// Other `h/` keys (clearing's channel records) stay in the default family.
const ROWS: Apart = Apart { family: "rows", start: b"h/i/", end: b"h/i0", options: rows_options };

/// The engine's journal (`engine::journal::batch_key`, keys `j` + shard + sequence): one value of
/// a whole batch (up to about a megabyte) per key, written once, never changed, deleted only by
/// `clearing archive` in whole ranges. Alone in its blob files, those die whole and need no
/// garbage collection: shared with pruned checkpoint parts (in the default family, before), blob
/// garbage collection relocated journal batches again and again as their files aged (at 10 M
/// transfers it read and rewrote 1.1 of 1.5 GB of blobs).
const JOURNAL: Apart = Apart { family: "journal", start: b"j", end: b"k", options: journal_options };

/// The engine's checkpoints but their history blobs (`engine::checkpoint`, keys `m/`: manifests,
/// parts, damage marks, writing marks, the saved cold-row filter, the shard count): parts of tens
/// of megabytes written at each checkpoint and pruned at the next ones.
const CHECKPOINTS_BEFORE_BLOBS: Apart = Apart { family: "checkpoints", start: b"m/", end: b"m/b/", options: checkpoints_options };
const CHECKPOINTS_AFTER_BLOBS: Apart = Apart { family: "checkpoints", start: b"m/b0", end: b"m0", options: checkpoints_options };

/// The history blobs of checkpoints (`m/b/`: chunks of orders, events, income blocks...): most
/// live for years (as long as a kept checkpoint names them), a few are replaced when old
/// history changes. Apart from the parts, so that collecting the parts' space (files of mostly
/// dead parts) does not relocate them, and collected with a narrow age window (see
/// `history_options`).
const HISTORY: Apart = Apart { family: "history", start: b"m/b/", end: b"m/b0", options: history_options };

/// What the memtables of all families may hold together; past it RocksDB flushes early.
const MEMTABLES_BYTES_MAX: usize = 192 << 20;

/// The one block cache of a database, all families together: data blocks read, and the rows
/// family's index and filter pieces (`rows_options`). Without it each family's table options made
/// a cache of their own (32 MiB each in RocksDB's defaults). A cache of the rows' own (64 MiB)
/// beside a shared 32 MiB one probed no faster at 100 M (ARCHITECTURE.md, "Measured").
const BLOCK_CACHE_BYTES: usize = 64 << 20;

/// Every key range apart from the default family, in key order (the checkpoints family holds
/// two, around the history's).
const APART: [&Apart; 5] = [&ROWS, &JOURNAL, &CHECKPOINTS_BEFORE_BLOBS, &HISTORY, &CHECKPOINTS_AFTER_BLOBS];

/// The families made together with the journal's (a database has all of them or none).
const WITH_JOURNAL: [&str; 3] = ["journal", "checkpoints", "history"];

/// A RocksDB database in a directory.
pub struct RocksStore {
    db: DB,
    /// The key ranges apart this database has, in key order (`layout`): all of `APART` for a
    /// database made by this build; for one made before, those of the families it was made with
    /// (the keys of the others live in the default family, as they were written, and stay there).
    apart: Vec<&'static Apart>,
    read_only: bool,
    poisoned: AtomicBool,
    /// Why flushes and compactions do not write with direct I/O (`open`), none when they do;
    /// a read-only store writes nothing.
    direct_writes: Option<String>,
    /// The mount point of the database's file system if it trims every deleted file in the
    /// write path (`online_discard`, at `open`); none for a read-only store.
    online_discard: Option<std::path::PathBuf>,
    /// The disk under the database and how far the kernel reads ahead on it (`read_ahead`, at
    /// `open`); none for a read-only store, or where it cannot be told.
    read_ahead: Option<ReadAhead>,
    /// How the rows family compacts (`open_with`; the default for a read-only store, which
    /// compacts nothing).
    rows_compaction: RowsCompaction,
    /// The rows family's options, for the table files `write_sorted` builds; none for a
    /// read-only store and for a database made before the rows family.
    rows_tables: Option<Options>,
    /// Where `write_sorted` builds its table files before RocksDB takes them in (`INGEST_DIR`).
    ingest_dir: std::path::PathBuf,
    /// Table files built so far by this handle (their names).
    ingested: std::sync::atomic::AtomicU64,
}

/// The directory, in the database's directory (which is also the server's data directory),
/// where `write_sorted` builds table files (`N.sst`). A file left there (a crash between
/// building it and RocksDB taking it in; the engine writes those rows again) is removed by the
/// next read-write open, which removes the directory too once empty and refuses to open if the
/// name is taken by anything but a directory: the name is reserved.
const INGEST_DIR: &str = "rows-ingest.tmp";

/// Removes what `write_sorted` may have left in `dir` (`INGEST_DIR`): its `N.sst` files, then
/// the directory if nothing else is in it. Anything else there is left alone.
fn clear_ingest_dir(dir: &Path) -> Result<(), StorageError> {
    let failed = |what: &str, error: std::io::Error| StorageError::Io(format!("{what} {}: {error}", dir.display()));
    match std::fs::symlink_metadata(dir) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(failed("reading", error)),
        Ok(metadata) if !metadata.is_dir() => {
            return Err(StorageError::Io(format!("{} is reserved for the table files the store builds, and is not a directory", dir.display())))
        }
        Ok(_) => {}
    }
    for entry in std::fs::read_dir(dir).map_err(|error| failed("reading", error))? {
        let entry = entry.map_err(|error| failed("reading", error))?;
        let name = entry.file_name();
        let ours = name.to_str().and_then(|name| name.strip_suffix(".sst")).is_some_and(|stem| stem.parse::<u64>().is_ok());
        if ours && entry.file_type().is_ok_and(|kind| kind.is_file()) {
            std::fs::remove_file(entry.path()).map_err(|error| failed("removing a file in", error))?;
        }
    }
    // Not empty: something else is there, and stays.
    let _ = std::fs::remove_dir(dir);
    Ok(())
}

/// The key ranges apart of a database with families `existing` (every one when `new`): the rows
/// family's if it has it (made since session 22), the journal's and the checkpoints' if it has
/// the journal's (made since session 23). Keys of the others stay in the default family.
fn layout(existing: &[String], new: bool) -> Vec<&'static Apart> {
    let has = |name: &str| new || existing.iter().any(|e| e == name);
    APART.into_iter().filter(|apart| if WITH_JOURNAL.contains(&apart.family) { has("journal") } else { has(apart.family) }).collect()
}

/// Each family of `apart` once, in key order of their first range.
fn family_names<'a>(apart: &'a [&'static Apart]) -> impl Iterator<Item = &'static str> + 'a {
    apart.iter().enumerate().filter(|(i, a)| !apart[..*i].iter().any(|b| b.family == a.family)).map(|(_, a)| a.family)
}

/// The options of family `name` (one of `apart`'s, else a family this build does not know:
/// RocksDB's defaults, as it was made), the rows family's compacted as `compaction` says.
fn options_of(apart: &[&'static Apart], name: &str, cache: &Cache, compaction: RowsCompaction) -> Options {
    let mut options = apart.iter().find(|a| a.family == name).map_or_else(Options::default, |a| (a.options)(cache));
    if name == ROWS.family {
        compacted(&mut options, compaction);
    }
    options
}

/// Whether files in `dir` can be written with direct I/O, or why not: an unnamed file
/// (`O_TMPFILE`: nothing is left behind by a crash, and no name can be taken or linked
/// elsewhere by someone else) opened there with `O_DIRECT`, and one aligned block written to
/// it. Some file systems refuse `O_DIRECT` (tmpfs before Linux 6.6), and RocksDB then refuses
/// to open a database asked for direct I/O ("Direct I/O is not supported by the specified
/// DB"); there, and wherever the probe fails for any reason (a file system without
/// `O_TMPFILE` too), the store writes through the page cache as before. A missing `dir` is made as RocksDB's open makes it (with its missing
/// parents, mode 0755), so that the probe runs where the database will be.
#[cfg(target_os = "linux")]
fn direct_writes_work(dir: &Path) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if !dir.is_dir() {
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(|error| format!("making {}: {error}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_TMPFILE | libc::O_DIRECT)
        .open(dir)
        .map_err(|error| format!("an unnamed O_DIRECT file in {}: {error}", dir.display()))?;
    // One block of zeros at a block's alignment: direct I/O takes only aligned buffers.
    #[repr(align(4096))]
    struct Block([u8; 4096]);
    file.write_all(&Box::new(Block([0; 4096])).0).map_err(|error| format!("a direct write in {}: {error}", dir.display()))
}

/// The mount point of the file system holding `dir` when it is mounted with online discard
/// (`discard` among its options in `/proc/self/mounts`). There every file deleted is trimmed at
/// once, and synced writes issued meanwhile wait: a compaction that deletes its hundreds of
/// megabytes of inputs holds the shards' journal writes for tens of milliseconds (on the test
/// machine, deleting a 400 MB file took 97-138 ms and held a concurrent 4 KiB `fdatasync` for up
/// to 34-99 ms; remounted without discard, 0.1 ms and 1.5 ms: ARCHITECTURE.md, "Measured",
/// session 47). Periodic trimming (`fstrim`) does the same work off the write path. btrfs's
/// `discard=async` (trims queued and paced) does not count. None where the mount table does not
/// say so, or cannot be read (not Linux).
#[cfg(unix)]
pub fn online_discard(dir: &Path) -> Option<std::path::PathBuf> {
    let mounts = std::fs::read("/proc/self/mounts").ok()?;
    let dir = std::fs::canonicalize(dir).ok()?;
    discard_mount_of(&mounts, &dir)
}

/// `online_discard` over a mount table's bytes (`/proc/self/mounts`: fields separated by one
/// space, device, mount point with space, tab, line break and backslash as octal escapes, type,
/// options, ...; a mount point need not be UTF-8): the mount point that holds `dir` (the
/// longest that is an ancestor of it; later lines mount over earlier ones at the same point) if
/// its options name `discard`. A parent mounted later over a deeper mount hides it, which this
/// does not see (rare; the mount ids of `/proc/self/mountinfo` would).
#[cfg(unix)]
fn discard_mount_of(mounts: &[u8], dir: &Path) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let unescape = |field: &[u8]| -> Vec<u8> {
        let mut out = Vec::with_capacity(field.len());
        let mut i = 0;
        while i < field.len() {
            let octal = field
                .get(i + 1..i + 4)
                .filter(|digits| digits.iter().all(|digit| (b'0'..=b'7').contains(digit)))
                .and_then(|digits| u8::try_from(digits.iter().fold(0u32, |value, digit| value * 8 + u32::from(digit - b'0'))).ok());
            match (field[i], octal) {
                (b'\\', Some(byte)) => {
                    out.push(byte);
                    i += 4;
                }
                (byte, _) => {
                    out.push(byte);
                    i += 1;
                }
            }
        }
        out
    };
    let mut holder: Option<(std::path::PathBuf, bool)> = None;
    for line in mounts.split(|&byte| byte == b'\n') {
        let mut fields = line.split(|&byte| byte == b' ');
        let (Some(_device), Some(point), Some(_kind), Some(options)) = (fields.next(), fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let point = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&unescape(point)));
        let deeper = holder.as_ref().is_none_or(|(held, _)| point.components().count() >= held.components().count());
        if point.is_absolute() && dir.starts_with(&point) && deeper {
            holder = Some((point, options.split(|&byte| byte == b',').any(|option| option == b"discard")));
        }
    }
    holder.and_then(|(point, discard)| discard.then_some(point))
}

/// Mount tables are read on Unix only.
#[cfg(not(unix))]
pub fn online_discard(_dir: &Path) -> Option<std::path::PathBuf> {
    None
}

/// Read-ahead past which `clearing serve` warns (`ReadAhead::too_far`), in KiB: the kernel's
/// default is 128; the test machine's image sets 8,192. Measured at 128 and 8,192 in the bench,
/// and at 1,024 only in the synced-write test below (`ReadAhead`): a judgment between those
/// points, to warn where the harm was clear.
pub const READ_AHEAD_KIB_WARN_ABOVE: u64 = 1024;

/// The block device that holds a directory and its read-ahead (`read_ahead_kb` in sysfs).
/// With a large read-ahead, reads of big files (a compaction's inputs) keep the disk busy in
/// windows that large, and a synced write issued meanwhile waits: on the test machine's virtual
/// disk, with 8,192 KiB, reading a 400 MB file held each concurrent 4 KiB `fdatasync` for 6-26
/// ms; with 1,024 KiB three took 5-6 ms; with 128 KiB none took over 2.4 ms, and the file was
/// read nearly as fast (209 against 190-195 ms). A file takes the value when it is opened, so a
/// change reaches a running server's open tables only at its restart. btrfs reads ahead by its
/// own setting (at least 4 MiB, `/sys/fs/btrfs/FSID/bdi/read_ahead_kb`), which this does not
/// read: its devices are anonymous (major 0). In the bench at 300,000 transfers/s the
/// batches' p99 during checkpoints fell from 21.0 to 13.3 ms (medians of eight alternated
/// rounds; ARCHITECTURE.md, "Measured", session 48).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadAhead {
    /// The disk's name in sysfs (`vda`; the disk, not its partition).
    pub disk: String,
    /// `read_ahead_kb`.
    pub kib: u64,
}

impl ReadAhead {
    /// Whether the kernel reads ahead far enough to hold the journal's synced writes
    /// (`READ_AHEAD_KIB_WARN_ABOVE`).
    pub fn too_far(&self) -> bool {
        self.kib > READ_AHEAD_KIB_WARN_ABOVE
    }
}

/// The read-ahead of the disk that holds `dir`, from sysfs (`/sys/dev/block/MAJOR:MINOR`).
/// None where the file system has no block device of its own (tmpfs, overlay, btrfs's
/// anonymous devices) or sysfs cannot be read.
#[cfg(target_os = "linux")]
pub fn read_ahead(dir: &Path) -> Option<ReadAhead> {
    use std::os::unix::fs::MetadataExt;
    let device = std::fs::metadata(dir).ok()?.dev();
    read_ahead_in(Path::new("/sys/dev/block"), libc::major(device), libc::minor(device))
}

/// `read_ahead` below a sysfs `dev/block` directory: `MAJOR:MINOR` names the device (a link to
/// its directory); a whole disk has `queue/read_ahead_kb`, a partition is a directory inside its
/// disk's, which has it.
#[cfg(target_os = "linux")]
fn read_ahead_in(dev_block: &Path, major: u32, minor: u32) -> Option<ReadAhead> {
    if major == 0 {
        return None;
    }
    let device = std::fs::canonicalize(dev_block.join(format!("{major}:{minor}"))).ok()?;
    let disk = if device.join("queue").is_dir() { device } else { device.parent()?.to_path_buf() };
    let kib = std::fs::read_to_string(disk.join("queue").join("read_ahead_kb")).ok()?.trim().parse().ok()?;
    Some(ReadAhead { disk: disk.file_name()?.to_string_lossy().into_owned(), kib })
}

/// Sysfs is read on Linux only.
#[cfg(not(target_os = "linux"))]
pub fn read_ahead(_dir: &Path) -> Option<ReadAhead> {
    None
}

/// Direct I/O is probed on Linux only.
#[cfg(not(target_os = "linux"))]
fn direct_writes_work(_dir: &Path) -> Result<(), String> {
    Err("direct I/O is used on Linux only".into())
}

fn io(error: rocksdb::Error) -> StorageError {
    match error.kind() {
        // A block or blob whose checksum fails: damage, which checkpoints' fallbacks take
        // (`engine::checkpoint::load_newest`, the history reader's damaged blobs).
        rocksdb::ErrorKind::Corruption => StorageError::Corrupt(error.into_string()),
        _ => StorageError::Io(error.into_string()),
    }
}

impl RocksStore {
    /// Opens (creating if missing) the database in `path` for reading and writing, the rows
    /// family compacted as by default (`RowsCompaction`).
    pub fn open(path: &Path) -> Result<RocksStore, StorageError> {
        Self::open_with(path, RowsCompaction::default())
    }

    /// Opens (creating if missing) the database in `path` for reading and writing, the rows
    /// family compacted as `compaction` says, whichever way it was compacted before.
    pub fn open_with(path: &Path, compaction: RowsCompaction) -> Result<RocksStore, StorageError> {
        let existing = if path.join("CURRENT").is_file() { DB::list_cf(&Options::default(), path).map_err(io)? } else { Vec::new() };
        // A new database gets every family; one made before keeps every key where it is.
        let apart = layout(&existing, existing.is_empty());
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let mut options = default_options(&cache);
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        // The rows family flushes seldom, and the log is kept until every family has flushed
        // what it holds: bound it, so that a start after a crash replays at most this much.
        options.set_max_total_wal_size(256 << 20);
        // Flushes and compactions write their table and blob files with direct I/O where the
        // file system takes it (`direct_writes_work`): copying those bytes into the page cache
        // was about an eighth of the process's CPU at 40 M transfers (the kernel's
        // `copy_folio_from_iter_atomic` under every flush and compaction thread's `write`), for
        // files read back seldom (point lookups past the engine's filter, compaction inputs).
        // Reads stay buffered (RocksDB applies this option to background writes only).
        let direct_writes = direct_writes_work(path).err();
        options.set_use_direct_io_for_flush_and_compaction(direct_writes.is_none());
        // One budget for the memtables of every family (64 MiB each, two each while one
        // flushes): past it the largest is flushed early.
        options.set_write_buffer_manager(&rocksdb::WriteBufferManager::new_write_buffer_manager(MEMTABLES_BYTES_MAX, false));
        // Each column family named and opened with its options: `DB::open_cf` by name would give
        // the default one RocksDB's defaults (no blob files, no bloom filters), which it silently
        // did for a while (journal values inline in tables, rewritten by every compaction; point
        // lookups without filters).
        let mut families = vec![ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, options.clone())];
        families.extend(family_names(&apart).map(|name| ColumnFamilyDescriptor::new(name, options_of(&apart, name, &cache, compaction))));
        let db = DB::open_cf_descriptors(&options, path, families).map_err(io)?;
        let rows_tables = apart.iter().any(|apart| apart.family == ROWS.family).then(|| options_of(&apart, ROWS.family, &cache, compaction));
        let ingest_dir = path.join(INGEST_DIR);
        clear_ingest_dir(&ingest_dir)?;
        Ok(RocksStore {
            db,
            apart,
            read_only: false,
            poisoned: AtomicBool::new(false),
            direct_writes,
            online_discard: online_discard(path),
            read_ahead: read_ahead(path),
            rows_compaction: compaction,
            rows_tables,
            ingest_dir,
            ingested: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Whether flushes and compactions write with direct I/O (`direct_writes_work` said the
    /// database's directory takes it when it was opened).
    pub fn direct_writes(&self) -> bool {
        self.direct_writes.is_none()
    }

    /// The mount point of the database's file system if it is mounted with online discard
    /// (`online_discard`): its deletions hold the journal's synced writes; `fstrim` run from
    /// time to time, with the file system mounted without `discard`, does not.
    pub fn online_discard(&self) -> Option<&Path> {
        self.online_discard.as_deref()
    }

    /// The disk under the database and its read-ahead (`read_ahead`), if it could be told.
    pub fn read_ahead(&self) -> Option<&ReadAhead> {
        self.read_ahead.as_ref()
    }

    /// Why flushes and compactions write through the page cache (`direct_writes_work`'s
    /// failure), if they do.
    pub fn direct_writes_refused(&self) -> Option<&str> {
        self.direct_writes.as_deref()
    }

    /// How the rows family compacts (`open_with`); none for a database made before the rows
    /// family (session 22), whose rows live in the default family, which the setting does not
    /// touch.
    pub fn rows_compaction(&self) -> Option<RowsCompaction> {
        self.apart.iter().any(|apart| apart.family == ROWS.family).then_some(self.rows_compaction)
    }

    /// Writes what every family's memtable holds into a table file now (waiting for it), as
    /// RocksDB does by itself when a memtable fills: for tools and tests that need a database's
    /// tables in a given shape.
    pub fn flush(&self) -> Result<(), StorageError> {
        if self.read_only {
            return Err(StorageError::ReadOnly);
        }
        self.families().try_for_each(|name| self.db.flush_cf(self.handle(name)).map_err(io))
    }

    /// Every column family's name, the default one first.
    fn families(&self) -> impl Iterator<Item = &'static str> + '_ {
        std::iter::once(rocksdb::DEFAULT_COLUMN_FAMILY_NAME).chain(family_names(&self.apart))
    }

    /// Waits until no flush or compaction is queued or running (RocksDB's `WaitForCompact`): for
    /// tests and tools that read the shape compactions leave.
    pub fn wait_for_compactions(&self) -> Result<(), StorageError> {
        self.db.wait_for_compact(&rocksdb::WaitForCompactOptions::default()).map_err(io)
    }

    /// Opens an existing database read-only (for offline checks beside a running server).
    pub fn open_read_only(path: &Path) -> Result<RocksStore, StorageError> {
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let mut options = Options::default();
        with_point_lookup_filters(&mut options, point_lookup_table(&cache));
        Self::open_families_read_only(&options, &cache, path)
    }

    /// Opens every column family of the database in `path` read-only.
    fn open_families_read_only(options: &Options, cache: &Cache, path: &Path) -> Result<RocksStore, StorageError> {
        let existing = DB::list_cf(options, path).map_err(io)?;
        let apart = layout(&existing, false);
        // Each family with its own options (its bloom filters, for the rows' point lookups).
        let families = existing.iter().map(|name| {
            let options =
                if name == rocksdb::DEFAULT_COLUMN_FAMILY_NAME { options.clone() } else { options_of(&apart, name, cache, RowsCompaction::default()) };
            ColumnFamilyDescriptor::new(name, options)
        });
        let db = DB::open_cf_descriptors_read_only(options, path, families, false).map_err(io)?;
        Ok(RocksStore {
            db,
            apart,
            read_only: true,
            poisoned: AtomicBool::new(false),
            direct_writes: Some("opened read-only".into()),
            online_discard: None,
            read_ahead: None,
            rows_compaction: RowsCompaction::default(),
            rows_tables: None,
            ingest_dir: path.join(INGEST_DIR),
            ingested: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Opens a copy (a checkpoint, a backup, a restored directory) read-only without writing
    /// anything into its directory: RocksDB's info log, which a plain open creates (and rotates)
    /// there, goes nowhere, so the files a manifest lists stay exactly as they were.
    pub fn open_copy(path: &Path) -> Result<RocksStore, StorageError> {
        if !path.join("CURRENT").is_file() {
            return Err(StorageError::Io(format!("{} holds no database (no CURRENT file)", path.display())));
        }
        // The same blob settings as the server's database, so that values kept in blob files read back.
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let mut options = large_values_options(&cache);
        options.set_info_logger(rocksdb::InfoLogger::new_callback_logger(rocksdb::LogLevel::Fatal, |_, _| {}));
        Self::open_families_read_only(&options, &cache, path)
    }

    /// Writes a RocksDB checkpoint of the whole database into `target`, which must not exist:
    /// every key of every column family (all shards' journals, checkpoints and every record: they
    /// share this one database) as of one sequence number, memtables flushed first; table and blob
    /// files are hard links when `target` is on the same file system (copies otherwise), the
    /// write-ahead log is copied. Writers go on meanwhile.
    pub fn checkpoint(&self, target: &Path) -> Result<(), StorageError> {
        let checkpoint = rocksdb::checkpoint::Checkpoint::new(&self.db).map_err(io)?;
        checkpoint.create_checkpoint(target).map_err(io)
    }
}

/// A store dropped in order (its last handle: the end of a command) flushes for its close
/// (`flush_for_close`). Nothing depends on it: a skipped or failed flush, a poisoned store or a
/// crash leave the logs, which the next open replays as before.
impl Drop for RocksStore {
    fn drop(&mut self) {
        let _ = self.flush_for_close();
    }
}

/// RocksDB's `level0_slowdown_writes_trigger` (its default, which every family but the rows
/// keeps): a flush that would bring a family's level-0 files (for universal compaction, its
/// sorted runs: level-0 files and every non-empty level) to it waits for compactions first.
const LEVEL0_SLOWDOWN_WRITES_TRIGGER: u64 = 20;

/// The rows family's own `level0_slowdown_writes_trigger` (`rows_options`): under universal
/// compaction, sorted runs. At 40 (sessions 25-36), 100 M transfers' worst batch was 2.3-3.8 s,
/// writes delayed while a whole merge ran; at 64, in four alternated pairs, 0.8-1.0 s against
/// 2.3-3.8 s, throughput 470 / 413 / 494 / 443 k against 434 / 442 / 476 / 421 k, the cold
/// probes no slower (ARCHITECTURE.md, "Measured", session 37). It also sets where RocksDB
/// starts a second compaction for the family (`max_background_jobs`).
const ROWS_LEVEL0_SLOWDOWN_WRITES_TRIGGER: u64 = 64;
/// The rows family's `level0_stop_writes_trigger`: half again its slowdown trigger.
const ROWS_LEVEL0_STOP_WRITES_TRIGGER: i32 = 96;

/// How many sorted runs the rows family gathers before universal compaction merges
/// (`compacted`). Each checkpoint brings one run of random keys (its table file,
/// `write_sorted`), so this and `ROWS_UNIVERSAL_MIN_MERGE_WIDTH` set how often a row is
/// rewritten: at 100 M transfers, 16 and 8 against session 30's 8 and 4 gave 494 / 468 / 483 k
/// transfers/s against 435 / 406 / 455 k (alternated pairs), 6-16 % less user CPU, the same
/// peak memory, a worst batch that varies more (0.7-3.5 s against 0.8-1.2 s); 24 and 12 gained
/// nothing clear (456 / 457 k against 467 / 404 k) with worst batches no better
/// (ARCHITECTURE.md, "Measured", session 36). Below the rows' slowdown trigger (64), with room
/// for the runs that pile up while one whole merge runs.
const ROWS_UNIVERSAL_RUNS_TRIGGER: i32 = 16;
/// The fewest sorted runs one universal merge of the rows family takes (`compacted`).
const ROWS_UNIVERSAL_MIN_MERGE_WIDTH: i32 = 8;

/// Levels past 0 (RocksDB's default `num_levels` 7, which no family changes).
const LEVELS_PAST_ZERO: u64 = 6;

/// Pending compaction bytes past which `flush_for_close` does not flush: half RocksDB's soft
/// limit (64 GiB), where writes, flushes among them, would be slowed.
const PENDING_COMPACTION_BYTES_MAX: u64 = 32 << 30;

impl RocksStore {
    /// Writes the memtables into tables before a close in order, so that the next open has no
    /// write-ahead log to replay: after 100 M transfers the logs a close left held about 200
    /// MB, and replaying them took 0.85 s of the next start (2.15 s in all with a cold page
    /// cache, 1.00 s after a flush: ARCHITECTURE.md, "Measured", session 30). Only when the
    /// flush cannot wait on compactions: RocksDB makes a flush wait (without a timeout) while
    /// it would stall writes, which a whole merge of the rows could make last minutes, and
    /// forever while a background error (a full disk) stands. So it is skipped, and says why,
    /// on a read-only or poisoned store, with a background error, with writes stopped or
    /// delayed, when a family's level-0 files and levels could reach the slowdown trigger, or
    /// with compactions far behind. `Ok(())` when it flushed.
    pub fn flush_for_close(&self) -> Result<(), StorageError> {
        if self.read_only {
            return Err(StorageError::ReadOnly);
        }
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(StorageError::Io("poisoned by a failed write".into()));
        }
        let int = |family: &ColumnFamily, property: &str| self.db.property_int_value_cf(family, property).ok().flatten().unwrap_or(0);
        let default = self.handle(rocksdb::DEFAULT_COLUMN_FAMILY_NAME);
        for (property, what) in [
            ("rocksdb.background-errors", "RocksDB reports background errors"),
            ("rocksdb.is-write-stopped", "writes are stopped"),
            ("rocksdb.actual-delayed-write-rate", "writes are delayed"),
        ] {
            if int(default, property) > 0 {
                return Err(StorageError::Io(format!("not flushed at close: {what}")));
            }
        }
        for name in self.families() {
            let family = self.handle(name);
            let level0 = int(family, "rocksdb.num-files-at-level0");
            let trigger = if name == ROWS.family { ROWS_LEVEL0_SLOWDOWN_WRITES_TRIGGER } else { LEVEL0_SLOWDOWN_WRITES_TRIGGER };
            if level0 + LEVELS_PAST_ZERO + 1 >= trigger {
                return Err(StorageError::Io(format!("not flushed at close: {name} has {level0} files at level 0")));
            }
            if int(family, "rocksdb.estimate-pending-compaction-bytes") >= PENDING_COMPACTION_BYTES_MAX {
                return Err(StorageError::Io(format!("not flushed at close: {name}'s compactions are far behind")));
            }
        }
        self.flush()
    }
}

impl RocksStore {
    /// What RocksDB holds in memory and on disk, per column family: memtables, table readers
    /// (index and filter blocks outside the block cache), files at level 0, live table and blob
    /// bytes; then the database's one block cache and what is pinned in it. For benchmarks and
    /// operators reading where a process's memory goes.
    pub fn memory_report(&self) -> String {
        let names = self.families();
        let mb = |bytes: u64| bytes as f64 / (1 << 20) as f64;
        let int = |family, property: &str| self.db.property_int_value_cf(family, property).ok().flatten().unwrap_or(0);
        let mut report = names
            .filter_map(|name| {
                let family = self.db.cf_handle(name)?;
                let level0 = self.db.property_value_cf(family, rocksdb::properties::num_files_at_level(0)).ok().flatten().unwrap_or_default();
                Some(format!(
                    "{name}: memtables {:.1} MB, table readers {:.1} MB, level-0 files {level0}, tables {:.1} MB, blobs {:.1} MB",
                    mb(int(family, "rocksdb.cur-size-all-mem-tables")),
                    mb(int(family, "rocksdb.estimate-table-readers-mem")),
                    mb(int(family, "rocksdb.live-sst-files-size")),
                    mb(int(family, "rocksdb.live-blob-file-size")),
                ))
            })
            .collect::<Vec<_>>()
            .join("; ");
        // One cache for all families: any family's figures are the whole cache's.
        if let Some(family) = self.db.cf_handle(rocksdb::DEFAULT_COLUMN_FAMILY_NAME) {
            report.push_str(&format!(
                "; block cache (all families) {:.1} MB, pinned {:.1} MB",
                mb(int(family, "rocksdb.block-cache-usage")),
                mb(int(family, "rocksdb.block-cache-pinned-usage"))
            ));
        }
        report
    }

    /// RocksDB's own statistics text (`rocksdb.stats`: per level and per family, flushes,
    /// compactions, blob files, stalls), each family's after the default's.
    pub fn statistics(&self) -> String {
        let mut text = self.db.property_value(rocksdb::properties::STATS).ok().flatten().unwrap_or_default();
        for name in family_names(&self.apart) {
            text.push_str(&self.db.property_value_cf(self.handle(name), rocksdb::properties::STATS).ok().flatten().unwrap_or_default());
        }
        text
    }
}

/// The default family's options: every record but those of the families apart (and in a
/// database made before them, those too: the journal, the checkpoints).
fn default_options(cache: &Cache) -> Options {
    let mut options = large_values_options(cache);
    options.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // One flush and up to two compactions at a time. RocksDB runs the second only under
    // pressure (writes delayed, or a family past its speed-up point: for the rows, 28 sorted
    // runs with their triggers, 16 + (64 - 16) / 4), which is when it is wanted: while one
    // merge of the rows runs long (a whole merge at 100 M rows takes about 20 s), the other
    // merges the small runs that checkpoints keep adding (`write_sorted`), which would
    // otherwise pile up to the rows' slowdown trigger.
    options.set_max_background_jobs(3);
    // A blob file is freed only once every value in it is dead: compactions relocate the live
    // values of the oldest quarter of blob files, which then go. (In a database made before the
    // journal's family, its pruned checkpoint parts share files with journal batches.)
    options.set_enable_blob_gc(true);
    options.set_blob_gc_age_cutoff(0.25);
    options
}

/// The journal family's options: blob files, never collected (see `JOURNAL`).
fn journal_options(cache: &Cache) -> Options {
    let mut options = large_values_options(cache);
    options.set_compression_type(rocksdb::DBCompressionType::Lz4);
    options
}

/// The checkpoints family's options: blob files collected as checkpoints are pruned. Its files
/// hold mostly parts, dead within two checkpoints: relocating the live ones of the oldest
/// quarter is cheap.
fn checkpoints_options(cache: &Cache) -> Options {
    let mut options = large_values_options(cache);
    options.set_compression_type(rocksdb::DBCompressionType::Lz4);
    options.set_enable_blob_gc(true);
    options.set_blob_gc_age_cutoff(0.25);
    options
}

/// The history family's options: blob files collected only in the oldest twentieth. RocksDB
/// relocates every live value of a file in the age window whenever a compaction meets it, dead
/// or not; with the quarter (and the parts beside them) it rewrote the history about four times
/// over in 100 M transfers (44 GB written for 10 GB). A blob replaced later (old history changed)
/// keeps its space until its file reaches the window.
fn history_options(cache: &Cache) -> Options {
    let mut options = checkpoints_options(cache);
    options.set_blob_gc_age_cutoff(HISTORY_GC_AGE_CUTOFF);
    options
}

/// The oldest fraction of the history family's blob files whose live values compactions move.
const HISTORY_GC_AGE_CUTOFF: f64 = 0.05;

/// Values of 4 KiB or more (journal batches, checkpoint parts and blobs) go to blob files, so
/// compaction moves only keys and pointers instead of rewriting them again and again, with the
/// point-lookup filters.
fn large_values_options(cache: &Cache) -> Options {
    let mut options = Options::default();
    options.set_write_buffer_size(64 << 20);
    options.set_enable_blob_files(true);
    options.set_min_blob_size(4096);
    // Blob values are not compressed: LZ4 on every journal batch and checkpoint piece, at flush
    // and again when blob garbage collection moves them, cost about a sixth of the process's CPU
    // for a quarter less disk (10 M transfers with a checkpoint every 200 batches: 96 -> 80 s of
    // CPU, 1.7 -> 2.2 GB; ARCHITECTURE.md "Measured"). Blob files written compressed before stay
    // readable: each file records its own compression.
    options.set_blob_compression_type(rocksdb::DBCompressionType::None);
    with_point_lookup_filters(&mut options, point_lookup_table(cache));
    options
}

/// How the rows family (`ROWS`) compacts. Either opens a family written under the other as it
/// is, with nothing to migrate: both keep RocksDB's 7 levels, each level past 0 is one sorted
/// run of files apart in key order under both, and leveled compaction (with dynamic level sizes,
/// RocksDB's default) takes the first level holding files as its base and drains the levels
/// above what it needs by itself. RocksDB's own `OptionChangeMigration` does nothing for leveled
/// to universal at the same number of levels; for the way back it compacts everything into the
/// last level first, which only spares those drains. Tested both ways (`tests/conformance.rs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RowsCompaction {
    /// Sorted runs of about the same size merged together (RocksDB's "universal" style): a row
    /// is rewritten about once each time the family doubles, not at every merge into its
    /// level. At 100 M transfers:
    /// 14.0 GB written by this family's compactions against 24.0 GB, 126 s of their CPU
    /// against 209 s, 9 % more throughput, no slower cold probes (ARCHITECTURE.md, "Measured",
    /// sessions 29-30).
    #[default]
    Universal,
    /// RocksDB's default leveled compaction, as every database was run before session 30: the
    /// way back if universal compaction misbehaves somewhere.
    Leveled,
}

impl RowsCompaction {
    /// The name the configuration and the command line use.
    pub fn name(self) -> &'static str {
        match self {
            RowsCompaction::Universal => "universal",
            RowsCompaction::Leveled => "leveled",
        }
    }
}

impl std::str::FromStr for RowsCompaction {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "universal" => Ok(RowsCompaction::Universal),
            "leveled" => Ok(RowsCompaction::Leveled),
            other => Err(format!("rows compaction must be \"universal\" or \"leveled\", not {other:?}")),
        }
    }
}

/// The options of the rows family (`ROWS`) compacted as `compaction` says: small values in the
/// tables (no blob files), no compression, the same bloom filters. Leveled compaction gathers
/// eight flushes before merging them into the level below (each merge of random keys rewrites
/// all of that level, so half as many halves that cost); universal compaction merges sorted
/// runs once `ROWS_UNIVERSAL_RUNS_TRIGGER` (16) of them are there, at least
/// `ROWS_UNIVERSAL_MIN_MERGE_WIDTH` (8) at a time, newest first, taking in the next older run
/// while it is no larger than those taken together: so a row is rewritten about once each time
/// the family grows eightfold, and the whole family (the oldest run too) about then
/// (`compacted`). The size-amplification rule (`max_size_amplification_percent`) is set high
/// (1000) so that it seldom forces a whole merge on its own: rows are never overwritten or
/// deleted, so merging into the oldest run collects no garbage. A whole merge needs free disk
/// about the family's size while it runs.
fn rows_options(cache: &Cache) -> Options {
    let mut options = Options::default();
    options.set_write_buffer_size(64 << 20);
    options.set_compression_type(rocksdb::DBCompressionType::None);
    options.set_level_zero_file_num_compaction_trigger(8);
    // The rows come as a table file a checkpoint (`write_sorted`), a few megabytes each, many
    // more sorted runs than memtable flushes made; while a compaction merges a large run they
    // pile up, and at RocksDB's default triggers (20, 36) they slowed every write of the
    // database, the shards' journal batches among them (21 delays at 10 M transfers with one
    // compaction slot, the worst batch 1.3-1.8 s; see also `max_background_jobs`); at 40 and
    // 64 still a few times at 100 M (`ROWS_LEVEL0_SLOWDOWN_WRITES_TRIGGER`). A probe past
    // the engine's filter reads one more filter piece per run; writes to this family come from
    // checkpoints only.
    options.set_level_zero_slowdown_writes_trigger(ROWS_LEVEL0_SLOWDOWN_WRITES_TRIGGER as i32);
    options.set_level_zero_stop_writes_trigger(ROWS_LEVEL0_STOP_WRITES_TRIGGER);
    // Filters in every level, the last too: the engine's own filter of cold keys comes first,
    // and its false positives (about 1 % a segment) are answered here without reading a data
    // block. `optimize_filters_for_hits` spared 100 MB of memory at 100 M rows but cost 15 % of
    // the throughput, each such key then a block read. With them, universal compaction's
    // more sorted runs cost no probe time (session 29; in session 24, before the engine's
    // filter took nearly every miss, they made probes slower).
    // Those filters (10 bits a row) and the index grow with every row ever written: 141 MB at
    // 100 M rows, 1.4 GB at a billion, when table readers hold them. So they are partitioned
    // (4 KiB pieces under a small top-level index, which stays pinned) and held in the
    // database's one block cache (`BLOCK_CACHE_BYTES`) with the data blocks, in its
    // high-priority half: memory stays bounded whatever the history, and a probe past the
    // engine's filter reads the piece it needs (from the page cache, as a data block would be)
    // when it is not cached.
    let mut table = point_lookup_table(cache);
    table.set_partition_filters(true);
    table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
    table.set_metadata_block_size(4096);
    table.set_cache_index_and_filter_blocks(true);
    table.set_cache_index_and_filter_blocks_with_high_priority(true);
    table.set_pin_top_level_index_and_filter(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    with_point_lookup_filters(&mut options, table);
    options
}

/// `options` (the rows family's) set to compact as `compaction` says (`rows_options`).
fn compacted(options: &mut Options, compaction: RowsCompaction) {
    match compaction {
        RowsCompaction::Universal => {
            options.set_compaction_style(rocksdb::DBCompactionStyle::Universal);
            let mut universal = rocksdb::UniversalCompactOptions::default();
            universal.set_max_size_amplification_percent(1000);
            universal.set_min_merge_width(ROWS_UNIVERSAL_MIN_MERGE_WIDTH);
            options.set_universal_compaction_options(&universal);
            options.set_level_zero_file_num_compaction_trigger(ROWS_UNIVERSAL_RUNS_TRIGGER);
            // RocksDB turns on periodic compaction for universal compaction (30 days, by `ttl`
            // and `periodic_compaction_seconds`, whichever is smaller and not 0): a rewrite of
            // the whole family, every row ever taken, once its oldest file is that old; at the
            // first start on a database a year old, then every month, idle or not, holding a
            // compaction slot (`max_background_jobs`) for as long.
            // Rows never change or expire: nothing would be gained.
            options.set_periodic_compaction_seconds(0);
            options.set_ttl(0);
        }
        RowsCompaction::Leveled => options.set_compaction_style(rocksdb::DBCompactionStyle::Level),
    }
}

/// Bloom filters for point lookups: cold idempotency records (`h/i/` + key) are probed for every
/// new order number, and nearly every probe is a miss. A whole-key filter of 10 bits per key
/// (about 1 % false positives) in every table file (`table`, from `point_lookup_table`), and one
/// in the memtable, answer most misses without reading a data block. Iterators (journal scans)
/// do not use them. Filters are written into new table files only; older files get them as
/// compaction rewrites them.
fn with_point_lookup_filters(options: &mut Options, table: BlockBasedOptions) {
    options.set_block_based_table_factory(&table);
    options.set_memtable_whole_key_filtering(true);
    options.set_memtable_prefix_bloom_ratio(0.02);
}

/// Table options with whole-key bloom filters of 10 bits a key, held by the table readers (the
/// rows family changes that: `rows_options`), and data blocks read through the database's `cache`.
fn point_lookup_table(cache: &Cache) -> BlockBasedOptions {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_bloom_filter(10.0, false);
    table.set_whole_key_filtering(true);
    table.set_cache_index_and_filter_blocks(false);
    table
}

impl RocksStore {
    /// The keys from `start` to `end` (excluded) as ranges of one column family each, in key
    /// order: around and between the families apart, the default family's. (The engine's ranges
    /// lie within one prefix, so nearly always one range; the `Store` contract allows any.)
    fn ranges<'k>(&self, start: &'k [u8], end: &'k [u8]) -> Vec<(&ColumnFamily, &'k [u8], &'k [u8])> {
        let default = self.handle(rocksdb::DEFAULT_COLUMN_FAMILY_NAME);
        let mut pieces = Vec::with_capacity(1);
        let mut from = start;
        for apart in &self.apart {
            pieces.push((default, from, end.min(apart.start)));
            pieces.push((self.handle(apart.family), from.clamp(apart.start, apart.end), end.clamp(apart.start, apart.end)));
            from = from.max(apart.end);
        }
        pieces.push((default, from, end));
        pieces.retain(|(_, from, to)| from < to);
        pieces
    }

    /// The column family `key` lives in.
    fn family(&self, key: &[u8]) -> &ColumnFamily {
        let apart = self.apart.iter().find(|apart| key >= apart.start && key < apart.end);
        self.handle(apart.map_or(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, |apart| apart.family))
    }

    fn handle(&self, name: &str) -> &ColumnFamily {
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
        self.write_and_delete(puts, &[])
    }

    /// Rows of the rows family, strictly ascending: one table file built in the database's
    /// directory (`INGEST_DIR`; `SstFileWriter` syncs it) and taken in whole by RocksDB
    /// (`IngestExternalFile`: the file moves in by a link, which it syncs with the directory,
    /// and two synced manifest records). Nothing goes through the write-ahead log or the
    /// memtable: inserting a checkpoint's cold rows one by one into the memtable's skip list was
    /// about a tenth of the process's CPU at 10 M transfers, the same rows were then written
    /// again by the flush, and the shards' journal writes queued behind that synced batch. They
    /// still wait while RocksDB takes a file in (it holds writes from assigning the file's
    /// sequence number to the manifest's sync), a shorter wait. The file's sequence number is
    /// above every write before it, so its rows read as if written with `write` now (a later
    /// write of the same key wins, as it would). Rows the memtable holds (written with `write`)
    /// are flushed first, here: RocksDB would otherwise flush them inside the ingestion, with
    /// every write of the database held. Anything else goes to `write`.
    fn write_sorted(&self, puts: &[(&[u8], &[u8])]) -> Result<(), StorageError> {
        let Some(tables) = &self.rows_tables else { return storage::write_in_chunks(self, puts) };
        let in_rows = puts.iter().all(|(key, _)| *key >= ROWS.start && *key < ROWS.end);
        let ascending = puts.windows(2).all(|pair| pair[0].0 < pair[1].0);
        if puts.is_empty() || !in_rows || !ascending {
            return storage::write_in_chunks(self, puts);
        }
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(StorageError::Poisoned);
        }
        let rows = self.handle(ROWS.family);
        let entries = |property: &str| self.db.property_int_value_cf(rows, property).ok().flatten().unwrap_or(0);
        if entries("rocksdb.num-entries-active-mem-table") + entries("rocksdb.num-entries-imm-mem-tables") > 0 {
            self.db.flush_cf(rows).map_err(io)?;
        }
        let file = self.ingest_dir.join(format!("{}.sst", self.ingested.fetch_add(1, Ordering::SeqCst)));
        let ingest = || -> Result<(), rocksdb::Error> {
            let mut writer = rocksdb::SstFileWriter::create(tables);
            writer.open(&file)?;
            for (key, value) in puts {
                writer.put(key, value)?;
            }
            writer.finish()?;
            let mut options = rocksdb::IngestExternalFileOptions::default();
            options.set_move_files(true);
            self.db.ingest_external_file_cf_opts(rows, &options, vec![&file])
        };
        let result = std::fs::create_dir_all(&self.ingest_dir)
            .map_err(|error| format!("making {}: {error}", self.ingest_dir.display()))
            .and_then(|()| ingest().map_err(rocksdb::Error::into_string));
        // Taken in, the file is linked into the database (RocksDB removes this name itself).
        // Not taken in, it goes too.
        let _ = std::fs::remove_file(&file);
        result.map_err(|error| {
            // As for `write`: a failure leaves what reached the disk unknown.
            self.poisoned.store(true, Ordering::SeqCst);
            StorageError::Io(error)
        })
    }

    fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<(), StorageError> {
        self.delete_ranges(&[(start, end)])
    }

    /// The puts, then the ranges' tombstones, in one synced batch.
    fn write_and_delete(&self, puts: &[(&[u8], &[u8])], ranges: &[(&[u8], &[u8])]) -> Result<(), StorageError> {
        // Sized up front (each record: a type byte, a family id and two lengths, at most 16
        // bytes beside its key and value; the batch's 12-byte header): a shard's journal batch
        // is megabytes, which a growing batch copied several times over.
        let bytes: usize = puts.iter().map(|(key, value)| key.len() + value.len() + 16).sum();
        let mut batch = WriteBatch::with_capacity_bytes(bytes + 12);
        for (key, value) in puts {
            batch.put_cf(self.family(key), key, value);
        }
        for (start, end) in ranges {
            for (family, from, to) in self.ranges(start, end) {
                batch.delete_range_cf(family, from, to);
            }
        }
        self.write_batch(batch)
    }

    /// One batch of range tombstones, one synced write for them all (none for no range): cheap
    /// to write whatever the ranges hold; compaction drops the data.
    fn delete_ranges(&self, ranges: &[(&[u8], &[u8])]) -> Result<(), StorageError> {
        if ranges.is_empty() {
            return Ok(());
        }
        self.write_and_delete(&[], ranges)
    }

    /// Compacts the range in each family it spans: the deleted keys' tombstones and data leave
    /// the tables, and blob files no table names any more are deleted (the journal's family never
    /// collects blob garbage, so an archived journal's files go only this way).
    fn reclaim(&self, start: &[u8], end: &[u8]) -> Result<(), StorageError> {
        if self.read_only {
            return Err(StorageError::ReadOnly);
        }
        for (family, from, to) in self.ranges(start, end) {
            self.db.compact_range_cf(family, Some(from), Some(to));
        }
        Ok(())
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
        // Seek to the last key at or before `end`, step back over `end` itself: no value is
        // copied out (RocksDB still loads a blob file's value for each entry the iterator lands
        // on, one or two). The ranges from the last.
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

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::path::PathBuf;

    #[test]
    fn online_discard_is_read_from_the_mount_that_holds_the_directory() {
        let mounts = "/dev/vda / ext4 rw,relatime,discard,resv_strict 0 0\n\
                      proc /proc proc rw,nosuid 0 0\n\
                      /dev/vdb /data xfs rw,noatime 0 0\n\
                      /dev/vdc /srv ext4 rw,nodiscard 0 0\n\
                      /dev/vdd /mnt/my\\040disk ext4 rw,discard 0 0\n\
                      /dev/vde /over ext4 rw,discard 0 0\n\
                      /dev/vdf /over ext4 rw 0 0\n\
                      /dev/vdg /btr btrfs rw,ssd,discard=async 0 0\n\
                      /dev/vdh /non\\377utf8 ext4 rw,discard 0 0\n\
                      /dev/vdi /nbsp\u{a0}x ext4 rw,discard 0 0\n\
                      garbage\n";
        let held = |dir: &str| discard_mount_of(mounts.as_bytes(), Path::new(dir));
        assert_eq!(held("/var/tmp/db"), Some(PathBuf::from("/")));
        // A deeper mount decides, discard or not; a name that only starts alike is not one.
        assert_eq!(held("/data/db"), None);
        assert_eq!(held("/database/db"), Some(PathBuf::from("/")));
        assert_eq!(held("/srv/db"), None, "nodiscard is not discard");
        assert_eq!(held("/mnt/my disk/db"), Some(PathBuf::from("/mnt/my disk")));
        assert_eq!(held("/over/db"), None, "the later mount at a point hides the earlier one");
        assert_eq!(held("/btr/db"), None, "btrfs's queued, paced trims are not in the write path");
        // Not UTF-8, and a space that is not a field separator: read as the kernel wrote them.
        let odd = std::ffi::OsStr::from_bytes(b"/non\xffutf8/db");
        assert_eq!(discard_mount_of(mounts.as_bytes(), Path::new(odd)), Some(PathBuf::from(std::ffi::OsStr::from_bytes(b"/non\xffutf8"))));
        assert_eq!(held("/nbsp\u{a0}x/db"), Some(PathBuf::from("/nbsp\u{a0}x")));
        assert_eq!(discard_mount_of(b"", Path::new("/var/tmp")), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn read_ahead_is_the_disks_for_a_disk_and_for_its_partition() {
        // A sysfs as the kernel lays it out: `dev/block/MAJOR:MINOR` links to the device's
        // directory, a partition's inside its disk's; only the disk has `queue`.
        let sys = tempfile::tempdir().unwrap();
        let disk = sys.path().join("devices/virtio1/block/vda");
        std::fs::create_dir_all(disk.join("queue")).unwrap();
        std::fs::create_dir_all(disk.join("vda1")).unwrap();
        std::fs::write(disk.join("queue/read_ahead_kb"), "8192\n").unwrap();
        let nvme = sys.path().join("devices/nvme/block/nvme0n1");
        std::fs::create_dir_all(nvme.join("queue")).unwrap();
        std::fs::write(nvme.join("queue/read_ahead_kb"), "128\n").unwrap();
        std::fs::create_dir_all(nvme.join("nvme0n1p1")).unwrap();
        let orphan = sys.path().join("devices/odd/block/vdy/vdy1");
        std::fs::create_dir_all(&orphan).unwrap();
        let broken = sys.path().join("devices/odd/block/vdz");
        std::fs::create_dir_all(broken.join("queue")).unwrap();
        std::fs::write(broken.join("queue/read_ahead_kb"), "lots\n").unwrap();
        let dev_block = sys.path().join("dev/block");
        std::fs::create_dir_all(&dev_block).unwrap();
        std::os::unix::fs::symlink(&disk, dev_block.join("253:0")).unwrap();
        std::os::unix::fs::symlink(disk.join("vda1"), dev_block.join("253:1")).unwrap();
        std::os::unix::fs::symlink(&nvme, dev_block.join("259:0")).unwrap();
        std::os::unix::fs::symlink(&broken, dev_block.join("253:9")).unwrap();
        std::os::unix::fs::symlink(nvme.join("nvme0n1p1"), dev_block.join("259:1")).unwrap();
        std::os::unix::fs::symlink(&orphan, dev_block.join("253:17")).unwrap();
        std::os::unix::fs::symlink(dev_block.join("7:7"), dev_block.join("7:7")).unwrap();
        let vda = Some(ReadAhead { disk: "vda".into(), kib: 8192 });
        assert_eq!(read_ahead_in(&dev_block, 253, 0), vda);
        assert_eq!(read_ahead_in(&dev_block, 253, 1), vda, "a partition reads ahead as its disk");
        assert!(vda.as_ref().is_some_and(ReadAhead::too_far));
        let nvme = read_ahead_in(&dev_block, 259, 0);
        assert_eq!(nvme, Some(ReadAhead { disk: "nvme0n1".into(), kib: 128 }));
        assert!(!nvme.as_ref().is_some_and(ReadAhead::too_far), "the kernel's default is not too far");
        assert_eq!(read_ahead_in(&dev_block, 259, 1), nvme, "an NVMe partition reads ahead as its namespace");
        assert_eq!(read_ahead_in(&dev_block, 253, 9), None, "a value that is not a number");
        assert_eq!(read_ahead_in(&dev_block, 253, 17), None, "a partition whose disk has no queue");
        assert_eq!(read_ahead_in(&dev_block, 7, 7), None, "a link to itself");
        assert_eq!(read_ahead_in(&dev_block, 8, 0), None, "no such device");
        assert_eq!(read_ahead_in(&dev_block, 0, 42), None, "no block device of its own (tmpfs, overlay)");
        // This machine's own answer for a temporary directory, whatever it is, does not panic.
        let _ = read_ahead(sys.path());
    }
}
