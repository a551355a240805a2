"""The shipped models: the one folder they live in and the stem of each.

An export is ``<stem>.json`` + ``<stem>.safetensors`` in :data:`PRETRAINED_DIR` (see
``docs/MODELS.md``); :func:`path` is read at call time, so tests can point the folder elsewhere
by patching :data:`PRETRAINED_DIR` here.
"""

from __future__ import annotations

from pathlib import Path

PRETRAINED_DIR: Path = Path(__file__).resolve().parent

ACOUSTIC = "acoustic"  # the default acoustic model, 2-D timbre plane (+ acoustic_texture.*)
ACOUSTIC_PAPER = "acoustic_paper"  # the paper's tanh-log-abs loss
ACOUSTIC100 = "acoustic100"  # 100 instruments, 10-D embedding (docs/SPACE100.md)
FAST_VOCODER = "fast_vocoder"
WAVENET = "wavenet"
SPACE100 = "space100.json"  # 3-D view of ACOUSTIC100's instruments


def path(name: str = "") -> Path:
    """``PRETRAINED_DIR / name`` (the folder itself for ``""``)."""
    return PRETRAINED_DIR / name if name else PRETRAINED_DIR
