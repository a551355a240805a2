"""Does the 100-instrument model's rendition of a clip sound like the SoundFont it learned?

For every instrument of a many-instrument dataset (``mel2mel data build --instruments
space100``), the clips of its **test** items (music never trained on) are played twice: by
FluidSynth with the instrument's SoundFont (the dataset's audio) and by the model (predicted
mel, then the fast vocoder). The project's instrument classifier (:mod:`eval_instruments`:
librosa clip statistics and a logistic regression, trained here on the dataset's **train**
split FluidSynth audio over all the instruments) labels every clip. Per instrument it reports

* ``same``: whether the label most given to the model's clips equals the label most given to
  the SoundFont's clips of the same passages (the issue's check: "recognized as the same
  instrument");
* ``model_acc`` / ``soundfont_acc``: the share of the model's and of the SoundFont's clips
  labelled as the instrument itself (chance is 1 %);
* ``copy_same`` / ``copy_acc``: the same for the fast vocoder on the SoundFont's own mel (copy
  synthesis), which separates what the vocoder loses from what the acoustic model gets wrong.

It also says what the classifier hears differently: for each group of its features
(``eval_instruments.FEATURE_GROUPS``), the mean and the mean absolute difference between the
model's clips and the SoundFont's same clips, in standard deviations of the training clips
(``feature_shifts`` in the JSON; copy synthesis beside it).

    OMP_NUM_THREADS=1 python benchmarks/eval_space_recognition.py --data data/space100 \
        --model mel2mel/pretrained/acoustic100 -o runs/space100-recognition.json

``--texture S`` passes the model's mel through the texture post-net exported beside it
(``acoustic100_texture.*``) at strength ``S`` (0, the default, judges the acoustic model alone).
``--vocoder PATH`` plays the model's mel with another exported fast vocoder (copy synthesis keeps
the shipped one, the reference).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import eval_instruments as EI
import numpy as np
import torch

from mel2mel.data.dataset import crop_array, read_manifest, read_roll
from mel2mel.models.beats import BeatNotes
from mel2mel.models.export import (
    load_acoustic,
    load_pretrained_vocoder,
    load_texture,
    load_vocoder,
    stem_paths,
)
from mel2mel.models.texture import texture_noise

CLIP_SECONDS = 3.0


def item_arrays(data: Path, item_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(FluidSynth audio ``float32[N]``, roll ``float32[176 x T]`` in velocity / 127, as the
    models read it) of a dataset item."""
    piece, _, slug = item_id.partition("/")
    audio = np.load(data / "items" / piece / f"{slug}.audio.npy").astype(np.float32) / 32767.0
    roll = read_roll(data, piece)
    return audio, roll


def notes(roll: np.ndarray, frames: int, heard: bool) -> torch.Tensor | None:
    """The roll cut or padded to ``frames`` frames for a vocoder, or ``None`` (``--no-notes``)."""
    return torch.from_numpy(crop_array(roll, 0, frames, 0.0)) if heard else None


def majority(labels: list[int]) -> int | None:
    return Counter(labels).most_common(1)[0][0] if labels else None


def run(args: argparse.Namespace) -> dict:
    manifest = read_manifest(args.data)
    names = [i["name"] for i in manifest["instruments"]]
    model = load_acoustic(args.model).eval()
    if [i.name for i in model.instruments] != names:
        sys.exit("the model's instruments are not the dataset's (same names, same order)")
    shipped = load_pretrained_vocoder("fast").eval()
    vocoder = shipped if args.vocoder is None else load_vocoder(args.vocoder).eval()
    texture = None
    if args.texture:
        weights = stem_paths(args.model)[0]
        texture = load_texture(weights.with_suffix(""), weights)
        if texture is None:
            sys.exit(f"--texture: no post-net exported beside {args.model}")
    t0 = time.perf_counter()
    x, y = EI.training_set(args.data, manifest, "train", CLIP_SECONDS, args.train_clips, args.cache)
    classifier = EI.train(x, y)
    print(f"classifier: {len(y)} train clips, {time.perf_counter() - t0:.0f} s", flush=True)
    per: dict[int, dict[str, list[int]]] = {
        k: {"model": [], "soundfont": [], "copy": []} for k in range(len(names))
    }
    clip_features: dict[str, list[np.ndarray]] = {"model": [], "soundfont": [], "copy": []}
    items = [it for it in manifest["items"] if it["split"] == args.split]
    for n, it in enumerate(items):
        audio, roll = item_arrays(args.data, it["id"])
        piece, _, slug = it["id"].partition("/")
        true_mel = np.load(args.data / "items" / piece / f"{slug}.mel.npy").astype(np.float32)
        with torch.inference_mode():
            mel = model.infer(torch.from_numpy(roll)[None], instrument=it["instrument"])
            emb = model.embed(it["instrument"])
            mel = model.sharpen(mel, emb, args.sharpen)
            mel = model.contrast(mel, emb, torch.from_numpy(roll)[None])  # as synthesized
            if model.note_beats is not None and args.beats:  # as the synthesizer draws them
                beats, emb = model.note_beats, model.embed(it["instrument"])[0]
                near = BeatNotes.from_roll(roll)
                mel = beats.apply(mel[0], near, 0, emb, strength=args.beats)[None]
            if texture is not None:
                noise = texture_noise(n, 0, mel.shape[-1], texture.config.noise_channels)[None]
                mel = texture(mel, model.embed(it["instrument"]), noise, args.texture)
            # both vocoders hear the notes (their partials), as the synthesizer's does
            heard = not args.no_notes
            ours = vocoder.vocode(mel, notes(roll, mel.shape[-1], heard)).reshape(-1).numpy()
            true = torch.from_numpy(true_mel)[None]
            copy = shipped.vocode(true, notes(roll, true.shape[-1], heard)).reshape(-1).numpy()
        starts = EI.clip_starts(audio, CLIP_SECONDS, args.clips)  # where the SoundFont sounds
        players = (("soundfont", audio), ("model", ours), ("copy", copy)) if starts else ()
        for kind, played in players:
            found = EI.clips_at(played[: len(audio)], starts, CLIP_SECONDS)
            features = EI.feature_matrix(found)
            clip_features[kind].append(features)
            per[it["instrument"]][kind] += classifier.predict(features).tolist()
        if (n + 1) % 50 == 0:
            print(f"{n + 1}/{len(items)} items, {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    for k, name in enumerate(names):
        m, s, c = per[k]["model"], per[k]["soundfont"], per[k]["copy"]
        rows.append({
            "name": name, "clips": len(m), "same": m != [] and majority(m) == majority(s),
            "copy_same": c != [] and majority(c) == majority(s),
            "model_majority": None if not m else names[majority(m)],
            "soundfont_majority": None if not s else names[majority(s)],
            "model_acc": float(np.mean(np.array(m) == k)) if m else None,
            "soundfont_acc": float(np.mean(np.array(s) == k)) if s else None,
            "copy_acc": float(np.mean(np.array(c) == k)) if c else None,
        })  # fmt: skip
    judged = [r for r in rows if r["clips"]]
    summary = {"instruments": len(judged), "seconds": round(time.perf_counter() - t0, 1)}
    for key in ("same", "copy_same"):
        summary[f"{key}_share"] = float(np.mean([r[key] for r in judged]))
    for key in ("model_acc", "soundfont_acc", "copy_acc"):
        summary[key] = float(np.mean([r[key] for r in judged]))
    sf = np.concatenate(clip_features["soundfont"])
    summary["feature_shifts"] = {
        kind: EI.feature_shifts(np.concatenate(clip_features[kind]), sf, x)
        for kind in ("model", "copy")
    }
    return {"model": str(args.model), "texture": args.texture, "sharpen": args.sharpen,
            "beats": args.beats, "detail_gains": model.detail_gains is not None,
            "vocoder": str(args.vocoder),
            "data": str(args.data), "split": args.split, "clip_seconds": CLIP_SECONDS,
            "summary": summary, "instruments": rows}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--split", default="test", choices=["valid", "test"])
    p.add_argument(
        "--texture",
        type=float,
        default=0.0,
        help="texture post-net strength (default 0: the acoustic model alone)",
    )
    p.add_argument(
        "--sharpen", type=float, default=1.0, help="strength of the model's detail gains (1)"
    )
    p.add_argument(
        "--beats", type=float, default=1.0, help="strength of the model's note beats (1)"
    )
    p.add_argument("--vocoder", type=Path, help="an exported fast vocoder for the model's mel")
    p.add_argument("--no-notes", action="store_true", help="vocoders without the roll (partials)")
    p.add_argument("--clips", type=int, default=3, help="clips per test item (default 3)")
    p.add_argument("--train-clips", type=int, default=3, help="clips per train item (default 3)")
    p.add_argument("--cache", type=Path, default=Path("runs/eval-space-cache"))
    p.add_argument("-o", "--output", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    report = run(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    s = report["summary"]
    print(f"same instrument as the SoundFont (majority label): model {s['same_share']:.0%}, "
          f"fast vocoder on the true mel {s['copy_same_share']:.0%} of {s['instruments']}; "
          f"recognized as itself: model {s['model_acc']:.0%}, copy {s['copy_acc']:.0%}, "
          f"SoundFont {s['soundfont_acc']:.0%}")  # fmt: skip
    print("features against the SoundFont's clips, in train standard deviations (mean / mean "
          "absolute): model | copy")  # fmt: skip
    shifts = s["feature_shifts"]
    for group, (mean, size) in shifts["model"].items():
        c_mean, c_size = shifts["copy"][group]
        print(f"  {group:30s} {mean:+.2f} / {size:.2f} | {c_mean:+.2f} / {c_size:.2f}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
