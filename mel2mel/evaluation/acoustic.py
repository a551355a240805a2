"""Paper-style evaluation of the acoustic model on whole test pieces.

For every instrument of the test split the model predicts the log-mel of each full piece (not
crops) from its roll, and we report

* the mean absolute log-mel error in decibels. The model works with natural-log *magnitudes*,
  so a difference ``d = ln(a) - ln(b)`` is ``20 * log10(a / b) = 20 / ln(10) * d`` dB
  (about 8.686 dB per neper);
* the paper's analysis: for each of the 80 mel bins, the Pearson correlation between predicted
  and true log-mel over all test frames of that instrument.

Outputs in ``--out``: ``metrics.json`` (everything), ``metrics.csv`` (one row per instrument),
``correlation.csv`` (instrument x mel bin), ``correlation.png`` (correlation vs mel bin, one
line per instrument) and, for a 2-D embedding, ``embedding.png`` (the learned timbre map).
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mel2mel import constants as C
from mel2mel.audio import mel_band_frequencies
from mel2mel.data.corpus import PIECE_SETS, in_piece_set
from mel2mel.data.dataset import load_item, read_manifest
from mel2mel.errors import UserError
from mel2mel.evaluation.report import BinStats, figure, finite_list, nanmean, write_json
from mel2mel.fileio import atomic_write_text
from mel2mel.models.acoustic import UnknownInstrumentError
from mel2mel.models.export import export_paths, load_acoustic
from mel2mel.train.checkpoint import model_from_checkpoint

if TYPE_CHECKING:
    from mel2mel.models.acoustic import Mel2Mel


def load_model(path: str | os.PathLike, device: str = "cpu") -> Mel2Mel:
    """Load an acoustic model from an export (dir/prefix/file) or a training checkpoint/run dir."""
    p = Path(path)
    if p.suffix == ".pt" or (p.is_dir() and (p / "checkpoint.pt").is_file()):
        return model_from_checkpoint(p).to(device)
    if not export_paths(p)[1].is_file():
        raise UserError(f"no acoustic model at {p} (expected an export or a checkpoint)")
    return load_acoustic(p, device=device)


def predict_piece(
    model: Mel2Mel,
    roll: np.ndarray,
    rows: list[int],
    frames: list[int],
    sharpen: float = 0.0,
    contrast: float = 0.0,
) -> list[np.ndarray]:
    """Predict one piece for several instruments at once.

    Parameters
    ----------
    model:
        The acoustic model (eval mode).
    roll:
        float32[176 x T_roll], zero-padded or cut to each requested length.
    rows:
        Embedding rows, one per output.
    frames:
        Frames T_i wanted for each output (the true mel lengths).
    sharpen:
        Strength of the model's detail gains (:meth:`Mel2Mel.sharpen`); 0: the network's
        own prediction.
    contrast:
        Strength of the model's note contrast (:meth:`Mel2Mel.contrast`), applied after the
        gains; 0: none.

    Returns
    -------
    list of float32[M x T_i]
    """
    import torch

    t_max = max(frames)
    x = np.zeros((C.ROLL_CHANNELS, t_max), dtype=np.float32)
    n = min(t_max, roll.shape[1])
    x[:, :n] = roll[:, :n]
    dev = next(model.parameters()).device
    batch = torch.from_numpy(x).to(dev).unsqueeze(0).expand(len(rows), -1, -1)
    with torch.inference_mode():
        index = torch.tensor(rows, device=dev)
        emb = model.embed(index)
        pred = model.sharpen(model(batch, instrument=index), emb, sharpen)
        pred = model.contrast(pred, emb, batch, contrast)
        pred = pred.cpu().numpy()
    return [pred[i, :, :t] for i, t in enumerate(frames)]


VELOCITY_BANDS = C.VELOCITY_BANDS  # pp < 40, mf 40-89, ff >= 90, by the loudest sounding note
#: Registers of a frame (the mean MIDI pitch of its sounding notes).
REGISTERS: dict[str, tuple[int, int]] = {
    "low (A0-B2)": (21, 47),
    "middle (C3-B4)": (48, 71),
    "high (C5-C8)": (72, 108),
}


def frame_groups(roll: np.ndarray, frames: int) -> dict[str, np.ndarray]:
    """Boolean masks ``bool[frames]`` of the velocity band and register of every frame.

    ``roll`` is ``float32[176 x T_roll]`` (velocity / 127); frames where no note sounds (before,
    between and after notes: release tails) belong to no group. Keys are the names of
    :data:`VELOCITY_BANDS` and :data:`REGISTERS`.
    """
    sounding = np.zeros((C.N_KEYS, frames), dtype=np.float32)
    n = min(frames, roll.shape[1])
    sounding[:, :n] = roll[: C.N_KEYS, :n]
    loudest = np.round(sounding.max(axis=0) * 127.0)
    on = sounding > 0
    count = on.sum(axis=0)
    pitch = np.arange(C.MIDI_MIN, C.MIDI_MAX + 1, dtype=np.float64)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pitch = (on * pitch).sum(axis=0) / count
    out = {name: (loudest >= lo) & (loudest <= hi) for name, (lo, hi) in VELOCITY_BANDS.items()}
    for name, (lo, hi) in REGISTERS.items():
        out[name] = (count > 0) & (mean_pitch >= lo) & (mean_pitch < hi + 1)
    return out


def evaluate_acoustic(
    model: Mel2Mel,
    data: str | os.PathLike,
    *,
    split: str = "test",
    pieces: str = "all",
    sharpen: float = 0.0,
    contrast: float = 0.0,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``model`` on every full piece of ``split`` (with its detail gains at strength
    ``sharpen`` and its note contrast at ``contrast``, :func:`predict_piece`).

    ``pieces`` selects the scores as written (``"plain"``), the performances and generated
    pieces of the builder (``"performed"``, see docs/DATA.md), the pieces of one kind
    (``"perform"``, ``"texture"``, ``"strikes"``, ``"solo"``, ``"excerpt"``) or ``"all"``.

    Returns
    -------
    dict
        ``{"split", "pieces", "frames", "instruments": [{"name", "program", "items", "frames",
        "mae_db", "mean_correlation", "sounding_correlation", "sounding_bins",
        "correlation": [M floats or None]}], "overall": {...}, "groups": {band or register:
        {"frames", "mae_db", "mean_correlation", "sounding_correlation",
        "sounding_correlation_min", "sounding_bins"}}, "mel_frequencies_hz": [M]}``; an
        instrument's sounding correlation is its mean per-bin r on the frames where a note
        sounds, over the bins where the reference has sound in at least half of those frames
        (:meth:`BinStats.sounding_bins`, ``sounding_bins`` of them; ``None`` where there are
        none, as in sparse single lines); a group's correlation is the mean over instruments of
        their mean per-bin r on the group's frames, its sounding correlation the same over each
        instrument's bins with sound on those frames, its minimum the lowest instrument's, and
        ``sounding_bins`` their mean count.
    """
    from tqdm import tqdm

    manifest = read_manifest(data)
    names = [i["name"] for i in manifest["instruments"]]
    programs = [i.get("program") for i in manifest["instruments"]]
    if pieces not in PIECE_SETS:
        raise UserError(f"pieces must be one of {', '.join(PIECE_SETS)}, got {pieces!r}")
    chosen = {p["id"] for p in manifest["pieces"] if in_piece_set(p, pieces)}
    items = [it for it in manifest["items"] if it["split"] == split and it["piece"] in chosen]
    if not items:
        raise UserError(f"{data}: no {pieces} items in the {split!r} split")
    rows: dict[int, int | None] = {}
    for k, name in enumerate(names):
        try:
            rows[k] = model.instrument_index(name)
        except UnknownInstrumentError:
            rows[k] = None
            warnings.warn(f"the model does not know instrument {name!r}; skipped", stacklevel=2)
    by_piece: dict[str, list[dict]] = {}
    for it in items:
        by_piece.setdefault(it["piece"], []).append(it)
    stats: dict[int, BinStats] = {}
    group_stats: dict[tuple[str, int], BinStats] = {}
    for piece_items in tqdm(list(by_piece.values()), disable=not progress, unit="piece"):
        loaded = [load_item(data, it["id"]) for it in piece_items]
        loaded = [d for d in loaded if rows.get(int(d["instrument"])) is not None]
        if not loaded:
            continue
        preds = predict_piece(
            model,
            loaded[0]["roll"],
            [rows[int(d["instrument"])] for d in loaded],
            [d["mel"].shape[1] for d in loaded],
            sharpen,
            contrast,
        )
        groups = frame_groups(loaded[0]["roll"], max(p.shape[1] for p in preds))  # one roll
        for d, pred in zip(loaded, preds, strict=True):
            k = int(d["instrument"])
            stats.setdefault(k, BinStats(pred.shape[0])).update(pred, d["mel"])
            for group, whole in groups.items():
                mask = whole[: pred.shape[1]]
                if mask.any():
                    bins = group_stats.setdefault((group, k), BinStats(pred.shape[0]))
                    bins.update(pred[:, mask], d["mel"][:, mask])
    report = _report(stats, group_stats, names, programs, split)
    report["pieces"] = pieces
    report["sharpen"] = sharpen if model.detail_gains is not None else 0.0
    report["contrast"] = contrast if model.note_contrast is not None else 0.0
    report["groups"] = _group_report(group_stats)
    return report


def _group_report(group_stats: dict[tuple[str, int], BinStats]) -> dict[str, dict[str, Any]]:
    """Per band/register: frames, MAE over all of them, mean over instruments of mean r."""
    out = {}
    for group in [*VELOCITY_BANDS, *REGISTERS]:
        parts = [s for (g, _), s in group_stats.items() if g == group]
        if not parts:
            continue
        total = BinStats()
        for s in parts:
            total.add(s)
        r = [x for x in (nanmean(s.correlation()) for s in parts) if x is not None]
        sounding = [s.sounding_correlation() for s in parts]
        r_sounding = [x for x, _ in sounding if x is not None]
        out[group] = {
            "frames": total.n,
            "instruments": len(parts),
            "mae_db": round(total.mae_db(), 4),
            "mean_correlation": round(float(np.mean(r)), 6) if r else None,
            "sounding_correlation": round(float(np.mean(r_sounding)), 6) if r_sounding else None,
            "sounding_correlation_min": round(min(r_sounding), 6) if r_sounding else None,
            "sounding_bins": round(float(np.mean([k for _, k in sounding])), 1),
        }
    return out


def _report(
    stats: dict[int, BinStats],
    group_stats: dict[tuple[str, int], BinStats],
    names: list[str],
    programs: list[int | None],
    split: str,
) -> dict[str, Any]:
    total = BinStats()
    per = []
    for k in sorted(stats):
        s = stats[k]
        total.add(s)
        r = s.correlation()
        playing = BinStats(len(s.sounding))  # the frames where a note sounds: every band's
        for band in VELOCITY_BANDS:
            if (band, k) in group_stats:
                playing.add(group_stats[band, k])
        r_sounding, n_sounding = playing.sounding_correlation()
        per.append(
            {
                "name": names[k],
                "program": programs[k],
                "items": s.items,
                "frames": s.n,
                "mae_db": round(s.mae_db(), 4),
                "mean_correlation": nanmean(r),
                "sounding_correlation": r_sounding,
                "sounding_bins": n_sounding,
                "correlation": finite_list(r),
            }
        )
    mean_r = [p["mean_correlation"] for p in per if p["mean_correlation"] is not None]
    freqs = mel_band_frequencies()
    return {
        "split": split,
        "frames": total.n,
        "instruments": per,
        "overall": {
            "mae_db": round(total.mae_db(), 4),
            "mean_correlation": round(float(np.mean(mean_r)), 6) if mean_r else None,
        },
        "mel_frequencies_hz": [round(float(f), 2) for f in freqs],
    }


def write_report(report: dict[str, Any], out: Path, model: Mel2Mel | None = None) -> list[Path]:
    """Write the JSON/CSV tables and the PNG plots of a report into ``out``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "metrics.json", out / "metrics.csv", out / "correlation.csv"]
    write_json(paths[0], report)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    keys = ["program", "items", "frames", "mae_db", "mean_correlation"]
    keys += ["sounding_correlation", "sounding_bins"]
    w.writerow(["instrument", *keys])
    for p in report["instruments"]:
        w.writerow([p["name"], *(p[k] for k in keys)])
    w.writerow(
        [
            "ALL",
            "",
            "",
            report["frames"],
            report["overall"]["mae_db"],
            report["overall"]["mean_correlation"],
            "",
            "",
        ]
    )
    atomic_write_text(paths[1], buf.getvalue())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["instrument"] + [f"bin_{i}" for i in range(len(report["mel_frequencies_hz"]))])
    for p in report["instruments"]:
        w.writerow([p["name"]] + ["" if v is None else v for v in p["correlation"]])
    atomic_write_text(paths[2], buf.getvalue())
    if report.get("groups"):
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        keys = ["frames", "instruments", "mae_db", "mean_correlation", "sounding_correlation"]
        w.writerow(["group", *keys, "sounding_bins"])
        for name, g in report["groups"].items():
            w.writerow([name, *(g[k] for k in keys), g["sounding_bins"]])
        paths.append(out / "groups.csv")
        atomic_write_text(paths[-1], buf.getvalue())
    paths.append(plot_correlation(report, out / "correlation.png"))
    if model is not None and model.embedding_dim == 2:
        paths.append(plot_embedding(model, out / "embedding.png"))
    return paths


def plot_correlation(report: dict[str, Any], path: Path) -> Path:
    """Correlation vs mel bin, one line per instrument (PNG)."""
    fig = figure(8, 4.5)
    ax = fig.add_subplot()
    for p in report["instruments"]:
        r = [np.nan if v is None else v for v in p["correlation"]]
        ax.plot(np.arange(len(r)), r, label=p["name"], lw=1.4)
    hz = report["mel_frequencies_hz"]
    ticks = list(range(0, len(hz), 10))
    ax.set_xticks(ticks, [f"{i}\n{hz[i]:.0f} Hz" for i in ticks], fontsize=7)
    ax.set_xlabel("mel bin (centre frequency)")
    ax.set_ylabel("Pearson correlation")
    ax.set_title(f"Predicted vs true log-mel, {report['split']} split")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_embedding(model: Mel2Mel, path: Path) -> Path:
    """The learned 2-D instrument embedding with each instrument labelled (PNG)."""
    emb = model.embedding.weight.detach().cpu().numpy()
    if emb.shape[1] != 2:
        raise ValueError("plot_embedding needs a 2-D embedding")
    fig = figure(6, 5)
    ax = fig.add_subplot()
    ax.scatter(emb[:, 0], emb[:, 1], s=30, c=np.arange(len(emb)), cmap="tab10")
    for (x, y), inst in zip(emb, model.instruments, strict=True):
        ax.annotate(inst.name, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=8)
    ax.set_xlabel("embedding dim 1")
    ax.set_ylabel("embedding dim 2")
    ax.set_title("Learned instrument embedding")
    ax.grid(alpha=0.3)
    ax.margins(0.15)
    fig.tight_layout()
    fig.savefig(path)
    return path
