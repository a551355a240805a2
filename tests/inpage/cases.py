"""MIDI test cases for the in-page path, built in code from the project's own material.

* ``example.mid``: the shipped example (type 1, four tracks, tempo changes);
* ``performed.mid``: a seeded performance of it (:func:`mel2mel.data.perform.perform`: timing,
  dynamics, sustain pedal) with channel volume and expression (CC7, CC11) added, a second
  channel, "reset all controllers" and "all notes off";
* ``type0.mid``: the example merged into one track (type 0);
* ``overlaps.mid``: re-struck keys, overlapping notes of one key, note-on with velocity 0,
  drums, notes outside the piano range, a pedal held over re-strikes.
"""

from __future__ import annotations

import io
from pathlib import Path

import mido

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "example.mid"


def _bytes(midi: mido.MidiFile) -> bytes:
    buf = io.BytesIO()
    midi.save(file=buf)
    return buf.getvalue()


def _absolute(track: mido.MidiTrack) -> list[tuple[int, mido.Message]]:
    tick, out = 0, []
    for msg in track:
        tick += msg.time
        out.append((tick, msg))
    return out


def _track(events: list[tuple[int, mido.Message]]) -> mido.MidiTrack:
    track, last = mido.MidiTrack(), 0
    for tick, msg in sorted(events, key=lambda e: e[0]):
        track.append(msg.copy(time=tick - last))
        last = tick
    return track


def performed() -> bytes:
    """A performance of the example with pedal, CC7/CC11, a second channel and resets."""
    from mel2mel.data.perform import perform

    data, _ = perform(str(EXAMPLE), seed=3, max_seconds=20.0)
    midi = mido.MidiFile(file=io.BytesIO(data))
    target = max(range(len(midi.tracks)), key=lambda i: len(midi.tracks[i]))
    events = [(t, m) for t, m in _absolute(midi.tracks[target]) if m.type != "end_of_track"]
    tpb = midi.ticks_per_beat
    end = max(t for t, _ in events)
    for k, t in enumerate(range(0, end, tpb // 2)):
        events.append((t, mido.Message("control_change", control=11, value=60 + (k * 13) % 67)))
    events.append((tpb * 3, mido.Message("control_change", control=7, value=70)))
    events.append((tpb * 9, mido.Message("control_change", control=7, value=110)))
    for k in range(12):  # a second channel at another volume
        t = tpb * k
        events.append((t, mido.Message("note_on", channel=1, note=40 + k, velocity=50 + 3 * k)))
        events.append((t + tpb // 3, mido.Message("note_off", channel=1, note=40 + k)))
    events.append((0, mido.Message("control_change", channel=1, control=7, value=40)))
    events.append((tpb * 6, mido.Message("control_change", channel=1, control=121, value=0)))
    events.append((tpb * 11, mido.Message("control_change", channel=1, control=123, value=0)))
    midi.tracks[target] = _track(events)
    return _bytes(midi)


def type0() -> bytes:
    """The example as a type-0 file."""
    midi = mido.MidiFile(str(EXAMPLE))
    out = mido.MidiFile(type=0, ticks_per_beat=midi.ticks_per_beat)
    out.tracks.append(mido.merge_tracks(midi.tracks))
    return _bytes(out)


def overlaps() -> bytes:
    """Re-strikes, overlaps of one key, velocity-0 note-offs, drums, out-of-range notes."""
    on = lambda t, n, v=90, ch=0: (t, mido.Message("note_on", channel=ch, note=n, velocity=v))  # noqa: E731
    off = lambda t, n, ch=0: (t, mido.Message("note_off", channel=ch, note=n))  # noqa: E731
    cc = lambda t, c, v, ch=0: (t, mido.Message("control_change", channel=ch, control=c, value=v))  # noqa: E731
    ev = [on(0, 60), on(120, 60, 70), off(300, 60), off(400, 60)]  # overlap of one key
    ev += [on(480, 64), (700, mido.Message("note_on", note=64, velocity=0))]  # velocity 0
    ev += [cc(800, 64, 100), on(820, 67), off(900, 67), on(1000, 67, 40), off(1100, 67)]
    ev += [cc(1400, 64, 0), on(1500, 36, 100, 9), off(1600, 36, 9)]  # drums
    ev += [on(1500, 10), off(1700, 10), on(1500, 120), off(1700, 120)]  # outside A0..C8
    ev += [on(1800, 72), on(1800, 76), on(1810, 72, 30), off(2400, 76)]  # left on to the end
    midi = mido.MidiFile(type=1, ticks_per_beat=240)
    midi.tracks.append(_track([(0, mido.MetaMessage("set_tempo", tempo=400_000)),
                               (900, mido.MetaMessage("set_tempo", tempo=700_000))]))  # fmt: skip
    midi.tracks.append(_track(ev))
    return _bytes(midi)


def cases() -> dict[str, bytes]:
    """Every case by file name."""
    return {
        "example.mid": EXAMPLE.read_bytes(),
        "performed.mid": performed(),
        "type0.mid": type0(),
        "overlaps.mid": overlaps(),
    }
