"""The command line as a whole: start-up cost and help for every command."""

from __future__ import annotations

import subprocess
import sys

from mel2mel.cli import COMMAND_MODULES, build_parser


def test_parser_builds_without_importing_torch():
    # `mel2mel --help` and `--version` must stay instant: command modules import torch (and
    # the model code) inside their command functions only.
    code = (
        "import sys, mel2mel.cli; mel2mel.cli.build_parser(); "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))[:3])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"torch imported at start-up: {out.stdout}"


def test_every_command_has_help(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert len(commands) >= len(COMMAND_MODULES)
    for name, sub in commands.items():
        assert sub.format_help().startswith("usage: mel2mel " + name)
