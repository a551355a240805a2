"""Losses of the fast vocoder: multi-resolution STFT and L1 log-mel.

* **Multi-resolution STFT** (Yamamoto et al., Parallel WaveGAN, 2020): at each of several
  FFT sizes, spectral convergence ``||S - S_hat||_F / ||S||_F`` plus the mean absolute
  difference of log magnitudes. Resolutions longer and shorter than the synthesis frames
  constrain the phase too, since a wrong phase smears energy across neighbouring frames
  and bins of the other resolutions.
* **L1 log-mel** on the package's own :class:`~mel2mel.audio.LogMel`: exactly the quantity the
  vocoder is evaluated on (copy-synthesis log-mel error).

No adversarial term: it would slow training several-fold on a 2-core CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mel2mel.audio import LogMel
from mel2mel.vocoders.refine import analyze

# (n_fft, hop) pairs at 16 kHz: 16 ms to 128 ms windows around the synthesis frame (32 ms).
DEFAULT_RESOLUTIONS: tuple[tuple[int, int], ...] = ((256, 64), (512, 128), (1024, 256), (2048, 512))


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence + log-magnitude L1, averaged over resolutions.

    Parameters
    ----------
    resolutions:
        ``(n_fft, hop)`` pairs; each uses a Hann window of ``n_fft`` samples.
    eps:
        Magnitude floor before the log.
    """

    def __init__(
        self, resolutions: Sequence[tuple[int, int]] = DEFAULT_RESOLUTIONS, eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.resolutions = tuple((int(n), int(h)) for n, h in resolutions)
        self.eps = eps
        for n, _ in self.resolutions:
            self.register_buffer(f"window_{n}", torch.hann_window(n), persistent=False)

    def _magnitude(self, audio: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
        window = getattr(self, f"window_{n_fft}")
        spec = torch.stft(audio, n_fft, hop, window=window, center=True, return_complex=True)
        return spec.abs()

    def forward(self, audio_hat: torch.Tensor, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        """Compare Tensor[B x N] waveforms.

        Returns
        -------
        ``{"spectral_convergence": scalar, "log_magnitude": scalar}``, each averaged over the
        resolutions.
        """
        sc = audio.new_zeros(())
        mag = audio.new_zeros(())
        for n_fft, hop in self.resolutions:
            s_hat = self._magnitude(audio_hat, n_fft, hop)
            s = self._magnitude(audio, n_fft, hop)
            sc = sc + torch.linalg.norm(s - s_hat) / torch.linalg.norm(s).clamp_min(self.eps)
            mag = mag + (torch.log(s_hat + self.eps) - torch.log(s + self.eps)).abs().mean()
        k = len(self.resolutions)
        return {"spectral_convergence": sc / k, "log_magnitude": mag / k}


class LogMelLoss(nn.Module):
    """Mean absolute difference of natural-log mel magnitudes (package conventions)."""

    def __init__(self) -> None:
        super().__init__()
        self.log_mel = LogMel()

    def forward(self, audio_hat: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Tensor[B x N] waveforms -> scalar."""
        return (self.log_mel(audio_hat) - self.log_mel(audio)).abs().mean()


def consistency_loss(spectrum: torch.Tensor, audio_hat: torch.Tensor) -> torch.Tensor:
    """How far a predicted STFT is from the STFT of its own inverse (complex, relative).

    Most complex spectrograms are not the STFT of any signal; overlap-add then blends
    neighbouring frames into something else, and the re-analysed magnitude (hence the mel)
    drifts from the one predicted. Griffin-Lim removes this inconsistency by iterating; this
    loss teaches the network to predict consistent spectra in one pass.

    Parameters
    ----------
    spectrum: complex Tensor[B x T x (n_fft/2+1)]
        The prediction (frames-major): centred frames, hop 128, Hann window of ``n_fft``.
    audio_hat: Tensor[B x 128*T]
        Its inverse STFT.

    Returns
    -------
    Scalar ``||STFT(audio_hat) - spectrum||_F / ||spectrum||_F``.
    """
    window = torch.hann_window(2 * (spectrum.shape[-1] - 1), device=audio_hat.device)
    again = analyze(audio_hat, window, spectrum.shape[1])
    return torch.linalg.norm(again - spectrum) / torch.linalg.norm(spectrum).clamp_min(1e-5)


def _anti_wrap(x: torch.Tensor) -> torch.Tensor:
    return (x - 2 * torch.pi * torch.round(x / (2 * torch.pi))).abs()


def phase_derivative_loss(spectrum: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """Magnitude-weighted error of the phase's time and frequency differences (APNet-style
    instantaneous-frequency and group-delay losses, Ai and Ling 2023), against the target's.

    The absolute phase of a partial is not determined by the mel, but its rate of change
    (the frequency) and its slope across bins (the timing) are; supervising those per bin is a
    far more direct signal than the magnitude losses. Bins are weighted by the target's
    magnitude, as the phase of near-silent bins is noise.

    Parameters
    ----------
    spectrum: complex Tensor[B x T x F]
        Predicted STFT (frames-major), centred frames, hop 128, Hann window of ``2 (F - 1)``.
    audio: Tensor[B x >= 128*T]
        Target waveform.
    """
    window = torch.hann_window(2 * (spectrum.shape[-1] - 1), device=audio.device)
    target = analyze(audio, window, spectrum.shape[1])
    weight = target.abs()
    weight = weight / weight.mean().clamp_min(1e-8)
    pred, true = torch.angle(spectrum), torch.angle(target)
    w_t = torch.minimum(weight[:, 1:], weight[:, :-1])
    w_f = torch.minimum(weight[:, :, 1:], weight[:, :, :-1])
    inst_freq = _anti_wrap(pred.diff(dim=1) - true.diff(dim=1))
    group_delay = _anti_wrap(pred.diff(dim=2) - true.diff(dim=2))
    return (w_t * inst_freq).mean() + (w_f * group_delay).mean()


class FastVocoderLoss(nn.Module):
    """The fast vocoder's training objective: MR-STFT + log-mel L1 + spectral consistency.

    Parameters
    ----------
    stft_weight, mel_weight:
        Weights of the multi-resolution STFT terms and of the log-mel L1 (the log-mel, the
        quantity we are judged on, is weighted up; the fine STFT resolutions also ask for
        detail the mel cannot determine).
    consistency_weight:
        Weight of :func:`consistency_loss` (used when the predicted spectrum is passed).
    """

    def __init__(
        self,
        stft_weight: float = 1.0,
        mel_weight: float = 5.0,
        consistency_weight: float = 1.0,
        phase_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.phase_weight = phase_weight
        self.stft_weight = stft_weight
        self.mel_weight = mel_weight
        self.consistency_weight = consistency_weight
        self.stft = MultiResolutionSTFTLoss()
        self.mel = LogMelLoss()

    def forward(
        self, audio_hat: torch.Tensor, audio: torch.Tensor, spectrum: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Tensor[B x N] prediction and target (and optionally the predicted complex
        spectrum, see :func:`consistency_loss`) -> dict of scalars; ``"loss"`` is the total."""
        terms = self.stft(audio_hat, audio)
        terms["log_mel"] = self.mel(audio_hat, audio)
        stft = terms["spectral_convergence"] + terms["log_magnitude"]
        total = self.stft_weight * stft + self.mel_weight * terms["log_mel"]
        if spectrum is not None and self.consistency_weight:
            terms["consistency"] = consistency_loss(spectrum, audio_hat)
            total = total + self.consistency_weight * terms["consistency"]
        if spectrum is not None and self.phase_weight:
            terms["phase"] = phase_derivative_loss(spectrum, audio)
            total = total + self.phase_weight * terms["phase"]
        terms["loss"] = total
        return terms
