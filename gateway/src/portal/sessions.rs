//! Operator sessions: a random 256-bit token in an HttpOnly, `SameSite=Strict` cookie (only its
//! SHA-256 is kept), an idle and an absolute timeout, one CSRF token per session that every form
//! carries, and the `Session` extractor every portal page starts with. Sessions live in memory:
//! a restart logs everyone out (nothing to steal from the disk).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix_web::{web, FromRequest, HttpRequest};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::operators::{Operator, Role, Scope};
use super::{Portal, PortalError};

pub const COOKIE: &str = "portal_session";
/// At most this many sessions at once (the oldest are dropped first).
pub const SESSIONS_MAX: usize = 10_000;
/// At most this many sessions per operator.
pub const SESSIONS_PER_OPERATOR_MAX: usize = 5;

/// How long sessions last (config `[portal]`).
#[derive(Clone, Copy, Debug)]
pub struct SessionLimits {
    pub idle_seconds: i64,
    pub absolute_seconds: i64,
    /// Marks the cookie `Secure` (behind TLS); off for plain-HTTP development.
    pub secure_cookies: bool,
}

impl Default for SessionLimits {
    fn default() -> SessionLimits {
        SessionLimits { idle_seconds: 15 * 60, absolute_seconds: 8 * 3600, secure_cookies: false }
    }
}

#[derive(Clone, Debug)]
struct Stored {
    operator: u64,
    generation: u64,
    csrf: String,
    created_at: i64,
    last_seen: i64,
}

/// Every open session, by the SHA-256 of its token.
pub struct Sessions {
    limits: SessionLimits,
    open: Mutex<HashMap<[u8; 32], Stored>>,
}

/// Milliseconds since the epoch: timeouts are kept in milliseconds so that a short idle timeout
/// is not cut by a second's rounding.
fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Sessions {
    pub fn new(limits: SessionLimits) -> Sessions {
        Sessions { limits, open: Mutex::new(HashMap::new()) }
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// Opens a session for `operator` and returns its token (for the cookie).
    pub fn open(&self, operator: &Operator) -> String {
        let token = random_hex();
        let now = now_ms();
        let mut open = self.open.lock().expect("sessions lock");
        open.retain(|_, s| self.live(s, now));
        let mut own: Vec<([u8; 32], i64)> = open.iter().filter(|(_, s)| s.operator == operator.id).map(|(k, s)| (*k, s.created_at)).collect();
        if own.len() >= SESSIONS_PER_OPERATOR_MAX {
            own.sort_by_key(|(_, created)| *created);
            for (key, _) in &own[..=own.len() - SESSIONS_PER_OPERATOR_MAX] {
                open.remove(key);
            }
        }
        if open.len() >= SESSIONS_MAX {
            if let Some(oldest) = open.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| *k) {
                open.remove(&oldest);
            }
        }
        let stored = Stored { operator: operator.id, generation: operator.generation, csrf: random_hex(), created_at: now, last_seen: now };
        open.insert(digest(&token), stored);
        token
    }

    fn live(&self, session: &Stored, now_ms: i64) -> bool {
        now_ms - session.last_seen < self.limits.idle_seconds * 1000 && now_ms - session.created_at < self.limits.absolute_seconds * 1000
    }

    /// Ends the session with this token.
    pub fn close(&self, token: &str) {
        self.open.lock().expect("sessions lock").remove(&digest(token));
    }

    /// Ends every session of `operator` (disabled, password changed by an admin).
    pub fn close_all_of(&self, operator: u64) {
        self.open.lock().expect("sessions lock").retain(|_, s| s.operator != operator);
    }

    /// The operator id and CSRF token of a live session, touching it; `None` when unknown or
    /// past a timeout (then it is removed).
    fn touch(&self, token: &str, now: i64) -> Option<(u64, u64, String, i64)> {
        let key = digest(token);
        let mut open = self.open.lock().expect("sessions lock");
        let stored = open.get_mut(&key)?;
        if !self.live(stored, now) {
            open.remove(&key);
            return None;
        }
        stored.last_seen = now;
        Some((stored.operator, stored.generation, stored.csrf.clone(), stored.created_at))
    }

    /// How many sessions are open (for the system page).
    pub fn count(&self) -> usize {
        self.open.lock().expect("sessions lock").len()
    }
}

/// The signed-in operator of a request. Extracting it from a request without a live session
/// answers a redirect to the login page.
#[derive(Clone, Debug)]
pub struct Session {
    pub operator: Operator,
    pub csrf: String,
    /// The client's address (the socket's peer; forwarded headers are not trusted).
    pub from: String,
    pub token: String,
}

impl Session {
    pub fn scope(&self) -> Scope {
        self.operator.scope
    }

    pub fn has(&self, role: Role) -> bool {
        self.operator.has(role)
    }

    /// Refuses (403 page) unless the operator has `role`.
    pub fn require(&self, role: Role) -> Result<(), PortalError> {
        if self.has(role) {
            Ok(())
        } else {
            Err(PortalError::Forbidden(format!("this needs the {} role", role.name())))
        }
    }

    /// Refuses unless the operator is of the given kind (`system`, `platform`, `merchant`).
    pub fn require_kind(&self, kind: &str) -> Result<(), PortalError> {
        if self.operator.scope.kind() == kind {
            Ok(())
        } else {
            Err(PortalError::NotFound)
        }
    }

    /// Checks a form's CSRF token (compared as digests, so the time taken tells nothing).
    pub fn check_csrf(&self, fields: &Fields) -> Result<(), PortalError> {
        let sent = fields.get("csrf");
        if !sent.is_empty() && Sha256::digest(sent.as_bytes()) == Sha256::digest(self.csrf.as_bytes()) {
            Ok(())
        } else {
            Err(PortalError::Csrf)
        }
    }
}

/// The peer address of a request, for sessions and the audit log.
pub fn peer(request: &HttpRequest) -> String {
    request.peer_addr().map(|address| address.ip().to_string()).unwrap_or_else(|| "unknown".to_string())
}

/// Whether a state-changing request came from our own pages: an `Origin` (or, without one, a
/// `Referer`) naming another host is refused. Browsers send `Origin` on every POST.
pub fn same_origin(request: &HttpRequest) -> bool {
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    let host = header("host").unwrap_or("");
    let authority = |url: &str| url.split("://").nth(1).and_then(|rest| rest.split('/').next()).map(str::to_ascii_lowercase);
    match header("origin").or_else(|| header("referer")) {
        // A client that names no origin at all (curl, a test) is not a browser tricked by a page.
        None => request.headers().get("origin").is_none(),
        Some(url) => authority(url).is_some_and(|authority| authority == host.to_ascii_lowercase()),
    }
}

fn session_of(request: &HttpRequest) -> Result<Session, PortalError> {
    let portal = request.app_data::<web::Data<Arc<Portal>>>().ok_or(PortalError::NotFound)?;
    let token = request.cookie(COOKIE).map(|cookie| cookie.value().to_string()).ok_or(PortalError::LoginNeeded)?;
    if token.len() != 64 {
        return Err(PortalError::LoginNeeded);
    }
    let (operator_id, generation, csrf, _) = portal.sessions.touch(&token, now_ms()).ok_or(PortalError::LoginNeeded)?;
    let operator = portal.operators.get(operator_id).ok_or(PortalError::LoginNeeded)?;
    if operator.disabled || operator.generation != generation {
        portal.sessions.close(&token);
        return Err(PortalError::LoginNeeded);
    }
    Ok(Session { operator, csrf, from: peer(request), token })
}

impl FromRequest for Session {
    type Error = PortalError;
    type Future = std::future::Ready<Result<Session, PortalError>>;

    fn from_request(request: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(session_of(request))
    }
}

/// A submitted form's fields in order (repeated names kept), e.g. `web::Form<Fields>`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
    /// The first value of `name`, or "" when absent.
    pub fn get(&self, name: &str) -> &str {
        self.0.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str()).unwrap_or("")
    }

    /// The trimmed first value, `None` when absent or blank.
    pub fn opt(&self, name: &str) -> Option<&str> {
        Some(self.get(name).trim()).filter(|value| !value.is_empty())
    }

    /// Every value of `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}
