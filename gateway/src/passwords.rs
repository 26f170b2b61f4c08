//! Payment passwords (API.md): six digits, kept as argon2id hashes; five wrong in a row lock
//! payments for the account. Checked before a payment reaches the engine when the platform
//! requires it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix_web::{post, web, HttpResponse};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use engine::ledger::command::{Command, Envelope};
use engine::ledger::types::{AccountId, AccountKind};
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

/// Password records, in the store alone (one read per check: a bank's accounts outgrow memory),
/// with the checks in flight.
pub struct Passwords {
    store: Arc<dyn Store>,
    /// Accounts with checks in flight, and how many: each check holds one of the account's
    /// remaining tries from before argon2 runs until its outcome is written, so concurrent
    /// guesses cannot get past the lockout (a burst of a thousand all read the count before
    /// any was written). Its lock also orders every read-modify-write of a record; argon2 runs
    /// outside it. An account leaves the map when its last check ends.
    ///
    /// In `IN_FLIGHT_STRIPES` stripes by account number: a check holds its stripe's lock across
    /// a store read and a synced write, and a flood of guesses against some accounts must not
    /// queue every other account's checks behind it.
    in_flight: Box<[Mutex<HashMap<u64, u32>>]>,
}

/// Stripes of the checks in flight (see `Passwords::in_flight`).
const IN_FLIGHT_STRIPES: u64 = 64;

impl Passwords {
    /// The passwords of `store` (nothing is read until a check).
    pub fn new(store: Arc<dyn Store>) -> Passwords {
        Passwords { store, in_flight: (0..IN_FLIGHT_STRIPES).map(|_| Mutex::new(HashMap::new())).collect() }
    }

    /// The lock of `account`'s checks (its stripe).
    fn stripe(&self, account: AccountId) -> &Mutex<HashMap<u64, u32>> {
        &self.in_flight[(account.0 % IN_FLIGHT_STRIPES) as usize]
    }

    fn read(&self, account: AccountId) -> Result<Option<Record>, ApiError> {
        let key = crate::records::key(PREFIX, account.0);
        match self.store.get(&key).map_err(|e| ApiError::unavailable(e.to_string()))? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes).map(Some).map_err(|e| ApiError::unavailable(format!("the password record of {} does not read: {e}", account.0)))
            }
        }
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
        let _order = self.stripe(account).lock().expect("passwords lock");
        self.save(account, &Record { hash, failures: 0 })
    }

    /// Wrong passwords in a row of `account` (`None`: no password set).
    pub fn failures(&self, account: AccountId) -> Result<Option<u8>, ApiError> {
        Ok(self.read(account)?.map(|r| r.failures))
    }

    /// Verifies a payment password for `account`.
    pub fn verify(&self, account: AccountId, password: Option<&str>) -> Result<(), ApiError> {
        let (record, mut held) = {
            let mut in_flight = self.stripe(account).lock().expect("passwords lock");
            let Some(record) = self.read(account)? else {
                return Err(ApiError::new(422, "payment_password_not_set", "the account has no payment password; set one first"));
            };
            if record.failures >= FAILURES_MAX {
                return Err(locked());
            }
            if password.is_none() {
                return Err(ApiError {
                    param: Some("payment_password".into()),
                    ..ApiError::new(422, "invalid_payment_password", "this platform requires payment_password")
                });
            }
            let Some(held) = HeldTry::take(self.stripe(account), &mut in_flight, account.0, u32::from(record.failures), u32::from(FAILURES_MAX)) else {
                return Err(ApiError::rate_limited("this account's remaining payment password tries are all being checked; try again in a second", 1));
            };
            (record, held)
        };
        let right = PasswordHash::new(&record.hash)
            .map(|parsed| Argon2::default().verify_password(password.unwrap_or_default().as_bytes(), &parsed).is_ok())
            .map_err(|e| ApiError::unavailable(format!("the password hash of {} does not parse: {e}", account.0)));
        // The try is given back and the outcome counted under one hold of the lock: a check that
        // starts in between would see neither.
        let mut in_flight = self.stripe(account).lock().expect("passwords lock");
        held.give_back(&mut in_flight);
        let right = right?;
        // As the record is now: another check may have counted since, or the password changed
        // (then this check was of the old one: refused, and counted against nothing).
        let Some(current) = self.read(account)?.filter(|current| current.hash == record.hash) else {
            return Err(ApiError {
                param: Some("payment_password".into()),
                ..ApiError::new(422, "invalid_payment_password", "the payment password changed while it was checked; try again")
            });
        };
        let failures = if right { 0 } else { current.failures.saturating_add(1) };
        if failures != current.failures {
            self.save(account, &Record { hash: record.hash.clone(), failures })?;
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

/// One of a subject's remaining tries (an account's payment password, an operator's sign-in),
/// held by a check while argon2 runs: given back under the same hold of the lock that counts the
/// check's outcome (`give_back`), or, on any other way out of the check (a panic included), when
/// it is dropped. The map counts the tries held per subject; a subject leaves it at zero.
pub(crate) struct HeldTry<'a> {
    lock: &'a Mutex<HashMap<u64, u32>>,
    subject: u64,
    held: bool,
}

impl<'a> HeldTry<'a> {
    /// Takes one of `subject`'s tries (`failures` of `max` spent) unless the checks in flight
    /// hold all that are left. `in_flight` is `lock`'s content, locked by the caller.
    pub(crate) fn take(lock: &'a Mutex<HashMap<u64, u32>>, in_flight: &mut HashMap<u64, u32>, subject: u64, failures: u32, max: u32) -> Option<HeldTry<'a>> {
        let checking = in_flight.entry(subject).or_insert(0);
        if failures.saturating_add(*checking) >= max {
            if *checking == 0 {
                in_flight.remove(&subject);
            }
            return None;
        }
        *checking += 1;
        Some(HeldTry { lock, subject, held: true })
    }

    /// Gives the try back (`in_flight`: the lock's content, locked by the caller).
    pub(crate) fn give_back(&mut self, in_flight: &mut HashMap<u64, u32>) {
        if std::mem::take(&mut self.held) {
            if let Some(checking) = in_flight.get_mut(&self.subject) {
                *checking = checking.saturating_sub(1);
                if *checking == 0 {
                    in_flight.remove(&self.subject);
                }
            }
        }
    }
}

impl Drop for HeldTry<'_> {
    fn drop(&mut self) {
        if self.held {
            let lock = self.lock;
            let mut in_flight = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            self.give_back(&mut in_flight);
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

/// Who a password hash is computed for, in `hashing`: a platform's payers (its id) or the
/// portals' operators (`PORTAL_HASHING`, no platform id reaches it).
pub const PORTAL_HASHING: u64 = 1 << 32;

/// The budget of password hashing (argon2id: about 19 MiB and tens of milliseconds of a core
/// each): at most half the cores at once (at least one) in all, and one at a time for each
/// platform and for the portals' sign-ins together. Waiting is done on the async side, so a
/// flood of password checks (a bulk request of 8,189 payments, sign-in tries from anyone)
/// neither fills the blocking pool the store reads need nor takes every core from the shards,
/// and one platform's checks wait behind each other, not in front of another platform's.
struct HashingBudget {
    all: Arc<tokio::sync::Semaphore>,
    tenants: Mutex<HashMap<u64, Arc<Tenant>>>,
}

/// One tenant's lane: one hash at a time, at most `HASHING_WAITING_MAX` waiting.
struct Tenant {
    lane: Arc<tokio::sync::Semaphore>,
    waiting: std::sync::atomic::AtomicUsize,
}

/// Password checks of one tenant that wait for its lane, at most: more are answered 503
/// `overloaded` at once (a full queue answers, it does not grow).
pub const HASHING_WAITING_MAX: usize = 64;

static HASHING: std::sync::OnceLock<HashingBudget> = std::sync::OnceLock::new();

/// How many hashes run at once in all (`HashingBudget`).
pub fn hashing_slots() -> usize {
    (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1)
}

/// Runs `work` (which computes password hashes) on a blocking thread within the hashing
/// budget of `tenant` (a platform id, or `PORTAL_HASHING`).
pub async fn hashing<T: Send + 'static>(tenant: u64, work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    HASHING.get_or_init(|| HashingBudget::new(hashing_slots())).run(tenant, work).await
}

impl HashingBudget {
    fn new(slots: usize) -> HashingBudget {
        HashingBudget { all: Arc::new(tokio::sync::Semaphore::new(slots)), tenants: Mutex::new(HashMap::new()) }
    }

    async fn run<T: Send + 'static>(&self, tenant: u64, work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
        use std::sync::atomic::Ordering;
        let own = self
            .tenants
            .lock()
            .expect("hashing lock")
            .entry(tenant)
            .or_insert_with(|| Arc::new(Tenant { lane: Arc::new(tokio::sync::Semaphore::new(1)), waiting: Default::default() }))
            .clone();
        // Counted while waiting: given back however the wait ends (a request dropped too).
        struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        if own.waiting.fetch_add(1, Ordering::SeqCst) >= HASHING_WAITING_MAX {
            own.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::overloaded("too many password checks wait; try again shortly"));
        }
        let waiting = Waiting(&own.waiting);
        let closed = |_| ApiError::unavailable("the server is stopping".into());
        let lane = own.lane.clone().acquire_owned().await.map_err(closed)?;
        let slot = self.all.clone().acquire_owned().await.map_err(closed)?;
        drop(waiting);
        // The permits go with the work: a request dropped while its hash runs (the blocking
        // thread goes on) keeps them until the hash ends.
        blocking(move || {
            let _permits = (lane, slot);
            work()
        })
        .await
    }
}

/// Checks the payer's password for a payment when `platform` requires one. A payer that is not
/// one of `platform`'s customer accounts is not checked (nor its failures counted): the engine
/// refuses the payment as it refuses any other platform's account, so one platform can neither
/// lock another's account nor learn whether it has a password.
pub async fn check_for_payment(
    engine: &Arc<Engine>,
    passwords: &Arc<Passwords>,
    platform: &Platform,
    envelope: &Envelope,
    password: Option<&str>,
) -> Result<(), ApiError> {
    if !platform.require_payment_password {
        return Ok(());
    }
    let payer = match &envelope.command {
        Command::Payment { payer, .. } | Command::BatchPayment { payer, .. } => *payer,
        _ => return Ok(()),
    };
    // A number the engine holds a record under is answered by the engine, whatever the password
    // says now: a repeat of the accepted payment with its original response (API.md), of a
    // refused one with its kept refusal (helper 122#2: it was answered
    // `invalid_payment_password` after a password change, and a wrong try counted), another
    // body with 409. The payer may have been locked or changed the password since, and a
    // platform told 422 for a payment that moved money would charge again (helper 110). Nothing
    // moves either way, so nothing is checked and no try is counted.
    if crate::recharges::number_recorded(engine, envelope).await? {
        return Ok(());
    }
    let (engine, passwords, password, platform) = (engine.clone(), passwords.clone(), password.map(str::to_string), platform.id);
    // A shard read, then argon2 (tens of milliseconds of CPU): off the async workers, within
    // the platform's hashing budget.
    hashing(u64::from(platform), move || {
        let shard = payer.shard(engine.config().shard_count);
        let own = engine.read_shard(shard, move |state| state.account(payer).is_some_and(|a| a.kind == AccountKind::Customer && a.platform == platform))?;
        if !own {
            return Ok(());
        }
        passwords.verify(payer, password.as_deref())
    })
    .await?
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
    hashing(u64::from(platform), move || passwords.set(account, &password)).await?
}

/// Registers the password route.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(set_password);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request dropped while its hash runs keeps its permits until the hash ends (the blocking
    /// thread goes on), and a tenant with `HASHING_WAITING_MAX` checks waiting is answered 503.
    #[actix_web::test]
    async fn hashing_permits_outlive_a_dropped_request_and_the_queue_is_bounded() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let budget = Arc::new(HashingBudget::new(1));
        let done = Arc::new(AtomicBool::new(false));
        let (running, finishing) = (budget.clone(), done.clone());
        let first = actix_web::rt::spawn(async move {
            running
                .run(1, move || {
                    std::thread::sleep(std::time::Duration::from_millis(300));
                    finishing.store(true, Ordering::SeqCst);
                })
                .await
        });
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
        first.abort();
        let seen = done.clone();
        let second = budget.run(2, move || seen.load(Ordering::SeqCst)).await.unwrap();
        assert!(second, "the next hash started only after the dropped one ended");
        // Tenant 3 holds its lane; 64 more wait; the next is refused at once.
        let (hold, release) = std::sync::mpsc::channel::<()>();
        let holding = budget.clone();
        let held = actix_web::rt::spawn(async move { holding.run(3, move || release.recv().is_ok()).await });
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
        let waiters: Vec<_> = (0..HASHING_WAITING_MAX)
            .map(|_| {
                let waiting = budget.clone();
                actix_web::rt::spawn(async move { waiting.run(3, || ()).await })
            })
            .collect();
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(budget.run(3, || ()).await.unwrap_err().code, "overloaded");
        hold.send(()).unwrap();
        held.await.unwrap().unwrap();
        for waiter in waiters {
            waiter.await.unwrap().unwrap();
        }
        assert!(budget.run(3, || ()).await.is_ok(), "the queue emptied");
    }

    /// Hashing runs one at a time for each tenant and at most the budget's slots at once in all.
    #[actix_web::test]
    async fn hashing_is_bounded_in_all_and_one_at_a_time_per_tenant() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        for (slots, tenants, most_in_all) in [(4, 2, 2), (4, 6, 4), (1, 3, 1)] {
            let budget = Arc::new(HashingBudget::new(slots));
            let running: Arc<Vec<AtomicUsize>> = Arc::new((0..=tenants).map(|_| AtomicUsize::new(0)).collect());
            let most: Arc<Vec<AtomicUsize>> = Arc::new((0..=tenants).map(|_| AtomicUsize::new(0)).collect());
            let tasks: Vec<_> = (0..4 * tenants)
                .map(|n| {
                    let (budget, running, most, tenant) = (budget.clone(), running.clone(), most.clone(), 1 + n % tenants);
                    actix_web::rt::spawn(async move {
                        budget
                            .run(tenant as u64, move || {
                                for slot in [0, tenant] {
                                    let now = running[slot].fetch_add(1, Ordering::SeqCst) + 1;
                                    most[slot].fetch_max(now, Ordering::SeqCst);
                                }
                                std::thread::sleep(std::time::Duration::from_millis(20));
                                for slot in [0, tenant] {
                                    running[slot].fetch_sub(1, Ordering::SeqCst);
                                }
                            })
                            .await
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap().unwrap();
            }
            for tenant in 1..=tenants {
                assert_eq!(most[tenant].load(Ordering::SeqCst), 1, "one at a time for tenant {tenant} ({slots} slots)");
            }
            let in_all = most[0].load(Ordering::SeqCst);
            assert!((1..=most_in_all).contains(&in_all), "{in_all} at once with {slots} slots and {tenants} tenants");
        }
        assert!(hashing_slots() >= 1);
    }

    #[test]
    fn five_wrong_in_a_row_lock_and_a_right_one_resets() {
        let passwords = Passwords::new(Arc::new(storage::MemoryStore::new()));
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
        let reloaded = Passwords::new(passwords.store.clone());
        assert_eq!(reloaded.verify(account, Some("123456")).unwrap_err().code, "payment_locked", "the lock survives a restart");
    }

    /// Regression: every check read the count of wrong tries before any was written, so a
    /// burst of concurrent guesses all ran (and a right one among them reset the count): the
    /// lockout held only for guesses sent one after another.
    #[test]
    fn concurrent_guesses_get_no_more_tries_than_are_left() {
        let passwords = Arc::new(Passwords::new(Arc::new(storage::MemoryStore::new())));
        let account = AccountId(9);
        passwords.set(account, "123456").unwrap();
        passwords.verify(account, Some("000000")).unwrap_err();
        let start = Arc::new(std::sync::Barrier::new(24));
        let guesses: Vec<_> = (0..24)
            .map(|n| {
                let (passwords, start) = (passwords.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    passwords.verify(account, Some(&format!("{:06}", 100 + n))).unwrap_err().code
                })
            })
            .collect();
        let codes: Vec<&str> = guesses.into_iter().map(|g| g.join().unwrap()).collect();
        let checked = codes.iter().filter(|c| **c == "invalid_payment_password" || **c == "payment_locked").count();
        assert!(codes.iter().all(|c| ["invalid_payment_password", "payment_locked", "rate_limited"].contains(c)), "{codes:?}");
        assert!(checked <= 4 && codes.contains(&"rate_limited"), "four tries were left: {codes:?}");
        assert_eq!(passwords.failures(account).unwrap(), Some(1 + checked as u8), "each checked guess counted once");
        assert!(passwords.in_flight.iter().all(|stripe| stripe.lock().unwrap().is_empty()), "no check left in flight");
        // Tries held by checks in flight are not anyone else's.
        let fresh = AccountId(10);
        passwords.set(fresh, "123456").unwrap();
        passwords.verify(fresh, Some("000000")).unwrap_err();
        passwords.verify(fresh, Some("000000")).unwrap_err();
        passwords.stripe(fresh).lock().unwrap().insert(fresh.0, 3);
        assert_eq!(passwords.verify(fresh, Some("123456")).unwrap_err().code, "rate_limited", "two wrong and three in flight");
        passwords.stripe(fresh).lock().unwrap().insert(fresh.0, 2);
        assert!(passwords.verify(fresh, Some("123456")).is_ok(), "one try left for this check");
        assert_eq!(passwords.stripe(fresh).lock().unwrap().get(&fresh.0), Some(&2), "its own try given back");
        assert_eq!(passwords.failures(fresh).unwrap(), Some(0));
    }

    /// A held try is given back however its check ends: counted (`give_back`), or dropped on
    /// an early way out or a panic; a refused take leaves nothing behind.
    #[test]
    fn a_held_try_is_given_back_however_the_check_ends() {
        let lock = Mutex::new(HashMap::new());
        let first = HeldTry::take(&lock, &mut lock.lock().unwrap(), 7, 3, 5).expect("two tries left");
        let second = HeldTry::take(&lock, &mut lock.lock().unwrap(), 7, 3, 5).expect("one try left");
        assert!(HeldTry::take(&lock, &mut lock.lock().unwrap(), 7, 3, 5).is_none(), "both held");
        assert_eq!(lock.lock().unwrap().get(&7), Some(&2));
        let mut second = second;
        second.give_back(&mut lock.lock().unwrap());
        drop(second);
        assert_eq!(lock.lock().unwrap().get(&7), Some(&1), "given back once, not again when dropped");
        let panicked = std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let _held = first;
                    panic!("argon2 panicked");
                })
                .join()
        });
        assert!(panicked.is_err());
        assert!(lock.lock().unwrap().is_empty(), "the panicking check's try is back");
        assert!(HeldTry::take(&lock, &mut lock.lock().unwrap(), 8, 5, 5).is_none());
        assert!(lock.lock().unwrap().is_empty(), "a refused take leaves no entry");
    }

    /// A check holds its account's stripe only: one account's checks (a store read and a synced
    /// write under the lock) do not hold up another stripe's.
    #[test]
    fn checks_of_other_stripes_do_not_wait() {
        let passwords = Arc::new(Passwords::new(Arc::new(storage::MemoryStore::new())));
        let (busy, other) = (AccountId(1), AccountId(2));
        passwords.set(other, "123456").unwrap();
        let held = passwords.stripe(busy).lock().unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let checking = passwords.clone();
        std::thread::spawn(move || done.send(checking.verify(other, Some("123456")).is_ok()).unwrap());
        assert_eq!(finished.recv_timeout(std::time::Duration::from_secs(20)), Ok(true), "account 2 checked while account 1's stripe is held");
        drop(held);
    }

    #[test]
    fn password_shapes() {
        for (text, ok) in [("123456", true), ("12345", false), ("1234567", false), ("12345a", false), ("", false)] {
            assert_eq!(valid_password(text), ok, "{text}");
        }
    }
}
