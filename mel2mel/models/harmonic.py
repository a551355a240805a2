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
         [+ sum_g (exp(height_g) - 1) S_g]   ``harmonic_heights``: each group of harmonic
                                        ranks g made louder or softer for the instrument
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

With ``harmonic_heights`` the instrument also sets how loud each group of harmonic ranks is
(:data:`HEIGHT_GROUPS`: a weak fundamental, the odd harmonics of a square wave, a bell's few
partials): ``S_g`` is the comb of group ``g``'s harmonics alone, and its height (a log
amplitude, affine in the embedding, zero at initialization) adds or removes that much of it.
Mixing magnitudes rather than powers is exact at height 0 and close elsewhere, since the
groups' harmonics seldom share a mel bin's strongest FFT bins.
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
#: Harmonic ranks (first, last) whose amplitude ``harmonic_heights`` sets, one log height each:
#: the first six one by one, then wider bands up to the Nyquist frequency.
HEIGHT_GROUPS: tuple[tuple[int, int], ...] = (
    (1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6), (7, 8), (9, 12), (13, 20), (21, 1 << 20),
)  # fmt: skip
HEIGHT_SCALE = 10.0  # the heights' learning-rate multiplier, as GAIN_SCALE is the gains'


def harmonic_combs(rolloff: float = 1.0) -> torch.Tensor:
    """``float32[88 x N_MELS]``: linear mel magnitude of a steady harmonic tone per piano key
    (A0 first), harmonics of amplitude ``k ** -rolloff``, each key's peak scaled to 1."""
    return _combs(rolloff)[:, 0].clone()


def group_combs(rolloff: float = 1.0) -> torch.Tensor:
    """``float32[88 x G x N_MELS]``: the same tones' harmonics of each of the G
    :data:`HEIGHT_GROUPS` alone, on the scale of :func:`harmonic_combs`."""
    return _combs(rolloff)[:, 1:].clone()


@functools.lru_cache(maxsize=2)
def _combs(rolloff: float) -> torch.Tensor:
    """``float32[88 x (1 + G) x N_MELS]``: :func:`harmonic_combs`, then :func:`group_combs`."""
    keys = torch.arange(C.N_KEYS, dtype=torch.float64)
    combs = _tones(keys, rolloff, HEIGHT_GROUPS)
    return (combs / combs[:, :1].amax(2, keepdim=True)).float()


def tone_combs(keys: torch.Tensor, rolloff: float = 1.0) -> torch.Tensor:
    """``float64[K x N_MELS]``: linear mel magnitude of a steady harmonic tone at each of the
    (fractional) piano ``keys`` (0 is A0), unscaled: :func:`harmonic_combs` at any pitch."""
    return _tones(keys, rolloff, ())[:, 0]


def _tones(keys: torch.Tensor, rolloff: float, groups: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """``float64[K x (1 + len(groups)) x N_MELS]``: each key's whole tone, then the harmonics
    of each group alone (harmonics ``k f0`` of amplitude ``k ** -rolloff`` up to the Nyquist
    frequency, each drawn as the Hann window's power response around it, through the mel
    filterbank)."""
    n = C.N_FFT
    window = torch.hann_window(C.WIN_LENGTH, dtype=torch.float64)
    response = torch.fft.rfft(window, n=n * OVERSAMPLE).abs().square()  # power per 1/64 bin
    reach = REACH_BINS * OVERSAMPLE
    bins = torch.arange(n // 2 + 1, dtype=torch.float64)
    fbank = torch.from_numpy(mel_filterbank()).double()  # N_MELS x (N_FFT / 2 + 1)
    combs = []
    for key in keys.tolist():
        f0 = 440.0 * 2.0 ** ((C.MIDI_MIN + key - 69) / 12.0)
        k = torch.arange(1, int(C.SAMPLE_RATE / 2 / f0) + 1, dtype=torch.float64)
        offset = ((bins[None] - k[:, None] * f0 * n / C.SAMPLE_RATE).abs() * OVERSAMPLE).round()
        near = offset < reach
        power = torch.where(near, response[offset.long().clamp(max=reach - 1)], 0.0)
        power = power * k[:, None].pow(-2.0 * rolloff)
        parts = [power.sum(0)] + [power[(k >= a) & (k <= b)].sum(0) for a, b in groups]
        combs.append(torch.stack(parts).sqrt() @ fbank.t())  # (1 + G) x N_MELS
    return torch.stack(combs)


def detail_operator(n_mels: int = C.N_MELS) -> torch.Tensor:
    """``float32[n_mels x n_mels]`` ``I - M``, with ``M`` the moving average over 3 bins (edges
    repeated): ``operator @ x`` is the detail of a log-spectrum ``x`` (bins first). Each row
    sums to 0, so a flat spectrum (silence) has none."""
    average = torch.zeros(n_mels, n_mels)
    for i in range(n_mels):
        for j in (i - 1, i, i + 1):
            average[i, min(max(j, 0), n_mels - 1)] += 1.0 / 3.0
    return torch.eye(n_mels) - average


class CombDetail(nn.Module):
    """The detail of the sounding notes' fixed harmonic combs (:func:`harmonic_combs`, no gain,
    no heights): what the texture post-net with ``note_detail`` reads to know where the notes'
    partials fall across the mel bins."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("combs", harmonic_combs(), persistent=False)  # 88 x N_MELS
        self.register_buffer("operator", detail_operator(), persistent=False)

    def forward(self, roll: torch.Tensor) -> torch.Tensor:
        """Tensor[B x ROLL_CHANNELS x T] (velocity / 127) -> Tensor[B x N_MELS x T]: peaks > 0,
        valleys < 0, 0 in frames without a sounding note."""
        summed = torch.matmul(self.combs.t().to(roll.dtype), roll[:, : C.N_KEYS])
        log = torch.log((summed / COMB_FLOOR).clamp_min(1.0))
        return torch.matmul(self.operator.to(log.dtype), log)


class HarmonicDetail(nn.Module):
    """The detail of the sounding notes' harmonic combs, scaled per bin by the instrument.

    Parameters
    ----------
    embedding_dim:
        Size E of the instrument embedding that sets the gain (and the heights).
    roll_channels:
        Rows of the roll it reads (the first 88 are the sounding keys; the others, the onset
        block, carry no comb).
    gate_features:
        Channels of the states that move the gain frame by frame (``2 * lstm_hidden``); 0
        for a gain set by the instrument alone.
    heights:
        Let the instrument set the height of each group of harmonics (:data:`HEIGHT_GROUPS`)
        in the combs.
    """

    def __init__(
        self,
        embedding_dim: int,
        roll_channels: int = C.ROLL_CHANNELS,
        gate_features: int = 0,
        heights: bool = False,
    ) -> None:
        super().__init__()
        table = _combs(1.0)  # 88 x (1 + G) x N_MELS
        tones = table.shape[1] if heights else 1
        combs = torch.zeros(roll_channels, tones, C.N_MELS)
        combs[: C.N_KEYS] = table[:, :tones]
        self.register_buffer("combs", combs, persistent=False)  # roll_channels x S x N_MELS
        self.register_buffer("operator", detail_operator(), persistent=False)
        self.gain = nn.Linear(embedding_dim, C.N_MELS)
        nn.init.zeros_(self.gain.weight)  # no detail at first: a model extended with this
        nn.init.zeros_(self.gain.bias)  # module plays exactly as its source
        self.gate = nn.Conv1d(gate_features, C.N_MELS, 1) if gate_features else None
        if self.gate is not None:  # unscaled: it reads hundreds of states, not a few numbers
            nn.init.zeros_(self.gate.weight)
            nn.init.zeros_(self.gate.bias)
        self.heights = nn.Linear(embedding_dim, tones - 1) if heights else None
        if self.heights is not None:  # height 0: the fixed 1 / k comb, as without them
            nn.init.zeros_(self.heights.weight)
            nn.init.zeros_(self.heights.bias)

    def tones(
        self,
        roll: torch.Tensor,
        channels: torch.Tensor | None = None,
        embedding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The sounding keys' harmonic tones, summed per frame (what :meth:`detail` reads).

        Parameters
        ----------
        roll: Tensor[B x K x T]
            Roll rows (velocity / 127): all ``roll_channels`` of them, or the rows
            ``channels`` only.
        channels: int64 Tensor[K], optional
            Which roll rows ``roll`` holds (0..175), as the in-page graph passes them.
        embedding: Tensor[E], optional
            One instrument for every row of the batch: with heights, they are mixed into the
            combs first (as :meth:`mix` would mix the tones, for one matmul instead of 1 + G).

        Returns
        -------
        Tensor[B x S x N_MELS x T]
            Linear mel magnitudes: the whole combs, then (with heights, unless mixed for
            ``embedding``) each group's alone; ``S`` is 1 or ``1 + G``. Zero in frames without a
            sounding note.
        """
        combs = self.combs if channels is None else self.combs.index_select(0, channels)
        if self.heights is not None and embedding is not None:
            weight = self.added(embedding).to(combs.dtype)  # G
            combs = combs[:, :1] + torch.einsum("g,kgm->km", weight, combs[:, 1:])[:, None]
        k, s, m = combs.shape
        summed = torch.matmul(combs.reshape(k, s * m).t().to(roll.dtype), roll)
        return summed.reshape(roll.shape[0], s, m, roll.shape[-1])

    def mix(self, tones: torch.Tensor, embedding: torch.Tensor | None) -> torch.Tensor:
        """Tones with the instrument's heights: Tensor[B x S x N_MELS x T] -> Tensor[B x
        N_MELS x T]; ``embedding`` Tensor[B x E] or Tensor[B x E x T] (unused without heights,
        and for tones already mixed, ``S = 1``)."""
        summed = tones[:, 0]
        if self.heights is None or tones.shape[1] == 1:
            return summed
        if embedding is None:
            raise ValueError("harmonic heights need the embedding")
        if embedding.dim() == 2:
            weight = self.added(embedding)[:, :, None, None]
        else:
            weight = self.added(embedding.transpose(1, 2))  # B x T x G
            weight = weight.transpose(1, 2).unsqueeze(2)  # B x G x 1 x T
        return summed + (weight.to(tones.dtype) * tones[:, 1:]).sum(1)

    def mix_grid(self, tones: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """:meth:`mix` for every point on every roll without repeating the tones: Tensor[W x
        S x N_MELS x T] and Tensor[K x E] -> Tensor[(K W) x 1 x N_MELS x T], row ``k W + w``
        (what :meth:`forward` takes as mixed tones)."""
        m, t = tones.shape[2:]
        if self.heights is None or tones.shape[1] == 1:
            mixed = tones[:, :1].repeat(points.shape[0], 1, 1, 1)
        else:
            weight = self.added(points).to(tones.dtype)  # K x G
            mixed = tones[None, :, 0] + torch.einsum("kg,wgmt->kwmt", weight, tones[:, 1:])
        return mixed.reshape(-1, 1, m, t)

    def detail(self, tones: torch.Tensor, embedding: torch.Tensor | None = None) -> torch.Tensor:
        """The unscaled detail of :meth:`tones` (mixed with the heights for ``embedding``):
        Tensor[B x N_MELS x T], zero in frames without a sounding note."""
        log = torch.log((self.mix(tones, embedding) / COMB_FLOOR).clamp_min(1.0))  # 0 in silence
        return torch.matmul(self.operator.to(log.dtype), log)

    def forward(
        self,
        tones: torch.Tensor,
        embedding: torch.Tensor,
        gate: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The detail scaled for an instrument, to add to a log-mel.

        Parameters
        ----------
        tones: Tensor[B x S x N_MELS x T]
            :meth:`tones` of the roll (or, ``S = 1``, already :meth:`mix`-ed).
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
        detail = self.detail(tones, embedding)
        return (gain if gate is None else gain + gate) * detail

    def scaled_gain(self, embedding: torch.Tensor) -> torch.Tensor:
        """Tensor[... x E] -> Tensor[... x N_MELS]: the detail's gain per mel bin."""
        return GAIN_SCALE * self.gain(embedding)

    def scaled_heights(self, embedding: torch.Tensor) -> torch.Tensor:
        """Tensor[... x E] -> Tensor[... x G]: each harmonic group's log amplitude (nepers)."""
        assert self.heights is not None
        return HEIGHT_SCALE * self.heights(embedding)

    def added(self, embedding: torch.Tensor) -> torch.Tensor:
        """Tensor[... x E] -> Tensor[... x G]: how much of each group's comb the instrument adds
        to the whole comb, ``exp(height) - 1`` (-1 removes the group, 0 keeps the comb as it
        is). Written without ``expm1``, which ONNX lacks."""
        return self.scaled_heights(embedding).exp() - 1.0
