-- integrity/raw_buckets: per org and bucket, what usage_events holds from a time on: the truth
-- every rollup is checked against.
-- params: {bucket} (toStartOfHour(ts) or toStartOfDay(ts)), from (unix seconds, a bucket start)
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
        toUInt32({bucket}) AS b,
        count() AS n_requests,
        sum(cost_nusd) AS n_cost,
        sum(toUInt64(input_tokens)) AS n_input,
        sum(toUInt64(output_tokens)) AS n_output
    FROM usage_events
    WHERE ts >= toDateTime(?, 'UTC')
    GROUP BY org_id, b
)
