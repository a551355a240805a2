"""Note beats (mel2mel.models.beats) and their measurement (mel2mel.evaluation.note_beats)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import SOUNDFONT, debug_model, requires_fluidsynth, write_midi

from mel2mel import Synthesizer
from mel2mel import constants as C
from mel2mel.audio import mel_band_frequencies
from mel2mel.data.fluidsynth import RenderSettings, render_midi
from mel2mel.evaluation.note_beats import (
    PHASE_SECONDS,
    PROBE_GAP,
    PROBE_KEYS,
    PROBE_SECONDS,
    fit_beats,
    fit_phases,
    probe_midi,
)
from mel2mel.midi import Note, piano_roll
from mel2mel.models.beats import ATTACK_FRAMES, MAX_HARMONIC, BeatNotes, NoteBeats
from mel2mel.models.export import load_acoustic, save_pretrained
from mel2mel.synthesis.notes import NoteRoll

A4 = 69 - C.MIDI_MIN  # key index of A4 (440 Hz)
DETUNE = 2 ** (3 / 1200) - 1  # 3 cents


def two_instruments(depth: float = 0.8, phases: bool = True) -> NoteBeats:
    """ "a" at (0, 0) beats (phase 0.5 h for every key), "b" at (2, 0) does not."""
    table = tuple(tuple(0.5 * h for h in range(1, MAX_HARMONIC + 1)) for _ in range(C.N_KEYS))
    return NoteBeats(
        ("a", "b"), ((0.0, 0.0), (2.0, 0.0)), (DETUNE, DETUNE), (depth, 0.0),
        (table, ()) if phases else (),
    )  # fmt: skip


def one_note(key: int = A4, on: int = 0, off: int = 600) -> BeatNotes:
    return BeatNotes(np.array([on]), np.array([off]), np.array([key]), np.array([0.8], np.float32))


def test_a_lone_harmonic_beats_as_two_layers_do():
    beats, mel = two_instruments(), torch.full((C.N_MELS, 600), -4.0)
    out = beats.apply(mel, one_note(), 0, torch.tensor([0.0, 0.0]))
    band = int(np.argmin(np.abs(mel_band_frequencies() - 440.0)))  # h1 only: 880 Hz is far
    t = np.arange(600) / C.FRAME_RATE
    r = 0.8 * np.minimum(1.0, np.arange(600) / ATTACK_FRAMES)  # grown from 0 at the onset
    m = 1 + 2 * r * np.cos(2 * np.pi * 440 * DETUNE * t + 0.5) / (1 + r * r)
    np.testing.assert_allclose((out[band] - mel[band]).numpy(), 0.5 * np.log(m), atol=1e-4)
    # mean power kept over a whole beat period (1 / 0.76 Hz = 164 frames) once grown
    period = round(C.FRAME_RATE / (440 * DETUNE))
    grown = slice(ATTACK_FRAMES, ATTACK_FRAMES + period)
    assert abs(float(torch.exp(2 * (out[band, grown] - mel[band, grown])).mean()) - 1) < 0.02
    far = mel_band_frequencies() > C.SAMPLE_RATE / 2 - 50  # no harmonic of A4 lands there
    torch.testing.assert_close(out[far], mel[far])


def test_a_tremolo_moves_every_harmonic_at_one_rate():
    table = tuple((0.7,) * MAX_HARMONIC for _ in range(C.N_KEYS))
    beats = NoteBeats(("v",), ((0.0,),), (0.0,), (0.3,), (table,), tremolo=(4.2,))
    mel = torch.full((C.N_MELS, 400), -4.0)
    out = beats.apply(mel, one_note(key=A4 - 24), 0, torch.zeros(1))  # A2: 110 Hz
    t = np.arange(400)
    r = 0.3 * np.minimum(1.0, t / ATTACK_FRAMES)
    m = 1 + 2 * r * np.cos(2 * np.pi * 4.2 * t / C.FRAME_RATE + 0.7) / (1 + r * r)
    for hz in (110.0, 220.0, 440.0):  # harmonics 1, 2 and 4 alone in their bands
        band = int(np.argmin(np.abs(mel_band_frequencies() - hz)))
        np.testing.assert_allclose((out[band] - mel[band]).numpy(), 0.5 * np.log(m), atol=1e-4)


def test_notes_from_a_roll_are_the_notes_of_the_roll():
    notes = [
        Note(60, 0.1, 0.5, 90, 0, 0),
        Note(60, 0.5, 0.9, 50, 0, 0),
        Note(64, 0.2, 1.0, 70, 0, 0),
    ]
    got, want = (
        BeatNotes.from_roll(piano_roll(notes, 200)),
        NoteRoll(notes, 200).notes_near(0, 200, 0),
    )
    for field in ("on", "off", "key", "vel"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field))


def test_no_beats_without_depth_strength_or_notes():
    beats, mel = two_instruments(), torch.full((C.N_MELS, 50), -4.0)
    at_b = torch.tensor([2.0, 0.0])
    assert torch.equal(beats.apply(mel, one_note(), 0, at_b), mel)  # "b": depth 0
    assert torch.equal(beats.apply(mel, one_note(), 0, torch.zeros(2), strength=0.0), mel)
    none = BeatNotes(*(np.zeros(0, np.int64) for _ in range(3)), np.zeros(0, np.float32))
    assert torch.equal(beats.apply(mel, none, 0, torch.zeros(2)), mel)
    after = one_note(on=0, off=10)  # released at frame 10: beats until 10 + hold
    out = beats.apply(mel, after, 0, torch.zeros(2))
    assert (out[:, 10 + beats.hold :] == mel[:, 10 + beats.hold :]).all()
    assert (out[:, : 10 + beats.hold] != mel[:, : 10 + beats.hold]).any()


def test_chunks_equal_the_whole_and_phases_follow_the_seed():
    notes = [Note(p, s, s + d, v, 0, 0) for p, s, d, v in [(60, 0.1, 2.0, 90), (67, 1.0, 1.5, 60)]]
    roll = NoteRoll(notes, 400)
    mel = torch.randn(C.N_MELS, 400) * 0.3 - 5.0
    for beats in (two_instruments(), two_instruments(phases=False)):
        emb = torch.zeros(2)
        whole = beats.apply(mel, roll.notes_near(0, 400, beats.hold), 0, emb, seed=3)
        parts = [
            beats.apply(mel[:, a:b], roll.notes_near(a, b, beats.hold), a, emb, seed=3)
            for a, b in ((0, 123), (123, 250), (250, 400))
        ]
        torch.testing.assert_close(torch.cat(parts, dim=1), whole)
    drawn = two_instruments(phases=False)
    near = roll.notes_near(0, 400, drawn.hold)
    one = drawn.apply(mel, near, 0, torch.zeros(2), seed=3)
    other = drawn.apply(mel, near, 0, torch.zeros(2), seed=4)
    assert (one - other).abs().max() > 0.1
    measured = two_instruments()  # a measured table ignores the seed
    torch.testing.assert_close(
        measured.apply(mel, near, 0, torch.zeros(2), seed=3),
        measured.apply(mel, near, 0, torch.zeros(2), seed=4),
    )


def test_a_moving_timbre_beats_where_it_is_near_a_beating_instrument():
    beats, mel = two_instruments(), torch.full((C.N_MELS, 300), -4.0)
    emb = torch.zeros(2, 300)
    emb[0, 150:] = 2.0  # "a" for 150 frames, then "b"
    out = beats.apply(mel, one_note(), 0, emb)
    assert (out[:, :150] - mel[:, :150]).abs().max() > 0.2
    assert (out[:, 150:] - mel[:, 150:]).abs().max() < 1e-6


def test_beats_round_trip_and_validate():
    beats = two_instruments()
    assert NoteBeats.from_dict(json.loads(json.dumps(beats.to_dict()))).to_dict() == (
        beats.to_dict()
    )
    with pytest.raises(ValueError, match="depth"):
        NoteBeats(("a",), ((0.0,),), (0.001,), (1.0,))
    with pytest.raises(ValueError, match="phases"):
        NoteBeats(("a",), ((0.0,),), (0.001,), (0.5,), (((0.0,) * 3,) * C.N_KEYS,))
    with pytest.raises(ValueError, match="tremolo"):
        NoteBeats(("a",), ((0.0,),), (0.0,), (0.5,), tremolo=(-1.0,))
    pulsing = NoteBeats(("a", "b"), ((0.0,), (1.0,)), (0.0, 0.001), (0.2, 0.5), tremolo=(4.2, 0))
    doc = json.loads(json.dumps(pulsing.to_dict()))
    assert [r.get("tremolo") for r in doc["instruments"]] == [4.2, None]
    assert NoteBeats.from_dict(doc) == pulsing


def layered_note(f0: float, seconds: float, detune: float, depth: float, phase0: float):
    """Harmonics 1-8 of ``f0`` (amplitude 1 / h), each from two layers ``detune`` apart with
    the second at ``depth``; the beat of harmonic h starts at phase ``phase0 * h``."""
    t = np.arange(round(seconds * C.SAMPLE_RATE)) / C.SAMPLE_RATE
    out = np.zeros_like(t)
    for h in range(1, 9):
        if h * f0 * (1 + detune) >= C.SAMPLE_RATE / 2:
            break
        out += np.sin(2 * np.pi * h * f0 * t) / h
        out += depth * np.sin(2 * np.pi * h * f0 * (1 + detune) * t + phase0 * h) / h
    return out


def probe_audio(keys, seconds, detune, depth):
    gap = np.zeros(round(PROBE_GAP * C.SAMPLE_RATE))
    parts = []
    for key in keys:
        f0 = 440.0 * 2 ** ((key - 69) / 12)
        parts += [layered_note(f0, seconds, detune, depth, 1.0), gap]
    return np.concatenate(parts).astype(np.float32) * 0.1


def tremolo_audio(keys, seconds: float, rate: float, swing_db: float) -> np.ndarray:
    """Harmonics 1-8 of each key (amplitude 1 / h), their power swinging by ``swing_db`` at
    ``rate`` Hz from each note-on, decaying 3 dB a second."""
    gap = np.zeros(round(PROBE_GAP * C.SAMPLE_RATE))
    t = np.arange(round(seconds * C.SAMPLE_RATE)) / C.SAMPLE_RATE
    gain = 10 ** ((swing_db / 2 * np.sin(2 * np.pi * rate * t) - 3 * t) / 20)
    parts = []
    for key in keys:
        f0 = 440.0 * 2 ** ((key - 69) / 12)
        h = np.arange(1, 9)[:, None]
        parts += [(np.sin(2 * np.pi * h * f0 * t) / h).sum(0) * gain, gap]
    return np.concatenate(parts).astype(np.float32) * 0.1


def test_the_probe_measures_a_tremolo_at_one_rate_for_every_key():
    fit = fit_beats(tremolo_audio(PROBE_KEYS, PROBE_SECONDS, 4.5, 3.0))
    assert fit.tremolo == pytest.approx(4.5, abs=0.1) and fit.detune == 0
    # two layers at depth d swing the power by ((1 + d) / (1 - d))^2: 3 dB at d = 0.171
    assert fit.depth == pytest.approx(0.171, abs=0.02), fit
    slow = fit_beats(tremolo_audio(PROBE_KEYS, PROBE_SECONDS, 4.5, 0.5))  # under the threshold
    assert slow.depth == 0


def test_the_probe_measures_detune_and_depth_and_refuses_a_steady_tone():
    fit = fit_beats(probe_audio(PROBE_KEYS, PROBE_SECONDS, DETUNE, 0.6))
    assert fit.depth > 0 and abs(fit.detune / DETUNE - 1) < 0.05
    assert abs(fit.depth - 0.6) < 0.1 and fit.agreement > 0.8
    steady = fit_beats(probe_audio(PROBE_KEYS, PROBE_SECONDS, 0.0, 0.0))
    assert steady.depth == 0


def test_the_phases_are_measured_per_key_and_harmonic():
    keys = range(C.MIDI_MIN, C.MIDI_MAX + 1)
    phases = fit_phases(probe_audio(keys, PHASE_SECONDS, DETUNE, 0.6), DETUNE)
    # the second layer leads by phase0 * h = h radians: the beat's phase at the onset
    k = 60 - C.MIDI_MIN
    err = [abs(math.remainder(phases[k, h - 1] - h, 2 * math.pi)) for h in range(1, 5)]
    assert max(err) < 0.3
    assert (phases[-1, 1:] == 0).all()  # C8's harmonics lie past Nyquist


@requires_fluidsynth
def test_musescore_synth_lead_beats_its_vibraphone_pulses_and_its_piano_does_neither(tmp_path):
    settings = RenderSettings(str(SOUNDFONT))
    lead = fit_beats(render_midi(probe_midi(80), settings, work_dir=tmp_path))
    vibraphone = fit_beats(render_midi(probe_midi(11), settings, work_dir=tmp_path))
    piano = fit_beats(render_midi(probe_midi(0), settings, work_dir=tmp_path))
    assert lead.depth > 0.5 and abs(1200 * math.log2(1 + lead.detune) - 2.0) < 0.3
    assert lead.tremolo == 0
    assert vibraphone.tremolo == pytest.approx(4.2, abs=0.15) and vibraphone.depth > 0.08
    assert piano.depth == 0


def test_exported_beats_are_drawn_by_the_synthesizer(tmp_path):
    model = debug_model([("Synth 0", 80), ("Synth 1", 81)])
    emb = tuple(map(tuple, model.embedding.weight.detach().tolist()))
    table = tuple(tuple(0.25 * h for h in range(1, MAX_HARMONIC + 1)) for _ in range(C.N_KEYS))
    beats = NoteBeats(("Synth 0", "Synth 1"), emb, (DETUNE, DETUNE), (0.8, 0.0), (table, ()))
    model.note_beats = beats
    text = save_pretrained(model, tmp_path / "m")[1].read_text()
    assert len(text.splitlines()) < 400  # a list of numbers takes one line (2,816 phases)
    loaded = load_acoustic(tmp_path / "m")
    assert loaded.note_beats == beats
    midi = write_midi(tmp_path / "a.mid", [(60, 0.1, 2.5, 90), (64, 0.5, 2.0, 70)])
    on = Synthesizer(loaded, "griffinlim", timbre_library=False, seed=2)
    off = Synthesizer(loaded, "griffinlim", timbre_library=False, beats=0.0)
    chunked = Synthesizer(
        loaded, "griffinlim", timbre_library=False, seed=2, chunk_frames=100, context_frames=50
    )
    base, beating = off.mel(midi, "Synth 0"), on.mel(midi, "Synth 0")
    assert np.abs(beating - base).max() > 0.3
    np.testing.assert_array_equal(on.mel(midi, "Synth 1"), off.mel(midi, "Synth 1"))
    mixed = chunked.mel(midi, "Synth 0")
    plain = Synthesizer(
        loaded, "griffinlim", timbre_library=False, beats=0.0, chunk_frames=100, context_frames=50
    ).mel(midi, "Synth 0")
    np.testing.assert_allclose(mixed - plain, beating - base, atol=1e-4)  # exact in chunks


@requires_fluidsynth
def test_train_beats_writes_the_measured_table(tiny_dataset, tmp_path, capsys):
    from mel2mel.cli import main

    model = debug_model([("Grand Piano", 0), ("Trumpet", 56)])
    save_pretrained(model, tmp_path / "plain")
    args = ["train", "beats", "--model", str(tmp_path / "plain"), "--data", str(tiny_dataset)]
    assert main([*args, "-o", str(tmp_path / "b"), "--no-progress"]) == 0
    assert "0 of 2 instruments beat" in capsys.readouterr().out
    loaded = load_acoustic(tmp_path / "b")
    assert loaded.note_beats is not None and loaded.note_beats.depth == (0.0, 0.0)
    torch.testing.assert_close(loaded.state_dict(), model.state_dict())  # weights unchanged
    save_pretrained(debug_model([("Grand Piano", 0), ("Synth Lead", 80)]), tmp_path / "other")
    args[3] = str(tmp_path / "other")
    assert main([*args, "-o", str(tmp_path / "c")]) == 2
    assert "no instrument(s) Synth Lead" in capsys.readouterr().err
