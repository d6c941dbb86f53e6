-- evaluator_rules: every enabled, live alert rule of every org, the input of one evaluator tick.
-- params: (none)
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
)
WHERE deleted = 0 AND enabled = 1
ORDER BY org_id, rule_id
