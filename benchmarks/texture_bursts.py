"""How far the texture post-net lifts bins above their frame (docs/TEXTURE.md, "A ceiling").

For each of the paper's ten instruments and each texture strength, the shipped synthesizer
(or ``--model``) predicts the mel of one MIDI file without texture and with it, and this
prints the frames where a bin of the textured mel rises more than 6 dB above the loudest bin
of the same frame without texture, the largest such rise, and the peak of the rendered audio
(fast vocoder) or the error that stopped the render::

    OMP_NUM_THREADS=1 python benchmarks/texture_bursts.py \\
        data/perf10/sources/bach-bwv114_7-perf1.mid --strength 1 --strength 4
"""

from __future__ import annotations

import argparse

import numpy as np

from mel2mel import Synthesizer
from mel2mel import constants as C
from mel2mel.errors import UserError

OVER_DB = 6.0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("midi")
    ap.add_argument("--model", help="acoustic export with a texture post-net (default: shipped)")
    ap.add_argument("--strength", type=float, action="append", help="texture strength (1)")
    ap.add_argument("--seconds", type=float, default=20.0, help="length rendered (20)")
    args = ap.parse_args(argv)
    synth = Synthesizer.from_pretrained(args.model, vocoder="fast", timbre_library=False)
    print(f"| instrument | strength | frames with a bin > {OVER_DB:g} dB over its frame "
          "| largest rise (dB) | audio peak |")  # fmt: skip
    print("|---|---|---|---|---|")
    for name in C.PAPER_INSTRUMENTS:
        plain = synth.mel(args.midi, timbre=name, texture=0, duration=args.seconds)
        top = plain.max(0) * C.DB_PER_NEPER
        for strength in args.strength or [1.0]:
            try:
                mel = synth.mel(args.midi, timbre=name, texture=strength, duration=args.seconds)
            except UserError as e:
                print(f"| {name} | {strength:g} | error: {e} | | |")
                continue
            rise = mel.max(0) * C.DB_PER_NEPER - top
            try:
                audio = synth.render(
                    args.midi, timbre=name, texture=strength, duration=args.seconds
                )
                peak = f"{np.abs(audio).max():.2f}"
            except UserError as e:
                peak = f"error: {e}"
            print(f"| {name} | {strength:g} | {int((rise > OVER_DB + 0.01).sum())} of {rise.size} "
                  f"| {rise.max():+.1f} | {peak} |")  # fmt: skip


if __name__ == "__main__":
    main()
