"""``mel2mel plot timbre-space``: the 2-D timbre map coloured by spectral centroid or energy.

``mel2mel plot timbre-space -o docs/eval/timbre-space`` plays the reference passage at every
point of a grid over the model's embedding plane (:mod:`mel2mel.timbre_map`) and writes
``<prefix>-centroid.png``/``.svg`` and ``<prefix>-energy.png``/``.svg``, optionally the map as
JSON (``--json``, the format the web page reads), and prints the Spearman correlations of each
field with position along its best direction. User timbres of the library fitted on the same
model are drawn as stars. Existing files are kept unless ``-f`` is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def plot_subcommands(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The ``plot`` command's subcommand list, created by whichever module registers first
    (this one, or :mod:`mel2mel.space3d`)."""
    plot = subparsers.choices.get("plot")
    if plot is None:
        plot = subparsers.add_parser(
            "plot", help="plots of the timbre space", description="Plots of the timbre space."
        )
        return plot.add_subparsers(dest="plot_command", metavar="PLOT", required=True)
    for action in plot._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise RuntimeError("the 'plot' command has no subcommands")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mel2mel plot`` and its ``timbre-space`` subcommand."""
    q = plot_subcommands(subparsers).add_parser(
        "timbre-space",
        help="the 2-D timbre map coloured by spectral centroid or mean energy",
        description="Play a fixed reference passage at every point of a grid over the "
        "embedding plane and colour the plane by the spectral centroid or mean energy of the "
        "predicted mel; instruments are labelled, user timbres drawn as stars.",
    )
    q.add_argument("-o", "--out", required=True, metavar="PREFIX", help="output path prefix")
    q.add_argument("--model", type=Path, help="exported model, or 'paper' (default: pretrained)")
    q.add_argument(
        "--color", choices=("centroid", "energy", "both"), default="both", help="field (both)"
    )
    q.add_argument("--resolution", type=int, default=41, metavar="N", help="grid points per axis")
    q.add_argument("--margin", type=float, default=0.25, help="padding, fraction of the box")
    q.add_argument("--json", type=Path, metavar="PATH", help="also write the map as JSON")
    q.add_argument(
        "--format", choices=("png", "svg", "both"), default="both", help="figure files (both)"
    )
    q.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    q.add_argument("-f", "--force", action="store_true", help="overwrite existing outputs")
    q.set_defaults(func=run_timbre_space)


def run_timbre_space(args: argparse.Namespace) -> int:
    """Execute ``mel2mel plot timbre-space``; returns the exit status."""
    from mel2mel.errors import UserError, require

    require("matplotlib", "train")
    prefix = Path(args.out)
    colors = ("centroid", "energy") if args.color == "both" else (args.color,)
    suffixes = (".png", ".svg") if args.format == "both" else (f".{args.format}",)
    outs = [prefix.with_name(f"{prefix.name}-{c}{s}") for c in colors for s in suffixes]
    if args.json is not None:
        outs.append(args.json)
    for out in outs:
        if not out.parent.is_dir():
            raise UserError(f"output folder does not exist: {out.parent}")
        if out.exists() and not args.force:
            raise UserError(f"{out} exists; pass -f to overwrite")
    if args.resolution < 2:
        raise UserError("--resolution must be at least 2")
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))

    from mel2mel.synthesizer import Synthesizer
    from mel2mel.timbre_library import TimbreLibrary
    from mel2mel.timbre_map import compute_timbre_map, plot_timbre_map

    synth = Synthesizer.from_pretrained(args.model, vocoder="griffinlim")
    tmap = compute_timbre_map(
        synth, resolution=args.resolution, margin=args.margin, progress=sys.stderr.isatty()
    )
    users = {e.name: e.vector for e in TimbreLibrary().list(model=tmap.model)}
    for c in colors:
        for s in suffixes:
            plot_timbre_map(tmap, prefix.with_name(f"{prefix.name}-{c}{s}"), c, users)
    if args.json is not None:
        tmap.save_json(args.json)
    for out in outs:
        print(f"wrote {out}")
    rho = tmap.spearman()
    for c in ("centroid", "energy"):
        r = rho[c]
        print(
            f"{c}: Spearman rho {r['rho']:.3f} along {r['angle_deg']:.2f} deg, inside the "
            f"instruments' box {r['inside_rho']:.3f} along {r['inside_angle_deg']:.2f} deg "
            f"({rho['method']})"
        )
    return 0
