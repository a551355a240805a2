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
iteration, through the actual synthesis. Each iteration costs one inverse STFT, one STFT and
two ``80 x 513`` products per frame (about a quarter of the fast vocoder's network). Measured
effect and cost: ``docs/VOCODERS.md``.

A frame's result depends on the spectrum within ``FRAMES_PER_ITERATION`` frames on each side
per iteration (the inverse STFT reaches 4 frames, the STFT 4 more), which is what a streamed
caller adds as context to stay exact.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from mel2mel import constants as C
from mel2mel.audio import mel_filterbank

FRAMES_PER_ITERATION: int = 2 * (C.N_FFT // (2 * C.HOP_LENGTH))
MAX_LOG_GAIN: float = 4.0  # per iteration, in nats


def context_frames(iterations: int) -> int:
    """Frames on each side that a frame refined ``iterations`` times depends on."""
    return iterations * FRAMES_PER_ITERATION


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

    def forward(
        self,
        spec: torch.Tensor,
        log_mel: torch.Tensor,
        istft: Callable[[torch.Tensor], torch.Tensor],
        iterations: int,
    ) -> torch.Tensor:
        """Refine ``spec``.

        Parameters
        ----------
        spec: complex Tensor[B x T x F]
            Frames-major STFT (``F = N_FFT / 2 + 1``, frame ``i`` centred on sample ``128 i``).
        log_mel: Tensor[B x N_MELS x T]
            The target (natural log).
        istft:
            The synthesis: complex Tensor[B x T x F] -> Tensor[B x 128*T].
        iterations:
            How many times to refine (0 returns ``spec``).

        Returns
        -------
        complex Tensor[B x T x F], the refined spectrum.
        """
        t = spec.shape[1]
        target = log_mel.transpose(1, 2)  # [B x T x M]
        magnitude = spec.abs()
        for _ in range(iterations):
            audio = istft(spec)
            rebuilt = torch.stft(
                audio,
                n_fft=C.N_FFT,
                hop_length=C.HOP_LENGTH,
                window=self.window,
                center=True,
                pad_mode="constant",
                return_complex=True,
            )[..., :t].transpose(1, 2)  # [B x T x F]
            rebuilt_magnitude = rebuilt.abs()
            actual = torch.log(torch.matmul(rebuilt_magnitude, self.fbank_t).clamp_min(C.LOG_FLOOR))
            gain = (self.step * (target - actual)).clamp(-MAX_LOG_GAIN, MAX_LOG_GAIN)
            magnitude = magnitude * torch.exp(torch.matmul(gain, self.spread))
            spec = rebuilt * (magnitude / rebuilt_magnitude.clamp_min(1e-12))
        return spec
