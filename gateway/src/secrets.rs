//! Secrets the server keeps: files written once with mode 0600, and the master key from which
//! platform secrets are derived (so no platform secret is ever stored).

use std::path::Path;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// Writes `text` to a new file readable only by its owner, and syncs it.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
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

/// The server's master key: `CLEARING_MASTER_KEY` (64 hex digits) when set, else
/// `<data_dir>/master-key`, generated on first start. Losing it invalidates every platform secret.
pub struct MasterKey([u8; 32]);

impl MasterKey {
    /// A key from its bytes (tests).
    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        MasterKey(bytes)
    }

    /// Loads or creates the key.
    pub fn load(data_dir: &Path) -> std::io::Result<MasterKey> {
        let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        let text = match std::env::var("CLEARING_MASTER_KEY") {
            Ok(text) if !text.is_empty() => text,
            _ => {
                let path = data_dir.join("master-key");
                match std::fs::read_to_string(&path) {
                    Ok(text) => text.trim().to_string(),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                        let text = random_hex();
                        write_private(&path, &text)?;
                        text
                    }
                    Err(error) => return Err(error),
                }
            }
        };
        let bytes = hex::decode(text.trim()).map_err(|_| invalid("master key is not hex"))?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| invalid("master key must be 32 bytes (64 hex digits)"))?;
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
}
