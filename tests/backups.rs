//! Backups while serving and restore (issue "Bounded state", item 4): a backup taken through
//! `POST /admin/backups` while a platform keeps paying, restored into a fresh directory and
//! served again, holds every order acknowledged before the backup was asked for, with its state,
//! and the ledger's invariants hold; the refusals (outside the root, not empty, tampered files);
//! `clearing backup` through the API and on a stopped server's directory.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::money::{admin_request, error_of, FAST_BANK};
use support::{config_with, signed_post_to, start_configured, Client, Server};

const BINARY: &str = env!("CARGO_BIN_EXE_clearing");
const TOKEN: &str = "backup-operator-token-0123456789abcdef";

/// The default configuration with a fast bank, no nightly run (nothing but the test writes), and
/// `root` as the backup root.
fn config(root: &Path) -> String {
    let root_line = format!("root = \"{}\"", root.display());
    config_with(&[FAST_BANK[0], ("scheduled = true", "scheduled = false"), ("# root = \"/var/backups/clearing\"", root_line.as_str())])
}

/// The same without a backup root: backups through the API are off.
fn config_without_root() -> String {
    config_with(&[FAST_BANK[0], ("scheduled = true", "scheduled = false")])
}

/// Runs the `clearing` binary with `args`; the operator token comes from the environment.
fn clearing(args: &[&str]) -> (bool, String) {
    let output = Command::new(BINARY).args(args).env("CLEARING_ADMIN_TOKEN", TOKEN).output().expect("run clearing");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

fn text(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// An acknowledged payment: its body, the answer, and when the answer came.
struct Acknowledged {
    body: Value,
    answer: Value,
    at: Instant,
}

/// Four funded accounts (both shards) of a new platform.
fn platform_with_accounts<'a>(server: &'a Server) -> (Client<'a>, Vec<String>) {
    let p = Client::create(server, TOKEN, "{\"name\": \"Backed up\"}");
    let accounts: Vec<String> = (0..4).map(|n| p.account(&p.member(&format!("m-{n}"), "Zhang San"))).collect();
    for (n, account) in accounts.iter().enumerate() {
        p.fund(account, "1000.00", &format!("r-{n}"));
    }
    (p, accounts)
}

/// Sends balance payments of 0.01 around the accounts until `stop`, recording each one answered 201.
fn pay_until(base: String, platform: String, secret: String, accounts: Vec<String>, stop: Arc<AtomicBool>, acknowledged: Arc<Mutex<Vec<Acknowledged>>>) {
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let (payer, payee) = (&accounts[n % 4], &accounts[(n + 1) % 4]);
        let body = json!({"out_order_no": format!("load-{n}"), "payer_account_id": payer, "mode": "balance", "amount": "0.01", "currency": "CNY",
            "payees": [{"account_id": payee, "amount": "0.01"}]});
        if let Some((201, false, answer)) = signed_post_to(&base, "/v1/payments", &platform, &secret, &support::fresh_nonce(), &body.to_string()) {
            acknowledged.lock().expect("lock").push(Acknowledged { body, answer, at: Instant::now() });
        }
        n += 1;
    }
}

#[test]
fn a_backup_taken_under_load_restores_every_order_acknowledged_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, root, restored) = (dir.path().join("data"), dir.path().join("backups"), dir.path().join("restored"));
    let server = start_configured(&data, TOKEN, &config(&root));
    let (p, accounts) = platform_with_accounts(&server);

    // A platform keeps paying while the backup is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let load = {
        let (base, platform, secret, accounts) = (server.base.clone(), p.platform.clone(), p.secret.clone(), accounts.clone());
        let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
        std::thread::spawn(move || pay_until(base, platform, secret, accounts, stop, acknowledged))
    };
    let enough = Instant::now() + Duration::from_secs(30);
    while acknowledged.lock().expect("lock").len() < 200 {
        assert!(Instant::now() < enough, "the load never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
    let target = root.join("under-load");
    let asked = Instant::now();
    let (status, summary) = admin_request(&server, "POST", "/admin/backups", TOKEN, Some(&json!({"to": text(&target)})));
    let answered = Instant::now();
    assert_eq!(status, 201, "{summary}");
    // The load goes on after the answer, then stops.
    let more = acknowledged.lock().expect("lock").len() + 50;
    while acknowledged.lock().expect("lock").len() < more {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    load.join().expect("load thread");

    // What the backup says of itself.
    assert_eq!((summary["path"].as_str(), summary["shard_count"].as_u64()), (Some(text(&target)), Some(2)), "{summary}");
    let marks: Vec<u64> = summary["shards"].as_array().expect("shards").iter().map(|s| s["last_sequence"].as_u64().expect("sequence")).collect();
    assert!(marks.iter().all(|m| *m > 0) && summary["files"].as_u64() > Some(3), "{summary}");
    let secrets: Vec<(&str, bool)> =
        summary["secrets"].as_array().expect("secrets").iter().map(|s| (s["secret"].as_str().unwrap(), s["included"] == true)).collect();
    assert_eq!(secrets, [("master_key", true), ("operator_token", false)], "the key lives in the data directory, the token in the environment");
    assert!(summary["secrets"][1]["note"].as_str().unwrap().contains("CLEARING_ADMIN_TOKEN"), "{summary}");
    let (status, listed) = admin_request(&server, "GET", "/admin/backups", TOKEN, None);
    assert_eq!((status, listed["backups"][0]["state"].as_str(), listed["running"].as_bool()), (200, Some("complete"), Some(false)), "{listed}");
    assert_eq!(listed["backups"][0]["summary"]["shards"], summary["shards"]);

    // Refused, naming `to`: outside the root, into the backup just taken, no root-relative tricks.
    let outside = dir.path().join("elsewhere");
    for to in
        [text(&outside).to_string(), text(&target).to_string(), format!("{}/../elsewhere", root.display()), "backups/x".into(), text(&data.join("x")).into()]
    {
        let (status, refused) = admin_request(&server, "POST", "/admin/backups", TOKEN, Some(&json!({ "to": to })));
        assert_eq!((status, refused["error"]["param"].as_str()), (400, Some("to")), "{to}: {refused}");
    }
    assert!(!outside.exists(), "nothing was written outside the root");
    assert_eq!(admin_request(&server, "POST", "/admin/backups", "wrong-token-0123456789abcdef0123", Some(&json!({"to": text(&root.join("x"))}))).0, 401);

    // `clearing backup --url` asks the running server the same way.
    let (ok, printed) = clearing(&["backup", "--url", &server.base, "--to", text(&root.join("by-cli"))]);
    assert!(ok && printed.contains("master_key: included"), "{printed}");
    let (platform, secret) = (p.platform.clone(), p.secret.clone());
    server.stop();

    // Restore into a fresh directory and serve it.
    let (ok, printed) = clearing(&["restore", "--from", text(&target), "--data-dir", text(&restored)]);
    assert!(ok, "{printed}");
    assert!(printed.contains("operator_token: NOT restored") && printed.contains("CLEARING_ADMIN_TOKEN"), "says what to do about the token: {printed}");
    let server = start_configured(&restored, TOKEN, &config(&root));
    let p = Client { server: &server, platform, secret };
    let (status, shards) = server.get("/admin/shards", Some(TOKEN));
    assert_eq!(status, 200);
    let restored_marks: Vec<u64> = shards["shards"].as_array().unwrap().iter().map(|s| s["last_sequence"].as_u64().unwrap()).collect();
    // `clearing restore` checked the marks exactly before any server opened the copy; a server
    // may write a batch or two at its start (acknowledgements, resends), never fewer.
    assert!(restored_marks.iter().zip(&marks).all(|(r, m)| r >= m), "the restored journal holds at least the manifest's batches: {restored_marks:?} {marks:?}");
    let (status, report) = server.get("/admin/invariants", Some(TOKEN));
    assert_eq!((status, report["ok"].as_bool()), (200, Some(true)), "{report}");

    // Every order acknowledged before the backup was asked for is there, as it was answered, and
    // a replay of it answers the same. Orders acknowledged after the answer need not be there.
    let acknowledged = acknowledged.lock().expect("lock");
    let before: Vec<&Acknowledged> = acknowledged.iter().filter(|a| a.at < asked).collect();
    assert!(before.len() >= 200);
    for a in &before {
        let id = a.answer["order_id"].as_str().expect("order id");
        let (status, order) = p.get(&format!("/v1/orders/{id}"));
        assert_eq!(status, 200, "{id} acknowledged before the backup is missing after the restore");
        for field in ["order_id", "out_order_no", "status", "amount", "kind"] {
            assert_eq!(order[field], a.answer[field], "{id}: {field}");
        }
    }
    for a in before.iter().step_by(10) {
        let replay = p.post("/v1/payments", &a.body);
        assert_eq!(replay, (201, true, a.answer.clone()), "a replay of {} answers the same", a.body["out_order_no"]);
    }
    let after = acknowledged.iter().filter(|a| a.at > answered).count();
    assert!(after >= 50, "the load went on after the backup ({after})");
    // The accounts hold exactly what the backup held: every cent accounted for.
    let (status, report) = server.get("/admin/invariants", Some(TOKEN));
    assert_eq!((status, report["ok"].as_bool()), (200, Some(true)), "after the replays: {report}");
    server.stop();
}

#[test]
fn clearing_backup_on_a_stopped_server_and_what_restore_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, backup) = (dir.path().join("data"), dir.path().join("offline"));
    let server = start_configured(&data, TOKEN, &config_without_root());
    let (p, accounts) = platform_with_accounts(&server);
    let pay = json!({"out_order_no": "pay-1", "payer_account_id": accounts[0], "mode": "balance", "amount": "12.34", "currency": "CNY",
        "payees": [{"account_id": accounts[1], "amount": "12.34"}]});
    let (status, _, paid) = p.post("/v1/payments", &pay);
    assert_eq!(status, 201, "{paid}");
    // Without a root the API takes no backup; the listing says so.
    let (status, refused) = admin_request(&server, "POST", "/admin/backups", TOKEN, Some(&json!({"to": text(&backup)})));
    assert_eq!((status, refused["error"]["param"].as_str()), (400, Some("to")), "{refused}");
    let (status, listed) = admin_request(&server, "GET", "/admin/backups", TOKEN, None);
    assert_eq!((status, &listed["root"], &listed["backups"]), (200, &Value::Null, &json!([])));
    // While the server runs, the database is locked: the command says to ask the server.
    let (ok, printed) = clearing(&["backup", "--data-dir", text(&data), "--to", text(&backup)]);
    assert!(!ok && printed.contains("--url"), "{printed}");
    let balances = (p.balances(&accounts[0]), p.balances(&accounts[1]));
    let (platform, secret) = (p.platform.clone(), p.secret.clone());
    server.stop();

    let (ok, printed) = clearing(&["backup", "--data-dir", text(&data), "--to", text(&backup)]);
    assert!(ok && printed.contains("master_key: included"), "{printed}");
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(backup.join("manifest.json")).expect("manifest")).expect("JSON");
    assert_eq!(manifest["shard_count"], 2);
    assert!(manifest["files"].as_array().unwrap().iter().all(|f| f["sha256"].as_str().is_some_and(|h| h.len() == 64)));
    // Refused: a target that is not empty, one inside the data directory.
    let (ok, printed) = clearing(&["backup", "--data-dir", text(&data), "--to", text(&backup)]);
    assert!(!ok && printed.contains("not empty"), "{printed}");
    let (ok, printed) = clearing(&["backup", "--data-dir", text(&data), "--to", text(&data.join("inside"))]);
    assert!(!ok && printed.contains("inside the data directory"), "{printed}");

    // Restore refuses a directory that holds anything, and leaves it as it was.
    let busy = dir.path().join("busy");
    std::fs::create_dir_all(&busy).expect("mkdir");
    std::fs::write(busy.join("keep"), "mine").expect("write");
    let (ok, printed) = clearing(&["restore", "--from", text(&backup), "--data-dir", text(&busy)]);
    assert!(!ok && printed.contains("not empty"), "{printed}");
    assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 1);
    assert_eq!(std::fs::read_to_string(busy.join("keep")).unwrap(), "mine");

    // A tampered copy (one byte of the largest file changed) is refused before anything is written.
    let tampered = dir.path().join("tampered");
    assert!(Command::new("cp").args(["-r", text(&backup), text(&tampered)]).status().expect("cp").success());
    let largest = manifest["files"].as_array().unwrap().iter().max_by_key(|f| f["bytes"].as_u64()).unwrap()["path"].as_str().unwrap().to_string();
    let mut bytes = std::fs::read(tampered.join(&largest)).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(tampered.join(&largest), bytes).expect("write");
    let target = dir.path().join("from-tampered");
    let (ok, printed) = clearing(&["restore", "--from", text(&tampered), "--data-dir", text(&target)]);
    assert!(!ok && printed.contains(&largest) && printed.contains("does not match the manifest"), "{printed}");
    assert!(!target.exists(), "nothing was written");

    // A backup of a journal format this build does not read is refused before anything is
    // written (it was restored, and the server then refused it).
    let future = dir.path().join("future");
    assert!(Command::new("cp").args(["-r", text(&backup), text(&future)]).status().expect("cp").success());
    let mut declared: Value = serde_json::from_str(&std::fs::read_to_string(future.join("manifest.json")).expect("manifest")).expect("JSON");
    declared["journal_format_version"] = json!(99);
    std::fs::write(future.join("manifest.json"), declared.to_string()).expect("write");
    let target = dir.path().join("from-future");
    let (ok, printed) = clearing(&["restore", "--from", text(&future), "--data-dir", text(&target)]);
    assert!(!ok && printed.contains("holds journal format 99"), "{printed}");
    assert!(!target.exists(), "nothing was written");

    // The good copy restores and serves the same balances and order.
    let restored = dir.path().join("restored");
    let (ok, printed) = clearing(&["restore", "--from", text(&backup), "--data-dir", text(&restored)]);
    assert!(ok && printed.contains("master_key: restored into the data directory"), "{printed}");
    assert!(!restored.join("RESTORE-IN-PROGRESS").exists(), "a checked restore leaves no marker");
    refusals_of_a_restore_cut_short(dir.path(), &restored);
    let server = start_configured(&restored, TOKEN, &config_without_root());
    let p = Client { server: &server, platform, secret };
    assert_eq!((p.balances(&accounts[0]), p.balances(&accounts[1])), balances);
    assert_eq!(p.post("/v1/payments", &pay), (201, true, paid), "the order replays as it was answered");
    let mut conflicting = pay.clone();
    conflicting["amount"] = json!("1.00");
    conflicting["payees"][0]["amount"] = json!("1.00");
    assert_eq!(error_of(&p.post("/v1/payments", &conflicting)), (409, Some("idempotency_conflict")));
    let (status, report) = server.get("/admin/invariants", Some(TOKEN));
    assert_eq!((status, report["ok"].as_bool()), (200, Some(true)), "{report}");
    server.stop();
}

/// Runs `clearing` with `args` and no master key in the environment, for at most 30 seconds (a
/// server that starts is killed): whether it exited with success, and what it printed.
fn briefly(args: &[&str]) -> (Option<bool>, String) {
    let mut child = Command::new(BINARY)
        .args(args)
        .env("CLEARING_ADMIN_TOKEN", TOKEN)
        .env_remove("CLEARING_MASTER_KEY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run clearing");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status.success());
        }
        if Instant::now() > deadline {
            child.kill().expect("kill");
            child.wait().expect("reap");
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().expect("output");
    (status, format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
}

/// What a restore cut short leaves (its marker, the database's files, not yet the master key:
/// `clearing restore` copies the database first) is opened by no command; and a database
/// without the master key it was served with is refused by a server rather than given a new
/// key (before session 61 it started with one: every platform secret and channel key changed).
fn refusals_of_a_restore_cut_short(dir: &Path, restored: &Path) {
    let cut = dir.join("cut-short");
    assert!(Command::new("cp").args(["-r", text(restored), text(&cut)]).status().expect("cp").success());
    std::fs::remove_file(cut.join("master-key")).expect("the key restored into the data directory");
    std::fs::write(cut.join("RESTORE-IN-PROGRESS"), "a restore into this directory has not finished\n").expect("marker");
    for args in
        [vec!["serve", "--listen", "127.0.0.1:0", "--data-dir", text(&cut)], vec!["verify", "--data-dir", text(&cut)], vec!["shards", "--data-dir", text(&cut)]]
    {
        let (status, printed) = briefly(&args);
        assert_eq!(status, Some(false), "{args:?}: {printed}");
        assert!(printed.contains("holds a restore that did not finish"), "{args:?}: {printed}");
    }
    std::fs::remove_file(cut.join("RESTORE-IN-PROGRESS")).expect("marker");
    let (status, printed) = briefly(&["serve", "--listen", "127.0.0.1:0", "--data-dir", text(&cut)]);
    assert_eq!(status, Some(false), "{printed}");
    assert!(printed.contains("no master key") && printed.contains("was served with one"), "{printed}");
    assert!(!cut.join("master-key").exists(), "no key was made");
    // A database of a build before the key's check (none stored) that holds platforms: a key
    // generated now is refused too, and removed.
    {
        use storage::Store;
        let store = storage_rocks::RocksStore::open(&cut).expect("open");
        store.delete_range(gateway::secrets::MASTER_KEY_CHECK, &[gateway::secrets::MASTER_KEY_CHECK, b"\0"].concat()).expect("delete");
    }
    let (status, printed) = briefly(&["serve", "--listen", "127.0.0.1:0", "--data-dir", text(&cut)]);
    assert_eq!(status, Some(false), "{printed}");
    assert!(printed.contains("holds platforms made with one"), "{printed}");
    assert!(!cut.join("master-key").exists(), "no key was kept");
    // An earlier build's restore cut short before the database's CURRENT (files are copied in
    // name order) left no marker: a start took the directory for a new one and began an empty
    // ledger among the copied files. Refused now.
    std::fs::remove_file(cut.join("CURRENT")).expect("remove CURRENT");
    let (status, printed) = briefly(&["serve", "--listen", "127.0.0.1:0", "--data-dir", text(&cut)]);
    assert_eq!(status, Some(false), "{printed}");
    assert!(printed.contains("but no CURRENT"), "{printed}");
    assert!(!cut.join("CURRENT").exists(), "no database was made");
}

/// A backup of a database whose journal is damaged (a byte flipped on disk before the copy: the
/// backup's own hashes are the damaged bytes') restores its files, fails the restore's check
/// (recovery and the whole chain, read back from the restored copy) and leaves the directory
/// marked: no command opens it.
#[test]
fn a_restore_whose_database_does_not_recover_stays_marked() {
    use storage::Store;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (ok, printed) = clearing(&["serve", "--once", "--demo", "--data-dir", text(&data)]);
    assert!(ok, "{printed}");
    {
        let store = storage_rocks::RocksStore::open(&data).expect("open");
        let key = engine::journal::batch_key(1, 2);
        let mut batch = store.get(&key).expect("get").expect("batch 2 of shard 1");
        let middle = batch.len() / 2;
        batch[middle] ^= 0x20;
        store.write(&[(&key, &batch)]).expect("write");
    }
    let backup = dir.path().join("backup");
    let (ok, printed) = clearing(&["backup", "--data-dir", text(&data), "--to", text(&backup)]);
    assert!(ok, "{printed}");
    let restored = dir.path().join("restored");
    let (ok, printed) = clearing(&["restore", "--from", text(&backup), "--data-dir", text(&restored)]);
    assert!(!ok && printed.contains("do not start a server"), "{printed}");
    assert!(restored.join("RESTORE-IN-PROGRESS").exists(), "the directory stays marked");
    let (ok, printed) = clearing(&["verify", "--data-dir", text(&restored)]);
    assert!(!ok && printed.contains("holds a restore that did not finish"), "{printed}");
}
