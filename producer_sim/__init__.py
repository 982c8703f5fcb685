"""Camera simulator: streams video from files, a test pattern, RTSP or a webcam into Kinesis Video
Streams through PutMedia, as real cameras running the KVS producer SDK do.

Modules: `sources` (video packets), `fragmenter` (packets to fragments), `putmedia` (the PutMedia
client), `control` (stream creation and endpoints), `camera` (one camera's loop), `cli`.
"""
