"""What a dataset contains: pieces (MIDI files or music21 scores), instruments, ids and splits.

Pieces come either from a folder of MIDI files or, by default, from a fixed list of polyphonic
scores in the music21 corpus that ships with the ``music21`` package (the ``[data]`` extra), so a
fresh clone builds a real dataset without any download. music21 is imported only inside the
functions that need it.

Every piece gets a safe id (lowercase ``[a-z0-9_-]``). Its split and its shard are functions of
that id alone (a stable hash), so they never change when other pieces are added or removed and
separate machines agree on them without talking to each other.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mel2mel import constants as C
from mel2mel import validate
from mel2mel.data.instrument_sets import INSTRUMENT_SETS, instrument_set
from mel2mel.errors import UserError, require
from mel2mel.instruments import (
    Instrument,
    compact_name,
    gm_names,
    instrument_for_program,
    slugify,
)
from mel2mel.midi import read_notes

MIDI_SUFFIXES = (".mid", ".midi", ".kar", ".smf")
SPLITS = ("train", "valid", "test")
SPLIT_PERCENT = (80, 10, 10)

# 100 four-part chorales (about 35 s each at music21's default tempo).
_CHORALES = """
1.6 2.6 3.6 4.8 5.7 6.6 7.7 8.6 9.7 10.7 11.6 12.7 13.6 14.5 16.6 17.7 19.7 20.7 20.11
24.6 25.6 26.6 27.6 28.6 29.8 30.6 31.9 32.6 33.6 37.6 38.6 39.7 40.3 40.6 40.8 41.6 42.7
43.11 44.7 45.7 46.6 47.5 48.3 48.7 52.6 55.5 56.5 57.8 59.3 60.5 62.6 64.2 64.4 64.8 65.2
65.7 66.6 67.7 70.7 70.11 72.6 73.5 74.8 77.6 78.7 79.3 79.6 80.8 81.7 83.5 84.5 85.6 86.6
87.7 88.7 89.6 90.5 91.6 92.9 93.7 94.8 95.7 96.6 97.9 99.6 101.7 102.7 103.6 104.6 108.6
110.7 111.6 112.5 113.8 114.7 115.6 116.6 117.4 119.9 120.6
"""
# 37 longer pieces (20 s to 10 min): keyboard and songs with piano, string quartets, madrigals.
# Left out because music21 cannot expand their repeats: haydn/opus74no1 mvts 3-4,
# mozart/k458 mvts 1-2, chopin/mazurka06-2, joplin/maple_leaf_rag.
_LONGER_PIECES = """
mozart/k545/movement1_exposition cpebach/h186 schoenberg/opus19/movement2
schoenberg/opus19/movement6 schumann_clara/polonaise_op1n1 schumann_clara/polonaise_op1n2
schumann_clara/polonaise_op1n3 schumann_clara/polonaise_op1n4 schumann_robert/opus48no2
johnson_j_r/lift_every_voice liliuokalani/aloha_oe verdi/laDonnaEMobile
handel/rinaldo/Lascia_chio_pianga webern/webern_dormi_jesu_op_16_no_2
haydn/opus1no1/movement1 haydn/opus1no1/movement2 haydn/opus1no1/movement3
haydn/opus1no1/movement4 haydn/opus1no1/movement5 haydn/opus74no1/movement2
mozart/k80/movement3 mozart/k80/movement4 mozart/k155/movement1 mozart/k155/movement2
mozart/k155/movement3 mozart/k156/movement1 mozart/k156/movement3 mozart/k156/movement4
mozart/k458/movement3 beethoven/opus18no1/movement2.mxl schumann_robert/opus41no1/movement2
schumann_robert/opus41no1/movement3 corelli/opus3no1/1grave lusitano/allor_che_ignuda
monteverdi/madrigal.3.1 monteverdi/madrigal.4.1 monteverdi/madrigal.5.1
"""

#: The default corpus: music21 corpus names, Bach chorales first (short, fast to convert; a
#: ``--limit`` build takes these), then string-quartet movements and piano pieces (longer).
#: Every entry was checked to parse and convert with music21 9.x; see docs/DATA.md.
CURATED_PIECES: tuple[str, ...] = (
    *(f"bach/bwv{n}" for n in _CHORALES.split()),
    *_LONGER_PIECES.split(),
)


@dataclass(frozen=True)
class Piece:
    """One input piece.

    Attributes
    ----------
    id:
        Safe slug used for file names (``rolls/<id>.npy``, ``items/<id>/``).
    source:
        Human-readable origin stored in the manifest: an absolute path, or ``music21:<name>``.
    path:
        The MIDI file, or ``None`` for a music21 score that still has to be converted.
    music21_name:
        music21 corpus name (``"bach/bwv66.6"``) for corpus pieces, else ``None``.
    group:
        Id of the score a derived piece comes from (a performance of it); the piece shares that
        score's split, so no performance of a test piece is ever trained on. ``None``: its own.
    recipe:
        How the piece's MIDI is made from its source, ``None`` to use it as it is:
        ``("perform", seed, max_seconds)`` (:func:`mel2mel.data.perform.perform`),
        ``("texture", seed, seconds)`` (:func:`mel2mel.data.textures.texture_piece`, no source),
        ``("strikes", seed, seconds)`` (:func:`mel2mel.data.textures.strikes_piece`, no source),
        ``("solo", seed, seconds)`` (:func:`mel2mel.data.textures.solo_piece`, no source)
        or ``("excerpt", 0, max_seconds)`` (the first ``max_seconds``).
    """

    id: str
    source: str
    path: Path | None = None
    music21_name: str | None = None
    group: str | None = None
    recipe: tuple[str, int, float | None] | None = None

    @property
    def split(self) -> str:
        """``"train"``, ``"valid"`` or ``"test"``, from the id of the piece's group alone."""
        return split_of(self.group or self.id)


def stable_hash(key: str) -> int:
    """A 64-bit hash of ``key`` that is the same on every machine and Python run."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


def split_of(piece_id: str) -> str:
    """Deterministic 80/10/10 train/valid/test split by piece id."""
    bucket = stable_hash(f"mel2mel-split:{piece_id}") % 100
    train, valid, _ = SPLIT_PERCENT
    if bucket < train:
        return "train"
    return "valid" if bucket < train + valid else "test"


def shard_of(piece_id: str, num_shards: int) -> int:
    """Shard (0-based) that builds every item of ``piece_id``; independent of :func:`split_of`."""
    return stable_hash(f"mel2mel-shard:{piece_id}") % num_shards


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` -> ``(i, N)`` with ``0 <= i < N``; UserError otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not 0 <= int(m[1]) < int(m[2]):
        raise UserError(f"--shard must look like i/N with 0 <= i < N (e.g. 0/4), got {text!r}")
    return int(m[1]), int(m[2])


# How a manifest piece was made: a whole score as written (``plain``), the start of one
# (``excerpt``), a performance of one, or a generated texture, dynamics study or solo line.
AUGMENT_KINDS = ("plain", "excerpt", "perform", "texture", "strikes", "solo")
PERFORMED_KINDS = ("perform", "texture", "strikes", "solo")

# Which pieces an evaluation takes: all, the scores as written (whole or excerpts), the
# performances and generated pieces, or the pieces of one kind of :data:`AUGMENT_KINDS`.
PIECE_SETS = ("all", "plain", "performed", *AUGMENT_KINDS[1:])


def augment_kind(piece: dict[str, Any]) -> str:
    """The :data:`AUGMENT_KINDS` entry of a manifest piece (``"plain"`` without augmentation)."""
    return str((piece.get("augment") or {}).get("kind", "plain"))


def piece_kind(piece: dict[str, Any]) -> str:
    """``"performed"`` for a manifest piece that is a performance or a generated piece (texture,
    strikes or solo), else ``"plain"`` (scores as written, whole or excerpts)."""
    return "performed" if augment_kind(piece) in PERFORMED_KINDS else "plain"


def in_piece_set(piece: dict[str, Any], name: str) -> bool:
    """Whether a manifest piece belongs to the :data:`PIECE_SETS` entry ``name``."""
    if name in ("all", "plain", "performed"):
        return name in ("all", piece_kind(piece))
    return augment_kind(piece) == name


def select_test_pieces(
    manifest: dict[str, Any],
    count: int,
    chosen: Sequence[str] = (),
    kind: str = "all",
    split: str = "test",
) -> list[dict[str, Any]]:
    """The test pieces an evaluation or a gallery plays: the ``chosen`` ids, else ``count``
    pieces of ``split`` and ``kind`` (see :data:`PIECE_SETS`) spread evenly over those the
    dataset has rendered (all of them if it has none). ``split="valid"`` picks pieces for
    choosing a setting before the test split is scored.

    Raises UserError for an unknown chosen id.
    """
    by_id = {p["id"]: p for p in manifest["pieces"]}
    if chosen:
        missing = [c for c in chosen if c not in by_id]
        if missing:
            raise UserError(f"unknown piece(s) {', '.join(missing)} in the dataset")
        return [by_id[c] for c in chosen]
    rendered = {it["piece"] for it in manifest["items"]}
    pool = [p for p in manifest["pieces"] if p["split"] == split]
    pool = [p for p in pool if in_piece_set(p, kind)]
    pool = [p for p in pool if p["id"] in rendered] or pool
    if count >= len(pool):
        return pool
    pick = np.linspace(0, len(pool) - 1, count).round().astype(int)
    return [pool[i] for i in pick]


def piece_midi(data: Path, piece: dict[str, Any], cache: Path) -> Path:
    """A manifest piece's MIDI: the dataset's cached conversion, the source file, or a new
    conversion of the music21 score into ``cache/midi`` (needs ``mel2mel[data]``)."""
    cached = Path(data) / "sources" / f"{piece['id']}.mid"
    if cached.is_file():
        return cached
    source = piece["source"]
    if "#" in source or source.startswith("generated:"):  # made by a recipe when built
        raise UserError(f"{cached} is missing: rebuild the dataset to restore {piece['id']}")
    if not source.startswith("music21:"):
        return Path(source)
    out = Path(cache) / "midi" / f"{piece['id']}.mid"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(convert_music21(source.removeprefix("music21:")))
    return out


# -- instruments ------------------------------------------------------------------------------


def resolve_instruments(spec: str | Sequence[str | int] | None) -> list[Instrument]:
    """Turn names or program numbers into instruments.

    Parameters
    ----------
    spec:
        ``None`` for the paper's ten instruments; the name of an instrument set
        (:data:`~mel2mel.data.instrument_sets.INSTRUMENT_SETS`, e.g. ``"space100"``, whose
        instruments carry their own SoundFonts); a comma-separated string or a sequence of
        names (the paper's names such as ``"Grand Piano"``, or General MIDI names such as
        ``"Lead 1 (square)"``; case, spaces and punctuation are ignored) or 0-based program
        numbers.

    Returns
    -------
    Instruments in the given order, each named canonically (see :func:`instrument_for_program`)
    so the same program always gets the same name and slug.
    """
    if spec is None:
        return [Instrument(n, p) for n, p in C.PAPER_INSTRUMENTS.items()]
    if isinstance(spec, str) and spec.strip().lower() in INSTRUMENT_SETS:
        return instrument_set(spec.strip().lower())
    entries = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    entries = [e for e in entries if e != ""]
    if not entries:
        raise UserError("--instruments is empty")
    by_name = {compact_name(n): p for n, p in C.PAPER_INSTRUMENTS.items()}
    for prog, name in enumerate(gm_names()):
        by_name.setdefault(compact_name(name), prog)
    out: list[Instrument] = []
    for entry in entries:
        text = str(entry)
        program = validate.program_number(text)
        if program is not None:
            if program > 127:
                raise UserError(f"instrument program {program} is out of range 0..127")
        elif compact_name(text) in by_name:
            program = by_name[compact_name(text)]
        else:
            valid = ", ".join(C.PAPER_INSTRUMENTS)
            raise UserError(
                f"unknown instrument {text!r}; valid: {valid}, any General MIDI name "
                "(see 'mel2mel data build --list-instruments') or a program number 0..127"
            )
        inst = instrument_for_program(program)
        if any(i.program == program for i in out):
            raise UserError(f"instrument {inst.name!r} (program {program}) is listed twice")
        out.append(inst)
    return out


# -- pieces -----------------------------------------------------------------------------------


def music21_pieces(names: Sequence[str] = CURATED_PIECES) -> list[Piece]:
    """The default corpus as pieces (no music21 import: conversion happens later)."""
    return [Piece(id=music21_id(n), source=f"music21:{n}", music21_name=n) for n in names]


def derived_pieces(
    scores: Sequence[Piece],
    *,
    variants: int,
    textures: int,
    strikes: int = 0,
    solos: int = 0,
    seed: int = 0,
    max_seconds: float | None = None,
) -> list[Piece]:
    """The scores, ``variants`` seeded performances of each, ``textures`` generated pieces,
    ``strikes`` generated dynamics studies and ``solos`` generated solo lines.

    With ``max_seconds`` the scores are cut to their first ``max_seconds`` (an ``"excerpt"``
    recipe) and performances take a seeded window of that length (30 s without it). Seeds are
    functions of ``seed`` and the piece id, so a piece is the same whatever else is built.
    Textures are ``texture-NNNN``, strikes ``strikes-NNNN``, solos ``solo-NNNN``, each split by
    its own id.
    """
    out: list[Piece] = []
    for p in scores:
        out.append(p if max_seconds is None else replace(p, recipe=("excerpt", 0, max_seconds)))
    for p in scores:
        for k in range(1, variants + 1):
            s = stable_hash(f"mel2mel-perform:{seed}:{p.id}:{k}") % 2**31
            recipe = ("perform", s, max_seconds or 30.0)
            out.append(replace(p, id=f"{p.id}-perf{k}", source=f"{p.source}#perform-{k}",
                               group=p.id, recipe=recipe))  # fmt: skip
    for kind, count in (("texture", textures), ("strikes", strikes), ("solo", solos)):
        for i in range(count):
            s = stable_hash(f"mel2mel-{kind}:{seed}:{i}") % 2**31
            name = f"{kind}-{i:04d}"
            recipe = (kind, s, min(20.0, max_seconds or 20.0))
            out.append(Piece(id=name, source=f"generated:{name}", recipe=recipe))
    return out


def music21_id(name: str) -> str:
    """Piece id of a music21 corpus name: ``"bach/bwv66.6"`` -> ``"bach-bwv66_6"``."""
    return slugify(re.sub(r"\.(mxl|xml|musicxml|krn|abc)$", "", name))


def discover_midi(midi_dir: str | Path) -> list[Piece]:
    """MIDI files under ``midi_dir`` (recursively, sorted), or ``midi_dir`` itself if a file.

    Ids come from the path relative to the folder without its suffix; names that collide after
    slugging get a short hash of their relative path appended.

    Raises UserError if the path does not exist or holds no file with a MIDI suffix.
    """
    root = Path(midi_dir)
    if root.is_file():
        files, base = [root], root.parent
    elif root.is_dir():
        files = sorted(
            p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in MIDI_SUFFIXES
        )
        base = root
    else:
        raise UserError(f"--midi-dir not found: {root}")
    if not files:
        raise UserError(f"no MIDI files ({', '.join(MIDI_SUFFIXES)}) in {root}")
    rel = [f.relative_to(base).with_suffix("").as_posix() for f in files]
    ids = [slugify(r) for r in rel]
    counts: dict[str, int] = {}
    for i in ids:
        counts[i] = counts.get(i, 0) + 1
    ids = [
        f"{i}-{hashlib.sha256(r.encode()).hexdigest()[:6]}" if counts[i] > 1 else i
        for i, r in zip(ids, rel, strict=True)
    ]
    return [
        Piece(id=i, source=str(f.resolve()), path=f.resolve())
        for i, f in zip(ids, files, strict=True)
    ]


def convert_music21(name: str) -> bytes:
    """Parse a music21 corpus score and return it as Standard MIDI File bytes.

    Slow for long scores (seconds to a minute: music21 expands repeats), hence cached by the
    builder. Raises UserError if music21 is missing, ValueError if the score cannot be used.
    """
    require("music21", "data")
    from music21 import corpus, midi

    try:
        score = corpus.parse(name)
        return bytes(midi.translate.music21ObjectToMidiFile(score).writestr())
    except Exception as err:  # music21 raises many unrelated types for unusable scores
        raise ValueError(f"music21 could not convert {name}: {type(err).__name__}: {err}") from err


def score_seconds(name: str) -> float:
    """Duration in seconds of the music21 MIDI rendering of ``name`` (converts it: slow)."""
    return read_notes(convert_music21(name), warn=False).duration
