//! Containers that grow without long stalls. A `Vec` or `HashMap` of millions of entries doubles
//! by copying (or rehashing) all of them at once, which stalls the shard's batch for hundreds of
//! milliseconds; these grow in small pieces instead.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ledger::state::FastMap;

/// The shared pointer of a piece in memory (`Piece::Hot`): a snapshot shares it, and the live
/// state copies it before its first change after one (`tagged_mut`). Without weak references,
/// so that the uniqueness check before every change (several for each order applied) is a load;
/// std's `Arc::get_mut` is a compare-and-swap, a locked instruction that waits for the core's
/// pending stores, and was most of `ChunkedVec::push`'s time in the `apply` bench (session 41:
/// about 5 % of `apply` on an empty map, no clear gain with records hot).
type HotArc<T> = triomphe::Arc<T>;

/// How the containers below encode and decode themselves: a thread-local context a checkpoint
/// sets around its serde calls (`with_layout`); anywhere else they are flat sequences.
#[derive(Debug, Default)]
pub enum Layout {
    /// Flat sequences of items (checkpoint format 3; digests and tests).
    #[default]
    Flat,
    /// Decoding checkpoint formats 1 and 2: `ChunkedVec` as its chunks of 65,536, nested; the
    /// income map as the 64 stripes of a `StripedMap`. So a data directory whose journal was
    /// archived behind such a checkpoint still starts after an upgrade.
    Legacy,
    /// Encoding checkpoint format 4: each chunk or block is a *piece*, written inline or, when
    /// its id is a key here, as a reference to the blob with that hash (written apart, and
    /// shared by every checkpoint that holds the same chunk unchanged).
    /// The map is the checkpoint's `BlobCache` of them: id to (version, hash).
    PiecesOut(FastMap<u64, (u64, [u8; 32])>),
    /// Decoding checkpoint format 4: each blob reference becomes an empty placeholder, listed
    /// here, that `ShardState::fill_blobs` then reads from the store.
    PiecesIn(Vec<Placeholder>),
    /// Decoding checkpoint format 4 lazily: each blob reference becomes a piece out of memory,
    /// read back through the reader when used; the hashes met are listed (to check them against
    /// the manifest).
    PiecesLazy(Arc<dyn BlobRead>, Vec<[u8; 32]>),
}

impl fmt::Debug for dyn BlobRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlobRead")
    }
}

/// A chunk or block decoded as a reference: the placeholder's id, the blob's hash and how many
/// items or entries it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placeholder {
    pub id: u64,
    pub hash: [u8; 32],
    pub count: u32,
}

thread_local! {
    static LAYOUT: std::cell::RefCell<Layout> = const { std::cell::RefCell::new(Layout::Flat) };
}

/// Runs `run` with the containers in `layout`, and gives the layout back (with the placeholders
/// a `PiecesIn` decoding listed). The previous layout is put back on every path.
pub fn with_layout<R>(layout: Layout, run: impl FnOnce() -> R) -> (R, Layout) {
    struct Restore(Option<Layout>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(previous) = self.0.take() {
                LAYOUT.with(|current| *current.borrow_mut() = previous);
            }
        }
    }
    let mut restore = Restore(Some(LAYOUT.with(|current| current.replace(layout))));
    let result = run();
    let used = LAYOUT.with(|current| current.replace(restore.0.take().expect("set above")));
    (result, used)
}

/// Runs `decode` with the containers reading the layout of checkpoint formats 1 and 2 when
/// `legacy` holds (see `Layout::Legacy`; `checkpoint::load` sets the layout itself).
#[cfg(test)]
fn with_legacy_layout<R>(legacy: bool, decode: impl FnOnce() -> R) -> R {
    with_layout(if legacy { Layout::Legacy } else { Layout::Flat }, decode).0
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Flat,
    Legacy,
    PiecesOut,
    PiecesIn,
}

fn mode() -> Mode {
    LAYOUT.with(|current| match &*current.borrow() {
        Layout::Flat => Mode::Flat,
        Layout::Legacy => Mode::Legacy,
        Layout::PiecesOut(_) => Mode::PiecesOut,
        Layout::PiecesIn(_) | Layout::PiecesLazy(..) => Mode::PiecesIn,
    })
}

/// The reader a `PiecesLazy` decoding gives the blob `hash`'s piece (listing the hash), if the
/// layout reads lazily.
fn lazy_reader(hash: [u8; 32]) -> Option<Arc<dyn BlobRead>> {
    LAYOUT.with(|current| match &mut *current.borrow_mut() {
        Layout::PiecesLazy(reader, hashes) => {
            hashes.push(hash);
            Some(reader.clone())
        }
        _ => None,
    })
}

#[cfg(test)]
fn legacy_layout() -> bool {
    mode() == Mode::Legacy
}

/// The blob hash `PiecesOut` gives the chunk or block `id`, if any.
fn blob_of(id: u64) -> Option<[u8; 32]> {
    LAYOUT.with(|current| match &*current.borrow() {
        Layout::PiecesOut(blobs) => blobs.get(&id).map(|(_, hash)| *hash),
        _ => None,
    })
}

/// Records a placeholder met while decoding `PiecesIn`.
fn note_placeholder(placeholder: Placeholder) {
    LAYOUT.with(|current| {
        if let Layout::PiecesIn(found) = &mut *current.borrow_mut() {
            found.push(placeholder);
        }
    })
}

/// One chunk (or block) in format 4: inline, or the hash and size of its blob.
#[derive(Serialize)]
enum PieceOut<'a, C: ?Sized> {
    Inline(&'a C),
    Blob { hash: [u8; 32], count: u32 },
}

#[derive(Deserialize)]
enum PieceIn<C> {
    Inline(C),
    Blob { hash: [u8; 32], count: u32 },
}

/// A chunk or block a checkpoint may write as a blob: its id and version (`Tagged`: the same id
/// and version are the same content) and its encoding (`encode` appends it to the vector it is
/// given: the sink's own buffer, so no blob is a vector of its own).
pub trait BlobSink {
    fn offer(&mut self, id: u64, version: u64, encode: &dyn Fn(&mut Vec<u8>));
    /// A piece already out of memory (`Piece::Cold`): its blob is durable and stays named.
    fn keep(&mut self, hash: &[u8; 32]);
}

/// Where a decoded state's placeholders are filled from (`checkpoint::load`).
pub trait BlobSource {
    /// The bytes of the blob the placeholder `id` stands for (checked against its hash) and the
    /// count the pieces said it holds; `None` for an id that is no placeholder.
    fn bytes(&mut self, id: u64) -> Result<Option<(Vec<u8>, u32)>, String>;
    /// The placeholder `id` now holds its blob's items, at `version`: what the next
    /// checkpoint's `BlobCache` knows it by.
    fn filled(&mut self, id: u64, version: u64);
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A chunk or block with its identity: an id no other chunk of this process has (taken when it
/// is made or copied, once per 4,096 items, not per change) and a version that every mutable
/// access bumps. A checkpoint's `BlobCache` maps (id, version) to the blob it wrote, so a chunk
/// whose id and version it knows is byte for byte that blob, without holding the chunk: changes
/// in place are free between checkpoints (the live side copies a chunk only while a snapshot
/// shares it).
#[derive(Debug)]
pub struct Tagged<C> {
    id: u64,
    version: u64,
    data: C,
}

impl<C> Tagged<C> {
    fn new(data: C) -> Tagged<C> {
        Tagged { id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed), version: 0, data }
    }
}

impl<C> std::ops::Deref for Tagged<C> {
    type Target = C;
    fn deref(&self) -> &C {
        &self.data
    }
}

impl<C: PartialEq> PartialEq for Tagged<C> {
    fn eq(&self, other: &Self) -> bool {
        self.data == other.data
    }
}

impl<C: Eq> Eq for Tagged<C> {}

/// The data of `tagged` to change: copied first (a new id) when a snapshot shares it, and its
/// version bumped either way.
fn tagged_mut<C>(tagged: &mut HotArc<Tagged<C>>, copy: impl FnOnce(&C) -> C) -> &mut C {
    if HotArc::get_mut(tagged).is_none() {
        *tagged = HotArc::new(Tagged::new(copy(&tagged.data)));
    }
    let unique = HotArc::get_mut(tagged).expect("just made unique");
    unique.version += 1;
    &mut unique.data
}

/// What a chunk or block holds, as a checkpoint writes it to a blob and reads it back.
pub trait PieceData: Clone + Serialize + serde::de::DeserializeOwned + Send + Sync + 'static {
    /// How many items or entries it holds.
    fn count(&self) -> usize;
    /// About how much memory it takes once read back (counted against the shard's budget of
    /// copies read back): `PIECE_ITEM_BYTES` an item unless it knows better.
    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.count() * PIECE_ITEM_BYTES
    }
}

impl<T: Clone + Serialize + serde::de::DeserializeOwned + Send + Sync + 'static> PieceData for Vec<T> {
    fn count(&self) -> usize {
        self.len()
    }
}

impl<K, V> PieceData for FastMap<K, V>
where
    K: std::hash::Hash + Eq + Clone + Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
    V: Clone + Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    fn count(&self) -> usize {
        self.len()
    }
}

/// Where pieces that left memory are read back from: a shard's blobs in the store
/// (`checkpoint::HistoryReader`), which also counts what its pieces hold read back, so the shard
/// can drop those copies when they pass its budget.
pub trait BlobRead: Send + Sync {
    /// The bytes of blob `hash`, checked against the hash.
    fn read(&self, hash: &[u8; 32]) -> Result<Vec<u8>, BlobError>;
    /// `bytes` of blobs were read back into pieces' caches.
    fn cached(&self, bytes: usize);
}

/// Why a blob could not be read back: `damaged` when it is missing or not what was written (the
/// blob itself is bad), not when the store failed to answer (which may pass).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobError {
    pub reason: String,
    pub damaged: bool,
}

impl BlobError {
    pub fn damaged(reason: impl Into<String>) -> BlobError {
        BlobError { reason: reason.into(), damaged: true }
    }
}

/// A chunk or block out of memory: the durable blob it is (a checkpoint wrote it and every
/// checkpoint since names it), how many items it holds, and its copy read back on first use,
/// kept until the shard drops it (`Piece::uncache`).
pub struct ColdPiece<C> {
    hash: [u8; 32],
    count: u32,
    reader: Arc<dyn BlobRead>,
    cache: std::sync::OnceLock<C>,
}

impl<C: PieceData> ColdPiece<C> {
    /// Reads the blob back. A blob that cannot be read or is not what was written is a storage
    /// fault: the shard stops (its thread's panic guard records why, and recovery names the
    /// blob), as a failed journal write stops it; an answer computed without the data would be
    /// wrong.
    fn read(&self) -> C {
        match self.try_read() {
            Ok(data) => data,
            Err(fault) => std::panic::panic_any(fault),
        }
    }

    /// Reads the blob back into the cache unless it is there (what a batch's prefetch does, so
    /// that `apply` finds it in memory), or says why it cannot.
    fn warm(&self) -> Result<(), StorageFault> {
        if self.cache.get().is_none() {
            let data = self.try_read()?;
            self.reader.cached(data.memory_bytes());
            let _ = self.cache.set(data);
        }
        Ok(())
    }

    fn try_read(&self) -> Result<C, StorageFault> {
        use bincode::Options;
        let data = self.reader.read(&self.hash).and_then(|bytes| {
            let data: C = crate::journal::codec().deserialize(&bytes).map_err(|e| BlobError::damaged(format!("it does not decode: {e}")))?;
            if data.count() != self.count as usize {
                return Err(BlobError::damaged(format!("it holds {} items where {} were said", data.count(), self.count)));
            }
            Ok(data)
        });
        data.map_err(|error| StorageFault { hash: self.hash, reason: error.reason, damaged: error.damaged })
    }

    /// Its data, read back on first use and kept (counted against the shard's budget: what a
    /// `scan` reads or a change takes back into memory is not kept here and not counted).
    fn data(&self) -> &C {
        if let Err(fault) = self.warm() {
            std::panic::panic_any(fault);
        }
        self.cache.get().expect("just read back")
    }
}

/// Why a piece out of memory could not be read back: the payload of the panic that stops the
/// shard (its thread's guard reports it as a storage failure and marks the blob damaged, so
/// that the next start recovers without it: `checkpoint::mark_damaged`), or that recovery turns
/// into a fall-back to a checkpoint that does not use the blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageFault {
    pub hash: [u8; 32],
    pub reason: String,
    /// The blob is missing or not what was written (marked, and avoided by the next recovery);
    /// else the store failed to answer (nothing is marked: a restart reads it again).
    pub damaged: bool,
}

impl fmt::Display for StorageFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "storage fault: the history blob {} cannot be read back: {}", hex(&self.hash), self.reason)
    }
}

/// What one item or entry of a piece read back is counted as in memory (an order is about
/// this size; smaller items are counted high, which only drops the copies sooner).
const PIECE_ITEM_BYTES: usize = 160;

/// The first bytes of a hash, in hex (for messages).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A chunk or block: in memory (copy-on-write, with its identity), or out of memory as the
/// blob a durable checkpoint wrote (read back when used).
pub enum Piece<C> {
    Hot(HotArc<Tagged<C>>),
    Cold(Arc<ColdPiece<C>>),
}

impl<C> Clone for Piece<C> {
    fn clone(&self) -> Self {
        match self {
            Piece::Hot(hot) => Piece::Hot(hot.clone()),
            Piece::Cold(cold) => Piece::Cold(cold.clone()),
        }
    }
}

impl<C: fmt::Debug> fmt::Debug for Piece<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Piece::Hot(hot) => f.debug_tuple("Hot").field(&hot.data).finish(),
            Piece::Cold(cold) => write!(f, "Cold({}, {} items)", hex(&cold.hash), cold.count),
        }
    }
}

impl<C: PieceData> Piece<C> {
    /// Runs `visit` on its data; out of memory (and not read back already), it is read for the
    /// visit only, not kept (`ChunkedVec::scan`).
    fn visit<R>(&self, visit: impl FnOnce(&C) -> R) -> R {
        match self {
            Piece::Cold(cold) if cold.cache.get().is_none() => visit(&cold.read()),
            _ => visit(self.data()),
        }
    }

    fn hot(data: C) -> Piece<C> {
        Piece::Hot(HotArc::new(Tagged::new(data)))
    }

    /// Its data, read back first if it is out of memory.
    fn data(&self) -> &C {
        match self {
            Piece::Hot(hot) => &hot.data,
            Piece::Cold(cold) => cold.data(),
        }
    }

    /// How many items it holds (without reading it back).
    fn count(&self) -> usize {
        match self {
            Piece::Hot(hot) => hot.data.count(),
            Piece::Cold(cold) => cold.count as usize,
        }
    }

    /// Its data to change: a piece out of memory comes back as a new chunk (a new id, so the
    /// next checkpoint writes its blob), a shared one is copied (`tagged_mut`).
    fn data_mut(&mut self, copy: impl FnOnce(&C) -> C) -> &mut C {
        if let Piece::Cold(cold) = self {
            let data = cold.cache.get().cloned().unwrap_or_else(|| cold.read());
            *self = Piece::hot(data);
        }
        match self {
            Piece::Hot(hot) => tagged_mut(hot, copy),
            Piece::Cold(_) => unreachable!("brought back into memory above"),
        }
    }

    /// Offers it to a checkpoint: a piece in memory to be written (or referred to, if
    /// unchanged), one out of memory kept as the blob it is.
    fn offer(&self, sink: &mut dyn BlobSink) {
        match self {
            Piece::Hot(hot) => {
                let encode = |bytes: &mut Vec<u8>| crate::codec::encode_into(&hot.data, bytes).expect("pieces encode");
                sink.offer(hot.id, hot.version, &encode);
            }
            Piece::Cold(cold) => sink.keep(&cold.hash),
        }
    }

    /// Moves it out of memory if a durable checkpoint holds it as it is now (`durable` knows its
    /// id at its version); true if it did.
    fn cool(&mut self, durable: &dyn Fn(u64, u64) -> Option<[u8; 32]>, reader: &Arc<dyn BlobRead>) -> bool {
        let Piece::Hot(hot) = self else { return false };
        let Some(hash) = durable(hot.id, hot.version) else { return false };
        let Ok(count) = u32::try_from(hot.data.count()) else { return false };
        *self = Piece::Cold(Arc::new(ColdPiece { hash, count, reader: reader.clone(), cache: std::sync::OnceLock::new() }));
        true
    }

    /// Drops its copy read back, if any (a snapshot sharing the old one keeps that until it ends).
    fn uncache(&mut self) {
        if let Piece::Cold(cold) = self {
            if cold.cache.get().is_some() {
                *cold = Arc::new(ColdPiece { hash: cold.hash, count: cold.count, reader: cold.reader.clone(), cache: std::sync::OnceLock::new() });
            }
        }
    }

    /// The piece as a checkpoint encodes it (`Layout::PiecesOut`).
    fn piece_out(&self) -> PieceOut<'_, C> {
        match self {
            Piece::Hot(hot) => match blob_of(hot.id) {
                Some(hash) => PieceOut::Blob { hash, count: hot.data.count() as u32 },
                None => PieceOut::Inline(&hot.data),
            },
            Piece::Cold(cold) => PieceOut::Blob { hash: cold.hash, count: cold.count },
        }
    }

    /// A piece decoded as a blob reference (`Layout::PiecesIn`): out of memory when the layout
    /// reads lazily, else a placeholder that `fill_blobs` fills.
    fn from_blob(hash: [u8; 32], count: u32, empty: C) -> Piece<C> {
        match lazy_reader(hash) {
            Some(reader) => Piece::Cold(Arc::new(ColdPiece { hash, count, reader, cache: std::sync::OnceLock::new() })),
            None => {
                let placeholder = Tagged::new(empty);
                note_placeholder(Placeholder { id: placeholder.id, hash, count });
                Piece::Hot(HotArc::new(placeholder))
            }
        }
    }

    /// The placeholder to fill, if this is one (`fill_blobs`).
    fn placeholder(&mut self) -> Option<&mut Tagged<C>> {
        match self {
            Piece::Hot(hot) if hot.data.count() == 0 => HotArc::get_mut(hot),
            _ => None,
        }
    }
}

const CHUNK_BITS: u32 = 12;
const CHUNK_LEN: usize = 1 << CHUNK_BITS;

/// The chunk of a `ChunkedVec` (of 4,096 items) that holds item `index`: what is stored and
/// read back as one piece.
pub const fn chunk_of(index: usize) -> usize {
    index >> CHUNK_BITS
}

/// The block of an `OrderBlocks` map (keyed by order, 4,096 consecutive order ids a block) that
/// holds the entries of order `id`: what is stored and read back as one piece.
pub const fn order_block_of(id: u64) -> u64 {
    id >> CHUNK_BITS
}

/// An append-only vector stored in fixed chunks of 4,096: growing never moves existing items.
///
/// Chunks are shared copy-on-write (`Arc`), so a clone (a checkpoint's snapshot of the shard's
/// state) copies only the chunk pointers, whatever the history, and the live side copies a chunk
/// the first time it changes one that a snapshot still holds: the last chunk when it appends,
/// an older one when an old item changes (an order's status). Encoded as a flat sequence of its
/// items, so the encoding does not depend on the chunk size.
#[derive(Clone, Debug)]
pub struct ChunkedVec<T> {
    chunks: Vec<Piece<Vec<T>>>,
    len: usize,
}

impl<T> Default for ChunkedVec<T> {
    fn default() -> Self {
        ChunkedVec { chunks: Vec::new(), len: 0 }
    }
}

/// How many of a vector's newest full chunks stay in memory after a checkpoint (with the one
/// still filling): recent orders are the ones refunds, confirmations and listings touch.
const HOT_CHUNKS: usize = 2;

impl<T: Clone + Serialize + serde::de::DeserializeOwned + Send + Sync + 'static> ChunkedVec<T> {
    /// Number of items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The item at `index` (its chunk read back first if it is out of memory).
    pub fn get(&self, index: usize) -> Option<&T> {
        self.chunks.get(index >> CHUNK_BITS)?.data().get(index & (CHUNK_LEN - 1))
    }

    /// The number of leading items for which `below` holds (they must come first), by bisection:
    /// of the chunks by their first items, then within the chunk found. A chunk out of memory is
    /// read back for the look only (since session 62: bisecting the items kept each chunk it
    /// looked at in memory, and reconciliation and the start bisect orders by time).
    pub fn partition_point(&self, below: impl Fn(&T) -> bool) -> usize {
        let (mut low, mut high) = (0, self.chunks.len());
        while low < high {
            let middle = low + (high - low) / 2;
            if self.chunks[middle].visit(|items| items.first().is_some_and(&below)) {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        // Every chunk before `low - 1` holds only items below; the point is in chunk `low - 1`.
        match low.checked_sub(1) {
            None => 0,
            Some(chunk) => (chunk << CHUNK_BITS) + self.chunks[chunk].visit(|items| items.partition_point(&below)),
        }
    }

    /// All items in order (chunks out of memory are read back and kept until the shard drops
    /// them: for a walk of the whole history use `scan`).
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flat_map(|chunk| chunk.data().iter())
    }

    /// Visits every item in order; a chunk out of memory is read back for the visit only, so a
    /// walk of the whole history holds one chunk of it at a time.
    pub fn scan(&self, mut visit: impl FnMut(&T)) {
        self.scan_from(0, |item| {
            visit(item);
            true
        });
    }

    /// Visits the items from index `from` on, in order, until `visit` answers false; chunks out
    /// of memory are read back for the visit only (see `scan`).
    pub fn scan_from(&self, from: usize, mut visit: impl FnMut(&T) -> bool) {
        let mut skip = from & (CHUNK_LEN - 1);
        for chunk in self.chunks.iter().skip(from >> CHUNK_BITS) {
            if !chunk.visit(|items| items.iter().skip(std::mem::take(&mut skip)).all(&mut visit)) {
                return;
            }
        }
    }

    /// Visits the items at `range` (clamped to the vector), in order; chunks out of memory are
    /// read back for the visit only, and no chunk past the range is read.
    pub fn scan_range(&self, range: std::ops::Range<usize>, mut visit: impl FnMut(&T)) {
        let end = range.end.min(self.len());
        if range.start >= end {
            return;
        }
        for index in range.start >> CHUNK_BITS..=(end - 1) >> CHUNK_BITS {
            let Some(chunk) = self.chunks.get(index) else { return };
            let base = index << CHUNK_BITS;
            chunk.visit(|items| {
                let (from, to) = (range.start.saturating_sub(base), (end - base).min(items.len()));
                items.get(from..to).unwrap_or(&[]).iter().for_each(&mut visit);
            });
        }
    }

    /// How many chunks a snapshot shares with this vector.
    #[cfg(test)]
    fn shared_chunks(&self) -> usize {
        self.chunks.iter().filter(|chunk| matches!(chunk, Piece::Hot(hot) if HotArc::count(hot) > 1)).count()
    }

    /// Whether the item at `index` is in memory (its chunk hot, or read back and kept): reading
    /// one that is not costs a store read.
    pub fn is_resident(&self, index: usize) -> bool {
        match self.chunks.get(index >> CHUNK_BITS) {
            Some(Piece::Cold(cold)) => cold.cache.get().is_some(),
            _ => true,
        }
    }

    /// Reads the chunk of `index` back into memory now if it is out (see `ColdPiece::warm`).
    pub fn warm(&self, index: usize) -> Result<(), StorageFault> {
        match self.chunks.get(index >> CHUNK_BITS) {
            Some(Piece::Cold(cold)) => cold.warm(),
            _ => Ok(()),
        }
    }

    /// How many chunks, in memory or not.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// How many chunks are out of memory.
    pub fn cold_chunks(&self) -> usize {
        self.chunks.iter().filter(|chunk| matches!(chunk, Piece::Cold(_))).count()
    }

    /// Appends an item.
    #[inline(always)]
    pub fn push(&mut self, item: T) {
        self.push_with(|| item);
    }

    /// Appends the item `make` builds. In the usual case, small enough to inline (the last
    /// chunk has room, is in memory and unshared), the item is written straight into its slot,
    /// which lets the compiler build it there: an item built aside and copied is, for a large
    /// one (an `Order`), a read across the stores that just wrote it, which waits for them to
    /// reach the cache (criterion `apply` +1-3 %, session 49).
    #[inline(always)]
    pub fn push_with(&mut self, make: impl FnOnce() -> T) {
        if !self.len.is_multiple_of(CHUNK_LEN) {
            if let Some(Piece::Hot(hot)) = self.chunks.last_mut() {
                if let Some(unique) = HotArc::get_mut(hot) {
                    if let Some(slot) = unique.data.spare_capacity_mut().first_mut() {
                        slot.write(make());
                        // SAFETY: the slot past the end was just written.
                        unsafe { unique.data.set_len(unique.data.len() + 1) };
                        unique.version += 1;
                        self.len += 1;
                        // Asks for the line 512 bytes on, where the appends to come will
                        // write: a store into fresh memory that misses the cache holds back
                        // every later one. Criterion `apply` +1-2 % (session 46).
                        let spare = unique.data.spare_capacity_mut();
                        if let Some(ahead) = spare.get(512 / std::mem::size_of::<T>().max(1)) {
                            crate::prefetch(ahead.as_ptr());
                        }
                        return;
                    }
                }
            }
        }
        self.push_to_new_or_shared(make());
    }

    /// `push` into a new chunk, or a last chunk a snapshot shares or that is out of memory.
    #[inline(never)]
    fn push_to_new_or_shared(&mut self, item: T) {
        if self.len.is_multiple_of(CHUNK_LEN) {
            // The first chunk grows as a `Vec` does (many small vectors stay small); later ones
            // are taken whole, so growing never copies more than one chunk.
            let chunk = if self.chunks.is_empty() { Vec::new() } else { Vec::with_capacity(CHUNK_LEN) };
            self.chunks.push(Piece::hot(chunk));
        }
        let first = self.chunks.len() == 1;
        own(self.chunks.last_mut().expect("a chunk with room"), first).push(item);
        self.len += 1;
    }

    /// The item at `index`, mutably (the chunk is copied first if a snapshot shares it, and
    /// brought back into memory if it was out).
    pub fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        let chunk = index >> CHUNK_BITS;
        let first = chunk == 0;
        if index >= self.len {
            return None;
        }
        own(self.chunks.get_mut(chunk)?, first).get_mut(index & (CHUNK_LEN - 1))
    }

    /// Offers each full chunk to a checkpoint as a blob (the last, still filling, goes inline).
    pub fn offer_blobs(&self, sink: &mut dyn BlobSink) {
        // A piece out of memory is always named (whatever its size), or collecting blobs would
        // delete one the live state still reads.
        for chunk in self.chunks.iter().filter(|chunk| chunk.count() == CHUNK_LEN || matches!(chunk, Piece::Cold(_))) {
            chunk.offer(sink);
        }
    }

    /// After a durable checkpoint: moves out of memory each full chunk it holds as it is now
    /// (`durable`), but the newest `HOT_CHUNKS`, and drops the copies of chunks read back.
    /// Gives how many chunks it moved out.
    pub fn cool(&mut self, durable: &dyn Fn(u64, u64) -> Option<[u8; 32]>, reader: &Arc<dyn BlobRead>) -> usize {
        let full = self.len / CHUNK_LEN;
        let mut moved = 0;
        for (index, chunk) in self.chunks.iter_mut().enumerate() {
            if index + HOT_CHUNKS < full && chunk.cool(durable, reader) {
                moved += 1;
            }
            chunk.uncache();
        }
        moved
    }

    /// Drops the copies of chunks read back.
    pub fn uncache(&mut self) {
        self.chunks.iter_mut().for_each(Piece::uncache);
    }

    /// Replaces each placeholder chunk with the items of its blob.
    pub fn fill_blobs(&mut self, source: &mut dyn BlobSource) -> Result<(), String> {
        use bincode::Options;
        for (index, chunk) in self.chunks.iter_mut().enumerate() {
            let Some(placeholder) = chunk.placeholder() else { continue };
            let Some((bytes, count)) = source.bytes(placeholder.id)? else { continue };
            let items: Vec<T> = crate::journal::codec().deserialize(&bytes).map_err(|e| format!("chunk {index} does not decode: {e}"))?;
            if items.len() != count as usize {
                return Err(format!("chunk {index}'s blob holds {} items where {count} were said", items.len()));
            }
            placeholder.data = items;
            source.filled(placeholder.id, placeholder.version);
        }
        // Every chunk but the last is full, as the pieces said, and no placeholder is left.
        let last = self.chunks.len().saturating_sub(1);
        for (index, chunk) in self.chunks.iter().enumerate() {
            let count = chunk.count();
            if count == 0 || count > CHUNK_LEN || (index < last && count != CHUNK_LEN) {
                return Err(format!("chunk {index} of {} holds {count} items", last + 1));
            }
        }
        let counted: usize = self.chunks.iter().map(Piece::count).sum();
        if counted != self.len {
            return Err(format!("{counted} items where the pieces said {}", self.len));
        }
        Ok(())
    }
}

impl<T: PartialEq + Clone + Serialize + serde::de::DeserializeOwned + Send + Sync + 'static> PartialEq for ChunkedVec<T> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl<T: Eq + Clone + Serialize + serde::de::DeserializeOwned + Send + Sync + 'static> Eq for ChunkedVec<T> {}

/// The chunk, unshared and in memory: copied (with a whole chunk's room, so appending to the copy
/// does not grow it again; the first chunk keeps growing as a `Vec`) when a snapshot still holds
/// it.
fn own<T: Clone + Serialize + serde::de::DeserializeOwned + Send + Sync + 'static>(chunk: &mut Piece<Vec<T>>, first: bool) -> &mut Vec<T> {
    chunk.data_mut(|items| {
        let mut copy = Vec::with_capacity(if first { items.capacity() } else { CHUNK_LEN });
        copy.extend_from_slice(items);
        copy
    })
}

impl<T: Clone + Serialize + serde::de::DeserializeOwned + Send + Sync + 'static> Serialize for ChunkedVec<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if mode() == Mode::PiecesOut {
            let mut seq = serializer.serialize_seq(Some(self.chunks.len()))?;
            for chunk in &self.chunks {
                seq.serialize_element(&chunk.piece_out())?;
            }
            return seq.end();
        }
        let mut seq = serializer.serialize_seq(Some(self.len))?;
        for item in self.iter() {
            seq.serialize_element(item)?;
        }
        seq.end()
    }
}

impl<'de, T: Clone + Serialize + serde::de::DeserializeOwned + Send + Sync + 'static> Deserialize<'de> for ChunkedVec<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if mode() == Mode::Legacy {
            #[derive(Deserialize)]
            struct Legacy<T> {
                chunks: Vec<Vec<T>>,
                len: usize,
            }
            let legacy = Legacy::<T>::deserialize(deserializer)?;
            let mut items = ChunkedVec::default();
            legacy.chunks.into_iter().flatten().for_each(|item| items.push(item));
            if items.len() != legacy.len {
                return Err(serde::de::Error::custom(format!("{} items in chunks said to hold {}", items.len(), legacy.len)));
            }
            return Ok(items);
        }
        if mode() == Mode::PiecesIn {
            let pieces = Vec::<PieceIn<Vec<T>>>::deserialize(deserializer)?;
            let last = pieces.len().saturating_sub(1);
            let mut items = ChunkedVec { chunks: Vec::with_capacity(pieces.len()), len: 0 };
            for (index, piece) in pieces.into_iter().enumerate() {
                let (chunk, count) = match piece {
                    PieceIn::Inline(chunk) => {
                        let count = chunk.len();
                        (Piece::hot(chunk), count)
                    }
                    PieceIn::Blob { hash, count } => (Piece::from_blob(hash, count, Vec::new()), count as usize),
                };
                // Indexing needs every chunk but the last full, and none empty or past full.
                if count == 0 || count > CHUNK_LEN || (index < last && count != CHUNK_LEN) {
                    return Err(serde::de::Error::custom(format!("chunk {index} of {} holds {count} items", last + 1)));
                }
                items.chunks.push(chunk);
                items.len += count;
            }
            return Ok(items);
        }
        struct Items<T>(PhantomData<T>);
        impl<'de, T: Clone + Serialize + serde::de::DeserializeOwned + Send + Sync + 'static> Visitor<'de> for Items<T> {
            type Value = ChunkedVec<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sequence of items")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = ChunkedVec::default();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(items)
            }
        }
        deserializer.deserialize_seq(Items(PhantomData))
    }
}

/// Keys that say which block of an `OrderBlocks` map they live in: consecutive order ids share a
/// block, so the keys of new orders fall in the newest blocks.
pub trait BlockKey {
    fn block(&self) -> u64;
}

impl BlockKey for (crate::ledger::types::OrderId, crate::ledger::types::AccountId) {
    fn block(&self) -> u64 {
        order_block_of(self.0 .0)
    }
}

/// A hash map keyed by order, in copy-on-write blocks of 4,096 consecutive order ids. Entries
/// of new orders land in the newest blocks, so a clone (a checkpoint's snapshot) copies only the
/// block pointers, and the live side copies the few blocks it changes while a snapshot holds
/// them (the newest ones, and an old one when a refund changes an old payment's income). The
/// blocks are themselves in a hash map (not a vector indexed by block), so no id, however large,
/// makes it allocate more than its entries need. Encoded as a flat sequence of (key, value).
#[derive(Clone, Debug)]
pub struct OrderBlocks<K: std::hash::Hash + Eq, V> {
    blocks: FastMap<u64, Piece<FastMap<K, V>>>,
}

impl<K: std::hash::Hash + Eq, V> Default for OrderBlocks<K, V> {
    fn default() -> Self {
        OrderBlocks { blocks: FastMap::default() }
    }
}

/// The bounds of an `OrderBlocks` key and value (they go to blobs and back).
pub trait BlockEntry: Clone + Serialize + serde::de::DeserializeOwned + Send + Sync + 'static {}

impl<T: Clone + Serialize + serde::de::DeserializeOwned + Send + Sync + 'static> BlockEntry for T {}

impl<K: std::hash::Hash + Eq + BlockKey + BlockEntry, V: BlockEntry> OrderBlocks<K, V> {
    /// The value of `key` (its block read back first if it is out of memory).
    pub fn get(&self, key: &K) -> Option<&V> {
        self.blocks.get(&key.block())?.data().get(key)
    }

    /// The value of `key`, mutably (its block is copied first if a snapshot shares it, and
    /// brought back into memory if it was out).
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let block = self.blocks.get_mut(&key.block())?;
        if !block.data().contains_key(key) {
            return None;
        }
        block.data_mut(Clone::clone).get_mut(key)
    }

    /// The entry of `key` (to insert or update in place). A block left empty by an entry not
    /// filled is never encoded (see `Serialize`).
    pub fn entry(&mut self, key: K) -> std::collections::hash_map::Entry<'_, K, V> {
        self.blocks.entry(key.block()).or_insert_with(|| Piece::hot(FastMap::default())).data_mut(Clone::clone).entry(key)
    }

    /// Inserts or replaces.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.blocks.entry(key.block()).or_insert_with(|| Piece::hot(FastMap::default())).data_mut(Clone::clone).insert(key, value)
    }

    /// Number of entries (a sum over the blocks: exact whatever was done with an entry).
    pub fn len(&self) -> usize {
        self.blocks.values().map(Piece::count).sum()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.blocks.values().all(|block| block.count() == 0)
    }

    /// Every entry, in no particular order (blocks out of memory are read back and kept until
    /// the shard drops them).
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.blocks.values().flat_map(|block| block.data().iter())
    }

    /// How many blocks a snapshot shares with this map.
    #[cfg(test)]
    fn shared_blocks(&self) -> usize {
        self.blocks.values().filter(|block| matches!(block, Piece::Hot(hot) if HotArc::count(hot) > 1)).count()
    }

    /// Whether the block of `key` is in memory (hot, or read back and kept), or there is none.
    pub fn is_resident(&self, key: &K) -> bool {
        match self.blocks.get(&key.block()) {
            Some(Piece::Cold(cold)) => cold.cache.get().is_some(),
            _ => true,
        }
    }

    /// Reads block `index` back into memory now if it is out (see `ColdPiece::warm`).
    pub fn warm_block(&self, index: u64) -> Result<(), StorageFault> {
        match self.blocks.get(&index) {
            Some(Piece::Cold(cold)) => cold.warm(),
            _ => Ok(()),
        }
    }

    /// Reads the block of `key` back into memory now if it is out (see `ColdPiece::warm`).
    pub fn warm(&self, key: &K) -> Result<(), StorageFault> {
        match self.blocks.get(&key.block()) {
            Some(Piece::Cold(cold)) => cold.warm(),
            _ => Ok(()),
        }
    }

    /// How many blocks, in memory or not.
    pub fn block_count(&self) -> usize {
        self.blocks.len()
    }

    /// How many blocks are out of memory.
    pub fn cold_blocks(&self) -> usize {
        self.blocks.values().filter(|block| matches!(block, Piece::Cold(_))).count()
    }

    /// The non-empty blocks, by ascending block number.
    fn ordered(&self) -> Vec<(u64, &Piece<FastMap<K, V>>)> {
        let mut blocks: Vec<(u64, &Piece<FastMap<K, V>>)> =
            self.blocks.iter().filter(|(_, block)| block.count() > 0).map(|(index, block)| (*index, block)).collect();
        blocks.sort_unstable_by_key(|(index, _)| *index);
        blocks
    }

    /// Offers each block of at least `BLOB_BLOCK_MIN` entries to a checkpoint as a blob.
    pub fn offer_blobs(&self, sink: &mut dyn BlobSink) {
        for block in self.blocks.values().filter(|block| block.count() >= BLOB_BLOCK_MIN || matches!(block, Piece::Cold(_))) {
            block.offer(sink);
        }
    }

    /// After a durable checkpoint: moves out of memory each block it holds as it is now
    /// (`durable`: blocks still filling have changed since, so they stay), and drops the copies
    /// of blocks read back. Gives how many blocks it moved out.
    ///
    /// Blocks in `keep` stay: the shard's own new orders land there next. (Blocks past it hold
    /// orders of other shards that run ahead of this one; they go like older ones, and come back
    /// when used: `warm_block` ahead of a batch.)
    pub fn cool(&mut self, durable: &dyn Fn(u64, u64) -> Option<[u8; 32]>, reader: &Arc<dyn BlobRead>, keep: std::ops::Range<u64>) -> usize {
        let mut moved = 0;
        for (index, block) in self.blocks.iter_mut() {
            if !keep.contains(index) && block.cool(durable, reader) {
                moved += 1;
            }
            block.uncache();
        }
        moved
    }

    /// Drops the copies of blocks read back.
    pub fn uncache(&mut self) {
        self.blocks.values_mut().for_each(Piece::uncache);
    }

    /// Replaces each placeholder block with the entries of its blob.
    pub fn fill_blobs(&mut self, source: &mut dyn BlobSource) -> Result<(), String> {
        use bincode::Options;
        for (index, block) in self.blocks.iter_mut() {
            if block.count() > 0 {
                continue;
            }
            let Some(placeholder) = block.placeholder() else {
                return Err(format!("block {index} is shared while it is read"));
            };
            let Some((bytes, count)) = source.bytes(placeholder.id)? else {
                return Err(format!("block {index} is empty"));
            };
            let entries: FastMap<K, V> = crate::journal::codec().deserialize(&bytes).map_err(|e| format!("block {index} does not decode: {e}"))?;
            if entries.len() != count as usize || entries.keys().any(|key| key.block() != *index) {
                return Err(format!("block {index}'s blob holds {} entries, or another block's, where {count} were said", entries.len()));
            }
            placeholder.data = entries;
            source.filled(placeholder.id, placeholder.version);
        }
        Ok(())
    }
}

/// Blocks with fewer entries than this go inline in a checkpoint (not worth a blob of their own).
const BLOB_BLOCK_MIN: usize = 64;

impl<K: std::hash::Hash + Eq + BlockKey + BlockEntry, V: BlockEntry> Serialize for OrderBlocks<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if mode() == Mode::PiecesOut {
            let blocks = self.ordered();
            let mut seq = serializer.serialize_seq(Some(blocks.len()))?;
            for (index, block) in blocks {
                seq.serialize_element(&(index, block.piece_out()))?;
            }
            return seq.end();
        }
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for entry in self.iter() {
            seq.serialize_element(&entry)?;
        }
        seq.end()
    }
}

impl<'de, K: std::hash::Hash + Eq + BlockKey + BlockEntry, V: BlockEntry> Deserialize<'de> for OrderBlocks<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if mode() == Mode::Legacy {
            #[derive(Deserialize)]
            struct Legacy<K: std::hash::Hash + Eq, V> {
                stripes: Vec<FastMap<K, V>>,
            }
            let legacy = Legacy::<K, V>::deserialize(deserializer)?;
            let mut map = OrderBlocks::default();
            for (key, value) in legacy.stripes.into_iter().flatten() {
                map.insert(key, value);
            }
            return Ok(map);
        }
        if mode() == Mode::PiecesIn {
            let pieces = Vec::<(u64, PieceIn<FastMap<K, V>>)>::deserialize(deserializer)?;
            let mut map = OrderBlocks::default();
            let mut previous = None;
            for (index, piece) in pieces {
                // Blocks come in ascending order, each once, none empty.
                if previous.is_some_and(|p| p >= index) {
                    return Err(serde::de::Error::custom("blocks out of order"));
                }
                previous = Some(index);
                let block = match piece {
                    PieceIn::Inline(block) => {
                        if block.is_empty() || block.keys().any(|key| key.block() != index) {
                            return Err(serde::de::Error::custom(format!("block {index} is empty or holds another block's key")));
                        }
                        Piece::hot(block)
                    }
                    PieceIn::Blob { hash, count } => {
                        if count == 0 {
                            return Err(serde::de::Error::custom(format!("block {index} is an empty blob")));
                        }
                        Piece::from_blob(hash, count, FastMap::default())
                    }
                };
                map.blocks.insert(index, block);
            }
            return Ok(map);
        }
        struct Entries<K, V>(PhantomData<(K, V)>);
        impl<'de, K: std::hash::Hash + Eq + BlockKey + BlockEntry, V: BlockEntry> Visitor<'de> for Entries<K, V> {
            type Value = OrderBlocks<K, V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sequence of (key, value)")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut map = OrderBlocks::default();
                while let Some((key, value)) = seq.next_element::<(K, V)>()? {
                    map.insert(key, value);
                }
                Ok(map)
            }
        }
        deserializer.deserialize_seq(Entries(PhantomData))
    }
}

/// The journal batches that hold an account's postings, ascending: kept as varint deltas in
/// blocks of `BATCHES_PER_BLOCK` (about a byte per batch instead of eight, however long the
/// history). Each block is a piece (`Piece`): shared copy-on-write, so a checkpoint's snapshot
/// copies pointers (about 32 bytes a block), and a full block is a blob written once, out of
/// memory once a durable checkpoint holds it. Each block's first and last batch stay in memory,
/// so finding where a window starts reads nothing back.
///
/// Encoded as a plain sequence of `u64` (what a `Vec<u64>` encodes as: digests, checkpoint
/// format 4 and before), or in checkpoint format 5 (`with_layout_at` with `batch_pieces`) as its
/// length and its blocks, each with its first and last batch and the piece (inline or a blob).
#[derive(Clone, Debug, Default)]
pub struct BatchList {
    blocks: Vec<BatchBlockRef>,
    len: usize,
    /// The newest batch noted (`note`), beside the blocks: a batch notes an account once per
    /// posting, and a repeat is answered without a cache miss into the blocks. Set by `note`
    /// before `append` adds the batch, so a second note of the same batch is refused even while
    /// the list is empty.
    newest: Option<u64>,
}

#[derive(Clone, Debug)]
struct BatchBlockRef {
    first: u64,
    last: u64,
    piece: Piece<BatchBlock>,
}

impl BatchBlockRef {
    /// The block's batches, read back first if it is out of memory. A block read back that is not
    /// the one its reference describes is damaged: the same storage fault as an unreadable blob.
    fn block(&self) -> &BatchBlock {
        let block = self.piece.data();
        if let Piece::Cold(cold) = &self.piece {
            if block.first != self.first || block.last != self.last || !block.is_consistent() {
                std::panic::panic_any(StorageFault {
                    hash: cold.hash,
                    reason: format!(
                        "it is not the block of batches {}..={} its reference names (it holds {}..={})",
                        self.first, self.last, block.first, block.last
                    ),
                    damaged: true,
                });
            }
        }
        block
    }
}

/// The batches of one block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchBlock {
    first: u64,
    last: u64,
    count: u32,
    /// LEB128 of each batch's distance from the one before, after the first.
    deltas: Vec<u8>,
}

impl PieceData for BatchBlock {
    fn count(&self) -> usize {
        self.count as usize
    }
    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.deltas.capacity()
    }
}

/// The LEB128 delta at `at` in `deltas`, moving `at` past it; `None` if the bytes end first or
/// it does not fit 64 bits.
fn read_delta(deltas: &[u8], at: &mut usize) -> Option<u64> {
    let (mut delta, mut shift) = (0u64, 0u32);
    loop {
        let byte = *deltas.get(*at)?;
        *at += 1;
        if shift > 63 {
            return None;
        }
        delta |= u64::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return Some(delta);
        }
    }
}

impl BatchBlock {
    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let mut at = 0;
        let mut current = self.first;
        (0..self.count).map(move |index| {
            if index > 0 {
                // Blocks in memory are consistent (`is_consistent` checks those read back).
                current = current.saturating_add(read_delta(&self.deltas, &mut at).unwrap_or(0));
            }
            current
        })
    }

    /// Whether its deltas decode to `count` batches from `first` to `last`, ascending, with no
    /// byte left over (a block decoded from a checkpoint).
    fn is_consistent(&self) -> bool {
        let mut previous: Option<u64> = None;
        let mut decoded = 0u32;
        let mut at = 0usize;
        let mut current = self.first;
        while decoded < self.count {
            if decoded > 0 {
                let Some(next) = read_delta(&self.deltas, &mut at).and_then(|delta| current.checked_add(delta)) else { return false };
                current = next;
            }
            if previous.is_some_and(|p| p >= current) {
                return false;
            }
            previous = Some(current);
            decoded += 1;
        }
        self.count > 0 && at == self.deltas.len() && previous == Some(self.last)
    }
}

/// Batches per block of a `BatchList` (a full block's blob is about a kilobyte).
const BATCHES_PER_BLOCK: u32 = 1024;

thread_local! {
    /// The checkpoint format being encoded or decoded (`with_layout_at`); `None` outside one.
    static FORMAT: std::cell::Cell<Option<u8>> = const { std::cell::Cell::new(None) };
}

/// `with_layout`, telling the containers which checkpoint format they are in: the batch index
/// is in pieces from format 5 on (a plain sequence before, and outside checkpoints), and
/// `DayRuns` are encoded from format 6 on (and outside checkpoints).
pub fn with_layout_at<R>(layout: Layout, format: u8, run: impl FnOnce() -> R) -> (R, Layout) {
    let previous = FORMAT.with(|cell| cell.replace(Some(format)));
    struct Restore(Option<u8>);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORMAT.with(|cell| cell.set(self.0));
        }
    }
    let _restore = Restore(previous);
    with_layout(layout, run)
}

fn batch_pieces() -> bool {
    FORMAT.with(std::cell::Cell::get).is_some_and(|format| format >= 5) && matches!(mode(), Mode::PiecesOut | Mode::PiecesIn)
}

/// Whether `DayRuns` are in the encoding (checkpoint format 6 on, and outside checkpoints).
fn day_runs_encoded() -> bool {
    FORMAT.with(std::cell::Cell::get).is_none_or(|format| format >= 6)
}

/// Where each business day's rows are in a vector of settlement rows (`ShardState::settled`,
/// `commissions`): a run of consecutive rows of one `through_day`, as (day, index of its first
/// row). A settlement run pushes its rows together, so there are about as many runs as
/// settlement runs, and a statement of a day reads that day's chunks, not the whole history.
/// Derived from the rows (`note` at each push; `of_rows` by a scan, after a checkpoint of format
/// 5 or before, which did not encode them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DayRuns(Vec<(u32, u64)>);

impl DayRuns {
    /// Notes that the row at `index` (the vector's newest) is of `day`.
    pub fn note(&mut self, day: u32, index: u64) {
        if self.0.last().is_none_or(|(last, _)| *last != day) {
            self.0.push((day, index));
        }
    }

    /// The runs of `rows`, from a scan of every row (chunks out of memory read back one at a time).
    pub fn of_rows<T: BlockEntry>(rows: &ChunkedVec<T>, day_of: impl Fn(&T) -> u32) -> DayRuns {
        let (mut runs, mut index) = (DayRuns::default(), 0u64);
        rows.scan(|row| {
            runs.note(day_of(row), index);
            index += 1;
        });
        runs
    }

    /// How many runs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Visits, in order, the rows of `rows` (which these runs describe) of `day`: only the
    /// chunks holding them are read (a walk of the runs, a few a settlement day).
    pub fn visit<T: BlockEntry>(&self, rows: &ChunkedVec<T>, day: u32, mut visit: impl FnMut(&T)) {
        let index = |at: u64| usize::try_from(at).unwrap_or(usize::MAX);
        for (at, (_, start)) in self.0.iter().enumerate().filter(|(_, (run_day, _))| *run_day == day) {
            let end = self.0.get(at + 1).map_or(rows.len(), |(_, next)| index(*next));
            rows.scan_range(index(*start)..end, &mut visit);
        }
    }

    /// Whether these runs can describe a vector of `len` rows: the first starts at 0 (when there
    /// are rows), each starts after the one before and before the end, and neighbours are of
    /// different days (what `note` makes). A checkpoint whose runs are not is unusable.
    pub fn check(&self, len: usize) -> Result<(), String> {
        let Some(((_, first), (_, last))) = self.0.first().zip(self.0.last()) else {
            return if len == 0 { Ok(()) } else { Err(format!("no runs for {len} rows")) };
        };
        if *first != 0 || *last >= len as u64 {
            return Err(format!("runs from row {first} to row {last} for {len} rows"));
        }
        match self.0.windows(2).find(|pair| pair[1].1 <= pair[0].1 || pair[1].0 == pair[0].0) {
            Some(pair) => Err(format!("run ({}, {}) follows ({}, {})", pair[1].0, pair[1].1, pair[0].0, pair[0].1)),
            None => Ok(()),
        }
    }
}

impl Serialize for DayRuns {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if day_runs_encoded() {
            self.0.serialize(serializer)
        } else {
            serializer.serialize_unit()
        }
    }
}

impl<'de> Deserialize<'de> for DayRuns {
    /// Empty where the format has none (`checkpoint::load` then rebuilds them from the rows).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if day_runs_encoded() {
            Vec::deserialize(deserializer).map(DayRuns)
        } else {
            Ok(DayRuns::default())
        }
    }
}

impl BatchList {
    /// Appends batch `sequence` if it is after the last one (a batch is noted once; sequences
    /// only grow).
    pub fn push(&mut self, sequence: u64) {
        if self.note(sequence) {
            self.append(sequence);
        }
    }

    /// Whether batch `sequence` is after the newest noted, which it becomes: the caller then
    /// calls `append(sequence)`, after other lists' notes if it likes (`ShardState::note_batch`
    /// notes every account of a batch first, asking for their last blocks ahead). Reads nothing
    /// but the list itself.
    pub(crate) fn note(&mut self, sequence: u64) -> bool {
        if self.newest.is_some_and(|newest| newest >= sequence) {
            return false;
        }
        self.newest = Some(sequence);
        if let Some(block) = self.blocks.last() {
            crate::prefetch(block);
        }
        true
    }

    /// Asks for the open (last) block's data, a few lists before `append` writes to it: the
    /// line where `HotArc::as_ptr` points and the next (its count and the block's fields lie
    /// around there; a guess at a layout Rust does not promise, which costs only a useless
    /// hint if wrong). The block's delta bytes are not asked for.
    pub(crate) fn prefetch_open(&self) {
        if let Some(Piece::Hot(hot)) = self.blocks.last().map(|block| &block.piece) {
            let data = HotArc::as_ptr(hot).cast::<u8>();
            crate::prefetch(data.wrapping_sub(8));
            crate::prefetch(data.wrapping_add(48));
        }
    }

    /// Appends batch `sequence` after `note(sequence)` said it is new (a note without its
    /// append would leave the batch out of the index for good).
    pub(crate) fn append(&mut self, sequence: u64) {
        debug_assert_eq!(self.newest, Some(sequence), "append follows its note");
        match self.blocks.last_mut() {
            Some(block) if block.last >= sequence => {}
            Some(block) if block.piece.count() < BATCHES_PER_BLOCK as usize => {
                // Only full blocks leave memory, so this one is in memory (copied first if a
                // snapshot shares it).
                let data = block.piece.data_mut(BatchBlock::clone);
                let mut delta = sequence - data.last;
                while delta >= 0x80 {
                    data.deltas.push((delta as u8) | 0x80);
                    delta >>= 7;
                }
                data.deltas.push(delta as u8);
                data.last = sequence;
                data.count += 1;
                if data.count == BATCHES_PER_BLOCK {
                    data.deltas.shrink_to_fit();
                }
                block.last = sequence;
                self.len += 1;
            }
            _ => {
                let data = BatchBlock { first: sequence, last: sequence, count: 1, deltas: Vec::new() };
                self.blocks.push(BatchBlockRef { first: sequence, last: sequence, piece: Piece::hot(data) });
                self.len += 1;
            }
        }
    }

    /// The last batch noted.
    pub fn last(&self) -> Option<u64> {
        self.blocks.last().map(|block| block.last)
    }

    /// How many batches.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every batch, ascending (reading back every block out of memory).
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.blocks.iter().flat_map(|block| block.block().iter())
    }

    /// The newest `max` batches among the leading ones for which `below` holds (it must hold
    /// for a prefix), ascending, and whether older ones are left. Decodes (and reads back) only
    /// the blocks it returns from and the one where `below` stops holding.
    pub fn window(&self, below: impl Fn(u64) -> bool, max: usize) -> (Vec<u64>, bool) {
        // Blocks wholly below come first; the one where `below` stops holding is decoded.
        let whole = self.blocks.partition_point(|block| below(block.last));
        // Every block but the last is full.
        let upto = match self.blocks.get(whole) {
            Some(block) if below(block.first) => whole * BATCHES_PER_BLOCK as usize + block.block().iter().take_while(|s| below(*s)).count(),
            Some(_) => whole * BATCHES_PER_BLOCK as usize,
            None => self.len,
        };
        let from = upto.saturating_sub(max);
        let mut found = Vec::with_capacity(upto - from);
        let first_block = from / BATCHES_PER_BLOCK as usize;
        let mut index = first_block * BATCHES_PER_BLOCK as usize;
        'blocks: for block in &self.blocks[first_block.min(self.blocks.len())..] {
            if index >= upto {
                break;
            }
            for sequence in block.block().iter() {
                if index >= upto {
                    break 'blocks;
                }
                if index >= from {
                    found.push(sequence);
                }
                index += 1;
            }
        }
        (found, from > 0)
    }

    /// Offers each full block to a checkpoint as a blob (the last, still filling, goes inline;
    /// one out of memory is always named).
    pub fn offer_blobs(&self, sink: &mut dyn BlobSink) {
        for block in &self.blocks {
            if block.piece.count() == BATCHES_PER_BLOCK as usize || matches!(block.piece, Piece::Cold(_)) {
                block.piece.offer(sink);
            }
        }
    }

    /// After a durable checkpoint: moves out of memory each full block it holds as it is now,
    /// and drops the copies read back. Gives how many blocks it moved out.
    pub fn cool(&mut self, durable: &dyn Fn(u64, u64) -> Option<[u8; 32]>, reader: &Arc<dyn BlobRead>) -> usize {
        let mut moved = 0;
        for block in &mut self.blocks {
            if block.piece.count() == BATCHES_PER_BLOCK as usize && block.piece.cool(durable, reader) {
                moved += 1;
            }
            block.piece.uncache();
        }
        moved
    }

    /// Drops the copies of blocks read back.
    pub fn uncache(&mut self) {
        self.blocks.iter_mut().for_each(|block| block.piece.uncache());
    }

    /// How many blocks, and how many of them are out of memory.
    pub fn block_counts(&self) -> (usize, usize) {
        (self.blocks.len(), self.blocks.iter().filter(|block| matches!(block.piece, Piece::Cold(_))).count())
    }

    /// Replaces each placeholder block with the batches of its blob.
    pub fn fill_blobs(&mut self, source: &mut dyn BlobSource) -> Result<(), String> {
        use bincode::Options;
        for (index, block) in self.blocks.iter_mut().enumerate() {
            let (first, last) = (block.first, block.last);
            let Some(placeholder) = block.piece.placeholder() else { continue };
            let Some((bytes, count)) = source.bytes(placeholder.id)? else { continue };
            let data: BatchBlock = crate::journal::codec().deserialize(&bytes).map_err(|e| format!("batch block {index} does not decode: {e}"))?;
            if data.count != count || data.first != first || data.last != last || !data.is_consistent() {
                return Err(format!("batch block {index}'s blob is not the block its reference describes"));
            }
            placeholder.data = data;
            source.filled(placeholder.id, placeholder.version);
        }
        if self.blocks.iter().any(|block| block.piece.count() == 0) {
            return Err("a batch block was left empty".into());
        }
        Ok(())
    }
}

impl PartialEq for BatchList {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for BatchList {}

/// One block of a `BatchList` as format 5 encodes it.
#[derive(Serialize)]
struct BlockOut<'a> {
    first: u64,
    last: u64,
    piece: PieceOut<'a, BatchBlock>,
}

#[derive(Deserialize)]
struct BlockIn {
    first: u64,
    last: u64,
    piece: PieceIn<BatchBlock>,
}

impl Serialize for BatchList {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if batch_pieces() && mode() == Mode::PiecesOut {
            let blocks: Vec<BlockOut<'_>> = self.blocks.iter().map(|b| BlockOut { first: b.first, last: b.last, piece: b.piece.piece_out() }).collect();
            return (self.len as u64, blocks).serialize(serializer);
        }
        let mut seq = serializer.serialize_seq(Some(self.len))?;
        for sequence in self.iter() {
            seq.serialize_element(&sequence)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for BatchList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        if batch_pieces() {
            let (len, blocks) = <(u64, Vec<BlockIn>)>::deserialize(deserializer)?;
            let mut list = BatchList { blocks: Vec::with_capacity(blocks.len()), len: 0, newest: None };
            let last_index = blocks.len().saturating_sub(1);
            for (index, block) in blocks.into_iter().enumerate() {
                let (piece, count) = match block.piece {
                    PieceIn::Inline(data) => {
                        if data.first != block.first || data.last != block.last || !data.is_consistent() {
                            return Err(D::Error::custom(format!("batch block {index} is not what its reference says")));
                        }
                        let count = data.count;
                        (Piece::hot(data), count)
                    }
                    // Only full blocks are written as blobs (`offer_blobs`): the last block, which
                    // takes new batches, is always in memory.
                    PieceIn::Blob { hash, count } if count == BATCHES_PER_BLOCK => {
                        let empty = BatchBlock { first: block.first, last: block.last, count: 0, deltas: Vec::new() };
                        (Piece::from_blob(hash, count, empty), count)
                    }
                    PieceIn::Blob { count, .. } => {
                        return Err(D::Error::custom(format!("batch block {index} is a blob of {count} batches, not a full block")));
                    }
                };
                // Windows count on every block but the last being full, and on ascending blocks.
                let full = count == BATCHES_PER_BLOCK;
                let ordered = block.first <= block.last && list.blocks.last().is_none_or(|previous: &BatchBlockRef| previous.last < block.first);
                if count == 0 || count > BATCHES_PER_BLOCK || (index < last_index && !full) || !ordered {
                    return Err(D::Error::custom(format!("batch block {index} of {} holds {count} batches, or is out of order", last_index + 1)));
                }
                list.blocks.push(BatchBlockRef { first: block.first, last: block.last, piece });
                list.len += count as usize;
            }
            if list.len as u64 != len {
                return Err(D::Error::custom(format!("{} batches in blocks said to hold {len}", list.len)));
            }
            list.newest = list.last();
            return Ok(list);
        }
        struct Batches;
        impl<'de> Visitor<'de> for Batches {
            type Value = BatchList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sequence of batch numbers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut list = BatchList::default();
                while let Some(sequence) = seq.next_element::<u64>()? {
                    if list.last().is_some_and(|last| last >= sequence) {
                        return Err(serde::de::Error::custom("batch numbers out of order"));
                    }
                    list.push(sequence);
                }
                Ok(list)
            }
        }
        deserializer.deserialize_seq(Batches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blobs by placeholder id, and what was filled.
    struct Source {
        blobs: FastMap<u64, (Vec<u8>, u32)>,
        filled: Vec<(u64, u64)>,
    }

    impl Source {
        fn of(blobs: impl IntoIterator<Item = (u64, (Vec<u8>, u32))>) -> Source {
            Source { blobs: blobs.into_iter().collect(), filled: Vec::new() }
        }
    }

    impl BlobSource for Source {
        fn bytes(&mut self, id: u64) -> Result<Option<(Vec<u8>, u32)>, String> {
            Ok(self.blobs.get(&id).cloned())
        }
        fn filled(&mut self, id: u64, version: u64) {
            self.filled.push((id, version));
        }
    }

    /// The bisection by chunks finds what a walk of the items finds, at every point of vectors
    /// of every length around the chunks' edges (session 62).
    #[test]
    fn partition_point_is_the_first_item_not_below() {
        for len in [0, 1, 2, CHUNK_LEN - 1, CHUNK_LEN, CHUNK_LEN + 1, 2 * CHUNK_LEN, 2 * CHUNK_LEN + 3, 3 * CHUNK_LEN + 1] {
            let mut v = ChunkedVec::default();
            for i in 0..len {
                v.push(i);
            }
            let points = [0, 1, 2, CHUNK_LEN - 1, CHUNK_LEN, CHUNK_LEN + 1, 2 * CHUNK_LEN - 1, 2 * CHUNK_LEN, 2 * CHUNK_LEN + 2, 3 * CHUNK_LEN, len, len + 1];
            for point in points {
                let expected = v.iter().position(|item| *item >= point).unwrap_or(len);
                assert_eq!(v.partition_point(|item| *item < point), expected, "length {len}, point {point}");
            }
        }
    }

    #[test]
    fn chunked_vec_crosses_chunks() {
        let mut v = ChunkedVec::default();
        for i in 0..(CHUNK_LEN * 2 + 5) {
            v.push(i);
        }
        assert_eq!(v.len(), CHUNK_LEN * 2 + 5);
        assert_eq!(v.get(CHUNK_LEN), Some(&CHUNK_LEN));
        assert_eq!(v.get(CHUNK_LEN * 2 + 4), Some(&(CHUNK_LEN * 2 + 4)));
        assert_eq!(v.get(CHUNK_LEN * 2 + 5), None);
        *v.get_mut(3).unwrap() = 7;
        assert_eq!(v.iter().nth(3), Some(&7));
        assert_eq!(v.iter().count(), v.len());
    }

    /// The chunks' versions, in order (a chunk's version counts its changes since it was made
    /// or copied).
    fn chunk_versions<T: Clone + Serialize + serde::de::DeserializeOwned + Send + Sync + 'static>(v: &ChunkedVec<T>) -> Vec<u64> {
        v.chunks.iter().map(|piece| if let Piece::Hot(hot) = piece { hot.version } else { u64::MAX }).collect()
    }

    /// `push_with` (the item written straight into the last chunk's room when it is unshared)
    /// against a model: the items as a `Vec`, and each chunk's version as the pushes since it
    /// was made or copied. Across chunks, the first chunk growing, and chunks a snapshot
    /// shares (copied first; the snapshots keep what they had). Items own heap memory.
    #[test]
    fn pushing_what_a_closure_builds_matches_a_model() {
        let mut v: ChunkedVec<String> = ChunkedVec::default();
        let (mut items, mut versions, mut snapshots) = (Vec::new(), Vec::<u64>::new(), Vec::new());
        let mut last_shared = false;
        for i in 0..(CHUNK_LEN * 2 + 7) {
            if i % 1000 == 999 {
                snapshots.push((v.clone(), items.clone()));
                last_shared = true;
            }
            if items.len() % CHUNK_LEN == 0 {
                versions.push(0);
            } else if last_shared {
                *versions.last_mut().unwrap() = 0;
            }
            last_shared = false;
            *versions.last_mut().unwrap() += 1;
            let item = format!("item-{i}");
            v.push_with(|| item.clone());
            items.push(item);
        }
        assert_eq!(v.len(), items.len());
        assert!(v.iter().eq(items.iter()));
        assert_eq!(chunk_versions(&v), versions);
        for (snapshot, then) in &snapshots {
            assert!(snapshot.iter().eq(then.iter()), "a snapshot is what it was");
        }
    }

    /// A `push_with` whose closure panics changes nothing: the length, the items and the
    /// chunk's version are as they were, and the next push lands where it should.
    #[test]
    fn a_push_whose_item_panics_changes_nothing() {
        let mut v: ChunkedVec<String> = ChunkedVec::default();
        for i in 0..10 {
            v.push(i.to_string());
        }
        let versions = chunk_versions(&v);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| v.push_with(|| -> String { panic!("no item") })));
        assert!(outcome.is_err());
        assert_eq!((v.len(), chunk_versions(&v)), (10, versions));
        assert!(v.iter().map(String::as_str).eq((0..10).map(|i| i.to_string()).collect::<Vec<_>>().iter().map(String::as_str)));
        v.push_with(|| "ten".to_string());
        assert_eq!((v.len(), v.get(10).map(String::as_str)), (11, Some("ten")));
    }

    #[test]
    fn a_clone_shares_chunks_and_the_live_side_copies_what_it_changes() {
        let mut live: ChunkedVec<u64> = ChunkedVec::default();
        for i in 0..(CHUNK_LEN * 3 + 10) as u64 {
            live.push(i);
        }
        let snapshot = live.clone();
        assert_eq!(live.shared_chunks(), 4, "a clone copies pointers only");
        live.push(1_000_000);
        *live.get_mut(5).unwrap() = 55;
        assert_eq!(live.shared_chunks(), 2, "the first and the last chunk were copied, the two between still shared");
        assert_eq!((snapshot.len(), snapshot.get(5), snapshot.get(CHUNK_LEN * 3 + 10)), (CHUNK_LEN * 3 + 10, Some(&5), None), "the snapshot is what it was");
        assert_eq!((live.len(), live.get(5), live.get(CHUNK_LEN * 3 + 10)), (CHUNK_LEN * 3 + 11, Some(&55), Some(&1_000_000)));
        drop(snapshot);
        assert_eq!(live.shared_chunks(), 0);
    }

    #[test]
    fn chunked_vecs_encode_as_flat_sequences_and_read_the_old_layout() {
        use bincode::Options;
        let codec = crate::journal::codec;
        let mut v: ChunkedVec<u32> = ChunkedVec::default();
        for i in 0..(CHUNK_LEN as u32 * 2 + 3) {
            v.push(i * 3);
        }
        let bytes = codec().serialize(&v).unwrap();
        assert_eq!(bytes, codec().serialize(&v.iter().copied().collect::<Vec<_>>()).unwrap());
        let back: ChunkedVec<u32> = codec().deserialize(&bytes).unwrap();
        assert_eq!(back, v);
        // Checkpoint format 2 wrote the derived form: { chunks: [[..65,536], ..], len }.
        #[derive(Serialize)]
        struct Old {
            chunks: Vec<Vec<u32>>,
            len: usize,
        }
        let all: Vec<u32> = v.iter().copied().collect();
        let old = Old { chunks: all.chunks(65_536).map(<[u32]>::to_vec).collect(), len: all.len() };
        let old_bytes = codec().serialize(&old).unwrap();
        let read: ChunkedVec<u32> = with_legacy_layout(true, || codec().deserialize(&old_bytes)).unwrap();
        assert_eq!(read, v);
        assert!(!legacy_layout(), "the flag is put back");
        let lying = codec().serialize(&Old { chunks: old.chunks.clone(), len: old.len + 1 }).unwrap();
        assert!(with_legacy_layout(true, || codec().deserialize::<ChunkedVec<u32>>(&lying)).is_err());
    }

    #[test]
    fn order_blocks_behave_as_a_map_share_blocks_and_read_the_old_stripes() {
        use crate::ledger::types::{AccountId, OrderId};
        use bincode::Options;
        let codec = crate::journal::codec;
        let mut live: OrderBlocks<(OrderId, AccountId), u64> = OrderBlocks::default();
        for i in 0..20_000u64 {
            assert_eq!(live.insert((OrderId(i), AccountId(i % 7)), i), None);
        }
        assert_eq!(live.len(), 20_000);
        assert_eq!(live.get(&(OrderId(12_345), AccountId(12_345 % 7))), Some(&12_345));
        assert_eq!(live.get(&(OrderId(12_345), AccountId(0))), None);
        assert_eq!(live.get(&(OrderId(u64::MAX), AccountId(0))), None, "a made-up id finds nothing and allocates nothing");
        assert!(live.get_mut(&(OrderId(u64::MAX - 5), AccountId(0))).is_none());
        let snapshot = live.clone();
        let blocks = live.shared_blocks();
        assert_eq!(blocks, 20_000usize.div_ceil(CHUNK_LEN));
        *live.get_mut(&(OrderId(7), AccountId(0))).unwrap() += 1;
        *live.entry((OrderId(20_001), AccountId(1))).or_insert(0) += 9;
        assert_eq!(live.shared_blocks(), blocks - 2, "only the changed blocks were copied");
        assert_eq!(snapshot.get(&(OrderId(7), AccountId(0))), Some(&7));
        assert_eq!(snapshot.get(&(OrderId(20_001), AccountId(1))), None);
        assert_eq!((live.get(&(OrderId(7), AccountId(0))), live.len()), (Some(&8), 20_001));
        assert!(live.get_mut(&(OrderId(7), AccountId(1))).is_none(), "no entry is made by get_mut");
        assert_eq!(live.len(), 20_001);

        let sorted = |m: &OrderBlocks<(OrderId, AccountId), u64>| {
            let mut all: Vec<_> = m.iter().map(|(k, v)| (*k, *v)).collect();
            all.sort();
            all
        };
        let back: OrderBlocks<(OrderId, AccountId), u64> = codec().deserialize(&codec().serialize(&live).unwrap()).unwrap();
        assert_eq!((sorted(&back), back.len()), (sorted(&live), live.len()));
        // Checkpoint format 2 wrote 64 hash maps (a `StripedMap`); which entry is in which does
        // not matter to the decoder.
        let mut old: Vec<FastMap<(OrderId, AccountId), u64>> = (0..64).map(|_| FastMap::default()).collect();
        live.iter().for_each(|(k, v)| {
            old[(k.0 .0 % 64) as usize].insert(*k, *v);
        });
        let old_bytes = codec().serialize(&old).unwrap();
        let read: OrderBlocks<(OrderId, AccountId), u64> = with_legacy_layout(true, || codec().deserialize(&old_bytes)).unwrap();
        assert_eq!((sorted(&read), read.len()), (sorted(&live), live.len()));
    }

    #[test]
    fn pieces_refer_to_blobs_and_read_back_whole() {
        use bincode::Options;
        let codec = crate::journal::codec;
        let mut v: ChunkedVec<u64> = ChunkedVec::default();
        for i in 0..(CHUNK_LEN as u64 * 2 + 7) {
            v.push(i * 11);
        }
        // Chunk 1 is a blob (as a checkpoint that offered it would have it); 0 and 2 go inline.
        let mut blobs: Vec<(u64, u64, [u8; 32], Vec<u8>)> = Vec::new();
        struct Sink<'a>(&'a mut Vec<(u64, u64, [u8; 32], Vec<u8>)>);
        impl BlobSink for Sink<'_> {
            fn offer(&mut self, id: u64, version: u64, encode: &dyn Fn(&mut Vec<u8>)) {
                let mut bytes = Vec::new();
                encode(&mut bytes);
                self.0.push((id, version, *blake3::hash(&bytes).as_bytes(), bytes));
            }
            fn keep(&mut self, _hash: &[u8; 32]) {}
        }
        v.offer_blobs(&mut Sink(&mut blobs));
        assert_eq!(blobs.len(), 2, "the two full chunks are offered, the last is not");
        let (id, _, hash, bytes) = blobs[1].clone();
        let out: FastMap<u64, (u64, [u8; 32])> = [(id, (0, hash))].into_iter().collect();
        let (encoded, _) = with_layout(Layout::PiecesOut(out), || codec().serialize(&v).unwrap());
        assert!(encoded.len() < codec().serialize(&v).unwrap().len() / 2, "chunk 1 is a reference, not its items");
        let decode = || {
            let (decoded, layout) = with_layout(Layout::PiecesIn(Vec::new()), || codec().deserialize::<ChunkedVec<u64>>(&encoded).unwrap());
            let Layout::PiecesIn(placeholders) = layout else { panic!("layout kept") };
            (decoded, placeholders)
        };
        let (mut filled, placeholders) = decode();
        assert_eq!(placeholders.len(), 1);
        assert_eq!((placeholders[0].hash, placeholders[0].count), (hash, CHUNK_LEN as u32));
        assert_eq!(filled.len(), v.len());
        // Filled from its blob it is the vector again; a blob of the wrong size is refused.
        let mut source = Source::of([(placeholders[0].id, (bytes.clone(), CHUNK_LEN as u32))]);
        filled.fill_blobs(&mut source).unwrap();
        assert_eq!(filled, v);
        assert_eq!(source.filled, vec![(placeholders[0].id, 0)], "the filled chunk is reported (for the next checkpoint's cache)");
        let short = codec().serialize(&vec![1u64; 10]).unwrap();
        let (mut wrong, placeholders) = decode();
        assert!(wrong.fill_blobs(&mut Source::of([(placeholders[0].id, (short, CHUNK_LEN as u32))])).is_err());
        let (mut unfilled, _) = decode();
        assert!(unfilled.fill_blobs(&mut Source::of([])).is_err(), "a placeholder left empty is an error");
        // Pieces that would break indexing (a chunk before the last not full) are refused.
        #[derive(Serialize)]
        enum Piece {
            Inline(Vec<u64>),
        }
        let bad = codec().serialize(&vec![Piece::Inline(vec![1; 3]), Piece::Inline(vec![2; 3])]).unwrap();
        let (result, _) = with_layout(Layout::PiecesIn(Vec::new()), || codec().deserialize::<ChunkedVec<u64>>(&bad));
        assert!(result.is_err());
        assert_eq!(mode(), Mode::Flat, "the layout is put back");
    }

    #[test]
    fn order_blocks_pieces_round_trip_through_blobs() {
        use crate::ledger::types::{AccountId, OrderId};
        use bincode::Options;
        let codec = crate::journal::codec;
        let mut m: OrderBlocks<(OrderId, AccountId), u64> = OrderBlocks::default();
        for i in (0..30_000u64).step_by(3) {
            m.insert((OrderId(i), AccountId(i % 5)), i);
        }
        let mut blobs: FastMap<u64, Vec<u8>> = FastMap::default();
        let mut out: FastMap<u64, (u64, [u8; 32])> = FastMap::default();
        struct Sink<'a>(&'a mut FastMap<u64, Vec<u8>>, &'a mut FastMap<u64, (u64, [u8; 32])>);
        impl BlobSink for Sink<'_> {
            fn offer(&mut self, id: u64, version: u64, encode: &dyn Fn(&mut Vec<u8>)) {
                let mut bytes = Vec::new();
                encode(&mut bytes);
                self.1.insert(id, (version, *blake3::hash(&bytes).as_bytes()));
                self.0.insert(id, bytes);
            }
            fn keep(&mut self, _hash: &[u8; 32]) {}
        }
        m.offer_blobs(&mut Sink(&mut blobs, &mut out));
        assert_eq!(blobs.len(), 30_000usize.div_ceil(CHUNK_LEN));
        let by_hash: FastMap<[u8; 32], Vec<u8>> = out.iter().map(|(a, (_, h))| (*h, blobs[a].clone())).collect();
        let (encoded, _) = with_layout(Layout::PiecesOut(out), || codec().serialize(&m).unwrap());
        let (decoded, layout) = with_layout(Layout::PiecesIn(Vec::new()), || codec().deserialize::<OrderBlocks<(OrderId, AccountId), u64>>(&encoded).unwrap());
        let Layout::PiecesIn(placeholders) = layout else { panic!("layout kept") };
        let mut filled = decoded;
        filled.fill_blobs(&mut Source::of(placeholders.iter().map(|p| (p.id, (by_hash[&p.hash].clone(), p.count))))).unwrap();
        let sorted = |m: &OrderBlocks<(OrderId, AccountId), u64>| {
            let mut all: Vec<_> = m.iter().map(|(k, v)| (*k, *v)).collect();
            all.sort();
            all
        };
        assert_eq!((sorted(&filled), filled.len()), (sorted(&m), m.len()));
        assert_eq!(filled.get(&(OrderId(29_997), AccountId(29_997 % 5))), Some(&29_997));
    }

    #[test]
    fn a_chunk_keeps_its_id_when_changed_in_place_and_gets_a_new_one_when_copied() {
        let mut v: ChunkedVec<u32> = ChunkedVec::default();
        for i in 0..(CHUNK_LEN as u32 + 3) {
            v.push(i);
        }
        let tag = |piece: &Piece<Vec<u32>>| match piece {
            Piece::Hot(hot) => (hot.id, hot.version),
            Piece::Cold(_) => panic!("in memory"),
        };
        let identity = |v: &ChunkedVec<u32>| tag(&v.chunks[0]);
        let (id, version) = identity(&v);
        *v.get_mut(3).unwrap() = 33;
        assert_eq!(identity(&v), (id, version + 1), "changed in place: same id, a new version");
        let snapshot = v.clone();
        *v.get_mut(4).unwrap() = 44;
        let (copied, _) = identity(&v);
        assert_ne!(copied, id, "changed while a snapshot shares it: a copy with an id of its own");
        assert_eq!((tag(&snapshot.chunks[0]), snapshot.get(4)), ((id, version + 1), Some(&4)), "the snapshot's chunk is as it was");
        assert_eq!(tag(&snapshot.chunks[1]), tag(&v.chunks[1]), "a chunk nobody changed is the same chunk in both");
    }

    /// Blobs by hash, as a shard's store holds them, counting reads.
    #[derive(Default)]
    struct Blobs {
        by_hash: std::sync::Mutex<FastMap<[u8; 32], Vec<u8>>>,
        reads: std::sync::atomic::AtomicUsize,
        cached: std::sync::atomic::AtomicUsize,
    }

    impl BlobRead for Blobs {
        fn read(&self, hash: &[u8; 32]) -> Result<Vec<u8>, BlobError> {
            self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.by_hash.lock().unwrap().get(hash).cloned().ok_or_else(|| BlobError::damaged("it is missing"))
        }
        fn cached(&self, bytes: usize) {
            self.cached.fetch_add(bytes, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Blobs {
        fn reads(&self) -> usize {
            self.reads.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// A checkpoint's blob writer: blobs into `Blobs`, (id, version) -> hash as `durable`, and
    /// the hashes kept as they were.
    struct Writer<'a> {
        blobs: &'a Blobs,
        durable: FastMap<u64, (u64, [u8; 32])>,
        kept: Vec<[u8; 32]>,
    }

    impl BlobSink for Writer<'_> {
        fn offer(&mut self, id: u64, version: u64, encode: &dyn Fn(&mut Vec<u8>)) {
            let mut bytes = Vec::new();
            encode(&mut bytes);
            let hash = *blake3::hash(&bytes).as_bytes();
            self.blobs.by_hash.lock().unwrap().insert(hash, bytes);
            self.durable.insert(id, (version, hash));
        }
        fn keep(&mut self, hash: &[u8; 32]) {
            self.kept.push(*hash);
        }
    }

    impl Writer<'_> {
        fn durable(&self) -> impl Fn(u64, u64) -> Option<[u8; 32]> + '_ {
            |id, version| self.durable.get(&id).filter(|(v, _)| *v == version).map(|(_, hash)| *hash)
        }
    }

    /// A day's rows are read through its runs: only the chunks out of memory that hold them are
    /// read back (a statement of one day costs that day, not the history), and each run ends
    /// where the next begins (or at the vector's end).
    #[test]
    fn day_runs_read_back_only_the_chunks_of_their_day() {
        let blobs = Arc::new(Blobs::default());
        let reader: Arc<dyn BlobRead> = blobs.clone();
        let (mut rows, mut runs) = (ChunkedVec::<(u32, u64)>::default(), DayRuns::default());
        // Runs as settlement makes them: day 9, then 4, then 9 again, ..., across chunk bounds.
        // Runs ending on chunk bounds (at 2, 4 and 7 chunks) read nothing past them.
        let spec = [(9u32, CHUNK_LEN + 10), (4, CHUNK_LEN - 10), (9, 2 * CHUNK_LEN), (6, 3 * CHUNK_LEN), (4, 7), (8, 5)];
        for (day, count) in spec {
            for _ in 0..count {
                let index = rows.len() as u64;
                runs.note(day, index);
                rows.push((day, index));
            }
        }
        assert_eq!(runs.len(), spec.len());
        assert_eq!(runs, DayRuns::of_rows(&rows, |row| row.0));
        assert_eq!(runs.check(rows.len()), Ok(()));
        // Runs a sound shard cannot have made are refused (`checkpoint::load`).
        for (bad, len) in [
            (vec![(9, 0), (4, 10)], 5),
            (vec![(9, 1), (4, 10)], 20),
            (vec![(9, 0), (4, 10), (6, 10)], 20),
            (vec![(9, 0), (4, 10), (6, 7)], 20),
            (vec![(9, 0), (9, 10)], 20),
            (vec![], 3),
        ] {
            assert!(DayRuns(bad.clone()).check(len).is_err(), "{bad:?} for {len} rows");
        }
        assert_eq!(DayRuns::default().check(0), Ok(()));
        let mut writer = Writer { blobs: &blobs, durable: FastMap::default(), kept: Vec::new() };
        rows.offer_blobs(&mut writer);
        rows.cool(&writer.durable(), &reader);
        assert!(rows.cold_chunks() >= 4, "{} chunks out", rows.cold_chunks());
        for day in [9, 4, 6, 8, 5] {
            // Each run of the day reads the chunks out of memory it spans (a chunk two runs of
            // the day share is read for each: a scan keeps nothing).
            let (mut expected, mut cold, mut start) = (Vec::new(), 0, 0usize);
            for (d, count) in spec {
                if d == day {
                    expected.extend((start..start + count).map(|index| (d, index as u64)));
                    cold += (start >> CHUNK_BITS..=(start + count - 1) >> CHUNK_BITS).filter(|chunk| !rows.is_resident(chunk << CHUNK_BITS)).count();
                }
                start += count;
            }
            let before = blobs.reads();
            let mut found = Vec::new();
            runs.visit(&rows, day, |row| found.push(*row));
            assert!(found == expected, "day {day}: {} rows found, {} expected", found.len(), expected.len());
            assert_eq!(blobs.reads() - before, cold, "day {day}: only its own chunks out of memory are read");
        }
        assert!(blobs.reads() < 2 * rows.cold_chunks(), "nothing read the whole history");
    }

    #[test]
    fn chunks_leave_memory_after_a_durable_checkpoint_and_come_back_when_used() {
        use bincode::Options;
        let codec = crate::journal::codec;
        let blobs = Arc::new(Blobs::default());
        let reader: Arc<dyn BlobRead> = blobs.clone();
        let mut v: ChunkedVec<u64> = ChunkedVec::default();
        for i in 0..(CHUNK_LEN as u64 * 6 + 5) {
            v.push(i * 3);
        }
        let copy = v.clone();
        let mut writer = Writer { blobs: &blobs, durable: FastMap::default(), kept: Vec::new() };
        v.offer_blobs(&mut writer);
        *v.get_mut(CHUNK_LEN * 3).unwrap() = 1; // changed after the checkpoint: stays in memory
        *v.get_mut(CHUNK_LEN * 3).unwrap() = CHUNK_LEN as u64 * 9;
        assert_eq!(v.cool(&writer.durable(), &reader), 3, "chunks 0, 1 and 2 leave; 3 changed since; 4 and 5 are the newest");
        assert_eq!((v.cold_chunks(), blobs.reads()), (3, 0));
        drop(copy);
        assert_eq!(
            v,
            (0..(CHUNK_LEN as u64 * 6 + 5)).map(|i| i * 3).fold(ChunkedVec::default(), |mut w, i| {
                w.push(i);
                w
            })
        );
        assert_eq!(blobs.reads(), 3, "the comparison read each cold chunk back once");
        assert_eq!((v.get(5), v.get(CHUNK_LEN + 1)), (Some(&15), Some(&((CHUNK_LEN as u64 + 1) * 3))));
        assert_eq!(blobs.reads(), 3, "read back once, then kept");
        v.uncache();
        let mut sum = 0u64;
        v.scan(|item| sum += item);
        assert_eq!(sum, (0..(CHUNK_LEN as u64 * 6 + 5)).map(|i| i * 3).sum::<u64>());
        assert_eq!(blobs.reads(), 6, "a scan reads each cold chunk once");
        v.scan(|_| {});
        assert_eq!(blobs.reads(), 9, "and keeps none of them");
        let mut seen = Vec::new();
        v.scan_from(CHUNK_LEN * 2 - 2, |item| {
            seen.push(*item);
            seen.len() < 4
        });
        assert_eq!(seen, (CHUNK_LEN as u64 * 2 - 2..CHUNK_LEN as u64 * 2 + 2).map(|i| i * 3).collect::<Vec<_>>());

        // A checkpoint refers to cold chunks by their blobs, and a lazy decoding leaves them out.
        let mut writer = Writer { blobs: &blobs, durable: FastMap::default(), kept: Vec::new() };
        v.offer_blobs(&mut writer);
        assert_eq!(writer.kept.len(), 3, "the cold chunks are kept as they are, not encoded again");
        let out: FastMap<u64, (u64, [u8; 32])> = writer.durable.clone();
        let (encoded, _) = with_layout(Layout::PiecesOut(out), || codec().serialize(&v).unwrap());
        let (decoded, layout) = with_layout(Layout::PiecesLazy(reader.clone(), Vec::new()), || codec().deserialize::<ChunkedVec<u64>>(&encoded).unwrap());
        let Layout::PiecesLazy(_, hashes) = layout else { panic!("layout kept") };
        assert_eq!((hashes.len(), decoded.cold_chunks()), (6, 6), "every full chunk's blob, none read");
        let before = blobs.reads();
        assert_eq!(decoded.get(CHUNK_LEN * 5 + 1), Some(&((CHUNK_LEN as u64 * 5 + 1) * 3)));
        assert_eq!(blobs.reads(), before + 1);

        // Changing an item of a cold chunk brings it back into memory as a new chunk.
        *v.get_mut(7).unwrap() = 70;
        assert_eq!((v.get(7), v.cold_chunks()), (Some(&70), 2));
        let mut writer = Writer { blobs: &blobs, durable: FastMap::default(), kept: Vec::new() };
        v.offer_blobs(&mut writer);
        assert_eq!(writer.kept.len(), 2, "the changed chunk is offered to be written again");
    }

    #[test]
    fn a_cold_chunk_whose_blob_is_gone_or_wrong_stops_with_a_storage_fault() {
        let blobs = Arc::new(Blobs::default());
        let reader: Arc<dyn BlobRead> = blobs.clone();
        let mut v: ChunkedVec<u64> = ChunkedVec::default();
        for i in 0..(CHUNK_LEN as u64 * 4) {
            v.push(i);
        }
        let mut writer = Writer { blobs: &blobs, durable: FastMap::default(), kept: Vec::new() };
        v.offer_blobs(&mut writer);
        assert_eq!(v.cool(&writer.durable(), &reader), 2);
        use bincode::Options;
        let hashes: Vec<[u8; 32]> = blobs.by_hash.lock().unwrap().keys().copied().collect();
        for hash in &hashes {
            // Another chunk's bytes under this hash (a mix-up), then nothing at all.
            blobs.by_hash.lock().unwrap().insert(*hash, crate::journal::codec().serialize(&vec![1u64; 5]).unwrap());
        }
        let fault = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| v.get(3).copied())).unwrap_err();
        let fault = fault.downcast_ref::<StorageFault>().expect("a storage fault");
        assert!(hashes.contains(&fault.hash) && fault.reason.contains("5 items where 4096"), "{fault}");
        assert!(fault.to_string().starts_with("storage fault: the history blob "));
        blobs.by_hash.lock().unwrap().clear();
        let fault = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| v.get(CHUNK_LEN + 3).copied())).unwrap_err();
        assert!(fault.downcast_ref::<StorageFault>().is_some_and(|f| f.reason.contains("missing")));
    }

    #[test]
    fn order_blocks_leave_memory_when_unchanged_since_a_durable_checkpoint() {
        use crate::ledger::types::{AccountId, OrderId};
        let blobs = Arc::new(Blobs::default());
        let reader: Arc<dyn BlobRead> = blobs.clone();
        let mut m: OrderBlocks<(OrderId, AccountId), u64> = OrderBlocks::default();
        for i in 0..20_000u64 {
            m.insert((OrderId(i), AccountId(i % 3)), i);
        }
        let mut writer = Writer { blobs: &blobs, durable: FastMap::default(), kept: Vec::new() };
        m.offer_blobs(&mut writer);
        m.insert((OrderId(20_001), AccountId(0)), 1); // the newest block changes after the checkpoint
        assert_eq!(m.cool(&writer.durable(), &reader, 3..4), 3, "blocks 0-2 leave; 3 is where new orders land, 4 changed since");
        assert_eq!((m.cold_blocks(), m.len(), blobs.reads()), (3, 20_001, 0), "counting needs no read");
        assert_eq!(m.get(&(OrderId(4_100), AccountId(4_100 % 3))), Some(&4_100));
        assert_eq!(m.get(&(OrderId(4_101), AccountId(1))), None);
        assert_eq!(blobs.reads(), 1);
        *m.get_mut(&(OrderId(10), AccountId(1))).unwrap() += 5;
        assert_eq!((m.get(&(OrderId(10), AccountId(1))), m.cold_blocks()), (Some(&15), 2), "a changed block is back in memory");
        assert!(m.get_mut(&(OrderId(8_200), AccountId(0))).is_none());
        assert_eq!(m.cold_blocks(), 2, "a miss brings nothing back");
        assert_eq!(m.iter().count(), 20_001);
        // Regression: blocks past the kept range (orders of a shard that runs ahead of this one)
        // stayed in memory for good, growing with the shards' imbalance.
        for i in 0..100u64 {
            m.insert((OrderId(9 * 4096 + i), AccountId(1)), i);
        }
        let mut writer = Writer { blobs: &blobs, durable: FastMap::default(), kept: Vec::new() };
        m.offer_blobs(&mut writer);
        let cold_before = m.cold_blocks();
        assert_eq!(m.cool(&writer.durable(), &reader, 3..5), 2, "0 (changed before this checkpoint) and 9, the block ahead, leave; 3 and 4 are kept");
        assert_eq!(m.cold_blocks(), cold_before + 2);
        assert!(!m.is_resident(&(OrderId(9 * 4096), AccountId(1))));
        m.warm_block(9).unwrap();
        assert!(m.is_resident(&(OrderId(9 * 4096), AccountId(1))), "read back ahead of a batch");
    }

    #[test]
    fn batch_lists_keep_ascending_batches_compactly_and_encode_as_plain_vectors() {
        use bincode::Options;
        let codec = crate::journal::codec;
        let plain: Vec<u64> = (0..2_000u64).map(|i| 3 + i * 2 + (i % 7) * (i % 3) * 1000 + i * i).collect();
        let mut sorted = plain.clone();
        sorted.sort_unstable();
        sorted.dedup();
        let mut list = BatchList::default();
        for sequence in &sorted {
            list.push(*sequence);
            list.push(*sequence); // a batch is noted once
        }
        assert_eq!((list.len(), list.last()), (sorted.len(), sorted.last().copied()));
        assert_eq!(list.iter().collect::<Vec<_>>(), sorted);
        let bytes = codec().serialize(&list).unwrap();
        assert_eq!(bytes, codec().serialize(&sorted).unwrap(), "the encoding of a Vec<u64>: the checkpoint format is unchanged");
        assert_eq!(codec().deserialize::<BatchList>(&bytes).unwrap(), list);
        assert!(codec().deserialize::<BatchList>(&codec().serialize(&vec![5u64, 4]).unwrap()).is_err(), "out of order is refused");
        // Windows: the newest `max` below a bound, as a slice's partition point gives them.
        for bound in [0, 1, sorted[0], sorted[300], sorted[300] + 1, sorted[1_000], u64::MAX] {
            for max in [1, 5, 256, 257, 5_000] {
                let upto = sorted.partition_point(|s| *s < bound);
                let from = upto.saturating_sub(max);
                assert_eq!(list.window(|s| s < bound, max), (sorted[from..upto].to_vec(), from > 0), "bound {bound}, max {max}");
            }
        }
        let heap: usize = list.blocks.iter().map(|b| b.block().deltas.capacity()).sum();
        assert!(heap < sorted.len() * 4, "{heap} bytes of deltas for {} batches", sorted.len());
        assert_eq!(BatchList::default().window(|_| true, 10), (Vec::new(), false));
    }

    /// A batch list of `count` batches (gaps of 1 to 300, so deltas take one or two bytes).
    fn batch_list(count: u64) -> (BatchList, Vec<u64>) {
        let all: Vec<u64> = (0..count)
            .scan(0u64, |at, i| {
                *at += 1 + (i * 7919) % 300;
                Some(*at)
            })
            .collect();
        let mut list = BatchList::default();
        all.iter().for_each(|s| list.push(*s));
        (list, all)
    }

    #[test]
    fn batch_lists_share_blocks_leave_memory_and_read_back_only_the_window() {
        use bincode::Options;
        let codec = crate::journal::codec;
        let (mut list, all) = batch_list(5 * BATCHES_PER_BLOCK as u64 + 10);
        let snapshot = list.clone();
        list.push(all.last().unwrap() + 1);
        assert_eq!(snapshot.len() + 1, list.len(), "the snapshot's last block is its own after a push");
        let blobs = Arc::new(Blobs::default());
        let reader: Arc<dyn BlobRead> = blobs.clone();
        let mut writer = Writer { blobs: &blobs, durable: FastMap::default(), kept: Vec::new() };
        snapshot.offer_blobs(&mut writer);
        assert_eq!(writer.durable.len(), 5, "the full blocks are offered, the one filling is not");
        assert_eq!(list.cool(&writer.durable(), &reader), 5);
        assert_eq!(list.block_counts(), (6, 5));
        let mut expected = all.clone();
        expected.push(all.last().unwrap() + 1);
        // A window of the newest batches reads nothing back; one further back reads its blocks.
        assert_eq!(list.window(|_| true, 11), (expected[expected.len() - 11..].to_vec(), true));
        assert_eq!(blobs.reads(), 0, "the newest block is in memory and the bounds are known");
        let bound = expected[2 * BATCHES_PER_BLOCK as usize + 5];
        let upto = expected.partition_point(|s| *s < bound);
        assert_eq!(list.window(|s| s < bound, 20), (expected[upto - 20..upto].to_vec(), true));
        assert_eq!(blobs.reads(), 2, "the block holding the bound and the one before it");
        assert_eq!(list.iter().collect::<Vec<_>>(), expected);
        // Format 5: blocks named by hash and read back lazily; the last inline.
        let known: FastMap<u64, (u64, [u8; 32])> = FastMap::default();
        let (encoded, _) = with_layout_at(Layout::PiecesOut(known), 5, || codec().serialize(&list).unwrap());
        assert!(encoded.len() < 6 * 100 + 1_100, "references, not batches: {} bytes", encoded.len());
        let lazy = Layout::PiecesLazy(reader.clone(), Vec::new());
        let (decoded, layout) = with_layout_at(lazy, 5, || codec().deserialize::<BatchList>(&encoded).unwrap());
        let Layout::PiecesLazy(_, hashes) = layout else { panic!("layout kept") };
        assert_eq!((hashes.len(), decoded.block_counts()), (5, (6, 5)));
        assert_eq!(decoded, list);
        // A decoded list knows its newest batch: a repeat is refused, the next one taken.
        let (mut decoded, newest) = (decoded, *expected.last().unwrap());
        assert!(!decoded.note(newest));
        decoded.push(newest + 1);
        assert_eq!((decoded.len(), decoded.last()), (list.len() + 1, Some(newest + 1)));
        // Format 4 reads as the plain sequence it was.
        let (old, _) = with_layout_at(Layout::PiecesIn(Vec::new()), 4, || codec().deserialize::<BatchList>(&codec().serialize(&expected).unwrap()).unwrap());
        assert_eq!(old, list);
        // A block whose reference lies about its bounds is refused when decoded inline.
        let mut bad = BatchList::default();
        (1..=3).for_each(|s| bad.push(s));
        bad.blocks[0].first = 0;
        let (encoded, _) = with_layout_at(Layout::PiecesOut(FastMap::default()), 5, || codec().serialize(&bad).unwrap());
        let (result, _) = with_layout_at(Layout::PiecesIn(Vec::new()), 5, || codec().deserialize::<BatchList>(&encoded));
        assert!(result.is_err());
    }

    /// `ShardState::note_batch`'s order: every list of a batch noted (some twice), then asked
    /// for, then appended; the same lists as one `push` at a time, across full blocks.
    #[test]
    fn batch_lists_noted_first_and_appended_later_equal_pushed_ones() {
        let mut noted: Vec<BatchList> = vec![BatchList::default(); 3];
        let mut pushed: Vec<BatchList> = vec![BatchList::default(); 3];
        for sequence in 1..=(2 * BATCHES_PER_BLOCK as u64 + 7) {
            // List 0 every batch, list 1 every other one, list 2 every third; each named twice.
            let named: Vec<usize> = (0..3).filter(|n| sequence.is_multiple_of(*n as u64 + 1)).collect();
            let new: Vec<usize> = named.iter().chain(&named).copied().filter(|n| noted[*n].note(sequence)).collect();
            assert_eq!(new, named, "each list is new to the batch once");
            new.iter().for_each(|n| noted[*n].prefetch_open());
            new.iter().for_each(|n| noted[*n].append(sequence));
            named.iter().chain(&named).for_each(|n| pushed[*n].push(sequence));
        }
        assert_eq!(noted, pushed);
        assert_eq!(noted[0].len(), 2 * BATCHES_PER_BLOCK as usize + 7);
        assert!(noted.iter().zip(&pushed).all(|(a, b)| a.iter().eq(b.iter()) && a.block_counts() == b.block_counts()));
    }

    #[test]
    fn a_batch_block_read_back_with_other_bounds_is_a_storage_fault() {
        let (mut list, _) = batch_list(2 * BATCHES_PER_BLOCK as u64);
        let blobs = Arc::new(Blobs::default());
        let reader: Arc<dyn BlobRead> = blobs.clone();
        let mut writer = Writer { blobs: &blobs, durable: FastMap::default(), kept: Vec::new() };
        list.offer_blobs(&mut writer);
        assert_eq!(list.cool(&writer.durable(), &reader), 2);
        // The first block's blob holds the second block's batches.
        let hashes: Vec<[u8; 32]> = list
            .blocks
            .iter()
            .map(|b| match &b.piece {
                Piece::Cold(c) => c.hash,
                Piece::Hot(_) => unreachable!(),
            })
            .collect();
        let second = blobs.by_hash.lock().unwrap()[&hashes[1]].clone();
        blobs.by_hash.lock().unwrap().insert(hashes[0], second);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| list.window(|_| true, 5_000)));
        let fault = caught.expect_err("stops").downcast::<StorageFault>().expect("a storage fault");
        assert!(fault.damaged && fault.hash == hashes[0], "{fault}");
    }
}
