"""Fixtures of the in-page tests: the static site of the shipped models, served as any static
host would serve it, and a chromium page that can reach nothing else.

The site is ``mel2mel export site`` with a 5 x 5 timbre map (the map's resolution changes
nothing the tests check, and 41 x 41 takes 20 s). It is served by the standard library's
``http.server`` (the ``python -m http.server`` handler) with the two cross-origin isolation
headers added, so onnxruntime-web may use threads; ``plain_site_url`` is ``python -m
http.server`` itself, in a child process, without them.
"""

from __future__ import annotations

import base64
import functools
import http.server
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from .cases import cases

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--autoplay-policy=no-user-gesture-required"]
TIMEOUT_MS = 120_000  # generous: bounds a hang only (speed: benchmarks/bench_inpage.py)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:  # this hook sees every test of the session: only ours
        if not Path(item.path).resolve().is_relative_to(here):
            continue
        if "browser" in item.fixturenames or "engine_page" in item.fixturenames:
            item.add_marker(pytest.mark.skipif(
                not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"
            ))  # fmt: skip


class IsolatedHandler(http.server.SimpleHTTPRequestHandler):
    """``python -m http.server``'s handler, plus COOP/COEP, minus the request log."""

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()

    def log_message(self, *args: object) -> None:
        pass


def serve(folder: Path, handler: type) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def site_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mel2mel.web.site import export_site

    out = tmp_path_factory.mktemp("site")
    export_site(out, map_resolution=5)
    for name, data in cases().items():  # the test MIDI files, beside the site
        (out / "midi").mkdir(exist_ok=True)
        (out / "midi" / name).write_bytes(data)
    (out / "blank.html").write_text("<!doctype html><title>blank</title>")
    return out


@pytest.fixture(scope="session")
def site_url(site_dir: Path) -> Iterator[str]:
    yield from serve(site_dir, IsolatedHandler)


@pytest.fixture(scope="session")
def plain_site_url(site_dir: Path) -> Iterator[str]:
    """The site served by ``python -m http.server`` itself, in a child process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
           "--directory", str(site_dir)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:  # until it accepts connections
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "http.server failed"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser():
    """Chromium for one test module: Playwright's sync API allows one instance per thread at a
    time, and tests/web/test_web_browser.py starts its own after these modules."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the [web] extra")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield b
        b.close()


def open_page(browser, url: str, path: str = "/blank.html"):
    """A page of ``url`` that can load nothing from anywhere else (requests elsewhere are
    aborted and listed in ``page.blocked``; those that went out in ``page.requests``, workers'
    included), JavaScript errors in ``page.errors``."""
    page = browser.new_page(viewport={"width": 1200, "height": 1800})
    page.set_default_timeout(TIMEOUT_MS)
    page.blocked, page.errors, page.requests = [], [], []
    prefix = url + "/"

    def route(r) -> None:
        if r.request.url.startswith(prefix):
            page.requests.append(r.request.url[len(url) :])
            r.continue_()
        else:
            page.blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(url + path)
    return page


@pytest.fixture(scope="module")
def engine_page(browser, site_url: str):
    """A blank page of the site with the in-page engine loaded as ``window.eng`` (and the
    modules as ``E``, ``M``, ``D``, a base64 helper ``b64``)."""
    page = open_page(browser, site_url)
    page.evaluate(
        """async () => {
        window.E = await import('/static/inpage/engine.js');
        window.M = await import('/static/inpage/midi.js');
        window.D = await import('/static/inpage/dsp.js');
        window.eng = await E.Engine.load(new URL('/models/', location.href).href);
        window.b64 = (a) => { const u = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
          let s = ''; for (let i = 0; i < u.length; i += 32768)
            s += String.fromCharCode.apply(null, u.subarray(i, i + 32768));
          return btoa(s); };
        window.unb64 = (s) =>
          new Float32Array(Uint8Array.from(atob(s), c => c.charCodeAt(0)).buffer);
        }"""
    )
    yield page
    assert not page.errors, page.errors
    page.close()


def floats(text: str) -> np.ndarray:
    """A base64 string of float32 bytes (the page's ``b64``) as an array."""
    return np.frombuffer(base64.b64decode(text), dtype=np.float32).copy()


def b64(array: np.ndarray) -> str:
    """An array as base64 float32 bytes (the page's ``unb64`` reads it)."""
    return base64.b64encode(np.ascontiguousarray(array, dtype=np.float32).tobytes()).decode()
