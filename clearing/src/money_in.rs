//! Money-in channels' daily caps. Each new money-in order (a recharge, a collection, a direct
//! payment through a channel) holds its amount against its channel's `daily_cap` for its business
//! day before the engine is asked; the hold is kept when the engine accepts the order as new and
//! given back otherwise (a refusal, a replay, an error on the way: `MoneyInHold`'s `Drop`). An
//! order that fails at the bank later still counts: the cap bounds what was sent to the channel
//! that day. At start, the day's usage is counted again from the engine's orders of the day
//! (`Clearing::start`).
//!
//! The usage is shared (a mutex held for a few instructions) rather than kept by the actor: money
//! in does not pass through the actor, and a request must not wait behind payout routing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use engine::money::Minor;

/// What each money-in channel took on one business day.
#[derive(Debug, Default)]
pub struct MoneyInUsage {
    inner: Mutex<Day>,
}

#[derive(Debug, Default)]
struct Day {
    day: u32,
    used: HashMap<u16, Minor>,
}

impl Day {
    /// Moves to `day` if it is later (the usage of an earlier day is forgotten).
    fn roll(&mut self, day: u32) {
        if day > self.day {
            self.day = day;
            self.used.clear();
        }
    }
}

/// An amount held against a money-in channel's daily cap: kept with `keep`, else given back when
/// dropped.
#[derive(Debug)]
pub struct MoneyInHold {
    usage: Arc<MoneyInUsage>,
    channel: u16,
    amount: Minor,
    day: u32,
    kept: AtomicBool,
}

impl MoneyInUsage {
    /// Holds `amount` on `channel` for business day `day` unless that would take the channel
    /// past `cap`: the hold, or `None` (the cap is reached).
    pub fn hold(self: &Arc<Self>, channel: u16, amount: Minor, cap: Minor, day: u32) -> Option<MoneyInHold> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.roll(day);
        if inner.day != day {
            // A request judged by a clock behind the usage's day: counted against nothing, held
            // for nothing (the day it names is over).
            return Some(MoneyInHold { usage: self.clone(), channel, amount: 0, day, kept: AtomicBool::new(false) });
        }
        let used = inner.used.entry(channel).or_insert(0);
        if *used as i128 + amount as i128 > cap as i128 {
            return None;
        }
        *used += amount;
        Some(MoneyInHold { usage: self.clone(), channel, amount, day, kept: AtomicBool::new(false) })
    }

    /// Counts an order of business day `created` against `channel` (rebuilding the usage at
    /// start); orders of days before `today` count for nothing.
    pub fn count(&self, channel: u16, amount: Minor, created: u32, today: u32) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.roll(today);
        if created == today && inner.day == today {
            let used = inner.used.entry(channel).or_insert(0);
            *used = used.saturating_add(amount);
        }
    }

    /// What `channel` took on business day `day`.
    pub fn used(&self, channel: u16, day: u32) -> Minor {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.day == day {
            inner.used.get(&channel).copied().unwrap_or(0)
        } else {
            0
        }
    }
}

impl MoneyInHold {
    /// Keeps the hold: the engine accepted the order as new.
    pub fn keep(&self) {
        self.kept.store(true, Ordering::Relaxed);
    }
}

impl Drop for MoneyInHold {
    fn drop(&mut self) {
        if self.kept.load(Ordering::Relaxed) || self.amount == 0 {
            return;
        }
        let mut inner = self.usage.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.day == self.day {
            if let Some(used) = inner.used.get_mut(&self.channel) {
                *used = (*used - self.amount).max(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_are_kept_or_given_back_and_the_cap_is_never_passed() {
        let usage = Arc::new(MoneyInUsage::default());
        let first = usage.hold(3, 600, 1_000, 20_000).expect("within the cap");
        assert!(usage.hold(3, 401, 1_000, 20_000).is_none(), "600 + 401 passes 1,000");
        usage.hold(4, 1_000, 1_000, 20_000).expect("another channel's cap").keep();
        let second = usage.hold(3, 400, 1_000, 20_000).expect("exactly the cap");
        drop(second);
        assert_eq!(usage.used(3, 20_000), 600, "given back: refused, replayed or an error");
        first.keep();
        drop(first);
        assert_eq!(usage.used(3, 20_000), 600, "kept");
        // A new day starts from nothing; a hold of the old day given back then changes nothing.
        let late = usage.hold(3, 300, 1_000, 20_000).expect("held");
        usage.hold(3, 1_000, 1_000, 20_001).expect("a new day").keep();
        drop(late);
        assert_eq!((usage.used(3, 20_000), usage.used(3, 20_001)), (0, 1_000));
        // A request judged by a clock behind the day is held for nothing.
        let behind = usage.hold(3, 500, 1_000, 20_000).expect("held for nothing");
        drop(behind);
        assert_eq!(usage.used(3, 20_001), 1_000);
    }

    #[test]
    fn the_days_orders_are_counted_at_start() {
        let usage = MoneyInUsage::default();
        usage.count(3, 700, 20_000, 20_001);
        usage.count(3, 200, 20_001, 20_001);
        usage.count(3, 100, 20_001, 20_001);
        assert_eq!(usage.used(3, 20_001), 300, "yesterday's order counts for nothing");
    }
}
