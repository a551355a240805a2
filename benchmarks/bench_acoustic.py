"""Speed of the Mel2Mel acoustic model: training throughput and inference time.

(a) Training, frames per second of the full-size (paper) model:
    * raw: forward + backward + clip + AdamW step on random tensors already in memory, the
      ceiling for this machine;
    * loop: :func:`mel2mel.train.loop.train_acoustic` on a real dataset (CropDataset +
      DataLoader workers, logging, schedule), measured in the same process run.
    The ratio loop / raw shows what the data pipeline and the loop's bookkeeping cost.
(b) Inference: Mel2Mel alone on 60 s of music (7500 frames, one sequence), exact and chunked
    (:meth:`Mel2Mel.infer`), as seconds and times faster than real time.

Usage::

    python benchmarks/bench_acoustic.py --data data/paper10            # both parts
    python benchmarks/bench_acoustic.py --skip-train                   # inference only
    python benchmarks/bench_acoustic.py --data data/paper10 --sweep    # batch x crop sweep

Timings on a shared machine vary with its load: the script prints the load average, and the
two training numbers are taken back to back so their ratio is meaningful.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mel2mel import constants as C
from mel2mel.models import build_acoustic
from mel2mel.train.config import RunConfig, TrainConfig
from mel2mel.train.loop import make_optimizer
from mel2mel.train.losses import get_loss


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
    from mel2mel.train.loop import train_acoustic

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


def inference_times(frames: int, repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds for the paper model on one sequence, exact and chunked."""
    torch.manual_seed(0)
    model = build_acoustic("paper").eval()
    roll = (torch.rand(1, C.ROLL_CHANNELS, frames) > 0.95).float()
    variants = {
        "exact": {},
        "chunked 1000+2x100": {"chunk_frames": 1000, "context_frames": 100},
        "chunked 1500+2x250": {"chunk_frames": 1500, "context_frames": 250},
        "chunked 500+2x125": {"chunk_frames": 500, "context_frames": 125},
    }
    out = {}
    with torch.inference_mode():
        for name, kw in variants.items():
            model.infer(roll, instrument=0, **kw)  # warm-up: primitive creation
            wall, cpu = [], []
            for _ in range(repeats):
                start, start_cpu = time.perf_counter(), time.process_time()
                model.infer(roll, instrument=0, **kw)
                wall.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
            out[name] = (statistics.median(wall), statistics.median(cpu))
    return out


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
    parser.add_argument("--sweep", action="store_true", help="raw fps for several shapes")
    parser.add_argument("--rounds", type=int, default=2, help="sweep rounds (best is kept)")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-infer", action="store_true")
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
        for name, (t, cpu) in inference_times(args.frames, args.repeats).items():
            print(
                f"(b) inference {name:<20} {args.frames} frames: {t:.3f} s "
                f"(CPU {cpu:.3f} s) = {seconds / t:.0f}x real time (target < 0.3 s)"
            )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
