"""``mel2mel evaluate vocoder``: copy-synthesis of the test split, per vocoder and instrument.

Every vocoder resynthesizes each test item from its *ground-truth* log-mel (the first
``--seconds`` of it), and the audio is scored against the original recording:

* **log-mel error**, dB: mean absolute difference between the log-mel of the vocoded audio
  (re-analysed with :class:`~mel2mel.audio.LogMel`) and the true log-mel, ``20/ln 10`` dB per
  neper. This is the quantity a vocoder is asked to reproduce;
* **multi-resolution STFT distance**: spectral convergence + log-magnitude L1, averaged over
  the 256/512/1024/2048-point resolutions of
  :class:`~mel2mel.vocoders.losses.MultiResolutionSTFTLoss` (phase-blind, but sensitive to
  detail the 80-band mel averages away);
* the paper's **per-bin Pearson correlation** between the two log-mels.

Reference rows: ``griffinlim`` (no weights) and ``mulaw8``, the original audio through the
8-bit mu-law quantizer a WaveNet outputs (the best a 256-class WaveNet can do). Outputs in
``--out``: ``metrics.json``, ``metrics.csv`` (vocoder x instrument), ``correlation.csv`` and
``correlation.png`` (mean over instruments, one line per vocoder).
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

import numpy as np

from mel2mel import constants as C
from mel2mel.audio import LogMel
from mel2mel.data.dataset import item_paths, read_manifest
from mel2mel.errors import UserError
from mel2mel.evaluation.report import BinStats, figure, finite_list, nanmean, write_json
from mel2mel.fileio import atomic_write_text
from mel2mel.models import export
from mel2mel.vocoders.griffinlim import GriffinLim
from mel2mel.vocoders.losses import MultiResolutionSTFTLoss
from mel2mel.vocoders.mulaw import dequantize, quantize

REFERENCE = "mulaw8"


def vocoders_by_name(specs: list[str]) -> dict[str, Any]:
    """The vocoders to compare, by the names ``--vocoder`` takes (kinds, export paths, or
    :data:`REFERENCE` for the 8-bit mu-law copy of the original)."""
    out: dict[str, Any] = {}
    for spec in specs:
        if spec == REFERENCE:
            out[spec] = None
        elif spec == "griffinlim":
            out[spec] = GriffinLim()
        elif spec in ("fast", "wavenet"):
            out[spec] = export.load_pretrained_vocoder(spec)
        else:
            path = Path(spec)
            out[f"{path.parent.name}/{path.stem}"] = export.load_vocoder(path)
    return out


def evaluate_vocoders(
    vocoders: dict[str, Any],
    data: str | Path,
    *,
    split: str = "test",
    seconds: float = 10.0,
    max_items: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Score copy-synthesis of every ``split`` item; ``None`` as a vocoder means 8-bit mu-law.

    Returns the report dict written by :func:`write_vocoder_report`.
    """
    import torch
    from tqdm import tqdm

    manifest = read_manifest(data)
    names = [i["name"] for i in manifest["instruments"]]
    items = [it for it in manifest["items"] if it["split"] == split]
    if max_items:
        kept: list[dict[str, Any]] = []
        for it in items:
            if sum(k["instrument"] == it["instrument"] for k in kept) < max_items:
                kept.append(it)
        items = kept
    if not items:
        raise UserError(f"{data} has no {split} items")
    frames = round(seconds * C.FRAME_RATE) if seconds > 0 else None
    log_mel, mr_stft = LogMel(), MultiResolutionSTFTLoss()
    stats = {v: {} for v in vocoders}  # vocoder -> instrument -> BinStats
    stft = {v: {} for v in vocoders}  # vocoder -> instrument -> [sum, count]
    clock = dict.fromkeys(vocoders, 0.0)
    audio_seconds = 0.0
    for it in tqdm(items, disable=not progress, unit="item", desc=f"copy-synthesis ({split})"):
        paths = item_paths(data, it["id"])
        mel_np = np.load(paths["mel"], mmap_mode="r")
        t = mel_np.shape[1] if frames is None else min(frames, mel_np.shape[1])
        mel = torch.from_numpy(np.asarray(mel_np[:, :t], dtype=np.float32))
        wav = np.load(paths["audio"], mmap_mode="r")[: t * C.HOP_LENGTH]
        audio = torch.from_numpy(np.asarray(wav, dtype=np.float32) / 32767.0)
        audio = torch.nn.functional.pad(audio, (0, t * C.HOP_LENGTH - audio.shape[0]))
        audio_seconds += t / C.FRAME_RATE
        k = it["instrument"]
        for name, voc in vocoders.items():
            start = time.perf_counter()
            out = dequantize(quantize(audio)) if voc is None else voc.vocode(mel).float().cpu()
            clock[name] += time.perf_counter() - start
            with torch.inference_mode():
                pred = log_mel(out)[:, :t].numpy()
                d = mr_stft(out[None], audio[None])
            stats[name].setdefault(k, BinStats()).update(pred, mel.numpy())
            acc = stft[name].setdefault(k, [0.0, 0])
            acc[0] += float(d["spectral_convergence"] + d["log_magnitude"])
            acc[1] += 1
    return _report(stats, stft, clock, audio_seconds, names, split, seconds)


def _report(stats, stft, clock, audio_seconds, names, split, seconds) -> dict[str, Any]:
    vocoders = {}
    for name, per in stats.items():
        rows, total, stft_total = [], BinStats(), [0.0, 0]
        for k in sorted(per):
            s = per[k]
            total.n, total.items = total.n + s.n, total.items + s.items
            total.sums += s.sums
            stft_total[0] += stft[name][k][0]
            stft_total[1] += stft[name][k][1]
            r = s.correlation()
            rows.append(
                {
                    "name": names[k],
                    "items": s.items,
                    "log_mel_db": round(s.mae_db(), 4),
                    "mr_stft": round(stft[name][k][0] / stft[name][k][1], 4),
                    "mean_correlation": nanmean(r),
                    "correlation": finite_list(r),
                }
            )
        vocoders[name] = {
            "overall": {
                "log_mel_db": round(total.mae_db(), 4),
                "mr_stft": round(stft_total[0] / max(stft_total[1], 1), 4),
                "mean_correlation": nanmean(total.correlation()),
                "real_time_factor": round(audio_seconds / max(clock[name], 1e-9), 1),
            },
            "instruments": rows,
        }
    return {"split": split, "seconds_per_item": seconds, "audio_seconds": audio_seconds,
            "vocoders": vocoders}  # fmt: skip


def write_vocoder_report(report: dict[str, Any], out: Path) -> list[Path]:
    """``metrics.json``, ``metrics.csv``, ``correlation.csv``, ``correlation.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "metrics.json", out / "metrics.csv", out / "correlation.csv"]
    write_json(paths[0], report)
    table, corr = io.StringIO(), io.StringIO()
    w, wc = csv.writer(table, lineterminator="\n"), csv.writer(corr, lineterminator="\n")
    w.writerow(["vocoder", "instrument", "items", "log_mel_db", "mr_stft", "mean_correlation"])
    wc.writerow(["vocoder", "instrument"] + [f"bin_{i}" for i in range(C.N_MELS)])
    for name, v in report["vocoders"].items():
        for p in v["instruments"]:
            w.writerow(
                [name, p["name"], p["items"], p["log_mel_db"], p["mr_stft"], p["mean_correlation"]]
            )
            wc.writerow([name, p["name"]] + ["" if c is None else c for c in p["correlation"]])
        o = v["overall"]
        w.writerow([name, "ALL", "", o["log_mel_db"], o["mr_stft"], o["mean_correlation"]])
    atomic_write_text(paths[1], table.getvalue())
    atomic_write_text(paths[2], corr.getvalue())
    fig = figure(8, 4.5)
    ax = fig.add_subplot()
    for name, v in report["vocoders"].items():
        rows = np.array(
            [[np.nan if c is None else c for c in p["correlation"]] for p in v["instruments"]]
        )
        ax.plot(np.nanmean(rows, axis=0), label=name, lw=1.4)
    ax.set_xlabel("mel bin")
    ax.set_ylabel("Pearson correlation (mean over instruments)")
    ax.set_title(f"Copy-synthesis log-mel vs original, {report['split']} split")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    paths.append(out / "correlation.png")
    fig.savefig(paths[-1])
    return paths
