"""The training data pipeline: reproducible random crops of a built dataset.

:class:`SeededCrops` makes every random crop a function of ``(seed, epoch, index)`` so that a
resumed or multi-process run sees exactly the crops an uninterrupted single run would;
:func:`make_datasets` builds the train and valid crop sets of a :class:`RunConfig`.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import numpy as np

from mel2mel import constants as C
from mel2mel.data.corpus import augment_kind
from mel2mel.data.dataset import CropDataset, item_paths, read_manifest
from mel2mel.errors import UserError
from mel2mel.instruments import Instrument
from mel2mel.models.acoustic import UnknownInstrumentError, resolve_instrument
from mel2mel.train.config import RunConfig


class SeededCrops(CropDataset):
    """A :class:`CropDataset` whose random crop positions depend only on (seed, epoch, index).

    :class:`ResumableSampler` yields ``epoch * len(dataset) + index``; this class decodes it,
    so a crop is the same whether it is drawn in a worker or not, before or after a resume,
    and by whichever rank. Deterministic (validation) crops are left to the parent class.
    """

    _key: tuple[int, int] = (0, 0)

    def __getitem__(self, index: int) -> dict[str, Any]:
        epoch, i = divmod(int(index), len(self))
        self._key = (epoch, i)
        return super().__getitem__(i)

    def crop_start(self, frames: int, copy: int) -> int:
        if not self.random_crops:
            return super().crop_start(frames, copy)
        last = max(frames - self.crop_frames, 0)
        rng = np.random.default_rng([self.seed, *self._key])
        return int(rng.integers(0, last + 1))


def quiet_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: leave SIGTERM and SIGINT to the main process.

    ``pkill -f``, job managers and Ctrl-C signal every process of the job, workers included; a
    worker killed mid-batch makes the main process fail before it can checkpoint. The main
    process catches the signal, checkpoints, and shuts its workers down itself, which it must
    do explicitly (:func:`stop_workers`): at interpreter exit ``multiprocessing`` would
    terminate them with the SIGTERM they ignore, and wait for them forever.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def stop_workers(loader: Any) -> None:
    """Shut down the (persistent) worker processes of a DataLoader, if it started any."""
    iterator = getattr(loader, "_iterator", None)
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


def dataset_instruments(data: Path) -> list[Instrument]:
    """The manifest's instruments, in embedding-table order."""
    manifest = read_manifest(data)
    return [Instrument(i["name"], i.get("program")) for i in manifest["instruments"]]


def _subset(instruments: list[Instrument], wanted: tuple[str, ...] | None) -> list[int] | None:
    if not wanted:
        return None
    try:
        return sorted({resolve_instrument(instruments, w) for w in wanted})
    except UnknownInstrumentError as err:
        raise UserError(f"train.instruments: {err}") from err


def repeat_items(dataset: CropDataset, repeat: dict[str, int]) -> None:
    """Repeat in place each item of ``dataset`` ``repeat[kind]`` times, by its piece's kind
    (:func:`mel2mel.data.corpus.augment_kind`; kinds not in ``repeat`` stay once), keeping the
    items' order."""
    kinds = {p["id"]: augment_kind(p) for p in dataset.manifest["pieces"]}
    dataset.items = [
        it for it in dataset.items for _ in range(repeat.get(kinds.get(it["piece"], "plain"), 1))
    ]


def bin_variances(dataset: CropDataset, n_instruments: int, per_instrument: int = 64) -> np.ndarray:
    """Each instrument's variance of every mel bin, float64[N x M], over up to
    ``per_instrument`` of its distinct items in ``dataset`` (spread evenly over them in
    manifest order, so the figure is the same on every rank and at every resume) and all their
    frames; NaN for an instrument without items."""
    by_instrument: dict[int, list[str]] = {}
    for it in {it["id"]: it for it in dataset.items}.values():  # repeats count once
        by_instrument.setdefault(int(it["instrument"]), []).append(it["id"])
    out = np.full((n_instruments, C.N_MELS), np.nan)
    for k, ids in by_instrument.items():
        step = -(-len(ids) // per_instrument)
        mels = [np.load(item_paths(dataset.root, i)["mel"]) for i in ids[::step]]
        out[k] = np.concatenate(mels, axis=1).astype(np.float64).var(axis=1)
    return out


def make_datasets(
    data: Path, config: RunConfig, instruments: list[Instrument]
) -> tuple[SeededCrops, SeededCrops]:
    """Random train crops (items repeated by ``train.repeat``) and fixed valid crops, restricted
    to ``train.instruments``."""
    t = config.train
    subset = _subset(instruments, t.instruments)
    common = {"instruments": subset, "seed": t.seed}
    train = SeededCrops(
        data, "train", t.crop_frames, crops_per_item=t.crops_per_item, random_crops=True, **common
    )
    if t.repeat:
        repeat_items(train, t.repeat)
    valid = SeededCrops(
        data,
        "valid",
        t.crop_frames,
        crops_per_item=t.valid_crops_per_item,
        random_crops=False,
        **common,
    )
    return train, valid
