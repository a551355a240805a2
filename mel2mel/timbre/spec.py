"""Timbre specifications: from what a user types to an embedding per frame.

A timbre is a point of the acoustic model's instrument-embedding space (2-D for the paper's ten
instruments). Users name it in several ways, all resolved against the instruments of a loaded
model by :class:`~mel2mel.timbre.space.TimbreSpace`:

* an **instrument name**, case-insensitive and ignoring punctuation (``"grand piano"``,
  ``"Grand-Piano"``), a short **alias** (``"piano"``, ``"organ"``, ``"vibes"``, ``"rhodes"``,
  ``"square"``, ...; see :data:`ALIASES`) or a **General MIDI program name**
  (``"Acoustic Grand Piano"``, ``"Lead 1 (square)"``): aliases and GM names resolve through
  their 0-based GM program and only to an instrument the model was trained on;
* a **program number**, ``56`` or ``"56"`` (0-based, as in the paper);
* a **user timbre** by name (``"my-cello"``): a vector fitted to a recording by
  ``mel2mel timbre learn`` and kept in the :mod:`~mel2mel.timbre.library` (or given to
  :class:`~mel2mel.timbre.space.TimbreSpace` as ``user_timbres``); the model's own names,
  aliases and programs come first, and a library entry fitted on another model is refused;
* raw **coordinates**, a sequence of ``E`` floats or a string ``"x,y"``;
* a weighted **mix**, ``"trumpet=0.3,vibraphone=0.7"`` or ``{"trumpet": 0.3, ...}``:
  the weights (non-negative, not all zero) are normalized to sum to one and the embeddings
  averaged with them;
* a **morph** over time, ``"trumpet@0s,vibraphone@30s"`` or :class:`Morph`: the embedding
  moves linearly between keypoints given in seconds of the piece (MIDI time, so
  ``--start`` does not shift them) and is held before the first and after the last.
  A keypoint may be any of the forms above (``"0.1,0.2@5s"``, ``"trumpet=0.5,organ=0.5@9s"``);
  keypoints are separated by commas (or semicolons) and their times must not decrease; equal
  times make an instant jump.

:meth:`~mel2mel.timbre.space.TimbreSpace.resolve` turns any of these into a :class:`Timbre`, whose
:meth:`Timbre.at_frames` gives the ``float32[E x T]`` embedding of any run of frames: exactly
what :meth:`mel2mel.models.Mel2Mel.forward` takes as a per-frame ``embedding``.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np

from mel2mel import constants as C
from mel2mel import validate
from mel2mel.errors import UserError

# Short names -> 0-based GM program. Each applies only when the model has an instrument with
# that program; the first such instrument is used.
ALIASES: dict[str, int] = {
    "piano": 0, "grand": 0, "acoustic piano": 0,
    "electric piano": 4, "epiano": 4, "e piano": 4, "rhodes": 4,
    "vibes": 11, "vibraphone": 11,
    "organ": 19, "pipe organ": 19,
    "guitar": 24, "nylon guitar": 24, "classical guitar": 24,
    "pizzicato": 45, "pizz": 45,
    "harp": 46,
    "strings": 48, "string section": 48,
    "trumpet": 56,
    "lead": 80, "square": 80, "square lead": 80, "synth": 80,
}  # fmt: skip


def parse_time(text: str | float) -> float:
    """Seconds from ``12``, ``"12"``, ``"12.5s"``, ``"500ms"`` or ``"1:30"`` (minutes:seconds).

    Raises
    ------
    UserError
        If the text is not one of those forms or the time is not in 0 ..
        :data:`~mel2mel.validate.MAX_SECONDS` (a day).
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip().lower()
        try:
            if ":" in s:
                minutes, seconds = s.split(":")
                value = 60.0 * validate.integer(minutes, "minutes", 0, 10**6) + float(seconds)
            elif s.endswith("ms"):
                value = float(s[:-2]) / 1000.0
            else:
                value = float(s.removesuffix("s"))
        except (ValueError, UserError):
            msg = f"bad time {str(text)[:40]!r}: expected seconds like 12.5, 12.5s or 1:30"
            raise UserError(msg) from None
    if not (math.isfinite(value) and 0 <= value <= validate.MAX_SECONDS):
        raise UserError(
            f"bad time {str(text)[:40]!r}: must be a finite number of seconds in "
            f"0 .. {validate.MAX_SECONDS:g}"
        )
    return value


def parse_coordinates(text: str) -> list[float] | None:
    """``"0.5,-1.2"`` (commas/spaces, optional brackets) -> floats; ``None`` if not numbers.

    ``nan`` and ``inf`` parse (as numbers that the callers then refuse as coordinates), so
    that ``"nan,1"`` is reported as bad coordinates, not as an unknown name.
    """
    parts = text.strip().strip("[]()").replace(",", " ").split()
    try:
        values = [float(p) for p in parts]
    except ValueError:
        return None
    return values or None


def parse_mix(text: str) -> dict[str, float]:
    """``"trumpet=0.3,vibraphone=0.7"`` -> ``{"trumpet": 0.3, "vibraphone": 0.7}`` (unnormalized).

    Raises
    ------
    UserError
        If an entry is not ``NAME=WEIGHT`` with a number as weight, or a name repeats.
    """
    mix: dict[str, float] = {}
    for entry in re.split(r"[,;]", text):
        name, sep, weight = entry.partition("=")
        name = name.strip()
        try:
            value = float(weight) if sep and name else math.nan
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise UserError(
                f"bad mix {text!r}: each entry must be NAME=WEIGHT, e.g. trumpet=0.3,vibes=0.7"
            )
        if name in mix:
            raise UserError(f"bad mix {text!r}: {name!r} appears twice")
        mix[name] = value
    return mix


@dataclass(frozen=True)
class Morph:
    """A timbre path over time: ``(timbre, seconds)`` keypoints, times not decreasing."""

    keypoints: tuple[tuple[Any, float], ...]

    def __post_init__(self) -> None:
        if not self.keypoints:
            raise UserError("a morph needs at least one TIMBRE@TIME keypoint")
        times = [parse_time(t) for _, t in self.keypoints]
        if any(b < a for a, b in itertools.pairwise(times)):
            raise UserError(f"morph keypoint times must not decrease, got {times}")
        keypoints = tuple((s, t) for (s, _), t in zip(self.keypoints, times, strict=True))
        object.__setattr__(self, "keypoints", keypoints)

    @classmethod
    def parse(cls, text: str) -> Morph:
        """``"trumpet@0s,vibraphone@30s"`` -> :class:`Morph` (see the module docstring)."""
        keypoints: list[tuple[str, float]] = []
        pending: list[str] = []
        for piece in re.split(r"[,;]", text):
            pending.append(piece)
            if "@" in piece:
                spec, _, when = ",".join(pending).rpartition("@")
                if not spec.strip():
                    raise UserError(f"bad morph {text!r}: keypoint {when!r} has no timbre")
                keypoints.append((spec.strip(), parse_time(when)))
                pending = []
        if pending or not keypoints:
            raise UserError(
                f"bad morph {text!r}: expected TIMBRE@TIME keypoints, e.g. trumpet@0s,vibes@30s"
            )
        return cls(tuple(keypoints))


TimbreSpec: TypeAlias = (
    "str | int | Sequence[float] | np.ndarray | Mapping[str | int, float] | Morph | Timbre"
)


@dataclass(frozen=True, eq=False)
class Timbre:
    """A resolved timbre: embedding keypoints over time (one keypoint: a fixed timbre).

    Attributes
    ----------
    points: float32[K x E]
        Embeddings of the keypoints.
    times: float64[K]
        Their times in seconds of the piece, not decreasing.
    label:
        Human-readable description, for messages.
    """

    points: np.ndarray
    times: np.ndarray
    label: str

    @property
    def dim(self) -> int:
        """Embedding size E."""
        return int(self.points.shape[1])

    @property
    def is_static(self) -> bool:
        """Whether the timbre is the same at every frame."""
        return len(self.points) == 1 or bool(np.all(self.points == self.points[0]))

    def vector(self) -> np.ndarray:
        """The embedding ``float32[E]`` of a static timbre (the first keypoint otherwise)."""
        return self.points[0]

    def at_frames(self, start: int, count: int) -> np.ndarray:
        """Embeddings of frames ``start .. start + count - 1``, ``float32[E x count]``.

        Frame ``f`` is at ``f / FRAME_RATE`` seconds; between keypoints the embedding is
        interpolated linearly, before the first and after the last it is held.
        """
        t = (start + np.arange(count, dtype=np.float64)) / C.FRAME_RATE
        last = len(self.times) - 1
        idx = np.searchsorted(self.times, t, side="right")
        left, right = np.clip(idx - 1, 0, last), np.clip(idx, 0, last)
        span = self.times[right] - self.times[left]
        w = np.divide(t - self.times[left], span, out=np.zeros_like(t), where=span > 0)
        w = np.clip(w, 0.0, 1.0)[:, None]
        out = self.points[left] * (1.0 - w) + self.points[right] * w
        return np.ascontiguousarray(out.T, dtype=np.float32)


def parse_track_specs(items: Sequence[str]) -> dict[int, str]:
    """``["1=trumpet", "2=0.1,0.2"]`` -> ``{1: "trumpet", 2: "0.1,0.2"}`` (syntax only).

    Raises
    ------
    UserError
        If an item is not ``N=TIMBRE`` with a non-negative integer ``N``, or ``N`` repeats.
    """
    tracks: dict[int, str] = {}
    for item in items:
        key, sep, spec = item.partition("=")
        n = validate.program_number(key)
        if not sep or n is None or not spec.strip():
            raise UserError(f"bad --track {item[:60]!r}: expected N=TIMBRE, e.g. 1=trumpet")
        if n in tracks:
            raise UserError(f"--track {n} is given twice")
        tracks[n] = spec.strip()
    return tracks
