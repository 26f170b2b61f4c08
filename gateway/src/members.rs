//! Members (individuals and enterprises) of a platform: validated, stored durably, created once
//! per platform order number (`POST /v1/members`).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use storage::Store;

use crate::error::ApiError;
use crate::identity::{valid_credit_code, valid_phone, valid_resident_id};

/// The longest member name, in characters.
pub const NAME_CHARS_MAX: usize = 64;

/// The most members one listing page examines (`Members::of_platform`).
pub const MEMBERS_SCAN_MAX: usize = 10_000;

/// `POST /v1/members` body.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    pub out_order_no: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub id_number: String,
    pub phone: String,
}

/// A member as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    pub platform: u32,
    pub kind: String,
    pub name: String,
    pub id_number: String,
    pub phone: String,
    pub status: String,
}

impl Member {
    /// The id as the API shows it (`mem_12`).
    pub fn public_id(&self) -> String {
        Member::public_id_of(self.id)
    }

    /// The API id of member number `id`.
    pub fn public_id_of(id: u64) -> String {
        format!("mem_{id}")
    }

    /// Parses an API member id.
    pub fn parse_public_id(text: &str) -> Option<u64> {
        crate::ids::parse_prefixed(text, "mem_")
    }

    /// The API's view: `{member_id, type, name, status}`.
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({"member_id": self.public_id(), "type": self.kind, "name": self.name, "status": self.status})
    }
}

/// What an accepted order number maps to.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Accepted {
    content: String,
    member: u64,
}

/// The result of a create call: the member and whether this was a replay of an earlier request.
pub struct Created {
    pub member: Member,
    pub replayed: bool,
}

/// Every member, in memory, written through to the store.
pub struct Members {
    store: Arc<dyn Store>,
    by_id: RwLock<HashMap<u64, Member>>,
    /// (platform, member id) of every member: a platform's members in order, for the portal.
    by_platform: RwLock<BTreeSet<(u32, u64)>>,
    accepted: RwLock<HashMap<(u32, String), Accepted>>,
    /// Serializes creation: order-number check, id and write happen as one step.
    creating: Mutex<()>,
    highest_id: std::sync::atomic::AtomicU64,
}

fn member_key(id: u64) -> Vec<u8> {
    let mut key = b"u/".to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn accepted_key(platform: u32, out_order_no: &str) -> Vec<u8> {
    let mut key = b"g/members/".to_vec();
    key.extend_from_slice(&platform.to_be_bytes());
    key.push(b'/');
    key.extend_from_slice(out_order_no.as_bytes());
    key
}

fn valid_out_order_no(text: &str) -> bool {
    (1..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Members {
    /// Loads every stored member and accepted order number.
    pub fn load(store: Arc<dyn Store>) -> Result<Members, String> {
        let mut by_id = HashMap::new();
        let mut accepted = HashMap::new();
        let mut failure = None;
        store
            .scan(b"u/", b"u0", &mut |_, value| match serde_json::from_slice::<Member>(value) {
                Ok(member) => {
                    by_id.insert(member.id, member);
                    true
                }
                Err(error) => {
                    failure = Some(format!("member record: {error}"));
                    false
                }
            })
            .map_err(|e| e.to_string())?;
        store
            .scan(b"g/members/", b"g/members0", &mut |key, value| {
                let rest = &key[b"g/members/".len()..];
                let parsed = serde_json::from_slice::<Accepted>(value).ok().filter(|_| rest.len() > 5);
                match parsed {
                    Some(record) => {
                        let platform = u32::from_be_bytes(rest[..4].try_into().expect("four bytes"));
                        let number = String::from_utf8_lossy(&rest[5..]).into_owned();
                        accepted.insert((platform, number), record);
                        true
                    }
                    None => {
                        failure = Some("accepted member order record is corrupt".to_string());
                        false
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        match failure {
            Some(failure) => Err(failure),
            None => {
                let highest_id = std::sync::atomic::AtomicU64::new(by_id.keys().max().copied().unwrap_or(0));
                let by_platform = RwLock::new(by_id.values().map(|m: &Member| (m.platform, m.id)).collect());
                Ok(Members { store, by_id: RwLock::new(by_id), by_platform, accepted: RwLock::new(accepted), creating: Mutex::new(()), highest_id })
            }
        }
    }

    /// Validates in the order of the fields and creates the member, or replays the first result.
    pub fn create(&self, platform: u32, request: NewMember) -> Result<Created, ApiError> {
        if !valid_out_order_no(&request.out_order_no) {
            return Err(ApiError::invalid("out_order_no must be 1 to 64 characters [A-Za-z0-9_-]", "out_order_no"));
        }
        // The content an order number stands for: the request as parsed (not its spacing).
        let content = hex::encode(Sha256::digest(serde_json::to_vec(&request).expect("requests serialize")));
        let _creating = self.creating.lock().expect("member creation lock");
        if let Some(accepted) = self.accepted.read().expect("members lock").get(&(platform, request.out_order_no.clone())) {
            if accepted.content != content {
                return Err(ApiError::new(409, "idempotency_conflict", "this out_order_no was used with another body"));
            }
            let member = self.by_id.read().expect("members lock").get(&accepted.member).cloned().expect("accepted members exist");
            return Ok(Created { member, replayed: true });
        }
        let valid_number = match request.kind.as_str() {
            "individual" => valid_resident_id(&request.id_number),
            "enterprise" => valid_credit_code(&request.id_number),
            _ => return Err(ApiError::invalid("type must be \"individual\" or \"enterprise\"", "type")),
        };
        // The checks are of what the client sent (the document's maxLength and pattern).
        let name = request.name.trim();
        if !crate::plain_text(&request.name, false) || request.name.chars().count() > NAME_CHARS_MAX {
            return Err(ApiError::invalid("name must be 1 to 64 characters, not all blank, without control characters", "name"));
        }
        if !valid_number {
            let mut error = ApiError::new(400, "invalid_id_number", "id_number fails its check (GB 11643 for individuals, GB 32100 for enterprises)");
            error.param = Some("id_number".into());
            return Err(error);
        }
        if !valid_phone(&request.phone) {
            return Err(ApiError::invalid("phone must be a mainland mobile number of 11 digits", "phone"));
        }
        // Ids are handed out under the creation lock; the highest is kept, not searched for.
        let id = self.highest_id.load(std::sync::atomic::Ordering::Relaxed) + 1;
        self.highest_id.store(id, std::sync::atomic::Ordering::Relaxed);
        let member = Member {
            id,
            platform,
            kind: request.kind.clone(),
            name: name.to_string(),
            id_number: request.id_number.to_ascii_uppercase(),
            phone: request.phone.clone(),
            status: "active".to_string(),
        };
        let accepted = Accepted { content, member: id };
        let member_bytes = serde_json::to_vec(&member).expect("members serialize");
        let accepted_bytes = serde_json::to_vec(&accepted).expect("records serialize");
        let (key_member, key_accepted) = (member_key(id), accepted_key(platform, &request.out_order_no));
        // One atomic, synced write: the member and its order number together.
        self.store.write(&[(&key_member, &member_bytes), (&key_accepted, &accepted_bytes)]).map_err(|e| ApiError::unavailable(e.to_string()))?;
        self.by_id.write().expect("members lock").insert(id, member.clone());
        self.by_platform.write().expect("members lock").insert((platform, id));
        self.accepted.write().expect("members lock").insert((platform, request.out_order_no), accepted);
        Ok(Created { member, replayed: false })
    }

    /// A page of `platform`'s members with ids above `after`, oldest first, whose name contains
    /// `filter` (case-insensitively) or whose id is `filter`; at most `limit`, examining at most
    /// `MEMBERS_SCAN_MAX` members. The second value is where the next page starts, if any.
    pub fn of_platform(&self, platform: u32, after: u64, filter: Option<&str>, limit: usize) -> (Vec<Member>, Option<u64>) {
        let needle = filter.map(str::to_lowercase);
        let wanted_id = filter.and_then(|f| Member::parse_public_id(f).or_else(|| f.parse().ok()));
        let index = self.by_platform.read().expect("members lock");
        let by_id = self.by_id.read().expect("members lock");
        let mut found = Vec::new();
        let mut last = after;
        for (scanned, (_, id)) in index.range((platform, after.saturating_add(1))..=(platform, u64::MAX)).enumerate() {
            if found.len() == limit || scanned == MEMBERS_SCAN_MAX {
                return (found, Some(last));
            }
            last = *id;
            let Some(member) = by_id.get(id) else { continue };
            let keeps = match &needle {
                None => true,
                Some(needle) => wanted_id == Some(member.id) || member.name.to_lowercase().contains(needle.as_str()),
            };
            if keeps {
                found.push(member.clone());
            }
        }
        (found, None)
    }

    /// How many members `platform` has.
    pub fn count_of(&self, platform: u32) -> usize {
        self.by_platform.read().expect("members lock").range((platform, 0)..=(platform, u64::MAX)).count()
    }

    /// The member `id` if it belongs to `platform`.
    pub fn get(&self, platform: u32, id: u64) -> Option<Member> {
        self.by_id.read().expect("members lock").get(&id).filter(|m| m.platform == platform).cloned()
    }
}
