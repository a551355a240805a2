"""Neural network modules of mel2mel and their builders.

:class:`Mel2Mel` is the acoustic model (piano roll -> log-mel); :class:`AcousticConfig`
describes it; :func:`save_pretrained` / :func:`load_acoustic` export and reload it as
safetensors + JSON without any training code.
"""

from __future__ import annotations

from mel2mel.models.acoustic import (
    Instrument,
    Mel2Mel,
    build_acoustic,
    code_velocity,
    count_parameters,
)
from mel2mel.models.config import AcousticConfig
from mel2mel.models.export import load_acoustic, save_pretrained
from mel2mel.models.film import FiLM

__all__ = [
    "AcousticConfig",
    "FiLM",
    "Instrument",
    "Mel2Mel",
    "build_acoustic",
    "code_velocity",
    "count_parameters",
    "load_acoustic",
    "save_pretrained",
]
