#!/usr/bin/env python3
"""Tollgate's ClickHouse compatibility check: 18.16 (the dev server) vs 26.9 (chdb-core).

Run by `cargo xtask compat` (and as a step of `cargo xtask test`), which first
- migrates database DATABASE on the 18.16 server with the real runner (tollgate-migrate), and
- renders every migration for a 26.9 server (`tollgate-migrate --print --json`) into STATEMENTS.

This script then
1. applies every rendered migration statement in chdb (ClickHouse 26.9, in process), gated ones
   included;
2. inserts the same deterministic data set into both engines (several INSERTs, so rollups have
   unmerged parts), with JSONEachRow;
3. checks, on each engine, that every rollup metric equals the same aggregate over the raw rows,
   before and after OPTIMIZE ... FINAL;
4. runs every named query in clickhouse/queries/ (every scope kind) and every analyst view on
   both engines and compares the answers value by value;
5. checks what only a modern server adds (insert_deduplication_token);
6. checks the per-org analyst roles' SQL (clickhouse/src/analyst_roles.rs) on 26.9: every
   statement parses, the sync's reads answer, every granted object exists, every row policy's
   filter runs on its table.

Values are compared after normalising what legitimately differs between versions in text
output: Decimal trailing zeros (18.16 prints 1.250000000, 26.9 prints 1.25) and float digits
(relative tolerance 1e-9). Exits non-zero on any difference.
"""

import argparse
import json
import math
import random
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path

import chdb
from chdb import session as chdb_session

# --------------------------------------------------------------------------------------------
# Engines


class Server:
    """The 18.16 server over HTTP."""

    name = "18.16"

    def __init__(self, url, database):
        self.url = url.rstrip("/")
        self.database = database

    def query(self, sql, fmt="TabSeparated"):
        q = urllib.parse.urlencode({"database": self.database, "wait_end_of_query": "1"})
        body = sql if fmt is None else f"{sql}\nFORMAT {fmt}"
        req = urllib.request.Request(f"{self.url}/?{q}", data=body.encode())
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return resp.read().decode()
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"18.16: {e.read().decode()[:600]}\n--- SQL:\n{sql[:2000]}") from None

    def execute(self, sql):
        self.query(sql, fmt=None)

    def insert_json(self, table, rows):
        self.execute(f"INSERT INTO {table} FORMAT JSONEachRow\n" + "\n".join(rows))


class Chdb:
    """ClickHouse 26.9 in process."""

    name = "26.9"

    def __init__(self, path, database):
        # The default user may read system.roles and system.row_policies, as the user Tollgate
        # migrates with on a modern server may (access_management; step 6). In process there is
        # still no writable user directory, so no role can be created.
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        users = path / "users.xml"
        users.write_text(
            "<clickhouse><profiles><default/></profiles><quotas><default/></quotas><users><default>"
            "<password></password><networks><ip>::/0</ip></networks><profile>default</profile>"
            "<quota>default</quota><access_management>1</access_management></default></users>"
            "</clickhouse>")
        config = path / "config.xml"
        config.write_text(f"<clickhouse><users_config>{users}</users_config></clickhouse>")
        self.session = chdb_session.Session(f"{path / 'data'}?config-file={config}")
        self.session.query(f"CREATE DATABASE IF NOT EXISTS {database}")
        self.session.query(f"USE {database}")
        self.version = self.query("SELECT version()").strip()

    def query(self, sql, fmt="TabSeparated"):
        try:
            if fmt is None:
                self.session.query(sql)
                return ""
            return self.session.query(sql, fmt).bytes().decode()
        except Exception as e:  # chdb raises its own error types
            raise RuntimeError(f"26.9: {str(e)[:600]}\n--- SQL:\n{sql[:2000]}") from None

    def execute(self, sql):
        self.query(sql, fmt=None)

    def insert_json(self, table, rows):
        self.execute(f"INSERT INTO {table} FORMAT JSONEachRow\n" + "\n".join(rows))


# --------------------------------------------------------------------------------------------
# Deterministic data: the same rows for both engines. Every error class, usage/cost source,
# token class, stream with and without a first byte, empty model_served and unpriced calls.

ERRORS = [
    ("none", 200), ("none", 200), ("none", 200), ("none", 200), ("none", 200), ("none", 200),
    ("client", 400), ("rate_limited", 429), ("upstream_5xx", 502), ("timeout", 504),
    ("aborted", 200), ("budget_blocked", 0), ("network", 0), ("internal", 0),
]
MODELS = [
    ("openai", "gpt-4o", "gpt-4o-2024-08-06"),
    ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
    ("openai", "o3-mini", "o3-mini-2025-01-31"),
    ("openrouter", "anthropic/claude-sonnet-4-5", "anthropic/claude-sonnet-4-5"),
    ("openrouter", "mystery/model-x", "mystery/model-x"),
]
START = datetime(2026, 1, 29, tzinfo=timezone.utc)


def dataset(count, seed=20260129):
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        ts = START + timedelta(seconds=int(i * 6 * 86400 / count))
        org = min(rng.randrange(3), rng.randrange(3))
        user = min(rng.randrange(8), rng.randrange(8))
        app = (user * 7 + org) % 3
        provider, requested, served = MODELS[(app + min(rng.randrange(5), rng.randrange(5))) % 5]
        error_class, status = ERRORS[i % len(ERRORS)] if i < 40 else ERRORS[rng.randrange(len(ERRORS))]
        stream = i % 3 != 0
        latency = 150 + rng.randrange(5000)
        ok = error_class in ("none", "aborted")
        inp = 50 + rng.randrange(5000) if ok else 0
        out = 10 + rng.randrange(1200) if ok else 0
        unpriced = requested.startswith("mystery/")
        cost_nanos = 0 if (unpriced or not ok) else inp * 2500 + out * 10000
        rows.append(json.dumps({
            "event_id": "0190%04x-%04x-7000-8000-%012x" % (i >> 16 & 0xFFFF, i & 0xFFFF, i),
            "schema_version": 1,
            "ts": ts.strftime("%Y-%m-%d %H:%M:%S"),
            "latency_ms": latency,
            "ttft_ms": (40 + rng.randrange(latency // 2)) if (stream and ok) else None,
            "upstream_ms": latency - 20,
            "org_id": f"org_{org:03d}",
            "user_id": "" if user == 7 else f"user_{org:03d}_{user:02d}",
            "app_id": f"app_{org:03d}_{app}",
            "key_id": f"key_{org:03d}_{app}",
            "tag_keys": ["env"] if user % 2 == 0 else [],
            "tag_values": ["prod"] if user % 2 == 0 else [],
            "provider": provider,
            "model_requested": requested,
            "model_served": served if ok else "",
            "endpoint": "chat.completions",
            "task_type": ["chat", "summarize", "extract"][(user + app) % 3],
            "stream": 1 if stream else 0,
            "edge_region": "FRA",
            "status_code": status,
            "error_class": error_class,
            "input_tokens": inp,
            "output_tokens": out,
            "cached_input_tokens": inp // 3 if (ok and i % 4 == 0) else 0,
            "cache_write_tokens": inp // 5 if (ok and i % 7 == 0) else 0,
            "reasoning_tokens": out // 2 if (ok and requested == "o3-mini") else 0,
            "usage_source": "provider" if error_class == "none" else ("estimated" if ok else "none"),
            "cost_nusd": "%d.%09d" % (cost_nanos // 10**9, cost_nanos % 10**9),
            "cost_source": "unpriced" if unpriced else ("provider" if provider == "openrouter" else "price_table"),
            "pricing_version": "" if unpriced else "pt-compat00001",
            "request_bytes": 300 + i % 700,
            "response_bytes": 900 + i % 3000,
            "batch_id": f"compat-{i // 500}",
            "inserted_at": "2026-02-05 00:00:00",
        }))
        # Decimal as a JSON number written digit for digit (18.16 refuses a quoted decimal).
        rows[-1] = re.sub(r'"cost_nusd": "([0-9.]+)"', r'"cost_nusd": \1', rows[-1])
    return rows


# --------------------------------------------------------------------------------------------
# Comparing text results across versions

NUMBER = re.compile(r"^-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$|^-?(nan|inf)$")


def cell(v):
    if v.startswith("[") and v.endswith("]"):
        inner = v[1:-1]
        return tuple(cell(x) for x in inner.split(",")) if inner else ()
    if NUMBER.match(v):
        try:
            return Decimal(v)
        except InvalidOperation:
            return v
    return v


def parse(tsv):
    return [tuple(cell(c) for c in line.split("\t")) for line in tsv.splitlines()]


def same(a, b, sketch_tol=0.0):
    """Equal cells; numbers within 1e-9. Arrays (the percentile lists) within `sketch_tol`
    relative when the query reads t-digest states, whose merge differs slightly between server
    versions; every other cell stays exact."""
    if isinstance(a, tuple) and isinstance(b, tuple):
        if len(a) != len(b):
            return False
        if sketch_tol and all(isinstance(x, Decimal) for x in a + b):
            return all(math.isclose(float(x), float(y), rel_tol=sketch_tol, abs_tol=1e-9)
                       for x, y in zip(a, b))
        return all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, Decimal) and isinstance(b, Decimal):
        if a.is_nan() or b.is_nan():
            return a.is_nan() and b.is_nan()
        if a == b:
            return True
        fa, fb = float(a), float(b)
        return math.isclose(fa, fb, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def diff(x, y, sketch_tol=0.0):
    rx, ry = parse(x), parse(y)
    if len(rx) != len(ry):
        return f"{len(rx)} rows vs {len(ry)} rows"
    for i, (a, b) in enumerate(zip(rx, ry)):
        if not all(same(p, q, sketch_tol) for p, q in zip(a, b)) or len(a) != len(b):
            return f"row {i}:\n    {a}\n    {b}"
    return None


# --------------------------------------------------------------------------------------------
# The checks

METRICS = [
    ("requests", "count()"),
    ("errors", "countIf(error_class != 'none')"),
    ("errors_client", "countIf(error_class = 'client')"),
    ("errors_rate_limited", "countIf(error_class = 'rate_limited')"),
    ("errors_upstream_5xx", "countIf(error_class = 'upstream_5xx')"),
    ("errors_timeout", "countIf(error_class = 'timeout')"),
    ("errors_aborted", "countIf(error_class = 'aborted')"),
    ("errors_budget_blocked", "countIf(error_class = 'budget_blocked')"),
    ("errors_network", "countIf(error_class = 'network')"),
    ("errors_internal", "countIf(error_class = 'internal')"),
    ("streamed_requests", "countIf(stream = 1)"),
    ("estimated_usage_requests", "countIf(usage_source != 'provider')"),
    ("unpriced_requests", "countIf(cost_source = 'unpriced')"),
    ("total_input_tokens", "sum(toUInt64(input_tokens))"),
    ("total_output_tokens", "sum(toUInt64(output_tokens))"),
    ("total_cached_input_tokens", "sum(toUInt64(cached_input_tokens))"),
    ("total_cache_write_tokens", "sum(toUInt64(cache_write_tokens))"),
    ("total_reasoning_tokens", "sum(toUInt64(reasoning_tokens))"),
    ("total_cost_nusd", "sum(cost_nusd)"),
    ("total_request_bytes", "sum(request_bytes)"),
    ("total_response_bytes", "sum(response_bytes)"),
    ("total_latency_ms", "sum(toUInt64(latency_ms))"),
    ("total_upstream_ms", "sum(toUInt64(upstream_ms))"),
    ("total_ttft_ms", "sum(toUInt64(ifNull(ttft_ms, 0)))"),
    ("ttft_count", "countIf(isNotNull(ttft_ms))"),
]
USER_DIMS = "user_id, app_id, provider, model, task_type"
# (table, bucket column, raw bucket expression, key columns after org_id and bucket, org grain)
GRAINS = [
    ("usage_hourly", "hour", "toStartOfHour(ts)", USER_DIMS, False),
    ("usage_daily", "day", "toDate(ts)", USER_DIMS, False),
    ("org_model_daily", "day", "toDate(ts)", "provider, model", True),
    ("org_daily", "day", "toDate(ts)", "", True),
]
MODEL_EXPR = "model_requested AS model"  # migration 0010: the requested model is the identity


def keys(dims):
    return "org_id, bucket" + (f", {dims}" if dims else "")


def rollup_sql(table, bucket, dims, org_grain):
    """Re-aggregated rollup. Org-grain tables: their distinct-id sets (their t-digests are
    approximate and compared across engines by the named queries, not with the raw rows)."""
    cols = [f"sum({c})" for c, _ in METRICS] + ([
        "uniqExactMerge(users_state)",
        "uniqExactMerge(apps_state)",
    ] if org_grain else [
        "quantilesMerge(0.5, 0.9, 0.95, 0.99)(latency_quantiles)",
        "quantilesMerge(0.5, 0.9, 0.95, 0.99)(ttft_quantiles)",
    ])
    k = keys(dims)
    return (f"SELECT {k}, {', '.join(cols)} FROM (SELECT *, {bucket} AS bucket FROM {table}) "
            f"GROUP BY {k} ORDER BY {k}")


def raw_sql(bucket_expr, dims, org_grain):
    cols = [raw for _, raw in METRICS] + ([
        "uniqExactIf(user_id, user_id != '')",
        "uniqExact(app_id)",
    ] if org_grain else [
        "quantiles(0.5, 0.9, 0.95, 0.99)(toFloat64(latency_ms))",
        "quantilesIf(0.5, 0.9, 0.95, 0.99)(toFloat64(ifNull(ttft_ms, 0)), isNotNull(ttft_ms))",
    ])
    k = keys(dims)
    return (f"SELECT {k}, {', '.join(cols)} FROM "
            f"(SELECT *, {bucket_expr} AS bucket, {MODEL_EXPR} FROM usage_events) "
            f"GROUP BY {k} ORDER BY {k}")


SCOPES = [
    ("all orgs", "1 = 1", []),
    ("org", "org_id = ?", ["org_000"]),
    ("org+user", "org_id = ? AND user_id = ?", ["org_000", "user_000_00"]),
    ("org+app", "org_id = ? AND app_id = ?", ["org_000", "app_000_0"]),
]
ORG_SCOPES = ("all orgs", "org")

# What tollgate_clickhouse::queries::DailyRollup fills in for each table a `-- daily:` file reads.
ORG_GRAIN_PLACEHOLDERS = {
    "{latency_quantiles}": "quantilesTDigestMerge(0.5, 0.9, 0.95, 0.99)(latency_digest)",
    "{ttft_quantiles}": "quantilesTDigestMerge(0.5, 0.9, 0.95, 0.99)(ttft_digest)",
    "{active_users}": "uniqExactMerge(users_state)",
    "{active_apps}": "uniqExactMerge(apps_state)",
}
PLACEHOLDERS = {
    "org_daily": ORG_GRAIN_PLACEHOLDERS,
    "org_model_daily": ORG_GRAIN_PLACEHOLDERS,
    "usage_daily": {
        "{latency_quantiles}": "quantilesMerge(0.5, 0.9, 0.95, 0.99)(latency_quantiles)",
        "{ttft_quantiles}": "quantilesMerge(0.5, 0.9, 0.95, 0.99)(ttft_quantiles)",
        "{active_users}": "uniqExactIf(user_id, user_id != '')",
        "{active_apps}": "uniqExact(app_id)",
    },
}


# t-digest percentiles of the same data on 18.16 and 26.9 differ slightly (their merge and
# interpolation changed): measured within 0.2% at the median, up to 1.7% at the p99 of a group
# of 300 calls.
SKETCH_TOL = 0.05


def variants(sql_text):
    """(label, text, scopes, sketch tolerance) per table a file may read: org-grain tables
    answer org scopes, and their percentiles are t-digests."""
    sql_text = sql_text.replace("{hourly}", "usage_hourly")
    header = re.search(r"^-- daily: (.*)$", sql_text, re.M)
    if not header:
        return [("", sql_text, SCOPES, 0.0)]
    out = []
    for table in (t.strip() for t in header.group(1).split(",")):
        text = sql_text.replace("{daily}", table)
        for placeholder, sql in PLACEHOLDERS[table].items():
            text = text.replace(placeholder, sql)
        if table == "usage_daily":
            out.append((f" on {table}", text, SCOPES, 0.0))
        else:
            out.append((f" on {table}", text, [s for s in SCOPES if s[0] in ORG_SCOPES], SKETCH_TOL))
    return out
PARAMS = {
    "from_day": "2026-01-01",
    "to_day": "2026-03-01",
    "from_hour": "2026-01-29 00:00:00",
    "to_hour": "2026-02-05 00:00:00",
    "limit": 10,
}


def quote(v):
    if isinstance(v, int):
        return str(v)
    return "'" + str(v).replace("\\", "\\\\").replace("'", "\\'") + "'"


def bind(sql_text, scope_predicate, scope_values):
    """What tollgate-clickhouse does: drop comment lines, fill {scope}, bind `?` in order."""
    header = re.search(r"^-- params: (.*)$", sql_text, re.M)
    if not header:
        raise SystemExit("query without a `-- params:` line")
    names = [p.strip() for p in header.group(1).split(",")][1:]
    body = "\n".join(l for l in sql_text.splitlines() if not l.lstrip().startswith("--"))
    body = body.replace("{scope}", scope_predicate)
    values = list(scope_values) + [PARAMS[n] for n in names]
    parts = body.split("?")
    if len(parts) - 1 != len(values):
        raise SystemExit(f"{len(parts) - 1} placeholders, {len(values)} values")
    out = parts[0]
    for value, rest in zip(values, parts[1:]):
        out += quote(value) + rest
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--statements", required=True, help="tollgate-migrate --print --json output")
    ap.add_argument("--queries", required=True, help="clickhouse/queries")
    ap.add_argument("--server", required=True, help="18.16 HTTP URL")
    ap.add_argument("--database", required=True, help="migrated database on the 18.16 server")
    ap.add_argument("--chdb-path", required=True, help="empty directory for chdb's data")
    ap.add_argument("--analyst-roles", required=True,
                    help="tollgate-migrate --print-analyst-roles ORGS --json output")
    ap.add_argument("--analyst-roles-cluster", required=True,
                    help="the same, rendered with --cluster")
    ap.add_argument("--rows", type=int, default=6000)
    args = ap.parse_args()

    old = Server(args.server, args.database)
    new = Chdb(args.chdb_path, args.database)
    print(f"engines: {old.name} ({old.query('SELECT version()').strip()}) and chdb {chdb.__version__} "
          f"(ClickHouse {new.version})")

    passed, failed = 0, 0

    def check(name, ok, detail=""):
        nonlocal passed, failed
        if ok:
            passed += 1
            print(f"  ok    {name}")
        else:
            failed += 1
            print(f"  FAIL  {name}\n        {detail}")

    # 1. Every migration on 26.9.
    plan = json.loads(Path(args.statements).read_text())
    for item in plan:
        try:
            for statement in item["statements"]:
                new.execute(statement)
            check(f"26.9 applies {item['file']} ({len(item['statements'])} statements)", True)
        except RuntimeError as e:
            check(f"26.9 applies {item['file']}", False, str(e)[:800])
    if failed:
        return finish(passed, failed)

    # 2. Same data into both, in batches.
    rows = dataset(args.rows)
    for start in range(0, len(rows), 1000):
        for engine in (old, new):
            engine.insert_json("usage_events", rows[start:start + 1000])
    for engine in (old, new):
        n = engine.query("SELECT count() FROM usage_events").strip()
        check(f"{engine.name} has the {len(rows)} rows", n == str(len(rows)), f"count() = {n}")

    # 3. Rollups == raw on each engine, before and after merges.
    for when in ("before merges", "after OPTIMIZE FINAL"):
        if when != "before merges":
            for engine in (old, new):
                for table in ("usage_events",) + tuple(g[0] for g in GRAINS):
                    engine.execute(f"OPTIMIZE TABLE {table} FINAL")
        for engine in (old, new):
            for table, bucket, raw_bucket, dims, org_grain in GRAINS:
                d = diff(engine.query(rollup_sql(table, bucket, dims, org_grain)),
                         engine.query(raw_sql(raw_bucket, dims, org_grain)))
                check(f"{engine.name}: {table} equals the raw rows ({when})", d is None, d)
        for table, bucket, _, dims, org_grain in GRAINS:
            sql = rollup_sql(table, bucket, dims, org_grain)
            d = diff(old.query(sql), new.query(sql))
            check(f"{table}: 18.16 and 26.9 agree ({when})", d is None, d)

    # 4. Every named query, every scope; every analyst view.
    query_files = sorted(Path(args.queries).glob("*.sql"))
    for path in query_files:
        for label, text, scopes, tol in variants(path.read_text()):
            for scope_name, predicate, values in scopes:
                name = f"{path.stem}{label} [{scope_name}]"
                sql = bind(text, predicate, values)
                try:
                    a, b = old.query(sql), new.query(sql)
                except RuntimeError as e:
                    check(name, False, str(e)[:800])
                    continue
                d = diff(a, b, tol)
                if d is None and not a.strip():
                    d = "no rows: the data set does not exercise this query"
                check(f"{name}: {len(a.splitlines())} rows, 18.16 == 26.9", d is None, d)
    for view in ("ai_daily_usage", "ai_usage_summary", "ai_model_performance"):
        cols = old.query(f"DESCRIBE TABLE {view}")
        order = ", ".join(line.split("\t")[0] for line in cols.splitlines()[:7]
                          if not line.split("\t")[1].startswith(("Float", "Decimal", "UInt", "Array")))
        sql = f"SELECT * FROM {view} ORDER BY {order}"
        d = diff(old.query(sql), new.query(sql))
        check(f"view {view}: 18.16 == 26.9", d is None, d)

    # 5. What a modern server adds (docs/SCALING.md): a retried INSERT that carries the same
    # insert_deduplication_token is stored once, even on a non-replicated table, while the same
    # rows under another token (another batch) are stored again. 18.16 has neither setting.
    new.execute("CREATE TABLE dedup_probe AS usage_events ENGINE = MergeTree "
                "ORDER BY (org_id, ts, event_id) SETTINGS non_replicated_deduplication_window = 1000")
    counts = []
    for token in ("batch-1", "batch-1", "batch-2"):
        new.execute(f"INSERT INTO dedup_probe SETTINGS insert_deduplication_token = '{token}' "
                    "FORMAT JSONEachRow\n" + "\n".join(rows[:100]))
        counts.append(new.query("SELECT count() FROM dedup_probe").strip())
    check("26.9: a retry with the same insert_deduplication_token is stored once, another token again",
          counts == ["100", "100", "200"], f"counts after each INSERT: {counts}")

    # 6. Per-org analyst roles (clickhouse/src/analyst_roles.rs). chdb cannot create a role (in
    # process it has no writable user directory), so 26.9 parses every statement, one server's
    # and a cluster's (formatQuery), and resolves what they name: every granted object exists,
    # and every policy's filter runs on its table and selects exactly its org's rows.
    for label, path in (("one server", args.analyst_roles), ("cluster", args.analyst_roles_cluster)):
        roles = json.loads(Path(path).read_text())
        bad = []
        for statement in roles["statements"]:
            try:
                new.query(f"SELECT formatQuery({quote(statement)})")
            except RuntimeError as e:
                bad.append(str(e)[:400])
        check(f"26.9 parses the {len(roles['statements'])} analyst-role statements ({label})",
              not bad and len(roles["statements"]) > 0, "\n".join(bad[:3]))
    roles = json.loads(Path(args.analyst_roles).read_text())
    for sql in roles["reads"]:
        name = f"26.9 answers the analyst-role sync's read: {sql[:70]}…"
        try:
            answer = new.query(sql).strip()
        except RuntimeError as e:
            check(name, False, str(e)[:400])
            continue
        # The capability probe finds both tables; the database's tables are listed; no role,
        # policy or grant exists yet (chdb cannot hold them).
        if "system.tables WHERE database = 'system'" in sql:
            ok = answer == "2"
        elif "FROM system.tables" in sql:
            # ... and the analyst views run with the reader's rights, so they can be granted.
            views = [line for line in answer.splitlines() if line.startswith("ai_")]
            ok = ("usage_events\tMergeTree" in answer and len(views) >= 3
                  and not any("SQL SECURITY DEFINER" in v or "SQL SECURITY NONE" in v
                              for v in views))
        else:
            ok = answer == ""
        check(name, ok, f"answered {answer[:300]!r}")
    granted = sorted({m.group(1) for st in roles["statements"]
                      for m in [re.match(r"GRANT SELECT ON `[^`]+`\.`([^`]+)` TO", st)] if m})
    missing = [t for t in granted if new.query(f"EXISTS TABLE {t}").strip() != "1"]
    check(f"26.9 has every object the analyst roles are granted ({len(granted)})",
          granted and not missing, f"missing: {missing}")
    usage_tables = ("usage_events",) + tuple(g[0] for g in GRAINS)
    by_org = {}
    for policy in roles["policies"]:
        by_org.setdefault(policy["org"], []).append(policy)
    for org, policies in by_org.items():
        problems = []
        for policy in policies:
            table, where = policy["table"], policy["filter"]
            try:
                n, mine = new.query(f"SELECT count(), countIf(org_id = {quote(org)}) "
                                    f"FROM {table} WHERE {where}").split()
            except RuntimeError as e:
                problems.append(str(e)[:400])
                continue
            # The data set has rows of org_000..org_002 in every usage table.
            if n != mine or (table in usage_tables and org.startswith("org_") and n == "0"):
                problems.append(f"{table}: {n} rows, {mine} of {org!r}")
        check(f"26.9: the {len(policies)} row policies of {org!r} run and select its rows only",
              not problems, "; ".join(problems))

    return finish(passed, failed)


def finish(passed, failed):
    print(f"compat: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
