"""Which stage loses the notes a transcriber hears: the mel, the phase, the vocoder or the model?

For a few test pieces x instruments of a dataset (first ``--seconds``), FluidSynth's audio (the
dataset's) is compared with audio that keeps one more thing of it, each transcribed by the judge
of ``eval_transcription.py`` (basic-pitch, onset within 50 ms) and scored against the MIDI:

* ``true magnitude + Griffin-Lim``: FluidSynth's linear STFT magnitude, phase found by 32
  Griffin-Lim iterations (what the phase costs);
* ``mel inverse + true phase``: the non-negative least-squares inverse of the log-mel's
  magnitude with FluidSynth's phase (what the 80-band mel costs);
* ``copy, refine K``: the fast vocoder on FluidSynth's log-mel (copy synthesis) with ``K``
  mel-matching refinement iterations (``--refine``, repeatable);
* ``model, refine K``: the acoustic model's mel (texture post-net off) through the same vocoder.

With ``--hybrids``, mels that mix the two, through the vocoder with the first ``--refine``:
which part of the model's mel loses the notes (docs/MODELS.md, "What the transcriber and the
classifier miss"):

* ``FluidSynth, smoothed over 3 bins``: FluidSynth's mel averaged over 3 neighbouring mel bins
  in every frame (its peaks flattened, its frame power kept);
* ``FluidSynth, smoothed over 5 frames``: averaged over 5 frames instead (attacks blurred);
* ``model + FluidSynth's spectral detail``: the model's mel plus what 3-bin smoothing takes
  from FluidSynth's (the peaks and valleys around its local mean);
* ``model, FluidSynth's onset frames``: the model's mel with FluidSynth's in the frames from 4
  before to 3 after every note onset;
* ``FluidSynth, the model's frame level``: FluidSynth's mel moved in every frame to the
  model's frame power;
* ``FluidSynth, the model's mean spectrum``: FluidSynth's mel with each bin's mean over the
  clip replaced by the model's (the long-term spectral envelope, the "colour", swapped);
* ``model, FluidSynth's mean spectrum``: the reverse;
* ``model + the harmonic combs' detail``: the model's mel plus the detail of the sounding
  notes' harmonic combs computed from the MIDI alone (``mel2mel.models.harmonic``, what a
  ``harmonic_detail`` model adds) at a gain of ``COMB_GAIN`` in every bin: how much of
  FluidSynth's detail the pitches alone give back;
* ``model + FluidSynth's modulation``: the model's mel plus what a moving average over
  ``MODULATION_FRAMES`` frames takes from FluidSynth's (tremolo, vibrato, beating, and the
  attacks); ``... between onsets``: only in frames at least half that window from every
  onset (the held sound's modulation, not the attacks);
* ``FluidSynth, steadied between onsets``: FluidSynth's mel without that held modulation;
* ``model + FluidSynth's modulation, 1 s late``: the modulation moved 1 s later (circularly):
  as much of it, out of step with the notes (does the classifier need it in place?).

With ``--phases``, which part of the fast vocoder's phase loses the notes of copy synthesis
(docs/VOCODERS.md, "Partials from the notes"), with the vocoder's refined magnitude of the first
``--refine`` kept and its phase replaced by:

* ``vocoder magnitude + true phase``: FluidSynth's;
* ``... + true frequency, random offsets``: FluidSynth's plus a random constant per bin (its
  instantaneous frequency kept, the alignment of the bins at the attacks lost);
* ``... + true phase at onsets``: FluidSynth's from 2 frames before to 3 after every note
  onset, the vocoder's elsewhere;

and the vocoder with ``partial_phase`` (the notes' partials from the roll,
``mel2mel.vocoders.partials``) on FluidSynth's mel and on the model's; then, on the model's mel
through that vocoder, its refined magnitude with FluidSynth's phase everywhere, only in the bins
near the held notes' partials, or only elsewhere; the partials' own phase put back in those
bins after the refinement; and FluidSynth's instantaneous frequency there instead of the
equal-tempered partials', put back likewise (:data:`MODEL_PHASES`).

With ``--recognize``, each render's 3-s clips (where FluidSynth's render sounds) are also
labelled by the instrument classifier of ``eval_transcription.py`` (trained on the train split's
FluidSynth clips, features cached under ``--cache``), and the share labelled as the instrument
that played is printed.

Printed: onset F1 summed over clips and its ratio to FluidSynth's. Renders and transcriptions
are cached under ``--cache``. Needs the evaluation tools (docs/RENDERING.md). Usage::

    OMP_NUM_THREADS=1 python benchmarks/eval_transcription_ceiling.py --data data/perf10 \\
        --piece bach-bwv102_7-perf1 --piece texture-0008 --piece lusitano-allor_che_ignuda-perf1 \\
        --instrument 0 --instrument 2 --instrument 8 --instrument 9 --refine 0 --refine 6 \\
        --refine 20 [--hybrids] [--phases] [--recognize]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import eval_instruments as EI
import librosa
import numpy as np
import soundfile as sf
import torch
from eval_mel_texture import MODULATION_FRAMES
from eval_transcription import (
    Transcriber,
    dataset_audio,
    reference_notes,
    state_digest,
    write_wav,
)
from transcription_report import score

from mel2mel import Synthesizer
from mel2mel import constants as C
from mel2mel.audio import log_mel, mel_filterbank
from mel2mel.data.corpus import piece_midi, select_test_pieces
from mel2mel.data.dataset import crop_array, read_manifest
from mel2mel.instruments import slugify
from mel2mel.midi import piano_roll, read_notes
from mel2mel.models.harmonic import HarmonicDetail
from mel2mel.models.losses import frame_level
from mel2mel.vocoders.fast import FastVocoder

REFERENCE = "FluidSynth"
HYBRIDS = (
    "FluidSynth, smoothed over 3 bins",
    "FluidSynth, smoothed over 5 frames",
    "model + FluidSynth's spectral detail",
    "model, FluidSynth's onset frames",
    "FluidSynth, the model's frame level",
    "FluidSynth, the model's mean spectrum",
    "model, FluidSynth's mean spectrum",
    "model + the harmonic combs' detail",
    "model + FluidSynth's modulation",
    "model + FluidSynth's modulation between onsets",
    "FluidSynth, steadied between onsets",
    "model + FluidSynth's modulation, 1 s late",
)
COMB_GAIN = 1.5  # the best of 0.5 / 1 / 1.5 / 2 / 3 on the stage-8 model (docs/MODELS.md)


def stft(audio: np.ndarray) -> torch.Tensor:
    """Complex STFT ``[N_FFT // 2 + 1, frames]`` with the mel's own analysis settings."""
    window = torch.hann_window(C.N_FFT)
    return torch.stft(
        torch.from_numpy(audio), C.N_FFT, C.HOP_LENGTH, window=window, return_complex=True
    )


def griffin_lim_true_magnitude(audio: np.ndarray) -> np.ndarray:
    magnitude = stft(audio).abs().numpy()
    return librosa.griffinlim(
        magnitude, n_iter=32, hop_length=C.HOP_LENGTH, n_fft=C.N_FFT, length=len(audio)
    )


def mel_inverse_true_phase(audio: np.ndarray) -> np.ndarray:
    spectrum = stft(audio)
    mel = np.exp(log_mel(audio).astype(np.float64))
    magnitude = librosa.util.nnls(mel_filterbank().astype(np.float64), mel)
    rebuilt = torch.from_numpy(magnitude.astype(np.float32)) * torch.exp(1j * spectrum.angle())
    window = torch.hann_window(C.N_FFT)
    return torch.istft(rebuilt, C.N_FFT, C.HOP_LENGTH, window=window, length=len(audio)).numpy()


def smoothed(mel: np.ndarray, width: int, axis: int) -> np.ndarray:
    """Moving average of ``width`` (odd) along ``axis`` of ``float32[N_MELS x T]``, edges
    repeated."""
    pad = [(0, 0), (0, 0)]
    pad[axis] = (width // 2, width // 2)
    padded = np.pad(mel, pad, mode="edge")
    n = mel.shape[axis]
    return np.mean([np.take(padded, range(k, k + n), axis=axis) for k in range(width)], axis=0)


def onset_frames(roll: np.ndarray, before: int = 4, after: int = 3) -> np.ndarray:
    """bool[T]: the frames of a ``float32[176 x T]`` roll from ``before`` frames before to
    ``after`` after each note onset."""
    onsets = roll[C.N_KEYS :].any(0)
    frames = roll.shape[1]
    near = np.zeros(frames, dtype=bool)
    for t in np.flatnonzero(onsets):
        near[max(0, t - before) : t + after + 1] = True
    return near


PHASES = (
    "vocoder magnitude + true phase",
    "vocoder magnitude + true frequency, random offsets",
    "vocoder magnitude + true phase at onsets",
)
#: ``--phases`` on the model's mel (the partials' vocoder's refined magnitude of it), by phase:
MODEL_PHASES = (
    "model: its magnitude + true phase",  # FluidSynth's phase everywhere
    "model: its magnitude + true phase near the partials",  # ... where ``near``, else ours
    "model: its magnitude + true phase elsewhere",  # ... where not ``near``
    "model: partial phase re-imposed after refinement",  # ours, near bins reset to it
    "model: true frequencies near the partials, re-imposed",  # FluidSynth's advance, integrated
)


def phase_swap(name: str, audio: np.ndarray, voc: FastVocoder, roll: np.ndarray) -> np.ndarray:
    """``audio`` resynthesized with ``voc``'s refined magnitude of its log-mel and the
    ``--phases`` phase ``name`` (see the module docstring); ``roll`` is ``float32[176 x T]``."""
    true = stft(audio)  # [F x T]
    with torch.no_grad():
        mel = torch.from_numpy(log_mel(audio))[None]
        ours = voc.refined_spectrum(mel, None, voc.config.refine_iterations)[0].T
    t = min(true.shape[1], ours.shape[1])
    true, ours = true[:, :t], ours[:, :t]
    phase = true.angle()
    if name == PHASES[1]:
        g = torch.Generator().manual_seed(0)
        phase = phase + 2 * math.pi * torch.rand(true.shape[0], 1, generator=g)
    elif name == PHASES[2]:
        near = torch.from_numpy(onset_frames(roll[:, :t], before=2, after=3))
        phase = torch.where(near[None], phase, ours.angle())
    window = torch.hann_window(C.N_FFT)
    spec = torch.polar(ours.abs(), phase)
    return torch.istft(spec, C.N_FFT, C.HOP_LENGTH, window=window, length=len(audio)).numpy()


def model_phase_swap(
    name: str, audio: np.ndarray, mel: np.ndarray, voc: FastVocoder, roll: np.ndarray
) -> np.ndarray:
    """The model's log-mel ``mel`` through ``voc`` (with ``partial_phase``) with the phase of
    :data:`MODEL_PHASES` ``name``: FluidSynth's (``audio``'s) phase or instantaneous frequency
    in some bins, or the partials' own phase put back after the refinement (which moves it);
    ``roll`` is ``float32[176 x T]``."""
    true = stft(audio)  # [F x T]
    t = min(true.shape[1], mel.shape[1])
    mel_t = torch.from_numpy(np.ascontiguousarray(mel[:, :t], np.float32))[None]
    notes_t = torch.from_numpy(crop_array(roll, 0, t, 0.0))[None]
    true_phase = true[:, :t].angle().T[None]  # [1 x T x F]
    with torch.no_grad():
        log_mag, offset, delta = voc.frame_outputs(mel_t, notes_t)
        partials = voc.note_partials(notes_t, offset)
        assert partials is not None, "the vocoder must play the partials"
        near = partials[1]
        if name == MODEL_PHASES[4]:
            step = torch.diff(true_phase, dim=1, prepend=true_phase[:, :1])
            partials = (torch.remainder(step, 2 * math.pi), near)
        ours, _ = voc.head.phase(offset, delta, partials=partials)
        spec = voc._spectrum(log_mag, ours, mel_t, voc.config.refine_iterations)
        phase = {
            MODEL_PHASES[0]: true_phase.expand_as(ours),
            MODEL_PHASES[1]: torch.where(near, true_phase, spec.angle()),
            MODEL_PHASES[2]: torch.where(near, spec.angle(), true_phase),
        }.get(name, torch.where(near, ours, spec.angle()))
        out = voc.head.istft(torch.polar(spec.abs(), phase.float()))[0]
    return out.numpy()


def hybrid_mels(true: np.ndarray, pred: np.ndarray, roll: np.ndarray) -> dict[str, np.ndarray]:
    """The ``--hybrids`` mels (see the module docstring) of FluidSynth's ``true`` and the
    model's ``pred`` log-mel, both ``float32[N_MELS x T]``, for the ``float32[176 x T]`` roll
    of the MIDI."""

    def level(mel: np.ndarray) -> np.ndarray:
        return frame_level(torch.from_numpy(mel)[None])[0].numpy()

    detail = true - smoothed(true, 3, axis=0)
    near = onset_frames(roll)
    modulation = true - smoothed(true, MODULATION_FRAMES, axis=1)
    held = ~onset_frames(roll, before=MODULATION_FRAMES // 2, after=MODULATION_FRAMES // 2)
    with torch.no_grad():
        fixed = HarmonicDetail(1)
        combs = fixed.detail(fixed.tones(torch.from_numpy(roll)[None]))[0].numpy()
    mels = [
        true - detail,
        smoothed(true, 5, axis=1),
        pred + detail,
        np.where(near[None], true, pred),
        true + (level(pred) - level(true))[None],
        true - true.mean(1, keepdims=True) + pred.mean(1, keepdims=True),
        pred - pred.mean(1, keepdims=True) + true.mean(1, keepdims=True),
        pred + COMB_GAIN * combs,
        pred + modulation,
        pred + np.where(held[None], modulation, 0.0),
        true - np.where(held[None], modulation, 0.0),
        pred + np.roll(modulation, round(C.FRAME_RATE), axis=1),
    ]
    return dict(zip(HYBRIDS, mels, strict=True))


def classifier(
    data: Path, manifest: dict, cache: Path
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``(audio, reference) -> int[clips]``: the instrument classifier's labels of the 3-s
    clips of ``audio`` where FluidSynth's ``reference`` sounds (``eval_instruments.clips_at``)."""
    x, y = EI.training_set(data, manifest, "train", 3.0, 6, cache / "features")
    model = EI.train(x, y)

    def labels(audio: np.ndarray, reference: np.ndarray) -> np.ndarray:
        clips = EI.clips_at(audio, EI.clip_starts(reference, 3.0), 3.0)
        return model.predict(np.stack([EI.features(c) for c in clips])) if clips else np.zeros(0)

    return labels


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="dataset folder")
    ap.add_argument("--piece", action="append", default=[], help="test piece id (repeatable)")
    ap.add_argument("--pieces", type=int, default=3, help="without --piece: performed test pieces")
    ap.add_argument("--instrument", action="append", type=int, help="dataset instrument index")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--refine", action="append", type=int, help="refinement iterations")
    ap.add_argument("--model", help="acoustic export (default: the shipped model)")
    ap.add_argument("--vocoder", default="fast", help="fast vocoder export (default: shipped)")
    ap.add_argument("--hybrids", action="store_true", help="also mels mixing the two")
    ap.add_argument("--phases", action="store_true", help="also the vocoder's phase swapped")
    ap.add_argument("--recognize", action="store_true", help="also instrument recognition")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/mel2mel-ceiling"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    manifest = read_manifest(args.data)
    pieces = select_test_pieces(manifest, args.pieces, args.piece, "performed")
    instruments = args.instrument or list(range(len(manifest["instruments"])))
    synth = Synthesizer.from_pretrained(args.model, vocoder=args.vocoder, timbre_library=False)
    vocoders = {k: synth.vocoder.with_refinement(k) for k in args.refine or [6]}
    items = {(it["piece"], it["instrument"]): it["id"] for it in manifest["items"]}

    # name -> (render(audio, midi, instrument), cache folder: what the render depends on)
    renders: dict[str, tuple[Callable[[np.ndarray, Path, int], np.ndarray], str]] = {
        "true magnitude + Griffin-Lim": (lambda a, m, i: griffin_lim_true_magnitude(a), "gl"),
        "mel inverse + true phase": (lambda a, m, i: mel_inverse_true_phase(a), "inverse"),
    }
    model_id = state_digest(synth.acoustic)
    for k, voc in vocoders.items():
        renders[f"copy, refine {k}"] = (
            lambda a, m, i, v=voc: v.vocode_long(log_mel(a)),
            f"copy-{state_digest(voc, str(k))}",
        )
    for k, voc in vocoders.items():
        renders[f"model, refine {k}"] = (
            lambda a, m, i, v=voc: synth.render(
                m, manifest["instruments"][i]["name"], vocoder=v, start=0,
                duration=len(a) / C.SAMPLE_RATE, texture=0,
            ),
            f"model-{model_id}-{state_digest(voc, str(k))}",
        )  # fmt: skip
    made: dict[tuple[Path, int], dict[str, np.ndarray]] = {}  # the last clip's hybrids

    def hybrid(audio: np.ndarray, midi: Path, i: int, name: str) -> torch.Tensor:
        if (midi, i) not in made:
            true = log_mel(audio)
            pred = synth.mel(midi, manifest["instruments"][i]["name"], start=0,
                             duration=len(audio) / C.SAMPLE_RATE, texture=0)  # fmt: skip
            frames = min(true.shape[1], pred.shape[1])
            roll = piano_roll(read_notes(midi, warn=False).notes, frames)
            made.clear()
            made[midi, i] = hybrid_mels(true[:, :frames], pred[:, :frames], roll)
        return torch.from_numpy(np.ascontiguousarray(made[midi, i][name], np.float32))

    if args.hybrids:
        k = (args.refine or [6])[0]
        key = f"hybrid-{model_id}-{state_digest(vocoders[k], str(k))}"
        for name in HYBRIDS:
            renders[name] = (
                lambda a, m, i, name=name: vocoders[k].vocode_long(hybrid(a, m, i, name)),
                f"{key}-{slugify(name)}",
            )

    if args.phases:
        k = (args.refine or [6])[0]
        voc = vocoders[k]

        def notes(a: np.ndarray, m: Path) -> np.ndarray:
            return piano_roll(read_notes(m, warn=False).notes, len(a) // C.HOP_LENGTH + 1)

        for name in PHASES:
            renders[name] = (
                lambda a, m, i, name=name: phase_swap(name, a, voc, notes(a, m)),
                f"phase-{state_digest(voc, str(k))}-{slugify(name)}",
            )
        partial = voc.with_partials(True)
        key = state_digest(partial, f"partials-{k}")
        renders["copy, partials"] = (
            lambda a, m, i: partial.vocode_long(log_mel(a), notes(a, m)),
            f"copy-{key}",
        )
        renders["model, partials"] = (
            lambda a, m, i: synth.render(
                m, manifest["instruments"][i]["name"], vocoder=partial, start=0,
                duration=len(a) / C.SAMPLE_RATE, texture=0,
            ),
            f"model-{model_id}-{key}",
        )  # fmt: skip

        def model_mel(a: np.ndarray, m: Path, i: int) -> np.ndarray:
            return synth.mel(m, manifest["instruments"][i]["name"], start=0,
                             duration=len(a) / C.SAMPLE_RATE, texture=0)  # fmt: skip

        for name in MODEL_PHASES:
            renders[name] = (
                lambda a, m, i, name=name: model_phase_swap(
                    name, a, model_mel(a, m, i), partial, notes(a, m)
                ),
                f"phase-{model_id}-{key}-{slugify(name)}",
            )

    transcribe = Transcriber(1)
    classify = classifier(args.data, manifest, args.cache) if args.recognize else None
    counts = {name: np.zeros(3) for name in [REFERENCE, *renders]}  # ref, est, hits
    recognized = {name: np.zeros(2) for name in counts}  # clips labelled right, clips
    for piece in pieces:
        midi = piece_midi(args.data, piece, args.cache)
        seconds = min(args.seconds, read_notes(midi, warn=False).duration + 1.0)
        ref = reference_notes(midi, seconds)
        for i in instruments:
            audio = dataset_audio(args.data, items[piece["id"], i], seconds)
            for name in [REFERENCE, *renders]:
                folder = "fluidsynth" if name == REFERENCE else renders[name][1]
                wav = args.cache / folder / f"{piece['id']}-{slugify(str(i))}-{seconds:g}s.wav"
                if not wav.is_file():
                    out = audio if name == REFERENCE else renders[name][0](audio, midi, i)
                    write_wav(wav, np.asarray(out, dtype=np.float32)[: len(audio)])
                c = score(ref[:2], transcribe(wav), seconds)
                counts[name] += (c.ref, c.est, c.onset)
                if classify is not None:
                    labels = classify(sf.read(wav, dtype="float32")[0], audio)
                    recognized[name] += ((labels == i).sum(), len(labels))
        print(f"{piece['id']}: done", flush=True)

    def f1(c: np.ndarray) -> float:
        return 2 * c[2] / max(c[0] + c[1], 1)

    base = f1(counts[REFERENCE])
    print(f"\n{'audio':50s} onset F1  ratio to FluidSynth's" + "  recognized" * bool(classify))
    for name, c in counts.items():
        share = recognized[name][0] / max(recognized[name][1], 1)
        tail = f"  {share:9.0%}" if classify is not None else ""
        print(f"{name:50s} {f1(c):8.3f}  {f1(c) / base:5.2f}{tail}")


if __name__ == "__main__":
    main()
