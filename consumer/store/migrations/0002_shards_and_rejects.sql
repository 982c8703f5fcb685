-- Where `kvs-analytics events sync` got to in each shard of the data stream (the KCL application
-- keeps its checkpoints in KCL's own lease table instead), and the records the store could not
-- file: kept with the reason rather than blocking the shard behind them.

CREATE TABLE shard_positions (
    data_stream      text NOT NULL,
    shard_id         text NOT NULL,
    sequence_number  numeric(65, 0) NOT NULL,  -- the last record filed; read after it next time
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (data_stream, shard_id)
);

CREATE TABLE rejected_records (
    digest       text PRIMARY KEY,             -- sha256 of the record's bytes: a replay adds nothing
    reason       text NOT NULL,
    data         text NOT NULL,                -- the record as received (at most 64 KiB of it)
    rejected_at  timestamptz NOT NULL DEFAULT now()
);
