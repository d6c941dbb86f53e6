-- 0015 reads on a cluster (#22): a Distributed table over each rollup, as 0001 has over
-- usage_events. On a cluster each shard's views aggregate that shard's rows (rows are sharded
-- by org, so one org's rollup rows live on one shard); a query through these tables runs on
-- every shard and merges the answers — sums add, `uniqExactMerge` and
-- `quantilesTDigestMerge` merge the states — so it gives what one server would. Single-node
-- deployments skip every statement (there is nothing to merge).

-- cluster-only
CREATE TABLE IF NOT EXISTS usage_hourly_distributed AS usage_hourly
ENGINE = Distributed(${cluster}, ${database}, usage_hourly, cityHash64(org_id));

-- cluster-only
CREATE TABLE IF NOT EXISTS usage_daily_distributed AS usage_daily
ENGINE = Distributed(${cluster}, ${database}, usage_daily, cityHash64(org_id));

-- cluster-only
CREATE TABLE IF NOT EXISTS org_daily_distributed AS org_daily
ENGINE = Distributed(${cluster}, ${database}, org_daily, cityHash64(org_id));

-- cluster-only
CREATE TABLE IF NOT EXISTS org_model_daily_distributed AS org_model_daily
ENGINE = Distributed(${cluster}, ${database}, org_model_daily, cityHash64(org_id));
