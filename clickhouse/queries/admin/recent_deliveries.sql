-- recent_deliveries: the newest notification delivery attempts of every rule in scope (the
-- Alerts tab's delivery log, GET /api/v1/notification-deliveries), newest first.
-- params: {orgs} (replaced by `1 = 1` for admins, else `org_id = ?`), limit
-- row: DeliveryRow (clickhouse/src/alerts.rs)
SELECT delivery_id, org_id, rule_id, alert_id, event, channel, attempt, status, http_status, error,
       duration_ms, attempted_at
FROM notification_deliveries
WHERE {orgs}
ORDER BY attempted_at DESC, delivery_id DESC, attempt DESC
LIMIT ?
