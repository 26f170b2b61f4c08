//! `clearing get`: one signed GET as a platform, timed (what `scripts/measure-lists.sh` uses to
//! measure listing pages). It can follow `next_cursor` first, to time a page deep in a listing.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// Base URL of the server, e.g. http://127.0.0.1:8080
    #[arg(long)]
    url: String,
    /// The platform's id (plt_N).
    #[arg(long)]
    platform: String,
    /// The platform's secret.
    #[arg(long)]
    secret: String,
    /// Times the page is asked for (the median is printed).
    #[arg(long, default_value_t = 7)]
    repeat: usize,
    /// Pages to follow by `next_cursor` (untimed) before the timed page.
    #[arg(long, default_value_t = 0)]
    walk: usize,
    /// Print the last answer's body instead of the timing line.
    #[arg(long)]
    body: bool,
    /// Path and query, e.g. "/v1/orders?kind=refund&limit=50".
    path: String,
}

/// Sends one signed GET; returns the status, the body and how long the answer took.
fn signed_get(agent: &ureq::Agent, args: &GetArgs, path: &str, sequence: u64) -> Result<(u16, Value, Duration)> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let timestamp = now.as_secs().to_string();
    let nonce = format!("G{}S{sequence:08}", now.as_nanos());
    let canonical = gateway::auth::canonical("GET", path, &timestamp, &nonce, b"");
    let signature = gateway::secrets::hmac_hex(args.secret.as_bytes(), canonical.as_bytes());
    let url = format!("{}{path}", args.url.trim_end_matches('/'));
    let started = Instant::now();
    let response =
        agent.get(&url).set("X-Platform-Id", &args.platform).set("X-Timestamp", &timestamp).set("X-Nonce", &nonce).set("X-Signature", &signature).call();
    let response = match response {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(error) => bail!("GET {path}: {error}"),
    };
    let status = response.status();
    let body: Value = response.into_json().with_context(|| format!("GET {path}: not JSON"))?;
    Ok((status, body, started.elapsed()))
}

/// The items of a listing page (the first array member of the body).
fn items(body: &Value) -> usize {
    body.as_object().and_then(|members| members.values().find_map(Value::as_array)).map_or(0, Vec::len)
}

/// Runs `clearing get`: prints `median_ms min_ms max_ms status items next_cursor path` (tabs).
pub fn run(args: GetArgs) -> Result<()> {
    if args.repeat == 0 || args.repeat > 100_000 {
        bail!("--repeat must be 1 to 100000");
    }
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
    let mut sequence = 0;
    let mut path = args.path.clone();
    let joiner = if args.path.contains('?') { '&' } else { '?' };
    for _ in 0..args.walk {
        sequence += 1;
        let (status, body, _) = signed_get(&agent, &args, &path, sequence)?;
        if status != 200 {
            bail!("GET {path}: {status} {body}");
        }
        let cursor = body["next_cursor"].as_str().ok_or_else(|| anyhow!("the listing ended before {} pages", args.walk))?;
        path = format!("{}{joiner}cursor={cursor}", args.path);
    }
    let mut timings = Vec::with_capacity(args.repeat);
    let mut last = (0, Value::Null);
    for _ in 0..args.repeat {
        sequence += 1;
        let (status, body, took) = signed_get(&agent, &args, &path, sequence)?;
        timings.push(took);
        last = (status, body);
    }
    if args.body {
        println!("{}", last.1);
        return Ok(());
    }
    timings.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let next = last.1["next_cursor"].as_str().unwrap_or("-").to_string();
    println!(
        "{:.2}\t{:.2}\t{:.2}\t{}\t{}\t{next}\t{path}",
        ms(timings[timings.len() / 2]),
        ms(timings[0]),
        ms(timings[timings.len() - 1]),
        last.0,
        items(&last.1)
    );
    Ok(())
}
