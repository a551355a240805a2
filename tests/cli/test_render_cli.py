"""``mel2mel render`` and ``mel2mel instruments``: output files, overwriting, levels, errors."""

from __future__ import annotations

import itertools
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import piano_trumpet_model

from mel2mel import constants as C
from mel2mel.audio import log_mel
from mel2mel.cli import main
from mel2mel.examples import chorale, write_example
from mel2mel.midi import read_notes
from mel2mel.models import save_pretrained
from mel2mel.synthesis.output import TwoPassWriter, output_gain

pytestmark = pytest.mark.usefixtures("single_thread")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "example.mid"
NOTES = [(60, 0.0, 0.5, 90), (64, 0.25, 0.5, 80), (67, 0.5, 0.75, 100), (48, 0.0, 1.25, 70)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A debug model whose two instruments sound apart (a fresh Mel2Mel's FiLM is the
    identity, so every timbre option would give the same audio)."""
    folder = tmp_path_factory.mktemp("model")
    save_pretrained(piano_trumpet_model(), folder)
    return folder


@pytest.fixture
def song(tmp_path, midi_writer) -> Path:
    return midi_writer(tmp_path / "song.mid", NOTES)


def render(*args: object, model_dir: Path) -> int:
    return main(["render", *map(str, args), "--model", str(model_dir), "--vocoder", "griffinlim"])


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("mel2mel: error: ") and err.count("\n") == 1, err
    return err


def test_render_writes_a_wav(model_dir, song, tmp_path, capsys):
    out = tmp_path / "song.wav"
    assert render(song, "-o", out, "-i", "trumpet", "--quiet", model_dir=model_dir) == 0
    info = sf.info(str(out))
    frames = read_notes(song).num_frames() + round(C.FRAME_RATE)  # + the 1 s tail
    assert (info.samplerate, info.channels, info.subtype) == (16_000, 1, "PCM_16")
    assert info.frames == C.HOP_LENGTH * frames
    assert "wrote" in capsys.readouterr().out
    assert leftovers(tmp_path) == []
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)  # not mkstemp's owner-only mode


def test_flac_normalize_range_and_timbres(model_dir, song, tmp_path):
    out = tmp_path / "song.flac"
    args = ("--mix", "piano=1,trumpet=3", "--track", "0=0.5,-0.5", "--normalize")
    assert render(song, "-o", out, *args, "--start", "0.256", "--duration", "0.512",
                  model_dir=model_dir) == 0  # fmt: skip
    audio, _ = sf.read(str(out), dtype="float32")
    assert sf.info(str(out)).format == "FLAC" and len(audio) == 64 * C.HOP_LENGTH
    assert np.abs(audio).max() == pytest.approx(10 ** (-1 / 20), abs=1e-3)  # -1 dBFS


def test_timbre_options_choose_the_sound(model_dir, song, tmp_path):
    """Each timbre option gives its own audio; options that mean the same give the same."""

    def wav(*args: str) -> np.ndarray:
        out = tmp_path / "out.wav"
        assert render(song, "-o", out, "-f", "--quiet", *args, model_dir=model_dir) == 0
        return sf.read(str(out), dtype="float32")[0]

    piano = wav("-i", "piano")
    np.testing.assert_array_equal(wav("-i", "piano"), piano)  # deterministic
    np.testing.assert_array_equal(wav("--mix", "piano=1,trumpet=0"), piano)
    renders = {
        "piano": piano,
        "trumpet": wav("-i", "trumpet"),
        "timbre": wav("--timbre=-0.3,1.1"),
        "mix": wav("--mix", "piano=1,trumpet=3"),
        "track": wav("--track", "0=0.5,-0.5"),
        "morph": wav("--morph", "piano@0s,trumpet@1s"),
    }
    np.testing.assert_array_equal(wav("--track", "0=trumpet"), renders["trumpet"])
    for (a, x), (b, y) in itertools.combinations(renders.items(), 2):
        assert np.abs(x - y).max() > 0.1 * np.abs(x).max(), f"{a} and {b} sound the same"
    # the morph starts as the piano and, once it has reached the trumpet, is the trumpet
    mels = {k: log_mel(renders[k]) for k in ("piano", "trumpet", "morph")}
    apart = np.abs(mels["piano"] - mels["trumpet"]).mean()
    early, late = slice(0, 40), slice(round(1.25 * C.FRAME_RATE), None)  # 0-0.32 s, 1.25 s-
    to_piano, to_trumpet = (np.abs(mels["morph"][:, early] - mels[k][:, early]).mean()
                            for k in ("piano", "trumpet"))  # fmt: skip
    assert to_piano < 0.5 * to_trumpet
    assert np.abs(mels["morph"][:, late] - mels["trumpet"][:, late]).mean() < 0.05 * apart


def test_no_overwrite_without_force(model_dir, song, tmp_path, capsys):
    out = tmp_path / "song.wav"
    out.write_bytes(b"keep me")
    assert render(song, "-o", out, model_dir=model_dir) == 2
    assert "-f" in one_line_error(capsys) and out.read_bytes() == b"keep me"
    assert render(song, "-o", out, "-f", model_dir=model_dir) == 0
    assert sf.info(str(out)).frames > 0 and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("setup", "extra", "message"),
    [
        ("corrupt", (), "not a readable MIDI file"),
        ("drums", (), "only drum notes"),
        ("text", (), "not a readable MIDI file"),
        ("song", ("-i", "xylo"), "unknown instrument 'xylo'; valid: Grand Piano (0), Trumpet (56)"),
        ("song", ("--mix", "trumpet:0.5"), "bad mix"),
        ("song", ("--mix", "trumpet=-1"), "weights must be >= 0"),
        ("song", ("--timbre", "1,2,3"), "expected 2 finite numbers"),
        ("song", ("--morph", "trumpet@2s,piano@1s"), "must not decrease"),
        ("song", ("--track", "one=trumpet"), "bad --track"),
        ("song", ("--track", "7=trumpet"), "channel 7 has no notes; channels with notes: 0"),
        ("song", ("--start", "99"), "past the end"),
        ("song", ("--start", "soon"), "bad time"),
    ],
)
def test_errors_are_one_line_and_leave_no_file(
    model_dir, tmp_path, midi_writer, capsys, setup, extra, message
):
    src = tmp_path / "in.mid"
    if setup == "corrupt":
        src.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01garbage")
    elif setup == "text":
        src.write_text("just some text, not MIDI\n")
    elif setup == "drums":
        midi_writer(src, [(38, 0.0, 0.2, 100), (42, 0.5, 0.2, 90)], channel=9)
    else:
        midi_writer(src, NOTES)
    out = tmp_path / "out.wav"
    assert render(src, "-o", out, *extra, model_dir=model_dir) == 2
    assert message in one_line_error(capsys)
    assert not out.exists() and leftovers(tmp_path) == []


def test_output_path_errors(model_dir, song, tmp_path, capsys):
    assert render(song, "-o", tmp_path / "song.mp3", model_dir=model_dir) == 2
    assert ".wav or .flac" in one_line_error(capsys)
    assert render(song, "-o", tmp_path / "missing" / "a.wav", model_dir=model_dir) == 2
    assert "does not exist" in one_line_error(capsys)
    assert render(tmp_path / "nope.mid", "-o", tmp_path / "a.wav", model_dir=model_dir) == 2
    assert "no such file" in one_line_error(capsys)
    assert main(["render", str(song), "-o", str(tmp_path / "a.wav"),
                 "--model", str(tmp_path / "nomodel")]) == 2  # fmt: skip
    assert "no exported acoustic model" in one_line_error(capsys)


def test_unwritable_output_folder(model_dir, song, tmp_path, capsys):
    if os.geteuid() == 0:  # root writes anywhere, but not into /proc
        out = Path("/proc/mel2mel-test.wav")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        out = locked / "a.wav"
    try:
        assert render(song, "-o", out, model_dir=model_dir) == 2
        assert "cannot write to" in one_line_error(capsys)
        assert not out.exists()
    finally:
        if out.parent != Path("/proc"):
            out.parent.chmod(0o700)


def test_levels_never_clip(tmp_path):
    with pytest.warns(UserWarning, match="limiting by 6.0 dB"):
        gain = output_gain(2.0, normalize=False)
    assert gain == pytest.approx(0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert output_gain(0.25, normalize=False) == 1.0
        assert output_gain(0.25, normalize=True) == pytest.approx(4 * 10 ** (-1 / 20))
    out = tmp_path / "loud.wav"
    # a peak of 2 in a decaying tone: loud, not full-scale noise (see validate.AudioCheck)
    decay = np.exp(-np.linspace(0, 5, 16_000, dtype=np.float32))
    loud = [np.sin(np.linspace(0, 300, 16_000, dtype=np.float32)) * 2.0 * decay for _ in range(3)]
    with TwoPassWriter(out) as w:
        w.write(loud)
        peak = float(np.abs(np.concatenate(loud)).max())
        assert peak > 1.9 and w.peak == peak and w.samples == 48_000
        w.commit(1.0 / w.peak)
    audio, _ = sf.read(str(out), dtype="float32")
    assert len(audio) == 48_000 and np.abs(audio).max() <= 1.0
    np.testing.assert_allclose(audio, np.concatenate(loud) / peak, atol=2 / 32768)
    assert leftovers(tmp_path) == []


def test_instruments_table(model_dir, capsys):
    assert main(["instruments", "--model", str(model_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["#", "name", "program", "embedding", "aliases"]
    assert "Grand Piano" in lines[1] and "piano, grand" in lines[1] and " 0 " in lines[1]
    assert "Trumpet" in lines[2] and "56" in lines[2] and "trumpet" in lines[2]
    assert "(" in lines[1] and "," in lines[1]  # coordinates


def test_example_midi_is_up_to_date(tmp_path):
    fresh = write_example(tmp_path / "example.mid")
    assert EXAMPLE.read_bytes() == fresh.read_bytes(), "run python examples/make_example.py"
    seq = read_notes(EXAMPLE)
    assert 20.0 <= seq.duration <= 30.0 and not seq.dropped_drums
    assert sorted({n.track for n in seq.notes}) == [1, 2, 3, 4]
    assert all(C.MIDI_MIN <= n.pitch <= C.MIDI_MAX for n in seq.notes)
    assert len({n.velocity for n in seq.notes}) > 10
    assert len(chorale(repeats=2).tracks) == 5
