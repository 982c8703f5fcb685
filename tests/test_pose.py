"""PoseProcessor on real frames with the real model, and model resolution (never the network)."""

from __future__ import annotations

import hashlib
import http.server
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from consumer.config import Pose
from processors.base import FrameResult
from processors.models import PUBLISHED, ModelNotFoundError, published_url, resolve_model
from processors.pose import POSE_CONNECTIONS, PoseProcessor
from tests.conftest import REPO, _require
from tests.pose_helpers import CLOSE_UP, ON_STAGE, POSE_MODEL, decode_frames, video_frame

UNREACHABLE = "http://127.0.0.1:9/pose_landmarker_full.task"  # discard port: connection refused


@pytest.fixture(scope="module")
def model_path(models) -> Path:
    return _require(models / POSE_MODEL, f"model {POSE_MODEL}")


@pytest.fixture(scope="module")
def frames(captures) -> dict[int, np.ndarray]:
    return decode_frames(_require(captures / "vogels_330.mkv", "capture vogels_330.mkv"),
                         [ON_STAGE, CLOSE_UP])


@pytest.fixture(scope="module")
def pose(model_path):
    with PoseProcessor(Pose(models_dir=model_path.parent)) as processor:
        yield processor


def test_person_on_stage_has_33_landmarks_and_a_box_around_them(pose, frames):
    for index in (ON_STAGE, CLOSE_UP):
        [result] = pose.process([video_frame(frames[index])])
        assert len(result.persons) == 1, index
        person = result.persons[0]
        assert len(person.landmarks) == 33
        for mark in person.landmarks:
            assert 0.0 <= mark.visibility <= 1.0 and 0.0 <= mark.presence <= 1.0
        left, top, right, bottom = person.bbox
        assert 0.0 <= left < right <= 1.0 and 0.0 <= top < bottom <= 1.0
        xs = np.clip([m.x for m in person.landmarks], 0, 1)
        ys = np.clip([m.y for m in person.landmarks], 0, 1)
        assert (left, top, right, bottom) == pytest.approx((xs.min(), ys.min(), xs.max(), ys.max()))
        assert person.confidence == pytest.approx(np.mean([m.presence for m in person.landmarks]))
        assert person.confidence > 0.5 and person.track_id is None
    small = pose.process([video_frame(frames[ON_STAGE])])[0].persons[0]
    # In the wide shot the speaker is a ~40 px figure right of centre, head at about (0.72, 0.72):
    # the face is found there (the body landmarks of so small a figure are poor).
    nose = small.landmarks[0]
    assert nose.x == pytest.approx(0.72, abs=0.04) and nose.y == pytest.approx(0.72, abs=0.05)


def test_blank_frames_have_no_person(pose):
    blank = [np.zeros((330, 640, 3), np.uint8), np.full((720, 1280, 3), 255, np.uint8)]
    assert pose.process([video_frame(image) for image in blank]) == [FrameResult(), FrameResult()]


def test_batch_mixing_streams_keeps_order_and_matches_single_frames(pose, frames):
    batch = [video_frame(frames[ON_STAGE], "cam-a", 0),
             video_frame(np.zeros((330, 640, 3), np.uint8), "cam-b", 0),
             video_frame(frames[CLOSE_UP], "cam-b", 1),
             video_frame(frames[ON_STAGE], "cam-a", 1)]
    together = pose.process(batch)
    alone = [pose.process([frame])[0] for frame in batch]
    assert together == alone
    assert [len(r.persons) for r in together] == [1, 0, 1, 1]
    assert together[0] == together[3]


def test_num_poses_limits_persons(model_path, frames):
    side = frames[CLOSE_UP][:, 160:480]
    two = np.ascontiguousarray(np.hstack([side, side[:, ::-1]]))  # the speaker twice
    found = {}
    for num_poses in (1, 2):
        with PoseProcessor(Pose(models_dir=model_path.parent, num_poses=num_poses)) as processor:
            found[num_poses] = len(processor.process([video_frame(two)])[0].persons)
    assert found == {1: 1, 2: 2}


@pytest.mark.parametrize("threshold", ["min_detection_confidence", "min_presence_confidence"])
def test_threshold_of_one_finds_nobody(model_path, frames, threshold):
    with PoseProcessor(Pose(models_dir=model_path.parent, **{threshold: 1.0})) as processor:
        results = processor.process([video_frame(frames[i]) for i in (ON_STAGE, CLOSE_UP)])
    assert results == [FrameResult(), FrameResult()]


def test_identity_and_close(model_path, frames):
    processor = PoseProcessor(Pose(models_dir=model_path.parent))
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()[:12]
    import mediapipe
    assert (processor.name, processor.model, processor.max_batch) == ("pose", POSE_MODEL, 1)
    assert processor.model_version == f"mediapipe-{mediapipe.__version__}+{digest}"
    processor.close()
    processor.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        processor.process([video_frame(frames[ON_STAGE])])


def test_rejects_a_frame_that_is_not_rgb(pose):
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        pose.process([video_frame(np.zeros((32, 32, 4), np.uint8))])


def test_connections_match_mediapipe():
    from mediapipe.tasks.python import vision
    theirs = [(c.start, c.end) for c in vision.PoseLandmarksConnections.POSE_LANDMARKS]
    assert list(POSE_CONNECTIONS) == theirs


def test_importing_the_modules_does_not_import_mediapipe():
    code = ("import sys, processors.pose, processors.models, consumer.formats.annotate, "
            "consumer.formats.pose_sequence; print('mediapipe' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_no_traceback_at_exit_when_left_open(model_path):
    code = ("from consumer.config import Pose; from processors.pose import PoseProcessor; "
            f"p = PoseProcessor(Pose(models_dir={str(model_path.parent)!r}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0 and "Traceback" not in out.stderr


# --- model resolution ----------------------------------------------------------------------------

def test_existing_model_is_used_in_place(model_path):
    assert resolve_model(POSE_MODEL, model_path.parent, download=False) == model_path


def test_published_urls_are_googles():
    assert set(PUBLISHED) == {f"pose_landmarker_{v}.task" for v in ("lite", "full", "heavy")}
    assert published_url("pose_landmarker_heavy.task") == (
        "https://storage.googleapis.com/mediapipe-models/pose_landmarker/pose_landmarker_heavy/"
        "float16/latest/pose_landmarker_heavy.task")
    assert published_url("other.task") is None


def test_offline_error_names_file_folder_and_url(tmp_path):
    folder = tmp_path / "models"
    with pytest.raises(ModelNotFoundError) as caught:
        resolve_model(POSE_MODEL, folder, url=UNREACHABLE, timeout=5)
    message = str(caught.value)
    assert POSE_MODEL in message and str(folder) in message and UNREACHABLE in message
    assert caught.value.path == folder / POSE_MODEL
    assert list(folder.iterdir()) == []  # no half model, no temp file


def test_download_off_names_the_published_url(tmp_path):
    with pytest.raises(ModelNotFoundError) as caught:
        PoseProcessor(Pose(models_dir=tmp_path, download=False))
    message = str(caught.value)
    assert POSE_MODEL in message and str(tmp_path) in message
    assert published_url(POSE_MODEL) in message and "download: false" in message


def test_home_folder_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "x.task").write_bytes(b"PK\x03\x04")
    assert resolve_model("x.task", "~/m", download=False) == tmp_path / "m" / "x.task"


@pytest.fixture
def http_server():
    """A local HTTP server; `serve(body)` returns its URL. Not the network: 127.0.0.1 only."""
    servers = []

    def serve(body: bytes) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/model.task"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_download_lands_atomically_once(tmp_path, http_server):
    body = b"PK\x03\x04" + bytes(200_000)
    url = http_server(body)
    path = resolve_model("pose_landmarker_lite.task", tmp_path / "cache", url=url, timeout=10)
    assert path == tmp_path / "cache" / "pose_landmarker_lite.task"
    assert path.read_bytes() == body
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    # Present now: used in place, the (dead) URL is not asked again.
    assert resolve_model(path.name, path.parent, url=UNREACHABLE) == path


def test_download_of_an_error_page_keeps_nothing(tmp_path, http_server):
    url = http_server(b"<html>captive portal</html>")
    with pytest.raises(ModelNotFoundError, match="not a .task bundle"):
        resolve_model(POSE_MODEL, tmp_path, url=url, timeout=10)
    assert list(tmp_path.iterdir()) == []
