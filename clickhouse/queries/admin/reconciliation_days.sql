-- reconciliation_days: the latest check of each UTC day in [from_day, to_day) for every provider.
-- params: from_day, to_day
-- row: ReconciliationRow (clickhouse/src/reconciliation.rs)
SELECT provider, day, recorded_nusd, reported_nusd, drift_percent, source, status, error, checked_at, version
FROM cost_reconciliation FINAL
WHERE day >= toDate(?) AND day < toDate(?)
ORDER BY day, provider
