"""Soak: the server's memory and answers under 64 large uploads and 20 clients x 10 renders.

Starts the real ``mel2mel serve`` (shipped models, default limits, a 9 x 9 map to start
sooner) on 127.0.0.1 in a child process, then:

1. **Large uploads.** 64 MIDI files of about 1 MB and 170,000 notes each (distinct), sent by
   20 concurrent clients (a 503 is retried after its ``Retry-After``). Meanwhile a probe
   uploads a 170-byte file and asks for a hover preview at a random point, every 0.5 s, and
   times both: they must answer in < 2 s while the large files are parsed.
2. **Renders.** 20 clients x 10 rounds: each round, every client renders a 10 s clip at a
   random map point and streams it to the end; one round in five a client first uploads a
   new large file and renders from it (so uploads come and go while renders hold them), the
   other rounds use its own 60 s piece. Rounds are in step (a barrier), so the server's RSS
   is printed per round.
3. **Stop.** SIGTERM with a stream open: time until the server has exited.

The server's resident memory (and that of its parse workers) is sampled every 0.2 s.

    nice -n 19 python benchmarks/bench_web_soak.py [--large 64] [--clients 20] [--rounds 10]

Target: the server's RSS under its ceiling (1.5 GB by default, ``WebConfig.max_rss_bytes``)
throughout; the small upload and the preview under 2 s during the large uploads; no failed
request other than deliberate 503s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import psutil
from bench_web_common import free_port, random_piece, wait_until_ready

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 16_000
MB = 2**20


def large_piece(seed: int, notes: int = 170_000) -> bytes:
    """About 1 MB of MIDI (17 min): ``notes`` short notes in chords of four, written as bytes
    (running status: 3 bytes an event), so the client spends no time on it."""
    rng = np.random.default_rng(seed)
    events = np.zeros((notes, 6), dtype=np.uint8)  # on: delta, key, 80; off: 0, key, 0
    events[::4, 0] = 24  # a chord every 24 ticks (25 ms at 120 bpm, 480 ticks a beat)
    events[:, 1] = events[:, 4] = rng.integers(40, 90, notes)
    events[:, 2] = 80
    body = b"\x00\x90" + events.tobytes()[1:] + b"\x00\xff\x2f\x00"  # status once; end
    header = b"MThd" + (6).to_bytes(4, "big") + bytes([0, 0, 0, 1, 1, 0xE0])
    return header + b"MTrk" + len(body).to_bytes(4, "big") + body


def tiny_piece() -> bytes:
    """A 170-byte MIDI file: a few notes."""
    return random_piece(2.0, seed=99, notes_per_second=2.0)


class Memory:
    """Samples the RSS of a process and of its children in a thread; maxima per phase."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.phase = "start"
        self.peak: dict[str, tuple[int, int]] = {}
        self.last = (0, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                own = self.proc.memory_info().rss
                kids = sum(p.memory_info().rss for p in self.proc.children(recursive=True))
            except psutil.Error:
                return
            self.last = (own, own + kids)
            old = self.peak.get(self.phase, (0, 0))
            self.peak[self.phase] = (max(old[0], own), max(old[1], own + kids))
            time.sleep(0.2)

    def start(self, phase: str) -> None:
        self.phase = phase
        self.peak[phase] = self.last

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def line(self, phase: str) -> str:
        own, total = self.peak.get(phase, (0, 0))
        return f"server RSS max {own / MB:5.0f} MB (with parse workers {total / MB:5.0f} MB)"


async def post_upload(http: httpx.AsyncClient, data: bytes, stats: Counter) -> str | None:
    """Upload ``data``, retrying 503s after their Retry-After; the id, or None."""
    while True:
        r = await http.post("/api/uploads?name=soak.mid", content=data)
        stats[f"upload {r.status_code}"] += 1
        if r.status_code != 503:
            break
        await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
    if r.status_code != 201:
        stats[f"upload error: {r.json()['error'][:60]}"] += 1
        return None
    return r.json()["id"]


async def probe(http: httpx.AsyncClient, box: tuple, stop: asyncio.Event, lat: dict) -> None:
    """Time a small upload and a preview at a random point, every 0.5 s, until ``stop``."""
    rng, tiny = random.Random(1), tiny_piece()
    while not stop.is_set():
        t = time.perf_counter()
        r = await http.post("/api/uploads?name=tiny.mid", content=tiny)
        lat["small upload"].append((time.perf_counter() - t, r.status_code))
        x, y = rng.uniform(box[0], box[1]), rng.uniform(box[2], box[3])
        t = time.perf_counter()
        r = await http.get("/api/preview", params={"x": f"{x:.5f}", "y": f"{y:.5f}"})
        lat["preview"].append((time.perf_counter() - t, r.status_code))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


def summary(times: list[tuple[float, int]]) -> str:
    secs = [t for t, _ in times]
    codes = Counter(c for _, c in times)
    return (f"n={len(secs)}, median {1000 * statistics.median(secs):.0f} ms, "
            f"max {1000 * max(secs):.0f} ms, statuses {dict(codes)}")  # fmt: skip


async def large_uploads(base: str, n: int, clients: int, mem: Memory, box: tuple) -> None:
    stats: Counter = Counter()
    lat: dict[str, list] = {"small upload": [], "preview": []}
    pieces = asyncio.Queue()
    for k in range(n):
        pieces.put_nowait(k)
    done = 0

    async def worker() -> None:
        nonlocal done
        async with httpx.AsyncClient(base_url=base, timeout=600) as http:
            while not pieces.empty():
                k = pieces.get_nowait()
                data = await asyncio.to_thread(large_piece, 1000 + k)
                await post_upload(http, data, stats)
                done += 1
                if done % 8 == 0:
                    print(f"  {done:3d} large uploads: {mem.line('large uploads')}", flush=True)

    mem.start("large uploads")
    stop = asyncio.Event()
    t = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, timeout=600) as http:
        prober = asyncio.create_task(probe(http, box, stop, lat))
        await asyncio.gather(*(worker() for _ in range(clients)))
        stop.set()
        await prober
    print(f"{n} large uploads (~1 MB, 170k notes) by {clients} clients: "
          f"{time.perf_counter() - t:.0f} s; {dict(stats)}")  # fmt: skip
    for what, times in lat.items():
        print(f"  {what:13s} during them: {summary(times)}")
    print(f"  {mem.line('large uploads')}")


async def render_rounds(base: str, args: argparse.Namespace, mem: Memory, box: tuple) -> None:
    """Renders at random points of ``box`` (the instruments' bounding box: far outside it,
    the server refuses coordinates, and near the map's edges the audio check may fail a
    render as noise, which would be counted as a bad clip)."""
    stats: Counter = Counter()
    barrier = asyncio.Barrier(args.clients)
    clip = args.clip

    async def client(k: int) -> None:
        rng = random.Random(k)
        async with httpx.AsyncClient(base_url=base, timeout=600) as http:
            own = await post_upload(http, random_piece(60.0, seed=k), stats)
            for r in range(args.rounds):
                if k == 0:
                    mem.start(f"round {r + 1}")
                await barrier.wait()
                t = time.perf_counter()
                upload, length = own, 60.0
                if (k + r) % 5 == 0:  # a new large upload, rendered while others come and go
                    data = await asyncio.to_thread(large_piece, 5000 + 100 * k + r)
                    upload, length = await post_upload(http, data, stats), 1000.0
                start = rng.uniform(0, length - clip)
                x, y = rng.uniform(box[0], box[1]), rng.uniform(box[2], box[3])
                body = {"upload_id": upload, "x": x, "y": y, "start": start, "end": start + clip}
                while True:
                    resp = await http.post("/api/render", json=body)
                    stats[f"render {resp.status_code}"] += 1
                    if resp.status_code != 503:
                        break
                    await asyncio.sleep(float(resp.headers["Retry-After"]))
                if resp.status_code != 202:
                    stats[f"render error: {resp.json()['error'][:60]}"] += 1
                else:
                    job, n = resp.json(), 0
                    async with http.stream("GET", f"/api/jobs/{job['id']}/audio.pcm") as s:
                        async for piece in s.aiter_bytes():
                            n += len(piece)
                    info = (await http.get(f"/api/jobs/{job['id']}")).json()
                    ok = info["state"] == "done" and n == 2 * round(clip * SAMPLE_RATE)
                    stats["clip ok" if ok else f"clip bad ({info['state']}: {info['error']})"] += 1
                    times.append(time.perf_counter() - t)
                await barrier.wait()
                if k == 0:
                    print(f"  round {r + 1:2d}: {time.perf_counter() - t:5.1f} s, "
                          f"{mem.line(f'round {r + 1}')}", flush=True)  # fmt: skip

    times: list[float] = []
    t = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(args.clients)))
    print(f"{args.clients} clients x {args.rounds} rounds of {clip:g} s clips: "
          f"{time.perf_counter() - t:.0f} s; {dict(sorted(stats.items()))}")  # fmt: skip
    print(f"  clip time incl. queue: median {statistics.median(times):.1f} s, "
          f"max {max(times):.1f} s")  # fmt: skip


async def stop_with_stream(base: str, proc: subprocess.Popen, box: tuple) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=600) as http:
        body = {"x": (box[0] + box[1]) / 2, "y": (box[2] + box[3]) / 2}
        job = (await http.post("/api/render", json=body)).json()
        async with http.stream("GET", f"/api/jobs/{job['id']}/audio.pcm") as s:
            async for _ in s.aiter_bytes():
                break  # the stream is open and audio flows
            t = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 60)
            print(f"SIGTERM with a stream open: exited ({code}) in "
                  f"{1000 * (time.perf_counter() - t):.0f} ms")  # fmt: skip


async def soak(base: str, proc: subprocess.Popen, args: argparse.Namespace) -> None:
    mem = Memory(proc.pid)
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        m = (await http.get("/api/map")).json()
        insts = [i["embedding"] for i in (await http.get("/api/info")).json()["instruments"]]
    box = (min(m["xs"]), max(m["xs"]), min(m["ys"]), max(m["ys"]))
    xs, ys = [e[0] for e in insts], [e[1] for e in insts]
    inner = (min(xs), max(xs), min(ys), max(ys))
    own, total = mem.last
    print(f"server ready: RSS {own / MB:.0f} MB (with parse workers {total / MB:.0f} MB); "
          f"load average {os.getloadavg()[0]:.1f} (2 cores)")  # fmt: skip
    await large_uploads(base, args.large, args.clients, mem, box)
    await render_rounds(base, args, mem, inner)
    peak = max(p[0] for p in mem.peak.values()), max(p[1] for p in mem.peak.values())
    print(f"peak server RSS {peak[0] / MB:.0f} MB (with parse workers {peak[1] / MB:.0f} MB); "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    mem.stop()
    await stop_with_stream(base, proc, inner)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--large", type=int, default=64, help="large uploads (64)")
    p.add_argument("--clients", type=int, default=20, help="concurrent clients (20)")
    p.add_argument("--rounds", type=int, default=10, help="render rounds per client (10)")
    p.add_argument("--clip", type=float, default=10.0, help="seconds per render (10)")
    args = p.parse_args()
    port = free_port()
    cmd = [sys.executable, "-m", "mel2mel", "serve", "--port", str(port), "--map-resolution", "9"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(proc, base)
        asyncio.run(soak(base, proc, args))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
