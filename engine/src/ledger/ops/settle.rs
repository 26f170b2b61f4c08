//! Settlement's ledger step: unsettled income past its cycle becomes settled (withdrawable), and
//! the platform's settlement rule charges its commission (split among receivers) and the
//! operator's service fee on what matured.

use crate::ledger::command::{StepProgress, STEP_COUNT_LIMIT};
use crate::ledger::state::{CommissionRow, Context, Effects, PeriodTotal, SettledRow, ShardState};
use crate::ledger::types::*;
use crate::money::{split_proportionally, CurrencyId, Minor};
use crate::result::ResultCode;

/// Matures the calling platform's (all platforms' for the operator) income lots of business days
/// up to `through_day`, charging `rule` on each account's matured amount; replies with the
/// number of accounts that had something to mature. Lots once matured are gone, so running the
/// same day again changes nothing.
pub fn settle(state: &mut ShardState, context: &Context, through_day: u32, rule: Option<&SettlementRule>, fx: &mut Effects) -> Reply {
    // The gateway checks rules when they are set; the shard does not trust that.
    if rule.is_some_and(|r| r.check().is_err() || r.currency.0 as usize >= state.currencies.len()) {
        return Reply::rejected(ResultCode::InvalidRule);
    }
    let mut matured: Vec<(AccountId, Minor, u32)> = Vec::new();
    for (account, lots) in state.lots.iter() {
        if let Some(due) = due_of(state, context, account, lots, through_day) {
            matured.push(due);
        }
    }
    mature(state, context, through_day, rule, &matured, fx);
    Reply { code: ResultCode::Ok, id: matured.len() as u64, status: None, replayed: false }
}

/// `settle` in a bounded step (`SettleChunk`): from local account index `after` on, examines at
/// most `examined_max` account indices and matures at most `accounts_max` of them (both clamped
/// to `STEP_COUNT_LIMIT`); the reply (`StepProgress`) says how many and where the next step
/// starts.
pub fn settle_chunk(
    state: &mut ShardState,
    context: &Context,
    (through_day, rule): (u32, Option<&SettlementRule>),
    after: u32,
    (accounts_max, examined_max): (u32, u32),
    fx: &mut Effects,
) -> Reply {
    if rule.is_some_and(|r| r.check().is_err() || r.currency.0 as usize >= state.currencies.len()) {
        return Reply::rejected(ResultCode::InvalidRule);
    }
    let (accounts_max, examined_max) = (accounts_max.clamp(1, STEP_COUNT_LIMIT), examined_max.clamp(1, STEP_COUNT_LIMIT));
    let mut matured: Vec<(AccountId, Minor, u32)> = Vec::new();
    let mut resume_at = None;
    for (examined, (index, account, lots)) in state.lots.iter_from(after).enumerate() {
        if examined as u32 == examined_max || matured.len() as u32 == accounts_max {
            resume_at = Some(index);
            break;
        }
        if lots.is_empty() {
            continue;
        }
        if let Some(due) = due_of(state, context, account, lots, through_day) {
            matured.push(due);
        }
    }
    mature(state, context, through_day, rule, &matured, fx);
    let progress = StepProgress { count: matured.len() as u32, resume_at };
    Reply { code: ResultCode::Ok, id: progress.to_reply_id(), status: None, replayed: false }
}

/// What `account` (with `lots`) has due through `through_day`, if it is the calling platform's
/// (any platform's for the operator) and has any: (the account, the amount, the credits).
fn due_of(state: &ShardState, context: &Context, account: AccountId, lots: &Lots, through_day: u32) -> Option<(AccountId, Minor, u32)> {
    let owner = state.account(account).expect("lots are of local accounts");
    if context.platform != 0 && owner.platform != context.platform {
        return None;
    }
    let (mut due, mut credits): (Minor, u32) = (0, 0);
    for lot in lots.iter().take_while(|lot| lot.day <= through_day) {
        due += lot.amount;
        credits = credits.saturating_add(lot.credits);
    }
    (due > 0).then_some((account, due, credits))
}

/// Matures each of `matured` (account, amount due, credits) with `rule`'s charges, writing the
/// settled rows and the receivers' commission rows.
fn mature(state: &mut ShardState, context: &Context, through_day: u32, rule: Option<&SettlementRule>, matured: &[(AccountId, Minor, u32)], fx: &mut Effects) {
    // In account order (as the lots come), so that replay is byte-identical.
    debug_assert!(matured.is_sorted_by_key(|(account, _, _)| *account));
    let weights: Vec<Minor> = rule.map_or_else(Vec::new, |r| r.receivers.iter().map(|r| r.amount).collect());
    let mut by_receiver: Vec<(Minor, u32)> = vec![(0, 0); weights.len()];
    let mut parts = Vec::with_capacity(weights.len());
    for (account, due, credits) in matured {
        let (account, due, credits) = (*account, *due, *credits);
        let (currency, platform) = {
            let a = state.account(account).expect("local");
            (a.currency, a.platform)
        };
        state.begin_entry(fx, NO_ORDER, EntryKind::Mature, currency);
        state.debit_unsettled_only(fx, account, due);
        state.post(fx, account, Bucket::Settled, due);
        state.end_entry(fx);
        let mut row = SettledRow {
            through_day,
            account,
            platform,
            currency,
            amount: due,
            at: context.now,
            credits,
            period_measure: 0,
            rate_ppm: 0,
            commission: 0,
            service_fee: 0,
        };
        // A receiver of the rule does not pay commission to itself (nor to its co-receivers);
        // since journal format 6 it pays the operator's service fee as every other account of
        // the platform does (before, naming an account a receiver exempted it: helper 121#1).
        let rule = rule.filter(|r| r.currency == currency);
        let receiver = rule.is_some_and(|r| r.receivers.iter().any(|x| x.account == account));
        if let Some(rule) = rule.filter(|_| !receiver) {
            let total = state.period_totals.entry(account).or_default();
            if total.period_start != rule.period_start {
                *total = PeriodTotal { period_start: rule.period_start, ..PeriodTotal::default() };
            }
            // A tier measure: saturating is exact enough (past i64 the top tier applies anyway).
            total.amount = total.amount.saturating_add(due);
            total.credits = total.credits.saturating_add(credits as u64);
            row.period_measure = match rule.basis {
                TierBasis::Amount => total.amount,
                TierBasis::Count => total.credits as i64,
            };
            row.rate_ppm = rule.rate_at(row.period_measure);
            row.commission = apply_rate(due, row.rate_ppm);
            if row.commission > 0 {
                split_proportionally(row.commission, &weights, &mut parts);
                state.begin_entry(fx, NO_ORDER, EntryKind::Commission, currency);
                state.post(fx, account, Bucket::Settled, -row.commission);
                for (index, receiver) in rule.receivers.iter().enumerate() {
                    if parts[index] == 0 {
                        continue;
                    }
                    // A report row summed over accounts: saturating, it can never stop the run.
                    by_receiver[index].0 = by_receiver[index].0.saturating_add(parts[index]);
                    by_receiver[index].1 = by_receiver[index].1.saturating_add(1);
                    credit_commission(state, fx, Leg { account: receiver.account, amount: parts[index] }, account, currency);
                }
                state.end_entry(fx);
            }
        }
        if let Some(rule) = rule.filter(|_| !receiver || context.charges_receivers_service_fee()) {
            // Each charge rounds half up on its own; together they never exceed what matured.
            row.service_fee = apply_rate(due, rule.service_fee_ppm).min(due - row.commission);
            if row.service_fee > 0 {
                let income = state.system_account(SystemRole::FeeIncome, currency);
                state.begin_entry(fx, NO_ORDER, EntryKind::ServiceFee, currency);
                state.post(fx, account, Bucket::Settled, -row.service_fee);
                state.post(fx, income, Bucket::Settled, row.service_fee);
                state.end_entry(fx);
            }
        }
        let day = state.settled_days.entry((row.through_day, row.platform, row.currency.0)).or_default();
        day.accounts += 1;
        day.matured += row.amount as i128;
        day.commission += row.commission as i128;
        day.service_fee += row.service_fee as i128;
        state.settled.push(row);
        state.settled_runs.note(through_day, state.settled.len() as u64 - 1);
    }
    if let Some(rule) = rule {
        for (receiver, (amount, accounts)) in rule.receivers.iter().zip(by_receiver) {
            if amount > 0 {
                let platform = context.platform;
                state.commissions.push(CommissionRow { through_day, platform, receiver: receiver.account, currency: rule.currency, amount, accounts });
                state.commission_runs.note(through_day, state.commissions.len() as u64 - 1);
            }
        }
    }
}

/// Credits a receiver's part of a commission to its settled funds, here or through the outbox;
/// a receiver that can no longer take credits sends it to suspense.
fn credit_commission(state: &mut ShardState, fx: &mut Effects, leg: Leg, payer: AccountId, currency: CurrencyId) {
    if leg.account.shard(state.shard_count) != state.shard {
        state.send_credit(fx, NO_ORDER, leg, payer, CreditPurpose::Commission, currency);
    } else {
        let target = state.credit_target(fx, leg.account, currency, leg.amount);
        state.post(fx, target, Bucket::Settled, leg.amount);
    }
}

/// Books `channel`'s fees for this shard's orders of business day `day` up to `total`: the part
/// not booked yet moves from fee income to the reserve (the bank keeps it). A total already
/// booked books nothing, so a re-run changes nothing and a later run books only late orders.
/// Replies with the minor units booked now.
pub fn charge_channel_fees(state: &mut ShardState, channel: u16, day: u32, currency: CurrencyId, total: Minor, fx: &mut Effects) -> Reply {
    if currency.0 as usize >= state.currencies.len() {
        return Reply::rejected(ResultCode::CurrencyUnknown);
    }
    if !(0..=crate::money::AMOUNT_MINOR_MAX).contains(&total) {
        return Reply::rejected(ResultCode::InvalidAmount);
    }
    let booked = state.channel_fees.get(&(channel, day, currency.0)).copied().unwrap_or(0);
    // After this point the charge must succeed.
    let now = (total - booked).max(0);
    if now > 0 {
        state.move_between_roles(fx, EntryKind::ChannelFee, currency, SystemRole::FeeIncome, SystemRole::Reserve, now);
        state.channel_fees.insert((channel, day, currency.0), total);
    }
    Reply { code: ResultCode::Ok, id: now as u64, status: None, replayed: false }
}

/// A card-verification micro-deposit: `amount` leaves the reserve (the bank pays the card) at
/// the operator's cost (out of fee income).
pub fn verification_deposit(state: &mut ShardState, currency: CurrencyId, amount: Minor, fx: &mut Effects) -> Reply {
    if currency.0 as usize >= state.currencies.len() {
        return Reply::rejected(ResultCode::CurrencyUnknown);
    }
    if let Err(code) = crate::ledger::state::check_amount(amount) {
        return Reply::rejected(code);
    }
    // After this point the deposit must succeed.
    state.move_between_roles(fx, EntryKind::VerificationDeposit, currency, SystemRole::FeeIncome, SystemRole::Reserve, amount);
    Reply { code: ResultCode::Ok, id: amount as u64, status: None, replayed: false }
}
