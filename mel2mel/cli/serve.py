"""``mel2mel serve``: the web app (``docs/WEB.md``) on uvicorn.

``mel2mel serve --host 127.0.0.1 --port 8000`` loads the shipped models (or ``--model``),
computes the timbre map in the background and serves the page at ``http://HOST:PORT/``.
The limits that bound its memory must fit under ``--max-rss-mb`` (checked before anything
loads); SIGTERM or Ctrl-C ends every stream at once and stops the server.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mel2mel import validate
from mel2mel.cli.common import add_server_arguments
from mel2mel.errors import UserError, require


def run_serve(args: argparse.Namespace) -> int:
    """Execute ``mel2mel serve``; returns the exit status."""
    for module in ("fastapi", "uvicorn", "python_multipart"):
        require(module, "web")
    validate.integer(args.port, "--port", 1, 65535)
    validate.integer(args.workers, "--workers", 1, 64)
    validate.integer(args.queue, "--queue", 0, 10_000)
    validate.threads(args.threads)
    validate.integer(args.max_upload_kb, "--max-upload-kb", 1, 1 << 20)
    validate.number(args.max_render_seconds, "--max-render-seconds", 1.0, validate.MAX_SECONDS)
    validate.integer(args.map_resolution, "--map-resolution", 2, 401)
    validate.integer(args.max_rss_mb, "--max-rss-mb", 256, 1 << 20)
    from mel2mel.web.config import MB, WebConfig

    config = WebConfig(
        max_concurrent_renders=args.workers,
        max_queued_renders=args.queue,
        max_upload_bytes=args.max_upload_kb * 1024,
        max_render_seconds=args.max_render_seconds,
        max_rss_bytes=args.max_rss_mb * MB,
    )
    try:
        config.check_memory()
    except ValueError as err:
        raise UserError(f"--max-rss-mb: {err}") from None
    import torch

    from mel2mel.synthesizer import Synthesizer
    from mel2mel.web.app import create_app
    from mel2mel.web.maps import Space
    from mel2mel.web.server import run

    torch.set_num_threads(args.threads)
    synth = Synthesizer.from_pretrained(args.model, vocoder="griffinlim")
    space = Space(args.space, args.space_model)
    app = create_app(synth, config=config, space=space, map_resolution=args.map_resolution)
    print(f"mel2mel: serving on http://{args.host}:{args.port}/ (Ctrl-C to stop)", flush=True)
    run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mel2mel serve``."""
    p = subparsers.add_parser(
        "serve",
        help="run the web app: timbre map, 3-D instrument space, MIDI upload and playback",
        description="Serve the mel2mel page and its JSON/audio API with uvicorn. Everything "
        "is served locally (no CDN). Needs: pip install 'mel2mel[web]'.",
    )
    add_server_arguments(p)
    p.add_argument("--model", type=Path, help="export, or 'paper' (default: pretrained)")
    p.add_argument("--space", type=Path, help="space100.json (default: pretrained)")
    p.add_argument("--space-model", type=Path, help="its 10-D acoustic model (default: pretrained)")
    p.add_argument("--workers", type=int, default=2, help="renders run at once (2)")
    p.add_argument("--queue", type=int, default=24, help="renders that may wait (24)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per render (1)")
    p.add_argument("--max-upload-kb", type=int, default=1024, help="largest MIDI file (1024 KB)")
    p.add_argument(
        "--max-render-seconds", type=float, default=900.0, help="longest render range (900 s)"
    )
    p.add_argument("--map-resolution", type=int, default=41, help="timbre map cells per side")
    p.add_argument(
        "--max-rss-mb", type=int, default=1536,
        help="memory ceiling the limits must fit under (1536 MB; see docs/WEB.md)",
    )  # fmt: skip
    p.set_defaults(func=run_serve)
