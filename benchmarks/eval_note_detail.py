"""Does the acoustic model draw each pitch's harmonic peaks? Isolated notes against FluidSynth.

One note at a time (held 1 s, every 1.5 s, ``--velocity``), over ``--pitches`` (default every
4th key from E1 to E7), for each ``--instrument``: FluidSynth renders it (MuseScore General,
the training data's settings) and the model predicts its mel. Over the 0.5 s after each onset
(from the 4th frame), printed per pitch and instrument:

* ``r``: Pearson r of the two log-mels (the frames' shape and level);
* ``detail r``: r of their **differences between neighbouring mel bins** (the harmonic peaks
  and valleys, where a transcriber hears the note; docs/MODELS.md, "What the transcriber and
  the classifier miss");
* ``slope``: the mean absolute difference between neighbouring bins in dB, FluidSynth's and
  the model's (how deep the peaks are);
* ``level``: the model's loudness minus FluidSynth's, in dB (mean mel power from the onset to
  0.2 s after the release, as the velocity ramp of ``tests/models/test_shipped_dynamics.py``
  measures it): at a low ``--velocity`` this says whether a soft note, alone, is heard.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/eval_note_detail.py [--model EXPORT] \\
        [--instrument "Grand Piano" ...] [--pitches 28:100:4] [--velocity 80]
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

STEP, HOLD, START = 1.5, 1.0, 0.2  # seconds between onsets, seconds held, first onset
WINDOW = (4, 4 + round(0.5 * C.FRAME_RATE))  # frames after each onset that are compared


def isolated_notes(pitches: list[int], velocity: int) -> mido.MidiFile:
    """One track, one note at a time, at 120 bpm (960 ticks per second)."""
    midi = mido.MidiFile(type=0, ticks_per_beat=480)
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500_000)])
    for k, pitch in enumerate(pitches):
        rest = round((START if k == 0 else STEP - HOLD) * 960)
        track.append(mido.Message("note_on", note=pitch, velocity=velocity, time=rest))
        track.append(mido.Message("note_off", note=pitch, time=round(HOLD * 960)))
    midi.tracks.append(track)
    return midi


def level_db(mel: np.ndarray) -> float:
    """Mean mel power of ``mel`` (natural-log magnitudes, N_MELS x T) in dB."""
    return float(10 * np.log10(np.exp(2 * mel.astype(np.float64)).sum(0).mean()))


def compare(true: np.ndarray, pred: np.ndarray, k: int) -> tuple[float, ...]:
    """(r, detail r, FluidSynth's slope dB, the model's slope dB, level error dB) of the k-th
    note."""
    a = round((START + k * STEP) * C.FRAME_RATE)
    t, p = true[:, a + WINDOW[0] : a + WINDOW[1]], pred[:, a + WINDOW[0] : a + WINDOW[1]]
    dt, dp = np.diff(t, axis=0), np.diff(p, axis=0)
    r = np.corrcoef(t.ravel(), p.ravel())[0, 1]
    detail = np.corrcoef(dt.ravel(), dp.ravel())[0, 1]
    db = C.DB_PER_NEPER
    b = a + round((HOLD + 0.2) * C.FRAME_RATE)
    level = level_db(pred[:, a:b]) - level_db(true[:, a:b])
    return r, detail, db * np.abs(dt).mean(), db * np.abs(dp).mean(), level


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="acoustic export (default: the shipped model)")
    ap.add_argument("--instrument", action="append", help="instrument name (repeatable)")
    ap.add_argument("--pitches", default="28:100:4", help="first:stop:step MIDI pitches")
    ap.add_argument("--velocity", type=int, default=80)
    ap.add_argument("--soundfont", help="SoundFont (default: MuseScore General)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    pitches = list(range(*(int(x) for x in args.pitches.split(":"))))
    settings = RenderSettings(str(check_soundfont(args.soundfont)))
    synth = Synthesizer.from_pretrained(args.model, vocoder="griffinlim", timbre_library=False)
    names = args.instrument or [i.name for i in synth.instruments()]
    midi = isolated_notes(pitches, args.velocity)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "notes.mid"
        midi.save(path)
        print(f"{'instrument':18s} pitch      r  detail r  slope dB (FluidSynth / model)  level dB")
        summary = []
        for name in names:
            inst = synth.acoustic.instruments[synth.acoustic.instrument_index(name)]
            forced, _ = force_program(mido.MidiFile(path), inst.program or 0)
            true = log_mel(render_midi(forced, settings, work_dir=tmp))
            pred = synth.mel(path, timbre=name, texture=0)
            rows = [compare(true, pred, k) for k in range(len(pitches))]
            for pitch, (r, detail, st, sp, lv) in zip(pitches, rows, strict=True):
                print(
                    f"{name:18s} {pitch:5d} {r:6.3f} {detail:9.3f}  {st:5.1f} / {sp:4.1f}"
                    f"{'':18s}{lv:+6.1f}"
                )
            low = [row[1] for p, row in zip(pitches, rows, strict=True) if p < 48]
            mid = [row[1] for p, row in zip(pitches, rows, strict=True) if 48 <= p < 84]
            err = np.abs([row[4] for row in rows])
            summary.append((np.mean(low), np.mean(mid), err.mean(), np.mean(err > 6)))
            print(
                f"{name:18s} detail r below C3 {np.mean(low):.3f}, C3-B5 {np.mean(mid):.3f}; "
                f"level error {err.mean():.1f} dB mean, {err.max():.1f} worst"
            )
        low, mid, err, far = np.mean(summary, axis=0)
        print(
            f"all instruments: detail r below C3 {low:.3f}, C3-B5 {mid:.3f}; level error "
            f"{err:.1f} dB mean, {far:.0%} of the notes off by more than 6 dB "
            f"(velocity {args.velocity})"
        )


if __name__ == "__main__":
    main()
