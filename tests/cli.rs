//! End-to-end tests of the binary's commands against a real RocksDB directory.

use std::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_clearing");

fn run(args: &[&str], data_dir: &std::path::Path) -> (bool, String) {
    let output = Command::new(BINARY).args(args).arg("--data-dir").arg(data_dir).output().expect("run clearing");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[test]
fn serve_runs_the_demo_durably_and_restarts_into_the_same_books() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, first) = run(&["serve", "--once", "--demo"], dir.path());
    assert!(ok, "{first}");
    assert!(first.contains("invariants: ok"), "{first}");
    // 100,000.00 in, 80,000.00 into escrow (76,000.00 company, 4,000.00 platform split), released
    // in two stages, matured, then the company withdrew 50,000.00 with a 2.00 fee on top.
    let line = |who: &str| first.lines().find(|l| l.starts_with(&format!("demo {who}"))).unwrap_or_default().to_string();
    assert!(line("homeowner").ends_with("settled 20000.00 unsettled 0.00 frozen 0.00"), "{first}");
    assert!(line("company").ends_with("settled 25998.00 unsettled 0.00 frozen 0.00"), "{first}");
    assert!(line("platform").ends_with("settled 4000.00 unsettled 0.00 frozen 0.00"), "{first}");
    // The disk warnings say what the store's checks say of this directory, on any machine.
    let warned = |about: &str| first.lines().any(|l| l.starts_with("warning: the data directory's") && l.contains(about));
    assert_eq!(warned("online discard"), storage_rocks::online_discard(dir.path()).is_some(), "{first}");
    assert_eq!(warned("reads ahead"), storage_rocks::read_ahead(dir.path()).is_some_and(|disk| disk.too_far()), "{first}");
    // A restart replays the journal; the demo's order numbers replay instead of paying twice.
    let (ok, second) = run(&["serve", "--once", "--demo"], dir.path());
    assert!(ok, "{second}");
    let balances = |text: &str| text.lines().filter(|l| l.starts_with("demo ")).map(str::to_string).collect::<Vec<_>>();
    assert_eq!(balances(&first), balances(&second));
    let (ok, report) = run(&["invariants"], dir.path());
    assert!(ok && report.starts_with("invariants: ok"), "{report}");
    let (ok, shards) = run(&["shards"], dir.path());
    assert!(ok && shards.contains("shard 0:") && shards.contains("shard 1:"), "{shards}");
    assert!(shards.contains("6021 fee_income      CNY                 2.00"), "{shards}");
}

#[test]
fn invariants_refuses_a_missing_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, text) = run(&["invariants"], &dir.path().join("nothing-here"));
    assert!(!ok, "{text}");
}

#[test]
fn bench_runs_small_and_reports_its_lines() {
    // The benchmark also runs as a test with small inputs, so it never rots; no speed is asserted.
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(BINARY)
        .args(["bench", "--accounts", "200", "--transfers", "30000", "--batch", "1024", "--distribution", "uniform", "--shards", "2", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("bench");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}{}", String::from_utf8_lossy(&output.stderr));
    assert!(text.contains("invariants_ok: true"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("transfers_per_second: ")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("batch_latency_ms p1 p50 p99 p100: ")), "{text}");
    let read_ahead = storage_rocks::read_ahead(dir.path()).map_or("none".to_string(), |disk| format!("{} ({})", disk.kib, disk.disk));
    assert!(text.contains(&format!("read_ahead_kib: {read_ahead}")), "{text}");
}

/// Paced (`--rate`), the bench offers the rate and no more: of 30 batches of 1,000 at 20,000
/// transfers a second the last is due 29/20 s in, so the run cannot take less. Every batch is
/// reported once, during a checkpoint or between checkpoints (the flag itself is tested in
/// engine/tests/checkpoints.rs, `the_in_flight_flag_...`).
#[test]
fn bench_paced_offers_its_rate_and_splits_latency_by_checkpoints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(BINARY)
        .args(["bench", "--accounts", "200", "--transfers", "30000", "--batch", "1000", "--distribution", "uniform", "--shards", "2"])
        .args(["--rate", "20000", "--checkpoint-every-batches", "5", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("bench");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}{}", String::from_utf8_lossy(&output.stderr));
    assert!(text.contains("invariants_ok: true") && text.contains(" rate=20000 "), "{text}");
    let field = |prefix: &str, index: usize| -> f64 {
        let line = text.lines().find_map(|l| l.split_once(prefix).map(|(_, rest)| rest)).unwrap_or_else(|| panic!("no {prefix:?} in {text}"));
        line.split_whitespace().nth(index).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{prefix:?} {index} in {text}"))
    };
    assert!(field("elapsed_s: ", 0) >= 29.0 / 20.0, "{text}");
    let during = field("batch_latency_ms during_checkpoints batches p50 p99 p100: ", 0);
    let between = field("batch_latency_ms between_checkpoints batches p50 p99 p100: ", 0);
    assert_eq!(during + between, 30.0, "each of the 30 batches in one part: {text}");
    // Checkpoints during the run, besides the one of the stop.
    assert!(field("shard 0 checkpoints: ", 0) >= 2.0, "{text}");

    // A schedule longer than a year is refused before anything runs, not a panic.
    let refused = Command::new(BINARY)
        .args(["bench", "--transfers", "18446744073709551615", "--rate", "1", "--data-dir"])
        .arg(dir.path().join("never"))
        .output()
        .expect("bench");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("more than a year"), "{}", String::from_utf8_lossy(&refused.stderr));
    // Regression (helper 109): an unpaced run of 2^63 transfers overflowed sizing them (a panic).
    let refused =
        Command::new(BINARY).args(["bench", "--transfers", "9223372036854775808", "--data-dir"]).arg(dir.path().join("never")).output().expect("bench");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("at most"), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(!dir.path().join("never").exists(), "nothing made");

    // No submission in flight would wait forever (it hung before): refused as the arguments are read.
    let refused = Command::new(BINARY).args(["bench", "--in-flight", "0", "--data-dir"]).arg(dir.path().join("never")).output().expect("bench");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--in-flight"), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(!dir.path().join("never").exists(), "nothing made");
}
