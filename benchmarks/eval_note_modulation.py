"""Does a held note move as FluidSynth's does? Tremolo, vibrato and beating, note by note.

Held notes (3 s each, velocity ``--velocity``, one at a time, pitches ``--pitches``), each
struck twice, the second time at an onset 0.37 s off the first one's grid. For each
``--instrument``, over the held part of every note (0.4 s after its onset to its release) in
the loud bins (within 40 dB of the note's loudest bin), printed:

* ``FluidSynth again``: the correlation between the frame-to-frame changes of the two strikes
  of the same note in FluidSynth's render: how much of the modulation is fixed by the onset
  (1: all of it; a deterministic model can learn that much);
* ``change``: the mean absolute frame-to-frame change of a bin, in dB, FluidSynth's and each
  model's (how much the held sound moves);
* ``r with FluidSynth``: the correlation between each model's frame-to-frame changes and
  FluidSynth's (does it move the same way at the same time).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/eval_note_modulation.py [--model EXPORT ...] \\
        [--instrument Vibraphone ...] [--pitches 48:85:12] [--velocity 80]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import mido
import numpy as np
import torch

from mel2mel import Synthesizer
from mel2mel import constants as C
from mel2mel.audio import log_mel
from mel2mel.data.fluidsynth import RenderSettings, check_soundfont, force_program, render_midi

HOLD, GAP, SHIFT = 3.0, 0.6, 0.37  # seconds held, silence after, the second strike's offset
SKIP = 0.4  # seconds after the onset before the held part
LOUD_DB = 40.0  # bins within this much of the note's loudest bin are compared
DB = 20 / np.log(10)  # dB per neper of magnitude


def onsets(pitches: list[int]) -> list[tuple[int, float]]:
    """(pitch, onset seconds) of every strike: each pitch twice, the second off the grid."""
    out, t = [], 0.2
    for pitch in pitches:
        for shift in (0.0, SHIFT):
            out.append((pitch, t + shift))
            t += shift + HOLD + GAP
    return out


def held_notes(strikes: list[tuple[int, float]], velocity: int) -> mido.MidiFile:
    """One track at 120 bpm (960 ticks per second) playing ``strikes``, each held ``HOLD``."""
    midi = mido.MidiFile(type=0, ticks_per_beat=480)
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500_000)])
    now = 0
    for pitch, start in strikes:
        on, off = round(start * 960), round((start + HOLD) * 960)
        track.append(mido.Message("note_on", note=pitch, velocity=velocity, time=on - now))
        track.append(mido.Message("note_off", note=pitch, time=off - on))
        now = off
    midi.tracks.append(track)
    return midi


def held_changes(mel: np.ndarray, start: float, loud: np.ndarray) -> np.ndarray:
    """Frame-to-frame changes (dB) of the ``loud`` bins over the held part of the note struck
    at ``start`` seconds: float[bins x frames]."""
    a, b = held_frames(start)
    return np.diff(mel[loud, a:b].astype(np.float64), axis=1) * DB


def held_frames(start: float) -> tuple[int, int]:
    """First and end frame of the held part of the note struck at ``start`` seconds."""
    a = round((start + SKIP) * C.FRAME_RATE)
    return a, a + round((HOLD - SKIP) * C.FRAME_RATE)


def loud_bins(true: np.ndarray, start: float) -> np.ndarray:
    """bool[N_MELS]: the bins of FluidSynth's held note within ``LOUD_DB`` of its loudest."""
    a, b = held_frames(start)
    level = true[:, a:b].mean(1) * DB
    return level > level.max() - LOUD_DB


def corr(x: np.ndarray, y: np.ndarray) -> float:
    if x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x.ravel(), y.ravel())[0, 1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", help="acoustic export (repeatable; default: "
                    "the shipped model)")  # fmt: skip
    ap.add_argument("--instrument", action="append", help="instrument name (repeatable)")
    ap.add_argument("--pitches", default="48:85:12", help="first:stop:step MIDI pitches")
    ap.add_argument("--velocity", type=int, default=80)
    ap.add_argument("--soundfont", help="SoundFont (default: MuseScore General)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    pitches = list(range(*(int(x) for x in args.pitches.split(":"))))
    strikes = onsets(pitches)
    settings = RenderSettings(str(check_soundfont(args.soundfont)))
    models = args.model or [None]
    synths = [
        Synthesizer.from_pretrained(m, vocoder="griffinlim", timbre_library=False) for m in models
    ]
    names = args.instrument or [i.name for i in synths[0].instruments()]
    labels = [m or "shipped" for m in models]
    print(f"models: {', '.join(f'[{k}] {m}' for k, m in enumerate(labels))}")
    print(f"{'instrument':18s} FluidSynth again  change dB: FluidSynth  models   r with FluidSynth")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "held.mid"
        held_notes(strikes, args.velocity).save(path)
        for name in names:
            program = synths[0].acoustic.instruments[synths[0].acoustic.instrument_index(name)]
            forced, _ = force_program(mido.MidiFile(path), program.program or 0)
            true = log_mel(render_midi(forced, settings, work_dir=tmp))
            preds = [s.mel(path, timbre=name, texture=0) for s in synths]
            again, change, moved, follows = [], [], [[] for _ in synths], [[] for _ in synths]
            for first, second in zip(strikes[::2], strikes[1::2], strict=True):
                loud = loud_bins(true, first[1])
                dt = held_changes(true, first[1], loud)
                again.append(corr(dt, held_changes(true, second[1], loud)))
                change.append(np.abs(dt).mean())
                for k, pred in enumerate(preds):
                    for _, start in (first, second):
                        dp = held_changes(pred, start, loud)
                        moved[k].append(np.abs(dp).mean())
                        follows[k].append(corr(held_changes(true, start, loud), dp))
            models_change = " / ".join(f"{np.mean(m):.2f}" for m in moved)
            models_r = " / ".join(f"{np.nanmean(f):.2f}" for f in follows)
            print(
                f"{name:18s} {np.nanmean(again):16.2f}  {np.mean(change):19.2f}  "
                f"{models_change:8s} {models_r}"
            )


if __name__ == "__main__":
    main()
