"""MIDI -> piano roll: frame-exact checks on files built in code.

With 125 ticks per beat at 60 bpm one tick lasts exactly one frame (8 ms), so expected frame
indices can be read straight off the tick times.
"""

from __future__ import annotations

import io

import mido
import numpy as np
import pytest

from mel2mel import constants as C
from mel2mel.midi import MidiError, midi_to_roll, read_notes

K = C.N_KEYS


def _file(*tracks: list[tuple[int, mido.Message]], type: int = 1) -> mido.MidiFile:
    """A MIDI file from tracks given as (absolute tick, message) lists; 1 tick = 1 frame."""
    mid = mido.MidiFile(type=type, ticks_per_beat=125)
    for i, events in enumerate(tracks):
        track = mido.MidiTrack()
        if i == 0:
            track.append(mido.MetaMessage("set_tempo", tempo=1_000_000, time=0))
        now = 0
        for tick, msg in sorted(events, key=lambda e: e[0]):
            track.append(msg.copy(time=tick - now))
            now = tick
        mid.tracks.append(track)
    return mid


def on(tick: int, note: int, vel: int = 100, ch: int = 0) -> tuple[int, mido.Message]:
    return tick, mido.Message("note_on", note=note, velocity=vel, channel=ch)


def off(tick: int, note: int, ch: int = 0) -> tuple[int, mido.Message]:
    return tick, mido.Message("note_off", note=note, channel=ch)


def cc(tick: int, control: int, value: int, ch: int = 0) -> tuple[int, mido.Message]:
    return tick, mido.Message("control_change", control=control, value=value, channel=ch)


def sounding(roll: np.ndarray, note: int) -> list[int]:
    return np.flatnonzero(roll[note - C.MIDI_MIN]).tolist()


def onsets(roll: np.ndarray, note: int) -> list[int]:
    return np.flatnonzero(roll[K + note - C.MIDI_MIN]).tolist()


def test_single_note_frames_and_velocity() -> None:
    roll = midi_to_roll(_file([on(10, 60, vel=64), off(30, 60)]))
    assert roll.shape == (C.ROLL_CHANNELS, 31)
    assert roll.dtype == np.float32
    assert sounding(roll, 60) == list(range(10, 30))
    assert onsets(roll, 60) == [10]
    assert roll[60 - C.MIDI_MIN, 10] == pytest.approx(64 / 127)
    assert np.count_nonzero(roll) == 21


def test_tempo_change_is_honoured() -> None:
    # 60 bpm for 250 ticks (2 s), then 120 bpm: later ticks last half a frame.
    track = [
        (250, mido.MetaMessage("set_tempo", tempo=500_000)),
        on(500, 64),  # 2 s + 250 * 4 ms = 3.0 s -> frame 375
        off(750, 64),  # 4.0 s -> frame 500
    ]
    roll = midi_to_roll(_file(track))
    assert onsets(roll, 64) == [375]
    assert sounding(roll, 64) == list(range(375, 500))


def test_tempo_change_in_another_track_applies_to_all() -> None:
    conductor = [(100, mido.MetaMessage("set_tempo", tempo=2_000_000))]  # half speed after 0.8 s
    roll = midi_to_roll(_file(conductor, [on(150, 62), off(200, 62)]))
    assert onsets(roll, 62) == [200]  # 100 frames + 50 ticks * 2 frames
    assert sounding(roll, 62)[-1] == 299


def test_restruck_note_ends_previous_one() -> None:
    roll = midi_to_roll(_file([on(0, 60, 90), on(50, 60, 30), off(100, 60), off(150, 60)]))
    assert onsets(roll, 60) == [0, 50]
    assert sounding(roll, 60) == list(range(100))
    assert roll[60 - C.MIDI_MIN, 49] == pytest.approx(90 / 127)
    assert roll[60 - C.MIDI_MIN, 50] == pytest.approx(30 / 127)


def test_sustain_pedal_extends_until_release() -> None:
    events = [on(0, 60), cc(10, 64, 127), off(20, 60), on(30, 67), off(40, 67), cc(80, 64, 0)]
    events += [on(90, 72), off(100, 72)]  # after the pedal: not extended
    roll = midi_to_roll(_file(events))
    assert sounding(roll, 60) == list(range(80))
    assert sounding(roll, 67) == list(range(30, 80))
    assert sounding(roll, 72) == list(range(90, 100))


def test_pedal_restrike_and_other_channel() -> None:
    events = [cc(0, 64, 100), on(0, 60), off(20, 60), on(40, 60), off(60, 60), cc(80, 64, 10)]
    events += [on(0, 48, ch=1), off(10, 48, ch=1)]  # the pedal of channel 0 does not hold it
    seq = read_notes(_file(events))
    spans = [(round(n.start * 125), round(n.end * 125), n.channel) for n in seq.notes]
    assert spans == [(0, 10, 1), (0, 40, 0), (40, 80, 0)]


def test_note_on_velocity_zero_and_all_notes_off() -> None:
    events = [on(0, 60), on(10, 60, vel=0), on(20, 65), cc(35, 123, 0)]
    roll = midi_to_roll(_file(events))
    assert sounding(roll, 60) == list(range(10))
    assert sounding(roll, 65) == list(range(20, 35))


def test_drums_excluded_and_out_of_range_counted() -> None:
    events = [on(0, 36, ch=9), off(10, 36, ch=9), on(0, 20), off(5, 20), on(0, 109), off(5, 109)]
    events += [on(0, 21), off(5, 21), on(0, 108), off(5, 108)]
    with pytest.warns(UserWarning, match="dropped 2 note"):
        seq = read_notes(_file(events))
    assert seq.dropped_out_of_range == 2
    assert seq.dropped_drums == 1
    assert sorted(n.pitch for n in seq.notes) == [21, 108]
    roll = midi_to_roll(_file([on(0, 21), off(5, 21), on(0, 108), off(5, 108)]))
    assert onsets(roll, 21) == [0] and roll[K - 1, 0] > 0 and roll[2 * K - 1, 0] > 0


def test_type0_and_type1_give_the_same_roll() -> None:
    melody = [on(0, 60), off(40, 60), on(40, 62), off(80, 62)]
    bass = [on(0, 36, ch=1), off(80, 36, ch=1)]
    type1 = _file(melody, bass)
    type0 = _file(melody + bass, type=0)
    np.testing.assert_array_equal(midi_to_roll(type0), midi_to_roll(type1))


def test_roll_from_bytes_and_path_agree(tmp_path) -> None:
    mid = _file([on(3, 70), off(9, 70)])
    mid.save(tmp_path / "x.mid")
    buf = io.BytesIO()
    mid.save(file=buf)
    np.testing.assert_array_equal(midi_to_roll(tmp_path / "x.mid"), midi_to_roll(buf.getvalue()))
    assert midi_to_roll(buf.getvalue(), num_frames=5).shape == (C.ROLL_CHANNELS, 5)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "not a readable MIDI"),
        (b"RIFF....WAVEfmt not midi at all", "not a readable MIDI"),
        (b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x00", "not a readable MIDI"),  # truncated
    ],
)
def test_corrupt_input_raises_midi_error(payload: bytes, message: str) -> None:
    with pytest.raises(MidiError, match=message):
        read_notes(payload)


def test_empty_and_drum_only_files() -> None:
    with pytest.raises(MidiError, match="no playable notes"):
        read_notes(_file([]))
    with pytest.raises(MidiError, match="only drum notes"):
        read_notes(_file([on(0, 38, ch=9), off(5, 38, ch=9)]))
    with pytest.raises(MidiError, match="no such file"):
        read_notes("/nonexistent/song.mid")


def test_a_note_left_on_ends_with_the_file(tmp_path):
    # FluidSynth holds a note without note-off to the end of the file, end-of-track included.
    midi = mido.MidiFile(type=1, ticks_per_beat=480)
    track = mido.MidiTrack(
        [
            mido.Message("note_on", note=60, velocity=80, time=480),  # 0.5 s
            mido.Message("note_on", note=64, velocity=80, time=0),
            mido.Message("note_off", note=64, time=480),  # 1.0 s
            mido.MetaMessage("end_of_track", time=4800),  # 6.0 s
        ]
    )
    midi.tracks.append(track)
    seq = read_notes(midi)
    assert [(n.pitch, n.start, n.end) for n in seq.notes] == [(60, 0.5, 6.0), (64, 0.5, 1.0)]


def test_a_tempo_of_zero_is_refused():
    midi = mido.MidiFile(type=1, ticks_per_beat=480)
    midi.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=0, time=960)]))
    notes = [mido.Message("note_on", note=60, velocity=80), mido.Message("note_off", time=960)]
    midi.tracks.append(mido.MidiTrack(notes))
    with pytest.raises(MidiError, match="tempo of 0 microseconds per beat at tick 960"):
        read_notes(midi)
