//! The router's claims: which shard holds each accepted order number, so that a reuse naming
//! other funds (and so another shard) is still a conflict. Claims of rejected commands are
//! released; claims of order numbers that went cold are forgotten (a cold row answers for them).
//!
//! Every order number of the shards' hot windows has a claim, and every command with an order
//! number looks one up: at hundreds of thousands of orders a second the lookups are cache misses
//! (the table is tens of MB). So each of its 64 stripes is a flat table (`ledger::flat`: linear
//! probing, slots of 24 bytes holding the whole key and the shard, slots chosen by a keyed mix),
//! and a caller that knows the next keys asks for their slots ahead (`Claims::prefetch`): the
//! misses of several keys overlap instead of coming one after another.

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::ledger::command::{idempotency_key, Command, Envelope};
use crate::ledger::flat::{prefetch_slot, Seed, Slot, Table};
use crate::ledger::types::ShardId;
use crate::result::ResultCode;

/// Independent locks: concurrent submitters (HTTP workers), the shards settling their replies and
/// the checkpoint threads forgetting cold claims rarely wait for each other.
const STRIPES: usize = 64;

/// A stripe: its table under a lock, and the table's slots and mask as plain atomics for
/// `Claims::prefetch`, which only hints the cache and so may read them without the lock (a
/// stale pair only makes a useless hint). Aligned so that stripes do not share cache lines.
#[repr(align(64))]
struct Stripe {
    table: Mutex<Table<ShardId>>,
    published: Published,
}

/// The table's address and mask, on a cache line of their own: `prefetch` reads them for every
/// key, and they change only when the table is resized, while the lock's line beside them
/// changes with every claim.
#[repr(align(64))]
struct Published {
    slots: AtomicPtr<Slot<ShardId>>,
    mask: AtomicUsize,
}

impl Stripe {
    fn new() -> Stripe {
        let mut table = Table::with_slots(0);
        let published = Published { slots: AtomicPtr::new(table.slots_ptr()), mask: AtomicUsize::new(table.mask()) };
        Stripe { table: Mutex::new(table), published }
    }
}

/// A stripe's table, locked; publishes the table's slots for `prefetch` when it is unlocked
/// after a resize.
struct Locked<'a> {
    table: MutexGuard<'a, Table<ShardId>>,
    stripe: &'a Stripe,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let (slots, published) = (self.table.slots_ptr(), &self.stripe.published);
        if published.slots.load(Ordering::Relaxed) != slots {
            published.slots.store(slots, Ordering::Relaxed);
            published.mask.store(self.table.mask(), Ordering::Relaxed);
        }
    }
}

pub(crate) enum Claim {
    New,
    Held,
    Conflict,
}

/// Which shard holds each accepted order number (see the module's documentation).
pub(crate) struct Claims {
    stripes: Box<[Stripe]>,
    seed: Seed,
}

impl Claims {
    pub(crate) fn new() -> Claims {
        Claims { stripes: (0..STRIPES).map(|_| Stripe::new()).collect(), seed: Seed::new() }
    }

    fn stripe(&self, key: u128) -> &Stripe {
        &self.stripes[(key as usize) % STRIPES]
    }

    fn lock(&self, key: u128) -> Locked<'_> {
        let stripe = self.stripe(key);
        Locked { table: stripe.table.lock().expect("claims lock"), stripe }
    }

    /// Asks the CPU for the cache lines of `key`'s first slot (`prefetch_slot`: a hint, it never
    /// faults and changes nothing), for a claim, hold or release of `key` a few keys later.
    /// (Asking for the slot after it too measured the same at 10 M.)
    pub(crate) fn prefetch(&self, key: u128) {
        let stripe = self.stripe(key);
        let (slots, mask) = (stripe.published.slots.load(Ordering::Relaxed), stripe.published.mask.load(Ordering::Relaxed));
        // An address outside the table (a stale pair while another thread resizes) is harmless.
        prefetch_slot(slots, mask, self.seed.home(key));
    }

    pub(crate) fn claim(&self, key: u128, shard: ShardId) -> Claim {
        let mut locked = self.lock(key);
        match locked.table.find(key, self.seed.home(key)) {
            Ok(index) if locked.table.value(index) == Some(&shard) => Claim::Held,
            Ok(_) => Claim::Conflict,
            Err(index) => {
                locked.table.put(index, key, shard, &self.seed);
                Claim::New
            }
        }
    }

    /// `key` is held by `shard`, whoever held it before.
    pub(crate) fn hold(&self, key: u128, shard: ShardId) {
        let mut locked = self.lock(key);
        match locked.table.find(key, self.seed.home(key)) {
            Ok(index) => {
                if let Some(holder) = locked.table.value_mut(index) {
                    *holder = shard;
                }
            }
            Err(index) => locked.table.put(index, key, shard, &self.seed),
        }
    }

    pub(crate) fn release(&self, key: u128) {
        let mut locked = self.lock(key);
        if let Ok(index) = locked.table.find(key, self.seed.home(key)) {
            locked.table.remove(index, &self.seed);
        }
    }

    /// Drops the claims of keys whose records are durable cold rows (a checkpoint evicted them),
    /// each key's slot asked for `PREFETCH_AHEAD` keys before. A claim made since by a request
    /// still in flight is dropped too; that request's shard still answers right (its own record,
    /// or another shard's row: a conflict).
    pub(crate) fn forget(&self, keys: &mut dyn Iterator<Item = u128>) {
        crate::each_prefetched(keys, |key| self.prefetch(key), |key| self.release(key));
    }

    /// How many order numbers are claimed.
    pub(crate) fn len(&self) -> usize {
        (0..STRIPES).map(|stripe| self.lock(stripe as u128).table.len()).sum()
    }

    /// Claims every order number `envelope` uses for `shard`: its own (`own`, its key computed
    /// by the caller with `own_key`, which may have asked for its slot ahead) and, for a batch
    /// payment, each order's (payment numbers, scoped like single payments, so a payer on
    /// another shard cannot reuse one). A conflict releases what this call claimed.
    pub(crate) fn claim_command(&self, envelope: &Envelope, own: Option<u128>, shard: ShardId) -> Result<Claimed, ResultCode> {
        let mut claimed = Claimed::default();
        if let Some(key) = own {
            claimed.own = Some(self.claim_one(key, shard, &claimed)?);
        }
        if let Command::BatchPayment { orders, .. } = &envelope.command {
            // Every order's key first, each slot asked for, then the claims in order: the slots'
            // misses overlap. An order not claimed yet counts as not made here.
            claimed.orders.reserve(orders.len());
            for order in orders {
                let key = idempotency_key(envelope.platform, Command::PAYMENT_SCOPE, &order.out_order_no);
                self.prefetch(key);
                claimed.orders.push((key, false));
            }
            for index in 0..claimed.orders.len() {
                let (key, _) = claimed.orders[index];
                claimed.orders[index] = self.claim_one(key, shard, &claimed)?;
            }
        }
        Ok(claimed)
    }

    fn claim_one(&self, key: u128, shard: ShardId, so_far: &Claimed) -> Result<(u128, bool), ResultCode> {
        match self.claim(key, shard) {
            Claim::New => Ok((key, true)),
            Claim::Held => Ok((key, false)),
            Claim::Conflict => {
                self.settle(so_far, false, false, shard);
                Err(ResultCode::IdempotencyConflict)
            }
        }
    }

    /// After the shard answered: a rejected command does not keep the numbers it claimed; an
    /// accepted one holds every number it names (another request may have made the claim, been
    /// rejected and released it). A replay keeps no claim it made and adds none: its record
    /// already exists, hot (its claim is held) or cold (its claim was forgotten on purpose, and
    /// another shard finds the row), so retries of old numbers cannot grow the claims again.
    pub(crate) fn settle(&self, claimed: &Claimed, accepted: bool, replayed: bool, shard: ShardId) {
        for (key, made_here) in claimed.own.iter().chain(claimed.orders.iter()) {
            match (made_here, accepted, replayed) {
                (true, false, _) | (true, true, true) => self.release(*key),
                (false, true, false) => self.hold(*key, shard),
                _ => {}
            }
        }
    }
}

/// The claims one command made (`true`) or found held by its shard (`false`). `orders` stays
/// empty (no allocation) for everything but batch payments.
#[derive(Default)]
pub(crate) struct Claimed {
    own: Option<(u128, bool)>,
    orders: Vec<(u128, bool)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The claims hold an entry per order number of the shards' hot windows.
    #[test]
    fn a_claim_takes_24_bytes_and_keeps_every_bit_of_its_key() {
        assert_eq!(std::mem::size_of::<Slot<ShardId>>(), 24);
        let claims = Claims::new();
        let (key, twin) = (0x0123_4567_89ab_cdef_0000_0000_0000_0001u128, 0x0000_0000_0000_0001u128);
        assert!(matches!(claims.claim(key, 1), Claim::New));
        // Same low word (so the same stripe), another high word: another order number.
        assert!(matches!(claims.claim(twin, 0), Claim::New));
        assert!(matches!(claims.claim(key, 0), Claim::Conflict));
        assert!(matches!(claims.claim(key, 1), Claim::Held));
        claims.release(key);
        assert!(matches!(claims.claim(key, 0), Claim::New));
        assert_eq!(claims.len(), 2);
        // A key of all zero bits is an order number like another, not an empty slot.
        assert!(matches!(claims.claim(0, 3), Claim::New));
        assert!(matches!(claims.claim(0, 2), Claim::Conflict));
        claims.hold(0, 2);
        assert!(matches!(claims.claim(0, 2), Claim::Held));
        assert_eq!(claims.len(), 3);
    }

    /// Keys that all land on one stripe and one home slot (as if chosen to collide) still claim,
    /// hold and release exactly: the probe runs and backward shifts at their worst.
    #[test]
    fn colliding_keys_probe_past_each_other_and_removals_close_the_gaps() {
        let claims = Claims { stripes: (0..STRIPES).map(|_| Stripe::new()).collect(), seed: Seed(0, 0) };
        // With a zero seed, home = folded low * high: a high word of 0 gives home 0 for any low.
        let keys: Vec<u128> = (0..200u128).map(|n| n * STRIPES as u128).collect();
        for (n, key) in keys.iter().enumerate() {
            assert!(matches!(claims.claim(*key, (n % 3) as ShardId), Claim::New));
        }
        for key in keys.iter().step_by(2) {
            claims.release(*key);
        }
        for (n, key) in keys.iter().enumerate() {
            let expected = if n % 2 == 0 { Claim::New } else { Claim::Held };
            let got = claims.claim(*key, (n % 3) as ShardId);
            assert_eq!(std::mem::discriminant(&got), std::mem::discriminant(&expected), "key {n}");
        }
        assert_eq!(claims.len(), 200);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Claim(u8, ShardId),
        Hold(u8, ShardId),
        Release(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<u8>(), 0..3u16).prop_map(|(k, s)| Op::Claim(k, s)),
            (any::<u8>(), 0..3u16).prop_map(|(k, s)| Op::Hold(k, s)),
            any::<u8>().prop_map(Op::Release),
        ]
    }

    proptest! {
        /// The flat table answers like a map under any sequence of claims, holds and releases,
        /// through growth and shrinking: keys spread over every stripe (a seed from the test, so
        /// a failure replays), or all on one stripe whose table grows and shrinks, a third of
        /// them on one home and the rest spread (runs that overlap, wrap around the table's end
        /// and leave entries in place or move them back on removal).
        #[test]
        fn claims_behave_like_a_map(ops in proptest::collection::vec(op(), 1..600), crowded in any::<bool>(), seed in any::<(u64, u64)>()) {
            let seed = if crowded { Seed(1, 0) } else { Seed(seed.0 | 1, seed.1) };
            let claims = Claims { stripes: (0..STRIPES).map(|_| Stripe::new()).collect(), seed };
            // Crowded: all on stripe 0 (low word a multiple of 64); home (low ^ 1) * (k % 3),
            // so a third of the keys share slot 0 and the others spread over the table.
            let key_of = |k: u8| {
                let k = u128::from(k);
                if crowded { ((k % 3) << 64) | (k * STRIPES as u128) } else { k.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835) }
            };
            let mut model = std::collections::HashMap::new();
            for op in ops {
                match op {
                    Op::Claim(k, shard) => {
                        let got = claims.claim(key_of(k), shard);
                        let expected = match model.get(&k) {
                            Some(holder) if *holder == shard => Claim::Held,
                            Some(_) => Claim::Conflict,
                            None => { model.insert(k, shard); Claim::New }
                        };
                        prop_assert_eq!(std::mem::discriminant(&got), std::mem::discriminant(&expected));
                    }
                    Op::Hold(k, shard) => { claims.hold(key_of(k), shard); model.insert(k, shard); }
                    Op::Release(k) => { claims.release(key_of(k)); model.remove(&k); }
                }
                prop_assert_eq!(claims.len(), model.len());
            }
            for (k, shard) in &model {
                prop_assert!(matches!(claims.claim(key_of(*k), *shard), Claim::Held));
            }
            let mut keys = model.keys().map(|k| key_of(*k));
            claims.forget(&mut keys);
            prop_assert_eq!(claims.len(), 0);
        }
    }
}
