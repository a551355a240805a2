"""Audio I/O and the log-mel analysis used everywhere in mel2mel.

The log-mel is computed with ``torch.stft`` and a Slaney mel filterbank so that it runs batched
on CPU or GPU and matches ``librosa.feature.melspectrogram(power=1)`` to float precision. The
filterbank is librosa's, bit for bit, computed here in numpy: librosa's own pulls in scipy.signal
and numba, about a CPU-second for every process that makes a mel.
See :mod:`mel2mel.constants` for the conventions.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import nn

from mel2mel import constants as C
from mel2mel.errors import UserError
from mel2mel.fileio import atomic_write

SLANEY_HZ_PER_MEL = 200.0 / 3  # linear part of Slaney's mel scale, below 1 kHz
SLANEY_LOG_HZ = 1000.0  # where the scale turns logarithmic
SLANEY_LOG_STEP = np.log(6.4) / 27.0  # log-Hz per mel above 1 kHz
SLANEY_LOG_MEL = SLANEY_LOG_HZ / SLANEY_HZ_PER_MEL  # the mel of 1 kHz


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale (librosa's default, ``htk=False``), ``float64``."""
    hz = np.asarray(hz, dtype=np.float64)
    above = SLANEY_LOG_MEL + np.log(np.maximum(hz, SLANEY_LOG_HZ) / SLANEY_LOG_HZ) / SLANEY_LOG_STEP
    return np.where(hz >= SLANEY_LOG_HZ, above, hz / SLANEY_HZ_PER_MEL)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`, ``float64``."""
    mel = np.asarray(mel, dtype=np.float64)
    above = SLANEY_LOG_HZ * np.exp(SLANEY_LOG_STEP * (mel - SLANEY_LOG_MEL))
    return np.where(mel >= SLANEY_LOG_MEL, above, SLANEY_HZ_PER_MEL * mel)


def mel_frequencies(
    n: int = C.N_MELS + 2, fmin: float = C.F_MIN, fmax: float = C.F_MAX
) -> np.ndarray:
    """``n`` frequencies (Hz) evenly spaced on the mel scale from ``fmin`` to ``fmax``; the
    default gives the package's band edges, whose inner 80 are the bands' centres."""
    return mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n))


def mel_band_frequencies() -> np.ndarray:
    """Centre frequencies of the package's mel bands, ``float64[N_MELS]`` in Hz."""
    return mel_frequencies()[1:-1]


@functools.cache
def _filterbank() -> np.ndarray:
    fft_hz = np.fft.rfftfreq(C.N_FFT, 1.0 / C.SAMPLE_RATE)
    edges = mel_frequencies()
    width = np.diff(edges)
    dist = edges[:, None] - fft_hz[None, :]
    rising, falling = -dist[:-2] / width[:-1, None], dist[2:] / width[1:, None]
    triangles = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    # Slaney's area normalization, applied in float64 to float32 weights as librosa does
    return (triangles * (2.0 / (edges[2:] - edges[:-2]))[:, None]).astype(np.float32)


def mel_filterbank() -> np.ndarray:
    """The package's mel filterbank, ``float32[N_MELS x (N_FFT // 2 + 1)]``: librosa's
    ``filters.mel(sr, n_fft, n_mels, fmin, fmax)`` (Slaney scale and norm), bit for bit."""
    return _filterbank().copy()


class LogMel(nn.Module):
    """Waveform -> natural-log mel magnitude, batched, on any device.

    Parameters
    ----------
    floor:
        Magnitudes are clamped to at least ``floor`` before the log.
    """

    def __init__(self, floor: float = C.LOG_FLOOR) -> None:
        super().__init__()
        self.floor = floor
        self.register_buffer("window", torch.hann_window(C.WIN_LENGTH), persistent=False)
        self.register_buffer("fbank", torch.from_numpy(mel_filterbank()), persistent=False)

    def magnitude(self, audio: torch.Tensor) -> torch.Tensor:
        """Linear mel magnitude.

        Parameters
        ----------
        audio: Tensor[B x N] or Tensor[N]

        Returns
        -------
        Tensor[B x N_MELS x T] (or Tensor[N_MELS x T]) with ``T = N // HOP_LENGTH + 1``.
        """
        squeeze = audio.dim() == 1
        x = audio.unsqueeze(0) if squeeze else audio
        spec = torch.stft(
            x.float(),
            n_fft=C.N_FFT,
            hop_length=C.HOP_LENGTH,
            win_length=C.WIN_LENGTH,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        ).abs()
        mel = torch.matmul(self.fbank, spec)
        return mel.squeeze(0) if squeeze else mel

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Log-mel of ``audio``: Tensor[B x N] -> Tensor[B x N_MELS x T] (natural log)."""
        return torch.log(self.magnitude(audio).clamp_min(self.floor))


MEL_CHUNK_FRAMES = 4096  # bounds the STFT's memory to ~20 MB whatever the signal's length
_LOGMEL_CPU: LogMel | None = None


def cpu_log_mel() -> LogMel:
    """The process's CPU :class:`LogMel`, built once."""
    global _LOGMEL_CPU
    if _LOGMEL_CPU is None:
        _LOGMEL_CPU = LogMel()
    return _LOGMEL_CPU


def log_mel(audio: np.ndarray | torch.Tensor, chunk_frames: int = MEL_CHUNK_FRAMES) -> np.ndarray:
    """Log-mel of a mono signal ``float[N]`` -> ``float32[N_MELS x T]`` (CPU).

    A signal of more than ``chunk_frames`` frames is analysed in chunks: frames ``[a, b)`` come
    from the log-mel of the padded slice their windows cover, so the result equals
    ``LogMel()(audio)`` (to float rounding) while the STFT of a ten-minute piece is never held
    in memory at once.
    """
    logmel = cpu_log_mel()
    x = np.asarray(audio, dtype=np.float32)
    total = C.num_frames(len(x))
    with torch.inference_mode():
        if total <= chunk_frames:
            return logmel(torch.from_numpy(x)).numpy()
        hop, half = C.HOP_LENGTH, C.N_FFT // 2
        ctx = half // hop  # frames whose window reaches into LogMel's own zero padding
        padded = np.pad(x, (half, half))
        out = np.empty((C.N_MELS, total), dtype=np.float32)
        for a in range(0, total, chunk_frames):
            b = min(a + chunk_frames, total)
            seg = torch.from_numpy(padded[a * hop : (b - 1) * hop + C.N_FFT])
            out[:, a:b] = logmel(seg)[:, ctx : ctx + b - a].numpy()
    return out


def floor_log_mel(mel: torch.Tensor) -> torch.Tensor:
    """``mel`` (natural-log mel, any shape) floored at ``LOG_SILENCE``, the floor of every
    analysed log-mel (:func:`log_mel`), so a value below it is never the truth (the texture
    post-net and the channel gain floor their outputs too).

    Where gradients flow (training) ``mel`` passes unfloored: the loss pulls a prediction
    below the floor up to it, as it pulls any other error. A floored value would leave it
    free: with the floor straight-through (value floored, gradient passed), a target at the
    floor gives such a bin no gradient, whatever else pushes it down (the frame-level term)
    is never undone, and in one cycle the raw outputs under the floor fell to -590 and the
    gradient norms grew from about 1 to 550 (stop 26; docs/MODELS.md, "Output floor").
    ``train.floor_margin`` lets the loss see the floored value with a bounded dead band
    instead (:func:`mel2mel.models.losses.dead_band_floor`)."""
    return mel if mel.requires_grad else mel.clamp_min(C.LOG_SILENCE)


def load_audio(path: str | os.PathLike) -> np.ndarray:
    """Read any soundfile-readable file as 16 kHz mono ``float32[N]``."""
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise UserError(f"cannot read audio file {path}: {err}") from err
    mono = data.mean(axis=1)
    if sr != C.SAMPLE_RATE:
        import librosa  # only to resample (soxr)

        mono = librosa.resample(mono, orig_sr=sr, target_sr=C.SAMPLE_RATE, res_type="soxr_hq")
    return np.ascontiguousarray(mono, dtype=np.float32)


def write_audio(
    path: str | os.PathLike, audio: np.ndarray, sample_rate: int = C.SAMPLE_RATE
) -> None:
    """Write mono audio atomically (16-bit PCM for .wav, FLAC by extension).

    The signal is clipped to [-1, 1]; the file appears only once it is complete, so an
    interrupted write never leaves a truncated file behind.
    """
    path = Path(path)
    data = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    fmt = "FLAC" if path.suffix.lower() == ".flac" else "WAV"
    atomic_write(
        path,
        lambda tmp: sf.write(tmp, data, sample_rate, subtype="PCM_16", format=fmt),
        path.suffix,
    )
