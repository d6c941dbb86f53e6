-- default_rule_orgs: every org that has an admin token or an app key (jobs/src/default_rules.rs).
-- Runs in the key and token database (<database>_keys, migration 0015).
-- params: (none)
-- row: ScopeRow (jobs/src/default_rules.rs)
SELECT org_id, 'org' AS what, '' AS id, '' AS name
FROM api_tokens
WHERE org_id != ''
GROUP BY org_id
UNION ALL
SELECT org_id, 'org' AS what, '' AS id, '' AS name
FROM app_keys
GROUP BY org_id
