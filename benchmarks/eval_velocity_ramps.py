"""Velocity ramps of several chords: the velocity-ramp test's measure beyond its one chord.

``tests/models/test_shipped_dynamics.py`` strikes one chord (C3-G3-C4-E4) at velocities 10, 20,
..., 120, 127 and asks every instrument's level to follow FluidSynth's within 2 dB at each step.
One chord is a sample: this plays the same ramp for several chords and single notes (default:
seven, from C2 to C5, the test's first) and reports, for each instrument, on how many of them it
passes the test, its mean signed error per velocity, and its error at the softest and loudest
strike per chord; then the share of all steps within 2 dB. The level of a strike is the mean mel
power from its onset to 0.2 s after its release, as in the test.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/eval_velocity_ramps.py [--model EXPORT] \\
        [--chord 48,55,60,64 --chord 67 ...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import mido
import numpy as np
from eval_note_detail import level_db
from eval_velocity_lift import HOLD, START, STEP, note_spans

from mel2mel import Synthesizer
from mel2mel import constants as C
from mel2mel.audio import log_mel
from mel2mel.data.fluidsynth import RenderSettings, check_soundfont, force_program, render_midi
from mel2mel.data.perform import PNote, write_midi

VELOCITIES = (10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 127)  # the test's
CHORDS = ("48,55,60,64", "36,43,48", "60,64,67,72", "72,76,79", "41,53,57,60,65", "55", "67")
TOLERANCE_DB = 2.0


def ramp_levels(
    synth: Synthesizer, chord: list[int], settings: RenderSettings, work: Path
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """FluidSynth's and the model's level (dB) at every strike of ``chord``'s ramp, per
    instrument: (want, got), float[len(VELOCITIES)] each."""
    notes = [PNote(p, START + k * STEP, START + k * STEP + HOLD, v, 0)
             for k, v in enumerate(VELOCITIES) for p in chord]  # fmt: skip
    midi = work / "ramp.mid"
    midi.write_bytes(write_midi(notes))
    spans = note_spans(len(VELOCITIES))
    out = {}
    for name, program in C.PAPER_INSTRUMENTS.items():
        forced, _ = force_program(mido.MidiFile(midi), program)
        true = log_mel(render_midi(forced, settings, work_dir=work))
        pred = synth.mel(midi, timbre=name, texture=0)
        out[name] = (
            np.array([level_db(true[:, s]) for s in spans]),
            np.array([level_db(pred[:, s]) for s in spans]),
        )
    return out


def passes(want: np.ndarray, got: np.ndarray) -> bool:
    """The test's verdict: the model's ramp rises at every step and stays within the
    tolerance of FluidSynth's."""
    return bool(np.all(np.diff(got) > 0) and np.abs(got - want).max() <= TOLERANCE_DB)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="acoustic export (default: the shipped model)")
    ap.add_argument(
        "--chord", action="append", help="MIDI keys, comma-separated (repeatable; default: 7)"
    )
    args = ap.parse_args()
    chords = [[int(k) for k in c.split(",")] for c in (args.chord or CHORDS)]
    synth = Synthesizer.from_pretrained(args.model, vocoder="griffinlim", timbre_library=False)
    settings = RenderSettings(str(check_soundfont(None)))
    work = Path(tempfile.mkdtemp())
    levels = [ramp_levels(synth, chord, settings, work) for chord in chords]
    print(f"{len(chords)} ramps: " + "  ".join("-".join(map(str, c)) for c in chords))
    print("instrument: ramps passed; mean error per velocity (dB); error at the softest and"
          " loudest strike per ramp")  # fmt: skip
    for name in C.PAPER_INSTRUMENTS:
        e = np.array([got - want for want, got in (ramp[name] for ramp in levels)])
        ok = sum(passes(*ramp[name]) for ramp in levels)
        print(
            f"{name:18s} {ok}/{len(chords)}  {np.round(e.mean(0), 1)}  "
            f"v{VELOCITIES[0]} {np.round(e[:, 0], 1)}  v{VELOCITIES[-1]} {np.round(e[:, -1], 1)}"
        )
    every = np.array([[got - want for want, got in ramp.values()] for ramp in levels])
    first = sum(passes(*pair) for pair in levels[0].values())
    print(
        f"steps within {TOLERANCE_DB:g} dB: {100 * np.mean(np.abs(every) <= TOLERANCE_DB):.1f} %"
        f" of {every.size}; mean |error| {np.abs(every).mean():.2f} dB; the first ramp passes"
        f" for {first} of {len(C.PAPER_INSTRUMENTS)} instruments"
    )


if __name__ == "__main__":
    main()
