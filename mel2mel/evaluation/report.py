"""What the evaluation reports share: per-bin statistics, JSON-safe numbers, figures, files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mel2mel import constants as C
from mel2mel.errors import require
from mel2mel.fileio import atomic_write_text

#: A reference log-mel value counts as sound when it is this far above the floor (0.5 nepers,
#: 4.3 dB): :meth:`BinStats.sounding_bins`.
SOUND_THRESHOLD: float = C.LOG_SILENCE + 0.5
#: The share of a group's frames in which a bin must have sound for its r to be reported apart.
SOUNDING_SHARE: float = 0.5


class BinStats:
    """Running per-bin sums for Pearson correlation and absolute error (float64).

    Parameters
    ----------
    n_bins:
        Mel bins M.
    """

    def __init__(self, n_bins: int = C.N_MELS) -> None:
        self.n = 0
        self.items = 0
        self.sums = np.zeros((6, n_bins), dtype=np.float64)  # x, y, xx, yy, xy, |x-y|
        self.sounding = np.zeros(n_bins, dtype=np.int64)  # frames where the reference has sound

    def update(self, pred: np.ndarray, true: np.ndarray) -> None:
        """Add one piece: ``pred`` and ``true`` (the reference) are float[M x T] log-mels."""
        x, y = pred.astype(np.float64), true.astype(np.float64)
        self.n += x.shape[1]
        self.items += 1
        self.sounding += (y > SOUND_THRESHOLD).sum(1)
        self.sums += np.stack(
            [
                x.sum(1),
                y.sum(1),
                (x * x).sum(1),
                (y * y).sum(1),
                (x * y).sum(1),
                np.abs(x - y).sum(1),
            ]
        )

    def add(self, other: BinStats) -> None:
        """Add the sums of ``other`` (the same bins, other frames), as if updated with them."""
        self.n += other.n
        self.items += other.items
        self.sums += other.sums
        self.sounding += other.sounding

    def correlation(self) -> np.ndarray:
        """Pearson r per bin, float[M] (NaN where either side is constant)."""
        n = self.n
        sx, sy, sxx, syy, sxy, _ = self.sums
        cov = n * sxy - sx * sy
        var = (n * sxx - sx * sx) * (n * syy - sy * sy)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = cov / np.sqrt(np.where(var > 0, var, np.nan))
        return np.clip(r, -1.0, 1.0)

    def sounding_bins(self, share: float = SOUNDING_SHARE) -> np.ndarray:
        """``bool[M]``: bins where the reference is above the floor in at least ``share`` of frames.

        Where the reference sits at the log floor in most frames (the top bins of quiet piano
        passages, which have few high partials), its Pearson r measures a few rare frames
        against a constant; these bins are left out of :meth:`sounding_correlation`.
        """
        return self.sounding >= share * max(self.n, 1)

    def sounding_correlation(self) -> tuple[float | None, int]:
        """Mean per-bin r over :meth:`sounding_bins` and how many bins that is."""
        keep = self.sounding_bins()
        return nanmean(self.correlation()[keep]), int(keep.sum())

    def mae_db(self) -> float:
        """Mean absolute log-mel error over all bins and frames, in dB."""
        return float(self.sums[5].sum() / max(self.n * self.sums.shape[1], 1) * C.DB_PER_NEPER)


def nanmean(values: np.ndarray) -> float | None:
    """The mean of the finite values, rounded for a report (``None`` if there are none)."""
    ok = np.isfinite(values)
    return round(float(values[ok].mean()), 6) if ok.any() else None


def finite_list(values: np.ndarray) -> list[float | None]:
    """``values`` as a JSON list, rounded, non-finite values as ``None``."""
    return [None if not np.isfinite(v) else round(float(v), 6) for v in values]


def figure(width: float, height: float) -> Any:
    """A matplotlib Figure bound to the Agg canvas directly: no pyplot, no global backend."""
    require("matplotlib", "train")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON, written atomically."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
