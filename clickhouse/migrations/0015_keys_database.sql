-- 0015 the key and token tables move to a database of their own, <database>_keys
-- (clickhouse/src/config.rs, keys_database). ClickHouse 18.16 grants a user access per
-- database, not per table, and a view is read with the reader's rights: the only way for the
-- analyst user — allowed the main database, where the usage data and its views are — not to
-- read the admin tokens' and app keys' hashes is for them to live elsewhere
-- (docs/ANALYSTS.md, "Who sees what"). dashboard-api reads and writes them through a client
-- whose database is <database>_keys. RENAME keeps the data (and, on a cluster, each replica's
-- ZooKeeper path); a re-run skips a table already moved.

CREATE DATABASE IF NOT EXISTS ${keys_database};

-- if-table: api_tokens
RENAME TABLE api_tokens TO ${keys_database}.api_tokens;

-- if-table: app_keys
RENAME TABLE app_keys TO ${keys_database}.app_keys;
