-- budget_by_id: one live budget, if the caller may see it (another org gives no row, so ids do not leak).
-- params: {scope}, budget_id
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
    WHERE {scope} AND budget_id = toUUID(?)
)
WHERE deleted = 0
LIMIT 1
