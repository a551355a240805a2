"""``mel2mel timbre learn|list|remove``: the user timbre library from the command line.

* ``mel2mel timbre learn --audio cello.wav --midi cello.mid --name my-cello`` fits an
  embedding to the recording (:mod:`mel2mel.timbre.learn`) and saves it to the library
  (:mod:`mel2mel.timbre.library`); afterwards ``mel2mel render song.mid -i my-cello`` and
  mixes/morphs with ``my-cello`` use it;
* ``mel2mel timbre list [--all]`` prints the entries fitted on the model (``--all``: every one);
* ``mel2mel timbre remove NAME`` deletes an entry.

``--library DIR`` picks another library folder (default: ``$MEL2MEL_HOME/timbres`` or
``~/.local/share/mel2mel/timbres``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mel2mel.cli.common import add_force_argument
from mel2mel.errors import UserError


def _library(args: argparse.Namespace):  # -> TimbreLibrary
    from mel2mel.timbre.library import TimbreLibrary

    return TimbreLibrary(args.library)


def _model(args: argparse.Namespace):  # -> Mel2Mel
    from mel2mel.synthesizer import Synthesizer

    return Synthesizer.from_pretrained(
        args.model, vocoder="griffinlim", timbre_library=_library(args)
    )


def run_learn(args: argparse.Namespace) -> int:
    """Execute ``mel2mel timbre learn``."""
    import math
    import sys

    import numpy as np

    from mel2mel import constants as C
    from mel2mel import validate
    from mel2mel.audio import load_audio
    from mel2mel.midi import read_notes
    from mel2mel.models.acoustic import UnknownInstrumentError
    from mel2mel.models.export import model_fingerprint
    from mel2mel.timbre.learn import learn_timbre
    from mel2mel.timbre.library import UserTimbre, check_name
    from mel2mel.timbre.spec import parse_time

    name = check_name(args.name)
    library = _library(args)
    for path in (args.audio, args.midi):
        if path.is_dir():
            raise UserError(f"{path} is a folder, not a file")
        if not path.is_file():
            raise UserError(f"{path}: no such file")
    if library.find(name) is not None and not args.force:
        raise UserError(f"a user timbre named {name!r} exists; pass -f to replace it")
    if args.steps < 0 or args.restarts < 1:
        raise UserError("--steps must be >= 0 and --restarts >= 1")
    start = parse_time(args.start)
    duration = None if args.duration in ("all", "end") else parse_time(args.duration)
    if args.threads is not None:
        import torch

        torch.set_num_threads(validate.threads(args.threads))
    library.check_writable()  # before the fit, not after it
    synth = _model(args)
    try:  # the model's own names cannot be shadowed: they are resolved first
        synth.timbres.index(name)
    except UnknownInstrumentError:
        pass
    else:
        raise UserError(f"{name!r} already names an instrument of the model; choose another")
    init = args.init
    if init is not None:
        synth.timbre(init)  # a clear error for an unknown name or bad coordinates, before work
    notes = read_notes(args.midi)
    audio = load_audio(args.audio)
    if not np.all(np.isfinite(audio)):
        raise UserError(f"{args.audio}: the recording contains NaN or infinite samples")
    print(f"fitting {name!r}: {args.audio} against {args.midi}", file=sys.stderr)
    result = learn_timbre(
        synth, audio, notes, steps=args.steps, init=init, restarts=args.restarts,
        start=start, duration=duration, progress=not args.quiet and sys.stderr.isatty(),
    )  # fmt: skip
    for label, loss in result.starts[: max(3, args.restarts)]:
        print(f"  start {label}: loss {loss:.5f}")
    seconds = result.frames / C.FRAME_RATE
    synth.timbres.check_vector(result.vector, "the fitted timbre")  # never save NaN
    if not math.isfinite(result.mel_error_db):
        raise UserError("the fit did not converge (its mel error is not finite); nothing saved")
    entry = UserTimbre(
        name=name,
        vector=tuple(round(float(v), 6) for v in result.vector),
        model=model_fingerprint(synth.acoustic),
        source={
            "audio": str(args.audio),
            "midi": str(args.midi),
            "start": start,
            "duration": round(seconds, 3),
            "init": result.init,
            "steps": result.steps,
        },
        mel_error_db=round(result.mel_error_db, 3),
    )
    path = library.save(entry, overwrite=args.force)
    coords = ", ".join(f"{v:+.3f}" for v in np.asarray(result.vector))
    print(
        f"saved {name!r} = ({coords}) to {path}: loss {result.loss:.5f}, mel error "
        f"{result.mel_error_db:.2f} dB over {seconds:.1f} s (from {result.init}, "
        f"{result.steps} steps, {result.seconds:.1f} s)"
    )
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Execute ``mel2mel timbre list``."""
    from mel2mel.models.export import model_fingerprint

    library = _library(args)
    fingerprint = None
    if not args.all:
        fingerprint = model_fingerprint(_model(args).acoustic)
    entries = library.list(model=fingerprint)
    if not entries:
        which = "" if args.all else " for this model (--all shows every one)"
        print(f"no user timbres in {library.root}{which}")
        return 0
    rows = [("name", "vector", "mel error", "model", "created")]
    for e in entries:
        err = "-" if e.mel_error_db is None else f"{e.mel_error_db:.2f} dB"
        vec = "(" + ", ".join(f"{v:+.3f}" for v in e.vector) + ")"
        rows.append((e.name, vec, err, e.model, e.created))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def run_remove(args: argparse.Namespace) -> int:
    """Execute ``mel2mel timbre remove``."""
    entry = _library(args).remove(args.name)
    print(f"removed {entry.name!r}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mel2mel timbre`` with ``learn``, ``list`` and ``remove``."""
    p = subparsers.add_parser("timbre", help="user timbres: learn one from a recording, list")
    sub = p.add_subparsers(dest="timbre_command", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--library", type=Path, metavar="DIR", help="user timbre folder")

    q = sub.add_parser(
        "learn",
        parents=[common],
        help="fit a timbre to a recording of a MIDI file and save it",
        description="Freeze the acoustic model and fit an embedding vector so that its "
        "predicted mel for the MIDI matches the recording's log-mel; save it under NAME.",
    )
    q.add_argument("--audio", type=Path, required=True, help="the recording (any soundfile format)")
    q.add_argument("--midi", type=Path, required=True, help="the notes it plays, time-aligned")
    q.add_argument("--name", required=True, help="name of the new timbre")
    q.add_argument("--model", type=Path, help="exported model folder (default: pretrained)")
    q.add_argument("--steps", type=int, default=40, help="Adam steps (40)")
    q.add_argument("--restarts", type=int, default=2, help="best starts refined (2)")
    q.add_argument(
        "--init",
        metavar="NAME|X,Y",
        help="a single start instead of the best ones (write --init=-0.3,1.1)",
    )
    q.add_argument("--start", default="0", metavar="S", help="excerpt start, seconds (0)")
    q.add_argument(
        "--duration", default="30", metavar="S", help="excerpt length, seconds or 'all' (30)"
    )
    q.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    q.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_force_argument(q, "replace an entry of that name")
    q.set_defaults(func=run_learn)

    q = sub.add_parser("list", parents=[common], help="list the user timbres")
    q.add_argument("--model", type=Path, help="exported model folder (default: pretrained)")
    q.add_argument("--all", action="store_true", help="entries of every model")
    q.set_defaults(func=run_list)

    q = sub.add_parser("remove", parents=[common], help="delete a user timbre")
    q.add_argument("name")
    q.set_defaults(func=run_remove)
