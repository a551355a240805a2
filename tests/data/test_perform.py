"""Performance augmentation, generated textures, the derived corpus and channel volume.

The augmentation tests check what a performance must have (velocities over the whole range,
pedal at harmonic changes, transposition inside A0..C8, reproducibility) on the notes read back
from the written MIDI, the path the builder takes. The channel-volume tests compare
:func:`mel2mel.midi.log_gain` with what FluidSynth itself does to the level.
"""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import mido
import numpy as np
import pytest
from conftest import SOUNDFONT, TUNES, requires_fluidsynth, tune_notes

from mel2mel import constants as C
from mel2mel.audio import log_mel
from mel2mel.constants import DB_PER_NEPER
from mel2mel.data import corpus
from mel2mel.data.build import build_dataset
from mel2mel.data.fluidsynth import RenderSettings, render_midi
from mel2mel.data.perform import PNote, dynamics, pedal_events, perform, write_midi
from mel2mel.data.textures import (
    FIGURES,
    solo_notes,
    solo_piece,
    strikes_notes,
    strikes_piece,
    texture_notes,
    texture_piece,
)
from mel2mel.midi import log_gain, read_notes


def score(midi_writer, tmp_path: Path) -> Path:
    """A 24-s, four-voice "score": one tune per voice, one velocity, no pedal."""
    notes = []
    for k, offset in enumerate((0, 4, 7, 12)):
        for p, s, d, _ in tune_notes(TUNES[[0, 1, 12, 20][k]]):
            notes += [(p + offset - 12 * (k == 0), s, d, 90), (p + offset, s + 12, d, 90)]
    return midi_writer(tmp_path / "score.mid", notes)


def test_write_midi_round_trips_notes_and_pedal():
    notes = [PNote(60, 0.5, 1.0, 30), PNote(64, 0.5, 2.0, 100, channel=1), PNote(60, 0.9, 1.5, 80)]
    seq = read_notes(write_midi(notes, [(1.2, True), (1.8, False)]))
    got = [(n.pitch, round(n.start, 3), round(n.end, 3), n.velocity) for n in seq.notes]
    # The first C4 is re-struck at 0.9 s (ends there); the second is held by the pedal to 1.8 s.
    assert got == [(60, 0.5, 0.9, 30), (64, 0.5, 2.0, 100), (60, 0.9, 1.8, 80)]


def test_performance_is_seeded_and_varied(midi_writer, tmp_path):
    src = score(midi_writer, tmp_path)
    a, pa = perform(src, 7, max_seconds=10)
    b, pb = perform(src, 7, max_seconds=10)
    c, _ = perform(src, 8, max_seconds=10)
    assert a == b and pa == pb and a != c
    json.dumps(pa)  # recorded as plain JSON
    seq = read_notes(a)
    assert seq.duration < 10 * 1.4 * 1.6 + 1  # an excerpt, even at the slowest tempo
    assert {"tempo", "transpose", "dynamics", "pedal", "articulation"} <= set(pa)


def test_performances_cover_velocities_registers_and_pedal(midi_writer, tmp_path):
    src = score(midi_writer, tmp_path)
    velocities, pedals, shifts = [], set(), set()
    for seed in range(24):
        data, params = perform(src, seed, max_seconds=12)
        seq = read_notes(data)
        velocities += [n.velocity for n in seq.notes]
        assert all(C.MIDI_MIN <= n.pitch <= C.MIDI_MAX for n in seq.notes)
        pedals.add(params["pedal"])
        shifts.add(params["transpose"])
        midi = mido.MidiFile(file=io.BytesIO(data))
        cc = [m for t in midi.tracks for m in t if m.type == "control_change"]
        assert bool(cc) == (params["pedal"] != "none")
    v = np.array(velocities)
    assert v.min() <= 15 and v.max() >= 120
    for lo, hi in ((1, 39), (40, 89), (90, 127)):  # every band well represented
        assert ((v >= lo) & (v <= hi)).mean() > 0.1
    assert pedals == {"none", "harmonic", "long"}
    assert len(shifts) >= 8


def test_harmonic_pedal_changes_at_new_harmony():
    c_major = [PNote(p, 0.0, 0.4, 60) for p in (48, 52, 55)] + [PNote(64, 0.5, 0.9, 60)]
    g_major = [PNote(p, 1.0, 1.4, 60) for p in (43, 47, 50)]
    events = pedal_events(c_major + g_major, np.random.default_rng(0), "harmonic")
    downs = [t for t, d in events if d]
    ups = [t for t, d in events if not d]
    # down just after the C chord, lifted at the G chord (not at the E of the same harmony)
    assert len(downs) == 2 and 0.0 < downs[0] < 0.15 and 1.0 < downs[1] < 1.15
    assert ups[0] == pytest.approx(1.03) and ups[-1] == pytest.approx(1.4)


def test_dynamics_follow_the_phrase_curve_and_melody():
    notes = [PNote(p, t * 0.5, t * 0.5 + 0.4, 64) for t in range(40) for p in (48, 60, 72)]
    out, params = dynamics(notes, np.random.default_rng(3), level_range=(20, 110))
    v = np.array([n.velocity for n in out]).reshape(40, 3)
    assert params["melody"] >= 0 and np.mean(v[:, 2] - v[:, 1]) == pytest.approx(
        params["melody"], abs=4
    )
    assert v.max() - v.min() > 40  # a crescendo or diminuendo, not one level


def test_textures_cover_every_figure_in_every_register():
    figures, lows = set(), []
    for seed in range(40):
        notes, params = texture_notes(seed, seconds=10)
        figures |= {s["figure"] for s in params["sections"]}
        lows += [s["low"] for s in params["sections"]]
        assert notes and all(C.MIDI_MIN <= n.pitch <= C.MIDI_MAX for n in notes)
    assert figures == set(FIGURES)
    assert min(lows) < 36 and max(lows) > 70
    data, params = texture_piece(5, 8.0)
    assert data == texture_piece(5, 8.0)[0] and params["kind"] == "texture"
    assert read_notes(data).duration < 10


def test_strikes_cover_every_velocity_alone_with_decays():
    vels, pitches, ramps = [], [], 0
    for seed in range(12):
        notes, params = strikes_notes(seed, 15.0)
        assert notes and max(n.end for n in notes) <= 15.0
        vels += [n.velocity for n in notes]
        pitches += [n.pitch for n in notes]
        ramps += sum(g["kind"] == "ramp" for g in params["groups"])
        onsets = sorted({n.start for n in notes})
        for a, b in itertools.pairwise(onsets):  # one strike at a time, then a rest
            assert max(n.end for n in notes if n.start == a) < b
    counts = np.histogram(vels, bins=[1, 20, 40, 60, 80, 100, 128])[0]
    assert counts.min() > 0.08 * len(vels), counts  # about uniform over 1..127
    assert min(pitches) < 40 and max(pitches) > 90 and ramps > 0
    data, params = strikes_piece(3, 8.0)
    assert data == strikes_piece(3, 8.0)[0] and params["kind"] == "strikes"
    assert data != strikes_piece(4, 8.0)[0] and read_notes(data).duration <= 8.0 + 1e-3


def test_solos_are_sparse_mostly_soft_lines_over_the_keyboard():
    vels, pitches, alone = [], [], 0
    for seed in range(12):
        notes, params = solo_notes(seed, 15.0)
        assert notes and max(n.end for n in notes) <= 15.0
        assert all(C.MIDI_MIN <= n.pitch <= C.MIDI_MAX for n in notes)
        vels += [n.velocity for n in notes]
        pitches += [n.pitch for n in notes]
        onsets = sorted({n.start for n in notes})
        assert len(notes) <= 2 * len(onsets)  # a line, at most one voice below it
        alone += sum(sum(n.start == t for n in notes) == 1 for t in onsets)
        for a, b in itertools.pairwise(onsets):  # one note (or dyad) at a time
            assert max(n.end for n in notes if n.start == a) <= b + 1e-9
        assert {"low", "span", "level", "legato"} <= set(params["phrases"][0])
    vels = np.array(vels)
    assert np.mean(vels < 32) > 0.4 and np.mean(vels >= 90) > 0.1  # mostly soft, some loud
    assert vels.min() <= 5 and alone > 0.7 * len(set(pitches)) and alone > 100
    assert min(pitches) < 36 and max(pitches) > 96
    data, params = solo_piece(3, 8.0)
    assert data == solo_piece(3, 8.0)[0] and params["kind"] == "solo"
    assert data != solo_piece(4, 8.0)[0] and read_notes(data).duration <= 8.0 + 1e-3


def test_derived_pieces_share_the_split_of_their_score():
    scores = corpus.music21_pieces()[:40]
    plain = corpus.derived_pieces(scores, variants=2, textures=30, seed=0, max_seconds=15)
    pieces = corpus.derived_pieces(
        scores, variants=2, textures=30, strikes=20, solos=10, seed=0, max_seconds=15
    )
    assert pieces[: len(plain)] == plain  # strikes and solos are added, nothing else moves
    assert len(pieces) == 40 * 3 + 30 + 20 + 10
    assert pieces[-11].id == "strikes-0019" and pieces[-11].recipe[0] == "strikes"
    assert pieces[-1].id == "solo-0009" and pieces[-1].recipe == ("solo", pieces[-1].recipe[1], 15)
    by_id = {p.id: p for p in pieces}
    for p in pieces:
        if p.group is not None:
            assert p.split == by_id[p.group].split and p.recipe[0] == "perform"
    textures = [p for p in pieces if p.recipe and p.recipe[0] == "texture"]
    assert {p.split for p in textures} == {"train", "valid", "test"}
    assert (
        corpus.derived_pieces(scores, variants=2, textures=30, seed=1)[45].recipe
        != pieces[45].recipe
    )  # another seed, other performances


# -- channel volume (CC7) and expression (CC11) -----------------------------------------------


def test_log_gain_follows_volume_and_expression(midi_writer, tmp_path):
    cc = [
        (0.0, mido.Message("control_change", control=7, value=50)),
        (1.0, mido.Message("control_change", control=11, value=64)),
        (2.0, mido.Message("control_change", control=121, value=0)),  # resets CC11 only
    ]
    seq = read_notes(midi_writer(tmp_path / "v.mid", [(60, 0.0, 3.0, 80)], extra=cc))
    g = log_gain(seq.notes, seq.volume, 400)
    assert g[60] == pytest.approx(2 * np.log(0.5), abs=1e-5)
    assert g[180] == pytest.approx(2 * np.log(0.5 * 64 / 127), abs=1e-5)
    assert g[300] == pytest.approx(2 * np.log(0.5), abs=1e-5)
    plain = read_notes(midi_writer(tmp_path / "p.mid", [(60, 0.0, 1.0, 80)]))
    assert plain.volume == {} and log_gain(plain.notes, plain.volume, 200) is None


@requires_fluidsynth
def test_log_gain_matches_fluidsynth_level(midi_writer, tmp_path):
    chord = [(p, 0.1, 2.5, 90) for p in (55, 60, 64)]
    cc = [
        (0.0, mido.Message("control_change", control=7, value=40)),
        (1.3, mido.Message("control_change", control=11, value=100)),
    ]
    settings = RenderSettings(str(SOUNDFONT))
    mels = []
    for name, extra in (("plain", []), ("cc", cc)):
        path = midi_writer(tmp_path / f"{name}.mid", chord, program=56, extra=extra)
        mels.append(log_mel(render_midi(mido.MidiFile(path), settings, work_dir=tmp_path)))
    plain, vol = mels
    seq = read_notes(tmp_path / "cc.mid")
    g = log_gain(seq.notes, seq.volume, plain.shape[1])
    loud = plain > plain.max() - 5
    for frames in (slice(30, 150), slice(180, 300)):  # before and after the CC11 change
        mask = loud.copy()
        mask[:, : frames.start] = False
        mask[:, frames.stop :] = False
        measured = (vol - plain)[mask].mean() * DB_PER_NEPER
        expected = g[frames].mean() * DB_PER_NEPER
        assert measured == pytest.approx(expected, abs=0.2), (frames, measured, expected)


# -- the builder ------------------------------------------------------------------------------


@requires_fluidsynth
def test_build_with_performances_and_textures(midi_writer, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    score(midi_writer, src)
    out = tmp_path / "ds"
    report = build_dataset(
        out, midi_dir=src, instruments="Grand Piano", variants=1, textures=2, strikes=1,
        solos=1, max_seconds=4, workers=1, progress=False,
    )  # fmt: skip
    assert report.exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    pieces = {p["id"]: p for p in manifest["pieces"]}
    assert set(pieces) == {
        "score", "score-perf1", "texture-0000", "texture-0001", "strikes-0000", "solo-0000"
    }  # fmt: skip
    assert pieces["strikes-0000"]["augment"]["kind"] == "strikes"
    assert corpus.piece_kind(pieces["strikes-0000"]) == "performed"
    assert corpus.piece_kind(pieces["solo-0000"]) == "performed"
    assert corpus.in_piece_set(pieces["solo-0000"], "solo")
    assert not corpus.in_piece_set(pieces["strikes-0000"], "solo")
    assert pieces["score-perf1"]["group"] == "score"
    assert pieces["score-perf1"]["split"] == pieces["score"]["split"]
    assert pieces["score-perf1"]["augment"]["kind"] == "perform"
    assert pieces["score"]["augment"] == {"kind": "excerpt", "max_seconds": 4}
    kinds = {k: (corpus.augment_kind(p), corpus.piece_kind(p)) for k, p in pieces.items()}
    assert kinds["score"] == ("excerpt", "plain")  # a score as written, if cut
    assert kinds["score-perf1"] == ("perform", "performed")
    assert kinds["texture-0000"] == ("texture", "performed")
    assert set(corpus.AUGMENT_KINDS) >= {kind for kind, _ in kinds.values()}
    assert pieces["score"]["frames"] <= 4 * C.FRAME_RATE + 1
    # The roll of a performance is that of its cached MIDI, which FluidSynth rendered.
    roll = np.load(out / "rolls" / "score-perf1.npy")
    seq = read_notes(out / "sources" / "score-perf1.mid")
    assert roll.shape[1] == seq.num_frames()
    assert sorted({int(v) for v in roll[C.N_KEYS :].max(axis=0) if v}) != [90]  # dynamics
    # A rerun finds everything finished; another seed is refused rather than mixed in.
    again = build_dataset(
        out, midi_dir=src, instruments="Grand Piano", variants=1, textures=2, max_seconds=4,
        workers=1, progress=False,
    )  # fmt: skip
    assert again.items_built == 0 and again.items_finished_before == 4
    with pytest.raises(Exception, match="made with another --seed"):
        build_dataset(
            out, midi_dir=src, instruments="Grand Piano", variants=1, textures=2,
            max_seconds=4, seed=1, workers=1, progress=False,
        )  # fmt: skip
