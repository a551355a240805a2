"""``mel2mel export site`` in chromium, served by ``http.server`` with the network to everything
else blocked: the page loads, previews the map and renders in the page (no server code), plays
audio that is not silent, renders the 100-instrument space, plays a dot's SoundFont clip of the
reference passage (rendered at export with FluidSynth), and works without cross-origin
isolation (one thread). Timings go to ``tests/artifacts/web/inpage-timings.json`` (the speed
figures themselves: ``benchmarks/bench_inpage.py``).
"""

from __future__ import annotations

import json
import math

import mido
import numpy as np
import pytest
from conftest import requires_fluidsynth

from mel2mel.examples import chorale

from .conftest import open_page

pytestmark = pytest.mark.usefixtures("single_thread")
ARTIFACTS = __import__("pathlib").Path(__file__).resolve().parents[1] / "artifacts" / "web"
READY = "window.m2m && window.m2m.ready === true && window.m2mInpage && window.m2mInpage.ready"
LAST = "window.m2mInpage.renders[window.m2mInpage.renders.length - 1]"


def chorale_bytes(repeats: int) -> bytes:
    import io

    buf = io.BytesIO()
    midi: mido.MidiFile = chorale(repeats)
    midi.save(file=buf)
    return buf.getvalue()


def render_and_wait(page, count: int) -> dict:
    page.wait_for_function(f"window.m2mInpage.renders.length >= {count} && {LAST}.doneAt > 0")
    page.wait_for_function("window.m2m.player.firstAudioAt > 0")
    record = page.evaluate(f"({LAST})")
    record["first_audio_ms"] = record["firstAudioAt"] - record["clickAt"]
    record["rms"] = math.sqrt(record["sumSquares"] / max(1, record["seconds"] * 16000))
    return record


def test_static_site_works_offline(browser, site_url: str) -> None:
    page = open_page(browser, site_url, "/index.html")
    page.wait_for_function(READY)
    assert page.evaluate("self.crossOriginIsolated") is True
    assert page.evaluate("window.m2mInpage.active") is True
    page.wait_for_selector("#space canvas", state="attached")  # the 3-D view, plotly's 3-D bundle
    big = [u for u in page.requests if u.endswith((".wasm", ".onnx"))]
    assert sorted(big) == sorted(set(big)), big  # 15 MB of WASM once for both workers
    timings: dict = {}

    box = page.locator("#map").bounding_box()
    for k, (fx, fy) in enumerate([(0.3, 0.3), (0.8, 0.75), (0.5, 0.2), (0.2, 0.8), (0.6, 0.6)]):
        page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        page.wait_for_function(f"window.m2mInpage.previews >= {k + 1}")
    timings["preview_ms"] = page.evaluate("window.m2mInpage.previewMs")
    assert "(" in page.text_content("#preview-at")

    piece = chorale_bytes(2)  # 54 s; the first 30 s are rendered
    page.set_input_files("#file", files=[{"name": "chorale.mid", "mimeType": "audio/midi",
                                          "buffer": piece}])  # fmt: skip
    page.wait_for_function("document.getElementById('piece-info').textContent.includes('chorale')")
    page.fill("#start", "0")
    page.fill("#end", "30")
    page.mouse.click(box["x"] + 0.55 * box["width"], box["y"] + 0.45 * box["height"])
    # a preview while the render runs (its own worker): timed, not asserted (a race)
    page.wait_for_function(f"window.m2mInpage.renders.length >= 1 && {LAST}.firstBlockAt > 0")
    page.mouse.move(box["x"] + 0.7 * box["width"], box["y"] + 0.35 * box["height"])
    page.wait_for_function("window.m2mInpage.previews >= 6")
    timings["preview_during_render"] = page.evaluate(
        f"[window.m2mInpage.previewMs[5], {LAST}.doneAt === 0]"
    )
    record = render_and_wait(page, 1)
    assert abs(record["seconds"] - 30.0) < 0.02, record
    assert record["rms"] > 0.005 and record["peak"] < 1.0, record
    timings["piece_30s"] = {
        "first_audio_ms": record["first_audio_ms"],
        "render_s": (record["doneAt"] - record["clickAt"]) / 1000,
        "audio_s": record["seconds"],
    }
    page.wait_for_selector("#download:not(.disabled)")
    assert page.get_attribute("#download", "href").startswith("blob:")

    page.select_option("#space-select", "3")  # the 100-instrument model, 4 s
    record = render_and_wait(page, 2)
    assert abs(record["seconds"] - 4.0) < 0.02 and record["rms"] > 0.001, record
    timings["space_4s_render_s"] = (record["doneAt"] - record["clickAt"]) / 1000

    page.set_input_files("#file", files=[{"name": "bad.mid", "mimeType": "audio/midi",
                                          "buffer": b"not midi"}])  # fmt: skip
    page.wait_for_function("document.getElementById('status').classList.contains('error')")
    assert "not a MIDI file" in page.text_content("#status")
    assert not page.blocked, page.blocked  # nothing was fetched from anywhere else
    assert not page.errors, page.errors
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "inpage-timings.json").write_text(json.dumps(timings, indent=1))
    print(f"\nin-page timings: {json.dumps(timings)}")
    page.close()


def test_plain_http_server_runs_on_one_thread(browser, plain_site_url: str) -> None:
    """As ``python -m http.server`` serves it: no isolation headers, so one thread."""
    page = open_page(browser, plain_site_url, "/index.html")
    page.wait_for_function(READY)
    assert page.evaluate("self.crossOriginIsolated") is False
    box = page.locator("#map").bounding_box()
    page.mouse.click(box["x"] + 0.4 * box["width"], box["y"] + 0.4 * box["height"])
    record = render_and_wait(page, 1)  # the reference passage: 3.5 s + 1 s
    assert record["seconds"] > 4.0 and record["rms"] > 1e-3, record  # not silent
    assert not page.blocked and not page.errors, (page.blocked, page.errors)
    page.close()


def test_site_files_and_cli(site_dir, capsys: pytest.CaptureFixture[str]) -> None:
    from mel2mel.cli import main

    html = (site_dir / "index.html").read_text()
    assert "window.M2M_SITE" in html and '"/static/' not in html and '"/vendor/' not in html
    assert not list(site_dir.glob("static/listen*"))  # the listening test needs its server
    inpage = [*site_dir.glob("models/*"), *site_dir.glob("static/vendor/ort/*"),
              *site_dir.glob("static/inpage/*")]  # fmt: skip
    size = sum(p.stat().st_size for p in inpage)
    assert size < 25_000_000, size  # models + WASM + in-page scripts (docs/WEB.md)
    clips = sum(p.stat().st_size for p in site_dir.glob("data/soundfont/*.ogg"))
    total = sum(p.stat().st_size for p in site_dir.rglob("*") if p.is_file())
    assert total - clips < 25_000_000, total  # the site, plotly.js's 3-D bundle included
    for name in ("info.json", "map.json", "space.json"):
        assert json.loads((site_dir / "data" / name).read_text())
    assert main(["export", "site", str(site_dir)]) != 0  # no silent overwrite
    assert "exists" in capsys.readouterr().err


@requires_fluidsynth
def test_site_has_each_dots_soundfont_clip(site_dir) -> None:
    import soundfile as sf

    space = json.loads((site_dir / "data" / "space.json").read_text())
    assert space["soundfont_samples"] is True and space["soundfont_reference_only"] is True
    clips = [site_dir / "data" / inst["sample_soundfont"] for inst in space["instruments"]]
    assert len(clips) == 100 and all(c.parent.name == "soundfont" for c in clips)
    size = sum(c.stat().st_size for c in clips)
    assert size < 2_000_000, size  # 100 clips of 4 s (docs/WEB.md: 1.54 MB)
    audio, sr = sf.read(clips[0])
    assert len(audio) == pytest.approx(4.0 * sr, abs=0.01 * sr)  # the model's clip length
    assert np.sqrt(np.mean(audio**2)) > 1e-3  # FluidSynth's own level, not silent


def test_no_soundfont_samples_option_and_no_fluidsynth(tmp_path, monkeypatch, capsys) -> None:
    from mel2mel.cli import main
    from mel2mel.timbre.samples import SoundFontSamples

    out = tmp_path / "site"
    assert main(["export", "site", str(out), "--map-resolution", "2",
                 "--no-soundfont-samples"]) == 0  # fmt: skip
    space = json.loads((out / "data" / "space.json").read_text())
    assert space["soundfont_samples"] is False
    assert not any("sample_soundfont" in inst for inst in space["instruments"])
    assert not (out / "data" / "soundfont").exists()
    assert "note:" not in capsys.readouterr().out

    monkeypatch.setattr(SoundFontSamples, "available", staticmethod(lambda: False))
    assert main(["export", "site", str(out), "--map-resolution", "2", "-f"]) == 0
    printed = capsys.readouterr().out
    assert "note: FluidSynth is not installed" in printed and "SoundFont clips" not in printed
    assert json.loads((out / "data" / "space.json").read_text())["soundfont_samples"] is False
    assert not (out / "data" / "soundfont").exists()


@requires_fluidsynth
def test_static_page_plays_a_dots_soundfont_clip(browser, site_url: str) -> None:
    """A click on a dot, then "SoundFont sample (reference passage)" plays the clip written at
    export; "Model (reference passage)" renders the same passage with a piece loaded."""
    page = open_page(browser, site_url, "/index.html")
    page.wait_for_function(READY)
    page.wait_for_selector("#space canvas", state="attached")
    button = page.locator("#space-soundfont")
    assert "reference passage" in button.text_content()
    assert "reference passage" in button.get_attribute("title")
    # plotly's click on dot 7 (a real click on a 3-D dot: tests/web/test_web_browser.py)
    click = "document.getElementById('space').emit('plotly_click', {points: [{customdata: 7}]})"
    page.evaluate(click)
    page.wait_for_function("window.m2m.state.spaceIndex === 7")
    assert page.is_visible("#space-compare") and button.is_enabled()
    record = render_and_wait(page, 1)  # the model's clip of the dot, 4 s
    assert abs(record["seconds"] - 4.0) < 0.02, record

    button.click()
    page.wait_for_function("(window.m2m.soundfontPlays || 0) >= 1")
    assert "reference passage" in page.text_content("#space-sample-msg")
    clip = json.loads(page.evaluate("JSON.stringify(window.m2m.state.space.instruments[7])"))
    assert page.evaluate("document.getElementById('space-sample').src").endswith(
        "/data/" + clip["sample_soundfont"]
    )
    page.wait_for_function(
        "(() => { const a = document.getElementById('space-sample');"
        " return a.currentTime > 0 || a.ended; })()"
    )  # it sounds: the clip was fetched and decoded

    page.click("#space-model-reference")  # no piece: the reference passage, as the model's clip
    first = render_and_wait(page, 2)
    piece = chorale_bytes(1)
    page.set_input_files("#file", files=[{"name": "chorale.mid", "mimeType": "audio/midi",
                                          "buffer": piece}])  # fmt: skip
    page.wait_for_function("document.getElementById('piece-info').textContent.includes('chorale')")
    page.click("#space-model-reference")  # a piece loaded: still the reference passage
    again = render_and_wait(page, 3)
    assert "reference passage" in again["what"]
    for key in ("seconds", "peak", "sumSquares"):  # the same passage, the same audio
        assert again[key] == pytest.approx(first[key], rel=1e-6), key
    page.click("#space-model")  # the piece's first 4 s: other audio
    piece_clip = render_and_wait(page, 4)
    assert piece_clip["sumSquares"] != pytest.approx(first["sumSquares"], rel=1e-3)
    assert not page.blocked and not page.errors, (page.blocked, page.errors)
    page.close()


def test_static_page_keeps_the_servers_limits(browser, site_url: str, site_dir) -> None:
    from mel2mel.web.config import WebConfig

    info = json.loads((site_dir / "data" / "info.json").read_text())
    assert info["limits"]["max_render_seconds"] == WebConfig().max_render_seconds
    page = open_page(browser, site_url, "/index.html")
    page.wait_for_function(READY)
    piece = chorale_bytes(2)  # 54 s
    error = "document.getElementById('status').classList.contains('error')"

    def upload(limits: dict) -> str:
        page.evaluate("(l) => Object.assign(window.m2m.state.info.limits, l)", limits)
        page.evaluate("document.getElementById('status').classList.remove('error')")
        page.set_input_files("#file", files=[{"name": "chorale.mid", "mimeType": "audio/midi",
                                              "buffer": piece}])  # fmt: skip
        page.wait_for_function(f"{error} || document.getElementById('piece-info')"
                               ".textContent.includes('chorale')")  # fmt: skip
        return page.text_content("#status")

    too_big = upload({"max_upload_bytes": 100})
    assert f"file too big: {len(piece)} bytes, the limit is 100" in too_big
    too_long = upload({"max_upload_bytes": 10**6, "max_piece_seconds": 10})
    assert "piece too long: 53 s, the limit is 10 s" in too_long
    upload({"max_piece_seconds": 3600, "max_render_seconds": 5})
    page.fill("#start", "0")
    page.fill("#end", "30")
    box = page.locator("#map").bounding_box()
    page.mouse.click(box["x"] + 0.5 * box["width"], box["y"] + 0.5 * box["height"])
    page.wait_for_function(error)
    assert "the range is 30 s; renders are limited to 5 s" in page.text_content("#status")
    assert page.evaluate("window.m2mInpage.renders.length") == 0
    page.fill("#end", "4")  # within the limit: it renders
    page.mouse.click(box["x"] + 0.5 * box["width"], box["y"] + 0.5 * box["height"])
    record = render_and_wait(page, 1)
    assert abs(record["seconds"] - 4.0) < 0.02, record
    page.close()
