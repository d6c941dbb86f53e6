-- token_by_hash: the live API token with this SHA-256 (dashboard-api authentication).
-- Runs in the key and token database (<database>_keys, migration 0015).
-- params: token_hash
-- row: TokenRow (dashboard-api/src/auth.rs)
-- (Mutable columns are filtered outside the FINAL subquery: filtering them inside could
-- keep an older version of a row whose newest version no longer matches.)
SELECT token_id, name, role, org_id, user_id
FROM
(
    SELECT token_id, name, role, org_id, user_id, revoked, expires_at
    FROM api_tokens FINAL
    WHERE token_hash = ?
)
WHERE revoked = 0 AND (expires_at IS NULL OR expires_at > now())
LIMIT 1
