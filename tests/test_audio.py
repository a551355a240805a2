"""The log-mel module against librosa, and audio I/O."""

from __future__ import annotations

import subprocess
import sys

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from mel2mel import constants as C
from mel2mel.audio import LogMel, load_audio, log_mel, mel_filterbank, mel_frequencies, write_audio
from mel2mel.errors import UserError


def _signal(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * C.SAMPLE_RATE)) / C.SAMPLE_RATE
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1234.5 * t)
    return (tone + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def test_log_mel_matches_librosa() -> None:
    y = _signal()
    ref = librosa.feature.melspectrogram(
        y=y,
        sr=C.SAMPLE_RATE,
        n_fft=C.N_FFT,
        hop_length=C.HOP_LENGTH,
        win_length=C.WIN_LENGTH,
        n_mels=C.N_MELS,
        fmin=C.F_MIN,
        fmax=C.F_MAX,
        power=1.0,
        center=True,
        pad_mode="constant",
    )
    ours = log_mel(y)
    assert ours.shape == (C.N_MELS, C.num_frames(y.size)) == ref.shape
    np.testing.assert_allclose(ours, np.log(np.maximum(ref, C.LOG_FLOOR)), atol=2e-4)


def test_filterbank_is_librosas_bit_for_bit() -> None:
    ref = librosa.filters.mel(
        sr=C.SAMPLE_RATE, n_fft=C.N_FFT, n_mels=C.N_MELS, fmin=C.F_MIN, fmax=C.F_MAX
    )
    ours = mel_filterbank()
    assert ours.dtype == np.float32 and ours.shape == ref.shape == (C.N_MELS, C.N_FFT // 2 + 1)
    np.testing.assert_array_equal(ours, ref)
    ours[0, 0] = 1.0  # a copy: the cached one stays right
    np.testing.assert_array_equal(mel_filterbank(), ref)
    edges = librosa.mel_frequencies(n_mels=C.N_MELS + 2, fmin=C.F_MIN, fmax=C.F_MAX)
    np.testing.assert_array_equal(mel_frequencies(), edges)
    wide = librosa.mel_frequencies(n_mels=7, fmin=20.0, fmax=11025.0)
    np.testing.assert_allclose(mel_frequencies(7, 20.0, 11025.0), wide, rtol=1e-12)


def test_log_mel_does_not_import_librosa() -> None:
    """librosa's filters import scipy.signal and numba (about a CPU-second)."""
    code = (
        "import sys; from mel2mel.audio import cpu_log_mel; cpu_log_mel(); "
        "print(sorted(m for m in ('librosa', 'numba', 'scipy.signal') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_log_mel_batched_equals_single_and_floor() -> None:
    batch = torch.from_numpy(np.stack([_signal(0.5, 1), np.zeros(8000, dtype=np.float32)]))
    out = LogMel()(batch)
    assert out.shape == (2, C.N_MELS, 8000 // C.HOP_LENGTH + 1)
    torch.testing.assert_close(out[0], LogMel()(batch[0]))
    torch.testing.assert_close(out[1], torch.full_like(out[1], C.LOG_SILENCE))


def test_write_then_load_roundtrip(tmp_path) -> None:
    y = _signal(0.25)
    write_audio(tmp_path / "a.wav", y)
    back = load_audio(tmp_path / "a.wav")
    np.testing.assert_allclose(back, y, atol=1 / 32767 + 1e-6)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_load_audio_resamples_and_downmixes(tmp_path) -> None:
    t = np.arange(44100) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1) * 0.5
    sf.write(tmp_path / "s.wav", stereo, 44100)
    y = load_audio(tmp_path / "s.wav")
    assert abs(y.size - C.SAMPLE_RATE) <= 1
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) * C.SAMPLE_RATE / y.size - 440) < 2


def test_load_audio_rejects_non_audio(tmp_path) -> None:
    bad = tmp_path / "x.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(UserError, match="cannot read audio"):
        load_audio(bad)
