//! The channel fee of each money-in order, noted when the bank's verdict is applied (helper
//! 121#3, session 68). A payout's fee is booked with its order (the engine's `Withdraw`); a
//! recharge's or a direct payment's was priced at the nightly run by the channel's tariff as it
//! was then, so a tariff changed between the bank's decision and the run booked another fee than
//! the bank took (and a run of the next day booked the difference again). Now the completion
//! notes the fee as the tariff was at the verdict (or, from a statement, as the bank says), and
//! the run books what was noted; an order with no note (decided before this build, or a note
//! that could not be written) is priced as before.
//!
//! Keys `sf/in/{business day of the order's creation:08}/{order:020}`, the fee in minor units as
//! decimal text. The first note of an order stays (a verdict repeated later, after a tariff
//! change, does not move it). Days older than the runs look at are dropped by the run
//! (`prune_before`), so the notes are bounded by two months of money-in orders.

use std::sync::Mutex;

use engine::ledger::types::OrderId;
use engine::money::Minor;
use storage::{StorageError, Store};

const PREFIX: &[u8] = b"sf/in/";

fn key(day: u32, order: OrderId) -> Vec<u8> {
    format!("sf/in/{day:08}/{:020}", order.0).into_bytes()
}

fn day_prefix(day: u32) -> Vec<u8> {
    format!("sf/in/{day:08}/").into_bytes()
}

fn parse(bytes: &[u8]) -> Option<Minor> {
    std::str::from_utf8(bytes).ok()?.parse::<Minor>().ok().filter(|fee| *fee >= 0)
}

/// One note of an order checked and written at a time (the gateway's callbacks and the clearing
/// actor's verdicts may note one order at once): the first stays. Striped by order, so that
/// notes of different orders are written at once (their synced writes share the log's syncs;
/// one lock made every money-in success of every platform wait for the one before, helper 128).
static NOTING: [Mutex<()>; NOTING_STRIPES] = [const { Mutex::new(()) }; NOTING_STRIPES];
const NOTING_STRIPES: usize = 64;

/// Notes `fee` for money-in order `order`, created on business day `day`, unless it has one.
/// Answers whether this call wrote it.
pub fn note(store: &dyn Store, day: u32, order: OrderId, fee: Minor) -> Result<bool, StorageError> {
    let _noting = NOTING[(order.0 % NOTING_STRIPES as u64) as usize].lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let key = key(day, order);
    if store.get(&key)?.is_some() {
        return Ok(false);
    }
    store.write(&[(&key, fee.to_string().as_bytes())])?;
    Ok(true)
}

/// Notes what `channel` charges now for money-in order `order` of `amount` created at
/// `created_at` (microseconds; its business day by `utc_offset_seconds`), unless the order has
/// a note: what a verdict applied now costs at the bank, whose tariff is the channel's (the
/// bank is told of every change at once). Nothing for a channel that is gone.
pub fn note_at_tariff(
    store: &dyn Store,
    channel: Option<&crate::channels::Channel>,
    utc_offset_seconds: i32,
    order: OrderId,
    created_at: u64,
    amount: Minor,
) -> Result<bool, StorageError> {
    let Some(channel) = channel else { return Ok(false) };
    let day = crate::calendar::Calendar { utc_offset_seconds, ..Default::default() }.day(created_at);
    note(store, day, order, channel.fee(amount))
}

/// The notes of `orders` (each with the business day it was created), in their order.
pub fn of_orders(store: &dyn Store, orders: &[(u32, OrderId)]) -> Result<Vec<Option<Minor>>, StorageError> {
    let keys: Vec<Vec<u8>> = orders.iter().map(|(day, order)| key(*day, *order)).collect();
    let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    Ok(store.get_many(&keys)?.into_iter().map(|value| value.as_deref().and_then(parse)).collect())
}

/// Drops the notes of orders created before business day `day`.
pub fn prune_before(store: &dyn Store, day: u32) -> Result<(), StorageError> {
    store.delete_range(PREFIX, &day_prefix(day))
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::MemoryStore;

    #[test]
    fn the_first_note_stays_and_days_are_read_and_dropped_apart() {
        let store = MemoryStore::new();
        assert!(note(&store, 20_000, OrderId(7), 60).unwrap());
        assert!(!note(&store, 20_000, OrderId(7), 100).unwrap(), "a later note of the order does not move it");
        assert!(note(&store, 20_000, OrderId(9), 0).unwrap());
        assert!(note(&store, 20_001, OrderId(8), 5).unwrap());
        let all = [(20_000, OrderId(7)), (20_000, OrderId(9)), (20_001, OrderId(8)), (19_999, OrderId(7)), (20_000, OrderId(8))];
        assert_eq!(of_orders(&store, &all).unwrap(), vec![Some(60), Some(0), Some(5), None, None], "by the order's day and id");
        prune_before(&store, 20_001).unwrap();
        assert_eq!(of_orders(&store, &all).unwrap(), vec![None, None, Some(5), None, None], "the days before dropped");
        // A value that is no fee (damaged) is no note: the tariff prices the order.
        store.write(&[(key(20_001, OrderId(10)).as_slice(), b"-3".as_slice()), (key(20_001, OrderId(11)).as_slice(), b"x".as_slice())]).unwrap();
        assert_eq!(of_orders(&store, &[(20_001, OrderId(10)), (20_001, OrderId(11))]).unwrap(), vec![None, None]);
    }
}
