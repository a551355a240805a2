"""The velocity gain (models/velocity_gain.py): the sounding notes' level, held through
silences, a model extended with it that first plays exactly as its source, and a gain it can
learn that turns a loud note's spectrum down to a soft one's."""

from __future__ import annotations

import math

import pytest
import torch
from test_harmonic import check_inference_paths, extended, fit, key_row

from mel2mel import constants as C
from mel2mel.models import AcousticConfig, Mel2Mel
from mel2mel.models.velocity_gain import (
    REFERENCE_LEVEL,
    SLOPE_SCALE,
    VelocityGain,
    key_level,
)


def played(notes: list[tuple[int, int, int, int]], frames: int = 80) -> torch.Tensor:
    """A roll Tensor[1 x 176 x frames] of ``(pitch, start, end, velocity)`` notes."""
    roll = torch.zeros(1, C.ROLL_CHANNELS, frames)
    for pitch, start, end, velocity in notes:
        roll[0, key_row(pitch), start:end] = velocity / 127
        roll[0, C.N_KEYS + key_row(pitch), start] = velocity / 127
    return roll


def test_the_level_of_the_sounding_keys_holds_through_silence():
    roll = played([(60, 10, 30, 127), (48, 40, 50, 32), (52, 40, 50, 32)])
    level = key_level(roll)[0]
    assert level[:10].eq(0).all()  # before the first note: nothing added
    assert level[10:30] == pytest.approx(torch.full((20,), -REFERENCE_LEVEL), abs=1e-6)
    assert level[30:40] == pytest.approx(level[29:30].expand(10))  # held through the rest
    two_soft = 0.5 * math.log(2 * (32 / 127) ** 2) - REFERENCE_LEVEL
    assert level[40:80] == pytest.approx(torch.full((40,), two_soft), abs=1e-6)
    alone = key_level(played([(60, 0, 80, 64)]))
    assert alone.abs().max() < 1e-6  # one key at velocity 64 is the reference


def test_a_model_extended_with_the_gain_plays_as_its_source_then_moves_soft_notes(tmp_path):
    torch.manual_seed(0)
    source = Mel2Mel(AcousticConfig.preset("debug", n_instruments=3)).eval()
    model, fresh = extended(tmp_path, source, velocity_gain=True)
    assert fresh == ["velocity_gain.slope.bias", "velocity_gain.slope.weight"]
    soft, loud = played([(57, 5, 60, 16)]), played([(57, 5, 60, 64)])
    with torch.no_grad():
        assert torch.equal(model(soft, instrument=1), source(soft, instrument=1))
        model.velocity_gain.slope.bias.fill_(1.0 / SLOPE_SCALE)  # a slope of 1 in every bin
        moved = model(soft, instrument=1) - source(soft, instrument=1)
        same = model(loud, instrument=1) - source(loud, instrument=1)
    assert moved[..., :5].abs().max() < 1e-6  # nothing before the first note
    # one neper per neper of level wherever the output is above the floor
    above = source(soft, instrument=1)[..., 5:60] > C.LOG_SILENCE + 2
    assert moved[..., 5:60][above] == pytest.approx(math.log(16 / 64), abs=1e-5)
    assert same.abs().max() < 1e-5  # the reference velocity is left alone


def test_the_gain_learns_fluidsynth_s_turn_down():
    # A spectrum that falls 2 nepers per neper of level below velocity 64 (FluidSynth's
    # velocity curve, about): fitted per bin, the slopes reach it.
    torch.manual_seed(0)
    module = VelocityGain(embedding_dim=2)
    rolls = torch.cat([played([(60, 0, 40, v)]) for v in (8, 16, 32, 64, 100)])
    embedding = torch.randn(1, 2).expand(5, -1)
    target = 2.0 * key_level(rolls)[:, None, :].expand(-1, C.N_MELS, -1)
    error = fit(module, lambda: module(rolls, embedding), target, lr=0.01, steps=200)
    assert error.abs().max() < 0.05


def test_config_needs_the_sounding_rows():
    with pytest.raises(ValueError, match="velocity_gain needs 88 roll rows"):
        AcousticConfig(velocity_gain=True, roll_channels=C.N_KEYS - 1)


def test_the_fast_path_adds_the_gain_and_the_other_paths_run_it_whole_or_refuse_it():
    torch.manual_seed(0)
    model = Mel2Mel(AcousticConfig.preset("debug", n_instruments=3, velocity_gain=True)).eval()
    with torch.no_grad():
        model.velocity_gain.slope.weight.normal_(0.0, 0.1)
        model.velocity_gain.slope.bias.normal_(0.0, 0.1)
    check_inference_paths(model, played([(57, 5, 30, 12), (64, 40, 70, 100)]), "velocity gain")
