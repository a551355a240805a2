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


def _leaf_parsers(parser, prefix=()):
    import argparse

    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    for name, sub in subs[0].choices.items():
        yield from _leaf_parsers(sub, (*prefix, name))


def test_outputs_are_spelled_one_way():
    """Every command that writes a named output takes -o/--output; the old --out is still
    read but hidden from --help (one release)."""
    writers = []
    for path, parser in _leaf_parsers(build_parser()):
        flags = {s: a for a in parser._actions for s in a.option_strings}
        if "--out" in flags or "--output" in flags:
            writers.append(" ".join(path))
            assert flags["-o"] is flags["--output"], path
            assert flags["--out"].dest == "output" and "--out " not in parser.format_help()
    assert {"render", "mel", "vocode", "data build", "train acoustic", "export vocoder"} <= set(
        writers
    )
    assert {"evaluate acoustic", "plot timbre-space", "plot space3d"} <= set(writers)


def test_old_spellings_still_work(tmp_path):
    args = build_parser().parse_args(["export", "acoustic", "run", "--out", str(tmp_path)])
    assert args.output == tmp_path
    args = build_parser().parse_args(["mel", "x.mid", "--embedding=0.1,0.2"])
    assert args.timbre == "0.1,0.2"


def test_force_is_spelled_one_way():
    for path, parser in _leaf_parsers(build_parser()):
        flags = {s: a for a in parser._actions for s in a.option_strings}
        if "-f" in flags or "--force" in flags:
            assert flags["-f"] is flags["--force"] and flags["-f"].dest == "force", path
