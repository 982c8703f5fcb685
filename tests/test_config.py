"""Configuration: YAML validated once, every key overridable from the environment, errors that
name the key, and an example file that documents every key."""

from __future__ import annotations

import pytest
import yaml
from pydantic import BaseModel

from consumer.config import (
    Config,
    ConfigError,
    FrameSelection,
    LagPolicy,
    SamplingMode,
    load_config,
)

from .conftest import REPO

EXAMPLE = REPO / "infra" / "examples" / "consumer.yaml"
MINIMAL = {"streams": {"names": ["cam-1"]}, "outputs": {"kinesis": {"stream": "records"}}}


def test_minimal_config_gets_sensible_defaults():
    config = load_config(data=MINIMAL, environ={})
    settings = config.streams.settings_for("cam-1")
    assert settings.sampling.mode is SamplingMode.FPS and settings.sampling.fps == 2.0
    assert settings.policy is LagPolicy.LOSSLESS and settings.frames is FrameSelection.PERSONS
    assert config.streams.start.value == "NOW" and config.outputs.s3 is None
    assert config.checkpoint.worker_id  # the host name


def test_yaml_file_and_environment_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "outputs": {
        "kinesis": {"stream": "records"}, "s3": {"bucket": "file-bucket"}}}))
    config = load_config(path, environ={
        "KVSA_OUTPUTS__S3__BUCKET": "env-bucket",
        "KVSA_STREAMS__NAMES": "[cam-7, cam-8]",
        "KVSA_STREAMS__DEFAULTS__SAMPLING__FPS": "5",
        "KVSA_STREAMS__OVERRIDES": "{cam-8: {sampling: {mode: keyframes}, frames: none}}",
        "UNRELATED": "ignored"})
    assert config.outputs.s3.bucket == "env-bucket"
    assert config.streams.names == ["cam-7", "cam-8"]
    assert config.streams.settings_for("cam-7").sampling.fps == 5.0
    eight = config.streams.settings_for("cam-8")
    assert eight.sampling.mode is SamplingMode.KEYFRAMES and eight.frames is FrameSelection.NONE
    assert eight.policy is LagPolicy.LOSSLESS  # untouched keys keep the defaults


@pytest.mark.parametrize("data, environ, named", [
    ({**MINIMAL, "bogus": 1}, {}, "bogus: unknown key"),
    ({**MINIMAL, "outputs": {"kinesis": {"stream": "r", "lingr_ms": 5}}}, {},
     "outputs.kinesis.lingr_ms: unknown key"),
    (MINIMAL, {"KVSA_OUTPUTS__KINESIS__STREEM": "x"}, "KVSA_OUTPUTS__KINESIS__STREEM"),
    ({"streams": {"names": ["cam-1"]}}, {}, "outputs.kinesis: required key is missing"),
    ({**MINIMAL, "streams": {"names": ["a/b"]}}, {}, "streams.names"),
    ({**MINIMAL, "streams": {"names": ["cam\n"]}}, {}, "streams.names"),
    ({**MINIMAL, "streams": {"names": ["c"], "defaults": {"sampling": {"fps": 0}}}}, {},
     "streams.defaults.sampling.fps"),
    ({**MINIMAL, "outputs": {"kinesis": {"stream": "r"}, "s3": {"bucket": "Bad_Bucket"}}}, {},
     "outputs.s3.bucket"),
    ({**MINIMAL, "outputs": {"kinesis": {"stream": "r"}, "s3": {"bucket": "ok-bucket",
                                                                 "prefix": "../up"}}}, {},
     "outputs.s3.prefix"),
    ({"streams": {}, "outputs": {"kinesis": {"stream": "r"}}}, {}, "streams"),
])
def test_errors_name_the_key(data, environ, named):
    with pytest.raises(ConfigError) as err:
        load_config(data=data, environ=environ)
    assert named in str(err.value)


FACE_MATCH = {"cameras": {"lobby-*": {"rules": [
    {"type": "face_match", "name": "staff-seen", "external_image_id": "alice"}]}}}


@pytest.mark.parametrize("faces, named", [
    ({}, "processing.faces.search.collections"),  # faces off
    ({"enabled": True}, "processing.faces.search.collections"),  # detected, never searched
])
def test_a_face_match_rule_needs_faces_searched(faces, named):
    with pytest.raises(ConfigError) as err:
        load_config(data={**MINIMAL, "events": FACE_MATCH, "processing": {"faces": faces}},
                    environ={})
    assert "events.cameras.lobby-*.rules" in str(err.value) and named in str(err.value)
    assert "staff-seen" in str(err.value)


def test_a_face_match_rule_becomes_the_processors_rule():
    from processors.events import FaceMatchRule
    searched = {"faces": {"enabled": True, "search": {"collections": ["staff", "vip"]}}}
    rules = {"cameras": {"lobby-*": {"rules": [
        {"type": "face_match", "name": "vip", "collection": "vip", "min_similarity": 90}]}}}
    config = load_config(data={**MINIMAL, "events": rules, "processing": searched}, environ={})
    assert config.events.rules_for("lobby-2") == [
        FaceMatchRule("vip", collection="vip", external_image_id=None, min_similarity=90.0)]
    # a collection that is not searched, a similarity off the scale: errors naming the key
    rules["cameras"]["lobby-*"]["rules"][0]["collection"] = "guests"
    with pytest.raises(ConfigError, match=r"events.cameras.lobby-\*.rules: .*'guests'"):
        load_config(data={**MINIMAL, "events": rules, "processing": searched}, environ={})
    rules["cameras"]["lobby-*"]["rules"][0].update(collection=None, min_similarity=101)
    with pytest.raises(ConfigError, match=r"events.cameras.lobby-\*.rules.0.face_match"
                                          r".min_similarity"):
        load_config(data={**MINIMAL, "events": rules, "processing": searched}, environ={})


def test_unreadable_or_non_yaml_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("streams: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_config(bad, environ={})


def _paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    paths = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.add(path)
        if getattr(field.annotation, "__origin__", None) is dict:
            continue  # free-form mapping (overrides per stream name): documented by example
        for candidate in (field.annotation, *getattr(field.annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                paths |= _paths(candidate, path + ".")
    return paths


def _keys(value, prefix: str = "") -> set[str]:
    if not isinstance(value, dict):
        return set()
    keys = set()
    for name, child in value.items():
        keys.add(f"{prefix}{name}")
        if prefix.count(".") < 3 and name not in ("tags", "endpoints", "overrides"):
            keys |= _keys(child, f"{prefix}{name}.")
    return keys


def test_the_example_file_validates_and_documents_every_key():
    load_config(EXAMPLE, environ={})
    documented = _keys(yaml.safe_load(EXAMPLE.read_text()))
    missing = _paths(Config) - documented
    assert not missing, f"keys missing from {EXAMPLE.name}: {sorted(missing)}"


PRESET_BASE = {"streams": {"names": ["a"]}, "outputs": {"kinesis": {"stream": "r"}}}


@pytest.mark.parametrize("name, model, fps, frames, batch_workers", [
    ("development", "lite", 1.0, "all", 1),
    ("fast_processing", "lite", 1.0, "none", 2),
    ("production", "full", 2.0, "persons", 2),
    ("high_accuracy", "heavy", 5.0, "persons", 2),  # frames: not set, the default
])
def test_each_preset_sets_its_model_rate_frames_and_workers(name, model, fps, frames,
                                                            batch_workers):
    config = load_config(data={**PRESET_BASE, "preset": name}, environ={})
    assert config.processing.pose.model == f"pose_landmarker_{model}.task"
    assert config.streams.defaults.sampling.mode is SamplingMode.FPS
    assert config.streams.defaults.sampling.fps == fps
    assert config.streams.defaults.frames.value == frames
    assert config.batch.workers == batch_workers
    assert config.outputs.s3 is None  # a preset never creates outputs.s3 (it needs a bucket)


def test_the_presets_own_extras():
    dev = load_config(data={**PRESET_BASE, "preset": "development"}, environ={})
    assert dev.processing.pose.num_poses == 2 and dev.processing.workers == 1
    assert dev.streams.defaults.annotate is True and dev.processing.yolo.image_size == 320
    accurate = load_config(data={**PRESET_BASE, "preset": "high_accuracy"}, environ={})
    pose = accurate.processing.pose
    assert pose.num_poses == 6
    assert (pose.min_detection_confidence, pose.min_presence_confidence,
            pose.min_tracking_confidence) == (0.6, 0.6, 0.6)
    assert (accurate.processing.yolo.image_size, accurate.processing.yolo.confidence) == (960, 0.35)
    sizes = [load_config(data={**PRESET_BASE, "preset": name}, environ={}).processing.yolo
             .image_size for name in ("fast_processing", "production")]
    assert sizes == [480, 640]


@pytest.mark.parametrize("alias, name", [("fast", "fast_processing"), ("balanced", "production"),
                                         ("accurate", "high_accuracy")])
def test_the_first_names_are_aliases(alias, name):
    assert load_config(data={**PRESET_BASE, "preset": alias}, environ={}).model_dump(
        exclude={"preset"}) == load_config(data={**PRESET_BASE, "preset": name},
                                           environ={}).model_dump(exclude={"preset"})


def test_a_preset_fills_in_what_the_file_leaves_out_and_the_file_wins():
    base = PRESET_BASE
    mine = load_config(data={**base, "preset": "high_accuracy",
                             "processing": {"pose": {"num_poses": 2}},
                             "streams": {"names": ["a"], "defaults": {"frames": "none"}}},
                       environ={})
    assert mine.processing.pose.model == "pose_landmarker_heavy.task"
    assert mine.processing.pose.num_poses == 2  # the file's own key wins
    assert mine.streams.defaults.frames.value == "none"  # and this one
    assert mine.streams.defaults.sampling.fps == 5  # its neighbours still come from the preset
    assert mine.processing.pose.min_detection_confidence == 0.6
    env = {"KVSA_PRESET": "fast_processing", "KVSA_BATCH__WORKERS": "3"}
    from_env = load_config(data=base, environ=env)
    assert from_env.processing.pose.model == "pose_landmarker_lite.task"
    assert from_env.batch.workers == 3  # the environment wins over the preset too
    # production is the defaults, named (but batch.workers: 2, the default is 1)
    assert load_config(data=base, environ={}).model_dump(exclude={"preset", "batch"}) == \
        load_config(data={**base, "preset": "production"}, environ={}).model_dump(
            exclude={"preset", "batch"})


def test_an_unknown_preset_is_an_error_naming_it_and_the_choices():
    with pytest.raises(ConfigError, match=r"preset: 'quick' is not a preset; expected one of "
                                          r"development, fast_processing, production, "
                                          r"high_accuracy \(aliases: fast = fast_processing, "
                                          r"balanced = production, accurate = high_accuracy\)"):
        load_config(data={**PRESET_BASE, "preset": "quick"}, environ={})
