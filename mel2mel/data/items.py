"""The worker side of a dataset build: prepare a piece, render an item, write files atomically.

These functions run in the build's process pool (:mod:`mel2mel.data.build`). *Preparing* a
piece converts a music21 score to MIDI (if needed), reads its notes and makes its roll;
*rendering* an item forces the program, runs FluidSynth, computes the log-mel and writes the
item's files, its JSON sidecar last (it marks the item finished).
"""

from __future__ import annotations

import dataclasses
import json
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mel2mel.audio import log_mel
from mel2mel.data import dataset as D
from mel2mel.data.corpus import Piece, convert_music21
from mel2mel.data.fluidsynth import (
    RenderSettings,
    clip_stats,
    force_program,
    from_int16,
    render_midi,
    to_int16,
)
from mel2mel.data.perform import excerpt_midi, perform
from mel2mel.data.textures import GENERATORS
from mel2mel.fileio import TEMP_MARK, atomic_write, atomic_write_text
from mel2mel.instruments import Instrument
from mel2mel.midi import MidiError, NoteSequence, load_midi, piano_roll, read_notes


def save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` that never leaves a partial file under ``path``."""
    data = np.ascontiguousarray(array)
    atomic_write(path, lambda tmp: np.save(tmp, data, allow_pickle=False), suffix=".npy")


def save_json(path: Path, obj: Any) -> None:
    """Atomic JSON write."""
    atomic_write_text(path, json.dumps(obj, indent=1))


def remove_temp_files(root: Path, piece: str) -> int:
    """Remove what an interrupted build left for ``piece``; returns how many files."""
    found = list((root / D.ITEMS / piece).glob(f".*{TEMP_MARK}*"))
    for sub in (D.ROLLS, D.SOURCES, D.SKIPPED):
        found += (root / sub).glob(f".{piece}.*{TEMP_MARK}*")
    for path in found:
        path.unlink(missing_ok=True)
    return len(found)


def init_worker() -> None:
    """Set up a pool worker: one torch thread, Ctrl-C left to the parent."""
    # One intra-op thread per worker: the pool already uses every core, and a forked child
    # must not touch the parent's OpenMP thread pool. Ctrl-C is handled by the parent.
    import torch

    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def source_midi(piece: Piece, cached: str | None) -> tuple[str | bytes, bool, NoteSequence]:
    """The piece's source MIDI (a path, or converted bytes), whether it was converted, and its
    notes."""
    source = cached or (str(piece.path) if piece.path else None)
    if source is not None:
        try:
            return source, False, read_notes(source, warn=False)
        except MidiError:
            if piece.music21_name is None:
                raise  # a damaged conversion cache (music21) is converted again below
    converted = convert_music21(str(piece.music21_name))
    return converted, True, read_notes(converted, warn=False)


def prepare_piece(
    piece: Piece, cached: str | None, base_cache: str | None = None
) -> tuple[np.ndarray, bytes | None, dict]:
    """Roll ``uint8[176 x T_roll]``, MIDI bytes to cache (or None) and the piece's sidecar facts.

    ``cached`` is the piece's own MIDI cache, ``base_cache`` that of the score a derived piece
    (a recipe, see :class:`~mel2mel.data.corpus.Piece`) is made from, when they exist.
    """
    facts: dict[str, Any] = {}
    midi_bytes: bytes | None
    if piece.recipe is None:
        source, converted, seq = source_midi(piece, cached)
        midi_bytes = source if isinstance(source, bytes) and converted else None
    else:  # regenerated each time: deterministic, and its facts are recorded
        kind, seed, seconds = piece.recipe
        if kind in GENERATORS:
            midi_bytes, facts["augment"] = GENERATORS[kind](seed, float(seconds or 20.0))
        else:
            base, _, _ = source_midi(piece, base_cache)
            if kind == "perform":
                midi_bytes, facts["augment"] = perform(base, seed, max_seconds=seconds)
            else:
                midi_bytes, facts["augment"] = excerpt_midi(base, seconds)
        seq = read_notes(midi_bytes, warn=False)
    roll = np.round(piano_roll(seq.notes, seq.num_frames()) * 127.0).astype(np.uint8)
    facts |= {
        "notes": len(seq.notes),
        "duration": round(seq.duration, 3),
        "dropped_out_of_range": seq.dropped_out_of_range,
        "dropped_drums": seq.dropped_drums,
    }
    if piece.recipe is not None:
        facts["recipe"] = list(piece.recipe)
    return roll, midi_bytes, facts


@dataclass(frozen=True)
class RenderTask:
    """One item to render: a piece's MIDI with one instrument, into the dataset at ``root``."""

    root: str
    piece: str
    midi_path: str
    instrument: Instrument
    settings: RenderSettings
    fluidsynth: str


def render_item(task: RenderTask) -> dict[str, Any]:
    """Render one item and write its three files (sidecar last); returns the sidecar."""
    inst = task.instrument
    forced, _ = force_program(load_midi(task.midi_path), inst.program)
    root = Path(task.root)
    audio = render_midi(forced, task.settings, work_dir=root / D.ITEMS / task.piece, name=inst.slug)
    if audio.size == 0:
        raise RuntimeError("fluidsynth produced no audio")
    peak, clipped = clip_stats(audio)
    pcm = to_int16(audio)
    # The mel is that of the stored samples, so audio and mel of an item agree exactly.
    mel = log_mel(from_int16(pcm)).astype(np.float16)
    item_id = f"{task.piece}/{inst.slug}"
    paths = D.item_paths(root, item_id)
    save_npy(paths["audio"], pcm)
    save_npy(paths["mel"], mel)
    instrument: dict[str, Any] = {"name": inst.name, "program": inst.program}
    if inst.soundfont is not None:
        instrument["soundfont"] = inst.soundfont
    meta = {
        "format": D.FORMAT,
        "id": item_id,
        "piece": task.piece,
        "instrument": instrument,
        "frames": int(mel.shape[1]),
        "samples": int(pcm.size),
        "peak": round(peak, 6),
        "clipped": clipped,
        "render": task.settings.to_dict(),
        "fluidsynth": task.fluidsynth,
    }
    save_json(paths["meta"], meta)
    return meta


def settings_for(inst: Instrument, settings: RenderSettings) -> RenderSettings:
    """The render settings of one instrument: its own SoundFont, if it has one."""
    if inst.soundfont is None:
        return settings
    return dataclasses.replace(settings, soundfont=inst.soundfont)
