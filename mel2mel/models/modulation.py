"""Note modulation: the tremolo, vibrato and beating of a held note, locked to its onset.

FluidSynth plays a held vibraphone note with a 4.4 Hz tremolo, a string ensemble or a synth
lead with a vibrato, an organ with the beating of its ranks, and it plays them the same way
every time: the frame-to-frame changes of two strikes of one held note correlate 0.72-0.84 for
eight of the ten instruments (``benchmarks/eval_note_modulation.py``; docs/MODELS.md, "Note
modulation"). So they are a function of the instrument, the notes and the time since each
note's onset, which a deterministic network can predict. Mel2Mel's LSTM draws a steady tone
instead (held bins change by 0.01-0.08 dB per frame against FluidSynth's 0.11-1.04).

What this module can draw is one amplitude and one pitch signal per key: it learns a
vibraphone's tremolo; the many-voiced beating of an organ or an ensemble, each bin on its own,
is beyond it (docs/MODELS.md, "Stop 28").

This module adds, for every sounding key ``k`` with its onset ``tau_k`` frames ago, two
signals built from a fixed bank of sinusoids of the time since the onset, their coefficients
read frame by frame from the modulated LSTM states (so the instrument and the music set them)::

    a_k(t) = sum_j A_j(t) sin(w_j tau_k) + A'_j(t) cos(w_j tau_k)     amplitude (nepers)
    p_k(t) = sum_j P_j(t) sin(w_j tau_k) + P'_j(t) cos(w_j tau_k)     pitch (semitones)

and spreads them over the mel bins where each key's harmonic comb ``c_k`` lies (the combs of
:mod:`mel2mel.models.harmonic`), weighted by velocity: a tremolo moves the key's bins by
``a_k``, a vibrato by ``p_k`` times the slope of the key's log comb along pitch ``d_k``::

    M[bin, t] = sum_k v_k c_k[bin] (a_k + p_k d_k[bin]) / sum_k v_k c_k[bin]

The coefficient map is zero at initialization, so a model extended with this module first
plays as before. A key held from before the roll's first frame has no known onset and gets no
modulation. The fast path (:mod:`mel2mel.models.acoustic_fast`) folds the coefficient map beside
the output layer and reads the clock of the whole roll, in windows too.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from mel2mel import constants as C
from mel2mel.models.harmonic import COMB_FLOOR, tone_combs

#: The bank's frequencies (Hz): 2 to 12 Hz every 0.1 Hz, fine enough that a held note's
#: modulation (a few seconds) stays in phase with one of them or a pair.
FREQUENCIES: tuple[float, ...] = tuple(round(2.0 + 0.1 * j, 1) for j in range(101))
SLOPE_SEMITONES = 0.1  # the comb's slope along pitch, from tones this far above and below
SLOPE_LIMIT = 3.0  # nepers per semitone: steeper skirts are filled by reverb and neighbours
SLOPE_FLOOR = 1e-2  # of a key's peak (-40 dB): no slope on the comb's far skirts
SCALE = 0.1  # the coefficient map reads hundreds of states: a learning-rate divisor


@functools.lru_cache(maxsize=1)
def comb_slopes() -> tuple[torch.Tensor, torch.Tensor]:
    """``(combs, slopes)``, each ``float32[88 x N_MELS]``: every key's harmonic comb (linear
    mel magnitude, peak 1) and the derivative of its log along pitch (nepers per semitone),
    limited to +-:data:`SLOPE_LIMIT` and zero where the comb is below :data:`SLOPE_FLOOR`."""
    keys = torch.arange(C.N_KEYS, dtype=torch.float64)
    combs = tone_combs(keys)
    up, down = tone_combs(keys + SLOPE_SEMITONES), tone_combs(keys - SLOPE_SEMITONES)
    scale = combs.amax(1, keepdim=True)
    log = [torch.log((x / scale).clamp_min(COMB_FLOOR)) for x in (up, down)]
    slopes = (log[0] - log[1]) / (2 * SLOPE_SEMITONES)
    slopes = torch.where(combs / scale > SLOPE_FLOOR, slopes.clamp(-SLOPE_LIMIT, SLOPE_LIMIT), 0.0)
    return (combs / scale).float(), slopes.float()


def onset_clock(roll: torch.Tensor) -> torch.Tensor:
    """Frames since each key's last onset: Tensor[B x 176 x T] roll -> int64 Tensor[B x 88 x
    T], -1 where the key has had no onset in the roll yet."""
    onsets = roll[:, C.N_KEYS : 2 * C.N_KEYS] > 0
    t = torch.arange(roll.shape[-1], device=roll.device)
    last = torch.where(onsets, t, -1).cummax(dim=-1).values
    return torch.where(last >= 0, t - last, -1)


class NoteModulation(nn.Module):
    """Onset-locked amplitude and pitch modulation of the sounding keys, as a log-mel term.

    Parameters
    ----------
    features:
        Channels of the states that set the coefficients (``2 * lstm_hidden``).
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        n = len(FREQUENCIES)
        self.coefficients = nn.Conv1d(features, 4 * n, 1)  # amplitude sin, cos; pitch sin, cos
        nn.init.zeros_(self.coefficients.weight)
        nn.init.zeros_(self.coefficients.bias)
        combs, slopes = comb_slopes()
        self.register_buffer("combs", combs, persistent=False)  # 88 x N_MELS
        self.register_buffer("sloped", combs * slopes, persistent=False)  # 88 x N_MELS
        omega = torch.tensor(FREQUENCIES, dtype=torch.float64) * 2 * math.pi / C.FRAME_RATE
        self.register_buffer("omega", omega.float(), persistent=False)  # radians per frame

    def forward(self, roll: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """The modulation to add to a log-mel.

        Parameters
        ----------
        roll: Tensor[B x 176 x T]
            The raw roll (velocity / 127).
        states: Tensor[B x F x T]
            The modulated LSTM states.

        Returns
        -------
        Tensor[B x N_MELS x T]
            Zero in frames without a sounding key whose onset is in the roll.
        """
        return self.move(roll, self.coefficients(states))

    def move(self, roll: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` from the coefficient map's output Tensor[B x 4J x T] (unscaled: the
        fast path folds the map beside the output layer)."""
        sounding = roll[:, : C.N_KEYS]
        clock = onset_clock(roll)
        b, k, t = (clock >= 0).logical_and(sounding > 0).nonzero(as_tuple=True)
        dtype = coefficients.dtype
        angle = clock[b, k, t].to(dtype)[:, None] * self.omega.to(dtype)  # N x J
        basis = torch.cat([angle.sin(), angle.cos()], dim=1)  # N x 2J
        coef = SCALE * coefficients  # B x 4J x T
        coef = coef[b, :, t].view(-1, 2, basis.shape[1])  # N x 2 x 2J
        signals = (coef * basis[:, None]).sum(-1)  # N x 2: amplitude, pitch
        weight = sounding[b, k, t].to(dtype)
        shape = sounding.shape
        amplitude = torch.zeros(shape, dtype=dtype, device=roll.device)
        pitch = torch.zeros(shape, dtype=dtype, device=roll.device)
        amplitude = amplitude.index_put((b, k, t), weight * signals[:, 0])
        pitch = pitch.index_put((b, k, t), weight * signals[:, 1])
        combs, sloped = self.combs.to(dtype), self.sloped.to(dtype)
        moved = torch.matmul(combs.t(), amplitude) + torch.matmul(sloped.t(), pitch)
        total = torch.matmul(combs.t(), sounding.to(dtype))  # B x N_MELS x T
        return torch.where(total > COMB_FLOOR, moved / total.clamp_min(COMB_FLOOR), 0.0)
