"""How loud is each strike? The velocity ramp's measure on a dataset's strikes pieces.

The velocity ramp of ``tests/models/test_shipped_dynamics.py`` is a test: models are not
chosen on it. This measures the same thing on the generated strikes pieces of a split (chords
and single notes struck at every velocity, docs/DATA.md), by default ``valid``: for every
onset of the piece's roll and every instrument, the mean mel power over the ``--window``
seconds from the onset, the model's against FluidSynth's (the dataset's mel), in dB. Printed
per model: the mean absolute error, the share of strikes within 2 dB (the ramp's tolerance),
the mean signed error by velocity band (is the model's dynamic range compressed?) and the mean
absolute error per instrument.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/eval_strike_levels.py --data data/perf10s \\
        --model mel2mel/pretrained/acoustic --model runs/export-x/acoustic [--split valid]
"""

from __future__ import annotations

import argparse

import numpy as np
from eval_note_detail import level_db

from mel2mel import constants as C
from mel2mel.data.corpus import augment_kind
from mel2mel.data.dataset import load_item, read_manifest
from mel2mel.evaluation.acoustic import load_model, predict_piece

BANDS = ((1, 29), (30, 59), (60, 99), (100, 127))  # velocities


def strike_errors(model, data: str, split: str, window: float) -> dict[str, np.ndarray]:
    """Per instrument name: ``float[S x 2]`` rows of (velocity, model - FluidSynth dB)."""
    manifest = read_manifest(data)
    names = [i["name"] for i in manifest["instruments"]]
    strikes = {p["id"] for p in manifest["pieces"] if augment_kind(p) == "strikes"}
    by_piece: dict[str, list[dict]] = {}
    for it in manifest["items"]:
        if it["split"] == split and it["piece"] in strikes:
            by_piece.setdefault(it["piece"], []).append(it)
    if not by_piece:
        raise SystemExit(f"{data}: no strikes pieces in the {split!r} split")
    width = round(window * C.FRAME_RATE)
    out: dict[str, list[tuple[float, float]]] = {}
    for items in by_piece.values():
        loaded = [load_item(data, it["id"]) for it in items]
        rows = [model.instrument_index(names[int(d["instrument"])]) for d in loaded]
        preds = predict_piece(model, loaded[0]["roll"], rows, [d["mel"].shape[1] for d in loaded])
        onsets = loaded[0]["roll"][C.N_KEYS :]  # velocity / 127 at each onset frame
        for d, pred in zip(loaded, preds, strict=True):
            rows_out = out.setdefault(names[int(d["instrument"])], [])
            for f in np.flatnonzero(onsets.max(axis=0) > 0):
                if f + width <= pred.shape[1]:
                    err = level_db(pred[:, f : f + width]) - level_db(d["mel"][:, f : f + width])
                    rows_out.append((round(float(onsets[:, f].max()) * 127), err))
    return {name: np.array(rows) for name, rows in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a dataset with strikes pieces")
    ap.add_argument("--model", action="append", required=True, help="acoustic export (repeat)")
    ap.add_argument("--split", default="valid")
    ap.add_argument("--window", type=float, default=0.5, help="seconds from each onset")
    args = ap.parse_args()
    for path in args.model:
        per = strike_errors(load_model(path).eval(), args.data, args.split, args.window)
        both = np.concatenate(list(per.values()))
        vel, err = both[:, 0], both[:, 1]
        bands = " ".join(
            f"{lo}-{hi} {err[(vel >= lo) & (vel <= hi)].mean():+.2f}"
            for lo, hi in BANDS
            if ((vel >= lo) & (vel <= hi)).any()
        )
        print(
            f"{path}: {len(err)} strikes, mean |error| {np.abs(err).mean():.2f} dB, "
            f"{np.mean(np.abs(err) <= 2):.0%} within 2 dB; mean error by velocity: {bands}"
        )
        print("  " + ", ".join(f"{n} {np.abs(e[:, 1]).mean():.2f}" for n, e in per.items()))


if __name__ == "__main__":
    main()
