"""Shared fixtures: datasets for the training and evaluation tests, MIDI files written in code.

* ``synthetic_dataset``: the on-disk layout filled with synthetic rolls and mels (no audio
  content, no FluidSynth), 6 pieces (4 train, 1 valid, 1 test) x 2 instruments, 300 frames;
* ``real_dataset``: 4 short tunes of random chords rendered by the real builder with the small
  TimGM6mb SoundFont (grand piano and trumpet), one piece per split plus one more for training;
* ``tiny_dataset``: 2 short pieces x 2 instruments rendered with MuseScore General, and a
  corrupt MIDI file that the builder skips (the data-builder tests);
* :func:`piano_trumpet_model`: a debug-size Mel2Mel with two instruments that sound apart;
* :func:`train_two_ranks` and :func:`state_max_diff`: a training function run by 2 CPU
  processes on gloo, and the comparison of their weights (the distributed tests);
* under CI (``CI=true``) a skipped test fails, unless :data:`CI_ALLOWED_SKIPS` names it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

import mido
import numpy as np
import pytest

SOUNDFONT = Path("/usr/share/sounds/sf3/MuseScore_General.sf3")
SMALL_SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
TICKS_PER_SECOND = 960  # 480 ticks per beat at the default 120 bpm

HAVE_FLUIDSYNTH = shutil.which("fluidsynth") is not None
requires_fluidsynth = pytest.mark.skipif(
    not HAVE_FLUIDSYNTH or not SOUNDFONT.is_file(),
    reason="needs the fluidsynth program and MuseScore General (Debian packages "
    "fluidsynth, musescore-general-soundfont)",
)

# -- CI: a skipped test is a test that did not run ------------------------------------------

# CI installs every optional part (scripts/install.sh: FluidSynth and the SoundFonts, the
# [dev] extra with [data,train,web], chromium), so there a skip means a check silently did not
# run: under CI=true it fails instead, with its reason. Only the tests named here may skip in
# CI, each for the reason beside it (a node id, or the start of one before "[" or "::").
CI_ALLOWED_SKIPS: dict[str, str] = {}
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


class CiSkipGuard:
    """Under CI, fails the run on any skip outside :data:`CI_ALLOWED_SKIPS`.

    A skipped test is reported as failed (or as an error at setup), with its reason. A skip at
    collection (``importorskip`` in a test file or a conftest skips whole files) is listed at
    the end and fails the session: turning it into a collection error would stop the run.
    Registered as a plugin, not as conftest hooks, so that it also sees the collection of a
    folder whose conftest skipped.
    """

    def __init__(self, allowed: dict[str, str]) -> None:
        self.allowed = allowed
        self.collect_skips: list[str] = []

    def message(self, report: pytest.CollectReport | pytest.TestReport) -> str | None:
        """Why this report fails the run, or None when it may stand."""
        if not report.skipped or hasattr(report, "wasxfail"):
            return None
        node = report.nodeid
        if any(node == k or node.startswith((f"{k}[", f"{k}::")) for k in self.allowed):
            return None
        why = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        return (
            f"skipped under CI=true ({why}); install what it needs, or name it with the "
            "reason in CI_ALLOWED_SKIPS (tests/conftest.py)"
        )

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        outcome = yield
        report = outcome.get_result()
        message = self.message(report)
        if message:
            report.outcome, report.longrepr = "failed", message

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        message = self.message(report)
        if message:
            self.collect_skips.append(f"{report.nodeid or '.'}: {message}")

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.collect_skips:
            terminalreporter.section("files skipped under CI=true (the run fails)", red=True)
            for line in self.collect_skips:
                terminalreporter.line(line, red=True)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.collect_skips and exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config: pytest.Config) -> None:
    if IN_CI:
        config.pluginmanager.register(CiSkipGuard(CI_ALLOWED_SKIPS), "mel2mel-ci-skip-guard")


# -- synthetic dataset (no rendering) ---------------------------------------------------------

SYNTH_FRAMES = 300
SYNTH_SPLITS = ("train", "train", "train", "train", "valid", "test")


def make_synthetic_dataset(root: Path) -> Path:
    """Write a small dataset in the builder's layout from random rolls.

    The mel of instrument ``i`` is ``log(max(A_i @ frames, 1e-5))`` for a fixed random
    non-negative matrix ``A_i``, so it is a learnable function of roll and instrument. Audio is
    silence of the right length.
    """
    root = Path(root)
    (root / "rolls").mkdir(parents=True, exist_ok=True)
    instruments = [{"name": f"Synth {k}", "program": 80 + k} for k in range(2)]
    mixes = [np.random.default_rng(100 + k).uniform(0.0, 1.5, (80, 88)) for k in range(2)]
    n_samples = (SYNTH_FRAMES - 1) * 128
    pieces, items = [], []
    for p, split in enumerate(SYNTH_SPLITS):
        piece = f"piece{p}"
        rng = np.random.default_rng(p)
        roll = np.zeros((176, SYNTH_FRAMES), dtype=np.uint8)
        for _ in range(25):
            key, start = int(rng.integers(20, 70)), int(rng.integers(0, 290))
            length, vel = int(rng.integers(10, 80)), int(rng.integers(30, 128))
            roll[key, start : start + length] = vel
            roll[88 + key, start] = vel
        np.save(root / "rolls" / f"{piece}.npy", roll)
        meta = {"piece": piece, "split": split, "frames": SYNTH_FRAMES}
        (root / "rolls" / f"{piece}.json").write_text(json.dumps(meta))
        pieces.append({"id": piece, "split": split, "frames": SYNTH_FRAMES})
        (root / "items" / piece).mkdir(parents=True, exist_ok=True)
        for k, inst in enumerate(instruments):
            slug = f"synth_{k}"
            mel = np.log(np.maximum(mixes[k] @ (roll[:88] / 127.0), 1e-5))
            base = root / "items" / piece / slug
            np.save(f"{base}.mel.npy", mel.astype(np.float16))
            np.save(f"{base}.audio.npy", np.zeros(n_samples, dtype=np.int16))
            item = {"id": f"{piece}/{slug}", "piece": piece, "instrument": inst["name"]}
            Path(f"{base}.json").write_text(json.dumps(item))
            items.append(
                {"id": f"{piece}/{slug}", "piece": piece, "instrument": k, "split": split,
                 "frames": SYNTH_FRAMES}
            )  # fmt: skip
    manifest = {"format": 1, "instruments": instruments, "items": items, "pieces": pieces}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return root


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "data")


# -- MIDI written in code ---------------------------------------------------------------------

# (pitch, start s, duration s, velocity)
NoteSpec = tuple[int, float, float, int]


def write_midi(
    path: Path,
    notes: Sequence[NoteSpec],
    *,
    channel: int = 0,
    program: int | None = None,
    extra: Sequence[tuple[float, mido.Message]] = (),
) -> Path:
    """Write a type-1 MIDI file: a tempo track and one track with ``notes`` (+ ``extra``)."""
    events: list[tuple[int, int, mido.Message]] = []
    for pitch, start, dur, vel in notes:
        on, off = round(start * TICKS_PER_SECOND), round((start + dur) * TICKS_PER_SECOND)
        events.append((on, 1, mido.Message("note_on", channel=channel, note=pitch, velocity=vel)))
        events.append((off, 0, mido.Message("note_off", channel=channel, note=pitch)))
    events += [(round(t * TICKS_PER_SECOND), 1, m) for t, m in extra]
    events.sort(key=lambda e: (e[0], e[1]))
    midi = mido.MidiFile(type=1, ticks_per_beat=480)
    midi.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500_000)]))
    track = mido.MidiTrack()
    if program is not None:
        track.append(mido.Message("program_change", channel=channel, program=program))
    last = 0
    for tick, _, msg in events:
        track.append(msg.copy(time=tick - last))
        last = tick
    midi.tracks.append(track)
    midi.save(path)
    return path


@pytest.fixture
def midi_writer() -> Callable[..., Path]:
    """The :func:`write_midi` helper, for tests that build their own files."""
    return write_midi


# The real-data tunes: chords as "pitch.pitch/velocity/duration in ticks" (480 per beat, 120 bpm).
TUNES = {
    0: "74.50/82/240 67.78/87/240 56/58/240 64/95/480 57.67.54/54/480 69.78.54/77/240 "
    "61.78.76/66/480 48.53.73/102/480 48.79.69/96/120 60/64/480 57/78/480 53/106/240",
    1: "52/57/240 76.78/74/480 54/51/240 75.48/78/480 62.54.68/51/120 48.72.61/96/240 76/85/240 "
    "70/93/120 77/109/240 74/109/480 54.59.66/97/120 75.60.67/87/240",
    12: "53/73/120 67/88/240 50/93/480 75/75/480 71.76.65/105/120 68.72/107/240 58.59.63/51/120 "
    "56/82/480 59.76/97/240 70.71/60/240 77.63/67/240 70.77/72/240",
    20: "56/108/240 78.52.48/66/240 78/103/480 78.73.57/90/120 72.48.52/98/120 49.65/88/240 "
    "75.73/101/480 56.71/52/120 61.64/77/480 67.74.72/72/480 62.69/108/480 65/92/480",
}


def tune_notes(spec: str) -> list[NoteSpec]:
    """Notes of a :data:`TUNES` entry, each chord starting when the previous one ends."""
    notes, t = [], 0.0
    for chord in spec.split():
        pitches, vel, ticks = chord.split("/")
        dur = int(ticks) / TICKS_PER_SECOND
        notes += [(int(p), t, dur, int(vel)) for p in pitches.split(".")]
        t += dur
    return notes


@pytest.fixture(scope="session")
def real_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four short tunes x grand piano and trumpet, built with FluidSynth and TimGM6mb.

    The tune names are chosen for their splits: tune0 and tune1 train, tune12 test, tune20 valid.
    """
    if not HAVE_FLUIDSYNTH or not SMALL_SOUNDFONT.is_file():
        pytest.skip("needs fluidsynth and the TimGM6mb SoundFont")
    from mel2mel.data.build import build_dataset

    base = tmp_path_factory.mktemp("real")
    (base / "midi").mkdir()
    for n, spec in TUNES.items():
        write_midi(base / "midi" / f"tune{n}.mid", tune_notes(spec))
    build_dataset(
        base / "data",
        midi_dir=base / "midi",
        instruments="Grand Piano,Trumpet",
        soundfont=SMALL_SOUNDFONT,
        progress=False,
    )
    return base / "data"


# -- the data builder's tiny dataset ----------------------------------------------------------

# Piece names chosen for their stable hashes: "canon" is in train and shard 0 of 2, "scale" in
# valid and shard 1 of 2.
CANON: list[NoteSpec] = [(60, 0.2, 1.0, 90), (64, 0.2, 1.0, 80), (67, 0.7, 1.2, 100),
                         (72, 1.4, 0.8, 70), (48, 1.9, 0.9, 110)]  # fmt: skip
SCALE: list[NoteSpec] = [(62 + 2 * i, 0.15 + 0.3 * i, 0.28, 96) for i in range(6)]
TINY_INSTRUMENTS = "Grand Piano,Trumpet"


def make_tiny_inputs(folder: Path) -> Path:
    """Two short MIDI files and one corrupt one in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    write_midi(folder / "canon.mid", CANON, program=40)
    write_midi(folder / "scale.mid", SCALE)
    (folder / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01garbage")
    return folder


@pytest.fixture(scope="session")
def tiny_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_inputs(tmp_path_factory.mktemp("tiny") / "midi")


@pytest.fixture(scope="session")
def tiny_dataset(tiny_inputs: Path) -> Path:
    """2 pieces x 2 instruments built once per session (plus the skipped corrupt file).

    Read-only: tests that change files work on a copy (``shutil.copytree``).
    """
    if not HAVE_FLUIDSYNTH or not SOUNDFONT.is_file():
        pytest.skip("needs fluidsynth and MuseScore General")
    from mel2mel.data.build import build_dataset

    out = tiny_inputs.parent / "dataset"
    report = build_dataset(
        out, midi_dir=tiny_inputs, instruments=TINY_INSTRUMENTS, workers=2, progress=False
    )
    assert report.items_built == 4 and not report.failed
    return out


@pytest.fixture
def single_thread():
    """Run a test with one torch thread: tiny models gain nothing from more, and on a busy
    shared machine a second spinning OpenMP thread can slow a test down many times."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# -- distributed training with 2 CPU processes ---------------------------------------------


def state_max_diff(a: dict, b: dict) -> float:
    """Largest absolute difference between two state dicts with the same keys."""
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(rank: int, world: int, port: int, train: Callable, data: str, out: str) -> None:
    import torch

    from mel2mel.train.distributed import cleanup_distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))  # fmt: skip
    torch.set_num_threads(1)
    model = train(data, Path(out) / "run")
    torch.save(model.state_dict(), Path(out) / f"rank{rank}.pt")
    cleanup_distributed()


def train_two_ranks(train: Callable[[str, Path], object], data: Path, out: Path) -> list[dict]:
    """Run ``train(data, out / "run") -> model`` (a module-level function) in 2 spawned
    processes on gloo, as torchrun would, and return each rank's final weights."""
    import torch
    import torch.multiprocessing as mp

    mp.start_processes(
        _rank_worker,
        args=(2, _free_port(), train, str(data), str(out)),
        nprocs=2,
        start_method="spawn",
    )
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


# -- a tiny acoustic model ---------------------------------------------------------------


def piano_trumpet_model(seed: int = 0):
    """A debug-size :class:`~mel2mel.models.Mel2Mel` with Grand Piano and Trumpet, in eval
    mode; its FiLM layers (identity at init) are randomized so that the instrument matters."""
    return debug_model([("Grand Piano", 0), ("Trumpet", 56)], seed)


def debug_model(instruments: Sequence[tuple[str, int]], seed: int = 0):
    """A debug-size Mel2Mel with these (name, program) instruments, FiLM randomized."""
    import torch

    from mel2mel.models import AcousticConfig, Instrument, Mel2Mel

    torch.manual_seed(seed)
    model = Mel2Mel(
        AcousticConfig.preset("debug", n_instruments=len(instruments)),
        [Instrument(name, program) for name, program in instruments],
    )
    with torch.no_grad():
        for p in (*model.film_in.parameters(), *model.film_out.parameters()):
            p.normal_(0, 0.5)
    return model.eval()


def mild_heights(model) -> None:
    """Give a test model's harmonic heights (if any) a few nepers, as trained models learn (up
    to about 3): heights of tens of nepers, as the N(0, 0.5) draws that tests give other maps
    would make, cancel the combs down to rounding noise, where no two orders of summation
    agree."""
    import torch

    if model.harmonic is not None and model.harmonic.heights is not None:
        with torch.no_grad():
            for p in model.harmonic.heights.parameters():
                p.normal_(0, 0.05)
