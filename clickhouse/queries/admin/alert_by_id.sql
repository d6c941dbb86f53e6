-- alert_by_id: one alert, if the caller may see it.
-- params: {scope}, alert_id
-- row: AlertRow (clickhouse/src/alerts.rs)
SELECT alert_id, org_id, rule_id, kind, severity, state, dedup_key, title, details, opened_at,
       acknowledged_by, acknowledged_at, resolved_by, resolved_at, updated_at, version
FROM alerts FINAL
WHERE {scope} AND alert_id = toUUID(?)
LIMIT 1
