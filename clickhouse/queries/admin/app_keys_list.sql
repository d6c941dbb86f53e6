-- app_keys_list: the app keys a caller may see (never their hashes), newest first.
-- Runs in the key and token database (<database>_keys, migration 0015).
-- params: {scope} (1 = 1 for admins, org_id = ? for an org, org_id = ? AND user_id = ? for a user-bound viewer)
-- row: KeyRow (dashboard-api/src/keys.rs)
SELECT key_hash, key_id, org_id, user_id, app_id, name, budget_scope, created_at, revoked_at, version, acts_for_end_users
FROM app_keys FINAL
WHERE {scope}
ORDER BY created_at DESC, key_id
