-- Frame records kept for the console: the persons and boxes around an event, and each camera's
-- latest picture. Landmarks stay out (the pose Parquet in S3 holds them); one row per analysed
-- frame, so a camera at 2 frames/s adds about 170 000 rows a day: prune by producer_time.

CREATE TABLE frames (
    record_id      uuid PRIMARY KEY,
    stream         text NOT NULL REFERENCES cameras (stream),
    producer_time  double precision NOT NULL,   -- the frame's, seconds since the epoch
    fragment       numeric(65, 0) NOT NULL,
    frame_index    integer,
    width          integer,
    height         integer,
    persons        jsonb NOT NULL DEFAULT '[]',  -- [{TrackId, Confidence, BoundingBox}]
    image_bucket   text,                         -- its JPEG, when one was written
    image_key      text
);
CREATE INDEX frames_by_camera_and_time ON frames (stream, producer_time);
CREATE INDEX frames_by_time ON frames (producer_time);  -- every camera's frames over a period
CREATE INDEX camera_minutes_by_minute ON camera_minutes (minute);  -- every camera's counts over a period
