"""Reading a built dataset: crops, alignment of roll, mel and audio, padding, loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mel2mel import constants as C
from mel2mel.audio import LogMel
from mel2mel.data import CropDataset, load_item, read_manifest
from mel2mel.data.dataset import read_roll, roll_path
from mel2mel.errors import UserError


def test_crop_shapes_and_types(tiny_dataset):
    ds = CropDataset(tiny_dataset, "train", crop_frames=64, audio=True, crops_per_item=3)
    assert [it["id"] for it in ds.items] == ["canon/grand-piano", "canon/trumpet"]
    assert len(ds) == 6
    x = ds[4]
    assert x["roll"].shape == (176, 64) and x["roll"].dtype == torch.float32
    assert x["mel"].shape == (80, 64) and x["mel"].dtype == torch.float32
    assert x["audio"].shape == (64 * 128,) and x["audio"].dtype == torch.float32
    assert x["instrument"].dtype == torch.int64 and x["instrument"].shape == ()
    assert int(x["instrument"]) == 1 and x["item"] == 1
    assert 0 <= x["start"] <= ds.items[1]["frames"] - 64
    assert "audio" not in CropDataset(tiny_dataset, "train", 64)[0]
    with pytest.raises(IndexError):
        ds[6]
    assert ds[-1]["item"] == 1
    # the models read velocity / 127, not the file's velocities
    roll, velocities = read_roll(tiny_dataset, "canon"), np.load(roll_path(tiny_dataset, "canon"))
    assert velocities.dtype == np.uint8 and velocities.max() > 1
    assert roll.dtype == np.float32 and 0 < roll.max() <= 1
    np.testing.assert_allclose(roll * 127, velocities, atol=1e-4)


def test_crops_are_aligned(tiny_dataset):
    ds = CropDataset(tiny_dataset, "train", crop_frames=96, audio=True, seed=3)
    logmel = LogMel()
    for i in range(len(ds)):
        x = ds[i]
        full = load_item(tiny_dataset, ds.items[x["item"]]["id"])
        s = x["start"]
        roll = full["roll"][:, s : s + 96]  # the roll may end before the audio's release tail
        np.testing.assert_array_equal(x["roll"].numpy()[:, : roll.shape[1]], roll)
        assert not x["roll"][:, roll.shape[1] :].any()
        np.testing.assert_array_equal(x["mel"].numpy(), full["mel"][:, s : s + 96])
        np.testing.assert_array_equal(x["audio"].numpy(), full["audio"][s * 128 : (s + 96) * 128])
        # Frame f of the crop is centred on its sample f * 128: away from the crop's edges
        # (half a window, 4 frames) the log-mel of the audio crop is the stored mel.
        again = logmel(x["audio"]).numpy()
        assert again.shape == (80, 97)
        np.testing.assert_allclose(again[:, 4:92], x["mel"].numpy()[:, 4:92], atol=0.01)


def test_items_shorter_than_the_crop_are_padded(tiny_dataset):
    ds = CropDataset(tiny_dataset, "valid", crop_frames=2000, audio=True)
    item = ds.items[0]
    assert item["piece"] == "scale" and item["frames"] < 2000
    x = ds[0]
    assert x["start"] == 0
    t, n = item["frames"], item["samples"]
    assert torch.all(x["mel"][:, t:] == np.float32(C.LOG_SILENCE))
    assert torch.all(x["mel"][:, :t] > C.LOG_SILENCE - 0.01)
    assert torch.all(x["audio"][n:] == 0) and torch.any(x["audio"][:n] != 0)
    roll_frames = read_manifest(tiny_dataset)["pieces"][1]["frames"]
    assert torch.all(x["roll"][:, roll_frames:] == 0) and torch.any(x["roll"] > 0)
    assert float(x["roll"].max()) == pytest.approx(96 / 127)


def test_deterministic_and_random_crop_positions(tiny_dataset):
    fixed = CropDataset(tiny_dataset, "train", 100, crops_per_item=3, random_crops=False)
    last = fixed.items[0]["frames"] - 100
    assert [fixed[i]["start"] for i in range(3)] == [0, last // 2, last]
    assert [fixed[i]["start"] for i in range(3)] == [fixed[i]["start"] for i in range(3)]

    def starts(seed: int) -> list[int]:
        ds = CropDataset(tiny_dataset, "train", 100, crops_per_item=20, seed=seed)
        return [ds[i]["start"] for i in range(len(ds))]

    a = starts(1)
    assert a == starts(1) and a != starts(2)
    assert len(set(a)) > 10 and min(a) >= 0 and max(a) <= last


def test_instrument_filter_and_load_item(tiny_dataset):
    ds = CropDataset(tiny_dataset, "valid", 32, instruments=[1])
    assert [it["id"] for it in ds.items] == ["scale/trumpet"]
    full = load_item(tiny_dataset, "scale/trumpet")
    assert full["instrument"] == 1 and full["meta"]["instrument"]["program"] == 56
    assert full["mel"].shape == (80, C.num_frames(len(full["audio"])))
    assert full["roll"].shape[0] == 176 and full["roll"].dtype == np.float32
    assert np.abs(full["audio"]).max() <= 1
    with pytest.raises(UserError, match="no finished item"):
        load_item(tiny_dataset, "scale/kazoo")


def test_manifest_errors(tmp_path):
    with pytest.raises(UserError, match="mel2mel data index"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": 99}')
    with pytest.raises(UserError, match="format 1"):
        read_manifest(tmp_path)
    with pytest.raises(ValueError, match="split"):
        CropDataset(tmp_path, "training")


def test_dataloader_workers_draw_different_crops(tiny_dataset):
    ds = CropDataset(tiny_dataset, "train", 64, crops_per_item=8, audio=True)
    torch.manual_seed(0)
    loader = DataLoader(ds, batch_size=4, num_workers=2)
    epochs = [torch.cat([b["start"] for b in loader]).tolist() for _ in range(2)]
    batch = next(iter(loader))
    assert batch["roll"].shape == (4, 176, 64) and batch["audio"].shape == (4, 64 * 128)
    assert batch["instrument"].dtype == torch.int64
    assert epochs[0] != epochs[1]  # a new worker seed every epoch
    first, second = epochs[0][:4], epochs[0][4:8]  # batches 0 and 1 come from workers 0 and 1
    assert first != second
