"""Build a dataset: render every (piece, instrument) with FluidSynth into the on-disk layout.

Two kinds of task run in one process pool. *Preparing* a piece converts a music21 score to MIDI
(if needed), reads its notes and makes its roll; *rendering* an item forces the program, runs
FluidSynth, computes the log-mel and writes the item's files. A piece's render tasks are queued
as soon as it is prepared, so slow conversions overlap with rendering.

Only the main process creates folders and writes piece-level files, and it creates the output
folder only once a first piece is usable, so bad input leaves nothing behind. Every file is
written under a temporary name and moved into place with ``os.replace``; an item's JSON sidecar
is written last and marks it finished. A rerun therefore skips finished items, removes the
temporary files an interrupted run left and redoes anything incomplete. ``manifest.json`` is
always rebuilt from what is on disk (:func:`index_dataset`), so shards built into copies of the
folder can be merged by copying and re-indexing.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import importlib.metadata
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mel2mel import constants as C
from mel2mel.audio import cpu_log_mel
from mel2mel.data import dataset as D
from mel2mel.data.corpus import (
    Instrument,
    Piece,
    derived_pieces,
    discover_midi,
    music21_pieces,
    parse_shard,
    resolve_instruments,
    shard_of,
)
from mel2mel.data.fluidsynth import (
    RenderSettings,
    check_soundfont,
    find_fluidsynth,
    fluidsynth_version,
)
from mel2mel.data.items import (
    RenderTask,
    init_worker,
    prepare_piece,
    remove_temp_files,
    render_item,
    save_json,
    save_npy,
    settings_for,
)
from mel2mel.data.manifest import index_dataset, manifest_summary
from mel2mel.data.sf3 import playable_soundfont
from mel2mel.errors import UserError, require
from mel2mel.fileio import atomic_write
from mel2mel.midi import MidiError
from mel2mel.version import __version__

# -- main side --------------------------------------------------------------------------------


@dataclass
class BuildReport:
    """What a build did; :meth:`summary` turns it into the lines the CLI prints."""

    out: Path
    pieces: int = 0
    instruments: int = 0
    per_piece: int | None = None  # instruments per piece when not all of them render each
    items_finished_before: int = 0
    items_built: int = 0
    pieces_prepared: int = 0
    audio_seconds: float = 0.0
    temp_files_removed: int = 0
    dropped_notes: int = 0
    clipped: list[tuple[str, int, float]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    manifest: dict[str, Any] | None = None
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        """0 if every item of the build is finished, 1 if some could not be rendered."""
        return 1 if self.failed else 0

    def summary(self) -> list[str]:
        """Human-readable summary, one fact per line."""
        each = (
            f"{self.instruments}"
            if self.per_piece is None
            else (f"{self.per_piece} of {self.instruments}")
        )
        lines = [
            f"built {self.items_built} item(s) ({self.pieces} piece(s) x {each} "
            f"instrument(s), {self.items_finished_before} already finished) in "
            f"{self.seconds:.1f} s: {self.audio_seconds / 60:.1f} min of audio"
        ]
        if self.temp_files_removed:
            lines.append(f"removed {self.temp_files_removed} temporary file(s) of an earlier run")
        if self.dropped_notes:
            lines.append(f"left out {self.dropped_notes} drum or out-of-range (A0..C8) note(s)")
        if self.clipped:
            worst = max(self.clipped, key=lambda c: c[2])
            lines.append(
                f"clipping: {len(self.clipped)} item(s) reach full scale (worst {worst[0]}: "
                f"{worst[1]} sample(s), peak {worst[2]:.3f}); try a lower --gain"
            )
        else:
            lines.append("clipping: none")
        for s in self.skipped:
            lines.append(f"skipped {s['source']}: {s['reason']}")
        for f in self.failed:
            lines.append(f"failed {f['id']}: {f['reason']}")
        if self.manifest is not None:
            lines.append(manifest_summary(self.manifest, self.out))
        return lines


@dataclass
class _PiecePlan:
    piece: Piece
    midi_path: str | None  # None until prepared (a music21 score without cached MIDI)
    ready: bool  # roll and sidecar on disk
    todo: list[Instrument]


def assign_instruments(
    pieces: Sequence[Piece], instruments: Sequence[Instrument], per_piece: int, seed: int
) -> dict[str, list[Instrument]]:
    """The ``per_piece`` instruments that render each piece, balanced within each split.

    The pieces of a split deal out a seeded shuffle of the instruments ``per_piece`` at a
    time, a new shuffle each round, so every instrument gets the same number of pieces of
    every split (to within one) and one piece never gets an instrument twice. Depends only on
    the piece list (before ``--split``/``--shard`` filtering) and the seed, so every shard of
    a sharded build agrees.
    """
    if not 1 <= per_piece <= len(instruments):
        raise UserError(
            f"--instruments-per-piece must be in 1..{len(instruments)} (the number of "
            f"instruments), got {per_piece}"
        )
    out: dict[str, list[Instrument]] = {}
    for split in D.SPLITS:
        rng = np.random.default_rng([seed, 7919, D.SPLITS.index(split)])
        deck: list[int] = []
        for piece in (p for p in pieces if p.split == split):
            chosen: list[int] = []
            while len(chosen) < per_piece:
                if len(deck) < per_piece:  # the rest of the deck first, then a new shuffle
                    deck += [int(i) for i in rng.permutation(len(instruments))]
                rest = []
                for i in deck:  # deal from the top; a card already dealt waits for later
                    (chosen if len(chosen) < per_piece and i not in chosen else rest).append(i)
                deck = rest
            out[piece.id] = [instruments[i] for i in sorted(chosen)]
    return out


def _plan(
    root: Path,
    pieces: Sequence[Piece],
    all_instruments: Sequence[Instrument],
    settings: RenderSettings,
    assignment: dict[str, list[Instrument]],
) -> tuple[list[_PiecePlan], int, int]:
    """Per-piece work left, the number of finished items and of removed temporary files.

    A piece is rendered with ``assignment[piece.id]``, or with every instrument if it has none.
    """
    plans, finished, removed, mismatch = [], 0, 0, []
    for piece in pieces:
        instruments = assignment.get(piece.id, all_instruments)
        cache = root / D.SOURCES / f"{piece.id}.mid"
        own = piece.path is not None and piece.recipe is None
        midi_path = str(piece.path) if own else (str(cache) if cache.is_file() else None)
        if not root.is_dir():
            plans.append(_PiecePlan(piece, midi_path, False, list(instruments)))
            continue
        removed += remove_temp_files(root, piece.id)
        todo = []
        for inst in instruments:
            meta = D.finished_item(root, f"{piece.id}/{inst.slug}")
            if meta is None:
                todo.append(inst)
            elif meta.get("render") != settings_for(inst, settings).to_dict():
                mismatch.append(meta["id"])
            else:
                finished += 1
        piece_meta = D.finished_piece(root, piece.id)
        recipe = list(piece.recipe) if piece.recipe is not None else None
        if piece_meta is not None and piece_meta.get("recipe") != recipe:
            mismatch.append(piece.id)
        ready = midi_path is not None and piece_meta is not None
        plans.append(_PiecePlan(piece, midi_path, ready, todo))
    if mismatch:
        raise UserError(
            f"{root} holds {len(mismatch)} item(s) rendered with other settings or piece(s) "
            f"made with another --seed or --max-seconds (e.g. "
            f"{mismatch[0]}); build into a new folder or delete them first"
        )
    return plans, finished, removed


def _make_root(root: Path) -> None:
    for sub in (D.ROLLS, D.ITEMS):
        (root / sub).mkdir(parents=True, exist_ok=True)


def build_dataset(
    out: str | os.PathLike,
    *,
    midi_dir: str | os.PathLike | None = None,
    instruments: str | Sequence[str | int] | Sequence[Instrument] | None = None,
    soundfont: str | os.PathLike | None = None,
    gain: float | None = None,
    reverb: bool = True,
    chorus: bool = True,
    workers: int | None = None,
    shard: str | tuple[int, int] = (0, 1),
    limit: int | None = None,
    variants: int | None = None,
    textures: int | None = None,
    strikes: int | None = None,
    solos: int | None = None,
    instruments_per_piece: int | None = None,
    seed: int = 0,
    max_seconds: float | None = None,
    plain: bool = True,
    split: str | None = None,
    progress: bool = True,
) -> BuildReport:
    """Build (or resume, or extend) a dataset in ``out``; see docs/DATA.md.

    Parameters
    ----------
    out:
        Dataset folder; created only once a first input piece turns out usable.
    midi_dir:
        Folder of MIDI files (searched recursively) or one MIDI file; ``None`` for the curated
        music21 corpus (:data:`mel2mel.data.corpus.CURATED_PIECES`).
    instruments:
        Names or program numbers, or the name of an instrument set such as ``"space100"``
        (see :func:`~mel2mel.data.corpus.resolve_instruments`), or
        :class:`~mel2mel.instruments.Instrument` objects; ``None`` for the paper's ten.
        Instruments that carry their own SoundFont are rendered with it.
    soundfont:
        SoundFont path for the instruments without their own, ``None`` for MuseScore General
        (not needed when every instrument has its own).
    gain, reverb, chorus:
        FluidSynth options; ``None``/``True`` keep FluidSynth's defaults.
    workers:
        Worker processes, ``None`` for one per CPU core.
    shard:
        ``(i, N)`` or ``"i/N"``: build only the pieces whose stable hash falls in shard ``i``.
    limit:
        Use only the first ``limit`` pieces (scores) of the input.
    variants:
        Seeded performances (:mod:`mel2mel.data.perform`: dynamics, pedal, rubato,
        transposition) of each score, built as pieces of their own in the score's split;
        ``None``: 2 for the default corpus, 0 with ``midi_dir``.
    textures:
        Generated piano-texture pieces (:mod:`mel2mel.data.textures`); ``None``: 300 for the
        default corpus, 0 with ``midi_dir``.
    strikes:
        Generated dynamics studies (:func:`mel2mel.data.textures.strikes_piece`: isolated
        chords at velocities over all of 1..127); ``None``: 60 for the default corpus, 0 with
        ``midi_dir``.
    solos:
        Generated solo lines (:func:`mel2mel.data.textures.solo_piece`: sparse, mostly soft
        single notes in every register); ``None``: 60 for the default corpus, 0 with
        ``midi_dir``.
    instruments_per_piece:
        Render each piece with only this many of the instruments, dealt out so that every
        instrument gets as many pieces of each split as the others (:func:`assign_instruments`):
        more music per instrument for the same rendering time with a large instrument set.
        ``None``: every piece with every instrument.
    seed:
        Seed of the performances and generated pieces (recorded per piece in the manifest) and
        of the instrument assignment.
    max_seconds:
        Cut every score to its first ``max_seconds``, and take performances and textures of at
        most that length (default: whole scores, 30 s performances, 20 s textures).
    plain:
        Build the scores as written too (``False``: only their performances and textures).
    split:
        Build only the pieces of this split (``"train"``, ``"valid"`` or ``"test"``), e.g. an
        evaluation set; ``None`` for all.
    progress:
        Show a tqdm progress bar (on a terminal).

    Raises
    ------
    UserError
        For bad input or environment (before anything is written), or if a worker dies.
    """
    start_time = time.perf_counter()
    root = Path(out)
    find_fluidsynth()
    if gain is not None and not 0 < gain <= 10:
        raise UserError(f"--gain must be in (0, 10], got {gain:g}")
    if instruments is not None and all(isinstance(i, Instrument) for i in instruments):
        insts = list(instruments)  # type: ignore[arg-type]
    else:
        insts = resolve_instruments(instruments)  # type: ignore[arg-type]
    own = [i.soundfont for i in insts if i.soundfont is not None]
    if soundfont is None and own and len(own) == len(insts):
        default_sf = str(check_soundfont(own[0]))  # the default SoundFont is not needed
    else:
        default_sf = str(check_soundfont(soundfont))
    settings = RenderSettings(default_sf, gain, reverb, chorus)
    shard_i, shard_n = parse_shard(shard) if isinstance(shard, str) else shard
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if midi_dir is None:
        require("music21", "data")
        pieces = music21_pieces()
    else:
        pieces = discover_midi(midi_dir)
    default = (2, 300, 60, 60) if midi_dir is None else (0, 0, 0, 0)
    variants = default[0] if variants is None else variants
    textures = default[1] if textures is None else textures
    strikes = default[2] if strikes is None else strikes
    solos = default[3] if solos is None else solos
    if min(variants, textures, strikes, solos) < 0:
        raise UserError("--variants, --textures, --strikes and --solos must be at least 0")
    if max_seconds is not None and not max_seconds >= 2:
        raise UserError(f"--max-seconds must be at least 2, got {max_seconds:g}")
    pieces = derived_pieces(
        pieces[:limit],
        variants=variants,
        textures=textures,
        strikes=strikes,
        solos=solos,
        seed=seed,
        max_seconds=max_seconds,
    )
    if not plain:
        pieces = [p for p in pieces if p.recipe is not None and p.recipe[0] != "excerpt"]
    assignment = {}
    if instruments_per_piece is not None:
        assignment = assign_instruments(pieces, insts, instruments_per_piece, seed)
    if split is not None:
        if split not in D.SPLITS:
            raise UserError(f"--split must be one of {', '.join(D.SPLITS)}, got {split!r}")
        pieces = [p for p in pieces if p.split == split]
    pieces = [p for p in pieces if shard_of(p.group or p.id, shard_n) == shard_i]
    if not pieces:
        raise UserError("nothing to build: no piece is left after --no-plain/--split/--shard")
    D.check_output_dir(root)

    plans, finished, removed = _plan(root, pieces, insts, settings, assignment)
    report = BuildReport(
        root, len(pieces), len(insts), instruments_per_piece, finished, temp_files_removed=removed
    )
    try:
        usable = _run(root, plans, settings, report, workers, progress)
    except BrokenProcessPool as err:
        raise UserError(
            "a worker process died (out of memory?); finished items are kept: run the same "
            "command again to resume"
        ) from err
    if plans and not usable:
        first = report.skipped[0]
        more = f" (and {len(report.skipped) - 1} more)" if len(report.skipped) > 1 else ""
        raise UserError(f"no usable input: {first['source']}: {first['reason']}{more}")
    if root.is_dir():
        reasons = {s["source"]: s["reason"] for s in report.skipped}
        for plan in plans:
            piece = plan.piece
            marker = root / D.SKIPPED / f"{piece.id}.json"
            if piece.source in reasons:
                marker.parent.mkdir(exist_ok=True)
                reason = reasons[piece.source]
                save_json(marker, {"id": piece.id, "source": piece.source, "reason": reason})
            elif plan.ready:
                marker.unlink(missing_ok=True)
        report.manifest = index_dataset(root, instruments=insts, settings=settings)
    report.seconds = time.perf_counter() - start_time
    return report


def _run(
    root: Path,
    plans: list[_PiecePlan],
    settings: RenderSettings,
    report: BuildReport,
    workers: int | None,
    progress: bool,
) -> bool:
    """Run the pool; returns whether at least one piece is usable. Fills ``report``."""
    from tqdm import tqdm

    usable = any(p.ready for p in plans)
    prepare = [p for p in plans if not p.ready]
    todo = sum(len(p.todo) for p in plans)
    if not prepare and not todo:
        return usable
    version = fluidsynth_version()
    n_workers = max(1, min(workers or os.cpu_count() or 1, todo + len(prepare)))
    # fork: workers inherit the imported torch and the built LogMel instead of each spending
    # seconds on them; they run only single-threaded torch code (see init_worker).
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork") if "fork" in methods else None
    if ctx is not None:
        cpu_log_mel()  # once here rather than once per forked worker
    for sf in {settings.soundfont, *(i.soundfont for p in plans for i in p.todo if i.soundfont)}:
        playable_soundfont(sf)  # decompress an SF3 once, before the workers need it
    pool = cf.ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=init_worker)
    futures: dict[cf.Future, tuple[str, _PiecePlan, Instrument | None]] = {}

    def submit_renders(plan: _PiecePlan) -> None:
        (root / D.ITEMS / plan.piece.id).mkdir(parents=True, exist_ok=True)
        for inst in plan.todo:
            task = RenderTask(
                str(root),
                plan.piece.id,
                str(plan.midi_path),
                inst,
                settings_for(inst, settings),
                version,
            )
            futures[pool.submit(render_item, task)] = ("render", plan, inst)

    bar = None
    try:
        for plan in plans:
            if not plan.ready:
                base = root / D.SOURCES / f"{plan.piece.group}.mid"
                base_cache = str(base) if plan.piece.group and base.is_file() else None
                futures[pool.submit(prepare_piece, plan.piece, plan.midi_path, base_cache)] = (
                    "prepare", plan, None
                )  # fmt: skip
            elif plan.todo:
                submit_renders(plan)
        bar = tqdm(total=todo, unit="item", desc="rendering", disable=None if progress else True)
        while futures:
            done, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                kind, plan, inst = futures.pop(fut)
                if kind == "prepare":
                    if _finish_prepare(root, fut, plan, report):
                        usable = True
                        submit_renders(plan)
                    else:
                        bar.total -= len(plan.todo)
                        bar.refresh()
                    bar.set_postfix(pieces=f"{report.pieces_prepared}/{len(prepare)}")
                else:
                    _finish_render(fut, plan, inst, report)
                    bar.update(1)
    except BaseException:
        # Stop at once (Ctrl-C, a broken pool): the next run redoes what was in flight.
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            proc.terminate()
        raise
    finally:
        if bar is not None:
            bar.close()
    pool.shutdown()
    return usable


def _finish_prepare(root: Path, fut: cf.Future, plan: _PiecePlan, report: BuildReport) -> bool:
    """Write a prepared piece's roll (and MIDI cache); record it as skipped if it failed."""
    piece = plan.piece
    try:
        roll, midi_bytes, stats = fut.result()
    except BrokenProcessPool:
        raise
    except (MidiError, ValueError, OSError, UserError) as err:
        reason = str(err).removeprefix(f"{piece.source}: ")  # MidiError starts with the path
        report.skipped.append({"source": piece.source, "reason": reason})
        return False
    except Exception as err:  # a bug in a converter must not stop a long build
        report.skipped.append({"source": piece.source, "reason": f"{type(err).__name__}: {err}"})
        return False
    _make_root(root)
    if midi_bytes is not None:
        cache = root / D.SOURCES / f"{piece.id}.mid"
        cache.parent.mkdir(exist_ok=True)
        atomic_write(cache, lambda tmp: Path(tmp).write_bytes(midi_bytes))
        plan.midi_path = str(cache)
    save_npy(D.roll_path(root, piece.id), roll)
    meta = {"id": piece.id, "source": piece.source, "split": piece.split}
    if piece.group is not None:
        meta["group"] = piece.group
    meta |= {"frames": roll.shape[1], **stats, "versions": piece_versions()}
    save_json(root / D.ROLLS / f"{piece.id}.json", meta)
    report.pieces_prepared += 1
    report.dropped_notes += stats["dropped_out_of_range"] + stats["dropped_drums"]
    plan.ready = True
    return True


@functools.cache
def piece_versions() -> dict[str, str]:
    """The versions of what turns a source into a piece (a converted score's notes and an
    augmentation's random draws can change with them), recorded in every piece sidecar."""
    versions = {"mel2mel": __version__, "numpy": np.__version__}
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        versions["music21"] = importlib.metadata.version("music21")
    return versions


def _finish_render(fut: cf.Future, plan: _PiecePlan, inst: Any, report: BuildReport) -> None:
    item_id = f"{plan.piece.id}/{inst.slug}"
    try:
        meta = fut.result()
    except BrokenProcessPool:
        raise
    except Exception as err:
        report.failed.append({"id": item_id, "reason": f"{type(err).__name__}: {err}"})
        return
    report.items_built += 1
    report.audio_seconds += meta["samples"] / C.SAMPLE_RATE
    if meta["clipped"]:
        report.clipped.append((item_id, meta["clipped"], meta["peak"]))
