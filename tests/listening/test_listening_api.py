"""The listening test's HTTP API: a session as the page runs it, blindness, own rows only,
and a 4xx ``{"error": ...}`` for every bad request."""

from __future__ import annotations

import json
import sqlite3

import pytest

pytest.importorskip("fastapi", reason="needs the [web] extra: pip install 'mel2mel[web]'")
from fastapi.testclient import TestClient

from mel2mel.listening.site import load_site
from mel2mel.web.listening import create_listening_app

from .conftest import CONFIGS, INSTRUMENTS, TRACKS


@pytest.fixture
def db(tmp_path):
    return tmp_path / "ratings.sqlite"


@pytest.fixture
def client(site_dir, db):
    app = create_listening_app(site_dir, db, trials=10, results_key="sesame", max_listeners=3)
    with TestClient(app) as c:
        yield c


def _start(client, **answers):
    resp = client.post("/api/listeners", json={"consent": True, **answers})
    assert resp.status_code == 201, resp.text
    token = resp.json()["token"]
    return token, client.get(f"/api/listeners/{token}").json()


def test_a_session_as_the_page_runs_it(client, site_dir, db):
    token, session = _start(client, headphones=True, expertise="musician")
    trials = session["trials"]
    assert [t["phase"] for t in trials] == ["training"] * 4 + ["test"] * 10
    assert [t["example"] for t in trials[:2]] == ["best", "worst"]
    assert session["answers"] == {} and session["min_listen_s"] == 8.0
    # blind: nothing the page gets names a configuration, a track or a file
    text = json.dumps(session)
    for word in [n for n, _, _ in CONFIGS] + list(TRACKS) + list(INSTRUMENTS) + ["ogg"]:
        assert word not in text
    site = load_site(site_dir)
    audio = client.get(f"/api/listeners/{token}/clips/{trials[0]['id']}")
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/ogg"
    reference = site.audio[next(k for k in site.audio if k.config == "original")]
    assert audio.content[:4] == b"OggS" and len(audio.content) == pytest.approx(
        reference.stat().st_size, rel=0.5
    )
    for i, t in enumerate(trials):
        resp = client.put(f"/api/listeners/{token}/ratings/{t['id']}", json={"score": 1 + i % 5})
        assert resp.status_code == 200 and resp.json()["answered"] == i + 1
    again = client.put(f"/api/listeners/{token}/ratings/{trials[6]['id']}", json={"score": 5})
    assert again.json()["answered"] == len(trials)  # updated, not added
    assert client.get(f"/api/listeners/{token}").json()["answers"][trials[6]["id"]] == 5
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT phase, score, position FROM ratings ORDER BY position")
        rows = rows.fetchall()
        who = conn.execute("SELECT headphones, expertise, user_agent FROM listeners").fetchone()
    assert [r[2] for r in rows] == list(range(14)) and rows[6] == ("test", 5, 6)
    assert [r[1] for r in rows[:6]] == [1, 2, 3, 4, 5, 1]
    assert who == (1, "musician", "testclient")


def test_results_need_the_key_and_show_the_mos(client):
    token, session = _start(client)
    for t in session["trials"]:
        client.put(f"/api/listeners/{token}/ratings/{t['id']}", json={"score": 4})
    for path in ("/results", "/api/results", "/api/results/ratings.csv"):
        assert client.get(path).status_code == 403
        assert client.get(path, params={"key": "wrong"}).status_code == 403
    data = client.get("/api/results", params={"key": "sesame"}).json()
    # the reference rated 4 on average passes; the anchor rated 4 fails: flagged, excluded
    assert data["listeners"] == 0 and len(data["flagged"]) == 1
    data = client.get("/api/results", params={"key": "sesame", "include_flagged": True}).json()
    assert data["ratings"] == 10 and {r["mos"] for r in data["configs"]} == {4.0}
    page = client.get("/results", params={"key": "sesame", "include_flagged": "true"})
    assert page.status_code == 200 and "3.879 ± 0.051" in page.text and "4.00 ±" in page.text
    assert "summary.csv?key=sesame" in page.text
    csv = client.get("/api/results/ratings.csv", params={"key": "sesame"})
    assert csv.headers["content-type"].startswith("text/csv")
    assert len(csv.text.strip().splitlines()) == 1 + 14  # header + every rating, training too


def test_a_listener_cannot_touch_anothers_clips(client):
    alice, a = _start(client)
    bob, _ = _start(client)
    clip = a["trials"][5]["id"]
    assert (
        client.put(f"/api/listeners/{alice}/ratings/{clip}", json={"score": 5}).status_code == 200
    )
    resp = client.put(f"/api/listeners/{bob}/ratings/{clip}", json={"score": 1})
    assert resp.status_code == 404 and "error" in resp.json()
    assert client.get(f"/api/listeners/{bob}/clips/{clip}").status_code == 404
    assert client.get(f"/api/listeners/{alice}").json()["answers"] == {clip: 5}


def test_every_bad_request_gets_a_4xx(client):
    token, session = _start(client)
    clip = session["trials"][4]["id"]
    rate = f"/api/listeners/{token}/ratings/{clip}"
    bad = {
        "not JSON": client.put(rate, content=b"{score: 4"),
        "a JSON list": client.put(rate, json=[4]),
        "score 0": client.put(rate, json={"score": 0}),
        "score 6": client.put(rate, json={"score": 6}),
        "score 4.5": client.put(rate, json={"score": 4.5}),
        "score '4'": client.put(rate, json={"score": "4"}),
        "score true": client.put(rate, json={"score": True}),
        "score null": client.put(rate, json={"score": None}),
        "no score": client.put(rate, json={}),
        "extra field": client.put(rate, json={"score": 4, "config": "original"}),
        "deep JSON": client.put(rate, content=b"[" * 100 + b"]" * 100),
        "oversize body": client.put(rate, content=b'{"score": 4, "x": "' + b"a" * 8000 + b'"}'),
        "unknown clip": client.put(f"/api/listeners/{token}/ratings/nope", json={"score": 4}),
        "unknown token": client.put(f"/api/listeners/x{token}/ratings/{clip}", json={"score": 4}),
        "long token": client.get(f"/api/listeners/{'a' * 5000}"),
        "session of no one": client.get("/api/listeners/nobody"),
        "audio of no one": client.get(f"/api/listeners/nobody/clips/{clip}"),
        "unknown audio": client.get(f"/api/listeners/{token}/clips/{'z' * 300}"),
        "no consent": client.post("/api/listeners", json={"consent": False}),
        "consent 'yes'": client.post("/api/listeners", json={"consent": "yes"}),
        "bad expertise": client.post("/api/listeners", json={"consent": True, "expertise": "x"}),
        "headphones 1": client.post("/api/listeners", json={"consent": True, "headphones": 1}),
        "empty body": client.post("/api/listeners", content=b""),
        "wrong method": client.post(rate, json={"score": 4}),
        "unknown page": client.get("/api/nothing"),
        "unknown static": client.get("/static/app.js"),
        "static traversal": client.get("/static/..%2Flistening.py"),
        "unknown csv": client.get("/api/results/tokens.csv", params={"key": "sesame"}),
        "bad flag": client.get("/api/results", params={"key": "sesame", "include_flagged": "x"}),
    }
    wrong = {k: r.status_code for k, r in bad.items() if not 400 <= r.status_code < 500}
    assert wrong == {}, wrong
    assert all("error" in r.json() for r in bad.values())
    assert bad["oversize body"].status_code == 413 and bad["unknown token"].status_code == 403
    assert bad["unknown clip"].status_code == 404 and bad["wrong method"].status_code == 405
    assert client.get(f"/api/listeners/{token}").json()["answers"] == {}  # nothing stored
    # the test is full at three listeners (max_listeners=3): a fourth is refused, politely
    _start(client)
    _start(client)
    full = client.post("/api/listeners", json={"consent": True})
    assert full.status_code == 403 and "full" in full.json()["error"]


def test_the_page_and_its_files(client):
    page = client.get("/")
    assert page.status_code == 200 and "/static/listen.js" in page.text
    for label in ("5</b> Excellent", "4</b> Good", "3</b> Fair", "2</b> Poor", "1</b> Bad"):
        assert label in page.text
    for name in ("listen.js", "listen.css", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
