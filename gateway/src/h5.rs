//! H5 sessions for members: a platform asks for a short-lived link (`POST /v1/h5/sessions`),
//! bound to one member and one purpose (`wallet`, `cashier`, `agreement`), and hands it to the
//! member's phone. The member's browser shows it (`GET /h5/s/{token}`: a page with one button,
//! nothing used up, so a chat app's preview leaves it) and opens it once with the button (`POST`
//! to the same address, same-origin only), getting a session cookie; the pages (`h5_wallet`, `h5_cashier`) then act for that member only. A platform never
//! sees card numbers or payment passwords: they are typed into our pages.
//!
//! Links and sessions are kept in memory only (a restart ends them: the platform asks for a new
//! link), each map bounded in all (`LINKS_MAX`, `SESSIONS_MAX`) and for each platform
//! (`LINKS_PER_PLATFORM_MAX`, `SESSIONS_PER_PLATFORM_MAX`: one platform filling its share leaves
//! the others theirs); expired entries are pruned when a bound is reached (at most once a
//! second), and a full map or share is 503 `overloaded`. Only SHA-256 hashes of link tokens and
//! session cookies are kept, so the maps hold nothing a thief could replay.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{get, post, web, HttpRequest, HttpResponse, HttpResponseBuilder};
use engine::ledger::types::AccountId;
use engine::Engine;
use maud::{html, Markup};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::h5_text::{page, t, Locale};
use crate::members::Members;
use crate::payments::{Funding, LegBody, Mode, PaymentBody};
use crate::signed::Signed;

/// The longest a link is valid (and the default).
pub const LINK_SECONDS_MAX: u64 = 300;
/// A session ends after this long without a request.
pub const IDLE_SECONDS: u64 = 600;
/// A session ends this long after its link was opened, however busy.
pub const SESSION_SECONDS_MAX: u64 = 3_600;
/// Links waiting to be opened, at most (a few kilobytes each at most: a cashier's payees).
pub const LINKS_MAX: usize = 30_000;
/// Open sessions, at most.
pub const SESSIONS_MAX: usize = 30_000;
/// Links of one platform waiting to be opened, at most: ten platforms at their share fill the
/// map.
pub const LINKS_PER_PLATFORM_MAX: usize = 3_000;
/// Open sessions of one platform, at most.
pub const SESSIONS_PER_PLATFORM_MAX: usize = 3_000;
/// The least time between two prunings of a full map (each walks it under its lock).
const PRUNE_GAP: Duration = Duration::from_secs(1);
/// The session cookie's name.
pub const COOKIE: &str = "h5_session";
/// The longest `return_url`, in bytes.
pub const RETURN_URL_BYTES_MAX: usize = 512;

/// What a session is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// My wallet: balances, entries, cards, recharge, withdraw, password, close, agreements.
    Wallet,
    /// Confirming one payment with the payment password.
    Cashier,
    /// Signing one agreement version.
    Agreement,
}

/// A payment the cashier shows and submits: `POST /v1/payments`'s body without the password.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CashierPayment {
    pub out_order_no: String,
    pub payer_account_id: String,
    pub mode: Mode,
    pub funding: Option<Funding>,
    pub channel: Option<String>,
    pub amount: String,
    pub currency: String,
    pub payees: Vec<LegBody>,
    #[serde(default)]
    pub splits: Vec<LegBody>,
    pub description: Option<String>,
}

impl CashierPayment {
    /// The payment's API body with the password the member typed.
    pub fn with_password(&self, password: Option<String>) -> PaymentBody {
        PaymentBody {
            out_order_no: self.out_order_no.clone(),
            payer_account_id: self.payer_account_id.clone(),
            mode: self.mode,
            funding: self.funding,
            channel: self.channel.clone(),
            amount: self.amount.clone(),
            currency: self.currency.clone(),
            payees: self.payees.clone(),
            splits: self.splits.clone(),
            payment_password: password,
            description: self.description.clone(),
        }
    }
}

/// The agreement version an `agreement` session signs.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgreementRef {
    pub code: String,
    pub version: u32,
}

/// `POST /v1/h5/sessions`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionBody {
    /// The platform's reference of this link (echoed back; each call makes a new link).
    pub out_order_no: Option<String>,
    pub member_id: String,
    pub purpose: Purpose,
    /// The account the pages act on (the wallet: the member's first account when absent).
    pub account_id: Option<String>,
    /// The payment a cashier session confirms (its payer must be the member's account).
    pub payment: Option<CashierPayment>,
    /// The version an agreement session signs.
    pub agreement: Option<AgreementRef>,
    /// Where the pages' "back to the platform" link goes (http or https).
    pub return_url: Option<String>,
    /// `zh-CN` or `en` (the browser's Accept-Language when absent).
    pub locale: Option<String>,
    /// How long the link may wait to be opened: 1 to 300 seconds (default 300).
    pub expires_in_seconds: Option<u64>,
}

/// What a link grants, and then its session.
#[derive(Clone, Debug)]
pub struct Grant {
    pub platform: u32,
    pub member: u64,
    pub purpose: Purpose,
    pub account: Option<AccountId>,
    pub payment: Option<CashierPayment>,
    pub agreement: Option<AgreementRef>,
    pub return_url: Option<String>,
    pub locale: Option<Locale>,
}

struct Link {
    grant: Grant,
    expires: Instant,
}

/// An open session (a copy is handed to each page).
#[derive(Clone, Debug)]
pub struct Session {
    pub grant: Grant,
    pub locale: Locale,
    /// The token every form of this session carries.
    pub csrf: String,
    /// A card the wallet unbinds once the card bound to replace it is verified.
    pub replacing: Option<u64>,
    /// The cashier's order once it was paid.
    pub paid_order: Option<String>,
    opened: Instant,
    last_seen: Instant,
}

/// Links and sessions, in memory.
#[derive(Default)]
pub struct H5Sessions {
    links: Mutex<Tokens<Link>>,
    sessions: Mutex<Tokens<Session>>,
    /// Identity tries of members, by platform: (wrong answers or tries in flight, since when).
    identity: Mutex<HashMap<u32, HashMap<u64, (u32, Instant)>>>,
}

/// Wrong identity answers (a card bind's holder and id number, a payment password reset's id
/// number and phone) a member may give in the H5 pages within `IDENTITY_WINDOW` before both are
/// refused for the rest of it: without a count, a stolen wallet session could try id numbers
/// until one matched (about a thousand candidates once birth date and region are known), then
/// bind its own card and withdraw.
pub const IDENTITY_FAILURES_MAX: u32 = 5;
const IDENTITY_WINDOW: Duration = Duration::from_secs(86_400);
/// Members of one platform whose answers are counted at once; past it, that platform's members
/// without a count are refused an identity check until the oldest windows end (fail closed,
/// within the platform: another platform's members are not touched).
const IDENTITY_MEMBERS_PER_PLATFORM_MAX: usize = 10_000;

/// What a bounded map of tokens needs of its entries.
trait Entry {
    fn platform(&self) -> u32;
    fn alive(&self, now: Instant) -> bool;
}

impl Entry for Link {
    fn platform(&self) -> u32 {
        self.grant.platform
    }
    fn alive(&self, now: Instant) -> bool {
        self.expires > now
    }
}

impl Entry for Session {
    fn platform(&self) -> u32 {
        self.grant.platform
    }
    fn alive(&self, now: Instant) -> bool {
        alive(self, now)
    }
}

/// Entries by the hash of their token, bounded in all and for each platform.
struct Tokens<V> {
    by_hash: HashMap<[u8; 32], V>,
    per_platform: HashMap<u32, usize>,
    pruned: Option<Instant>,
}

impl<V> Default for Tokens<V> {
    fn default() -> Self {
        Tokens { by_hash: HashMap::new(), per_platform: HashMap::new(), pruned: None }
    }
}

impl<V: Entry> Tokens<V> {
    fn len(&self) -> usize {
        self.by_hash.len()
    }

    fn of_platform(&self, platform: u32) -> usize {
        self.per_platform.get(&platform).copied().unwrap_or(0)
    }

    /// Adds `value` under `key` unless the map (`max`) or its platform's share (`share`) is
    /// full, pruning dead entries first when one is (at most once every `PRUNE_GAP`).
    fn insert(&mut self, key: [u8; 32], value: V, (max, share): (usize, usize), now: Instant, what: &str) -> Result<(), ApiError> {
        let platform = value.platform();
        let full = |tokens: &Self| tokens.len() >= max || tokens.of_platform(platform) >= share;
        if full(self) && self.pruned.is_none_or(|at| now.saturating_duration_since(at) >= PRUNE_GAP) {
            self.pruned = Some(now);
            let per_platform = &mut self.per_platform;
            self.by_hash.retain(|_, entry| {
                let keep = entry.alive(now);
                if !keep {
                    Self::uncount(per_platform, entry.platform());
                }
                keep
            });
        }
        if full(self) {
            return Err(ApiError::overloaded(&format!("too many H5 {what}; try again shortly")));
        }
        *self.per_platform.entry(platform).or_default() += 1;
        if let Some(replaced) = self.by_hash.insert(key, value) {
            Self::uncount(&mut self.per_platform, replaced.platform());
        }
        Ok(())
    }

    fn remove(&mut self, key: &[u8; 32]) -> Option<V> {
        let removed = self.by_hash.remove(key)?;
        Self::uncount(&mut self.per_platform, removed.platform());
        Some(removed)
    }

    fn uncount(per_platform: &mut HashMap<u32, usize>, platform: u32) {
        if let Some(count) = per_platform.get_mut(&platform) {
            *count -= 1;
            if *count == 0 {
                per_platform.remove(&platform);
            }
        }
    }
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A random token of `bytes` bytes, as hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buffer);
    hex::encode(buffer)
}

impl H5Sessions {
    /// No links, no sessions.
    pub fn new() -> H5Sessions {
        H5Sessions::default()
    }

    /// A new link's token (256 random bits) for `grant`, valid for `valid_for`.
    pub fn issue(&self, grant: Grant, valid_for: Duration, now: Instant) -> Result<String, ApiError> {
        let token = random_hex(32);
        let link = Link { grant, expires: now + valid_for };
        self.links.lock().expect("h5 links lock").insert(hash(&token), link, (LINKS_MAX, LINKS_PER_PLATFORM_MAX), now, "links wait to be opened")?;
        Ok(token)
    }

    /// Opens a link (once: it is gone afterwards, unless no session could be opened): the new
    /// session's cookie value and the session, or `None` for an unknown, used or expired link.
    pub fn open(&self, token: &str, browser: Locale, now: Instant) -> Result<Option<(String, Session)>, ApiError> {
        let link = self.links.lock().expect("h5 links lock").remove(&hash(token));
        let Some(link) = link.filter(|link| link.expires > now) else { return Ok(None) };
        let cookie = random_hex(32);
        let locale = link.grant.locale.unwrap_or(browser);
        let session = Session { grant: link.grant.clone(), locale, csrf: random_hex(16), replacing: None, paid_order: None, opened: now, last_seen: now };
        let bounds = (SESSIONS_MAX, SESSIONS_PER_PLATFORM_MAX);
        if let Err(error) = self.sessions.lock().expect("h5 sessions lock").insert(hash(&cookie), session.clone(), bounds, now, "sessions are open") {
            // No room for the session: the link stays, for the member to open once there is
            // (before session 58 it was used up by the refusal).
            let _ = self.links.lock().expect("h5 links lock").insert(hash(token), link, (LINKS_MAX, LINKS_PER_PLATFORM_MAX), now, "links wait to be opened");
            return Err(error);
        }
        Ok(Some((cookie, session)))
    }

    /// Takes one of `member`'s identity tries at `now`, before its answer is compared: `false`
    /// when none is left (`IDENTITY_FAILURES_MAX` wrong within the window) or its platform's
    /// counted members are at their bound. A try taken counts as wrong until `identity_passed`
    /// gives it back, so answers sent at once get no more tries than are left. Counts live in
    /// memory: a restart forgets them.
    pub fn identity_try(&self, platform: u32, member: u64, now: Instant) -> bool {
        let mut all = self.identity.lock().expect("h5 identity lock");
        let members = all.entry(platform).or_default();
        if !members.contains_key(&member) && members.len() >= IDENTITY_MEMBERS_PER_PLATFORM_MAX {
            members.retain(|_, (_, since)| now.saturating_duration_since(*since) < IDENTITY_WINDOW);
            if members.len() >= IDENTITY_MEMBERS_PER_PLATFORM_MAX {
                return false;
            }
        }
        let (tries, since) = members.entry(member).or_insert((0, now));
        if now.saturating_duration_since(*since) >= IDENTITY_WINDOW {
            (*tries, *since) = (0, now);
        }
        if *tries >= IDENTITY_FAILURES_MAX {
            return false;
        }
        *tries += 1;
        true
    }

    /// Gives back a try `identity_try` took: the answer was right, or never compared. A member
    /// left with no try counted is forgotten, so right answers take no room among the
    /// platform's counted members (each first payment password asks for them since session 59:
    /// a platform's day of new members would otherwise fill its bound).
    pub fn identity_passed(&self, platform: u32, member: u64) {
        let mut all = self.identity.lock().expect("h5 identity lock");
        if let Some(members) = all.get_mut(&platform) {
            if let Some((tries, _)) = members.get_mut(&member) {
                *tries = tries.saturating_sub(1);
                if *tries == 0 {
                    members.remove(&member);
                }
            }
        }
    }

    /// The platform of a link not opened yet (a look: the link stays).
    pub fn platform_of_link(&self, token: &str) -> Option<u32> {
        self.links.lock().expect("h5 links lock").by_hash.get(&hash(token)).map(|link| link.grant.platform)
    }

    /// Whether a link may still be opened at `now` (a look: nothing is used up), and the
    /// language its grant asks for.
    pub fn link_waiting(&self, token: &str, now: Instant) -> Option<Option<Locale>> {
        self.links.lock().expect("h5 links lock").by_hash.get(&hash(token)).filter(|link| link.expires > now).map(|link| link.grant.locale)
    }

    /// Whether a cookie value names a live session (a look, no copy: the handler reads the
    /// session itself with `get`).
    pub fn is_live(&self, cookie: &str, now: Instant) -> bool {
        self.sessions.lock().expect("h5 sessions lock").by_hash.get(&hash(cookie)).is_some_and(|session| alive(session, now))
    }

    /// The live session of a cookie value (its idle time starts again).
    pub fn get(&self, cookie: &str, now: Instant) -> Option<Session> {
        let mut sessions = self.sessions.lock().expect("h5 sessions lock");
        let key = hash(cookie);
        if !alive(sessions.by_hash.get(&key)?, now) {
            sessions.remove(&key);
            return None;
        }
        let session = sessions.by_hash.get_mut(&key)?;
        session.last_seen = now;
        Some(session.clone())
    }

    /// Changes the session of a cookie value.
    pub fn update(&self, cookie: &str, change: impl FnOnce(&mut Session)) {
        if let Some(session) = self.sessions.lock().expect("h5 sessions lock").by_hash.get_mut(&hash(cookie)) {
            change(session);
        }
    }

    /// Links waiting and sessions open (for tests and metrics).
    pub fn counts(&self) -> (usize, usize) {
        (self.links.lock().expect("h5 links lock").len(), self.sessions.lock().expect("h5 sessions lock").len())
    }
}

fn alive(session: &Session, now: Instant) -> bool {
    now.duration_since(session.last_seen) < Duration::from_secs(IDLE_SECONDS) && now.duration_since(session.opened) < Duration::from_secs(SESSION_SECONDS_MAX)
}

/// Checks a session request and makes its grant.
async fn grant(
    engine: &Arc<Engine>,
    members: &Members,
    agreements: &crate::agreements::Agreements,
    clearing: &clearing_actor::Clearing,
    platform: &crate::platforms::Platform,
    body: &SessionBody,
) -> Result<Grant, ApiError> {
    if let Some(number) = &body.out_order_no {
        crate::ids::out_order_no(number, "out_order_no")?;
    }
    let member = members.named(platform.id, &body.member_id)?.ok_or(ApiError { param: Some("member_id".into()), ..ApiError::not_found() })?;
    let account = match &body.account_id {
        Some(text) => Some(member_account(engine, platform.id, member.id, text, "account_id").await?),
        None => None,
    };
    let locale = body.locale.as_deref().map(|l| Locale::parse(l).ok_or_else(|| ApiError::invalid("locale is zh-CN or en", "locale"))).transpose()?;
    if let Some(url) = &body.return_url {
        let parsed = url::Url::parse(url).ok().filter(|u| (u.scheme() == "https" || u.scheme() == "http") && u.host().is_some());
        if url.len() > RETURN_URL_BYTES_MAX || parsed.is_none() {
            return Err(ApiError::invalid("return_url must be an http or https URL of at most 512 bytes", "return_url"));
        }
    }
    match body.purpose {
        Purpose::Wallet | Purpose::Agreement if body.payment.is_some() => return Err(ApiError::invalid("only a cashier session carries a payment", "payment")),
        Purpose::Wallet | Purpose::Cashier if body.agreement.is_some() => {
            return Err(ApiError::invalid("only an agreement session names an agreement", "agreement"))
        }
        Purpose::Cashier => {
            let payment = body.payment.as_ref().ok_or_else(|| ApiError::invalid("a cashier session needs the payment", "payment"))?;
            member_account(engine, platform.id, member.id, &payment.payer_account_id, "payment").await?;
            // Every check of the payment now, so the member is never shown one that cannot go.
            crate::payments::prepare_payment(engine, clearing, platform, &payment.with_password(None)).await?;
        }
        Purpose::Agreement => {
            let named = body.agreement.as_ref().ok_or_else(|| ApiError::invalid("an agreement session names the agreement", "agreement"))?;
            agreements.template(platform.id, &named.code, named.version).ok_or(ApiError { param: Some("agreement".into()), ..ApiError::not_found() })?;
        }
        Purpose::Wallet => {}
    }
    Ok(Grant {
        platform: platform.id,
        member: member.id,
        purpose: body.purpose,
        account,
        payment: body.payment.clone(),
        agreement: body.agreement.clone(),
        return_url: body.return_url.clone(),
        locale,
    })
}

/// The account named by `text` if it is `member`'s account of `platform` (404 naming `param`
/// otherwise: another member's account is as unknown as a missing one).
pub async fn member_account(engine: &Arc<Engine>, platform: u32, member: u64, text: &str, param: &'static str) -> Result<AccountId, ApiError> {
    let missing = || ApiError { param: Some(param.into()), ..ApiError::not_found() };
    let account = crate::accounts::parse_account_id(text).ok_or_else(missing)?;
    let (owner, _, _) = crate::accounts::account_of(engine, platform, account).await.map_err(|e| if e.status == 404 { missing() } else { e })?;
    if owner != member {
        return Err(missing());
    }
    Ok(account)
}

#[utoipa::path(post, path = "/v1/h5/sessions", tag = "h5", request_body = crate::h5::SessionBody, responses((status = 201, description = "The link (`url`, valid until `expires_at`, opened once)", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable, overloaded or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[post("/v1/h5/sessions")]
#[allow(clippy::too_many_arguments)]
pub async fn create_session(
    request: HttpRequest,
    signed: Signed,
    engine: web::Data<Arc<Engine>>,
    members: web::Data<Arc<Members>>,
    agreements: web::Data<Arc<crate::agreements::Agreements>>,
    clearing: web::Data<clearing_actor::Clearing>,
    sessions: web::Data<Arc<H5Sessions>>,
) -> Result<HttpResponse, ApiError> {
    let body = signed.json::<SessionBody>()?;
    let seconds = body.expires_in_seconds.unwrap_or(LINK_SECONDS_MAX);
    if !(1..=LINK_SECONDS_MAX).contains(&seconds) {
        return Err(ApiError::invalid("expires_in_seconds must be 1 to 300", "expires_in_seconds"));
    }
    let grant = grant(&engine, &members, &agreements, &clearing, &signed.platform, &body).await?;
    let token = sessions.issue(grant, Duration::from_secs(seconds), Instant::now())?;
    let info = request.connection_info();
    let url = format!("{}://{}/h5/s/{token}", info.scheme(), info.host());
    let expires_at = time::OffsetDateTime::now_utc() + Duration::from_secs(seconds);
    let expires_at = expires_at.replace_nanosecond(0).unwrap_or(expires_at).format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    Ok(HttpResponse::Created().json(serde_json::json!({
        "url": url,
        "expires_at": expires_at,
        "member_id": body.member_id,
        "purpose": body.purpose,
        "out_order_no": body.out_order_no,
    })))
}

/// An error page: status, stable code (shown to the member in their language).
#[derive(Debug)]
pub struct PageError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub locale: Locale,
    pub return_url: Option<String>,
}

impl PageError {
    /// A page error with no message of its own.
    pub fn new(status: u16, code: &'static str, locale: Locale) -> PageError {
        PageError { status, code, message: String::new(), locale, return_url: None }
    }

    /// An API error as a page.
    pub fn api(error: ApiError, locale: Locale) -> PageError {
        PageError { status: error.status, code: error.code, message: error.message, locale, return_url: None }
    }
}

impl std::fmt::Display for PageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.code)
    }
}

impl actix_web::ResponseError for PageError {
    fn status_code(&self) -> actix_web::http::StatusCode {
        actix_web::http::StatusCode::from_u16(self.status).unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let text = crate::h5_text::error_text(self.locale, self.code, &self.message);
        let body = html! {
            (crate::h5_text::notice("error", &text))
            p.muted { "code: " span.code { (self.code) } }
            @if matches!(self.code, "session_missing" | "link_invalid") { p { (t(self.locale, "reopen")) } }
            @if let Some(url) = &self.return_url { a.button.secondary href=(url) { (t(self.locale, "back_to_platform")) } }
        };
        respond(&mut HttpResponse::build(self.status_code()), page(self.locale, t(self.locale, "error"), body))
    }
}

/// Answers a page with the headers every H5 page has: not cached, no referrer, not framed, a
/// content policy allowing only our stylesheet and forms to ourselves.
pub fn respond(builder: &mut HttpResponseBuilder, markup: Markup) -> HttpResponse {
    builder
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ))
        .content_type("text/html; charset=utf-8")
        .body(markup.into_string())
}

/// A page answered 200.
pub fn ok_page(markup: Markup) -> HttpResponse {
    respond(&mut HttpResponse::Ok(), markup)
}

/// The browser's language (for pages before a session exists).
pub fn browser_locale(request: &HttpRequest) -> Locale {
    Locale::from_accept_language(request.headers().get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()))
}

/// The session cookie's value, if the request carries one.
pub fn cookie_of(request: &HttpRequest) -> Option<String> {
    request.headers().get_all(header::COOKIE).filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == COOKIE && value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit())).then(|| value.to_string())
    })
}

/// The largest form an H5 page posts (the longest is a few hundred bytes).
pub const FORM_BYTES_MAX: usize = 16 * 1024;

/// An H5 form's body, read only for a request with a live session (DESIGN.md invariant 12:
/// who asks before the body is read) and only up to `FORM_BYTES_MAX` (413 past it, from its
/// `Content-Length` before a byte of it is read), within the body timeout. A request without
/// a session gets an empty body unread: the handler's `session_for` answers it 401.
pub struct FormBody(web::Bytes);

impl std::ops::Deref for FormBody {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl actix_web::FromRequest for FormBody {
    type Error = PageError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<FormBody, PageError>>>>;

    fn from_request(request: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let request = request.clone();
        let payload = payload.take();
        Box::pin(async move {
            let locale = browser_locale(&request);
            let live = request
                .app_data::<web::Data<Arc<H5Sessions>>>()
                .zip(cookie_of(&request))
                .is_some_and(|(sessions, cookie)| sessions.is_live(&cookie, Instant::now()));
            if !live {
                return Ok(FormBody(web::Bytes::new()));
            }
            let too_large = || PageError { message: format!("a form is at most {FORM_BYTES_MAX} bytes"), ..PageError::new(413, "payload_too_large", locale) };
            let announced = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
            if announced.is_some_and(|length| length > FORM_BYTES_MAX as u64) {
                return Err(too_large());
            }
            let timeout = request.app_data::<web::Data<crate::signed::BodyLimits>>().map_or(Duration::from_secs(10), |limits| limits.timeout);
            match crate::signed::read_body(payload, FORM_BYTES_MAX, timeout).await {
                Ok(body) => Ok(FormBody(body)),
                Err(crate::signed::BodyError::Timeout) => Err(PageError::new(408, "request_timeout", locale)),
                Err(crate::signed::BodyError::TooLarge) => Err(too_large()),
                Err(crate::signed::BodyError::Read(error)) => {
                    Err(PageError { message: format!("reading the form: {error}"), ..PageError::new(400, "invalid_request", locale) })
                }
            }
        })
    }
}

/// A suspended platform's members' pages move no money and show nothing (as its signed
/// requests and its portals): 403 `platform_suspended`. Before session 58 its links and sessions
/// went on working (payments, recharges, withdrawals, card binds).
fn refuse_if_suspended(request: &HttpRequest, platform: u32, locale: Locale) -> Result<(), PageError> {
    let platforms = request.app_data::<web::Data<Arc<crate::platforms::Platforms>>>();
    match platforms.and_then(|platforms| platforms.get(platform)) {
        Some(found) if !found.suspended => Ok(()),
        _ => Err(PageError::new(403, "platform_suspended", locale)),
    }
}

/// The request's session (401 page without one, 403 when its purpose is not among `purposes`),
/// with its cookie value.
pub fn session_for(request: &HttpRequest, sessions: &H5Sessions, purposes: &[Purpose]) -> Result<(String, Session), PageError> {
    let locale = browser_locale(request);
    let cookie = cookie_of(request).ok_or_else(|| PageError::new(401, "session_missing", locale))?;
    let session = sessions.get(&cookie, Instant::now()).ok_or_else(|| PageError::new(401, "session_missing", locale))?;
    refuse_if_suspended(request, session.grant.platform, session.locale)?;
    if !purposes.contains(&session.grant.purpose) {
        return Err(PageError { return_url: session.grant.return_url.clone(), ..PageError::new(403, "wrong_purpose", session.locale) });
    }
    Ok((cookie, session))
}

/// A form body (`application/x-www-form-urlencoded`) as fields; the last of a repeated name wins.
pub struct Form(HashMap<String, String>);

impl Form {
    /// Parses a form body.
    pub fn parse(body: &[u8]) -> Form {
        Form(url::form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
    }

    /// A field's value, trimmed (`""` when absent).
    pub fn get(&self, name: &str) -> &str {
        self.0.get(name).map_or("", |v| v.trim())
    }
}

/// Reads a POSTed form and checks its CSRF token against the session's (403 page otherwise).
pub fn checked_form(body: &[u8], session: &Session) -> Result<Form, PageError> {
    let form = Form::parse(body);
    if !crate::auth::constant_time_equal(form.get("csrf").as_bytes(), session.csrf.as_bytes()) {
        return Err(PageError { return_url: session.grant.return_url.clone(), ..PageError::new(403, "csrf_failed", session.locale) });
    }
    Ok(form)
}

/// Random bytes of a form's order number (`form_order_no`), written as twice as many hex digits.
const FORM_ORDER_NO_BYTES: usize = 12;

/// A new order number for a form: the page that shows the form makes it, the POST uses it, so a
/// form submitted twice is one order (the engine's idempotency). `prefix` is `h5` and a letter.
pub fn form_order_no(prefix: &str) -> String {
    format!("{prefix}-{}", random_hex(FORM_ORDER_NO_BYTES))
}

/// The order number a member's form asked for, in the member's own part of the platform's
/// numbers: `u{member}-` before the form's `order`, which must be one `form_order_no` makes
/// (`h5`, a letter, a dash, 24 lowercase hex digits). A member who edits the form therefore
/// cannot take a number the platform's back end or another member uses (before session 58 a
/// member could use up numbers the platform would send later), only make one of its own.
pub fn members_order_no(form: &Form, session: &Session) -> Result<String, PageError> {
    let number = form.get("order").as_bytes();
    let made_here = number.len() == 4 + 2 * FORM_ORDER_NO_BYTES
        && number.starts_with(b"h5")
        && number[2].is_ascii_lowercase()
        && number[3] == b'-'
        && number[4..].iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
    if !made_here {
        return Err(PageError { return_url: session.grant.return_url.clone(), ..PageError::new(400, "invalid_request", session.locale) });
    }
    Ok(format!("u{}-{}", session.grant.member, form.get("order")))
}

/// Shows a link without using it up: a page whose one button opens it (`open_link`). Whatever
/// fetches a link first (a chat app's preview, a mail scanner) fetches this page and leaves the
/// link for the member, who taps the button (ARCHITECTURE Known limits of session 63: the
/// first GET used the link up). No script (the pages' policy allows none); the form posts to
/// the same address.
#[get("/h5/s/{token}")]
pub async fn show_link(request: HttpRequest, path: web::Path<String>, sessions: web::Data<Arc<H5Sessions>>) -> Result<HttpResponse, PageError> {
    let browser = browser_locale(&request);
    let token = path.into_inner();
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(PageError::new(404, "link_invalid", browser));
    }
    if let Some(platform) = sessions.platform_of_link(&token) {
        refuse_if_suspended(&request, platform, browser)?;
    }
    let locale = sessions.link_waiting(&token, Instant::now()).ok_or_else(|| PageError::new(404, "link_invalid", browser))?.unwrap_or(browser);
    let action = format!("/h5/s/{token}");
    let body = html! {
        (maud::DOCTYPE)
        html lang=(locale.tag()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex, nofollow";
                title { (t(locale, "open_link_title")) }
                link rel="stylesheet" href="/h5/assets/h5.css";
            }
            body {
                main {
                    h1 { (t(locale, "open_link_title")) }
                    p { (t(locale, "open_link_hint")) }
                    form method="post" action=(action) { button.button type="submit" { (t(locale, "confirm")) } }
                }
            }
        }
    };
    Ok(respond(&mut HttpResponse::Ok(), body))
}

/// Opens a link (its page's button): sets the session cookie (HttpOnly, SameSite=Strict, path
/// /h5) and sends the browser on to the page of the link's purpose with a same-origin refresh,
/// not a 3xx: a SameSite=Strict cookie set during a navigation that came from another site is
/// not sent on that navigation's redirects, but it is on a navigation the page itself starts.
/// The token leaves the address bar at once and no page after this one carries it.
#[post("/h5/s/{token}")]
pub async fn open_link(request: HttpRequest, path: web::Path<String>, sessions: web::Data<Arc<H5Sessions>>) -> Result<HttpResponse, PageError> {
    let locale = browser_locale(&request);
    let token = path.into_inner();
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(PageError::new(404, "link_invalid", locale));
    }
    // Only the link's own page opens it: another site's form posting someone's link would sign
    // the browser into that member's session (login CSRF; helper 115). A browser says where a
    // request comes from in `Sec-Fetch-Site`; one that does not (an old WebView) is let through,
    // as `Origin` cannot tell (the pages send no referrer, so their own posts say `null`).
    if request.headers().get("sec-fetch-site").is_some_and(|site| site.as_bytes() != b"same-origin") {
        return Err(PageError::new(403, "csrf_failed", locale));
    }
    // A suspended platform's link stays unused (for after its resumption) and opens no session.
    if let Some(platform) = sessions.platform_of_link(&token) {
        refuse_if_suspended(&request, platform, locale)?;
    }
    let (cookie, session) =
        sessions.open(&token, locale, Instant::now()).map_err(|e| PageError::api(e, locale))?.ok_or_else(|| PageError::new(404, "link_invalid", locale))?;
    let target = match session.grant.purpose {
        Purpose::Wallet => "/h5/wallet",
        Purpose::Cashier => "/h5/cashier",
        Purpose::Agreement => "/h5/agreement",
    };
    let refresh = format!("0;url={target}");
    let body = html! {
        (maud::DOCTYPE)
        html lang=(session.locale.tag()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content=(refresh);
                link rel="stylesheet" href="/h5/assets/h5.css";
            }
            body { main { a.button href=(target) { (t(session.locale, "confirm")) } } }
        }
    };
    // `Secure` by the portals' setting (`[portal] secure_cookies`; before session 58 the H5 cookie
    // never was): the cookie is a bearer credential of the member's wallet.
    let secure = request.app_data::<web::Data<Arc<crate::portal::Portal>>>().is_some_and(|portal| portal.sessions.limits().secure_cookies);
    let cookie = format!("{COOKIE}={cookie}; Path=/h5; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECONDS_MAX}{}", if secure { "; Secure" } else { "" });
    Ok(respond(HttpResponse::Ok().insert_header((header::SET_COOKIE, cookie)), body))
}

/// `GET /h5/assets/h5.css`: the pages' one stylesheet.
#[get("/h5/assets/h5.css")]
pub async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "public, max-age=3600")).content_type("text/css; charset=utf-8").body(crate::h5_text::CSS)
}

/// Registers the session API, the link and the stylesheet.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(create_session).service(show_link).service(open_link).service(stylesheet);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(purpose: Purpose) -> Grant {
        Grant { platform: 1, member: 2, purpose, account: None, payment: None, agreement: None, return_url: None, locale: None }
    }

    #[test]
    fn a_link_opens_once_before_it_expires_and_a_session_ends_when_idle() {
        let sessions = H5Sessions::new();
        let now = Instant::now();
        let token = sessions.issue(grant(Purpose::Wallet), Duration::from_secs(300), now).unwrap();
        assert_eq!(token.len(), 64);
        let (cookie, session) = sessions.open(&token, Locale::En, now).unwrap().expect("opens");
        assert_eq!((session.grant.member, session.grant.purpose), (2, Purpose::Wallet));
        assert!(sessions.open(&token, Locale::En, now).unwrap().is_none(), "once only");
        assert!(sessions.get(&cookie, now + Duration::from_secs(IDLE_SECONDS - 1)).is_some());
        assert!(sessions.get(&cookie, now + Duration::from_secs(2 * IDLE_SECONDS - 2)).is_some(), "each request starts the idle time again");
        assert!(sessions.get(&cookie, now + Duration::from_secs(4 * IDLE_SECONDS)).is_none(), "idle too long");
        assert!(sessions.get(&cookie, now).is_none(), "ended for good");
        let late = sessions.issue(grant(Purpose::Cashier), Duration::from_secs(1), now).unwrap();
        assert!(sessions.open(&late, Locale::En, now + Duration::from_secs(1)).unwrap().is_none(), "expired");
        assert!(sessions.open(&"0".repeat(64), Locale::En, now).unwrap().is_none(), "unknown");
    }

    #[test]
    fn the_maps_are_bounded_in_all_and_for_each_platform_and_pruned() {
        let sessions = H5Sessions::new();
        let now = Instant::now();
        let of = |platform: u32| Grant { platform, ..grant(Purpose::Wallet) };
        for _ in 0..LINKS_PER_PLATFORM_MAX {
            sessions.issue(of(1), Duration::from_secs(1), now).unwrap();
        }
        // Platform 1's share is full; platform 2 still gets links.
        assert_eq!(sessions.issue(of(1), Duration::from_secs(1), now).unwrap_err().code, "overloaded");
        let token = sessions.issue(of(2), Duration::from_secs(300), now).unwrap();
        // Sessions have their own shares: platform 2's link opens.
        assert!(sessions.open(&token, Locale::En, now).unwrap().is_some());
        // Pruning at most once a second: platform 1's expired links are dropped at the next one.
        let later = now + Duration::from_secs(2);
        let fresh = sessions.issue(of(1), Duration::from_secs(1), later).unwrap();
        assert_eq!(sessions.counts(), (1, 1), "platform 1's expired links pruned (platform 2's opened)");
        assert!(sessions.open(&fresh, Locale::En, later).unwrap().is_some());
        // The whole map's bound: shares of many platforms fill it.
        let platforms = (LINKS_MAX / LINKS_PER_PLATFORM_MAX) as u32;
        for platform in 10..10 + platforms {
            for _ in 0..LINKS_PER_PLATFORM_MAX {
                sessions.issue(of(platform), Duration::from_secs(60), later).unwrap();
            }
        }
        assert_eq!(sessions.issue(of(3), Duration::from_secs(1), later).unwrap_err().code, "overloaded");
        assert_eq!(sessions.counts().0, LINKS_MAX);
        // Opened links leave their platform's count.
        let links = sessions.links.lock().unwrap();
        assert_eq!(links.of_platform(10), LINKS_PER_PLATFORM_MAX);
        assert_eq!(links.of_platform(1) + links.of_platform(2), 0);
    }

    /// A link that finds no room for its session is kept, and opens once there is room.
    #[test]
    fn a_link_refused_for_want_of_room_opens_later() {
        let sessions = H5Sessions::new();
        let now = Instant::now();
        let of = |platform: u32| Grant { platform, ..grant(Purpose::Wallet) };
        for _ in 0..SESSIONS_PER_PLATFORM_MAX {
            let token = sessions.issue(of(5), Duration::from_secs(60), now).unwrap();
            sessions.open(&token, Locale::En, now).unwrap().expect("room for it");
        }
        let token = sessions.issue(of(5), Duration::from_secs(3_600), now).unwrap();
        assert_eq!(sessions.open(&token, Locale::En, now).unwrap_err().code, "overloaded");
        let later = now + Duration::from_secs(IDLE_SECONDS + 2);
        assert!(sessions.open(&token, Locale::En, later).unwrap().is_some(), "the link was kept");
    }

    /// Five wrong identity answers close a member's identity checks for a day, not another's;
    /// a right answer gives its try back.
    #[test]
    fn wrong_identity_answers_are_counted_for_a_day() {
        let sessions = H5Sessions::new();
        let now = Instant::now();
        assert!(sessions.identity_try(1, 7, now));
        sessions.identity_passed(1, 7);
        for _ in 0..IDENTITY_FAILURES_MAX {
            assert!(sessions.identity_try(1, 7, now));
        }
        assert!(!sessions.identity_try(1, 7, now + Duration::from_secs(3_600)));
        assert!(sessions.identity_try(1, 8, now) && sessions.identity_try(2, 7, now), "another member, another platform");
        assert!(sessions.identity_try(1, 7, now + IDENTITY_WINDOW), "a new window counts from one");
    }

    /// A platform's counted members are bounded; past the bound its uncounted members are
    /// refused (not let through uncounted), and another platform's are not touched.
    #[test]
    fn identity_counts_are_bounded_per_platform_and_fail_closed() {
        let sessions = H5Sessions::new();
        let now = Instant::now();
        for member in 0..IDENTITY_MEMBERS_PER_PLATFORM_MAX as u64 {
            assert!(sessions.identity_try(1, member, now));
        }
        assert!(!sessions.identity_try(1, u64::MAX, now), "full: refused");
        // A right answer gives its try back and its room: a full platform takes a new member
        // once one counted answered right.
        sessions.identity_passed(1, 3);
        assert!(sessions.identity_try(1, u64::MAX, now), "room again");
        assert!(!sessions.identity_try(1, u64::MAX - 1, now), "full again");
        assert!(sessions.identity_try(1, 0, now), "a counted member goes on");
        assert!(sessions.identity_try(2, u64::MAX, now), "another platform");
        assert!(sessions.identity_try(1, u64::MAX, now + IDENTITY_WINDOW), "the old windows end");
    }

    #[test]
    fn cookies_and_forms_table() {
        let value = "a".repeat(64);
        let cases: &[(&str, Option<&str>)] = &[
            ("h5_session=aaaa", None),
            ("other=1; h5_session=AAAA", None),
            ("h5_session=zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", None),
            ("", None),
        ];
        for (header, expected) in cases {
            let request = actix_web::test::TestRequest::default().insert_header((header::COOKIE, *header)).to_http_request();
            assert_eq!(cookie_of(&request).as_deref(), *expected, "{header}");
        }
        let request = actix_web::test::TestRequest::default().insert_header((header::COOKIE, format!("x=1; h5_session={value}"))).to_http_request();
        assert_eq!(cookie_of(&request), Some(value));
        let form = Form::parse(b"csrf=ab&amount=+1.00&name=%E6%9D%8E");
        assert_eq!((form.get("csrf"), form.get("amount"), form.get("name"), form.get("none")), ("ab", "1.00", "\u{674e}", ""));
    }
}
