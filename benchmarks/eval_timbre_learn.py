"""How precisely `mel2mel timbre learn` recovers a trained instrument from a real recording.

For ``--pieces`` test-split pieces of a dataset (spread evenly over its test pieces) and each of
its instruments, the dataset's own FluidSynth audio of the first ``--seconds`` seconds (30 by
default, the issue's figure) is given to :func:`mel2mel.timbre.learn.learn_timbre` with the
piece's MIDI, exactly as `mel2mel timbre learn --audio --midi` would. Per fit it reports:

* **distance** from the learned point to the instrument's own embedding, and that distance
  over the distance from the instrument to its nearest other instrument ("rel": 0 is exact,
  0.5 is halfway to the neighbour);
* whether the instrument is the learned point's **nearest** instrument;
* the whole excerpt's **log-mel error** (dB) at the learned point and at the instrument's own
  point, and the fit's CPU time.

The test pieces were never seen in training, so the fit has to explain unseen notes, as a
user's recording would. Usage::

    python benchmarks/eval_timbre_learn.py --data data/paper10 [--pieces 2] [--model PATH]
        [--instrument Trumpet ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

from mel2mel import Synthesizer
from mel2mel.data.dataset import load_item, read_manifest
from mel2mel.midi import read_notes
from mel2mel.timbre.learn import aligned_excerpt, learn_timbre, mel_error_db


def test_pieces(manifest: dict, count: int) -> list[str]:
    """``count`` test pieces with audio, spread evenly over the split."""
    rendered = {it["piece"] for it in manifest["items"]}
    test = [p["id"] for p in manifest["pieces"] if p["split"] == "test" and p["id"] in rendered]
    if count >= len(test):
        return test
    return [test[i] for i in np.linspace(0, len(test) - 1, count).round().astype(int)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="dataset folder (manifest.json, items/)")
    ap.add_argument("--pieces", type=int, default=2, help="test pieces, spread over the split")
    ap.add_argument("--seconds", type=float, default=30.0, help="seconds of audio per fit")
    ap.add_argument("--instrument", action="append", help="instrument name (default: all)")
    ap.add_argument("--model", help="acoustic export (default: the shipped model)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write every fit here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    data = Path(args.data)
    manifest = read_manifest(data)
    synth = Synthesizer.from_pretrained(args.model, vocoder="griffinlim", timbre_library=False)
    table = synth.timbres.table
    names = [i["name"] for i in manifest["instruments"]]
    chosen = args.instrument or names
    items = {(it["piece"], names[it["instrument"]]): it["id"] for it in manifest["items"]}
    rows = []
    print("piece            instrument         dist   rel  nearest  own dB  learned dB  CPU s")
    for piece in test_pieces(manifest, args.pieces):
        notes = read_notes(data / "sources" / f"{piece}.mid", warn=False)
        for name in chosen:
            if (piece, name) not in items:
                sys.exit(f"error: the dataset has no {name} audio for {piece}")
            audio = load_item(data, items[piece, name])["audio"]
            k = synth.timbres.index(name)
            own = table[k]
            result = learn_timbre(synth, audio, notes, duration=args.seconds, progress=False)
            dist = np.linalg.norm(table - result.vector, axis=1)
            neighbour = np.delete(np.linalg.norm(table - own, axis=1), k).min()
            roll, target = aligned_excerpt(audio, notes, 0.0, args.seconds)
            own_db = mel_error_db(synth.acoustic, roll, target, own)
            row = {
                "piece": piece, "instrument": name, "distance": float(dist[k]),
                "relative": float(dist[k] / neighbour), "nearest": bool(dist.argmin() == k),
                "own_db": own_db, "learned_db": result.mel_error_db,
                "cpu_seconds": result.cpu_seconds, "vector": result.vector.tolist(),
            }  # fmt: skip
            rows.append(row)
            print(
                f"{piece:16s} {name:17s} {row['distance']:5.2f} {row['relative']:5.2f} "
                f"{'yes' if row['nearest'] else 'NO':>7s}  {own_db:6.2f}  "
                f"{result.mel_error_db:10.2f}  {result.cpu_seconds:5.1f}",
                flush=True,
            )
    rel = [r["relative"] for r in rows]
    print(
        f"\n{len(rows)} fits: nearest instrument correct in {sum(r['nearest'] for r in rows)}; "
        f"relative distance median {statistics.median(rel):.2f}, max {max(rel):.2f}, "
        f"under 1/3 in {sum(x < 1 / 3 for x in rel)}; learned - own error median "
        f"{statistics.median(r['learned_db'] - r['own_db'] for r in rows):+.2f} dB; "
        f"CPU per fit median {statistics.median(r['cpu_seconds'] for r in rows):.1f} s"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
