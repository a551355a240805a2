"""``mel2mel serve`` with the in-page path: ONNX files built from the served models into a
cache and served under ``/onnx/``, cross-origin isolation headers, and a page that previews
and renders in the browser, with the server as the fallback the visitor can choose.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mel2mel import constants as C
from mel2mel.synthesizer import Synthesizer

from .conftest import open_page
from .test_inpage_site import READY, render_and_wait

pytestmark = pytest.mark.usefixtures("single_thread")


def get(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from mel2mel.web.app import create_app
    from mel2mel.web.config import WebConfig
    from mel2mel.web.server import server as make_server

    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("MEL2MEL_CACHE", str(cache))
    synth = Synthesizer.from_pretrained(vocoder="fast")
    app = create_app(synth, config=WebConfig(torch_threads=1), map_resolution=5,
                     vocoders={"fast": synth.vocoder})  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = make_server(app, host="127.0.0.1", port=port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        mp.undo()
    assert list(Path(cache).glob("onnx/*/manifest.json")), "no ONNX files in the cache"


def test_onnx_files_headers_and_errors(server_url: str) -> None:
    status, headers, body = get(server_url + "/api/info")
    assert status == 200 and json.loads(body)["inpage"]["available"] is True
    assert headers["cross-origin-opener-policy"] == "same-origin"
    assert headers["cross-origin-embedder-policy"] == "require-corp"
    deadline = time.monotonic() + 120
    while (status := get(server_url + "/onnx/manifest.json")[0]) == 503:
        assert time.monotonic() < deadline, "the ONNX files were never built"
        time.sleep(0.2)
    assert status == 200
    manifest = json.loads(get(server_url + "/onnx/manifest.json")[2])
    for name, size in manifest["files"].items():
        status, headers, _ = get(f"{server_url}/onnx/{name}")
        assert status == 200 and int(headers["content-length"]) == size
    for bad in ("nope.onnx", "..%2Fmanifest.json", ".hidden"):
        status, _, body = get(f"{server_url}/onnx/{bad}")
        assert status == 404 and "error" in json.loads(body), bad
    status, headers, _ = get(server_url + "/static/vendor/ort/ort-wasm-simd-threaded.wasm")
    assert status == 200 and headers["content-type"] == "application/wasm"
    status, _, body = get(server_url + "/vendor/plotly.min.js")  # the 3-D bundle, 1.75 MB
    assert status == 200 and len(body) < 2_000_000 and b"plotly.js (gl3d" in body[:200]


def test_page_renders_in_the_page_and_falls_back(browser, server_url: str) -> None:
    page = open_page(browser, server_url, "/")
    api: list[str] = []
    page.on("request", lambda r: api.append(r.url.split("?")[0]) if "/api/" in r.url else None)
    page.wait_for_function(READY)
    assert page.evaluate("self.crossOriginIsolated") is True
    box = page.locator("#map").bounding_box()
    page.mouse.move(box["x"] + 0.3 * box["width"], box["y"] + 0.6 * box["height"])
    page.wait_for_function("window.m2mInpage.previews >= 1")
    page.mouse.click(box["x"] + 0.5 * box["width"], box["y"] + 0.5 * box["height"])
    record = render_and_wait(page, 1)
    assert record["seconds"] > 4.0 and record["rms"] > 1e-3, record  # not silent
    assert not any(u.endswith(("/api/preview", "/api/render")) for u in api), api

    page.select_option("#synthesis", "server")  # the fallback, chosen in the page
    page.wait_for_function("window.m2mInpage.active === false")
    page.mouse.click(box["x"] + 0.5 * box["width"], box["y"] + 0.5 * box["height"])
    page.wait_for_function("window.m2m.state.jobId !== null")
    page.wait_for_selector("#download:not(.disabled)")
    assert any(u.endswith("/api/render") for u in api), api
    assert not page.errors and not page.blocked, (page.errors, page.blocked)
    page.close()


def test_without_a_fast_vocoder_the_page_uses_the_server(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from mel2mel.models import AcousticConfig, Mel2Mel
    from mel2mel.vocoders.griffinlim import GriffinLim
    from mel2mel.web.app import create_app
    from mel2mel.web.config import WebConfig
    from mel2mel.web.maps import Space

    synth = Synthesizer(Mel2Mel(AcousticConfig.preset("debug", n_instruments=2)), GriffinLim())
    space = Space(tmp_path / "none.json", tmp_path / "none")
    app = create_app(synth, config=WebConfig(torch_threads=1), space=space, map_resolution=3,
                     vocoders={"griffinlim": synth.vocoder})  # fmt: skip
    with TestClient(app) as client:
        r = client.get("/api/info")
        assert r.json()["inpage"] == {
            "available": False, "ready": False, "reason": "the server has no fast vocoder",
        }  # fmt: skip
        assert r.headers["cross-origin-embedder-policy"] == "require-corp"
        r = client.get("/onnx/manifest.json")
        assert r.status_code == 404 and r.json() == {"error": "the server has no fast vocoder"}


def test_prune_cache_removes_only_stale_model_folders(tmp_path: Path) -> None:
    import os

    from mel2mel.web.inpage import STALE_DAYS, prune_cache

    day = 86400.0
    folders = {}
    for name, age in [("current", 400), ("recent", 3), ("stale", STALE_DAYS + 1)]:
        folders[name] = tmp_path / name
        folders[name].mkdir()
        manifest = folders[name] / "manifest.json"
        manifest.write_text("{}")
        os.utime(manifest, (time.time() - age * day,) * 2)
    (tmp_path / "half-written").mkdir()  # no manifest: not a finished folder, left alone
    (tmp_path / "notes.txt").write_text("not ours")
    assert prune_cache(tmp_path, keep=folders["current"]) == [folders["stale"]]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["current", "half-written", "notes.txt", "recent"]
    assert prune_cache(tmp_path / "absent", keep=folders["current"]) == []


def test_cache_key_follows_the_texture_strengths(tmp_path: Path) -> None:
    # The strengths per instrument are baked into the texture graph but are not in the
    # post-net's state dict: a post-net with other strengths must not reuse the cached files.
    from mel2mel.models import AcousticConfig, Mel2Mel
    from mel2mel.models.texture import InstrumentStrengths, TextureConfig, TexturePostnet
    from mel2mel.vocoders.griffinlim import GriffinLim
    from mel2mel.web.inpage import InpageModels

    acoustic = Mel2Mel(AcousticConfig.preset("debug", n_instruments=2))
    texture = TexturePostnet(TextureConfig.debug(acoustic.embedding_dim))
    inpage = InpageModels(Synthesizer(acoustic, GriffinLim(), texture=texture), None, None,
                          root=tmp_path)  # fmt: skip
    plain = inpage._key(None)
    anchors = ((0.0, 0.0), (1.0, 0.0))
    texture.instrument_strengths = InstrumentStrengths(("a", "b"), anchors, (1.0, 0.5))
    chosen = inpage._key(None)
    texture.instrument_strengths = InstrumentStrengths(("a", "b"), anchors, (1.0, 0.6))
    assert len({plain, chosen, inpage._key(None)}) == 3


def test_cache_key_follows_the_tables_fitted_beside_the_weights(tmp_path: Path) -> None:
    # The detail gains are baked into the acoustic graph, the note contrast (like the beats)
    # goes into the manifest; none of them is in the state dict.
    from mel2mel.models import AcousticConfig, Mel2Mel
    from mel2mel.models.contrast import N_ROLES, NoteContrast
    from mel2mel.models.sharpen import DetailGains
    from mel2mel.vocoders.griffinlim import GriffinLim
    from mel2mel.web.inpage import InpageModels

    acoustic = Mel2Mel(AcousticConfig.preset("debug", n_instruments=2))
    inpage = InpageModels(Synthesizer(acoustic, GriffinLim()), None, None, root=tmp_path)
    keys = [inpage._key(None)]
    anchors = tuple(map(tuple, acoustic.embedding.weight.detach().tolist()))
    acoustic.detail_gains = DetailGains(("a", "b"), anchors, ((1.5,) * C.N_MELS,) * 2)
    keys.append(inpage._key(None))
    acoustic.note_contrast = NoteContrast(("a", "b"), anchors, ((0.1,) * N_ROLES,) * 2)
    keys.append(inpage._key(None))
    acoustic.note_contrast = acoustic.note_contrast.with_strengths((1.0, 0.5))
    keys.append(inpage._key(None))
    assert len(set(keys)) == 4
    assert inpage._key(None) == keys[-1]  # and it is stable
