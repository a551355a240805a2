"""The sample gallery built from a real (tiny) FluidSynth dataset, and its page in chromium.

The dataset is the session's ``real_dataset`` (four tunes x Grand Piano and Trumpet; tune12 is
its only test track). The model columns use a debug-size acoustic model exported here and the
shipped fast vocoder, so every configuration kind runs for real.
"""

from __future__ import annotations

import functools
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import piano_trumpet_model

from mel2mel import constants as C
from mel2mel.cli import main as cli_main
from mel2mel.errors import UserError
from mel2mel.gallery.build import build_gallery
from mel2mel.gallery.configs import BUILTIN, check_configs, default_configs, parse_config
from mel2mel.gallery.page import mel_image
from mel2mel.gallery.render import busiest_window
from mel2mel.models import save_pretrained

CHROMIUM = Path("/usr/bin/chromium")
SECONDS = 3.0


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    weights, _ = save_pretrained(piano_trumpet_model(), tmp_path_factory.mktemp("m") / "tiny")
    return weights.with_suffix("")


def configs(model: Path, texture: str = "0") -> list:
    specs = ["original", "mulaw8", "anchor", "gl=truth:griffinlim", "fast-true",
             f"tiny=" f"{model}:fast:{texture}"]  # fmt: skip
    return [parse_config(s) for s in specs]


@pytest.fixture(scope="module")
def site(real_dataset: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gallery") / "site"
    report = build_gallery(real_dataset, out, configs(tiny_model), seconds=SECONDS, progress=False)
    assert report.rows == 2 and report.made == 12 and report.reused == 0
    return out


def test_gallery_files_and_figures(site: Path):
    doc = json.loads((site / "gallery.json").read_text())
    assert doc["format"] == "mel2mel-gallery" and doc["instruments"] == ["Grand Piano", "Trumpet"]
    assert [t["id"] for t in doc["tracks"]] == ["tune12"]  # the test split's only track
    assert len(doc["clips"]) == 2 * 6
    n = round(SECONDS * C.FRAME_RATE) * C.HOP_LENGTH
    for clip in doc["clips"]:
        audio, sr = sf.read(site / clip["audio"])
        assert sr == C.SAMPLE_RATE and abs(len(audio) - n) < 0.05 * n  # Opus pads a little
        assert np.abs(audio).max() > 0.01
        assert (site / clip["mel"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = {c["name"]: c["figures"] for c in doc["configs"]}
    assert fig["original"] == {"mae_db": 0.0, "r": 1.0}
    # Copy synthesis with the trained vocoder is close; the 3.5 kHz anchor is far.
    assert fig["fast-true"]["mae_db"] < 3.0 < fig["anchor"]["mae_db"]
    assert fig["mulaw8"]["mae_db"] < fig["anchor"]["mae_db"]
    assert fig["tiny"]["r"] < fig["fast-true"]["r"]  # an untrained model is worse
    roles = {c["name"]: (c["role"], c["hidden"]) for c in doc["configs"]}
    assert roles["original"] == ("reference", False) and roles["anchor"] == ("anchor", True)
    page = (site / "index.html").read_text()
    assert "Anchor" not in page.split("<tbody>")[0]  # hidden from the page's columns
    assert "http://" not in page and "https://" not in page  # nothing from the network


def test_gallery_is_a_listening_test_site(site: Path):
    from mel2mel.listening.design import plan_session
    from mel2mel.listening.site import load_site

    loaded = load_site(site)
    assert (loaded.reference, loaded.anchor) == ("original", "anchor")
    assert len(loaded.audio) == 12
    trials = plan_session(loaded, seed=1, trials=6, training=2)
    assert [t.phase for t in trials].count("test") == 6


def test_gallery_resumes_and_redoes_what_changed(site: Path, real_dataset, tiny_model, tmp_path):
    import shutil

    copy = tmp_path / "site"
    shutil.copytree(site, copy)
    again = build_gallery(real_dataset, copy, configs(tiny_model), seconds=SECONDS,
                          progress=False)  # fmt: skip
    assert (again.made, again.reused) == (0, 12)
    changed = build_gallery(real_dataset, copy, configs(tiny_model, "0.5"), seconds=SECONDS,
                            progress=False)  # fmt: skip
    assert (changed.made, changed.reused) == (2, 10)  # only the model's column
    (copy / "audio" / "tune12" / "trumpet" / "gl.ogg").unlink()
    lost = build_gallery(real_dataset, copy, configs(tiny_model, "0.5"), seconds=SECONDS,
                         progress=False)  # fmt: skip
    assert (lost.made, lost.reused) == (1, 11)


def test_gallery_bad_input(real_dataset: Path, tiny_model: Path, tmp_path: Path):
    with pytest.raises(UserError, match="not a built-in"):
        parse_config("nonsense")
    with pytest.raises(UserError, match="MODEL:VOCODER"):
        parse_config("x=onlymodel")
    with pytest.raises(UserError, match="between 0 and 4"):
        parse_config("x=pretrained:fast:9")
    with pytest.raises(UserError, match="reserved"):
        parse_config("original=pretrained:fast")
    with pytest.raises(UserError, match="unique"):
        check_configs([BUILTIN["mulaw8"], BUILTIN["mulaw8"]])
    assert check_configs([BUILTIN["mulaw8"]])[0].name == "original"  # the reference is added
    assert "wavenet-true" not in [c.name for c in default_configs(wavenet=False)]
    with pytest.raises(UserError, match="the dataset has: Grand Piano, Trumpet"):
        build_gallery(real_dataset, tmp_path / "a", configs(tiny_model), instruments=["Oboe"])
    with pytest.raises(UserError, match="not a dataset"):
        build_gallery(tmp_path, tmp_path / "b", configs(tiny_model))
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        build_gallery(real_dataset, other, configs(tiny_model), seconds=SECONDS)
    assert (other / "keep.txt").read_text() == "mine"
    no_inst = parse_config("tiny=pretrained:fast:0")
    assert no_inst.kind == "model"
    assert cli_main(["gallery", "build", "--data", str(tmp_path), "-o", str(tmp_path / "c")]) == 2


def test_busiest_window_and_mel_image():
    roll = np.zeros((C.ROLL_CHANNELS, 1000), dtype=np.uint8)
    roll[C.N_KEYS + 40, 600:700:5] = 100  # onsets only in frames 600..700
    assert 450 <= busiest_window(roll, 250) <= 600
    assert busiest_window(roll[:, :100], 250) == 0
    png = mel_image(np.random.default_rng(0).normal(-5, 2, (C.N_MELS, 500)), width=100)
    assert png.startswith(b"\x89PNG") and b"IHDR" in png[:16]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium")
@pytest.mark.parametrize("served", [False, True], ids=["file", "http"])
def test_gallery_page_plays_in_chromium(site: Path, served: bool):
    playwright_api = pytest.importorskip("playwright.sync_api")
    server = None
    url = (site / "index.html").as_uri()
    if served:
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/index.html"
    try:
        with playwright_api.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=str(CHROMIUM), headless=True,
                args=["--autoplay-policy=no-user-gesture-required"],
            )  # fmt: skip
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_function("window.galleryReady === true")
            assert page.locator("#gallery tbody tr").count() == 2
            page.select_option("#instrument", "Trumpet")
            assert page.locator("#gallery tbody tr").count() == 1
            # Every visible clip decodes: play each and wait until it has advanced.
            n = page.locator("audio").count()
            assert n == 5  # the anchor is hidden
            for k in range(n):
                page.evaluate("k => document.querySelectorAll('audio')[k].play()", k)
                page.wait_for_function(
                    "k => document.querySelectorAll('audio')[k].currentTime > 0.2", arg=k
                )
            browser.close()
            assert not errors
    finally:
        if server is not None:
            server.shutdown()


def test_rebuild_removes_the_files_of_dropped_columns(site: Path, real_dataset, tiny_model,
                                                      tmp_path):  # fmt: skip
    import shutil

    copy = tmp_path / "site"
    shutil.copytree(site, copy)
    (copy / "audio" / "notes.txt").write_text("not the gallery's")
    dropped = [c for c in configs(tiny_model) if c.name != "mulaw8"]
    report = build_gallery(real_dataset, copy, dropped, seconds=SECONDS, progress=False)
    assert (report.made, report.reused) == (0, 10)
    assert not list(copy.rglob("mulaw8.*"))  # its 2 clips and 2 images are gone
    assert len(list(copy.rglob("gl.ogg"))) == 2 and (copy / "audio" / "notes.txt").is_file()
    doc = json.loads((copy / "gallery.json").read_text())
    assert {c["config"] for c in doc["clips"]} == {c.name for c in dropped}
    # another audio format: every clip is made again and the Ogg files go
    wav = build_gallery(real_dataset, copy, dropped, seconds=SECONDS, audio_format="wav",
                        progress=False)  # fmt: skip
    assert wav.made == 10 and not list(copy.rglob("*.ogg")) and len(list(copy.rglob("*.wav"))) == 10
