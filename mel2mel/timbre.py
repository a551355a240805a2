"""Timbre specifications: from what a user types to an embedding per frame.

A timbre is a point of the acoustic model's instrument-embedding space (2-D for the paper's ten
instruments). Users name it in several ways, all resolved against the instruments of a loaded
model by :class:`TimbreSpace`:

* an **instrument name**, case-insensitive and ignoring punctuation (``"grand piano"``,
  ``"Grand-Piano"``), a short **alias** (``"piano"``, ``"organ"``, ``"vibes"``, ``"rhodes"``,
  ``"square"``, ...; see :data:`ALIASES`) or a **General MIDI program name**
  (``"Acoustic Grand Piano"``, ``"Lead 1 (square)"``): aliases and GM names resolve through
  their 0-based GM program and only to an instrument the model was trained on;
* a **program number**, ``56`` or ``"56"`` (0-based, as in the paper);
* a **user timbre** by name (``"my-cello"``): a vector fitted to a recording by
  ``mel2mel timbre learn`` and kept in the :mod:`~mel2mel.timbre_library` (or given to
  :class:`TimbreSpace` as ``user_timbres``); the model's own names, aliases and programs come
  first, and a library entry fitted on another model is refused;
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

:meth:`TimbreSpace.resolve` turns any of these into a :class:`Timbre`, whose
:meth:`Timbre.at_frames` gives the ``float32[E x T]`` embedding of any run of frames: exactly
what :meth:`mel2mel.models.Mel2Mel.forward` takes as a per-frame ``embedding``.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np

from mel2mel import constants as C
from mel2mel import validate
from mel2mel.errors import UserError
from mel2mel.models.acoustic import Instrument, UnknownInstrumentError

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


def normalize_name(text: str) -> str:
    """Case-folded ``text`` with every run of non-alphanumerics turned into one space."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.casefold()).split())


@functools.cache
def gm_program_names() -> dict[str, int]:
    """Normalized General MIDI program names (``"lead 1 square"``, ...) -> 0-based program."""
    from pretty_midi.constants import INSTRUMENT_MAP

    return {normalize_name(name): program for program, name in enumerate(INSTRUMENT_MAP)}


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


@dataclass(frozen=True)
class InstrumentInfo:
    """One trained instrument: table row, name, GM program, embedding and the aliases for it."""

    index: int
    name: str
    program: int | None
    embedding: tuple[float, ...]
    aliases: tuple[str, ...]


class TimbreSpace:
    """The instruments and embedding table of an acoustic model, and timbre resolution.

    Parameters
    ----------
    instruments:
        Names and programs of the table rows.
    table: float[N x E]
        The learned embeddings (``Mel2Mel.embedding.weight``).
    user_timbres:
        Extra named points ``{name: float[E]}``, resolved by name (after the instruments).
    library:
        A :class:`~mel2mel.timbre_library.TimbreLibrary` consulted, lazily, for names that
        nothing else matches; entries whose ``model`` differs from ``fingerprint`` are refused.
    fingerprint:
        :func:`~mel2mel.timbre_library.model_fingerprint` of the model, or a function that
        computes it when first needed.
    """

    def __init__(
        self,
        instruments: Sequence[Instrument],
        table: np.ndarray,
        user_timbres: Mapping[str, Sequence[float]] | None = None,
        library: Any = None,
        fingerprint: str | Callable[[], str] | None = None,
    ) -> None:
        self.table = np.asarray(table, dtype=np.float32)
        if self.table.ndim != 2 or self.table.shape[0] != len(instruments):
            raise ValueError(f"table {self.table.shape} does not match {len(instruments)} names")
        self.user: dict[str, tuple[str, np.ndarray]] = {}
        for name, vector in (user_timbres or {}).items():
            v = np.asarray(vector, dtype=np.float32).reshape(-1)
            if v.size != self.dim:
                raise ValueError(f"user timbre {name!r} has {v.size} values, not {self.dim}")
            self.user[normalize_name(name)] = (name, v)
        self.library = library
        self._fingerprint = fingerprint
        self.instruments = list(instruments)
        self._by_name = {normalize_name(i.name): k for k, i in enumerate(self.instruments)}
        self._by_program: dict[int, int] = {}
        for k, inst in enumerate(self.instruments):
            if inst.program is not None:
                self._by_program.setdefault(inst.program, k)

    @classmethod
    def from_model(
        cls,
        model: Any,
        library: Any = None,
        user_timbres: Mapping[str, Sequence[float]] | None = None,
    ) -> TimbreSpace:
        """The space of a :class:`~mel2mel.models.Mel2Mel` (user timbres as in the class)."""
        from mel2mel.timbre_library import model_fingerprint

        table = model.embedding.weight.detach().float().cpu().numpy()
        fingerprint = functools.partial(model_fingerprint, model)
        return cls(model.instruments, table, user_timbres, library, fingerprint)

    def with_library(self, library: Any) -> TimbreSpace:
        """This space, resolving unknown names in ``library`` too."""
        users = {name: v for name, v in self.user.values()}
        return TimbreSpace(self.instruments, self.table, users, library, self._fingerprint)

    @property
    def fingerprint(self) -> str | None:
        """The model's fingerprint, if known."""
        if callable(self._fingerprint):
            self._fingerprint = self._fingerprint()
        return self._fingerprint

    def user_timbre(self, name: str) -> tuple[np.ndarray, str] | None:
        """``(float32[E], name)`` of a user timbre, or ``None`` if there is none by that name.

        Raises
        ------
        UserError
            If the library entry was fitted on another model or has another size.
        """
        key = normalize_name(name)
        if key in self.user:
            label, vector = self.user[key]
            return vector, label
        entry = None if self.library is None else self.library.find(name)
        if entry is None:
            return None
        if entry.model != self.fingerprint or len(entry.vector) != self.dim:
            raise UserError(
                f"user timbre {entry.name!r} was fitted on another acoustic model "
                f"({entry.model}; this one is {self.fingerprint}): fit it again for this model "
                "with 'mel2mel timbre learn'"
            )
        return self.check_vector(entry.vector, f"user timbre {entry.name!r}"), entry.name

    def named(self, query: str | int) -> tuple[np.ndarray, str]:
        """``(float32[E], label)`` of an instrument (as :meth:`index`) or a user timbre."""
        try:
            k = self.index(query)
        except UnknownInstrumentError as err:
            found = self.user_timbre(query) if isinstance(query, str) else None
            if found is not None:
                return found
            if self.library is None or not isinstance(query, str):
                raise
            stored = [e.name for e in self.library.list(model=self.fingerprint)]
            if not stored:
                raise
            error = UnknownInstrumentError(f"{err}; in the timbre library: {', '.join(stored)}")
            error.public = str(err)  # the library's names are the operator's
            raise error from None
        return self.table[k], self.instruments[k].name

    @property
    def dim(self) -> int:
        """Embedding size E."""
        return int(self.table.shape[1])

    def aliases(self, index: int) -> tuple[str, ...]:
        """The aliases of :data:`ALIASES` that resolve to row ``index``."""
        return tuple(a for a, p in ALIASES.items() if self._by_program.get(p) == index)

    def describe(self) -> list[InstrumentInfo]:
        """Every instrument with its program, embedding coordinates and aliases."""
        return [
            InstrumentInfo(k, i.name, i.program, tuple(map(float, self.table[k])), self.aliases(k))
            for k, i in enumerate(self.instruments)
        ]

    def _unknown(self, query: object, program: int | None = None) -> UnknownInstrumentError:
        head = f"unknown instrument {query!r}"
        if program is not None:
            from pretty_midi.constants import INSTRUMENT_MAP

            gm = f" {INSTRUMENT_MAP[program]!r}" if 0 <= program < len(INSTRUMENT_MAP) else ""
            head += f" (GM program {program}{gm} is not a trained instrument)"
        names = ", ".join(
            i.name if i.program is None else f"{i.name} ({i.program})" for i in self.instruments
        )
        aliases = [a for k in range(len(self.instruments)) for a in self.aliases(k)]
        tail = f"; aliases: {', '.join(aliases)}" if aliases else ""
        users = [n for n, _ in self.user.values()]
        tail += f"; user timbres: {', '.join(users)}" if users else ""
        return UnknownInstrumentError(f"{head}; valid: {names}{tail}")

    def index(self, query: str | int) -> int:
        """Table row of an instrument name, alias, GM program name or 0-based program number.

        Raises
        ------
        UnknownInstrumentError
            (a :class:`~mel2mel.errors.UserError`) listing the valid names and aliases.
        """
        if isinstance(query, int | np.integer) and not isinstance(query, bool):
            program = int(query)
        elif isinstance(query, str) and validate.program_number(query) is not None:
            program = int(query.strip())
        else:
            key = normalize_name(str(query))
            if key in self._by_name:
                return self._by_name[key]
            program = ALIASES.get(key, gm_program_names().get(key, -1))
            if program < 0:
                raise self._unknown(query)
        if program not in self._by_program:
            raise self._unknown(query, program)
        return self._by_program[program]

    def embedding(self, spec: TimbreSpec) -> tuple[np.ndarray, str]:
        """A fixed timbre (name, program, coordinates or mix) -> (``float32[E]``, label)."""
        if isinstance(spec, Mapping):
            return self._mix(dict(spec), str(dict(spec)))
        if isinstance(spec, str):
            text = spec.strip()
            if "=" in text:
                return self._mix(parse_mix(text), text)
            coords = None if validate.program_number(text) is not None else parse_coordinates(text)
            if coords is not None:
                return self._coordinates(coords, text), f"({text})"
            return self.named(text)
        if isinstance(spec, int | np.integer) and not isinstance(spec, bool):
            k = self.index(int(spec))
            return self.table[k], self.instruments[k].name
        try:
            values = [float(v) for v in np.asarray(spec, dtype=np.float64).reshape(-1)]
            ok = np.asarray(spec).ndim == 1
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise UserError(
                f"cannot use {spec!r} as a timbre: give a name, program, coordinates, mix or morph"
            )
        return self._coordinates(values, str(spec)), f"({', '.join(f'{v:g}' for v in values)})"

    @functools.cached_property
    def box(self) -> tuple[np.ndarray, np.ndarray]:
        """``(lo, hi)`` per axis of the coordinates accepted as a timbre: the instruments'
        bounding box widened by :data:`~mel2mel.validate.COORD_MARGIN` of its size."""
        return validate.coordinate_box(self.table)

    def check_vector(self, vector: Any, what: str = "timbre coordinates") -> np.ndarray:
        """``vector`` as ``float32[E]`` if it lies in :attr:`box`, else a UserError."""
        return validate.within_box(vector, self.box, what)

    def _coordinates(self, values: Sequence[float], text: str) -> np.ndarray:
        if len(values) != self.dim or not all(math.isfinite(v) for v in values):
            raise UserError(
                f"timbre coordinates {text[:60]!r}: expected {self.dim} finite numbers "
                f"(the model's embedding has {self.dim} dimensions)"
            )
        return self.check_vector(values)

    def _mix(self, weights: dict[Any, float], text: str) -> tuple[np.ndarray, str]:
        if not weights:
            raise UserError("an empty mix")
        values = np.array([float(w) for w in weights.values()], dtype=np.float64)
        if not np.all(np.isfinite(values)) or np.any(values < 0) or values.max() <= 0:
            raise UserError(f"mix {text!r}: weights must be >= 0 and not all zero")
        named = [self.named(name) for name in weights]
        values = values / values.max()  # 1e308 + 1e308 would overflow the sum
        values /= values.sum()
        points = np.stack([v for v, _ in named]).astype(np.float64)
        vector = (values[:, None] * points).sum(axis=0)
        label = " + ".join(f"{w:.2f} {lab}" for w, (_, lab) in zip(values, named, strict=True))
        return vector.astype(np.float32), label

    def resolve(self, spec: TimbreSpec | None = None) -> Timbre:
        """Any timbre specification (module docstring) -> :class:`Timbre`.

        ``None`` means the first instrument of the table.
        """
        if isinstance(spec, Timbre):
            if spec.dim != self.dim:
                raise UserError(f"timbre has {spec.dim} dimensions, the model {self.dim}")
            return spec
        if spec is None:
            return Timbre(self.table[:1].copy(), np.zeros(1), self.instruments[0].name)
        if isinstance(spec, str) and "@" in spec:
            spec = Morph.parse(spec)
        if isinstance(spec, Morph):
            resolved = [(self.embedding(s), t) for s, t in spec.keypoints]
            points = np.stack([v for (v, _), _ in resolved])
            times = np.array([t for _, t in resolved], dtype=np.float64)
            label = " -> ".join(f"{lab}@{t:g}s" for (_, lab), t in resolved)
            return Timbre(points, times, label)
        vector, label = self.embedding(spec)
        return Timbre(vector[None, :].astype(np.float32), np.zeros(1), label)


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
