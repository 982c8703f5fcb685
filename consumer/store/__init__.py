"""The event store: the data stream's records kept in PostgreSQL for the console and the read
API. `schema` applies the versioned SQL migrations in `migrations/` at start; `events` applies
batches of records (as a KCL record processor or `kvs-analytics events sync` reads them) in one
transaction each, idempotent on RecordId, so a replayed shard writes nothing twice and a shard
is checkpointed only after its batch committed.
"""
