-- credits_latest: the latest observation of the balance of every provider key.
-- (Aliases differ from column names: 18.16 refuses an aggregate alias reused inside another.)
-- params: {orgs} (replaced by `1 = 1` for admins, else `org_id = ?`)
-- row: CreditRow (dashboard-api/src/credits.rs)
SELECT
    provider,
    key_label,
    org_id,
    argMax(balance_nusd, observed_at) AS latest_balance_nusd,
    argMax(total_credits_nusd, observed_at) AS latest_total_credits_nusd,
    argMax(total_usage_nusd, observed_at) AS latest_total_usage_nusd,
    argMax(status, observed_at) AS latest_status,
    argMax(error, observed_at) AS latest_error,
    max(observed_at) AS last_observed_at
FROM provider_credits
WHERE {orgs}
GROUP BY provider, key_label, org_id
ORDER BY provider, key_label, org_id
