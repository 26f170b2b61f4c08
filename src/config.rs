//! The configuration file (config/default.toml is embedded as the default).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use engine::chart::ChartOfAccounts;
use engine::money::CurrencySpec;
use engine::EngineConfig;
use serde::Deserialize;

/// The embedded default configuration.
pub const DEFAULT_CONFIG: &str = include_str!("../config/default.toml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: String,
    data_dir: PathBuf,
    engine: EngineSection,
    simulator: SimulatorSection,
    webhooks: WebhooksSection,
    /// Optional sections, so that files written before they existed still load.
    #[serde(default)]
    secrets: SecretsSection,
    #[serde(default)]
    cards: CardsSection,
    #[serde(default)]
    portal: PortalSection,
    channels: Vec<clearing_actor::channels::ChannelSpec>,
    calendar: CalendarSection,
    settlement: SettlementSection,
    currencies: Vec<CurrencyRow>,
    chart_of_accounts: BTreeMap<String, SubjectRow>,
    /// Optional, so that files written before the section existed still load.
    #[serde(default)]
    http: HttpSection,
    #[serde(default)]
    quotas: QuotasSection,
    #[serde(default)]
    backups: BackupsSection,
    #[serde(default)]
    log: LogSection,
    #[serde(default)]
    memory: MemorySection,
    #[serde(default)]
    storage: StorageSection,
}

/// `[storage]`: how the RocksDB database runs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StorageSection {
    /// How the rows family compacts: "universal" or "leveled" (`storage_rocks::RowsCompaction`).
    #[serde(default = "default_rows_compaction")]
    rows_compaction: String,
}

impl Default for StorageSection {
    fn default() -> StorageSection {
        StorageSection { rows_compaction: default_rows_compaction() }
    }
}

fn default_rows_compaction() -> String {
    storage_rocks::RowsCompaction::default().name().into()
}

/// `[memory]`: giving the allocator's free memory back to the kernel (`memory::Trimmer`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemorySection {
    trim_above_mib: u64,
}

impl Default for MemorySection {
    fn default() -> MemorySection {
        MemorySection { trim_above_mib: crate::memory::TRIM_ABOVE_MIB }
    }
}

/// `[backups]`: where `POST /admin/backups` may write.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BackupsSection {
    /// The directory backups are written under (absolute); unset: backups through the API are off.
    root: Option<PathBuf>,
}

/// `[log]`: how the server writes its log (to stderr).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogSection {
    #[serde(default)]
    format: LogFormat,
    #[serde(default = "default_log_level")]
    level: String,
}

impl Default for LogSection {
    fn default() -> LogSection {
        LogSection { format: LogFormat::default(), level: default_log_level() }
    }
}

fn default_log_level() -> String {
    "info".to_string()
}

/// The log's line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields, the request's span).
    Json,
}

/// The log's format and filter (`[log]`; `CLEARING_LOG` overrides the level).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter: a level (`info`) or directives (`info,gateway::request_id=debug`).
    pub level: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpSection {
    workers: usize,
    connections_max: usize,
    body_bytes_max: usize,
    head_timeout_ms: u64,
    body_timeout_ms: u64,
    keep_alive_ms: u64,
    disconnect_timeout_ms: u64,
}

impl Default for HttpSection {
    fn default() -> HttpSection {
        let d = gateway::server::HttpLimits::default();
        let ms = |d: std::time::Duration| d.as_millis() as u64;
        HttpSection {
            workers: d.workers,
            connections_max: d.connections_max,
            body_bytes_max: d.body_bytes_max,
            head_timeout_ms: ms(d.head_timeout),
            body_timeout_ms: ms(d.body_timeout),
            keep_alive_ms: ms(d.keep_alive),
            disconnect_timeout_ms: ms(d.disconnect_timeout),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotasSection {
    requests_per_second: u32,
    burst: u32,
    in_flight_max: u32,
    nonces_max: u32,
    body_bytes_max: usize,
    /// Overrides by platform id (`plt_7`); a key left out takes the value above.
    #[serde(default)]
    platforms: BTreeMap<String, QuotaOverride>,
}

impl Default for QuotasSection {
    fn default() -> QuotasSection {
        let d = gateway::quotas::QuotaLimits::default();
        QuotasSection {
            requests_per_second: d.requests_per_second,
            burst: d.burst,
            in_flight_max: d.in_flight_max,
            nonces_max: d.nonces_max,
            body_bytes_max: d.body_bytes_max,
            platforms: BTreeMap::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaOverride {
    requests_per_second: Option<u32>,
    burst: Option<u32>,
    in_flight_max: Option<u32>,
    nonces_max: Option<u32>,
    body_bytes_max: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EngineSection {
    shard_count: u16,
    mailbox_capacity: usize,
    /// Optional, so that files written before the key existed still load.
    #[serde(default = "default_inbound_capacity")]
    inbound_capacity: usize,
    /// Optional, so that files written before the key existed still load.
    #[serde(default = "default_control_capacity")]
    control_capacity: usize,
    batch_size_max: usize,
    outbox_pending_max: usize,
    ack_flush_ms: u64,
    utc_offset_seconds: i32,
    /// Optional, so that files written before checkpoints existed still load (defaults then).
    #[serde(default)]
    checkpoints: CheckpointSection,
    /// Optional (32 MiB when absent).
    #[serde(default = "default_cold_filter_mib")]
    cold_filter_mib: usize,
}

fn default_every_orders() -> u64 {
    engine::shard::DEFAULT_EVERY_ORDERS
}

fn default_cold_filter_mib() -> usize {
    engine::cold::COLD_FILTER_BYTES >> 20
}

/// `[engine.checkpoints]`: when each shard writes a checkpoint of its state.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointSection {
    every_batches: u64,
    /// Absent from files written before it: the default.
    #[serde(default = "default_every_orders")]
    every_orders: u64,
    every_seconds: u64,
    kept: usize,
    on_shutdown: bool,
}

impl Default for CheckpointSection {
    fn default() -> CheckpointSection {
        let d = EngineConfig::default().checkpoints;
        CheckpointSection {
            every_batches: d.every_batches,
            every_orders: d.every_orders,
            every_seconds: d.every.as_secs(),
            kept: d.kept,
            on_shutdown: d.on_shutdown,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SimulatorSection {
    enabled: bool,
    latency_ms: u64,
    failure_per_mille: u16,
    callback_attempts_max: u32,
    #[serde(default = "default_true")]
    pages: bool,
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretsSection {
    master_key_file: Option<PathBuf>,
    admin_token_file: Option<PathBuf>,
    #[serde(default = "default_rotation_overlap_seconds")]
    rotation_overlap_seconds: u64,
}

impl Default for SecretsSection {
    fn default() -> SecretsSection {
        SecretsSection { master_key_file: None, admin_token_file: None, rotation_overlap_seconds: default_rotation_overlap_seconds() }
    }
}

fn default_rotation_overlap_seconds() -> u64 {
    gateway::platforms::ROTATION_OVERLAP_SECONDS_DEFAULT
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CardsSection {
    binds_per_account_per_day: u32,
}

impl Default for CardsSection {
    fn default() -> CardsSection {
        CardsSection { binds_per_account_per_day: gateway::cards::BINDS_PER_ACCOUNT_PER_DAY_DEFAULT }
    }
}

/// `[portal]`: the operators' sessions.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PortalSection {
    session_idle_seconds: i64,
    session_absolute_seconds: i64,
    secure_cookies: bool,
    /// Optional, so that files written before the key existed still load.
    #[serde(default = "sign_in_failures_per_address_default")]
    sign_in_failures_per_address: u32,
    /// Optional, as above: proxies whose `X-Forwarded-For` names the client.
    #[serde(default)]
    trusted_proxies: Vec<String>,
}

fn sign_in_failures_per_address_default() -> u32 {
    gateway::portal::SessionLimits::default().sign_in_failures_per_address
}

impl Default for PortalSection {
    fn default() -> PortalSection {
        let limits = gateway::portal::SessionLimits::default();
        PortalSection {
            session_idle_seconds: limits.idle_seconds,
            session_absolute_seconds: limits.absolute_seconds,
            secure_cookies: limits.secure_cookies,
            sign_in_failures_per_address: limits.sign_in_failures_per_address,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhooksSection {
    attempts_max: u32,
    backoff_ms: u64,
    backoff_ms_max: u64,
    timeout_seconds: u64,
    /// Optional, so that files written before the key existed still load.
    #[serde(default = "default_webhook_workers")]
    workers: usize,
    #[serde(default)]
    allow_insecure_loopback: bool,
    #[serde(default = "default_deliveries_per_second_max")]
    deliveries_per_second_max: u32,
    /// Per platform (by its public id, `plt_7`): deliveries per second.
    #[serde(default)]
    per_platform: BTreeMap<String, u32>,
}

fn default_deliveries_per_second_max() -> u32 {
    gateway::events::WebhookConfig::default().deliveries_per_second_max
}

fn default_inbound_capacity() -> usize {
    engine::EngineConfig::default().inbound_capacity
}

fn default_control_capacity() -> usize {
    engine::EngineConfig::default().control_capacity
}

fn default_webhook_workers() -> usize {
    gateway::events::WebhookConfig::default().workers
}

/// The most `[settlement] days_ahead_max` may be (tests that settle far dates, a tier's month
/// ahead, set it high; production leaves it 0).
const SETTLEMENT_DAYS_AHEAD_MAX: u32 = 100_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettlementSection {
    scheduled: bool,
    cutoff: String,
    #[serde(default)]
    days_ahead_max: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarSection {
    holidays: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CurrencyRow {
    code: String,
    exponent: u8,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectRow {
    code: String,
    name: String,
}

/// Everything the binary is configured with.
pub struct Config {
    pub listen: String,
    pub data_dir: PathBuf,
    pub engine: EngineConfig,
    pub chart: ChartOfAccounts,
    pub simulator: banksim::SimulatorConfig,
    pub webhooks: gateway::events::WebhookConfig,
    /// Where the master key and the operator token live (`[secrets]`; flags override).
    pub secret_places: gateway::secrets::SecretPlaces,
    /// What the gateway limits beyond HTTP (`[secrets] rotation_overlap_seconds`, `[cards]`).
    pub protections: gateway::server::Protections,
    pub channels: Vec<clearing_actor::channels::Channel>,
    /// Holidays as business days (days since 1970-01-01).
    pub holidays: std::collections::BTreeSet<u32>,
    /// When the nightly settlement runs (minutes after business-local midnight), if scheduled.
    pub settlement_cutoff_minute: Option<u32>,
    /// Days past today a settlement run by hand may name (`[settlement] days_ahead_max`, 0).
    pub settlement_days_ahead_max: u32,
    /// The HTTP edge's limits, timeouts and per-platform quotas.
    pub http: gateway::server::HttpLimits,
    /// The directory `POST /admin/backups` writes under (`[backups] root`); `None`: off.
    pub backup_root: Option<PathBuf>,
    /// How the log is written.
    pub log: LogConfig,
    /// Resident memory not in use past which the allocator is trimmed (`[memory]`); 0: never.
    pub trim_above_bytes: u64,
    /// How the database's rows family compacts (`[storage] rows_compaction`).
    pub rows_compaction: storage_rocks::RowsCompaction,
}

/// Hard limits on configuration values (DESIGN.md invariant 10: every bound has a limit).
const SHARD_COUNT_MAX: u16 = 256;
const MAILBOX_CAPACITY_MAX: usize = 1 << 20;
const BATCH_SIZE_MAX: usize = 1 << 16;
const OUTBOX_PENDING_MAX: usize = 1 << 24;
const ACK_FLUSH_MS_MAX: u64 = 60_000;
/// The longest webhook backoff: a day (an `Instant` plus more could overflow).
const WEBHOOK_BACKOFF_MS_MAX: u64 = 86_400_000;
const WORKERS_MAX: usize = 256;
const CONNECTIONS_MAX: usize = 1 << 16;
const BODY_BYTES_MAX: usize = 256 << 20;
const TIMEOUT_MS_MAX: u64 = 600_000;

/// The [http] section as limits, with the [quotas] section's defaults and overrides.
fn http_limits(http: &HttpSection, quotas: &QuotasSection) -> Result<gateway::server::HttpLimits> {
    if !(1..=WORKERS_MAX).contains(&http.workers) || !(1..=CONNECTIONS_MAX).contains(&http.connections_max) {
        return Err(anyhow!("http.workers must be 1..={WORKERS_MAX} and http.connections_max 1..={CONNECTIONS_MAX}"));
    }
    if !(1..=BODY_BYTES_MAX).contains(&http.body_bytes_max) {
        return Err(anyhow!("http.body_bytes_max must be 1..={BODY_BYTES_MAX}"));
    }
    let timeouts = [
        ("head_timeout_ms", http.head_timeout_ms),
        ("body_timeout_ms", http.body_timeout_ms),
        ("keep_alive_ms", http.keep_alive_ms),
        ("disconnect_timeout_ms", http.disconnect_timeout_ms),
    ];
    for (name, value) in timeouts {
        if !(1..=TIMEOUT_MS_MAX).contains(&value) {
            return Err(anyhow!("http.{name} must be 1..={TIMEOUT_MS_MAX}"));
        }
    }
    let defaults = gateway::quotas::QuotaLimits {
        requests_per_second: quotas.requests_per_second,
        burst: quotas.burst,
        in_flight_max: quotas.in_flight_max,
        nonces_max: quotas.nonces_max,
        body_bytes_max: quotas.body_bytes_max,
    };
    let check = |name: &str, limits: &gateway::quotas::QuotaLimits| {
        let positive = limits.requests_per_second > 0 && limits.burst > 0 && limits.in_flight_max > 0 && limits.nonces_max > 0;
        if !positive || !(1..=http.body_bytes_max).contains(&limits.body_bytes_max) {
            return Err(anyhow!("{name}: requests_per_second, burst, in_flight_max and nonces_max must be positive, body_bytes_max 1..=http.body_bytes_max"));
        }
        Ok(())
    };
    check("quotas", &defaults)?;
    let mut platforms = BTreeMap::new();
    for (id, row) in &quotas.platforms {
        let number = gateway::platforms::Platform::parse_public_id(id).ok_or_else(|| anyhow!("quotas.platforms: {id:?} is not a platform id (plt_N)"))?;
        let limits = gateway::quotas::QuotaLimits {
            requests_per_second: row.requests_per_second.unwrap_or(defaults.requests_per_second),
            burst: row.burst.unwrap_or(defaults.burst),
            in_flight_max: row.in_flight_max.unwrap_or(defaults.in_flight_max),
            nonces_max: row.nonces_max.unwrap_or(defaults.nonces_max),
            body_bytes_max: row.body_bytes_max.unwrap_or(defaults.body_bytes_max),
        };
        check(&format!("quotas.platforms.{id}"), &limits)?;
        platforms.insert(number, limits);
    }
    let ms = std::time::Duration::from_millis;
    Ok(gateway::server::HttpLimits {
        connections_max: http.connections_max,
        body_bytes_max: http.body_bytes_max,
        workers: http.workers,
        head_timeout: ms(http.head_timeout_ms),
        body_timeout: ms(http.body_timeout_ms),
        keep_alive: ms(http.keep_alive_ms),
        disconnect_timeout: ms(http.disconnect_timeout_ms),
        quotas: gateway::quotas::QuotaConfig { defaults, platforms },
    })
}

impl Config {
    /// The business calendar: the engine's time zone and the configured holidays.
    pub fn calendar(&self) -> clearing_actor::calendar::Calendar {
        clearing_actor::calendar::Calendar { utc_offset_seconds: self.engine.utc_offset_seconds, holidays: self.holidays.clone() }
    }

    /// Reads `path`, or the embedded default when `None`.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
            None => DEFAULT_CONFIG.to_string(),
        };
        Config::parse(&text)
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> Result<Config> {
        let file: FileConfig = toml::from_str(text).context("parsing configuration")?;
        let e = &file.engine;
        if e.shard_count == 0 || e.shard_count > SHARD_COUNT_MAX {
            return Err(anyhow!("engine.shard_count must be 1..={SHARD_COUNT_MAX}"));
        }
        if e.mailbox_capacity == 0 || e.mailbox_capacity > MAILBOX_CAPACITY_MAX {
            return Err(anyhow!("engine.mailbox_capacity must be 1..={MAILBOX_CAPACITY_MAX}"));
        }
        if e.inbound_capacity == 0 || e.inbound_capacity > MAILBOX_CAPACITY_MAX {
            return Err(anyhow!("engine.inbound_capacity must be 1..={MAILBOX_CAPACITY_MAX}"));
        }
        if e.control_capacity == 0 || e.control_capacity > MAILBOX_CAPACITY_MAX {
            return Err(anyhow!("engine.control_capacity must be 1..={MAILBOX_CAPACITY_MAX}"));
        }
        if e.batch_size_max == 0 || e.batch_size_max > BATCH_SIZE_MAX {
            return Err(anyhow!("engine.batch_size_max must be 1..={BATCH_SIZE_MAX}"));
        }
        if e.outbox_pending_max == 0 || e.outbox_pending_max > OUTBOX_PENDING_MAX {
            return Err(anyhow!("engine.outbox_pending_max must be 1..={OUTBOX_PENDING_MAX}"));
        }
        if e.ack_flush_ms > ACK_FLUSH_MS_MAX {
            return Err(anyhow!("engine.ack_flush_ms must be 0..={ACK_FLUSH_MS_MAX}"));
        }
        if e.utc_offset_seconds.unsigned_abs() > 14 * 3600 {
            return Err(anyhow!("engine.utc_offset_seconds must be within ±14 hours"));
        }
        if file.currencies.is_empty() || file.currencies.len() > 255 {
            return Err(anyhow!("configure 1 to 255 currencies"));
        }
        let mut currencies = Vec::new();
        for row in &file.currencies {
            let spec =
                CurrencySpec::new(&row.code, row.exponent).ok_or_else(|| anyhow!("currency {:?}: three capital letters and an exponent of 0..=6", row.code))?;
            if currencies.contains(&spec) {
                return Err(anyhow!("currency {} is listed twice", row.code));
            }
            currencies.push(spec);
        }
        let rows: Vec<(String, String, String)> = file.chart_of_accounts.iter().map(|(k, s)| (k.clone(), s.code.clone(), s.name.clone())).collect();
        let chart = ChartOfAccounts::from_rows(&rows)?;
        if !(1..=4096).contains(&e.cold_filter_mib) {
            return Err(anyhow!("engine.cold_filter_mib must be 1..=4096"));
        }
        let (min, max) = (crate::memory::TRIM_ABOVE_MIB_MIN, crate::memory::TRIM_ABOVE_MIB_MAX);
        if file.memory.trim_above_mib != 0 && !(min..=max).contains(&file.memory.trim_above_mib) {
            return Err(anyhow!("memory.trim_above_mib must be 0 (never trim) or {min}..={max}"));
        }
        let rows_compaction = file.storage.rows_compaction.parse().map_err(|e| anyhow!("storage.rows_compaction: {e}"))?;
        let c = &e.checkpoints;
        if !(1..=100).contains(&c.kept) || c.every_seconds > 7 * 86_400 {
            return Err(anyhow!("engine.checkpoints.kept must be 1..=100 and every_seconds at most a week"));
        }
        let engine = EngineConfig {
            checkpoints: engine::shard::CheckpointPolicy {
                every_batches: c.every_batches,
                every_orders: c.every_orders,
                every: std::time::Duration::from_secs(c.every_seconds),
                kept: c.kept,
                on_shutdown: c.on_shutdown,
            },
            shard_count: e.shard_count,
            mailbox_capacity: e.mailbox_capacity,
            inbound_capacity: e.inbound_capacity,
            control_capacity: e.control_capacity,
            batch_size_max: e.batch_size_max,
            outbox_pending_max: e.outbox_pending_max,
            ack_flush_ms: e.ack_flush_ms,
            currencies,
            utc_offset_seconds: e.utc_offset_seconds,
            cold_filter_bytes: e.cold_filter_mib << 20,
        };
        let sim = &file.simulator;
        if sim.failure_per_mille > 1000 {
            return Err(anyhow!("simulator.failure_per_mille must be 0..=1000"));
        }
        if sim.latency_ms > 3_600_000 || !(1..=100).contains(&sim.callback_attempts_max) {
            return Err(anyhow!("simulator.latency_ms must be at most an hour and callback_attempts_max 1..=100"));
        }
        let simulator = banksim::SimulatorConfig {
            enabled: sim.enabled,
            latency_ms: sim.latency_ms,
            failure_per_mille: sim.failure_per_mille,
            callback_attempts_max: sim.callback_attempts_max,
            pages: sim.pages,
            utc_offset_seconds: e.utc_offset_seconds,
        };
        let w = &file.webhooks;
        if !(1..=100).contains(&w.attempts_max)
            || w.backoff_ms == 0
            || w.backoff_ms > w.backoff_ms_max
            || w.backoff_ms_max > WEBHOOK_BACKOFF_MS_MAX
            || !(1..=300).contains(&w.timeout_seconds)
        {
            return Err(anyhow!("webhooks: attempts_max 1..=100, 0 < backoff_ms <= backoff_ms_max <= {WEBHOOK_BACKOFF_MS_MAX}, timeout_seconds 1..=300"));
        }
        let (workers_min, workers_max) = (gateway::events::WORKERS_MIN, gateway::events::WORKERS_MAX);
        if !(workers_min..=workers_max).contains(&w.workers) {
            return Err(anyhow!("webhooks.workers must be {workers_min}..={workers_max}"));
        }
        let webhooks = gateway::events::WebhookConfig {
            attempts_max: w.attempts_max,
            backoff_ms: w.backoff_ms,
            backoff_ms_max: w.backoff_ms_max,
            timeout_seconds: w.timeout_seconds,
            workers: w.workers,
            allow_insecure_loopback: w.allow_insecure_loopback,
            deliveries_per_second_max: w.deliveries_per_second_max,
            per_platform: w
                .per_platform
                .iter()
                .map(|(id, rate)| {
                    let platform = gateway::platforms::Platform::parse_public_id(id)
                        .ok_or_else(|| anyhow!("webhooks.per_platform: {id:?} is not a platform id (plt_N)"))?;
                    Ok((platform, *rate))
                })
                .collect::<Result<_>>()?,
        };
        if webhooks.deliveries_per_second_max == 0 || webhooks.per_platform.values().any(|rate| *rate == 0) {
            return Err(anyhow!("webhooks: deliveries_per_second_max and its per_platform values must be at least 1"));
        }
        let secrets = &file.secrets;
        if secrets.rotation_overlap_seconds > gateway::platforms::ROTATION_OVERLAP_SECONDS_MAX {
            return Err(anyhow!("secrets.rotation_overlap_seconds must be 0..={}", gateway::platforms::ROTATION_OVERLAP_SECONDS_MAX));
        }
        if !(1..=100).contains(&file.cards.binds_per_account_per_day) {
            return Err(anyhow!("cards.binds_per_account_per_day must be 1..=100"));
        }
        let secret_places =
            gateway::secrets::SecretPlaces { master_key_file: secrets.master_key_file.clone(), admin_token_file: secrets.admin_token_file.clone() };
        let portal = &file.portal;
        if !(1..=86_400).contains(&portal.session_idle_seconds) || !(portal.session_idle_seconds..=7 * 86_400).contains(&portal.session_absolute_seconds) {
            return Err(anyhow!("portal: session_idle_seconds must be 1..=86400 and session_absolute_seconds from it up to 604800"));
        }
        let protections = gateway::server::Protections {
            rotation_overlap_seconds: secrets.rotation_overlap_seconds,
            card_binds_per_account_per_day: file.cards.binds_per_account_per_day,
            sessions: gateway::portal::SessionLimits {
                idle_seconds: portal.session_idle_seconds,
                absolute_seconds: portal.session_absolute_seconds,
                secure_cookies: portal.secure_cookies,
                sign_in_failures_per_address: portal.sign_in_failures_per_address,
            },
            trusted_proxies: portal
                .trusted_proxies
                .iter()
                .map(|text| {
                    text.trim()
                        .parse::<std::net::IpAddr>()
                        .map(|ip| ip.to_canonical())
                        .map_err(|_| anyhow!("portal: trusted_proxies: {text:?} is not an IP address"))
                })
                .collect::<Result<Vec<_>>>()?,
        };
        let channels = file.channels.iter().map(|row| row.build(&engine.currencies).map_err(|e| anyhow!("{e}"))).collect::<Result<Vec<_>>>()?;
        if !channels.iter().any(|c| c.direction == clearing_actor::channels::Direction::In) {
            return Err(anyhow!("configure at least one money-in channel"));
        }
        let mut holidays = std::collections::BTreeSet::new();
        for date in &file.calendar.holidays {
            holidays.insert(clearing_actor::calendar::parse_date(date).ok_or_else(|| anyhow!("calendar: bad date {date:?} (YYYY-MM-DD)"))?);
        }
        let cutoff =
            clearing_actor::calendar::parse_minute(&file.settlement.cutoff).filter(|m| *m < 1440).ok_or_else(|| anyhow!("settlement.cutoff must be HH:MM"))?;
        let settlement_cutoff_minute = file.settlement.scheduled.then_some(cutoff);
        if file.settlement.days_ahead_max > SETTLEMENT_DAYS_AHEAD_MAX {
            return Err(anyhow!("settlement.days_ahead_max is 0 to {SETTLEMENT_DAYS_AHEAD_MAX}"));
        }
        let http = http_limits(&file.http, &file.quotas)?;
        if file.backups.root.as_deref().is_some_and(|root| !root.is_absolute() || root.components().any(|c| matches!(c, std::path::Component::ParentDir))) {
            return Err(anyhow!("backups.root must be an absolute path without .. components"));
        }
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&file.log.level) {
            return Err(anyhow!("log.level {:?} is not a level or filter: {error}", file.log.level));
        }
        let log = LogConfig { format: file.log.format, level: file.log.level };
        Ok(Config {
            listen: file.listen,
            data_dir: file.data_dir,
            engine,
            chart,
            simulator,
            webhooks,
            secret_places,
            protections,
            channels,
            holidays,
            settlement_cutoff_minute,
            settlement_days_ahead_max: file.settlement.days_ahead_max,
            http,
            backup_root: file.backups.root,
            log,
            trim_above_bytes: file.memory.trim_above_mib << 20,
            rows_compaction,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        let config = Config::parse(DEFAULT_CONFIG).expect("default config parses");
        assert_eq!(config.engine.shard_count, 2);
        assert_eq!(config.engine.batch_size_max, 8189);
        assert_eq!(config.http.quotas.defaults, gateway::quotas::QuotaLimits::default(), "the file says what the code defaults to");
        assert_eq!(config.http.body_timeout, gateway::server::HttpLimits::default().body_timeout);
        assert!(config.simulator.pages && !config.webhooks.allow_insecure_loopback, "pages on for make run; webhooks https only");
        assert_eq!(config.trim_above_bytes, crate::memory::TRIM_ABOVE_MIB << 20, "the file says what the code defaults to");
        assert_eq!(config.protections.rotation_overlap_seconds, 86_400);
        assert!(config.secret_places.master_key_file.is_none(), "zero setup: the key in the data directory");
        assert_eq!(config.rows_compaction, storage_rocks::RowsCompaction::default(), "the file says what the code defaults to");
    }

    #[test]
    fn the_log_section() {
        let check = |section: &str, expected: Option<(LogFormat, &str)>| {
            let start = DEFAULT_CONFIG.find("[log]").expect("the default has a [log] section");
            let parsed = Config::parse(&format!("{}[log]\n{section}\n", &DEFAULT_CONFIG[..start]));
            match expected {
                Some((format, level)) => {
                    let log = parsed.expect(section).log;
                    assert_eq!((log.format, log.level.as_str()), (format, level), "{section}");
                }
                None => assert!(parsed.is_err(), "{section}"),
            }
        };
        check("", Some((LogFormat::Text, "info")));
        check("format = \"json\"", Some((LogFormat::Json, "info")));
        check("format = \"text\"\nlevel = \"debug\"", Some((LogFormat::Text, "debug")));
        check("level = \"warn,gateway=debug\"", Some((LogFormat::Text, "warn,gateway=debug")));
        check("format = \"xml\"", None);
        check("level = \"gateway=loud\"", None);
        check("colour = true", None);
        assert_eq!(Config::parse(DEFAULT_CONFIG).expect("default").log, LogConfig { format: LogFormat::Text, level: "info".into() });
    }

    #[test]
    fn a_platform_override_changes_only_what_it_names() {
        let text = DEFAULT_CONFIG.replace("# [quotas.platforms.plt_7]", "[quotas.platforms.plt_7]\nrequests_per_second = 10");
        let config = Config::parse(&text).unwrap();
        let limits = config.http.quotas.limits(7);
        assert_eq!((limits.requests_per_second, limits.burst), (10, 100_000));
        assert_eq!(config.http.quotas.limits(8).requests_per_second, 50_000);
    }

    #[test]
    fn files_without_the_new_sections_still_load() {
        let start = DEFAULT_CONFIG.find("[secrets]").expect("section");
        let end = DEFAULT_CONFIG.find("[[channels]]").expect("channels");
        let text = format!("{}{}", &DEFAULT_CONFIG[..start], &DEFAULT_CONFIG[end..])
            .replace("pages = true\n", "")
            .replace("allow_insecure_loopback = false\n", "")
            .replace("deliveries_per_second_max = 200\n", "")
            .replace("per_platform = {}\n", "")
            .replace("every_orders = 250000\n", "")
            .replace("[memory]\ntrim_above_mib = 256\n", "")
            .replace("[storage]\n", "")
            .replace("rows_compaction = \"universal\"\n", "");
        assert!(!text.contains("every_orders") && !text.contains("[memory]") && !text.contains("rows_compaction"));
        let config = Config::parse(&text).expect("an older file loads");
        assert!(config.simulator.pages);
        assert_eq!(config.engine.checkpoints.every_orders, engine::shard::DEFAULT_EVERY_ORDERS, "checkpoints by orders, as a new file says");
        assert_eq!(config.protections.card_binds_per_account_per_day, gateway::cards::BINDS_PER_ACCOUNT_PER_DAY_DEFAULT);
        assert_eq!(config.trim_above_bytes, 256 << 20, "trimmed as a new file says");
        assert_eq!(config.rows_compaction, storage_rocks::RowsCompaction::Universal, "compacted as a new file says");
        let leveled = DEFAULT_CONFIG.replace("rows_compaction = \"universal\"", "rows_compaction = \"leveled\"");
        assert_eq!(Config::parse(&leveled).expect("the way back").rows_compaction, storage_rocks::RowsCompaction::Leveled);
        let empty = DEFAULT_CONFIG.replace("rows_compaction = \"universal\"", "");
        assert_eq!(Config::parse(&empty).expect("an empty [storage]").rows_compaction, storage_rocks::RowsCompaction::Universal);
        let never = DEFAULT_CONFIG.replace("trim_above_mib = 256", "trim_above_mib = 0");
        assert_eq!(Config::parse(&never).expect("0: never").trim_above_bytes, 0);
        let with_files = DEFAULT_CONFIG.replace("# master_key_file = ", "master_key_file = ").replace("# admin_token_file = ", "admin_token_file = ");
        let config = Config::parse(&with_files).expect("files named");
        assert_eq!(config.secret_places.master_key_file.as_deref(), Some(Path::new("/etc/clearing/master-key")));
        let with_rates = DEFAULT_CONFIG.replace("per_platform = {}", "per_platform = { plt_7 = 5 }");
        assert_eq!(Config::parse(&with_rates).expect("override").webhooks.per_platform.get(&7), Some(&5));
    }

    #[test]
    fn bad_configs_are_refused() {
        let cases = [
            ("shard_count = 2", "shard_count = 0"),
            ("batch_size_max = 8189", "batch_size_max = 0"),
            ("mailbox_capacity = 1024", "mailbox_capacity = 0"),
            ("code = \"USD\"", "code = \"CNY\""),
            ("code = \"USD\"", "code = \"usd\""),
            ("suspense = { code = \"2241\"", "suspense = { code = \"1002\""),
            ("ack_flush_ms = 20", "ack_flush_ms = 20\nunknown_key = 1"),
            ("workers = 8", "workers = 1"),
            ("workers = 8", "workers = 65"),
            ("rotation_overlap_seconds = 86400", "rotation_overlap_seconds = 604801"),
            ("binds_per_account_per_day = 5", "binds_per_account_per_day = 0"),
            ("deliveries_per_second_max = 200", "deliveries_per_second_max = 0"),
            ("per_platform = {}", "per_platform = { plt_x = 3 }"),
            ("rows_compaction = \"universal\"", "rows_compaction = \"fifo\""),
            ("rows_compaction = \"universal\"", "rows_compaction = \"Universal\""),
            ("per_platform = {}", "per_platform = { plt_2 = 0 }"),
            // Past their bounds (issue item 12): each would have been taken.
            ("outbox_pending_max = 65536", "outbox_pending_max = 18446744073709551615"),
            ("ack_flush_ms = 20", "ack_flush_ms = 18446744073709551615"),
            ("backoff_ms_max = 600000", "backoff_ms_max = 18446744073709551615"),
            ("eta_minutes = 1440", "eta_minutes = 4294967295"),
            ("sim_latency_ms = 500", "sim_latency_ms = 86400001"),
            ("utc_offset_seconds = 28800", "utc_offset_seconds = 2147483647"),
            // Regression (helper 109): i32::MIN's absolute value overflowed (a panic at start).
            ("utc_offset_seconds = 28800", "utc_offset_seconds = -2147483648"),
            ("\nlatency_ms = 200", "\nlatency_ms = 3600001"),
            ("callback_attempts_max = 10", "callback_attempts_max = 4294967295"),
            ("exponent = 2", "exponent = 255"),
            ("shard_count = 2", "shard_count = 65535"),
            ("\nkept = 2", "\nkept = 0"),
            ("every_seconds = 300", "every_seconds = 604801"),
            ("mailbox_capacity = 1024", "mailbox_capacity = 18446744073709551615"),
            ("body_timeout_ms = 10000", "body_timeout_ms = 0"),
            ("head_timeout_ms = 5000", "head_timeout_ms = 600001"),
            ("requests_per_second = 50000", "requests_per_second = 0"),
            ("in_flight_max = 512", "in_flight_max = 0"),
            ("nonces_max = 8388608\nbody_bytes_max = 16777216", "nonces_max = 8388608\nbody_bytes_max = 16777217"),
            ("# [quotas.platforms.plt_7]", "[quotas.platforms.seven]"),
            ("# [quotas.platforms.plt_7]", "[quotas.platforms.plt_7]\nrequests_per_minute = 1"),
            ("trim_above_mib = 256", "trim_above_mib = 1048577"),
            ("trim_above_mib = 256", "trim_above_mib = 63"),
            ("trim_above_mib = 256", "trim_above_mib = 256\ntrim_every_seconds = 1"),
        ];
        for (from, to) in cases {
            let text = DEFAULT_CONFIG.replace(from, to);
            assert_ne!(text, DEFAULT_CONFIG, "case {to} changed nothing");
            assert!(Config::parse(&text).is_err(), "{to} was accepted");
        }
    }
}
