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
import dataclasses
import json
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from mel2mel import constants as C
from mel2mel.data import dataset as D
from mel2mel.data.corpus import (
    Instrument,
    Piece,
    convert_music21,
    derived_pieces,
    discover_midi,
    music21_pieces,
    parse_shard,
    resolve_instruments,
    shard_of,
)
from mel2mel.data.render import (
    RenderSettings,
    check_soundfont,
    clip_stats,
    find_fluidsynth,
    fluidsynth_version,
    force_program,
    from_int16,
    render_midi,
    temp_path,
    to_int16,
)
from mel2mel.errors import UserError, require
from mel2mel.midi import MidiError, NoteSequence, load_midi, piano_roll, read_notes

MEL_CHUNK_FRAMES = 4096  # bounds the STFT's memory to ~20 MB whatever the piece's length

# -- files ------------------------------------------------------------------------------------


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` that never leaves a partial file under ``path``."""
    _atomic_write(path, lambda f: np.save(f, np.ascontiguousarray(array), allow_pickle=False))


def save_json(path: Path, obj: Any) -> None:
    """Atomic JSON write."""
    _atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1).encode("utf-8")))


def remove_temp_files(root: Path, piece: str) -> int:
    """Remove what an interrupted build left for ``piece``; returns how many files."""
    found = list((root / D.ITEMS / piece).glob(".*.tmp-*"))
    for sub in (D.ROLLS, D.SOURCES, D.SKIPPED):
        found += (root / sub).glob(f".{piece}.*.tmp-*")
    for path in found:
        path.unlink(missing_ok=True)
    return len(found)


# -- worker side ------------------------------------------------------------------------------

_LOGMEL: Any = None


def _init_worker() -> None:
    # One intra-op thread per worker: the pool already uses every core, and a forked child
    # must not touch the parent's OpenMP thread pool. Ctrl-C is handled by the parent.
    import torch

    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _logmel_module() -> Any:
    """The process's ``LogMel``; built once (librosa's filterbank import takes seconds)."""
    global _LOGMEL
    if _LOGMEL is None:
        from mel2mel.audio import LogMel

        _LOGMEL = LogMel()
    return _LOGMEL


def log_mel(audio: np.ndarray, chunk_frames: int = MEL_CHUNK_FRAMES) -> np.ndarray:
    """``mel2mel.audio.LogMel`` of ``audio`` ``float32[N]`` -> ``float32[N_MELS x T]``, in chunks.

    Frames ``[a, b)`` are taken from the log-mel of the padded signal slice their windows
    cover, so the result equals ``LogMel()(audio)`` (to float rounding) while the STFT of a
    ten-minute piece never has to be held in memory at once.
    """
    import torch

    logmel = _logmel_module()
    hop, half = C.HOP_LENGTH, C.N_FFT // 2
    ctx = half // hop  # frames whose window reaches into LogMel's own zero padding
    total = C.num_frames(len(audio))
    padded = np.pad(np.asarray(audio, dtype=np.float32), (half, half))
    out = np.empty((C.N_MELS, total), dtype=np.float32)
    with torch.inference_mode():
        for a in range(0, total, chunk_frames):
            b = min(a + chunk_frames, total)
            seg = torch.from_numpy(padded[a * hop : (b - 1) * hop + C.N_FFT])
            out[:, a:b] = logmel(seg)[:, ctx : ctx + b - a].numpy()
    return out


def _source_midi(piece: Piece, cached: str | None) -> tuple[str | bytes, bool, NoteSequence]:
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


def _prepare_piece(
    piece: Piece, cached: str | None, base_cache: str | None = None
) -> tuple[np.ndarray, bytes | None, dict]:
    """Roll ``uint8[176 x T_roll]``, MIDI bytes to cache (or None) and the piece's sidecar facts.

    ``cached`` is the piece's own MIDI cache, ``base_cache`` that of the score a derived piece
    (a recipe, see :class:`~mel2mel.data.corpus.Piece`) is made from, when they exist.
    """
    from mel2mel.data.perform import excerpt_midi, perform
    from mel2mel.data.textures import texture_piece

    facts: dict[str, Any] = {}
    midi_bytes: bytes | None
    if piece.recipe is None:
        source, converted, seq = _source_midi(piece, cached)
        midi_bytes = source if isinstance(source, bytes) and converted else None
    else:  # regenerated each time: deterministic, and its facts are recorded
        kind, seed, seconds = piece.recipe
        if kind == "texture":
            midi_bytes, facts["augment"] = texture_piece(seed, float(seconds or 20.0))
        else:
            base, _, _ = _source_midi(piece, base_cache)
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
class _RenderTask:
    root: str
    piece: str
    midi_path: str
    instrument: Instrument
    settings: RenderSettings
    fluidsynth: str


def _render_item(task: _RenderTask) -> dict[str, Any]:
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


# -- main side --------------------------------------------------------------------------------


@dataclass
class BuildReport:
    """What a build did; :meth:`summary` turns it into the lines the CLI prints."""

    out: Path
    pieces: int = 0
    instruments: int = 0
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
        lines = [
            f"built {self.items_built} item(s) ({self.pieces} piece(s) x {self.instruments} "
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


def manifest_summary(manifest: dict[str, Any], root: Path) -> str:
    """One line: where the manifest is and what it lists."""
    counts = {s: sum(it["split"] == s for it in manifest["items"]) for s in D.SPLITS}
    split = " / ".join(f"{s} {n}" for s, n in counts.items())
    clipped = sum(it["clipped"] > 0 for it in manifest["items"])
    return (
        f"manifest: {root / D.MANIFEST} ({len(manifest['pieces'])} piece(s), "
        f"{len(manifest['items'])} item(s): {split}; {clipped} clipped, "
        f"{len(manifest['skipped'])} skipped input(s))"
    )


def check_output_dir(root: Path) -> None:
    """UserError unless ``root`` can be created or is a writable dataset (or empty) folder."""
    if root.exists():
        if not root.is_dir():
            raise UserError(f"output {root} exists and is not a folder")
        if not os.access(root, os.W_OK | os.X_OK):
            raise UserError(f"output folder {root} is not writable")
        names = {p.name for p in root.iterdir()}
        if names and not names & {D.MANIFEST, D.ROLLS, D.ITEMS, D.SOURCES, D.SKIPPED}:
            raise UserError(f"output folder {root} is not empty and not a mel2mel dataset")
        return
    parent = root.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot create output folder {root}: {parent} is not a writable folder")


@dataclass
class _PiecePlan:
    piece: Piece
    midi_path: str | None  # None until prepared (a music21 score without cached MIDI)
    ready: bool  # roll and sidecar on disk
    todo: list[Instrument]


def _plan(
    root: Path, pieces: Sequence[Piece], instruments: Sequence[Instrument], settings: RenderSettings
) -> tuple[list[_PiecePlan], int, int]:
    """Per-piece work left, the number of finished items and of removed temporary files."""
    plans, finished, removed, mismatch = [], 0, 0, []
    for piece in pieces:
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


def settings_for(inst: Instrument, settings: RenderSettings) -> RenderSettings:
    """The render settings of one instrument: its own SoundFont, if it has one."""
    if inst.soundfont is None:
        return settings
    return dataclasses.replace(settings, soundfont=inst.soundfont)


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
        :class:`~mel2mel.data.corpus.Instrument` objects; ``None`` for the paper's ten.
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
    seed:
        Seed of the performances and textures (recorded per piece in the manifest).
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
    default = (2, 300) if midi_dir is None else (0, 0)
    variants = default[0] if variants is None else variants
    textures = default[1] if textures is None else textures
    if variants < 0 or textures < 0:
        raise UserError("--variants and --textures must be at least 0")
    if max_seconds is not None and not max_seconds >= 2:
        raise UserError(f"--max-seconds must be at least 2, got {max_seconds:g}")
    pieces = derived_pieces(
        pieces[:limit], variants=variants, textures=textures, seed=seed, max_seconds=max_seconds
    )
    if not plain:
        pieces = [p for p in pieces if p.recipe is not None and p.recipe[0] != "excerpt"]
    if split is not None:
        if split not in D.SPLITS:
            raise UserError(f"--split must be one of {', '.join(D.SPLITS)}, got {split!r}")
        pieces = [p for p in pieces if p.split == split]
    pieces = [p for p in pieces if shard_of(p.group or p.id, shard_n) == shard_i]
    if not pieces:
        raise UserError("nothing to build: no piece is left after --no-plain/--split/--shard")
    check_output_dir(root)

    plans, finished, removed = _plan(root, pieces, insts, settings)
    report = BuildReport(root, len(pieces), len(insts), finished, temp_files_removed=removed)
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
    # seconds on them; they run only single-threaded torch code (see _init_worker).
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork") if "fork" in methods else None
    if ctx is not None:
        _logmel_module()  # once here rather than once per forked worker
    pool = cf.ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=_init_worker)
    futures: dict[cf.Future, tuple[str, _PiecePlan, Instrument | None]] = {}

    def submit_renders(plan: _PiecePlan) -> None:
        (root / D.ITEMS / plan.piece.id).mkdir(parents=True, exist_ok=True)
        for inst in plan.todo:
            task = _RenderTask(
                str(root),
                plan.piece.id,
                str(plan.midi_path),
                inst,
                settings_for(inst, settings),
                version,
            )
            futures[pool.submit(_render_item, task)] = ("render", plan, inst)

    bar = None
    try:
        for plan in plans:
            if not plan.ready:
                base = root / D.SOURCES / f"{plan.piece.group}.mid"
                base_cache = str(base) if plan.piece.group and base.is_file() else None
                futures[pool.submit(_prepare_piece, plan.piece, plan.midi_path, base_cache)] = (
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
        _atomic_write(cache, lambda f: f.write(midi_bytes))
        plan.midi_path = str(cache)
    save_npy(D.roll_path(root, piece.id), roll)
    meta = {"id": piece.id, "source": piece.source, "split": piece.split}
    if piece.group is not None:
        meta["group"] = piece.group
    save_json(root / D.ROLLS / f"{piece.id}.json", {**meta, "frames": roll.shape[1], **stats})
    report.pieces_prepared += 1
    report.dropped_notes += stats["dropped_out_of_range"] + stats["dropped_drums"]
    plan.ready = True
    return True


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


# -- manifest ---------------------------------------------------------------------------------


def index_dataset(
    root: str | os.PathLike,
    *,
    instruments: Sequence[Instrument] | None = None,
    settings: RenderSettings | None = None,
) -> dict[str, Any]:
    """Rebuild ``manifest.json`` from the finished files under ``root`` and return it.

    Instruments are identified by name (their items' file names derive from it). They are
    ordered as in the previous manifest, then as in ``instruments``, then by program and name,
    so that item ``"instrument"`` indices stay stable across rebuilds. An instrument rendered
    with its own SoundFont lists it (``"soundfont"``); if the items use several SoundFonts the
    top-level ``"soundfont"`` (and ``render["soundfont"]``) is ``null``.
    """
    root = Path(root)
    if not (root / D.ROLLS).is_dir() and not (root / D.ITEMS).is_dir():
        raise UserError(f"{root} is not a mel2mel dataset folder (no rolls/ or items/)")
    old = D.read_json(root / D.MANIFEST) or {}
    pieces: dict[str, dict[str, Any]] = {}
    for path in sorted((root / D.ROLLS).glob("*.json")):
        meta = D.finished_piece(root, path.stem)
        if meta is not None:
            keys = ("id", "source", "split", "frames", "group", "augment")
            pieces[path.stem] = {k: meta[k] for k in keys if k in meta}
    metas = []
    for piece in pieces:
        for path in sorted((root / D.ITEMS / piece).glob("[!.]*.json")):
            meta = D.finished_item(root, f"{piece}/{path.stem}")
            if meta is not None:
                metas.append(meta)

    known: dict[str, dict[str, Any]] = {}
    for m in metas:
        known.setdefault(m["instrument"]["name"], m["instrument"])
    order: list[str] = []
    hints = [i["name"] for i in old.get("instruments", [])]
    hints += [i.name for i in instruments or []]
    by_program = sorted(known, key=lambda n: (known[n]["program"], n))
    for name in [*hints, *by_program]:
        if name in known and name not in order:
            order.append(name)
    index = {name: i for i, name in enumerate(order)}
    items = [
        {
            "id": m["id"],
            "piece": m["piece"],
            "instrument": index[m["instrument"]["name"]],
            "split": pieces[m["piece"]]["split"],
            "frames": m["frames"],
            "samples": m["samples"],
            "peak": m["peak"],
            "clipped": m["clipped"],
        }
        for m in metas
    ]
    items.sort(key=lambda it: (it["piece"], it["instrument"]))
    skipped = []
    for path in sorted((root / D.SKIPPED).glob("[!.]*.json")):
        marker = D.read_json(path)
        if marker is not None and path.stem not in pieces:
            skipped.append({k: str(marker.get(k)) for k in ("source", "reason")})
    render = settings.to_dict() if settings else metas[0]["render"] if metas else old.get("render")
    if len({m["render"].get("soundfont") for m in metas}) > 1:
        render = {**(render or {}), "soundfont": None}  # each instrument lists its own
    manifest = {
        "format": D.FORMAT,
        "sample_rate": C.SAMPLE_RATE,
        "hop_length": C.HOP_LENGTH,
        "n_mels": C.N_MELS,
        "soundfont": (render or {}).get("soundfont", old.get("soundfont")),
        "render": render,
        "instruments": [
            {k: known[name][k] for k in ("name", "program", "soundfont") if k in known[name]}
            for name in order
        ],
        "pieces": list(pieces.values()),
        "items": items,
        "skipped": skipped,
    }
    save_json(root / D.MANIFEST, manifest)
    return manifest
