-- integrity/rollup_buckets: per org and bucket, what a rollup holds from a time on.
-- params: {rollup} (the table), {bucket} (toUInt32(hour) or toUInt32(day) * 86400: the
-- bucket's start in unix seconds), from (unix seconds, a bucket start)
-- row: BucketTotals (src/integrity.rs)
SELECT
    org_id,
    b AS bucket,
    n_requests AS requests,
    n_cost AS cost_nusd,
    n_input AS input_tokens,
    n_output AS output_tokens
FROM
(
    SELECT
        org_id,
        {bucket} AS b,
        sum(requests) AS n_requests,
        sum(total_cost_nusd) AS n_cost,
        sum(total_input_tokens) AS n_input,
        sum(total_output_tokens) AS n_output
    FROM {rollup}
    WHERE {bucket} >= ?
    GROUP BY org_id, b
)
