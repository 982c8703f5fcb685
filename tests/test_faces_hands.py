"""Faces and hands with the real models on the real capture vogels_330.mkv (640x330): the speaker
in close-up from ~18 s (frames 540-750 and 870-900; 750-860 are wide stage shots again), his face
~85 px, his hands in view; a second identity from scikit-image's astronaut photograph."""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest
from PIL import Image

from processors.base import Person
from processors.faces import (
    EMBEDDING_SIZE,
    FACES_EXTRA,
    MATCH_DISTANCE,
    Face,
    FaceAnalyzer,
    FacesExtraMissing,
    blur_faces,
    faces_of_person,
    link_faces,
)
from processors.hands import (
    HAND_CONNECTIONS,
    HAND_LANDMARK_NAMES,
    Hand,
    HandAnalyzer,
    link_hands,
)
from processors.models import ModelNotFoundError
from processors.pose import PoseProcessor
from processors.settings import Pose
from tests.conftest import _require
from tests.pose_helpers import POSE_MODEL, decode_frames, video_frame

FRONTAL = (640, 655, 660, 885, 890, 895)  # close-ups, the speaker facing the camera
TWO_HANDS = (615, 660, 705, 735)  # close-ups with both hands in view
ON_STAGE = 300  # a wide shot: the speaker's face is ~8 px


@pytest.fixture(scope="module")
def frames(captures) -> dict[int, np.ndarray]:
    path = _require(captures / "vogels_330.mkv", "capture vogels_330.mkv")
    return decode_frames(path, {*FRONTAL, *TWO_HANDS, ON_STAGE})


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return data.astronaut()  # 512x512 RGB, one face of ~95 px


@pytest.fixture(scope="module")
def analyzer(models):
    pytest.importorskip("dlib")
    with FaceAnalyzer(models) as faces:
        yield faces


@pytest.fixture(scope="module")
def hands(models):
    with HandAnalyzer(models) as analyzer:
        yield analyzer


@pytest.fixture(scope="module")
def persons(models, frames) -> dict[int, tuple[Person, ...]]:
    _require(models / POSE_MODEL, f"model {POSE_MODEL}")
    with PoseProcessor(Pose(models_dir=models, download=False)) as pose:
        return {i: pose.process([video_frame(frames[i])])[0].persons
                for i in (*FRONTAL, *TWO_HANDS)}


def _iou(a, b) -> float:
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


# --- faces -------------------------------------------------------------------------------------

def test_the_speakers_face_in_close_ups_with_box_keypoints_and_unit_embedding(analyzer, frames,
                                                                               persons):
    for index in FRONTAL:
        [face] = analyzer.faces(frames[index])
        left, top, width, height = face.box
        assert 0.3 < left < 0.5 and 0.05 < top < 0.15, index  # his head, upper middle
        assert 0.11 < width < 0.16 and 0.22 < height < 0.3, index  # ~85 px square in 640x330
        assert width * 640 == pytest.approx(height * 330, abs=2)
        assert 0.5 <= face.confidence < 1.0  # BlazeFace short range is unsure at this size
        assert len(face.keypoints) == 6
        for x, y in face.keypoints[:4]:  # eyes, nose tip, mouth: inside the box
            assert left <= x <= left + width and top <= y <= top + height, index
        right_eye, left_eye = face.keypoints[:2]
        assert right_eye[0] < left_eye[0]  # his right eye is on the viewer's left
        [person] = persons[index]
        nose = person.landmarks[0]  # the pose model's nose lies in the face box
        assert left <= nose.x <= left + width and top <= nose.y <= top + height
        embedding = face.embedding
        assert embedding.shape == (EMBEDDING_SIZE,) and embedding.dtype == np.float32
        assert np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-5)
        assert not embedding.flags.writeable


def test_same_person_close_across_frames_and_another_person_far(analyzer, frames, astronaut):
    speaker = np.stack([analyzer.faces(frames[i])[0].embedding for i in FRONTAL])
    [other] = analyzer.faces(astronaut)
    assert other.confidence > 0.9  # a large, sharp, frontal face
    same = [np.linalg.norm(a - b) for a, b in itertools.combinations(speaker, 2)]
    cosines = speaker @ speaker.T
    assert max(same) < MATCH_DISTANCE and cosines.min() > 0.9
    to_other = np.linalg.norm(speaker - other.embedding, axis=1)
    # Unit vectors: dlib's usual 0.6 on its raw descriptors (length ~1.3) is ~0.45 here; the
    # astronaut is 0.57-0.65 from these frames, the speaker's frames 0.1-0.38 from each other.
    assert to_other.min() > 0.5, to_other
    assert to_other.min() > max(same) + 0.1  # every frame's nearest identity is the speaker's


def test_the_dlib_detector_finds_the_face_too_and_embeds_it_alike(models, analyzer, frames):
    with FaceAnalyzer(models, detector="dlib") as hog:
        for index in (640, 660, 885):
            [face] = hog.faces(frames[index])
            [reference] = analyzer.faces(frames[index])
            assert _iou(face.box, reference.box) > 0.5, index
            assert 0.5 < face.confidence < 1.0
            assert len(face.keypoints) == 5  # eye corners and the base of the nose
            outer_right, _, outer_left, _, nose = face.keypoints  # viewer's right eye first
            assert outer_left[0] < nose[0] < outer_right[0] and nose[1] > outer_right[1]
            assert float(face.embedding @ reference.embedding) > 0.95


def test_largest_first_and_max_faces(models, astronaut):
    two = np.zeros((512, 896, 3), np.uint8)  # the astronaut, and beside her at 3/4 size
    two[:, :512] = astronaut
    two[:384, 512:] = np.asarray(Image.fromarray(astronaut).resize((384, 384)))
    with FaceAnalyzer(models, detector="dlib", embed=False) as hog:
        found = hog.faces(two)
        assert len(found) >= 2 and all(face.embedding is None for face in found)
        areas = [face.box[2] * face.box[3] for face in found]
        assert areas == sorted(areas, reverse=True)
        assert any(face.box[0] > 512 / 896 for face in found)  # the smaller copy
    with FaceAnalyzer(models, detector="dlib", embed=False, max_faces=1) as hog:
        assert hog.faces(two) == found[:1]


def test_small_far_faces_are_missed(analyzer, frames, models):
    """The documented limit: on the wide shot neither detector finds the ~8 px face (the
    speaker's head is at about (0.72, 0.72))."""
    with FaceAnalyzer(models, detector="dlib", embed=False, upsample=2) as hog:
        for found in (analyzer.faces(frames[ON_STAGE]), hog.faces(frames[ON_STAGE])):
            assert not [f for f in found if abs(f.box[0] + f.box[2] / 2 - 0.72) < 0.05
                        and abs(f.box[1] + f.box[3] / 2 - 0.72) < 0.05]


def test_faces_link_to_the_person_whose_box_holds_them(analyzer, frames, persons):
    for index in FRONTAL:
        found = analyzer.faces(frames[index])
        people = persons[index]
        assert link_faces(found, people) == [0]
        decoy = Person(bbox=(0.0, 0.0, 0.2, 1.0), confidence=0.9)
        assert link_faces(found, [decoy, *people]) == [1]
        assert link_faces(found, [decoy]) == [None]
        assert faces_of_person(found, people[0].bbox) == [0]
        assert faces_of_person(found, decoy.bbox) == []


def test_link_faces_prefers_the_box_overlapping_most():
    face = Face(box=(0.4, 0.1, 0.2, 0.2), confidence=0.9, keypoints=())
    edge = (0.45, 0.0, 1.0, 1.0)  # holds the centre (0.5, 0.2), overlaps 0.15 x 0.2
    whole = (0.3, 0.0, 0.7, 1.0)  # holds it, overlaps all of it
    below = (0.0, 0.25, 1.0, 1.0)  # overlaps, but not the centre
    assert link_faces([face], [below, edge, whole]) == [2]
    assert link_faces([face], [below]) == [None]
    assert link_faces([face, face], [edge]) == [0, 0]
    assert link_faces([], [edge]) == [] and link_faces([face], []) == [None]


def test_blur_changes_the_face_and_nothing_else(analyzer, frames):
    image = frames[660]
    before = image.copy()
    [face] = analyzer.faces(image)
    out = blur_faces(image, [face], margin=0.25)
    assert out is not image and out.shape == image.shape and out.dtype == image.dtype
    assert np.array_equal(image, before)  # the input is left alone
    left, top, width, height = face.box
    x0, x1 = int((left - 0.25 * width) * 640), int(np.ceil((left + 1.25 * width) * 640))
    y0, y1 = int((top - 0.25 * height) * 330), int(np.ceil((top + 1.25 * height) * 330))
    inside = np.zeros(image.shape[:2], bool)
    inside[max(0, y0):y1, max(0, x0):x1] = True
    assert np.array_equal(out[~inside], image[~inside])
    box = (slice(int(top * 330), int((top + height) * 330)),
           slice(int(left * 640), int((left + width) * 640)))
    changed = np.any(out[box] != image[box], axis=2).mean()
    assert changed > 0.9
    assert len(np.unique(out[inside].reshape(-1, 3), axis=0)) <= 36  # 6 x 6 flat blocks
    assert np.array_equal(blur_faces(image, []), image)


def test_embed_false_needs_no_dlib_and_embed_without_it_says_what_to_install(models, frames,
                                                                            monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # `import dlib` now raises ImportError
    with FaceAnalyzer(models, embed=False) as plain:
        [face] = plain.faces(frames[660])
        assert face.embedding is None
    for kwargs in ({}, {"detector": "dlib", "embed": False}):
        with pytest.raises(FacesExtraMissing, match="kvs-analytics\\[faces\\]") as raised:
            FaceAnalyzer(models, **kwargs)
        assert FACES_EXTRA in str(raised.value)


def test_a_missing_model_names_the_file_and_the_folder(tmp_path):
    with pytest.raises(ModelNotFoundError) as raised:
        FaceAnalyzer(tmp_path, embed=False)
    assert "face_detector.tflite" in str(raised.value) and str(tmp_path) in str(raised.value)
    assert raised.value.path == tmp_path / "face_detector.tflite"
    with pytest.raises(ModelNotFoundError) as raised:
        HandAnalyzer(tmp_path)
    assert "hand_landmarker.task" in str(raised.value) and str(tmp_path) in str(raised.value)


def test_bad_input_and_closed_analyzers_raise(models):
    with FaceAnalyzer(models, embed=False) as faces, HandAnalyzer(models) as hands:
        for analyse in (faces.faces, hands.hands):
            with pytest.raises(ValueError, match="HxWx3 uint8"):
                analyse(np.zeros((10, 10), np.uint8))
    for analyse in (faces.faces, hands.hands):
        with pytest.raises(RuntimeError, match="closed"):
            analyse(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="detector"):
        FaceAnalyzer(models, detector="cnn")


# --- hands -------------------------------------------------------------------------------------

def test_both_hands_in_close_ups_with_21_landmarks_and_handedness(hands, frames, persons):
    for index in TWO_HANDS:
        found = hands.hands(frames[index])
        assert len(found) == 2, index
        for hand in found:
            assert isinstance(hand, Hand) and len(hand.landmarks) == 21
            assert all(len(point) == 3 for point in hand.landmarks)
            assert 0.5 <= hand.score <= 1.0
        by_side = {hand.handedness: hand for hand in found}
        assert set(by_side) == {"Left", "Right"}, index
        # unmirrored video: his right hand is on the viewer's left
        assert by_side["Right"].landmarks[0][0] < by_side["Left"].landmarks[0][0]
        [person] = persons[index]
        for hand in found:  # each hand's wrist is near one of the pose model's wrists
            x, y, _ = hand.landmarks[0]
            assert min(np.hypot(person.landmarks[k].x - x, person.landmarks[k].y - y)
                       for k in (15, 16)) < 0.05


def test_hands_link_to_the_speaker(hands, frames, persons):
    for index in TWO_HANDS:
        found = hands.hands(frames[index])
        [person] = persons[index]
        assert link_hands(found, [person]) == [0, 0]
        decoy = Person(bbox=(0.0, 0.0, 0.1, 0.1), confidence=0.9)
        assert link_hands(found, [decoy, person]) == [1, 1]
        assert link_hands(found, [decoy]) == [None, None]


def test_link_hands_grows_the_box_and_picks_the_nearest_wrist():
    wrist_at = lambda x, y: Hand(landmarks=((x, y, 0.0),) * 21, handedness="Left", score=0.9)
    box = (0.2, 0.2, 0.6, 0.6)  # grown by 10 % of 0.4: 0.16 .. 0.64
    assert link_hands([wrist_at(0.63, 0.5), wrist_at(0.66, 0.5)], [box]) == [0, None]
    near, far = (0.0, 0.0, 1.0, 1.0), (0.4, 0.4, 0.5, 0.5)  # both hold (0.45, 0.45)
    assert link_hands([wrist_at(0.45, 0.45)], [near, far]) == [1]  # the nearer box centre


def test_no_hands_on_a_blank_frame_and_the_skeleton_tables(hands):
    assert hands.hands(np.zeros((330, 640, 3), np.uint8)) == []
    assert len(HAND_LANDMARK_NAMES) == 21 and HAND_LANDMARK_NAMES[0] == "wrist"
    assert len(HAND_CONNECTIONS) == 21
    assert {i for pair in HAND_CONNECTIONS for i in pair} == set(range(21))
    from mediapipe.tasks.python.vision import hand_landmarker

    assert HAND_CONNECTIONS == tuple(
        (c.start, c.end) for c in hand_landmarker.HandLandmarksConnections.HAND_CONNECTIONS)
    assert HAND_LANDMARK_NAMES == tuple(m.name.lower() for m in hand_landmarker.HandLandmark)
