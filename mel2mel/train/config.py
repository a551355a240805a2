"""Training configuration: frozen dataclasses read from YAML.

A run is described by a :class:`RunConfig` = model architecture + training hyperparameters::

    model:                 # AcousticConfig fields, optionally starting from a preset
      preset: paper
      embedding_dim: 2
    train:                 # TrainConfig fields
      steps: 2000
      batch_size: 16
      ...

``model.n_instruments`` is filled in from the dataset manifest when training starts, so a
YAML file does not need to know how many instruments a dataset holds. Unknown keys are errors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mel2mel.errors import UserError
from mel2mel.models.config import AcousticConfig, _from_dict
from mel2mel.train.losses import LOSSES, TANH_OFFSET, TANH_SCALE
from mel2mel.train.settings import check_train_settings, settings_dict


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one acoustic-model training run.

    Parameters
    ----------
    steps:
        Optimizer steps in the whole run (a resumed run continues up to this number).
    batch_size:
        Crops per step *per process*; the global batch is ``batch_size * world_size``.
    crop_frames:
        Frames per training crop (125 frames = 1 s).
    crops_per_item:
        Random crops drawn from each dataset item per epoch.
    instruments:
        Optional subset of the dataset's instruments (names, case-insensitive, or GM program
        numbers) to train on; ``None`` = all. The embedding table still has a row for every
        instrument of the dataset.
    lr, min_lr:
        Peak and final learning rate of the schedule: linear warmup from 0 over
        ``warmup_steps``, then cosine decay to ``min_lr`` at ``steps``.
    warmup_steps:
        Length of the linear warmup.
    weight_decay:
        AdamW decoupled weight decay, applied to matrices only (not biases, the embedding
        table or FiLM maps).
    betas:
        AdamW betas.
    grad_clip:
        Maximum global gradient norm (``0`` disables clipping).
    loss:
        ``abs``, ``log-abs`` or ``tanh-log-abs`` (see :mod:`mel2mel.train.losses`).
    tanh_offset, tanh_scale:
        Squashing constants of ``tanh-log-abs``.
    num_workers:
        DataLoader worker processes per training process.
    seed:
        Seeds the model initialization, the data order and the crops.
    log_every:
        Steps between training-loss log lines (TensorBoard, ``metrics.jsonl``).
    valid_every:
        Steps between validations (``0`` disables them).
    valid_batches:
        Batches of fixed validation crops per validation (``0`` = the whole valid split).
    valid_crops_per_item:
        Fixed crops per valid item, spread evenly over the piece.
    checkpoint_every:
        Steps between checkpoints (a checkpoint is also written at the end and on SIGTERM).
    keep_checkpoints:
        Numbered checkpoints to keep besides ``checkpoint.pt`` (``0`` keeps all).
    init_from:
        Optional exported model (prefix, directory, ``.safetensors``/``.json``) or checkpoint
        (``.pt`` file or run directory) whose weights initialize a fresh run wherever name and
        shape match (see :func:`mel2mel.train.loop.init_from_pretrained`); ignored on resume.
    """

    steps: int = 2000
    batch_size: int = 16
    crop_frames: int = 512
    crops_per_item: int = 1
    instruments: tuple[str, ...] | None = None
    lr: float = 2e-3
    min_lr: float = 2e-5
    warmup_steps: int = 150
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    loss: str = "tanh-log-abs"
    tanh_offset: float = TANH_OFFSET
    tanh_scale: float = TANH_SCALE
    num_workers: int = 1
    seed: int = 0
    log_every: int = 25
    valid_every: int = 250
    valid_batches: int = 0
    valid_crops_per_item: int = 2
    checkpoint_every: int = 250
    keep_checkpoints: int = 3
    init_from: str | None = None

    def __post_init__(self) -> None:
        if self.instruments is not None:
            object.__setattr__(self, "instruments", tuple(str(i) for i in self.instruments))
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose from {', '.join(LOSSES)}")
        positive = ("steps", "batch_size", "crop_frames", "crops_per_item", "log_every")
        check_train_settings(self, (*positive, "valid_crops_per_item", "checkpoint_every"))

    def to_dict(self) -> dict[str, Any]:
        """Plain ``dict`` of the fields (tuples become lists, for YAML/JSON)."""
        return settings_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict, rejecting unknown keys."""
        return _from_dict(cls, data)


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run needs besides the data: model + training settings."""

    model: AcousticConfig = field(default_factory=AcousticConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """``{"model": {...}, "train": {...}}``."""
        return {"model": self.model.to_dict(), "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build from ``{"model": {...}, "train": {...}}``; ``model.preset`` picks a base."""
        unknown = sorted(set(data) - {"model", "train"})
        if unknown:
            raise ValueError(f"unknown config section(s) {unknown}; valid: ['model', 'train']")
        model = dict(data.get("model") or {})
        preset = model.pop("preset", None)
        base = AcousticConfig.preset(preset) if preset else AcousticConfig()
        base_dict = base.to_dict()
        bad = sorted(set(model) - set(base_dict))
        if bad:
            raise ValueError(f"unknown AcousticConfig field(s) {bad}; valid: {sorted(base_dict)}")
        return cls(
            model=AcousticConfig.from_dict({**base_dict, **model}),
            train=TrainConfig.from_dict(dict(data.get("train") or {})),
        )


def read_config_mapping(path: str | os.PathLike) -> dict[str, Any]:
    """The raw mapping of a YAML run config; every problem becomes a :class:`UserError`."""
    try:
        import yaml
    except ImportError as err:
        raise UserError("reading YAML configs needs pyyaml: pip install 'mel2mel[train]'") from err
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"cannot read config {path}: {err}") from err
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config must be a mapping with 'model' and 'train' sections")
    return data


def load_run_config(path: str | os.PathLike) -> RunConfig:
    """Read and check a YAML run config; every problem becomes a :class:`UserError`."""
    try:
        return RunConfig.from_dict(read_config_mapping(path))
    except (TypeError, ValueError) as err:
        raise UserError(f"{path}: {err}") from err
