-- credit_balances: per provider key, the newest observation that carried a balance (a failed poll
-- records no balance and must not hide the last known one), with when it was made.
-- params: {orgs} (replaced by `org_id = ?` or `org_id IN (?, ...)`), provider
-- row: BalanceRow (jobs/src/evaluator/credit.rs)
-- (Aliases differ from column names: 18.16 refuses an aggregate alias reused inside another.)
SELECT
    provider,
    key_label,
    org_id,
    argMax(known_balance, observed_at) AS latest_balance_nusd,
    max(observed_at) AS balance_observed_at
FROM
(
    SELECT provider, key_label, org_id, assumeNotNull(balance_nusd) AS known_balance, observed_at
    FROM provider_credits
    WHERE {orgs} AND provider = ? AND isNotNull(balance_nusd)
)
GROUP BY provider, key_label, org_id
ORDER BY provider, key_label, org_id
