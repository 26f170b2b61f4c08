//! Backups of the whole database: the capability the server is given (`RocksBackup`, behind
//! `POST /admin/backups`), `clearing backup` (through a running server's API, or on a stopped
//! server's data directory) and `clearing restore`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use storage::backup::{self as files, Backup, BackupError, Manifest, SecretPlan, ShardMark, Summary};
use storage_rocks::RocksStore;

/// What a restore never brings back, whatever the secrets' places.
const NOT_INCLUDED: [&str; 3] = [
    "the configuration file (--config): keep a copy of it with the backup",
    "anything acknowledged after created_at: the copy holds the database as of one point, taken when the backup started",
    "operators' and members' sessions (held in memory): everyone signs in again",
];

/// A RocksDB checkpoint of the whole database (every shard's journal and every record, one
/// database), the secrets the data directory holds, and a manifest read from the copy itself.
pub struct RocksBackup {
    store: Arc<RocksStore>,
    data_dir: PathBuf,
    secrets: Vec<SecretPlan>,
}

impl RocksBackup {
    /// A backup of `store`, the database in `data_dir`, copying the secret files `secrets` names.
    pub fn new(store: Arc<RocksStore>, data_dir: &Path, secrets: Vec<SecretPlan>) -> RocksBackup {
        RocksBackup { store, data_dir: data_dir.to_path_buf(), secrets }
    }
}

impl Backup for RocksBackup {
    fn take(&self, target: &Path) -> Result<Manifest, BackupError> {
        let started = Instant::now();
        refuse_inside(target, &self.data_dir)?;
        files::prepare_target(target)?;
        let created_at = files::now_rfc3339();
        let database = target.join(files::DATABASE_DIRECTORY);
        self.store.checkpoint(&database).map_err(|e| BackupError::Storage(e.to_string()))?;
        let secrets = files::copy_secrets(target, &self.secrets)?;
        let (shard_count, shards) = marks(&database)?;
        // Hashing syncs every file, then the directories: the copy is durable before its manifest.
        let listed = files::describe_files(target)?;
        files::sync_directory(target)?;
        let manifest = Manifest {
            format: files::MANIFEST_FORMAT,
            created_at,
            binary_version: env!("CARGO_PKG_VERSION").to_string(),
            journal_format_version: engine::journal::JOURNAL_FORMAT_VERSION,
            shard_count,
            shards,
            bytes: listed.iter().map(|f| f.bytes).sum(),
            files: listed,
            secrets,
            not_included: NOT_INCLUDED.iter().map(|s| s.to_string()).collect(),
            elapsed_ms: started.elapsed().as_millis() as u64,
        };
        files::write_manifest(target, &manifest)?;
        Ok(manifest)
    }
}

/// Refuses a target inside the data directory (or holding it): the database would copy itself.
fn refuse_inside(target: &Path, data_dir: &Path) -> Result<(), BackupError> {
    let resolve = |p: &Path| {
        // The deepest part that exists, resolved, with the rest appended.
        let mut existing = p.to_path_buf();
        let mut rest = Vec::new();
        while !existing.exists() {
            match (existing.file_name().map(|n| n.to_os_string()), existing.parent()) {
                (Some(name), Some(parent)) => {
                    rest.push(name);
                    existing = parent.to_path_buf();
                }
                _ => break,
            }
        }
        let mut resolved = std::fs::canonicalize(&existing).unwrap_or(existing);
        resolved.extend(rest.iter().rev());
        resolved
    };
    let (target, data_dir) = (resolve(target), resolve(data_dir));
    if target.starts_with(&data_dir) || data_dir.starts_with(&target) {
        return Err(BackupError::TargetInvalid(format!(
            "{} is inside the data directory {} (or holds it): choose a directory apart from it",
            target.display(),
            data_dir.display()
        )));
    }
    Ok(())
}

/// The shard count and each shard's last journal batch, read from the copy in `database`.
fn marks(database: &Path) -> Result<(u16, Vec<ShardMark>), BackupError> {
    let copy = RocksStore::open_copy(database).map_err(|e| BackupError::Storage(e.to_string()))?;
    let storage = |e: engine::journal::JournalError| BackupError::Storage(e.to_string());
    let shard_count = engine::journal::stored_shard_count(&copy).map_err(storage)?.unwrap_or(0);
    let shards = (0..shard_count)
        .map(|shard| Ok(ShardMark { shard, last_sequence: engine::journal::last_sequence(&copy, shard).map_err(storage)? }))
        .collect::<Result<Vec<_>, BackupError>>()?;
    Ok((shard_count, shards))
}

/// Which secrets a backup of `data_dir` copies and what it says of the others: a secret's file
/// in the data directory travels with the backup; one kept in the environment or a file outside
/// does not, and the manifest says where it is.
pub fn secret_plans(data_dir: &Path, places: &gateway::secrets::SecretPlaces) -> Vec<SecretPlan> {
    use gateway::admin::{ADMIN_TOKEN_FILE, ADMIN_TOKEN_VARIABLE};
    use gateway::secrets::{inside, MASTER_KEY_FILE, MASTER_KEY_VARIABLE};
    let kinds = [
        (
            "master_key",
            MASTER_KEY_VARIABLE,
            &places.master_key_file,
            MASTER_KEY_FILE,
            "master-key-file",
            "without the same key every platform secret, channel key and entry cursor changes",
        ),
        (
            "operator_token",
            ADMIN_TOKEN_VARIABLE,
            &places.admin_token_file,
            ADMIN_TOKEN_FILE,
            "admin-token-file",
            "without it a new token is generated at the first start",
        ),
    ];
    let mut plans = Vec::new();
    for (secret, variable, configured, default_name, flag, without) in kinds {
        let secret = secret.to_string();
        let in_environment = std::env::var(variable).is_ok_and(|v| !v.is_empty());
        let plan = match configured {
            _ if in_environment => SecretPlan::Outside {
                secret,
                note: format!("from the environment variable {variable}: not in this backup; give the restored server the same value ({without})"),
            },
            Some(path) if !inside(path, data_dir) => SecretPlan::Outside {
                secret,
                note: format!(
                    "kept in {} outside the data directory: not in this backup; keep that file safe yourself and point the restored server at it (--{flag}; {without})",
                    path.display()
                ),
            },
            Some(path) => SecretPlan::Copy { secret, source: path.clone(), name: path.file_name().map_or(default_name.into(), |n| n.to_string_lossy().into_owned()) },
            None if data_dir.join(default_name).is_file() => SecretPlan::Copy { secret, source: data_dir.join(default_name), name: default_name.to_string() },
            None => SecretPlan::Outside { secret, note: format!("none in the data directory and none configured: not in this backup ({without})") },
        };
        plans.push(plan);
    }
    plans
}

/// `clearing backup --to DIR --data-dir D`: a backup of a stopped server's data directory.
pub fn backup_offline(to: &Path, data_dir: &Path, places: &gateway::secrets::SecretPlaces, rows_compaction: storage_rocks::RowsCompaction) -> Result<()> {
    if !data_dir.join("CURRENT").is_file() {
        bail!("{} holds no database (no CURRENT file)", data_dir.display());
    }
    let store = RocksStore::open_with(data_dir, rows_compaction)
        .with_context(|| format!("opening {} (is the server running on it? Then ask it: clearing backup --url URL --to DIR)", data_dir.display()))?;
    let backup = RocksBackup::new(Arc::new(store), data_dir, secret_plans(data_dir, places));
    let manifest = backup.take(to).map_err(|e| anyhow!("{e}"))?;
    print_summary(&manifest.summary(to));
    Ok(())
}

/// `clearing backup --url URL --to DIR`: asks the running server (`POST /admin/backups`).
pub fn backup_remote(url: &str, to: &Path, token: &str) -> Result<()> {
    let to = std::path::absolute(to).with_context(|| format!("making {} absolute", to.display()))?;
    let to = to.to_str().ok_or_else(|| anyhow!("{} is not UTF-8", to.display()))?;
    let request = ureq::post(&format!("{}/admin/backups", url.trim_end_matches('/'))).set("Authorization", &format!("Bearer {token}"));
    match request.send_json(serde_json::json!({ "to": to })) {
        Ok(response) => {
            let summary: Summary = response.into_json().context("reading the server's answer")?;
            print_summary(&summary);
            Ok(())
        }
        Err(ureq::Error::Status(status, response)) => {
            let body: serde_json::Value = response.into_json().unwrap_or_default();
            bail!(
                "the server refused the backup: {status} {}: {}",
                body["error"]["code"].as_str().unwrap_or("?"),
                body["error"]["message"].as_str().unwrap_or("?")
            )
        }
        Err(error) => bail!("asking {url} for a backup: {error}"),
    }
}

/// The operator token for `clearing backup --url`: `CLEARING_ADMIN_TOKEN`, else the file given
/// or configured, else the data directory's `admin-token` (where the server generates it).
pub fn client_token(file: Option<&Path>, data_dir: &Path) -> Result<String> {
    if let Some(token) = std::env::var(gateway::admin::ADMIN_TOKEN_VARIABLE).ok().filter(|t| !t.is_empty()) {
        return Ok(token);
    }
    let path = file.map_or_else(|| data_dir.join(gateway::admin::ADMIN_TOKEN_FILE), Path::to_path_buf);
    let token = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the operator token from {} (or set {})", path.display(), gateway::admin::ADMIN_TOKEN_VARIABLE))?;
    Ok(token.trim().to_string())
}

/// `clearing restore --from DIR --data-dir D`.
pub fn restore(from: &Path, data_dir: &Path) -> Result<()> {
    let started = Instant::now();
    // A backup this build cannot read is refused before anything is written (before session 61
    // it was restored, and the server then refused the directory).
    let declared = files::read_manifest(from).map_err(|e| anyhow!("{e}"))?;
    if !engine::journal::READABLE_JOURNAL_VERSIONS.contains(&declared.journal_format_version) {
        bail!(
            "the backup in {} holds journal format {} (written by {}); this build reads formats {} to {}: restore it with a build that reads it",
            from.display(),
            declared.journal_format_version,
            declared.binary_version,
            engine::journal::READABLE_JOURNAL_VERSIONS.start(),
            engine::journal::READABLE_JOURNAL_VERSIONS.end()
        );
    }
    let manifest = files::restore(from, data_dir).map_err(|e| anyhow!("{e}"))?;
    // The restored database opens and holds what the manifest says it held.
    let (shard_count, shards) = marks(data_dir).map_err(|e| anyhow!("the restored database in {}: {e}", data_dir.display()))?;
    if (shard_count, &shards) != (manifest.shard_count, &manifest.shards) {
        bail!("the restored database holds shards {shards:?}, the manifest says {:?}: do not start a server on {}", manifest.shards, data_dir.display());
    }
    // Each shard recovers as a start would (its newest usable checkpoint and the journal after
    // it) and its whole live chain reads back (before session 61 only the keys were compared).
    {
        let store: Arc<dyn storage::Store> =
            Arc::new(RocksStore::open_read_only(data_dir).with_context(|| format!("opening the restored database in {}", data_dir.display()))?);
        for shard in 0..shard_count {
            let history = engine::checkpoint::HistoryReader::new(store.clone(), shard);
            let recovered = engine::journal::recover_shard_filtered(&*store, shard, None, Some(&history))
                .map_err(|e| anyhow!("the restored database does not recover (shard {shard}): {e}; do not start a server on {}", data_dir.display()))?;
            for reason in &recovered.skipped {
                println!("shard {shard}: skipped {reason}");
            }
            engine::journal::verify_shard(&*store, shard, None).map_err(|e| {
                anyhow!(
                    "the restored journal of shard {shard} is broken at batch {}: {}: {}; do not start a server on {}",
                    e.sequence,
                    e.kind,
                    e.reason,
                    data_dir.display()
                )
            })?;
        }
    }
    // Checked: the directory may be opened (its marker goes last).
    files::finish_restore(data_dir).map_err(|e| anyhow!("{e}"))?;
    println!("restored: {} files, {} bytes from the backup of {} into {}", manifest.files.len(), manifest.bytes, manifest.created_at, data_dir.display());
    println!("shards: {}", marks_text(&manifest.shards));
    for note in &manifest.secrets {
        let state = if note.included { "restored into the data directory" } else { "NOT restored" };
        println!("{}: {state}: {}", note.secret, note.note);
    }
    for line in &manifest.not_included {
        println!("not included: {line}");
    }
    println!("next: clearing serve --data-dir {} (with the configuration and the secrets above; shard_count = {})", data_dir.display(), manifest.shard_count);
    println!("elapsed_s: {:.3}", started.elapsed().as_secs_f64());
    Ok(())
}

fn marks_text(marks: &[ShardMark]) -> String {
    marks.iter().map(|m| format!("{}:{}", m.shard, m.last_sequence)).collect::<Vec<_>>().join(" ")
}

fn print_summary(summary: &Summary) {
    println!("backup: {}", summary.path);
    println!("created_at: {}", summary.created_at);
    println!("shards (shard:last batch): {}", marks_text(&summary.shards));
    println!("files: {}, bytes: {}", summary.files, summary.bytes);
    for note in &summary.secrets {
        println!("{}: {}: {}", note.secret, if note.included { "included" } else { "NOT included" }, note.note);
    }
    for line in &summary.not_included {
        println!("not included: {line}");
    }
    println!("elapsed_s: {:.3}", summary.elapsed_ms as f64 / 1000.0);
}
