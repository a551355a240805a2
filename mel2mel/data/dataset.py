"""Reading a built dataset: its on-disk layout, the manifest, whole items and random crops.

Layout (format 1), written by :mod:`mel2mel.data.build`::

    <root>/manifest.json                          index of everything below (see docs/DATA.md)
    <root>/rolls/<piece>.npy                      uint8[176 x T_roll]  velocities 0..127
    <root>/rolls/<piece>.json                     piece sidecar (source, split, frames)
    <root>/items/<piece>/<instrument>.audio.npy   int16[N]  mono, round(clip(x) * 32767)
    <root>/items/<piece>/<instrument>.mel.npy     float16[80 x T]  natural-log mel, T = N // 128 + 1
    <root>/items/<piece>/<instrument>.json        item sidecar, written last
    <root>/sources/<piece>.mid                    music21 scores converted to MIDI (cache)
    <root>/skipped/<piece>.json                   inputs that could not be used, with the reason

An item counts as finished when its sidecar exists and the headers and sizes of its arrays
match it (:func:`finished_item`); arrays are opened with ``np.load(mmap_mode="r")`` so that a
crop reads only its own bytes.
Frame ``f`` of the mel, the roll and the audio sample ``f * 128`` all refer to the same
instant (see :mod:`mel2mel.constants`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from mel2mel import constants as C
from mel2mel.errors import UserError

FORMAT = 1
MANIFEST = "manifest.json"
ROLLS = "rolls"
ITEMS = "items"
SOURCES = "sources"
SKIPPED = "skipped"
SPLITS = ("train", "valid", "test")


def roll_path(root: str | os.PathLike, piece: str) -> Path:
    """``<root>/rolls/<piece>.npy``."""
    return Path(root) / ROLLS / f"{piece}.npy"


def read_roll(root: str | os.PathLike, piece: str) -> np.ndarray:
    """A piece's whole roll as the models read it: float32[176 x T_roll], velocity / 127 (the
    file holds the velocities, uint8)."""
    return np.load(roll_path(root, piece)).astype(np.float32) / np.float32(127.0)


def item_paths(root: str | os.PathLike, item_id: str) -> dict[str, Path]:
    """Paths of one item's files: ``{"audio", "mel", "meta"}`` for ``"<piece>/<slug>"``."""
    piece, _, slug = item_id.partition("/")
    if not piece or not slug or "/" in slug or ".." in (piece, slug):
        raise ValueError(f"item ids look like '<piece>/<instrument-slug>', got {item_id!r}")
    base = Path(root) / ITEMS / piece
    return {
        "audio": base / f"{slug}.audio.npy",
        "mel": base / f"{slug}.mel.npy",
        "meta": base / f"{slug}.json",
    }


def npy_info(path: Path) -> tuple[tuple[int, ...], np.dtype] | None:
    """Shape and dtype from a ``.npy`` header, or ``None`` if missing, truncated or odd."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            major, _ = fmt.read_magic(f)
            if major not in (1, 2):
                return None
            read = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
            shape, fortran, dtype = read(f)
            expected = f.tell() + int(np.prod(shape)) * dtype.itemsize
            if fortran or os.fstat(f.fileno()).st_size != expected:
                return None
            return tuple(shape), dtype
    except (OSError, ValueError):
        return None


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or ``None`` if missing, unreadable or not an object."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def finished_piece(root: Path, piece: str) -> dict[str, Any] | None:
    """The piece sidecar if the roll and its sidecar are complete, else ``None``."""
    meta = read_json(root / ROLLS / f"{piece}.json")
    if meta is None or not isinstance(meta.get("frames"), int):
        return None
    if npy_info(roll_path(root, piece)) != ((C.ROLL_CHANNELS, meta["frames"]), np.uint8):
        return None
    return meta


def finished_item(root: Path, item_id: str) -> dict[str, Any] | None:
    """The item sidecar if all three files are complete and consistent, else ``None``."""
    paths = item_paths(root, item_id)
    meta = read_json(paths["meta"])
    if meta is None:
        return None
    n, t = meta.get("samples"), meta.get("frames")
    if not isinstance(n, int) or t != C.num_frames(n):
        return None
    if npy_info(paths["audio"]) != ((n,), np.int16):
        return None
    if npy_info(paths["mel"]) != ((C.N_MELS, t), np.float16):
        return None
    return meta


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """Load ``<root>/manifest.json`` (format 1); UserError if absent or of another format."""
    path = Path(root) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(
            f"no {MANIFEST} in {root}: build it with 'mel2mel data build -o {root}' "
            f"or rebuild it with 'mel2mel data index {root}'"
        ) from None
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {path}: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{path} is not a mel2mel dataset manifest of format {FORMAT}")
    return manifest


def load_item(root: str | os.PathLike, item_id: str) -> dict[str, Any]:
    """All arrays of one item, fully loaded.

    Returns
    -------
    dict with
        ``"roll"``: float32[176 x T_roll], velocity / 127 (onset/frame roll of the piece);
        ``"mel"``: float32[80 x T], natural-log mel;
        ``"audio"``: float32[N], in [-1, 1];
        ``"instrument"``: index into the manifest's instruments (-1 if the manifest lacks it);
        ``"meta"``: the item's JSON sidecar.
    """
    paths = item_paths(root, item_id)
    if not paths["meta"].is_file():
        raise UserError(f"no finished item {item_id!r} in {root}")
    meta = json.loads(paths["meta"].read_text())
    index = -1
    if (Path(root) / MANIFEST).is_file():
        ids = {it["id"]: it["instrument"] for it in read_manifest(root)["items"]}
        index = ids.get(item_id, -1)
    return {
        "roll": read_roll(root, meta["piece"]),
        "mel": np.load(paths["mel"]).astype(np.float32),
        "audio": np.load(paths["audio"]).astype(np.float32) / np.float32(32767.0),
        "instrument": index,
        "meta": meta,
    }


def crop_array(
    array: np.ndarray, start: int, length: int, fill: float, divisor: float = 1.0
) -> np.ndarray:
    """``array[..., start:start + length] / divisor`` as float32, ``fill`` past the array's end."""
    part = np.asarray(array[..., start : start + length], dtype=np.float32)
    out = np.full((*array.shape[:-1], length), fill, dtype=np.float32)
    out[..., : part.shape[-1]] = part / np.float32(divisor)
    return out


class CropDataset(Dataset):
    """Fixed-length crops of a built dataset, for training and validation.

    Parameters
    ----------
    root:
        Dataset folder (with ``manifest.json``).
    split:
        ``"train"``, ``"valid"`` or ``"test"``.
    crop_frames:
        Crop length in frames (``crop_frames * 128`` audio samples).
    audio:
        Also return the audio of the crop.
    instruments:
        Keep only items of these instrument indices (into ``manifest["instruments"]``).
    crops_per_item:
        Each item appears this many times per epoch.
    seed:
        Seeds the crop positions. Outside DataLoader workers the crops follow one stream seeded
        by ``seed``; inside a worker the stream is seeded by ``seed`` and the worker's
        ``torch`` seed, which the DataLoader draws anew every epoch, so crops differ between
        workers and epochs and are reproducible when the main process seeds ``torch``.
    random_crops:
        ``True``: each crop starts at a uniformly drawn frame in ``[0, T - crop_frames]``.
        ``False`` (validation): deterministic starts; the ``k`` crops of an item are spread
        evenly from frame 0 to the last full crop, so with ``crops_per_item=1`` the crop starts
        at frame 0.

    Items shorter than ``crop_frames`` are padded: roll and audio with zeros, mel with
    ``constants.LOG_SILENCE``; the roll is also zero-padded where it ends before the audio
    (release tails).

    Each element is a dict: ``"roll"`` float32 Tensor[176 x crop_frames] (velocity / 127),
    ``"mel"`` float32 Tensor[80 x crop_frames], ``"audio"`` float32 Tensor[crop_frames * 128]
    (only with ``audio=True``: samples ``[s * 128, (s + crop_frames) * 128)`` for the crop
    starting at frame ``s``, so that mel frame ``f`` is centred on audio sample ``f * 128``),
    ``"instrument"`` int64 scalar Tensor, ``"item"`` the index into :attr:`items` and
    ``"start"`` the crop's first frame.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        crop_frames: int = 256,
        *,
        audio: bool = False,
        instruments: Sequence[int] | None = None,
        crops_per_item: int = 1,
        seed: int = 0,
        random_crops: bool = True,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if crop_frames < 1 or crops_per_item < 1:
            raise ValueError("crop_frames and crops_per_item must be positive")
        self.root = Path(root)
        self.manifest = read_manifest(root)
        keep = None if instruments is None else {int(i) for i in instruments}
        #: The manifest entries of the items in this split (and of the chosen instruments).
        self.items: list[dict[str, Any]] = [
            it
            for it in self.manifest["items"]
            if it["split"] == split and (keep is None or it["instrument"] in keep)
        ]
        self.split = split
        self.crop_frames = crop_frames
        self.audio = audio
        self.crops_per_item = crops_per_item
        self.seed = seed
        self.random_crops = random_crops
        self._rng: np.random.Generator | None = None
        self._rng_key: tuple[int, int | None] | None = None

    def __len__(self) -> int:
        return len(self.items) * self.crops_per_item

    def _generator(self) -> np.random.Generator:
        info = get_worker_info()
        key = (os.getpid(), None if info is None else info.seed)
        if self._rng is None or self._rng_key != key:
            entropy = [self.seed] if info is None else [self.seed, info.seed]
            self._rng = np.random.default_rng(np.random.SeedSequence(entropy))
            self._rng_key = key
        return self._rng

    def crop_start(self, frames: int, copy: int) -> int:
        """First frame of crop number ``copy`` of an item with ``frames`` mel frames."""
        last = max(frames - self.crop_frames, 0)
        if self.random_crops:
            return int(self._generator().integers(0, last + 1))
        if self.crops_per_item == 1:
            return 0
        return copy * last // (self.crops_per_item - 1)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} crops")
        k, copy = divmod(index, self.crops_per_item)
        item = self.items[k]
        start = self.crop_start(item["frames"], copy)
        n = self.crop_frames
        paths = item_paths(self.root, item["id"])
        mel = crop_array(np.load(paths["mel"], mmap_mode="r"), start, n, C.LOG_SILENCE)
        roll_file = np.load(roll_path(self.root, item["piece"]), mmap_mode="r")
        roll = crop_array(roll_file, start, n, 0.0, 127.0)
        out: dict[str, Any] = {
            "roll": torch.from_numpy(roll),
            "mel": torch.from_numpy(mel),
            "instrument": torch.tensor(item["instrument"], dtype=torch.int64),
            "item": k,
            "start": start,
        }
        if self.audio:
            wav = np.load(paths["audio"], mmap_mode="r")
            hop = C.HOP_LENGTH
            out["audio"] = torch.from_numpy(crop_array(wav, start * hop, n * hop, 0.0, 32767.0))
        return out


def check_output_dir(root: Path) -> None:
    """UserError unless ``root`` can be created or is a writable dataset (or empty) folder."""
    if root.exists():
        if not root.is_dir():
            raise UserError(f"output {root} exists and is not a folder")
        if not os.access(root, os.W_OK | os.X_OK):
            raise UserError(f"output folder {root} is not writable")
        names = {p.name for p in root.iterdir()}
        if names and not names & {MANIFEST, ROLLS, ITEMS, SOURCES, SKIPPED}:
            raise UserError(f"output folder {root} is not empty and not a mel2mel dataset")
        return
    parent = root.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot create output folder {root}: {parent} is not a writable folder")
