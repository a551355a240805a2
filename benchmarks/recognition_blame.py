"""Why the classifier mistakes the model's clips: the margin lost, feature group by group.

For each instrument, the clips of one render folder of ``eval_transcription.py``'s cache are
classified with its instrument classifier (``eval_instruments.py``, trained on the train
split's FluidSynth audio), and the logit margin between the true instrument and the one the
model's clips are most often mistaken for is compared with the margin of FluidSynth's clips of
the same passages. The classifier is linear, so the change splits exactly over the features:
``sum_f (w_true,f - w_other,f) (x_ours,f - x_fluidsynth,f)``, summed per
``eval_instruments.FEATURE_GROUPS``. A large negative group is what moves the clips toward the
wrong instrument (docs/MODELS.md, "Detail gains"). Usage::

    python benchmarks/eval_transcription.py --data data/perf10 --split valid --kind performed \\
        --pieces 8 --vocoder fast --cache CACHE           # writes CACHE/fluidsynth, CACHE/ours-*
    OMP_NUM_THREADS=1 python benchmarks/recognition_blame.py --data data/perf10 --cache CACHE \\
        ours-<model>-<texture>-<vocoder>

About 1 min on one core once the features of the train split are cached.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import eval_instruments as EI
import numpy as np
import soundfile as sf

from mel2mel.data.dataset import read_manifest

CLIP_SECONDS = 3.0  # as eval_transcription.py's default


def clip_features(wav: Path, starts: list[int]) -> np.ndarray:
    audio, _ = sf.read(wav, dtype="float32")
    return EI.feature_matrix(EI.clips_at(audio, starts, CLIP_SECONDS))


def margin(classifier, x: np.ndarray, k: int, other: int) -> float:
    """Mean logit margin of class ``k`` over class ``other`` on the clips ``x``."""
    d = classifier.decision_function(x)
    return float((d[:, k] - d[:, other]).mean())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="the dataset of the cache")
    ap.add_argument("--cache", type=Path, required=True, help="eval_transcription.py's cache")
    ap.add_argument("renders", help="a render folder of the cache (ours-...)")
    ap.add_argument("--train-clips", type=int, default=6, help="as eval_transcription.py (6)")
    args = ap.parse_args(argv)
    manifest = read_manifest(args.data)
    names = [i["name"] for i in manifest["instruments"]]
    x, y = EI.training_set(
        args.data, manifest, "train", CLIP_SECONDS, args.train_clips, args.cache / "features"
    )
    classifier = EI.train(x, y)
    scaler, linear = classifier[0], classifier[1]
    weights = linear.coef_ / scaler.scale_  # per raw feature
    for k, inst in enumerate(manifest["instruments"]):
        ref_x, our_x = [], []
        for ref in sorted((args.cache / "fluidsynth").glob(f"*-{inst['program']:03d}-*.wav")):
            ours = args.cache / args.renders / ref.name
            if not ours.is_file():
                continue
            audio, _ = sf.read(ref, dtype="float32")
            starts = EI.clip_starts(audio, CLIP_SECONDS)  # where FluidSynth's render sounds
            if not starts:
                continue
            ref_x.append(clip_features(ref, starts))
            our_x.append(clip_features(ours, starts))
        if not ref_x:
            continue
        fs, ours = np.concatenate(ref_x), np.concatenate(our_x)
        predicted = classifier.predict(ours)
        wrong = np.bincount(predicted[predicted != k], minlength=len(names))
        if wrong.any():  # the instrument they are most often taken for
            other = int(wrong.argmax())
        else:  # or the runner-up on average
            scores = classifier.decision_function(ours).mean(0)
            scores[k] = -np.inf
            other = int(scores.argmax())
        change = (ours - fs) * (weights[k] - weights[other])  # clips x features
        print(
            f"\n{names[k]}: {np.mean(predicted == k):.0%} of {len(ours)} clips right; margin "
            f"over {names[other]}: FluidSynth {margin(classifier, fs, k, other):.1f} -> ours "
            f"{margin(classifier, ours, k, other):.1f}"
        )
        for group, a, b in EI.FEATURE_GROUPS:
            print(f"  {group:32s} {change[:, a:b].sum(1).mean():+6.2f}")


if __name__ == "__main__":
    main()
