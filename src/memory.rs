//! The process's memory as the allocator sees it, and giving back what it keeps free.
//!
//! glibc's malloc keeps freed memory in its arenas (one per thread that allocates, up to eight
//! a core) and returns it to the kernel only from the top of each heap. The engine frees in
//! large waves (a checkpoint's sealed order numbers, hot chunks once they are cold, the copies a
//! checkpoint encodes), between long-lived allocations, so that most of it stays resident:
//! measured at the end of `clearing bench --transfers 10000000`, 1.22 GB resident for 0.58 GB
//! in use. The `Trimmer` returns it once the free part passes a threshold.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Bytes the allocator has handed out and not taken back (glibc: arenas in use plus mmapped
/// blocks), and the flat tables' own mappings (`engine::ledger::flat::mapped_table_bytes`): the
/// process's own data, without the free memory malloc keeps or RocksDB's mappings.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn heap_in_use_bytes() -> u64 {
    // SAFETY: mallinfo2 takes no arguments and only reads the allocator's own statistics.
    let info = unsafe { libc::mallinfo2() };
    (info.uordblks + info.hblkhd) as u64 + engine::ledger::flat::mapped_table_bytes()
}

/// Resident bytes of this process (Linux `VmRSS`), 0 where unknown.
pub fn resident_bytes() -> u64 {
    status_bytes("VmRSS:")
}

/// Peak resident bytes of this process (Linux `VmHWM`), 0 where unknown.
pub fn peak_resident_bytes() -> u64 {
    status_bytes("VmHWM:")
}

fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()).map_or(0, |kb| kb * 1024)
}

/// Resident bytes not in use by the allocator's callers: mostly free memory malloc keeps (and
/// the program's code and stacks, tens of megabytes).
pub fn resident_not_in_use() -> u64 {
    resident_bytes().saturating_sub(heap_in_use_bytes())
}

/// Returns every whole free page of every arena to the kernel (glibc `malloc_trim(0)`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks the allocator's own arenas, under their locks.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn heap_in_use_bytes() -> u64 {
    0
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

/// The default threshold of resident memory not in use past which the allocator is trimmed.
pub const TRIM_ABOVE_MIB: u64 = 256;

/// The smallest threshold taken (other than 0, never): below it the program's own code and
/// stacks, which no trim gives back, would be most of what is measured.
pub const TRIM_ABOVE_MIB_MIN: u64 = 64;

/// The largest threshold taken (1 TiB).
pub const TRIM_ABOVE_MIB_MAX: u64 = 1 << 20;

/// How often the trimmer looks.
pub const TRIM_EVERY: Duration = Duration::from_secs(2);

/// The least time between two trims. Under sustained load the engine frees and allocates
/// again hundreds of megabytes a few seconds apart (a checkpoint's cycle): at 100 M transfers a
/// trim whenever the residue had grown by 256 MiB ran every 3-4 s, its page faults costing a
/// fifth of the throughput, for a peak only 8 % lower.
pub const TRIM_GAP: Duration = Duration::from_secs(30);

/// A thread that looks every `every` at the resident memory not in use and trims the
/// allocator's free pages when it has grown by `threshold` since the last trim left it (what a
/// trim cannot give back, free space inside pages still in use, stays resident: about 0.7 GB
/// at 100 M transfers), at most once every `gap`. Trimming costs the pages faulted in again
/// when malloc reuses them (a trim at every checkpoint cost about 8 % of `clearing bench`'s
/// throughput at 10 M; see `TRIM_GAP` for 100 M), so it is for the waves of frees a server
/// meets now and then (a burst, a large read), not for every cycle of a sustained load.
pub struct Trimmer {
    trims: Arc<AtomicU64>,
    _thread: Option<Periodic>,
}

impl Trimmer {
    /// Starts the thread; `threshold` 0 starts none (the allocator keeps what it frees), nor
    /// does an allocator other than glibc's.
    pub fn start(threshold: u64, every: Duration, gap: Duration) -> Trimmer {
        let trims = Arc::new(AtomicU64::new(0));
        let counted = trims.clone();
        // What the last trim could not give back, and when it ran.
        let mut floor = 0u64;
        let mut last: Option<std::time::Instant> = None;
        let thread = (threshold > 0 && cfg!(all(target_os = "linux", target_env = "gnu"))).then(|| {
            Periodic::start("trimmer", every, move || {
                // VmRSS first (cheap); the allocator's figures (a walk of every arena under its
                // lock) only when it could be over.
                let rested = last.is_none_or(|at| at.elapsed() >= gap);
                if rested && resident_bytes() > floor + threshold && resident_not_in_use() > floor + threshold {
                    trim();
                    counted.fetch_add(1, Ordering::Relaxed);
                    floor = resident_not_in_use();
                    last = Some(std::time::Instant::now());
                }
            })
        });
        Trimmer { trims, _thread: thread.flatten() }
    }

    /// How many times it trimmed.
    pub fn trims(&self) -> u64 {
        self.trims.load(Ordering::Relaxed)
    }
}

/// Samples the heap in use (`heap_in_use_bytes`) once a second until dropped; keeps the
/// largest figure (`clearing bench`).
pub struct HeapSampler {
    peak: Arc<AtomicU64>,
    _thread: Option<Periodic>,
}

impl HeapSampler {
    pub fn start() -> HeapSampler {
        let peak = Arc::new(AtomicU64::new(0));
        let sampled = peak.clone();
        let thread = Periodic::start("heap-sampler", Duration::from_secs(1), move || {
            sampled.fetch_max(heap_in_use_bytes(), Ordering::Relaxed);
        });
        HeapSampler { peak, _thread: thread }
    }

    /// The largest figure sampled, or the heap in use now if larger.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed).max(heap_in_use_bytes())
    }
}

/// A thread that calls `tick` at once and then every `every`, until dropped (which wakes it
/// and joins it).
struct Periodic {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Periodic {
    /// `None` when the thread cannot be started (the caller goes on without it).
    fn start(name: &str, every: Duration, mut tick: impl FnMut() + Send + 'static) -> Option<Periodic> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    tick();
                    std::thread::park_timeout(every);
                }
            })
            .ok()?;
        Some(Periodic { stop, thread: Some(thread) })
    }
}

impl Drop for Periodic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Memory freed in the middle of the arenas (held there by a live allocation after it) is
    /// free but resident; once it passes the threshold the trimmer gives it back.
    #[test]
    fn the_trimmer_returns_free_memory_past_its_threshold() {
        // Blocks under the mmap threshold, each followed by one that stays.
        let mut freed = Vec::new();
        let mut kept = Vec::new();
        for _ in 0..2_000 {
            freed.push(vec![1u8; 64 << 10]);
            kept.push(vec![1u8; 64]);
        }
        drop(freed);
        // Started after the frees: a trim in the middle of them (its sample taken once half was
        // freed) left the other half, under the threshold again, in memory (flaky under load).
        let trimmer = Trimmer::start(64 << 20, Duration::from_millis(20), Duration::ZERO);
        let before = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while trimmer.trims() == before && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(trimmer.trims() > before, "trimmed after the frees");
        assert!(resident_not_in_use() < 64 << 20, "given back: {} resident not in use", resident_not_in_use());
        // Nothing freed since: no trim again (it trims once the residue grows by the threshold).
        let after = trimmer.trims();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(trimmer.trims(), after, "no trim while nothing more is freed");
        drop(kept);
        drop(trimmer);
        // With a gap, a second wave of frees right after waits for it.
        let spaced = Trimmer::start(64 << 20, Duration::from_millis(20), Duration::from_secs(3600));
        for _ in 0..2 {
            let mut freed = Vec::new();
            let mut kept = Vec::new();
            for _ in 0..2_000 {
                freed.push(vec![1u8; 64 << 10]);
                kept.push(vec![1u8; 64]);
            }
            drop(freed);
            std::thread::sleep(Duration::from_millis(300));
        }
        assert_eq!(spaced.trims(), 1, "the first wave trimmed, the second waits for the gap");
        let idle = Trimmer::start(0, Duration::from_millis(1), Duration::ZERO);
        assert!(idle._thread.is_none() && idle.trims() == 0, "threshold 0 starts no thread");
    }
}
