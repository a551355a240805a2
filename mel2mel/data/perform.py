"""Performance augmentation: turn a typeset score into a seeded "human" performance.

Scores from the music21 corpus play every note at one velocity, without pedal, at a steady
tempo; what users give mel2mel is performed MIDI with dynamics, sustain pedal and rubato. This
module rewrites a score's notes the way a pianist's performance differs from the page, with
every random choice drawn from one seeded generator and recorded in a plain ``dict`` (the
builder stores it in the piece's sidecar and in the manifest):

* an **excerpt** of at most ``max_seconds`` starting at a seeded note onset;
* **tempo**: a global factor and a smooth rubato curve (local tempo within about +-20 %), with
  a ritardando into the end of the excerpt;
* **transposition** by a seeded number of semitones that keeps every note in A0..C8;
* **dynamics** (:func:`dynamics`): phrase-level crescendo/diminuendo curves spanning pp..ff,
  accents, melody/bass balance and per-note jitter, clipped to 1..127;
* **articulation**: staccato (shortened notes) to legato (overlapping) per performance;
* **sustain pedal** (:func:`pedal_events`): none, changed at harmonic changes, or long pedals.

The result is written back to MIDI by :func:`write_midi`, so the builder's usual path (roll from
:func:`mel2mel.midi.read_notes`, audio from FluidSynth) sees it like any other file and roll and
audio stay aligned by construction.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mido
import numpy as np

from mel2mel import constants as C
from mel2mel.midi import SUSTAIN_CC, MidiSource, read_notes

TICKS_PER_BEAT = 960
TEMPO_US = 500_000  # 120 bpm: one tick is 1/1920 s, finer than a sample block of FluidSynth


@dataclass(frozen=True)
class PNote:
    """A note of a performance: times in seconds, ``end`` the key release (no pedal)."""

    pitch: int
    start: float
    end: float
    velocity: int
    channel: int = 0


def _round(x: float) -> float:
    return round(float(x), 3)


# -- writing ----------------------------------------------------------------------------------


def write_midi(
    notes: Sequence[PNote],
    pedals: Sequence[tuple[float, bool]] = (),
    controls: Sequence[tuple[float, int, int, int]] = (),
) -> bytes:
    """Standard MIDI File bytes (type 1, one track per channel) of ``notes`` and pedal events.

    ``pedals`` are ``(time, down)`` sustain-pedal changes, sent on every channel that has notes;
    ``controls`` are other ``(time, channel, controller, value)`` changes (on channels that
    have notes). Times are quantized to 1/1920 s. A note-off at the same tick as a note-on of
    the same key is written first, so a re-struck key is a new note, not an extension; a
    controller change comes before the notes of its tick.
    """
    sec_per_tick = TEMPO_US * 1e-6 / TICKS_PER_BEAT
    notes = _trim_overlaps(notes)
    channels = sorted({n.channel for n in notes}) or [0]
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    for ci, ch in enumerate(channels):
        events: list[tuple[int, int, mido.Message]] = []  # (tick, order, message)
        for n in notes:
            if n.channel != ch:
                continue
            on = round(n.start / sec_per_tick)
            off = max(round(n.end / sec_per_tick), on + 1)
            on_msg = mido.Message("note_on", channel=ch, note=n.pitch, velocity=n.velocity)
            events.append((on, 2, on_msg))
            events.append((off, 0, mido.Message("note_off", channel=ch, note=n.pitch)))
        for t, down in pedals:
            value = 127 if down else 0
            msg = mido.Message("control_change", channel=ch, control=SUSTAIN_CC, value=value)
            events.append((round(t / sec_per_tick), 1, msg))
        for t, cch, control, value in controls:
            if cch == ch:
                msg = mido.Message("control_change", channel=ch, control=control, value=value)
                events.append((round(t / sec_per_tick), 1, msg))
        events.sort(key=lambda e: (e[0], e[1]))
        track = mido.MidiTrack()
        if ci == 0:
            track.append(mido.MetaMessage("set_tempo", tempo=TEMPO_US, time=0))
        tick = 0
        for t, _, msg in events:
            track.append(msg.copy(time=t - tick))
            tick = t
        track.append(mido.MetaMessage("end_of_track", time=0))
        midi.tracks.append(track)
    buf = io.BytesIO()
    midi.save(file=buf)
    return buf.getvalue()


def _trim_overlaps(notes: Sequence[PNote]) -> list[PNote]:
    """End a note where the next note of the same key and channel starts (a re-strike)."""
    out: list[PNote] = []
    last: dict[tuple[int, int], int] = {}
    for n in sorted(notes, key=lambda n: (n.start, n.pitch)):
        k = (n.channel, n.pitch)
        if k in last:
            prev = out[last[k]]
            if n.start - prev.start < 0.01:  # the same key struck twice at once: keep one
                if n.velocity > prev.velocity or n.end > prev.end:
                    out[last[k]] = PNote(
                        n.pitch,
                        prev.start,
                        max(n.end, prev.end),
                        max(n.velocity, prev.velocity),
                        n.channel,
                    )
                continue
            if prev.end > n.start:
                out[last[k]] = PNote(prev.pitch, prev.start, n.start, prev.velocity, prev.channel)
        last[k] = len(out)
        out.append(n)
    return out


# -- the parts of a performance -----------------------------------------------------------------


def dynamics(
    notes: Sequence[PNote], rng: np.random.Generator, *, level_range: tuple[float, float]
) -> tuple[list[PNote], dict[str, Any]]:
    """Give ``notes`` a dynamic shape; returns the new notes and what was drawn.

    A phrase curve is piecewise linear between levels drawn in ``level_range`` every 2-8 s
    (crescendi and diminuendi); on top: the highest note of each onset group gets the melody
    bonus, the lowest the bass offset, a random share of notes an accent, and every note
    Gaussian jitter. Velocities are clipped to 1..127.
    """
    if not notes:
        return [], {}
    end = max(n.end for n in notes)
    knots = [0.0]
    while knots[-1] < end:
        knots.append(knots[-1] + float(rng.uniform(2.0, 8.0)))
    lo, hi = level_range
    levels = rng.uniform(lo, hi, size=len(knots))
    melody = float(rng.uniform(0.0, 20.0))
    bass = float(rng.uniform(-15.0, 10.0))
    accent_p = float(rng.uniform(0.0, 0.15))
    jitter = float(rng.uniform(2.0, 9.0))
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(notes):
        groups.setdefault(round(n.start * 20), []).append(i)  # onsets within 50 ms
    top = {max(g, key=lambda i: notes[i].pitch) for g in groups.values() if len(g) > 1}
    low = {min(g, key=lambda i: notes[i].pitch) for g in groups.values() if len(g) > 1}
    out = []
    for i, n in enumerate(notes):
        v = float(np.interp(n.start, knots, levels))
        v += melody if i in top else bass if i in low else 0.0
        if rng.random() < accent_p:
            v += float(rng.uniform(10.0, 30.0))
        v += float(rng.normal(0.0, jitter))
        out.append(PNote(n.pitch, n.start, n.end, int(np.clip(round(v), 1, 127)), n.channel))
    params = {
        "levels": [_round(x) for x in levels],
        "every": "2-8 s",
        "melody": _round(melody),
        "bass": _round(bass),
        "accents": _round(accent_p),
        "jitter": _round(jitter),
    }
    return out, params


def pedal_events(
    notes: Sequence[PNote], rng: np.random.Generator, mode: str
) -> list[tuple[float, bool]]:
    """Sustain-pedal changes for ``notes``: ``"none"``, ``"harmonic"`` or ``"long"``.

    ``"harmonic"`` lifts and re-presses the pedal just after each onset whose pitch classes
    differ from the ones sounding before (a "legato pedal", as pianists change at harmonic
    changes); ``"long"`` holds it over spans of 3-10 s regardless of the harmony (the washes
    that blur a roll without pedal handling).
    """
    if mode == "none" or not notes:
        return []
    end = max(n.end for n in notes)
    events: list[tuple[float, bool]] = []
    if mode == "long":
        t = float(rng.uniform(0.0, 1.0))
        while t < end:
            length = float(rng.uniform(3.0, 10.0))
            events += [(t, True), (min(t + length, end), False)]
            t += length + float(rng.uniform(0.05, 1.5))
        return events
    onsets: dict[float, set[int]] = {}
    for n in notes:
        onsets.setdefault(round(n.start, 2), set()).add(n.pitch % 12)
    last: set[int] = set()
    down = False
    for t in sorted(onsets):
        pcs = onsets[t]
        if not last or len(pcs - last) >= 2 or (len(pcs) >= 2 and not pcs & last):
            if down:
                events.append((t + 0.03, False))
            events.append((t + float(rng.uniform(0.06, 0.12)), True))
            down, last = True, set(pcs)
        else:
            last |= pcs
    if down:
        events.append((end, False))
    return events


def _warp(notes: Sequence[PNote], rng: np.random.Generator) -> tuple[list[PNote], dict]:
    """Global tempo factor, smooth rubato and a final ritardando, as a monotone time map."""
    end = max(n.end for n in notes)
    factor = float(rng.uniform(0.7, 1.4))  # > 1: slower
    grid = np.linspace(0.0, end, max(2, int(end * 20) + 2))
    log_rate = np.zeros_like(grid)
    parts = []
    for _ in range(3):
        period, amp, phase = rng.uniform(2.0, 12.0), rng.uniform(0.0, 0.08), rng.uniform(0, 6.3)
        log_rate += amp * np.sin(2 * math.pi * grid / period + phase)
        parts.append([_round(period), _round(amp)])
    rit = float(rng.uniform(0.0, 0.5))
    log_rate += rit * np.clip((grid - (end - 3.0)) / 3.0, 0.0, 1.0) ** 2
    seconds_per_second = factor * np.exp(log_rate)
    mapped = np.concatenate([[0.0], np.cumsum(np.diff(grid) * seconds_per_second[:-1])])

    def warp(t: float) -> float:
        return float(np.interp(t, grid, mapped))

    out = [PNote(n.pitch, warp(n.start), warp(n.end), n.velocity, n.channel) for n in notes]
    return out, {"factor": _round(factor), "rubato": parts, "ritardando": _round(rit)}


def _articulate(notes: Sequence[PNote], scale: float) -> list[PNote]:
    """Scale each note's length (staccato < 1 < legato), at least 30 ms."""
    out = []
    for n in notes:
        end = n.start + max(0.03, (n.end - n.start) * scale)
        out.append(PNote(n.pitch, n.start, end, n.velocity, n.channel))
    return out


def _excerpt(notes: Sequence[PNote], rng: np.random.Generator, seconds: float | None) -> tuple:
    """Notes starting in a window of ``seconds`` from a seeded onset, shifted to start at 0.5 s."""
    start = 0.0
    total = max(n.end for n in notes)
    if seconds is not None and total > seconds:
        onsets = sorted({n.start for n in notes if n.start <= total - seconds})
        start = float(onsets[int(rng.integers(len(onsets)))]) if onsets else 0.0
    stop = start + seconds if seconds is not None else math.inf
    kept = [
        PNote(n.pitch, n.start - start + 0.5, min(n.end, stop) - start + 0.5, n.velocity, n.channel)
        for n in notes
        if start <= n.start < stop
    ]
    return kept, _round(start)


# -- a whole performance --------------------------------------------------------------------------


def perform(
    source: MidiSource, seed: int, *, max_seconds: float | None = 30.0
) -> tuple[bytes, dict[str, Any]]:
    """A seeded performance of the notes of ``source``: MIDI bytes and the recorded choices.

    The score's notes (as :func:`~mel2mel.midi.read_notes` reads them) are excerpted, warped in
    time, transposed, articulated, given dynamics and pedalled, in that order; see the module
    docstring. The same ``(source, seed, max_seconds)`` always gives the same bytes.
    """
    rng = np.random.default_rng(seed)
    seq = read_notes(source, warn=False)
    notes = [PNote(n.pitch, n.start, n.end, n.velocity, n.channel) for n in seq.notes]
    notes, excerpt_start = _excerpt(notes, rng, max_seconds)
    notes, tempo = _warp(notes, rng)
    lo = C.MIDI_MIN - min(n.pitch for n in notes)
    hi = C.MIDI_MAX - max(n.pitch for n in notes)
    shift = int(rng.integers(max(lo, -12), min(hi, 12) + 1)) if lo <= hi else 0
    scale = float(rng.choice([rng.uniform(0.3, 0.7), rng.uniform(0.8, 1.0), rng.uniform(1, 1.3)]))
    shifted = [PNote(n.pitch + shift, n.start, n.end, n.velocity, n.channel) for n in notes]
    notes = _articulate(shifted, scale)
    level_range = _level_range(rng)
    notes, dyn = dynamics(notes, rng, level_range=level_range)
    mode = str(rng.choice(["none", "harmonic", "harmonic", "long"]))
    pedals = pedal_events(notes, rng, mode)
    params = {
        "kind": "perform",
        "seed": seed,
        "excerpt_start": excerpt_start,
        "max_seconds": max_seconds,
        "tempo": tempo,
        "transpose": shift,
        "articulation": _round(scale),
        "dynamics": {"range": [_round(x) for x in level_range], **dyn},
        "pedal": mode,
    }
    return write_midi(notes, pedals), params


def excerpt_midi(source: MidiSource, max_seconds: float | None) -> tuple[bytes, dict[str, Any]]:
    """The notes of ``source`` that start in its first ``max_seconds``, as written otherwise.

    Notes are cut at ``max_seconds``; sustain-pedal extensions are kept as note lengths (as
    :func:`~mel2mel.midi.read_notes` reads them), other controllers are not carried over.
    """
    seq = read_notes(source, warn=False)
    stop = math.inf if max_seconds is None else max_seconds
    notes = [
        PNote(n.pitch, n.start, min(n.end, stop), n.velocity, n.channel)
        for n in seq.notes
        if n.start < stop
    ]
    return write_midi(notes), {"kind": "excerpt", "max_seconds": max_seconds}


def _level_range(rng: np.random.Generator) -> tuple[float, float]:
    """The dynamic range of one performance: soft, loud or wide, so that 1..127 is covered."""
    kind = int(rng.integers(4))
    if kind == 0:
        return float(rng.uniform(5, 20)), float(rng.uniform(35, 60))  # pp..mp
    if kind == 1:
        return float(rng.uniform(70, 95)), float(rng.uniform(110, 127))  # f..fff
    return float(rng.uniform(10, 35)), float(rng.uniform(90, 127))  # pp..ff
