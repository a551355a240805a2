"""Fixtures of the web tests: tiny models, a 100-instrument space of our own, MIDI in bytes.

Nothing here needs the shipped weights: the 2-D model is the debug acoustic preset with three
instruments, the "100-instrument" space is 12 instruments of a debug model with a 10-D
embedding, and the vocoder is a 4-iteration Griffin-Lim, so a render of a few seconds takes
well under a second on one core.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import mido
import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="needs the [web] extra: pip install 'mel2mel[web]'")

from mel2mel.models import AcousticConfig, Instrument, Mel2Mel, save_pretrained
from mel2mel.models.export import model_fingerprint
from mel2mel.synthesizer import Synthesizer
from mel2mel.timbre.library import TimbreLibrary, UserTimbre
from mel2mel.vocoders.griffinlim import GriffinLim
from mel2mel.web.config import WebConfig
from mel2mel.web.maps import Space

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
SPACE_SIZE = 12


def tiny_model(n: int, dim: int, seed: int = 0) -> Mel2Mel:
    """A debug-preset acoustic model with ``n`` instruments and a ``dim``-D embedding."""
    torch.manual_seed(seed)
    names = [("Grand Piano", 0), ("Trumpet", 56), ("Church Organ", 19)]
    insts = [Instrument(*names[k]) if k < 3 else Instrument(f"Inst {k}", k) for k in range(n)]
    model = Mel2Mel(
        AcousticConfig.preset("debug", n_instruments=n, embedding_dim=dim), insts
    ).eval()
    with torch.no_grad():  # make the instrument (and so the map) matter
        for p in (*model.film_in.parameters(), *model.film_out.parameters()):
            p.normal_(0, 0.5)
        model.embedding.weight.normal_(0, 1.0)
    return model


def midi_bytes(
    seconds: float = 3.0, channel: int = 0, step: float = 0.25, first: int = 60
) -> bytes:
    """A type-1 MIDI file of notes every ``step`` seconds for ``seconds`` seconds."""
    midi = mido.MidiFile(type=1, ticks_per_beat=480)  # 120 bpm: 960 ticks per second
    midi.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500_000)]))
    track = mido.MidiTrack()
    n = max(1, round(seconds / step))
    for i in range(n):
        pitch = first + (i * 5) % 24
        track.append(mido.Message("note_on", channel=channel, note=pitch, velocity=90, time=0))
        track.append(mido.Message("note_off", channel=channel, note=pitch, time=round(step * 960)))
    midi.tracks.append(track)
    buf = io.BytesIO()
    midi.save(file=buf)
    return buf.getvalue()


def make_space(folder: Path) -> Space:
    """A space JSON and a 10-D debug model in ``folder``."""
    model = tiny_model(SPACE_SIZE, 10, seed=1)
    save_pretrained(model, folder / "acoustic100")
    rng = np.random.default_rng(0)
    table = model.embedding.weight.detach().numpy()
    instruments = []
    for k in range(SPACE_SIZE):
        c = int(rng.integers(0, 255))
        instruments.append({
            "name": model.instruments[k].name, "soundfont": "Test.sf2", "program": k, "index": k,
            "embedding": table[k].tolist(), "position": rng.uniform(-1, 1, 3).tolist(),
            "centroid_hz": 500.0 + 100 * k, "energy_db": -30.0 + k,
            "color_centroid": f"#{c:02x}40{255 - c:02x}", "color_energy": f"#40{c:02x}80",
        })  # fmt: skip
    path = folder / "space100.json"
    path.write_text(json.dumps({"format": 1, "instruments": instruments}))
    return Space(path, folder / "acoustic100")


@pytest.fixture(scope="session")
def web_synth(tmp_path_factory: pytest.TempPathFactory) -> Synthesizer:
    """The tiny 2-D synthesizer, with a library holding one learned timbre, "My Bell"."""
    model = tiny_model(3, 2)
    library = TimbreLibrary(tmp_path_factory.mktemp("timbres"))
    library.save(UserTimbre("My Bell", (0.3, -0.2), model_fingerprint(model)))
    gl = GriffinLim(n_iter=4, nnls_iterations=2)
    return Synthesizer(model, gl, timbre_library=library)


@pytest.fixture(scope="session")
def web_parts(tmp_path_factory: pytest.TempPathFactory, web_synth: Synthesizer) -> dict:
    """Everything create_app needs besides the config: synth, space, vocoders."""
    return {
        "synth": web_synth,
        "space": make_space(tmp_path_factory.mktemp("space")),
        "vocoders": {"griffinlim": GriffinLim(n_iter=4, nnls_iterations=2)},
        "map_resolution": 9,
        "soundfont_cache": tmp_path_factory.mktemp("soundfont-samples"),
    }


TEST_CONFIG = WebConfig(
    max_upload_bytes=64 * 1024,
    max_piece_seconds=120.0,
    max_render_seconds=60.0,
    max_concurrent_renders=1,
    max_queued_renders=4,
    space_clip_seconds=2.0,
    torch_threads=1,
)


def wait_until(condition: Callable[[], object], what: str, timeout: float = 120.0) -> object:
    """Poll ``condition`` until it returns something truthy, and return that; after
    ``timeout`` seconds fail saying ``what`` never happened.

    The deadline is generous on purpose: it only bounds a hang, it is not a speed claim (those
    live in ``benchmarks/``), and the suite may share the CPU with a training run.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}")
        time.sleep(0.02)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_app(app, **kwargs) -> Iterator[str]:
    """Run ``app`` as ``mel2mel serve`` does (:func:`mel2mel.web.server.server`: uvicorn with
    the app's deadlines) in a thread, on a free port; yield its base URL."""
    from mel2mel.web.server import server as make_server

    port = free_port()
    server = make_server(app, host="127.0.0.1", port=port, **kwargs)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), "the test server to start")
    assert server.started, "the test server stopped before it started (see its log above)"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def live_server(web_parts: dict) -> Iterator[str]:
    """The app on uvicorn in a thread, on a free port; yields its base URL."""
    from mel2mel.web.app import create_app

    with serve_app(create_app(config=TEST_CONFIG, **web_parts)) as url:
        yield url
