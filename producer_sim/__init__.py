"""Camera simulator: streams video from files, a test pattern, RTSP or a webcam into Kinesis Video
Streams through PutMedia, as real cameras running the KVS producer SDK do.

Video packets and their cutting into fragments come from `consumer.media` (shared with batch mode,
which reads recorded files the same way). Modules: `putmedia` (the PutMedia
client), `acks` (PutMedia acknowledgements and their error ids), `control` (stream creation and
endpoints), `capture` (a camera's capture thread), `camera` (one camera's loop), `status` (what a
camera reports), `cli`.
"""
