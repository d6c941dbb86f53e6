-- tokens_list: every API token (never its hash), newest first.
-- Runs in the key and token database (<database>_keys, migration 0015).
-- params: (none)
-- row: TokenListRow (dashboard-api/src/auth.rs)
SELECT token_id, name, role, org_id, user_id, created_by, created_at, revoked
FROM api_tokens FINAL
ORDER BY created_at DESC, token_id
