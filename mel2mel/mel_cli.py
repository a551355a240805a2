"""``mel2mel mel``: a log-mel spectrogram from a MIDI file (predicted) or an audio file (analysed).

* ``mel2mel mel song.mid --instrument "Grand Piano" -o song.npy [--model PATH]`` runs the
  acoustic model on the whole piece and writes its predicted log-mel;
* ``mel2mel mel recording.wav -o rec.npy`` writes the log-mel of any audio file soundfile can
  read, resampled to 16 kHz mono, computed with :class:`mel2mel.audio.LogMel`.

Both write ``float32[80 x T]`` natural-log mel magnitudes (see :mod:`mel2mel.constants`) with
``numpy.save``, atomically, and refuse to overwrite an existing file without ``-f``. The
default model is the shipped one in ``mel2mel/pretrained/acoustic.{safetensors,json}``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from mel2mel import validate
from mel2mel.errors import UserError
from mel2mel.fileio import atomic_write

MIDI_SUFFIXES = (".mid", ".midi", ".kar", ".smf")
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
DEFAULT_MODEL = PRETRAINED_DIR / "acoustic.safetensors"


def save_npy(path: Path, array: np.ndarray) -> None:
    """``numpy.save`` that leaves either the old file or the complete new one, never a part."""
    atomic_write(path, lambda tmp: np.save(tmp, array), suffix=".npy")


def _parse_embedding(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        raise UserError(f"--embedding {text[:60]!r}: expected finite numbers like 0.5,-1.2")
    return values


def midi_log_mel(
    midi: Path,
    *,
    instrument: str | None,
    embedding: list[float] | None,
    model_path: Path | None,
) -> np.ndarray:
    """Predicted ``float32[80 x T]`` log-mel of a MIDI file (T = the roll's frame count)."""
    import torch

    from mel2mel.midi import midi_to_roll
    from mel2mel.models.io import export_paths, load_acoustic

    path = DEFAULT_MODEL if model_path is None else model_path
    if not export_paths(path)[1].is_file():
        if model_path is None:
            raise UserError(
                f"no pretrained acoustic model in {PRETRAINED_DIR}; pass --model with an export "
                "from 'mel2mel export acoustic' (or train one: 'mel2mel train acoustic')"
            )
        raise UserError(f"no exported acoustic model at {model_path}")
    from mel2mel.timbre import TimbreSpace

    model = load_acoustic(path)
    space = TimbreSpace.from_model(model)
    if embedding is not None:
        if len(embedding) != model.embedding_dim:
            raise UserError(
                f"--embedding has {len(embedding)} values; the model's embedding has "
                f"{model.embedding_dim}"
            )
        vector = space.check_vector(embedding, "--embedding")
    else:
        # Names, aliases ("organ", "rhodes"), GM names and programs, as render takes them.
        vector, _ = space.embedding(str(instrument))
    roll = torch.from_numpy(midi_to_roll(midi)).unsqueeze(0)
    with torch.inference_mode():
        mel = model(roll, embedding=torch.from_numpy(vector)[None])
    return validate.check_mel(mel[0].numpy().astype(np.float32), "the predicted mel")


def audio_log_mel(path: Path) -> np.ndarray:
    """``float32[80 x T]`` log-mel of an audio file (16 kHz mono after resampling)."""
    from mel2mel.audio import load_audio, log_mel

    try:
        audio = load_audio(path)
    except ValueError as err:
        raise UserError(str(err)) from err
    return log_mel(audio).astype(np.float32)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mel2mel mel``."""
    p = subparsers.add_parser(
        "mel",
        help="write the log-mel of a MIDI file (predicted) or an audio file (analysed)",
        description="MIDI input: predict the log-mel with the acoustic model for an instrument. "
        "Audio input: compute its log-mel. Output: float32[80 x T] natural-log mel, .npy.",
    )
    p.add_argument("input", type=Path, help="a MIDI file (.mid/.midi) or an audio file")
    p.add_argument("-o", "--out", type=Path, help="output .npy (default: input name + .npy)")
    p.add_argument(
        "-i",
        "--instrument",
        help="instrument name, alias or GM program (as 'mel2mel render' takes them), or a mix "
        "such as trumpet=0.3,vibes=0.7",
    )
    p.add_argument(
        "--embedding",
        metavar="E1,E2,...",
        help="a free timbre vector instead of --instrument; write --embedding=-0.3,1.1 when "
        "it starts with a minus sign",
    )
    p.add_argument("--model", type=Path, help="export, or 'paper' (default: pretrained)")
    p.add_argument("-f", "--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=run_mel)


def run_mel(args: argparse.Namespace) -> int:
    src: Path = args.input
    out: Path = args.out if args.out is not None else Path(src.name).with_suffix(".npy")
    if src.is_dir():
        raise UserError(f"{src} is a folder, not a file")
    if not src.is_file():
        raise UserError(f"{src}: no such file")
    if out.suffix != ".npy":
        raise UserError(f"{out}: the output must be a .npy file")
    if out.exists() and not args.force:
        raise UserError(f"{out} exists; pass -f to overwrite")
    if not out.parent.is_dir():
        raise UserError(f"{out.parent}: no such directory")
    if src.suffix.lower() in MIDI_SUFFIXES:
        if (args.instrument is None) == (args.embedding is None):
            raise UserError("MIDI input needs exactly one of --instrument and --embedding")
        emb = None if args.embedding is None else _parse_embedding(args.embedding)
        mel = midi_log_mel(src, instrument=args.instrument, embedding=emb, model_path=args.model)
    else:
        if args.instrument is not None or args.embedding is not None or args.model is not None:
            raise UserError("--instrument/--embedding/--model apply to MIDI input only")
        mel = audio_log_mel(src)
    save_npy(out, mel)
    print(f"wrote {out}: log-mel {mel.shape[0]} x {mel.shape[1]} frames")
    return 0
