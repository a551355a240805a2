"""The page in a real browser: Playwright driving Debian's chromium, headless, on 127.0.0.1.

One flow, as a user would: load the page, upload a MIDI file made here (button, then
drag-and-drop), hover the map twice (the mel preview changes), click the map (audio starts
playing before the render ends; the WAV becomes downloadable), rotate the 3-D space and click
one of its dots. Screenshots go to ``tests/artifacts/web/`` (ignored by git).
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest

from .conftest import ARTIFACTS, midi_bytes

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
    ),
    pytest.mark.usefixtures("single_thread"),
]
playwright_api = pytest.importorskip("playwright.sync_api", reason="needs the [web] extra")
ARGS = [
    "--autoplay-policy=no-user-gesture-required",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist",
]
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def page(live_server: str):
    out = ARTIFACTS / "web"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 1800})
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(live_server)
        page.wait_for_function("window.m2m && window.m2m.ready === true")
        page.artifacts = out  # type: ignore[attr-defined]
        yield page
        browser.close()
    assert not errors, f"JavaScript errors: {errors}"
    print(f"\nscreenshots in {out}")


def shot(page, name: str) -> None:
    page.screenshot(path=str(page.artifacts / f"{name}.png"), full_page=True)


def canvas_data(page, selector: str) -> str:
    return page.eval_on_selector(selector, "c => c.toDataURL()")


def test_upload_hover_click_play(page) -> None:
    shot(page, "01-loaded")
    page.set_input_files(
        "#file", files=[{"name": "made.mid", "mimeType": "audio/midi", "buffer": midi_bytes(8.0)}]
    )
    page.wait_for_function("document.getElementById('piece-info').textContent.includes('made')")
    lit = page.evaluate(
        """() => { const c = document.getElementById('roll');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 100) n++; return n; }"""
    )
    assert lit > 100, "the piano roll shows no notes"

    box = page.locator("#map").bounding_box()
    page.mouse.move(box["x"] + 0.3 * box["width"], box["y"] + 0.3 * box["height"])
    page.wait_for_function("window.m2m.previews >= 1")
    first = canvas_data(page, "#preview")
    page.mouse.move(box["x"] + 0.8 * box["width"], box["y"] + 0.75 * box["height"])
    page.wait_for_function("window.m2m.previews >= 2 && window.m2m.state.previewKey !== ''")
    page.wait_for_function(
        "expected => document.getElementById('preview').toDataURL() !== expected", arg=first
    )
    shot(page, "02-hover")

    page.mouse.click(box["x"] + 0.55 * box["width"], box["y"] + 0.45 * box["height"])
    page.wait_for_function("window.m2m.player.firstAudioAt > 0")
    latency = page.evaluate("window.m2m.player.firstAudioAt - window.m2m.player.clickAt")
    print(f"\nclick -> first audio: {latency:.0f} ms")
    assert page.evaluate("window.m2m.player.samples") > 0
    shot(page, "03-playing")
    page.wait_for_selector("#download:not(.disabled)")
    href = page.get_attribute("#download", "href")
    assert href and href.endswith("/audio.wav")
    assert not page.evaluate("window.m2m.errors")


def test_drop_and_bad_file(page) -> None:
    data = base64.b64encode(midi_bytes(4.0, first=48)).decode()
    page.evaluate(
        """b64 => { const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const dt = new DataTransfer(); dt.items.add(new File([bytes], 'dropped.mid'));
        document.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true})); }""",
        data,
    )
    page.wait_for_function("document.getElementById('piece-info').textContent.includes('dropped')")
    page.set_input_files(
        "#file", files=[{"name": "bad.mid", "mimeType": "audio/midi", "buffer": b"not midi"}]
    )
    page.wait_for_function("document.getElementById('status').classList.contains('error')")
    assert "not a MIDI file" in page.text_content("#status")
    shot(page, "04-bad-upload")


def test_space_rotate_and_click(page) -> None:
    page.locator("#space").scroll_into_view_if_needed()
    page.wait_for_selector("#space canvas", state="attached")
    eye = "JSON.stringify(document.getElementById('space')._fullLayout.scene._scene.getCamera())"
    before = page.evaluate(eye)
    box = page.locator("#space").bounding_box()
    cx, cy = box["x"] + 0.12 * box["width"], box["y"] + 0.5 * box["height"]  # away from dots
    page.mouse.move(cx, cy)
    page.mouse.down()
    for k in range(1, 11):
        page.mouse.move(cx + 15 * k, cy + 4 * k)
        page.wait_for_timeout(50)  # plotly rotates on animation frames
    page.mouse.up()
    page.wait_for_function(f"{eye} !== {before!r}")
    shot(page, "05-rotated")

    job_before = page.evaluate("window.m2m.state.jobId")
    hit = None
    for fy in (0.5, 0.4, 0.6, 0.3, 0.7, 0.45, 0.55, 0.35, 0.65):
        for fx in [0.2 + 0.025 * i for i in range(25)]:
            page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
            page.wait_for_timeout(20)
            if page.evaluate("window.m2m.spaceHover") is not None:
                hit = (box["x"] + fx * box["width"], box["y"] + fy * box["height"])
                break
        if hit:
            break
    assert hit, "no dot of the 3-D space answered the mouse"
    # plotly's 3-D view reports a click while the button is down over a picked point
    for _ in range(3):
        page.mouse.move(*hit)
        page.wait_for_timeout(100)
        page.mouse.down()
        page.wait_for_timeout(300)
        page.mouse.up()
        if page.evaluate("old => window.m2m.state.jobId !== old", job_before):
            break
    page.wait_for_function(
        "old => window.m2m.state.jobId !== old && window.m2m.player.firstAudioAt > 0",
        arg=job_before,
    )
    assert "100-instrument" in page.text_content("#status")
    shot(page, "06-space-click")
