"""``mel2mel plot timbre-space`` and ``mel2mel plot space3d``: views of the timbre space.

``plot timbre-space``: the 2-D timbre map coloured by spectral centroid or energy.

``mel2mel plot timbre-space -o docs/eval/timbre-space`` plays the reference passage at every
point of a grid over the model's embedding plane (:mod:`mel2mel.timbre.map`) and writes
``<prefix>-centroid.png``/``.svg`` and ``<prefix>-energy.png``/``.svg``, optionally the map as
JSON (``--json``, the format the web page reads), and prints the Spearman correlations of each
field with position along its best direction. User timbres of the library fitted on the same
model are drawn as stars. Existing files are kept unless ``-f`` is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mel2mel import pretrained
from mel2mel.cli.common import add_force_argument, add_output_argument
from mel2mel.errors import UserError, require
from mel2mel.fileio import refuse_overwrite


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mel2mel plot`` and its subcommands ``timbre-space`` and ``space3d``."""
    plot = subparsers.add_parser(
        "plot", help="plots of the timbre space", description="Plots of the timbre space."
    )
    sub = plot.add_subparsers(dest="plot_command", metavar="PLOT", required=True)
    add_timbre_space(sub)
    add_space3d(sub)


def add_timbre_space(sub: argparse._SubParsersAction) -> None:
    """``mel2mel plot timbre-space``."""
    q = sub.add_parser(
        "timbre-space",
        help="the 2-D timbre map coloured by spectral centroid or mean energy",
        description="Play a fixed reference passage at every point of a grid over the "
        "embedding plane and colour the plane by the spectral centroid or mean energy of the "
        "predicted mel; instruments are labelled, user timbres drawn as stars.",
    )
    add_output_argument(q, "output path prefix", required=True, metavar="PREFIX")
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
    add_force_argument(q, "overwrite existing outputs")
    q.set_defaults(func=run_timbre_space)


def run_timbre_space(args: argparse.Namespace) -> int:
    """Execute ``mel2mel plot timbre-space``; returns the exit status."""
    require("matplotlib", "train")
    prefix = Path(args.output)
    colors = ("centroid", "energy") if args.color == "both" else (args.color,)
    suffixes = (".png", ".svg") if args.format == "both" else (f".{args.format}",)
    outs = [prefix.with_name(f"{prefix.name}-{c}{s}") for c in colors for s in suffixes]
    if args.json is not None:
        outs.append(args.json)
    for out in outs:
        if not out.parent.is_dir():
            raise UserError(f"output folder does not exist: {out.parent}")
    refuse_overwrite(outs, args.force)
    if args.resolution < 2:
        raise UserError("--resolution must be at least 2")
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))

    from mel2mel.synthesizer import Synthesizer
    from mel2mel.timbre.library import TimbreLibrary
    from mel2mel.timbre.map import compute_timbre_map, plot_timbre_map

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


def add_space3d(sub: argparse._SubParsersAction) -> None:
    """``mel2mel plot space3d``."""
    p = sub.add_parser(
        "space3d",
        help="3-D t-SNE of a model's instrument embeddings (JSON for the web app + PNG)",
        description="Project the embedding table to 3-D with t-SNE, colour each instrument by "
        "the spectral centroid and mean energy of its prediction for a reference passage, and "
        "write PREFIX.json and PREFIX.png. See docs/SPACE100.md.",
    )
    p.add_argument(
        "--model",
        type=Path,
        default=pretrained.path(pretrained.ACOUSTIC100),
        help="exported acoustic model (default: the shipped 100-instrument model)",
    )
    add_output_argument(p, "output prefix (.json, .png)", required=True, metavar="PREFIX")
    p.add_argument("--json", type=Path, help="write the JSON here instead of PREFIX.json")
    p.add_argument("--seed", type=int, help="t-SNE random_state (default: a fixed one, 0)")
    p.add_argument(
        "--samples",
        action="store_true",
        help="also write each dot's two clips of the reference passage, the model's (fast "
        "vocoder) and its SoundFont's (FluidSynth), to PREFIX-samples/ and list them in the JSON",
    )
    add_force_argument(p, "overwrite existing files")
    p.set_defaults(func=run_space3d)


def run_space3d(args: argparse.Namespace) -> int:
    """Execute ``mel2mel plot space3d``; returns the exit status."""
    import torch

    from mel2mel.models.export import export_paths, load_acoustic
    from mel2mel.timbre import space3d

    json_path = args.json or args.output.with_name(args.output.name + ".json")
    png_path = args.output.with_name(args.output.name + ".png")
    refuse_overwrite((json_path, png_path), args.force)
    torch.manual_seed(0)
    model = load_acoustic(args.model)
    name = export_paths(args.model)[0].stem
    seed = {} if args.seed is None else {"seed": args.seed}
    doc = space3d.space3d(model, name=name, **seed)
    if args.samples:
        folder = json_path.with_name(args.output.name + "-samples")
        space3d.write_samples(model, doc, folder, progress=True)
        print(f"wrote {2 * len(doc['instruments'])} clips to {folder}")
    space3d.write_json(doc, json_path)
    space3d.plot_space3d(doc, png_path)
    print(f"wrote {json_path} ({len(doc['instruments'])} instruments) and {png_path}")
    return 0
