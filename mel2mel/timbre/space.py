"""A model's timbre space: its instruments, their aliases and user timbres, resolved to
:class:`~mel2mel.timbre.spec.Timbre` objects (the forms are listed in :mod:`mel2mel.timbre.spec`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mel2mel import validate
from mel2mel.errors import UserError
from mel2mel.instruments import Instrument, gm_program_names, normalize_name
from mel2mel.models.acoustic import UnknownInstrumentError
from mel2mel.models.export import model_fingerprint
from mel2mel.timbre.spec import ALIASES, Morph, Timbre, TimbreSpec, parse_coordinates, parse_mix


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
        A :class:`~mel2mel.timbre.library.TimbreLibrary` consulted, lazily, for names that
        nothing else matches; entries whose ``model`` differs from ``fingerprint`` are refused.
    fingerprint:
        :func:`~mel2mel.timbre.library.model_fingerprint` of the model, or a function that
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
