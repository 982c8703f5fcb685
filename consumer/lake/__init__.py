"""The lake: the consumer's records as Firehose delivers them to S3 (records/type=/stream=/date=,
gzipped JSON lines) and its pose sequences (poses/stream=/date=, Parquet), queried with DuckDB
through ready views (`views`), from a folder or from S3 (`sync` copies the objects to a local
cache with boto3: DuckDB's own S3 extension would be downloaded at run time, which an offline
machine cannot do). `kvs-analytics query` (cli) is the command line.
"""
