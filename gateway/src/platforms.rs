//! Platforms: created by the system operator, stored durably (one record each, no secret in it),
//! loaded at start. A platform's secret is derived from the master key and its secret version.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use storage::Store;

use crate::error::ApiError;
use crate::secrets::MasterKey;

const KEY_PREFIX: &[u8] = b"p/";

/// A platform as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub id: u32,
    pub name: String,
    pub settlement_cycle_days: u8,
    pub auto_confirm_days: u8,
    pub require_payment_password: bool,
    pub secret_version: u32,
    /// Where the platform's events are delivered (`None`: not delivered, only listed).
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Commission tiers, receivers and service fee the settlement run charges (`None`: income
    /// only matures).
    #[serde(default)]
    pub settlement_rule: Option<clearing_actor::commission::RuleConfig>,
}

impl Platform {
    /// The id as the API shows it (`plt_7`).
    pub fn public_id(&self) -> String {
        format!("plt_{}", self.id)
    }

    /// Parses an API platform id.
    pub fn parse_public_id(text: &str) -> Option<u32> {
        crate::ids::parse_prefixed(text, "plt_")
    }
}

/// `POST /admin/platforms` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPlatform {
    pub name: String,
    pub settlement_cycle_days: Option<u8>,
    pub auto_confirm_days: Option<u8>,
    pub require_payment_password: Option<bool>,
}

/// The longest platform name, in characters.
pub const NAME_CHARS_MAX: usize = 128;

fn store_key(id: u32) -> [u8; 6] {
    let mut key = [0u8; 6];
    key[..2].copy_from_slice(KEY_PREFIX);
    key[2..].copy_from_slice(&id.to_be_bytes());
    key
}

/// Every platform, in memory, written through to the store.
pub struct Platforms {
    store: Arc<dyn Store>,
    master_key: MasterKey,
    by_id: RwLock<BTreeMap<u32, Platform>>,
    /// Serializes creation, so ids are handed out once.
    creating: Mutex<()>,
}

impl Platforms {
    /// Loads every stored platform.
    pub fn load(store: Arc<dyn Store>, master_key: MasterKey) -> Result<Platforms, String> {
        let mut by_id = BTreeMap::new();
        let mut failure = None;
        let end = [b'p', b'/' + 1];
        store
            .scan(KEY_PREFIX, &end, &mut |key, value| match serde_json::from_slice::<Platform>(value) {
                Ok(platform) => {
                    by_id.insert(platform.id, platform);
                    true
                }
                Err(error) => {
                    failure = Some(format!("platform record {key:?}: {error}"));
                    false
                }
            })
            .map_err(|e| e.to_string())?;
        match failure {
            Some(failure) => Err(failure),
            None => Ok(Platforms { store, master_key, by_id: RwLock::new(by_id), creating: Mutex::new(()) }),
        }
    }

    /// Validates and durably creates a platform; returns it with its secret (shown only here).
    pub fn create(&self, request: NewPlatform) -> Result<(Platform, String), ApiError> {
        let name = request.name.trim().to_string();
        if name.is_empty() || name.chars().count() > NAME_CHARS_MAX {
            return Err(ApiError::invalid("name must be 1 to 128 characters", "name"));
        }
        let settlement_cycle_days = request.settlement_cycle_days.unwrap_or(1);
        if settlement_cycle_days > 30 {
            return Err(ApiError::invalid("settlement_cycle_days must be 0 to 30", "settlement_cycle_days"));
        }
        let auto_confirm_days = request.auto_confirm_days.unwrap_or(15);
        if !(1..=90).contains(&auto_confirm_days) {
            return Err(ApiError::invalid("auto_confirm_days must be 1 to 90", "auto_confirm_days"));
        }
        let _creating = self.creating.lock().expect("platform creation lock");
        let id = self.by_id.read().expect("platforms lock").keys().next_back().map_or(1, |last| last + 1);
        let platform = Platform {
            id,
            name,
            settlement_cycle_days,
            auto_confirm_days,
            require_payment_password: request.require_payment_password.unwrap_or(false),
            secret_version: 1,
            webhook_url: None,
            settlement_rule: None,
        };
        let record = serde_json::to_vec(&platform).expect("platforms serialize");
        self.store.write(&[(&store_key(id), &record)]).map_err(|e| ApiError::unavailable(e.to_string()))?;
        let secret = self.secret(&platform);
        self.by_id.write().expect("platforms lock").insert(id, platform.clone());
        Ok((platform, secret))
    }

    /// Sets (or with `None` removes) a platform's webhook URL, durably.
    pub fn set_webhook(&self, id: u32, url: Option<String>) -> Result<Platform, ApiError> {
        self.update(id, |platform| platform.webhook_url = url)
    }

    /// Sets (or with `None` removes) a platform's settlement rule, durably.
    pub fn set_settlement_rule(&self, id: u32, rule: Option<clearing_actor::commission::RuleConfig>) -> Result<Platform, ApiError> {
        self.update(id, |platform| platform.settlement_rule = rule)
    }

    /// Changes one platform's record durably, then in memory.
    fn update(&self, id: u32, change: impl FnOnce(&mut Platform)) -> Result<Platform, ApiError> {
        let _creating = self.creating.lock().expect("platform creation lock");
        let mut platform = self.get(id).ok_or_else(ApiError::not_found)?;
        change(&mut platform);
        let record = serde_json::to_vec(&platform).expect("platforms serialize");
        self.store.write(&[(&store_key(id), &record)]).map_err(|e| ApiError::unavailable(e.to_string()))?;
        self.by_id.write().expect("platforms lock").insert(id, platform.clone());
        Ok(platform)
    }

    /// Every platform, by id.
    pub fn all(&self) -> Vec<Platform> {
        self.by_id.read().expect("platforms lock").values().cloned().collect()
    }

    /// The platform with `id`.
    pub fn get(&self, id: u32) -> Option<Platform> {
        self.by_id.read().expect("platforms lock").get(&id).cloned()
    }

    /// A tag binding `message` to `purpose` under the master key (see `MasterKey::tag`).
    pub fn tag(&self, purpose: &str, message: &str) -> String {
        self.master_key.tag(purpose, message)
    }

    /// The platform's current secret.
    pub fn secret(&self, platform: &Platform) -> String {
        self.master_key.platform_secret(platform.id, platform.secret_version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_ids_table() {
        let cases: &[(&str, Option<u32>)] =
            &[("plt_1", Some(1)), ("plt_42", Some(42)), ("plt_", None), ("plt_01", None), ("p_1", None), ("plt_x", None), ("plt_99999999999", None)];
        // ("plt_0" parses; no platform has id 0, so it is unknown like any other.)
        for (text, expected) in cases {
            assert_eq!(Platform::parse_public_id(text), *expected, "{text}");
        }
    }
}
