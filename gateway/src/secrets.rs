//! Secrets the server keeps apart from its data (DESIGN.md invariant 14): the master key from
//! which platform secrets and channel keys are derived (so no platform secret is ever stored),
//! files written atomically with mode 0600 and synced with their directory, and the data
//! directory kept private (0700).

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// Writes `text` to `path` readable only by its owner, atomically: a temporary file beside it
/// (0600) is written and synced, renamed over `path`, and the directory is synced. A crash at any
/// point leaves either no file or the whole old one or the whole new one, never a partial one.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let directory = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a secret's path names a file"))?;
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(name);
    temporary_name.push(format!(".tmp-{}", std::process::id()));
    let temporary = directory.join(temporary_name);
    // A temporary file an earlier crash left behind is never the key: start it afresh.
    match std::fs::remove_file(&temporary) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    std::fs::File::open(directory)?.sync_all()
}

/// Makes `directory` private to its owner (0700): created so when missing; an existing one with
/// group or other access is tightened. Returns a warning to print when it had to be tightened.
pub fn private_directory(directory: &Path) -> std::io::Result<Option<String>> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !directory.exists() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(directory)?;
        // The mode is masked by the umask; set it exactly.
        std::fs::set_permissions(directory, std::fs::Permissions::from_mode(0o700))?;
        return Ok(None);
    }
    let mode = std::fs::metadata(directory)?.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    std::fs::set_permissions(directory, std::fs::Permissions::from_mode(mode & 0o700))?;
    Ok(Some(format!(
        "warning: the data directory {} was open to other users (mode {mode:o}); it is now {:o}: account and member data are for the server alone",
        directory.display(),
        mode & 0o700
    )))
}

/// Whether `path` lies inside `directory` (both as the file system resolves them).
pub fn inside(path: &Path, directory: &Path) -> bool {
    let resolve = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let parent = path.parent().map(resolve).unwrap_or_default();
    parent.starts_with(resolve(directory))
}

/// Reads a secret file that must exist, be private (no group or other access) and not be empty.
pub(crate) fn read_secret_file(path: &Path, what: &str) -> Result<String, SecretError> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(path).map_err(|e| SecretError(format!("{what} file {}: {e}", path.display())))?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretError(format!("{what} file {} has mode {mode:o}: other users can read it; chmod 600 it", path.display())));
    }
    let text = std::fs::read_to_string(path).map_err(|e| SecretError(format!("{what} file {}: {e}", path.display())))?;
    Ok(text.trim().to_string())
}

/// A secret that cannot be loaded: the message says which and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretError(pub String);

impl std::fmt::Display for SecretError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SecretError {}

/// Where a secret comes from (config `[secrets]`, flags, environment), in order of precedence:
/// the environment variable, then the file named in the configuration, then the file in the
/// data directory (generated on first start: zero setup, but it travels with the data's backups).
#[derive(Clone, Debug, Default)]
pub struct SecretPlaces {
    /// `master_key_file` / `--master-key-file`.
    pub master_key_file: Option<PathBuf>,
    /// `admin_token_file` / `--admin-token-file`.
    pub admin_token_file: Option<PathBuf>,
}

/// Where a loaded secret came from, for the start-up message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    Environment,
    /// A file outside the data directory, named by the configuration.
    File(PathBuf),
    /// The file in the data directory an earlier start wrote.
    DataDirectory(PathBuf),
    /// Generated now and written to this file in the data directory.
    Generated(PathBuf),
}

impl SecretSource {
    /// Whether the secret lives in the data directory (and so in every copy of it).
    pub fn in_data_directory(&self) -> bool {
        matches!(self, SecretSource::DataDirectory(_) | SecretSource::Generated(_))
    }
}

/// 32 random bytes from the operating system, as lower-case hex.
pub fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Whether `signature_hex` (either case) is the HMAC-SHA256 of `message` under `key`: the MAC's
/// own constant-time `verify_slice`, not a compare of hex strings.
pub fn hmac_verify_hex(key: &[u8], message: &[u8], signature_hex: &str) -> bool {
    let Ok(signature) = hex::decode(signature_hex) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.verify_slice(&signature).is_ok()
}

/// HMAC-SHA256 of `message` under `key`, as lower-case hex.
pub fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// The environment variable that holds the master key (64 hex digits).
pub const MASTER_KEY_VARIABLE: &str = "CLEARING_MASTER_KEY";
/// Whether `store` holds any platform's record (`p/`).
fn holds_platforms(store: &dyn storage::Store) -> Result<bool, SecretError> {
    let mut found = false;
    store
        .scan(b"p/", b"p0", &mut |_, _| {
            found = true;
            false
        })
        .map_err(|e| SecretError(format!("reading the platforms: {e}")))?;
    Ok(found)
}

/// The store's record of an HMAC of the master key (`MasterKey::check_against`).
pub const MASTER_KEY_CHECK: &[u8] = b"sk/master-key-check";

/// The master key's file in the data directory (the zero-setup default).
pub const MASTER_KEY_FILE: &str = "master-key";

/// The server's master key: `CLEARING_MASTER_KEY` (64 hex digits) when set, else the file
/// `master_key_file` names, else `<data_dir>/master-key`, generated on first start. Losing it
/// invalidates every platform secret; whoever has it can sign as any platform.
pub struct MasterKey([u8; 32]);

impl MasterKey {
    /// A key from its bytes (tests).
    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        MasterKey(bytes)
    }

    /// Loads the key from where `places` and the environment say, or creates it in the data
    /// directory. Refuses (with what to do) an empty, malformed or world-readable key file
    /// rather than generating a new key, which would silently invalidate every platform secret.
    pub fn load(data_dir: &Path, places: &SecretPlaces) -> Result<(MasterKey, SecretSource), SecretError> {
        MasterKey::load_with(data_dir, places, std::env::var(MASTER_KEY_VARIABLE).ok())
    }

    /// `load` with the environment variable's value given (tests).
    pub(crate) fn load_with(data_dir: &Path, places: &SecretPlaces, variable: Option<String>) -> Result<(MasterKey, SecretSource), SecretError> {
        if let Some(text) = variable.filter(|text| !text.is_empty()) {
            return Ok((MasterKey::parse(&text, MASTER_KEY_VARIABLE)?, SecretSource::Environment));
        }
        if let Some(path) = &places.master_key_file {
            let text = read_secret_file(path, "master key")?;
            if text.is_empty() {
                return Err(SecretError(format!("master key file {} is empty: restore the key from where its copy is kept", path.display())));
            }
            return Ok((MasterKey::parse(&text, &path.display().to_string())?, SecretSource::File(path.clone())));
        }
        let path = data_dir.join(MASTER_KEY_FILE);
        match std::fs::metadata(&path) {
            Ok(_) => {
                let text = read_secret_file(&path, "master key")?;
                if text.is_empty() {
                    return Err(SecretError(format!(
                        "master key file {} is empty (an older version crashed while writing it): if this data directory has no platforms yet, \
                         delete the file and start again (a new key is generated); otherwise restore the key from its copy, since every \
                         platform secret derives from it",
                        path.display()
                    )));
                }
                Ok((MasterKey::parse(&text, &path.display().to_string())?, SecretSource::DataDirectory(path)))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                // A database served with another key refuses this one once the store is open
                // (`MasterKey::check_against`), and this file is removed then.
                let text = random_hex();
                write_private(&path, &text).map_err(|e| SecretError(format!("writing the master key to {}: {e}", path.display())))?;
                Ok((MasterKey::parse(&text, "the generated key")?, SecretSource::Generated(path)))
            }
            Err(error) => Err(SecretError(format!("master key file {}: {error}", path.display()))),
        }
    }

    /// Holds the key to the one `store` was served with (session 61): the store keeps an HMAC
    /// of a fixed text under the key (`MASTER_KEY_CHECK`), written by the first server start
    /// that has none (`bind`; `clearing settle` only checks); another key is refused (every
    /// platform secret, channel key and entry cursor would change without a word: a copy of the
    /// data made without its key, a key file deleted, the wrong file named). A key generated at
    /// this start (`generated`) is refused where a check is, and also where none is but the
    /// store already holds platforms (a database of a build before the check, whose key is
    /// missing); it is removed then, so the next start asks for the right one again.
    pub fn check_against(&self, store: &dyn storage::Store, generated: Option<&Path>, bind: bool) -> Result<(), SecretError> {
        let check = hmac_hex(&self.0, b"clearing master key check");
        let stored = store.get(MASTER_KEY_CHECK).map_err(|e| SecretError(format!("reading the master key's check: {e}")))?;
        let refuse_generated = |path: &Path| {
            let _ = std::fs::remove_file(path);
            SecretError(format!(
                "no master key was at {} but this database holds platforms made with one: every platform secret derives from it; put \
                 its copy there (or name it with {MASTER_KEY_VARIABLE} or [secrets] master_key_file)",
                path.display()
            ))
        };
        match stored {
            Some(stored) if stored == check.as_bytes() => Ok(()),
            None if generated.is_some() && holds_platforms(store)? => Err(refuse_generated(generated.expect("checked"))),
            None if !bind => Ok(()),
            Some(_) => {
                if let Some(path) = generated {
                    let _ = std::fs::remove_file(path);
                }
                Err(SecretError(match generated {
                    Some(path) => format!(
                        "no master key was at {} but this database was served with one: every platform secret derives from it; put its \
                         copy there (or name it with {MASTER_KEY_VARIABLE} or [secrets] master_key_file)",
                        path.display()
                    ),
                    None => "the master key is not the one this database was served with: every platform secret derives from it; name the \
                             right key (the data directory's master-key file, CLEARING_MASTER_KEY or [secrets] master_key_file)"
                        .into(),
                }))
            }
            None => store.write(&[(MASTER_KEY_CHECK, check.as_bytes())]).map_err(|e| SecretError(format!("writing the master key's check: {e}"))),
        }
    }

    /// The key from 64 hex digits; `origin` names where they came from in the error.
    fn parse(text: &str, origin: &str) -> Result<MasterKey, SecretError> {
        let bytes = hex::decode(text.trim()).map_err(|_| SecretError(format!("the master key in {origin} is not hex")))?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| SecretError(format!("the master key in {origin} must be 32 bytes (64 hex digits)")))?;
        Ok(MasterKey(key))
    }

    /// A channel's callback signing key: HMAC(master key, "channel-key/NAME").
    pub fn channel_key(&self, channel: &str) -> String {
        hmac_hex(&self.0, format!("channel-key/{channel}").as_bytes())
    }

    /// The secret of a platform at a secret version: HMAC(master key, "platform-secret/ID/VERSION").
    pub fn platform_secret(&self, platform_id: u32, version: u32) -> String {
        hmac_hex(&self.0, format!("platform-secret/{platform_id}/{version}").as_bytes())
    }

    /// A platform's webhook signing secret at a version: `whsec_` and HMAC(master key,
    /// "webhook-secret/ID/VERSION"). Its own derivation, so a receiver holding it can check
    /// deliveries but sign no request (the API secret moves money).
    pub fn webhook_secret(&self, platform_id: u32, version: u32) -> String {
        format!("whsec_{}", hmac_hex(&self.0, format!("webhook-secret/{platform_id}/{version}").as_bytes()))
    }

    /// A 256-bit key for `purpose`: HMAC(master key, "key/PURPOSE").
    pub fn derived_key(&self, purpose: &str) -> [u8; 32] {
        let mut key = [0u8; 32];
        hex::decode_to_slice(hmac_hex(&self.0, format!("key/{purpose}").as_bytes()), &mut key).expect("an HMAC-SHA256 is 32 bytes of hex");
        key
    }

    /// A short tag (64 bits of HMAC) over `message` for `purpose`: what we hand out and must get
    /// back unchanged (cursors) carries one.
    pub fn tag(&self, purpose: &str, message: &str) -> String {
        let mut tag = hmac_hex(&self.0, format!("tag/{purpose}/{message}").as_bytes());
        tag.truncate(16);
        tag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        assert_eq!(hmac_hex(b"Jefe", b"what do ya want for nothing?"), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn platform_secrets_differ_by_platform_and_version() {
        let key = MasterKey([7; 32]);
        assert_ne!(key.platform_secret(1, 1), key.platform_secret(2, 1));
        assert_ne!(key.platform_secret(1, 1), key.platform_secret(1, 2));
        assert_eq!(key.platform_secret(1, 1), key.platform_secret(1, 1));
        assert_eq!(key.platform_secret(1, 1).len(), 64);
    }

    #[test]
    fn webhook_secrets_are_apart_from_platform_secrets() {
        let key = MasterKey([7; 32]);
        let secret = key.webhook_secret(1, 1);
        assert!(secret.starts_with("whsec_") && secret.len() == 70, "{secret}");
        assert_ne!(secret[6..], key.platform_secret(1, 1));
        assert_ne!(secret, key.webhook_secret(1, 2));
        assert_ne!(secret, key.webhook_secret(2, 1));
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
    }

    #[test]
    fn private_files_are_0600_replaced_whole_and_leave_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        write_private(&path, "first").expect("write");
        assert_eq!((std::fs::read_to_string(&path).expect("read"), mode(&path)), ("first".to_string(), 0o600));
        // A temporary file a crash left behind, and an existing file: both replaced.
        std::fs::write(dir.path().join(format!(".key.tmp-{}", std::process::id())), "partial").expect("leftover");
        write_private(&path, "second").expect("rewrite");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "second");
        let names: Vec<_> = std::fs::read_dir(dir.path()).expect("list").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, ["key"], "no temporary file is left");
    }

    #[test]
    fn the_data_directory_is_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let fresh = dir.path().join("a/b");
        assert_eq!(private_directory(&fresh).expect("create"), None);
        assert_eq!(mode(&fresh), 0o700);
        let open = dir.path().join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert!(private_directory(&open).expect("tighten").is_some_and(|w| w.contains("755")));
        assert_eq!(mode(&open), 0o700);
        assert_eq!(private_directory(&open).expect("again"), None);
    }

    #[test]
    fn master_key_files_are_checked_never_silently_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let none = SecretPlaces::default();
        let (first, source) = MasterKey::load_with(dir.path(), &none, None).expect("generated");
        assert_eq!(source, SecretSource::Generated(dir.path().join(MASTER_KEY_FILE)));
        assert_eq!(mode(&dir.path().join(MASTER_KEY_FILE)), 0o600);
        let (again, source) = MasterKey::load_with(dir.path(), &none, None).expect("read back");
        assert!(source.in_data_directory() && again.0 == first.0);
        // An empty key (an older version crashed while writing it) is refused with what to do.
        std::fs::write(dir.path().join(MASTER_KEY_FILE), "").expect("truncate");
        let error = MasterKey::load_with(dir.path(), &none, None).err().expect("refused");
        assert!(error.0.contains("is empty") && error.0.contains("delete the file"), "{error}");
        // A key file outside the data directory: must exist, be private and hold 64 hex digits.
        let outside = tempfile::tempdir().expect("tempdir");
        let path = outside.path().join("master-key");
        let places = SecretPlaces { master_key_file: Some(path.clone()), ..SecretPlaces::default() };
        assert!(MasterKey::load_with(dir.path(), &places, None).is_err(), "missing");
        write_private(&path, &"ab".repeat(32)).expect("write");
        let (key, source) = MasterKey::load_with(dir.path(), &places, None).expect("from the file");
        assert_eq!((key.0, source), ([0xab; 32], SecretSource::File(path.clone())));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(MasterKey::load_with(dir.path(), &places, None).err().expect("refused").0.contains("chmod 600"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::write(&path, "abcd").expect("short");
        assert!(MasterKey::load_with(dir.path(), &places, None).err().expect("refused").0.contains("32 bytes"));
        // The environment comes first.
        let (key, source) = MasterKey::load_with(dir.path(), &places, Some("cd".repeat(32))).expect("from the environment");
        assert_eq!((key.0, source), ([0xcd; 32], SecretSource::Environment));
    }
}
