"""``mel2mel train <model>`` and ``mel2mel export <model>``: training and export commands.

Every model kind (acoustic, vocoder, texture) has one ``add_train_KIND`` and one
``add_export_KIND`` here, called by :func:`register`; a new model kind adds its pair and two
lines in :func:`register`. The training loops and exporters live in :mod:`mel2mel.train`; torch
and the loops are imported inside the command functions so ``mel2mel --help`` stays fast.

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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mel2mel.cli.common import add_force_argument, add_output_argument
from mel2mel.cli.export import add_export_onnx, add_export_site
from mel2mel.errors import UserError
from mel2mel.fileio import refuse_overwrite

if TYPE_CHECKING:
    from mel2mel.train.config import TextureRunConfig, VocoderRunConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mel2mel train MODEL`` and ``mel2mel export MODEL`` for every model kind."""
    train = subparsers.add_parser(
        "train", help="train a model", description="Train a model of mel2mel."
    )
    train_sub = train.add_subparsers(dest="model", metavar="MODEL", required=True)
    add_train_acoustic(train_sub)
    add_train_vocoder(train_sub)
    add_train_texture(train_sub)
    add_train_gains(train_sub)
    add_train_contrast(train_sub)
    add_train_beats(train_sub)
    export = subparsers.add_parser(
        "export",
        help="export a trained checkpoint as safetensors + JSON",
        description="Strip a training checkpoint down to safetensors weights + a JSON config.",
    )
    export_sub = export.add_subparsers(dest="model", metavar="MODEL", required=True)
    add_export_acoustic(export_sub)
    add_export_vocoder(export_sub)
    add_export_texture(export_sub)
    add_export_onnx(export_sub)  # the in-page models and the static site (cli/export.py)
    add_export_site(export_sub)


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
    add_output_argument(p, "run directory", required=True)
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
        args.output,
        load_config(),
        resume=args.resume,
        stop_at=args.stop_at,
        device=args.device,
        progress=not args.no_progress,
    )
    cleanup_distributed()
    return 130 if result.interrupted else 0


def run_train_acoustic(args: argparse.Namespace) -> int:
    from mel2mel.train.acoustic_loop import train_acoustic

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
    add_output_argument(p, "output directory (created)", required=True)
    p.add_argument("--name", default=name, help=f"file name stem (default: {name_help})")
    add_force_argument(p, "overwrite an existing export")


def run_export_acoustic(args: argparse.Namespace) -> int:
    from mel2mel.models.export import export_paths
    from mel2mel.train.checkpoint import export_checkpoint

    if args.output.exists() and not args.output.is_dir():
        raise UserError(f"{args.output} exists and is not a directory")
    prefix = args.output / args.name
    weights, desc = export_paths(prefix)
    refuse_overwrite((weights, desc), args.force)
    weights, desc = export_checkpoint(args.checkpoint, prefix)
    print(f"wrote {weights} and {desc}")
    return 0


def add_fitted_arguments(p: argparse.ArgumentParser, what: str, flag: str) -> None:
    """The options of a table fitted on a split without gradient (``train gains``, ``train
    contrast``): the model, the data, which items, the strengths and the output."""
    p.add_argument("--model", required=True, type=Path, help="acoustic export (dir or prefix)")
    p.add_argument("--data", type=Path, help="dataset folder (manifest.json) to fit on")
    p.add_argument("--split", default="train", help="split measured (train)")
    p.add_argument("--items", type=int, help="items per instrument (default: all)")
    p.add_argument("--seed", type=int, default=0, help="which items are drawn (0)")
    p.add_argument(
        "--strength", action="append", metavar="[INSTRUMENT=]S", default=[],
        help=f"the {what}' strength for every instrument (1), or one instrument's (repeatable, "
        "e.g. --strength 'String Ensemble=0'; the others get the plain value); choose them on "
        f"the valid split, e.g. with benchmarks/eval_transcription.py --split valid {flag} S",
    )  # fmt: skip
    add_output_argument(p, "output directory or prefix of the export", required=True)
    add_force_argument(p, "overwrite an existing export")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_train_gains(sub: argparse._SubParsersAction) -> None:
    """``mel2mel train gains``."""
    p = sub.add_parser(
        "gains",
        help="fit an acoustic model's detail gains (no gradient, minutes)",
        description="Measure how much flatter across mel bins the model's predictions are than "
        "FluidSynth's on a split (train by default) and write the model again with a gain per "
        "instrument and bin that the synthesizer applies (docs/MODELS.md, 'Detail gains'). "
        "The weights are copied unchanged, so a texture post-net trained on them still fits. "
        "Without --data, the model's fitted gains are kept and only --strength is set; a new "
        "fit starts every instrument at strength 1 (or --strength).",
    )
    add_fitted_arguments(p, "gains", "--sharpen")
    p.set_defaults(func=run_train_gains)


def add_train_contrast(sub: argparse._SubParsersAction) -> None:
    """``mel2mel train contrast``."""
    p = sub.add_parser(
        "contrast",
        help="fit an acoustic model's note contrast (no gradient, minutes)",
        description="Measure, on a split (train by default), how far the model's mel (with its "
        "detail gains) lies from FluidSynth's in the partials of struck notes, of held notes "
        "and between them, by the time since the nearest strike, and write the model again "
        "with those corrections, which the synthesizer applies (docs/MODELS.md, 'Note "
        "contrast'). The weights are copied unchanged. Without --data, the fitted table is "
        "kept and only --strength is set; a new fit starts every instrument at strength 1 "
        "(or --strength).",
    )
    add_fitted_arguments(p, "contrast", "--contrast")
    p.set_defaults(func=run_train_contrast)


def run_fitted(args: argparse.Namespace, attribute: str, fit: Any) -> int:
    """Fit ``model.<attribute>`` with ``fit(model, data, split=, items=, seed=, progress=)`` (a
    table with ``with_strengths``, ``names`` and ``strengths``), or set the strengths of the
    model's own, and export the model with it."""
    from mel2mel.models.blend import values_by_instrument
    from mel2mel.models.export import export_paths, load_acoustic, save_pretrained

    what = attribute.replace("_", " ")
    if args.items is not None and args.items < 1:
        raise UserError("--items must be >= 1")
    if args.data is None and not args.strength:
        raise UserError(f"give --data to fit the {what}, or --strength to set its strengths")
    plain, chosen = parse_strengths(args.strength)
    refuse_overwrite(export_paths(args.output), args.force)
    model = load_acoustic(args.model)
    table = getattr(model, attribute)
    if args.data is not None:
        table = fit(
            model, args.data, split=args.split, items=args.items, seed=args.seed,
            progress=not args.no_progress,
        )  # fmt: skip
    elif table is None:
        raise UserError(f"{args.model} has no {what} to set strengths on: fit it first")
    if args.strength:
        n = len(model.instruments)
        table = table.with_strengths(values_by_instrument(n, model.instrument_index, plain, chosen))
        pairs = zip(table.names, table.strengths, strict=True)
        print("strengths: " + ", ".join(f"{name} {v:g}" for name, v in pairs))
    setattr(model, attribute, table)
    print(f"wrote {save_pretrained(model, args.output)[1]}")
    return 0


def run_train_gains(args: argparse.Namespace) -> int:
    from mel2mel.evaluation.detail_gains import fit_detail_gains

    def fit(*a: Any, **kw: Any) -> Any:
        gains, detail = fit_detail_gains(*a, **kw)
        for name, row, (truth, pred) in zip(gains.names, gains.gains, detail, strict=True):
            print(f"{name}: detail {truth:.2f} dB, predicted {pred:.2f} dB; "
                  f"gains {min(row):.2f}-{max(row):.2f}")  # fmt: skip
        return gains

    return run_fitted(args, "detail_gains", fit)


def run_train_contrast(args: argparse.Namespace) -> int:
    from mel2mel.evaluation.note_contrast import contrast_summary, fit_note_contrast

    def fit(*a: Any, **kw: Any) -> Any:
        contrast, counts = fit_note_contrast(*a, **kw)
        for line in contrast_summary(contrast, counts):
            print(line)
        return contrast

    return run_fitted(args, "note_contrast", fit)


def add_train_beats(sub: argparse._SubParsersAction) -> None:
    """``mel2mel train beats``."""
    p = sub.add_parser(
        "beats",
        help="measure the beats of each instrument's detuned layers (no gradient, seconds)",
        description="Play held notes of every instrument of the model with FluidSynth (the "
        "dataset's SoundFonts, programs and render settings), find the instruments whose "
        "harmonics beat as two layers a few cents apart do, and write the model again with "
        "their detune, depth and phases, which the synthesizer draws into the mel "
        "(docs/MODELS.md, 'Note beats'). The weights are copied unchanged.",
    )
    p.add_argument("--model", required=True, type=Path, help="acoustic export (dir or prefix)")
    p.add_argument("--data", required=True, type=Path, help="dataset folder (manifest.json)")
    add_output_argument(p, "output directory or prefix of the export", required=True)
    add_force_argument(p, "overwrite an existing export")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train_beats)


def run_train_beats(args: argparse.Namespace) -> int:
    import math

    from mel2mel.evaluation.note_beats import fit_note_beats
    from mel2mel.models.export import export_paths, load_acoustic, save_pretrained

    refuse_overwrite(export_paths(args.output), args.force)
    model = load_acoustic(args.model)
    model.note_beats, fits = fit_note_beats(model, args.data, progress=not args.no_progress)
    for name, fit in zip(model.note_beats.names, fits, strict=True):
        agree = f"({fit.agreement:.0%} of {fit.moving} moving harmonics agree)"
        if fit.depth > 0 and fit.tremolo:
            print(f"{name}: tremolo, {fit.tremolo:.2f} Hz, depth {fit.depth:.2f} {agree}")
        elif fit.depth > 0:
            cents = 1200 * math.log2(1 + fit.detune)
            print(f"{name}: beats, detune {cents:.2f} cents, depth {fit.depth:.2f} {agree}")
        elif fit.tremolo:
            print(f"{name}: a tremolo at {fit.tremolo:.2f} Hz, not in step with the notes: none")
    beating = sum(f.depth > 0 for f in fits)
    written = save_pretrained(model, args.output)[1]
    print(f"{beating} of {len(fits)} instruments beat or pulse; wrote {written}")
    return 0


# -- vocoders ---------------------------------------------------------------------------


def add_train_vocoder(sub: argparse._SubParsersAction) -> None:
    """``mel2mel train vocoder``."""
    p = sub.add_parser(
        "vocoder",
        help="train a vocoder (log-mel -> audio) on a dataset's audio",
        description="Train the fast vocoder or WaveNet on crops of a dataset built by "
        "'mel2mel data build'. A run directory with a checkpoint is resumed automatically.",
    )
    p.add_argument("--kind", choices=["fast", "wavenet"], help="default: the config's, or fast")
    add_run_arguments(p, sections="kind, model or train")
    p.set_defaults(func=run_train_vocoder)


def load_vocoder_run_config(
    path: Path | None, overrides: list[str], kind: str | None
) -> VocoderRunConfig:
    """A :class:`VocoderRunConfig` from a YAML file, ``--set`` overrides and ``--kind``."""
    from mel2mel.train.config import VocoderRunConfig, read_config_mapping

    data = read_config_mapping(path) if path is not None else {}
    data = apply_overrides(data, overrides, sections=("model", "train"))
    if kind is not None:
        if data.get("kind", kind) != kind and path is not None:
            raise UserError(f"--kind {kind} contradicts kind: {data['kind']} in {path}")
        data["kind"] = kind
    try:
        return VocoderRunConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise UserError(f"invalid vocoder config{f' {path}' if path else ''}: {err}") from err


def run_train_vocoder(args: argparse.Namespace) -> int:
    from mel2mel.train.vocoder_loop import train_vocoder

    return run_training(
        args,
        train_vocoder,
        lambda: load_vocoder_run_config(args.config, args.overrides, args.kind),
    )


def add_export_vocoder(sub: argparse._SubParsersAction) -> None:
    """``mel2mel export vocoder``."""
    p = sub.add_parser(
        "vocoder",
        help="export a vocoder checkpoint",
        description="Write <out>/<name>.safetensors + <out>/<name>.json from a vocoder "
        "checkpoint or run directory. 'mel2mel vocode' and the synthesizer load the shipped "
        "ones from mel2mel/pretrained/{fast_vocoder,wavenet}.*.",
    )
    add_export_arguments(p, None, "fast_vocoder or wavenet")
    p.set_defaults(func=run_export_vocoder)


def run_export_vocoder(args: argparse.Namespace) -> int:
    from mel2mel.train.vocoder_loop import export_vocoder_checkpoint

    weights, json_path = export_vocoder_checkpoint(
        args.checkpoint, args.output, name=args.name, force=args.force
    )
    print(f"wrote {weights} and {json_path}")
    return 0


# -- texture post-net ------------------------------------------------------------------


def add_train_texture(sub: argparse._SubParsersAction) -> None:
    """``mel2mel train texture``."""
    p = sub.add_parser(
        "texture",
        help="train the texture post-net of an acoustic model (adversarial)",
        description="Train the texture post-net on a dataset built by 'mel2mel data build': "
        "the frozen acoustic model (train.acoustic, default the shipped one) predicts every "
        "train and valid item once (cached in the run directory), then the post-net learns to "
        "give those mels the texture of the real ones. A run directory with a checkpoint is "
        "resumed automatically.",
    )
    add_run_arguments(p, sections="model or train")
    p.set_defaults(func=run_train_texture)


def load_texture_run_config(path: Path | None, overrides: list[str]) -> TextureRunConfig:
    """A :class:`TextureRunConfig` from a YAML file and ``--set`` overrides."""
    from mel2mel.train.config import TextureRunConfig, read_config_mapping

    data = read_config_mapping(path) if path is not None else {}
    data = apply_overrides(data, overrides, sections=("model", "train"))
    try:
        return TextureRunConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise UserError(f"invalid texture config{f' {path}' if path else ''}: {err}") from err


def run_train_texture(args: argparse.Namespace) -> int:
    from mel2mel.train.texture_loop import train_texture

    return run_training(
        args, train_texture, lambda: load_texture_run_config(args.config, args.overrides)
    )


def add_export_texture(sub: argparse._SubParsersAction) -> None:
    """``mel2mel export texture``."""
    p = sub.add_parser(
        "texture",
        help="export a texture post-net checkpoint beside its acoustic model",
        description="Write <out>/<name>_texture.safetensors + .json from a texture checkpoint "
        "or run directory. The synthesizer uses <dir>/<name>_texture.* with the acoustic "
        "model <dir>/<name>.* it was trained on.",
    )
    add_export_arguments(p, "acoustic", "acoustic, the acoustic model's stem")
    p.add_argument(
        "--strength", action="append", metavar="[INSTRUMENT=]S", default=[],
        help="the texture strength synthesizers use by default (1), or one instrument's "
        "(repeatable, e.g. --strength 0.4 --strength 'Church Organ=0.85'; the others get the "
        "plain value); choose them on the valid split, e.g. with "
        "benchmarks/eval_transcription.py --split valid --texture S",
    )  # fmt: skip
    p.set_defaults(func=run_export_texture)


def parse_strengths(values: list[str]) -> tuple[float, dict[str, float]]:
    """``--strength`` values -> (the plain strength, {instrument: strength}), each 0..4."""
    plain, chosen = 1.0, {}
    for text in values:
        name, _, number = text.rpartition("=")
        try:
            value = float(number)
        except ValueError:
            raise UserError(f"--strength wants S or INSTRUMENT=S, got {text!r}") from None
        if not 0.0 <= value <= 4.0:
            raise UserError(f"--strength must be between 0 and 4, got {text!r}")
        if name.strip():
            chosen[name.strip()] = value
        else:
            plain = value
    return plain, chosen


def run_export_texture(args: argparse.Namespace) -> int:
    from mel2mel.train.texture_loop import export_texture_checkpoint

    plain, chosen = parse_strengths(args.strength)
    weights, desc = export_texture_checkpoint(
        args.checkpoint, args.output, name=args.name, force=args.force, strength=plain,
        per_instrument=chosen,
    )  # fmt: skip
    print(f"wrote {weights} and {desc}")
    return 0
