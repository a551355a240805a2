"""Options and checks that several commands share, so each is spelled one way everywhere.

* ``-o/--output`` names what a command writes (:func:`add_output_argument`); the old ``--out``
  is still read, hidden from ``--help``, for one release.
* The timbre options (``-i/--instrument``, ``--timbre X,Y`` for coordinates or any timbre,
  ``--mix``, ``--morph``), ``--texture``/``--seed`` and the time range
  (``--start``/``--duration``/``--tail``) of ``render`` and ``mel``.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

from mel2mel import validate


def add_output_argument(
    p: argparse.ArgumentParser | argparse._ArgumentGroup,
    help: str,
    *,
    required: bool = False,
    metavar: str | None = None,
) -> None:
    """``-o/--output PATH`` (``args.output``), with the old spelling ``--out`` hidden."""
    group = p.add_mutually_exclusive_group(required=required)
    group.add_argument("-o", "--output", type=Path, metavar=metavar, help=help)
    group.add_argument("--out", dest="output", type=Path, help=argparse.SUPPRESS)


def add_force_argument(
    p: argparse.ArgumentParser, help: str = "overwrite existing outputs"
) -> None:
    """``-f/--force``: without it no command overwrites a file."""
    p.add_argument("-f", "--force", action="store_true", help=help)


def add_server_arguments(p: argparse.ArgumentParser) -> None:
    """``--host``, ``--port`` and ``--log-level`` of the commands that run a web server."""
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (8000)")
    p.add_argument("--log-level", default="warning", help="uvicorn log level (warning)")


def main_timbre(args: argparse.Namespace) -> Any:
    """The main timbre option, syntax-checked (names are resolved once the model is loaded)."""
    from mel2mel.timbre.spec import Morph, parse_mix

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
    g.add_argument("--embedding", dest="timbre", help=argparse.SUPPRESS)  # old --timbre X,Y
    return g


def add_texture_arguments(p: argparse.ArgumentParser) -> None:
    """``--texture``, ``--seed``, ``--sharpen``, ``--beats`` and ``--contrast``, shared by
    ``render`` and ``mel``."""
    p.add_argument(
        "--texture",
        type=float,
        metavar="S",
        help="strength of the texture post-net's beating/chorus/modulation: 0 (none, the "
        "acoustic model's steady mel) to 4; default: the model's own (docs/TEXTURE.md). A "
        "post-net with a strength per instrument multiplies each instrument's own by S (1: "
        "as chosen). No effect on a model without a post-net",
    )
    p.add_argument(
        "--seed", type=int, default=0, help=f"texture noise seed, 0..{validate.MAX_SEED} (0)"
    )
    p.add_argument(
        "--sharpen",
        type=float,
        default=1.0,
        metavar="S",
        help="strength of the model's detail gains, which deepen the spectral peaks and "
        "valleys a squared-error model flattens: 1 as fitted (default), 0 the model's mel as "
        "it is, up to 4 (docs/MODELS.md, 'Detail gains'). No effect on a model without them",
    )
    p.add_argument(
        "--beats",
        type=float,
        default=1.0,
        metavar="S",
        help="strength of the slow beating of instruments made of detuned layers (a synth "
        "lead), as measured on their SoundFont: 1 (default), 0 a steady tone, up to 4 "
        "(docs/MODELS.md, 'Note beats'). No effect on a model or instrument without them",
    )
    p.add_argument(
        "--contrast",
        type=float,
        default=1.0,
        metavar="S",
        help="strength of the model's note contrast, which puts each strike's energy in the "
        "struck notes' partials rather than in the held ones': 1 as fitted (default), 0 none, "
        "up to 4 (docs/MODELS.md, 'Note contrast'). No effect on a model without it",
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
    ``Synthesizer.stream`` and ``Synthesizer.mel_stream``; ``args.seed`` and
    ``args.sharpen``, ``args.beats`` and ``args.contrast`` (the synthesizer's own settings) are
    checked in place.
    """
    from mel2mel.timbre.spec import parse_time

    start = None if args.start is None else parse_time(args.start)
    duration = None if args.duration is None else parse_time(args.duration)
    tail = validate.seconds(parse_time(args.tail), "--tail", validate.MAX_TAIL_SECONDS)
    args.seed = validate.seed(args.seed)
    if args.texture is not None:
        validate.number(args.texture, "--texture", 0.0, 4.0)
    validate.number(args.sharpen, "--sharpen", 0.0, 4.0)
    validate.number(args.beats, "--beats", 0.0, 4.0)
    validate.number(args.contrast, "--contrast", 0.0, 4.0)
    if args.threads is not None:
        import torch

        torch.set_num_threads(validate.threads(args.threads))
    return {"start": start, "duration": duration, "tail": tail, "texture": args.texture}


def warn_texture(args: argparse.Namespace, synth: Any) -> None:
    """Warn when ``--texture`` is given for a model without a texture post-net."""
    if args.texture is not None and synth.texture is None:
        msg = "this model has no texture post-net; --texture has no effect"
        warnings.warn(msg, stacklevel=3)
