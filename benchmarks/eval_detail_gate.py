"""What a model's detail gate (``detail_gate``) learned: the harmonic detail's gain by context.

For the valid items of a dataset (every ``--every``-th, at most ``--items``), the acoustic
model's gain on the harmonic detail (the instrument's gain plus the gate of the modulated LSTM
states, :mod:`mel2mel.models.harmonic`) is averaged over the bins where the unscaled detail
exceeds ``DETAIL_MIN``, in frames of five kinds:

* ``attack, low``: the 4 frames from an onset, lowest sounding note below C3;
* ``held, low``: the other frames whose lowest note is below C3;
* ``attack, middle``: as the first, lowest note in C3-B4;
* ``dense``: 6 or more sounding notes; ``sparse``: 1 or 2.

Also printed: in the frames with a note below C3, the mean absolute error (dB) of the
differences between neighbouring mel bins against FluidSynth's mel, with the gate's output
zeroed and with it (the same model otherwise). Usage (docs/MODELS.md, "Stage 16")::

    OMP_NUM_THREADS=1 python benchmarks/eval_detail_gate.py --data data/perf10 [--model EXPORT]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from mel2mel import constants as C
from mel2mel import pretrained
from mel2mel.data.dataset import load_item, read_manifest
from mel2mel.models.export import load_acoustic

DETAIL_MIN = 0.05  # natural-log units: bins where the combs have a peak or a valley
ATTACK_FRAMES = 4
LOW_KEYS = 27  # rows 0..26: A0..B2, below C3
MIDDLE_KEYS = 51  # rows 27..50: C3..B4
DB_PER_NAT = 20.0 / math.log(10.0)


def contexts(roll: torch.Tensor) -> dict[str, torch.Tensor]:
    """Tensor[176 x T] roll -> the frame masks (bool Tensor[T]) of the module docstring."""
    sounding, onsets = roll[: C.N_KEYS] > 0, roll[C.N_KEYS : 2 * C.N_KEYS] > 0
    frames = sounding.shape[1]
    attack = torch.zeros(frames, dtype=torch.bool)
    struck = onsets.any(0)
    for lag in range(ATTACK_FRAMES):
        attack[lag:] |= struck[: frames - lag]
    lowest = torch.where(sounding.any(0), sounding.float().argmax(0), C.N_KEYS)
    count = sounding.sum(0)
    low, middle = lowest < LOW_KEYS, (lowest >= LOW_KEYS) & (lowest < MIDDLE_KEYS)
    return {
        "attack, low": attack & low,
        "held, low": ~attack & low,
        "attack, middle": attack & middle,
        "dense (6+ notes)": count >= 6,
        "sparse (1-2 notes)": (count >= 1) & (count <= 2),
    }


@torch.no_grad()
def gate_parts(model, roll: torch.Tensor, instrument: int) -> tuple[torch.Tensor, ...]:
    """(mel without the detail, unscaled detail, instrument gain, gate), each [80 x T]."""
    roll = roll[None]
    emb = model.embed(instrument).to(roll.dtype)
    h = model.film_in(model.frontend(model.input(model.code_roll(roll))), emb)
    h, _ = model.lstm(h.transpose(1, 2).contiguous())
    h = model.film_out(h.transpose(1, 2), emb)
    base = model.output(h) + (0 if model.head is None else model.head(h, emb))
    gain = model.harmonic.scaled_gain(emb)[..., None].expand_as(base)
    detail = model.harmonic.detail(model.tones_of(roll), emb)
    return base[0], detail[0], gain[0], model.harmonic.gate(h)[0]


def slope_error(mel: torch.Tensor, truth: torch.Tensor, frames: torch.Tensor) -> float:
    """Mean |difference of neighbouring bins, model - truth| (dB) over ``frames``."""
    diff = lambda x: x[1:, frames] - x[:-1, frames]  # noqa: E731
    return float((diff(mel) - diff(truth)).abs().mean()) * DB_PER_NAT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="dataset directory (its valid split)")
    parser.add_argument("--model", default=None, help="acoustic export (default: shipped)")
    parser.add_argument("--every", type=int, default=13, help="take every N-th valid item")
    parser.add_argument("--items", type=int, default=40, help="at most this many items")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_acoustic(args.model or pretrained.path("acoustic")).eval()
    if model.harmonic is None or model.harmonic.gate is None:
        raise SystemExit("this model has no detail gate (AcousticConfig.detail_gate)")
    items = [it for it in read_manifest(args.data)["items"] if it["split"] == "valid"]
    items = items[:: args.every][: args.items]
    gains: dict[str, list[float]] = {}
    errors: dict[str, list[float]] = {"gate zeroed": [], "gated": []}
    for it in items:
        data = load_item(args.data, it["id"])
        frames = min(data["mel"].shape[1], data["roll"].shape[1])
        roll = torch.from_numpy(data["roll"][:, :frames])
        truth = torch.from_numpy(data["mel"][:, :frames])
        base, detail, gain, gate = gate_parts(model, roll, it["instrument"])
        peaks = detail.abs() > DETAIL_MIN
        for name, mask in contexts(roll).items():
            chosen = peaks & mask[None]
            if chosen.any():
                gains.setdefault(name, []).append(float((gain + gate)[chosen].mean()))
        low = roll[:LOW_KEYS].amax(0) > 0
        if low.any():
            errors["gate zeroed"].append(slope_error(base + gain * detail, truth, low))
            errors["gated"].append(slope_error(base + (gain + gate) * detail, truth, low))
    own = float(model.harmonic.scaled_gain(model.embedding.weight.detach()).mean())
    print(f"{len(items)} valid items of {args.data}; the instruments' own gains average {own:.3f}")
    for name, values in gains.items():
        print(f"  gain, {name:<20} {np.mean(values):.3f}  ({len(values)} items)")
    for name, values in errors.items():
        print(f"  bin-to-bin error below C3, {name:<12} {np.mean(values):.2f} dB")


if __name__ == "__main__":
    main()
