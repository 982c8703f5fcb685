"""Camera sources whose cluster timecodes repeat or go backwards, written as producer-side MKV.

Some cameras reset their clock at every fragment (each cluster starts again at 0) or jump back
when their clock is corrected. No real capture of one is available here, so tests build one: real
H.264 from libx264 (a keyframe at the start of every cluster), muxed with the project's own MKV
writer with exactly the cluster timecodes a test asks for.

    path = write_timecode_source(tmp_path / "resets.mkv", repeating_cluster_starts(11))

The video is `len(starts)` clusters of `frames_per_cluster` frames at `fps`: its real duration is
`len(starts) * frames_per_cluster / fps` seconds, whatever the timecodes say.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from consumer.media.sources import H264Encoder
from consumer.wire import Frame, writer

FPS = 30
FRAMES_PER_CLUSTER = 30
WIDTH, HEIGHT = 160, 120


def repeating_cluster_starts(clusters: int) -> list[int]:
    """A camera that resets its clock each fragment: every cluster starts at timecode 0."""
    return [0] * clusters


def backwards_cluster_starts(clusters: int, cluster_ms: int = 1000, jump_at: int = 6,
                             jump_back_ms: int = 3000) -> list[int]:
    """Clusters `cluster_ms` apart, except that cluster `jump_at` starts `jump_back_ms` earlier
    than the one before it ended (a clock corrected backwards mid-recording)."""
    starts, timecode = [], 0
    for index in range(clusters):
        if index == jump_at:
            timecode -= jump_back_ms
        starts.append(timecode)
        timecode += cluster_ms
    return starts


def encode_clusters(clusters: int, frames_per_cluster: int = FRAMES_PER_CLUSTER, fps: int = FPS):
    """Real H.264 (libx264, no B-frames) with an IDR frame at the start of every cluster.

    Returns the track and, per cluster, its frames as (keyframe, AVCC payload). Each frame is a
    different picture (a moving bar), so a decoder has real work and no frame is a copy.
    """
    encoder = H264Encoder(WIDTH, HEIGHT, fps, keyframe_interval_s=frames_per_cluster / fps)
    packets = []
    total = clusters * frames_per_cluster
    for index in range(total):
        picture = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        column = index * 5 % WIDTH
        picture[:, column:column + 8] = (255, 200, 40)
        picture[: HEIGHT * (index % frames_per_cluster + 1) // frames_per_cluster, :4] = 255
        packets.extend(encoder.encode(av.VideoFrame.from_ndarray(picture, format="rgb24"),
                                      round(index * 1000 / fps)))
    packets.extend(encoder.flush())
    assert len(packets) == total, f"libx264 gave {len(packets)} packets for {total} frames"
    grouped = [packets[i:i + frames_per_cluster] for i in range(0, total, frames_per_cluster)]
    for group in grouped:
        assert group[0].keyframe and not any(p.keyframe for p in group[1:]), \
            "expected one keyframe at the start of each cluster"
    return encoder.track, [[(p.keyframe, p.data) for p in group] for group in grouped]


def write_timecode_source(path: str | Path, cluster_starts: list[int],
                          frames_per_cluster: int = FRAMES_PER_CLUSTER, fps: int = FPS) -> Path:
    """Write an MKV (one Segment, a Cluster per entry) whose clusters start at `cluster_starts` ms.

    Within a cluster, frames are 1000/fps ms apart from the cluster's own timecode, as a camera
    that stamps frames relative to its fragment does.
    """
    track, clusters = encode_clusters(len(cluster_starts), frames_per_cluster, fps)
    parts = [writer.stream_header([track])]
    for start, frames in zip(cluster_starts, clusters):
        parts.append(writer.cluster(start, [
            Frame(track.number, start + round(i * 1000 / fps), keyframe, data)
            for i, (keyframe, data) in enumerate(frames)]))
    path = Path(path)
    path.write_bytes(b"".join(parts))
    return path


def real_duration_ms(clusters: int, frames_per_cluster: int = FRAMES_PER_CLUSTER,
                     fps: int = FPS) -> float:
    """How long the video in such a file really lasts."""
    return clusters * frames_per_cluster * 1000 / fps
