"""Load: N concurrent loopback clients rendering 10-second clips; failures, 503s, server memory.

Starts the app (shipped acoustic model, 2 render workers, a queue of 24, niced) in a child
process. Each client uploads its own piece, then ``--rounds`` times asks for a 10 s clip at a
random map point, streams the PCM to the end and checks its length; a 503 is retried after
its ``Retry-After``. Meanwhile the server's resident memory is sampled every 0.25 s and
``/api/health`` is timed, to show the event loop keeps answering.

    python benchmarks/bench_web_load.py [--clients 20] [--rounds 2] [--vocoder fast]
        [--stand-in-fast]

Target: no failed request other than deliberate 503s; bounded server memory; ``/api/health``
answering within a second at the median while renders run (the tests only check that it
answers during a render; how fast is a claim about this machine's load, so it lives here).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections import Counter

import httpx
import psutil
from bench_web_common import random_piece, served_app

CLIP_SECONDS = 10.0
SAMPLE_RATE = 16_000


async def client(base: str, k: int, rounds: int, vocoder: str, stats: Counter) -> list[float]:
    """One user: upload, then ``rounds`` renders streamed to the end; their wall times."""
    rng = random.Random(k)
    times = []
    async with httpx.AsyncClient(base_url=base, timeout=300) as http:
        r = await http.post(f"/api/uploads?name=c{k}.mid", content=random_piece(60.0, seed=k))
        stats[f"upload {r.status_code}"] += 1
        if r.status_code != 201:
            stats[f"upload error: {r.json()['error'][:60]}"] += 1
        if r.status_code != 201:
            return times
        upload = r.json()["id"]
        for _ in range(rounds):
            start = rng.uniform(0, 45)
            body = {"upload_id": upload, "x": rng.uniform(-1, 2), "y": rng.uniform(-2, 1.5),
                    "start": start, "end": start + CLIP_SECONDS, "vocoder": vocoder}  # fmt: skip
            t = time.perf_counter()
            while True:
                r = await http.post("/api/render", json=body)
                stats[f"render {r.status_code}"] += 1
                if r.status_code != 503:
                    break
                await asyncio.sleep(float(r.headers["Retry-After"]))
            if r.status_code != 202:
                continue
            job = r.json()
            n = 0
            async with http.stream("GET", f"/api/jobs/{job['id']}/audio.pcm") as s:
                stats[f"stream {s.status_code}"] += 1
                async for piece in s.aiter_bytes():
                    n += len(piece)
            info = (await http.get(f"/api/jobs/{job['id']}")).json()
            ok = info["state"] == "done" and n == 2 * round(CLIP_SECONDS * SAMPLE_RATE)
            stats["clip ok" if ok else f"clip bad ({info['state']}: {info['error']})"] += 1
            times.append(time.perf_counter() - t)
    return times


async def sample(base: str, pid: int, stop: asyncio.Event, rss: list, health: list) -> None:
    proc = psutil.Process(pid)
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        while not stop.is_set():
            rss.append(sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]))
            t = time.perf_counter()
            await http.get("/api/health")
            health.append(time.perf_counter() - t)
            await asyncio.sleep(0.25)


async def run(base: str, pid: int, args: argparse.Namespace) -> None:
    stats: Counter = Counter()
    rss: list[int] = []
    health: list[float] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample(base, pid, stop, rss, health))
    t = time.perf_counter()
    jobs = [client(base, k, args.rounds, args.vocoder, stats) for k in range(args.clients)]
    per_client = await asyncio.gather(*jobs)
    wall = time.perf_counter() - t
    stop.set()
    await sampler
    clips = [x for c in per_client for x in c]
    mb = [r / 2**20 for r in rss]
    print(f"{args.clients} clients x {args.rounds} clips of {CLIP_SECONDS:g} s ({args.vocoder}): "
          f"{wall:.1f} s wall")  # fmt: skip
    for key, n in sorted(stats.items()):
        print(f"  {key:28s} {n}")
    failed = sum(n for k, n in stats.items() if not (k.endswith((" 201", " 202", " 200", " 503"))
                                                     or k == "clip ok"))  # fmt: skip
    print(f"  failed requests (not 503)    {failed}")
    print(f"  clip wall time incl. queue   median {statistics.median(clips):.1f} s, "
          f"max {max(clips):.1f} s")  # fmt: skip
    print(f"  /api/health latency          median {1000 * statistics.median(health):.0f} ms, "
          f"max {1000 * max(health):.0f} ms")  # fmt: skip
    print(f"  server RSS                   start {mb[0]:.0f} MB, max {max(mb):.0f} MB, "
          f"end {mb[-1]:.0f} MB")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--vocoder", default="fast")
    p.add_argument("--stand-in-fast", action="store_true")
    args = p.parse_args()
    with served_app(args.stand_in_fast) as (url, pid):
        asyncio.run(run(url, pid, args))


if __name__ == "__main__":
    main()
