"""The partials' phase advance from the piano roll (mel2mel.vocoders.partials), and the fast
vocoder that uses it."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from mel2mel import constants as C
from mel2mel.audio import log_mel
from mel2mel.vocoders.fast import FastVocoder, FastVocoderConfig
from mel2mel.vocoders.partials import PartialPhase, key_frequencies

pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.py

A4, E4 = 69 - C.MIDI_MIN, 64 - C.MIDI_MIN  # key indices in the roll


def _roll(frames: int, *spans: tuple[int, int, int]) -> torch.Tensor:
    """Tensor[1 x ROLL_CHANNELS x frames] with ``(key, on, off)`` notes."""
    roll = torch.zeros(1, C.ROLL_CHANNELS, frames)
    for key, on, off in spans:
        roll[0, key, on:off] = 0.5
        roll[0, C.N_KEYS + key, on] = 0.5
    return roll


def _advance(hz: float) -> float:
    return (2 * math.pi * hz * C.HOP_LENGTH / C.SAMPLE_RATE) % (2 * math.pi)


def test_key_frequencies() -> None:
    f = key_frequencies()
    assert f.shape == (C.N_KEYS,)
    assert f[0].item() == pytest.approx(27.5) and f[A4].item() == pytest.approx(440.0)
    assert f[-1].item() == pytest.approx(4186.009, rel=1e-6)  # C8


def test_bins_near_a_partial_take_its_frequency() -> None:
    partials = PartialPhase(C.N_FFT)  # 15.625 Hz bins
    advance, near = partials(_roll(4, (A4, 0, 4)))
    assert advance.shape == near.shape == (1, 4, C.N_FFT // 2 + 1)
    for h in (1, 2, 5):
        centre = 440.0 * h / 15.625
        bins = [k for k in range(513) if abs(k - centre) <= 1.5]
        assert near[0, 2, bins].all()
        assert torch.allclose(advance[0, 2, bins], torch.tensor(_advance(440.0 * h)), atol=1e-5)
    assert not near[0, :, 14].any()  # 219 Hz: below the fundamental
    assert not near[0, :, 42].any()  # 656 Hz: between partials 1 and 2, 14 bins from both
    assert not advance[~near].any()
    # A second key: each bin takes the nearer partial (E5, 659.3 Hz, is 0.2 bins from bin 42).
    advance, near = partials(_roll(4, (A4, 0, 4), (A4 + 7, 0, 4)))
    assert near[0, 2, 42] and advance[0, 2, 42].item() == pytest.approx(_advance(659.255), abs=1e-4)
    assert advance[0, 2, 28].item() == pytest.approx(_advance(440.0), abs=1e-5)


def test_partials_are_held_after_the_note_ends() -> None:
    roll = _roll(40, (A4, 5, 10))
    near = PartialPhase(C.N_FFT, hold=8)(roll)[1][0, :, 28]  # [T]
    assert near.tolist() == [False] * 5 + [True] * (5 + 8) + [False] * 22
    near = PartialPhase(C.N_FFT, hold=0)(roll)[1][0, :, 28]
    assert near.tolist() == [False] * 5 + [True] * 5 + [False] * 30
    assert not PartialPhase(C.N_FFT)(torch.zeros(2, C.ROLL_CHANNELS, 7))[1].any()
    with pytest.raises(ValueError, match="width"):
        PartialPhase(C.N_FFT, width=0)


def _peak_hz(audio: np.ndarray, lo: float, hi: float) -> float:
    """The strongest frequency of ``audio`` between ``lo`` and ``hi`` Hz (0.1 Hz grid)."""
    n = 16 * len(audio)
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio)), n))
    freqs = np.fft.rfftfreq(n, 1 / C.SAMPLE_RATE)
    band = (freqs > lo) & (freqs < hi)
    return float(freqs[band][np.argmax(spectrum[band])])


def test_the_vocoder_plays_the_partial_of_the_note() -> None:
    """An untrained vocoder (its phase advances at the bin centres) plays E4 between two bins
    of its 512-point frames (329.6 Hz, bins at 312.5 and 343.75 Hz); given the note, at the
    note's frequency."""
    t = np.arange(C.SAMPLE_RATE) / C.SAMPLE_RATE
    mel = torch.from_numpy(log_mel((0.3 * np.sin(2 * np.pi * 329.63 * t)).astype(np.float32)))
    frames = mel.shape[1]
    roll = _roll(frames, (E4, 0, frames))[0]
    config = dataclasses.replace(FastVocoderConfig.debug(), use_roll=False)
    torch.manual_seed(0)
    plain = FastVocoder(config).eval()
    partial = plain.with_partials(True)
    assert partial.config == dataclasses.replace(config, partial_phase=True)
    assert not partial.training and partial.uses_roll and partial.roll_embed is None
    assert not plain.uses_roll
    middle = slice(C.SAMPLE_RATE // 4, 3 * C.SAMPLE_RATE // 4)
    heard = _peak_hz(partial.vocode(mel, roll).numpy()[middle], 250, 400)
    assert heard == pytest.approx(329.63, abs=0.5)
    assert abs(_peak_hz(plain.vocode(mel, roll).numpy()[middle], 250, 400) - 329.63) > 5
    # Without the notes it plays as the plain vocoder.
    assert torch.equal(partial.vocode(mel), plain.vocode(mel))
