"""Does FluidSynth keep held notes down? The held partials' ceiling applied to FluidSynth's sound.

The fast vocoder's ``held_partials`` option (``mel2mel.vocoders.held``) assumes that a held
note's low partials do not rise while other notes are struck. This checks the assumption on
the sound the models learn from: for the first ``--seconds`` of a few performed pieces of a
split x every instrument of a dataset,

* **the truth**: the ceiling applied to the STFT magnitude of FluidSynth's own audio. Printed:
  the share of (bin, frame) cells it caps, and among the capped cells within 60 dB of the
  clip's peak, the share it lowers by more than 1 dB and the mean it takes away. If the
  assumption held, it would take nothing;
* **copy synthesis**: the shipped fast vocoder on FluidSynth's log-mel and the notes, with
  and without the ceiling. Printed: the log-mel MAE (dB) of its audio against FluidSynth's.

The ceiling's settings are those of ``HeldPartials`` unless given. Usage::

    OMP_NUM_THREADS=1 python benchmarks/eval_held_partials.py --data data/perf10 \\
        [--split valid] [--pieces 8] [--rise-db 0] [--release-db none] [--harmonics 3]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from eval_transcription import dataset_audio
from eval_transcription_ceiling import stft

from mel2mel import Synthesizer
from mel2mel import constants as C
from mel2mel.audio import log_mel
from mel2mel.data.corpus import piece_midi, select_test_pieces
from mel2mel.data.dataset import read_manifest
from mel2mel.midi import piano_roll, read_notes
from mel2mel.vocoders.held import RELEASE_DB, HeldPartials


def truth_cut(audio: np.ndarray, roll: torch.Tensor, held: HeldPartials) -> tuple[int, int, list]:
    """``(cells, capped cells, dB taken from each loud capped cell)`` of the ceiling on the STFT
    magnitude of ``audio``; ``roll`` is Tensor[1 x ROLL_CHANNELS x T]."""
    spec = stft(audio).abs().T[None]  # [1 x T x F]
    frames = min(spec.shape[1], roll.shape[2])
    spec, roll = spec[:, :frames], roll[..., :frames]
    out, _ = held(spec, roll)
    capped, free, _ = held.masks(roll)
    capped = capped & ~free
    loud = spec > spec.max() * 1e-3
    cut = 20 * torch.log10(spec.clamp_min(1e-12) / out.clamp_min(1e-12))
    return spec.numel(), int(capped.sum()), cut[capped & loud].tolist()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="dataset folder")
    ap.add_argument("--split", choices=["test", "valid"], default="valid")
    ap.add_argument("--pieces", type=int, default=8, help="performed pieces of the split")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rise-db", type=float, default=0.0)
    ap.add_argument("--release-db", default=str(RELEASE_DB), help="dB per frame, or none")
    ap.add_argument("--harmonics", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/mel2mel-held"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    release = None if args.release_db.lower() == "none" else float(args.release_db)
    ceiling = HeldPartials(C.N_FFT, args.harmonics, rise_db=args.rise_db, release_db=release)
    manifest = read_manifest(args.data)
    pieces = select_test_pieces(manifest, args.pieces, (), "performed", args.split)
    items = {(it["piece"], it["instrument"]): it["id"] for it in manifest["items"]}
    plain = Synthesizer.from_pretrained(None, timbre_library=False).vocoder
    held = plain.with_held_partials(True)
    held.held = ceiling
    cells, capped, cuts = 0, 0, []
    mae: dict[str, list[float]] = {"plain": [], "held": []}
    for piece in pieces:
        midi = piece_midi(args.data, piece, args.cache)
        for i in range(len(manifest["instruments"])):
            if (piece["id"], i) not in items:
                continue
            audio = dataset_audio(args.data, items[piece["id"], i], args.seconds)
            mel = log_mel(audio)
            roll = piano_roll(read_notes(midi, warn=False).notes, mel.shape[1])
            n, c, cut = truth_cut(audio, torch.from_numpy(roll)[None], ceiling)
            cells, capped, cuts = cells + n, capped + c, cuts + cut
            for name, voc in (("plain", plain), ("held", held)):
                out = log_mel(voc.vocode(mel, roll).numpy()[: len(audio)])
                t = min(out.shape[1], mel.shape[1])
                mae[name].append(float(np.abs(out[:, :t] - mel[:, :t]).mean() * C.DB_PER_NEPER))
        print(f"{piece['id']} done", flush=True)
    taken = np.asarray(cuts)
    clips = len(mae["plain"])
    print(f"ceiling: harmonics {args.harmonics}, rise {args.rise_db} dB, release {release} dB "
          f"per frame; {len(pieces)} pieces of the {args.split} split, {clips} clips")  # fmt: skip
    print(f"FluidSynth's STFT: {capped / max(cells, 1):.1%} of the cells capped; of the loud "
          f"ones {np.mean(taken > 1):.0%} lowered by more than 1 dB, {taken.mean():.2f} dB taken "
          f"on average (90th percentile {np.percentile(taken, 90):.1f} dB)")  # fmt: skip
    print(f"copy synthesis, log-mel MAE against FluidSynth: {np.mean(mae['plain']):.2f} dB "
          f"without the ceiling, {np.mean(mae['held']):.2f} dB with it")  # fmt: skip


if __name__ == "__main__":
    main()
