"""Checks shared by the training configs (no torch import: the CLI parses configs at start-up)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any


def check_train_settings(train: Any, positive: Iterable[str]) -> None:
    """Validate what every ``train`` section shares: positive counts, the warmup + cosine
    schedule (``warmup_steps`` in ``[0, steps]``, ``min_lr`` in ``[0, lr]``) and AdamW's betas.

    Also turns YAML's list of betas into the tuple a frozen dataclass can hash.

    Raises
    ------
    ValueError
        Naming the first bad field as ``train.NAME``.
    """
    object.__setattr__(train, "betas", tuple(float(b) for b in train.betas))
    for name in positive:
        if getattr(train, name) < 1:
            raise ValueError(f"train.{name} must be >= 1")
    if not 0 <= train.warmup_steps <= train.steps:
        raise ValueError("train.warmup_steps must be in [0, steps]")
    if not 0 <= train.min_lr <= train.lr:
        raise ValueError("train.min_lr must be in [0, lr]")
    if len(train.betas) != 2:
        raise ValueError("train.betas must have two values")


def settings_dict(train: Any) -> dict[str, Any]:
    """A ``train`` dataclass as a plain dict for YAML/JSON: its tuples (betas, instrument
    lists) become lists."""
    d = dataclasses.asdict(train)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
