-- job_lease: the newest version of one lease, and the server clock (one row even when the lease was never taken: then holder is empty and expires_at is 1970).
-- params: name
-- row: LeaseRow (jobs/src/lease.rs)
-- (argMax over every version rather than FINAL: the answer is the same, and the aggregate
-- always yields one row. Aliases differ from column names: 18.16 resolves an alias first.)
SELECT
    argMax(holder, version) AS current_holder,
    argMax(expires_at, version) AS current_expires_at,
    max(version) AS current_version,
    now() AS server_now
FROM job_leases
WHERE name = ?
