"""MIDI -> the paper's hop-aligned onset/frame piano roll.

Notes are read with mido so that their sounding spans follow what FluidSynth will actually
play, keeping the roll and the rendered audio aligned to the frame:

* tempo changes anywhere in the file are honoured (type 0 and type 1 files);
* a note sounds from its note-on until its note-off, extended while the sustain pedal
  (CC64 >= 64) of its channel is down, until the pedal is released;
* re-striking a key that still sounds on the same channel ends the earlier note at the new
  onset (FluidSynth releases the earlier voice);
* "all notes off"/"all sound off" (CC123/CC120) end every note of the channel and
  "reset all controllers" (CC121) lifts the pedal;
* a note still sounding when the file ends (its longest track, end-of-track included) ends
  there (:func:`mel2mel.data.fluidsynth.force_program` sends "all notes off" there, so FluidSynth
  agrees);
* the drum channel (MIDI channel 10, index 9) is excluded, and notes outside A0..C8 are
  dropped and counted;
* channel volume and expression (CC7, CC11) are read as FluidSynth applies them: its default
  modulators attenuate a voice by ``-400 log10(v / 127)`` centibels for each, i.e. an amplitude
  factor ``(v / 127) ** 2``, at once and also during the release; relative to FluidSynth's
  defaults (CC7 = 100, CC11 = 127) a channel's gain is ``(cc7 / 100 * cc11 / 127) ** 2``. The
  roll does not carry it (velocity changes timbre, volume does not); :func:`log_gain` turns it
  into a per-frame gain on the log-mel.

The roll is ``float32[ROLL_CHANNELS x T]``: rows ``0..87`` mark every frame in which a key
sounds, rows ``88..175`` mark only its onset frame, both carrying ``velocity / 127``. A time
``t`` maps to the frame whose centre is nearest, ``floor(t * FRAME_RATE + 0.5)`` (frames are
centred, see :mod:`mel2mel.constants`); a note marks its onset frame and sounds up to, not
including, the frame of its end, for at least one frame.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import mido
import numpy as np

from mel2mel import constants as C

DRUM_CHANNEL = 9
SUSTAIN_CC = 64
ALL_SOUND_OFF_CC, RESET_CONTROLLERS_CC, ALL_NOTES_OFF_CC = 120, 121, 123
VOLUME_CC, EXPRESSION_CC = 7, 11
DEFAULT_VOLUME, DEFAULT_EXPRESSION = 100, 127  # FluidSynth's channel defaults
RELEASE_SECONDS = 0.5  # how long a released note still weighs in its channel's gain


class MidiError(ValueError):
    """A MIDI file that cannot be used: unreadable, corrupt, or without playable notes."""


@dataclass(frozen=True)
class Note:
    """One sounding note, times in seconds (``end`` includes any sustain-pedal extension)."""

    pitch: int
    start: float
    end: float
    velocity: int
    channel: int
    track: int
    program: int = 0


@dataclass
class NoteSequence:
    """The playable notes of a MIDI file and what was left out of them."""

    notes: list[Note]
    duration: float
    dropped_out_of_range: int = 0
    dropped_drums: int = 0
    channels: set[int] = field(default_factory=set)
    #: Channel -> ``[(time, gain)]``: amplitude gain of CC7 x CC11 relative to FluidSynth's
    #: defaults from ``time`` on, for the channels whose volume or expression ever differ.
    volume: dict[int, list[tuple[float, float]]] = field(default_factory=dict)

    def num_frames(self) -> int:
        """Frames needed to hold every note: up to the last note end, plus one frame."""
        return time_to_frame(self.duration) + 1


def time_to_frame(seconds: float) -> int:
    """Index of the frame whose centre is nearest to ``seconds`` (halves round up)."""
    return math.floor(seconds * C.FRAME_RATE + 0.5)


MidiSource = str | os.PathLike | bytes | mido.MidiFile


def load_midi(source: MidiSource) -> mido.MidiFile:
    """Parse a MIDI file from a path or bytes, turning every parser failure into MidiError."""
    if isinstance(source, mido.MidiFile):
        return source
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        if isinstance(source, bytes):
            return mido.MidiFile(file=io.BytesIO(source))
        if not Path(source).is_file():
            raise MidiError(f"{name}: no such file")
        return mido.MidiFile(str(source))
    except MidiError:
        raise
    except Exception as err:  # mido raises OSError, EOFError, ValueError, KeyError, ...
        raise MidiError(f"{name}: not a readable MIDI file ({type(err).__name__}: {err})") from err


def _tick_to_seconds(midi: mido.MidiFile) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tempo map as (tick, seconds, seconds-per-tick) breakpoints from every track's set_tempo."""
    changes: dict[int, int] = {0: 500_000}
    for track in midi.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "set_tempo":
                if msg.tempo <= 0:  # every later event would fall at one instant
                    raise MidiError(f"tempo of 0 microseconds per beat at tick {tick}")
                changes[tick] = msg.tempo
    ticks = np.array(sorted(changes), dtype=np.int64)
    spt = np.array([changes[t] for t in ticks], dtype=np.float64) * 1e-6 / midi.ticks_per_beat
    seconds = np.concatenate([[0.0], np.cumsum(np.diff(ticks) * spt[:-1])])
    return ticks, seconds, spt


def read_notes(source: MidiSource, *, warn: bool = True) -> NoteSequence:
    """Read the sounding notes of a MIDI file (see the module docstring for the rules).

    Raises MidiError for unreadable files and for files with no playable note.
    """
    midi = load_midi(source)
    if midi.type == 2:
        raise MidiError("type-2 MIDI files (independent sequences) are not supported")
    if midi.ticks_per_beat <= 0:
        raise MidiError("MIDI file uses SMPTE time division, which is not supported")
    bp_ticks, bp_secs, bp_spt = _tick_to_seconds(midi)

    # Merge all tracks into one time-ordered event list: (tick, track, order, message).
    events = []
    for ti, track in enumerate(midi.tracks):
        tick = 0
        for order, msg in enumerate(track):
            tick += msg.time
            if msg.type in ("note_on", "note_off", "control_change", "program_change"):
                events.append((tick, ti, order, msg))
    # At equal ticks FluidSynth's player takes track 0 first, then track 1, ..., each in file order.
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    ticks = np.array([e[0] for e in events], dtype=np.int64)
    idx = np.searchsorted(bp_ticks, ticks, side="right") - 1
    times = bp_secs[idx] + (ticks - bp_ticks[idx]) * bp_spt[idx] if len(events) else ticks
    # The file ends with its longest track, end-of-track included: notes still on end there.
    last_tick = max((sum(m.time for m in t) for t in midi.tracks), default=0)
    k = int(np.searchsorted(bp_ticks, last_tick, side="right")) - 1
    file_end = float(bp_secs[k] + (last_tick - bp_ticks[k]) * bp_spt[k])

    notes: list[Note] = []
    active: dict[tuple[int, int], tuple[float, int, int, int]] = {}  # (ch, key) -> start info
    held: dict[int, set[int]] = {}  # channel -> keys released while the pedal was down
    pedal: dict[int, bool] = {}
    program: dict[int, int] = {}
    cc7: dict[int, int] = {}
    cc11: dict[int, int] = {}
    volume: dict[int, list[tuple[float, float]]] = {}
    dropped_range = dropped_drums = 0

    def set_gain(ch: int, t: float) -> None:
        v, e = cc7.get(ch, DEFAULT_VOLUME), cc11.get(ch, DEFAULT_EXPRESSION)
        gain = (v / DEFAULT_VOLUME * e / DEFAULT_EXPRESSION) ** 2
        points = volume.setdefault(ch, [(0.0, 1.0)])
        if points[-1][0] == t:
            points.pop()
        points.append((t, gain))

    end_time = file_end

    def close(ch: int, key: int, t: float) -> None:
        start, vel, trk, prog = active.pop((ch, key))
        held.get(ch, set()).discard(key)
        notes.append(Note(key, start, t, vel, ch, trk, prog))

    for (_, trk, _, msg), t in zip(events, times, strict=True):
        t = float(t)
        end_time = max(end_time, t)
        ch = msg.channel
        if msg.type == "program_change":
            program[ch] = msg.program
        elif msg.type == "control_change":
            if msg.control == SUSTAIN_CC:
                down = msg.value >= 64
                if pedal.get(ch, False) and not down:
                    for key in sorted(held.get(ch, set())):
                        close(ch, key, t)
                pedal[ch] = down
            elif msg.control in (ALL_SOUND_OFF_CC, ALL_NOTES_OFF_CC):
                for c, key in [k for k in active if k[0] == ch]:
                    close(c, key, t)
            elif msg.control in (VOLUME_CC, EXPRESSION_CC):
                (cc7 if msg.control == VOLUME_CC else cc11)[ch] = msg.value
                set_gain(ch, t)
            elif msg.control == RESET_CONTROLLERS_CC:
                if ch in cc11:  # reset all controllers resets expression, not volume
                    cc11[ch] = DEFAULT_EXPRESSION
                    set_gain(ch, t)
                if pedal.get(ch, False):
                    for key in sorted(held.get(ch, set())):
                        close(ch, key, t)
                pedal[ch] = False
        elif msg.type == "note_on" and msg.velocity > 0:
            if ch == DRUM_CHANNEL:
                dropped_drums += 1
                continue
            if not C.MIDI_MIN <= msg.note <= C.MIDI_MAX:
                dropped_range += 1
                continue
            if (ch, msg.note) in active:
                close(ch, msg.note, t)
            active[(ch, msg.note)] = (t, msg.velocity, trk, program.get(ch, 0))
        else:  # note_off, or note_on with velocity 0
            if (ch, msg.note) not in active:
                continue
            if pedal.get(ch, False):
                held.setdefault(ch, set()).add(msg.note)
            else:
                close(ch, msg.note, t)
    for ch, key in list(active):  # still sounding at the end of the file
        close(ch, key, end_time)

    notes.sort(key=lambda n: (n.start, n.pitch))
    if warn and dropped_range:
        warnings.warn(
            f"dropped {dropped_range} note(s) outside the piano range A0..C8 "
            f"(MIDI {C.MIDI_MIN}..{C.MIDI_MAX})",
            stacklevel=2,
        )
    if not notes:
        what = "only drum notes" if dropped_drums else "no playable notes"
        raise MidiError(f"MIDI file has {what} in the piano range A0..C8")
    return NoteSequence(
        notes=notes,
        duration=max(n.end for n in notes),
        dropped_out_of_range=dropped_range,
        dropped_drums=dropped_drums,
        channels={n.channel for n in notes},
        volume={ch: pts for ch, pts in volume.items() if any(g != 1.0 for _, g in pts)},
    )


def log_gain(
    notes: Iterable[Note], volume: dict[int, list[tuple[float, float]]], num_frames: int
) -> np.ndarray | None:
    """Per-frame natural-log amplitude gain of CC7/CC11 on the mix of ``notes``.

    FluidSynth scales each channel's voices by its gain (module docstring); the mel of a mix of
    channels with different gains is approximated by their power-weighted mean: each channel
    weighs by the squared amplitude (``velocity ** 4``, the default velocity curve) of its notes
    sounding in the frame or released less than :data:`RELEASE_SECONDS` before it. With one
    channel, or equal gains, it is exact. Frames where no note weighs take the previous frame's
    gain. Returns ``float32[num_frames]`` (add it to the log-mel), or ``None`` when no channel
    of ``notes`` changes its volume.
    """
    notes = list(notes)
    chans = sorted({n.channel for n in notes} & set(volume))
    if not chans:
        return None
    frames = np.arange(num_frames) / C.FRAME_RATE
    weights = np.zeros((len(chans) + 1, num_frames), dtype=np.float64)  # last row: unit gain
    rows = {ch: i for i, ch in enumerate(chans)}
    release = round(RELEASE_SECONDS * C.FRAME_RATE)
    for n in notes:
        row = rows.get(n.channel, len(chans))
        on = min(time_to_frame(n.start), num_frames)
        off = min(max(time_to_frame(n.end), on + 1) + release, num_frames)
        weights[row, on:off] += (n.velocity / 127.0) ** 4
    power = np.ones_like(weights)
    for ch, i in rows.items():
        times, gains = zip(*volume[ch], strict=True)
        idx = np.searchsorted(np.asarray(times), frames, side="right") - 1
        power[i] = np.asarray(gains)[np.maximum(idx, 0)] ** 2
    total = weights.sum(axis=0)
    mean = np.full(num_frames, np.nan)
    heard = total > 0
    mean[heard] = (weights * power).sum(axis=0)[heard] / total[heard]
    last = np.maximum.accumulate(np.where(heard, np.arange(num_frames), -1))
    mean = np.where(last >= 0, mean[np.maximum(last, 0)], power[:, 0].mean())
    return (0.5 * np.log(np.maximum(mean, 1e-12))).astype(np.float32)


def piano_roll(notes: Iterable[Note], num_frames: int) -> np.ndarray:
    """Onset/frame roll ``float32[ROLL_CHANNELS x num_frames]`` of ``notes``.

    Notes are written in start order, so where a re-struck key's spans touch, the later
    note's velocity wins. Notes starting at or after ``num_frames`` are cut off.
    """
    roll = np.zeros((C.ROLL_CHANNELS, num_frames), dtype=np.float32)
    for n in sorted(notes, key=lambda n: n.start):
        key = n.pitch - C.MIDI_MIN
        on = time_to_frame(n.start)
        if on >= num_frames:
            continue
        off = min(max(time_to_frame(n.end), on + 1), num_frames)
        vel = n.velocity / 127.0
        roll[key, on:off] = vel
        roll[C.N_KEYS + key, on] = vel
    return roll


def midi_to_roll(source: MidiSource, num_frames: int | None = None) -> np.ndarray:
    """Read a MIDI file and return its roll ``float32[ROLL_CHANNELS x T]``.

    ``T`` defaults to :meth:`NoteSequence.num_frames`.
    """
    seq = read_notes(source)
    return piano_roll(seq.notes, seq.num_frames() if num_frames is None else num_frames)
