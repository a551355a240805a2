"""The web API through httpx (FastAPI's TestClient): the happy paths and every error path."""

from __future__ import annotations

import io
import itertools
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import soundfile as sf
from conftest import requires_fluidsynth
from fastapi.testclient import TestClient

from mel2mel import constants as C
from mel2mel.vocoders.griffinlim import GriffinLim
from mel2mel.web.app import create_app
from mel2mel.web.config import WebConfig
from mel2mel.web.segments import segment_plan

from .conftest import TEST_CONFIG, midi_bytes, wait_until

pytestmark = pytest.mark.usefixtures("single_thread")


def gated_griffinlim() -> tuple[GriffinLim, threading.Event, threading.Event]:
    """A Griffin-Lim whose calls wait for ``release``, so a render holds its worker until the
    test lets it go; ``started`` is set when a render reached the vocoder.

    The events live in the class, not the instance: the server deep-copies vocoders per
    worker thread, and the copies must share them.
    """
    started, release = threading.Event(), threading.Event()

    class Gated(GriffinLim):
        def _vocode(self, mel, roll):
            started.set()
            if not release.wait(120):
                raise RuntimeError("the test never released the render")
            return super()._vocode(mel, roll)

    return Gated(n_iter=2, nnls_iterations=1), started, release


class OverrunGriffinLim(GriffinLim):
    """Griffin-Lim whose every call returns only once ``seconds`` have passed on the clock
    since it began: longer than the render timeout under test, so a render always overruns
    it, however fast the machine."""

    def __init__(self, seconds: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seconds = seconds

    def _vocode(self, mel, roll):
        until = time.monotonic() + self.seconds
        while time.monotonic() < until:  # time.sleep may wake early on a signal
            time.sleep(max(0.0, until - time.monotonic()))
        return super()._vocode(mel, roll)


@pytest.fixture(scope="module")
def client(web_parts: dict) -> Iterator[TestClient]:
    with TestClient(create_app(config=TEST_CONFIG, **web_parts)) as c:
        yield c


def wait_map(client: TestClient) -> dict:
    """The timbre map, once the server has computed it (503 with Retry-After until then)."""

    def ready() -> dict | None:
        r = client.get("/api/map")
        if r.status_code == 200:
            return r.json()
        assert r.status_code == 503 and r.headers["Retry-After"], r.text
        return None

    return wait_until(ready, "the timbre map")


def upload(client: TestClient, data: bytes, name: str = "t.mid") -> dict:
    r = client.post(f"/api/uploads?name={name}", content=data)
    assert r.status_code == 201, r.text
    return r.json()


def error(r, status: int, *words: str) -> str:
    """Assert a one-line JSON error with ``status`` that mentions ``words``."""
    assert r.status_code == status, r.text
    msg = r.json()["error"]
    assert "\n" not in msg
    for w in words:
        assert w in msg.lower(), msg
    return msg


def stream(client: TestClient, job_id: str) -> np.ndarray:
    with client.stream("GET", f"/api/jobs/{job_id}/audio.pcm") as r:
        assert r.status_code == 200
        data = b"".join(r.iter_bytes())
    return np.frombuffer(data, dtype="<i2")


def test_info_map_and_preview(client: TestClient) -> None:
    info = client.get("/api/info").json()
    assert info["vocoders"] == ["griffinlim"] and info["default_vocoder"] == "griffinlim"
    assert info["space"]["available"]
    m = wait_map(client)
    assert len(m["xs"]) == len(m["ys"]) == 9
    assert np.array(m["centroid_hz"]).shape == (9, 9) == np.array(m["energy_db"]).shape
    assert [i["name"] for i in m["instruments"]][:2] == ["Grand Piano", "Trumpet"]
    assert [t["name"] for t in m["user_timbres"]] == ["My Bell"]
    a = client.get("/api/preview", params={"x": 0.1, "y": 0.2})
    b = client.get("/api/preview", params={"x": -1.0, "y": 1.5})
    assert a.status_code == b.status_code == 200
    frames = int(a.headers["X-Mel-Frames"])
    assert len(a.content) == C.N_MELS * frames and a.content != b.content
    assert client.get("/").text.startswith("<!doctype html>")
    assert client.get("/vendor/plotly.min.js").status_code == 200
    assert client.get("/static/app.js").status_code == 200


@pytest.mark.parametrize(
    "params", [{"x": "abc", "y": "1"}, {"x": "nan", "y": "0"}, {"x": "1e9", "y": "0"}, {"x": "1"}]
)
def test_preview_bad_coordinates(client: TestClient, params: dict) -> None:
    error(client.get("/api/preview", params=params), 400)


def test_upload_render_stream_and_download(client: TestClient) -> None:
    u = upload(client, midi_bytes(3.0))
    assert u["num_notes"] == 12 and u["notes"]["pitch"][0] == 60
    assert client.get(f"/api/uploads/{u['id']}").json()["duration"] == u["duration"]
    r = client.post("/api/render", json={"upload_id": u["id"], "x": 0.2, "y": -0.1})
    assert r.status_code == 202, r.text
    job = r.json()
    pcm = stream(client, job["id"])
    assert len(pcm) == round(job["seconds_total"] * C.SAMPLE_RATE)  # 3 s + 1 s tail
    assert np.abs(pcm).max() > 0
    info = client.get(f"/api/jobs/{job['id']}").json()
    assert info["state"] == "done" and info["seconds_rendered"] == info["seconds_total"]
    wav = client.get(f"/api/jobs/{job['id']}/audio.wav")
    assert wav.headers["content-type"] == "audio/wav"
    audio, sr = sf.read(io.BytesIO(wav.content), dtype="int16")
    assert sr == C.SAMPLE_RATE and np.array_equal(audio, pcm)


def test_render_by_name_range_and_multipart(client: TestClient) -> None:
    files = {"file": ("song.mid", midi_bytes(6.0), "audio/midi")}
    u = client.post("/api/uploads", files=files).json()
    assert u["name"] == "song.mid"
    body = {"upload_id": u["id"], "timbre": "trumpet", "start": 1.0, "end": 3.5}
    job = client.post("/api/render", json=body).json()
    frames = 438 - 125  # frames centred nearest to 3.5 s and 1 s, halves rounding up
    assert job["label"] == "Trumpet" and job["seconds_total"] == frames / C.FRAME_RATE
    assert len(stream(client, job["id"])) == frames * C.HOP_LENGTH


def test_render_learned_timbre_by_name(client: TestClient) -> None:
    job = client.post("/api/render", json={"timbre": "my bell", "end": 1.0}).json()
    assert job["label"] == "My Bell"
    assert len(stream(client, job["id"])) == C.SAMPLE_RATE


def test_render_without_upload_plays_reference(client: TestClient) -> None:
    job = client.post("/api/render", json={"x": 0.0, "y": 0.0}).json()
    assert len(stream(client, job["id"])) > C.SAMPLE_RATE


def test_space_render(client: TestClient) -> None:
    space = client.get("/api/space").json()
    assert space["available"] and len(space["instruments"]) == 12
    assert "embedding" not in space["instruments"][0]
    job = client.post("/api/render", json={"space_index": 3}).json()
    assert job["label"] == "Inst 3"
    assert len(stream(client, job["id"])) == 2 * C.SAMPLE_RATE
    error(client.post("/api/render", json={"space_index": 12}), 400, "space_index")


@requires_fluidsynth
def test_space_soundfont_sample(client: TestClient, web_parts: dict) -> None:
    space = client.get("/api/space").json()
    assert space["soundfont_samples"] and "Brass" in space["families"]
    families = [i["family"] for i in space["instruments"]]  # the test space's programs: 0..11
    assert families[7:9] == ["Piano", "Chromatic Percussion"]
    cache = web_parts["soundfont_cache"]  # shared with the browser tests' server
    before = set(cache.glob("*.npy"))
    r = client.get("/api/space/1/soundfont.wav")  # program 1 on the reference passage
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    audio, sr = sf.read(io.BytesIO(r.content), dtype="float32")
    assert sr == C.SAMPLE_RATE and len(audio) == 2 * C.SAMPLE_RATE  # the space's clip length
    assert 0.003 < np.abs(audio).max() < 1.0
    cached = set(cache.glob("*.npy"))
    assert len(cached - before) <= 1 and cached  # rendered once (or already by another test)
    assert client.get("/api/space/1/soundfont.wav").content == r.content  # from the cache
    assert set(cache.glob("*.npy")) == cached
    # an upload's segment, from a start time, plays its own notes
    up = client.post("/api/uploads?name=a.mid", content=midi_bytes(6.0)).json()
    seg = client.get(f"/api/space/1/soundfont.wav?upload_id={up['id']}&start=2")
    assert seg.status_code == 200 and seg.content != r.content
    error(client.get(f"/api/space/1/soundfont.wav?upload_id={up['id']}&start=50"), 400, "past")
    error(client.get("/api/space/12/soundfont.wav"), 404, "0..11")
    error(client.get("/api/space/1/soundfont.wav?upload_id=nope"), 404)
    error(client.get("/api/space/1/soundfont.wav?start=nan"), 400, "start")


def test_segments_cover_the_range() -> None:
    plan = segment_plan(10, 2000)
    assert plan[0] == (10, 135) and plan[-1][1] == 2000
    assert all(a[1] == b[0] for a, b in itertools.pairwise(plan))
    assert segment_plan(0, 100) == [(0, 100)]


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"hello, not a midi file", 422, ("not a midi file",)),
        (b"MThd\x00\x00\x00\x06\x00\x01garbage", 422, ("not a readable midi",)),
        (b"", 422, ("empty",)),
        (midi_bytes(2.0, channel=9), 422, ("only drum notes",)),
        (midi_bytes(200.0, step=1.0), 422, ("too long",)),
        (b"MThd" + bytes(70 * 1024), 413, ("too big",)),
    ],
    ids=["not-midi", "corrupt", "empty", "drums-only", "too-long", "too-big"],
)
def test_upload_errors(client: TestClient, data: bytes, status: int, words: tuple) -> None:
    error(client.post("/api/uploads", content=data), status, *words)


def test_upload_form_errors(client: TestClient) -> None:
    r = client.post("/api/uploads", files={"other": ("a.mid", b"MThd", "audio/midi")})
    error(r, 400, "file")
    big = {"file": ("a.mid", b"MThd" + bytes(200 * 1024), "audio/midi")}
    error(client.post("/api/uploads", files=big), 413, "too big")


def test_render_errors(client: TestClient) -> None:
    u = upload(client, midi_bytes(3.0))["id"]
    long_piece = upload(client, midi_bytes(100.0, step=1.0))["id"]
    cases = [
        ({"upload_id": "nope", "x": 0, "y": 0}, 404, ("unknown upload id",)),
        ({"upload_id": u, "timbre": "kazoo"}, 400, ("unknown instrument", "valid")),
        ({"upload_id": u, "timbre": "1,2,3"}, 400, ("coordinates",)),
        ({"upload_id": u, "x": 1e9, "y": 0}, 400, ("bad coordinates",)),
        ({"upload_id": u, "x": 0.5}, 400, ("both x and y",)),
        ({"upload_id": u, "x": 0, "y": 0, "timbre": "trumpet"}, 400, ("either",)),
        ({"upload_id": u, "x": 0, "y": 0, "vocoder": "wavenet"}, 400, ("vocoder", "griffinlim")),
        ({"upload_id": u, "x": 0, "y": 0, "start": 50}, 400, ("past the end",)),
        ({"upload_id": u, "x": 0, "y": 0, "start": 2, "end": 1}, 400, ("end must be after",)),
        ({"upload_id": u, "x": 0, "y": 0, "start": -1}, 400, ("start",)),
        ({"upload_id": long_piece, "x": 0, "y": 0}, 400, ("limited to 60 s",)),
        ({"upload_id": u, "x": 0, "y": 0, "path": "/etc/passwd"}, 400, ("path",)),
        ({"upload_id": u, "x": "left", "y": 0}, 400, ("x",)),
    ]
    for body, status, words in cases:
        error(client.post("/api/render", json=body), status, *words)
    r = client.post(
        "/api/render", content=b"{not json", headers={"content-type": "application/json"}
    )
    error(r, 400, "json")


def test_unknown_ids_and_routes(client: TestClient) -> None:
    error(client.get("/api/jobs/nope"), 404, "unknown render id")
    error(client.delete("/api/jobs/nope"), 404, "unknown render id")
    error(client.get("/api/jobs/nope/audio.pcm"), 404, "unknown render id")
    error(client.get("/api/uploads/nope"), 404, "unknown upload id")
    error(client.get("/api/nothing"), 404, "no such page")
    error(client.put("/api/render"), 405, "not allowed")
    error(client.get("/static/../../errors.py"), 404)


def test_busy_server_answers_503_and_keeps_answering(web_parts: dict) -> None:
    cfg = WebConfig(max_concurrent_renders=1, max_queued_renders=1, torch_threads=1)
    voc, started, release = gated_griffinlim()
    parts = {**web_parts, "vocoders": {"griffinlim": voc}}
    with TestClient(create_app(config=cfg, **parts)) as client:
        try:
            u = upload(client, midi_bytes(20.0))["id"]
            body = {"upload_id": u, "x": 0.1, "y": 0.1}
            first = client.post("/api/render", json=body).json()
            assert started.wait(120), "the first render never reached the vocoder"
            second = client.post("/api/render", json=body).json()
            r = client.post("/api/render", json=body)
            error(r, 503, "busy")
            assert int(r.headers["Retry-After"]) >= 1
            # the event loop answers while a worker is held inside a render (how fast it
            # answers under load is measured by benchmarks/bench_web_load.py)
            assert client.get("/api/health").json()["active_renders"] == 2
            assert client.get(f"/api/jobs/{first['id']}").json()["state"] == "running"
            assert client.get(f"/api/jobs/{second['id']}").json()["state"] == "queued"
            error(client.get(f"/api/jobs/{first['id']}/audio.wav"), 409, "not ready")
            assert client.delete(f"/api/jobs/{second['id']}").json()["state"] == "cancelled"
            client.delete(f"/api/jobs/{first['id']}")
        finally:
            release.set()

        def ended() -> dict | None:
            info = client.get(f"/api/jobs/{first['id']}").json()
            return None if info["state"] in ("queued", "running") else info

        job = wait_until(ended, "the running render to end after DELETE")
        assert job["state"] == "cancelled", job
        assert client.get("/api/health").json()["active_renders"] == 0
        assert client.post("/api/render", json=body).status_code == 202


def test_render_timeout(web_parts: dict) -> None:
    cfg = WebConfig(render_timeout_s=0.3, torch_threads=1)
    parts = {**web_parts, "vocoders": {"griffinlim": OverrunGriffinLim(0.4, n_iter=2)}}
    with TestClient(create_app(config=cfg, **parts)) as client:
        u = upload(client, midi_bytes(20.0))["id"]
        job = client.post("/api/render", json={"upload_id": u, "x": 0, "y": 0}).json()
        pcm = stream(client, job["id"])
        info = client.get(f"/api/jobs/{job['id']}").json()
        assert info["state"] == "failed" and "timed out" in info["error"]
        assert len(pcm) < 20 * C.SAMPLE_RATE
        error(client.get(f"/api/jobs/{job['id']}/audio.wav"), 409, "timed out")


@pytest.mark.parametrize(
    "argv", [["--port", "70000"], ["--workers", "0"], ["--map-resolution", "1"]]
)
def test_serve_cli_rejects_bad_options(argv: list, capsys: pytest.CaptureFixture) -> None:
    from mel2mel.cli import main

    assert main(["serve", *argv]) == 2
    assert "mel2mel: error: --" in capsys.readouterr().err
