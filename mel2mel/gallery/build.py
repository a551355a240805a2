"""``mel2mel gallery build``: the paper's sample page for a dataset's test tracks.

One row per (test track, instrument), one column per configuration
(:mod:`mel2mel.gallery.configs`); each cell an audio clip (Ogg/Opus by default, written by
libsndfile through soundfile) and a mel image. Each column's header carries figures measured
on its clips against the original: log-mel error and per-bin r (here), and, when
``benchmarks/eval_transcription.py --gallery`` has run, transcription and recognition.

A build can be interrupted and run again: a clip whose file exists and whose settings,
segment and model weights are unchanged is kept (``gallery.json`` records them).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from tqdm import tqdm

from mel2mel import constants as C
from mel2mel import pretrained
from mel2mel.audio import log_mel
from mel2mel.data.corpus import piece_midi, select_test_pieces
from mel2mel.data.dataset import read_manifest
from mel2mel.errors import UserError
from mel2mel.fileio import atomic_write
from mel2mel.gallery.configs import ClipConfig, check_configs, default_configs
from mel2mel.gallery.page import mel_image, write_bytes, write_page
from mel2mel.gallery.render import (
    ROW_PEAK,
    ClipMaker,
    Segment,
    choose_segment,
    clip_figures,
    fade,
)
from mel2mel.instruments import slugify
from mel2mel.listening.site import FORMAT, VERSION
from mel2mel.models import export

#: Audio formats a gallery can use: suffix -> (libsndfile format, subtype).
AUDIO_FORMATS = {"ogg": ("OGG", "OPUS"), "mp3": ("MP3", "MPEG_LAYER_III"), "wav": ("WAV", "PCM_16")}
MAX_PEAK = 0.99
NOTE = (
    "Each row plays the same segment of one test track (never trained on) for one "
    "instrument; each column makes it another way. All clips of a row share one gain, so "
    "loudness differences are the systems'. Figures in a header are means over that column's "
    "clips against the original (log-mel error in dB, mean per-bin Pearson r"
    "; onset F1 ratio and recognition when measured)."
)


@dataclass
class GalleryReport:
    """What a build did."""

    site: Path
    rows: int
    made: int
    reused: int
    seconds: float
    megabytes: float


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes() if p.is_file() else str(p).encode())
    return h.hexdigest()[:16]


def weights_fingerprint(cfg: ClipConfig) -> str:
    """A digest of the weight files behind ``cfg`` (empty for the reference clips), so that a
    retrained model's clips are made again."""
    paths: list[Path] = []
    if cfg.kind == "model":
        model = pretrained.path() if cfg.model == "pretrained" else cfg.model
        weights, desc = export.export_paths(model)
        paths += [weights, desc]
        if cfg.texture != 0.0:
            paths += list(export.stem_paths(desc.with_name(desc.stem + "_texture")))
    if cfg.kind in ("model", "vocoder") and cfg.vocoder != "griffinlim":
        assert cfg.vocoder is not None
        stem = export.vocoder_path(cfg.vocoder) if cfg.vocoder in export.VOCODER_STEMS else None
        paths += list(export.stem_paths(stem if stem is not None else cfg.vocoder))
    return _digest(paths) if paths else ""


def _recorded_clips(site: Path) -> list[dict[str, Any]] | None:
    """The clips listed by ``site/gallery.json``: ``None`` if there is no readable document,
    raises if it is not a gallery's."""
    doc_path = site / "gallery.json"
    try:
        doc = json.loads(doc_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if doc.get("format") != FORMAT:
        raise UserError(f"{doc_path} is not a mel2mel gallery; use -f to replace it")
    return list(doc.get("clips", []))


def _earlier_clips(site: Path, force: bool) -> list[dict[str, Any]]:
    """The clips an earlier build of ``site`` listed (``[]`` for a new gallery); refuses a
    folder that holds something else unless ``force``."""
    if site.exists() and not site.is_dir():
        raise UserError(f"{site} exists and is not a folder")
    if not (site / "gallery.json").is_file():
        if site.is_dir() and any(site.iterdir()) and not force:
            raise UserError(f"{site} is not empty and holds no gallery; use -f to write there")
        return []
    try:
        return _recorded_clips(site) or []
    except UserError:
        if force:  # -f over another document: nothing of it is ours to reuse or clean
            return []
        raise


def _remove_dropped(site: Path, before: list[dict[str, Any]], clips: list[dict[str, Any]]) -> int:
    """Delete the audio and mel files the earlier build listed (``before``) that the new one
    does not (a dropped configuration, track or instrument, another audio format), and the
    folders that leaves empty; files the gallery never listed are not touched. Returns the
    number of files removed."""
    keep = {c[k] for c in clips for k in ("audio", "mel")}
    removed = 0
    for rel in {c.get(k) for c in before for k in ("audio", "mel")} - keep - {None}:
        path = site / rel
        if path.is_file():
            path.unlink()
            removed += 1
            for folder in path.parents:
                if folder == site or any(folder.iterdir()):
                    break
                folder.rmdir()
    return removed


def write_clip(path: Path, audio: np.ndarray, audio_format: str) -> None:
    """Encode ``audio`` (16 kHz mono) to ``path`` atomically."""
    fmt, subtype = AUDIO_FORMATS[audio_format]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(
        path, lambda tmp: sf.write(tmp, audio, C.SAMPLE_RATE, format=fmt, subtype=subtype),
        path.suffix,
    )  # fmt: skip


def build_gallery(
    data: str | Path,
    site: str | Path,
    configs: list[ClipConfig] | None = None,
    *,
    tracks: int = 14,
    track_ids: tuple[str, ...] = (),
    instruments: list[str] | None = None,
    seconds: float = 10.0,
    audio_format: str = "ogg",
    device: str = "cpu",
    title: str = "mel2mel: synthesized audio samples",
    force: bool = False,
    progress: bool = True,
) -> GalleryReport:
    """Build (or resume) the gallery of ``data``'s test tracks in ``site``.

    Parameters
    ----------
    data:
        A dataset from ``mel2mel data build`` (its items hold FluidSynth's audio and mel).
    configs:
        The columns (default: :func:`~mel2mel.gallery.configs.default_configs`, the WaveNet
        column only when CUDA is available); ``original`` is added if missing.
    tracks, track_ids:
        How many test tracks, spread over the test split, or which ones.
    instruments:
        Instrument names of the dataset to show (default: all of them).
    seconds:
        Length of each segment (the busiest ``seconds`` of the track by note onsets).
    audio_format:
        A key of :data:`AUDIO_FORMATS`.
    force:
        Make every clip again, and write into a folder that holds something else.

    Raises
    ------
    UserError
        For a folder that is not a dataset, unknown tracks or instruments, a configuration
        whose model or vocoder cannot be loaded, or an output folder that is not a gallery.
    """
    import torch

    start_time = time.perf_counter()
    data, site = Path(data), Path(site)
    if audio_format not in AUDIO_FORMATS:
        raise UserError(f"--audio-format must be one of {', '.join(AUDIO_FORMATS)}")
    if not 1.0 <= seconds <= 60.0:
        raise UserError(f"--seconds must be between 1 and 60, got {seconds:g}")
    if not (data / "manifest.json").is_file():
        raise UserError(f"{data} is not a dataset (no manifest.json); see 'mel2mel data build'")
    manifest = read_manifest(data)
    configs = check_configs(configs or default_configs(wavenet=torch.cuda.is_available()))
    names = [i["name"] for i in manifest["instruments"]]
    chosen = instruments or names
    unknown = [i for i in chosen if i not in names]
    if unknown:
        raise UserError(f"unknown instrument(s) {', '.join(unknown)}; the dataset has: "
                        f"{', '.join(names)}")  # fmt: skip
    pieces = select_test_pieces(manifest, tracks, track_ids)
    items = {(it["piece"], names[it["instrument"]]): it["id"] for it in manifest["items"]}
    rows = [(p, i) for p in pieces for i in chosen if (p["id"], i) in items]
    if not rows:
        raise UserError(f"{data} has no rendered test item for these tracks and instruments")
    before = _earlier_clips(site, force)  # with -f too: their files are cleaned up at the end
    old = {} if force else {(c["track"], c["instrument"], c["config"]): c for c in before}
    site.mkdir(parents=True, exist_ok=True)
    fingerprints = {c.name: weights_fingerprint(c) for c in configs}
    maker = ClipMaker(data, device)
    segments: dict[str, Segment] = {}
    clips: list[dict[str, Any]] = []
    made = reused = 0
    for row, (piece, inst) in enumerate(
        tqdm(rows, desc="gallery rows", unit="row", disable=not progress)
    ):
        pid = piece["id"]
        if pid not in segments:
            midi = piece_midi(data, piece, site / ".cache")
            segments[pid] = choose_segment(data, piece, midi, seconds)
        seg = segments[pid]
        item_id = items[(pid, inst)]
        base = Path(pid) / slugify(inst, sep="-")
        ref = maker.original(seg, item_id)
        ref_mel = log_mel(ref)
        gain = ROW_PEAK / max(float(np.abs(ref).max()), 1e-4)
        top_db = float(ref_mel.max() * C.DB_PER_NEPER + 20 * np.log10(gain))
        for cfg in configs:
            rel_audio = (Path("audio") / base / f"{cfg.name}.{audio_format}").as_posix()
            rel_mel = (Path("mel") / base / f"{cfg.name}.png").as_posix()
            key = {"spec": cfg.spec(), "weights": fingerprints[cfg.name],
                   "first": seg.first, "frames": seg.frames}  # fmt: skip
            prev = old.get((pid, inst, cfg.name))
            if (
                prev is not None
                and all(prev.get(k) == v for k, v in key.items())
                and prev.get("audio") == rel_audio
                and (site / rel_audio).is_file()
                and (site / rel_mel).is_file()
            ):
                clips.append(prev)
                reused += 1
                continue
            audio = maker.clip(cfg, seg, item_id, inst)
            figures = clip_figures(audio, ref_mel)
            audio = fade(audio * gain)
            peak = float(np.abs(audio).max())
            limited = peak > MAX_PEAK
            if limited:
                audio *= MAX_PEAK / peak
            write_clip(site / rel_audio, audio, audio_format)
            write_bytes(site / rel_mel, mel_image(log_mel(audio), top_db=top_db))
            clips.append({"track": pid, "instrument": inst, "config": cfg.name,
                          "audio": rel_audio, "mel": rel_mel, **key, "figures": figures,
                          "gain": round(gain, 6), "limited": limited})  # fmt: skip
            made += 1
        if made and row % 10 == 9:  # what an interruption would keep
            write_page(site, _document(data, title, seconds, audio_format, pieces, segments,
                                       chosen, configs, clips), with_html=False)  # fmt: skip
    doc = _document(data, title, seconds, audio_format, pieces, segments, chosen, configs, clips)
    write_page(site, doc)
    _remove_dropped(site, before, clips)
    size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file() and ".cache" not in p.parts)
    return GalleryReport(site, len(rows), made, reused, time.perf_counter() - start_time,
                         size / 1e6)  # fmt: skip


def _document(
    data: Path,
    title: str,
    seconds: float,
    audio_format: str,
    pieces: list[dict[str, Any]],
    segments: dict[str, Segment],
    instruments: list[str],
    configs: list[ClipConfig],
    clips: list[dict[str, Any]],
) -> dict[str, Any]:
    """The contents of ``gallery.json``."""
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "title": title,
        "note": NOTE,
        "data": str(data),
        "segment_seconds": seconds,
        "sample_rate": C.SAMPLE_RATE,
        "audio_format": audio_format,
        "tracks": [
            {
                "id": p["id"],
                "title": p["id"],
                "start": round(segments[p["id"]].start, 3),
                "seconds": round(segments[p["id"]].seconds, 3),
            }
            for p in pieces
            if p["id"] in segments
        ],
        "instruments": instruments,
        "configs": [c.to_json() for c in configs],
        "clips": clips,
    }
    return refresh_figures(doc)


def refresh_figures(doc: dict[str, Any]) -> dict[str, Any]:
    """Set every column's ``figures`` in a gallery document from its clips; returns ``doc``."""
    by_config: dict[str, list[dict[str, Any]]] = {c["name"]: [] for c in doc["configs"]}
    for clip in doc["clips"]:
        by_config[clip["config"]].append(clip)
    ref_f1 = column_figures(by_config["original"]).get("onset_f1")
    for c in doc["configs"]:
        c["figures"] = column_figures(by_config[c["name"]], ref_f1)
    return doc


def column_figures(
    clips: list[dict[str, Any]], reference_f1: float | None = None
) -> dict[str, float | None]:
    """A column's figures: the means over its clips of the log-mel error and r, and, when
    every clip carries the judges' counts (``benchmarks/eval_gallery.py``), the onset F1 of
    the transcriptions summed over clips, its ratio to the original's (``reference_f1``) and
    the share of classifier windows recognized as the right instrument."""
    out: dict[str, float | None] = {}
    for k in ("mae_db", "r"):
        values = [c["figures"][k] for c in clips if c["figures"].get(k) is not None]
        out[k] = round(float(np.mean(values)), 4) if values else None
    judged = [c["judges"] for c in clips if c.get("judges")]
    if clips and len(judged) == len(clips):
        ref, est, hit = (sum(j[k] for j in judged) for k in ("ref", "est", "onset"))
        f1 = 2 * hit / (ref + est) if ref + est else 0.0
        out["onset_f1"] = round(f1, 4)
        if reference_f1:
            out["onset_f1_ratio"] = round(f1 / reference_f1, 4)
        windows = sum(j["windows"] for j in judged)
        out["recognition"] = (
            round(sum(j["recognized"] for j in judged) / windows, 4) if windows else None
        )
    return out
