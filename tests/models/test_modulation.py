"""The note modulation (models/modulation.py): a clock that restarts at every onset, a model
extended with it that first plays exactly as its source, and a tremolo it can learn."""

from __future__ import annotations

import math

import pytest
import torch
from test_harmonic import check_inference_paths, extended, fit, key_row

from mel2mel import constants as C
from mel2mel.models import AcousticConfig, Mel2Mel
from mel2mel.models.harmonic import COMB_FLOOR, harmonic_combs
from mel2mel.models.modulation import SLOPE_LIMIT, NoteModulation, comb_slopes, onset_clock


def struck(notes: list[tuple[int, int, int]], frames: int = 80) -> torch.Tensor:
    """A roll Tensor[1 x 176 x frames] of ``(pitch, start, end)`` notes at velocity 0.8."""
    roll = torch.zeros(1, C.ROLL_CHANNELS, frames)
    for pitch, start, end in notes:
        roll[0, key_row(pitch), start:end] = 0.8
        roll[0, C.N_KEYS + key_row(pitch), start] = 0.8
    return roll


def test_the_clock_counts_frames_since_each_key_s_last_onset():
    roll = struck([(60, 10, 30), (60, 30, 50), (64, 20, 60)])
    roll[0, key_row(48), 0:15] = 0.8  # held from before the roll: no onset, no clock
    clock = onset_clock(roll)[0]
    assert clock[key_row(60), :10].eq(-1).all() and clock[key_row(48)].eq(-1).all()
    assert clock[key_row(60), 10:30].tolist() == list(range(20))
    assert clock[key_row(60), 30:40].tolist() == list(range(10))  # restruck: restarts
    assert clock[key_row(64), 25].item() == 5


def test_the_comb_slopes_follow_the_comb_along_pitch():
    combs, slopes = comb_slopes()
    assert torch.allclose(combs, harmonic_combs(), atol=1e-5)  # the same combs at whole keys
    assert slopes.abs().max() <= SLOPE_LIMIT
    key = key_row(45)  # A2: its harmonics lie on resolved low bins
    peak = int(combs[key, :30].argmax())
    # moving up in pitch, a harmonic leaves the bin below its peak and nears the one above
    assert slopes[key, peak - 1] < 0 < slopes[key, peak + 1]


def test_a_model_extended_with_modulation_plays_as_its_source_then_moves_held_notes(tmp_path):
    torch.manual_seed(0)
    source = Mel2Mel(AcousticConfig.preset("debug", n_instruments=3)).eval()
    model, fresh = extended(tmp_path, source, note_modulation=True)
    assert fresh == ["modulation.coefficients.bias", "modulation.coefficients.weight"]
    roll = struck([(57, 5, 60)])
    with torch.no_grad():
        assert torch.equal(model(roll, instrument=1), source(roll, instrument=1))
        model.modulation.coefficients.bias.normal_(0.0, 1.0)
        moved = model(roll, instrument=1) - source(roll, instrument=1)
        later = model(torch.roll(roll, 10, dims=-1), instrument=1)
        later = later - source(torch.roll(roll, 10, dims=-1), instrument=1)
    assert moved[..., :5].abs().max() < 1e-6 and moved[..., 60:].abs().max() < 1e-6
    assert moved[..., 5:60].abs().amax(1).min() > 1e-3  # every held frame moves
    # locked to the onset, not to the clock of the roll: struck later, moved alike
    assert torch.allclose(later[..., 15:70], moved[..., 5:60], atol=1e-5)


def test_the_module_learns_a_tremolo_from_its_onset():
    # A held note whose bins swing 0.2 neper at 4.43 Hz from its onset (FluidSynth's
    # vibraphone, between two of the bank's frequencies): fitted from constant states, the
    # modulation takes most of it.
    torch.manual_seed(0)
    roll = struck([(60, 10, 150)], frames=160)
    module = NoteModulation(features=4)
    states = torch.ones(1, 4, 160)
    tau = torch.arange(160) - 10.0
    swing = 0.2 * torch.sin(2 * math.pi * 4.43 * tau / C.FRAME_RATE)
    bins = harmonic_combs()[key_row(60)] > COMB_FLOOR
    target = torch.where(bins[:, None] & (tau >= 0)[None], swing[None], 0.0)[None]
    error = fit(module, lambda: module(roll, states), target, lr=0.05, steps=150)
    assert error[0][bins].square().mean() < 0.1 * target[0][bins].square().mean()


def test_config_needs_the_whole_roll():
    with pytest.raises(ValueError, match="note_modulation needs 176 roll rows"):
        AcousticConfig(note_modulation=True, roll_channels=C.N_KEYS)


def test_the_fast_path_folds_the_modulation_and_the_other_paths_run_it_whole_or_refuse_it():
    torch.manual_seed(0)
    model = Mel2Mel(AcousticConfig.preset("debug", n_instruments=3, note_modulation=True)).eval()
    with torch.no_grad():
        model.modulation.coefficients.bias.normal_(0.0, 1.0)
    check_inference_paths(model, struck([(57, 5, 60), (64, 20, 70)]), "note modulation")
