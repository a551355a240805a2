"""The example piece, composed in code: a four-voice chorale in C major (about 27 s).

Two four-bar phrases in 4/4: the first ends on a half cadence (ii6 - I64 - V) held under a
slight ritardando, the second climbs to E5 and closes with I64 - V7 - I. Each voice (soprano,
alto, tenor, bass) is its own MIDI track on its own channel (tracks 1-4 of a type-1 file;
track 0 holds the tempo map), so ``mel2mel render example.mid --track 1=trumpet`` gives the
melody its own timbre. Repeated notes inside a phrase are tied, the melody and the bass sound
a little louder than the inner voices, and the dynamics follow the phrases. Every pitch lies
in the piano range A0..C8 and nothing is on the drum channel.

``examples/make_example.py`` writes ``examples/example.mid`` with :func:`write_example`; the
output is deterministic, so the committed file can be checked against the code.
"""

from __future__ import annotations

import os
from pathlib import Path

import mido
import numpy as np

TICKS_PER_BEAT = 480
VOICES = ("Soprano", "Alto", "Tenor", "Bass")
VOICE_ACCENT = (8, 0, 0, 4)  # velocity added to each voice: melody and bass a little louder

# One chord per beat, (soprano, alto, tenor, bass) as MIDI numbers; 8 bars of 4 beats.
CHORDS: tuple[tuple[int, int, int, int], ...] = (
    (67, 64, 55, 48), (69, 64, 60, 45), (71, 67, 62, 55), (72, 67, 64, 48),  # I vi V I
    (74, 67, 59, 43), (72, 64, 60, 45), (71, 67, 62, 43), (71, 67, 62, 43),  # V vi V
    (72, 67, 64, 48), (76, 72, 67, 48), (74, 69, 65, 53), (72, 67, 64, 55),  # I I ii6 I64
    (71, 67, 62, 55), (71, 67, 62, 55), (71, 67, 62, 43), (71, 67, 62, 43),  # V (half cadence)
    (76, 67, 64, 48), (74, 71, 67, 55), (72, 69, 64, 57), (69, 65, 62, 50),  # I V vi ii
    (71, 67, 62, 55), (72, 67, 64, 52), (74, 67, 62, 47), (76, 72, 67, 48),  # V I6 V6 I
    (72, 69, 65, 53), (74, 69, 62, 53), (76, 72, 60, 55), (74, 71, 65, 55),  # IV ii6 I64 V7
    (72, 67, 64, 48), (72, 67, 64, 48), (72, 67, 64, 48), (72, 67, 64, 48),  # I (final)
)  # fmt: skip
PHRASE_STARTS = frozenset({0, 16})  # ties never cross into a new phrase
TEMPO_BPM = {0: 76, 14: 68, 15: 62, 16: 78, 26: 72, 27: 66, 28: 58}  # beat -> bpm from there
DYNAMICS = ((0, 62), (9, 76), (15, 60), (16, 70), (26, 86), (31, 66))  # (beat, velocity)
ARTICULATION = 24  # ticks of silence before a re-struck note


def _velocity(beat: int, voice: int) -> int:
    beats, levels = zip(*DYNAMICS, strict=True)
    base = float(np.interp(beat, beats, levels))
    humanize = (beat * 7 + voice * 3) % 5 - 2  # fixed small variation, deterministic
    return int(np.clip(round(base + VOICE_ACCENT[voice] + humanize), 1, 127))


def _voice_notes(voice: int, repeats: int) -> list[tuple[int, int, int, int]]:
    """``(start tick, end tick, pitch, velocity)`` of one voice, repeated chords tied."""
    notes: list[tuple[int, int, int, int]] = []
    n = len(CHORDS)
    for r in range(repeats):
        for beat, chord in enumerate(CHORDS):
            pitch, tick = chord[voice], (r * n + beat) * TICKS_PER_BEAT
            tied = notes and notes[-1][2] == pitch and beat not in PHRASE_STARTS
            if tied:
                start, _, p, v = notes[-1]
                notes[-1] = (start, tick + TICKS_PER_BEAT, p, v)
            else:
                notes.append((tick, tick + TICKS_PER_BEAT, pitch, _velocity(beat, voice)))
    # A note followed by another releases a little early, so the next one is re-struck.
    starts = {s for s, *_ in notes}
    return [(s, e - ARTICULATION if e in starts else e, p, v) for s, e, p, v in notes]


def _track(events: list[tuple[int, mido.Message | mido.MetaMessage]]) -> mido.MidiTrack:
    """A track from ``(absolute tick, message)`` pairs (stable order at equal ticks)."""
    track = mido.MidiTrack()
    last = 0
    for tick, msg in sorted(events, key=lambda e: e[0]):
        track.append(msg.copy(time=tick - last))
        last = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    return track


def chorale(repeats: int = 1) -> mido.MidiFile:
    """The example as a type-1 ``mido.MidiFile``, played ``repeats`` times in a row."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    n = len(CHORDS)
    conductor: list[tuple[int, mido.Message | mido.MetaMessage]] = [
        (0, mido.MetaMessage("track_name", name="mel2mel example: chorale in C major")),
        (0, mido.MetaMessage("time_signature", numerator=4, denominator=4)),
        (0, mido.MetaMessage("key_signature", key="C")),
    ]
    for r in range(repeats):
        for beat, bpm in TEMPO_BPM.items():
            tick = (r * n + beat) * TICKS_PER_BEAT
            conductor.append((tick, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm))))
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    midi.tracks.append(_track(conductor))
    for voice, name in enumerate(VOICES):
        ch = voice
        events: list[tuple[int, mido.Message | mido.MetaMessage]] = [
            (0, mido.MetaMessage("track_name", name=name)),
            (0, mido.Message("program_change", channel=ch, program=0)),
        ]
        for start, end, pitch, vel in _voice_notes(voice, repeats):
            events.append((start, mido.Message("note_on", channel=ch, note=pitch, velocity=vel)))
            events.append((end, mido.Message("note_off", channel=ch, note=pitch, velocity=64)))
        # At equal ticks a note-off must come before the next note-on of the same key.
        events.sort(key=lambda e: (e[0], e[1].type != "note_off"))
        midi.tracks.append(_track(events))
    return midi


def write_example(path: str | os.PathLike, repeats: int = 1) -> Path:
    """Write :func:`chorale` to ``path`` (parent folders are created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    chorale(repeats).save(path)
    return path
