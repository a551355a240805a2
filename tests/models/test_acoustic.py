"""Mel2Mel acoustic model: shapes, FiLM identity at init, parameter count, embeddings, export."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from mel2mel import constants as C
from mel2mel.models import (
    AcousticConfig,
    FiLM,
    Instrument,
    Mel2Mel,
    build_acoustic,
    code_velocity,
    count_parameters,
    load_acoustic,
    save_pretrained,
)
from mel2mel.models.acoustic import UnknownInstrumentError, resolve_instrument
from mel2mel.train.loop import copy_matching, init_from_pretrained

pytestmark = pytest.mark.usefixtures("single_thread")

NAMES = [Instrument("Grand Piano", 0), Instrument("Trumpet", 56), Instrument("Synth Lead", 80)]


def tiny(n_instruments: int = 3, **kw) -> Mel2Mel:
    torch.manual_seed(0)
    config = AcousticConfig.preset("debug", n_instruments=n_instruments, **kw)
    return Mel2Mel(config, NAMES[:n_instruments] if n_instruments <= 3 else None)


def randomize_film(model: Mel2Mel) -> None:
    """Give the FiLM maps non-zero weights so that the instrument matters."""
    with torch.no_grad():
        for film in (model.film_in, model.film_out):
            for p in film.parameters():
                p.normal_(0, 0.5)


def test_output_shape_and_dtype():
    model = tiny()
    roll = torch.rand(4, C.ROLL_CHANNELS, 37)
    out = model(roll, instrument=torch.tensor([0, 1, 2, 0]))
    assert out.shape == (4, C.N_MELS, 37)
    assert out.dtype == torch.float32


def test_output_is_floored_at_inference_and_trained_unfloored():
    model = tiny(harmonic_detail=True)
    with torch.no_grad():
        model.output.bias[:40] = -30.0  # half of the bins far below the floor
    roll = (torch.rand(2, C.ROLL_CHANNELS, 50) > 0.97).float() * 0.8
    model.eval()
    with torch.inference_mode():
        out, fast = model(roll, instrument=1), model.infer(roll, instrument=1)
    assert out[:, :40].eq(C.LOG_SILENCE).all() and out[:, 40:].gt(C.LOG_SILENCE).all()
    torch.testing.assert_close(fast, out, atol=1e-5, rtol=0)
    # training: the loss sees the mel unfloored, so a target at the floor, as well as one above
    # it, pulls a prediction below the floor up (a floored value would leave it to drift)
    model.train()
    pred = model(roll, instrument=1)
    assert pred.detach()[:, :40].lt(C.LOG_SILENCE - 10).all()
    torch.testing.assert_close(pred.detach()[:, 40:], out[:, 40:], atol=1e-5, rtol=0)
    target = pred.detach().clamp_min(C.LOG_SILENCE)
    target[:, :20] = -5.0
    (pred - target).abs().mean().backward()
    grad = model.output.bias.grad
    assert grad[:40].lt(0).all() and grad[40:].abs().max() < grad[:40].abs().min()


def test_paper_model_shape_and_parameter_count():
    model = build_acoustic("paper")
    # 45,312 (conv in) + 1,536 (FiLM 256) + 1,052,672 (BiLSTM) + 3,072 (FiLM 512)
    # + 41,040 (conv out) + 20 (10 x 2 embedding) = 1,143,652: the paper's "about 1.2 M".
    assert count_parameters(model) == 1_143_652
    assert 1.1e6 < count_parameters(build_acoustic("paper100")) < 1.25e6
    out = model(torch.rand(1, C.ROLL_CHANNELS, 9), instrument=3)
    assert out.shape == (1, 80, 9)


def test_film_is_identity_at_init():
    film = FiLM(embedding_dim=2, channels=6)
    x = torch.randn(3, 6, 11)
    assert torch.equal(film(x, torch.randn(3, 2)), x)
    assert torch.equal(film(x, torch.randn(3, 2, 11)), x)
    # hence a fresh model ignores the instrument
    model = tiny()
    roll = torch.rand(1, C.ROLL_CHANNELS, 20)
    assert torch.equal(model(roll, instrument=0), model(roll, instrument=2))


def test_film_scale_and_shift():
    film = FiLM(embedding_dim=1, channels=2)
    with torch.no_grad():
        film.gamma.weight.fill_(1.0)  # gamma = 1 + e
        film.beta.bias.fill_(0.5)
    x = torch.ones(1, 2, 3)
    out = film(x, torch.tensor([[2.0]]))
    assert torch.allclose(out, torch.full_like(x, 3.5))


def test_free_embedding_equals_table_lookup():
    model = tiny()
    randomize_film(model)
    roll = torch.rand(2, C.ROLL_CHANNELS, 25)
    idx = torch.tensor([2, 1])
    by_index = model(roll, instrument=idx)
    vectors = model.embedding.weight[idx].detach().clone()
    assert torch.allclose(model(roll, embedding=vectors), by_index, atol=1e-6)
    per_frame = vectors[:, :, None].expand(-1, -1, 25)
    assert torch.allclose(model(roll, embedding=per_frame), by_index, atol=1e-6)
    assert not torch.allclose(by_index[0], model(roll, instrument=torch.tensor([0, 1]))[0])


def test_per_frame_embedding_morphs_over_time():
    model = tiny()
    randomize_film(model)
    model.eval()
    roll = torch.rand(1, C.ROLL_CHANNELS, 30)
    e = model.embedding.weight.detach()
    # first half instrument 0, second half instrument 1: the LSTM mixes the halves, so only
    # the final projection is compared at the frames where the morph is pure
    path = torch.cat([e[0, :, None].expand(-1, 15), e[1, :, None].expand(-1, 15)], dim=1)
    out = model(roll, embedding=path.unsqueeze(0))
    assert out.shape == (1, C.N_MELS, 30)
    assert not torch.allclose(out, model(roll, instrument=0))
    assert not torch.allclose(out, model(roll, instrument=1))


def test_instrument_broadcasts_and_argument_errors():
    model = tiny()
    roll = torch.rand(3, C.ROLL_CHANNELS, 8)
    assert model(roll, instrument=1).shape == (3, C.N_MELS, 8)
    with pytest.raises(ValueError, match="exactly one"):
        model(roll)
    with pytest.raises(ValueError, match="exactly one"):
        model(roll, instrument=0, embedding=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="roll must be"):
        model(torch.rand(3, 88, 8), instrument=0)
    with pytest.raises(ValueError, match="embedding must be"):
        model(roll, embedding=torch.zeros(3, 5))
    with pytest.raises(ValueError, match="as many frames"):
        model(roll, embedding=torch.zeros(3, 2, 7))


@pytest.mark.parametrize(
    "overrides", [{"lstm_layers": 2, "dropout": 0.1}, {"frontend_layers": 2, "frontend_kernel": 5}]
)
def test_variations(overrides):
    model = tiny(**overrides)
    out = model(torch.rand(2, C.ROLL_CHANNELS, 16), instrument=torch.tensor([0, 1]))
    assert out.shape == (2, C.N_MELS, 16)
    assert count_parameters(model) > count_parameters(tiny())


def test_config_round_trip_and_validation():
    cfg = AcousticConfig.preset("paper100")
    assert cfg.embedding_dim == 10 and cfg.n_instruments == 100
    assert AcousticConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown AcousticConfig"):
        AcousticConfig.from_dict({"lstm_units": 3})
    with pytest.raises(ValueError, match="odd"):
        AcousticConfig(frontend_kernel=4)
    with pytest.raises(ValueError, match="unknown acoustic preset"):
        AcousticConfig.preset("huge")


def test_log_velocity_coding_is_affine_in_fluidsynth_decibels():
    velocities = torch.arange(0, 128, dtype=torch.float32)
    roll = (velocities / 127).expand(C.ROLL_CHANNELS, 128)[None]
    assert torch.equal(code_velocity(roll, "linear"), roll)
    coded = code_velocity(roll, "log")[0, 0]
    assert coded[0] == 0  # no note stays no note
    assert coded[1] == pytest.approx(0.2) and coded[127] == pytest.approx(1.0)
    assert bool((coded[2:] > coded[1:-1]).all())  # louder is always larger
    # equal velocity ratios (equal steps of FluidSynth's 40 log10(v / 127) dB) are equal steps
    assert coded[20] - coded[10] == pytest.approx(coded[120] - coded[60], abs=1e-6)
    with pytest.raises(ValueError, match="velocity_coding"):
        AcousticConfig(velocity_coding="sqrt")


def test_log_coded_model_sees_velocity_through_its_coding(tmp_path):
    model = tiny(velocity_coding="log")
    randomize_film(model)
    roll = torch.rand(1, C.ROLL_CHANNELS, 12) * (torch.rand(1, C.ROLL_CHANNELS, 12) > 0.7)
    linear = Mel2Mel(dataclasses.replace(model.config, velocity_coding="linear"), NAMES)
    linear.load_state_dict(model.state_dict())
    with torch.no_grad():
        want = linear(code_velocity(roll, "log"), instrument=1)
        assert torch.allclose(model(roll, instrument=1), want, atol=1e-6)
        assert not torch.allclose(linear(roll, instrument=1), want, atol=1e-3)
        save_pretrained(model, f"{tmp_path}/")
        assert torch.equal(load_acoustic(tmp_path)(roll, instrument=1), model(roll, instrument=1))


def test_linear_and_log_coding_extends_a_linear_model_exactly(tmp_path):
    roll = torch.rand(1, C.ROLL_CHANNELS, 12) * (torch.rand(1, C.ROLL_CHANNELS, 12) > 0.7)
    both = code_velocity(roll, "linear+log")
    assert both.shape == (1, 2 * C.ROLL_CHANNELS, 12)
    assert torch.equal(both[:, : C.ROLL_CHANNELS], roll)
    assert torch.equal(both[:, C.ROLL_CHANNELS :], code_velocity(roll, "log"))
    linear = tiny()
    randomize_film(linear)
    save_pretrained(linear, f"{tmp_path}/")
    model = tiny(velocity_coding="linear+log")
    assert model.input.weight.shape[1] == model.config.input_channels == 2 * C.ROLL_CHANNELS
    copied, fresh = init_from_pretrained(model, tmp_path)
    assert "input.weight" in copied and fresh == []
    assert torch.equal(model.input.weight[:, C.ROLL_CHANNELS :], torch.zeros(8, 176, 1))
    with torch.no_grad():
        assert torch.allclose(model(roll, instrument=1), linear(roll, instrument=1), atol=1e-6)
        model.input.weight[:, C.ROLL_CHANNELS :] = 0.1  # the log rows count once trained
        assert not torch.allclose(model(roll, instrument=1), linear(roll, instrument=1))
    # the other way (a linear model from a linear+log one) keeps the linear rows
    save_pretrained(model, f"{tmp_path / 'both'}/")
    again = tiny()
    assert "input.weight" in init_from_pretrained(again, tmp_path / "both")[0]
    assert torch.equal(again.input.weight, model.input.weight[:, : C.ROLL_CHANNELS])
    # the generic copy, which the texture post-net (with its own ``input``) uses too, resizes
    # nothing: fitting the rows is the acoustic model's own step
    _, fresh = copy_matching(tiny(velocity_coding="linear+log"), linear.state_dict(), "linear")
    assert "input.weight" in fresh


def test_resolve_instrument():
    assert resolve_instrument(NAMES, "trumpet") == 1
    assert resolve_instrument(NAMES, " SYNTH lead ") == 2
    assert resolve_instrument(NAMES, "56") == 1
    assert resolve_instrument(NAMES, 0) == 0
    with pytest.raises(UnknownInstrumentError, match=r"Grand Piano \(0\), Trumpet \(56\)"):
        resolve_instrument(NAMES, "tuba")
    with pytest.raises(UnknownInstrumentError):  # "²".isdigit() is true but int("²") fails
        resolve_instrument(NAMES, "²")


def test_export_round_trip(tmp_path):
    model = tiny()
    randomize_film(model)
    model.metadata = {"loss": "log-abs"}
    weights, desc = save_pretrained(model, f"{tmp_path / 'export'}/")  # "/": a directory
    assert weights == tmp_path / "export" / "acoustic.safetensors"
    doc = json.loads(desc.read_text())
    assert doc["format"] == 1 and doc["kind"] == "acoustic"
    assert doc["config"] == model.config.to_dict()
    assert doc["instruments"][1] == {"name": "Trumpet", "program": 56}
    assert doc["metadata"]["loss"] == "log-abs"
    roll = torch.rand(2, C.ROLL_CHANNELS, 19)
    expected = model.eval()(roll, instrument=torch.tensor([0, 2]))
    for path in (tmp_path / "export", weights, desc):
        loaded = load_acoustic(path)
        assert not loaded.training
        assert loaded.instruments == model.instruments
        assert loaded.metadata["loss"] == "log-abs"
        assert torch.equal(loaded(roll, instrument=torch.tensor([0, 2])), expected)


def test_export_with_prefix(tmp_path):
    model = tiny()
    weights, desc = save_pretrained(model, tmp_path / "models" / "piano10")
    assert weights.name == "piano10.safetensors" and desc.name == "piano10.json"
    assert load_acoustic(tmp_path / "models" / "piano10").config == model.config


def test_io_imports_no_training_code():
    code = (
        "import sys, mel2mel.models.export; "
        "bad = [m for m in sys.modules if m.startswith(('mel2mel.train', 'yaml', 'tensorboard',"
        " 'matplotlib'))]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_chunked_inference_matches_full_forward():
    model = tiny()
    randomize_film(model)
    model.train()
    roll = torch.rand(2, C.ROLL_CHANNELS, 1000)
    idx = torch.tensor([1, 2])
    with torch.no_grad():
        exact = model.eval()(roll, instrument=idx)
    model.train()
    # no chunking: exact up to float rounding (the fast path folds layers together)
    torch.testing.assert_close(model.infer(roll, instrument=idx), exact, atol=1e-5, rtol=0)
    chunked = model.infer(roll, instrument=idx, chunk_frames=128, context_frames=64)
    assert model.training  # restored
    assert chunked.shape == exact.shape
    # a small random LSTM forgets within 64 frames, so the windows agree with the full run
    assert torch.allclose(chunked, exact, atol=1e-4)
    per_frame = torch.randn(2, 2, 1000)
    assert torch.allclose(
        model.infer(roll, embedding=per_frame, chunk_frames=300, context_frames=50),
        model.eval()(roll, embedding=per_frame),
        atol=1e-4,
    )
