-- alert_rule_by_id: one live alert rule, if the caller may see it.
-- params: {scope}, rule_id
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
    WHERE {scope} AND rule_id = toUUID(?)
)
WHERE deleted = 0
LIMIT 1
