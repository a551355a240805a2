"""WaveNet generation speed on CPU: ours against the ``wavenet-vocoder`` package (r9y9).

Both models have the default (nv-wavenet-like) size: 20 layers in 2 dilation cycles, 64
residual, 128 gate, 256 skip channels, 256-way mu-law softmax, mel conditioning upsampled
x128 by two transposed convolutions. Weights are random: speed does not depend on them.

Reported, all measured in this run on the same machine and thread count:

* the baseline's ``incremental_forward`` (its cached generation, one stream), the better of
  one thread and ``--threads``;
* ours, one stream (:func:`~mel2mel.vocoders.wavenet_fast.generate`);
* ours, a long mel cut into chunks generated in one batch
  (:func:`~mel2mel.vocoders.wavenet_fast.generate_batched`), as effective samples/s
  (output samples over wall time, warm-ups and cross-fades included).

Each rate is given per wall second and per CPU second of this process (all its threads): on a
machine shared with other jobs the CPU figure is the steadier one.

The baseline is installed with ``pip install --no-deps wavenet-vocoder`` (it is pure Python
and works with the installed torch). Usage::

    python benchmarks/bench_wavenet.py [--threads 2] [--baseline-samples 1000]
        [--single-seconds 1] [--batched-seconds 10]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import torch

from mel2mel import constants as C
from mel2mel.vocoders.wavenet import WaveNet, WaveNetConfig
from mel2mel.vocoders.wavenet_fast import generate, generate_batched


def _mel(frames: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, C.N_MELS, frames, generator=g) * 2.0 - 6.0


class Timer:
    """Wall and process CPU seconds of a ``with`` block."""

    def __enter__(self) -> Timer:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def baseline_samples_per_second(cfg: WaveNetConfig, samples: int) -> tuple[float, float] | None:
    """(wall, CPU) samples/s of ``wavenet_vocoder.WaveNet.incremental_forward`` at our size."""
    try:
        from wavenet_vocoder import WaveNet as R9y9WaveNet
    except ImportError:
        print("baseline: wavenet-vocoder not installed (pip install --no-deps wavenet-vocoder)")
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecated weight_norm
        model = R9y9WaveNet(
            out_channels=256,
            layers=cfg.layers,
            stacks=cfg.layers // cfg.dilation_cycle,
            residual_channels=cfg.residual_channels,
            gate_channels=cfg.gate_channels,
            skip_out_channels=cfg.skip_channels,
            kernel_size=2,
            dropout=0.0,
            cin_channels=C.N_MELS,
            upsample_conditional_features=True,
            upsample_scales=list(cfg.upsample_strides),
            freq_axis_kernel_size=3,
            scalar_input=False,
        ).eval()
        model.make_generation_fast_()
    frames = -(-samples // C.HOP_LENGTH)
    mel = _mel(frames)
    best = None
    threads = torch.get_num_threads()
    for n in sorted({1, threads}):  # give the baseline its better thread count
        torch.set_num_threads(n)
        with torch.no_grad():
            model.incremental_forward(c=mel[..., :1], T=C.HOP_LENGTH)  # warm-up
            with Timer() as timer:
                model.incremental_forward(c=mel, T=frames * C.HOP_LENGTH)
        rates = (frames * C.HOP_LENGTH / timer.wall, frames * C.HOP_LENGTH / timer.cpu)
        best = rates if best is None or rates[0] > best[0] else best
    torch.set_num_threads(threads)
    return best


def ours_single(model: WaveNet, seconds: float) -> tuple[float, float]:
    frames = max(1, round(seconds * C.FRAME_RATE))
    mel = _mel(frames)
    generate(model, mel[..., :2], seed=0)  # warm-up
    with Timer() as timer:
        audio = generate(model, mel, seed=0)
    return audio.shape[1] / timer.wall, audio.shape[1] / timer.cpu


def ours_batched(model: WaveNet, seconds: float, max_batch: int) -> tuple[float, float, int]:
    frames = max(1, round(seconds * C.FRAME_RATE))
    mel = _mel(frames)[0]
    generate_batched(model, mel[:, :32], chunk_frames=16, max_batch=2)  # warm-up
    with Timer() as timer:
        audio = generate_batched(model, mel, max_batch=max_batch, seed=0)
    chunk = max(16, -(-frames // max_batch))
    n = audio.shape[0]
    return n / timer.wall, n / timer.cpu, -(-frames // chunk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--baseline-samples", type=int, default=1000)
    parser.add_argument("--single-seconds", type=float, default=1.0)
    parser.add_argument("--batched-seconds", type=float, default=10.0)
    parser.add_argument("--max-batch", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = WaveNetConfig()
    model = WaveNet(cfg).eval()
    params = sum(p.numel() for p in model.parameters())
    print(
        f"WaveNet default size: {params / 1e6:.2f} M parameters, {args.threads} threads, "
        f"load average {os.getloadavg()[0]:.1f}"
    )

    base = baseline_samples_per_second(cfg, args.baseline_samples)
    single = ours_single(model, args.single_seconds)
    *batched, batch = ours_batched(model, args.batched_seconds, args.max_batch)
    rows = [("ours, single stream (cached incremental)", single)]
    rows.append((f"ours, batched ({batch} chunks, {args.batched_seconds:g} s)", tuple(batched)))
    if base is not None:
        rows.insert(0, ("wavenet-vocoder incremental_forward (baseline)", base))
    head = f"{'method':<48} {'samples/s':>10} {'x RT':>6} {'vs base':>8}"
    print(f"{head} {'per CPU-s':>10} {'vs base':>8}")
    for name, (wall, cpu) in rows:
        ratio = f"{wall / base[0]:.1f}x" if base else "n/a"
        ratio_cpu = f"{cpu / base[1]:.1f}x" if base else "n/a"
        print(
            f"{name:<48} {wall:>10.0f} {wall / C.SAMPLE_RATE:>6.3f} {ratio:>8} {cpu:>10.0f} "
            f"{ratio_cpu:>8}"
        )


if __name__ == "__main__":
    main()
