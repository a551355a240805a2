"""``mel2mel mel``: predicted log-mel of a MIDI file, analysed log-mel of an audio file."""

from __future__ import annotations

import mido
import numpy as np
import pytest
import soundfile as sf
import torch

from mel2mel import constants as C
from mel2mel import mel_cli
from mel2mel.audio import load_audio, log_mel
from mel2mel.cli import main
from mel2mel.midi import midi_to_roll
from mel2mel.models import AcousticConfig, Instrument, Mel2Mel, load_acoustic, save_pretrained

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = Mel2Mel(
        AcousticConfig.preset("debug", n_instruments=2),
        [Instrument("Grand Piano", 0), Instrument("Trumpet", 56)],
    )
    with torch.no_grad():  # make the instrument matter
        for p in (*model.film_in.parameters(), *model.film_out.parameters()):
            p.normal_(0, 0.5)
    path = tmp_path_factory.mktemp("model") / "tiny"
    save_pretrained(model, path)
    return path


@pytest.fixture
def song(tmp_path):
    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    for i, note in enumerate([60, 64, 67, 72]):
        track.append(mido.Message("note_on", note=note, velocity=90, time=0 if i == 0 else 240))
        track.append(mido.Message("note_off", note=note, velocity=0, time=240))
    path = tmp_path / "song.mid"
    mid.save(path)
    return path


def test_midi_to_mel(model_dir, song, tmp_path):
    out = tmp_path / "song.npy"
    assert (
        main(
            ["mel", str(song), "--instrument", "trumpet", "-o", str(out), "--model", str(model_dir)]
        )
        == 0
    )
    mel = np.load(out)
    roll = midi_to_roll(song)
    assert mel.dtype == np.float32 and mel.shape == (C.N_MELS, roll.shape[1])
    model = load_acoustic(model_dir)
    with torch.no_grad():
        expected = model(torch.from_numpy(roll)[None], instrument=1)[0].numpy()
    np.testing.assert_allclose(mel, expected, atol=1e-6)
    # by program number, and a free embedding vector equal to the trumpet's row
    by_program = tmp_path / "p.npy"
    assert (
        main(["mel", str(song), "-i", "56", "-o", str(by_program), "--model", str(model_dir)]) == 0
    )
    np.testing.assert_array_equal(np.load(by_program), mel)
    # aliases and GM names resolve as in 'mel2mel render'; a mix is the averaged embedding
    with torch.no_grad():
        piano = model(torch.from_numpy(roll)[None], instrument=0)[0].numpy()
        mix = model.embedding.weight.mean(0, keepdim=True)
        expected_mix = model(torch.from_numpy(roll)[None], embedding=mix)[0].numpy()
    assert np.abs(piano - mel).max() > 0.1 and np.abs(expected_mix - mel).max() > 0.1
    for spec, expected in [("Trumpet", mel), ("Acoustic Grand Piano", piano),
                           ("piano=0.5,trumpet=0.5", expected_mix)]:  # fmt: skip
        alias = tmp_path / "a.npy"
        args = ["mel", str(song), "-i", spec, "-o", str(alias), "--model", str(model_dir), "-f"]
        assert main(args) == 0
        np.testing.assert_allclose(np.load(alias), expected, atol=1e-5, err_msg=spec)
    vec = ",".join(f"{v:.9g}" for v in model.embedding.weight[1].tolist())
    free = tmp_path / "e.npy"
    assert (
        main(["mel", str(song), f"--embedding={vec}", "-o", str(free), "--model", str(model_dir)])
        == 0
    )
    np.testing.assert_allclose(np.load(free), mel, atol=1e-5)


def test_unknown_instrument_lists_names(model_dir, song, tmp_path, capsys):
    code = main(
        ["mel", str(song), "-i", "tuba", "-o", str(tmp_path / "x.npy"), "--model", str(model_dir)]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "tuba" in err and "Grand Piano (0)" in err and "Trumpet (56)" in err
    assert not (tmp_path / "x.npy").exists()


def test_no_overwrite_without_force(model_dir, song, tmp_path, capsys):
    out = tmp_path / "song.npy"
    out.write_bytes(b"keep me")
    args = ["mel", str(song), "-i", "0", "-o", str(out), "--model", str(model_dir)]
    assert main(args) == 2
    assert "-f" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert main([*args, "-f"]) == 0
    assert np.load(out).shape[0] == C.N_MELS
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_missing_default_model_is_a_clear_error(song, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(mel_cli, "DEFAULT_MODEL", tmp_path / "none" / "acoustic.safetensors")
    monkeypatch.setattr(mel_cli, "PRETRAINED_DIR", tmp_path / "none")
    assert main(["mel", str(song), "-i", "0", "-o", str(tmp_path / "a.npy")]) == 2
    assert "--model" in capsys.readouterr().err


def test_midi_needs_an_instrument(model_dir, song, tmp_path, capsys):
    assert main(["mel", str(song), "-o", str(tmp_path / "a.npy"), "--model", str(model_dir)]) == 2
    assert "--instrument" in capsys.readouterr().err


def test_audio_to_mel(tmp_path):
    sr, seconds = 44_100, 0.5
    t = np.arange(int(sr * seconds)) / sr
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t)], 1)
    wav = tmp_path / "rec.wav"
    sf.write(wav, stereo, sr)
    out = tmp_path / "rec.npy"
    assert main(["mel", str(wav), "-o", str(out)]) == 0
    mel = np.load(out)
    n = len(load_audio(wav))
    assert n == pytest.approx(C.SAMPLE_RATE * seconds, abs=2)
    assert mel.shape == (C.N_MELS, n // C.HOP_LENGTH + 1) and mel.dtype == np.float32
    np.testing.assert_array_equal(mel, log_mel(load_audio(wav)))
    assert mel.max() > C.LOG_SILENCE + 5


def test_audio_rejects_instrument_and_bad_files(tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    assert main(["mel", str(bad), "-o", str(tmp_path / "b.npy")]) == 2
    assert "cannot read audio" in capsys.readouterr().err
    wav = tmp_path / "ok.wav"
    sf.write(wav, np.zeros(1600), 16_000)
    assert main(["mel", str(wav), "-i", "0", "-o", str(tmp_path / "c.npy")]) == 2
    assert main(["mel", str(tmp_path / "missing.wav"), "-o", str(tmp_path / "d.npy")]) == 2
