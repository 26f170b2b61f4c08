//! Settlement's ledger step: unsettled income past its cycle becomes settled (withdrawable).

use crate::ledger::state::{Context, Effects, ShardState};
use crate::ledger::types::*;
use crate::money::Minor;
use crate::result::ResultCode;

/// Matures the calling platform's (all platforms' for the operator) income lots of business days
/// up to `through_day`; replies with the number of accounts that had something to mature.
pub fn mature(state: &mut ShardState, context: &Context, through_day: u32, fx: &mut Effects) -> Reply {
    let mut matured: Vec<(AccountId, Minor)> = Vec::new();
    for (account, lots) in &state.lots {
        let owner = state.account(*account).expect("lots are of local accounts");
        if context.platform != 0 && owner.platform != context.platform {
            continue;
        }
        let due: Minor = lots.iter().take_while(|(day, _)| *day <= through_day).map(|(_, amount)| amount).sum();
        if due > 0 {
            matured.push((*account, due));
        }
    }
    // The lots map is unordered: post in account order so that replay is byte-identical.
    matured.sort_unstable_by_key(|(account, _)| *account);
    for (account, due) in &matured {
        let (currency, platform) = {
            let a = state.account(*account).expect("local");
            (a.currency, a.platform)
        };
        state.settled.push(crate::ledger::state::SettledRow { through_day, account: *account, platform, currency, amount: *due, at: context.now });
        state.begin_entry(fx, NO_ORDER, EntryKind::Mature, currency);
        state.debit_unsettled_only(fx, *account, *due);
        state.post(fx, *account, Bucket::Settled, *due);
        state.end_entry(fx);
    }
    Reply { code: ResultCode::Ok, id: matured.len() as u64, status: None, replayed: false }
}
