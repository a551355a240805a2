"""Where a predicted mel differs from the true one: average spectrum vs frame-to-frame texture.

For ``--pieces`` test pieces of a dataset and the chosen instruments, the acoustic model
predicts the log-mel of each piece (exact forward) and, over the frames where a note sounds,
the script prints

* the mean log-mel difference (predicted - true) in dB for each group of 10 mel bands: how
  far the average spectrum is off;
* the mean absolute change of a mel bin from one frame to the next, predicted and true (dB):
  how much short-time texture (beating, vibrato, modulation) each has;
* the log-mel MAE, and the MAE after a 3-frame moving average of the prediction (whether the
  prediction is merely noisy).

Where the model has a texture post-net (:mod:`mel2mel.models.texture`), a second line per
instrument gives the same figures for the textured mel (noise seed 0, the post-net's default
strength), the one the synthesizer vocodes.

Usage::

    python benchmarks/eval_mel_texture.py --data data/paper10 [--model PATH] [--pieces 3]
        [--instrument "Church Organ" ...]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy.ndimage import uniform_filter1d

from mel2mel.data.dataset import load_item, read_manifest
from mel2mel.models.export import export_paths, load_acoustic, load_texture
from mel2mel.models.texture import texture_noise
from mel2mel.synthesizer import PRETRAINED_DIR

DB = 20.0 / np.log(10.0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="dataset folder")
    ap.add_argument("--model", default=str(PRETRAINED_DIR / "acoustic"), help="acoustic export")
    ap.add_argument("--pieces", type=int, default=3, help="first N test pieces")
    ap.add_argument("--instrument", action="append", help="instrument name (default: all)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    manifest = read_manifest(args.data)
    names = [i["name"] for i in manifest["instruments"]]
    model = load_acoustic(args.model).eval()
    weights, desc = export_paths(args.model)
    texture = load_texture(desc.with_suffix(""), weights)
    test = [it for it in manifest["items"] if it["split"] == "test"]
    print("instrument                 mean diff per 10 bands (dB)                    "
          "frame change pred / true   MAE / smoothed")  # fmt: skip
    for name in args.instrument or names:
        k = names.index(name)
        rows: dict[str, list[list[float]]] = {"": [], "  textured": []}
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


if __name__ == "__main__":
    main()
