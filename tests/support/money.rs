//! Helpers of the money tests, shared by their files: a fast bank simulator, error codes,
//! cards verified by their micro-deposit, business dates, settlement runs, operator requests.

use serde_json::json;

use super::{answer, now, Client, Server};

/// Replacements for `config_with`: the bank simulator answers after 20 ms instead of 200, and
/// settlement runs by hand may name up to three days ahead (the tests of T+N and auto-confirm
/// run tomorrow's settlement for the nights in between; production allows none).
pub const FAST_BANK: &[(&str, &str)] = &[("latency_ms = 200", "latency_ms = 20"), ("days_ahead_max = 0", "days_ahead_max = 3")];

/// The status and the error code of a signed POST's reply (`Client::post`).
pub fn error_of(reply: &(u16, bool, serde_json::Value)) -> (u16, Option<&str>) {
    (reply.0, reply.2["error"]["code"].as_str())
}

/// Reads the micro-deposit on a card's statement at the simulated bank, as its holder would.
pub fn micro_deposit(server: &Server, card_no: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, statement) = server.sim_get(&format!("/sim/cards/{card_no}/transactions"));
        assert_eq!(status, 200);
        if let Some(line) = statement["transactions"].as_array().unwrap().iter().find(|t| t["remark"] == "card verification deposit") {
            return line["amount"].as_str().unwrap().to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no micro-deposit on {card_no}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Binds and verifies a card for an account, returning its id.
pub fn verified_card(p: &Client, server: &Server, account: &str, card_no: &str, name: &str, id_number: &str) -> String {
    let (status, _, card) = p.post(
        &format!("/v1/accounts/{account}/cards"),
        &json!({"out_order_no": format!("card-{card_no}"), "card_no": card_no, "holder_name": name, "id_number": id_number, "phone": "13800138000"}),
    );
    assert_eq!(status, 201, "{card}");
    let card_id = card["card_id"].as_str().unwrap().to_string();
    let deposit = micro_deposit(server, card_no);
    assert_eq!(p.post(&format!("/v1/accounts/{account}/cards/{card_id}/verify"), &json!({"amount": deposit})).0, 200);
    card_id
}

/// The date `days_ahead` days after today in China Standard Time (the default business day).
pub fn business_date(days_ahead: i64) -> String {
    civil_date((now() + 8 * 3600).div_euclid(86_400) + days_ahead)
}

/// `seconds` since 1970 as RFC 3339 in UTC (`2026-12-07T08:30:05Z`).
pub fn rfc3339_utc(seconds: i64) -> String {
    let of_day = seconds.rem_euclid(86_400);
    format!("{}T{:02}:{:02}:{:02}Z", civil_date(seconds.div_euclid(86_400)), of_day / 3_600, of_day / 60 % 60, of_day % 60)
}

/// The civil date (`YYYY-MM-DD`) of `days` since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Runs the nightly settlement for `date` (`YYYY-MM-DD`) through the operator API.
pub fn settle(server: &Server, token: &str, date: &str) -> (u16, serde_json::Value) {
    let request = ureq::post(&format!("{}/admin/settlements", server.base)).set("Authorization", &format!("Bearer {token}"));
    let response = answer(request.send_string(&json!({"business_date": date}).to_string()), "settle");
    (response.status(), response.into_json().expect("JSON"))
}

/// A non-negative amount with two decimals ("12.34") in cents.
pub fn cents(text: &str) -> i64 {
    let (whole, fraction) = text.split_once('.').unwrap();
    whole.parse::<i64>().unwrap() * 100 + fraction.parse::<i64>().unwrap()
}

/// An operator request with `token`, answered whatever its status; a body that is not JSON reads as null.
pub fn admin_request(server: &Server, method: &str, path: &str, token: &str, body: Option<&serde_json::Value>) -> (u16, serde_json::Value) {
    let request = ureq::request(method, &format!("{}{path}", server.base)).set("Authorization", &format!("Bearer {token}"));
    let response = answer(
        match body {
            Some(body) => request.send_string(&body.to_string()),
            None => request.call(),
        },
        path,
    );
    let status = response.status();
    (status, response.into_json().unwrap_or(serde_json::Value::Null))
}
