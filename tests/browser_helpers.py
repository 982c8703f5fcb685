"""A real headless Chromium from Debian's packages (`.ci/run` installs `chromium` and
`chromium-driver`), driven by Selenium, for the web console's browser tests. Never a mock.

- `browser(window=(1280, 900))`: a context manager yielding a `webdriver.Chrome` on Debian's
  Chromium with Debian's chromedriver, a fresh temporary profile (deleted afterwards), autoplay
  without a user gesture, audio muted, and the browser's console log kept.
- `wait_for(driver, "js expression")`: poll until the expression is truthy, else fail with it.
- `save_screenshot(driver, name)`: a PNG in `test-screenshots/` at the repository root.
- `console_errors(driver)`: the browser console's SEVERE entries since the last call.

Selenium Manager never runs: the chromedriver's path is given explicitly (Selenium then skips
it), and SE_OFFLINE=true is set while a browser is open in case anything would call it anyway.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "test-screenshots"


def _binaries() -> tuple[str, str] | None:
    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


@contextmanager
def browser(window: tuple[int, int] = (1280, 900)) -> Iterator:
    """Yields a headless `selenium.webdriver.Chrome` whose viewport is `window` (width, height)."""
    binaries = _binaries()
    if binaries is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium or chromedriver is not installed "
                        "(.ci/run installs chromium and chromium-driver)")
        pytest.skip("Chromium is not installed: apt-get install chromium chromium-driver")
    chromium, chromedriver = binaries
    profile = tempfile.mkdtemp(prefix="kvsa-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                     "--autoplay-policy=no-user-gesture-required", "--mute-audio",
                     "--no-first-run", "--no-default-browser-check",
                     f"--window-size={window[0]},{window[1]}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    offline = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"
    driver = None
    try:
        driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
        # --window-size sets the outer window; make the page's viewport exactly `window`
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": window[0], "height": window[1], "deviceScaleFactor": 1, "mobile": False})
        yield driver
    finally:
        if driver is not None:
            driver.quit()
        if offline is None:
            os.environ.pop("SE_OFFLINE", None)
        else:
            os.environ["SE_OFFLINE"] = offline
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, js_condition: str, timeout: float = 20):
    """Poll `return <js_condition>` in the page until truthy (its value is returned); on timeout
    fail with the condition, its last value, and the page's URL and title."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script("return " + js_condition)
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for `{js_condition}` (last value "
                        f"{value!r}) on {driver.current_url} (title {driver.title!r})")
        time.sleep(0.1)


def save_screenshot(driver, name: str) -> Path:
    """Save the viewport as `test-screenshots/<name>.png` at the repository root; its path."""
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / (name if name.endswith(".png") else f"{name}.png")
    if not driver.save_screenshot(str(path)):
        pytest.fail(f"the browser could not save a screenshot to {path}")
    return path


def console_errors(driver) -> list[dict]:
    """The browser console's SEVERE entries (each read once: the log empties when read)."""
    return [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


@contextmanager
def serving(app) -> Iterator[str]:
    """`app` (ASGI) served by uvicorn in a background thread on a free loopback port: its base
    URL, without a trailing slash."""
    import socket
    import threading

    import uvicorn
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
