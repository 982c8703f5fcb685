"""The console's pure parts: the person-count chart (consumer.console.chart), the zone and line
overlay (consumer.console.geometry) and the shared-secret login (consumer.console.auth), the
last through a real Starlette application with real templates, sessions and TestClient."""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.testclient import TestClient

from consumer.config import load_config
from consumer.console import auth
from consumer.console.auth import (
    check_password_hash,
    hash_password,
    install_login,
    is_open,
    prompt_password_hash,
    safe_next,
    verify_password,
)
from consumer.console.chart import person_count_chart, time_ticks
from consumer.console.geometry import Shape, overlay_svg, rule_shapes
from processors.events import segment_crossing

SVG = "{http://www.w3.org/2000/svg}"
T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
TEMPLATES = Path(__file__).resolve().parents[1] / "consumer" / "console" / "templates"
PASSWORD = "correct horse battery staple"


def svg(text: str) -> ET.Element:
    root = ET.fromstring(text)
    assert root.tag == SVG + "svg"
    return root


def texts(root: ET.Element, cls: str) -> list[str]:
    return [el.text or "" for el in root.iter(SVG + "text") if el.get("class") == cls]


# ---- chart ----------------------------------------------------------------------------------

def test_chart_one_polyline_per_run_with_gaps_split():
    series = {
        # 0..10 min, then a gap of 5 minutes, then 15..20 min: two runs
        "lobby": [(T0 + m * 60, m % 3) for m in range(11)] + [(T0 + m * 60, 1) for m in
                                                                 range(15, 21)],
        # exactly 2 minutes apart never breaks; unsorted input is sorted
        "door": [(T0 + 240, 2.0), (T0 + 0, 1.0), (T0 + 120, 4.0)],
    }
    root = svg(person_count_chart(series, T0, T0 + 3600))
    assert root.get("class") == "chart" and root.get("data-series") == "2"
    groups = {g.get("data-camera"): g for g in root.iter(SVG + "g") if g.get("class") == "series"}
    assert set(groups) == {"lobby", "door"}
    assert len(groups["lobby"].findall(SVG + "polyline")) == 2
    (door,) = groups["door"].findall(SVG + "polyline")
    xs = [float(p.split(",")[0]) for p in door.get("points").split()]
    assert len(xs) == 3 and xs == sorted(xs)
    assert groups["lobby"].get("stroke") != groups["door"].get("stroke")
    assert root.find(SVG + "title").text.startswith("Mean persons per minute")


def test_chart_gap_over_two_minutes_breaks_and_a_lone_point_is_a_dot():
    series = {"cam": [(T0, 1), (T0 + 120, 1), (T0 + 241, 2), (T0 + 600, 3), (T0 + 660, 3)]}
    root = svg(person_count_chart(series, T0, T0 + 900))
    lines = list(root.iter(SVG + "polyline"))
    assert [len(p.get("points").split()) for p in lines] == [2, 2, 2]
    assert lines[1].get("class") == "point"  # (T0 + 241) alone, drawn twice: a dot
    assert lines[1].get("points").split()[0] == lines[1].get("points").split()[1]


def test_chart_escapes_camera_names():
    name = '<cam & "1">\'x'
    text = person_count_chart({name: [(T0, 1), (T0 + 60, 2)]}, T0, T0 + 600)
    assert "<cam" not in text and "&lt;cam &amp; &quot;1&quot;&gt;" in text
    root = svg(text)
    legend = next(g for g in root.iter(SVG + "g") if g.get("class") == "legend")
    assert [t.text for t in legend.iter(SVG + "text")] == [name]
    assert next(g for g in root.iter(SVG + "g")
                if g.get("class") == "series").get("data-camera") == name


def test_chart_axis_labels():
    root = svg(person_count_chart({"a": [(T0 + 60, 7.3), (T0 + 120, 0.5)]}, T0, T0 + 3600))
    xs = texts(root, "x-tick")
    assert xs[0] == "22:20" and xs[-1] == "23:10" and 4 <= len(xs) <= 8
    assert all(re.fullmatch(r"\d\d:\d\d", label) for label in xs)
    ys = texts(root, "y-tick")
    assert ys[0] == "0" and ys[-1] == "8"  # 7.3 rounded up
    assert [float(y) for y in ys] == sorted(float(y) for y in ys)
    low = svg(person_count_chart({"a": [(T0 + 60, 0.2)]}, T0, T0 + 3600))
    assert texts(low, "y-tick")[-1] == "1"  # at least 1
    days = svg(person_count_chart({"a": [(T0 + 60, 3)]}, T0, T0 + 3 * 86400))
    assert all(re.fullmatch(r"\d\d-\d\d \d\d:\d\d", label) for label in texts(days, "x-tick"))
    assert texts(days, "x-tick")[0] == "11-15 00:00"


def test_chart_tick_count_stays_between_4_and_8():
    spans = [300, 420, 700, 1000, 3600, 5000, 4 * 3600, 7 * 3600, 20 * 3600, 86400, 1.5 * 86400,
             3 * 86400, 9 * 86400, 25 * 86400, 60 * 86400, 200 * 86400, 365 * 86400]
    for span in spans:
        for offset in (0, 17, 299, 3599, 43_210):
            ticks = time_ticks(T0 + offset, T0 + offset + span)
            assert 4 <= len(ticks) <= 8, (span, offset, ticks)
            assert all(T0 + offset <= t <= T0 + offset + span for t, _ in ticks)


def test_chart_empty_and_bad_input():
    for series in ({}, {"cam": []}, {"cam": [(T0 - 60, 3), (T0 + 7200, 3)]},
                   {"cam": [(T0 + 60, float("nan"))]}):
        root = svg(person_count_chart(series, T0, T0 + 3600))
        assert root.get("data-series") == "0"
        assert texts(root, "empty") == ["no frames in this period"]
        assert root.find(f".//{SVG}polyline") is None
    for start, end in ((T0, T0), (T0, T0 - 1), (float("nan"), T0), (T0, float("inf"))):
        with pytest.raises(ValueError, match="chart period"):
            person_count_chart({}, start, end)
    with pytest.raises(ValueError, match="chart size"):
        person_count_chart({}, T0, T0 + 60, width=100)


def test_chart_palette_distinct_for_ten_cameras():
    series = {f"cam-{i:02d}": [(T0 + 60, i), (T0 + 120, i)] for i in range(12)}
    root = svg(person_count_chart(series, T0, T0 + 600, height=320))
    styles = [(g.get("stroke"), g.get("stroke-dasharray")) for g in root.iter(SVG + "g")
              if g.get("class") == "series"]
    assert len(styles) == 12 and len(set(styles)) == 12
    assert len({stroke for stroke, _ in styles[:10]}) == 10


# ---- geometry -------------------------------------------------------------------------------

STAGE = [[0.55, 0.2], [0.95, 0.2], [0.95, 0.9], [0.55, 0.9]]


def events_config():
    data = {"events": {"cameras": {
        "lobby-*": {"rules": [
            {"type": "zone", "name": "stage", "polygon": STAGE},
            {"type": "line", "name": "door", "a": [0.3, 0.95], "b": [0.3, 0.1],
             "direction": "left_to_right"},
            {"type": "line", "name": "hall", "a": [0.05, 0.5], "b": [0.45, 0.5]},
            {"type": "dwell", "name": "linger", "zone": "stage", "seconds": 2},
            {"type": "fall", "name": "fall"}]},
        "lobby-2": {"rules": [{"type": "line", "name": "exit", "a": [0, 0.5], "b": [1, 0.5],
                               "direction": "right_to_left"}]}}}}
    return load_config(data=data, environ={}, live=False).events


def test_rule_shapes_from_a_real_config():
    config = events_config()
    shapes = rule_shapes(config, "lobby-1")  # by the pattern
    assert [(s.name, s.kind) for s in shapes] == [("stage", "zone"), ("door", "line"),
                                                  ("hall", "line")]
    stage, door, hall = shapes
    assert stage.points == [tuple(p) for p in STAGE] and stage.rules == ("linger",)
    assert door.points == [(0.3, 0.95), (0.3, 0.1)] and door.direction == "left_to_right"
    assert hall.direction == "any"
    assert [s.name for s in rule_shapes(config, "lobby-2")] == ["exit"]  # the exact name wins
    assert rule_shapes(config, "garage") == []
    with pytest.raises(AttributeError):
        stage.name = "other"  # frozen


def overlay_groups(text: str) -> dict[str, ET.Element]:
    root = svg(text)
    assert root.get("class") == "overlay" and root.get("viewBox") == "0 0 1 1"
    assert root.get("preserveAspectRatio") == "none"
    return {g.get("data-rule"): g for g in root.iter(SVG + "g")
            if "shape" in (g.get("class") or "").split()}


def test_overlay_elements_and_highlight():
    shapes = rule_shapes(events_config(), "lobby-1")
    groups = overlay_groups(overlay_svg(shapes))
    assert list(groups) == ["stage", "door", "hall"]
    assert not any("hit" in g.get("class") for g in groups.values())
    polygon = groups["stage"].find(SVG + "polygon")
    assert polygon.get("points") == "0.55,0.2 0.95,0.2 0.95,0.9 0.55,0.9"
    for g in groups.values():
        drawn = [el for el in g if el.tag != SVG + "text"]
        assert drawn and all(el.get("vector-effect") == "non-scaling-stroke" for el in drawn)
        assert [t.text for t in g.iter(SVG + "text")] == [g.get("data-rule")]
    line = groups["door"].find(SVG + "line")
    assert [line.get(k) for k in ("x1", "y1", "x2", "y2")] == ["0.3", "0.95", "0.3", "0.1"]
    # one arrow (shaft + head) for a direction, two for "any"
    assert len(groups["door"].findall(SVG + "polyline")) == 2
    assert len(groups["hall"].findall(SVG + "polyline")) == 4
    assert "hit" in overlay_groups(overlay_svg(shapes, "door"))["door"].get("class").split()
    # an event of the dwell rule highlights its zone
    hit = overlay_groups(overlay_svg(shapes, "linger"))
    assert [name for name, g in hit.items() if "hit" in g.get("class")] == ["stage"]
    assert not any("hit" in g.get("class") for g in overlay_groups(
        overlay_svg(shapes, "nothing")).values())
    empty = svg(overlay_svg([]))
    assert empty.get("data-shapes") == "0" and empty.find(f".//{SVG}g") is None


@pytest.mark.parametrize("stream, rule", [("lobby-1", "door"), ("lobby-2", "exit")])
def test_overlay_arrow_points_the_way_a_crossing_counts(stream, rule):
    shape = next(s for s in rule_shapes(events_config(), stream) if s.name == rule)
    shaft = overlay_groups(overlay_svg([shape]))[rule].find(SVG + "polyline")
    (ox, oy), (tx, ty) = [tuple(map(float, p.split(","))) for p in shaft.get("points").split()]
    # a step from behind the arrow's foot to its tip crosses the line the configured way
    crossing = segment_crossing((2 * ox - tx, 2 * oy - ty), (tx, ty), *shape.points)
    assert crossing == shape.direction


def test_overlay_escapes_names_and_checks_aspect():
    shape = Shape('a<b&"c', "zone", [(0, 0), (1, 0), (0.5, 1)])
    text = overlay_svg([shape], highlight='a<b&"c', aspect=16 / 9)
    assert "a<b" not in text
    (group,) = overlay_groups(text).values()
    assert group.get("data-rule") == 'a<b&"c' and "hit" in group.get("class")
    assert group.find(SVG + "text").text == 'a<b&"c'
    assert "scale(0.5625 1)" in group.find(SVG + "text").get("transform")
    with pytest.raises(ValueError, match="aspect"):
        overlay_svg([shape], aspect=float("nan"))


# ---- auth: hashes ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hashed() -> str:
    return hash_password(PASSWORD)


def test_hash_and_verify(hashed):
    assert re.fullmatch(r"scrypt\$16384\$8\$1\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=", hashed)
    assert verify_password(PASSWORD, hashed)
    assert not verify_password(PASSWORD + " ", hashed)
    assert not verify_password("", hashed)
    assert hash_password(PASSWORD) != hashed  # a fresh salt
    assert verify_password("naïve ünïcode pässwörd", hash_password("naïve ünïcode pässwörd"))


def test_malformed_hashes_are_false_and_refused(hashed):
    parts = hashed.split("$")
    malformed = [
        "", PASSWORD, "hunter2", "scrypt", hashed + "$", hashed.replace("scrypt", "bcrypt"),
        "$".join(parts[:3] + ["x"] + parts[4:]),                   # p not a number
        "$".join(parts[:1] + ["16383"] + parts[2:]),               # n not a power of two
        "$".join(parts[:1] + [str(2 ** 24)] + parts[2:]),          # asks for 2 GiB
        "$".join(parts[:4] + ["not base64!"] + parts[5:]),
        "$".join(parts[:5] + ["QUJD"]),                            # a 3-byte hash
    ]
    started = time.monotonic()
    for value in malformed:
        assert verify_password(PASSWORD, value) is False, value
        with pytest.raises(ValueError) as caught:
            check_password_hash(value)
        message = str(caught.value)
        assert "console.password" in message and "scrypt$16384$8$1$" in message
        if value in (PASSWORD, "hunter2"):
            assert value not in message  # a plain-text password is never repeated
    assert time.monotonic() - started < 2
    assert check_password_hash(f"  {hashed}\n") == hashed


def test_prompt_password_hash(monkeypatch):
    answers: list[str] = []
    monkeypatch.setattr(auth.getpass, "getpass", lambda prompt="": answers.pop(0))
    answers[:] = [PASSWORD, PASSWORD]
    assert verify_password(PASSWORD, prompt_password_hash())
    answers[:] = [PASSWORD, PASSWORD + "x"]
    with pytest.raises(ValueError, match="differ"):
        prompt_password_hash()
    answers[:] = ["short", "short"]
    with pytest.raises(ValueError, match="12 characters"):
        prompt_password_hash()


def test_safe_next_and_open_paths():
    assert safe_next("/console/events?from=1&to=2") == "/console/events?from=1&to=2"
    for value in ("//evil.example", "//evil.example/console/", "https://evil.example/",
                  "/\\evil.example", "\\\\evil.example", "/\t/evil.example", "console/",
                  "", None, "/" + "a" * 2000):
        assert safe_next(value) == "/console/", value
    assert is_open("/health") and is_open("/console/login")
    assert is_open("/console/static/console.css")
    for path in ("/console/static/../cameras", "/console/", "/cameras", "/console/login/x",
                 "/console/static"):
        assert not is_open(path), path


# ---- auth: the login flow through a real application -----------------------------------------

def make_app(static: Path, password_hash: str | None, secret_key: str = "test-secret-key"
             ) -> Starlette:
    templates = Jinja2Templates(directory=str(TEMPLATES))

    def page(request: Request) -> HTMLResponse:
        return HTMLResponse(f"<p>cameras page, logged_in="
                            f"{getattr(request.state, 'logged_in', None)}</p>")

    app = Starlette(routes=[
        Route("/console/", page, name="console-cameras"),
        Route("/console/search", page, name="console-search"),
        Route("/cameras", lambda request: JSONResponse({"cameras": []})),
        Route("/health", lambda request: JSONResponse({"status": "ok"})),
        Mount("/console/static", StaticFiles(directory=str(static)), name="console-static")])
    install_login(app, templates, password_hash, secret_key=secret_key)
    return app


@pytest.fixture
def client(tmp_path, hashed):
    (tmp_path / "console.css").write_text("body {}")
    with TestClient(make_app(tmp_path, hashed), follow_redirects=False) as client:
        yield client


def seen(responses) -> str:
    return "\n".join(r.text + "\n" + "\n".join(f"{k}: {v}" for k, v in r.headers.multi_items())
                     for r in responses)


def test_login_flow(client):
    responses = []

    def get(url, **kw):
        responses.append(client.get(url, **kw))
        return responses[-1]

    def post(url, **kw):
        responses.append(client.post(url, **kw))
        return responses[-1]

    assert get("/health").status_code == 200
    assert get("/console/static/console.css").status_code == 200
    page = get("/console/search?q=a b&x=1")
    assert page.status_code == 303
    assert page.headers["location"] == \
        "/console/login?next=%2Fconsole%2Fsearch%3Fq%3Da%2520b%26x%3D1"
    front = get("/")
    assert front.status_code == 303 and front.headers["location"] == "/console/login?next=%2F"
    api = get("/cameras")
    assert api.status_code == 401 and api.json() == {"error": "log in at /console/login"}

    form = get(page.headers["location"])
    assert form.status_code == 200 and 'type="password"' in form.text
    assert 'value="/console/search?q=a%20b&amp;x=1"' in form.text  # next, escaped
    assert "Log out" not in form.text

    started = time.monotonic()
    wrong = post("/console/login", data={"password": "wrong password", "next": "/console/"})
    elapsed = time.monotonic() - started
    assert wrong.status_code == 401 and 0.95 <= elapsed < 3
    assert 'role="alert"' in wrong.text and "kvsa_console" not in wrong.headers.get(
        "set-cookie", "")
    assert get("/cameras").status_code == 401

    right = post("/console/login", data={"password": PASSWORD,
                                         "next": "/console/search?q=a%20b&x=1"})
    assert right.status_code == 303 and right.headers["location"] == "/console/search?q=a%20b&x=1"
    cookie = right.headers["set-cookie"]
    assert cookie.startswith("kvsa_console=")
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/", "max-age=43200"} <= flags
    assert "secure" not in flags
    after = get("/console/search?q=1")
    assert after.status_code == 200 and "logged_in=True" in after.text
    assert get("/cameras").json() == {"cameras": []}
    # the login page, once logged in, goes on to `next`
    again = get("/console/login?next=/console/search")
    assert again.status_code == 303 and again.headers["location"] == "/console/search"

    out = post("/console/logout")
    assert out.status_code == 303 and out.headers["location"] == "/console/login"
    assert "kvsa_console=null" in out.headers["set-cookie"]
    assert get("/console/").status_code == 303
    assert get("/cameras").status_code == 401
    assert get("/health").status_code == 200
    assert PASSWORD not in seen(responses) and "wrong password" not in seen(responses)


def test_login_refuses_an_external_next(client, monkeypatch):
    for target in ("//evil.example", "https://evil.example/x", "/\\evil.example"):
        client.cookies.clear()
        response = client.post("/console/login", data={"password": PASSWORD, "next": target})
        assert response.status_code == 303 and response.headers["location"] == "/console/"
        assert client.get("/console/").status_code == 200
    # a failed try keeps only a local next in the form
    monkeypatch.setattr(auth, "FAILURE_DELAY", 0.01)
    client.cookies.clear()
    failed = client.post("/console/login", data={"password": "x", "next": "//evil.example"})
    assert failed.status_code == 401 and "evil.example" not in failed.text


def test_login_rejects_odd_bodies(client, monkeypatch):
    monkeypatch.setattr(auth, "FAILURE_DELAY", 0.01)
    too_big = client.post("/console/login", content=b"password=" + b"x" * 9000,
                          headers={"content-type": "application/x-www-form-urlencoded"})
    as_json = client.post("/console/login", json={"password": PASSWORD})
    many = client.post("/console/login", content="&".join(f"f{i}=1" for i in range(30))
                       + "&password=" + PASSWORD.replace(" ", "+"),
                       headers={"content-type": "application/x-www-form-urlencoded"})
    for response in (too_big, as_json, many):
        assert response.status_code == 401
    assert client.get("/cameras").status_code == 401


def test_a_forged_or_foreign_cookie_is_refused(tmp_path, hashed):
    (tmp_path / "console.css").write_text("")
    with TestClient(make_app(tmp_path, hashed), follow_redirects=False) as first:
        first.post("/console/login", data={"password": PASSWORD})
        cookie = first.cookies["kvsa_console"]
    with TestClient(make_app(tmp_path, hashed, "another key"),
                    follow_redirects=False) as second:
        second.cookies.set("kvsa_console", cookie)
        assert second.get("/cameras").status_code == 401
        second.cookies.set("kvsa_console", "eyJjb25zb2xlIjogdHJ1ZX0=.forged.signature")
        assert second.get("/cameras").status_code == 401


def test_no_password_means_no_login(tmp_path):
    app = make_app(tmp_path, None)
    assert app.user_middleware == []
    with TestClient(app, follow_redirects=False) as client:
        assert client.get("/cameras").status_code == 200
        assert client.get("/console/").text.endswith("logged_in=None</p>")
        assert client.get("/console/login").status_code == 404


def test_a_plain_text_password_is_refused_at_start(tmp_path):
    with pytest.raises(ValueError, match="console.password") as caught:
        make_app(tmp_path, "my plain password")
    assert "my plain password" not in str(caught.value)
