-- evaluator_alerts: the alerts the evaluator reconciles a tick with, of every org: all that are not
-- resolved, and those resolved since a cut-off (a person may have resolved one whose condition
-- still holds; the evaluator then waits for the condition to clear before opening another).
-- params: updated_since
-- row: AlertRow (clickhouse/src/alerts.rs)
-- (Mutable columns are filtered outside the FINAL subquery: filtering them inside could
-- keep an older version of a row whose newest version no longer matches.)
SELECT alert_id, org_id, rule_id, kind, severity, state, dedup_key, title, details, opened_at,
       acknowledged_by, acknowledged_at, resolved_by, resolved_at, updated_at, version
FROM
(
    SELECT alert_id, org_id, rule_id, kind, severity, state, dedup_key, title, details, opened_at,
       acknowledged_by, acknowledged_at, resolved_by, resolved_at, updated_at, version
    FROM alerts FINAL
)
WHERE state != 'resolved' OR updated_at >= toDateTime(?, 'UTC')
ORDER BY rule_id, dedup_key, opened_at, version
