"""Careless and hostile input to the CLI (issue 18): one clear line, exit 2, no file left.

Every case here once gave a traceback, a segfault, a NaN/DC/full-scale file reported as
success, or a file left behind. Each test checks the message, the exit status and the folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import piano_trumpet_model

from mel2mel.cli import main
from mel2mel.models import save_pretrained
from mel2mel.models.export import model_fingerprint
from mel2mel.timbre.library import TimbreLibrary, UserTimbre

pytestmark = pytest.mark.usefixtures("single_thread")

NOTES = [(60, 0.0, 0.5, 90), (64, 0.25, 0.5, 80), (67, 0.5, 0.75, 100), (48, 0.0, 1.25, 70)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    save_pretrained(piano_trumpet_model(), folder)
    return folder


def broken_model_dir(folder: Path, bias: float) -> Path:
    """A model whose every predicted log-mel value is ``bias`` (NaN, or far above full
    scale): the models' failure that the last check on the output must catch."""
    model = piano_trumpet_model()
    with torch.no_grad():
        model.output.weight.zero_()
        model.output.bias.fill_(bias)
    save_pretrained(model, folder)
    return folder


@pytest.fixture
def song(tmp_path, midi_writer) -> Path:
    return midi_writer(tmp_path / "song.mid", NOTES)


def run(capsys, *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    assert err.startswith("mel2mel: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and not err.rstrip().endswith(": )"), err
    for word in words:
        assert word in err, (word, err)


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix not in (".mid", ".npy") or
                  p.name.startswith("."))  # fmt: skip


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--start", "1e308"], ["bad time", "86400"]),
        (["--duration", "1e308"], ["bad time"]),
        (["--tail", "1e308"], ["bad time"]),
        (["--tail", "1e12"], ["bad time"]),
        (["--tail", "120"], ["--tail", "60"]),
        (["--start", "1:1e308"], ["bad time"]),
        (["--seed", "99999999999999999999999"], ["--seed", "4294967295"]),
        (["--seed", "-1"], ["--seed"]),
        (["--threads", "100000"], ["--threads", f"1 .. {os.cpu_count()}"]),
        (["--threads", "0"], ["--threads"]),
        (["-i", "²"], ["unknown instrument '²'"]),
        (["--timbre", "²"], ["unknown instrument '²'"]),
        (["--track", "²=trumpet"], ["bad --track"]),
        (["--mix", "²=1"], ["unknown instrument '²'"]),
        (["--morph", "²@0"], ["unknown instrument '²'"]),
        (["--timbre=1e5,1e5"], ["outside the timbre space"]),
        (["--timbre=1e308,1e308"], ["outside the timbre space"]),
        (["--timbre=40,40"], ["outside the timbre space"]),
        (["--morph", "piano@0s,10,10@1s"], ["outside the timbre space"]),
        (["--texture", "nan"], ["--texture"]),
    ],
)
def test_render_refuses_odd_numbers_and_text(model_dir, song, tmp_path, capsys, args, words):
    out = tmp_path / "o.wav"
    code, _, err = run(capsys, "render", song, "-o", out, "--model", model_dir,
                       "--vocoder", "griffinlim", "-q", *args)  # fmt: skip
    assert_one_line(code, err, *words)
    assert files(tmp_path) == []


def test_a_huge_mix_is_the_mean_not_zero(model_dir, song, tmp_path, capsys):
    """trumpet=1e308,piano=1e308 overflowed the sum of weights and rendered the zero vector;
    it is the half-half mix."""

    def wav(*args: str) -> np.ndarray:
        out = tmp_path / "o.wav"
        code, _, err = run(capsys, "render", song, "-o", out, "-f", "--model", model_dir,
                           "--vocoder", "griffinlim", "-q", *args)  # fmt: skip
        assert code == 0, err
        return sf.read(str(out), dtype="float32")[0]

    np.testing.assert_array_equal(
        wav("--mix", "trumpet=1e308,piano=1e308"), wav("--mix", "trumpet=1,piano=1")
    )


@pytest.mark.parametrize(("bias", "words"), [(float("nan"), "NaN"), (20.0, "full-scale")])
def test_broken_audio_is_never_written(song, tmp_path, capsys, bias, words):
    """A model gone wrong (NaN, or a mel 20 nepers above full scale) once wrote a file with
    exit 0 and "peak -inf dBFS"; now nothing is written and the message says why."""
    models = broken_model_dir(tmp_path / "broken", bias)
    work = tmp_path / "work"
    work.mkdir()
    out = work / "o.wav"
    code, stdout, err = run(capsys, "render", song, "-o", out, "--model", models,
                            "--vocoder", "griffinlim", "-q", "--normalize")  # fmt: skip
    assert_one_line(code, err, words)
    assert "dBFS" not in stdout and os.listdir(work) == []


def test_vocode_refuses_absurd_mels_bad_suffixes_and_lying_headers(tmp_path, capsys):
    mel = tmp_path / "m.npy"
    np.save(mel, np.full((80, 200), 100.0, np.float32))  # once full-scale DC, exit 0
    code, _, err = run(capsys, "vocode", mel, "--vocoder", "griffinlim")
    assert_one_line(code, err, "far above full scale")
    np.save(mel, np.full((80, 200), -5.0, np.float32))
    code, _, err = run(capsys, "vocode", mel, "--vocoder", "griffinlim", "-o", tmp_path / "x.mp3")
    assert_one_line(code, err, ".wav or .flac")
    code, _, err = run(capsys, "vocode", mel, "--vocoder", "griffinlim", "--seed", str(2**70))
    assert_one_line(code, err, "--seed")
    # a header claiming shape (80, 10**12): refused from the header, nothing allocated
    header = mel.read_bytes()
    huge = tmp_path / "huge.npy"
    huge.write_bytes(header.replace(b"(80, 200)", b"(80, 1000000000000)", 1))
    code, _, err = run(capsys, "vocode", huge, "--vocoder", "griffinlim")
    assert_one_line(code, err, "80, 1000000000000", "more than the file holds")
    code, _, err = run(capsys, "vocode", tmp_path, "--vocoder", "griffinlim")
    assert_one_line(code, err, "is a folder")
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    code, _, err = run(capsys, "vocode", empty, "--vocoder", "griffinlim")
    assert_one_line(code, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.npy", "huge.npy", "m.npy"]
    out = tmp_path / "x.flac"  # the right format under a FLAC name
    code, _, err = run(capsys, "vocode", mel, "--vocoder", "griffinlim", "-o", out)
    assert code == 0, err
    assert sf.info(str(out)).format == "FLAC"


def test_mel_refuses_nan_embeddings_and_unicode_digits(model_dir, song, tmp_path, capsys):
    out = tmp_path / "o.npy"
    model = model_dir / "acoustic"
    for args, word in [
        (["--embedding=nan,1"], "finite numbers"),
        (["--embedding=1e308,1"], "outside the timbre space"),
        (["-i", "²"], "unknown instrument '²'"),
    ]:
        code, _, err = run(capsys, "mel", song, "-o", out, "--model", model, *args)
        assert_one_line(code, err, word)
    code, _, err = run(capsys, "mel", tmp_path, "-o", out, "-i", "piano", "--model", model)
    assert_one_line(code, err, "is a folder")
    assert not out.exists()


def test_render_says_a_folder_is_a_folder(model_dir, tmp_path, capsys):
    code, _, err = run(capsys, "render", tmp_path, "-o", tmp_path / "o.wav", "--model", model_dir)
    assert_one_line(code, err, "is a folder")


def test_timbre_learn_never_saves_nan_and_checks_the_library_first(
    model_dir, song, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("MEL2MEL_HOME", str(tmp_path / "home"))
    wav = tmp_path / "x.wav"
    rng = np.random.default_rng(0)
    sf.write(str(wav), (0.1 * rng.standard_normal(2 * 16000)).astype(np.float32), 16000,
             subtype="FLOAT")  # fmt: skip
    base = ["timbre", "learn", "--audio", wav, "--midi", song, "--model", model_dir,
            "--steps", "1", "-q", "--name", "horn"]  # fmt: skip
    for args, word in [
        (["--init=1e308,1e308"], "outside the timbre space"),
        (["--init", "²"], "unknown instrument '²'"),
        (["--start", "1e308"], "bad time"),
        (["--threads", "100000"], "--threads"),
        (["--library", "/proc/mel2mel-x"], "cannot write to the timbre library"),
    ]:
        started = time.monotonic()
        code, _, err = run(capsys, *base, *args)
        assert_one_line(code, err, word)
        assert "fitting" not in err  # refused before the fit
        assert time.monotonic() - started < 30
    nan = tmp_path / "nan.wav"
    sf.write(str(nan), np.full(2 * 16000, np.nan, np.float32), 16000, subtype="FLOAT")
    code, _, err = run(capsys, *base[:2], "--audio", nan, *base[4:])
    assert_one_line(code, err, "NaN")
    assert not (tmp_path / "home" / "timbres" / "horn.json").exists()


def test_timbre_list_survives_broken_entries(model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEL2MEL_HOME", str(tmp_path / "home"))  # where render looks
    library = TimbreLibrary()
    fp = model_fingerprint(piano_trumpet_model())
    library.save(UserTimbre("Good", (0.1, 0.2), fp))
    nan = {"format": 1, "name": "Nan", "vector": [float("nan"), 1.0], "model": fp}
    (library.root / "nan.json").write_text(json.dumps(nan))  # NaN, as json.dumps writes it
    (library.root / "list.json").write_text("[1, 2]")
    (library.root / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (library.root / "far.json").write_text(json.dumps(
        {"format": 1, "name": "Far", "vector": [1e308, 1e308], "model": fp}))  # fmt: skip
    with pytest.warns(UserWarning, match="unreadable user timbre") as caught:
        code, out, err = run(
            capsys, "timbre", "list", "--library", library.root, "--model", model_dir
        )
    assert code == 0, err
    assert "Good" in out and "Nan" not in out and "Traceback" not in err
    assert len(caught) == 3  # nan, list, deep; "Far" is listed (render refuses it)
    song = tmp_path / "s.mid"
    from conftest import write_midi

    write_midi(song, NOTES)
    code, _, err = run(capsys, "render", song, "-o", tmp_path / "o.wav", "--model", model_dir,
                       "-i", "far", "--vocoder", "griffinlim")  # fmt: skip
    assert_one_line(code, err, "outside the timbre space")


def test_an_empty_exception_message_is_not_shown_as_empty(tmp_path, capsys):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01")  # cut inside the header
    code, _, err = run(capsys, "render", bad, "-o", tmp_path / "o.wav")
    assert_one_line(code, err)
    assert ": )" not in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_terminated_render_leaves_nothing(model_dir, tmp_path, midi_writer, sig):
    """SIGTERM/SIGHUP during a render once left two temporary files and an empty .wav."""
    song = midi_writer(tmp_path / "long.mid", [(60 + i % 12, 0.5 * i, 0.5, 90) for i in range(600)])
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mel2mel", "render", str(song), "-o", str(work / "o.wav"),
         "--model", str(model_dir), "--vocoder", "griffinlim", "-q"],
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not any(p.name.endswith(".float.wav") and p.stat().st_size > 0 for p in work.iterdir()):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the render never started writing"
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert f"terminated by {signal.Signals(sig).name}" in err and "Traceback" not in err
    assert os.listdir(work) == []
