//! End-to-end tests of the load generator (`clearing load`) against a real server.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const FAST_BANK: &[(&str, &str)] = &[("latency_ms = 200", "latency_ms = 20")];

/// Runs `clearing load` with `args` and returns its standard output; fails the test if it has
/// not ended within `limit` (a hang, not a speed target: a healthy run takes a few seconds).
fn load(server: &Server, token: &str, args: &[&str], limit: Duration, output: &std::path::Path) -> String {
    let file = std::fs::File::create(output).expect("output file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_clearing"))
        .args(["load", "--url", &server.base, "--admin-token", token])
        .args(args)
        .stdout(file)
        .stderr(Stdio::null())
        .spawn()
        .expect("run the load generator");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`clearing load {}` still running after {} s: {}", args.join(" "), limit.as_secs(), std::fs::read_to_string(output).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(output).expect("output");
    assert!(status.success(), "`clearing load {}` failed: {stdout}", args.join(" "));
    stdout
}

#[test]
fn the_load_generator_drives_a_server_in_both_modes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "load-token-1-0123456789abcdef0123456789abcdef";
    let server = start_configured(&dir.path().join("data"), token, &config_with(FAST_BANK));
    for mode in ["single", "bulk"] {
        let args = ["--mode", mode, "--concurrency", "4", "--orders", "300", "--accounts", "20"];
        let stdout = load(&server, token, &args, Duration::from_secs(120), &dir.path().join(format!("{mode}.out")));
        assert!(stdout.contains("orders: 300 accepted, 0 refused"), "{stdout}");
        for line in ["orders_per_second: ", "latency_ms p50 p99 p100: ", "listing_ms p50 p99 p100: "] {
            assert!(stdout.lines().any(|l| l.starts_with(line)), "no {line:?} in {stdout}");
        }
    }
    let (_, report) = server.get("/admin/invariants", Some(token));
    assert_eq!(report["ok"], true, "{report}");
    server.stop();
}

/// Regression: a second run against a server that just took a large one waited forever after
/// funding. Its wait for pending recharges read only the first page of the listing, and the
/// listing scanned every platform's orders, so with more than 100,000 recent orders of the first
/// run on a shard the page came back empty with a cursor, again and again.
#[test]
fn a_second_load_run_after_a_large_one_starts_its_payments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "load-token-2-0123456789abcdef0123456789abcdef";
    let server = start_configured(&dir.path().join("data"), token, &config_with(FAST_BANK));
    // 300,000 payments over two shards: more than one listing scan's worth (100,000) on each.
    let first = ["--mode", "bulk", "--concurrency", "4", "--orders", "300000", "--accounts", "100"];
    let stdout = load(&server, token, &first, Duration::from_secs(300), &dir.path().join("first.out"));
    assert!(stdout.contains("orders: 300000 accepted, 0 refused"), "{stdout}");
    let second = ["--mode", "single", "--concurrency", "4", "--orders", "500", "--accounts", "50"];
    let stdout = load(&server, token, &second, Duration::from_secs(90), &dir.path().join("second.out"));
    assert!(stdout.contains("orders: 500 accepted, 0 refused"), "{stdout}");
    let (_, report) = server.get("/admin/invariants", Some(token));
    assert_eq!(report["ok"], true, "{report}");
    server.stop();
}
