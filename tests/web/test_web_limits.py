"""The server's memory and work are bounded (issue 18, items 5-7): uploads counted by their
notes and dropped least recently used, jobs that let go of their notes, a memory budget under
the ceiling, parsing in its own bounded pool (large files in processes), and a job that ends
only when the last of its readers leaves.

Every wait here waits for a state (a counter, a job's state), never for time to pass.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import threading
import weakref
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import ThreadPoolExecutor as Threads

import httpx
import pytest
from fastapi.testclient import TestClient

from mel2mel import constants as C
from mel2mel.cli import main
from mel2mel.midi import read_notes
from mel2mel.vocoders.griffinlim import GriffinLim
from mel2mel.web.app import create_app
from mel2mel.web.config import WebConfig
from mel2mel.web.errors import ApiError
from mel2mel.web.pools import Lane, thread_pool
from mel2mel.web.uploads import PackedPiece

from .conftest import TEST_CONFIG, midi_bytes, serve_app, wait_until

pytestmark = pytest.mark.usefixtures("single_thread")
NOTES = 12  # notes of midi_bytes(3.0)


def stepped_griffinlim() -> tuple[GriffinLim, threading.Semaphore]:
    """A Griffin-Lim whose every call waits for a permit of the returned semaphore, so the
    test decides when a render makes its next chunk (the copies each worker makes share the
    semaphore: it lives in the class)."""
    steps = threading.Semaphore(0)

    class Stepped(GriffinLim):
        def _vocode(self, mel, roll):
            if not steps.acquire(timeout=120):
                raise RuntimeError("the test never let the render go on")
            return super()._vocode(mel, roll)

    return Stepped(n_iter=2, nnls_iterations=1), steps


def post(client, data: bytes) -> httpx.Response:
    return client.post("/api/uploads?name=t.mid", content=data)


def state(client, job_id: str) -> str:
    return client.get(f"/api/jobs/{job_id}").json()["state"]


# -- memory: uploads by notes, least recently used, pinned while rendered --------------------


def test_uploads_are_counted_by_notes_and_the_least_recently_used_go(web_parts: dict) -> None:
    cfg = WebConfig(max_held_notes=3 * NOTES, max_uploads=10, torch_threads=1)
    with TestClient(create_app(config=cfg, **web_parts)) as client:
        a, b, c = (post(client, midi_bytes(3.0)).json()["id"] for _ in range(3))
        assert client.get("/api/health").json()["held_notes"] == 3 * NOTES
        assert client.get(f"/api/uploads/{a}").status_code == 200  # a is now the most recent
        d = post(client, midi_bytes(3.0)).json()["id"]
        assert client.get(f"/api/uploads/{b}").status_code == 404  # b went, not a
        assert all(client.get(f"/api/uploads/{u}").status_code == 200 for u in (a, c, d))
        assert client.get("/api/health").json()["held_notes"] == 3 * NOTES
        big = post(client, midi_bytes(12.0))  # 48 notes: more than all uploads may hold
        assert big.status_code == 422 and "too many notes" in big.json()["error"]


def test_an_upload_being_rendered_stays_until_its_render_ends(web_parts: dict) -> None:
    cfg = WebConfig(max_held_notes=2 * NOTES, max_uploads=10, max_concurrent_renders=2,
                    torch_threads=1)  # fmt: skip
    voc, steps = stepped_griffinlim()
    parts = {**web_parts, "vocoders": {"griffinlim": voc}}
    with TestClient(create_app(config=cfg, **parts)) as client:
        try:
            a, b = (post(client, midi_bytes(3.0)).json()["id"] for _ in range(2))
            jobs = [client.post("/api/render", json={"upload_id": u, "timbre": "piano"}).json()
                    for u in (a, b)]  # fmt: skip
            # both uploads are being rendered and the notes budget is full: no room
            r = post(client, midi_bytes(3.0))
            assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1, r.text
            assert list(r.json()) == ["error"]
            client.delete(f"/api/jobs/{jobs[0]['id']}")
        finally:
            steps.release(1000)
        wait_until(lambda: state(client, jobs[0]["id"]) == "cancelled", "the cancel")
        c = post(client, midi_bytes(3.0))  # a's render ended: a may go now
        assert c.status_code == 201, c.text
        assert client.get(f"/api/uploads/{a}").status_code == 404
        assert client.get(f"/api/uploads/{b}").status_code == 200


def test_a_finished_job_lets_go_of_its_notes(web_parts: dict) -> None:
    cfg = WebConfig(max_uploads=1, torch_threads=1)
    app = create_app(config=cfg, **web_parts)
    with TestClient(app) as client:
        up = post(client, midi_bytes(3.0)).json()["id"]
        notes = weakref.ref(app.state.uploads.get(up).piece.notes)
        job = client.post("/api/render", json={"upload_id": up, "timbre": "piano"}).json()
        wait_until(lambda: state(client, job["id"]) == "done", "the render")
        assert app.state.jobs.get(job["id"]).spec is None
        post(client, midi_bytes(2.0))  # the first upload is dropped (max_uploads=1)
        gc.collect()
        assert notes() is None, "a finished job still holds the notes of its upload"
        # the job itself stays, for its download
        assert client.get(f"/api/jobs/{job['id']}/audio.wav").status_code == 200


def test_finished_jobs_are_bounded_in_number(web_parts: dict) -> None:
    cfg = WebConfig(max_kept_jobs=2, torch_threads=1)
    with TestClient(create_app(config=cfg, **web_parts)) as client:
        ids = []
        for _ in range(4):
            job = client.post("/api/render", json={"timbre": "piano", "end": 0.5}).json()
            wait_until(lambda j=job: state(client, j["id"]) == "done", "a render")
            ids.append(job["id"])
        assert [client.get(f"/api/jobs/{i}").status_code for i in ids] == [404, 200, 200, 200]


def test_packed_notes_unpack_to_the_same_sequence() -> None:
    import io

    import mido

    midi = mido.MidiFile(type=1, ticks_per_beat=480)
    for ch, prog in ((0, 0), (3, 56)):
        track = mido.MidiTrack([mido.Message("program_change", channel=ch, program=prog)])
        track.append(mido.Message("control_change", channel=ch, control=7, value=64 + ch))
        for i in range(20):
            track.append(mido.Message("note_on", channel=ch, note=50 + i, velocity=30 + i))
            track.append(mido.Message("note_off", channel=ch, note=50 + i, time=97 + ch))
        midi.tracks.append(track)
    buf = io.BytesIO()
    midi.save(file=buf)
    seq = read_notes(buf.getvalue(), warn=False)
    assert seq.volume and len(seq.channels) == 2
    piece = PackedPiece.pack(seq)
    points = sum(map(len, seq.volume.values()))
    assert piece.unpack() == seq and piece.nbytes == 22 * 40 + 16 * points


def test_the_default_limits_fit_under_the_memory_ceiling(capsys) -> None:
    cfg = WebConfig()
    assert cfg.max_rss_bytes <= 1536 << 20
    cfg.check_memory()
    assert sum(cfg.memory_budget().values()) <= cfg.max_rss_bytes
    with pytest.raises(ValueError, match="over the memory ceiling"):
        WebConfig(max_upload_bytes=64 << 20).check_memory()
    assert main(["serve", "--max-rss-mb", "512"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mel2mel: error: --max-rss-mb") and "ceiling" in err


# -- bounded pools: large files apart from small ones and previews ---------------------------


def test_a_lane_refuses_when_full_and_counts_abandoned_work() -> None:
    gate = threading.Event()

    async def scenario() -> None:
        lane = Lane(thread_pool(1, "test-lane"), 1, 2, "the work")
        with pytest.raises(ApiError) as late:  # 504, but the work still runs...
            await lane.run(gate.wait, 60, timeout=0.01)
        assert late.value.status == 504 and lane.pending == 1
        second = asyncio.ensure_future(lane.run(lambda: "done", timeout=60))
        await asyncio.sleep(0)  # let it take its place
        assert lane.pending == 2
        with pytest.raises(ApiError) as full:  # ...and counts, so the lane is full
            await lane.run(lambda: None, timeout=60)
        assert full.value.status == 503 and int(full.value.headers["Retry-After"]) >= 1
        gate.set()
        assert await second == "done"
        lane.shutdown()

    asyncio.run(scenario())


def test_a_lane_refuses_work_it_would_not_finish_in_time() -> None:
    gate = threading.Event()

    async def scenario() -> None:
        lane = Lane(thread_pool(1, "test-lane"), 1, 10, "reading a file", seconds_per_cost=4.0)
        # idle: taken, even if it may not end in time (2 MB at 4 s/MB = 8 s > 5 s)
        first = asyncio.ensure_future(lane.run(gate.wait, 60, timeout=5, cost=2.0))
        await asyncio.sleep(0)
        assert lane.pending == 1 and lane.expected_wait() == 8.0
        with pytest.raises(ApiError) as busy:  # refused now rather than 504 after 5 s
            await lane.run(lambda: None, timeout=5, cost=0.1)
        assert busy.value.status == 503 and busy.value.headers["Retry-After"] == "4"
        gate.set()
        assert await first is True
        assert lane.pending == 0 and lane.rate != 4.0  # it learnt from the work's own time
        lane.shutdown()

    asyncio.run(scenario())


def test_small_uploads_and_previews_answer_while_large_files_wait(web_parts: dict) -> None:
    cfg = WebConfig(quick_parse_bytes=4096, parse_workers=1, max_queued_parses=3,
                    max_piece_seconds=120.0, torch_threads=1)  # fmt: skip
    app = create_app(config=cfg, **web_parts)
    parse = app.state.lanes["parse"]
    parse.make = thread_pool(1, "test-parse")  # a thread, so the test can hold it
    hold = threading.Event()
    parse.executor.submit(hold.wait, 120)  # the parse worker is busy until the test says
    large, small = midi_bytes(60.0, step=0.05), midi_bytes(3.0)
    assert len(large) > cfg.quick_parse_bytes >= len(small)
    others = [httpx.Client(timeout=120) for _ in range(4)]
    with serve_app(app) as url, httpx.Client(base_url=url, timeout=120) as client, Threads(4) as ex:
        try:
            for other in others:
                other.base_url = url
            waiting = [ex.submit(post, other, large) for other in others]
            wait_until(lambda: parse.pending == 4, "4 large files waiting for the parse worker")
            full = post(client, large)
            assert full.status_code == 503 and int(full.headers["Retry-After"]) >= 1, full.text
            r = post(client, small)
            assert r.status_code == 201 and r.json()["num_notes"] == NOTES, r.text
            p = client.get("/api/preview", params={"x": 0.3, "y": 0.1})
            assert p.status_code == 200 and len(p.content) > 0
            assert parse.pending == 4 and not any(f.done() for f in waiting)
        finally:
            hold.set()
        assert [f.result().status_code for f in waiting] == [201] * 4
    for other in others:
        other.close()


def test_large_files_are_read_in_worker_processes(web_parts: dict) -> None:
    cfg = WebConfig(quick_parse_bytes=1024, parse_workers=1, torch_threads=1)
    app = create_app(config=cfg, **web_parts)
    parse = app.state.lanes["parse"]
    large = midi_bytes(30.0, step=0.05)
    assert len(large) > cfg.quick_parse_bytes
    with TestClient(app) as client:
        r = post(client, large)
        assert r.status_code == 201 and r.json()["num_notes"] == 600, r.text
        assert isinstance(parse.executor, ProcessPoolExecutor)
        assert parse.executor._processes  # type: ignore[attr-defined]
        bad = post(client, midi_bytes(30.0, step=0.05, channel=9))  # its 422 comes back whole
        assert bad.status_code == 422 and "only drum notes" in bad.json()["error"], bad.text
        # a worker that dies (killed, out of memory) breaks the pool: one 503, then a new one
        broken = parse.executor
        with pytest.raises(ApiError) as died:
            asyncio.run(parse.run(os._exit, 3, timeout=120))
        assert died.value.status == 503
        assert post(client, large).status_code == 201
        assert parse.executor is not broken
        workers = list(parse.executor._processes.values())  # type: ignore[attr-defined]
        assert workers and all(p.is_alive() for p in workers)
    wait_until(lambda: not any(p.is_alive() for p in workers), "the parse workers to stop")


# -- shared jobs: the last reader ends it ----------------------------------------------------


def test_a_job_is_cancelled_only_when_its_last_reader_leaves(web_parts: dict) -> None:
    voc, steps = stepped_griffinlim()
    app = create_app(config=TEST_CONFIG, **{**web_parts, "vocoders": {"griffinlim": voc}})
    jobs = app.state.jobs
    with serve_app(app) as url, httpx.Client(base_url=url, timeout=120) as http:
        try:
            up = post(http, midi_bytes(3.0)).json()["id"]
            info = http.post("/api/render", json={"upload_id": up, "timbre": "piano"}).json()
            job = jobs.get(info["id"])
            a = httpx.Client(base_url=url, timeout=120)
            first = a.send(a.build_request("GET", f"/api/jobs/{job.id}/audio.pcm"), stream=True)
            got: list[bytes] = []
            b = httpx.Client(base_url=url, timeout=120)
            with Threads(1) as ex, b:
                pcm = f"/api/jobs/{job.id}/audio.pcm"
                second = ex.submit(lambda: got.append(b.get(pcm).content))
                wait_until(lambda: job.readers == 2, "two readers on the job")
                first.close()
                a.close()
                wait_until(lambda: job.readers == 1, "the server to see the first reader go")
                assert not job.cancelled and job.state == "running"
                steps.release(1000)
                second.result()
            assert job.state == "done"
            assert len(got[0]) == 2 * round(info["seconds_total"] * C.SAMPLE_RATE)
            # one reader, who leaves: the job ends
            info = http.post("/api/render", json={"upload_id": up, "timbre": "piano"}).json()
            job = jobs.get(info["id"])
            with http.stream("GET", f"/api/jobs/{job.id}/audio.pcm") as r:
                assert r.status_code == 200
                wait_until(lambda: job.readers == 1, "the reader on the job")
            wait_until(lambda: job.state == "cancelled", "the job to end with its reader")
        finally:
            steps.release(1000)


def test_uploads_being_received_at_once_are_bounded(web_parts: dict) -> None:
    cfg = WebConfig(max_receiving_uploads=1, torch_threads=1)
    app = create_app(config=cfg, **web_parts)
    head = b"POST /api/uploads HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\nMThd"
    with serve_app(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as slow:
            slow.sendall(head)
            wait_until(lambda: app.state.counters["receiving"] == 1, "the first upload to start")
            r = post(client, midi_bytes(3.0))
            assert r.status_code == 503 and "too many uploads" in r.json()["error"], r.text
            assert client.get("/api/health").json()["ok"]
        wait_until(lambda: app.state.counters["receiving"] == 0, "the upload to be dropped")
        assert post(client, midi_bytes(3.0)).status_code == 201
