"""The independent judges of ``benchmarks/eval_transcription.py`` on a gallery's own clips.

For every clip of a site made by ``mel2mel gallery build``: basic-pitch transcribes it and the
notes are scored against the MIDI notes that start inside the clip's segment (onset within
50 ms, pitch within half a semitone; ``transcription_report.score``); the instrument classifier
of ``eval_instruments`` (trained on the dataset's train split) labels its 3-s windows. The
counts go into each clip's ``"judges"`` entry of ``gallery.json``, and every column's header
then shows the onset F1 over its clips, its ratio to the original's, and the share of windows
recognized (``mel2mel.gallery.build.column_figures``); the page is rewritten.

Clips are decoded from the gallery's files (Opus/MP3 included: what a listener hears) and
divided by their row gain, so the classifier's silence threshold sees the dataset's level.
Transcriptions are cached under ``--cache`` by the clip file's hash. Usage::

    OMP_NUM_THREADS=1 python benchmarks/eval_gallery.py site/
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import eval_instruments as EI
import numpy as np
import soundfile as sf
from eval_transcription import Transcriber, reference_notes, write_wav
from transcription_report import score

from mel2mel.data.corpus import piece_midi
from mel2mel.data.dataset import read_manifest
from mel2mel.gallery.build import refresh_figures
from mel2mel.gallery.page import write_page


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("site", type=Path, help="a gallery folder (gallery.json)")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/mel2mel-eval"), help="cache")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime threads")
    ap.add_argument("--clip-seconds", type=float, default=3.0, help="classifier window")
    ap.add_argument("--train-clips", type=int, default=6, help="training windows per item")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    doc = json.loads((args.site / "gallery.json").read_text())
    data = Path(doc["data"])
    manifest = read_manifest(data)
    names = [i["name"] for i in manifest["instruments"]]
    pieces = {p["id"]: p for p in manifest["pieces"]}
    transcribe = Transcriber(args.threads)
    x, y = EI.training_set(data, manifest, "train", args.clip_seconds, args.train_clips,
                           args.cache / "features")  # fmt: skip
    classifier = EI.train(x, y)
    segments = {t["id"]: t for t in doc["tracks"]}
    refs = {}
    for tid, t in segments.items():
        midi = piece_midi(data, pieces[tid], args.cache)
        refs[tid] = reference_notes(midi, t["seconds"], t["start"])[:2]
    for k, clip in enumerate(doc["clips"]):
        path = args.site / clip["audio"]
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:20]
        audio, _ = sf.read(path, dtype="float32")
        audio = audio / clip.get("gain", 1.0)
        wav = args.cache / "gallery" / f"{digest}.wav"
        if not wav.is_file():
            write_wav(wav, audio)
        seconds = segments[clip["track"]]["seconds"]
        c = score(refs[clip["track"]], transcribe(wav), seconds)
        windows = EI.clips(audio, args.clip_seconds)
        pred = classifier.predict(EI.feature_matrix(windows)) if windows else []
        right = int(np.sum(np.asarray(pred) == names.index(clip["instrument"])))
        clip["judges"] = {"ref": c.ref, "est": c.est, "onset": c.onset,
                          "windows": len(windows), "recognized": right}  # fmt: skip
        if (k + 1) % 50 == 0:
            print(f"{k + 1}/{len(doc['clips'])} clips", file=sys.stderr)
    write_page(args.site, refresh_figures(doc))
    print(f"{'configuration':<24} {'onset F1':>8} {'ratio':>6} {'recognized':>10}")
    for c in doc["configs"]:
        f = c["figures"]
        ratio = "n/a" if f.get("onset_f1_ratio") is None else f"{f['onset_f1_ratio']:.2f}"
        print(f"{c['name']:<24} {f['onset_f1']:>8.3f} {ratio:>6} {f['recognition']:>10.0%}")
    print(f"{len(doc['clips'])} clips in {time.perf_counter() - t0:.0f} s; {transcribe.version}")


if __name__ == "__main__":
    main()
