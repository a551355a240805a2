"""Export and load an acoustic model as ``safetensors`` weights + a JSON description.

An export is two files side by side, ``<prefix>.safetensors`` and ``<prefix>.json``; a
directory stands for the prefix ``<dir>/acoustic``, and a name of :data:`SHIPPED_MODELS`
(``"paper"``) for a model shipped beside the default one. The JSON holds everything needed to
rebuild the module without training code::

    {
      "format": 1,                      # FORMAT_VERSION, bumped on incompatible changes
      "kind": "acoustic",
      "architecture": "Mel2Mel",
      "weights": "acoustic.safetensors",# file name, relative to the JSON
      "config": {...},                  # AcousticConfig.to_dict()
      "instruments": [{"name": "Grand Piano", "program": 0}, ...],
      "signal": {"sample_rate": 16000, "hop_length": 128, "n_mels": 80, "log_floor": 1e-05},
      "metadata": {"loss": "tanh-log-abs", "step": 60000, ...}
    }

This module imports only torch, safetensors and the model code (no training dependencies).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mel2mel import __version__
from mel2mel import constants as C
from mel2mel.errors import UserError
from mel2mel.fileio import atomic_write
from mel2mel.models.acoustic import Instrument, Mel2Mel
from mel2mel.models.config import AcousticConfig

FORMAT_VERSION = 1
DEFAULT_NAME = "acoustic"
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
# Shipped models other than the default, by the name that --model accepts (docs/MODELS.md).
SHIPPED_MODELS = {"paper": "acoustic_paper"}  # the paper's tanh-log-abs loss

PathLike = str | os.PathLike


def export_paths(path: PathLike) -> tuple[Path, Path]:
    """``(weights, json)`` paths of an export given a directory, a prefix or either file.

    An existing directory (or a path ending in a separator) means ``<dir>/acoustic``; a name
    of :data:`SHIPPED_MODELS` (unless a file or folder of that name exists here) the shipped
    model of that name.
    """
    text = os.fspath(path)
    if text in SHIPPED_MODELS and not Path(text).exists() and not Path(f"{text}.json").exists():
        return export_paths(PRETRAINED_DIR / SHIPPED_MODELS[text])
    p = Path(text)
    if p.is_dir() or text.endswith(("/", os.sep)):
        p = p / DEFAULT_NAME
    elif p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def save_pretrained(
    model: Mel2Mel, path: PathLike, *, metadata: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write ``model`` as safetensors + JSON (see the module docstring).

    Parameters
    ----------
    model:
        The acoustic model (a ``DistributedDataParallel`` wrapper is unwrapped).
    path:
        A directory (files ``acoustic.safetensors`` / ``acoustic.json`` inside it), or a
        prefix such as ``out/piano10`` (``out/piano10.safetensors`` / ``out/piano10.json``).
        Missing parent directories are created.
    metadata:
        Extra JSON-serializable provenance merged over ``model.metadata``.

    Returns
    -------
    (weights_path, json_path)
    """
    model = getattr(model, "module", model)
    weights, desc = export_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {**getattr(model, "metadata", {}), **(metadata or {})}
    meta.setdefault("mel2mel_version", __version__)
    doc = {
        "format": FORMAT_VERSION,
        "kind": "acoustic",
        "architecture": "Mel2Mel",
        "weights": weights.name,
        "config": model.config.to_dict(),
        "instruments": [{"name": i.name, "program": i.program} for i in model.instruments],
        "signal": {
            "sample_rate": C.SAMPLE_RATE,
            "hop_length": C.HOP_LENGTH,
            "n_mels": C.N_MELS,
            "log_floor": C.LOG_FLOOR,
        },
        "metadata": meta,
    }
    text = json.dumps(doc, indent=2) + "\n"
    atomic_write(
        weights, lambda tmp: save_file(state, tmp, metadata={"format": str(FORMAT_VERSION)})
    )
    atomic_write(desc, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return weights, desc


def read_description(path: PathLike) -> dict[str, Any]:
    """The parsed JSON of an export, checked for kind and format version."""
    _, desc = export_paths(path)
    if not desc.is_file():
        raise UserError(f"no exported acoustic model at {desc}")
    try:
        doc = json.loads(desc.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{desc}: not a readable model description ({err})") from err
    if doc.get("kind") != "acoustic":
        raise UserError(f"{desc}: not an acoustic model (kind={doc.get('kind')!r})")
    if doc.get("format") != FORMAT_VERSION:
        raise UserError(
            f"{desc}: export format {doc.get('format')!r}, this mel2mel reads {FORMAT_VERSION}"
        )
    return doc


def load_acoustic(path: PathLike, *, device: str | torch.device = "cpu") -> Mel2Mel:
    """Load an exported acoustic model in eval mode.

    Parameters
    ----------
    path:
        The export directory, its prefix, or its ``.safetensors`` / ``.json`` file.
    device:
        Where to put the weights.

    Returns
    -------
    Mel2Mel
        With ``instruments`` and ``metadata`` restored from the JSON.
    """
    doc = read_description(path)
    _, desc = export_paths(path)
    weights = desc.parent / doc.get("weights", desc.with_suffix(".safetensors").name)
    if not weights.is_file():
        raise UserError(f"{desc}: weights file {weights} is missing")
    config = AcousticConfig.from_dict(doc["config"])
    instruments = [Instrument(**i) for i in doc.get("instruments", [])] or None
    model = Mel2Mel(config, instruments)
    model.metadata = dict(doc.get("metadata", {}))
    state = load_file(str(weights), device=str(device))
    model.load_state_dict(state)
    return model.to(device).eval()
