//! Dashboard figures for the portals (system-wide or one platform's): orders created per day
//! and kind, balances held, and settlement per day. Pure data, no pages: each shard answers
//! from small aggregates it keeps (`ShardState::daily_volume`, `settled_days`,
//! `channel_fees`), read on its own thread and summed here, so a figure costs the days asked,
//! never the history of orders.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::Arc;

use engine::ledger::state::ShardState;
use engine::ledger::types::{AccountId, AccountKind, OrderDetail, OrderKind, OrderStatus, SystemRole, NO_ORDER_INDEX};
use engine::money::{CurrencyId, CurrencySpec};
use engine::Engine;
use serde::Serialize;

use crate::error::{blocking, ApiError};

/// The most business days one figure may span (a year and a little more).
pub const DAYS_MAX: u32 = 400;

/// How many orders of one kind and currency were created on one business day, and their sum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DayKindTotal {
    /// Business day: days since 1970-01-01 in the engine's business time zone.
    pub day: u32,
    /// The same day as `YYYY-MM-DD`.
    pub date: String,
    /// `recharge`, `payment`, `guarantee`, `refund`, `freeze`, `withdrawal` or `adjustment`.
    pub kind: &'static str,
    pub currency: String,
    pub count: u64,
    pub amount_minor: i128,
}

/// What customers hold in one currency: the three buckets of their accounts, the escrow held
/// for their guarantee payments, and (system-wide only) what sits in suspense.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HeldBalance {
    pub currency: String,
    pub settled: i128,
    pub unsettled: i128,
    pub frozen: i128,
    /// Guarantee money held and not yet confirmed or cancelled (per platform: its payers' held
    /// guarantee orders, which are open orders the shard indexes; system-wide: the escrow stripes).
    pub escrow: i128,
    /// The suspense stripes: operator's money, no platform's (`None` for a platform's figures).
    pub suspense: Option<i128>,
}

/// What the nightly settlement did for income of one business day in one currency.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SettlementDay {
    /// The last business day of income the runs covered (a settlement row's `through_day`).
    pub day: u32,
    pub date: String,
    pub currency: String,
    /// Accounts whose income matured.
    pub accounts: u64,
    /// Income that became withdrawable.
    pub matured: i128,
    /// Commission charged on it (paid to the platform's rule receivers).
    pub commissions: i128,
    /// The operator's service fee charged on it.
    pub service_fees: i128,
    /// What channels charged for the orders of that day (`ChargeChannelFees`): per channel and
    /// shard, not per platform, so `None` for a platform's figures.
    pub channel_fees: Option<i128>,
}

/// The name of an order kind on the dashboards (guarantee payments apart from balance ones).
pub fn kind_label(kind: OrderKind) -> &'static str {
    match kind {
        OrderKind::Recharge => "recharge",
        OrderKind::Payment => "payment",
        OrderKind::Guarantee => "guarantee",
        OrderKind::Refund => "refund",
        OrderKind::Freeze => "freeze",
        OrderKind::Withdrawal => "withdrawal",
        OrderKind::Adjustment => "adjustment",
    }
}

/// A business day as `YYYY-MM-DD`.
pub fn date_of(day: u32) -> String {
    const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;
    i32::try_from(UNIX_EPOCH_JULIAN_DAY + i64::from(day))
        .ok()
        .and_then(|julian| time::Date::from_julian_day(julian).ok())
        .map_or_else(String::new, |d| d.to_string())
}

/// Today's business day as the engine counts it (its `utc_offset_seconds`).
pub fn today(engine: &Engine) -> u32 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    (now + i64::from(engine.config().utc_offset_seconds)).div_euclid(86_400).clamp(0, i64::from(u32::MAX)) as u32
}

/// Formats a wide sum in `spec`'s major units (`"-1234.50"`).
pub fn format_wide(spec: &CurrencySpec, minor: i128) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let magnitude = minor.unsigned_abs();
    if spec.exponent == 0 {
        return format!("{sign}{magnitude}");
    }
    let scale = 10u128.pow(u32::from(spec.exponent));
    format!("{sign}{}.{:0width$}", magnitude / scale, magnitude % scale, width = spec.exponent as usize)
}

fn check_days(days: &RangeInclusive<u32>) -> Result<(), ApiError> {
    if days.start() > days.end() || days.end() - days.start() >= DAYS_MAX {
        return Err(ApiError::invalid("days run forward and span at most 400 business days", "days"));
    }
    Ok(())
}

fn wanted(platform: Option<u32>, of: u32) -> bool {
    platform.is_none_or(|p| p == of)
}

/// One shard's orders per (day, kind index, currency) for `days`: a range of its aggregate.
pub fn shard_volume(state: &ShardState, platform: Option<u32>, days: &RangeInclusive<u32>) -> Vec<((u32, u8, u8), (u64, i128))> {
    let range = (*days.start(), 0, 0, 0)..=(*days.end(), u32::MAX, u8::MAX, u8::MAX);
    let mut sums: BTreeMap<(u32, u8, u8), (u64, i128)> = BTreeMap::new();
    for ((day, _, kind, currency), total) in state.daily_volume.range(range).filter(|((_, p, _, _), _)| wanted(platform, *p)) {
        let sum = sums.entry((*day, *kind, *currency)).or_default();
        sum.0 += total.count;
        sum.1 += total.amount;
    }
    sums.into_iter().collect()
}

/// One shard's held money per currency index: settled, unsettled, frozen, escrow, suspense.
pub fn shard_balances(state: &ShardState, platform: Option<u32>) -> Vec<[i128; 5]> {
    let mut sums = vec![[0i128; 5]; state.currencies.len()];
    for account in state.accounts.iter().filter(|a| a.kind == AccountKind::Customer && wanted(platform, a.platform)) {
        let row = &mut sums[account.currency.0 as usize];
        row[0] += i128::from(account.settled);
        row[1] += i128::from(account.unsettled);
        row[2] += i128::from(account.frozen);
    }
    for (c, row) in sums.iter_mut().enumerate() {
        let stripe = |role| state.account(state.system_account(role, CurrencyId(c as u8))).map_or(0, |a| state.balance(a));
        row[4] = stripe(SystemRole::Suspense);
        if platform.is_none() {
            row[3] = stripe(SystemRole::Escrow);
        }
    }
    // A platform's escrow: its held guarantee orders, found among its open orders (few, whatever
    // the history), each what its legs still hold.
    if let Some(index) = platform.and_then(|p| state.platform_orders.get(&p)) {
        for local in &index.open {
            let Some(order) = state.orders.get(*local as usize) else { continue };
            if order.kind != OrderKind::Guarantee || order.status != OrderStatus::Held {
                continue;
            }
            if let OrderDetail::Payment { held, .. } = &order.detail {
                let holding: i128 = held.iter().map(|leg| i128::from(leg.held - leg.released - leg.cancelled)).sum();
                sums[order.currency.0 as usize][3] += holding;
            }
        }
    }
    sums
}

/// One shard's settlement per (through_day, currency index) for `days`: accounts, matured,
/// commission, service fee, channel fees (system-wide only).
pub fn shard_settlement(state: &ShardState, platform: Option<u32>, days: &RangeInclusive<u32>) -> BTreeMap<(u32, u8), [i128; 5]> {
    let mut found: BTreeMap<(u32, u8), [i128; 5]> = BTreeMap::new();
    let range = (*days.start(), 0, 0)..=(*days.end(), u32::MAX, u8::MAX);
    for ((day, _, currency), total) in state.settled_days.range(range).filter(|((_, p, _), _)| wanted(platform, *p)) {
        let row = found.entry((*day, *currency)).or_default();
        row[0] += i128::from(total.accounts);
        row[1] += total.matured;
        row[2] += total.commission;
        row[3] += total.service_fee;
    }
    if platform.is_none() {
        // Keyed by channel first: visit each channel's days in range, hopping to the next channel.
        let mut next = state.channel_fees.keys().next().map(|(channel, _, _)| *channel);
        while let Some(channel) = next {
            for ((_, day, currency), fee) in state.channel_fees.range((channel, *days.start(), 0)..=(channel, *days.end(), u8::MAX)) {
                found.entry((*day, *currency)).or_default()[4] += i128::from(*fee);
            }
            next = channel.checked_add(1).and_then(|after| state.channel_fees.range((after, 0, 0)..).next().map(|((c, _, _), _)| *c));
        }
    }
    found
}

/// Reads `read` on every shard (each on its own thread, off the async workers).
async fn every_shard<R: Send + 'static>(engine: &Arc<Engine>, read: impl Fn(&ShardState) -> R + Clone + Send + 'static) -> Result<Vec<R>, ApiError> {
    let mut parts = Vec::new();
    for shard in 0..engine.config().shard_count {
        let (reading, read) = (engine.clone(), read.clone());
        parts.push(blocking(move || reading.read_shard(shard, read)).await??);
    }
    Ok(parts)
}

fn code(engine: &Engine, currency: u8) -> String {
    engine.config().currencies.get(currency as usize).map_or_else(String::new, |c| c.code_str().to_string())
}

/// Orders created per business day, kind and currency over `days` (every platform's, or one's),
/// oldest day first. Counts every order when it is created, whatever became of it since.
pub async fn daily_volume(engine: &Arc<Engine>, platform: Option<u32>, days: RangeInclusive<u32>) -> Result<Vec<DayKindTotal>, ApiError> {
    check_days(&days)?;
    let parts = every_shard(engine, move |state| shard_volume(state, platform, &days)).await?;
    let mut sums: BTreeMap<(u32, u8, u8), (u64, i128)> = BTreeMap::new();
    for (key, (count, amount)) in parts.into_iter().flatten() {
        let sum = sums.entry(key).or_default();
        sum.0 += count;
        sum.1 += amount;
    }
    let kinds = OrderKind::ALL;
    Ok(sums
        .into_iter()
        .filter_map(|((day, kind, currency), (count, amount_minor))| {
            let kind = kind_label(*kinds.get(kind as usize)?);
            Some(DayKindTotal { day, date: date_of(day), kind, currency: code(engine, currency), count, amount_minor })
        })
        .collect())
}

/// The money customers hold now, per currency (every platform's, or one's).
pub async fn balances_held(engine: &Arc<Engine>, platform: Option<u32>) -> Result<Vec<HeldBalance>, ApiError> {
    let parts = every_shard(engine, move |state| shard_balances(state, platform)).await?;
    let mut sums = vec![[0i128; 5]; engine.config().currencies.len()];
    for part in parts {
        for (sum, row) in sums.iter_mut().zip(part) {
            for (total, value) in sum.iter_mut().zip(row) {
                *total += value;
            }
        }
    }
    Ok(sums
        .into_iter()
        .enumerate()
        .map(|(c, [settled, unsettled, frozen, escrow, suspense])| HeldBalance {
            currency: code(engine, c as u8),
            settled,
            unsettled,
            frozen,
            escrow,
            suspense: platform.is_none().then_some(suspense),
        })
        .collect())
}

/// Settlement per business day of income and currency over `days` (every platform's, or one's):
/// what matured, the commissions and service fees charged on it, and channel fees.
pub async fn settlement_days(engine: &Arc<Engine>, platform: Option<u32>, days: RangeInclusive<u32>) -> Result<Vec<SettlementDay>, ApiError> {
    check_days(&days)?;
    let parts = every_shard(engine, move |state| shard_settlement(state, platform, &days)).await?;
    let mut sums: BTreeMap<(u32, u8), [i128; 5]> = BTreeMap::new();
    for (key, row) in parts.into_iter().flatten() {
        let sum = sums.entry(key).or_default();
        for (total, value) in sum.iter_mut().zip(row) {
            *total += value;
        }
    }
    Ok(sums
        .into_iter()
        .map(|((day, currency), [accounts, matured, commissions, service_fees, channel_fees])| SettlementDay {
            day,
            date: date_of(day),
            currency: code(engine, currency),
            accounts: u64::try_from(accounts).unwrap_or(u64::MAX),
            matured,
            commissions,
            service_fees,
            channel_fees: platform.is_none().then_some(channel_fees),
        })
        .collect())
}

/// Orders one member's figures read at most per account (newest first; older ones are left out
/// of the chart, which then says so).
pub const MEMBER_SCAN_MAX: usize = 50_000;

/// One member's dashboard figures: the orders of its accounts per business day, kind and
/// currency, and what its accounts hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberFigures {
    pub volume: Vec<DayKindTotal>,
    /// Per currency; `suspense` is `None`. `escrow`: guarantee payments to the member's
    /// accounts held and not yet confirmed or cancelled.
    pub held: Vec<HeldBalance>,
    /// An account had more than `MEMBER_SCAN_MAX` orders in the days asked: `volume` counts
    /// only its newest.
    pub truncated: bool,
}

/// One shard's part of a member's figures: the orders of `accounts` (those on this shard)
/// created in `days`, each account's chain walked newest first (`Account::last_order`), so the
/// cost is the member's recent orders, never the shard's; its buckets; and the escrow of the
/// platform's open guarantee orders paying it (open orders are few, whatever the history).
#[allow(clippy::type_complexity)]
pub fn shard_member(
    state: &ShardState,
    platform: u32,
    accounts: &[AccountId],
    days: &RangeInclusive<u32>,
) -> (Vec<((u32, u8, u8), (u64, i128))>, Vec<[i128; 4]>, bool) {
    let offset = i64::from(state.utc_offset_seconds);
    let day_of = |micros: u64| (((micros / 1_000_000) as i64 + offset).div_euclid(86_400)).clamp(0, i64::from(u32::MAX)) as u32;
    let link = |local: u32| state.previous_order_of_account.get(local as usize).copied().unwrap_or(NO_ORDER_INDEX);
    let mut volume: BTreeMap<(u32, u8, u8), (u64, i128)> = BTreeMap::new();
    let mut held = vec![[0i128; 4]; state.currencies.len()];
    let mut truncated = false;
    let mine: Vec<&engine::ledger::types::Account> =
        accounts.iter().filter_map(|id| state.account(*id)).filter(|a| a.kind == AccountKind::Customer && a.platform == platform).collect();
    for account in &mine {
        if let Some(row) = held.get_mut(account.currency.0 as usize) {
            row[0] += i128::from(account.settled);
            row[1] += i128::from(account.unsettled);
            row[2] += i128::from(account.frozen);
        }
        let (mut at, mut scanned) = (account.last_order, 0);
        while at != NO_ORDER_INDEX {
            let Some(order) = state.orders.get(at as usize) else { break };
            let day = day_of(order.created_at);
            if day < *days.start() {
                break;
            }
            if scanned == MEMBER_SCAN_MAX {
                truncated = true;
                break;
            }
            scanned += 1;
            if day <= *days.end() {
                let sum = volume.entry((day, order.kind.index(), order.currency.0)).or_default();
                sum.0 += 1;
                sum.1 += i128::from(order.amount);
            }
            at = link(at);
        }
    }
    if let Some(index) = state.platform_orders.get(&platform) {
        for local in &index.open {
            let Some(order) = state.orders.get(*local as usize) else { continue };
            if order.kind != OrderKind::Guarantee || order.status != OrderStatus::Held {
                continue;
            }
            if let (OrderDetail::Payment { held: legs, .. }, Some(row)) = (&order.detail, held.get_mut(order.currency.0 as usize)) {
                row[3] +=
                    legs.iter().filter(|leg| accounts.contains(&leg.account)).map(|leg| i128::from(leg.held - leg.released - leg.cancelled)).sum::<i128>();
            }
        }
    }
    (volume.into_iter().collect(), held, truncated)
}

/// A member's figures over `days`: its accounts' orders per day and kind, and what they hold
/// (each shard reads only the member's accounts' recent orders and the platform's open ones).
pub async fn member_figures(engine: &Arc<Engine>, platform: u32, accounts: &[AccountId], days: RangeInclusive<u32>) -> Result<MemberFigures, ApiError> {
    check_days(&days)?;
    let accounts: Arc<[AccountId]> = accounts.into();
    let parts = every_shard(engine, move |state| shard_member(state, platform, &accounts, &days)).await?;
    let mut volume: BTreeMap<(u32, u8, u8), (u64, i128)> = BTreeMap::new();
    let mut held = vec![[0i128; 4]; engine.config().currencies.len()];
    let mut truncated = false;
    for (part_volume, part_held, part_truncated) in parts {
        for (key, (count, amount)) in part_volume {
            let sum = volume.entry(key).or_default();
            sum.0 += count;
            sum.1 += amount;
        }
        for (sum, row) in held.iter_mut().zip(part_held) {
            for (total, value) in sum.iter_mut().zip(row) {
                *total += value;
            }
        }
        truncated |= part_truncated;
    }
    let kinds = OrderKind::ALL;
    let volume = volume
        .into_iter()
        .filter_map(|((day, kind, currency), (count, amount_minor))| {
            let kind = kind_label(*kinds.get(kind as usize)?);
            Some(DayKindTotal { day, date: date_of(day), kind, currency: code(engine, currency), count, amount_minor })
        })
        .collect();
    let held = held
        .into_iter()
        .enumerate()
        .map(|(c, [settled, unsettled, frozen, escrow])| HeldBalance { currency: code(engine, c as u8), settled, unsettled, frozen, escrow, suspense: None })
        .collect();
    Ok(MemberFigures { volume, held, truncated })
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::ledger::command::{Command, Envelope, OutOrderNo};
    use engine::ledger::state::Effects;
    use engine::ledger::types::{AccountId, Leg, Legs, Limits, SettlementRule, Tier, TierBasis};

    const CNY: CurrencyId = CurrencyId(0);
    const DAY: u64 = 86_400_000_000;
    /// Noon (UTC+8) of business day 20,000.
    const T0: u64 = 20_000 * DAY + 4 * 3_600_000_000;

    struct Shard {
        state: ShardState,
        fx: Effects,
        counter: u64,
    }

    impl Shard {
        fn new() -> Shard {
            let mut state = ShardState::default();
            let currencies = vec![CurrencySpec::new("CNY", 2).unwrap(), CurrencySpec::new("USD", 2).unwrap()];
            let genesis = Command::Genesis { shard: 0, shard_count: 1, currencies, utc_offset_seconds: 8 * 3600 };
            state.apply(&Envelope { platform: 0, out_order_no: None, command: genesis }, T0, &mut Effects::default());
            Shard { state, fx: Effects::default(), counter: 0 }
        }

        fn ok(&mut self, platform: u32, at: u64, command: Command) -> u64 {
            self.counter += 1;
            let envelope = Envelope { platform, out_order_no: Some(OutOrderNo::new(&format!("s{}", self.counter)).unwrap()), command };
            let reply = self.state.apply(&envelope, at, &mut self.fx);
            assert!(reply.is_ok(), "{reply:?} {envelope:?}");
            reply.id
        }

        fn funded(&mut self, platform: u32, owner: u64, amount: i64) -> AccountId {
            let account = AccountId(self.ok(platform, T0, Command::OpenAccount { owner, currency: CNY, limits: Limits::NONE }));
            if amount > 0 {
                self.ok(platform, T0, Command::Recharge { account, currency: CNY, amount, channel: 1 });
            }
            account
        }
    }

    fn pay(payer: AccountId, payee: AccountId, amount: i64, guarantee: bool) -> Command {
        Command::Payment { payer, guarantee, currency: CNY, amount, payees: [Leg { account: payee, amount }].into_iter().collect(), splits: Legs::new() }
    }

    #[test]
    fn volume_is_per_day_platform_kind_and_currency_and_reads_only_the_days_asked() {
        let mut s = Shard::new();
        let (a, b) = (s.funded(1, 1, 10_000), s.funded(1, 2, 0));
        let other = s.funded(2, 3, 500);
        s.ok(1, T0, pay(a, b, 300, false));
        s.ok(1, T0 + DAY, pay(a, b, 200, false));
        s.ok(1, T0 + DAY, pay(a, b, 50, true));
        let everyone = shard_volume(&s.state, None, &(20_000..=20_001));
        let recharge = OrderKind::Recharge.index();
        let (payment, guarantee) = (OrderKind::Payment.index(), OrderKind::Guarantee.index());
        assert_eq!(
            everyone,
            vec![((20_000, recharge, 0), (2, 10_500)), ((20_000, payment, 0), (1, 300)), ((20_001, payment, 0), (1, 200)), ((20_001, guarantee, 0), (1, 50))]
        );
        assert_eq!(shard_volume(&s.state, Some(2), &(20_000..=20_001)), vec![((20_000, recharge, 0), (1, 500))]);
        assert_eq!(shard_volume(&s.state, Some(1), &(20_001..=20_001)).len(), 2, "the second day only");
        assert!(shard_volume(&s.state, None, &(19_000..=19_999)).is_empty());
        let _ = other;
    }

    #[test]
    fn balances_split_buckets_and_escrow_per_platform_adds_up_to_the_stripes() {
        let mut s = Shard::new();
        let (a, b) = (s.funded(1, 1, 10_000), s.funded(1, 2, 0));
        let (c, d) = (s.funded(2, 3, 1_000), s.funded(2, 4, 0));
        s.ok(1, T0, pay(a, b, 700, false));
        let held = s.ok(1, T0, pay(a, b, 400, true));
        s.ok(1, T0, Command::Confirm { order: engine::ledger::types::OrderId(held), releases: [Leg { account: b, amount: 150 }].into_iter().collect() });
        s.ok(2, T0, pay(c, d, 90, true));
        s.ok(1, T0, Command::Freeze { account: a, currency: CNY, amount: 1_000, reason: "check".into(), expires_at: None });
        s.ok(0, T0, Command::CreditSuspense { shard: 0, currency: CNY, amount: 33 });
        let one = shard_balances(&s.state, Some(1));
        assert_eq!(one[0], [10_000 - 700 - 400 - 1_000, 700 + 150, 1_000, 250, 33]);
        let two = shard_balances(&s.state, Some(2));
        assert_eq!(one[0][3] + two[0][3], 340);
        let all = shard_balances(&s.state, None);
        assert_eq!(all[0][3], 340, "per-platform escrow sums to the escrow stripes");
        assert_eq!(all[0][..3], [one[0][0] + two[0][0], one[0][1] + two[0][1], one[0][2] + two[0][2]]);
        assert_eq!(all[1], [0; 5], "nothing in USD");
    }

    #[test]
    fn settlement_days_sum_what_matured_was_charged_and_channel_fees_in_range() {
        let mut s = Shard::new();
        let (a, b, receiver) = (s.funded(1, 1, 10_000), s.funded(1, 2, 0), s.funded(1, 3, 0));
        s.ok(1, T0, pay(a, b, 1_000, false));
        s.ok(1, T0 + DAY, pay(a, b, 500, false));
        let rule = SettlementRule {
            currency: CNY,
            period_start: 20_000,
            basis: TierBasis::Amount,
            tiers: vec![Tier { from: 0, rate_ppm: 10_000 }],
            receivers: vec![Leg { account: receiver, amount: 1 }],
            service_fee_ppm: 2_000,
        };
        s.ok(1, T0 + 2 * DAY, Command::Settle { through_day: 20_000, rule: Some(Box::new(rule.clone())) });
        s.ok(1, T0 + 3 * DAY, Command::Settle { through_day: 20_001, rule: Some(Box::new(rule)) });
        s.ok(0, T0 + 3 * DAY, Command::ChargeChannelFees { shard: 0, channel: 1, day: 20_000, currency: CNY, total: 7 });
        s.ok(0, T0 + 3 * DAY, Command::ChargeChannelFees { shard: 0, channel: 3, day: 20_000, currency: CNY, total: 5 });
        s.ok(0, T0 + 3 * DAY, Command::ChargeChannelFees { shard: 0, channel: 3, day: 20_002, currency: CNY, total: 4 });
        let all = shard_settlement(&s.state, None, &(20_000..=20_001));
        assert_eq!(all[&(20_000, 0)], [1, 1_000, 10, 2, 12]);
        assert_eq!(all[&(20_001, 0)], [1, 500, 5, 1, 0]);
        assert_eq!(all.len(), 2, "day 20,002's fee is outside the range");
        let platform = shard_settlement(&s.state, Some(1), &(20_000..=20_000));
        assert_eq!(platform[&(20_000, 0)], [1, 1_000, 10, 2, 0], "channel fees are system-wide only");
        assert!(shard_settlement(&s.state, Some(2), &(20_000..=20_001)).is_empty());
    }

    #[test]
    fn wide_amounts_format_and_days_have_dates() {
        let cny = CurrencySpec::new("CNY", 2).unwrap();
        let jpy = CurrencySpec::new("JPY", 0).unwrap();
        assert_eq!(format_wide(&cny, -123_450), "-1234.50");
        assert_eq!(format_wide(&cny, 5), "0.05");
        assert_eq!(format_wide(&cny, i128::from(i64::MAX) * 10), "922337203685477580.70");
        assert_eq!(format_wide(&jpy, 42), "42");
        assert_eq!(date_of(0), "1970-01-01");
        assert_eq!(date_of(20_423), "2025-12-01");
        assert!(check_days(&RangeInclusive::new(5, 4)).is_err(), "backwards");
        assert!(check_days(&(0..=DAYS_MAX)).is_err());
        assert!(check_days(&(1..=DAYS_MAX)).is_ok());
    }
}
