-- export_events: raw usage events of one scope in [from, to), in table order, for exports (streamed).
-- params: {scope} (the tenant predicate, then provider = ? and the model predicate when filtered), from_unix, to_unix, limit
-- row: UsageEventRow (clickhouse/src/events.rs)
SELECT event_id, schema_version, ts, latency_ms, ttft_ms, upstream_ms, org_id, user_id, app_id, key_id,
       tag_keys, tag_values, provider, model_requested, model_served, endpoint, task_type, stream,
       edge_region, status_code, error_class, input_tokens, output_tokens, cached_input_tokens,
       cache_write_tokens, reasoning_tokens, usage_source, cost_nusd, cost_source, pricing_version,
       request_bytes, response_bytes, audio_input_tokens, image_input_tokens, audio_output_tokens,
       image_output_tokens, web_search_calls, file_search_calls, service_tier_requested, service_tier,
       batch_id, inserted_at
FROM usage_events
WHERE {scope} AND ts >= toDateTime(?) AND ts < toDateTime(?)
ORDER BY org_id, ts, event_id
LIMIT ?
