//! Operator users of the three portals: who they are (system, one platform, one merchant of a
//! platform), what they may do (roles), how they prove it (argon2id password, optional TOTP), and
//! the lockout after repeated failures. Stored as JSON under `o/op/{id}`, loaded at start and
//! written through (synced) before any answer that depends on them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use storage::Store;

use crate::error::ApiError;
use crate::passwords::HeldTry;

const PREFIX: &str = "o/op/";
/// Wrong logins in a row that lock an operator.
pub const LOGIN_FAILURES_MAX: u32 = 5;
/// How long a lockout lasts.
pub const LOCKOUT_SECONDS: i64 = 15 * 60;
/// Operator names: 3 to 32 of `[a-z0-9_.-]`.
pub const USERNAME_CHARS_MAX: usize = 32;
/// At most this many operators (disabled ones count: they are kept) of one merchant.
pub const OPERATORS_PER_MERCHANT_MAX: usize = 100;
/// At most this many operators under one platform, its merchants' included.
pub const OPERATORS_PER_PLATFORM_MAX: usize = 5_000;
/// At most this many system operators.
pub const OPERATORS_SYSTEM_MAX: usize = 1_000;
/// Passwords: 12 to 128 characters.
pub const PASSWORD_CHARS_MIN: usize = 12;
pub const PASSWORD_CHARS_MAX: usize = 128;

/// Which part of the service an operator works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Scope {
    /// The whole service.
    System,
    /// One platform and everything under it.
    Platform { platform: u32 },
    /// One merchant (a member) of a platform, and that member's accounts.
    Merchant { platform: u32, member: u64 },
}

impl Scope {
    pub fn kind(&self) -> &'static str {
        match self {
            Scope::System => "system",
            Scope::Platform { .. } => "platform",
            Scope::Merchant { .. } => "merchant",
        }
    }

    /// The platform this scope is limited to (none for system operators).
    pub fn platform(&self) -> Option<u32> {
        match self {
            Scope::System => None,
            Scope::Platform { platform } | Scope::Merchant { platform, .. } => Some(*platform),
        }
    }

    /// The merchant this scope is limited to.
    pub fn member(&self) -> Option<u64> {
        match self {
            Scope::Merchant { member, .. } => Some(*member),
            _ => None,
        }
    }

    /// Whether an operator of this scope may see objects of `platform`.
    pub fn sees_platform(&self, platform: u32) -> bool {
        self.platform().is_none_or(|own| own == platform)
    }

    /// Whether an operator of this scope may see member `member` of `platform`.
    pub fn sees_member(&self, platform: u32, member: u64) -> bool {
        self.sees_platform(platform) && self.member().is_none_or(|own| own == member)
    }

    /// Whether this scope contains `other` (a system operator contains every scope; a platform
    /// operator its platform and its merchants; a merchant only itself).
    pub fn contains(&self, other: &Scope) -> bool {
        match (self, other) {
            (Scope::System, _) => true,
            (Scope::Platform { platform }, Scope::Platform { platform: p } | Scope::Merchant { platform: p, .. }) => platform == p,
            (Scope::Merchant { .. }, _) => self == other,
            _ => false,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Scope::System => "system".to_string(),
            Scope::Platform { platform } => format!("platform plt_{platform}"),
            Scope::Merchant { platform, member } => format!("merchant mem_{member} of plt_{platform}"),
        }
    }
}

/// What an operator may do within the scope. Every role sees; `operator` acts and proposes;
/// `approver` approves what another proposed (four-eyes); `admin` manages operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
    Approver,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Operator, Role::Approver, Role::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.name() == text)
    }
}

/// An operator as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Operator {
    pub id: u64,
    pub username: String,
    pub display_name: String,
    pub scope: Scope,
    pub roles: Vec<Role>,
    /// PHC string of the argon2id hash.
    pub password_hash: String,
    /// Base32 TOTP secret once the second factor is on.
    #[serde(default)]
    pub totp_secret: Option<String>,
    /// The last TOTP time step a sign-in was let in with: a code is taken once (RFC 6238 5.2;
    /// before session 63 one seen over a shoulder or in a log signed in again within its 90 s
    /// window; helper 103).
    #[serde(default)]
    pub totp_last_step: u64,
    #[serde(default)]
    pub failures: u32,
    /// Unix seconds until which logins are refused.
    #[serde(default)]
    pub locked_until: i64,
    #[serde(default)]
    pub disabled: bool,
    pub created_at: i64,
    pub created_by: String,
    /// Bumped when the password changes or the operator is disabled: older sessions end.
    #[serde(default)]
    pub generation: u64,
    /// The operator chose its password itself (changed it on its account page); one its maker
    /// chose is known to the maker, so until it is changed the operator approves nothing.
    #[serde(default)]
    pub own_password: bool,
}

#[cfg(test)]
impl Operator {
    /// An operator of `scope` named `op{id}`, with no password (nobody signs in as it), for tests.
    pub(crate) fn for_test(id: u64, scope: Scope) -> Operator {
        Operator {
            id,
            username: format!("op{id}"),
            display_name: "Someone".to_string(),
            scope,
            roles: vec![Role::Viewer],
            password_hash: String::new(),
            totp_secret: None,
            totp_last_step: 0,
            failures: 0,
            locked_until: 0,
            disabled: false,
            created_at: 0,
            created_by: "test".to_string(),
            generation: 0,
            own_password: false,
        }
    }
}

impl Operator {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The roles as text, for pages and the audit log.
    pub fn role_names(&self) -> String {
        self.roles.iter().map(|role| role.name()).collect::<Vec<_>>().join(",")
    }

    /// The operator without secrets, for the audit log's before/after.
    pub fn public_view(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id, "username": self.username, "display_name": self.display_name, "scope": self.scope.describe(),
            "roles": self.role_names(), "totp": self.totp_secret.is_some(), "disabled": self.disabled,
        })
    }
}

/// Why a login was refused (the page says only "wrong name or password" for the first two).
#[derive(Debug, PartialEq, Eq)]
pub enum LoginRefusal {
    Wrong,
    Locked {
        until: i64,
    },
    Disabled,
    TotpRequired,
    TotpWrong,
    /// The operator's remaining tries are all held by sign-ins being checked: nothing was
    /// compared.
    Busy,
}

/// What a new operator is made of.
pub struct NewOperator {
    pub username: String,
    pub display_name: String,
    pub scope: Scope,
    pub roles: Vec<Role>,
    pub password: String,
}

/// Every operator, in memory, written through to the store.
pub struct Operators {
    store: Arc<dyn Store>,
    inner: Mutex<Inner>,
    /// Operators with sign-ins being checked, and how many: each holds one of the operator's
    /// remaining tries while argon2 runs (`HeldTry`; see `login`). Locked after `inner`, never
    /// before it.
    checking: Mutex<HashMap<u64, u32>>,
    /// A hash to verify against when the name is unknown, so that timing tells nothing.
    decoy: String,
}

struct Inner {
    by_id: HashMap<u64, Operator>,
    by_name: HashMap<String, u64>,
    highest: u64,
}

pub fn valid_username(text: &str) -> bool {
    (3..=USERNAME_CHARS_MAX).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
}

pub fn check_password_rules(password: &str) -> Result<(), ApiError> {
    let chars = password.chars().count();
    if !(PASSWORD_CHARS_MIN..=PASSWORD_CHARS_MAX).contains(&chars) {
        return Err(ApiError::invalid("the password must be 12 to 128 characters", "password"));
    }
    Ok(())
}

pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16 bytes make a salt");
    Argon2::default().hash_password(password.as_bytes(), &salt).expect("argon2id hashes").to_string()
}

fn verify_hash(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// The TOTP of a base32 secret (RFC 6238: SHA-1, 6 digits, 30 s, one step of skew).
pub fn totp(secret_base32: &str, username: &str) -> Option<totp_rs::Totp> {
    let secret = totp_rs::Secret::try_from_base32(secret_base32).ok()?;
    totp_rs::Builder::new().with_secret(secret).with_account_name(username).with_issuer(Some("clearing")).build().ok()
}

/// A new random TOTP secret (160 bits) in base32.
pub fn new_totp_secret() -> String {
    let mut bytes = [0u8; 20];
    rand::thread_rng().fill_bytes(&mut bytes);
    totp_rs::Secret::new(bytes.to_vec().into_boxed_slice()).to_base32()
}

pub fn now_seconds() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl Inner {
    /// The bound a new operator of `scope` would pass (`None` when it fits): its merchant's, its
    /// platform's (every scope under the platform together) or the system's. Walks every
    /// operator (bounded by these bounds and the platforms); creating one hashes a password,
    /// which costs far more.
    fn full_for(&self, scope: &Scope) -> Option<usize> {
        let count = |same: &dyn Fn(&Scope) -> bool| self.by_id.values().filter(|operator| same(&operator.scope)).count();
        match scope {
            Scope::System => Some(OPERATORS_SYSTEM_MAX).filter(|bound| count(&|s| *s == Scope::System) >= *bound),
            Scope::Platform { platform } | Scope::Merchant { platform, .. } => {
                if let Scope::Merchant { .. } = scope {
                    if count(&|s| s == scope) >= OPERATORS_PER_MERCHANT_MAX {
                        return Some(OPERATORS_PER_MERCHANT_MAX);
                    }
                }
                Some(OPERATORS_PER_PLATFORM_MAX).filter(|bound| count(&|s| s.platform() == Some(*platform)) >= *bound)
            }
        }
    }
}

impl Operators {
    pub fn load(store: Arc<dyn Store>) -> Result<Operators, String> {
        let mut inner = Inner { by_id: HashMap::new(), by_name: HashMap::new(), highest: 0 };
        for (_, operator) in crate::records::load_all::<Operator>(store.as_ref(), PREFIX.as_bytes())? {
            inner.highest = inner.highest.max(operator.id);
            inner.by_name.insert(operator.username.clone(), operator.id);
            inner.by_id.insert(operator.id, operator);
        }
        Ok(Operators { store, inner: Mutex::new(inner), checking: Mutex::new(HashMap::new()), decoy: hash_password("decoy password that matches nothing") })
    }

    fn save(&self, operator: &Operator) -> Result<(), ApiError> {
        crate::records::put(self.store.as_ref(), &[(crate::records::key(PREFIX, operator.id), operator)])
    }

    pub fn is_empty(&self) -> bool {
        self.inner.lock().expect("operators lock").by_id.is_empty()
    }

    /// The operator with this user name.
    pub fn named(&self, username: &str) -> Option<Operator> {
        let inner = self.inner.lock().expect("operators lock");
        inner.by_name.get(username).and_then(|id| inner.by_id.get(id)).cloned()
    }

    pub fn get(&self, id: u64) -> Option<Operator> {
        self.inner.lock().expect("operators lock").by_id.get(&id).cloned()
    }

    /// Operators within `scope`, by id.
    pub fn within(&self, scope: &Scope) -> Vec<Operator> {
        let inner = self.inner.lock().expect("operators lock");
        let mut list: Vec<Operator> = inner.by_id.values().filter(|operator| scope.contains(&operator.scope)).cloned().collect();
        list.sort_by_key(|operator| operator.id);
        list
    }

    /// Creates an operator (argon2 runs before the lock is taken). The name is unique.
    pub fn create(&self, new: NewOperator, created_by: &str) -> Result<Operator, ApiError> {
        if !valid_username(&new.username) {
            return Err(ApiError::invalid("the user name must be 3 to 32 of a-z 0-9 _ . -", "username"));
        }
        let display_name = new.display_name.trim();
        if display_name.is_empty() || display_name.chars().count() > 64 {
            return Err(ApiError::invalid("the display name must be 1 to 64 characters", "display_name"));
        }
        if new.roles.is_empty() {
            return Err(ApiError::invalid("choose at least one role", "roles"));
        }
        check_password_rules(&new.password)?;
        let password_hash = hash_password(&new.password);
        let mut inner = self.inner.lock().expect("operators lock");
        if inner.by_name.contains_key(&new.username) {
            return Err(ApiError { param: Some("username".into()), ..ApiError::new(409, "operator_exists", "an operator with this user name exists") });
        }
        if let Some(bound) = inner.full_for(&new.scope) {
            let message = format!("{} already has {bound} operators, as many as it may (disabled ones count)", new.scope.describe());
            return Err(ApiError::new(422, "operator_limit_reached", &message));
        }
        let mut roles = new.roles;
        roles.sort();
        roles.dedup();
        let operator = Operator {
            id: inner.highest + 1,
            username: new.username,
            display_name: display_name.to_string(),
            scope: new.scope,
            roles,
            password_hash,
            totp_secret: None,
            totp_last_step: 0,
            failures: 0,
            locked_until: 0,
            disabled: false,
            created_at: now_seconds(),
            created_by: created_by.to_string(),
            generation: 0,
            own_password: false,
        };
        self.save(&operator)?;
        inner.highest = operator.id;
        inner.by_name.insert(operator.username.clone(), operator.id);
        inner.by_id.insert(operator.id, operator.clone());
        Ok(operator)
    }

    /// Checks a login. Blocking (argon2): call it on a blocking thread. A wrong password counts a
    /// failure (stored, so a restart does not reset it); `LOGIN_FAILURES_MAX` in a row lock the
    /// operator for `LOCKOUT_SECONDS`. A locked operator is refused before the password is
    /// compared, so guessing during a lockout learns nothing. Each check holds one of the
    /// operator's remaining tries from before the comparison until its outcome is counted, so
    /// concurrent guesses get no more tries than are left (`Busy` beyond them).
    pub fn login(&self, username: &str, password: &str, totp_code: Option<&str>, now: i64) -> Result<Operator, LoginRefusal> {
        let (operator, mut held) = {
            let inner = self.inner.lock().expect("operators lock");
            let found = inner.by_name.get(username).and_then(|id| inner.by_id.get(id)).cloned();
            let Some(operator) = found else {
                drop(inner);
                verify_hash(&self.decoy, password);
                return Err(LoginRefusal::Wrong);
            };
            if operator.locked_until > now {
                // As long as a check: a refusal that came at once would tell the name exists.
                drop(inner);
                verify_hash(&self.decoy, password);
                return Err(LoginRefusal::Locked { until: operator.locked_until });
            }
            let mut checking = self.checking.lock().expect("sign-in checks lock");
            let Some(held) = HeldTry::take(&self.checking, &mut checking, operator.id, operator.failures, LOGIN_FAILURES_MAX) else {
                return Err(LoginRefusal::Busy);
            };
            (operator, held)
        };
        let right = verify_hash(&operator.password_hash, password);
        let mut inner = self.inner.lock().expect("operators lock");
        // Given back under the lock that counts the outcome: a sign-in that starts in between
        // sees neither.
        held.give_back(&mut self.checking.lock().expect("sign-in checks lock"));
        let current = inner.by_id.get_mut(&operator.id).expect("operators are never removed");
        if current.locked_until > now {
            // Locked by another check while this one ran.
            return Err(LoginRefusal::Locked { until: current.locked_until });
        }
        if current.password_hash != operator.password_hash {
            // The password changed while this one was checked against the old one: refused,
            // and counted against nothing.
            return Err(LoginRefusal::Wrong);
        }
        if !right {
            let mut updated = current.clone();
            updated.failures = updated.failures.saturating_add(1);
            if updated.failures >= LOGIN_FAILURES_MAX {
                updated.locked_until = now + LOCKOUT_SECONDS;
                updated.failures = 0;
            }
            // A failed write keeps the old count in memory too; the refusal stands either way.
            if self.save(&updated).is_ok() {
                *current = updated.clone();
            }
            return Err(if updated.locked_until > now { LoginRefusal::Locked { until: updated.locked_until } } else { LoginRefusal::Wrong });
        }
        if current.disabled {
            return Err(LoginRefusal::Disabled);
        }
        if let Some(secret) = &current.totp_secret {
            let Some(code) = totp_code.map(str::trim).filter(|code| !code.is_empty()) else {
                return Err(LoginRefusal::TotpRequired);
            };
            let step = totp(secret, &current.username).and_then(|totp| totp.check(code, now.max(0) as u64)).filter(|step| *step > current.totp_last_step);
            if let Some(step) = step {
                // Taken once: the step is kept before the sign-in goes on (a step that cannot be
                // kept lets nobody in).
                let mut updated = current.clone();
                updated.totp_last_step = step;
                if self.save(&updated).is_err() {
                    return Err(LoginRefusal::TotpWrong);
                }
                *current = updated;
            } else {
                let mut updated = current.clone();
                updated.failures = updated.failures.saturating_add(1);
                if updated.failures >= LOGIN_FAILURES_MAX {
                    updated.locked_until = now + LOCKOUT_SECONDS;
                    updated.failures = 0;
                }
                if self.save(&updated).is_ok() {
                    *current = updated;
                }
                return Err(LoginRefusal::TotpWrong);
            }
        }
        if current.failures != 0 || current.locked_until != 0 {
            let mut updated = current.clone();
            updated.failures = 0;
            updated.locked_until = 0;
            if self.save(&updated).is_ok() {
                *current = updated;
            }
        }
        Ok(current.clone())
    }

    /// Applies `change` to operator `id` and stores it; returns (before, after).
    pub fn update(&self, id: u64, change: impl FnOnce(&mut Operator) -> Result<(), ApiError>) -> Result<(Operator, Operator), ApiError> {
        let mut inner = self.inner.lock().expect("operators lock");
        let current = inner.by_id.get_mut(&id).ok_or_else(ApiError::not_found)?;
        let before = current.clone();
        let mut after = current.clone();
        change(&mut after)?;
        self.save(&after)?;
        *current = after.clone();
        Ok((before, after))
    }

    /// Changes an operator's password to one it chose (the caller verified the old one); every
    /// session of the operator ends.
    pub fn set_password(&self, id: u64, password: &str) -> Result<(Operator, Operator), ApiError> {
        check_password_rules(password)?;
        let hash = hash_password(password);
        self.update(id, |operator| {
            operator.own_password = true;
            operator.password_hash = hash;
            operator.generation += 1;
            operator.failures = 0;
            operator.locked_until = 0;
            Ok(())
        })
    }

    /// Whether `password` is operator `id`'s (blocking: argon2).
    pub fn check_password(&self, id: u64, password: &str) -> bool {
        self.get(id).is_some_and(|operator| verify_hash(&operator.password_hash, password))
    }

    /// Whether operator `id` was made by operator `ancestor`, or by an operator `ancestor` made,
    /// at any depth (`created_by`, names never reused: operators are never removed).
    pub fn made_by(&self, id: u64, ancestor: u64) -> bool {
        let inner = self.inner.lock().expect("operators lock");
        let Some(ancestor) = inner.by_id.get(&ancestor).map(|operator| operator.username.clone()) else { return false };
        let mut current = inner.by_id.get(&id);
        // Bounded: a chain is at most as long as there are operators.
        for _ in 0..=inner.by_id.len() {
            let Some(operator) = current else { return false };
            if operator.created_by == ancestor {
                return true;
            }
            current = inner.by_name.get(&operator.created_by).and_then(|id| inner.by_id.get(id));
        }
        false
    }

    /// Confirms operator `id`'s own password inside a session (to change it, to turn on a second
    /// factor), counted like a sign-in (`login`): a wrong one is a failed try, five in a row
    /// lock the operator and end every session of it (someone holding a session cannot guess
    /// the password at the hashing rate). Blocking (argon2).
    pub fn confirm_password(&self, id: u64, password: &str, now: i64) -> Result<(), LoginRefusal> {
        let username = self.get(id).map(|operator| operator.username).ok_or(LoginRefusal::Wrong)?;
        match self.login(&username, password, None, now) {
            // Right; the second factor is not asked inside a session.
            Ok(_) | Err(LoginRefusal::TotpRequired) => Ok(()),
            Err(refusal @ LoginRefusal::Locked { .. }) => {
                let _ = self.update(id, |operator| {
                    operator.generation += 1;
                    Ok(())
                });
                Err(refusal)
            }
            Err(refusal) => Err(refusal),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operators() -> Operators {
        Operators::load(Arc::new(storage::MemoryStore::new())).expect("empty store loads")
    }

    fn new(username: &str) -> NewOperator {
        NewOperator {
            username: username.to_string(),
            display_name: "Someone".to_string(),
            scope: Scope::Platform { platform: 3 },
            roles: vec![Role::Operator],
            password: "correct horse battery".to_string(),
        }
    }

    /// A merchant, a platform (merchants included) and the system each hold a bounded number of
    /// operators; a full one refuses another, and a neighbour is not held by it.
    #[test]
    fn operators_are_bounded_by_merchant_platform_and_system() {
        let operators = operators();
        let fill = |scope: Scope, count: usize| {
            let mut inner = operators.inner.lock().unwrap();
            for _ in 0..count {
                let id = inner.highest + 1;
                let operator = Operator::for_test(id, scope);
                inner.highest = id;
                inner.by_id.insert(id, operator);
            }
        };
        let of = |name: &str, scope: Scope| NewOperator { scope, ..new(name) };
        let merchant = Scope::Merchant { platform: 3, member: 8 };
        fill(merchant, OPERATORS_PER_MERCHANT_MAX);
        assert_eq!(operators.create(of("mia", merchant), "test").unwrap_err().code, "operator_limit_reached");
        operators.create(of("max", Scope::Merchant { platform: 3, member: 9 }), "test").expect("another merchant is not full");
        fill(Scope::Platform { platform: 3 }, OPERATORS_PER_PLATFORM_MAX - OPERATORS_PER_MERCHANT_MAX - 1);
        assert_eq!(operators.create(of("pia", Scope::Platform { platform: 3 }), "test").unwrap_err().code, "operator_limit_reached");
        assert_eq!(operators.create(of("moe", Scope::Merchant { platform: 3, member: 9 }), "test").unwrap_err().code, "operator_limit_reached");
        operators.create(of("paul", Scope::Platform { platform: 4 }), "test").expect("another platform is not full");
        fill(Scope::System, OPERATORS_SYSTEM_MAX);
        assert_eq!(operators.create(of("sys", Scope::System), "test").unwrap_err().code, "operator_limit_reached");
        assert!(operators.named("mia").is_none() && operators.named("pia").is_none());
    }

    /// An operator is made by the one that created it and by every creator up its chain.
    #[test]
    fn made_by_follows_the_chain_of_creators() {
        let operators = operators();
        let a = operators.create(new("anna"), "admin").unwrap().id;
        let b = operators.create(new("bert"), "anna").unwrap().id;
        let c = operators.create(new("cara"), "bert").unwrap().id;
        let d = operators.create(new("dora"), "admin").unwrap().id;
        assert!(operators.made_by(b, a) && operators.made_by(c, a) && operators.made_by(c, b));
        assert!(!operators.made_by(d, a) && !operators.made_by(a, c) && !operators.made_by(a, a) && !operators.made_by(99, a) && !operators.made_by(c, 99));
    }

    #[test]
    fn five_wrong_logins_lock_and_the_right_password_does_not_open_a_lock() {
        let operators = operators();
        operators.create(new("alice"), "test").expect("created");
        let now = 1_800_000_000;
        for _ in 0..LOGIN_FAILURES_MAX - 1 {
            assert_eq!(operators.login("alice", "wrong password!", None, now).unwrap_err(), LoginRefusal::Wrong);
        }
        assert_eq!(operators.login("alice", "wrong password!", None, now).unwrap_err(), LoginRefusal::Locked { until: now + LOCKOUT_SECONDS });
        assert!(matches!(operators.login("alice", "correct horse battery", None, now + 10), Err(LoginRefusal::Locked { .. })));
        assert!(operators.login("alice", "correct horse battery", None, now + LOCKOUT_SECONDS + 1).is_ok());
        assert_eq!(operators.login("nobody", "correct horse battery", None, now).unwrap_err(), LoginRefusal::Wrong);
    }

    /// Regression: every sign-in read the count of wrong tries before any was written, so a burst
    /// of concurrent guesses all ran past the lockout.
    #[test]
    fn concurrent_sign_ins_get_no_more_tries_than_are_left() {
        let operators = Arc::new(operators());
        operators.create(new("alice"), "test").expect("created");
        let now = 1_800_000_000;
        assert_eq!(operators.login("alice", "wrong password!", None, now).unwrap_err(), LoginRefusal::Wrong);
        let start = Arc::new(std::sync::Barrier::new(16));
        let guesses: Vec<_> = (0..16)
            .map(|n| {
                let (operators, start) = (operators.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    operators.login("alice", &format!("guess number {n}"), None, now).unwrap_err()
                })
            })
            .collect();
        let refusals: Vec<LoginRefusal> = guesses.into_iter().map(|g| g.join().unwrap()).collect();
        let compared = refusals.iter().filter(|r| !matches!(r, LoginRefusal::Busy)).count();
        assert!(compared <= (LOGIN_FAILURES_MAX - 1) as usize && refusals.contains(&LoginRefusal::Busy), "{refusals:?}");
        assert!(operators.checking.lock().unwrap().is_empty(), "no check left in flight");
        if compared == (LOGIN_FAILURES_MAX - 1) as usize {
            assert!(matches!(operators.login("alice", "correct horse battery", None, now + 1), Err(LoginRefusal::Locked { .. })), "five wrong in all");
        }
        assert!(operators.login("alice", "correct horse battery", None, now + LOCKOUT_SECONDS + 1).is_ok());
    }

    #[test]
    fn a_second_factor_is_asked_and_checked() {
        let operators = operators();
        let alice = operators.create(new("alice"), "test").expect("created");
        let secret = new_totp_secret();
        operators
            .update(alice.id, |operator| {
                operator.totp_secret = Some(secret.clone());
                Ok(())
            })
            .expect("updated");
        let now = 1_800_000_000;
        assert_eq!(operators.login("alice", "correct horse battery", None, now).unwrap_err(), LoginRefusal::TotpRequired);
        assert_eq!(operators.login("alice", "correct horse battery", Some("000000x"), now).unwrap_err(), LoginRefusal::TotpWrong);
        let code = totp(&secret, "alice").expect("valid secret").generate(now as u64).to_string();
        assert!(operators.login("alice", "correct horse battery", Some(&code), now).is_ok());
        // A code is taken once (RFC 6238 5.2): again in its window, it is refused; the next
        // step's code signs in (helper 103, session 63).
        assert_eq!(operators.login("alice", "correct horse battery", Some(&code), now + 10).unwrap_err(), LoginRefusal::TotpWrong);
        let next = totp(&secret, "alice").expect("valid secret").generate(now as u64 + 30).to_string();
        assert!(operators.login("alice", "correct horse battery", Some(&next), now + 30).is_ok());
        let earlier = totp(&secret, "alice").expect("valid secret").generate(now as u64).to_string();
        assert_eq!(operators.login("alice", "correct horse battery", Some(&earlier), now + 31).unwrap_err(), LoginRefusal::TotpWrong, "an older step's code");
    }

    #[test]
    fn names_are_unique_and_rules_hold() {
        let operators = operators();
        operators.create(new("alice"), "test").expect("created");
        assert_eq!(operators.create(new("alice"), "test").unwrap_err().code, "operator_exists");
        assert_eq!(operators.create(new("Al"), "test").unwrap_err().param.as_deref(), Some("username"));
        let mut short = new("bob");
        short.password = "short".into();
        assert_eq!(operators.create(short, "test").unwrap_err().param.as_deref(), Some("password"));
    }

    #[test]
    fn scopes_contain_what_they_should() {
        let system = Scope::System;
        let platform = Scope::Platform { platform: 1 };
        let merchant = Scope::Merchant { platform: 1, member: 7 };
        assert!(system.contains(&platform) && system.contains(&merchant));
        assert!(platform.contains(&merchant) && !platform.contains(&Scope::Platform { platform: 2 }));
        assert!(!platform.contains(&system));
        assert!(!merchant.contains(&platform) && merchant.contains(&merchant));
        assert!(merchant.sees_member(1, 7) && !merchant.sees_member(1, 8) && !merchant.sees_platform(2));
    }
}
