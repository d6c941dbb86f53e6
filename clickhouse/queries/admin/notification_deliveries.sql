-- notification_deliveries: the newest delivery attempts of one rule (test sends and alerts), newest first.
-- params: {orgs} (replaced by `1 = 1` for admins, else `org_id = ?`), rule_id, limit
-- row: DeliveryRow (clickhouse/src/alerts.rs)
SELECT delivery_id, org_id, rule_id, alert_id, event, channel, attempt, status, http_status, error,
       duration_ms, attempted_at
FROM notification_deliveries
WHERE {orgs} AND rule_id = toUUID(?)
ORDER BY attempted_at DESC, delivery_id DESC, attempt DESC
LIMIT ?
