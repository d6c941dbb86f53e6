-- 0004 the collector's bookkeeping: committed batches and the dead letter.
--
-- Exactly-once per batch on a server without insert dedup (18.16, non-replicated): the
-- collector writes a batch's rows to usage_events with its batch_id, then one row here. After a
-- crash it replays its write-ahead log; for each batch it first looks here, and if the batch is
-- absent it checks usage_events for rows with that batch_id before inserting again.
-- ReplacingMergeTree(inserted_at) so a batch recorded twice (crash between the two writes and
-- a replay) still reads as one with FINAL. Partitioned by month so old bookkeeping can be
-- dropped with the raw months it describes.
CREATE TABLE IF NOT EXISTS ingest_batches
(
    batch_id      String,
    source        String,
    records       UInt32,
    accepted      UInt32,
    duplicates    UInt32,
    rejected      UInt32,
    min_ts        DateTime('UTC'),
    max_ts        DateTime('UTC'),
    body_sha256   String,
    received_at   DateTime('UTC'),
    inserted_at   DateTime('UTC')
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(received_at)
ORDER BY batch_id;

-- Records the collector refused, with why, and the record as received (JSON text) so it can be
-- fixed and replayed. org_id is best effort ('' when the record did not say or was not JSON).
-- field: the first offending field ('' when the whole record was unreadable).
CREATE TABLE IF NOT EXISTS usage_rejects
(
    received_at  DateTime('UTC'),
    batch_id     String,
    record_index UInt32,
    org_id       String,
    field        String,
    reason       String,
    raw_record   String,
    source       String
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(received_at)
ORDER BY (received_at, batch_id, record_index);
