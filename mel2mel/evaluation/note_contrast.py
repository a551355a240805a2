"""Fit an acoustic model's note contrast (:mod:`mel2mel.models.contrast`) on a training split.

For every instrument, the items of the split (or ``items`` of them) are predicted whole with
the model's detail gains at strength 1 (the mel the synthesizer corrects); every cell of the
mel is given its role from the piece's roll, and the correction of a role is the mean of
FluidSynth's mel minus the prediction over its cells, shrunk towards 0 for roles seen in few
cells (``sum / (count + SHRINK)``). No gradient, no tuning: the statistics of the training data.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from tqdm import tqdm

from mel2mel import constants as C
from mel2mel.data.dataset import item_paths, read_roll
from mel2mel.evaluation.acoustic import predict_piece
from mel2mel.evaluation.detail_gains import MAX_FRAMES, items_by_piece
from mel2mel.models.acoustic import Mel2Mel
from mel2mel.models.contrast import (
    ALONE,
    ANTICIPATION,
    HELD,
    N_GROUPS,
    N_ROLES,
    OFFSETS,
    NoteContrast,
    bin_roles,
)

SHRINK = 50.0  # cells: a role seen in n cells keeps n / (n + SHRINK) of its mean


def fit_note_contrast(
    model: Mel2Mel,
    data: str | os.PathLike,
    *,
    split: str = "train",
    items: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> tuple[NoteContrast, np.ndarray]:
    """The note contrast of ``model`` measured on ``split`` of the dataset at ``data``.

    Parameters
    ----------
    model:
        The acoustic model (it must know the dataset's instruments, by name); its detail gains,
        when it has them, are applied at strength 1 before the roles are measured.
    data:
        A dataset folder (``manifest.json``, ``items/``).
    split:
        The split measured (``train``: never the one a model is judged on).
    items:
        Items drawn per instrument (seeded by ``seed``); None: all of them. Each is used up to
        :data:`~mel2mel.evaluation.detail_gains.MAX_FRAMES`.

    Returns
    -------
    ``(contrast, counts)``: the :class:`NoteContrast` of the model's table (rows the dataset
    lacks get 0), and ``float64[N x N_ROLES]``, the cells behind each value.
    """
    _, chosen = items_by_piece(model, data, split, items, seed)
    n = model.config.n_instruments
    sums, counts = np.zeros((n, N_ROLES)), np.zeros((n, N_ROLES))
    for piece in tqdm(sorted(chosen), desc="fitting note contrast", disable=not progress):
        truths = [np.load(item_paths(data, i)["mel"])[:, :MAX_FRAMES] for i, _ in chosen[piece]]
        picked = [row for _, row in chosen[piece]]
        roll = read_roll(data, piece)
        frames = [t.shape[1] for t in truths]
        preds = predict_piece(model, roll, picked, frames, sharpen=1.0)
        for row, truth, pred in zip(picked, truths, preds, strict=True):
            role_sums, role_counts = residual_sums(truth, pred, roll)
            sums[row] += role_sums
            counts[row] += role_counts
    table = sums / (counts + SHRINK)
    names = [i.name for i in model.instruments]
    embeddings = model.embedding.weight.detach().double().cpu().numpy()
    contrast = NoteContrast(tuple(names), tuple(map(tuple, embeddings)), tuple(map(tuple, table)))
    return contrast, counts


def residual_sums(
    truth: np.ndarray, pred: np.ndarray, roll: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Summed ``truth - pred`` (both ``float[M x T]`` log-mel, ``roll`` ``float[176 x T']``)
    per role over the frames all three cover, and the cells counted: two ``float64[N_ROLES]``
    (the bins of no struck or held note are not counted)."""
    t = min(truth.shape[1], pred.shape[1], roll.shape[1])
    roles = bin_roles(torch.from_numpy(np.ascontiguousarray(roll[None, :, :t])))[0].numpy()
    residual = (truth[:, :t] - pred[:, :t]).astype(np.float64)
    sums = np.bincount(roles.ravel(), residual.ravel(), N_ROLES + 1)
    counts = np.bincount(roles.ravel(), None, N_ROLES + 1).astype(np.float64)
    return sums[:N_ROLES], counts[:N_ROLES]  # the last: bins of no struck or held note


def contrast_summary(contrast: NoteContrast, counts: np.ndarray) -> list[str]:
    """One line per fitted instrument: the mean correction (dB) of the struck partials (while
    other keys are held, and alone) and of the held ones over the frames ``0..REACH`` after a
    strike."""
    after = np.arange(ANTICIPATION, OFFSETS)  # offsets 0..REACH
    kinds = {
        "struck": np.concatenate([g * OFFSETS + after for g in range(N_GROUPS)]),
        "struck alone": np.concatenate([ALONE + g * OFFSETS + after for g in range(N_GROUPS)]),
        "held": HELD + after,
    }
    lines = []
    for name, row, seen in zip(contrast.names, contrast.table, counts, strict=True):
        if seen.sum() == 0:
            continue
        values = np.asarray(row) * C.DB_PER_NEPER
        parts = [
            f"{kind} {np.average(values[i], weights=seen[i] + 1e-9):+.1f} dB"
            for kind, i in kinds.items()
        ]
        lines.append(f"{name}: after a strike, {', '.join(parts)} ({int(seen.sum()):,} cells)")
    return lines
