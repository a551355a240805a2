"""Config dataclasses from plain dicts (YAML, exported JSON): one strict reader for all."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


def config_from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """``cls(**data)`` for a config dataclass, naming unknown keys in a ValueError."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; valid: {sorted(names)}")
    return cls(**data)
