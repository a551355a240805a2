"""Analysis-by-synthesis refinement of a predicted STFT toward a target log-mel.

A network's spectrogram is rarely *consistent* (the STFT of some signal): after the overlap-add
its re-analysed magnitude differs from the predicted one, and its mel from the target mel. One
refinement iteration

1. synthesizes the current spectrum (inverse STFT) and re-analyses it (STFT, the mel's own
   analysis settings);
2. takes the re-analysed phase (one Griffin-Lim projection, which makes the spectrum more
   consistent);
3. multiplies each linear-frequency bin's magnitude by the mel-band gain that would bring the
   re-analysed mel onto the target: ``exp(W (target - actual))``, where ``W`` spreads each
   mel band's log-gain over the bins it covers (the filterbank's columns normalized to sum
   to one).

Step 3 is what makes this cheap and effective: Griffin-Lim alone starts from a magnitude
estimated once and keeps it; here the magnitude is re-fitted to the target mel on every
iteration, through the actual synthesis. Measured effect and cost: ``docs/VOCODERS.md``.

Two implementations of the same arithmetic: with autograd (training unrolls the refinement)
the plain one below; without it an in-place one that fuses the inverse STFT with the
re-analysis (the overlap-added blocks are windowed again as they are, never cut to a
waveform), computes magnitudes without complex ``abs`` and uses the filterbank's band
structure (:class:`BandedMatrix`). They agree to float rounding
(tests/vocoders/test_fast_vocoder.py); the second is about twice as fast.

A frame's result depends on the spectrum within ``FRAMES_PER_ITERATION`` frames on each side
per iteration (the inverse STFT reaches 4 frames, the STFT 4 more), which is what a streamed
caller adds as context to stay exact.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn

from mel2mel import constants as C
from mel2mel.audio import mel_filterbank

FRAMES_PER_ITERATION: int = 2 * (C.N_FFT // (2 * C.HOP_LENGTH))
MAX_LOG_GAIN: float = 4.0  # per iteration, in nats
_MIN_MAGNITUDE: float = 1e-12
# Blocks of the two banded products, tuned on a 2-core AVX2 machine (1,100 frames).
_MEL_BLOCKS: int = 4
_SPREAD_BLOCKS: int = 8


def context_frames(iterations: int) -> int:
    """Frames on each side that a frame refined ``iterations`` times depends on."""
    return iterations * FRAMES_PER_ITERATION


def overlap_add(frames: torch.Tensor, hop: int) -> torch.Tensor:
    """Overlap-add frames ``hop`` samples apart (autograd-safe).

    Parameters
    ----------
    frames: Tensor[B x T x N]
        Windowed frames, ``N`` a multiple of ``hop``.

    Returns
    -------
    Tensor[B x (T + N/hop - 1) x hop]: block ``j`` holds samples ``hop j .. hop (j+1) - 1``
    of the sum, frame ``s`` covering blocks ``s .. s + N/hop - 1``.
    """
    b, t, n = frames.shape
    r = n // hop
    parts = frames.view(b, t, r, hop)
    out = frames.new_empty(b, t + r - 1, hop)
    out[:, :t] = parts[:, :, 0]
    out[:, t:] = 0.0
    for k in range(1, r):  # frame s, segment k lands on block s + k
        out[:, k : k + t] += parts[:, :, k]
    return out


def inverse_envelope(window: torch.Tensor, hop: int, t: int) -> torch.Tensor:
    """``1 / sum of squared windows`` over ``hop * t`` samples of a centred synthesis.

    Returns
    -------
    Tensor[t x hop]: sample ``hop i + j`` of a signal whose frame ``i`` is centred on sample
    ``hop i`` (the blocks ``N / (2 hop)`` onwards of :func:`overlap_add`).
    """
    n = window.shape[0]
    r = n // hop
    few = min(t, 2 * r)  # enough frames for both edges; the blocks between hold the full sum
    square = window.square()[None, None].expand(1, few, n).contiguous()
    env = overlap_add(square, hop)[0]  # [few + r - 1 x hop]
    if t > few:
        edges = env
        env = edges[r - 1].expand(t + r - 1, hop).clone()
        env[: r - 1] = edges[: r - 1]
        env[t:] = edges[few:]
    start = n // (2 * hop)
    return 1.0 / env[start : start + t].clamp_min(1e-8)


class EnvelopeCache:
    """:func:`inverse_envelope` by signal length, the newest ``size`` lengths kept (a streamed
    signal uses a few lengths over and over)."""

    def __init__(self, hop: int, size: int) -> None:
        self.hop, self.size = hop, size
        self._cache: dict[int, torch.Tensor] = {}

    def __call__(self, window: torch.Tensor, t: int) -> torch.Tensor:
        """Tensor[t x hop] for ``t`` frames synthesized with ``window``."""
        cached = self._cache.get(t)
        if cached is not None and cached.device == window.device:
            return cached
        inv = inverse_envelope(window, self.hop, t)
        if len(self._cache) >= self.size:
            # keep the newest; one C-level copy, safe beside other threads (web app)
            self._cache = dict(list(self._cache.items())[1 - self.size :])
        self._cache[t] = inv
        return inv


def synthesize(spec: torch.Tensor, window: torch.Tensor, envelopes: EnvelopeCache) -> torch.Tensor:
    """The inverse STFT: complex Tensor[B x T x F] -> Tensor[B x hop*T], frame ``i`` centred on
    sample ``hop i``, ``window`` (of ``N = 2 (F - 1)`` samples) for synthesis and analysis."""
    b, t, _ = spec.shape
    n, hop = window.shape[0], envelopes.hop
    frames = torch.fft.irfft(spec, n=n, dim=-1).mul_(window)
    start = n // (2 * hop)
    blocks = overlap_add(frames, hop)[:, start : start + t]
    return (blocks * envelopes(window, t)).reshape(b, -1)


def analyze(audio: torch.Tensor, window: torch.Tensor, frames: int) -> torch.Tensor:
    """The STFT that :func:`synthesize` inverts, frames-major (autograd-safe): Tensor[B x N]
    -> complex Tensor[B x frames x F], frame ``i`` centred on sample ``128 i`` (zero padding),
    Hann ``window`` of ``N_FFT = 2 (F - 1)`` samples."""
    spec = torch.stft(
        audio, window.shape[0], C.HOP_LENGTH, window=window, center=True, pad_mode="constant",
        return_complex=True,
    )  # fmt: skip
    return spec[..., :frames].transpose(1, 2)


class BandedMatrix(nn.Module):
    """``x @ matrix`` for a matrix whose non-zeros lie near its diagonal, as a few dense blocks.

    The output columns are cut into ``blocks`` equal runs; each run only reads the rows its
    columns use. Exact zeros are skipped, so the result equals the dense product up to
    summation order.

    Parameters
    ----------
    matrix: Tensor[K x N]
    blocks:
        How many runs (more: fewer multiplications, smaller and less efficient products).
    """

    def __init__(self, matrix: torch.Tensor, blocks: int) -> None:
        super().__init__()
        self.in_features, self.out_features = matrix.shape
        used = matrix != 0
        edges = np.linspace(0, self.out_features, blocks + 1).round().astype(int)
        self.runs: list[tuple[int, int, int, int]] = []  # (row0, row1, col0, col1)
        for i, (c0, c1) in enumerate(itertools.pairwise(edges)):
            rows = torch.nonzero(used[:, c0:c1].any(1))[:, 0]
            r0, r1 = (int(rows[0]), int(rows[-1]) + 1) if len(rows) else (0, 0)
            self.runs.append((r0, r1, int(c0), int(c1)))
            self.register_buffer(f"block{i}", matrix[r0:r1, c0:c1].contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[B x T x K] -> Tensor[B x T x N] (no autograd through ``out=``)."""
        flat = x.reshape(-1, self.in_features)
        out = x.new_empty(flat.shape[0], self.out_features)
        for i, (r0, r1, c0, c1) in enumerate(self.runs):
            if r1 > r0:
                torch.mm(flat[:, r0:r1], getattr(self, f"block{i}"), out=out[:, c0:c1])
            else:
                out[:, c0:c1] = 0.0
        return out.view(*x.shape[:-1], self.out_features)


def magnitude_into(spec: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``|spec|`` into ``out`` (Tensor[...] float): ``sqrt(re^2 + im^2)``, 3x faster than
    complex ``abs`` on CPU (whose ``hypot`` guards an overflow float32 spectra never reach)."""
    re, im = torch.view_as_real(spec).unbind(-1)
    torch.mul(re, re, out=out)
    return out.addcmul_(im, im).sqrt_()


class MelMatching(nn.Module):
    """Refine a complex STFT so that its synthesis reproduces a target log-mel.

    Parameters
    ----------
    step:
        Multiplies the log-gain of each iteration. The re-analysis spreads a change over
        neighbouring frames and bins, so a gain applied once only partly arrives; 1.5 converges
        faster than 1 and 2 overshoots (docs/VOCODERS.md).
    """

    def __init__(self, step: float = 1.0) -> None:
        super().__init__()
        self.step = step
        fbank = torch.from_numpy(mel_filterbank())  # [M x F]
        spread = fbank / fbank.sum(0, keepdim=True).clamp_min(1e-8)
        self.register_buffer("fbank_t", fbank.T.contiguous(), persistent=False)  # [F x M]
        self.register_buffer("spread", spread.contiguous(), persistent=False)  # [M x F]
        self.register_buffer("window", torch.hann_window(C.N_FFT), persistent=False)
        self.mel = BandedMatrix(self.fbank_t, _MEL_BLOCKS)
        self.spread_bands = BandedMatrix(self.spread, _SPREAD_BLOCKS)
        self.envelopes = EnvelopeCache(C.HOP_LENGTH, 16)

    def forward(
        self,
        spec: torch.Tensor,
        log_mel: torch.Tensor,
        iterations: int,
        magnitude: torch.Tensor | None = None,
        context: tuple[bool, bool] = (False, False),
    ) -> torch.Tensor:
        """Refine ``spec``.

        Parameters
        ----------
        spec: complex Tensor[B x T x F]
            Frames-major STFT (``F = N_FFT / 2 + 1``, frame ``i`` centred on sample ``128 i``).
        log_mel: Tensor[B x N_MELS x T]
            The target (natural log).
        iterations:
            How many times to refine (0 returns ``spec``).
        magnitude: Tensor[B x T x F], optional
            ``|spec|`` when the caller has it (saves computing it; not modified).
        context:
            Whether the first / last frames are context that the caller discards (a chunk
            cut from a longer signal). Each iteration then drops ``FRAMES_PER_ITERATION``
            frames on that side, which no frame further in depends on: less work, same result.

        Returns
        -------
        complex Tensor[B x T' x F], the refined spectrum (synthesize it with the same inverse
        STFT, e.g. :meth:`~mel2mel.vocoders.fast.ISTFTHead.istft`): frames
        ``[d0, T - d1)`` of the input's, ``d = context * iterations * FRAMES_PER_ITERATION``.
        """
        if not iterations:
            return spec
        drop = tuple(FRAMES_PER_ITERATION * bool(c) for c in context)
        if spec.shape[1] <= iterations * sum(drop):
            raise ValueError(f"{spec.shape[1]} frames are too few to drop {drop} per iteration")
        tracked = (spec, log_mel) if magnitude is None else (spec, log_mel, magnitude)
        if torch.is_grad_enabled() and any(x.requires_grad for x in tracked):
            return self._differentiable(spec, log_mel, iterations, magnitude, drop)
        return self._in_place(spec, log_mel, iterations, magnitude, drop)

    def istft(self, spec: torch.Tensor) -> torch.Tensor:
        """Complex Tensor[B x T x F] -> Tensor[B x 128*T]; frame ``i`` centred on ``128 i``."""
        return synthesize(spec, self.window, self.envelopes)

    def _differentiable(
        self,
        spec: torch.Tensor,
        log_mel: torch.Tensor,
        iterations: int,
        magnitude: torch.Tensor | None,
        drop: tuple[int, int],
    ) -> torch.Tensor:
        target = log_mel.transpose(1, 2)  # [B x T x M]
        if magnitude is None:
            magnitude = spec.abs()
        for _ in range(iterations):
            t = spec.shape[1]
            rebuilt = analyze(self.istft(spec), self.window, t)  # [B x T x F]
            rebuilt_magnitude = rebuilt.abs()
            actual = torch.log(torch.matmul(rebuilt_magnitude, self.fbank_t).clamp_min(C.LOG_FLOOR))
            gain = (self.step * (target - actual)).clamp(-MAX_LOG_GAIN, MAX_LOG_GAIN)
            magnitude = magnitude * torch.exp(torch.matmul(gain, self.spread))
            spec = rebuilt * (magnitude / rebuilt_magnitude.clamp_min(_MIN_MAGNITUDE))
            keep = slice(drop[0], t - drop[1])
            spec, magnitude, target = spec[:, keep], magnitude[:, keep], target[:, keep]
        return spec

    def _in_place(
        self,
        spec: torch.Tensor,
        log_mel: torch.Tensor,
        iterations: int,
        magnitude: torch.Tensor | None,
        drop: tuple[int, int],
    ) -> torch.Tensor:
        """The arithmetic of :meth:`_differentiable` on reused buffers, without autograd."""
        b, t, f = spec.shape
        n, hop = C.N_FFT, C.HOP_LENGTH
        start = n // (2 * hop)
        target = log_mel.transpose(1, 2).contiguous()  # [B x T x M]
        scratch = spec.real.new_empty(b, t, f)
        if magnitude is None:
            magnitude = magnitude_into(spec, spec.real.new_empty(b, t, f))
        else:
            magnitude = magnitude.clone()
        for _ in range(iterations):
            frames = torch.fft.irfft(spec, n=n, dim=-1).mul_(self.window)  # [B x T x N]
            # The signal, zero outside: the zero padding of the centred STFT.
            blocks = overlap_add(frames, hop)
            blocks[:, :start].zero_()
            blocks[:, start + t :].zero_()
            blocks[:, start : start + t].mul_(self.envelopes(self.window, t))
            # Frame i of the centred STFT is blocks i .. i + N/hop - 1: window them in place.
            torch.mul(blocks.view(b, -1).unfold(-1, n, hop), self.window, out=frames)
            rebuilt = torch.fft.rfft(frames, dim=-1)  # [B x T x F]
            rebuilt_magnitude = magnitude_into(rebuilt, scratch)
            actual = self.mel(rebuilt_magnitude).clamp_min_(C.LOG_FLOOR).log_()
            # -step (actual - target) rounds exactly as step (target - actual)
            gain = actual.sub_(target).mul_(-self.step).clamp_(-MAX_LOG_GAIN, MAX_LOG_GAIN)
            magnitude.mul_(self.spread_bands(gain).exp_())
            ratio = torch.div(magnitude, rebuilt_magnitude.clamp_min_(_MIN_MAGNITUDE), out=scratch)
            for part in torch.view_as_real(rebuilt).unbind(-1):
                part.mul_(ratio)  # complex *= real would first copy ratio to complex
            spec = rebuilt
            if drop != (0, 0):
                keep = slice(drop[0], t - drop[1])
                spec, magnitude, target = spec[:, keep], magnitude[:, keep], target[:, keep]
                t = spec.shape[1]
                scratch = scratch.view(-1)[: b * t * f].view(b, t, f)
        return spec
