-- The event store's first schema: cameras, events, per-minute counts, processing progress, and
-- the record ids already applied (what makes a replayed shard write nothing twice).

CREATE TABLE cameras (
    stream       text PRIMARY KEY,          -- a Kinesis video stream's name, or a video id
    first_seen   double precision NOT NULL, -- producer time, seconds since the epoch
    last_seen    double precision NOT NULL
);

CREATE TABLE events (
    event_id         uuid PRIMARY KEY,
    stream           text NOT NULL REFERENCES cameras (stream),
    event_type       text NOT NULL,            -- zone_entry, zone_exit, line_crossing, dwell, ...
    rule             text NOT NULL,
    status           text NOT NULL,            -- instant, started, ended
    track_id         bigint,
    zone             text,
    confidence       double precision,
    start_time       double precision NOT NULL,
    end_time         double precision,
    start_fragment   numeric(65, 0),           -- fragment numbers: ~47 digits, compared as numbers
    end_fragment     numeric(65, 0),
    highlight_bucket text,
    highlight_key    text,
    clip_bucket      text,
    clip_key         text,
    details          jsonb NOT NULL DEFAULT '{}',
    record           jsonb NOT NULL             -- the latest record of the event, as delivered
);
CREATE INDEX events_by_camera_and_time ON events (stream, start_time);
CREATE INDEX events_by_time ON events (start_time);

CREATE TABLE camera_minutes (
    stream   text NOT NULL REFERENCES cameras (stream),
    minute   timestamptz NOT NULL,
    frames   integer NOT NULL DEFAULT 0,
    persons  integer NOT NULL DEFAULT 0,
    events   integer NOT NULL DEFAULT 0,
    PRIMARY KEY (stream, minute)
);

CREATE TABLE stream_progress (
    stream              text PRIMARY KEY REFERENCES cameras (stream),
    last_producer_time  double precision NOT NULL,
    last_fragment       numeric(65, 0),
    records             bigint NOT NULL DEFAULT 0,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE applied_records (
    record_id   uuid PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
