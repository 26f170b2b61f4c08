//! `clearing`: the clearing engine's command line (server, benchmark, checks, crash workload).

mod backup;
mod bench;
mod chain;
mod config;
mod cpu;
mod get;
mod load;
mod logging;
mod memory;
mod report;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use engine::Engine;
use storage_rocks::RocksStore;

use crate::config::Config;

#[derive(Parser)]
#[command(name = "clearing", about = "Virtual-account clearing engine")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Runs the engine on RocksDB and serves the HTTP API until interrupted, printing shard state.
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        listen: Option<String>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Stop after start-up (and the demo) instead of serving until interrupted.
        #[arg(long)]
        once: bool,
        /// Run the demo scenario first (its own reserved platform; idempotent across restarts).
        #[arg(long)]
        demo: bool,
        /// The master key's file (64 hex digits, mode 0600), outside the data directory and its
        /// backups; overrides `[secrets] master_key_file`. `CLEARING_MASTER_KEY` overrides both.
        #[arg(long)]
        master_key_file: Option<PathBuf>,
        /// The operator token's file (at least 32 characters, mode 0600); overrides
        /// `[secrets] admin_token_file`. `CLEARING_ADMIN_TOKEN` overrides both.
        #[arg(long)]
        admin_token_file: Option<PathBuf>,
    },
    /// Drives the engine directly (no HTTP) with transfers, like `tigerbeetle benchmark`.
    Bench(bench::BenchArgs),
    /// Checks every ledger invariant from the journal; exits 0 only when all hold.
    Invariants {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Checks every shard's journal hash chain (and archives with `--archives`); exits 0 only
    /// when all are sound, else prints the first break of each shard.
    Verify(chain::VerifyArgs),
    /// Moves journal batches older than a business date and than each shard's oldest checkpoint
    /// into compressed archive files (with manifests), then out of the live database.
    Archive(chain::ArchiveArgs),
    /// Prints each shard's state, rebuilt from the journal.
    Shards {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Runs (or re-runs, changing nothing twice) the settlement of a business date on a data
    /// directory the server is not using; prints a line per platform and the summary.
    Settle {
        /// The business date, YYYY-MM-DD.
        #[arg(long)]
        date: String,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// As for `serve`.
        #[arg(long)]
        master_key_file: Option<PathBuf>,
    },
    /// Reconciles a channel's statement file of a business date against the ledger (on a data
    /// directory the server is not using); prints the classification.
    Reconcile {
        /// Channel name (see `[[channels]]`).
        #[arg(long)]
        channel: String,
        /// The business date, YYYY-MM-DD.
        #[arg(long)]
        date: String,
        /// The statement file (CSV: bank_ref,order_id,direction,amount,status with a header).
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Takes a consistent backup of the whole database into a new or empty directory: through
    /// the running server's operator API with --url (into a directory under its `[backups]
    /// root`), or directly on a stopped server's data directory (--data-dir, or the
    /// configuration's). Prints the manifest's summary: what is in the backup and what is not.
    Backup {
        /// The backup's directory (absent or empty).
        #[arg(long)]
        to: PathBuf,
        /// A running server's base URL, e.g. http://127.0.0.1:8080.
        #[arg(long, conflicts_with = "data_dir")]
        url: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
        /// A stopped server's data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// With --url: the operator token's file (`CLEARING_ADMIN_TOKEN` overrides it; default:
        /// `[secrets] admin_token_file`, else the configured data directory's `admin-token`).
        #[arg(long)]
        admin_token_file: Option<PathBuf>,
        /// As for `serve` (says whether the master key lives in the data directory).
        #[arg(long)]
        master_key_file: Option<PathBuf>,
    },
    /// Restores a backup into a new or empty data directory: checks every file against the
    /// manifest's SHA-256 first, copies, syncs, and says what to do about secrets kept outside.
    Restore {
        /// The backup's directory (holding manifest.json).
        #[arg(long)]
        from: PathBuf,
        /// The data directory to restore into (absent or empty).
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// The load generator: drives a running server over HTTP as a platform would.
    Load(load::LoadArgs),
    /// One signed GET as a platform, timed (listing measurements).
    Get(get::GetArgs),
    /// A deterministic order workload that prints one line per acknowledged order (crash tests).
    Workload(workload::WorkloadArgs),
}

fn main() -> Result<()> {
    cpu::check()?;
    match Cli::parse().command {
        Commands::Serve { config, listen, data_dir, once, demo, master_key_file, admin_token_file } => {
            serve(config, listen, data_dir, once, demo, Flags { master_key_file, admin_token_file })
        }
        Commands::Load(args) => load::run(args),
        Commands::Get(args) => get::run(args),
        Commands::Bench(args) => bench::run(args),
        Commands::Invariants { config, data_dir } => {
            let (config, data_dir) = load(config, data_dir)?;
            let store: std::sync::Arc<dyn storage::Store> =
                std::sync::Arc::new(RocksStore::open_read_only(&data_dir).with_context(|| format!("opening {}", data_dir.display()))?);
            let report = engine::invariants::check_shared_store(&store, config.engine.shard_count)?;
            report::print_invariants(&report, &mut std::io::stdout())?;
            if !report.ok {
                std::process::exit(1);
            }
            Ok(())
        }
        Commands::Shards { config, data_dir } => {
            let (config, data_dir) = load(config, data_dir)?;
            let store: std::sync::Arc<dyn storage::Store> =
                std::sync::Arc::new(RocksStore::open_read_only(&data_dir).with_context(|| format!("opening {}", data_dir.display()))?);
            report::print_shards_offline(&store, &config, &mut std::io::stdout())
        }
        Commands::Workload(args) => workload::run(args),
        Commands::Verify(args) => {
            if !chain::verify(args, &mut std::io::stdout())? {
                std::process::exit(1);
            }
            Ok(())
        }
        Commands::Archive(args) => chain::archive(args, &mut std::io::stdout()),
        Commands::Settle { date, config, data_dir, master_key_file } => settle(&date, config, data_dir, Flags { master_key_file, admin_token_file: None }),
        Commands::Reconcile { channel, date, file, config, data_dir } => reconcile(&channel, &date, &file, config, data_dir),
        Commands::Backup { to, url, config, data_dir, admin_token_file, master_key_file } => {
            let (config, data_dir) = load(config, data_dir)?;
            let places = Flags { master_key_file, admin_token_file }.places(&config);
            match url {
                Some(url) => backup::backup_remote(&url, &to, &backup::client_token(places.admin_token_file.as_deref(), &data_dir)?),
                None => backup::backup_offline(&to, &data_dir, &places, config.rows_compaction),
            }
        }
        Commands::Restore { from, data_dir } => backup::restore(&from, &data_dir),
    }
}

/// The channel table of the configuration with the operator's stored changes and additions.
fn channel_table(config: &Config, store: &dyn storage::Store) -> Result<clearing_actor::channels::ChannelTable> {
    let mut table = clearing_actor::channels::ChannelTable::new(config.channels.clone(), config.calendar()).map_err(|e| anyhow::anyhow!("{e}"))?;
    table.load_settings(store, &config.engine.currencies).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(table)
}

/// `clearing reconcile --channel C --date D --file F`.
fn reconcile(channel: &str, date: &str, file: &std::path::Path, config: Option<PathBuf>, data_dir: Option<PathBuf>) -> Result<()> {
    let day = clearing_actor::calendar::parse_date(date).ok_or_else(|| anyhow::anyhow!("--date must be YYYY-MM-DD"))?;
    let (config, data_dir) = load(config, data_dir)?;
    // Bank files come in UTF-8 or GBK: read bytes, the statement parser decodes them.
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let store: Arc<dyn storage::Store> = Arc::new(
        RocksStore::open_with(&data_dir, config.rows_compaction).with_context(|| format!("opening {} (is the server running on it?)", data_dir.display()))?,
    );
    let table = channel_table(&config, store.as_ref())?;
    let channel = table.set().by_name(channel).map(|c| c.id).ok_or_else(|| anyhow::anyhow!("no channel {channel} in the configuration"))?;
    let engine = Arc::new(Engine::start(config.engine.clone(), store.clone())?);
    let started = std::time::Instant::now();
    // The server is stopped (the database is this process's): the clearing actor runs here,
    // with a bank that sends nothing, so that the file's verdicts, cases and holds are the
    // server's (before session 59 the command line applied verdicts straight to the engine and
    // held nothing of a payout paid after it failed). A failure line on a payout still waiting
    // falls back as the server would: the next channel is asked at the server's next start (its
    // bank never received it here).
    let silent = banksim::SimulatorConfig { enabled: false, ..banksim::SimulatorConfig::default() };
    let bank = Arc::new(banksim::Simulator::start(silent, String::new(), store.clone()).map_err(|e| anyhow::anyhow!("the bank: {e}"))?);
    let clearing = clearing_actor::Clearing::start(
        engine.clone(),
        store.clone(),
        bank,
        table,
        Arc::new(clearing_actor::calendar::SystemClock),
        Arc::new(|_| Vec::new()),
        clearing_actor::ClearingConfig::default(),
    );
    let result = match clearing {
        Ok(clearing) => {
            let report = actix_web::rt::System::new().block_on(clearing.reconcile(channel, day, bytes));
            clearing.stop();
            report.map_err(|e| anyhow::anyhow!("{e}"))
        }
        Err(error) => Err(anyhow::anyhow!("starting clearing: {error}")),
    };
    engine.shutdown();
    let report = result?;
    println!("counts: {}", serde_json::to_string(&report.counts)?);
    for detail in report.details.iter().take(50) {
        println!("  {}", serde_json::to_string(detail)?);
    }
    println!("elapsed_s: {:.3}", started.elapsed().as_secs_f64());
    Ok(())
}

/// `clearing settle --date D`: the settlement run from the command line, with progress.
fn settle(date: &str, config: Option<PathBuf>, data_dir: Option<PathBuf>, flags: Flags) -> Result<()> {
    let day = clearing_actor::calendar::parse_date(date).ok_or_else(|| anyhow::anyhow!("--date must be YYYY-MM-DD"))?;
    let (config, data_dir) = load(config, data_dir)?;
    use clearing_actor::calendar::Clock as _;
    let today = config.calendar().local(clearing_actor::calendar::SystemClock.now_micros()).0;
    clearing_actor::settlement::check_day(day, today, config.settlement_days_ahead_max).map_err(|error| anyhow::anyhow!("--date: {error}"))?;
    let places = flags.places(&config);
    let store: Arc<dyn storage::Store> = Arc::new(
        RocksStore::open_with(&data_dir, config.rows_compaction).with_context(|| format!("opening {} (is the server running on it?)", data_dir.display()))?,
    );
    let engine = Engine::start(config.engine.clone(), store.clone())?;
    let (master_key, source) = gateway::secrets::MasterKey::load(&data_dir, &places).context("loading the master key")?;
    // A settlement run never makes the key: a server's start does, and binds it.
    if let gateway::secrets::SecretSource::Generated(path) = &source {
        let _ = std::fs::remove_file(path);
        anyhow::bail!("no master key at {}: `clearing settle` runs with the server's key (name it, or start the server once first)", path.display());
    }
    master_key.check_against(store.as_ref(), None, false).context("checking the master key")?;
    let channels = channel_table(&config, store.as_ref())?.set();
    let platforms = gateway::platforms::Platforms::load(store.clone(), master_key).map_err(anyhow::Error::msg)?.all();
    let terms = gateway::settlements::terms(&engine, &platforms, day);
    let total = terms.len();
    let started = std::time::Instant::now();
    let summary = clearing_actor::settlement::run(&engine, store.as_ref(), &terms, &channels, day, &mut |done, row| {
        let filled = (done * 30).checked_div(total).unwrap_or(30);
        println!("[{}{}] {done}/{total} {}", "#".repeat(filled), ".".repeat(30 - filled), serde_json::to_string(row).unwrap_or_default());
    });
    engine.shutdown();
    let summary = summary?;
    println!("settlement: {}", serde_json::to_string(&summary)?);
    println!("elapsed_s: {:.3}", started.elapsed().as_secs_f64());
    if !summary.invariants_ok {
        anyhow::bail!("invariants do not hold after the settlement run");
    }
    Ok(())
}

/// Loads the configuration and resolves the data directory (flag over file).
fn load(config: Option<PathBuf>, data_dir: Option<PathBuf>) -> Result<(Config, PathBuf)> {
    let config = Config::load(config.as_deref())?;
    logging::install(&config.log)?;
    let data_dir = data_dir.unwrap_or_else(|| config.data_dir.clone());
    refuse_unfinished_restore(&data_dir)?;
    Ok((config, data_dir))
}

/// Refuses a data directory holding a restore that did not finish: its marker (a restore cut
/// short or failed: its files may lack the master key or half the database), or, without it,
/// a database's files but not its `CURRENT` (an earlier build's restore cut short, which a
/// start would have taken for a new directory and started an empty ledger on). A backup's
/// directory (`manifest.json` beside `db/`) holds no database file at its top.
pub(crate) fn refuse_unfinished_restore(data_dir: &std::path::Path) -> Result<()> {
    if storage::backup::unfinished_restore(data_dir) {
        anyhow::bail!(
            "{} holds a restore that did not finish ({} is there): delete the directory and run `clearing restore` again",
            data_dir.display(),
            storage::backup::RESTORE_MARKER
        );
    }
    if !data_dir.join("CURRENT").exists() {
        let database_file = |name: &str| name.ends_with(".sst") || name.ends_with(".blob") || name.starts_with("MANIFEST-");
        let found = std::fs::read_dir(data_dir)
            .map(|entries| entries.filter_map(|entry| entry.ok()).find(|entry| database_file(&entry.file_name().to_string_lossy())))
            .ok()
            .flatten();
        if let Some(entry) = found {
            anyhow::bail!(
                "{} holds a database's files ({}) but no CURRENT: a restore or copy that did not finish (or a first start stopped while it made the database); if it holds nothing you need, delete it (and restore again)",
                data_dir.display(),
                entry.file_name().to_string_lossy()
            );
        }
    }
    Ok(())
}

/// Where secrets live as the command line says (over the configuration).
struct Flags {
    master_key_file: Option<PathBuf>,
    admin_token_file: Option<PathBuf>,
}

impl Flags {
    fn places(self, config: &Config) -> gateway::secrets::SecretPlaces {
        gateway::secrets::SecretPlaces {
            master_key_file: self.master_key_file.or_else(|| config.secret_places.master_key_file.clone()),
            admin_token_file: self.admin_token_file.or_else(|| config.secret_places.admin_token_file.clone()),
        }
    }
}

fn serve(config: Option<PathBuf>, listen: Option<String>, data_dir: Option<PathBuf>, once: bool, demo: bool, flags: Flags) -> Result<()> {
    let (config, data_dir) = load(config, data_dir)?;
    let listen = listen.unwrap_or_else(|| config.listen.clone());
    let places = flags.places(&config);
    // Private to the server (0700): member data and, by default, the keys live here.
    if let Some(warning) = gateway::secrets::private_directory(&data_dir).with_context(|| format!("creating {}", data_dir.display()))? {
        println!("{warning}");
    }
    // The secrets are loaded before anything else: a bad one stops the start with its message,
    // before the engine replays anything.
    let secrets = if once { None } else { Some(load_secrets(&data_dir, &places)?) };
    // For the life of the server: gives back what the allocator keeps free (`[memory]`).
    let _trimmer = memory::Trimmer::start(config.trim_above_bytes, memory::TRIM_EVERY, memory::TRIM_GAP);
    let rocks = Arc::new(RocksStore::open_with(&data_dir, config.rows_compaction).with_context(|| format!("opening {}", data_dir.display()))?);
    // Kept for the close: the HTTP side's threads (webhook workers) may hold the store past
    // the end of `serve`, so its `Drop` may never run.
    let closing = rocks.clone();
    let store: Arc<dyn storage::Store> = rocks.clone();
    // The key must be the one this database was served with (a copy without its key, a
    // deleted file: a new one would change every platform's secret).
    if let Some((master_key, _, generated)) = &secrets {
        master_key.check_against(store.as_ref(), generated.as_deref(), true).context("checking the master key")?;
    }
    let started = std::time::Instant::now();
    let engine = Arc::new(Engine::start(config.engine.clone(), store.clone())?);
    println!(
        "clearing engine: {} shards on RocksDB at {} (recovered in {:?}; flushes and compactions write {}; {})",
        config.engine.shard_count,
        data_dir.display(),
        started.elapsed(),
        rocks.direct_writes_refused().map_or_else(|| "with direct I/O".to_string(), |why| format!("through the page cache ({why})")),
        rocks
            .rows_compaction()
            .map_or_else(|| "cold rows in the default family, made before their own".to_string(), |style| format!("cold rows compact {}", style.name()))
    );
    if let Some(point) = rocks.online_discard() {
        // Deleted files are trimmed at once while synced writes wait (compactions delete
        // hundreds of megabytes at a time): tens of milliseconds of batch latency.
        println!(
            "warning: the data directory's file system ({}) is mounted with online discard: each compaction's deleted inputs are trimmed at once while the journal's writes wait (tens of ms). Mount it without `discard` and run `fstrim` from time to time (fstrim.timer)",
            point.display()
        );
    }
    if let Some(read_ahead) = rocks.read_ahead().filter(|read_ahead| read_ahead.too_far()) {
        // A compaction's reads of its inputs keep the disk busy in windows as large, and the
        // journal's synced writes wait meanwhile (storage_rocks::ReadAhead).
        println!(
            "warning: the data directory's disk ({}) reads ahead {} KiB: a compaction's reads then hold the journal's writes (milliseconds each). Set 128 KiB (`echo 128 > /sys/block/{}/queue/read_ahead_kb`, or `lvchange --readahead 256` for a logical volume; a udev rule keeps it across boots), then restart the server: open files keep the old value",
            read_ahead.disk, read_ahead.kib, read_ahead.disk
        );
    }
    watch_shards(&engine)?;
    if demo {
        workload::demo(&engine)?;
    }
    let mut out = std::io::stdout();
    report::print_shards_online(&engine, &config, &mut out)?;
    report::print_invariants(&engine::invariants::check_engine(&engine)?, &mut out)?;
    if let Some((master_key, token, _)) = secrets {
        // Backups copy the whole database at one point while serving (`POST /admin/backups`).
        let taker: Arc<dyn storage::backup::Backup> = Arc::new(backup::RocksBackup::new(rocks, &data_dir, backup::secret_plans(&data_dir, &places)));
        let backups = gateway::backups::Backups::new(config.backup_root.clone(), &data_dir, taker)
            .with_context(|| format!("the [backups] root {}", config.backup_root.as_deref().unwrap_or(std::path::Path::new("")).display()))?;
        match &config.backup_root {
            Some(root) => println!("backups: POST /admin/backups into directories under {}", root.display()),
            None => println!("backups: off through the API ([backups] root is not set); `clearing backup --data-dir` works on a stopped server"),
        }
        serve_http(engine.clone(), store, master_key, token, backups, &listen, &config)?;
    }
    engine.shutdown();
    // The memtables into tables, so that the next start replays no write-ahead log (skipped,
    // and said, where the flush could wait on compactions: `flush_for_close`).
    if let Err(why) = closing.flush_for_close() {
        println!("the next start replays RocksDB's write-ahead log: {why}");
    }
    println!("stopped: every acknowledged order is durable");
    Ok(())
}

/// Exit status of a process stopped because a shard panicked (EX_SOFTWARE).
const EXIT_SHARD_PANICKED: i32 = 70;

/// Watches the shards: one that panicked (a programming error; its in-memory state is no longer
/// trusted) stops the whole process loudly, with the shard and the panic on stderr and exit
/// status 70, rather than serve around a dead shard whose peers' outboxes fill up. Restarting
/// recovers every shard from the journal. A shard stopped by a failed write (DESIGN.md 4) stays
/// stopped without exiting: `/readyz` names it, and the others keep serving.
fn watch_shards(engine: &Arc<Engine>) -> Result<()> {
    let engine = Arc::downgrade(engine);
    std::thread::Builder::new().name("shard-watch".into()).spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let Some(engine) = engine.upgrade() else {
            return;
        };
        for (shard, failure) in engine.failures() {
            if let engine::shard::ShardFailure::Panicked(text) = failure {
                tracing::error!(
                    shard,
                    "shard panicked: {text}; stopping the process (exit status {EXIT_SHARD_PANICKED}); a restart recovers it from the journal"
                );
                std::process::exit(EXIT_SHARD_PANICKED);
            }
        }
    })?;
    Ok(())
}

/// Serves the HTTP API until SIGINT or SIGTERM (graceful: requests in flight finish).
/// The master key and the operator token, with a line each on where they came from and a
/// warning for each that lives in the data directory.
/// The master key, the operator token, and the master key's file if it was generated now.
fn load_secrets(
    data_dir: &std::path::Path,
    places: &gateway::secrets::SecretPlaces,
) -> Result<(gateway::secrets::MasterKey, gateway::admin::AdminToken, Option<PathBuf>)> {
    use gateway::secrets::{inside, SecretSource};
    let (master_key, source) = gateway::secrets::MasterKey::load(data_dir, places).context("loading the master key")?;
    match &source {
        SecretSource::Environment => println!("master key: from CLEARING_MASTER_KEY"),
        SecretSource::File(path) | SecretSource::DataDirectory(path) => println!("master key: in {}", path.display()),
        SecretSource::Generated(path) => println!("master key: generated in {} (mode 0600)", path.display()),
    }
    let warn = |what: &str, source: &SecretSource| {
        let in_data = match source {
            SecretSource::File(path) => inside(path, data_dir),
            other => other.in_data_directory(),
        };
        if in_data {
            let warning = format!(
                "warning: the {what} lives in the data directory {}: every copy of it (a backup) carries the {what}; keep it apart with \
                 [secrets] {}_file (or --{}-file) on a path outside, or the environment",
                data_dir.display(),
                what.replace(' ', "_").replace("operator_token", "admin_token"),
                what.replace(' ', "-").replace("operator-token", "admin-token")
            );
            println!("{warning}");
        }
    };
    warn("master key", &source);
    let (token, token_source) = gateway::admin::AdminToken::load(data_dir, places).context("loading the operator token")?;
    match &token_source {
        SecretSource::Environment => println!("operator token: from CLEARING_ADMIN_TOKEN"),
        SecretSource::File(path) | SecretSource::DataDirectory(path) => println!("operator token: in {}", path.display()),
        SecretSource::Generated(path) => {
            println!("operator token (shown once; also in {}, mode 0600): {}", path.display(), token.reveal())
        }
    }
    warn("operator token", &token_source);
    let generated = match source {
        SecretSource::Generated(path) => Some(path),
        _ => None,
    };
    Ok((master_key, token, generated))
}

fn serve_http(
    engine: Arc<Engine>,
    store: Arc<dyn storage::Store>,
    master_key: gateway::secrets::MasterKey,
    token: gateway::admin::AdminToken,
    backups: gateway::backups::Backups,
    listen: &str,
    config: &config::Config,
) -> Result<()> {
    let metrics = gateway::metrics::install().map_err(anyhow::Error::msg)?;
    let setup = gateway::server::ClearingSetup {
        channels: config.channels.clone(),
        calendar: config.calendar(),
        settlement_cutoff_minute: config.settlement_cutoff_minute,
        settlement_days_ahead_max: config.settlement_days_ahead_max,
    };
    gateway::portal::system::publish_chart(config.chart.clone());
    let mut services = gateway::server::Services::load(
        engine,
        store,
        master_key,
        token,
        metrics,
        config.simulator,
        config.webhooks.clone(),
        setup,
        config.protections.clone(),
    )
    .map_err(anyhow::Error::msg)?;
    services.backups = Arc::new(backups);
    if let Some(first) = &services.first_operator {
        if first.generated {
            println!("portal: first system operator \"{}\", password (shown once; change it at /portal/account): {}", first.username, first.password);
        } else {
            println!("portal: first system operator \"{}\", password from CLEARING_OPERATOR_PASSWORD", first.username);
        }
    }
    if let Some(cutoff) = config.settlement_cutoff_minute {
        println!("settlement: every day at {:02}:{:02} business time (GET /admin/settlements shows the schedule)", cutoff / 60, cutoff % 60);
    }
    actix_web::rt::System::new().block_on(async move {
        let limits = config.http.clone();
        let (server, addresses) = gateway::server::bind(services, listen, limits)?;
        for address in addresses {
            println!("API: http://{address}/ (GET /healthz, /readyz; operator: /admin/platforms, /admin/shards, /admin/invariants, /metrics; portals: /portal/; signed platform API: /v1/...; bank simulator: /sim/cards/{{card_no}}/transactions)");
        }
        println!("running; Ctrl-C (SIGINT) or SIGTERM stops it gracefully");
        use std::io::Write;
        std::io::stdout().flush()?;
        server.await
    })?;
    Ok(())
}
