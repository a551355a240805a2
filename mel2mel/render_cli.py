"""``mel2mel render`` (MIDI -> WAV/FLAC) and ``mel2mel instruments`` (the timbre table).

``mel2mel render song.mid -o song.wav --instrument trumpet`` synthesizes a MIDI file with the
:class:`~mel2mel.synthesizer.Synthesizer`; see ``docs/RENDERING.md``. Every check (input,
output path, timbres, tracks, time range, models) runs before any audio is made, and errors
are one line (``mel2mel: error: ...``, exit status 2) that leave no file behind.

Output levels, and why two passes
---------------------------------
The audio is streamed in chunks so that a piece of any length renders in bounded memory, but
its peak is only known at the end. Rather than a limiter that would change the sound wherever
it acts, the render is written first as float32 to a temporary file next to the output (4
bytes per sample: 230 MB per hour), tracking the peak; a second pass applies *one* gain while
converting to 16-bit PCM (WAV, or FLAC by extension) in another temporary file, which then
replaces the output atomically (``os.replace``):

* ``--normalize``: the peak is brought to ``NORMALIZE_PEAK_DB`` (-1 dBFS), up or down;
* otherwise the level is the model's (FluidSynth's default gain, well below full scale) and
  is only lowered, with a warning, if the peak would exceed full scale: nothing ever clips.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from mel2mel import constants as C
from mel2mel import validate
from mel2mel.errors import UserError
from mel2mel.vocode_cli import add_refine_argument, apply_refine

FORMATS = {".wav": "WAV", ".flac": "FLAC"}
NORMALIZE_PEAK_DB = -1.0
BLOCK_SAMPLES = 1 << 18  # second-pass block: 1 MB of float32


def db(gain: float) -> float:
    """Amplitude ratio in decibels (``-inf`` for 0, ``nan`` for NaN)."""
    if math.isnan(gain):
        return math.nan
    return 20.0 * math.log10(gain) if gain > 0 else -math.inf


class TwoPassWriter:
    """Write a stream of audio chunks to ``out`` with one gain chosen after the last chunk.

    Use as a context manager: the temporary files are created on entry (so an unwritable
    folder fails before any work) and removed on exit; ``out`` appears only on :meth:`commit`.

    Parameters
    ----------
    out:
        ``.wav`` or ``.flac`` path.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.format = FORMATS[out.suffix.lower()]
        self.raw: Path | None = None
        self.final: Path | None = None
        self.samples = 0
        self.peak = 0.0

    def _temp(self, suffix: str) -> Path:
        fd, name = tempfile.mkstemp(dir=self.out.parent, prefix=f".{self.out.name}.", suffix=suffix)
        os.close(fd)
        return Path(name)

    def __enter__(self) -> TwoPassWriter:
        try:
            self.raw = self._temp(".float.wav")
            self.final = self._temp(self.out.suffix)
        except OSError as err:
            self._cleanup()
            raise UserError(f"cannot write to {self.out.parent}: {err.strerror or err}") from err
        return self

    def __exit__(self, *exc: object) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        for path in (self.raw, self.final):
            if path is not None:
                path.unlink(missing_ok=True)

    def write(self, chunks: Iterable[np.ndarray]) -> None:
        """First pass: every chunk as float32, tracking the number of samples and the peak.

        Raises
        ------
        UserError
            If the audio is not sane (:class:`~mel2mel.validate.AudioCheck`: NaN, DC,
            full-scale noise); nothing is then written under the output's name.
        """
        import soundfile as sf

        check = validate.AudioCheck("the rendering")
        with sf.SoundFile(self.raw, "w", C.SAMPLE_RATE, 1, "FLOAT", format="WAV") as f:
            for chunk in chunks:
                f.write(check.check(chunk))
                self.samples += len(chunk)
            check.finish()
        self.peak = check.peak

    def commit(self, gain: float) -> None:
        """Second pass: scale by ``gain``, convert to 16-bit PCM, move into place."""
        import soundfile as sf

        assert self.raw is not None and self.final is not None
        with (
            sf.SoundFile(self.raw) as src,
            sf.SoundFile(self.final, "w", C.SAMPLE_RATE, 1, "PCM_16", format=self.format) as dst,
        ):
            for block in src.blocks(blocksize=BLOCK_SAMPLES, dtype="float32"):
                dst.write(np.clip(block * np.float32(gain), -1.0, 1.0))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.final, 0o666 & ~umask)  # mkstemp makes owner-only files
        os.replace(self.final, self.out)
        self.final = None


def output_gain(peak: float, normalize: bool) -> float:
    """The single gain of the second pass (warns when it limits or finds silence)."""
    if peak <= 0 or not math.isfinite(peak):
        if normalize or not math.isfinite(peak):
            warnings.warn(f"the rendering has no usable peak ({peak}); written as is", stacklevel=2)
        return 1.0
    if normalize:
        return 10.0 ** (NORMALIZE_PEAK_DB / 20.0) / peak
    if peak > 1.0:
        warnings.warn(
            f"the peak ({db(peak):+.1f} dBFS) exceeds full scale: limiting by {db(peak):.1f} dB "
            "(a single gain, no clipping)",
            stacklevel=2,
        )
        return 1.0 / peak
    return 1.0


def main_timbre(args: argparse.Namespace) -> Any:
    """The main timbre option, syntax-checked (names are resolved once the model is loaded)."""
    from mel2mel.timbre import Morph, parse_mix

    if args.mix is not None:
        parse_mix(args.mix)
        return args.mix
    if args.morph is not None:
        return Morph.parse(args.morph)
    if args.timbre is not None:
        return args.timbre
    return args.instrument  # None: the model's first instrument


def add_timbre_arguments(p: argparse.ArgumentParser) -> argparse._MutuallyExclusiveGroup:
    """The main timbre options shared by ``render`` and ``mel`` (read by :func:`main_timbre`)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("-i", "--instrument", metavar="NAME", help="instrument name, alias or program")
    g.add_argument("--timbre", metavar="X,Y", help="embedding coordinates (or any timbre)")
    g.add_argument("--mix", metavar="A=W,B=W", help="weighted mix, e.g. trumpet=0.3,vibes=0.7")
    g.add_argument("--morph", metavar="A@T,B@T", help="timbre path, e.g. trumpet@0s,vibes@30s")
    return g


def add_texture_arguments(p: argparse.ArgumentParser) -> None:
    """``--texture`` and ``--seed``, shared by ``render`` and ``mel``."""
    p.add_argument(
        "--texture",
        type=float,
        metavar="S",
        help="strength of the texture post-net's beating/chorus/modulation: 0 (none, the "
        "acoustic model's steady mel) to 4; default: the model's own (docs/TEXTURE.md). "
        "No effect on a model without a post-net",
    )
    p.add_argument(
        "--seed", type=int, default=0, help=f"texture noise seed, 0..{validate.MAX_SEED} (0)"
    )


def add_range_arguments(p: argparse.ArgumentParser) -> None:
    """``--start``, ``--duration`` and ``--tail``, shared by ``render`` and ``mel``."""
    p.add_argument("--start", metavar="S", help="start time, seconds or M:SS (default 0)")
    p.add_argument("--duration", metavar="S", help="seconds to render (default: to the end)")
    p.add_argument(
        "--tail",
        default="1",
        metavar="S",
        help=f"seconds after the last note, up to {validate.MAX_TAIL_SECONDS:g} (1)",
    )


def check_common(args: argparse.Namespace) -> dict[str, Any]:
    """Check the options of :func:`add_texture_arguments` and :func:`add_range_arguments`
    and ``--threads`` (applied here) before any model is loaded.

    Returns the keyword arguments ``start``, ``duration``, ``tail`` and ``texture`` of
    ``Synthesizer.stream`` and ``Synthesizer.mel_stream``; ``args.seed`` is checked in place.
    """
    from mel2mel.timbre import parse_time

    start = None if args.start is None else parse_time(args.start)
    duration = None if args.duration is None else parse_time(args.duration)
    tail = validate.seconds(parse_time(args.tail), "--tail", validate.MAX_TAIL_SECONDS)
    args.seed = validate.seed(args.seed)
    if args.texture is not None:
        validate.number(args.texture, "--texture", 0.0, 4.0)
    if args.threads is not None:
        import torch

        torch.set_num_threads(validate.threads(args.threads))
    return {"start": start, "duration": duration, "tail": tail, "texture": args.texture}


def warn_texture(args: argparse.Namespace, synth: Any) -> None:
    """Warn when ``--texture`` is given for a model without a texture post-net."""
    if args.texture is not None and synth.texture is None:
        msg = "this model has no texture post-net; --texture has no effect"
        warnings.warn(msg, stacklevel=3)


def run_render(args: argparse.Namespace) -> int:
    """Execute ``mel2mel render``; returns the exit status."""
    from mel2mel.timbre import parse_track_specs

    src: Path = args.midi
    out: Path = args.output if args.output is not None else Path(src.name).with_suffix(".wav")
    if out.suffix.lower() not in FORMATS:
        raise UserError(f"{out}: the output must end in .wav or .flac")
    if src.is_dir():
        raise UserError(f"{src} is a folder, not a MIDI file")
    if not src.is_file():
        raise UserError(f"{src}: no such file")
    if out.is_dir():
        raise UserError(f"{out} is a folder")
    if out.exists() and not args.force:
        raise UserError(f"{out} exists; pass -f to overwrite")
    if not out.parent.is_dir():
        raise UserError(f"output folder does not exist: {out.parent}")
    timbre = main_timbre(args)
    tracks = parse_track_specs(args.track)
    common = check_common(args)

    from mel2mel.synthesizer import Synthesizer

    with TwoPassWriter(out) as writer:
        synth = Synthesizer.from_pretrained(args.model, vocoder=args.vocoder, seed=args.seed)
        synth.vocoder = apply_refine(synth.vocoder, args.refine)
        warn_texture(args, synth)
        progress = not args.quiet and sys.stderr.isatty()
        chunks = synth.stream(src, timbre, tracks=tracks, progress=progress, **common)
        writer.write(chunks)
        gain = output_gain(writer.peak, args.normalize)
        writer.commit(gain)
    seconds = writer.samples / C.SAMPLE_RATE
    print(
        f"wrote {out} ({seconds:.2f} s, {synth.vocoder.kind} vocoder, "
        f"peak {db(writer.peak * gain):.1f} dBFS)"
    )
    return 0


def run_instruments(args: argparse.Namespace) -> int:
    """Execute ``mel2mel instruments``: print the timbre table."""
    from mel2mel.synthesizer import Synthesizer

    synth = Synthesizer.from_pretrained(args.model, vocoder="griffinlim")
    rows = [("#", "name", "program", "embedding", "aliases")]
    for info in synth.instruments():
        coords = "(" + ", ".join(f"{v:+.3f}" for v in info.embedding) + ")"
        program = "-" if info.program is None else str(info.program)
        rows.append((str(info.index), info.name, program, coords, ", ".join(info.aliases)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        cells = [r[0].rjust(widths[0]), r[1].ljust(widths[1]), r[2].rjust(widths[2])]
        print("  ".join([*cells, r[3].ljust(widths[3]), r[4]]).rstrip())
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mel2mel render`` and ``mel2mel instruments``."""
    p = subparsers.add_parser(
        "render",
        help="synthesize a MIDI file to WAV or FLAC",
        description="Synthesize a MIDI file (16 kHz mono, 16-bit WAV or FLAC by extension) with "
        "the acoustic model and a vocoder. Timbres: a name or alias, a GM program, coordinates "
        "x,y, a mix a=0.3,b=0.7, a morph a@0s,b@30s (see 'mel2mel instruments') or a user "
        "timbre (see 'mel2mel timbre list'). Write "
        "--timbre=-0.3,1.1 when a value starts with a minus sign.",
    )
    p.add_argument("midi", type=Path, help="input MIDI file")
    p.add_argument("-o", "--output", type=Path, help="output .wav/.flac (default: MIDI name .wav)")
    add_timbre_arguments(p)
    p.add_argument(
        "--track",
        action="append",
        default=[],
        metavar="N=TIMBRE",
        help="timbre of MIDI track N (0-based; channels when all notes are in one track); "
        "repeatable; other tracks use the main timbre",
    )
    p.add_argument(
        "--vocoder",
        choices=("auto", "fast", "wavenet", "griffinlim"),
        default="auto",
        help="auto (default): the fast vocoder if installed, else Griffin-Lim",
    )
    add_refine_argument(p)
    add_texture_arguments(p)
    add_range_arguments(p)
    p.add_argument(
        "--normalize", action="store_true", help=f"peak-normalize to {NORMALIZE_PEAK_DB:g} dBFS"
    )
    p.add_argument("-f", "--force", action="store_true", help="overwrite an existing output")
    p.add_argument("--model", type=Path, help="exported model, or 'paper' (default: pretrained)")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (1..cores)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar on a terminal")
    p.set_defaults(func=run_render)

    q = subparsers.add_parser(
        "instruments",
        help="list the trained instruments, their embedding coordinates and aliases",
        description="Print the model's instruments: name, GM program (0-based), embedding "
        "coordinates and the aliases that select them.",
    )
    q.add_argument("--model", type=Path, help="exported model, or 'paper' (default: pretrained)")
    q.set_defaults(func=run_instruments)
