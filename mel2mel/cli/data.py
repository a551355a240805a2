"""``mel2mel data build`` and ``mel2mel data index``: the dataset builder's command line.

Heavy modules (torch, music21) are imported inside the handlers, so registering these
subcommands costs nothing for the other commands.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mel2mel.cli.common import add_output_argument
from mel2mel.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` command and its ``build`` and ``index`` subcommands."""
    data = subparsers.add_parser(
        "data", help="build and index training datasets", description="Training datasets."
    )
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    build = sub.add_parser(
        "build",
        help="render MIDI x instruments with FluidSynth into a dataset folder",
        description=(
            "Render every piece for every instrument with FluidSynth at 16 kHz and store audio, "
            "log-mel and piano roll per item. Resumable: a rerun skips finished items. "
            "See docs/DATA.md."
        ),
    )
    add_output_argument(build, "dataset folder (created; resumed if it exists)")
    build.add_argument(
        "--midi-dir",
        type=Path,
        help="folder of MIDI files (searched recursively) or one MIDI file; "
        "default: the curated music21 corpus (needs mel2mel[data])",
    )
    build.add_argument(
        "--instruments",
        help="comma-separated names or 0-based GM program numbers, or a named set "
        "(default: the paper's ten, e.g. 'Grand Piano,Trumpet' or '0,56'; sets: paper10, "
        "space100 = 100 instruments from three Debian SoundFonts)",
    )
    build.add_argument(
        "--instruments-file",
        type=Path,
        help='JSON list of {"name", "program", "soundfont"} (a key such as fluidr3, '
        "or a path; see docs/SPACE100.md) instead of --instruments",
    )
    build.add_argument(
        "--list-instruments", action="store_true", help="list instrument names and exit"
    )
    build.add_argument(
        "--soundfont",
        type=Path,
        help="SoundFont (.sf2/.sf3); default: MuseScore General "
        "(/usr/share/sounds/sf3/MuseScore_General.sf3)",
    )
    build.add_argument("--gain", type=float, help="FluidSynth master gain (default: 0.2)")
    build.add_argument("--no-reverb", action="store_true", help="turn FluidSynth's reverb off")
    build.add_argument("--no-chorus", action="store_true", help="turn FluidSynth's chorus off")
    build.add_argument(
        "--workers", type=int, help=f"worker processes (default: {os.cpu_count()}, one per core)"
    )
    build.add_argument(
        "--shard", default="0/1", help="build only shard i of N, as i/N (default: 0/1)"
    )
    build.add_argument("--limit", type=int, help="use only the first K pieces (scores)")
    build.add_argument(
        "--variants",
        type=int,
        help="seeded performances of each score (dynamics pp..ff, pedal, rubato, "
        "transposition; default: 2 for the music21 corpus, 0 with --midi-dir)",
    )
    build.add_argument(
        "--textures",
        type=int,
        help="generated piano-texture pieces (Alberti, arpeggios, runs, trills, octaves, wide "
        "chords, ...; default: 300 for the music21 corpus, 0 with --midi-dir)",
    )
    build.add_argument(
        "--strikes",
        type=int,
        help="generated dynamics studies (isolated chords at velocities over all of 1..127, "
        "ramps and random; default: 60 for the music21 corpus, 0 with --midi-dir)",
    )
    build.add_argument(
        "--solos",
        type=int,
        help="generated solo lines (sparse, mostly soft single notes in every register, each "
        "left to decay; default: 60 for the music21 corpus, 0 with --midi-dir)",
    )
    build.add_argument(
        "--instruments-per-piece",
        type=int,
        metavar="K",
        help="render each piece with only K of the instruments, dealt out evenly per split "
        "(more music per instrument for a large set such as space100; default: all)",
    )
    build.add_argument(
        "--no-plain",
        action="store_true",
        help="leave out the scores as written: build only their performances and the textures",
    )
    build.add_argument(
        "--split",
        choices=["train", "valid", "test"],
        help="build only the pieces of one split (e.g. an evaluation set)",
    )
    build.add_argument(
        "--seed", type=int, default=0, help="seed of performances and textures (default: 0)"
    )
    build.add_argument(
        "--max-seconds",
        type=float,
        help="cut scores to their first S seconds and make performances and textures at most "
        "S s long (default: whole scores, 30 s performances, 20 s textures)",
    )
    build.add_argument("--no-progress", action="store_true", help="no progress bar")
    build.set_defaults(func=_build)

    index = sub.add_parser(
        "index",
        help="rebuild manifest.json from the files (e.g. after merging shard folders)",
        description="Scan a dataset folder and rewrite its manifest.json from finished items.",
    )
    index.add_argument("dir", type=Path, help="dataset folder")
    index.set_defaults(func=_index)


def _list_instruments(instrument_set: str | None = None) -> None:
    from mel2mel import constants as C
    from mel2mel.data.instrument_sets import INSTRUMENT_SETS, SOUNDFONTS
    from mel2mel.instruments import gm_names

    if instrument_set is not None and instrument_set.strip().lower() in INSTRUMENT_SETS:
        for n, (name, program, sf) in enumerate(INSTRUMENT_SETS[instrument_set.lower()]()):
            print(f"  {n:3d}  {program:3d}  {sf or '--soundfont':12s}  {name}")
        return
    print("The paper's instruments (the default):")
    for name, program in C.PAPER_INSTRUMENTS.items():
        print(f"  {program:3d}  {name}")
    print(
        f"Named sets (--instruments NAME, listed with --instruments NAME --list-instruments): "
        f"{', '.join(INSTRUMENT_SETS)}"
    )
    print("SoundFont keys (for --instruments-file):")
    for sf in SOUNDFONTS.values():
        print(f"  {sf.key:12s} {sf.path}  (apt install {sf.package})")
    print("General MIDI programs (names or numbers are accepted):")
    for program, name in enumerate(gm_names()):
        print(f"  {program:3d}  {name}")


def _build(args: argparse.Namespace) -> int:
    if args.list_instruments:
        _list_instruments(args.instruments)
        return 0
    if args.output is None:
        raise UserError("data build needs -o/--output DIR")
    from mel2mel.data.build import build_dataset

    instruments = args.instruments
    if args.instruments_file is not None:
        if instruments is not None:
            raise UserError("give --instruments or --instruments-file, not both")
        from mel2mel.data.instrument_sets import instruments_from_file

        instruments = instruments_from_file(args.instruments_file)
    report = build_dataset(
        args.output,
        midi_dir=args.midi_dir,
        instruments=instruments,
        soundfont=args.soundfont,
        gain=args.gain,
        reverb=not args.no_reverb,
        chorus=not args.no_chorus,
        workers=args.workers,
        shard=args.shard,
        limit=args.limit,
        variants=args.variants,
        textures=args.textures,
        strikes=args.strikes,
        solos=args.solos,
        instruments_per_piece=args.instruments_per_piece,
        seed=args.seed,
        max_seconds=args.max_seconds,
        plain=not args.no_plain,
        split=args.split,
        progress=not args.no_progress,
    )
    for line in report.summary():
        print(line)
    return report.exit_code


def _index(args: argparse.Namespace) -> int:
    from mel2mel.data.manifest import index_dataset, manifest_summary

    if not args.dir.is_dir():
        raise UserError(f"no such folder: {args.dir}")
    print(manifest_summary(index_dataset(args.dir), args.dir))
    return 0
