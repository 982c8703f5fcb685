"""Helpers for the face search tests on the local stack (records, face_match events, live
streams): the speaker's frame of the Vogels capture, the astronaut's still video, and a `staff`
collection holding only the speaker's face."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from consumer.faces.collections import FaceCollections
from consumer.faces.records import image_id
from infra.local.stack import LocalStack
from processors.faces import FaceAnalyzer
from tests.conftest import CAPTURES

BUCKET = "video-analytics"
SPEAKER_FRAME = 650  # a frontal close-up (processors' and collections' tests use it too)
THRESHOLD = 80.0


def frame_at(index: int) -> np.ndarray:
    """The RGB frame of vogels_330.mkv at `index` (its position in decode order)."""
    with av.open(str(CAPTURES / "vogels_330.mkv")) as container:
        for number, frame in enumerate(container.decode(video=0)):
            if number == index:
                return frame.to_ndarray(format="rgb24")
    raise AssertionError(f"no frame {index}")


def astronaut_video(path, seconds: int = 3, fps: int = 5) -> None:
    """Write an H.264 video of scikit-image's astronaut, still, to `path`."""
    from skimage.data import astronaut
    image = astronaut()[:, :, :3]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = image.shape[1], image.shape[0]
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        for index in range(seconds * fps):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def index_speaker(stack: LocalStack, bucket: str, models: Path) -> FaceCollections:
    """A FaceCollections store on `bucket` of the stack (its table ensured) with a collection
    `staff` holding one face: the speaker's in frame SPEAKER_FRAME, as external id "speaker"."""
    store = FaceCollections(stack.client("s3"), stack.client("dynamodb"), bucket)
    store.ensure_table()
    store.create_collection("staff")
    speaker = frame_at(SPEAKER_FRAME)
    with FaceAnalyzer(models) as analyzer:
        [face, *_] = analyzer.faces(speaker)
    store.index_faces("staff", [(face, "speaker")], image_id(speaker.tobytes()))
    return store
