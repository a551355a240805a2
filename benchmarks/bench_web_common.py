"""Shared parts of the web benchmarks: a server in a child process, pieces made in code.

``python benchmarks/bench_web_common.py --port P [--stand-in-fast]`` runs the app on
127.0.0.1 with the shipped acoustic model (a 9 x 9 timbre map, to start sooner);
``--stand-in-fast`` offers an *untrained* fast vocoder of the default size when no trained one
is installed (same architecture, so the same speed; the audio is noise), so the fast-vocoder
timings can be measured before the weights ship.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mido
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def random_piece(seconds: float, seed: int = 0, notes_per_second: float = 6.0) -> bytes:
    """A type-0 MIDI file of random chords and a melody, ``seconds`` long."""
    rng = np.random.default_rng(seed)
    events = []
    n = int(seconds * notes_per_second)
    for _ in range(n):
        start = rng.uniform(0, seconds - 0.5)
        dur = rng.uniform(0.15, 1.2)
        pitch = int(rng.integers(40, 88))
        vel = int(rng.integers(50, 110))
        events.append((start, mido.Message("note_on", note=pitch, velocity=vel)))
        events.append((min(seconds, start + dur), mido.Message("note_off", note=pitch)))
    events.sort(key=lambda e: (e[0], e[1].type == "note_on"))
    midi = mido.MidiFile(type=0, ticks_per_beat=480)  # 120 bpm: 960 ticks per second
    track, last = mido.MidiTrack(), 0
    for t, msg in events:
        tick = round(t * 960)
        track.append(msg.copy(time=tick - last))
        last = tick
    midi.tracks.append(track)
    buf = io.BytesIO()
    midi.save(file=buf)
    return buf.getvalue()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_ready(proc: subprocess.Popen, base: str, timeout: float = 900.0) -> None:
    """Poll ``base``/api/map until the server answers 200 (the map takes minutes on a busy
    machine); raise ``RuntimeError`` if the process exits or ``timeout`` seconds pass."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/api/map", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("the server exited")
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not become ready")
        time.sleep(0.5)


@contextlib.contextmanager
def served_app(stand_in_fast: bool, workers: int = 2, queue: int = 24) -> Iterator[tuple[str, int]]:
    """Run the app in a child process (niced, one torch thread) on a free port, wait until it
    answers, yield ``(base URL, pid)``, and stop it; print the load average before and after."""

    port = free_port()
    cmd = [sys.executable, __file__, "--port", str(port), "--workers", str(workers),
           "--queue", str(queue)]  # fmt: skip
    if stand_in_fast:
        cmd.append("--stand-in-fast")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(["nice", "-n", "10", *cmd], env=env, cwd=ROOT)
    try:
        wait_until_ready(proc, f"http://127.0.0.1:{port}")
        print(f"load average at start: {os.getloadavg()[0]:.2f} (2 CPU cores)")
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


def serve(args: argparse.Namespace) -> None:
    import torch
    import uvicorn

    from mel2mel.synthesizer import Synthesizer
    from mel2mel.web.app import available_vocoders, create_app
    from mel2mel.web.config import WebConfig

    torch.set_num_threads(1)
    synth = Synthesizer.from_pretrained(vocoder="griffinlim")
    vocoders = available_vocoders(synth)
    if args.stand_in_fast and "fast" not in vocoders:
        from mel2mel.vocoders.fast import FastVocoder

        vocoders = {"fast": FastVocoder().eval(), **vocoders}
    config = WebConfig(max_concurrent_renders=args.workers, max_queued_renders=args.queue)
    app = create_app(synth, config=config, vocoders=vocoders, map_resolution=9)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--queue", type=int, default=24)
    p.add_argument("--stand-in-fast", action="store_true")
    serve(p.parse_args())
