"""FluidSynth rendering: program forcing, removed notes, and audio aligned with the roll."""

from __future__ import annotations

import mido
import numpy as np
import pytest
from conftest import SOUNDFONT, requires_fluidsynth, write_midi

from mel2mel import constants as C
from mel2mel.audio import log_mel, mel_filterbank
from mel2mel.data.fluidsynth import RenderSettings, force_program, render_midi
from mel2mel.midi import load_midi, piano_roll, read_notes

SETTINGS = RenderSettings(str(SOUNDFONT))


def absolute(track: mido.MidiTrack) -> list[tuple[int, str]]:
    """(absolute tick, message without time) of every message of a track."""
    tick, out = 0, []
    for msg in track:
        tick += msg.time
        out.append((tick, str(msg.copy(time=0))))
    return out


def test_force_program_rewrites_channels_and_keeps_times(tmp_path):
    extra = [
        (0.0, mido.Message("control_change", channel=0, control=0, value=1)),  # bank select
        (0.0, mido.Message("program_change", channel=0, program=33)),
        (0.0, mido.Message("program_change", channel=3, program=70)),
        (0.3, mido.Message("note_on", channel=9, note=36, velocity=100)),  # drum
        (0.4, mido.Message("note_off", channel=9, note=36)),
        (0.5, mido.Message("note_on", channel=3, note=110, velocity=100)),  # above C8
        (0.6, mido.Message("note_on", channel=3, note=62, velocity=70)),
        (0.7, mido.Message("note_off", channel=3, note=110)),
        (0.9, mido.Message("note_off", channel=3, note=62)),
        (1.0, mido.Message("sysex", data=[0x41, 0x10, 0x42])),
        (1.2, mido.Message("control_change", channel=0, control=64, value=127)),
    ]
    path = write_midi(tmp_path / "a.mid", [(60, 0.1, 0.5, 90), (20, 0.2, 0.3, 90)], extra=extra)
    original = load_midi(path)
    forced, stats = force_program(original, 24)

    assert stats.channels == (0, 3) and stats.drum_notes == 1 and stats.out_of_range_notes == 2
    msgs = [m for t in forced.tracks for m in t]
    programs = [(m.channel, m.program) for m in msgs if m.type == "program_change"]
    assert programs == [(0, 24), (3, 24)]
    assert forced.tracks[0][0].type == "program_change"  # before anything else
    assert not any(m.type == "sysex" or getattr(m, "control", None) == 0 for m in msgs)
    notes = [m for m in msgs if m.type in ("note_on", "note_off")]
    assert all(m.channel != 9 and C.MIDI_MIN <= m.note <= C.MIDI_MAX for m in notes)
    # Every kept message keeps its absolute tick; the input is untouched.
    track = absolute(forced.tracks[1])
    end = track[-1][0]
    assert track[-5:-1] == [  # at the end: pedal up and all notes off on every channel
        (end, f"control_change channel={ch} control={cc} value=0 time=0")
        for ch in (0, 3)
        for cc in (64, 123)
    ]
    track = track[:-5] + track[-1:]
    kept = [e for e in absolute(original.tracks[1]) if e in track]
    assert kept == track
    assert (1152, "control_change channel=0 control=64 value=127 time=0") in kept
    assert any(m.type == "program_change" and m.program == 33 for m in original.tracks[1])
    # The forced file holds exactly the notes the roll is made of.
    a, b = read_notes(original, warn=False), read_notes(forced, warn=False)
    strip = [(n.pitch, n.start, n.end, n.velocity, n.channel) for n in a.notes]
    assert strip == [(n.pitch, n.start, n.end, n.velocity, n.channel) for n in b.notes]
    assert b.dropped_out_of_range == 0 and b.dropped_drums == 0


@requires_fluidsynth
def test_notes_left_on_end_with_the_file(tmp_path):
    # An organ note without note-off, and one held by the pedal to the end: FluidSynth would
    # sustain their looped samples forever; both end with the file, as the roll says.
    extra = [
        (0.2, mido.Message("note_on", note=60, velocity=90)),
        (0.5, mido.Message("control_change", control=64, value=127)),
    ]
    path = write_midi(tmp_path / "hang.mid", [(67, 0.6, 0.9, 90)], extra=extra)
    forced, _ = force_program(load_midi(path), 19)  # church organ: looped samples
    audio = render_midi(forced, RenderSettings(str(SOUNDFONT)), work_dir=tmp_path)
    seq = read_notes(path)
    assert [round(n.end, 3) for n in seq.notes] == [1.5, 1.5]
    assert 1.5 * C.SAMPLE_RATE < len(audio) < 6 * C.SAMPLE_RATE  # release and reverb only
    assert np.abs(audio[-C.SAMPLE_RATE // 10 :]).max() < 1e-3


def _pitch_bin(pitch: int) -> int:
    """The mel bin whose filter weighs the note's fundamental most."""
    hz = 440.0 * 2 ** ((pitch - 69) / 12)
    fft_bin = round(hz * C.N_FFT / C.SAMPLE_RATE)
    return int(np.argmax(mel_filterbank()[:, fft_bin]))


@pytest.fixture(scope="module")
def single_notes(tmp_path_factory):
    """Three separate piano notes at known times, rendered (roll, mel, audio)."""
    if not SOUNDFONT.is_file():
        pytest.skip("needs MuseScore General")
    notes = [(57, 0.30, 0.4, 100), (69, 1.05, 0.4, 100), (76, 1.83, 0.4, 100)]
    path = write_midi(tmp_path_factory.mktemp("notes") / "n.mid", notes)
    seq = read_notes(path)
    roll = piano_roll(seq.notes, seq.num_frames())
    forced, _ = force_program(load_midi(path), 0)
    audio = render_midi(forced, SETTINGS, work_dir=path.parent)
    return notes, roll, log_mel(audio), audio, path


@requires_fluidsynth
def test_onsets_in_the_mel_match_the_roll_within_one_frame(single_notes):
    notes, roll, mel, audio, _ = single_notes
    assert mel.shape == (C.N_MELS, C.num_frames(len(audio)))
    assert 0.0 < np.abs(audio).max() < 1.0
    for pitch, start, _, _ in notes:
        onset = int(np.flatnonzero(roll[C.N_KEYS + pitch - C.MIDI_MIN])[0])
        assert onset == round(start * C.FRAME_RATE)
        band = mel[_pitch_bin(pitch)]
        # The steepest rise of the *linear* magnitude is where the (symmetric) analysis window
        # is centred on the attack; in log units the first frames that touch it jump most.
        window = np.arange(onset - 8, onset + 9)
        rise = np.exp(band[window]) - np.exp(band[window - 1])
        assert abs(int(window[np.argmax(rise)]) - onset) <= 1, (pitch, onset)
        assert band[onset + 3] > band[onset - 3] + 2.0  # a clear attack in the note's own bin


@requires_fluidsynth
def test_program_forcing_changes_the_sound(single_notes):
    _, _, piano_mel, piano, path = single_notes
    forced, _ = force_program(load_midi(path), 56)  # trumpet
    trumpet = render_midi(forced, SETTINGS, work_dir=path.parent)
    assert abs(len(trumpet) - len(piano)) < C.SAMPLE_RATE  # same notes, other release tails
    n = min(piano_mel.shape[1], C.num_frames(len(trumpet)))
    active = slice(int(0.3 * C.FRAME_RATE), int(2.2 * C.FRAME_RATE))
    diff = np.abs(log_mel(trumpet)[:, :n] - piano_mel[:, :n])[:, active]
    assert diff.mean() > 1.0
    assert not list(path.parent.glob(".*.tmp-*"))  # temporary files are cleaned up


@requires_fluidsynth
def test_drum_and_out_of_range_notes_make_no_sound(tmp_path):
    extra = [
        (0.1, mido.Message("note_on", channel=9, note=38, velocity=120)),
        (0.3, mido.Message("note_off", channel=9, note=38)),
    ]
    path = write_midi(tmp_path / "x.mid", [(15, 0.1, 0.5, 120), (115, 0.2, 0.5, 120)], extra=extra)
    forced, stats = force_program(load_midi(path), 0)
    assert stats.drum_notes == 1 and stats.out_of_range_notes == 2 and stats.channels == ()
    audio = render_midi(forced, SETTINGS, work_dir=tmp_path)
    assert np.abs(audio).max() < 1e-6
