"""How closely FluidSynth's renders from the decompressed SF3 copy match those from the SF3.

Renders one music21 chorale with each instrument twice, from the SF3 itself
(``MEL2MEL_SF3_CACHE=0``) and from its cached SF2 copy (:mod:`mel2mel.data.sf3`), and prints
per instrument: the time of each render, the largest sample difference, the share of int16
samples (as the builder stores them) that differ, and the largest log-mel difference. Usage::

    python benchmarks/check_sf3_cache.py [--piece bach/bwv66.6] [--instruments paper]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import mido
import numpy as np

from mel2mel.audio import log_mel
from mel2mel.data.corpus import convert_music21, resolve_instruments
from mel2mel.data.fluidsynth import (
    DEFAULT_SOUNDFONT,
    RenderSettings,
    force_program,
    render_midi,
    to_int16,
)
from mel2mel.data.sf3 import playable_soundfont, sf3_cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--piece", default="bach/bwv66.6", help="a music21 corpus path")
    parser.add_argument("--instruments", default=None, help="names or programs (default: paper)")
    parser.add_argument("--soundfont", default=str(DEFAULT_SOUNDFONT))
    args = parser.parse_args()

    copy = playable_soundfont(args.soundfont)
    if copy == args.soundfont:
        raise SystemExit(f"{args.soundfont} is not an SF3 file (or the cache is off)")
    with tempfile.TemporaryDirectory(prefix="m2m-sf3-") as tmp:
        compare(args, copy, Path(tmp))


def compare(args: argparse.Namespace, copy: str, work: Path) -> None:
    """Render and compare every instrument, in ``work``."""
    midi_path = work / "piece.mid"
    midi_path.write_bytes(convert_music21(args.piece))
    midi = mido.MidiFile(midi_path)
    print(f"{args.piece}, {args.soundfont} vs {copy}")
    print(f"  {'instrument':20s} {'sf3 s':>6s} {'sf2 s':>6s} {'max |diff|':>10s} "
          f"{'int16 differ':>12s} {'mel dB':>8s}")  # fmt: skip
    for inst in resolve_instruments(args.instruments):
        forced, _ = force_program(midi, inst.program)
        audio, seconds = [], []
        for cache in (False, True):
            with sf3_cache(cache):
                start = time.perf_counter()
                audio.append(render_midi(forced, RenderSettings(args.soundfont), work_dir=work))
                seconds.append(time.perf_counter() - start)
        a, b = audio
        n = min(len(a), len(b))
        differ = np.mean(to_int16(a[:n]) != to_int16(b[:n]))
        mel = np.abs(log_mel(a[:n]) - log_mel(b[:n])).max()
        print(f"  {inst.name:20s} {seconds[0]:6.2f} {seconds[1]:6.2f} "
              f"{np.abs(a[:n] - b[:n]).max():10.1e} {differ:12.1e} {mel:8.3f}"
              + ("" if len(a) == len(b) else f"  lengths {len(a)} vs {len(b)}"))  # fmt: skip


if __name__ == "__main__":
    main()
