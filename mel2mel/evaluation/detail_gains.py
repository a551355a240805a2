"""Fit an acoustic model's detail gains (:mod:`mel2mel.models.sharpen`) on a training split.

For every instrument, the items of the split (or ``items`` of them) are predicted whole (the
model's forward, as ``mel2mel evaluate acoustic`` predicts them); over their sounding frames
(within :data:`LOUD_DB` of the item's loudest frame) the mean absolute cross-bin detail of
FluidSynth's mel and of the prediction are summed per bin, and the gain is their ratio, clipped
to :data:`~mel2mel.models.sharpen.GAIN_RANGE`. No gradient, no tuning: the statistics of the
training data, as global-variance compensation takes them.
"""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np
import torch
from tqdm import tqdm

from mel2mel import constants as C
from mel2mel.data.dataset import item_paths, read_manifest, read_roll
from mel2mel.errors import UserError
from mel2mel.evaluation.acoustic import predict_piece
from mel2mel.models.acoustic import Mel2Mel
from mel2mel.models.sharpen import DETAIL_WIDTH, GAIN_RANGE, DetailGains, cross_bin_detail

LOUD_DB = 5.0 * C.DB_PER_NEPER  # frames within 5 nepers (43 dB) of the item's loudest frame
MAX_FRAMES = 3000  # frames of each item used (24 s)


def fit_detail_gains(
    model: Mel2Mel,
    data: str | os.PathLike,
    *,
    split: str = "train",
    items: int | None = None,
    width: int = DETAIL_WIDTH,
    seed: int = 0,
    progress: bool = True,
) -> tuple[DetailGains, np.ndarray]:
    """The detail gains of ``model`` measured on ``split`` of the dataset at ``data``.

    Parameters
    ----------
    model:
        The acoustic model (it must know the dataset's instruments, by name).
    data:
        A dataset folder (``manifest.json``, ``items/``).
    split:
        The split measured (``train``: never the one a model is judged on).
    items:
        Items drawn per instrument (seeded by ``seed``); None: all of them. Each is used up to
        :data:`MAX_FRAMES`.
    width:
        Bins of the moving average the detail is measured against.

    Returns
    -------
    ``(gains, detail)``: the :class:`DetailGains` of the model's table, and ``float64[N x
    2]``, per table row the mean absolute detail (dB) of the truth and of the prediction over
    the bins and the sounding frames (NaN for rows the dataset lacks).
    """
    rows, chosen = items_by_piece(model, data, split, items, seed)
    n = model.config.n_instruments
    sums = np.zeros((n, 2, C.N_MELS))  # truth, prediction
    counts = np.zeros(n)
    for piece in tqdm(sorted(chosen), desc="fitting detail gains", disable=not progress):
        truths = [np.load(item_paths(data, i)["mel"])[:, :MAX_FRAMES] for i, _ in chosen[piece]]
        picked = [row for _, row in chosen[piece]]
        preds = predict_piece(model, read_roll(data, piece), picked, [t.shape[1] for t in truths])
        for row, truth, pred in zip(picked, truths, preds, strict=True):
            detail, frames = detail_sums(truth, pred, width)
            sums[row] += detail
            counts[row] += frames
    fitted = [r for r in range(n) if r in rows.values()]
    ratio = np.ones((n, C.N_MELS))
    ratio[fitted] = sums[fitted, 0] / np.maximum(sums[fitted, 1], 1e-9)
    gains = np.clip(ratio, *GAIN_RANGE)
    names = [i.name for i in model.instruments]
    table = model.embedding.weight.detach().double().cpu().numpy()
    result = DetailGains(tuple(names), tuple(map(tuple, table)), tuple(map(tuple, gains)), width)
    mean_db = sums.mean(-1) / np.maximum(counts, 1)[:, None] * C.DB_PER_NEPER
    mean_db[[r for r in range(n) if r not in fitted]] = np.nan
    return result, mean_db


def detail_sums(truth: np.ndarray, pred: np.ndarray, width: int) -> tuple[np.ndarray, int]:
    """Summed absolute cross-bin detail of ``truth`` and ``pred`` (both ``float[M x T]``
    log-mel) over the frames where the truth sounds (within :data:`LOUD_DB` of its loudest
    frame): ``(float64[2 x M], frames)``."""
    pair = torch.from_numpy(np.stack([truth, pred]).astype(np.float32))
    loud = pair[0].amax(0) > pair[0].amax() - LOUD_DB / C.DB_PER_NEPER
    detail = cross_bin_detail(pair, width)[:, :, loud].abs().sum(-1).double()
    return detail.numpy(), int(loud.sum())


def items_by_piece(
    model: Mel2Mel, data: str | os.PathLike, split: str, items: int | None, seed: int
) -> tuple[dict[int, int], dict[str, list[tuple[str, int]]]]:
    """The items a fit measures: ``items`` drawn per instrument from ``split`` (seeded by
    ``seed``; None: all), grouped by piece so that a piece's instruments are predicted at once.

    Returns ``({dataset instrument index: model table row}, {piece: [(item id, row)]})``."""
    manifest = read_manifest(data)
    rows = model_rows(model, manifest)
    chosen: dict[str, list[tuple[str, int]]] = defaultdict(list)
    rng = np.random.default_rng(seed)
    for index, row in rows.items():
        mine = sorted(it["id"] for it in manifest["items"]
                      if it["split"] == split and it["instrument"] == index)  # fmt: skip
        if not mine:
            raise UserError(f"{data}: no {split} items of instrument {index} to fit on")
        count = len(mine) if items is None else min(items, len(mine))
        for item_id in rng.choice(mine, count, replace=False):
            chosen[item_id.partition("/")[0]].append((str(item_id), row))
    return rows, chosen


def model_rows(model: Mel2Mel, manifest: dict) -> dict[int, int]:
    """``{dataset instrument index: model table row}``, matched by name (as ``mel2mel evaluate
    acoustic`` matches them: a program can stand for several SoundFonts' instruments)."""
    out = {}
    for index, inst in enumerate(manifest["instruments"]):
        try:
            out[index] = model.instrument_index(inst["name"])
        except (UserError, ValueError) as err:
            raise UserError(f"the model lacks the dataset's instrument {inst['name']!r}") from err
    return out
