"""Instruments and their names: the one record, the one name normaliser, General MIDI names.

Names typed by users (``"Grand Piano"``, ``"lead-1 (square)"``) are matched after
:func:`normalize_name` (case folded, punctuation runs as one space); :func:`compact_name` is the
same without spaces, for matching ``"GrandPiano"`` too. :func:`slugify` makes file names.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from mel2mel import constants as C


@dataclass(frozen=True)
class Instrument:
    """An instrument: display name, 0-based General MIDI program, file-name slug.

    One row of a model's embedding table (``program`` may be unknown: ``None``), or one
    instrument of a dataset build, where ``soundfont`` is the absolute path of the SoundFont it
    is rendered with, or ``None`` for the build's ``--soundfont``
    (see :mod:`mel2mel.data.instrument_sets`).
    """

    name: str
    program: int | None = None
    soundfont: str | None = None

    @property
    def slug(self) -> str:
        """The name as a file-name slug (``"grand-piano"``)."""
        return slugify(self.name, sep="-")


def normalize_name(text: str) -> str:
    """Case-folded ``text`` with every run of non-alphanumerics turned into one space."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.casefold()).split())


def compact_name(text: str) -> str:
    """:func:`normalize_name` without spaces: ``"Grand-Piano"`` -> ``"grandpiano"``."""
    return normalize_name(text).replace(" ", "")


def slugify(text: str, *, sep: str = "_") -> str:
    """Lowercase ``[a-z0-9_-]`` slug: path separators become ``-``, anything else ``sep``."""
    s = re.sub(r"[\\/]+", "-", text.strip().lower())
    s = re.sub(r"[^a-z0-9_-]+", sep, s)
    s = re.sub(r"_{2,}", "_", re.sub(r"-{2,}", "-", s)).strip("-_")
    return s or "piece"


@functools.cache
def _gm_names() -> tuple[str, ...]:
    from pretty_midi.constants import INSTRUMENT_MAP

    return tuple(INSTRUMENT_MAP)


def gm_names() -> list[str]:
    """The 128 General MIDI program names, indexed by 0-based program."""
    return list(_gm_names())


@functools.cache
def gm_program_names() -> dict[str, int]:
    """Normalized General MIDI program names (``"lead 1 square"``, ...) -> 0-based program."""
    return {normalize_name(name): program for program, name in enumerate(_gm_names())}


def instrument_for_program(program: int) -> Instrument:
    """Canonical instrument of a program: the paper's name if it is one of its ten, else GM's."""
    for name, prog in C.PAPER_INSTRUMENTS.items():
        if prog == program:
            return Instrument(name, program)
    return Instrument(gm_names()[program], program)
