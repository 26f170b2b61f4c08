//! `GET /v1/orders` with filters that match few orders among more than a shard's scan budget
//! (`LIST_SCAN_MAX` = 100,000): the few are answered on the first page with no cursor, because
//! the shard's indexes (per kind, exceptional statuses, each account's chain, `to` as a start)
//! lead straight to them; and an account's orders page completely by cursor.

mod support;

use serde_json::{json, Value};
use support::money::FAST_BANK;
use support::*;

const TOKEN: &str = "order-listing-operator-token-0123456789";
/// More balance payments than one scan examines (`orders::LIST_SCAN_MAX`), in bulk requests.
const BULK_REQUESTS: usize = 13;
const PER_REQUEST: usize = 8_189;

fn page(p: &Client, path: &str) -> (Vec<Value>, Option<String>) {
    let (status, body) = p.get(path);
    assert_eq!(status, 200, "{path}: {body}");
    (body["orders"].as_array().expect("orders").clone(), body["next_cursor"].as_str().map(str::to_string))
}

fn ids(orders: &[Value]) -> Vec<&str> {
    orders.iter().map(|o| o["order_id"].as_str().expect("order_id")).collect()
}

/// Every order of a listing, following its cursor; also how many pages it took.
fn walk(p: &Client, path: &str) -> (Vec<Value>, usize) {
    let (mut all, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
    loop {
        let url = match &cursor {
            Some(cursor) => format!("{path}&cursor={cursor}"),
            None => path.to_string(),
        };
        let (orders, next) = page(p, &url);
        all.extend(orders);
        pages += 1;
        match next {
            Some(next) => cursor = Some(next),
            None => return (all, pages),
        }
    }
}

#[test]
fn few_matches_among_more_than_a_scan_are_found_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_with(&[FAST_BANK[0], ("shard_count = 2", "shard_count = 1")]);
    let server = start_configured(dir.path(), TOKEN, &config);
    let p = Client::create(&server, TOKEN, "{\"name\": \"listing\"}");
    let (a, b, c) = (p.account(&p.member("m-a", "A")), p.account(&p.member("m-b", "B")), p.account(&p.member("m-c", "C")));
    let funding_a = p.fund(&a, "100000.00", "fund-a");
    let funding_c = p.fund(&c, "10.00", "fund-c");
    let payment = json!({"out_order_no": "rare", "payer_account_id": c, "mode": "balance", "amount": "1.00", "currency": "CNY", "payees": [{"account_id": b, "amount": "1.00"}]});
    let (status, _, rare) = p.post("/v1/payments", &payment);
    assert_eq!(status, 201, "{rare}");
    let rare = rare["order_id"].as_str().unwrap().to_string();
    let (status, _, refund) = p.post("/v1/refunds", &json!({"out_order_no": "r-1", "payment_order_id": rare, "amount": "0.40", "payee_account_id": b}));
    assert_eq!(status, 201, "{refund}");
    let refund = refund["order_id"].as_str().unwrap().to_string();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let before_the_flood = gateway::orders::format_time(now_micros());
    std::thread::sleep(std::time::Duration::from_millis(5));

    for request in 0..BULK_REQUESTS {
        let operations: Vec<Value> = (0..PER_REQUEST)
            .map(|k| json!({"op": "payment", "body": {"out_order_no": format!("p{request}-{k}"), "payer_account_id": a, "mode": "balance", "amount": "0.01", "currency": "CNY", "payees": [{"account_id": b, "amount": "0.01"}]}}))
            .collect();
        let (status, _, reply) = p.post("/v1/bulk", &json!({"operations": operations}));
        assert_eq!(status, 200);
        assert!(reply["results"].as_array().unwrap().iter().all(|r| r["status"] == 201), "a payment was refused");
    }
    let flood = BULK_REQUESTS * PER_REQUEST;

    // A rare kind and an exceptional status: the one order, and no cursor to follow.
    let (orders, next) = page(&p, "/v1/orders?kind=refund&limit=50");
    assert_eq!((ids(&orders), next), (vec![refund.as_str()], None));
    let (orders, next) = page(&p, "/v1/orders?status=partially_refunded&limit=50");
    assert_eq!((ids(&orders), next), (vec![rare.as_str()], None));
    let (orders, next) = page(&p, "/v1/orders?kind=withdrawal&limit=50");
    assert_eq!((orders.len(), next), (0, None), "none at all: said at once");
    let (orders, next) = page(&p, "/v1/orders?kind=recharge&limit=50");
    assert_eq!((ids(&orders), next), (vec![funding_c.as_str(), funding_a.as_str()], None));

    // One account's orders, newest first, one page at a time by cursor.
    let (orders, next) = page(&p, &format!("/v1/orders?account_id={c}&limit=1"));
    assert_eq!(ids(&orders), [rare.as_str()]);
    let (orders, next) = page(&p, &format!("/v1/orders?account_id={c}&limit=1&cursor={}", next.expect("a second page")));
    assert_eq!((ids(&orders), next), (vec![funding_c.as_str()], None));
    let (orders, next) = page(&p, &format!("/v1/orders?account_id={c}&kind=payment&limit=50"));
    assert_eq!((ids(&orders), next), (vec![rare.as_str()], None));

    // `to` starts the scan below the flood.
    let (orders, next) = page(&p, &format!("/v1/orders?kind=payment&to={before_the_flood}&limit=50"));
    assert_eq!((ids(&orders), next), (vec![rare.as_str()], None));
    let (orders, _) = page(&p, &format!("/v1/orders?to={before_the_flood}&limit=50"));
    assert_eq!(ids(&orders), [refund.as_str(), rare.as_str(), funding_c.as_str(), funding_a.as_str()]);

    // The payer of the flood: every one of its orders exactly once, newest first, page by page.
    let (orders, pages) = walk(&p, &format!("/v1/orders?account_id={a}&limit=500"));
    assert_eq!(orders.len(), flood + 1, "the flood and the funding");
    assert_eq!(pages, (flood + 1).div_ceil(500));
    assert_eq!(orders.last().unwrap()["order_id"], funding_a.as_str());
    let mut seen: Vec<&str> = ids(&orders);
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), flood + 1, "no order twice");
    let created =
        |o: &Value| gateway::orders::parse_time(o["created_at"].as_str().expect("created_at"), "created_at").unwrap_or_else(|_| panic!("not a time: {o}"));
    assert!(orders.windows(2).all(|w| created(&w[0]) >= created(&w[1])), "newest first");
    server.stop();
}

fn now_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_micros() as u64
}
