"""``mel2mel gallery build``: the paper's listening samples as a static page."""

from __future__ import annotations

import argparse
from pathlib import Path

from mel2mel import validate
from mel2mel.cli.common import add_force_argument, add_output_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mel2mel gallery build``."""
    p = subparsers.add_parser("gallery", help="the paper's sample page: every configuration")
    sub = p.add_subparsers(dest="gallery_command", metavar="COMMAND", required=True)
    b = sub.add_parser(
        "build",
        help="render test tracks x instruments x configurations into a static page",
        description="One row per (test track, instrument), one column per configuration: the "
        "original, 8-bit mu-law, vocoders on the true mel, the models. Writes index.html, "
        "gallery.json, audio/ and mel/ into the output folder; opens from file:// or any "
        "static server. Run again to resume: unchanged clips are kept.",
    )
    b.add_argument("--data", required=True, type=Path, help="dataset (mel2mel data build)")
    add_output_argument(b, "site folder", required=True)
    b.add_argument(
        "--config",
        action="append",
        metavar="SPEC",
        help="a column: a built-in name (original, mulaw8, anchor, fast-true, wavenet-true, "
        "griffinlim-true, model-log-abs, model-log-abs-texture, model-tanh-log-abs) or "
        "NAME=MODEL:VOCODER[:TEXTURE] with MODEL truth|pretrained|paper|PATH; repeat for "
        "more (default: the built-ins; wavenet-true only with a GPU)",
    )
    b.add_argument("--tracks", type=int, default=14, help="test tracks, spread over the split")
    b.add_argument("--track", action="append", default=[], metavar="ID", help="this track")
    b.add_argument(
        "-i", "--instrument", action="append", metavar="NAME",
        help="an instrument of the dataset (repeat; default: all)",
    )  # fmt: skip
    b.add_argument("--seconds", type=float, default=10.0, help="segment length (10 s)")
    b.add_argument(
        "--audio-format", default="ogg", choices=["ogg", "mp3", "wav"],
        help="ogg (Opus, default), mp3 or wav",
    )  # fmt: skip
    b.add_argument("--title", default="mel2mel: synthesized audio samples", help="page title")
    b.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    b.add_argument("--device", default="cpu", help="torch device (cpu)")
    add_force_argument(b, "make every clip again; write into a folder holding other files")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=run_gallery_build)


def run_gallery_build(args: argparse.Namespace) -> int:
    """Execute ``mel2mel gallery build``; returns the exit status."""
    validate.integer(args.tracks, "--tracks", 1, 10_000)
    validate.threads(args.threads)
    import torch

    from mel2mel.gallery.build import build_gallery
    from mel2mel.gallery.configs import parse_config

    torch.set_num_threads(args.threads)
    configs = [parse_config(c) for c in args.config] if args.config else None
    report = build_gallery(
        args.data,
        args.output,
        configs,
        tracks=args.tracks,
        track_ids=tuple(args.track),
        instruments=args.instrument,
        seconds=args.seconds,
        audio_format=args.audio_format,
        device=args.device,
        title=args.title,
        force=args.force,
        progress=not args.no_progress,
    )
    print(
        f"mel2mel: {report.rows} rows, {report.made} clips made, {report.reused} kept, "
        f"{report.megabytes:.1f} MB, {report.seconds:.0f} s -> {report.site / 'index.html'}"
    )
    return 0
