"""The harmonic detail (models/harmonic.py): combs where the harmonics are, a model extended
with it (or with its per-frame gate) that first plays exactly as its source."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from mel2mel import constants as C
from mel2mel.audio import log_mel
from mel2mel.models import AcousticConfig, Mel2Mel
from mel2mel.models.export import save_pretrained
from mel2mel.models.harmonic import (
    GAIN_SCALE,
    HEIGHT_GROUPS,
    HEIGHT_SCALE,
    CombDetail,
    HarmonicDetail,
    detail_operator,
    group_combs,
    harmonic_combs,
)
from mel2mel.train.loop import init_from_pretrained


def key_row(pitch: int) -> int:
    return pitch - C.MIDI_MIN


def heard_detail(pitch: int, ranks: list[int]) -> torch.Tensor:
    """The detail (float64[N_MELS]) of the log-mel of a steady tone with harmonics ``ranks``
    of amplitude ``1 / k`` and random phases."""
    f0 = 440.0 * 2 ** ((pitch - 69) / 12)
    t = np.arange(C.SAMPLE_RATE) / C.SAMPLE_RATE
    rng = np.random.default_rng(pitch)
    tone = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k for k in ranks)
    heard = torch.from_numpy(log_mel((0.05 * tone).astype(np.float32))[:, 20:-20].mean(1))
    return detail_operator() @ heard


def assert_same_peaks(got: torch.Tensor, want: torch.Tensor, what: object) -> None:
    low = slice(0, 40)  # below ~1.5 kHz, where the peaks are resolved
    r = np.corrcoef(got[low].numpy(), want[low].numpy())[0, 1]
    assert r > 0.9, (what, r)
    assert want[low].abs().mean() > 0.2  # there is detail to match


def test_combs_match_the_log_mel_of_a_harmonic_tone():
    combs = harmonic_combs()
    assert combs.shape == (C.N_KEYS, C.N_MELS)
    assert torch.allclose(combs.amax(1), torch.ones(C.N_KEYS))
    for pitch in (40, 45, 57):  # low notes, where the model alone draws no comb
        f0 = 440.0 * 2 ** ((pitch - 69) / 12)
        want = heard_detail(pitch, list(range(1, int(C.SAMPLE_RATE / 2 / f0) + 1)))
        got = detail_operator() @ torch.log(combs[key_row(pitch)].clamp_min(1e-3))
        assert_same_peaks(got, want, pitch)
    groups = group_combs()  # every harmonic in one group: together they hold the whole comb
    assert groups.shape == (C.N_KEYS, len(HEIGHT_GROUPS), C.N_MELS)
    assert (groups.sum(1) >= combs - 1e-6).all() and (groups.amax(1) <= combs + 1e-6).all()


def test_heights_shape_the_comb_into_another_instrument_s_partials():
    # A tone with the 1st, 3rd and 5th harmonics only, as the heights can make it: every
    # other group pushed to -8 nepers (0.03 %), on a module whose heights depend on nothing
    # but their bias, with per-frame embeddings as a morph would pass them.
    module = HarmonicDetail(2, heights=True)
    keep = {(1, 1), (3, 3), (5, 5)}
    with torch.no_grad():
        module.heights.bias.copy_(
            torch.tensor([0.0 if g in keep else -8.0 for g in HEIGHT_GROUPS]) / HEIGHT_SCALE
        )
    for pitch in (33, 40, 45):
        roll = torch.zeros(1, C.ROLL_CHANNELS, 3)
        roll[0, key_row(pitch)] = 0.9
        tones = module.tones(roll)
        assert tones.shape == (1, 1 + len(HEIGHT_GROUPS), C.N_MELS, 3)
        with torch.no_grad():
            detail = module.detail(tones, torch.randn(1, 2, 3))
        assert_same_peaks(detail[0, :, 1].double(), heard_detail(pitch, [1, 3, 5]), pitch)
        fixed = HarmonicDetail(2)  # the plain comb: a different shape
        plain = fixed.detail(fixed.tones(roll))[0, :, 1].double()
        r = np.corrcoef(plain[:40].numpy(), heard_detail(pitch, [1, 3, 5])[:40].numpy())[0, 1]
        assert r < 0.8, (pitch, r)


def test_detail_is_zero_in_silence_and_for_onset_rows():
    operator = detail_operator()
    assert torch.allclose(operator.sum(1), torch.zeros(C.N_MELS), atol=1e-6)
    module = HarmonicDetail(2)
    roll = torch.zeros(1, C.ROLL_CHANNELS, 6)
    roll[0, key_row(45), 1:3] = 0.7
    roll[0, C.N_KEYS + key_row(45), 1] = 0.7  # its onset row adds nothing
    detail = module.detail(module.tones(roll))
    assert detail.shape == (1, C.N_MELS, 6)
    assert torch.equal(detail[..., [0, 3, 4, 5]], torch.zeros(1, C.N_MELS, 4))
    assert detail[..., 1].abs().max() > 0.5
    assert torch.allclose(detail[..., 1], detail[..., 2], atol=1e-6)
    rows = torch.tensor([key_row(45), C.N_KEYS + key_row(45)])
    assert torch.allclose(module.detail(module.tones(roll[:, rows], rows)), detail, atol=1e-6)
    assert not module.state_dict().keys() - {"gain.weight", "gain.bias"}  # combs not saved


def test_comb_detail_is_the_plain_comb_s_detail_without_parameters():
    roll = torch.zeros(2, C.ROLL_CHANNELS, 5)
    roll[0, key_row(40), 1:4] = 0.8
    roll[1, key_row(45), 2] = 0.5
    roll[1, key_row(52), 2] = 0.9
    roll[1, C.N_KEYS + key_row(60), :] = 1.0  # onset rows carry no comb
    notes, plain = CombDetail(), HarmonicDetail(2)
    got = notes(roll)
    assert torch.allclose(got, plain.detail(plain.tones(roll)), atol=1e-6)
    assert torch.equal(got[0, :, [0, 4]], torch.zeros(C.N_MELS, 2))
    assert_same_peaks(got[0, :, 2].double(), heard_detail(40, list(range(1, 60))), 40)
    assert not dict(notes.state_dict())  # computed, nothing saved


def extended(tmp_path, source: Mel2Mel, **options) -> tuple[Mel2Mel, list[str]]:
    """A debug model with ``options`` initialized from ``source`` (saved), and its fresh
    tensors."""
    save_pretrained(source, f"{tmp_path}/")
    model = Mel2Mel(AcousticConfig.preset("debug", n_instruments=3, **options))
    _, fresh = init_from_pretrained(model, tmp_path)
    return model.eval(), fresh


def fit(
    module: torch.nn.Module,
    predict: Callable[[], torch.Tensor],
    target: torch.Tensor,
    lr: float,
    steps: int,
) -> torch.Tensor:
    """Fit ``module``'s parameters so that ``predict()`` approaches ``target`` (squared error,
    Adam); returns the final prediction's error, ``predict() - target``, without gradient."""
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        (predict() - target).square().mean().backward()
        opt.step()
    with torch.no_grad():
        return predict() - target


def check_inference_paths(model: Mel2Mel, roll: torch.Tensor, refusal: str) -> None:
    """The fast path (shared and per-frame embeddings) and the timbre sweep give ``model``'s
    forward on ``roll`` for instrument 2, and the in-page graph refuses the model, saying
    ``refusal``: for the variations that the in-page graph does not support."""
    from mel2mel.errors import UserError
    from mel2mel.models.acoustic_fast import supports_fast_path
    from mel2mel.models.onnx_export import AcousticGraph
    from mel2mel.timbre.sweep import EmbeddingSweep

    assert supports_fast_path(model)
    with torch.no_grad():
        whole = model(roll, instrument=2)
        assert torch.allclose(model.infer(roll, instrument=2), whole, atol=1e-5)
        per_frame = model.embed(2)[..., None].expand(1, -1, roll.shape[-1])  # unfolded layers
        assert torch.allclose(model.infer(roll, embedding=per_frame), whole, atol=1e-5)
        swept = EmbeddingSweep(model, roll)(model.embed(2))
    assert torch.allclose(swept[0], whole, atol=1e-5)
    with pytest.raises(UserError, match=refusal):
        AcousticGraph(model)


def held_note(pitch: int) -> torch.Tensor:
    """A roll of 40 frames with ``pitch`` sounding in frames 5..29."""
    roll = torch.zeros(1, C.ROLL_CHANNELS, 40)
    roll[0, key_row(pitch), 5:30] = 0.8
    return roll


def test_a_model_extended_with_detail_plays_as_its_source_then_adds_it(tmp_path):
    torch.manual_seed(0)
    source = Mel2Mel(AcousticConfig.preset("debug", n_instruments=3)).eval()
    model, fresh = extended(tmp_path, source, harmonic_detail=True)
    assert fresh == ["harmonic.gain.bias", "harmonic.gain.weight"]
    roll = held_note(43)
    with torch.no_grad():
        assert torch.equal(model(roll, instrument=2), source(roll, instrument=2))
        model.harmonic.gain.bias.fill_(1.0 / GAIN_SCALE)  # a gain of 1 in every bin
        added = model(roll, instrument=2) - source(roll, instrument=2)
    assert torch.allclose(added, model.harmonic.detail(model.tones_of(roll)), atol=1e-5)
    assert added[..., 10].abs().max() > 0.5 and added[..., 35].abs().max() < 1e-6


def test_the_gate_starts_closed_then_moves_the_gain_frame_by_frame(tmp_path):
    torch.manual_seed(0)
    source = Mel2Mel(AcousticConfig.preset("debug", n_instruments=3, harmonic_detail=True))
    with torch.no_grad():
        source.harmonic.gain.bias.fill_(0.5 / GAIN_SCALE)  # a trained detail: gain 0.5
    model, fresh = extended(tmp_path, source.eval(), harmonic_detail=True, detail_gate=True)
    assert fresh == ["harmonic.gate.bias", "harmonic.gate.weight"]
    roll = held_note(40)
    with torch.no_grad():
        assert torch.equal(model(roll, instrument=1), source(roll, instrument=1))
        model.harmonic.gate.weight.normal_(0.0, 0.2)  # the states now move the gain
        added = model(roll, instrument=1) - source(roll, instrument=1)
    detail = model.harmonic.detail(model.tones_of(roll))
    assert added[..., 35].abs().max() < 1e-6  # no note, no detail, whatever the gate says
    gain = added[..., 5:30] / torch.where(detail[..., 5:30].abs() > 0.05, detail[..., 5:30], 1)
    moved = gain[detail[..., 5:30].abs() > 0.05]
    assert moved.std() > 1e-3  # not one constant gain: it differs by frame and bin


def test_heights_start_at_the_source_s_comb_then_change_it(tmp_path):
    torch.manual_seed(0)
    source = Mel2Mel(AcousticConfig.preset("debug", n_instruments=3, harmonic_detail=True))
    with torch.no_grad():
        source.harmonic.gain.bias.fill_(0.5 / GAIN_SCALE)
    model, fresh = extended(tmp_path, source.eval(), harmonic_detail=True, harmonic_heights=True)
    assert fresh == ["harmonic.heights.bias", "harmonic.heights.weight"]
    roll = held_note(36)
    with torch.no_grad():
        assert torch.allclose(model(roll, instrument=0), source(roll, instrument=0), atol=1e-6)
        model.harmonic.heights.weight.normal_(0.0, 0.2)  # each instrument its own partials
        moved = [model(roll, instrument=i) - source(roll, instrument=i) for i in range(3)]
    assert moved[0][..., 35].abs().max() < 1e-6  # still nothing where no note sounds
    assert min(m[..., 10].abs().max() for m in moved) > 0.01
    assert (moved[1] - moved[2])[..., 10].abs().max() > 0.01


def test_config_needs_the_keys_and_the_package_bins():
    with pytest.raises(ValueError, match="harmonic_detail"):
        AcousticConfig(harmonic_detail=True, n_mels=40)
    with pytest.raises(ValueError, match="detail_gate needs harmonic_detail"):
        AcousticConfig(detail_gate=True)
    with pytest.raises(ValueError, match="harmonic_heights needs harmonic_detail"):
        AcousticConfig(harmonic_heights=True)
