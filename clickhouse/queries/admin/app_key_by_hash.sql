-- app_key_by_hash: the live app key with this SHA-256 (the signed lookup the edge worker calls).
-- Runs in the key and token database (<database>_keys, migration 0015).
-- params: key_hash
-- row: KeyRow (dashboard-api/src/keys.rs)
-- (Mutable columns are filtered outside the FINAL subquery: filtering them inside could
-- keep an older version of a row whose newest version no longer matches.)
SELECT key_hash, key_id, org_id, user_id, app_id, name, budget_scope, created_at, revoked_at, version, acts_for_end_users
FROM
(
    SELECT key_hash, key_id, org_id, user_id, app_id, name, budget_scope, created_at, revoked_at, version, acts_for_end_users
    FROM app_keys FINAL
    WHERE key_hash = ?
)
WHERE revoked_at IS NULL
LIMIT 1
