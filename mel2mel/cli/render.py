"""``mel2mel render`` (MIDI -> WAV/FLAC) and ``mel2mel instruments`` (the timbre table).

``mel2mel render song.mid -o song.wav --instrument trumpet`` synthesizes a MIDI file with the
:class:`~mel2mel.synthesizer.Synthesizer`; see ``docs/RENDERING.md``. Every check (input,
output path, timbres, tracks, time range, models) runs before any audio is made, and errors
are one line (``mel2mel: error: ...``, exit status 2) that leave no file behind.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
from mel2mel.cli.vocode import add_refine_argument, apply_refine
from mel2mel.errors import UserError
from mel2mel.fileio import refuse_overwrite
from mel2mel.synthesis.output import (
    FORMATS,
    NORMALIZE_PEAK_DB,
    TwoPassWriter,
    db,
    output_gain,
)


def run_render(args: argparse.Namespace) -> int:
    """Execute ``mel2mel render``; returns the exit status."""
    from mel2mel.timbre.spec import parse_track_specs

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
    refuse_overwrite([out], args.force)
    if not out.parent.is_dir():
        raise UserError(f"output folder does not exist: {out.parent}")
    timbre = main_timbre(args)
    tracks = parse_track_specs(args.track)
    common = check_common(args)

    from mel2mel.synthesizer import Synthesizer

    with TwoPassWriter(out) as writer:
        synth = Synthesizer.from_pretrained(
            args.model,
            vocoder=args.vocoder,
            seed=args.seed,
            sharpen=args.sharpen,
            beats=args.beats,
            contrast=args.contrast,
        )
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
    add_output_argument(p, "output .wav/.flac (default: MIDI name .wav)")
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
    add_force_argument(p, "overwrite an existing output")
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
