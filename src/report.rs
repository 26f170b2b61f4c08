//! Text reports of shard state and invariants, for the CLI.

use std::io::Write;
use std::sync::atomic::Ordering;

use anyhow::Result;
use engine::chart::ChartOfAccounts;
use engine::invariants::InvariantReport;
use engine::ledger::state::ShardState;
use engine::ledger::types::{AccountKind, SystemRole};
use engine::Engine;
use storage::Store;

use crate::config::Config;

/// One line per system stripe: subject, role, currency, balance (the stripe's `i128`, exactly).
fn system_lines(state: &ShardState, chart: &ChartOfAccounts) -> Vec<String> {
    let mut lines = Vec::new();
    for (currency_index, currency) in state.currencies.iter().enumerate() {
        for role in SystemRole::ALL {
            let id = state.system_account(role, engine::money::CurrencyId(currency_index as u8));
            let account = state.account(id).expect("system stripes are local");
            let subject = chart.subject(AccountKind::System(role));
            lines.push(format!(
                "    {} {:<15} {} {:>20}",
                subject.code,
                role.name(),
                currency.code_str(),
                clearing_actor::reserve::format_wide(currency, state.balance(account))
            ));
        }
    }
    lines
}

/// Prints the running engine's shards: published counters and system stripes.
pub fn print_shards_online(engine: &Engine, config: &Config, out: &mut dyn Write) -> Result<()> {
    for (shard, counters) in engine.counters().iter().enumerate() {
        let batches = counters.batches.load(Ordering::Relaxed);
        let total_fsync_us = counters.total_fsync_us.load(Ordering::Relaxed);
        writeln!(
            out,
            "shard {shard}: accounts={} mailbox_depth={} last_sequence={} outbox_pending={} batches={} commands={} \
             last_batch_size={} largest_batch_size={} fsync_us_last={} fsync_us_mean={} fsync_us_max={} stopped={}",
            counters.accounts.load(Ordering::Relaxed),
            engine.mailbox_depth(shard as u16),
            counters.last_sequence.load(Ordering::Relaxed),
            counters.outbox_pending.load(Ordering::Relaxed),
            batches,
            counters.commands.load(Ordering::Relaxed),
            counters.last_batch_size.load(Ordering::Relaxed),
            counters.largest_batch_size.load(Ordering::Relaxed),
            counters.last_fsync_us.load(Ordering::Relaxed),
            total_fsync_us.checked_div(batches).unwrap_or(0),
            counters.largest_fsync_us.load(Ordering::Relaxed),
            counters.stopped.load(Ordering::Relaxed),
        )?;
        let chart = config.chart.clone();
        let lines = engine.read_shard(shard as u16, move |state| system_lines(state, &chart))?;
        for line in lines {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

/// Prints each shard as recovery rebuilds it (its newest usable checkpoint and the journal after
/// it; no server needed), with how long that took.
pub fn print_shards_offline(store: &std::sync::Arc<dyn Store>, config: &Config, out: &mut dyn Write) -> Result<()> {
    for shard in 0..config.engine.shard_count {
        let started = std::time::Instant::now();
        // As a start does: history a checkpoint kept as blobs stays out of memory.
        let history = engine::checkpoint::HistoryReader::new(store.clone(), shard);
        let recovered = engine::journal::recover_shard_filtered(&**store, shard, None, Some(&history))?;
        let took = started.elapsed();
        let (state, last_sequence) = (recovered.state, recovered.head.sequence);
        for reason in &recovered.skipped {
            writeln!(out, "shard {shard}: skipped {reason}")?;
        }
        let from = match recovered.checkpoint {
            Some(sequence) => format!("checkpoint at batch {sequence} + {} batches of journal", last_sequence - sequence),
            None => format!("{last_sequence} batches of journal, no checkpoint"),
        };
        writeln!(
            out,
            "shard {shard}: accounts={} customer_accounts={customers} orders={} last_sequence={last_sequence} outbox_pending={} (recovered from {from} in {:.3} s)",
            state.accounts.len(),
            state.orders.len(),
            state.outbox_pending(),
            took.as_secs_f64(),
            customers = state.accounts.iter().filter(|a| a.kind == AccountKind::Customer).count(),
        )?;
        for line in system_lines(&state, &config.chart) {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

/// Prints an invariant report; the first line is `invariants: ok` or `invariants: FAILED`.
pub fn print_invariants(report: &InvariantReport, out: &mut dyn Write) -> Result<()> {
    writeln!(out, "invariants: {}", if report.ok { "ok" } else { "FAILED" })?;
    if report.entries_checked > 0 {
        writeln!(out, "  entries checked: {}", report.entries_checked)?;
    }
    for c in &report.currencies {
        writeln!(out, "  {} sum_minor={} in_transit_minor={} in_flight_minor={}", c.currency, c.sum_minor, c.in_transit_minor, c.in_flight_minor)?;
    }
    for failure in &report.failures {
        writeln!(out, "  failure: {failure}")?;
    }
    Ok(())
}
