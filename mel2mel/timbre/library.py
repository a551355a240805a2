"""The user timbre library: named embedding vectors fitted by ``mel2mel timbre learn``.

Each entry is one small JSON file, ``<root>/<key>.json``, where ``key`` is the name
case-folded with every run of other characters than letters and digits turned into ``-``
(``"My Cello"`` -> ``my-cello.json``), the same folding that timbre names get when they are
resolved (:func:`mel2mel.instruments.normalize_name`)::

    {
      "format": 1,
      "name": "My Cello",
      "vector": [0.412, -0.388],        # the embedding, E floats
      "model": "sha256:1f0c...",        # model_fingerprint() of the model it was fitted on
      "created": "2026-11-25T12:00:00+00:00",
      "source": {"audio": "cello.wav", "midi": "cello.mid", "start": 0.0, "duration": 30.0},
      "mel_error_db": 4.21              # mean |log-mel error| of the fit, in dB
    }

A vector only means something to the model it was fitted on, so every entry records that
model's fingerprint (a hash of its weights and config) and :class:`mel2mel.timbre.space.TimbreSpace`
refuses entries of another model. The root is ``$MEL2MEL_HOME/timbres``, else
``$XDG_DATA_HOME/mel2mel/timbres``, else ``~/.local/share/mel2mel/timbres``. Files are written
atomically.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mel2mel.errors import UserError
from mel2mel.fileio import atomic_write
from mel2mel.instruments import normalize_name
from mel2mel.timbre.spec import parse_coordinates

FORMAT_VERSION = 1
MAX_NAME = 64
NAME_CHARS = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.+'()-]*")


def default_root() -> Path:
    """The library folder used when none is given (see the module docstring)."""
    if os.environ.get("MEL2MEL_HOME"):
        return Path(os.environ["MEL2MEL_HOME"]).expanduser() / "timbres"
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "mel2mel" / "timbres"


def check_name(name: str) -> str:
    """The stripped ``name`` if it can name a user timbre.

    Raises
    ------
    UserError
        Unless it is 1-64 characters of letters, digits, spaces and ``_ . + ' ( ) -``,
        starting with a letter or digit and holding at least one letter, and cannot be read
        as coordinates (``=``, ``@``, ``,`` and path separators belong to timbre syntax).
    """
    text = str(name).strip()
    if not (0 < len(text) <= MAX_NAME and NAME_CHARS.fullmatch(text)):
        raise UserError(
            f"bad timbre name {name!r}: use up to {MAX_NAME} letters, digits, spaces and "
            "_ . + ' ( ) -, starting with a letter or digit (no / , = @)"
        )
    if not re.search(r"[A-Za-z]", text) or parse_coordinates(text) is not None:
        raise UserError(f"bad timbre name {name!r}: it must contain a letter and not be a number")
    return text


def name_key(name: str) -> str:
    """The file stem of a name: ``"My Cello"`` -> ``"my-cello"``."""
    return normalize_name(name).replace(" ", "-")


@dataclass(frozen=True)
class UserTimbre:
    """One library entry (see the module docstring for the fields)."""

    name: str
    vector: tuple[float, ...]
    model: str
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    source: dict[str, Any] = field(default_factory=dict)
    mel_error_db: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the entry."""
        return {"format": FORMAT_VERSION, **asdict(self), "vector": list(self.vector)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UserTimbre:
        """Parse :meth:`to_dict`'s object; ``ValueError``/``KeyError``/``TypeError`` if bad."""
        if data.get("format") != FORMAT_VERSION:
            raise ValueError(f"unknown format {data.get('format')!r}")
        vector = tuple(float(v) for v in data["vector"])
        if not vector or not np.all(np.isfinite(vector)):
            raise ValueError("the vector must be finite numbers")
        error = data.get("mel_error_db")
        return cls(
            name=check_name(data["name"]),
            vector=vector,
            model=str(data["model"]),
            created=str(data.get("created", "")),
            source=dict(data.get("source") or {}),
            mel_error_db=None if error is None else float(error),
        )


class TimbreLibrary:
    """The user timbres in a folder.

    Parameters
    ----------
    root:
        The folder (created on the first :meth:`save`); default :func:`default_root`.
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = default_root() if root is None else Path(root).expanduser()

    def __repr__(self) -> str:
        return f"TimbreLibrary({str(self.root)!r})"

    def path(self, name: str) -> Path:
        """The file of ``name`` (checked with :func:`check_name`)."""
        return self.root / f"{name_key(check_name(name))}.json"

    def _read(self, path: Path) -> UserTimbre:
        try:
            return UserTimbre.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError,
                UserError) as err:  # fmt: skip
            error = UserError(f"unreadable user timbre {path}: {err}")
            error.public = f"the user timbre {path.stem!r} is unreadable"
            raise error from None

    def list(self, model: str | None = None) -> list[UserTimbre]:
        """Every readable entry, by name; only those fitted on ``model`` (a fingerprint) if
        given. Unreadable files are skipped with a warning."""
        if not self.root.is_dir():
            return []
        entries = []
        for path in sorted(self.root.glob("*.json")):
            try:
                entry = self._read(path)
            except UserError as err:
                warnings.warn(str(err), stacklevel=2)
                continue
            if model is None or entry.model == model:
                entries.append(entry)
        return sorted(entries, key=lambda e: normalize_name(e.name))

    def find(self, name: str) -> UserTimbre | None:
        """The entry called ``name`` (compared as :func:`name_key`), or ``None``."""
        try:
            path = self.path(name)
        except UserError:
            return None
        return self._read(path) if path.is_file() else None

    def get(self, name: str) -> UserTimbre:
        """The entry called ``name``; a :class:`UserError` if there is none or it is bad."""
        path = self.path(name)
        if not path.is_file():
            raise UserError(f"no user timbre named {name!r} in {self.root}")
        return self._read(path)

    def check_writable(self) -> None:
        """Create the folder if needed and make sure entries can be written to it, so that a
        long fit does not end in an unwritable library."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.root):
                pass
        except OSError as err:
            raise UserError(
                f"cannot write to the timbre library {self.root}: {err.strerror or err}"
            ) from None

    def save(self, timbre: UserTimbre, overwrite: bool = False) -> Path:
        """Write ``timbre`` atomically; refuses to replace an entry unless ``overwrite``."""
        path = self.path(timbre.name)
        if path.exists() and not overwrite:
            raise UserError(f"a user timbre named {timbre.name!r} exists; pass -f to replace it")
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(timbre.to_dict(), indent=2) + "\n"
        atomic_write(path, lambda tmp: Path(tmp).write_text(text), ".json")
        return path

    def remove(self, name: str) -> UserTimbre:
        """Delete the entry called ``name`` and return it."""
        entry = self.get(name)
        self.path(name).unlink()
        return entry
