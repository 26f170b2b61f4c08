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
    /// After a rotation: the secret version that still verifies, and until when (unix seconds,
    /// exclusive). Stored with the record, so a restart keeps the overlap and its end.
    #[serde(default)]
    pub previous_secret: Option<PreviousSecret>,
    /// Suspended by a system operator: its signed requests are refused (403
    /// `platform_suspended`) until it is resumed. Nothing else about it changes.
    #[serde(default)]
    pub suspended: bool,
    /// Agreement codes whose latest version a member must have signed first (`agreements`).
    #[serde(default)]
    pub agreement_requirements: AgreementRequirements,
    /// The approved proposal whose rotation made the current secret version (`None`: made
    /// otherwise), so that carrying it out again shows that secret instead of rotating twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_rotated_by: Option<u64>,
    /// The operator's order number of the request that made it (`NewPlatform::out_order_no`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_as: Option<String>,
    /// When it was made (unix seconds; `None` for platforms made before session 59): a repeat
    /// of its creation shows the secret only within `CREATION_REPLAY_SECONDS` of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// Who made it (`NewPlatform::created_by`; `None` for the operator API and platforms made
    /// before session 63).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// The version of the secret its webhook deliveries are signed with
    /// (`MasterKey::webhook_secret`), apart from the API secret so that a webhook receiver
    /// holds no key that moves money. 0: deliveries are signed with the API secret, as for
    /// every platform before session 67, until its first webhook secret rotation.
    #[serde(default)]
    pub webhook_secret_version: u32,
    /// After a webhook secret rotation: the version that still signs deliveries beside the new
    /// one (in `X-Clearing-Signature-Previous`), and until when; version 0 is the API secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_webhook_secret: Option<PreviousSecret>,
    /// When `previous_webhook_secret` is the API secret (version 0): the API secret version that
    /// signed deliveries at the move, so an API rotation during the overlap does not change the
    /// previous signature to a secret no receiver holds (helper 120#2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_webhook_api_version: Option<u32>,
}

/// How long a repeated creation request (its `out_order_no`) answers with the platform's secret:
/// a day, for a client whose answer was lost. Later it is 409 (before session 59 anyone holding
/// the operator token and a guessed number could read the secret again at any time).
pub const CREATION_REPLAY_SECONDS: i64 = 86_400;

/// Agreement codes a member must have signed (the latest version of each) before an account
/// is opened or a card bound.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgreementRequirements {
    pub open_account: Vec<String>,
    pub bind_card: Vec<String>,
}

/// A platform's previous secret version during the overlap after a rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousSecret {
    pub version: u32,
    pub valid_until: i64,
}

/// How long the previous secret verifies after a rotation unless the configuration or the
/// request says otherwise: a day, time for a platform to deploy the new one.
pub const ROTATION_OVERLAP_SECONDS_DEFAULT: u64 = 86_400;
/// The longest overlap: a week.
pub const ROTATION_OVERLAP_SECONDS_MAX: u64 = 7 * 86_400;

/// What `rotate_secret_from` did.
#[derive(Debug)]
pub enum Rotation {
    /// Rotated now: the platform and its new secret.
    Rotated(Platform, String),
    /// Rotated by the same proposal before: the platform and that secret, shown again.
    Shown(Platform, String),
    /// The secret was rotated otherwise since the proposal: nothing done.
    Changed,
}

/// `POST /admin/platforms/{id}/rotate-secret` body (optional).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// Seconds the current secret still verifies beside the new one (0 = revoke it now;
    /// default `[secrets] rotation_overlap_seconds`; at most a week).
    pub overlap_seconds: Option<u64>,
    /// The secret version to rotate from (the `secret_version` the caller knows). With it, a
    /// request repeated after its answer was lost shows the secret it made again instead of
    /// rotating a second time (which would end the overlap of the secret in use for one nobody
    /// saw); a platform at another version answers 409 `idempotency_conflict`. Without it, every
    /// request rotates.
    #[serde(default)]
    pub from_version: Option<u32>,
}

/// What `Platform::secret_rotated_by` records for a rotation through the operator API with
/// `from_version` (proposals record their id, from 1).
pub const ROTATED_BY_OPERATOR_API: u64 = u64::MAX;

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
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPlatform {
    pub name: String,
    pub settlement_cycle_days: Option<u8>,
    pub auto_confirm_days: Option<u8>,
    pub require_payment_password: Option<bool>,
    /// The operator's own number for this creation (an addition to API.md): repeated with the
    /// same body, it answers the platform it made, with its secret again within a day of the
    /// creation while the platform still has its first secret (`Idempotent-Replay: true`;
    /// later 409); with another body 409
    /// `idempotency_conflict`. Without it every request makes a platform.
    #[serde(default)]
    pub out_order_no: Option<String>,
    /// Who asks (the portal's operator, `operator:{id}`; `None` for the operator API's one
    /// token): a repeat of the creation shows the secret only to whoever made the platform.
    /// Never read from a request body.
    #[serde(skip)]
    #[schema(ignore)]
    pub created_by: Option<String>,
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
    /// The overlap of a rotation when the request names none.
    rotation_overlap_seconds: std::sync::atomic::AtomicU64,
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
            None => Ok(Platforms {
                store,
                master_key,
                by_id: RwLock::new(by_id),
                creating: Mutex::new(()),
                rotation_overlap_seconds: std::sync::atomic::AtomicU64::new(ROTATION_OVERLAP_SECONDS_DEFAULT),
            }),
        }
    }

    /// Validates and durably creates a platform; returns it with its secret (shown only here).
    pub fn create(&self, request: NewPlatform) -> Result<(Platform, String, bool), ApiError> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        self.create_at(request, now)
    }

    /// `create` at `now` (unix seconds).
    fn create_at(&self, request: NewPlatform, now: i64) -> Result<(Platform, String, bool), ApiError> {
        // The checks are of what the client sent (the document's maxLength and pattern), blanks
        // around the name included (a tab is a control character even there); the blanks are
        // then dropped.
        let name = request.name.trim().to_string();
        if !crate::plain_text(&request.name, false) || request.name.chars().count() > NAME_CHARS_MAX {
            return Err(ApiError::invalid("name must be 1 to 128 characters, not all blank, without control characters", "name"));
        }
        let settlement_cycle_days = request.settlement_cycle_days.unwrap_or(1);
        if settlement_cycle_days > 30 {
            return Err(ApiError::invalid("settlement_cycle_days must be 0 to 30", "settlement_cycle_days"));
        }
        let auto_confirm_days = request.auto_confirm_days.unwrap_or(15);
        if !(1..=90).contains(&auto_confirm_days) {
            return Err(ApiError::invalid("auto_confirm_days must be 1 to 90", "auto_confirm_days"));
        }
        let require_payment_password = request.require_payment_password.unwrap_or(false);
        if let Some(number) = &request.out_order_no {
            crate::ids::out_order_no(number, "out_order_no")?;
        }
        let _creating = self.creating.lock().expect("platform creation lock");
        if let Some(number) = &request.out_order_no {
            let made = self.by_id.read().expect("platforms lock").values().find(|p| p.created_as.as_deref() == Some(number.as_str())).cloned();
            if let Some(made) = made {
                let same = (made.name.as_str(), made.settlement_cycle_days, made.auto_confirm_days, made.require_payment_password)
                    == (name.as_str(), settlement_cycle_days, auto_confirm_days, require_payment_password);
                if !same {
                    return Err(ApiError::new(409, "idempotency_conflict", "this out_order_no made a platform with other terms"));
                }
                if made.secret_version != 1 {
                    let message = "this out_order_no made a platform whose secret was rotated since: its first secret is not shown again";
                    return Err(ApiError::new(409, "idempotency_conflict", message));
                }
                if made.created_at.is_none_or(|at| now.saturating_sub(at) > CREATION_REPLAY_SECONDS) {
                    let message = "this out_order_no made a platform more than a day ago: its secret is not shown again (rotate it if it was lost)";
                    return Err(ApiError::new(409, "idempotency_conflict", message));
                }
                // Only to whoever made it: another system operator can read the number in the
                // audit log, and repeating the request showed it the platform's live secret
                // (helper 103, session 63).
                if made.created_by != request.created_by {
                    let message = "this out_order_no made a platform already, for another operator: its secret is shown only to whoever made it";
                    return Err(ApiError::new(409, "idempotency_conflict", message));
                }
                let secret = self.secret(&made);
                return Ok((made, secret, true));
            }
        }
        let id = self.by_id.read().expect("platforms lock").keys().next_back().map_or(1, |last| last + 1);
        let platform = Platform {
            id,
            name,
            settlement_cycle_days,
            auto_confirm_days,
            require_payment_password,
            secret_version: 1,
            webhook_url: None,
            settlement_rule: None,
            previous_secret: None,
            suspended: false,
            agreement_requirements: AgreementRequirements::default(),
            secret_rotated_by: None,
            created_as: request.out_order_no,
            created_at: Some(now),
            created_by: request.created_by,
            webhook_secret_version: 1,
            previous_webhook_secret: None,
            previous_webhook_api_version: None,
        };
        let record = serde_json::to_vec(&platform).expect("platforms serialize");
        self.store.write(&[(&store_key(id), &record)]).map_err(|e| ApiError::unavailable(e.to_string()))?;
        let secret = self.secret(&platform);
        self.by_id.write().expect("platforms lock").insert(id, platform.clone());
        Ok((platform, secret, false))
    }

    /// Sets (or with `None` removes) a platform's webhook URL, durably.
    pub fn set_webhook(&self, id: u32, url: Option<String>) -> Result<Platform, ApiError> {
        self.update(id, |platform| platform.webhook_url = url)
    }

    /// Sets (or with `None` removes) a platform's settlement rule, durably.
    pub fn set_settlement_rule(&self, id: u32, rule: Option<clearing_actor::commission::RuleConfig>) -> Result<Platform, ApiError> {
        self.update(id, |platform| platform.settlement_rule = rule)
    }

    /// Suspends (or with `false` resumes) a platform, durably.
    pub fn set_suspended(&self, id: u32, suspended: bool) -> Result<Platform, ApiError> {
        self.update(id, |platform| platform.suspended = suspended)
    }

    /// Sets a platform's agreement requirements, durably (`agreements::set_requirements` checks
    /// the codes).
    pub fn set_agreement_requirements(&self, id: u32, requirements: AgreementRequirements) -> Result<Platform, ApiError> {
        self.update(id, |platform| platform.agreement_requirements = requirements)
    }

    /// Sets the overlap of rotations whose request names none (config).
    pub fn set_rotation_overlap(&self, seconds: u64) {
        self.rotation_overlap_seconds.store(seconds.min(ROTATION_OVERLAP_SECONDS_MAX), std::sync::atomic::Ordering::Relaxed);
    }

    /// Issues the platform's next secret version, durably, and returns the platform and the new
    /// secret (shown only in the answer). The current secret keeps verifying for the overlap (the
    /// configured one unless `request` names one); a secret older than the current one stops at
    /// once, so at most two ever verify.
    pub fn rotate_secret(&self, id: u32, request: RotateSecret, now: i64) -> Result<(Platform, String), ApiError> {
        let overlap = request.overlap_seconds.unwrap_or_else(|| self.rotation_overlap_seconds.load(std::sync::atomic::Ordering::Relaxed));
        if overlap > ROTATION_OVERLAP_SECONDS_MAX {
            return Err(ApiError::invalid("overlap_seconds must be 0 to 604800 (a week)", "overlap_seconds"));
        }
        let platform = self.try_update(id, |platform| {
            let next =
                platform.secret_version.checked_add(1).ok_or_else(|| ApiError::invalid("this platform's secret was rotated too often", "platform_id"))?;
            // `overlap` is at most a week: no overflow.
            let valid_until = now.saturating_add(overlap as i64);
            platform.previous_secret = (overlap > 0).then_some(PreviousSecret { version: platform.secret_version, valid_until });
            platform.secret_version = next;
            platform.secret_rotated_by = None;
            Ok(())
        })?;
        let secret = self.secret(&platform);
        Ok((platform, secret))
    }

    /// `rotate_secret` from secret version `from` exactly, once, for approved proposal
    /// `proposal` (carried out again after a stop). At `from` it rotates and records the
    /// proposal; at `from + 1` made by this same proposal it rotated already and answers that
    /// version's secret without rotating again (a second rotation would end the overlap of the
    /// secret the platform uses, for one nobody saw); otherwise the secret was rotated by
    /// someone else since it was proposed, and nothing changes.
    pub fn rotate_secret_from(&self, id: u32, request: RotateSecret, from: u32, proposal: u64, now: i64) -> Result<Rotation, ApiError> {
        let current = self.get(id).ok_or_else(ApiError::not_found)?;
        if from.checked_add(1) == Some(current.secret_version) && current.secret_rotated_by == Some(proposal) {
            let secret = self.secret(&current);
            return Ok(Rotation::Shown(current, secret));
        }
        if current.secret_version != from {
            return Ok(Rotation::Changed);
        }
        let overlap = request.overlap_seconds.unwrap_or_else(|| self.rotation_overlap_seconds.load(std::sync::atomic::Ordering::Relaxed));
        if overlap > ROTATION_OVERLAP_SECONDS_MAX {
            return Err(ApiError::invalid("overlap_seconds must be 0 to 604800 (a week)", "overlap_seconds"));
        }
        let mut changed = false;
        let platform = self.try_update(id, |platform| {
            if platform.secret_version != from {
                changed = true;
                return Ok(());
            }
            platform.previous_secret = (overlap > 0).then_some(PreviousSecret { version: from, valid_until: now.saturating_add(overlap as i64) });
            platform.secret_version = from.checked_add(1).ok_or_else(|| ApiError::invalid("this platform's secret was rotated too often", "platform_id"))?;
            platform.secret_rotated_by = Some(proposal);
            Ok(())
        })?;
        if changed {
            return Ok(Rotation::Changed);
        }
        let secret = self.secret(&platform);
        Ok(Rotation::Rotated(platform, secret))
    }

    /// The secrets a webhook of `platform` is signed with at `now` (unix seconds): its current
    /// webhook secret, and the one before while the overlap after its rotation lasts (the API
    /// secret, if that signed them before: its version at the move). A platform whose
    /// deliveries the API secret still signs (version 0): the current API secret, and the
    /// previous one while the overlap after a rotation lasts, so that a receiver
    /// still holding the previous secret keeps taking deliveries until it has deployed the new
    /// one (before session 63 deliveries were signed with the new secret alone from the
    /// rotation on; helper 105).
    pub fn webhook_secrets(&self, platform: &Platform, now: i64) -> Vec<String> {
        if let Some(current) = self.webhook_signing_secret(platform) {
            let mut secrets = vec![current];
            if let Some(previous) = platform.previous_webhook_secret.filter(|previous| now < previous.valid_until) {
                secrets.push(match previous.version {
                    0 => self.master_key.platform_secret(platform.id, platform.previous_webhook_api_version.unwrap_or(platform.secret_version)),
                    version => self.master_key.webhook_secret(platform.id, version),
                });
            }
            return secrets;
        }
        let mut secrets = vec![self.secret(platform)];
        if let Some(previous) = platform.previous_secret.filter(|previous| now < previous.valid_until) {
            secrets.push(self.master_key.platform_secret(platform.id, previous.version));
        }
        secrets
    }

    /// The secret deliveries are signed with now (`None`: the platform's API secret, for a
    /// platform made before webhook secrets that has not rotated to one).
    pub fn webhook_signing_secret(&self, platform: &Platform) -> Option<String> {
        (platform.webhook_secret_version > 0).then(|| self.master_key.webhook_secret(platform.id, platform.webhook_secret_version))
    }

    /// Issues the platform's next webhook secret, durably; the one it replaces keeps signing
    /// deliveries beside it (`X-Clearing-Signature-Previous`) for the overlap (`overlap_seconds`,
    /// default the configured rotation overlap, at most a week; 0: it stops at once). For a
    /// platform whose deliveries the API secret signs, that is the API secret, which then stops
    /// signing them when the overlap ends. With `from_version` it rotates from that version
    /// only: at `from_version + 1` it answers without rotating (a repeat whose answer was lost:
    /// a second rotation would end the overlap of the secret the receiver uses), at another
    /// version 409 `idempotency_conflict`. Returns the platform and whether it rotated.
    pub fn rotate_webhook_secret(&self, id: u32, overlap_seconds: Option<u64>, from_version: Option<u32>, now: i64) -> Result<(Platform, bool), ApiError> {
        let overlap = overlap_seconds.unwrap_or_else(|| self.rotation_overlap_seconds.load(std::sync::atomic::Ordering::Relaxed));
        if overlap > ROTATION_OVERLAP_SECONDS_MAX {
            return Err(ApiError::invalid("overlap_seconds must be 0 to 604800 (a week)", "overlap_seconds"));
        }
        let mut rotated = true;
        let platform = self.try_update(id, |platform| {
            let current = platform.webhook_secret_version;
            match from_version {
                Some(from) if from == current => {}
                Some(from) if from.checked_add(1) == Some(current) => {
                    rotated = false;
                    return Ok(());
                }
                Some(_) => {
                    let message = format!("the webhook secret is at version {current}: read it with GET /v1/webhook");
                    return Err(ApiError::new(409, "idempotency_conflict", &message));
                }
                None => {}
            }
            let next = current.checked_add(1).ok_or_else(|| ApiError::invalid("this platform's webhook secret was rotated too often", "overlap_seconds"))?;
            // `overlap` is at most a week: no overflow.
            platform.previous_webhook_secret = (overlap > 0).then_some(PreviousSecret { version: current, valid_until: now.saturating_add(overlap as i64) });
            platform.previous_webhook_api_version = (overlap > 0 && current == 0).then_some(platform.secret_version);
            platform.webhook_secret_version = next;
            Ok(())
        })?;
        Ok((platform, rotated))
    }

    /// Whether `signature_hex` signs `message` with the platform's current secret, or with its
    /// previous one while the overlap after a rotation lasts (`now` in unix seconds). The one
    /// place a platform's signature is compared.
    pub fn verify_signature(&self, platform: &Platform, message: &[u8], signature_hex: &str, now: i64) -> bool {
        if crate::secrets::hmac_verify_hex(self.secret(platform).as_bytes(), message, signature_hex) {
            return true;
        }
        match platform.previous_secret {
            Some(previous) if now < previous.valid_until => {
                let secret = self.master_key.platform_secret(platform.id, previous.version);
                crate::secrets::hmac_verify_hex(secret.as_bytes(), message, signature_hex)
            }
            _ => false,
        }
    }

    /// Changes one platform's record durably, then in memory.
    fn update(&self, id: u32, change: impl FnOnce(&mut Platform)) -> Result<Platform, ApiError> {
        self.try_update(id, |platform| {
            change(platform);
            Ok(())
        })
    }

    /// Changes one platform's record durably, then in memory, unless `change` refuses.
    fn try_update(&self, id: u32, change: impl FnOnce(&mut Platform) -> Result<(), ApiError>) -> Result<Platform, ApiError> {
        let _creating = self.creating.lock().expect("platform creation lock");
        let mut platform = self.get(id).ok_or_else(ApiError::not_found)?;
        change(&mut platform)?;
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

    /// Whether platform `id`'s webhook URL is `url` now (a look, no copy).
    pub fn webhook_is(&self, id: u32, url: &str) -> bool {
        self.by_id.read().expect("platforms lock").get(&id).is_some_and(|platform| platform.webhook_url.as_deref() == Some(url))
    }

    /// A tag binding `message` to `purpose` under the master key (see `MasterKey::tag`).
    pub fn tag(&self, purpose: &str, message: &str) -> String {
        self.master_key.tag(purpose, message)
    }

    /// A 256-bit key for `purpose`, derived from the master key.
    pub fn derived_key(&self, purpose: &str) -> [u8; 32] {
        self.master_key.derived_key(purpose)
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

    #[test]
    fn a_rotated_secret_verifies_beside_the_old_one_until_the_overlap_ends() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let platforms = Platforms::load(store.clone(), MasterKey::from_bytes([3; 32])).expect("load");
        let (platform, first, _) = platforms.create(NewPlatform { name: "P".into(), ..NewPlatform::default() }).expect("create");
        let sign = |secret: &str| crate::secrets::hmac_hex(secret.as_bytes(), b"message");
        let now = 1_700_000_000;
        let (rotated, second) = platforms.rotate_secret(platform.id, RotateSecret { overlap_seconds: Some(60), from_version: None }, now).expect("rotate");
        assert_ne!(first, second);
        assert_eq!(rotated.previous_secret, Some(PreviousSecret { version: 1, valid_until: now + 60 }));
        // (check, expected): both verify during the overlap, only the new one after it.
        let cases = [(&second, now, true), (&first, now, true), (&first, now + 59, true), (&first, now + 60, false), (&second, now + 100_000, true)];
        for (secret, at, expected) in cases {
            assert_eq!(platforms.verify_signature(&rotated, b"message", &sign(secret), at), expected, "{at}");
        }
        // A platform made before webhook secrets (version 0) has its webhooks signed with the
        // API secret: with both while the overlap lasts (the receiver may still hold the
        // first), with the new one alone after it; before a rotation with the one there is.
        let legacy = |platform: &Platform| Platform { webhook_secret_version: 0, ..platform.clone() };
        assert_eq!(platforms.webhook_secrets(&legacy(&platform), now), vec![first.clone()]);
        assert_eq!(platforms.webhook_secrets(&legacy(&rotated), now + 59), vec![second.clone(), first.clone()]);
        assert_eq!(platforms.webhook_secrets(&legacy(&rotated), now + 60), vec![second.clone()]);
        // A platform with a webhook secret: the API secret's rotation does not touch it.
        let hook = platforms.webhook_signing_secret(&platform).expect("a new platform has a webhook secret");
        assert_eq!(platforms.webhook_secrets(&rotated, now + 59), vec![hook.clone()]);
        // Durable: a reload (a restart) keeps the version and the overlap's end.
        let reloaded = Platforms::load(store, MasterKey::from_bytes([3; 32])).expect("reload");
        let again = reloaded.get(platform.id).expect("platform");
        assert!(
            reloaded.verify_signature(&again, b"message", &sign(&first), now + 1) && reloaded.verify_signature(&again, b"message", &sign(&second), now + 1)
        );
        // Rotating again ends the oldest at once; overlap 0 revokes the current one too.
        let (third_platform, third) =
            reloaded.rotate_secret(platform.id, RotateSecret { overlap_seconds: Some(0), from_version: None }, now + 2).expect("rotate");
        for (secret, expected) in [(&first, false), (&second, false), (&third, true)] {
            assert_eq!(reloaded.verify_signature(&third_platform, b"message", &sign(secret), now + 3), expected);
        }
        let too_long = RotateSecret { overlap_seconds: Some(ROTATION_OVERLAP_SECONDS_MAX + 1), from_version: None };
        assert_eq!(reloaded.rotate_secret(platform.id, too_long, now).unwrap_err().param.as_deref(), Some("overlap_seconds"));
        assert_eq!(reloaded.rotate_secret(99, RotateSecret::default(), now).unwrap_err().code, "not_found");
    }

    /// A repeated creation shows the secret for a day after the platform was made, then is 409
    /// (before session 59 at any age); a platform made before creation times were kept never
    /// shows it again.
    #[test]
    fn a_repeated_creation_shows_the_secret_only_within_a_day() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let platforms = Platforms::load(store, MasterKey::from_bytes([3; 32])).expect("load");
        let request = || NewPlatform { name: "P".into(), out_order_no: Some("plt-create-1".into()), ..NewPlatform::default() };
        let now = 1_700_000_000;
        let (made, secret, replayed) = platforms.create_at(request(), now).expect("create");
        assert!(!replayed);
        let (again, shown, replayed) = platforms.create_at(request(), now + CREATION_REPLAY_SECONDS).expect("within the day");
        assert_eq!((again.id, shown.as_str(), replayed), (made.id, secret.as_str(), true));
        let late = platforms.create_at(request(), now + CREATION_REPLAY_SECONDS + 1).unwrap_err();
        assert_eq!((late.status, late.code), (409, "idempotency_conflict"));
        // As a record of before session 59: no creation time.
        platforms.by_id.write().unwrap().get_mut(&made.id).unwrap().created_at = None;
        assert_eq!(platforms.create_at(request(), now).unwrap_err().code, "idempotency_conflict");
        assert_eq!(platforms.by_id.read().unwrap().len(), 1, "one platform made");
    }

    /// A rotation from a given version happens once: carried out again it answers the version it
    /// made (the same secret, the overlap of the one before kept), and after another rotation
    /// it refuses.
    #[test]
    fn a_rotation_from_a_version_rotates_once() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let platforms = Platforms::load(store, MasterKey::from_bytes([3; 32])).expect("load");
        let (platform, first, _) = platforms.create(NewPlatform { name: "P".into(), ..NewPlatform::default() }).expect("create");
        let now = 1_700_000_000;
        let overlap = || RotateSecret { overlap_seconds: Some(60), from_version: None };
        let Ok(Rotation::Rotated(rotated, second)) = platforms.rotate_secret_from(platform.id, overlap(), 1, 7, now) else { panic!("rotates") };
        assert_eq!(rotated.secret_version, 2);
        // Another proposal from the same version: rotated by someone else since, refused (it
        // is shown no secret it did not make).
        assert!(matches!(platforms.rotate_secret_from(platform.id, overlap(), 1, 8, now + 10), Ok(Rotation::Changed)));
        let Ok(Rotation::Shown(again, same)) = platforms.rotate_secret_from(platform.id, overlap(), 1, 7, now + 30) else { panic!("shown again") };
        assert_eq!((again.secret_version, &same), (2, &second));
        assert_eq!(again.previous_secret, Some(PreviousSecret { version: 1, valid_until: now + 60 }), "the overlap of the secret in use is kept");
        let sign = |secret: &str| crate::secrets::hmac_hex(secret.as_bytes(), b"message");
        assert!(platforms.verify_signature(&again, b"message", &sign(&first), now + 30));
        platforms.rotate_secret(platform.id, RotateSecret::default(), now + 40).expect("someone else rotates");
        assert!(matches!(platforms.rotate_secret_from(platform.id, overlap(), 1, 7, now + 50), Ok(Rotation::Changed)));
        assert!(matches!(platforms.rotate_secret_from(platform.id, overlap(), 2, 7, now + 50), Ok(Rotation::Changed)), "made by the admin API");
        assert_eq!(platforms.get(platform.id).unwrap().secret_version, 3);
        assert_eq!(platforms.rotate_secret_from(99, overlap(), 1, 7, now).unwrap_err().code, "not_found");
    }

    /// Webhooks are signed with a secret of their own (never the API secret for a new
    /// platform); its rotation keeps the one before signing for the overlap; a platform whose
    /// webhooks the API secret signed moves off it with its first rotation (the API secret signs
    /// beside the new one for the overlap, then never again); a repeat from a version rotates
    /// once; all of it outlives a reload.
    #[test]
    fn webhook_secrets_are_their_own_and_rotate_with_an_overlap() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let platforms = Platforms::load(store.clone(), MasterKey::from_bytes([3; 32])).expect("load");
        let (platform, api, _) = platforms.create(NewPlatform { name: "P".into(), ..NewPlatform::default() }).expect("create");
        let now = 1_700_000_000;
        assert_eq!(platform.webhook_secret_version, 1);
        let first = platforms.webhook_signing_secret(&platform).expect("a webhook secret");
        assert!(first.starts_with("whsec_") && !first.contains(&api));
        assert_eq!(platforms.webhook_secrets(&platform, now), vec![first.clone()]);
        let (rotated, did) = platforms.rotate_webhook_secret(platform.id, Some(60), Some(1), now).expect("rotate");
        assert!(did);
        let second = platforms.webhook_signing_secret(&rotated).expect("a webhook secret");
        assert_ne!(first, second);
        assert_eq!(platforms.webhook_secrets(&rotated, now + 59), vec![second.clone(), first.clone()]);
        assert_eq!(platforms.webhook_secrets(&rotated, now + 60), vec![second.clone()]);
        // The same request again (its answer lost): no second rotation, the overlap kept.
        let (again, did) = platforms.rotate_webhook_secret(platform.id, Some(60), Some(1), now + 5).expect("repeat");
        assert!(!did);
        assert_eq!((again.webhook_secret_version, again.previous_webhook_secret), (2, rotated.previous_webhook_secret));
        let stale = platforms.rotate_webhook_secret(platform.id, None, Some(0), now + 6).unwrap_err();
        assert_eq!((stale.status, stale.code), (409, "idempotency_conflict"));
        let too_long = platforms.rotate_webhook_secret(platform.id, Some(ROTATION_OVERLAP_SECONDS_MAX + 1), None, now).unwrap_err();
        assert_eq!(too_long.param.as_deref(), Some("overlap_seconds"));
        assert_eq!(platforms.rotate_webhook_secret(99, None, None, now).unwrap_err().code, "not_found");
        // A platform as stored before webhook secrets: the API secret signs until it rotates.
        platforms.update(platform.id, |p| (p.webhook_secret_version, p.previous_webhook_secret) = (0, None)).expect("as before");
        let old = platforms.get(platform.id).expect("platform");
        assert_eq!(platforms.webhook_signing_secret(&old), None);
        assert_eq!(platforms.webhook_secrets(&old, now), vec![api.clone()]);
        let (moved, _) = platforms.rotate_webhook_secret(platform.id, Some(3_600), None, now).expect("rotate off the API secret");
        let own = platforms.webhook_signing_secret(&moved).expect("a webhook secret");
        assert_eq!(platforms.webhook_secrets(&moved, now + 3_599), vec![own.clone(), api.clone()]);
        assert_eq!(platforms.webhook_secrets(&moved, now + 3_600), vec![own.clone()]);
        // The API secret rotated during the overlap: the previous signature stays the one the
        // receivers hold (the API secret of the move), not the new API secret.
        let (after_api, new_api) = platforms.rotate_secret(platform.id, RotateSecret::default(), now + 10).expect("API rotation");
        assert_ne!(new_api, api);
        assert_eq!(platforms.webhook_secrets(&after_api, now + 11), vec![own.clone(), api.clone()]);
        let reloaded = Platforms::load(store, MasterKey::from_bytes([3; 32])).expect("reload");
        let stored = reloaded.get(platform.id).expect("platform");
        assert_eq!(reloaded.webhook_secrets(&stored, now + 11), vec![own, api]);
    }
}
