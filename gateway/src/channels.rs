//! Channels as configuration (the clearing issue, item 1) and withdrawal routing (item 2, without
//! fallback yet). Each channel has a direction, a fee model (fixed + rate, clamped to a minimum and
//! a maximum; exact integers), per-order limits, a daily cap, a service window in business-local
//! time with an optional business-day-and-holiday calendar, an arrival class and an expected
//! arrival time, the account types it serves, and the bank simulator's behaviour for it.
//! Routing picks, among the channels that can serve an order now, the cheapest that meets the
//! requested arrival, and records every candidate with why it was or was not viable.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use engine::money::Minor;
use serde::{Deserialize, Serialize};

/// Which way money moves through a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

/// How fast money arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrival {
    Realtime,
    Standard,
}

/// Whose accounts a payout goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountType {
    Personal,
    Corporate,
}

/// One channel as configured (amounts in minor units of its currency).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Channel {
    pub id: u16,
    pub name: String,
    pub kind: String,
    pub direction: Direction,
    pub currency: String,
    /// Decimals of the currency's minor unit (the amounts below are in that unit).
    pub exponent: u8,
    pub fee_fixed: Minor,
    pub fee_rate_bps: Minor,
    pub fee_min: Minor,
    pub fee_max: Minor,
    pub order_min: Minor,
    pub order_max: Minor,
    pub daily_cap: Minor,
    /// Open from `window.0` to `window.1`, minutes after local midnight (0..=1440).
    pub window: (u32, u32),
    /// Closed on Saturdays, Sundays and configured holidays.
    pub business_days_only: bool,
    pub arrival: Arrival,
    pub eta_minutes: u32,
    pub serves_personal: bool,
    pub serves_corporate: bool,
    /// The simulator's behaviour for this channel.
    pub sim_latency_ms: u64,
    pub sim_failure_per_mille: u16,
    /// Payouts in a thousand the simulated bank never receives (no verdict ever comes).
    pub sim_drop_per_mille: u16,
    /// How long we wait for the channel's verdict on a payout before asking it (status query).
    pub timeout_ms: u64,
    /// An operator can take a channel out of routing (`disabled`) without removing it.
    pub enabled: bool,
}

impl Channel {
    /// `fee_fixed + ceil(amount * fee_rate_bps / 10000)`, clamped to `[fee_min, fee_max]`. Integer
    /// arithmetic; rounding up means the channel's cost is never under-charged by a minor unit.
    pub fn fee(&self, amount: Minor) -> Minor {
        let rate = (amount as i128 * self.fee_rate_bps as i128 + 9_999) / 10_000;
        let raw = (self.fee_fixed as i128 + rate).min(Minor::MAX as i128) as Minor;
        raw.clamp(self.fee_min, self.fee_max.max(self.fee_min))
    }
}

/// One channel considered for an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Candidate {
    pub channel: String,
    /// Decimal string in the order's currency.
    pub fee: String,
    pub eta_minutes: u32,
    pub rejected_because: Option<&'static str>,
}

/// A routing decision: the chosen channel (if any) and every candidate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub chosen: Option<String>,
    pub candidates: Vec<Candidate>,
    #[serde(skip)]
    pub chosen_id: Option<u16>,
    #[serde(skip)]
    pub fee_minor: Minor,
}

/// Outcomes kept per channel for its health.
const HEALTH_WINDOW: usize = 20;
/// Outcomes needed before a channel can be judged unhealthy.
const HEALTH_SAMPLES_MIN: usize = 10;
/// Failures in a thousand of the window that open the circuit.
const HEALTH_FAILURES_PER_MILLE_MAX: usize = 500;
/// How long an open circuit stays open before one probe order may go through.
const CIRCUIT_COOLDOWN: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Health {
    outcomes: VecDeque<bool>,
    open_until: Option<Instant>,
    probing: bool,
}

#[derive(Default)]
struct Usage {
    day: u32,
    used: HashMap<u16, Minor>,
}

/// A channel as the configuration file (`[[channels]]`) and `POST /admin/channels` give it:
/// amounts as decimal strings in its currency.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelSpec {
    pub id: u16,
    pub name: String,
    pub kind: String,
    /// `in` (recharges, direct payments, collections) or `out` (withdrawals, payouts).
    pub direction: String,
    pub currency: String,
    pub fee_fixed: String,
    pub fee_rate_bps: i64,
    pub fee_min: String,
    pub fee_max: String,
    pub order_min: String,
    pub order_max: String,
    pub daily_cap: String,
    /// "HH:MM-HH:MM" business-local time ("00:00-24:00": 7x24).
    pub window: String,
    pub business_days_only: bool,
    /// `realtime` or `standard`.
    pub arrival: String,
    pub eta_minutes: u32,
    /// `personal` and/or `corporate`.
    pub serves: Vec<String>,
    pub sim_latency_ms: u64,
    pub sim_failure_per_mille: u16,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    #[serde(default)]
    pub sim_drop_per_mille: u16,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn enabled_by_default() -> bool {
    true
}

impl ChannelSpec {
    /// The channel, checked: a configured currency, amounts in it, a window, known words.
    pub fn build(&self, currencies: &[engine::money::CurrencySpec]) -> Result<Channel, String> {
        let what = |field: &str| format!("channel {}: bad {field}", self.name);
        let spec = currencies.iter().find(|c| c.code_str() == self.currency).ok_or_else(|| what("currency (not configured)"))?;
        let money = |text: &str, field: &str| -> Result<Minor, String> { spec.parse(text).filter(|m| *m >= 0).ok_or_else(|| what(field)) };
        let window = parse_window(&self.window).ok_or_else(|| what("window"))?;
        if self.sim_failure_per_mille > 1000 || self.sim_drop_per_mille > 1000 || !(0..=10_000).contains(&self.fee_rate_bps) || self.timeout_ms < 100 {
            return Err(what("sim_failure_per_mille, sim_drop_per_mille, fee_rate_bps or timeout_ms"));
        }
        if self.name.is_empty() || self.name.len() > 64 || !self.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(what("name (1 to 64 of [A-Za-z0-9_-])"));
        }
        if self.serves.iter().any(|s| s != "personal" && s != "corporate") {
            return Err(what("serves (personal, corporate)"));
        }
        Ok(Channel {
            id: self.id,
            name: self.name.clone(),
            kind: self.kind.clone(),
            direction: match self.direction.as_str() {
                "in" => Direction::In,
                "out" => Direction::Out,
                _ => return Err(what("direction (in or out)")),
            },
            currency: self.currency.clone(),
            exponent: spec.exponent,
            fee_fixed: money(&self.fee_fixed, "fee_fixed")?,
            fee_rate_bps: self.fee_rate_bps,
            fee_min: money(&self.fee_min, "fee_min")?,
            fee_max: money(&self.fee_max, "fee_max")?,
            order_min: money(&self.order_min, "order_min")?,
            order_max: money(&self.order_max, "order_max")?,
            daily_cap: money(&self.daily_cap, "daily_cap")?,
            window,
            business_days_only: self.business_days_only,
            arrival: match self.arrival.as_str() {
                "realtime" => Arrival::Realtime,
                "standard" => Arrival::Standard,
                _ => return Err(what("arrival (realtime or standard)")),
            },
            eta_minutes: self.eta_minutes,
            serves_personal: self.serves.iter().any(|s| s == "personal"),
            serves_corporate: self.serves.iter().any(|s| s == "corporate"),
            sim_latency_ms: self.sim_latency_ms,
            sim_failure_per_mille: self.sim_failure_per_mille,
            enabled: self.enabled,
            sim_drop_per_mille: self.sim_drop_per_mille,
            timeout_ms: self.timeout_ms,
        })
    }
}

/// Every configured channel with the router's running state (daily usage, health).
pub struct Channels {
    /// The operator may change them at run time (`PATCH /admin/channels/{name}`).
    channels: RwLock<Vec<Channel>>,
    holidays: BTreeSet<u32>,
    utc_offset_seconds: i32,
    usage: Mutex<Usage>,
    health: Mutex<HashMap<u16, Health>>,
}

static NAMES: RwLock<BTreeMap<u16, String>> = RwLock::new(BTreeMap::new());

/// The name of a channel number (from the configuration the server started with).
pub fn name(id: u16) -> String {
    if id == crate::offline::OFFLINE_CHANNEL {
        return "offline_transfer".into();
    }
    NAMES.read().expect("names lock").get(&id).cloned().unwrap_or_else(|| format!("channel_{id}"))
}

impl Channels {
    /// The channels and the holiday calendar (days since 1970-01-01, business-local).
    pub fn new(channels: Vec<Channel>, holidays: BTreeSet<u32>, utc_offset_seconds: i32) -> Result<Channels, String> {
        let mut ids = BTreeSet::new();
        for channel in &channels {
            if channel.id == crate::offline::OFFLINE_CHANNEL {
                return Err("channel id 0 is reserved for offline transfers".into());
            }
            if !ids.insert(channel.id) || channels.iter().filter(|c| c.name == channel.name).count() > 1 {
                return Err(format!("channel {} ({}) is configured twice", channel.id, channel.name));
            }
            if channel.window.0 > channel.window.1 || channel.window.1 > 1440 || channel.order_min > channel.order_max || channel.fee_min > channel.fee_max {
                return Err(format!("channel {}: window, order limits or fee bounds are inverted", channel.name));
            }
        }
        NAMES.write().expect("names lock").extend(channels.iter().map(|c| (c.id, c.name.clone())));
        Ok(Channels { channels: RwLock::new(channels), holidays, utc_offset_seconds, usage: Mutex::new(Usage::default()), health: Mutex::new(HashMap::new()) })
    }

    /// A channel by number.
    pub fn get(&self, id: u16) -> Option<Channel> {
        self.read().iter().find(|c| c.id == id).cloned()
    }

    /// A money-in channel by name, or the first configured one when `name` is `None`.
    pub fn money_in(&self, name: Option<&str>) -> Option<Channel> {
        self.read().iter().filter(|c| c.direction == Direction::In && c.enabled).find(|c| name.is_none_or(|n| c.name == n)).cloned()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Channel>> {
        self.channels.read().expect("channels lock")
    }

    /// Adds the channels the operator added (`h/newchan/`) and applies the operator's stored
    /// changes (`h/chan/`) over the configuration.
    pub fn load_settings(&self, store: &dyn storage::Store, currencies: &[engine::money::CurrencySpec]) -> Result<(), String> {
        for (_, spec) in crate::records::load_all::<ChannelSpec>(store, ADDED_PREFIX.as_bytes())? {
            let channel = spec.build(currencies)?;
            let mut channels = self.channels.write().expect("channels lock");
            if channels.iter().any(|c| c.id == channel.id || c.name == channel.name) {
                return Err(format!("added channel {} ({}) is now also in the configuration file", channel.id, channel.name));
            }
            NAMES.write().expect("names lock").insert(channel.id, channel.name.clone());
            channels.push(channel);
        }
        let stored = crate::records::load_all::<Settings>(store, SETTINGS_PREFIX.as_bytes())?;
        let mut channels = self.channels.write().expect("channels lock");
        for (_, settings) in stored {
            if let Some(channel) = channels.iter_mut().find(|c| c.id == settings.id) {
                settings.apply(channel);
            }
        }
        Ok(())
    }

    /// Adds a channel at run time and stores it (it outlives restarts); routing considers it
    /// from the next order on. Its id and name must be new (id 0 is offline transfers').
    pub fn add(&self, store: &dyn storage::Store, spec: &ChannelSpec, currencies: &[engine::money::CurrencySpec]) -> Result<Channel, crate::error::ApiError> {
        use crate::error::ApiError;
        let channel = spec.build(currencies).map_err(|why| ApiError::invalid(&why, "channel"))?;
        if channel.window.0 > channel.window.1 || channel.order_min > channel.order_max || channel.fee_min > channel.fee_max {
            return Err(ApiError::invalid("window, order limits or fee bounds are inverted", "channel"));
        }
        let mut channels = self.channels.write().expect("channels lock");
        if channel.id == crate::offline::OFFLINE_CHANNEL || channels.iter().any(|c| c.id == channel.id) {
            return Err(ApiError::invalid("a channel id is new and not 0", "id"));
        }
        if channels.iter().any(|c| c.name == channel.name) {
            return Err(ApiError::invalid("a channel name is new", "name"));
        }
        let key = format!("{ADDED_PREFIX}{:05}", channel.id).into_bytes();
        crate::records::put(store, &[(key, spec)])?;
        NAMES.write().expect("names lock").insert(channel.id, channel.name.clone());
        channels.push(channel.clone());
        Ok(channel)
    }

    /// Changes a channel at run time and stores the change (it outlives restarts; the
    /// configuration file's values are the starting point). Routing sees it at once.
    pub fn update(&self, store: &dyn storage::Store, name: &str, change: &ChannelChange) -> Result<Channel, crate::error::ApiError> {
        use crate::error::ApiError;
        let mut channels = self.channels.write().expect("channels lock");
        let channel = channels.iter_mut().find(|c| c.name == name).ok_or_else(ApiError::not_found)?;
        let mut changed = channel.clone();
        change.apply(&mut changed)?;
        if changed.window.0 > changed.window.1 || changed.order_min > changed.order_max || changed.fee_min > changed.fee_max {
            return Err(ApiError::invalid("window, order limits or fee bounds would be inverted", "channel"));
        }
        let settings = Settings::of(&changed);
        let key = format!("{SETTINGS_PREFIX}{:05}", changed.id).into_bytes();
        crate::records::put(store, &[(key, &settings)])?;
        *channel = changed.clone();
        Ok(changed)
    }

    /// The business day and minute of day of `now` (microseconds since the epoch).
    fn local(&self, now: u64) -> (u32, u32) {
        let seconds = (now / 1_000_000) as i64 + self.utc_offset_seconds as i64;
        (seconds.div_euclid(86_400) as u32, (seconds.rem_euclid(86_400) / 60) as u32)
    }

    fn is_business_day(&self, day: u32) -> bool {
        // 1970-01-01 was a Thursday: day 0 is weekday 3 (Monday = 0).
        let weekday = (day + 3) % 7;
        weekday < 5 && !self.holidays.contains(&day)
    }

    /// Why `channel` cannot take a payout now, if it cannot.
    fn refusal(&self, channel: &Channel, amount: Minor, currency: &str, arrival: Arrival, account: AccountType, now: u64, used: Minor) -> Option<&'static str> {
        let (day, minute) = self.local(now);
        if !channel.enabled {
            return Some("disabled");
        }
        if channel.currency != currency {
            return Some("currency_not_served");
        }
        let served = match account {
            AccountType::Personal => channel.serves_personal,
            AccountType::Corporate => channel.serves_corporate,
        };
        if !served {
            return Some("account_type_not_served");
        }
        if amount < channel.order_min {
            return Some("below_order_minimum");
        }
        if amount > channel.order_max {
            return Some("above_order_maximum");
        }
        if arrival == Arrival::Realtime && channel.arrival != Arrival::Realtime {
            return Some("arrival_too_slow");
        }
        if channel.business_days_only && !self.is_business_day(day) {
            return Some("not_a_business_day");
        }
        if minute < channel.window.0 || minute >= channel.window.1 {
            return Some("outside_service_window");
        }
        if used as i128 + amount as i128 > channel.daily_cap as i128 {
            return Some("daily_cap_exhausted");
        }
        if !self.healthy(channel.id) {
            return Some("unhealthy");
        }
        None
    }

    /// Routes a payout of `amount` at `now`: every money-out channel is a candidate; the viable
    /// ones are ordered by fee, then expected arrival; the first is chosen and its daily usage
    /// taken (give it back with `release` if the order is refused or fails).
    pub fn route(&self, amount: Minor, currency: &str, exponent: u8, arrival: Arrival, account: AccountType, now: u64) -> Decision {
        self.route_excluding(amount, currency, exponent, arrival, account, now, &[])
    }

    /// Routes like `route`, with the channels in `exclude` refused as `failed_already` (the
    /// fallback after a channel failed an order).
    #[allow(clippy::too_many_arguments)]
    pub fn route_excluding(&self, amount: Minor, currency: &str, exponent: u8, arrival: Arrival, account: AccountType, now: u64, exclude: &[u16]) -> Decision {
        let spec = engine::money::CurrencySpec::new(currency, exponent).expect("a configured currency");
        let (day, _) = self.local(now);
        let mut usage = self.usage.lock().expect("usage lock");
        if usage.day != day {
            usage.day = day;
            usage.used.clear();
        }
        let channels = self.read();
        let mut rows: Vec<(Option<&'static str>, Minor, u32, &Channel)> = channels
            .iter()
            .filter(|c| c.direction == Direction::Out)
            .map(|c| {
                let used = usage.used.get(&c.id).copied().unwrap_or(0);
                let refusal = if exclude.contains(&c.id) { Some("failed_already") } else { self.refusal(c, amount, currency, arrival, account, now, used) };
                (refusal, c.fee(amount), c.eta_minutes, c)
            })
            .collect();
        rows.sort_by_key(|(refusal, fee, eta, c)| (refusal.is_some(), *fee, *eta, c.id));
        let chosen = rows.iter().find(|(refusal, ..)| refusal.is_none()).map(|(_, fee, _, c)| (c.id, c.name.clone(), *fee));
        if let Some((id, _, _)) = &chosen {
            *usage.used.entry(*id).or_insert(0) += amount;
            self.start_probe(*id);
        }
        Decision {
            chosen_id: chosen.as_ref().map(|c| c.0),
            chosen: chosen.as_ref().map(|c| c.1.clone()),
            fee_minor: chosen.as_ref().map_or(0, |c| c.2),
            candidates: rows
                .iter()
                .map(|(refusal, fee, eta, c)| Candidate { channel: c.name.clone(), fee: spec.format(*fee), eta_minutes: *eta, rejected_because: *refusal })
                .collect(),
        }
    }

    /// Gives back daily usage of a routed payout that was refused or failed (on day `day` of `now`).
    pub fn release(&self, channel: u16, amount: Minor, now: u64) {
        let (day, _) = self.local(now);
        let mut usage = self.usage.lock().expect("usage lock");
        if usage.day == day {
            if let Some(used) = usage.used.get_mut(&channel) {
                *used = (*used - amount).max(0);
            }
        }
    }

    /// Counts a payout routed earlier today (rebuilding usage at start).
    pub fn count_used(&self, channel: u16, amount: Minor, now: u64, created_at: u64) {
        let (day, _) = self.local(now);
        let (created_day, _) = self.local(created_at);
        let mut usage = self.usage.lock().expect("usage lock");
        if usage.day != day {
            usage.day = day;
            usage.used.clear();
        }
        if created_day == day {
            *usage.used.entry(channel).or_insert(0) += amount;
        }
    }

    fn healthy(&self, channel: u16) -> bool {
        let health = self.health.lock().expect("health lock");
        match health.get(&channel) {
            None => true,
            // Open: refused until the cooldown passed, then one probe at a time.
            Some(h) => match h.open_until {
                None => true,
                Some(until) => Instant::now() >= until && !h.probing,
            },
        }
    }

    fn start_probe(&self, channel: u16) {
        if let Some(h) = self.health.lock().expect("health lock").get_mut(&channel) {
            if h.open_until.is_some() {
                h.probing = true;
            }
        }
    }

    /// Records a channel's verdict on an order: the sliding window decides whether the circuit
    /// opens; a probe's success closes it, its failure opens it again.
    pub fn record_outcome(&self, channel: u16, succeeded: bool) {
        let mut all = self.health.lock().expect("health lock");
        let h = all.entry(channel).or_default();
        if h.open_until.is_some() && h.probing {
            h.probing = false;
            if succeeded {
                h.open_until = None;
                h.outcomes.clear();
            } else {
                h.open_until = Some(Instant::now() + CIRCUIT_COOLDOWN);
            }
            return;
        }
        h.outcomes.push_back(succeeded);
        if h.outcomes.len() > HEALTH_WINDOW {
            h.outcomes.pop_front();
        }
        let failures = h.outcomes.iter().filter(|ok| !**ok).count();
        if h.open_until.is_none() && h.outcomes.len() >= HEALTH_SAMPLES_MIN && failures * 1000 >= h.outcomes.len() * HEALTH_FAILURES_PER_MILLE_MAX {
            h.open_until = Some(Instant::now() + CIRCUIT_COOLDOWN);
        }
    }

    /// Opens a channel's circuit as if its cooldown had just started (tests and operators).
    pub fn trip(&self, channel: u16, cooldown: Duration) {
        let mut all = self.health.lock().expect("health lock");
        let h = all.entry(channel).or_default();
        h.open_until = Some(Instant::now() + cooldown);
        h.probing = false;
    }

    /// Each channel as the operator sees it: configuration, today's usage and health.
    pub fn report(&self, now: u64) -> serde_json::Value {
        let (day, _) = self.local(now);
        let usage = self.usage.lock().expect("usage lock");
        let health = self.health.lock().expect("health lock");
        let rows: Vec<serde_json::Value> = self
            .read()
            .iter()
            .map(|c| {
                let spec = engine::money::CurrencySpec::new(&c.currency, c.exponent).expect("configured");
                let used = if usage.day == day { usage.used.get(&c.id).copied().unwrap_or(0) } else { 0 };
                let h = health.get(&c.id);
                let failures = h.map_or(0, |h| h.outcomes.iter().filter(|ok| !**ok).count());
                let serves: Vec<&str> = [c.serves_personal.then_some("personal"), c.serves_corporate.then_some("corporate")].into_iter().flatten().collect();
                serde_json::json!({
                    "id": c.id, "name": c.name, "kind": c.kind,
                    "direction": if c.direction == Direction::In { "in" } else { "out" },
                    "currency": c.currency, "arrival": c.arrival, "eta_minutes": c.eta_minutes,
                    "fee": {"fixed": spec.format(c.fee_fixed), "rate_bps": c.fee_rate_bps, "min": spec.format(c.fee_min), "max": spec.format(c.fee_max)},
                    "order_min": spec.format(c.order_min), "order_max": spec.format(c.order_max),
                    "daily_cap": spec.format(c.daily_cap), "used_today": spec.format(used),
                    "window": format!("{:02}:{:02}-{:02}:{:02}", c.window.0 / 60, c.window.0 % 60, c.window.1 / 60, c.window.1 % 60),
                    "business_days_only": c.business_days_only,
                    "serves": serves,
                    "enabled": c.enabled,
                    "timeout_ms": c.timeout_ms,
                    "simulator": {"latency_ms": c.sim_latency_ms, "failure_per_mille": c.sim_failure_per_mille, "drop_per_mille": c.sim_drop_per_mille},
                    "health": {
                        "recent_outcomes": h.map_or(0, |h| h.outcomes.len()),
                        "recent_failures": failures,
                        "circuit": match h.and_then(|h| h.open_until) { None => "closed", Some(until) if Instant::now() < until => "open", Some(_) => "half_open" },
                    },
                })
            })
            .collect();
        serde_json::json!({"channels": rows})
    }

    /// Every configured channel, as it is now.
    pub fn all(&self) -> Vec<Channel> {
        self.read().clone()
    }
}

/// Key prefix of the channels the operator added.
const ADDED_PREFIX: &str = "h/newchan/";

/// Key prefix of the operator's channel changes (`c/` is the cards').
const SETTINGS_PREFIX: &str = "h/chan/";

/// What the operator may change of a channel, as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Settings {
    id: u16,
    fee_fixed: Minor,
    fee_rate_bps: Minor,
    fee_min: Minor,
    fee_max: Minor,
    order_min: Minor,
    order_max: Minor,
    daily_cap: Minor,
    window: (u32, u32),
    business_days_only: bool,
    eta_minutes: u32,
    enabled: bool,
    sim_latency_ms: u64,
    sim_failure_per_mille: u16,
    #[serde(default)]
    sim_drop_per_mille: u16,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
}

/// The verdict timeout of channels that do not set one: ten minutes.
pub fn default_timeout_ms() -> u64 {
    600_000
}

impl Settings {
    fn of(c: &Channel) -> Settings {
        Settings {
            id: c.id,
            fee_fixed: c.fee_fixed,
            fee_rate_bps: c.fee_rate_bps,
            fee_min: c.fee_min,
            fee_max: c.fee_max,
            order_min: c.order_min,
            order_max: c.order_max,
            daily_cap: c.daily_cap,
            window: c.window,
            business_days_only: c.business_days_only,
            eta_minutes: c.eta_minutes,
            enabled: c.enabled,
            sim_latency_ms: c.sim_latency_ms,
            sim_failure_per_mille: c.sim_failure_per_mille,
            sim_drop_per_mille: c.sim_drop_per_mille,
            timeout_ms: c.timeout_ms,
        }
    }

    fn apply(&self, c: &mut Channel) {
        (c.fee_fixed, c.fee_rate_bps, c.fee_min, c.fee_max) = (self.fee_fixed, self.fee_rate_bps, self.fee_min, self.fee_max);
        (c.order_min, c.order_max, c.daily_cap, c.window) = (self.order_min, self.order_max, self.daily_cap, self.window);
        (c.business_days_only, c.eta_minutes, c.enabled) = (self.business_days_only, self.eta_minutes, self.enabled);
        (c.sim_latency_ms, c.sim_failure_per_mille, c.sim_drop_per_mille) = (self.sim_latency_ms, self.sim_failure_per_mille, self.sim_drop_per_mille);
        c.timeout_ms = self.timeout_ms;
    }
}

/// `PATCH /admin/channels/{name}` body: the fields to change (amounts in the channel's currency).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelChange {
    pub enabled: Option<bool>,
    pub fee_fixed: Option<String>,
    pub fee_rate_bps: Option<u32>,
    pub fee_min: Option<String>,
    pub fee_max: Option<String>,
    pub order_min: Option<String>,
    pub order_max: Option<String>,
    pub daily_cap: Option<String>,
    /// "HH:MM-HH:MM", business-local time ("00:00-24:00": all day).
    pub window: Option<String>,
    pub business_days_only: Option<bool>,
    pub eta_minutes: Option<u32>,
    /// The bank simulator's behaviour for this channel.
    pub sim_latency_ms: Option<u64>,
    pub sim_failure_per_mille: Option<u16>,
    /// Payouts in a thousand the simulated bank never receives.
    pub sim_drop_per_mille: Option<u16>,
    /// Milliseconds to wait for a payout's verdict before asking the channel (at least 100).
    pub timeout_ms: Option<u64>,
}

impl ChannelChange {
    fn apply(&self, c: &mut Channel) -> Result<(), crate::error::ApiError> {
        use crate::error::ApiError;
        let spec = engine::money::CurrencySpec::new(&c.currency, c.exponent).expect("configured");
        let amount = |text: &Option<String>, param: &'static str, current: Minor| -> Result<Minor, ApiError> {
            match text {
                None => Ok(current),
                Some(text) => spec.parse(text).filter(|m| *m >= 0).ok_or_else(|| ApiError::invalid("a non-negative amount in the channel's currency", param)),
            }
        };
        c.fee_fixed = amount(&self.fee_fixed, "fee_fixed", c.fee_fixed)?;
        c.fee_min = amount(&self.fee_min, "fee_min", c.fee_min)?;
        c.fee_max = amount(&self.fee_max, "fee_max", c.fee_max)?;
        c.order_min = amount(&self.order_min, "order_min", c.order_min)?;
        c.order_max = amount(&self.order_max, "order_max", c.order_max)?;
        c.daily_cap = amount(&self.daily_cap, "daily_cap", c.daily_cap)?;
        if let Some(bps) = self.fee_rate_bps {
            if bps > 10_000 {
                return Err(ApiError::invalid("fee_rate_bps is 0 to 10000", "fee_rate_bps"));
            }
            c.fee_rate_bps = bps as Minor;
        }
        if let Some(window) = &self.window {
            c.window = parse_window(window).ok_or_else(|| ApiError::invalid("window is HH:MM-HH:MM", "window"))?;
        }
        if let Some(per_mille) = self.sim_failure_per_mille {
            if per_mille > 1000 {
                return Err(ApiError::invalid("sim_failure_per_mille is 0 to 1000", "sim_failure_per_mille"));
            }
            c.sim_failure_per_mille = per_mille;
        }
        if let Some(per_mille) = self.sim_drop_per_mille {
            if per_mille > 1000 {
                return Err(ApiError::invalid("sim_drop_per_mille is 0 to 1000", "sim_drop_per_mille"));
            }
            c.sim_drop_per_mille = per_mille;
        }
        if let Some(timeout_ms) = self.timeout_ms {
            if timeout_ms < 100 {
                return Err(ApiError::invalid("timeout_ms is at least 100", "timeout_ms"));
            }
            c.timeout_ms = timeout_ms;
        }
        c.enabled = self.enabled.unwrap_or(c.enabled);
        c.business_days_only = self.business_days_only.unwrap_or(c.business_days_only);
        c.eta_minutes = self.eta_minutes.unwrap_or(c.eta_minutes);
        c.sim_latency_ms = self.sim_latency_ms.unwrap_or(c.sim_latency_ms);
        Ok(())
    }
}

/// "HH:MM" as minutes after midnight (24:00 allowed).
pub fn parse_minute(text: &str) -> Option<u32> {
    let (hours, minutes) = text.split_once(':')?;
    let (hours, minutes): (u32, u32) = (hours.parse().ok()?, minutes.parse().ok()?);
    (hours <= 24 && minutes < 60 && hours * 60 + minutes <= 1440).then_some(hours * 60 + minutes)
}

/// "HH:MM-HH:MM" as minutes after midnight, the start not after the end.
pub fn parse_window(text: &str) -> Option<(u32, u32)> {
    let (from, to) = text.split_once('-')?;
    let (from, to) = (parse_minute(from)?, parse_minute(to)?);
    (from <= to).then_some((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(id: u16, name: &str) -> Channel {
        Channel {
            id,
            name: name.into(),
            kind: "test".into(),
            direction: Direction::Out,
            currency: "CNY".into(),
            exponent: 2,
            fee_fixed: 0,
            fee_rate_bps: 0,
            fee_min: 0,
            fee_max: 0,
            order_min: 1,
            order_max: 5_000_000,
            daily_cap: 100_000_000,
            window: (0, 1440),
            business_days_only: false,
            arrival: Arrival::Realtime,
            eta_minutes: 1,
            serves_personal: true,
            serves_corporate: true,
            sim_latency_ms: 0,
            sim_failure_per_mille: 0,
            sim_drop_per_mille: 0,
            timeout_ms: 600_000,
            enabled: true,
        }
    }

    /// 2026-11-23 was a Monday; 10:00 in UTC+8 is 02:00 UTC.
    const MONDAY_10_00: u64 = (20_780 * 86_400 + 2 * 3_600) * 1_000_000;
    const HOUR: u64 = 3_600 * 1_000_000;
    const DAY: u64 = 24 * HOUR;

    fn router(extra: impl Fn(&mut Vec<Channel>)) -> Channels {
        let mut cheap = channel(1, "cheap");
        cheap.fee_fixed = 100;
        let mut dear = channel(2, "dear");
        dear.fee_fixed = 500;
        let mut channels = vec![cheap, dear];
        extra(&mut channels);
        Channels::new(channels, BTreeSet::from([20_781]), 8 * 3600).unwrap()
    }

    fn chosen(decision: &Decision) -> (Option<&str>, Vec<Option<&'static str>>) {
        (decision.chosen.as_deref(), decision.candidates.iter().map(|c| c.rejected_because).collect())
    }

    #[test]
    fn routing_table() {
        type Case = (&'static str, fn(&mut Vec<Channel>), Minor, Arrival, AccountType, u64, Option<&'static str>, &'static str);
        let cases: Vec<Case> = vec![
            ("cheapest viable", |_| {}, 1_000, Arrival::Realtime, AccountType::Personal, MONDAY_10_00, Some("cheap"), "cheap first"),
            (
                "over the cheap one's limit",
                |c| c[0].order_max = 999,
                1_000,
                Arrival::Realtime,
                AccountType::Personal,
                MONDAY_10_00,
                Some("dear"),
                "above_order_maximum",
            ),
            (
                "under its minimum",
                |c| c[0].order_min = 2_000,
                1_000,
                Arrival::Realtime,
                AccountType::Personal,
                MONDAY_10_00,
                Some("dear"),
                "below_order_minimum",
            ),
            (
                "window closed",
                |c| c[0].window = (9 * 60, 10 * 60),
                1_000,
                Arrival::Realtime,
                AccountType::Personal,
                MONDAY_10_00,
                Some("dear"),
                "outside_service_window",
            ),
            (
                "holiday",
                |c| c[0].business_days_only = true,
                1_000,
                Arrival::Realtime,
                AccountType::Personal,
                MONDAY_10_00 + DAY,
                Some("dear"),
                "not_a_business_day",
            ),
            (
                "weekend",
                |c| c[0].business_days_only = true,
                1_000,
                Arrival::Realtime,
                AccountType::Personal,
                MONDAY_10_00 + 5 * DAY,
                Some("dear"),
                "not_a_business_day",
            ),
            (
                "business day",
                |c| c[0].business_days_only = true,
                1_000,
                Arrival::Realtime,
                AccountType::Personal,
                MONDAY_10_00 + 2 * DAY,
                Some("cheap"),
                "cheap first",
            ),
            ("cap exhausted", |c| c[0].daily_cap = 999, 1_000, Arrival::Realtime, AccountType::Personal, MONDAY_10_00, Some("dear"), "daily_cap_exhausted"),
            (
                "too slow for realtime",
                |c| c[0].arrival = Arrival::Standard,
                1_000,
                Arrival::Realtime,
                AccountType::Personal,
                MONDAY_10_00,
                Some("dear"),
                "arrival_too_slow",
            ),
            (
                "standard takes the slow cheap one",
                |c| c[0].arrival = Arrival::Standard,
                1_000,
                Arrival::Standard,
                AccountType::Personal,
                MONDAY_10_00,
                Some("cheap"),
                "cheap first",
            ),
            (
                "corporate not served",
                |c| c[0].serves_corporate = false,
                1_000,
                Arrival::Realtime,
                AccountType::Corporate,
                MONDAY_10_00,
                Some("dear"),
                "account_type_not_served",
            ),
            ("disabled by the operator", |c| c[0].enabled = false, 1_000, Arrival::Realtime, AccountType::Personal, MONDAY_10_00, Some("dear"), "disabled"),
            (
                "other currency",
                |c| c[0].currency = "USD".into(),
                1_000,
                Arrival::Realtime,
                AccountType::Personal,
                MONDAY_10_00,
                Some("dear"),
                "currency_not_served",
            ),
            (
                "nothing viable",
                |c| c.iter_mut().for_each(|c| c.order_max = 10),
                1_000,
                Arrival::Realtime,
                AccountType::Personal,
                MONDAY_10_00,
                None,
                "above_order_maximum",
            ),
        ];
        for (name, setup, amount, arrival, account, now, expected, first_reason) in cases {
            let decision = router(setup).route(amount, "CNY", 2, arrival, account, now);
            let (got, reasons) = chosen(&decision);
            assert_eq!(got, expected, "{name}");
            assert_eq!(decision.candidates.len(), 2, "{name}: every channel is a candidate");
            let reason = reasons.iter().flatten().next().copied().unwrap_or("cheap first");
            assert_eq!(reason, first_reason, "{name}: {decision:?}");
        }
    }

    #[test]
    fn daily_caps_are_taken_and_given_back() {
        let channels = router(|c| c[0].daily_cap = 1_500);
        assert_eq!(channels.route(1_000, "CNY", 2, Arrival::Realtime, AccountType::Personal, MONDAY_10_00).chosen.as_deref(), Some("cheap"));
        assert_eq!(channels.route(1_000, "CNY", 2, Arrival::Realtime, AccountType::Personal, MONDAY_10_00).chosen.as_deref(), Some("dear"));
        channels.release(1, 1_000, MONDAY_10_00);
        assert_eq!(channels.route(1_000, "CNY", 2, Arrival::Realtime, AccountType::Personal, MONDAY_10_00).chosen.as_deref(), Some("cheap"));
        assert_eq!(
            channels.route(1_000, "CNY", 2, Arrival::Realtime, AccountType::Personal, MONDAY_10_00 + DAY).chosen.as_deref(),
            Some("cheap"),
            "a new day, a new cap"
        );
    }

    #[test]
    fn an_unhealthy_channel_is_skipped_until_a_probe_succeeds() {
        let channels = router(|_| {});
        for _ in 0..10 {
            channels.record_outcome(1, false);
        }
        let route = || channels.route(1_000, "CNY", 2, Arrival::Realtime, AccountType::Personal, MONDAY_10_00);
        let decision = route();
        assert_eq!((decision.chosen.as_deref(), decision.candidates[1].rejected_because), (Some("dear"), Some("unhealthy")));
        channels.trip(1, Duration::ZERO);
        assert_eq!(route().chosen.as_deref(), Some("cheap"), "after the cooldown one probe goes through");
        assert_eq!(route().chosen.as_deref(), Some("dear"), "only one probe at a time");
        channels.record_outcome(1, true);
        assert_eq!(route().chosen.as_deref(), Some("cheap"), "the probe's success closes the circuit");
    }

    #[test]
    fn a_fallback_skips_the_channels_that_failed() {
        let channels = router(|_| {});
        let decision = channels.route_excluding(1_000, "CNY", 2, Arrival::Realtime, AccountType::Personal, MONDAY_10_00, &[1]);
        assert_eq!(chosen(&decision), (Some("dear"), vec![None, Some("failed_already")]));
        let none = channels.route_excluding(1_000, "CNY", 2, Arrival::Realtime, AccountType::Personal, MONDAY_10_00, &[1, 2]);
        assert_eq!(none.chosen, None);
    }

    #[test]
    fn operator_changes_apply_at_once_and_are_stored() {
        let store = storage::MemoryStore::new();
        let channels = router(|_| {});
        let route = |channels: &Channels| channels.route(1_000, "CNY", 2, Arrival::Realtime, AccountType::Personal, MONDAY_10_00).chosen;
        assert_eq!(route(&channels).as_deref(), Some("cheap"));
        let change =
            ChannelChange { fee_fixed: Some("9.00".into()), fee_max: Some("20.00".into()), window: Some("11:00-17:00".into()), ..ChannelChange::default() };
        let changed = channels.update(&store, "cheap", &change).unwrap();
        assert_eq!((changed.fee_fixed, changed.fee(1_000), changed.window), (900, 900, (660, 1020)));
        assert_eq!(route(&channels).as_deref(), Some("dear"), "closed at 10:00 now");
        // Refused changes change nothing.
        for bad in [
            ChannelChange { fee_fixed: Some("-1.00".into()), ..ChannelChange::default() },
            ChannelChange { window: Some("17:00-08:30".into()), ..ChannelChange::default() },
            ChannelChange { fee_rate_bps: Some(10_001), ..ChannelChange::default() },
            ChannelChange { order_min: Some("99999999.00".into()), ..ChannelChange::default() },
        ] {
            assert!(channels.update(&store, "cheap", &bad).is_err(), "{bad:?}");
        }
        assert!(channels.update(&store, "nowhere", &ChannelChange::default()).is_err());
        assert_eq!(channels.get(1).unwrap().fee_fixed, 900);
        // An added channel (faster than both) is routed to at once.
        let currencies = [engine::money::CurrencySpec::new("CNY", 2).unwrap()];
        let spec = |id: u16, name: &str| ChannelSpec {
            id,
            name: name.into(),
            kind: "test".into(),
            direction: "out".into(),
            currency: "CNY".into(),
            fee_fixed: "0.00".into(),
            fee_rate_bps: 0,
            fee_min: "0.00".into(),
            fee_max: "0.00".into(),
            order_min: "0.01".into(),
            order_max: "50000.00".into(),
            daily_cap: "1000000.00".into(),
            window: "00:00-24:00".into(),
            business_days_only: false,
            arrival: "realtime".into(),
            eta_minutes: 0,
            serves: vec!["personal".into()],
            sim_latency_ms: 0,
            sim_failure_per_mille: 0,
            enabled: true,
            sim_drop_per_mille: 0,
            timeout_ms: 1_000,
        };
        channels.add(&store, &spec(7, "fast"), &currencies).unwrap();
        assert_eq!(route(&channels).as_deref(), Some("fast"));
        assert!(channels.add(&store, &spec(7, "again"), &currencies).is_err(), "ids are new");
        assert!(channels.add(&store, &spec(8, "fast"), &currencies).is_err(), "names are new");
        assert!(channels.add(&store, &spec(0, "offline"), &currencies).is_err(), "0 is offline transfers'");
        assert!(channels.add(&store, &ChannelSpec { currency: "XYZ".into(), ..spec(9, "x") }, &currencies).is_err());
        assert!(channels.add(&store, &ChannelSpec { window: "9-5".into(), ..spec(9, "x") }, &currencies).is_err());
        assert!(channels.add(&store, &ChannelSpec { order_min: "9.00".into(), order_max: "1.00".into(), ..spec(9, "x") }, &currencies).is_err());
        // A restart with the same configuration has the added channel and the stored change.
        let restarted = router(|_| {});
        restarted.load_settings(&store, &currencies).unwrap();
        assert_eq!(restarted.get(7).map(|c| c.name), Some("fast".to_string()));
        assert_eq!(name(7), "fast");
        assert_eq!((restarted.get(1).unwrap().fee_fixed, restarted.get(1).unwrap().window), (900, (660, 1020)));
        let off = ChannelChange { enabled: Some(false), fee_fixed: Some("0.00".into()), ..ChannelChange::default() };
        restarted.update(&store, "cheap", &off).unwrap();
        restarted.update(&store, "fast", &ChannelChange { enabled: Some(false), ..ChannelChange::default() }).unwrap();
        let decision = restarted.route(1_000, "CNY", 2, Arrival::Realtime, AccountType::Personal, MONDAY_10_00);
        assert_eq!(chosen(&decision), (Some("dear"), vec![None, Some("disabled"), Some("disabled")]));
    }

    #[test]
    fn windows_table() {
        let cases: &[(&str, Option<(u32, u32)>)] = &[
            ("00:00-24:00", Some((0, 1440))),
            ("08:30-17:00", Some((510, 1020))),
            ("17:00-08:30", None),
            ("24:01-24:02", None),
            ("8:30", None),
            ("aa:bb-cc:dd", None),
            ("", None),
        ];
        for (text, window) in cases {
            assert_eq!(parse_window(text), *window, "{text}");
        }
    }

    #[test]
    fn fees_are_exact_and_clamped() {
        let mut c = channel(1, "c");
        c.fee_fixed = 200;
        c.fee_rate_bps = 2;
        c.fee_min = 300;
        c.fee_max = 2_000;
        for (amount, fee) in [(1, 300), (500_000, 300), (5_000_000, 1_200), (5_000_001, 1_201), (100_000_000, 2_000)] {
            assert_eq!(c.fee(amount), fee, "{amount}");
        }
    }
}
