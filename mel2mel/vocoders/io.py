"""Export and load vocoders: weights in safetensors, sizes and kind in a JSON next to them.

An exported vocoder is two files with one stem, ``NAME.safetensors`` (the state dict, nothing
else: no optimizer, no pickled code) and ``NAME.json``::

    {"format_version": 1, "kind": "fast", "config": {...}, "sample_rate": 16000,
     "hop_length": 128, "metadata": {...}}

Loading needs only this module and the model classes; nothing from training. The weights
shipped with the package live at ``mel2mel/pretrained/{fast_vocoder,wavenet}.*``.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mel2mel import constants as C
from mel2mel.errors import UserError
from mel2mel.vocoders.base import Vocoder
from mel2mel.vocoders.fast import FastVocoder, FastVocoderConfig
from mel2mel.vocoders.griffinlim import GriffinLim
from mel2mel.vocoders.wavenet import WaveNet, WaveNetConfig

FORMAT_VERSION = 1
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
PRETRAINED_STEMS = {"fast": "fast_vocoder", "wavenet": "wavenet"}
KINDS = ("fast", "wavenet", "griffinlim")

_BUILDERS: dict[str, Callable[[Mapping[str, Any]], Vocoder]] = {
    "fast": lambda cfg: FastVocoder(FastVocoderConfig.from_dict(cfg)),
    "wavenet": lambda cfg: WaveNet(WaveNetConfig.from_dict(cfg)),
}


def _stem(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".json", ".safetensors") else p


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_vocoder(
    model: Vocoder, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None
) -> tuple[Path, Path]:
    """Export a trained fast vocoder or WaveNet.

    Parameters
    ----------
    model:
        A :class:`FastVocoder` or :class:`WaveNet`.
    path:
        Stem of the two files (a ``.json``/``.safetensors`` suffix is dropped); missing
        folders are created.
    metadata:
        JSON-serializable extras (training step, data, ...), stored in the JSON.

    Returns
    -------
    The paths of the JSON and the safetensors file.
    """
    if model.kind not in _BUILDERS:
        raise ValueError(f"cannot export a {type(model).__name__}")
    stem = _stem(path)
    info = {
        "format_version": FORMAT_VERSION,
        "kind": model.kind,
        "config": model.config.to_dict(),
        "sample_rate": C.SAMPLE_RATE,
        "hop_length": C.HOP_LENGTH,
        "metadata": dict(metadata or {}),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights, config = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    stem.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(weights, lambda tmp: save_file(tensors, tmp, metadata={"kind": model.kind}))
    _atomic_write(config, lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2) + "\n"))
    return config, weights


def load_vocoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> Vocoder:
    """Load an exported vocoder (in eval mode) from its stem, JSON or safetensors path.

    Raises
    ------
    UserError
        If a file is missing or does not describe a vocoder of this package.
    """
    stem = _stem(path)
    config_path, weights_path = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    for p in (config_path, weights_path):
        if not p.is_file():
            raise UserError(f"vocoder file not found: {p}")
    try:
        info = json.loads(config_path.read_text())
        kind = info["kind"]
        version = info["format_version"]
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{config_path} is not an exported mel2mel vocoder ({err})") from err
    if version > FORMAT_VERSION:
        raise UserError(f"{config_path} has format {version}; this mel2mel reads up to 1")
    if kind not in _BUILDERS:
        raise UserError(f"{config_path}: unknown vocoder kind {kind!r}")
    if (
        info.get("sample_rate", C.SAMPLE_RATE) != C.SAMPLE_RATE
        or info.get("hop_length", C.HOP_LENGTH) != C.HOP_LENGTH
    ):
        raise UserError(f"{config_path} was trained for other signal settings")
    try:
        model = _BUILDERS[kind](info["config"])
        model.load_state_dict(load_file(str(weights_path)))
    except (ValueError, KeyError, RuntimeError) as err:
        raise UserError(f"cannot load {weights_path}: {err}") from err
    caveat = (info.get("metadata") or {}).get("warning")
    if caveat:  # e.g. weights trained far too briefly to sound right
        warnings.warn(f"{config_path.name}: {caveat}", stacklevel=2)
    return model.to(device).eval()


def pretrained_path(kind: str) -> Path:
    """Stem of the shipped weights of ``kind`` (``"fast"`` or ``"wavenet"``)."""
    return PRETRAINED_DIR / PRETRAINED_STEMS[kind]


def load_pretrained(kind: str, device: str | torch.device = "cpu") -> Vocoder:
    """The shipped vocoder of ``kind``; Griffin-Lim needs no weights.

    Raises
    ------
    UserError
        If the weights of a neural vocoder are not installed.
    """
    if kind == "griffinlim":
        return GriffinLim().to(device)
    if kind not in PRETRAINED_STEMS:
        raise UserError(f"unknown vocoder {kind!r}; choose one of {', '.join(KINDS)}")
    stem = pretrained_path(kind)
    if not stem.with_suffix(".json").is_file() or not stem.with_suffix(".safetensors").is_file():
        raise UserError(
            f"no pretrained {kind} vocoder is installed (expected {stem}.json and "
            f"{stem}.safetensors); pass --model PATH to an exported one, or use "
            "--vocoder griffinlim"
        )
    return load_vocoder(stem, device)
