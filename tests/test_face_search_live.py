"""Face search on live streams, end to end through the local stack: two simulated cameras push
into the local Kinesis Video service, the speaker's clip (`cam-stage`) and a still photograph
of another person made into a video (`cam-door`, scikit-image's astronaut); a consumer with
processing.faces searching a collection that holds only the speaker's face (indexed from one
frame) reads both. What the data stream holds afterwards: records of cam-stage naming him above
the threshold in his close-ups, and records of cam-door whose detected face matches no one.
"""

from __future__ import annotations

import pytest

from consumer.config import load_config
from consumer.demo import read_all_records
from consumer.fleet.lease_table import LeaseTable
from infra.local.limits import Limits
from infra.local.stack import LocalStack
from tests.face_helpers import THRESHOLD, astronaut_video, index_speaker
from tests.test_consumer_e2e import (
    TABLE,
    config_data,
    consume_until_checkpointed,
    make_outputs,
    push,
)

pytestmark = pytest.mark.slow


def test_live_streams_name_the_speaker_and_no_one_else(models, tmp_path):
    astronaut_video(tmp_path / "astronaut.mp4", seconds=6)
    with LocalStack(limits=Limits(getmedia_idle_seconds=1.0)) as stack:
        LeaseTable(stack.client("dynamodb"), TABLE, "reader").ensure_table()
        make_outputs(stack, "face-records", "face-bucket")
        index_speaker(stack, "face-bucket", models)
        push(stack, "cam-stage")
        push(stack, "cam-door", tmp_path / "astronaut.mp4")
        config = load_config(data=config_data(
            stack, ["cam-stage", "cam-door"], "face-records", "face-bucket",
            processing={"pose": {"models_dir": str(models), "download": False},
                        "faces": {"enabled": True,
                                  "search": {"collections": ["staff"],
                                             "match_threshold": THRESHOLD}}}), environ={})
        consume_until_checkpointed(stack, config, ["cam-stage", "cam-door"], timeout=180)
        records = read_all_records(stack.client("kinesis"), "face-records")

    def faces_of(camera: str) -> list[dict]:
        return [face for r in records if r["RecordType"] == "Frame"
                and r["InputInformation"]["KinesisVideo"]["StreamName"] == camera
                for face in r["FaceSearchResponse"]]

    stage = faces_of("cam-stage")
    named = [face for face in stage if face["MatchedFaces"]]
    assert len(named) >= 3, stage
    assert all(face["MatchedFaces"][0]["Face"]["ExternalImageId"] == "speaker"
               and face["MatchedFaces"][0]["Similarity"] >= THRESHOLD for face in named)
    door = faces_of("cam-door")
    assert door, "the astronaut's face should be detected"
    assert all(face["MatchedFaces"] == [] for face in door), door
