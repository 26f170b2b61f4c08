# Writes alerts_test.yml: for each alert, series that make it fire and series that must not.
import yaml
rules = {r['alert']: r for g in yaml.safe_load(open('alerts.yml'))['groups'] for r in g['rules']}
def runbook(name): return rules[name]['annotations']['runbook']
I = 'clearing:8080'
tests = []
def case(name, interval, series, evals):
    tests.append({'name': name, 'interval': interval, 'input_series': series, 'alert_rule_test': evals})
def fired(alert, at, labels, summary):
    return {'eval_time': at, 'alertname': alert, 'exp_alerts': [{'exp_labels': labels, 'exp_annotations': {'summary': summary, 'runbook': runbook(alert)}}]}
def quiet(alert, at):
    return {'eval_time': at, 'alertname': alert, 'exp_alerts': []}

case('a stopped shard fires after a minute; a running one never', '15s', [
    {'series': f'clearing_shard_stopped{{instance="{I}",job="clearing",shard="0"}}', 'values': '0 0 0 0 1x10'},
    {'series': f'clearing_shard_stopped{{instance="{I}",job="clearing",shard="1"}}', 'values': '0x14'},
], [quiet('ClearingShardStopped', '1m'), quiet('ClearingShardStopped', '1m30s'),
    fired('ClearingShardStopped', '2m30s', {'severity': 'critical', 'instance': I, 'shard': '0'}, f'Shard 0 of {I} has stopped')])

case('failing invariants fire at once; passing ones never', '1m', [
    {'series': f'clearing_invariants_ok{{instance="{I}",job="clearing"}}', 'values': '1 1 0 0'},
], [quiet('ClearingInvariantsFailing', '1m'),
    fired('ClearingInvariantsFailing', '2m', {'severity': 'critical', 'instance': I, 'job': 'clearing'}, f'Ledger invariants do not hold on {I}')])

case('an outbox backlog fires after ten minutes above the threshold; a short burst does not', '1m', [
    {'series': f'clearing_shard_outbox_pending{{instance="{I}",job="clearing",shard="1"}}', 'values': '0 40000 0 40000x12'},
    {'series': f'clearing_shard_outbox_pending{{instance="{I}",job="clearing",shard="0"}}', 'values': '100x15'},
], [quiet('ClearingOutboxBacklog', '5m'), quiet('ClearingOutboxBacklog', '12m'),
    fired('ClearingOutboxBacklog', '14m', {'severity': 'warning', 'instance': I, 'shard': '1'}, f'Shard 1 of {I} has 40000 cross-shard credits unacknowledged')])

# Shard 0: 100 writes a minute, all under 1 ms. Shard 1: the same for ten minutes, then 100 a minute of which 10
# take 100 ms (le 0.1), so the p99 is in the 0.05..0.1 bucket (above the 50 ms threshold).
buckets = ['0.001', '0.05', '0.1', '+Inf']
series = []
for le in buckets:
    series.append({'series': f'clearing_shard_fsync_duration_seconds_bucket{{instance="{I}",job="clearing",shard="0",le="{le}"}}', 'values': '0+100x40'})
    fast = {'0.001': '0+100x10 1090+90x30', '0.05': '0+100x10 1090+90x30'}.get(le, '0+100x40')
    series.append({'series': f'clearing_shard_fsync_duration_seconds_bucket{{instance="{I}",job="clearing",shard="1",le="{le}"}}', 'values': fast})
case('slow durable writes fire after ten minutes; fast ones never', '1m', series,
     [quiet('ClearingFsyncSlow', '10m'), quiet('ClearingFsyncSlow', '18m'),
      fired('ClearingFsyncSlow', '30m', {'severity': 'warning', 'instance': I, 'shard': '1'}, f'p99 durable write of shard 1 on {I} is 95ms')])

case('a failed settlement run fires until the next run succeeds', '1m', [
    {'series': f'clearing_settlement_failures_in_a_row{{instance="{I}",job="clearing"}}', 'values': '0 0 1 2 0'},
], [quiet('ClearingSettlementRunFailed', '1m'),
    fired('ClearingSettlementRunFailed', '3m', {'severity': 'critical', 'instance': I}, f'The daily settlement run on {I} failed 2 time(s) in a row'),
    quiet('ClearingSettlementRunFailed', '4m')])

case('cases open for a day fire; cases resolved within the day do not', '5m', [
    {'series': f'clearing_reconciliation_cases_open{{instance="{I}",job="clearing"}}', 'values': '0 2x240 0 3x360'},
], [quiet('ClearingReconciliationCasesOpen', '20h'), quiet('ClearingReconciliationCasesOpen', '30h'),
    fired('ClearingReconciliationCasesOpen', '46h', {'severity': 'warning', 'instance': I}, f'3 reconciliation cases open on {I} for more than a day')])

case('a filter of cold numbers that cannot grow fires after five minutes; a growing one never', '1m', [
    {'series': f'clearing_cold_filter_stopped{{instance="{I}",job="clearing"}}', 'values': '0 0 1x10'},
    {'series': f'clearing_cold_filter_stopped{{instance="other:8080",job="clearing"}}', 'values': '0x12'},
], [quiet('ClearingColdFilterStopped', '4m'),
    fired('ClearingColdFilterStopped', '8m', {'severity': 'warning', 'instance': I}, f'The filter of cold order numbers on {I} cannot grow')])

doc = {'rule_files': ['alerts.yml'], 'evaluation_interval': '15s', 'tests': tests}
header = '# Unit tests of alerts.yml: each alert fires on the series that should page and stays quiet on\n# the ones that should not. Run: promtool test rules ops/prometheus/alerts_test.yml\n# (written by hand as data; the runbook texts repeat alerts.yml\'s, as promtool compares them).\n'
open('alerts_test.yml', 'w').write(header + yaml.safe_dump(doc, sort_keys=False, width=120, allow_unicode=True))
