"""The server against slow and vanishing clients (issue 18, items 6 and 9): deadlines for
headers and bodies, a render body bounded before it is read, a connection limit, one log line
for a client that leaves mid-upload, and a fast stop on SIGTERM.

These run the app as ``mel2mel serve`` does (``mel2mel.web.server``) on a free port of
127.0.0.1 and talk to it over raw sockets where a well-behaved client library would not
misbehave on purpose. Every wait waits for a state (a closed socket, a counter), bounded
only to catch a hang.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mel2mel.web.app import create_app
from mel2mel.web.config import WebConfig

from .conftest import free_port, midi_bytes, serve_app, wait_until

pytestmark = pytest.mark.usefixtures("single_thread")
LIMIT_S = 60.0  # bounds a hang; no test gets near it


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=LIMIT_S)
    sock.settimeout(0.05)
    return sock


def until_closed(sock: socket.socket, trickle: bytes = b"", every: float = 0.05) -> bytes:
    """What the server sends until it closes the connection, while sending ``trickle`` a
    byte at a time every ``every`` seconds (nothing when empty)."""
    got, deadline, sent = b"", time.monotonic() + LIMIT_S, 0
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
            if not data:
                return got
            got += data
        except TimeoutError:
            pass
        except ConnectionResetError:
            return got
        if trickle:
            try:
                sock.sendall(trickle[sent % len(trickle) : sent % len(trickle) + 1])
                sent += 1
            except (BrokenPipeError, ConnectionResetError):
                return got + until_closed(sock)
            time.sleep(every)
    raise AssertionError(f"the server kept the connection open for {LIMIT_S:g} s")


def status_and_error(response: bytes) -> tuple[int, str]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]


@pytest.fixture(scope="module")
def strict(web_parts: dict) -> Iterator[tuple[str, object]]:
    """A server with short deadlines: 1 s for headers, a body of at least 2 KB/s after 0.5 s,
    0.5 s to finish an unread body; logs kept in the root logger (for caplog)."""
    cfg = WebConfig(header_timeout_s=1.0, body_grace_s=0.5, min_body_rate=2048,
                    body_drain_s=0.5, max_connections=8, torch_threads=1)  # fmt: skip
    app = create_app(config=cfg, **web_parts)
    with serve_app(app, log_config=None) as url:
        yield url, app


def test_a_connection_that_sends_nothing_is_closed(strict) -> None:
    url, _ = strict
    with connect(url) as sock:
        status, error = status_and_error(until_closed(sock))
    assert status == 408 and "headers" in error


def test_headers_that_trickle_in_are_cut_off(strict) -> None:
    url, _ = strict
    with connect(url) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
        status, error = status_and_error(until_closed(sock, trickle=b"X-Slow: yes\r\n"))
    assert status == 408 and "headers" in error


def test_a_body_that_trickles_in_is_cut_off_in_one_log_line(strict, caplog) -> None:
    url, app = strict
    caplog.set_level(logging.INFO)
    before = app.state.counters["client_disconnects"]
    with connect(url) as sock:
        sock.sendall(b"POST /api/uploads HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nM")
        status, error = status_and_error(until_closed(sock, trickle=b"Thd"))
    assert status == 408 and "body" in error
    wait_until(lambda: app.state.counters["client_disconnects"] > before, "the app to see it")
    assert_one_line_logs(caplog)


def test_a_client_leaving_mid_upload_is_one_log_line(strict, caplog) -> None:
    url, app = strict
    caplog.set_level(logging.INFO)
    before = app.state.counters["client_disconnects"]
    for form in (False, True):
        with connect(url) as sock:
            kind = b"multipart/form-data; boundary=zz" if form else b"audio/midi"
            part = (b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a.mid"'
                    b"\r\nContent-Type: audio/midi\r\n\r\nMThd")  # fmt: skip
            sock.sendall(b"POST /api/uploads HTTP/1.1\r\nHost: x\r\nContent-Type: " + kind
                         + b"\r\nContent-Length: 50000\r\n\r\n" + part + bytes(1000))  # fmt: skip
            wait_until(lambda: app.state.counters["receiving"] == 1, "the upload to start")
    wait_until(lambda: app.state.counters["client_disconnects"] == before + 2, "both to be seen")
    assert_one_line_logs(caplog)
    assert sum("client left during POST /api/uploads" in r.getMessage()
               for r in caplog.records) == 2  # fmt: skip


def assert_one_line_logs(caplog) -> None:
    for record in caplog.records:
        text = record.getMessage()
        assert record.exc_info is None and "\n" not in text, text
        assert "Traceback" not in text and "Exception in ASGI" not in text, text


def test_a_big_render_body_is_refused_before_it_is_read(strict) -> None:
    url, _ = strict
    with connect(url) as sock:
        sock.sendall(b"POST /api/render HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     b"\r\nContent-Length: 20000000\r\n\r\n{\"label\": \"")  # fmt: skip
        status, error = status_and_error(until_closed(sock))  # closed: the drain deadline
    assert status == 413 and "16384 bytes" in error
    with connect(url) as sock:  # sent without a length, it is cut at the limit as it comes
        sock.sendall(
            b"POST /api/render HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"4000\r\n"
            + b" " * 0x4000
            + b"\r\n"
            + b"10\r\n"
            + b" " * 16
            + b"\r\n"
        )
        assert status_and_error(until_closed(sock))[0] == 413


def test_well_behaved_clients_keep_their_connection(web_parts: dict) -> None:
    app = create_app(config=WebConfig(torch_threads=1), **web_parts)  # the default deadlines
    with serve_app(app) as url, httpx.Client(base_url=url, timeout=LIMIT_S) as client:
        for _ in range(3):  # one connection, kept alive between requests
            up = client.post("/api/uploads?name=a.mid", content=midi_bytes(3.0))
            assert up.status_code == 201, up.text
            assert client.get(f"/api/uploads/{up.json()['id']}").status_code == 200


def test_connections_beyond_the_limit_get_503(web_parts: dict) -> None:
    cfg = WebConfig(max_connections=3, header_timeout_s=LIMIT_S, torch_threads=1)
    with serve_app(create_app(config=cfg, **web_parts)) as url:
        socks = [connect(url) for _ in range(3)]  # accepted in order: these three hold places
        try:
            with connect(url) as extra:
                status, error = status_and_error(until_closed(extra))
            assert status == 503 and "too many connections" in error
        finally:
            for s in socks:
                s.close()


SERVE_SCRIPT = textwrap.dedent(
    """
    import sys, threading
    sys.path.insert(0, sys.argv[2])
    from web.conftest import tiny_model
    from mel2mel.synthesizer import Synthesizer
    from mel2mel.vocoders.griffinlim import GriffinLim
    from mel2mel.web.app import create_app
    from mel2mel.web.config import WebConfig
    from mel2mel.web.server import run

    class Stuck(GriffinLim):  # a render that never makes its first chunk
        def _vocode(self, mel, roll):
            threading.Event().wait()

    if __name__ == "__main__":
        synth = Synthesizer(tiny_model(3, 2), GriffinLim(n_iter=2))
        config = WebConfig(torch_threads=1, quick_parse_bytes=100)  # files go to a process
        app = create_app(synth, config=config, map_resolution=3,
                         vocoders={"griffinlim": Stuck(n_iter=2)})
        run(app, host="127.0.0.1", port=int(sys.argv[1]))
    """
)


def test_sigterm_ends_streams_and_stops_the_server_at_once(tmp_path: Path) -> None:
    script = tmp_path / "serve_tiny.py"
    script.write_text(SERVE_SCRIPT)
    port = free_port()
    tests = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(port), str(tests)], env=env,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: health(url) or proc.poll() is not None, "the server to start")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        with httpx.Client(base_url=url, timeout=LIMIT_S) as client:
            up = client.post("/api/uploads", content=midi_bytes(3.0))  # a parse worker starts
            assert up.status_code == 201, up.text
            job = client.post("/api/render", json={"upload_id": up.json()["id"]}).json()
            wait_until(lambda: client.get(f"/api/jobs/{job['id']}").json()["state"] == "running",
                       "the render to start")  # fmt: skip
            streamed: list[bytes] = []
            with client.stream("GET", f"/api/jobs/{job['id']}/audio.pcm") as r:
                assert r.status_code == 200
                reader = threading.Thread(target=lambda: streamed.append(r.read()))
                reader.start()
                t0 = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(timeout=LIMIT_S)
                stopped = time.monotonic() - t0
                reader.join(LIMIT_S)
        err = proc.stderr.read() if proc.stderr else ""
        assert code == -signal.SIGTERM and "Traceback" not in err, err
        assert "graceful shutdown exceeded" not in err, err  # ended, not cut off
        assert "leaked" not in err, err  # the parse worker's queues were released
        assert streamed == [b""]  # the stream ended (no audio was ever made)
        print(f"SIGTERM -> exit with a stream open: {stopped * 1000:.0f} ms")
        assert stopped < 10.0  # ~0.2 s (the stream never ends by itself: before, never)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def health(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
