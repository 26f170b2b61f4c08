//! Payment passwords (API.md): six digits, kept as argon2id hashes; five wrong in a row lock
//! payments for the account. Checked before a payment reaches the engine when the platform
//! requires it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix_web::{post, web, HttpResponse};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use engine::ledger::command::{Command, Envelope};
use engine::ledger::types::AccountId;
use engine::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use storage::Store;

use crate::accounts::{owner_of, parse_account_id};
use crate::error::{blocking, ApiError};
use crate::platforms::Platform;
use crate::signed::Signed;

/// Wrong passwords in a row that lock payments.
pub const FAILURES_MAX: u8 = 5;
const PREFIX: &str = "w/";

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    /// PHC string of the argon2id hash (salt and parameters included).
    hash: String,
    failures: u8,
}

/// Every account's password record, loaded at start and written through.
pub struct Passwords {
    store: Arc<dyn Store>,
    /// One lock for all: a check is read, verify, write; argon2 runs outside it.
    records: Mutex<HashMap<u64, Record>>,
}

impl Passwords {
    /// Loads every stored password record.
    pub fn load(store: Arc<dyn Store>) -> Result<Passwords, String> {
        let mut records = HashMap::new();
        for (rest, record) in crate::records::load_all::<Record>(store.as_ref(), PREFIX.as_bytes())? {
            let id: u64 = String::from_utf8_lossy(&rest).parse().map_err(|_| "corrupt password key".to_string())?;
            records.insert(id, record);
        }
        Ok(Passwords { store, records: Mutex::new(records) })
    }

    fn save(&self, account: AccountId, record: &Record) -> Result<(), ApiError> {
        crate::records::put(self.store.as_ref(), &[(crate::records::key(PREFIX, account.0), record)])
    }

    /// Sets (or replaces) the password; the failure count starts again.
    fn set(&self, account: AccountId, password: &str) -> Result<(), ApiError> {
        let mut salt = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt).expect("16 bytes make a salt");
        let hash = Argon2::default().hash_password(password.as_bytes(), &salt).expect("argon2id hashes").to_string();
        let record = Record { hash, failures: 0 };
        self.save(account, &record)?;
        self.records.lock().expect("passwords lock").insert(account.0, record);
        Ok(())
    }

    /// Wrong passwords in a row of `account` (`None`: no password set).
    pub fn failures(&self, account: AccountId) -> Option<u8> {
        self.records.lock().expect("passwords lock").get(&account.0).map(|r| r.failures)
    }

    /// Verifies a payment password for `account`.
    pub fn verify(&self, account: AccountId, password: Option<&str>) -> Result<(), ApiError> {
        let record = self.records.lock().expect("passwords lock").get(&account.0).cloned();
        let Some(record) = record else {
            return Err(ApiError::new(422, "payment_password_not_set", "the account has no payment password; set one first"));
        };
        if record.failures >= FAILURES_MAX {
            return Err(locked());
        }
        let Some(password) = password else {
            return Err(ApiError {
                param: Some("payment_password".into()),
                ..ApiError::new(422, "invalid_payment_password", "this platform requires payment_password")
            });
        };
        let parsed = PasswordHash::new(&record.hash).expect("stored hashes parse");
        let right = Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok();
        let mut records = self.records.lock().expect("passwords lock");
        let current = records.get_mut(&account.0).expect("records are never removed");
        let failures = if right { 0 } else { current.failures.saturating_add(1) };
        if failures != current.failures {
            let updated = Record { hash: current.hash.clone(), failures };
            self.save(account, &updated)?;
            *current = updated;
        }
        match (right, failures >= FAILURES_MAX) {
            (true, _) => Ok(()),
            (false, true) => Err(locked()),
            (false, false) => Err(ApiError {
                param: Some("payment_password".into()),
                ..ApiError::new(422, "invalid_payment_password", &format!("wrong payment password ({} tries left)", FAILURES_MAX - failures))
            }),
        }
    }
}

fn locked() -> ApiError {
    ApiError::new(422, "payment_locked", "five wrong payment passwords in a row: payments of this account are locked")
}

/// A payment password is exactly six digits.
pub fn valid_password(text: &str) -> bool {
    text.len() == 6 && text.bytes().all(|b| b.is_ascii_digit())
}

/// Checks the payer's password for a payment when `platform` requires one.
pub async fn check_for_payment(passwords: &Arc<Passwords>, platform: &Platform, envelope: &Envelope, password: Option<&str>) -> Result<(), ApiError> {
    if !platform.require_payment_password {
        return Ok(());
    }
    let payer = match &envelope.command {
        Command::Payment { payer, .. } | Command::BatchPayment { payer, .. } => *payer,
        _ => return Ok(()),
    };
    let (passwords, password) = (passwords.clone(), password.map(str::to_string));
    // argon2 takes tens of milliseconds of CPU: off the async workers.
    blocking(move || passwords.verify(payer, password.as_deref())).await?
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PasswordBody {
    password: String,
}

#[utoipa::path(post, path = "/v1/accounts/{account_id}/password", tag = "accounts", request_body = crate::passwords::PasswordBody, params(("account_id" = String, Path, description = "Account id (acc_...)")), responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[post("/v1/accounts/{account_id}/password")]
pub async fn set_password(
    signed: Signed,
    path: web::Path<String>,
    engine: web::Data<Arc<Engine>>,
    passwords: web::Data<Arc<Passwords>>,
) -> Result<HttpResponse, ApiError> {
    let body = signed.json::<PasswordBody>()?;
    let account = parse_account_id(&path).ok_or_else(ApiError::not_found)?;
    set_password_of(&engine, &passwords, signed.platform.id, account, body.password).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"account_id": crate::accounts::public_account_id(account), "payment_password": "set"})))
}

/// Sets (or replaces) the payment password of `account` of `platform`: exactly six digits; the
/// count of wrong ones starts again (the API and the pages share it).
pub async fn set_password_of(engine: &Arc<Engine>, passwords: &Arc<Passwords>, platform: u32, account: AccountId, password: String) -> Result<(), ApiError> {
    owner_of(engine, platform, account).await?;
    if !valid_password(&password) {
        return Err(ApiError::invalid("a payment password is exactly 6 digits", "password"));
    }
    let passwords = passwords.clone();
    blocking(move || passwords.set(account, &password)).await?
}

/// Registers the password route.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(set_password);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_wrong_in_a_row_lock_and_a_right_one_resets() {
        let passwords = Passwords::load(Arc::new(storage::MemoryStore::new())).unwrap();
        let account = AccountId(7);
        assert_eq!(passwords.verify(account, Some("123456")).unwrap_err().code, "payment_password_not_set");
        passwords.set(account, "123456").unwrap();
        assert!(passwords.verify(account, Some("123456")).is_ok());
        for _ in 0..4 {
            assert_eq!(passwords.verify(account, Some("000000")).unwrap_err().code, "invalid_payment_password");
        }
        assert!(passwords.verify(account, Some("123456")).is_ok(), "a right one resets the count");
        for _ in 0..4 {
            passwords.verify(account, Some("000000")).unwrap_err();
        }
        assert_eq!(passwords.verify(account, Some("000000")).unwrap_err().code, "payment_locked");
        assert_eq!(passwords.verify(account, Some("123456")).unwrap_err().code, "payment_locked", "locked even for the right one");
        let reloaded = Passwords::load(passwords.store.clone()).unwrap();
        assert_eq!(reloaded.verify(account, Some("123456")).unwrap_err().code, "payment_locked", "the lock survives a restart");
    }

    #[test]
    fn password_shapes() {
        for (text, ok) in [("123456", true), ("12345", false), ("1234567", false), ("12345a", false), ("", false)] {
            assert_eq!(valid_password(text), ok, "{text}");
        }
    }
}
