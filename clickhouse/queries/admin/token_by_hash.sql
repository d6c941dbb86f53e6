-- token_by_hash: the live API token with this SHA-256 (dashboard-api authentication).
-- params: token_hash
-- row: TokenRow (dashboard-api/src/auth.rs)
SELECT token_id, name, role, org_id, user_id
FROM api_tokens FINAL
WHERE token_hash = ? AND revoked = 0 AND (expires_at IS NULL OR expires_at > now())
LIMIT 1
