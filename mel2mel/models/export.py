"""Export and load every model kind: safetensors weights + a JSON description, side by side.

An export is two files with one stem, ``<stem>.safetensors`` (the state dict: no optimizer, no
pickled code) and ``<stem>.json``. Every JSON carries ``"format"`` (:data:`FORMAT_VERSION`,
bumped on incompatible changes), ``"kind"``, ``"config"`` (the model's config dataclass as a
dict) and ``"metadata"`` (provenance: loss, step, ...); each kind adds its own fields:

* ``acoustic`` (:class:`~mel2mel.models.acoustic.Mel2Mel`): ``"architecture"``, ``"weights"``
  (file name, relative to the JSON), ``"instruments"`` (``[{"name", "program"}]``),
  ``"signal"`` (sample rate, hop, mel bins, log floor) and, once fitted, ``"detail_gains"``
  (:class:`~mel2mel.models.sharpen.DetailGains`), ``"note_beats"``
  (:class:`~mel2mel.models.beats.NoteBeats`) and ``"note_contrast"``
  (:class:`~mel2mel.models.contrast.NoteContrast`). A directory stands for
  ``<dir>/acoustic``, and a name of :data:`SHIPPED_MODELS` (``"paper"``) for a shipped model;
* ``texture`` (:class:`~mel2mel.models.texture.TexturePostnet`): stored beside its acoustic
  model as ``<acoustic stem>_texture.*``, with ``"acoustic_digest"`` (the
  :func:`weights_digest` of the acoustic weights it was trained on), ``"default_strength"``
  and, if chosen per instrument, ``"instrument_strengths"`` (``[{"name", "embedding",
  "strength"}]``, :class:`~mel2mel.models.texture.InstrumentStrengths`);
* ``fast`` / ``wavenet`` (:mod:`mel2mel.vocoders`): ``"sample_rate"`` and ``"hop_length"``.
  Vocoder exports written before this module said ``"format_version"`` instead of
  ``"format"``; both are read, and both are written for one release.

Every save function returns ``(weights, json)``; nothing here imports training code. The
shipped exports live in :mod:`mel2mel.pretrained`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from mel2mel import constants as C
from mel2mel import pretrained
from mel2mel.errors import UserError
from mel2mel.fileio import atomic_write, atomic_write_text
from mel2mel.instruments import Instrument
from mel2mel.models.acoustic import Mel2Mel
from mel2mel.models.beats import NoteBeats
from mel2mel.models.config import AcousticConfig
from mel2mel.models.contrast import NoteContrast
from mel2mel.models.sharpen import DetailGains
from mel2mel.models.texture import InstrumentStrengths, TextureConfig, TexturePostnet
from mel2mel.version import __version__

if TYPE_CHECKING:
    from mel2mel.vocoders.base import Vocoder

FORMAT_VERSION = 1
DEFAULT_NAME = pretrained.ACOUSTIC
# Shipped models other than the default, by the name that --model accepts (docs/MODELS.md).
SHIPPED_MODELS = {"paper": pretrained.ACOUSTIC_PAPER}
VOCODER_STEMS = {"fast": pretrained.FAST_VOCODER, "wavenet": pretrained.WAVENET}
VOCODER_KINDS = ("fast", "wavenet", "griffinlim")

PathLike = str | os.PathLike


# -- shared ---------------------------------------------------------------------------------


def stem_paths(stem: PathLike) -> tuple[Path, Path]:
    """``(weights, json)`` of the export ``stem`` (a ``.json``/``.safetensors`` suffix is
    dropped first)."""
    p = Path(stem)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def weights_digest(path: PathLike) -> str:
    """The first 16 hex digits of the SHA-256 of a weights *file*: which acoustic export a
    texture post-net belongs to."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def model_fingerprint(model: Any) -> str:
    """``"sha256:<16 hex>"`` of a *loaded* acoustic model's config and every parameter, which
    a user timbre or a timbre map records; computed on CPU float32 copies in a fixed order, so
    it does not depend on the device or on how the model was saved."""
    h = hashlib.sha256()
    h.update(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(np.ascontiguousarray(value.detach().float().cpu().numpy()).tobytes())
    return "sha256:" + h.hexdigest()[:16]


def fitted_tables(model: Mel2Mel | None) -> list[dict[str, Any] | None]:
    """What an acoustic model plays with beside its weights, each as its export's JSON stores
    it (None where absent): detail gains, note beats, note contrast. A cache of anything the
    model renders keys on these as well as on :func:`model_fingerprint`."""
    if model is None:
        return []
    tables = (model.detail_gains, model.note_beats, model.note_contrast)
    return [None if t is None else t.to_dict() for t in tables]


def write_export(
    model: torch.nn.Module, weights: Path, desc: Path, doc: dict[str, Any],
    weights_metadata: dict[str, str] | None = None,
) -> tuple[Path, Path]:  # fmt: skip
    """Write ``model``'s state dict and ``doc`` atomically (folders created); returns
    ``(weights, desc)``."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(weights, lambda tmp: save_file(state, tmp, metadata=weights_metadata))
    atomic_write_text(desc, dumps_export(doc))
    return weights, desc


# a list json.dumps(indent=...) wrote one number per line (never matches inside a string)
_NUMBER_LIST = re.compile(r"\[\n\s+(-?[\d.eE+-]+(?:,\n\s+-?[\d.eE+-]+)*)\n\s*\]")


def dumps_export(doc: dict[str, Any]) -> str:
    """``doc`` as an export's JSON: indented, with every list of plain numbers on one line
    (a table of gains or phases is thousands of them)."""

    def one_line(m: re.Match[str]) -> str:
        return "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]"

    return _NUMBER_LIST.sub(one_line, json.dumps(doc, indent=2)) + "\n"


def read_export(desc: Path, kinds: tuple[str, ...], what: str) -> dict[str, Any]:
    """The parsed JSON of an export of one of ``kinds``, checked for kind and format."""
    try:
        doc = json.loads(desc.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"{desc}: not a readable description of {what} ({err})") from err
    kind = doc.get("kind") if isinstance(doc, dict) else None
    if kind not in kinds:
        raise UserError(f"{desc}: not {what} (kind={kind!r})")
    version = doc.get("format", doc.get("format_version"))
    if version != FORMAT_VERSION:
        raise UserError(f"{desc}: export format {version!r}, this mel2mel reads {FORMAT_VERSION}")
    return doc


# -- acoustic model -------------------------------------------------------------------------


def export_paths(path: PathLike) -> tuple[Path, Path]:
    """``(weights, json)`` paths of an acoustic export given a directory, a prefix or either
    file.

    An existing directory (or a path ending in a separator) means ``<dir>/acoustic``; a name
    of :data:`SHIPPED_MODELS` (unless a file or folder of that name exists here) the shipped
    model of that name.
    """
    text = os.fspath(path)
    if text in SHIPPED_MODELS and not Path(text).exists() and not Path(f"{text}.json").exists():
        return stem_paths(pretrained.path(SHIPPED_MODELS[text]))
    p = Path(text)
    if p.is_dir() or text.endswith(("/", os.sep)):
        p = p / DEFAULT_NAME
    return stem_paths(p)


def save_pretrained(
    model: Mel2Mel, path: PathLike, *, metadata: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write an acoustic model as safetensors + JSON; returns ``(weights, json)``.

    Parameters
    ----------
    model:
        The acoustic model (a ``DistributedDataParallel`` wrapper is unwrapped).
    path:
        A directory (files ``acoustic.safetensors`` / ``acoustic.json`` inside it), or a
        prefix such as ``out/piano10`` (``out/piano10.safetensors`` / ``out/piano10.json``).
    metadata:
        Extra JSON-serializable provenance merged over ``model.metadata``.
    """
    model = getattr(model, "module", model)
    weights, desc = export_paths(path)
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
    if model.detail_gains is not None:
        doc["detail_gains"] = model.detail_gains.to_dict()
    if model.note_beats is not None:
        doc["note_beats"] = model.note_beats.to_dict()
    if model.note_contrast is not None:
        doc["note_contrast"] = model.note_contrast.to_dict()
    return write_export(model, weights, desc, doc, {"format": str(FORMAT_VERSION)})


def read_description(path: PathLike) -> dict[str, Any]:
    """The parsed JSON of an acoustic export, checked for kind and format version."""
    _, desc = export_paths(path)
    if not desc.is_file():
        raise UserError(f"no exported acoustic model at {desc}")
    return read_export(desc, ("acoustic",), "an acoustic model")


def load_acoustic(path: PathLike, *, device: str | torch.device = "cpu") -> Mel2Mel:
    """Load an exported acoustic model in eval mode, with ``instruments`` and ``metadata``
    restored from the JSON; ``path`` is the export directory, its prefix or either file."""
    doc = read_description(path)
    _, desc = export_paths(path)
    weights = desc.parent / doc.get("weights", desc.with_suffix(".safetensors").name)
    if not weights.is_file():
        raise UserError(f"{desc}: weights file {weights} is missing")
    config = AcousticConfig.from_dict(doc["config"])
    instruments = [Instrument(**i) for i in doc.get("instruments", [])] or None
    model = Mel2Mel(config, instruments)
    model.metadata = dict(doc.get("metadata", {}))
    if doc.get("detail_gains"):
        model.detail_gains = DetailGains.from_dict(doc["detail_gains"])
    if doc.get("note_beats"):
        model.note_beats = NoteBeats.from_dict(doc["note_beats"])
    if doc.get("note_contrast"):
        try:
            model.note_contrast = NoteContrast.from_dict(doc["note_contrast"])
        except ValueError as err:
            raise UserError(f"{desc}: {err}") from err
    model.load_state_dict(load_file(str(weights), device=str(device)))
    return model.to(device).eval()


# -- texture post-net -----------------------------------------------------------------------


def texture_paths(acoustic_stem: PathLike) -> tuple[Path, Path]:
    """``(weights, json)`` of the post-net that belongs to the acoustic export ``acoustic_stem``
    (``<dir>/acoustic`` -> ``<dir>/acoustic_texture.safetensors`` / ``.json``)."""
    stem = Path(acoustic_stem)
    return stem_paths(stem.with_name(stem.name + "_texture"))


def save_texture(
    model: TexturePostnet, out_stem: PathLike, acoustic_digest: str,
    metadata: dict[str, Any] | None = None, default_strength: float | None = None,
) -> tuple[Path, Path]:  # fmt: skip
    """Write ``model`` to ``texture_paths(out_stem)`` as the post-net of the acoustic model
    whose weights have :func:`weights_digest` ``acoustic_digest``, with ``default_strength``
    (default: the model's) and its ``instrument_strengths`` if any; returns ``(weights,
    json)``."""
    model = getattr(model, "module", model)
    weights, desc = texture_paths(out_stem)
    strength = model.default_strength if default_strength is None else float(default_strength)
    doc = {
        "format": FORMAT_VERSION,
        "kind": "texture",
        "architecture": "TexturePostnet",
        "weights": weights.name,
        "config": model.config.to_dict(),
        "acoustic_digest": acoustic_digest,
        "default_strength": strength,
        "metadata": {**model.metadata, **(metadata or {})},
    }
    if model.instrument_strengths is not None:
        doc["instrument_strengths"] = model.instrument_strengths.to_list()
    return write_export(model, weights, desc, doc)


def load_texture(
    acoustic_stem: PathLike, acoustic_weights: PathLike, device: str | torch.device = "cpu"
) -> TexturePostnet | None:
    """The post-net exported beside an acoustic model, or ``None`` if there is none.

    Raises
    ------
    UserError
        If its files are unreadable, or it was trained on another acoustic model (its
        texture would not fit that model's mels or embedding).
    """
    weights, desc = texture_paths(acoustic_stem)
    if not desc.is_file():
        return None
    doc = read_export(desc, ("texture",), "a texture post-net")
    if doc.get("acoustic_digest") != weights_digest(acoustic_weights):
        raise UserError(
            f"{desc} was trained on another acoustic model than {acoustic_weights}; retrain it "
            "('mel2mel train texture') or remove it"
        )
    if not weights.is_file():
        raise UserError(f"{desc}: weights file {weights} is missing")
    model = TexturePostnet(TextureConfig.from_dict(doc["config"]))
    model.load_state_dict(load_file(str(weights), device=str(device)))
    model.metadata = dict(doc.get("metadata", {}))
    model.default_strength = float(doc.get("default_strength", 1.0))
    if doc.get("instrument_strengths"):
        model.instrument_strengths = InstrumentStrengths.from_list(doc["instrument_strengths"])
    return model.to(device).eval()


# -- vocoders -------------------------------------------------------------------------------


def _build_vocoder(kind: str, config: Mapping[str, Any]) -> Vocoder:
    # Imported here: `import mel2mel.models` should not import the vocoders.
    if kind == "fast":
        from mel2mel.vocoders.fast import FastVocoder, FastVocoderConfig

        return FastVocoder(FastVocoderConfig.from_dict(config))
    from mel2mel.vocoders.wavenet import WaveNet, WaveNetConfig

    return WaveNet(WaveNetConfig.from_dict(config))


def save_vocoder(
    model: Vocoder, path: PathLike, metadata: Mapping[str, Any] | None = None
) -> tuple[Path, Path]:
    """Export a trained fast vocoder or WaveNet to the stem ``path``; returns
    ``(weights, json)``. ``metadata``: JSON-serializable extras (training step, data, ...)."""
    if model.kind not in VOCODER_STEMS:
        raise ValueError(f"cannot export a {type(model).__name__}")
    weights, desc = stem_paths(path)
    doc = {
        "format": FORMAT_VERSION,
        "format_version": FORMAT_VERSION,  # what older mel2mel reads; dropped next release
        "kind": model.kind,
        "config": model.config.to_dict(),
        "sample_rate": C.SAMPLE_RATE,
        "hop_length": C.HOP_LENGTH,
        "metadata": dict(metadata or {}),
    }
    return write_export(model, weights, desc, doc, {"kind": model.kind})


def load_vocoder(path: PathLike, device: str | torch.device = "cpu") -> Vocoder:
    """Load an exported vocoder (in eval mode) from its stem, JSON or safetensors path.

    Raises
    ------
    UserError
        If a file is missing or does not describe a vocoder of this package.
    """
    weights, desc = stem_paths(path)
    for p in (desc, weights):
        if not p.is_file():
            raise UserError(f"vocoder file not found: {p}")
    doc = read_export(desc, tuple(VOCODER_STEMS), "an exported mel2mel vocoder")
    if (
        doc.get("sample_rate", C.SAMPLE_RATE) != C.SAMPLE_RATE
        or doc.get("hop_length", C.HOP_LENGTH) != C.HOP_LENGTH
    ):
        raise UserError(f"{desc} was trained for other signal settings")
    try:
        model = _build_vocoder(doc["kind"], doc["config"])
        model.load_state_dict(load_file(str(weights)))
    except (ValueError, KeyError, RuntimeError) as err:
        raise UserError(f"cannot load {weights}: {err}") from err
    caveat = (doc.get("metadata") or {}).get("warning")
    if caveat:  # e.g. weights trained far too briefly to sound right
        warnings.warn(f"{desc.name}: {caveat}", stacklevel=2)
    return model.to(device).eval()


def vocoder_path(kind: str) -> Path:
    """Stem of the shipped weights of ``kind`` (``"fast"`` or ``"wavenet"``)."""
    return pretrained.path(VOCODER_STEMS[kind])


def load_pretrained_vocoder(kind: str, device: str | torch.device = "cpu") -> Vocoder:
    """The shipped vocoder of ``kind``; Griffin-Lim needs no weights.

    Raises
    ------
    UserError
        If the weights of a neural vocoder are not installed.
    """
    if kind == "griffinlim":
        from mel2mel.vocoders.griffinlim import GriffinLim

        return GriffinLim().to(device)
    if kind not in VOCODER_STEMS:
        raise UserError(f"unknown vocoder {kind!r}; choose one of {', '.join(VOCODER_KINDS)}")
    weights, desc = stem_paths(vocoder_path(kind))
    if not desc.is_file() or not weights.is_file():
        raise UserError(
            f"no pretrained {kind} vocoder is installed (expected {desc} and {weights}); pass "
            "--model PATH to an exported one, or use --vocoder griffinlim"
        )
    return load_vocoder(desc, device)
