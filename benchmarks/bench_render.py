"""Rendering speed and memory of the public :class:`~mel2mel.synthesizer.Synthesizer`.

(a) Speed: 60 s of polyphonic MIDI (the example chorale of :mod:`mel2mel.examples`, played
    three times, first 60 s) rendered end to end with the default (fast) vocoder, with the
    acoustic model alone (:meth:`Synthesizer.mel`, same windows), with and without the
    texture post-net where the model has one, the synth lead's mel with and without its note
    beats (:mod:`mel2mel.models.beats`), the acoustic stage with and without its note
    contrast (:mod:`mel2mel.models.contrast`), and end to end with Griffin-Lim; seconds,
    times faster than real time, and the ratios.
(b) Memory: ``mel2mel render`` of a 30-minute MIDI (the chorale repeated) in a child process,
    streamed to a WAV file; its peak resident memory (``ru_maxrss`` from ``os.wait4``).

The shipped weights are used when installed; otherwise the paper-size acoustic model and a
default-size fast vocoder with random weights, whose speed is the same (said in the output).

Usage::

    nice python benchmarks/bench_render.py                    # both parts, 1 torch thread
    nice python benchmarks/bench_render.py --skip-memory --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mel2mel import constants as C
from mel2mel.examples import write_example
from mel2mel.midi import read_notes
from mel2mel.models import Instrument, build_acoustic, export, save_pretrained
from mel2mel.synthesizer import PRETRAINED_DIR, Synthesizer
from mel2mel.vocoders.fast import FastVocoder


def model_folder(folder: Path) -> tuple[Path, str]:
    """The shipped models if installed, else random paper-size ones exported to ``folder``."""
    have_acoustic = (PRETRAINED_DIR / "acoustic.json").is_file()
    have_fast = export.vocoder_path("fast").with_suffix(".json").is_file()
    if have_acoustic and have_fast:
        return PRETRAINED_DIR, "shipped weights"
    torch.manual_seed(0)
    names = [Instrument(n, p) for n, p in C.PAPER_INSTRUMENTS.items()]
    if have_acoustic:
        import shutil

        for suffix in (".json", ".safetensors"):
            shutil.copy(PRETRAINED_DIR / f"acoustic{suffix}", folder / f"acoustic{suffix}")
    else:
        save_pretrained(build_acoustic("paper", names), folder)
    if have_fast:
        stem = export.vocoder_path("fast")
        export.save_vocoder(export.load_vocoder(stem), folder / "fast_vocoder")
    else:
        export.save_vocoder(FastVocoder(), folder / "fast_vocoder")
    what = [
        "shipped acoustic" if have_acoustic else "untrained paper-size acoustic",
        "shipped fast vocoder" if have_fast else "untrained default-size fast vocoder",
    ]
    return folder, " + ".join(what) + " (speed does not depend on the weights)"


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``fn()`` over ``repeats`` runs, after one warm-up."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def with_setting(synth: Synthesizer, name: str, strength: float, fn):
    """``fn()`` with the synthesizer's ``name`` (``beats``, ``contrast``) at ``strength``."""
    saved = getattr(synth, name)
    setattr(synth, name, strength)
    try:
        return fn()
    finally:
        setattr(synth, name, saved)


def speed(folder: Path, midi: Path, seconds: float, repeats: int) -> None:
    synth = Synthesizer.from_pretrained(folder, vocoder="fast")
    seq = read_notes(midi)
    kw = {"timbre": "trumpet", "duration": seconds}
    runs = {"acoustic model alone": lambda: synth.mel(seq, texture=0, **kw)}
    if synth.texture is not None:
        runs["acoustic + texture post-net"] = lambda: synth.mel(seq, **kw)
        runs["end to end, no texture"] = lambda: synth.render(seq, texture=0, **kw)
    beats = synth.acoustic.note_beats
    if beats is not None and beats.beats_anywhere():  # the synth lead's note beats on or off
        lead = {**kw, "timbre": "synth lead", "texture": 0}
        runs["synth lead, no note beats"] = lambda: with_setting(
            synth, "beats", 0.0, lambda: synth.mel(seq, **lead)
        )
        runs["synth lead + note beats"] = lambda: synth.mel(seq, **lead)
    if synth.acoustic.note_contrast is not None:  # the note contrast on or off
        runs["acoustic, no note contrast"] = lambda: with_setting(
            synth, "contrast", 0.0, lambda: synth.mel(seq, texture=0, **kw)
        )
    runs["end to end, fast vocoder"] = lambda: synth.render(seq, **kw)
    runs["end to end, Griffin-Lim"] = lambda: synth.render(seq, vocoder="griffinlim", **kw)
    results = {name: timed(fn, repeats) for name, fn in runs.items()}
    print(f"(a) {seconds:g} s of music ({len(seq.notes)} notes in the file), median of {repeats}:")
    for name, (wall, cpu) in results.items():
        print(f"    {name:28s} {wall:6.3f} s (CPU {cpu:6.3f} s) = {seconds / wall:6.1f}x real time")
    acoustic = results["acoustic model alone"][0]
    for name in list(results)[1:]:
        print(f"    {name} / acoustic alone: {results[name][0] / acoustic:.2f}x")
    if "synth lead + note beats" in results:
        ratio = results["synth lead + note beats"][0] / results["synth lead, no note beats"][0]
        print(f"    synth lead: with note beats / without: {ratio:.2f}x")
    if "acoustic, no note contrast" in results:
        ratio = results["acoustic model alone"][0] / results["acoustic, no note contrast"][0]
        print(f"    acoustic model: with note contrast / without: {ratio:.2f}x")


def memory(folder: Path, midi: Path, threads: int) -> None:
    seconds = read_notes(midi).duration
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "long.wav"
        cmd = [sys.executable, "-m", "mel2mel", "render", str(midi), "-o", str(out), "-q",
               "--model", str(folder), "--vocoder", "fast", "--threads", str(threads)]  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        err = proc.stderr.read().decode() if proc.stderr else ""
        if status != 0:
            raise SystemExit(f"render failed: {err}")
        size = out.stat().st_size
    peak_mb = usage.ru_maxrss / 1024  # kilobytes on Linux
    print(f"(b) mel2mel render of {seconds / 60:.1f} min, streamed to WAV ({size / 1e6:.0f} MB):")
    print(f"    wall {wall:.1f} s ({seconds / wall:.1f}x real time), CPU {usage.ru_utime:.1f} s")
    print(f"    peak memory (ru_maxrss) {peak_mb:.0f} MB  (target < 2048 MB)")
    roll_mb = C.ROLL_CHANNELS * seconds * C.FRAME_RATE * 4 / 1e6
    print(f"    for scale: its whole float32 roll would be {roll_mb:.0f} MB, "
          f"its float32 audio {seconds * C.SAMPLE_RATE * 4 / 1e6:.0f} MB")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="music for part (a)")
    parser.add_argument("--minutes", type=float, default=30.0, help="music for part (b)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: shared CPU)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {args.threads} thread(s), load average {load:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        folder, what = model_folder(tmp_path)
        print(f"models: {what}")
        piece = 26.0  # seconds per repetition of the chorale, roughly
        if not args.skip_speed:
            midi = write_example(tmp_path / "short.mid", repeats=int(args.seconds // piece) + 1)
            speed(folder, midi, args.seconds, args.repeats)
        if not args.skip_memory:
            reps = int(args.minutes * 60 // piece) + 1
            memory(folder, write_example(tmp_path / "long.mid", repeats=reps), args.threads)


if __name__ == "__main__":
    main()
