-- alert_exists: whether an alert with this id was ever written (dedup of edge-raised alerts).
-- params: alert_id
-- row: u64
SELECT count()
FROM alerts
WHERE alert_id = toUUID(?)
