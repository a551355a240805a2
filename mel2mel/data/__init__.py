"""Training data: render MIDI with FluidSynth into a dataset on disk, and read it back.

* :func:`build_dataset` (``mel2mel data build``) renders pieces x instruments into the layout
  described in :mod:`mel2mel.data.dataset` and docs/DATA.md;
* :func:`index_dataset` (``mel2mel data index``) rebuilds ``manifest.json`` from the files;
* :class:`CropDataset`, :func:`load_item` and :func:`read_manifest` read a built dataset.

Names are imported on first use, so ``import mel2mel.data`` (and the command line) stays fast
and does not import torch or music21 until they are needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mel2mel.data.build import build_dataset
    from mel2mel.data.dataset import CropDataset, load_item, read_manifest
    from mel2mel.data.manifest import index_dataset

_EXPORTS = {
    "CropDataset": "mel2mel.data.dataset",
    "load_item": "mel2mel.data.dataset",
    "read_manifest": "mel2mel.data.dataset",
    "build_dataset": "mel2mel.data.build",
    "index_dataset": "mel2mel.data.manifest",
}
__all__ = ["CropDataset", "build_dataset", "index_dataset", "load_item", "read_manifest"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mel2mel.data' has no attribute {name!r}")
