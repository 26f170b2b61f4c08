//! Channels as configuration and withdrawal routing. Each channel has a direction, a tariff
//! (fixed + rate, clamped to a minimum and a maximum; exact integers), per-order limits, a daily
//! cap, a service window in business-local time with an optional business-day-and-holiday
//! calendar, an arrival class and an expected arrival time, the account types it serves, and the
//! simulated bank's behaviour for it. Routing picks, among the channels that can serve an order
//! now, the cheapest that meets the requested arrival, and records every candidate with why it
//! was or was not viable.
//!
//! `ChannelTable` holds the channels with routing's running state (daily usage, health). Only the
//! clearing actor owns one: nothing here locks. Others read the `ChannelSet` it publishes.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use engine::money::{CurrencySpec, Minor, AMOUNT_MINOR_MAX};
use serde::{Deserialize, Serialize};
use storage::Store;

use crate::calendar::{parse_window, Calendar};
use crate::error::ClearingError;

/// The channel number of offline transfers (bank statement lines an operator hands us).
pub const OFFLINE_CHANNEL: u16 = 0;

/// Which way money moves through a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

/// How fast money arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrival {
    Realtime,
    Standard,
}

/// Whose accounts a payout goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountType {
    Personal,
    Corporate,
}

/// Characters of a channel's `kind` (a free label), as the contract's `maxLength` says.
pub const CHANNEL_KIND_MAX: usize = 64;

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
    /// The channel's tariff.
    pub fn tariff(&self) -> bank::Tariff {
        bank::Tariff { fixed: self.fee_fixed, rate_bps: self.fee_rate_bps, min: self.fee_min, max: self.fee_max }
    }

    /// The channel's fee on `amount` (its tariff).
    pub fn fee(&self, amount: Minor) -> Minor {
        self.tariff().fee(amount)
    }

    /// The channel's currency.
    pub fn spec(&self) -> CurrencySpec {
        CurrencySpec::new(&self.currency, self.exponent).expect("channels are built from configured currencies")
    }

    /// What a bank knows of the channel.
    pub fn profile(&self) -> bank::ChannelProfile {
        bank::ChannelProfile {
            id: self.id,
            name: self.name.clone(),
            currency: self.spec(),
            tariff: self.tariff(),
            behaviour: bank::Behaviour {
                latency_ms: self.sim_latency_ms,
                failure_per_mille: self.sim_failure_per_mille,
                drop_per_mille: self.sim_drop_per_mille,
            },
        }
    }

    /// Why the channel cannot take an order of `amount` in `currency` at `micros`, whichever way
    /// the money goes, if it cannot: another currency, outside its per-order limits, not a
    /// business day (when it keeps them) or outside its service window.
    pub fn standing_refusal(&self, calendar: &Calendar, currency: &str, amount: Minor, micros: u64) -> Option<&'static str> {
        let (day, minute) = calendar.local(micros);
        let reason = if self.currency != currency {
            "currency_not_served"
        } else if amount < self.order_min {
            "below_order_minimum"
        } else if amount > self.order_max {
            "above_order_maximum"
        } else if self.business_days_only && !calendar.is_business_day(day) {
            "not_a_business_day"
        } else if minute < self.window.0 || minute >= self.window.1 {
            "outside_service_window"
        } else {
            return None;
        };
        Some(reason)
    }

    /// Whether the window, order limits and fee bounds are in order.
    fn is_ordered(&self) -> bool {
        self.window.0 <= self.window.1 && self.window.1 <= 1440 && self.order_min <= self.order_max && self.fee_min <= self.fee_max
    }
}

/// One channel considered for an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub channel: String,
    /// Decimal string in the order's currency.
    pub fee: String,
    pub eta_minutes: u32,
    pub rejected_because: Option<String>,
}

/// A move of a payout to another channel after the first failed it or never received it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fallback {
    pub from: String,
    pub to: String,
    /// `failed`, `timeout` when the channel never received the payout, or `statement` when the
    /// channel's reconciled statement failed it.
    pub reason: String,
    pub fee: String,
    pub candidates: Vec<Candidate>,
}

/// A routing decision as the API shows it: the chosen channel (if any), every candidate, and
/// the fallbacks since.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routing {
    pub chosen: Option<String>,
    pub candidates: Vec<Candidate>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<Fallback>,
}

/// A routing decision with the chosen channel's number and fee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub routing: Routing,
    pub chosen: Option<(u16, Minor)>,
}

/// What routing needs of a payout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteRequest {
    pub amount: Minor,
    pub currency: CurrencySpec,
    pub arrival: Arrival,
    pub account_type: AccountType,
}

/// When a decision is taken: wall-clock microseconds (business day and minute) and a monotonic
/// instant (health cooldowns).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct At {
    pub micros: u64,
    pub instant: Instant,
}

/// Outcomes kept per channel for its health.
const HEALTH_WINDOW: usize = 20;
/// Outcomes needed before a channel can be judged unhealthy.
const HEALTH_SAMPLES_MIN: usize = 10;
/// Failures in a thousand of the window that open the circuit.
const HEALTH_FAILURES_PER_MILLE_MAX: usize = 500;
/// How long an open circuit stays open before one probe order may go through.
const CIRCUIT_COOLDOWN: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct Health {
    outcomes: VecDeque<bool>,
    open_until: Option<Instant>,
    probing: bool,
}

/// Verdict latencies kept per channel (the most recent; older ones are overwritten).
pub const LATENCY_SAMPLES_MAX: usize = 512;

/// A channel's verdicts since the start: how many succeeded and failed, and the latency (from
/// handing an order to the bank to its verdict) of the last `LATENCY_SAMPLES_MAX`, in a ring
/// of fixed size, so memory does not grow with the orders.
#[derive(Debug)]
struct Performance {
    succeeded: u64,
    failed: u64,
    /// Milliseconds, saturated at `u32::MAX`; `len` of them are filled, `next` is overwritten next.
    latencies_ms: Box<[u32; LATENCY_SAMPLES_MAX]>,
    len: usize,
    next: usize,
}

impl Default for Performance {
    fn default() -> Performance {
        Performance { succeeded: 0, failed: 0, latencies_ms: Box::new([0; LATENCY_SAMPLES_MAX]), len: 0, next: 0 }
    }
}

impl Performance {
    fn record(&mut self, succeeded: bool, latency: Duration) {
        if succeeded {
            self.succeeded = self.succeeded.saturating_add(1);
        } else {
            self.failed = self.failed.saturating_add(1);
        }
        self.latencies_ms[self.next] = u32::try_from(latency.as_millis()).unwrap_or(u32::MAX);
        self.next = (self.next + 1) % LATENCY_SAMPLES_MAX;
        self.len = (self.len + 1).min(LATENCY_SAMPLES_MAX);
    }

    fn report(&self) -> LatencyReport {
        let mut sorted = self.latencies_ms[..self.len].to_vec();
        sorted.sort_unstable();
        // Nearest rank: the smallest sample with at least p% of the samples at or below it.
        let rank = |per_cent: usize| sorted.get((sorted.len() * per_cent).div_ceil(100).saturating_sub(1)).map(|ms| u64::from(*ms));
        LatencyReport {
            verdicts_succeeded: self.succeeded,
            verdicts_failed: self.failed,
            samples: sorted.len(),
            p50_ms: rank(50),
            p95_ms: rank(95),
            max_ms: sorted.last().map(|ms| u64::from(*ms)),
        }
    }
}

#[derive(Debug, Default)]
struct Usage {
    day: u32,
    used: HashMap<u16, Minor>,
}

/// A channel as the configuration file (`[[channels]]`) and `POST /admin/channels` give it:
/// amounts as decimal strings in its currency.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// The most a simulated latency or a verdict timeout may be: a day.
const MILLIS_MAX: u64 = 86_400_000;

/// The longest expected arrival a channel may announce: 30 days.
const ETA_MINUTES_MAX: u32 = 43_200;

impl ChannelSpec {
    /// The channel, checked: a configured currency, amounts in it, a window, known words.
    pub fn build(&self, currencies: &[CurrencySpec]) -> Result<Channel, ClearingError> {
        let what = |field: &str| ClearingError::invalid(format!("channel {}: bad {field}", self.name), "channel");
        let spec = currencies.iter().find(|c| c.code_str() == self.currency).ok_or_else(|| what("currency (not configured)"))?;
        let money = |text: &str, field: &str| -> Result<Minor, ClearingError> { spec.parse(text).filter(|m| *m >= 0).ok_or_else(|| what(field)) };
        // A fee is at most the largest amount an order may carry: the day's sums of fees stay
        // far from overflowing.
        let fee = |text: &str, field: &str| money(text, field).and_then(|m| if m <= AMOUNT_MINOR_MAX { Ok(m) } else { Err(what(field)) });
        let window = parse_window(&self.window).ok_or_else(|| what("window"))?;
        // Each number within its bounds, the field named as the error's param.
        let bounds: [(bool, &'static str, &str); 6] = [
            (self.sim_failure_per_mille <= 1000, "sim_failure_per_mille", "0 to 1000"),
            (self.sim_drop_per_mille <= 1000, "sim_drop_per_mille", "0 to 1000"),
            ((0..=10_000).contains(&self.fee_rate_bps), "fee_rate_bps", "0 to 10000"),
            ((100..=MILLIS_MAX).contains(&self.timeout_ms), "timeout_ms", "100 to 86400000"),
            (self.sim_latency_ms <= MILLIS_MAX, "sim_latency_ms", "0 to 86400000"),
            (self.eta_minutes <= ETA_MINUTES_MAX, "eta_minutes", "0 to 43200"),
        ];
        if let Some((_, field, range)) = bounds.iter().find(|(ok, _, _)| !ok) {
            return Err(ClearingError::invalid(format!("channel {}: {field} is {range}", self.name), field));
        }
        if self.name.is_empty() || self.name.len() > 64 || !self.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(what("name (1 to 64 of [A-Za-z0-9_-])"));
        }
        if self.serves.iter().any(|s| s != "personal" && s != "corporate") {
            return Err(what("serves (personal, corporate)"));
        }
        let channel = Channel {
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
            fee_fixed: fee(&self.fee_fixed, "fee_fixed")?,
            fee_rate_bps: self.fee_rate_bps,
            fee_min: fee(&self.fee_min, "fee_min")?,
            fee_max: fee(&self.fee_max, "fee_max")?,
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
        };
        if !channel.is_ordered() {
            return Err(ClearingError::invalid(format!("channel {}: window, order limits or fee bounds are inverted", channel.name), "channel"));
        }
        Ok(channel)
    }
}

/// The channels as they are now: what everyone but the clearing actor reads (names, tariffs,
/// money-in channels). Immutable; the actor publishes a new one after each change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelSet {
    channels: Vec<Channel>,
    calendar: Calendar,
}

impl ChannelSet {
    /// A channel by number.
    pub fn get(&self, id: u16) -> Option<&Channel> {
        self.channels.iter().find(|c| c.id == id)
    }

    /// A channel by name.
    pub fn by_name(&self, name: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.name == name)
    }

    /// The name of a channel number (`offline_transfer` for channel 0).
    pub fn name(&self, id: u16) -> String {
        if id == OFFLINE_CHANNEL {
            return "offline_transfer".into();
        }
        self.get(id).map_or_else(|| format!("channel_{id}"), |c| c.name.clone())
    }

    /// An enabled money-in channel by name; when `name` is `None`, the first configured one in
    /// `currency` (or, if none is, the first configured one: `money_in_refusal` then says why it
    /// cannot take a new order, while a replay of one it took still gets its first answer).
    pub fn money_in(&self, name: Option<&str>, currency: &str) -> Option<&Channel> {
        let mut open = self.channels.iter().filter(|c| c.direction == Direction::In && c.enabled);
        match name {
            Some(name) => open.find(|c| c.name == name),
            None => open.clone().find(|c| c.currency == currency).or_else(|| open.next()),
        }
    }

    /// Why money-in `channel` cannot take a new order of `amount` in `currency` at `micros`, if
    /// it cannot (`Channel::standing_refusal` on the business calendar).
    pub fn money_in_refusal(&self, channel: &Channel, currency: &str, amount: Minor, micros: u64) -> Option<&'static str> {
        channel.standing_refusal(&self.calendar, currency, amount, micros)
    }

    /// The business calendar.
    pub fn calendar(&self) -> &Calendar {
        &self.calendar
    }

    /// Every channel, in configuration order (added ones last).
    pub fn all(&self) -> &[Channel] {
        &self.channels
    }
}

/// Each channel as the operator sees it: configuration, today's usage and health.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChannelReport {
    pub id: u16,
    pub name: String,
    pub kind: String,
    pub direction: &'static str,
    pub currency: String,
    pub arrival: Arrival,
    pub eta_minutes: u32,
    pub fee: FeeReport,
    pub order_min: String,
    pub order_max: String,
    pub daily_cap: String,
    pub used_today: String,
    pub window: String,
    pub business_days_only: bool,
    pub serves: Vec<&'static str>,
    pub enabled: bool,
    pub timeout_ms: u64,
    pub simulator: SimulatorReport,
    pub health: HealthReport,
    pub latency: LatencyReport,
}

/// A channel's verdicts since the clearing actor started and the latency of the recent ones
/// (from handing a payout to the bank to its verdict, as the clearing actor saw it). Only
/// payouts pass through the actor: a money-in channel reports none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LatencyReport {
    pub verdicts_succeeded: u64,
    pub verdicts_failed: u64,
    /// Latencies the percentiles are taken over (the last `LATENCY_SAMPLES_MAX` at most).
    pub samples: usize,
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
    pub max_ms: Option<u64>,
}

/// A channel's tariff as the operator sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FeeReport {
    pub fixed: String,
    pub rate_bps: Minor,
    pub min: String,
    pub max: String,
}

/// The simulated bank's behaviour on a channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SimulatorReport {
    pub latency_ms: u64,
    pub failure_per_mille: u16,
    pub drop_per_mille: u16,
}

/// A channel's recent outcomes and its circuit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HealthReport {
    pub recent_outcomes: usize,
    pub recent_failures: usize,
    /// `closed`, `open` or `half_open`.
    pub circuit: &'static str,
    /// A probe order is out on a half-open circuit.
    pub probing: bool,
}

/// Every configured channel with routing's running state (daily usage, health). Owned by the
/// clearing actor alone.
#[derive(Debug)]
pub struct ChannelTable {
    channels: Vec<Channel>,
    calendar: Calendar,
    usage: Usage,
    health: HashMap<u16, Health>,
    performance: HashMap<u16, Performance>,
}

impl ChannelTable {
    /// The channels and the business calendar.
    pub fn new(channels: Vec<Channel>, calendar: Calendar) -> Result<ChannelTable, ClearingError> {
        let mut ids = BTreeSet::new();
        for channel in &channels {
            if channel.id == OFFLINE_CHANNEL {
                return Err(ClearingError::invalid("channel id 0 is reserved for offline transfers", "id"));
            }
            if !ids.insert(channel.id) || channels.iter().filter(|c| c.name == channel.name).count() > 1 {
                return Err(ClearingError::invalid(format!("channel {} ({}) is configured twice", channel.id, channel.name), "channel"));
            }
            if !channel.is_ordered() {
                return Err(ClearingError::invalid(format!("channel {}: window, order limits or fee bounds are inverted", channel.name), "channel"));
            }
        }
        Ok(ChannelTable { channels, calendar, usage: Usage::default(), health: HashMap::new(), performance: HashMap::new() })
    }

    /// The channels as they are now.
    pub fn set(&self) -> ChannelSet {
        ChannelSet { channels: self.channels.clone(), calendar: self.calendar.clone() }
    }

    /// The business calendar.
    pub fn calendar(&self) -> &Calendar {
        &self.calendar
    }

    /// A channel by number.
    pub fn get(&self, id: u16) -> Option<&Channel> {
        self.channels.iter().find(|c| c.id == id)
    }

    /// Adds the channels the operator added (`h/newchan/`) and applies the operator's stored
    /// changes (`h/chan/`) over the configuration.
    pub fn load_settings(&mut self, store: &dyn Store, currencies: &[CurrencySpec]) -> Result<(), ClearingError> {
        for (_, spec) in storage::records::load_all::<ChannelSpec>(store, ADDED_PREFIX.as_bytes()).map_err(ClearingError::Storage)? {
            let channel = spec.build(currencies)?;
            if self.channels.iter().any(|c| c.id == channel.id || c.name == channel.name) {
                let why = format!("added channel {} ({}) is now also in the configuration file", channel.id, channel.name);
                return Err(ClearingError::invalid(why, "channel"));
            }
            self.channels.push(channel);
        }
        for (_, settings) in storage::records::load_all::<Settings>(store, SETTINGS_PREFIX.as_bytes()).map_err(ClearingError::Storage)? {
            if let Some(channel) = self.channels.iter_mut().find(|c| c.id == settings.id) {
                settings.apply(channel);
            }
        }
        Ok(())
    }

    /// Adds a channel at run time and stores it (it outlives restarts); routing considers it
    /// from the next order on. Its id and name must be new (id 0 is offline transfers').
    pub fn add(&mut self, store: &dyn Store, spec: &ChannelSpec, currencies: &[CurrencySpec]) -> Result<Channel, ClearingError> {
        // The contract's bound on the free label (characters, as JSON Schema counts them).
        // Checked here, not in `build`: a channel stored or configured before the check still
        // loads.
        if spec.kind.chars().count() > CHANNEL_KIND_MAX {
            return Err(ClearingError::invalid(format!("a channel's kind is at most {CHANNEL_KIND_MAX} characters"), "kind"));
        }
        let channel = spec.build(currencies)?;
        if channel.id == OFFLINE_CHANNEL || self.channels.iter().any(|c| c.id == channel.id) {
            return Err(ClearingError::invalid("a channel id is new and not 0", "id"));
        }
        if self.channels.iter().any(|c| c.name == channel.name) {
            return Err(ClearingError::invalid("a channel name is new", "name"));
        }
        let key = format!("{ADDED_PREFIX}{:05}", channel.id).into_bytes();
        storage::records::put(store, &[(key, spec)]).map_err(|e| ClearingError::Storage(e.to_string()))?;
        self.channels.push(channel.clone());
        Ok(channel)
    }

    /// Changes a channel at run time and stores the change (it outlives restarts; the
    /// configuration file's values are the starting point). Routing sees it at once.
    pub fn update(&mut self, store: &dyn Store, name: &str, change: &ChannelChange) -> Result<Channel, ClearingError> {
        let channel = self.channels.iter_mut().find(|c| c.name == name).ok_or(ClearingError::NotFound)?;
        let mut changed = channel.clone();
        change.apply(&mut changed)?;
        if !changed.is_ordered() {
            return Err(ClearingError::invalid("window, order limits or fee bounds would be inverted", "channel"));
        }
        let key = format!("{SETTINGS_PREFIX}{:05}", changed.id).into_bytes();
        storage::records::put(store, &[(key, &Settings::of(&changed))]).map_err(|e| ClearingError::Storage(e.to_string()))?;
        *channel = changed.clone();
        Ok(changed)
    }

    /// Why `channel` cannot take a payout now, if it cannot.
    fn refusal(&self, channel: &Channel, request: &RouteRequest, at: At, used: Minor) -> Option<&'static str> {
        let served = match request.account_type {
            AccountType::Personal => channel.serves_personal,
            AccountType::Corporate => channel.serves_corporate,
        };
        let standing = || channel.standing_refusal(&self.calendar, request.currency.code_str(), request.amount, at.micros);
        let reason = if !channel.enabled {
            "disabled"
        } else if !served {
            "account_type_not_served"
        } else if request.arrival == Arrival::Realtime && channel.arrival != Arrival::Realtime {
            "arrival_too_slow"
        } else if let Some(reason) = standing() {
            reason
        } else if used as i128 + request.amount as i128 > channel.daily_cap as i128 {
            "daily_cap_exhausted"
        } else if !self.healthy(channel.id, at.instant) {
            "unhealthy"
        } else {
            return None;
        };
        Some(reason)
    }

    /// Routes a payout at `at`, with the channels in `exclude` refused as `failed_already` (a
    /// fallback after they failed it): every money-out channel is a candidate; the viable ones
    /// are ordered by fee, then expected arrival; the first is chosen, its daily usage taken, and
    /// on a half-open circuit it becomes the probe. Give both back with `release` when the
    /// order is refused or fails.
    pub fn route(&mut self, request: &RouteRequest, at: At, exclude: &[u16]) -> Decision {
        let (day, _) = self.calendar.local(at.micros);
        if self.usage.day != day {
            self.usage.day = day;
            self.usage.used.clear();
        }
        let decision = self.decide(request, at, exclude);
        if let Some((id, _)) = &decision.chosen {
            *self.usage.used.entry(*id).or_insert(0) += request.amount;
            if let Some(health) = self.health.get_mut(id) {
                if health.open_until.is_some() {
                    health.probing = true;
                }
            }
        }
        decision
    }

    /// What `route` would decide for a payout at `at`, taking nothing (no daily usage, no
    /// probe): the preview a page shows before the order is confirmed. Routing at submission
    /// decides again, and its answer is the one that counts.
    pub fn quote(&self, request: &RouteRequest, at: At) -> Decision {
        self.decide(request, at, &[])
    }

    /// Every money-out channel as a candidate, the viable ones by fee, then expected arrival;
    /// the first viable one chosen.
    fn decide(&self, request: &RouteRequest, at: At, exclude: &[u16]) -> Decision {
        let (day, _) = self.calendar.local(at.micros);
        let mut rows: Vec<(Option<&'static str>, Minor, &Channel)> = self
            .channels
            .iter()
            .filter(|c| c.direction == Direction::Out)
            .map(|c| {
                let used = if self.usage.day == day { self.usage.used.get(&c.id).copied().unwrap_or(0) } else { 0 };
                let refusal = if exclude.contains(&c.id) { Some("failed_already") } else { self.refusal(c, request, at, used) };
                (refusal, c.fee(request.amount), c)
            })
            .collect();
        rows.sort_by_key(|(refusal, fee, c)| (refusal.is_some(), *fee, c.eta_minutes, c.id));
        let chosen = rows.iter().find(|(refusal, ..)| refusal.is_none()).map(|(_, fee, c)| (c.id, c.name.clone(), *fee));
        let candidates = rows
            .iter()
            .map(|(refusal, fee, c)| Candidate {
                channel: c.name.clone(),
                fee: request.currency.format(*fee),
                eta_minutes: c.eta_minutes,
                rejected_because: refusal.map(str::to_string),
            })
            .collect();
        Decision { routing: Routing { chosen: chosen.as_ref().map(|c| c.1.clone()), candidates, fallbacks: Vec::new() }, chosen: chosen.map(|c| (c.0, c.2)) }
    }

    /// Gives back what routing took for a payout that was refused or failed: its daily usage
    /// (on the day of `routed_at`) and, if it was the channel's probe, the probe, so that the
    /// next order can probe the channel instead of finding it stuck unhealthy.
    pub fn release(&mut self, channel: u16, amount: Minor, routed_at: u64) {
        let (day, _) = self.calendar.local(routed_at);
        if self.usage.day == day {
            if let Some(used) = self.usage.used.get_mut(&channel) {
                *used = (*used - amount).max(0);
            }
        }
        self.release_probe(channel);
    }

    /// A probe that never reached the bank (refused, or given back) frees the half-open circuit.
    pub fn release_probe(&mut self, channel: u16) {
        if let Some(health) = self.health.get_mut(&channel) {
            health.probing = false;
        }
    }

    /// Counts a payout routed earlier today (rebuilding usage at start).
    pub fn count_used(&mut self, channel: u16, amount: Minor, now: u64, created_at: u64) {
        let (day, created_day) = (self.calendar.day(now), self.calendar.day(created_at));
        if self.usage.day != day {
            self.usage.day = day;
            self.usage.used.clear();
        }
        if created_day == day {
            *self.usage.used.entry(channel).or_insert(0) += amount;
        }
    }

    fn healthy(&self, channel: u16, now: Instant) -> bool {
        match self.health.get(&channel) {
            None => true,
            // Open: refused until the cooldown passed, then one probe at a time.
            Some(h) => match h.open_until {
                None => true,
                Some(until) => now >= until && !h.probing,
            },
        }
    }

    /// Records a channel's verdict on an order: the sliding window decides whether the circuit
    /// opens; a probe's success closes it, its failure opens it again.
    pub fn record_outcome(&mut self, channel: u16, succeeded: bool, now: Instant) {
        let h = self.health.entry(channel).or_default();
        if h.open_until.is_some() && h.probing {
            h.probing = false;
            if succeeded {
                h.open_until = None;
                h.outcomes.clear();
            } else {
                h.open_until = Some(now + CIRCUIT_COOLDOWN);
            }
            return;
        }
        h.outcomes.push_back(succeeded);
        if h.outcomes.len() > HEALTH_WINDOW {
            h.outcomes.pop_front();
        }
        let failures = h.outcomes.iter().filter(|ok| !**ok).count();
        if h.open_until.is_none() && h.outcomes.len() >= HEALTH_SAMPLES_MIN && failures * 1000 >= h.outcomes.len() * HEALTH_FAILURES_PER_MILLE_MAX {
            h.open_until = Some(now + CIRCUIT_COOLDOWN);
        }
    }

    /// Records a bank's verdict on an order it was handed `latency` ago (success rate and
    /// latency percentiles; bounded per channel). Health is `record_outcome`'s.
    pub fn record_verdict(&mut self, channel: u16, succeeded: bool, latency: Duration) {
        self.performance.entry(channel).or_default().record(succeeded, latency);
    }

    /// Opens a channel's circuit until `until` (tests and operators).
    pub fn trip(&mut self, channel: u16, until: Instant) {
        let h = self.health.entry(channel).or_default();
        h.open_until = Some(until);
        h.probing = false;
    }

    /// Each channel as the operator sees it: configuration, today's usage and health.
    pub fn report(&self, at: At) -> Vec<ChannelReport> {
        let (day, _) = self.calendar.local(at.micros);
        self.channels
            .iter()
            .map(|c| {
                let spec = c.spec();
                let used = if self.usage.day == day { self.usage.used.get(&c.id).copied().unwrap_or(0) } else { 0 };
                let h = self.health.get(&c.id);
                let minute = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
                ChannelReport {
                    id: c.id,
                    name: c.name.clone(),
                    kind: c.kind.clone(),
                    direction: if c.direction == Direction::In { "in" } else { "out" },
                    currency: c.currency.clone(),
                    arrival: c.arrival,
                    eta_minutes: c.eta_minutes,
                    fee: FeeReport { fixed: spec.format(c.fee_fixed), rate_bps: c.fee_rate_bps, min: spec.format(c.fee_min), max: spec.format(c.fee_max) },
                    order_min: spec.format(c.order_min),
                    order_max: spec.format(c.order_max),
                    daily_cap: spec.format(c.daily_cap),
                    used_today: spec.format(used),
                    window: format!("{}-{}", minute(c.window.0), minute(c.window.1)),
                    business_days_only: c.business_days_only,
                    serves: [c.serves_personal.then_some("personal"), c.serves_corporate.then_some("corporate")].into_iter().flatten().collect(),
                    enabled: c.enabled,
                    timeout_ms: c.timeout_ms,
                    simulator: SimulatorReport {
                        latency_ms: c.sim_latency_ms,
                        failure_per_mille: c.sim_failure_per_mille,
                        drop_per_mille: c.sim_drop_per_mille,
                    },
                    health: HealthReport {
                        recent_outcomes: h.map_or(0, |h| h.outcomes.len()),
                        recent_failures: h.map_or(0, |h| h.outcomes.iter().filter(|ok| !**ok).count()),
                        circuit: match h.and_then(|h| h.open_until) {
                            None => "closed",
                            Some(until) if at.instant < until => "open",
                            Some(_) => "half_open",
                        },
                        probing: h.is_some_and(|h| h.probing),
                    },
                    latency: self.performance.get(&c.id).map_or_else(LatencyReport::default, Performance::report),
                }
            })
            .collect()
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

    /// Applies stored settings. Numbers are held to the bounds `ChannelChange` checks: a value
    /// stored before a bound existed (e.g. `sim_latency_ms` of 2^64 - 1) is brought within it.
    fn apply(&self, c: &mut Channel) {
        let fee = |m: Minor| m.clamp(0, AMOUNT_MINOR_MAX);
        (c.fee_fixed, c.fee_rate_bps, c.fee_min, c.fee_max) = (fee(self.fee_fixed), self.fee_rate_bps.clamp(0, 10_000), fee(self.fee_min), fee(self.fee_max));
        (c.order_min, c.order_max, c.daily_cap, c.window) = (self.order_min, self.order_max, self.daily_cap, self.window);
        (c.business_days_only, c.eta_minutes, c.enabled) = (self.business_days_only, self.eta_minutes.min(ETA_MINUTES_MAX), self.enabled);
        (c.sim_latency_ms, c.sim_failure_per_mille, c.sim_drop_per_mille) =
            (self.sim_latency_ms.min(MILLIS_MAX), self.sim_failure_per_mille.min(1000), self.sim_drop_per_mille.min(1000));
        c.timeout_ms = self.timeout_ms.clamp(100, MILLIS_MAX);
    }
}

/// `PATCH /admin/channels/{name}` body: the fields to change (amounts in the channel's currency).
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// The bank simulator's behaviour for this channel (milliseconds, at most a day).
    pub sim_latency_ms: Option<u64>,
    pub sim_failure_per_mille: Option<u16>,
    /// Payouts in a thousand the simulated bank never receives.
    pub sim_drop_per_mille: Option<u16>,
    /// Milliseconds to wait for a payout's verdict before asking the channel (100 to a day).
    pub timeout_ms: Option<u64>,
}

impl ChannelChange {
    fn apply(&self, c: &mut Channel) -> Result<(), ClearingError> {
        let spec = c.spec();
        let amount = |text: &Option<String>, param: &'static str, current: Minor| -> Result<Minor, ClearingError> {
            match text {
                None => Ok(current),
                Some(text) => {
                    spec.parse(text).filter(|m| *m >= 0).ok_or_else(|| ClearingError::invalid("a non-negative amount in the channel's currency", param))
                }
            }
        };
        // A fee is at most the largest amount an order may carry (the day's sums stay in range).
        let fee = |text: &Option<String>, param: &'static str, current: Minor| -> Result<Minor, ClearingError> {
            let fee = amount(text, param, current)?;
            if fee > AMOUNT_MINOR_MAX {
                return Err(ClearingError::invalid("a fee of at most 10^15 minor units", param));
            }
            Ok(fee)
        };
        c.fee_fixed = fee(&self.fee_fixed, "fee_fixed", c.fee_fixed)?;
        c.fee_min = fee(&self.fee_min, "fee_min", c.fee_min)?;
        c.fee_max = fee(&self.fee_max, "fee_max", c.fee_max)?;
        c.order_min = amount(&self.order_min, "order_min", c.order_min)?;
        c.order_max = amount(&self.order_max, "order_max", c.order_max)?;
        c.daily_cap = amount(&self.daily_cap, "daily_cap", c.daily_cap)?;
        if let Some(bps) = self.fee_rate_bps {
            if bps > 10_000 {
                return Err(ClearingError::invalid("fee_rate_bps is 0 to 10000", "fee_rate_bps"));
            }
            c.fee_rate_bps = bps as Minor;
        }
        if let Some(window) = &self.window {
            c.window = parse_window(window).ok_or_else(|| ClearingError::invalid("window is HH:MM-HH:MM", "window"))?;
        }
        let per_mille = |value: Option<u16>, param: &'static str, current: u16| match value {
            Some(value) if value > 1000 => Err(ClearingError::invalid(format!("{param} is 0 to 1000"), param)),
            Some(value) => Ok(value),
            None => Ok(current),
        };
        c.sim_failure_per_mille = per_mille(self.sim_failure_per_mille, "sim_failure_per_mille", c.sim_failure_per_mille)?;
        c.sim_drop_per_mille = per_mille(self.sim_drop_per_mille, "sim_drop_per_mille", c.sim_drop_per_mille)?;
        if let Some(timeout_ms) = self.timeout_ms {
            if !(100..=MILLIS_MAX).contains(&timeout_ms) {
                return Err(ClearingError::invalid("timeout_ms is 100 to 86400000", "timeout_ms"));
            }
            c.timeout_ms = timeout_ms;
        }
        if let Some(latency_ms) = self.sim_latency_ms {
            if latency_ms > MILLIS_MAX {
                return Err(ClearingError::invalid("sim_latency_ms is 0 to 86400000", "sim_latency_ms"));
            }
            c.sim_latency_ms = latency_ms;
        }
        c.enabled = self.enabled.unwrap_or(c.enabled);
        c.business_days_only = self.business_days_only.unwrap_or(c.business_days_only);
        if let Some(eta_minutes) = self.eta_minutes {
            if eta_minutes > ETA_MINUTES_MAX {
                return Err(ClearingError::invalid("eta_minutes is 0 to 43200", "eta_minutes"));
            }
            c.eta_minutes = eta_minutes;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::parse_window;

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

    fn router(extra: impl Fn(&mut Vec<Channel>)) -> ChannelTable {
        let mut cheap = channel(1, "cheap");
        cheap.fee_fixed = 100;
        let mut dear = channel(2, "dear");
        dear.fee_fixed = 500;
        let mut channels = vec![cheap, dear];
        extra(&mut channels);
        ChannelTable::new(channels, Calendar { utc_offset_seconds: 8 * 3600, holidays: BTreeSet::from([20_781]) }).unwrap()
    }

    fn chosen(decision: &Decision) -> (Option<&str>, Vec<Option<&str>>) {
        (decision.routing.chosen.as_deref(), decision.routing.candidates.iter().map(|c| c.rejected_because.as_deref()).collect())
    }

    /// One instant for a whole test: health cooldowns are given as instants relative to it.
    fn start() -> Instant {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *START.get_or_init(Instant::now)
    }

    /// The old router's calls, on the table (amounts in CNY fen).
    impl ChannelTable {
        fn route_at(&mut self, amount: Minor, arrival: Arrival, account_type: AccountType, micros: u64, exclude: &[u16]) -> Decision {
            let request = RouteRequest { amount, currency: CurrencySpec::new("CNY", 2).unwrap(), arrival, account_type };
            self.route(&request, At { micros, instant: start() }, exclude)
        }
    }

    #[test]
    fn a_quote_shows_what_routing_would_choose_and_takes_nothing() {
        let mut table = router(|channels| channels[0].daily_cap = 1_000);
        let request =
            RouteRequest { amount: 600, currency: CurrencySpec::new("CNY", 2).unwrap(), arrival: Arrival::Standard, account_type: AccountType::Personal };
        let at = At { micros: MONDAY_10_00, instant: start() };
        // Quoted twice: the cheap channel both times, as nothing of its daily cap was taken.
        for _ in 0..2 {
            let quote = table.quote(&request, at);
            assert_eq!(chosen(&quote), (Some("cheap"), vec![None, None]));
            assert_eq!(quote.chosen.map(|(id, _)| id), Some(1));
        }
        assert_eq!(table.report(at)[0].used_today, "0.00");
        // Routed once, the cap is taken: the next quote names the dear channel and why.
        assert_eq!(chosen(&table.route(&request, at, &[])).0, Some("cheap"));
        let quote = table.quote(&request, at);
        assert_eq!(chosen(&quote), (Some("dear"), vec![None, Some("daily_cap_exhausted")]));
        assert_eq!(quote.chosen.map(|(id, _)| id), Some(2));
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
            let decision = router(setup).route_at(amount, arrival, account, now, &[]);
            let (got, reasons) = chosen(&decision);
            assert_eq!(got, expected, "{name}");
            assert_eq!(decision.routing.candidates.len(), 2, "{name}: every channel is a candidate");
            let reason = reasons.iter().flatten().next().copied().unwrap_or("cheap first");
            assert_eq!(reason, first_reason, "{name}: {decision:?}");
        }
    }

    #[test]
    fn daily_caps_are_taken_and_given_back() {
        let mut channels = router(|c| c[0].daily_cap = 1_500);
        let route = |channels: &mut ChannelTable, at| channels.route_at(1_000, Arrival::Realtime, AccountType::Personal, at, &[]).routing.chosen;
        assert_eq!(route(&mut channels, MONDAY_10_00).as_deref(), Some("cheap"));
        assert_eq!(route(&mut channels, MONDAY_10_00).as_deref(), Some("dear"));
        channels.release(1, 1_000, MONDAY_10_00);
        assert_eq!(route(&mut channels, MONDAY_10_00).as_deref(), Some("cheap"));
        assert_eq!(route(&mut channels, MONDAY_10_00 + DAY).as_deref(), Some("cheap"), "a new day, a new cap");
    }

    #[test]
    fn an_unhealthy_channel_is_skipped_until_a_probe_succeeds() {
        let mut channels = router(|_| {});
        for _ in 0..10 {
            channels.record_outcome(1, false, start());
        }
        let route = |channels: &mut ChannelTable| channels.route_at(1_000, Arrival::Realtime, AccountType::Personal, MONDAY_10_00, &[]);
        let decision = route(&mut channels);
        assert_eq!((decision.routing.chosen.as_deref(), decision.routing.candidates[1].rejected_because.as_deref()), (Some("dear"), Some("unhealthy")));
        channels.trip(1, start());
        assert_eq!(route(&mut channels).routing.chosen.as_deref(), Some("cheap"), "after the cooldown one probe goes through");
        assert_eq!(route(&mut channels).routing.chosen.as_deref(), Some("dear"), "only one probe at a time");
        channels.record_outcome(1, true, start());
        assert_eq!(route(&mut channels).routing.chosen.as_deref(), Some("cheap"), "the probe's success closes the circuit");
    }

    #[test]
    fn verdict_latencies_keep_a_bounded_ring_and_report_percentiles() {
        let mut channels = router(|_| {});
        let at = At { micros: MONDAY_10_00, instant: start() };
        assert_eq!(channels.report(at)[0].latency, LatencyReport::default(), "no verdict yet: no percentile");
        // 1..=100 ms: nearest-rank p50 is 50, p95 is 95; one failure among them.
        for ms in 1..=100u64 {
            channels.record_verdict(1, ms != 7, Duration::from_millis(ms));
        }
        let latency = channels.report(at)[0].latency.clone();
        assert_eq!(
            (latency.verdicts_succeeded, latency.verdicts_failed, latency.samples, latency.p50_ms, latency.p95_ms, latency.max_ms),
            (99, 1, 100, Some(50), Some(95), Some(100))
        );
        assert_eq!(channels.report(at)[1].latency.samples, 0, "per channel");
        // Past the ring's size the oldest are overwritten: memory stays fixed, counts go on.
        for _ in 0..LATENCY_SAMPLES_MAX {
            channels.record_verdict(1, true, Duration::from_secs(2));
        }
        let latency = channels.report(at)[0].latency.clone();
        assert_eq!(
            (latency.verdicts_succeeded, latency.samples, latency.p50_ms, latency.max_ms),
            (99 + LATENCY_SAMPLES_MAX as u64, LATENCY_SAMPLES_MAX, Some(2_000), Some(2_000))
        );
        // A latency past u32 milliseconds saturates instead of wrapping.
        channels.record_verdict(2, false, Duration::from_secs(u64::MAX / 4));
        assert_eq!(channels.report(at)[1].latency.max_ms, Some(u64::from(u32::MAX)));
    }

    #[test]
    fn a_probe_the_engine_refused_is_released() {
        // Regression: the probe's payout was refused (insufficient funds) and never reached the
        // bank, so no verdict came; the channel stayed half open with its probe out, unhealthy
        // to every later order until a restart.
        let mut channels = router(|_| {});
        channels.trip(1, start());
        let route = |channels: &mut ChannelTable| channels.route_at(1_000, Arrival::Realtime, AccountType::Personal, MONDAY_10_00, &[]);
        assert_eq!(route(&mut channels).routing.chosen.as_deref(), Some("cheap"), "the probe");
        assert_eq!(route(&mut channels).routing.chosen.as_deref(), Some("dear"), "the probe is out");
        channels.release(1, 1_000, MONDAY_10_00);
        channels.release_probe(1);
        assert_eq!(route(&mut channels).routing.chosen.as_deref(), Some("cheap"), "a new probe may go");
        assert!(channels.report(At { micros: MONDAY_10_00, instant: start() })[0].health.probing);
    }

    #[test]
    fn a_fallback_skips_the_channels_that_failed() {
        let mut channels = router(|_| {});
        let decision = channels.route_at(1_000, Arrival::Realtime, AccountType::Personal, MONDAY_10_00, &[1]);
        assert_eq!(chosen(&decision), (Some("dear"), vec![None, Some("failed_already")]));
        let none = channels.route_at(1_000, Arrival::Realtime, AccountType::Personal, MONDAY_10_00, &[1, 2]);
        assert_eq!(none.routing.chosen, None);
    }

    #[test]
    fn operator_changes_apply_at_once_and_are_stored() {
        let store = storage::MemoryStore::new();
        let mut channels = router(|_| {});
        let route = |channels: &mut ChannelTable| channels.route_at(1_000, Arrival::Realtime, AccountType::Personal, MONDAY_10_00, &[]).routing.chosen;
        assert_eq!(route(&mut channels).as_deref(), Some("cheap"));
        let change =
            ChannelChange { fee_fixed: Some("9.00".into()), fee_max: Some("20.00".into()), window: Some("11:00-17:00".into()), ..ChannelChange::default() };
        let changed = channels.update(&store, "cheap", &change).unwrap();
        assert_eq!((changed.fee_fixed, changed.fee(1_000), changed.window), (900, 900, (660, 1020)));
        assert_eq!(route(&mut channels).as_deref(), Some("dear"), "closed at 10:00 now");
        // Refused changes change nothing.
        for bad in [
            ChannelChange { fee_fixed: Some("-1.00".into()), ..ChannelChange::default() },
            ChannelChange { window: Some("17:00-08:30".into()), ..ChannelChange::default() },
            ChannelChange { fee_rate_bps: Some(10_001), ..ChannelChange::default() },
            ChannelChange { order_min: Some("99999999.00".into()), ..ChannelChange::default() },
            // Regression: an operator's latency past any sane bound was stored.
            ChannelChange { sim_latency_ms: Some(u64::MAX), ..ChannelChange::default() },
            ChannelChange { timeout_ms: Some(u64::MAX), ..ChannelChange::default() },
            // Regression (helper 109): a fee near i64::MAX overflowed the nightly sums of fees.
            ChannelChange { fee_min: Some("92233720368547758.07".into()), fee_max: Some("92233720368547758.07".into()), ..ChannelChange::default() },
            ChannelChange { fee_fixed: Some("10000000000000.01".into()), ..ChannelChange::default() },
        ] {
            assert!(channels.update(&store, "cheap", &bad).is_err(), "{bad:?}");
        }
        assert!(matches!(channels.update(&store, "nowhere", &ChannelChange::default()), Err(ClearingError::NotFound)));
        assert_eq!(channels.get(1).unwrap().fee_fixed, 900);
        // An added channel (faster than both) is routed to at once.
        let currencies = [CurrencySpec::new("CNY", 2).unwrap()];
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
        assert_eq!(route(&mut channels).as_deref(), Some("fast"));
        assert!(channels.add(&store, &spec(7, "again"), &currencies).is_err(), "ids are new");
        assert!(channels.add(&store, &spec(8, "fast"), &currencies).is_err(), "names are new");
        assert!(channels.add(&store, &spec(0, "offline"), &currencies).is_err(), "0 is offline transfers'");
        assert!(channels.add(&store, &ChannelSpec { currency: "XYZ".into(), ..spec(9, "x") }, &currencies).is_err());
        // Regression (Schemathesis): a kind past the contract's 64 characters was stored.
        let long = ChannelSpec { kind: "\u{88}é".repeat(32) + "*", ..spec(9, "x") };
        assert!(matches!(channels.add(&store, &long, &currencies), Err(ClearingError::Invalid { param: "kind", .. })));
        assert!(channels.get(9).is_none());
        assert!(channels.add(&store, &ChannelSpec { window: "9-5".into(), ..spec(9, "x") }, &currencies).is_err());
        assert!(channels.add(&store, &ChannelSpec { order_min: "9.00".into(), order_max: "1.00".into(), ..spec(9, "x") }, &currencies).is_err());
        // A restart with the same configuration has the added channel and the stored change.
        let mut restarted = router(|_| {});
        restarted.load_settings(&store, &currencies).unwrap();
        assert_eq!(restarted.get(7).map(|c| c.name.clone()), Some("fast".to_string()));
        assert_eq!(restarted.set().name(7), "fast");
        assert_eq!((restarted.get(1).unwrap().fee_fixed, restarted.get(1).unwrap().window), (900, (660, 1020)));
        let off = ChannelChange { enabled: Some(false), fee_fixed: Some("0.00".into()), ..ChannelChange::default() };
        restarted.update(&store, "cheap", &off).unwrap();
        restarted.update(&store, "fast", &ChannelChange { enabled: Some(false), ..ChannelChange::default() }).unwrap();
        let decision = restarted.route_at(1_000, Arrival::Realtime, AccountType::Personal, MONDAY_10_00, &[]);
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
