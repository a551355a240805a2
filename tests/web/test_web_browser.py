"""The page in a real browser: Playwright driving Debian's chromium, headless, on 127.0.0.1.

One flow, as a user would: load the page, upload a MIDI file made here (button, then
drag-and-drop), hover the map twice (the mel preview changes), click the map (audio starts
playing before the render ends; the WAV becomes downloadable), rotate the 3-D space and click
one of its dots. Screenshots go to ``tests/artifacts/web/`` (ignored by git).
"""

from __future__ import annotations

import base64
import math
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
TIMEOUT_MS = 60_000  # generous: the suite may share the CPU with training runs


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


def wait_for(page, condition: str, what: str, arg=None) -> None:
    """Wait for a JavaScript condition on the page; on timeout, fail saying what never
    happened and what the page showed."""
    try:
        page.wait_for_function(condition, arg=arg)
    except playwright_api.TimeoutError:
        status = page.text_content("#status")
        errors = page.evaluate("window.m2m.errors")
        raise AssertionError(
            f"waited {TIMEOUT_MS / 1000:g} s for {what}; status {status!r}, errors {errors}"
        ) from None


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
    wait_for(page, "window.m2m.player.firstAudioAt > 0", "the click to start the audio")
    p = page.evaluate(
        """() => { const p = window.m2m.player;
        return {click: p.clickAt, scheduled: p.firstScheduledAt, audio: p.firstAudioAt,
                samples: p.samples, status: document.getElementById('status').textContent}; }"""
    )
    # the page measures click -> first audio from its own events, in order, and shows that
    # number (how fast it is: benchmarks/bench_web_first_audio.py)
    assert 0 < p["click"] <= p["scheduled"] <= p["audio"], p
    assert p["samples"] > 0
    shown = math.floor(p["audio"] - p["click"] + 0.5)  # JavaScript's Math.round
    assert f"first audio after {shown} ms" in p["status"], p["status"]
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


SCENE = "document.getElementById('space')._fullLayout.scene._scene"
CAMERA = f"JSON.stringify({SCENE}.getCamera())"
# Resolves once the camera has not moved for 5 animation frames (plotly eases rotations).
CAMERA_SETTLED = f"""() => new Promise(resolve => {{
    let last = null, same = 0;
    const step = () => {{
        const now = {CAMERA};
        same = now === last ? same + 1 : 0;
        last = now;
        if (same >= 5) resolve(now); else requestAnimationFrame(step);
    }};
    requestAnimationFrame(step);
}})"""
NEXT_FRAME = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"
# What plotly's 3-D pick under the mouse says: the distance in CSS pixels to the nearest
# point and that point's pixel (``screen``: canvas CSS pixels, y counted from the bottom).
PICK = f"""() => {{
    const gl = {SCENE}.glplot, sel = gl.selection, r = gl.canvas.getBoundingClientRect();
    if (!sel.object || !sel.screen) return null;
    return {{distance: sel.distance, x: r.left + sel.screen[0],
             y: r.top + r.height - sel.screen[1] - 1}};
}}"""
# plotly reports a click on a 3-D point only when the press is this close to it (pixels);
# hover answers up to 10, which is why a point found by hovering may not take a click.
CLICK_RADIUS = 5


def find_dot(page, box: dict) -> tuple[float, float]:
    """Page coordinates over a dot of the 3-D space, close enough for plotly to take a click.

    Sweeps the middle of the plot until plotly picks a point, then moves onto the pixel of
    it that plotly reports.
    """
    for fy in (0.5, 0.4, 0.6, 0.3, 0.7, 0.45, 0.55, 0.35, 0.65):
        for fx in [0.2 + 0.025 * i for i in range(25)]:
            page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
            pick = page.evaluate(PICK)
            if pick is None:
                continue
            page.mouse.move(pick["x"], pick["y"])
            pick = page.evaluate(PICK)
            if pick is not None and pick["distance"] < CLICK_RADIUS:
                return pick["x"], pick["y"]
    raise AssertionError("no dot of the 3-D space came under the mouse")


def test_space_rotate_and_click(page) -> None:
    page.locator("#space").scroll_into_view_if_needed()
    page.wait_for_selector("#space canvas", state="attached")
    before = page.evaluate(CAMERA_SETTLED)
    box = page.locator("#space").bounding_box()
    cx, cy = box["x"] + 0.12 * box["width"], box["y"] + 0.5 * box["height"]  # away from dots
    page.mouse.move(cx, cy)
    page.mouse.down()
    for k in range(1, 11):
        page.mouse.move(cx + 15 * k, cy + 4 * k)
        page.evaluate(NEXT_FRAME)  # plotly rotates on animation frames
    page.mouse.up()
    wait_for(page, f"before => {CAMERA} !== before", "the drag to rotate the camera", before)
    page.evaluate(CAMERA_SETTLED)  # the dots stand still where they will be clicked
    shot(page, "05-rotated")

    job_before = page.evaluate("window.m2m.state.jobId")
    hit = find_dot(page, box)
    wait_for(page, "window.m2m.spaceHover !== null", "the page to see the hover on a dot")
    # plotly's 3-D view reports a click on the first frame drawn while the button is down
    # over a picked point: hold it until that click has been reported
    page.evaluate(
        """() => { window.spaceClicks = 0; const div = document.getElementById('space');
        div.on('plotly_click', () => { window.spaceClicks += 1; }); }"""
    )
    page.mouse.move(*hit)
    page.mouse.down()
    wait_for(page, "window.spaceClicks > 0", "plotly to report the click on the dot")
    page.mouse.up()
    wait_for(
        page,
        "old => window.m2m.state.jobId !== old && window.m2m.player.firstAudioAt > 0",
        "the clicked instrument to start playing",
        job_before,
    )
    assert "100-instrument" in page.text_content("#status")
    shot(page, "06-space-click")


def test_space_families_and_soundfont_sample(page) -> None:
    page.locator("#space").scroll_into_view_if_needed()
    page.check("input[name=spacecolor][value=family]")
    wait_for(page, "document.querySelectorAll('#space .legendtext').length > 0", "a legend")
    legend = page.eval_on_selector_all("#space .legendtext", "els => els.map(e => e.textContent)")
    assert legend == ["Piano", "Chromatic Percussion"]  # the test space's programs 0..11
    job_before = page.evaluate("window.m2m.state.jobId")
    page.select_option("#space-select", "2")
    wait_for(page, "old => window.m2m.state.jobId !== old", "the model's clip to start", job_before)
    assert page.is_visible("#space-compare")
    plays = page.evaluate("window.m2m.soundfontPlays || 0")
    page.click("#space-soundfont")
    wait_for(page, "n => (window.m2m.soundfontPlays || 0) > n", "the SoundFont sample", plays)
    assert "playing the SoundFont" in page.text_content("#space-sample-msg")
    assert page.evaluate("!document.getElementById('space-sample').paused")
    page.check("input[name=spacecolor][value=centroid]")
    wait_for(page, "document.querySelectorAll('#space .legendtext').length === 0", "no legend")
    shot(page, "07-space-soundfont")
