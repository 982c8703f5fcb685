"""The events console in a real browser (Debian's headless Chromium, through Selenium) over the
demo's data: the demo pipeline (2 simulated cameras, 20 s) fills the local stack and, through
`events sync`, a throwaway PostgreSQL; the console (`kvs-analytics serve`'s application, with
the demo's configuration: its lease table and its zone) is then served while the stack still
runs. Each page's screenshot is saved under test-screenshots/ (the README shows them).

- cameras: both demo cameras, their pictures loaded, their owners and health from the lease
  table (the demo's consumer has stopped by then: no owner), the tiles updating themselves from
  tiles.json;
- timeline: the demo's zone events; "Play clip" plays the clip in the page (readyState >= 2,
  currentTime advancing) and draws the frame records around it with their boxes;
- event: the highlight with the stage zone drawn over it, the clip, the raw record;
- search: the events across cameras and the person-count chart (an SVG plot, one line per
  camera);
- login (console.password set): a page asks for the password first, refuses a wrong one, and
  goes where it was asked for after the right one;
- no page logs a browser error.
"""

from __future__ import annotations

import contextlib
import io
import queue
import threading

import pytest

from consumer.api.settings import ApiSettings
from consumer.config import load_config
from consumer.console.app import create_server
from consumer.console.auth import hash_password
from consumer.console.fleet import FleetReader
from consumer.console.pages import ConsoleOptions
from consumer.demo import demo_config, run_demo
from tests.browser_helpers import browser, console_errors, save_screenshot, serving, wait_for
from tests.postgres_helpers import fresh_database, postgres_server

pytestmark = pytest.mark.slow
CAMERAS = ("demo-cam-1", "demo-cam-2")
PASSWORD = "a long enough shared secret"


@pytest.fixture(scope="module")
def site(models, captures, tmp_path_factory):
    """The console's base URLs while the demo's stack and store are up: open, and behind a
    login (console.password)."""
    out = tmp_path_factory.mktemp("console") / "demo-output"
    ready: queue.Queue = queue.Queue()
    done = threading.Event()
    with postgres_server() as server:
        database = fresh_database(server)

        def then(stack) -> None:
            config = load_config(data=demo_config(stack.endpoints, list(CAMERAS), models),
                                 environ={})
            settings = ApiSettings(database, url_expiry=600, endpoint_url=stack.endpoints["s3"],
                                   region=stack.region)
            options = ConsoleOptions(2.0, config.events, FleetReader(
                stack.client("dynamodb"), config.checkpoint.table))
            app = create_server(settings, options, s3_client=stack.client("s3"))
            locked = create_server(settings, options, hash_password(PASSWORD),
                                   s3_client=stack.client("s3"))
            with serving(app) as url, serving(locked) as locked_url:
                ready.put((url, locked_url))
                done.wait(600)

        printed = io.StringIO()

        def demo() -> None:
            with contextlib.redirect_stdout(printed):
                code = run_demo(captures / "vogels_330.mkv", 20, 2, out, models,
                                database_url=database, then=then)
            if code:
                ready.put(RuntimeError(f"the demo failed ({code}): {printed.getvalue()[-2000:]}"))

        thread = threading.Thread(target=demo, daemon=True)
        thread.start()
        urls = ready.get(timeout=300)
        if isinstance(urls, Exception):
            raise urls
        try:
            yield urls
        finally:
            done.set()
            thread.join(60)


@pytest.fixture(scope="module")
def console(site) -> str:
    return site[0]


@pytest.fixture(scope="module")
def driver():
    with browser() as chromium:
        yield chromium


def no_errors(driver) -> None:
    assert console_errors(driver) == []


def test_the_cameras_page_shows_both_cameras_live_with_pictures(console, driver):
    driver.get(f"{console}/console/")
    wait_for(driver, "document.querySelectorAll('.tile img.thumb').length == 2 && "
                     "[...document.querySelectorAll('.tile img.thumb')]"
                     ".every(img => img.complete && img.naturalWidth > 0)")
    tiles = driver.execute_script(
        "return [...document.querySelectorAll('.tile')].map(t => ({stream: t.dataset.stream, "
        "health: t.querySelector('[data-field=health]').textContent, "
        "owner: t.querySelector('[data-field=owner]').textContent, "
        "events: t.querySelector('[data-field=events]').textContent}))")
    assert [t["stream"] for t in tiles] == list(CAMERAS)
    assert all(int(t["events"]) >= 3 for t in tiles), tiles
    # read from the lease table: the demo's consumer has stopped and released its leases
    assert all(t["owner"] == "-" and t["health"] == "unowned" for t in tiles), tiles
    # the tiles update themselves (every 2 s here) without a reload
    wait_for(driver, "document.getElementById('tiles').dataset.updated !== undefined", 15)
    save_screenshot(driver, "console-cameras")
    no_errors(driver)


def test_the_timeline_lists_the_zone_events_and_plays_a_clip(console, driver):
    driver.get(f"{console}/console/cameras/demo-cam-1")
    types = driver.execute_script(
        "return [...document.querySelectorAll('li.event')].map(li => li.dataset.type)")
    assert {"zone_entry", "zone_exit", "dwell"} <= set(types), types
    assert driver.execute_script(
        "return document.querySelector('svg.timeline').dataset.events") == str(len(types))
    wait_for(driver, "[...document.querySelectorAll('li.event img.highlight')]"
                     ".every(img => img.complete && img.naturalWidth > 0)")
    driver.execute_script("document.querySelector("
                          "'li.event[data-type=zone_entry] button.play').click()")
    wait_for(driver, "document.getElementById('clip').readyState >= 2")
    first = driver.execute_script("return document.getElementById('clip').currentTime")
    wait_for(driver, f"document.getElementById('clip').currentTime > {first} + 0.5")
    wait_for(driver, "document.querySelectorAll('#frames .frame').length > 0 && "
                     "document.querySelectorAll('#frames .frame .box').length > 0")
    save_screenshot(driver, "console-timeline")
    no_errors(driver)


def test_an_event_page_draws_its_zone_over_the_highlight(console, driver):
    driver.get(f"{console}/console/cameras/demo-cam-1")
    link = driver.execute_script(
        "return document.querySelector('li.event[data-type=zone_entry] a[href*=\"/events/\"]')"
        ".href")
    driver.get(link)
    wait_for(driver, "document.getElementById('highlight').naturalWidth > 0")
    assert driver.execute_script(
        "const hit = document.querySelector('svg.overlay .hit'); "
        "return hit && hit.closest('[data-rule]').dataset.rule") == "stage"
    record = driver.execute_script("return document.querySelector('pre.record').textContent")
    assert '"EventType": "zone_entry"' in record and '"Url"' in record
    wait_for(driver, "document.getElementById('clip').readyState >= 1")
    save_screenshot(driver, "console-event")
    no_errors(driver)


def test_search_lists_events_across_cameras_and_charts_the_person_count(console, driver):
    driver.get(f"{console}/console/search")
    cameras = driver.execute_script(
        "return [...document.querySelectorAll('table.results tbody tr[data-event]')]"
        ".map(tr => tr.children[2].textContent)")
    assert set(cameras) == set(CAMERAS)
    chart = driver.execute_script(
        "const svg = document.querySelector('svg.chart'); const box = svg.getBBox(); "
        "return {series: svg.dataset.series, lines: svg.querySelectorAll('polyline').length, "
        "width: box.width, height: box.height}")
    assert chart["series"] == "2" and chart["lines"] >= 2, chart
    assert chart["width"] > 100 and chart["height"] > 50, chart
    save_screenshot(driver, "console-search")
    no_errors(driver)


def test_behind_a_password_the_console_asks_for_it_first(site, driver):
    locked = site[1]
    driver.get(f"{locked}/console/search")
    wait_for(driver, "location.pathname == '/console/login'")
    field = driver.find_element("css selector", "input[type=password]")
    field.send_keys("not it")
    field.submit()
    wait_for(driver, "document.querySelector('.error') !== null")
    assert driver.execute_script("return location.pathname") == "/console/login"
    field = driver.find_element("css selector", "input[type=password]")
    field.send_keys(PASSWORD)
    save_screenshot(driver, "console-login")
    field.submit()
    wait_for(driver, "location.pathname == '/console/search' && "
                     "document.querySelector('svg.chart') !== null")
    assert PASSWORD not in driver.page_source
    driver.get(f"{locked}/console/")
    wait_for(driver, "document.querySelectorAll('.tile').length == 2")
    # the one error: the wrong password's answer, 401
    assert [e["message"].split(" - ", 1)[0] for e in console_errors(driver)] == [
        f"{locked}/console/login"]
