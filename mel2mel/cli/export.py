"""``mel2mel export onnx`` and ``mel2mel export site``: the in-page models and the static site.

Registered under ``mel2mel export`` by :func:`mel2mel.cli.train.register` (which owns the
``export`` command group); the work is in :mod:`mel2mel.models.onnx_export` and
:mod:`mel2mel.web.site`.

Examples
--------
::

    mel2mel export onnx -o build/onnx              # acoustic, texture, vocoder (+ 100-instrument)
    mel2mel export site build/site                 # the page as static files
    python -m http.server -d build/site 8000       # then open http://127.0.0.1:8000/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mel2mel.cli.common import add_force_argument, add_output_argument


def add_export_onnx(sub: argparse._SubParsersAction) -> None:
    """``mel2mel export onnx``."""
    p = sub.add_parser(
        "onnx",
        help="write the shipped models as ONNX for the in-page synthesis",
        description="Write acoustic.onnx, acoustic_texture.onnx, fast_vocoder.onnx, "
        "acoustic100.onnx and manifest.json, built from the shipped safetensors "
        "(docs/WEB.md, 'In the page').",
    )
    add_output_argument(p, "output directory (created)", required=True)
    p.add_argument("--model", type=Path, default=None,
                   help="export, or 'paper' (default: pretrained)")  # fmt: skip
    p.add_argument("--float32", action="store_true",
                   help="keep float32 weights (default: float16, computed in float32)")  # fmt: skip
    add_force_argument(p, "overwrite an existing export")
    p.set_defaults(func=run_export_onnx)


def run_export_onnx(args: argparse.Namespace) -> int:
    from mel2mel.models.onnx_export import export_onnx

    manifest = export_onnx(args.output, model=args.model, half=not args.float32, force=args.force)
    for name, size in manifest["files"].items():
        print(f"wrote {args.output / name} ({size / 1e6:.2f} MB)")
    print(f"wrote {args.output / 'manifest.json'}")
    return 0


def add_export_site(sub: argparse._SubParsersAction) -> None:
    """``mel2mel export site``."""
    p = sub.add_parser(
        "site",
        help="write the web page as a static site that runs everything in the browser",
        description="Write index.html, the scripts, onnxruntime-web, plotly.js, the models "
        "as ONNX, the map and space data and (with FluidSynth) the space's SoundFont clips "
        "of the reference passage to DIR. Serve it with any static host, e.g. "
        "'python -m http.server -d DIR'.",
    )
    p.add_argument("directory", type=Path, metavar="DIR", help="output directory (created)")
    p.add_argument("--model", type=Path, default=None,
                   help="export, or 'paper' (default: pretrained)")  # fmt: skip
    p.add_argument("--map-resolution", type=int, default=41,
                   help="cells per side of the timbre map (default: 41)")  # fmt: skip
    p.add_argument("--no-soundfont-samples", dest="soundfont_samples", action="store_false",
                   help="leave out the space's SoundFont clips of the reference passage "
                   "(rendered with FluidSynth at export when it is installed)")  # fmt: skip
    add_force_argument(p, "overwrite an existing site")
    p.set_defaults(func=run_export_site)


def run_export_site(args: argparse.Namespace) -> int:
    from mel2mel.timbre.samples import SoundFontSamples
    from mel2mel.web.site import SOUNDFONT_CLIPS, export_site

    files = export_site(args.directory, model=args.model, map_resolution=args.map_resolution,
                        soundfont_samples=args.soundfont_samples, progress=True,
                        force=args.force)  # fmt: skip
    clips = [size for name, size in files.items() if name.startswith(f"data/{SOUNDFONT_CLIPS}/")]
    if args.soundfont_samples and not SoundFontSamples.available():
        print("note: FluidSynth is not installed (apt install fluidsynth): the site's space "
              "gets no SoundFont samples")  # fmt: skip
    if clips:
        print(f"{len(clips)} SoundFont clips of the reference passage ({sum(clips) / 1e6:.2f} MB)")
    total = sum(files.values())
    print(f"wrote {len(files)} files ({total / 1e6:.1f} MB) to {args.directory}")
    print(f"serve it with: python -m http.server -d {args.directory} 8000")
    return 0
