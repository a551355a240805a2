"""The fast vocoder's layers: a ConvNeXt block and the STFT head (magnitude + running phase).

See :mod:`mel2mel.vocoders.fast` for the design; shapes are ``Tensor[B x C x T]`` at the frame
rate unless said otherwise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mel2mel import constants as C
from mel2mel.vocoders.griffinlim import BandInverter
from mel2mel.vocoders.refine import EnvelopeCache, synthesize


def conv_channels_last(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """Apply a 1-D convolution to channels-last data without transposing copies.

    Parameters
    ----------
    x: Tensor[B x T x C_in]
    conv:
        A ``Conv1d`` with "same" padding (its weights are used as a 1 x k 2-D kernel, which
        oneDNN runs natively on channels-last memory, about 2x faster here).

    Returns
    -------
    Tensor[B x T x C_out], contiguous.
    """
    y = F.conv2d(
        x.permute(0, 2, 1).unsqueeze(2),  # [B x C x 1 x T] viewed channels-last, no copy
        conv.weight.unsqueeze(2),
        conv.bias,
        padding=(0, conv.padding[0]),
        groups=conv.groups,
    )
    return y.squeeze(2).permute(0, 2, 1)


class ConvNeXtBlock(nn.Module):
    """Depthwise conv -> LayerNorm -> MLP (GELU) -> layer scale, with a residual connection."""

    def __init__(self, dim: int, intermediate: int, kernel_size: int, scale: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pw1 = nn.Linear(dim, intermediate)
        self.pw2 = nn.Linear(intermediate, dim)
        self.gamma = nn.Parameter(torch.full((dim,), scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[B x T x dim] -> Tensor[B x T x dim] (channels last)."""
        y = conv_channels_last(x, self.dwconv)
        y = self.pw2(F.gelu(self.pw1(self.norm(y))))
        return x + self.gamma * y


class ISTFTHead(nn.Module):
    """Per-frame features -> STFT log-magnitude and phase -> waveform by overlap-add.

    Everything here is frames-major, ``Tensor[B x T x F]`` with ``F = n_fft / 2 + 1``, so that
    the FFT and the overlap-add run along contiguous memory.

    The phase of bin ``k`` in frame ``t`` is, with ``integrate_phase``,
    ``phi = sum_{s <= t} (c_k + delta_k(s)) + psi_k(t)``: ``c_k`` is the advance of the bin's
    centre frequency over one hop, ``delta`` a predicted deviation from it (so ``c_k + delta_k``
    is the instantaneous frequency) and ``psi`` a predicted local offset. Without
    ``integrate_phase`` the phase is predicted directly, as in Vocos.

    Parameters
    ----------
    dim:
        Feature channels.
    n_fft:
        FFT size of the synthesis frames (Hann window of the same length, hop 128).
    prior_iterations:
        Predict the log-magnitude as a correction of the :class:`BandInverter` estimate
        with this many iterations (-1: predict it from scratch).
    integrate_phase:
        Integrate a predicted instantaneous frequency over time (see above).
    """

    # The running phase is summed in float32 within blocks of this many frames (|sum| stays
    # below ~1000 rad, 1e-4 rad precision) and the block offsets in float64, wrapped.
    PHASE_BLOCK = 64

    def __init__(self, dim: int, n_fft: int, prior_iterations: int, integrate_phase: bool) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.bins = bins = n_fft // 2 + 1
        self.integrate_phase = integrate_phase
        self.proj = nn.Linear(dim, (3 if integrate_phase else 2) * bins)
        self.prior = BandInverter(n_fft, prior_iterations) if prior_iterations >= 0 else None
        if self.prior is not None:
            nn.init.zeros_(self.proj.weight[:bins])
            nn.init.zeros_(self.proj.bias[:bins])
        if integrate_phase:
            # Start at the bins' own frequencies: no deviation.
            nn.init.zeros_(self.proj.weight[2 * bins :])
            nn.init.zeros_(self.proj.bias[2 * bins :])
        k = torch.arange(bins, dtype=torch.float64)
        centre = torch.remainder(2 * math.pi * k * C.HOP_LENGTH / n_fft, 2 * math.pi)
        self.register_buffer("centre", centre.float(), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.envelopes = EnvelopeCache(C.HOP_LENGTH, 8)
        self._padded: tuple[tuple[int, ...], torch.Tensor, torch.Tensor] | None = None

    def frame_outputs(
        self, x: torch.Tensor, mel: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Per-frame predictions from Tensor[B x T x dim] features and the log-mel
        Tensor[B x N_MELS x T].

        Returns
        -------
        ``(log_magnitude, phase_offset, delta)``, each Tensor[B x T x F] (``delta`` is
        ``None`` without ``integrate_phase``).
        """
        parts = self._project(x).split(self.bins, dim=-1)
        log_mag, offset = parts[0], parts[1]
        if self.prior is not None:
            log_mag = log_mag + torch.log(self.prior.frames_major(mel) + 1e-5)
        return log_mag, offset, (parts[2] if self.integrate_phase else None)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        """``proj(x)``, Tensor[B x T x dim] -> Tensor[B x T x >= 3F]. Without autograd, through a
        copy of the weights padded to a multiple of 8 outputs, which MKL multiplies 1.6x faster
        (1539 -> 1544 columns, same result); the copy follows in-place weight updates."""
        if torch.is_grad_enabled():
            return self.proj(x)
        w, b = self.proj.weight, self.proj.bias
        key = (w._version, b._version, w.data_ptr(), b.data_ptr())
        if self._padded is None or self._padded[0] != key:
            extra = -w.shape[0] % 8
            self._padded = (key, F.pad(w, (0, 0, 0, extra)), F.pad(b, (0, extra)))
        return F.linear(x, self._padded[1], self._padded[2])

    def phase(
        self,
        offset: torch.Tensor,
        delta: torch.Tensor | None,
        carry: torch.Tensor | None = None,
        carry_index: int | None = None,
        partials: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Phases of consecutive frames.

        Parameters
        ----------
        offset, delta: Tensor[B x T x F]
            From :meth:`frame_outputs`.
        carry: Tensor[B x F] (float64), optional
            The running phase sum before the first frame (for streaming; 0 at a start).
        carry_index:
            Also return the running sum through this frame, wrapped to [0, 2 pi).
        partials: ``(advance, near)``, Tensor[B x T x F] and bool Tensor[B x T x F], optional
            Where ``near``, the phase advances by ``advance`` per hop instead of the
            prediction, without offset (the notes' partials,
            :class:`~mel2mel.vocoders.partials.PartialPhase`).

        Returns
        -------
        ``(phase Tensor[B x T x F], running sum at carry_index Tensor[B x F] float64 or None)``.
        """
        if delta is None:
            return offset, None
        b, t, f = delta.shape
        step = delta + self.centre
        if partials is not None:
            advance, near = partials
            step, offset = torch.where(near, advance, step), torch.where(near, 0.0, offset)
        blk = self.PHASE_BLOCK
        nb = -(-t // blk)
        step = F.pad(step, (0, 0, 0, nb * blk - t)).view(b, nb, blk, f)
        inner = torch.cumsum(step, dim=2)
        totals = inner[:, :, -1].double()
        starts = torch.cumsum(totals, dim=1) - totals
        if carry is not None:
            starts = starts + carry[:, None]
        starts = torch.remainder(starts, 2 * math.pi)
        running = (inner + starts.float()[:, :, None]).view(b, nb * blk, f)[:, :t]
        out = None
        if carry_index is not None:
            i, j = divmod(carry_index, blk)
            out = torch.remainder(starts[:, i] + inner[:, i, j].double(), 2 * math.pi)
        return running + offset, out

    def istft(self, spec: torch.Tensor) -> torch.Tensor:
        """Complex Tensor[B x T x F] -> Tensor[B x 128*T]; frame ``i`` centred on ``128 i``."""
        return synthesize(spec, self.window, self.envelopes)

    @staticmethod
    def magnitude(log_mag: torch.Tensor) -> torch.Tensor:
        """The predicted magnitude: ``exp`` of the log-magnitude clamped below 7."""
        return log_mag.clamp(max=7.0).exp_()

    @staticmethod
    def polar(magnitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """``torch.polar`` (Tensor[...] x 2 -> complex Tensor[...]), 3x faster on CPU: the
        vectorized ``cos`` and ``sin`` instead of its scalar loop."""
        return torch.complex(torch.cos(phase) * magnitude, torch.sin(phase) * magnitude)

    @staticmethod
    def complex_spectrum(log_mag: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """Magnitude (clamped below e^7) and phase -> complex tensor of the same shape."""
        return ISTFTHead.polar(ISTFTHead.magnitude(log_mag), phase)
