"""Procedurally generated piano textures: the figures chorales lack, in every register.

A texture piece (:func:`texture_piece`) is a sequence of sections of a few seconds, each one
figure from :data:`FIGURES` over a chord progression in a seeded key, placed in a seeded
register (from the bottom octave of the piano to its top), at a seeded tempo (50-180 bpm), with
a seeded articulation (staccato to legato). The notes then get dynamics and sustain pedal from
:mod:`mel2mel.data.perform`, so textures come at every loudness, pedalled or dry. Everything is
a function of the seed; the choices are returned for the manifest.

A strikes piece (:func:`strikes_piece`) is the dynamics study that phrase curves make rare:
isolated chords and single notes in any register, each struck at a velocity drawn uniformly
over 1..127 or stepping through a crescendo or diminuendo of one repeated chord (as a velocity
ramp does), held for a seeded time and left to decay, so that every velocity is seen on its
own, from the softest touch to the hardest.

A solo piece (:func:`solo_piece`) is the sparse, quiet playing that the others make rare: one
line of notes (now and then a second voice a third, sixth or octave below) in short phrases
with rests, each phrase in its own register from the bottom of the piano to its top, mostly
soft (phrase levels drawn with density falling from pp to ff), so that a single soft note,
alone, is heard from its onset to the end of its decay.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mel2mel import constants as C
from mel2mel.data.perform import PNote, dynamics, pedal_events, write_midi

# Scale degrees of the major and harmonic-minor scales and a few chord progressions (degrees).
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 11)}
PROGRESSIONS = ((0, 3, 4, 0), (0, 5, 3, 4), (0, 4, 5, 3), (1, 4, 0, 0), (0, 3, 1, 4), (5, 3, 0, 4))


def _chord(key: int, mode: str, degree: int) -> list[int]:
    """Pitch classes (as semitones above C, may exceed 11) of the triad on ``degree``."""
    scale = SCALES[mode]
    return [key + scale[(degree + k) % 7] + 12 * ((degree + k) // 7) for k in (0, 2, 4)]


def _place(pcs: list[int], low: int, count: int) -> list[int]:
    """``count`` chord tones ascending from the first at or above ``low``."""
    out, octave = [], (low // 12) * 12
    while len(out) < count:
        for pc in sorted(p % 12 for p in pcs):
            p = octave + pc
            if p >= low and len(out) < count:
                out.append(p)
        octave += 12
    return out


# Each figure returns (pitch, beat offset, length in beats) for one chord lasting ``beats``.
Figure = Callable[[list[int], int, int, np.random.Generator], list[tuple[int, float, float]]]


def _alberti(pcs, low, beats, rng):
    a, b, c = _place(pcs, low, 3)
    step = 0.25 if rng.random() < 0.6 else 0.5
    pattern = [a, c, b, c]
    return [(pattern[i % 4], i * step, step) for i in range(int(beats / step))]


def _arpeggio(pcs, low, beats, rng):
    tones = _place(pcs, low, int(rng.integers(4, 11)))
    if rng.random() < 0.5:
        tones = tones + tones[-2:0:-1]  # up and down
    step = beats / len(tones)
    return [(p, i * step, step) for i, p in enumerate(tones)]


def _broken(pcs, low, beats, rng):
    tones = _place(pcs, low, 4)
    step = 0.5
    order = [0, 2, 1, 3] if rng.random() < 0.5 else [3, 1, 2, 0]
    return [(tones[order[i % 4]], i * step, step) for i in range(int(beats / step))]


def _scale_run(pcs, low, beats, rng):
    step = float(rng.choice([0.125, 0.25]))
    n = int(beats / step)
    chromatic = rng.random() < 0.25
    start, out, p = pcs[0], [], _place(pcs, low, 1)[0]
    direction = 1 if rng.random() < 0.5 else -1
    diatonic = sorted({(start + s) % 12 for s in SCALES["major"]})
    for i in range(n):
        out.append((p, i * step, step))
        p += direction
        while not chromatic and p % 12 not in diatonic:
            p += direction
    return out


def _repeated(pcs, low, beats, rng):
    p = _place(pcs, low, 1)[0]
    step = float(rng.choice([0.25, 1 / 3, 0.5]))
    return [(p, i * step, step) for i in range(round(beats / step))]


def _trill(pcs, low, beats, rng):
    p = _place(pcs, low, 1)[0]
    q = p + int(rng.choice([1, 2]))
    step = 0.125
    return [((p, q)[i % 2], i * step, step) for i in range(int(beats / step))]


def _octaves(pcs, low, beats, rng):
    tones = _place(pcs, low, 3)
    out = []
    for i, p in enumerate(tones):
        t = i * beats / 3
        out += [(p, t, beats / 3), (p + 12, t, beats / 3)]
    return out


def _wide_chord(pcs, low, beats, rng):
    tones = _place(pcs, low, int(rng.integers(5, 9)))
    spread = [p + 12 * (i // 3) for i, p in enumerate(tones)]
    hits = int(rng.integers(1, 3))
    return [(p, k * beats / hits, beats / hits) for k in range(hits) for p in spread]


def _pedal_point(pcs, low, beats, rng):
    bass = _place(pcs, low, 1)[0]
    upper = _place(pcs, low + 12, 3)
    step = beats / 4
    return [(bass, 0.0, beats)] + [(upper[i % 3], i * step, step) for i in range(4)]


FIGURES: dict[str, Figure] = {
    "alberti": _alberti,
    "arpeggio": _arpeggio,
    "broken-chords": _broken,
    "scale-run": _scale_run,
    "repeated-notes": _repeated,
    "trill": _trill,
    "octaves": _octaves,
    "wide-chords": _wide_chord,
    "pedal-point": _pedal_point,
}


def texture_notes(seed: int, seconds: float = 20.0) -> tuple[list[PNote], dict[str, Any]]:
    """The notes of one generated texture piece and the choices made, before dynamics."""
    rng = np.random.default_rng(seed)
    key, mode = int(rng.integers(12)), str(rng.choice(list(SCALES)))
    notes: list[PNote] = []
    sections = []
    t = 0.5
    while t < seconds:
        name = str(rng.choice(list(FIGURES)))
        bpm = float(rng.uniform(50, 180))
        beat = 60.0 / bpm
        beats = int(rng.choice([2, 4]))
        low = int(rng.integers(C.MIDI_MIN, C.MIDI_MAX - 30))  # any register with room above
        articulation = float(rng.choice([rng.uniform(0.3, 0.6), rng.uniform(0.9, 1.2)]))
        progression = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
        section_seconds = float(rng.uniform(3.0, 7.0))
        end = min(t + section_seconds, seconds)
        while t < end:
            for degree in progression:
                figure = FIGURES[name](_chord(key, mode, degree), low, beats, rng)
                for pitch, offset, length in figure:
                    if C.MIDI_MIN <= pitch <= C.MIDI_MAX:
                        start = t + offset * beat
                        dur = max(0.03, length * beat * articulation)
                        notes.append(PNote(int(pitch), start, start + dur, 64, 0))
                t += beats * beat
                if t >= end:
                    break
        section = {"figure": name, "bpm": round(bpm, 1), "low": low}
        sections.append({**section, "articulation": round(articulation, 3)})
    notes.sort(key=lambda n: (n.start, n.pitch))
    return notes, {"key": key, "mode": mode, "sections": sections}


def texture_piece(seed: int, seconds: float = 20.0) -> tuple[bytes, dict[str, Any]]:
    """MIDI bytes of generated texture number ``seed`` and its recorded choices."""
    notes, params = texture_notes(seed, seconds)
    rng = np.random.default_rng([seed, 1])
    lo = float(rng.uniform(5, 60))
    level_range = (lo, float(rng.uniform(lo + 20, 127)))
    notes, dyn = dynamics(notes, rng, level_range=level_range)
    mode = str(rng.choice(["none", "harmonic", "long"]))
    pedals = pedal_events(notes, rng, mode)
    params = {
        "kind": "texture",
        "seed": seed,
        "seconds": seconds,
        **params,
        "dynamics": {"range": [round(x, 3) for x in level_range], **dyn},
        "pedal": mode,
    }
    return write_midi(notes, pedals), params


def _strike_chord(rng: np.random.Generator) -> list[int]:
    """The pitches of one struck chord: 1-6 tones of a seeded triad from any register."""
    size = int(rng.choice([1, 2, 3, 4, 4, 5, 6]))
    key, mode = int(rng.integers(12)), str(rng.choice(list(SCALES)))
    low = int(rng.integers(C.MIDI_MIN, C.MIDI_MAX - 24))
    spread = _place(_chord(key, mode, int(rng.integers(7))), low, 2 * size)
    tones = spread[::2] if rng.random() < 0.5 else spread[:size]  # open or close position
    return [p for p in tones if p <= C.MIDI_MAX]


def strikes_notes(seed: int, seconds: float = 20.0) -> tuple[list[PNote], dict[str, Any]]:
    """The notes of strikes piece ``seed`` (velocities included) and the choices made.

    Groups of strikes follow each other: a group is either one chord repeated with velocities
    stepping evenly up or down between two seeded levels (``"ramp"``, 4-10 strikes) or 3-8
    chords each at its own uniform velocity (``"random"``). Each strike is held 0.1-1.5 s and
    followed by a 0.05-1 s rest, so decays are heard; velocities get +-3 of per-note jitter.
    """
    rng = np.random.default_rng([seed, 2])
    notes: list[PNote] = []
    groups = []
    t = 0.3
    while t < seconds - 0.2:
        kind = str(rng.choice(["ramp", "random"]))
        count = int(rng.integers(4, 11) if kind == "ramp" else rng.integers(3, 9))
        chord = _strike_chord(rng)
        if kind == "ramp":
            a, b = sorted(rng.uniform(1, 127, size=2))
            if rng.random() < 0.5:
                a, b = b, a
            levels = np.linspace(a, b, count)
        else:
            levels = rng.uniform(1, 127, size=count)
        hold = float(rng.uniform(0.1, 1.5))
        rest = float(rng.uniform(0.05, 1.0))
        for level in levels:
            if t >= seconds - 0.2:
                break
            if kind == "random":
                chord = _strike_chord(rng)
            for p in chord:
                v = int(np.clip(round(level + rng.normal(0.0, 3.0)), 1, 127))
                notes.append(PNote(p, t, min(t + hold, seconds), v, 0))
            t += hold + rest
        groups.append({"kind": kind, "strikes": count, "hold": round(hold, 3)})
    notes.sort(key=lambda n: (n.start, n.pitch))
    return notes, {"groups": groups}


def _pedalled(
    kind: str, seed: int, seconds: float, notes: list[PNote], params: dict[str, Any], stream: int
) -> tuple[bytes, dict[str, Any]]:
    """MIDI bytes of generated ``notes`` with a seeded pedal (none for half the pieces,
    harmonic or long), and the piece's recorded choices."""
    rng = np.random.default_rng([seed, stream])
    mode = str(rng.choice(["none", "none", "harmonic", "long"]))
    params = {"kind": kind, "seed": seed, "seconds": seconds, **params, "pedal": mode}
    return write_midi(notes, pedal_events(notes, rng, mode)), params


def strikes_piece(seed: int, seconds: float = 20.0) -> tuple[bytes, dict[str, Any]]:
    """MIDI bytes of strikes piece number ``seed`` and its recorded choices."""
    return _pedalled("strikes", seed, seconds, *strikes_notes(seed, seconds), stream=3)


SOLO_INTERVALS = (3, 4, 8, 9, 12)  # a second voice's distance below the line (semitones)


def solo_notes(seed: int, seconds: float = 20.0) -> tuple[list[PNote], dict[str, Any]]:
    """The notes of solo piece ``seed`` (velocities included) and the choices made.

    Phrases of 2-10 notes follow each other after rests of 0.3-2 s. A phrase walks a seeded
    scale within a seeded register (span of a fourth to an octave and a half, anywhere in
    A0..C8), each note held 0.08-1.5 s and followed by a rest of up to 1.2 s (none in one phrase
    of three, legato); its level is ``127 u**2`` for a uniform ``u`` (half the phrases below
    velocity 32), shaped by a crescendo or diminuendo of up to +-50 % over the phrase, with
    +-3 of per-note jitter; one phrase in five adds a second voice below the line.
    """
    rng = np.random.default_rng([seed, 4])
    key, mode = int(rng.integers(12)), str(rng.choice(list(SCALES)))
    scale = [p for p in range(C.MIDI_MIN, C.MIDI_MAX + 1) if (p - key) % 12 in SCALES[mode]]
    notes: list[PNote] = []
    phrases = []
    t = float(rng.uniform(0.2, 0.8))
    while t < seconds - 0.3:
        span = int(rng.integers(5, 19))
        low = int(rng.integers(C.MIDI_MIN, C.MIDI_MAX - span + 1))
        tones = [p for p in scale if low <= p <= low + span]
        count = int(rng.integers(2, 11))
        level = 127.0 * float(rng.uniform()) ** 2
        shape = np.linspace(1.0, float(rng.uniform(0.5, 1.5)), count)
        legato = bool(rng.random() < 1 / 3)
        second = int(rng.choice(SOLO_INTERVALS)) if rng.random() < 0.2 else 0
        i = int(rng.integers(len(tones)))
        for k in range(count):
            if t >= seconds - 0.2:
                break
            hold = float(rng.uniform(0.08, 1.5))
            v = int(np.clip(round(level * shape[k] + rng.normal(0.0, 3.0)), 1, 127))
            end = min(t + hold, seconds)
            notes.append(PNote(tones[i], t, end, v, 0))
            if second and tones[i] - second >= C.MIDI_MIN:
                notes.append(PNote(tones[i] - second, t, end, max(1, v - 8), 0))
            i = int(np.clip(i + rng.integers(-2, 3), 0, len(tones) - 1))
            t += hold + (0.0 if legato else float(rng.uniform(0.0, 1.2)))
        phrases.append(
            {"low": low, "span": span, "notes": count, "level": round(level, 2),
             "legato": legato, "second": second}
        )  # fmt: skip
        t += float(rng.uniform(0.3, 2.0))
    notes.sort(key=lambda n: (n.start, n.pitch))
    return notes, {"key": key, "mode": mode, "phrases": phrases}


def solo_piece(seed: int, seconds: float = 20.0) -> tuple[bytes, dict[str, Any]]:
    """MIDI bytes of solo piece number ``seed`` and its recorded choices."""
    return _pedalled("solo", seed, seconds, *solo_notes(seed, seconds), stream=5)


# The generated pieces by recipe kind (``mel2mel.data.corpus.Piece.recipe``): seed, seconds ->
# MIDI bytes and recorded choices.
GENERATORS: dict[str, Callable[[int, float], tuple[bytes, dict[str, Any]]]] = {
    "texture": texture_piece,
    "strikes": strikes_piece,
    "solo": solo_piece,
}
