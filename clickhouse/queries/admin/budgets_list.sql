-- budgets_list: the live budgets a caller may see, by org and name.
-- params: {scope} (1 = 1 for admins, org_id = ? for an org, org_id = ? AND user_id = ? for a user-bound viewer)
-- row: BudgetRow (clickhouse/src/budgets.rs)
-- (Mutable columns are filtered outside the FINAL subquery: filtering them inside could
-- keep an older version of a row whose newest version no longer matches.)
SELECT budget_id, org_id, scope, user_id, app_id, name, period, limit_nusd, soft_thresholds, mode, enabled,
       created_by, created_at, updated_at, deleted, version, reserve_output_tokens
FROM
(
    SELECT budget_id, org_id, scope, user_id, app_id, name, period, limit_nusd, soft_thresholds, mode, enabled,
       created_by, created_at, updated_at, deleted, version, reserve_output_tokens
    FROM budgets FINAL
    WHERE {scope}
)
WHERE deleted = 0
ORDER BY org_id, name, budget_id
