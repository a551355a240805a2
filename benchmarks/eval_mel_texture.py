"""Where a predicted mel differs from the true one: average spectrum vs frame-to-frame texture.

For ``--pieces`` test pieces of a dataset and the chosen instruments, the acoustic model
predicts the log-mel of each piece (exact forward) and, over the frames where a note sounds,
the script prints

* the mean log-mel difference (predicted - true) in dB for each group of 10 mel bands: how
  far the average spectrum is off;
* the mean absolute change of a mel bin from one frame to the next, predicted and true (dB):
  how much short-time texture (beating, vibrato, modulation) each has;
* the log-mel MAE, and the MAE after a 3-frame moving average of the prediction (whether the
  prediction is merely noisy);
* the **modulation** of the true, predicted and textured mels (each minus its
  ``MODULATION_FRAMES``-frame moving average, over the frames with notes, in the bins within
  40 dB of the item's loudest): its standard deviation in dB, the share of its power at each
  modulation frequency (2-4, 4-8, 8-16 and above 16 Hz, over 256-frame windows), and the
  correlation between neighbouring bins' modulation: how much the sound moves, how fast, and
  how coherently across the spectrum (docs/TEXTURE.md, "Texture at the speed of FluidSynth's").

Where the model has a texture post-net (:mod:`mel2mel.models.texture`), a second line per
instrument gives the same figures for the textured mel (noise seed 0, the post-net's default
strength), the one the synthesizer vocodes.

Usage::

    python benchmarks/eval_mel_texture.py --data data/paper10 [--model PATH] [--pieces 3]
        [--instrument "Church Organ" ...] [--split valid]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy.ndimage import uniform_filter1d

from mel2mel import constants as C
from mel2mel.data.dataset import load_item, read_manifest
from mel2mel.models.export import export_paths, load_acoustic, load_texture
from mel2mel.models.texture import texture_noise
from mel2mel.synthesizer import PRETRAINED_DIR

DB = 20.0 / np.log(10.0)
MODULATION_FRAMES = 25  # the moving average whose residual is the modulation (0.2 s)
WINDOW = 256  # frames per modulation spectrum
SPEEDS = ((2.0, 4.0), (4.0, 8.0), (8.0, 16.0), (16.0, 63.0))  # Hz


def modulation(mel: np.ndarray, active: np.ndarray, loud: np.ndarray) -> list[float] | None:
    """[std dB, power share per ``SPEEDS`` band, neighbouring-bin r] of the modulation of
    ``mel`` (N_MELS x T) over ``active`` frames and ``loud`` bins; None when too short."""
    course = mel - uniform_filter1d(mel, MODULATION_FRAMES, axis=1, mode="nearest")
    course = course[:, active][loud]
    if course.shape[1] < WINDOW or len(course) < 2:
        return None
    starts = range(0, course.shape[1] - WINDOW + 1, WINDOW // 2)
    power = np.mean([np.abs(np.fft.rfft(course[:, a : a + WINDOW], axis=1)) ** 2
                     for a in starts], axis=(0, 1))  # fmt: skip
    freqs = np.fft.rfftfreq(WINDOW, 1.0 / C.FRAME_RATE)
    shares = [power[(freqs >= lo) & (freqs < hi)].sum() / power[1:].sum() for lo, hi in SPEEDS]
    near = np.mean([np.corrcoef(course[i], course[i + 1])[0, 1] for i in range(len(course) - 1)])
    return [float(course.std() * DB), *shares, float(near)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="dataset folder")
    ap.add_argument("--model", default=str(PRETRAINED_DIR / "acoustic"), help="acoustic export")
    ap.add_argument("--pieces", type=int, default=3, help="first N pieces of the split")
    ap.add_argument("--instrument", action="append", help="instrument name (default: all)")
    ap.add_argument("--split", default="test", help="the split whose items are used")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    manifest = read_manifest(args.data)
    names = [i["name"] for i in manifest["instruments"]]
    model = load_acoustic(args.model).eval()
    weights, desc = export_paths(args.model)
    texture = load_texture(desc.with_suffix(""), weights)
    test = [it for it in manifest["items"] if it["split"] == args.split]
    print("instrument                 mean diff per 10 bands (dB)                    "
          "frame change pred / true   MAE / smoothed")  # fmt: skip
    moving: dict[str, dict[str, list[list[float]]]] = {}
    for name in args.instrument or names:
        k = names.index(name)
        rows: dict[str, list[list[float]]] = {"": [], "  textured": []}
        moves = moving.setdefault(name, {"true": [], "predicted": [], "textured": []})
        for item in [it for it in test if it["instrument"] == k][: args.pieces]:
            data = load_item(args.data, item["id"])
            roll = torch.from_numpy(data["roll"])[None]
            with torch.inference_mode():
                pred = model(roll, instrument=k)
                n = min(pred.shape[-1], data["mel"].shape[1])
                mels = {"": pred[0, :, :n].numpy()}
                if texture is not None:
                    noise = texture_noise(0, 0, pred.shape[-1], texture.config.noise_channels)
                    out = texture(pred, model.embed(k), noise[None], texture.default_strength)
                    mels["  textured"] = out[0, :, :n].numpy()
            true = data["mel"][:, :n]
            active = data["roll"][:88, :n].sum(0) > 0
            level = true[:, active].mean(1) * DB
            loud = level > level.max() - 40.0
            named = {"true": true, "predicted": mels[""], "textured": mels.get("  textured")}
            for who, mel in named.items():
                if mel is not None:
                    found = modulation(mel.astype(np.float64), active, loud)
                    moves[who] += [found] if found else []
            for label, mel in mels.items():
                rows[label].append([
                    *(mel[:, active] - true[:, active]).mean(1),
                    np.abs(np.diff(mel[:, active], axis=1)).mean(),
                    np.abs(np.diff(true[:, active], axis=1)).mean(),
                    np.abs(mel - true).mean(),
                    np.abs(uniform_filter1d(mel, 3, axis=1) - true).mean(),
                ])  # fmt: skip
        for label, values in rows.items():
            if not values:
                continue
            v = np.mean(values, 0) * DB
            bands = v[:80].reshape(-1, 10).mean(1)
            print(
                f"{(name + label):26s} {' '.join(f'{b:+.1f}' for b in bands)}   "
                f"{v[80]:5.2f} / {v[81]:5.2f}              {v[82]:.2f} / {v[83]:.2f}"
            )
    print("\ninstrument         mel         modulation dB  share 2-4 4-8 8-16 16+ Hz  "
          "neighbouring bins r")  # fmt: skip
    for name, moves in moving.items():
        for who, values in moves.items():
            if values:
                m = np.mean(values, 0)
                print(f"{name:18s} {who:10s} {m[0]:8.2f}       {m[1]:.2f} {m[2]:.2f} {m[3]:.2f} "
                      f"{m[4]:.2f}        {m[5]:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
