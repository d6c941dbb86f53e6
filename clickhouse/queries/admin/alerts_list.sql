-- alerts_list: alerts a caller may see, newest first, optionally of one state and of one severity.
-- params: {scope}, state (twice, empty for any), severity (twice, empty for any), limit
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
    WHERE {scope}
)
WHERE (? = '' OR state = ?) AND (? = '' OR severity = ?)
ORDER BY opened_at DESC, alert_id
LIMIT ?
