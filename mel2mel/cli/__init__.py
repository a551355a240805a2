"""The ``mel2mel`` command line: thin subcommands over the library.

One module here per command group; each has ``register(subparsers)`` that adds its command
(and any subcommands) and the functions that run them. :data:`COMMAND_MODULES` lists them in
``--help`` order: a new command is a new module here plus one line in that list. No library
module parses arguments. This file is the single place where user errors become one clear line
on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import warnings
from collections.abc import Sequence

from mel2mel.errors import UserError, one_line
from mel2mel.midi import MidiError
from mel2mel.version import __version__

# The command groups, each a module of this package with ``register(subparsers)``.
COMMAND_MODULES = (
    "data",
    "train",
    "evaluate",
    "mel",
    "vocode",
    "render",
    "plot",
    "timbre",
    "gallery",
    "serve",
    "listen",
)

# Commands that write through temporary files and clean up when SIGTERM/SIGHUP unwind them.
# Others keep their own handling (serve: uvicorn's; train: its checkpointing; data: workers).
UNWIND_ON_TERMINATION = frozenset({"render", "vocode", "mel", "timbre", "gallery"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mel2mel", description="Neural music synthesis with a steerable timbre space."
    )
    parser.add_argument("--version", action="version", version=f"mel2mel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"mel2mel: warning: {message}\n"


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM or SIGHUP, so that every ``with``/``finally``
    unwinds (temporary files are removed) as it does for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def _termination_unwinds():
    """SIGTERM and SIGHUP raise :class:`Terminated` while a command runs (main thread only;
    the previous handlers come back afterwards)."""
    names = [n for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]
    old = {}
    try:
        for name in names:
            sig = getattr(signal, name)
            old[sig] = signal.signal(sig, _terminate)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    warnings.formatwarning = _format_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        unwind = args.command in UNWIND_ON_TERMINATION
        with _termination_unwinds() if unwind else contextlib.nullcontext():
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("mel2mel: interrupted", file=sys.stderr)
        return 130
    except Terminated as stop:
        print(f"mel2mel: terminated by {signal.Signals(stop.signum).name}", file=sys.stderr)
        return 128 + stop.signum
    except (UserError, MidiError, OSError) as err:
        # OSError covers missing inputs and unwritable outputs; anything else is a bug.
        print(f"mel2mel: error: {one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
