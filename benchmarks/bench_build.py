"""Wall time of ``mel2mel data build`` against FluidSynth rendering alone.

A fixed set of music21 pieces is converted to MIDI and program-forced for each instrument
(untimed). Then, in the same invocation and with the same number of parallel processes:

* ``fluidsynth``: the FluidSynth command the builder runs (raw float output, dynamic sample
  loading, an SF3 read from its decompressed copy), on the forced files, ``--workers`` at a
  time: the floor any builder must pay;
* ``builder``: ``python -m mel2mel data build`` on the MIDI folder, as a user runs it (Python
  start-up, imports, rolls, rendering, log-mels, files, manifest);
* ``fluidsynth sf3`` and ``builder sf3``: the same with ``MEL2MEL_SF3_CACHE=0``, FluidSynth
  decoding the SF3's samples in every run (the builder before the cache);
* ``fluidsynth -F plain`` (with ``--plain``): ``fluidsynth -ni -q -r 16000 -F out.wav sf mid``
  with every other option at its default, i.e. what a naive script would run.

Each measurement is repeated ``--repeats`` times (alternating) and the fastest is reported,
as wall time and as the CPU time of all child processes (less sensitive to other load).
Target: builder <= 1.5 x fluidsynth. Example::

    python benchmarks/bench_build.py --workers 2 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mido

from mel2mel.data.corpus import convert_music21, music21_id, resolve_instruments
from mel2mel.data.fluidsynth import (
    DEFAULT_SOUNDFONT,
    RenderSettings,
    find_fluidsynth,
    force_program,
    run_fluidsynth,
)
from mel2mel.data.sf3 import playable_soundfont, sf3_cache

# Six chorales (~20-70 s) and two longer pieces (~20 s and ~90 s of music).
BENCH_PIECES = (
    "bach/bwv1.6",
    "bach/bwv2.6",
    "bach/bwv3.6",
    "bach/bwv4.8",
    "bach/bwv5.7",
    "bach/bwv6.6",
    "mozart/k545/movement1_exposition",
    "haydn/opus1no1/movement1",
)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # every reaped descendant
    return usage.ru_utime + usage.ru_stime


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds of ``fn``; the CPU time is that of its child processes."""
    start, cpu = time.perf_counter(), _cpu()
    fn()
    return time.perf_counter() - start, _cpu() - cpu


def _parallel(jobs: list[Callable[[], object]], workers: int) -> None:
    with ThreadPoolExecutor(workers) as pool:
        for f in [pool.submit(job) for job in jobs]:
            f.result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pieces", type=int, default=len(BENCH_PIECES))
    parser.add_argument("--instruments", default="Grand Piano,Trumpet")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--plain", action="store_true", help="also time plain fluidsynth -F")
    parser.add_argument("--keep", type=Path, help="keep the work folder here")
    args = parser.parse_args()

    work = Path(args.keep or tempfile.mkdtemp(prefix="m2m-bench-"))
    midi_dir, forced_dir = work / "midi", work / "forced"
    for d in (midi_dir, forced_dir):
        d.mkdir(parents=True, exist_ok=True)
    instruments = resolve_instruments(args.instruments)
    settings = RenderSettings(str(DEFAULT_SOUNDFONT))
    with sf3_cache(True):
        playable_soundfont(settings.soundfont)  # made once, untimed (as a first build does)
    print(f"preparing {args.pieces} pieces x {len(instruments)} instruments in {work} ...")
    forced: list[Path] = []
    for name in BENCH_PIECES[: args.pieces]:
        src = midi_dir / f"{music21_id(name)}.mid"
        if not src.exists():
            src.write_bytes(convert_music21(name))
        for inst in instruments:
            dst = forced_dir / f"{src.stem}__{inst.slug}.mid"
            force_program(mido.MidiFile(src), inst.program)[0].save(dst)
            forced.append(dst)

    def fluidsynth_same() -> None:
        jobs = [lambda f=f: run_fluidsynth(f, f.with_suffix(".raw"), settings) for f in forced]
        _parallel(jobs, args.workers)

    def fluidsynth_plain() -> None:
        fs = find_fluidsynth()
        cmd = [fs, "-ni", "-q", "-r", "16000", "-F"]
        jobs = [
            lambda f=f: subprocess.run(
                [*cmd, str(f.with_suffix(".wav")), str(DEFAULT_SOUNDFONT), str(f)], check=True
            )
            for f in forced
        ]
        _parallel(jobs, args.workers)

    def builder() -> None:
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "mel2mel", "data", "build", "--out", str(out)]
        cmd += ["--midi-dir", str(midi_dir), "--instruments", args.instruments]
        cmd += ["--workers", str(args.workers), "--no-progress"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)

    def cache(on: bool, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            with sf3_cache(on):
                fn()

        return run

    runs = {
        "fluidsynth": cache(True, fluidsynth_same),
        "builder": cache(True, builder),
        "fluidsynth sf3": cache(False, fluidsynth_same),
        "builder sf3": cache(False, builder),
    }
    if args.plain:
        runs["fluidsynth -F plain"] = fluidsynth_plain
    best = {name: (float("inf"), float("inf")) for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            wall, cpu = _timed(fn)
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    audio_min = sum(f.with_suffix(".raw").stat().st_size for f in forced) / 8 / 16000 / 60
    print(
        f"{len(forced)} items ({audio_min:.1f} min of audio), {args.workers} workers, "
        f"best of {args.repeats}:"
    )
    print(f"  {'':30s} {'wall':>5s}     {'CPU':>5s}")
    for name, (wall, cpu) in best.items():
        print(f"  {name:30s} {wall:5.1f} s   {cpu:5.1f} s")
    ratios = [("builder", n) for n in runs if n != "builder"]
    ratios.insert(1, ("builder sf3", "fluidsynth sf3"))
    for num, den in ratios:
        wall = best[num][0] / best[den][0]
        cpu = best[num][1] / best[den][1]
        target = "  (target <= 1.5)" if den == "fluidsynth" else ""
        print(f"  {num + ' / ' + den:30s} {wall:5.2f} x {cpu:5.2f} x{target}")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
