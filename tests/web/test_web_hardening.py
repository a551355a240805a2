"""A hostile client against the web API (issue 18): no 500, no traceback, no broken audio,
one error format for every error, no server paths or library names in messages."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mel2mel.cli import main
from mel2mel.models.export import model_fingerprint
from mel2mel.synthesizer import Synthesizer
from mel2mel.timbre.library import TimbreLibrary, UserTimbre
from mel2mel.vocoders.griffinlim import GriffinLim
from mel2mel.web.app import create_app

from .conftest import TEST_CONFIG, midi_bytes, tiny_model, wait_until

pytestmark = pytest.mark.usefixtures("single_thread")


class NanGriffinLim(GriffinLim):
    """A vocoder gone wrong: every sample NaN."""

    def _vocode(self, mel, roll):
        return super()._vocode(mel, roll) * float("nan")


@pytest.fixture(scope="module")
def client(web_parts: dict) -> Iterator[TestClient]:
    app = create_app(config=TEST_CONFIG, **web_parts)

    @app.get("/api/test-boom")  # a route with a bug: what every unexpected error looks like
    async def boom() -> None:
        raise ZeroDivisionError("/srv/secret/path")

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def one_error(r, status: int, *words: str) -> str:
    """``{"error": "one line"}`` and nothing else, with ``status``."""
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert list(body) == ["error"], body
    assert "\n" not in body["error"] and "Traceback" not in body["error"]
    for w in words:
        assert w in body["error"], (w, body["error"])
    return body["error"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"start": 1e307}, ["start"]),
        ({"end": 1e307}, ["end"]),
        ({"start": 0, "end": 1e308}, ["end"]),
        ({"space_index": 0, "start": 1e308}, ["start"]),
        ({"timbre": "²"}, ["unknown instrument '²'"]),
        ({"timbre": "²=1"}, ["unknown instrument '²'"]),
        ({"timbre": "²@0"}, ["unknown instrument '²'"]),
        ({"timbre": "1e308,1e308"}, ["outside the timbre space"]),
        ({"x": 40, "y": 40}, ["outside the timbre space"]),
        ({"x": 10, "y": 10}, ["outside the timbre space"]),
        ({"timbre": "piano@0s,10,10@1s"}, ["outside the timbre space"]),
    ],
)
def test_odd_numbers_and_text_are_400(client: TestClient, body: dict, words: list[str]) -> None:
    one_error(client.post("/api/render", json=body), 400, *words)


def test_previews_far_outside_the_map_are_400(client: TestClient) -> None:
    for x, y in [("40", "40"), ("1e308", "0"), ("²", "0")]:
        one_error(client.get("/api/preview", params={"x": x, "y": y}), 400, "coordinates")
    one_error(client.get("/api/preview"), 400)  # framework validation, same shape


def test_json_bodies_are_bounded_before_parsing(client: TestClient) -> None:
    nested = "[" * 2000 + "]" * 2000  # json.loads: RecursionError, once a 500
    one_error(client.post("/api/render", content=nested), 400, "nested")
    big = json.dumps({"label": "x" * 100_000})
    one_error(client.post("/api/render", content=big), 413, "bytes")
    one_error(client.post("/api/render", content=b"\xff\xfe"), 400, "JSON")


def test_a_non_latin1_label_downloads(client: TestClient) -> None:
    up = client.post("/api/uploads?name=a.mid", content=midi_bytes(1.0)).json()
    job = client.post("/api/render", json={"upload_id": up["id"], "label": "日本語"}).json()
    wait_until(lambda: client.get(f"/api/jobs/{job['id']}").json()["state"] == "done", "render")
    r = client.get(f"/api/jobs/{job['id']}/audio.wav")
    assert r.status_code == 200, r.text
    disposition = r.headers["content-disposition"]
    star = disposition.split("filename*=UTF-8''")[1]
    assert urllib.parse.unquote(star) == "mel2mel_日本語.wav"


def test_framework_errors_and_500s_are_one_json_line(client: TestClient) -> None:
    headers = {"Content-Type": "multipart/form-data; boundary=zz", "Content-Length": "20"}
    r = client.post("/api/uploads", content=b"--zz\r\nbroken" + b"\0" * 8, headers=headers)
    one_error(r, 400)
    r = client.post("/api/uploads", content=b"x", headers={"Content-Type": "multipart/form-data"})
    assert r.status_code in (400, 411) and list(r.json()) == ["error"]
    msg = one_error(client.get("/api/test-boom"), 500, "internal error")
    assert "/srv" not in msg and "ZeroDivision" not in msg
    one_error(client.get("/api/nothing-here"), 404)
    one_error(client.put("/api/render"), 405)


def test_errors_hold_no_library_names_or_server_paths(tmp_path) -> None:
    model = tiny_model(3, 2)
    library = TimbreLibrary(tmp_path / "operator-library")
    library.save(UserTimbre("Secret Cello", (0.3, -0.2), model_fingerprint(model)))
    (library.root / "broken.json").write_text("{not json")
    synth = Synthesizer(model, GriffinLim(n_iter=2, nnls_iterations=1), timbre_library=library)
    app = create_app(synth, config=TEST_CONFIG, vocoders={"griffinlim": synth.vocoder},
                     map_resolution=3)  # fmt: skip
    with TestClient(app) as client:
        unknown = one_error(client.post("/api/render", json={"timbre": "tuba"}), 400, "tuba")
        assert "Secret" not in unknown and "library" not in unknown
        broken = one_error(client.post("/api/render", json={"timbre": "broken"}), 400, "broken")
        assert str(tmp_path) not in broken and "operator-library" not in broken
        # the operator's own CLI still gets the whole story
        with pytest.raises(Exception, match="in the timbre library: Secret Cello"):
            synth.timbre("tuba")


def test_broken_audio_fails_the_job_instead_of_streaming(web_parts: dict) -> None:
    parts = {**web_parts, "vocoders": {"griffinlim": NanGriffinLim(n_iter=2, nnls_iterations=1)}}
    with TestClient(create_app(config=TEST_CONFIG, **parts)) as client:
        job = client.post("/api/render", json={"timbre": "piano"}).json()
        with client.stream("GET", f"/api/jobs/{job['id']}/audio.pcm") as r:
            pcm = b"".join(r.iter_bytes())
        info = client.get(f"/api/jobs/{job['id']}").json()
        assert info["state"] == "failed" and "NaN" in info["error"], info
        assert pcm == b""  # not a sample of it was sent
        one_error(client.get(f"/api/jobs/{job['id']}/audio.wav"), 409, "NaN")
    assert np.isnan(NanGriffinLim(n_iter=1).vocode(np.zeros((80, 4), np.float32))).all()


@pytest.mark.parametrize(
    "args",
    [["--max-render-seconds", "nan"], ["--max-render-seconds", "inf"], ["--threads", "100000"],
     ["--workers", "0"], ["--port", "70000"]],
)  # fmt: skip
def test_serve_refuses_bad_settings_before_starting(args: list[str], capsys) -> None:
    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mel2mel: error: ") and args[0] in err
