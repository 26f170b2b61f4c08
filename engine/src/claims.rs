//! The router's claims: which shard holds each accepted order number, so that a reuse naming
//! other funds (and so another shard) is still a conflict. The command that makes a claim keeps
//! it if accepted (nothing to do when it is answered: the hot path), and gives it up if not,
//! unless other commands with the same number on that shard ("joiners", counted in `Holder`) are
//! still in flight: then the last of them to be answered gives it up if none was accepted. So a
//! claim never goes while a command that may be accepted with its number is in flight. Claims of
//! order numbers that went cold are forgotten (a cold row answers for them).
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
use crate::ledger::types::{Reply, ShardId};
use crate::result::ResultCode;

/// Independent locks: concurrent submitters (HTTP workers), the shards settling their replies and
/// the checkpoint threads forgetting cold claims rarely wait for each other.
const STRIPES: usize = 64;

/// A stripe: its table under a lock, and the table's slots and mask as plain atomics for
/// `Claims::prefetch`, which only hints the cache and so may read them without the lock (a
/// stale pair only makes a useless hint). Aligned so that stripes do not share cache lines.
#[repr(align(64))]
struct Stripe {
    table: Mutex<Table<Holder>>,
    published: Published,
}

/// The table's address and mask, on a cache line of their own: `prefetch` reads them for every
/// key, and they change only when the table is resized, while the lock's line beside them
/// changes with every claim.
#[repr(align(64))]
struct Published {
    slots: AtomicPtr<Slot<Holder>>,
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
    table: MutexGuard<'a, Table<Holder>>,
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

/// A claim: the shard that holds the order number; the commands in flight that found it made
/// (`joiners`); whether one of those was accepted (`recorded`: its record exists on that shard);
/// and whether the command that made it was answered without a record while joiners were in
/// flight (`orphaned`: the last joiner decides). 8 bytes: a slot stays 24.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Holder {
    shard: ShardId,
    recorded: bool,
    orphaned: bool,
    joiners: u32,
}

impl Holder {
    fn made(shard: ShardId) -> Holder {
        Holder { shard, recorded: false, orphaned: false, joiners: 0 }
    }
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

    /// Claims `key` for a command on `shard`: `New` (this command made it), `Held` (this
    /// command joins it, counted until `settle`), or `Conflict` (another shard holds it).
    pub(crate) fn claim(&self, key: u128, shard: ShardId) -> Claim {
        let mut locked = self.lock(key);
        match locked.table.find(key, self.seed.home(key)) {
            Ok(index) => match locked.table.value_mut(index) {
                Some(holder) if holder.shard == shard => {
                    holder.joiners = holder.joiners.saturating_add(1);
                    Claim::Held
                }
                _ => Claim::Conflict,
            },
            Err(index) => {
                locked.table.put(index, key, Holder::made(shard), &self.seed);
                Claim::New
            }
        }
    }

    /// `key`'s record exists on `shard` (the claims a start rebuilds from the shards' records),
    /// whoever held it before.
    pub(crate) fn hold(&self, key: u128, shard: ShardId) {
        let mut locked = self.lock(key);
        match locked.table.find(key, self.seed.home(key)) {
            Ok(index) => {
                if let Some(holder) = locked.table.value_mut(index) {
                    *holder = Holder { shard, recorded: true, orphaned: false, joiners: holder.joiners };
                }
            }
            Err(index) => locked.table.put(index, key, Holder { recorded: true, ..Holder::made(shard) }, &self.seed),
        }
    }

    /// The command on `shard` that made the claim of `key` was answered without a record of it
    /// (rejected, or a replay of a record kept elsewhere): the claim goes, unless a joiner was
    /// accepted (it stays) or is still in flight (the last joiner decides). A claim forgotten
    /// meanwhile (`forget`), or made again since for another shard, is left alone.
    fn give_up(&self, key: u128, shard: ShardId) {
        let mut locked = self.lock(key);
        let Ok(index) = locked.table.find(key, self.seed.home(key)) else { return };
        let Some(holder) = locked.table.value_mut(index).filter(|holder| holder.shard == shard) else { return };
        if holder.joiners > 0 {
            holder.orphaned = true;
        } else if !holder.recorded {
            locked.table.remove(index, &self.seed);
        }
    }

    /// A command on `shard` that joined the claim of `key` was answered (`recorded`: accepted
    /// with a new record of it): one joiner fewer; the last one gives up an orphaned claim none
    /// of them was accepted under.
    fn leave(&self, key: u128, shard: ShardId, recorded: bool) {
        let mut locked = self.lock(key);
        let Ok(index) = locked.table.find(key, self.seed.home(key)) else { return };
        let Some(holder) = locked.table.value_mut(index).filter(|holder| holder.shard == shard) else { return };
        holder.joiners = holder.joiners.saturating_sub(1);
        holder.recorded |= recorded;
        if holder.orphaned && holder.joiners == 0 && !holder.recorded {
            locked.table.remove(index, &self.seed);
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
    /// another shard cannot reuse one). A conflict gives back what this call claimed.
    pub(crate) fn claim_command(&self, envelope: &Envelope, own: Option<u128>, shard: ShardId) -> Result<Claimed, ResultCode> {
        let mut claimed = Claimed::default();
        if let Some(key) = own {
            claimed.own = Some(self.claim_one(key, shard, &claimed)?);
        }
        if let Command::BatchPayment { orders, .. } = &envelope.command {
            // Every order's key first, each slot asked for, then the claims in order: the slots'
            // misses overlap. Only the keys claimed so far count (`counted`).
            claimed.orders.reserve(orders.len());
            for order in orders {
                let key = idempotency_key(envelope.platform, Command::PAYMENT_SCOPE, &order.out_order_no);
                self.prefetch(key);
                claimed.orders.push((key, false));
            }
            for index in 0..claimed.orders.len() {
                let (key, _) = claimed.orders[index];
                claimed.orders[index] = self.claim_one(key, shard, &claimed)?;
                claimed.counted += 1;
            }
        }
        Ok(claimed)
    }

    fn claim_one(&self, key: u128, shard: ShardId, so_far: &Claimed) -> Result<(u128, bool), ResultCode> {
        match self.claim(key, shard) {
            Claim::New => Ok((key, true)),
            Claim::Held => Ok((key, false)),
            Claim::Conflict => {
                self.settle(so_far, &Reply::rejected(ResultCode::IdempotencyConflict), shard);
                Err(ResultCode::IdempotencyConflict)
            }
        }
    }

    /// After the shard answered with `reply`. A command that made a new record (accepted; or
    /// refused with a refusal its own number keeps, `ResultCode::is_kept_refusal`, since journal
    /// format 5: a batch payment's orders' numbers keep nothing then) keeps the claims it made
    /// for those numbers (nothing to do) and marks those it joined recorded; for a number
    /// without a new record (rejected, or a replay: its record exists already, hot, so held,
    /// or cold, its claim forgotten on purpose and another shard finding the row; so retries
    /// of old numbers cannot grow the claims again) it gives up the claim it made and leaves
    /// the one it joined. A claim goes only once no command that may record its number is in
    /// flight (before session 57 the first rejected use removed it, and a third command for
    /// another shard could take the number while a second use, still in flight, was
    /// accepted: two orders with one number).
    pub(crate) fn settle(&self, claimed: &Claimed, reply: &Reply, shard: ShardId) {
        let own_recorded = (reply.is_ok() || reply.code.is_kept_refusal()) && !reply.replayed;
        let orders_recorded = reply.is_ok() && !reply.replayed;
        let counted = claimed.orders.get(..claimed.counted).unwrap_or_default();
        let own = claimed.own.iter().map(|claim| (claim, own_recorded));
        for (&(key, made_here), recorded) in own.chain(counted.iter().map(|claim| (claim, orders_recorded))) {
            match (made_here, recorded) {
                (true, true) => {}
                (true, false) => self.give_up(key, shard),
                (false, _) => self.leave(key, shard, recorded),
            }
        }
    }
}

/// The claims one command made (`true`) or joined (`false`), each until `Claims::settle`.
/// `orders` stays empty (no allocation) for everything but batch payments, whose keys are all
/// listed before they are claimed: the first `counted` are.
#[derive(Default)]
pub(crate) struct Claimed {
    own: Option<(u128, bool)>,
    orders: Vec<(u128, bool)>,
    counted: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The claims hold an entry per order number of the shards' hot windows.
    #[test]
    fn a_claim_takes_24_bytes_and_keeps_every_bit_of_its_key() {
        assert_eq!(std::mem::size_of::<Slot<Holder>>(), 24);
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

    /// Two commands in flight with one number on one shard: the first one's rejection leaves
    /// the claim to the second (another shard cannot take the number meanwhile); the claim goes
    /// only when no command uses it and none was accepted; a replay adds no claim.
    #[test]
    fn a_claim_stays_while_a_command_that_may_be_accepted_is_in_flight() {
        let claims = Claims::new();
        let key = 0x42u128;
        // A refusal no number keeps (the shard was full); an acceptance; a replay.
        let refused = Reply::rejected(ResultCode::Overloaded);
        let accepted = Reply { code: ResultCode::Ok, id: 7, status: None, replayed: false };
        let replayed = Reply { replayed: true, ..accepted };
        let use_of = |shard| match claims.claim(key, shard) {
            Claim::New => Claimed { own: Some((key, true)), ..Claimed::default() },
            Claim::Held => Claimed { own: Some((key, false)), ..Claimed::default() },
            Claim::Conflict => panic!("another shard holds it"),
        };
        let (first, second) = (use_of(0), use_of(0));
        claims.settle(&first, &refused, 0);
        assert!(matches!(claims.claim(key, 1), Claim::Conflict), "the second may still be accepted");
        claims.settle(&second, &accepted, 0);
        assert!(matches!(claims.claim(key, 1), Claim::Conflict), "accepted on shard 0");
        // Both rejected, in either order: gone once the last is answered.
        let other = 0x43u128;
        let (maker, joiner) = (Claimed { own: Some((other, true)), ..Claimed::default() }, Claimed { own: Some((other, false)), ..Claimed::default() });
        for maker_first in [true, false] {
            assert!(matches!(claims.claim(other, 1), Claim::New));
            assert!(matches!(claims.claim(other, 1), Claim::Held));
            let (earlier, later) = if maker_first { (&maker, &joiner) } else { (&joiner, &maker) };
            claims.settle(earlier, &refused, 1);
            assert_eq!(claims.len(), 2);
            claims.settle(later, &refused, 1);
            assert_eq!(claims.len(), 1);
        }
        // The joiner accepted before the maker is rejected: it stays.
        assert!(matches!(claims.claim(other, 1), Claim::New));
        assert!(matches!(claims.claim(other, 1), Claim::Held));
        claims.settle(&joiner, &accepted, 1);
        claims.settle(&maker, &refused, 1);
        assert!(matches!(claims.claim(other, 0), Claim::Conflict));
        claims.release(other);
        // A replay (its record cold, its claim forgotten) keeps none.
        assert!(matches!(claims.claim(other, 0), Claim::New));
        claims.settle(&Claimed { own: Some((other, true)), ..Claimed::default() }, &replayed, 0);
        assert_eq!(claims.len(), 1);
        // The answer of a use whose claim was forgotten and made again for another shard
        // leaves that claim alone.
        let forgotten = use_of(0);
        claims.forget(&mut std::iter::once(key));
        assert!(matches!(claims.claim(key, 1), Claim::New));
        claims.settle(&forgotten, &refused, 0);
        assert!(matches!(claims.claim(key, 0), Claim::Conflict));
        // A refusal its number keeps (journal format 5) keeps the claim it made, as an
        // acceptance does; a batch payment refused so gives up its orders' claims (the shard
        // keeps nothing of them); a replay of the refusal makes none.
        let (kept, orders) = (0x44u128, [0x45u128, 0x46]);
        assert!(matches!(claims.claim(kept, 0), Claim::New));
        orders.iter().for_each(|order| assert!(matches!(claims.claim(*order, 0), Claim::New)));
        let batch = Claimed { own: Some((kept, true)), orders: orders.iter().map(|order| (*order, true)).collect(), counted: 2 };
        let before = claims.len();
        claims.settle(&batch, &Reply::rejected(ResultCode::InsufficientFunds), 0);
        assert_eq!(claims.len(), before - 2, "the orders' claims went");
        assert!(matches!(claims.claim(kept, 1), Claim::Conflict), "the refused number stays on shard 0");
        assert!(matches!(claims.claim(orders[0], 1), Claim::New), "an order's number is free");
        let again = Claimed { own: Some((0x47, true)), ..Claimed::default() };
        assert!(matches!(claims.claim(0x47, 0), Claim::New));
        claims.settle(&again, &Reply { replayed: true, ..Reply::rejected(ResultCode::InsufficientFunds) }, 0);
        assert!(matches!(claims.claim(0x47, 1), Claim::New), "a replayed refusal keeps no claim it made");
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
