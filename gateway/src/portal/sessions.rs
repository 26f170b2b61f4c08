//! Operator sessions: a random 256-bit token in an HttpOnly, `SameSite=Strict` cookie (only its
//! SHA-256 is kept), an idle and an absolute timeout, one CSRF token per session that every form
//! carries, and the `Session` extractor every portal page starts with. Sessions live in memory:
//! a restart logs everyone out (nothing to steal from the disk).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use actix_web::{web, FromRequest, HttpRequest};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::operators::{Operator, Role, Scope};
use super::{Portal, PortalError};

pub const COOKIE: &str = "portal_session";
/// At most this many sessions at once. Each platform's are bounded (`SESSIONS_PER_TENANT_MAX`),
/// so this fills only when 25 platforms or more are at their bound; then a new session ends
/// the longest idle session of the tenant (a platform, or the system) holding the most, within
/// it of its scope holding the most.
pub const SESSIONS_MAX: usize = 50_000;
/// At most this many sessions per operator (its oldest end first).
pub const SESSIONS_PER_OPERATOR_MAX: usize = 5;
/// At most this many sessions of one merchant's operators together (their longest idle ends first).
pub const SESSIONS_PER_MERCHANT_MAX: usize = 100;
/// At most this many sessions of one platform's own operators together (merchants' not counted).
pub const SESSIONS_PER_PLATFORM_MAX: usize = 1_000;
/// At most this many sessions under one platform, its own operators' and its merchants'
/// together: past it, the longest idle of the platform's largest scope ends. One platform's
/// sign-ins therefore end another platform's sessions only when the whole table is full.
pub const SESSIONS_PER_TENANT_MAX: usize = 2_000;

/// How long sessions last (config `[portal]`).
#[derive(Clone, Copy, Debug)]
pub struct SessionLimits {
    pub idle_seconds: i64,
    pub absolute_seconds: i64,
    /// Marks the cookie `Secure` (behind TLS); off for plain-HTTP development.
    pub secure_cookies: bool,
    /// Failed sign-ins one peer address may make in `ADDRESS_WINDOW_SECONDS` before its
    /// sign-ins are refused until the window ends (0: no limit).
    pub sign_in_failures_per_address: u32,
}

impl Default for SessionLimits {
    fn default() -> SessionLimits {
        SessionLimits {
            idle_seconds: 15 * 60,
            absolute_seconds: 8 * 3600,
            secure_cookies: false,
            sign_in_failures_per_address: SIGN_IN_FAILURES_PER_ADDRESS_DEFAULT,
        }
    }
}

/// Failed sign-ins a client address may make in a window, by default: none counted. Behind a
/// proxy every operator would share its address, and anyone failing that many times would lock
/// them all out: turn it on where the portals see clients' addresses (directly, or through
/// `[portal] trusted_proxies`).
pub const SIGN_IN_FAILURES_PER_ADDRESS_DEFAULT: u32 = 0;
/// The window failed sign-ins of an address are counted in (fixed windows from its first).
pub const ADDRESS_WINDOW_SECONDS: i64 = 15 * 60;
/// Addresses counted at once; past it, windows that ended are dropped (at most every ten
/// seconds), then an address below its limit is forgotten to make room (one at its limit
/// only when none is below: a client filling the table must not reset its own refusal).
const ADDRESSES_MAX: usize = 65_536;

/// Failed sign-ins per client address (`peer`: the socket's, or past trusted proxies the one
/// their `X-Forwarded-For` names), in memory, bounded: one address guessing names and passwords (which a per-operator lockout does not
/// stop when each name is tried a few times) is refused once it has failed
/// `sign_in_failures_per_address` times in a window, before any password is hashed.
pub struct AddressFailures {
    limit: u32,
    inner: Mutex<AddressTable>,
}

#[derive(Default)]
struct AddressTable {
    /// Address → (its window's start, failures in it).
    counts: HashMap<String, (i64, u32)>,
    swept_at: i64,
}

impl AddressFailures {
    pub fn new(limit: u32) -> AddressFailures {
        AddressFailures { limit, inner: Mutex::new(AddressTable::default()) }
    }

    /// Whether `address` may try to sign in at `now` (seconds).
    pub fn allows(&self, address: &str, now: i64) -> bool {
        if self.limit == 0 {
            return true;
        }
        let table = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        table.counts.get(address).is_none_or(|&(start, failures)| now >= start + ADDRESS_WINDOW_SECONDS || failures < self.limit)
    }

    /// Counts a failed sign-in of `address` at `now`; answers whether this failure reached the
    /// limit (once a window: the audit log records the address then).
    pub fn failed(&self, address: &str, now: i64) -> bool {
        if self.limit == 0 {
            return false;
        }
        let mut table = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if table.counts.len() >= ADDRESSES_MAX && !table.counts.contains_key(address) {
            if now >= table.swept_at + 10 {
                table.swept_at = now;
                table.counts.retain(|_, (start, _)| now < *start + ADDRESS_WINDOW_SECONDS);
            }
            if table.counts.len() >= ADDRESSES_MAX {
                let limit = self.limit;
                let below = table.counts.iter().find(|(_, (_, failures))| *failures < limit).map(|(key, _)| key.clone());
                let any = below.or_else(|| table.counts.keys().next().cloned());
                if let Some(any) = any {
                    table.counts.remove(&any);
                }
            }
        }
        let entry = table.counts.entry(address.to_string()).or_insert((now, 0));
        if now >= entry.0 + ADDRESS_WINDOW_SECONDS {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1 == self.limit
    }
}

#[derive(Clone, Debug)]
struct Stored {
    operator: u64,
    scope: Scope,
    generation: u64,
    csrf: String,
    created_at: i64,
    last_seen: i64,
}

/// Every open session, by the SHA-256 of its token.
pub struct Sessions {
    limits: SessionLimits,
    /// The table's bound (`SESSIONS_MAX`; smaller in tests).
    table_max: usize,
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
        Sessions { limits, table_max: SESSIONS_MAX, open: Mutex::new(HashMap::new()) }
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// Opens a session for `operator` and returns its token (for the cookie).
    pub fn open(&self, operator: &Operator) -> String {
        self.open_at(operator, now_ms())
    }

    /// Opens a session for `operator` at `now` (milliseconds since the epoch).
    fn open_at(&self, operator: &Operator, now: i64) -> String {
        let token = random_hex();
        let mut open = self.open.lock().expect("sessions lock");
        open.retain(|_, s| self.live(s, now));
        make_room(&mut open, operator, self.table_max);
        let stored =
            Stored { operator: operator.id, scope: operator.scope, generation: operator.generation, csrf: random_hex(), created_at: now, last_seen: now };
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

    /// The operator id and CSRF token of a live session, touching it when `activity` (a page's
    /// own refresh is not the operator's: it must not keep an unattended session open); `None`
    /// when unknown or past a timeout (then it is removed).
    fn touch(&self, token: &str, now: i64, activity: bool) -> Option<(u64, u64, String, i64)> {
        let key = digest(token);
        let mut open = self.open.lock().expect("sessions lock");
        let stored = open.get_mut(&key)?;
        if !self.live(stored, now) {
            open.remove(&key);
            return None;
        }
        if activity {
            stored.last_seen = now;
        }
        Some((stored.operator, stored.generation, stored.csrf.clone(), stored.created_at))
    }

    /// How many sessions are open (for the system page).
    pub fn count(&self) -> usize {
        self.open.lock().expect("sessions lock").len()
    }
}

/// The most sessions one scope holds at once (`None`: only the table's own bound).
fn scope_sessions_max(scope: &Scope) -> Option<usize> {
    match scope {
        Scope::System => None,
        Scope::Platform { .. } => Some(SESSIONS_PER_PLATFORM_MAX),
        Scope::Merchant { .. } => Some(SESSIONS_PER_MERCHANT_MAX),
    }
}

/// Ends sessions so that one more of `operator` fits every bound: the operator's oldest past
/// its own bound, its scope's longest idle past the scope's, its platform's (the longest idle
/// of its largest scope) past the platform's, and when the table is full the longest idle of
/// the largest scope of the tenant (platform or system) holding the most. Walks the table
/// (bounded) a few times: a sign-in has just spent an argon2 hash, which costs far more.
fn make_room(open: &mut HashMap<[u8; 32], Stored>, operator: &Operator, table_max: usize) {
    let platform = operator.scope.platform();
    let (mut of_operator, mut of_scope, mut of_platform) = (0, 0, 0);
    for stored in open.values() {
        of_operator += usize::from(stored.operator == operator.id);
        of_scope += usize::from(stored.scope == operator.scope);
        of_platform += usize::from(platform.is_some() && stored.scope.platform() == platform);
    }
    if of_operator >= SESSIONS_PER_OPERATOR_MAX {
        let mut own: Vec<([u8; 32], i64)> = open.iter().filter(|(_, s)| s.operator == operator.id).map(|(k, s)| (*k, s.created_at)).collect();
        own.sort_by_key(|(_, created)| *created);
        for (key, _) in &own[..=own.len() - SESSIONS_PER_OPERATOR_MAX] {
            open.remove(key);
        }
    }
    if let Some(bound) = scope_sessions_max(&operator.scope).filter(|bound| of_scope >= *bound) {
        let mut scope: Vec<([u8; 32], i64)> = open.iter().filter(|(_, s)| s.scope == operator.scope).map(|(k, s)| (*k, s.last_seen)).collect();
        scope.sort_by_key(|(_, last_seen)| *last_seen);
        for (key, _) in scope.iter().take((scope.len() + 1).saturating_sub(bound)) {
            open.remove(key);
        }
    }
    if of_platform >= SESSIONS_PER_TENANT_MAX {
        while open.values().filter(|s| s.scope.platform() == platform).count() >= SESSIONS_PER_TENANT_MAX {
            let Some(victim) = longest_idle_of_the_largest_scope(open, platform) else { break };
            open.remove(&victim);
        }
    }
    while open.len() >= table_max {
        let Some(victim) = longest_idle_of_the_largest(open) else { break };
        open.remove(&victim);
    }
}

/// The longest idle session of the scope holding the most sessions within the tenant (a
/// platform, or the system) holding the most; ties go to the higher platform.
fn longest_idle_of_the_largest(open: &HashMap<[u8; 32], Stored>) -> Option<[u8; 32]> {
    let mut tenants: HashMap<Option<u32>, usize> = HashMap::new();
    for stored in open.values() {
        *tenants.entry(stored.scope.platform()).or_default() += 1;
    }
    let tenant = tenants.into_iter().max_by_key(|(tenant, count)| (*count, *tenant))?.0;
    longest_idle_of_the_largest_scope(open, tenant)
}

/// The longest idle session of the scope holding the most sessions within `tenant` (a
/// platform, or `None`: the system); ties go to a merchant, the higher first.
fn longest_idle_of_the_largest_scope(open: &HashMap<[u8; 32], Stored>, tenant: Option<u32>) -> Option<[u8; 32]> {
    let mut scopes: HashMap<Scope, usize> = HashMap::new();
    for stored in open.values().filter(|s| s.scope.platform() == tenant) {
        *scopes.entry(stored.scope).or_default() += 1;
    }
    let scope = scopes.into_iter().max_by_key(|(scope, count)| (*count, scope.member()))?.0;
    open.iter().filter(|(_, s)| s.scope == scope).min_by_key(|(_, s)| s.last_seen).map(|(key, _)| *key)
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

/// The client's address, for sessions, the audit log and the sign-in limit: the socket's peer,
/// or, when that is a trusted proxy (`[portal] trusted_proxies`), the rightmost
/// `X-Forwarded-For` entry that is not one (a client can write entries to the left of what its
/// proxies append, never to the right). An entry that is not an address ends the walk at the
/// last trusted hop. IPv4-mapped IPv6 addresses read as IPv4.
pub fn peer(request: &HttpRequest) -> String {
    let trusted = request.app_data::<web::Data<Arc<Portal>>>().map(|portal| portal.trusted_proxies.as_slice()).unwrap_or_default();
    let forwarded: Vec<&str> = request.headers().get_all("x-forwarded-for").filter_map(|value| value.to_str().ok()).collect();
    client_address(request.peer_addr().map(|address| address.ip()), &forwarded, trusted).map_or_else(|| "unknown".to_string(), |ip| ip.to_string())
}

/// `peer`'s walk over the socket's address and the `X-Forwarded-For` headers, in order.
fn client_address(socket: Option<IpAddr>, forwarded: &[&str], trusted: &[IpAddr]) -> Option<IpAddr> {
    let mut client = socket?.to_canonical();
    if !trusted.contains(&client) {
        return Some(client);
    }
    for entry in forwarded.iter().rev().flat_map(|header| header.rsplit(',')) {
        let Some(hop) = forwarded_address(entry.trim()) else { break };
        client = hop;
        if !trusted.contains(&hop) {
            break;
        }
    }
    Some(client)
}

/// An `X-Forwarded-For` entry's address: bare (`203.0.113.5`, `2001:db8::1`), with a port
/// (`203.0.113.5:4711`, as some balancers write it) or bracketed (`[2001:db8::1]:4711`);
/// IPv4-mapped IPv6 read as IPv4.
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|socket| socket.ip()))
        .or_else(|| entry.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')).and_then(|inner| inner.parse::<IpAddr>().ok()))?;
    Some(ip.to_canonical())
}

/// What failed sign-ins are counted by: an IPv4 address, or an IPv6 address's /64 (one
/// subscriber's block: counting each address would let one client rotate through it).
pub fn limit_key(address: &str) -> String {
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        _ => address.to_string(),
    }
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

/// The query a page's own timed refresh asks with (`meta http-equiv="refresh"` naming
/// `?{AUTO_REFRESH}`): such a request is not the operator's activity, so an open tab that
/// refreshes itself does not keep its session past the idle timeout.
pub const AUTO_REFRESH: &str = "auto=1";

/// Whether `request` is a page's own timed refresh (a GET whose query is [`AUTO_REFRESH`]).
fn is_auto_refresh(request: &HttpRequest) -> bool {
    request.method() == actix_web::http::Method::GET && request.query_string() == AUTO_REFRESH
}

fn session_of(request: &HttpRequest) -> Result<Session, PortalError> {
    let portal = request.app_data::<web::Data<Arc<Portal>>>().ok_or(PortalError::NotFound)?;
    let token = request.cookie(COOKIE).map(|cookie| cookie.value().to_string()).ok_or(PortalError::LoginNeeded)?;
    if token.len() != 64 {
        return Err(PortalError::LoginNeeded);
    }
    let activity = !is_auto_refresh(request);
    let (operator_id, generation, csrf, _) = portal.sessions.touch(&token, now_ms(), activity).ok_or(PortalError::LoginNeeded)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn operator(id: u64, scope: Scope) -> Operator {
        Operator::for_test(id, scope)
    }

    fn live(sessions: &Sessions, token: &str) -> bool {
        sessions.touch(token, now_ms(), true).is_some()
    }

    /// Opens sessions one millisecond apart (so that "longest idle" is one of them).
    struct Clock(i64);

    impl Clock {
        fn open(&mut self, sessions: &Sessions, operator: &Operator) -> String {
            self.0 += 1;
            sessions.open_at(operator, self.0)
        }
    }

    /// Merchants of one platform that sign in without end hold at most the platform's bound;
    /// every other platform's sessions stay, and the flooding platform's own operators' too.
    #[test]
    fn a_platform_whose_merchants_flood_the_table_ends_only_its_own_sessions() {
        let sessions = Sessions::new(SessionLimits::default());
        let mut clock = Clock(now_ms() - 60_000);
        let system = clock.open(&sessions, &operator(1, Scope::System));
        let other_platform = clock.open(&sessions, &operator(2, Scope::Platform { platform: 1 }));
        let other_merchant = clock.open(&sessions, &operator(3, Scope::Merchant { platform: 1, member: 10 }));
        let own_platform = clock.open(&sessions, &operator(4, Scope::Platform { platform: 3 }));
        let mut id = 100;
        for member in 0..(SESSIONS_PER_TENANT_MAX / SESSIONS_PER_MERCHANT_MAX + 5) as u64 {
            for _ in 0..SESSIONS_PER_MERCHANT_MAX / SESSIONS_PER_OPERATOR_MAX + 2 {
                id += 1;
                let flooder = operator(id, Scope::Merchant { platform: 3, member });
                for _ in 0..SESSIONS_PER_OPERATOR_MAX {
                    clock.open(&sessions, &flooder);
                }
            }
        }
        for (name, token) in
            [("system", &system), ("another platform", &other_platform), ("its merchant", &other_merchant), ("the platform's own", &own_platform)]
        {
            assert!(live(&sessions, token), "{name}'s session was ended");
        }
        let open = sessions.open.lock().unwrap();
        let of = |platform: u32| open.values().filter(|s| s.scope.platform() == Some(platform)).count();
        assert_eq!((of(3), of(1), open.len()), (SESSIONS_PER_TENANT_MAX, 2, SESSIONS_PER_TENANT_MAX + 3));
        assert!((0..30).all(|member| open.values().filter(|s| s.scope == Scope::Merchant { platform: 3, member }).count() <= SESSIONS_PER_MERCHANT_MAX));
    }

    /// A full table ends the longest idle session of the platform holding the most (a table of
    /// three platforms' bounds: the walks of 50,000 sign-ins take seconds).
    #[test]
    fn a_full_table_ends_a_session_of_the_platform_holding_the_most() {
        let table_max = 3 * SESSIONS_PER_TENANT_MAX;
        let sessions = Sessions { table_max, ..Sessions::new(SessionLimits::default()) };
        let mut clock = Clock(now_ms() - 600_000);
        let mut id = 0;
        let mut firsts = Vec::new();
        for platform in 0..(table_max / SESSIONS_PER_TENANT_MAX) as u32 {
            for member in 0..(SESSIONS_PER_TENANT_MAX / SESSIONS_PER_MERCHANT_MAX) as u64 {
                for _ in 0..SESSIONS_PER_MERCHANT_MAX / SESSIONS_PER_OPERATOR_MAX {
                    id += 1;
                    let someone = operator(id, Scope::Merchant { platform, member });
                    for _ in 0..SESSIONS_PER_OPERATOR_MAX {
                        let token = clock.open(&sessions, &someone);
                        // The first session of each platform's last merchant: the tie-breaks'
                        // choice within a platform.
                        if member + 1 == (SESSIONS_PER_TENANT_MAX / SESSIONS_PER_MERCHANT_MAX) as u64 && firsts.len() == platform as usize {
                            firsts.push(token);
                        }
                    }
                }
            }
        }
        assert_eq!(sessions.count(), table_max);
        let newcomer = clock.open(&sessions, &operator(id + 1, Scope::Platform { platform: 999 }));
        assert!(live(&sessions, &newcomer) && sessions.count() == table_max);
        // Every platform holds as many; ties go to the higher platform, whose longest idle ends.
        let last = firsts.len() - 1;
        assert!(!live(&sessions, &firsts[last]) && firsts[..last].iter().all(|token| live(&sessions, token)));
    }

    /// One merchant's operators together hold at most their bound; the longest idle ends first.
    #[test]
    fn a_merchants_sessions_are_bounded_together() {
        let sessions = Sessions::new(SessionLimits::default());
        let mut clock = Clock(now_ms() - 60_000);
        let scope = Scope::Merchant { platform: 7, member: 1 };
        let first = clock.open(&sessions, &operator(1, scope));
        let neighbour = clock.open(&sessions, &operator(2, Scope::Merchant { platform: 7, member: 2 }));
        let mut tokens = Vec::new();
        for id in 10..10 + (SESSIONS_PER_MERCHANT_MAX / SESSIONS_PER_OPERATOR_MAX) as u64 {
            for _ in 0..SESSIONS_PER_OPERATOR_MAX {
                tokens.push(clock.open(&sessions, &operator(id, scope)));
            }
        }
        assert!(!live(&sessions, &first), "the longest idle session of the merchant ends");
        assert!(live(&sessions, &neighbour) && tokens.iter().all(|token| live(&sessions, token)));
        assert_eq!(sessions.count(), SESSIONS_PER_MERCHANT_MAX + 1);
    }

    #[test]
    fn an_address_is_refused_at_its_limit_until_its_window_ends_and_the_table_stays_bounded() {
        let failures = AddressFailures::new(3);
        assert!(failures.allows("10.0.0.1", 100));
        assert_eq!((0..3).map(|_| failures.failed("10.0.0.1", 100)).collect::<Vec<_>>(), [false, false, true], "the limit reached once");
        assert!(!failures.allows("10.0.0.1", 100 + ADDRESS_WINDOW_SECONDS - 1));
        assert!(failures.allows("10.0.0.2", 100), "another address is not held");
        assert!(!failures.failed("10.0.0.1", 101), "past the limit: said once");
        assert!(failures.allows("10.0.0.1", 100 + ADDRESS_WINDOW_SECONDS), "a new window");
        assert!(!failures.failed("10.0.0.1", 100 + ADDRESS_WINDOW_SECONDS), "counted from nought again");
        let off = AddressFailures::new(0);
        assert!((0..10).all(|_| !off.failed("10.0.0.1", 0)) && off.allows("10.0.0.1", 0), "0: no limit");
        // Bounded: past `ADDRESSES_MAX` addresses, one is forgotten for each new one, never
        // one at its limit while another is below it.
        for _ in 0..3 {
            failures.failed("10.0.0.9", 200);
        }
        for n in 0..ADDRESSES_MAX as u32 + 10 {
            failures.failed(&n.to_string(), 200);
        }
        assert_eq!(failures.inner.lock().unwrap().counts.len(), ADDRESSES_MAX);
        assert!(!failures.allows("10.0.0.9", 201), "a refused address is not forgotten to make room");
    }

    #[test]
    fn the_client_is_the_rightmost_forwarded_address_past_the_trusted_proxies() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        let proxies = [ip("10.0.0.1"), ip("10.0.0.2")];
        let client = |socket: &str, forwarded: &[&str]| client_address(Some(ip(socket)), forwarded, &proxies).unwrap().to_string();
        assert_eq!(client("203.0.113.5", &["1.2.3.4"]), "203.0.113.5", "an untrusted peer's header is not believed");
        assert_eq!(client("10.0.0.1", &[]), "10.0.0.1", "a proxy that says nothing");
        assert_eq!(client("10.0.0.1", &["6.6.6.6, 203.0.113.5"]), "203.0.113.5", "what the client wrote itself is on the left");
        assert_eq!(client("10.0.0.1", &["6.6.6.6, 203.0.113.5, 10.0.0.2"]), "203.0.113.5", "through two proxies");
        assert_eq!(client("10.0.0.1", &["6.6.6.6", "203.0.113.5"]), "203.0.113.5", "two headers read in order");
        assert_eq!(client("10.0.0.1", &["203.0.113.5, garbage"]), "10.0.0.1", "garbage ends the walk at the last trusted hop");
        assert_eq!(client("10.0.0.1", &["203.0.113.5:4711"]), "203.0.113.5", "with a port");
        assert_eq!(client("10.0.0.1", &["[2001:db8::7]:4711"]), "2001:db8::7", "bracketed with a port");
        assert_eq!(client("10.0.0.1", &["[2001:db8::7]"]), "2001:db8::7", "bracketed");
        assert_eq!(client("10.0.0.1", &["10.0.0.2"]), "10.0.0.2", "proxies all the way");
        assert_eq!(client("::ffff:10.0.0.1", &["::ffff:203.0.113.5"]), "203.0.113.5", "IPv4-mapped reads as IPv4");
        assert_eq!(limit_key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(limit_key("203.0.113.5"), "203.0.113.5");
    }
}
