-- rejects_count: records of one org the collectors refused (usage_rejects, migration 0004) in
-- [from, to) — what the `records_rejected` alert rule watches. Records whose org could not be
-- read are counted by the collectors' tollgate_collector_records_rejected_total metric only.
-- params: org_id, from, to
-- row: u64
SELECT count()
FROM usage_rejects
WHERE org_id = ?
  AND received_at >= toDateTime(?, 'UTC') AND received_at < toDateTime(?, 'UTC')
