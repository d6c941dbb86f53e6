-- default_rule_scopes: what the default alert rules cover besides orgs (jobs/src/default_rules.rs;
-- the orgs are default_rule_orgs, in the key and token database): every live budget without soft
-- thresholds of its own ('budget': id, name), and every provider with a recorded balance
-- ('credits'; org_id '' for the deployment's own balances).
-- params: (none)
-- row: ScopeRow (jobs/src/default_rules.rs)
-- (Mutable columns are filtered outside the FINAL subquery, as in evaluator_rules.)
SELECT org_id, 'budget' AS what, toString(budget_id) AS id, name
FROM
(
    SELECT org_id, budget_id, name, soft_thresholds, deleted
    FROM budgets FINAL
)
WHERE deleted = 0 AND length(soft_thresholds) = 0
UNION ALL
SELECT org_id, 'credits' AS what, CAST(provider AS String) AS id, '' AS name
FROM provider_credits
WHERE balance_nusd IS NOT NULL
GROUP BY org_id, provider
