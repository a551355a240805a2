"""The shared vocoder interface, Griffin-Lim, export/load, and ``mel2mel vocode``."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from mel2mel import pretrained
from mel2mel.audio import log_mel, mel_filterbank
from mel2mel.errors import UserError
from mel2mel.models import export
from mel2mel.vocoders.base import as_batch, crossfade_curves
from mel2mel.vocoders.fast import FastVocoder, FastVocoderConfig
from mel2mel.vocoders.griffinlim import GriffinLim, MelInverter
from mel2mel.vocoders.wavenet import WaveNet, WaveNetConfig

pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.py


def _signal(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(16_000 * seconds)) / 16_000
    env = np.exp(-2 * t)
    x = sum(a * np.sin(2 * np.pi * f * t) for a, f in [(0.3, 196), (0.15, 392), (0.1, 1568)])
    return (x * env).astype(np.float32)


def _mel_error(audio: np.ndarray, mel: np.ndarray) -> float:
    return float(np.abs(log_mel(audio)[:, : mel.shape[1]] - mel).mean())


# --- interface ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "vocoder",
    [
        GriffinLim(n_iter=4),
        FastVocoder(FastVocoderConfig.debug()),
        WaveNet(WaveNetConfig.debug()),
    ],
    ids=["griffinlim", "fast", "wavenet"],
)
def test_every_vocoder_has_the_same_interface(vocoder) -> None:
    vocoder.eval()
    mel = torch.randn(2, 80, 9) - 6
    assert vocoder.vocode(mel).shape == (2, 9 * 128)
    assert vocoder.vocode(mel[0].numpy()).shape == (9 * 128,)
    chunks = list(vocoder.vocode_stream(mel[0], chunk_frames=4))
    assert sum(len(c) for c in chunks) == 9 * 128
    assert all(c.dtype == np.float32 for c in chunks)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"\[80, T\]"):
        as_batch(torch.zeros(81, 5), 80, "mel")
    with pytest.raises(ValueError):
        as_batch(torch.zeros(80, 0), 80, "mel")
    fast = FastVocoder(FastVocoderConfig.debug())
    with pytest.raises(ValueError, match="does not match"):
        fast.vocode(torch.zeros(80, 5), torch.zeros(176, 6))
    with pytest.raises(ValueError):
        next(GriffinLim().vocode_stream(torch.zeros(2, 80, 5)))


def test_crossfade_curves() -> None:
    out, fade_in = crossfade_curves(64, "linear")
    assert np.allclose(out + fade_in, 1.0)
    out, fade_in = crossfade_curves(64, "power")
    assert np.allclose(out**2 + fade_in**2, 1.0)
    assert fade_in[0] < 0.05 and fade_in[-1] > 0.99


# --- Griffin-Lim ----------------------------------------------------------------------------


def test_mel_inversion_is_non_negative_and_consistent() -> None:
    mel = log_mel(_signal())
    target = np.exp(mel)
    fb = mel_filterbank()
    errors = []
    for iterations in (0, 30):
        mag = MelInverter(iterations)(torch.from_numpy(mel)[None])[0].numpy()
        assert mag.shape == (513, mel.shape[1]) and (mag >= 0).all()
        errors.append(np.abs(np.log(fb @ mag + 1e-5) - np.log(target + 1e-5)).mean())
    assert errors[1] < errors[0] < 0.5
    assert errors[1] < 0.15


def test_griffin_lim_copy_synthesis() -> None:
    audio = _signal()
    mel = log_mel(audio)
    y0 = GriffinLim(n_iter=0).vocode(mel).numpy()
    y = GriffinLim(n_iter=32).vocode(mel).numpy()
    assert y.shape == (mel.shape[1] * 128,)
    assert _mel_error(y, mel) < 0.7 * _mel_error(y0, mel)
    assert _mel_error(y, mel) < 0.4
    assert np.array_equal(y, GriffinLim(n_iter=32).vocode(mel).numpy())  # seeded


def test_griffin_lim_stream_cross_fades() -> None:
    audio = _signal(2.0)
    mel = log_mel(audio)
    gl = GriffinLim(n_iter=16)
    whole = gl.vocode(mel).numpy()
    chunked = gl.vocode_long(mel, chunk_frames=60)
    assert chunked.shape == whole.shape
    assert _mel_error(chunked, mel) < _mel_error(whole, mel) + 0.1


# --- export / load -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [FastVocoder(FastVocoderConfig.debug()), WaveNet(WaveNetConfig.debug())],
    ids=["fast", "wavenet"],
)
def test_export_round_trip(tmp_path, model) -> None:
    weights_path, config_path = export.save_vocoder(model, tmp_path / "voc.json", {"step": 7})
    info = json.loads(config_path.read_text())
    assert info["kind"] == model.kind and info["metadata"] == {"step": 7}
    loaded = export.load_vocoder(weights_path)
    assert type(loaded) is type(model) and loaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_load_errors(tmp_path, monkeypatch) -> None:
    with pytest.raises(UserError, match="not found"):
        export.load_vocoder(tmp_path / "missing")
    (tmp_path / "bad.json").write_text("{}")
    (tmp_path / "bad.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match="not an exported"):
        export.load_vocoder(tmp_path / "bad")
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path / "none")
    with pytest.raises(UserError, match="no pretrained fast vocoder"):
        export.load_pretrained_vocoder("fast")
    assert isinstance(export.load_pretrained_vocoder("griffinlim"), GriffinLim)


# --- CLI -------------------------------------------------------------------------------------


def _run_cli(argv: list[str]) -> int:
    from mel2mel.cli import vocode as vocode_cli

    parser = argparse.ArgumentParser()
    vocode_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["vocode", *argv])
    return args.func(args)


@pytest.fixture
def mel_file(tmp_path):
    path = tmp_path / "song.npy"
    np.save(path, log_mel(_signal(0.5)))
    return path


def test_cli_griffinlim_and_overwrite(mel_file, tmp_path) -> None:
    out = tmp_path / "out.wav"
    assert _run_cli([str(mel_file), "-o", str(out), "--vocoder", "griffinlim"]) == 0
    audio, sr = sf.read(out)
    assert sr == 16_000 and len(audio) == np.load(mel_file).shape[1] * 128
    with pytest.raises(UserError, match="-f"):
        _run_cli([str(mel_file), "-o", str(out), "--vocoder", "griffinlim"])
    assert _run_cli([str(mel_file), "-o", str(out), "--vocoder", "griffinlim", "-f"]) == 0


def test_cli_errors(mel_file, tmp_path, monkeypatch) -> None:
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((64, 10), dtype=np.float32))
    with pytest.raises(UserError, match=r"shape \[80, T\]"):
        _run_cli([str(bad), "--vocoder", "griffinlim"])
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((80, 4), np.nan, dtype=np.float32))
    with pytest.raises(UserError, match="NaN"):
        _run_cli([str(nan), "--vocoder", "griffinlim"])
    with pytest.raises(UserError, match="not found"):
        _run_cli([str(tmp_path / "nope.npy")])
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path / "none")
    with pytest.raises(UserError, match="no pretrained wavenet"):
        _run_cli([str(mel_file), "--vocoder", "wavenet"])


def test_cli_with_exported_models_and_midi(mel_file, tmp_path) -> None:
    import pretty_midi

    midi = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    piano.notes.append(pretty_midi.Note(velocity=90, pitch=55, start=0.0, end=0.4))
    midi.instruments.append(piano)
    midi_path = tmp_path / "song.mid"
    midi.write(str(midi_path))
    export.save_vocoder(FastVocoder(FastVocoderConfig.debug()), tmp_path / "fast")
    export.save_vocoder(WaveNet(WaveNetConfig.debug()), tmp_path / "wn")
    frames = np.load(mel_file).shape[1]
    for kind, stem in (("fast", "fast"), ("wavenet", "wn")):
        out = tmp_path / f"{kind}.wav"
        argv = [str(mel_file), "-o", str(out), "--vocoder", kind, "--model", str(tmp_path / stem)]
        if kind == "fast":
            assert _run_cli([*argv, "--midi", str(midi_path)]) == 0
        else:
            with pytest.warns(UserWarning, match="does not use notes"):
                assert _run_cli([*argv, "--midi", str(midi_path)]) == 0
        assert len(sf.read(out)[0]) == frames * 128
    with pytest.raises(UserError, match="holds a fast vocoder"):
        _run_cli([str(mel_file), "-f", "--vocoder", "wavenet", "--model", str(tmp_path / "fast")])


def test_cli_main_reports_user_errors(mel_file, tmp_path, capsys) -> None:
    from mel2mel import cli

    cli.build_parser()  # every subcommand imports (an ImportError fails the test)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3,), dtype=np.float32))
    assert cli.main(["vocode", str(bad), "--vocoder", "griffinlim"]) == 2
    assert "expected a log-mel" in capsys.readouterr().err


def test_cli_shipped_fast_vocoder_and_refine(mel_file, tmp_path) -> None:
    """The shipped fast vocoder through the CLI; --refine changes its iterations."""
    if not export.vocoder_path("fast").with_suffix(".json").is_file():
        pytest.skip("no shipped fast vocoder")
    shipped = export.load_pretrained_vocoder("fast")
    assert shipped.config.refine_iterations > 0
    outs = {}
    for refine in (None, 0):
        out = tmp_path / f"r{refine}.wav"
        argv = [str(mel_file), "-o", str(out)] + ([] if refine is None else ["--refine", "0"])
        assert _run_cli(argv) == 0
        outs[refine] = sf.read(out)[0]
    assert len(outs[None]) == len(outs[0]) == np.load(mel_file).shape[1] * 128
    assert not np.allclose(outs[None], outs[0], atol=1e-4)
    # the refined output reproduces the mel better than the network's own
    target = np.load(mel_file)
    error = {k: np.abs(log_mel(v.astype(np.float32))[:, : target.shape[1]] - target).mean()
             for k, v in outs.items()}  # fmt: skip
    assert error[None] < error[0]
    with pytest.warns(UserWarning, match="fast vocoder only"):
        assert _run_cli([str(mel_file), "-o", str(tmp_path / "g.wav"), "--vocoder",
                         "griffinlim", "--refine", "2"]) == 0  # fmt: skip
