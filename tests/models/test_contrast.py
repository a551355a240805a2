"""Note contrast (mel2mel.models.contrast) and its fit (mel2mel.evaluation.note_contrast)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import debug_model, write_midi

from mel2mel import Synthesizer
from mel2mel import constants as C
from mel2mel.errors import UserError
from mel2mel.evaluation.note_contrast import fit_note_contrast, residual_sums
from mel2mel.models.contrast import (
    ALONE,
    ANTICIPATION,
    HELD,
    N_ROLES,
    OFFSETS,
    REACH,
    NoteContrast,
    bin_roles,
    note_partials,
    strike_offsets,
)
from mel2mel.models.export import load_acoustic, save_pretrained

LOW, HIGH = 60 - C.MIDI_MIN, 67 - C.MIDI_MIN  # C4 and G4, roll rows


def partial_bin(key: int, harmonic: int) -> int:
    keys, _, bins = note_partials()
    return int(bins[keys == key][harmonic - 1])


def two_note_roll(frames: int = 120) -> torch.Tensor:
    """Tensor[1 x 176 x frames]: C4 struck at frame 0 and held; G4 struck at frame 50."""
    roll = torch.zeros(1, C.ROLL_CHANNELS, frames)
    roll[0, LOW, :] = 0.7
    roll[0, C.N_KEYS + LOW, 0] = 0.7
    roll[0, HIGH, 50:] = 0.5
    roll[0, C.N_KEYS + HIGH, 50] = 0.5
    return roll


def test_partials_follow_the_keys_harmonics():
    keys, groups, bins = note_partials()
    a4 = 69 - C.MIDI_MIN
    assert groups[keys == a4].tolist() == [0, 1, 2, 2, 3, 3, 3, 3]  # 440 ... 3520 Hz
    assert bins[keys == a4].diff().min() > 0  # higher harmonics, higher bins
    assert (keys == C.N_KEYS - 1).sum() == 1  # C8 (4186 Hz): its fundamental only


def test_strike_offsets_take_the_nearest_onset_the_earlier_on_a_tie():
    none = -(10**6)
    onsets = torch.zeros(1, 2, 60, dtype=torch.bool)
    assert (strike_offsets(onsets[..., :1]) == none).all()  # no onset, even in one frame
    onsets[0, 0, [10, 16]] = True
    got = strike_offsets(onsets)[0]
    assert got[0, 10 - ANTICIPATION].item() == -ANTICIPATION
    assert got[0, 10 - ANTICIPATION - 1].item() == none
    assert got[0, 12].item() == 2 and got[0, 13].item() == 3  # 3 after one, 3 before the next
    assert got[0, 14].item() == -2  # the next strike is nearer
    assert got[0, 16 + REACH].item() == REACH and got[0, 17 + REACH].item() == none
    assert (got[1] == none).all()


def test_roles_of_struck_held_and_other_bins():
    roles = bin_roles(two_note_roll())[0]
    low, high = partial_bin(LOW, 1), partial_bin(HIGH, 1)
    assert low != high
    # G4's fundamental: struck, offset o from its onset at 50, ANTICIPATION frames early
    for t in (46, 50, 55, 50 + REACH):
        assert roles[high, t] == (t - 50) + ANTICIPATION  # harmonic group 1
    assert roles[partial_bin(HIGH, 2), 55] == OFFSETS + 5 + ANTICIPATION  # group 2
    assert roles[high, 45] == N_ROLES  # before its strike shows: nothing sounds there
    assert roles[high, 51 + REACH] == HELD + OFFSETS  # held, no strike within reach
    # C4's fundamental: struck at 0, then held; held by the time since G4's strike
    assert roles[low, 3] == ALONE + 3 + ANTICIPATION  # no other key held: struck alone
    assert roles[low, 40] == HELD + OFFSETS
    assert roles[low, 55] == HELD + 5 + ANTICIPATION
    assert roles[low, 47] == HELD + (47 - 50) + ANTICIPATION  # G4's strike ahead
    assert roles[2, 55] == N_ROLES  # a bin below every partial


def test_roles_of_a_window_with_context_equal_the_whole():
    roll = two_note_roll(200)
    roll[0, 40 - C.MIDI_MIN, 120:170] = 0.3
    roll[0, C.N_KEYS + 40 - C.MIDI_MIN, 120] = 0.3
    whole = bin_roles(roll)
    a, b = 60, 140
    window = bin_roles(roll[..., a - REACH : b + ANTICIPATION])
    torch.testing.assert_close(window[..., REACH : REACH + b - a], whole[..., a:b])


def contrast(struck: float = 0.2, held: float = -0.3) -> NoteContrast:
    """Two anchors, at (0, 0) and (2, 0): "a" corrects nothing, "b" adds ``struck`` to every
    struck role and ``held`` to every held one."""
    row = [struck] * HELD + [held] * (N_ROLES - HELD)
    return NoteContrast(("a", "b"), ((0.0, 0.0), (2.0, 0.0)), ((0.0,) * N_ROLES, tuple(row)))


def test_apply_adds_each_roles_value_and_blends_between_instruments():
    roll = two_note_roll()
    mel = torch.full((1, C.N_MELS, roll.shape[-1]), -5.0)
    roles = bin_roles(roll)
    at_b = torch.tensor([[2.0, 0.0]])
    out = contrast().apply(mel, at_b, roll)
    want = torch.where(roles < HELD, -4.8, torch.where(roles < N_ROLES, -5.3, -5.0))
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(contrast().apply(mel, torch.tensor([[0.0, 0.0]]), roll), mel)
    half = contrast().apply(mel, at_b, roll, strength=0.5)
    torch.testing.assert_close(half, contrast(0.1, -0.15).apply(mel, at_b, roll))
    mid = contrast().apply(mel, torch.tensor([[1.0, 0.0]]), roll)  # halfway: half of "b"'s
    torch.testing.assert_close(mid, half)
    assert contrast().apply(mel, at_b, roll, strength=0.0) is mel
    per = contrast().with_strengths((1.0, 0.5))
    torch.testing.assert_close(per.apply(mel, at_b, roll), half)
    short = contrast().apply(mel, at_b, roll[..., :80])  # a shorter roll: silence after it
    torch.testing.assert_close(short[..., :80], out[..., :80])
    torch.testing.assert_close(short[..., 80 + ANTICIPATION :], mel[..., 80 + ANTICIPATION :])
    floor = torch.full_like(mel, C.LOG_SILENCE)
    assert contrast().apply(floor, at_b, roll).min() == pytest.approx(C.LOG_SILENCE)


def test_contrast_round_trips_and_validates():
    c = contrast().with_strengths((0.0, 0.5))
    assert NoteContrast.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    doc = contrast().to_dict()
    assert "strength" not in json.dumps(doc)
    doc["reach"] = REACH + 1
    with pytest.raises(ValueError, match="fit it again"):
        NoteContrast.from_dict(doc)
    with pytest.raises(ValueError, match=f"{N_ROLES} values"):
        NoteContrast(("a",), ((0.0,),), ((0.0,) * 3,))
    with pytest.raises(ValueError, match="one strength"):
        contrast().with_strengths((1.0, -1.0))


def test_residual_sums_count_each_role():
    roll = two_note_roll()[0].numpy()
    pred = np.full((C.N_MELS, roll.shape[1]), -5.0, dtype=np.float32)
    roles = bin_roles(torch.from_numpy(roll[None]))[0].numpy()
    truth = pred + np.where(roles < HELD, 0.5, -0.25).astype(np.float32)
    sums, counts = residual_sums(truth, pred, roll)
    assert sums.shape == counts.shape == (N_ROLES,)
    assert counts.sum() == (roles < N_ROLES).sum()  # bins of neither are left out
    seen = counts > 0
    want = np.where(np.arange(N_ROLES) < HELD, 0.5, -0.25)
    np.testing.assert_allclose(sums[seen] / counts[seen], want[seen], rtol=1e-6)


def synth_model(seed: int = 0):
    return debug_model([("Synth 0", 80), ("Synth 1", 81)], seed)


def test_fit_measures_the_models_error_by_role(synthetic_dataset):
    model = synth_model()
    fitted, counts = fit_note_contrast(model, synthetic_dataset, items=2, progress=False)
    assert fitted.names == ("Synth 0", "Synth 1")
    table = np.array(fitted.table)
    assert table.shape == (2, N_ROLES) and np.isfinite(table).all()
    assert counts[:, :HELD].sum() > 0 and counts[:, HELD:].sum() > 0
    assert np.abs(table).max() > 0.01
    # a model drawn 1 neper louder everywhere is corrected by about -1 more in every role
    # seen often (the mean is shrunk towards 0 for roles seen in few cells)
    with torch.no_grad():
        model.output.bias += 1.0
    louder, _ = fit_note_contrast(model, synthetic_dataset, items=2, progress=False)
    often = counts > 2000
    shift = (np.array(louder.table) - table)[often]
    np.testing.assert_allclose(shift, -1.0, atol=0.05)


def test_fit_refuses_a_model_without_the_datasets_instruments(synthetic_dataset):
    model = debug_model([("Synth 0", 80), ("Trumpet", 56)])
    with pytest.raises(UserError, match="Synth 1"):
        fit_note_contrast(model, synthetic_dataset, items=1, progress=False)


def test_exported_contrast_is_applied_by_the_synthesizer(tmp_path):
    model = synth_model()
    save_pretrained(model, tmp_path / "plain")
    fitted = NoteContrast(
        ("Synth 0", "Synth 1"),
        tuple(map(tuple, model.embedding.weight.detach().tolist())),
        ((0.3,) * HELD + (-0.4,) * (N_ROLES - HELD), (0.0,) * N_ROLES),
    )
    model.note_contrast = fitted
    desc = save_pretrained(model, tmp_path / "contrast")[1]
    assert "note_contrast" in json.loads(desc.read_text())
    loaded = load_acoustic(tmp_path / "contrast")
    assert loaded.note_contrast == fitted
    midi = write_midi(tmp_path / "a.mid", [(60, 0.1, 1.0, 90), (67, 0.5, 0.5, 70)])
    plain = Synthesizer(load_acoustic(tmp_path / "plain"), "griffinlim", timbre_library=False)
    on = Synthesizer(loaded, "griffinlim", timbre_library=False)
    off = Synthesizer(loaded, "griffinlim", contrast=0.0, timbre_library=False)
    base = plain.mel(midi, "Synth 0")
    np.testing.assert_array_equal(off.mel(midi, "Synth 0"), base)
    np.testing.assert_array_equal(on.mel(midi, "Synth 1"), plain.mel(midi, "Synth 1"))  # zeros
    got = on.mel(midi, "Synth 0")
    change = np.round((got - base) / 0.1).astype(int)
    assert set(np.unique(change)) == {-4, 0, 3}  # held, untouched and struck bins
    # windowed, with REACH + ANTICIPATION frames of context: the contrast of the whole piece
    small = {"chunk_frames": 40, "context_frames": REACH + ANTICIPATION, "crossfade_frames": 0}
    w_on = Synthesizer(loaded, "griffinlim", timbre_library=False, **small)
    w_off = Synthesizer(loaded, "griffinlim", timbre_library=False, contrast=0.0, **small)
    windowed = w_on.mel(midi, "Synth 0") - w_off.mel(midi, "Synth 0")
    np.testing.assert_allclose(windowed, got - base, atol=1e-5)
    with pytest.raises(UserError, match="between 0 and 4"):
        Synthesizer(loaded, "griffinlim", contrast=5.0, timbre_library=False)


def test_train_contrast_fits_and_sets_strengths(synthetic_dataset, tmp_path, capsys):
    from mel2mel.cli import main

    save_pretrained(synth_model(), tmp_path / "plain")
    args = ["train", "contrast", "--model", str(tmp_path / "plain")]
    assert main([*args, "-o", str(tmp_path / "s"), "--strength", "0.5"]) == 2
    assert "no note contrast" in capsys.readouterr().err
    fit = [*args, "--data", str(synthetic_dataset), "--items", "1", "--no-progress"]
    assert main([*fit, "-o", str(tmp_path / "fitted")]) == 0
    out = capsys.readouterr().out
    assert "Synth 0: after a strike, struck" in out and "held" in out
    fitted = load_acoustic(tmp_path / "fitted").note_contrast
    assert fitted is not None and fitted.strengths == ()
    again = ["train", "contrast", "--model", str(tmp_path / "fitted"), "-o", str(tmp_path / "s")]
    assert main([*again, "--strength", "Synth 1=0"]) == 0
    assert "Synth 0 1, Synth 1 0" in capsys.readouterr().out
    assert load_acoustic(tmp_path / "s").note_contrast == fitted.with_strengths((1.0, 0.0))
