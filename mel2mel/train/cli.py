"""``mel2mel train <model>`` and ``mel2mel export <model>``: training and export commands.

Each model kind adds its own subcommand. The lists :data:`TRAIN_COMMANDS` and
:data:`EXPORT_COMMANDS` name ``"module:function"`` hooks, each called with the subparsers
object of ``train`` (or ``export``) to add one subcommand; a vocoder adds
``"mel2mel.train.vocoder:add_train_vocoder"`` here without touching the acoustic code.
Heavy imports happen inside the command functions so ``mel2mel --help`` stays fast.

Examples
--------
::

    mel2mel train acoustic --data data/paper10 --config configs/acoustic.yaml --out runs/a1
    nohup mel2mel train acoustic --data data/paper10 --config configs/acoustic.yaml \\
        --out runs/a1 --no-progress > runs/a1.log 2>&1 &
    torchrun --nproc_per_node 2 -m mel2mel train acoustic --data ... --out runs/ddp
    mel2mel export acoustic runs/a1 -o mel2mel/pretrained
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

from mel2mel.errors import UserError

TRAIN_COMMANDS: tuple[str, ...] = (
    "mel2mel.train.cli:add_train_acoustic",
    "mel2mel.train.vocoder:add_train_vocoder",
    "mel2mel.train.texture:add_train_texture",
)
EXPORT_COMMANDS: tuple[str, ...] = (
    "mel2mel.train.cli:add_export_acoustic",
    "mel2mel.train.vocoder:add_export_vocoder",
    "mel2mel.train.texture:add_export_texture",
)


def _hook(spec: str) -> Any:
    module, _, func = spec.partition(":")
    return getattr(importlib.import_module(module), func)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` and ``export`` commands with their per-model subcommands."""
    train = subparsers.add_parser(
        "train", help="train a model", description="Train a model of mel2mel."
    )
    train_sub = train.add_subparsers(dest="model", metavar="MODEL", required=True)
    for spec in TRAIN_COMMANDS:
        _hook(spec)(train_sub)
    export = subparsers.add_parser(
        "export",
        help="export a trained checkpoint as safetensors + JSON",
        description="Strip a training checkpoint down to safetensors weights + a JSON config.",
    )
    export_sub = export.add_subparsers(dest="model", metavar="MODEL", required=True)
    for spec in EXPORT_COMMANDS:
        _hook(spec)(export_sub)


def add_train_acoustic(sub: argparse._SubParsersAction) -> None:
    """``mel2mel train acoustic``."""
    p = sub.add_parser(
        "acoustic",
        help="train the Mel2Mel acoustic model (piano roll -> log-mel)",
        description="Train Mel2Mel on a dataset built by 'mel2mel data'. A run directory with a "
        "checkpoint is resumed automatically. Under torchrun every process trains on its shard.",
    )
    add_run_arguments(p, sections="model or train")
    p.set_defaults(func=run_train_acoustic)


def add_run_arguments(p: argparse.ArgumentParser, sections: str) -> None:
    """The options every ``mel2mel train MODEL`` command shares."""
    p.add_argument("--data", required=True, type=Path, help="dataset root (with manifest.json)")
    p.add_argument("--config", type=Path, help="YAML run config (default: built-in defaults)")
    p.add_argument("--out", required=True, type=Path, help="run directory")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help=f"override a config value of {sections}, e.g. --set train.steps=100 (repeatable)",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--resume", action="store_true", default=None, help="require a checkpoint to resume"
    )
    group.add_argument(
        "--no-resume", dest="resume", action="store_false", help="refuse to resume (fresh run)"
    )
    p.add_argument("--stop-at", type=int, help="end this session at this step (resumable)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda if available")
    p.add_argument("--threads", type=int, help="torch intra-op threads per process")
    p.add_argument(
        "--no-progress", action="store_true", help="log lines instead of a progress bar (nohup)"
    )


def apply_overrides(
    data: dict[str, Any], overrides: list[str], sections: tuple[str, ...] = ("model", "train")
) -> dict[str, Any]:
    """Apply ``--set SECTION.KEY=VALUE`` items (values parsed as YAML) to a config mapping."""
    from mel2mel.errors import require

    require("yaml", "train")
    import yaml

    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or section not in sections:
            expected = " or ".join(f"{s}.KEY=VALUE" for s in sections)
            raise UserError(f"--set {item!r}: expected {expected}")
        data.setdefault(section, {})
        if data[section] is None:
            data[section] = {}
        data[section][name] = yaml.safe_load(value)
    return data


def load_config_with_overrides(path: Path | None, overrides: list[str]) -> Any:
    """The :class:`~mel2mel.train.config.RunConfig` of a YAML file plus ``--set`` overrides."""
    from mel2mel.train.config import RunConfig, read_config_mapping

    data = read_config_mapping(path) if path is not None else {}
    try:
        return RunConfig.from_dict(apply_overrides(data, overrides))
    except (TypeError, ValueError) as err:
        raise UserError(f"invalid config{f' {path}' if path else ''}: {err}") from err


def run_training(args: argparse.Namespace, train: Any, load_config: Any) -> int:
    """The body every ``mel2mel train MODEL`` shares: threads, dataset check, config, one
    session of ``train(data, out, config, ...)``; exit status 130 if it was interrupted."""
    import torch

    from mel2mel.train.distributed import cleanup_distributed

    if args.threads:
        torch.set_num_threads(args.threads)
    if not (args.data / "manifest.json").is_file():
        raise UserError(f"{args.data} is not a dataset (no manifest.json); build one first")
    result = train(
        args.data,
        args.out,
        load_config(),
        resume=args.resume,
        stop_at=args.stop_at,
        device=args.device,
        progress=not args.no_progress,
    )
    cleanup_distributed()
    return 130 if result.interrupted else 0


def run_train_acoustic(args: argparse.Namespace) -> int:
    from mel2mel.train.loop import train_acoustic

    return run_training(
        args, train_acoustic, lambda: load_config_with_overrides(args.config, args.overrides)
    )


def add_export_acoustic(sub: argparse._SubParsersAction) -> None:
    """``mel2mel export acoustic``."""
    p = sub.add_parser(
        "acoustic",
        help="export an acoustic-model checkpoint",
        description="Write <out>/<name>.safetensors + <out>/<name>.json from a checkpoint or "
        "run directory, without optimizer state. 'mel2mel mel' and the synthesizer load the "
        "default model from mel2mel/pretrained/acoustic.*.",
    )
    add_export_arguments(p, "acoustic", "acoustic")
    p.set_defaults(func=run_export_acoustic)


def add_export_arguments(p: argparse.ArgumentParser, name: str | None, name_help: str) -> None:
    """The arguments every ``mel2mel export`` subcommand takes."""
    p.add_argument("checkpoint", type=Path, help="checkpoint file or run directory")
    p.add_argument("-o", "--out", required=True, type=Path, help="output directory (created)")
    p.add_argument("--name", default=name, help=f"file name stem (default: {name_help})")
    p.add_argument("-f", "--force", action="store_true", help="overwrite an existing export")


def run_export_acoustic(args: argparse.Namespace) -> int:
    from mel2mel.models.io import export_paths
    from mel2mel.train.checkpoint import export_checkpoint

    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"{args.out} exists and is not a directory")
    prefix = args.out / args.name
    weights, desc = export_paths(prefix)
    existing = [p for p in (weights, desc) if p.exists()]
    if existing and not args.force:
        raise UserError(f"{existing[0]} exists; pass -f to overwrite")
    weights, desc = export_checkpoint(args.checkpoint, prefix)
    print(f"wrote {weights} and {desc}")
    return 0
