"""Texture post-net training: ``mel2mel train texture`` and ``mel2mel export texture``.

The post-net (:mod:`mel2mel.models.texture`) learns, against a discriminator, to turn a frozen
acoustic model's predicted log-mel into one with the frame-to-frame texture of real mels. The
loop (:mod:`mel2mel.train.texture_loop`) keeps the habits of the other trainers: reproducible
crops, warmup + cosine schedule, checkpoints with every state (exact resume, SIGTERM/Ctrl-C
checkpoint), ``metrics.jsonl`` + TensorBoard and ``torchrun``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mel2mel.errors import UserError
from mel2mel.train.settings import check_train_settings, settings_dict


@dataclass(frozen=True)
class TextureTrainConfig:
    """Hyperparameters of a texture run (shared fields as in
    :class:`mel2mel.train.config.TrainConfig`).

    ``acoustic`` is the frozen acoustic export whose predictions are textured (default: the
    shipped one). Losses of the post-net: least-squares adversarial (weight 1), feature
    matching on the discriminator's layers (``fm_weight``), and ``mean_weight`` times the L1
    distance between the post-net's output and its input after a moving average of
    ``mean_frames`` frames: texture may move a bin up and down, not shift its level; and
    ``change_weight`` times the L1 distance between the mean frame-to-frame change of the
    output and of the true mel, per crop and group of 10 bins, over frames with notes (a
    modulation statistic in the spirit of the global-variance and modulation-spectrum
    post-filters of speech synthesis): it holds the amount of texture to the instrument's,
    where the adversarial loss alone over-textured steady instruments. ``disc_channels``
    sizes the discriminator. ``init_from``: a texture checkpoint (or run directory), or an exported
    post-net (``.safetensors``/``.json``, e.g. to adapt the shipped one to a retrained acoustic
    model), whose post-net weights start the run; its discriminator and optimizers start afresh (to
    continue a run with all its state, resume it instead).
    """

    steps: int = 6000
    batch_size: int = 16
    crop_frames: int = 128
    lr: float = 2e-4
    min_lr: float = 2e-5
    warmup_steps: int = 100
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.5, 0.9)
    grad_clip: float = 10.0
    num_workers: int = 1
    seed: int = 0
    log_every: int = 50
    valid_every: int = 500
    valid_crop_frames: int = 512
    valid_crops_per_item: int = 1
    checkpoint_every: int = 250
    keep_checkpoints: int = 3
    fm_weight: float = 2.0
    mean_weight: float = 10.0
    mean_frames: int = 64
    change_weight: float = 10.0
    disc_channels: int = 16
    acoustic: str | None = None
    init_from: str | None = None

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "crop_frames", "log_every", "checkpoint_every")
        check_train_settings(self, (*positive, "mean_frames", "disc_channels"))

    def to_dict(self) -> dict[str, Any]:
        return settings_dict(self)


@dataclass(frozen=True)
class TextureRunConfig:
    """The post-net's config fields (:class:`~mel2mel.models.texture.TextureConfig`; its
    ``embedding_dim`` is set from the acoustic model) and the training settings."""

    model: dict[str, Any] = field(default_factory=dict)
    train: TextureTrainConfig = field(default_factory=TextureTrainConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", self.model_config().to_dict())

    def model_config(self) -> Any:
        from mel2mel.models.texture import TextureConfig

        return TextureConfig.from_dict({**TextureConfig().to_dict(), **self.model})

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model_config().to_dict(), "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TextureRunConfig:
        from mel2mel.models.config import _from_dict

        unknown = sorted(set(data) - {"model", "train"})
        if unknown:
            raise ValueError(f"unknown config section(s) {unknown}; valid: model, train")
        train = _from_dict(TextureTrainConfig, dict(data.get("train") or {}))
        return cls(model=dict(data.get("model") or {}), train=train)


# -- the command line ---------------------------------------------------------------------


def add_train_texture(sub: argparse._SubParsersAction) -> None:
    """``mel2mel train texture``."""
    from mel2mel.train.cli import add_run_arguments

    p = sub.add_parser(
        "texture",
        help="train the texture post-net of an acoustic model (adversarial)",
        description="Train the texture post-net on a dataset built by 'mel2mel data build': "
        "the frozen acoustic model (train.acoustic, default the shipped one) predicts every "
        "train and valid item once (cached in the run directory), then the post-net learns to "
        "give those mels the texture of the real ones. A run directory with a checkpoint is "
        "resumed automatically.",
    )
    add_run_arguments(p, sections="model or train")
    p.set_defaults(func=run_train_texture)


def load_texture_run_config(path: Path | None, overrides: list[str]) -> TextureRunConfig:
    """A :class:`TextureRunConfig` from a YAML file and ``--set`` overrides."""
    from mel2mel.train.cli import apply_overrides
    from mel2mel.train.config import read_config_mapping

    data = read_config_mapping(path) if path is not None else {}
    data = apply_overrides(data, overrides, sections=("model", "train"))
    try:
        return TextureRunConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise UserError(f"invalid texture config{f' {path}' if path else ''}: {err}") from err


def run_train_texture(args: argparse.Namespace) -> int:
    from mel2mel.train.cli import run_training
    from mel2mel.train.texture_loop import train_texture

    return run_training(
        args, train_texture, lambda: load_texture_run_config(args.config, args.overrides)
    )


def add_export_texture(sub: argparse._SubParsersAction) -> None:
    """``mel2mel export texture``."""
    from mel2mel.train.cli import add_export_arguments

    p = sub.add_parser(
        "texture",
        help="export a texture post-net checkpoint beside its acoustic model",
        description="Write <out>/<name>_texture.safetensors + .json from a texture checkpoint "
        "or run directory. The synthesizer uses <dir>/<name>_texture.* with the acoustic "
        "model <dir>/<name>.* it was trained on.",
    )
    add_export_arguments(p, "acoustic", "acoustic, the acoustic model's stem")
    p.add_argument(
        "--strength", type=float, default=1.0,
        help="the texture strength synthesizers use by default (1); choose it on the valid "
        "split, e.g. with benchmarks/eval_transcription.py --piece ... --texture S",
    )  # fmt: skip
    p.set_defaults(func=run_export_texture)


def run_export_texture(args: argparse.Namespace) -> int:
    from mel2mel.train.texture_loop import export_texture_checkpoint

    if not 0.0 <= args.strength <= 4.0:
        raise UserError(f"--strength must be between 0 and 4, got {args.strength}")
    weights, desc = export_texture_checkpoint(
        args.checkpoint, args.out, name=args.name, force=args.force, strength=args.strength
    )
    print(f"wrote {weights} and {desc}")
    return 0
