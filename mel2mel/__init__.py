"""mel2mel: neural music synthesis with a steerable timbre space.

A recurrent network (Mel2Mel, Kim et al., ICASSP 2019) turns a piano roll into a log-mel
spectrogram conditioned on a learned instrument embedding; a vocoder turns the mel into audio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mel2mel.version import __version__

if TYPE_CHECKING:
    from mel2mel.synthesizer import Synthesizer

__all__ = ["Synthesizer", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported on first use so that ``import mel2mel`` stays light (no torch).
    if name == "Synthesizer":
        from mel2mel.synthesizer import Synthesizer

        return Synthesizer
    raise AttributeError(f"module 'mel2mel' has no attribute {name!r}")
