"""``mel2mel vocode``: a saved log-mel (``.npy``) -> a 16 kHz WAV, with any vocoder.

The mel is a ``float32[80 x T]`` NumPy array of natural-log mel magnitudes (the conventions of
:mod:`mel2mel.constants`). A vocoder that can use the notes reads them from ``--midi``.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from mel2mel import constants as C
from mel2mel import validate
from mel2mel.cli.common import add_force_argument, add_output_argument
from mel2mel.errors import UserError, one_line
from mel2mel.fileio import refuse_overwrite

DEFAULT_CHUNK_FRAMES = 1000  # 8 s per chunk keeps memory flat for any length
FORMATS = (".wav", ".flac")
MAX_MEL_BYTES = 4 << 30  # 4 GB of float32 mel: 37 hours


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``vocode`` subcommand."""
    p = subparsers.add_parser(
        "vocode",
        help="turn a saved log-mel (.npy) into a WAV file",
        description="Synthesize 16 kHz audio from a float32 [80, T] natural-log mel (.npy).",
    )
    p.add_argument("mel", type=Path, help="input .npy file, float32 [80, T]")
    add_output_argument(p, "output .wav or .flac (default: MEL with .wav)")
    p.add_argument(
        "--vocoder",
        choices=("fast", "wavenet", "griffinlim"),
        default="fast",
        help="which vocoder (default: fast; griffinlim needs no weights)",
    )
    p.add_argument("--midi", type=Path, help="MIDI file of the notes, for vocoders that use them")
    p.add_argument("--model", type=Path, help="exported vocoder (.json/.safetensors) to use")
    p.add_argument("--seed", type=int, default=0, help="random seed (WaveNet sampling)")
    add_refine_argument(p)
    add_force_argument(p, "overwrite the output file")
    p.set_defaults(func=run)


def _iterations(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def add_refine_argument(p: argparse.ArgumentParser) -> None:
    """``--refine N``: the fast vocoder's mel-matching iterations (shared with render)."""
    p.add_argument(
        "--refine",
        type=_iterations,
        metavar="N",
        help="fast vocoder only: refinement iterations (default: the model's, 6 for the "
        "shipped one; 0 is about 3x faster and a little less faithful, see docs/VOCODERS.md)",
    )


def apply_refine(vocoder: Any, iterations: int | None) -> Any:
    """``vocoder`` with ``iterations`` refinement iterations (fast vocoder), else unchanged."""
    if iterations is None:
        return vocoder
    if getattr(vocoder, "kind", None) != "fast":
        warnings.warn(f"--refine applies to the fast vocoder only; ignored for {vocoder.kind}",
                      stacklevel=2)  # fmt: skip
        return vocoder
    return vocoder.with_refinement(iterations)


def read_mel(path: Path) -> np.ndarray:
    """Load and check a log-mel ``.npy`` file, returning ``float32[N_MELS x T]``.

    Raises
    ------
    UserError
        If the file is missing, unreadable, or not a finite ``[80, T]`` array whose values
        stay below :data:`~mel2mel.validate.MEL_MAX`; a header claiming more data than the
        file holds is refused before anything is allocated.
    """
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a .npy file")
    if not path.is_file():
        raise UserError(f"mel file not found: {path}")
    validate.npy_header(path, MAX_MEL_BYTES)
    try:
        mel = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise UserError(f"cannot read {path} as a .npy array: {one_line(err)}") from err
    if mel.ndim == 3 and mel.shape[0] == 1:
        mel = mel[0]
    if mel.ndim != 2 or mel.shape[0] != C.N_MELS or mel.shape[1] < 1:
        raise UserError(
            f"{path}: expected a log-mel of shape [{C.N_MELS}, T] (T >= 1), got {list(mel.shape)}"
        )
    if not np.issubdtype(mel.dtype, np.number) or np.iscomplexobj(mel):
        raise UserError(f"{path}: expected real numbers, got dtype {mel.dtype}")
    mel = mel.astype(np.float32)
    if not np.isfinite(mel).all():
        raise UserError(f"{path}: the mel contains NaN or infinite values")
    if float(mel.max()) > validate.MEL_MAX:
        raise UserError(
            f"{path}: the mel reaches {float(mel.max()):.3g}, far above full scale (natural-log "
            f"magnitudes of audio in [-1, 1] stay below about 3; the limit is {validate.MEL_MAX:g})"
        )
    return mel


def run(args: argparse.Namespace) -> int:
    """Execute ``mel2mel vocode``; returns the exit status."""
    from mel2mel.audio import write_audio
    from mel2mel.models.export import load_pretrained_vocoder, load_vocoder
    from mel2mel.vocoders.griffinlim import GriffinLim

    output = args.output or args.mel.with_suffix(".wav")
    if output.suffix.lower() not in FORMATS:
        raise UserError(f"{output}: the output must end in .wav or .flac")
    if output.is_dir():
        raise UserError(f"{output} is a folder")
    seed = validate.seed(args.seed)
    refuse_overwrite([output], args.force)
    if not output.parent.is_dir():
        raise UserError(f"output folder does not exist: {output.parent}")
    mel = read_mel(args.mel)

    if args.vocoder == "griffinlim":
        if args.model is not None:
            warnings.warn("griffinlim has no weights; --model is ignored", stacklevel=1)
        vocoder = GriffinLim()
    elif args.model is not None:
        vocoder = load_vocoder(args.model)
        if vocoder.kind != args.vocoder:
            raise UserError(f"{args.model} holds a {vocoder.kind} vocoder, not {args.vocoder}")
    else:
        vocoder = load_pretrained_vocoder(args.vocoder)
    vocoder = apply_refine(vocoder, args.refine)

    roll = None
    if args.midi is not None:
        if vocoder.uses_roll:
            from mel2mel.midi import midi_to_roll

            roll = midi_to_roll(args.midi, num_frames=mel.shape[1])
        else:
            warnings.warn(
                f"the {args.vocoder} vocoder does not use notes; --midi is ignored", stacklevel=1
            )

    if vocoder.kind == "wavenet":
        from mel2mel.vocoders.wavenet_fast import generate_batched

        audio = generate_batched(vocoder, mel, seed=seed).cpu().numpy()
    else:
        audio = vocoder.vocode_long(mel, roll, chunk_frames=DEFAULT_CHUNK_FRAMES)
    check = validate.AudioCheck("the vocoded audio")
    check.check(audio)
    check.finish()
    write_audio(output, audio)
    seconds = len(audio) / C.SAMPLE_RATE
    print(f"wrote {output} ({seconds:.2f} s, {vocoder.kind} vocoder)")
    return 0
