"""Durable outputs: Kinesis Data Streams records, S3 objects, and the replay check for resume.

Each writer calls a record's or object's `on_done(True)` only once it is durable, which is what
the checkpoint waits for before a fragment counts as processed.
"""
