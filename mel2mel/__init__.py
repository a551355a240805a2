"""mel2mel: neural music synthesis with a steerable timbre space.

A recurrent network (Mel2Mel, Kim et al., ICASSP 2019) turns a piano roll into a log-mel
spectrogram conditioned on a learned instrument embedding; a vocoder turns the mel into audio.
"""

from __future__ import annotations

__version__ = "0.1.0"
