"""The browser harness (tests/browser_helpers.py) on real media: Debian's headless Chromium loads a
page from a real Starlette server on loopback, shows a JPEG taken from a capture's frame, and plays
an H.264 MP4 written by the project's own clip writer (consumer.formats.clips.clip_mp4) from the
capture's packets, the way event clips are made."""

from __future__ import annotations

import io
import time
from pathlib import Path

import av
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.responses import FileResponse, HTMLResponse
from starlette.routing import Route

from consumer.formats.clips import clip_mp4
from consumer.wire import read_fragments
from tests.browser_helpers import browser, console_errors, save_screenshot, serving, wait_for

WINDOW = (1280, 900)

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>harness</title>
<link rel="icon" href="data:,"></head>
<body>
<img id="highlight" src="/media/highlight.jpg" alt="highlight">
<video id="clip" src="/media/clip.mp4" muted playsinline preload="auto"></video>
</body></html>"""


def _codec_string(mp4: bytes) -> str:
    """The clip's RFC 6381 codec string, avc1.PPCCLL from its avcC (profile, flags, level)."""
    with av.open(io.BytesIO(mp4)) as container:
        avcc = container.streams.video[0].codec_context.extradata
    return "avc1." + avcc[1:4].hex().upper()


@pytest.fixture(scope="module")
def media(capture, tmp_path_factory) -> Path:
    """highlight.jpg (a frame of vogels_330.mkv) and clip.mp4 (its second fragment, 5 s)."""
    source = capture("vogels_330.mkv")
    folder = tmp_path_factory.mktemp("media")
    (folder / "clip.mp4").write_bytes(clip_mp4(read_fragments(source)[1:2]))
    with av.open(io.BytesIO(source)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index == 30:
                frame.to_image().save(folder / "highlight.jpg", "JPEG", quality=85)
                break
    return folder


@pytest.fixture(scope="module")
def site(media) -> str:
    """A Starlette app on a free loopback port, uvicorn in a background thread: its base URL."""
    app = Starlette(routes=[
        Route("/", lambda request: HTMLResponse(PAGE)),
        # FileResponse answers Range requests, as a media element expects
        Route("/media/{name}", lambda request: FileResponse(media / request.path_params["name"])),
    ])
    with serving(app) as url:
        yield url


def test_chromium_shows_the_jpeg_and_plays_the_h264_clip(site, media):
    codec = _codec_string((media / "clip.mp4").read_bytes())
    assert codec == "avc1.42C028"  # Constrained Baseline, level 4.0: as the camera sent it
    with browser(window=WINDOW) as driver:
        driver.get(site + "/")
        assert driver.title == "harness"
        image = driver.find_element("id", "highlight")
        wait_for(driver, "document.getElementById('highlight').complete")
        assert driver.execute_script("return arguments[0].naturalWidth", image) == 640
        assert driver.execute_script("return arguments[0].naturalHeight", image) == 330

        for type_ in ('video/mp4; codecs="avc1.42E01E"', f'video/mp4; codecs="{codec}"'):
            answer = driver.execute_script(
                "return document.createElement('video').canPlayType(arguments[0])", type_)
            assert answer == "probably", f"canPlayType({type_}) = {answer!r}"

        driver.execute_script("""
            const video = document.getElementById('clip');
            window.played = 'pending';
            video.play().then(() => { window.played = 'ok'; },
                              (e) => { window.played = String(e); });""")
        wait_for(driver, "window.played !== 'pending' || document.getElementById('clip').error")
        state = driver.execute_script("""
            const v = document.getElementById('clip');
            return {played: window.played, error: v.error && [v.error.code, v.error.message]};""")
        assert state == {"played": "ok", "error": None}
        wait_for(driver, "document.getElementById('clip').readyState >= 2")
        video = driver.find_element("id", "clip")
        size = driver.execute_script("return [arguments[0].videoWidth, arguments[0].videoHeight,"
                                     " arguments[0].duration]", video)
        assert size[:2] == [640, 330] and size[2] == pytest.approx(5.0, abs=0.05)

        sample = ("return [arguments[0].currentTime, performance.now() / 1000,"
                  " arguments[0].getVideoPlaybackQuality().totalVideoFrames]")
        before = driver.execute_script(sample, video)
        time.sleep(1.0)
        after = driver.execute_script(sample, video)
        played, elapsed, frames = (b - a for a, b in zip(before, after))
        # the clock follows the page's own clock (a slow test machine stretches both alike)
        assert played >= 0.8 and played == pytest.approx(elapsed, abs=0.25), (before, after)
        assert frames >= 20 * played, (before, after)  # a 30 fps clip: its frames were decoded
        # and the frames are a picture, not black: a canvas copy of the current frame varies
        spread = driver.execute_script("""
            const v = arguments[0], c = document.createElement('canvas');
            c.width = v.videoWidth; c.height = v.videoHeight;
            const g = c.getContext('2d'); g.drawImage(v, 0, 0);
            const d = g.getImageData(0, 0, c.width, c.height).data;
            let lo = 255, hi = 0;
            for (let i = 0; i < d.length; i += 4) { lo = Math.min(lo, d[i + 1]);
                                                    hi = Math.max(hi, d[i + 1]); }
            return hi - lo;""", video)
        assert spread > 50

        path = save_screenshot(driver, "browser-harness")
        assert console_errors(driver) == []

    assert path.parent.name == "test-screenshots"
    with Image.open(path) as screenshot:
        assert screenshot.format == "PNG" and screenshot.size == WINDOW
        colours = screenshot.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is None or len(colours) > 100  # the JPEG and the video frame are on it


def test_wait_for_fails_naming_the_condition_and_the_page(site):
    with browser(window=(800, 600)) as driver:
        driver.get(site + "/")
        with pytest.raises(pytest.fail.Exception) as failure:
            wait_for(driver, "window.neverSet === 42", timeout=0.3)
    message = str(failure.value)
    assert "`window.neverSet === 42`" in message and site + "/" in message
    assert "'harness'" in message


def test_without_chromium_it_skips_on_a_laptop_and_fails_under_ci(monkeypatch):
    monkeypatch.setattr("tests.browser_helpers.shutil.which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    laptop = "apt-get install chromium chromium-driver"
    with pytest.raises(pytest.skip.Exception, match=laptop), browser():
        pass
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"\.ci/run installs chromium"), browser():
        pass
