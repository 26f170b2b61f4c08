//! Backups while serving: `POST /admin/backups` takes a consistent copy of the whole database
//! (every shard and every record at one point) into a new or empty directory under the
//! configured `[backups] root`, one at a time, on a blocking thread; `GET /admin/backups` lists
//! the backups under the root. The copy is made by the `Backup` capability the binary gives
//! (a RocksDB checkpoint), so this crate names no storage engine.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use storage::backup::{Backup, BackupError};

use crate::admin::AdminToken;
use crate::error::{blocking, ApiError};

/// The longest `to` accepted, in bytes (Linux's PATH_MAX).
pub const TARGET_BYTES_MAX: usize = 4096;

/// Where backups may go, who takes them, and whether one is being taken.
pub struct Backups {
    /// The configured root, resolved; `None`: backups through the API are off.
    root: Option<PathBuf>,
    /// The data directory, resolved (no backup goes inside it).
    data_dir: PathBuf,
    taker: Option<Arc<dyn Backup>>,
    running: AtomicBool,
}

impl Backups {
    /// No backups through the API (tests, `serve` without a capability).
    pub fn off() -> Backups {
        Backups { root: None, data_dir: PathBuf::new(), taker: None, running: AtomicBool::new(false) }
    }

    /// Backups by `taker` under `root` (created 0700 when missing), never inside `data_dir`.
    pub fn new(root: Option<PathBuf>, data_dir: &Path, taker: Arc<dyn Backup>) -> std::io::Result<Backups> {
        let root = match root {
            Some(root) => {
                crate::secrets::private_directory(&root)?;
                Some(std::fs::canonicalize(&root)?)
            }
            None => None,
        };
        let data_dir = std::fs::canonicalize(data_dir)?;
        Ok(Backups { root, data_dir, taker: Some(taker), running: AtomicBool::new(false) })
    }

    /// The directory a request's `to` names, if it may be written: absolute, plain (no `.` or
    /// `..`), strictly under the root once symbolic links are resolved, and apart from the data
    /// directory. Its emptiness is the taker's check (it may be created meanwhile).
    fn target(&self, to: &str) -> Result<PathBuf, ApiError> {
        let root = self
            .root
            .as_ref()
            .ok_or_else(|| ApiError::invalid("backups through the API are off: set [backups] root to the directory they may be written under", "to"))?;
        let path = Path::new(to);
        let plain = path.is_absolute() && path.components().skip(1).all(|c| matches!(c, Component::Normal(_)));
        if to.len() > TARGET_BYTES_MAX || !plain {
            return Err(ApiError::invalid("to must be an absolute directory path without . or .. parts", "to"));
        }
        let under = |resolved: &Path| resolved.starts_with(root) && resolved != root;
        if !under(path) {
            return Err(ApiError::invalid(&format!("to must be a directory under the backup root {}", root.display()), "to"));
        }
        // A symbolic link under the root may point elsewhere: resolve the part that exists.
        let mut existing = path;
        while !existing.exists() {
            existing = existing.parent().unwrap_or(root);
        }
        let resolved = std::fs::canonicalize(existing).map_err(|e| ApiError::invalid(&format!("to: {e}"), "to"))?;
        let resolved = resolved.join(path.strip_prefix(existing).unwrap_or(Path::new("")));
        if !under(&resolved) {
            return Err(ApiError::invalid(&format!("to leads outside the backup root {} through a link", root.display()), "to"));
        }
        if resolved.starts_with(&self.data_dir) {
            return Err(ApiError::invalid("to is inside the data directory", "to"));
        }
        Ok(resolved)
    }

    /// Marks a backup as running, or answers 409 `backup_running`.
    fn start(self: &Arc<Self>) -> Result<Running, ApiError> {
        if self.running.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return Err(busy());
        }
        Ok(Running(self.clone()))
    }
}

fn busy() -> ApiError {
    ApiError::new(409, "backup_running", "a backup is being taken; try again when it has finished")
}

/// A running backup; dropping it (the backup done, failed or panicked) lets the next one start.
struct Running(Arc<Backups>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
    }
}

/// `POST /admin/backups`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackupRequest {
    /// The backup's directory: absolute, under `[backups] root`, absent or empty.
    to: String,
}

/// The API error for a backup that did not happen.
fn refusal(error: BackupError) -> ApiError {
    match error {
        BackupError::TargetNotEmpty(_) | BackupError::TargetInvalid(_) => ApiError::invalid(&error.to_string(), "to"),
        BackupError::Busy => busy(),
        other => ApiError::new(500, "internal_error", &format!("the backup failed: {other}")),
    }
}

/// `POST /admin/backups` (issue "Bounded state", item 4): copies the whole database as of one
/// point (a RocksDB checkpoint: every shard's journal and every record; table files hard-linked
/// when on the same file system) with the secrets that live in the data directory into `to`,
/// writes a manifest (shards' last batches, files with sizes and SHA-256, what is and is not
/// included) and syncs it. The server keeps serving; one backup at a time (409
/// `backup_running`). Answers 201 with the manifest's summary.
#[utoipa::path(post, path = "/admin/backups", tag = "operator", request_body = crate::backups::BackupRequest, responses((status = 201, description = "The backup's manifest without its file list: path, created_at, binary_version, journal_format_version, shard_count, shards [{shard, last_sequence}], files, bytes, secrets [{secret, included, file?, note}], not_included, elapsed_ms", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode (400 `invalid_request` naming `to`: outside the root, not empty, ...; 409 `backup_running`)", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("operator_token" = [])))]
#[post("/admin/backups")]
pub async fn take_backup(
    request: HttpRequest,
    body: web::Bytes,
    token: web::Data<AdminToken>,
    backups: web::Data<Arc<Backups>>,
) -> Result<HttpResponse, ApiError> {
    token.check(&request)?;
    let body: BackupRequest = crate::signed::parse_json(&body)?;
    let target = backups.target(&body.to)?;
    let taker = backups.taker.clone().ok_or_else(|| ApiError::invalid("backups through the API are off", "to"))?;
    let running = backups.start()?;
    // Checkpointing, hashing and syncing take seconds: on a blocking thread, never a shard's
    // thread or an HTTP worker. The mark is released when the work ends, even if the caller left.
    let manifest = blocking(move || {
        let _running = running;
        taker.take(&target).map(|manifest| (manifest.summary(&target), target))
    })
    .await?;
    let (summary, _) = manifest.map_err(refusal)?;
    Ok(HttpResponse::Created().json(summary))
}

/// `GET /admin/backups`: the backups under the root (`complete` with the manifest's summary,
/// `incomplete` without a manifest: being taken or failed, `unreadable`), and whether one is
/// being taken. Files are not hashed here: `clearing restore` checks them.
#[utoipa::path(get, path = "/admin/backups", tag = "operator", responses((status = 200, description = "{root, running, backups: [{path, state, summary?, error?}]}", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("operator_token" = [])))]
#[get("/admin/backups")]
pub async fn list_backups(request: HttpRequest, token: web::Data<AdminToken>, backups: web::Data<Arc<Backups>>) -> Result<HttpResponse, ApiError> {
    token.check(&request)?;
    let running = backups.running.load(Ordering::Acquire);
    let Some(root) = backups.root.clone() else {
        return Ok(HttpResponse::Ok().json(serde_json::json!({"root": null, "running": running, "backups": []})));
    };
    let listed = blocking({
        let root = root.clone();
        move || storage::backup::list(&root)
    })
    .await?
    .map_err(|e| ApiError::new(500, "internal_error", &format!("listing the backups: {e}")))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"root": root.display().to_string(), "running": running, "backups": listed})))
}

/// Registers the backup routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(take_backup).service(list_backups);
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Never;

    impl Backup for Never {
        fn take(&self, _: &Path) -> Result<storage::backup::Manifest, BackupError> {
            Err(BackupError::Busy)
        }
    }

    #[test]
    fn targets_must_lie_under_the_root_and_apart_from_the_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = std::fs::canonicalize(dir.path()).expect("resolve");
        let (root, data) = (base.join("backups"), base.join("data"));
        std::fs::create_dir_all(&data).expect("data");
        std::fs::create_dir_all(base.join("elsewhere")).expect("elsewhere");
        std::os::unix::fs::symlink(base.join("elsewhere"), base.join("link")).expect("link");
        let backups = Backups::new(Some(root.clone()), &data, Arc::new(Never)).expect("backups");
        std::os::unix::fs::symlink(base.join("elsewhere"), root.join("out")).expect("link under the root");
        let text = |p: &Path| p.to_str().expect("utf-8").to_string();
        let accepted = [text(&root.join("monday")), text(&root.join("2026/12/01"))];
        for to in accepted {
            assert_eq!(backups.target(&to).expect(&to), PathBuf::from(&to));
        }
        let refused = [
            text(&root),
            text(&base.join("elsewhere/x")),
            text(&data.join("x")),
            format!("{}/../elsewhere", root.display()),
            "relative/path".to_string(),
            text(&root.join("out/x")),
            text(&base.join("link/x")),
            format!("{}/{}", root.display(), "x".repeat(TARGET_BYTES_MAX)),
            String::new(),
        ];
        for to in refused {
            let error = backups.target(&to).err().unwrap_or_else(|| panic!("{to} accepted"));
            assert_eq!((error.status, error.param.as_deref()), (400, Some("to")), "{to}");
        }
        let off = Backups::off();
        assert_eq!(off.target(&text(&root.join("x"))).err().and_then(|e| e.param).as_deref(), Some("to"));
    }

    #[test]
    fn one_backup_at_a_time() {
        let backups = Arc::new(Backups::off());
        let first = backups.start().expect("the first");
        assert_eq!(backups.start().err().map(|e| (e.status, e.code)), Some((409, "backup_running")));
        drop(first);
        assert!(backups.start().is_ok(), "the mark goes with the backup");
    }
}
