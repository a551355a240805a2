"""Detail gains (mel2mel.models.sharpen) and their fit (mel2mel.evaluation.detail_gains)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import debug_model, write_midi

from mel2mel import Synthesizer
from mel2mel import constants as C
from mel2mel.errors import UserError
from mel2mel.evaluation.detail_gains import detail_sums, fit_detail_gains
from mel2mel.models.blend import shepard_blend
from mel2mel.models.export import load_acoustic, save_pretrained
from mel2mel.models.sharpen import GAIN_RANGE, DetailGains, cross_bin_detail


def two_gains(low: float = 1.0, high: float = 2.0, width: int = 5) -> DetailGains:
    """Two anchors at (0, 0) and (2, 0) with flat gains ``low`` and ``high``."""
    return DetailGains(
        ("a", "b"), ((0.0, 0.0), (2.0, 0.0)), ((low,) * C.N_MELS, (high,) * C.N_MELS), width
    )


def peaky_mel(frames: int = 6) -> torch.Tensor:
    """Tensor[1 x N_MELS x frames]: peaks and valleys 1 neper from -6, far above the floor."""
    mel = torch.full((1, C.N_MELS, frames), -6.0)
    mel[:, ::4] += 1.0
    mel[:, 2::4] -= 1.0
    return mel


def test_detail_is_zero_for_flat_and_straight_spectra():
    flat = torch.full((2, C.N_MELS, 3), -4.0)
    assert cross_bin_detail(flat).abs().max() == 0
    line = torch.linspace(-8, -2, C.N_MELS)[None, :, None].expand(1, -1, 4)
    inner = cross_bin_detail(line, width=5)[:, 2:-2]  # edges repeat, so they bend
    assert inner.abs().max() < 1e-5


def power(mel: torch.Tensor) -> torch.Tensor:
    """Each frame's mel power, Tensor[B x T]."""
    return torch.exp(2 * mel.double()).sum(1)


def test_gains_scale_the_detail_and_keep_each_frames_power():
    mel, gains = peaky_mel(), two_gains()
    mel[..., 3:] -= 2.0  # frames of two levels
    detail = cross_bin_detail(mel)
    at_b = torch.tensor([[2.0, 0.0]])
    for strength, factor in ((1.0, 2.0), (0.5, 1.5)):  # gain 1 + strength * (2 - 1)
        out = gains.apply(mel, at_b, strength)
        shift = out - (mel + (factor - 1) * detail)  # the same in every bin of a frame
        torch.testing.assert_close(shift, shift[:, :1].expand_as(shift))
        assert shift.abs().min() > 0.01
        torch.testing.assert_close(power(out), power(mel))
        assert (out.amax(1) - out.amin(1)).min() > (mel.amax(1) - mel.amin(1)).max()
    torch.testing.assert_close(gains.apply(mel, torch.tensor([[0.0, 0.0]])), mel)  # gain 1
    torch.testing.assert_close(gains.apply(mel, at_b, strength=0.0), mel)


def test_output_stays_above_the_analysis_floor():
    mel = torch.full((1, C.N_MELS, 2), C.LOG_SILENCE + 1.0)
    mel[:, 10] = -1.0  # a lone peak: its neighbours' detail is negative, pushed to the floor
    out = two_gains(high=2.5).apply(mel, torch.tensor([[2.0, 0.0]]))
    assert out.min() == pytest.approx(C.LOG_SILENCE)
    assert (out[0, 10] - out[0, 9]).min() > (mel[0, 10] - mel[0, 9]).max()


def test_gains_blend_between_instruments_frame_by_frame():
    gains = two_gains(1.0, 2.0)
    at = gains.at(torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]))  # B x M x 1
    assert at.shape == (3, C.N_MELS, 1)
    torch.testing.assert_close(at[:, 0, 0], torch.tensor([1.0, 1.5, 2.0]))
    path = torch.tensor([[[0.0, 1.0, 2.0], [0.0, 0.0, 0.0]]])  # 1 x E x T: a morph
    torch.testing.assert_close(gains.at(path)[0, 0], torch.tensor([1.0, 1.5, 2.0]))
    # the same blend the texture strengths use
    values = torch.tensor([[3.0], [5.0]])
    torch.testing.assert_close(
        shepard_blend(torch.tensor([[0.5, 0.0]]), torch.tensor([[0.0, 0.0], [1.0, 0.0]]), values),
        torch.tensor([[[4.0]]]),
    )


def test_gains_round_trip_and_validate():
    gains = two_gains(1.25, 2.0, width=7)
    assert DetailGains.from_dict(json.loads(json.dumps(gains.to_dict()))) == gains
    with pytest.raises(ValueError, match="as many"):
        DetailGains(("a",), ((0.0,), (1.0,)), ((1.0,),))
    with pytest.raises(ValueError, match="odd"):
        DetailGains(("a",), ((0.0,),), ((1.0,),), width=4)
    with pytest.raises(ValueError, match=">= 0"):
        DetailGains(("a",), ((0.0,),), ((-1.0,),))


def test_detail_sums_measure_the_ratio_on_sounding_frames():
    rng = np.random.default_rng(0)
    truth = rng.normal(-5.0, 1.0, (C.N_MELS, 40)).astype(np.float32)
    truth[:, 30:] = C.LOG_SILENCE  # silence: left out
    sums, frames = detail_sums(truth, truth / 2.0, width=5)
    assert frames == 30
    np.testing.assert_allclose(sums[0] / sums[1], 2.0, rtol=1e-5)


def synth_model(seed: int = 0):
    return debug_model([("Synth 0", 80), ("Synth 1", 81)], seed)


def test_fit_gives_a_gain_per_instrument_and_bin(synthetic_dataset):
    model = synth_model()
    gains, detail = fit_detail_gains(model, synthetic_dataset, items=2, progress=False)
    assert gains.names == ("Synth 0", "Synth 1")
    table = np.array(gains.gains)
    assert table.shape == (2, C.N_MELS)
    assert GAIN_RANGE[0] <= table.min() and table.max() <= GAIN_RANGE[1]
    assert table.std() > 0  # measured per bin, not one number
    np.testing.assert_allclose(gains.embeddings, model.embedding.weight.detach().numpy())
    assert detail.shape == (2, 2) and np.isfinite(detail).all()
    # a model that predicts the same level in every bin has no detail: the largest gain
    with torch.no_grad():
        model.output.weight.zero_()
    assert model.head is None and model.harmonic is None  # nothing else draws across bins
    flat, detail = fit_detail_gains(model, synthetic_dataset, items=2, progress=False)
    np.testing.assert_array_equal(np.array(flat.gains), GAIN_RANGE[1])
    assert (detail[:, 0] > 1.0).all() and (detail[:, 1] < 1e-4).all()


def test_fit_refuses_a_model_without_the_datasets_instruments(synthetic_dataset):
    model = debug_model([("Synth 0", 80), ("Trumpet", 56)])
    with pytest.raises(UserError, match="Synth 1"):
        fit_detail_gains(model, synthetic_dataset, items=1, progress=False)


def test_exported_gains_are_applied_by_the_synthesizer(tmp_path):
    model = synth_model()
    plain_desc = save_pretrained(model, tmp_path / "plain")[1]
    assert "detail_gains" not in json.loads(plain_desc.read_text())
    assert load_acoustic(tmp_path / "plain").detail_gains is None
    gains = DetailGains(
        ("Synth 0", "Synth 1"),
        tuple(map(tuple, model.embedding.weight.detach().tolist())),
        ((2.0,) * C.N_MELS, (1.0,) * C.N_MELS),
    )
    model.detail_gains = gains
    save_pretrained(model, tmp_path / "sharp")
    loaded = load_acoustic(tmp_path / "sharp")
    assert loaded.detail_gains == gains
    midi = write_midi(tmp_path / "a.mid", [(60, 0.1, 0.5, 90), (67, 0.3, 0.5, 70)])
    off = Synthesizer(loaded, "griffinlim", sharpen=0.0, timbre_library=False)
    on = Synthesizer(loaded, "griffinlim", timbre_library=False)
    plain = Synthesizer(load_acoustic(tmp_path / "plain"), "griffinlim", timbre_library=False)
    base = plain.mel(midi, "Synth 0")
    np.testing.assert_array_equal(off.mel(midi, "Synth 0"), base)
    sharp = on.mel(midi, "Synth 0")
    want = gains.apply(torch.from_numpy(base)[None], model.embedding.weight[:1].detach())[0]
    np.testing.assert_allclose(sharp, want.numpy(), atol=1e-4)
    assert np.abs(sharp - base).max() > 0.1
    np.testing.assert_array_equal(on.mel(midi, "Synth 1"), plain.mel(midi, "Synth 1"))  # gain 1
    with pytest.raises(UserError, match="between 0 and 4"):
        Synthesizer(loaded, "griffinlim", sharpen=5.0, timbre_library=False)


def test_stages_trained_on_the_model_see_its_gains(synthetic_dataset, tmp_path):
    # The texture post-net and a vocoder adapted to the model learn from its cached
    # predictions: with gains, the predictions the synthesizer plays, in a cache of their own.
    from mel2mel.data.dataset import read_manifest, read_roll
    from mel2mel.train.distributed import DistInfo
    from mel2mel.train.predictions import prediction_path, prepare_predictions

    model = synth_model()
    save_pretrained(model, tmp_path / "plain")
    model.detail_gains = DetailGains(
        ("Synth 0", "Synth 1"), tuple(map(tuple, model.embedding.weight.detach().tolist())),
        ((2.0,) * C.N_MELS, (1.5,) * C.N_MELS),
    )  # fmt: skip
    save_pretrained(model, tmp_path / "sharp")
    plain, _ = prepare_predictions(str(tmp_path / "plain"), synthetic_dataset, tmp_path / "a",
                                   DistInfo(), progress=False)  # fmt: skip
    sharp, _ = prepare_predictions(str(tmp_path / "sharp"), synthetic_dataset, tmp_path / "a",
                                   DistInfo(), progress=False)  # fmt: skip
    assert sharp.digest == plain.digest  # the weights are the same: a post-net fits both
    assert sharp.cache != plain.cache and "-gains-" in sharp.cache.name
    item = next(it for it in read_manifest(synthetic_dataset)["items"] if it["split"] == "train")
    roll = torch.from_numpy(read_roll(synthetic_dataset, item["piece"]))[None]
    with torch.no_grad():
        raw = model.infer(roll, instrument=item["instrument"])
        want = model.sharpen(raw, model.embed(item["instrument"]))[0].numpy()
    got = np.load(prediction_path(sharp.cache, item["id"])).astype(np.float32)
    np.testing.assert_allclose(got, want, atol=2e-2)  # float16 in the cache
    unsharp = np.load(prediction_path(plain.cache, item["id"])).astype(np.float32)
    assert np.abs(got - unsharp).max() > 0.1


def test_a_strength_per_instrument_scales_its_own_gains():
    mel, at_b = peaky_mel(), torch.tensor([[2.0, 0.0]])
    half = two_gains(1.0, 3.0).with_strengths((1.0, 0.5))  # b: 1 + 0.5 * (3 - 1) = 2
    torch.testing.assert_close(half.apply(mel, at_b), two_gains(1.0, 2.0).apply(mel, at_b))
    off = two_gains(2.0, 3.0).with_strengths((1.0, 0.0))
    torch.testing.assert_close(off.apply(mel, at_b), mel)  # b's own mel, as the model drew it
    at_a = torch.tensor([[0.0, 0.0]])
    torch.testing.assert_close(off.apply(mel, at_a), two_gains(2.0, 3.0).apply(mel, at_a))
    assert off.gains == two_gains(2.0, 3.0).gains  # the fit is kept beside the strengths
    assert DetailGains.from_dict(json.loads(json.dumps(off.to_dict()))) == off
    assert "strength" not in json.dumps(two_gains().to_dict())  # none given: 1 for every one
    with pytest.raises(ValueError, match="one strength"):
        two_gains().with_strengths((1.0,))
    with pytest.raises(ValueError, match="one strength"):
        two_gains().with_strengths((1.0, -0.5))


def test_train_gains_sets_strengths_without_fitting_again(tmp_path, capsys):
    from mel2mel.cli import main

    model = synth_model()
    save_pretrained(model, tmp_path / "plain")
    args = ["train", "gains", "--model", str(tmp_path / "plain"), "-o", str(tmp_path / "s")]
    assert main([*args, "--strength", "Synth 1=0"]) == 2
    assert "no detail gains" in capsys.readouterr().err
    model.detail_gains = DetailGains(
        ("Synth 0", "Synth 1"), tuple(map(tuple, model.embedding.weight.detach().tolist())),
        ((2.0,) * C.N_MELS, (1.5,) * C.N_MELS),
    )  # fmt: skip
    save_pretrained(model, tmp_path / "sharp")
    args[3] = str(tmp_path / "sharp")
    assert main(args) == 2
    assert "--data" in capsys.readouterr().err
    assert main([*args, "--strength", "Trumpet=0"]) == 2
    assert "Synth 0" in capsys.readouterr().err  # the valid names are listed
    assert main([*args, "--strength", "0.5", "--strength", "Synth 1=0"]) == 0
    assert "Synth 0 0.5, Synth 1 0" in capsys.readouterr().out
    loaded = load_acoustic(tmp_path / "s")
    assert loaded.detail_gains == model.detail_gains.with_strengths((0.5, 0.0))
    torch.testing.assert_close(loaded.state_dict(), model.state_dict())  # weights unchanged
