"""Pose model variants: the `lite` / `full` / `heavy` shorthands, and the offline bundle builder
(processors.pose_bundles) on inputs made from the shared full bundle (no npm, no network)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from consumer.config import ConfigError, Pose, load_config
from processors import pose_bundles
from processors.models import ModelNotFoundError, model_file_name, resolve_model
from processors.pose import PoseProcessor
from tests.conftest import _require
from tests.pose_helpers import CLOSE_UP, POSE_MODEL, decode_frames, video_frame

MINIMAL = {"streams": {"names": ["cam-1"]}, "outputs": {"kinesis": {"stream": "records"}}}
BUILD = ("python -m processors.pose_bundles --out ~/.cache/kvs-analytics/models "
         "--detector ../shared/models/pose_landmarker_full.task")


@pytest.fixture(scope="module")
def full_bundle(models) -> Path:
    return _require(models / POSE_MODEL, f"model {POSE_MODEL}")


@pytest.mark.parametrize("variant", ["lite", "full", "heavy"])
def test_shorthands_mean_the_published_bundles(variant):
    name = f"pose_landmarker_{variant}.task"
    assert model_file_name(variant) == name and Pose(model=variant).model == name
    config = load_config(data={**MINIMAL, "processing": {"pose": {"model": variant}}}, environ={})
    assert config.processing.pose.model == name
    assert Pose(model="my_pose.task").model == "my_pose.task"  # a file name still works


@pytest.mark.parametrize("value", ["medium", "Lite", "pose.tflite", ""])
def test_an_unknown_model_is_an_error_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"processing\.pose\.model: .*lite, full, heavy"):
        load_config(data={**MINIMAL, "processing": {"pose": {"model": value}}}, environ={})
    with pytest.raises(ConfigError, match="processing.pose.model"):
        load_config(data=MINIMAL, environ={"KVSA_PROCESSING__POSE__MODEL": value})


def test_model_lite_resolves_and_loads(captures):
    folder = Path("~/.cache/kvs-analytics/models").expanduser()
    if not (folder / "pose_landmarker_lite.task").is_file():
        pytest.skip(f"pose_landmarker_lite.task is not in {folder}: build it with {BUILD}")
    config = Pose(model="lite", models_dir=folder, download=False)
    assert resolve_model("lite", folder, download=False) == folder / "pose_landmarker_lite.task"
    image = decode_frames(_require(captures / "vogels_330.mkv", "capture vogels_330.mkv"),
                          [CLOSE_UP])[CLOSE_UP]
    with PoseProcessor(config) as processor:
        assert processor.model == "pose_landmarker_lite.task"
        [result] = processor.process([video_frame(image)])
    assert len(result.persons) == 1 and len(result.persons[0].landmarks) == 33


def test_a_missing_variant_names_the_file(tmp_path):
    config = Pose(model="heavy", models_dir=tmp_path, download=False)
    with pytest.raises(ModelNotFoundError) as err:
        PoseProcessor(config)
    message = str(err.value)
    assert message.startswith(f"model file pose_landmarker_heavy.task not found in {tmp_path}")
    assert "downloads are off" in message and err.value.path == tmp_path / config.model
    assert "pose_landmarker_heavy/float16/latest/pose_landmarker_heavy.task" in message


# --- the builder ------------------------------------------------------------------------------

def _npm_tarball(path: Path, models: dict[str, bytes]) -> Path:
    """A tarball laid out as `npm pack @mediapipe/pose` makes it, holding `models`."""
    with tarfile.open(path, "w:gz") as archive:
        for name, data in models.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_builds_a_bundle_that_loads_deterministically_and_atomically(full_bundle, tmp_path,
                                                                    captures):
    with zipfile.ZipFile(full_bundle) as bundle:
        landmarks = bundle.read(pose_bundles.LANDMARKS)
        detector = bundle.read(pose_bundles.DETECTOR)
    # the shared full landmark model stands in for the npm lite one: a model of the same shape
    tarball = _npm_tarball(tmp_path / "pose.tgz", {"pose_landmark_lite.tflite": landmarks})
    logged = []
    [first] = pose_bundles.build(tmp_path / "a", ["lite"], full_bundle, tarball, log=logged.append)
    [again] = pose_bundles.build(tmp_path / "b", ["lite"], full_bundle, tarball, log=print)
    assert first.name == "pose_landmarker_lite.task" and " - loads" in logged[-1]
    assert any("is not the one of @mediapipe/pose" in line for line in logged)
    assert first.read_bytes() == again.read_bytes()  # deterministic
    assert sorted(p.name for p in first.parent.iterdir()) == [first.name]  # no temporary left
    with zipfile.ZipFile(first) as bundle:
        infos = bundle.infolist()
        assert [i.filename for i in infos] == [pose_bundles.DETECTOR, pose_bundles.LANDMARKS]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)
        assert all((i.header_offset + 30 + len(i.filename) + len(i.extra)) % 64 == 0
                   for i in infos)
        assert bundle.read(pose_bundles.DETECTOR) == detector  # copied as it is
        built = bundle.read(pose_bundles.LANDMARKS)
    assert pose_bundles.normalisation(built) == ([0.0] * 3, [255.0] * 3)
    assert pose_bundles.normalisation(detector) == ([127.5] * 3, [127.5] * 3)
    image = decode_frames(captures / "vogels_330.mkv", [CLOSE_UP])[CLOSE_UP]
    with PoseProcessor(Pose(model="lite", models_dir=first.parent, download=False)) as lite, \
            PoseProcessor(Pose(models_dir=full_bundle.parent, download=False)) as full:
        [mine], [theirs] = lite.process([video_frame(image)]), full.process([video_frame(image)])
    assert len(mine.persons) == len(theirs.persons) == 1
    for a, b in zip(mine.persons[0].landmarks, theirs.persons[0].landmarks):
        assert (a.x, a.y) == pytest.approx((b.x, b.y), abs=1e-4)  # the same model, same answers


def test_metadata_is_written_for_a_bare_detector(full_bundle):
    with zipfile.ZipFile(full_bundle) as bundle:
        detector = bundle.read(pose_bundles.DETECTOR)
    rewritten = pose_bundles.with_metadata(detector, pose_bundles.DETECTOR_PART)
    assert pose_bundles.normalisation(rewritten) == ([127.5] * 3, [127.5] * 3)
    assert abs(len(rewritten) - len(detector)) < 256  # its metadata replaced, not added twice
    assert pose_bundles.with_metadata(rewritten, pose_bundles.DETECTOR_PART) == rewritten
    with pytest.raises(pose_bundles.BundleError, match="expected one 256x256 RGB input"):
        pose_bundles.with_metadata(detector, pose_bundles.LANDMARKS_PART)


def test_wrong_inputs_are_explained(full_bundle, tmp_path, capsys):
    empty = _npm_tarball(tmp_path / "other.tgz", {"README.md": b"hello"})
    code = pose_bundles.main(["--out", str(tmp_path / "out"), "--npm-tarball", str(empty),
                              "--detector", str(full_bundle), "--no-check"])
    assert code == 2
    assert "has no package/pose_landmark_lite.tflite" in capsys.readouterr().err
    code = pose_bundles.main(["--out", str(tmp_path / "out"), "--npm-tarball", str(empty),
                              "--detector", str(tmp_path / "missing.task")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_help_teaches(capsys):
    with pytest.raises(SystemExit) as done:
        pose_bundles.main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for needed in ("--out", "--npm-tarball", "--detector", "npm pack", "processing.pose.model"):
        assert needed in text
