"""The interface every vocoder in mel2mel shares, and chunked streaming on top of it.

A vocoder turns a natural-log mel magnitude (the conventions of :mod:`mel2mel.constants`:
frame ``i`` centred on sample ``i * HOP_LENGTH``, 80 Slaney bands, floor 1e-5) into 16 kHz
audio, ``HOP_LENGTH`` samples per frame: ``Tensor[B x N_MELS x T] -> Tensor[B x HOP_LENGTH*T]``.
A vocoder that can use the notes (``uses_roll``) also takes the piano roll
``Tensor[B x ROLL_CHANNELS x T]``, and works without it.

:meth:`Vocoder.vocode_stream` processes an arbitrarily long mel in chunks so memory stays
bounded. Each chunk is vocoded with ``stream_context_frames`` extra frames on both sides that
are thrown away; a vocoder whose output depends only on a bounded window of frames (the fast
vocoder) then streams *exactly* its unchunked output. A vocoder without that property
(Griffin-Lim's global iterations) also overlaps consecutive chunks by
``stream_crossfade_frames`` frames and cross-fades them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from mel2mel import constants as C

ArrayLike = np.ndarray | torch.Tensor


def as_batch(x: ArrayLike, channels: int, name: str) -> torch.Tensor:
    """Return ``x`` as a float32 ``Tensor[B x channels x T]`` (a 2-D input gets ``B = 1``).

    Raises
    ------
    ValueError
        If ``x`` is not 2-D or 3-D with ``channels`` rows, or has no frames.
    """
    t = torch.as_tensor(x)
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if t.dim() != 3 or t.shape[1] != channels or t.shape[2] == 0:
        raise ValueError(
            f"{name} must have shape [{channels}, T] or [B, {channels}, T] with T > 0, "
            f"got {list(t.shape)}"
        )
    return t.float()


def crossfade_curves(length: int, shape: str) -> tuple[np.ndarray, np.ndarray]:
    """Fade-out and fade-in gains of ``length`` samples, ``float32[length]`` each.

    ``"linear"`` gains sum to one (right for two versions of the same waveform); ``"power"``
    (sine/cosine) gains keep the energy of two *uncorrelated* signals constant.
    """
    ramp = (np.arange(length, dtype=np.float64) + 0.5) / max(length, 1)
    if shape == "linear":
        fade_in = ramp
        fade_out = 1.0 - ramp
    elif shape == "power":
        fade_in = np.sin(0.5 * math.pi * ramp)
        fade_out = np.cos(0.5 * math.pi * ramp)
    else:
        raise ValueError(f"unknown cross-fade shape {shape!r}")
    return fade_out.astype(np.float32), fade_in.astype(np.float32)


class Vocoder(nn.Module):
    """Log-mel -> waveform. Subclasses implement :meth:`_vocode`.

    Class attributes
    ----------------
    kind:
        Name used by the CLI and the exported JSON (``"fast"``, ``"wavenet"``, ``"griffinlim"``).
    uses_roll:
        Whether the vocoder reads the piano roll when it is given.
    stream_crossfade_shape:
        ``"linear"`` or ``"power"``, see :func:`crossfade_curves`.
    """

    kind: ClassVar[str] = "vocoder"
    stream_crossfade_shape: ClassVar[str] = "linear"

    @property
    def uses_roll(self) -> bool:
        return False

    @property
    def stream_context_frames(self) -> int:
        """Frames of context vocoded (and discarded) on each side of a streamed chunk."""
        return 0

    @property
    def stream_crossfade_frames(self) -> int:
        """Frames by which consecutive streamed chunks overlap and cross-fade (0: exact)."""
        return 0

    def device(self) -> torch.device:
        """Device of the vocoder's parameters or buffers (CPU when it has none)."""
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    def _vocode(self, mel: torch.Tensor, roll: torch.Tensor | None) -> torch.Tensor:
        """Vocode a batch; ``mel``: Tensor[B x N_MELS x T] -> Tensor[B x HOP_LENGTH*T]."""
        raise NotImplementedError

    def vocode(self, mel: ArrayLike, roll: ArrayLike | None = None) -> torch.Tensor:
        """Synthesize audio from a log-mel, without gradients.

        Parameters
        ----------
        mel: Tensor[B x N_MELS x T] or Tensor[N_MELS x T]
            Natural-log mel magnitude.
        roll: Tensor[B x ROLL_CHANNELS x T] or Tensor[ROLL_CHANNELS x T], optional
            Piano roll of the same frames; ignored unless :attr:`uses_roll`.

        Returns
        -------
        Tensor[B x HOP_LENGTH*T] (or Tensor[HOP_LENGTH*T] for a 2-D ``mel``), float32 on the
        vocoder's device.
        """
        squeeze = torch.as_tensor(mel).dim() == 2
        mel_b = as_batch(mel, C.N_MELS, "mel").to(self.device())
        roll_b = self._prepare_roll(roll, mel_b)
        with torch.inference_mode():
            audio = self._vocode(mel_b, roll_b)
        return audio.squeeze(0) if squeeze else audio

    def _prepare_roll(self, roll: ArrayLike | None, mel: torch.Tensor) -> torch.Tensor | None:
        if roll is None or not self.uses_roll:
            return None
        roll_b = as_batch(roll, C.ROLL_CHANNELS, "roll").to(mel.device)
        if roll_b.shape[0] != mel.shape[0] or roll_b.shape[2] != mel.shape[2]:
            raise ValueError(
                f"roll {list(roll_b.shape)} does not match mel {list(mel.shape)} "
                "(same batch size and number of frames expected)"
            )
        return roll_b

    def vocode_stream(
        self, mel: ArrayLike, chunk_frames: int = 1000, roll: ArrayLike | None = None
    ) -> Iterator[np.ndarray]:
        """Vocode one long mel chunk by chunk, yielding audio as it is ready.

        Memory is bounded by the chunk size (plus the inputs), whatever the length. With
        ``stream_crossfade_frames == 0`` the concatenated chunks equal :meth:`vocode` of the whole
        mel up to float rounding; otherwise consecutive chunks are cross-faded over that many
        frames.

        Parameters
        ----------
        mel: Tensor[N_MELS x T] or Tensor[1 x N_MELS x T] (NumPy arrays work too)
        chunk_frames:
            Frames per yielded chunk; each yielded array holds ``chunk_frames * HOP_LENGTH``
            samples except the last.
        roll: Tensor[ROLL_CHANNELS x T] or Tensor[1 x ROLL_CHANNELS x T], optional

        Yields
        ------
        float32[chunk_frames * HOP_LENGTH] NumPy arrays that concatenate to ``HOP_LENGTH * T``
        samples.
        """
        if chunk_frames < 1:
            raise ValueError("chunk_frames must be positive")
        mel_b = as_batch(mel, C.N_MELS, "mel")
        if mel_b.shape[0] != 1:
            raise ValueError("vocode_stream takes a single mel (batch size 1)")
        roll_b = self._prepare_roll(roll, mel_b)

        def fetch(a: int, b: int) -> tuple[torch.Tensor, torch.Tensor | None]:
            return mel_b[0, :, a:b], None if roll_b is None else roll_b[0, :, a:b]

        return vocode_windows(
            self, fetch, 0, mel_b.shape[2], chunk_frames, self.stream_context_frames,
            self.stream_crossfade_frames, self.stream_crossfade_shape,
        )  # fmt: skip

    def vocode_long(
        self, mel: ArrayLike, roll: ArrayLike | None = None, chunk_frames: int = 1000
    ) -> np.ndarray:
        """Concatenated :meth:`vocode_stream` output, ``float32[HOP_LENGTH * T]``."""
        return np.concatenate(list(self.vocode_stream(mel, chunk_frames, roll)))


FetchFrames = Callable[[int, int], tuple[torch.Tensor, "torch.Tensor | None"]]


def vocode_windows(
    voc: Vocoder,
    fetch: FetchFrames,
    lo: int,
    hi: int,
    chunk_frames: int,
    context_frames: int,
    crossfade_frames: int,
    shape: str,
    release: Callable[[int], None] | None = None,
) -> Iterator[np.ndarray]:
    """The chunked vocoding loop of frames ``[lo, hi)`` of a mel that may arrive in pieces.

    Every streamed vocoder output goes through here (:meth:`Vocoder.vocode_stream`, and the
    synthesizer's stream, whose mel is made as it is consumed). Each chunk of
    ``chunk_frames`` frames is vocoded with ``context_frames`` frames of context on both
    sides (thrown away) and overlaps the next by ``crossfade_frames`` frames, cross-faded
    with ``shape`` (:func:`crossfade_curves`).

    Parameters
    ----------
    fetch:
        ``fetch(a, b)`` -> ``(Tensor[N_MELS x (b-a)], Tensor[ROLL_CHANNELS x (b-a)] | None)``,
        frames ``[a, b)`` of the mel and roll.
    release:
        Called with the first frame still needed after each chunk (``None``: nothing to free).

    Yields
    ------
    float32[chunk_frames * HOP_LENGTH] arrays (the last shorter) that concatenate to
    ``HOP_LENGTH * (hi - lo)`` samples.
    """
    if chunk_frames < 1:
        raise ValueError("chunk_frames must be positive")
    hop, tail = C.HOP_LENGTH, None
    for start in range(lo, hi, chunk_frames):
        end = min(hi, start + chunk_frames)
        out_end = min(hi, end + crossfade_frames)
        a, b = max(lo, start - context_frames), min(hi, out_end + context_frames)
        mel, roll = fetch(a, b)
        use_roll = roll is not None and voc.uses_roll
        audio = voc.vocode(mel[None], roll[None] if use_roll else None)[0]
        y = audio[(start - a) * hop : (out_end - a) * hop].float().cpu().numpy().copy()
        if tail is not None:
            fade_out, fade_in = crossfade_curves(len(tail), shape)
            y[: len(tail)] = tail * fade_out + y[: len(tail)] * fade_in
        keep = (end - start) * hop
        tail = y[keep:].copy() if out_end > end else None
        if release is not None:
            release(end - context_frames)
        yield np.ascontiguousarray(y[:keep])
