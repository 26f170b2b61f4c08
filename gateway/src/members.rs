//! Members (individuals and enterprises) of a platform: validated, stored durably, created once
//! per platform order number (`POST /v1/members`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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

/// Members, kept in the store and read from it where used: memory holds only the highest id.
///
/// Keys: `u/{id}` the member (JSON), `g/members/{platform}/{out_order_no}` an accepted order
/// number, `up/{platform}{id}` (empty) a platform's members in id order, `uc/{platform}` how many
/// members the platform has (u64, big-endian). All four are written in one synced batch.
pub struct Members {
    store: Arc<dyn Store>,
    /// Serializes creation: order-number check, id, count and write happen as one step.
    creating: Mutex<()>,
    highest_id: AtomicU64,
}

const MEMBER_PREFIX: &[u8] = b"u/";
const MEMBER_PREFIX_END: &[u8] = b"u0";
const PLATFORM_INDEX_PREFIX: &[u8] = b"up/";
const COUNT_PREFIX: &[u8] = b"uc/";
/// Written once the `up/` index and `uc/` counts exist: a database from before them (session
/// 54) has them built by one pass over its members at its first start.
const INDEX_BUILT: &[u8] = b"ui/platform";
/// Members one read of a listing takes from the store at a time.
const LISTING_WINDOW: usize = 256;

fn member_key(id: u64) -> Vec<u8> {
    let mut key = MEMBER_PREFIX.to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn index_key(platform: u32, id: u64) -> [u8; 15] {
    let mut key = [0u8; 15];
    key[..3].copy_from_slice(PLATFORM_INDEX_PREFIX);
    key[3..7].copy_from_slice(&platform.to_be_bytes());
    key[7..].copy_from_slice(&id.to_be_bytes());
    key
}

/// Past every `up/{platform}{id}` key of `platform` (nine bytes of 0xff after the platform).
fn index_end(platform: u32) -> [u8; 16] {
    let mut key = [0xffu8; 16];
    key[..3].copy_from_slice(PLATFORM_INDEX_PREFIX);
    key[3..7].copy_from_slice(&platform.to_be_bytes());
    key
}

fn count_key(platform: u32) -> [u8; 7] {
    let mut key = [0u8; 7];
    key[..3].copy_from_slice(COUNT_PREFIX);
    key[3..].copy_from_slice(&platform.to_be_bytes());
    key
}

fn accepted_key(platform: u32, out_order_no: &str) -> Vec<u8> {
    crate::records::order_key(b"g/members/", platform, out_order_no)
}

fn valid_out_order_no(text: &str) -> bool {
    (1..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn decode_member(id: u64, value: &[u8]) -> Result<Member, ApiError> {
    serde_json::from_slice(value).map_err(|_| ApiError::corrupt(&format!("member record {id}")))
}

fn decode_count(value: Option<Vec<u8>>) -> Result<u64, ApiError> {
    match value {
        None => Ok(0),
        Some(bytes) => bytes.as_slice().try_into().map(u64::from_be_bytes).map_err(|_| ApiError::corrupt("a stored member count")),
    }
}

impl Members {
    /// Opens the members in `store`: finds the highest id (one backwards seek) and, on a
    /// database from before the per-platform index, builds it first.
    pub fn load(store: Arc<dyn Store>) -> Result<Members, String> {
        let highest = match store.last_key_in(MEMBER_PREFIX, MEMBER_PREFIX_END).map_err(|e| e.to_string())? {
            None => 0,
            Some(key) => key
                .get(MEMBER_PREFIX.len()..)
                .and_then(|id| <[u8; 8]>::try_from(id).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| format!("member key {} is not u/ and eight bytes", hex::encode(&key)))?,
        };
        let built = store.get(INDEX_BUILT).map_err(|e| e.to_string())?.is_some();
        // The newest member not in its platform's index: created by a binary from before the
        // index (a downgrade and upgrade again). Built again, so counts and listings hold it.
        let newest_unindexed = match store.get(&member_key(highest)).map_err(|e| e.to_string())? {
            Some(value) if built => {
                let member = decode_member(highest, &value).map_err(|e| e.message)?;
                store.get(&index_key(member.platform, highest)).map_err(|e| e.to_string())?.is_none()
            }
            _ => false,
        };
        if !built || newest_unindexed {
            build_index(store.as_ref())?;
        }
        Ok(Members { store, creating: Mutex::new(()), highest_id: AtomicU64::new(highest) })
    }

    /// Validates in the order of the fields and creates the member, or replays the first result.
    pub fn create(&self, platform: u32, request: NewMember) -> Result<Created, ApiError> {
        if !valid_out_order_no(&request.out_order_no) {
            return Err(ApiError::invalid("out_order_no must be 1 to 64 characters [A-Za-z0-9_-]", "out_order_no"));
        }
        // The content an order number stands for: the request as parsed (not its spacing).
        let content = hex::encode(Sha256::digest(serde_json::to_vec(&request).expect("requests serialize")));
        let key_accepted = accepted_key(platform, &request.out_order_no);
        let _creating = self.creating.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(value) = self.store.get(&key_accepted).map_err(ApiError::store)? {
            let accepted: Accepted = serde_json::from_slice(&value).map_err(|_| ApiError::corrupt("an accepted member order number"))?;
            if accepted.content != content {
                return Err(ApiError::new(409, "idempotency_conflict", "this out_order_no was used with another body"));
            }
            let member = self.read(accepted.member)?.ok_or_else(|| ApiError::corrupt("an accepted order number's member (missing)"))?;
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
        let mut id = self.highest_id.load(Ordering::Relaxed) + 1;
        if self.store.get(&member_key(id)).map_err(ApiError::store)?.is_some() {
            // Created behind this process's back (a binary from before the index, or a write
            // that failed yet reached the disk): the index and counts are built again, then the
            // next id after the newest member.
            build_index(self.store.as_ref()).map_err(|e| ApiError::corrupt(&format!("the members' index ({e})")))?;
            let newest = self.store.last_key_in(MEMBER_PREFIX, MEMBER_PREFIX_END).map_err(ApiError::store)?;
            id = newest.and_then(|key| key.get(MEMBER_PREFIX.len()..).and_then(|id| <[u8; 8]>::try_from(id).ok())).map_or(0, u64::from_be_bytes) + 1;
        }
        let count = decode_count(self.store.get(&count_key(platform)).map_err(ApiError::store)?)?;
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
        let key_member = member_key(id);
        let count_bytes = (count + 1).to_be_bytes();
        // One atomic, synced write: the member, its order number, its place in its platform's
        // listing and the platform's count together.
        self.store
            .write(&[(&key_member, &member_bytes), (&key_accepted, &accepted_bytes), (&index_key(platform, id), b""), (&count_key(platform), &count_bytes)])
            .map_err(ApiError::store)?;
        self.highest_id.store(id, Ordering::Relaxed);
        Ok(Created { member, replayed: false })
    }

    /// A page of `platform`'s members with ids above `after`, oldest first, whose name contains
    /// `filter` (case-insensitively) or whose id is `filter`; at most `limit`, examining at most
    /// `MEMBERS_SCAN_MAX` members. The second value is where the next page starts, if any. Reads
    /// the store (up to `MEMBERS_SCAN_MAX` records with a filter): call it off the HTTP workers.
    pub fn of_platform(&self, platform: u32, after: u64, filter: Option<&str>, limit: usize) -> Result<(Vec<Member>, Option<u64>), ApiError> {
        let needle = filter.map(str::to_lowercase);
        let wanted_id = filter.and_then(|f| Member::parse_public_id(f).or_else(|| f.parse().ok()));
        // Without a filter every member examined is shown: one more than the page tells whether
        // a next page exists.
        let window = if needle.is_none() { limit.saturating_add(1).min(LISTING_WINDOW) } else { LISTING_WINDOW };
        let mut found = Vec::new();
        let (mut last, mut scanned) = (after, 0usize);
        let Some(mut from) = after.checked_add(1) else { return Ok((found, None)) };
        let end = index_end(platform);
        loop {
            let mut ids = Vec::with_capacity(window);
            self.store
                .scan(&index_key(platform, from), &end, &mut |key, _| {
                    if let Some(id) = key.get(7..).and_then(|id| <[u8; 8]>::try_from(id).ok()) {
                        ids.push(u64::from_be_bytes(id));
                    }
                    ids.len() < window
                })
                .map_err(ApiError::store)?;
            let keys: Vec<Vec<u8>> = ids.iter().map(|id| member_key(*id)).collect();
            let borrowed: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            let records = self.store.get_many(&borrowed).map_err(ApiError::store)?;
            for (id, record) in ids.iter().zip(records) {
                if found.len() == limit || scanned == MEMBERS_SCAN_MAX {
                    return Ok((found, Some(last)));
                }
                scanned += 1;
                last = *id;
                let Some(record) = record else { continue };
                let member = decode_member(*id, &record)?;
                let keeps = member.platform == platform
                    && match &needle {
                        None => true,
                        Some(needle) => wanted_id == Some(member.id) || member.name.to_lowercase().contains(needle.as_str()),
                    };
                if keeps {
                    found.push(member);
                }
            }
            match last.checked_add(1) {
                Some(next) if ids.len() == window => from = next,
                _ => return Ok((found, None)),
            }
        }
    }

    /// How many members `platform` has (one read).
    pub fn count_of(&self, platform: u32) -> Result<u64, ApiError> {
        decode_count(self.store.get(&count_key(platform)).map_err(ApiError::store)?)
    }

    /// The member `id` if it belongs to `platform` (one read of the store).
    pub fn get(&self, platform: u32, id: u64) -> Result<Option<Member>, ApiError> {
        Ok(self.read(id)?.filter(|m| m.platform == platform))
    }

    /// The member an API id (`mem_N`) names if it belongs to `platform`; `None` for a text that
    /// is no member id.
    pub fn named(&self, platform: u32, text: &str) -> Result<Option<Member>, ApiError> {
        match Member::parse_public_id(text) {
            Some(id) => self.get(platform, id),
            None => Ok(None),
        }
    }

    fn read(&self, id: u64) -> Result<Option<Member>, ApiError> {
        self.store.get(&member_key(id)).map_err(ApiError::store)?.map(|value| decode_member(id, &value)).transpose()
    }
}

/// Builds the `up/` index and `uc/` counts of a database from before them: one pass over the
/// members, `records::CHUNK_RECORDS` at a time (the index rows are idempotent), the counts and the
/// marker written last, together (a start stopped before them builds it all again).
fn build_index(store: &dyn Store) -> Result<(), String> {
    let mut counts: HashMap<u32, u64> = HashMap::new();
    crate::records::for_each_chunk(
        store,
        (MEMBER_PREFIX, MEMBER_PREFIX_END),
        "member",
        |m: &Member| member_key(m.id),
        |chunk| {
            let keys: Vec<[u8; 15]> = chunk.iter().map(|m| index_key(m.platform, m.id)).collect();
            let puts: Vec<(&[u8], &[u8])> = keys.iter().map(|key| (key.as_slice(), &b""[..])).collect();
            if !puts.is_empty() {
                store.write(&puts).map_err(|e| e.to_string())?;
            }
            for member in chunk {
                *counts.entry(member.platform).or_default() += 1;
            }
            Ok(())
        },
    )?;
    let rows: Vec<([u8; 7], [u8; 8])> = counts.into_iter().map(|(platform, count)| (count_key(platform), count.to_be_bytes())).collect();
    let mut puts: Vec<(&[u8], &[u8])> = rows.iter().map(|(key, value)| (key.as_slice(), value.as_slice())).collect();
    puts.push((INDEX_BUILT, b"1"));
    store.write(&puts).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::MemoryStore;

    fn request(no: &str, name: &str) -> NewMember {
        NewMember {
            out_order_no: no.to_string(),
            kind: "individual".to_string(),
            name: name.to_string(),
            id_number: "11010519491231002X".to_string(),
            phone: "13800138000".to_string(),
        }
    }

    fn ids(page: &[Member]) -> Vec<u64> {
        page.iter().map(|m| m.id).collect()
    }

    /// Members of two platforms, interleaved: platform 1 gets ids 1, 3, 5, ...; platform 2 the even.
    fn interleaved(store: &Arc<MemoryStore>, each: u64) -> Members {
        let members = Members::load(store.clone()).unwrap();
        for n in 0..each {
            let name = if n % 10 == 0 { format!("Zhang {n}") } else { format!("Li {n}") };
            members.create(1, request(&format!("a-{n}"), &name)).unwrap();
            members.create(2, request(&format!("b-{n}"), &name)).unwrap();
        }
        members
    }

    #[test]
    fn members_live_in_the_store_and_are_found_after_a_restart() {
        let store = Arc::new(MemoryStore::new());
        let members = Members::load(store.clone()).unwrap();
        let first = members.create(7, request("m-1", "Zhang San")).unwrap();
        assert!(!first.replayed);
        assert_eq!(members.get(7, first.member.id).unwrap(), Some(first.member.clone()));
        assert_eq!(members.get(8, first.member.id).unwrap(), None, "another platform's member is not found");
        assert_eq!(members.named(7, &first.member.public_id()).unwrap(), Some(first.member.clone()));
        assert_eq!(members.named(7, "mem_x").unwrap(), None);
        drop(members);
        // A new process: the order number replays, the next id follows the highest stored one.
        let members = Members::load(store.clone()).unwrap();
        let again = members.create(7, request("m-1", "Zhang San")).unwrap();
        assert!(again.replayed);
        assert_eq!(again.member, first.member);
        let conflict = members.create(7, request("m-1", "Li Si")).err().expect("another body");
        assert_eq!((conflict.status, conflict.code), (409, "idempotency_conflict"));
        let second = members.create(7, request("m-2", "Li Si")).unwrap();
        assert_eq!(second.member.id, first.member.id + 1);
        assert_eq!((members.count_of(7).unwrap(), members.count_of(8).unwrap()), (2, 0));
    }

    #[test]
    fn a_platforms_listing_pages_through_the_store_in_windows() {
        let store = Arc::new(MemoryStore::new());
        let members = interleaved(&store, 700);
        assert_eq!((members.count_of(1).unwrap(), members.count_of(2).unwrap()), (700, 700));
        // Every page of platform 1, 50 at a time: its own members only, each once, in order.
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            let (page, next) = members.of_platform(1, after, None, 50).unwrap();
            assert!(page.iter().all(|m| m.platform == 1));
            seen.extend(ids(&page));
            match next {
                Some(next) => after = next,
                None => break,
            }
        }
        assert_eq!(seen, (0..700).map(|n| 2 * n + 1).collect::<Vec<_>>());
        // A page that ends exactly on the last member says there is no next page.
        let (page, next) = members.of_platform(2, 2 * 650, None, 50).unwrap();
        assert_eq!((page.len(), next), (50, None));
        // Larger than one window (256): read across windows.
        let (page, next) = members.of_platform(2, 0, None, 600).unwrap();
        assert_eq!(ids(&page), (1..=600).map(|n| 2 * n).collect::<Vec<_>>());
        assert_eq!(next, Some(1200));
        // A filter: names containing "zhang" (every tenth), by id, or nothing.
        let (page, next) = members.of_platform(1, 0, Some("ZHANG"), 30).unwrap();
        assert_eq!(ids(&page), (0..30).map(|n| 20 * n + 1).collect::<Vec<_>>());
        assert_eq!(next, Some(20 * 29 + 1));
        let (page, next) = members.of_platform(1, 0, Some("mem_41"), 50).unwrap();
        assert_eq!((ids(&page), next), (vec![41], None));
        let (page, _) = members.of_platform(1, 0, Some("mem_42"), 50).unwrap();
        assert!(page.is_empty(), "member 42 is platform 2's");
        assert_eq!(members.of_platform(1, u64::MAX, None, 50).unwrap(), (Vec::new(), None));
        assert_eq!(members.of_platform(3, 0, None, 50).unwrap(), (Vec::new(), None));
    }

    #[test]
    fn a_filtered_listing_examines_at_most_its_scan_limit() {
        let store = Arc::new(MemoryStore::new());
        let members = Members::load(store.clone()).unwrap();
        let count = MEMBERS_SCAN_MAX as u64 + 5;
        for n in 0..count {
            members.create(1, request(&format!("a-{n}"), if n + 1 == count { "Needle" } else { "Hay" })).unwrap();
        }
        let (page, next) = members.of_platform(1, 0, Some("needle"), 50).unwrap();
        assert_eq!((page.len(), next), (0, Some(MEMBERS_SCAN_MAX as u64)));
        let (page, next) = members.of_platform(1, MEMBERS_SCAN_MAX as u64, Some("needle"), 50).unwrap();
        assert_eq!((ids(&page), next), (vec![count], None));
    }

    #[test]
    fn a_database_from_before_the_index_has_it_built_once_at_its_first_start() {
        let store = Arc::new(MemoryStore::new());
        interleaved(&store, 40);
        // Take the database back to before session 54: no index, no counts, no marker.
        let mut removed = Vec::new();
        for (start, end) in [(&b"up/"[..], &b"up0"[..]), (b"uc/", b"uc0"), (b"ui/", b"ui0")] {
            store
                .scan(start, end, &mut |key, _| {
                    removed.push(key.to_vec());
                    true
                })
                .unwrap();
            store.delete_range(start, end).unwrap();
        }
        assert_eq!(removed.len(), 80 + 2 + 1);
        // A start stopped after part of the index was written builds it all again.
        store.write(&[(&index_key(1, 1)[..], &b""[..])]).unwrap();
        let members = Members::load(store.clone()).unwrap();
        assert_eq!((members.count_of(1).unwrap(), members.count_of(2).unwrap()), (40, 40));
        assert_eq!(ids(&members.of_platform(2, 0, None, 100).unwrap().0), (1..=40).map(|n| 2 * n).collect::<Vec<_>>());
        assert_eq!(members.create(1, request("a-new", "New")).unwrap().member.id, 81);
        assert_eq!(members.count_of(1).unwrap(), 41);
        // Built once: a later start keeps the counts as they are.
        drop(members);
        let members = Members::load(store.clone()).unwrap();
        assert_eq!(members.count_of(1).unwrap(), 41);
    }

    /// Members a binary from before the index created after it was built (a downgrade) are
    /// indexed and counted at the next start.
    #[test]
    fn members_created_past_the_index_are_indexed_at_the_next_start() {
        let store = Arc::new(MemoryStore::new());
        interleaved(&store, 3);
        let old = Member {
            id: 7,
            platform: 1,
            kind: "individual".into(),
            name: "Old".into(),
            id_number: "11010519491231002X".into(),
            phone: "13800138000".into(),
            status: "active".into(),
        };
        store.write(&[(&member_key(7)[..], &serde_json::to_vec(&old).unwrap()[..])]).unwrap();
        let members = Members::load(store.clone()).unwrap();
        assert_eq!((members.count_of(1).unwrap(), members.count_of(2).unwrap()), (4, 3));
        assert_eq!(ids(&members.of_platform(1, 0, None, 50).unwrap().0), [1, 3, 5, 7]);
        assert_eq!(members.create(2, request("b-new", "New")).unwrap().member.id, 8);
        // One created behind a running process's back is found, not written over.
        let old = Member { id: 9, ..old };
        store.write(&[(&member_key(9)[..], &serde_json::to_vec(&old).unwrap()[..])]).unwrap();
        assert_eq!(members.create(2, request("b-newer", "Newer")).unwrap().member.id, 10);
        assert_eq!((members.count_of(1).unwrap(), members.count_of(2).unwrap()), (5, 5));
    }

    #[test]
    fn a_corrupt_member_record_is_an_error_not_a_panic() {
        let store = Arc::new(MemoryStore::new());
        let members = Members::load(store.clone()).unwrap();
        let made = members.create(1, request("m-1", "Zhang San")).unwrap().member;
        store.write(&[(&member_key(made.id)[..], &b"{not json"[..])]).unwrap();
        assert_eq!(members.get(1, made.id).err().map(|e| (e.status, e.code)), Some((500, "internal_error")));
        assert_eq!(members.create(1, request("m-1", "Zhang San")).err().map(|e| e.status), Some(500));
        assert_eq!(members.of_platform(1, 0, None, 50).err().map(|e| e.status), Some(500));
        // At the first start of an old database, the index build refuses it.
        store.delete_range(b"ui/", b"ui0").unwrap();
        assert!(Members::load(store.clone()).err().expect("refused").contains("corrupt"));
    }

    #[test]
    fn a_failed_write_hands_out_no_id() {
        let store = Arc::new(MemoryStore::new());
        let members = Members::load(store.clone()).unwrap();
        members.create(1, request("m-1", "Zhang San")).unwrap();
        store.fail_after(0);
        assert_eq!(members.create(1, request("m-2", "Li Si")).err().map(|e| e.status), Some(503));
        assert_eq!(members.count_of(1).unwrap(), 1);
        assert_eq!(members.get(1, 2).unwrap(), None);
    }
}
