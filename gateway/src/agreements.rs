//! Electronic agreements (协议签约): versioned agreement templates per platform and members'
//! signatures of them. A platform publishes a template under a code (`account_opening`,
//! `card_binding`, `service`, ...); each publication is the code's next version (1, 2, ...) and
//! never changes an earlier one. A signature records the member, the code and version, when, the
//! client address, the SHA-256 of the exact text shown and the channel (`h5`, `api`, `portal`).
//! A platform may require the latest version of some codes to be signed before an account is
//! opened or a card bound (`agreement_required`).
//!
//! Stored as JSON records: templates under `a/t/{id}`, signatures under `a/s/{id}` (each written
//! with sync before it is answered), loaded at start.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use actix_web::{get, post, put, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use storage::Store;

use crate::error::{blocking, ApiError};
use crate::members::{Member, Members};
use crate::platforms::{AgreementRequirements, Platform, Platforms};
use crate::signed::Signed;

const TEMPLATE_PREFIX: &str = "a/t/";
const SIGNATURE_PREFIX: &str = "a/s/";
/// `am/{platform}{member}{signature id}` (empty): a member's signatures in id order.
const MEMBER_SIGNATURES_PREFIX: &[u8] = b"am/";
/// `ao/{platform}/{out_order_no}`: the id of the signature an API order number made.
const SIGNATURE_ORDER_PREFIX: &[u8] = b"ao/";
/// The highest signature id (u64, big-endian).
const HIGHEST_SIGNATURE: &[u8] = b"an/signature";
/// Written once the `am/`, `ao/` keys and `an/signature` exist: a database from before them
/// (session 54) has them built by one pass over its signatures at its first start.
const SIGNATURE_INDEX_BUILT: &[u8] = b"ai/signatures";
/// The longest template code, in bytes (`[a-z0-9_]`).
pub const CODE_BYTES_MAX: usize = 32;
/// The longest template title, in characters.
pub const TITLE_CHARS_MAX: usize = 128;
/// The longest template text, in characters (at most 4 bytes each).
pub const TEXT_CHARS_MAX: usize = 64 << 10;
/// Template versions one platform may publish in all (every code together).
pub const TEMPLATES_PER_PLATFORM_MAX: usize = 1_000;
/// Signatures one member may hold.
pub const SIGNATURES_PER_MEMBER_MAX: usize = 1_000;
/// Codes one requirement list may name.
pub const REQUIRED_CODES_MAX: usize = 16;

/// Where a signature was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// The member's H5 page.
    H5,
    /// The platform's signed API, on the member's behalf.
    Api,
    /// An operator portal.
    Portal,
}

/// What an agreement is required for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    OpenAccount,
    BindCard,
}

/// One version of an agreement template, as stored (never changed once published).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Template {
    pub id: u64,
    pub platform: u32,
    pub code: String,
    pub version: u32,
    pub title: String,
    pub text: String,
    /// Hex SHA-256 of `text`'s UTF-8 bytes.
    pub sha256: String,
    /// Unix seconds.
    pub published_at: i64,
    pub out_order_no: String,
    /// SHA-256 of the publishing request, to tell a replay from a conflicting reuse.
    pub content: String,
    /// The text's first 300 characters, with "…" when there is more: kept in the index, which
    /// keeps no text, for the pages that list versions (not stored).
    #[serde(skip)]
    pub excerpt: String,
}

/// Characters of a template's text its excerpt keeps.
pub const EXCERPT_CHARS: usize = 300;

impl Template {
    /// The API's view (with the text or without).
    pub fn view(&self, with_text: bool) -> serde_json::Value {
        let mut view = serde_json::json!({
            "code": self.code,
            "version": self.version,
            "title": self.title,
            "sha256": self.sha256,
            "published_at": rfc3339(self.published_at),
        });
        if with_text {
            view["text"] = serde_json::Value::String(self.text.clone());
        }
        view
    }
}

/// A member's signature of one template version, as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Signature {
    pub id: u64,
    pub platform: u32,
    pub member: u64,
    pub code: String,
    pub version: u32,
    /// The template's id.
    pub template: u64,
    /// Unix seconds.
    pub signed_at: i64,
    /// The address of the client that signed (the API caller's or the member's browser's).
    pub client_address: String,
    /// Hex SHA-256 of the exact text shown and signed.
    pub sha256: String,
    pub channel: Channel,
    /// The platform's order number of an API signature.
    #[serde(default)]
    pub out_order_no: Option<String>,
}

impl Signature {
    /// The id as the API shows it (`sig_3`).
    pub fn public_id(&self) -> String {
        format!("sig_{}", self.id)
    }

    /// The API's view; with `text`, the text as signed.
    pub fn view(&self, text: Option<&str>) -> serde_json::Value {
        let mut view = serde_json::json!({
            "signature_id": self.public_id(),
            "member_id": Member::public_id_of(self.member),
            "code": self.code,
            "version": self.version,
            "signed_at": rfc3339(self.signed_at),
            "client_address": self.client_address,
            "sha256": self.sha256,
            "channel": self.channel,
        });
        if let Some(text) = text {
            view["text"] = serde_json::Value::String(text.to_string());
        }
        view
    }
}

pub(crate) fn rfc3339(unix_seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_seconds).ok().and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()).unwrap_or_default()
}

/// Hex SHA-256 of a text's UTF-8 bytes.
pub fn text_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A template code: 1 to 32 of `[a-z0-9_]`.
pub fn valid_code(code: &str) -> bool {
    (1..=CODE_BYTES_MAX).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `POST /v1/agreement-templates`: publishes the code's next version.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    pub out_order_no: String,
    pub code: String,
    pub title: String,
    pub text: String,
}

/// What a signer asks to sign.
#[derive(Clone, Debug)]
pub struct SignRequest<'a> {
    pub code: &'a str,
    pub version: u32,
    pub channel: Channel,
    pub client_address: String,
    /// The SHA-256 of the text the signer was shown (the pages send it back; checked against
    /// the version's text). `None`: the version's text (the API shows it with the template).
    pub shown_sha256: Option<&'a str>,
    /// The platform's order number (API signatures).
    pub out_order_no: Option<&'a str>,
}

#[derive(Default)]
struct State {
    templates: BTreeMap<u64, Template>,
    /// (platform, code) -> template ids by version.
    versions: HashMap<(u32, String), BTreeMap<u32, u64>>,
    template_orders: HashMap<(u32, String), u64>,
    per_platform: HashMap<u32, usize>,
    highest_template: u64,
}

/// Every template (without its text) in memory, written through; signatures in the store only
/// (`a/s/{id}`, with `am/`, `ao/` and `an/signature` beside them), read where used.
pub struct Agreements {
    store: Arc<dyn Store>,
    /// The templates' index, read on the async workers (pages, the API): never held across
    /// a store read or write, so a publication or a signature waiting on the disk holds up no
    /// reader.
    state: RwLock<State>,
    /// Held by a publication from its checks to its insert (check, id, synced write, insert
    /// as one step among publications; on a blocking thread).
    publishing: Mutex<()>,
    /// The highest signature id, held by a signature from its checks to its synced write (on a
    /// blocking thread).
    signing: Mutex<u64>,
}

fn member_signature_key(platform: u32, member: u64, id: u64) -> [u8; 23] {
    let mut key = [0u8; 23];
    key[..3].copy_from_slice(MEMBER_SIGNATURES_PREFIX);
    key[3..7].copy_from_slice(&platform.to_be_bytes());
    key[7..15].copy_from_slice(&member.to_be_bytes());
    key[15..].copy_from_slice(&id.to_be_bytes());
    key
}

fn signature_order_key(platform: u32, out_order_no: &str) -> Vec<u8> {
    crate::records::order_key(SIGNATURE_ORDER_PREFIX, platform, out_order_no)
}

fn read_highest_signature(store: &dyn Store) -> Result<u64, String> {
    crate::records::read_u64(store, HIGHEST_SIGNATURE, "the highest signature id")
}

impl Agreements {
    /// Loads every stored template and signature.
    pub fn load(store: Arc<dyn Store>) -> Result<Agreements, String> {
        let mut state = State::default();
        for (_, template) in crate::records::load_all::<Template>(store.as_ref(), TEMPLATE_PREFIX.as_bytes())? {
            state.index_template(template);
        }
        if store.get(SIGNATURE_INDEX_BUILT).map_err(|e| e.to_string())?.is_none() {
            build_signature_index(store.as_ref())?;
        }
        let mut highest_signature = read_highest_signature(store.as_ref())?;
        // Signatures past the highest id: made by a binary from before these keys (a downgrade
        // and upgrade again). Built again, so no id is handed out twice.
        if store.get(&crate::records::key(SIGNATURE_PREFIX, highest_signature + 1)).map_err(|e| e.to_string())?.is_some() {
            build_signature_index(store.as_ref())?;
            highest_signature = read_highest_signature(store.as_ref())?;
        }
        Ok(Agreements { store, state: RwLock::new(state), publishing: Mutex::new(()), signing: Mutex::new(highest_signature) })
    }

    /// Publishes the next version of `body.code` for `platform` (or replays the publication its
    /// order number made): the template and whether it was a replay.
    pub fn publish(&self, platform: u32, body: &PublishBody, now: i64) -> Result<(Template, bool), ApiError> {
        crate::ids::out_order_no(&body.out_order_no, "out_order_no")?;
        let content = hex::encode(Sha256::digest(serde_json::to_vec(body).expect("bodies serialize")));
        let _publishing = self.publishing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let replayed = {
            let state = self.index();
            state.template_orders.get(&(platform, body.out_order_no.clone())).map(|id| state.templates[id].clone())
        };
        if let Some(template) = replayed {
            if template.content != content {
                return Err(ApiError::new(409, "idempotency_conflict", "this out_order_no was used with another body"));
            }
            return Ok((self.with_text(template)?, true));
        }
        if !valid_code(&body.code) {
            return Err(ApiError::invalid("code must be 1 to 32 characters [a-z0-9_]", "code"));
        }
        // The checks are of what the client sent (the document's maxLength and pattern).
        let title = body.title.trim();
        if !crate::plain_text(&body.title, false) || body.title.chars().count() > TITLE_CHARS_MAX {
            return Err(ApiError::invalid("title must be 1 to 128 characters, not all blank, without control characters", "title"));
        }
        if !crate::plain_text(&body.text, true) || body.text.chars().count() > TEXT_CHARS_MAX {
            return Err(ApiError::invalid("text must be 1 to 65536 characters, not all blank, without control characters but tabs and line breaks", "text"));
        }
        let (published, version, id) = {
            let state = self.index();
            let version = state.versions.get(&(platform, body.code.clone())).and_then(|v| v.keys().next_back()).map_or(1, |last| last + 1);
            (state.per_platform.get(&platform).copied().unwrap_or(0), version, state.highest_template + 1)
        };
        if published >= TEMPLATES_PER_PLATFORM_MAX {
            return Err(ApiError::new(422, "agreement_limit_reached", "this platform has published as many agreement versions as it may"));
        }
        let template = Template {
            id,
            platform,
            code: body.code.clone(),
            version,
            title: title.to_string(),
            text: body.text.clone(),
            sha256: text_hash(&body.text),
            published_at: now,
            out_order_no: body.out_order_no.clone(),
            content,
            excerpt: String::new(),
        };
        crate::records::put(self.store.as_ref(), &[(crate::records::key(TEMPLATE_PREFIX, template.id), &template)])?;
        self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner).index_template(template.clone());
        Ok((template, false))
    }

    /// The templates' index, for reading (never held across the store).
    fn index(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `templates` with their texts, read from the store (the index keeps none).
    pub fn with_texts(&self, mut templates: Vec<Template>) -> Result<Vec<Template>, ApiError> {
        let keys: Vec<Vec<u8>> = templates.iter().map(|t| crate::records::key(TEMPLATE_PREFIX, t.id)).collect();
        let borrowed: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let values = self.store.get_many(&borrowed).map_err(|e| ApiError::unavailable(e.to_string()))?;
        for (template, value) in templates.iter_mut().zip(values) {
            let stored: Template = value
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .ok_or_else(|| ApiError::unavailable(format!("agreement template {} does not read back", template.id)))?;
            template.text = stored.text;
        }
        Ok(templates)
    }

    /// `template` with its text, read from the store.
    pub fn with_text(&self, template: Template) -> Result<Template, ApiError> {
        self.with_texts(vec![template])?.pop().ok_or_else(|| ApiError::unavailable("an agreement template does not read back".into()))
    }

    /// Every template version of `platform`, by code then version (without texts:
    /// `with_texts`).
    pub fn templates(&self, platform: u32) -> Vec<Template> {
        let state = self.index();
        let mut found: Vec<Template> = state.templates.values().filter(|t| t.platform == platform).cloned().collect();
        found.sort_by(|a, b| (&a.code, a.version).cmp(&(&b.code, b.version)));
        found
    }

    /// Version `version` of `code` of `platform` (without its text: `with_text`).
    pub fn template(&self, platform: u32, code: &str, version: u32) -> Option<Template> {
        let state = self.index();
        state.versions.get(&(platform, code.to_string())).and_then(|v| v.get(&version)).map(|id| state.templates[id].clone())
    }

    /// The latest version of `code` of `platform` (without its text: `with_text`).
    pub fn latest(&self, platform: u32, code: &str) -> Option<Template> {
        let state = self.index();
        state.versions.get(&(platform, code.to_string())).and_then(|v| v.values().next_back()).map(|id| state.templates[id].clone())
    }

    /// Records `member`'s signature of a template version (or answers the signature they gave
    /// that version already): the signature and whether it existed.
    pub fn sign(&self, member: &Member, request: &SignRequest<'_>, now: i64) -> Result<(Signature, bool), ApiError> {
        let platform = member.platform;
        if let Some(number) = request.out_order_no {
            crate::ids::out_order_no(number, "out_order_no")?;
        }
        let mut highest_signature = self.signing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let order_key = request.out_order_no.map(|number| signature_order_key(platform, number));
        if let Some(key) = &order_key {
            if let Some(id) = self.store.get(key).map_err(ApiError::store)? {
                let id = id.as_slice().try_into().map(u64::from_be_bytes).map_err(|_| ApiError::corrupt("a signature order number"))?;
                let signature = self.read_signature(id)?.ok_or_else(|| ApiError::corrupt("an order number's signature (missing)"))?;
                if signature.platform != platform || signature.member != member.id || signature.code != request.code || signature.version != request.version {
                    return Err(ApiError::new(409, "idempotency_conflict", "this out_order_no was used with another body"));
                }
                return Ok((signature, true));
            }
        }
        let template = self.template(platform, request.code, request.version).ok_or(ApiError { param: Some("version".into()), ..ApiError::not_found() })?;
        if let Some(shown) = request.shown_sha256 {
            if !crate::auth::constant_time_equal(shown.as_bytes(), template.sha256.as_bytes()) {
                return Err(ApiError {
                    param: Some("sha256".into()),
                    ..ApiError::new(409, "agreement_changed", "the text shown is not this version's text; show it again and sign")
                });
            }
        }
        let held = self.signatures_of(platform, member.id)?;
        if let Some(existing) = held.iter().find(|s| s.code == template.code && s.version == template.version) {
            return Ok((existing.clone(), true));
        }
        if held.len() >= SIGNATURES_PER_MEMBER_MAX {
            return Err(ApiError::new(422, "agreement_limit_reached", "this member holds as many signatures as they may"));
        }
        if self.store.get(&crate::records::key(SIGNATURE_PREFIX, *highest_signature + 1)).map_err(ApiError::store)?.is_some() {
            // Made behind this process's back (a binary from before these keys, or a write that
            // failed yet reached the disk): the keys are built again, then the next id.
            build_signature_index(self.store.as_ref()).map_err(|e| ApiError::corrupt(&format!("the signatures' keys ({e})")))?;
            *highest_signature = read_highest_signature(self.store.as_ref()).map_err(|e| ApiError::corrupt(&format!("the highest signature id ({e})")))?;
        }
        let signature = Signature {
            id: *highest_signature + 1,
            platform,
            member: member.id,
            code: template.code.clone(),
            version: template.version,
            template: template.id,
            signed_at: now,
            client_address: request.client_address.chars().take(64).collect(),
            sha256: template.sha256.clone(),
            channel: request.channel,
            out_order_no: request.out_order_no.map(str::to_string),
        };
        let (record_key, record) = (crate::records::key(SIGNATURE_PREFIX, signature.id), serde_json::to_vec(&signature).expect("signatures serialize"));
        if self.store.get(&record_key).map_err(ApiError::store)?.is_some() {
            return Err(ApiError::corrupt(&format!("the highest signature id (signature {} exists)", signature.id)));
        }
        let (by_member, id_bytes) = (member_signature_key(platform, member.id, signature.id), signature.id.to_be_bytes());
        let mut puts: Vec<(&[u8], &[u8])> = vec![(&record_key, &record), (&by_member, b""), (HIGHEST_SIGNATURE, &id_bytes)];
        if let Some(key) = &order_key {
            puts.push((key, &id_bytes));
        }
        // One synced write: the signature, its place under its member, its order number and
        // the highest id together.
        self.store.write(&puts).map_err(ApiError::store)?;
        *highest_signature = signature.id;
        Ok((signature, false))
    }

    fn read_signature(&self, id: u64) -> Result<Option<Signature>, ApiError> {
        let value = self.store.get(&crate::records::key(SIGNATURE_PREFIX, id)).map_err(ApiError::store)?;
        value.map(|bytes| serde_json::from_slice(&bytes).map_err(|_| ApiError::corrupt("a stored signature"))).transpose()
    }

    /// Every signature of `member` of `platform`, oldest first: its `am/` keys, then one read of
    /// their records (at most `SIGNATURES_PER_MEMBER_MAX`).
    pub fn signatures_of(&self, platform: u32, member: u64) -> Result<Vec<Signature>, ApiError> {
        let mut keys = Vec::new();
        let (start, end) = (member_signature_key(platform, member, 0), member_signature_key(platform, member, u64::MAX));
        self.store
            .scan(&start, &end, &mut |key, _| {
                if let Some(id) = key.get(15..).and_then(|id| <[u8; 8]>::try_from(id).ok()) {
                    keys.push(crate::records::key(SIGNATURE_PREFIX, u64::from_be_bytes(id)));
                }
                true
            })
            .map_err(ApiError::store)?;
        let borrowed: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let mut found = Vec::with_capacity(keys.len());
        for value in self.store.get_many(&borrowed).map_err(ApiError::store)?.into_iter().flatten() {
            let signature: Signature = serde_json::from_slice(&value).map_err(|_| ApiError::corrupt("a stored signature"))?;
            if signature.platform == platform && signature.member == member {
                found.push(signature);
            }
        }
        Ok(found)
    }

    /// Signature `id` of `member` of `platform`, with the template version it signed.
    pub fn signature(&self, platform: u32, member: u64, id: u64) -> Result<Option<(Signature, Template)>, ApiError> {
        let Some(signature) = self.read_signature(id)?.filter(|s| s.platform == platform && s.member == member) else { return Ok(None) };
        let template = self.index().templates.get(&signature.template).cloned();
        let template = template.ok_or_else(|| ApiError::corrupt("a signature's template (missing)"))?;
        Ok(Some((signature, template)))
    }

    /// Refuses (422 `agreement_required`, naming the code) when `member` has not signed the
    /// latest version of every code `platform` requires for `purpose`.
    pub fn require(&self, platform: &Platform, member: u64, purpose: Purpose) -> Result<(), ApiError> {
        let codes = match purpose {
            Purpose::OpenAccount => &platform.agreement_requirements.open_account,
            Purpose::BindCard => &platform.agreement_requirements.bind_card,
        };
        if codes.is_empty() {
            return Ok(());
        }
        let held = self.signatures_of(platform.id, member)?;
        let state = self.index();
        for code in codes {
            let Some(latest) = state.versions.get(&(platform.id, code.clone())).and_then(|v| v.keys().next_back()) else { continue };
            if !held.iter().any(|s| &s.code == code && s.version == *latest) {
                return Err(ApiError {
                    param: Some(code.clone().into()),
                    ..ApiError::new(422, "agreement_required", &format!("the member must first sign version {latest} of the agreement {code}"))
                });
            }
        }
        Ok(())
    }

    /// Checks a requirement list: known codes (published by `platform`), at most 16, no repeats.
    fn check_codes(&self, platform: u32, codes: &[String], param: &'static str) -> Result<(), ApiError> {
        if codes.len() > REQUIRED_CODES_MAX {
            return Err(ApiError::invalid("at most 16 codes", param));
        }
        let state = self.index();
        let mut seen = HashSet::new();
        for code in codes {
            if !seen.insert(code) {
                return Err(ApiError::invalid("a code is named twice", param));
            }
            if !state.versions.contains_key(&(platform, code.clone())) {
                // A code that names nothing is a missing object, like an unknown id in a path.
                return Err(ApiError { param: Some(param.into()), ..ApiError::new(404, "not_found", "no agreement of this code is published") });
            }
        }
        Ok(())
    }
}

impl State {
    /// Indexes `template`, keeping everything but its text (up to 64 Ki characters a version,
    /// a thousand versions a platform: `Agreements::with_texts` reads texts from the store).
    fn index_template(&mut self, mut template: Template) {
        template.excerpt = template.text.chars().take(EXCERPT_CHARS).collect();
        if template.text.chars().nth(EXCERPT_CHARS).is_some() {
            template.excerpt.push('…');
        }
        template.text = String::new();
        self.highest_template = self.highest_template.max(template.id);
        self.versions.entry((template.platform, template.code.clone())).or_default().insert(template.version, template.id);
        self.template_orders.insert((template.platform, template.out_order_no.clone()), template.id);
        *self.per_platform.entry(template.platform).or_default() += 1;
        self.templates.insert(template.id, template);
    }
}

/// Builds the `am/`, `ao/` keys and `an/signature` of a database from before them: one pass
/// over the signatures, `records::CHUNK_RECORDS` at a time (the keys are idempotent), the highest id
/// and the marker written last, together (a start stopped before them builds it all again).
fn build_signature_index(store: &dyn Store) -> Result<(), String> {
    let mut highest = 0u64;
    let range = (SIGNATURE_PREFIX.as_bytes(), &b"a/s0"[..]);
    crate::records::for_each_chunk(
        store,
        range,
        "signature",
        |s: &Signature| crate::records::key(SIGNATURE_PREFIX, s.id),
        |chunk| {
            let mut rows: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(chunk.len() * 2);
            for signature in chunk {
                highest = highest.max(signature.id);
                rows.push((member_signature_key(signature.platform, signature.member, signature.id).to_vec(), Vec::new()));
                if let Some(number) = &signature.out_order_no {
                    rows.push((signature_order_key(signature.platform, number), signature.id.to_be_bytes().to_vec()));
                }
            }
            crate::records::write_rows(store, &rows)
        },
    )?;
    let highest = highest.to_be_bytes();
    store.write(&[(HIGHEST_SIGNATURE, &highest[..]), (SIGNATURE_INDEX_BUILT, b"1")]).map_err(|e| e.to_string())
}

/// The address of the client of `request` (the socket's peer; a proxy's forwarding headers are
/// not trusted).
pub fn client_address(request: &HttpRequest) -> String {
    request.peer_addr().map_or_else(|| "unknown".to_string(), |a| a.ip().to_string())
}

#[utoipa::path(post, path = "/v1/agreement-templates", tag = "agreements", request_body = crate::agreements::PublishBody, responses((status = 201, description = "The published version", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[post("/v1/agreement-templates")]
pub async fn publish(signed: Signed, agreements: web::Data<Arc<Agreements>>) -> Result<HttpResponse, ApiError> {
    let body = signed.json::<PublishBody>()?;
    let (platform, agreements) = (signed.platform.id, agreements.get_ref().clone());
    let (template, replayed) = blocking(move || agreements.publish(platform, &body, crate::signed::unix_seconds())).await??;
    let mut response = HttpResponse::Created();
    if replayed {
        response.insert_header(("Idempotent-Replay", "true"));
    }
    Ok(response.json(template.view(true)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateQuery {
    code: Option<String>,
}

#[utoipa::path(get, path = "/v1/agreement-templates", operation_id = "list_agreement_templates", tag = "agreements", params(("code" = Option<String>, Query, description = "Only this code")), responses((status = 200, description = "Every version (without texts)", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[get("/v1/agreement-templates")]
pub async fn list_templates(signed: Signed, query: web::Query<TemplateQuery>, agreements: web::Data<Arc<Agreements>>) -> Result<HttpResponse, ApiError> {
    if query.code.as_deref().is_some_and(|code| !valid_code(code)) {
        return Err(ApiError::invalid("code must be 1 to 32 characters [a-z0-9_]", "code"));
    }
    let views: Vec<serde_json::Value> =
        agreements.templates(signed.platform.id).iter().filter(|t| query.code.as_ref().is_none_or(|c| *c == t.code)).map(|t| t.view(false)).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({"templates": views})))
}

#[utoipa::path(get, path = "/v1/agreement-templates/{code}/versions/{version}", tag = "agreements", params(("code" = String, Path, description = "Template code"), ("version" = u32, Path, description = "Version (1, 2, ...)")), responses((status = 200, description = "The version with its text", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[get("/v1/agreement-templates/{code}/versions/{version}")]
pub async fn show_template(signed: Signed, path: web::Path<(String, String)>, agreements: web::Data<Arc<Agreements>>) -> Result<HttpResponse, ApiError> {
    let version: u32 = path.1.parse().map_err(|_| ApiError::not_found())?;
    let template = agreements.template(signed.platform.id, &path.0, version).ok_or_else(ApiError::not_found)?;
    let template = agreements.with_text(template)?;
    Ok(HttpResponse::Ok().json(template.view(true)))
}

/// `POST /v1/members/{member_id}/agreements`: the platform signs on the member's behalf.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignBody {
    pub out_order_no: String,
    pub code: String,
    pub version: u32,
}

fn member_of(members: &Members, platform: u32, text: &str) -> Result<Member, ApiError> {
    members.named(platform, text)?.ok_or_else(ApiError::not_found)
}

#[utoipa::path(post, path = "/v1/members/{member_id}/agreements", tag = "agreements", request_body = crate::agreements::SignBody, params(("member_id" = String, Path, description = "Member id (mem_...)")), responses((status = 201, description = "The signature", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[post("/v1/members/{member_id}/agreements")]
pub async fn sign(
    request: HttpRequest,
    signed: Signed,
    path: web::Path<String>,
    members: web::Data<Arc<Members>>,
    agreements: web::Data<Arc<Agreements>>,
) -> Result<HttpResponse, ApiError> {
    let body = signed.json::<SignBody>()?;
    let member = member_of(&members, signed.platform.id, &path)?;
    let (agreements, address) = (agreements.get_ref().clone(), client_address(&request));
    let (signature, replayed) = blocking(move || {
        let request = SignRequest {
            code: &body.code,
            version: body.version,
            channel: Channel::Api,
            client_address: address,
            shown_sha256: None,
            out_order_no: Some(&body.out_order_no),
        };
        agreements.sign(&member, &request, crate::signed::unix_seconds())
    })
    .await??;
    let mut response = HttpResponse::Created();
    if replayed {
        response.insert_header(("Idempotent-Replay", "true"));
    }
    Ok(response.json(signature.view(None)))
}

#[utoipa::path(get, path = "/v1/members/{member_id}/agreements", operation_id = "list_member_agreements", tag = "agreements", params(("member_id" = String, Path, description = "Member id (mem_...)")), responses((status = 200, description = "The member's signatures", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[get("/v1/members/{member_id}/agreements")]
pub async fn list_signatures(
    signed: Signed,
    path: web::Path<String>,
    members: web::Data<Arc<Members>>,
    agreements: web::Data<Arc<Agreements>>,
) -> Result<HttpResponse, ApiError> {
    let member = member_of(&members, signed.platform.id, &path)?;
    let views: Vec<serde_json::Value> = agreements.signatures_of(member.platform, member.id)?.iter().map(|s| s.view(None)).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({"agreements": views})))
}

#[utoipa::path(get, path = "/v1/members/{member_id}/agreements/{signature_id}", tag = "agreements", params(("member_id" = String, Path, description = "Member id (mem_...)"), ("signature_id" = String, Path, description = "Signature id (sig_...)")), responses((status = 200, description = "The signature with the text as signed", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[get("/v1/members/{member_id}/agreements/{signature_id}")]
pub async fn show_signature(
    signed: Signed,
    path: web::Path<(String, String)>,
    members: web::Data<Arc<Members>>,
    agreements: web::Data<Arc<Agreements>>,
) -> Result<HttpResponse, ApiError> {
    let member = member_of(&members, signed.platform.id, &path.0)?;
    let id = crate::ids::parse_prefixed(&path.1, "sig_").ok_or_else(ApiError::not_found)?;
    let (signature, template) = agreements.signature(member.platform, member.id, id)?.ok_or_else(ApiError::not_found)?;
    let template = agreements.with_text(template)?;
    let mut view = signature.view(Some(&template.text));
    view["title"] = serde_json::Value::String(template.title);
    Ok(HttpResponse::Ok().json(view))
}

/// `PUT /v1/agreement-requirements`: which codes must be signed (their latest version) before
/// an account is opened or a card bound.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequirementsBody {
    #[serde(default)]
    pub open_account: Vec<String>,
    #[serde(default)]
    pub bind_card: Vec<String>,
}

/// Sets `platform`'s requirements (the API and the portals share it): every code must be
/// published; the latest version of each must be signed from then on.
pub fn set_requirements(agreements: &Agreements, platforms: &Platforms, platform: u32, body: RequirementsBody) -> Result<Platform, ApiError> {
    agreements.check_codes(platform, &body.open_account, "open_account")?;
    agreements.check_codes(platform, &body.bind_card, "bind_card")?;
    platforms.set_agreement_requirements(platform, AgreementRequirements { open_account: body.open_account, bind_card: body.bind_card })
}

#[utoipa::path(put, path = "/v1/agreement-requirements", tag = "agreements", request_body = crate::agreements::RequirementsBody, responses((status = 200, description = "The requirements", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[put("/v1/agreement-requirements")]
pub async fn put_requirements(signed: Signed, agreements: web::Data<Arc<Agreements>>, platforms: web::Data<Arc<Platforms>>) -> Result<HttpResponse, ApiError> {
    let body = signed.json::<RequirementsBody>()?;
    let (agreements, platforms, platform) = (agreements.get_ref().clone(), platforms.get_ref().clone(), signed.platform.id);
    let platform = blocking(move || set_requirements(&agreements, &platforms, platform, body)).await??;
    Ok(HttpResponse::Ok().json(&platform.agreement_requirements))
}

#[utoipa::path(get, path = "/v1/agreement-requirements", tag = "agreements", responses((status = 200, description = "The requirements", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[get("/v1/agreement-requirements")]
pub async fn get_requirements(signed: Signed) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(&signed.platform.agreement_requirements))
}

/// Registers the agreement routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(publish)
        .service(list_templates)
        .service(show_template)
        .service(sign)
        .service(list_signatures)
        .service(show_signature)
        .service(put_requirements)
        .service(get_requirements);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, platform: u32) -> Member {
        Member {
            id,
            platform,
            kind: "individual".into(),
            name: "Li Lei".into(),
            id_number: "11010519491231002X".into(),
            phone: "13800138000".into(),
            status: "active".into(),
        }
    }

    /// A store whose writes wait until the test opens its gate (a disk that stalls).
    struct GatedStore {
        inner: storage::MemoryStore,
        gate: Mutex<bool>,
        opened: std::sync::Condvar,
    }

    impl GatedStore {
        fn wait(&self) {
            let mut open = self.gate.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
        }
        fn set(&self, open: bool) {
            *self.gate.lock().unwrap() = open;
            self.opened.notify_all();
        }
    }

    impl Store for GatedStore {
        fn write(&self, puts: &[(&[u8], &[u8])]) -> Result<(), storage::StorageError> {
            self.wait();
            self.inner.write(puts)
        }
        fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<(), storage::StorageError> {
            self.inner.delete_range(start, end)
        }
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, storage::StorageError> {
            self.inner.get(key)
        }
        fn scan(&self, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<(), storage::StorageError> {
            self.inner.scan(start, end, visit)
        }
        fn is_poisoned(&self) -> bool {
            false
        }
    }

    /// A signature or a publication waiting on a stalled disk holds up no reader of the
    /// templates (the pages and the API read them on the async workers): the index is never
    /// locked across the store.
    #[test]
    fn readers_of_the_templates_do_not_wait_for_a_write_on_the_disk() {
        let store = Arc::new(GatedStore { inner: storage::MemoryStore::new(), gate: Mutex::new(true), opened: std::sync::Condvar::new() });
        let agreements = Arc::new(Agreements::load(store.clone()).unwrap());
        agreements.publish(1, &body("t1", "service", "v1 text"), 10).unwrap();
        store.set(false);
        let (signing, publishing) = (agreements.clone(), agreements.clone());
        let signer = std::thread::spawn(move || signing.sign(&member(5, 1), &request("service", 1, None), 11).map(|(s, _)| s.id));
        let publisher = std::thread::spawn(move || publishing.publish(1, &body("t2", "privacy", "text"), 11).map(|(t, _)| t.version));
        std::thread::sleep(std::time::Duration::from_millis(50));
        // Both are waiting on the disk; the readers answer now (or the test fails, not hangs).
        assert!(!signer.is_finished() && !publisher.is_finished());
        let (reading, (answer, answered)) = (agreements.clone(), std::sync::mpsc::channel());
        std::thread::spawn(move || {
            let read = (reading.templates(1).len(), reading.latest(1, "service").map(|t| t.version), reading.template(1, "privacy", 1).is_none());
            let _ = answer.send(read);
        });
        let read = answered.recv_timeout(std::time::Duration::from_secs(5));
        store.set(true);
        assert_eq!(read.expect("the readers answered while the writes waited"), (1, Some(1), true), "privacy is not published before its write");
        assert_eq!(signer.join().unwrap().unwrap(), 1);
        assert_eq!(publisher.join().unwrap().unwrap(), 1);
        assert_eq!(agreements.templates(1).len(), 2);
    }

    fn body(number: &str, code: &str, text: &str) -> PublishBody {
        PublishBody { out_order_no: number.into(), code: code.into(), title: "Terms".into(), text: text.into() }
    }

    fn request<'a>(code: &'a str, version: u32, shown: Option<&'a str>) -> SignRequest<'a> {
        SignRequest { code, version, channel: Channel::H5, client_address: "127.0.0.1".into(), shown_sha256: shown, out_order_no: None }
    }

    #[test]
    fn versions_count_up_and_never_change_and_survive_a_restart() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let agreements = Agreements::load(store.clone()).unwrap();
        let (first, replayed) = agreements.publish(1, &body("t1", "service", "v1 text"), 10).unwrap();
        assert_eq!((first.version, replayed, first.sha256.as_str()), (1, false, text_hash("v1 text").as_str()));
        assert!(agreements.publish(1, &body("t1", "service", "v1 text"), 11).unwrap().1, "a replay");
        assert_eq!(agreements.publish(1, &body("t1", "service", "other"), 11).unwrap_err().code, "idempotency_conflict");
        let (second, _) = agreements.publish(1, &body("t2", "service", "v2 text"), 12).unwrap();
        assert_eq!(second.version, 2);
        assert_eq!(agreements.publish(2, &body("t1", "service", "x"), 12).unwrap().0.version, 1, "versions are per platform");
        let reloaded = Agreements::load(store).unwrap();
        assert_eq!(reloaded.with_text(reloaded.template(1, "service", 1).unwrap()).unwrap().text, "v1 text");
        assert!(reloaded.index().templates.values().all(|t| t.text.is_empty()), "no text held in memory");
        assert!(agreements.index().templates.values().all(|t| t.text.is_empty()), "nor after publishing");
        let replayed = agreements.publish(1, &body("t1", "service", "v1 text"), 11).unwrap().0;
        assert_eq!(replayed.text, "v1 text", "a replay answers with the text");
        let texts: Vec<String> = reloaded.with_texts(reloaded.templates(1)).unwrap().into_iter().map(|t| t.text).collect();
        assert_eq!(texts, ["v1 text", "v2 text"]);
        assert_eq!(reloaded.latest(1, "service").unwrap().version, 2);
        assert_eq!(reloaded.publish(1, &body("t3", "service", "v3"), 13).unwrap().0.version, 3);
    }

    #[test]
    fn publication_checks_table() {
        let agreements = Agreements::load(Arc::new(storage::MemoryStore::new())).unwrap();
        let long_text = "x".repeat(TEXT_CHARS_MAX + 1);
        let cases: &[(&str, &str, &str, &str)] = &[
            ("bad order no!", "service", "text", "out_order_no"),
            ("a1", "Service", "text", "code"),
            ("a2", "", "text", "code"),
            ("a3", &"c".repeat(33), "text", "code"),
            ("a4", "service", "  ", "text"),
            ("a5", "service", &long_text, "text"),
        ];
        for (number, code, text, param) in cases {
            let error = agreements.publish(1, &body(number, code, text), 1).unwrap_err();
            assert_eq!(error.param.as_deref(), Some(*param), "{number}");
        }
    }

    #[test]
    fn signing_records_the_hash_once_and_requirements_follow_the_latest_version() {
        let agreements = Agreements::load(Arc::new(storage::MemoryStore::new())).unwrap();
        let (v1, _) = agreements.publish(1, &body("t1", "account_opening", "open v1"), 1).unwrap();
        let li = member(5, 1);
        assert_eq!(agreements.sign(&li, &request("account_opening", 2, None), 2).unwrap_err().code, "not_found");
        assert_eq!(agreements.sign(&li, &request("account_opening", 1, Some("00")), 2).unwrap_err().code, "agreement_changed");
        let (signature, existed) = agreements.sign(&li, &request("account_opening", 1, Some(v1.sha256.as_str())), 2).unwrap();
        assert_eq!((signature.sha256.as_str(), existed), (text_hash("open v1").as_str(), false));
        assert!(agreements.sign(&li, &request("account_opening", 1, None), 3).unwrap().1, "signed once");
        assert_eq!(agreements.signatures_of(1, 5).unwrap().len(), 1);
        assert!(agreements.signature(2, 5, signature.id).unwrap().is_none(), "another platform's");
        let mut platform = Platform {
            id: 1,
            name: "p".into(),
            settlement_cycle_days: 1,
            auto_confirm_days: 15,
            require_payment_password: false,
            secret_version: 1,
            webhook_url: None,
            settlement_rule: None,
            previous_secret: None,
            suspended: false,
            agreement_requirements: AgreementRequirements { open_account: vec!["account_opening".into()], bind_card: vec![] },
            secret_rotated_by: None,
            created_as: None,
            created_at: None,
            created_by: None,
            webhook_secret_version: 1,
            previous_webhook_secret: None,
            previous_webhook_api_version: None,
        };
        assert!(agreements.require(&platform, 5, Purpose::OpenAccount).is_ok());
        assert!(agreements.require(&platform, 5, Purpose::BindCard).is_ok());
        let refused = agreements.require(&platform, 6, Purpose::OpenAccount).unwrap_err();
        assert_eq!((refused.status, refused.code, refused.param.as_deref()), (422, "agreement_required", Some("account_opening")));
        agreements.publish(1, &body("t2", "account_opening", "open v2"), 4).unwrap();
        assert_eq!(agreements.require(&platform, 5, Purpose::OpenAccount).unwrap_err().code, "agreement_required", "a new version is signed again");
        platform.agreement_requirements.open_account.clear();
        assert!(agreements.require(&platform, 6, Purpose::OpenAccount).is_ok());
    }

    fn signed(store: &Arc<dyn Store>, member: u64) -> Vec<(u64, String, u32)> {
        Agreements::load(store.clone()).unwrap().signatures_of(1, member).unwrap().into_iter().map(|s| (s.id, s.code, s.version)).collect()
    }

    /// Signatures live in the store: a member's are read from its own keys, API order numbers
    /// replay (or conflict) after a restart, ids go on from the highest.
    #[test]
    fn signatures_are_read_from_the_store_and_order_numbers_replay_after_a_restart() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let agreements = Agreements::load(store.clone()).unwrap();
        agreements.publish(1, &body("t1", "service", "service v1"), 1).unwrap();
        agreements.publish(1, &body("t2", "privacy", "privacy v1"), 1).unwrap();
        let numbered = |number| SignRequest { out_order_no: Some(number), ..request("service", 1, None) };
        let (first, existed) = agreements.sign(&member(5, 1), &numbered("s-1"), 2).unwrap();
        assert!(!existed);
        agreements.sign(&member(6, 1), &request("service", 1, None), 2).unwrap();
        agreements.sign(&member(5, 1), &request("privacy", 1, None), 3).unwrap();
        drop(agreements);
        let agreements = Agreements::load(store.clone()).unwrap();
        let (again, existed) = agreements.sign(&member(5, 1), &numbered("s-1"), 9).unwrap();
        assert_eq!((again.id, again.signed_at, existed), (first.id, 2, true));
        assert_eq!(agreements.sign(&member(6, 1), &numbered("s-1"), 9).unwrap_err().code, "idempotency_conflict", "another member");
        let privacy = SignRequest { out_order_no: Some("s-1"), ..request("privacy", 1, None) };
        assert_eq!(agreements.sign(&member(5, 1), &privacy, 9).unwrap_err().code, "idempotency_conflict", "another agreement");
        assert_eq!(signed(&store, 5), [(1, "service".to_string(), 1), (3, "privacy".to_string(), 1)]);
        assert_eq!(signed(&store, 6), [(2, "service".to_string(), 1)]);
        let (fourth, _) = agreements.sign(&member(7, 1), &request("privacy", 1, None), 4).unwrap();
        assert_eq!(fourth.id, 4);
        let (shown, template) = agreements.signature(1, 7, 4).unwrap().expect("found");
        assert_eq!((shown.member, template.code.as_str()), (7, "privacy"));
        assert!(agreements.signature(1, 5, 4).unwrap().is_none(), "another member's");
    }

    #[test]
    fn a_database_from_before_the_signature_index_has_it_built_once_at_its_first_start() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let agreements = Agreements::load(store.clone()).unwrap();
        agreements.publish(1, &body("t1", "service", "service v1"), 1).unwrap();
        for n in 1..=12u64 {
            let number = format!("s-{n}");
            let request = SignRequest { out_order_no: (n % 2 == 0).then_some(number.as_str()), ..request("service", 1, None) };
            agreements.sign(&member(n % 4 + 1, 1), &request, 2).ok();
        }
        // Members 1-4 signed once each (ids 1-4); take the store back to before the index.
        for (start, end) in [(&b"am/"[..], &b"am0"[..]), (b"ao/", b"ao0"), (b"an/", b"an0"), (b"ai/", b"ai0")] {
            store.delete_range(start, end).unwrap();
        }
        assert_eq!(signed(&store, 2), [(1, "service".to_string(), 1)]);
        assert_eq!(signed(&store, 1), [(4, "service".to_string(), 1)]);
        let agreements = Agreements::load(store.clone()).unwrap();
        let replay = SignRequest { out_order_no: Some("s-2"), ..request("service", 1, None) };
        assert_eq!(agreements.sign(&member(3, 1), &replay, 9).unwrap().0.id, 2, "s-2 made member 3's signature");
        agreements.publish(1, &body("t2", "privacy", "privacy v1"), 1).unwrap();
        assert_eq!(agreements.sign(&member(1, 1), &request("privacy", 1, None), 9).unwrap().0.id, 5);
        // A corrupt signature is a 500 where read, and stops the first start of an old database.
        store.write(&[(&crate::records::key(SIGNATURE_PREFIX, 1)[..], &b"{"[..])]).unwrap();
        assert_eq!(agreements.signatures_of(1, 2).err().map(|e| e.status), Some(500));
        store.delete_range(b"ai/", b"ai0").unwrap();
        assert!(Agreements::load(store).err().expect("refused").contains("corrupt"));
    }

    /// A signature a binary from before the index made after it was built (a downgrade) is
    /// found at the next start: its id is not handed out again, its member lists it.
    #[test]
    fn signatures_made_past_the_index_are_indexed_at_the_next_start() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let agreements = Agreements::load(store.clone()).unwrap();
        agreements.publish(1, &body("t1", "service", "service v1"), 1).unwrap();
        let (first, _) = agreements.sign(&member(5, 1), &request("service", 1, None), 2).unwrap();
        let old = Signature { id: first.id + 1, member: 6, out_order_no: Some("old-1".into()), ..first.clone() };
        crate::records::put(store.as_ref(), &[(crate::records::key(SIGNATURE_PREFIX, old.id), &old)]).unwrap();
        // This process does not know of it: it does not write over it, it finds it.
        assert_eq!(agreements.sign(&member(7, 1), &request("service", 1, None), 3).unwrap().0.id, 3);
        assert_eq!(signed(&store, 6), [(2, "service".to_string(), 1)]);
        let agreements = Agreements::load(store.clone()).unwrap();
        assert_eq!(agreements.sign(&member(8, 1), &request("service", 1, None), 3).unwrap().0.id, 4);
        let replay = SignRequest { out_order_no: Some("old-1"), ..request("service", 1, None) };
        assert_eq!(agreements.sign(&member(6, 1), &replay, 4).unwrap().0.id, 2);
    }
}
