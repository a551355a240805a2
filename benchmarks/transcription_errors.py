"""What kind of notes a render's transcription adds and misses, beside FluidSynth's.

Reads the renders and transcriptions that ``eval_transcription.py`` or
``eval_transcription_ceiling.py`` cached (``<cache>/fluidsynth/<clip>.notes.npy`` and the same
clip under each render folder named on the command line), matches every clip's transcribed
notes with the reference notes as they do (basic-pitch, onset within 50 ms, pitch within half a
semitone) and sorts each transcribed note that matches none by what lies near it, first rule
first:

* ``octave`` / ``twelfth`` / ``1-2 semitones``: that far from a note struck within 50 ms;
* ``late or early``: a note of the same pitch struck 50-150 ms away;
* ``re-struck``: the same pitch sounds (struck earlier, not yet released);
* ``other pitch``: another pitch struck within 50 ms; ``nothing near``: none of these.

Printed per render: the share of its transcribed notes in each class, then the recall of the
reference notes per octave. Usage (with the caches of the commands in docs/MODELS.md)::

    python benchmarks/transcription_errors.py --data data/perf10 \\
        --cache /tmp/mel2mel-ceiling copy-<digest> model-<digest>-<digest>
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

import mir_eval
import numpy as np
from eval_transcription import reference_notes
from transcription_report import END_MARGIN, ONSET_TOLERANCE

from mel2mel.data.corpus import piece_midi
from mel2mel.data.dataset import read_manifest

REFERENCE = "fluidsynth"
CLIP = re.compile(r"(?P<piece>.*)-(?P<instrument>\d+)-(?P<seconds>[\d.]+)s\.notes\.npy")
NEAR_SECONDS = 0.15  # "late or early": the same pitch struck this close


def hz(midi: np.ndarray) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=float) - 69) / 12)


def classify(ref: tuple[np.ndarray, np.ndarray], est: np.ndarray) -> tuple[Counter, set[int]]:
    """Classes of the transcribed notes ``est`` (``[N x 3]``: onset, offset, MIDI pitch) of one
    clip against the reference (intervals, pitches), and the reference notes matched."""
    intervals, pitches = ref
    est_iv = np.stack([est[:, 0], np.maximum(est[:, 1], est[:, 0] + 1e-3)], axis=1)
    pairs = mir_eval.transcription.match_notes(
        intervals, hz(pitches), est_iv, hz(est[:, 2]), onset_tolerance=ONSET_TOLERANCE,
        pitch_tolerance=50.0, offset_ratio=None,
    )  # fmt: skip
    matched = {j for _, j in pairs}
    onsets = intervals[:, 0]
    out: Counter = Counter(hit=len(pairs))
    for j in set(range(len(est))) - matched:
        t, p = est[j, 0], est[j, 2]
        struck = np.abs(pitches[np.abs(onsets - t) < ONSET_TOLERANCE] - p)
        nearby = pitches[np.abs(onsets - t) < NEAR_SECONDS]
        sounding = (onsets <= t) & (intervals[:, 1] >= t) & (pitches == p)
        if (struck == 12).any():
            out["octave"] += 1
        elif (struck == 19).any():
            out["twelfth"] += 1
        elif ((struck >= 1) & (struck <= 2)).any():
            out["1-2 semitones"] += 1
        elif (nearby == p).any():
            out["late or early"] += 1
        elif sounding.any():
            out["re-struck"] += 1
        elif struck.size:
            out["other pitch"] += 1
        else:
            out["nothing near"] += 1
    return out, {i for i, _ in pairs}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="the dataset the clips came from")
    ap.add_argument("--cache", type=Path, required=True, help="the benchmark's cache folder")
    ap.add_argument("renders", nargs="+", help="render folders under --cache")
    args = ap.parse_args(argv)
    pieces = {p["id"]: p for p in read_manifest(args.data)["pieces"]}
    kinds = [REFERENCE, *args.renders]
    classes = {k: Counter() for k in kinds}
    found = {k: Counter() for k in kinds}
    octaves: Counter = Counter()
    for path in sorted((args.cache / REFERENCE).glob("*.notes.npy")):
        clip = CLIP.fullmatch(path.name)
        if clip is None or not all((args.cache / k / path.name).is_file() for k in kinds):
            continue
        seconds = float(clip["seconds"])
        midi = piece_midi(args.data, pieces[clip["piece"]], args.cache)
        ref = reference_notes(midi, seconds)[:2]
        octaves.update(ref[1] // 12)
        for kind in kinds:
            est = np.load(args.cache / kind / path.name)
            est = est[est[:, 0] < seconds - END_MARGIN] if len(est) else np.zeros((0, 3))
            counts, matched = classify(ref, est)
            classes[kind] += counts
            found[kind].update(ref[1][sorted(matched)] // 12)
    for kind in kinds:
        total = max(sum(classes[kind].values()), 1)
        shares = ", ".join(f"{name} {n / total:.1%}" for name, n in classes[kind].most_common())
        print(f"{kind}: {total} transcribed notes: {shares}")
    print("\nrecall per octave (C-1 = 0): notes | " + " | ".join(kinds))
    for octave in sorted(octaves):
        n = octaves[octave]
        shares = " | ".join(f"{found[k][octave] / n:.2f}" for k in kinds)
        print(f"{octave - 1:2d}: {n:5d} | {shares}")


if __name__ == "__main__":
    main()
