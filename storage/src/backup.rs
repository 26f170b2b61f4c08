//! Backups as files: what a consistent copy of the database holds (its manifest), checking a copy
//! against its manifest, restoring it, and listing copies. Taking the copy itself is the store's
//! business (`storage-rocks`: a RocksDB checkpoint, through the `Backup` capability); this module
//! knows only files, so it builds without RocksDB.
//!
//! A backup directory holds `db/` (the database's files), `secrets/` (the secrets that lived in
//! the data directory, if any) and `manifest.json`, written last and synced: a directory without
//! a manifest is an unfinished backup, never a valid one.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest's file name in a backup directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The directory of the database's files in a backup.
pub const DATABASE_DIRECTORY: &str = "db";
/// The directory of the secrets copied from the data directory.
pub const SECRETS_DIRECTORY: &str = "secrets";
/// The manifest's own format; a restore refuses any other.
pub const MANIFEST_FORMAT: u32 = 1;
/// Files one backup may hold (a RocksDB of a few hundred GB holds a few thousand).
pub const BACKUP_FILES_MAX: usize = 1_000_000;
/// The largest manifest read back (a million files at about 150 bytes each).
pub const MANIFEST_BYTES_MAX: u64 = 256 << 20;
/// Directory levels under a backup root that listing looks into.
pub const LIST_DEPTH_MAX: usize = 4;
/// Backups one listing shows at most.
pub const LIST_ENTRIES_MAX: usize = 1_000;

/// The whole record of one backup: when, from which build, what each shard's journal held, every
/// file with its size and SHA-256, and what the backup holds and does not hold besides.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    /// When the copy was taken (RFC 3339, UTC).
    pub created_at: String,
    /// The `clearing` version that took it.
    pub binary_version: String,
    /// The journal's encoding version (`engine::journal::JOURNAL_FORMAT_VERSION`).
    pub journal_format_version: u8,
    /// The shard count the data was written with, read from the copy.
    pub shard_count: u16,
    /// Each shard's last journal batch in the copy.
    pub shards: Vec<ShardMark>,
    /// Every file of the backup but the manifest, sorted by path.
    pub files: Vec<FileEntry>,
    /// The files' bytes in all.
    pub bytes: u64,
    /// Each secret the server uses: in this backup or where it is kept instead.
    pub secrets: Vec<SecretNote>,
    /// What a restore does not bring back, in words.
    pub not_included: Vec<String>,
    /// How long taking the copy, hashing and syncing took.
    pub elapsed_ms: u64,
}

/// One shard's last journal batch in the copy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ShardMark {
    pub shard: u16,
    pub last_sequence: u64,
}

/// One file of a backup.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative to the backup directory, with `/` (e.g. `db/000012.sst`).
    pub path: String,
    pub bytes: u64,
    /// Lower-case hex.
    pub sha256: String,
}

/// Whether a secret is in the backup, and if not where it is kept.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretNote {
    /// `master_key` or `operator_token`.
    pub secret: String,
    pub included: bool,
    /// The file's path in the backup (`secrets/master-key`) when included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Where it lives and what a restore needs, in words.
    pub note: String,
}

/// A secret the backup copies from the data directory, or a note about one it does not.
#[derive(Clone, Debug)]
pub enum SecretPlan {
    /// The file `source` lives in the data directory: copied to `secrets/{name}`, restored beside the database.
    Copy { secret: String, source: PathBuf, name: String },
    /// Kept outside the data directory: named in the manifest, not copied.
    Outside { secret: String, note: String },
}

/// The manifest without its file list: what `POST /admin/backups` answers and listings show.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub path: String,
    pub created_at: String,
    pub binary_version: String,
    pub journal_format_version: u8,
    pub shard_count: u16,
    pub shards: Vec<ShardMark>,
    pub files: usize,
    pub bytes: u64,
    pub secrets: Vec<SecretNote>,
    pub not_included: Vec<String>,
    pub elapsed_ms: u64,
}

impl Manifest {
    /// The summary of the backup in `directory`.
    pub fn summary(&self, directory: &Path) -> Summary {
        Summary {
            path: directory.display().to_string(),
            created_at: self.created_at.clone(),
            binary_version: self.binary_version.clone(),
            journal_format_version: self.journal_format_version,
            shard_count: self.shard_count,
            shards: self.shards.clone(),
            files: self.files.len(),
            bytes: self.bytes,
            secrets: self.secrets.clone(),
            not_included: self.not_included.clone(),
            elapsed_ms: self.elapsed_ms,
        }
    }
}

/// Why a backup or a restore did not happen.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The target exists and holds something: nothing is overwritten.
    #[error("{0} exists and is not empty: a backup or a restore writes only into a new or empty directory")]
    TargetNotEmpty(PathBuf),
    /// The target cannot be used (not a directory, inside the data directory, ...).
    #[error("{0}")]
    TargetInvalid(String),
    /// Another backup is being taken.
    #[error("a backup is being taken; try again when it has finished")]
    Busy,
    /// The manifest is missing, unreadable or of another format.
    #[error("manifest of {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    /// A file does not match the manifest (changed, truncated, missing).
    #[error("backup file {path} does not match the manifest: {reason}; the backup cannot be trusted")]
    Tampered { path: String, reason: String },
    /// The store could not make or read the copy.
    #[error("storage: {0}")]
    Storage(String),
    #[error("{what} {path}: {error}")]
    Io { what: &'static str, path: PathBuf, error: std::io::Error },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BackupError + 'a {
    move |error| BackupError::Io { what, path: path.to_path_buf(), error }
}

/// Takes a consistent backup of the whole store: the capability the server is given.
pub trait Backup: Send + Sync {
    /// Copies the store, all of it at one point, into `target` (absent or empty), with the
    /// secrets the data directory holds, writes and syncs the manifest, and returns it.
    fn take(&self, target: &Path) -> Result<Manifest, BackupError>;
}

/// Makes `target` an empty directory private to its owner (0700): created when missing (with its
/// parents); an existing one must be an empty directory.
pub fn prepare_target(target: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::read_dir(target) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::TargetNotEmpty(target.to_path_buf()));
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(target).map_err(io("creating", target))?;
            if let Some(parent) = target.parent() {
                sync_directory(parent)?;
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(BackupError::TargetInvalid(format!("{} is not a directory", target.display())));
        }
        Err(error) => return Err(BackupError::Io { what: "reading", path: target.to_path_buf(), error }),
    }
    // The umask may have masked the mode: set it exactly (member data is for the owner alone).
    std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o700)).map_err(io("setting the mode of", target))
}

/// Fsyncs a directory (its entries: names created, renamed or linked).
pub fn sync_directory(directory: &Path) -> Result<(), BackupError> {
    std::fs::File::open(directory).and_then(|d| d.sync_all()).map_err(io("syncing", directory))
}

/// Copies the secret files of `plans` into `target/secrets/` (0600, synced) and returns the notes.
pub fn copy_secrets(target: &Path, plans: &[SecretPlan]) -> Result<Vec<SecretNote>, BackupError> {
    let directory = target.join(SECRETS_DIRECTORY);
    let mut notes = Vec::new();
    for plan in plans {
        match plan {
            SecretPlan::Copy { secret, source, name } => {
                std::fs::create_dir_all(&directory).map_err(io("creating", &directory))?;
                let to = directory.join(name);
                copy_private(source, &to)?;
                notes.push(SecretNote {
                    secret: secret.clone(),
                    included: true,
                    file: Some(format!("{SECRETS_DIRECTORY}/{name}")),
                    note: format!(
                        "it lived in the data directory ({}), so this backup holds it: whoever reads the backup can use it; a restore puts it back beside the database",
                        source.display()
                    ),
                });
            }
            SecretPlan::Outside { secret, note } => notes.push(SecretNote { secret: secret.clone(), included: false, file: None, note: note.clone() }),
        }
    }
    if directory.exists() {
        sync_directory(&directory)?;
    }
    Ok(notes)
}

/// Copies one file with mode 0600 and syncs it.
fn copy_private(from: &Path, to: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut source = std::fs::File::open(from).map_err(io("opening", from))?;
    let mut target = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(to).map_err(io("creating", to))?;
    std::io::copy(&mut source, &mut target).map_err(io("copying to", to))?;
    target.sync_all().map_err(io("syncing", to))
}

/// Every file under `target/db` and `target/secrets` with its size and SHA-256, sorted by path;
/// each file is synced too (a hard link's data already is; a copied one may not be yet).
pub fn describe_files(target: &Path) -> Result<Vec<FileEntry>, BackupError> {
    let mut relative = Vec::new();
    for top in [DATABASE_DIRECTORY, SECRETS_DIRECTORY] {
        collect(target, Path::new(top), &mut relative)?;
    }
    relative.sort();
    let mut files = Vec::with_capacity(relative.len());
    for path in relative {
        let full = target.join(&path);
        let (bytes, sha256) = hash_file(&full, None)?;
        std::fs::File::open(&full).and_then(|f| f.sync_all()).map_err(io("syncing", &full))?;
        files.push(FileEntry { path: path_text(&path)?, bytes, sha256 });
    }
    for top in [DATABASE_DIRECTORY, SECRETS_DIRECTORY] {
        if target.join(top).is_dir() {
            sync_directory(&target.join(top))?;
        }
    }
    Ok(files)
}

/// The `/`-separated text of a relative path made of plain names.
fn path_text(path: &Path) -> Result<String, BackupError> {
    let parts: Option<Vec<&str>> = path.components().map(|c| if let std::path::Component::Normal(name) = c { name.to_str() } else { None }).collect();
    parts.filter(|p| !p.is_empty()).map(|p| p.join("/")).ok_or_else(|| BackupError::TargetInvalid(format!("{} is not a plain relative path", path.display())))
}

/// The relative paths of the regular files under `base/relative` (nothing when it is absent).
fn collect(base: &Path, relative: &Path, out: &mut Vec<PathBuf>) -> Result<(), BackupError> {
    let directory = base.join(relative);
    let entries = match std::fs::read_dir(&directory) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(BackupError::Io { what: "reading", path: directory, error }),
    };
    for entry in entries {
        let entry = entry.map_err(io("reading", &directory))?;
        let kind = entry.file_type().map_err(io("reading", &directory))?;
        let path = relative.join(entry.file_name());
        if kind.is_dir() {
            collect(base, &path, out)?;
        } else if kind.is_file() {
            if out.len() >= BACKUP_FILES_MAX {
                return Err(BackupError::TargetInvalid(format!("more than {BACKUP_FILES_MAX} files under {}", base.display())));
            }
            out.push(path);
        }
    }
    Ok(())
}

/// The size and SHA-256 (hex) of a file, copying it to `copy` on the way when given.
fn hash_file(path: &Path, mut copy: Option<&mut std::fs::File>) -> Result<(u64, String), BackupError> {
    let mut file = std::fs::File::open(path).map_err(io("opening", path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let read = file.read(&mut buffer).map_err(io("reading", path))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        if let Some(target) = copy.as_deref_mut() {
            target.write_all(&buffer[..read]).map_err(io("writing a copy of", path))?;
        }
        bytes += read as u64;
    }
    Ok((bytes, hex::encode(hasher.finalize())))
}

/// Writes `manifest` into `target` (a temporary file synced, renamed, the directory synced): its
/// presence means the backup is whole.
pub fn write_manifest(target: &Path, manifest: &Manifest) -> Result<(), BackupError> {
    let text = serde_json::to_vec_pretty(manifest).expect("manifests serialize");
    let temporary = target.join(format!(".{MANIFEST_FILE}.tmp"));
    let mut file = std::fs::File::create(&temporary).map_err(io("creating", &temporary))?;
    file.write_all(&text).and_then(|_| file.sync_all()).map_err(io("writing", &temporary))?;
    drop(file);
    let path = target.join(MANIFEST_FILE);
    std::fs::rename(&temporary, &path).map_err(io("renaming to", &path))?;
    sync_directory(target)
}

/// Reads and parses the manifest of the backup in `directory` (its shape only; `verify` checks
/// the files).
pub fn read_manifest(directory: &Path) -> Result<Manifest, BackupError> {
    let path = directory.join(MANIFEST_FILE);
    let refuse = |reason: String| BackupError::Manifest { path: directory.to_path_buf(), reason };
    let file = std::fs::File::open(&path).map_err(|e| refuse(format!("{} cannot be read ({e}); without it this is no finished backup", path.display())))?;
    let mut text = Vec::new();
    file.take(MANIFEST_BYTES_MAX + 1).read_to_end(&mut text).map_err(|e| refuse(e.to_string()))?;
    if text.len() as u64 > MANIFEST_BYTES_MAX {
        return Err(refuse(format!("larger than {MANIFEST_BYTES_MAX} bytes")));
    }
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| refuse(format!("not a manifest: {e}")))?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(refuse(format!("format {} (this build reads format {MANIFEST_FORMAT})", manifest.format)));
    }
    if manifest.shards.len() != usize::from(manifest.shard_count) {
        return Err(refuse(format!("{} shard marks for {} shards", manifest.shards.len(), manifest.shard_count)));
    }
    let mut seen = std::collections::HashSet::new();
    for file in &manifest.files {
        let path = Path::new(&file.path);
        let plain = path_text(path).ok().as_deref() == Some(file.path.as_str());
        let top = path.components().next().and_then(|c| c.as_os_str().to_str());
        if !plain || !matches!(top, Some(DATABASE_DIRECTORY | SECRETS_DIRECTORY)) || !seen.insert(file.path.as_str()) {
            return Err(refuse(format!("file {:?} is not a plain path under db/ or secrets/, or is listed twice", file.path)));
        }
    }
    Ok(manifest)
}

/// Checks every file the manifest lists against its size and SHA-256; returns the manifest.
pub fn verify(directory: &Path) -> Result<Manifest, BackupError> {
    let manifest = read_manifest(directory)?;
    for file in &manifest.files {
        let (bytes, sha256) =
            hash_file(&directory.join(&file.path), None).map_err(|e| BackupError::Tampered { path: file.path.clone(), reason: e.to_string() })?;
        check_file(file, bytes, &sha256)?;
    }
    Ok(manifest)
}

fn check_file(file: &FileEntry, bytes: u64, sha256: &str) -> Result<(), BackupError> {
    if bytes != file.bytes {
        return Err(BackupError::Tampered { path: file.path.clone(), reason: format!("{bytes} bytes, the manifest says {}", file.bytes) });
    }
    if sha256 != file.sha256 {
        return Err(BackupError::Tampered { path: file.path.clone(), reason: format!("SHA-256 {sha256}, the manifest says {}", file.sha256) });
    }
    Ok(())
}

/// Restores the backup in `from` into the data directory `to`: checks every file against the
/// manifest first, refuses a `to` that holds anything, then copies (never links: the backup stays
/// untouched by the restored server) the database's files and the secrets into `to`, checking each
/// copy's hash again as it is written, syncs every file and the directory. Returns the manifest.
pub fn restore(from: &Path, to: &Path) -> Result<Manifest, BackupError> {
    use std::os::unix::fs::OpenOptionsExt;
    let manifest = verify(from)?;
    prepare_target(to)?;
    // Before any file: a restore cut short (a stop, a full disk) or whose check fails leaves
    // a directory no command opens (before session 61 a server started on one missing its
    // master key generated another, changing every platform's secret).
    let marker = to.join(RESTORE_MARKER);
    let mut note = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&marker).map_err(io("creating", &marker))?;
    std::io::Write::write_all(
        &mut note,
        format!("a restore from {} into this directory has not finished: delete the directory and restore again\n", from.display()).as_bytes(),
    )
    .and_then(|()| note.sync_all())
    .map_err(io("writing", &marker))?;
    sync_directory(to)?;
    for file in &manifest.files {
        // db/NAME goes to the data directory itself, secrets/NAME beside it; anything nested keeps its path.
        let relative = Path::new(&file.path).components().skip(1).collect::<PathBuf>();
        let target = to.join(&relative);
        if let Some(parent) = target.parent().filter(|p| *p != to) {
            std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
        }
        let secret = file.path.starts_with(SECRETS_DIRECTORY);
        let mut copy =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(if secret { 0o600 } else { 0o644 }).open(&target).map_err(io("creating", &target))?;
        let (bytes, sha256) = hash_file(&from.join(&file.path), Some(&mut copy))?;
        check_file(file, bytes, &sha256)?;
        copy.sync_all().map_err(io("syncing", &target))?;
    }
    sync_directory(to)?;
    Ok(manifest)
}

/// The file a restore writes into its target before anything else and removes only once the
/// restored database was checked (`finish_restore`): a directory holding it is a restore that
/// was cut short or failed its check, which the commands refuse to open
/// (`unfinished_restore`).
pub const RESTORE_MARKER: &str = "RESTORE-IN-PROGRESS";

/// Ends a restore into `to` whose database was checked: its marker goes.
pub fn finish_restore(to: &Path) -> Result<(), BackupError> {
    let marker = to.join(RESTORE_MARKER);
    std::fs::remove_file(&marker).map_err(io("removing", &marker))?;
    sync_directory(to)
}

/// Whether `directory` holds a restore that has not finished (`RESTORE_MARKER`).
pub fn unfinished_restore(directory: &Path) -> bool {
    directory.join(RESTORE_MARKER).exists()
}

/// One backup found under a root.
#[derive(Serialize, Clone, Debug)]
pub struct Listed {
    pub path: String,
    /// `complete` (a manifest), `incomplete` (files but no manifest: being taken, or failed) or
    /// `unreadable` (a manifest that does not parse).
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The backups under `root` (directories holding a manifest or a `db/`), up to
/// `LIST_DEPTH_MAX` levels down and `LIST_ENTRIES_MAX` of them, sorted by path. Files are not
/// hashed: `verify` does that.
pub fn list(root: &Path) -> Result<Vec<Listed>, BackupError> {
    let mut found = Vec::new();
    walk(root, 0, &mut found)?;
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

fn walk(directory: &Path, depth: usize, found: &mut Vec<Listed>) -> Result<(), BackupError> {
    let mut children: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(directory).map_err(io("reading", directory))? {
        let entry = entry.map_err(io("reading", directory))?;
        // Symbolic links are not followed: the listing stays under the root.
        if entry.file_type().map_err(io("reading", directory))?.is_dir() {
            children.push(entry.path());
        }
    }
    children.sort();
    for child in children {
        if found.len() >= LIST_ENTRIES_MAX {
            return Ok(());
        }
        let path = child.display().to_string();
        if child.join(MANIFEST_FILE).is_file() {
            found.push(match read_manifest(&child) {
                Ok(manifest) => Listed { path, state: "complete", summary: Some(manifest.summary(&child)), error: None },
                Err(error) => Listed { path, state: "unreadable", summary: None, error: Some(error.to_string()) },
            });
        } else if child.join(DATABASE_DIRECTORY).is_dir() {
            found.push(Listed { path, state: "incomplete", summary: None, error: None });
        } else if depth + 1 < LIST_DEPTH_MAX {
            walk(&child, depth + 1, found)?;
        }
    }
    Ok(())
}

/// The current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_of(target: &Path) -> Manifest {
        let files = describe_files(target).expect("describe");
        Manifest {
            format: MANIFEST_FORMAT,
            created_at: now_rfc3339(),
            binary_version: "test".into(),
            journal_format_version: 1,
            shard_count: 1,
            shards: vec![ShardMark { shard: 0, last_sequence: 7 }],
            bytes: files.iter().map(|f| f.bytes).sum(),
            files,
            secrets: Vec::new(),
            not_included: Vec::new(),
            elapsed_ms: 0,
        }
    }

    fn backup_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        let manifest = manifest_of(dir.path());
        write_manifest(dir.path(), &manifest).expect("manifest");
        dir
    }

    #[test]
    fn a_backup_verifies_and_restores_byte_for_byte() {
        let backup = backup_with(&[("db/CURRENT", "MANIFEST-1\n"), ("db/000001.sst", "table"), ("secrets/master-key", "ab")]);
        let manifest = verify(backup.path()).expect("verifies");
        assert_eq!(manifest.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["db/000001.sst", "db/CURRENT", "secrets/master-key"]);
        assert_eq!(manifest.files[0].sha256, hex::encode(Sha256::digest(b"table")));
        let target = tempfile::tempdir().expect("tempdir");
        let to = target.path().join("data");
        restore(backup.path(), &to).expect("restores");
        assert_eq!(std::fs::read_to_string(to.join("000001.sst")).expect("copied"), "table");
        assert_eq!(std::fs::read_to_string(to.join("master-key")).expect("secret"), "ab");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(to.join("master-key")).expect("stat").permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&to).expect("stat").permissions().mode() & 0o777, 0o700);
        // Into a directory that now holds something: refused, nothing changed.
        assert!(matches!(restore(backup.path(), &to), Err(BackupError::TargetNotEmpty(_))));
        assert_eq!(std::fs::read_to_string(to.join("CURRENT")).expect("kept"), "MANIFEST-1\n");
    }

    #[test]
    fn tampered_truncated_or_missing_files_and_bad_manifests_are_refused() {
        let cases: [(&str, fn(&Path)); 5] = [
            ("changed byte", |d| std::fs::write(d.join("db/000001.sst"), "tablE").expect("write")),
            ("truncated", |d| std::fs::write(d.join("db/000001.sst"), "tab").expect("write")),
            ("missing", |d| std::fs::remove_file(d.join("db/CURRENT")).expect("remove")),
            ("no manifest", |d| std::fs::remove_file(d.join(MANIFEST_FILE)).expect("remove")),
            ("escaping path", |d| {
                let text = std::fs::read_to_string(d.join(MANIFEST_FILE)).expect("read").replace("db/CURRENT", "db/../../etc");
                std::fs::write(d.join(MANIFEST_FILE), text).expect("write")
            }),
        ];
        for (name, spoil) in cases {
            let backup = backup_with(&[("db/CURRENT", "MANIFEST-1\n"), ("db/000001.sst", "table")]);
            spoil(backup.path());
            let target = tempfile::tempdir().expect("tempdir");
            let to = target.path().join("data");
            let error = restore(backup.path(), &to).err().unwrap_or_else(|| panic!("{name}: restored"));
            assert!(matches!(error, BackupError::Tampered { .. } | BackupError::Manifest { .. }), "{name}: {error}");
            assert!(!to.exists(), "{name}: nothing is written before every file checks");
        }
    }

    #[test]
    fn targets_must_be_new_or_empty_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        prepare_target(&dir.path().join("a/b")).expect("created with parents");
        prepare_target(&dir.path().join("a/b")).expect("empty is fine");
        std::fs::write(dir.path().join("a/b/x"), "x").expect("write");
        assert!(matches!(prepare_target(&dir.path().join("a/b")), Err(BackupError::TargetNotEmpty(_))));
        assert!(matches!(prepare_target(&dir.path().join("a/b/x")), Err(BackupError::TargetInvalid(_))));
    }

    #[test]
    fn listing_finds_complete_incomplete_and_unreadable_backups() {
        let root = tempfile::tempdir().expect("tempdir");
        let complete = backup_with(&[("db/CURRENT", "x")]);
        let nightly = root.path().join("nightly/monday");
        std::fs::create_dir_all(&nightly).expect("mkdir");
        for name in ["db", MANIFEST_FILE] {
            std::fs::rename(complete.path().join(name), nightly.join(name)).expect("move");
        }
        std::fs::create_dir_all(root.path().join("half/db")).expect("mkdir");
        std::fs::create_dir_all(root.path().join("broken")).expect("mkdir");
        std::fs::write(root.path().join("broken").join(MANIFEST_FILE), "{").expect("write");
        let listed = list(root.path()).expect("list");
        let states: Vec<(&str, &str)> = listed.iter().map(|l| (l.path.rsplit_once(root.path().to_str().expect("utf-8")).expect("under").1, l.state)).collect();
        assert_eq!(states, [("/broken", "unreadable"), ("/half", "incomplete"), ("/nightly/monday", "complete")]);
        assert_eq!(listed[2].summary.as_ref().expect("summary").shards, [ShardMark { shard: 0, last_sequence: 7 }]);
    }
}
