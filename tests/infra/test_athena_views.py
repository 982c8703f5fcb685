"""The template's Athena saved queries against the lake's DuckDB views and the Glue tables.

Each view's `CREATE OR REPLACE VIEW` parses as Athena SQL (sqlglot), gives the columns of the
DuckDB view of the same name (consumer.lake.views), in order, and reads only columns (down to
struct fields) that the Glue table `records` declares. The reports are those of
consumer.lake.views.REPORTS, parse, read columns their view or table has, and name the stream
with an execution parameter (`stream` is an injected partition: Athena refuses a query without
it). And the `records` table's columns cover the record JSON Schemas, with matching types.
"""

from __future__ import annotations

import json
import re

import pytest

from consumer.lake.views import REPORTS, open_lake

from ..conftest import REPO
from .test_template import load_template

sqlglot = pytest.importorskip("sqlglot")
exp = sqlglot.exp

SCHEMAS = REPO / "consumer" / "formats" / "schema"
VIEWS = ("frames", "persons", "events")  # the DuckDB views that Athena needs; poses is a table
# Glue's (Hive's) types a JSON Schema type may be stored as
STORED_AS = {"string": {"string"}, "integer": {"int", "bigint"}, "number": {"double", "float"},
             "boolean": {"boolean"}, "json": {"string"}}


# --- the template's pieces -------------------------------------------------------------------

@pytest.fixture(scope="module")
def template() -> dict:
    return load_template()


@pytest.fixture(scope="module")
def queries(template) -> dict[str, tuple[str, exp.Expression]]:
    """Saved query name -> (its SQL, the parsed statement); parse errors fail here."""
    found = {}
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Athena::NamedQuery":
            continue
        props = resource["Properties"]
        assert props["Database"] == {"Ref": "GlueDatabase"}, logical_id
        assert props["WorkGroup"] == {"Ref": "AthenaWorkGroup"}, logical_id
        sql = props["QueryString"]
        assert isinstance(sql, str), f"{logical_id}: QueryString is plain SQL"
        statements = sqlglot.parse(sql, read="athena")  # raises ParseError on bad SQL
        assert len(statements) == 1, f"{logical_id}: one statement per saved query"
        assert props["Name"] not in found, f"{logical_id}: duplicate name {props['Name']}"
        found[props["Name"]] = (sql, statements[0])
    return found


@pytest.fixture(scope="module")
def views(queries) -> dict[str, exp.Select]:
    """View name -> its SELECT, for every saved CREATE VIEW."""
    out = {}
    for name, (_, statement) in queries.items():
        if isinstance(statement, exp.Create):
            assert statement.kind == "VIEW", name
            assert statement.args.get("replace"), f"{name}: CREATE OR REPLACE, so it reruns"
            view = statement.this.name
            assert name == f"view {view}", name
            out[view] = statement.expression
    return out


@pytest.fixture(scope="module")
def reports(queries) -> dict[str, exp.Select]:
    out = {}
    for name, (_, statement) in queries.items():
        if not isinstance(statement, exp.Create):
            assert name.startswith("report "), name
            assert isinstance(statement, exp.Select), name
            out[name.removeprefix("report ")] = statement
    return out


@pytest.fixture(scope="module")
def duckdb_columns(tmp_path_factory) -> dict[str, list[str]]:
    """The DuckDB views' column names, from an empty lake (full column lists)."""
    con = open_lake(tmp_path_factory.mktemp("lake"))
    try:
        return {view: [row[0] for row in con.execute(f"DESCRIBE {view}").fetchall()]
                for view in (*VIEWS, "poses")}
    finally:
        con.close()


def glue_table(template: dict, name: str) -> dict:
    """A Glue table's columns then partition keys, as {name: parsed type}."""
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::Glue::Table":
            continue
        table = resource["Properties"]["TableInput"]
        if table["Name"] == name:
            columns = table["StorageDescriptor"]["Columns"] + table.get("PartitionKeys", [])
            return {c["Name"]: hive_type(c["Type"]) for c in columns}
    raise AssertionError(f"no Glue table {name}")


def hive_type(text: str):
    """A Hive type: a str for a scalar, a dict (field -> type) for a struct, [type] for an array."""
    tokens = re.findall(r"[A-Za-z_][A-Za-z0-9_]*|[<>,:]", text)
    position = 0

    def take(expected: str | None = None) -> str:
        nonlocal position
        token = tokens[position]
        assert expected is None or token == expected, f"{text}: {expected} expected at {token}"
        position += 1
        return token

    def parse():
        name = take().lower()
        if name == "struct":
            take("<")
            fields = {}
            while True:
                field = take()
                take(":")
                assert field not in fields, f"{text}: field {field} twice"
                fields[field] = parse()
                if take() == ">":
                    return fields
        if name == "array":
            take("<")
            element = parse()
            take(">")
            return [element]
        return name

    result = parse()
    assert position == len(tokens), f"{text}: trailing {tokens[position:]}"
    return result


# --- resolving column references ---------------------------------------------------------------

def reference(column: exp.Column) -> list[str]:
    """The column's full dotted path, lower case (relation alias included when written)."""
    parts = [part.name.lower() for part in column.parts]
    node = column
    while isinstance(node.parent, exp.Dot) and node.parent.this is node:
        node = node.parent
        parts.append(node.expression.name.lower())
    return parts


def resolve(path: list[str], sources: dict[str, dict]):
    """The type at `path` among the query's relations (alias -> struct of its columns)."""
    where = ".".join(path)
    if path[0] in sources and len(path) > 1:
        node, rest = sources[path[0]], path[1:]
    else:
        owners = [columns for columns in sources.values() if path[0] in columns]
        assert len(owners) == 1, f"{where}: {'no' if not owners else 'ambiguous'} column {path[0]}"
        node, rest = owners[0], path
    for part in rest:
        assert isinstance(node, dict), f"{where}: {part} is read from a non-struct"
        assert part in node, f"{where}: no field {part} (fields: {', '.join(node)})"
        node = node[part]
    return node


def view_sources(select: exp.Select, records: dict) -> dict[str, dict]:
    """alias -> columns of each relation the view reads: the records table, its UNNESTs."""
    sources = {}
    for table in select.find_all(exp.Table):
        assert table.name == "records", f"views read the records table, not {table.name}"
        sources[table.alias_or_name.lower()] = records
    for unnest in select.find_all(exp.Unnest):
        (argument,) = unnest.expressions
        array = resolve(reference(argument), sources)
        assert isinstance(array, list) and isinstance(array[0], dict), "UNNEST of array<struct>"
        # Athena (Trino) expands an array of rows into one column per field: name them all
        names = [column.name.lower() for column in unnest.args["alias"].columns]
        assert names == list(array[0]), f"UNNEST alias {names} != row fields {list(array[0])}"
        sources[unnest.alias.lower()] = array[0]
    return sources


def stream_parameter(select: exp.Select) -> bool:
    """Whether the query's WHERE has `stream = ?`."""
    where = select.args.get("where")
    return where is not None and any(
        isinstance(eq.this, exp.Column) and eq.this.name.lower() == "stream"
        and isinstance(eq.expression, exp.Placeholder) for eq in where.find_all(exp.EQ))


# --- the tests ---------------------------------------------------------------------------------

def test_views_give_duckdb_columns(views, duckdb_columns):
    assert sorted(views) == sorted(VIEWS), "a saved CREATE VIEW per DuckDB view except poses"
    for view in VIEWS:
        assert views[view].named_selects == duckdb_columns[view], (
            f"{view}: {views[view].named_selects} != DuckDB's {duckdb_columns[view]}")


def test_poses_table_is_the_duckdb_view(template, views, duckdb_columns):
    assert "poses" not in views
    poses = glue_table(template, "poses")
    missing = [c for c in duckdb_columns["poses"] if c not in poses]
    assert not missing, f"poses table lacks {missing}"


def test_views_read_only_declared_columns(template, views):
    records = glue_table(template, "records")
    for view, select in views.items():
        sources = view_sources(select, records)
        columns = list(select.find_all(exp.Column))
        assert columns, view
        for column in columns:
            try:
                resolve(reference(column), sources)
            except AssertionError as error:
                raise AssertionError(f"view {view}: {error}") from None


def test_views_keep_record_kinds_apart(views):
    for view, select in views.items():
        kinds = {eq.expression.name for eq in select.args["where"].find_all(exp.EQ)
                 if isinstance(eq.this, exp.Column) and eq.this.name.lower() == "type"}
        assert kinds == {"Event" if view == "events" else "Frame"}, view


def test_reports_are_duckdbs_and_read_existing_columns(template, reports, duckdb_columns):
    assert sorted(reports) == sorted(REPORTS)
    poses = list(glue_table(template, "poses"))
    for name, select in reports.items():
        (table,) = list(select.find_all(exp.Table))
        relation = table.name.lower()
        available = set(poses if relation == "poses" else duckdb_columns[relation])
        aliases = {s.alias.lower() for s in select.expressions if isinstance(s, exp.Alias)}
        for column in select.find_all(exp.Column):
            path = reference(column)
            assert len(path) == 1, f"report {name}: {'.'.join(path)}"
            # ORDER BY may name an output alias (hour, minute, zone)
            ordering = column.find_ancestor(exp.Order) is not None
            assert path[0] in available or (ordering and path[0] in aliases), (
                f"report {name}: no column {path[0]}")
        assert stream_parameter(select), f"report {name}: WHERE stream = ? (injected partition)"


def test_records_table_covers_record_schemas(template):
    records = glue_table(template, "records")
    expected: dict = {}
    for name in ("frame_record", "event_record"):
        schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
        merge(expected, shape(schema, schema), name)
    partitions = {"type", "stream", "date"}
    assert set(records) - partitions == set(expected), "records columns != schema properties"
    for column, shape_ in expected.items():
        covers(records[column], shape_, column)


def shape(node: dict, root: dict):
    """What a JSON Schema node must be stored as: a dict for an object with properties, [shape]
    for an array, else a JSON Schema type name ('json' for free-form objects)."""
    if "$ref" in node:
        return shape(root["$defs"][node["$ref"].rsplit("/", 1)[1]], root)
    if "oneOf" in node or "anyOf" in node:
        merged: dict = {}
        for alternative in node.get("oneOf", []) + node.get("anyOf", []):
            merge(merged, shape(alternative, root), "oneOf")
        return merged
    if "const" in node or "enum" in node:
        return "string"
    kinds = node["type"] if isinstance(node["type"], list) else [node["type"]]
    (kind,) = [k for k in kinds if k != "null"]
    if kind == "object":
        if "properties" not in node:
            return "json"
        return {key.lower(): shape(sub, root) for key, sub in node["properties"].items()}
    if kind == "array":
        return [shape(node["items"], root)]
    return kind


def merge(into: dict, more, where: str) -> None:
    assert isinstance(more, dict), where
    for key, value in more.items():
        if key in into and isinstance(value, dict):
            merge(into[key], value, f"{where}.{key}")
        else:
            assert into.get(key, value) == value, f"{where}.{key}: {into[key]} vs {value}"
            into[key] = value


def covers(stored, expected, where: str) -> None:
    if isinstance(expected, dict):
        assert isinstance(stored, dict), f"{where}: a struct expected"
        assert set(stored) == set(expected), (
            f"{where}: Glue has {sorted(set(stored) - set(expected))} extra, "
            f"lacks {sorted(set(expected) - set(stored))}")
        for key, value in expected.items():
            covers(stored[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(stored, list), f"{where}: an array expected"
        covers(stored[0], expected[0], f"{where}[]")
    else:
        assert stored in STORED_AS[expected], f"{where}: {stored} for JSON {expected}"
