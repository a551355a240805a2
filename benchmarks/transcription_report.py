"""Scoring and the report of ``eval_transcription.py``: note matching with mir_eval, counts,
and the tables (Markdown) and JSON it prints.

Not a script: ``eval_transcription.py`` imports it (it lives next to it in ``benchmarks/``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import eval_instruments as EI
import numpy as np
import torch

ONSET_TOLERANCE = 0.05  # seconds
PITCH_TOLERANCE = 50.0  # cents: the nearest semitone
OFFSET_RATIO = 0.2  # mir_eval's default, for the "with offsets" numbers
END_MARGIN = 0.2  # seconds at the end of a clip whose onsets are not scored
REFERENCE = "FluidSynth"


# -- scoring -------------------------------------------------------------------------------


@dataclass
class Counts:
    """Note counts summed over clips."""

    ref: int = 0
    est: int = 0
    onset: int = 0  # matched by onset and pitch
    offset: int = 0  # matched by onset, pitch and offset

    def add(self, other: Counts) -> None:
        self.ref += other.ref
        self.est += other.est
        self.onset += other.onset
        self.offset += other.offset

    def prf(self, offsets: bool = False) -> tuple[float, float, float]:
        """Precision, recall, F1."""
        hit = self.offset if offsets else self.onset
        p = hit / self.est if self.est else 0.0
        r = hit / self.ref if self.ref else 0.0
        return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def score(ref: tuple[np.ndarray, np.ndarray], est: np.ndarray, seconds: float) -> Counts:
    """Match transcribed notes ``est`` against the reference notes of one clip."""
    import mir_eval

    ref_iv, ref_pitch = ref
    est = est[est[:, 0] < seconds - END_MARGIN]
    est_iv = np.stack([est[:, 0], np.maximum(est[:, 1], est[:, 0] + 1e-3)], axis=1)
    hz = lambda m: 440.0 * 2.0 ** ((np.asarray(m, dtype=float) - 69) / 12)  # noqa: E731
    common = dict(
        ref_intervals=ref_iv, ref_pitches=hz(ref_pitch), est_intervals=est_iv,
        est_pitches=hz(est[:, 2]), onset_tolerance=ONSET_TOLERANCE,
        pitch_tolerance=PITCH_TOLERANCE,
    )  # fmt: skip
    onset = mir_eval.transcription.match_notes(**common, offset_ratio=None)
    offset = mir_eval.transcription.match_notes(**common, offset_ratio=OFFSET_RATIO)
    return Counts(len(ref_iv), len(est), len(onset), len(offset))


@dataclass
class Results:
    """Everything measured, by renderer label."""

    counts: dict[str, dict[str, Counts]] = field(default_factory=dict)  # renderer -> instrument
    clips: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # renderer -> inst -> wavs
    # renderer -> instrument -> log-mel MAE (dB) of each clip against FluidSynth's
    distance: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    per_clip: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    models: list[str] = field(default_factory=list)

    def add_time(self, key: str, seconds: float) -> None:
        self.timings[key] = self.timings.get(key, 0.0) + seconds


# -- the report ----------------------------------------------------------------------------


def fmt_prf(c: Counts, offsets: bool = False) -> str:
    p, r, f = c.prf(offsets)
    return f"{f:.3f} ({p:.2f}/{r:.2f})"


def machine() -> str:
    """CPU model, cores available, torch and numpy versions."""
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cores} cores visible, torch {torch.__version__}, numpy {np.__version__}"


def report(
    args: argparse.Namespace,
    res: Results,
    names: list[str],
    pieces: list[dict],
    recognition: dict[str, np.ndarray] | None,
    transcriber: str,
    merged: int,
) -> None:
    labels = list(res.counts)
    ours = labels[1:]
    total = {lab: Counts() for lab in labels}
    for lab in labels:
        for c in res.counts[lab].values():
            total[lab].add(c)
    out = [
        f"pieces ({len(pieces)}, first {args.seconds:g} s each): "
        + ", ".join(p["id"] for p in pieces),
        f"transcriber: {transcriber}; {total[REFERENCE].ref} reference notes "
        f"({merged} unison duplicates merged)",
        *(f"model: {m}" for m in res.models),
        f"machine: {machine()}, {args.threads} thread(s)",
        "",
        "Note-level onset F1 (precision/recall), onset tolerance 50 ms, pitch to the nearest "
        "semitone, offsets ignored:",
        "",
    ]
    head = ["instrument", "notes", REFERENCE, *ours, *(f"{o} / FS" for o in ours)]
    rows = [*((n, res.counts[REFERENCE][n].ref) for n in names), ("all", total[REFERENCE].ref)]
    out += [f"| {' | '.join(head)} |", "|" + "---|" * len(head)]
    for name, n_ref in rows:
        counts = {lab: total[lab] if name == "all" else res.counts[lab][name] for lab in labels}
        f_ref = counts[REFERENCE].prf()[2]
        ratios = [counts[o].prf()[2] / f_ref if f_ref else float("nan") for o in ours]
        cells = [name, str(n_ref), *(fmt_prf(counts[lab]) for lab in labels)]
        cells += [f"{r:.2f}" for r in ratios]
        out.append(f"| {' | '.join(cells)} |")
    out += ["", "The same with offsets (within 20% of the note or 50 ms), F1:", ""]
    out += [f"| instrument | {' | '.join(labels)} |", "|" + "---|" * (len(labels) + 1)]
    for name in [*names, "all"]:
        cells = [
            f"{(total[lab] if name == 'all' else res.counts[lab][name]).prf(True)[2]:.3f}"
            for lab in labels
        ]
        out.append(f"| {name} | {' | '.join(cells)} |")
    if res.distance:
        out += ["", "How far each render sounds from FluidSynth's: log-mel MAE (dB) of the audio "
                "against FluidSynth's, mean over clips:", ""]  # fmt: skip
        out += [f"| instrument | {' | '.join(ours)} |", "|" + "---|" * (len(ours) + 1)]
        for name in [*names, "all"]:
            cells = []
            for lab in ours:
                by = res.distance[lab]
                values = [d for n in names for d in by[n]] if name == "all" else by[name]
                cells.append(f"{np.mean(values):.2f}")
            out.append(f"| {name} | {' | '.join(cells)} |")
    if recognition is not None:
        n_train = int(res.timings["classifier: train clips"])
        out += [
            "",
            f"Instrument recognition: share of {args.clip_seconds:g}-s clips classified as the "
            f"instrument that was rendered (classifier trained on {n_train} FluidSynth clips "
            "of the train split); most frequent wrong answer for ours:",
            "",
            f"| instrument | clips | {' | '.join(labels)} | {ours[0]} mistaken for |",
            "|" + "---|" * (len(labels) + 3),
        ]
        for i, name in enumerate([*names, "all"]):
            cells = [name]
            m0 = recognition[REFERENCE]
            cells.append(str(int(m0[i].sum())) if name != "all" else str(int(m0.sum())))
            for lab in labels:
                m = recognition[lab]
                acc = np.trace(m) / m.sum() if name == "all" else m[i, i] / max(m[i].sum(), 1)
                cells.append(f"{acc:.0%}")
            if name == "all":
                cells.append("")
            else:
                row = recognition[ours[0]][i].copy()
                row[i] = 0
                j = int(row.argmax())
                cells.append(f"{names[j]} ({row[j]})" if row[j] else "-")
            out.append(f"| {' | '.join(cells)} |")
        if args.plot:
            title = (
                f"Instrument classifier (logistic regression on librosa statistics, trained on "
                f"FluidSynth train clips); {len(pieces)} test pieces, {args.clip_seconds:g}-s clips"
            )
            EI.plot_confusions(recognition, names, Path(args.plot), title)
            out.append(f"\nconfusion matrices: {args.plot}")
    out += ["", "wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in res.timings.items())]
    print("\n".join(out))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "pieces": [p["id"] for p in pieces],
                    "seconds": args.seconds,
                    "vocoders": args.vocoder,
                    "transcriber": transcriber,
                    "machine": machine(),
                    "models": res.models,
                    "counts": {
                        lab: {n: vars(c) for n, c in by.items()} for lab, by in res.counts.items()
                    },
                    "confusion": {k: v.tolist() for k, v in (recognition or {}).items()},
                    "log_mel_distance": res.distance,
                    "instruments": names,
                    "per_clip": res.per_clip,
                    "timings": res.timings,
                },
                indent=1,
            )
        )
