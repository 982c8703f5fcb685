"""Video as Kinesis Video Streams fragments: what a camera sends, made from files, devices or a
test pattern. Shared by the camera simulator (producer_sim, which sends the fragments with
PutMedia) and batch mode (consumer.batch, which analyses a recorded file's fragments without the
round trip), so both read a file the same way.

`sources` (packets from a file, RTSP, a webcam or a test pattern: H.264 re-muxed, the rest
re-encoded with libx264; `timeline` keeps their timestamps increasing; `h264` converts Annex B to
AVCC; `pattern` draws the test pattern) and `fragmenter` (packets to fragments at keyframes).
"""
