"""Named instrument sets and SoundFonts: instruments that each come from a chosen SoundFont.

A plain build renders every instrument with one SoundFont (``--soundfont``). An instrument can
also carry its own SoundFont, which is how the 100-instrument timbre space mixes the SoundFonts
that Debian packages ship. Such instruments come from

* a named set defined here (``--instruments space100``), see :data:`INSTRUMENT_SETS`;
* a JSON file (``--instruments-file set.json``), a list of objects
  ``{"name": "Trumpet (FluidR3)", "program": 56, "soundfont": "fluidr3"}`` where ``soundfont``
  is a key of :data:`SOUNDFONTS` or a path (``name`` is optional).

SoundFont keys are resolved to absolute paths here, so everything downstream (render settings,
item sidecars, the manifest) stores paths; a missing SoundFont is a UserError naming its Debian
package.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mel2mel import constants as C
from mel2mel.errors import UserError
from mel2mel.instruments import Instrument, gm_names, instrument_for_program


@dataclass(frozen=True)
class SoundFont:
    """A SoundFont that a Debian package installs: key, path, package and a short label."""

    key: str
    path: Path
    package: str
    label: str


SOUNDFONTS: dict[str, SoundFont] = {
    sf.key: sf
    for sf in (
        SoundFont(
            "musescore",
            Path("/usr/share/sounds/sf3/MuseScore_General.sf3"),
            "musescore-general-soundfont",
            "MuseScore",
        ),
        SoundFont(
            "fluidr3", Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"), "fluid-soundfont-gm", "FluidR3"
        ),
        SoundFont(
            "fluidr3mono",
            Path("/usr/share/sounds/sf3/FluidR3Mono_GM.sf3"),
            "fluidr3mono-gm-soundfont",
            "FluidR3 Mono",
        ),
        SoundFont(
            "timgm6mb", Path("/usr/share/sounds/sf2/TimGM6mb.sf2"), "timgm6mb-soundfont", "TimGM6mb"
        ),
    )
}


def soundfont_path(spec: str | os.PathLike) -> Path:
    """Absolute path of a SoundFont given by key (``"fluidr3"``) or path; UserError if missing.

    The error names the Debian package for a known key or a known path.
    """
    text = os.fspath(spec)
    known = SOUNDFONTS.get(text) or next(
        (sf for sf in SOUNDFONTS.values() if str(sf.path) == text), None
    )
    path = known.path if known else Path(text)
    if not path.is_file():
        if known:
            raise UserError(
                f"SoundFont {known.key!r} not found at {path}: install it with "
                f"'apt install {known.package}'"
            )
        keys = ", ".join(SOUNDFONTS)
        raise UserError(f"SoundFont not found: {text} (not a file, nor a known key: {keys})")
    if not os.access(path, os.R_OK):
        raise UserError(f"SoundFont is not readable: {path}")
    return Path(os.path.abspath(path))


def display_name(program: int, soundfont_key: str) -> str:
    """``"Trumpet (FluidR3)"``: the canonical program name plus the SoundFont's label.

    Parentheses inside General MIDI names are dropped (``"Lead 1 square (TimGM6mb)"``).
    """

    base = instrument_for_program(program).name.replace("(", "").replace(")", "")
    return f"{base} ({SOUNDFONTS[soundfont_key].label})"


# -- space100 ---------------------------------------------------------------------------------

#: General MIDI programs (0-based) per SoundFont in the 100-instrument set (34 + 30 + 36).
#: Melodic programs only: programs 55 (orchestra hit), 96-103 (synth effects) and 112-127
#: (percussive, sound effects) are left out, and drums are never rendered. Chosen greedily:
#: the paper's ten programs in every SoundFont, then the other programs spread over the GM
#: families with the SoundFont rotating, skipping any candidate whose log-mel of three probe
#: notes lies within 4 dB (mean absolute difference) of an already chosen one: MuseScore
#: General reuses many FluidR3 samples (see docs/SPACE100.md).
SPACE100: dict[str, tuple[int, ...]] = {
    "musescore": (
        0, 4, 6, 9, 11, 12, 18, 19, 21, 24, 27, 30, 33, 36, 42, 45, 46,
        48, 51, 54, 56, 57, 60, 66, 69, 72, 75, 80, 81, 84, 90, 93, 105, 108,
    ),
    "fluidr3": (
        0, 10, 13, 16, 19, 22, 24, 25, 28, 34, 37, 40, 43, 45, 48,
        49, 52, 58, 61, 64, 67, 73, 76, 80, 82, 85, 88, 91, 106, 109,
    ),
    "timgm6mb": (
        0, 2, 3, 4, 5, 8, 11, 14, 17, 19, 20, 24, 26, 29, 32, 35, 38, 41,
        44, 45, 46, 48, 50, 53, 56, 59, 65, 68, 74, 77, 80, 83, 89, 92, 104, 107,
    ),
}  # fmt: skip


def space100_spec() -> list[tuple[str, int, str | None]]:
    """``(name, program, soundfont key)`` of the 100-instrument set, in table order."""
    out = []
    for key, programs in SPACE100.items():
        out += [(display_name(p, key), p, key) for p in programs]
    return out


def paper10_spec() -> list[tuple[str, int, str | None]]:
    """The paper's ten instruments, all from the build's ``--soundfont``."""
    return [(name, program, None) for name, program in C.PAPER_INSTRUMENTS.items()]


#: Named sets for ``--instruments NAME``: functions returning ``(name, program, soundfont
#: key or None)``; ``None`` renders with the build's ``--soundfont``.
INSTRUMENT_SETS: dict[str, Callable[[], list[tuple[str, int, str | None]]]] = {
    "paper10": paper10_spec,
    "space100": space100_spec,
}


def instrument_set(name: str) -> list[Instrument]:
    """The instruments of a named set, with their SoundFonts resolved to paths."""

    try:
        spec = INSTRUMENT_SETS[name]()
    except KeyError:
        raise UserError(
            f"unknown instrument set {name!r}; valid: {', '.join(INSTRUMENT_SETS)}"
        ) from None
    return _check_unique(
        [Instrument(n, p, None if sf is None else str(soundfont_path(sf))) for n, p, sf in spec]
    )


def instruments_from_file(path: str | os.PathLike) -> list[Instrument]:
    """Instruments listed in a JSON file (see the module docstring)."""

    p = Path(path)
    try:
        entries = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read instruments file {p}: {err}") from err
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{p}: expected a non-empty JSON list of instruments")
    out = []
    for k, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("program"), int):
            raise UserError(f"{p}: entry {k} needs an integer 'program' (0..127)")
        if not 0 <= e["program"] <= 127:
            raise UserError(f"{p}: entry {k}: program {e['program']} is out of range 0..127")
        sf = e.get("soundfont")
        if sf is not None and not isinstance(sf, str):
            raise UserError(f"{p}: entry {k}: 'soundfont' must be a key or a path")
        if "name" in e:
            name = str(e["name"])
        elif sf in SOUNDFONTS:
            name = display_name(e["program"], sf)
        else:
            name = gm_names()[e["program"]]
        out.append(Instrument(name, e["program"], None if sf is None else str(soundfont_path(sf))))
    return _check_unique(out)


def _check_unique(instruments: Sequence[Instrument]) -> list[Instrument]:
    seen: dict[str, str] = {}
    for inst in instruments:
        if inst.slug in seen:
            raise UserError(
                f"instruments {seen[inst.slug]!r} and {inst.name!r} have the same file name "
                f"{inst.slug!r}; give them distinct names"
            )
        seen[inst.slug] = inst.name
    return list(instruments)
