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

Printed: onset F1 summed over clips and its ratio to FluidSynth's. Renders and transcriptions
are cached under ``--cache``. Needs the evaluation tools (docs/RENDERING.md). Usage::

    OMP_NUM_THREADS=1 python benchmarks/eval_transcription_ceiling.py --data data/perf10 \\
        --piece bach-bwv102_7-perf1 --piece texture-0008 --piece lusitano-allor_che_ignuda-perf1 \\
        --instrument 0 --instrument 11 --instrument 56 --instrument 80 --refine 0 --refine 6 \\
        --refine 20
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import librosa
import numpy as np
import torch
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
from mel2mel.data.dataset import read_manifest
from mel2mel.instruments import slugify
from mel2mel.midi import read_notes

REFERENCE = "FluidSynth"


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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="dataset folder")
    ap.add_argument("--piece", action="append", default=[], help="test piece id (repeatable)")
    ap.add_argument("--pieces", type=int, default=3, help="without --piece: performed test pieces")
    ap.add_argument("--instrument", action="append", type=int, help="dataset instrument index")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--refine", action="append", type=int, help="refinement iterations")
    ap.add_argument("--model", help="acoustic export (default: the shipped model)")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/mel2mel-ceiling"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    manifest = read_manifest(args.data)
    pieces = select_test_pieces(manifest, args.pieces, args.piece, "performed")
    instruments = args.instrument or list(range(len(manifest["instruments"])))
    synth = Synthesizer.from_pretrained(args.model, vocoder="fast", timbre_library=False)
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
    transcribe = Transcriber(1)
    counts = {name: np.zeros(3) for name in [REFERENCE, *renders]}  # ref, est, hits
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
        print(f"{piece['id']}: done", flush=True)

    def f1(c: np.ndarray) -> float:
        return 2 * c[2] / max(c[0] + c[1], 1)

    base = f1(counts[REFERENCE])
    print(f"\n{'audio':32s} onset F1  ratio to FluidSynth's")
    for name, c in counts.items():
        print(f"{name:32s} {f1(c):8.3f}  {f1(c) / base:5.2f}")


if __name__ == "__main__":
    main()
