-- app_key_by_id: one app key by its public id, if the caller may see it (for revocation).
-- Runs in the key and token database (<database>_keys, migration 0015).
-- params: {scope}, key_id
-- row: KeyRow (dashboard-api/src/keys.rs)
SELECT key_hash, key_id, org_id, user_id, app_id, name, budget_scope, created_at, revoked_at, version, acts_for_end_users
FROM app_keys FINAL
WHERE {scope} AND key_id = ?
LIMIT 1
