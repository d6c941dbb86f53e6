-- alerts_open_count: alerts not yet resolved in one scope (the overview's active alerts).
-- params: {orgs} (replaced by `1 = 1` for all orgs, else `org_id = ?`)
-- row: u64
-- (The state is filtered outside the FINAL subquery: filtering it inside could count an
-- older open version of an alert whose newest version is resolved.)
SELECT count()
FROM
(
    SELECT state
    FROM alerts FINAL
    WHERE {orgs}
)
WHERE state != 'resolved'
