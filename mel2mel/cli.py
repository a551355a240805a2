"""The ``mel2mel`` command line: thin subcommands over the package.

Each area registers its own subcommands (``register(subparsers)`` in its ``cli`` module), so this
file only wires them together and is the single place where user errors become one clear line
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

from mel2mel import __version__
from mel2mel.errors import UserError, one_line
from mel2mel.midi import MidiError

# Modules that define ``register(subparsers)``; each adds its own subcommands.
COMMAND_MODULES = (
    "mel2mel.data.cli",
    "mel2mel.train.cli",
    "mel2mel.evaluate",
    "mel2mel.mel_cli",
    "mel2mel.vocode_cli",
    "mel2mel.render_cli",
    "mel2mel.plot_cli",
    "mel2mel.timbre_cli",
    "mel2mel.space3d",
    "mel2mel.serve_cli",
)

# Commands that write through temporary files and clean up when SIGTERM/SIGHUP unwind them.
# Others keep their own handling (serve: uvicorn's; train: its checkpointing; data: workers).
UNWIND_ON_TERMINATION = frozenset({"render", "vocode", "mel", "timbre"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mel2mel", description="Neural music synthesis with a steerable timbre space."
    )
    parser.add_argument("--version", action="version", version=f"mel2mel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
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
