//! The receiving side of cross-shard movements: credits from other shards' outboxes, exactly once.

use crate::ledger::ops::payment::land_income;
use crate::ledger::ops::refund::credit_refund;
use crate::ledger::state::{Context, Effects, ShardState};
use crate::ledger::types::*;
use crate::result::ResultCode;

/// Applies a credit sent by another shard; a sequence already applied is skipped (it is a resend).
pub fn apply_credit(state: &mut ShardState, context: &Context, credit: &RemoteCredit, fx: &mut Effects) -> Reply {
    let source = credit.source as usize;
    assert_ne!(credit.source, state.shard, "a shard does not send credits to itself");
    assert_eq!(credit.account.shard(state.shard_count), state.shard, "credit routed to the wrong shard");
    let applied = state.inbound_applied[source];
    if credit.sequence <= applied {
        return Reply { code: ResultCode::Ok, id: 0, status: None, replayed: true };
    }
    assert_eq!(credit.sequence, applied + 1, "credits from shard {source} arrive in order without gaps");
    state.inbound_applied[source] = credit.sequence;
    let transit = state.system_account(SystemRole::InTransit, credit.currency);
    state.begin_entry(fx, credit.order, EntryKind::RemoteCredit, credit.currency);
    state.post(fx, transit, Bucket::Settled, -credit.amount);
    let leg = Leg { account: credit.account, amount: credit.amount };
    match credit.purpose {
        CreditPurpose::RefundToPayer => credit_refund(state, context, fx, credit.order, leg),
        CreditPurpose::Commission | CreditPurpose::Adjustment => {
            let target = state.credit_target(fx, leg.account, credit.currency, leg.amount);
            state.post(fx, target, Bucket::Settled, leg.amount);
        }
        CreditPurpose::PaymentIncome => land_income(state, fx, context.day, credit.order, leg, credit.counterparty, credit.currency),
    }
    state.end_entry(fx);
    Reply { code: ResultCode::Ok, id: credit.order.0, status: None, replayed: false }
}

/// Drops credits the target shard has durably applied from the outbox towards it.
pub fn acknowledge(state: &mut ShardState, target: ShardId, sequence: u64) -> Reply {
    let outbox = &mut state.outboxes[target as usize];
    while outbox.pending.front().is_some_and(|c| c.sequence <= sequence) {
        outbox.pending.pop_front();
    }
    outbox.acknowledged = outbox.acknowledged.max(sequence);
    Reply { code: ResultCode::Ok, id: 0, status: None, replayed: false }
}
