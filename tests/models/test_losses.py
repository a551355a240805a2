"""The three Mel2Mel losses against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mel2mel import constants as C
from mel2mel.models.losses import (
    LOSSES,
    MIN_BIN_VARIANCE,
    TANH_OFFSET,
    TANH_SCALE,
    abs_loss,
    bin_weights,
    dead_band_floor,
    flux_loss,
    frame_level,
    get_loss,
    level_loss,
    reweighted,
    slope_loss,
    squash,
    variation,
    variation_loss,
)

pytestmark = pytest.mark.usefixtures("single_thread")

PRED = [[-1.0, 0.5], [-11.0, 2.0]]
TRUE = [[0.0, 0.0], [-11.5, 3.0]]


def tensors():
    return torch.tensor([PRED]), torch.tensor([TRUE])  # 1 x 2 x 2


def test_abs_loss_by_hand():
    p, t = np.array(PRED), np.array(TRUE)
    expected = np.mean((np.exp(p) - np.exp(t)) ** 2)
    assert get_loss("abs")(*tensors()).item() == pytest.approx(expected, rel=1e-6)


def test_log_abs_loss_by_hand():
    expected = (1.0 + 0.25 + 0.25 + 1.0) / 4
    assert get_loss("log-abs")(*tensors()).item() == pytest.approx(expected, rel=1e-6)


def test_tanh_log_abs_loss_by_hand():
    def s(v):
        return math.tanh((v - TANH_OFFSET) / TANH_SCALE)

    pairs = zip(np.ravel(PRED), np.ravel(TRUE), strict=True)
    expected = sum((s(a) - s(b)) ** 2 for a, b in pairs) / 4
    assert get_loss("tanh-log-abs")(*tensors()).item() == pytest.approx(expected, rel=1e-6)


def test_tanh_constants_cover_the_data_range():
    ends = squash(torch.tensor([C.LOG_SILENCE, 3.0]))
    assert ends[0].item() == pytest.approx(-0.95, abs=0.01)
    assert ends[1].item() == pytest.approx(0.95, abs=0.01)
    assert squash(torch.tensor(TANH_OFFSET)).item() == 0.0


def test_custom_tanh_constants():
    p, t = tensors()
    loss = get_loss("tanh-log-abs", tanh_offset=0.0, tanh_scale=1.0)(p, t)
    expected = torch.mean((torch.tanh(p) - torch.tanh(t)) ** 2)
    assert loss.item() == pytest.approx(expected.item())
    with pytest.raises(ValueError):
        get_loss("tanh-log-abs", tanh_scale=0.0)


def test_abs_loss_does_not_overflow():
    pred = torch.full((1, 2, 2), 500.0, requires_grad=True)
    loss = abs_loss(pred, torch.zeros(1, 2, 2))
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(pred.grad).all()


@pytest.mark.parametrize("name", LOSSES)
def test_zero_at_target_and_differentiable(name):
    t = torch.randn(2, 80, 5) - 4
    fn = get_loss(name)
    assert fn(t, t).item() == 0.0
    p = (t + 0.3).requires_grad_()
    fn(p, t).backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_unknown_loss():
    with pytest.raises(ValueError, match="tanh-log-abs"):
        get_loss("l1")


def test_level_loss_measures_frame_power_not_bins():
    true = torch.zeros(1, 2, 3)  # two bins of magnitude 1 in every frame
    # all the power moved into one bin: the per-bin loss sees it, the frame level does not
    moved = torch.stack([torch.full((3,), 0.5 * math.log(2.0)), torch.full((3,), -30.0)])[None]
    assert get_loss("log-abs")(moved, true) > 100
    assert level_loss(moved, true).item() < 1e-6
    # every bin 1 neper louder: the frame level is 1 neper louder
    assert level_loss(true + 1.0, true).item() == pytest.approx(1.0, abs=1e-6)
    # by hand: magnitudes e^0 and e^1 -> 0.5 * ln(1 + e^2)
    by_hand = 0.5 * math.log(1 + math.exp(2.0))
    assert frame_level(torch.tensor([[[0.0], [1.0]]])).item() == pytest.approx(by_hand)
    pred = true.clone().requires_grad_(True)
    level_loss(pred - 0.3, true).backward()
    assert torch.all(pred.grad < 0)  # too quiet: every bin is pushed up
    # over chosen frames only: an error in a left-out frame does not count
    off = true.clone()
    off[..., 0] += 2.0
    chosen = torch.tensor([[False, True, True]])
    assert level_loss(off, true, chosen).item() == 0.0
    assert level_loss(off, true, ~chosen).item() == pytest.approx(2.0)
    assert level_loss(off, true, torch.zeros_like(chosen)).item() == 0.0
    # weighted frames: the weighted mean of the frames' errors (2, 0, 0 nepers)
    weights = torch.tensor([[3.0, 1.0, 0.0]])
    assert level_loss(off, true, weights).item() == pytest.approx(2.0 * 3.0 / 4.0)
    assert level_loss(off, true, weights * 0.01).item() == pytest.approx(1.5)


@pytest.mark.parametrize("name", LOSSES)
def test_reweighted_is_the_weighted_mean_over_frames(name):
    g = torch.Generator().manual_seed(0)
    pred, true = torch.randn(2, 4, 5, generator=g) - 4, torch.randn(2, 4, 5, generator=g) - 4
    frames = torch.tensor([[True, False, False, True, False], [False] * 5])
    loss = get_loss(name)
    w = torch.where(frames, 3.0, 1.0)[:, None, :].expand_as(pred)  # B x M x T
    cells = np.ndindex(*pred.shape)
    per_element = torch.stack([loss(pred[i].view(1, 1, 1), true[i].view(1, 1, 1)) for i in cells])
    per_element = per_element.view(pred.shape)
    by_hand = (w * per_element).sum() / w.sum()
    assert reweighted(loss, pred, true, frames, 3.0).item() == pytest.approx(by_hand.item())
    assert reweighted(loss, pred, true, frames, 1.0) == loss(pred, true)
    assert reweighted(loss, pred, true, torch.zeros_like(frames), 3.0) == loss(pred, true)


def test_slope_loss_sees_flattened_peaks_not_level():
    # a harmonic comb: peaks of 0 nepers every 4th bin over a floor of -6, 5 frames
    comb = torch.full((1, 16, 5), -6.0)
    comb[:, ::4] = 0.0
    # its mean with the comb shifted by one bin: the same power, half the peak height
    blurred = 0.5 * (comb + comb.roll(1, dims=1))
    assert slope_loss(comb + 2.0, comb).item() == pytest.approx(0.0, abs=1e-6)  # level-blind
    assert slope_loss(comb, comb).item() == 0.0
    # by hand: slopes of the comb -6, 0, 0, +6 (repeating), of the blur 0, -3, 0, +3
    blur_slopes, comb_slopes = np.array([0, -3, 0, 3] * 4), np.array([-6, 0, 0, 6] * 4)
    by_hand = np.abs(blur_slopes - comb_slopes)[:15].mean()
    assert by_hand == pytest.approx(3.0)  # 15 slopes: 6 + 3 + 0 + 3 per period, the last cut
    assert slope_loss(blurred, comb).item() == pytest.approx(by_hand, rel=1e-6)
    # the gradient sharpens: a blurred peak is pushed up, its neighbour down
    pred = blurred.clone().requires_grad_(True)
    slope_loss(pred, comb).backward()
    assert torch.all(pred.grad[0, 4] < 0) and torch.all(pred.grad[0, 5] > 0)


def test_flux_loss_sees_a_held_note_struck_again_not_its_level_or_decay():
    # bins 0-3 hold a decaying note; at frame 4 a new note rises in bins 6-7
    truth = torch.full((1, 8, 8), -6.0)
    truth[:, :4] = torch.linspace(0.0, -1.4, 8)  # falls by 0.2 per frame
    truth[:, 6:, 4:] = 0.0
    assert flux_loss(truth, truth).item() == 0.0
    assert flux_loss(truth + 1.5, truth).item() == pytest.approx(0.0, abs=1e-6)  # level-blind
    faster = truth.clone()
    faster[:, :4] = torch.linspace(0.0, -2.8, 8)  # decays faster: no rise to compare
    assert flux_loss(faster, truth).item() == pytest.approx(0.0, abs=1e-6)
    # the model raises the held note's bins with the new note's onset: a band, not two bins
    smeared = truth.clone()
    smeared[:, 2:6, 4] += 1.0  # and falls back after
    # rises that should not be: 0.8 in the held bins 2-3 (1 on a 0.2 fall), 1 in bins 4-5 over
    # the floor; the falls back count nothing; 8 bins x 7 frame pairs
    assert flux_loss(smeared, truth).item() == pytest.approx((2 * 0.8 + 2 * 1.0) / 56, rel=1e-5)
    pred = smeared.clone().requires_grad_(True)
    flux_loss(pred, truth).backward()
    assert torch.all(pred.grad[0, 2:6, 4] > 0)  # pushed down where it rose and should not
    assert torch.all(pred.grad[0, :2] == 0)  # untouched where nothing rose


def test_dead_band_floor_frees_a_band_under_the_floor_and_pulls_back_below_it():
    f = C.LOG_SILENCE
    pred = torch.tensor([f - 9.0, f - 0.8, f - 0.2, f + 0.5, -3.0], requires_grad=True)
    seen = dead_band_floor(pred, 1.0)
    expected = torch.tensor([f - 8.0, f, f, f + 0.5, -3.0])
    torch.testing.assert_close(seen.detach(), expected)
    target = torch.tensor([f, f, f + 2.0, f, -3.0])  # silence but for the third bin
    get_loss("log-abs")(seen, target).backward()
    grad = pred.grad
    # under the band: pulled up; in the band with a silent target: free; a target above the
    # floor pulls a bin in the band up; above the floor: as without the floor
    assert grad[0] < 0 and grad[1] == 0 and grad[2] < 0 and grad[3] > 0 and grad[4] == 0
    plain = torch.tensor([f - 9.0, f + 0.5])
    torch.testing.assert_close(dead_band_floor(plain, math.inf), plain.clamp_min(f))


def test_bin_weights_weigh_each_bin_against_its_spread():
    var = torch.tensor([[4.0, 1.0, 0.25, 0.0], [1.0, 1.0, 1.0, 1.0], [float("nan")] * 4])
    full = bin_weights(var, 1.0)
    assert torch.allclose(full.mean(dim=1), torch.ones(3))  # mean 1 per instrument
    assert full[0, 0] < full[0, 1] < full[0, 2] < full[0, 3]  # quieter bins weigh more
    # squared error / variance: a bin of a quarter the variance weighs 4 times as much
    assert torch.isclose(full[0, 2] / full[0, 1], torch.tensor(4.0))
    # a bin that never moves counts as MIN_BIN_VARIANCE, not as an infinite weight
    assert torch.isclose(full[0, 3] / full[0, 1], torch.tensor(1.0 / MIN_BIN_VARIANCE))
    assert torch.equal(full[1], torch.ones(4)) and torch.equal(full[2], torch.ones(4))
    assert torch.equal(bin_weights(var, 0.0), torch.ones(3, 4))  # balance 0: all alike
    half = bin_weights(var, 0.5)
    assert torch.isclose(half[0, 2] / half[0, 1], torch.tensor(2.0))


def test_variation_loss_asks_for_as_much_movement_not_the_same_movements():
    t = torch.arange(64, dtype=torch.float32)
    truth = torch.full((1, 4, 64), -5.0)
    truth[:, 1] += 0.5 * torch.sin(2 * math.pi * t / 8)  # tremolo in bin 1
    smooth = truth.clone()
    smooth[:, 1] = -5.0  # the mean a squared error settles on
    late = truth.clone()
    late[:, 1] = -5.0 + 0.5 * torch.sin(2 * math.pi * (t + 3) / 8)  # the same tremolo, late
    assert variation_loss(truth, truth).item() == 0.0
    assert variation_loss(truth + 2.0, truth).item() == pytest.approx(0.0, abs=1e-6)
    assert variation_loss(late, truth).item() < 0.01 * variation_loss(smooth, truth).item()
    assert variation(truth).shape == (1, 4, 5)  # lags 1, 2, 4, 8 and across bins
    # across bins: bin 1 differs from bins 0 and 2 where the tremolo swings
    assert variation(truth)[0, 0, 4] > 0 and variation(truth)[0, 3, 4] == 0
    # a tenth of the tremolo (a model's prediction is never exactly flat): descent amplifies it
    wave = torch.sin(2 * math.pi * t / 8)
    pred = (smooth + 0.05 * wave * (torch.arange(4) == 1)[None, :, None]).requires_grad_(True)
    variation_loss(pred, truth).backward()
    assert torch.dot(pred.grad[0, 1], wave) < 0
    # crops shorter than a lag leave that lag out
    assert variation(truth[..., :3]).shape == (1, 4, 3)
