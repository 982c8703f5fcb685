"""`kvs-analytics config`: a complete, commented configuration file to edit.

The text is the example that documents every key (`infra/examples/consumer.yaml`, shipped with
the package), with `preset: NAME` set and each value the preset sets written in place of the
example's value, on the key's own line and with its comment kept (`render_config`). So the file
shows every value the consumer will use, and editing one takes effect (the file wins over its
preset, key by key). The streams, outputs and event rules are the example's placeholders: a
header says to edit them.

The rewriting is line-based and knows YAML's block layout only as far as the example uses it: a
`key: value` line's path comes from the indentation of the keys above it; flow collections
(`[...]`, `{...}`) that span lines, list items and block scalars are skipped over, never
rewritten. A preset key the example lacks, or a result that does not read back with the preset's
values, is an error (tests/test_config_template.py renders every preset).
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from consumer.presets import ALIASES, PRESETS, choices, leaves, resolve

EXAMPLE = ("infra", "examples/consumer.yaml")

CONFIG_EPILOG = """\
Without --preset the file has the defaults (preset: null). With one, every value the preset
sets is written into the file on its key's line; change any of them and the file's value wins.
Edit the placeholders before running: streams (which cameras), outputs.kinesis.stream and
outputs.s3.bucket (or delete outputs.s3), and events.cameras (example rules).

exit status: 0 written, 2 unknown preset, or FILE exists (without --force) or cannot be written.

examples:
  kvs-analytics config --list
  kvs-analytics config --preset production --output my.yaml
  kvs-analytics run --config my.yaml
  # just look at what a preset sets, against the defaults
  diff <(kvs-analytics config) <(kvs-analytics config --preset high_accuracy)"""

_KEY = re.compile(r"(?P<indent> *)(?P<key>[A-Za-z0-9_][A-Za-z0-9_.\-]*):(?=\s|$)")


def example_text() -> str:
    """The example configuration that documents every key, as shipped with the package."""
    package, name = EXAMPLE
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


def render_config(preset: str | None = None) -> str:
    """A complete, commented configuration: the example with `preset`'s values written in.
    Raises ValueError for an unknown preset (the message lists the choices)."""
    name = resolve(preset) if preset is not None else None
    values = dict(leaves(PRESETS[name].values)) if name else {}
    text = rewrite(example_text(), {"preset": name, **values})
    check = yaml.safe_load(text)
    for path, value in values.items():
        got = _get(check, path)
        if got != value:
            raise AssertionError(f"{path}: rendered as {got!r}, the preset sets {value!r}")
    return _header(name, values) + text


def _header(name: str | None, values: dict[str, Any]) -> str:
    lines = ["# Written by `kvs-analytics config" + (f" --preset {name}`." if name else "`."),
             "# EDIT BEFORE RUNNING: streams (names, prefix or tags: your cameras),",
             "# outputs.kinesis.stream and outputs.s3.bucket (or delete outputs.s3), and",
             "# events.cameras (example rules for a camera named lobby-cam-1): they are",
             "# placeholders. Everything else is a working value."]
    if name:
        about = f"The preset {name} ({PRESETS[name].summary}) set these values below; " \
                "the file's own values win over the preset's:"
        lines += textwrap.wrap(about, 96, initial_indent="# ", subsequent_indent="# ")
        lines += [f"#   {path}: {_scalar(value)}" for path, value in values.items()]
    return "\n".join(lines) + "\n#\n"


def rewrite(text: str, values: dict[str, Any]) -> str:
    """`text` (block-style YAML) with the value of each dotted path in `values` replaced on its
    own line, the line's comment kept in its column. Raises KeyError for a path that is not a
    `key: value` line of `text`."""
    todo = dict(values)
    out = []
    stack: list[tuple[int, str | None]] = []  # (indent, key); None: inside a list item
    depth = 0  # open [ and { of a flow collection spanning lines
    block_indent: int | None = None  # inside a block scalar (| or >) of a key at this indent
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        indent = len(body) - len(body.lstrip(" "))
        if block_indent is not None:
            if not body.strip() or indent > block_indent:
                out.append(line)
                continue
            block_indent = None
        if depth > 0 or not body.strip() or body.lstrip().startswith("#"):
            depth = max(0, depth + _depth(body))
            out.append(line)
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        match = _KEY.match(body)
        if match is None:  # a list item ("- ...") or something this does not rewrite
            if body.lstrip().startswith("-"):
                stack.append((indent, None))
            depth = max(0, _depth(body))
            out.append(line)
            continue
        key = match["key"]
        path = None if any(k is None for _, k in stack) else ".".join(
            [k for _, k in stack] + [key])  # type: ignore[misc]
        stack.append((indent, key))
        rest = body[match.end():]
        value, comment_at = _split_comment(rest)
        if re.fullmatch(r"\s*[|>][-+0-9]*\s*", value):
            block_indent = indent
        depth = max(0, _depth(value))
        if path in todo and value.strip() and depth == 0:
            head = f"{match['indent']}{key}: {_scalar(todo.pop(path))}"
            if comment_at is not None:
                column = match.end() + comment_at
                comment = rest[comment_at:]
                head = head.ljust(column) if len(head) + 2 <= column else head + "  "
                head += comment
            out.append(head + line[len(body):])
        else:
            out.append(line)
    if todo:
        raise KeyError(f"not a `key: value` line of the example configuration: "
                       f"{', '.join(sorted(todo))}")
    return "".join(out)


def _split_comment(rest: str) -> tuple[str, int | None]:
    """(value text, index of its comment's '#' in `rest` or None), quotes respected."""
    quote = None
    for i, char in enumerate(rest):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or rest[i - 1] in " \t"):
            return rest[:i], i
    return rest, None


def _depth(text: str) -> int:
    """Opened minus closed [ and { in `text`, outside quotes and its comment."""
    value, _ = _split_comment(text)
    quote, depth = None, 0
    for char in value:
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
    return depth


def _scalar(value: Any) -> str:
    """`value` as a YAML flow scalar (quoted only when it has to be)."""
    return yaml.safe_dump([value], default_flow_style=True, width=10_000).strip()[1:-1]


def _get(tree: Any, path: str) -> Any:
    for key in path.split("."):
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


def describe_presets() -> str:
    """`--list`: each preset, its summary and the values it sets; then the aliases."""
    lines = []
    for name, preset in PRESETS.items():
        lines.append(f"{name}: {preset.summary}")
        lines += [f"    {path}: {_scalar(value)}"
                  + ("  (processing.processor: yolo only)" if path.startswith("processing.yolo.")
                     else "") for path, value in leaves(preset.values)]
    lines.append("aliases: " + ", ".join(f"{old} = {new}" for old, new in ALIASES.items()))
    return "\n".join(lines) + "\n"


def add_config(subparsers: Any) -> None:
    """Register `config` on the command line's subparsers (consumer.cli.COMMANDS)."""
    parser = subparsers.add_parser(
        "config",
        help="write a complete, commented configuration file, from a preset",
        description="Print (or write to FILE) a configuration that documents every key, with\n"
                    "the values of a preset written in: a starting point to edit.",
        epilog=CONFIG_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", metavar="NAME",
                        help=f"one of {choices()}")
    parser.add_argument("--output", "-o", metavar="FILE",
                        help="write the configuration here instead of standard output")
    parser.add_argument("--force", action="store_true",
                        help="with --output: overwrite FILE if it exists")
    parser.add_argument("--list", action="store_true",
                        help="list the presets and the values each sets, and exit")
    parser.set_defaults(handler=_config)


def _config(args: argparse.Namespace) -> int:
    if args.list:
        sys.stdout.write(describe_presets())
        return 0
    try:
        text = render_config(args.preset)
    except ValueError as err:
        print(f"config: {err}", file=sys.stderr)
        return 2
    if args.output is None:
        sys.stdout.write(text)
        return 0
    path = Path(args.output)
    try:
        with path.open("w" if args.force else "x", encoding="utf-8") as file:
            file.write(text)
    except FileExistsError:
        print(f"config: {path} exists; give --force to overwrite it", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"config: cannot write {path}: {err.strerror or err}", file=sys.stderr)
        return 2
    print(f"config: wrote {path}; edit its streams and outputs, then: "
          f"kvs-analytics run --config {path}", file=sys.stderr)
    return 0
