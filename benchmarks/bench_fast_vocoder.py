"""Fast vocoder: speed (x real time) and streaming memory, against Griffin-Lim in the same run.

* **Speed**: seconds of audio synthesized per second of wall time, best of ``--repeats``,
  for the default :class:`~mel2mel.vocoders.fast.FastVocoder` (whole mel in one call, and
  streamed in chunks) and for 32-iteration Griffin-Lim on the same mel. ``--before REV``
  adds the same weights run by the fast vocoder's code at git revision ``REV`` (its
  ``fast.py``, ``refine.py`` and ``griffinlim.py``), timed alternately in the same process.
* **Memory**: peak resident memory of a fresh subprocess that streams ``--memory-minutes`` of
  audio through ``vocode_stream`` into a preallocated output array, next to the same
  process's peak right before vocoding (imports, model, the input mel). Both ``VmHWM`` and
  ``ru_maxrss`` are shown; the latter keeps the parent's peak across fork + exec, so the
  children run before the parent loads anything large.
* **Quality** (optional, needs trained weights): copy-synthesis log-mel L1 error on WAV files,
  fast vocoder against Griffin-Lim.

Weights are random unless ``--model`` is given; speed and memory do not depend on them.
Usage::

    python benchmarks/bench_fast_vocoder.py [--threads 1 2] [--seconds 60] [--memory-minutes 10]
        [--model PATH --wavs A.wav B.wav ...] [--compare-refine 0 4] [--before REV]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mel2mel import constants as C
from mel2mel.models.export import vocoder_path
from mel2mel.vocoders.base import Vocoder
from mel2mel.vocoders.fast import FastVocoder, FastVocoderConfig
from mel2mel.vocoders.griffinlim import GriffinLim

# Random weights get the shipped model's settings (mel2mel/pretrained/fast_vocoder.json).
SHIPPED = json.loads(vocoder_path("fast").with_suffix(".json").read_text())["config"]
DEFAULT_REFINE = SHIPPED["refine_iterations"]
ROOT = Path(__file__).resolve().parent.parent


def _mel(frames: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(C.N_MELS, frames, generator=g) * 2.0 - 6.0


def _roll(frames: int) -> torch.Tensor:
    """A dense roll ``[ROLL_CHANNELS x frames]``: 6 new random keys every 16 frames (0.13 s),
    each held 48 frames, so that the partials' phase sees many distinct sets of held keys."""
    g = torch.Generator().manual_seed(0)
    roll = torch.zeros(C.ROLL_CHANNELS, frames)
    for start in range(0, frames, 16):
        for key in torch.randint(0, C.N_KEYS, (6,), generator=g).tolist():
            roll[key, start : start + 48] = 0.6
            roll[C.N_KEYS + key, start] = 0.6
    return roll


def _build(kind: str, model_path: str | None, refine: int | None = None) -> Vocoder:
    if kind == "griffinlim":
        return GriffinLim(n_iter=32)
    if model_path:
        from mel2mel.models.export import load_vocoder

        fast = load_vocoder(model_path)
    else:
        torch.manual_seed(0)
        config = FastVocoderConfig(
            refine_iterations=DEFAULT_REFINE, partial_phase=SHIPPED.get("partial_phase", False)
        )
        fast = FastVocoder(config).eval()
    return fast if refine is None else fast.with_refinement(refine)


def load_before(rev: str, fast: FastVocoder) -> FastVocoder:
    """``fast``'s config and weights in the fast vocoder code of git revision ``rev``."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-before-"))
    for name in ("griffinlim", "refine", "fast"):
        src = subprocess.run(
            ["git", "show", f"{rev}:mel2mel/vocoders/{name}.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for dep in ("griffinlim", "refine"):
            src = src.replace(f"from mel2mel.vocoders.{dep} import", f"from _before_{dep} import")
        (tmp / f"_before_{name}.py").write_text(src)
    sys.path.insert(0, str(tmp))
    module = importlib.import_module("_before_fast")
    old = module.FastVocoder(module.FastVocoderConfig.from_dict(fast.config.to_dict()))
    old.load_state_dict(fast.state_dict())
    return old.eval()


def times_real_time(
    runs: dict[str, Callable[[], object]], seconds: float, repeats: int
) -> dict[str, tuple[float, float]]:
    """Best ``(seconds of audio per wall second, per CPU second)`` of each run; the runs take
    turns in each of ``repeats`` rounds, so that a change of the machine's load hits them alike.
    The CPU figure (all threads of this process) is what an idle machine would show, the wall
    one what we got."""
    for run in runs.values():
        run()  # warm-up
    wall = dict.fromkeys(runs, float("inf"))
    cpu = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            wall[name] = min(wall[name], time.perf_counter() - start)
            cpu[name] = min(cpu[name], time.process_time() - start_cpu)
    return {name: (seconds / wall[name], seconds / cpu[name]) for name in runs}


def peak_rss_child(args: argparse.Namespace) -> None:
    """In the subprocess: stream ``memory_minutes`` of audio and print peak RSS in MB."""
    torch.set_num_threads(args.threads[0])
    vocoder = _build(args.child, args.model)
    frames = int(args.memory_minutes * 60 * C.FRAME_RATE)
    mel = _mel(frames).numpy()
    out = np.zeros(frames * C.HOP_LENGTH, dtype=np.float32)
    before = _peaks()
    start, pos = time.perf_counter(), 0
    for chunk in vocoder.vocode_stream(mel, chunk_frames=args.chunk_frames):
        out[pos : pos + len(chunk)] = chunk
        pos += len(chunk)
    elapsed = time.perf_counter() - start
    assert pos == len(out)
    print(json.dumps({"before": before, "peak": _peaks(), "seconds": elapsed}))


def _peaks() -> dict[str, float]:
    """Peak RSS in MB: ``ru_maxrss``, and ``VmHWM``, which unlike ``ru_maxrss`` does not
    inherit the parent's peak across fork + exec."""
    peaks = {"maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                peaks["hwm"] = int(line.split()[1]) / 1024
    return peaks


def measure_memory(kind: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--threads", str(args.threads[0])]
    cmd += ["--memory-minutes", str(args.memory_minutes), "--chunk-frames", str(args.chunk_frames)]
    if args.model:
        cmd += ["--model", args.model]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def copy_synthesis_errors(vocoders: dict[str, Vocoder], wavs: list[str]) -> dict[str, float]:
    from mel2mel.audio import load_audio, log_mel

    errors: dict[str, list[float]] = {name: [] for name in vocoders}
    for path in wavs:
        audio = load_audio(path)
        mel = log_mel(audio[: len(audio) // C.HOP_LENGTH * C.HOP_LENGTH])
        mel = mel[:, : len(audio) // C.HOP_LENGTH]
        for name, vocoder in vocoders.items():
            y = vocoder.vocode_long(mel)
            errors[name].append(float(np.abs(log_mel(y)[:, : mel.shape[1]] - mel).mean()))
    return {name: float(np.mean(e)) for name, e in errors.items()}


def speed_table(
    fast: FastVocoder,
    gl: Vocoder,
    args: argparse.Namespace,
    threads: int,
    before: FastVocoder | None = None,
) -> None:
    torch.set_num_threads(threads)
    mel = _mel(int(args.seconds * C.FRAME_RATE))
    n = fast.config.refine_iterations
    others = {k: fast.with_refinement(k) for k in args.compare_refine if k != n}
    runs: dict[str, Callable[[], object]] = {
        f"fast vocoder, whole mel, {n} refinement it.": lambda: fast.vocode(mel),
        f"fast vocoder, streamed ({args.chunk_frames}-frame chunks)": lambda: fast.vocode_long(
            mel, chunk_frames=args.chunk_frames
        ),
        **{
            f"fast vocoder, whole mel, {k} refinement it.": lambda v=v: v.vocode(mel)
            for k, v in others.items()
        },
    }
    # The notes: the roll's 1x1 projection, and the partials' phase (``partial_phase``).
    roll = _roll(mel.shape[1])
    partial, plain = fast.with_partials(True), fast.with_partials(False)
    runs[f"  same + a dense roll, {n} it."] = lambda: plain.vocode(mel, roll)
    runs[f"  same + a dense roll, partials' phase, {n} it."] = lambda: partial.vocode(mel, roll)
    if before is not None:
        runs[f"  same, code of {args.before}, {n} it."] = lambda: before.vocode(mel)
    speeds = times_real_time(runs, args.seconds, args.repeats)
    baseline = "Griffin-Lim, 32 iterations (baseline)"
    speeds |= times_real_time({baseline: lambda: gl.vocode(mel)}, args.seconds, 1)
    base, base_cpu = speeds[baseline]
    load = os.getloadavg()[0]
    print(f"\n{threads} thread(s), {args.seconds:g} s of audio (best of {args.repeats}), "
          f"load average {load:.1f} after:")  # fmt: skip
    print(f"{'method':<48} {'x RT (wall)':>12} {'vs GL':>7} {'x RT per CPU-s':>15} {'vs GL':>7}")
    for name, (speed, cpu) in speeds.items():
        print(
            f"{name:<48} {speed:>12.1f} {speed / base:>6.1f}x {cpu:>15.1f} {cpu / base_cpu:>6.1f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=60.0, help="audio per speed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-minutes", type=float, default=10.0)
    parser.add_argument("--chunk-frames", type=int, default=1000)
    parser.add_argument("--model", help="exported fast vocoder (default: random weights)")
    parser.add_argument("--wavs", nargs="*", default=[], help="WAVs for copy-synthesis error")
    parser.add_argument(
        "--compare-refine", type=int, nargs="*", default=[0], help="also time these iterations"
    )
    parser.add_argument("--before", metavar="REV", help="also time the code of git revision REV")
    parser.add_argument("--child", choices=("fast", "griffinlim"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        peak_rss_child(args)
        return
    print(f"load average {os.getloadavg()[0]:.1f}")
    # Memory first, while this process is still small (ru_maxrss survives fork + exec).
    print(f"\npeak RSS streaming {args.memory_minutes:g} min of audio (fresh process):")
    for kind in ("fast", "griffinlim"):
        m = measure_memory(kind, args)
        b, p = m["before"], m["peak"]
        print(
            f"{kind:<11} VmHWM before vocoding {b['hwm']:5.0f} MB, peak {p['hwm']:5.0f} MB; "
            f"ru_maxrss peak {p['maxrss']:5.0f} MB ({m['seconds']:.1f} s wall)"
        )

    fast = _build("fast", args.model)
    gl = _build("griffinlim", None)
    params = sum(p.numel() for p in fast.parameters())
    print(f"\nfast vocoder: {params / 1e6:.2f} M parameters")
    before = load_before(args.before, fast) if args.before else None
    for threads in args.threads:
        speed_table(fast, gl, args, threads, before)

    if args.wavs:
        errors = copy_synthesis_errors({"fast": fast, "griffinlim": gl}, args.wavs)
        print(f"\ncopy-synthesis log-mel L1 over {len(args.wavs)} files:")
        for name, err in errors.items():
            print(f"{name:<12} {err:.4f}")


if __name__ == "__main__":
    main()
