"""``mel2mel listen serve|results``: the blind listening test of a gallery (docs/LISTENING.md).

``mel2mel listen serve SITE --db ratings.sqlite`` serves the test page over a gallery folder
(``mel2mel gallery build``) and stores every rating in the database as it is given;
``mel2mel listen results ratings.sqlite`` prints the MOS per configuration and per instrument
with 95 % confidence intervals beside the paper's, and ``-o DIR`` writes ``ratings.csv`` and
``summary.csv``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mel2mel import validate
from mel2mel.cli.common import add_force_argument, add_output_argument, add_server_arguments
from mel2mel.errors import require
from mel2mel.fileio import atomic_write_text, refuse_overwrite


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mel2mel listen`` with its subcommands ``serve`` and ``results``."""
    p = subparsers.add_parser("listen", help="a blind MOS listening test over a gallery")
    sub = p.add_subparsers(dest="listen_command", metavar="COMMAND", required=True)
    add_listen_serve(sub)
    add_listen_results(sub)


def add_listen_serve(sub: argparse._SubParsersAction) -> None:
    """``mel2mel listen serve``."""
    p = sub.add_parser(
        "serve",
        help="serve the listening-test page over a gallery folder",
        description="Serve a blind MOS test (1-5, as the paper) of a gallery's clips: a "
        "training phase, then a balanced random set of clips per listener with hidden "
        "attention checks; every rating is stored in the SQLite database as it is given. "
        "Needs: pip install 'mel2mel[web]'.",
    )
    p.add_argument("site", type=Path, help="gallery folder (with gallery.json)")
    p.add_argument("--db", type=Path, required=True, help="SQLite database (created if absent)")
    add_server_arguments(p)
    p.add_argument("--trials", type=int, default=40, help="test clips per listener (40)")
    p.add_argument("--training", type=int, default=4, help="training clips, not counted (4)")
    p.add_argument(
        "--min-listen",
        type=float,
        default=8.0,
        metavar="S",
        help="seconds of a clip heard before it can be rated, or its end (8)",
    )
    p.add_argument(
        "--configs",
        metavar="A,B",
        help="only these configurations (the reference "
        "and the anchor are always kept; default: all)",
    )
    p.add_argument("--results-key", metavar="K", help="the results page needs ?key=K")
    p.add_argument("--session", metavar="NAME", help="label stored with each rating (the date)")
    p.set_defaults(func=run_listen_serve)


def run_listen_serve(args: argparse.Namespace) -> int:
    """Execute ``mel2mel listen serve``; returns the exit status."""
    for module in ("fastapi", "uvicorn"):
        require(module, "web")
    validate.integer(args.port, "--port", 1, 65535)
    validate.integer(args.trials, "--trials", 1, 10_000)
    validate.integer(args.training, "--training", 0, 100)
    validate.number(args.min_listen, "--min-listen", 0.0, 600.0)
    from mel2mel.listening.site import load_site
    from mel2mel.web.listening import create_listening_app
    from mel2mel.web.server import run

    site = load_site(args.site)
    if args.configs is not None:
        site = site.select([n.strip() for n in args.configs.split(",") if n.strip()])
    app = create_listening_app(
        site,
        args.db,
        trials=args.trials,
        training=args.training,
        min_listen_s=args.min_listen,
        results_key=args.results_key,
        session=args.session,
    )
    key = f"?key={args.results_key}" if args.results_key else ""
    print(
        f"mel2mel: listening test on http://{args.host}:{args.port}/ (results: /results{key}; "
        f"ratings in {args.db}; Ctrl-C to stop)",
        flush=True,
    )
    run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def add_listen_results(sub: argparse._SubParsersAction) -> None:
    """``mel2mel listen results``."""
    p = sub.add_parser(
        "results",
        help="MOS with 95 %% confidence intervals per configuration and instrument",
        description="Print the MOS of the stored test ratings per configuration and per "
        "(configuration, instrument), with 95 % t-distribution confidence intervals and the "
        "paper's scores beside them. Listeners who failed the attention checks (reference "
        "below 4 or anchor above 2 on average) are left out unless --include-flagged.",
    )
    p.add_argument("db", type=Path, help="the SQLite database of 'mel2mel listen serve'")
    add_output_argument(p, "folder for ratings.csv and summary.csv", metavar="DIR")
    add_force_argument(p, "overwrite existing CSV files")
    p.add_argument(
        "--include-flagged",
        action="store_true",
        help="count listeners who failed the attention checks",
    )
    p.add_argument("--site", type=Path, help="gallery folder, for the configurations' labels")
    p.set_defaults(func=run_listen_results)


def run_listen_results(args: argparse.Namespace) -> int:
    """Execute ``mel2mel listen results``; returns the exit status."""
    from mel2mel.listening.report import format_summary, ratings_csv, summary_csv
    from mel2mel.listening.site import load_site
    from mel2mel.listening.stats import summarize
    from mel2mel.listening.store import RatingStore

    outs = [args.output / "ratings.csv", args.output / "summary.csv"] if args.output else []
    refuse_overwrite(outs, args.force)
    with RatingStore(args.db, create=False) as store:
        ratings = store.ratings()
        labels = store.config_labels()
    if args.site is not None:
        labels.update({n: c.label for n, c in load_site(args.site).configs.items()})
    summary = summarize(ratings, labels=labels, include_flagged=args.include_flagged)
    print(format_summary(summary))
    if outs:
        args.output.mkdir(parents=True, exist_ok=True)
        atomic_write_text(outs[0], ratings_csv(ratings, summary.flagged))
        atomic_write_text(outs[1], summary_csv(summary))
        print(f"wrote {outs[0]} and {outs[1]}")
    return 0
