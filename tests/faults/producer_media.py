"""What a camera sends, built from real encoder output, and ways of sending it badly.

`encode_clip` runs a real encoder (libx264 or libx265, bundled with PyAV) over the simulator's
test pattern, muxes the packets to Matroska in memory with FFmpeg and demuxes them back: the
CodecPrivate (avcC / hvcC) and length-prefixed frames are exactly what a camera's MKV carries.
`fragments` cuts a clip into one fragment per GOP with absolute timecodes, `producer_body` writes
a PutMedia body with the project's MKV writer (a new EBML header, Segment and Tracks whenever the
track changes, as the KVS producer SDK does when a camera's codec data changes), and
`put_media_then_die` plays a producer that dies mid-cluster: its TCP connection is reset.
"""

from __future__ import annotations

import dataclasses
import io
import json
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

import av

from consumer.media.pattern import draw_frame
from consumer.wire import Fragment, Frame, Track, ebml, writer

from ..kvs_wire_helpers import put_media

CODEC_IDS = {"libx264": "V_MPEG4/ISO/AVC", "libx265": "V_MPEGH/ISO/HEVC"}
CAMERA_FPS = 10
GOP = 10  # one keyframe a second: one fragment a second


@dataclass(frozen=True)
class Packet:
    pts_ms: int  # from the clip's start
    keyframe: bool
    data: bytes  # length-prefixed NAL units, as Matroska carries them


@dataclass(frozen=True)
class Clip:
    track: Track
    packets: list[Packet]


def _encoder_options(encoder: str) -> dict[str, str]:
    fixed_gop = f"keyint={GOP}:min-keyint={GOP}:scenecut=0:bframes=0"
    if encoder == "libx265":
        return {"preset": "ultrafast", "x265-params": f"{fixed_gop}:log-level=error"}
    return {"preset": "ultrafast", "tune": "zerolatency", "x264-params": fixed_gop}


def encode_clip(encoder: str, width: int, height: int, frames: int,
                fps: int = CAMERA_FPS) -> Clip:
    """`frames` frames of the test pattern, encoded by `encoder` (libx264 or libx265) with a
    keyframe every `GOP` frames and no B-frames."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as output:
        stream = output.add_stream(encoder, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.options = _encoder_options(encoder)
        for index in range(frames):
            image = draw_frame(width, height, index * 1000 // fps, 0, index)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    buffer.seek(0)
    with av.open(buffer) as container:
        video = container.streams.video[0]
        codec_private = bytes(video.codec_context.extradata or b"")
        packets = [Packet(int(p.pts), bool(p.is_keyframe), bytes(p))
                   for p in container.demux(video) if p.size]
    track = Track(number=1, type=ebml.TRACK_TYPE_VIDEO, codec_id=CODEC_IDS[encoder],
                  codec_private=codec_private, name="video", width=width, height=height)
    return Clip(track, packets)


def fragments(clip: Clip, start_ms: int) -> list[Fragment]:
    """One fragment per GOP, timecodes absolute (milliseconds since the epoch) from `start_ms`."""
    out: list[Fragment] = []
    for packet in clip.packets:
        if packet.keyframe:
            out.append(Fragment(tracks=(clip.track,), cluster_timecode=start_ms + packet.pts_ms))
        out[-1].frames.append(Frame(clip.track.number, start_ms + packet.pts_ms,
                                    packet.keyframe, packet.data))
    return out


def producer_body(fragments_: list[Fragment]) -> bytes:
    """One PutMedia body; a new EBML header, Segment and Tracks wherever the track changes."""
    parts, tracks = [], None
    for fragment in fragments_:
        if fragment.tracks != tracks:
            tracks = fragment.tracks
            parts.append(writer.stream_header(tracks))
        parts.append(writer.cluster(fragment.cluster_timecode, fragment.frames))
    return b"".join(parts)


def now_ms() -> int:
    return int(time.time() * 1000)


def damaged(fragment: Fragment, damage: dict[int, Callable[[bytes], bytes]]) -> Fragment:
    """A copy of `fragment` whose frame `i` carries `damage[i](its bytes)`."""
    frames = [dataclasses.replace(f, data=damage[i](bytes(f.data))) if i in damage else f
              for i, f in enumerate(fragment.frames)]
    return dataclasses.replace(fragment, frames=frames)


def cut_short(data: bytes) -> bytes:
    """A frame whose second half never arrived."""
    return data[:len(data) // 2]


def zeroed(data: bytes) -> bytes:
    """A frame with a run of zeroed bytes inside its slice data (its length prefix intact)."""
    start = len(data) // 3
    return data[:start] + bytes(min(100, len(data) - start)) + data[start + 100:]


def flipped(data: bytes) -> bytes:
    """A frame with every 37th byte after its NAL headers inverted."""
    damaged_ = bytearray(data)
    for index in range(16, len(damaged_), 37):
        damaged_[index] ^= 0xFF
    return bytes(damaged_)


def put_all(endpoint_url: str, stream: str, body: bytes, attempts: int = 20) -> list[dict]:
    """PutMedia `body` in one session; its acknowledgements. A stream's previous session may
    still be ending on the service (one PutMedia connection per stream): retry that refusal."""
    for _ in range(attempts):
        status, _, answer = put_media(endpoint_url, stream, body)
        if status == 200:
            return answer
        time.sleep(0.2)
    raise AssertionError(f"PutMedia refused: {status} {answer}")


def put_media_then_die(endpoint_url: str, stream: str, body: bytes, complete: int,
                       timeout: float = 20.0) -> list[dict]:
    """Send all of `body` (which ends inside a cluster) as a chunked PutMedia request, wait for
    the `complete` fragments before the cut to be PERSISTED and for the cut one to be announced
    (BUFFERING), then reset the connection without ending the body: a producer that died. Returns
    the acknowledgements received."""
    url = urlparse(endpoint_url)
    sock = socket.create_connection((url.hostname, url.port), timeout=timeout)
    try:
        head = (f"POST /putMedia HTTP/1.1\r\nHost: {url.hostname}:{url.port}\r\n"
                f"x-amzn-stream-name: {stream}\r\nx-amzn-fragment-timecode-type: ABSOLUTE\r\n"
                "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        sock.sendall(head.encode() + f"{len(body):x}\r\n".encode() + body + b"\r\n")
        acks = _read_acks_until(sock, complete, timeout)
    finally:
        # linger 0: close() sends a reset, as when a camera loses power or its process is killed
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    return acks


def _read_acks_until(sock: socket.socket, persisted: int, timeout: float) -> list[dict]:
    """Acks from a chunked PutMedia response until `persisted` PERSISTED acks and one more
    BUFFERING (the fragment in progress) arrived."""
    deadline = time.monotonic() + timeout
    raw = b""
    while time.monotonic() < deadline:
        raw += sock.recv(65536)
        lines = (line.strip() for line in raw.split(b"\r\n"))
        acks = [json.loads(line) for line in lines if line[:1] == b"{" and line[-1:] == b"}"]
        events = [a["EventType"] for a in acks]
        if events.count("PERSISTED") >= persisted and events.count("BUFFERING") > persisted:
            return acks
    raise AssertionError(f"no acknowledgement of the fragments before the cut: {raw[-400:]!r}")


def numbered_clip_fragments(count: int = 3) -> list:
    """`count` 1 s fragments of 320x240 H.264 (GOP frames each), numbered 1, 2, ..."""
    out = fragments(encode_clip("libx264", 320, 240, count * GOP), 1_000_000)
    for number, fragment in enumerate(out, 1):
        fragment.fragment_number = number
    return out
