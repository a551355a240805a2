"""Writing a rendered stream to WAV/FLAC with one gain chosen after the last chunk.

Output levels, and why two passes
---------------------------------
The audio is streamed in chunks so that a piece of any length renders in bounded memory, but
its peak is only known at the end. Rather than a limiter that would change the sound wherever
it acts, the render is written first as float32 to a temporary file next to the output (4
bytes per sample: 230 MB per hour), tracking the peak; a second pass applies *one* gain while
converting to 16-bit PCM (WAV, or FLAC by extension) in another temporary file, which then
replaces the output atomically (:func:`mel2mel.fileio.publish`):

* ``--normalize``: the peak is brought to ``NORMALIZE_PEAK_DB`` (-1 dBFS), up or down;
* otherwise the level is the model's (FluidSynth's default gain, well below full scale) and
  is only lowered, with a warning, if the peak would exceed full scale: nothing ever clips.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mel2mel import constants as C
from mel2mel import validate
from mel2mel.errors import UserError
from mel2mel.fileio import publish, temp_file

FORMATS = {".wav": "WAV", ".flac": "FLAC"}
NORMALIZE_PEAK_DB = -1.0
BLOCK_SAMPLES = 1 << 18  # second-pass block: 1 MB of float32


def db(gain: float) -> float:
    """Amplitude ratio in decibels (``-inf`` for 0, ``nan`` for NaN)."""
    if math.isnan(gain):
        return math.nan
    return 20.0 * math.log10(gain) if gain > 0 else -math.inf


class TwoPassWriter:
    """Write a stream of audio chunks to ``out`` with one gain chosen after the last chunk.

    Use as a context manager: the temporary files are created on entry (so an unwritable
    folder fails before any work) and removed on exit; ``out`` appears only on :meth:`commit`.

    Parameters
    ----------
    out:
        ``.wav`` or ``.flac`` path.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.format = FORMATS[out.suffix.lower()]
        self.raw: Path | None = None
        self.final: Path | None = None
        self.samples = 0
        self.peak = 0.0

    def __enter__(self) -> TwoPassWriter:
        try:
            self.raw = temp_file(self.out, ".float.wav")
            self.final = temp_file(self.out, self.out.suffix)
        except OSError as err:
            self._cleanup()
            raise UserError(f"cannot write to {self.out.parent}: {err.strerror or err}") from err
        return self

    def __exit__(self, *exc: object) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        for path in (self.raw, self.final):
            if path is not None:
                path.unlink(missing_ok=True)

    def write(self, chunks: Iterable[np.ndarray]) -> None:
        """First pass: every chunk as float32, tracking the number of samples and the peak.

        Raises
        ------
        UserError
            If the audio is not sane (:class:`~mel2mel.validate.AudioCheck`: NaN, DC,
            full-scale noise); nothing is then written under the output's name.
        """
        import soundfile as sf

        check = validate.AudioCheck("the rendering")
        with sf.SoundFile(self.raw, "w", C.SAMPLE_RATE, 1, "FLOAT", format="WAV") as f:
            for chunk in chunks:
                f.write(check.check(chunk))
                self.samples += len(chunk)
            check.finish()
        self.peak = check.peak

    def commit(self, gain: float) -> None:
        """Second pass: scale by ``gain``, convert to 16-bit PCM, move into place."""
        import soundfile as sf

        assert self.raw is not None and self.final is not None
        with (
            sf.SoundFile(self.raw) as src,
            sf.SoundFile(self.final, "w", C.SAMPLE_RATE, 1, "PCM_16", format=self.format) as dst,
        ):
            for block in src.blocks(blocksize=BLOCK_SAMPLES, dtype="float32"):
                dst.write(np.clip(block * np.float32(gain), -1.0, 1.0))
        publish(self.final, self.out)
        self.final = None


def output_gain(peak: float, normalize: bool) -> float:
    """The single gain of the second pass (warns when it limits or finds silence)."""
    if peak <= 0 or not math.isfinite(peak):
        if normalize or not math.isfinite(peak):
            warnings.warn(f"the rendering has no usable peak ({peak}); written as is", stacklevel=2)
        return 1.0
    if normalize:
        return 10.0 ** (NORMALIZE_PEAK_DB / 20.0) / peak
    if peak > 1.0:
        warnings.warn(
            f"the peak ({db(peak):+.1f} dBFS) exceeds full scale: limiting by {db(peak):.1f} dB "
            "(a single gain, no clipping)",
            stacklevel=2,
        )
        return 1.0 / peak
    return 1.0
