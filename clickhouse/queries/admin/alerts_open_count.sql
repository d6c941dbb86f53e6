-- alerts_open_count: alerts not yet resolved in one scope (the overview's "active alerts").
-- params: {orgs} (replaced by `1 = 1` for all orgs, else `org_id = ?`)
-- row: u64
SELECT count()
FROM alerts FINAL
WHERE {orgs} AND state != 'resolved'
