"""Would a velocity gain help soft notes? Drawn directly, or drawn louder and turned down.

FluidSynth plays a softer strike of a note mostly as the same sound, quieter: the SoundFont's
velocity-to-attenuation curve (docs/MODELS.md, "Stop 29"). The acoustic model has to learn
that through its LSTM, and draws soft notes alone too quiet and with their partials too low.
This measures what a gain path would win, without training one: single notes C2-C7 (every
``--step`` keys, each held 1 s, 0.5 s apart) at the soft velocity ``--low``, for each of the
ten instruments,

* **direct**: the model's mel of the notes at ``--low``;
* **lifted**: the model's mel of the same notes at ``--high``, moved down by one gain per
  instrument, FluidSynth's own: the median over the notes of its level at ``--high`` less its
  level at ``--low`` (floored at the analysis floor afterwards).

Both are compared with FluidSynth's render at ``--low`` over each note (onset to 0.2 s after
the release): the level error (dB, absolute), the MAE over all bins (dB) and the signed error
of the 5 bins loudest in FluidSynth's mel (dB). The gain is measured on the same notes, one
number per instrument: what a learned per-instrument velocity gain could at best recover.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/eval_velocity_lift.py [--model EXPORT] \\
        [--low 10] [--high 40] [--step 6]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import mido
import numpy as np
from eval_note_detail import level_db

from mel2mel import Synthesizer
from mel2mel import constants as C
from mel2mel.audio import log_mel
from mel2mel.constants import DB_PER_NEPER, LOG_SILENCE
from mel2mel.data.fluidsynth import RenderSettings, check_soundfont, force_program, render_midi
from mel2mel.data.perform import PNote, write_midi

START, STEP, HOLD = 0.2, 1.5, 1.0  # seconds: first onset, onset to onset, held
PEAK_BINS = 5


def note_spans(count: int) -> list[slice]:
    """Frames of each note: from its onset to 0.2 s after its release."""
    onsets = [round((START + k * STEP) * C.FRAME_RATE) for k in range(count)]
    return [slice(a, a + round((HOLD + 0.2) * C.FRAME_RATE)) for a in onsets]


def scores(pred: np.ndarray, true: np.ndarray, spans: list[slice]) -> tuple[float, float, float]:
    """Mean over the notes of (|level error|, MAE, loudest bins' signed error), dB."""
    rows = []
    for s in spans:
        p, t = pred[:, s], true[:, s]
        peaks = np.argsort(t.mean(1))[-PEAK_BINS:]
        rows.append(
            (
                abs(level_db(p) - level_db(t)),
                float(np.abs(p - t).mean()) * DB_PER_NEPER,
                float(p[peaks].mean() - t[peaks].mean()) * DB_PER_NEPER,
            )
        )
    return tuple(np.mean(rows, axis=0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="acoustic export (default: the shipped model)")
    ap.add_argument("--low", type=int, default=10, help="the soft velocity")
    ap.add_argument("--high", type=int, default=40, help="the velocity drawn and turned down")
    ap.add_argument("--step", type=int, default=6, help="keys between notes, C2 upwards")
    args = ap.parse_args()
    synth = Synthesizer.from_pretrained(args.model, vocoder="griffinlim", timbre_library=False)
    pitches = list(range(36, 97, args.step))
    spans = note_spans(len(pitches))
    settings = RenderSettings(str(check_soundfont(None)))
    work = Path(tempfile.mkdtemp())
    totals: dict[str, list[tuple[float, float, float]]] = {"direct": [], "lifted": []}
    for name, program in C.PAPER_INSTRUMENTS.items():
        mels, truths = {}, {}
        for v in (args.low, args.high):
            notes = [PNote(p, START + k * STEP, START + k * STEP + HOLD, v, 0) for k, p in
                     enumerate(pitches)]  # fmt: skip
            midi = work / f"v{v}.mid"
            midi.write_bytes(write_midi(notes))
            forced, _ = force_program(mido.MidiFile(midi), program)
            truths[v] = log_mel(render_midi(forced, settings, work_dir=work))
            mels[v] = synth.mel(midi, timbre=name, texture=0)
        gain = np.median(
            [level_db(truths[args.high][:, s]) - level_db(truths[args.low][:, s]) for s in spans]
        )
        lifted = np.maximum(mels[args.high] - gain / DB_PER_NEPER, LOG_SILENCE)
        row = {
            "direct": scores(mels[args.low], truths[args.low], spans),
            "lifted": scores(lifted, truths[args.low], spans),
        }
        for k, v in row.items():
            totals[k].append(v)
        cells = [f"{k}: level {a:.2f} MAE {b:.2f} peaks {c:+.2f}" for k, (a, b, c) in row.items()]
        print(f"{name:18s} gain {gain:5.1f} dB  " + "  ".join(cells))
    for k, v in totals.items():
        a, b, c = np.mean(v, axis=0)
        drawn = "" if k == "direct" else f" drawn at {args.high}"
        print(
            f"{k}: level error {a:.2f} dB, MAE {b:.2f} dB, loudest bins {c:+.2f} dB "
            f"(velocity {args.low}{drawn})"
        )


if __name__ == "__main__":
    main()
