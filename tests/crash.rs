//! Crash test: the real binary runs a mixed workload on RocksDB and is killed with SIGKILL at
//! random moments, many times, then restarted. Every order acknowledged before a kill must be
//! present exactly once afterwards (its order number replays with the same order id), and every
//! invariant must hold, online and from the journal.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BINARY: &str = env!("CARGO_BIN_EXE_clearing");
const KILLS: usize = 12;
const ORDERS: &str = "100000";

/// One acknowledged order: (order id, whether it was a replay).
type Acks = Vec<(String, u64, bool)>;

fn workload(data_dir: &std::path::Path) -> Command {
    let mut command = Command::new(BINARY);
    command.args(["workload", "--orders", ORDERS, "--accounts", "30", "--seed", "11", "--data-dir"]).arg(data_dir).stdout(Stdio::piped()).stderr(Stdio::null());
    // A configuration beside the data directory (the checkpoint test writes one) is used.
    let config = data_dir.with_extension("toml");
    if config.exists() {
        command.arg("--config").arg(config);
    }
    command
}

/// Parses complete `ack KEY ID REPLAYED` lines (a line cut by the kill has no newline and is dropped).
fn parse_acks(bytes: &[u8]) -> Acks {
    let mut acks = Vec::new();
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        if !line.ends_with(b"\n") {
            continue;
        }
        let text = String::from_utf8_lossy(line);
        let parts: Vec<&str> = text.split_whitespace().collect();
        if parts.len() == 4 && parts[0] == "ack" {
            acks.push((parts[1].to_string(), parts[2].parse().expect("order id"), parts[3] == "true"));
        }
    }
    acks
}

/// Runs the workload and kills it after `delay`; returns what it acknowledged before dying.
fn run_and_kill(data_dir: &std::path::Path, delay: Duration) -> Acks {
    let mut child = workload(data_dir).spawn().expect("start workload");
    let stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let mut reader = BufReader::new(stdout);
        loop {
            let chunk = reader.fill_buf().map(|b| b.to_vec()).unwrap_or_default();
            if chunk.is_empty() {
                break;
            }
            reader.consume(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        bytes
    });
    std::thread::sleep(delay);
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    parse_acks(&reader.join().expect("reader"))
}

fn record(seen: &mut HashMap<String, u64>, acks: &Acks, run: usize) {
    for (key, id, _) in acks {
        if let Some(previous) = seen.insert(key.clone(), *id) {
            assert_eq!(previous, *id, "run {run}: order {key} acknowledged as {previous} before, now {id}: executed twice");
        }
    }
}

#[test]
fn sigkill_under_load_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    crash_many_times(&dir.path().join("data"), 2026);
}

/// The same with a checkpoint every few batches, so that kills land while checkpoints are being
/// written (parts without a manifest, a manifest without its pruning) and restarts load one.
#[test]
fn sigkill_during_checkpoints_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let config = include_str!("../config/default.toml").to_string();
    assert!(config.contains("\nevery_batches = 0"), "the default configuration names the checkpoint interval");
    std::fs::write(data_dir.with_extension("toml"), config.replace("\nevery_batches = 0", "\nevery_batches = 3")).expect("write config");
    crash_many_times(&data_dir, 2027);
    // The kills left checkpoints to start from.
    let shards = Command::new(BINARY).arg("shards").arg("--data-dir").arg(&data_dir).output().expect("shards");
    let text = String::from_utf8_lossy(&shards.stdout);
    assert!(shards.status.success() && text.contains("checkpoint at batch"), "{text}{}", String::from_utf8_lossy(&shards.stderr));
}

fn crash_many_times(data_dir: &std::path::Path, seed: u64) {
    let data_dir = data_dir.to_path_buf();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut acknowledged_before_kills = 0;
    let started = Instant::now();
    for run in 0..KILLS {
        // Some kills land during start-up and replay, most in the middle of the order stream.
        let delay = Duration::from_millis(rng.gen_range(5..1500));
        let acks = run_and_kill(&data_dir, delay);
        acknowledged_before_kills += acks.iter().filter(|a| !a.2).count();
        record(&mut seen, &acks, run);
    }
    assert!(acknowledged_before_kills > 0, "the kills never caught the workload acknowledging anything");

    // The last run completes: everything acknowledged before is replayed with the same id.
    let output = workload(&data_dir).stderr(Stdio::piped()).output().expect("final run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "final run failed ({}): {}\n{stdout}", output.status, String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("invariants: ok") && stdout.contains("workload complete"), "{stdout}");
    let finals = parse_acks(&output.stdout);
    let final_keys: HashMap<&str, (u64, bool)> = finals.iter().map(|(k, id, r)| (k.as_str(), (*id, *r))).collect();
    for (key, id) in &seen {
        let (final_id, replayed) = final_keys.get(key.as_str()).unwrap_or_else(|| panic!("acknowledged order {key} is missing"));
        assert_eq!(final_id, id, "order {key} changed id");
        assert!(replayed, "acknowledged order {key} was executed again instead of replayed");
    }
    record(&mut seen, &finals, KILLS);

    // The journal alone proves the books: every entry balanced, balances equal the journal lines.
    let check = Command::new(BINARY).arg("invariants").arg("--data-dir").arg(&data_dir).output().expect("invariants");
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{text}");
    assert!(text.starts_with("invariants: ok"), "{text}");
    eprintln!("{KILLS} kills, {acknowledged_before_kills} orders acknowledged before kills, {} orders in all, {:?}", seen.len(), started.elapsed());
}
