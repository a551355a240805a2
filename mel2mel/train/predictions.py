"""A frozen acoustic model's predictions of a dataset, for the stages trained on them.

The texture post-net learns to texture the acoustic model's mels; the fast vocoder can be
adapted to them (ground-truth-aligned training, as Tacotron 2 did for its WaveNet: the
prediction of a crop is time-aligned with the crop's true audio, since the model reads the
same piano roll). Both need the model's *exact* output, that is, whole pieces as the
synthesizer runs them, not crops (the BiLSTM sees the whole piece): :func:`prepare_predictions`
predicts every train and valid item once and caches it in the run directory under the digest
of the acoustic weights, and :class:`PairCrops` hands out crops with the prediction beside the
truth.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mel2mel import constants as C
from mel2mel import pretrained
from mel2mel.data.dataset import crop_array, read_manifest, roll_path
from mel2mel.errors import UserError
from mel2mel.fileio import atomic_write
from mel2mel.models.acoustic import Mel2Mel, UnknownInstrumentError, resolve_instrument
from mel2mel.models.export import export_paths, load_acoustic, weights_digest
from mel2mel.train.data import SeededCrops
from mel2mel.train.distributed import DistInfo


@dataclass(frozen=True)
class Predictions:
    """Where a run's cached predictions are and what made them.

    ``weights`` is the acoustic model's ``.safetensors`` file, ``digest`` its
    :func:`~mel2mel.models.export.weights_digest`, ``rows[k]`` the model's embedding row of the
    dataset's instrument ``k``, ``cache`` the folder of ``<item id>.pred.npy`` files.
    """

    weights: Path
    digest: str
    rows: list[int]
    cache: Path

    def metadata(self) -> dict[str, str]:
        """What a checkpoint records of the model (and an export keeps)."""
        return {"acoustic": str(self.weights), "acoustic_digest": self.digest}


def prediction_path(cache: Path, item_id: str) -> Path:
    return cache / f"{item_id}.pred.npy"


@torch.inference_mode()
def predict_items(
    acoustic: Mel2Mel, data: Path, items: list[dict[str, Any]], rows: list[int], cache: Path,
    progress: bool = True,
) -> None:  # fmt: skip
    """Cache the acoustic model's exact prediction (float16[80 x frames]), with its detail
    gains and note contrast if it has them (as the synthesizer plays it), of every item that
    lacks one;
    ``rows[k]`` is the model's embedding row of dataset instrument ``k``."""
    todo = [it for it in items if not prediction_path(cache, it["id"]).is_file()]
    # disable=None: a bar on a terminal, none in a log file (a background run's log)
    for it in tqdm(todo, desc="predicting", unit="item", disable=None if progress else True):
        roll = np.load(roll_path(data, it["piece"]), mmap_mode="r")
        roll = torch.from_numpy(crop_array(roll, 0, it["frames"], 0.0, 127.0))[None]
        row = rows[it["instrument"]]
        mel = acoustic.infer(roll, instrument=row)
        emb = acoustic.embed(row)
        mel = acoustic.sharpen(mel, emb)  # with its gains and contrast, as synthesized
        mel = acoustic.contrast(mel, emb, roll)[0]
        out = prediction_path(cache, it["id"])
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, lambda tmp, m=mel: np.save(tmp, m.numpy().astype(np.float16)), ".npy")


def prepare_predictions(
    source: str | None, data: Path, run_dir: Path, info: DistInfo, progress: bool = True
) -> tuple[Predictions, Mel2Mel]:
    """Load the acoustic export ``source`` (``None``: the shipped one), check that it knows the
    dataset's instruments, cache its predictions of the train and valid items (the main rank
    predicts, the others wait) and return where they are, with the loaded model."""
    source = source or str(export_paths(pretrained.path(pretrained.ACOUSTIC))[0])
    acoustic = load_acoustic(source, device=info.device)
    weights = export_paths(source)[0]
    digest = weights_digest(weights)
    manifest = read_manifest(data)
    try:
        rows = [resolve_instrument(acoustic.instruments, i["name"]) for i in
                manifest["instruments"]]  # fmt: skip
    except UnknownInstrumentError as err:
        raise UserError(f"the dataset's instruments do not fit {source}: {err}") from err
    name = f"predicted-{digest}"
    # the gains and the contrast change the predictions, not the weights
    for label, table in (("gains", acoustic.detail_gains), ("contrast", acoustic.note_contrast)):
        if table is not None:
            doc = json.dumps(table.to_dict(), sort_keys=True).encode()
            name += f"-{label}-{hashlib.sha256(doc).hexdigest()[:8]}"
    cache = run_dir / name
    if info.is_main:
        items = [it for it in manifest["items"] if it["split"] in ("train", "valid")]
        predict_items(acoustic, data, items, rows, cache, progress)
    if info.distributed:
        torch.distributed.barrier()
    return Predictions(weights, digest, rows, cache), acoustic


class PairCrops(SeededCrops):
    """:class:`SeededCrops` that also return the cached prediction of the crop (``"pred"``,
    float32 Tensor[80 x crop_frames])."""

    def __init__(self, *args: Any, cache: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cache = cache

    def __getitem__(self, index: int) -> dict[str, Any]:
        out = super().__getitem__(index)
        item = self.items[out["item"]]
        pred = np.load(prediction_path(self.cache, item["id"]), mmap_mode="r")
        out["pred"] = torch.from_numpy(
            crop_array(pred, out["start"], self.crop_frames, C.LOG_SILENCE)
        )
        return out
