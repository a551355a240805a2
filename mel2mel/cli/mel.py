"""``mel2mel mel``: a log-mel spectrogram from a MIDI file (predicted) or an audio file (analysed).

* ``mel2mel mel song.mid --instrument "Grand Piano" -o song.npy [--model PATH]`` writes the
  log-mel that ``mel2mel render`` would give its vocoder: the acoustic model's prediction
  with the texture post-net (``--texture 0`` leaves it out) and the file's channel volume and
  expression, for any timbre ``render`` takes, over ``--start/--duration/--tail``. It goes
  through :meth:`mel2mel.Synthesizer.mel_stream`, so a piece of any length takes bounded
  memory: the ``.npy`` is written as the mel is made (Fortran order, one frame after another).
* ``mel2mel mel recording.wav -o rec.npy`` writes the log-mel of any audio file soundfile can
  read, resampled to 16 kHz mono, computed with :class:`mel2mel.audio.LogMel`.

Both write ``float32[80 x T]`` natural-log mel magnitudes (see :mod:`mel2mel.constants`),
atomically, and refuse to overwrite an existing file without ``-f``. The default model is the
shipped one in ``mel2mel/pretrained/``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mel2mel import constants as C
from mel2mel.cli.common import (
    add_force_argument,
    add_output_argument,
    add_range_arguments,
    add_texture_arguments,
    add_timbre_arguments,
    check_common,
    main_timbre,
    warn_texture,
)
from mel2mel.errors import UserError
from mel2mel.fileio import atomic_write, refuse_overwrite

MIDI_SUFFIXES = (".mid", ".midi", ".kar", ".smf")


def write_mel_npy(
    f: BinaryIO, num_frames: int, chunks: Iterable[np.ndarray], progress: bool = False
) -> None:
    """Write ``float32[N_MELS x num_frames]`` as ``.npy`` from consecutive column chunks.

    The array is stored in Fortran order, so each chunk ``float32[N_MELS x n]`` is appended
    as it comes (``numpy.load`` gives the same array as a C-ordered file would).

    Raises
    ------
    ValueError
        If the chunks do not add up to ``num_frames`` frames of ``N_MELS`` bins.
    """
    from tqdm import tqdm

    header = {"descr": "<f4", "fortran_order": True, "shape": (C.N_MELS, num_frames)}
    np.lib.format.write_array_header_2_0(f, header)
    written = 0
    with tqdm(total=num_frames, unit="frame", disable=not progress, leave=False) as bar:
        for chunk in chunks:
            if chunk.ndim != 2 or chunk.shape[0] != C.N_MELS:
                raise ValueError(f"a mel chunk must be ({C.N_MELS}, n), got {chunk.shape}")
            f.write(np.ascontiguousarray(chunk.T, dtype="<f4").tobytes())
            written += chunk.shape[1]
            bar.update(chunk.shape[1])
    if written != num_frames:
        raise ValueError(f"{written} mel frames written, {num_frames} announced")


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
        description="MIDI input: the log-mel that 'mel2mel render' would vocode (acoustic "
        "model, texture post-net, channel volume), for any timbre render takes. Audio input: "
        "its log-mel. Output: float32[80 x T] natural-log mel, .npy.",
    )
    p.add_argument("input", type=Path, help="a MIDI file (.mid/.midi) or an audio file")
    add_output_argument(p, "output .npy (default: input name + .npy)")
    add_timbre_arguments(p)
    add_texture_arguments(p)
    add_range_arguments(p)
    p.add_argument("--model", type=Path, help="export, or 'paper' (default: pretrained)")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (1..cores)")
    add_force_argument(p, "overwrite an existing output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar on a terminal")
    p.set_defaults(func=run_mel)


def _midi_options_given(args: argparse.Namespace) -> list[str]:
    given = [f"--{k}" for k in ("instrument", "timbre", "mix", "morph", "model", "texture")]
    given = [o for o in given if getattr(args, o[2:]) is not None]
    given += [f"--{k}" for k in ("start", "duration") if getattr(args, k) is not None]
    given += ["--sharpen"] if args.sharpen != 1.0 else []
    given += ["--beats"] if args.beats != 1.0 else []
    given += ["--contrast"] if args.contrast != 1.0 else []
    return given + (["--tail"] if args.tail != "1" else []) + (["--seed"] if args.seed else [])


def run_mel(args: argparse.Namespace) -> int:
    src: Path = args.input
    out: Path = args.output if args.output is not None else Path(src.name).with_suffix(".npy")
    if src.is_dir():
        raise UserError(f"{src} is a folder, not a file")
    if not src.is_file():
        raise UserError(f"{src}: no such file")
    if out.suffix != ".npy":
        raise UserError(f"{out}: the output must be a .npy file")
    if out.is_dir():
        raise UserError(f"{out} is a folder")
    refuse_overwrite([out], args.force)
    if not out.parent.is_dir():
        raise UserError(f"output folder does not exist: {out.parent}")
    if src.suffix.lower() not in MIDI_SUFFIXES:
        if given := _midi_options_given(args):
            raise UserError(f"{', '.join(given)}: for MIDI input only")
        mel = audio_log_mel(src)
        atomic_write(out, lambda tmp: np.save(tmp, mel), suffix=".npy")
        print(f"wrote {out}: log-mel {mel.shape[0]} x {mel.shape[1]} frames")
        return 0

    timbre = main_timbre(args)
    common = check_common(args)
    from mel2mel.synthesizer import Synthesizer

    synth = Synthesizer.from_pretrained(
        args.model,
        vocoder="griffinlim",
        seed=args.seed,
        sharpen=args.sharpen,
        beats=args.beats,
        contrast=args.contrast,
    )
    warn_texture(args, synth)
    stream = synth.mel_stream(src, timbre, **common)
    progress = not args.quiet and sys.stderr.isatty()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            write_mel_npy(f, stream.num_frames, stream.chunks, progress)

    atomic_write(out, write, suffix=".npy")
    print(f"wrote {out}: log-mel {C.N_MELS} x {stream.num_frames} frames")
    return 0
