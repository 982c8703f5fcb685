"""How a running consumer is watched from outside: an HTTP endpoint (`/healthz`, `/readyz`,
`/metrics` in Prometheus format), CloudWatch Embedded Metric Format lines for the stack's alarms,
and JSON log lines. the README section "Health, metrics and logs" describes what each says.

Contract: everything here *reads* what the consumer already keeps (the supervisor's sessions and
their `StreamStats`, the shared `StageTimes`, the writers' and the lease keeper's counters, the
analysis workers' counts) at the moment it is asked; nothing here is called from the pipeline,
and the pipeline imports nothing from here. `consumer.run` starts and stops it.

- `server`: the HTTP server on a daemon thread, attached to the supervisor once it has started.
- `probes`: what `/healthz` and `/readyz` answer (liveness, readiness, stuck streams).
- `metrics`: the Prometheus collector over the supervisor's state, read at scrape time.
- `histograms`: `StageTimes` histograms as Prometheus buckets, and the largest value of an
  interval (for EMF).
- `emf`: the EMF lines (namespace KvsAnalytics, dimension Fleet: LagSeconds, Errors).
- `logs`: logging set-up, `logging.format: text | json`.
"""
