"""The held partials' ceiling (mel2mel.vocoders.held), and the fast vocoder that uses it."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from mel2mel import constants as C
from mel2mel.midi import Note, piano_roll
from mel2mel.vocoders.fast import FastVocoder, FastVocoderConfig
from mel2mel.vocoders.held import HeldPartials, around_onsets, harmonic_bins

pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.py

A4, E5 = 69 - C.MIDI_MIN, 76 - C.MIDI_MIN  # key indices in the roll
A4_BIN, E5_BIN = 28, 42  # 440 Hz and 659.3 Hz in 15.625 Hz bins (28.2, 42.2)
STRIKE = 100  # E5's onset frame


def _roll(frames: int, *spans: tuple[int, int, int]) -> torch.Tensor:
    """Tensor[1 x ROLL_CHANNELS x frames] of ``(key, on, off)`` notes (frames), velocity 64."""
    notes = [Note(key + C.MIDI_MIN, on / C.FRAME_RATE, off / C.FRAME_RATE, 64, 0, 0)
             for key, on, off in spans]  # fmt: skip
    return torch.from_numpy(piano_roll(notes, frames))[None]


def _neighbour_struck(frames: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """A4 held from frame 0, E5 struck at STRIKE; every bin decays, and rises fourfold when E5
    is struck (the band the model raises around a new note): ``(magnitude [1 x T x F], roll)``."""
    t = torch.arange(frames, dtype=torch.float32)[:, None]
    magnitude = torch.exp(-0.01 * t).expand(frames, C.N_FFT // 2 + 1).clone()
    magnitude[STRIKE:] *= 4.0
    return magnitude[None], _roll(frames, (A4, 0, frames), (E5, STRIKE, frames))


def test_around_onsets() -> None:
    onsets = torch.zeros(1, 2, 20, dtype=torch.bool)
    onsets[0, 0, 10] = onsets[0, 1, 0] = True
    near = around_onsets(onsets, 2, 3)
    assert torch.nonzero(near[0, 0]).flatten().tolist() == list(range(8, 14))
    assert torch.nonzero(near[0, 1]).flatten().tolist() == list(range(0, 4))


def test_harmonic_bins() -> None:
    low = harmonic_bins(C.N_FFT, 1.5, 3)
    assert low[A4, 27:30].tolist() == [1, 1, 1] and low[A4, 26] == 0 and low[A4, 30] == 0
    assert low[A4, 56] == 1 and low[A4, 84] == 1  # 880 and 1320 Hz
    assert low[A4, 112] == 0  # the fourth harmonic (1760 Hz, bin 112.6) is not capped
    assert harmonic_bins(C.N_FFT, 1.5, None)[A4, 112] == 1
    assert harmonic_bins(C.N_FFT, 1.5, None)[-1].sum() == 3  # C8: one partial below Nyquist


def test_a_held_note_does_not_rise_when_a_neighbour_is_struck() -> None:
    held = HeldPartials(C.N_FFT, release_db=0.5)
    magnitude, roll = _neighbour_struck()
    out, ceiling = held(magnitude, roll)
    before, after = held.transient
    last_steady = STRIKE - before - 1
    struck_until = STRIKE + held.own[1]
    # A4's fundamental keeps the level it had before the strike; the strike itself passes.
    steady = magnitude[0, last_steady, A4_BIN].item()
    flat = out[0, STRIKE + after + 1 : struck_until + 1, A4_BIN].tolist()
    assert flat == pytest.approx([steady] * len(flat))
    window = slice(STRIKE - before, STRIKE + after + 1)
    assert torch.equal(out[0, window], magnitude[0, window])
    assert ceiling[0, struck_until, A4_BIN].item() == pytest.approx(math.log(steady))
    # Then it comes back at release_db per frame, up to where the magnitude has it.
    t = struck_until + 10
    assert out[0, t, A4_BIN].item() == pytest.approx(steady * 10 ** (10 * 0.5 / 20), rel=1e-5)
    assert torch.equal(out[0, -5:, A4_BIN], magnitude[0, -5:, A4_BIN])
    # E5 rises: its own bins, a bin far from both notes' partials and A4's fourth harmonic.
    for b in (E5_BIN, 35, 112):
        assert torch.equal(out[0, :, b], magnitude[0, :, b]), b
    # Before the strike nothing rises, so nothing is capped.
    assert torch.equal(out[0, :STRIKE], magnitude[0, :STRIKE])
    # Without a release, the ceiling only holds while notes are struck.
    out, _ = HeldPartials(C.N_FFT, release_db=None)(magnitude, roll)
    assert out[0, struck_until, A4_BIN].item() == pytest.approx(steady)
    assert torch.equal(out[0, struck_until + 1 :], magnitude[0, struck_until + 1 :])


@pytest.mark.parametrize("rise_db, release_db", [(0.0, 0.25), (0.5, 0.0), (0.0, None)])
def test_chunks_carry_the_ceiling(rise_db: float, release_db: float | None) -> None:
    g = torch.Generator().manual_seed(0)
    frames = 300
    keys = torch.randint(20, 70, (12,), generator=g).tolist()
    starts = torch.randint(0, frames - 40, (12,), generator=g).tolist()
    roll = _roll(frames, *[(k, s, s + 60) for k, s in zip(keys, starts, strict=True)])
    magnitude = torch.rand(1, frames, C.N_FFT // 2 + 1, generator=g) + 0.1
    held = HeldPartials(C.N_FFT, rise_db=rise_db, release_db=release_db)
    whole, ceiling = held(magnitude, roll)
    assert (whole < magnitude).any()
    parts, state = [], None
    for a, b in [(0, 1), (1, 90), (90, 91), (91, 250), (250, 300)]:
        # as a streamed caller: the roll from some frames before to some after
        lo, hi = max(0, a - 70), min(frames, b + 10)
        part, chunk_ceiling = held(magnitude[:, a:b], roll[..., lo:hi], a - lo, state)
        parts.append(part)
        state = chunk_ceiling[:, -1]
    assert torch.allclose(torch.cat(parts, 1), whole)
    assert torch.allclose(state, ceiling[:, -1])


def test_the_vocoder_keeps_the_held_note_down() -> None:
    """Through the debug vocoder with the analysis frame size: the same spectrum as without the
    ceiling, except that the held note's partial no longer rises."""
    config = dataclasses.replace(FastVocoderConfig.debug(), n_fft=C.N_FFT, use_roll=False)
    torch.manual_seed(0)
    plain = FastVocoder(config).eval()
    held = plain.with_held_partials(True)
    assert held.config == dataclasses.replace(config, held_partials=True) and held.uses_roll
    _, roll = _neighbour_struck()
    mel = torch.log(torch.from_numpy(np.full((1, C.N_MELS, 200), 0.01, np.float32)))
    mel[..., STRIKE:] += math.log(4.0)
    with torch.no_grad():
        ours, theirs = held.spectrum(mel, roll).abs(), plain.spectrum(mel, roll).abs()
    late = slice(STRIKE + 20, STRIKE + 30)  # after the strike, while E5 is still new
    assert (ours[0, late, A4_BIN] < 0.5 * theirs[0, late, A4_BIN]).all()
    assert torch.allclose(ours[0, -10:, A4_BIN], theirs[0, -10:, A4_BIN])  # then back
    assert torch.allclose(ours[0, late, 35], theirs[0, late, 35])
    # Without the notes it plays as the plain vocoder.
    assert torch.equal(held.vocode(mel), plain.vocode(mel))


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="harmonics"):
        HeldPartials(C.N_FFT, harmonics=0)
    with pytest.raises(ValueError, match="release_db"):
        HeldPartials(C.N_FFT, release_db=-1.0)
    with pytest.raises(ValueError, match="frame windows"):
        HeldPartials(C.N_FFT, own=(-1, 4))
