"""How loud is each strike? The velocity ramp's measure on a dataset's strikes pieces.

The velocity ramp of ``tests/models/test_shipped_dynamics.py`` is a test: models are not
chosen on it. This measures the same thing on the generated strikes pieces of a split (chords
and single notes struck at every velocity, docs/DATA.md), by default ``valid``: for every
onset of the piece's roll and every instrument, the mean mel power over the ``--window``
seconds from the onset, the model's against FluidSynth's (the dataset's mel), in dB. Printed
per model: the mean absolute error, the share of strikes within 2 dB (the ramp's tolerance),
the mean signed error by velocity band (is the model's dynamic range compressed?) and the mean
absolute error per instrument.

``--kind solo`` adds the solo lines' onsets; ``--isolated`` keeps only the onsets struck out of
silence (nothing sounding in the ``ISOLATION`` seconds before), the case of the ramp's strikes
and of a soft note alone, and prints the mean signed error by velocity band and register, and
by velocity band that of the ``PEAK_BINS`` bins loudest in FluidSynth's mel over the window
(a spectrum drawn with its partials too low and its valleys too high can have the right
level; docs/MODELS.md, "Stop 29": soft notes alone came out 2-4 dB too quiet, their partials
3.5 dB too low).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/eval_strike_levels.py --data data/perf10s \\
        --model mel2mel/pretrained/acoustic --model runs/export-x/acoustic [--split valid] \\
        [--kind strikes --kind solo --isolated --window 0.3]
"""

from __future__ import annotations

import argparse

import numpy as np
from eval_note_detail import level_db

from mel2mel import constants as C
from mel2mel.constants import DB_PER_NEPER
from mel2mel.data.corpus import augment_kind
from mel2mel.data.dataset import load_item, read_manifest
from mel2mel.evaluation.acoustic import REGISTERS, load_model, predict_piece

BANDS = ((1, 29), (30, 59), (60, 99), (100, 127))  # velocities
SOFT_BANDS = ((1, 15), (16, 31), (32, 63), (64, 127))  # velocities, for isolated onsets
ISOLATION = 0.08  # seconds of silence before an isolated onset
PEAK_BINS = 5  # the loudest bins of a strike's mean spectrum


def strike_errors(
    model, data: str, split: str, window: float, kinds=("strikes",), isolated: bool = False
) -> dict[str, np.ndarray]:
    """Per instrument name: ``float[S x 4]`` rows of (velocity, mean pitch of the keys struck,
    level error, error of the ``PEAK_BINS`` loudest bins) for the onsets of the split's pieces
    of ``kinds``; errors are model - FluidSynth, dB."""
    manifest = read_manifest(data)
    names = [i["name"] for i in manifest["instruments"]]
    chosen = {p["id"] for p in manifest["pieces"] if augment_kind(p) in kinds}
    by_piece: dict[str, list[dict]] = {}
    for it in manifest["items"]:
        if it["split"] == split and it["piece"] in chosen:
            by_piece.setdefault(it["piece"], []).append(it)
    if not by_piece:
        raise SystemExit(f"{data}: no {' or '.join(kinds)} pieces in the {split!r} split")
    width, before = round(window * C.FRAME_RATE), round(ISOLATION * C.FRAME_RATE)
    out: dict[str, list[tuple[float, ...]]] = {}
    for items in by_piece.values():
        loaded = [load_item(data, it["id"]) for it in items]
        rows = [model.instrument_index(names[int(d["instrument"])]) for d in loaded]
        preds = predict_piece(model, loaded[0]["roll"], rows, [d["mel"].shape[1] for d in loaded])
        sounding, onsets = np.split(loaded[0]["roll"], 2)  # velocity / 127 (onsets: at onset)
        frames = [
            f
            for f in np.flatnonzero(onsets.max(axis=0) > 0)
            if not isolated or (f >= before and not sounding[:, f - before : f].any())
        ]
        for d, pred in zip(loaded, preds, strict=True):
            rows_out = out.setdefault(names[int(d["instrument"])], [])
            for f in frames:
                if f + width <= pred.shape[1]:
                    p, t = pred[:, f : f + width], d["mel"][:, f : f + width]
                    peaks = np.argsort(t.mean(1))[-PEAK_BINS:]
                    peak = (p[peaks].mean() - t[peaks].mean()) * DB_PER_NEPER
                    pitch = np.flatnonzero(onsets[:, f] > 0).mean() + C.MIDI_MIN
                    velocity = round(float(onsets[:, f].max()) * 127)
                    rows_out.append((velocity, pitch, level_db(p) - level_db(t), peak))
    return {name: np.array(rows).reshape(-1, 4) for name, rows in out.items()}


def band_table(vel: np.ndarray, pitch: np.ndarray, err: np.ndarray) -> list[str]:
    """Lines of the mean signed error (dB) and count by velocity band (rows) and register."""
    lines = ["  velocity  " + "  ".join(f"{name:>18s}" for name in REGISTERS)]
    for lo, hi in SOFT_BANDS:
        cells = []
        for plo, phi in REGISTERS.values():
            m = (vel >= lo) & (vel <= hi) & (pitch >= plo) & (pitch < phi + 1)
            cells.append(f"{err[m].mean():+6.2f} dB ({m.sum():4d})" if m.any() else " " * 18)
        lines.append(f"  {lo:3d}-{hi:<3d}   " + "  ".join(f"{c:>18s}" for c in cells))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a dataset with strikes pieces")
    ap.add_argument("--model", action="append", required=True, help="acoustic export (repeat)")
    ap.add_argument("--split", default="valid")
    ap.add_argument("--window", type=float, default=0.5, help="seconds from each onset")
    ap.add_argument(
        "--kind", action="append", choices=("strikes", "solo"), help="piece kinds (repeat)"
    )
    ap.add_argument("--isolated", action="store_true", help="only onsets out of silence")
    args = ap.parse_args()
    kinds = tuple(args.kind or ("strikes",))
    for path in args.model:
        model = load_model(path).eval()
        per = strike_errors(model, args.data, args.split, args.window, kinds, args.isolated)
        both = np.concatenate(list(per.values()))
        vel, pitch, err, peak = both.T
        bands = " ".join(
            f"{lo}-{hi} {err[(vel >= lo) & (vel <= hi)].mean():+.2f}"
            for lo, hi in BANDS
            if ((vel >= lo) & (vel <= hi)).any()
        )
        print(
            f"{path}: {len(err)} onsets, mean |error| {np.abs(err).mean():.2f} dB, "
            f"{np.mean(np.abs(err) <= 2):.0%} within 2 dB; mean error by velocity: {bands}"
        )
        print("  " + ", ".join(f"{n} {np.abs(e[:, 2]).mean():.2f}" for n, e in per.items()))
        if args.isolated:
            print("\n".join(band_table(vel, pitch, err)))
            print(
                f"  the {PEAK_BINS} loudest bins: "
                + ", ".join(
                    f"{lo}-{hi} {peak[(vel >= lo) & (vel <= hi)].mean():+.2f} dB"
                    for lo, hi in SOFT_BANDS
                    if ((vel >= lo) & (vel <= hi)).any()
                )
            )


if __name__ == "__main__":
    main()
