-- alert_rules_list: the live alert rules a caller may see, by org and name.
-- params: {scope} (1 = 1 for admins, org_id = ? otherwise)
-- row: RuleRow (clickhouse/src/alerts.rs)
-- (Mutable columns are filtered outside the FINAL subquery: filtering them inside could
-- keep an older version of a row whose newest version no longer matches.)
SELECT rule_id, org_id, name, kind, params, severity, channels, enabled, created_by, created_at, updated_at,
       deleted, version
FROM
(
    SELECT rule_id, org_id, name, kind, params, severity, channels, enabled, created_by, created_at, updated_at,
       deleted, version
    FROM alert_rules FINAL
    WHERE {scope}
)
WHERE deleted = 0
ORDER BY org_id, name, rule_id
