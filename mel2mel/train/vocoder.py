"""Vocoder training: ``mel2mel train vocoder --kind fast|wavenet`` and its export.

The same habits as the acoustic loop (:mod:`mel2mel.train.loop`): reproducible random crops of
a built dataset (here with their audio), AdamW with linear warmup and cosine decay, gradient
clipping, a tqdm bar or log lines, ``metrics.jsonl`` + TensorBoard, checkpoints holding
config + weights + optimizer + data position + RNG states (exact resume; SIGTERM or Ctrl-C
checkpoints and stops), and data-parallel training under ``torchrun``.

Each vocoder module supplies the per-batch loss (``training_losses``/``training_step``, see
``docs/VOCODERS.md``); this module owns everything else. Validation is the quantity users
hear: for the fast vocoder, copy-synthesis of fixed valid crops, scored as the L1 log-mel
error (nats and dB) of the re-analysed audio; for WaveNet, whose generation is too slow to
run inside training, the teacher-forced cross-entropy.

A run can start from exported weights (``train.init_from``: the stem of an export), which is
how a CPU run continues a model trained elsewhere.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mel2mel.errors import UserError
from mel2mel.train.settings import check_train_settings, settings_dict

DB_PER_NEPER = 20.0 / math.log(10.0)


@dataclass(frozen=True)
class VocoderTrainConfig:
    """Hyperparameters of a vocoder run (see :class:`mel2mel.train.config.TrainConfig` for the
    meaning of the shared fields). ``crop_frames`` crops of ``crop_frames * 128`` samples;
    ``valid_crops`` fixed crops of the valid split are scored at each validation."""

    steps: int = 12000
    batch_size: int = 8
    crop_frames: int = 96
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_steps: int = 200
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 10.0
    num_workers: int = 1
    seed: int = 0
    log_every: int = 50
    valid_every: int = 1000
    valid_crops: int = 64
    valid_crop_frames: int = 256
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    init_from: str | None = None

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "crop_frames", "log_every", "checkpoint_every")
        check_train_settings(self, positive)

    def to_dict(self) -> dict[str, Any]:
        return settings_dict(self)


@dataclass(frozen=True)
class VocoderRunConfig:
    """``kind`` (``fast`` or ``wavenet``), the model's config fields and the training settings."""

    kind: str = "fast"
    model: dict[str, Any] = field(default_factory=dict)
    train: VocoderTrainConfig = field(default_factory=VocoderTrainConfig)

    def __post_init__(self) -> None:
        if self.kind not in ("fast", "wavenet"):
            raise ValueError(f"unknown vocoder kind {self.kind!r}; choose fast or wavenet")
        # Validate, and store every field so that equal models have equal configs.
        object.__setattr__(self, "model", self.model_config().to_dict())

    def model_config(self) -> Any:
        from mel2mel.vocoders.fast import FastVocoderConfig
        from mel2mel.vocoders.wavenet import WaveNetConfig

        cls = FastVocoderConfig if self.kind == "fast" else WaveNetConfig
        return cls.from_dict({**cls().to_dict(), **self.model})

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model": self.model_config().to_dict(),
            "train": self.train.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VocoderRunConfig:
        from mel2mel.models.config import _from_dict  # (torch: not at CLI start-up)

        unknown = sorted(set(data) - {"kind", "model", "train"})
        if unknown:
            raise ValueError(f"unknown config section(s) {unknown}; valid: kind, model, train")
        return cls(
            kind=str(data.get("kind", "fast")),
            model=dict(data.get("model") or {}),
            train=_from_dict(VocoderTrainConfig, dict(data.get("train") or {})),
        )


# -- the command line ---------------------------------------------------------------------


def add_train_vocoder(sub: argparse._SubParsersAction) -> None:
    """``mel2mel train vocoder``."""
    from mel2mel.train.cli import add_run_arguments

    p = sub.add_parser(
        "vocoder",
        help="train a vocoder (log-mel -> audio) on a dataset's audio",
        description="Train the fast vocoder or WaveNet on crops of a dataset built by "
        "'mel2mel data build'. A run directory with a checkpoint is resumed automatically.",
    )
    p.add_argument("--kind", choices=["fast", "wavenet"], help="default: the config's, or fast")
    add_run_arguments(p, sections="kind, model or train")
    p.set_defaults(func=run_train_vocoder)


def load_vocoder_run_config(
    path: Path | None, overrides: list[str], kind: str | None
) -> VocoderRunConfig:
    """A :class:`VocoderRunConfig` from a YAML file, ``--set`` overrides and ``--kind``."""
    from mel2mel.train.cli import apply_overrides
    from mel2mel.train.config import read_config_mapping

    data = read_config_mapping(path) if path is not None else {}
    data = apply_overrides(data, overrides, sections=("model", "train"))
    if kind is not None:
        if data.get("kind", kind) != kind and path is not None:
            raise UserError(f"--kind {kind} contradicts kind: {data['kind']} in {path}")
        data["kind"] = kind
    try:
        return VocoderRunConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise UserError(f"invalid vocoder config{f' {path}' if path else ''}: {err}") from err


def run_train_vocoder(args: argparse.Namespace) -> int:
    from mel2mel.train.cli import run_training
    from mel2mel.train.vocoder_loop import train_vocoder

    return run_training(
        args,
        train_vocoder,
        lambda: load_vocoder_run_config(args.config, args.overrides, args.kind),
    )


def add_export_vocoder(sub: argparse._SubParsersAction) -> None:
    """``mel2mel export vocoder``."""
    from mel2mel.train.cli import add_export_arguments

    p = sub.add_parser(
        "vocoder",
        help="export a vocoder checkpoint",
        description="Write <out>/<name>.safetensors + <out>/<name>.json from a vocoder "
        "checkpoint or run directory. 'mel2mel vocode' and the synthesizer load the shipped "
        "ones from mel2mel/pretrained/{fast_vocoder,wavenet}.*.",
    )
    add_export_arguments(p, None, "fast_vocoder or wavenet")
    p.set_defaults(func=run_export_vocoder)


def run_export_vocoder(args: argparse.Namespace) -> int:
    from mel2mel.train.vocoder_loop import export_vocoder_checkpoint

    json_path, weights = export_vocoder_checkpoint(
        args.checkpoint, args.out, name=args.name, force=args.force
    )
    print(f"wrote {weights} and {json_path}")
    return 0
