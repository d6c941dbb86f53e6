-- token_by_id: a token's full row by its public id (for revocation).
-- Runs in the key and token database (<database>_keys, migration 0015).
-- params: token_id
-- row: TokenStoredRow (dashboard-api/src/auth.rs)
SELECT token_hash, token_id, name, role, org_id, user_id, created_by, created_at, expires_at, revoked, revoked_at, version
FROM api_tokens FINAL
WHERE token_id = ?
LIMIT 1
