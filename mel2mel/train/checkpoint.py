"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a ``torch.save`` dict of tensors and plain Python values only, so it loads with
``torch.load(weights_only=True)`` (no arbitrary unpickling)::

    {
      "format": 1,                        # CHECKPOINT_FORMAT
      "kind": "acoustic",
      "config": {"model": {...}, "train": {...}},   # RunConfig.to_dict()
      "instruments": [{"name": ..., "program": ...}, ...],
      "model": state_dict, "optimizer": state_dict, "scheduler": state_dict,
      "step": 1200,                       # optimizer steps taken
      "epoch": 3, "epoch_batch": 17,      # data position: next batch of that epoch
      "rng": {"torch": ByteTensor, "cuda": [...], "python": tuple, "numpy": {...}},
      "metadata": {"data": "/path/to/dataset", "world_size": 1, ...},
    }

A run directory keeps the latest one as ``checkpoint.pt`` and a few numbered copies in
``checkpoints/``. :func:`export_checkpoint` strips the optimizer state and writes the
safetensors + JSON export of :mod:`mel2mel.models.export`.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mel2mel.errors import UserError
from mel2mel.fileio import atomic_write
from mel2mel.instruments import Instrument
from mel2mel.models.acoustic import Mel2Mel
from mel2mel.models.config import AcousticConfig
from mel2mel.models.export import save_pretrained

CHECKPOINT_FORMAT = 1
LATEST = "checkpoint.pt"
NUMBERED_DIR = "checkpoints"


def rng_state() -> dict[str, Any]:
    """The global RNG states (torch, CUDA, Python, NumPy) as weights-only-loadable values."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    key = npst["key"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", key, npst["pos"], npst["has_gauss"], npst["cached_gaussian"]))


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_checkpoint(
    state: dict[str, Any], run_dir: Path, *, keep: int = 3, kind: str = "acoustic"
) -> Path:
    """Write ``state`` as ``run_dir/checkpoint.pt`` and ``run_dir/checkpoints/step-N.pt``.

    Parameters
    ----------
    state:
        The checkpoint dict (see the module docstring); must contain ``step``.
    run_dir:
        The run directory.
    keep:
        Numbered copies to keep (oldest are deleted); ``0`` keeps all.
    kind:
        What the checkpoint trains (``"acoustic"``, ``"vocoder"``); checked on loading.

    Returns
    -------
    Path of the latest checkpoint.
    """
    state = {"format": CHECKPOINT_FORMAT, "kind": kind, **state}
    latest = run_dir / LATEST
    _atomic_torch_save(state, latest)
    numbered = run_dir / NUMBERED_DIR / f"step-{state['step']:08d}.pt"
    numbered.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(numbered, lambda tmp: shutil.copyfile(latest, tmp))
    if keep > 0:
        for old in sorted(numbered.parent.glob("step-*.pt"))[:-keep]:
            old.unlink(missing_ok=True)
    return latest


def find_checkpoint(run_dir: Path) -> Path | None:
    """The latest checkpoint of a run directory, or ``None``."""
    latest = Path(run_dir) / LATEST
    return latest if latest.is_file() else None


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", kind: str = "acoustic"
) -> dict:
    """Read a checkpoint safely (``weights_only=True``) and check its format and kind.

    ``path`` may be a run directory (its ``checkpoint.pt`` is read).
    """
    path = Path(path)
    if path.is_dir():
        found = find_checkpoint(path)
        if found is None:
            raise UserError(f"no {LATEST} in run directory {path}")
        path = found
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise UserError(f"{path}: not a readable mel2mel checkpoint ({err})") from err
    if not isinstance(state, dict) or state.get("kind") != kind:
        found = state.get("kind") if isinstance(state, dict) else None
        raise UserError(
            f"{path}: not a{'n' if kind[0] in 'aeiou' else ''} {kind} checkpoint "
            f"(it holds {found!r})"
        )
    if state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(
            f"{path}: checkpoint format {state.get('format')!r}, "
            f"this mel2mel reads {CHECKPOINT_FORMAT}"
        )
    return state


def model_from_checkpoint(state: dict | str | os.PathLike) -> Mel2Mel:
    """Rebuild the trained :class:`Mel2Mel` (eval mode, CPU) from a checkpoint or its path."""
    if not isinstance(state, dict):
        state = load_checkpoint(state)
    config = AcousticConfig.from_dict(state["config"]["model"])
    instruments = [Instrument(**i) for i in state.get("instruments") or []] or None
    model = Mel2Mel(config, instruments)
    model.load_state_dict(state["model"])
    model.metadata = {
        "loss": state["config"]["train"]["loss"],
        "step": int(state["step"]),
        **{k: v for k, v in state.get("metadata", {}).items() if k != "data"},
    }
    return model.eval()


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike) -> tuple[Path, Path]:
    """Strip a checkpoint to safetensors + JSON (:func:`~mel2mel.models.export.save_pretrained`).

    Parameters
    ----------
    checkpoint:
        A checkpoint file or a run directory.
    out:
        Output directory or prefix.

    Returns
    -------
    (weights_path, json_path)
    """
    state = load_checkpoint(checkpoint)
    model = model_from_checkpoint(state)
    meta = {"train": state["config"]["train"]}
    return save_pretrained(model, out, metadata=meta)
