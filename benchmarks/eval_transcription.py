"""Rendering quality judged by independent tools: transcription and instrument recognition.

For ``--pieces`` test-split pieces of a dataset (default 8, spread evenly over the test pieces
the dataset has rendered; ``--piece ID`` picks them) and each of its instruments, the first
``--seconds`` seconds (default 20) are rendered twice:

* **ours**: :class:`mel2mel.Synthesizer` (the shipped or ``--model`` acoustic model) with each
  ``--vocoder`` (``fast``, ``griffinlim``, ``wavenet`` or the path of an exported vocoder);
* **copy** (with ``--copy``): each vocoder on the log-mel of FluidSynth's own audio, which
  separates what the vocoder loses from what the acoustic model gets wrong (the paper's
  "WaveNet on the ground-truth mel" column); a vocoder that reads the notes (the fast one's
  partials) is given the piece's roll, as in ours;
* **FluidSynth**: the training data's renderer (:mod:`mel2mel.data.fluidsynth`: same MIDI, same
  program forcing, MuseScore General, default gain), i.e. what the model was trained to imitate;
  where the dataset holds that item, its audio is read instead (the same samples, checked;
  ``--rerender`` runs FluidSynth anyway).

Then two independent judges, neither of which knows our model:

1. **Transcription.** Spotify's basic-pitch (ICASSP 2022 model, the ONNX file inside its wheel,
   run by onnxruntime on one thread, default thresholds) turns each render into notes, scored
   against the input MIDI's notes with ``mir_eval.transcription``: onset within 50 ms, pitch
   within half a semitone, offsets ignored (and, as a second number, offsets within 20% of the
   note or 50 ms). Reference notes of the same pitch starting within 50 ms of each other (two
   voices in unison) count once, as a listener hears them. Notes starting in the last
   ``END_MARGIN`` seconds of the clip are left out on both sides. Counts are summed over clips
   (micro-average) per instrument and overall; "ratio" is our F1 over FluidSynth's.
2. **Instrument recognition** (:mod:`eval_instruments`): a logistic regression on clip-level
   librosa statistics, trained on FluidSynth clips of the **train** split, classifies
   ``--clip-seconds`` clips of every render, at the same places in every render: where
   FluidSynth's render of the clip is not silent (a render silent there counts as a miss);
   FluidSynth's own test clips show what the classifier can do, ours how recognizable our
   instruments are. ``--plot`` writes the confusion matrices.

Beside the judges, how far each render sounds from FluidSynth's: the mean absolute difference
of the two audios' log-mels in dB (a judge can be pleased by a render that does not sound like
FluidSynth; this says whether it does).

Renders, transcriptions and training features are cached under ``--cache`` (keyed by the
models' weights and the settings), so a rerun only redoes what changed. Everything runs on
one thread per library (``--threads``); nothing is downloaded.

Needs ``pip install --no-deps basic-pitch==0.4.0`` and ``pip install -e '.[eval]'`` (see
docs/RENDERING.md). Usage::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/eval_transcription.py \\
        --data /work/data/paper10 --vocoder fast --plot docs/eval/instrument-confusion.png
    python benchmarks/eval_transcription.py --data DIR --pieces 3 --vocoder fast \\
        --vocoder griffinlim --json results.json
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import eval_instruments as EI
import mido
import numpy as np
import soundfile as sf
import torch
from transcription_report import (
    END_MARGIN,
    ONSET_TOLERANCE,
    REFERENCE,
    Counts,
    Results,
    report,
    score,
)

from mel2mel import constants as C
from mel2mel.audio import log_mel
from mel2mel.data.corpus import piece_midi, select_test_pieces
from mel2mel.data.dataset import read_manifest, read_roll
from mel2mel.data.fluidsynth import (
    RenderSettings,
    check_soundfont,
    force_program,
    from_int16,
    render_midi,
    to_int16,
)
from mel2mel.midi import load_midi, read_notes
from mel2mel.models import export
from mel2mel.models.export import export_paths
from mel2mel.synthesizer import PRETRAINED_DIR, Synthesizer

# -- inputs --------------------------------------------------------------------------------


def reference_notes(
    path: Path, seconds: float, start: float = 0.0
) -> tuple[np.ndarray, np.ndarray, int]:
    """Intervals ``float[N x 2]`` and MIDI pitches ``int[N]`` of the notes starting in
    ``start`` .. ``start + seconds - END_MARGIN``, in seconds from ``start`` (ends cut at
    ``seconds``), unisons merged; and how many merged."""
    notes = sorted(read_notes(path, warn=False).notes, key=lambda n: (n.pitch, n.start))
    kept: list[list[float]] = []
    merged = 0
    for n in notes:
        if not start <= n.start < start + seconds - END_MARGIN:
            continue
        if kept and kept[-1][2] == n.pitch and n.start - start - kept[-1][0] < ONSET_TOLERANCE:
            kept[-1][1] = max(kept[-1][1], n.end - start)
            merged += 1
            continue
        kept.append([n.start - start, n.end - start, n.pitch])
    arr = np.array(sorted(kept), dtype=np.float64).reshape(-1, 3)
    arr[:, 1] = np.clip(arr[:, 1], arr[:, 0] + 1e-3, seconds)
    return arr[:, :2], arr[:, 2].astype(int), merged


# -- rendering -----------------------------------------------------------------------------


def state_digest(module: torch.nn.Module, extra: str = "") -> str:
    """A short hash of a module's class, configuration and weights (cache keys)."""
    h = hashlib.sha1(
        f"{type(module).__qualname__}|{getattr(module, 'config', '')}|{extra}".encode()
    )
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def acoustic_digest(synth: Synthesizer) -> str:
    """:func:`state_digest` of the synthesizer's acoustic model, with its detail gains, its
    note beats, its note contrast and their strengths when they apply (render caches are keyed
    by it)."""
    gains, beats = synth.acoustic.detail_gains, synth.acoustic.drawn_beats
    key = "" if gains is None or not synth.sharpen else f"{gains}x{synth.sharpen:g}"
    if beats is not None and synth.beats:
        key += f"|{beats}x{synth.beats:g}"
    contrast = synth.acoustic.note_contrast
    if contrast is not None and synth.contrast:
        key += f"|{contrast}x{synth.contrast:g}"
    return state_digest(synth.acoustic, key)


def log_mel_distance(path: Path, reference: Path) -> float:
    """Mean absolute difference in dB of the log-mels of two WAV files (the common frames)."""
    a, b = (log_mel(sf.read(p, dtype="float32")[0]) for p in (path, reference))
    t = min(a.shape[1], b.shape[1])
    return float(np.abs(a[:, :t] - b[:, :t]).mean() * C.DB_PER_NEPER)


def write_wav(path: Path, audio: np.ndarray) -> None:
    """Float WAV (no quantization), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    sf.write(tmp, audio, C.SAMPLE_RATE, subtype="FLOAT", format="WAV")
    os.replace(tmp, path)


def first_seconds(midi: mido.MidiFile, seconds: float) -> mido.MidiFile:
    """The events of the first ``seconds`` of ``midi`` as a type-0 file (FluidSynth is causal,
    so its first ``seconds`` of audio are unchanged, and long pieces render much faster)."""
    track, clock, tempo, carry = mido.MidiTrack(), 0.0, 500_000, 0
    for msg in mido.merge_tracks(midi.tracks):
        clock += mido.tick2second(msg.time, midi.ticks_per_beat, tempo)
        if clock > seconds:
            break
        carry += msg.time
        if msg.type == "set_tempo":
            tempo = msg.tempo
        if msg.type != "end_of_track":
            track.append(msg.copy(time=carry))
            carry = 0
    # Notes still sounding at the cut would sustain (and FluidSynth render) forever.
    for ch in range(16):
        track.append(mido.Message("control_change", channel=ch, control=120, time=carry))
        carry = 0
    track.append(mido.MetaMessage("end_of_track", time=0))
    return mido.MidiFile(type=0, ticks_per_beat=midi.ticks_per_beat, tracks=[track])


def dataset_audio(data: Path, item_id: str, seconds: float) -> np.ndarray:
    """The first ``seconds`` of a dataset item's audio: the same FluidSynth render that
    :func:`render_reference` makes (bit-identical, checked), without running FluidSynth."""
    piece, _, slug = item_id.partition("/")
    pcm = np.load(data / "items" / piece / f"{slug}.audio.npy", mmap_mode="r")
    return from_int16(pcm[: round(seconds * C.SAMPLE_RATE)])


def render_reference(midi: Path, program: int, seconds: float, sf_path: Path, out: Path) -> None:
    """FluidSynth render of the first ``seconds``, exactly as the dataset stores it (int16)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    forced, _ = force_program(load_midi(midi), program)
    settings = RenderSettings(soundfont=str(sf_path))
    audio = render_midi(
        first_seconds(forced, seconds + 1.0), settings, work_dir=out.parent, name=out.stem
    )
    audio = from_int16(to_int16(audio))[: round(seconds * C.SAMPLE_RATE)]
    write_wav(out, audio)


# -- transcription -------------------------------------------------------------------------


class Transcriber:
    """basic-pitch's ONNX model on onnxruntime with a fixed number of threads."""

    def __init__(self, threads: int) -> None:
        try:
            logging.disable(logging.WARNING)  # basic-pitch logs a warning per missing backend
            import basic_pitch
            import onnxruntime as ort
            from basic_pitch import FilenameSuffix, build_icassp_2022_model_path
            from basic_pitch.inference import Model, predict
        except ImportError as err:
            sys.exit(
                f"error: {err}; install the evaluation tools with "
                "\"pip install --no-deps basic-pitch==0.4.0 && pip install -e '.[eval]'\""
            )
        finally:
            logging.disable(logging.NOTSET)
        from importlib.metadata import version

        path = build_icassp_2022_model_path(FilenameSuffix.onnx)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = threads
        # basic-pitch's Model picks a backend itself with default threads; we only need its
        # predict() plumbing, so it gets a session made here.
        self.model = object.__new__(Model)
        self.model.model_type = Model.MODEL_TYPES.ONNX
        self.model.model = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._predict = predict
        where = path.relative_to(Path(basic_pitch.__file__).parent.parent)
        self.version = f"basic-pitch {version('basic-pitch')} ({where}), "
        self.version += f"onnxruntime {ort.__version__}"

    def __call__(self, wav: Path) -> np.ndarray:
        """``float64[N x 3]``: onset, offset (s) and MIDI pitch of each note; cached."""
        out = wav.with_suffix(".notes.npy")
        if out.is_file():
            return np.load(out)
        with contextlib.redirect_stdout(io.StringIO()):  # predict() prints a line per file
            _, _, events = self._predict(str(wav), self.model)
        notes = np.array([(s, e, p) for s, e, p, *_ in events], dtype=np.float64).reshape(-1, 3)
        notes = notes[np.argsort(notes[:, 0], kind="stable")]
        np.save(out, notes)
        return notes


# -- the run -------------------------------------------------------------------------------


def describe(path: str | Path | None) -> str:
    """An exported model's JSON file with the step and loss of its metadata, if it has any."""
    desc = export_paths(PRETRAINED_DIR if path is None else Path(path))[1]
    try:
        meta = json.loads(desc.read_text()).get("metadata", {})
    except (OSError, ValueError):
        return str(path)
    info = ", ".join(f"{k} {meta[k]}" for k in ("step", "loss") if k in meta)
    return f"{desc}" + (f" ({info})" if info else "")


def vocoder_label(spec: str) -> str:
    """A short column name for a vocoder argument."""
    return spec if spec in ("fast", "griffinlim", "wavenet") else f"fast:{Path(spec).parent.name}"


def run(args: argparse.Namespace) -> None:
    t_start = time.perf_counter()
    data, cache = Path(args.data), Path(args.cache)
    manifest = read_manifest(data)
    instruments = manifest["instruments"]
    names = [i["name"] for i in instruments]
    pieces = select_test_pieces(manifest, args.pieces, args.piece, args.kind, args.split)
    soundfont = check_soundfont(args.soundfont or manifest.get("soundfont"))

    res = Results()
    t = time.perf_counter()
    synth = Synthesizer.from_pretrained(
        args.model, vocoder=args.vocoder[0], sharpen=args.sharpen, beats=args.beats,
        contrast=args.contrast,
    )  # fmt: skip
    acoustic_id = acoustic_digest(synth)
    gains = synth.acoustic.detail_gains is not None and synth.sharpen
    sharpened = f", detail gains x{synth.sharpen:g}" if gains else ""
    if synth.acoustic.drawn_beats is not None and synth.beats:
        sharpened += f", note beats x{synth.beats:g}"
    if synth.acoustic.note_contrast is not None and synth.contrast:
        sharpened += f", note contrast x{synth.contrast:g}"
    res.models.append(f"acoustic {describe(args.model)}{sharpened} [{acoustic_id}]")
    strengths = args.texture or [synth.texture_strength]
    strengths = strengths if synth.texture is not None else [0.0]
    if synth.texture is not None:
        # its strengths and ceiling are not in its state dict: in the key
        texture_id = state_digest(synth.texture, synth.texture.render_key())
        step = synth.texture.metadata.get("step")
        listed = ", ".join(map(str, strengths))
        res.models.append(f"texture post-net (step {step}) [{texture_id}], strengths {listed}")
    renders = {}  # label -> (vocoder, texture strength, cache folder)
    voc_ids = {v: state_digest(synth.load_vocoder(v), v) for v in args.vocoder}
    for v in args.vocoder:
        for st in strengths:
            lab = vocoder_label(v) + (f" tex{st:g}" if len(strengths) > 1 else "")
            tex = f"tex{texture_id}x{st:g}" if st > 0 else "plain"
            renders[lab] = (v, st, f"ours-{acoustic_id}-{tex}-{voc_ids[v]}")
    copies = {f"copy {vocoder_label(v)}": v for v in args.vocoder} if args.copy else {}
    for v in args.vocoder:
        lab = vocoder_label(v)
        stem = export.vocoder_path(v) if v in export.VOCODER_STEMS else None
        found = "Griffin-Lim" if v == "griffinlim" else describe(stem or v)
        res.models.append(f"{lab}: {found} [{voc_ids[v]}]")
    transcribe = Transcriber(args.threads)
    res.add_time("load models", time.perf_counter() - t)
    have = {i.program for i in synth.instruments()}
    missing = [i["name"] for i in instruments if i["program"] not in have]
    if missing:
        sys.exit(f"error: the acoustic model lacks instrument(s) {', '.join(missing)}")

    renderers = [REFERENCE, *copies, *renders]
    for lab in renderers:
        res.counts[lab] = {n: Counts() for n in names}
        res.clips[lab] = {n: [] for n in names}
    items = {(it["piece"], it["instrument"]): it["id"] for it in manifest["items"]}
    merged_total, clips = 0, []
    for piece in pieces:
        midi = piece_midi(data, piece, cache)
        seconds = min(args.seconds, read_notes(midi, warn=False).duration + 1.0)
        ref = reference_notes(midi, seconds)
        merged_total += ref[2]
        clips.append((piece, midi, seconds, ref))
    # Renderer by renderer, so that the reference (cached after the first run) comes first.
    for lab in renderers:
        if lab in copies:
            where = f"copy-notes-{voc_ids[copies[lab]]}"
        else:
            where = "fluidsynth" if lab == REFERENCE else renders[lab][2]
        t_lab = time.perf_counter()
        for k, (piece, midi, seconds, ref) in enumerate(clips):
            for idx, inst in enumerate(instruments):
                name, prog = inst["name"], inst["program"]
                wav = cache / where / f"{piece['id']}-{prog:03d}-{seconds:g}s.wav"
                if not wav.is_file():
                    t = time.perf_counter()
                    if lab in copies:
                        ref_wav = cache / "fluidsynth" / wav.name  # rendered first, above
                        true, _ = sf.read(ref_wav, dtype="float32")
                        voc = synth.load_vocoder(copies[lab])
                        mel = log_mel(true)
                        roll = None
                        if voc.uses_roll:  # the piece's notes, frame for frame
                            roll = np.zeros((C.ROLL_CHANNELS, mel.shape[1]), np.float32)
                            whole = read_roll(data, piece["id"])[:, : mel.shape[1]]
                            roll[:, : whole.shape[1]] = whole
                        write_wav(wav, voc.vocode_long(mel, roll)[: len(true)])
                    elif lab != REFERENCE:
                        v, st, _ = renders[lab]
                        audio = synth.render(
                            midi, prog, vocoder=v, start=0, duration=seconds, texture=st
                        )
                        write_wav(wav, audio)
                    elif (piece["id"], idx) in items and not args.rerender:
                        write_wav(wav, dataset_audio(data, items[piece["id"], idx], seconds))
                    else:
                        render_reference(midi, prog, seconds, soundfont, wav)
                    res.add_time(f"render {lab}", time.perf_counter() - t)
                fresh = not wav.with_suffix(".notes.npy").is_file()
                t = time.perf_counter()
                est = transcribe(wav)
                if fresh:
                    res.add_time("transcribe", time.perf_counter() - t)
                c = score(ref[:2], est, seconds)
                res.counts[lab][name].add(c)
                if lab != REFERENCE:
                    res.distance.setdefault(lab, {n: [] for n in names})[name].append(
                        log_mel_distance(wav, cache / "fluidsynth" / wav.name)
                    )
                res.clips[lab][name].append(str(wav))
                res.per_clip.append(
                    {"piece": piece["id"], "instrument": name, "renderer": lab, **vars(c)}
                )
            print(
                f"{lab}: {k + 1}/{len(clips)} pieces, {time.perf_counter() - t_lab:.0f} s",
                file=sys.stderr,
            )

    recognition = None
    if not args.no_classifier:
        recognition = recognize(args, data, manifest, cache, res, names)
    res.timings["total"] = time.perf_counter() - t_start
    res.timings["total CPU (this process)"] = time.process_time()
    report(args, res, names, pieces, recognition, transcribe.version, merged_total)


def recognize(
    args: argparse.Namespace,
    data: Path,
    manifest: dict[str, Any],
    cache: Path,
    res: Results,
    names: list[str],
) -> dict[str, np.ndarray]:
    """Train the instrument classifier and return a confusion matrix per renderer."""
    t = time.perf_counter()
    x, y = EI.training_set(
        data, manifest, "train", args.clip_seconds, args.train_clips, cache / "features"
    )
    model = EI.train(x, y)
    res.timings["classifier: train"] = time.perf_counter() - t
    res.timings["classifier: train clips"] = float(len(y))
    t = time.perf_counter()
    matrices = {}
    starts = {  # every renderer is judged where FluidSynth's render of the clip sounds
        wav: EI.clip_starts(sf.read(wav, dtype="float32")[0], args.clip_seconds)
        for wavs in res.clips[REFERENCE].values()
        for wav in wavs
    }
    for lab, by_inst in res.clips.items():
        true, feats = [], []
        for idx, name in enumerate(names):
            for wav, ref in zip(by_inst[name], res.clips[REFERENCE][name], strict=True):
                audio, _ = sf.read(wav, dtype="float32")
                for clip in EI.clips_at(audio, starts[ref], args.clip_seconds):
                    feats.append(EI.features(clip))
                    true.append(idx)
        pred = model.predict(np.stack(feats))
        matrices[lab] = EI.confusion(np.array(true), pred, len(names))
    res.timings["classifier: classify"] = time.perf_counter() - t
    return matrices


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="dataset folder (manifest.json, items/)")
    ap.add_argument("--pieces", type=int, default=8, help="pieces, spread over the split")
    ap.add_argument("--piece", action="append", default=[], help="a piece id (repeatable)")
    ap.add_argument(
        "--kind",
        choices=["all", "plain", "performed"],
        default="all",
        help="test pieces to pick from: scores as written, performances and textures, or all",
    )
    ap.add_argument(
        "--split",
        choices=["test", "valid"],
        default="test",
        help="split to pick pieces from (valid: for choosing a setting, such as a strength)",
    )
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds rendered per piece")
    ap.add_argument(
        "--vocoder", action="append", help="fast, griffinlim, wavenet or PATH (repeatable)"
    )
    ap.add_argument("--model", help="acoustic export (default: the shipped model)")
    ap.add_argument(
        "--sharpen", type=float, default=1.0, help="strength of the model's detail gains (1)"
    )
    ap.add_argument(
        "--beats", type=float, default=1.0, help="strength of the model's note beats (1)"
    )
    ap.add_argument(
        "--contrast", type=float, default=1.0, help="strength of the model's note contrast (1)"
    )
    ap.add_argument(
        "--texture", action="append", type=float,
        help="texture strength of our renders (repeatable, e.g. --texture 0 --texture 1; "
        "default: the post-net's own); ignored for a model without a texture post-net",
    )  # fmt: skip
    ap.add_argument("--soundfont", help="reference SoundFont (default: the dataset's)")
    ap.add_argument("--cache", default="/tmp/mel2mel-eval", help="renders, notes, features")
    ap.add_argument("--clip-seconds", type=float, default=3.0, help="classifier clip length")
    ap.add_argument("--train-clips", type=int, default=6, help="training clips per item")
    ap.add_argument(
        "--rerender", action="store_true", help="run FluidSynth even where the dataset has audio"
    )
    ap.add_argument(
        "--copy",
        action="store_true",
        help="also each vocoder on the log-mel of FluidSynth's audio (copy synthesis)",
    )
    ap.add_argument("--no-classifier", action="store_true", help="transcription only")
    ap.add_argument("--plot", help="PNG of the confusion matrices")
    ap.add_argument("--json", help="write every count and timing here")
    ap.add_argument("--threads", type=int, default=1, help="threads for torch/BLAS/onnxruntime")
    args = ap.parse_args(argv)
    args.vocoder = args.vocoder or ["fast"]

    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        run(args)


if __name__ == "__main__":
    main()
