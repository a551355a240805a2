"""The nonlinear readout (``head_channels``): starts silent, trains, travels with exports."""

from __future__ import annotations

import pytest
import torch

from mel2mel import constants as C
from mel2mel.models import AcousticConfig, Mel2Mel, load_acoustic
from mel2mel.models.export import save_pretrained
from mel2mel.train.loop import init_from_pretrained


def roll_with_chord(frames: int = 40) -> torch.Tensor:
    roll = torch.zeros(1, C.ROLL_CHANNELS, frames)
    for key in (20, 27, 32):
        roll[0, key, 5:30] = 0.8
        roll[0, C.N_KEYS + key, 5] = 0.8
    return roll


def test_a_model_extended_with_a_readout_plays_as_its_source_then_learns(tmp_path):
    torch.manual_seed(0)
    source = Mel2Mel(AcousticConfig.preset("debug", n_instruments=3)).eval()
    save_pretrained(source, f"{tmp_path}/")
    model = Mel2Mel(AcousticConfig.preset("debug", n_instruments=3, head_channels=6))
    _, fresh = init_from_pretrained(model, tmp_path)
    assert all(name.startswith("head.") for name in fresh) and len(fresh) == 8
    roll = roll_with_chord()
    with torch.no_grad():
        assert torch.equal(model.eval()(roll, instrument=1), source(roll, instrument=1))
    # one optimizer step on a target the linear layer alone cannot draw moves the readout
    model.train()
    opt = torch.optim.SGD(model.head.parameters(), lr=0.1)
    target = torch.full((1, C.N_MELS, 40), -4.0)
    loss = (model(roll, instrument=1) - target).pow(2).mean()
    loss.backward()
    assert model.head.out.weight.grad.abs().sum() > 0
    opt.step()
    with torch.no_grad():
        after = model.eval()(roll, instrument=1)
    assert (after - source(roll, instrument=1)).abs().max() > 1e-4
    assert (after - target).pow(2).mean() < loss


def test_the_readout_is_saved_and_loaded_with_its_config(tmp_path):
    torch.manual_seed(0)
    model = Mel2Mel(AcousticConfig.preset("debug", n_instruments=3, head_channels=6)).eval()
    with torch.no_grad():
        for p in model.head.parameters():
            p.normal_(0, 0.5)
    save_pretrained(model, f"{tmp_path}/m")
    loaded = load_acoustic(tmp_path / "m")
    assert loaded.config.head_channels == 6
    roll = roll_with_chord()
    with torch.no_grad():
        assert torch.equal(loaded(roll, instrument=2), model(roll, instrument=2))
        per_frame = torch.randn(1, 2, 40)  # a morph reaches the readout's FiLM too
        a, b = model(roll, embedding=per_frame), loaded.infer(roll, embedding=per_frame)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_head_channels_must_not_be_negative():
    with pytest.raises(ValueError, match="head_channels"):
        AcousticConfig(head_channels=-1)
    assert Mel2Mel(AcousticConfig.preset("debug")).head is None
