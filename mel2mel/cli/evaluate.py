"""``mel2mel evaluate acoustic|vocoder``: the paper-style reports of :mod:`mel2mel.evaluation`."""

from __future__ import annotations

import argparse
from pathlib import Path

from mel2mel import validate
from mel2mel.cli.common import add_force_argument, add_output_argument
from mel2mel.data.corpus import PIECE_SETS
from mel2mel.errors import UserError
from mel2mel.fileio import refuse_overwrite


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mel2mel evaluate MODEL`` with one subcommand per model kind."""
    p = subparsers.add_parser("evaluate", help="evaluate a trained model on the test split")
    sub = p.add_subparsers(dest="model_kind", metavar="MODEL", required=True)
    add_evaluate_acoustic(sub)
    add_evaluate_vocoder(sub)
    add_evaluate_space(sub)


def add_evaluate_acoustic(sub: argparse._SubParsersAction) -> None:
    """``mel2mel evaluate acoustic``."""
    p = sub.add_parser(
        "acoustic",
        help="log-mel error and per-bin correlation of the acoustic model",
        description="Run Mel2Mel on every full piece of the test split; write metrics.json, "
        "metrics.csv, correlation.csv, correlation.png and (2-D embedding) embedding.png.",
    )
    p.add_argument("--model", required=True, type=Path, help="export (dir/prefix) or checkpoint")
    p.add_argument("--data", required=True, type=Path, help="dataset root")
    add_output_argument(p, "output directory", required=True)
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument(
        "--pieces",
        default="all",
        choices=PIECE_SETS,
        help="plain: the scores as written; performed: the builder's performances and "
        "generated pieces; or one kind of piece (default: all)",
    )
    p.add_argument(
        "--sharpen",
        type=float,
        default=0.0,
        metavar="S",
        help="apply the model's detail gains at strength S, as the synthesizer does (default "
        "0: the network's own prediction)",
    )
    p.add_argument(
        "--contrast",
        type=float,
        default=0.0,
        metavar="S",
        help="apply the model's note contrast at strength S after the gains, as the "
        "synthesizer does (default 0: none)",
    )
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    add_force_argument(p, "overwrite an existing report")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_evaluate_acoustic)


def run_evaluate_acoustic(args: argparse.Namespace) -> int:
    """Execute ``mel2mel evaluate acoustic``; returns the exit status."""
    from mel2mel.evaluation.acoustic import evaluate_acoustic, load_model, write_report

    refuse_overwrite([args.output / "metrics.json"], args.force)
    if not (args.data / "manifest.json").is_file():
        raise UserError(f"{args.data} is not a dataset (no manifest.json)")
    model = load_model(args.model, args.device)
    validate.number(args.sharpen, "--sharpen", 0.0, 4.0)
    validate.number(args.contrast, "--contrast", 0.0, 4.0)
    report = evaluate_acoustic(
        model, args.data, split=args.split, pieces=args.pieces, sharpen=args.sharpen,
        contrast=args.contrast, progress=not args.no_progress,
    )  # fmt: skip
    report["model"] = str(args.model)
    report["loss"] = model.metadata.get("loss")
    write_report(report, args.output, model)
    print(f"{'instrument':<24} {'MAE dB':>8} {'mean r':>8}  r over the bins with sound")
    for p in report["instruments"]:
        r = "n/a" if p["mean_correlation"] is None else f"{p['mean_correlation']:.3f}"
        rs = "n/a" if p["sounding_correlation"] is None else f"{p['sounding_correlation']:.3f}"
        rs += f" ({p['sounding_bins']} bins)"
        print(f"{p['name']:<24} {p['mae_db']:>8.2f} {r:>8}  {rs}")
    o = report["overall"]
    r = "n/a" if o["mean_correlation"] is None else f"{o['mean_correlation']:.3f}"
    print(f"{'ALL':<24} {o['mae_db']:>8.2f} {r:>8}")
    for name, g in report["groups"].items():
        r = "n/a" if g["mean_correlation"] is None else f"{g['mean_correlation']:.3f}"
        rs, lo = g["sounding_correlation"], g["sounding_correlation_min"]
        rs = "n/a" if rs is None else f"{rs:.3f} (lowest instrument {lo:.3f})"
        print(
            f"{name:<24} {g['mae_db']:>8.2f} {r:>8}  ({g['frames']} frames; r {rs} over the "
            f"{g['sounding_bins']:.0f} bins with sound)"
        )
    print(f"wrote {args.output}")
    return 0


def add_evaluate_vocoder(sub: argparse._SubParsersAction) -> None:
    """``mel2mel evaluate vocoder``."""
    p = sub.add_parser(
        "vocoder",
        help="copy-synthesis quality of vocoders on the test split",
        description="Resynthesize the test split from its true log-mels with each vocoder and "
        "report log-mel error (dB), multi-resolution STFT distance and per-bin correlation per "
        "instrument, with Griffin-Lim and 8-bit mu-law of the original as reference rows.",
    )
    p.add_argument(
        "--vocoder",
        action="append",
        metavar="KIND|PATH",
        help="fast, wavenet, griffinlim, mulaw8 or an export path (repeatable; "
        "default: fast, griffinlim, mulaw8)",
    )
    p.add_argument("--data", required=True, type=Path, help="dataset root")
    add_output_argument(p, "output directory", required=True)
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--seconds", type=float, default=10.0, help="per item, 0 = whole (10)")
    p.add_argument("--max-items", type=int, default=0, help="items per instrument, 0 = all")
    p.add_argument("--threads", type=int, help="torch threads")
    add_force_argument(p, "overwrite an existing report")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_evaluate_vocoder)


def run_evaluate_vocoder(args: argparse.Namespace) -> int:
    """Execute ``mel2mel evaluate vocoder``; returns the exit status."""
    import torch

    from mel2mel.evaluation.vocoder import (
        REFERENCE,
        evaluate_vocoders,
        vocoders_by_name,
        write_vocoder_report,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    refuse_overwrite([args.output / "metrics.json"], args.force)
    if not (args.data / "manifest.json").is_file():
        raise UserError(f"{args.data} is not a dataset (no manifest.json)")
    vocoders = vocoders_by_name(args.vocoder or ["fast", "griffinlim", REFERENCE])
    report = evaluate_vocoders(
        vocoders,
        args.data,
        split=args.split,
        seconds=args.seconds,
        max_items=args.max_items,
        progress=not args.no_progress,
    )
    write_vocoder_report(report, args.output)
    cols = list(report["vocoders"])
    print("log-mel error, dB (lower is better)")
    print(f"{'instrument':<22}" + "".join(f"{c[:12]:>13}" for c in cols))
    first = report["vocoders"][cols[0]]["instruments"]
    for i, p in enumerate(first):
        values = [report["vocoders"][c]["instruments"][i]["log_mel_db"] for c in cols]
        print(f"{p['name']:<22}" + "".join(f"{v:>13.3f}" for v in values))
    overall = [report["vocoders"][c]["overall"] for c in cols]
    print(f"{'ALL':<22}" + "".join(f"{o['log_mel_db']:>13.3f}" for o in overall))
    print(f"{'MR-STFT':<22}" + "".join(f"{o['mr_stft']:>13.3f}" for o in overall))
    print(f"{'x real time':<22}" + "".join(f"{o['real_time_factor']:>13.1f}" for o in overall))
    print(f"wrote {args.output}")
    return 0


def add_evaluate_space(sub: argparse._SubParsersAction) -> None:
    """``mel2mel evaluate space``."""
    p = sub.add_parser(
        "space",
        help="how organized a many-instrument model's timbre space is",
        description="Nearest neighbours by GM program and family in the embedding table and its "
        "3-D t-SNE, Spearman of the table's directions with spectral centroid and energy, "
        "all against random tables as chance; writes organization.json (docs/SPACE100.md).",
    )
    p.add_argument(
        "--model", type=Path, help="export or checkpoint (default: the shipped acoustic100)"
    )
    add_output_argument(p, "output directory", required=True)
    p.add_argument(
        "--features",
        default="soundfont",
        choices=["soundfont", "model"],
        help="centroid and energy of each instrument from its SoundFont's render of the "
        "reference passage (needs FluidSynth; default) or from the model's prediction",
    )
    p.add_argument("--draws", type=int, default=200, help="random tables for chance (default 200)")
    p.add_argument("--cache", type=Path, help="SoundFont render cache (default: ~/.cache/mel2mel)")
    add_force_argument(p, "overwrite an existing report")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_evaluate_space)


def run_evaluate_space(args: argparse.Namespace) -> int:
    """Execute ``mel2mel evaluate space``; returns the exit status."""
    from mel2mel import pretrained
    from mel2mel.evaluation.acoustic import load_model
    from mel2mel.evaluation.space import evaluate_space, summary_lines, write_space_report

    refuse_overwrite([args.output / "organization.json"], args.force)
    if args.draws < 1:
        raise UserError(f"--draws must be at least 1, got {args.draws}")
    model = load_model(args.model or pretrained.path(pretrained.ACOUSTIC100))
    report = evaluate_space(
        model,
        features=args.features,
        cache_dir=args.cache,
        draws=args.draws,
        progress=not args.no_progress,
    )
    report["model"] = str(args.model or "acoustic100")
    path = write_space_report(report, args.output)
    for line in summary_lines(report):
        print(line)
    print(f"wrote {path}")
    return 0
