"""Harmonic detail: the pitch-exact peaks and valleys of the sounding notes across mel bins.

The LSTM of :class:`~mel2mel.models.Mel2Mel` predicts a mel whose bin-to-bin detail is
shallow for low notes (below about C3 the harmonics of a note are 1-3 mel bins apart and the
model draws a smooth spectrum where FluidSynth's has a comb), and that detail is what a
transcriber hears notes in (docs/MODELS.md, "What the transcriber and the classifier miss").
Where the peaks fall follows from the pitch alone, so this module computes it and lets the
instrument choose how much of it to add (the trained models chose little: the combs' peaks
are where FluidSynth's are, not as high or as deep; docs/MODELS.md, "Stage 9")::

    sounding rows v (B x 88 x T, velocity / 127)
      -> S = combs^T v                  mel magnitude of each key's harmonic tone, summed
      -> log max(S / floor, 1)
      -> minus its 3-bin moving average (the detail: peaks > 0, valleys < 0; 0 in silence)
      -> times gain(embedding)          per mel bin, affine in the embedding (times
                                        GAIN_SCALE), zero at initialization
         [+ gate(states)]               per frame and bin, a 1x1 convolution of the modulated
                                        LSTM states (``detail_gate``), zero at initialization

and the result is added to the network's log-mel. The combs are fixed (computed, not
learned, not saved): a key's tone has harmonics ``k f0`` of amplitude ``1 / k`` up to the
Nyquist frequency, with random phases, so its expected power spectrum is the sum of the
Hann window's power response around every harmonic; its magnitude goes through the package's
mel filterbank as :class:`~mel2mel.audio.LogMel` would take it, scaled to a peak of 1 per key.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from mel2mel import constants as C
from mel2mel.audio import mel_filterbank

COMB_FLOOR = 1e-3  # of a key's peak (-60 dB): bins below it carry no detail
OVERSAMPLE = 64  # the window's response is tabulated every 1/64 of an FFT bin
REACH_BINS = 4  # ... out to 4 bins from each harmonic (Hann sidelobes there are < -50 dB)
# The gain is GAIN_SCALE times an affine map of the embedding: Adam moves a parameter by about
# the learning rate per step, so at the fine-tuning rate (3e-4) an unscaled gain could not have
# crossed the range worth exploring (0 to about 2) in one cycle. The scale is a learning-rate
# multiplier for these few parameters; stage 9 settled at 0.06-0.18 (docs/MODELS.md).
GAIN_SCALE = 10.0


def harmonic_combs(rolloff: float = 1.0) -> torch.Tensor:
    """``float32[88 x N_MELS]``: linear mel magnitude of a steady harmonic tone per piano key
    (A0 first), harmonics of amplitude ``k ** -rolloff``, each key's peak scaled to 1."""
    return _combs(rolloff).clone()


@functools.lru_cache(maxsize=2)
def _combs(rolloff: float) -> torch.Tensor:
    n = C.N_FFT
    window = torch.hann_window(C.WIN_LENGTH, dtype=torch.float64)
    response = torch.fft.rfft(window, n=n * OVERSAMPLE).abs().square()  # power per 1/64 bin
    reach = REACH_BINS * OVERSAMPLE
    bins = torch.arange(n // 2 + 1, dtype=torch.float64)
    fbank = torch.from_numpy(mel_filterbank()).double()  # N_MELS x (N_FFT / 2 + 1)
    combs = []
    for key in range(C.N_KEYS):
        f0 = 440.0 * 2.0 ** ((C.MIDI_MIN + key - 69) / 12.0)
        k = torch.arange(1, int(C.SAMPLE_RATE / 2 / f0) + 1, dtype=torch.float64)
        offset = ((bins[None] - k[:, None] * f0 * n / C.SAMPLE_RATE).abs() * OVERSAMPLE).round()
        near = offset < reach
        power = torch.where(near, response[offset.long().clamp(max=reach - 1)], 0.0)
        magnitude = (power * k[:, None].pow(-2.0 * rolloff)).sum(0).sqrt()
        mel = fbank @ magnitude
        combs.append(mel / mel.max())
    return torch.stack(combs).float()


def detail_operator(n_mels: int = C.N_MELS) -> torch.Tensor:
    """``float32[n_mels x n_mels]`` ``I - M``, with ``M`` the moving average over 3 bins (edges
    repeated): ``operator @ x`` is the detail of a log-spectrum ``x`` (bins first). Each row
    sums to 0, so a flat spectrum (silence) has none."""
    average = torch.zeros(n_mels, n_mels)
    for i in range(n_mels):
        for j in (i - 1, i, i + 1):
            average[i, min(max(j, 0), n_mels - 1)] += 1.0 / 3.0
    return torch.eye(n_mels) - average


class HarmonicDetail(nn.Module):
    """The detail of the sounding notes' harmonic combs, scaled per bin by the instrument.

    Parameters
    ----------
    embedding_dim:
        Size E of the instrument embedding that sets the gain.
    roll_channels:
        Rows of the roll it reads (the first 88 are the sounding keys; the others, the onset
        block, carry no comb).
    gate_features:
        Channels of the states that move the gain frame by frame (``2 * lstm_hidden``); 0
        for a gain set by the instrument alone.
    """

    def __init__(
        self, embedding_dim: int, roll_channels: int = C.ROLL_CHANNELS, gate_features: int = 0
    ) -> None:
        super().__init__()
        combs = torch.zeros(roll_channels, C.N_MELS)
        combs[: C.N_KEYS] = harmonic_combs()
        self.register_buffer("combs", combs, persistent=False)  # roll_channels x N_MELS
        self.register_buffer("operator", detail_operator(), persistent=False)
        self.gain = nn.Linear(embedding_dim, C.N_MELS)
        nn.init.zeros_(self.gain.weight)  # no detail at first: a model extended with this
        nn.init.zeros_(self.gain.bias)  # module plays exactly as its source
        self.gate = nn.Conv1d(gate_features, C.N_MELS, 1) if gate_features else None
        if self.gate is not None:  # unscaled: it reads hundreds of states, not a few numbers
            nn.init.zeros_(self.gate.weight)
            nn.init.zeros_(self.gate.bias)

    def detail(self, roll: torch.Tensor, channels: torch.Tensor | None = None) -> torch.Tensor:
        """The unscaled detail.

        Parameters
        ----------
        roll: Tensor[B x K x T]
            Roll rows (velocity / 127): all ``roll_channels`` of them, or the rows
            ``channels`` only.
        channels: int64 Tensor[K], optional
            Which roll rows ``roll`` holds (0..175), as the in-page graph passes them.

        Returns
        -------
        Tensor[B x N_MELS x T], zero in frames without a sounding note.
        """
        combs = self.combs if channels is None else self.combs.index_select(0, channels)
        summed = torch.matmul(combs.t().to(roll.dtype), roll)  # B x N_MELS x T
        log = torch.log((summed / COMB_FLOOR).clamp_min(1.0))  # exactly 0 in silence
        return torch.matmul(self.operator.to(roll.dtype), log)

    def forward(
        self,
        detail: torch.Tensor,
        embedding: torch.Tensor,
        gate: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The detail scaled for an instrument, to add to a log-mel.

        Parameters
        ----------
        detail: Tensor[B x N_MELS x T]
            :meth:`detail` of the roll.
        embedding: Tensor[B x E] or Tensor[B x E x T]
        gate: Tensor[B x N_MELS x T], optional
            :attr:`gate` of the modulated LSTM states, added to the gain (models with a gate).

        Returns
        -------
        Tensor[B x N_MELS x T]
        """
        if embedding.dim() == 2:
            gain = self.scaled_gain(embedding).unsqueeze(-1)
        else:
            gain = self.scaled_gain(embedding.transpose(1, 2)).transpose(1, 2)
        return (gain if gate is None else gain + gate) * detail

    def scaled_gain(self, embedding: torch.Tensor) -> torch.Tensor:
        """Tensor[... x E] -> Tensor[... x N_MELS]: the detail's gain per mel bin."""
        return GAIN_SCALE * self.gain(embedding)
