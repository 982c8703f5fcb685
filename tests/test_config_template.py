"""`kvs-analytics config`: the example configuration with a preset's values written in, which
loads back with exactly those values and the example's everywhere else."""

from __future__ import annotations

import argparse

import pytest
import yaml

from consumer.config import load_config
from consumer.config_template import add_config, render_config, rewrite
from consumer.presets import ALIASES, PRESETS, leaves

from .conftest import REPO

EXAMPLE = REPO / "infra" / "examples" / "consumer.yaml"


def _flat(tree, prefix=""):
    """Every leaf of a model_dump by dotted path (lists and free-form mappings as values)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and key not in ("endpoints", "tags", "overrides",
                                                             "cameras"):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _cli(argv):
    parser = argparse.ArgumentParser(prog="kvs-analytics")
    add_config(parser.add_subparsers())
    args = parser.parse_args(["config", *argv])
    return args.handler(args)


@pytest.mark.parametrize("name", list(PRESETS))
def test_a_rendered_preset_loads_with_its_values_and_the_examples_elsewhere(name, tmp_path):
    path = tmp_path / f"{name}.yaml"
    path.write_text(render_config(name))
    rendered = _flat(load_config(path, environ={}, live=True).model_dump(mode="json"))
    example = _flat(load_config(EXAMPLE, environ={}, live=True).model_dump(mode="json"))
    # what the preset mechanism itself gives for the keys it sets (a minimal file + preset: NAME)
    minimal = {"streams": {"names": ["cam-1"]}, "outputs": {"kinesis": {"stream": "r"}}}
    from_preset = _flat(load_config(data={**minimal, "preset": name}, environ={})
                        .model_dump(mode="json"))
    set_by_preset = {dotted for dotted, _ in leaves(PRESETS[name].values)}
    assert set_by_preset <= rendered.keys()
    assert rendered["preset"] == name
    for key in rendered:
        if key in set_by_preset:
            assert rendered[key] == from_preset[key], key
        elif key not in ("preset", "checkpoint.worker_id"):  # worker_id: random per load
            assert rendered[key] == example[key], key
    # and the values are written into the text, not just filled in by `preset:` when loading
    raw = yaml.safe_load(path.read_text())
    for dotted, value in leaves(PRESETS[name].values):
        node = raw
        for part in dotted.split("."):
            node = node[part]
        assert node == value, dotted


def test_without_a_preset_it_is_the_example_with_a_header():
    text = render_config(None)
    assert text.endswith(EXAMPLE.read_text())
    header = text[:len(text) - len(EXAMPLE.read_text())]
    assert all(line.startswith("#") for line in header.splitlines())
    assert "EDIT BEFORE RUNNING" in header


def test_an_alias_renders_its_preset():
    assert render_config("accurate") == render_config("high_accuracy")
    assert "preset: high_accuracy " in render_config("accurate")


def test_values_replace_the_examples_and_keep_the_comment_column():
    text = render_config("high_accuracy")
    lines = {line.split(":")[0].strip(): line for line in text.splitlines()
             if line.lstrip().startswith(("fps:", "model:", "min_detection_confidence:"))}
    assert lines["fps"] == "      fps: 5.0                  # analysed frames per second, mode fps"
    assert lines["model"].startswith("    model: heavy                      # or lite, full")
    assert lines["min_detection_confidence"] == "    min_detection_confidence: 0.6"


def test_the_rewriter_follows_the_indentation_and_skips_flow_collections_and_list_items():
    text = ("a:\n"
            "  b: [1,\n"
            "      c: 2]           # not a key: inside a flow sequence\n"
            "  c: 3   # c\n"
            "  rules:\n"
            "    - {type: zone,\n"
            "       name: x}\n"
            "    - name: y\n"
            "      c: 4\n"
            "  s: |\n"
            "    c: 5\n"
            "c: 6\n")
    out = rewrite(text, {"a.c": 30, "c": "six"})
    assert out.splitlines()[3] == "  c: 30  # c"
    assert out.splitlines()[-1] == "c: six"
    assert yaml.safe_load(out)["a"]["rules"][1] == {"name": "y", "c": 4}
    assert yaml.safe_load(out)["a"]["s"] == "c: 5\n"
    with pytest.raises(KeyError, match="a.rules.c"):
        rewrite(text, {"a.rules.c": 1})


def test_the_command_prints_or_writes_and_refuses_to_overwrite(tmp_path, capsys):
    assert _cli(["--preset", "production"]) == 0
    assert capsys.readouterr().out == render_config("production")
    target = tmp_path / "my.yaml"
    assert _cli(["--preset", "fast", "--output", str(target)]) == 0
    assert target.read_text() == render_config("fast_processing")
    assert str(target) in capsys.readouterr().err
    assert _cli(["--preset", "development", "--output", str(target)]) == 2
    err = capsys.readouterr().err
    assert f"{target} exists" in err and "--force" in err
    assert target.read_text() == render_config("fast_processing")  # untouched
    assert _cli(["--preset", "development", "--output", str(target), "--force"]) == 0
    assert target.read_text() == render_config("development")


def test_an_unknown_preset_exits_2_naming_it_and_the_choices(tmp_path, capsys):
    target = tmp_path / "my.yaml"
    assert _cli(["--preset", "quick", "--output", str(target)]) == 2
    err = capsys.readouterr().err
    assert "'quick' is not a preset" in err
    assert all(name in err for name in [*PRESETS, *ALIASES])
    assert not target.exists()


def test_list_names_the_presets_and_their_values(capsys):
    assert _cli(["--list"]) == 0
    out = capsys.readouterr().out
    for name, preset in PRESETS.items():
        assert f"{name}: {preset.summary}" in out
    assert "    processing.pose.model: heavy" in out
    assert "    streams.defaults.frames: none" in out
    assert "fast = fast_processing" in out
