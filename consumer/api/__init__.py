"""The read API over the event store (`kvs-analytics serve`): cameras, their events, one event,
with freshly presigned S3 URLs for each event's highlight and clip. Read-only: the store is filled
by `consumer.store.events.apply`; the API only runs its migrations at start.

- `settings`: `ApiSettings`, validated once (errors name the option).
- `queries`: the SQL, as functions over a psycopg 3 connection.
- `params`: query-string parsing (`from`, `to`, `type`, `limit`), errors naming the parameter.
- `render`: rows as JSON, with presigned URLs.
- `app`: the Starlette application. The `serve` command that runs it with the console is
  consumer.console.cli.
"""

MAX_URL_EXPIRY = 3600  # seconds: a presigned URL lasts at most an hour
