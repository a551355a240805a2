"""``mel2mel mel``: predicted log-mel of a MIDI file, analysed log-mel of an audio file."""

from __future__ import annotations

import tracemalloc

import mido
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import write_midi

from mel2mel import Synthesizer, pretrained
from mel2mel import constants as C
from mel2mel.audio import load_audio, log_mel
from mel2mel.cli import main
from mel2mel.cli import mel as mel_cli
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


def run_mel(*args) -> int:
    return main(["mel", *map(str, args)])


def test_midi_to_mel(model_dir, song, tmp_path):
    out = tmp_path / "song.npy"
    assert (
        run_mel(song, "--instrument", "trumpet", "-o", out, "--model", model_dir, "--tail", 0) == 0
    )
    mel = np.load(out)
    roll = midi_to_roll(song)
    assert mel.dtype == np.float32 and mel.shape == (C.N_MELS, roll.shape[1])
    model = load_acoustic(model_dir)
    with torch.no_grad():
        expected = model(torch.from_numpy(roll)[None], instrument=1)[0].numpy()
    np.testing.assert_allclose(mel, expected, atol=1e-5)
    # by program number, and coordinates equal to the trumpet's row
    by_program = tmp_path / "p.npy"
    assert run_mel(song, "-i", "56", "-o", by_program, "--model", model_dir, "--tail", 0) == 0
    np.testing.assert_array_equal(np.load(by_program), mel)
    # aliases and GM names resolve as in 'mel2mel render'; a mix is the averaged embedding
    with torch.no_grad():
        piano = model(torch.from_numpy(roll)[None], instrument=0)[0].numpy()
        mix = model.embedding.weight.mean(0, keepdim=True)
        expected_mix = model(torch.from_numpy(roll)[None], embedding=mix)[0].numpy()
    assert np.abs(piano - mel).max() > 0.1 and np.abs(expected_mix - mel).max() > 0.1
    for spec, expected in [
        (["-i", "Trumpet"], mel),
        (["-i", "Acoustic Grand Piano"], piano),
        (["--mix", "piano=0.5,trumpet=0.5"], expected_mix),
        ([], piano),
    ]:  # fmt: skip  (no timbre: the first instrument)
        alias = tmp_path / "a.npy"
        assert run_mel(song, *spec, "-o", alias, "--model", model_dir, "-f", "--tail", 0) == 0
        np.testing.assert_allclose(np.load(alias), expected, atol=1e-5, err_msg=str(spec))
    vec = ",".join(f"{v:.9g}" for v in model.embedding.weight[1].tolist())
    for flag in ("--timbre", "--embedding"):  # --embedding: the old spelling, hidden
        free = tmp_path / "e.npy"
        assert (
            run_mel(song, f"{flag}={vec}", "-o", free, "--model", model_dir, "-f", "--tail", 0) == 0
        )
        np.testing.assert_allclose(np.load(free), mel, atol=1e-5)


def test_mel_is_what_render_vocodes(model_dir, tmp_path):
    """Tail, range, channel volume and a morph: the CLI writes ``Synthesizer.mel``'s array."""
    cc7 = [(0.0, mido.Message("control_change", control=7, value=60))]
    notes = [(48 + (k * 7) % 24, 0.25 * k, 0.4, 30 + (k * 13) % 90) for k in range(40)]
    song = write_midi(tmp_path / "cc.mid", notes, extra=cc7)
    synth = Synthesizer.from_pretrained(model_dir, vocoder="griffinlim")
    for args, kw in [
        ([], {}),
        (["--start", "2", "--duration", "3.5", "--tail", "0.5"],
         {"start": 2, "duration": 3.5, "tail": 0.5}),
        (["--morph", "piano@0s,trumpet@8s"], {"timbre": "piano@0s,trumpet@8s"}),
    ]:  # fmt: skip
        out = tmp_path / "m.npy"
        assert run_mel(song, *args, "-o", out, "--model", model_dir, "-f") == 0
        np.testing.assert_array_equal(np.load(out), synth.mel(song, **kw))
    plain = synth.mel(write_midi(tmp_path / "plain.mid", notes))
    assert np.allclose(
        synth.mel(song) - plain, 2 * np.log(60 / 100), atol=1e-5
    )  # CC7 as FluidSynth


def test_long_piece_streams_in_bounded_memory(model_dir, tmp_path):
    """5 and 20 minutes: numpy's peak is the batch of acoustic windows, not the mel (a 20-min
    mel is 48 MB, which whole-piece prediction would have held twice)."""
    peaks = []
    for minutes in (5, 20):
        notes = [(40 + k % 40, 0.5 * k, 0.45, 64) for k in range(minutes * 120)]
        song = write_midi(tmp_path / f"{minutes}.mid", notes)
        out = tmp_path / f"{minutes}.npy"
        tracemalloc.start()
        try:
            assert run_mel(song, "-i", "trumpet", "-o", out, "--model", model_dir) == 0
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    mel = np.load(out, mmap_mode="r")
    assert mel.shape == (C.N_MELS, midi_to_roll(song).shape[1] + round(C.FRAME_RATE))  # 1 s tail
    assert peaks[1] < peaks[0] + 4e6, f"peaks {np.round(np.array(peaks) / 1e6, 1)} MB"
    assert np.isfinite(mel[:, ::997]).all() and float(mel[:, -20:].max()) < -5  # tail decays


def test_npy_writer_checks_the_frame_count(tmp_path):
    chunks = [np.full((C.N_MELS, n), n, np.float32) for n in (3, 5)]
    with open(tmp_path / "a.npy", "wb") as f:
        mel_cli.write_mel_npy(f, 8, iter(chunks))
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.concatenate(chunks, 1))
    with open(tmp_path / "b.npy", "wb") as f, pytest.raises(ValueError, match="announced"):
        mel_cli.write_mel_npy(f, 9, iter(chunks))


def test_unknown_instrument_lists_names(model_dir, song, tmp_path, capsys):
    assert run_mel(song, "-i", "tuba", "-o", tmp_path / "x.npy", "--model", model_dir) == 2
    err = capsys.readouterr().err
    assert "tuba" in err and "Grand Piano (0)" in err and "Trumpet (56)" in err
    assert not (tmp_path / "x.npy").exists()


def test_no_overwrite_without_force(model_dir, song, tmp_path, capsys):
    out = tmp_path / "song.npy"
    out.write_bytes(b"keep me")
    args = [song, "-i", "0", "-o", out, "--model", model_dir]
    assert run_mel(*args) == 2
    assert "-f" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert run_mel(*args, "-f") == 0
    assert np.load(out).shape[0] == C.N_MELS
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_missing_default_model_is_a_clear_error(song, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path / "none")
    assert run_mel(song, "-i", "0", "-o", tmp_path / "a.npy") == 2
    assert "--model" in capsys.readouterr().err


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
    assert "for MIDI input only" in capsys.readouterr().err
    assert main(["mel", str(tmp_path / "missing.wav"), "-o", str(tmp_path / "d.npy")]) == 2
