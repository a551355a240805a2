"""Speed of the Mel2Mel acoustic model: training throughput and inference time.

(a) Training, frames per second of the full-size (paper) model:
    * raw: forward + backward + clip + AdamW step on random tensors already in memory, the
      ceiling for this machine;
    * loop: :func:`mel2mel.train.acoustic_loop.train_acoustic` on a real dataset (CropDataset +
      DataLoader workers, logging, schedule), measured in the same process run.
    The ratio loop / raw shows what the data pipeline and the loop's bookkeeping cost.
(b) Inference: Mel2Mel alone on 60 s of music (7500 frames, one sequence), as seconds and
    times faster than real time: the two references (the plain forward, and the symmetric
    windows that ``Mel2Mel.infer`` used before :mod:`mel2mel.models.acoustic_fast`) and
    ``Mel2Mel.infer`` exact and chunked, with 1 and 2 workers (the LSTM directions in two
    threads), as ratios to the references.
(c) Accuracy (``--accuracy DATA``): the error of the approximate variants against the exact
    forward of a trained model (the shipped one by default) on real test pieces.

Usage::

    python benchmarks/bench_acoustic.py --data data/paper10            # both parts
    python benchmarks/bench_acoustic.py --skip-train                   # inference only
    python benchmarks/bench_acoustic.py --skip-train --roll chorale    # on real music
    python benchmarks/bench_acoustic.py --skip-train --roll chorale --velocity-coding linear+log \
        --harmonic-detail --head-channels 256                          # the shipped options
    python benchmarks/bench_acoustic.py --skip-train --skip-infer --accuracy data/paper10
    python benchmarks/bench_acoustic.py --data data/paper10 --sweep    # batch x crop sweep

Timings on a shared machine vary with its load: the script prints the load average, and the
two training numbers are taken back to back so their ratio is meaningful.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mel2mel import constants as C
from mel2mel.models import AcousticConfig, build_acoustic
from mel2mel.models.acoustic_fast import symmetric_windows
from mel2mel.models.losses import get_loss
from mel2mel.train.config import RunConfig, TrainConfig
from mel2mel.train.loop import make_optimizer

PRETRAINED = Path(__file__).resolve().parent.parent / "mel2mel" / "pretrained" / "acoustic"


def raw_training_fps(batch: int, crop: int, steps: int, warmup: int = 3) -> tuple[float, float]:
    """Frames per wall-second and per CPU-second of fwd + bwd + clip + step on random
    in-memory tensors (paper model). CPU time is steadier on a shared machine."""
    torch.manual_seed(0)
    model = build_acoustic("paper").train()
    config = RunConfig(model.config, TrainConfig())
    opt = make_optimizer(model, config)
    loss_fn = get_loss("tanh-log-abs")
    roll = (torch.rand(batch, C.ROLL_CHANNELS, crop) > 0.95).float()
    mel = torch.rand(batch, C.N_MELS, crop) * 10 - 11
    inst = torch.randint(0, 10, (batch,))
    for i in range(warmup + steps):
        if i == warmup:
            start, cpu = time.perf_counter(), time.process_time()
        loss = loss_fn(model(roll, instrument=inst), mel)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    frames = batch * crop * steps
    return frames / (time.perf_counter() - start), frames / (time.process_time() - cpu)


def loop_training_fps(data: Path, batch: int, crop: int, steps: int, workers: int) -> float:
    """Frames/s of the real training loop, averaged over its log windows after the first."""
    from mel2mel.data.dataset import read_manifest
    from mel2mel.train.acoustic_loop import train_acoustic

    items = sum(it["split"] == "train" for it in read_manifest(data)["items"])
    window = max(2, steps // 3)
    train = TrainConfig(
        steps=window * 4,
        batch_size=batch,
        crop_frames=crop,
        # At least one epoch of data for the whole run, as with a full-size dataset.
        crops_per_item=max(1, -(-(window * 4 * batch) // max(items, 1))),
        warmup_steps=0,
        num_workers=workers,
        log_every=window,
        valid_every=0,
        checkpoint_every=10**9,
    )
    config = RunConfig(build_acoustic("paper").config, train)
    with tempfile.TemporaryDirectory() as run:
        train_acoustic(data, run, config, progress=False)
        lines = [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    fps = [x["train/frames_per_s"] for x in lines if "train/frames_per_s" in x]
    return statistics.mean(fps[1:])  # the first window holds start-up costs


INFERENCE_VARIANTS: dict[str, dict[str, Any]] = {
    # the references: the plain forward and the chunked infer before fast_forward
    "exact forward": {"path": "forward"},
    "before: chunked 1000+2x100": {
        "path": "symmetric",
        "chunk_frames": 1000,
        "context_frames": 100,
    },
    "infer exact, 1 worker": {"workers": 1},
    "infer exact, 2 workers": {"workers": 2},
    "infer 1000+250, 1 worker": {"chunk_frames": 1000, "context_frames": 250, "workers": 1},
    "infer 1000+250, 2 workers": {"chunk_frames": 1000, "context_frames": 250, "workers": 2},
    "infer 1000+100, 1 worker": {"chunk_frames": 1000, "context_frames": 100, "workers": 1},
    "infer 2000+250, 1 worker": {"chunk_frames": 2000, "context_frames": 250, "workers": 1},
    "infer 2000+250, 2 workers": {"chunk_frames": 2000, "context_frames": 250, "workers": 2},
    "infer 2000+500, 1 worker": {"chunk_frames": 2000, "context_frames": 500, "workers": 1},
    "infer 2000+500, 2 workers": {"chunk_frames": 2000, "context_frames": 500, "workers": 2},
}


def inference_roll(frames: int, kind: str) -> torch.Tensor:
    """Tensor[1 x 176 x frames]: random notes on every channel, or the example chorale."""
    if kind == "random":
        torch.manual_seed(0)
        return (torch.rand(1, C.ROLL_CHANNELS, frames) > 0.95).float()
    from mel2mel.examples import chorale
    from mel2mel.midi import piano_roll, read_notes

    notes = read_notes(chorale(repeats=1 + frames // 3000), warn=False).notes
    return torch.from_numpy(piano_roll(notes, frames))[None]


def inference_times(
    frames: int,
    repeats: int,
    roll_kind: str,
    coding: str = "linear",
    harmonic: bool = False,
    head: int = 0,
    gate: bool = False,
    heights: bool = False,
) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds for the paper model (velocity coding ``coding``, with the
    harmonic detail if ``harmonic``, gated by the states if ``gate``, its harmonics' heights
    set by the instrument if ``heights``, a nonlinear readout ``head`` wide) on one sequence,
    per variant.

    The variants run interleaved, one round after another, so that a change in the load of
    a shared machine affects them all alike.
    """
    torch.manual_seed(0)
    config = AcousticConfig.preset(
        "paper",
        velocity_coding=coding,
        harmonic_detail=harmonic,
        head_channels=head,
        detail_gate=gate,
        harmonic_heights=heights,
    )
    model = build_acoustic(config).eval()
    roll = inference_roll(frames, roll_kind)
    emb = model.embed(0)

    def call(kw: dict[str, Any]) -> torch.Tensor:
        kw = dict(kw)
        path = kw.pop("path", "infer")
        if path == "forward":
            return model(roll, embedding=emb)
        if path == "symmetric":  # Mel2Mel.infer before mel2mel.models.acoustic_fast
            return symmetric_windows(model, roll, emb, **kw)
        return model.infer(roll, embedding=emb, **kw)

    wall: dict[str, list[float]] = {name: [] for name in INFERENCE_VARIANTS}
    cpu: dict[str, list[float]] = {name: [] for name in INFERENCE_VARIANTS}
    with torch.inference_mode():
        for kw in INFERENCE_VARIANTS.values():
            call(kw)  # warm-up: oneDNN primitive creation
        for _ in range(repeats):
            for name, kw in INFERENCE_VARIANTS.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                call(kw)
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    return {n: (statistics.median(wall[n]), statistics.median(cpu[n])) for n in wall}


ACCURACY_VARIANTS: dict[str, dict[str, Any]] = {
    "before: chunked 1000+2x100": {
        "path": "symmetric",
        "chunk_frames": 1000,
        "context_frames": 100,
    },
    "infer exact": {},
    "infer 500+250": {"chunk_frames": 500, "context_frames": 250},
    "infer 1000+100": {"chunk_frames": 1000, "context_frames": 100},
    "infer 1000+250": {"chunk_frames": 1000, "context_frames": 250},
    "infer 2000+250": {"chunk_frames": 2000, "context_frames": 250},
    "infer 2000+500": {"chunk_frames": 2000, "context_frames": 500},
}


def accuracy(data: Path, model_path: Path, every: int) -> None:
    """Error of each :data:`ACCURACY_VARIANTS` entry against the exact forward, in dB.

    On every ``every``-th test piece of ``data``, for all its instruments: mean, 99th
    percentile and max of ``|variant - exact|`` over all bins and frames, the same within the
    music (up to 1 s after the last note; the rest is the rendered release tail), and the
    mean absolute error against the true mel (the evaluation's MAE) with its change.
    """
    from mel2mel.data.dataset import load_item, read_manifest
    from mel2mel.models.export import load_acoustic

    db = 20 / math.log(10)
    model = load_acoustic(model_path)
    manifest = read_manifest(data)
    tests = [it for it in manifest["items"] if it["split"] == "test"]
    pieces = sorted({it["piece"] for it in tests})[::every]
    names = list(ACCURACY_VARIANTS)
    # per variant: sum and max of |d|, the same in the music, sum of |prediction - true mel|
    sums = {n: torch.zeros(5, dtype=torch.float64) for n in names}
    p99: dict[str, list[float]] = {n: [] for n in names}
    size = music_size = exact_err = 0.0
    with torch.inference_mode():
        for it in (it for it in tests if it["piece"] in pieces):
            item = load_item(data, it["id"])
            mel = torch.from_numpy(item["mel"])
            roll = torch.zeros(1, C.ROLL_CHANNELS, mel.shape[1])
            n = min(mel.shape[1], item["roll"].shape[1])
            roll[0, :, :n] = torch.from_numpy(item["roll"][:, :n])
            name = manifest["instruments"][it["instrument"]]["name"]
            emb = model.embed(model.instrument_index(name))
            exact = model(roll, embedding=emb)[0]
            music = min(
                mel.shape[1], int(roll[0].ne(0).any(0).nonzero().max()) + 1 + round(C.FRAME_RATE)
            )
            size, music_size = size + exact.numel(), music_size + C.N_MELS * music
            exact_err += float((exact - mel).abs().sum())
            for v in names:
                kw = dict(ACCURACY_VARIANTS[v])
                if kw.pop("path", "infer") == "symmetric":
                    out = symmetric_windows(model, roll, emb, **kw)[0]
                else:
                    out = model.infer(roll, embedding=emb, **kw)[0]
                d = (out - exact).abs() * db
                s = sums[v]
                s[0] += float(d.sum())
                s[1] = max(float(s[1]), float(d.max()))
                s[2] += float(d[:, :music].sum())
                s[3] = max(float(s[3]), float(d[:, :music].max()))
                s[4] += float((out - mel).abs().sum())
                p99[v].append(float(torch.quantile(d.flatten()[::7], 0.99)))
    frames = int(size) // C.N_MELS
    print(
        f"(c) accuracy on {len(pieces)} test pieces x all instruments ({frames} frames, "
        f"{music_size / size:.0%} of them in the music), dB against the exact forward; "
        f"exact MAE vs the true mel {exact_err / size * db:.4f} dB"
    )
    print(
        f"    {'variant':<28} {'mean':>8} {'p99':>7} {'max':>7} {'music mean':>11} "
        f"{'music max':>10} {'MAE':>7} {'dMAE':>8}"
    )
    for v, s in sums.items():
        print(
            f"    {v:<28} {s[0] / size:8.5f} {statistics.mean(p99[v]):7.4f} {s[1]:7.3f} "
            f"{s[2] / music_size:11.5f} {s[3]:10.3f} {s[4] / size * db:7.4f} "
            f"{(s[4] - exact_err) / size * db:+8.5f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="dataset root for the loop measurement")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--steps", type=int, default=12, help="timed training steps")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers (loop)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--frames", type=int, default=7500, help="inference length (60 s)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--roll", choices=("random", "chorale"), default="random", help="inference input"
    )
    parser.add_argument(
        "--velocity-coding", default="linear", help="(b): the model's velocity coding"
    )
    parser.add_argument(
        "--harmonic-detail", action="store_true", help="(b): the model adds harmonic detail"
    )
    parser.add_argument(
        "--head-channels", type=int, default=0, help="(b): width of the nonlinear readout"
    )
    parser.add_argument(
        "--detail-gate", action="store_true", help="(b): the states gate the harmonic detail"
    )
    parser.add_argument(
        "--harmonic-heights", action="store_true", help="(b): the instrument sets the partials"
    )
    parser.add_argument("--sweep", action="store_true", help="raw fps for several shapes")
    parser.add_argument("--rounds", type=int, default=2, help="sweep rounds (best is kept)")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-infer", action="store_true")
    parser.add_argument("--accuracy", type=Path, metavar="DATA", help="(c): errors on DATA")
    parser.add_argument("--model", type=Path, default=PRETRAINED, help="acoustic model for (c)")
    parser.add_argument("--every", type=int, default=3, help="(c): every n-th test piece")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )

    if not args.skip_train:
        if args.sweep:
            # Interleaved rounds, best of each: on a shared machine the best round is the one
            # least disturbed by other jobs.
            shapes = [(8, 256), (8, 512), (16, 256), (16, 512), (8, 1024), (32, 256), (32, 512)]
            best = dict.fromkeys(shapes, 0.0)
            for _ in range(args.rounds):
                for batch, crop in shapes:
                    fps, _ = raw_training_fps(batch, crop, max(3, args.steps // 2))
                    best[(batch, crop)] = max(best[(batch, crop)], fps)
            for (batch, crop), fps in best.items():
                print(
                    f"raw  batch {batch:>3} x crop {crop:>5}: {fps:>8.0f} frames/s (best of "
                    f"{args.rounds})"
                )
        raw, raw_cpu = raw_training_fps(args.batch, args.crop, args.steps)
        print(
            f"(a) raw fwd+bwd+step, batch {args.batch} x {args.crop}: {raw:.0f} frames/s "
            f"({raw_cpu:.0f} per CPU-second)"
        )
        if args.data is not None:
            loop = loop_training_fps(args.data, args.batch, args.crop, args.steps, args.workers)
            print(f"(a) training loop ({args.workers} worker(s)):       {loop:.0f} frames/s")
            print(f"(a) loop / raw: {loop / raw:.1%}  (target >= 80%)")
        else:
            print("(a) loop: skipped, pass --data DATASET")
    if not args.skip_infer:
        seconds = args.frames / C.FRAME_RATE
        times = inference_times(
            args.frames,
            args.repeats,
            args.roll,
            args.velocity_coding,
            args.harmonic_detail,
            args.head_channels,
            args.detail_gate,
            args.harmonic_heights,
        )
        exact, chunked = (times[n][0] for n in list(INFERENCE_VARIANTS)[:2])
        print(
            f"(b) inference, {args.frames} frames ({args.roll} roll, {args.velocity_coding} "
            f"velocity coding{', harmonic detail' * args.harmonic_detail}"
            f"{', gated' * args.detail_gate}{', own partials' * args.harmonic_heights}"
            f"{f', readout {args.head_channels}' * bool(args.head_channels)}), median of "
            f"{args.repeats} "
            "interleaved rounds (target < 0.3 s):"
        )
        for name, (t, cpu) in times.items():
            print(
                f"    {name:<28} {t:.3f} s (CPU {cpu:.3f} s) = {seconds / t:4.0f}x real time, "
                f"{exact / t:4.2f}x / {chunked / t:4.2f}x faster than the two references"
            )
    if args.accuracy is not None:
        accuracy(args.accuracy, args.model, args.every)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
