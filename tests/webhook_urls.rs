//! Webhook URLs cannot aim deliveries at the inside: https only (plain http to loopback only
//! under the development switch), no credentials, no private, loopback, link-local or reserved
//! address, checked when the URL is set and again at each delivery on the resolved addresses.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::money::*;
use support::*;

const TOKEN: &str = "webhook-urls-operator-token-0123456789abcdef";

#[test]
fn webhook_urls_must_be_https_to_a_public_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_configured(dir.path(), TOKEN, &config_with(&[]));
    let p = Client::create(&server, TOKEN, "{\"name\": \"Hooks\"}");
    let refused = [
        "http://169.254.169.254/latest/meta-data/",
        "https://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "https://10.0.0.1/",
        "https://192.168.0.10/hook",
        "https://100.64.1.1/hook",
        "http://127.0.0.1:1/",
        "https://127.0.0.1:1/",
        "https://localhost/hook",
        "https://[::1]/hook",
        "https://[fd12::1]/hook",
        "https://[fe80::1]/hook",
        "https://[::ffff:10.0.0.1]/hook",
        "https://0.0.0.0/hook",
        "http://hooks.example.com/hook",
        "https://user:password@hooks.example.com/hook",
        "ftp://hooks.example.com/",
        "hooks.example.com/hook",
    ];
    for url in refused {
        let reply = p.post("/v1/webhook", &json!({"url": url}));
        assert_eq!((error_of(&reply), reply.2["error"]["param"].as_str()), ((400, Some("invalid_request")), Some("url")), "{url}: {}", reply.2);
    }
    assert_eq!(p.get("/v1/webhook").1["url"], serde_json::Value::Null, "nothing refused was stored");
    // A public https URL is taken (this platform has no events: nothing is sent anywhere).
    let (status, _, set) = p.post("/v1/webhook", &json!({"url": "https://hooks.example.com/clearing"}));
    assert_eq!((status, set["url"].as_str()), (200, Some("https://hooks.example.com/clearing")), "{set}");
    assert_eq!(p.post("/v1/webhook", &json!({"url": null})).0, 200);
    server.stop();
}

/// A plain HTTP endpoint on 127.0.0.1 that answers 200 and counts the requests it got.
fn counting_endpoint() -> (u16, Arc<AtomicUsize>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let counted = counted.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = value.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                }
            });
        }
    });
    (port, count)
}

#[test]
fn a_host_that_resolves_to_loopback_gets_no_delivery_without_the_development_switch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let developing = config_with(&[FAST_BANK[0], ("allow_insecure_loopback = false", "allow_insecure_loopback = true")]);
    let (port, count) = counting_endpoint();
    // Set under the development switch: `localhost` names loopback.
    let server = start_configured(dir.path(), TOKEN, &developing);
    let p = Client::create(&server, TOKEN, "{\"name\": \"Hooks\"}");
    assert_eq!(p.post("/v1/webhook", &json!({"url": format!("http://localhost:{port}/hook")})).0, 200);
    let (platform, secret) = (p.platform.clone(), p.secret.clone());
    drop(p);
    server.stop();

    // Without the switch the stored URL is refused at delivery: its host resolves to loopback.
    let server = start_configured(dir.path(), TOKEN, &config_with(FAST_BANK));
    let p = Client { server: &server, platform: platform.clone(), secret: secret.clone() };
    let account = p.account(&p.member("m-a", "Zhang San"));
    p.fund(&account, "10.00", "r-1");
    assert!(p.get("/v1/events").1["events"].as_array().unwrap().len() >= 2);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(count.load(Ordering::SeqCst), 0, "a delivery reached loopback without the switch");
    drop(p);
    server.stop();

    // The events were waiting: with the switch they are delivered (the wait above was long enough).
    let server = start_configured(dir.path(), TOKEN, &developing);
    let deadline = Instant::now() + Duration::from_secs(30);
    while count.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "the events were never delivered with the switch");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.get("/healthz", None).0, 200);
    server.stop();
}

/// A plain HTTP endpoint on 127.0.0.1 that answers 200 and notes when each request arrived.
fn timing_endpoint() -> (u16, Arc<std::sync::Mutex<Vec<Instant>>>) {
    let (port, count) = counting_endpoint();
    let arrivals = Arc::new(std::sync::Mutex::new(Vec::new()));
    let noted = arrivals.clone();
    std::thread::spawn(move || {
        let mut seen = 0;
        loop {
            let now = count.load(Ordering::SeqCst);
            while seen < now {
                noted.lock().expect("arrivals").push(Instant::now());
                seen += 1;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    (port, arrivals)
}

#[test]
fn a_platform_gets_its_own_deliveries_per_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Platform plt_1 may have 4 deliveries a second, everyone else the default 200.
    let config = config_with(&[
        FAST_BANK[0],
        ("allow_insecure_loopback = false", "allow_insecure_loopback = true"),
        ("per_platform = {}", "per_platform = { plt_1 = 4 }"),
    ]);
    let server = start_configured(dir.path(), TOKEN, &config);
    let (slow, fast) = (Client::create(&server, TOKEN, "{\"name\": \"Slow\"}"), Client::create(&server, TOKEN, "{\"name\": \"Fast\"}"));
    let ((slow_port, slow_arrivals), (fast_port, fast_arrivals)) = (timing_endpoint(), timing_endpoint());
    for (client, port) in [(&slow, slow_port), (&fast, fast_port)] {
        let account = client.account(&client.member("m-a", "Zhang San"));
        for number in 0..3 {
            client.fund(&account, "1.00", &format!("r-{number}"));
        }
        assert_eq!(client.post("/v1/webhook", &json!({"url": format!("http://127.0.0.1:{port}/hook")})).0, 200);
    }
    // Three recharges: six events each (pending, succeeded).
    let deadline = Instant::now() + Duration::from_secs(30);
    while slow_arrivals.lock().unwrap().len() < 6 || fast_arrivals.lock().unwrap().len() < 6 {
        assert!(Instant::now() < deadline, "not every event was delivered");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Six deliveries at most 4 a second take at least 5 intervals of 250 ms from the first start
    // to the last (an arrival may lag its start, so allow one interval less).
    let slow_arrivals = slow_arrivals.lock().unwrap().clone();
    let span = *slow_arrivals.last().unwrap() - slow_arrivals[0];
    assert!(span >= Duration::from_millis(1000), "plt_1's six deliveries came within {span:?}");
    assert_eq!(fast_arrivals.lock().unwrap().len(), 6);
    drop((slow, fast));
    server.stop();
}
