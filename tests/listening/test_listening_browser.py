"""The listening test end to end: ``mel2mel listen serve`` in its own process, a listener in
Debian's chromium (Playwright, headless) clicking through a whole session, a reload midway,
then the stored rows and ``mel2mel listen results``; and a server killed mid-session.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mel2mel.cli import main

pytest.importorskip("fastapi", reason="needs the [web] extra: pip install 'mel2mel[web]'")
from web.conftest import free_port, wait_until

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 60_000  # generous: the suite may share the CPU with training runs
SCORES = [5, 1, 3, 4, 4, 2, 5, 3, 1, 4]  # training (4 clips), then 6 test trials


def _call(url: str, method: str = "GET", body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"Content-Type": "application/json"}, method=method)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _up(url: str) -> bool:
    try:
        return bool(_call(f"{url}/api/health")["ok"])
    except OSError:
        return False


@contextlib.contextmanager
def serving(site: Path, db: Path, *options: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """``mel2mel listen serve`` in a subprocess on a free port; yields its URL and process."""
    port = free_port()
    log = db.with_suffix(".log")
    cmd = [
        sys.executable,
        "-m",
        "mel2mel",
        "listen",
        "serve",
        str(site),
        "--db",
        str(db),
        "--port",
        str(port),
        *options,
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: proc.poll() is not None or _up(url), "the server to start", 60)
        assert proc.poll() is None, f"the server stopped: {log.read_text()}"
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


def _rows(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT position, phase, config, score, attention FROM ratings ORDER BY position"
        ).fetchall()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_a_listener_completes_a_session_in_the_browser(tmp_path, site_dir, capsys):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the [web] extra")
    db = tmp_path / "ratings.sqlite"
    with (
        serving(site_dir, db, "--trials", "6", "--min-listen", "0.3") as (url, _),
        sync_api.sync_playwright() as p,
    ):
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--autoplay-policy=no-user-gesture-required"],
        )
        page = browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)

        def wait(condition: str, what: str) -> None:
            try:
                page.wait_for_function(condition)
            except sync_api.TimeoutError:
                seen = page.evaluate("JSON.stringify({...window.listen, session: null})")
                raise AssertionError(f"waited for {what}; the page: {seen}") from None

        wait("window.listen.view === 'consent'", "the consent page")
        page.check("input[name=headphones][value=yes]")
        page.select_option("#expertise", "audio")
        assert page.is_disabled("#start")
        page.check("#agree")
        page.click("#start")
        for i, score in enumerate(SCORES):
            if i == 4:
                wait("window.listen.view === 'interlude'", "the end of the training")
                page.click("#begin")
            if i == 6:  # a reload goes on where the listener stopped
                page.reload()
            wait(f"window.listen.view === 'trial' && window.listen.index === {i}", f"trial {i}")
            phase, n = ("Training", i + 1) if i < 4 else ("Clip", i - 3)
            assert page.text_content("#phase-name") == phase
            assert page.text_content("#progress") == f"{n} / {4 if i < 4 else 6}"
            page.check(f"input[name=score][value='{score}']")
            assert page.is_disabled("#next")  # not before the clip has been heard
            page.click("#play")
            wait("window.listen.heard === true", f"clip {i} to play")
            page.click("#next")
        wait("window.listen.view === 'thanks'", "the thank-you page")
        assert page.evaluate("window.listen.answered") == 10
        assert not errors and not page.evaluate("window.listen.errors")
        browser.close()
    rows = _rows(db)
    assert [r[0] for r in rows] == list(range(10)) and [r[3] for r in rows] == SCORES
    assert [r[1] for r in rows] == ["training"] * 4 + ["test"] * 6
    assert [r[2] for r in rows[:2]] == ["original", "anchor"]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT headphones, expertise FROM listeners").fetchall() == [
            (1, "audio")
        ]
    # the results command computes the MOS from these rows (the listener may be flagged:
    # their blind scores are the list above, so count them)
    assert main(["listen", "results", str(db), "--include-flagged"]) == 0
    text = capsys.readouterr().out
    scores: dict[str, list[int]] = defaultdict(list)
    for _, phase, config, score, _ in rows:
        if phase == "test":
            scores[config].append(score)
    for config, values in scores.items():
        line = next(x for x in text.splitlines() if x.startswith(f"{config} "))
        assert f"{sum(values) / len(values):4.2f}" in line.split()[3], line


def test_killing_the_server_keeps_every_answer_given(tmp_path, site_dir):
    db = tmp_path / "ratings.sqlite"
    with serving(site_dir, db, "--trials", "8") as (url, proc):
        token = _call(f"{url}/api/listeners", "POST", {"consent": True})["token"]
        trials = _call(f"{url}/api/listeners/{token}")["trials"]
        for i, t in enumerate(trials[:7]):
            done = _call(
                f"{url}/api/listeners/{token}/ratings/{t['id']}", "PUT", {"score": 1 + i % 5}
            )
            assert done["answered"] == i + 1
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    assert [(r[0], r[3]) for r in _rows(db)] == [(i, 1 + i % 5) for i in range(7)]
